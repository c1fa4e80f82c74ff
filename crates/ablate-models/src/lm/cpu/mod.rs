//! The fast CPU path of the language models: [`LmConfig`]'s transformer, forward and
//! hand-written backward pass, on flat `f32` buffers that live as long as a [`Runner`].
//!
//! Dense layers run as one `gemm` over all the rows of a shard; attention runs per (row, head)
//! with strided `gemm`s reading the heads in place; LayerNorm, GELU, the masked softmax and the
//! cross-entropy are fused element-wise loops compiled for AVX2 as well as the baseline.
//!
//! A batch is cut into shards of whole rows, at most [`SHARD_TOKENS`] tokens each, a rule that
//! depends on the batch's shape alone; shards run on the core's [`Pool`] and their gradients
//! are summed in shard order, so results never depend on the thread count.
//!
//! Where the time goes (d_model 128, 2 layers, batch 32 × 128, `examples/lm_bench.rs`): ~80 %
//! in `gemm` at ~60 GFLOP/s a core, which is close to its ceiling on this AVX2 machine; the
//! fused loops (softmax, cross-entropy, GELU, LayerNorm) take most of the rest. That is about
//! PyTorch 2.15's speed on the same network (`scripts/bench_torch_lm.py`); what is left to win
//! is in the matrix products themselves.
//!
//! Masks never materialise: every query position attends to a prefix `0..lim` of the key
//! positions (causal: `t + 1`; a prefix-LM row with prefix `p`: `max(p, t + 1)`; the encoder
//! and cross-attention: the row's valid encoder length), and the softmax writes exact zeros
//! beyond `lim`.

mod attention;
mod fused;
mod group;
mod layers;
mod shard;
mod stack;

use std::ops::Range;
use std::sync::{Mutex, MutexGuard, RwLock};

pub(crate) use self::group::{GroupRunner, with_group_runner};
use self::shard::{Ctx, Rows};
pub(crate) use self::shard::{Task, Workspace};
use super::Batch;
use super::config::{Arch, LmConfig};
use super::layout::LmLayout;
use crate::NnError;
use crate::kernels;
use crate::pool::{self, MAX_SHARDS, Pool};

/// The most tokens (decoder plus encoder) one shard holds: 1024 gives a batch of 32 × 128 four
/// shards, two per core, with dense products still 1024 rows tall.
pub(crate) const SHARD_TOKENS: usize = 1024;
/// The rows of each shard of a batch of `rows` rows with `tokens_per_row` tokens each.
fn plan(rows: usize, tokens_per_row: usize) -> Vec<Range<usize>> {
    let per = (SHARD_TOKENS / tokens_per_row.max(1)).max(1);
    (0..rows)
        .step_by(per)
        .map(|r| r..(r + per).min(rows))
        .collect()
}

struct Job {
    task: Task,
    batch: Batch,
    at: Vec<usize>,
    scale: f32,
}

struct Shared {
    cfg: LmConfig,
    layout: LmLayout,
    params: RwLock<Vec<f32>>,
    job: RwLock<Job>,
    plan: RwLock<Vec<Range<usize>>>,
    workspaces: RwLock<Vec<Mutex<Workspace>>>,
    pool: Pool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn run_shard(&self, i: usize) {
        let params = self.params.read().unwrap_or_else(|e| e.into_inner());
        let job = self.job.read().unwrap_or_else(|e| e.into_inner());
        let plan = self.plan.read().unwrap_or_else(|e| e.into_inner());
        let wss = self.workspaces.read().unwrap_or_else(|e| e.into_inner());
        let mut ws = lock(&wss[i]);
        let range = plan[i].clone();
        let rows = Rows::of(&job.batch, range.clone());
        let ctx = Ctx {
            cfg: &self.cfg,
            layout: &self.layout,
            p: &params,
        };
        match job.task {
            Task::LossGrad => ctx.loss(&rows, &mut ws, job.scale, true),
            Task::Nll => ctx.loss(&rows, &mut ws, job.scale, false),
            Task::Encode => ctx.encode(&rows, &mut ws),
            Task::Greedy => ctx.greedy(&rows, &job.at[range], &mut ws),
        }
    }
}

