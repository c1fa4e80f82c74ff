//! Numerical analysis of a flow, in f64 and one point at a time: every layer's state, the
//! Jacobian of the whole flow and its determinant, how well the flow inverts, the same fields
//! refined in depth or integrated another way, and Hauser & Ray's (2017) metric tensors pulled
//! back from the output to every layer.
//!
//! Everything here follows [`FlowConfig`](crate::FlowConfig)'s definition of the model directly
//! (not the training kernels), so it also covers the forms, integrators and activations the
//! kernels do not.

mod flow;
mod grid;
mod linalg;
mod metrics;
mod net;

pub use flow::{InverseErrors, Trace};
pub use grid::{Grid, grid_over};
pub use linalg::{det, sym_eigen};
pub use metrics::{MetricStats, metric_stats};

#[cfg(test)]
mod tests;
