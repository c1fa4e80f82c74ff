//! A fused flow group on the dfdx tensor path (`Backend::Dfdx`, CUDA): the members as one
//! tensor computation, so a GPU runs one batched step instead of one small step per member.
//!
//! Every tensor of [`crate::tensor`]'s path gains a leading member axis: a layer's weights are
//! `[members, out, in]`, its biases `[members, out]`, activations `[members, rows, width]`, and
//! each product is one batched product (`[members, rows, in] · [members, in, out]`). The
//! backward pass is the one written out in [`crate::tensor`], over that axis. Each member has
//! its own minibatch (all of one row count: members share the batch size and data length), so
//! the loss of the group is the sum of the members' own mean losses and each member's gradient
//! is its own. Nothing is reduced across the member axis, so a member whose numbers go NaN
//! carries NaN in its own slice only ([`ablate_nn::train_group`] stops it alone).
//!
//! The parameters stay on the host, member-major, where the core's optimizer updates them and
//! each member's Lipschitz projection runs on its own slice (as [`crate::tensor`]'s trainer
//! does); they go to the device once per step. A stopped member's slice is loaded as zeros
//! (its lane is computed and ignored; zeros keep it finite).
//!
//! Equal to each member trained alone by [`crate::train_flow_on`] within rounding: the
//! per-member products are the same, but the reductions (bias gradients, softmax) run over
//! other shapes, so they may differ in the last bits (tested to 1e-5, `tests.rs`).

