//! A language model: its config and parameters, scoring, greedy decoding, and the model file.

use std::collections::BTreeMap;
use std::path::Path;

use super::Batch;
use super::config::{Arch, LmConfig};
use super::cpu::{self, Runner, with_runner};
use super::layout::LmLayout;
use super::tensor::TensorScorer;
use super::vocab::BOS;
use crate::NnError;
use ablate_nn::catching;
use ablate_nn::safetensors::{self as model_file, FORMAT_KEY, ModelFile};
use ablate_nn::{Kind, Runtime};

/// Metadata key and value that mark a file as a language model.
const FORMAT: &str = "ablate-lm/2";
/// Metadata key holding the [`LmConfig`] as JSON.
const CONFIG_KEY: &str = "lm_config";

/// A transformer language model ([`LmConfig`]) with its parameters, flat in layout order.
#[derive(Clone, Debug, PartialEq)]
pub struct Lm {
    cfg: LmConfig,
    params: Vec<f32>,
}

impl Lm {
    /// A model initialised from `seed` as training starts it.
    pub fn init(cfg: &LmConfig, seed: u64) -> Result<Lm, NnError> {
        cfg.validate()?;
        let params = LmLayout::new(cfg).init(seed);
        Ok(Lm {
            cfg: cfg.clone(),
            params,
        })
    }

    pub(crate) fn from_parts(cfg: LmConfig, params: Vec<f32>) -> Result<Lm, NnError> {
        cfg.validate()?;
        let total = LmLayout::new(&cfg).total();
        if params.len() != total {
            return Err(NnError::InvalidConfig(format!(
                "{} parameters for a model of {total}",
                params.len()
            )));
        }
        Ok(Lm { cfg, params })
    }

    pub fn config(&self) -> &LmConfig {
        &self.cfg
    }

    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// The parameter count of a model of `cfg` (a valid config), without building one.
    pub fn num_params_of(cfg: &LmConfig) -> usize {
        super::layout::LmLayout::new(cfg).total()
    }

