use serde::{Deserialize, Serialize};

use crate::EngineError;

/// Whether the residual steps share one velocity field or each has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// One field `v` used at every step: a stationary velocity field, the flow is its exponential map.
    Shared,
    /// One field per step: a time-varying velocity field.
    Unshared,
}

/// The architecture of a residual flow classifier (Rousseau et al. 2020).
///
/// `x ∈ R^in_dim` is lifted linearly to `R^dim` (only when `dim != in_dim`), moved by `steps`
/// residual steps `x ← x + h·v_k(x)` with `v_k(x) = W2·tanh(W1·x + b1) + b2` (`hidden` units),
/// and read out by a linear head to `classes` logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowConfig {
    pub in_dim: usize,
    pub classes: usize,
    pub dim: usize,
    pub hidden: usize,
    pub steps: usize,
    /// The step size; the caller decides it (the paper's default is `1/steps`).
    pub h: f32,
    pub weights: Weights,
}

impl FlowConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |msg: String| Err(EngineError::InvalidConfig(msg));
        if self.in_dim == 0 {
            return bad("`in_dim` must be at least 1".into());
        }
        if self.classes < 2 {
            return bad(format!(
                "`classes` must be at least 2, got {}",
                self.classes
            ));
        }
        if self.dim == 0 {
            return bad("`dim` must be at least 1".into());
        }
        if self.hidden == 0 {
            return bad("`hidden` must be at least 1".into());
        }
        if self.steps == 0 {
            return bad("`steps` must be at least 1".into());
        }
        if !self.h.is_finite() {
            return bad(format!("`h` must be a finite number, got {}", self.h));
        }
        Ok(())
    }

    /// Whether the model has a linear lift `in_dim → dim` (otherwise the lift is the identity).
    pub fn has_lift(&self) -> bool {
        self.dim != self.in_dim
    }

    /// How many velocity fields the model holds: 1 when shared, `steps` when unshared.
    pub fn num_fields(&self) -> usize {
        match self.weights {
            Weights::Shared => 1,
            Weights::Unshared => self.steps,
        }
    }

    /// How the flow is discretised; always [`Integrator::Euler`] until the config grows an
    /// `integrator` field.
    pub fn integrator(&self) -> Integrator {
        Integrator::Euler
    }

    /// The velocity field used at residual step `k` (0-based).
    pub fn field_of_step(&self, k: usize) -> usize {
        match self.weights {
            Weights::Shared => 0,
            Weights::Unshared => k,
        }
    }
}

/// How the flow ODE is discretised. Only the explicit Euler step `x ← x + h·v(x)` exists so far;
/// midpoint and RK4 are planned and slot in here (every kernel matches on this enum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Integrator {
    #[default]
    Euler,
}

/// Optimisation settings: Adam (β1 0.9, β2 0.999, ε 1e-8) over shuffled minibatches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// Seeds both the initialisation and the per-epoch shuffles.
    pub seed: u64,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.epochs == 0 {
            return Err(EngineError::InvalidConfig(
                "`epochs` must be at least 1".into(),
            ));
        }
        if self.batch == 0 {
            return Err(EngineError::InvalidConfig(
                "`batch` must be at least 1".into(),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(EngineError::InvalidConfig(format!(
                "`lr` must be a positive finite number, got {}",
                self.lr
            )));
        }
        Ok(())
    }
}

/// Which implementation runs the model's arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// CPU kernels written for this model: `gemm` matrix products and fused, vectorised
    /// element-wise loops over buffers allocated once, the batch split into shards that run on
    /// `threads` threads. Several times faster than the tensor path at the paper's sizes, where
    /// dfdx's per-op overhead dominates; tested equal to [`Backend::Dfdx`] within rounding.
    #[default]
    Cpu,
    /// The device-generic path: the same forward and hand-written backward pass as dfdx tensor
    /// ops (no tape), run here on dfdx's `Cpu` device. A CUDA build runs this path.
    Dfdx,
}

/// How to run a training or evaluation; none of it changes the results of [`Backend::Cpu`]:
/// the batch is always split into the same shards and their gradients summed in the same
/// order, whatever the thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOptions {
    /// Threads for [`Backend::Cpu`] (at least 1). More than the shards of a batch are idle.
    pub threads: usize,
    pub backend: Backend,
}

impl Default for ExecOptions {
    /// One thread: a sweep gains more from running instances side by side (performance.md).
    fn default() -> Self {
        ExecOptions {
            threads: 1,
            backend: Backend::Cpu,
        }
    }
}

impl ExecOptions {
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.threads == 0 {
            return Err(EngineError::InvalidConfig(
                "`threads` must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
