//! How a trained language model is prompted and scored (`eval.lm`): the way it reads a prompt,
//! the record of its training that says so (`lm.json`), and the scorer over a [`Runtime`].

use serde::{Deserialize, Serialize};

use super::config::Arch;
use super::denoise::{Denoiser, Example, Mixture, pack};
use super::model::Lm;
use super::tasks::{oneshot_correct, score_infill};
use super::vocab::{self, Mode};
use crate::{NnError, Runtime};

/// How a model reads a prompt at evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reading {
    /// As a text to continue: causally in a decoder-only model; in an encoder-decoder's decoder,
    /// its encoder reading the lead token alone.
    Causal,
    /// As inputs: bidirectionally in a decoder-only model (prefix-LM masking); in an
    /// encoder-decoder's encoder.
    Inputs,
}

impl Reading {
    /// A model reads a task's prompt the way its training fed the inputs of the denoisers of the
    /// task's paradigm (`modes`): causally if those are all the causal LM (whose input is the lead
    /// token alone, the text being the target), else as inputs. A mixture without denoisers of
    /// that paradigm reads it the way all its denoisers fed theirs. A decoder-only model trained
    /// without prefix masking reads everything causally.
    pub fn of(mixture: &Mixture, arch: Arch, prefix_attention: bool, modes: &[Mode]) -> Reading {
        if arch == Arch::Decoder && !prefix_attention {
            return Reading::Causal;
        }
        let all: Vec<&Denoiser> = mixture.entries().iter().map(|(d, _)| d).collect();
        let of_task: Vec<&Denoiser> = all
            .iter()
            .copied()
            .filter(|d| modes.contains(&d.mode()))
            .collect();
        let fed = if of_task.is_empty() { all } else { of_task };
        if fed.iter().all(|d| matches!(d, Denoiser::Causal)) {
            Reading::Causal
        } else {
            Reading::Inputs
        }
    }
}

/// What an evaluation needs to know about how a model was trained (`lm.json` beside the model,
/// and the model file's `ablate.train` metadata). The field order is the file's: changing it
/// changes every trained model's bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct LmMeta {
    pub arch: Arch,
    /// How one-shot (generation) prompts are read: as the model's S denoisers read theirs.
    pub generation: Reading,
    /// How infilling prompts are read: as the model's R and X denoisers read theirs.
    pub infilling: Reading,
    pub mode_tokens: bool,
    pub seq_len: usize,
    /// The effective denoisers (μ after `span_scale`) and their weights.
    pub denoisers: Vec<(String, f64)>,
}

impl LmMeta {
    /// The record of a model of `arch` trained on `mixture` (`prefix_attention`: a decoder-only
    /// model's inputs attend bidirectionally).
    pub fn new(
        arch: Arch,
        mixture: &Mixture,
        prefix_attention: bool,
        mode_tokens: bool,
        seq_len: usize,
    ) -> LmMeta {
        LmMeta {
            arch,
            generation: Reading::of(mixture, arch, prefix_attention, &[Mode::S]),
            infilling: Reading::of(mixture, arch, prefix_attention, &[Mode::R, Mode::X]),
            mode_tokens,
            seq_len,
            denoisers: mixture.describe(),
        }
    }
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Nn(#[from] NnError),
    /// The one-shot tasks do not fit the model's sequences.
    #[error(
        "the one-shot prompts and answers take up to {need} tokens, more than the model's `seq_len` {seq_len}; \
         train it with `seq_len: 64` or more"
    )]
    PromptTooLong { need: usize, seq_len: usize },
}

/// A loaded model and how to prompt it.
pub struct Judge<'a> {
    model: &'a Lm,
    meta: &'a LmMeta,
    rt: &'a Runtime,
}

/// Rows scored or decoded at once.
const EVAL_BATCH: usize = 64;

impl<'a> Judge<'a> {
    pub fn new(model: &'a Lm, meta: &'a LmMeta, rt: &'a Runtime) -> Self {
        Judge { model, meta, rt }
    }

    /// The mean next-token NLL per target token of causal windows.
    pub fn nll(&self, examples: &[Example]) -> Result<f64, EvalError> {
        let (mut sum, mut count) = (0.0, 0.0);
        for chunk in examples.chunks(EVAL_BATCH) {
            // Causal windows: the input is the lead token alone, so no masking differs.
            let batch = pack(chunk, self.meta.arch, self.meta.seq_len, false);
            let (s, c) = self.model.nll(&batch, self.rt)?;
            sum += s;
            count += c;
        }
        Ok(sum / count.max(1.0))
    }

