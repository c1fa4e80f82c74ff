//! The device-generic path of the language models: the network of [`LmConfig`] as dfdx tensor
//! ops, generic over `D: Device<f32>`, so a CUDA build runs it unchanged.
//!
//! Sizes come from the pipeline file, so every tensor is runtime-shaped and dfdx's const-generic
//! `nn` modules are of no use (notes/dfdx.md). Each parameter slot is one flat `(usize,)` tensor;
//! a use reshapes a fresh leaky-taped clone of it (same tensor id, so every use of a parameter,
//! e.g. the tied embedding at the input and the output, accumulates into one gradient), and the
//! gradient is read back slot by slot in layout order. Attention is written from tensor ops
//! because dfdx 0.13's attention applies no mask; the masks are constant additive tensors of
//! 0 / −∞ built from the batch.

// Reached from tests only until `train_lm` picks a backend.

use std::collections::BTreeMap;

use dfdx::shapes::{Axes2, Axes4, Axis, HasShape};
use dfdx::tensor::{NoneTape, OwnedTape, Tape, Tensor};
use dfdx::tensor_ops::{
    Backward, BroadcastTo, Device, GatherTo, PermuteTo, ReshapeTo, SelectTo, SumTo, TryAdd,
    TryMatMul, TryMul,
};

use super::batch::Batch;
use super::config::{Arch, LmConfig};
use super::layout::{Attention, Dense, LmLayout, Norm, Stack};
use crate::NnError;

type T1<D, T> = Tensor<(usize,), f32, D, T>;
type T2<D, T> = Tensor<(usize, usize), f32, D, T>;
type T3<D> = Tensor<(usize, usize, usize), f32, D>;
type T4<D, T> = Tensor<(usize, usize, usize, usize), f32, D, T>;
/// Token or position ids.
type Ids<D> = Tensor<(usize,), usize, D>;

const LN_EPS: f64 = 1e-5;

use ablate_nn::device_error as device_err;

mod group;
pub(crate) use group::group_loss_and_grad;

/// Every parameter slot as a flat tensor, keyed by its offset in the flat vector.
struct Params<D: Device<f32>> {
    slots: BTreeMap<usize, T1<D, NoneTape>>,
}

impl<D: Device<f32>> Params<D> {
    fn load(dev: &D, layout: &LmLayout, p: &[f32]) -> Result<Self, D::Err> {
        let mut slots = BTreeMap::new();
        for s in layout.store.slots() {
            let t = dev.try_tensor_from_vec(p[s.range()].to_vec(), (s.len(),))?;
            slots.insert(s.offset, t);
        }
        Ok(Params { slots })
    }

    /// A fresh use of the `[rows, cols]` parameter at `offset`, on tape `T`.
    fn mat<T: Tape<f32, D>>(
        &self,
        offset: usize,
        rows: usize,
        cols: usize,
    ) -> Result<T2<D, T>, D::Err> {
        self.slots[&offset]
            .retaped::<T>()
            .try_reshape_like(&(rows, cols))
    }

    /// The vector parameter at `offset` broadcast over `rows` rows.
    fn rows<T: Tape<f32, D>>(&self, offset: usize, rows: usize) -> Result<T2<D, T>, D::Err> {
        let v = &self.slots[&offset];
        let d = v.shape().0;
        v.retaped::<T>()
            .try_broadcast_like::<_, Axis<0>>(&(rows, d))
    }
}

/// The constant inputs of one batch on the device.
struct Inputs<D: Device<f32>> {
    rows: usize,
    len: usize,
    tokens: Ids<D>,
    positions: Ids<D>,
    /// Additive mask of the decoder's self-attention, `[rows, len, len]`.
    self_mask: T3<D>,
    /// encdec: the encoder's tokens, positions, length, its self-attention mask
    /// `[rows, enc_len, enc_len]` and the cross-attention mask `[rows, len, enc_len]`.
    enc: Option<EncInputs<D>>,
}

struct EncInputs<D: Device<f32>> {
    tokens: Ids<D>,
    positions: Ids<D>,
    len: usize,
    self_mask: T3<D>,
    cross_mask: T3<D>,
}

/// `[rows, q, k]` of 0 where `allowed(row, i, j)`, −∞ elsewhere: exp(−∞ − max) is exactly 0,
/// and every query sees at least one key (checked in [`check`]), so no row is all −∞.
fn mask<D: Device<f32>>(
    dev: &D,
    (rows, q, k): (usize, usize, usize),
    allowed: impl Fn(usize, usize, usize) -> bool,
) -> Result<T3<D>, D::Err> {
    let mut m = Vec::with_capacity(rows * q * k);
    for r in 0..rows {
        for i in 0..q {
            for j in 0..k {
                m.push(if allowed(r, i, j) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                });
            }
        }
    }
    dev.try_tensor_from_vec(m, (rows, q, k))
}

