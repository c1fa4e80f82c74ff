use serde::{Deserialize, Serialize};

use crate::NnError;

/// Whether the residual steps share one velocity field or each has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// One field `v` used at every step: a stationary velocity field, the flow is its exponential map.
    Shared,
    /// One field per step: a time-varying velocity field.
    Unshared,
}

/// The architecture of a residual flow classifier (Rousseau et al. 2020; Hauser & Ray 2017).
///
/// `x ∈ R^in_dim` is lifted linearly to `R^dim` (only when `dim != in_dim`): `x_0 = lift(x)`.
/// Then `steps` (N) layers move it, each using the velocity field `v_k(x) = W2·σ(W1·x + b1) + b2`
/// (`hidden` units, σ = `activation`; `v_k` is the one shared field, or field `k`):
///
/// - [`Form::C1`] (residual, one integrator step of the field per layer):
///   `x_{k+1} = x_k + h·Φ_k(x_k)` with the increment Φ of the [`Integrator`]
///   (Euler `v(x)`; midpoint `v(x + h/2·v(x))`; RK4 `(k1 + 2k2 + 2k3 + k4)/6` with
///   `k1 = v(x)`, `k2 = v(x + h/2·k1)`, `k3 = v(x + h/2·k2)`, `k4 = v(x + h·k3)`). Every stage
///   of a step uses the same field (time-varying flows are piecewise constant in time).
/// - [`Form::C0`] (plain layers, Hauser & Ray's "static" networks): `x_{k+1} = v_k(x_k)`; `h`
///   is not used.
/// - [`Form::C2`] (second order): `x_{k+1} = 2·x_k − x_{k−1} + h²·v_k(x_k)` with `x_{−1} = x_0`
///   (the flow starts at rest).
///
/// C0 and C2 take [`Integrator::Euler`] only. A linear head reads `x_N` out to `classes` logits.
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
    /// Absent from model files written before it existed: those are [`Form::C1`].
    #[serde(default)]
    pub form: Form,
    #[serde(default)]
    pub integrator: Integrator,
    #[serde(default)]
    pub activation: Activation,
}

impl FlowConfig {
    pub fn validate(&self) -> Result<(), NnError> {
        let bad = |msg: String| Err(NnError::InvalidConfig(msg));
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
        if self.form != Form::C1 && self.integrator != Integrator::Euler {
            return bad(format!(
                "`integrator: {}` needs `form: c1`; the {} form has no integrator (use euler)",
                self.integrator.name(),
                self.form.name()
            ));
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

    /// The velocity field used at residual step `k` (0-based).
    pub fn field_of_step(&self, k: usize) -> usize {
        match self.weights {
            Weights::Shared => 0,
            Weights::Unshared => k,
        }
    }
}

/// How a [`Form::C1`] layer integrates its field over one step of size `h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Integrator {
    /// `x + h·v(x)`: one field evaluation.
    #[default]
    Euler,
    /// `x + h·v(x + h/2·v(x))`: two evaluations, second order.
    Midpoint,
    /// Classical Runge–Kutta: four evaluations, fourth order.
    Rk4,
}

impl Integrator {
    pub fn name(self) -> &'static str {
        match self {
            Integrator::Euler => "euler",
            Integrator::Midpoint => "midpoint",
            Integrator::Rk4 => "rk4",
        }
    }

    /// Field evaluations per step.
    pub fn stages(self) -> usize {
        match self {
            Integrator::Euler => 1,
            Integrator::Midpoint => 2,
            Integrator::Rk4 => 4,
        }
    }
}

/// How a layer uses its field; see [`FlowConfig`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// Plain layers `x ← v(x)`.
    C0,
    /// Residual layers `x ← x + h·Φ(x)`: a first-order flow.
    #[default]
    C1,
    /// Second-order layers `x_{k+1} = 2x_k − x_{k−1} + h²·v(x_k)`.
    C2,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::C0 => "c0",
            Form::C1 => "c1",
            Form::C2 => "c2",
        }
    }
}

/// The hidden nonlinearity σ of a velocity field. Both are 1-Lipschitz.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Tanh,
    /// `max(0, z)`, with derivative 0 at 0.
    Relu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
        }
    }
}

/// Optimisation settings: Adam (β1 0.9, β2 0.999, ε 1e-8) over shuffled minibatches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// Seeds both the initialisation and the per-epoch shuffles.
    pub seed: u64,
    /// Decoupled weight decay (AdamW): after each step every weight matrix (not the biases)
    /// is multiplied by `1 − lr·weight_decay`. 0 turns it off.
    #[serde(default)]
    pub weight_decay: f32,
    /// Spectral normalisation of the velocity fields: after each step (and after the decay),
    /// the fc1 and fc2 weights of a field are scaled by a common factor so that
    /// `s·‖W2‖₂·‖W1‖₂ ≤ lipschitz`, which bounds `s·Lip(v)` (σ is 1-Lipschitz) and makes each
    /// C1 Euler step invertible when `lipschitz < 1`. `s` is what a layer multiplies `v` by:
    /// `|h|` for C1, 1 for C0, `h²` for C2. The norms come from a power iteration run to
    /// convergence and raised by a relative 1e-6, so the bound errs on the safe side.
    /// `None` turns it off.
    #[serde(default)]
    pub lipschitz: Option<f32>,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), NnError> {
        if self.epochs == 0 {
            return Err(NnError::InvalidConfig("`epochs` must be at least 1".into()));
        }
        if self.batch == 0 {
            return Err(NnError::InvalidConfig("`batch` must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(NnError::InvalidConfig(format!(
                "`lr` must be a positive finite number, got {}",
                self.lr
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(NnError::InvalidConfig(format!(
                "`weight_decay` must be a finite number ≥ 0, got {}",
                self.weight_decay
            )));
        }
        if let Some(l) = self.lipschitz
            && !(l.is_finite() && l > 0.0)
        {
            return Err(NnError::InvalidConfig(format!(
                "`lipschitz` must be a positive finite number, got {l}"
            )));
        }
        Ok(())
    }
}
