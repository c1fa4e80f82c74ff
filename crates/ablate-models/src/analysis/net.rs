//! A flow's definition in f64, one point at a time: its states, step and total Jacobians,
//! adjoints, and the ways to invert it.

use super::linalg::{dist, identity, mat_mul};
use crate::params::{Dense, Layout};
use crate::{Activation, FlowConfig, Form, Integrator, Weights};

/// A dense layer `y = W·x + b` in f64.
pub(super) struct Dense64 {
    inp: usize,
    out: usize,
    pub(super) w: Vec<f64>,
    b: Vec<f64>,
}

impl Dense64 {
    pub(super) fn new(l: &Dense, p: &[f32]) -> Dense64 {
        Dense64 {
            inp: l.inp,
            out: l.out,
            w: l.w(p).iter().map(|&v| f64::from(v)).collect(),
            b: l.b(p).iter().map(|&v| f64::from(v)).collect(),
        }
    }

    pub(super) fn apply(&self, x: &[f64]) -> Vec<f64> {
        (0..self.out)
            .map(|o| {
                let row = &self.w[o * self.inp..(o + 1) * self.inp];
                self.b[o] + row.iter().zip(x).map(|(w, x)| w * x).sum::<f64>()
            })
            .collect()
    }
}

pub(super) struct Field64 {
    l1: Dense64,
    l2: Dense64,
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
pub(super) struct Net64 {
    pub(super) form: Form,
    integrator: Integrator,
    activation: Activation,
    pub(super) weights: Weights,
    pub(super) steps: usize,
    pub(super) dim: usize,
    h: f64,
    pub(super) lift: Option<Dense64>,
    fields: Vec<Field64>,
}

impl Net64 {
    pub(super) fn new(cfg: &FlowConfig, layout: &Layout, p: &[f32]) -> Net64 {
        Net64 {
            form: cfg.form,
            integrator: cfg.integrator,
            activation: cfg.activation,
            weights: cfg.weights,
            steps: cfg.steps,
            dim: cfg.dim,
            h: f64::from(cfg.h),
            lift: layout.lift.as_ref().map(|l| Dense64::new(l, p)),
            fields: layout
                .fields
                .iter()
                .map(|f| Field64 {
                    l1: Dense64::new(&f.l1, p),
                    l2: Dense64::new(&f.l2, p),
                })
                .collect(),
        }
    }

    pub(super) fn field(&self, k: usize) -> &Field64 {
        match self.weights {
            Weights::Shared => &self.fields[0],
            Weights::Unshared => &self.fields[k],
        }
    }

    pub(super) fn lift(&self, x: &[f32]) -> Vec<f64> {
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
    pub(super) fn v(&self, f: &Field64, x: &[f64]) -> Vec<f64> {
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
    pub(super) fn states_from(&self, l: usize, prev: &[f64], cur: &[f64]) -> Vec<Vec<f64>> {
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

    pub(super) fn states(&self, x0: &[f64]) -> Vec<Vec<f64>> {
        self.states_from(0, x0, x0)
    }

    /// `∂x_{k+1}/∂x_k` for C0 and C1.
    pub(super) fn step_jacobian(&self, k: usize, x: &[f64]) -> Vec<f64> {
        let f = self.field(k);
        match self.form {
            Form::C0 => self.dv(f, x),
            Form::C1 => self.c1_step_jacobian(f, x),
            Form::C2 => unreachable!("a C2 step depends on two states"),
        }
    }

    /// `∂x_N/∂x_0` along `states`.
    pub(super) fn total_jacobian(&self, states: &[Vec<f64>]) -> Vec<f64> {
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
    pub(super) fn adjoints(&self, states: &[Vec<f64>]) -> Vec<Vec<f64>> {
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
    pub(super) fn invert_backward_flow(&self, states: &[Vec<f64>]) -> Vec<f64> {
        let f = self.field(0);
        let mut x = states[self.steps].clone();
        for _ in 0..self.steps {
            let phi = self.increment(f, &x, self.h, -1.0);
            x.iter_mut().zip(&phi).for_each(|(x, p)| *x += self.h * p);
        }
        x
    }

    /// A C1 flow inverted step by step by fixed-point iteration from `x_N`.
    pub(super) fn invert_fixed_point(&self, states: &[Vec<f64>]) -> Vec<f64> {
        let mut x = states[self.steps].clone();
        for k in (0..self.steps).rev() {
            x = self.invert_c1_step(k, &x);
        }
        x
    }

    /// A C2 flow run backwards: `x_{k−1} = 2x_k − x_{k+1} + h²·v_k(x_k)` from `(x_N, x_{N−1})`.
    pub(super) fn invert_c2(&self, states: &[Vec<f64>]) -> Vec<f64> {
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
