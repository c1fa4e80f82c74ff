use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use ablate_cache::{
    EntryStatus, InstanceKey, KeyLock, Lookup, Manifest, Metric, Store, VerifyMode,
};
use ablate_spec::OpCatalog;

use crate::{CancelToken, Job};

/// The ops an executor can run in-process: implemented by `ablate-ops`' registry, so the
/// scheduler never links the models or Arrow.
pub trait OpRunner: OpCatalog + Send + Sync + 'static {
    /// Computes one instance: reads inputs through `ctx`, writes its outputs into
    /// `ctx.out_dir()`, and returns its metrics. Blocking; called on a worker thread.
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError>;

    /// Computes the members of a fused group (instances of one stage that differ only in the
    /// op's [`OpCatalog::fusible`] params) together, each into its own `ctx.out_dir()`, with
    /// its own progress and cancel token (a member's token also carries its own `timeout`).
    /// Returns one result per ctx, in order; a member that fails fails alone. Blocking; called
    /// on one worker thread. An op whose members' inputs do not agree in shape computes them
    /// apart.
    ///
    /// This default runs each member in turn, and reports a member whose token is cancelled
    /// (the run was stopped, or its timeout passed while the others ran) as
    /// [`OpError::Cancelled`] without starting it.
    fn run_group(&self, ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
        run_each(ctxs, |ctx| self.run(ctx))
    }
}

