//! The scheduler: one task owns the state of every instance and runs the loop that ties the
//! parts together — the [`Graph`] of states (what an ending releases or skips), the
//! [`Dispatcher`] (what starts, within which slots and GPUs: [`crate::placement`]), and early
//! stopping's strategy ([`Early`]: which instances go on) — and reports everything as events.
//! Executors ([`Executor`]) do the work.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ablate_cache::{EntryStatus, Manifest};
use ablate_plan::{Plan, PlanIndex, Status};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::dispatch::{Attempt, Dispatcher, Slots};
use crate::graph::{Ended, Graph, State};
use crate::placement::GpuPool;
use crate::strategy::Early;
use crate::{CancelToken, Divergence, Job, RunEvent, Summary};

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
    /// It stopped at its early-stopping budget ([`Job::budget`]) at progress step `step`,
    /// with these metrics (stepped ones included): nothing is committed yet; its outputs wait
    /// for the strategy, which prunes it ([`Executor::prune`]) or lets it go on from its
    /// checkpoint.
    Paused {
        step: u64,
        metrics: Vec<ablate_cache::Metric>,
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

    /// Records an instance that stopped at its budget `step` ([`Outcome::Paused`]) as a
    /// `pruned` result: commits the outputs and metrics it left then. The default says the
    /// executor cannot.
    fn prune(&self, _instance: PlanIndex, job: Arc<Job>, step: u64) -> BoxFuture<Outcome> {
        let error = format!(
            "this executor cannot record `{}` as pruned at step {step}",
            job.id
        );
        Box::pin(async move { Outcome::Failed { error, log: None } })
    }

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
        newly_skipped: Vec::new(),
    };
    // A cached input releases its dependants at once, unless it diverged: then each dependant
    // waits for it like for any input, and learns below that it diverged.
    let cached_done =
        |id: PlanIndex| matches!(&statuses[id.index()], Status::Cached(m) if m.status().is_done());
    let mut cached_diverged = Vec::new();
    let mut cached_pruned = Vec::new();
    for (id, inst) in plan.instances() {
        match &statuses[id.index()] {
            Status::Cached(m) => {
                if let EntryStatus::Pruned { .. } = m.status() {
                    // Final once its stage's early stopping says so (see below).
                    graph.state[id.index()] = State::Paused;
                    cached_pruned.push(id);
                } else if !m.status().is_done() {
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
    let mut early = Early::new(plan, statuses);
    // A pruned entry outside any early-stopping stage is a miss (see `ablate_plan::statuses`):
    // these are all in one, and wait for its decisions.
    debug_assert!(
        cached_pruned
            .iter()
            .all(|id| early.of[id.index()].is_some())
    );

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
        forced: std::collections::HashSet::new(),
        running: JoinSet::new(),
    };
    let mut cancelled = cancel.is_cancelled();
    // What the cache alone decides (a rerun: everything).
    for h in 0..early.halvings.len() {
        early.decide(h, &mut graph, &mut d, &mut summary, &emit);
    }

    loop {
        if !cancelled {
            d.dispatch(&mut graph, &early, &mut summary, &emit);
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
        if let Some(head) = ran.head {
            d.release(head);
        }
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
            let stage = early.of[id.index()];
            conclude(
                &mut graph,
                &mut summary,
                &mut d,
                &mut early,
                ended,
                cancelled,
                &emit,
            );
            for skipped in std::mem::take(&mut graph.newly_skipped) {
                if let Some(h) = early.of[skipped.index()] {
                    early.halvings[h].out(skipped);
                    early.decide(h, &mut graph, &mut d, &mut summary, &emit);
                }
            }
            if let Some(h) = stage
                && !cancelled
            {
                early.decide(h, &mut graph, &mut d, &mut summary, &emit);
            }
        }
    }

    summary.skipped = graph.skipped;
    if cancelled {
        let not_run = graph
            .state
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    State::Waiting(_) | State::Ready | State::Running | State::Paused
                )
            })
            .count();
        summary.skipped += not_run;
        emit(RunEvent::Interrupted { not_run });
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    emit(RunEvent::Summary(summary));
    summary
}

/// Records how one member's attempt ended: a retry, a failure (and what it skips), a result,
/// a stop at its early-stopping budget.
#[allow(clippy::too_many_arguments)]
fn conclude<E: Executor>(
    graph: &mut Graph<'_>,
    summary: &mut Summary,
    d: &mut Dispatcher<'_, E>,
    early: &mut Early,
    ended: Attempt,
    cancelled: bool,
    emit: &impl Fn(RunEvent),
) {
    let keys = &d.keys;
    let Attempt {
        id,
        attempt,
        outcome,
    } = ended;
    let inst = graph.plan.instance(id);
    let halving = early.of[id.index()];
    let (outcome, retryable) = match outcome {
        Outcome::Rejected { error, log } => (Outcome::Failed { error, log }, false),
        other => (other, true),
    };
    let (manifest, by_other) = match outcome {
        Outcome::Paused { step, metrics } => {
            let paused = match halving {
                Some(h) => early.halvings[h].paused(id, step, &metrics),
                None => Err(format!(
                    "it stopped at step {step} as if it had an early-stopping budget, but stage \
                     `{}` stops nothing early",
                    inst.stage
                )),
            };
            match paused {
                Ok(()) => {
                    graph.state[id.index()] = State::Paused;
                    let metric = halving.map(|h| early.halvings[h].metric().to_owned());
                    let value = metric.and_then(|name| {
                        metrics
                            .iter()
                            .filter(|m| m.name == name && m.step.is_some_and(|s| s <= step))
                            .max_by_key(|m| m.step)
                            .map(|m| m.value)
                    });
                    emit(RunEvent::Paused {
                        instance: id,
                        id: inst.id.clone(),
                        key: inst.key,
                        step,
                        value,
                    });
                }
                Err(error) => {
                    emit(RunEvent::Failed {
                        instance: id,
                        id: inst.id.clone(),
                        key: keys.get(&id).copied().unwrap_or(inst.key),
                        attempt,
                        will_retry: false,
                        error,
                        log: None,
                    });
                    graph.state[id.index()] = State::Failed;
                    summary.failed += 1;
                    graph.settle(id, Ended::Failed, &inst.id, emit);
                }
            }
            return;
        }
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
                if let Some(h) = halving {
                    early.halvings[h].out(id);
                }
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
    let pruned = matches!(manifest.status, EntryStatus::Pruned { .. });
    let diverged = !manifest.status.is_done() && !pruned;
    graph.state[id.index()] = if pruned {
        State::Pruned
    } else if diverged {
        State::Diverged
    } else {
        State::Done
    };
    if let Some(h) = halving {
        match &manifest.status {
            EntryStatus::Done => early.halvings[h].complete(id, &manifest.metrics),
            EntryStatus::Pruned { .. } => early.halvings[h].pruned(id),
            EntryStatus::Diverged { .. } => early.halvings[h].out(id),
        }
    }
    summary.pruned += usize::from(pruned && !by_other);
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
    let ended = if pruned {
        Ended::Pruned
    } else if diverged {
        Ended::Diverged
    } else {
        Ended::Done
    };
    graph.settle(id, ended, &inst.id, emit);
}

fn final_metrics(m: &Manifest) -> BTreeMap<String, f64> {
    m.final_metrics().map(|(k, v)| (k.to_owned(), v)).collect()
}
