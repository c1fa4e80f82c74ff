//! The one training loop: a [`Model`] (forward, loss and gradient of a batch; its parameters),
//! batches from a [`Batches`] source, one [`AdamW`] step per batch, progress to one
//! [`Observer`]. Both model families run through it on every backend.

use std::ops::{ControlFlow, Range};

use crate::NnError;
use crate::optim::AdamW;

/// A batch's loss: `sum / weight` is what the gradient is of (a mean over examples, or a
/// weighted mean over token positions), and `stats` what the model counts besides (a flow's
/// correct predictions).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Loss<S> {
    pub sum: f64,
    pub weight: f64,
    pub stats: S,
}

/// What a model counts per batch beyond its loss, summed over an epoch.
pub trait Stats: Copy + Default {
    fn add(&mut self, other: &Self);
}

impl Stats for () {
    fn add(&mut self, _: &Self) {}
}

/// A trainable model on one backend: its parameters (flat, in its layout's order) and the
/// gradient of a batch's loss.
pub trait Model {
    type Batch: ?Sized;
    type Stats: Stats;

    /// The loss of `batch` and, in `grad` (resized to the parameter count), the gradient of
    /// `sum / weight` at the current parameters.
    fn loss_and_grad(
        &mut self,
        batch: &Self::Batch,
        grad: &mut Vec<f32>,
    ) -> Result<Loss<Self::Stats>, NnError>;

    /// Runs `f` on the parameters (to update them).
    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError>;

    /// Called after every update: a projection of the parameters (the flows' Lipschitz bound);
    /// `lr` is the update's learning rate. Default: nothing.
    fn constrain(&mut self, lr: f32) -> Result<(), NnError> {
        let _ = lr;
        Ok(())
    }

    /// A copy of the current parameters (`&mut`: a model may have to reach them through its
    /// workers).
    fn params(&mut self) -> Result<Vec<f32>, NnError>;
}

/// Where the batches come from: `batch(step)` for the 0-based step, valid until the next call.
pub trait Batches<B: ?Sized> {
    fn batch(&mut self, step: usize) -> Result<&B, NnError>;
}

/// How long training runs, and whether its steps group into epochs (then progress is also
/// reported per epoch, and a divergence names its epoch and batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Steps(usize),
    Epochs { epochs: usize, per_epoch: usize },
}

impl Plan {
    pub fn steps(self) -> usize {
        match self {
            Plan::Steps(n) => n,
            Plan::Epochs { epochs, per_epoch } => epochs * per_epoch,
        }
    }
}

/// Progress after one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLog<S> {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    /// The batch's loss `sum / weight` before the update.
    pub loss: f32,
    /// The learning rate the update used.
    pub lr: f32,
    /// The gradient's global norm before clipping.
    pub grad_norm: f32,
    pub stats: S,
}

/// Progress after one epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochLog<S> {
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    /// `Σ sum / Σ weight` over the epoch's batches.
    pub loss: f32,
    /// `Σ weight` (the examples seen, for a mean over examples).
    pub weight: f64,
    pub stats: S,
}

/// Receives training progress (the library never prints); every method has a default.
pub trait Observer<S> {
    /// After every step; `Break` stops training with [`NnError::Cancelled`].
    fn on_step(&mut self, log: &StepLog<S>) -> ControlFlow<()> {
        let _ = log;
        ControlFlow::Continue(())
    }
    /// After every epoch of a [`Plan::Epochs`]; `Break` stops training.
    fn on_epoch(&mut self, log: &EpochLog<S>) -> ControlFlow<()> {
        let _ = log;
        ControlFlow::Continue(())
    }
    /// Polled before every step, so a long run can be interrupted (Ctrl-C).
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that ignores progress and never cancels.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl<S> Observer<S> for NoObserver {}

/// Several same-shaped models trained together, one step of each per call (a fused sweep:
/// their products batched along a member axis). Each member has its own parameters, data
/// and hyperparameters (the replicas of one [`AdamW`]); how they are stored and computed is
/// the model's business, but what it hands out is member-major, like [`crate::Params`]:
/// member `m`'s part of a buffer of all members is `m·n .. (m+1)·n` (`n` the parameter count).
pub trait GroupModel {
    type Batch: ?Sized;
    type Stats: Stats;

    fn members(&self) -> usize;

