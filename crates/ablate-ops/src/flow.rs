//! `train.flow` and `eval.flow`: residual networks as flows (Rousseau et al.), via
//! `ablate-engine`.

use std::ops::ControlFlow;
use std::path::PathBuf;

use ablate_cache::Metric;
use ablate_engine::{
    Backend, EngineError, EpochReport, ExecOptions, Flow, FlowConfig, TrainConfig, TrainObserver,
    Weights,
};
use ablate_results::{Column, ColumnData, Table};
use ablate_run::{OpContext, OpError, OpOutput, Progress};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::data::read_dataset;
use crate::params::typed;
use crate::registry::Op;

pub(crate) struct TrainFlow {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainParams {
    weights: Weights,
    steps: usize,
    h: Option<f64>,
    dim: usize,
    hidden: usize,
    epochs: usize,
    batch: usize,
    lr: f64,
    seed: u64,
}

impl TrainFlow {
    pub(crate) fn new() -> Self {
        TrainFlow {
            schema: OpSchema {
                name: "train.flow",
                version: 1,
                summary: "Train a residual-flow classifier on the points of its input: a linear lift to `dim` (when \
                          `dim` differs from the data's), `steps` residual steps x ← x + h·v(x) with v a one-hidden-layer \
                          tanh MLP (one field shared by all steps, or one per step), a linear head; Adam on softmax \
                          cross-entropy. Writes `model.safetensors` and `history.parquet`; logs loss/acc per epoch.",
                params: vec![
                    ParamSpec::with_default(
                        "weights",
                        ParamType::Enum(&["shared", "unshared"]),
                        json!("shared"),
                        "one velocity field for all steps (stationary flow) or one per step (time-varying)",
                    ),
                    ParamSpec::with_default(
                        "steps",
                        ParamType::positive_int(),
                        json!(4),
                        "residual steps N",
                    ),
                    ParamSpec::with_default(
                        "h",
                        ParamType::optional(ParamType::positive_float()),
                        json!(null),
                        "step size; null means 1/N",
                    ),
                    ParamSpec::with_default(
                        "dim",
                        ParamType::positive_int(),
                        json!(2),
                        "width of the flow (the lift's output)",
                    ),
                    ParamSpec::with_default(
                        "hidden",
                        ParamType::positive_int(),
                        json!(16),
                        "hidden units of each velocity field",
                    ),
                    ParamSpec::with_default(
                        "epochs",
                        ParamType::positive_int(),
                        json!(100),
                        "passes over the training set",
                    ),
                    ParamSpec::with_default(
                        "batch",
                        ParamType::positive_int(),
                        json!(128),
                        "minibatch size",
                    ),
                    ParamSpec::with_default(
                        "lr",
                        ParamType::positive_float(),
                        json!(0.01),
                        "Adam learning rate",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "initialisation and shuffling seed",
                    ),
                ],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                needs: (1, Some(1)),
            },
        }
    }
}

/// Collects the per-epoch log, forwards progress, and stops on cancellation.
struct Observer<'a, 'b> {
    ctx: &'a OpContext<'b>,
    history: Vec<(u64, f64, f64)>,
}

impl TrainObserver for Observer<'_, '_> {
    fn on_epoch(&mut self, r: &EpochReport) -> ControlFlow<()> {
        self.history
            .push((r.epoch as u64, f64::from(r.loss), f64::from(r.acc)));
        self.ctx.progress(Progress {
            step: r.epoch as u64,
            total: r.epochs as u64,
            loss: Some(f64::from(r.loss)),
            message: None,
        });
        if self.ctx.is_cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }
}

fn artifact(ctx: &OpContext<'_>, name: &str) -> Result<PathBuf, OpError> {
    ctx.find_artifact(name).ok_or_else(|| {
        OpError::msg(format!(
            "no input of `{}` (nor their inputs) has a `{name}`; check its `needs`",
            ctx.job.stage
        ))
    })
}

fn engine_error(e: EngineError) -> OpError {
    match e {
        EngineError::Cancelled => OpError::Cancelled,
        EngineError::NonFinite { epoch, batch } => OpError::msg(format!(
            "training diverged: the loss is not finite at epoch {epoch}, batch {batch}; try a smaller `lr` or `h`"
        )),
        other => OpError::with("the engine failed", other),
    }
}

impl Op for TrainFlow {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: TrainParams = typed("train.flow", ctx.job.params())?;
        let data = read_dataset(&artifact(ctx, "train.parquet")?, None)?;
        let config = FlowConfig {
            in_dim: data.dim,
            classes: data.classes,
            dim: p.dim,
            hidden: p.hidden,
            steps: p.steps,
            h: p.h.unwrap_or(1.0 / p.steps as f64) as f32,
            weights: p.weights,
            form: ablate_engine::Form::C1,
            integrator: ablate_engine::Integrator::Euler,
            activation: ablate_engine::Activation::Tanh,
        };
        let train = TrainConfig {
            epochs: p.epochs,
            batch: p.batch,
            lr: p.lr as f32,
            seed: p.seed,
            weight_decay: 0.0,
            lipschitz: None,
        };
        let mut observer = Observer {
            ctx,
            history: Vec::new(),
        };
        // Results do not depend on the thread count (fixed shards summed in order), so threads
        // stay out of the key.
        let exec = ExecOptions {
            threads: ctx.threads(),
            backend: Backend::Cpu,
        };
        let flow = ablate_engine::train_flow_with(&config, &train, &data, &exec, &mut observer)
            .map_err(engine_error)?;
        flow.save(&ctx.out_dir().join("model.safetensors"))
            .map_err(engine_error)?;

