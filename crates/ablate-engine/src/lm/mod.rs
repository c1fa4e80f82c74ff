//! Language models for the UL2 objective ablation (Tay et al. 2022) at small scale: a byte-level
//! vocabulary with sentinels and mode tokens, a synthetic corpus, the span-corruption denoisers and
//! their mixtures, one-shot tasks, and decoder-only / encoder-decoder transformers trained on
//! them.

mod batch;
mod config;
mod cpu;
mod layout;
mod model;
mod train;

pub use batch::Batch;
pub use config::{Arch, LmConfig, LmTrainConfig};
pub use model::Lm;
pub use train::{LmObserver, StepLog, train_lm};
pub mod vocab;
