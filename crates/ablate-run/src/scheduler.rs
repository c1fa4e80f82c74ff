//! The scheduler: one task owns the state of every instance, dispatches ready instances to an
//! executor within resource slots, and reports everything as events.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ablate_cache::{InstanceKey, Manifest};
use ablate_plan::{Plan, PlanIndex, Reason, Status};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::gpus::GpuPool;
use crate::{CancelToken, Divergence, Job, RunEvent, SkipCause, Summary, Unfinished};
use ablate_spec::Device;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How an instance's execution ended.
#[derive(Debug)]
pub enum Outcome {
    Computed(Arc<Manifest>),
    /// Another process computed the same key while this one waited for its lock.
    CachedByOther(Arc<Manifest>),
    Failed {
        error: String,
        log: Option<PathBuf>,
    },
    /// Failed in a way another attempt cannot change (Slurm refused the submission; a task
    /// that can never start): reported as a failure, never retried.
    Rejected {
        error: String,
        log: Option<PathBuf>,
    },
    Cancelled,
    /// Submitted to a cluster that will run it without this process (`--detach`): its
    /// dependants may be submitted after it.
    Detached {
        task: String,
    },
}

/// Does the work of one instance (in-process, or as a Slurm task).
pub trait Executor: Send + Sync + 'static {
    /// `force`: recompute even if the cache holds the key. Progress goes to `events`.
    fn execute(
        &self,
        instance: PlanIndex,
        job: Arc<Job>,
        force: bool,
        events: UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> BoxFuture<Outcome>;

    /// Does the work of a fused group (issue 23): members of one fused group (see
    /// `ablate_plan::FuseGroup`), dispatched together into one resource slot. Returns one
    /// outcome per member, each as [`Executor::execute`] would report it (a member fails, is
    /// retried and is cached alone). This default executes each member on its own, all at
    /// once, for executors that have no group protocol.
    fn execute_group(
        &self,
        members: Vec<(PlanIndex, Arc<Job>, bool)>,
        events: UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> BoxFuture<Vec<(PlanIndex, Outcome)>> {
        let futures: Vec<(PlanIndex, BoxFuture<Outcome>)> = members
            .into_iter()
            .map(|(id, job, force)| {
                let fut = self.execute(id, job, force, events.clone(), cancel.clone());
                (id, fut)
            })
            .collect();
        Box::pin(async move {
            let ids: Vec<PlanIndex> = futures.iter().map(|(id, _)| *id).collect();
            let mut set = JoinSet::new();
            for (n, (id, fut)) in futures.into_iter().enumerate() {
                set.spawn(async move { (n, id, fut.await) });
            }
            let mut out: Vec<Option<(PlanIndex, Outcome)>> = ids.iter().map(|_| None).collect();
            while let Some(joined) = set.join_next().await {
                if let Ok((n, id, outcome)) = joined {
                    out[n] = Some((id, outcome));
                }
            }
            out.into_iter()
                .zip(ids)
                .map(|(o, id)| {
                    o.unwrap_or_else(|| {
                        (
                            id,
                            Outcome::Failed {
                                error: "its worker task failed".into(),
                                log: None,
                            },
                        )
                    })
                })
                .collect()
        })
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// CPU slots (`--jobs`).
    pub jobs: usize,
    /// This machine's GPUs, which the scheduler assigns, packing fractional `resources.gpus`
    /// onto shared devices: the `CUDA_VISIBLE_DEVICES` name of each (`cuda:N` is the N-th);
    /// `None` where another scheduler assigns devices (Slurm).
    pub gpus: Option<Vec<String>>,
    /// Memory instances may reserve, in GB (`resources.mem_gb`).
    pub mem_gb: f64,
    /// Dispatch a fused group's ready members as whole groups (near-equal ones within the
    /// stage's cap) rather than splitting them over the free slots: where the executor makes
    /// each group one unit of work elsewhere (a Slurm array task), and the cluster, not this
    /// process's slots, supplies the parallelism.
    pub whole_groups: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting(usize),
    Ready,
    Running,
    Done,
    /// Complete, with a diverged result: reports read it, nothing maps over it.
    Diverged,
    Failed,
    Skipped,
}

/// How an instance ended, as its dependants see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Done,
    Diverged,
    Failed,
    Skipped(SkipCause),
}

/// The instances' states and what releases them: the part of the scheduler that decides which
/// dependants run when an input ends, and which are skipped.
struct Graph<'p> {
    plan: &'p Plan,
    state: Vec<State>,
    /// The inputs of each (report) instance that ended without a result, with why and the id
    /// of the instance upstream that caused it.
    missing: Vec<Vec<(PlanIndex, Unfinished, String)>>,
    ready: VecDeque<(PlanIndex, u32)>,
    skipped: usize,
}

