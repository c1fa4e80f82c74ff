//! The flow's forward pass, loss and backward pass on one lane block: [`crate::cpu::Net`]
//! operation for operation, on [`V`] elements (one lane per member). Keep the two in step: a
//! change there without the same change here breaks `fused`'s bit-identity tests.

use super::lanes::{self, Init, InputGrad, LANES, Mat, V, ZERO};
use crate::FlowConfig;
use crate::config::{Activation, Form, Integrator};
use crate::params::{Field, Layout};

/// The buffers of one lane block (sized for the largest shard), like [`crate::cpu::Workspace`].
pub(crate) struct BlockWs {
    xs: Vec<V>,
    us: Vec<V>,
    acts: Vec<V>,
    kv: Vec<V>,
    logits: Vec<V>,
    gx: Vec<V>,
    gy: Vec<V>,
    gu: Vec<V>,
    gk: Vec<V>,
    ga: Vec<V>,
    /// The row-fused kernels' accumulators (`rows × dim`).
    racc: Vec<V>,
    /// The current shard's gradient.
    pub grad: Vec<V>,
    /// The batch's gradient (the shards' summed in shard order).
    pub total: Vec<V>,
    /// Row scratch for the softmax of one lane, and its exponentials.
    row: Vec<f32>,
    exps: Vec<f32>,
    /// Per lane: the shard's loss sum and correct count.
    pub loss_sum: [f64; LANES],
    pub correct: [usize; LANES],
}

impl BlockWs {
    pub(crate) fn new(cfg: &FlowConfig, layout: &Layout, rows: usize) -> Self {
        let stages = cfg.integrator.stages();
        let sx = rows * cfg.dim;
        let rk4 = cfg.integrator == Integrator::Rk4;
        let needs_gy = cfg.form != Form::C1 || rk4;
        let needs_gu = cfg.integrator != Integrator::Euler;
        let z = |n: usize| vec![ZERO; n];
        BlockWs {
            xs: z((cfg.steps + 1) * sx),
            us: z(cfg.steps * (stages - 1) * sx),
            acts: z(cfg.steps * stages * rows * cfg.hidden),
            kv: z(if rk4 { sx } else { 0 }),
            logits: z(rows * cfg.classes),
            gx: z(sx),
            gy: z(if needs_gy { sx } else { 0 }),
            gu: z(if needs_gu { sx } else { 0 }),
            gk: z(if rk4 { sx } else { 0 }),
            ga: z(rows * cfg.hidden),
            racc: z(rows * cfg.dim),
            grad: z(layout.total()),
            total: z(layout.total()),
            row: vec![0.0; cfg.classes],
            exps: vec![0.0; cfg.classes],
            loss_sum: [0.0; LANES],
            correct: [0; LANES],
        }
    }
}

/// A lane block's parameters (lane layout, in the flow's layout order) with config and layout.
#[derive(Clone, Copy)]
pub(crate) struct BlockNet<'a> {
    pub cfg: &'a FlowConfig,
    pub layout: &'a Layout,
    pub p: &'a [V],
}

