//! The transformer language models of `train.lm` (UL2, Tay et al. 2022, at small scale).

use serde::{Deserialize, Serialize};

use crate::NnError;

spelled! {
    /// Decoder-only or encoder-decoder.
    pub enum Arch {
        /// One causal stack; a batch row may mark a leading prefix that attends bidirectionally
        /// (prefix-LM masking, [`super::Batch::prefix`]).
        Decoder = "decoder",
        /// An encoder (bidirectional over its valid tokens) and a causal decoder that also
        /// attends to the encoder's output (cross-attention), T5-style.
        EncDec = "encdec",
    }
}

spelled! {
    /// How a decoder-only model's inputs attend to each other in training (an encoder-decoder's
    /// encoder always reads its inputs bidirectionally).
    pub enum Attention {
        /// Bidirectionally: the prefix LM's masking.
        Prefix = "prefix",
        /// Causally, like the targets.
        Causal = "causal",
    }
}

/// The architecture of a language model. Every model here is this one network:
///
/// - Embeddings: `tok_emb` `[vocab, d_model]` (shared by encoder, decoder and the output head:
///   logits = h·tok_embᵀ, tied) and learned positions `pos_emb` `[seq_len, d_model]` (shared by
///   encoder and decoder). The input of a stack at position t is `tok_emb[token] + pos_emb[t]`.
///   The decoder counts positions from its start; the encoder from its end
///   ([`LmConfig::enc_position`]): its last valid token is always at `seq_len − 1`, so the
///   decoder finds where the input stops (where a prefix LM's continuation starts) at one fixed
///   position whatever the input's length, as a decoder-only model finds it next to itself.
/// - Pre-LN blocks: `x += Attn(LN1(x))` (self-attention), for an encdec decoder block then
///   `x += CrossAttn(LNx(x), enc)`, then `x += FF(LN2(x))`. `enc` is the encoder's output after
///   its final LayerNorm; each stack ends with a final LayerNorm (`ln_f`).
/// - LayerNorm over the last axis, eps 1e-5, gain and bias.
/// - Attention: `heads` heads of width `d_model / heads`; q = x·Wq + bq, k, v likewise (from the
///   encoder output for cross-attention), scores q·kᵀ/√(d_model/heads) plus a mask (masked
///   entries get exactly zero weight after the softmax), output concat(heads)·Wo + bo.
/// - FF: `gelu(x·W1 + b1)·W2 + b2` with the tanh approximation of GELU, `d_ff` hidden units.
/// - Weight matrices are stored `[in, out]` (y = x·W + b).
/// - Masks: decoder self-attention is causal, except that in the decoder-only arch the first
///   `prefix` positions of a row attend to each other in both directions (and, like every
///   position, to nothing after the prefix unless causal order allows); the encoder attends to
///   its `enc_len` valid positions (not to padding); cross-attention likewise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmConfig {
    pub arch: Arch,
    pub vocab: usize,
    pub d_model: usize,
    /// Blocks per stack (an encdec model has `layers` encoder and `layers` decoder blocks).
    pub layers: usize,
    pub heads: usize,
    pub d_ff: usize,
    /// The longest sequence a stack reads (the rows of `pos_emb`).
    pub seq_len: usize,
}

impl LmConfig {
    pub fn validate(&self) -> Result<(), NnError> {
        let bad = |msg: String| Err(NnError::InvalidConfig(msg));
        for (name, v) in [
            ("vocab", self.vocab),
            ("d_model", self.d_model),
            ("layers", self.layers),
            ("heads", self.heads),
            ("d_ff", self.d_ff),
            ("seq_len", self.seq_len),
        ] {
            if v == 0 {
                return bad(format!("`{name}` must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return bad(format!(
                "`d_model` ({}) must be a multiple of `heads` ({})",
                self.d_model, self.heads
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// The `pos_emb` row of encoder slot `j` in a row of `valid` tokens (`valid <= seq_len`):
    /// right-aligned, `seq_len − valid + j`, for the valid slots; the padding slots (`j >=
    /// valid`, never attended to) wrap around to `j − valid`.
    pub fn enc_position(&self, valid: usize, j: usize) -> usize {
        let valid = valid.min(self.seq_len);
        (self.seq_len - valid + j) % self.seq_len
    }
}

/// How `train_lm` optimises: AdamW (β = 0.9, 0.98, ε = 1e-8), the learning rate warmed up
/// linearly over `warmup` steps and then decayed by a cosine to 10 % of `lr` at `steps`,
/// global gradient-norm clipping at `clip`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmTrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f32,
    pub warmup: usize,
    pub weight_decay: f32,
    pub clip: f32,
    pub seed: u64,
}

impl LmTrainConfig {
    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f32 {
        self.schedule().at(step)
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> ablate_nn::Schedule {
        ablate_nn::Schedule::WarmupCosine {
            lr: self.lr,
            warmup: self.warmup,
            steps: self.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_positions_are_right_aligned() {
        let c = LmConfig {
            arch: Arch::EncDec,
            vocab: 10,
            d_model: 4,
            layers: 1,
            heads: 1,
            d_ff: 4,
            seq_len: 8,
        };
        let at = |valid: usize, width: usize| -> Vec<usize> {
            (0..width).map(|j| c.enc_position(valid, j)).collect()
        };
        assert_eq!(at(3, 5), [5, 6, 7, 0, 1]);
        assert_eq!(at(8, 8), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(at(0, 2), [0, 1]);
        assert_eq!(at(1, 1), [7]);
    }
}
