//! A stage's `matrix`, `include` and `exclude`: the axes and their values, and the entries
//! that add or remove combinations, which may only name the matrix's axes.

use super::*;

/// The names a stage sweeps: its `matrix:` axes and the params its `search:` samples.
pub(super) struct Swept {
    pub axes: BTreeSet<String>,
    pub sampled: BTreeSet<String>,
}

impl Swept {
    pub fn contains(&self, key: &str) -> bool {
        self.axes.contains(key) || self.sampled.contains(key)
    }
}

impl Validator<'_, '_> {
    /// The stage's `matrix`, `include`, `exclude` and `search`; `None` when any of them is
    /// wrong. The names of the axes and of the sampled params are returned either way, so
    /// params can be checked against them.
    pub(super) fn matrix(
        &mut self,
        stage: &str,
        schema: &OpSchema,
        fields: &Fields<'_>,
    ) -> (Option<Matrix>, Swept) {
        let before = self.errors.len();
        let mut matrix = Matrix::default();
        let mut axis_keys = BTreeSet::new();
        if let Some((_, node)) = fields.get("matrix") {
            match node.as_map() {
                None => self.push(type_error(
                    node,
                    &format!("`matrix` of stage `{stage}`"),
                    "a map of parameter → list of values",
                )),
                Some(entries) => {
                    for (key, values) in entries {
                        axis_keys.insert(key.name.clone());
                        let Some(ty) = Self::param_type(schema, &key.name) else {
                            self.unknown_param(stage, schema, key);
                            continue;
                        };
                        if let Some(values) = self.axis(stage, schema, key, values, ty) {
                            matrix.axes.push((key.name.clone(), values));
                        }
                    }
                }
            }
        }
        let mut sampled = BTreeSet::new();
        if let Some((key, node)) = fields.get("search") {
            let (search, names) = self.search(stage, schema, key, node, &axis_keys);
            matrix.search = search;
            sampled = names;
        }
        for (which, into_include) in [("include", true), ("exclude", false)] {
            let Some((_, node)) = fields.get(which) else {
                continue;
            };
            let Kind::Seq(entries) = &node.kind else {
                self.push(type_error(
                    node,
                    &format!("`{which}` of stage `{stage}`"),
                    "a list of maps",
                ));
                continue;
            };
            for entry in entries {
                if let Some(entry) =
                    self.matrix_entry(stage, schema, which, entry, &axis_keys, &sampled)
                {
                    if into_include {
                        matrix.include.push(entry)
                    } else {
                        matrix.exclude.push(entry)
                    }
                }
            }
        }
        let swept = Swept {
            axes: axis_keys,
            sampled,
        };
        ((self.errors.len() == before).then_some(matrix), swept)
    }

    pub(super) fn axis(
        &mut self,
        stage: &str,
        schema: &OpSchema,
        key: &Key,
        node: &Node,
        ty: &ParamType,
    ) -> Option<Vec<Value>> {
        // Interpolate first: `steps: "${vars.steps}"` may name a list.
        let node = interpolate(node, &self.vars, self.errors)?;
        let Kind::Seq(items) = &node.kind else {
            self.push(type_error(
                &node,
                &format!(
                    "matrix axis `{}` of stage `{stage}`",
                    shorten_name(&key.name)
                ),
                "a list of values",
            ));
            return None;
        };
        if items.is_empty() {
            self.push(
                node.origin
                    .error(format!(
                        "matrix axis `{}` of stage `{stage}` has no values",
                        shorten_name(&key.name)
                    ))
                    .label("empty list")
                    .help(format!(
                        "give `{}` at least one value",
                        shorten_name(&key.name)
                    )),
            );
            return None;
        }
        let mut values: Vec<Value> = Vec::with_capacity(items.len());
        // Values have no `Hash`; their JSON text is equal exactly when they are (generated
        // sweeps have thousands of values: a linear scan per value would be quadratic).
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match check_param(schema.name, &key.name, item, ty) {
                Ok(value) if !seen.insert(value.to_string()) => {
                    self.push(
                        item.origin
                            .error(format!(
                                "duplicate value `{}` in matrix axis `{}` of stage `{stage}`",
                                shorten(&value.to_string()),
                                shorten_name(&key.name)
                            ))
                            .label("duplicate"),
                    );
                    ok = false;
                }
                Ok(value) => values.push(value),
                Err(d) => {
                    self.push(d);
                    ok = false;
                }
            }
        }
        ok.then_some(values)
    }

    pub(super) fn matrix_entry(
        &mut self,
        stage: &str,
        schema: &OpSchema,
        which: &str,
        node: &Node,
        axis_keys: &BTreeSet<String>,
        sampled: &BTreeSet<String>,
    ) -> Option<BTreeMap<String, Value>> {
        let Some(entries) = node.as_map() else {
            self.push(type_error(
                node,
                &format!("an `{which}` entry of stage `{stage}`"),
                "a map of parameter values",
            ));
            return None;
        };
        if entries.is_empty() {
            self.push(
                node.origin
                    .error(format!("empty `{which}` entry in stage `{stage}`"))
                    .label("empty"),
            );
            return None;
        }
        let mut entry = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            // `include` and `exclude` shape the grid of the axes, which the samples multiply:
            // an entry cannot set or match a sampled value.
            if sampled.contains(&key.name) {
                self.push(
                    key.origin
                        .error(format!(
                            "`{which}` entry of stage `{stage}` uses `{}`, which `search` samples",
                            shorten_name(&key.name)
                        ))
                        .label("a sampled param")
                        .help("`include` and `exclude` shape the grid of the `matrix:` axes, and every sample runs with each of its combinations; a sampled param takes its values from the search"),
                );
                ok = false;
                continue;
            }
            if which == "exclude" && !axis_keys.contains(&key.name) {
                let help = suggest::hint(&key.name, axis_keys.iter().map(String::as_str))
                    .unwrap_or_else(|| {
                        if axis_keys.is_empty() {
                            format!("stage `{stage}` has no matrix axes to exclude from")
                        } else {
                            format!(
                                "`exclude` entries may only use the matrix axes: {}",
                                list(axis_keys)
                            )
                        }
                    });
                self.push(
                    key.origin
                        .error(format!(
                            "`exclude` entry of stage `{stage}` uses `{}`, which is not a matrix axis",
                            shorten_name(&key.name)
                        ))
                        .label("not a matrix axis")
                        .help(help),
                );
                ok = false;
                continue;
            }
            let Some(ty) = Self::param_type(schema, &key.name) else {
                self.unknown_param(stage, schema, key);
                ok = false;
                continue;
            };
            match self.param_value(schema, &key.name, value, ty) {
                Some(value) => {
                    entry.insert(key.name.clone(), value);
                }
                None => ok = false,
            }
        }
        ok.then_some(entry)
    }
}
