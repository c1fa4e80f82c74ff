//! The one place where the raw tree becomes a [`Pipeline`]. Every check pushes its problem and
//! goes on, so a file with ten mistakes gets ten errors in one run.

mod attrs;
mod early_stop;
mod matrix;
mod params;
mod search;
mod stage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::duration::DURATION_FORMS;
use crate::interp::{Vars, interpolate};
use crate::node::{Key, Kind, Node, Origin, shorten, shorten_name};
use crate::typecheck::check_param;
use crate::{
    Device, Diagnostic, Fuse, MAX_NAME_BYTES, Matrix, OnDiverge, OpCatalog, OpSchema, ParamType,
    Params, Pipeline, Resources, SourceFile, Span, Stage, StageName, Value, parse_duration,
    suggest,
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
pub(crate) const STAGE_KEYS: &[&str] = &[
    "op",
    "description",
    "needs",
    "params",
    "matrix",
    "include",
    "exclude",
    "search",
    "resources",
    "retries",
    "timeout",
    "diverged",
    "fuse",
    "early_stop",
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
    "fuse",
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
    fuse: Option<Fuse>,
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
/// Names as people read them: shortened, backticked, comma-separated.
pub(crate) fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
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
                "fuse" => self.defaults.fuse = self.fuse(value, "`fuse` in `defaults`"),
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
}

#[derive(Default)]
struct Needs {
    names: Vec<StageName>,
    /// How many distinct entries `needs` lists, valid or not (for the count check); `None`
    /// when `needs` is not even a list.
    written: Option<usize>,
}
