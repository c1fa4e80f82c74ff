//! Attention per (row, head), with strided products reading the heads in place and query
//! blocks that skip keys no query of the block may read.

use std::ops::Range;

use super::fused::{mm, softmax_backward, softmax_rows};
use super::layers::{dense_forward, dense_input_grad, dense_param_grad, size};
use crate::kernels::{self, View as Mat};
use crate::lm::config::LmConfig;
use crate::lm::layout::Attention;

/// Query rows per block of the attention products: a block reads only the keys its last row
/// may attend to, which skips most of the masked half of a causal score matrix.
pub(super) const QUERY_BLOCK: usize = 32;

/// What one attention layer keeps: projections, attention weights (rows × heads × t × tk)
/// and the heads' concatenated output.
#[derive(Default)]
pub(super) struct AttWs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    p: Vec<f32>,
    ctx: Vec<f32>,
}

/// Shapes of one attention call: `b` rows of `t` queries and `tk` keys, each query attending
/// to keys `0..lims[row·t + i]`.
#[derive(Clone, Copy)]
pub(super) struct AttShape<'a> {
    pub(super) b: usize,
    pub(super) t: usize,
    pub(super) tk: usize,
    pub(super) lims: &'a [usize],
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
pub(super) fn attn_forward(
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
        Mat::new(a.o.w(p), d, d).t(),
        1.0,
    );
}

/// Back through `x += Attn(h, src)` given `gout` = ∂x: parameter gradients into `grad`, and
/// ∂q, ∂k, ∂v (the projections' outputs) left in `gq`, `gk`, `gv`.
#[allow(clippy::too_many_arguments)]
pub(super) fn attn_backward(
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
