//! Starts ready work within the machine's slots: the free CPU and memory, the GPU pool
//! ([`crate::placement`]), and the running dispatches (an instance, or a fused group in one
//! slot), each one executor future.

use std::collections::BTreeMap;
use std::sync::Arc;

use ablate_cache::InstanceKey;
use ablate_plan::{Plan, PlanIndex, Reason, Status};
use ablate_spec::Device;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::graph::{Ended, Graph, State};
use crate::placement::GpuPool;
use crate::scheduler::{BoxFuture, Executor, Outcome};
use crate::strategy::Early;
use crate::{CancelToken, Job, RunEvent, Summary};

pub(crate) struct Slots {
    pub(crate) cpus: f64,
    pub(crate) mem: f64,
}

/// What one dispatch (an instance, or a fused group in one slot) came back with.
pub(crate) struct Ran {
    /// The member whose resources (and GPUs) the dispatch holds; `None`: it held none (the
    /// recording of a pruned result).
    pub(crate) head: Option<PlanIndex>,
    /// Each member with its attempt number, in plan order.
    pub(crate) members: Vec<(PlanIndex, u32)>,
    pub(crate) outcomes: Vec<(PlanIndex, Outcome)>,
}

/// One member's attempt, ended.
pub(crate) struct Attempt {
    pub(crate) id: PlanIndex,
    pub(crate) attempt: u32,
    pub(crate) outcome: Outcome,
}

/// Starts ready work within the machine's slots: the part of the scheduler that owns the free
/// resources, the GPU pool and the running dispatches.
pub(crate) struct Dispatcher<'p, E: Executor> {
    pub(crate) plan: &'p Plan,
    pub(crate) statuses: &'p [Status],
    pub(crate) executor: Arc<E>,
    pub(crate) events: &'p UnboundedSender<RunEvent>,
    pub(crate) cancel: &'p CancelToken,
    pub(crate) total: Slots,
    pub(crate) free: Slots,
    /// [`RunOptions::whole_groups`].
    pub(crate) whole_groups: bool,
    pub(crate) gpu_names: &'p [String],
    pub(crate) pool: Option<GpuPool>,
    /// The devices each running dispatch holds, by its head.
    pub(crate) on_gpus: BTreeMap<PlanIndex, Vec<usize>>,
    /// The key each started instance runs under, when it is not its own: a partial report's
    /// (see `Job::partial`).
    pub(crate) keys: BTreeMap<PlanIndex, InstanceKey>,
    /// Instances whose pruned entry early stopping let go on: their run replaces it.
    pub(crate) forced: std::collections::HashSet<PlanIndex>,
    pub(crate) running: JoinSet<Ran>,
}

impl<E: Executor> Dispatcher<'_, E> {
    /// Dispatches every ready instance that fits, in queue order (later ones may backfill). A
    /// member of a fused group takes the other ready members of its group along, as many as
    /// [`crate::fuse::take`] says, into its one slot.
    pub(crate) fn dispatch(
        &mut self,
        graph: &mut Graph<'_>,
        early: &Early,
        summary: &mut Summary,
        emit: &impl Fn(RunEvent),
    ) {
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
            self.start(graph, early, id, members, devices, emit);
        }
    }

    /// How many instances needing `need` could start now (at least this one).
    pub(crate) fn slots(&self, need: &Slots) -> usize {
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        graph: &mut Graph<'_>,
        early: &Early,
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
        // A GPU stage computes on the first of its devices; a CPU stage with a GPU share only
        // passes it on to its programs.
        let gpus: Vec<u32> = devices
            .iter()
            .flatten()
            .filter(|_| matches!(inst.device, Device::Cuda(_)))
            .map(|&d| d as u32)
            .collect();
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
            job.budget = early.budget(id);
            if let Some(&first) = gpus.first() {
                job.placement.device = Device::Cuda(Some(first));
                job.placement.gpus.clone_from(&gpus);
            }
            job.placement.visible.clone_from(&visible);
            graph.state[id.index()] = State::Running;
            // A partial report is always rebuilt (it is cheap): an earlier one with the
            // same inputs missing would otherwise read as "cached by another run".
            let force = partial
                || self.forced.contains(&id)
                || matches!(
                    self.statuses[id.index()],
                    Status::Run(Reason::Forced | Reason::UpstreamForced | Reason::Pruned { .. })
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
                head: Some(head),
                members,
                outcomes: fut.await,
            }
        });
    }

    /// Gives back the slot (and GPUs) a dispatch headed by `head` held.
    pub(crate) fn release(&mut self, head: PlanIndex) {
        let inst = self.plan.instance(head);
        let need = demand(inst.resources, &self.total);
        self.free.cpus += need.cpus;
        self.free.mem += need.mem;
        if let (Some(pool), Some(devices)) = (self.pool.as_mut(), self.on_gpus.remove(&head)) {
            pool.give(&devices, inst.resources.gpus);
        }
    }
}

pub(crate) fn demand(r: ablate_spec::Resources, total: &Slots) -> Slots {
    // An instance asking for more CPUs than `--jobs` runs alone rather than never.
    Slots {
        cpus: r.cpus.min(total.cpus),
        mem: r.mem_gb,
    }
}

/// The GPU a `cuda:N` stage is pinned to.
pub(crate) fn pinned(device: Device) -> Option<u32> {
    match device {
        Device::Cuda(n) => n,
        Device::Cpu => None,
    }
}

pub(crate) fn fits_at_all(need: &Slots, total: &Slots) -> Result<(), String> {
    if need.mem > total.mem + 1e-9 {
        return Err(format!(
            "needs {} GB of memory (`resources.mem_gb`), but only {:.1} GB are available",
            need.mem, total.mem
        ));
    }
    Ok(())
}
