use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use ablate_cache::{EntryInfo, LEGACY_MANIFEST_FORMAT, Lookup, Manifest, Store, VerifyMode};
use ablate_results::format_timestamp_us;
use serde_json::{Value, json};

use crate::cli::{CacheArgs, CacheCommand, Global, LsArgs, SpecArgs};
use crate::error::input;
use crate::load::{load, open_store};

pub fn cache(global: &Global, args: CacheArgs) -> anyhow::Result<u8> {
    let store = open_store(&global.cache)?;
    // Printed at the end: `--fix` removes every invalid entry even when stdout has gone.
    let mut out = String::new();
    let code = match args.command {
        CacheCommand::Ls(ls) => {
            out = list(&store, &ls)?;
            crate::EXIT_OK
        }
        CacheCommand::Verify { fix } => {
            let keys = store.keys()?;
            let (mut bad, mut legacy) = (0, 0);
            for key in &keys {
                let why = match store.verify(key, VerifyMode::Full) {
                    Lookup::Hit(m) => {
                        legacy += usize::from(m.format == LEGACY_MANIFEST_FORMAT);
                        continue;
                    }
                    Lookup::Invalid(why) => why,
                    Lookup::Miss => "the entry disappeared while being verified".into(),
                };
                bad += 1;
                if fix {
                    store.remove(key)?;
                    let _ = writeln!(out, "removed {}: {why}", key.short());
                } else {
                    let _ = writeln!(out, "invalid {}: {why}", key.short());
                }
            }
            let _ = writeln!(
                out,
                "{} entries verified, {bad} invalid{}",
                keys.len(),
                if fix && bad > 0 { " (removed)" } else { "" }
            );
            if legacy > 0 {
                let _ = writeln!(
                    out,
                    "{legacy} of them predate manifest checksums: their files were verified, their \
                     metadata (metrics, params) cannot be"
                );
            }
            if bad > 0 && !fix {
                crate::EXIT_FAILURE
            } else {
                crate::EXIT_OK
            }
        }
        CacheCommand::Gc { pipelines, dry_run } => {
            let keep = if pipelines.is_empty() {
                None
            } else {
                let mut keep = HashSet::new();
                for file in pipelines {
                    let loaded = load(&SpecArgs {
                        file,
                        set: vec![],
                        matrix: vec![],
                        force: vec![],
                        device: None,
                    })?;
                    keep.extend(loaded.plan.instances().map(|(_, i)| i.key));
                }
                Some(keep)
            };
            let r = store.gc(keep.as_ref(), dry_run)?;
            let _ = writeln!(
                out,
                "{} {} entries and {} leftovers, {}",
                if dry_run { "would remove" } else { "removed" },
                r.entries,
                r.leftovers,
                human_bytes(r.bytes)
            );
            if dry_run {
                for item in &r.removed {
                    let _ = writeln!(
                        out,
                        "  {}  ({}): {}",
                        item.path.display(),
                        human_bytes(item.bytes),
                        item.why
                    );
                }
            }
            for why in &r.refused {
                eprintln!("warning: gc left it alone: {why}");
            }
            crate::EXIT_OK
        }
    };
    crate::stdout::print(&out)?;
    Ok(code)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `cache ls`: the entries that pass the filters, oldest first, as a table or as JSON.
fn list(store: &Store, args: &LsArgs) -> anyhow::Result<String> {
    let filters = args
        .filters
        .iter()
        .map(|f| {
            f.split_once('=').ok_or_else(|| {
                input(
                    format!("`--where {f}`: expected `KEY=VALUE`"),
                    Some("e.g. `--where lr=0.3 --where seed=0` (both must hold)".into()),
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut entries = store.entries()?;
    // A `--where` key no entry has is a typo, not an empty answer.
    let known: BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| e.manifest.as_ref())
        .flat_map(|m| m.input.params.keys().map(String::as_str))
        .collect();
    for (key, _) in &filters {
        if !entries.is_empty() && !known.contains(key) {
            let hint = ablate_spec::did_you_mean(key, known.iter().copied())
                .map(|s| format!("did you mean `{s}`?"));
            return Err(input(
                format!("`--where {key}=…`: no entry has a param `{key}`"),
                hint,
            ));
        }
    }
    entries.retain(|e| match &e.manifest {
        Some(m) => {
            args.stage.as_ref().is_none_or(|s| *s == m.origin.stage)
                && args.op.as_ref().is_none_or(|o| *o == m.input.op)
                && args
                    .pipeline
                    .as_ref()
                    .is_none_or(|p| *p == m.origin.pipeline)
                && filters.iter().all(|(k, v)| {
                    m.input
                        .params
                        .get(*k)
                        .is_some_and(|p| value_is(p, v.trim()))
                })
        }
        // An entry without a readable manifest shows only when nothing is filtered.
        None => {
            args.stage.is_none()
                && args.op.is_none()
                && args.pipeline.is_none()
                && filters.is_empty()
        }
    });
    entries.sort_by_key(|e| {
        (
            e.manifest.as_ref().map_or(i64::MAX, |m| m.started_at_us),
            e.key,
        )
    });
    if args.json {
        let items: Vec<Value> = entries.iter().map(|e| entry_json(store, e)).collect();
        let mut text = serde_json::to_string_pretty(&items)?;
        text.push('\n');
        return Ok(text);
    }
    let varying = varying_params(&entries);
    let mut rows = vec![
        [
            "KEY", "OP", "INSTANCE", "PIPELINE", "STATUS", "SIZE", "STARTED", "WALL", "PARAMS",
        ]
        .map(str::to_owned),
    ];
    for e in &entries {
        rows.push(match &e.manifest {
            Some(m) => {
                let params = varying
                    .get(m.input.op.as_str())
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|k| {
                                m.input
                                    .params
                                    .get(*k)
                                    .map(|v| format!("{k}={}", show_value(v)))
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                [
                    e.key.short(),
                    m.input.op.clone(),
                    instance_of(m),
                    m.origin.pipeline.clone(),
                    m.status.name().to_owned(),
                    human_bytes(e.size),
                    format_timestamp_us(m.started_at_us),
                    format!("{:.2}s", m.seconds),
                    params,
                ]
            }
            None => [
                e.key.short(),
                "(no readable manifest)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
        });
    }
    let mut out = aligned(&rows, &[5, 7]);
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let _ = writeln!(
        out,
        "{} entries, {} in `{}`{}",
        entries.len(),
        human_bytes(total),
        store.root().display(),
        if varying.is_empty() {
            ""
        } else {
            " (PARAMS: those that differ between the listed entries of an op; `--json` has all)"
        }
    );
    Ok(out)
}

/// `stage[label]`, as `plan` and `run` print an instance.
pub fn instance_of(m: &Manifest) -> String {
    if m.origin.label.is_empty() {
        m.origin.stage.clone()
    } else {
        format!("{}[{}]", m.origin.stage, m.origin.label)
    }
}

/// Per op, the params whose values differ between the listed entries of that op (what tells
/// them apart); the others would repeat on every line.
fn varying_params(entries: &[EntryInfo]) -> BTreeMap<&str, Vec<&str>> {
    let mut by_op: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
    for m in entries.iter().filter_map(|e| e.manifest.as_ref()) {
        by_op.entry(m.input.op.as_str()).or_default().push(m);
    }
    let mut out = BTreeMap::new();
    for (op, ms) in by_op {
        let keys: BTreeSet<&str> = ms
            .iter()
            .flat_map(|m| m.input.params.keys().map(String::as_str))
            .collect();
        let differ: Vec<&str> = keys
            .into_iter()
            .filter(|k| {
                let first = ms[0].input.params.get(*k);
                ms.iter().any(|m| m.input.params.get(*k) != first)
            })
            .collect();
        if !differ.is_empty() {
            out.insert(op, differ);
        }
    }
    out
}

/// A param's value as written on a command line: strings bare, the rest as JSON.
pub fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a param's value is `text` as typed: numbers compare as numbers (`0.30` is `0.3`).
pub fn value_is(v: &Value, text: &str) -> bool {
    match v {
        Value::Number(n) => text.parse::<f64>().is_ok_and(|x| n.as_f64() == Some(x)),
        Value::String(s) => s == text,
        Value::Bool(b) => text == if *b { "true" } else { "false" },
        Value::Null => text == "null",
        // Lists and maps, as JSON (`[16,32]`).
        other => serde_json::to_string(other).is_ok_and(|s| s == text),
    }
}

/// One entry of `cache ls --json`. Its directory is `path`, as in `show --json` and
/// `$ABLATE_INPUTS`; `status` is a word (`done`, `diverged`), `status_detail` the sentence.
fn entry_json(store: &Store, e: &EntryInfo) -> Value {
    let path = store.entry_dir(&e.key);
    match &e.manifest {
        Some(m) => json!({
            "key": e.key.to_hex(),
            "op": m.input.op,
            "op_version": m.input.op_version,
            "pipeline": m.origin.pipeline,
            "stage": m.origin.stage,
            "label": m.origin.label,
            "instance": instance_of(m),
            "status": m.status.name(),
            "status_detail": m.status.to_string(),
            "params": m.input.params,
            "size": e.size,
            "started_at": format_timestamp_us(m.started_at_us),
            "started_at_us": m.started_at_us,
            "seconds": m.seconds,
            "device": m.device,
            "host": m.host,
            "path": path,
        }),
        None => json!({
            "key": e.key.to_hex(),
            "path": path,
            "error": "no readable manifest",
        }),
    }
}

/// Rows as columns two spaces apart (the columns in `right` right-aligned), the last one
/// unpadded.
pub fn aligned<const N: usize>(rows: &[[String; N]], right: &[usize]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let fill = " ".repeat(widths[i] - cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if right.contains(&i) {
                line.push_str(&fill);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i + 1 < N {
                    line.push_str(&fill);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
