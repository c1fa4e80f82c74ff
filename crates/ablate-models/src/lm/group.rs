//! Training several language models of one architecture and step schedule together (a fused
//! sweep, issue 23) through the core's [`ablate_nn::train_group`]: each member keeps its own
//! initialisation, batches, optimizer replica and observer, and ends exactly as
//! [`super::train_lm_with`] would have ended it alone.

use ablate_nn::{
    AdamW, Batches, GroupModel, Kind, Loss, Observer, Plan, Runtime, StepLog, TrainState, catching,
    train_group_span,
};

use super::Batch;
use super::config::{LmConfig, LmTrainConfig};
use super::cpu::{GroupRunner, check_batch, with_group_runner};
use super::layout::LmLayout;
use super::model::Lm;
use super::tensor::{check_tensor_batch, group_loss_and_grad, tensor_loss_and_grad};
use super::train::{LmSpan, adam, hyper, start_params, validate};
use crate::{ExecOptions, NnError};

/// The [`LmTrainConfig`] fields a group's members may differ in: they change values (the
/// initialisation and data order, the optimizer's replica), never a shape or the step
/// schedule. The others (`steps`, `batch`, `warmup`) every member must share.
pub const LM_FUSIBLE: &[&str] = &["seed", "lr", "weight_decay", "clip"];

/// One member's outcome: its model and per-step log, or the error it ended with alone.
pub type MemberOutcome = Result<(Lm, Vec<StepLog<()>>), NnError>;

/// Trains one model per entry of `trains` (all of architecture `cfg`), member `m` on
/// `batches[m]` with `observers[m]`, as [`super::train_lm_with`] trains each alone: the same
/// parameters, logs and observer calls, bit for bit on the same backend (the CPU path runs
/// every member's own products, in the same order, as one set of tasks over `exec.threads`
/// threads). On the dfdx path (dfdx's CPU device, or CUDA) the members' steps are one tensor
/// computation with a member axis, equal to each member's own within rounding (1e-5 over a
/// few steps in the tests), not bit for bit.
///
/// The outer error is the group's (a bad architecture or thread count, members that differ in
/// `steps`, `batch` or `warmup`, a device that cannot be opened or that failed); an inner one
/// is that member's alone (its own bad `lr`, `weight_decay` or `clip`, a bad batch, a
/// divergence, a cancellation), the others unaffected.
pub fn train_lm_group(
    cfg: &LmConfig,
    trains: &[LmTrainConfig],
    exec: &ExecOptions,
    batches: &mut [&mut dyn FnMut(usize) -> Batch],
    observers: &mut [&mut dyn Observer<()>],
) -> Result<Vec<MemberOutcome>, NnError> {
    let from = vec![None; trains.len()];
    let stop = trains.first().map_or(0, |t| t.steps);
    let done = train_lm_group_span(cfg, trains, exec, &from, stop, batches, observers)?;
    Ok(done
        .into_iter()
        .map(|r| r.map(|(lm, logs, _)| (lm, logs)))
        .collect())
}

/// A member's outcome in [`train_lm_group_span`]: its model, the span's log and the state it
/// stopped in.
pub type SpanOutcome = Result<(Lm, Vec<StepLog<()>>, TrainState), NnError>;

