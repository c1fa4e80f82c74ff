//! Training a flow: seeded init, per-epoch shuffles into minibatches, and the core's loop
//! ([`ablate_nn::train`]) with Adam (β 0.9, 0.999), decay after each update and the Lipschitz
//! projection, on either backend.

use ablate_nn::{
    AdamConfig, AdamW, Batches, DecayAt, Hyper, Model, Observer, Plan, Schedule, Stats, TrainState,
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

impl Shuffled<'_> {
    /// Puts the stream where it is before epoch `epoch` (0-based) draws its shuffle: each
    /// shuffle permutes the previous epoch's order, so the earlier ones are replayed (cheap next
    /// to training an epoch).
    pub(crate) fn skip_epochs(&mut self, epoch: usize) {
        for _ in 0..epoch {
            self.rng.shuffle(&mut self.order);
        }
    }
}

/// Where a flow's training starts and where it stops (early stopping, #24): from scratch or a
/// [`TrainState`] taken at an epoch's end, to the end of epoch `stop` (1-based; the config's
/// `epochs` for the whole run).
#[derive(Clone, Copy, Debug)]
pub struct Span<'a> {
    pub from: Option<&'a TrainState>,
    pub stop: usize,
}

impl Span<'_> {
    /// The whole run of `train`.
    pub fn whole(train: &TrainConfig) -> Span<'static> {
        Span {
            from: None,
            stop: train.epochs,
        }
    }

    /// The steps this span trains of `plan`, checked: it starts at an epoch's end no later
    /// than it stops, within the plan.
    pub(crate) fn steps(&self, plan: Plan) -> Result<std::ops::Range<usize>, NnError> {
        let Plan::Epochs { epochs, per_epoch } = plan else {
            unreachable!("flows train in epochs")
        };
        let start = self.from.map_or(0, |s| s.step);
        if !start.is_multiple_of(per_epoch) || start > self.stop * per_epoch || self.stop > epochs {
            return Err(NnError::InvalidConfig(format!(
                "cannot resume at step {start} and stop after epoch {} of {epochs} epochs of \
                 {per_epoch} steps",
                self.stop
            )));
        }
        Ok(start..self.stop * per_epoch)
    }
}

/// The parameters a run starts from: the seeded initialisation, or the resumed state's.
pub(crate) fn start_params(
    layout: &Layout,
    train: &TrainConfig,
    from: Option<&TrainState>,
) -> Result<Vec<f32>, NnError> {
    TrainState::start_params(from, layout.total(), || layout.init(train.seed))
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
    let span = Span::whole(train);
    Ok(train_flow_span(cfg, train, data, exec, span, observer)?.0)
}

/// [`train_flow_with`] over `span` only: from its state (or scratch) to the end of its `stop`
/// epoch. Returns the flow there and the state a later span resumes from; spans that follow
/// one another give, bit for bit on one backend, what the whole run gives.
pub fn train_flow_span(
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    exec: &ExecOptions,
    span: Span<'_>,
    observer: &mut dyn Observer<Accuracy>,
) -> Result<(Flow, TrainState), NnError> {
    match Runtime::open(exec)?.into_kind() {
        Kind::Cpu { threads } => {
            let layout = check(cfg, train, data)?;
            let init = start_params(&layout, train, span.from)?;
            with_cpu_trainer(
                cfg,
                &layout,
                init,
                train.batch,
                threads,
                train.lipschitz,
                |trainer| run(cfg, train, data, &layout, trainer, span, observer),
            )?
        }
        Kind::Dfdx(dev) => catching(|| train_flow_span_on(&dev, cfg, train, data, span, observer)),
        #[cfg(feature = "cuda")]
        Kind::Cuda { dev, .. } => {
            catching(|| train_flow_span_on(&dev, cfg, train, data, span, observer))
        }
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
    let span = Span::whole(train);
    Ok(train_flow_span_on(dev, cfg, train, data, span, observer)?.0)
}

/// [`train_flow_span`] through the tensor path on `dev`.
pub fn train_flow_span_on<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    train: &TrainConfig,
    data: &Dataset,
    span: Span<'_>,
    observer: &mut dyn Observer<Accuracy>,
) -> Result<(Flow, TrainState), NnError> {
    let layout = check(cfg, train, data)?;
    let init = start_params(&layout, train, span.from)?;
    let mut trainer = TensorTrainer::new(dev, cfg, &layout, init, train.lipschitz);
    run(cfg, train, data, &layout, &mut trainer, span, observer)
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
    span: Span<'_>,
    observer: &mut dyn Observer<Accuracy>,
) -> Result<(Flow, TrainState), NnError> {
    let plan = plan(data, train);
    let steps = span.steps(plan)?;
    let mut batches = Shuffled::new(data, train);
    batches.skip_epochs(steps.start / plan_per_epoch(plan));
    let mut opt = optimizer(layout, train);
    if let Some(from) = span.from {
        opt.restore(0, &from.adam)?;
    }
    let stop = steps.end;
    ablate_nn::train_span(model, &mut opt, plan, steps, &mut batches, observer)?;
    let params = model.params()?;
    let state = TrainState {
        step: stop,
        params: params.clone(),
        adam: opt.state(0),
    };
    Ok((
        Flow::from_parts(cfg.clone(), layout.clone(), params)?,
        state,
    ))
}

/// The steps of one epoch of a flow's plan.
pub(crate) fn plan_per_epoch(plan: Plan) -> usize {
    match plan {
        Plan::Epochs { per_epoch, .. } => per_epoch,
        Plan::Steps(_) => 1,
    }
}
