//! The table's columns: the fixed ones, the record a row holds, and how labels map to columns
//! (also in tables written by earlier versions).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use arrow::datatypes::{DataType, TimeUnit};
use arrow::error::ArrowError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ResultsError;

/// The fixed columns of a run table, in schema order; label columns follow, sorted by name.
///
/// - `status`: how the instance's computation ended, `done` or `diverged` (a divergence kept as
///   a result by `diverged: record`: its rows are the metrics logged before it).
/// - `current`: the instance is in the plan of the latest run of the pipeline (rewritten by
///   every run), so `df[df.current]` leaves out the variants of earlier runs (`--set`,
///   `--matrix`, edited files).
/// - `final`: the row is an instance's final value of a metric (`step` is null); a stepped
///   metric's last value is also its final one, so a mean over all rows counts it twice.
pub const RUN_COLUMNS: [&str; 17] = [
    "pipeline",
    "stage",
    "instance",
    "label",
    "op",
    "status",
    "current",
    "metric",
    "value",
    "step",
    "final",
    "seed",
    "device",
    "wall_time_s",
    "started_at",
    "git_rev",
    "ablate_version",
];

/// Fixed columns added after run tables were first written (#21): a file without them is
/// read as `done` rows, not current, with `final` from `step` — and a label column of one of
/// these names in such a file was a parameter, kept as `param_<name>`.
pub(super) const ADDED_COLUMNS: [&str; 3] = ["status", "current", "final"];

/// Prefix given to a label whose name is already a fixed column (`op` → `param_op`).
pub const COLLISION_PREFIX: &str = "param_";

/// One metric value of one stage instance: one row of the run table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub pipeline: String,
    pub stage: String,
    /// The full 64-hex instance key.
    pub instance: String,
    /// Human-readable instance label, e.g. `weights=shared,steps=4,seed=0`.
    pub label: String,
    pub op: String,
    /// `done` or `diverged` (see [`RUN_COLUMNS`]).
    pub status: String,
    /// Params and matrix values; each becomes a column.
    pub labels: BTreeMap<String, Value>,
    pub metric: String,
    pub value: f64,
    pub step: Option<i64>,
    pub seed: Option<i64>,
    pub device: String,
    pub wall_time_s: f64,
    /// Unix time in microseconds.
    pub started_at_us: i64,
    pub git_rev: Option<String>,
    pub ablate_version: String,
}

/// A run table written before the [`ADDED_COLUMNS`].
pub(super) fn is_legacy<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    let mut found = 0;
    for _ in names.by_ref().filter(|n| ADDED_COLUMNS.contains(n)) {
        found += 1;
    }
    found < ADDED_COLUMNS.len()
}

/// Whether a column of a file is a fixed one (else it holds a label).
pub(super) fn is_fixed(name: &str, legacy: bool) -> bool {
    RUN_COLUMNS.contains(&name) && !(legacy && ADDED_COLUMNS.contains(&name))
}

pub(super) fn check_runs_schema<'a>(
    path: &Path,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ResultsError> {
    let present: HashSet<&str> = names.collect();
    let missing: Vec<String> = RUN_COLUMNS
        .iter()
        .filter(|c| !ADDED_COLUMNS.contains(c) && !present.contains(*c))
        .map(|c| (*c).to_owned())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ResultsError::NotRunsTable {
            path: path.to_owned(),
            missing,
        })
    }
}

pub(super) fn merge_err(path: &Path, source: ArrowError) -> ResultsError {
    ResultsError::Merge {
        path: path.to_owned(),
        source,
    }
}

pub(super) fn fixed_type(name: &str) -> DataType {
    match name {
        "value" | "wall_time_s" => DataType::Float64,
        "step" | "seed" => DataType::Int64,
        "current" | "final" => DataType::Boolean,
        "started_at" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => DataType::Utf8,
    }
}

/// The column a label is stored in.
pub(super) fn label_column(key: &str) -> String {
    if RUN_COLUMNS.contains(&key) {
        format!("{COLLISION_PREFIX}{key}")
    } else {
        key.to_owned()
    }
}

/// The label a column holds (inverse of [`label_column`]); in a `legacy` table, the
/// [`ADDED_COLUMNS`] were not yet fixed and held labels under their own names.
pub(super) fn label_key(column: &str, legacy: bool) -> String {
    match column.strip_prefix(COLLISION_PREFIX) {
        Some(key) if RUN_COLUMNS.contains(&key) && !(legacy && ADDED_COLUMNS.contains(&key)) => {
            key.to_owned()
        }
        _ => column.to_owned(),
    }
}
