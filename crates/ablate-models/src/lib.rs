//! `ablate-models` owns the two model families the built-in pipelines train, each a
//! [`ablate_nn::Model`] trained by the core's one loop and optimizer:
//!
//! - residual flows on low-dimensional data (Rousseau et al. 2020, shared or unshared velocity
//!   fields, C0/C1/C2 forms, Euler/midpoint/RK4), evaluated, stored as safetensors files, and
//!   measured in f64 by `analysis`: layer states, analytic Jacobians and their determinants,
//!   inverses, refinement to 2N steps, and the pull-back metrics of Hauser & Ray (2017);
//! - [`lm`]: the UL2 ablation's language models (Tay et al. 2022): a byte vocabulary with
//!   sentinels and mode tokens, corpora, T5-style denoisers and their mixtures, one-shot tasks,
//!   decoder-only / encoder-decoder transformers, and their evaluation.
//!
//! Each family has a fast CPU path on the core's kernels and a dfdx tensor path generic over
//! the device (the one a CUDA build takes), tested equal, plus f64 references in the tests.
//!
//! It imports `ablate-nn` (and dfdx) and nothing else of ablate; it must not print, read the
//! environment, or know about pipelines, caches or the scheduler: progress leaves through
//! [`ablate_nn::Observer`], failures through [`NnError`], and every result is a pure function
//! of the configs, the data and the seed.

// The core's modules under the short paths this crate's kernels use.
use ablate_nn::{kernels, pool, rng};

mod analysis;
mod config;
mod constrain;
mod cpu;
mod data;
mod flow;
mod fused;
pub mod lm;
mod params;
mod tensor;
mod train;

#[cfg(test)]
mod tests;

#[cfg(feature = "cuda")]
pub use ablate_nn::cuda_devices;
pub use ablate_nn::{
    AdamState, Array, Backend, CHECKPOINT_FORMAT, Checkpoint, EpochLog, ExecOptions, Found,
    NnError, NoObserver, Observer, Runtime, StepLog, TrainState,
};
pub use analysis::{
    Grid, InverseErrors, MetricStats, Trace, det, grid_over, metric_stats, sym_eigen,
};
pub use config::{Activation, FlowConfig, Form, Integrator, TrainConfig, Weights};
pub use data::Dataset;
pub use flow::{Evaluation, Flow};
pub use fused::{FUSIBLE_TRAIN_FIELDS, SpanOutcome, train_flow_group, train_flow_group_span};
pub use train::{
    Accuracy, Span, train_flow, train_flow_on, train_flow_span, train_flow_span_on, train_flow_with,
};
