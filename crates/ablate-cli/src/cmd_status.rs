//! `ablate status FILE`: what each stage's instances are doing on Slurm — done (in the cache),
//! running, queued, failed, or not submitted — from the task records in the shared cache and
//! two queries to Slurm (squeue, then the completion records).

use std::collections::BTreeMap;

use ablate_run::slurm::{self, Cluster, TaskState, TaskStatus};

use crate::cli::{Global, StatusArgs};
use crate::load::{load, open_store};

#[derive(Default)]
struct Counts {
    done: usize,
    running: usize,
    queued: usize,
    failed: usize,
    not_submitted: usize,
}

pub fn status(global: &Global, args: StatusArgs) -> anyhow::Result<u8> {
    let loaded = load(&args.spec)?;
    let store = open_store(&global.cache)?;
    let plan = &loaded.plan;
    let statuses = ablate_plan::statuses(plan, &store, &[]);
    let mut stages: Vec<(String, Counts)> = Vec::new();
    let mut records = Vec::new();
    for (id, inst) in plan.instances() {
        let stage = inst.stage.to_string();
        if !stages.iter().any(|(s, _)| *s == stage) {
            stages.push((stage.clone(), Counts::default()));
        }
        let counts = &mut stages
            .iter_mut()
            .find(|(s, _)| *s == stage)
            .expect("added")
            .1;
        if statuses[id.index()].is_cached() {
            counts.done += 1;
        } else if let Some(r) = slurm::read_record(store.root(), &inst.key) {
            records.push(r);
        } else {
            counts.not_submitted += 1;
        }
    }
    let observed: Vec<TaskStatus> = if records.is_empty() {
        Vec::new()
    } else {
        let cluster = Cluster::detect().map_err(|e| anyhow::anyhow!("cannot ask Slurm: {e}"))?;
        slurm::observe(&cluster, records).map_err(|e| anyhow::anyhow!("cannot ask Slurm: {e}"))?
    };
    let mut failed = Vec::new();
    let mut flying: BTreeMap<&str, Vec<&TaskStatus>> = BTreeMap::new();
    for t in &observed {
        let counts = &mut stages
            .iter_mut()
            .find(|(s, _)| *s == t.record.stage)
            .expect("stage of the plan")
            .1;
        match t.observed.as_ref().map(|o| o.state) {
            Some(TaskState::Running | TaskState::Completing) => {
                counts.running += 1;
                flying.entry("running").or_default().push(t);
            }
            Some(s) if !s.is_final() => {
                counts.queued += 1;
                flying.entry("queued").or_default().push(t);
            }
            // Completed but not in the cache, failed, cancelled, or forgotten by Slurm.
            _ => {
                counts.failed += 1;
                failed.push(t);
            }
        }
    }

    let mut out = String::new();
    let total: usize = plan.len();
    out.push_str(&format!(
        "pipeline `{}`: {total} instances\n",
        plan.pipeline()
    ));
    let width = stages
        .iter()
        .map(|(s, _)| s.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "  {:<width$}  {:>6}  {:>7}  {:>6}  {:>6}  {:>13}\n",
        "stage", "done", "running", "queued", "failed", "not submitted"
    ));
    for (stage, c) in &stages {
        out.push_str(&format!(
            "  {stage:<width$}  {:>6}  {:>7}  {:>6}  {:>6}  {:>13}\n",
            c.done, c.running, c.queued, c.failed, c.not_submitted
        ));
    }
    for (what, tasks) in &flying {
        out.push_str(&format!("{what}:\n"));
        for t in tasks.iter().take(20) {
            let o = t.observed.as_ref().expect("observed");
            let detail = if o.detail.is_empty() || o.detail == "None" {
                String::new()
            } else {
                format!(" ({})", o.detail)
            };
            out.push_str(&format!(
                "  {}  slurm {}{detail}, submitted {}s ago\n",
                t.record.id,
                t.record.task,
                slurm::age(&t.record).as_secs()
            ));
        }
        if tasks.len() > 20 {
            out.push_str(&format!("  … and {} more\n", tasks.len() - 20));
        }
    }
    if !failed.is_empty() {
        out.push_str("failed:\n");
        for t in &failed {
            let why = match &t.observed {
                Some(o) if o.state == TaskState::Completed => {
                    "completed, but its result is not in the cache".to_owned()
                }
                Some(o) => format!("{} ({})", o.state.name(), o.detail),
                None => "unknown to Slurm (neither queued nor recorded)".to_owned(),
            };
            out.push_str(&format!(
                "  {}  slurm {}: {why}\n    log: {}\n",
                t.record.id,
                t.record.task,
                t.record.err.display()
            ));
        }
        out.push_str(&format!(
            "`ablate run {} --executor slurm` submits the failed and unsubmitted instances again\n",
            args.spec.file.display()
        ));
    }
    crate::stdout::print(&out)?;
    Ok(crate::EXIT_OK)
}