impl BlockNet<'_> {
    fn w1(&self, f: &Field) -> &[V] {
        &self.p[f.l1.w..f.l1.w + f.l1.out * f.l1.inp]
    }

    fn w2(&self, f: &Field) -> &[V] {
        &self.p[f.l2.w..f.l2.w + f.l2.out * f.l2.inp]
    }

    #[allow(clippy::too_many_arguments)]
    fn field(
        &self,
        f: &Field,
        u: &[V],
        rows: usize,
        a: &mut [V],
        out: &mut [V],
        init: Init<'_>,
        scale: f32,
        acc: &mut [V],
    ) {
        let (d, hid, p) = (self.cfg.dim, self.cfg.hidden, self.p);
        let b1 = &p[f.l1.b..f.l1.b + hid];
        let b2 = &p[f.l2.b..f.l2.b + d];
        let tanh = self.cfg.activation == Activation::Tanh;
        if lanes::rows_fused(rows, hid, d) {
            let w = [self.w1(f), b1, self.w2(f), b2];
            lanes::field_forward(a, u, rows, w, tanh, out, init, scale, acc);
            return;
        }
        lanes::hidden_forward(a, u, rows, self.w1(f), b1, tanh);
        match init {
            Init::Set => lanes::set_rows_bias(out, None, b2, scale),
            Init::From(src) => lanes::set_rows_bias(out, Some(src), b2, scale),
            Init::Add => lanes::add_rows_bias(out, b2, scale),
        }
        let w2 = Mat::new(self.w2(f), d, hid).t();
        lanes::matmul(out, d, true, Mat::new(a, rows, hid), w2, scale);
    }

    #[allow(clippy::too_many_arguments)]
    fn field_backward(
        &self,
        f: &Field,
        u: &[V],
        a: &[V],
        rows: usize,
        gout: &[V],
        scale: f32,
        ga: &mut [V],
        grad: &mut [V],
    ) {
        let (d, hid) = (self.cfg.dim, self.cfg.hidden);
        lanes::matmul(
            &mut grad[f.l2.w..f.l2.w + d * hid],
            hid,
            true,
            Mat::new(gout, rows, d).t(),
            Mat::new(a, rows, hid),
            scale,
        );
        lanes::add_col_sums(&mut grad[f.l2.b..f.l2.b + d], gout, scale);
        let gb1 = &mut grad[f.l1.b..f.l1.b + hid];
        let tanh = self.cfg.activation == Activation::Tanh;
        lanes::hidden_backward(ga, gout, rows, self.w2(f), scale, a, gb1, tanh);
        lanes::matmul(
            &mut grad[f.l1.w..f.l1.w + hid * d],
            d,
            true,
            Mat::new(ga, rows, hid).t(),
            Mat::new(u, rows, d),
            1.0,
        );
    }

    /// A field's parameter gradients (into `grad`) and input gradient (into `io`'s
    /// destination): row-fused where [`lanes::rows_fused`] holds, else `field_backward` then
    /// `field_input_grad`.
    #[allow(clippy::too_many_arguments)]
    fn field_grads(
        &self,
        f: &Field,
        u: &[V],
        a: &[V],
        rows: usize,
        scale: f32,
        io: InputGrad<'_>,
        ga: &mut [V],
        acc: &mut [V],
        grad: &mut [V],
    ) {
        let (d, hid) = (self.cfg.dim, self.cfg.hidden);
        let tanh = self.cfg.activation == Activation::Tanh;
        if lanes::rows_fused(rows, hid, d) {
            let regions = [
                f.l1.w..f.l1.w + hid * d,
                f.l1.b..f.l1.b + hid,
                f.l2.w..f.l2.w + d * hid,
                f.l2.b..f.l2.b + d,
            ];
            let grads = disjoint(grad, regions);
            lanes::field_backward(
                u,
                a,
                rows,
                self.w1(f),
                self.w2(f),
                scale,
                tanh,
                grads,
                io,
                acc,
            );
            return;
        }
        match io {
            InputGrad::Onto(g) => {
                self.field_backward(f, u, a, rows, g, scale, ga, grad);
                self.field_input_grad(f, ga, rows, g, true);
            }
            InputGrad::Into { gout, dst, add } => {
                self.field_backward(f, u, a, rows, gout, scale, ga, grad);
                self.field_input_grad(f, ga, rows, dst, add);
            }
        }
    }

    fn field_input_grad(&self, f: &Field, ga: &[V], rows: usize, dst: &mut [V], add: bool) {
        let (d, hid) = (self.cfg.dim, self.cfg.hidden);
        let w1 = Mat::new(self.w1(f), hid, d);
        lanes::matmul(dst, d, add, Mat::new(ga, rows, hid), w1, 1.0);
    }

    fn forward(&self, x: &[V], rows: usize, ws: &mut BlockWs) {
        let BlockNet { cfg, layout, p } = *self;
        let (d, hid, n, h) = (cfg.dim, cfg.hidden, cfg.steps, cfg.h);
        let stages = cfg.integrator.stages();
        let (sx, sa) = (rows * d, rows * hid);
        let x = &x[..rows * cfg.in_dim];
        let BlockWs {
            xs,
            us,
            acts,
            kv,
            racc,
            ..
        } = ws;
        let xs = &mut xs[..(n + 1) * sx];
        match &layout.lift {
            Some(l) => lanes::dense_forward(l, p, x, rows, &mut xs[..sx]),
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
                    self.field(f, xk, rows, a(), xn, Init::From(xk), h, racc);
                }
                (Form::C1, Integrator::Midpoint) => {
                    self.field(f, xk, rows, a(), u, Init::From(xk), h / 2.0, racc);
                    self.field(f, u, rows, a(), xn, Init::From(xk), h, racc);
                }
                (Form::C1, Integrator::Rk4) => {
                    let (u1, rest) = u.split_at_mut(sx);
                    let (u2, u3) = rest.split_at_mut(sx);
                    let kv = &mut kv[..sx];
                    self.field(f, xk, rows, a(), kv, Init::Set, 1.0, racc);
                    lanes::combine(xn, 1.0, xk, h / 6.0, kv);
                    lanes::combine(u1, 1.0, xk, h / 2.0, kv);
                    self.field(f, u1, rows, a(), kv, Init::Set, 1.0, racc);
                    lanes::axpy(xn, h / 3.0, kv);
                    lanes::combine(u2, 1.0, xk, h / 2.0, kv);
                    self.field(f, u2, rows, a(), kv, Init::Set, 1.0, racc);
                    lanes::axpy(xn, h / 3.0, kv);
                    lanes::combine(u3, 1.0, xk, h, kv);
                    self.field(f, u3, rows, a(), kv, Init::Set, 1.0, racc);
                    lanes::axpy(xn, h / 6.0, kv);
                }
                (Form::C0, _) => {
                    self.field(f, xk, rows, a(), xn, Init::Set, 1.0, racc);
                }
                (Form::C2, _) if k == 0 => {
                    self.field(f, xk, rows, a(), xn, Init::From(xk), h * h, racc);
                }
                (Form::C2, _) => {
                    let xprev = &done[(k - 1) * sx..k * sx];
                    lanes::combine(xn, 2.0, xk, -1.0, xprev);
                    self.field(f, xk, rows, a(), xn, Init::Add, h * h, racc);
                }
            }
        }
        lanes::dense_forward(&layout.head, p, &xs[n * sx..], rows, &mut ws.logits);
    }

    /// Cross-entropy per lane ([`crate::cpu::softmax_xent`] on each lane's row), leaving
    /// `scale·(softmax − onehot)` in the logits.
    fn loss_and_grad(&self, y: &[[u32; LANES]], scale: f32, ws: &mut BlockWs) {
        let c = self.cfg.classes;
        ws.loss_sum = [0.0; LANES];
        ws.correct = [0; LANES];
        let (row, exps) = (&mut ws.row, &mut ws.exps);
        for (lv, labels) in ws.logits[..y.len() * c].chunks_exact_mut(c).zip(y) {
            for (l, &label) in labels.iter().enumerate() {
                for (r, v) in row.iter_mut().zip(lv.iter()) {
                    *r = v[l];
                }
                let (loss, argmax) = softmax_xent(row, exps, label as usize);
                ws.loss_sum[l] += loss as f64;
                ws.correct[l] += (argmax == label as usize) as usize;
                row[label as usize] -= 1.0;
                for (r, v) in row.iter().zip(lv.iter_mut()) {
                    v[l] = *r * scale;
                }
            }
        }
    }

    fn backward(&self, x: &[V], rows: usize, ws: &mut BlockWs) {
        let BlockNet { cfg, layout, p } = *self;
        let (d, hid, n, h) = (cfg.dim, cfg.hidden, cfg.steps, cfg.h);
        let stages = cfg.integrator.stages();
        let (sx, sa) = (rows * d, rows * hid);
        let BlockWs {
            xs,
            us,
            acts,
            logits,
            gx,
            gy,
            gu,
            gk,
            ga,
            racc,
            grad,
            ..
        } = ws;
        let mut gx = &mut gx[..sx];
        let gy_len = sx.min(gy.len());
        let mut gy = &mut gy[..gy_len];
        let ga = &mut ga[..sa];

        let head = &layout.head;
        let xn = &xs[n * sx..(n + 1) * sx];
        lanes::dense_param_grad(head, xn, logits, rows, grad);
        lanes::dense_input_grad(head, p, logits, rows, gx, false);
        if cfg.form == Form::C2 {
            gy[..sx].fill(ZERO);
        }

        for k in (0..n).rev() {
            let f = layout.field(cfg, k);
            let a = |s: usize| &acts[(k * stages + s) * sa..(k * stages + s + 1) * sa];
            let u = |s: usize| &us[(k * (stages - 1) + s - 1) * sx..(k * (stages - 1) + s) * sx];
            let xk = &xs[k * sx..(k + 1) * sx];
            match (cfg.form, cfg.integrator) {
                (Form::C1, Integrator::Euler) => {
                    self.field_grads(f, xk, a(0), rows, h, InputGrad::Onto(gx), ga, racc, grad);
                }
                (Form::C1, Integrator::Midpoint) => {
                    let gu = &mut gu[..sx];
                    let io = into(gx, gu, false);
                    self.field_grads(f, u(1), a(1), rows, h, io, ga, racc, grad);
                    lanes::add_assign(gx, gu);
                    let io = into(gu, gx, true);
                    self.field_grads(f, xk, a(0), rows, h / 2.0, io, ga, racc, grad);
                }
                (Form::C1, Integrator::Rk4) => {
                    let (gu, gk, sum) = (&mut gu[..sx], &mut gk[..sx], &mut gy[..sx]);
                    let io = into(gx, gu, false);
                    self.field_grads(f, u(3), a(3), rows, h / 6.0, io, ga, racc, grad);
                    lanes::combine(sum, 1.0, gx, 1.0, gu);
                    lanes::combine(gk, h / 3.0, gx, h, gu);
                    let io = into(gk, gu, false);
                    self.field_grads(f, u(2), a(2), rows, 1.0, io, ga, racc, grad);
                    lanes::add_assign(sum, gu);
                    lanes::combine(gk, h / 3.0, gx, h / 2.0, gu);
                    let io = into(gk, gu, false);
                    self.field_grads(f, u(1), a(1), rows, 1.0, io, ga, racc, grad);
                    lanes::add_assign(sum, gu);
                    lanes::combine(gk, h / 6.0, gx, h / 2.0, gu);
                    let io = into(gk, sum, true);
                    self.field_grads(f, xk, a(0), rows, 1.0, io, ga, racc, grad);
                    std::mem::swap(&mut gx, &mut gy);
                }
                (Form::C0, _) => {
                    let io = into(gx, &mut gy[..sx], false);
                    self.field_grads(f, xk, a(0), rows, 1.0, io, ga, racc, grad);
                    std::mem::swap(&mut gx, &mut gy);
                }
                (Form::C2, _) => {
                    let pending = &mut gy[..sx];
                    lanes::axpy(pending, if k == 0 { 1.0 } else { 2.0 }, gx);
                    let io = into(gx, pending, true);
                    self.field_grads(f, xk, a(0), rows, h * h, io, ga, racc, grad);
                    lanes::scale(gx, -1.0);
                    std::mem::swap(&mut gx, &mut gy);
                }
            }
        }
        if let Some(l) = &layout.lift {
            lanes::dense_param_grad(l, x, &gx[..sx], rows, grad);
        }
    }

    /// Forward, loss and backward of one shard into `ws.grad` (zeroed first); `scale` is
    /// 1 / (examples in the whole batch).
    pub(crate) fn shard_step(&self, x: &[V], y: &[[u32; LANES]], scale: f32, ws: &mut BlockWs) {
        let rows = y.len();
        ws.grad.fill(ZERO);
        self.forward(x, rows, ws);
        self.loss_and_grad(y, scale, ws);
        self.backward(x, rows, ws);
    }
}

