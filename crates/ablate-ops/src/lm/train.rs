//! `train.lm`: a byte-level transformer trained with a UL2 objective, via `ablate-models`'s
//! `lm` module.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use ablate_cache::{EntryStatus, Metric};
use ablate_models::lm::{
    self, Arch, Attention, LmConfig, LmMeta, LmTrainConfig, Objective, ObjectiveError,
    ObjectiveSpec, Reading, Sampler, vocab,
};
use ablate_models::{Array, Checkpoint, ExecOptions, NnError, Observer, StepLog, TrainState};
use ablate_results::{Column, ColumnData, Table};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Value};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::checkpoint;
use crate::support::{artifact, backend, model_error, read_split, training_progress};

pub(crate) struct TrainLm {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainLmParams {
    arch: Arch,
    attention: Attention,
    objective: ObjectiveSpec,
    mode_tokens: bool,
    span_scale: f64,
    s_target: f64,
    ul2_weights: Vec<f64>,
    d_model: usize,
    layers: usize,
    heads: usize,
    d_ff: usize,
    seq_len: usize,
    steps: usize,
    batch: usize,
    lr: f64,
    warmup: usize,
    weight_decay: f64,
    clip: f64,
    seed: u64,
}

impl TrainLm {
    pub(crate) fn new() -> Self {
        TrainLm {
            schema: OpSchema {
                name: "train.lm",
                version: 3,
                summary: "Train a byte-level transformer language model on its input's `train.txt` with a UL2 \
                          objective: `clm` (causal LM), `plm` (prefix LM), `sc` (span corruption μ=3, r=0.15), `sclm` \
                          (sc and clm 50/50), `ul2` (the mixture of 7 denoisers: R μ∈{3,8} r=0.15; X (μ,r) ∈ {(3,.5), \
                          (8,.5), (64,.15), (64,.5)}; S prefix LM; paradigm weights `ul2_weights`), or a list of \
                          denoisers `{denoiser: R|X|S|CLM, mu, r, target, weight}`. Every objective gets the same \
                          token budget: `steps` × `batch` sequences of `seq_len`. Writes `model.safetensors`, `lm.json` \
                          (the effective denoisers), `history.parquet` (per-step loss, lr, gradient norm).",
                params: vec![
                    ParamSpec::with_default(
                        "arch",
                        ParamType::Enum(Arch::NAMES),
                        json!("decoder"),
                        "decoder-only, or encoder-decoder (T5-style, `layers` blocks each)",
                    ),
                    ParamSpec::with_default(
                        "attention",
                        ParamType::Enum(Attention::NAMES),
                        json!("prefix"),
                        "decoder-only: the inputs attend bidirectionally (prefix LM) or causally; a `clm`-only objective is always causal (its inputs are just the lead token, and a model trained so reads prompts causally)",
                    ),
                    ParamSpec::with_default(
                        "objective",
                        ParamType::one_of(
                            ParamType::Enum(Objective::NAMES),
                            ParamType::list(ParamType::Any),
                        ),
                        json!("ul2"),
                        "a named objective, or a mixture: a list of {denoiser: R|X|S|CLM, mu, r, target, weight}",
                    ),
                    ParamSpec::with_default(
                        "mode_tokens",
                        ParamType::Bool,
                        json!(false),
                        "prepend the denoiser's mode token ([NLU] R, [NLG] X, [S2S] S) to its inputs",
                    ),
                    ParamSpec::with_default(
                        "span_scale",
                        ParamType::Float { min: 0.0, max: 1.0 },
                        json!(1.0),
                        "multiplies the X denoisers' span length μ (never below 3), fitting UL2's spans for 512-token inputs to shorter sequences, e.g. seq_len/512; R (and sc) keep μ",
                    ),
                    ParamSpec::with_default(
                        "s_target",
                        ParamType::Float {
                            min: 0.01,
                            max: 0.99,
                        },
                        json!(0.25),
                        "mean fraction of an S (prefix-LM) example that is target",
                    ),
                    ParamSpec::with_default(
                        "ul2_weights",
                        ParamType::list(ParamType::non_negative_float()),
                        json!([0.4, 0.4, 0.2]),
                        "the ul2 mixture's weights of its R, X and S denoisers",
                    ),
                    ParamSpec::with_default(
                        "d_model",
                        ParamType::positive_int(),
                        json!(64),
                        "model width",
                    ),
                    ParamSpec::with_default(
                        "layers",
                        ParamType::positive_int(),
                        json!(2),
                        "blocks per stack",
                    ),
                    ParamSpec::with_default(
                        "heads",
                        ParamType::positive_int(),
                        json!(4),
                        "attention heads",
                    ),
                    ParamSpec::with_default(
                        "d_ff",
                        ParamType::positive_int(),
                        json!(256),
                        "feed-forward width",
                    ),
                    ParamSpec::with_default(
                        "seq_len",
                        ParamType::Int { min: 16, max: 4096 },
                        json!(64),
                        "tokens per sequence (encoder and decoder each)",
                    ),
                    ParamSpec::with_default(
                        "steps",
                        ParamType::positive_int(),
                        json!(1000),
                        "optimiser steps",
                    ),
                    ParamSpec::with_default(
                        "batch",
                        ParamType::positive_int(),
                        json!(16),
                        "sequences per step",
                    ),
                    ParamSpec::with_default(
                        "lr",
                        ParamType::positive_float(),
                        json!(0.001),
                        "peak AdamW learning rate",
                    ),
                    ParamSpec::with_default(
                        "warmup",
                        ParamType::non_negative_int(),
                        json!(100),
                        "steps of linear warm-up (then cosine decay to 10%)",
                    ),
                    ParamSpec::with_default(
                        "weight_decay",
                        ParamType::non_negative_float(),
                        json!(0.0),
                        "decoupled (AdamW) weight decay of the matrices and embeddings",
                    ),
                    ParamSpec::with_default(
                        "clip",
                        ParamType::positive_float(),
                        json!(1.0),
                        "global gradient-norm clipping",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "initialisation and data-sampling seed",
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

/// Forwards progress, stops on cancellation, and keeps the log (the steps before a divergence
/// are the result of a diverged run).
struct StepObserver<'a, 'b> {
    ctx: &'a OpContext<'b>,
    log: Vec<StepLog<()>>,
}

impl Observer<()> for StepObserver<'_, '_> {
    fn on_step(&mut self, log: &StepLog<()>) -> ControlFlow<()> {
        self.log.push(*log);
        training_progress(self.ctx, log.step, log.steps, log.loss)
    }

    fn cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }
}

/// How often the per-step loss is also recorded as a stepped metric (the full log is in
/// `history.parquet`): about 100 points per run.
fn metric_stride(steps: usize) -> usize {
    steps.div_ceil(100).max(1)
}

impl Op for TrainLm {
    /// Its progress counts optimizer steps; it stops at a budget of them and resumes from its
    /// checkpoint (issue 24).
    fn budget_unit(&self) -> Option<&'static str> {
        Some("steps")
    }

    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn fusible(&self) -> &'static [&'static str] {
        FUSIBLE
    }

    /// On the CPU a group's members share the cores that `--jobs` would give them side by
    /// side, and measured no faster (`just bench --only sweeps`: a 16-member sweep 0.9× of
    /// `fuse: off`), so `auto` fuses the language models only on a GPU, where a group is one
    /// batched computation; `fuse: on` fuses them on the CPU too.
    fn fuses_by_default(&self, device: ablate_spec::Device) -> bool {
        matches!(device, ablate_spec::Device::Cuda(_))
    }

    fn run_group(&self, ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
        run_group(ctxs)
    }

    fn check_value(&self, param: &str, value: &Value) -> Result<(), String> {
        match (param, value) {
            ("objective", Value::Array(list)) => lm::custom_mixture(list)
                .map(drop)
                .map_err(|e| e.to_string()),
            // Only the count is checked here: the values' types are the schema's to report.
            ("ul2_weights", Value::Array(w)) => {
                let w: Vec<f64> = w.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect();
                lm::ul2_weights(&w).map(drop).map_err(|e| e.to_string())
            }
            _ => Ok(()),
        }
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        Member::prepare(ctx)?.train_alone(ctx)
    }
}

impl Member {
    /// Trains this instance on its own (a group of one takes this path too, so its checkpoint
    /// is read once).
    fn train_alone(mut self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let member = &mut self;
        let mut observer = StepObserver {
            ctx,
            log: member.log_so_far(),
        };
        let batch = member.p.batch;
        let span = lm::LmSpan {
            from: member.resumed.as_ref().map(|r| &r.state),
            stop: member.stop,
        };
        let sampler = &mut member.sampler;
        let trained = lm::train_lm_span(
            &member.cfg,
            &member.train,
            &member.exec,
            span,
            &mut |_step| sampler.next_batch(batch),
            &mut observer,
        );
        self.finish(ctx, observer.log, trained)
    }
}

/// The params of `train.lm` that the instances of one fused group may differ in (issue 23):
/// those that change values — the initialisation and data order, the data's objective, the
/// optimizer's replica — but no shape and not the step schedule. Instances whose other params
/// (`arch`, `d_model`, `layers`, `heads`, `d_ff`, `seq_len`, `steps`, `batch`, `warmup`) and
/// device agree train as one group in [`run_group`].
pub const FUSIBLE: &[&str] = &[
    "seed",
    "lr",
    "weight_decay",
    "clip",
    "objective",
    "attention",
    "mode_tokens",
    "span_scale",
    "s_target",
    "ul2_weights",
];

/// Runs the `train.lm` instances `ctxs` (one context each, in order) as fused groups: members
/// whose params differ only in [`FUSIBLE`] ones (and `tag`) and that run on the same device
/// train together through [`lm::train_lm_group`] on the most threads any of their contexts
/// grants; a group of one takes [`Op::run`]'s path. Each member reads its own params and
/// inputs, reports progress and is cancelled through its own context, and writes what
/// [`Op::run`] would write: the same files, byte for byte, and the same metrics and status.
pub fn run_group(ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
    let op = TrainLm::new();
    let mut out: Vec<Option<Result<OpOutput, OpError>>> = (0..ctxs.len()).map(|_| None).collect();
    let mut members: Vec<Option<Member>> = Vec::with_capacity(ctxs.len());
    for (i, ctx) in ctxs.iter().enumerate() {
        match Member::prepare(ctx) {
            Ok(m) => members.push(Some(m)),
            Err(e) => {
                out[i] = Some(Err(e));
                members.push(None);
            }
        }
    }
    // Sub-groups in order of their first member.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let Some(m) = m else { continue };
        let key = fusion_key(&ctxs[i], m);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    for (_, list) in groups {
        if let [i] = list[..] {
            let member = members[i].take().expect("each member in one group");
            out[i] = Some(member.train_alone(&ctxs[i]));
            continue;
        }
        let group: Vec<Member> = list
            .iter()
            .map(|&i| members[i].take().expect("each member in one group"))
            .collect();
        let ends = match train_group(ctxs, &list, group) {
            Ok(ends) => ends,
            // The group as a whole failed (its device, say): each member as alone, so each
            // ends with exactly its own result or error.
            Err(_) => list.iter().map(|&i| op.run(&ctxs[i])).collect(),
        };
        for (&i, end) in list.iter().zip(ends) {
            out[i] = Some(end);
        }
    }
    out.into_iter()
        .map(|o| o.expect("every member has a result"))
        .collect()
}

/// What members must share to train together: their params but the fusible ones (and `tag`,
/// which no op reads), and their device.
fn fusion_key(ctx: &OpContext<'_>, m: &Member) -> String {
    let shared: BTreeMap<&String, &Value> = ctx
        .job
        .params()
        .iter()
        .filter(|(k, _)| !FUSIBLE.contains(&k.as_str()) && k.as_str() != ablate_spec::TAG.name)
        .collect();
    // Members train together from one step to one step (early stopping, #24).
    format!(
        "{}|{:?}|{}..{}",
        serde_json::to_string(&shared).expect("params serialise"),
        m.exec.backend,
        m.start(),
        m.stop
    )
}

/// Trains the members `list` (indices into `ctxs`) as one group and finishes each; `Err`: the
/// group failed as a whole (nothing was written).
fn train_group(
    ctxs: &[OpContext<'_>],
    list: &[usize],
    mut group: Vec<Member>,
) -> Result<Vec<Result<OpOutput, OpError>>, NnError> {
    let first = &group[0];
    let (cfg, batch) = (first.cfg.clone(), first.p.batch);
    let exec = ExecOptions {
        threads: list.iter().map(|&i| ctxs[i].threads()).max().unwrap_or(1),
        backend: first.exec.backend,
    };
    let trains: Vec<LmTrainConfig> = group.iter().map(|m| m.train.clone()).collect();
    let mut observers: Vec<StepObserver<'_, '_>> = list
        .iter()
        .zip(&group)
        .map(|(&i, m)| StepObserver {
            ctx: &ctxs[i],
            log: m.log_so_far(),
        })
        .collect();
    let stop = group[0].stop;
    let resumed: Vec<Option<Resumed>> = group.iter_mut().map(|m| m.resumed.take()).collect();
    let from: Vec<Option<&TrainState>> = resumed
        .iter()
        .map(|r| r.as_ref().map(|r| &r.state))
        .collect();
    let trained = {
        let mut fns: Vec<_> = group
            .iter_mut()
            .map(|m| {
                let sampler = &mut m.sampler;
                move |_step: usize| sampler.next_batch(batch)
            })
            .collect();
        let mut batches: Vec<&mut dyn FnMut(usize) -> lm::Batch> = fns
            .iter_mut()
            .map(|f| f as &mut dyn FnMut(usize) -> lm::Batch)
            .collect();
        let mut watchers: Vec<&mut dyn Observer<()>> = observers
            .iter_mut()
            .map(|o| o as &mut dyn Observer<()>)
            .collect();
        lm::train_lm_group_span(
            &cfg,
            &trains,
            &exec,
            &from,
            stop,
            &mut batches,
            &mut watchers,
        )?
    };
    drop(from);
    for (m, r) in group.iter_mut().zip(resumed) {
        m.resumed = r;
    }
    Ok(group
        .into_iter()
        .zip(observers)
        .zip(trained)
        .zip(list)
        .map(|(((member, observer), trained), &i)| member.finish(&ctxs[i], observer.log, trained))
        .collect())
}

/// One instance read from its context: what it trains and on what.
struct Member {
    p: TrainLmParams,
    cfg: LmConfig,
    train: LmTrainConfig,
    meta: LmMeta,
    sampler: Sampler,
    exec: ExecOptions,
    /// What its checkpoint is tagged with.
    tag: String,
    /// The checkpoint it resumes from (its sampler already put where it stood).
    resumed: Option<Resumed>,
    /// The step it trains to: its budget's, or its last.
    stop: usize,
    /// Whether it stops at its budget before its end (then it leaves a checkpoint there).
    budgeted: bool,
}

/// A `train.lm` checkpoint: the training state after some steps and the log so far.
struct Resumed {
    state: TrainState,
    log: Vec<StepLog<()>>,
}

/// A `train.lm` checkpoint's state and log, checked against the run it would resume (`n`
/// parameters, `steps` in all); the data stream's position is returned for the sampler.
fn resumed_from(
    c: &Checkpoint,
    n: usize,
    steps: usize,
) -> Result<(Resumed, u64, Vec<u64>), String> {
    let state = c.state("", n)?;
    let at = c.u64s("log.step")?;
    let (loss, lr, norm) = (
        c.f32s("log.loss")?,
        c.f32s("log.lr")?,
        c.f32s("log.grad_norm")?,
    );
    let [rng] = c.u64s("sampler.rng")? else {
        return Err("its data stream's record is malformed".into());
    };
    let counts = c.u64s("sampler.counts")?.to_vec();
    if state.step != c.step as usize || state.step > steps || at.len() != state.step {
        return Err(format!(
            "it is at step {} with {} steps logged, which does not fit a run of {steps} steps",
            state.step,
            at.len()
        ));
    }
    if [loss.len(), lr.len(), norm.len()] != [at.len(); 3] {
        return Err("its log is malformed".into());
    }
    let log = (0..at.len())
        .map(|i| StepLog {
            step: at[i] as usize,
            steps,
            loss: loss[i],
            lr: lr[i],
            grad_norm: norm[i],
            stats: (),
        })
        .collect();
    Ok((Resumed { state, log }, *rng, counts))
}

impl Member {
    fn prepare(ctx: &OpContext<'_>) -> Result<Member, OpError> {
        let p: TrainLmParams = typed("train.lm", ctx.job.params())?;
        let mixture = lm::mixture_of(&p.objective, p.span_scale, p.s_target, &p.ul2_weights)
            .map_err(objective_error)?;
        // A causal-LM-only objective never has inputs beyond the lead token: no prefix masking.
        let prefix_attention = p.arch == Arch::Decoder && p.attention == Attention::Prefix;
        let prefix_lm =
            prefix_attention && Reading::of(&mixture, p.arch, true, &[]) == Reading::Inputs;
        let meta = LmMeta::new(p.arch, &mixture, prefix_attention, p.mode_tokens, p.seq_len);
        let cfg = LmConfig {
            arch: p.arch,
            vocab: vocab::VOCAB,
            d_model: p.d_model,
            layers: p.layers,
            heads: p.heads,
            d_ff: p.d_ff,
            seq_len: p.seq_len,
        };
        cfg.validate().map_err(model_error)?;
        let train = LmTrainConfig {
            steps: p.steps,
            batch: p.batch,
            lr: p.lr as f32,
            warmup: p.warmup,
            weight_decay: p.weight_decay as f32,
            clip: p.clip as f32,
            seed: p.seed,
        };
        let docs = read_split(&artifact(ctx, "train.txt")?)?;
        let sampler = Sampler::new(
            lm::token_stream(&docs),
            mixture,
            p.arch,
            p.seq_len,
            p.mode_tokens,
            prefix_lm,
            p.seed,
        )
        .map_err(model_error)?;
        let exec = ExecOptions {
            threads: ctx.threads(),
            backend: backend(ctx)?,
        };
        let tag = checkpoint::tag(ctx, "train.lm", exec.backend);
        let steps = p.steps as u64;
        // A budget below the run's length stops it there (early stopping, #24).
        let stop = ctx.budget().map_or(steps, |b| b.min(steps));
        let mut sampler = sampler;
        let n = lm::Lm::num_params_of(&cfg);
        let mut resumed = checkpoint::load(ctx, &tag, steps, |c| {
            let (r, rng, counts) = resumed_from(c, n, p.steps)?;
            // A checkpoint past the budget cannot be rewound: this run trains from the start
            // to the budget, and the further checkpoint stays for a longer run.
            if r.log.len() as u64 <= stop {
                sampler.resume(rng, &counts)?;
            }
            Ok(r)
        });
        if resumed.as_ref().is_some_and(|r| r.log.len() as u64 > stop) {
            resumed = None;
        }
        if let Some(r) = &resumed {
            checkpoint::say_resumed(ctx, r.log.len() as u64, steps, "step");
        }
        Ok(Member {
            p,
            cfg,
            train,
            meta,
            sampler,
            exec,
            tag,
            resumed,
            stop: stop as usize,
            budgeted: stop < steps,
        })
    }

    fn start(&self) -> usize {
        self.resumed.as_ref().map_or(0, |r| r.state.step)
    }

    fn log_so_far(&self) -> Vec<StepLog<()>> {
        self.resumed
            .as_ref()
            .map(|r| r.log.clone())
            .unwrap_or_default()
    }

    /// The checkpoint of this run stopped in `state` with `log`.
    fn checkpoint(&self, state: &TrainState, log: &[StepLog<()>]) -> Checkpoint {
        let mut c = Checkpoint::new(self.tag.clone(), state.step as u64);
        c.put_state("", state);
        let f32s = |f: fn(&StepLog<()>) -> f32| Array::F32(log.iter().map(f).collect());
        c.put(
            "log.step",
            Array::U64(log.iter().map(|l| l.step as u64).collect()),
        );
        c.put("log.loss", f32s(|l| l.loss));
        c.put("log.lr", f32s(|l| l.lr));
        c.put("log.grad_norm", f32s(|l| l.grad_norm));
        let (rng, counts) = self.sampler.position();
        c.put("sampler.rng", Array::U64(vec![rng]));
        c.put("sampler.counts", Array::U64(counts));
        c
    }

    /// Writes what a training run leaves (`log`: the steps its observer saw).
    fn finish(
        self,
        ctx: &OpContext<'_>,
        log: Vec<StepLog<()>>,
        trained: Result<(lm::Lm, Vec<StepLog<()>>, TrainState), NnError>,
    ) -> Result<OpOutput, OpError> {
        if let Ok((_, _, state)) = &trained {
            // Stopped at its budget: what a longer run resumes from (unless it is there
            // already, or the checkpoint left is further on).
            if self.budgeted && self.start() < state.step {
                checkpoint::save(ctx, &self.checkpoint(state, &log))?;
            }
        }
        let stopped_at = self.budgeted.then_some(self.stop as u64);
        let Member {
            p, meta, sampler, ..
        } = self;
        let out = ctx.out_dir();
        let stride = metric_stride(p.steps);
        let stepped = |log: &[StepLog<()>]| -> Vec<Metric> {
            log.iter()
                .filter(|l| l.step % stride == 0 || l.step == log.len())
                .map(|l| Metric::at_step("loss", l.step as u64, f64::from(l.loss)))
                .collect()
        };
        // `log` is the observer's: the resumed steps' and this run's, the whole curve.
        let model = match trained {
            Ok((model, ..)) => model,
            // A divergence is a result the executor keeps or fails by the stage's `diverged:`:
            // the steps before it are logged, and there is no model to save.
            Err(NnError::NonFiniteStep {
                step,
                loss,
                grad_norm,
            }) => {
                write_history(&out.join("history.parquet"), &log)?;
                let status = if loss.is_finite() {
                    EntryStatus::diverged("grad_norm", Some(step as u64), f64::from(grad_norm))
                } else {
                    EntryStatus::diverged("loss", Some(step as u64), f64::from(loss))
                };
                // Nothing of a diverged run is resumed.
                checkpoint::discard(ctx);
                return Ok(OpOutput {
                    metrics: stepped(&log),
                    publish: Vec::new(),
                    status,
                    stopped_at: None,
                });
            }
            Err(e) => return Err(model_error(e)),
        };

        let meta_json = serde_json::to_string_pretty(&meta).expect("plain data serialises");
        std::fs::write(out.join("lm.json"), &meta_json)
            .map_err(|e| OpError::with("failed to write `lm.json`", e))?;
        let file_meta = BTreeMap::from([("ablate.train".to_string(), meta_json)]);
        model
            .save(&out.join("model.safetensors"), &file_meta)
            .map_err(model_error)?;
        write_history(&out.join("history.parquet"), &log)?;

        let mut metrics = stepped(&log);
        // The final training loss: the mean of the last 5% of steps (one step is noisy); none
        // before the first step (a budget of 0).
        if !log.is_empty() {
            let tail = &log[log.len() - (log.len() / 20).max(1)..];
            let train_loss =
                tail.iter().map(|l| f64::from(l.loss)).sum::<f64>() / tail.len() as f64;
            metrics.push(Metric::new("train_loss", train_loss));
        }
        metrics.push(Metric::new("params", model.num_params() as f64));
        // The tokens trained on so far (all of them unless it stopped at its budget).
        metrics.push(Metric::new(
            "tokens",
            (log.len() * p.batch * p.seq_len) as f64,
        ));
        for ((name, weight), count) in meta.denoisers.iter().zip(sampler.counts()) {
            metrics.push(Metric::new(
                format!("sampled[{name} w={weight:.3}]"),
                *count as f64,
            ));
        }
        Ok(OpOutput {
            metrics,
            publish: Vec::new(),
            stopped_at,
            ..OpOutput::default()
        })
    }
}

/// An objective that cannot be built, as the op's error: a malformed one says what is wrong as
/// is; a named mixture's bad options are an invalid objective.
fn objective_error(e: ObjectiveError) -> OpError {
    match e {
        ObjectiveError::Invalid(message) => OpError::msg(message),
        ObjectiveError::Mixture(e) => OpError::with("invalid objective", e),
    }
}

fn write_history(path: &Path, log: &[StepLog<()>]) -> Result<(), OpError> {
    let float = |f: fn(&StepLog<()>) -> f32| {
        ColumnData::Float(log.iter().map(|l| Some(f64::from(f(l)))).collect())
    };
    let table = Table {
        columns: vec![
            Column {
                name: "step".into(),
                data: ColumnData::Int(log.iter().map(|l| Some(l.step as i64)).collect()),
            },
            Column {
                name: "loss".into(),
                data: float(|l| l.loss),
            },
            Column {
                name: "lr".into(),
                data: float(|l| l.lr),
            },
            Column {
                name: "grad_norm".into(),
                data: float(|l| l.grad_norm),
            },
        ],
    };
    ablate_results::write_table(path, &table)
        .map_err(|e| OpError::with("failed to write the training history", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objective's and `ul2_weights`'s checks run when the pipeline is loaded.
    #[test]
    fn a_bad_objective_is_refused_when_the_pipeline_is_loaded() {
        let op = TrainLm::new();
        assert!(
            op.check_value("objective", &json!([{"denoiser": "Q", "weight": 1}]))
                .is_err()
        );
        assert!(op.check_value("objective", &json!("ul2")).is_ok());
        assert!(op.check_value("ul2_weights", &json!([1, 2])).is_err());
    }

    #[test]
    fn about_a_hundred_loss_points_are_kept_as_metrics() {
        assert_eq!(metric_stride(50), 1);
        assert_eq!(metric_stride(100), 1);
        assert_eq!(metric_stride(3000), 30);
        assert_eq!(metric_stride(3001), 31);
    }
}

#[cfg(test)]
mod group_tests;
