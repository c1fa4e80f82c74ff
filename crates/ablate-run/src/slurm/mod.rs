//! The Slurm executor. Ready instances of one stage are gathered into one job array
//! (`sbatch --array=0-N%M`); each task runs the same binary's hidden worker (`ablate exec`),
//! which computes one instance — or the members of a fused group, as one group (issue 23) —
//! against the shared cache with the local protocol (key lock, temp directory, rename, per
//! member). One driver task submits and polls: the cache is checked first, then one `squeue`
//! for every job of the run, then the completion record, with back-off while nothing changes.
//!
//! Every submitted instance leaves a record in `<cache>/slurm/tasks/<key>.json` naming its task
//! until its result is in the cache (or the instance is submitted again), so a run that was
//! killed or detached adopts the tasks still in flight instead of submitting them again, and
//! `ablate status` can show failures. A task that carries several members is tracked once and
//! answers for each member on its own: a member whose entry is in the cache is done whatever
//! became of the task; the others share the task's fate (its failure, its resubmission).

mod cluster;
mod error;
mod live;
mod records;
mod script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ablate_cache::{InstanceKey, Lookup, Store};
use ablate_plan::PlanIndex;
use ablate_spec::{Resources, SlurmOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedSender, WeakUnboundedSender};
use tokio::sync::{Notify, oneshot};

pub use cluster::{Cluster, Observed, TaskState, never_starts, observed};
pub use error::SlurmError;
use records::write_record;
pub use records::{
    Batch, BatchJob, TaskRecord, TaskStatus, add_spent, age, clear_spent, observe, read_batch_task,
    read_record, remove_record, slurm_dir, spent,
};
use script::task_script;
pub use script::{job_name, plan_tasks, sbatch_args};

use crate::Progress;
use crate::scheduler::{BoxFuture, Executor, Outcome};
use crate::{CancelToken, Job, RunEvent};

/// How often a task the cluster ended (preemption, node failure, time limit) is submitted
/// again before it counts as failed.
const MAX_REQUEUES: u32 = 2;
/// Polls in a row a task may be unknown to Slurm (neither queued nor recorded) before it is
/// reported lost.
const LOST_AFTER_POLLS: u32 = 5;

/// Where and how the executor submits.
#[derive(Clone, Debug)]
pub struct SlurmSettings {
    pub options: SlurmOptions,
    /// The `ablate` binary the tasks run (on the shared filesystem).
    pub exe: PathBuf,
    /// The cache root, absolute (on the shared filesystem).
    pub cache: PathBuf,
    /// The directory tasks start in (`--chdir`): where the pipeline's relative paths resolve.
    pub workdir: PathBuf,
    /// Submit everything now, with Slurm dependencies between arrays, and return.
    pub detach: bool,
    /// The options of the `ablate run` that submits (`--matrix`, `--set`, `--profile` …),
    /// shell-quoted: kept in each task's record, so that `ablate status` prints a command that
    /// sees the same plan (issue 24).
    pub resume: Vec<String>,
}

/// One instance waiting for its task.
struct Waiter {
    instance: PlanIndex,
    job: Arc<Job>,
    force: bool,
    /// Weak: the tasks in flight must not keep the run's event stream open once it ends.
    events: WeakUnboundedSender<RunEvent>,
    reply: Option<oneshot::Sender<Outcome>>,
    requeues: u32,
    /// Once submitted (or adopted).
    record: Option<TaskRecord>,
    /// The step of the metrics line last shown, so that an unchanged log is not shown again.
    shown_step: Option<u64>,
}

/// The instances one task computes: one, or the members of a fused group dispatched together.
type Unit = Vec<Waiter>;

impl Waiter {
    fn new(
        instance: PlanIndex,
        job: Arc<Job>,
        force: bool,
        events: &UnboundedSender<RunEvent>,
    ) -> (Waiter, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let w = Waiter {
            instance,
            job,
            force,
            events: events.downgrade(),
            reply: Some(tx),
            requeues: 0,
            record: None,
            shown_step: None,
        };
        (w, rx)
    }

    /// Answers the scheduler. The record of a failed task stays, so that `ablate status` can
    /// show the failure and its log; the next submission of the instance replaces it.
    fn resolve(&mut self, cache: &Path, outcome: Outcome) {
        if !matches!(outcome, Outcome::Failed { .. } | Outcome::Rejected { .. }) {
            remove_record(cache, &self.job.key);
        }
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }

