//! The CPU backend ([`crate::Backend::Cpu`]): the flow's forward pass, its hand-written backward
//! pass on flat `f32` buffers allocated once per training run (the core's optimizer updates
//! them).
//!
//! Why not dfdx tensors here: at the paper's sizes (batch 256, width 32, hidden 64) a step's
//! arithmetic is ~63 MFLOP, and dfdx 0.13 adds about as much again in per-op bookkeeping (a
//! fresh zeroed buffer per op, index arithmetic per element, libm `tanhf`): the tensor path
//! with the same hand-written backward pass runs ~170 steps/s on one core here, this module
//! ~450 (`examples/train_flow_bench.rs`). It does the same maths as [`crate::tensor`] (which
//! stays the device-generic path; the two are tested equal) with six `gemm` calls and two fused
//! element-wise passes per field evaluation, into buffers allocated once. Every form and
//! integrator is a composition of one primitive, a field evaluation `out (+)= s·v(u)` and its
//! backward pass; the workspace keeps each stage's input and activation.
//!
//! A batch is cut into shards of at most [`SHARD_ROWS`] rows, a rule that depends on the batch
//! size alone; shards run on up to `threads` threads and their gradients are summed in shard
//! order, so the result never depends on the thread count.

use std::ops::Range;
use std::sync::{Mutex, RwLock};

use crate::config::{Activation, Form, Integrator};
use ablate_nn::{Loss, Model, layers};

use crate::kernels::{self, View};
use crate::params::{Field, Layout};
use crate::pool::{self, MAX_SHARDS, Pool};
use crate::train::{Accuracy, Minibatch};
use crate::{FlowConfig, NnError};

/// The most rows one shard holds: 128 keeps a shard's activations (~0.5 MB at the paper's
/// sizes) in L2 and gives two shards per batch of 256, one per core. Measured on one thread:
/// 256 is no faster, 64 is ~10% slower (shorter reductions in the weight-gradient products).
pub(crate) const SHARD_ROWS: usize = 128;

/// Rows evaluated at once by [`Net::forward`] outside training.
pub(crate) const EVAL_ROWS: usize = 256;

/// Loss and accuracy counts of one batch (or one shard).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct BatchStats {
    /// Sum over the examples of the cross-entropy.
    pub loss_sum: f64,
    pub correct: usize,
}

impl BatchStats {
    /// As the core's loss of a batch of `rows` examples (the gradient is of the mean).
    pub(crate) fn loss(self, rows: usize) -> Loss<Accuracy> {
        Loss {
            sum: self.loss_sum,
            weight: rows as f64,
            stats: Accuracy {
                correct: self.correct,
                examples: rows,
            },
        }
    }
}

/// A model's parameters with its config and layout: enough to run it.
#[derive(Clone, Copy)]
pub(crate) struct Net<'a> {
    pub cfg: &'a FlowConfig,
    pub layout: &'a Layout,
    pub p: &'a [f32],
}

/// The buffers of one shard.
pub(crate) struct Workspace {
    /// States x_0 … x_N, each `rows × dim`.
    xs: Vec<f32>,
    /// Inputs of the stages after the first of each step (the first stage's input is x_k):
    /// `stages − 1` per step, each `rows × dim`.
    us: Vec<f32>,
    /// Activations σ(W1·u + b1) of every stage of every step, each `rows × hidden`.
    acts: Vec<f32>,
    /// RK4: the field value of the current stage.
    kv: Vec<f32>,
    /// Logits, then their gradient.
    logits: Vec<f32>,
    /// ∂x of the current state; `gy` a second state gradient (C0: the next one; C2: the
    /// pending `−∂x_{k+1}` term of x_{k−1}; RK4: the running sum), `gu` ∂ of a stage input and
    /// `gk` ∂ of a stage's field value (RK4).
    gx: Vec<f32>,
    gy: Vec<f32>,
    gu: Vec<f32>,
    gk: Vec<f32>,
    ga: Vec<f32>,
    /// This shard's gradient, laid out like the parameters.
    grad: Vec<f32>,
    stats: BatchStats,
}

