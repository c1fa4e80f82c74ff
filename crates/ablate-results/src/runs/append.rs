//! Appending records: the new rows and the file's rows as columns, merged with widened label
//! types and written back whole.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::compute::{cast, concat, filter};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde_json::Value;

use super::schema::{
    RUN_COLUMNS, RunRecord, check_runs_schema, fixed_type, is_fixed, is_legacy, label_column,
    merge_err,
};
use crate::error::ResultsError;
use crate::parquet_io::{normalize, read_batch, write_batch};
use crate::value::{Kind, column_data, display_f64};

/// What an [`append_runs`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Rows written from the new records (after dropping duplicates among them).
    pub appended: usize,
    /// Existing rows dropped because new records have the same instance.
    pub replaced: usize,
    /// Rows in the file afterwards.
    pub total_rows: usize,
}

/// Merges `records` into the run table at `path` (created if missing) and rewrites it
/// atomically. The records of an instance replace every existing row of that instance (a
/// recomputed entry stands whole for the old one: no metric of the old computation survives);
/// label columns are unioned, null-filled where absent, and widened (Int → Float → Utf8,
/// Bool → Utf8) where old and new values disagree. Every row's `current` becomes whether its
/// instance is in `current` (the keys of the latest plan); with no records and no change of
/// `current`, nothing is written.
///
/// `retired` names label columns that earlier versions wrote and no record has any more (a
/// `cmd`'s `run`, `deps` and `args`, which are settings rather than parameters): they are
/// dropped from the existing rows too, so the file's columns are the same for old rows and new.
///
/// Read-merge-write is not safe against concurrent appenders: callers serialise appends to one
/// file (the engine has a single results writer).
pub fn append_runs(
    path: &Path,
    records: &[RunRecord],
    current: &HashSet<String>,
    retired: &[&str],
) -> Result<AppendStats, ResultsError> {
    let exists = match std::fs::metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(ResultsError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    if records.is_empty() && !exists {
        return Ok(AppendStats::default());
    }
    let old = if exists {
        Some(OldRuns::read(path, retired)?)
    } else {
        None
    };

    let records = last_per_key(records);
    let new = NewRuns::build(path, &records, current)?;
    let (mut old, replaced) = match old {
        Some(old) => old
            .without(&records)
            .map_err(|source| merge_err(path, source))?,
        None => (OldRuns::empty(), 0),
    };
    let moved = old.mark_current(current) | old.retired;
    if records.is_empty() && !moved {
        return Ok(AppendStats {
            total_rows: old.rows,
            ..AppendStats::default()
        });
    }

    let batch = merge(&old, &new).map_err(|source| merge_err(path, source))?;
    write_batch(path, &batch)?;
    Ok(AppendStats {
        appended: records.len(),
        replaced,
        total_rows: batch.num_rows(),
    })
}

type RowKey<'a> = (&'a str, &'a str, Option<i64>);

fn row_key(r: &RunRecord) -> RowKey<'_> {
    (&r.instance, &r.metric, r.step)
}

/// The records, keeping only the last of any with the same (instance, metric, step).
fn last_per_key(records: &[RunRecord]) -> Vec<&RunRecord> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut kept: Vec<&RunRecord> = records
        .iter()
        .rev()
        .filter(|r| seen.insert(row_key(r)))
        .collect();
    kept.reverse();
    kept
}

/// The new records as columns: fixed arrays, and label values not yet typed (their type
/// depends on what the file already holds).
struct NewRuns<'a> {
    fixed: HashMap<&'static str, ArrayRef>,
    labels: BTreeMap<String, Vec<Option<&'a Value>>>,
    rows: usize,
}

