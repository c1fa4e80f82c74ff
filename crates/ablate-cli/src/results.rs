//! After a run: rows for `results/<pipeline>/runs.parquet`, report tables copied to
//! `results/<pipeline>/`, and the keys of this run remembered for `ablate plan`'s explanations.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ablate_cache::{CachedEntry, Manifest, Store};
use ablate_plan::{InstanceId, Plan};
use ablate_results::RunRecord;
use anyhow::Context as _;

/// An instance that is complete after this run.
pub struct Completed {
    pub instance: InstanceId,
    /// Its entry; a cached one's manifest is read only if its rows must be written.
    pub entry: Arc<CachedEntry>,
    /// Computed by this run (rather than found in the cache).
    pub computed: bool,
}

/// Appends the rows of every completed instance not yet in `runs.parquet` (or recomputed) and
/// publishes report outputs. Returns the path of the run table when it exists.
pub fn write(
    results: &Path,
    store: &Store,
    plan: &Plan,
    completed: &[Completed],
) -> anyhow::Result<Option<PathBuf>> {
    if completed.is_empty() {
        return Ok(None);
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
    let recorded = ablate_results::recorded_instances(&runs)
        .with_context(|| format!("failed to read `{}`", runs.display()))?;
    // The rows must agree with the entries they name: an instance is (re)written when this run
    // computed it, when it has no rows, and when its rows came from another computation than
    // the entry holds now (a `--force` run killed after replacing the entry, before this file
    // was written; or another pipeline's `--force` of a shared key).
    let fresh: Vec<&Completed> = completed
        .iter()
        .filter(|c| {
            c.computed || recorded.get(&c.entry.key().to_hex()) != Some(&c.entry.started_at_us())
        })
        .collect();
    if !fresh.is_empty() {
        let git_rev = git_revision();
        let version = env!("CARGO_PKG_VERSION");
        let mut records = Vec::new();
        for c in &fresh {
            let manifest = c.entry.manifest().with_context(|| {
                format!(
                    "failed to read the manifest of `{}`",
                    plan.instance(c.instance).id
                )
            })?;
            records.extend(records_of(plan, c, &manifest, git_rev.as_deref(), version));
        }
        if !records.is_empty() {
            ablate_results::append_runs(&runs, &records)
                .with_context(|| format!("failed to write `{}`", runs.display()))?;
        }
    }
    publish(&dir, store, plan, completed)?;
    Ok(runs.exists().then_some(runs))
}

fn records_of(
    plan: &Plan,
    c: &Completed,
    m: &Manifest,
    git_rev: Option<&str>,
    version: &str,
) -> Vec<RunRecord> {
    let inst = plan.instance(c.instance);
    // Columns: the labels, then the instance's own params, then those of the instances it maps
    // over, nearest first (an evaluation's rows carry the lr and seed of the model it scored).
    let mut labels: std::collections::BTreeMap<String, serde_json::Value> =
        inst.labels.iter().cloned().collect();
    let mut frontier = vec![c.instance];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for id in frontier {
            let i = plan.instance(id);
            for (k, v) in i.params() {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if !i.gather {
                next.extend(i.inputs.iter().copied());
            }
        }
        frontier = next;
    }
    let seed = labels.get("seed").and_then(serde_json::Value::as_i64);
    m.metrics
        .iter()
        .map(|metric| RunRecord {
            pipeline: plan.pipeline().to_owned(),
            stage: inst.stage.to_string(),
            instance: m.key.to_hex(),
            label: inst.label.clone(),
            op: inst.op.clone(),
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

/// Copies the files a report asked to publish to `results/<pipeline>/<instance id>.<ext>`.
fn publish(dir: &Path, store: &Store, plan: &Plan, completed: &[Completed]) -> anyhow::Result<()> {
    let mut written = HashSet::new();
    for c in completed.iter().filter(|c| c.entry.publishes()) {
        let inst = plan.instance(c.instance);
        let manifest = c
            .entry
            .manifest()
            .with_context(|| format!("failed to read the manifest of `{}`", inst.id))?;
        let stem: String = inst
            .id
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || "-_.=,".contains(ch) {
                    ch
                } else {
                    '_'
                }
            })
            .collect();
        // `report[metric=acc]` → `report_metric=acc`: no brackets to quote in a shell.
        let stem = stem.trim_end_matches('_');
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
            std::fs::copy(&src, &tmp).with_context(|| {
                format!("failed to copy `{}` to `{}`", src.display(), dest.display())
            })?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("failed to write `{}`", dest.display()))?;
        }
    }
    Ok(())
}

/// `git rev-parse HEAD` of the working directory, if it is a repository.
fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}