    /// Whether the run still waits for this instance (it was not stopped meanwhile).
    fn wanted(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| !r.is_closed())
    }

    fn progress(&self, message: String) {
        self.report(Progress {
            message: Some(message),
            ..Progress::default()
        });
    }

    fn report(&self, p: Progress) {
        let Some(events) = self.events.upgrade() else {
            return;
        };
        let _ = events.send(RunEvent::Progress {
            instance: self.instance,
            id: self.job.id.clone(),
            step: p.step,
            total: p.total,
            loss: p.loss,
            message: p.message,
        });
    }

    /// Shows the latest line of the task's metrics log (in the shared cache, where the `cmd`
    /// writes it), as a local run shows it (issue 24: a Slurm run showed only "running").
    fn show_metrics(&mut self, store: &Store) {
        let log = store.checkpoint_dir(&self.job.key).join(live::METRICS_LOG);
        let Some((step, values)) = live::latest(&log) else {
            return;
        };
        if self.shown_step != Some(step) {
            self.shown_step = Some(step);
            self.report(Progress::metrics(step, &values));
        }
    }
}

/// A task in flight: the instances it computes that are not resolved yet, and what polling has
/// seen of it.
#[derive(Default)]
struct Flight {
    waiters: Vec<Waiter>,
    last_state: Option<TaskState>,
    unknown_polls: u32,
    /// Since when polls have seen the task ended (failed, preempted, node failure).
    ended_since: Option<std::time::Instant>,
}

/// Runs instances as tasks of Slurm job arrays.
#[derive(Clone)]
pub struct SlurmExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SlurmSettings,
    store: Store,
    cluster: Cluster,
    /// Tasks waiting to be submitted.
    queue: Mutex<Vec<Unit>>,
    /// Submitted tasks, by task id (`J_T`).
    flying: Mutex<BTreeMap<String, Flight>>,
    wake: Notify,
    /// Held while a submission is under way, so that what is in flight is never read halfway.
    submitting: Mutex<()>,
    driver: OnceLock<()>,
    arrays: AtomicU64,
    tasks: AtomicU64,
}

impl SlurmExecutor {
    /// Checks that Slurm answers (`scontrol show config`) and how it records finished jobs.
    pub fn new(settings: SlurmSettings, store: Store) -> Result<Self, SlurmError> {
        let cluster = Cluster::detect()?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                store,
                cluster,
                queue: Mutex::new(Vec::new()),
                flying: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
                submitting: Mutex::new(()),
                driver: OnceLock::new(),
                arrays: AtomicU64::new(0),
                tasks: AtomicU64::new(0),
            }),
        })
    }

    /// Arrays and tasks submitted so far by this process.
    pub fn submitted(&self) -> (u64, u64) {
        (
            self.inner.arrays.load(Ordering::Relaxed),
            self.inner.tasks.load(Ordering::Relaxed),
        )
    }

    /// The records of the instances still in flight (submitted or adopted, not resolved): the
    /// members of a fused group share a task.
    pub fn in_flight(&self) -> Vec<TaskRecord> {
        let _submitted = self.inner.submitting.lock().expect("lock");
        let flying = self.inner.flying.lock().expect("lock");
        flying
            .values()
            .flat_map(|f| f.waiters.iter().filter_map(|w| w.record.clone()))
            .collect()
    }

    /// Cancels every task still in flight (`scancel`, one call) and forgets them. Blocking.
    /// Returns how many tasks were cancelled.
    pub fn cancel_in_flight(&self) -> Result<usize, SlurmError> {
        let records = self.in_flight();
        let ids: Vec<String> = unique(records.iter().map(|r| r.task.clone()));
        self.inner.cluster.scancel(&ids)?;
        for r in &records {
            remove_record(&self.inner.settings.cache, &r.key);
        }
        Ok(ids.len())
    }

    /// Queues one task's instances and waits for each one's outcome, in order. When the run is
    /// stopped, what is not resolved yet is cancelled (the task itself is left to
    /// `cancel_in_flight`).
    fn submit(
        &self,
        members: Vec<(PlanIndex, Arc<Job>, bool)>,
        events: UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> BoxFuture<Vec<(PlanIndex, Outcome)>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.driver.get_or_init(|| {
                tokio::spawn(drive(Arc::clone(&inner)));
            });
            let mut unit = Vec::with_capacity(members.len());
            let mut replies = Vec::with_capacity(members.len());
            for (instance, job, force) in members {
                let (w, rx) = Waiter::new(instance, job, force, &events);
                unit.push(w);
                replies.push((instance, rx));
            }
            inner.queue.lock().expect("lock").push(unit);
            inner.wake.notify_one();
            let stopped = || Outcome::Failed {
                error: "the Slurm driver stopped".into(),
                log: None,
            };
            let mut out = Vec::with_capacity(replies.len());
            let mut cancelled = false;
            for (instance, mut rx) in replies {
                let outcome = if cancelled {
                    rx.try_recv().unwrap_or(Outcome::Cancelled)
                } else {
                    tokio::select! {
                        outcome = &mut rx => outcome.unwrap_or_else(|_| stopped()),
                        () = cancel.cancelled() => {
                            cancelled = true;
                            rx.try_recv().unwrap_or(Outcome::Cancelled)
                        }
                    }
                };
                out.push((instance, outcome));
            }
            out
        })
    }
}