/// A model's parameters with shard workspaces and pool helpers; see [`with_runner`].
pub(crate) struct Runner<'a> {
    shared: &'a Shared,
    work: &'a (dyn Fn(usize) + Sync),
}

/// Runs `body` with a runner over `params` whose shards run on `threads` threads (helpers
/// live as long as `body`).
pub(crate) fn with_runner<R>(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: Vec<f32>,
    threads: usize,
    body: impl FnOnce(&mut Runner<'_>) -> R,
) -> R {
    let shared = Shared {
        cfg: cfg.clone(),
        layout: layout.clone(),
        params: RwLock::new(params),
        job: RwLock::new(Job {
            task: Task::Nll,
            batch: Batch::default(),
            at: Vec::new(),
            scale: 1.0,
        }),
        plan: RwLock::new(Vec::new()),
        workspaces: RwLock::new(Vec::new()),
        pool: Pool::default(),
    };
    let work = |i: usize| shared.run_shard(i);
    pool::with_helpers(&shared.pool, threads.max(1) - 1, &work, || {
        body(&mut Runner {
            shared: &shared,
            work: &work,
        })
    })
}

impl Runner<'_> {
    /// Runs `task` over `batch`; with `keep_plan` the shards of the previous run are reused.
    fn run(&mut self, task: Task, batch: &Batch, at: &[usize], scale: f32, keep_plan: bool) {
        let s = self.shared;
        {
            let mut job = s.job.write().unwrap_or_else(|e| e.into_inner());
            job.task = task;
            job.batch.clone_from(batch);
            job.at.clear();
            job.at.extend_from_slice(at);
            job.scale = scale;
        }
        let count = {
            let mut plan = s.plan.write().unwrap_or_else(|e| e.into_inner());
            if !keep_plan {
                *plan = self::plan(batch.rows, batch.len + batch.enc_len);
            }
            assert!(plan.len() <= MAX_SHARDS, "too many shards");
            let mut wss = s.workspaces.write().unwrap_or_else(|e| e.into_inner());
            while wss.len() < plan.len() {
                wss.push(Mutex::new(Workspace::default()));
            }
            plan.len()
        };
        s.pool.run(count, self.work);
    }

    fn workspaces(&self) -> std::sync::RwLockReadGuard<'_, Vec<Mutex<Workspace>>> {
        self.shared
            .workspaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn shards(&self) -> usize {
        self.shared
            .plan
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The parameters, to read or update between runs.
    pub(crate) fn params_mut(&mut self) -> std::sync::RwLockWriteGuard<'_, Vec<f32>> {
        self.shared
            .params
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `(Σ w·nll, Σ w)` of a checked batch, and the gradient of `Σ w·nll / Σ w` in `grad`
    /// (resized to the parameter count).
    pub(crate) fn loss_and_grad(&mut self, batch: &Batch, grad: &mut Vec<f32>) -> (f64, f64) {
        let wsum = weight_sum(batch);
        let scale = if wsum > 0.0 { (1.0 / wsum) as f32 } else { 0.0 };
        self.run(Task::LossGrad, batch, &[], scale, false);
        grad.clear();
        grad.resize(self.shared.layout.total(), 0.0);
        let mut loss = 0.0;
        let wss = self.workspaces();
        for ws in wss.iter().take(self.shards()) {
            let ws = lock(ws);
            kernels::add_assign(grad, &ws.grad);
            loss += ws.loss;
        }
        (loss, wsum)
    }

    /// `(Σ w·nll, Σ w)` of a checked batch.
    pub(crate) fn nll(&mut self, batch: &Batch) -> (f64, f64) {
        self.run(Task::Nll, batch, &[], 0.0, false);
        let loss = self
            .workspaces()
            .iter()
            .take(self.shards())
            .map(|ws| lock(ws).loss)
            .sum();
        (loss, weight_sum(batch))
    }

    /// Runs the encoder over `batch`'s encoder rows, kept for [`Runner::greedy`].
    pub(crate) fn encode(&mut self, batch: &Batch) {
        self.run(Task::Encode, batch, &[], 0.0, false);
    }

    /// The argmax token at position `at[r]` of each row. For an encdec model `batch` must have
    /// the rows (and encoder) of the last [`Runner::encode`], whose output it reuses.
    pub(crate) fn greedy(&mut self, batch: &Batch, at: &[usize]) -> Vec<u32> {
        let keep = self.shared.cfg.arch == Arch::EncDec;
        self.run(Task::Greedy, batch, at, 0.0, keep);
        let mut out = Vec::with_capacity(batch.rows);
        for ws in self.workspaces().iter().take(self.shards()) {
            out.extend_from_slice(&lock(ws).next);
        }
        out
    }
}

fn weight_sum(batch: &Batch) -> f64 {
    batch.weights.iter().map(|&w| w as f64).sum()
}

/// Checks that `batch` fits `cfg`: shapes, token ids, lengths, prefixes and the layout its
/// architecture expects.
pub(crate) fn check_batch(cfg: &LmConfig, batch: &Batch) -> Result<(), NnError> {
    let bad = |m: String| Err(NnError::InvalidData(m));
    batch.check(cfg.vocab).map_err(NnError::InvalidData)?;
    if batch.len > cfg.seq_len || batch.enc_len > cfg.seq_len {
        return bad(format!(
            "batch sequences of length {} (encoder {}) exceed the model's `seq_len` {}",
            batch.len, batch.enc_len, cfg.seq_len
        ));
    }
    if let Some(w) = batch.weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
        return bad(format!(
            "loss weight {w} is not a finite non-negative number"
        ));
    }
    match cfg.arch {
        Arch::Decoder => {
            if batch.enc_len > 0 {
                return bad("a decoder-only model got encoder tokens".into());
            }
            if let Some(p) = batch.prefix.iter().find(|&&p| p > batch.len) {
                return bad(format!(
                    "prefix {p} is longer than the rows ({})",
                    batch.len
                ));
            }
        }
        Arch::EncDec => {
            if batch.rows > 0 && batch.enc_len == 0 {
                return bad("an encoder-decoder model got no encoder tokens".into());
            }
            if batch.prefix.iter().any(|&p| p != 0) {
                return bad(
                    "an encoder-decoder batch has a decoder prefix (they are causal)".into(),
                );
            }
            if let Some(l) = batch.enc_lens.iter().find(|&&l| l > batch.enc_len) {
                return bad(format!(
                    "encoder length {l} exceeds the encoder rows ({})",
                    batch.enc_len
                ));
            }
        }
    }
    Ok(())
}

