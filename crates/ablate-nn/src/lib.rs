//! `ablate-nn` is the neural-network core both model families are built on (candle's
//! `Config → Model::new → forward`, burn's `Module`, at the size this project needs):
//!
//! - [`store`]: the parameter store — named slots (shape, offset, initialisation, decay) in one
//!   flat buffer, one dense-layer convention ([`Dense`]: `y = x·Wᵀ + b`, `W` stored
//!   `[out, inp]`, PyTorch's), LayerNorm handles, and [`Params`], several replicas of one layout side by
//!   side;
//! - [`optim`]: AdamW with global-norm clipping and learning-rate schedules, hyperparameters per
//!   replica;
//! - [`train`]: the one training loop over the [`Model`] trait, with one [`Observer`] for
//!   progress and logged metrics;
//! - [`checkpoint`]: the state a stopped run leaves and a longer one resumes from, bit for bit;
//! - [`rng`]: the seeded generator every initialisation, shuffle and sample draws from;
//! - [`runtime`]: the device [`Runtime`] (this crate's CPU kernels, or a dfdx device — a GPU in
//!   a `cuda` build), the one place a dfdx device is opened;
//! - [`layers`]: a dense layer's forward and backward products on the CPU fast path, which both
//!   families call;
//! - [`kernels`] and [`pool`]: the CPU fast path's slice kernels (`gemm`, vectorised loops) and
//!   its fork-join thread pool;
//! - [`safetensors`]: the model file (one tensor per slot, a format tag and a config);
//! - [`NnError`], and [`catching`], which turns a panic inside dfdx into an error.
//!
//! It imports nothing of ablate (dependencies: dfdx, gemm, safetensors, serde), must not print
//! or read the environment, and every result is a pure function of its inputs and seeds.

pub mod checkpoint;
mod error;
pub mod kernels;
pub mod layers;
pub mod optim;
pub mod pool;
pub mod rng;
pub mod runtime;
pub mod safetensors;
pub mod store;
pub mod train;

pub use checkpoint::{Array, CHECKPOINT_FORMAT, Checkpoint, Found, TrainState};
pub use error::{NnError, catching, device_error};
pub use optim::{AdamConfig, AdamState, AdamW, DecayAt, Hyper, Schedule, Update};
#[cfg(feature = "cuda")]
pub use runtime::cuda_devices;
pub use runtime::{Backend, ExecOptions, Kind, Runtime};
pub use store::{Dense, Init, Layout, Norm, Params, Slot};
pub use train::{
    Batches, EpochLog, GroupModel, Loss, MemberResult, Model, NoObserver, Observer, Plan, Stats,
    StepLog, train, train_group, train_group_span, train_span,
};