impl Workspace {
    /// Room for `rows` examples; `with_grad` adds the backward-pass buffers.
    pub(crate) fn new(cfg: &FlowConfig, layout: &Layout, rows: usize, with_grad: bool) -> Self {
        let grad_len = |n: usize| if with_grad { n } else { 0 };
        let stages = cfg.integrator.stages();
        let sx = rows * cfg.dim;
        let rk4 = cfg.integrator == Integrator::Rk4;
        let needs_gy = cfg.form != Form::C1 || rk4;
        let needs_gu = cfg.integrator != Integrator::Euler;
        Workspace {
            xs: vec![0.0; (cfg.steps + 1) * sx],
            us: vec![0.0; cfg.steps * (stages - 1) * sx],
            acts: vec![0.0; cfg.steps * stages * rows * cfg.hidden],
            kv: vec![0.0; if rk4 { sx } else { 0 }],
            logits: vec![0.0; rows * cfg.classes],
            gx: vec![0.0; grad_len(sx)],
            gy: vec![0.0; grad_len(if needs_gy { sx } else { 0 })],
            gu: vec![0.0; grad_len(if needs_gu { sx } else { 0 })],
            gk: vec![0.0; grad_len(if rk4 { sx } else { 0 })],
            ga: vec![0.0; grad_len(rows * cfg.hidden)],
            grad: vec![0.0; grad_len(layout.total())],
            stats: BatchStats::default(),
        }
    }

    /// The gradient and loss counts of the last [`Net::shard_step`].
    pub(crate) fn shard_result(&self) -> (&[f32], BatchStats) {
        (&self.grad, self.stats)
    }

    /// The logits of the last forward pass of `rows` examples.
    pub(crate) fn logits(&self, rows: usize, classes: usize) -> &[f32] {
        &self.logits[..rows * classes]
    }
}

/// What [`Net::field`] does with `out` before adding the scaled field value.
enum Out<'s> {
    /// `out := scale·v(u)`
    Set,
    /// `out := src + scale·v(u)`
    From(&'s [f32]),
    /// `out += scale·v(u)`
    Add,
}

