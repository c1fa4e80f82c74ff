//! The long-format run table, `results/<pipeline>/runs.parquet`: one row per instance per
//! metric (per step for stepped metrics), appended to by every run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::compute::{cast, concat, filter};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ResultsError;
use crate::parquet_io::{normalize, read_batch, write_batch};
use crate::table::ColumnData;
use crate::value::{Kind, column_data, display_f64};

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
const ADDED_COLUMNS: [&str; 3] = ["status", "current", "final"];

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

/// A run table written before the [`ADDED_COLUMNS`].
fn is_legacy<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    let mut found = 0;
    for _ in names.by_ref().filter(|n| ADDED_COLUMNS.contains(n)) {
        found += 1;
    }
    found < ADDED_COLUMNS.len()
}

/// Whether a column of a file is a fixed one (else it holds a label).
fn is_fixed(name: &str, legacy: bool) -> bool {
    RUN_COLUMNS.contains(&name) && !(legacy && ADDED_COLUMNS.contains(&name))
}

fn check_runs_schema<'a>(
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

fn merge_err(path: &Path, source: ArrowError) -> ResultsError {
    ResultsError::Merge {
        path: path.to_owned(),
        source,
    }
}

fn fixed_type(name: &str) -> DataType {
    match name {
        "value" | "wall_time_s" => DataType::Float64,
        "step" | "seed" => DataType::Int64,
        "current" | "final" => DataType::Boolean,
        "started_at" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => DataType::Utf8,
    }
}

/// The column a label is stored in.
fn label_column(key: &str) -> String {
    if RUN_COLUMNS.contains(&key) {
        format!("{COLLISION_PREFIX}{key}")
    } else {
        key.to_owned()
    }
}