impl Executor for SlurmExecutor {
    fn execute(
        &self,
        instance: PlanIndex,
        job: Arc<Job>,
        force: bool,
        events: UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> BoxFuture<Outcome> {
        let one = self.submit(vec![(instance, job, force)], events, cancel);
        Box::pin(async move {
            one.await
                .pop()
                .map(|(_, outcome)| outcome)
                .expect("one outcome")
        })
    }

    /// A fused group is one array task, whose `ablate exec` computes the members with
    /// [`crate::LocalExecutor::execute_group_blocking`]; each member is answered on its own.
    fn execute_group(
        &self,
        members: Vec<(PlanIndex, Arc<Job>, bool)>,
        events: UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> BoxFuture<Vec<(PlanIndex, Outcome)>> {
        self.submit(members, events, cancel)
    }

    /// Early stopping on a cluster: a task that stopped at its budget left its outputs in the
    /// shared cache (see [`Executor::prune`]); this process commits them as pruned.
    fn prune(&self, _instance: PlanIndex, job: Arc<Job>, step: u64) -> BoxFuture<Outcome> {
        let store = self.inner.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || crate::local::prune_entry(&store, &job, step))
                .await
                .unwrap_or_else(|e| Outcome::Failed {
                    error: format!("worker thread failed: {e}"),
                    log: None,
                })
        })
    }
}

/// The driver: submits what is queued (after a short pause, so that instances made ready by
/// the same poll share an array), then polls what is in flight, backing off while nothing
/// changes.
async fn drive(inner: Arc<Inner>) {
    let min = Duration::from_secs_f64(inner.settings.options.poll_min_s.unwrap_or(1.0));
    let max = Duration::from_secs_f64(inner.settings.options.poll_max_s.unwrap_or(60.0));
    let mut delay = min;
    // Instances dispatched together arrive one future at a time: wait for the rest.
    tokio::time::sleep(Duration::from_millis(150)).await;
    loop {
        let queued = std::mem::take(&mut *inner.queue.lock().expect("lock"));
        if !queued.is_empty() {
            let this = Arc::clone(&inner);
            tokio::task::spawn_blocking(move || this.submit_all(queued))
                .await
                .expect("submission thread");
            delay = min;
        }
        if inner.flying.lock().expect("lock").is_empty() {
            inner.wake.notified().await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            continue;
        }
        let this = Arc::clone(&inner);
        let (changed, nearest) = tokio::task::spawn_blocking(move || this.poll())
            .await
            .expect("poll thread");
        delay = if changed { min } else { (delay * 2).min(max) };
        // Between polls, the metrics logs of running tasks are read (files in the shared
        // cache, no query to the controller), so the progress line moves while polls back off.
        let until = tokio::time::Instant::now() + next_poll(delay, min, nearest);
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(left.min(METRICS_EVERY)) => {
                    let this = Arc::clone(&inner);
                    tokio::task::spawn_blocking(move || this.show_metrics())
                        .await
                        .expect("metrics thread");
                }
                () = inner.wake.notified() => {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    break;
                }
            }
        }
    }
}

/// How often the metrics logs of running tasks are read between polls.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// How long after a running task's time limit it is looked at again: Slurm signals the task at
/// its limit and the worker stops it at once.
const PAST_DEADLINE: Duration = Duration::from_secs(2);

/// The wait before the next poll: the back-off `delay`, but no later than just past the
/// nearest time limit of a running task (issue 24: a task killed by its limit was noticed
/// 50 s late, the poll having backed off to 60 s), and never under `min`.
fn next_poll(delay: Duration, min: Duration, nearest_deadline: Option<Duration>) -> Duration {
    match nearest_deadline {
        Some(left) => delay.min((left + PAST_DEADLINE).max(min)),
        None => delay,
    }
}

