use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ablate_cache::{CacheError, LockNote, Lookup, Manifest, Origin, Store, now_us};
use ablate_plan::PlanIndex;
use tokio::sync::mpsc::UnboundedSender;

use ablate_spec::{OnDiverge, error_chain};

use crate::scheduler::{BoxFuture, Executor, Outcome};
use crate::{CancelToken, Job, OpContext, OpError, OpRunner, Progress, RunEvent};

/// How long an instance waits for another process's lock on its key before its line says so
/// (and then every ten times that).
const WAITING_NOTE_AFTER: Duration = Duration::from_millis(500);

/// How long a timed-out attempt has to stop after its SIGTERM before it is killed.
const TIMEOUT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs ops in this process, one blocking thread per running instance.
#[derive(Clone)]
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Arc<dyn OpRunner>,
    store: Store,
    workdir: PathBuf,
    host: String,
    version: String,
}

impl LocalExecutor {
    pub fn new(
        runner: Arc<dyn OpRunner>,
        store: Store,
        workdir: PathBuf,
        version: impl Into<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                runner,
                store,
                workdir,
                host: crate::hostname(),
                version: version.into(),
            }),
        }
    }

    /// Computes one job under its key's lock, blocking. Public so a Slurm task (`ablate exec`)
    /// runs exactly the protocol a local run does.
    pub fn execute_blocking(
        &self,
        job: &Job,
        force: bool,
        progress: &(dyn Fn(Progress) + Send + Sync),
        cancel: &CancelToken,
    ) -> Outcome {
        let inner = &*self.inner;
        let store = &inner.store;
        let mut next_note = Instant::now() + WAITING_NOTE_AFTER;
        let lock = loop {
            match store.try_lock_for(&job.key, &job.pipeline, &job.id) {
                Ok(Some(lock)) => break lock,
                Ok(None) if cancel.is_cancelled() => return Outcome::Cancelled,
                Ok(None) => {
                    // In flight elsewhere (another run, here or on a node sharing the cache, or
                    // the program of a run that was killed and is being stopped): wait, and
                    // say so on the instance's line.
                    if Instant::now() >= next_note {
                        progress(Progress {
                            message: Some(waiting_message(store.lock_holder(&job.key))),
                            ..Progress::default()
                        });
                        next_note = Instant::now() + WAITING_NOTE_AFTER * 10;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Outcome::Failed {
                        error: error_chain(&e),
                        log: None,
                    };
                }
            }
        };
        // Another process may have computed it while we waited for the lock.
        if !force && let Lookup::Hit(m) = store.lookup(&job.key) {
            return Outcome::CachedByOther(Arc::from(m));
        }
        let tmp = match store.begin(&job.key) {
            Ok(t) => t,
            Err(e) => {
                return Outcome::Failed {
                    error: error_chain(&e),
                    log: None,
                };
            }
        };
        let started_at_us = now_us();
        let t0 = Instant::now();
        let threads = job.resources.cpus.ceil().max(1.0) as usize;
        // The stage's `timeout` stops this attempt alone: cancelled at the deadline (a `cmd`
        // gets SIGTERM, training stops at its next batch), killed a grace period later.
        let attempt = match job.timeout {
            Some(t) => cancel.with_deadline(t, TIMEOUT_KILL_GRACE),
            None => cancel.clone(),
        };
        let ctx = OpContext::new(
            job,
            tmp.dir(),
            store,
            &inner.workdir,
            threads,
            progress,
            &attempt,
        )
        .with_key_lock(&lock);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.runner.run(&ctx)));
        // A result that made it in time (or just after) is kept.
        if !matches!(result, Ok(Ok(_))) && attempt.timed_out() && !cancel.is_cancelled() {
            let limit = job
                .timeout
                .map(ablate_spec::format_duration)
                .unwrap_or_default();
            return Outcome::Failed {
                error: format!(
                    "timed out after {limit} (the `timeout` of stage `{}`); it was stopped",
                    job.stage
                ),
                log: keep_if_any(tmp),
            };
        }
        match result {
            Ok(Ok(out)) if !out.status.is_done() && job.diverged == OnDiverge::Fail => {
                // What a retry would resume from holds the diverged state: it starts over.
                let _ = std::fs::remove_dir_all(store.checkpoint_dir(&job.key));
                Outcome::Failed {
                    error: format!(
                        "training {} (try a smaller learning rate); to keep a diverged run as a \
                         result, give the stage `diverged: record`",
                        out.status
                    ),
                    log: keep_if_any(tmp),
                }
            }
            Ok(Ok(out)) => {
                let manifest = Manifest {
                    format: 0,
                    key: job.key,
                    input: job.key_input.clone(),
                    origin: Origin {
                        pipeline: job.pipeline.clone(),
                        stage: job.stage.clone(),
                        label: job.label.clone(),
                    },
                    outputs: Vec::new(),
                    metrics: out.metrics,
                    publish: out.publish,
                    started_at_us,
                    seconds: t0.elapsed().as_secs_f64(),
                    device: job.device.clone(),
                    host: inner.host.clone(),
                    ablate_version: inner.version.clone(),
                    status: out.status,
                    checksum: None,
                };
                let committed = if force {
                    tmp.commit_replacing(manifest)
                } else {
                    tmp.commit(manifest)
                };
                match committed {
                    Ok(m) => {
                        // An earlier failed attempt's logs are no longer news, and there is
                        // nothing left to resume.
                        let _ = std::fs::remove_dir_all(store.failed_dir(&job.key));
                        let _ = std::fs::remove_dir_all(store.checkpoint_dir(&job.key));
                        Outcome::Computed(Arc::new(m))
                    }
                    Err(e @ CacheError::NonFiniteMetric { .. }) => Outcome::Failed {
                        error: error_chain(&e),
                        log: None,
                    },
                    Err(e) => Outcome::Failed {
                        error: format!("failed to store the result: {}", error_chain(&e)),
                        log: None,
                    },
                }
            }
            Ok(Err(_)) if cancel.is_cancelled() => Outcome::Cancelled,
            Ok(Err(OpError::Cancelled)) => Outcome::Cancelled,
            Ok(Err(e)) => Outcome::Failed {
                error: error_chain(&e),
                log: keep_if_any(tmp),
            },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Outcome::Failed {
                    error: format!("op `{}` panicked: {what}", job.op()),
                    log: keep_if_any(tmp),
                }
            }
        }
    }
}

