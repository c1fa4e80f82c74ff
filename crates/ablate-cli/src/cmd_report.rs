//! `ablate report PIPELINE.yaml`, and the end of every `ablate run`: the pipeline's HTML report,
//! `results/<pipeline>/report.html`. This module gathers the records (the plan's instances, their
//! cache entries or failed attempts, the published report tables and claims) and
//! `ablate_report::html` shapes and renders them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ablate_cache::{CachedEntry, EntryStatus, Lookup, Manifest, Store};
use ablate_ops::Registry;
use ablate_plan::{Plan, PlanIndex};
use ablate_report::html::{self, DepView, InstanceView, Report};
use ablate_results::format_timestamp_us;
use ablate_spec::OpCatalog as _;
use anyhow::Context as _;
use serde_json::Value;

use crate::cli::{Global, ReportArgs};
use crate::load::{load, open_store};
use crate::results::Completed;

/// What a report built from part of its inputs says of itself.
const PARTIAL: &str =
    "a partial report: built from the inputs that finished (its note names the others)";

/// Lines of a failed instance's stderr the report keeps.
const STDERR_LINES: usize = 30;

/// What a run knows of its instances that the cache does not say: which it computed (the
/// others it found cached), why one failed, and why one was skipped.
#[derive(Default)]
pub struct RunFacts {
    pub computed: HashSet<PlanIndex>,
    pub failed: HashMap<PlanIndex, String>,
    pub skipped: HashMap<PlanIndex, String>,
}

/// What the page is drawn from after a run: its facts, and the entries it ended with (a report
/// built from part of its inputs has a key of its own, which a lookup of the instance's key
/// does not find; a cached entry's manifest is read here, once, if at all).
pub struct RunView<'a> {
    pub facts: &'a RunFacts,
    pub completed: &'a [Completed],
}

pub fn report(global: &Global, args: ReportArgs) -> anyhow::Result<u8> {
    let loaded = load(&args.spec)?;
    let store = open_store(&global.cache)?;
    let path = write(
        &global.results,
        &store,
        &loaded.plan,
        &loaded.registry,
        &args.spec.file,
        None,
    )?;
    println!("{}", path.display());
    Ok(0)
}

impl RunFacts {
    /// The run computed, stopped, failed or skipped something (it changed what a page shows).
    fn did_something(&self) -> bool {
        !(self.computed.is_empty() && self.failed.is_empty() && self.skipped.is_empty())
    }
}

/// Writes `results/<pipeline>/report.html` (temp-then-rename) and returns its path. Without
/// `run` (`ablate report`), instances in the cache are `cached`. After a run that did
/// nothing, a page showing the same instances in the same states is left as it is (a no-op
/// rerun writes nothing in the results), and nothing but the statuses is computed.
pub fn write(
    results: &Path,
    store: &Store,
    plan: &Plan,
    registry: &Registry,
    file: &Path,
    run: Option<RunView<'_>>,
) -> anyhow::Result<PathBuf> {
    let dir = results.join(plan.pipeline());
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let views = instance_views(&dir, store, plan, run.as_ref());
    let fingerprint = fingerprint(plan, &views);
    let path = dir.join("report.html");
    let idle = run.as_ref().is_some_and(|r| !r.facts.did_something());
    if idle
        && std::fs::read_to_string(&path)
            .is_ok_and(|old| old.contains(&format!("\"fingerprint\":\"{fingerprint}\"")))
    {
        return Ok(path);
    }
    let report = assemble(&dir, plan, registry, file, views, fingerprint);
    let page = html::render(report);
    let tmp = ablate_results::temp_path(&dir, "report.html");
    std::fs::write(&tmp, page)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(path)
}

