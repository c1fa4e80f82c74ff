//! `ablate status FILE`: what each stage's instances are doing — done or diverged (in the
//! cache), running, queued, failed, or not started — in a local run or on Slurm: from the key
//! locks held now and the entries being written (the cache's temp directories), the failed
//! attempts kept in the cache, and for Slurm the task records in the shared cache and two
//! queries to Slurm (squeue, then the completion records). The locks' notes also name the
//! running instances of the same pipeline that this plan does not have: a `--set`/`--matrix`
//! variant run from another shell (#21).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use ablate_cache::{HeldLock, Lookup, now_us};
use ablate_plan::Status;
use ablate_run::slurm::{self, Cluster, TaskState, TaskStatus};

use anyhow::Context as _;

use crate::cli::{Global, StatusArgs};
use crate::load::{load, open_store};

#[derive(Default)]
struct Counts {
    done: usize,
    /// In the cache as a result whose training diverged (`diverged: record`).
    diverged: usize,
    running: usize,
    queued: usize,
    failed: usize,
    not_started: usize,
}

pub fn status(global: &Global, args: StatusArgs) -> anyhow::Result<u8> {
    let loaded = load(&args.spec)?;
    let store = open_store(&global.cache)?;
    let plan = &loaded.plan;
    let statuses = ablate_plan::statuses(plan, &store, &[]);
    // Counted by this plan's stages and ids: a record may have been written by another
    // pipeline that shares the instance's key.
    let mut stages: Vec<(String, Counts)> = plan
        .stages()
        .map(|(name, _)| (name.to_string(), Counts::default()))
        .collect();
    let stage_of: BTreeMap<&str, usize> = plan
        .stages()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    let mut ids = Vec::new();
    let mut records = Vec::new();
    // A local run (or a Slurm task) writing an entry holds its key's lock and has a temp
    // directory in the cache; a failed attempt's files stay in `v1/failed/<key>/` until the
    // next attempt.
    let writers: HashMap<_, _> = store.writers().into_iter().map(|w| (w.key, w)).collect();
    let mut held: HashMap<_, _> = store.held_locks().into_iter().map(|h| (h.key, h)).collect();
    let mut local_running = Vec::new();
    let mut local_failed = Vec::new();
    for (id, inst) in plan.instances() {
        let stage = stage_of[inst.stage.as_str()];
        let lock = held.remove(&inst.key);
        if let Status::Cached(entry) = &statuses[id.index()] {
            if entry.status().is_done() {
                stages[stage].1.done += 1;
            } else {
                stages[stage].1.diverged += 1;
            }
        } else if let Some(r) = slurm::read_record(store.root(), &inst.key) {
            // A running task's lock names its node and program.
            let who = lock
                .and_then(|l| l.note)
                .map(|n| format!("; {}", n.describe()));
            ids.push((stage, inst.id.as_str(), inst.key, who));
            records.push(r);
        } else if lock.is_some() || writers.contains_key(&inst.key) {
            stages[stage].1.running += 1;
            let who = match lock.as_ref().and_then(|l| l.note.as_ref()) {
                Some(note) => {
                    let other = note
                        .pipeline
                        .as_deref()
                        .filter(|p| *p != plan.pipeline())
                        .map(|p| format!(" (for pipeline `{p}`)"))
                        .unwrap_or_default();
                    format!("{}{}{other}", note.describe(), for_how_long(note.since_us))
                }
                None => match writers.get(&inst.key) {
                    Some(w) => {
                        let since = w
                            .since
                            .and_then(|t| SystemTime::now().duration_since(t).ok())
                            .map(|d| format!(", for {}s", d.as_secs()))
                            .unwrap_or_default();
                        format!("ablate pid {} on {}{since}", w.pid, w.host)
                    }
                    None => "its key is locked (no note of who holds it)".to_owned(),
                },
            };
            local_running.push((inst.id.as_str(), who));
        } else if store.failed_dir(&inst.key).is_dir() {
            stages[stage].1.failed += 1;
            local_failed.push((inst.id.as_str(), store.failed_dir(&inst.key)));
        } else {
            stages[stage].1.not_started += 1;
        }
    }
    // What is left of the held locks are keys this plan does not have: those noted as this
    // pipeline's are a variant of it (or the file before an edit) running elsewhere.
    let variants: Vec<&HeldLock> = held
        .values()
        .filter(|h| {
            h.note
                .as_ref()
                .is_some_and(|n| n.pipeline.as_deref() == Some(plan.pipeline()))
        })
        .collect();
    let observed: Vec<TaskStatus> = if records.is_empty() {
        Vec::new()
    } else {
        let ask = "failed to ask Slurm about the tasks in flight";
        let cluster = Cluster::detect().context(ask)?;
        slurm::observe(&cluster, records).context(ask)?
    };
    let mut failed = Vec::new();
    let mut flying: BTreeMap<&str, Vec<(&str, &TaskStatus, &str)>> = BTreeMap::new();
    for ((stage, id, key, who), t) in ids.iter().zip(&observed) {
        let (stage, id, key, who) = (*stage, *id, *key, who.as_deref().unwrap_or(""));
        let counts = &mut stages[stage].1;
        let state = t.observed.as_ref().map(|o| o.state);
        // It finished between the cache was looked at and Slurm was asked.
        let finished = match state {
            Some(TaskState::Completed) => match store.lookup(&key) {
                Lookup::Hit(m) => Some(m.status.is_done()),
                _ => None,
            },
            _ => None,
        };
        match state {
            Some(_) if finished == Some(true) => counts.done += 1,
            Some(_) if finished == Some(false) => counts.diverged += 1,
            Some(TaskState::Running | TaskState::Completing) => {
                counts.running += 1;
                flying.entry("running").or_default().push((id, t, who));
            }
            Some(s) if !s.is_final() => {
                counts.queued += 1;
                flying.entry("queued").or_default().push((id, t, ""));
            }
            // Given up by the run that submitted it (it could never start), whatever Slurm
            // remembers of the task it cancelled.
            _ if t.record.failure.is_some() => {
                counts.failed += 1;
                failed.push((id, t));
            }
            // Completed but not in the cache, failed, cancelled, or forgotten by Slurm.
            _ => {
                counts.failed += 1;
                failed.push((id, t));
            }
        }
    }

    let mut out = String::new();
    let total: usize = plan.len();
    out.push_str(&format!(
        "pipeline `{}`: {total} instance{}\n",
        plan.pipeline(),
        if total == 1 { "" } else { "s" }
    ));
    let width = stages
        .iter()
        .map(|(s, _)| s.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "  {:<width$}  {:>6}  {:>8}  {:>7}  {:>6}  {:>6}  {:>11}\n",
        "stage", "done", "diverged", "running", "queued", "failed", "not started"
    ));
    for (stage, c) in &stages {
        out.push_str(&format!(
            "  {stage:<width$}  {:>6}  {:>8}  {:>7}  {:>6}  {:>6}  {:>11}\n",
            c.done, c.diverged, c.running, c.queued, c.failed, c.not_started
        ));
    }
    if !local_running.is_empty() {
        out.push_str("running (writing its entry):\n");
        for (id, who) in local_running.iter().take(20) {
            out.push_str(&format!("  {id}  {who}\n"));
        }
        if local_running.len() > 20 {
            out.push_str(&format!("  … and {} more\n", local_running.len() - 20));
        }
    }
    if !variants.is_empty() {
        let n = variants.len();
        let (instances, are) = if n == 1 {
            ("instance", "is")
        } else {
            ("instances", "are")
        };
        out.push_str(&format!(
            "{n} {instances} of pipeline `{}` not in this plan {are} running (a `--set`/`--matrix` \
             variant, or the file before an edit):\n",
            plan.pipeline()
        ));
        let mut rows: Vec<(String, String)> = variants
            .iter()
            .filter_map(|h| {
                let note = h.note.as_ref()?;
                let id = note.instance.clone().unwrap_or_else(|| h.key.short());
                Some((
                    id,
                    format!("{}{}", note.describe(), for_how_long(note.since_us)),
                ))
            })
            .collect();
        rows.sort();
        for (id, who) in rows.iter().take(20) {
            out.push_str(&format!("  {id}  {who}\n"));
        }
        if n > 20 {
            out.push_str(&format!("  … and {} more\n", n - 20));
        }
    }
    for (what, tasks) in &flying {
        out.push_str(&format!("{what}:\n"));
        for (id, t, who) in tasks.iter().take(20) {
            let o = t.observed.as_ref().expect("observed");
            // A run that polls it gives such a task up; say so here too (issue 24).
            let never = slurm::never_starts(&o.detail)
                .filter(|_| o.state == TaskState::Pending)
                .map(|(what, _)| format!("; it can never start: {what}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {id}  slurm {}{}, submitted {}s ago{who}{never}\n",
                t.record.task,
                o.reason(),
                slurm::age(&t.record).as_secs()
            ));
        }
        if tasks.len() > 20 {
            out.push_str(&format!("  … and {} more\n", tasks.len() - 20));
        }
    }
    if !failed.is_empty() || !local_failed.is_empty() {
        out.push_str("failed:\n");
    }
    for (id, dir) in &local_failed {
        // A `cmd`'s stderr is the log to read; other ops leave what they wrote.
        let log = dir.join("stderr.log");
        let log = if log.is_file() { &log } else { dir };
        out.push_str(&format!(
            "  {id}  its last attempt failed\n    log: {}\n",
            log.display()
        ));
    }
    if !local_failed.is_empty() && failed.is_empty() {
        out.push_str(&format!(
            "`{}` runs the failed and not started instances again\n",
            crate::load::command_line(
                "run",
                &args.spec.file,
                &crate::load::follow_options(global, &args.spec, None)
            )
        ));
    }
    if !failed.is_empty() {
        for (id, t) in &failed {
            if let Some(failure) = &t.record.failure {
                // It never started: no log to show.
                out.push_str(&format!("  {id}  {}\n", failure.replace('\n', "\n    ")));
                continue;
            }
            let why = match &t.observed {
                Some(o) if o.state == TaskState::Completed => {
                    "completed, but its result is not in the cache".to_owned()
                }
                Some(o) => format!("{} ({})", o.state.name(), o.detail),
                None => "unknown to Slurm (neither queued nor recorded)".to_owned(),
            };
            out.push_str(&format!(
                "  {id}  slurm {}: {why}\n    log: {}\n",
                t.record.task,
                t.record.err.display()
            ));
        }
        // The options of the run that submitted them (its `--matrix`, `--set`, `--profile`):
        // without them, the command would plan another sweep (issue 24).
        let options = failed
            .iter()
            .map(|(_, t)| &t.record.resume)
            .find(|r| !r.is_empty())
            .cloned()
            .unwrap_or_else(|| crate::load::follow_options(global, &args.spec, None));
        let mut options = options;
        if !options.iter().any(|o| o.starts_with("--executor")) {
            options.insert(0, "--executor slurm".to_owned());
        }
        out.push_str(&format!(
            "`{}` submits the failed and unsubmitted instances again\n",
            crate::load::command_line("run", &args.spec.file, &options)
        ));
    }
    crate::stdout::print(&out)?;
    Ok(crate::EXIT_OK)
}

/// `, for 12s`: how long ago a lock was taken (nothing for a clock that went back).
fn for_how_long(since_us: i64) -> String {
    let us = now_us() - since_us;
    if us < 0 {
        String::new()
    } else {
        format!(", for {}s", us / 1_000_000)
    }
}
