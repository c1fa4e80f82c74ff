//! `ablate show KEY|PREFIX|INSTANCE`: from a result row (its `instance` key) or a label to
//! everything the cache knows of it — params, inputs, deps, device, times, status, metrics —
//! and the entry's files with their full paths (#21).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ablate_cache::{InstanceKey, Lookup, Manifest, Store};
use ablate_plan::Plan;
use ablate_results::{format_metric, format_timestamp_us};
use serde_json::{Value, json};

use crate::cli::{Global, ShowArgs, SpecArgs};
use crate::cmd_cache::{human_bytes, instance_of, show_value};
use crate::error::input;
use crate::load::{load, open_store};

/// One thing the target may name: a key, and the instance it is known as.
struct Candidate {
    key: InstanceKey,
    /// `stage[label]`, from the plan or the entry's manifest.
    instance: Option<String>,
    pipeline: Option<String>,
    started_at_us: Option<i64>,
}

pub fn show(global: &Global, args: ShowArgs) -> anyhow::Result<u8> {
    let store = open_store(&global.cache)?;
    let plan = match &args.pipeline {
        Some(file) => Some(
            load(&SpecArgs {
                file: file.clone(),
                set: args.set.clone(),
                matrix: args.matrix.clone(),
                force: vec![],
                device: None,
            })?
            .plan,
        ),
        None => None,
    };
    let target = args.target.trim();
    let candidates = resolve(&store, plan.as_ref(), target)?;
    let chosen = match candidates.as_slice() {
        [one] => one,
        [] => {
            let hint = match &plan {
                Some(plan) => {
                    ablate_spec::did_you_mean(target, plan.instances().map(|(_, i)| i.id.as_str()))
                        .map(|s| format!("did you mean `{s}`?"))
                        .or_else(|| Some("`ablate plan FILE` lists the instances and keys".into()))
                }
                None => Some(
                    "give a key or a prefix of one (`ablate cache ls` lists them), or \
                     `STAGE[LABEL]`; with `--pipeline FILE`, instances not in the cache too"
                        .into(),
                ),
            };
            return Err(input(
                format!(
                    "nothing in the cache at `{}`{} matches `{target}`",
                    store.root().display(),
                    if plan.is_some() {
                        " or in the pipeline's plan"
                    } else {
                        ""
                    }
                ),
                hint,
            ));
        }
        many => {
            // Which of them the pipeline's last run used: the others are older runs (before an
            // edit) or `--set`/`--matrix` variants.
            let mut indexes = BTreeMap::new();
            let mut list = String::new();
            for c in many.iter().take(20) {
                let _ = write!(
                    list,
                    "\n  {}  {}",
                    c.key.short(),
                    c.instance.as_deref().unwrap_or("(no readable manifest)")
                );
                if let Some(p) = &c.pipeline {
                    let _ = write!(list, "  ({p})");
                }
                if let Some(t) = c.started_at_us {
                    let _ = write!(list, "  {}", format_timestamp_us(t));
                }
                if let (Some(p), Some(id)) = (&c.pipeline, &c.instance) {
                    let index = indexes
                        .entry(p.clone())
                        .or_insert_with(|| store.load_index(p));
                    if index.instances.get(id) == Some(&c.key) {
                        let _ = write!(list, "  (its pipeline's last run)");
                    }
                }
            }
            if many.len() > 20 {
                let _ = write!(list, "\n  … and {} more", many.len() - 20);
            }
            let hint = match &args.pipeline {
                // Several instances of the plan (a stage, or part of a label).
                Some(file) => format!(
                    "give the whole label, or more of the key (`ablate plan {}` lists them)",
                    file.display()
                ),
                None => "give more of the key; or name the pipeline file, `--pipeline FILE` \
                         (with the run's `--set`/`--matrix`), to pick the instance of its plan"
                    .to_owned(),
            };
            return Err(input(
                format!("`{target}` matches {} entries:{list}", many.len()),
                Some(hint),
            ));
        }
    };
    let shown = Shown::gather(&store, plan.as_ref(), chosen);
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&shown.json())?;
        text.push('\n');
        text
    } else {
        shown.text()
    };
    crate::stdout::print(&text)?;
    Ok(crate::EXIT_OK)
}