use dfdx::shapes::{Axes3, Axis, HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{
    BroadcastTo, ChooseFrom, Device, PermuteTo, SumTo, TryAdd, TryGt, TryMatMul, TryMul, TrySub,
};

use ablate_nn::{GroupModel, Loss, Observer, TrainState, device_error as device_err};

use crate::config::{Activation, Form, Integrator};
use crate::constrain;
use crate::cpu::BatchStats;
use crate::params::{Dense, Layout};
use crate::train::{Accuracy, Minibatch, plan, start_params};
use crate::{Dataset, FlowConfig, NnError, TrainConfig};

/// `[members, rows, cols]`
type T3<D> = Tensor<(usize, usize, usize), f32, D>;
/// `[members, cols]`
type T2<D> = Tensor<(usize, usize), f32, D>;

/// `y = x·Wᵀ + b` of every member: `w` is `[members, out, in]`, `b` `[members, out]`.
#[derive(Clone, Debug)]
struct GLinear<D: Device<f32>> {
    w: T3<D>,
    b: T2<D>,
}

impl<D: Device<f32>> GLinear<D> {
    /// Layer `l` of every member of `params` (member-major, `n` each); a member that is not
    /// `live` gets zeros.
    fn load(dev: &D, l: &Dense, params: &[f32], n: usize, live: &[bool]) -> Result<Self, D::Err> {
        let k = live.len();
        let (mut w, mut b) = (
            Vec::with_capacity(k * l.out * l.inp),
            Vec::with_capacity(k * l.out),
        );
        for (m, &on) in live.iter().enumerate() {
            let p = &params[m * n..(m + 1) * n];
            if on {
                w.extend_from_slice(l.w(p));
                b.extend_from_slice(l.b(p));
            } else {
                w.resize(w.len() + l.out * l.inp, 0.0);
                b.resize(b.len() + l.out, 0.0);
            }
        }
        Ok(GLinear {
            w: dev.try_tensor_from_vec(w, (k, l.out, l.inp))?,
            b: dev.try_tensor_from_vec(b, (k, l.out))?,
        })
    }

    fn zeros_like(&self) -> Result<Self, D::Err> {
        let dev = self.w.device();
        Ok(GLinear {
            w: dev.try_zeros_like(self.w.shape())?,
            b: dev.try_zeros_like(self.b.shape())?,
        })
    }

    fn forward(&self, x: &T3<D>) -> Result<T3<D>, D::Err> {
        let (k, rows, _) = *x.shape();
        let out = self.b.shape().1;
        let b = self
            .b
            .clone()
            .try_broadcast_like::<(usize, usize, usize), Axis<1>>(&(k, rows, out))?;
        x.clone().try_matmul(transpose(&self.w)?)?.try_add(b)
    }

    /// Adds every member's part of this layer's gradient into its slice of `grad`.
    fn scatter(&self, l: &Dense, n: usize, grad: &mut [f32]) {
        let (w, b) = (self.w.as_vec(), self.b.as_vec());
        let (wl, bl) = (l.out * l.inp, l.out);
        for (m, (gw, gb)) in w.chunks_exact(wl).zip(b.chunks_exact(bl)).enumerate() {
            grad[m * n + l.w..m * n + l.w + wl].copy_from_slice(gw);
            grad[m * n + l.b..m * n + l.b + bl].copy_from_slice(gb);
        }
    }
}

/// Every layer of every member (or of their gradients), in layout order.
#[derive(Clone, Debug)]
struct GParams<D: Device<f32>> {
    lift: Option<GLinear<D>>,
    fields: Vec<(GLinear<D>, GLinear<D>)>,
    head: GLinear<D>,
}

impl<D: Device<f32>> GParams<D> {
    fn load(
        dev: &D,
        layout: &Layout,
        params: &[f32],
        n: usize,
        live: &[bool],
    ) -> Result<Self, D::Err> {
        let load = |l: &Dense| GLinear::load(dev, l, params, n, live);
        Ok(GParams {
            lift: layout.lift.as_ref().map(load).transpose()?,
            fields: layout
                .fields
                .iter()
                .map(|f| Ok((load(&f.l1)?, load(&f.l2)?)))
                .collect::<Result<_, D::Err>>()?,
            head: load(&layout.head)?,
        })
    }

    fn zeros_like(&self) -> Result<Self, D::Err> {
        Ok(GParams {
            lift: self.lift.as_ref().map(|l| l.zeros_like()).transpose()?,
            fields: self
                .fields
                .iter()
                .map(|(a, b)| Ok((a.zeros_like()?, b.zeros_like()?)))
                .collect::<Result<_, D::Err>>()?,
            head: self.head.zeros_like()?,
        })
    }

    /// Writes every member's gradient into its slice of `grad` (member-major, `n` each).
    fn scatter(&self, layout: &Layout, n: usize, grad: &mut [f32]) {
        if let (Some(g), Some(l)) = (&self.lift, &layout.lift) {
            g.scatter(l, n, grad);
        }
        for ((g1, g2), f) in self.fields.iter().zip(&layout.fields) {
            g1.scatter(&f.l1, n, grad);
            g2.scatter(&f.l2, n, grad);
        }
        self.head.scatter(&layout.head, n, grad);
    }
}

/// What the forward pass keeps for the backward pass (as [`crate::tensor`]'s, per member).
struct Trace<D: Device<f32>> {
    input: T3<D>,
    /// x_0 … x_N
    xs: Vec<T3<D>>,
    /// Per step, per stage: the field's input u and its activation σ(W1·u + b1).
    stages: Vec<Vec<(T3<D>, T3<D>)>>,
    logits: T3<D>,
}

/// `[members, a, b]` → `[members, b, a]`
fn transpose<D: Device<f32>>(t: &T3<D>) -> Result<T3<D>, D::Err> {
    t.clone()
        .try_permute::<(usize, usize, usize), Axes3<0, 2, 1>>()
}

/// Sums over the rows: `[members, rows, cols]` → `[members, cols]`.
fn row_sums<D: Device<f32>>(t: &T3<D>) -> Result<T2<D>, D::Err> {
    t.clone().try_sum::<(usize, usize), Axis<1>>()
}

/// `acc += x`
fn accumulate<S: Shape, D: Device<f32>>(
    acc: &mut Tensor<S, f32, D>,
    x: &Tensor<S, f32, D>,
) -> Result<(), D::Err> {
    acc.try_axpy(1.0, x, 1.0)
}

/// `x + s·y`
fn add_scaled<D: Device<f32>>(x: &T3<D>, s: f32, y: T3<D>) -> Result<T3<D>, D::Err> {
    x.clone().try_add(y.try_mul(s)?)
}

/// `a·x + b·y`
fn lin2<D: Device<f32>>(a: f32, x: &T3<D>, b: f32, y: &T3<D>) -> Result<T3<D>, D::Err> {
    x.clone().try_mul(a)?.try_add(y.clone().try_mul(b)?)
}

/// One field evaluation of every member: `(a, v(u))`.
fn field<D: Device<f32>>(
    cfg: &FlowConfig,
    (l1, l2): &(GLinear<D>, GLinear<D>),
    u: &T3<D>,
) -> Result<(T3<D>, T3<D>), D::Err> {
    let z = l1.forward(u)?;
    let a = match cfg.activation {
        Activation::Tanh => z.try_tanh()?,
        Activation::Relu => z.try_relu()?,
    };
    let v = l2.forward(&a)?;
    Ok((a, v))
}

/// [`crate::tensor`]'s forward pass over the member axis.
fn forward<D: Device<f32>>(
    cfg: &FlowConfig,
    p: &GParams<D>,
    input: T3<D>,
) -> Result<Trace<D>, D::Err> {
    let x0 = match &p.lift {
        Some(l) => l.forward(&input)?,
        None => input.clone(),
    };
    let h = cfg.h;
    let mut xs = vec![x0];
    let mut stages = Vec::with_capacity(cfg.steps);
    for k in 0..cfg.steps {
        let fp = &p.fields[cfg.field_of_step(k)];
        let x = &xs[k];
        let mut st = Vec::with_capacity(cfg.integrator.stages());
        let mut eval = |u: &T3<D>| -> Result<T3<D>, D::Err> {
            let (a, v) = field(cfg, fp, u)?;
            st.push((u.clone(), a));
            Ok(v)
        };
        let next = match (cfg.form, cfg.integrator) {
            (Form::C1, Integrator::Euler) => {
                let v = eval(x)?;
                add_scaled(x, h, v)?
            }
            (Form::C1, Integrator::Midpoint) => {
                let v = eval(x)?;
                let u = add_scaled(x, h / 2.0, v)?;
                let v = eval(&u)?;
                add_scaled(x, h, v)?
            }
            (Form::C1, Integrator::Rk4) => {
                let k1 = eval(x)?;
                let next = add_scaled(x, h / 6.0, k1.clone())?;
                let u1 = add_scaled(x, h / 2.0, k1)?;
                let k2 = eval(&u1)?;
                let next = add_scaled(&next, h / 3.0, k2.clone())?;
                let u2 = add_scaled(x, h / 2.0, k2)?;
                let k3 = eval(&u2)?;
                let next = add_scaled(&next, h / 3.0, k3.clone())?;
                let u3 = add_scaled(x, h, k3)?;
                let k4 = eval(&u3)?;
                add_scaled(&next, h / 6.0, k4)?
            }
            (Form::C0, _) => eval(x)?,
            (Form::C2, _) => {
                // x_{k+1} = 2x_k − x_{k−1} + h²·v(x_k), x_{−1} = x_0
                let v = eval(x)?;
                let base = if k == 0 {
                    x.clone()
                } else {
                    x.clone().try_mul(2.0)?.try_sub(xs[k - 1].clone())?
                };
                add_scaled(&base, h * h, v)?
            }
        };
        stages.push(st);
        xs.push(next);
    }
    let logits = p.head.forward(&xs[cfg.steps])?;
    Ok(Trace {
        input,
        xs,
        stages,
        logits,
    })
}

/// Back through `out = scale·v(u)` given `gout` = ∂out: adds the field's parameter gradients
/// into `g` and returns ∂u (as [`crate::tensor`]'s, per member).
fn field_backward<D: Device<f32>>(
    cfg: &FlowConfig,
    (l1, l2): &(GLinear<D>, GLinear<D>),
    (g1, g2): &mut (GLinear<D>, GLinear<D>),
    (u, a): &(T3<D>, T3<D>),
    gout: &T3<D>,
    scale: f32,
) -> Result<T3<D>, D::Err> {
    let gv = gout.clone().try_mul(scale)?;
    accumulate(&mut g2.w, &transpose(&gv)?.try_matmul(a.clone())?)?;
    accumulate(&mut g2.b, &row_sums(&gv)?)?;
    let ga = gv.try_matmul(l2.w.clone())?;
    let gz = match cfg.activation {
        Activation::Tanh => {
            let one_minus_a2 = a.clone().try_square()?.try_negate()?.try_add(1.0)?;
            ga.try_mul(one_minus_a2)?
        }
        // relu'(0) = 0, as unfused.
        Activation::Relu => {
            let zeros = ga.device().try_zeros_like(ga.shape())?;
            a.try_gt(0.0)?.try_choose(ga, zeros)?
        }
    };
    accumulate(&mut g1.w, &transpose(&gz)?.try_matmul(u.clone())?)?;
    accumulate(&mut g1.b, &row_sums(&gz)?)?;
    gz.try_matmul(l1.w.clone())
}

/// [`crate::tensor`]'s backward pass over the member axis, given `dlogits`.
fn backward<D: Device<f32>>(
    cfg: &FlowConfig,
    p: &GParams<D>,
    trace: &Trace<D>,
    dlogits: T3<D>,
) -> Result<GParams<D>, D::Err> {
    let mut g = p.zeros_like()?;
    let h = cfg.h;
    let xn = &trace.xs[cfg.steps];
    accumulate(&mut g.head.w, &transpose(&dlogits)?.try_matmul(xn.clone())?)?;
    accumulate(&mut g.head.b, &row_sums(&dlogits)?)?;
    let mut gx = dlogits.try_matmul(p.head.w.clone())?;
    let mut pending: Option<T3<D>> = None;
    for k in (0..cfg.steps).rev() {
        let f = cfg.field_of_step(k);
        let (fp, gf) = (&p.fields[f], &mut g.fields[f]);
        let st = &trace.stages[k];
        gx = match (cfg.form, cfg.integrator) {
            (Form::C1, Integrator::Euler) => {
                let gu = field_backward(cfg, fp, gf, &st[0], &gx, h)?;
                gx.try_add(gu)?
            }
            (Form::C1, Integrator::Midpoint) => {
                let gu = field_backward(cfg, fp, gf, &st[1], &gx, h)?;
                let gx0 = field_backward(cfg, fp, gf, &st[0], &gu, h / 2.0)?;
                gx.try_add(gu)?.try_add(gx0)?
            }
            (Form::C1, Integrator::Rk4) => {
                let gu3 = field_backward(cfg, fp, gf, &st[3], &gx, h / 6.0)?;
                let sum = gx.clone().try_add(gu3.clone())?;
                let gk3 = lin2(h / 3.0, &gx, h, &gu3)?;
                let gu2 = field_backward(cfg, fp, gf, &st[2], &gk3, 1.0)?;
                let sum = sum.try_add(gu2.clone())?;
                let gk2 = lin2(h / 3.0, &gx, h / 2.0, &gu2)?;
                let gu1 = field_backward(cfg, fp, gf, &st[1], &gk2, 1.0)?;
                let sum = sum.try_add(gu1.clone())?;
                let gk1 = lin2(h / 6.0, &gx, h / 2.0, &gu1)?;
                let gx0 = field_backward(cfg, fp, gf, &st[0], &gk1, 1.0)?;
                sum.try_add(gx0)?
            }
            (Form::C0, _) => field_backward(cfg, fp, gf, &st[0], &gx, 1.0)?,
            (Form::C2, _) => {
                let c = if k == 0 { 1.0 } else { 2.0 };
                let base = match pending.take() {
                    Some(pd) => pd.try_add(gx.clone().try_mul(c)?)?,
                    None => gx.clone().try_mul(c)?,
                };
                let gu = field_backward(cfg, fp, gf, &st[0], &gx, h * h)?;
                pending = Some(gx.try_negate()?);
                base.try_add(gu)?
            }
        };
    }
    if let Some(gl) = &mut g.lift {
        accumulate(&mut gl.w, &transpose(&gx)?.try_matmul(trace.input.clone())?)?;
        accumulate(&mut gl.b, &row_sums(&gx)?)?;
    }
    Ok(g)
}

/// Loss sum and correct count from row-major log-probabilities (argmax: first of ties), as
/// [`crate::tensor`] counts them.
fn stats_from_log_probs(logp: &[f32], y: &[u32], classes: usize) -> BatchStats {
    let mut stats = BatchStats::default();
    for (row, &label) in logp.chunks_exact(classes).zip(y) {
        stats.loss_sum += -row[label as usize] as f64;
        stats.correct += usize::from(crate::kernels::argmax(row) == label as usize);
    }
    stats
}

/// The group as the core's loop sees it: every member's parameters on the host, member-major.
pub(super) struct TensorGroup<'a, D: Device<f32>> {
    dev: D,
    cfg: &'a FlowConfig,
    layout: &'a Layout,
    /// Parameters per member.
    n: usize,
    params: Vec<f32>,
    lipschitz: Vec<Option<f32>>,
}

