//! `ablate-spec` owns the pipeline file: YAML text → a span-carrying raw tree (serde-saphyr) →
//! one validated [`Pipeline`], or every problem in the file at once as [`Diagnostics`] that point
//! at `file:line:col` with a caret excerpt. It also owns the vocabulary ops use to describe their
//! parameters ([`OpSchema`]), because validating a stage means checking its params against its op.
//!
//! It must not know how ops run, hash anything, or touch the cache: it is pure text → types.
//! It imports nothing of ablate (it is the bottom of the graph).

mod diagnostic;
mod duration;
mod executor;
mod expand;
mod interp;
mod load;
mod model;
mod node;
mod schema;
mod search;
mod suggest;
mod text;
mod typecheck;
mod validate;

pub use diagnostic::{Diagnostic, Diagnostics, Severity, SourceFile, Span, error_chain};
pub use duration::{MAX_DURATION, format_duration, parse_duration};
pub use executor::{ExecutorConfig, ExecutorKind, SlurmOptions, load_profile, slurm_time};
pub use expand::Combinations;
pub use load::{Override, Overrides, load, load_file};
pub use model::{
    Device, EarlyStop, Fuse, Goal, MAX_NAME_BYTES, Matrix, OnDiverge, Pipeline, Resources, Stage,
    StageName, WrittenParam,
};
pub use schema::{OpCatalog, OpSchema, ParamSpec, ParamType, TAG};
pub use search::{Distribution, MAX_SAMPLES, SIGNIFICANT_DIGITS, Search};
pub use suggest::did_you_mean;
pub use text::backticked;

/// A parameter value after interpolation and normalisation (numbers checked finite, ints kept
/// as ints, floats as floats). `serde_json::Value` is the currency between crates; its map type
/// is only ever serialised canonically by `ablate-cache`, never relied on for ordering.
pub type Value = serde_json::Value;

/// Parameters of one stage or instance, keyed by name (sorted).
pub type Params = std::collections::BTreeMap<String, Value>;
