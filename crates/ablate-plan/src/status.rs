//! Whether each instance is cached, and if not, why it must run.

use std::fmt;

use std::sync::Arc;

use ablate_cache::{CachedEntry, KeyInput, Lookup, Store};
use ablate_spec::Value;

use crate::build::render_value;
use crate::{Plan, PlanIndex};

#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// The cache holds a verified entry; its manifest (metrics, outputs) comes with it, read
    /// when first asked for.
    Cached(Arc<CachedEntry>),
    Run(Reason),
}

impl Status {
    pub fn is_cached(&self) -> bool {
        matches!(self, Status::Cached(_))
    }
}

/// Why an instance must run. Compared against the key the same instance (same stage and
/// labels) had at the pipeline's last run.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// No earlier run of this instance is known (or its entry was removed).
    New,
    /// `--force` named its stage.
    Forced,
    /// `--force` named a stage upstream of it.
    UpstreamForced,
    /// The cache held an entry for its key that failed verification.
    Invalid(String),
    /// Its key changed since the last run; what changed.
    Changed(Vec<Change>),
    /// The cache holds it as stopped early at `step` by a stage's `early_stop:` (a `pruned`
    /// result), and this stage does not stop early: it runs to its end, resuming from the
    /// checkpoint the pruned run left.
    Pruned { step: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Param name, old value, new value (`None`: absent).
    Params(Vec<(String, Option<Value>, Option<Value>)>),
    /// Ids of the inputs whose keys changed.
    Inputs(Vec<String>),
    OpVersion {
        from: u32,
        to: u32,
    },
    /// File dependencies whose content changed, or that were added or removed (a file a
    /// `deps` directory or glob matches, or no longer matches), sorted by path.
    Deps(Vec<String>),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Cached(_) => f.write_str("cached"),
            Status::Run(r) => write!(f, "run: {r}"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::New => f.write_str("new"),
            Reason::Forced => f.write_str("forced"),
            Reason::UpstreamForced => f.write_str("forced upstream"),
            Reason::Invalid(why) => write!(f, "cache entry invalid ({why})"),
            Reason::Pruned { step } => write!(
                f,
                "cached as pruned at step {step} by early stopping; runs to its end from its \
                 checkpoint"
            ),
            Reason::Changed(changes) => {
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
        }
    }
}

impl Reason {
    /// A one-word kind: `new`, `forced`, `invalid`, `params`, `input`, `op`, `deps`.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Forced | Reason::UpstreamForced => "forced",
            Reason::Invalid(_) => "invalid",
            Reason::Pruned { .. } => "pruned",
            Reason::Changed(c) => match c.first() {
                Some(Change::Params(_)) => "params changed",
                Some(Change::Inputs(_)) => "input changed",
                Some(Change::OpVersion { .. }) => "op changed",
                Some(Change::Deps(_)) => "deps changed",
                None => "changed",
            },
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(unset)".to_owned(), render_value);
        match self {
            Change::Params(ps) => {
                f.write_str("params changed (")?;
                for (i, (k, old, new)) in ps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {} → {}", show(old), show(new))?;
                }
                f.write_str(")")
            }
            Change::Inputs(ids) if ids.len() > 3 => {
                write!(
                    f,
                    "input changed ({} and {} more)",
                    ids[..2].join(", "),
                    ids.len() - 2
                )
            }
            Change::Inputs(ids) => write!(f, "input changed ({})", ids.join(", ")),
            Change::OpVersion { from, to } => write!(f, "op version {from} → {to}"),
            Change::Deps(paths) => write!(f, "deps changed ({})", paths.join(", ")),
        }
    }
}

/// The status of every instance, indexed by [`PlanIndex::index`]. Looks each key up in the
/// store (verifying entries, in parallel), then explains misses against the last run's keys.
pub fn statuses(plan: &Plan, store: &Store, forced: &[&str]) -> Vec<Status> {
    let n = plan.len();
    let mut lookups = lookup_all(plan, store);
    let mut out: Vec<Option<Status>> = vec![None; n];
    let forced_ids: Vec<PlanIndex> = plan
        .stages()
        .filter(|(name, _)| forced.contains(&name.as_str()))
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    for id in &forced_ids {
        out[id.index()] = Some(Status::Run(Reason::Forced));
    }
    for id in plan.descendants(&forced_ids) {
        out[id.index()].get_or_insert(Status::Run(Reason::UpstreamForced));
    }
    // Only misses are explained against the last run: a fully cached plan never reads it.
    let mut index = None;
    for (id, inst) in plan.instances() {
        if out[id.index()].is_some() {
            continue;
        }
        let status = match std::mem::replace(&mut lookups[id.index()], Lookup::Miss) {
            Lookup::Hit(entry) => match *entry.status() {
                ablate_cache::EntryStatus::Pruned { step } if inst.early_stop.is_none() => {
                    Status::Run(Reason::Pruned { step })
                }
                _ => Status::Cached(entry),
            },
            Lookup::Invalid(why) => Status::Run(Reason::Invalid(why)),
            Lookup::Miss => {
                let index = index.get_or_insert_with(|| store.load_index(plan.pipeline()));
                let previous = index
                    .instances
                    .get(&inst.id)
                    .and_then(|k| store.read_manifest(k));
                match previous {
                    Some(prev) if prev.key != inst.key => {
                        let changes = diff(&prev.input, &inst.key_input, plan, id);
                        Status::Run(if changes.is_empty() {
                            Reason::New
                        } else {
                            Reason::Changed(changes)
                        })
                    }
                    _ => Status::Run(Reason::New),
                }
            }
        };
        out[id.index()] = Some(status);
    }
    out.into_iter()
        .map(|s| s.expect("every instance has a status"))
        .collect()
}