/// [`train_lm_group`] over a span (early stopping, #24): member `m` starts from `from[m]` (or
/// scratch), every member stops after step `stop`, each as [`super::train_lm_span`] would train
/// it alone. The members resume from one step (else the group's error).
pub fn train_lm_group_span(
    cfg: &LmConfig,
    trains: &[LmTrainConfig],
    exec: &ExecOptions,
    from: &[Option<&TrainState>],
    stop: usize,
    batches: &mut [&mut dyn FnMut(usize) -> Batch],
    observers: &mut [&mut dyn Observer<()>],
) -> Result<Vec<SpanOutcome>, NnError> {
    let start = from.first().copied().flatten().map(|s| s.step);
    if from.len() != trains.len() || from.iter().any(|f| f.map(|s| s.step) != start) {
        return Err(NnError::InvalidConfig(
            "the members of a group must resume from one step (hint: train them in separate \
             groups)"
                .into(),
        ));
    }
    if batches.len() != trains.len() || observers.len() != trains.len() {
        return Err(NnError::InvalidConfig(format!(
            "a group of {} members needs one batch source and one observer each, not {} and {}",
            trains.len(),
            batches.len(),
            observers.len()
        )));
    }
    cfg.validate()?;
    exec.validate()?;
    check_schedule(trains)?;
    let layout = LmLayout::new(cfg);
    let span = LmSpan {
        from: from.first().copied().flatten(),
        stop,
    };
    let mut out: Vec<Option<SpanOutcome>> = trains
        .iter()
        .zip(from)
        .map(|(t, f)| {
            validate(t, exec.threads)
                .and_then(|()| start_params(&layout, t, *f).map(drop))
                .and_then(|()| span.steps(t.steps).map(drop))
                .err()
                .map(Err)
        })
        .collect();
    let live: Vec<usize> = (0..trains.len()).filter(|&m| out[m].is_none()).collect();
    if live.is_empty() {
        return Ok(out.into_iter().flatten().collect());
    }
    let mut init: Vec<f32> = Vec::with_capacity(live.len() * layout.total());
    for &m in &live {
        init.extend(start_params(&layout, &trains[m], from[m])?);
    }
    let mut opt = AdamW::new(
        adam(),
        &layout.store,
        live.iter().map(|&m| hyper(&trains[m])).collect(),
    );
    for (r, &m) in live.iter().enumerate() {
        if let Some(f) = from[m] {
            opt.restore(r, &f.adam)?;
        }
    }
    let plan = Plan::Steps(trains[live[0]].steps);
    let steps = span.steps(trains[live[0]].steps)?;
    let kind = Runtime::open(exec)?.into_kind();
    let tensor = !matches!(kind, Kind::Cpu { .. });
    let mut sources: Vec<Checked<'_, '_>> = Vec::with_capacity(live.len());
    let mut watchers: Vec<&mut dyn Observer<()>> = Vec::with_capacity(live.len());
    for (m, (next, observer)) in batches.iter_mut().zip(observers.iter_mut()).enumerate() {
        if out[m].is_none() {
            sources.push(Checked {
                cfg,
                tensor,
                next: &mut **next,
                last: None,
            });
            watchers.push(&mut **observer);
        }
    }
    let mut sources: Vec<&mut dyn Batches<Batch>> = sources
        .iter_mut()
        .map(|s| s as &mut dyn Batches<Batch>)
        .collect();
    let trained = match kind {
        Kind::Cpu { threads } => {
            with_group_runner(cfg, &layout, live.len(), init, threads, |runner| {
                let mut model = CpuGroup { runner };
                let ends = train_group_span(
                    &mut model,
                    &mut opt,
                    plan,
                    steps.clone(),
                    &mut sources,
                    &mut watchers,
                )?;
                finish(&mut model, ends)
            })?
        }
        Kind::Dfdx(dev) => catching(|| {
            let mut model = TensorGroup::new(dev, cfg, &layout, live.len(), init);
            let ends = train_group_span(
                &mut model,
                &mut opt,
                plan,
                steps.clone(),
                &mut sources,
                &mut watchers,
            )?;
            finish(&mut model, ends)
        })?,
        #[cfg(feature = "cuda")]
        Kind::Cuda { dev, .. } => catching(|| {
            let mut model = TensorGroup::new(dev, cfg, &layout, live.len(), init);
            let ends = train_group_span(
                &mut model,
                &mut opt,
                plan,
                steps.clone(),
                &mut sources,
                &mut watchers,
            )?;
            finish(&mut model, ends)
        })?,
    };
    for (r, (&m, end)) in live.iter().zip(trained).enumerate() {
        out[m] = Some(end.and_then(|(params, logs)| {
            let state = TrainState {
                step: steps.end,
                params: params.clone(),
                adam: opt.state(r),
            };
            Ok((Lm::from_parts(cfg.clone(), params)?, logs, state))
        }));
    }
    Ok(out.into_iter().flatten().collect())
}

/// A member's final parameters and log, or the error it ended with.
type Ended = Result<(Vec<f32>, Vec<StepLog<()>>), NnError>;

/// Each member's parameters where it finished, with its log.
fn finish<G: GroupModel>(
    model: &mut G,
    ends: Vec<Result<Vec<StepLog<()>>, NnError>>,
) -> Result<Vec<Ended>, NnError> {
    ends.into_iter()
        .enumerate()
        .map(|(m, end)| match end {
            Ok(logs) => Ok(Ok((model.params(m)?, logs))),
            Err(e) => Ok(Err(e)),
        })
        .collect()
}

