//! Numerical analysis of a flow, in f64 and one point at a time: every layer's state, the
//! Jacobian of the whole flow and its determinant, how well the flow inverts, the same fields
//! refined in depth or integrated another way, and Hauser & Ray's (2017) metric tensors pulled
//! back from the output to every layer.
//!
//! Everything here follows [`FlowConfig`]'s definition of the model directly (not the training
//! kernels), so it also covers the forms, integrators and activations the kernels do not.

use crate::params::{Layout, Linear};
use crate::{Activation, Flow, FlowConfig, Form, Integrator, NnError, Weights};

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

/// A dense layer `y = W·x + b` in f64.
struct Dense {
    inp: usize,
    out: usize,
    w: Vec<f64>,
    b: Vec<f64>,
}

impl Dense {
    fn new(l: &Linear, p: &[f32]) -> Dense {
        Dense {
            inp: l.inp,
            out: l.out,
            w: l.w(p).iter().map(|&v| f64::from(v)).collect(),
            b: l.b(p).iter().map(|&v| f64::from(v)).collect(),
        }
    }

    fn apply(&self, x: &[f64]) -> Vec<f64> {
        (0..self.out)
            .map(|o| {
                let row = &self.w[o * self.inp..(o + 1) * self.inp];
                self.b[o] + row.iter().zip(x).map(|(w, x)| w * x).sum::<f64>()
            })
            .collect()
    }
}

struct Field64 {
    l1: Dense,
    l2: Dense,
}

/// The stages of the explicit integrators, each driven by the one before it:
/// stage `s` evaluates the field at `x + c_s·h·k_{s−1}`; the increment is `Σ b_s·k_s`.
fn tableau(integrator: Integrator) -> (&'static [f64], &'static [f64]) {
    match integrator {
        Integrator::Euler => (&[0.0], &[1.0]),
        Integrator::Midpoint => (&[0.0, 0.5], &[0.0, 1.0]),
        Integrator::Rk4 => (
            &[0.0, 0.5, 0.5, 1.0],
            &[1.0 / 6.0, 2.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0],
        ),
    }
}

/// A flow's parameters widened to f64, with its definition.
struct Net64 {
    form: Form,
    integrator: Integrator,
    activation: Activation,
    weights: Weights,
    steps: usize,
    dim: usize,
    h: f64,
    lift: Option<Dense>,
    fields: Vec<Field64>,
}

impl Net64 {
    fn new(cfg: &FlowConfig, layout: &Layout, p: &[f32]) -> Net64 {
        Net64 {
            form: cfg.form,
            integrator: cfg.integrator,
            activation: cfg.activation,
            weights: cfg.weights,
            steps: cfg.steps,
            dim: cfg.dim,
            h: f64::from(cfg.h),
            lift: layout.lift.as_ref().map(|l| Dense::new(l, p)),
            fields: layout
                .fields
                .iter()
                .map(|f| Field64 {
                    l1: Dense::new(&f.l1, p),
                    l2: Dense::new(&f.l2, p),
                })
                .collect(),
        }
    }

    fn field(&self, k: usize) -> &Field64 {
        match self.weights {
            Weights::Shared => &self.fields[0],
            Weights::Unshared => &self.fields[k],
        }
    }

    fn lift(&self, x: &[f32]) -> Vec<f64> {
        let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        match &self.lift {
            Some(l) => l.apply(&x),
            None => x,
        }
    }

    fn sigma(&self, z: f64) -> f64 {
        match self.activation {
            Activation::Tanh => z.tanh(),
            Activation::Relu => z.max(0.0),
        }
    }

