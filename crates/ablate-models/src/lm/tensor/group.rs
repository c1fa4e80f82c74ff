//! A fused group on the dfdx path (issue 23): the members of one architecture as one tensor
//! computation, so a GPU runs one large step instead of one small step per member.
//!
//! Every tensor of [`super::Net`] gains the member axis in front: a parameter slot holds the
//! members' copies side by side (`[members·len]`, used as `[members, rows, cols]`), dense
//! layers are batched products `[members, n, in] · [members, in, out]`, attention folds the
//! members into its row axis (`[members·rows, heads, s, head_dim]`), and embeddings gather from
//! the members' stacked tables with member-offset ids. The members' batches are padded to the
//! longest of the step (padding is PAD with zero loss weight, and no real position attends to
//! it, as within one batch), and the loss is the sum of the members' own weighted means, so
//! each member's gradient is its own. Equal to each member's own [`super::tensor_loss_and_grad`]
//! within rounding (the reductions run over other shapes).

use std::collections::BTreeMap;

use dfdx::shapes::{Axes3, Axes4, Axis, HasShape};
use dfdx::tensor::{NoneTape, OwnedTape, Tape, Tensor};
use dfdx::tensor_ops::{
    Backward, BroadcastTo, Device, GatherTo, PermuteTo, ReshapeTo, SelectTo, SumTo, TryAdd,
    TryMatMul, TryMul,
};

use super::{Ids, LN_EPS, T1, T2, T3, T4, check, device_err, mask};
use crate::NnError;
use crate::lm::batch::Batch;
use crate::lm::config::{Arch, LmConfig};
use crate::lm::layout::{Attention, Dense, LmLayout, Norm, Stack};

type G3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;

/// Every parameter slot, the members' copies side by side, keyed by its offset in the layout.
struct Params<D: Device<f32>> {
    members: usize,
    slots: BTreeMap<usize, T1<D, NoneTape>>,
}

impl<D: Device<f32>> Params<D> {
    fn load(dev: &D, layout: &LmLayout, members: &[&[f32]]) -> Result<Self, D::Err> {
        let mut slots = BTreeMap::new();
        for s in layout.store.slots() {
            let mut v = Vec::with_capacity(members.len() * s.len());
            for p in members {
                v.extend_from_slice(&p[s.range()]);
            }
            slots.insert(
                s.offset,
                dev.try_tensor_from_vec(v, (members.len() * s.len(),))?,
            );
        }
        Ok(Params {
            members: members.len(),
            slots,
        })
    }

    /// The `[rows, cols]` parameter at `offset` of every member, `[members, rows, cols]`.
    fn mat<T: Tape<f32, D>>(
        &self,
        offset: usize,
        rows: usize,
        cols: usize,
    ) -> Result<G3<D, T>, D::Err> {
        self.slots[&offset]
            .retaped::<T>()
            .try_reshape_like(&(self.members, rows, cols))
    }

    /// The `[rows, cols]` tables at `offset` stacked, `[members·rows, cols]` (for member-offset
    /// gathers).
    fn stacked<T: Tape<f32, D>>(
        &self,
        offset: usize,
        rows: usize,
        cols: usize,
    ) -> Result<T2<D, T>, D::Err> {
        self.slots[&offset]
            .retaped::<T>()
            .try_reshape_like(&(self.members * rows, cols))
    }

    /// The vector parameter at `offset` of every member, broadcast over `n` rows.
    fn rows<T: Tape<f32, D>>(&self, offset: usize, n: usize) -> Result<G3<D, T>, D::Err> {
        let v = &self.slots[&offset];
        let d = v.shape().0 / self.members;
        v.retaped::<T>()
            .try_reshape_like(&(self.members, d))?
            .try_broadcast_like::<_, Axis<1>>(&(self.members, n, d))
    }
}

/// The members' batches, padded to one shape, on the device.
struct Inputs<D: Device<f32>> {
    rows: usize,
    len: usize,
    /// Member-offset token and position ids, `members·rows·len`.
    tokens: Ids<D>,
    positions: Ids<D>,
    /// `[members·rows, len, len]`.
    self_mask: T3<D>,
    enc: Option<EncInputs<D>>,
    targets: Ids<D>,
    /// `−w / Σw` of the member, 0 on padding.
    scale: T1<D, NoneTape>,
}

struct EncInputs<D: Device<f32>> {
    tokens: Ids<D>,
    positions: Ids<D>,
    self_mask: T3<D>,
    cross_mask: T3<D>,
}

