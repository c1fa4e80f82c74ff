//! What is handed to `sbatch`: the job name, the tasks a stage's instances make (fused groups
//! one task each), the command-line options an array is submitted with (from the stage's
//! resources and the profile's `slurm:` options), and the script each task runs (the profile's
//! `setup`, then the worker on its task).

use super::*;

/// The job name of a stage's arrays: one name per stage, so one `squeue --name` sees a run.
pub fn job_name(pipeline: &str, stage: &str) -> String {
    format!("ablate.{pipeline}.{stage}")
}

/// The tasks an array of `run` (instances of one stage, in plan order) makes when they are
/// ready together: a fused group's members are one task, split into near-equal tasks only by
/// the stage's cap (the scheduler's rule under `RunOptions::whole_groups`); every other
/// instance is a task of its own. In plan order of each task's first member.
pub fn plan_tasks(plan: &ablate_plan::Plan, run: &[PlanIndex]) -> Vec<Vec<PlanIndex>> {
    let mut tasks: Vec<Vec<PlanIndex>> = Vec::new();
    let mut groups: Vec<(ablate_plan::FuseGroup, Vec<PlanIndex>)> = Vec::new();
    for &id in run {
        match plan.instance(id).fuse {
            Some(g) => match groups.iter_mut().find(|(h, _)| h.group == g.group) {
                Some((_, members)) => members.push(id),
                None => groups.push((g, vec![id])),
            },
            None => tasks.push(vec![id]),
        }
    }
    for (g, members) in groups {
        let mut rest = &members[..];
        while !rest.is_empty() {
            let (now, later) = rest.split_at(crate::fuse::take(rest.len(), g.max, 1));
            tasks.push(now.to_vec());
            rest = later;
        }
    }
    tasks.sort_by_key(|t| t[0]);
    tasks
}

/// The `sbatch` options of an array of `n` tasks of a stage (all but `--output`/`--error`).
/// Without `slurm.time`, a stage's `timeout` sets `--time`, a minute above it, so the task
/// ends itself (its `ablate exec` enforces the timeout) before Slurm does.
pub fn sbatch_args(
    options: &SlurmOptions,
    name: &str,
    resources: &Resources,
    timeout: Option<Duration>,
    n: usize,
    workdir: &Path,
) -> Vec<String> {
    let mut a = vec![format!("--job-name={name}")];
    a.push(match options.array_throttle {
        Some(m) => format!("--array=0-{}%{m}", n.saturating_sub(1)),
        None => format!("--array=0-{}", n.saturating_sub(1)),
    });
    a.push(format!("--chdir={}", workdir.display()));
    let cpus = options
        .cpus_per_task
        .unwrap_or(resources.cpus.ceil().max(1.0) as u32);
    a.push(format!("--cpus-per-task={cpus}"));
    if let Some(mem) = &options.mem {
        a.push(format!("--mem={mem}"));
    } else if resources.mem_gb > 0.0 {
        a.push(format!(
            "--mem={}M",
            (resources.mem_gb * 1024.0).ceil() as u64
        ));
    }
    if let Some(gres) = &options.gres {
        a.push(format!("--gres={gres}"));
    } else {
        let gpus = options.gpus.unwrap_or(resources.gpus.ceil() as u32);
        if gpus > 0 {
            a.push(format!("--gpus-per-task={gpus}"));
        }
    }
    let time = options
        .time
        .clone()
        .or_else(|| timeout.map(|t| (t.as_secs().div_ceil(60) + 1).to_string()));
    for (flag, value) in [
        ("--partition", &options.partition),
        ("--time", &time),
        ("--account", &options.account),
        ("--qos", &options.qos),
    ] {
        if let Some(v) = value {
            a.push(format!("{flag}={v}"));
        }
    }
    // Preempted tasks go back to the queue by themselves where the cluster allows it; each
    // attempt appends to the task's `.out`/`.err` (Slurm truncates them by default, and a
    // requeued task lost the first attempt's log, issue 24).
    a.push("--requeue".into());
    a.push("--open-mode=append".into());
    a.extend(options.sbatch_args.iter().cloned());
    a
}

/// The script of an array's tasks: the profile's `setup`, then the worker on one task.
pub(super) fn task_script(s: &SlurmSettings, batch: &Path) -> String {
    let mut text = String::from(
        "#!/usr/bin/env bash\n# Written by ablate: one task of a job array runs one instance, or one fused group.\nset -eo pipefail\n",
    );
    if let Some(setup) = &s.options.setup {
        text.push_str(setup);
        text.push('\n');
    }
    // `--chdir` starts the task in the pipeline's working directory, but a `setup` may `cd`
    // elsewhere (into a project, to activate its environment): the worker resolves `run`,
    // `deps` and data paths from its own directory, so it goes back (#21).
    text.push_str(&format!("cd {}\n", quote_path(&s.workdir)));
    text.push_str(&format!(
        "exec {} --cache {} exec {}\n",
        quote_path(&s.exe),
        quote_path(&s.cache),
        quote_path(batch)
    ));
    text
}

/// A path as one `sh` word ([`shell_quote`](crate::process::shell_quote)).
fn quote_path(p: &Path) -> String {
    crate::process::shell_quote(&p.display().to_string())
}