impl<D: Device<f32>> TensorGroup<'_, D> {
    fn members(&self) -> usize {
        self.lipschitz.len()
    }

    /// Forward, loss and backward of every member on its own batch; `grad` gets the live
    /// members' gradients.
    fn step(
        &self,
        batches: &[&Minibatch],
        live: &[bool],
        grad: &mut [f32],
    ) -> Result<Vec<BatchStats>, D::Err> {
        let (k, n, cfg) = (self.members(), self.n, self.cfg);
        let (d, c) = (cfg.in_dim, cfg.classes);
        let rows = batches[0].y.len();
        let mut x = Vec::with_capacity(k * rows * d);
        let mut onehot = vec![0.0f32; k * rows * c];
        for (m, b) in batches.iter().enumerate() {
            x.extend_from_slice(&b.x);
            for (i, &label) in b.y.iter().enumerate() {
                onehot[(m * rows + i) * c + label as usize] = 1.0;
            }
        }
        let dev = &self.dev;
        let p = GParams::load(dev, self.layout, &self.params, n, live)?;
        let input = dev.try_tensor_from_vec(x, (k, rows, d))?;
        let trace = forward(cfg, &p, input)?;
        let logp = trace.logits.clone().try_log_softmax::<Axis<2>>()?.as_vec();
        let stats = logp
            .chunks_exact(rows * c)
            .zip(batches)
            .map(|(lp, b)| stats_from_log_probs(lp, &b.y, c))
            .collect();
        let onehot = dev.try_tensor_from_vec(onehot, (k, rows, c))?;
        let probs = trace.logits.clone().try_softmax::<Axis<2>>()?;
        let dlogits = probs.try_sub(onehot)?.try_mul(1.0 / rows as f32)?;
        backward(cfg, &p, &trace, dlogits)?.scatter(self.layout, n, grad);
        Ok(stats)
    }
}

