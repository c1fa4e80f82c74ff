use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ablate_cache::{
    CacheError, KeyLock, LockNote, Lookup, Manifest, Origin, Store, TempEntry, now_us,
};
use ablate_plan::PlanIndex;
use tokio::sync::mpsc::UnboundedSender;

use ablate_spec::{OnDiverge, error_chain};

use crate::scheduler::{BoxFuture, Executor, Outcome};
use crate::{CancelToken, Job, OpContext, OpError, OpOutput, OpRunner, Progress, RunEvent};

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
        let held = match self.acquire(job, force, progress, cancel) {
            Ok(held) => held,
            Err(ended) => return ended,
        };
        let ctx = self.context(job, &held, progress);
        let result = catch(job, || self.inner.runner.run(&ctx));
        self.finish(job, force, held, result, cancel)
    }

    /// Computes the members of a fused group, blocking: each takes its key as one instance
    /// does; a member another process already computed drops out (cached by other), and one
    /// whose key another process holds runs afterwards on its own, waiting for it. The rest
    /// are computed by ONE [`OpRunner::run_group`] call (a group of one by [`OpRunner::run`]),
    /// then each is committed or failed on its own, by the rules of
    /// [`LocalExecutor::execute_blocking`]. A panic fails every member of the call. Returns
    /// one outcome per member, in order. Public so a Slurm task runs exactly this protocol.
    pub fn execute_group_blocking(
        &self,
        members: &[GroupMember<'_>],
        cancel: &CancelToken,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = members.iter().map(|_| None).collect();
        let mut held = Vec::with_capacity(members.len());
        let mut busy = Vec::new();
        for (n, m) in members.iter().enumerate() {
            if cancel.is_cancelled() {
                outcomes[n] = Some(Outcome::Cancelled);
                continue;
            }
            match self.try_acquire(m.job, m.force, cancel) {
                Acquired::Held(mut h) => {
                    h.t0 = h.t0.checked_sub(m.spent).unwrap_or(h.t0);
                    held.push((n, h));
                }
                Acquired::Ended(ended) => outcomes[n] = Some(ended),
                Acquired::Busy => busy.push(n),
            }
        }
        if held.len() == 1 {
            let (n, h) = held.pop().expect("one member");
            let m = &members[n];
            let ctx = self.context(m.job, &h, m.progress);
            let result = catch(m.job, || self.inner.runner.run(&ctx));
            outcomes[n] = Some(self.finish(m.job, m.force, h, result, cancel));
        } else if !held.is_empty() {
            let first = members[held[0].0].job;
            let ctxs: Vec<OpContext<'_>> = held
                .iter()
                .map(|(n, h)| self.context(members[*n].job, h, members[*n].progress))
                .collect();
            let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.inner.runner.run_group(&ctxs)
            }));
            drop(ctxs);
            let results: Vec<Result<Result<OpOutput, OpError>, String>> = match results {
                Ok(r) if r.len() == held.len() => r.into_iter().map(Ok).collect(),
                Ok(r) => {
                    let why = format!(
                        "op `{}` returned {} results for a group of {}",
                        first.op(),
                        r.len(),
                        held.len()
                    );
                    held.iter().map(|_| Err(why.clone())).collect()
                }
                Err(panic) => {
                    let why = panicked(first, panic.as_ref());
                    held.iter().map(|_| Err(why.clone())).collect()
                }
            };
            for ((n, h), result) in held.into_iter().zip(results) {
                let m = &members[n];
                outcomes[n] = Some(self.finish(m.job, m.force, h, result, cancel));
            }
        }
        for n in busy {
            let m = &members[n];
            outcomes[n] = Some(self.execute_blocking(m.job, m.force, m.progress, cancel));
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every member has an outcome"))
            .collect()
    }

    /// Commits what an attempt of `job` left when it stopped at its budget `step` as a `pruned`
    /// entry, blocking (see [`prune_entry`]).
    pub fn prune_blocking(&self, job: &Job, step: u64) -> Outcome {
        prune_entry(&self.inner.store, job, step)
    }

    /// Takes `job`'s key, waiting while another process holds it (and saying so on its line).
    fn acquire(
        &self,
        job: &Job,
        force: bool,
        progress: &(dyn Fn(Progress) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<Held<'_>, Outcome> {
        let store = &self.inner.store;
        let mut next_note = Instant::now() + WAITING_NOTE_AFTER;
        loop {
            match self.try_acquire(job, force, cancel) {
                Acquired::Held(held) => return Ok(held),
                Acquired::Ended(ended) => return Err(ended),
                Acquired::Busy if cancel.is_cancelled() => return Err(Outcome::Cancelled),
                Acquired::Busy => {
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
            }
        }
    }

    /// One try at `job`'s key: its lock, then (unless `force`) a look whether another process
    /// computed it meanwhile, then a temp entry to write into.
    fn try_acquire(&self, job: &Job, force: bool, cancel: &CancelToken) -> Acquired<'_> {
        let store = &self.inner.store;
        let lock = match store.try_lock_for(&job.key, &job.pipeline, &job.id) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Acquired::Busy,
            Err(e) => {
                return Acquired::Ended(Outcome::Failed {
                    error: error_chain(&e),
                    log: None,
                });
            }
        };
        // Another process may have computed it while we waited for the lock.
        if !force && let Lookup::Hit(m) = store.lookup(&job.key) {
            return Acquired::Ended(Outcome::CachedByOther(Arc::from(m)));
        }
        let tmp = match store.begin(&job.key) {
            Ok(t) => t,
            Err(e) => {
                return Acquired::Ended(Outcome::Failed {
                    error: error_chain(&e),
                    log: None,
                });
            }
        };
        // The stage's `timeout` stops this attempt alone: cancelled at the deadline (a `cmd`
        // gets SIGTERM, training stops at its next batch), killed a grace period later.
        let token = match job.timeout {
            Some(t) => cancel.with_deadline(t, TIMEOUT_KILL_GRACE),
            None => cancel.clone(),
        };
        Acquired::Held(Held {
            lock,
            tmp,
            token,
            started_at_us: now_us(),
            t0: Instant::now(),
        })
    }

    /// What the op sees of a held attempt.
    fn context<'a>(
        &'a self,
        job: &'a Job,
        held: &'a Held<'_>,
        progress: &'a (dyn Fn(Progress) + Send + Sync),
    ) -> OpContext<'a> {
        let threads = job.resources.cpus.ceil().max(1.0) as usize;
        OpContext::new(
            job,
            held.tmp.dir(),
            &self.inner.store,
            &self.inner.workdir,
            threads,
            progress,
            &held.token,
        )
        .with_key_lock(&held.lock)
    }

    /// Ends a held attempt from what the op returned (`Err`: it panicked, with the message):
    /// commits its result, or fails it (a timeout, a divergence the stage does not record, a
    /// non-finite metric, an error), or drops it when the run was cancelled. Nothing
    /// half-written is committed.
    fn finish(
        &self,
        job: &Job,
        force: bool,
        held: Held<'_>,
        result: Result<Result<OpOutput, OpError>, String>,
        cancel: &CancelToken,
    ) -> Outcome {
        let inner = &*self.inner;
        let store = &inner.store;
        let Held {
            lock,
            tmp,
            token,
            started_at_us,
            t0,
        } = held;
        // A result that made it in time (or just after) is kept.
        if !matches!(result, Ok(Ok(_))) && token.timed_out() && !cancel.is_cancelled() {
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
        let outcome = match result {
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
            Ok(Ok(OpOutput {
                stopped_at: Some(step),
                metrics,
                status,
                publish,
            })) if status.is_done() => {
                let paused = Paused {
                    step,
                    produced: Produced {
                        metrics,
                        publish,
                        started_at_us,
                        seconds: t0.elapsed().as_secs_f64(),
                        device: job.placement.name(),
                        host: inner.host.clone(),
                        ablate_version: inner.version.clone(),
                    },
                };
                match paused.keep(store, job, tmp) {
                    Ok(()) => Outcome::Paused {
                        step,
                        metrics: paused.produced.metrics,
                    },
                    Err(why) => Outcome::Failed {
                        error: format!("failed to keep the outputs at the budget: {why}"),
                        log: None,
                    },
                }
            }
            Ok(Ok(out)) => {
                let manifest = Produced {
                    metrics: out.metrics,
                    publish: out.publish,
                    started_at_us,
                    seconds: t0.elapsed().as_secs_f64(),
                    device: job.placement.name(),
                    host: inner.host.clone(),
                    ablate_version: inner.version.clone(),
                }
                .manifest(job, out.status);
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
            Err(panicked) => Outcome::Failed {
                error: panicked,
                log: keep_if_any(tmp),
            },
        };
        // The key stays locked until its entry is committed or given up.
        drop(lock);
        outcome
    }
}

/// What an attempt that stopped at its budget left, kept in [`Store::paused_dir`] until the
/// strategy decides: its outputs as files there, the rest in `paused.json` beside them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Paused {
    step: u64,
    #[serde(flatten)]
    produced: Produced,
}