static BATCH_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Inner {
    fn cache(&self) -> &Path {
        &self.settings.cache
    }

    /// Adopts what an earlier run left in flight, and submits the rest: one array per stage,
    /// one task per unit (an instance, or a fused group's members).
    fn submit_all(&self, queued: Vec<Unit>) {
        let _submitting = self.submitting.lock().expect("lock");
        // An instance whose run stopped (Ctrl-C) before it went out is not submitted.
        let queued: Vec<Unit> = queued
            .into_iter()
            .map(|u| u.into_iter().filter(Waiter::wanted).collect::<Unit>())
            .filter(|u| !u.is_empty())
            .collect();
        // Adoption: one squeue for every record left by an earlier run.
        let records: Vec<Vec<Option<TaskRecord>>> = queued
            .iter()
            .map(|u| {
                u.iter()
                    .map(|w| {
                        if w.force {
                            None
                        } else {
                            read_record(self.cache(), &w.job.key)
                        }
                    })
                    .collect()
            })
            .collect();
        let names: Vec<String> = unique(
            records
                .iter()
                .flatten()
                .flatten()
                .map(|r| r.job_name.clone()),
        );
        // If the controller does not answer, adopt every record rather than risk running an
        // instance twice: polling settles them (a lost task fails and is retried).
        let alive = self.cluster.squeue(&names).ok();
        let mut arrays: Vec<(String, Vec<Unit>)> = Vec::new();
        for (unit, records) in queued.into_iter().zip(records) {
            // Each member on its own: the earlier run may have grouped it otherwise, or
            // computed some members of its group already.
            let mut rest = Unit::new();
            for (mut w, record) in unit.into_iter().zip(records) {
                // The result in the shared cache first: a detached or adopted task may have
                // finished since the plan was made.
                if !w.force
                    && let Lookup::Hit(m) = self.store.lookup(&w.job.key)
                {
                    w.resolve(self.cache(), Outcome::CachedByOther(Arc::from(m)));
                    continue;
                }
                if let Some(r) = record {
                    let state = match &alive {
                        Some(alive) => alive.get(&r.task).map(|o| o.state),
                        None => Some(TaskState::Other),
                    };
                    match state {
                        Some(state) if !state.is_final() => {
                            w.progress(format!("adopted slurm task {} ({})", r.task, state.name()));
                            w.record = Some(r);
                            self.in_flight(w);
                            continue;
                        }
                        _ => remove_record(self.cache(), &w.job.key),
                    }
                }
                rest.push(w);
            }
            if rest.is_empty() {
                continue;
            }
            let stage = rest[0].job.stage.clone();
            match arrays.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, units)) => units.push(rest),
                None => arrays.push((stage, vec![rest])),
            }
        }
        for (stage, units) in arrays {
            self.submit_array(&stage, units);
        }
    }

    /// A submitted (or adopted) waiter is in flight: polled with its task until resolved, or
    /// (detached) resolved now.
    fn in_flight(&self, mut w: Waiter) {
        let record = w.record.clone().expect("in flight means submitted");
        if self.settings.detach {
            if let Some(reply) = w.reply.take() {
                let _ = reply.send(Outcome::Detached { task: record.task });
            }
            return;
        }
        let mut flying = self.flying.lock().expect("lock");
        let flight = flying.entry(record.task).or_default();
        flight.waiters.push(w);
    }

    /// Submits one array of a stage: task `i` computes `units[i]`. Every task asks for one
    /// instance's resources: a fused group shares its slot, as it does locally.
    fn submit_array(&self, stage: &str, units: Vec<Unit>) {
        let s = &self.settings;
        let first = &units[0][0].job;
        let pipeline = first.pipeline.clone();
        let name = job_name(&pipeline, stage);
        let dir = slurm_dir(&s.cache).join("runs").join(&pipeline).join(stage);
        let logs = slurm_dir(&s.cache).join("logs").join(&pipeline).join(stage);
        let nonce = format!(
            "{}-{}-{}",
            ablate_cache::now_us(),
            std::process::id(),
            BATCH_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let batch_path = dir.join(format!("{nonce}.json"));
        let script_path = dir.join(format!("{nonce}.sh"));
        let prepared = (|| -> Result<u64, SlurmError> {
            for d in [&dir, &logs] {
                std::fs::create_dir_all(d).map_err(|source| SlurmError::CreateDir {
                    path: d.clone(),
                    source,
                })?;
            }
            let batch = Batch {
                tasks: units
                    .iter()
                    .map(|u| {
                        u.iter()
                            .map(|w| BatchJob {
                                job: (*w.job).clone(),
                                force: w.force,
                            })
                            .collect()
                    })
                    .collect(),
            };
            let write = |path: &PathBuf, bytes: &[u8]| {
                std::fs::write(path, bytes).map_err(|source| SlurmError::Write {
                    path: path.clone(),
                    source,
                })
            };
            write(
                &batch_path,
                &serde_json::to_vec(&batch).expect("batches serialise"),
            )?;
            write(&script_path, task_script(s, &batch_path).as_bytes())?;
            let mut args = sbatch_args(
                &s.options,
                &name,
                &first.resources,
                first.timeout,
                units.len(),
                &s.workdir,
            );
            args.push(format!("--output={}/%A_%a.out", logs.display()));
            args.push(format!("--error={}/%A_%a.err", logs.display()));
            if s.detach {
                let after: Vec<String> = unique(units.iter().flatten().flat_map(|w| {
                    w.job
                        .inputs
                        .iter()
                        .filter_map(|i| read_record(&s.cache, &i.key).map(|r| r.task))
                        .collect::<Vec<_>>()
                }));
                if !after.is_empty() {
                    args.push(format!("--dependency=afterok:{}", after.join(":")));
                    args.push("--kill-on-invalid-dep=yes".into());
                }
            }
            cluster::sbatch(&args, &script_path)
        })();
        let array = match prepared {
            Ok(id) => id,
            Err(error) => {
                // Another attempt would be refused alike: no retry, and the error is told
                // once, with the first instance (issue 24: it was printed once per attempt).
                let mut first: Option<String> = None;
                for mut w in units.into_iter().flatten() {
                    let error = match &first {
                        None => {
                            first = Some(w.job.id.clone());
                            format!(
                                "failed to submit stage `{stage}` to Slurm: {}",
                                ablate_spec::error_chain(&error)
                            )
                        }
                        Some(id) => format!(
                            "failed to submit stage `{stage}` to Slurm (the error is shown with `{id}`)"
                        ),
                    };
                    w.resolve(&s.cache, Outcome::Rejected { error, log: None });
                }
                return;
            }
        };
        self.arrays.fetch_add(1, Ordering::Relaxed);
        self.tasks.fetch_add(units.len() as u64, Ordering::Relaxed);
        for (i, unit) in units.into_iter().enumerate() {
            let task = format!("{array}_{i}");
            let n = unit.len();
            for mut w in unit {
                let record = TaskRecord {
                    task: task.clone(),
                    job_name: name.clone(),
                    key: w.job.key,
                    err: logs.join(format!("{array}_{i}.err")),
                    submitted_at_us: ablate_cache::now_us(),
                    resume: s.resume.clone(),
                    failure: None,
                };
                if let Err(e) = write_record(&s.cache, &record) {
                    warn_unrecorded(&w, &e);
                }
                w.progress(if n > 1 {
                    format!("submitted as slurm task {task} (a fused group of {n})")
                } else {
                    format!("submitted as slurm task {task}")
                });
                w.record = Some(record);
                self.in_flight(w);
            }
        }
    }

    /// One round of polling. Returns whether anything changed, and the time left to the
    /// nearest time limit of a running task.
    fn poll(&self) -> (bool, Option<Duration>) {
        let mut flying = self.flying.lock().expect("lock");
        // The result in the shared cache is checked first: a member of a group is done as
        // soon as its entry is committed, while the task goes on with the others.
        let mut changed = self.collect_entries(&mut flying);
        if flying.is_empty() {
            return (changed, None);
        }
        let names = unique(
            flying
                .values()
                .flat_map(|f| f.waiters.iter())
                .filter_map(|w| w.record.as_ref().map(|r| r.job_name.clone())),
        );
        let queued = match self.cluster.squeue(&names) {
            Ok(q) => q,
            Err(e) => {
                // A controller that does not answer is retried at the next poll.
                let e = ablate_spec::error_chain(&e);
                for w in flying.values().flat_map(|f| f.waiters.iter()) {
                    w.progress(format!("squeue failed, retrying: {e}"));
                }
                return (changed, None);
            }
        };
        let forgotten: Vec<&str> = flying
            .keys()
            .filter(|t| !queued.contains_key(*t))
            .map(String::as_str)
            .collect();
        let recorded = self.cluster.completed(&forgotten).unwrap_or_default();
        let tasks: Vec<String> = flying.keys().cloned().collect();
        let mut nearest: Option<Duration> = None;
        // Tasks that wait for what the cluster can never give them (`PartitionConfig` …).
        let mut stuck: Vec<(String, Observed)> = Vec::new();
        for task in tasks {
            let f = flying.get_mut(&task).expect("listed");
            let Some(o) = observed(&queued, &recorded, &task) else {
                f.unknown_polls += 1;
                if f.unknown_polls >= LOST_AFTER_POLLS {
                    let f = flying.remove(&task).expect("listed");
                    let error = format!(
                        "slurm task {task} is neither queued nor recorded as finished (no accounting, no job-completion record): it was lost"
                    );
                    for mut w in self.take_committed(f, false) {
                        let error = error.clone();
                        w.resolve(self.cache(), Outcome::Failed { error, log: None });
                    }
                    changed = true;
                }
                continue;
            };
            f.unknown_polls = 0;
            if let Some(left) = o.time_left {
                nearest = Some(nearest.map_or(left, |n| n.min(left)));
            }
            if o.state == TaskState::Pending && never_starts(&o.detail).is_some() {
                stuck.push((task, o));
                continue;
            }
            let requeues = f.waiters.iter().map(|w| w.requeues).max().unwrap_or(0);
            let ended_for = f.ended_since.map(|t| t.elapsed());
            let verdict = verdict(o.state, requeues, ended_for);
            if verdict == Verdict::Wait {
                if !o.state.is_final() {
                    f.ended_since = None;
                } else if f.ended_since.is_none() {
                    f.ended_since = Some(std::time::Instant::now());
                }
                if f.last_state != Some(o.state) {
                    for w in &f.waiters {
                        w.progress(format!("slurm {task} {}{}", o.state.name(), o.reason()));
                    }
                    f.last_state = Some(o.state);
                    changed = true;
                }
                continue;
            }
            changed = true;
            let f = flying.remove(&task).expect("listed");
            match verdict {
                Verdict::Wait => unreachable!("handled above"),
                // Written just before the task ended, or lost on an unshared filesystem.
                Verdict::Done => {
                    for mut w in self.take_committed(f, true) {
                        let log = w.record.as_ref().map(|r| r.err.clone());
                        let error = format!(
                            "slurm task {task} completed, but its result is not in the cache at {}: is the cache on a filesystem the compute nodes share?",
                            self.cache().display()
                        );
                        w.resolve(self.cache(), Outcome::Failed { error, log });
                    }
                }
                Verdict::Resubmit => {
                    // The members it had not computed go out again, together.
                    let mut again = self.take_committed(f, false);
                    for w in &mut again {
                        w.requeues += 1;
                        w.progress(format!(
                            "slurm {task} {}; submitting it again ({} of {MAX_REQUEUES})",
                            o.state.name(),
                            w.requeues
                        ));
                        remove_record(self.cache(), &w.job.key);
                        w.record = None;
                    }
                    if !again.is_empty() {
                        self.queue.lock().expect("lock").push(again);
                        self.wake.notify_one();
                    }
                }
                Verdict::Fail => {
                    let err = f.waiters[0].record.as_ref().expect("in flight").err.clone();
                    let mut error = format!("slurm task {task} {} ({})", o.state.name(), o.detail);
                    if o.state == TaskState::Timeout {
                        error.push_str("; raise `slurm.time`");
                    } else if o.state == TaskState::OutOfMemory {
                        error.push_str("; raise `resources.mem_gb` or `slurm.mem`");
                    }
                    let tail = crate::tail(&err, 20);
                    if !tail.trim().is_empty() {
                        error.push_str(&format!(
                            "\n  last lines of {}:\n    {}",
                            err.display(),
                            tail.replace('\n', "\n    ")
                        ));
                    }
                    // Members the task committed before it failed (another member failed, or
                    // it was killed) keep their entries; the others fail with the task.
                    for mut w in self.take_committed(f, false) {
                        let (error, log) = (error.clone(), Some(err.clone()));
                        w.resolve(self.cache(), Outcome::Failed { error, log });
                    }
                }
            }
        }
        if !stuck.is_empty() {
            changed = true;
            self.give_up(&mut flying, stuck);
        }
        (changed, nearest)
    }

    /// Shows the latest metrics line of each task polling last saw running. A new line is not
    /// a change of state: it does not reset the poll's back-off.
    fn show_metrics(&self) {
        let mut flying = self.flying.lock().expect("lock");
        for f in flying.values_mut() {
            if f.last_state == Some(TaskState::Running) {
                for w in &mut f.waiters {
                    w.show_metrics(&self.store);
                }
            }
        }
    }

    /// Cancels tasks Slurm holds pending for a reason that cannot resolve, and fails their
    /// instances for good, saying what to change (issue 24: `cpus_per_task: 64` on a 4-CPU node
    /// was polled for ever). The reason stays in each record, for `ablate status`.
    fn give_up(&self, flying: &mut BTreeMap<String, Flight>, stuck: Vec<(String, Observed)>) {
        let ids: Vec<String> = stuck.iter().map(|(t, _)| t.clone()).collect();
        let cancelled = self.cluster.scancel(&ids);
        for (task, o) in stuck {
            let Some(f) = flying.remove(&task) else {
                continue;
            };
            let (what, hint) = never_starts(&o.detail).expect("listed as stuck");
            let asked = f
                .waiters
                .first()
                .map(|w| self.asked(&w.job))
                .unwrap_or_default();
            let mut error = format!(
                "slurm task {task} can never start: it is pending with reason `{}` ({what}: {asked})",
                o.detail
            );
            match &cancelled {
                Ok(()) => error.push_str("; ablate cancelled it"),
                Err(e) => error.push_str(&format!(
                    "; cancelling it failed ({}): `scancel {task}` does",
                    ablate_spec::error_chain(e)
                )),
            }
            error.push_str(&format!("\nhint: {hint}"));
            for mut w in self.take_committed(f, false) {
                if let Some(r) = &mut w.record {
                    r.failure = Some(error.clone());
                    if let Err(e) = write_record(self.cache(), r) {
                        warn_unrecorded(&w, &e);
                    }
                }
                let error = error.clone();
                w.resolve(self.cache(), Outcome::Rejected { error, log: None });
            }
        }
    }

    /// What a job's task asks of a node, as `sbatch` was told: `--cpus-per-task=64 --mem=…`.
    fn asked(&self, job: &Job) -> String {
        let s = &self.settings;
        let args = sbatch_args(&s.options, "", &job.resources, job.timeout, 1, &s.workdir);
        let asked: Vec<String> = args
            .into_iter()
            .filter(|a| {
                [
                    "--cpus-per-task",
                    "--mem",
                    "--gpus",
                    "--gres",
                    "--time",
                    "--partition",
                ]
                .iter()
                .any(|p| a.starts_with(p))
            })
            .map(|a| format!("`{a}`"))
            .collect();
        asked.join(" ")
    }

    /// Resolves the waiters whose entry is in the cache (a forced one's old entry does not
    /// count: it stays valid until its task replaces it), and forgets tasks left with none.
    /// Returns whether any was resolved.
    fn collect_entries(&self, flying: &mut BTreeMap<String, Flight>) -> bool {
        let mut changed = false;
        for f in flying.values_mut() {
            let waiters = std::mem::take(&mut f.waiters);
            for mut w in waiters {
                if !w.force
                    && let Lookup::Hit(m) = self.store.lookup(&w.job.key)
                {
                    w.resolve(self.cache(), Outcome::Computed(Arc::from(m)));
                    changed = true;
                } else {
                    f.waiters.push(w);
                }
            }
        }
        flying.retain(|_, f| !f.waiters.is_empty());
        changed
    }

    /// A task ended: resolves each member whose entry is in the cache, and returns the others.
    /// A forced member's entry counts when the task `completed`, or when it was written after
    /// the task was submitted (else it is the old entry the task was to replace).
    fn take_committed(&self, f: Flight, completed: bool) -> Vec<Waiter> {
        let mut left = Vec::new();
        for mut w in f.waiters {
            match self.store.lookup(&w.job.key) {
                Lookup::Hit(m) if !w.force || completed || committed_after(&m, &w) => {
                    w.resolve(self.cache(), Outcome::Computed(Arc::from(m)));
                }
                // Stopped at its early-stopping budget: its outputs wait in the shared cache
                // for the rung's decision.
                _ if let Some(paused) = w.job.budget.and_then(|_| {
                    let since = w.record.as_ref().map_or(0, |r| r.submitted_at_us);
                    crate::local::paused_outcome(&self.store, &w.job, since)
                }) =>
                {
                    w.resolve(self.cache(), paused);
                }
                _ => left.push(w),
            }
        }
        left
    }
}