    fn sigma_prime(&self, z: f64) -> f64 {
        match self.activation {
            Activation::Tanh => 1.0 - z.tanh().powi(2),
            Activation::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// `v(x) = W2·σ(W1·x + b1) + b2`.
    fn v(&self, f: &Field64, x: &[f64]) -> Vec<f64> {
        let a: Vec<f64> = f.l1.apply(x).into_iter().map(|z| self.sigma(z)).collect();
        f.l2.apply(&a)
    }

    /// `Dv(x) = W2·diag(σ'(W1·x + b1))·W1`, `dim × dim`.
    fn dv(&self, f: &Field64, x: &[f64]) -> Vec<f64> {
        let (d, hid) = (self.dim, f.l1.out);
        let s: Vec<f64> =
            f.l1.apply(x)
                .into_iter()
                .map(|z| self.sigma_prime(z))
                .collect();
        let mut out = vec![0.0; d * d];
        for i in 0..d {
            let w2 = &f.l2.w[i * hid..(i + 1) * hid];
            for ((w2, s), w1) in w2.iter().zip(&s).zip(f.l1.w.chunks_exact(d)) {
                let a = w2 * s;
                if a == 0.0 {
                    continue;
                }
                for (o, w) in out[i * d..(i + 1) * d].iter_mut().zip(w1) {
                    *o += a * w;
                }
            }
        }
        out
    }

    /// The C1 increment `Φ(x)` of `sign·v` (−1 integrates the field backwards).
    fn increment(&self, f: &Field64, x: &[f64], h: f64, sign: f64) -> Vec<f64> {
        let (c, b) = tableau(self.integrator);
        let mut phi = vec![0.0; x.len()];
        let mut k: Vec<f64> = Vec::new();
        for (&cs, &bs) in c.iter().zip(b) {
            let y: Vec<f64> = if k.is_empty() {
                x.to_vec()
            } else {
                x.iter().zip(&k).map(|(x, k)| x + cs * h * k).collect()
            };
            k = self.v(f, &y).into_iter().map(|v| sign * v).collect();
            for (p, k) in phi.iter_mut().zip(&k) {
                *p += bs * k;
            }
        }
        phi
    }

    /// `∂x_{k+1}/∂x_k` of a C1 step: `I + h·Σ b_s·∂k_s/∂x` with
    /// `∂k_s/∂x = Dv(y_s)·(I + c_s·h·∂k_{s−1}/∂x)`.
    fn c1_step_jacobian(&self, f: &Field64, x: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let h = self.h;
        let (c, b) = tableau(self.integrator);
        let mut jac = identity(d);
        let mut k: Vec<f64> = Vec::new();
        let mut dk: Vec<f64> = Vec::new();
        for (&cs, &bs) in c.iter().zip(b) {
            let (y, dy) = if k.is_empty() {
                (x.to_vec(), identity(d))
            } else {
                let y: Vec<f64> = x.iter().zip(&k).map(|(x, k)| x + cs * h * k).collect();
                let mut dy = identity(d);
                for (a, b) in dy.iter_mut().zip(&dk) {
                    *a += cs * h * b;
                }
                (y, dy)
            };
            k = self.v(f, &y);
            dk = mat_mul(&self.dv(f, &y), &dy, d, d, d);
            for (j, g) in jac.iter_mut().zip(&dk) {
                *j += h * bs * g;
            }
        }
        jac
    }

    /// `x_{k+1}` from `x_{k−1}` (`prev`, used by C2 only) and `x_k` (`cur`).
    fn step(&self, k: usize, prev: &[f64], cur: &[f64]) -> Vec<f64> {
        let f = self.field(k);
        match self.form {
            Form::C0 => self.v(f, cur),
            Form::C1 => {
                let phi = self.increment(f, cur, self.h, 1.0);
                cur.iter().zip(&phi).map(|(x, p)| x + self.h * p).collect()
            }
            Form::C2 => {
                let v = self.v(f, cur);
                let h2 = self.h * self.h;
                (0..cur.len())
                    .map(|j| 2.0 * cur[j] - prev[j] + h2 * v[j])
                    .collect()
            }
        }
    }

    /// States `x_l ..= x_N` starting at layer `l` from `x_{l−1}` = `prev` and `x_l` = `cur`
    /// (`prev` matters for C2 only; at `l = 0` it must be `x_0` itself).
    fn states_from(&self, l: usize, prev: &[f64], cur: &[f64]) -> Vec<Vec<f64>> {
        let mut states = Vec::with_capacity(self.steps + 1 - l);
        states.push(cur.to_vec());
        let mut prev = prev.to_vec();
        for k in l..self.steps {
            let next = self.step(k, &prev, &states[states.len() - 1]);
            prev = states[states.len() - 1].clone();
            states.push(next);
        }
        states
    }

    fn states(&self, x0: &[f64]) -> Vec<Vec<f64>> {
        self.states_from(0, x0, x0)
    }

    /// `∂x_{k+1}/∂x_k` for C0 and C1.
    fn step_jacobian(&self, k: usize, x: &[f64]) -> Vec<f64> {
        let f = self.field(k);
        match self.form {
            Form::C0 => self.dv(f, x),
            Form::C1 => self.c1_step_jacobian(f, x),
            Form::C2 => unreachable!("a C2 step depends on two states"),
        }
    }

    /// `∂x_N/∂x_0` along `states`.
    fn total_jacobian(&self, states: &[Vec<f64>]) -> Vec<f64> {
        let d = self.dim;
        let mut jac = identity(d);
        match self.form {
            Form::C0 | Form::C1 => {
                for (k, x) in states[..self.steps].iter().enumerate() {
                    jac = mat_mul(&self.step_jacobian(k, x), &jac, d, d, d);
                }
            }
            Form::C2 => {
                // J_{k+1} = 2J_k − J_{k−1} + h²·Dv_k(x_k)·J_k with J_{−1} = J_0 = I.
                let h2 = self.h * self.h;
                let mut prev = identity(d);
                for (k, x) in states[..self.steps].iter().enumerate() {
                    let dvj = mat_mul(&self.dv(self.field(k), x), &jac, d, d, d);
                    let next: Vec<f64> = (0..d * d)
                        .map(|i| 2.0 * jac[i] - prev[i] + h2 * dvj[i])
                        .collect();
                    prev = std::mem::replace(&mut jac, next);
                }
            }
        }
        jac
    }

    /// The adjoints `A_l = ∂x_N/∂x_l` for `l = 0..=N` along `states`.
    fn adjoints(&self, states: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (d, n) = (self.dim, self.steps);
        let mut adj = vec![Vec::new(); n + 1];
        adj[n] = identity(d);
        match self.form {
            Form::C0 | Form::C1 => {
                for l in (0..n).rev() {
                    adj[l] = mat_mul(&adj[l + 1], &self.step_jacobian(l, &states[l]), d, d, d);
                }
            }
            Form::C2 => {
                let h2 = self.h * self.h;
                let zero = vec![0.0; d * d];
                for l in (0..n).rev() {
                    // x_l enters x_{l+1} through 2I + h²·Dv_l and x_{l+2} through −I; at l = 0
                    // it also stands for x_{−1}, which enters x_1 through −I.
                    let mut m = self.dv(self.field(l), &states[l]);
                    m.iter_mut().for_each(|v| *v *= h2);
                    let diag = if l == 0 { 1.0 } else { 2.0 };
                    for i in 0..d {
                        m[i * d + i] += diag;
                    }
                    let mut a = mat_mul(&adj[l + 1], &m, d, d, d);
                    let after = if l + 2 <= n { &adj[l + 2] } else { &zero };
                    for (a, b) in a.iter_mut().zip(after) {
                        *a -= b;
                    }
                    adj[l] = a;
                }
            }
        }
        adj
    }

    /// Inverts one C1 step: iterates `x ← target − h·Φ_k(x)` from `x = target`.
    fn invert_c1_step(&self, k: usize, target: &[f64]) -> Vec<f64> {
        let f = self.field(k);
        let mut x = target.to_vec();
        for _ in 0..FIXED_POINT_ITERS {
            let phi = self.increment(f, &x, self.h, 1.0);
            let next: Vec<f64> = target
                .iter()
                .zip(&phi)
                .map(|(t, p)| t - self.h * p)
                .collect();
            let change = dist(&next, &x);
            x = next;
            // Converged, or non-finite: either way more iterations change nothing.
            if change < FIXED_POINT_TOL || change.is_nan() {
                break;
            }
        }
        x
    }

    /// `x̂_0` recovered from the states of the forward pass (`None` for C0).
    /// A shared C1 flow's backward flow: the same integrator applied to `−v`, N steps of `h`
    /// from `x_N` (it inverts the ODE, and the network only approximately).
    fn invert_backward_flow(&self, states: &[Vec<f64>]) -> Vec<f64> {
        let f = self.field(0);
        let mut x = states[self.steps].clone();
        for _ in 0..self.steps {
            let phi = self.increment(f, &x, self.h, -1.0);
            x.iter_mut().zip(&phi).for_each(|(x, p)| *x += self.h * p);
        }
        x
    }

    /// A C1 flow inverted step by step by fixed-point iteration from `x_N`.
    fn invert_fixed_point(&self, states: &[Vec<f64>]) -> Vec<f64> {
        let mut x = states[self.steps].clone();
        for k in (0..self.steps).rev() {
            x = self.invert_c1_step(k, &x);
        }
        x
    }

    /// A C2 flow run backwards: `x_{k−1} = 2x_k − x_{k+1} + h²·v_k(x_k)` from `(x_N, x_{N−1})`.
    fn invert_c2(&self, states: &[Vec<f64>]) -> Vec<f64> {
        let (n, h2) = (self.steps, self.h * self.h);
        let mut next = states[n].clone();
        let mut cur = states[n - 1].clone();
        for k in (1..n).rev() {
            let v = self.v(self.field(k), &cur);
            let prev: Vec<f64> = (0..self.dim)
                .map(|j| 2.0 * cur[j] - next[j] + h2 * v[j])
                .collect();
            next = std::mem::replace(&mut cur, prev);
        }
        cur
    }
}

const FIXED_POINT_ITERS: usize = 200;
const FIXED_POINT_TOL: f64 = 1e-12;

fn identity(d: usize) -> Vec<f64> {
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = 1.0;
    }
    m
}

/// `a (n × k) · b (k × m)`, row-major.
fn mat_mul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            let a = a[i * k + p];
            if a == 0.0 {
                continue;
            }
            for (o, b) in out[i * m..(i + 1) * m]
                .iter_mut()
                .zip(&b[p * m..(p + 1) * m])
            {
                *o += a * b;
            }
        }
    }
    out
}

