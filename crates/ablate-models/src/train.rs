//! Training a flow: seeded init, per-epoch shuffles into minibatches, and the core's loop
//! ([`ablate_nn::train`]) with Adam (β 0.9, 0.999), decay after each update and the Lipschitz
//! projection, on either backend.

use ablate_nn::{
    AdamConfig, AdamW, Batches, DecayAt, Hyper, Model, Observer, Plan, Schedule, Stats,
};
use dfdx::tensor_ops::Device;

use crate::cpu::with_cpu_trainer;
use crate::params::{Layout, STREAM_SHUFFLE};
use crate::rng::SplitMix64;
use crate::tensor::TensorTrainer;
use crate::{Dataset, ExecOptions, Flow, FlowConfig, NnError, TrainConfig};
use ablate_nn::{Kind, Runtime, catching};

/// A flow's count besides its loss: correct predictions among the examples seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accuracy {
    pub correct: usize,
    pub examples: usize,
}

impl Accuracy {
    /// `correct / examples` (0 before any example).
    pub fn acc(&self) -> f32 {
        if self.examples == 0 {
            return 0.0;
        }
        (self.correct as f64 / self.examples as f64) as f32
    }
}

impl Stats for Accuracy {
    fn add(&mut self, other: &Self) {
        self.correct += other.correct;
        self.examples += other.examples;
    }
}

/// One minibatch: `x` row-major `rows × in_dim`, `y` its labels.
#[derive(Clone, Debug, Default)]
pub(crate) struct Minibatch {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

/// The data of an epoch-based run: a fresh seeded shuffle of `data` at each epoch, cut into
/// batches of `batch` (the last one smaller), gathered into one reused buffer.
pub(crate) struct Shuffled<'a> {
    data: &'a Dataset,
    batch: usize,
    per_epoch: usize,
    order: Vec<usize>,
    rng: SplitMix64,
    out: Minibatch,
}

impl<'a> Shuffled<'a> {
    /// The batches `train` draws from `data`: its own shuffle stream of `train.seed`.
    pub(crate) fn new(data: &'a Dataset, train: &TrainConfig) -> Self {
        let n = data.len();
        Shuffled {
            data,
            batch: train.batch,
            per_epoch: n.div_ceil(train.batch),
            order: (0..n).collect(),
            rng: SplitMix64::new(train.seed, STREAM_SHUFFLE),
            out: Minibatch {
                x: Vec::with_capacity(train.batch.min(n) * data.dim),
                y: Vec::with_capacity(train.batch.min(n)),
            },
        }
    }
}

/// The step plan of training on `data` with `train`: epochs of `⌈n / batch⌉` batches.
pub(crate) fn plan(data: &Dataset, train: &TrainConfig) -> Plan {
    Plan::Epochs {
        epochs: train.epochs,
        per_epoch: data.len().div_ceil(train.batch),
    }
}

impl Batches<Minibatch> for Shuffled<'_> {
    fn batch(&mut self, step: usize) -> Result<&Minibatch, NnError> {
        let i = step % self.per_epoch;
        if i == 0 {
            self.rng.shuffle(&mut self.order);
        }
        let d = self.data.dim;
        let idx = &self.order[i * self.batch..((i + 1) * self.batch).min(self.order.len())];
        self.out.x.clear();
        self.out.y.clear();
        for &j in idx {
            self.out
                .x
                .extend_from_slice(&self.data.x[j * d..(j + 1) * d]);
            self.out.y.push(self.data.y[j]);
        }
        Ok(&self.out)
    }
}

/// Trains a flow classifier on `data` with the default [`ExecOptions`] (CPU backend, one
/// thread). Deterministic: the same inputs give bit-identical parameters and reports.
pub fn train_flow(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    observer: &mut dyn Observer<Accuracy>,
) -> Result<Flow, NnError> {
    train_flow_with(cfg, train, data, &ExecOptions::default(), observer)
}

/// [`train_flow`] with a chosen backend and thread count. With [`ablate_nn::Backend::Cpu`] the
/// result does not depend on `threads`.
pub fn train_flow_with(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    exec: &ExecOptions,
    observer: &mut dyn Observer<Accuracy>,
) -> Result<Flow, NnError> {
    match Runtime::open(exec)?.into_kind() {
        Kind::Cpu { threads } => {
            let layout = check(cfg, train, data)?;
            let init = layout.init(train.seed);
            with_cpu_trainer(
                cfg,
                &layout,
                init,
                train.batch,
                threads,
                train.lipschitz,
                |trainer| run(cfg, train, data, &layout, trainer, observer),
            )?
        }
        Kind::Dfdx(dev) => catching(|| train_flow_on(&dev, cfg, train, data, observer)),
        #[cfg(feature = "cuda")]
        Kind::Cuda { dev, .. } => catching(|| train_flow_on(&dev, cfg, train, data, observer)),
    }
}

/// [`train_flow`] through the device-generic tensor path on `dev` (dfdx's `Cpu`, or `Cuda` in
/// a `cuda` build). Same initialisation, batches and updates as the CPU backend, so the two
/// agree up to rounding.
pub fn train_flow_on<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    observer: &mut dyn Observer<Accuracy>,
) -> Result<Flow, NnError> {
    let layout = check(cfg, train, data)?;
    let init = layout.init(train.seed);
    let mut trainer = TensorTrainer::new(dev, cfg, &layout, init, train.lipschitz);
    run(cfg, train, data, &layout, &mut trainer, observer)
}

pub(crate) fn check(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
) -> Result<Layout, NnError> {
    cfg.validate()?;
    train.validate()?;
    data.validate_for(cfg)?;
    if data.is_empty() {
        return Err(NnError::InvalidData("the training set is empty".into()));
    }
    Ok(Layout::new(cfg))
}

/// The flows' optimizer: Adam (β 0.9, 0.999, ε 1e-8) at a constant learning rate, no
/// clipping, and the weight decay after each update (then the model's Lipschitz projection).
pub(crate) fn optimizer(layout: &Layout, train: &TrainConfig) -> AdamW {
    group_optimizer(layout, &[train])
}

/// [`optimizer`] with one replica per member of a fused group, each with its own learning
/// rate and weight decay.
pub(crate) fn group_optimizer(layout: &Layout, members: &[&TrainConfig]) -> AdamW {
    let adam = AdamConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        decay_at: DecayAt::AfterUpdate,
    };
    let hypers = members
        .iter()
        .map(|train| Hyper {
            schedule: Schedule::Constant(train.lr),
            weight_decay: train.weight_decay,
            clip: f32::INFINITY,
        })
        .collect();
    AdamW::new(adam, &layout.store, hypers)
}

fn run(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    layout: &Layout,
    model: &mut dyn Model<Batch = Minibatch, Stats = Accuracy>,
    observer: &mut dyn Observer<Accuracy>,
) -> Result<Flow, NnError> {
    let mut batches = Shuffled::new(data, train);
    let plan = plan(data, train);
    let mut opt = optimizer(layout, train);
    ablate_nn::train(model, &mut opt, plan, &mut batches, observer)?;
    Flow::from_parts(cfg.clone(), layout.clone(), model.params()?)
}
