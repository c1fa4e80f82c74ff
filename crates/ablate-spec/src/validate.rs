//! The one place where the raw tree becomes a [`Pipeline`]. Every check pushes its problem and
//! goes on, so a file with ten mistakes gets ten errors in one run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::duration::DURATION_FORMS;
use crate::interp::{Vars, interpolate};
use crate::node::{Key, Kind, Node, Origin, shorten, shorten_name};
use crate::typecheck::check_param;
use crate::{
    Device, Diagnostic, MAX_NAME_BYTES, Matrix, OnDiverge, OpCatalog, OpSchema, ParamType, Params,
    Pipeline, Resources, SourceFile, Span, Stage, StageName, Value, parse_duration, suggest,
};

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "vars",
    "defaults",
    "stages",
    "executor",
    "slurm",
    "workdir",
];
const STAGE_KEYS: &[&str] = &[
    "op",
    "description",
    "needs",
    "params",
    "matrix",
    "include",
    "exclude",
    "resources",
    "retries",
    "timeout",
    "diverged",
    "strict",
    "gather",
    "device",
];
/// `defaults:` keys that are stage attributes rather than op parameters.
const DEFAULT_ATTRIBUTES: &[&str] = &[
    "device",
    "retries",
    "timeout",
    "diverged",
    "strict",
    "resources",
];
const RESOURCE_KEYS: &[&str] = &["cpus", "gpus", "mem_gb"];

/// Validates the whole tree; `None` when anything is wrong (every problem is in `errors`).
pub(crate) fn validate(
    root: &Node,
    catalog: &dyn OpCatalog,
    source: Arc<SourceFile>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Pipeline> {
    let mut v = Validator {
        catalog,
        errors,
        vars: Vars::new(),
        defaults: Defaults::default(),
        stage_names: Vec::new(),
    };
    let pipeline = v.pipeline(root, source);
    if v.errors.is_empty() { pipeline } else { None }
}

struct Validator<'a, 'e> {
    catalog: &'a dyn OpCatalog,
    errors: &'e mut Vec<Diagnostic>,
    vars: Vars,
    defaults: Defaults,
    stage_names: Vec<String>,
}

/// What `defaults:` says, checked once.
#[derive(Default)]
struct Defaults {
    device: Option<Device>,
    retries: Option<u32>,
    timeout: Option<Duration>,
    diverged: Option<OnDiverge>,
    /// Applies to the report stages only (the others always need every input).
    strict: Option<bool>,
    resources: ResourcesPatch,
    /// Parameter defaults, interpolated (`None`: its interpolation failed, already reported).
    params: Vec<(Key, Option<Node>)>,
}

#[derive(Clone, Copy, Default)]
struct ResourcesPatch {
    cpus: Option<f64>,
    gpus: Option<f64>,
    mem_gb: Option<f64>,
}

impl ResourcesPatch {
    fn over(self, base: Resources) -> Resources {
        Resources {
            cpus: self.cpus.unwrap_or(base.cpus),
            gpus: self.gpus.unwrap_or(base.gpus),
            mem_gb: self.mem_gb.unwrap_or(base.mem_gb),
        }
    }
}

/// The allowed keys written in a map, by name, and the allowed keys that an unknown key looked
/// like a typo of (so `stagse:` is not also reported as a missing `stages:`).
struct Fields<'n> {
    present: BTreeMap<&'static str, (&'n Key, &'n Node)>,
    misspelt: BTreeSet<&'static str>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&(&'n Key, &'n Node)> {
        self.present.get(key)
    }
    /// Whether `key` is written, or an unknown key was reported as a typo of it.
    fn attempted(&self, key: &str) -> bool {
        self.present.contains_key(key) || self.misspelt.contains(key)
    }
}

/// "`retries` of stage `x` expects an integer ≥ 0, found a string `two`".
pub(crate) fn type_error(node: &Node, subject: &str, expected: &str) -> Diagnostic {
    node.origin
        .error(format!(
            "{subject} expects {expected}, found {}",
            node.describe()
        ))
        .label(format!("expected {expected}"))
}

/// The names, shortened, as a backticked list.
fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    crate::backticked(names.into_iter().map(|n| shorten_name(n.as_ref())))
}