impl Net<'_> {
    /// One field evaluation of `rows` inputs `u`: `a := σ(u·W1ᵀ + b1)` (kept for the backward
    /// pass), then `out` (per `init`) gets `scale·(a·W2ᵀ + b2)`.
    #[allow(clippy::too_many_arguments)]
    fn field(
        &self,
        f: &Field,
        u: &[f32],
        rows: usize,
        a: &mut [f32],
        out: &mut [f32],
        init: Out<'_>,
        scale: f32,
    ) {
        let Net { cfg, p, .. } = *self;
        let (d, hid) = (cfg.dim, cfg.hidden);
        kernels::set_rows_bias(a, None, f.l1.b(p), 1.0);
        let w1 = View::new(f.l1.w(p), hid, d).t();
        kernels::matmul(a, true, View::new(u, rows, d), w1, 1.0);
        match cfg.activation {
            Activation::Tanh => kernels::tanh_inplace(a),
            Activation::Relu => kernels::relu_inplace(a),
        }
        match init {
            Out::Set => kernels::set_rows_bias(out, None, f.l2.b(p), scale),
            Out::From(src) => kernels::set_rows_bias(out, Some(src), f.l2.b(p), scale),
            Out::Add => kernels::add_rows_bias(out, f.l2.b(p), scale),
        }
        let w2 = View::new(f.l2.w(p), d, hid).t();
        kernels::matmul(out, true, View::new(a, rows, hid), w2, scale);
    }

    /// Back through `out (+)= scale·v(u)` given `gout` = ∂out: adds the field's parameter
    /// gradients into `grad` and leaves ∂z (z = u·W1ᵀ + b1) in `ga`; then
    /// ∂u = `ga`·W1 is one product the caller writes where it belongs.
    #[allow(clippy::too_many_arguments)]
    fn field_backward(
        &self,
        f: &Field,
        u: &[f32],
        a: &[f32],
        rows: usize,
        gout: &[f32],
        scale: f32,
        ga: &mut [f32],
        grad: &mut [f32],
    ) {
        let Net { cfg, p, .. } = *self;
        let (d, hid) = (cfg.dim, cfg.hidden);
        // out = scale·(a·W2ᵀ + b2): ∂W2 += scale·goutᵀ·a, ∂b2 += scale·Σ gout, ∂a = scale·gout·W2
        kernels::matmul(
            &mut grad[f.l2.w..f.l2.w + d * hid],
            true,
            View::new(gout, rows, d).t(),
            View::new(a, rows, hid),
            scale,
        );
        kernels::add_col_sums(&mut grad[f.l2.b..f.l2.b + d], gout, scale);
        let w2 = View::new(f.l2.w(p), d, hid);
        kernels::matmul(ga, false, View::new(gout, rows, d), w2, scale);
        // a = σ(z): ∂z = ∂a ⊙ σ'(z), ∂b1 += Σ ∂z
        let gb1 = &mut grad[f.l1.b..f.l1.b + hid];
        match cfg.activation {
            Activation::Tanh => kernels::tanh_backward(ga, a, gb1),
            Activation::Relu => kernels::relu_backward(ga, a, gb1),
        }
        // z = u·W1ᵀ + b1: ∂W1 += ∂zᵀ·u
        kernels::matmul(
            &mut grad[f.l1.w..f.l1.w + hid * d],
            true,
            View::new(ga, rows, hid).t(),
            View::new(u, rows, d),
            1.0,
        );
    }

    /// `dst (+)= ga·W1`: the input gradient of the field whose backward pass left ∂z in `ga`.
    fn field_input_grad(&self, f: &Field, ga: &[f32], rows: usize, dst: &mut [f32], add: bool) {
        let (d, hid) = (self.cfg.dim, self.cfg.hidden);
        let w1 = View::new(f.l1.w(self.p), hid, d);
        kernels::matmul(dst, add, View::new(ga, rows, hid), w1, 1.0);
    }

    /// Runs `rows` examples (`x` row-major, `in_dim` wide) through the flow, keeping every
    /// state, stage input and activation in `ws` for the backward pass; the logits end in
    /// `ws.logits`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize, ws: &mut Workspace) {
        let Net { cfg, layout, p } = *self;
        let (d, hid, n, h) = (cfg.dim, cfg.hidden, cfg.steps, cfg.h);
        let stages = cfg.integrator.stages();
        let (sx, sa) = (rows * d, rows * hid);
        let x = &x[..rows * cfg.in_dim];
        let Workspace {
            xs, us, acts, kv, ..
        } = ws;
        let xs = &mut xs[..(n + 1) * sx];
        match &layout.lift {
            Some(l) => layers::dense_forward(l, p, x, rows, &mut xs[..sx]),
            None => xs[..sx].copy_from_slice(x),
        }
        for k in 0..n {
            let f = layout.field(cfg, k);
            let (done, next) = xs.split_at_mut((k + 1) * sx);
            let (xk, xn) = (&done[k * sx..], &mut next[..sx]);
            let mut acts = acts[k * stages * sa..(k + 1) * stages * sa].chunks_exact_mut(sa);
            let mut a = || acts.next().expect("one activation buffer per stage");
            let u = &mut us[k * (stages - 1) * sx..(k + 1) * (stages - 1) * sx];
            match (cfg.form, cfg.integrator) {
                (Form::C1, Integrator::Euler) => {
                    // x' = x + h·v(x)
                    self.field(f, xk, rows, a(), xn, Out::From(xk), h);
                }
                (Form::C1, Integrator::Midpoint) => {
                    // u = x + h/2·v(x); x' = x + h·v(u)
                    self.field(f, xk, rows, a(), u, Out::From(xk), h / 2.0);
                    self.field(f, u, rows, a(), xn, Out::From(xk), h);
                }
                (Form::C1, Integrator::Rk4) => {
                    // k1 = v(x), u1 = x + h/2·k1, k2 = v(u1), u2 = x + h/2·k2, k3 = v(u2),
                    // u3 = x + h·k3, k4 = v(u3); x' = x + h/6·k1 + h/3·k2 + h/3·k3 + h/6·k4
                    let (u1, rest) = u.split_at_mut(sx);
                    let (u2, u3) = rest.split_at_mut(sx);
                    let kv = &mut kv[..sx];
                    self.field(f, xk, rows, a(), kv, Out::Set, 1.0);
                    kernels::combine(xn, 1.0, xk, h / 6.0, kv);
                    kernels::combine(u1, 1.0, xk, h / 2.0, kv);
                    self.field(f, u1, rows, a(), kv, Out::Set, 1.0);
                    kernels::axpy(xn, h / 3.0, kv);
                    kernels::combine(u2, 1.0, xk, h / 2.0, kv);
                    self.field(f, u2, rows, a(), kv, Out::Set, 1.0);
                    kernels::axpy(xn, h / 3.0, kv);
                    kernels::combine(u3, 1.0, xk, h, kv);
                    self.field(f, u3, rows, a(), kv, Out::Set, 1.0);
                    kernels::axpy(xn, h / 6.0, kv);
                }
                (Form::C0, _) => {
                    // x' = v(x)
                    self.field(f, xk, rows, a(), xn, Out::Set, 1.0);
                }
                (Form::C2, _) if k == 0 => {
                    // x_1 = 2x_0 − x_{−1} + h²·v(x_0) with x_{−1} = x_0
                    self.field(f, xk, rows, a(), xn, Out::From(xk), h * h);
                }
                (Form::C2, _) => {
                    // x_{k+1} = 2x_k − x_{k−1} + h²·v(x_k)
                    let xprev = &done[(k - 1) * sx..k * sx];
                    kernels::combine(xn, 2.0, xk, -1.0, xprev);
                    self.field(f, xk, rows, a(), xn, Out::Add, h * h);
                }
            }
        }
        layers::dense_forward(&layout.head, p, &xs[n * sx..], rows, &mut ws.logits);
    }

    /// Cross-entropy of the logits in `ws` against `y`; replaces the logits by
    /// `scale · ∂(Σ loss)/∂logits` = `scale · (softmax − onehot)`.
    fn loss_and_grad(&self, y: &[u32], scale: f32, ws: &mut Workspace) -> BatchStats {
        let c = self.cfg.classes;
        let mut stats = BatchStats::default();
        for (row, &label) in ws.logits[..y.len() * c].chunks_exact_mut(c).zip(y) {
            let (loss, argmax) = softmax_xent(row, label as usize);
            stats.loss_sum += loss as f64;
            stats.correct += (argmax == label as usize) as usize;
            row[label as usize] -= 1.0;
            for v in row.iter_mut() {
                *v *= scale;
            }
        }
        stats
    }

    /// Back-propagates the logit gradient left by [`Net::loss_and_grad`] through the pass
    /// [`Net::forward`] recorded in `ws`, adding every parameter's gradient into `ws.grad`.
    fn backward(&self, x: &[f32], rows: usize, ws: &mut Workspace) {
        let Net { cfg, layout, p } = *self;
        let (d, hid, n, h) = (cfg.dim, cfg.hidden, cfg.steps, cfg.h);
        let stages = cfg.integrator.stages();
        let (sx, sa) = (rows * d, rows * hid);
        let Workspace {
            xs,
            us,
            acts,
            logits,
            gx,
            gy,
            gu,
            gk,
            ga,
            grad,
            ..
        } = ws;
        let mut gx = &mut gx[..sx];
        let gy_len = sx.min(gy.len());
        let mut gy = &mut gy[..gy_len];
        let ga = &mut ga[..sa];

        let head = &layout.head;
        // logits = x_N·Whᵀ + bh: ∂Wh += ∂logitsᵀ·x_N, ∂bh += Σ ∂logits, ∂x_N = ∂logits·Wh
        let xn = &xs[n * sx..(n + 1) * sx];
        layers::dense_param_grad(head, xn, logits, rows, grad);
        layers::dense_input_grad(head, p, logits, rows, gx, false);
        if cfg.form == Form::C2 {
            // Nothing after x_N refers back to x_{N−1}.
            gy[..sx].fill(0.0);
        }

        for k in (0..n).rev() {
            let f = layout.field(cfg, k);
            let a = |s: usize| &acts[(k * stages + s) * sa..(k * stages + s + 1) * sa];
            let u = |s: usize| &us[(k * (stages - 1) + s - 1) * sx..(k * (stages - 1) + s) * sx];
            let xk = &xs[k * sx..(k + 1) * sx];
            match (cfg.form, cfg.integrator) {
                (Form::C1, Integrator::Euler) => {
                    // x' = x + h·v(x): ∂x = ∂x' + J_vᵀ(h·∂x')
                    self.field_backward(f, xk, a(0), rows, gx, h, ga, grad);
                    self.field_input_grad(f, ga, rows, gx, true);
                }
                (Form::C1, Integrator::Midpoint) => {
                    // x' = x + h·v(u), u = x + h/2·v(x)
                    let gu = &mut gu[..sx];
                    self.field_backward(f, u(1), a(1), rows, gx, h, ga, grad);
                    self.field_input_grad(f, ga, rows, gu, false);
                    kernels::add_assign(gx, gu);
                    self.field_backward(f, xk, a(0), rows, gu, h / 2.0, ga, grad);
                    self.field_input_grad(f, ga, rows, gx, true);
                }
                (Form::C1, Integrator::Rk4) => {
                    // With g = ∂x': ∂k4 = h/6·g; ∂u3 = J4ᵀ∂k4; ∂k3 = h/3·g + h·∂u3;
                    // ∂u2 = J3ᵀ∂k3; ∂k2 = h/3·g + h/2·∂u2; ∂u1 = J2ᵀ∂k2; ∂k1 = h/6·g + h/2·∂u1;
                    // ∂x = g + ∂u1 + ∂u2 + ∂u3 + J1ᵀ∂k1.
                    let (gu, gk, sum) = (&mut gu[..sx], &mut gk[..sx], &mut gy[..sx]);
                    self.field_backward(f, u(3), a(3), rows, gx, h / 6.0, ga, grad);
                    self.field_input_grad(f, ga, rows, gu, false);
                    kernels::combine(sum, 1.0, gx, 1.0, gu);
                    kernels::combine(gk, h / 3.0, gx, h, gu);
                    self.field_backward(f, u(2), a(2), rows, gk, 1.0, ga, grad);
                    self.field_input_grad(f, ga, rows, gu, false);
                    kernels::add_assign(sum, gu);
                    kernels::combine(gk, h / 3.0, gx, h / 2.0, gu);
                    self.field_backward(f, u(1), a(1), rows, gk, 1.0, ga, grad);
                    self.field_input_grad(f, ga, rows, gu, false);
                    kernels::add_assign(sum, gu);
                    kernels::combine(gk, h / 6.0, gx, h / 2.0, gu);
                    self.field_backward(f, xk, a(0), rows, gk, 1.0, ga, grad);
                    self.field_input_grad(f, ga, rows, sum, true);
                    std::mem::swap(&mut gx, &mut gy);
                }
                (Form::C0, _) => {
                    // x' = v(x): ∂x = J_vᵀ∂x'
                    self.field_backward(f, xk, a(0), rows, gx, 1.0, ga, grad);
                    self.field_input_grad(f, ga, rows, &mut gy[..sx], false);
                    std::mem::swap(&mut gx, &mut gy);
                }
                (Form::C2, _) => {
                    // x_{k+1} = 2x_k − x_{k−1} + h²·v(x_k): ∂x_k gets 2·∂x_{k+1} + J_vᵀ(h²·∂x_{k+1})
                    // and ∂x_{k−1} gets −∂x_{k+1}, which `gy` carries one step; at k = 0,
                    // x_{−1} = x_0, so ∂x_0 gets (2 − 1)·∂x_1 instead.
                    let pending = &mut gy[..sx];
                    kernels::axpy(pending, if k == 0 { 1.0 } else { 2.0 }, gx);
                    self.field_backward(f, xk, a(0), rows, gx, h * h, ga, grad);
                    self.field_input_grad(f, ga, rows, pending, true);
                    kernels::scale(gx, -1.0);
                    std::mem::swap(&mut gx, &mut gy);
                }
            }
        }
        if let Some(l) = &layout.lift {
            layers::dense_param_grad(l, x, &gx[..sx], rows, grad);
        }
    }

    /// Forward, loss and backward of one shard; `scale` is 1 / (examples in the whole batch).
    pub(crate) fn shard_step(&self, x: &[f32], y: &[u32], scale: f32, ws: &mut Workspace) {
        let rows = y.len();
        ws.grad.fill(0.0);
        self.forward(x, rows, ws);
        ws.stats = self.loss_and_grad(y, scale, ws);
        self.backward(x, rows, ws);
    }

    /// Loss and accuracy of a whole data set, `EVAL_ROWS` examples at a time.
    pub(crate) fn evaluate(&self, x: &[f32], y: &[u32]) -> BatchStats {
        let rows = y.len().min(EVAL_ROWS);
        let mut ws = Workspace::new(self.cfg, self.layout, rows, false);
        let mut total = BatchStats::default();
        let c = self.cfg.classes;
        for (xc, yc) in x
            .chunks(EVAL_ROWS * self.cfg.in_dim)
            .zip(y.chunks(EVAL_ROWS))
        {
            self.forward(xc, yc.len(), &mut ws);
            for (row, &label) in ws.logits.chunks_exact_mut(c).zip(yc) {
                let (loss, argmax) = softmax_xent(row, label as usize);
                total.loss_sum += loss as f64;
                total.correct += (argmax == label as usize) as usize;
            }
        }
        total
    }

    /// Logits of `rows` examples, row-major `rows × classes`.
    pub(crate) fn logits(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut ws = Workspace::new(self.cfg, self.layout, rows.min(EVAL_ROWS), false);
        let mut out = Vec::with_capacity(rows * self.cfg.classes);
        for xc in x[..rows * self.cfg.in_dim].chunks(EVAL_ROWS * self.cfg.in_dim) {
            let r = xc.len() / self.cfg.in_dim;
            self.forward(xc, r, &mut ws);
            out.extend_from_slice(ws.logits(r, self.cfg.classes));
        }
        out
    }
}

