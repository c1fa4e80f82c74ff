//! The fast path against an independent, naive f64 implementation of the same network written
//! from `LmConfig`'s doc comment: logits, masks, and gradients by central differences.

use super::attention::QUERY_BLOCK;
use super::fused::exp_approx;
use super::*;
use crate::lm::layout::{Attention, Dense, Norm, Stack};
use crate::rng::SplitMix64;

fn cfg(arch: Arch, layers: usize, seq_len: usize, vocab: usize) -> LmConfig {
    LmConfig {
        arch,
        vocab,
        d_model: 8,
        layers,
        heads: 2,
        d_ff: 12,
        seq_len,
    }
}

/// Parameters big enough that attention is far from uniform and every path matters.
fn random_params(layout: &LmLayout, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed, 99);
    let mut p = vec![0.0; layout.total()];
    for s in layout.store.slots() {
        let base = if s.name.ends_with(".g") { 1.0 } else { 0.0 };
        for v in &mut p[s.range()] {
            *v = base + rng.uniform(0.6);
        }
    }
    p
}

fn tokens(rng: &mut SplitMix64, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// Decoder-only: row 0 causal, row 1 with a prefix of 3, row 2 prefix-LM over the whole row;
/// some weights zero, some fractional.
fn decoder_batch(len: usize, vocab: usize, seed: u64) -> Batch {
    let mut rng = SplitMix64::new(seed, 1);
    let rows = 3;
    let weights = (0..rows * len)
        .map(|i| [1.0, 0.0, 0.5, 1.0][i % 4])
        .collect();
    Batch {
        rows,
        len,
        tokens: tokens(&mut rng, rows * len, vocab),
        targets: tokens(&mut rng, rows * len, vocab),
        weights,
        prefix: vec![0, 3.min(len), len],
        ..Batch::default()
    }
}

/// Encoder-decoder: encoder lengths full, partial and zero (nothing to attend to).
fn encdec_batch(len: usize, enc_len: usize, vocab: usize, seed: u64) -> Batch {
    let mut rng = SplitMix64::new(seed, 2);
    let rows = 3;
    Batch {
        rows,
        len,
        tokens: tokens(&mut rng, rows * len, vocab),
        targets: tokens(&mut rng, rows * len, vocab),
        weights: (0..rows * len)
            .map(|i| if i % 5 == 4 { 0.0 } else { 1.0 })
            .collect(),
        prefix: vec![0; rows],
        enc_len,
        enc_tokens: tokens(&mut rng, rows * enc_len, vocab),
        enc_lens: vec![enc_len, enc_len / 2, 0],
    }
}

// ----- the naive reference, f64, one position at a time -----

type M = Vec<Vec<f64>>;

struct Naive<'a> {
    cfg: &'a LmConfig,
    p: &'a [f64],
}

