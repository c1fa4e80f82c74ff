use std::io::IsTerminal as _;
use std::sync::Arc;

use ablate_cache::CachedEntry;
use ablate_plan::PlanIndex;
use ablate_run::{
    CancelToken, Executor, Job, LocalExecutor, Outcome, RunEvent, RunOptions, SkipCause,
    SlurmExecutor, SlurmSettings,
};
use ablate_spec::{Device, ExecutorKind};
use anyhow::Context as _;

use crate::cli::{Global, RunArgs};
use crate::cmd_report::{self, RunFacts};
use crate::error::input;
use crate::load::{Loaded, check_instances, executor_config, load, on_device, open_store};
use crate::report::{Mode, Reporter};
use crate::results::{self, Completed};
use crate::signals::{StopSignals, stop_on_signals};

pub fn run(global: &Global, args: RunArgs) -> anyhow::Result<u8> {
    // The summary's time is the command's: loading, planning and the cache check count too
    // (a no-op rerun of 10,000 instances said "in 1ms" after half a second, #21).
    let started = std::time::Instant::now();
    let loaded = load(&args.spec)?;
    // Where a run's time goes, before anything runs (`ABLATE_LOG=debug`).
    let phase = |what: &str| {
        tracing::debug!(
            "{what} at {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    };
    phase("loaded and planned");
    let jobs = match args.jobs {
        Some(0) => return Err(input("`--jobs` must be at least 1", None)),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let config = executor_config(&loaded, &args.executor)?;
    let slurm = config.kind == Some(ExecutorKind::Slurm);
    let gpus = check_devices(&loaded, slurm)?;
    if !slurm && (args.detach || args.cancel_on_exit) {
        let flag = if args.detach {
            "--detach"
        } else {
            "--cancel-on-exit"
        };
        return Err(input(
            format!("`{flag}` is for the Slurm executor, and this run is local"),
            Some("add `--executor slurm`, or `executor: slurm` in the file or a profile".into()),
        ));
    }
    if slurm && args.jobs.is_some() {
        return Err(input(
            "`--jobs` limits a local run; on Slurm the cluster decides what runs at once",
            Some("set `slurm.array_throttle` to cap the running tasks of each array".into()),
        ));
    }
    let store = open_store(&global.cache)?;
    check_instances(&loaded, &store)?;
    for warning in crate::load::undeclared_scripts(&loaded) {
        eprintln!("{warning}");
    }
    // Temp directories of runs killed here (kill -9, a crash): no one will commit them.
    store.remove_dead_temps();
    let forced: Vec<&str> = loaded.forced.iter().map(String::as_str).collect();
    let statuses = ablate_plan::statuses(&loaded.plan, &store, &forced);
    phase("checked the cache");
    if slurm {
        // Records of tasks whose results are in: nothing left to adopt.
        for (id, inst) in loaded.plan.instances() {
            if statuses[id.index()].is_cached() {
                ablate_run::slurm::remove_record(store.root(), &inst.key);
            }
        }
    }
    let mode = if args.json {
        Mode::Json
    } else if std::io::stderr().is_terminal() {
        Mode::Terminal
    } else {
        Mode::Plain
    };
    let opts = if slurm {
        // The cluster schedules: every ready instance is submitted at once.
        RunOptions {
            jobs: 1 << 20,
            gpus: None,
            mem_gb: f64::INFINITY,
            // A fused group is one array task.
            whole_groups: true,
        }
    } else {
        RunOptions {
            jobs,
            gpus: Some(gpus),
            mem_gb: available_memory_gb(),
            whole_groups: false,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(crate::WORKER_THREAD)
        .worker_threads(1)
        .max_blocking_threads(jobs + 4)
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    let cancel = CancelToken::new();
    let plan = &loaded.plan;
    let executor = Arc::new(if slurm {
        let settings = SlurmSettings {
            options: config.slurm.clone(),
            exe: std::env::current_exe().context("cannot find the ablate binary")?,
            cache: store.root().to_owned(),
            workdir: loaded.workdir.clone(),
            detach: args.detach,
            resume: crate::load::follow_options(global, &args.spec, Some(&args.executor)),
        };
        AnyExecutor::Slurm(
            SlurmExecutor::new(settings, store.clone())
                .context("failed to start the Slurm executor")?,
        )
    } else {
        AnyExecutor::Local(LocalExecutor::new(
            loaded.registry.clone(),
            store.clone(),
            loaded.workdir.clone(),
            env!("CARGO_PKG_VERSION"),
        ))
    });
    let slurm_executor = match &*executor {
        AnyExecutor::Slurm(e) => Some(e.clone()),
        AnyExecutor::Local(_) => None,
    };

    let stopped_by = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let (summary, completed, facts) = runtime.block_on(async {
        let quiet = mode == Mode::Json;
        // Ctrl-C, SIGTERM (Slurm's time limit, preemption) and SIGHUP all stop the run the
        // same way; without a handler, TERM and HUP ended ablate and orphaned `cmd` children.
        let signals = StopSignals::install().context("failed to install signal handlers")?;
        tokio::spawn(stop_on_signals(
            signals,
            cancel.clone(),
            Arc::clone(&stopped_by),
            move |s| {
                let what = if slurm {
                    "nothing more is submitted (a second Ctrl-C or signal quits at once)"
                } else {
                    "no new instances start, running ones are stopped (a second Ctrl-C or signal kills)"
                };
                if !quiet {
                    eprintln!("\nstopping ({}): {what}", s.name);
                }
            },
        ));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RunEvent>();
        let consumer = tokio::task::spawn_blocking(move || {
            let mut reporter = Reporter::new(mode);
            let mut completed = Vec::new();
            let mut facts = RunFacts::default();
            while let Some(mut ev) = rx.blocking_recv() {
                if let RunEvent::Summary(summary) = &mut ev {
                    summary.seconds = started.elapsed().as_secs_f64();
                }
                reporter.handle(&ev);
                match ev {
                    RunEvent::Cached { instance, entry, .. } => {
                        completed.push(Completed { instance, entry, computed: false });
                    }
                    RunEvent::Finished { instance, manifest, by_other, .. } => {
                        let entry = Arc::new(CachedEntry::loaded(manifest));
                        if !by_other {
                            facts.computed.insert(instance);
                        }
                        completed.push(Completed { instance, entry, computed: !by_other });
                    }
                    RunEvent::Paused { instance, .. } => {
                        facts.computed.insert(instance);
                    }
                    RunEvent::Failed { instance, error, will_retry: false, .. } => {
                        facts.failed.insert(instance, error);
                    }
                    RunEvent::Skipped { instance, because, cause, .. } => {
                        let what = match cause {
                            SkipCause::Pruned => "was pruned",
                            other => other.name(),
                        };
                        facts.skipped.insert(instance, format!("its input `{because}` {what}"));
                    }
                    _ => {}
                }
            }
            reporter.finish();
            (completed, facts)
        });
        let summary = ablate_run::run(plan, &statuses, executor, &opts, &cancel, &tx).await;
        drop(tx);
        let (completed, facts) = consumer.await.expect("reporter thread");
        anyhow::Ok((summary, completed, facts))
    })?;

    phase("ran");
    if let Some(slurm) = &slurm_executor {
        settle_slurm(slurm, global, &args, mode, plan.pipeline())?;
    }

    // Remember this run's keys (completed instances only: a failed one keeps its last good key,
    // so the next plan still explains what changed). The index only serves those explanations:
    // it is not rewritten when nothing changed, and a cache that cannot take it (a shared,
    // read-only one) still serves the run. A report built from part of its inputs has a key
    // of its own, which no plan explains.
    let mut done = vec![false; plan.len()];
    for c in &completed {
        done[c.instance.index()] |= c.entry.key() == plan.instance(c.instance).key;
    }
    let done: Vec<(&str, ablate_cache::InstanceKey)> = plan
        .instances()
        .filter(|(id, _)| done[id.index()])
        .map(|(_, inst)| (inst.id.as_str(), inst.key))
        .collect();
    if let Err(e) = store.record_run(plan.pipeline(), &done) {
        eprintln!(
            "warning: failed to save the run index ({}); `ablate plan` explains changes against \
             the run before",
            ablate_spec::error_chain(&e)
        );
    }

    phase("recorded the run's keys");
    let written = results::write(
        &global.results,
        &store,
        plan,
        &completed,
        &loaded.overridden,
        &loaded.matrix_overridden,
        &loaded.registry,
    )?;
    if mode != Mode::Json
        && let Some(runs) = written.runs
    {
        eprintln!("results: {}", runs.display());
        if written.variant_reports {
            // Said once: the reports there are this variant's until the file runs as it is.
            eprintln!(
                "note: the reports in `{}` are now this run's variant (their titles name the \
                 overrides); `ablate run {}` without `--set`/`--matrix` restores the plain ones \
                 from the cache",
                runs.parent().unwrap_or(&runs).display(),
                args.spec.file.display()
            );
        }
    }
    // The HTML report: after every run, detached or not, so the page shows what the cache
    // holds now. A page that cannot be written is a warning: the results are safe already.
    match cmd_report::write(
        &global.results,
        &store,
        plan,
        &loaded.registry,
        &args.spec.file,
        Some(cmd_report::RunView {
            facts: &facts,
            completed: &completed,
        }),
    ) {
        Ok(path) if mode != Mode::Json => eprintln!("report: {}", path.display()),
        Ok(_) => {}
        Err(e) => eprintln!("warning: failed to write the HTML report ({e:#})"),
    }
    phase("wrote the results");
    // The process ends here: skip freeing the plan and its manifests one by one.
    std::mem::forget((loaded, statuses, completed, facts));
    Ok(if cancel.is_cancelled() {
        match stopped_by.load(std::sync::atomic::Ordering::SeqCst) {
            0 => crate::EXIT_INTERRUPTED,
            code => code,
        }
    } else if summary.failed > 0 {
        crate::EXIT_FAILURE
    } else {
        crate::EXIT_OK
    })
}

/// `MemAvailable` from /proc/meminfo, in GB; unlimited when unknown.
fn available_memory_gb() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::MAX, |kb| kb / 1e6)
}

/// The executor a run uses, chosen at run time.
enum AnyExecutor {
    Local(LocalExecutor),
    Slurm(SlurmExecutor),
}

impl Executor for AnyExecutor {
    fn execute(
        &self,
        instance: PlanIndex,
        job: Arc<Job>,
        force: bool,
        events: tokio::sync::mpsc::UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> ablate_run::BoxFuture<Outcome> {
        match self {
            AnyExecutor::Local(e) => e.execute(instance, job, force, events, cancel),
            AnyExecutor::Slurm(e) => e.execute(instance, job, force, events, cancel),
        }
    }

    fn execute_group(
        &self,
        members: Vec<(PlanIndex, Arc<Job>, bool)>,
        events: tokio::sync::mpsc::UnboundedSender<RunEvent>,
        cancel: CancelToken,
    ) -> ablate_run::BoxFuture<Vec<(PlanIndex, Outcome)>> {
        match self {
            AnyExecutor::Local(e) => e.execute_group(members, events, cancel),
            AnyExecutor::Slurm(e) => e.execute_group(members, events, cancel),
        }
    }

    fn prune(
        &self,
        instance: PlanIndex,
        job: Arc<Job>,
        step: u64,
    ) -> ablate_run::BoxFuture<Outcome> {
        match self {
            AnyExecutor::Local(e) => e.prune(instance, job, step),
            AnyExecutor::Slurm(e) => e.prune(instance, job, step),
        }
    }
}

/// After a Slurm run: say what was left on the cluster, and cancel it if asked to.
fn settle_slurm(
    slurm: &SlurmExecutor,
    global: &Global,
    args: &RunArgs,
    mode: Mode,
    pipeline: &str,
) -> anyhow::Result<()> {
    use crate::load::{command_line, follow_options};
    let file = &args.spec.file;
    let status = command_line("status", file, &follow_options(global, &args.spec, None));
    let resume = command_line(
        "run",
        file,
        &follow_options(global, &args.spec, Some(&args.executor)),
    );
    let (arrays, tasks) = slurm.submitted();
    if args.detach {
        if mode != Mode::Json {
            eprintln!(
                "detached: {tasks} Slurm task(s) submitted in {arrays} array(s) for `{pipeline}`; follow them with `{status}`, and collect the results with `{resume}` (it adopts what is still running)"
            );
        }
        return Ok(());
    }
    let left = slurm.in_flight();
    if left.is_empty() {
        return Ok(());
    }
    let cancel = args.cancel_on_exit
        || (mode == Mode::Terminal && std::io::stdin().is_terminal() && {
            eprint!(
                "{} Slurm task(s) are still queued or running. Cancel them? [y/N] ",
                left.len()
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer).is_ok()
                && matches!(answer.trim(), "y" | "Y" | "yes")
        });
    if cancel {
        let n = slurm
            .cancel_in_flight()
            .context("failed to cancel the Slurm tasks in flight")?;
        if mode != Mode::Json {
            eprintln!("cancelled {n} Slurm task(s)");
        }
    } else if mode != Mode::Json {
        eprintln!(
            "left {} Slurm task(s) running: `{status}` shows them, `{resume}` adopts them",
            left.len()
        );
    }
    Ok(())
}

/// Every `cuda` stage can run: its op computes on a GPU, this build has CUDA, and (for a local
/// run; on Slurm the cluster's nodes have the GPUs) this machine has a GPU. Returns the GPUs the
/// local scheduler may assign (none on Slurm).
fn check_devices(loaded: &Loaded, slurm: bool) -> anyhow::Result<Vec<String>> {
    // GPUs are looked for only when some stage asks for one (a CUDA build would otherwise
    // start the driver for every run).
    let wanted = loaded
        .plan
        .instances()
        .any(|(_, i)| i.resources.gpus > 0.0 || i.device != Device::Cpu);
    let gpus = if slurm || !wanted {
        Ok(Vec::new())
    } else {
        local_gpus()
    };
    let cuda = loaded
        .plan
        .instances()
        .find(|(_, i)| i.device != Device::Cpu);
    let Some((_, inst)) = cuda else {
        // `cmd` stages may still ask for GPUs: they get what this machine shows.
        return Ok(gpus.unwrap_or_default());
    };
    if cfg!(not(feature = "cuda")) {
        return Err(input(
            format!(
                "stage `{}` asks for device `{}`, but this build of ablate runs on the CPU only",
                inst.stage, inst.device
            ),
            Some(
                "build the CUDA binary with `just build-cuda`, or run it on the CPU with \
                 `--device cpu` (the key stays the same)"
                    .into(),
            ),
        ));
    }
    if let Some((_, i)) = loaded
        .plan
        .instances()
        .find(|(_, i)| i.device != Device::Cpu && !on_device(&loaded.registry, &i.op))
    {
        return Err(input(
            format!(
                "stage `{}` asks for device `{}`, but its op `{}` runs on the CPU only",
                i.stage, i.device, i.op
            ),
            Some(format!("remove the `device:` of stage `{}`", i.stage)),
        ));
    }
    if slurm {
        return Ok(Vec::new());
    }
    let why = match gpus {
        Ok(names) if !names.is_empty() => return Ok(names),
        Ok(_) => "this machine has no GPU".to_owned(),
        Err(e) => e,
    };
    Err(input(
        format!(
            "stage `{}` asks for device `{}`, but {why}",
            inst.stage, inst.device
        ),
        Some("run it on the CPU with `--device cpu` (the key stays the same)".into()),
    ))
}

/// This machine's GPUs (see [`ablate_run::placement::local_gpus`]), counted by CUDA itself in
/// a CUDA build, else by the driver's listing.
fn local_gpus() -> Result<Vec<String>, String> {
    #[cfg(feature = "cuda")]
    let driver = ablate_ops::cuda_devices;
    #[cfg(not(feature = "cuda"))]
    let driver = ablate_run::placement::driver_gpus;
    ablate_run::placement::local_gpus(driver)
}