    /// The loss of each member's batch and, in `grad` (resized to `members × n`), each
    /// member's gradient. Members where `live` is false have stopped: their loss is ignored
    /// and their part of `grad` may hold anything (a model may skip them).
    fn loss_and_grad(
        &mut self,
        batches: &[&Self::Batch],
        live: &[bool],
        grad: &mut Vec<f32>,
    ) -> Result<Vec<Loss<Self::Stats>>, NnError>;

    /// Runs `f` on the parameters of every member (to update them), member-major.
    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError>;

    /// Each member's gradient norm of the last [`GroupModel::loss_and_grad`] (`grad`), bit for
    /// bit as [`AdamW::grad_norms`] computes it (the default): a model whose threads already
    /// computed them returns those, so the loop's thread does not.
    fn grad_norms(&mut self, grad: &[f32], opt: &AdamW) -> Vec<f32> {
        opt.grad_norms(grad)
    }

    /// Called after every update with each member's learning rate (see [`Model::constrain`]).
    fn constrain(&mut self, lrs: &[f32], live: &[bool]) -> Result<(), NnError> {
        let _ = (lrs, live);
        Ok(())
    }

    /// A copy of member `m`'s current parameters.
    fn params(&mut self, m: usize) -> Result<Vec<f32>, NnError>;
}

/// One [`Model`] as a group of one: how [`train`] runs through [`train_group`], so a member of
/// a group and a model trained alone go through the same loop.
struct Alone<'m, M: ?Sized>(&'m mut M);

impl<M: Model + ?Sized> GroupModel for Alone<'_, M> {
    type Batch = M::Batch;
    type Stats = M::Stats;

    fn members(&self) -> usize {
        1
    }

    fn loss_and_grad(
        &mut self,
        batches: &[&M::Batch],
        _live: &[bool],
        grad: &mut Vec<f32>,
    ) -> Result<Vec<Loss<M::Stats>>, NnError> {
        Ok(vec![self.0.loss_and_grad(batches[0], grad)?])
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        self.0.update(f)
    }

    fn constrain(&mut self, lrs: &[f32], _live: &[bool]) -> Result<(), NnError> {
        self.0.constrain(lrs[0])
    }

    fn params(&mut self, _m: usize) -> Result<Vec<f32>, NnError> {
        self.0.params()
    }
}

/// Trains `model` for `plan`'s steps with `opt` (one replica), each step on
/// `batches.batch(step)`: loss and gradient, a check that both are finite (else
/// [`NnError::NonFinite`] naming the epoch and batch, or [`NnError::NonFiniteStep`]), the
/// update, the model's projection. Returns the log of every step.
pub fn train<M: Model + ?Sized>(
    model: &mut M,
    opt: &mut AdamW,
    plan: Plan,
    batches: &mut dyn Batches<M::Batch>,
    observer: &mut dyn Observer<M::Stats>,
) -> Result<Vec<StepLog<M::Stats>>, NnError> {
    train_span(model, opt, plan, 0..plan.steps(), batches, observer)
}

/// [`train`] over the steps `span` of `plan` only (0-based; early stopping, #24): a run stopped
/// after step `b` and resumed from there — the model's parameters and `opt`'s state as they
/// were, see [`crate::TrainState`] — takes exactly the steps one uninterrupted run takes.
/// Returns the log of the steps in `span`. With [`Plan::Epochs`] the span starts and ends at
/// epoch boundaries (or at the plan's end), since an epoch's aggregate is not carried over.
pub fn train_span<M: Model + ?Sized>(
    model: &mut M,
    opt: &mut AdamW,
    plan: Plan,
    span: Range<usize>,
    batches: &mut dyn Batches<M::Batch>,
    observer: &mut dyn Observer<M::Stats>,
) -> Result<Vec<StepLog<M::Stats>>, NnError> {
    let mut out = train_group_span(
        &mut Alone(model),
        opt,
        plan,
        span,
        &mut [batches],
        &mut [observer],
    )?;
    out.pop().expect("one member")
}

/// How one member of a group ended: its log of every step, or why it stopped.
pub type MemberResult<S> = Result<Vec<StepLog<S>>, NnError>;

/// What one member of a group is at: its running epoch aggregate, its log, and whether (and
/// why) it stopped.
struct Member<S> {
    logs: Vec<StepLog<S>>,
    epoch: (f64, f64, S),
    ended: Option<NnError>,
}

