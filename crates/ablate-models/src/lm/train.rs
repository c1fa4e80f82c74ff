//! Training a language model through the core's loop ([`ablate_nn::train`]): AdamW with
//! warm-up, cosine decay and gradient clipping, on the CPU path or the dfdx path, one batch per
//! step from the caller.

use ablate_nn::{
    AdamConfig, AdamW, Batches, DecayAt, Hyper, Kind, Loss, Model, Observer, Plan, Runtime,
    StepLog, TrainState, catching,
};

use super::Batch;
use super::config::{LmConfig, LmTrainConfig};
use super::cpu::{Runner, check_batch, with_runner};
use super::layout::LmLayout;
use super::model::Lm;
use super::tensor::tensor_loss_and_grad;
use crate::{Backend, ExecOptions, NnError};

pub(super) fn validate(train: &LmTrainConfig, threads: usize) -> Result<(), NnError> {
    let bad = |m: String| Err(NnError::InvalidConfig(m));
    if train.steps == 0 {
        return bad("`steps` must be at least 1".into());
    }
    if train.batch == 0 {
        return bad("`batch` must be at least 1".into());
    }
    if !(train.lr.is_finite() && train.lr > 0.0) {
        return bad(format!("`lr` must be a positive number, not {}", train.lr));
    }
    if !(train.weight_decay.is_finite() && train.weight_decay >= 0.0) {
        return bad(format!(
            "`weight_decay` must be a non-negative number, not {}",
            train.weight_decay
        ));
    }
    if train.clip.is_nan() || train.clip <= 0.0 {
        return bad(format!(
            "`clip` must be positive (infinite: no clipping), not {}",
            train.clip
        ));
    }
    if threads == 0 {
        return bad("`threads` must be at least 1".into());
    }
    Ok(())
}

/// Trains a fresh model (initialised from `train.seed`) for `train.steps` steps on
/// `batches(step)` (0-based step; each batch is checked against `cfg`), with AdamW
/// (β = 0.9, 0.98, ε = 1e-8, bias-corrected; weight decay `lr·weight_decay·p` on the weight
/// matrices and embeddings only, before the update), the gradient's global norm clipped to
/// `train.clip` first, and the learning rate `train.lr_at(step)`.
///
/// Deterministic: the same inputs give bit-identical parameters and logs, whatever `threads`
/// (batches are cut into shards by their shape alone and shard gradients summed in order).
pub fn train_lm(
    cfg: &LmConfig,
    train: &LmTrainConfig,
    threads: usize,
    batches: &mut dyn FnMut(usize) -> Batch,
    observer: &mut dyn Observer<()>,
) -> Result<(Lm, Vec<StepLog<()>>), NnError> {
    let exec = ExecOptions {
        threads,
        backend: Backend::Cpu,
    };
    train_lm_with(cfg, train, &exec, batches, observer)
}

/// [`train_lm`] on a chosen backend: [`Backend::Cpu`] (the CPU kernels, `exec.threads`
/// threads) or [`Backend::Dfdx`] (dfdx tensor ops on dfdx's `Cpu` device — the device-generic
/// path a CUDA build takes; the same updates, equal to the CPU path within rounding).
pub fn train_lm_with(
    cfg: &LmConfig,
    train: &LmTrainConfig,
    exec: &ExecOptions,
    batches: &mut dyn FnMut(usize) -> Batch,
    observer: &mut dyn Observer<()>,
) -> Result<(Lm, Vec<StepLog<()>>), NnError> {
    let span = LmSpan::whole(train);
    let (lm, logs, _) = train_lm_span(cfg, train, exec, span, batches, observer)?;
    Ok((lm, logs))
}

/// Where a language model's training starts and stops (early stopping, #24): from scratch or
/// a [`TrainState`], to the end of step `stop` (1-based; `train.steps` for the whole run).
#[derive(Clone, Copy, Debug)]
pub struct LmSpan<'a> {
    pub from: Option<&'a TrainState>,
    pub stop: usize,
}

impl LmSpan<'_> {
    pub fn whole(train: &LmTrainConfig) -> LmSpan<'static> {
        LmSpan {
            from: None,
            stop: train.steps,
        }
    }

    /// The steps it trains (0-based), checked against a run of `steps`.
    pub(super) fn steps(&self, steps: usize) -> Result<std::ops::Range<usize>, NnError> {
        let start = self.from.map_or(0, |s| s.step);
        if start > self.stop || self.stop > steps {
            return Err(NnError::InvalidConfig(format!(
                "cannot resume at step {start} and stop after step {} of {steps}",
                self.stop
            )));
        }
        Ok(start..self.stop)
    }
}

/// The parameters a run starts from: the seeded initialisation, or the resumed state's.
pub(super) fn start_params(
    layout: &LmLayout,
    train: &LmTrainConfig,
    from: Option<&TrainState>,
) -> Result<Vec<f32>, NnError> {
    TrainState::start_params(from, layout.total(), || layout.init(train.seed))
}