        let h = &observer.history;
        let table = Table {
            columns: vec![
                Column {
                    name: "epoch".into(),
                    data: ColumnData::Int(h.iter().map(|r| Some(r.0 as i64)).collect()),
                },
                Column {
                    name: "loss".into(),
                    data: ColumnData::Float(h.iter().map(|r| Some(r.1)).collect()),
                },
                Column {
                    name: "acc".into(),
                    data: ColumnData::Float(h.iter().map(|r| Some(r.2)).collect()),
                },
            ],
        };
        ablate_results::write_table(&ctx.out_dir().join("history.parquet"), &table)
            .map_err(|e| OpError::with("failed to write the training history", e))?;

        let mut metrics = Vec::with_capacity(2 * h.len() + 3);
        for &(epoch, loss, acc) in h {
            metrics.push(Metric::at_step("loss", epoch, loss));
            metrics.push(Metric::at_step("acc", epoch, acc));
        }
        if let Some(&(_, loss, acc)) = h.last() {
            metrics.push(Metric::new("train_loss", loss));
            metrics.push(Metric::new("train_acc", acc));
        }
        metrics.push(Metric::new("params", flow.num_params() as f64));
        Ok(OpOutput {
            metrics,
            publish: Vec::new(),
        })
    }
}

pub(crate) struct EvalFlow {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvalParams {}

impl EvalFlow {
    pub(crate) fn new() -> Self {
        EvalFlow {
            schema: OpSchema {
                name: "eval.flow",
                version: 1,
                summary: "Evaluate the flow trained by its input on the test split of the data behind it: `test_acc`, \
                          `test_loss` (mean cross-entropy), `params`.",
                params: vec![],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                needs: (1, Some(1)),
            },
        }
    }
}

impl Op for EvalFlow {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let _: EvalParams = typed("eval.flow", ctx.job.params())?;
        let flow = Flow::load(&artifact(ctx, "model.safetensors")?).map_err(engine_error)?;
        let test = read_dataset(&artifact(ctx, "test.parquet")?, Some(flow.config().classes))?;
        let eval = flow.evaluate(&test).map_err(engine_error)?;
        Ok(OpOutput {
            metrics: vec![
                Metric::new("test_acc", eval.acc),
                Metric::new("test_loss", eval.loss),
                Metric::new("params", flow.num_params() as f64),
            ],
            publish: Vec::new(),
        })
    }
}
