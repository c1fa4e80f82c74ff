//! The instances' states and what releases them: which dependants run when an input ends,
//! and which are skipped (the dispatcher starts what is ready; see `scheduler`).

use std::collections::VecDeque;

use ablate_plan::{Plan, PlanIndex};

use crate::{RunEvent, SkipCause, Unfinished};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Waiting(usize),
    Ready,
    Running,
    Done,
    /// Complete, with a diverged result: reports read it, nothing maps over it.
    Diverged,
    /// Stopped at its early-stopping budget, waiting for its rung's decision.
    Paused,
    /// A pruned result (early stopping): reports read it, nothing maps over it.
    Pruned,
    Failed,
    Skipped,
}

/// How an instance ended, as its dependants see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Done,
    Diverged,
    Pruned,
    Failed,
    Skipped(SkipCause),
}

/// The instances' states and what releases them: the part of the scheduler that decides which
/// dependants run when an input ends, and which are skipped.
pub(crate) struct Graph<'p> {
    pub(crate) plan: &'p Plan,
    pub(crate) state: Vec<State>,
    /// The inputs of each (report) instance that ended without a result, with why and the id
    /// of the instance upstream that caused it.
    pub(crate) missing: Vec<Vec<(PlanIndex, Unfinished, String)>>,
    pub(crate) ready: VecDeque<(PlanIndex, u32)>,
    pub(crate) skipped: usize,
    /// Instances skipped since the caller last looked (early stopping takes them out).
    pub(crate) newly_skipped: Vec<PlanIndex>,
}

impl Graph<'_> {
    /// `id` ended: each dependant waiting for it waits for one input fewer (and is ready when
    /// none is left), or is skipped — and its own dependants learn that in turn. A dependant
    /// that maps over its inputs needs each to be done; a report also takes a diverged input
    /// (it shows it as such) and, unless `strict`, one that failed or was skipped (it marks
    /// its cells). `because`: the instance that failed or diverged, for the skip messages.
    pub(crate) fn settle(
        &mut self,
        id: PlanIndex,
        ended: Ended,
        because: &str,
        emit: &impl Fn(RunEvent),
    ) {
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
                    Ended::Diverged | Ended::Pruned if inst.report => Ok(None),
                    Ended::Diverged => Err(SkipCause::Diverged),
                    Ended::Pruned => Err(SkipCause::Pruned),
                    Ended::Failed if partial => Ok(Some(Unfinished::Failed)),
                    Ended::Skipped(SkipCause::Failed) if partial => Ok(Some(Unfinished::Skipped)),
                    Ended::Skipped(SkipCause::Diverged) if partial => {
                        Ok(Some(Unfinished::Diverged))
                    }
                    Ended::Skipped(SkipCause::Pruned) if partial => Ok(Some(Unfinished::Pruned)),
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
                        self.newly_skipped.push(d);
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
