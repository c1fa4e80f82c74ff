//! A naive scalar f64 implementation of the language models, written straight from
//! [`LmConfig`]'s doc with loops and nothing else: the oracle both backends (the dfdx path and
//! the hand-written CPU path) are tested against. Slow on purpose; tiny configs only.

use super::batch::Batch;
use super::config::{Arch, LmConfig};
use super::layout::{Attention, Dense, LmLayout, Norm, Stack};

type Mat = Vec<Vec<f64>>;

fn get(p: &[f32], i: usize) -> f64 {
    p[i] as f64
}

/// `tok_emb[token] + pos_emb[position(t)]` for each slot t.
fn embed(
    cfg: &LmConfig,
    layout: &LmLayout,
    p: &[f32],
    tokens: &[u32],
    position: impl Fn(usize) -> usize,
) -> Mat {
    let d = cfg.d_model;
    tokens
        .iter()
        .enumerate()
        .map(|(t, &tok)| {
            (0..d)
                .map(|j| {
                    get(p, layout.tok_emb + tok as usize * d + j)
                        + get(p, layout.pos_emb + position(t) * d + j)
                })
                .collect()
        })
        .collect()
}

fn layer_norm(p: &[f32], n: &Norm, x: &Mat) -> Mat {
    x.iter()
        .map(|row| {
            let d = row.len() as f64;
            let mean = row.iter().sum::<f64>() / d;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d;
            let inv = 1.0 / (var + 1e-5).sqrt();
            row.iter()
                .enumerate()
                .map(|(j, v)| (v - mean) * inv * get(p, n.g + j) + get(p, n.b + j))
                .collect()
        })
        .collect()
}

/// `y = x·Wᵀ + b`, `W` stored `[out, inp]` row-major.
fn dense(p: &[f32], l: &Dense, x: &Mat) -> Mat {
    x.iter()
        .map(|row| {
            (0..l.out)
                .map(|o| {
                    let mut s = get(p, l.b + o);
                    for (i, v) in row.iter().enumerate() {
                        s += v * get(p, l.w + o * l.inp + i);
                    }
                    s
                })
                .collect()
        })
        .collect()
}

fn gelu(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// Multi-head attention of queries `xq` over keys/values `xkv`; query i sees key j iff
/// `allowed(i, j)`, and a key it does not see gets exactly zero weight.
fn attention(
    cfg: &LmConfig,
    p: &[f32],
    a: &Attention,
    xq: &Mat,
    xkv: &Mat,
    allowed: &dyn Fn(usize, usize) -> bool,
) -> Mat {
    let (q, k, v) = (dense(p, &a.q, xq), dense(p, &a.k, xkv), dense(p, &a.v, xkv));
    let dh = cfg.head_dim();
    let scale = 1.0 / (dh as f64).sqrt();
    let mut concat = vec![vec![0.0; cfg.d_model]; xq.len()];
    for h in 0..cfg.heads {
        let cols = h * dh..(h + 1) * dh;
        for (i, out) in concat.iter_mut().enumerate() {
            let keys: Vec<usize> = (0..xkv.len()).filter(|&j| allowed(i, j)).collect();
            assert!(!keys.is_empty(), "query {i} sees no key");
            let scores: Vec<f64> = keys
                .iter()
                .map(|&j| cols.clone().map(|c| q[i][c] * k[j][c]).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            for (&j, e) in keys.iter().zip(&exps) {
                for c in cols.clone() {
                    out[c] += e / total * v[j][c];
                }
            }
        }
    }
    dense(p, &a.o, &concat)
}

fn add(x: &mut Mat, y: &Mat) {
    for (a, b) in x.iter_mut().zip(y) {
        for (u, v) in a.iter_mut().zip(b) {
            *u += v;
        }
    }
}

/// One stack over one row: pre-LN blocks, then the final LayerNorm. `cross` is the encoder's
/// output and which of its positions are valid.
fn stack(
    cfg: &LmConfig,
    p: &[f32],
    s: &Stack,
    mut x: Mat,
    allowed: &dyn Fn(usize, usize) -> bool,
    cross: Option<(&Mat, usize)>,
) -> Mat {
    for b in &s.blocks {
        let h = layer_norm(p, &b.ln1, &x);
        add(&mut x, &attention(cfg, p, &b.attn, &h, &h, allowed));
        if let Some((lnx, att)) = &b.cross {
            let (enc, enc_len) = cross.expect("an encdec decoder block needs the encoder");
            let h = layer_norm(p, lnx, &x);
            add(
                &mut x,
                &attention(cfg, p, att, &h, enc, &|_, j| j < enc_len),
            );
        }
        let h = layer_norm(p, &b.ln2, &x);
        let a: Mat = dense(p, &b.ff1, &h)
            .into_iter()
            .map(|r| r.into_iter().map(gelu).collect())
            .collect();
        add(&mut x, &dense(p, &b.ff2, &a));
    }
    layer_norm(p, &s.ln_f, &x)
}

/// Logits, rows × len × vocab, row-major.
pub(crate) fn reference_logits(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
) -> Vec<f64> {
    let p = params;
    let (len, d) = (batch.len, cfg.d_model);
    let mut out = Vec::with_capacity(batch.rows * len * cfg.vocab);
    for r in 0..batch.rows {
        let tokens = &batch.tokens[r * len..(r + 1) * len];
        let x = embed(cfg, layout, p, tokens, |t| t);
        let h = match cfg.arch {
            Arch::Decoder => {
                // Causal, except that the first `prefix` positions see each other.
                let prefix = batch.prefix[r];
                stack(
                    cfg,
                    p,
                    &layout.decoder,
                    x,
                    &|i, j| j <= i || j < prefix,
                    None,
                )
            }
            Arch::EncDec => {
                let el = batch.enc_len;
                let enc_len = batch.enc_lens[r];
                let enc_x = embed(
                    cfg,
                    layout,
                    p,
                    &batch.enc_tokens[r * el..(r + 1) * el],
                    |j| cfg.enc_position(enc_len, j),
                );
                let encoder = layout.encoder.as_ref().expect("encdec layout");
                let enc = stack(cfg, p, encoder, enc_x, &|_, j| j < enc_len, None);
                stack(
                    cfg,
                    p,
                    &layout.decoder,
                    x,
                    &|i, j| j <= i,
                    Some((&enc, enc_len)),
                )
            }
        };
        for row in &h {
            for v in 0..cfg.vocab {
                out.push(
                    (0..d)
                        .map(|j| row[j] * get(p, layout.tok_emb + v * d + j))
                        .sum(),
                );
            }
        }
    }
    out
}

/// Σ w·(−log softmax(logits)[target]) / Σ w.
pub(crate) fn reference_loss(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
) -> f64 {
    let logits = reference_logits(cfg, layout, params, batch);
    let (mut num, mut den) = (0.0, 0.0);
    for (i, row) in logits.chunks_exact(cfg.vocab).enumerate() {
        let w = batch.weights[i] as f64;
        if w == 0.0 {
            continue;
        }
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        num += w * (lse - row[batch.targets[i] as usize]);
        den += w;
    }
    num / den
}
