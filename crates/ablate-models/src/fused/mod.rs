//! Fused training of a sweep's flows (issue 23): members that share a [`FlowConfig`] and a step
//! schedule (batch size, epochs, data sets of one length and dimension) but differ in seed,
//! learning rate, weight decay and Lipschitz bound, trained as one [`GroupModel`] through the
//! core's [`ablate_nn::train_group`].
//!
//! On the CPU backend the members' arithmetic runs in *member lanes*: every buffer element is a
//! vector with one lane per member ([`lanes::LANES`] members per block), and each lane does
//! exactly the scalar operations the unfused path does, in the same order — so every member's
//! parameters, losses and logs are bit-identical to `train_flow_with` run alone on it. Where a
//! shape would take a `gemm` path whose order the lanes do not copy (a dimension below 2, an
//! inner size above 512), or the CPU lacks FMA, the members run one by one through the unfused
//! kernels inside the same group (bit-identical by construction, just not faster). Lane blocks
//! (or members) are split across the group's threads, so the result never depends on the
//! thread count.
//!
//! On the dfdx backends (`Backend::Dfdx`, CUDA) the members run as one tensor computation with
//! a leading member axis ([`tensor`]), equal to each member's unfused tensor run within rounding.

mod lanes;
mod net;
mod tensor;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, RwLock};

use ablate_nn::{AdamW, GroupModel, Kind, Loss, Observer, Runtime, TrainState, catching};

use crate::cpu::{BatchStats, Net, Workspace, shards};
use crate::params::Layout;
use crate::pool::{self, Pool};
use crate::train::{
    Accuracy, Minibatch, Shuffled, Span, check, group_optimizer, plan, plan_per_epoch, start_params,
};
use crate::{Dataset, ExecOptions, Flow, FlowConfig, NnError, TrainConfig};
use lanes::{LANES, V, ZERO};
use net::{BlockNet, BlockWs};

/// What members of one fused group may differ in; everything else of their [`TrainConfig`]
/// (`epochs`, `batch`) and their data sets' length and dimension must agree.
pub const FUSIBLE_TRAIN_FIELDS: &[&str] = &["seed", "lr", "weight_decay", "lipschitz"];

/// Whether this CPU can run the lane kernels: x86-64 with FMA (what makes `gemm` take the
/// kernel whose order they copy) and AVX2.
pub(crate) fn lanes_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether every product of a step of `cfg` on batches of `batch` from `n` examples takes a
/// `gemm` path the lanes copy: each dimension at least 2 (else `gemv`), each inner size at
/// most 512 (one depth block).
fn lanes_fit(cfg: &FlowConfig, batch: usize, n: usize) -> bool {
    let last = match n % batch {
        0 => batch.min(n),
        r => r,
    };
    let dims = [cfg.dim, cfg.hidden, cfg.classes];
    let lift_ok = !cfg.has_lift() || (2..=512).contains(&cfg.in_dim);
    batch.min(n) >= 2 && last >= 2 && dims.iter().all(|d| (2..=512).contains(d)) && lift_ok
}

/// Whether a CPU group of `cfg` on batches of `batch` from `n` examples runs in member lanes
/// (else one member at a time).
pub(crate) fn uses_lanes(cfg: &FlowConfig, batch: usize, n: usize) -> bool {
    lanes_available() && lanes_fit(cfg, batch, n)
}

/// Trains the members of a fused sweep: member `m` is `cfg` trained with `members[m]` on
/// `data[m]`, reporting to `observers[m]`, exactly as [`crate::train_flow_with`] would train it
/// alone (bit for bit on the CPU backend).
///
/// The outer `Err` is the whole group's failure (a bad `cfg`, members whose schedules differ, a
/// device that will not open); an inner `Err` is that member's alone (an invalid setting or data
/// set of its own, divergence, cancellation by its observer), with the error it would have had
/// alone.
pub fn train_flow_group(
    cfg: &FlowConfig,
    members: &[TrainConfig],
    data: &[&Dataset],
    exec: &ExecOptions,
    observers: &mut [&mut dyn Observer<Accuracy>],
) -> Result<Vec<Result<Flow, NnError>>, NnError> {
    let from = vec![None; members.len()];
    let stop = members.first().map_or(0, |t| t.epochs);
    let done = train_flow_group_span(cfg, members, data, exec, &from, stop, observers)?;
    Ok(done.into_iter().map(|r| r.map(|(flow, _)| flow)).collect())
}