impl<D: Device<f32>> Inputs<D> {
    /// `batches` have the same rows (checked by the caller) and a positive weight each.
    fn new(dev: &D, cfg: &LmConfig, batches: &[&Batch]) -> Result<Self, D::Err> {
        let g = batches.len();
        let rows = batches[0].rows;
        let len = batches.iter().map(|b| b.len).max().unwrap_or(0);
        let (v, sl) = (cfg.vocab, cfg.seq_len);
        let n = g * rows * len;
        let (mut tokens, mut positions) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut targets, mut scale) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (m, b) in batches.iter().enumerate() {
            let total: f32 = b.weights.iter().sum();
            for r in 0..rows {
                for j in 0..len {
                    let real = j < b.len;
                    let at = r * b.len + j;
                    tokens.push(m * v + if real { b.tokens[at] as usize } else { 0 });
                    positions.push(m * sl + j);
                    targets.push(if real { b.targets[at] as usize } else { 0 });
                    scale.push(if real { -b.weights[at] / total } else { 0.0 });
                }
            }
        }
        let cell = |i: usize| (i / rows, i % rows);
        let self_mask = match cfg.arch {
            // Causal, except that the first `prefix` positions see each other.
            Arch::Decoder => mask(dev, (g * rows, len, len), |i, q, k| {
                let (m, r) = cell(i);
                k <= q || k < batches[m].prefix[r]
            })?,
            Arch::EncDec => mask(dev, (g * rows, len, len), |_, q, k| k <= q)?,
        };
        let enc = match cfg.arch {
            Arch::Decoder => None,
            Arch::EncDec => {
                let el = batches.iter().map(|b| b.enc_len).max().unwrap_or(0);
                let (mut et, mut ep) = (Vec::new(), Vec::new());
                for (m, b) in batches.iter().enumerate() {
                    for r in 0..rows {
                        for j in 0..el {
                            let real = j < b.enc_len;
                            let t = if real {
                                b.enc_tokens[r * b.enc_len + j] as usize
                            } else {
                                0
                            };
                            et.push(m * v + t);
                            ep.push(m * sl + cfg.enc_position(b.enc_lens[r], j));
                        }
                    }
                }
                let valid = |i: usize, _: usize, k: usize| {
                    let (m, r) = cell(i);
                    k < batches[m].enc_lens[r]
                };
                Some(EncInputs {
                    tokens: dev.try_tensor_from_vec(et, (g * rows * el,))?,
                    positions: dev.try_tensor_from_vec(ep, (g * rows * el,))?,
                    self_mask: mask(dev, (g * rows, el, el), valid)?,
                    cross_mask: mask(dev, (g * rows, len, el), valid)?,
                })
            }
        };
        Ok(Inputs {
            rows,
            len,
            tokens: dev.try_tensor_from_vec(tokens, (n,))?,
            positions: dev.try_tensor_from_vec(positions, (n,))?,
            self_mask,
            enc,
            targets: dev.try_tensor_from_vec(targets, (n,))?,
            scale: dev.try_tensor_from_vec(scale, (n,))?,
        })
    }
}

/// [`super::Net`] over a member axis.
struct Net<'a, D: Device<f32>> {
    cfg: &'a LmConfig,
    layout: &'a LmLayout,
    p: &'a Params<D>,
}

