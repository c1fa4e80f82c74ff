use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ablate_cache::{CachedEntry, InstanceKey, Manifest};
use ablate_plan::InstanceId;
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
        instance: InstanceId,
        id: String,
        key: InstanceKey,
        /// The verified entry; its manifest is read when first asked for.
        #[serde(skip)]
        entry: Arc<CachedEntry>,
    },
    Started {
        #[serde(skip)]
        instance: InstanceId,
        id: String,
        key: InstanceKey,
        attempt: u32,
    },
    Progress {
        #[serde(skip)]
        instance: InstanceId,
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
        instance: InstanceId,
        id: String,
        key: InstanceKey,
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
        instance: InstanceId,
        id: String,
        key: InstanceKey,
        attempt: u32,
        will_retry: bool,
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<PathBuf>,
    },
    /// Submitted to a cluster that runs it after this process has gone (`--detach`).
    Submitted {
        #[serde(skip)]
        instance: InstanceId,
        id: String,
        key: InstanceKey,
        /// The Slurm task (`ARRAYJOB_INDEX`).
        task: String,
    },
    Skipped {
        #[serde(skip)]
        instance: InstanceId,
        id: String,
        key: InstanceKey,
        /// The id of the failed instance upstream.
        because: String,
    },
    /// The run was cancelled (Ctrl-C); `not_run` instances were not started or were stopped.
    Interrupted {
        not_run: usize,
    },
    Summary(Summary),
}

/// The last event of every run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
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
