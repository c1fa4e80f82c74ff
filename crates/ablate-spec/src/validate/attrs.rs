//! A stage's (or `defaults`') scalar attributes: `device`, `retries`, `strict`, `diverged`,
//! `fuse`, `timeout` and `resources`, each checked on its own and reported without stopping the rest.

use super::*;

impl Validator<'_, '_> {
    pub(super) fn device(&mut self, node: &Node, subject: &str) -> Option<Device> {
        match &node.kind {
            Kind::Str(s) => match s.parse() {
                Ok(device) => Some(device),
                Err(message) => {
                    self.push(
                        node.origin
                            .error(format!("invalid {subject}: {message}"))
                            .label("invalid device"),
                    );
                    None
                }
            },
            _ => {
                self.push(type_error(node, subject, "`cpu`, `cuda` or `cuda:N`"));
                None
            }
        }
    }

    pub(super) fn retries(&mut self, node: &Node, subject: &str) -> Option<u32> {
        match node.kind {
            Kind::Int(i) if i >= 0 => match u32::try_from(i) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.push(type_error(
                        node,
                        subject,
                        &format!("an integer in 0..={}", u32::MAX),
                    ));
                    None
                }
            },
            _ => {
                self.push(type_error(node, subject, "an integer ≥ 0"));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, subject: &str) -> Option<bool> {
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.push(type_error(node, subject, "`true` or `false`"));
                None
            }
        }
    }

    /// A stage's `strict:`, which only a report (an op that gathers results: `report.table`,
    /// `report.plot`, `report.claims`) can relax: every other stage needs every input.
    pub(super) fn strict(
        &mut self,
        name: &str,
        node: Option<&Node>,
        schema: Option<&OpSchema>,
    ) -> Option<bool> {
        let Some(node) = node else {
            return Some(self.defaults.strict.unwrap_or(false));
        };
        let strict = self.boolean(node, &format!("`strict` of stage `{name}`"))?;
        match schema {
            Some(schema) if !schema.gathers => {
                let reports: Vec<&str> = self
                    .catalog
                    .op_names()
                    .into_iter()
                    .filter(|op| self.catalog.schema(op).is_some_and(|s| s.gathers))
                    .collect();
                self.push(
                    node.origin
                        .error(format!(
                            "`strict` of stage `{name}`: op `{}` does not build a report",
                            schema.name
                        ))
                        .label("only for report stages")
                        .help(format!(
                            "a report ({}) builds from the inputs that finished, marking the \
                             others, unless it says `strict: true`; any other stage always needs \
                             every input, so remove this key",
                            list(reports)
                        )),
                );
                None
            }
            _ => Some(strict),
        }
    }

    /// `diverged:`: `fail` or `record`.
    pub(super) fn on_diverge(&mut self, node: &Node, subject: &str) -> Option<OnDiverge> {
        let found = match &node.kind {
            Kind::Str(s) => s.as_str(),
            _ => "",
        };
        match found {
            "fail" => Some(OnDiverge::Fail),
            "record" => Some(OnDiverge::Record),
            _ => {
                self.push(type_error(node, subject, "`fail` or `record`").help(
                    "`record` keeps a diverged run as a result (status `diverged`, its \
                         metrics so far); `fail` (the default) fails the attempt",
                ));
                None
            }
        }
    }

    /// `fuse:`: `auto`, `on`, `off`, or at most N members per group.
    pub(super) fn fuse(&mut self, node: &Node, subject: &str) -> Option<Fuse> {
        match &node.kind {
            Kind::Str(s) if s == "auto" => Some(Fuse::default()),
            Kind::Str(s) if s == "off" => Some(Fuse::Off),
            Kind::Str(s) if s == "on" => Some(Fuse::On { max: None }),
            Kind::Int(i) if *i >= 1 => {
                Some(Fuse::at_most(usize::try_from(*i).unwrap_or(usize::MAX)))
            }
            _ => {
                self.push(
                    type_error(
                        node,
                        subject,
                        "`auto`, `on`, `off` or a number of members ≥ 1",
                    )
                    .help(format!(
                        "`fuse` takes {}: instances of a sweep that differ only in values such as \
                         `seed` or `lr` train as one batched computation, each with its own cache \
                         entry",
                        Fuse::FORMS
                    )),
                );
                None
            }
        }
    }

    /// A `timeout`: a duration string (`30m`, `1h30m`) or a whole number of seconds.
    pub(super) fn timeout(&mut self, node: &Node, subject: &str) -> Option<Duration> {
        let parsed = match &node.kind {
            Kind::Str(text) => parse_duration(text),
            Kind::Int(i) if *i <= 0 => Err(format!("`{i}` is not a positive duration")),
            Kind::Int(i) => parse_duration(&i.to_string()),
            _ => {
                self.push(
                    type_error(node, subject, "a duration such as `30m` or `1h30m`")
                        .help(DURATION_FORMS),
                );
                return None;
            }
        };
        parsed
            .map_err(|why| {
                self.push(
                    node.origin
                        .error(format!("invalid {subject}: {why}"))
                        .label("invalid duration")
                        .help(DURATION_FORMS),
                );
            })
            .ok()
    }

    pub(super) fn resources(
        &mut self,
        node: &Node,
        subject: &str,
        context: &str,
    ) -> ResourcesPatch {
        let mut patch = ResourcesPatch::default();
        let Some(entries) = node.as_map() else {
            self.push(type_error(
                node,
                subject,
                "a map with `cpus`, `gpus` and `mem_gb`",
            ));
            return patch;
        };
        let fields = self.fields(entries, RESOURCE_KEYS, &format!("`resources` of {context}"));
        for (name, (_, value)) in fields.present {
            let positive = name == "cpus";
            let subject = format!("`resources.{name}` of {context}");
            match number(value) {
                Some(n) if if positive { n > 0.0 } else { n >= 0.0 } => match name {
                    "cpus" => patch.cpus = Some(n),
                    "gpus" => patch.gpus = Some(n),
                    _ => patch.mem_gb = Some(n),
                },
                _ => self.push(type_error(
                    value,
                    &subject,
                    if positive {
                        "a number > 0"
                    } else {
                        "a number ≥ 0"
                    },
                )),
            }
        }
        patch
    }
}
