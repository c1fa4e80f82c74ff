//! The one place that knows every parameter of a language model: names, shapes, offsets into
//! the flat parameter vector, initialisation. Both backends read parameters through it.

use super::config::{Arch, LmConfig};
use ablate_nn::{Init, Layout};

pub(crate) use ablate_nn::{Dense, Norm};

/// Multi-head attention: queries from one stream, keys and values from another (the same one
/// for self-attention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attention {
    pub q: Dense,
    pub k: Dense,
    pub v: Dense,
    pub o: Dense,
}

/// One pre-LN block; `cross` only in an encdec decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub ln1: Norm,
    pub attn: Attention,
    pub cross: Option<(Norm, Attention)>,
    pub ln2: Norm,
    pub ff1: Dense,
    pub ff2: Dense,
}

/// A stack of blocks and its final LayerNorm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stack {
    pub blocks: Vec<Block>,
    pub ln_f: Norm,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LmLayout {
    pub tok_emb: usize,
    pub pos_emb: usize,
    /// encdec only.
    pub encoder: Option<Stack>,
    pub decoder: Stack,
    /// The slots, in the order [`LmLayout::new`] describes.
    pub store: Layout,
}

/// Every weight matrix and embedding starts uniform with standard deviation 0.02 (GPT-2's
/// N(0, 0.02) in variance, drawn uniformly so the draw depends only on the seed) and is decayed.
fn std002() -> Init {
    Init::uniform_std(0.02)
}

struct Builder {
    store: Layout,
}

impl Builder {
    fn norm(&mut self, name: &str, d: usize) -> Norm {
        self.store.norm(name, d)
    }
    fn dense(&mut self, name: &str, inp: usize, out: usize) -> Dense {
        self.store.dense(name, inp, out, std002(), Init::Zeros)
    }
    fn attention(&mut self, name: &str, d: usize) -> Attention {
        Attention {
            q: self.dense(&format!("{name}.q"), d, d),
            k: self.dense(&format!("{name}.k"), d, d),
            v: self.dense(&format!("{name}.v"), d, d),
            o: self.dense(&format!("{name}.o"), d, d),
        }
    }
    fn stack(&mut self, name: &str, cfg: &LmConfig, cross: bool) -> Stack {
        let d = cfg.d_model;
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = format!("{name}.{i}");
                Block {
                    ln1: self.norm(&format!("{p}.ln1"), d),
                    attn: self.attention(&format!("{p}.attn"), d),
                    cross: cross.then(|| {
                        (
                            self.norm(&format!("{p}.lnx"), d),
                            self.attention(&format!("{p}.cross"), d),
                        )
                    }),
                    ln2: self.norm(&format!("{p}.ln2"), d),
                    ff1: self.dense(&format!("{p}.ff1"), d, cfg.d_ff),
                    ff2: self.dense(&format!("{p}.ff2"), cfg.d_ff, d),
                }
            })
            .collect();
        Stack {
            blocks,
            ln_f: self.norm(&format!("{name}.ln_f"), d),
        }
    }
}

impl LmLayout {
    /// Slot order: `tok_emb`, `pos_emb`, the encoder (`enc.{i}.…`, `enc.ln_f`) when encdec, then
    /// the decoder (`dec.{i}.ln1`, `.attn.{q,k,v,o}`, [`.lnx`, `.cross.{q,k,v,o}`], `.ln2`,
    /// `.ff1`, `.ff2`, then `dec.ln_f`); each dense layer is `.weight` (`[out, inp]`) then `.bias`, each norm `.g`, `.b`.
    pub(crate) fn new(cfg: &LmConfig) -> LmLayout {
        let mut b = Builder {
            store: Layout::new(),
        };
        let tok_emb = b
            .store
            .push("tok_emb", &[cfg.vocab, cfg.d_model], std002(), true);
        let pos_emb = b
            .store
            .push("pos_emb", &[cfg.seq_len, cfg.d_model], std002(), true);
        let encoder = (cfg.arch == Arch::EncDec).then(|| b.stack("enc", cfg, false));
        let decoder = b.stack("dec", cfg, cfg.arch == Arch::EncDec);
        LmLayout {
            tok_emb,
            pos_emb,
            encoder,
            decoder,
            store: b.store,
        }
    }

    /// The number of parameters.
    pub(crate) fn total(&self) -> usize {
        self.store.total()
    }

    /// Fresh parameters: one seeded stream drawn in slot order, each dense weight (`[out, inp]`)
    /// in the row-major order of its transpose — the `[inp, out]` layout these models were
    /// first stored in — so that a seed gives the same model as before the layout became the
    /// core's (and the results in docs/papers.md stay what the pipelines compute).
    pub(crate) fn init(&self, seed: u64) -> Vec<f32> {
        let mut p = self.store.init(seed, STREAM_LM_INIT);
        let dense = self
            .store
            .slots()
            .iter()
            .filter(|s| s.name.ends_with(".weight"));
        for s in dense {
            let (out, inp) = (s.shape[0], s.shape[1]);
            let drawn = p[s.range()].to_vec();
            for (o, row) in p[s.range()].chunks_exact_mut(inp).enumerate() {
                for (i, v) in row.iter_mut().enumerate() {
                    *v = drawn[i * out + o];
                }
            }
        }
        p
    }
}

/// [`ablate_nn::rng::SplitMix64`] stream ids of a language model's seed.
pub(crate) const STREAM_LM_INIT: u64 = 11;
#[allow(dead_code)] // the data side's streams
pub(crate) const STREAM_LM_DATA: u64 = 12;
#[allow(dead_code)]
pub(crate) const STREAM_LM_EVAL: u64 = 13;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(arch: Arch) -> LmConfig {
        LmConfig {
            arch,
            vocab: 10,
            d_model: 8,
            layers: 2,
            heads: 2,
            d_ff: 16,
            seq_len: 6,
        }
    }

    #[test]
    fn slots_tile_the_vector_and_count_parameters() {
        for arch in [Arch::Decoder, Arch::EncDec] {
            let l = LmLayout::new(&cfg(arch));
            let mut at = 0;
            for s in l.store.slots() {
                assert_eq!(s.offset, at, "{}", s.name);
                at += s.len();
            }
            assert_eq!(at, l.total());
            // attention 4·(64+8) + 2 norms·16 + ff (128+16) + (128+8) = 288 + 32 + 280 = 600
            let block = 600;
            let emb = 10 * 8 + 6 * 8;
            let expect = match arch {
                Arch::Decoder => emb + 2 * block + 16,
                Arch::EncDec => emb + 2 * block + 16 + 2 * (block + 16 + 288) + 16,
            };
            assert_eq!(l.total(), expect, "{arch:?}");
        }
    }

    #[test]
    fn init_is_seeded_and_norms_start_at_identity() {
        let l = LmLayout::new(&cfg(Arch::Decoder));
        let (a, b) = (l.init(1), l.init(1));
        assert_eq!(a, b);
        assert_ne!(a, l.init(2));
        let ln = l.decoder.ln_f;
        assert!(a[ln.g..ln.g + 8].iter().all(|&v| v == 1.0));
        assert!(a[ln.b..ln.b + 8].iter().all(|&v| v == 0.0));
        let w = &a[l.tok_emb..l.tok_emb + 80];
        let var = w.iter().map(|v| v * v).sum::<f32>() / 80.0;
        assert!((var.sqrt() - 0.02).abs() < 0.006, "std {}", var.sqrt());
    }
}
