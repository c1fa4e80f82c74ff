//! The fast CPU path of the language models: [`LmConfig`]'s transformer, forward and
//! hand-written backward pass, on flat `f32` buffers that live as long as a [`Runner`].
//!
//! Dense layers run as one `gemm` over all the rows of a shard; attention runs per (row, head)
//! with strided `gemm`s reading the heads in place; LayerNorm, GELU, the masked softmax and the
//! cross-entropy are fused element-wise loops compiled for AVX2 as well as the baseline.
//!
//! A batch is cut into shards of whole rows, at most [`SHARD_TOKENS`] tokens each, a rule that
//! depends on the batch's shape alone; shards run on the engine's [`Pool`] and their gradients
//! are summed in shard order, so results never depend on the thread count.
//!
//! Where the time goes (d_model 128, 2 layers, batch 32 × 128, `examples/lm_bench.rs`): ~80 %
//! in `gemm` at ~60 GFLOP/s a core, which is close to its ceiling on this AVX2 machine; the
//! fused loops (softmax, cross-entropy, GELU, LayerNorm) take most of the rest. That is about
//! PyTorch 2.15's speed on the same network (`scripts/bench_torch_lm.py`); what is left to win
//! is in the matrix products themselves.
//!
//! Masks never materialise: every query position attends to a prefix `0..lim` of the key
//! positions (causal: `t + 1`; a prefix-LM row with prefix `p`: `max(p, t + 1)`; the encoder
//! and cross-attention: the row's valid encoder length), and the softmax writes exact zeros
//! beyond `lim`.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard, RwLock};

use super::Batch;
use super::config::{Arch, LmConfig};
use super::layout::{Attention, Dense, LmLayout, Norm, Stack};
use crate::NnError;
use crate::kernels::{self, View as Mat, multiversion, tanh_approx};
use crate::pool::{self, MAX_SHARDS, Pool};

const LN_EPS: f32 = 1e-5;

/// The most tokens (decoder plus encoder) one shard holds: 1024 gives a batch of 32 × 128 four
/// shards, two per core, with dense products still 1024 rows tall.
pub(crate) const SHARD_TOKENS: usize = 1024;

/// Query rows per block of the attention products: a block reads only the keys its last row
/// may attend to, which skips most of the masked half of a causal score matrix.
const QUERY_BLOCK: usize = 32;

// ---------------------------------------------------------------------------------------------
// Matrix products and element-wise kernels

/// `dst := [dst +] alpha · a·b`, `dst` row-major `a.rows × b.cols` with rows `drs` apart.
fn mm(dst: &mut [f32], drs: usize, acc: bool, a: Mat<'_>, b: Mat<'_>, alpha: f32) {
    kernels::matmul_strided(dst, drs, acc, a, b, alpha);
}

/// Sum with eight lanes (so it vectorises; the order is fixed, so results are reproducible).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in tail {
        s += *v;
    }
    s
}

/// `Σ x·y` with eight lanes.
#[inline(always)]
fn dot8(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (a, b) in xt.iter().zip(yt) {
        s += a * b;
    }
    s
}

/// The maximum, NaN ignored (an all-NaN or empty slice gives −∞), with eight lanes.
#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.iter().chain(tail) {
        m = if *v > m { *v } else { m };
    }
    m
}

/// `x := exp(x − shift)`, returning `Σ x`, with eight lanes.
#[inline(always)]
fn exp_sum8(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            c[i] = exp_approx(c[i] - shift);
            acc[i] += c[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in chunks.into_remainder() {
        *v = exp_approx(*v - shift);
        s += *v;
    }
    s
}

/// `exp` by Cephes' `expf` scheme (range reduction by ln 2, a degree-5 polynomial, the exponent
/// put in by bit arithmetic): branch-free so it vectorises, within a few ulp of libm
/// (`fast_exp_is_accurate`). Inputs below −87.3 give ~1e-38, not 0; masked entries never reach
/// it.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer and leaves it in the low mantissa bits, so `n` and
    // 2ⁿ come out of integer arithmetic (a float-to-int cast would not vectorise).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = n.mul_add(-0.693_359_375, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_15e-4_f32;
    p = p.mul_add(r, 1.398_199_95e-3);
    p = p.mul_add(r, 8.333_451_9e-3);
    p = p.mul_add(r, 4.166_579_59e-2);
    p = p.mul_add(r, 1.666_666_55e-1);
    p = p.mul_add(r, 5.000_000_12e-1);
    let y = (p * r).mul_add(r, r) + 1.0;
    let bits = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23;
    y * f32::from_bits(bits)
}

multiversion! {
    /// LayerNorm of each `d`-row of `x` (`d = g.len()`): keeps `xhat` and `1/σ` for the
    /// backward pass and writes `h = xhat·g + b`.
    fn ln_forward(x: &[f32], g: &[f32], b: &[f32], xhat: &mut [f32], rstd: &mut [f32], h: &mut [f32]) {
        let d = g.len();
        let inv_d = 1.0 / d as f32;
        for (((x, xh), hh), rs) in x
            .chunks_exact(d)
            .zip(xhat.chunks_exact_mut(d))
            .zip(h.chunks_exact_mut(d))
            .zip(rstd.iter_mut())
        {
            let mean = sum8(x) * inv_d;
            for (xh, x) in xh.iter_mut().zip(x) {
                *xh = *x - mean;
            }
            let var = dot8(xh, xh) * inv_d;
            let r = 1.0 / (var + LN_EPS).sqrt();
            *rs = r;
            for (((xh, hh), g), b) in xh.iter_mut().zip(hh.iter_mut()).zip(g).zip(b) {
                *xh *= r;
                *hh = *xh * *g + *b;
            }
        }
    }
}

