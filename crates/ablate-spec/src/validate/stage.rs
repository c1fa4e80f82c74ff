//! One stage: its name, op, attributes and `needs` (the names it lists and whether their
//! count suits the op), assembled into a [`Stage`] when every part checks out.

use super::*;

impl<'a> Validator<'a, '_> {
    /// One stage, and its op's schema when the op is known.
    pub(super) fn stage(
        &mut self,
        key: &Key,
        node: &Node,
    ) -> (Option<Stage>, Option<&'a OpSchema>) {
        let real_name = key.name.as_str();
        // Messages quote the name cut, however long it is (a too-long one is an error here).
        let name = &shorten_name(real_name);
        let span = span_of(&key.origin);
        if !is_stage_name(real_name) {
            self.push(
                key.origin
                    .error(format!("invalid stage name `{}`", shorten(real_name)))
                    .label("invalid name")
                    .help("stage names appear in paths, `{in.NAME}` and `--set`: use letters, digits, `_` and `-`"),
            );
        }
        if real_name.len() > MAX_NAME_BYTES {
            self.push(too_long(
                &key.origin,
                "stage name",
                real_name,
                "it names files (`results/<pipeline>/<stage>.parquet`, `<stage>_<labels>.<ext>` \
                 for published files), and file systems refuse file names over 255 bytes",
            ));
        }
        let Some(entries) = node.as_map() else {
            self.push(type_error(
                node,
                &format!("stage `{name}`"),
                "a map with at least `op`",
            ));
            return (None, None);
        };
        let context = format!("stage `{name}`");
        let fields = self.fields(entries, STAGE_KEYS, &context);

        let op = match fields.get("op") {
            Some((_, node)) => self
                .string(node, &format!("`op` of stage `{name}`"))
                .map(|op| (op, *node)),
            None if fields.attempted("op") => None,
            None => {
                self.push(
                    Diagnostic::error(format!("stage `{name}` has no `op`"))
                        .at(span)
                        .label("missing `op`")
                        .help("run `ablate ops` to list the ops"),
                );
                None
            }
        };
        let catalog: &'a dyn OpCatalog = self.catalog;
        let schema = op.and_then(|(op, node)| {
            let schema = catalog.schema(op);
            if schema.is_none() {
                let names = self.catalog.op_names();
                let help = suggest::hint(op, names.iter().copied())
                    .unwrap_or_else(|| "run `ablate ops` to list the ops".into());
                self.push(
                    node.origin
                        .error(format!("unknown op `{}` in stage `{name}`", shorten(op)))
                        .label("unknown op")
                        .help(help),
                );
            }
            schema
        });

        let description = fields
            .get("description")
            .and_then(|(_, node)| self.string(node, &format!("`description` of stage `{name}`")));
        let needs_node = fields.get("needs").map(|(_, node)| *node);
        let needs = match needs_node {
            Some(node) => self.needs(real_name, node),
            None => Needs {
                names: Vec::new(),
                written: Some(0),
            },
        };
        if let (Some(schema), Some(written), false) =
            (schema, needs.written, fields.misspelt.contains("needs"))
        {
            self.check_needs_count(name, span, schema, needs_node, written);
        }
        let device = match fields.get("device") {
            Some((_, node)) => self.device(node, &format!("`device` of stage `{name}`")),
            None => Some(self.defaults.device.unwrap_or_default()),
        };
        let retries = match fields.get("retries") {
            Some((_, node)) => self.retries(node, &format!("`retries` of stage `{name}`")),
            None => Some(self.defaults.retries.unwrap_or(0)),
        };
        let timeout = match fields.get("timeout") {
            Some((_, node)) => self
                .timeout(node, &format!("`timeout` of stage `{name}`"))
                .map(Some),
            None => Some(self.defaults.timeout),
        };
        let diverged = match fields.get("diverged") {
            Some((_, node)) => self.on_diverge(node, &format!("`diverged` of stage `{name}`")),
            None => Some(self.defaults.diverged.unwrap_or_default()),
        };
        let fuse = match fields.get("fuse") {
            Some((_, node)) => self.fuse(node, &format!("`fuse` of stage `{name}`")),
            None => Some(self.defaults.fuse.unwrap_or_default()),
        };
        let early_stop = match fields.get("early_stop") {
            Some((_, node)) => self.early_stop(name, node, schema).map(Some),
            None => Some(None),
        };
        let strict = self.strict(name, fields.get("strict").map(|(_, node)| *node), schema);
        let gather = match fields.get("gather") {
            Some((
                _,
                Node {
                    kind: Kind::Bool(b),
                    ..
                },
            )) => Some(*b),
            Some((_, node)) => {
                self.push(type_error(
                    node,
                    &format!("`gather` of stage `{name}`"),
                    "a boolean",
                ));
                None
            }
            None => Some(false),
        };
        let mut resources = self.defaults.resources.over(Resources::default());
        if let Some((_, node)) = fields.get("resources") {
            resources = self
                .resources(node, &format!("`resources` of stage `{name}`"), &context)
                .over(resources);
        }

        let params = match schema {
            Some(schema) => self.params(name, span, schema, &fields),
            None => {
                // Still report interpolation problems in a stage whose op is unknown.
                for key in ["params", "matrix", "include", "exclude", "search"] {
                    if let Some((_, node)) = fields.get(key) {
                        interpolate(node, &self.vars, self.errors);
                    }
                }
                None
            }
        };

        // Anything missing here was reported; the caller discards the pipeline.
        let (
            Some((op, _)),
            Some(schema),
            Some(device),
            Some(retries),
            Some(timeout),
            Some(diverged),
            Some(fuse),
            Some(early_stop),
            Some(strict),
            Some(gather),
            Some((params, matrix)),
        ) = (
            op, schema, device, retries, timeout, diverged, fuse, early_stop, strict, gather,
            params,
        )
        else {
            return (None, schema);
        };
        let stage = Stage {
            name: StageName::new(real_name),
            description: description.map(str::to_owned),
            op: op.to_owned(),
            op_version: schema.version,
            needs: needs.names,
            params,
            matrix,
            gather: schema.gathers || gather,
            resources,
            retries,
            timeout,
            diverged,
            fuse,
            early_stop,
            strict: strict && schema.gathers,
            device,
            span,
            needs_span: needs_node.and_then(|node| node.origin.span()),
            written: crate::model::written_params(fields.get("params").map(|(_, node)| *node)),
        };
        (Some(stage), Some(schema))
    }

    pub(super) fn needs(&mut self, real_stage: &str, node: &Node) -> Needs {
        let stage = &shorten_name(real_stage);
        let subject = format!("`needs` of stage `{stage}`");
        let items: Vec<&Node> = match &node.kind {
            Kind::Str(_) => vec![node],
            Kind::Seq(items) => items.iter().collect(),
            _ => {
                self.push(type_error(
                    node,
                    &subject,
                    "a stage name or a list of stage names",
                ));
                return Needs::default();
            }
        };
        // Count distinct names: `[a, a]` is a duplicate, reported as such, not two inputs.
        let distinct = items
            .iter()
            .map(|item| match &item.kind {
                Kind::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .len();
        let mut needs = Needs {
            names: Vec::new(),
            written: Some(distinct),
        };
        for item in items {
            let Kind::Str(need) = &item.kind else {
                self.push(type_error(item, &subject, "a stage name"));
                continue;
            };
            let problem = if need == real_stage {
                Some(
                    item.origin
                        .error(format!("stage `{stage}` needs itself"))
                        .label("a stage cannot need itself"),
                )
            } else if !self.stage_names.iter().any(|s| s == need) {
                let others = self
                    .stage_names
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != real_stage);
                Some(
                    item.origin
                        .error(format!(
                            "unknown stage `{}` in `needs` of stage `{stage}`",
                            shorten(need)
                        ))
                        .label("no such stage")
                        .maybe_help(suggest::hint(need, others)),
                )
            } else if needs.names.iter().any(|n| n.as_str() == need) {
                Some(
                    item.origin
                        .error(format!(
                            "stage `{}` is listed twice in {subject}",
                            shorten_name(need)
                        ))
                        .label("duplicate"),
                )
            } else {
                None
            };
            match problem {
                Some(problem) => self.push(problem),
                None => needs.names.push(StageName::new(need.clone())),
            }
        }
        needs
    }

    pub(super) fn check_needs_count(
        &mut self,
        stage: &str,
        span: Span,
        schema: &OpSchema,
        node: Option<&Node>,
        n: usize,
    ) {
        let (min, max) = schema.needs;
        if n >= min && max.is_none_or(|max| n <= max) {
            return;
        }
        let inputs = |k: usize| if k == 1 { "input" } else { "inputs" };
        let takes = match max {
            Some(0) => "takes no inputs".to_owned(),
            Some(max) if max == min => format!("takes exactly {min} {}", inputs(min)),
            Some(max) if min == 0 => format!("takes at most {max} {}", inputs(max)),
            Some(max) => format!("takes {min} to {max} inputs"),
            None => format!("takes at least {min} {}", inputs(min)),
        };
        let op = schema.name;
        let d = match node {
            Some(node) => node.origin.error(format!(
                "op `{op}` {takes}, but `needs` of stage `{stage}` lists {n}"
            )),
            None => Diagnostic::error(format!(
                "op `{op}` {takes}, but stage `{stage}` has no `needs`"
            ))
            .at(span),
        };
        self.push(d.label(takes));
    }
}