pub(crate) fn unknown_key(
    key: &Key,
    context: &str,
    allowed: &[&str],
    suggestion: Option<&str>,
) -> Diagnostic {
    let help = match suggestion {
        Some(s) => format!("did you mean `{}`?", shorten_name(s)),
        None => format!("the keys of {context} are {}", list(allowed)),
    };
    key.origin
        .error(format!(
            "unknown key `{}` in {context}",
            shorten_name(&key.name)
        ))
        .label("unknown key")
        .help(help)
}

fn span_of(origin: &Origin) -> Span {
    origin.span().unwrap_or(Span::new(1, 1, 1))
}

/// A name over [`MAX_NAME_BYTES`]; `why` says where it ends up.
fn too_long(origin: &Origin, what: &str, name: &str, why: &str) -> Diagnostic {
    origin
        .error(format!(
            "{what} `{}` is too long ({} bytes; the limit is {MAX_NAME_BYTES})",
            shorten(name),
            name.len()
        ))
        .label(format!("longer than {MAX_NAME_BYTES} bytes"))
        .help(format!("shorten it: {why}"))
}

fn is_stage_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_pipeline_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.chars().all(|c| c == '.')
}

/// A finite number (integer or float) as f64.
fn number(node: &Node) -> Option<f64> {
    match node.kind {
        #[allow(clippy::cast_precision_loss)]
        Kind::Int(i) => Some(i as f64),
        Kind::Float(f) if f.is_finite() => Some(f),
        _ => None,
    }
}