/// Whether `m` was written by the task `w` was submitted as (not an older entry of a forced
/// instance).
fn committed_after(m: &ablate_cache::Manifest, w: &Waiter) -> bool {
    w.record
        .as_ref()
        .is_some_and(|r| m.started_at_us >= r.submitted_at_us)
}

/// What to do about a task in `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Still queued or running, or possibly about to be requeued by Slurm itself.
    Wait,
    /// Completed: its result should be in the cache.
    Done,
    /// Ended by the cluster: submit it again.
    Resubmit,
    Fail,
}

/// How long a task seen failed, preempted or on a failed node is given for Slurm to put it back
/// in the queue itself. Tasks go out with `--requeue`, and a preempted task may be seen ended
/// before it is pending again; a genuine failure reported 10 s late costs little. (The `FAILED`
/// once blamed on a slow controller here was a test restarting a requeued task within the
/// second of its requeue, which slurmd refuses: "Job credential revoked". Measured on Slurm
/// 22.05, `scontrol requeue` goes `COMPLETING` then `PENDING` under load too.)
const REQUEUE_GRACE: Duration = Duration::from_secs(10);

/// `requeues`: how often it was submitted again already; `ended_for`: how long polls have seen
/// it ended (`None`: this is the first). A timed-out task is not requeued by Slurm.
fn verdict(state: TaskState, requeues: u32, ended_for: Option<Duration>) -> Verdict {
    match state {
        TaskState::Completed => Verdict::Done,
        s if !s.is_final() => Verdict::Wait,
        TaskState::Preempted | TaskState::NodeFail | TaskState::BootFail | TaskState::Failed
            if ended_for.is_none_or(|d| d < REQUEUE_GRACE) =>
        {
            Verdict::Wait
        }
        s if s.is_requeueable() && requeues < MAX_REQUEUES => Verdict::Resubmit,
        _ => Verdict::Fail,
    }
}