impl Graph<'_> {
    /// `id` ended: each dependant waiting for it waits for one input fewer (and is ready when
    /// none is left), or is skipped — and its own dependants learn that in turn. A dependant
    /// that maps over its inputs needs each to be done; a report also takes a diverged input
    /// (it shows it as such) and, unless `strict`, one that failed or was skipped (it marks
    /// its cells). `because`: the instance that failed or diverged, for the skip messages.
    fn settle(&mut self, id: PlanIndex, ended: Ended, because: &str, emit: &impl Fn(RunEvent)) {
        let mut queue = VecDeque::from([(id, ended, because.to_owned())]);
        while let Some((id, ended, because)) = queue.pop_front() {
            for d in self.plan.dependants(id) {
                let State::Waiting(k) = self.state[d.index()] else {
                    continue;
                };
                let inst = self.plan.instance(d);
                let partial = inst.report && !inst.strict;
                let takes = match ended {
                    Ended::Done => Ok(None),
                    Ended::Diverged if inst.report => Ok(None),
                    Ended::Diverged => Err(SkipCause::Diverged),
                    Ended::Failed if partial => Ok(Some(Unfinished::Failed)),
                    Ended::Skipped(SkipCause::Failed) if partial => Ok(Some(Unfinished::Skipped)),
                    Ended::Skipped(SkipCause::Diverged) if partial => {
                        Ok(Some(Unfinished::Diverged))
                    }
                    Ended::Failed => Err(SkipCause::Failed),
                    Ended::Skipped(cause) => Err(cause),
                };
                match takes {
                    Ok(missing) => {
                        if let Some(why) = missing {
                            self.missing[d.index()].push((id, why, because.clone()));
                        }
                        self.state[d.index()] = if k <= 1 {
                            self.ready.push_back((d, 1));
                            State::Ready
                        } else {
                            State::Waiting(k - 1)
                        };
                    }
                    Err(cause) => {
                        self.state[d.index()] = State::Skipped;
                        self.skipped += 1;
                        emit(RunEvent::Skipped {
                            instance: d,
                            id: inst.id.clone(),
                            key: inst.key,
                            because: because.clone(),
                            cause,
                        });
                        queue.push_back((d, Ended::Skipped(cause), because.clone()));
                    }
                }
            }
        }
    }
}

struct Slots {
    cpus: f64,
    mem: f64,
}

