//! A stack of transformer blocks (forward and backward) and the embeddings.

use super::attention::{AttShape, AttWs, attn_backward, attn_forward};
use super::fused::{gelu_backward, gelu_forward, mm};
use super::layers::{LnWs, dense_forward, dense_input_grad, dense_param_grad, size};
use crate::kernels::{self, View as Mat};
use crate::lm::config::LmConfig;
use crate::lm::layout::{LmLayout, Stack};

/// Gradient buffers of one shard, reused by every layer.
#[derive(Default)]
pub(super) struct Scratch {
    /// ∂ of the residual stream.
    pub(super) gx: Vec<f32>,
    /// ∂ of a LayerNorm's output.
    gh: Vec<f32>,
    gq: Vec<f32>,
    gk: Vec<f32>,
    gv: Vec<f32>,
    gctx: Vec<f32>,
    gf: Vec<f32>,
    dp: Vec<f32>,
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
pub(super) struct StackWs {
    pub(super) x: Vec<f32>,
    blocks: Vec<BlockWs>,
    pub(super) ln_f: LnWs,
    pub(super) lims: Vec<usize>,
}

/// The encoder's output a decoder stack attends to.
#[derive(Clone, Copy)]
pub(super) struct Cross<'a> {
    pub(super) enc: &'a [f32],
    pub(super) s: usize,
    pub(super) lims: &'a [usize],
}

pub(super) fn stack_forward(
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
            Mat::new(blk.ff2.w(p), d, cfg.d_ff).t(),
            1.0,
        );
    }
    ln_f.forward(&st.ln_f, p, x, n, d);
}

/// Back through a stack given `gout` = ∂ of its final LayerNorm's output; leaves ∂ of its
/// input in `sc.gx` and adds the encoder output's gradient into `genc`.
#[allow(clippy::too_many_arguments)]
pub(super) fn stack_backward(
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
            &mut grad[w1..w1 + f * d],
            d,
            true,
            Mat::new(&gf[..n * f], n, f).t(),
            Mat::new(&bw.ln2.h, n, d),
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
pub(super) fn embed(
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
pub(super) fn position(cfg: &LmConfig, i: usize, t: usize, enc_lens: &[usize]) -> usize {
    match enc_lens {
        [] => i % t,
        _ => cfg.enc_position(enc_lens[i / t], i % t),
    }
}

pub(super) fn embed_backward(
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
