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
    let mut free = Slots { ..total };
    let gpu_names = opts.gpus.as_deref().unwrap_or_default();
    let mut pool = opts.gpus.as_ref().map(|names| GpuPool::new(names.len()));
    let mut on_gpus: BTreeMap<PlanIndex, Vec<usize>> = BTreeMap::new();
    let mut running: JoinSet<(PlanIndex, u32, Outcome)> = JoinSet::new();
    // The key each started instance runs under, when it is not its own: a partial report's
    // (see `Job::partial`).
    let mut keys: BTreeMap<PlanIndex, InstanceKey> = BTreeMap::new();
    let mut cancelled = cancel.is_cancelled();

    loop {
        // Dispatch every ready instance that fits, in plan order (later ones may backfill).
        if !cancelled {
            let mut i = 0;
            while i < graph.ready.len() {
                let (id, attempt) = graph.ready[i];
                let inst = plan.instance(id);
                let need = demand(inst.resources, &total);
                let gpus = inst.resources.gpus;
                let pin = pinned(inst.device);
                let never = fits_at_all(&need, &total).err().or_else(|| {
                    pool.as_ref()
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
                    graph.settle(id, Ended::Failed, &inst.id, &emit);
                    continue;
                }
                if need.cpus > free.cpus + 1e-9 || need.mem > free.mem + 1e-9 {
                    i += 1;
                    continue;
                }
                let partial = !graph.missing[id.index()].is_empty();
                let mut job = Job::partial(plan, id, &graph.missing[id.index()]);
                if let Some(pool) = pool.as_mut().filter(|_| gpus > 0.0) {
                    let Some(devices) = pool.take(gpus, pin) else {
                        i += 1;
                        continue;
                    };
                    if matches!(inst.device, Device::Cuda(_)) {
                        job.device = GpuPool::name(&devices);
                    }
                    job.visible_gpus = Some(
                        devices
                            .iter()
                            .map(|&d| gpu_names[d].as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    on_gpus.insert(id, devices);
                } else if !gpu_names.is_empty() {
                    // A program that asked for no GPU sees none: the devices are the
                    // scheduler's to share out.
                    job.visible_gpus = Some(String::new());
                }
                graph.ready.remove(i);
                free.cpus -= need.cpus;
                free.mem -= need.mem;
                graph.state[id.index()] = State::Running;
                // A partial report is always rebuilt (it is cheap): an earlier one with the
                // same inputs missing would otherwise read as "cached by another run".
                let force = partial
                    || matches!(
                        statuses[id.index()],
                        Status::Run(Reason::Forced | Reason::UpstreamForced)
                    );
                if job.key != inst.key {
                    keys.insert(id, job.key);
                }
                emit(RunEvent::Started {
                    instance: id,
                    id: inst.id.clone(),
                    key: job.key,
                    attempt,
                });
                let fut =
                    executor.execute(id, Arc::new(job), force, events.clone(), cancel.clone());
                running.spawn(async move { (id, attempt, fut.await) });
            }
        }
        if running.is_empty() {
            break;
        }
        let joined = tokio::select! {
            joined = running.join_next() => joined,
            () = cancel.cancelled(), if !cancelled => { cancelled = true; continue; }
        };
        let Some(joined) = joined else { break };
        let (id, attempt, outcome) = match joined {
            Ok(x) => x,
            Err(e) => panic!("scheduler task failed: {e}"),
        };
        let inst = plan.instance(id);
        let need = demand(inst.resources, &total);
        free.cpus += need.cpus;
        free.mem += need.mem;
        if let (Some(pool), Some(devices)) = (pool.as_mut(), on_gpus.remove(&id)) {
            pool.give(&devices, inst.resources.gpus);
        }
        let (manifest, by_other) = match outcome {
            Outcome::Computed(m) => (m, false),
            Outcome::CachedByOther(m) => (m, true),
            Outcome::Failed { error, log } => {
                let will_retry = attempt <= inst.retries && !cancelled;
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
                    graph.settle(id, Ended::Failed, &inst.id, &emit);
                }
                continue;
            }
            Outcome::Cancelled => {
                graph.state[id.index()] = State::Ready;
                continue;
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
                graph.settle(id, Ended::Done, &inst.id, &emit);
                continue;
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
        graph.settle(id, ended, &inst.id, &emit);
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
