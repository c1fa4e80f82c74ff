//! Training a language model: AdamW with warm-up, cosine decay and gradient clipping, on the
//! CPU path or the dfdx path, one batch per step from the caller.

use std::ops::ControlFlow;

use super::Batch;
use super::config::{LmConfig, LmTrainConfig};
use super::cpu::{check_batch, with_runner};
use super::layout::LmLayout;
use super::model::Lm;
use super::tensor::tensor_loss_and_grad;
use crate::error::catching;
use crate::kernels::{self, AdamStep};
use crate::runtime::{Kind, Runtime};
use crate::{Backend, EngineError, ExecOptions};

/// AdamW's constants ([`LmTrainConfig`]).
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.98;
const EPS: f32 = 1e-8;

/// Progress after one step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLog {
    /// 1-based.
    pub step: usize,
    /// The batch's loss `Σ w·nll / Σ w` before the update.
    pub loss: f32,
    /// The learning rate the update used.
    pub lr: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

/// Receives training progress; the library never prints.
pub trait LmObserver {
    /// Called after every step (`steps` in all); `Break` stops training with
    /// `EngineError::Cancelled`.
    fn on_step(&mut self, log: &StepLog, steps: usize) -> ControlFlow<()>;
    /// Polled before every step (Ctrl-C); default false.
    fn cancelled(&self) -> bool {
        false
    }
}

fn validate(train: &LmTrainConfig, threads: usize) -> Result<(), EngineError> {
    let bad = |m: String| Err(EngineError::InvalidConfig(m));
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
/// matrices and embeddings only), the gradient's global norm clipped to `train.clip` first,
/// and the learning rate `train.lr_at(step)`.
///
/// Deterministic: the same inputs give bit-identical parameters and logs, whatever `threads`
/// (batches are cut into shards by their shape alone and shard gradients summed in order).
pub fn train_lm(
    cfg: &LmConfig,
    train: &LmTrainConfig,
    threads: usize,
    batches: &mut dyn FnMut(usize) -> Batch,
    observer: &mut dyn LmObserver,
) -> Result<(Lm, Vec<StepLog>), EngineError> {
    let exec = ExecOptions {
        threads,
        backend: Backend::Cpu,
    };
    train_lm_with(cfg, train, &exec, batches, observer)
}

/// [`train_lm`] on a chosen backend: [`Backend::Cpu`] (this crate's kernels, `exec.threads`
/// threads) or [`Backend::Dfdx`] (dfdx tensor ops on dfdx's `Cpu` device — the device-generic
/// path a CUDA build takes; the same updates, equal to the CPU path within rounding).
pub fn train_lm_with(
    cfg: &LmConfig,
    train: &LmTrainConfig,
    exec: &ExecOptions,
    batches: &mut dyn FnMut(usize) -> Batch,
    observer: &mut dyn LmObserver,
) -> Result<(Lm, Vec<StepLog>), EngineError> {
    cfg.validate()?;
    exec.validate()?;
    validate(train, exec.threads)?;
    let layout = LmLayout::new(cfg);
    let init = layout.init(train.seed);
    let mut logs = Vec::with_capacity(train.steps);
    let params = match Runtime::open(exec)?.kind {
        Kind::Cpu { threads } => with_runner(cfg, &layout, init, threads, |runner| {
            run_steps(cfg, train, &layout, runner, batches, observer, &mut logs)?;
            Ok::<_, EngineError>(std::mem::take(&mut *runner.params_mut()))
        })?,
        Kind::Dfdx(dev) => {
            catching(|| on_tensors(dev, cfg, train, &layout, init, batches, observer, &mut logs))?
        }
        #[cfg(feature = "cuda")]
        Kind::Cuda { dev, .. } => {
            catching(|| on_tensors(dev, cfg, train, &layout, init, batches, observer, &mut logs))?
        }
    };
    Ok((Lm::from_parts(cfg.clone(), params)?, logs))
}

/// The training steps on dfdx's device `dev`; returns the trained parameters.
#[allow(clippy::too_many_arguments)]
fn on_tensors<D: dfdx::tensor_ops::Device<f32>>(
    dev: D,
    cfg: &LmConfig,
    train: &LmTrainConfig,
    layout: &LmLayout,
    init: Vec<f32>,
    batches: &mut dyn FnMut(usize) -> Batch,
    observer: &mut dyn LmObserver,
    logs: &mut Vec<StepLog>,
) -> Result<Vec<f32>, EngineError> {
    let mut source = TensorSource {
        dev,
        cfg,
        layout,
        params: init,
    };
    run_steps(cfg, train, layout, &mut source, batches, observer, logs)?;
    Ok(source.params)
}

/// Where a training step's gradient comes from, and the parameters it updates.
trait GradSource {
    /// `(Σ w·nll, Σ w)` of a checked batch and the gradient of `Σ w·nll / Σ w` in `grad`.
    fn loss_and_grad(
        &mut self,
        batch: &Batch,
        grad: &mut Vec<f32>,
    ) -> Result<(f64, f64), EngineError>;
    fn update(&mut self, f: &mut dyn FnMut(&mut [f32]));
}

impl GradSource for super::cpu::Runner<'_> {
    fn loss_and_grad(
        &mut self,
        batch: &Batch,
        grad: &mut Vec<f32>,
    ) -> Result<(f64, f64), EngineError> {
        Ok(super::cpu::Runner::loss_and_grad(self, batch, grad))
    }
    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        f(&mut self.params_mut())
    }
}