/// What a run will do with an instance the cache does not hold, besides why it must run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outlook {
    /// A run skips it: the instance whose cached entry diverged (`diverged: record`), and
    /// whether that is one of its own inputs (else it is further up).
    pub skipped: Option<(PlanIndex, bool)>,
    /// Its checkpoint directory holds what an earlier attempt of its key left (a killed or
    /// failed one): the program resumes from it.
    pub resumes: bool,
}

/// The [`Outlook`] of every instance, indexed by [`PlanIndex::index`] (a cached one's is the
/// default). The skips follow the scheduler's rule (`ablate_run`'s `Graph::settle`): an
/// instance that maps over a diverged input is skipped, and so is what needs a skipped one,
/// except a report, which takes a diverged input and (unless `strict`) a skipped one.
pub fn outlook(plan: &Plan, statuses: &[Status], store: &Store) -> Vec<Outlook> {
    let mut out = vec![Outlook::default(); plan.len()];
    // One listing of the checkpoints, not a look per instance (a plan of 10,000 new instances
    // would open 10,000 missing directories).
    let checkpoints: std::collections::HashSet<std::ffi::OsString> =
        match std::fs::read_dir(store.checkpoints_root()) {
            Ok(dir) => dir.flatten().map(|e| e.file_name()).collect(),
            Err(_) => Default::default(),
        };
    for (id, inst) in plan.instances() {
        if statuses[id.index()].is_cached() {
            continue;
        }
        let partial = inst.report && !inst.strict;
        let skipped = plan
            .inputs(id)
            .find_map(|(i, _)| match &statuses[i.index()] {
                Status::Cached(entry) if !entry.status().is_done() && !inst.report => {
                    Some((i, true))
                }
                Status::Run(_) if !partial => out[i.index()].skipped.map(|(by, _)| (by, false)),
                _ => None,
            });
        let resumes = skipped.is_none()
            && !checkpoints.is_empty()
            && checkpoints.contains(std::ffi::OsStr::new(&inst.key.to_hex()))
            && holds_anything(&store.checkpoint_dir(&inst.key));
        out[id.index()] = Outlook { skipped, resumes };
    }
    out
}

/// Whether `dir` holds a file that is not empty, or a directory: an attempt killed before it
/// logged or saved anything leaves an empty metrics log, which resumes nothing.
fn holds_anything(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| e.metadata().is_ok_and(|m| m.is_dir() || m.len() > 0))
}

fn lookup_all(plan: &Plan, store: &Store) -> Vec<Lookup<Arc<CachedEntry>>> {
    let keys: Vec<_> = (0..plan.len())
        .map(|i| plan.graph[petgraph::graph::NodeIndex::new(i)].key)
        .collect();
    store.lookup_all(&keys)
}

fn diff(prev: &KeyInput, now: &KeyInput, plan: &Plan, id: PlanIndex) -> Vec<Change> {
    let mut changes = Vec::new();
    if prev.op_version != now.op_version {
        changes.push(Change::OpVersion {
            from: prev.op_version,
            to: now.op_version,
        });
    }
    let mut params = Vec::new();
    for (k, v) in &now.params {
        if prev.params.get(k) != Some(v) {
            params.push((k.clone(), prev.params.get(k).cloned(), Some(v.clone())));
        }
    }
    for (k, v) in &prev.params {
        if !now.params.contains_key(k) {
            params.push((k.clone(), Some(v.clone()), None));
        }
    }
    if !params.is_empty() {
        changes.push(Change::Params(params));
    }
    if prev.inputs != now.inputs {
        let prev_keys: Vec<_> = prev.inputs.iter().map(|r| r.key).collect();
        let mut changed: Vec<String> = plan
            .inputs(id)
            .filter(|(_, i)| !prev_keys.contains(&i.key))
            .map(|(_, i)| i.id.clone())
            .collect();
        if changed.is_empty() {
            changed.push(format!(
                "{} → {} inputs",
                prev.inputs.len(),
                now.inputs.len()
            ));
        }
        changes.push(Change::Inputs(changed));
    }
    if prev.deps != now.deps {
        let mut paths: Vec<String> = now
            .deps
            .iter()
            .filter(|d| !prev.deps.contains(d))
            .map(|d| d.path.clone())
            .chain(
                prev.deps
                    .iter()
                    .filter(|d| !now.deps.iter().any(|n| n.path == d.path))
                    .map(|d| d.path.clone()),
            )
            .collect();
        // Edited, added (under a directory or glob, #18) and removed files, by path.
        paths.sort();
        paths.dedup();
        changes.push(Change::Deps(paths));
    }
    changes
}