impl Naive<'_> {
    fn dense(&self, dn: &Dense, x: &M) -> M {
        x.iter()
            .map(|row| {
                (0..dn.out)
                    .map(|o| {
                        self.p[dn.b + o]
                            + (0..dn.inp)
                                .map(|i| row[i] * self.p[dn.w + o * dn.inp + i])
                                .sum::<f64>()
                    })
                    .collect()
            })
            .collect()
    }

    fn ln(&self, n: &Norm, x: &M) -> M {
        let d = self.cfg.d_model;
        x.iter()
            .map(|row| {
                let mean = row.iter().sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
                (0..d)
                    .map(|i| {
                        (row[i] - mean) / (var + 1e-5).sqrt() * self.p[n.g + i] + self.p[n.b + i]
                    })
                    .collect()
            })
            .collect()
    }

    fn attn(&self, a: &Attention, h: &M, src: &M, allowed: &dyn Fn(usize, usize) -> bool) -> M {
        let (q, k, v) = (
            self.dense(&a.q, h),
            self.dense(&a.k, src),
            self.dense(&a.v, src),
        );
        let hd = self.cfg.head_dim();
        let mut ctx = vec![vec![0.0; self.cfg.d_model]; h.len()];
        for head in 0..self.cfg.heads {
            let cols = head * hd..(head + 1) * hd;
            for i in 0..h.len() {
                let scores: Vec<f64> = (0..src.len())
                    .map(|j| {
                        if allowed(i, j) {
                            cols.clone().map(|c| q[i][c] * k[j][c]).sum::<f64>()
                                / (hd as f64).sqrt()
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue;
                }
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for c in cols.clone() {
                        ctx[i][c] += ej / z * v[j][c];
                    }
                }
            }
        }
        self.dense(&a.o, &ctx)
    }

    fn stack(
        &self,
        st: &Stack,
        mut x: M,
        allowed: &dyn Fn(usize, usize) -> bool,
        cross: Option<(&M, usize)>,
    ) -> M {
        let add = |x: &mut M, y: M| {
            for (a, b) in x.iter_mut().zip(y) {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
            }
        };
        for blk in &st.blocks {
            let h = self.ln(&blk.ln1, &x);
            add(&mut x, self.attn(&blk.attn, &h, &h, allowed));
            if let (Some((lnx, ca)), Some((enc, n))) = (&blk.cross, cross) {
                let h = self.ln(lnx, &x);
                add(&mut x, self.attn(ca, &h, enc, &|_, j| j < n));
            }
            let h = self.ln(&blk.ln2, &x);
            let mut f = self.dense(&blk.ff1, &h);
            for v in f.iter_mut().flatten() {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                *v = 0.5 * *v * (1.0 + (c * (*v + 0.044715 * v.powi(3))).tanh());
            }
            add(&mut x, self.dense(&blk.ff2, &f));
        }
        self.ln(&st.ln_f, &x)
    }

    /// `position(i)`: the `pos_emb` row of slot `i`.
    fn embed(&self, layout: &LmLayout, toks: &[u32], position: impl Fn(usize) -> usize) -> M {
        let d = self.cfg.d_model;
        toks.iter()
            .enumerate()
            .map(|(i, &t)| {
                (0..d)
                    .map(|c| {
                        self.p[layout.tok_emb + t as usize * d + c]
                            + self.p[layout.pos_emb + position(i) * d + c]
                    })
                    .collect()
            })
            .collect()
    }

    /// Logits of every decoder position, rows × len × vocab.
    fn logits(&self, layout: &LmLayout, b: &Batch) -> Vec<f64> {
        let (d, v) = (self.cfg.d_model, self.cfg.vocab);
        let mut out = Vec::new();
        for r in 0..b.rows {
            let toks = &b.tokens[r * b.len..(r + 1) * b.len];
            let h = match &layout.encoder {
                None => {
                    let p = b.prefix[r];
                    let allowed = move |i: usize, j: usize| j <= i || (i < p && j < p);
                    self.stack(
                        &layout.decoder,
                        self.embed(layout, toks, |i| i),
                        &allowed,
                        None,
                    )
                }
                Some(enc) => {
                    let etoks = &b.enc_tokens[r * b.enc_len..(r + 1) * b.enc_len];
                    let n = b.enc_lens[r];
                    // Right-aligned: the last valid token at seq_len − 1.
                    let s = self.cfg.seq_len;
                    let at = |i: usize| if i < n { s - n + i } else { i - n };
                    let e = self.stack(enc, self.embed(layout, etoks, at), &|_, j| j < n, None);
                    let causal = |i: usize, j: usize| j <= i;
                    self.stack(
                        &layout.decoder,
                        self.embed(layout, toks, |i| i),
                        &causal,
                        Some((&e, n)),
                    )
                }
            };
            for row in &h {
                for t in 0..v {
                    out.push(
                        (0..d)
                            .map(|c| row[c] * self.p[layout.tok_emb + t * d + c])
                            .sum(),
                    );
                }
            }
        }
        out
    }

    fn loss(&self, layout: &LmLayout, b: &Batch) -> f64 {
        let v = self.cfg.vocab;
        let logits = self.logits(layout, b);
        let (mut num, mut den) = (0.0, 0.0);
        for (i, row) in logits.chunks_exact(v).enumerate() {
            let w = b.weights[i] as f64;
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            num += w * (lse - row[b.targets[i] as usize]);
            den += w;
        }
        num / den
    }
}

