use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ablate_cache::{CachedEntry, EntryStatus, InstanceKey, Manifest};
use ablate_plan::PlanIndex;
use serde::Serialize;

/// What happens during a run, in order. The scheduler emits them; the CLI fans them out to
/// the terminal, `--json`, and the results writer. Serialised as one JSON object per line
/// with an `"event"` tag.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    Plan {
        pipeline: String,
        instances: usize,
        cached: usize,
        to_run: usize,
    },
    Cached {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        key: InstanceKey,
        /// `done`, or `diverged` (then `diverged` says how).
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        diverged: Option<Divergence>,
        /// The verified entry; its manifest is read when first asked for.
        #[serde(skip)]
        entry: Arc<CachedEntry>,
    },
    /// A fused group starts: its members are computed together, in one slot; each member's
    /// `started` follows, and each ends with its own `finished` or `failed`.
    GroupStarted {
        #[serde(skip)]
        members: Vec<PlanIndex>,
        stage: String,
        /// The members' ids, in plan order.
        ids: Vec<String>,
    },
    Started {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        key: InstanceKey,
        attempt: u32,
    },
    Progress {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        step: u64,
        total: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        loss: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Finished {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        /// The entry's key: the instance's, or for a report built from part of its inputs,
        /// the key of that partial report (see [`crate::Job::partial`]).
        key: InstanceKey,
        /// `done`, or `diverged` (then `diverged` says how).
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        diverged: Option<Divergence>,
        /// Inputs of a report that did not finish and are marked in it (failed, skipped).
        #[serde(skip_serializing_if = "is_zero")]
        missing_inputs: usize,
        seconds: f64,
        metrics: BTreeMap<String, f64>,
        /// Computed by another process while this one waited for the key's lock.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        by_other: bool,
        #[serde(skip)]
        manifest: Arc<Manifest>,
    },
    Failed {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        key: InstanceKey,
        attempt: u32,
        will_retry: bool,
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<PathBuf>,
    },
    /// It stopped at its early-stopping budget (`early_stop:`) at progress step `step`, with
    /// the metric it is compared on there; it waits for its rung's decision.
    Paused {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        key: InstanceKey,
        step: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
    },
    /// A rung of a stage's early stopping was decided: each configuration's mean metric over
    /// its seeds, best first, and how many go on (the others are recorded as pruned).
    Rung(crate::RungResult),
    /// Submitted to a cluster that runs it after this process has gone (`--detach`).
    Submitted {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        key: InstanceKey,
        /// The Slurm task (`ARRAYJOB_INDEX`).
        task: String,
    },
    Skipped {
        #[serde(skip)]
        instance: PlanIndex,
        id: String,
        key: InstanceKey,
        /// The id of the instance upstream that failed or diverged.
        because: String,
        /// What became of `because`.
        cause: SkipCause,
    },
    /// The run was cancelled (Ctrl-C); `not_run` instances were not started or were stopped.
    Interrupted {
        not_run: usize,
    },
    Summary(Summary),
}

/// Why an instance was skipped: an instance upstream failed, or diverged (a diverged result is
/// kept, but nothing that maps over it is computed; reports still show it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipCause {
    Failed,
    Diverged,
    /// Early stopping pruned it: a result, but nothing maps over a partial computation.
    Pruned,
}

impl SkipCause {
    pub fn name(self) -> &'static str {
        match self {
            SkipCause::Failed => "failed",
            SkipCause::Diverged => "diverged",
            SkipCause::Pruned => "pruned",
        }
    }
}

/// How a diverged entry diverged: which metric became non-finite, at which step, to what.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    pub metric: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    pub value: String,
}

impl Divergence {
    /// `None` for a done or pruned entry.
    pub fn of(status: &EntryStatus) -> Option<Divergence> {
        match status {
            EntryStatus::Done | EntryStatus::Pruned { .. } => None,
            EntryStatus::Diverged {
                metric,
                step,
                value,
            } => Some(Divergence {
                metric: metric.clone(),
                step: *step,
                value: value.clone(),
            }),
        }
    }
}

/// The last event of every run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub ran: usize,
    /// Of `ran`, those whose result is diverged (`diverged: record`).
    #[serde(skip_serializing_if = "is_zero")]
    pub diverged: usize,
    pub cached: usize,
    /// Of `cached`, those whose result is diverged.
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_diverged: usize,
    /// Of `ran`, those early stopping recorded as pruned.
    #[serde(skip_serializing_if = "is_zero")]
    pub pruned: usize,
    /// Of `cached`, those held as pruned, which stay so.
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_pruned: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Left running on a cluster (`--detach`).
    #[serde(skip_serializing_if = "is_zero")]
    pub submitted: usize,
    pub seconds: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
