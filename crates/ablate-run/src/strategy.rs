//! Early stopping (`early_stop:`, issue 24): successive halving over the instances of a stage,
//! rung by rung. The scheduler asks it the budget of each attempt it starts, tells it how each
//! attempt ended (stopped at its budget with its metrics, complete, out of the race), and
//! carries out its decisions: go on to the next rung from the checkpoint, or be recorded as
//! pruned.
//!
//! The rungs are synchronous: a rung is decided once every instance of the stage has reached
//! it (or left the race), on metrics that are a deterministic function of the pipeline, so a
//! file and a cache always give the same decisions — a rerun decides from the cached entries
//! alone, and trains nothing. (Asynchronous halving, ASHA proper, promotes as results arrive;
//! its decisions then depend on timing, which a cache of results cannot reproduce.)

use std::collections::BTreeMap;
use std::sync::Arc;

use ablate_cache::{EntryStatus, Metric};
use ablate_plan::{Plan, PlanIndex, Status};
use ablate_spec::EarlyStop;

use crate::RunEvent;
use crate::dispatch::{Dispatcher, Ran};
use crate::graph::{Ended, Graph, State};
use crate::scheduler::Executor;
use crate::{Job, Summary};

/// Where an instance of the stage stands at the current rung.
#[derive(Clone, Debug, PartialEq)]
enum Standing {
    /// Not yet at the current rung: waiting for its inputs, queued, or running.
    Pending,
    /// Stopped at its budget `step` (≥ the rung's), its outputs waiting for the decision.
    Paused(u64),
    /// Its whole computation is done (cached, or it ran to its end).
    Complete,
    /// Recorded as pruned at `step` (by this run, or cached from an earlier one).
    Pruned(u64),
    /// Failed, skipped, diverged, or stopped: not compared.
    Out,
}

/// What the scheduler does next with an instance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decision<I = PlanIndex> {
    /// Start it (again) with this budget (`None`: to its end), resuming its checkpoint.
    /// `force`: its key holds a pruned entry, which the run replaces.
    Go {
        id: I,
        budget: Option<u64>,
        force: bool,
    },
    /// Record it as pruned at `step` (it is paused there).
    Prune { id: I, step: u64 },
    /// Its pruned entry from the cache stays as it is: a final result.
    Final { id: I },
}

/// One rung's comparison, for the run's events: each configuration's mean metric over its
/// seeds, best first, and how many go on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RungResult {
    pub stage: String,
    /// The rung's budget (progress steps).
    pub step: u64,
    /// `(configuration, mean metric, seeds)`, best first; NaN (a missing or non-finite
    /// value) last.
    pub ranking: Vec<(String, f64, usize)>,
    pub kept: usize,
}

struct Member<I> {
    id: I,
    config: String,
    standing: Standing,
    /// The early-stop metric's values by step, as logged so far.
    curve: Vec<(u64, f64)>,
}

/// Successive halving over one stage's instances (`I`: how the scheduler names them).
pub(crate) struct Halving<I = PlanIndex> {
    stage: String,
    spec: Arc<EarlyStop>,
    rungs: Vec<u64>,
    /// The rung being decided: `rungs.len()` once the survivors run to their end.
    rung: usize,
    members: Vec<Member<I>>,
}

impl<I: Copy + PartialEq> Halving<I> {
    /// `members`: every instance of the stage with its configuration.
    pub(crate) fn new(
        stage: &str,
        spec: Arc<EarlyStop>,
        members: impl IntoIterator<Item = (I, String)>,
    ) -> Self {
        let rungs = spec.rungs();
        Halving {
            stage: stage.to_owned(),
            spec,
            rungs,
            rung: 0,
            members: members
                .into_iter()
                .map(|(id, config)| Member {
                    id,
                    config,
                    standing: Standing::Pending,
                    curve: Vec::new(),
                })
                .collect(),
        }
    }