/// What `target` names: the keys it is a prefix of (in the cache, and in the plan), else the
/// instances whose `stage[label]` it is.
fn resolve(store: &Store, plan: Option<&Plan>, target: &str) -> anyhow::Result<Vec<Candidate>> {
    let mut out: BTreeMap<InstanceKey, Candidate> = BTreeMap::new();
    let in_plan = |key: &InstanceKey| {
        plan.and_then(|p| {
            p.instances()
                .find(|(_, i)| i.key == *key)
                .map(|(_, i)| (i.id.clone(), p.pipeline().to_owned()))
        })
    };
    if !target.is_empty() && target.bytes().all(|b| b.is_ascii_hexdigit()) {
        let prefix = target.to_ascii_lowercase();
        for key in store.keys()? {
            if key.to_hex().starts_with(&prefix) {
                out.insert(key, candidate(store, key, in_plan(&key)));
            }
        }
        // A failed attempt has no entry, but its kept files are named by its key: the short
        // key a `FAILED` line prints finds them.
        let failed = std::fs::read_dir(store.root().join("v1/failed"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<InstanceKey>().ok());
        for key in failed {
            if key.to_hex().starts_with(&prefix) {
                out.entry(key)
                    .or_insert_with(|| candidate(store, key, in_plan(&key)));
            }
        }
        if let Some(plan) = plan {
            for (_, i) in plan.instances() {
                if i.key.to_hex().starts_with(&prefix) {
                    out.entry(i.key)
                        .or_insert_with(|| candidate(store, i.key, in_plan(&i.key)));
                }
            }
        }
        if !out.is_empty() {
            return Ok(out.into_values().collect());
        }
    }
    let wanted = Wanted::parse(target);
    match plan {
        Some(plan) => {
            let ids: Vec<(InstanceKey, &str, &str)> = plan
                .instances()
                .map(|(_, i)| (i.key, i.stage.as_str(), i.label.as_str()))
                .collect();
            for key in wanted.pick(&ids) {
                out.insert(key, candidate(store, key, in_plan(&key)));
            }
        }
        None => {
            let entries = store.entries()?;
            let ids: Vec<(InstanceKey, &str, &str)> = entries
                .iter()
                .filter_map(|e| {
                    let m = e.manifest.as_ref()?;
                    Some((e.key, m.origin.stage.as_str(), m.origin.label.as_str()))
                })
                .collect();
            for key in wanted.pick(&ids) {
                out.insert(key, candidate(store, key, None));
            }
        }
    }
    let mut all: Vec<Candidate> = out.into_values().collect();
    all.sort_by_key(|c| c.started_at_us.unwrap_or(i64::MAX));
    Ok(all)
}

fn candidate(store: &Store, key: InstanceKey, planned: Option<(String, String)>) -> Candidate {
    let manifest = store.read_manifest(&key);
    let (instance, pipeline) = match (planned, &manifest) {
        (Some((id, pipeline)), _) => (Some(id), Some(pipeline)),
        (None, Some(m)) => (Some(instance_of(m)), Some(m.origin.pipeline.clone())),
        (None, None) => (None, None),
    };
    Candidate {
        key,
        instance,
        pipeline,
        started_at_us: manifest.map(|m| m.started_at_us),
    }
}

/// An instance as typed: `stage[label]`, `stage`, or a bare label `lr=0.3,seed=0`.
struct Wanted<'t> {
    stage: Option<&'t str>,
    label: Option<Vec<&'t str>>,
}

