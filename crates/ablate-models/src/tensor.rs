//! The device-generic backend ([`crate::Backend::Dfdx`]): the flow as dfdx tensor ops, generic
//! over `D: Device<f32>`, so a CUDA build runs it unchanged.
//!
//! dfdx 0.13's `nn` modules take their sizes as const generics, and its optimisers walk only
//! `TensorCollection`s, which cannot hold runtime-shaped tensors (notes/dfdx.md). So the
//! parameters are plain `(usize, usize)` / `(usize,)` tensors, the backward pass is written
//! out (no tape: the gradient of a residual MLP is a few matrix products per step, and the
//! forward pass's activations are reused), and the core's optimizer updates the parameters on the
//! host.

use dfdx::shapes::{Axes2, Axis, HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::{
    BroadcastTo, ChooseFrom, Device, PermuteTo, SumTo, TryAdd, TryGt, TryMatMul, TryMul, TrySub,
};

use crate::config::{Activation, Form, Integrator};
use crate::constrain;
use crate::cpu::BatchStats;
use crate::params::{self, Layout};
use crate::train::{Accuracy, Minibatch};
use crate::{FlowConfig, NnError};
use ablate_nn::{Loss, Model};

type T2<D> = Tensor<(usize, usize), f32, D>;
type T1<D> = Tensor<(usize,), f32, D>;

use ablate_nn::device_error as device_err;

/// `y = x·Wᵀ + b` on the device.
#[derive(Clone, Debug)]
struct TLinear<D: Device<f32>> {
    w: T2<D>,
    b: T1<D>,
}

impl<D: Device<f32>> TLinear<D> {
    fn load(dev: &D, l: &params::Dense, p: &[f32]) -> Result<Self, D::Err> {
        Ok(TLinear {
            w: dev.try_tensor_from_vec(l.w(p).to_vec(), (l.out, l.inp))?,
            b: dev.try_tensor_from_vec(l.b(p).to_vec(), (l.out,))?,
        })
    }

    fn zeros_like(&self) -> Result<Self, D::Err> {
        let dev = self.w.device();
        Ok(TLinear {
            w: dev.try_zeros_like(self.w.shape())?,
            b: dev.try_zeros_like(self.b.shape())?,
        })
    }

    fn forward(&self, x: &T2<D>) -> Result<T2<D>, D::Err> {
        let rows = x.shape().0;
        let out = self.b.shape().0;
        let wt = self
            .w
            .clone()
            .try_permute::<(usize, usize), Axes2<1, 0>>()?;
        let b = self
            .b
            .clone()
            .try_broadcast_like::<(usize, usize), Axis<0>>(&(rows, out))?;
        x.clone().try_matmul(wt)?.try_add(b)
    }
}

/// Every tensor of a model (or of its gradient, or of an Adam moment), in layout order.
#[derive(Clone, Debug)]
struct TParams<D: Device<f32>> {
    lift: Option<TLinear<D>>,
    fields: Vec<(TLinear<D>, TLinear<D>)>,
    head: TLinear<D>,
}

impl<D: Device<f32>> TParams<D> {
    fn load(dev: &D, layout: &Layout, p: &[f32]) -> Result<Self, D::Err> {
        Ok(TParams {
            lift: layout
                .lift
                .as_ref()
                .map(|l| TLinear::load(dev, l, p))
                .transpose()?,
            fields: layout
                .fields
                .iter()
                .map(|f| Ok((TLinear::load(dev, &f.l1, p)?, TLinear::load(dev, &f.l2, p)?)))
                .collect::<Result<_, D::Err>>()?,
            head: TLinear::load(dev, &layout.head, p)?,
        })
    }

    fn zeros_like(&self) -> Result<Self, D::Err> {
        Ok(TParams {
            lift: self.lift.as_ref().map(|l| l.zeros_like()).transpose()?,
            fields: self
                .fields
                .iter()
                .map(|(a, b)| Ok((a.zeros_like()?, b.zeros_like()?)))
                .collect::<Result<_, D::Err>>()?,
            head: self.head.zeros_like()?,
        })
    }

    fn linears(&self) -> Vec<&TLinear<D>> {
        let mut v: Vec<&TLinear<D>> = self.lift.iter().collect();
        for (a, b) in &self.fields {
            v.push(a);
            v.push(b);
        }
        v.push(&self.head);
        v
    }

    /// The flat host vector, in the layout's slot order (weight, bias per layer).
    fn to_host(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for l in self.linears() {
            out.extend(l.w.as_vec());
            out.extend(l.b.as_vec());
        }
        out
    }
}

/// What the forward pass keeps for the backward pass.
struct Trace<D: Device<f32>> {
    input: T2<D>,
    /// x_0 … x_N
    xs: Vec<T2<D>>,
    /// Per step, per stage: the field's input u and its activation σ(W1·u + b1).
    stages: Vec<Vec<(T2<D>, T2<D>)>>,
    logits: T2<D>,
}

/// One field evaluation: `(a, v(u))` with `a = σ(u·W1ᵀ + b1)`, `v(u) = a·W2ᵀ + b2`.
fn field<D: Device<f32>>(
    cfg: &FlowConfig,
    (l1, l2): &(TLinear<D>, TLinear<D>),
    u: &T2<D>,
) -> Result<(T2<D>, T2<D>), D::Err> {
    let z = l1.forward(u)?;
    let a = match cfg.activation {
        Activation::Tanh => z.try_tanh()?,
        Activation::Relu => z.try_relu()?,
    };
    let v = l2.forward(&a)?;
    Ok((a, v))
}

/// `x + s·y`
fn add_scaled<D: Device<f32>>(x: &T2<D>, s: f32, y: T2<D>) -> Result<T2<D>, D::Err> {
    x.clone().try_add(y.try_mul(s)?)
}

fn forward<D: Device<f32>>(
    cfg: &FlowConfig,
    p: &TParams<D>,
    input: T2<D>,
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
        let mut eval = |u: &T2<D>| -> Result<T2<D>, D::Err> {
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
                // The same order of operations as the CPU backend.
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

fn transpose<D: Device<f32>>(t: &T2<D>) -> Result<T2<D>, D::Err> {
    t.clone().try_permute::<(usize, usize), Axes2<1, 0>>()
}

fn col_sums<D: Device<f32>>(t: &T2<D>) -> Result<T1<D>, D::Err> {
    t.clone().try_sum::<(usize,), Axis<0>>()
}

/// `acc += x`
fn accumulate<S: Shape, D: Device<f32>>(
    acc: &mut Tensor<S, f32, D>,
    x: &Tensor<S, f32, D>,
) -> Result<(), D::Err> {
    acc.try_axpy(1.0, x, 1.0)
}

/// Back through `out = scale·v(u)` (u and its activation `a` from the trace) given
/// `gout` = ∂out: adds the field's parameter gradients into `g` and returns ∂u.
fn field_backward<D: Device<f32>>(
    cfg: &FlowConfig,
    (l1, l2): &(TLinear<D>, TLinear<D>),
    (g1, g2): &mut (TLinear<D>, TLinear<D>),
    (u, a): &(T2<D>, T2<D>),
    gout: &T2<D>,
    scale: f32,
) -> Result<T2<D>, D::Err> {
    let gv = gout.clone().try_mul(scale)?;
    accumulate(&mut g2.w, &transpose(&gv)?.try_matmul(a.clone())?)?;
    accumulate(&mut g2.b, &col_sums(&gv)?)?;
    let ga = gv.try_matmul(l2.w.clone())?;
    let gz = match cfg.activation {
        // a = tanh(z): ∂z = ∂a ⊙ (1 − a²)
        Activation::Tanh => {
            let one_minus_a2 = a.clone().try_square()?.try_negate()?.try_add(1.0)?;
            ga.try_mul(one_minus_a2)?
        }
        // a = relu(z): ∂z = ∂a where z > 0 (equivalently a > 0), else 0, so relu'(0) = 0.
        Activation::Relu => {
            let zeros = ga.device().try_zeros_like(ga.shape())?;
            a.try_gt(0.0)?.try_choose(ga, zeros)?
        }
    };
    accumulate(&mut g1.w, &transpose(&gz)?.try_matmul(u.clone())?)?;
    accumulate(&mut g1.b, &col_sums(&gz)?)?;
    gz.try_matmul(l1.w.clone())
}

/// `a·x + b·y`
fn lin2<D: Device<f32>>(a: f32, x: &T2<D>, b: f32, y: &T2<D>) -> Result<T2<D>, D::Err> {
    x.clone().try_mul(a)?.try_add(y.clone().try_mul(b)?)
}

/// The gradient of the summed loss scaled by `scale`, given `dlogits` = ∂/∂logits.
fn backward<D: Device<f32>>(
    cfg: &FlowConfig,
    p: &TParams<D>,
    trace: &Trace<D>,
    dlogits: T2<D>,
) -> Result<TParams<D>, D::Err> {
    let mut g = p.zeros_like()?;
    let h = cfg.h;
    let xn = &trace.xs[cfg.steps];
    accumulate(&mut g.head.w, &transpose(&dlogits)?.try_matmul(xn.clone())?)?;
    accumulate(&mut g.head.b, &col_sums(&dlogits)?)?;
    let mut gx = dlogits.try_matmul(p.head.w.clone())?;
    // C2: the part of ∂x_{k−1} that x_{k+1} contributes (−∂x_{k+1}), carried one step.
    let mut pending: Option<T2<D>> = None;
    for k in (0..cfg.steps).rev() {
        let f = cfg.field_of_step(k);
        let (fp, gf) = (&p.fields[f], &mut g.fields[f]);
        let st = &trace.stages[k];
        gx = match (cfg.form, cfg.integrator) {
            (Form::C1, Integrator::Euler) => {
                // x' = x + h·v(x)
                let gu = field_backward(cfg, fp, gf, &st[0], &gx, h)?;
                gx.try_add(gu)?
            }
            (Form::C1, Integrator::Midpoint) => {
                // x' = x + h·v(u), u = x + h/2·v(x)
                let gu = field_backward(cfg, fp, gf, &st[1], &gx, h)?;
                let gx0 = field_backward(cfg, fp, gf, &st[0], &gu, h / 2.0)?;
                gx.try_add(gu)?.try_add(gx0)?
            }
            (Form::C1, Integrator::Rk4) => {
                // See the CPU backend for the recurrence.
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
                // ∂x_k = pending + 2·∂x_{k+1} + J_vᵀ(h²·∂x_{k+1}); at k = 0, 1·∂x_{k+1}
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
        accumulate(&mut gl.b, &col_sums(&gx)?)?;
    }
    Ok(g)
}

/// Loss and accuracy of `trace`'s logits against `y`, and `scale · ∂(Σ loss)/∂logits`.
fn loss_and_grad<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    trace: &Trace<D>,
    y: &[u32],
    scale: f32,
) -> Result<(BatchStats, T2<D>), D::Err> {
    let c = cfg.classes;
    let n = y.len();
    let logp = trace.logits.clone().try_log_softmax::<Axis<1>>()?.as_vec();
    let stats = stats_from_log_probs(&logp, y, c);
    let mut onehot = vec![0.0f32; n * c];
    for (i, &label) in y.iter().enumerate() {
        onehot[i * c + label as usize] = 1.0;
    }
    let onehot = dev.try_tensor_from_vec(onehot, (n, c))?;
    let probs = trace.logits.clone().try_softmax::<Axis<1>>()?;
    let dlogits = probs.try_sub(onehot)?.try_mul(scale)?;
    Ok((stats, dlogits))
}

/// Loss sum and correct count from row-major log-probabilities (argmax: first of ties).
fn stats_from_log_probs(logp: &[f32], y: &[u32], classes: usize) -> BatchStats {
    let mut stats = BatchStats::default();
    for (row, &label) in logp.chunks_exact(classes).zip(y) {
        stats.loss_sum += -row[label as usize] as f64;
        stats.correct += usize::from(crate::kernels::argmax(row) == label as usize);
    }
    stats
}

/// Training state of the tensor backend on device `D` (a [`Model`] for the core's loop): the
/// parameters stay on the host, where the core's optimizer updates them, and go to the device
/// once per step.
pub(crate) struct TensorTrainer<'a, D: Device<f32>> {
    dev: D,
    cfg: FlowConfig,
    layout: &'a Layout,
    params: Vec<f32>,
    lipschitz: Option<f32>,
}

impl<'a, D: Device<f32>> TensorTrainer<'a, D> {
    pub(crate) fn new(
        dev: &D,
        cfg: &FlowConfig,
        layout: &'a Layout,
        params: Vec<f32>,
        lipschitz: Option<f32>,
    ) -> Self {
        TensorTrainer {
            dev: dev.clone(),
            cfg: cfg.clone(),
            layout,
            params,
            lipschitz,
        }
    }

    fn step(&mut self, batch: &Minibatch, grad: &mut Vec<f32>) -> Result<BatchStats, D::Err> {
        let params = TParams::load(&self.dev, self.layout, &self.params)?;
        let input = self
            .dev
            .try_tensor_from_vec(batch.x.clone(), (batch.y.len(), self.cfg.in_dim))?;
        let trace = forward(&self.cfg, &params, input)?;
        let scale = 1.0 / batch.y.len() as f32;
        let (stats, dlogits) = loss_and_grad(&self.dev, &self.cfg, &trace, &batch.y, scale)?;
        *grad = backward(&self.cfg, &params, &trace, dlogits)?.to_host();
        Ok(stats)
    }
}

impl<D: Device<f32>> Model for TensorTrainer<'_, D> {
    type Batch = Minibatch;
    type Stats = Accuracy;

    fn loss_and_grad(
        &mut self,
        batch: &Minibatch,
        grad: &mut Vec<f32>,
    ) -> Result<Loss<Accuracy>, NnError> {
        let stats = self.step(batch, grad).map_err(device_err)?;
        Ok(stats.loss(batch.y.len()))
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self.params);
        Ok(())
    }

    fn constrain(&mut self, _lr: f32) -> Result<(), NnError> {
        if let Some(c) = self.lipschitz {
            constrain::project(&self.cfg, self.layout, c, &mut self.params);
        }
        Ok(())
    }

    fn params(&mut self) -> Result<Vec<f32>, NnError> {
        Ok(self.params.clone())
    }
}

/// Logits of `rows` examples through the tensor path on `dev`.
pub(crate) fn logits<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    layout: &Layout,
    p: &[f32],
    x: &[f32],
    rows: usize,
) -> Result<Vec<f32>, NnError> {
    let run = || -> Result<Vec<f32>, D::Err> {
        let params = TParams::load(dev, layout, p)?;
        let input = dev.try_tensor_from_vec(x[..rows * cfg.in_dim].to_vec(), (rows, cfg.in_dim))?;
        Ok(forward(cfg, &params, input)?.logits.as_vec())
    };
    run().map_err(device_err)
}

