//! `train.flow` and `eval.flow`: residual networks as flows (Rousseau et al.), via
//! `ablate-models`.

use std::ops::ControlFlow;

use ablate_cache::{EntryStatus, Metric};
use ablate_models::{
    Accuracy, Activation, Array, Backend, Checkpoint, EpochLog, ExecOptions, Flow, FlowConfig,
    Form, Integrator, NnError, Observer, Span, TrainConfig, TrainState, Weights,
};
use ablate_results::{Column, ColumnData, Table};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::checkpoint;
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
    /// Its progress counts epochs; it stops at a budget of them and resumes from its
    /// checkpoint (issue 24).
    fn budget_unit(&self) -> Option<&'static str> {
        Some("epochs")
    }

    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn fusible(&self) -> &'static [&'static str] {
        FUSIBLE
    }

    fn run_group(&self, ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
        run_group(ctxs)
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        train_alone(ctx, &prepare(ctx)?)
    }
}

/// Trains one prepared instance on its own (a group of one takes this path too, so its
/// checkpoint is read once).
fn train_alone(ctx: &OpContext<'_>, job: &Prepared) -> Result<OpOutput, OpError> {
    {
        let mut observer = EpochObserver {
            ctx,
            history: job.history_so_far(),
        };
        // Results do not depend on the thread count (fixed shards summed in order), so threads
        // stay out of the key.
        let exec = ExecOptions {
            threads: ctx.threads(),
            backend: job.backend,
        };
        let result = ablate_models::train_flow_span(
            &job.config,
            &job.train,
            &job.data,
            &exec,
            job.span(),
            &mut observer,
        );
        finish(ctx, job, result, &observer.history)
    }
}

/// The params of `train.flow` that members of one fused group may differ in (what
/// [`run_group`] trains together); every other param, and the shape of the data, must agree.
pub const FUSIBLE: &[&str] = &["lr", "seed", "weight_decay", "lipschitz"];

/// What one `train.flow` instance trains: read from its params and input as [`TrainFlow::run`]
/// reads them.
struct Prepared {
    config: FlowConfig,
    train: TrainConfig,
    data: ablate_models::Dataset,
    backend: Backend,
    /// What its checkpoint is tagged with.
    tag: String,
    /// The checkpoint it resumes from.
    resumed: Option<Resumed>,
    /// The epoch it trains to: its budget's, or its last.
    stop: usize,
    /// Whether it stops at its budget before its end (then it leaves a checkpoint there).
    budgeted: bool,
}

/// A `train.flow` checkpoint: the training state after some epochs and the history so far.
struct Resumed {
    state: TrainState,
    history: Vec<(u64, f64, f64)>,
}

impl Prepared {
    /// Whether `self` and `other` can train in one group: the same model, step schedule,
    /// data shape and device (they may differ in [`FUSIBLE`] params only), resuming from the
    /// same epoch and stopping at the same one.
    fn fuses_with(&self, other: &Prepared) -> bool {
        self.config == other.config
            && self.train.epochs == other.train.epochs
            && self.train.batch == other.train.batch
            && self.data.len() == other.data.len()
            && self.backend == other.backend
            && self.start() == other.start()
            && self.stop == other.stop
    }

    fn start(&self) -> usize {
        self.resumed.as_ref().map_or(0, |r| r.state.step)
    }

    fn span(&self) -> Span<'_> {
        Span {
            from: self.resumed.as_ref().map(|r| &r.state),
            stop: self.stop,
        }
    }

    fn history_so_far(&self) -> Vec<(u64, f64, f64)> {
        self.resumed
            .as_ref()
            .map(|r| r.history.clone())
            .unwrap_or_default()
    }

    /// The checkpoint of this run stopped in `state` with `history`.
    fn checkpoint(&self, state: &TrainState, history: &[(u64, f64, f64)]) -> Checkpoint {
        let mut c = Checkpoint::new(self.tag.clone(), self.stop as u64);
        c.put_state("", state);
        c.put(
            "history.epoch",
            Array::U64(history.iter().map(|h| h.0).collect()),
        );
        c.put(
            "history.loss",
            Array::F64(history.iter().map(|h| h.1).collect()),
        );
        c.put(
            "history.acc",
            Array::F64(history.iter().map(|h| h.2).collect()),
        );
        c
    }
}