/// Softmax cross-entropy of one row of logits: returns the loss and the argmax (first of ties),
/// and leaves the softmax probabilities in `row`. Non-finite logits give a NaN loss.
pub(crate) fn softmax_xent(row: &mut [f32], label: usize) -> (f32, usize) {
    let argmax = kernels::argmax(row);
    let max = row[argmax];
    let mut sum = 0.0f32;
    for v in row.iter() {
        sum += (*v - max).exp();
    }
    let lse = max + sum.ln();
    let loss = lse - row[label];
    for v in row.iter_mut() {
        *v = (*v - max).exp() / sum;
    }
    (loss, argmax)
}

/// The row ranges of the shards of a batch of `n` examples: `ceil(n / SHARD_ROWS)` shards of
/// near-equal size.
pub(crate) fn shards(n: usize) -> impl Iterator<Item = Range<usize>> {
    let count = n.div_ceil(SHARD_ROWS).max(1);
    let (base, extra) = (n / count, n % count);
    (0..count).map(move |s| {
        let start = s * base + s.min(extra);
        start..start + base + usize::from(s < extra)
    })
}

/// What the threads working on a batch share: the model, the batch, one workspace per shard.
struct Shared {
    cfg: FlowConfig,
    layout: Layout,
    params: RwLock<Vec<f32>>,
    batch: RwLock<Batch>,
    workspaces: Vec<Mutex<Workspace>>,
    pool: Pool,
}