    /// Greedy answers to each example's inputs (read as `reading` says), stopping at `stop`.
    fn generate(
        &self,
        examples: &[Example],
        reading: Reading,
        stop: &[u32],
    ) -> Result<Vec<Vec<u32>>, EvalError> {
        let mut out = Vec::with_capacity(examples.len());
        for chunk in examples.chunks(EVAL_BATCH) {
            let inputs: Vec<Vec<u32>> = chunk.iter().map(|e| e.inputs.clone()).collect();
            let max_new = chunk.iter().map(|e| e.targets.len()).max().unwrap_or(1) + 2;
            let in_decoder = self.meta.arch == Arch::EncDec && reading == Reading::Causal;
            let generated = if in_decoder {
                // inputs = lead ++ prompt: the lead goes to the encoder, the rest to the decoder.
                let (leads, prompts): (Vec<Vec<u32>>, Vec<Vec<u32>>) = inputs
                    .iter()
                    .map(|x| {
                        let (lead, rest) = x.split_at(x.len().min(1));
                        (lead.to_vec(), rest.to_vec())
                    })
                    .unzip();
                self.model
                    .generate_in_decoder(&leads, &prompts, max_new, stop, self.rt)
            } else {
                let prefix_lm = reading == Reading::Inputs;
                self.model
                    .generate(&inputs, prefix_lm, max_new, stop, self.rt)
            };
            out.extend(generated?);
        }
        Ok(out)
    }

    /// The fraction of masked spans that greedy decoding reproduces exactly.
    pub fn infill_em(&self, examples: &[Example]) -> Result<f64, EvalError> {
        let generated = self.generate(examples, self.meta.infilling, &[vocab::EOS])?;
        let (mut right, mut total) = (0, 0);
        for (e, g) in examples.iter().zip(&generated) {
            let (r, t) = score_infill(&e.targets, g);
            right += r;
            total += t;
        }
        Ok(right as f64 / total.max(1) as f64)
    }

    /// The fraction of one-shot prompts answered exactly.
    pub fn oneshot_em(&self, examples: &[Example]) -> Result<f64, EvalError> {
        let need = examples
            .iter()
            .map(|e| e.inputs.len() + e.targets.len())
            .max()
            .unwrap_or(0);
        if need > self.meta.seq_len {
            return Err(EvalError::PromptTooLong {
                need,
                seq_len: self.meta.seq_len,
            });
        }
        let generated = self.generate(
            examples,
            self.meta.generation,
            &[u32::from(b'\n'), vocab::EOS],
        )?;
        let right = examples
            .iter()
            .zip(&generated)
            .filter(|(e, g)| oneshot_correct(&e.targets, g))
            .count();
        Ok(right as f64 / examples.len().max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::{MixtureOptions, Objective};

    #[test]
    fn prompts_are_read_as_the_tasks_denoisers_fed_their_inputs() {
        use Reading::{Causal, Inputs};
        let opts = MixtureOptions::default();
        let read = |name: &str, arch: Arch, prefix: bool| {
            let m = Objective::from_name(name).unwrap().mixture(&opts).unwrap();
            (
                Reading::of(&m, arch, prefix, &[Mode::S]),
                Reading::of(&m, arch, prefix, &[Mode::R, Mode::X]),
            )
        };
        // (objective, (one-shot, infilling)) for an encoder-decoder and a prefix-LM decoder.
        let want = [
            ("clm", (Causal, Causal)),
            ("plm", (Inputs, Inputs)),
            ("sc", (Inputs, Inputs)),
            ("sclm", (Causal, Inputs)),
            ("ul2", (Inputs, Inputs)),
        ];
        for (name, w) in want {
            assert_eq!(read(name, Arch::EncDec, false), w, "{name} encdec");
            assert_eq!(read(name, Arch::Decoder, true), w, "{name} decoder");
            // A decoder trained without prefix masking reads everything causally.
            assert_eq!(read(name, Arch::Decoder, false), (Causal, Causal), "{name}");
        }
        // A custom mixture with both S denoisers reads one-shot prompts as inputs.
        let both = Mixture::custom(vec![
            (Denoiser::Causal, 1.0),
            (Denoiser::Prefix { mean_target: 0.25 }, 1.0),
        ])
        .unwrap();
        assert_eq!(Reading::of(&both, Arch::EncDec, false, &[Mode::S]), Inputs);
    }

    /// `lm.json` is also the model file's metadata: its bytes are part of every trained
    /// model's, so the record of an `sclm` encoder-decoder is pinned as written before #22.
    #[test]
    fn the_training_record_keeps_its_bytes() {
        let m = Objective::Sclm.mixture(&MixtureOptions::default()).unwrap();
        let meta = LmMeta::new(Arch::EncDec, &m, true, false, 64);
        let want = r#"{
  "arch": "encdec",
  "generation": "causal",
  "infilling": "inputs",
  "mode_tokens": false,
  "seq_len": 64,
  "denoisers": [
    [
      "R(μ=3, r=0.15)",
      0.5
    ],
    [
      "CLM",
      0.5
    ]
  ]
}"#;
        assert_eq!(serde_json::to_string_pretty(&meta).unwrap(), want);
        let back: LmMeta = serde_json::from_str(want).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), want);
    }
}
