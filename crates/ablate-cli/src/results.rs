//! After a run: rows for `results/<pipeline>/runs.parquet`, report tables copied to
//! `results/<pipeline>/`, and the keys of this run remembered for `ablate plan`'s explanations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ablate_cache::{CachedEntry, InstanceKey, Manifest, Store};
use ablate_ops::Registry;
use ablate_plan::{Plan, PlanIndex};
use ablate_results::{Recorded, RunRecord};
use ablate_spec::OpCatalog as _;
use anyhow::Context as _;

/// An instance that is complete after this run.
pub struct Completed {
    pub instance: PlanIndex,
    /// Its entry; a cached one's manifest is read only if its rows must be written.
    pub entry: Arc<CachedEntry>,
    /// Computed by this run (rather than found in the cache).
    pub computed: bool,
}

/// The params a run's `--set`s changed from the pipeline file's, by stage, in the form labels
/// show them (`lr=0.05`): runs.parquet labels the rows of such a run with them (#21), since the
/// instance labels name matrix values only.
pub type Overridden = BTreeMap<String, Vec<(String, serde_json::Value)>>;

/// What [`write`] wrote.
#[derive(Default)]
pub struct Written {
    /// The run table, when it exists.
    pub runs: Option<PathBuf>,
    /// Some report was published with a caption naming this run's overrides.
    pub variant_reports: bool,
}

/// Appends the rows of every completed instance not yet in `runs.parquet` (or recomputed),
/// marks the rows of this plan `current` and no others, and publishes report outputs (titled
/// with the overrides that reach them: `matrix` holds the axes the run changed).
pub fn write(
    results: &Path,
    store: &Store,
    plan: &Plan,
    completed: &[Completed],
    overridden: &Overridden,
    matrix: &Overridden,
    registry: &Registry,
) -> anyhow::Result<Written> {
    if completed.is_empty() {
        return Ok(Written::default());
    }
    let dir = results.join(plan.pipeline());
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let runs = dir.join("runs.parquet");
    // Appending is read-merge-rename: two runs of one pipeline at once take turns, holding a
    // lock on the directory itself (no lock file to clutter the results).
    let lock =
        std::fs::File::open(&dir).with_context(|| format!("failed to open `{}`", dir.display()))?;
    lock.lock()
        .with_context(|| format!("failed to lock `{}`", dir.display()))?;
    // Under the lock, which every writer of the directory holds while its temp files exist.
    ablate_results::remove_stale_temps(&dir);
    // Keys compared as keys, not as hex strings: a run of 10,000 instances would make 20,000
    // of them on every run, fully cached or not (#21).
    let mut recorded: HashMap<InstanceKey, Recorded> = HashMap::new();
    // A row whose instance is no key (a table edited by hand) is never current.
    let mut stray_current = false;
    ablate_results::for_each_recorded(&runs, |instance, r| match instance.parse() {
        Ok(key) => {
            recorded.insert(key, r);
        }
        Err(_) => stray_current |= r.current,
    })
    .with_context(|| format!("failed to read `{}`", runs.display()))?;
    // The rows must agree with the entries they name: an instance is (re)written when this run
    // computed it, when it has no rows, and when its rows came from another computation than
    // the entry holds now (a `--force` run killed after replacing the entry, before this file
    // was written; or another pipeline's `--force` of a shared key).
    let fresh: Vec<&Completed> = completed
        .iter()
        .filter(|c| {
            c.computed
                || recorded
                    .get(&c.entry.key())
                    .is_none_or(|r| r.started_at_us != c.entry.started_at_us())
        })
        .collect();
    // `current`: the instances of this plan (an interrupted run's too: its plan is the latest,
    // and rerunning the file it was not run with points `current` back, from the cache), and
    // the partial reports it built, which have keys of their own.
    let current: HashSet<InstanceKey> = plan
        .instances()
        .map(|(_, i)| i.key)
        .chain(completed.iter().map(|c| c.entry.key()))
        .collect();
    let moved = stray_current
        || recorded
            .iter()
            .any(|(key, r)| r.current != current.contains(key));
    let mut records = Vec::new();
    if !fresh.is_empty() {
        let git_rev = git_revision();
        let version = env!("CARGO_PKG_VERSION");
        for c in &fresh {
            let manifest = c.entry.manifest().with_context(|| {
                format!(
                    "failed to read the manifest of `{}`",
                    plan.instance(c.instance).id
                )
            })?;
            records.extend(records_of(
                plan,
                c,
                &manifest,
                git_rev.as_deref(),
                version,
                overridden,
                registry,
            ));
        }
    }
    if !records.is_empty() || moved {
        let current: HashSet<String> = current.iter().map(InstanceKey::to_hex).collect();
        let retired = retired_columns(registry);
        ablate_results::append_runs(&runs, &records, &current, &retired)
            .with_context(|| format!("failed to write `{}`", runs.display()))?;
    }
    let variant_reports = publish(&dir, store, plan, completed, overridden, matrix)?;
    Ok(Written {
        runs: runs.exists().then_some(runs),
        variant_reports,
    })
}