/// `aᵀa` for `a` of shape `n × m`: `m × m`.
fn gram(a: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for r in 0..n {
        let row = &a[r * m..(r + 1) * m];
        for i in 0..m {
            for j in 0..m {
                out[i * m + j] += row[i] * row[j];
            }
        }
    }
    out
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

impl Flow {
    fn net64(&self) -> Net64 {
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
        let mut params = vec![0.0; layout.total];
        let mut copy = |to: &Linear, from: &Linear| {
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

/// Summary of symmetric `d × d` matrices, one per point. Eigenvalue means and maxima run over
/// every eigenvalue of every point; `eig_min_mean` is the mean of each point's smallest. The
/// condition number `λmax/λmin` is summarised over the regular points only: a plain (c0) layer
/// can squash the plane onto a line, where g is singular and the condition number infinite, and
/// `singular_frac` counts those points (λmin ≤ 1e-12·λmax, or not finite) apart. All NaN when
/// there is no matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricStats {
    pub det_mean: f64,
    pub det_max: f64,
    pub eig_mean: f64,
    pub eig_max: f64,
    pub eig_min_mean: f64,
    /// Mean and max of the condition number over the regular points; `None` when none is.
    pub cond: Option<(f64, f64)>,
    pub singular_frac: f64,
}

/// [`MetricStats`] of the `g.len() / (d·d)` matrices in `g`.
///
/// # Panics
/// If `d` is 0 or `g` is not a whole number of `d × d` matrices.
pub fn metric_stats(g: &[f64], d: usize) -> MetricStats {
    assert!(
        d > 0 && g.len().is_multiple_of(d * d),
        "{} values are not a whole number of {d}×{d} matrices",
        g.len()
    );
    let n = g.len() / (d * d);
    if n == 0 {
        return MetricStats {
            det_mean: f64::NAN,
            det_max: f64::NAN,
            eig_mean: f64::NAN,
            eig_max: f64::NAN,
            eig_min_mean: f64::NAN,
            cond: None,
            singular_frac: f64::NAN,
        };
    }
    let mut s = MetricStats {
        det_mean: 0.0,
        det_max: f64::NEG_INFINITY,
        eig_mean: 0.0,
        eig_max: f64::NEG_INFINITY,
        eig_min_mean: 0.0,
        cond: None,
        singular_frac: 0.0,
    };
    let (mut cond_sum, mut cond_max, mut regular) = (0.0, 0.0f64, 0usize);
    for m in g.chunks_exact(d * d) {
        let dt = det(m, d);
        s.det_mean += dt;
        s.det_max = s.det_max.max(dt);
        let (eig, _) = sym_eigen(m, d);
        let (lo, hi) = (eig[0], eig[d - 1]);
        s.eig_mean += eig.iter().sum::<f64>();
        s.eig_max = s.eig_max.max(hi);
        s.eig_min_mean += lo;
        if lo.is_finite() && hi.is_finite() && lo > 0.0 && lo > 1e-12 * hi {
            cond_sum += hi / lo;
            cond_max = cond_max.max(hi / lo);
            regular += 1;
        }
    }
    s.det_mean /= n as f64;
    s.eig_mean /= (n * d) as f64;
    s.eig_min_mean /= n as f64;
    s.cond = (regular > 0).then(|| (cond_sum / regular as f64, cond_max));
    s.singular_frac = (n - regular) as f64 / n as f64;
    s
}

/// The determinant of the row-major `d × d` matrix `m`, by LU with partial pivoting.
pub fn det(m: &[f64], d: usize) -> f64 {
    assert_eq!(m.len(), d * d, "det of a {d}×{d} matrix");
    let mut a = m.to_vec();
    let mut det = 1.0;
    for c in 0..d {
        let p = (c..d)
            .max_by(|&i, &j| a[i * d + c].abs().total_cmp(&a[j * d + c].abs()))
            .expect("c < d");
        let pivot = a[p * d + c];
        if pivot == 0.0 {
            return 0.0;
        }
        if p != c {
            for j in 0..d {
                a.swap(p * d + j, c * d + j);
            }
            det = -det;
        }
        det *= pivot;
        for r in c + 1..d {
            let f = a[r * d + c] / pivot;
            if f != 0.0 {
                for j in c..d {
                    a[r * d + j] -= f * a[c * d + j];
                }
            }
        }
    }
    det
}

/// Eigenvalues (ascending) and eigenvectors (the columns of a row-major `d × d` matrix, in
/// the same order) of the symmetric `m`, by cyclic Jacobi rotations. Only the symmetric part
/// `(m + mᵀ)/2` is read.
pub fn sym_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(m.len(), d * d, "sym_eigen of a {d}×{d} matrix");
    let mut a: Vec<f64> = (0..d * d)
        .map(|i| 0.5 * (m[i] + m[(i % d) * d + i / d]))
        .collect();
    let mut v = identity(d);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..d * d)
            .filter(|i| i / d != i % d)
            .map(|i| a[i] * a[i])
            .sum();
        if off <= f64::EPSILON * f64::EPSILON * total || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // Numerical Recipes' rotation: A ← PᵀAP, P_pq = s, P_qp = −s, zeroing a_pq.
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| a[i * d + i].total_cmp(&a[j * d + j]));
    let values = order.iter().map(|&i| a[i * d + i]).collect();
    let mut vectors = vec![0.0; d * d];
    for (col, &i) in order.iter().enumerate() {
        for k in 0..d {
            vectors[k * d + col] = v[k * d + i];
        }
    }
    (values, vectors)
}