fn naive_logits(cfg: &LmConfig, layout: &LmLayout, p: &[f32], b: &Batch) -> Vec<f64> {
    let p: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    Naive { cfg, p: &p }.logits(layout, b)
}

fn assert_logits_match(cfg: &LmConfig, batch: &Batch, seed: u64) {
    let layout = LmLayout::new(cfg);
    let p = random_params(&layout, seed);
    let fast = cpu_logits(cfg, &layout, &p, batch).unwrap();
    let slow = naive_logits(cfg, &layout, &p, batch);
    assert_eq!(fast.len(), slow.len());
    for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
        assert!(
            (*f as f64 - s).abs() < 2e-4 * (1.0 + s.abs()),
            "logit {i}: fast {f} naive {s}"
        );
    }
}

#[test]
fn logits_match_a_naive_implementation() {
    assert_logits_match(&cfg(Arch::Decoder, 2, 6, 30), &decoder_batch(6, 30, 1), 1);
    assert_logits_match(&cfg(Arch::EncDec, 2, 7, 30), &encdec_batch(5, 7, 30, 2), 2);
    // longer than one query block, so blocked attention reads partial key ranges
    let long = 2 * QUERY_BLOCK + 5;
    assert_logits_match(
        &cfg(Arch::Decoder, 1, long, 20),
        &decoder_batch(long, 20, 3),
        3,
    );
    assert_logits_match(
        &cfg(Arch::EncDec, 1, long, 20),
        &encdec_batch(long, long - 3, 20, 4),
        4,
    );
}

#[test]
fn hand_worked_one_position_forward() {
    // d_model 2, one head, one position: attention returns v, so (with LN of [a, b] = [±1])
    // everything can be followed by hand.
    let cfg = LmConfig {
        arch: Arch::Decoder,
        vocab: 2,
        d_model: 2,
        layers: 1,
        heads: 1,
        d_ff: 1,
        seq_len: 1,
    };
    let l = LmLayout::new(&cfg);
    let mut p = vec![0.0f32; l.total()];
    // tok_emb: token 0 = [1, 0], token 1 = [0, 1]; pos_emb 0 = [0, 0]
    p[l.tok_emb] = 1.0;
    p[l.tok_emb + 3] = 1.0;
    let blk = &l.decoder.blocks[0];
    for n in [blk.ln1, blk.ln2, l.decoder.ln_f] {
        p[n.g] = 1.0;
        p[n.g + 1] = 1.0;
    }
    // x = [1, 0]; ln1(x) = [1, -1] (exactly, up to eps). v = ln1·Wv with Wv = I; o = v·Wo,
    // Wo = 0.5·I: x becomes [1.5, -0.5].
    let a = blk.attn;
    p[a.v.w] = 1.0;
    p[a.v.w + 3] = 1.0;
    p[a.o.w] = 0.5;
    p[a.o.w + 3] = 0.5;
    // ln2([1.5, -0.5]) = [1, -1]; ff1: z = 1·1 + (-1)·0 = 1, + b1 = 0; gelu(1) = 0.841192;
    // ff2: W2 = [2, 0] adds [1.682384, 0]: x = [3.182384, -0.5]; ln_f = [1, -1]
    p[blk.ff1.w] = 1.0;
    p[blk.ff2.w] = 2.0;
    // logits = [1, -1]·tok_embᵀ = [1, -1] (before eps); eps shrinks by 1/sqrt(1 + eps/var)
    let batch = Batch {
        rows: 1,
        len: 1,
        tokens: vec![0],
        targets: vec![0],
        weights: vec![1.0],
        prefix: vec![0],
        ..Batch::default()
    };
    let logits = cpu_logits(&cfg, &l, &p, &batch).unwrap();
    let var: f64 = (3.182384f64 + 0.5).powi(2) / 4.0;
    let want = 1.0 / (1.0 + 1e-5 / var).sqrt();
    assert!(
        (logits[0] as f64 - want).abs() < 1e-5,
        "{logits:?} vs ±{want}"
    );
    assert!(
        (logits[1] as f64 + want).abs() < 1e-5,
        "{logits:?} vs ±{want}"
    );
    // and the loss is log(1 + e^{-2·want})
    let (loss, _) = cpu_loss_and_grad(&cfg, &l, &p, &batch, 1).unwrap();
    let want_loss = (1.0 + (-2.0 * want).exp()).ln();
    assert!(
        (loss as f64 - want_loss).abs() < 1e-6,
        "{loss} vs {want_loss}"
    );
}

