//! `ablate-run` owns execution: the tokio scheduler that walks a sealed plan and emits ready
//! instances within resource slots, retries, cancellation (graceful, then kill), the stream of
//! [`RunEvent`]s, and the executors that do the work — [`LocalExecutor`] runs ops in-process
//! on a blocking pool through the [`OpRunner`] interface that `ablate-ops` implements.
//!
//! It must not link dfdx or arrow, and never prints: everything leaves as events.
//! It imports `ablate-spec`, `ablate-plan` and `ablate-cache`, nothing else of ablate.

mod cancel;
mod dispatch;
mod event;
mod fuse;
mod graph;
mod job;
mod local;
mod op;
pub mod placement;
pub mod process;
mod scheduler;
pub mod slurm;
mod strategy;
mod tail;

pub use cancel::CancelToken;
pub use event::{Divergence, RunEvent, SkipCause, Summary};
pub use job::{Job, JobInput, MissingInput, Unfinished};
pub use local::{GroupMember, LocalExecutor};
pub use op::{OpContext, OpError, OpOutput, OpRunner, Progress, run_each};
pub use placement::Placement;
pub use scheduler::{BoxFuture, Executor, Outcome, RunOptions, run};
pub use slurm::{SlurmExecutor, SlurmSettings};
pub use strategy::RungResult;
pub use tail::{TAIL_WINDOW, tail};

/// Hostname for manifests (best effort).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