impl<D: Device<f32>> GroupModel for TensorGroup<'_, D> {
    type Batch = Minibatch;
    type Stats = Accuracy;

    fn members(&self) -> usize {
        TensorGroup::members(self)
    }

    fn loss_and_grad(
        &mut self,
        batches: &[&Minibatch],
        live: &[bool],
        grad: &mut Vec<f32>,
    ) -> Result<Vec<Loss<Accuracy>>, NnError> {
        let rows = batches[0].y.len();
        if let Some(m) = batches.iter().position(|b| b.y.len() != rows) {
            return Err(NnError::InvalidData(format!(
                "failed to step the fused group: member {m}'s batch has {} rows but member 0's \
                 has {rows} (hint: fused members must share the batch size and data length)",
                batches[m].y.len()
            )));
        }
        grad.resize(self.members() * self.n, 0.0);
        let stats = self.step(batches, live, grad).map_err(device_err)?;
        Ok(stats
            .into_iter()
            .zip(live)
            .map(|(s, &on)| if on { s.loss(rows) } else { Loss::default() })
            .collect())
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self.params);
        Ok(())
    }

    fn constrain(&mut self, _lrs: &[f32], live: &[bool]) -> Result<(), NnError> {
        let n = self.n;
        for (m, c) in self.lipschitz.iter().enumerate() {
            if let (Some(c), true) = (c, live[m]) {
                constrain::project(
                    self.cfg,
                    self.layout,
                    *c,
                    &mut self.params[m * n..(m + 1) * n],
                );
            }
        }
        Ok(())
    }

    fn params(&mut self, m: usize) -> Result<Vec<f32>, NnError> {
        Ok(self.params[m * self.n..(m + 1) * self.n].to_vec())
    }
}