/// [`train`] for a group: every member steps on its own batches (`batches[m]`) with its own
/// replica of `opt` and reports to its own observer. A member that fails — a non-finite loss
/// or gradient, an empty batch, its observer's stop or cancellation — stops alone, with the
/// error it would have had trained alone; the others go on. An error of the model itself (a
/// device failure) ends the whole group (`Err`). Returns each member's log, or why it stopped.
pub fn train_group<G: GroupModel + ?Sized>(
    model: &mut G,
    opt: &mut AdamW,
    plan: Plan,
    batches: &mut [&mut dyn Batches<G::Batch>],
    observers: &mut [&mut dyn Observer<G::Stats>],
) -> Result<Vec<MemberResult<G::Stats>>, NnError> {
    train_group_span(model, opt, plan, 0..plan.steps(), batches, observers)
}

/// [`train_group`] over the steps `span` of `plan` (see [`train_span`]): every member starts
/// at `span.start`, from the state the caller restored.
pub fn train_group_span<G: GroupModel + ?Sized>(
    model: &mut G,
    opt: &mut AdamW,
    plan: Plan,
    span: Range<usize>,
    batches: &mut [&mut dyn Batches<G::Batch>],
    observers: &mut [&mut dyn Observer<G::Stats>],
) -> Result<Vec<MemberResult<G::Stats>>, NnError> {
    let k = model.members();
    assert!(
        batches.len() == k && observers.len() == k && opt.hypers().len() == k,
        "one batch source, observer and replica per member"
    );
    let steps = plan.steps();
    let at_boundary = |s: usize| match plan {
        Plan::Epochs { per_epoch, .. } => s.is_multiple_of(per_epoch.max(1)) || s == steps,
        Plan::Steps(_) => true,
    };
    if span.start > span.end
        || span.end > steps
        || !at_boundary(span.start)
        || !at_boundary(span.end)
    {
        return Err(NnError::InvalidConfig(format!(
            "cannot train steps {}..{} of a plan of {steps} steps ({plan:?})",
            span.start, span.end
        )));
    }
    let mut members: Vec<Member<G::Stats>> = (0..k)
        .map(|_| Member {
            logs: Vec::with_capacity(span.len()),
            epoch: (0.0, 0.0, G::Stats::default()),
            ended: None,
        })
        .collect();
    let mut grad = Vec::new();
    let mut live = vec![true; k];
    for step in span {
        for (m, member) in members.iter_mut().enumerate() {
            if live[m] && observers[m].cancelled() {
                member.ended = Some(NnError::Cancelled);
                live[m] = false;
            }
        }
        if !live.contains(&true) {
            break;
        }
        // A member's batch source failing stops that member; the others still step.
        let mut drawn: Vec<Option<&G::Batch>> = Vec::with_capacity(k);
        for (m, source) in batches.iter_mut().enumerate() {
            if !live[m] {
                drawn.push(None);
                continue;
            }
            match source.batch(step) {
                Ok(b) => drawn.push(Some(b)),
                Err(e) => {
                    members[m].ended = Some(e);
                    live[m] = false;
                    drawn.push(None);
                }
            }
        }
        // A stopped member's slot gets any live member's batch: the model skips it.
        let Some(filler) = drawn.iter().flatten().next().copied() else {
            break;
        };
        let drawn: Vec<&G::Batch> = drawn.iter().map(|b| b.unwrap_or(filler)).collect();
        let losses = model.loss_and_grad(&drawn, &live, &mut grad)?;
        let norms = model.grad_norms(&grad, opt);
        let mut means = vec![0.0f32; k];
        for m in 0..k {
            if !live[m] {
                continue;
            }
            let (loss, norm) = (&losses[m], norms[m]);
            if loss.weight <= 0.0 {
                members[m].ended = Some(NnError::InvalidData(format!(
                    "the batch of step {} has no position with a positive loss weight",
                    step + 1
                )));
                live[m] = false;
                continue;
            }
            let mean = (loss.sum / loss.weight) as f32;
            means[m] = mean;
            if !mean.is_finite() || !norm.is_finite() {
                members[m].ended = Some(match plan {
                    Plan::Epochs { per_epoch, .. } => NnError::NonFinite {
                        epoch: step / per_epoch + 1,
                        batch: step % per_epoch + 1,
                        loss: if loss.sum.is_finite() {
                            mean
                        } else {
                            loss.sum as f32
                        },
                        grad_norm: norm,
                    },
                    Plan::Steps(_) => NnError::NonFiniteStep {
                        step: step + 1,
                        loss: mean,
                        grad_norm: norm,
                    },
                });
                live[m] = false;
            }
        }
        if !live.contains(&true) {
            break;
        }
        let mut updates = Vec::new();
        model.update(&mut |p| updates = opt.update_live(step, p, &mut grad, &norms, &live))?;
        let lrs: Vec<f32> = updates.iter().map(|u| u.lr).collect();
        model.constrain(&lrs, &live)?;
        for (m, member) in members.iter_mut().enumerate() {
            if !live[m] {
                continue;
            }
            let loss = &losses[m];
            let log = StepLog {
                step: step + 1,
                steps,
                loss: means[m],
                lr: updates[m].lr,
                grad_norm: updates[m].grad_norm,
                stats: loss.stats,
            };
            let flow = observers[m].on_step(&log);
            member.logs.push(log);
            if flow.is_break() {
                member.ended = Some(NnError::Cancelled);
                live[m] = false;
                continue;
            }
            if let Plan::Epochs { epochs, per_epoch } = plan {
                member.epoch.0 += loss.sum;
                member.epoch.1 += loss.weight;
                member.epoch.2.add(&loss.stats);
                if (step + 1) % per_epoch == 0 {
                    let (sum, weight, stats) = std::mem::take(&mut member.epoch);
                    let log = EpochLog {
                        epoch: (step + 1) / per_epoch,
                        epochs,
                        loss: (sum / weight) as f32,
                        weight,
                        stats,
                    };
                    if observers[m].on_epoch(&log).is_break() {
                        member.ended = Some(NnError::Cancelled);
                        live[m] = false;
                    }
                }
            }
        }
    }
    Ok(members
        .into_iter()
        .map(|m| match m.ended {
            Some(e) => Err(e),
            None => Ok(m.logs),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamConfig, DecayAt, Hyper, Schedule};
    use crate::store::{Init, Layout};

    /// `loss = (w − target)²` over a batch of targets: one parameter, a gradient by hand, and a
    /// counter of examples as its stats. A NaN target poisons the gradient alone.
    struct Quadratic {
        w: Vec<f32>,
    }

    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    struct Seen(usize);

    impl Stats for Seen {
        fn add(&mut self, other: &Self) {
            self.0 += other.0;
        }
    }

    impl Model for Quadratic {
        type Batch = [f32];
        type Stats = Seen;

        fn loss_and_grad(
            &mut self,
            batch: &[f32],
            grad: &mut Vec<f32>,
        ) -> Result<Loss<Seen>, NnError> {
            let w = self.w[0];
            let sum: f64 = batch
                .iter()
                .filter(|t| !t.is_nan())
                .map(|t| f64::from((w - t) * (w - t)))
                .sum();
            let g: f32 = batch.iter().map(|t| 2.0 * (w - t)).sum::<f32>() / batch.len() as f32;
            *grad = vec![g];
            Ok(Loss {
                sum,
                weight: batch.len() as f64,
                stats: Seen(batch.len()),
            })
        }

        fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
            f(&mut self.w);
            Ok(())
        }

        fn params(&mut self) -> Result<Vec<f32>, NnError> {
            Ok(self.w.clone())
        }
    }

    struct Targets(Vec<Vec<f32>>);

    impl Batches<[f32]> for Targets {
        fn batch(&mut self, step: usize) -> Result<&[f32], NnError> {
            Ok(&self.0[step % self.0.len()])
        }
    }

    #[derive(Default)]
    struct Record {
        steps: Vec<StepLog<Seen>>,
        epochs: Vec<EpochLog<Seen>>,
        stop_at: Option<usize>,
    }

    impl Observer<Seen> for Record {
        fn on_step(&mut self, log: &StepLog<Seen>) -> ControlFlow<()> {
            self.steps.push(*log);
            if self.stop_at == Some(log.step) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn on_epoch(&mut self, log: &EpochLog<Seen>) -> ControlFlow<()> {
            self.epochs.push(*log);
            ControlFlow::Continue(())
        }
    }

    fn adam(lr: f32) -> AdamW {
        let mut layout = Layout::new();
        layout.push("w", &[1], Init::Zeros, false);
        let config = AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decay_at: DecayAt::BeforeUpdate,
        };
        let hyper = Hyper {
            schedule: Schedule::Constant(lr),
            weight_decay: 0.0,
            clip: f32::INFINITY,
        };
        AdamW::new(config, &layout, vec![hyper])
    }

    #[test]
    fn the_loop_descends_and_reports_steps_and_epochs() {
        let mut model = Quadratic { w: vec![0.0] };
        let mut data = Targets(vec![vec![1.0, 3.0], vec![2.0]]);
        let mut rec = Record::default();
        let plan = Plan::Epochs {
            epochs: 30,
            per_epoch: 2,
        };
        let logs = train(&mut model, &mut adam(0.1), plan, &mut data, &mut rec).unwrap();
        assert_eq!(logs.len(), 60);
        assert_eq!(rec.steps, logs);
        assert_eq!((logs[0].step, logs[0].steps, logs[0].loss), (1, 60, 5.0));
        assert_eq!(rec.epochs.len(), 30);
        let first = rec.epochs[0];
        // (1 + 9) at w = 0, then (2 − w₁)² after one Adam step of 0.1: w₁ = 0.1
        let want = ((1.0 + 9.0) + f64::from((2.0f32 - 0.1) * (2.0 - 0.1))) / 3.0;
        assert!((f64::from(first.loss) - want).abs() < 1e-5, "{first:?}");
        assert_eq!(
            (first.epoch, first.epochs, first.weight, first.stats),
            (1, 30, 3.0, Seen(3))
        );
        assert!((model.w[0] - 2.0).abs() < 0.2, "{:?}", model.w);
        assert!(rec.epochs[29].loss < first.loss);
    }

    #[test]
    fn a_non_finite_gradient_or_loss_stops_training_and_says_which() {
        let plan = Plan::Epochs {
            epochs: 1,
            per_epoch: 2,
        };
        // A finite loss with a NaN gradient: the second batch of the first epoch.
        let mut model = Quadratic { w: vec![0.0] };
        let mut data = Targets(vec![vec![1.0], vec![1.0, f32::NAN]]);
        let e = train(&mut model, &mut adam(0.1), plan, &mut data, &mut NoObserver).unwrap_err();
        assert!(
            matches!(e, NnError::NonFinite { epoch: 1, batch: 2, loss, .. } if loss.is_finite()),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "training diverged: the gradient norm became NaN at epoch 1, batch 2 (try a smaller learning rate)"
        );
        let mut data = Targets(vec![vec![1.0], vec![f32::INFINITY]]);
        let e = train(
            &mut model,
            &mut adam(0.1),
            Plan::Steps(2),
            &mut data,
            &mut NoObserver,
        )
        .unwrap_err();
        assert!(matches!(e, NnError::NonFiniteStep { step: 2, .. }), "{e:?}");
    }

    #[test]
    fn an_observer_stops_training() {
        let mut model = Quadratic { w: vec![0.0] };
        let mut rec = Record {
            stop_at: Some(3),
            ..Record::default()
        };
        let mut data = Targets(vec![vec![1.0]]);
        let e = train(
            &mut model,
            &mut adam(0.1),
            Plan::Steps(10),
            &mut data,
            &mut rec,
        )
        .unwrap_err();
        assert!(matches!(e, NnError::Cancelled));
        assert_eq!(rec.steps.len(), 3);
    }

    #[test]
    fn training_in_spans_from_a_restored_state_equals_one_run() {
        let plan = Plan::Epochs {
            epochs: 4,
            per_epoch: 2,
        };
        let data = || Targets(vec![vec![1.0, 3.0], vec![2.0]]);
        let mut whole = Quadratic { w: vec![0.0] };
        let want = train(
            &mut whole,
            &mut adam(0.1),
            plan,
            &mut data(),
            &mut NoObserver,
        )
        .unwrap();
        // 0..2, then 2..6, then 6..8, each from a fresh model and optimizer given the state
        let (mut w, mut state, mut logs) = (vec![0.0], None, Vec::new());
        for span in [0..2, 2..6, 6..8] {
            let mut model = Quadratic { w: w.clone() };
            let mut opt = adam(0.1);
            if let Some(s) = &state {
                opt.restore(0, s).unwrap();
            }
            let mut rec = Record::default();
            logs.extend(
                train_span(&mut model, &mut opt, plan, span, &mut data(), &mut rec).unwrap(),
            );
            w = model.w;
            state = Some(opt.state(0));
        }
        assert_eq!(logs, want);
        assert_eq!(w[0].to_bits(), whole.w[0].to_bits());
        // a span that cuts an epoch is refused
        let e = train_span(
            &mut whole,
            &mut adam(0.1),
            plan,
            1..4,
            &mut data(),
            &mut NoObserver,
        )
        .unwrap_err();
        assert!(matches!(e, NnError::InvalidConfig(_)), "{e:?}");
    }

    /// [`Quadratic`] for several members at once, one parameter each.
    struct Quadratics {
        w: Vec<f32>,
        computed: Vec<usize>,
    }

    impl GroupModel for Quadratics {
        type Batch = [f32];
        type Stats = Seen;

        fn members(&self) -> usize {
            self.w.len()
        }

        fn loss_and_grad(
            &mut self,
            batches: &[&[f32]],
            live: &[bool],
            grad: &mut Vec<f32>,
        ) -> Result<Vec<Loss<Seen>>, NnError> {
            grad.resize(self.w.len(), f32::NAN);
            let mut out = Vec::new();
            for m in 0..self.w.len() {
                if !live[m] {
                    out.push(Loss::default());
                    continue;
                }
                self.computed[m] += 1;
                let mut one = Quadratic { w: vec![self.w[m]] };
                let mut g = Vec::new();
                out.push(one.loss_and_grad(batches[m], &mut g)?);
                grad[m] = g[0];
            }
            Ok(out)
        }

        fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
            f(&mut self.w);
            Ok(())
        }

        fn params(&mut self, m: usize) -> Result<Vec<f32>, NnError> {
            Ok(vec![self.w[m]])
        }
    }

    #[test]
    fn a_group_trains_each_member_as_alone_and_a_diverging_member_fails_alone() {
        let plan = Plan::Epochs {
            epochs: 3,
            per_epoch: 2,
        };
        let data = [
            vec![vec![1.0, 3.0], vec![2.0]],
            // diverges at epoch 2, batch 1 (a NaN target poisons the gradient)
            vec![vec![1.0], vec![2.0], vec![f32::NAN], vec![1.0]],
            vec![vec![-1.0], vec![4.0, 0.5]],
        ];
        let lrs = [0.1, 0.2, 0.05];
        let mut group = Quadratics {
            w: vec![0.0; 3],
            computed: vec![0; 3],
        };
        let mut config_layout = Layout::new();
        config_layout.push("w", &[1], Init::Zeros, false);
        let hypers = lrs
            .iter()
            .map(|&lr| Hyper {
                schedule: Schedule::Constant(lr),
                weight_decay: 0.0,
                clip: f32::INFINITY,
            })
            .collect();
        let mut opt = AdamW::new(*adam(0.0).config(), &config_layout, hypers);
        let mut sources: Vec<Targets> = data.iter().map(|d| Targets(d.clone())).collect();
        let mut recs: Vec<Record> = (0..3).map(|_| Record::default()).collect();
        let mut b: Vec<&mut dyn Batches<[f32]>> = sources
            .iter_mut()
            .map(|s| s as &mut dyn Batches<[f32]>)
            .collect();
        let mut o: Vec<&mut dyn Observer<Seen>> = recs
            .iter_mut()
            .map(|r| r as &mut dyn Observer<Seen>)
            .collect();
        let out = train_group(&mut group, &mut opt, plan, &mut b, &mut o).unwrap();
        for m in 0..3 {
            let mut alone = Quadratic { w: vec![0.0] };
            let mut rec = Record::default();
            let want = train(
                &mut alone,
                &mut adam(lrs[m]),
                plan,
                &mut Targets(data[m].clone()),
                &mut rec,
            );
            match (&out[m], want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, &want, "member {m}");
                    assert_eq!(group.w[m].to_bits(), alone.w[0].to_bits(), "member {m}");
                }
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
                (got, want) => panic!("member {m}: {got:?} vs {want:?}"),
            }
            assert_eq!(recs[m].steps, rec.steps, "member {m}");
            assert_eq!(recs[m].epochs, rec.epochs, "member {m}");
        }
        assert!(matches!(
            out[1],
            Err(NnError::NonFinite {
                epoch: 2,
                batch: 1,
                ..
            })
        ));
        // The diverged member is not computed after it stopped.
        assert_eq!(group.computed, vec![6, 3, 6]);
    }
}
