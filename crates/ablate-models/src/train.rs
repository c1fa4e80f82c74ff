//! The training loop, shared by both backends: seeded init, per-epoch shuffles, minibatches,
//! divergence and cancellation checks, progress through [`TrainObserver`].

use std::ops::ControlFlow;

use dfdx::tensor_ops::Device;

use crate::cpu::{BatchStats, with_cpu_trainer};
use crate::error::catching;
use crate::params::{Layout, STREAM_SHUFFLE};
use crate::rng::SplitMix64;
use crate::runtime::{Kind, Runtime};
use crate::tensor::TensorTrainer;
use crate::{Dataset, EngineError, ExecOptions, Flow, FlowConfig, TrainConfig};

/// Progress after one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    /// Mean training loss over the epoch's batches, weighted by example.
    pub loss: f32,
    /// Training accuracy over the epoch (each example scored when its batch ran).
    pub acc: f32,
}

/// Receives training progress; the library never prints.
pub trait TrainObserver {
    /// Called after every epoch; `Break` stops training with `EngineError::Cancelled`.
    fn on_epoch(&mut self, report: &EpochReport) -> ControlFlow<()>;
    /// Polled between batches so a long epoch can be interrupted (Ctrl-C); default false.
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that ignores progress and never cancels.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl TrainObserver for NoObserver {
    fn on_epoch(&mut self, _: &EpochReport) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// One backend's training state.
pub(crate) trait Trainer {
    /// Forward and backward pass of one batch; keeps the gradient for [`Trainer::update`].
    fn forward_backward(&mut self, x: &[f32], y: &[u32]) -> Result<BatchStats, EngineError>;
    /// One Adam step with the gradient of the last batch.
    fn update(&mut self, lr: f32) -> Result<(), EngineError>;
    /// After [`Trainer::update`]: `train`'s weight decay (at learning rate `lr`) and
    /// Lipschitz projection, as [`crate::constrain::apply`] defines them.
    fn constrain(&mut self, train: &TrainConfig, lr: f32) -> Result<(), EngineError>;
    /// The current parameters, flat in layout order.
    fn params(&self) -> Result<Vec<f32>, EngineError>;
}

/// Trains a flow classifier on `data` with the default [`ExecOptions`] (CPU backend, one
/// thread). Deterministic: the same inputs give bit-identical parameters and reports.
pub fn train_flow(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    observer: &mut dyn TrainObserver,
) -> Result<Flow, EngineError> {
    train_flow_with(cfg, train, data, &ExecOptions::default(), observer)
}

/// [`train_flow`] with a chosen backend and thread count. With [`Backend::Cpu`] the result does
/// not depend on `threads`.
pub fn train_flow_with(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    exec: &ExecOptions,
    observer: &mut dyn TrainObserver,
) -> Result<Flow, EngineError> {
    match Runtime::open(exec)?.kind {
        Kind::Cpu { threads } => {
            let layout = check(cfg, train, data)?;
            let init = layout.init(train.seed);
            with_cpu_trainer(cfg, &layout, init, train.batch, threads, |trainer| {
                run(cfg, train, data, &layout, trainer, observer)
            })?
        }
        Kind::Dfdx(dev) => catching(|| train_flow_on(&dev, cfg, train, data, observer)),
        #[cfg(feature = "cuda")]
        Kind::Cuda { dev, .. } => catching(|| train_flow_on(&dev, cfg, train, data, observer)),
    }
}

/// [`train_flow`] through the device-generic tensor path on `dev` (dfdx's `Cpu` now, `Cuda`
/// with the planned `cuda` feature). Same initialisation and batches as the CPU backend, so
/// the two agree up to rounding.
pub fn train_flow_on<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    observer: &mut dyn TrainObserver,
) -> Result<Flow, EngineError> {
    let layout = check(cfg, train, data)?;
    let init = layout.init(train.seed);
    let mut trainer = TensorTrainer::new(dev, cfg, &layout, &init)?;
    run(cfg, train, data, &layout, &mut trainer, observer)
}

fn check(cfg: &FlowConfig, train: &TrainConfig, data: &Dataset) -> Result<Layout, EngineError> {
    cfg.validate()?;
    train.validate()?;
    data.validate_for(cfg)?;
    if data.is_empty() {
        return Err(EngineError::InvalidData("the training set is empty".into()));
    }
    Ok(Layout::new(cfg))
}

fn run(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    layout: &Layout,
    trainer: &mut dyn Trainer,
    observer: &mut dyn TrainObserver,
) -> Result<Flow, EngineError> {
    let n = data.len();
    let d = cfg.in_dim;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(train.seed, STREAM_SHUFFLE);
    let mut xb = Vec::with_capacity(train.batch.min(n) * d);
    let mut yb = Vec::with_capacity(train.batch.min(n));
    for epoch in 1..=train.epochs {
        rng.shuffle(&mut order);
        let mut total = BatchStats::default();
        for (i, idx) in order.chunks(train.batch).enumerate() {
            if observer.cancelled() {
                return Err(EngineError::Cancelled);
            }
            xb.clear();
            yb.clear();
            for &j in idx {
                xb.extend_from_slice(&data.x[j * d..(j + 1) * d]);
                yb.push(data.y[j]);
            }
            let stats = trainer.forward_backward(&xb, &yb)?;
            if !stats.loss_sum.is_finite() {
                return Err(EngineError::NonFinite {
                    epoch,
                    batch: i + 1,
                    loss: stats.loss_sum as f32,
                });
            }
            trainer.update(train.lr)?;
            if train.weight_decay != 0.0 || train.lipschitz.is_some() {
                trainer.constrain(train, train.lr)?;
            }
            total.loss_sum += stats.loss_sum;
            total.correct += stats.correct;
        }
        let report = EpochReport {
            epoch,
            epochs: train.epochs,
            loss: (total.loss_sum / n as f64) as f32,
            acc: (total.correct as f64 / n as f64) as f32,
        };
        if observer.on_epoch(&report).is_break() {
            return Err(EngineError::Cancelled);
        }
    }
    Flow::from_parts(cfg.clone(), layout.clone(), trainer.params()?)
}