fn records_of(
    plan: &Plan,
    c: &Completed,
    m: &Manifest,
    git_rev: Option<&str>,
    version: &str,
    overridden: &Overridden,
    registry: &Registry,
) -> Vec<RunRecord> {
    let inst = plan.instance(c.instance);
    // A `cmd`'s `run`, `deps` and `args` configure the op; they are not the program's params
    // (`$ABLATE_PARAMS`), so not columns either, matrix axes or not (the label names those).
    let setting = |op: &str, name: &str| {
        registry
            .schema(op)
            .is_some_and(|schema| schema.is_setting(name))
    };
    // Columns: the labels, then the instance's own params, then those of the instances it maps
    // over, nearest first (an evaluation's rows carry the lr and seed of the model it scored).
    let mut labels: BTreeMap<String, serde_json::Value> = inst
        .labels
        .iter()
        .filter(|(k, _)| !setting(&inst.op, k))
        .cloned()
        .collect();
    // The params `--set` changed here or upstream, which the label names after the matrix
    // values: `weights=shared,steps=2 (set: lr=0.05)`.
    let mut set: Vec<(String, serde_json::Value)> = Vec::new();
    let mut frontier = vec![c.instance];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for id in frontier {
            let i = plan.instance(id);
            for (k, v) in i.params().iter().filter(|(k, _)| !setting(&i.op, k)) {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in overridden.get(i.stage.as_str()).into_iter().flatten() {
                if inst.label_value(k).is_none() && !set.iter().any(|(s, _)| s == k) {
                    set.push((k.clone(), v.clone()));
                }
            }
            if !i.gather {
                next.extend(i.inputs.iter().copied());
            }
        }
        frontier = next;
    }
    let label = match (inst.label.as_str(), set.is_empty()) {
        (label, true) => label.to_owned(),
        ("", false) => format!("(set: {})", ablate_plan::render_label(&set)),
        (label, false) => format!("{label} (set: {})", ablate_plan::render_label(&set)),
    };
    let seed = labels.get("seed").and_then(serde_json::Value::as_i64);
    m.metrics
        .iter()
        .map(|metric| RunRecord {
            pipeline: plan.pipeline().to_owned(),
            stage: inst.stage.to_string(),
            instance: m.key.to_hex(),
            label: label.clone(),
            op: inst.op.clone(),
            status: m.status.name().to_owned(),
            labels: labels.clone(),
            metric: metric.name.clone(),
            value: metric.value,
            step: metric.step.map(|s| s as i64),
            seed,
            device: m.device.clone(),
            wall_time_s: m.seconds,
            started_at_us: m.started_at_us,
            git_rev: git_rev.map(str::to_owned),
            ablate_version: version.to_owned(),
        })
        .collect()
}

/// Label columns that earlier versions wrote for ops' settings (`cmd`'s `run`, `deps`,
/// `args`): [`ablate_results::append_runs`] drops them from old rows. A name that is a
/// parameter of some other op is kept, so no parameter's column is ever lost.
fn retired_columns(registry: &Registry) -> Vec<&'static str> {
    let schemas: Vec<_> = registry.schemas().collect();
    let mut retired: Vec<&'static str> = schemas
        .iter()
        .flat_map(|s| s.params.iter().map(|p| p.name))
        .filter(|name| {
            schemas
                .iter()
                .all(|s| s.param(name).is_none() || s.is_setting(name))
        })
        .collect();
    retired.sort_unstable();
    retired.dedup();
    retired
}