/// `gout`'s gradient into `dst` (added to it if `add`).
fn into<'s>(gout: &'s [V], dst: &'s mut [V], add: bool) -> InputGrad<'s> {
    InputGrad::Into { gout, dst, add }
}

/// Four disjoint ranges of `v`, mutably, in the order given.
fn disjoint(v: &mut [V], ranges: [std::ops::Range<usize>; 4]) -> [&mut [V]; 4] {
    let mut order = [0, 1, 2, 3];
    order.sort_by_key(|&i| ranges[i].start);
    let mut out: [&mut [V]; 4] = [&mut [], &mut [], &mut [], &mut []];
    let (mut rest, mut at) = (v, 0);
    for i in order {
        let r = &ranges[i];
        assert!(r.start >= at, "overlapping gradient regions");
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - at);
        let (mine, tail) = tail.split_at_mut(r.len());
        out[i] = mine;
        rest = tail;
        at = r.end;
    }
    out
}

/// [`crate::cpu::softmax_xent`] operation for operation, except that each `exp` is computed
/// once (into `exps`) where it computes it twice: the same value, half the calls.
fn softmax_xent(row: &mut [f32], exps: &mut [f32], label: usize) -> (f32, usize) {
    let argmax = crate::kernels::argmax(row);
    let max = row[argmax];
    let mut sum = 0.0f32;
    for (e, v) in exps.iter_mut().zip(row.iter()) {
        *e = (*v - max).exp();
        sum += *e;
    }
    let lse = max + sum.ln();
    let loss = lse - row[label];
    for (v, e) in row.iter_mut().zip(exps.iter()) {
        *v = *e / sum;
    }
    (loss, argmax)
}