#[derive(Default)]
struct Batch {
    x: Vec<f32>,
    y: Vec<u32>,
    shards: Vec<Range<usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Forward, loss and backward of shard `i` of the current batch.
    fn run_shard(&self, i: usize) {
        let params = self.params.read().unwrap_or_else(|e| e.into_inner());
        let batch = self.batch.read().unwrap_or_else(|e| e.into_inner());
        let mut ws = lock(&self.workspaces[i]);
        let net = Net {
            cfg: &self.cfg,
            layout: &self.layout,
            p: &params,
        };
        let r = batch.shards[i].clone();
        let d = self.cfg.in_dim;
        let scale = 1.0 / batch.y.len() as f32;
        net.shard_step(
            &batch.x[r.start * d..r.end * d],
            &batch.y[r],
            scale,
            &mut ws,
        );
    }
}

/// Training state of the CPU backend (a [`Model`] for the core's loop); see
/// [`with_cpu_trainer`].
pub(crate) struct CpuTrainer<'a> {
    shared: &'a Shared,
    work: &'a (dyn Fn(usize) + Sync),
    /// The Lipschitz bound projected onto after each update.
    lipschitz: Option<f32>,
}

/// Runs `body` with a CPU trainer for batches of up to `batch` examples whose shards run on
/// `threads` threads (helpers live as long as `body`).
pub(crate) fn with_cpu_trainer<R>(
    cfg: &FlowConfig,
    layout: &Layout,
    params: Vec<f32>,
    batch: usize,
    threads: usize,
    lipschitz: Option<f32>,
    body: impl FnOnce(&mut CpuTrainer<'_>) -> R,
) -> Result<R, NnError> {
    let workspaces: Vec<Mutex<Workspace>> = shards(batch)
        .map(|r| Mutex::new(Workspace::new(cfg, layout, r.len(), true)))
        .collect();
    if workspaces.len() > MAX_SHARDS {
        return Err(NnError::InvalidConfig(format!(
            "`batch` = {batch} is too large (at most {})",
            MAX_SHARDS * SHARD_ROWS
        )));
    }
    let helpers = threads.clamp(1, workspaces.len()) - 1;
    let shared = Shared {
        cfg: cfg.clone(),
        layout: layout.clone(),
        params: RwLock::new(params),
        batch: RwLock::new(Batch::default()),
        workspaces,
        pool: Pool::default(),
    };
    let work = |i: usize| shared.run_shard(i);
    Ok(pool::with_helpers(&shared.pool, helpers, &work, || {
        let mut trainer = CpuTrainer {
            shared: &shared,
            work: &work,
            lipschitz,
        };
        body(&mut trainer)
    }))
}

impl CpuTrainer<'_> {
    /// The gradient of the last batch (the mean loss's).
    #[cfg(test)]
    pub(crate) fn gradient(&self) -> Vec<f32> {
        lock(&self.shared.workspaces[0]).grad.clone()
    }
}