multiversion! {
    /// Back through LayerNorm: `gg += Σ gh·xhat`, `gb += Σ gh`, `gx += ∂x`.
    fn ln_backward(gh: &[f32], xhat: &[f32], rstd: &[f32], g: &[f32], gg: &mut [f32], gb: &mut [f32], gx: &mut [f32]) {
        let d = g.len();
        let inv_d = 1.0 / d as f32;
        for (((gh, xh), gx), r) in gh
            .chunks_exact(d)
            .zip(xhat.chunks_exact(d))
            .zip(gx.chunks_exact_mut(d))
            .zip(rstd)
        {
            let mut a1 = [0.0f32; 8];
            let mut a2 = [0.0f32; 8];
            let main = d - d % 8;
            for ((gh, xh), g) in gh[..main]
                .chunks_exact(8)
                .zip(xh[..main].chunks_exact(8))
                .zip(g[..main].chunks_exact(8))
            {
                for i in 0..8 {
                    let gxh = gh[i] * g[i];
                    a1[i] += gxh;
                    a2[i] += gxh * xh[i];
                }
            }
            for i in main..d {
                let gxh = gh[i] * g[i];
                a1[0] += gxh;
                a2[0] += gxh * xh[i];
            }
            let m1 = sum8(&a1) * inv_d;
            let m2 = sum8(&a2) * inv_d;
            for (((((gh, xh), g), gx), gg), gb) in gh
                .iter()
                .zip(xh)
                .zip(g)
                .zip(gx.iter_mut())
                .zip(gg.iter_mut())
                .zip(gb.iter_mut())
            {
                *gg += *gh * *xh;
                *gb += *gh;
                *gx += *r * (*gh * *g - m1 - *xh * m2);
            }
        }
    }
}

const GELU_C: f32 = 0.797_884_6; // √(2/π)
const GELU_A: f32 = 0.044_715;

multiversion! {
    /// `a := gelu(z)`, tanh approximation.
    fn gelu_forward(z: &[f32], a: &mut [f32]) {
        for (a, z) in a.iter_mut().zip(z) {
            let z = *z;
            let t = tanh_approx(GELU_C * (z + GELU_A * z * z * z));
            *a = 0.5 * z * (1.0 + t);
        }
    }
}

multiversion! {
    /// Back through `a = gelu(z)`: `g := g ⊙ gelu'(z)`, and `bias_grad += Σ_rows g`.
    fn gelu_backward(g: &mut [f32], z: &[f32], bias_grad: &mut [f32]) {
        let cols = bias_grad.len();
        for (g, z) in g.chunks_exact_mut(cols).zip(z.chunks_exact(cols)) {
            for ((g, z), bg) in g.iter_mut().zip(z).zip(bias_grad.iter_mut()) {
                let z = *z;
                let t = tanh_approx(GELU_C * (z + GELU_A * z * z * z));
                let dt = (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * z * z);
                *g *= 0.5 * (1.0 + t) + 0.5 * z * dt;
                *bg += *g;
            }
        }
    }
}