/// A member's outcome in [`train_flow_group_span`]: its flow and the state it stopped in.
pub type SpanOutcome = Result<(Flow, TrainState), NnError>;

/// [`train_flow_group`] over a span (early stopping, #24): member `m` starts from `from[m]`
/// (or scratch) and every member stops after epoch `stop`, as [`crate::train_flow_span`] would
/// train it alone. Members resume from one step (a group whose states differ in step is the
/// group's error: train such members in separate groups).
pub fn train_flow_group_span(
    cfg: &FlowConfig,
    members: &[TrainConfig],
    data: &[&Dataset],
    exec: &ExecOptions,
    from: &[Option<&TrainState>],
    stop: usize,
    observers: &mut [&mut dyn Observer<Accuracy>],
) -> Result<Vec<SpanOutcome>, NnError> {
    let start = from.first().copied().flatten().map(|s| s.step);
    if from.len() != members.len() || from.iter().any(|f| f.map(|s| s.step) != start) {
        return Err(NnError::InvalidConfig(
            "failed to fuse the group: its members resume from different steps (hint: train \
             them in separate groups)"
                .into(),
        ));
    }
    if data.len() != members.len() || observers.len() != members.len() {
        return Err(NnError::InvalidConfig(format!(
            "a fused group needs one data set and one observer per member: {} members, {} data \
             sets, {} observers",
            members.len(),
            data.len(),
            observers.len()
        )));
    }
    cfg.validate()?;
    let mut out: Vec<Option<SpanOutcome>> = (0..members.len()).map(|_| None).collect();
    // A member whose own settings, data or state are invalid fails alone, as it would unfused.
    let mut ok = Vec::new();
    for (m, (train, d)) in members.iter().zip(data).enumerate() {
        let span = Span {
            from: from[m],
            stop,
        };
        match check(cfg, train, d).and_then(|layout| {
            start_params(&layout, train, from[m])?;
            span.steps(plan(d, train))
        }) {
            Ok(_) => ok.push(m),
            Err(e) => out[m] = Some(Err(e)),
        }
    }
    same_schedule(members, data, &ok)?;
    match Runtime::open(exec)?.into_kind() {
        Kind::Cpu { threads } => {
            let mut obs: Vec<&mut dyn Observer<Accuracy>> = Vec::new();
            let mut picked = ok.iter().peekable();
            for (m, o) in observers.iter_mut().enumerate() {
                if picked.peek() == Some(&&m) {
                    picked.next();
                    obs.push(&mut **o);
                }
            }
            let trains: Vec<&TrainConfig> = ok.iter().map(|&m| &members[m]).collect();
            let sets: Vec<&Dataset> = ok.iter().map(|&m| data[m]).collect();
            let states: Vec<Option<&TrainState>> = ok.iter().map(|&m| from[m]).collect();
            let done = train_cpu(cfg, &trains, &sets, &states, stop, threads, &mut obs)?;
            for (&m, r) in ok.iter().zip(done) {
                out[m] = Some(r);
            }
        }
        Kind::Dfdx(dev) => {
            let done =
                catching(|| tensor::train(&dev, cfg, members, data, from, stop, &ok, observers))?;
            for (&m, r) in ok.iter().zip(done) {
                out[m] = Some(r);
            }
        }
        #[cfg(feature = "cuda")]
        Kind::Cuda { dev, .. } => {
            let done =
                catching(|| tensor::train(&dev, cfg, members, data, from, stop, &ok, observers))?;
            for (&m, r) in ok.iter().zip(done) {
                out[m] = Some(r);
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every member has a result"))
        .collect())
}

/// Checks that the members `ok` share the step schedule: batch size, epochs, and the length
/// of their data sets (their dimension is the model's, checked per member).
fn same_schedule(members: &[TrainConfig], data: &[&Dataset], ok: &[usize]) -> Result<(), NnError> {
    let Some(&first) = ok.first() else {
        return Ok(());
    };
    for &m in &ok[1..] {
        let differs = |what: &str, a: usize, b: usize| {
            Err(NnError::InvalidConfig(format!(
                "failed to fuse the group: member {m} has {what} {b} but member {first} has {a}; \
                 fused members must share the step schedule (hint: train them in separate \
                 groups)"
            )))
        };
        let (a, b) = (&members[first], &members[m]);
        if a.batch != b.batch {
            return differs("`batch` =", a.batch, b.batch);
        }
        if a.epochs != b.epochs {
            return differs("`epochs` =", a.epochs, b.epochs);
        }
        if data[first].len() != data[m].len() {
            return Err(NnError::InvalidData(format!(
                "failed to fuse the group: member {m}'s data set has {} examples but member \
                 {first}'s has {}; fused members must share the step schedule (hint: train \
                 them in separate groups)",
                data[m].len(),
                data[first].len()
            )));
        }
    }
    Ok(())
}

/// The CPU backend's group: valid members with one schedule.
fn train_cpu(
    cfg: &FlowConfig,
    trains: &[&TrainConfig],
    data: &[&Dataset],
    from: &[Option<&TrainState>],
    stop: usize,
    threads: usize,
    observers: &mut [&mut dyn Observer<Accuracy>],
) -> Result<Vec<SpanOutcome>, NnError> {
    let k = trains.len();
    if k == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::new(cfg);
    let n = layout.total();
    let mut params = Vec::with_capacity(k * n);
    for (t, f) in trains.iter().zip(from) {
        params.extend(start_params(&layout, t, *f)?);
    }
    let batch = trains[0].batch.min(data[0].len());
    let engine = if uses_lanes(cfg, trains[0].batch, data[0].len()) {
        Engine::Lanes
    } else {
        Engine::OneByOne
    };
    let rows: Vec<usize> = shards(batch).map(|r| r.len()).collect();
    let max_rows = rows.iter().copied().max().unwrap_or(0);
    let units = match engine {
        Engine::Lanes => k.div_ceil(LANES),
        Engine::OneByOne => k,
    };
    let work: Vec<Mutex<Unit>> = (0..units)
        .map(|_| {
            Mutex::new(match engine {
                Engine::Lanes => Unit::Block(Box::new(Block {
                    p: vec![ZERO; n],
                    x: Vec::new(),
                    y: Vec::new(),
                    ws: BlockWs::new(cfg, &layout, max_rows),
                    loss: [0.0; LANES],
                    correct: [0; LANES],
                    grad: vec![0.0; LANES * n],
                    norms: [0.0; LANES],
                })),
                Engine::OneByOne => Unit::Member(Box::new(OneMember {
                    ws: Workspace::new(cfg, &layout, max_rows, true),
                    total: vec![0.0; n],
                    stats: BatchStats::default(),
                    norm: 0.0,
                })),
            })
        })
        .collect();
    let shared = Shared {
        cfg: cfg.clone(),
        layout: layout.clone(),
        n,
        k,
        params: RwLock::new(params),
        batch: RwLock::new(GroupBatch::default()),
        units: work,
        pool: Pool::default(),
        lipschitz: trains.iter().map(|t| t.lipschitz).collect(),
    };
    let run_unit = |u: usize| shared.run_unit(u);
    let helpers = threads.clamp(1, units) - 1;
    let plan = plan(data[0], trains[0]);
    let (mut opt, steps, mut sources) = resume(&layout, trains, data, from, stop, plan)?;
    let results = pool::with_helpers(&shared.pool, helpers, &run_unit, || {
        let mut model = GroupTrainer {
            shared: &shared,
            work: &run_unit,
            norms: Vec::new(),
        };
        let mut batches: Vec<&mut dyn ablate_nn::Batches<Minibatch>> = sources
            .iter_mut()
            .map(|s| s as &mut dyn ablate_nn::Batches<Minibatch>)
            .collect();
        ablate_nn::train_group_span(
            &mut model,
            &mut opt,
            plan,
            steps.clone(),
            &mut batches,
            observers,
        )
    })?;
    let params = shared
        .params
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    Ok(outcomes(cfg, &layout, &params, &opt, steps.end, results))
}

/// A group's optimizer (each replica restored from its member's state), the steps it trains,
/// and each member's batches put where its span starts.
fn resume<'d>(
    layout: &Layout,
    trains: &[&TrainConfig],
    data: &[&'d Dataset],
    from: &[Option<&TrainState>],
    stop: usize,
    plan: ablate_nn::Plan,
) -> Result<(AdamW, std::ops::Range<usize>, Vec<Shuffled<'d>>), NnError> {
    let mut opt = group_optimizer(layout, trains);
    for (m, f) in from.iter().enumerate() {
        if let Some(f) = f {
            opt.restore(m, &f.adam)?;
        }
    }
    let steps = Span {
        from: from.first().copied().flatten(),
        stop,
    }
    .steps(plan)?;
    let epoch = steps.start / plan_per_epoch(plan);
    let sources = trains
        .iter()
        .zip(data)
        .map(|(t, d)| {
            let mut s = Shuffled::new(d, t);
            s.skip_epochs(epoch);
            s
        })
        .collect();
    Ok((opt, steps, sources))
}

/// Each member's flow and state (`params` member-major) after step `step`, or its error.
fn outcomes(
    cfg: &FlowConfig,
    layout: &Layout,
    params: &[f32],
    opt: &AdamW,
    step: usize,
    results: Vec<ablate_nn::MemberResult<Accuracy>>,
) -> Vec<SpanOutcome> {
    let n = layout.total();
    results
        .into_iter()
        .enumerate()
        .map(|(m, r)| {
            r.and_then(|_| {
                let p = params[m * n..(m + 1) * n].to_vec();
                let state = TrainState {
                    step,
                    params: p.clone(),
                    adam: opt.state(m),
                };
                Ok((Flow::from_parts(cfg.clone(), layout.clone(), p)?, state))
            })
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// Member lanes, [`LANES`] members per unit of work.
    Lanes,
    /// The unfused kernels, one member per unit of work.
    OneByOne,
}

/// One lane block's state.
struct Block {
    /// Its members' parameters, lane layout.
    p: Vec<V>,
    x: Vec<V>,
    y: Vec<[u32; LANES]>,
    ws: BlockWs,
    /// Per lane: the batch's loss sum and correct count (shards summed in order).
    loss: [f64; LANES],
    correct: [usize; LANES],
    /// Its members' gradients, member-major (lane `l` at `l·n..`), copied out of the lanes on
    /// the block's own thread, and their norms (see [`grad_norms`]).
    grad: Vec<f32>,
    norms: [f32; LANES],
}

struct OneMember {
    ws: Workspace,
    total: Vec<f32>,
    stats: BatchStats,
    /// `total`'s norm (see [`grad_norms`]).
    norm: f32,
}

/// Each lane's gradient norm as [`ablate_nn::AdamW::grad_norms`] computes a member's: the
/// squares summed in f64 in parameter order, so the same bits, computed on the unit's thread
/// instead of the loop's.
fn grad_norms(total: &[V]) -> [f32; LANES] {
    let mut acc = [-0.0f64; LANES];
    for t in total {
        for (a, &g) in acc.iter_mut().zip(&t.0) {
            *a += g as f64 * g as f64;
        }
    }
    acc.map(|a| a.sqrt() as f32)
}

enum Unit {
    Block(Box<Block>),
    Member(Box<OneMember>),
}

/// The current step's batches, one per member, and which members are live.
#[derive(Default)]
struct GroupBatch {
    x: Vec<Vec<f32>>,
    y: Vec<Vec<u32>>,
    live: Vec<bool>,
    shards: Vec<std::ops::Range<usize>>,
}

struct Shared {
    cfg: FlowConfig,
    layout: Layout,
    /// Parameters per member.
    n: usize,
    /// Members.
    k: usize,
    /// Member-major, as the optimizer updates them.
    params: RwLock<Vec<f32>>,
    batch: RwLock<GroupBatch>,
    units: Vec<Mutex<Unit>>,
    pool: Pool,
    lipschitz: Vec<Option<f32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Forward, loss and backward of every shard of unit `u`'s members.
    fn run_unit(&self, u: usize) {
        let params = self.params.read().unwrap_or_else(|e| e.into_inner());
        let batch = self.batch.read().unwrap_or_else(|e| e.into_inner());
        let mut unit = lock(&self.units[u]);
        let (n, in_dim) = (self.n, self.cfg.in_dim);
        let rows = batch.y.iter().map(Vec::len).max().unwrap_or(0);
        let scale = 1.0 / rows as f32;
        match &mut *unit {
            Unit::Member(one) => {
                let m = u;
                if !batch.live[m] {
                    return;
                }
                let net = Net {
                    cfg: &self.cfg,
                    layout: &self.layout,
                    p: &params[m * n..(m + 1) * n],
                };
                let (x, y) = (&batch.x[m], &batch.y[m]);
                for (s, r) in batch.shards.iter().enumerate() {
                    net.shard_step(
                        &x[r.start * in_dim..r.end * in_dim],
                        &y[r.clone()],
                        scale,
                        &mut one.ws,
                    );
                    let (g, stats) = one.ws.shard_result();
                    if s == 0 {
                        one.total.copy_from_slice(g);
                        one.stats = stats;
                    } else {
                        crate::kernels::add_assign(&mut one.total, g);
                        one.stats.loss_sum += stats.loss_sum;
                        one.stats.correct += stats.correct;
                    }
                }
                one.norm = one
                    .total
                    .iter()
                    .map(|&g| g as f64 * g as f64)
                    .sum::<f64>()
                    .sqrt() as f32;
            }
            Unit::Block(block) => {
                let Block {
                    p,
                    x,
                    y,
                    ws,
                    loss,
                    correct,
                    grad,
                    norms,
                } = &mut **block;
                let members: Vec<Option<usize>> = (0..LANES)
                    .map(|l| {
                        let m = u * LANES + l;
                        (m < self.k && batch.live[m]).then_some(m)
                    })
                    .collect();
                // Parameters into lanes; a stopped member's or an empty lane's are zeros (its
                // lane is computed and ignored; zeros keep it finite and fast).
                for (i, pv) in p.iter_mut().enumerate() {
                    *pv = V(std::array::from_fn(|l| match members[l] {
                        Some(m) => params[m * n + i],
                        None => 0.0,
                    }));
                }
                x.clear();
                x.extend((0..rows * in_dim).map(|i| {
                    V(std::array::from_fn(|l| match members[l] {
                        Some(m) => batch.x[m][i],
                        None => 0.0,
                    }))
                }));
                y.clear();
                y.extend((0..rows).map(|r| -> [u32; LANES] {
                    std::array::from_fn(|l| match members[l] {
                        Some(m) => batch.y[m][r],
                        None => 0,
                    })
                }));
                let net = BlockNet {
                    cfg: &self.cfg,
                    layout: &self.layout,
                    p,
                };
                for (s, r) in batch.shards.iter().enumerate() {
                    net.shard_step(
                        &x[r.start * in_dim..r.end * in_dim],
                        &y[r.clone()],
                        scale,
                        ws,
                    );
                    if s == 0 {
                        ws.total.copy_from_slice(&ws.grad);
                        *loss = ws.loss_sum;
                        *correct = ws.correct;
                    } else {
                        lanes::add_assign(&mut ws.total, &ws.grad);
                        for l in 0..LANES {
                            loss[l] += ws.loss_sum[l];
                            correct[l] += ws.correct[l];
                        }
                    }
                }
                // Out of the lanes into member-major order here, not on the loop's thread.
                for (i, t) in ws.total.iter().enumerate() {
                    for l in 0..LANES {
                        grad[l * n + i] = t.0[l];
                    }
                }
                *norms = grad_norms(&ws.total);
            }
        }
    }
}

/// The group as the core's loop sees it.
struct GroupTrainer<'a> {
    shared: &'a Shared,
    work: &'a (dyn Fn(usize) + Sync),
    /// The last [`GroupModel::loss_and_grad`]'s gradient norms, computed by the units.
    norms: Vec<f32>,
}

impl GroupModel for GroupTrainer<'_> {
    type Batch = Minibatch;
    type Stats = Accuracy;

    fn members(&self) -> usize {
        self.shared.k
    }

    fn loss_and_grad(
        &mut self,
        batches: &[&Minibatch],
        live: &[bool],
        grad: &mut Vec<f32>,
    ) -> Result<Vec<Loss<Accuracy>>, NnError> {
        let sh = self.shared;
        let (k, n) = (sh.k, sh.n);
        let rows = batches[0].y.len();
        {
            let mut b = sh.batch.write().unwrap_or_else(|e| e.into_inner());
            b.x.resize(k, Vec::new());
            b.y.resize(k, Vec::new());
            for (m, mb) in batches.iter().enumerate() {
                b.x[m].clear();
                b.x[m].extend_from_slice(&mb.x);
                b.y[m].clear();
                b.y[m].extend_from_slice(&mb.y);
            }
            b.live.clear();
            b.live.extend_from_slice(live);
            b.shards.clear();
            b.shards.extend(shards(rows));
        }
        sh.pool.run(sh.units.len(), self.work);
        grad.resize(k * n, 0.0);
        self.norms.clear();
        self.norms.resize(k, 0.0);
        let mut losses = vec![Loss::default(); k];
        for (u, unit) in sh.units.iter().enumerate() {
            match &*lock(unit) {
                Unit::Member(one) => {
                    if live[u] {
                        grad[u * n..(u + 1) * n].copy_from_slice(&one.total);
                        self.norms[u] = one.norm;
                        losses[u] = one.stats.loss(rows);
                    }
                }
                Unit::Block(block) => {
                    // Whole members, lanes past `k` left out; a stopped member's part is
                    // copied too (the loop ignores it).
                    let first = u * LANES;
                    let here = LANES.min(k - first);
                    grad[first * n..(first + here) * n].copy_from_slice(&block.grad[..here * n]);
                    self.norms[first..first + here].copy_from_slice(&block.norms[..here]);
                    for l in 0..here {
                        let m = first + l;
                        if !live[m] {
                            continue;
                        }
                        losses[m] = BatchStats {
                            loss_sum: block.loss[l],
                            correct: block.correct[l],
                        }
                        .loss(rows);
                    }
                }
            }
        }
        Ok(losses)
    }

    fn grad_norms(&mut self, _grad: &[f32], _opt: &AdamW) -> Vec<f32> {
        std::mem::take(&mut self.norms)
    }

    fn update(&mut self, f: &mut dyn FnMut(&mut [f32])) -> Result<(), NnError> {
        f(&mut self
            .shared
            .params
            .write()
            .unwrap_or_else(|e| e.into_inner()));
        Ok(())
    }

    fn constrain(&mut self, _lrs: &[f32], live: &[bool]) -> Result<(), NnError> {
        let sh = self.shared;
        let mut p = sh.params.write().unwrap_or_else(|e| e.into_inner());
        for (m, c) in sh.lipschitz.iter().enumerate() {
            if let (Some(c), true) = (c, live[m]) {
                crate::constrain::project(
                    &sh.cfg,
                    &sh.layout,
                    *c,
                    &mut p[m * sh.n..(m + 1) * sh.n],
                );
            }
        }
        Ok(())
    }

    fn params(&mut self, m: usize) -> Result<Vec<f32>, NnError> {
        let n = self.shared.n;
        Ok(
            self.shared.params.read().unwrap_or_else(|e| e.into_inner())[m * n..(m + 1) * n]
                .to_vec(),
        )
    }
}