/// Token ids and position ids (`position(row, slot)`) as index tensors.
fn ids<D: Device<f32>>(
    dev: &D,
    tokens: &[u32],
    rows: usize,
    len: usize,
    position: impl Fn(usize, usize) -> usize,
) -> Result<[Ids<D>; 2], D::Err> {
    let t = tokens.iter().map(|&t| t as usize).collect();
    let p = (0..rows)
        .flat_map(|r| (0..len).map(move |j| (r, j)))
        .map(|(r, j)| position(r, j))
        .collect();
    Ok([
        dev.try_tensor_from_vec(t, (rows * len,))?,
        dev.try_tensor_from_vec(p, (rows * len,))?,
    ])
}

impl<D: Device<f32>> Inputs<D> {
    fn new(dev: &D, cfg: &LmConfig, b: &Batch) -> Result<Self, D::Err> {
        let (rows, len) = (b.rows, b.len);
        let [tokens, positions] = ids(dev, &b.tokens, rows, len, |_, j| j)?;
        let (self_mask, enc) = match cfg.arch {
            Arch::Decoder => {
                // Causal, except that the first `prefix` positions see each other.
                let m = mask(dev, (rows, len, len), |r, i, j| j <= i || j < b.prefix[r])?;
                (m, None)
            }
            Arch::EncDec => {
                let el = b.enc_len;
                let [et, ep] = ids(dev, &b.enc_tokens, rows, el, |r, j| {
                    cfg.enc_position(b.enc_lens[r], j)
                })?;
                let valid = |r: usize, _: usize, j: usize| j < b.enc_lens[r];
                let enc = EncInputs {
                    tokens: et,
                    positions: ep,
                    len: el,
                    self_mask: mask(dev, (rows, el, el), valid)?,
                    cross_mask: mask(dev, (rows, len, el), valid)?,
                };
                (mask(dev, (rows, len, len), |_, i, j| j <= i)?, Some(enc))
            }
        };
        Ok(Inputs {
            rows,
            len,
            tokens,
            positions,
            self_mask,
            enc,
        })
    }
}

/// The shapes of the model run on one batch.
struct Net<'a, D: Device<f32>> {
    cfg: &'a LmConfig,
    layout: &'a LmLayout,
    p: &'a Params<D>,
}