/// [`train_lm_with`] over `span` only. `batches` is called for the span's steps (the caller's
/// stream must stand where the span starts). Returns the model and the span's log, and the
/// state a later span resumes from: spans that follow one another give, bit for bit on one
/// backend, what the whole run gives.
pub fn train_lm_span(
    cfg: &LmConfig,
    train: &LmTrainConfig,
    exec: &ExecOptions,
    span: LmSpan<'_>,
    batches: &mut dyn FnMut(usize) -> Batch,
    observer: &mut dyn Observer<()>,
) -> Result<(Lm, Vec<StepLog<()>>, TrainState), NnError> {
    cfg.validate()?;
    exec.validate()?;
    validate(train, exec.threads)?;
    let layout = LmLayout::new(cfg);
    let init = start_params(&layout, train, span.from)?;
    let mut batches = Calls {
        next: batches,
        last: None,
    };
    let mut opt = optimizer(&layout, train);
    if let Some(from) = span.from {
        opt.restore(0, &from.adam)?;
    }
    let plan = Plan::Steps(train.steps);
    let steps = span.steps(train.steps)?;
    let stop = steps.end;
    let (params, logs) = match Runtime::open(exec)?.into_kind() {
        Kind::Cpu { threads } => with_runner(cfg, &layout, init, threads, |runner| {
            let mut model = CpuLm { cfg, runner };
            let logs =
                ablate_nn::train_span(&mut model, &mut opt, plan, steps, &mut batches, observer)?;
            Ok::<_, NnError>((std::mem::take(&mut *model.runner.params_mut()), logs))
        })?,
        Kind::Dfdx(dev) => catching(|| {
            let mut model = TensorLm::new(dev, cfg, &layout, init);
            let logs =
                ablate_nn::train_span(&mut model, &mut opt, plan, steps, &mut batches, observer)?;
            Ok((model.params, logs))
        })?,
        #[cfg(feature = "cuda")]
        Kind::Cuda { dev, .. } => catching(|| {
            let mut model = TensorLm::new(dev, cfg, &layout, init);
            let logs =
                ablate_nn::train_span(&mut model, &mut opt, plan, steps, &mut batches, observer)?;
            Ok((model.params, logs))
        })?,
    };
    let state = TrainState {
        step: stop,
        params: params.clone(),
        adam: opt.state(0),
    };
    Ok((Lm::from_parts(cfg.clone(), params)?, logs, state))
}

/// The language models' optimizer: AdamW (β 0.9, 0.98, ε 1e-8; decay before the update, on
/// the weight matrices and embeddings), warm-up and cosine schedule, clipping at `clip`.
fn optimizer(layout: &LmLayout, train: &LmTrainConfig) -> AdamW {
    AdamW::new(adam(), &layout.store, vec![hyper(train)])
}

pub(super) fn adam() -> AdamConfig {
    AdamConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-8,
        decay_at: DecayAt::BeforeUpdate,
    }
}

/// One model's replica of the optimizer: its schedule, decay and clipping.
pub(super) fn hyper(train: &LmTrainConfig) -> Hyper {
    Hyper {
        schedule: train.schedule(),
        weight_decay: train.weight_decay,
        clip: train.clip,
    }
}

/// The caller's batch function as the core's [`Batches`].
struct Calls<'f> {
    next: &'f mut dyn FnMut(usize) -> Batch,
    last: Option<Batch>,
}

impl Batches<Batch> for Calls<'_> {
    fn batch(&mut self, step: usize) -> Result<&Batch, NnError> {
        Ok(self.last.insert((self.next)(step)))
    }
}

/// The CPU path as a [`Model`].
struct CpuLm<'r, 'a> {
    cfg: &'r LmConfig,
    runner: &'r mut Runner<'a>,
}

impl Model for CpuLm<'_, '_> {
    type Batch = Batch;
    type Stats = ();

    fn loss_and_grad(&mut self, batch: &Batch, grad: &mut Vec<f32>) -> Result<Loss<()>, NnError> {
        check_batch(self.cfg, batch)?;
        let (sum, weight) = self.runner.loss_and_grad(batch, grad);
        Ok(Loss {
            sum,
            weight,
            stats: (),
        })
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self.runner.params_mut());
        Ok(())
    }

    fn params(&mut self) -> Result<Vec<f32>, NnError> {
        Ok(self.runner.params_mut().clone())
    }
}

/// The dfdx path as a [`Model`]: parameters on the host, sent to the device once per step.
struct TensorLm<'a, D> {
    dev: D,
    cfg: &'a LmConfig,
    layout: &'a LmLayout,
    params: Vec<f32>,
}

impl<'a, D> TensorLm<'a, D> {
    fn new(dev: D, cfg: &'a LmConfig, layout: &'a LmLayout, params: Vec<f32>) -> Self {
        TensorLm {
            dev,
            cfg,
            layout,
            params,
        }
    }
}

impl<D: dfdx::tensor_ops::Device<f32>> Model for TensorLm<'_, D> {
    type Batch = Batch;
    type Stats = ();

    fn loss_and_grad(&mut self, batch: &Batch, grad: &mut Vec<f32>) -> Result<Loss<()>, NnError> {
        check_batch(self.cfg, batch)?;
        tensor_loss(&self.dev, self.cfg, self.layout, &self.params, batch, grad)
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self.params);
        Ok(())
    }

    fn params(&mut self) -> Result<Vec<f32>, NnError> {
        Ok(self.params.clone())
    }
}

/// The loss of a checked `batch` on the dfdx path and, in `grad`, its gradient (left as it was
/// when no position has a positive weight: the loop stops the model then).
pub(super) fn tensor_loss<D: dfdx::tensor_ops::Device<f32>>(
    dev: &D,
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
    grad: &mut Vec<f32>,
) -> Result<Loss<()>, NnError> {
    let weight: f64 = batch.weights.iter().map(|&w| f64::from(w)).sum();
    if weight <= 0.0 {
        return Ok(Loss {
            sum: 0.0,
            weight,
            stats: (),
        });
    }
    let (loss, g) = tensor_loss_and_grad(dev, cfg, layout, params, batch)?;
    *grad = g;
    Ok(Loss {
        sum: f64::from(loss) * weight,
        weight,
        stats: (),
    })
}

#[cfg(test)]
pub(crate) mod tests;