impl<'t> Wanted<'t> {
    fn parse(target: &'t str) -> Self {
        if let Some(open) = target.find('[')
            && let Some(inner) = target[open + 1..].strip_suffix(']')
        {
            return Wanted {
                stage: Some(&target[..open]),
                label: Some(label_parts(inner)),
            };
        }
        if target.contains('=') {
            Wanted {
                stage: None,
                label: Some(label_parts(target)),
            }
        } else {
            Wanted {
                stage: Some(target),
                label: None,
            }
        }
    }

    /// The keys of the instances it names: those whose label is exactly the one typed (in any
    /// order), else those whose label has every part typed (`train[lr=0.3]` lists the seeds).
    fn pick(&self, ids: &[(InstanceKey, &str, &str)]) -> Vec<InstanceKey> {
        let of_stage = ids
            .iter()
            .filter(|(_, stage, _)| self.stage.is_none_or(|s| s == *stage));
        let Some(want) = &self.label else {
            return of_stage.map(|(k, _, _)| *k).collect();
        };
        let with: Vec<(InstanceKey, Vec<&str>)> =
            of_stage.map(|(k, _, l)| (*k, label_parts(l))).collect();
        let exact: Vec<InstanceKey> = with
            .iter()
            .filter(|(_, parts)| parts == want)
            .map(|(k, _)| *k)
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        with.iter()
            .filter(|(_, parts)| want.iter().all(|w| parts.contains(w)))
            .map(|(k, _)| *k)
            .collect()
    }
}

