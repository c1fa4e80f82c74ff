//! Several same-shaped language models (a fused sweep's members) on one pool: each step, every
//! live member's batch is cut into shards exactly as [`super::Runner`] cuts it, all members'
//! shards run as one set of tasks over the group's threads, and each member's shard gradients
//! are summed in shard order. A member's numbers are therefore those of its own run alone,
//! bit for bit, whatever the thread count or the other members: the products are the same
//! products in the same order, only which thread runs them differs.
//!
//! At the sizes the pipelines train (batch 16 × 64 tokens: one shard) a model alone keeps one
//! thread busy; a group keeps them all busy with whole members' shards.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard, RwLock, TryLockError};

use super::shard::{Ctx, Rows, Workspace};
use super::{lock, plan, weight_sum};
use crate::kernels;
use crate::lm::Batch;
use crate::lm::config::LmConfig;
use crate::lm::layout::LmLayout;
use crate::pool::{self, MAX_SHARDS, Pool};

/// A live member's batch this step and the scale of its loss (`1 / Σ w`).
#[derive(Default)]
struct MemberJob {
    batch: Batch,
    scale: f32,
}

/// One task: rows `rows` of member `member`'s batch.
struct Piece {
    member: usize,
    rows: Range<usize>,
}

/// What a task leaves: its gradient (the workspace's buffer, swapped out) and `Σ w·nll`.
#[derive(Default)]
struct Out {
    grad: Vec<f32>,
    loss: f64,
}

struct Shared {
    cfg: LmConfig,
    layout: LmLayout,
    members: usize,
    /// Every member's parameters, member-major.
    params: RwLock<Vec<f32>>,
    jobs: RwLock<Vec<MemberJob>>,
    pieces: RwLock<Vec<Piece>>,
    outs: RwLock<Vec<Mutex<Out>>>,
    /// One per thread: at most that many tasks run at once, so a task always finds one free.
    workspaces: Vec<Mutex<Workspace>>,
    pool: Pool,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn run_piece(&self, i: usize) {
        let params = read(&self.params);
        let jobs = read(&self.jobs);
        let pieces = read(&self.pieces);
        let outs = read(&self.outs);
        let piece = &pieces[i];
        let job = &jobs[piece.member];
        let n = self.layout.total();
        let mut ws = self.free_workspace();
        let ctx = Ctx {
            cfg: &self.cfg,
            layout: &self.layout,
            p: &params[piece.member * n..(piece.member + 1) * n],
        };
        ctx.loss(
            &Rows::of(&job.batch, piece.rows.clone()),
            &mut ws,
            job.scale,
            true,
        );
        let mut out = lock(&outs[i]);
        std::mem::swap(&mut out.grad, &mut ws.grad);
        out.loss = ws.loss;
    }

    /// A workspace no other task holds. Every buffer a task reads is sized and written by the
    /// task first, so which workspace it gets never shows in what it computes.
    fn free_workspace(&self) -> MutexGuard<'_, Workspace> {
        loop {
            for ws in &self.workspaces {
                match ws.try_lock() {
                    Ok(guard) => return guard,
                    Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                    Err(TryLockError::WouldBlock) => {}
                }
            }
            std::hint::spin_loop();
        }
    }
}

/// A group's parameters with workspaces and pool helpers; see [`with_group_runner`].
pub(crate) struct GroupRunner<'a> {
    shared: &'a Shared,
    work: &'a (dyn Fn(usize) + Sync),
}

/// Runs `body` with a runner over `members` models' parameters (`params`, member-major)
/// whose shards run on `threads` threads.
pub(crate) fn with_group_runner<R>(
    cfg: &LmConfig,
    layout: &LmLayout,
    members: usize,
    params: Vec<f32>,
    threads: usize,
    body: impl FnOnce(&mut GroupRunner<'_>) -> R,
) -> R {
    assert_eq!(
        params.len(),
        members * layout.total(),
        "member-major params"
    );
    let threads = threads.max(1);
    let shared = Shared {
        cfg: cfg.clone(),
        layout: layout.clone(),
        members,
        params: RwLock::new(params),
        jobs: RwLock::new((0..members).map(|_| MemberJob::default()).collect()),
        pieces: RwLock::new(Vec::new()),
        outs: RwLock::new(Vec::new()),
        workspaces: (0..threads)
            .map(|_| Mutex::new(Workspace::default()))
            .collect(),
        pool: Pool::default(),
    };
    let work = |i: usize| shared.run_piece(i);
    pool::with_helpers(&shared.pool, threads - 1, &work, || {
        body(&mut GroupRunner {
            shared: &shared,
            work: &work,
        })
    })
}

impl GroupRunner<'_> {
    pub(crate) fn members(&self) -> usize {
        self.shared.members
    }

    /// Every member's parameters, member-major, to read or update between steps.
    pub(crate) fn params_mut(&mut self) -> std::sync::RwLockWriteGuard<'_, Vec<f32>> {
        write(&self.shared.params)
    }

    /// For each member, `(Σ w·nll, Σ w)` of its checked batch and, in its part of `grad`
    /// (resized to `members × n`), the gradient of `Σ w·nll / Σ w`, as
    /// [`super::Runner::loss_and_grad`] computes them. Members where `live` is false are
    /// skipped (`(0, 0)`, their part of `grad` left as it was).
    pub(crate) fn loss_and_grad(
        &mut self,
        batches: &[&Batch],
        live: &[bool],
        grad: &mut Vec<f32>,
    ) -> Vec<(f64, f64)> {
        let s = self.shared;
        let (k, n) = (s.members, s.layout.total());
        assert!(
            batches.len() == k && live.len() == k,
            "one batch per member"
        );
        let mut sums = vec![(0.0, 0.0); k];
        let count = {
            let mut jobs = write(&s.jobs);
            let mut pieces = write(&s.pieces);
            pieces.clear();
            for m in (0..k).filter(|&m| live[m]) {
                let batch = batches[m];
                let wsum = weight_sum(batch);
                sums[m].1 = wsum;
                jobs[m].scale = if wsum > 0.0 { (1.0 / wsum) as f32 } else { 0.0 };
                jobs[m].batch.clone_from(batch);
                pieces.extend(
                    plan(batch.rows, batch.len + batch.enc_len)
                        .into_iter()
                        .map(|rows| Piece { member: m, rows }),
                );
            }
            assert!(pieces.len() <= MAX_SHARDS, "too many shards");
            let mut outs = write(&s.outs);
            while outs.len() < pieces.len() {
                outs.push(Mutex::new(Out::default()));
            }
            pieces.len()
        };
        s.pool.run(count, self.work);
        grad.resize(k * n, 0.0);
        let pieces = read(&s.pieces);
        let outs = read(&s.outs);
        let mut at = 0;
        for m in (0..k).filter(|&m| live[m]) {
            let g = &mut grad[m * n..(m + 1) * n];
            g.fill(0.0);
            let mut loss = 0.0;
            while at < pieces.len() && pieces[at].member == m {
                let out = lock(&outs[at]);
                kernels::add_assign(g, &out.grad);
                loss += out.loss;
                at += 1;
            }
            sums[m].0 = loss;
        }
        sums
    }
}
