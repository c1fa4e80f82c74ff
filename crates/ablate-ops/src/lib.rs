//! `ablate-ops` owns the op registry: each built-in op is typed params (serde, unknown fields
//! denied), a schema with defaults and docs (what validation and `ablate ops` read), a version
//! (part of every key), and `run(ctx)` → files in the entry + metrics. Data generators, dfdx
//! training and evaluation (through `ablate-models`), report tables (through `ablate-results`),
//! and `cmd` for any program.
//!
//! It must not schedule, cache or print: the runner hands it a context and takes its outputs.
//! It imports `ablate-spec` (op schemas), `ablate-run` (the `OpRunner` interface), `ablate-cache`,
//! `ablate-models` (which re-exports what it uses of `ablate-nn`) and `ablate-results`; an op
//! imports only the shared `support` module, never another op.

mod claims;
mod cmd;
mod data;
mod digits;
mod echo;
mod flow;
mod lm;
mod metric;
mod params;
mod plot;
mod registry;
mod report;
mod rng;
mod support;
#[cfg(test)]
mod testutil;

/// How many GPUs the CUDA driver sees, or why it sees none.
#[cfg(feature = "cuda")]
pub use ablate_models::cuda_devices;
pub use plot::caption_figure;
pub use registry::{InstanceProblem, Planned, Registry};