/// The tensor path's group on `dev`: the members `ok` of `members` (valid, one schedule), each
/// on its data set and reporting to its observer. Returns their results in the order of `ok`.
#[allow(clippy::too_many_arguments)] // the group's members, each with its data, state, observer
pub(super) fn train<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    members: &[TrainConfig],
    data: &[&Dataset],
    from: &[Option<&TrainState>],
    stop: usize,
    ok: &[usize],
    observers: &mut [&mut dyn Observer<Accuracy>],
) -> Result<Vec<super::SpanOutcome>, NnError> {
    let Some(&first) = ok.first() else {
        return Ok(Vec::new());
    };
    let mut obs: Vec<&mut dyn Observer<Accuracy>> = Vec::with_capacity(ok.len());
    let mut picked = ok.iter().peekable();
    for (m, o) in observers.iter_mut().enumerate() {
        if picked.peek() == Some(&&m) {
            picked.next();
            obs.push(&mut **o);
        }
    }
    let trains: Vec<&TrainConfig> = ok.iter().map(|&m| &members[m]).collect();
    let layout = Layout::new(cfg);
    let n = layout.total();
    let mut params = Vec::with_capacity(ok.len() * n);
    for (t, &m) in trains.iter().zip(ok) {
        params.extend(start_params(&layout, t, from[m])?);
    }
    let mut model = TensorGroup {
        dev: dev.clone(),
        cfg,
        layout: &layout,
        n,
        params,
        lipschitz: trains.iter().map(|t| t.lipschitz).collect(),
    };
    let plan = plan(data[first], &members[first]);
    let states: Vec<Option<&TrainState>> = ok.iter().map(|&m| from[m]).collect();
    let sets: Vec<&Dataset> = ok.iter().map(|&m| data[m]).collect();
    let (mut opt, steps, mut sources) =
        super::resume(&layout, &trains, &sets, &states, stop, plan)?;
    let mut batches: Vec<&mut dyn ablate_nn::Batches<Minibatch>> = sources
        .iter_mut()
        .map(|s| s as &mut dyn ablate_nn::Batches<Minibatch>)
        .collect();
    let end = steps.end;
    let results =
        ablate_nn::train_group_span(&mut model, &mut opt, plan, steps, &mut batches, &mut obs)?;
    Ok(super::outcomes(
        cfg,
        &layout,
        &model.params,
        &opt,
        end,
        results,
    ))
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use crate::*;

    /// The stated tolerance of a fused member against its unfused tensor run, after a few
    /// steps: absolute on parameters, relative on logged losses and gradient norms.
    const PARAM_TOL: f32 = 1e-5;
    const LOSS_TOL: f32 = 1e-5;

    /// `n` points in `R^in_dim`, labels from a fixed nonlinear rule.
    fn toy_data(n: usize, in_dim: usize, seed: u64) -> Dataset {
        let mut g = crate::rng::SplitMix64::new(seed, 99);
        let x: Vec<f32> = (0..n * in_dim).map(|_| g.uniform(1.5)).collect();
        let y = x
            .chunks(in_dim)
            .map(|r| {
                let s: f32 = r.iter().enumerate().map(|(i, v)| v * (i + 1) as f32).sum();
                ((s.sin() + 1.0) * 1.5).min(2.0) as u32
            })
            .collect();
        Dataset {
            x,
            y,
            dim: in_dim,
            classes: 3,
        }
    }

    #[derive(Default)]
    struct Log {
        steps: Vec<StepLog<Accuracy>>,
        epochs: Vec<EpochLog<Accuracy>>,
    }

    impl Observer<Accuracy> for Log {
        fn on_step(&mut self, log: &StepLog<Accuracy>) -> ControlFlow<()> {
            self.steps.push(*log);
            ControlFlow::Continue(())
        }
        fn on_epoch(&mut self, log: &EpochLog<Accuracy>) -> ControlFlow<()> {
            self.epochs.push(*log);
            ControlFlow::Continue(())
        }
    }

    fn close(a: f32, b: f32, rel: f32) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
    }

    /// Trains `trains` fused on `Backend::Dfdx` and each alone through `train_flow_on` on
    /// dfdx's CPU device, and holds every member to the tolerance (errors: the same message).
    /// Returns the fused results and the largest parameter difference.
    fn assert_within_tolerance(
        cfg: &FlowConfig,
        trains: &[TrainConfig],
        data: &[&Dataset],
    ) -> (Vec<Result<Flow, NnError>>, f32) {
        let exec = ExecOptions {
            threads: 1,
            backend: Backend::Dfdx,
        };
        let mut logs: Vec<Log> = trains.iter().map(|_| Log::default()).collect();
        let mut obs: Vec<&mut dyn Observer<Accuracy>> = logs
            .iter_mut()
            .map(|l| l as &mut dyn Observer<Accuracy>)
            .collect();
        let fused = train_flow_group(cfg, trains, data, &exec, &mut obs).unwrap();
        let dev = dfdx::tensor::Cpu::default();
        let mut worst = 0.0f32;
        for (m, train) in trains.iter().enumerate() {
            let mut alone = Log::default();
            let want = train_flow_on(&dev, cfg, train, data[m], &mut alone);
            let what = format!(
                "{:?} member {m}",
                (
                    cfg.form,
                    cfg.integrator,
                    cfg.activation,
                    cfg.weights,
                    cfg.dim
                )
            );
            match (&fused[m], &want) {
                (Ok(got), Ok(want)) => {
                    for (a, b) in got.params().iter().zip(want.params()) {
                        worst = worst.max((a - b).abs());
                        assert!((a - b).abs() <= PARAM_TOL, "{what}: {a} vs {b}");
                    }
                }
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string(), "{what}"),
                (got, want) => panic!("{what}: fused {got:?}, alone {want:?}"),
            }
            let (got, want) = (&logs[m], &alone);
            assert_eq!(got.steps.len(), want.steps.len(), "{what}");
            assert_eq!(got.epochs.len(), want.epochs.len(), "{what}");
            for (a, b) in got.steps.iter().zip(&want.steps) {
                assert_eq!((a.step, a.lr.to_bits()), (b.step, b.lr.to_bits()), "{what}");
                assert!(close(a.loss, b.loss, LOSS_TOL), "{what}: {a:?} vs {b:?}");
                assert!(
                    close(a.grad_norm, b.grad_norm, LOSS_TOL),
                    "{what}: {a:?} vs {b:?}"
                );
                assert_eq!(a.stats, b.stats, "{what}");
            }
            for (a, b) in got.epochs.iter().zip(&want.epochs) {
                assert_eq!((a.epoch, a.stats), (b.epoch, b.stats), "{what}");
                assert!(close(a.loss, b.loss, LOSS_TOL), "{what}: {a:?} vs {b:?}");
            }
        }
        (fused, worst)
    }

    /// Three members differing in seed, learning rate, weight decay and Lipschitz bound.
    fn members(epochs: usize) -> Vec<TrainConfig> {
        let t = |seed, lr, weight_decay, lipschitz| TrainConfig {
            epochs,
            batch: 8,
            lr,
            seed,
            weight_decay,
            lipschitz,
        };
        vec![
            t(1, 0.01, 0.0, None),
            t(2, 0.03, 0.1, None),
            t(3, 0.02, 0.05, Some(0.3)),
        ]
    }

    fn config(weights: Weights, dim: usize, v: (Form, Integrator, Activation)) -> FlowConfig {
        FlowConfig {
            in_dim: 2,
            classes: 3,
            dim,
            hidden: 5,
            steps: 2,
            h: 0.5,
            weights,
            form: v.0,
            integrator: v.1,
            activation: v.2,
        }
    }

    #[test]
    fn fused_tensor_members_match_their_unfused_tensor_runs_for_every_form() {
        // 20 examples in batches of 8: a last batch of 4 rows.
        let sets: Vec<Dataset> = (0..3).map(|s| toy_data(20, 2, 10 + s)).collect();
        let data: Vec<&Dataset> = sets.iter().collect();
        let forms = [
            (Form::C0, Integrator::Euler),
            (Form::C1, Integrator::Euler),
            (Form::C1, Integrator::Midpoint),
            (Form::C1, Integrator::Rk4),
            (Form::C2, Integrator::Euler),
        ];
        let mut worst = 0.0f32;
        for weights in [Weights::Shared, Weights::Unshared] {
            // dim 2 = in_dim: no lift; dim 3: a lift.
            for dim in [2, 3] {
                for (f, i) in forms {
                    for a in [Activation::Tanh, Activation::Relu] {
                        let cfg = config(weights, dim, (f, i, a));
                        let (out, w) = assert_within_tolerance(&cfg, &members(2), &data);
                        assert!(out.iter().all(Result::is_ok));
                        worst = worst.max(w);
                    }
                }
            }
        }
        // On dfdx's CPU device the fused members came out bit-identical (worst 0) when this
        // was written; only the tolerance is the contract (cuBLAS's batched products may
        // round differently).
        assert!(worst <= PARAM_TOL, "{worst}");
    }

    #[test]
    fn a_nan_member_leaves_the_other_members_gradients_untouched() {
        use super::TensorGroup;
        use crate::params::Layout;
        use crate::train::Minibatch;
        use ablate_nn::GroupModel;

        let cfg = config(
            Weights::Unshared,
            3,
            (Form::C1, Integrator::Midpoint, Activation::Tanh),
        );
        let layout = Layout::new(&cfg);
        let n = layout.total();
        let dev = dfdx::tensor::Cpu::default();
        let sets: Vec<Dataset> = (0..3).map(|s| toy_data(6, 2, 50 + s)).collect();
        let batches: Vec<Minibatch> = sets
            .iter()
            .map(|d| Minibatch {
                x: d.x.clone(),
                y: d.y.clone(),
            })
            .collect();
        let inits: Vec<Vec<f32>> = (0..3).map(|m| layout.init(m as u64)).collect();
        let mut params = inits.concat();
        params[n + 3] = f32::NAN;
        let mut group = TensorGroup {
            dev: dev.clone(),
            cfg: &cfg,
            layout: &layout,
            n,
            params,
            lipschitz: vec![None; 3],
        };
        let refs: Vec<&Minibatch> = batches.iter().collect();
        let mut grad = Vec::new();
        let losses = group.loss_and_grad(&refs, &[true; 3], &mut grad).unwrap();
        assert!(losses[1].sum.is_nan());
        assert!(grad[n..2 * n].iter().any(|g| g.is_nan()));
        for m in [0, 2] {
            let d = &sets[m];
            let (stats, want) =
                crate::tensor::loss_and_gradient(&dev, &cfg, &layout, &inits[m], &d.x, &d.y)
                    .unwrap();
            assert!(close(losses[m].sum as f32, stats.loss_sum as f32, LOSS_TOL));
            for (g, w) in grad[m * n..(m + 1) * n].iter().zip(&want) {
                // `want` is the gradient of the summed loss; the group's is of the mean.
                let w = w / d.len() as f32;
                assert!((g - w).abs() <= PARAM_TOL, "member {m}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn a_diverging_fused_tensor_member_fails_alone_with_its_unfused_error() {
        let sets: Vec<Dataset> = (0..3).map(|s| toy_data(24, 2, 20 + s)).collect();
        let data: Vec<&Dataset> = sets.iter().collect();
        let cfg = config(
            Weights::Unshared,
            3,
            (Form::C1, Integrator::Euler, Activation::Tanh),
        );
        let mut trains = members(3);
        trains[1].lr = 1e30;
        let (out, _) = assert_within_tolerance(&cfg, &trains, &data);
        let e = out[1].as_ref().unwrap_err();
        assert!(matches!(e, NnError::NonFinite { .. }), "{e:?}");
        assert!(out[0].is_ok() && out[2].is_ok());
    }

    #[test]
    fn an_invalid_fused_tensor_member_fails_alone() {
        let sets: Vec<Dataset> = (0..3).map(|s| toy_data(16, 2, 30 + s)).collect();
        let data: Vec<&Dataset> = sets.iter().collect();
        let cfg = config(
            Weights::Shared,
            2,
            (Form::C1, Integrator::Euler, Activation::Relu),
        );
        let mut trains = members(1);
        trains[0].lr = -1.0;
        let (out, _) = assert_within_tolerance(&cfg, &trains, &data);
        assert!(matches!(out[0], Err(NnError::InvalidConfig(_))));
        assert!(out[1].is_ok() && out[2].is_ok());
    }
}
