//! `ablate-models` owns the models and their training: residual flows on low-dimensional data
//! (Rousseau et al. 2020, shared or unshared velocity fields), trained with Adam, evaluated,
//! and stored as safetensors files. The arithmetic runs either through dfdx tensor ops, generic
//! over the dfdx device (the path a CUDA build takes), or through this crate's fused CPU
//! kernels (the default on the CPU, tested equal to the tensor path). `analysis` measures a
//! trained flow in f64: layer states, analytic Jacobians and their determinants, inverses,
//! refinement to 2N steps, and the pull-back metrics of Hauser & Ray (2017). [`lm`] holds the
//! UL2 ablation's language models (Tay et al. 2022): a byte vocabulary with sentinels and mode
//! tokens, corpora, T5-style denoisers and their mixtures, one-shot tasks, and decoder-only /
//! encoder-decoder transformers, again with a fast CPU path and a dfdx path tested equal.
//!
//! It must not print, read the environment, or know about pipelines, caches or the scheduler:
//! progress leaves through [`TrainObserver`], failures through [`EngineError`], and every
//! result is a pure function of the configs, the data and the seed.

mod analysis;
mod config;
mod constrain;
mod cpu;
mod data;
mod error;
mod flow;
mod kernels;
pub mod lm;
mod model_file;
mod params;
mod pool;
mod rng;
mod runtime;
mod tensor;
mod train;

#[cfg(test)]
mod tests;

pub use analysis::{
    Grid, InverseErrors, MetricStats, Trace, det, grid_over, metric_stats, sym_eigen,
};
#[cfg(feature = "cuda")]
pub use config::cuda_devices;
pub use config::{
    Activation, Backend, ExecOptions, FlowConfig, Form, Integrator, TrainConfig, Weights,
};
pub use data::Dataset;
pub use error::EngineError;
pub use flow::{Evaluation, Flow};
pub use runtime::Runtime;
pub use train::{
    EpochReport, NoObserver, TrainObserver, train_flow, train_flow_on, train_flow_with,
};