/// The overrides that reach instance `id` (its own stage's and those of every stage upstream),
/// as labels name them: `set: epochs=3; matrix: seed=0`. `None` when none does: the instance
/// is the plain pipeline's.
fn variant_of(plan: &Plan, id: PlanIndex, set: &Overridden, matrix: &Overridden) -> Option<String> {
    if set.is_empty() && matrix.is_empty() {
        return None;
    }
    let mut seen = vec![false; plan.len()];
    let mut stages = HashSet::new();
    let mut frontier = vec![id];
    while let Some(id) = frontier.pop() {
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        let inst = plan.instance(id);
        stages.insert(inst.stage.as_str());
        frontier.extend(inst.inputs.iter().copied());
    }
    // In the plan's stage order, each key once (as runs.parquet labels name them).
    let gather = |by_stage: &Overridden| {
        let mut items: Vec<(String, serde_json::Value)> = Vec::new();
        for (stage, _) in plan.stages() {
            if !stages.contains(stage.as_str()) {
                continue;
            }
            for (k, v) in by_stage.get(stage.as_str()).into_iter().flatten() {
                if !items.iter().any(|(s, _)| s == k) {
                    items.push((k.clone(), v.clone()));
                }
            }
        }
        items
    };
    let parts: Vec<String> = [("set", gather(set)), ("matrix", gather(matrix))]
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(what, items)| format!("{what}: {}", ablate_plan::render_label(&items)))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The published form of report file `src` (`file` in the entry) in a variant's run: the
/// Markdown heading, a Parquet file's `ablate.variant` metadata, a figure's caption strip name
/// the overrides. Written to `tmp`; `false` for a kind of file that carries no title.
fn titled(src: &Path, file: &str, tmp: &Path, variant: &str) -> anyhow::Result<bool> {
    let caption = format!("({variant})");
    match Path::new(file).extension().and_then(|e| e.to_str()) {
        Some("md") => {
            let text = std::fs::read_to_string(src)
                .with_context(|| format!("failed to read `{}`", src.display()))?;
            let text = match text.split_once('\n') {
                Some((head, rest)) if head.starts_with("# ") => {
                    format!("{head} {caption}\n{rest}")
                }
                _ => format!("# {caption}\n\n{text}"),
            };
            std::fs::write(tmp, text)
                .with_context(|| format!("failed to write `{}`", tmp.display()))?;
        }
        Some("parquet") => {
            ablate_results::copy_with_metadata(
                src,
                tmp,
                &[("ablate.variant".to_owned(), variant.to_owned())],
            )
            .with_context(|| format!("failed to write `{}`", tmp.display()))?;
        }
        Some("svg" | "png") => {
            ablate_ops::caption_figure(src, tmp, &caption).map_err(anyhow::Error::msg)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Copies the files a report asked to publish to `results/<pipeline>/<instance id>.<ext>`;
/// those of a report that a `--set`/`--matrix` reaches are titled with the overrides, at
/// publishing, so the entry (and its key) stays the plain pipeline's where they did not change
/// it (#21). Returns whether any report was titled so.
fn publish(
    dir: &Path,
    store: &Store,
    plan: &Plan,
    completed: &[Completed],
    set: &Overridden,
    matrix: &Overridden,
) -> anyhow::Result<bool> {
    let mut written = HashSet::new();
    let mut any_variant = false;
    for c in completed.iter().filter(|c| c.entry.publishes()) {
        let inst = plan.instance(c.instance);
        let manifest = c
            .entry
            .manifest()
            .with_context(|| format!("failed to read the manifest of `{}`", inst.id))?;
        let variant = variant_of(plan, c.instance, set, matrix);
        let stem = stem_of(&inst.id);
        let stem = stem.as_str();
        for file in &manifest.publish {
            let ext = Path::new(file)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("out");
            let dest = dir.join(format!("{stem}.{ext}"));
            if !written.insert(dest.clone()) {
                continue;
            }
            // Publish only what the manifest lists and its hash vouches for (the lookup
            // already refused paths outside the entry).
            let src = store
                .verified_output(&c.entry.key(), file)
                .map_err(|why| anyhow::anyhow!("cannot publish `{file}` of `{}`: {why}", inst.id))?
                .with_context(|| {
                    format!("`{}` does not have the `{file}` it publishes", inst.id)
                })?;
            let tmp = ablate_results::temp_path(dir, format!("{stem}.{ext}"));
            let is_titled = match &variant {
                Some(variant) => titled(&src, file, &tmp, variant).inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })?,
                None => false,
            };
            if is_titled {
                any_variant = true;
                // Already published (a rerun of the same variant): left as it is.
                if std::fs::read(&dest).ok() == std::fs::read(&tmp).ok() {
                    let _ = std::fs::remove_file(&tmp);
                    continue;
                }
                std::fs::rename(&tmp, &dest)
                    .with_context(|| format!("failed to write `{}`", dest.display()))?;
                continue;
            }
            // Already published (a rerun with nothing new): a no-op run writes nothing (#21).
            let sha256 = manifest
                .outputs
                .iter()
                .find(|o| &o.path == file)
                .map(|o| o.sha256);
            if sha256.is_some()
                && std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file())
                && ablate_cache::Digest::of_file(&dest).ok() == sha256
            {
                continue;
            }
            std::fs::copy(&src, &tmp).with_context(|| {
                format!("failed to copy `{}` to `{}`", src.display(), dest.display())
            })?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("failed to write `{}`", dest.display()))?;
        }
    }
    Ok(any_variant)
}

/// `git rev-parse HEAD` of the working directory, if it is a repository.
/// The file name (without extension) an instance's published outputs take in
/// `results/<pipeline>/`: `report[metric=acc]` → `report_metric=acc`, no brackets to quote in
/// a shell.
pub(crate) fn stem_of(id: &str) -> String {
    let stem: String = id
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "-_.=,".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect();
    stem.trim_end_matches('_').to_owned()
}

pub(crate) fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}