fn check_gradient(cfg: &LmConfig, batch: &Batch, seed: u64) {
    let layout = LmLayout::new(cfg);
    let p = random_params(&layout, seed);
    let (loss, grad) = cpu_loss_and_grad(cfg, &layout, &p, batch, 2).unwrap();
    let p64: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    let naive = |q: &[f64]| Naive { cfg, p: q }.loss(&layout, batch);
    let l0 = naive(&p64);
    assert!(
        (loss as f64 - l0).abs() < 1e-4 * (1.0 + l0.abs()),
        "loss {loss} vs {l0}"
    );
    let h = 1e-5;
    let mut q = p64.clone();
    let mut worst = (0.0, String::new());
    for slot in layout.store.slots() {
        for i in slot.range() {
            q[i] = p64[i] + h;
            let up = naive(&q);
            q[i] = p64[i] - h;
            let down = naive(&q);
            q[i] = p64[i];
            let fd = (up - down) / (2.0 * h);
            let err = (grad[i] as f64 - fd).abs() / (1e-3 + fd.abs());
            if err > worst.0 {
                worst = (
                    err,
                    format!(
                        "{}[{}]: fast {} fd {fd}",
                        slot.name,
                        i - slot.offset,
                        grad[i]
                    ),
                );
            }
        }
    }
    assert!(worst.0 < 2e-2, "worst gradient entry {}", worst.1);
}

#[test]
fn decoder_gradient_matches_finite_differences() {
    check_gradient(&cfg(Arch::Decoder, 2, 6, 12), &decoder_batch(6, 12, 5), 5);
}

#[test]
fn encdec_gradient_matches_finite_differences() {
    check_gradient(&cfg(Arch::EncDec, 1, 7, 12), &encdec_batch(5, 7, 12, 6), 6);
}

#[test]
fn long_rows_gradient_matches_finite_differences() {
    // several query blocks per row (prefix and causal)
    let t = QUERY_BLOCK + 9;
    let mut c = cfg(Arch::Decoder, 1, t, 6);
    c.d_ff = 4;
    check_gradient(&c, &decoder_batch(t, 6, 7), 7);
}

#[test]
fn causal_positions_ignore_later_tokens() {
    let c = cfg(Arch::Decoder, 2, 6, 30);
    let layout = LmLayout::new(&c);
    let p = random_params(&layout, 8);
    let mut b = decoder_batch(6, 30, 8);
    b.prefix = vec![0, 2, 0];
    let before = cpu_logits(&c, &layout, &p, &b).unwrap();
    // change position 4 of every row
    for r in 0..3 {
        b.tokens[r * 6 + 4] = (b.tokens[r * 6 + 4] + 1) % 30;
    }
    let after = cpu_logits(&c, &layout, &p, &b).unwrap();
    for r in 0..3 {
        for t in 0..6 {
            let at = (r * 6 + t) * 30..(r * 6 + t + 1) * 30;
            if t < 4 {
                assert_eq!(
                    before[at.clone()],
                    after[at],
                    "row {r} position {t} changed"
                );
            } else {
                assert_ne!(
                    before[at.clone()],
                    after[at],
                    "row {r} position {t} did not"
                );
            }
        }
    }
}