    fn member(&mut self, id: I) -> &mut Member<I> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("an instance of the halving's stage")
    }

    /// The metric the rungs compare.
    pub(crate) fn metric(&self) -> &str {
        &self.spec.metric
    }

    /// The budget of an attempt starting now: the current rung's, or `None` (to the end) once
    /// the last rung has been decided.
    pub(crate) fn budget(&self) -> Option<u64> {
        self.rungs.get(self.rung).copied()
    }

    /// The metric's values in `metrics`, by step (the stepped ones).
    fn curve_of(&self, metrics: &[Metric]) -> Vec<(u64, f64)> {
        let mut curve: Vec<(u64, f64)> = metrics
            .iter()
            .filter(|m| m.name == self.spec.metric)
            .filter_map(|m| m.step.map(|s| (s, m.value)))
            .collect();
        curve.sort_by_key(|(s, _)| *s);
        curve
    }

    /// An instance the cache holds whole (`done`) with these metrics.
    pub(crate) fn cached_complete(&mut self, id: I, metrics: &[Metric]) {
        let curve = self.curve_of(metrics);
        let m = self.member(id);
        m.standing = Standing::Complete;
        m.curve = curve;
    }

    /// An instance the cache holds as pruned at `step`, with its metrics up to then.
    pub(crate) fn cached_pruned(&mut self, id: I, step: u64, metrics: &[Metric]) {
        let curve = self.curve_of(metrics);
        let m = self.member(id);
        m.standing = Standing::Pruned(step);
        m.curve = curve;
    }

    /// The instance left the race (failed, skipped, diverged, cancelled).
    pub(crate) fn out(&mut self, id: I) {
        self.member(id).standing = Standing::Out;
    }

    /// The instance ran to its end.
    pub(crate) fn complete(&mut self, id: I, metrics: &[Metric]) {
        self.cached_complete(id, metrics);
    }

    /// The instance was recorded as pruned (the decision carried out): final.
    pub(crate) fn pruned(&mut self, id: I) {
        self.member(id).standing = Standing::Out;
    }

    /// The instance stopped at its budget, at `step`, with these metrics. `Err`: the metric
    /// it is judged on is not among them (the message says what it logged).
    pub(crate) fn paused(&mut self, id: I, step: u64, metrics: &[Metric]) -> Result<(), String> {
        let curve = self.curve_of(metrics);
        let rung = self.budget().unwrap_or(step);
        if !curve.iter().any(|(s, _)| *s <= rung.max(step)) {
            let mut logged: Vec<&str> = metrics
                .iter()
                .filter(|m| m.step.is_some())
                .map(|m| m.name.as_str())
                .collect();
            logged.sort_unstable();
            logged.dedup();
            self.member(id).standing = Standing::Out;
            return Err(format!(
                "`early_stop.metric` of stage `{}` is `{}`, which it did not log by step {step} \
                 ({}); early stopping compares a metric logged at each step",
                self.stage,
                self.spec.metric,
                if logged.is_empty() {
                    "it logged no stepped metric".to_owned()
                } else {
                    format!("it logged {}", ablate_spec::backticked(&logged))
                }
            ));
        }
        let m = self.member(id);
        m.standing = Standing::Paused(step);
        m.curve = curve;
        Ok(())
    }

    /// Decides every rung that every instance has reached, in order: the decisions to carry
    /// out, and each rung's comparison. Nothing while an instance is still on its way.
    pub(crate) fn decide(&mut self) -> (Vec<Decision<I>>, Vec<RungResult>) {
        let mut decisions = Vec::new();
        let mut results = Vec::new();
        while self.rung < self.rungs.len()
            && !self.members.iter().any(|m| m.standing == Standing::Pending)
        {
            let step = self.rungs[self.rung];
            // Who reached this rung, and its metric there.
            let mut by_config: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for m in &self.members {
                let reached = match m.standing {
                    Standing::Paused(_) | Standing::Complete => true,
                    Standing::Pruned(s) => s >= step,
                    Standing::Pending | Standing::Out => false,
                };
                if reached {
                    let value = m
                        .curve
                        .iter()
                        .rev()
                        .find(|(s, _)| *s <= step)
                        .map_or(f64::NAN, |(_, v)| *v);
                    by_config.entry(&m.config).or_default().push(value);
                }
            }
            let mut ranking: Vec<(String, f64, usize)> = by_config
                .into_iter()
                .map(|(c, vs)| {
                    let mean = vs.iter().sum::<f64>() / vs.len() as f64;
                    (c.to_owned(), mean, vs.len())
                })
                .collect();
            let goal = self.spec.mode;
            // Best first; NaN last; ties in configuration order (the map's), so the order
            // never depends on timing.
            ranking.sort_by(|a, b| match (a.1.is_finite(), b.1.is_finite()) {
                (true, true) if goal.better(a.1, b.1) => std::cmp::Ordering::Less,
                (true, true) if goal.better(b.1, a.1) => std::cmp::Ordering::Greater,
                (true, true) | (false, false) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
            });
            let kept = self.spec.keep(ranking.len());
            let keep: Vec<&str> = ranking[..kept].iter().map(|(c, ..)| c.as_str()).collect();
            // One configuration left: no later rung can stop it, so it runs to its end.
            let last = kept == 1 || self.rung + 1 == self.rungs.len();
            let next = if last {
                None
            } else {
                self.rungs.get(self.rung + 1).copied()
            };
            for m in &mut self.members {
                let go = keep.contains(&m.config.as_str());
                match (m.standing.clone(), go) {
                    (Standing::Paused(_), true) => {
                        m.standing = Standing::Pending;
                        decisions.push(Decision::Go {
                            id: m.id,
                            budget: next,
                            force: false,
                        });
                    }
                    (Standing::Paused(s), false) => {
                        m.standing = Standing::Out;
                        decisions.push(Decision::Prune { id: m.id, step: s });
                    }
                    // Pruned here before, kept now (the configurations changed): it goes on
                    // from its checkpoint, replacing its pruned entry.
                    (Standing::Pruned(s), true) if s == step => {
                        m.standing = Standing::Pending;
                        decisions.push(Decision::Go {
                            id: m.id,
                            budget: next,
                            force: true,
                        });
                    }
                    // Pruned earlier than it reached before: its entry stays as it is.
                    (Standing::Pruned(s), false) if s >= step => {
                        m.standing = Standing::Out;
                        decisions.push(Decision::Final { id: m.id });
                    }
                    _ => {}
                }
            }
            results.push(RungResult {
                stage: self.stage.clone(),
                step,
                ranking,
                kept,
            });
            self.rung = if last {
                self.rungs.len()
            } else {
                self.rung + 1
            };
        }
        // After the last rung, a pruned entry that was never compared again (the rungs
        // changed since it was pruned) stays as it is.
        if self.rung == self.rungs.len() {
            for m in &mut self.members {
                if let Standing::Pruned(_) = m.standing {
                    m.standing = Standing::Out;
                    decisions.push(Decision::Final { id: m.id });
                }
            }
        }
        (decisions, results)
    }
}