multiversion! {
    /// Softmax of each `tk`-row of `s` over its first `lims[i]` entries; the rest become 0 (a
    /// row with no key at all is all 0).
    fn softmax_rows(s: &mut [f32], tk: usize, lims: &[usize]) {
        for (row, &lim) in s.chunks_exact_mut(tk).zip(lims) {
            let (live, dead) = row.split_at_mut(lim.min(tk));
            dead.fill(0.0);
            if live.is_empty() {
                continue;
            }
            let max = max8(live);
            let inv = 1.0 / exp_sum8(live, max);
            for v in live.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// Back through [`softmax_rows`]: `dp := p ⊙ (dp − Σ p·dp)` on live entries, 0 elsewhere.
    fn softmax_backward(dp: &mut [f32], p: &[f32], tk: usize, lims: &[usize]) {
        for ((dp, p), &lim) in dp.chunks_exact_mut(tk).zip(p.chunks_exact(tk)).zip(lims) {
            let lim = lim.min(tk);
            let dot = dot8(&dp[..lim], &p[..lim]);
            for (d, p) in dp[..lim].iter_mut().zip(&p[..lim]) {
                *d = *p * (*d - dot);
            }
            dp[lim..].fill(0.0);
        }
    }
}

multiversion! {
    /// Softmax cross-entropy of each `v`-row of `logits` against `targets`, weighted by `w`:
    /// adds `Σ w·nll` to `loss` and leaves `(softmax − onehot)·w·scale` in `logits`.
    fn cross_entropy(logits: &mut [f32], v: usize, targets: &[u32], w: &[f32], scale: f32, loss: &mut f64) {
        for ((row, &t), &w) in logits.chunks_exact_mut(v).zip(targets).zip(w) {
            let max = max8(row);
            let target_logit = row[t as usize];
            let sum = exp_sum8(row, max);
            let nll = (max as f64 + (sum as f64).ln()) - target_logit as f64;
            *loss += w as f64 * nll;
            let k = w * scale / sum;
            for x in row.iter_mut() {
                *x *= k;
            }
            row[t as usize] -= w * scale;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layers

fn size(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// `y := x·W + b` over `rows` rows.
fn dense_forward(dn: &Dense, p: &[f32], x: &[f32], rows: usize, y: &mut [f32]) {
    let y = &mut y[..rows * dn.out];
    kernels::set_rows_bias(y, None, dn.b(p), 1.0);
    mm(
        y,
        dn.out,
        true,
        Mat::new(&x[..rows * dn.inp], rows, dn.inp),
        Mat::new(dn.w(p), dn.inp, dn.out),
        1.0,
    );
}

/// `∂W += xᵀ·gy`, `∂b += Σ gy`.
fn dense_param_grad(dn: &Dense, x: &[f32], gy: &[f32], rows: usize, grad: &mut [f32]) {
    mm(
        &mut grad[dn.w..dn.w + dn.inp * dn.out],
        dn.out,
        true,
        Mat::new(&x[..rows * dn.inp], rows, dn.inp).t(),
        Mat::new(&gy[..rows * dn.out], rows, dn.out),
        1.0,
    );
    kernels::add_col_sums(&mut grad[dn.b..dn.b + dn.out], &gy[..rows * dn.out], 1.0);
}

/// `gx (+)= gy·Wᵀ`.
fn dense_input_grad(dn: &Dense, p: &[f32], gy: &[f32], rows: usize, gx: &mut [f32], acc: bool) {
    mm(
        gx,
        dn.inp,
        acc,
        Mat::new(&gy[..rows * dn.out], rows, dn.out),
        Mat::new(dn.w(p), dn.inp, dn.out).t(),
        1.0,
    );
}

/// What one LayerNorm keeps for the backward pass.
#[derive(Default)]
struct LnWs {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
    h: Vec<f32>,
}

impl LnWs {
    fn forward(&mut self, n: &Norm, p: &[f32], x: &[f32], rows: usize, d: usize) {
        size(&mut self.xhat, rows * d);
        size(&mut self.h, rows * d);
        size(&mut self.rstd, rows);
        ln_forward(
            &x[..rows * d],
            &p[n.g..n.g + d],
            &p[n.b..n.b + d],
            &mut self.xhat,
            &mut self.rstd,
            &mut self.h,
        );
    }

    fn backward(
        &self,
        n: &Norm,
        p: &[f32],
        gh: &[f32],
        d: usize,
        grad: &mut [f32],
        gx: &mut [f32],
    ) {
        let rows = self.rstd.len();
        let (gg, gb) = grad_pair(grad, n.g, n.b, d);
        ln_backward(
            &gh[..rows * d],
            &self.xhat,
            &self.rstd,
            &p[n.g..n.g + d],
            gg,
            gb,
            &mut gx[..rows * d],
        );
    }
}

/// Two disjoint `d`-slices of `grad` (`a < b`).
fn grad_pair(grad: &mut [f32], a: usize, b: usize, d: usize) -> (&mut [f32], &mut [f32]) {
    assert!(a + d <= b);
    let (lo, hi) = grad.split_at_mut(b);
    (&mut lo[a..a + d], &mut hi[..d])
}

/// What one attention layer keeps: projections, attention weights (rows × heads × t × tk)
/// and the heads' concatenated output.
#[derive(Default)]
struct AttWs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    p: Vec<f32>,
    ctx: Vec<f32>,
}

/// Shapes of one attention call: `b` rows of `t` queries and `tk` keys, each query attending
/// to keys `0..lims[row·t + i]`.
#[derive(Clone, Copy)]
struct AttShape<'a> {
    b: usize,
    t: usize,
    tk: usize,
    lims: &'a [usize],
}

impl AttShape<'_> {
    /// Query blocks of row `r`: (rows, keys any of them may read).
    fn blocks(&self, r: usize) -> impl Iterator<Item = (Range<usize>, usize)> + '_ {
        let lims = &self.lims[r * self.t..(r + 1) * self.t];
        (0..self.t).step_by(QUERY_BLOCK).map(move |i0| {
            let i1 = (i0 + QUERY_BLOCK).min(self.t);
            let kmax = lims[i0..i1].iter().copied().max().unwrap_or(0).min(self.tk);
            (i0..i1, kmax)
        })
    }
}

#[allow(clippy::too_many_arguments)]
/// `x += Attn(h, src)`: queries from `h` (`b·t` rows), keys and values from `src` (`b·tk`).
fn attn_forward(
    cfg: &LmConfig,
    p: &[f32],
    a: &Attention,
    h: &[f32],
    src: &[f32],
    sh: AttShape<'_>,
    ws: &mut AttWs,
    x: &mut [f32],
) {
    let (d, heads, hd) = (cfg.d_model, cfg.heads, cfg.head_dim());
    let AttShape { b, t, tk, lims } = sh;
    let scale = 1.0 / (hd as f32).sqrt();
    let AttWs {
        q,
        k,
        v,
        p: probs,
        ctx,
    } = ws;
    size(q, b * t * d);
    size(k, b * tk * d);
    size(v, b * tk * d);
    size(probs, b * heads * t * tk);
    size(ctx, b * t * d);
    dense_forward(&a.q, p, h, b * t, q);
    dense_forward(&a.k, p, src, b * tk, k);
    dense_forward(&a.v, p, src, b * tk, v);
    for r in 0..b {
        for hh in 0..heads {
            let pr = &mut probs[(r * heads + hh) * t * tk..][..t * tk];
            let qo = r * t * d + hh * hd;
            let ko = r * tk * d + hh * hd;
            for (rows, kmax) in sh.blocks(r) {
                let (i0, m) = (rows.start, rows.len());
                let blk = &mut pr[i0 * tk..(i0 + m) * tk];
                if kmax > 0 {
                    let qh = Mat::strided(&q[qo + i0 * d..], m, hd, d);
                    let kh = Mat::strided(&k[ko..], kmax, hd, d);
                    mm(blk, tk, false, qh, kh.t(), scale);
                }
                softmax_rows(blk, tk, &lims[r * t + i0..r * t + i0 + m]);
                let vh = Mat::strided(&v[ko..], kmax, hd, d);
                let pb = Mat::strided(blk, m, kmax, tk);
                mm(&mut ctx[qo + i0 * d..], d, false, pb, vh, 1.0);
            }
        }
    }
    kernels::add_rows_bias(&mut x[..b * t * d], a.o.b(p), 1.0);
    mm(
        x,
        d,
        true,
        Mat::new(ctx, b * t, d),
        Mat::new(a.o.w(p), d, d),
        1.0,
    );
}

/// Gradient buffers of one shard, reused by every layer.
#[derive(Default)]
struct Scratch {
    /// ∂ of the residual stream.
    gx: Vec<f32>,
    /// ∂ of a LayerNorm's output.
    gh: Vec<f32>,
    gq: Vec<f32>,
    gk: Vec<f32>,
    gv: Vec<f32>,
    gctx: Vec<f32>,
    gf: Vec<f32>,
    dp: Vec<f32>,
}

/// Back through `x += Attn(h, src)` given `gout` = ∂x: parameter gradients into `grad`, and
/// ∂q, ∂k, ∂v (the projections' outputs) left in `gq`, `gk`, `gv`.
#[allow(clippy::too_many_arguments)]
fn attn_backward(
    cfg: &LmConfig,
    p: &[f32],
    a: &Attention,
    h: &[f32],
    src: &[f32],
    sh: AttShape<'_>,
    ws: &AttWs,
    gout: &[f32],
    gctx: &mut Vec<f32>,
    gq: &mut Vec<f32>,
    gk: &mut Vec<f32>,
    gv: &mut Vec<f32>,
    dp: &mut Vec<f32>,
    grad: &mut [f32],
) {
    let (d, heads, hd) = (cfg.d_model, cfg.heads, cfg.head_dim());
    let AttShape { b, t, tk, lims } = sh;
    let scale = 1.0 / (hd as f32).sqrt();
    let (nq, nk) = (b * t, b * tk);
    size(gctx, nq * d);
    size(gq, nq * d);
    size(gk, nk * d);
    size(gv, nk * d);
    size(dp, t * tk);
    dense_param_grad(&a.o, &ws.ctx, gout, nq, grad);
    dense_input_grad(&a.o, p, gout, nq, gctx, false);
    for r in 0..b {
        for hh in 0..heads {
            let pr = &ws.p[(r * heads + hh) * t * tk..][..t * tk];
            let qo = r * t * d + hh * hd;
            let ko = r * tk * d + hh * hd;
            // Every block adds into ∂K, ∂V of the keys it reads; keys no query reads stay 0.
            for j in 0..tk {
                gk[ko + j * d..ko + j * d + hd].fill(0.0);
                gv[ko + j * d..ko + j * d + hd].fill(0.0);
            }
            for (rows, kmax) in sh.blocks(r) {
                let (i0, m) = (rows.start, rows.len());
                let gch = Mat::strided(&gctx[qo + i0 * d..], m, hd, d);
                let pb = Mat::strided(&pr[i0 * tk..], m, kmax, tk);
                let vh = Mat::strided(&ws.v[ko..], kmax, hd, d);
                let blk = &mut dp[i0 * tk..(i0 + m) * tk];
                // ∂P = ∂ctx·Vᵀ; ∂V += Pᵀ·∂ctx
                mm(blk, tk, false, gch, vh.t(), 1.0);
                mm(&mut gv[ko..], d, true, pb.t(), gch, 1.0);
                softmax_backward(
                    blk,
                    pr_rows(pr, i0, m, tk),
                    tk,
                    &lims[r * t + i0..r * t + i0 + m],
                );
                let ds = Mat::strided(blk, m, kmax, tk);
                let kh = Mat::strided(&ws.k[ko..], kmax, hd, d);
                mm(&mut gq[qo + i0 * d..], d, false, ds, kh, scale);
                let qh = Mat::strided(&ws.q[qo + i0 * d..], m, hd, d);
                mm(&mut gk[ko..], d, true, ds.t(), qh, scale);
            }
        }
    }
    dense_param_grad(&a.q, h, gq, nq, grad);
    dense_param_grad(&a.k, src, gk, nk, grad);
    dense_param_grad(&a.v, src, gv, nk, grad);
}

fn pr_rows(pr: &[f32], i0: usize, m: usize, tk: usize) -> &[f32] {
    &pr[i0 * tk..(i0 + m) * tk]
}

/// What one block keeps.
#[derive(Default)]
struct BlockWs {
    ln1: LnWs,
    att: AttWs,
    lnx: LnWs,
    cross: AttWs,
    ln2: LnWs,
    /// FF pre-activation and activation.
    f1: Vec<f32>,
    fa: Vec<f32>,
}

/// What one stack keeps: its residual stream, blocks, final norm and attention limits.
#[derive(Default)]
struct StackWs {
    x: Vec<f32>,
    blocks: Vec<BlockWs>,
    ln_f: LnWs,
    lims: Vec<usize>,
}

/// The encoder's output a decoder stack attends to.
#[derive(Clone, Copy)]
struct Cross<'a> {
    enc: &'a [f32],
    s: usize,
    lims: &'a [usize],
}

fn stack_forward(
    cfg: &LmConfig,
    p: &[f32],
    st: &Stack,
    sw: &mut StackWs,
    b: usize,
    t: usize,
    cross: Option<Cross<'_>>,
) {
    let (d, n) = (cfg.d_model, b * t);
    sw.blocks.resize_with(st.blocks.len(), BlockWs::default);
    let StackWs {
        x,
        blocks,
        ln_f,
        lims,
    } = sw;
    let self_shape = AttShape { b, t, tk: t, lims };
    for (blk, bw) in st.blocks.iter().zip(blocks.iter_mut()) {
        bw.ln1.forward(&blk.ln1, p, x, n, d);
        attn_forward(
            cfg,
            p,
            &blk.attn,
            &bw.ln1.h,
            &bw.ln1.h,
            self_shape,
            &mut bw.att,
            x,
        );
        if let (Some((lnx, ca)), Some(c)) = (&blk.cross, cross) {
            bw.lnx.forward(lnx, p, x, n, d);
            let shape = AttShape {
                b,
                t,
                tk: c.s,
                lims: c.lims,
            };
            attn_forward(cfg, p, ca, &bw.lnx.h, c.enc, shape, &mut bw.cross, x);
        }
        bw.ln2.forward(&blk.ln2, p, x, n, d);
        size(&mut bw.f1, n * cfg.d_ff);
        size(&mut bw.fa, n * cfg.d_ff);
        dense_forward(&blk.ff1, p, &bw.ln2.h, n, &mut bw.f1);
        gelu_forward(&bw.f1, &mut bw.fa);
        kernels::add_rows_bias(&mut x[..n * d], blk.ff2.b(p), 1.0);
        mm(
            x,
            d,
            true,
            Mat::new(&bw.fa, n, cfg.d_ff),
            Mat::new(blk.ff2.w(p), cfg.d_ff, d),
            1.0,
        );
    }
    ln_f.forward(&st.ln_f, p, x, n, d);
}

/// Back through a stack given `gout` = ∂ of its final LayerNorm's output; leaves ∂ of its
/// input in `sc.gx` and adds the encoder output's gradient into `genc`.
#[allow(clippy::too_many_arguments)]
fn stack_backward(
    cfg: &LmConfig,
    p: &[f32],
    st: &Stack,
    sw: &StackWs,
    b: usize,
    t: usize,
    gout: &[f32],
    sc: &mut Scratch,
    grad: &mut [f32],
    cross: Option<(Cross<'_>, &mut [f32])>,
) {
    let (d, n, f) = (cfg.d_model, b * t, cfg.d_ff);
    let Scratch {
        gx,
        gh,
        gq,
        gk,
        gv,
        gctx,
        gf,
        dp,
    } = sc;
    size(gx, n * d);
    size(gh, n * d);
    size(gf, n * f);
    gx.fill(0.0);
    sw.ln_f.backward(&st.ln_f, p, gout, d, grad, gx);
    let self_shape = AttShape {
        b,
        t,
        tk: t,
        lims: &sw.lims,
    };
    let mut cross = cross;
    for (blk, bw) in st.blocks.iter().zip(&sw.blocks).rev() {
        // x += ff2(gelu(ff1(ln2(x))))
        dense_param_grad(&blk.ff2, &bw.fa, gx, n, grad);
        dense_input_grad(&blk.ff2, p, gx, n, gf, false);
        let (w1, b1) = (blk.ff1.w, blk.ff1.b);
        debug_assert!(w1 < b1);
        gelu_backward(&mut gf[..n * f], &bw.f1, &mut grad[b1..b1 + f]);
        mm(
            &mut grad[w1..w1 + d * f],
            f,
            true,
            Mat::new(&bw.ln2.h, n, d).t(),
            Mat::new(&gf[..n * f], n, f),
            1.0,
        );
        dense_input_grad(&blk.ff1, p, gf, n, gh, false);
        bw.ln2.backward(&blk.ln2, p, gh, d, grad, gx);
        // x += CrossAttn(lnx(x), enc)
        if let (Some((lnx, ca)), Some((c, genc))) = (&blk.cross, cross.as_mut()) {
            let shape = AttShape {
                b,
                t,
                tk: c.s,
                lims: c.lims,
            };
            attn_backward(
                cfg, p, ca, &bw.lnx.h, c.enc, shape, &bw.cross, gx, gctx, gq, gk, gv, dp, grad,
            );
            dense_input_grad(&ca.q, p, gq, n, gh, false);
            dense_input_grad(&ca.k, p, gk, b * c.s, genc, true);
            dense_input_grad(&ca.v, p, gv, b * c.s, genc, true);
            bw.lnx.backward(lnx, p, gh, d, grad, gx);
        }
        // x += Attn(ln1(x))
        let h = &bw.ln1.h;
        attn_backward(
            cfg, p, &blk.attn, h, h, self_shape, &bw.att, gx, gctx, gq, gk, gv, dp, grad,
        );
        dense_input_grad(&blk.attn.q, p, gq, n, gh, false);
        dense_input_grad(&blk.attn.k, p, gk, n, gh, true);
        dense_input_grad(&blk.attn.v, p, gv, n, gh, true);
        bw.ln1.backward(&blk.ln1, p, gh, d, grad, gx);
    }
}

/// `x := tok_emb[tokens] + pos_emb[position]` for `b` rows of `t` tokens ([`position`]).
fn embed(
    cfg: &LmConfig,
    layout: &LmLayout,
    p: &[f32],
    tokens: &[u32],
    t: usize,
    enc_lens: &[usize],
    x: &mut Vec<f32>,
) {
    let d = cfg.d_model;
    size(x, tokens.len() * d);
    for (i, (row, &tok)) in x.chunks_exact_mut(d).zip(tokens).enumerate() {
        let te = &p[layout.tok_emb + tok as usize * d..][..d];
        let pe = &p[layout.pos_emb + position(cfg, i, t, enc_lens) * d..][..d];
        for ((x, a), b) in row.iter_mut().zip(te).zip(pe) {
            *x = *a + *b;
        }
    }
}

/// The `pos_emb` row of token `i` of a batch of rows of `t` tokens: `i % t` for the decoder
/// (`enc_lens` empty), [`LmConfig::enc_position`] for the encoder.
fn position(cfg: &LmConfig, i: usize, t: usize, enc_lens: &[usize]) -> usize {
    match enc_lens {
        [] => i % t,
        _ => cfg.enc_position(enc_lens[i / t], i % t),
    }
}

fn embed_backward(
    cfg: &LmConfig,
    layout: &LmLayout,
    tokens: &[u32],
    t: usize,
    enc_lens: &[usize],
    gx: &[f32],
    grad: &mut [f32],
) {
    let d = cfg.d_model;
    for (i, (g, &tok)) in gx.chunks_exact(d).zip(tokens).enumerate() {
        kernels::add_assign(&mut grad[layout.tok_emb + tok as usize * d..][..d], g);
        kernels::add_assign(
            &mut grad[layout.pos_emb + position(cfg, i, t, enc_lens) * d..][..d],
            g,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One shard

/// The rows `range` of a batch.
#[derive(Clone, Copy)]
struct Rows<'a> {
    b: usize,
    t: usize,
    tokens: &'a [u32],
    targets: &'a [u32],
    weights: &'a [f32],
    prefix: &'a [usize],
    s: usize,
    enc_tokens: &'a [u32],
    enc_lens: &'a [usize],
}

impl<'a> Rows<'a> {
    fn of(batch: &'a Batch, range: Range<usize>) -> Self {
        let (t, s) = (batch.len, batch.enc_len);
        let b = range.len();
        let enc_lens: &[usize] = if s > 0 {
            &batch.enc_lens[range.clone()]
        } else {
            &[]
        };
        Rows {
            b,
            t,
            tokens: &batch.tokens[range.start * t..range.end * t],
            targets: &batch.targets[range.start * t..range.end * t],
            weights: &batch.weights[range.start * t..range.end * t],
            prefix: &batch.prefix[range.clone()],
            s,
            enc_tokens: &batch.enc_tokens[range.start * s..range.end * s],
            enc_lens,
        }
    }
}

/// The buffers of one shard.
#[derive(Default)]
pub(crate) struct Workspace {
    enc: StackWs,
    dec: StackWs,
    cross_lims: Vec<usize>,
    /// Decoder positions the head reads (weighted positions, or the positions to decode).
    picked: Vec<usize>,
    picked_targets: Vec<u32>,
    picked_weights: Vec<f32>,
    hc: Vec<f32>,
    logits: Vec<f32>,
    gout: Vec<f32>,
    genc: Vec<f32>,
    sc: Scratch,
    grad: Vec<f32>,
    /// Σ w·nll of the shard's rows.
    loss: f64,
    /// The argmax tokens of a [`Task::Greedy`] run, one per row.
    next: Vec<u32>,
}

/// What a run computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Task {
    /// Loss and gradient.
    LossGrad,
    /// Loss only.
    Nll,
    /// Encoder only (encdec): kept in the shard's workspace for the following `Greedy` runs.
    Encode,
    /// The argmax next token at position `at[row]` of each row; an encdec model reuses the
    /// encoder output of the last `Encode` run over the same rows.
    Greedy,
}

struct Ctx<'a> {
    cfg: &'a LmConfig,
    layout: &'a LmLayout,
    p: &'a [f32],
}

impl Ctx<'_> {
    fn encode(&self, rows: &Rows<'_>, ws: &mut Workspace) {
        let Ctx { cfg, layout, p } = *self;
        let (b, s) = (rows.b, rows.s);
        let enc = layout
            .encoder
            .as_ref()
            .expect("an encdec layout has an encoder");
        embed(
            cfg,
            layout,
            p,
            rows.enc_tokens,
            s,
            rows.enc_lens,
            &mut ws.enc.x,
        );
        ws.enc.lims.clear();
        for &l in rows.enc_lens {
            ws.enc.lims.extend(std::iter::repeat_n(l.min(s), s));
        }
        stack_forward(cfg, p, enc, &mut ws.enc, b, s, None);
    }

    /// The decoder stack (after the encoder when encdec); its final states end in
    /// `ws.dec.ln_f.h`.
    fn decode(&self, rows: &Rows<'_>, ws: &mut Workspace) {
        let Ctx { cfg, layout, p } = *self;
        let (b, t, s) = (rows.b, rows.t, rows.s);
        embed(cfg, layout, p, rows.tokens, t, &[], &mut ws.dec.x);
        ws.dec.lims.clear();
        for &pre in rows.prefix {
            let pre = if cfg.arch == Arch::Decoder {
                pre.min(t)
            } else {
                0
            };
            ws.dec
                .lims
                .extend((0..t).map(|i| if i < pre { pre } else { i + 1 }));
        }
        let cross = match cfg.arch {
            Arch::Decoder => None,
            Arch::EncDec => {
                ws.cross_lims.clear();
                for &l in rows.enc_lens {
                    ws.cross_lims.extend(std::iter::repeat_n(l.min(s), t));
                }
                Some(Cross {
                    enc: &ws.enc.ln_f.h,
                    s,
                    lims: &ws.cross_lims,
                })
            }
        };
        stack_forward(cfg, p, &layout.decoder, &mut ws.dec, b, t, cross);
    }

    /// Gathers the final states at `ws.picked` into `ws.hc` and writes their logits.
    fn head(&self, ws: &mut Workspace) {
        let Ctx { cfg, layout, p } = *self;
        let (d, v, m) = (cfg.d_model, cfg.vocab, ws.picked.len());
        size(&mut ws.hc, m * d);
        size(&mut ws.logits, m * v);
        for (dst, &i) in ws.hc.chunks_exact_mut(d).zip(&ws.picked) {
            dst.copy_from_slice(&ws.dec.ln_f.h[i * d..(i + 1) * d]);
        }
        let emb = &p[layout.tok_emb..layout.tok_emb + v * d];
        mm(
            &mut ws.logits,
            v,
            false,
            Mat::new(&ws.hc, m, d),
            Mat::new(emb, v, d).t(),
            1.0,
        );
    }

    /// Loss (and, with `grad`, the gradient scaled by `scale`) of one shard.
    fn loss(&self, rows: &Rows<'_>, ws: &mut Workspace, scale: f32, grad: bool) {
        let Ctx { cfg, layout, p } = *self;
        let (b, t, s, d, v) = (rows.b, rows.t, rows.s, cfg.d_model, cfg.vocab);
        if cfg.arch == Arch::EncDec {
            self.encode(rows, ws);
        }
        self.decode(rows, ws);
        ws.picked.clear();
        ws.picked_targets.clear();
        ws.picked_weights.clear();
        for (i, &w) in rows.weights.iter().enumerate() {
            if w != 0.0 {
                ws.picked.push(i);
                ws.picked_targets.push(rows.targets[i]);
                ws.picked_weights.push(w);
            }
        }
        self.head(ws);
        ws.loss = 0.0;
        cross_entropy(
            &mut ws.logits,
            v,
            &ws.picked_targets,
            &ws.picked_weights,
            scale,
            &mut ws.loss,
        );
        if !grad {
            return;
        }
        let m = ws.picked.len();
        size(&mut ws.grad, layout.total);
        ws.grad.fill(0.0);
        let g = &mut ws.grad;
        // logits = hc·tok_embᵀ
        mm(
            &mut g[layout.tok_emb..layout.tok_emb + v * d],
            d,
            true,
            Mat::new(&ws.logits, m, v).t(),
            Mat::new(&ws.hc, m, d),
            1.0,
        );
        let emb = &p[layout.tok_emb..layout.tok_emb + v * d];
        mm(
            &mut ws.hc,
            d,
            false,
            Mat::new(&ws.logits, m, v),
            Mat::new(emb, v, d),
            1.0,
        );
        size(&mut ws.gout, b * t * d);
        ws.gout.fill(0.0);
        for (src, &i) in ws.hc.chunks_exact(d).zip(&ws.picked) {
            ws.gout[i * d..(i + 1) * d].copy_from_slice(src);
        }
        match &layout.encoder {
            None => {
                stack_backward(
                    cfg,
                    p,
                    &layout.decoder,
                    &ws.dec,
                    b,
                    t,
                    &ws.gout,
                    &mut ws.sc,
                    g,
                    None,
                );
                embed_backward(cfg, layout, rows.tokens, t, &[], &ws.sc.gx, g);
            }
            Some(enc) => {
                size(&mut ws.genc, b * s * d);
                ws.genc.fill(0.0);
                let cross = Cross {
                    enc: &ws.enc.ln_f.h,
                    s,
                    lims: &ws.cross_lims,
                };
                stack_backward(
                    cfg,
                    p,
                    &layout.decoder,
                    &ws.dec,
                    b,
                    t,
                    &ws.gout,
                    &mut ws.sc,
                    g,
                    Some((cross, &mut ws.genc)),
                );
                embed_backward(cfg, layout, rows.tokens, t, &[], &ws.sc.gx, g);
                stack_backward(cfg, p, enc, &ws.enc, b, s, &ws.genc, &mut ws.sc, g, None);
                embed_backward(cfg, layout, rows.enc_tokens, s, rows.enc_lens, &ws.sc.gx, g);
            }
        }
    }

    fn greedy(&self, rows: &Rows<'_>, at: &[usize], ws: &mut Workspace) {
        self.decode(rows, ws);
        ws.picked.clear();
        ws.picked
            .extend(at.iter().enumerate().map(|(r, &i)| r * rows.t + i));
        self.head(ws);
        let v = self.cfg.vocab;
        ws.next.clear();
        ws.next.extend(
            ws.logits
                .chunks_exact(v)
                .map(|row| kernels::argmax(row) as u32),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Running shards on the pool

/// The rows of each shard of a batch of `rows` rows with `tokens_per_row` tokens each.
fn plan(rows: usize, tokens_per_row: usize) -> Vec<Range<usize>> {
    let per = (SHARD_TOKENS / tokens_per_row.max(1)).max(1);
    (0..rows)
        .step_by(per)
        .map(|r| r..(r + per).min(rows))
        .collect()
}

struct Job {
    task: Task,
    batch: Batch,
    at: Vec<usize>,
    scale: f32,
}

struct Shared {
    cfg: LmConfig,
    layout: LmLayout,
    params: RwLock<Vec<f32>>,
    job: RwLock<Job>,
    plan: RwLock<Vec<Range<usize>>>,
    workspaces: RwLock<Vec<Mutex<Workspace>>>,
    pool: Pool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn run_shard(&self, i: usize) {
        let params = self.params.read().unwrap_or_else(|e| e.into_inner());
        let job = self.job.read().unwrap_or_else(|e| e.into_inner());
        let plan = self.plan.read().unwrap_or_else(|e| e.into_inner());
        let wss = self.workspaces.read().unwrap_or_else(|e| e.into_inner());
        let mut ws = lock(&wss[i]);
        let range = plan[i].clone();
        let rows = Rows::of(&job.batch, range.clone());
        let ctx = Ctx {
            cfg: &self.cfg,
            layout: &self.layout,
            p: &params,
        };
        match job.task {
            Task::LossGrad => ctx.loss(&rows, &mut ws, job.scale, true),
            Task::Nll => ctx.loss(&rows, &mut ws, job.scale, false),
            Task::Encode => ctx.encode(&rows, &mut ws),
            Task::Greedy => ctx.greedy(&rows, &job.at[range], &mut ws),
        }
    }
}

/// A model's parameters with shard workspaces and pool helpers; see [`with_runner`].
pub(crate) struct Runner<'a> {
    shared: &'a Shared,
    work: &'a (dyn Fn(usize) + Sync),
}

/// Runs `body` with a runner over `params` whose shards run on `threads` threads (helpers
/// live as long as `body`).
pub(crate) fn with_runner<R>(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: Vec<f32>,
    threads: usize,
    body: impl FnOnce(&mut Runner<'_>) -> R,
) -> R {
    let shared = Shared {
        cfg: cfg.clone(),
        layout: layout.clone(),
        params: RwLock::new(params),
        job: RwLock::new(Job {
            task: Task::Nll,
            batch: Batch::default(),
            at: Vec::new(),
            scale: 1.0,
        }),
        plan: RwLock::new(Vec::new()),
        workspaces: RwLock::new(Vec::new()),
        pool: Pool::default(),
    };
    let work = |i: usize| shared.run_shard(i);
    pool::with_helpers(&shared.pool, threads.max(1) - 1, &work, || {
        body(&mut Runner {
            shared: &shared,
            work: &work,
        })
    })
}

impl Runner<'_> {
    /// Runs `task` over `batch`; with `keep_plan` the shards of the previous run are reused.
    fn run(&mut self, task: Task, batch: &Batch, at: &[usize], scale: f32, keep_plan: bool) {
        let s = self.shared;
        {
            let mut job = s.job.write().unwrap_or_else(|e| e.into_inner());
            job.task = task;
            job.batch.clone_from(batch);
            job.at.clear();
            job.at.extend_from_slice(at);
            job.scale = scale;
        }
        let count = {
            let mut plan = s.plan.write().unwrap_or_else(|e| e.into_inner());
            if !keep_plan {
                *plan = self::plan(batch.rows, batch.len + batch.enc_len);
            }
            assert!(plan.len() <= MAX_SHARDS, "too many shards");
            let mut wss = s.workspaces.write().unwrap_or_else(|e| e.into_inner());
            while wss.len() < plan.len() {
                wss.push(Mutex::new(Workspace::default()));
            }
            plan.len()
        };
        s.pool.run(count, self.work);
    }

    fn workspaces(&self) -> std::sync::RwLockReadGuard<'_, Vec<Mutex<Workspace>>> {
        self.shared
            .workspaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn shards(&self) -> usize {
        self.shared
            .plan
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The parameters, to read or update between runs.
    pub(crate) fn params_mut(&mut self) -> std::sync::RwLockWriteGuard<'_, Vec<f32>> {
        self.shared
            .params
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `(Σ w·nll, Σ w)` of a checked batch, and the gradient of `Σ w·nll / Σ w` in `grad`
    /// (resized to the parameter count).
    pub(crate) fn loss_and_grad(&mut self, batch: &Batch, grad: &mut Vec<f32>) -> (f64, f64) {
        let wsum = weight_sum(batch);
        let scale = if wsum > 0.0 { (1.0 / wsum) as f32 } else { 0.0 };
        self.run(Task::LossGrad, batch, &[], scale, false);
        grad.clear();
        grad.resize(self.shared.layout.total, 0.0);
        let mut loss = 0.0;
        let wss = self.workspaces();
        for ws in wss.iter().take(self.shards()) {
            let ws = lock(ws);
            kernels::add_assign(grad, &ws.grad);
            loss += ws.loss;
        }
        (loss, wsum)
    }

    /// `(Σ w·nll, Σ w)` of a checked batch.
    pub(crate) fn nll(&mut self, batch: &Batch) -> (f64, f64) {
        self.run(Task::Nll, batch, &[], 0.0, false);
        let loss = self
            .workspaces()
            .iter()
            .take(self.shards())
            .map(|ws| lock(ws).loss)
            .sum();
        (loss, weight_sum(batch))
    }

    /// Runs the encoder over `batch`'s encoder rows, kept for [`Runner::greedy`].
    pub(crate) fn encode(&mut self, batch: &Batch) {
        self.run(Task::Encode, batch, &[], 0.0, false);
    }

    /// The argmax token at position `at[r]` of each row. For an encdec model `batch` must have
    /// the rows (and encoder) of the last [`Runner::encode`], whose output it reuses.
    pub(crate) fn greedy(&mut self, batch: &Batch, at: &[usize]) -> Vec<u32> {
        let keep = self.shared.cfg.arch == Arch::EncDec;
        self.run(Task::Greedy, batch, at, 0.0, keep);
        let mut out = Vec::with_capacity(batch.rows);
        for ws in self.workspaces().iter().take(self.shards()) {
            out.extend_from_slice(&lock(ws).next);
        }
        out
    }
}

fn weight_sum(batch: &Batch) -> f64 {
    batch.weights.iter().map(|&w| w as f64).sum()
}

/// Checks that `batch` fits `cfg`: shapes, token ids, lengths, prefixes and the layout its
/// architecture expects.
pub(crate) fn check_batch(cfg: &LmConfig, batch: &Batch) -> Result<(), NnError> {
    let bad = |m: String| Err(NnError::InvalidData(m));
    batch.check(cfg.vocab).map_err(NnError::InvalidData)?;
    if batch.len > cfg.seq_len || batch.enc_len > cfg.seq_len {
        return bad(format!(
            "batch sequences of length {} (encoder {}) exceed the model's `seq_len` {}",
            batch.len, batch.enc_len, cfg.seq_len
        ));
    }
    if let Some(w) = batch.weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
        return bad(format!(
            "loss weight {w} is not a finite non-negative number"
        ));
    }
    match cfg.arch {
        Arch::Decoder => {
            if batch.enc_len > 0 {
                return bad("a decoder-only model got encoder tokens".into());
            }
            if let Some(p) = batch.prefix.iter().find(|&&p| p > batch.len) {
                return bad(format!(
                    "prefix {p} is longer than the rows ({})",
                    batch.len
                ));
            }
        }
        Arch::EncDec => {
            if batch.rows > 0 && batch.enc_len == 0 {
                return bad("an encoder-decoder model got no encoder tokens".into());
            }
            if batch.prefix.iter().any(|&p| p != 0) {
                return bad(
                    "an encoder-decoder batch has a decoder prefix (they are causal)".into(),
                );
            }
            if let Some(l) = batch.enc_lens.iter().find(|&&l| l > batch.enc_len) {
                return bad(format!(
                    "encoder length {l} exceeds the encoder rows ({})",
                    batch.enc_len
                ));
            }
        }
    }
    Ok(())
}

/// The loss `Σ w·nll / Σ w` of `batch` and its gradient, flat in layout order.
// One-shot entry point for tests and for checking other backends against this one.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn cpu_loss_and_grad(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
    threads: usize,
) -> Result<(f32, Vec<f32>), NnError> {
    cfg.validate()?;
    check_batch(cfg, batch)?;
    if params.len() != layout.total {
        return Err(NnError::InvalidConfig(format!(
            "{} parameters for a layout of {}",
            params.len(),
            layout.total
        )));
    }
    let mut grad = Vec::new();
    let (loss, wsum) = with_runner(cfg, layout, params.to_vec(), threads, |r| {
        r.loss_and_grad(batch, &mut grad)
    });
    if wsum <= 0.0 {
        return Err(NnError::InvalidData(
            "the batch has no position with a positive loss weight".into(),
        ));
    }
    Ok(((loss / wsum) as f32, grad))
}

/// The logits at every decoder position of `batch` (`rows × len × vocab`), forward only.
pub(crate) fn cpu_logits(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
) -> Result<Vec<f32>, NnError> {
    cfg.validate()?;
    check_batch(cfg, batch)?;
    let mut ws = Workspace::default();
    let ctx = Ctx {
        cfg,
        layout,
        p: params,
    };
    let rows = Rows::of(batch, 0..batch.rows);
    if cfg.arch == Arch::EncDec {
        ctx.encode(&rows, &mut ws);
    }
    ctx.decode(&rows, &mut ws);
    ws.picked.clear();
    ws.picked.extend(0..batch.rows * batch.len);
    ctx.head(&mut ws);
    Ok(ws.logits)
}

#[cfg(test)]
mod tests;
