//! The analyses a [`Flow`] offers: traces, Jacobians and their determinants, inverse errors,
//! refined and re-integrated flows, pulled-back metrics.

use super::linalg::{det, dist, gram, identity, mat_mul};
use super::net::Net64;
use crate::params::{Dense, Layout};
use crate::{Flow, Form, Integrator, NnError, Weights};

/// Every layer's state for each row: `states[(layer * rows + row) * dim + j]`, layer `0..=steps`
/// (layer 0 is the lifted input `x_0`, layer `steps` what the head reads).
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub dim: usize,
    pub rows: usize,
    pub layers: usize,
    pub states: Vec<f64>,
}

impl Trace {
    pub fn state(&self, layer: usize, row: usize) -> &[f64] {
        let at = (layer * self.rows + row) * self.dim;
        &self.states[at..at + self.dim]
    }
}

impl Flow {
    pub(super) fn net64(&self) -> Net64 {
        Net64::new(self.config(), self.layout(), self.params())
    }

    /// The rows of `x` as `in_dim` slices; refuses a ragged or empty `x`.
    fn analysis_rows<'a>(&self, x: &'a [f32]) -> Result<Vec<&'a [f32]>, NnError> {
        let d = self.config().in_dim;
        if !x.len().is_multiple_of(d) {
            return Err(NnError::InvalidData(format!(
                "{} features is not a whole number of rows of dimension {d}",
                x.len()
            )));
        }
        if x.is_empty() {
            return Err(NnError::InvalidData("no points to analyse".into()));
        }
        Ok(x.chunks_exact(d).collect())
    }

    /// Every row's states `x_0 ..= x_N`.
    fn row_states(&self, net: &Net64, x: &[f32]) -> Result<Vec<Vec<Vec<f64>>>, NnError> {
        Ok(self
            .analysis_rows(x)?
            .into_iter()
            .map(|row| net.states(&net.lift(row)))
            .collect())
    }

    /// Every layer's state `x_0 ..= x_N` for each row of `x` (`rows × in_dim`, row-major).
    pub fn trace(&self, x: &[f32]) -> Result<Trace, NnError> {
        let net = self.net64();
        let per_row = self.row_states(&net, x)?;
        let (dim, rows, layers) = (net.dim, per_row.len(), net.steps + 1);
        let mut states = vec![0.0; layers * rows * dim];
        for (row, s) in per_row.iter().enumerate() {
            for (layer, x) in s.iter().enumerate() {
                let at = (layer * rows + row) * dim;
                states[at..at + dim].copy_from_slice(x);
            }
        }
        Ok(Trace {
            dim,
            rows,
            layers,
            states,
        })
    }

    /// The lift as a `dim × in_dim` row-major matrix (the identity when there is none).
    pub fn lift_matrix(&self) -> Vec<f64> {
        match &self.net64().lift {
            Some(l) => l.w.clone(),
            None => identity(self.config().dim),
        }
    }

    /// `∂x_N/∂x_0` for each row, `rows × dim × dim`, by the chain rule: C1 through the
    /// integrator's stages (Euler: `I + h·W2·diag(σ'(W1·x + b1))·W1` per step); C0
    /// `W2·diag(σ')·W1` per step; C2 by `J_{k+1} = 2J_k − J_{k−1} + h²·Dv(x_k)·J_k`,
    /// `J_{−1} = J_0 = I`.
    pub fn flow_jacobians(&self, x: &[f32]) -> Result<Vec<f64>, NnError> {
        let net = self.net64();
        Ok(self
            .row_states(&net, x)?
            .iter()
            .flat_map(|s| net.total_jacobian(s))
            .collect())
    }

    /// `det ∂x_N/∂x_0` for each row.
    pub fn jacobian_dets(&self, x: &[f32]) -> Result<Vec<f64>, NnError> {
        let d = self.config().dim;
        if self.config().form == Form::C2 {
            // A C2 step maps a pair of states, so there is no per-step d × d Jacobian.
            return Ok(self
                .flow_jacobians(x)?
                .chunks_exact(d * d)
                .map(|j| det(j, d))
                .collect());
        }
        // det ∂x_N/∂x_0 = Π_k det ∂x_{k+1}/∂x_k. Multiplying the steps' determinants keeps the
        // sign exact where the determinant of the chained product (contracting, over 32 steps,
        // to ~1e-19) is rounding noise of either sign.
        let net = self.net64();
        Ok(self
            .row_states(&net, x)?
            .iter()
            .map(|states| {
                (0..net.steps)
                    .map(|k| det(&net.step_jacobian(k, &states[k]), d))
                    .product()
            })
            .collect())
    }

    /// How well the flow inverts on the rows of `x`: each field the largest `‖x̂_0 − x_0‖₂`
    /// over the rows (in the flow space `R^dim`), `+inf` where an inversion is not finite.
    /// The forward pass runs once, and a flow inverted by fixed-point iteration is inverted once.
    pub fn inverse_errors(&self, x: &[f32]) -> Result<InverseErrors, NnError> {
        let net = self.net64();
        let per_row = self.row_states(&net, x)?;
        let worst = |invert: &dyn Fn(&[Vec<f64>]) -> Vec<f64>| {
            per_row.iter().fold(0.0f64, |worst, states| {
                let err = dist(&invert(states), &states[0]);
                worst.max(if err.is_finite() { err } else { f64::INFINITY })
            })
        };
        Ok(match (net.form, net.weights) {
            (Form::C0, _) => InverseErrors {
                inverse: None,
                fixed_point: None,
            },
            (Form::C1, weights) => {
                let fixed_point = worst(&|s| net.invert_fixed_point(s));
                let inverse = match weights {
                    Weights::Shared => worst(&|s| net.invert_backward_flow(s)),
                    Weights::Unshared => fixed_point,
                };
                InverseErrors {
                    inverse: Some(inverse),
                    fixed_point: Some(fixed_point),
                }
            }
            (Form::C2, _) => InverseErrors {
                inverse: Some(worst(&|s| net.invert_c2(s))),
                fixed_point: None,
            },
        })
    }

    /// The same trained fields over `2N` steps of `h/2`: field `k` drives steps `2k` and
    /// `2k + 1` (an unshared flow's fields are duplicated; a shared flow only changes `steps`
    /// and `h`). A C0 net applies each layer twice (`2N` layers, `h` unchanged), which is a
    /// different map, not a finer one.
    pub fn refined(&self) -> Flow {
        let cfg = self.config();
        let mut fine = cfg.clone();
        fine.steps = 2 * cfg.steps;
        if cfg.form != Form::C0 {
            fine.h = cfg.h / 2.0;
        }
        let layout = Layout::new(&fine);
        let (old, p) = (self.layout(), self.params());
        let mut params = vec![0.0; layout.total()];
        let mut copy = |to: &Dense, from: &Dense| {
            params[to.w..to.w + to.out * to.inp].copy_from_slice(from.w(p));
            params[to.b..to.b + to.out].copy_from_slice(from.b(p));
        };
        if let (Some(to), Some(from)) = (&layout.lift, &old.lift) {
            copy(to, from);
        }
        for (i, to) in layout.fields.iter().enumerate() {
            let from = &old.fields[cfg.field_of_step(i / 2)];
            copy(&to.l1, &from.l1);
            copy(&to.l2, &from.l2);
        }
        copy(&layout.head, &old.head);
        Flow::from_parts(fine, layout, params).expect("the layout was built for these params")
    }

    /// The same fields integrated with `integrator` (C1 flows only).
    pub fn with_integrator(&self, integrator: Integrator) -> Result<Flow, NnError> {
        let cfg = self.config();
        if cfg.form != Form::C1 {
            return Err(NnError::InvalidConfig(format!(
                "`integrator: {}` needs `form: c1`; this flow is {}",
                integrator.name(),
                cfg.form.name()
            )));
        }
        let mut cfg = cfg.clone();
        cfg.integrator = integrator;
        Flow::from_parts(cfg, self.layout().clone(), self.params().to_vec())
    }

    /// Hauser & Ray's metric tensors: the output space's Euclidean metric pulled back to every
    /// layer, `g_l = A_lᵀ·A_l` with the adjoint `A_l = ∂x_N/∂x_l`, laid out
    /// `[(layer * rows + row) * dim * dim ..]`, layer `0..=N`.
    ///
    /// For C0 and C1, `A_N = I` and `A_l = A_{l+1}·J_l` (`J_l = ∂x_{l+1}/∂x_l`), so
    /// `g_l = J_lᵀ·g_{l+1}·J_l`. A C2 layer's `x_{l+1}` also depends on `x_{l−1}`, so `A_l` is
    /// `x_l`'s effect on `x_N` through both `x_{l+1}` and `x_{l+2}` with `x_{l−1}` held:
    /// `A_N = I`, `A_{N+1} = 0`, `A_l = A_{l+1}·(2I + h²·Dv_l(x_l)) − A_{l+2}`; at `l = 0`,
    /// where `x_{−1} = x_0` is not held but moves with `x_0`, `2I` becomes `I`, so that
    /// `g_0 = Jᵀ·J` with `J` the whole flow's Jacobian, as for the other forms.
    pub fn pullback_metrics(&self, x: &[f32]) -> Result<Vec<f64>, NnError> {
        let net = self.net64();
        let per_row = self.row_states(&net, x)?;
        let (d, rows) = (net.dim, per_row.len());
        let mut out = vec![0.0; (net.steps + 1) * rows * d * d];
        for (row, states) in per_row.iter().enumerate() {
            for (layer, a) in net.adjoints(states).iter().enumerate() {
                let at = (layer * rows + row) * d * d;
                out[at..at + d * d].copy_from_slice(&gram(a, d, d));
            }
        }
        Ok(out)
    }

    /// The metric induced on the input space, `Lᵀ·g_0·L` with `L` = [`Flow::lift_matrix`]:
    /// `rows × in_dim × in_dim`.
    pub fn input_metrics(&self, x: &[f32]) -> Result<Vec<f64>, NnError> {
        let (d, n) = (self.config().dim, self.config().in_dim);
        let lift = self.lift_matrix();
        Ok(self
            .flow_jacobians(x)?
            .chunks_exact(d * d)
            .flat_map(|j| gram(&mat_mul(j, &lift, d, d, n), d, n))
            .collect())
    }

    /// `‖g_0 − g_0'‖_F / max(‖g_0‖_F, ‖g_0'‖_F)` over all rows together, `g_0'` the metric of
    /// [`Flow::refined`]: how far the metric is from its limit in depth. Relative to the larger
    /// norm rather than to `‖g_0'‖` so that it stays in [0, 2] and defined when a plain (c0)
    /// network's refinement collapses the plane (`g_0' = 0`); the two agree to first order when
    /// the metrics are close. 0 when both metrics vanish.
    pub fn metric_convergence(&self, x: &[f32]) -> Result<f64, NnError> {
        let d = self.config().dim;
        let g0 = |f: &Flow| -> Result<Vec<f64>, NnError> {
            Ok(f.flow_jacobians(x)?
                .chunks_exact(d * d)
                .flat_map(|j| gram(j, d, d))
                .collect())
        };
        let (coarse, fine) = (g0(self)?, g0(&self.refined())?);
        // Scaled by the largest entry, so metrics of huge norm do not overflow the sums.
        let scale = coarse
            .iter()
            .chain(&fine)
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if scale == 0.0 {
            return Ok(0.0);
        }
        let sq = |v: &[f64]| v.iter().map(|a| (a / scale).powi(2)).sum::<f64>();
        let diff: f64 = coarse
            .iter()
            .zip(&fine)
            .map(|(a, b)| ((a - b) / scale).powi(2))
            .sum();
        Ok((diff / sq(&coarse).max(sq(&fine))).sqrt())
    }

    /// The mean over layers and rows of `‖x_{l+1} − x_l‖₂`.
    pub fn step_norm(&self, x: &[f32]) -> Result<f64, NnError> {
        let net = self.net64();
        let per_row = self.row_states(&net, x)?;
        let total: f64 = per_row
            .iter()
            .flat_map(|s| s.windows(2).map(|w| dist(&w[1], &w[0])))
            .sum();
        Ok(total / (per_row.len() * net.steps) as f64)
    }
}

/// What [`Flow::inverse_errors`] measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InverseErrors {
    /// Inverting `x_N`: for a shared C1 flow the backward flow; for an unshared one each step by
    /// fixed-point iteration; for C2 the exact backward recursion. `None` for C0, which has no
    /// inverse.
    pub inverse: Option<f64>,
    /// Every C1 flow inverted step by step by fixed-point iteration `x ← x_{k+1} − h·Φ_k(x)`
    /// from `x = x_{k+1}` (until a change below 1e-12, at most 200 times): the inverse of the
    /// discrete map, exact where `h·Lip(Φ) < 1`. `None` for C0 and C2.
    pub fixed_point: Option<f64>,
}