/// Early stopping's state in a run: one [`Halving`] per stage that stops early.
pub(crate) struct Early {
    pub(crate) halvings: Vec<Halving>,
    /// The halving of each instance's stage, by [`PlanIndex::index`].
    pub(crate) of: Vec<Option<usize>>,
}

impl Early {
    /// The halvings of `plan`, told what the cache holds.
    pub(crate) fn new(plan: &Plan, statuses: &[Status]) -> Self {
        let mut of = vec![None; plan.len()];
        let mut halvings = Vec::new();
        for (stage, ids) in plan.stages() {
            let Some(first) = ids
                .first()
                .and_then(|i| plan.instance(*i).early_stop.as_ref())
            else {
                continue;
            };
            let members = ids.iter().map(|&i| {
                let config = plan
                    .instance(i)
                    .early_stop
                    .as_ref()
                    .map(|e| e.config.clone());
                (i, config.unwrap_or_default())
            });
            let mut halving = Halving::new(stage.as_str(), Arc::clone(&first.spec), members);
            for &i in ids {
                of[i.index()] = Some(halvings.len());
                if let Status::Cached(entry) = &statuses[i.index()] {
                    // A manifest that cannot be read now was verified a moment ago: compare
                    // it as logging nothing rather than fail the run.
                    let metrics = entry
                        .manifest()
                        .map(|m| m.metrics.clone())
                        .unwrap_or_default();
                    match entry.status() {
                        EntryStatus::Done => halving.cached_complete(i, &metrics),
                        EntryStatus::Pruned { step } => halving.cached_pruned(i, *step, &metrics),
                        EntryStatus::Diverged { .. } => halving.out(i),
                    }
                }
            }
            halvings.push(halving);
        }
        Early { halvings, of }
    }