/// The dfdx path as a [`GradSource`].
struct TensorSource<'a, D> {
    dev: D,
    cfg: &'a LmConfig,
    layout: &'a LmLayout,
    params: Vec<f32>,
}

impl<D: dfdx::tensor_ops::Device<f32>> GradSource for TensorSource<'_, D> {
    fn loss_and_grad(
        &mut self,
        batch: &Batch,
        grad: &mut Vec<f32>,
    ) -> Result<(f64, f64), EngineError> {
        let wsum: f64 = batch.weights.iter().map(|&w| f64::from(w)).sum();
        if wsum <= 0.0 {
            return Ok((0.0, wsum));
        }
        let (loss, g) =
            tensor_loss_and_grad(&self.dev, self.cfg, self.layout, &self.params, batch)?;
        *grad = g;
        Ok((f64::from(loss) * wsum, wsum))
    }
    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        f(&mut self.params)
    }
}

/// The training loop shared by the backends.
fn run_steps(
    cfg: &LmConfig,
    train: &LmTrainConfig,
    layout: &LmLayout,
    source: &mut dyn GradSource,
    batches: &mut dyn FnMut(usize) -> Batch,
    observer: &mut dyn LmObserver,
    logs: &mut Vec<StepLog>,
) -> Result<(), EngineError> {
    let n = layout.total;
    let decayed: Vec<_> = layout.decayed().map(|s| s.range()).collect();
    let (mut m, mut v, mut grad) = (vec![0.0f32; n], vec![0.0f32; n], Vec::new());
    for step in 0..train.steps {
        if observer.cancelled() {
            return Err(EngineError::Cancelled);
        }
        let batch = batches(step);
        check_batch(cfg, &batch)?;
        let (loss_sum, wsum) = source.loss_and_grad(&batch, &mut grad)?;
        if wsum <= 0.0 {
            return Err(EngineError::InvalidData(format!(
                "the batch of step {} has no position with a positive loss weight",
                step + 1
            )));
        }
        let loss = (loss_sum / wsum) as f32;
        let norm = grad
            .iter()
            .map(|&g| g as f64 * g as f64)
            .sum::<f64>()
            .sqrt() as f32;
        if !loss.is_finite() || !norm.is_finite() {
            return Err(EngineError::NonFiniteStep {
                step: step + 1,
                loss,
                grad_norm: norm,
            });
        }
        if norm > train.clip {
            kernels::scale(&mut grad, train.clip / norm);
        }
        let lr = train.lr_at(step);
        let adam = adam_step(lr, step as u64 + 1);
        source.update(&mut |p| {
            let keep = 1.0 - lr * train.weight_decay;
            if keep != 1.0 {
                for r in &decayed {
                    kernels::scale(&mut p[r.clone()], keep);
                }
            }
            kernels::adam(p, &mut m, &mut v, &grad, adam);
        });
        let log = StepLog {
            step: step + 1,
            loss,
            lr,
            grad_norm: norm,
        };
        let flow = observer.on_step(&log, train.steps);
        logs.push(log);
        if flow.is_break() {
            return Err(EngineError::Cancelled);
        }
    }
    Ok(())
}

/// Update `t` (1-based) at learning rate `lr`, with this module's β2.
fn adam_step(lr: f32, t: u64) -> AdamStep {
    let t = t.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - (BETA1 as f64).powi(t);
    let bc2 = 1.0 - (BETA2 as f64).powi(t);
    AdamStep {
        beta1: BETA1,
        beta2: BETA2,
        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        eps: EPS,
        step: (lr as f64 / bc1) as f32,
    }
}

#[cfg(test)]
pub(crate) mod tests;