/// What an attempt produced besides its files, and where it ran: what its entry's manifest
/// records (another process may commit it: the Slurm driver, for a pruned one).
#[derive(serde::Serialize, serde::Deserialize)]
struct Produced {
    metrics: Vec<ablate_cache::Metric>,
    publish: Vec<String>,
    started_at_us: i64,
    seconds: f64,
    device: String,
    host: String,
    ablate_version: String,
}

impl Produced {
    /// The manifest of `job`'s entry with this and `status`.
    fn manifest(self, job: &Job, status: ablate_cache::EntryStatus) -> Manifest {
        Manifest {
            format: 0,
            key: job.key,
            input: job.key_input.clone(),
            origin: Origin {
                pipeline: job.pipeline.clone(),
                stage: job.stage.clone(),
                label: job.label.clone(),
            },
            outputs: Vec::new(),
            metrics: self.metrics,
            publish: self.publish,
            started_at_us: self.started_at_us,
            seconds: self.seconds,
            device: self.device,
            host: self.host,
            ablate_version: self.ablate_version,
            status,
            checksum: None,
        }
    }
}

/// What an attempt of `job` that stopped at its budget left, if one started at or after
/// `since_us` did: the outcome its executor reported (a Slurm task's, read by the driver
/// from the shared cache).
pub fn paused_outcome(store: &Store, job: &Job, since_us: i64) -> Option<Outcome> {
    let record = store.checkpoint_dir(&job.key).join(PAUSED_RECORD);
    let p: Paused = serde_json::from_slice(&std::fs::read(record).ok()?).ok()?;
    (p.produced.started_at_us >= since_us && store.paused_dir(&job.key).is_dir()).then_some(
        Outcome::Paused {
            step: p.step,
            metrics: p.produced.metrics,
        },
    )
}

