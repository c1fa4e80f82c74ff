//! `train.flow` and `eval.flow`: residual networks as flows (Rousseau et al.), via
//! `ablate-models`.

use std::ops::ControlFlow;

use ablate_cache::{EntryStatus, Metric};
use ablate_models::{
    Accuracy, Activation, EpochLog, ExecOptions, Flow, FlowConfig, Form, Integrator, NnError,
    Observer, TrainConfig, Weights,
};
use ablate_results::{Column, ColumnData, Table};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::{
    artifact, backend, model_error, probe_points, read_dataset, runtime, training_progress,
};

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
    form: Form,
    integrator: Integrator,
    activation: Activation,
    weight_decay: f64,
    lipschitz: Option<f64>,
}

impl TrainFlow {
    pub(crate) fn new() -> Self {
        TrainFlow {
            schema: OpSchema {
                name: "train.flow",
                version: 2,
                summary: "Train a residual-flow classifier on the points of its input: a linear lift to `dim` (when \
                          `dim` differs from the data's), `steps` layers of a velocity field v (a one-hidden-layer MLP; \
                          one field shared by all steps, or one per step) — residual integrator steps x ← x + h·Φ(x) \
                          (form c1), plain layers x ← v(x) (c0) or second-order steps (c2) — and a linear head; Adam on \
                          softmax cross-entropy. Writes `model.safetensors` and `history.parquet`; logs loss/acc per epoch.",
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
                    ParamSpec::with_default(
                        "form",
                        ParamType::Enum(&["c1", "c0", "c2"]),
                        json!("c1"),
                        "c1: x ← x + h·Φ(x) (residual); c0: x ← v(x) (plain layers); c2: x' = 2x − x₋ + h²·v(x)",
                    ),
                    ParamSpec::with_default(
                        "integrator",
                        ParamType::Enum(&["euler", "midpoint", "rk4"]),
                        json!("euler"),
                        "how a c1 layer integrates its field over one step (c0 and c2 take euler)",
                    ),
                    ParamSpec::with_default(
                        "activation",
                        ParamType::Enum(&["tanh", "relu"]),
                        json!("tanh"),
                        "the hidden nonlinearity of the fields",
                    ),
                    ParamSpec::with_default(
                        "weight_decay",
                        ParamType::non_negative_float(),
                        json!(0.0),
                        "decoupled (AdamW) decay of the weight matrices",
                    ),
                    ParamSpec::with_default(
                        "lipschitz",
                        ParamType::optional(ParamType::positive_float()),
                        json!(null),
                        "spectral normalisation keeping h·‖W2‖·‖W1‖ ≤ this after every step (< 1 keeps each step invertible); null: off",
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

/// Collects the per-epoch log, forwards progress, and stops on cancellation.
struct EpochObserver<'a, 'b> {
    ctx: &'a OpContext<'b>,
    history: Vec<(u64, f64, f64)>,
}

impl Observer<Accuracy> for EpochObserver<'_, '_> {
    fn on_epoch(&mut self, r: &EpochLog<Accuracy>) -> ControlFlow<()> {
        self.history
            .push((r.epoch as u64, f64::from(r.loss), f64::from(r.stats.acc())));
        training_progress(self.ctx, r.epoch, r.epochs, r.loss)
    }

    fn cancelled(&self) -> bool {
        self.ctx.is_cancelled()
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
            form: p.form,
            integrator: p.integrator,
            activation: p.activation,
        };
        let train = TrainConfig {
            epochs: p.epochs,
            batch: p.batch,
            lr: p.lr as f32,
            seed: p.seed,
            weight_decay: p.weight_decay as f32,
            lipschitz: p.lipschitz.map(|l| l as f32),
        };
        let mut observer = EpochObserver {
            ctx,
            history: Vec::new(),
        };
        // Results do not depend on the thread count (fixed shards summed in order), so threads
        // stay out of the key.
        let exec = ExecOptions {
            threads: ctx.threads(),
            backend: backend(ctx)?,
        };
        // A divergence is a result the executor keeps or fails by the stage's `diverged:`:
        // the epochs before it are logged, and there is no model to save.
        let (flow, status) =
            match ablate_models::train_flow_with(&config, &train, &data, &exec, &mut observer) {
                Ok(flow) => (Some(flow), EntryStatus::Done),
                Err(NnError::NonFinite {
                    epoch,
                    loss,
                    grad_norm,
                    ..
                }) => {
                    let status = if loss.is_finite() {
                        EntryStatus::diverged("grad_norm", Some(epoch as u64), f64::from(grad_norm))
                    } else {
                        EntryStatus::diverged("loss", Some(epoch as u64), f64::from(loss))
                    };
                    (None, status)
                }
                Err(e) => return Err(model_error(e)),
            };
        if let Some(flow) = &flow {
            flow.save(&ctx.out_dir().join("model.safetensors"))
                .map_err(model_error)?;
        }

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
        if let Some(flow) = &flow {
            if let Some(&(_, loss, acc)) = h.last() {
                metrics.push(Metric::new("train_loss", loss));
                metrics.push(Metric::new("train_acc", acc));
            }
            metrics.push(Metric::new("params", flow.num_params() as f64));
        }
        Ok(OpOutput {
            metrics,
            publish: Vec::new(),
            status,
        })
    }
}

pub(crate) struct EvalFlow {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvalParams {
    grid: usize,
}

impl EvalFlow {
    pub(crate) fn new() -> Self {
        EvalFlow {
            schema: OpSchema {
                name: "eval.flow",
                // 3: det J as a product of per-step determinants.
                version: 3,
                summary: "Evaluate the flow trained by its input on the test split of the data behind it: `test_acc`, \
                          `test_loss` (mean cross-entropy), `params`; `min_det_j` and `fold_frac` (the flow map's \
                          Jacobian determinant over a `grid`² grid covering 2-D data, or at the test points otherwise, \
                          and the fraction of points where it is ≤ 0); `inverse_err` (max error of inverting the flow \
                          on the test set: the backward flow for shared c1 weights, fixed-point iteration of each step \
                          for unshared c1, the exact backward recursion for c2; none for c0) and `inverse_fp_err` \
                          (fixed-point inversion for every c1 model); `acc_2n` (test accuracy with the trained fields \
                          integrated in 2N steps of h/2) and `acc_rk4` (the same fields integrated with RK4; c1 only). \
                          On a GPU (`device: cuda`) the forward passes behind the accuracies and the loss run there; \
                          the Jacobians and inverses are measured in f64 on the host, as on the CPU.",
                params: vec![ParamSpec::with_default(
                    "grid",
                    ParamType::Int { min: 2, max: 1000 },
                    json!(41),
                    "points per side of the grid the Jacobian is probed on (2-D data)",
                )],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                on_device: true,
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
        let p: EvalParams = typed("eval.flow", ctx.job.params())?;
        let flow = Flow::load(&artifact(ctx, "model.safetensors")?).map_err(model_error)?;
        let test = read_dataset(&artifact(ctx, "test.parquet")?, Some(flow.config().classes))?;
        let rt = runtime(ctx)?;
        let eval = flow.evaluate_on(&test, &rt).map_err(model_error)?;
        let mut metrics = vec![
            Metric::new("test_acc", eval.acc),
            Metric::new("test_loss", eval.loss),
            Metric::new("params", flow.num_params() as f64),
        ];

        let dets = flow
            .jacobian_dets(&probe_points(&test, p.grid))
            .map_err(model_error)?;
        // A NaN determinant counts as a fold: the map is not a diffeomorphism there.
        let folded = dets.iter().filter(|d| d.is_nan() || **d <= 0.0).count();
        let min = dets.iter().copied().fold(f64::INFINITY, f64::min);
        metrics.push(Metric::new("min_det_j", min));
        metrics.push(Metric::new("fold_frac", folded as f64 / dets.len() as f64));

        let inverse = flow.inverse_errors(&test.x).map_err(model_error)?;
        if let Some(e) = inverse.inverse {
            metrics.push(Metric::new("inverse_err", e));
        }
        if let Some(e) = inverse.fixed_point {
            metrics.push(Metric::new("inverse_fp_err", e));
        }
        let refined = flow
            .refined()
            .evaluate_on(&test, &rt)
            .map_err(model_error)?;
        metrics.push(Metric::new("acc_2n", refined.acc));
        if flow.config().form == Form::C1 {
            let rk4 = flow
                .with_integrator(Integrator::Rk4)
                .and_then(|f| f.evaluate_on(&test, &rt))
                .map_err(model_error)?;
            metrics.push(Metric::new("acc_rk4", rk4.acc));
        }
        Ok(OpOutput {
            metrics,
            publish: Vec::new(),
            ..OpOutput::default()
        })
    }
}
