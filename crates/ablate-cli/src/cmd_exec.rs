//! `ablate exec BATCH`: the worker a Slurm task runs. It computes task
//! `SLURM_ARRAY_TASK_ID` of the batch file — one instance, or the members of a fused group as
//! one group — into the shared cache with exactly the protocol of a local run
//! ([`LocalExecutor::execute_group_blocking`]: each member its own lock, temp entry, commit or
//! failure), prints progress to the task's log, and exits 0 when every result is in the cache.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ablate_run::{CancelToken, GroupMember, LocalExecutor, Outcome, Progress};

use crate::cli::{ExecArgs, Global};
use crate::error::input;
use crate::load::open_store;
use crate::signals::{StopSignals, stop_on_signals};

pub fn exec(global: &Global, args: ExecArgs) -> anyhow::Result<u8> {
    let index = match args.index {
        Some(i) => i,
        None => std::env::var("SLURM_ARRAY_TASK_ID")
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                input(
                    "`ablate exec` runs inside a Slurm array task (SLURM_ARRAY_TASK_ID is not set)",
                    Some("pass `--index N` to run task N of the batch by hand".into()),
                )
            })?,
    };
    let task = ablate_run::slurm::read_batch_task(&args.batch, index)
        .map_err(|e| input(ablate_spec::error_chain(&e), None))?;
    let store = open_store(&global.cache)?;
    let workdir = std::env::current_dir()?;
    let registry = Arc::new(ablate_ops::Registry::builtin());
    let cache = store.root().to_owned();
    let executor = LocalExecutor::new(registry, store, workdir, env!("CARGO_PKG_VERSION"));
    let group = task.len() > 1;
    // Each attempt appends to the task's log (`--open-mode=append`): say which one this is.
    let restarts = std::env::var("SLURM_RESTART_COUNT")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if restarts > 0 {
        println!(
            "ablate exec: attempt {} of this task (requeued)",
            restarts + 1
        );
    }
    for (n, t) in task.iter().enumerate() {
        let member = if group {
            format!(", member {} of a fused group of {}", n + 1, task.len())
        } else {
            String::new()
        };
        println!(
            "ablate exec: {} (key {}) on {}, task {index} of {}{member}",
            t.job.id,
            t.job.key.short(),
            ablate_run::hostname(),
            args.batch.display()
        );
    }
    // One progress line every 10 s at most per member: the log is for people, not a stream.
    let progress: Vec<_> = task
        .iter()
        .map(|t| {
            let last = Mutex::new(Instant::now() - Duration::from_secs(60));
            let who = if group {
                format!("{} ", t.job.id)
            } else {
                String::new()
            };
            move |p: Progress| {
                let mut last = last.lock().expect("lock");
                if last.elapsed() >= Duration::from_secs(10) || (p.total > 0 && p.step == p.total) {
                    *last = Instant::now();
                    let loss = p.loss.map(|l| format!(" loss {l:.4}")).unwrap_or_default();
                    println!("  {who}{}/{}{loss}", p.step, p.total);
                }
            }
        })
        .collect();
    let members: Vec<GroupMember<'_>> = task
        .iter()
        .zip(&progress)
        .map(|(t, progress)| GroupMember {
            job: &t.job,
            force: t.force,
            progress,
            spent: ablate_run::slurm::spent(&cache, &t.job.key),
        })
        .collect();
    // Slurm sends SIGTERM at a time limit or on preemption: stop the instances as a local run
    // would (its `cmd` process group too, nothing half-written kept) instead of dying with it.
    let cancel = CancelToken::new();
    let stopped_by = Arc::new(AtomicU8::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = rt.block_on(async { StopSignals::install() })?;
    let (stop, code) = (cancel.clone(), Arc::clone(&stopped_by));
    std::thread::spawn(move || {
        rt.block_on(stop_on_signals(signals, stop, code, |s| {
            eprintln!("ablate exec: {}: stopping the instance(s)", s.name);
        }));
    });
    let t0 = Instant::now();
    let outcomes = executor.execute_group_blocking(&members, &cancel);
    // The task fails when any member did; the orchestrator tells which from the cache.
    let (mut failed, mut cancelled) = (false, false);
    let took = t0.elapsed();
    for (t, outcome) in task.iter().zip(outcomes) {
        let job = &t.job;
        // The time of an attempt that did not commit counts in the one that does (a requeue
        // after a time limit or a preemption, a retry), as `wall_time_s` (issue 24).
        if matches!(outcome, Outcome::Computed(_) | Outcome::CachedByOther(_)) {
            ablate_run::slurm::clear_spent(&cache, &job.key);
        } else if let Err(e) = ablate_run::slurm::add_spent(&cache, &job.key, took) {
            eprintln!(
                "ablate exec: warning: {} (the next attempt's wall time leaves this one out)",
                ablate_spec::error_chain(&e)
            );
        }
        match outcome {
            Outcome::Computed(m) => {
                println!(
                    "done in {:.1}s: {} ({})",
                    t0.elapsed().as_secs_f64(),
                    m.key,
                    job.id
                );
            }
            Outcome::CachedByOther(m) => {
                println!(
                    "already computed by another process: {} ({})",
                    m.key, job.id
                );
            }
            Outcome::Failed { error, log } | Outcome::Rejected { error, log } => {
                failed = true;
                eprintln!("ablate exec: {} failed: {error}", job.id);
                if let Some(log) = log {
                    eprintln!("  the attempt's files are kept in {}", log.display());
                }
            }
            Outcome::Paused { step, .. } => {
                println!(
                    "stopped at its early-stopping budget, step {step}: {} ({})",
                    job.key, job.id
                );
            }
            Outcome::Cancelled | Outcome::Detached { .. } => cancelled = true,
        }
    }
    Ok(if cancelled {
        match stopped_by.load(Ordering::SeqCst) {
            0 => crate::EXIT_INTERRUPTED,
            code => code,
        }
    } else if failed {
        crate::EXIT_FAILURE
    } else {
        crate::EXIT_OK
    })
}
