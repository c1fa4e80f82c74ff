//! Language models for the UL2 objective ablation (Tay et al. 2022) at small scale: a byte-level
//! vocabulary with sentinels and mode tokens, a synthetic corpus, the span-corruption denoisers and
//! their mixtures, one-shot tasks, and decoder-only / encoder-decoder transformers trained on
//! them.

mod batch;
mod config;
mod layout;
#[cfg(test)]
mod reference;
mod tensor;

pub use batch::Batch;
pub use config::{Arch, LmConfig, LmTrainConfig};
pub mod vocab;