impl<'a> NewRuns<'a> {
    fn build(
        path: &Path,
        records: &[&'a RunRecord],
        current: &HashSet<String>,
    ) -> Result<Self, ResultsError> {
        let rows = records.len();
        let mut seeds = Vec::with_capacity(rows);
        let mut labels: BTreeMap<String, Vec<Option<&'a Value>>> = BTreeMap::new();
        for (row, record) in records.iter().enumerate() {
            let mut seed = record.seed;
            for (key, value) in &record.labels {
                // An integer `seed` label is the seed; anything else named `seed` is kept as
                // `param_seed` rather than lost.
                if key == "seed" && value.is_i64() && seed.is_none_or(|s| Some(s) == value.as_i64())
                {
                    seed = value.as_i64();
                    continue;
                }
                let column = label_column(key);
                if column != *key && record.labels.contains_key(&column) {
                    return Err(ResultsError::LabelCollision {
                        path: path.to_owned(),
                        instance: record.instance.clone(),
                        label: key.clone(),
                        column,
                    });
                }
                labels.entry(column).or_insert_with(|| vec![None; rows])[row] = Some(value);
            }
            seeds.push(seed);
        }

        let strs = |f: fn(&RunRecord) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(records.iter().map(|r| f(r))))
        };
        let floats = |f: fn(&RunRecord) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(records.iter().map(|r| f(r))))
        };
        let started: Vec<i64> = records.iter().map(|r| r.started_at_us).collect();
        let fixed: HashMap<&'static str, ArrayRef> = HashMap::from([
            ("pipeline", strs(|r| &r.pipeline)),
            ("stage", strs(|r| &r.stage)),
            ("instance", strs(|r| &r.instance)),
            ("label", strs(|r| &r.label)),
            ("op", strs(|r| &r.op)),
            ("status", strs(|r| &r.status)),
            (
                "current",
                Arc::new(
                    records
                        .iter()
                        .map(|r| Some(current.contains(&r.instance)))
                        .collect::<BooleanArray>(),
                ),
            ),
            ("metric", strs(|r| &r.metric)),
            ("value", floats(|r| r.value)),
            (
                "step",
                Arc::new(records.iter().map(|r| r.step).collect::<Int64Array>()) as ArrayRef,
            ),
            (
                "final",
                Arc::new(
                    records
                        .iter()
                        .map(|r| Some(r.step.is_none()))
                        .collect::<BooleanArray>(),
                ),
            ),
            ("seed", Arc::new(Int64Array::from(seeds))),
            ("device", strs(|r| &r.device)),
            ("wall_time_s", floats(|r| r.wall_time_s)),
            (
                "started_at",
                Arc::new(TimestampMicrosecondArray::from(started).with_timezone("UTC")),
            ),
            (
                "git_rev",
                Arc::new(
                    records
                        .iter()
                        .map(|r| r.git_rev.as_deref())
                        .collect::<StringArray>(),
                ),
            ),
            ("ablate_version", strs(|r| &r.ablate_version)),
        ]);
        Ok(Self {
            fixed,
            labels,
            rows,
        })
    }
}

/// The rows already in the file, with fixed columns cast to their canonical types and label
/// columns normalised to Boolean/Int64/Float64/Utf8.
struct OldRuns {
    fixed: HashMap<&'static str, ArrayRef>,
    labels: BTreeMap<String, ArrayRef>,
    rows: usize,
    /// Some retired label column was dropped: the file must be rewritten.
    retired: bool,
}

impl OldRuns {
    fn empty() -> Self {
        Self {
            fixed: RUN_COLUMNS
                .iter()
                .map(|&name| (name, new_null_array(&fixed_type(name), 0)))
                .collect(),
            labels: BTreeMap::new(),
            rows: 0,
            retired: false,
        }
    }

    fn read(path: &Path, retired: &[&str]) -> Result<Self, ResultsError> {
        let (schema, batch) = read_batch(path, None)?;
        check_runs_schema(path, schema.fields().iter().map(|f| f.name().as_str()))?;
        let legacy = is_legacy(schema.fields().iter().map(|f| f.name().as_str()));
        let mut fixed = HashMap::new();
        let mut labels = BTreeMap::new();
        let mut dropped = false;
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let name = field.name().as_str();
            match RUN_COLUMNS.iter().find(|&&c| c == name) {
                Some(&fixed_name) if is_fixed(name, legacy) => {
                    let array = cast(array, &fixed_type(name)).map_err(|source| {
                        ResultsError::ConvertColumn {
                            path: path.to_owned(),
                            column: name.to_owned(),
                            source,
                        }
                    })?;
                    fixed.insert(fixed_name, array);
                }
                Some(_) => {
                    // A parameter of that name, from before the column was fixed.
                    labels.insert(label_column(name), normalize(path, name, array)?);
                }
                None if retired.contains(&name) => dropped = true,
                None => {
                    labels.insert(name.to_owned(), normalize(path, name, array)?);
                }
            }
        }
        let rows = batch.num_rows();
        if legacy {
            // Rows from before statuses were recorded are of done computations.
            let step = fixed["step"].clone();
            fixed.insert(
                "status",
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    "done", rows,
                ))),
            );
            fixed.insert(
                "final",
                Arc::new(
                    (0..rows)
                        .map(|i| Some(step.is_null(i)))
                        .collect::<BooleanArray>(),
                ),
            );
            fixed.insert("current", Arc::new(BooleanArray::from(vec![false; rows])));
        }
        Ok(Self {
            fixed,
            labels,
            rows,
            retired: dropped,
        })
    }

    /// Sets `current` to whether each row's instance is in `current`; whether any changed.
    fn mark_current(&mut self, current: &HashSet<String>) -> bool {
        let instance = self.fixed["instance"].as_string::<i32>();
        let marked: BooleanArray = (0..self.rows)
            .map(|i| Some(instance.is_valid(i) && current.contains(instance.value(i))))
            .collect();
        let before = self.fixed["current"].as_boolean();
        let moved =
            (0..self.rows).any(|i| !before.is_valid(i) || before.value(i) != marked.value(i));
        self.fixed.insert("current", Arc::new(marked));
        moved
    }

    /// Drops the rows of every instance the new records are of; returns the rest and how many
    /// were dropped.
    fn without(self, records: &[&RunRecord]) -> Result<(Self, usize), ArrowError> {
        let new_instances: HashSet<&str> = records.iter().map(|r| r.instance.as_str()).collect();
        let instance = self.fixed["instance"].as_string::<i32>();
        let keep: BooleanArray = (0..self.rows)
            // A row with a null instance cannot be replaced; keep it.
            .map(|i| Some(!(instance.is_valid(i) && new_instances.contains(instance.value(i)))))
            .collect();
        let replaced = keep.false_count();
        if replaced == 0 {
            return Ok((self, 0));
        }
        let fixed = self
            .fixed
            .iter()
            .map(|(&name, array)| Ok((name, filter(array, &keep)?)))
            .collect::<Result<_, ArrowError>>()?;
        let labels = self
            .labels
            .iter()
            .map(|(name, array)| Ok((name.clone(), filter(array, &keep)?)))
            .collect::<Result<_, ArrowError>>()?;
        let rows = self.rows - replaced;
        Ok((
            Self {
                fixed,
                labels,
                rows,
                retired: self.retired,
            },
            replaced,
        ))
    }
}