/// Commits what an attempt of `job` left when it stopped at its budget `step` (see
/// [`Outcome::Paused`]) as a `pruned` entry, blocking: its outputs and metrics at that step,
/// under the key's lock. The checkpoint stays, for a later run that needs the whole
/// computation.
pub fn prune_entry(store: &Store, job: &Job, step: u64) -> Outcome {
    let failed = |error: String| Outcome::Failed { error, log: None };
    let lock = loop {
        match store.try_lock_for(&job.key, &job.pipeline, &job.id) {
            Ok(Some(lock)) => break lock,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return failed(error_chain(&e)),
        }
    };
    let tmp = match store.begin(&job.key) {
        Ok(t) => t,
        Err(e) => return failed(error_chain(&e)),
    };
    let outcome = match Paused::take(store, job, step, tmp.dir()) {
        Err(why) => failed(format!(
            "failed to record it as pruned at step {step}: {why}"
        )),
        Ok(p) => {
            let manifest = p
                .produced
                .manifest(job, ablate_cache::EntryStatus::Pruned { step });
            match tmp.commit_replacing(manifest) {
                Ok(m) => {
                    let _ = std::fs::remove_dir_all(store.failed_dir(&job.key));
                    Outcome::Computed(Arc::new(m))
                }
                Err(e) => failed(format!(
                    "failed to store the pruned result: {}",
                    error_chain(&e)
                )),
            }
        }
    };
    drop(lock);
    outcome
}

/// The file beside [`Store::paused_dir`] (in the checkpoint directory) that holds a
/// [`Paused`] record.
const PAUSED_RECORD: &str = ".ablate-paused.json";

impl Paused {
    /// Moves the attempt's outputs (its temp entry) to the key's paused directory, replacing
    /// what an earlier rung left there, with this record beside them.
    fn keep(&self, store: &Store, job: &Job, tmp: TempEntry<'_>) -> Result<(), String> {
        let paused = store.paused_dir(&job.key);
        let record = store.checkpoint_dir(&job.key).join(PAUSED_RECORD);
        let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
            format!("failed to {what} `{}`: {e}", p.display())
        };
        std::fs::create_dir_all(store.checkpoint_dir(&job.key))
            .map_err(|e| io("create", &store.checkpoint_dir(&job.key), e))?;
        let _ = std::fs::remove_file(&record);
        match std::fs::remove_dir_all(&paused) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &paused, e));
            }
            _ => {}
        }
        std::fs::rename(tmp.dir(), &paused).map_err(|e| io("move outputs to", &paused, e))?;
        drop(tmp);
        let json = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        ablate_cache::write_atomically(&record, &json).map_err(|e| error_chain(&e))
    }

    /// The record an attempt stopped at `step` left, with its outputs moved into `dir`.
    fn take(store: &Store, job: &Job, step: u64, dir: &std::path::Path) -> Result<Paused, String> {
        let paused = store.paused_dir(&job.key);
        let record = store.checkpoint_dir(&job.key).join(PAUSED_RECORD);
        let bytes = std::fs::read(&record).map_err(|e| {
            format!(
                "no outputs kept at its budget (`{}`: {e})",
                record.display()
            )
        })?;
        let p: Paused = serde_json::from_slice(&bytes)
            .map_err(|e| format!("`{}` is unreadable: {e}", record.display()))?;
        if p.step != step {
            return Err(format!(
                "its kept outputs are those of step {}, not {step}",
                p.step
            ));
        }
        for e in std::fs::read_dir(&paused)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            std::fs::rename(e.path(), dir.join(e.file_name()))
                .map_err(|err| format!("failed to move `{}`: {err}", e.path().display()))?;
        }
        let _ = std::fs::remove_dir(&paused);
        let _ = std::fs::remove_file(&record);
        Ok(p)
    }
}