/// The loss `Σ w·nll / Σ w` of `batch` and its gradient, flat in layout order.
// One-shot entry point for tests and for checking other backends against this one.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn cpu_loss_and_grad(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
    threads: usize,
) -> Result<(f32, Vec<f32>), NnError> {
    cfg.validate()?;
    check_batch(cfg, batch)?;
    if params.len() != layout.total() {
        return Err(NnError::InvalidConfig(format!(
            "{} parameters for a layout of {}",
            params.len(),
            layout.total()
        )));
    }
    let mut grad = Vec::new();
    let (loss, wsum) = with_runner(cfg, layout, params.to_vec(), threads, |r| {
        r.loss_and_grad(batch, &mut grad)
    });
    if wsum <= 0.0 {
        return Err(NnError::InvalidData(
            "the batch has no position with a positive loss weight".into(),
        ));
    }
    Ok(((loss / wsum) as f32, grad))
}

/// The logits at every decoder position of `batch` (`rows × len × vocab`), forward only.
pub(crate) fn cpu_logits(
    cfg: &LmConfig,
    layout: &LmLayout,
    params: &[f32],
    batch: &Batch,
) -> Result<Vec<f32>, NnError> {
    cfg.validate()?;
    check_batch(cfg, batch)?;
    let mut ws = Workspace::default();
    let ctx = Ctx {
        cfg,
        layout,
        p: params,
    };
    let rows = Rows::of(batch, 0..batch.rows);
    if cfg.arch == Arch::EncDec {
        ctx.encode(&rows, &mut ws);
    }
    ctx.decode(&rows, &mut ws);
    ws.picked.clear();
    ws.picked.extend(0..batch.rows * batch.len);
    ctx.head(&mut ws);
    Ok(ws.logits)
}

#[cfg(test)]
mod tests;