    /// The parameters, flat in layout order (`tok_emb`, `pos_emb`, the encoder, the decoder).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    fn layout(&self) -> LmLayout {
        LmLayout::new(&self.cfg)
    }

    /// `(Σ w·nll, Σ w)` over `batch`'s positions, forward only, on `rt`. On the CPU it does
    /// not depend on the thread count.
    pub fn nll(&self, batch: &Batch, rt: &Runtime) -> Result<(f64, f64), NnError> {
        cpu::check_batch(&self.cfg, batch)?;
        self.with_scorer(rt, |s| s.nll(batch))
    }

    /// Runs `body` with this model's parameters loaded on `rt`.
    fn with_scorer<R>(
        &self,
        rt: &Runtime,
        body: impl FnOnce(&mut dyn Scorer) -> Result<R, NnError>,
    ) -> Result<R, NnError> {
        let layout = self.layout();
        let (cfg, params) = (&self.cfg, &self.params[..]);
        match rt.kind() {
            Kind::Cpu { threads } => {
                with_runner(cfg, &layout, params.to_vec(), *threads, |r| body(r))
            }
            Kind::Dfdx(dev) => {
                catching(|| body(&mut TensorScorer::new(dev, cfg, &layout, params)?))
            }
            #[cfg(feature = "cuda")]
            Kind::Cuda { dev, .. } => {
                catching(|| body(&mut TensorScorer::new(dev, cfg, &layout, params)?))
            }
        }
    }

    /// The logits at every decoder position of `batch`, `rows × len × vocab` (one thread).
    pub fn logits(&self, batch: &Batch) -> Result<Vec<f32>, NnError> {
        cpu::cpu_logits(&self.cfg, &self.layout(), &self.params, batch)
    }

    /// Greedy decoding of every prompt in `inputs`, all rows batched per step.
    ///
    /// Decoder-only: row r reads `inputs[r] ++ generated` (prefix-LM masking over
    /// `inputs[r]` when `prefix_lm`, else causal) and appends the argmax at its last position.
    /// Encoder-decoder: the encoder reads `inputs[r]` once; the decoder reads
    /// `[BOS] ++ generated` (`prefix_lm` does not apply). A row stops after emitting a token in
    /// `stop` (which is kept), after `max_new` tokens, or when the sequence the model reads
    /// would no longer fit `seq_len`.
    pub fn generate(
        &self,
        inputs: &[Vec<u32>],
        prefix_lm: bool,
        max_new: usize,
        stop: &[u32],
        rt: &Runtime,
    ) -> Result<Vec<Vec<u32>>, NnError> {
        let cfg = &self.cfg;
        if cfg.arch == Arch::EncDec {
            let none = vec![Vec::new(); inputs.len()];
            return self.generate_in_decoder(inputs, &none, max_new, stop, rt);
        }
        let bad = |m: String| Err(NnError::InvalidData(m));
        self.check_prompts(inputs, cfg.seq_len, "a prompt")?;
        let mut out = vec![Vec::new(); inputs.len()];
        let stopped = |made: &[u32]| made.last().is_some_and(|t| stop.contains(t));
        if inputs.iter().any(|x| x.is_empty()) {
            return bad("decoder-only generation needs a non-empty prompt".into());
        }
        let fits = |r: usize, made: &[u32]| inputs[r].len() + made.len() < cfg.seq_len;
        let mut live: Vec<usize> = (0..inputs.len())
            .filter(|&r| max_new > 0 && fits(r, &[]))
            .collect();
        self.with_scorer(rt, |scorer| {
            let mut batch = Batch::default();
            let mut at = Vec::new();
            while !live.is_empty() {
                let len = live
                    .iter()
                    .map(|&r| inputs[r].len() + out[r].len())
                    .max()
                    .unwrap_or(0);
                fill(&mut batch, live.len(), len, 0, 0);
                at.clear();
                for (k, &r) in live.iter().enumerate() {
                    let row = &mut batch.tokens[k * len..(k + 1) * len];
                    let n = inputs[r].len();
                    row[..n].copy_from_slice(&inputs[r]);
                    row[n..n + out[r].len()].copy_from_slice(&out[r]);
                    batch.prefix[k] = if prefix_lm { n } else { 0 };
                    at.push(n + out[r].len() - 1);
                }
                let next = scorer.greedy(&batch, &at)?;
                for (k, &r) in live.iter().enumerate() {
                    out[r].push(next[k]);
                }
                live.retain(|&r| !stopped(&out[r]) && out[r].len() < max_new && fits(r, &out[r]));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Greedy decoding of an encoder-decoder whose decoder starts from a given text: the
    /// encoder reads `inputs[r]`, the decoder `[BOS] ++ dec[r] ++ generated` (how a model
    /// trained with the causal LM alone, whose encoder only ever read a lead token, reads a
    /// prompt). Stops as [`Lm::generate`] does; `generate` is this with every `dec[r]` empty.
    pub fn generate_in_decoder(
        &self,
        inputs: &[Vec<u32>],
        dec: &[Vec<u32>],
        max_new: usize,
        stop: &[u32],
        rt: &Runtime,
    ) -> Result<Vec<Vec<u32>>, NnError> {
        let cfg = &self.cfg;
        let bad = |m: String| Err(NnError::InvalidData(m));
        if cfg.arch != Arch::EncDec {
            return Err(NnError::InvalidConfig(
                "only an encoder-decoder reads a prompt in its decoder".into(),
            ));
        }
        if inputs.len() != dec.len() {
            return bad(format!(
                "{} encoder inputs for {} decoder prompts",
                inputs.len(),
                dec.len()
            ));
        }
        if cfg.vocab <= BOS as usize {
            return Err(NnError::InvalidConfig(format!(
                "encoder-decoder generation starts from BOS ({BOS}), outside the vocabulary of {}",
                cfg.vocab
            )));
        }
        self.check_prompts(inputs, cfg.seq_len, "a prompt")?;
        self.check_prompts(dec, cfg.seq_len - 1, "a decoder prompt (after BOS)")?;
        let n = inputs.len();
        let mut out = vec![Vec::new(); n];
        let stopped = |made: &[u32]| made.last().is_some_and(|t| stop.contains(t));
        let fits = |r: usize, made: &[u32]| 1 + dec[r].len() + made.len() < cfg.seq_len;
        let mut live: Vec<bool> = (0..n).map(|r| max_new > 0 && fits(r, &[])).collect();
        if n == 0 || !live.iter().any(|&l| l) {
            return Ok(out);
        }
        let s = inputs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut batch = Batch::default();
        fill(&mut batch, n, 1, s, BOS);
        for (r, x) in inputs.iter().enumerate() {
            batch.enc_tokens[r * s..r * s + x.len()].copy_from_slice(x);
            batch.enc_lens[r] = x.len();
        }
        self.with_scorer(rt, |scorer| {
            scorer.encode(&batch)?;
            let mut at = vec![0; n];
            while live.iter().any(|&l| l) {
                let len = (0..n)
                    .map(|r| 1 + dec[r].len() + out[r].len())
                    .max()
                    .unwrap_or(1);
                fill(&mut batch, n, len, s, 0);
                for (r, made) in out.iter().enumerate() {
                    let row = &mut batch.tokens[r * len..(r + 1) * len];
                    let k = dec[r].len();
                    row[0] = BOS;
                    row[1..1 + k].copy_from_slice(&dec[r]);
                    row[1 + k..1 + k + made.len()].copy_from_slice(made);
                    at[r] = k + made.len();
                }
                let next = scorer.greedy(&batch, &at)?;
                for r in 0..n {
                    if live[r] {
                        out[r].push(next[r]);
                        live[r] = !stopped(&out[r]) && out[r].len() < max_new && fits(r, &out[r]);
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every token of `seqs` in the vocabulary, and every sequence at most `max` tokens long
    /// (`what` names one in the error).
    fn check_prompts(&self, seqs: &[Vec<u32>], max: usize, what: &str) -> Result<(), NnError> {
        let vocab = self.cfg.vocab;
        if let Some(t) = seqs.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(NnError::InvalidData(format!(
                "token id {t} is outside the vocabulary of {vocab}"
            )));
        }
        if let Some(x) = seqs.iter().find(|x| x.len() > max) {
            return Err(NnError::InvalidData(format!(
                "{what} of {} tokens is longer than the {max} that the model's `seq_len` ({}) allows",
                x.len(),
                self.cfg.seq_len
            )));
        }
        Ok(())
    }

    /// Writes a safetensors file: one f32 tensor per layout slot, named as the slot, the
    /// [`LmConfig`] as JSON and `meta` in the metadata. Written to a temporary file, then
    /// renamed.
    pub fn save(&self, path: &Path, meta: &BTreeMap<String, String>) -> Result<(), NnError> {
        for key in [FORMAT_KEY, CONFIG_KEY] {
            if meta.contains_key(key) {
                return Err(NnError::InvalidConfig(format!(
                    "metadata key `{key}` is reserved for the model file's own use"
                )));
            }
        }
        let config =
            serde_json::to_string(&self.cfg).map_err(|e| NnError::format(path, e.to_string()))?;
        let mut all = meta.clone();
        all.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
        all.insert(CONFIG_KEY.to_string(), config);
        model_file::write(path, self.layout().store.file_slots(), &self.params, all)
    }

    /// Reads a file written by [`Lm::save`]; anything else is a `Format` error naming `path`.
    pub fn load(path: &Path) -> Result<Lm, NnError> {
        Self::load_with_meta(path).map(|(lm, _)| lm)
    }

    /// [`Lm::load`], also returning the metadata given to [`Lm::save`].
    pub fn load_with_meta(path: &Path) -> Result<(Lm, BTreeMap<String, String>), NnError> {
        let file = ModelFile::read(path, FORMAT)?;
        let cfg: LmConfig = file.config(CONFIG_KEY)?;
        cfg.validate()
            .map_err(|e| file.bad(format!("bad `{CONFIG_KEY}`: {e}")))?;
        let layout = LmLayout::new(&cfg);
        let params = file.params(layout.store.file_slots(), layout.total())?;
        let user = file
            .meta
            .into_iter()
            .filter(|(k, _)| k != FORMAT_KEY && k != CONFIG_KEY)
            .collect();
        Ok((Lm { cfg, params }, user))
    }
}

/// What scoring and greedy decoding need from a backend: the CPU runner, or a model loaded on
/// a dfdx device.
trait Scorer {
    /// `(Σ w·nll, Σ w)` of a checked batch.
    fn nll(&mut self, batch: &Batch) -> Result<(f64, f64), NnError>;
    /// Runs the encoder over `batch`'s encoder rows, kept for [`Scorer::greedy`].
    fn encode(&mut self, batch: &Batch) -> Result<(), NnError>;
    /// The argmax token at position `at[r]` of each row.
    fn greedy(&mut self, batch: &Batch, at: &[usize]) -> Result<Vec<u32>, NnError>;
}

impl Scorer for Runner<'_> {
    fn nll(&mut self, batch: &Batch) -> Result<(f64, f64), NnError> {
        Ok(Runner::nll(self, batch))
    }
    fn encode(&mut self, batch: &Batch) -> Result<(), NnError> {
        Runner::encode(self, batch);
        Ok(())
    }
    fn greedy(&mut self, batch: &Batch, at: &[usize]) -> Result<Vec<u32>, NnError> {
        Ok(Runner::greedy(self, batch, at))
    }
}

impl<D: dfdx::tensor_ops::Device<f32>> Scorer for TensorScorer<'_, D> {
    fn nll(&mut self, batch: &Batch) -> Result<(f64, f64), NnError> {
        TensorScorer::nll(self, batch)
    }
    fn encode(&mut self, batch: &Batch) -> Result<(), NnError> {
        TensorScorer::encode(self, batch)
    }
    fn greedy(&mut self, batch: &Batch, at: &[usize]) -> Result<Vec<u32>, NnError> {
        TensorScorer::greedy(self, batch, at)
    }
}

/// Resets `batch` to `rows` unweighted rows of `len` decoder tokens and `enc_len` encoder
/// tokens, all `fill` (0 for decoder-only prompts: padding after a row's end is never read).
fn fill(batch: &mut Batch, rows: usize, len: usize, enc_len: usize, fill: u32) {
    batch.rows = rows;
    batch.len = len;
    batch.tokens.clear();
    batch.tokens.resize(rows * len, fill);
    batch.targets.clear();
    batch.targets.resize(rows * len, 0);
    batch.weights.clear();
    batch.weights.resize(rows * len, 0.0);
    batch.prefix.clear();
    batch.prefix.resize(rows, 0);
    if enc_len > 0 && batch.enc_len != enc_len {
        batch.enc_len = enc_len;
        batch.enc_tokens.clear();
        batch.enc_tokens.resize(rows * enc_len, 0);
        batch.enc_lens.clear();
        batch.enc_lens.resize(rows, 0);
    }
}

#[cfg(test)]
mod tests;