/// One member of a fused group, for [`LocalExecutor::execute_group_blocking`].
pub struct GroupMember<'a> {
    pub job: &'a Job,
    /// Recompute even if the cache holds the key.
    pub force: bool,
    /// This member's progress (its own line, its own `--json` events).
    pub progress: &'a (dyn Fn(Progress) + Send + Sync),
    /// Time earlier attempts spent on it (a requeued Slurm task's), counted in the manifest's
    /// `seconds`.
    pub spent: Duration,
}

/// An attempt that holds its key: the lock, the temp entry it writes into, its token (the
/// run's, with the stage's `timeout`), and when it started.
struct Held<'s> {
    lock: KeyLock,
    tmp: TempEntry<'s>,
    token: CancelToken,
    started_at_us: i64,
    t0: Instant,
}

/// What a try at a key gives.
enum Acquired<'s> {
    Held(Held<'s>),
    /// It ends without running: another process computed it, or the store failed.
    Ended(Outcome),
    /// Another process holds the key.
    Busy,
}

/// Runs `f`, turning a panic into the attempt's error message.
fn catch<T>(job: &Job, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|panic| panicked(job, panic.as_ref()))
}

/// "op `x` panicked: …".
fn panicked(job: &Job, panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("op `{}` panicked: {what}", job.op())
}

/// The progress callback of `instance`: its events go to the run's channel.
fn progress_to(
    instance: PlanIndex,
    id: String,
    events: UnboundedSender<RunEvent>,
) -> impl Fn(Progress) + Send + Sync {
    move |p: Progress| {
        let _ = events.send(RunEvent::Progress {
            instance,
            id: id.clone(),
            step: p.step,
            total: p.total,
            loss: p.loss,
            message: p.message,
        });
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
                let progress = progress_to(instance, job.id.clone(), events);
                this.execute_blocking(&job, force, &progress, &cancel)
            });
            handle.await.unwrap_or_else(|e| Outcome::Failed {
                error: format!("worker thread failed: {e}"),
                log: None,
            })
        })
    }

    fn prune(&self, _instance: PlanIndex, job: Arc<Job>, step: u64) -> BoxFuture<Outcome> {
        let this = self.clone();
        Box::pin(async move {
            let handle = tokio::task::spawn_blocking(move || this.prune_blocking(&job, step));
            handle.await.unwrap_or_else(|e| Outcome::Failed {
                error: format!("worker thread failed: {e}"),
                log: None,
            })
        })
    }

    /// The group on one blocking thread (see [`LocalExecutor::execute_group_blocking`]).
    fn execute_group(
        &self,
        members: Vec<(PlanIndex, Arc<Job>, bool)>,
        events: UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> BoxFuture<Vec<(PlanIndex, Outcome)>> {
        let this = self.clone();
        Box::pin(async move {
            let ids: Vec<PlanIndex> = members.iter().map(|(id, _, _)| *id).collect();
            let handle = tokio::task::spawn_blocking(move || {
                let progress: Vec<_> = members
                    .iter()
                    .map(|(id, job, _)| progress_to(*id, job.id.clone(), events.clone()))
                    .collect();
                let group: Vec<GroupMember<'_>> = members
                    .iter()
                    .zip(&progress)
                    .map(|((_, job, force), progress)| GroupMember {
                        job,
                        force: *force,
                        progress,
                        spent: Duration::ZERO,
                    })
                    .collect();
                this.execute_group_blocking(&group, &cancel)
            });
            match handle.await {
                Ok(outcomes) => ids.into_iter().zip(outcomes).collect(),
                Err(e) => {
                    let error = format!("worker thread failed: {e}");
                    ids.into_iter()
                        .map(|id| {
                            let log = None;
                            let error = error.clone();
                            (id, Outcome::Failed { error, log })
                        })
                        .collect()
                }
            }
        })
    }
}

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

/// Keeps a failed attempt's files for inspection, when it wrote any.
fn keep_if_any(tmp: ablate_cache::TempEntry<'_>) -> Option<PathBuf> {
    let wrote = std::fs::read_dir(tmp.dir()).is_ok_and(|mut d| d.next().is_some());
    if wrote { tmp.fail().ok() } else { None }
}
