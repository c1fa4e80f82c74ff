//! A stage's `params`: each key checked against its op's schema (unknown ones with a
//! suggestion), each value interpolated and type-checked, defaults filled in.

use super::*;

impl<'a> Validator<'a, '_> {
    /// The parameter type of `key` for `schema`: declared, or `Any` for an op with free params.
    pub(super) fn param_type<'s>(schema: &'s OpSchema, key: &str) -> Option<&'s ParamType> {
        const ANY: &ParamType = &ParamType::Any;
        schema
            .param(key)
            .map(|p| &p.ty)
            .or(schema.free_params.then_some(ANY))
    }

    pub(super) fn unknown_param(&mut self, stage: &str, schema: &OpSchema, key: &Key) {
        let names: Vec<&str> = schema.params.iter().map(|p| p.name).collect();
        let help = suggest::hint(&key.name, names.iter().copied()).unwrap_or_else(|| {
            if names.is_empty() {
                format!("op `{}` takes no parameters", schema.name)
            } else {
                format!(
                    "the parameters of op `{}` are {}",
                    schema.name,
                    list(&names)
                )
            }
        });
        self.push(
            key.origin
                .error(format!(
                    "unknown parameter `{}` for op `{}` in stage `{stage}`",
                    shorten_name(&key.name),
                    schema.name
                ))
                .label("unknown parameter")
                .help(help),
        );
    }

    /// Interpolates and type-checks one parameter value.
    pub(super) fn param_value(
        &mut self,
        schema: &OpSchema,
        key: &str,
        node: &Node,
        ty: &ParamType,
    ) -> Option<Value> {
        let node = interpolate(node, &self.vars, self.errors)?;
        self.checked_value(schema, key, &node, ty)
    }

    /// Type-checks one parameter value already interpolated, and lets the op check it.
    pub(super) fn checked_value(
        &mut self,
        schema: &OpSchema,
        key: &str,
        node: &Node,
        ty: &ParamType,
    ) -> Option<Value> {
        let value = check_param(schema.name, key, node, ty)
            .map_err(|d| self.push(d))
            .ok()?;
        match self.catalog.check_value(schema.name, key, &value) {
            Ok(()) => Some(value),
            Err(why) => {
                self.push(
                    node.origin
                        .error(format!(
                            "invalid `{}` for op `{}`: {why}",
                            shorten_name(key),
                            schema.name
                        ))
                        .label("here"),
                );
                None
            }
        }
    }

    /// Resolved params and the matrix of a stage whose op is known.
    pub(super) fn params(
        &mut self,
        stage: &str,
        span: Span,
        schema: &OpSchema,
        fields: &Fields<'_>,
    ) -> Option<(Params, Matrix)> {
        let before = self.errors.len();
        let (matrix, swept) = self.matrix(stage, schema, fields);

        // Fallbacks for every declared param: the op's default, then `defaults:`.
        let mut fallback = Params::new();
        for p in &schema.params {
            if let Some(default) = &p.default {
                fallback.insert(p.name.to_owned(), default.clone());
            }
        }
        // Params written somewhere, valid or not: a wrong value is not also a missing one.
        let mut written = BTreeSet::new();
        let mut params_unreadable = false;
        let defaults: Vec<(Key, Option<Node>)> = self.defaults.params.clone();
        for (key, node) in &defaults {
            if schema.param(&key.name).is_some() {
                written.insert(key.name.clone());
            }
            if let (Some(p), Some(node)) = (schema.param(&key.name), node) {
                match check_param(schema.name, p.name, node, &p.ty) {
                    Ok(value) => {
                        fallback.insert(p.name.to_owned(), value);
                    }
                    Err(d) => self.push(d),
                }
            }
        }

        let mut params: Params = fallback
            .iter()
            .filter(|(k, _)| !swept.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some((_, node)) = fields.get("params") {
            match node.as_map() {
                None => {
                    params_unreadable = true;
                    self.push(type_error(
                        node,
                        &format!("`params` of stage `{stage}`"),
                        "a map of parameters",
                    ));
                }
                Some(entries) => {
                    for (key, value) in entries {
                        written.insert(key.name.clone());
                        let Some(ty) = Self::param_type(schema, &key.name) else {
                            self.unknown_param(stage, schema, key);
                            continue;
                        };
                        if swept.axes.contains(&key.name) {
                            self.push(
                                key.origin
                                    .error(format!(
                                        "parameter `{}` of stage `{stage}` is set in both `params` and `matrix`",
                                        shorten_name(&key.name)
                                    ))
                                    .label("also a matrix axis")
                                    .help("a parameter is either fixed under `params:` or swept under `matrix:`; remove one"),
                            );
                            continue;
                        }
                        if swept.sampled.contains(&key.name) {
                            self.push(
                                key.origin
                                    .error(format!(
                                        "parameter `{}` of stage `{stage}` is set in both `params` and `search`",
                                        shorten_name(&key.name)
                                    ))
                                    .label("also sampled by `search`")
                                    .help("a parameter is either fixed under `params:` or sampled under `search.params:`; remove one"),
                            );
                            continue;
                        }
                        if let Some(value) = self.param_value(schema, &key.name, value, ty) {
                            params.insert(key.name.clone(), value);
                        }
                    }
                }
            }
        }
        // A broken matrix says nothing reliable about which params its combinations set.
        let mut matrix = matrix?;

        // An appended `include` combination that omits an axis takes that param's fallback,
        // as the stage would have without the axis.
        for i in matrix.appended_includes() {
            for (axis, _) in &matrix.axes {
                if let (false, Some(value)) =
                    (matrix.include[i].contains_key(axis), fallback.get(axis))
                {
                    matrix.include[i].insert(axis.clone(), value.clone());
                }
            }
        }

        // Expanded only when a check needs it (a sweep of 10,000 values is expanded again by the
        // plan). Without `exclude` a matrix always has a combination: the product of non-empty
        // axes, the `include` entries, or the one empty combination.
        let expanded = std::cell::OnceCell::new();
        let combinations = || expanded.get_or_init(|| matrix.expand());
        if !matrix.exclude.is_empty() && combinations().is_empty() {
            self.push(
                Diagnostic::error(format!(
                    "the matrix of stage `{stage}` expands to no combinations"
                ))
                .at(span)
                .label("no instances")
                .help(
                    "every combination is excluded; remove an `exclude` entry or add an `include`",
                ),
            );
            return None;
        }
        // With `parms:` reported as a typo (or `params:` not a map), "missing parameter"
        // errors would only repeat that error.
        let params_in_doubt = params_unreadable
            || ["params", "matrix", "include", "search"]
                .iter()
                .any(|k| fields.misspelt.contains(k));
        for p in schema
            .params
            .iter()
            .filter(|p| p.default.is_none() && !params_in_doubt)
        {
            if params.contains_key(p.name) || written.contains(p.name) {
                continue;
            }
            // Every combination of the product sets its axes, every sample its params.
            if matrix.always_sets(p.name) {
                continue;
            }
            let combinations = combinations();
            let missing: Vec<_> = combinations
                .iter()
                .filter(|c| !c.contains_key(p.name))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let d = if missing.len() == combinations.len() {
                Diagnostic::error(format!(
                    "stage `{stage}`: op `{}` needs parameter `{}`",
                    schema.name, p.name
                ))
            } else {
                let example = shorten_name(
                    &serde_json::to_string(missing[0]).expect("a map of JSON values serialises"),
                );
                Diagnostic::error(format!(
                    "stage `{stage}`: op `{}` needs parameter `{}`, but the matrix combination `{example}` does not set it",
                    schema.name, p.name
                ))
            };
            self.push(
                d.at(span)
                    .label(format!("missing parameter `{}`", p.name))
                    .help(format!(
                        "set `{}` ({}) under `params:`, in `defaults:`, or as a matrix axis",
                        p.name, p.ty
                    )),
            );
        }
        (self.errors.len() == before).then_some((params, matrix))
    }
}
