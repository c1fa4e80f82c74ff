//! Validated domain types: what a pipeline means once the file has been checked.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Params, SourceFile, Span, Value};

/// The longest pipeline or stage name, in bytes. Names become file names (`results/<name>/`,
/// `cache/v1/pipelines/<name>.json`, `<stage>_<labels>.<ext>`) with more around them
/// (`<name>.tmp.<pid>.<n>`), and file systems refuse names over 255 bytes: a longer name would
/// only fail at the end of a run.
pub const MAX_NAME_BYTES: usize = 128;

/// The name of a stage, as written under `stages:`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageName(String);

impl StageName {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for StageName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Where an instance's ops run. Recorded in manifests and results, never part of a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Device {
    #[default]
    Cpu,
    /// `cuda`: a GPU the local scheduler picks (`None`); `cuda:N`: GPU N.
    Cuda(Option<u32>),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(None) => f.write_str("cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| Device::Cuda(Some(n)))
                .ok_or_else(|| {
                    format!(
                        "expected `cpu`, `cuda` or `cuda:N`, found `{}`",
                        crate::node::shorten(s)
                    )
                }),
        }
    }
}

/// What one instance of a stage asks of the machine. Execution detail: never part of a key.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: f64,
    pub gpus: f64,
    pub mem_gb: f64,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpus: 1.0,
            gpus: 0.0,
            mem_gb: 0.0,
        }
    }
}

/// What becomes of an instance whose training diverges (a non-finite loss or metric): the
/// stage's `diverged:` key. Not part of the key: it decides what a new computation does with a
/// divergence, and an entry recorded as diverged stays a result whatever the stage says later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDiverge {
    /// The attempt fails (and is retried if `retries` allows), with a message naming the
    /// metric and step.
    #[default]
    Fail,
    /// The instance is a result with status `diverged`: its metrics so far are kept, its
    /// dependants that consume it are skipped, reports show it as diverged.
    Record,
}

impl OnDiverge {
    pub const NAMES: [&'static str; 2] = ["fail", "record"];
}

/// Whether the instances of a stage that differ only in their op's *fusible* parameters (seed,
/// learning rate, … : values, not shapes) are computed together as one batched computation: the
/// stage's `fuse:` key. Execution detail like `timeout`: never part of a key, and each member
/// still gets its own cache entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fuse {
    /// `fuse: off` (or `fuse: 1`): each instance runs alone.
    Off,
    /// `fuse: auto` (the default): group what the op computes faster fused on the stage's
    /// device (see [`crate::OpCatalog::fuses_by_default`]).
    Auto { max: Option<usize> },
    /// `fuse: on`, or `fuse: N` (at most `N` ≥ 2 members per group): group whatever the op can
    /// fuse, faster or not (the language models on a CPU, say).
    On { max: Option<usize> },
}

impl Default for Fuse {
    fn default() -> Self {
        Fuse::Auto { max: None }
    }
}

impl Fuse {
    /// The forms a pipeline may write, for messages.
    pub const FORMS: &'static str = "`auto`, `on`, `off` or a whole number N ≥ 1 (`on` with at \
         most N members per group; 1 is `off`)";

    /// `fuse: N`, with 1 meaning off.
    pub fn at_most(n: usize) -> Fuse {
        if n <= 1 {
            Fuse::Off
        } else {
            Fuse::On { max: Some(n) }
        }
    }
}

/// A stage's `early_stop:` (issue 24): successive halving over its instances, which the
/// scheduler runs rung by rung. Every instance first computes `min` units of its op's progress
/// (epochs of `train.flow`, steps of `train.lm` and `cmd`); then, per configuration (the
/// instances that differ only in the `seeds` param, whose metric is averaged), the best
/// ⌊n/η⌋ (at least one) of the n configurations that reached the rung continue from their
/// checkpoints to `min·η`, and so on; the rest stop there as `pruned` results. The last rung
/// runs the survivors to their end (`max`, the instances' length). The rungs are synchronous,
/// so the same file and cache always make the same decisions. Execution detail like `fuse`:
/// never part of a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EarlyStop {
    /// The metric compared at each rung: the last value the instance logged at or before the
    /// rung's step.
    pub metric: String,
    pub mode: Goal,
    /// The op's progress unit (`epochs` or `steps`), as written (checked against the op's).
    pub resource: String,
    pub min: u64,
    pub max: u64,
    /// The reduction factor η ≥ 2.
    pub eta: u64,
    /// The param whose values are seeds of one configuration (default `seed`).
    pub seeds: String,
}

/// Whether a smaller or a larger metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    Min,
    Max,
}

impl Goal {
    /// Whether `a` is strictly better than `b` (NaN is never better).
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Goal::Min => a < b,
            Goal::Max => a > b,
        }
    }
}

impl EarlyStop {
    /// The rungs' budgets below the whole run: `min`, `min·η`, … while below `max`. The
    /// survivors of the last of them run to their end.
    pub fn rungs(&self) -> Vec<u64> {
        let mut rungs = Vec::new();
        let mut r = self.min;
        while r < self.max {
            rungs.push(r);
            r = r.saturating_mul(self.eta);
        }
        rungs
    }