impl Model for CpuTrainer<'_> {
    type Batch = Minibatch;
    type Stats = Accuracy;

    fn loss_and_grad(
        &mut self,
        batch: &Minibatch,
        grad: &mut Vec<f32>,
    ) -> Result<Loss<Accuracy>, NnError> {
        let count = {
            let mut b = self.shared.batch.write().unwrap_or_else(|e| e.into_inner());
            b.x.clear();
            b.x.extend_from_slice(&batch.x);
            b.y.clear();
            b.y.extend_from_slice(&batch.y);
            b.shards.clear();
            b.shards.extend(shards(batch.y.len()));
            b.shards.len()
        };
        assert!(
            count <= self.shared.workspaces.len(),
            "batch larger than planned"
        );
        self.shared.pool.run(count, self.work);
        // Sum in shard order: the result is independent of which thread ran which shard.
        let mut first = lock(&self.shared.workspaces[0]);
        let mut stats = first.stats;
        for ws in &self.shared.workspaces[1..count] {
            let ws = lock(ws);
            kernels::add_assign(&mut first.grad, &ws.grad);
            stats.loss_sum += ws.stats.loss_sum;
            stats.correct += ws.stats.correct;
        }
        grad.clear();
        grad.extend_from_slice(&first.grad);
        Ok(stats.loss(batch.y.len()))
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self
            .shared
            .params
            .write()
            .unwrap_or_else(|e| e.into_inner()));
        Ok(())
    }

    fn constrain(&mut self, _lr: f32) -> Result<(), NnError> {
        if let Some(c) = self.lipschitz {
            let mut p = self
                .shared
                .params
                .write()
                .unwrap_or_else(|e| e.into_inner());
            crate::constrain::project(&self.shared.cfg, &self.shared.layout, c, &mut p);
        }
        Ok(())
    }

    fn params(&mut self) -> Result<Vec<f32>, NnError> {
        Ok(self
            .shared
            .params
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}
