//! The one training loop: a [`Model`] (forward, loss and gradient of a batch; its parameters),
//! batches from a [`Batches`] source, one [`AdamW`] step per batch, progress to one
//! [`Observer`]. Both model families run through it on every backend.

use std::ops::ControlFlow;

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
    let steps = plan.steps();
    let mut logs = Vec::with_capacity(steps);
    let mut grad = Vec::new();
    let mut epoch = (0.0f64, 0.0f64, M::Stats::default());
    for step in 0..steps {
        if observer.cancelled() {
            return Err(NnError::Cancelled);
        }
        let batch = batches.batch(step)?;
        let loss = model.loss_and_grad(batch, &mut grad)?;
        if loss.weight <= 0.0 {
            return Err(NnError::InvalidData(format!(
                "the batch of step {} has no position with a positive loss weight",
                step + 1
            )));
        }
        let mean = (loss.sum / loss.weight) as f32;
        let norms = opt.grad_norms(&grad);
        let norm = norms[0];
        if !mean.is_finite() || !norm.is_finite() {
            return Err(match plan {
                Plan::Epochs { per_epoch, .. } => NnError::NonFinite {
                    epoch: step / per_epoch + 1,
                    batch: step % per_epoch + 1,
                    loss: if loss.sum.is_finite() {
                        mean
                    } else {
                        loss.sum as f32
                    },
                },
                Plan::Steps(_) => NnError::NonFiniteStep {
                    step: step + 1,
                    loss: mean,
                    grad_norm: norm,
                },
            });
        }
        let mut update = None;
        model.update(&mut |p| update = Some(opt.update(step, p, &mut grad, &norms)[0]))?;
        let update = update.expect("the model ran the update");
        model.constrain(update.lr)?;
        let log = StepLog {
            step: step + 1,
            steps,
            loss: mean,
            lr: update.lr,
            grad_norm: update.grad_norm,
            stats: loss.stats,
        };
        let flow = observer.on_step(&log);
        logs.push(log);
        if flow.is_break() {
            return Err(NnError::Cancelled);
        }
        if let Plan::Epochs { epochs, per_epoch } = plan {
            epoch.0 += loss.sum;
            epoch.1 += loss.weight;
            epoch.2.add(&loss.stats);
            if (step + 1) % per_epoch == 0 {
                let (sum, weight, stats) = std::mem::take(&mut epoch);
                let log = EpochLog {
                    epoch: (step + 1) / per_epoch,
                    epochs,
                    loss: (sum / weight) as f32,
                    weight,
                    stats,
                };
                if observer.on_epoch(&log).is_break() {
                    return Err(NnError::Cancelled);
                }
            }
        }
    }
    Ok(logs)
}
