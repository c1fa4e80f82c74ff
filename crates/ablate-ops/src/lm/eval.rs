//! `eval.lm`: a trained language model's held-out NLL, infilling and one-shot scores, via
//! `ablate-models`'s `lm` evaluation.

use ablate_cache::Metric;
use ablate_models::lm::{self, EvalError, Judge, LmMeta, Task, vocab};
use ablate_run::{OpContext, OpError, OpOutput, Progress};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::{artifact, model_error, read_split, runtime};

pub(crate) struct EvalLm {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvalLmParams {
    n: usize,
    seed: u64,
}

impl EvalLm {
    pub(crate) fn new() -> Self {
        EvalLm {
            schema: OpSchema {
                name: "eval.lm",
                version: 2,
                summary: "Evaluate the language model trained by its input on the held-out `val.txt` behind it: \
                          `val_nll` (next-token NLL per token of `n` validation windows, read as a causal LM), \
                          `infill_em` (the fraction of masked spans — μ=3, r=0.15 — that greedy decoding reproduces \
                          exactly), `oneshot_em` (exact match of greedy answers to one-shot copy / reverse / key-value \
                          lookup prompts — a worked example then a query — the mean of `oneshot_copy`, \
                          `oneshot_reverse`, `oneshot_lookup`). A model trained with mode tokens is prompted with the \
                          matching one ([NLU] for infilling, [S2S] for one-shot and NLL) and also measured with a wrong \
                          one (`*_wrong_mode`: [S2S] for infilling, [NLU] for one-shot) and with none (`*_no_mode`). \
                          A prompt is read the way the model's training fed the inputs of that task's paradigm (S for \
                          one-shot, R and X for infilling): causally — in the decoder of an encoder-decoder — where \
                          those denoisers are the causal LM alone (clm; sclm's one-shot), else as inputs (prefix-LM \
                          masking, or the encoder). Scoring and decoding run on the job's device (a GPU with \
                          `device: cuda`).",
                params: vec![
                    ParamSpec::with_default(
                        "n",
                        ParamType::positive_int(),
                        json!(200),
                        "examples per task (and validation windows for val_nll)",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "seed of the held-out examples (the same for every model, so all see the same questions)",
                    ),
                ],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                on_device: true,
                needs: (1, Some(1)),
            },
        }
    }
}

/// An evaluation's failure as the op's: the model core's as every op's, prompts that do not fit as
/// they are.
fn eval_error(e: EvalError) -> OpError {
    match e {
        EvalError::Nn(e) => model_error(e),
        other => OpError::msg(other.to_string()),
    }
}

impl Op for EvalLm {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: EvalLmParams = typed("eval.lm", ctx.job.params())?;
        let model = lm::Lm::load(&artifact(ctx, "model.safetensors")?).map_err(model_error)?;
        let meta_path = artifact(ctx, "lm.json")?;
        let meta: LmMeta = std::fs::read_to_string(&meta_path)
            .map_err(|e| OpError::with(format!("failed to read `{}`", meta_path.display()), e))
            .and_then(|s| {
                serde_json::from_str(&s).map_err(|e| {
                    OpError::with(
                        format!("`{}` is not a train.lm record", meta_path.display()),
                        e,
                    )
                })
            })?;
        let val = lm::token_stream(&read_split(&artifact(ctx, "val.txt")?)?);
        let rt = runtime(ctx)?;
        let judge = Judge::new(&model, &meta, &rt);
        let (arch, len) = (meta.arch, meta.seq_len);
        let total = if meta.mode_tokens { 3 } else { 1 };
        let mut metrics = vec![Metric::new("params", model.num_params() as f64)];
        // (suffix, lead token for generation tasks, lead for infilling)
        let mut leads = vec![("", vocab::S2S, vocab::NLU)];
        if meta.mode_tokens {
            leads.push(("_wrong_mode", vocab::NLU, vocab::S2S));
            leads.push(("_no_mode", vocab::BOS, vocab::BOS));
        } else {
            leads[0] = ("", vocab::BOS, vocab::BOS);
        }
        for (i, &(suffix, s_lead, r_lead)) in leads.iter().enumerate() {
            ctx.progress(Progress {
                step: i as u64,
                total,
                loss: None,
                message: Some(format!("scoring{}", suffix.replace('_', " "))),
            });
            if ctx.is_cancelled() {
                return Err(OpError::Cancelled);
            }
            if i == 0 {
                let windows =
                    lm::clm_examples(&val, p.n, arch, len, s_lead, p.seed).map_err(model_error)?;
                metrics.push(Metric::new(
                    "val_nll",
                    judge.nll(&windows).map_err(eval_error)?,
                ));
            }
            let infill =
                lm::infill_examples(&val, p.n, arch, len, r_lead, p.seed).map_err(model_error)?;
            metrics.push(Metric::new(
                format!("infill_em{suffix}"),
                judge.infill_em(&infill).map_err(eval_error)?,
            ));
            let mut sum = 0.0;
            for task in [Task::Copy, Task::Reverse, Task::Lookup] {
                let examples = lm::oneshot_examples(task, p.n, s_lead, p.seed);
                let em = judge.oneshot_em(&examples).map_err(eval_error)?;
                sum += em;
                if i == 0 {
                    metrics.push(Metric::new(format!("oneshot_{}", task.name()), em));
                }
            }
            metrics.push(Metric::new(format!("oneshot_em{suffix}"), sum / 3.0));
        }
        Ok(OpOutput {
            metrics,
            publish: Vec::new(),
            ..OpOutput::default()
        })
    }
}