    /// How many of `n` configurations that reached a rung continue: ⌊n/η⌋, at least one.
    pub fn keep(&self, n: usize) -> usize {
        (n / self.eta as usize).max(1).min(n)
    }
}

/// A stage's own sweep. `axes` keep file order; each axis value is already normalised against
/// the op's parameter type. `include`/`exclude` follow the rules of [`Matrix::expand`]; they
/// shape the grid of the axes, which a `search` (its samples already drawn) multiplies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrix {
    pub axes: Vec<(String, Vec<Value>)>,
    pub include: Vec<BTreeMap<String, Value>>,
    pub exclude: Vec<BTreeMap<String, Value>>,
    /// The stage's `search:`: params sampled rather than listed (issue 24).
    pub search: Option<crate::Search>,
}

/// One validated stage.
#[derive(Clone, Debug)]
pub struct Stage {
    pub name: StageName,
    pub description: Option<String>,
    pub op: String,
    /// The op's version at validation time (from its schema).
    pub op_version: u32,
    /// In file order; every name exists in the pipeline.
    pub needs: Vec<StageName>,
    /// Fully resolved params: the op's defaults, then `defaults:`, then `params:`, then
    /// `--set` overrides; interpolated and type-checked. Matrix keys and sampled params are
    /// not in here.
    pub params: Params,
    pub matrix: Matrix,
    /// True when the op gathers (reports) or the stage says `gather: true`: one instance (per
    /// own-matrix combination) that sees every instance of every need.
    pub gather: bool,
    pub resources: Resources,
    pub retries: u32,
    /// `timeout:` (or its `defaults:`): wall-clock limit of one attempt of an instance: its
    /// process group is killed and the attempt fails. Execution detail: never part of a key.
    pub timeout: Option<Duration>,
    /// `diverged:` (or its `defaults:`): fail the attempt or record the divergence as a result.
    pub diverged: OnDiverge,
    /// `fuse:` (or its `defaults:`): whether instances that differ only in fusible params are
    /// computed as one group. Execution detail: never part of a key.
    pub fuse: Fuse,
    /// `early_stop:`: successive halving over the stage's instances (see [`EarlyStop`]).
    pub early_stop: Option<EarlyStop>,
    /// `strict:` (or its `defaults:`) of a report stage (an op that gathers): build only when
    /// every input finished, instead of from those that did with the others marked. Always
    /// false for other stages, which need every input anyway.
    pub strict: bool,
    pub device: Device,
    /// Span of the stage's name under `stages:`.
    pub span: Span,
    /// Span of the `needs:` value, if written (for cycle and join errors).
    pub needs_span: Option<Span>,
    /// Where each param under the stage's `params:` is written (not those from `defaults:`, a
    /// matrix or a `--set`): errors found after validation point there (a `deps` entry that
    /// matches no file).
    pub written: BTreeMap<String, WrittenParam>,
}

/// Where a param is written in the pipeline file.
#[derive(Clone, Debug, PartialEq)]
pub struct WrittenParam {
    /// Its key (`deps:`).
    pub key: Span,
    /// Each item of a list value, with its text when it is a string (`deps: [train.py, src/]`).
    pub items: Vec<(Span, Option<String>)>,
}

impl WrittenParam {
    /// The item written as `text`, else the key.
    pub fn item_or_key(&self, text: &str) -> Span {
        self.items
            .iter()
            .find(|(_, t)| t.as_deref() == Some(text))
            .map_or(self.key, |(span, _)| *span)
    }
}

/// The [`WrittenParam`]s of a stage's `params:` node.
pub(crate) fn written_params(params: Option<&crate::node::Node>) -> BTreeMap<String, WrittenParam> {
    use crate::node::Kind;
    let entries = params.and_then(|node| node.as_map()).unwrap_or_default();
    entries
        .iter()
        .filter_map(|(key, value)| {
            // A `--set` replaces the value, not the key: such a param is not written here.
            value.origin.span()?;
            let items = match &value.kind {
                Kind::Seq(items) => items
                    .iter()
                    .filter_map(|item| {
                        let text = match &item.kind {
                            Kind::Str(s) => Some(s.clone()),
                            _ => None,
                        };
                        Some((item.origin.span()?, text))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((
                key.name.clone(),
                WrittenParam {
                    key: key.origin.span()?,
                    items,
                },
            ))
        })
        .collect()
}

/// A validated pipeline file.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub name: String,
    pub description: Option<String>,
    pub vars: BTreeMap<String, Value>,
    /// Stages in file order.
    pub stages: Vec<Stage>,
    /// `executor:` and `slurm:`: where the file would like to run (a profile or the command
    /// line may say otherwise).
    pub executor: crate::ExecutorConfig,
    /// `workdir:` as written, with its place: the directory the file's relative paths (`cmd`'s
    /// `run` and `deps`, data files) resolve against, itself relative to the file's directory.
    /// `None`: the file's directory. Resolved by the caller, which knows where the file is.
    pub workdir: Option<(String, Span)>,
    pub source: Arc<SourceFile>,
}

impl Pipeline {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_str() == name)
    }
}