impl<D: Device<f32>> Net<'_, D> {
    /// `y = x·Wᵀ + b`
    fn dense<T: Tape<f32, D>>(&self, l: &Dense, x: T2<D, T>) -> Result<T2<D, T>, D::Err> {
        let n = x.shape().0;
        let w = self
            .p
            .mat::<T>(l.w, l.out, l.inp)?
            .try_permute::<_, Axes2<1, 0>>()?;
        x.try_matmul(w)?.try_add(self.p.rows::<T>(l.b, n)?)
    }

    fn layer_norm<T: Tape<f32, D>>(&self, l: &Norm, x: T2<D, T>) -> Result<T2<D, T>, D::Err> {
        let n = x.shape().0;
        x.try_normalize::<Axis<1>>(LN_EPS)?
            .try_mul(self.p.rows::<T>(l.g, n)?)?
            .try_add(self.p.rows::<T>(l.b, n)?)
    }

    /// `[rows·s, d_model]` → `[rows, heads, s, head_dim]`
    fn split_heads<T: Tape<f32, D>>(&self, x: T2<D, T>, rows: usize) -> Result<T4<D, T>, D::Err> {
        let (h, dh) = (self.cfg.heads, self.cfg.head_dim());
        let s = x.shape().0 / rows;
        x.try_reshape_like(&(rows, s, h, dh))?
            .try_permute::<_, Axes4<0, 2, 1, 3>>()
    }

    /// Attention of `xq` (`[rows·sq, d]`) over `xkv` (`[rows·sk, d]`) with the additive mask
    /// `[rows, sq, sk]`.
    fn attention<T: Tape<f32, D>>(
        &self,
        a: &Attention,
        xq: T2<D, T>,
        xkv: T2<D, T>,
        mask: &T3<D>,
    ) -> Result<T2<D, T>, D::Err> {
        let (rows, sq, sk) = *mask.shape();
        let (h, dh, d) = (self.cfg.heads, self.cfg.head_dim(), self.cfg.d_model);
        let q = self.split_heads(self.dense(&a.q, xq)?, rows)?;
        let k = self.dense(&a.k, xkv.retaped::<T>())?;
        let k = self
            .split_heads(k, rows)?
            .try_permute::<_, Axes4<0, 1, 3, 2>>()?;
        let v = self.split_heads(self.dense(&a.v, xkv)?, rows)?;
        let m = mask
            .clone()
            .try_broadcast_like::<_, Axis<1>>(&(rows, h, sq, sk))?;
        let weights = q
            .try_matmul(k)?
            .try_mul(1.0 / (dh as f32).sqrt())?
            .try_add(m)?
            .try_softmax::<Axis<3>>()?;
        let out = weights
            .try_matmul(v)?
            .try_permute::<_, Axes4<0, 2, 1, 3>>()?
            .try_reshape_like(&(rows * sq, d))?;
        self.dense(&a.o, out)
    }

    /// `tok_emb[token] + pos_emb[position]`, `[rows·len, d_model]`.
    fn embed<T: Tape<f32, D>>(
        &self,
        tokens: &Ids<D>,
        positions: &Ids<D>,
    ) -> Result<T2<D, T>, D::Err> {
        let (cfg, l) = (self.cfg, self.layout);
        let tok = self
            .p
            .mat::<T>(l.tok_emb, cfg.vocab, cfg.d_model)?
            .try_gather(tokens.clone())?;
        let pos = self
            .p
            .mat::<T>(l.pos_emb, cfg.seq_len, cfg.d_model)?
            .try_gather(positions.clone())?;
        tok.try_add(pos)
    }

    /// A stack's blocks and final LayerNorm; `cross` is the encoder output and the
    /// cross-attention mask (encdec decoder only).
    fn stack<T: Tape<f32, D>>(
        &self,
        s: &Stack,
        mut x: T2<D, T>,
        self_mask: &T3<D>,
        cross: Option<(T2<D, T>, &T3<D>)>,
    ) -> Result<T2<D, T>, D::Err> {
        // The encoder output feeds every block's cross-attention: each use is a retaped clone
        // (same id, so their gradients add up); the last takes the tape that produced it.
        let (mut enc, cross_mask) = match cross {
            Some((e, m)) => (Some(e), Some(m)),
            None => (None, None),
        };
        let n_blocks = s.blocks.len();
        for (i, b) in s.blocks.iter().enumerate() {
            let h = self.layer_norm(&b.ln1, x.retaped::<T>())?;
            let a = self.attention(&b.attn, h.retaped::<T>(), h, self_mask)?;
            x = x.try_add(a)?;
            if let Some((lnx, att)) = &b.cross {
                let (Some(e), Some(m)) = (enc.take(), cross_mask) else {
                    unreachable!("an encdec decoder block runs with the encoder output");
                };
                let kv = if i + 1 == n_blocks {
                    e
                } else {
                    let kv = e.retaped::<T>();
                    enc = Some(e);
                    kv
                };
                let h = self.layer_norm(lnx, x.retaped::<T>())?;
                let a = self.attention(att, h, kv, m)?;
                x = x.try_add(a)?;
            }
            let h = self.layer_norm(&b.ln2, x.retaped::<T>())?;
            let f = self.dense(&b.ff1, h)?.try_fast_gelu()?;
            x = x.try_add(self.dense(&b.ff2, f)?)?;
        }
        self.layer_norm(&s.ln_f, x)
    }

    /// Logits `[rows·len, vocab]` on tape `T`.
    fn logits<T: Tape<f32, D>>(&self, inp: &Inputs<D>) -> Result<T2<D, T>, D::Err> {
        let enc = match &inp.enc {
            Some(e) => Some(self.encode::<T>(e)?),
            None => None,
        };
        self.decode(inp, enc)
    }

    /// The encoder's output `[rows·enc_len, d_model]` (encdec only).
    fn encode<T: Tape<f32, D>>(&self, e: &EncInputs<D>) -> Result<T2<D, T>, D::Err> {
        let Some(encoder) = &self.layout.encoder else {
            unreachable!("encoder inputs are built for an encoder-decoder only");
        };
        let ex = self.embed::<T>(&e.tokens, &e.positions)?;
        self.stack(encoder, ex, &e.self_mask, None)
    }

    /// The decoder's logits `[rows·len, vocab]`, cross-attending to `enc` (the encoder's
    /// output for `inp`'s encoder rows) in an encoder-decoder.
    fn decode<T: Tape<f32, D>>(
        &self,
        inp: &Inputs<D>,
        enc: Option<T2<D, T>>,
    ) -> Result<T2<D, T>, D::Err> {
        let (cfg, l) = (self.cfg, self.layout);
        let x = self.embed::<T>(&inp.tokens, &inp.positions)?;
        let h = match (&inp.enc, enc) {
            (Some(e), Some(enc)) => {
                debug_assert_eq!(enc.shape().0, inp.rows * e.len);
                self.stack(&l.decoder, x, &inp.self_mask, Some((enc, &e.cross_mask)))?
            }
            _ => self.stack(&l.decoder, x, &inp.self_mask, None)?,
        };
        debug_assert_eq!(h.shape().0, inp.rows * inp.len);
        // Tied head: logits = h·tok_embᵀ.
        let emb_t = self
            .p
            .mat::<T>(l.tok_emb, cfg.vocab, cfg.d_model)?
            .try_permute::<_, dfdx::shapes::Axes2<1, 0>>()?;
        h.try_matmul(emb_t)
    }
}

