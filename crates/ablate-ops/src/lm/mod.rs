//! `data.text`, `train.lm` and `eval.lm`: the UL2 objective ablation (Tay et al. 2022) on tiny
//! byte-level transformers, via `ablate-models`'s `lm` module. One op per module; what two of
//! them share is in [`crate::support`].

pub(crate) mod data_text;
pub(crate) mod eval;
pub(crate) mod train;

pub(crate) use data_text::DataText;
pub(crate) use eval::EvalLm;
pub(crate) use train::TrainLm;
