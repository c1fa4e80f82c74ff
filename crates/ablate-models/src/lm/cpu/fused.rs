//! The matrix product and the fused element-wise kernels (LayerNorm, GELU, the masked softmax,
//! the cross-entropy), compiled for AVX2 as well as the baseline.

use crate::kernels::{self, View as Mat, multiversion, tanh_approx};

const LN_EPS: f32 = 1e-5;

/// `dst := [dst +] alpha · a·b`, `dst` row-major `a.rows × b.cols` with rows `drs` apart.
pub(super) fn mm(dst: &mut [f32], drs: usize, acc: bool, a: Mat<'_>, b: Mat<'_>, alpha: f32) {
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
    pub(super) fn ln_forward(x: &[f32], g: &[f32], b: &[f32], xhat: &mut [f32], rstd: &mut [f32], h: &mut [f32]) {
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
    pub(super) fn ln_backward(gh: &[f32], xhat: &[f32], rstd: &[f32], g: &[f32], gg: &mut [f32], gb: &mut [f32], gx: &mut [f32]) {
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
    pub(super) fn gelu_forward(z: &[f32], a: &mut [f32]) {
        for (a, z) in a.iter_mut().zip(z) {
            let z = *z;
            let t = tanh_approx(GELU_C * (z + GELU_A * z * z * z));
            *a = 0.5 * z * (1.0 + t);
        }
    }
}

multiversion! {
    /// Back through `a = gelu(z)`: `g := g ⊙ gelu'(z)`, and `bias_grad += Σ_rows g`.
    pub(super) fn gelu_backward(g: &mut [f32], z: &[f32], bias_grad: &mut [f32]) {
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
    pub(super) fn softmax_rows(s: &mut [f32], tk: usize, lims: &[usize]) {
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
    pub(super) fn softmax_backward(dp: &mut [f32], p: &[f32], tk: usize, lims: &[usize]) {
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
    pub(super) fn cross_entropy(logits: &mut [f32], v: usize, targets: &[u32], w: &[f32], scale: f32, loss: &mut f64) {
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