/// Every instance of the plan as the page shows it, in plan order, with its status.
fn instance_views(
    dir: &Path,
    store: &Store,
    plan: &Plan,
    run: Option<&RunView<'_>>,
) -> Vec<InstanceView> {
    let empty = RunFacts::default();
    let facts = run.map_or(&empty, |r| r.facts);
    let ended: HashMap<PlanIndex, &CachedEntry> = run
        .map(|r| {
            r.completed
                .iter()
                .map(|c| (c.instance, &*c.entry))
                .collect()
        })
        .unwrap_or_default();
    let by_key: HashMap<_, _> = plan
        .instances()
        .map(|(_, i)| (i.key, i.id.as_str()))
        .collect();
    let mut views: Vec<InstanceView> = Vec::with_capacity(plan.len());
    // The page names an instance by its place in `instances` (topological, as `plan` lists
    // them), never by its index in the plan's graph, which need not be in that order.
    let mut place: HashMap<PlanIndex, usize> = HashMap::with_capacity(plan.len());
    for (idx, inst) in plan.instances() {
        let ki = &inst.key_input;
        place.insert(idx, views.len());
        let mut v = InstanceView {
            id: views.len(),
            key: inst.key.to_hex(),
            label: inst.id.clone(),
            stage: inst.stage.to_string(),
            op: inst.op.clone(),
            params: ki.params.clone().into_iter().collect(),
            deps: ki
                .inputs
                .iter()
                .map(|r| DepView {
                    label: by_key.get(&r.key).map_or("?".into(), |s| (*s).to_owned()),
                    key: r.key.to_hex(),
                })
                .collect(),
            code: std::iter::once(("op".to_owned(), format!("{} v{}", ki.op, ki.op_version)))
                .chain(
                    ki.deps
                        .iter()
                        .map(|d| (d.path.clone(), format!("sha256 {}", d.digest.short()))),
                )
                .collect(),
            ..InstanceView::default()
        };
        let entry: Option<Arc<Manifest>> = match ended.get(&idx) {
            Some(e) => e.manifest().ok(),
            None => match store.lookup(&inst.key) {
                Lookup::Hit(m) => Some(Arc::from(m)),
                Lookup::Miss | Lookup::Invalid(_) => None,
            },
        };
        // A report built from the inputs that finished, found by `ablate report` through the
        // files it published (its entry's key depends on which inputs finished).
        let published_partial = entry.is_none()
            && inst.report
            && ["parquet", "png", "md"].iter().any(|ext| {
                dir.join(format!("{}.{ext}", crate::results::stem_of(&inst.id)))
                    .is_file()
            });
        match entry {
            Some(m) => {
                fill_from_manifest(&mut v, &m);
                v.files = Some(store.entry_dir(&m.key).display().to_string());
                match &m.status {
                    EntryStatus::Done if facts.computed.contains(&idx) => v.status = "ran".into(),
                    EntryStatus::Done => v.status = "cached".into(),
                    EntryStatus::Pruned { step } => {
                        v.status = "pruned".into();
                        v.status_detail = format!("pruned at step {step} by early stopping");
                    }
                    EntryStatus::Diverged {
                        metric,
                        step,
                        value,
                    } => {
                        v.status = "diverged".into();
                        let at = step.map(|s| format!(" at step {s}")).unwrap_or_default();
                        v.status_detail = format!("`{metric}` became {value}{at}");
                    }
                }
                if m.key != inst.key {
                    v.status_detail = PARTIAL.into();
                }
            }
            None if published_partial => {
                v.status = "cached".into();
                v.status_detail = PARTIAL.into();
            }
            None => {
                let failed_dir = store.failed_dir(&inst.key);
                if let Some(why) = facts.failed.get(&idx) {
                    v.status = "failed".into();
                    v.status_detail = why.clone();
                } else if let Some(why) = facts.skipped.get(&idx) {
                    v.status = "skipped".into();
                    v.status_detail = why.clone();
                } else if failed_dir.is_dir() {
                    v.status = "failed".into();
                    v.status_detail = "its last attempt failed".into();
                } else if let Some(r) = ablate_run::slurm::read_record(store.root(), &inst.key) {
                    // Out on Slurm (a `--detach`ed run, or one still going): the page asks no
                    // cluster, so it says when, and where to look.
                    v.files = Some(r.err.display().to_string());
                    match r.failure {
                        Some(why) => {
                            v.status = "failed".into();
                            v.status_detail = why;
                        }
                        None => {
                            v.status = "submitted".into();
                            v.status_detail = format!(
                                "slurm task {}, submitted {}; `ablate status` asks Slurm how it \
                                 is doing",
                                r.task,
                                format_timestamp_us(r.submitted_at_us)
                            );
                        }
                    }
                } else if let Some(up) = inst
                    .inputs
                    .iter()
                    .filter_map(|u| place.get(u).and_then(|&i| views.get(i)))
                    .find(|u| matches!(u.status.as_str(), "failed" | "skipped"))
                {
                    v.status = "skipped".into();
                    v.status_detail = format!("its input `{}` {}", up.label, up.status);
                } else {
                    v.status = "not run".into();
                    v.status_detail = "not in the cache".into();
                }
                if v.status == "failed" && failed_dir.is_dir() {
                    let log = failed_dir.join("stderr.log");
                    if log.is_file() {
                        v.stderr_tail = Some(ablate_run::tail(&log, STDERR_LINES));
                    }
                    v.files = Some(failed_dir.display().to_string());
                }
            }
        }
        views.push(v);
    }
    views
}

/// What the summary says the numbers mean.
const STATS_NOTE: &str = "± is the sample standard deviation over the runs of a cell (n − 1), \
    (n) their count; [lo, hi] is a 95% bootstrap confidence interval of the mean (expanded \
    percentile, seeded, so the same results give the same interval; it cannot reach past the \
    range of the runs, which holds the mean at most 50% of the time for 2 runs, 75% for 3, 87.5% \
    for 4); Δ is the mean paired difference from the baseline over the seeds both share, with \
    its interval. Curves: the line is the mean over the runs of a group, the band ± one standard \
    deviation where two or more runs logged the step.";