/// Everything the network needs to hold before it runs: a malformed batch is an input error,
/// not a panic inside dfdx.
fn check(cfg: &LmConfig, layout: &LmLayout, params: &[f32], b: &Batch) -> Result<(), NnError> {
    cfg.validate()?;
    if params.len() != layout.total() {
        return Err(NnError::InvalidConfig(format!(
            "{} parameters for a model of {}",
            params.len(),
            layout.total()
        )));
    }
    check_tensor_batch(cfg, b)
}

/// What [`check`] requires of a batch.
pub(crate) fn check_tensor_batch(cfg: &LmConfig, b: &Batch) -> Result<(), NnError> {
    let bad = |m: String| Err(NnError::InvalidData(m));
    b.check(cfg.vocab).map_err(NnError::InvalidData)?;
    if b.rows == 0 || b.len == 0 {
        return bad(format!("empty batch of {} × {}", b.rows, b.len));
    }
    if b.len > cfg.seq_len || b.enc_len > cfg.seq_len {
        return bad(format!(
            "sequence of {} (encoder {}) is longer than `seq_len` {}",
            b.len, b.enc_len, cfg.seq_len
        ));
    }
    match cfg.arch {
        Arch::Decoder => {
            if b.enc_len != 0 {
                return bad("a decoder-only batch has encoder tokens".into());
            }
            if let Some(p) = b.prefix.iter().find(|&&p| p > b.len) {
                return bad(format!("prefix {p} is longer than the row ({})", b.len));
            }
        }
        Arch::EncDec => {
            // Every encoder and cross-attention query needs one valid key.
            if let Some(l) = b.enc_lens.iter().find(|&&l| l == 0 || l > b.enc_len) {
                return bad(format!(
                    "encoder length {l} is outside 1..={} (the batch's `enc_len`)",
                    b.enc_len
                ));
            }
        }
    }
    Ok(())
}

/// A model's parameters on a device, scoring and decoding batches forward only (no tape):
/// evaluation on a GPU. The encoder output of [`TensorScorer::encode`] is kept on the device
/// for the decoding steps that follow.
pub(crate) struct TensorScorer<'a, D: Device<f32>> {
    dev: &'a D,
    cfg: &'a LmConfig,
    layout: &'a LmLayout,
    params: &'a [f32],
    p: Params<D>,
    enc: Option<T2<D, NoneTape>>,
}

impl<'a, D: Device<f32>> TensorScorer<'a, D> {
    pub(crate) fn new(
        dev: &'a D,
        cfg: &'a LmConfig,
        layout: &'a LmLayout,
        params: &'a [f32],
    ) -> Result<Self, NnError> {
        let p = Params::load(dev, layout, params).map_err(device_err)?;
        Ok(TensorScorer {
            dev,
            cfg,
            layout,
            params,
            p,
            enc: None,
        })
    }