fn warn_unrecorded(w: &Waiter, e: &SlurmError) {
    w.progress(format!(
        "warning: {} (a later run cannot adopt this task)",
        ablate_spec::error_chain(e)
    ));
}

fn unique<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = items.into_iter().collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_that_changes_directory_left_the_worker_outside_the_pipelines_workdir() {
        let settings = SlurmSettings {
            options: SlurmOptions {
                setup: Some("cd /elsewhere && source venv/bin/activate".into()),
                ..SlurmOptions::default()
            },
            exe: "/opt/ablate".into(),
            cache: "/shared/cache".into(),
            workdir: "/home/me/my project".into(),
            detach: false,
            resume: Vec::new(),
        };
        let script = task_script(&settings, Path::new("/shared/cache/b.json"));
        let lines: Vec<&str> = script.lines().collect();
        let setup = lines.iter().position(|l| l.starts_with("cd /elsewhere"));
        let back = lines.iter().position(|l| *l == "cd '/home/me/my project'");
        let exec = lines
            .iter()
            .position(|l| l.starts_with("exec /opt/ablate "));
        assert!(
            setup < back && back < exec && back.is_some(),
            "the worker starts in the workdir after the setup:\n{script}"
        );
    }

    /// A task killed at its time limit was noticed 50 s late: the poll had backed off to 60 s
    /// (issue 24). The wait ends just past the nearest limit, never under the minimum.
    #[test]
    fn the_poll_back_off_is_bounded_by_the_nearest_time_limit() {
        let s = Duration::from_secs;
        let (min, backed_off) = (s(1), s(60));
        assert_eq!(next_poll(backed_off, min, None), s(60));
        assert_eq!(
            next_poll(backed_off, min, Some(s(10))),
            s(10) + PAST_DEADLINE
        );
        assert_eq!(next_poll(s(4), min, Some(s(600))), s(4));
        // At or past the limit (the task is being stopped): not faster than `poll_min_s`.
        assert_eq!(next_poll(backed_off, s(5), Some(s(0))), s(5));
    }

    #[test]
    fn each_attempt_of_a_task_appends_to_its_logs() {
        let args = sbatch_args(
            &SlurmOptions::default(),
            "ablate.p.s",
            &Resources::default(),
            None,
            3,
            Path::new("/w"),
        );
        assert!(args.contains(&"--open-mode=append".to_owned()), "{args:?}");
    }

    #[test]
    fn only_reasons_that_cannot_resolve_give_a_pending_task_up() {
        for reason in [
            "PartitionConfig",
            "BadConstraints",
            "PartitionTimeLimit",
            "InvalidQOS",
            "QOSMaxCpuPerJobLimit",
            "AssocMaxWallDurationPerJobLimit",
            "DependencyNeverSatisfied",
        ] {
            assert!(never_starts(reason).is_some(), "{reason}");
        }
        for reason in [
            "Resources",
            "Priority",
            "Dependency",
            "ReqNodeNotAvail",
            "PartitionNodeLimit",
            "QOSGrpCpuLimit",
            "QOSMaxCpuPerUserLimit",
            "JobHeldUser",
            "None",
            "",
        ] {
            assert!(never_starts(reason).is_none(), "{reason}");
        }
    }

    #[test]
    fn tasks_the_cluster_ended_are_submitted_again_a_bounded_number_of_times() {
        use TaskState::*;
        let (first, soon, later) = (None, Some(Duration::from_secs(1)), Some(REQUEUE_GRACE));
        assert_eq!(verdict(Pending, 0, first), Verdict::Wait);
        assert_eq!(verdict(Requeued, 0, first), Verdict::Wait);
        assert_eq!(verdict(Completing, 0, first), Verdict::Wait);
        assert_eq!(verdict(Completed, 0, first), Verdict::Done);
        assert_eq!(verdict(Cancelled, 0, first), Verdict::Fail);
        assert_eq!(verdict(OutOfMemory, 0, first), Verdict::Fail);
        // Slurm does not requeue a timed-out task: at once, twice at most.
        assert_eq!(verdict(Timeout, 0, first), Verdict::Resubmit);
        assert_eq!(verdict(Timeout, MAX_REQUEUES - 1, first), Verdict::Resubmit);
        assert_eq!(verdict(Timeout, MAX_REQUEUES, first), Verdict::Fail);
        // A preempted task gets a moment for Slurm's own requeue first.
        for s in [Preempted, NodeFail, BootFail] {
            assert_eq!(verdict(s, 0, first), Verdict::Wait);
            assert_eq!(verdict(s, 0, soon), Verdict::Wait);
            assert_eq!(verdict(s, 0, later), Verdict::Resubmit);
            assert_eq!(verdict(s, MAX_REQUEUES, later), Verdict::Fail);
        }
        // So does a failed one: a requeue shows `FAILED` for a moment (issue 24).
        assert_eq!(verdict(Failed, 0, first), Verdict::Wait);
        assert_eq!(verdict(Failed, 0, soon), Verdict::Wait);
        assert_eq!(verdict(Failed, 0, later), Verdict::Fail);
    }
}
