//! The run table: appends, replacement, schema changes, legacy files and reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use arrow::datatypes::{DataType, TimeUnit};
use serde_json::{Value, json};

use super::read::cells_str;
use super::*;
use crate::error::ResultsError;
use crate::parquet_io::{read_schema, read_table};
use crate::table::{ColumnData, Table};

fn key(c: char) -> String {
    c.to_string().repeat(64)
}

fn rec(instance: char, metric: &str, value: f64, step: Option<i64>, labels: Value) -> RunRecord {
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
    assert!(matches!(&err, ResultsError::LabelCollision { column, .. } if column == "param_op"));
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