/// Runs a plan: cached instances are reported, the rest executed as their inputs complete.
/// A failed instance (after its retries) fails only its dependants, and a diverged one only
/// those that map over it; reports build from what finished unless they are `strict` (see
/// [`Graph::settle`]). Ends with a summary event.
pub async fn run<E: Executor>(
    plan: &Plan,
    statuses: &[Status],
    executor: Arc<E>,
    opts: &RunOptions,
    cancel: &CancelToken,
    events: &UnboundedSender<RunEvent>,
) -> Summary {
    let t0 = Instant::now();
    let emit = |e: RunEvent| {
        let _ = events.send(e);
    };
    let n = plan.len();
    let cached = statuses.iter().filter(|s| s.is_cached()).count();
    emit(RunEvent::Plan {
        pipeline: plan.pipeline().to_owned(),
        instances: n,
        cached,
        to_run: n - cached,
    });

    let mut summary = Summary {
        cached,
        ..Summary::default()
    };
    let mut graph = Graph {
        plan,
        state: vec![State::Done; n],
        missing: vec![Vec::new(); n],
        ready: VecDeque::new(),
        skipped: 0,
    };
    // A cached input releases its dependants at once, unless it diverged: then each dependant
    // waits for it like for any input, and learns below that it diverged.
    let cached_done =
        |id: PlanIndex| matches!(&statuses[id.index()], Status::Cached(m) if m.status().is_done());
    let mut cached_diverged = Vec::new();
    for (id, inst) in plan.instances() {
        match &statuses[id.index()] {
            Status::Cached(m) => {
                if !m.status().is_done() {
                    graph.state[id.index()] = State::Diverged;
                    summary.cached_diverged += 1;
                    cached_diverged.push(id);
                }
                emit(RunEvent::Cached {
                    instance: id,
                    id: inst.id.clone(),
                    key: inst.key,
                    status: m.status().name(),
                    diverged: Divergence::of(m.status()),
                    entry: Arc::clone(m),
                });
            }
            Status::Run(_) => {
                let waiting = plan.inputs(id).filter(|(i, _)| !cached_done(*i)).count();
                graph.state[id.index()] = State::Waiting(waiting);
                if waiting == 0 {
                    graph.state[id.index()] = State::Ready;
                    graph.ready.push_back((id, 1u32));
                }
            }
        }
    }
    for id in cached_diverged {
        graph.settle(id, Ended::Diverged, &plan.instance(id).id, &emit);
    }

    let total = Slots {
        cpus: opts.jobs.max(1) as f64,
        mem: opts.mem_gb,
    };
    let mut d = Dispatcher {
        plan,
        statuses,
        executor,
        events,
        cancel,
        free: Slots { ..total },
        total,
        whole_groups: opts.whole_groups,
        gpu_names: opts.gpus.as_deref().unwrap_or_default(),
        pool: opts.gpus.as_ref().map(|names| GpuPool::new(names.len())),
        on_gpus: BTreeMap::new(),
        keys: BTreeMap::new(),
        running: JoinSet::new(),
    };
    let mut cancelled = cancel.is_cancelled();

    loop {
        if !cancelled {
            d.dispatch(&mut graph, &mut summary, &emit);
        }
        if d.running.is_empty() {
            break;
        }
        let joined = tokio::select! {
            joined = d.running.join_next() => joined,
            () = cancel.cancelled(), if !cancelled => { cancelled = true; continue; }
        };
        let Some(joined) = joined else { break };
        let ran = match joined {
            Ok(x) => x,
            Err(e) => panic!("scheduler task failed: {e}"),
        };
        d.release(ran.head);
        let mut outcomes = ran.outcomes;
        for (id, attempt) in ran.members {
            let outcome = match outcomes.iter().position(|(i, _)| *i == id) {
                Some(at) => outcomes.swap_remove(at).1,
                None => Outcome::Failed {
                    error: "the executor reported no outcome for it".into(),
                    log: None,
                },
            };
            let ended = Attempt {
                id,
                attempt,
                outcome,
            };
            conclude(&mut graph, &mut summary, &d.keys, ended, cancelled, &emit);
        }
    }

    summary.skipped = graph.skipped;
    if cancelled {
        let not_run = graph
            .state
            .iter()
            .filter(|s| matches!(s, State::Waiting(_) | State::Ready | State::Running))
            .count();
        summary.skipped += not_run;
        emit(RunEvent::Interrupted { not_run });
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    emit(RunEvent::Summary(summary));
    summary
}

/// What one dispatch (an instance, or a fused group in one slot) came back with.
struct Ran {
    /// The member whose resources (and GPUs) the dispatch holds.
    head: PlanIndex,
    /// Each member with its attempt number, in plan order.
    members: Vec<(PlanIndex, u32)>,
    outcomes: Vec<(PlanIndex, Outcome)>,
}

/// One member's attempt, ended.
struct Attempt {
    id: PlanIndex,
    attempt: u32,
    outcome: Outcome,
}

/// Starts ready work within the machine's slots: the part of the scheduler that owns the free
/// resources, the GPU pool and the running dispatches.
struct Dispatcher<'p, E: Executor> {
    plan: &'p Plan,
    statuses: &'p [Status],
    executor: Arc<E>,
    events: &'p UnboundedSender<RunEvent>,
    cancel: &'p CancelToken,
    total: Slots,
    free: Slots,
    /// [`RunOptions::whole_groups`].
    whole_groups: bool,
    gpu_names: &'p [String],
    pool: Option<GpuPool>,
    /// The devices each running dispatch holds, by its head.
    on_gpus: BTreeMap<PlanIndex, Vec<usize>>,
    /// The key each started instance runs under, when it is not its own: a partial report's
    /// (see `Job::partial`).
    keys: BTreeMap<PlanIndex, InstanceKey>,
    running: JoinSet<Ran>,
}

