//! The glue the ops share, so that no op imports from another: the model side of an op
//! (artifacts, backend, errors, progress), the points tables of the flow ops, the inputs of a
//! gathering report, and the text splits of the language-model ops.

pub(crate) mod checkpoint;
mod dataset;
mod gather;
mod models;
mod text;

pub(crate) use dataset::{probe_points, read_dataset, write_dataset};
pub(crate) use gather::{OneOrMany, gather, metric_problem, missing_note};
pub(crate) use models::{artifact, backend, model_error, runtime, training_progress};
pub(crate) use text::read_split;