/// What the page shows, hashed: the plan's instances, their statuses, and the binary that draws
/// them (its size and modification time: any rebuild or upgrade may draw the page differently,
/// in its script or in the data the Rust side sends). Ran and cached are one state here: a
/// rerun finds cached what the run before computed. A binary that cannot be looked at gives a
/// fingerprint no page holds, so the page is written.
fn fingerprint(plan: &Plan, views: &[InstanceView]) -> String {
    let binary = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| Ok((m.len(), m.modified()?)))
        .map_or_else(
            |_| format!("unknown binary at {}", now_us()),
            |(len, modified)| format!("{len} bytes, modified {modified:?}"),
        );
    let mut print = format!(
        "{}\n{}\n{binary}\n",
        plan.pipeline(),
        env!("CARGO_PKG_VERSION")
    );
    for v in views {
        let status = if v.status == "ran" {
            "cached"
        } else {
            &v.status
        };
        print.push_str(&format!("{} {status} {}\n", v.key, v.status_detail));
    }
    ablate_cache::Digest::of_bytes(print.as_bytes()).to_hex()
}

/// The page around the instances: curves, parallel coordinates, published tables and claims,
/// counts.
fn assemble(
    dir: &Path,
    plan: &Plan,
    registry: &Registry,
    file: &Path,
    views: Vec<InstanceView>,
    fingerprint: String,
) -> Report {
    let x_of = |op: &str| match (op, registry.budget_unit(op)) {
        // `eval.metric` logs its per-layer geometry with the layer as the step.
        ("eval.metric", _) => "layer".to_owned(),
        (_, Some("epochs")) => "epoch".to_owned(),
        _ => "step".to_owned(),
    };
    let curves = html::curves(&views, &x_of);
    let parallel = html::parallel(&views);
    let (tables, claims) = published(dir, plan);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    counts.insert("instances".into(), views.len());
    for s in ["ran", "cached", "failed", "pruned", "skipped"] {
        counts.insert(s.into(), 0);
    }
    for v in &views {
        *counts.entry(v.status.replace(' ', "_")).or_default() += 1;
    }
    Report {
        pipeline: plan.pipeline().to_owned(),
        fingerprint,
        file: file.display().to_string(),
        generated: format_timestamp_us(now_us()),
        ablate_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_rev: crate::results::git_revision(),
        counts,
        stats_note: STATS_NOTE.to_owned(),
        tables,
        curves,
        parallel,
        claims,
        instances: views,
    }
}

fn fill_from_manifest(v: &mut InstanceView, m: &Manifest) {
    v.device = Some(m.device.clone());
    v.wall_time_s = Some(m.seconds);
    v.started_at = Some(format_timestamp_us(m.started_at_us));
    for metric in &m.metrics {
        match metric.step {
            Some(step) => v
                .curves
                .entry(metric.name.clone())
                .or_default()
                .push((step, html::finite(metric.value))),
            None => {
                v.metrics
                    .insert(metric.name.clone(), html::finite(metric.value));
            }
        }
    }
    for c in v.curves.values_mut() {
        // A step logged twice keeps its last value, as the figures do.
        c.sort_by_key(|(s, _)| *s);
        c.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 = b.1;
                true
            } else {
                false
            }
        });
    }
}

/// The tables and claims the run published (`results/<pipeline>/<stem>.parquet`), in plan order.
fn published(dir: &Path, plan: &Plan) -> (Vec<html::TableView>, Vec<html::ClaimView>) {
    let mut tables = Vec::new();
    let mut claims = Vec::new();
    for (_, inst) in plan.instances() {
        let op = inst.op.as_str();
        if op != "report.table" && op != "report.claims" {
            continue;
        }
        let path = dir.join(format!("{}.parquet", crate::results::stem_of(&inst.id)));
        let Ok(table) = ablate_results::read_table(&path) else {
            continue;
        };
        let params = &inst.key_input.params;
        if op == "report.claims" {
            claims.extend(html::claims_view(&inst.id, &table));
            continue;
        }
        let strings = |name: &str| -> Vec<String> {
            match params.get(name) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        let (rows, cols, metric) = (strings("rows"), strings("cols"), strings("metric"));
        let precision = params.get("precision").and_then(Value::as_u64).unwrap_or(3) as usize;
        let by = if cols.is_empty() {
            rows.join(" × ")
        } else {
            format!("{} × {}", rows.join(" × "), cols.join(" × "))
        };
        let title = format!("{} by {by}", metric.join(", "));
        let mut view = html::table_view(
            &inst.id,
            &title,
            &table,
            &rows,
            &strings("lower_is_better"),
            precision.min(6),
        );
        if let Ok(md) = std::fs::read_to_string(path.with_extension("md")) {
            // The note the Markdown carries under its table (inputs that did not finish).
            view.note = md
                .lines()
                .rev()
                .take_while(|l| !l.starts_with('|'))
                // What ± and [ ] mean is said once, in the summary.
                .filter(|l| !l.trim().is_empty() && !l.starts_with("± is"))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" ");
        }
        tables.push(view);
    }
    (tables, claims)
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