    fn net(&self) -> Net<'_, D> {
        Net {
            cfg: self.cfg,
            layout: self.layout,
            p: &self.p,
        }
    }

    /// `(Σ w·nll, Σ w)` of `batch`, the sums taken on the host in f64 as the CPU path does.
    pub(crate) fn nll(&mut self, batch: &Batch) -> Result<(f64, f64), NnError> {
        check(self.cfg, self.layout, self.params, batch)?;
        let run = || -> Result<Vec<f32>, D::Err> {
            let inp = Inputs::new(self.dev, self.cfg, batch)?;
            let targets = batch.targets.iter().map(|&t| t as usize).collect();
            let targets = self
                .dev
                .try_tensor_from_vec(targets, (batch.rows * batch.len,))?;
            Ok(self
                .net()
                .logits::<NoneTape>(&inp)?
                .try_log_softmax::<Axis<1>>()?
                .try_select(targets)?
                .as_vec())
        };
        let logp = run().map_err(device_err)?;
        let mut sum = 0.0;
        let mut weight = 0.0;
        for (&lp, &w) in logp.iter().zip(&batch.weights) {
            if w != 0.0 {
                sum -= w as f64 * lp as f64;
                weight += w as f64;
            }
        }
        Ok((sum, weight))
    }

    /// Runs the encoder over `batch`'s encoder rows and keeps its output for
    /// [`TensorScorer::greedy`] (encdec only).
    pub(crate) fn encode(&mut self, batch: &Batch) -> Result<(), NnError> {
        check(self.cfg, self.layout, self.params, batch)?;
        let run = || -> Result<T2<D, NoneTape>, D::Err> {
            let inp = Inputs::new(self.dev, self.cfg, batch)?;
            let Some(e) = &inp.enc else {
                unreachable!("an encoder-decoder batch has encoder inputs");
            };
            self.net().encode::<NoneTape>(e)
        };
        self.enc = Some(run().map_err(device_err)?);
        Ok(())
    }

    /// The argmax token at position `at[r]` of each row (the first maximum, as on the CPU).
    /// For an encoder-decoder, `batch` has the encoder rows of the last
    /// [`TensorScorer::encode`], whose output it reuses.
    pub(crate) fn greedy(&mut self, batch: &Batch, at: &[usize]) -> Result<Vec<u32>, NnError> {
        check(self.cfg, self.layout, self.params, batch)?;
        if at.len() != batch.rows || at.iter().any(|&i| i >= batch.len) {
            return Err(NnError::InvalidData(format!(
                "decoding positions {at:?} for {} rows of {}",
                batch.rows, batch.len
            )));
        }
        let enc = match self.cfg.arch {
            Arch::Decoder => None,
            Arch::EncDec => match &self.enc {
                Some(e) if e.shape().0 == batch.rows * batch.enc_len => Some(e.clone()),
                _ => {
                    return Err(NnError::InvalidData(
                        "decoding an encoder-decoder needs the encoder output of its rows".into(),
                    ));
                }
            },
        };
        let picked: Vec<usize> = at
            .iter()
            .enumerate()
            .map(|(r, &i)| r * batch.len + i)
            .collect();
        let run = || -> Result<Vec<f32>, D::Err> {
            let inp = Inputs::new(self.dev, self.cfg, batch)?;
            let picked = self.dev.try_tensor_from_vec(picked, (batch.rows,))?;
            Ok(self
                .net()
                .decode::<NoneTape>(&inp, enc)?
                .try_gather(picked)?
                .as_vec())
        };
        let logits = run().map_err(device_err)?;
        Ok(logits
            .chunks_exact(self.cfg.vocab)
            .map(|row| crate::kernels::argmax(row) as u32)
            .collect())
    }
}

/// Logits of `batch`, rows × len × vocab row-major, forward only (no tape).
#[cfg(test)]
pub(crate) fn tensor_logits<D: Device<f32>>(
    dev: &D,
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
) -> Result<Vec<f32>, NnError> {
    check(cfg, layout, params, batch)?;
    let run = || -> Result<Vec<f32>, D::Err> {
        let p = Params::load(dev, layout, params)?;
        let inp = Inputs::new(dev, cfg, batch)?;
        let net = Net { cfg, layout, p: &p };
        Ok(net.logits::<NoneTape>(&inp)?.as_vec())
    };
    run().map_err(device_err)
}

/// The weighted mean next-token loss of `batch`, Σ w·nll / Σ w, and its gradient with respect
/// to every parameter, flat in layout order.
pub(crate) fn tensor_loss_and_grad<D: Device<f32>>(
    dev: &D,
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
) -> Result<(f32, Vec<f32>), NnError> {
    check(cfg, layout, params, batch)?;
    let total: f32 = batch.weights.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return Err(NnError::InvalidData(format!(
            "the loss weights sum to {total}, not a positive number"
        )));
    }
    let run = || -> Result<(f32, Vec<f32>), D::Err> {
        let p = Params::load(dev, layout, params)?;
        let inp = Inputs::new(dev, cfg, batch)?;
        let net = Net { cfg, layout, p: &p };
        let n = batch.rows * batch.len;
        let scale = batch.weights.iter().map(|w| -w / total).collect();
        let scale = dev.try_tensor_from_vec(scale, (n,))?;
        let targets = batch.targets.iter().map(|&t| t as usize).collect();
        let targets = dev.try_tensor_from_vec(targets, (n,))?;
        let loss = net
            .logits::<OwnedTape<f32, D>>(&inp)?
            .try_log_softmax::<Axis<1>>()?
            .try_select(targets)?
            .try_mul(scale)?
            .try_sum::<(), Axis<0>>()?;
        let value = loss.as_vec()[0];
        let mut grads = loss.try_backward()?;
        let mut flat = Vec::with_capacity(layout.total());
        for s in layout.store.slots() {
            let t = &p.slots[&s.offset];
            // A slot no op reached has no gradient entry: it gets zeros.
            grads.try_alloc_for(t)?;
            flat.extend(grads.get(t).as_vec());
        }
        Ok((value, flat))
    };
    run().map_err(device_err)
}

