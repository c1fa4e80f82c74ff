//! Reading the table back: the recorded instances, and the rows as records.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use serde_json::Value;

use super::schema::{RunRecord, check_runs_schema, fixed_type, is_fixed, is_legacy, label_key};
use crate::error::ResultsError;
use crate::parquet_io::read_batch;
use crate::table::ColumnData;
use crate::value::display_f64;

/// What the run table holds of one instance (see [`recorded_instances`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The start time (Unix µs) of the computation its rows came from.
    pub started_at_us: i64,
    /// Whether its rows are marked `current` (false in a table written before that column).
    pub current: bool,
}

/// The instance keys already recorded in the run table at `path`, each with the start time
/// of the computation its rows came from and whether they are current; empty if there is no
/// file. Reads only the `instance`, `started_at` and `current` columns. A caller compares the
/// time with the cache entry's manifest to find rows of a computation the entry no longer
/// holds, and the flags with its plan to see whether `current` must move.
pub fn recorded_instances(path: &Path) -> Result<HashMap<String, Recorded>, ResultsError> {
    let mut out = HashMap::new();
    for_each_recorded(path, |instance, recorded| {
        out.insert(instance.to_owned(), recorded);
    })?;
    Ok(out)
}

/// [`recorded_instances`] without collecting them: `f` sees each row's instance key and what
/// its row says, borrowed (a run table of 10,000 instances is read on every run, #21).
pub fn for_each_recorded(
    path: &Path,
    mut f: impl FnMut(&str, Recorded),
) -> Result<(), ResultsError> {
    if !path.try_exists().unwrap_or(true) {
        return Ok(());
    }
    let (schema, batch) = read_batch(path, Some(&["instance", "started_at", "current"]))?;
    check_runs_schema(path, schema.fields().iter().map(|f| f.name().as_str()))?;
    let column = |name: &str| -> Result<Option<ArrayRef>, ResultsError> {
        let Ok(i) = batch.schema().index_of(name) else {
            return Ok(None);
        };
        cast(batch.column(i), &fixed_type(name))
            .map(Some)
            .map_err(|source| ResultsError::ConvertColumn {
                path: path.to_owned(),
                column: name.to_owned(),
                source,
            })
    };
    let instances = column("instance")?.expect("checked above");
    let started = column("started_at")?.expect("checked above");
    let started = started.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let current = column("current")?;
    let current = current.as_ref().map(|c| c.as_boolean());
    for (row, (i, t)) in instances
        .as_string::<i32>()
        .iter()
        .zip(started.iter())
        .enumerate()
    {
        if let Some(i) = i {
            let recorded = Recorded {
                started_at_us: t.unwrap_or_default(),
                current: current.is_some_and(|c| c.is_valid(row) && c.value(row)),
            };
            f(i, recorded);
        }
    }
    Ok(())
}

/// Reads the run table at `path` back into records. Label columns become labels again
/// (`param_op` → `op`; null cells are absent labels); the seed lives in [`RunRecord::seed`].
pub fn read_runs(path: &Path) -> Result<Vec<RunRecord>, ResultsError> {
    let table = crate::parquet_io::read_table(path)?;
    check_runs_schema(path, table.column_names())?;
    let col = |name: &str| &table.column(name).expect("checked above").data;
    let strs = |name| cells_str(col(name));
    let (pipeline, stage, instance, label, op) = (
        strs("pipeline"),
        strs("stage"),
        strs("instance"),
        strs("label"),
        strs("op"),
    );
    let legacy = is_legacy(table.column_names());
    let status = if legacy {
        vec![None; table.num_rows()]
    } else {
        strs("status")
    };
    let (metric, device, git_rev, version) = (
        strs("metric"),
        strs("device"),
        strs("git_rev"),
        strs("ablate_version"),
    );
    let (value, wall) = (cells_f64(col("value")), cells_f64(col("wall_time_s")));
    let (step, seed, started) = (
        cells_i64(col("step")),
        cells_i64(col("seed")),
        cells_i64(col("started_at")),
    );
    let label_columns: Vec<(String, &ColumnData)> = table
        .columns
        .iter()
        .filter(|c| !is_fixed(&c.name, legacy))
        .map(|c| (label_key(&c.name, legacy), &c.data))
        .collect();

    Ok((0..table.num_rows())
        .map(|row| RunRecord {
            pipeline: pipeline[row].clone().unwrap_or_default(),
            stage: stage[row].clone().unwrap_or_default(),
            instance: instance[row].clone().unwrap_or_default(),
            label: label[row].clone().unwrap_or_default(),
            op: op[row].clone().unwrap_or_default(),
            status: status[row].clone().unwrap_or_else(|| "done".into()),
            labels: label_columns
                .iter()
                .filter_map(|(key, data)| Some((key.clone(), cell_value(data, row)?)))
                .collect(),
            metric: metric[row].clone().unwrap_or_default(),
            value: value[row].unwrap_or(f64::NAN),
            step: step[row],
            seed: seed[row],
            device: device[row].clone().unwrap_or_default(),
            wall_time_s: wall[row].unwrap_or(f64::NAN),
            started_at_us: started[row].unwrap_or_default(),
            git_rev: git_rev[row].clone(),
            ablate_version: version[row].clone().unwrap_or_default(),
        })
        .collect())
}

pub(super) fn cells_str(data: &ColumnData) -> Vec<Option<String>> {
    match data {
        ColumnData::Str(v) => v.clone(),
        ColumnData::Bool(v) => v.iter().map(|b| b.map(|b| b.to_string())).collect(),
        ColumnData::Int(v) => v.iter().map(|i| i.map(|i| i.to_string())).collect(),
        ColumnData::Float(v) => v.iter().map(|x| x.map(display_f64)).collect(),
    }
}

fn cells_f64(data: &ColumnData) -> Vec<Option<f64>> {
    match data {
        ColumnData::Float(v) => v.clone(),
        ColumnData::Int(v) => v.iter().map(|i| i.map(|i| i as f64)).collect(),
        ColumnData::Bool(v) => vec![None; v.len()],
        ColumnData::Str(v) => v.iter().map(|s| s.as_deref()?.parse().ok()).collect(),
    }
}

fn cells_i64(data: &ColumnData) -> Vec<Option<i64>> {
    match data {
        ColumnData::Int(v) => v.clone(),
        ColumnData::Float(v) => v.iter().map(|x| x.map(|x| x as i64)).collect(),
        ColumnData::Bool(v) => vec![None; v.len()],
        ColumnData::Str(v) => v.iter().map(|s| s.as_deref()?.parse().ok()).collect(),
    }
}

fn cell_value(data: &ColumnData, row: usize) -> Option<Value> {
    match data {
        ColumnData::Bool(v) => v[row].map(Value::Bool),
        ColumnData::Int(v) => v[row].map(Value::from),
        ColumnData::Float(v) => v[row]
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        ColumnData::Str(v) => v[row].clone().map(Value::String),
    }
}