    /// The budget an attempt of `id` starting now gets: its stage's current rung, if it stops
    /// early.
    pub(crate) fn budget(&self, id: PlanIndex) -> Option<u64> {
        self.of[id.index()].and_then(|h| self.halvings[h].budget())
    }

    /// Decides what halving `h` can, and carries it out: the instances that go on are ready
    /// again (from their checkpoints, with the next budget), those pruned are recorded as
    /// such (each a small commit, on the executor), and a pruned entry from the cache that
    /// stays pruned is final.
    pub(crate) fn decide<E: Executor>(
        &mut self,
        h: usize,
        graph: &mut Graph<'_>,
        d: &mut Dispatcher<'_, E>,
        summary: &mut Summary,
        emit: &impl Fn(RunEvent),
    ) {
        let (decisions, results) = self.halvings[h].decide();
        for r in results {
            emit(RunEvent::Rung(r));
        }
        let plan = graph.plan;
        for decision in decisions {
            match decision {
                Decision::Go { id, force, .. } => {
                    graph.state[id.index()] = State::Ready;
                    graph.ready.push_back((id, 1));
                    if force {
                        d.forced.insert(id);
                    }
                }
                Decision::Prune { id, step } => {
                    graph.state[id.index()] = State::Running;
                    let job = Arc::new(Job::from_plan(plan, id));
                    let fut = d.executor.prune(id, job, step);
                    d.running.spawn(async move {
                        Ran {
                            head: None,
                            members: vec![(id, 1)],
                            outcomes: vec![(id, fut.await)],
                        }
                    });
                }
                Decision::Final { id } => {
                    graph.state[id.index()] = State::Pruned;
                    summary.cached_pruned += 1;
                    graph.settle(id, Ended::Pruned, &plan.instance(id).id, emit);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ablate_spec::Goal;

    fn spec(min: u64, max: u64, eta: u64, mode: Goal) -> Arc<EarlyStop> {
        Arc::new(EarlyStop {
            metric: "loss".into(),
            mode,
            resource: "steps".into(),
            min,
            max,
            eta,
            seeds: "seed".into(),
        })
    }

    fn ids(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    fn losses(step: u64, v: f64) -> Vec<Metric> {
        (1..=step)
            .map(|s| Metric::at_step("loss", s, v + (step - s) as f64))
            .collect()
    }

    #[test]
    fn rungs_and_keep_follow_min_eta_max() {
        let s = spec(10, 270, 3, Goal::Min);
        assert_eq!(s.rungs(), vec![10, 30, 90]);
        assert_eq!(s.keep(27), 9);
        assert_eq!(s.keep(2), 1);
        assert_eq!(spec(5, 6, 2, Goal::Min).rungs(), vec![5]);
    }

    #[test]
    fn the_best_third_goes_on_and_seeds_are_averaged() {
        // 3 configurations × 2 seeds; eta 3 keeps one configuration.
        let id = ids(6);
        let configs = ["lr=1", "lr=1", "lr=2", "lr=2", "lr=3", "lr=3"];
        let mut h = Halving::new(
            "train",
            spec(2, 6, 3, Goal::Min),
            id.iter().zip(configs).map(|(i, c)| (*i, c.to_owned())),
        );
        assert_eq!(h.budget(), Some(2));
        // lr=2 has the best mean (1.5 vs 2 vs 3), though lr=1 has the single best seed.
        let at2 = [0.5, 3.5, 1.0, 2.0, 3.0, 3.0];
        for (i, v) in id.iter().zip(at2) {
            assert_eq!(
                h.decide().0,
                vec![],
                "undecided while some are on their way"
            );
            h.paused(*i, 2, &losses(2, v)).unwrap();
        }
        let (decisions, results) = h.decide();
        assert_eq!(results[0].ranking[0].0, "lr=2");
        assert_eq!(results[0].kept, 1);
        assert_eq!(
            decisions,
            vec![
                Decision::Prune { id: id[0], step: 2 },
                Decision::Prune { id: id[1], step: 2 },
                Decision::Go {
                    id: id[2],
                    budget: None,
                    force: false
                },
                Decision::Go {
                    id: id[3],
                    budget: None,
                    force: false
                },
                Decision::Prune { id: id[4], step: 2 },
                Decision::Prune { id: id[5], step: 2 },
            ]
        );
        assert_eq!(h.budget(), None, "the survivors run to their end");
    }

    #[test]
    fn a_rerun_from_the_cache_decides_the_same_and_starts_nothing() {
        let id = ids(3);
        let mut h = Halving::new(
            "train",
            spec(2, 6, 3, Goal::Max),
            id.iter()
                .zip(["a", "b", "c"])
                .map(|(i, c)| (*i, c.to_owned())),
        );
        h.cached_pruned(id[0], 2, &losses(2, 1.0));
        h.cached_complete(id[1], &losses(6, 5.0));
        h.cached_pruned(id[2], 2, &losses(2, 2.0));
        let (decisions, results) = h.decide();
        // Nothing runs: the two pruned entries stay pruned.
        assert_eq!(
            decisions,
            vec![Decision::Final { id: id[0] }, Decision::Final { id: id[2] }],
            "{results:?}"
        );
        assert_eq!(results[0].ranking[0].0, "b");
    }

    #[test]
    fn a_pruned_entry_that_now_ranks_among_the_best_goes_on_from_its_checkpoint() {
        // The cache holds `a` pruned at 2; a new configuration `c` does worse than it.
        let id = ids(3);
        let mut h = Halving::new(
            "train",
            spec(2, 18, 3, Goal::Min),
            id.iter()
                .zip(["a", "b", "c"])
                .map(|(i, c)| (*i, c.to_owned())),
        );
        h.cached_pruned(id[0], 2, &losses(2, 1.0));
        h.cached_pruned(id[1], 2, &losses(2, 2.0));
        h.paused(id[2], 2, &losses(2, 3.0)).unwrap();
        let (decisions, _) = h.decide();
        assert_eq!(
            decisions,
            vec![
                // The one configuration left runs to its end: no later rung could stop it.
                Decision::Go {
                    id: id[0],
                    budget: None,
                    force: true
                },
                Decision::Final { id: id[1] },
                Decision::Prune { id: id[2], step: 2 },
            ]
        );
    }

    #[test]
    fn survivors_go_on_to_the_next_rung_while_several_configurations_are_left() {
        // 9 configurations, eta 3: rung 1 keeps 3, which go on to 3 (not to the end).
        let id = ids(9);
        let mut h = Halving::new(
            "train",
            spec(1, 27, 3, Goal::Min),
            id.iter().map(|i| (*i, format!("c{i}"))),
        );
        for i in &id {
            h.paused(*i, 1, &losses(1, *i as f64)).unwrap();
        }
        let (decisions, _) = h.decide();
        let going: Vec<(usize, Option<u64>)> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Go { id, budget, .. } => Some((*id, *budget)),
                _ => None,
            })
            .collect();
        assert_eq!(going, [(0, Some(3)), (1, Some(3)), (2, Some(3))]);
        assert_eq!(h.budget(), Some(3));
    }

    #[test]
    fn a_missing_metric_is_an_error_naming_what_was_logged() {
        let id = ids(1);
        let mut h = Halving::new("train", spec(2, 6, 3, Goal::Min), [(id[0], String::new())]);
        let metrics = vec![
            Metric::at_step("acc", 1, 0.5),
            Metric::at_step("acc", 2, 0.6),
        ];
        let err = h.paused(id[0], 2, &metrics).unwrap_err();
        assert!(err.contains("`loss`") && err.contains("`acc`"), "{err}");
    }

    #[test]
    fn nan_ranks_last_and_failed_seeds_are_left_out() {
        let id = ids(4);
        let mut h = Halving::new(
            "train",
            spec(1, 4, 2, Goal::Min),
            id.iter()
                .zip(["a", "a", "b", "c"])
                .map(|(i, c)| (*i, c.to_owned())),
        );
        h.out(id[0]);
        h.paused(id[1], 1, &losses(1, 9.0)).unwrap();
        h.paused(id[2], 1, &[Metric::at_step("loss", 1, f64::NAN)])
            .unwrap();
        h.paused(id[3], 1, &losses(1, 10.0)).unwrap();
        let (_, results) = h.decide();
        let order: Vec<&str> = results[0].ranking.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(order, ["a", "c", "b"]);
        assert_eq!(
            results[0].ranking[0].2, 1,
            "the failed seed is not averaged"
        );
    }
}