#[cfg(test)]
mod tests {
    use dfdx::tensor::Cpu;

    use super::*;
    use crate::lm::reference::{reference_logits, reference_loss};
    use crate::rng::SplitMix64;

    const VOCAB: usize = 20;

    fn cfg(arch: Arch) -> LmConfig {
        LmConfig {
            arch,
            vocab: VOCAB,
            d_model: 8,
            layers: 2,
            heads: 2,
            d_ff: 16,
            seq_len: 6,
        }
    }

    /// Parameters far from the init's 0.02 scale, so that attention is far from uniform and
    /// every path carries a visible signal: weights ±0.6, gains 1 ± 0.3, biases ±0.2.
    fn params(layout: &LmLayout, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed, 99);
        let mut p = vec![0.0; layout.total()];
        for s in layout.store.slots() {
            let (base, bound) = match (s.shape.len(), s.name.ends_with(".g")) {
                (1, true) => (1.0, 0.3),
                (1, false) => (0.0, 0.2),
                _ => (0.0, 0.6),
            };
            for v in &mut p[s.range()] {
                *v = base + rng.uniform(bound);
            }
        }
        p
    }

    fn tokens(rng: &mut SplitMix64, n: usize) -> Vec<u32> {
        (0..n).map(|_| rng.below(VOCAB) as u32).collect()
    }

    /// Two rows of 6: row 0 fully causal, row 1 with a prefix of 3; targets are the next
    /// token, weights 1 after the prefix (and a 0.5 to check the weighting), 0 on the last.
    fn decoder_batch(seed: u64) -> Batch {
        let mut rng = SplitMix64::new(seed, 7);
        let (rows, len) = (2, 6);
        let tokens = tokens(&mut rng, rows * len);
        let mut targets = vec![0; rows * len];
        for r in 0..rows {
            for t in 0..len - 1 {
                targets[r * len + t] = tokens[r * len + t + 1];
            }
        }
        #[rustfmt::skip]
        let weights = vec![
            1.0, 1.0, 0.5, 1.0, 1.0, 0.0,
            0.0, 0.0, 1.0, 1.0, 1.0, 0.0,
        ];
        Batch {
            rows,
            len,
            tokens,
            targets,
            weights,
            prefix: vec![0, 3],
            ..Batch::default()
        }
    }

    /// Two rows: encoder inputs of 6 of which 6 and 3 are valid (PAD after), decoder 5.
    fn encdec_batch(seed: u64) -> Batch {
        let mut rng = SplitMix64::new(seed, 8);
        let (rows, len, enc_len) = (2, 5, 6);
        let mut enc_tokens = tokens(&mut rng, rows * enc_len);
        let enc_lens = vec![6, 3];
        // PAD of the small vocabulary: the last id.
        enc_tokens[enc_len + 3..].fill(VOCAB as u32 - 1);
        let targets = tokens(&mut rng, rows * len);
        let mut toks = vec![1; rows * len];
        for r in 0..rows {
            for t in 1..len {
                toks[r * len + t] = targets[r * len + t - 1];
            }
        }
        Batch {
            rows,
            len,
            tokens: toks,
            targets,
            weights: vec![1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 0.0],
            prefix: vec![0; rows],
            enc_len,
            enc_tokens,
            enc_lens,
        }
    }

    fn batch(arch: Arch, seed: u64) -> Batch {
        match arch {
            Arch::Decoder => decoder_batch(seed),
            Arch::EncDec => encdec_batch(seed),
        }
    }

    fn tensor(cfg: &LmConfig, l: &LmLayout, p: &[f32], b: &Batch) -> Vec<f64> {
        let dev = Cpu::default();
        let out = tensor_logits(&dev, cfg, l, p, b).unwrap();
        out.into_iter().map(f64::from).collect()
    }

    fn reference(cfg: &LmConfig, l: &LmLayout, p: &[f32], b: &Batch) -> Vec<f64> {
        reference_logits(cfg, l, p, b)
    }

    type Logits = fn(&LmConfig, &LmLayout, &[f32], &Batch) -> Vec<f64>;
    const BOTH: [(&str, Logits); 2] = [("tensor", tensor), ("reference", reference)];

    #[test]
    fn logits_match_the_scalar_reference() {
        for arch in [Arch::Decoder, Arch::EncDec] {
            let c = cfg(arch);
            let l = LmLayout::new(&c);
            for seed in 0..3 {
                let (p, b) = (params(&l, seed), batch(arch, seed));
                let got = tensor(&c, &l, &p, &b);
                let want = reference_logits(&c, &l, &p, &b);
                assert_eq!(got.len(), b.rows * b.len * VOCAB);
                let spread = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(spread > 0.5, "{arch:?}: logits too flat to test ({spread})");
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() < 2e-5 * (1.0 + w.abs()),
                        "{arch:?} {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn loss_matches_the_reference_and_gradient_matches_central_differences() {
        let dev = Cpu::default();
        for arch in [Arch::Decoder, Arch::EncDec] {
            let c = cfg(arch);
            let l = LmLayout::new(&c);
            let (p, b) = (params(&l, 5), batch(arch, 5));
            let (loss, grad) = tensor_loss_and_grad(&dev, &c, &l, &p, &b).unwrap();
            let want = reference_loss(&c, &l, &p, &b);
            assert!(
                (loss as f64 - want).abs() < 1e-5 * (1.0 + want),
                "{loss} vs {want}"
            );
            assert_eq!(grad.len(), l.total());
            // Every parameter, against the f64 reference (which the test above ties to this
            // network), so the differences are not swamped by f32 rounding.
            let h = 1e-3;
            let mut q: Vec<f32> = p.clone();
            for s in l.store.slots() {
                let mut norm = 0.0f64;
                for i in s.range() {
                    q[i] = p[i] + h;
                    let up = reference_loss(&c, &l, &q, &b);
                    q[i] = p[i] - h;
                    let down = reference_loss(&c, &l, &q, &b);
                    q[i] = p[i];
                    // The perturbation is exact in f32 at these magnitudes only up to
                    // rounding: divide by the step that was actually taken.
                    let step = (p[i] + h) as f64 - (p[i] - h) as f64;
                    let fd = (up - down) / step;
                    let g = grad[i] as f64;
                    assert!(
                        (g - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                        "{arch:?} {}[{}]: {g} vs {fd}",
                        s.name,
                        i - s.offset
                    );
                    norm += fd * fd;
                }
                // Every slot influences the loss (the test would be vacuous otherwise), except
                // the key bias: q·b_k is the same for every key, and softmax ignores it.
                if s.name.ends_with(".k.bias") {
                    assert!(norm < 1e-12, "{arch:?} {}: {norm}", s.name);
                } else {
                    assert!(norm > 1e-12, "{arch:?} {}: zero gradient", s.name);
                }
            }
        }
    }

    /// Max |a − b| over the logits of the positions `ts` of row `r`.
    fn diff_at(a: &[f64], b: &[f64], batch: &Batch, r: usize, ts: &[usize]) -> f64 {
        let mut m = 0.0f64;
        for &t in ts {
            let at = (r * batch.len + t) * VOCAB;
            for v in at..at + VOCAB {
                m = m.max((a[v] - b[v]).abs());
            }
        }
        m
    }

    fn other(t: u32) -> u32 {
        (t + 7) % VOCAB as u32
    }

    #[test]
    fn causal_rows_do_not_see_the_future() {
        for arch in [Arch::Decoder, Arch::EncDec] {
            let c = cfg(arch);
            let l = LmLayout::new(&c);
            let p = params(&l, 1);
            let b = batch(arch, 1);
            for (name, logits) in BOTH {
                let base = logits(&c, &l, &p, &b);
                // Row 0 is causal in both arches.
                for t in 0..b.len - 1 {
                    let mut b2 = b.clone();
                    b2.tokens[t + 1] = other(b2.tokens[t + 1]);
                    let changed = logits(&c, &l, &p, &b2);
                    let past: Vec<usize> = (0..=t).collect();
                    let d = diff_at(&base, &changed, &b, 0, &past);
                    assert!(d < 1e-6, "{name} {arch:?}: position ≤ {t} moved by {d}");
                    let d = diff_at(&base, &changed, &b, 0, &[t + 1]);
                    assert!(d > 1e-4, "{name} {arch:?}: position {} did not move", t + 1);
                }
            }
        }
    }

    #[test]
    fn a_prefix_attends_both_ways_within_itself_only() {
        let c = cfg(Arch::Decoder);
        let l = LmLayout::new(&c);
        let p = params(&l, 2);
        let b = decoder_batch(2);
        assert_eq!(b.prefix, [0, 3]);
        for (name, logits) in BOTH {
            let base = logits(&c, &l, &p, &b);
            // Row 1 (prefix 3): the last prefix token reaches position 0 …
            let mut b2 = b.clone();
            b2.tokens[b.len + 2] = other(b2.tokens[b.len + 2]);
            let moved = logits(&c, &l, &p, &b2);
            let d = diff_at(&base, &moved, &b, 1, &[0, 1]);
            assert!(d > 1e-4, "{name}: the prefix was not seen from position 0");
            // … which the same change in the causal row 0 does not.
            let mut b3 = b.clone();
            b3.tokens[2] = other(b3.tokens[2]);
            let moved = logits(&c, &l, &p, &b3);
            let d = diff_at(&base, &moved, &b, 0, &[0, 1]);
            assert!(d < 1e-6, "{name}: the causal row saw the future ({d})");
            // After the prefix, row 1 is causal: position 4 stays unseen by 0..=3.
            let mut b4 = b.clone();
            b4.tokens[b.len + 4] = other(b4.tokens[b.len + 4]);
            let moved = logits(&c, &l, &p, &b4);
            let d = diff_at(&base, &moved, &b, 1, &[0, 1, 2, 3]);
            assert!(d < 1e-6, "{name}: position 4 leaked into the prefix ({d})");
        }
    }

    #[test]
    fn encoder_padding_is_never_attended() {
        let c = cfg(Arch::EncDec);
        let l = LmLayout::new(&c);
        let p = params(&l, 3);
        let b = encdec_batch(3);
        assert_eq!(b.enc_lens, [6, 3]);
        let all: Vec<usize> = (0..b.len).collect();
        for (name, logits) in BOTH {
            let base = logits(&c, &l, &p, &b);
            for j in 0..b.enc_len {
                let mut b2 = b.clone();
                let at = b.enc_len + j;
                b2.enc_tokens[at] = other(b2.enc_tokens[at]);
                let moved = logits(&c, &l, &p, &b2);
                let d = diff_at(&base, &moved, &b, 1, &all);
                if j < b.enc_lens[1] {
                    assert!(d > 1e-4, "{name}: valid encoder token {j} was not seen");
                } else {
                    assert!(d < 1e-6, "{name}: padding at {j} was seen ({d})");
                }
                // Rows never see each other.
                assert!(
                    diff_at(&base, &moved, &b, 0, &all) < 1e-6,
                    "{name}: rows mixed"
                );
            }
        }
    }

    #[test]
    fn malformed_batches_are_input_errors() {
        let dev = Cpu::default();
        let c = cfg(Arch::EncDec);
        let l = LmLayout::new(&c);
        let p = params(&l, 4);
        let mut cases = Vec::new();
        let mut b = encdec_batch(4);
        b.enc_lens[1] = 0;
        cases.push(("an empty encoder row", b));
        let mut b = encdec_batch(4);
        b.tokens[0] = VOCAB as u32;
        cases.push(("a token outside the vocabulary", b));
        let mut b = encdec_batch(4);
        b.weights.fill(0.0);
        cases.push(("no weighted target", b));
        for (what, b) in cases {
            let err = tensor_loss_and_grad(&dev, &c, &l, &p, &b).unwrap_err();
            assert!(matches!(err, NnError::InvalidData(_)), "{what}: {err}");
        }
        let short = &p[1..];
        let err = tensor_logits(&dev, &c, &l, short, &encdec_batch(4)).unwrap_err();
        assert!(matches!(err, NnError::InvalidConfig(_)), "{err}");
    }

    /// `cargo test --release -p ablate-models --lib lm::tensor::tests::bench -- --ignored
    /// --nocapture`: one step at the decoder bench size. Prints; asserts nothing about time.
    #[test]
    #[ignore = "timing at the bench size; run by hand in release"]
    fn bench_decoder_step() {
        let c = LmConfig {
            arch: Arch::Decoder,
            vocab: crate::lm::vocab::VOCAB,
            d_model: 128,
            layers: 2,
            heads: 4,
            d_ff: 512,
            seq_len: 128,
        };
        let l = LmLayout::new(&c);
        let p = l.init(1);
        let mut rng = SplitMix64::new(1, 3);
        let (rows, len) = (32, 128);
        let toks: Vec<u32> = (0..rows * len).map(|_| rng.below(c.vocab) as u32).collect();
        let b = Batch {
            rows,
            len,
            targets: toks.iter().map(|&t| (t + 1) % c.vocab as u32).collect(),
            tokens: toks,
            weights: vec![1.0; rows * len],
            prefix: (0..rows).map(|r| if r % 2 == 0 { 0 } else { 40 }).collect(),
            ..Batch::default()
        };
        let dev = Cpu::default();
        for i in 0..4 {
            let start = std::time::Instant::now();
            let (loss, grad) = tensor_loss_and_grad(&dev, &c, &l, &p, &b).unwrap();
            assert!(loss.is_finite() && grad.iter().all(|g| g.is_finite()));
            eprintln!("step {i}: {:?} (loss {loss})", start.elapsed());
        }
    }
}
