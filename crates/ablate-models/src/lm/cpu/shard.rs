//! One shard: the rows it holds, its buffers, and the forward, loss, gradient and greedy
//! decoding over them.

use std::ops::Range;

use super::fused::{cross_entropy, mm};
use super::layers::size;
use super::stack::{Cross, Scratch, StackWs, embed, embed_backward, stack_backward, stack_forward};
use crate::kernels::{self, View as Mat};
use crate::lm::Batch;
use crate::lm::config::{Arch, LmConfig};
use crate::lm::layout::LmLayout;

/// The rows `range` of a batch.
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
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
    pub(super) fn of(batch: &'a Batch, range: Range<usize>) -> Self {
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
    pub(super) picked: Vec<usize>,
    picked_targets: Vec<u32>,
    picked_weights: Vec<f32>,
    hc: Vec<f32>,
    pub(super) logits: Vec<f32>,
    gout: Vec<f32>,
    genc: Vec<f32>,
    sc: Scratch,
    pub(super) grad: Vec<f32>,
    /// Σ w·nll of the shard's rows.
    pub(super) loss: f64,
    /// The argmax tokens of a [`Task::Greedy`] run, one per row.
    pub(super) next: Vec<u32>,
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

pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a LmConfig,
    pub(super) layout: &'a LmLayout,
    pub(super) p: &'a [f32],
}

impl Ctx<'_> {
    pub(super) fn encode(&self, rows: &Rows<'_>, ws: &mut Workspace) {
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
    pub(super) fn decode(&self, rows: &Rows<'_>, ws: &mut Workspace) {
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
    pub(super) fn head(&self, ws: &mut Workspace) {
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
    pub(super) fn loss(&self, rows: &Rows<'_>, ws: &mut Workspace, scale: f32, grad: bool) {
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
        size(&mut ws.grad, layout.total());
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

    pub(super) fn greedy(&self, rows: &Rows<'_>, at: &[usize], ws: &mut Workspace) {
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