/// The members must share everything that sets the step schedule: the first that differs from
/// member 0 is named.
fn check_schedule(trains: &[LmTrainConfig]) -> Result<(), NnError> {
    let Some(first) = trains.first() else {
        return Ok(());
    };
    let fields = |t: &LmTrainConfig| [("steps", t.steps), ("batch", t.batch), ("warmup", t.warmup)];
    for (m, t) in trains.iter().enumerate().skip(1) {
        for ((name, got), (_, want)) in fields(t).into_iter().zip(fields(first)) {
            if got != want {
                return Err(NnError::InvalidConfig(format!(
                    "the members of a group must share `{name}`, but member 0 has {} and member \
                     {m} has {} (only {} may differ)",
                    want,
                    got,
                    LM_FUSIBLE
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// A member's batch function as the core's [`Batches`], checked against the architecture: a
/// bad batch ends that member with the error it ends a run alone with.
struct Checked<'c, 'f> {
    cfg: &'c LmConfig,
    /// The dfdx path's checks too (it refuses empty batches and encoder rows).
    tensor: bool,
    next: &'f mut dyn FnMut(usize) -> Batch,
    last: Option<Batch>,
}

impl Batches<Batch> for Checked<'_, '_> {
    fn batch(&mut self, step: usize) -> Result<&Batch, NnError> {
        let batch = self.last.insert((self.next)(step));
        check_batch(self.cfg, batch)?;
        // As alone, where the dfdx path checks only a batch it computes.
        if self.tensor && batch.weights.iter().map(|&w| f64::from(w)).sum::<f64>() > 0.0 {
            check_tensor_batch(self.cfg, batch)?;
        }
        Ok(batch)
    }
}

/// The CPU path of a group as a [`GroupModel`].
struct CpuGroup<'r, 'a> {
    runner: &'r mut GroupRunner<'a>,
}

impl GroupModel for CpuGroup<'_, '_> {
    type Batch = Batch;
    type Stats = ();

    fn members(&self) -> usize {
        self.runner.members()
    }

    fn loss_and_grad(
        &mut self,
        batches: &[&Batch],
        live: &[bool],
        grad: &mut Vec<f32>,
    ) -> Result<Vec<Loss<()>>, NnError> {
        Ok(self
            .runner
            .loss_and_grad(batches, live, grad)
            .into_iter()
            .map(|(sum, weight)| Loss {
                sum,
                weight,
                stats: (),
            })
            .collect())
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self.runner.params_mut());
        Ok(())
    }

    fn params(&mut self, m: usize) -> Result<Vec<f32>, NnError> {
        let k = self.runner.members();
        let params = self.runner.params_mut();
        let n = params.len() / k;
        Ok(params[m * n..(m + 1) * n].to_vec())
    }
}

/// The dfdx path of a group: every live member's step as one tensor computation (a member
/// axis in front of every tensor, see [`super::tensor::group_loss_and_grad`]), its parameters
/// sent to the device once per step as alone.
struct TensorGroup<'a, D> {
    dev: D,
    cfg: &'a LmConfig,
    layout: &'a LmLayout,
    members: usize,
    /// Member-major.
    params: Vec<f32>,
}

impl<'a, D> TensorGroup<'a, D> {
    fn new(
        dev: D,
        cfg: &'a LmConfig,
        layout: &'a LmLayout,
        members: usize,
        params: Vec<f32>,
    ) -> Self {
        TensorGroup {
            dev,
            cfg,
            layout,
            members,
            params,
        }
    }
}

impl<D: dfdx::tensor_ops::Device<f32>> GroupModel for TensorGroup<'_, D> {
    type Batch = Batch;
    type Stats = ();

    fn members(&self) -> usize {
        self.members
    }

    fn loss_and_grad(
        &mut self,
        batches: &[&Batch],
        live: &[bool],
        grad: &mut Vec<f32>,
    ) -> Result<Vec<Loss<()>>, NnError> {
        let n = self.layout.total();
        grad.resize(self.members * n, 0.0);
        let mut losses = vec![Loss::default(); self.members];
        // A batch without weight is not computed (the loop stops its member), as alone.
        let mut run = Vec::new();
        for m in (0..self.members).filter(|&m| live[m]) {
            losses[m].weight = batches[m].weights.iter().map(|&w| f64::from(w)).sum();
            if losses[m].weight > 0.0 {
                run.push(m);
            }
        }
        if run.is_empty() {
            return Ok(losses);
        }
        let params: Vec<&[f32]> = run
            .iter()
            .map(|&m| &self.params[m * n..(m + 1) * n])
            .collect();
        let picked: Vec<&Batch> = run.iter().map(|&m| batches[m]).collect();
        let mut grads: Vec<&mut [f32]> = grad
            .chunks_exact_mut(n)
            .enumerate()
            .filter(|(m, _)| run.contains(m))
            .map(|(_, g)| g)
            .collect();
        let values = if picked.iter().all(|b| b.rows == picked[0].rows) {
            group_loss_and_grad(
                &self.dev,
                self.cfg,
                self.layout,
                &params,
                &picked,
                &mut grads,
            )?
        } else {
            // Members with batches of different rows cannot share one padded computation.
            let mut values = Vec::with_capacity(run.len());
            for ((p, b), g) in params.iter().zip(&picked).zip(&mut grads) {
                let (loss, one) = tensor_loss_and_grad(&self.dev, self.cfg, self.layout, p, b)?;
                g.copy_from_slice(&one);
                values.push(loss);
            }
            values
        };
        for (&m, value) in run.iter().zip(values) {
            losses[m].sum = f64::from(value) * losses[m].weight;
        }
        Ok(losses)
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self.params);
        Ok(())
    }

    fn params(&mut self, m: usize) -> Result<Vec<f32>, NnError> {
        let n = self.layout.total();
        Ok(self.params[m * n..(m + 1) * n].to_vec())
    }
}

#[cfg(test)]
mod tests;