/// A regular grid of `nx × ny` points (row-major `x, y` pairs, the x index fastest).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub nx: usize,
    pub ny: usize,
    pub points: Vec<f32>,
}

/// A regular `nx × ny` grid over the bounding box of the 2-D points `x` (row-major, 2 per
/// row), padded on each side by `pad` times the box's size along that axis. A side of zero
/// extent (or no points at all, whose box is the origin) is padded as if it had size 1; a
/// side with one grid point puts it in the middle.
pub fn grid_over(x: &[f32], nx: usize, ny: usize, pad: f32) -> Grid {
    assert!(x.len().is_multiple_of(2), "grid_over takes 2-D points");
    let axis = |j: usize, n: usize| -> Vec<f32> {
        let vals = x.iter().skip(j).step_by(2).map(|&v| f64::from(v));
        let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            (lo, hi) = (0.0, 0.0);
        }
        let size = if hi > lo { hi - lo } else { 1.0 };
        let (lo, hi) = (lo - f64::from(pad) * size, hi + f64::from(pad) * size);
        (0..n)
            .map(|i| {
                if n == 1 {
                    (0.5 * (lo + hi)) as f32
                } else {
                    (lo + (hi - lo) * i as f64 / (n - 1) as f64) as f32
                }
            })
            .collect()
    };
    let (xs, ys) = (axis(0, nx), axis(1, ny));
    let points = ys
        .iter()
        .flat_map(|&y| xs.iter().flat_map(move |&x| [x, y]))
        .collect();
    Grid { nx, ny, points }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    const FORMS: [(Form, Integrator); 5] = [
        (Form::C0, Integrator::Euler),
        (Form::C1, Integrator::Euler),
        (Form::C1, Integrator::Midpoint),
        (Form::C1, Integrator::Rk4),
        (Form::C2, Integrator::Euler),
    ];

    fn config(form: Form, integrator: Integrator, weights: Weights, in_dim: usize) -> FlowConfig {
        FlowConfig {
            in_dim,
            classes: 3,
            dim: 3,
            hidden: 6,
            steps: 4,
            h: 0.25,
            weights,
            form,
            integrator,
            activation: Activation::Tanh,
        }
    }

    /// A flow of any form (past `FlowConfig::validate`'s guard) with its initial parameters
    /// times `scale`.
    fn flow(cfg: FlowConfig, seed: u64, scale: f32) -> Flow {
        let layout = Layout::new(&cfg);
        let params = layout.init(seed).into_iter().map(|v| v * scale).collect();
        Flow::from_parts(cfg, layout, params).unwrap()
    }

    fn points(rows: usize, dim: usize, seed: u64, bound: f32) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed, 99);
        (0..rows * dim).map(|_| rng.uniform(bound)).collect()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }

    /// Central differences of `f: R^d → R^d` at `x`: `d × d`, row-major.
    fn fd_jacobian(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], eps: f64) -> Vec<f64> {
        let d = x.len();
        let mut jac = vec![0.0; d * d];
        for j in 0..d {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[j] += eps;
            down[j] -= eps;
            let (fu, fd) = (f(&up), f(&down));
            for i in 0..d {
                jac[i * d + j] = (fu[i] - fd[i]) / (2.0 * eps);
            }
        }
        jac
    }

    #[test]
    fn analysis_trace_through_the_head_matches_predict_logits() {
        for weights in [Weights::Shared, Weights::Unshared] {
            for in_dim in [2, 3] {
                let cfg = config(Form::C1, Integrator::Euler, weights, in_dim);
                let f = Flow::init(&cfg, 7).unwrap();
                let x = points(5, in_dim, 1, 2.0);
                let trace = f.trace(&x).unwrap();
                assert_eq!((trace.rows, trace.layers, trace.dim), (5, 5, 3));
                let head = Dense::new(&f.layout().head, f.params());
                let logits = f.predict_logits(&x).unwrap();
                for row in 0..5 {
                    let ours = head.apply(trace.state(cfg.steps, row));
                    for (o, l) in ours.iter().zip(&logits[row * 3..row * 3 + 3]) {
                        assert!((o - f64::from(*l)).abs() < 1e-4, "{weights:?} {in_dim}");
                    }
                }
                // Layer 0 is the lift `W·x + b`, and `lift_matrix` is its `W`.
                let lift = f.lift_matrix();
                let row0: Vec<f64> = x[..in_dim].iter().map(|&v| f64::from(v)).collect();
                let mut x0 = mat_mul(&lift, &row0, 3, in_dim, 1);
                match f.layout().lift {
                    Some(l) => {
                        assert_eq!(in_dim, 2);
                        let w: Vec<f64> = l.w(f.params()).iter().map(|&v| f64::from(v)).collect();
                        assert_eq!(lift, w);
                        x0.iter_mut()
                            .zip(l.b(f.params()))
                            .for_each(|(x, b)| *x += f64::from(*b));
                    }
                    None => assert_eq!(lift, identity(3)),
                }
                assert!(max_abs_diff(&x0, trace.state(0, 0)) < 1e-15);
            }
        }
    }

    #[test]
    fn analysis_refuses_ragged_and_empty_input() {
        let f = Flow::init(&config(Form::C1, Integrator::Euler, Weights::Shared, 2), 1).unwrap();
        for x in [&[1.0f32, 2.0, 3.0][..], &[]] {
            assert!(matches!(f.trace(x), Err(NnError::InvalidData(_))));
            assert!(matches!(f.flow_jacobians(x), Err(NnError::InvalidData(_))));
            assert!(matches!(f.inverse_errors(x), Err(NnError::InvalidData(_))));
            assert!(matches!(
                f.metric_convergence(x),
                Err(NnError::InvalidData(_))
            ));
        }
    }

    #[test]
    fn analysis_flow_jacobians_match_finite_differences() {
        for (form, integrator) in FORMS {
            for activation in [Activation::Tanh, Activation::Relu] {
                for weights in [Weights::Shared, Weights::Unshared] {
                    let mut cfg = config(form, integrator, weights, 2);
                    cfg.activation = activation;
                    let f = flow(cfg, 3, 2.0);
                    let net = f.net64();
                    let x = points(4, 2, 5, 1.5);
                    let jac = f.flow_jacobians(&x).unwrap();
                    let dets = f.jacobian_dets(&x).unwrap();
                    // ReLU nets are piecewise affine, so central differences are exact up to
                    // rounding unless they straddle a kink: a tiny step makes that unlikely.
                    let eps = match activation {
                        Activation::Tanh => 1e-5,
                        Activation::Relu => 1e-7,
                    };
                    for (row, chunk) in x.chunks_exact(2).enumerate() {
                        let x0 = net.lift(chunk);
                        let fd = fd_jacobian(|x| net.states(x).pop().unwrap(), &x0, eps);
                        let ours = &jac[row * 9..row * 9 + 9];
                        let scale = fd.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                        let err = max_abs_diff(ours, &fd);
                        assert!(
                            err < 1e-6 * scale,
                            "{form:?} {integrator:?} {activation:?} {weights:?}: {err}"
                        );
                        assert!((dets[row] - det(&fd, 3)).abs() < 1e-5 * scale.powi(3));
                    }
                    // The nonlinearity is exercised: rows differ.
                    if form != Form::C0 || activation == Activation::Tanh {
                        assert!(max_abs_diff(&jac[..9], &jac[9..18]) > 1e-3);
                    }
                }
            }
        }
    }

    #[test]
    fn analysis_pullback_metrics_match_finite_differences() {
        for (form, integrator) in FORMS {
            for weights in [Weights::Shared, Weights::Unshared] {
                let cfg = config(form, integrator, weights, 2);
                let steps = cfg.steps;
                let f = flow(cfg, 11, 2.0);
                let net = f.net64();
                let x = points(3, 2, 2, 1.5);
                let g = f.pullback_metrics(&x).unwrap();
                assert_eq!(g.len(), (steps + 1) * 3 * 9);
                let jac = f.flow_jacobians(&x).unwrap();
                let trace = f.trace(&x).unwrap();
                for row in 0..3 {
                    for l in 0..=steps {
                        let at = (l * 3 + row) * 9;
                        let ours = &g[at..at + 9];
                        let xl = trace.state(l, row);
                        // x_{l−1} is held (C2 from layer 1 on), except at layer 0 where it is x_0.
                        let fd = if l == 0 {
                            fd_jacobian(|x| net.states(x).pop().unwrap(), xl, 1e-5)
                        } else {
                            let prev = trace.state(l - 1, row).to_vec();
                            fd_jacobian(|x| net.states_from(l, &prev, x).pop().unwrap(), xl, 1e-5)
                        };
                        let expect = gram(&fd, 3, 3);
                        let scale = expect.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                        let err = max_abs_diff(ours, &expect);
                        assert!(
                            err < 1e-6 * scale,
                            "{form:?} {integrator:?} {weights:?} layer {l}: {err}"
                        );
                    }
                    // g_0 = JᵀJ with the analytic whole-flow Jacobian.
                    let j0 = gram(&jac[row * 9..row * 9 + 9], 3, 3);
                    let g0 = &g[row * 9..row * 9 + 9];
                    assert!(
                        max_abs_diff(g0, &j0)
                            < 1e-10 * j0.iter().fold(1.0f64, |m, v| m.max(v.abs()))
                    );
                }
                // The input metric is Lᵀ g_0 L.
                let lift = f.lift_matrix();
                let input = f.input_metrics(&x).unwrap();
                assert_eq!(input.len(), 3 * 4);
                for row in 0..3 {
                    let g0 = &g[row * 9..row * 9 + 9];
                    let lt: Vec<f64> = (0..6).map(|i| lift[(i % 3) * 2 + i / 3]).collect();
                    let expect = mat_mul(&mat_mul(&lt, g0, 2, 3, 3), &lift, 2, 3, 2);
                    assert!(max_abs_diff(&input[row * 4..row * 4 + 4], &expect) < 1e-10);
                }
            }
        }
    }

    /// `v(x) = A·x` exactly: ReLU units that stay active (`W1 = I`, `b1 = 8`) and
    /// `b2 = −A·b1`, with `A = [[−0.5, −1], [1, −0.5]]` (all exact in f32), so the flow over
    /// time 1 is `exp(A) = e^{−1/2}·R(1)`.
    fn linear_field_flow(integrator: Integrator, steps: usize) -> Flow {
        let cfg = FlowConfig {
            in_dim: 2,
            classes: 2,
            dim: 2,
            hidden: 2,
            steps,
            h: 1.0 / steps as f32,
            weights: Weights::Shared,
            form: Form::C1,
            integrator,
            activation: Activation::Relu,
        };
        let layout = Layout::new(&cfg);
        let mut p = vec![0.0f32; layout.total];
        let fld = layout.fields[0];
        let a = [-0.5f32, -1.0, 1.0, -0.5];
        p[fld.l1.w..fld.l1.w + 4].copy_from_slice(&[1.0, 0.0, 0.0, 1.0]);
        p[fld.l1.b..fld.l1.b + 2].copy_from_slice(&[8.0, 8.0]);
        p[fld.l2.w..fld.l2.w + 4].copy_from_slice(&a);
        p[fld.l2.b..fld.l2.b + 2].copy_from_slice(&[-8.0 * (a[0] + a[1]), -8.0 * (a[2] + a[3])]);
        Flow::from_parts(cfg, layout, p).unwrap()
    }

    /// `min_det_j` of a contracting, Lipschitz-constrained shared flow at 32 steps came out
    /// as −3e-19: the determinant of the chained Jacobian, whose columns had become parallel to
    /// working precision. Per-step determinants multiply to the exact, positive value.
    #[test]
    fn analysis_a_contracting_flow_had_a_rounding_noise_determinant_of_either_sign() {
        let mut flow = linear_field_flow(Integrator::Euler, 32);
        let (layout, mut cfg) = (flow.layout().clone(), flow.config().clone());
        cfg.h = 1.0;
        // I + A = R·diag(1, 0.1) with R a rotation by 0.3: one direction contracts 10× per step.
        let (c, s) = (0.3f32.cos(), 0.3f32.sin());
        let m = [c, -0.1 * s, s, 0.1 * c];
        let a = [m[0] - 1.0, m[1], m[2], m[3] - 1.0];
        let mut p = flow.params().to_vec();
        let fld = layout.fields[0];
        p[fld.l2.w..fld.l2.w + 4].copy_from_slice(&a);
        p[fld.l2.b..fld.l2.b + 2].copy_from_slice(&[-8.0 * (a[0] + a[1]), -8.0 * (a[2] + a[3])]);
        flow = Flow::from_parts(cfg, layout, p).unwrap();
        let step_det =
            f64::from(1.0 + a[0]) * f64::from(1.0 + a[3]) - f64::from(a[1]) * f64::from(a[2]);
        let want = step_det.powi(32);
        for d in flow.jacobian_dets(&[0.5, -0.25, 1.0, 1.0]).unwrap() {
            assert!(d > 0.0 && ((d - want) / want).abs() < 1e-9, "{d} vs {want}");
        }
    }

    #[test]
    fn analysis_integrators_converge_at_their_order_on_a_linear_field() {
        let x = [1.0f32, 0.5, -2.0, 1.0, 0.25, -3.0];
        let exact = |p: &[f32]| {
            let (c, s, e) = (1f64.cos(), 1f64.sin(), (-0.5f64).exp());
            let (a, b) = (f64::from(p[0]), f64::from(p[1]));
            [e * (c * a - s * b), e * (s * a + c * b)]
        };
        for (integrator, ratio) in [
            (Integrator::Euler, 2.0),
            (Integrator::Midpoint, 4.0),
            (Integrator::Rk4, 16.0),
        ] {
            let errors: Vec<f64> = [8, 16, 32]
                .into_iter()
                .map(|n| {
                    let trace = linear_field_flow(integrator, n).trace(&x).unwrap();
                    (0..3)
                        .map(|row| dist(trace.state(n, row), &exact(&x[row * 2..row * 2 + 2])))
                        .fold(0.0, f64::max)
                })
                .collect();
            for w in errors.windows(2) {
                let r = w[0] / w[1];
                assert!(
                    (r / ratio - 1.0).abs() < 0.15,
                    "{integrator:?}: errors {errors:?}, ratio {r}"
                );
            }
            // The analytic Jacobian of a linear flow is its matrix.
            let jac = linear_field_flow(integrator, 32)
                .flow_jacobians(&x)
                .unwrap();
            let e = (-0.5f64).exp();
            let expect = [
                e * 1f64.cos(),
                -e * 1f64.sin(),
                e * 1f64.sin(),
                e * 1f64.cos(),
            ];
            assert!(max_abs_diff(&jac[..4], &expect) < 2.0 * errors[2] + 1e-12);
        }
    }

    #[test]
    fn analysis_inverse_errors() {
        let x = points(6, 2, 4, 1.5);
        let shared = |steps: usize| {
            let mut cfg = config(Form::C1, Integrator::Euler, Weights::Shared, 2);
            cfg.steps = steps;
            cfg.h = 1.0 / steps as f32;
            flow(cfg, 21, 0.7)
        };
        let backward: Vec<f64> = [4, 8, 16]
            .into_iter()
            .map(|n| shared(n).inverse_errors(&x).unwrap().inverse.unwrap())
            .collect();
        assert!(backward[0] < 0.1, "{backward:?}");
        for w in backward.windows(2) {
            let r = w[0] / w[1];
            assert!(
                (1.7..2.3).contains(&r),
                "backward flow error is O(h): {backward:?}"
            );
        }
        for n in [4, 8, 16] {
            let fp = shared(n).inverse_errors(&x).unwrap().fixed_point.unwrap();
            assert!(fp < 1e-9, "{fp}");
        }
        // The backward flow of a shared field is only the ODE's inverse: its error is of the
        // integrator's order (h = 1/4 here), while fixed-point inversion is exact.
        let mut backward = Vec::new();
        for integrator in [Integrator::Midpoint, Integrator::Rk4] {
            let f = flow(config(Form::C1, integrator, Weights::Unshared, 2), 5, 1.0);
            let e = f.inverse_errors(&x).unwrap().inverse.unwrap();
            assert!(e < 1e-9, "{integrator:?}: {e}");
            let f = flow(config(Form::C1, integrator, Weights::Shared, 2), 5, 1.0);
            assert!(f.inverse_errors(&x).unwrap().fixed_point.unwrap() < 1e-9);
            backward.push(f.inverse_errors(&x).unwrap().inverse.unwrap());
        }
        assert!(
            backward[1] > 1e-10 && backward[0] > 100.0 * backward[1],
            "{backward:?}"
        );
        for weights in [Weights::Shared, Weights::Unshared] {
            let f = flow(config(Form::C2, Integrator::Euler, weights, 2), 8, 2.0);
            let e = f.inverse_errors(&x).unwrap().inverse.unwrap();
            assert!(e < 1e-12, "C2: {e}");
            let f = flow(config(Form::C0, Integrator::Euler, weights, 2), 8, 2.0);
            assert_eq!(f.inverse_errors(&x).unwrap().inverse, None);
            assert_eq!(f.inverse_errors(&x).unwrap().fixed_point, None);
        }
        // A step that is not a contraction's inverse diverges to a large or infinite error.
        let mut cfg = config(Form::C1, Integrator::Euler, Weights::Unshared, 2);
        cfg.h = 20.0;
        let e = flow(cfg, 3, 3.0)
            .inverse_errors(&x)
            .unwrap()
            .inverse
            .unwrap();
        assert!(e > 1e-3, "{e}");
    }

    #[test]
    fn analysis_refined_flows() {
        let x = points(5, 2, 6, 1.5);
        let mut cfg = config(Form::C1, Integrator::Euler, Weights::Shared, 2);
        cfg.steps = 8;
        cfg.h = 0.125;
        let f = flow(cfg.clone(), 9, 2.0);
        let r = f.refined();
        let rr = r.refined();
        assert_eq!((r.config().steps, r.config().h), (16, 0.0625));
        assert_eq!(r.params(), f.params());
        let (tf, tr, trr) = (
            f.trace(&x).unwrap(),
            r.trace(&x).unwrap(),
            rr.trace(&x).unwrap(),
        );
        let gap = |a: &Trace, b: &Trace, m: usize| {
            (0..=8)
                .flat_map(|k| (0..5).map(move |row| (k, row)))
                .map(|(k, row)| dist(a.state(k * m, row), b.state(2 * k * m, row)))
                .fold(0.0, f64::max)
        };
        let (g1, g2) = (gap(&tf, &tr, 1), gap(&tr, &trr, 2));
        assert!(g1 > 1e-4 && g1 < 0.2, "{g1}");
        assert!((0.4..0.6).contains(&(g2 / g1)), "{g1} {g2}");

        // Unshared: field k is duplicated into fields 2k and 2k + 1.
        cfg.weights = Weights::Unshared;
        let f = flow(cfg.clone(), 9, 2.0);
        let r = f.refined();
        let field_len = {
            let fl = f.layout().fields[0];
            fl.l1.out * fl.l1.inp + fl.l1.out + fl.l2.out * fl.l2.inp + fl.l2.out
        };
        assert_eq!(r.num_params(), f.num_params() + 8 * field_len);
        assert_eq!(r.layout().fields.len(), 16);
        for (i, to) in r.layout().fields.iter().enumerate() {
            let from = f.layout().fields[i / 2];
            assert_eq!(to.l1.w(r.params()), from.l1.w(f.params()));
            assert_eq!(to.l2.b(r.params()), from.l2.b(f.params()));
        }
        assert_eq!(r.layout().head.w(r.params()), f.layout().head.w(f.params()));
        let (tf, tr) = (f.trace(&x).unwrap(), r.trace(&x).unwrap());
        let g = gap(&tf, &tr, 1);
        assert!(g > 1e-4 && g < 0.2, "{g}");

        // C0: each layer applied twice, h unchanged.
        let c0 = flow(
            config(Form::C0, Integrator::Euler, Weights::Unshared, 2),
            4,
            2.0,
        );
        let r = c0.refined();
        assert_eq!((r.config().steps, r.config().h), (8, 0.25));
        let net = c0.net64();
        let tr = r.trace(&x).unwrap();
        let x0 = net.lift(&x[..2]);
        let twice = net.v(net.field(0), &net.v(net.field(0), &x0));
        assert!(max_abs_diff(tr.state(2, 0), &twice) < 1e-12);
    }

    #[test]
    fn analysis_with_integrator() {
        let f = flow(
            config(Form::C1, Integrator::Euler, Weights::Shared, 2),
            1,
            1.0,
        );
        let g = f.with_integrator(Integrator::Rk4).unwrap();
        assert_eq!(g.config().integrator, Integrator::Rk4);
        assert_eq!(g.params(), f.params());
        let x = points(2, 2, 1, 1.0);
        assert_ne!(f.trace(&x).unwrap(), g.trace(&x).unwrap());
        for form in [Form::C0, Form::C2] {
            let f = flow(config(form, Integrator::Euler, Weights::Shared, 2), 1, 1.0);
            assert!(matches!(
                f.with_integrator(Integrator::Midpoint),
                Err(NnError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn analysis_metric_convergence_separates_c1_from_c0() {
        let x = points(20, 2, 8, 1.5);
        let mut cfg = config(Form::C1, Integrator::Euler, Weights::Unshared, 2);
        cfg.steps = 16;
        cfg.h = 1.0 / 16.0;
        let c1 = flow(cfg.clone(), 2, 1.5).metric_convergence(&x).unwrap();
        cfg.form = Form::C0;
        let c0 = flow(cfg.clone(), 2, 1.5).metric_convergence(&x).unwrap();
        assert!(c1 < 0.1, "{c1}");
        assert!(c0 > 10.0 * c1, "{c0} vs {c1}");
        // Relative to the larger norm: bounded by 2 (triangle inequality) …
        assert!(c0 <= 2.0, "{c0}");
        // … and defined when both metrics vanish (a c0 net with zero weights is constant).
        assert_eq!(flow(cfg, 2, 0.0).metric_convergence(&x).unwrap(), 0.0);
    }

    #[test]
    fn analysis_step_norm() {
        let f = flow(
            config(Form::C1, Integrator::Euler, Weights::Shared, 3),
            1,
            1.0,
        );
        let x = points(4, 3, 3, 1.0);
        let t = f.trace(&x).unwrap();
        let mut sum = 0.0;
        for l in 0..4 {
            for row in 0..4 {
                sum += dist(t.state(l + 1, row), t.state(l, row));
            }
        }
        assert!((f.step_norm(&x).unwrap() - sum / 16.0).abs() < 1e-15);
    }

    #[test]
    fn analysis_det_of_hand_worked_matrices() {
        assert_eq!(det(&[2.0, 1.0, 1.0, 2.0], 2), 3.0);
        // Needs a row swap.
        assert_eq!(det(&[0.0, 1.0, 1.0, 0.0], 2), -1.0);
        assert_eq!(det(&[1.0, 2.0, 2.0, 4.0], 2), 0.0);
        let m = [2.0, -1.0, 0.0, -1.0, 2.0, -1.0, 0.0, -1.0, 2.0];
        assert!((det(&m, 3) - 4.0).abs() < 1e-14);
        let m = [0.0, 2.0, 1.0, 3.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        // Cofactors along the second row: −3·(2·1 − 1·1) = −3.
        assert!((det(&m, 3) + 3.0).abs() < 1e-14);
    }

    #[test]
    fn analysis_sym_eigen_of_hand_worked_matrices() {
        let (vals, vecs) = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!(max_abs_diff(&vals, &[1.0, 3.0]) < 1e-14);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        // Columns (1, −1)/√2 and (1, 1)/√2, up to sign.
        assert!((vecs[0] * vecs[2] + r * r).abs() < 1e-14, "{vecs:?}");
        assert!((vecs[1] * vecs[3] - r * r).abs() < 1e-14, "{vecs:?}");
        let m = [2.0, -1.0, 0.0, -1.0, 2.0, -1.0, 0.0, -1.0, 2.0];
        let (vals, _) = sym_eigen(&m, 3);
        let s = 2f64.sqrt();
        assert!(max_abs_diff(&vals, &[2.0 - s, 2.0, 2.0 + s]) < 1e-14);
        let (vals, vecs) = sym_eigen(&[5.0, 0.0, 0.0, -1.0], 2);
        assert_eq!(vals, [-1.0, 5.0]);
        assert_eq!(vecs, [0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn analysis_sym_eigen_recovers_random_spd_matrices() {
        let mut rng = SplitMix64::new(17, 5);
        for d in [2, 3, 5, 8] {
            // An orthogonal V by Gram–Schmidt on random columns (stored as rows of `q`).
            let mut q: Vec<Vec<f64>> = Vec::new();
            while q.len() < d {
                let mut c: Vec<f64> = (0..d).map(|_| f64::from(rng.uniform(1.0))).collect();
                for b in &q {
                    let dot: f64 = c.iter().zip(b).map(|(a, b)| a * b).sum();
                    c.iter_mut().zip(b).for_each(|(a, b)| *a -= dot * b);
                }
                let n = c.iter().map(|a| a * a).sum::<f64>().sqrt();
                if n > 0.1 {
                    q.push(c.into_iter().map(|a| a / n).collect());
                }
            }
            let lambda: Vec<f64> = (0..d).map(|i| 0.5 + i as f64 * 0.75).collect();
            let mut m = vec![0.0; d * d];
            for (l, col) in lambda.iter().zip(&q) {
                for i in 0..d {
                    for j in 0..d {
                        m[i * d + j] += l * col[i] * col[j];
                    }
                }
            }
            let (vals, vecs) = sym_eigen(&m, d);
            assert!(max_abs_diff(&vals, &lambda) < 1e-12, "{vals:?}");
            // Each returned column is ± the planted one, and V·diag(λ)·Vᵀ rebuilds m.
            for (k, col) in q.iter().enumerate() {
                let dot: f64 = (0..d).map(|i| vecs[i * d + k] * col[i]).sum();
                assert!((dot.abs() - 1.0).abs() < 1e-12);
            }
            let mut back = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    back[i * d + j] = (0..d)
                        .map(|k| vecs[i * d + k] * vals[k] * vecs[j * d + k])
                        .sum();
                }
            }
            assert!(max_abs_diff(&back, &m) < 1e-12);
            let prod: f64 = lambda.iter().product();
            assert!((det(&m, d) - prod).abs() < 1e-11 * prod);
        }
    }

    #[test]
    fn analysis_metric_stats_of_hand_worked_matrices() {
        let g = [1.0, 0.0, 0.0, 4.0, 2.0, 1.0, 1.0, 2.0];
        let s = metric_stats(&g, 2);
        assert!((s.det_mean - 3.5).abs() < 1e-14);
        assert!((s.det_max - 4.0).abs() < 1e-14);
        assert!((s.eig_mean - 9.0 / 4.0).abs() < 1e-14);
        assert!((s.eig_max - 4.0).abs() < 1e-14);
        assert!((s.eig_min_mean - 1.0).abs() < 1e-14);
        let (cond_mean, cond_max) = s.cond.unwrap();
        assert!((cond_mean - 3.5).abs() < 1e-14 && (cond_max - 4.0).abs() < 1e-14);
        assert_eq!(s.singular_frac, 0.0);
        // diag(0, 1) and the rank-one [[1, 1], [1, 1]] are singular: counted apart, so the
        // condition number summarises the regular diag(1, 4) alone.
        let s = metric_stats(
            &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 4.0],
            2,
        );
        assert!((s.singular_frac - 2.0 / 3.0).abs() < 1e-14);
        assert_eq!(s.cond, Some((4.0, 4.0)));
        let s = metric_stats(&[0.0, 0.0, 0.0, 1.0], 2);
        assert_eq!((s.cond, s.singular_frac), (None, 1.0));
        assert!(metric_stats(&[], 3).det_mean.is_nan());
    }

    #[test]
    fn analysis_grid_over_a_padded_bounding_box() {
        let g = grid_over(&[0.0, 0.0, 2.0, 1.0, 1.0, 0.5], 3, 2, 0.5);
        assert_eq!((g.nx, g.ny), (3, 2));
        assert_eq!(
            g.points,
            [
                -1.0, -0.5, 1.0, -0.5, 3.0, -0.5, -1.0, 1.5, 1.0, 1.5, 3.0, 1.5
            ]
        );
        // One point: a box of size 1 per side around it.
        let g = grid_over(&[1.0, 1.0], 2, 1, 0.5);
        assert_eq!(g.points, [0.5, 1.0, 1.5, 1.0]);
    }
}