/// A group computed member by member (the default of [`OpRunner::run_group`], and of an op
/// that cannot fuse): a member whose token is already cancelled is not started.
pub fn run_each(
    ctxs: &[OpContext<'_>],
    mut run: impl FnMut(&OpContext<'_>) -> Result<OpOutput, OpError>,
) -> Vec<Result<OpOutput, OpError>> {
    ctxs.iter()
        .map(|ctx| {
            if ctx.is_cancelled() {
                Err(OpError::Cancelled)
            } else {
                run(ctx)
            }
        })
        .collect()
}

/// What an op reports besides the files it wrote.
#[derive(Clone, Debug, Default)]
pub struct OpOutput {
    /// Finite values only (a cache entry cannot hold NaN): a divergence goes in `status`.
    pub metrics: Vec<Metric>,
    /// Output files to be copied to `results/<pipeline>/` (report tables).
    pub publish: Vec<String>,
    /// `Diverged` when a loss or metric became non-finite: the executor fails the attempt, or
    /// records it as a result where the stage says `diverged: record` (the op need not know).
    pub status: EntryStatus,
    /// The progress step at which the op stopped because it reached [`OpContext::budget`]
    /// before its end: it left in [`OpContext::checkpoint_dir`] what a later attempt resumes
    /// from, and `metrics` (and the files in `out_dir`) are those at that step. `None`: it
    /// computed the whole instance (also when the budget was not below its length).
    pub stopped_at: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The op noticed the cancel token and stopped.
    #[error("cancelled")]
    Cancelled,
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl OpError {
    pub fn msg(message: impl Into<String>) -> Self {
        OpError::Failed {
            message: message.into(),
            source: None,
        }
    }
    pub fn with(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        OpError::Failed {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Live progress of a running instance (epoch/step and loss for training ops).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
    pub loss: Option<f64>,
    pub message: Option<String>,
}

impl Progress {
    /// The latest line of a metrics log as the progress line shows it, `step 120: loss 0.4012
    /// acc 0.9100` (six values at most): one form for a local `cmd` and a Slurm task (#24).
    pub fn metrics(step: u64, values: &[(String, f64)]) -> Progress {
        let values: Vec<String> = values
            .iter()
            .take(6)
            .map(|(k, v)| format!("{k} {}", short(*v)))
            .collect();
        Progress {
            step,
            total: 0,
            loss: None,
            message: Some(format!("step {step}: {}", values.join(" "))),
        }
    }
}

/// A number as a progress line shows it.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// What an op sees while it runs.
pub struct OpContext<'a> {
    pub job: &'a Job,
    pub(crate) out_dir: &'a Path,
    pub(crate) store: &'a Store,
    pub(crate) workdir: &'a Path,
    pub(crate) threads: usize,
    pub(crate) progress: &'a (dyn Fn(Progress) + Send + Sync),
    pub(crate) cancel: &'a CancelToken,
    pub(crate) key_lock: Option<&'a KeyLock>,
}

impl<'a> OpContext<'a> {
    /// Builds a context (executors and tests).
    pub fn new(
        job: &'a Job,
        out_dir: &'a Path,
        store: &'a Store,
        workdir: &'a Path,
        threads: usize,
        progress: &'a (dyn Fn(Progress) + Send + Sync),
        cancel: &'a CancelToken,
    ) -> Self {
        Self {
            job,
            out_dir,
            store,
            workdir,
            threads,
            progress,
            cancel,
            key_lock: None,
        }
    }

    /// The key lock the executor holds for this attempt: a program the op starts inherits it
    /// (see [`crate::process`]), so the key stays locked while it lives, and its pid goes in
    /// the lock's note.
    pub fn with_key_lock(mut self, lock: &'a KeyLock) -> Self {
        self.key_lock = Some(lock);
        self
    }

    /// See [`OpContext::with_key_lock`].
    pub fn key_lock(&self) -> Option<&'a KeyLock> {
        self.key_lock
    }

    /// Where the op writes its outputs (a temp directory, renamed into the cache on success).
    pub fn out_dir(&self) -> &Path {
        self.out_dir
    }

    /// The directory relative paths (of `cmd`) are resolved against.
    pub fn workdir(&self) -> &Path {
        self.workdir
    }

    /// Threads the op may use (from the stage's `resources.cpus`).
    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn progress(&self, p: Progress) {
        (self.progress)(p)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn cancel_token(&self) -> &CancelToken {
        self.cancel
    }

    /// Early stopping's budget: compute up to this progress step (an epoch of `train.flow`, a
    /// step of `train.lm` and `cmd`) and stop there with a checkpoint that a later attempt
    /// resumes from (see [`OpOutput::stopped_at`]); `None`: compute the whole instance. An
    /// attempt resumes from what [`OpContext::checkpoint_dir`] holds, budget or not, and its
    /// results equal those of one uninterrupted attempt.
    pub fn budget(&self) -> Option<u64> {
        self.job.budget
    }

    /// Where this instance's program keeps what a later attempt of the same key resumes from
    /// (see [`ablate_cache::Store::checkpoint_dir`]); created by the op that uses it.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.store.checkpoint_dir(&self.job.key)
    }

    /// The cache directory of an upstream instance.
    pub fn entry_dir(&self, key: &InstanceKey) -> PathBuf {
        self.store.entry_dir(key)
    }

    /// The manifest of an upstream entry (its metrics, outputs, inputs), checked: an entry
    /// whose manifest was edited, or whose files changed size, is refused.
    pub fn manifest(&self, key: &InstanceKey) -> Result<Manifest, OpError> {
        match self.store.lookup(key) {
            Lookup::Hit(m) => Ok(*m),
            Lookup::Miss => Err(self.untrusted(key, "the entry is missing")),
            Lookup::Invalid(why) => Err(self.untrusted(key, &why)),
        }
    }

    /// The nearest file called `name` among the outputs of the inputs, then of their inputs
    /// (breadth first): how an evaluation finds the test split behind the model it evaluates.
    /// The file is hashed and checked against its entry's manifest before it is handed out
    /// (see [`OpContext::input_file`]).
    pub fn find_artifact(&self, name: &str) -> Result<Option<PathBuf>, OpError> {
        let mut queue: VecDeque<InstanceKey> = self.job.inputs.iter().map(|i| i.key).collect();
        // A direct input that vanished is that, not a missing file.
        if let Some(gone) = queue.iter().find(|k| !self.store.entry_dir(k).exists()) {
            return Err(self.untrusted(gone, "the entry is missing"));
        }
        let mut seen = HashSet::new();
        while let Some(key) = queue.pop_front() {
            if !seen.insert(key) {
                continue;
            }
            if self.store.entry_dir(&key).join(name).is_file()
                && let Some(path) = self.input_file(&key, name)?
            {
                return Ok(Some(path));
            }
            if let Some(m) = self.store.read_manifest(&key) {
                queue.extend(m.input.inputs.iter().map(|r| r.key));
            }
        }
        Ok(None)
    }

    /// The output file `name` of the upstream entry `key`, once its content has been hashed
    /// and matched against the entry's manifest: a lookup trusts a file whose size and mtime
    /// are unchanged, what an op reads is verified in full (#16). `None`: no such output.
    pub fn input_file(&self, key: &InstanceKey, name: &str) -> Result<Option<PathBuf>, OpError> {
        self.store
            .verified_output(key, name)
            .map_err(|why| self.untrusted(key, &why))
    }

    /// The directory and manifest of the upstream entry `key`, once every file in it has been
    /// hashed and checked: for programs that read what they like (`cmd`'s inputs).
    pub fn verified_entry(&self, key: &InstanceKey) -> Result<(PathBuf, Manifest), OpError> {
        match self.store.verify(key, VerifyMode::Full) {
            Lookup::Hit(m) => Ok((self.store.entry_dir(key), *m)),
            Lookup::Miss => Err(self.untrusted(key, "the entry is missing")),
            Lookup::Invalid(why) => Err(self.untrusted(key, &why)),
        }
    }

    /// An input entry failed verification: it is removed (unless another process holds its
    /// lock) so the next run recomputes it, and this instance fails saying so. An entry that is
    /// gone (removed by another instance that found it corrupt, or by `cache gc`) is only
    /// reported.
    fn untrusted(&self, key: &InstanceKey, why: &str) -> OpError {
        let id = self.job.inputs.iter().find(|i| i.key == *key).map_or_else(
            || format!("entry {}", key.short()),
            |i| format!("`{}` ({})", i.id, key.short()),
        );
        if !self.store.entry_dir(key).exists() {
            return OpError::msg(format!(
                "input {id} is no longer in the cache (removed while this run went on); the next \
                 run recomputes it"
            ));
        }
        let removed = match self.store.try_lock(key) {
            Ok(Some(_lock)) => self.store.remove(key).is_ok(),
            _ => false,
        };
        OpError::msg(format!(
            "input {id} cannot be trusted: {why}; {}",
            if removed {
                "it was removed from the cache, and the next run recomputes it"
            } else {
                "remove it with `ablate cache verify --fix`, then run again"
            }
        ))
    }
}