/// The label a column holds (inverse of [`label_column`]); in a `legacy` table, the
/// [`ADDED_COLUMNS`] were not yet fixed and held labels under their own names.
fn label_key(column: &str, legacy: bool) -> String {
    match column.strip_prefix(COLLISION_PREFIX) {
        Some(key) if RUN_COLUMNS.contains(&key) && !(legacy && ADDED_COLUMNS.contains(&key)) => {
            key.to_owned()
        }
        _ => column.to_owned(),
    }
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

fn cells_str(data: &ColumnData) -> Vec<Option<String>> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::parquet_io::{read_schema, read_table};
    use crate::table::Table;

    fn key(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn rec(
        instance: char,
        metric: &str,
        value: f64,
        step: Option<i64>,
        labels: Value,
    ) -> RunRecord {
        let labels: BTreeMap<String, Value> = serde_json::from_value(labels).unwrap();
        RunRecord {
            pipeline: "toy".into(),
            stage: "train".into(),
            instance: key(instance),
            label: labels
                .iter()
                .map(|(k, v)| format!("{k}={}", crate::value::display(v)))
                .collect::<Vec<_>>()
                .join(","),
            op: "train.mlp".into(),
            status: "done".into(),
            labels,
            metric: metric.into(),
            value,
            step,
            seed: None,
            device: "cpu".into(),
            wall_time_s: 1.5,
            started_at_us: 1_700_000_000_000_000,
            git_rev: Some("abc123".into()),
            ablate_version: "0.1.0".into(),
        }
    }

    /// Appends with the new records' instances as the current plan.
    fn append(path: &Path, records: &[RunRecord]) -> Result<AppendStats, ResultsError> {
        let current = records.iter().map(|r| r.instance.clone()).collect();
        append_runs(path, records, &current, &[])
    }

    fn column<'t>(table: &'t Table, name: &str) -> &'t ColumnData {
        &table
            .column(name)
            .unwrap_or_else(|| panic!("no column `{name}`"))
            .data
    }

    #[test]
    fn append_twice_dedups_widens_and_orders_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let a = json!({"weights": "shared", "steps": 4, "seed": 0, "flag": true});
        let b = json!({"weights": "tied", "steps": 8, "seed": 1, "flag": false});
        let first = [
            rec('a', "test_acc", 0.9, None, a.clone()),
            rec('a', "loss", 0.5, Some(1), a.clone()),
            rec('a', "loss", 0.4, Some(2), a),
            rec('b', "test_acc", 0.8, None, b.clone()),
        ];
        let stats = append(&path, &first).unwrap();
        assert_eq!(
            stats,
            AppendStats {
                appended: 4,
                replaced: 0,
                total_rows: 4
            }
        );
        let table = read_table(&path).unwrap();
        assert!(matches!(column(&table, "steps"), ColumnData::Int(_)));
        assert!(matches!(column(&table, "flag"), ColumnData::Bool(_)));

        // `b` is re-run; `c` brings a float `steps`, a string `flag`, a new float label `lr`,
        // and an `op` label that collides with the fixed `op` column.
        let c = json!({"weights": "shared", "steps": 2.5, "seed": 2, "flag": "maybe", "lr": 0.01, "op": "sgd"});
        let second = [
            rec('b', "test_acc", 0.85, None, b),
            rec('c', "test_acc", 0.7, None, c),
        ];
        let stats = append(&path, &second).unwrap();
        assert_eq!(
            stats,
            AppendStats {
                appended: 2,
                replaced: 1,
                total_rows: 5
            }
        );

        let table = read_table(&path).unwrap();
        let names: Vec<&str> = table.column_names().collect();
        let mut expected_names = RUN_COLUMNS.to_vec();
        expected_names.extend(["flag", "lr", "param_op", "steps", "weights"]);
        assert_eq!(names, expected_names);

        let instance = cells_str(column(&table, "instance"));
        let b_rows = instance
            .iter()
            .filter(|i| i.as_deref() == Some(&*key('b')))
            .count();
        assert_eq!(b_rows, 1, "the re-run replaced the old row");
        assert_eq!(
            column(&table, "value"),
            &ColumnData::Float(vec![Some(0.9), Some(0.5), Some(0.4), Some(0.85), Some(0.7)])
        );
        assert_eq!(
            column(&table, "step"),
            &ColumnData::Int(vec![None, Some(1), Some(2), None, None])
        );
        assert_eq!(
            column(&table, "seed"),
            &ColumnData::Int(vec![Some(0), Some(0), Some(0), Some(1), Some(2)])
        );
        assert_eq!(
            column(&table, "steps"),
            &ColumnData::Float(vec![Some(4.0), Some(4.0), Some(4.0), Some(8.0), Some(2.5)])
        );
        assert_eq!(
            column(&table, "flag"),
            &ColumnData::from(vec!["true", "true", "true", "false", "maybe"])
        );
        assert_eq!(
            column(&table, "lr"),
            &ColumnData::Float(vec![None, None, None, None, Some(0.01)])
        );
        assert_eq!(
            column(&table, "param_op"),
            &ColumnData::from(vec![None, None, None, None, Some("sgd")])
        );
        assert_eq!(
            column(&table, "op"),
            &ColumnData::from(vec!["train.mlp"; 5])
        );

        let (schema, rows) = read_schema(&path).unwrap();
        assert_eq!(rows, 5);
        assert_eq!(
            schema.field_with_name("started_at").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            column(&table, "started_at"),
            &ColumnData::Int(vec![Some(1_700_000_000_000_000); 5])
        );
    }

    #[test]
    fn later_duplicates_in_one_call_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let records = [
            rec('a', "acc", 0.1, None, json!({})),
            rec('a', "acc", 0.2, None, json!({})),
        ];
        let stats = append(&path, &records).unwrap();
        assert_eq!((stats.appended, stats.total_rows), (1, 1));
        assert_eq!(
            column(&read_table(&path).unwrap(), "value"),
            &ColumnData::from(vec![0.2])
        );
    }

    #[test]
    fn old_int_column_widens_to_str_when_new_values_are_strings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        append(
            &path,
            &[rec('a', "acc", 0.1, None, json!({"x": 1, "y": 0.5}))],
        )
        .unwrap();
        append(
            &path,
            &[rec('b', "acc", 0.2, None, json!({"x": "big", "y": [1, 2]}))],
        )
        .unwrap();
        let table = read_table(&path).unwrap();
        assert_eq!(column(&table, "x"), &ColumnData::from(vec!["1", "big"]));
        assert_eq!(column(&table, "y"), &ColumnData::from(vec!["0.5", "[1,2]"]));
    }

    #[test]
    fn non_integer_seed_label_is_kept_as_param_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        append(
            &path,
            &[rec('a', "acc", 0.1, None, json!({"seed": "fixed"}))],
        )
        .unwrap();
        let table = read_table(&path).unwrap();
        assert_eq!(column(&table, "seed"), &ColumnData::Int(vec![None]));
        assert_eq!(
            column(&table, "param_seed"),
            &ColumnData::from(vec!["fixed"])
        );
    }

    #[test]
    fn colliding_labels_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let err = append(
            &path,
            &[rec('a', "acc", 0.1, None, json!({"op": 1, "param_op": 2}))],
        )
        .unwrap_err();
        assert!(
            matches!(&err, ResultsError::LabelCollision { column, .. } if column == "param_op")
        );
        assert!(!path.exists());
    }

    #[test]
    fn recorded_instances_reads_keys_and_tolerates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        assert!(recorded_instances(&path).unwrap().is_empty());
        append(
            &path,
            &[
                rec('a', "acc", 0.1, None, json!({})),
                rec('a', "loss", 0.1, None, json!({})),
                rec('b', "acc", 0.1, None, json!({})),
            ],
        )
        .unwrap();
        assert_eq!(
            recorded_instances(&path).unwrap(),
            HashMap::from([
                (
                    key('a'),
                    Recorded {
                        started_at_us: 1_700_000_000_000_000,
                        current: true
                    }
                ),
                (
                    key('b'),
                    Recorded {
                        started_at_us: 1_700_000_000_000_000,
                        current: true
                    }
                )
            ])
        );
    }

    /// #16: a `--force` rerun that computed fewer metrics (or steps) left the old ones behind.
    #[test]
    fn a_recomputed_instance_replaces_every_row_of_the_old_computation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        append(
            &path,
            &[
                rec('a', "acc", 0.1, None, json!({})),
                rec('a', "loss", 0.9, Some(1), json!({})),
                rec('a', "loss", 0.8, Some(2), json!({})),
                rec('b', "acc", 0.3, None, json!({})),
            ],
        )
        .unwrap();
        let mut again = rec('a', "acc", 0.2, None, json!({}));
        again.started_at_us += 5;
        let stats = append(&path, &[again]).unwrap();
        assert_eq!((stats.replaced, stats.total_rows), (3, 2));
        let table = read_table(&path).unwrap();
        assert_eq!(column(&table, "value"), &ColumnData::from(vec![0.3, 0.2]));
        assert_eq!(
            recorded_instances(&path).unwrap()[&key('a')].started_at_us,
            1_700_000_000_000_005
        );
    }

    /// #21: the rows of every variant ever run share a label; `current` picks the latest
    /// plan's, on every append and also when a run adds no rows (a rerun from the cache).
    #[test]
    fn current_marks_the_rows_of_the_latest_plan_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let plan = |keys: &[char]| -> HashSet<String> { keys.iter().map(|&c| key(c)).collect() };
        let a = [
            rec('a', "loss", 0.5, Some(1), json!({"lr": 0.1})),
            rec('a', "loss", 0.4, None, json!({"lr": 0.1})),
        ];
        append_runs(&path, &a, &plan(&['a']), &[]).unwrap();
        // The `--set` variant: another key, the latest plan.
        let b = [rec('b', "loss", 0.3, None, json!({"lr": 0.05}))];
        append_runs(&path, &b, &plan(&['b']), &[]).unwrap();
        let flags = |path: &Path| column(&read_table(path).unwrap(), "current").clone();
        assert_eq!(flags(&path), ColumnData::from(vec![false, false, true]));
        assert_eq!(
            column(&read_table(&path).unwrap(), "final"),
            &ColumnData::from(vec![false, true, true])
        );
        // The first plan again, all cached: no new rows, `current` moves back.
        let stats = append_runs(&path, &[], &plan(&['a']), &[]).unwrap();
        assert_eq!((stats.appended, stats.total_rows), (0, 3));
        assert_eq!(flags(&path), ColumnData::from(vec![true, true, false]));
        let recorded = recorded_instances(&path).unwrap();
        assert!(recorded[&key('a')].current && !recorded[&key('b')].current);
        // Nothing to change: the file is not rewritten.
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        append_runs(&path, &[], &plan(&['a']), &[]).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
    }

    /// QA report §13: `cmd`'s `run`, `deps` and `args` were written as parameter columns. The
    /// columns an earlier version wrote for them leave the old rows too, at the next append
    /// (and at one that only moves nothing but them), so old and new rows agree.
    #[test]
    fn retired_columns_of_an_old_table_are_dropped_from_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let old = rec(
            'o',
            "loss",
            0.7,
            None,
            json!({"lr": 0.1, "run": "python t.py"}),
        );
        append(&path, std::slice::from_ref(&old)).unwrap();
        let current: HashSet<String> = [key('o'), key('a')].into();
        let new = rec('a', "loss", 0.4, None, json!({"lr": 0.2}));
        append_runs(&path, &[new], &current, &["run", "deps"]).unwrap();
        let table = read_table(&path).unwrap();
        assert!(
            table.column("run").is_none(),
            "{:?}",
            table.column_names().collect::<Vec<_>>()
        );
        assert_eq!(column(&table, "lr"), &ColumnData::from(vec![0.1, 0.2]));
        assert_eq!(
            read_runs(&path).unwrap()[0].labels,
            BTreeMap::from([("lr".into(), json!(0.1))])
        );

        // Nothing new and `current` unchanged: a file that still has such a column is
        // rewritten without it all the same.
        append(&path, std::slice::from_ref(&old)).unwrap();
        assert!(read_table(&path).unwrap().column("run").is_some());
        let current: HashSet<String> = [key('o')].into();
        let stats = append_runs(&path, &[], &current, &["run"]).unwrap();
        assert_eq!(stats.total_rows, 2);
        assert!(read_table(&path).unwrap().column("run").is_none());
    }

    /// QA report §13: pandas read `step` (an Int64 column with nulls) as `float64`. The file's
    /// pandas metadata names every integer column `Int64`, pandas' nullable integer.
    #[test]
    fn integer_columns_are_pandas_nullable_integers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        append(
            &path,
            &[
                rec('a', "loss", 0.4, Some(1), json!({"lr": 0.1, "hidden": 16})),
                rec('a', "loss", 0.3, None, json!({"lr": 0.1, "hidden": 16})),
            ],
        )
        .unwrap();
        // In the Arrow schema the file embeds, where pyarrow reads it from.
        let (schema, _) = crate::parquet_io::read_schema(&path).unwrap();
        let pandas = schema.metadata().get("pandas").expect("pandas metadata");
        let pandas: Value = serde_json::from_str(pandas).unwrap();
        let int64: Vec<&str> = pandas["columns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["numpy_type"] == "Int64")
            .map(|c| c["field_name"].as_str().unwrap())
            .collect();
        assert_eq!(int64, ["step", "seed", "hidden"]);
        assert_eq!(pandas["index_columns"], json!([]));
    }

    /// A run table rewritten by another tool with `step` as `float64` (pandas' own reading of
    /// it) still merges, and its steps become integers again.
    #[test]
    fn a_float_step_column_is_read_back_as_integers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let old = Table::new()
            .with_column("pipeline", vec!["toy"; 2])
            .with_column("stage", vec!["train"; 2])
            .with_column("instance", vec![key('o'); 2])
            .with_column("label", vec!["lr=0.1"; 2])
            .with_column("op", vec!["cmd"; 2])
            .with_column("status", vec!["done"; 2])
            .with_column("current", vec![true; 2])
            .with_column("metric", vec!["loss"; 2])
            .with_column("value", vec![0.7, 0.6])
            .with_column("step", vec![Some(3.0), None])
            .with_column("final", vec![false, true])
            .with_column("seed", vec![Some(1.0), Some(1.0)])
            .with_column("device", vec!["cpu"; 2])
            .with_column("wall_time_s", vec![1.0; 2])
            .with_column("started_at", vec![1_700_000_000_000_000_i64; 2])
            .with_column("git_rev", vec![Option::<String>::None; 2])
            .with_column("ablate_version", vec!["0.1.0"; 2])
            .with_column("lr", vec![0.1; 2]);
        crate::write_table(&path, &old).unwrap();
        assert!(matches!(
            column(&read_table(&path).unwrap(), "step"),
            ColumnData::Float(_)
        ));
        let rows = read_runs(&path).unwrap();
        assert_eq!(
            (rows[0].step, rows[1].step, rows[0].seed),
            (Some(3), None, Some(1))
        );

        append(&path, &[rec('a', "loss", 0.4, Some(2), json!({"lr": 0.2}))]).unwrap();
        let table = read_table(&path).unwrap();
        assert_eq!(
            column(&table, "step"),
            &ColumnData::Int(vec![Some(3), None, Some(2)])
        );
        assert_eq!(
            column(&table, "seed"),
            &ColumnData::Int(vec![Some(1), Some(1), None])
        );
    }

    #[test]
    fn a_diverged_instance_has_status_diverged_on_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let mut d = rec('d', "loss", 0.9, Some(3), json!({"lr": 1.0}));
        d.status = "diverged".into();
        let records = [rec('a', "loss", 0.4, None, json!({"lr": 0.1})), d.clone()];
        append(&path, &records).unwrap();
        assert_eq!(
            column(&read_table(&path).unwrap(), "status"),
            &ColumnData::from(vec!["done", "diverged"])
        );
        assert_eq!(read_runs(&path).unwrap()[1], d);
    }

    /// A table written before `status`, `current` and `final` existed is still appended to:
    /// its rows read as done, not current, and a parameter it held under one of those names
    /// moves to `param_<name>` instead of being taken for the new column.
    #[test]
    fn a_table_from_before_statuses_gains_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let old = Table::new()
            .with_column("pipeline", vec!["toy"])
            .with_column("stage", vec!["train"])
            .with_column("instance", vec![key('o')])
            .with_column("label", vec!["status=warm"])
            .with_column("op", vec!["cmd"])
            .with_column("metric", vec!["loss"])
            .with_column("value", vec![0.7])
            .with_column("step", vec![Option::<i64>::None])
            .with_column("seed", vec![Option::<i64>::None])
            .with_column("device", vec!["cpu"])
            .with_column("wall_time_s", vec![1.0])
            .with_column("started_at", vec![1_700_000_000_000_000_i64])
            .with_column("git_rev", vec![Option::<String>::None])
            .with_column("ablate_version", vec!["0.1.0"])
            .with_column("status", vec!["warm"]);
        crate::write_table(&path, &old).unwrap();
        assert!(!recorded_instances(&path).unwrap()[&key('o')].current);

        append(
            &path,
            &[rec('a', "loss", 0.4, None, json!({"status": "cold"}))],
        )
        .unwrap();
        let table = read_table(&path).unwrap();
        assert_eq!(
            column(&table, "status"),
            &ColumnData::from(vec!["done", "done"])
        );
        assert_eq!(column(&table, "final"), &ColumnData::from(vec![true, true]));
        assert_eq!(
            column(&table, "current"),
            &ColumnData::from(vec![false, true])
        );
        assert_eq!(
            column(&table, "param_status"),
            &ColumnData::from(vec!["warm", "cold"])
        );
        assert_eq!(read_runs(&path).unwrap()[0].labels["status"], json!("warm"));
    }

    #[test]
    fn a_file_that_is_not_a_runs_table_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.parquet");
        let wide = Table::new()
            .with_column("instance", vec!["x"])
            .with_column("acc", vec![0.5]);
        crate::write_table(&path, &wide).unwrap();
        let before = std::fs::read(&path).unwrap();

        let err = append(&path, &[rec('a', "acc", 0.1, None, json!({}))]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("`pipeline`"), "{msg}");
        assert!(matches!(err, ResultsError::NotRunsTable { .. }));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is untouched"
        );

        let err = recorded_instances(&path).unwrap_err();
        assert!(matches!(err, ResultsError::NotRunsTable { path: p, .. } if p == path));
    }

    #[test]
    fn read_runs_returns_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let mut a = rec(
            'a',
            "acc",
            0.9,
            Some(3),
            json!({"op": "adam", "steps": 4, "tags": "x"}),
        );
        a.seed = Some(7);
        let mut b = rec('b', "acc", 0.8, None, json!({"steps": 8}));
        b.git_rev = None;
        append(&path, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(read_runs(&path).unwrap(), vec![a, b]);
    }

    #[test]
    fn appending_nothing_creates_no_file_and_counts_existing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        assert_eq!(append(&path, &[]).unwrap(), AppendStats::default());
        assert!(!path.exists());

        append(&path, &[rec('a', "acc", 0.1, None, json!({}))]).unwrap();
        let stats = append(&path, &[]).unwrap();
        assert_eq!((stats.appended, stats.total_rows), (0, 1));
    }

    /// A large append replaces exactly the overlapping rows (its speed is `just bench`'s concern).
    #[test]
    fn appending_10k_records_to_100k_rows_replaces_the_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        let make = |range: std::ops::Range<usize>| -> Vec<RunRecord> {
            range
                .map(|i| {
                    let mut r = rec('a', "loss", i as f64, Some((i % 100) as i64), json!({}));
                    r.instance = format!("{:064x}", i / 100);
                    r.labels = serde_json::from_value(
                        json!({"weights": if i % 2 == 0 {"shared"} else {"tied"}, "steps": i % 7, "lr": 0.1}),
                    )
                    .unwrap();
                    r
                })
                .collect()
        };
        append(&path, &make(0..100_000)).unwrap();
        let new = make(95_000..105_000);
        let stats = append(&path, &new).unwrap();
        let instances = recorded_instances(&path).unwrap();
        assert_eq!((stats.replaced, stats.total_rows), (5_000, 105_000));
        assert_eq!(instances.len(), 1_050);
    }
}