/// Rows of a data set scored per forward pass on a device: large enough that a GPU is busy,
/// small enough that the activations the forward pass keeps stay in tens of MB.
const EVAL_ROWS: usize = 4096;

/// Loss sum and correct count of a data set through the tensor path on `dev`; each row is
/// scored on the host as the CPU backend scores it ([`crate::cpu::softmax_xent`]).
pub(crate) fn eval_stats<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    layout: &Layout,
    p: &[f32],
    x: &[f32],
    y: &[u32],
) -> Result<BatchStats, NnError> {
    let params = TParams::load(dev, layout, p).map_err(device_err)?;
    let (d, c) = (cfg.in_dim, cfg.classes);
    let mut total = BatchStats::default();
    for (xc, yc) in x.chunks(EVAL_ROWS * d).zip(y.chunks(EVAL_ROWS)) {
        let input = dev
            .try_tensor_from_vec(xc.to_vec(), (yc.len(), d))
            .map_err(device_err)?;
        let mut logits = forward(cfg, &params, input)
            .map_err(device_err)?
            .logits
            .as_vec();
        for (row, &label) in logits.chunks_exact_mut(c).zip(yc) {
            let (loss, argmax) = crate::cpu::softmax_xent(row, label as usize);
            total.loss_sum += loss as f64;
            total.correct += usize::from(argmax == label as usize);
        }
    }
    Ok(total)
}

/// Loss sum and gradient (flat, layout order) of the summed loss over `(x, y)`, through the
/// tensor path: what the CPU backend and finite differences are checked against.
#[cfg(test)]
pub(crate) fn loss_and_gradient<D: Device<f32>>(
    dev: &D,
    cfg: &FlowConfig,
    layout: &Layout,
    p: &[f32],
    x: &[f32],
    y: &[u32],
) -> Result<(BatchStats, Vec<f32>), NnError> {
    let run = || -> Result<(BatchStats, Vec<f32>), D::Err> {
        let params = TParams::load(dev, layout, p)?;
        let input = dev.try_tensor_from_vec(x.to_vec(), (y.len(), cfg.in_dim))?;
        let trace = forward(cfg, &params, input)?;
        let (stats, dlogits) = loss_and_grad(dev, cfg, &trace, y, 1.0)?;
        Ok((stats, backward(cfg, &params, &trace, dlogits)?.to_host()))
    };
    run().map_err(device_err)
}