impl Executor for LocalExecutor {
    fn execute(
        &self,
        instance: PlanIndex,
        job: Arc<Job>,
        force: bool,
        events: UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> BoxFuture<Outcome> {
        let this = self.clone();
        Box::pin(async move {
            let handle = tokio::task::spawn_blocking(move || {
                let id = job.id.clone();
                let progress = move |p: Progress| {
                    let _ = events.send(RunEvent::Progress {
                        instance,
                        id: id.clone(),
                        step: p.step,
                        total: p.total,
                        loss: p.loss,
                        message: p.message,
                    });
                };
                this.execute_blocking(&job, force, &progress, &cancel)
            });
            handle.await.unwrap_or_else(|e| Outcome::Failed {
                error: format!("worker thread failed: {e}"),
                log: None,
            })
        })
    }
}

/// Keeps a failed attempt's files for inspection, when it wrote any.
/// The line a run waiting for a key shows, from the lock's note: who holds it, and what to kill
/// — the program's pid, not only ablate's, which is gone when ablate was killed and its orphaned
/// program still holds the key (#21).
fn waiting_message(holder: Option<LockNote>) -> String {
    match holder {
        // The lock outlives its ablate in the programs it started, which its watchdog is
        // stopping (see `process`).
        Some(note) if note.holder_gone() => {
            let program = note
                .program_pid
                .map(|p| format!(" (program pid {p}, with its process group)"))
                .unwrap_or_default();
            format!(
                "waiting: the programs of ablate pid {}, which died, still hold this key{program}; \
                 they are being stopped",
                note.pid
            )
        }
        Some(note) => format!(
            "waiting: another process computes this key ({}); it is used when done",
            note.describe()
        ),
        None => "waiting: another process computes this key".to_owned(),
    }
}

fn keep_if_any(tmp: ablate_cache::TempEntry<'_>) -> Option<PathBuf> {
    let wrote = std::fs::read_dir(tmp.dir()).is_ok_and(|mut d| d.next().is_some());
    if wrote { tmp.fail().ok() } else { None }
}