/// The epoch a `train.flow` checkpoint was taken after, its state and history, checked against
/// the run it would resume (`n` parameters, `per_epoch` steps an epoch, `epochs` in all).
fn resumed_from(
    c: &Checkpoint,
    n: usize,
    per_epoch: usize,
    epochs: usize,
) -> Result<Resumed, String> {
    let state = c.state("", n)?;
    let epoch = c.step as usize;
    let (e, loss, acc) = (
        c.u64s("history.epoch")?,
        c.f64s("history.loss")?,
        c.f64s("history.acc")?,
    );
    if state.step != epoch * per_epoch || epoch > epochs || e.len() != epoch {
        return Err(format!(
            "it is at epoch {epoch} (step {}) with {} epochs logged, which does not fit a run of \
             {epochs} epochs of {per_epoch} steps",
            state.step,
            e.len()
        ));
    }
    if loss.len() != e.len() || acc.len() != e.len() {
        return Err("its history is malformed".into());
    }
    let history = (0..e.len()).map(|i| (e[i], loss[i], acc[i])).collect();
    Ok(Resumed { state, history })
}

fn prepare(ctx: &OpContext<'_>) -> Result<Prepared, OpError> {
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
    let backend = backend(ctx)?;
    let tag = checkpoint::tag(ctx, "train.flow", backend);
    let epochs = p.epochs as u64;
    // A budget below the run's length stops it there (early stopping, #24).
    let stop = ctx.budget().map_or(epochs, |b| b.min(epochs));
    let per_epoch = data.len().div_ceil(p.batch.max(1));
    let mut resumed = checkpoint::load(ctx, &tag, epochs, |c| {
        config.validate().map_err(|e| e.to_string())?;
        resumed_from(c, Flow::num_params_of(&config), per_epoch, p.epochs)
    });
    // A checkpoint past the budget cannot be rewound: this run trains from the start to the
    // budget, and the further checkpoint stays for a longer run.
    if resumed
        .as_ref()
        .is_some_and(|r| r.history.len() as u64 > stop)
    {
        resumed = None;
    }
    if let Some(r) = &resumed {
        checkpoint::say_resumed(ctx, r.history.len() as u64, epochs, "epoch");
    }
    Ok(Prepared {
        config,
        train,
        data,
        backend,
        tag,
        resumed,
        stop: stop as usize,
        budgeted: stop < epochs,
    })
}

/// Writes what a training run left — the model (unless it diverged), the history, the metrics
/// and status — through `ctx`.
fn finish(
    ctx: &OpContext<'_>,
    job: &Prepared,
    result: Result<(Flow, TrainState), NnError>,
    h: &[(u64, f64, f64)],
) -> Result<OpOutput, OpError> {
    // A divergence is a result the executor keeps or fails by the stage's `diverged:`:
    // the epochs before it are logged, and there is no model to save.
    let (flow, status) = match result {
        Ok((flow, state)) => {
            // Stopped at its budget: what a longer run resumes from (unless it is there
            // already, or the checkpoint left is further on).
            if job.budgeted && job.start() < state.step {
                checkpoint::save(ctx, &job.checkpoint(&state, h))?;
            }
            (Some(flow), EntryStatus::Done)
        }
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
            // Nothing of a diverged run is resumed.
            checkpoint::discard(ctx);
            (None, status)
        }
        Err(e) => return Err(model_error(e)),
    };
    if let Some(flow) = &flow {
        flow.save(&ctx.out_dir().join("model.safetensors"))
            .map_err(model_error)?;
    }

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
    let stopped_at = (job.budgeted && status.is_done()).then_some(job.stop as u64);
    Ok(OpOutput {
        metrics,
        publish: Vec::new(),
        status,
        stopped_at,
    })
}