/// The `key=value` parts of a label, sorted: split at the commas outside brackets and quotes
/// (a list value keeps its commas).
fn label_parts(label: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in label.char_indices() {
        match c {
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => quote = Some(c),
            '[' | '{' if quote.is_none() => depth += 1,
            ']' | '}' if quote.is_none() => depth -= 1,
            ',' if quote.is_none() && depth == 0 => {
                parts.push(label[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(label[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts.sort_unstable();
    parts
}

/// Everything shown of one key.
struct Shown {
    key: InstanceKey,
    dir: PathBuf,
    instance: Option<String>,
    pipeline: Option<String>,
    manifest: Option<Manifest>,
    /// `Ok(())` for a verified entry, `Err(why)` for one the next run recomputes, `None` when
    /// there is no entry.
    valid: Option<Result<(), String>>,
    /// For an instance that is not in the cache: what the plan says it is made of.
    planned: Option<ablate_cache::KeyInput>,
    /// The instance ids of the inputs, by key (from the plan or the inputs' manifests).
    input_ids: BTreeMap<InstanceKey, String>,
    failed: Option<PathBuf>,
}

impl Shown {
    fn gather(store: &Store, plan: Option<&Plan>, c: &Candidate) -> Self {
        let key = c.key;
        let valid = match store.lookup(&key) {
            Lookup::Hit(_) => Some(Ok(())),
            Lookup::Invalid(why) => Some(Err(why)),
            Lookup::Miss => None,
        };
        let manifest = store.read_manifest(&key);
        let planned = plan.and_then(|p| {
            p.instances()
                .find(|(_, i)| i.key == key)
                .map(|(_, i)| i.key_input.clone())
        });
        let inputs = manifest
            .as_ref()
            .map(|m| &m.input)
            .or(planned.as_ref())
            .map(|k| k.inputs.clone())
            .unwrap_or_default();
        let mut input_ids = BTreeMap::new();
        for r in &inputs {
            let id = plan
                .and_then(|p| p.instances().find(|(_, i)| i.key == r.key))
                .map(|(_, i)| i.id.clone())
                .or_else(|| store.read_manifest(&r.key).map(|m| instance_of(&m)));
            if let Some(id) = id {
                input_ids.insert(r.key, id);
            }
        }
        let failed = Some(store.failed_dir(&key)).filter(|d| d.is_dir());
        Shown {
            key,
            dir: store.entry_dir(&key),
            instance: c.instance.clone(),
            pipeline: c.pipeline.clone(),
            manifest,
            valid,
            planned,
            input_ids,
            failed,
        }
    }

    fn key_input(&self) -> Option<&ablate_cache::KeyInput> {
        self.manifest
            .as_ref()
            .map(|m| &m.input)
            .or(self.planned.as_ref())
    }

    /// The status as a word for programs (`done`, `diverged`, `invalid`, `incomplete`,
    /// `failed`, `not_cached`) and as the sentence `show` prints.
    fn status(&self) -> (&'static str, String) {
        match (&self.valid, &self.manifest) {
            (Some(Ok(())), Some(m)) if !m.status.is_done() => (
                m.status.name(),
                format!(
                    "{}: in the cache as a result (`diverged: record`), its files match the \
                     manifest",
                    m.status
                ),
            ),
            (Some(Ok(())), _) => (
                "done",
                "done: in the cache, its files match the manifest (sizes and times)".into(),
            ),
            (Some(Err(why)), _) => (
                "invalid",
                format!("invalid: {why} (the next run recomputes it)"),
            ),
            (None, Some(_)) => (
                "incomplete",
                "incomplete entry (the next run recomputes it)".into(),
            ),
            (None, None) if self.failed.is_some() => (
                "failed",
                "not in the cache: its last attempt failed (files below)".into(),
            ),
            (None, None) => (
                "not_cached",
                "not in the cache (`ablate plan` says why it will run)".into(),
            ),
        }
    }

    /// The files of the entry (the manifest first, then its outputs) and of a failed attempt,
    /// each with its full path and size.
    fn files(&self) -> Vec<(PathBuf, Option<u64>)> {
        let mut out = Vec::new();
        if let Some(m) = &self.manifest {
            let manifest = self.dir.join("manifest.json");
            let size = std::fs::metadata(&manifest).ok().map(|m| m.len());
            out.push((manifest, size));
            for o in &m.outputs {
                out.push((self.dir.join(&o.path), Some(o.size)));
            }
        }
        if let Some(failed) = &self.failed {
            let mut files = Vec::new();
            walk(failed, &mut files);
            files.sort();
            out.extend(files.into_iter().map(|p| {
                let size = std::fs::metadata(&p).ok().map(|m| m.len());
                (p, size)
            }));
        }
        out
    }

    fn json(&self) -> Value {
        let ki = self.key_input();
        let m = self.manifest.as_ref();
        let inputs: Vec<Value> = ki
            .map(|k| {
                k.inputs
                    .iter()
                    .map(|r| {
                        json!({
                            "key": r.key.to_hex(),
                            "instance": self.input_ids.get(&r.key),
                            "name": r.name,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let deps: Vec<Value> = ki
            .map(|k| {
                k.deps
                    .iter()
                    .map(|d| json!({ "path": d.path, "sha256": d.digest.to_hex() }))
                    .collect()
            })
            .unwrap_or_default();
        let (finals, stepped) = metrics(m);
        let files: Vec<Value> = self
            .files()
            .into_iter()
            .map(|(p, size)| json!({ "path": p, "size": size }))
            .collect();
        let (status, status_detail) = self.status();
        json!({
            "key": self.key.to_hex(),
            "instance": self.instance,
            "pipeline": self.pipeline,
            "op": ki.map(|k| &k.op),
            "op_version": ki.map(|k| k.op_version),
            "status": status,
            "status_detail": status_detail,
            "in_cache": self.valid == Some(Ok(())),
            "params": ki.map(|k| &k.params),
            "inputs": inputs,
            "deps": deps,
            "device": m.map(|m| &m.device),
            "host": m.map(|m| &m.host),
            "started_at": m.map(|m| format_timestamp_us(m.started_at_us)),
            "started_at_us": m.map(|m| m.started_at_us),
            "seconds": m.map(|m| m.seconds),
            "ablate_version": m.map(|m| &m.ablate_version),
            "metrics": finals,
            "stepped_metrics": stepped.iter().map(|(name, s)| (name.clone(), json!({
                "steps": s.count,
                "last_step": s.last_step,
                "last_value": s.last_value,
            }))).collect::<serde_json::Map<_, _>>(),
            // `path`, as in `cache ls --json` and `$ABLATE_INPUTS`.
            "path": m.map(|_| &self.dir),
            "failed_dir": self.failed,
            "files": files,
        })
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let ki = self.key_input();
        let m = self.manifest.as_ref();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<10} {value}");
        };
        line("key", self.key.to_hex());
        if let Some(i) = &self.instance {
            let p = self
                .pipeline
                .as_ref()
                .map(|p| format!("  (pipeline `{p}`)"))
                .unwrap_or_default();
            line("instance", format!("{i}{p}"));
        }
        if let Some(k) = ki {
            line("op", format!("{} (version {})", k.op, k.op_version));
        }
        line("status", self.status().1);
        if let Some(m) = m {
            line("started", format_timestamp_us(m.started_at_us));
            line("wall time", format!("{:.2} s", m.seconds));
            line("device", m.device.clone());
            line("host", m.host.clone());
            line("ablate", m.ablate_version.clone());
        }
        if let Some(k) = ki {
            section(
                &mut out,
                "params",
                k.params.iter().map(|(n, v)| (n.clone(), show_value(v))),
            );
            section(
                &mut out,
                "inputs",
                k.inputs.iter().map(|r| {
                    let id = self.input_ids.get(&r.key).map_or("?", String::as_str);
                    let name = r
                        .name
                        .as_ref()
                        .map(|n| format!("  (as {{in.{n}}})"))
                        .unwrap_or_default();
                    (r.key.short(), format!("{id}{name}"))
                }),
            );
            section(
                &mut out,
                "deps",
                k.deps
                    .iter()
                    .map(|d| (d.path.clone(), format!("sha256 {}", d.digest.short()))),
            );
        }
        let (finals, stepped) = metrics(m);
        let metric_rows = finals
            .iter()
            .map(|(n, v)| (n.clone(), format_metric(*v)))
            .chain(stepped.iter().map(|(n, s)| {
                (
                    n.clone(),
                    format!(
                        "{} steps, last {} at step {}",
                        s.count,
                        format_metric(s.last_value),
                        s.last_step
                    ),
                )
            }));
        section(&mut out, "metrics", metric_rows);
        let files = self.files();
        if !files.is_empty() {
            let _ = writeln!(out, "files");
            for (path, size) in files {
                let size = size.map_or_else(|| "?".into(), human_bytes);
                let _ = writeln!(out, "  {size:>10}  {}", path.display());
            }
        }
        out
    }
}

/// A titled list of `name  value` lines, names aligned; nothing when empty.
fn section(out: &mut String, title: &str, rows: impl Iterator<Item = (String, String)>) {
    let rows: Vec<(String, String)> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "{title}");
    for (name, value) in rows {
        let _ = writeln!(out, "  {name:<width$}  {value}");
    }
}

struct Stepped {
    count: usize,
    last_step: u64,
    last_value: f64,
}

/// Final metrics by name, and per stepped metric how many steps it logged and its last value.
fn metrics(m: Option<&Manifest>) -> (BTreeMap<String, f64>, BTreeMap<String, Stepped>) {
    let (mut finals, mut stepped) = (BTreeMap::new(), BTreeMap::<String, Stepped>::new());
    for metric in m.map(|m| m.metrics.as_slice()).unwrap_or_default() {
        match metric.step {
            None => {
                finals.insert(metric.name.clone(), metric.value);
            }
            Some(step) => {
                let s = stepped.entry(metric.name.clone()).or_insert(Stepped {
                    count: 0,
                    last_step: step,
                    last_value: metric.value,
                });
                s.count += 1;
                if step >= s.last_step {
                    (s.last_step, s.last_value) = (step, metric.value);
                }
            }
        }
    }
    (finals, stepped)
}

/// Every file below `dir`, not following links.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path(), out),
            Ok(_) => out.push(e.path()),
            Err(_) => {}
        }
    }
}
