use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use ablate_cache::{InstanceKey, Manifest, Metric, Store};
use ablate_spec::OpCatalog;

use crate::{CancelToken, Job};

/// The ops an executor can run in-process: implemented by `ablate-ops`' registry, so the
/// scheduler never links the models or Arrow.
pub trait OpRunner: OpCatalog + Send + Sync + 'static {
    /// Computes one instance: reads inputs through `ctx`, writes its outputs into
    /// `ctx.out_dir()`, and returns its metrics. Blocking; called on a worker thread.
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError>;
}

/// What an op reports besides the files it wrote.
#[derive(Clone, Debug, Default)]
pub struct OpOutput {
    pub metrics: Vec<Metric>,
    /// Output files to be copied to `results/<pipeline>/` (report tables).
    pub publish: Vec<String>,
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

/// What an op sees while it runs.
pub struct OpContext<'a> {
    pub job: &'a Job,
    pub(crate) out_dir: &'a Path,
    pub(crate) store: &'a Store,
    pub(crate) workdir: &'a Path,
    pub(crate) threads: usize,
    pub(crate) progress: &'a (dyn Fn(Progress) + Send + Sync),
    pub(crate) cancel: &'a CancelToken,
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
        }
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

    /// The cache directory of an upstream instance.
    pub fn entry_dir(&self, key: &InstanceKey) -> PathBuf {
        self.store.entry_dir(key)
    }

    pub fn manifest(&self, key: &InstanceKey) -> Option<Manifest> {
        self.store.read_manifest(key)
    }

    /// The nearest file called `name` among the outputs of the inputs, then of their inputs
    /// (breadth first): how an evaluation finds the test split behind the model it evaluates.
    pub fn find_artifact(&self, name: &str) -> Option<PathBuf> {
        let mut queue: VecDeque<InstanceKey> = self.job.inputs.iter().map(|i| i.key).collect();
        let mut seen = HashSet::new();
        while let Some(key) = queue.pop_front() {
            if !seen.insert(key) {
                continue;
            }
            let path = self.store.entry_dir(&key).join(name);
            if path.is_file() {
                return Some(path);
            }
            if let Some(m) = self.store.read_manifest(&key) {
                queue.extend(m.input.inputs.iter().map(|r| r.key));
            }
        }
        None
    }
}
