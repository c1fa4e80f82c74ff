use std::fmt::Write as _;

use ablate_plan::{Format, Outlook, Plan, Status};
use ablate_spec::{ExecutorKind, SlurmOptions};

use crate::cli::{Global, PlanArgs, PlanFormat};
use crate::load::{check_instances, executor_config, load, open_store};

pub fn plan(global: &Global, args: PlanArgs) -> anyhow::Result<u8> {
    let loaded = load(&args.spec)?;
    let config = executor_config(&loaded, &args.executor)?;
    let store = open_store(&global.cache)?;
    check_instances(&loaded, &store)?;
    for warning in crate::load::undeclared_scripts(&loaded) {
        eprintln!("{warning}");
    }
    let forced: Vec<&str> = loaded.forced.iter().map(String::as_str).collect();
    let statuses = ablate_plan::statuses(&loaded.plan, &store, &forced);
    let format = match args.format {
        PlanFormat::Text => Format::Text,
        PlanFormat::Json => Format::Json,
        PlanFormat::Dot => Format::Dot,
        PlanFormat::Mermaid => Format::Mermaid,
    };
    // What `run` will do besides run: skip what needs a diverged entry, resume a checkpoint.
    let outlook = ablate_plan::outlook(&loaded.plan, &statuses, &store);
    let mut out = ablate_plan::render(&loaded.plan, &statuses, &outlook, format);
    if config.kind == Some(ExecutorKind::Slurm) && matches!(format, Format::Text) {
        out.push_str(&job_arrays(
            &loaded.plan,
            &statuses,
            &outlook,
            &config.slurm,
            &loaded.workdir,
        ));
    }
    crate::stdout::print(&out)?;
    // The process ends here: freeing a 10k-instance plan piece by piece is measurable time
    // spent on nothing.
    std::mem::forget((loaded, statuses, outlook, out));
    Ok(crate::EXIT_OK)
}

/// The job arrays a Slurm run would submit: one per stage with instances to run, each listing
/// its tasks (a fused group is one task, its members listed under it). A live run submits a
/// stage's instances as their inputs complete, so a stage may go out as several smaller arrays
/// (and a group as several tasks, when its members' inputs finish apart); `--detach` submits
/// exactly these, with dependencies.
fn job_arrays(
    plan: &Plan,
    statuses: &[Status],
    outlook: &[Outlook],
    options: &SlurmOptions,
    workdir: &std::path::Path,
) -> String {
    let mut out = String::new();
    let mut arrays = Vec::new();
    for (stage, ids) in plan.stages() {
        let run: Vec<_> = ids
            .iter()
            .copied()
            .filter(|id| !statuses[id.index()].is_cached() && outlook[id.index()].skipped.is_none())
            .collect();
        if !run.is_empty() {
            let tasks = ablate_run::slurm::plan_tasks(plan, &run);
            arrays.push((stage, run, tasks));
        }
    }
    let tasks: usize = arrays.iter().map(|(_, _, t)| t.len()).sum();
    let _ = writeln!(
        out,
        "\nslurm: {} job array(s), {tasks} task(s)",
        arrays.len()
    );
    for (stage, run, tasks) in &arrays {
        let first = plan.instance(run[0]);
        let name = ablate_run::slurm::job_name(plan.pipeline(), stage.as_str());
        let args = ablate_run::slurm::sbatch_args(
            options,
            &name,
            &first.resources,
            first.timeout,
            tasks.len(),
            workdir,
        );
        let after: Vec<String> = {
            let mut s: Vec<String> = run
                .iter()
                .flat_map(|&id| plan.inputs(id))
                .filter(|(i, _)| {
                    !statuses[i.index()].is_cached() && outlook[i.index()].skipped.is_none()
                })
                .map(|(_, i)| i.stage.to_string())
                .collect();
            s.sort();
            s.dedup();
            s
        };
        let after = if after.is_empty() {
            String::new()
        } else {
            format!(" after {}", after.join(", "))
        };
        let _ = writeln!(out, "  sbatch {}{after}", args.join(" "));
        for (i, task) in tasks.iter().enumerate() {
            let _ = writeln!(out, "    {i:>4}  {}", plan.instance(task[0]).id);
            for id in &task[1..] {
                let _ = writeln!(out, "        + {}", plan.instance(*id).id);
            }
        }
    }
    out
}
