//! The glue the ops share, so that no op imports from another: the engine side of an op
//! (artifacts, backend, errors, progress), the points tables of the flow ops, and the inputs of
//! a gathering report.

mod dataset;
mod engine;
mod gather;

pub(crate) use dataset::{probe_points, read_dataset, write_dataset};
pub(crate) use engine::{artifact, backend, engine_error, runtime, training_progress};
pub(crate) use gather::{OneOrMany, gather, metric_problem, missing_note, name_problem};
