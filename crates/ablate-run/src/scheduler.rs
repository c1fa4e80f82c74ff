//! The scheduler: one task owns the state of every instance, dispatches ready instances to an
//! executor within resource slots, and reports everything as events.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ablate_cache::Manifest;
use ablate_plan::{InstanceId, Plan, Reason, Status};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::gpus::GpuPool;
use crate::{CancelToken, Job, RunEvent, Summary};
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
        instance: InstanceId,
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
    Failed,
    Skipped,
}

struct Slots {
    cpus: f64,
    mem: f64,
}

/// Runs a plan: cached instances are reported, the rest executed as their inputs complete.
/// A failed instance (after its retries) fails only its dependants. Ends with a summary event.
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
    let mut state = vec![State::Done; n];
    let mut ready = VecDeque::new();
    for (id, inst) in plan.instances() {
        match &statuses[id.index()] {
            Status::Cached(m) => emit(RunEvent::Cached {
                instance: id,
                id: inst.id.clone(),
                key: inst.key,
                entry: Arc::clone(m),
            }),
            Status::Run(_) => {
                let waiting = plan
                    .inputs(id)
                    .filter(|(i, _)| !statuses[i.index()].is_cached())
                    .count();
                state[id.index()] = State::Waiting(waiting);
                if waiting == 0 {
                    state[id.index()] = State::Ready;
                    ready.push_back((id, 1u32));
                }
            }
        }
    }

    let total = Slots {
        cpus: opts.jobs.max(1) as f64,
        mem: opts.mem_gb,
    };
    let mut free = Slots { ..total };
    let gpu_names = opts.gpus.as_deref().unwrap_or_default();
    let mut pool = opts.gpus.as_ref().map(|names| GpuPool::new(names.len()));
    let mut on_gpus: BTreeMap<InstanceId, Vec<usize>> = BTreeMap::new();
    let mut running: JoinSet<(InstanceId, u32, Outcome)> = JoinSet::new();
    let mut cancelled = cancel.is_cancelled();

    loop {
        // Dispatch every ready instance that fits, in plan order (later ones may backfill).
        if !cancelled {
            let mut i = 0;
            while i < ready.len() {
                let (id, attempt) = ready[i];
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
                    ready.remove(i);
                    state[id.index()] = State::Failed;
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
                    summary.skipped += skip_descendants(plan, id, &mut state, &emit);
                    continue;
                }
                if need.cpus > free.cpus + 1e-9 || need.mem > free.mem + 1e-9 {
                    i += 1;
                    continue;
                }
                let mut job = Job::from_plan(plan, id);
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
                ready.remove(i);
                free.cpus -= need.cpus;
                free.mem -= need.mem;
                state[id.index()] = State::Running;
                let force = matches!(
                    statuses[id.index()],
                    Status::Run(Reason::Forced | Reason::UpstreamForced)
                );
                emit(RunEvent::Started {
                    instance: id,
                    id: inst.id.clone(),
                    key: inst.key,
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
                    key: inst.key,
                    attempt,
                    will_retry,
                    error,
                    log,
                });
                if will_retry {
                    state[id.index()] = State::Ready;
                    ready.push_front((id, attempt + 1));
                } else {
                    state[id.index()] = State::Failed;
                    summary.failed += 1;
                    summary.skipped += skip_descendants(plan, id, &mut state, &emit);
                }
                continue;
            }
            Outcome::Cancelled => {
                state[id.index()] = State::Ready;
                continue;
            }
            Outcome::Detached { task } => {
                state[id.index()] = State::Done;
                summary.submitted += 1;
                emit(RunEvent::Submitted {
                    instance: id,
                    id: inst.id.clone(),
                    key: inst.key,
                    task,
                });
                ready_dependants(plan, id, &mut state, &mut ready);
                continue;
            }
        };
        state[id.index()] = State::Done;
        if by_other {
            summary.cached += 1;
        } else {
            summary.ran += 1;
        }
        emit(RunEvent::Finished {
            instance: id,
            id: inst.id.clone(),
            key: inst.key,
            seconds: manifest.seconds,
            metrics: final_metrics(&manifest),
            by_other,
            manifest,
        });
        ready_dependants(plan, id, &mut state, &mut ready);
    }

    if cancelled {
        let not_run = state
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

/// `id` is done: its dependants wait for one input fewer, and those waiting for none are ready.
fn ready_dependants(
    plan: &Plan,
    id: InstanceId,
    state: &mut [State],
    ready: &mut VecDeque<(InstanceId, u32)>,
) {
    for d in plan.dependants(id) {
        if let State::Waiting(k) = state[d.index()] {
            state[d.index()] = if k <= 1 {
                ready.push_back((d, 1));
                State::Ready
            } else {
                State::Waiting(k - 1)
            };
        }
    }
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

fn skip_descendants(
    plan: &Plan,
    failed: InstanceId,
    state: &mut [State],
    emit: &impl Fn(RunEvent),
) -> usize {
    let because = plan.instance(failed).id.clone();
    let mut skipped = 0;
    for d in plan.descendants(&[failed]) {
        if matches!(state[d.index()], State::Waiting(_) | State::Ready) {
            state[d.index()] = State::Skipped;
            skipped += 1;
            let inst = plan.instance(d);
            emit(RunEvent::Skipped {
                instance: d,
                id: inst.id.clone(),
                key: inst.key,
                because: because.clone(),
            });
        }
    }
    skipped
}