#[test]
fn prefix_positions_see_the_whole_prefix() {
    let c = cfg(Arch::Decoder, 1, 6, 30);
    let layout = LmLayout::new(&c);
    let p = random_params(&layout, 9);
    let mut b = decoder_batch(6, 30, 9);
    b.prefix = vec![4, 0, 4];
    let before = cpu_logits(&c, &layout, &p, &b).unwrap();
    // change position 3 (inside row 0's and row 2's prefix)
    for r in 0..3 {
        b.tokens[r * 6 + 3] = (b.tokens[r * 6 + 3] + 7) % 30;
    }
    let after = cpu_logits(&c, &layout, &p, &b).unwrap();
    let at = |r: usize, t: usize| (r * 6 + t) * 30..(r * 6 + t + 1) * 30;
    for t in 0..3 {
        assert_ne!(
            before[at(0, t)],
            after[at(0, t)],
            "prefix row, position {t}"
        );
        assert_eq!(
            before[at(1, t)],
            after[at(1, t)],
            "causal row, position {t}"
        );
    }
    // position 5 ≥ prefix: causal, but it always sees position 3
    assert_ne!(before[at(0, 5)], after[at(0, 5)]);
    // a change after the prefix never reaches back into it
    let mut b2 = b.clone();
    b2.tokens[4] = (b2.tokens[4] + 1) % 30;
    let after2 = cpu_logits(&c, &layout, &p, &b2).unwrap();
    for t in 0..4 {
        assert_eq!(after[at(0, t)], after2[at(0, t)], "prefix position {t}");
    }
}

#[test]
fn encoder_padding_is_never_read() {
    let c = cfg(Arch::EncDec, 2, 7, 30);
    let layout = LmLayout::new(&c);
    let p = random_params(&layout, 10);
    let b = encdec_batch(5, 7, 30, 10);
    let before = cpu_logits(&c, &layout, &p, &b).unwrap();
    let (l0, g0) = cpu_loss_and_grad(&c, &layout, &p, &b, 1).unwrap();
    let mut b2 = b.clone();
    for r in 0..3 {
        for j in b.enc_lens[r]..7 {
            b2.enc_tokens[r * 7 + j] = (b2.enc_tokens[r * 7 + j] + 3) % 30;
        }
    }
    assert_ne!(b.enc_tokens, b2.enc_tokens);
    assert_eq!(before, cpu_logits(&c, &layout, &p, &b2).unwrap());
    let (l1, g1) = cpu_loss_and_grad(&c, &layout, &p, &b2, 1).unwrap();
    assert_eq!(l0, l1);
    // nothing flows into padding: every gradient entry is the same, bit for bit
    assert_eq!(g0, g1);
    let mut c2 = b2.clone();
    // a valid encoder token, by contrast, matters
    c2.enc_tokens[0] = (c2.enc_tokens[0] + 1) % 30;
    assert_ne!(before, cpu_logits(&c, &layout, &p, &c2).unwrap());
}

/// `b` with `extra` padding slots after each encoder row and each decoder row (unweighted).
fn widen(b: &Batch, extra: usize) -> Batch {
    let pad = |v: &[u32], width: usize| -> Vec<u32> {
        v.chunks(width)
            .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(7, extra)))
            .collect()
    };
    Batch {
        len: b.len + extra,
        tokens: pad(&b.tokens, b.len),
        targets: pad(&b.targets, b.len),
        weights: b
            .weights
            .chunks(b.len)
            .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(0.0, extra)))
            .collect(),
        enc_len: b.enc_len + extra,
        enc_tokens: pad(&b.enc_tokens, b.enc_len),
        ..b.clone()
    }
}