/// Runs the `train.flow` instances `ctxs` (one result per context, in order), training those
/// that differ only in [`FUSIBLE`] params as one fused group
/// ([`ablate_models::train_flow_group`]): each member reads its params and data set, reports
/// progress, is cancelled and writes its outputs through its own context, exactly as
/// [`TrainFlow::run`] would — so its cache entry is the one an unfused run makes. A sub-group
/// of one takes the ordinary path.
pub fn run_group(ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
    let mut out: Vec<Option<Result<OpOutput, OpError>>> = ctxs.iter().map(|_| None).collect();
    let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(ctxs.len());
    for (i, ctx) in ctxs.iter().enumerate() {
        match prepare(ctx) {
            Ok(p) => prepared.push(Some(p)),
            Err(e) => {
                out[i] = Some(Err(e));
                prepared.push(None);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        let Some(p) = p else { continue };
        match groups
            .iter_mut()
            .find(|g| prepared[g[0]].as_ref().is_some_and(|q| q.fuses_with(p)))
        {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    for group in groups {
        if let [i] = group[..] {
            let job = prepared[i].as_ref().expect("grouped members are prepared");
            out[i] = Some(train_alone(&ctxs[i], job));
            continue;
        }
        let members: Vec<&Prepared> = group
            .iter()
            .map(|&i| prepared[i].as_ref().expect("grouped members are prepared"))
            .collect();
        let trains: Vec<TrainConfig> = members.iter().map(|p| p.train.clone()).collect();
        let data: Vec<&ablate_models::Dataset> = members.iter().map(|p| &p.data).collect();
        let from: Vec<Option<&TrainState>> = members.iter().map(|p| p.span().from).collect();
        let mut observers: Vec<EpochObserver<'_, '_>> = group
            .iter()
            .zip(&members)
            .map(|(&i, p)| EpochObserver {
                ctx: &ctxs[i],
                history: p.history_so_far(),
            })
            .collect();
        let mut obs: Vec<&mut dyn Observer<Accuracy>> = observers
            .iter_mut()
            .map(|o| o as &mut dyn Observer<Accuracy>)
            .collect();
        // The group's threads: the most any member was given (the result does not depend on it).
        let exec = ExecOptions {
            threads: group.iter().map(|&i| ctxs[i].threads()).max().unwrap_or(1),
            backend: members[0].backend,
        };
        let stop = members[0].stop;
        let cfg = &members[0].config;
        match ablate_models::train_flow_group_span(
            cfg, &trains, &data, &exec, &from, stop, &mut obs,
        ) {
            Ok(results) => {
                for (((&i, result), o), p) in
                    group.iter().zip(results).zip(&observers).zip(&members)
                {
                    out[i] = Some(finish(&ctxs[i], p, result, &o.history));
                }
            }
            Err(e) => {
                let msg = format!(
                    "the fused training of {} instances failed: {e}",
                    group.len()
                );
                for &i in &group {
                    out[i] = Some(Err(OpError::msg(msg.clone())));
                }
            }
        }
    }
    out.into_iter()
        .map(|r| r.expect("every instance has a result"))
        .collect()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use ablate_cache::{HASH_SCHEME, InstanceKey, KeyInput, Manifest, Origin, Store};
    use ablate_run::{CancelToken, JobInput, Progress};
    use ablate_spec::Params;
    use serde_json::{Value, json};

    use super::*;
    use crate::registry::Op;

    /// Commits a data entry `n` holding a `train.parquet` of 60 points (its own draw).
    pub(super) fn data_entry(store: &Store, n: u64) -> InstanceKey {
        let ki = KeyInput {
            scheme: HASH_SCHEME,
            op: "data.synthetic".into(),
            op_version: 1,
            params: BTreeMap::from([("n".to_owned(), json!(n))]),
            inputs: Vec::new(),
            deps: Vec::new(),
        };
        let key = ki.key();
        let tmp = store.begin(&key).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ n;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let x: Vec<f64> = (0..120).map(|_| next()).collect();
        let labels: Vec<u32> = x.chunks(2).map(|p| u32::from(p[0] * p[1] > 0.0)).collect();
        crate::support::write_dataset(&tmp.dir().join("train.parquet"), 2, &x, &labels).unwrap();
        tmp.commit(Manifest {
            format: 0,
            key,
            input: ki,
            origin: Origin {
                pipeline: "p".into(),
                stage: "data".into(),
                label: String::new(),
            },
            outputs: Vec::new(),
            metrics: Vec::new(),
            publish: Vec::new(),
            started_at_us: 0,
            seconds: 0.0,
            device: "cpu".into(),
            host: "test".into(),
            ablate_version: "0".into(),
            status: Default::default(),
            checksum: None,
        })
        .unwrap();
        key
    }

    pub(super) fn train_job(data: InstanceKey, params: Value) -> ablate_run::Job {
        let mut p: Params = TrainFlow::new()
            .schema
            .params
            .iter()
            .filter_map(|s| Some((s.name.to_owned(), s.default.clone()?)))
            .collect();
        for (k, v) in params.as_object().unwrap() {
            p.insert(k.clone(), v.clone());
        }
        let input = JobInput {
            stage: "data".into(),
            id: "data".into(),
            op: "data.synthetic".into(),
            key: data,
            labels: Vec::new(),
        };
        crate::testutil::job("train.flow", p, vec![input], "cpu")
    }

    /// Every file of `dir`, by name.
    pub(super) fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_fused_group_writes_each_member_as_its_unfused_run() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(&root.path().join("cache")).unwrap();
        let (d0, d1) = (data_entry(&store, 0), data_entry(&store, 1));
        let small = json!({"epochs": 3, "batch": 16, "hidden": 6, "steps": 3});
        let with = |extra: Value| {
            let mut v = small.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        let jobs = [
            train_job(d0, with(json!({"seed": 1, "lr": 0.01}))),
            train_job(
                d1,
                with(json!({"seed": 2, "lr": 0.03, "weight_decay": 0.1})),
            ),
            // diverges: kept as a diverged result, alone
            train_job(d0, with(json!({"seed": 3, "lr": 1e30}))),
            train_job(d1, with(json!({"seed": 4, "lr": 0.02, "lipschitz": 0.5}))),
            // another width: a sub-group of its own (the ordinary path)
            train_job(d0, with(json!({"seed": 5, "hidden": 7}))),
        ];
        let cancel = CancelToken::new();
        let progress = |_: Progress| {};
        let dirs = |tag: &str| -> Vec<std::path::PathBuf> {
            (0..jobs.len())
                .map(|i| {
                    let d = root.path().join(format!("{tag}{i}"));
                    std::fs::create_dir_all(&d).unwrap();
                    d
                })
                .collect()
        };
        let (alone_dirs, fused_dirs) = (dirs("alone"), dirs("fused"));
        fn ctx<'a>(
            job: &'a ablate_run::Job,
            out: &'a Path,
            store: &'a Store,
            root: &'a Path,
            progress: &'a (dyn Fn(Progress) + Send + Sync),
            cancel: &'a CancelToken,
        ) -> OpContext<'a> {
            OpContext::new(job, out, store, root, 1, progress, cancel)
        }
        let alone: Vec<Result<OpOutput, OpError>> = (0..jobs.len())
            .map(|i| {
                let c = ctx(
                    &jobs[i],
                    &alone_dirs[i],
                    &store,
                    root.path(),
                    &progress,
                    &cancel,
                );
                TrainFlow::new().run(&c)
            })
            .collect();
        let ctxs: Vec<OpContext<'_>> = (0..jobs.len())
            .map(|i| {
                ctx(
                    &jobs[i],
                    &fused_dirs[i],
                    &store,
                    root.path(),
                    &progress,
                    &cancel,
                )
            })
            .collect();
        let fused = run_group(&ctxs);
        assert_eq!(fused.len(), jobs.len());
        for (i, (a, f)) in alone.iter().zip(&fused).enumerate() {
            let (a, f) = (a.as_ref().unwrap(), f.as_ref().unwrap());
            assert_eq!(
                format!("{:?}", a.metrics),
                format!("{:?}", f.metrics),
                "member {i}"
            );
            assert_eq!(
                format!("{:?}", a.status),
                format!("{:?}", f.status),
                "member {i}"
            );
            assert_eq!(files(&alone_dirs[i]), files(&fused_dirs[i]), "member {i}");
        }
        assert!(matches!(
            fused[2].as_ref().unwrap().status,
            EntryStatus::Diverged { .. }
        ));
        assert!(files(&fused_dirs[0]).contains_key("model.safetensors"));
    }
}

#[cfg(test)]
mod resume_tests {
    //! Early stopping's checkpoints (#24): a `train.flow` stopped at budgets and resumed is the
    //! run that never stopped, byte for byte.

    use std::path::PathBuf;
    use std::sync::Mutex;

    use ablate_cache::Store;
    use ablate_run::{CancelToken, Job, Progress};
    use serde_json::{Value, json};

    use super::tests::{data_entry, files, train_job};
    use super::*;
    use crate::support::checkpoint::CHECKPOINT_FILE;

    struct Bench {
        root: tempfile::TempDir,
        store: Store,
        messages: Mutex<Vec<String>>,
        runs: Mutex<usize>,
    }

    impl Bench {
        fn new() -> Bench {
            let root = tempfile::tempdir().unwrap();
            let store = Store::open(&root.path().join("cache")).unwrap();
            Bench {
                root,
                store,
                messages: Mutex::new(Vec::new()),
                runs: Mutex::new(0),
            }
        }

        fn out_dir(&self) -> PathBuf {
            let mut n = self.runs.lock().unwrap();
            *n += 1;
            let d = self.root.path().join(format!("out{n}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        }

        /// Runs `jobs` (with their budgets) as a group, or the one job alone; returns each
        /// result and out directory.
        fn run(&self, jobs: &[Job]) -> Vec<(OpOutput, PathBuf)> {
            let cancel = CancelToken::new();
            let progress = |p: Progress| {
                if let Some(m) = p.message {
                    self.messages.lock().unwrap().push(m);
                }
            };
            let dirs: Vec<PathBuf> = jobs.iter().map(|_| self.out_dir()).collect();
            let ctxs: Vec<OpContext<'_>> = jobs
                .iter()
                .zip(&dirs)
                .map(|(j, d)| {
                    OpContext::new(j, d, &self.store, self.root.path(), 1, &progress, &cancel)
                })
                .collect();
            let out = if let [ctx] = &ctxs[..] {
                vec![TrainFlow::new().run(ctx)]
            } else {
                run_group(&ctxs)
            };
            out.into_iter().map(|r| r.unwrap()).zip(dirs).collect()
        }

        fn checkpoint(&self, job: &Job) -> PathBuf {
            self.store.checkpoint_dir(&job.key).join(CHECKPOINT_FILE)
        }
    }

    fn budgeted(job: &Job, budget: Option<u64>) -> Job {
        let mut j = job.clone();
        j.budget = budget;
        j
    }

    fn small(extra: Value) -> Value {
        let mut v = json!({"epochs": 5, "batch": 16, "hidden": 6, "steps": 3});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    fn same(a: &(OpOutput, PathBuf), b: &(OpOutput, PathBuf), what: &str) {
        assert_eq!(
            format!("{:?}", a.0.metrics),
            format!("{:?}", b.0.metrics),
            "{what}"
        );
        assert_eq!(
            format!("{:?}", a.0.status),
            format!("{:?}", b.0.status),
            "{what}"
        );
        assert_eq!(files(&a.1), files(&b.1), "{what}");
    }

    #[test]
    fn train_flow_stopped_at_budgets_and_resumed_equals_one_run() {
        let b = Bench::new();
        let data = data_entry(&b.store, 0);
        let job = train_job(
            data,
            small(json!({"seed": 3, "lipschitz": 0.8, "weight_decay": 0.1})),
        );
        let whole = b.run(std::slice::from_ref(&job)).remove(0);
        assert_eq!(whole.0.stopped_at, None);
        assert!(!b.checkpoint(&job).exists(), "no budget, no checkpoint");

        let first = b.run(&[budgeted(&job, Some(1))]).remove(0);
        assert_eq!(first.0.stopped_at, Some(1));
        assert!(b.checkpoint(&job).exists());
        // What it wrote at epoch 1 is what a run of 1 epoch writes.
        let one_epoch = b
            .run(&[train_job(
                data,
                small(json!({"seed": 3, "lipschitz": 0.8, "weight_decay": 0.1, "epochs": 1})),
            )])
            .remove(0);
        same(&first, &one_epoch, "at the budget");

        let second = b.run(&[budgeted(&job, Some(3))]).remove(0);
        assert_eq!(second.0.stopped_at, Some(3));
        let resumed = b.messages.lock().unwrap().clone();
        assert!(
            resumed
                .iter()
                .any(|m| m.contains("resuming from its checkpoint at epoch 1")),
            "{resumed:?}"
        );
        // a budget at or past the end: the whole run, from the checkpoint at 3
        let last = b.run(&[budgeted(&job, Some(9))]).remove(0);
        assert_eq!(last.0.stopped_at, None);
        same(&whole, &last, "resumed to the end");
        assert!(
            b.messages
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.contains("at epoch 3")),
        );
        // a smaller budget than the checkpoint's: trained from the start, the checkpoint kept
        let again = b.run(&[budgeted(&job, Some(1))]).remove(0);
        same(&first, &again, "a budget below the checkpoint");
        let end = b.run(std::slice::from_ref(&job)).remove(0);
        same(&whole, &end, "still resumes from epoch 3");
    }

    #[test]
    fn a_fused_group_with_members_at_different_steps_equals_their_unfused_runs() {
        let b = Bench::new();
        let (d0, d1) = (data_entry(&b.store, 0), data_entry(&b.store, 1));
        let jobs = [
            train_job(d0, small(json!({"seed": 1, "lr": 0.01}))),
            train_job(
                d1,
                small(json!({"seed": 2, "lr": 0.03, "weight_decay": 0.1})),
            ),
            train_job(d0, small(json!({"seed": 4, "lr": 0.02, "lipschitz": 0.5}))),
            train_job(d1, small(json!({"seed": 5, "lr": 0.015}))),
        ];
        let alone: Vec<(OpOutput, PathBuf)> = jobs
            .iter()
            .map(|j| b.run(std::slice::from_ref(j)).remove(0))
            .collect();
        let round = |budgets: [Option<u64>; 4]| {
            let js: Vec<Job> = jobs
                .iter()
                .zip(budgets)
                .map(|(j, bu)| budgeted(j, bu))
                .collect();
            b.run(&js)
        };
        // 0 and 1 fuse (0 → 1), 2 alone (0 → 2), 3 whole
        let r1 = round([Some(1), Some(1), Some(2), None]);
        let stops: Vec<Option<u64>> = r1.iter().map(|r| r.0.stopped_at).collect();
        assert_eq!(stops, [Some(1), Some(1), Some(2), None]);
        same(&r1[3], &alone[3], "member 3 whole");
        // 0: 1 → 3; 1: 1 → end; 2: 2 → end (1 and 2 resume from different epochs)
        let r2 = round([Some(3), None, None, None]);
        assert_eq!(r2[0].0.stopped_at, Some(3));
        // member 2, a sub-group of one, read its checkpoint once
        let said = |what: &str| {
            b.messages
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.contains(what))
                .count()
        };
        assert_eq!(said("resuming from its checkpoint at epoch 2"), 1);
        assert_eq!(said("resuming from its checkpoint at epoch 1"), 2);
        for m in 1..4 {
            same(&r2[m], &alone[m], &format!("member {m}, second round"));
        }
        let r3 = round([None, None, Some(4), Some(5)]);
        for m in [0, 3] {
            same(&r3[m], &alone[m], &format!("member {m}, third round"));
        }
    }

    #[test]
    fn a_checkpoint_of_something_else_or_truncated_is_ignored_and_training_starts_over() {
        let b = Bench::new();
        let data = data_entry(&b.store, 0);
        let (a, other) = (
            train_job(data, small(json!({"seed": 1}))),
            train_job(data, small(json!({"seed": 2}))),
        );
        let whole = b.run(std::slice::from_ref(&a)).remove(0);
        b.run(&[budgeted(&other, Some(2))]);
        // `other`'s checkpoint where `a`'s would be
        let path = b.checkpoint(&a);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(b.checkpoint(&other), &path).unwrap();
        let got = b.run(std::slice::from_ref(&a)).remove(0);
        same(&whole, &got, "a foreign checkpoint");
        assert!(b.messages.lock().unwrap().iter().any(
            |m| m.contains("ignoring the checkpoint") && m.contains("training from the start")
        ),);
        // its own checkpoint, cut short
        b.run(&[budgeted(&a, Some(2))]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        b.messages.lock().unwrap().clear();
        let got = b.run(std::slice::from_ref(&a)).remove(0);
        same(&whole, &got, "a truncated checkpoint");
        let m = b.messages.lock().unwrap().clone();
        assert!(m.iter().any(|m| m.contains("checksum")), "{m:?}");
    }

    #[test]
    fn a_cancelled_run_leaves_the_checkpoint_it_found() {
        let b = Bench::new();
        let data = data_entry(&b.store, 0);
        let job = train_job(data, small(json!({"seed": 3})));
        b.run(&[budgeted(&job, Some(2))]);
        let before = std::fs::read(b.checkpoint(&job)).unwrap();
        // cancelled after its first epoch past the checkpoint, on its way to a budget of 4
        let cancel = CancelToken::new();
        let progress = |p: Progress| {
            if p.step >= 3 && p.loss.is_some() {
                cancel.cancel();
            }
        };
        let out = b.out_dir();
        let job4 = budgeted(&job, Some(4));
        let ctx = OpContext::new(&job4, &out, &b.store, b.root.path(), 1, &progress, &cancel);
        assert!(matches!(
            TrainFlow::new().run(&ctx),
            Err(OpError::Cancelled)
        ));
        assert_eq!(std::fs::read(b.checkpoint(&job)).unwrap(), before);
        let dir = b.checkpoint(&job).parent().unwrap().to_owned();
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            1,
            "no temporary file"
        );
    }

    #[test]
    fn a_diverged_run_leaves_no_checkpoint() {
        let b = Bench::new();
        let data = data_entry(&b.store, 0);
        let job = train_job(data, small(json!({"seed": 3, "lr": 1e30})));
        let path = b.checkpoint(&job);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"stale").unwrap();
        let out = b.run(&[budgeted(&job, Some(3))]).remove(0);
        assert!(matches!(out.0.status, EntryStatus::Diverged { .. }));
        assert_eq!(out.0.stopped_at, None);
        assert!(!path.exists());
    }
}