impl<'a> Validator<'a, '_> {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.errors.push(diagnostic);
    }

    fn fields<'n>(
        &mut self,
        entries: &'n [(Key, Node)],
        allowed: &[&'static str],
        context: &str,
    ) -> Fields<'n> {
        let mut fields = Fields {
            present: BTreeMap::new(),
            misspelt: BTreeSet::new(),
        };
        for (key, value) in entries {
            match allowed.iter().find(|a| **a == key.name) {
                Some(name) => {
                    fields.present.insert(*name, (key, value));
                }
                None => {
                    let suggestion = suggest::did_you_mean(&key.name, allowed.iter().copied());
                    fields.misspelt.extend(suggestion);
                    self.push(unknown_key(key, context, allowed, suggestion));
                }
            }
        }
        fields
    }

    fn string<'n>(&mut self, node: &'n Node, subject: &str) -> Option<&'n str> {
        match &node.kind {
            Kind::Str(s) => Some(s),
            _ => {
                self.push(type_error(node, subject, "a string"));
                None
            }
        }
    }

    fn pipeline(&mut self, root: &Node, source: Arc<SourceFile>) -> Option<Pipeline> {
        let Some(entries) = root.as_map() else {
            let d = if root.kind == Kind::Null {
                root.origin.error("the pipeline file is empty")
            } else {
                type_error(root, "a pipeline file", "a map with `name` and `stages`")
            };
            self.push(d.help("a pipeline needs at least `name:` and `stages:`"));
            return None;
        };
        let fields = self.fields(entries, TOP_KEYS, "the pipeline");
        let root_span = span_of(&root.origin);

        let name = match fields.get("name") {
            Some((_, node)) => self.string(node, "`name`").and_then(|name| {
                let mut valid = true;
                if !is_pipeline_name(name) {
                    valid = false;
                    self.push(
                        node.origin
                            .error(format!("invalid pipeline name `{}`", shorten(name)))
                            .label("invalid name")
                            .help("the name becomes `results/<name>/`: use letters, digits, `_`, `.` and `-`"),
                    );
                }
                if name.len() > MAX_NAME_BYTES {
                    valid = false;
                    self.push(too_long(
                        &node.origin,
                        "pipeline name",
                        name,
                        "it names `results/<name>/`, `cache/v1/pipelines/<name>.json` and temporary \
                         files beside them, and file systems refuse file names over 255 bytes",
                    ));
                }
                valid.then(|| name.to_owned())
            }),
            None if fields.attempted("name") => None,
            None => {
                self.push(
                    Diagnostic::error("missing key `name` in the pipeline")
                        .at(root_span)
                        .help("add `name: …`; it names the results directory `results/<name>/`"),
                );
                None
            }
        };
        let description = fields
            .get("description")
            .and_then(|(_, node)| self.string(node, "`description`"));
        let workdir = fields.get("workdir").and_then(|(_, node)| {
            let dir = self.string(node, "`workdir`")?;
            if dir.is_empty() {
                self.push(
                    node.origin
                        .error("`workdir` is empty")
                        .label("empty")
                        .help("leave it out for the pipeline file's own directory, or write `.`"),
                );
                return None;
            }
            Some((dir.to_owned(), span_of(&node.origin)))
        });
        if let Some((_, node)) = fields.get("vars") {
            self.vars(node);
        }
        if let Some((_, node)) = fields.get("defaults") {
            self.defaults(node);
        }
        let executor = crate::executor::section(
            fields.get("executor").map(|(_, n)| *n),
            fields.get("slurm").map(|(_, n)| *n),
            self.errors,
        );

        let stages = match fields.get("stages") {
            None if fields.attempted("stages") => None,
            None => {
                self.push(Diagnostic::error("missing key `stages` in the pipeline").at(root_span));
                None
            }
            Some((key, node)) => match node.as_map() {
                None => {
                    self.push(type_error(node, "`stages`", "a map of stages"));
                    None
                }
                Some([]) => {
                    self.push(
                        key.origin
                            .error("the pipeline has no stages")
                            .label("empty"),
                    );
                    None
                }
                Some(entries) => {
                    self.stage_names = entries.iter().map(|(k, _)| k.name.clone()).collect();
                    let mut used = Vec::new();
                    let mut stages = Vec::new();
                    let mut complete = true;
                    for (key, node) in entries {
                        let (stage, schema) = self.stage(key, node);
                        used.push(schema);
                        match stage {
                            Some(stage) => stages.push(stage),
                            None => complete = false,
                        }
                    }
                    self.check_default_params_are_used(&used);
                    complete.then_some(stages)
                }
            },
        };

        let vars = std::mem::take(&mut self.vars);
        let vars = vars
            .into_iter()
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect::<Option<BTreeMap<_, _>>>();
        Some(Pipeline {
            name: name?,
            description: description.map(str::to_owned),
            vars: vars?,
            stages: stages?,
            executor,
            workdir,
            source,
        })
    }

    fn vars(&mut self, node: &Node) {
        let Some(entries) = node.as_map() else {
            self.push(type_error(node, "`vars`", "a map of variables"));
            return;
        };
        for (key, value) in entries {
            let value = match value.to_value() {
                Ok(value) => Some(value),
                Err(bad) => {
                    self.push(type_error(
                        bad,
                        &format!("variable `{}`", shorten_name(&key.name)),
                        "a finite number",
                    ));
                    None
                }
            };
            self.vars.insert(key.name.clone(), value);
        }
    }

    fn defaults(&mut self, node: &Node) {
        let Some(entries) = node.as_map() else {
            self.push(type_error(
                node,
                "`defaults`",
                "a map of parameter and stage-attribute defaults",
            ));
            return;
        };
        for (key, value) in entries {
            match key.name.as_str() {
                "device" => self.defaults.device = self.device(value, "`device` in `defaults`"),
                "retries" => self.defaults.retries = self.retries(value, "`retries` in `defaults`"),
                "timeout" => self.defaults.timeout = self.timeout(value, "`timeout` in `defaults`"),
                "diverged" => {
                    self.defaults.diverged = self.on_diverge(value, "`diverged` in `defaults`")
                }
                "strict" => self.defaults.strict = self.boolean(value, "`strict` in `defaults`"),
                "resources" => {
                    self.defaults.resources =
                        self.resources(value, "`resources` in `defaults`", "`defaults`")
                }
                _ => {
                    let interpolated = interpolate(value, &self.vars, self.errors);
                    self.defaults.params.push((key.clone(), interpolated));
                }
            }
        }
    }

    /// A `defaults:` parameter that no op of the pipeline declares is a typo or a leftover.
    fn check_default_params_are_used(&mut self, used: &[Option<&'a OpSchema>]) {
        // An unknown op is already an error; guessing what it would have declared helps nobody.
        if used.iter().any(Option::is_none) {
            return;
        }
        let declared: BTreeSet<&str> = used
            .iter()
            .flatten()
            .flat_map(|s| s.params.iter().map(|p| p.name))
            .chain([crate::schema::TAG.name])
            .collect();
        let unused: Vec<Key> = self
            .defaults
            .params
            .iter()
            .filter(|(key, _)| !declared.contains(key.name.as_str()))
            .map(|(key, _)| key.clone())
            .collect();
        for key in unused {
            let candidates = declared
                .iter()
                .copied()
                .chain(DEFAULT_ATTRIBUTES.iter().copied());
            let help = suggest::hint(&key.name, candidates).unwrap_or_else(|| {
                format!("`defaults` sets stage attributes ({}) and parameters of the ops in the pipeline", list(DEFAULT_ATTRIBUTES))
            });
            self.push(
                key.origin
                    .error(format!(
                        "`defaults` sets `{}`, but no op in this pipeline has such a parameter",
                        shorten_name(&key.name)
                    ))
                    .label("not a parameter of any op used here")
                    .help(help),
            );
        }
    }

    fn device(&mut self, node: &Node, subject: &str) -> Option<Device> {
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

    fn retries(&mut self, node: &Node, subject: &str) -> Option<u32> {
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

    fn boolean(&mut self, node: &Node, subject: &str) -> Option<bool> {
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
    fn strict(
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
    fn on_diverge(&mut self, node: &Node, subject: &str) -> Option<OnDiverge> {
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

    /// A `timeout`: a duration string (`30m`, `1h30m`) or a whole number of seconds.
    fn timeout(&mut self, node: &Node, subject: &str) -> Option<Duration> {
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

    fn resources(&mut self, node: &Node, subject: &str, context: &str) -> ResourcesPatch {
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

    /// One stage, and its op's schema when the op is known.
    fn stage(&mut self, key: &Key, node: &Node) -> (Option<Stage>, Option<&'a OpSchema>) {
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
                for key in ["params", "matrix", "include", "exclude"] {
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
            Some(strict),
            Some(gather),
            Some((params, matrix)),
        ) = (
            op, schema, device, retries, timeout, diverged, strict, gather, params,
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
            strict: strict && schema.gathers,
            device,
            span,
            needs_span: needs_node.and_then(|node| node.origin.span()),
        };
        (Some(stage), Some(schema))
    }

    fn needs(&mut self, real_stage: &str, node: &Node) -> Needs {
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

    fn check_needs_count(
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

    /// The parameter type of `key` for `schema`: declared, or `Any` for an op with free params.
    fn param_type<'s>(schema: &'s OpSchema, key: &str) -> Option<&'s ParamType> {
        const ANY: &ParamType = &ParamType::Any;
        schema
            .param(key)
            .map(|p| &p.ty)
            .or(schema.free_params.then_some(ANY))
    }

    fn unknown_param(&mut self, stage: &str, schema: &OpSchema, key: &Key) {
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
    fn param_value(
        &mut self,
        schema: &OpSchema,
        key: &str,
        node: &Node,
        ty: &ParamType,
    ) -> Option<Value> {
        let node = interpolate(node, &self.vars, self.errors)?;
        let value = check_param(schema.name, key, &node, ty)
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
    fn params(
        &mut self,
        stage: &str,
        span: Span,
        schema: &OpSchema,
        fields: &Fields<'_>,
    ) -> Option<(Params, Matrix)> {
        let before = self.errors.len();
        let (matrix, axis_keys) = self.matrix(stage, schema, fields);

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
            .filter(|(k, _)| !axis_keys.contains(*k))
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
                        if axis_keys.contains(&key.name) {
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
            || ["params", "matrix", "include"]
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
            // Every combination of the product sets its axes.
            if matrix.is_axis(p.name) && matrix.include.is_empty() {
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

    /// The stage's `matrix`, `include` and `exclude`; `None` when any of them is wrong. The
    /// set of axis names is returned either way, so params can be checked against it.
    fn matrix(
        &mut self,
        stage: &str,
        schema: &OpSchema,
        fields: &Fields<'_>,
    ) -> (Option<Matrix>, BTreeSet<String>) {
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
                if let Some(entry) = self.matrix_entry(stage, schema, which, entry, &axis_keys) {
                    if into_include {
                        matrix.include.push(entry)
                    } else {
                        matrix.exclude.push(entry)
                    }
                }
            }
        }
        ((self.errors.len() == before).then_some(matrix), axis_keys)
    }

    fn axis(
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

    fn matrix_entry(
        &mut self,
        stage: &str,
        schema: &OpSchema,
        which: &str,
        node: &Node,
        axis_keys: &BTreeSet<String>,
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

#[derive(Default)]
struct Needs {
    names: Vec<StageName>,
    /// How many distinct entries `needs` lists, valid or not (for the count check); `None`
    /// when `needs` is not even a list.
    written: Option<usize>,
}
