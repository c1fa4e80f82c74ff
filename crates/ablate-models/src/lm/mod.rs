//! Language models for the UL2 objective ablation (Tay et al. 2022) at small scale: a byte-level
//! vocabulary with sentinels and mode tokens, a synthetic corpus, the span-corruption denoisers and
//! their mixtures and the objectives a pipeline writes, one-shot tasks, decoder-only /
//! encoder-decoder transformers trained on them, and their evaluation.

#[macro_use]
mod spelled;

mod batch;
mod config;
mod cpu;
mod denoise;
mod eval;
mod group;
mod layout;
mod model;
mod objective;
#[cfg(test)]
mod reference;
mod tasks;
mod tensor;
mod text;
mod train;

pub use batch::Batch;
pub use config::{Arch, Attention, LmConfig, LmTrainConfig};
pub use denoise::{Denoiser, Example, Mixture, Sampler, pack, raw_len};
pub use eval::{EvalError, Judge, LmMeta, Reading};
pub use group::{LM_FUSIBLE, MemberOutcome, SpanOutcome, train_lm_group, train_lm_group_span};
pub use model::Lm;
pub use objective::{
    DenoiserKind, MixtureOptions, Objective, ObjectiveError, ObjectiveSpec, custom_mixture,
    mixture_of, ul2_weights,
};
pub use tasks::{
    INFILL, Task, clm_examples, infill_examples, oneshot_correct, oneshot_examples, score_infill,
};
pub use text::{split_documents, synthetic_corpus, token_stream, train_val_split};
pub use train::{LmSpan, train_lm, train_lm_span, train_lm_with};
pub mod vocab;