impl<E: Executor> Dispatcher<'_, E> {
    /// Dispatches every ready instance that fits, in queue order (later ones may backfill). A
    /// member of a fused group takes the other ready members of its group along, as many as
    /// [`crate::fuse::take`] says, into its one slot.
    fn dispatch(&mut self, graph: &mut Graph<'_>, summary: &mut Summary, emit: &impl Fn(RunEvent)) {
        let plan = self.plan;
        let mut i = 0;
        while i < graph.ready.len() {
            let (id, attempt) = graph.ready[i];
            let inst = plan.instance(id);
            let need = demand(inst.resources, &self.total);
            let gpus = inst.resources.gpus;
            let pin = pinned(inst.device);
            let never = fits_at_all(&need, &self.total).err().or_else(|| {
                self.pool
                    .as_ref()
                    .filter(|_| gpus > 0.0)
                    .and_then(|p| p.never_fits(gpus, pin))
            });
            if let Some(why) = never {
                graph.ready.remove(i);
                graph.state[id.index()] = State::Failed;
                summary.failed += 1;
                emit(RunEvent::Failed {
                    instance: id,
                    id: inst.id.clone(),
                    key: inst.key,
                    attempt,
                    will_retry: false,
                    error: why,
                    log: None,
                });
                graph.settle(id, Ended::Failed, &inst.id, emit);
                continue;
            }
            if need.cpus > self.free.cpus + 1e-9 || need.mem > self.free.mem + 1e-9 {
                i += 1;
                continue;
            }
            let devices = match self.pool.as_mut().filter(|_| gpus > 0.0) {
                Some(pool) => match pool.take(gpus, pin) {
                    Some(devices) => Some(devices),
                    None => {
                        i += 1;
                        continue;
                    }
                },
                None => None,
            };
            let slots = self.slots(&need);
            graph.ready.remove(i);
            let mut members = vec![(id, attempt)];
            if let Some(g) = inst.fuse {
                let mut same: Vec<usize> = (0..graph.ready.len())
                    .filter(|&p| {
                        plan.instance(graph.ready[p].0)
                            .fuse
                            .is_some_and(|f| f.group == g.group)
                    })
                    .collect();
                // One slot's worth: the whole group, split only by its cap.
                let slots = if self.whole_groups { 1 } else { slots };
                let size = crate::fuse::take(same.len() + 1, g.max, slots);
                // The others in plan order.
                same.sort_by_key(|&p| graph.ready[p].0);
                same.truncate(size.saturating_sub(1));
                same.sort_unstable();
                i -= same.iter().filter(|&&p| p < i).count();
                for &p in same.iter().rev() {
                    members.extend(graph.ready.remove(p));
                }
                members.sort_unstable();
            }
            self.free.cpus -= need.cpus;
            self.free.mem -= need.mem;
            self.start(graph, id, members, devices, emit);
        }
    }

    /// How many instances needing `need` could start now (at least this one).
    fn slots(&self, need: &Slots) -> usize {
        let by = |free: f64, need: f64| {
            if need <= 0.0 {
                usize::MAX
            } else {
                ((free + 1e-9) / need).floor() as usize
            }
        };
        by(self.free.cpus, need.cpus)
            .min(by(self.free.mem, need.mem))
            .max(1)
    }

    /// Starts `members` (one instance, or a fused group) in the slot `head` took, on `devices`.
    fn start(
        &mut self,
        graph: &mut Graph<'_>,
        head: PlanIndex,
        members: Vec<(PlanIndex, u32)>,
        devices: Option<Vec<usize>>,
        emit: &impl Fn(RunEvent),
    ) {
        let plan = self.plan;
        let inst = plan.instance(head);
        let visible = match &devices {
            Some(devices) => Some(
                devices
                    .iter()
                    .map(|&d| self.gpu_names[d].as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            // A program that asked for no GPU sees none: the devices are the scheduler's to
            // share out.
            None if !self.gpu_names.is_empty() => Some(String::new()),
            None => None,
        };
        let device = devices
            .as_deref()
            .filter(|_| matches!(inst.device, Device::Cuda(_)))
            .map(GpuPool::name);
        if let Some(devices) = devices {
            self.on_gpus.insert(head, devices);
        }
        if members.len() > 1 {
            emit(RunEvent::GroupStarted {
                members: members.iter().map(|(m, _)| *m).collect(),
                stage: inst.stage.to_string(),
                ids: members
                    .iter()
                    .map(|(m, _)| plan.instance(*m).id.clone())
                    .collect(),
            });
        }
        let mut jobs = Vec::with_capacity(members.len());
        for &(id, attempt) in &members {
            let partial = !graph.missing[id.index()].is_empty();
            let mut job = Job::partial(plan, id, &graph.missing[id.index()]);
            if let Some(device) = &device {
                job.device.clone_from(device);
            }
            job.visible_gpus.clone_from(&visible);
            graph.state[id.index()] = State::Running;
            // A partial report is always rebuilt (it is cheap): an earlier one with the
            // same inputs missing would otherwise read as "cached by another run".
            let force = partial
                || matches!(
                    self.statuses[id.index()],
                    Status::Run(Reason::Forced | Reason::UpstreamForced)
                );
            if job.key != plan.instance(id).key {
                self.keys.insert(id, job.key);
            }
            emit(RunEvent::Started {
                instance: id,
                id: plan.instance(id).id.clone(),
                key: job.key,
                attempt,
            });
            jobs.push((id, Arc::new(job), force));
        }
        let (events, cancel) = (self.events.clone(), self.cancel.clone());
        let fut: BoxFuture<Vec<(PlanIndex, Outcome)>> = if jobs.len() == 1 {
            let (id, job, force) = jobs.pop().expect("one job");
            let fut = self.executor.execute(id, job, force, events, cancel);
            Box::pin(async move { vec![(id, fut.await)] })
        } else {
            self.executor.execute_group(jobs, events, cancel)
        };
        self.running.spawn(async move {
            Ran {
                head,
                members,
                outcomes: fut.await,
            }
        });
    }

    /// Gives back the slot (and GPUs) a dispatch headed by `head` held.
    fn release(&mut self, head: PlanIndex) {
        let inst = self.plan.instance(head);
        let need = demand(inst.resources, &self.total);
        self.free.cpus += need.cpus;
        self.free.mem += need.mem;
        if let (Some(pool), Some(devices)) = (self.pool.as_mut(), self.on_gpus.remove(&head)) {
            pool.give(&devices, inst.resources.gpus);
        }
    }
}

/// Records how one member's attempt ended: a retry, a failure (and what it skips), a result.
fn conclude(
    graph: &mut Graph<'_>,
    summary: &mut Summary,
    keys: &BTreeMap<PlanIndex, InstanceKey>,
    ended: Attempt,
    cancelled: bool,
    emit: &impl Fn(RunEvent),
) {
    let Attempt {
        id,
        attempt,
        outcome,
    } = ended;
    let inst = graph.plan.instance(id);
    let (outcome, retryable) = match outcome {
        Outcome::Rejected { error, log } => (Outcome::Failed { error, log }, false),
        other => (other, true),
    };
    let (manifest, by_other) = match outcome {
        Outcome::Computed(m) => (m, false),
        Outcome::CachedByOther(m) => (m, true),
        Outcome::Rejected { .. } => unreachable!("a failure that is not retried"),
        Outcome::Failed { error, log } => {
            let will_retry = retryable && attempt <= inst.retries && !cancelled;
            emit(RunEvent::Failed {
                instance: id,
                id: inst.id.clone(),
                key: keys.get(&id).copied().unwrap_or(inst.key),
                attempt,
                will_retry,
                error,
                log,
            });
            if will_retry {
                graph.state[id.index()] = State::Ready;
                graph.ready.push_front((id, attempt + 1));
            } else {
                graph.state[id.index()] = State::Failed;
                summary.failed += 1;
                graph.settle(id, Ended::Failed, &inst.id, emit);
            }
            return;
        }
        Outcome::Cancelled => {
            graph.state[id.index()] = State::Ready;
            return;
        }
        Outcome::Detached { task } => {
            graph.state[id.index()] = State::Done;
            summary.submitted += 1;
            emit(RunEvent::Submitted {
                instance: id,
                id: inst.id.clone(),
                key: keys.get(&id).copied().unwrap_or(inst.key),
                task,
            });
            graph.settle(id, Ended::Done, &inst.id, emit);
            return;
        }
    };
    let diverged = !manifest.status.is_done();
    graph.state[id.index()] = if diverged {
        State::Diverged
    } else {
        State::Done
    };
    match (by_other, diverged) {
        (true, d) => {
            summary.cached += 1;
            summary.cached_diverged += usize::from(d);
        }
        (false, d) => {
            summary.ran += 1;
            summary.diverged += usize::from(d);
        }
    }
    emit(RunEvent::Finished {
        instance: id,
        id: inst.id.clone(),
        key: manifest.key,
        status: manifest.status.name(),
        diverged: Divergence::of(&manifest.status),
        missing_inputs: graph.missing[id.index()].len(),
        seconds: manifest.seconds,
        metrics: final_metrics(&manifest),
        by_other,
        manifest,
    });
    let ended = if diverged {
        Ended::Diverged
    } else {
        Ended::Done
    };
    graph.settle(id, ended, &inst.id, emit);
}

fn final_metrics(m: &Manifest) -> BTreeMap<String, f64> {
    m.final_metrics().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn demand(r: ablate_spec::Resources, total: &Slots) -> Slots {
    // An instance asking for more CPUs than `--jobs` runs alone rather than never.
    Slots {
        cpus: r.cpus.min(total.cpus),
        mem: r.mem_gb,
    }
}

/// The GPU a `cuda:N` stage is pinned to.
fn pinned(device: Device) -> Option<u32> {
    match device {
        Device::Cuda(n) => n,
        Device::Cpu => None,
    }
}

fn fits_at_all(need: &Slots, total: &Slots) -> Result<(), String> {
    if need.mem > total.mem + 1e-9 {
        return Err(format!(
            "needs {} GB of memory (`resources.mem_gb`), but only {:.1} GB are available",
            need.mem, total.mem
        ));
    }
    Ok(())
}