impl<D: Device<f32>> Net<'_, D> {
    fn members(&self) -> usize {
        self.p.members
    }

    /// `y = x·Wᵀ + b`, each member with its own `W` and `b`.
    fn dense<T: Tape<f32, D>>(&self, l: &Dense, x: G3<D, T>) -> Result<G3<D, T>, D::Err> {
        let n = x.shape().1;
        let w = self
            .p
            .mat::<T>(l.w, l.out, l.inp)?
            .try_permute::<_, Axes3<0, 2, 1>>()?;
        x.try_matmul(w)?.try_add(self.p.rows::<T>(l.b, n)?)
    }

    fn layer_norm<T: Tape<f32, D>>(&self, l: &Norm, x: G3<D, T>) -> Result<G3<D, T>, D::Err> {
        let n = x.shape().1;
        x.try_normalize::<Axis<2>>(LN_EPS)?
            .try_mul(self.p.rows::<T>(l.g, n)?)?
            .try_add(self.p.rows::<T>(l.b, n)?)
    }

    /// `[members, rows·s, d_model]` → `[members·rows, heads, s, head_dim]`
    fn split_heads<T: Tape<f32, D>>(&self, x: G3<D, T>, rows: usize) -> Result<T4<D, T>, D::Err> {
        let (h, dh) = (self.cfg.heads, self.cfg.head_dim());
        let s = x.shape().1 / rows;
        x.try_reshape_like(&(self.members() * rows, s, h, dh))?
            .try_permute::<_, Axes4<0, 2, 1, 3>>()
    }

    /// Attention of `xq` (`[members, rows·sq, d]`) over `xkv` (`[members, rows·sk, d]`) with
    /// the additive mask `[members·rows, sq, sk]`.
    fn attention<T: Tape<f32, D>>(
        &self,
        a: &Attention,
        xq: G3<D, T>,
        xkv: G3<D, T>,
        mask: &T3<D>,
    ) -> Result<G3<D, T>, D::Err> {
        let (gr, sq, sk) = *mask.shape();
        let rows = gr / self.members();
        let (h, dh, d) = (self.cfg.heads, self.cfg.head_dim(), self.cfg.d_model);
        let q = self.split_heads(self.dense(&a.q, xq)?, rows)?;
        let k = self.dense(&a.k, xkv.retaped::<T>())?;
        let k = self
            .split_heads(k, rows)?
            .try_permute::<_, Axes4<0, 1, 3, 2>>()?;
        let v = self.split_heads(self.dense(&a.v, xkv)?, rows)?;
        let m = mask
            .clone()
            .try_broadcast_like::<_, Axis<1>>(&(gr, h, sq, sk))?;
        let weights = q
            .try_matmul(k)?
            .try_mul(1.0 / (dh as f32).sqrt())?
            .try_add(m)?
            .try_softmax::<Axis<3>>()?;
        let out = weights
            .try_matmul(v)?
            .try_permute::<_, Axes4<0, 2, 1, 3>>()?
            .try_reshape_like(&(self.members(), rows * sq, d))?;
        self.dense(&a.o, out)
    }

    /// `tok_emb[token] + pos_emb[position]` of every member, `[members, rows·len, d_model]`.
    fn embed<T: Tape<f32, D>>(
        &self,
        tokens: &Ids<D>,
        positions: &Ids<D>,
    ) -> Result<G3<D, T>, D::Err> {
        let (cfg, l) = (self.cfg, self.layout);
        let tok = self
            .p
            .stacked::<T>(l.tok_emb, cfg.vocab, cfg.d_model)?
            .try_gather(tokens.clone())?;
        let pos = self
            .p
            .stacked::<T>(l.pos_emb, cfg.seq_len, cfg.d_model)?
            .try_gather(positions.clone())?;
        let n = tokens.shape().0 / self.members();
        tok.try_add(pos)?
            .try_reshape_like(&(self.members(), n, cfg.d_model))
    }

    fn stack<T: Tape<f32, D>>(
        &self,
        s: &Stack,
        mut x: G3<D, T>,
        self_mask: &T3<D>,
        cross: Option<(G3<D, T>, &T3<D>)>,
    ) -> Result<G3<D, T>, D::Err> {
        // As in `super::Net::stack`: each use of the encoder output is a retaped clone, the
        // last takes the tape that produced it.
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

    /// Logits `[members, rows·len, vocab]`.
    fn logits<T: Tape<f32, D>>(&self, inp: &Inputs<D>) -> Result<G3<D, T>, D::Err> {
        let (cfg, l) = (self.cfg, self.layout);
        let x = self.embed::<T>(&inp.tokens, &inp.positions)?;
        let h = match (&inp.enc, &l.encoder) {
            (Some(e), Some(encoder)) => {
                let ex = self.embed::<T>(&e.tokens, &e.positions)?;
                let enc = self.stack(encoder, ex, &e.self_mask, None)?;
                self.stack(&l.decoder, x, &inp.self_mask, Some((enc, &e.cross_mask)))?
            }
            _ => self.stack(&l.decoder, x, &inp.self_mask, None)?,
        };
        // Tied head: logits = h·tok_embᵀ.
        let emb_t = self
            .p
            .mat::<T>(l.tok_emb, cfg.vocab, cfg.d_model)?
            .try_permute::<_, Axes3<0, 2, 1>>()?;
        h.try_matmul(emb_t)
    }
}

/// For each member (its parameters and a batch of positive weight, all batches of the same
/// rows), its weighted mean next-token loss and, in its part of `grads` (member-major, `n`
/// each), the gradient: what [`super::tensor_loss_and_grad`] gives each, within rounding.
pub(crate) fn group_loss_and_grad<D: Device<f32>>(
    dev: &D,
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[&[f32]],
    batches: &[&Batch],
    grads: &mut [&mut [f32]],
) -> Result<Vec<f32>, NnError> {
    for (p, b) in params.iter().zip(batches) {
        check(cfg, layout, p, b)?;
    }
    if batches.iter().any(|b| b.rows != batches[0].rows) {
        return Err(NnError::InvalidData(
            "the batches of a fused group have different numbers of rows".into(),
        ));
    }
    let mut run = || -> Result<Vec<f32>, D::Err> {
        let p = Params::load(dev, layout, params)?;
        let inp = Inputs::new(dev, cfg, batches)?;
        let net = Net { cfg, layout, p: &p };
        let (g, n) = (params.len(), inp.rows * inp.len);
        let per_member = net
            .logits::<OwnedTape<f32, D>>(&inp)?
            .try_reshape_like(&(g * n, cfg.vocab))?
            .try_log_softmax::<Axis<1>>()?
            .try_select(inp.targets.clone())?
            .try_mul(inp.scale.clone())?
            .try_reshape_like(&(g, n))?
            .try_sum::<(usize,), Axis<1>>()?;
        let values = per_member.as_vec();
        let loss = per_member.try_sum::<(), Axis<0>>()?;
        let mut all = loss.try_backward()?;
        for s in layout.store.slots() {
            let t = &p.slots[&s.offset];
            // A slot no op reached has no gradient entry: it gets zeros.
            all.try_alloc_for(t)?;
            let flat = all.get(t).as_vec();
            for (m, chunk) in flat.chunks_exact(s.len()).enumerate() {
                grads[m][s.range()].copy_from_slice(chunk);
            }
        }
        Ok(values)
    };
    run().map_err(device_err)
}