/// Old rows then new rows, under the unified schema.
fn merge(old: &OldRuns, new: &NewRuns<'_>) -> Result<RecordBatch, ArrowError> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for name in RUN_COLUMNS {
        fields.push(Field::new(name, fixed_type(name), true));
        columns.push(concat(&[&*old.fixed[name], &*new.fixed[name]])?);
    }

    let names: BTreeSet<&String> = old.labels.keys().chain(new.labels.keys()).collect();
    for name in names {
        let old_array = old.labels.get(name);
        let new_values = new.labels.get(name);
        let old_kind = old_array.map(|a| kind_of(a.data_type()));
        let new_kind = new_values.and_then(|v| Kind::infer(v.iter().copied()));
        let kind = match (old_kind, new_kind) {
            (Some(a), Some(b)) => Kind::unify(a, b),
            (Some(k), None) | (None, Some(k)) => k,
            (None, None) => Kind::Str,
        };
        let data_type = kind.data_type();
        let old_array = match old_array {
            Some(a) => widen(a, kind)?,
            None => new_null_array(&data_type, old.rows),
        };
        let new_array = match new_values {
            Some(values) => column_data(values, Some(kind)).to_array(),
            None => new_null_array(&data_type, new.rows),
        };
        fields.push(Field::new(name, data_type, true));
        columns.push(concat(&[&*old_array, &*new_array])?);
    }
    let metadata = HashMap::from([(PANDAS_METADATA.to_owned(), pandas_metadata(&fields))]);
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, metadata)),
        columns,
    )
}

/// The schema metadata key pandas (through pyarrow) reads its column types from.
const PANDAS_METADATA: &str = "pandas";

/// pandas' metadata naming every integer column's type `Int64`, its nullable integer: without
/// it `pd.read_parquet` turns an integer column with nulls (`step` is null on final rows)
/// into `float64`. pyarrow takes the columns it does not list as they are, and other readers
/// (polars, DuckDB) ignore the key.
fn pandas_metadata(fields: &[Field]) -> String {
    let columns: Vec<Value> = fields
        .iter()
        .filter(|f| f.data_type() == &DataType::Int64)
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "field_name": f.name(),
                "pandas_type": "int64",
                "numpy_type": "Int64",
                "metadata": null,
            })
        })
        .collect();
    serde_json::json!({"index_columns": [], "column_indexes": [], "columns": columns}).to_string()
}

fn kind_of(data_type: &DataType) -> Kind {
    match data_type {
        DataType::Boolean => Kind::Bool,
        DataType::Int64 => Kind::Int,
        DataType::Float64 => Kind::Float,
        _ => Kind::Str,
    }
}

/// Converts a normalised label column to a wider kind, writing numbers as JSON would so that
/// widened old values read the same as new ones.
fn widen(array: &ArrayRef, kind: Kind) -> Result<ArrayRef, ArrowError> {
    match (kind_of(array.data_type()), kind) {
        (from, to) if from == to => Ok(array.clone()),
        (Kind::Float, Kind::Str) => Ok(Arc::new(
            array
                .as_primitive::<Float64Type>()
                .iter()
                .map(|x| x.map(display_f64))
                .collect::<StringArray>(),
        )),
        (_, to) => cast(array, &to.data_type()),
    }
}