#[test]
fn results_do_not_depend_on_padding_width() {
    // Encoder positions count from each input's end, so padding the batch wider (as a batch of
    // longer examples would) moves nothing: `pack` trims batches to their longest row.
    let c = cfg(Arch::EncDec, 2, 10, 30);
    let layout = LmLayout::new(&c);
    let p = random_params(&layout, 12);
    let b = encdec_batch(5, 7, 30, 12);
    let wide = widen(&b, 3);
    let (l0, g0) = cpu_loss_and_grad(&c, &layout, &p, &b, 1).unwrap();
    let (l1, g1) = cpu_loss_and_grad(&c, &layout, &p, &wide, 1).unwrap();
    assert!((l0 - l1).abs() <= 1e-6 * l0.abs(), "{l0} vs {l1}");
    for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
            "grad {i}: {a} vs {b}"
        );
    }
    let (narrow, wide) = (
        cpu_logits(&c, &layout, &p, &b).unwrap(),
        cpu_logits(&c, &layout, &p, &wide).unwrap(),
    );
    let v = c.vocab;
    for r in 0..b.rows {
        for t in 0..b.len {
            let at = |len: usize| (r * len + t) * v..(r * len + t + 1) * v;
            for (a, w) in narrow[at(b.len)].iter().zip(&wide[at(b.len + 3)]) {
                assert!((a - w).abs() <= 1e-5 * (1.0 + a.abs()), "row {r} slot {t}");
            }
        }
    }
}

#[test]
fn gradient_does_not_depend_on_threads_or_sharding_order() {
    // enough rows for several shards
    let c = cfg(Arch::Decoder, 1, 6, 30);
    let layout = LmLayout::new(&c);
    let p = random_params(&layout, 11);
    let mut rng = SplitMix64::new(11, 3);
    let rows = 2 * SHARD_TOKENS / 6 + 5;
    let b = Batch {
        rows,
        len: 6,
        tokens: tokens(&mut rng, rows * 6, 30),
        targets: tokens(&mut rng, rows * 6, 30),
        weights: vec![1.0; rows * 6],
        prefix: (0..rows).map(|r| r % 7).map(|p| p.min(6)).collect(),
        ..Batch::default()
    };
    assert!(plan(rows, 6).len() >= 3);
    let one = cpu_loss_and_grad(&c, &layout, &p, &b, 1).unwrap();
    let three = cpu_loss_and_grad(&c, &layout, &p, &b, 3).unwrap();
    assert_eq!(one.0.to_bits(), three.0.to_bits());
    assert!(
        one.1
            .iter()
            .zip(&three.1)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

#[test]
fn fast_exp_is_accurate() {
    let mut worst = 0.0f64;
    let mut x = -80.0f32;
    while x <= 80.0 {
        let exact = (x as f64).exp();
        let got = exp_approx(x) as f64;
        worst = worst.max(((got - exact) / exact).abs());
        x += 1.0e-3;
    }
    assert!(worst < 1e-6, "max rel error {worst}");
    assert_eq!(exp_approx(0.0), 1.0);
}

#[test]
fn bad_batches_are_rejected() {
    let c = cfg(Arch::Decoder, 1, 6, 30);
    let layout = LmLayout::new(&c);
    let p = layout.init(0);
    let mut b = decoder_batch(6, 30, 12);
    b.tokens[0] = 30;
    assert!(matches!(
        cpu_loss_and_grad(&c, &layout, &p, &b, 1),
        Err(NnError::InvalidData(m)) if m.contains("outside the vocabulary")
    ));
    let long = decoder_batch(6, 30, 12);
    let short = cfg(Arch::Decoder, 1, 5, 30);
    let err = cpu_loss_and_grad(
        &short,
        &LmLayout::new(&short),
        &LmLayout::new(&short).init(0),
        &long,
        1,
    );
    assert!(matches!(err, Err(NnError::InvalidData(m)) if m.contains("seq_len")));
    let enc = cfg(Arch::EncDec, 1, 6, 30);
    let el = LmLayout::new(&enc);
    let err = cpu_loss_and_grad(&enc, &el, &el.init(0), &decoder_batch(6, 30, 12), 1);
    assert!(matches!(err, Err(NnError::InvalidData(m)) if m.contains("no encoder tokens")));
    let mut b = encdec_batch(5, 6, 30, 12);
    b.prefix[1] = 2;
    let err = cpu_loss_and_grad(&enc, &el, &el.init(0), &b, 1);
    assert!(matches!(err, Err(NnError::InvalidData(m)) if m.contains("prefix")));
}
