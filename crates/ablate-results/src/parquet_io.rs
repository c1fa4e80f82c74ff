//! Parquet on disk: atomic writes, whole-file and projected reads, and normalising whatever
//! column types another writer chose (pandas, polars, DuckDB) down to the four table kinds.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options, concat_batches};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::ResultsError;
use crate::table::{Column, ColumnData, Table};

/// Rows decoded per batch; large batches keep whole-file reads of run tables cheap.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// Writes `table` to `path` as Parquet, atomically (temp file in the same directory, fsync,
/// rename): readers see the old file or the new one, never a torn one.
pub fn write_table(path: &Path, table: &Table) -> Result<(), ResultsError> {
    table.validate()?;
    let batch = table
        .to_record_batch()
        .map_err(|source| ResultsError::WriteParquet {
            path: path.to_owned(),
            source: source.into(),
        })?;
    write_batch(path, &batch)
}

/// Reads any flat Parquet file whose columns are booleans, integers, floats, strings,
/// timestamps or dictionaries of those. Integers widen to `Int`, floats to `Float`, string
/// types to `Str`, and timestamps become `Int` microseconds since the Unix epoch.
pub fn read_table(path: &Path) -> Result<Table, ResultsError> {
    let (schema, batch) = read_batch(path, None)?;
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| {
            let array = normalize(path, field.name(), array)?;
            Ok(Column::new(
                field.name(),
                ColumnData::from_normalized(&array),
            ))
        })
        .collect::<Result<Vec<_>, ResultsError>>()?;
    Ok(Table { columns })
}

/// The names of a Parquet file's timestamp columns, which [`read_table`] reads as microseconds
/// since the Unix epoch: a caller that prints the table prints them as dates.
pub fn timestamp_columns(path: &Path) -> Result<Vec<String>, ResultsError> {
    let (schema, _) = read_schema(path)?;
    Ok(schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Timestamp(..)))
        .map(|f| f.name().clone())
        .collect())
}

/// Writes one batch as a Snappy-compressed Parquet file, atomically.
pub(crate) fn write_batch(path: &Path, batch: &RecordBatch) -> Result<(), ResultsError> {
    write_atomic(path, |file| {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let to_err = |source| ResultsError::WriteParquet {
            path: path.to_owned(),
            source,
        };
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(to_err)?;
        writer.write(batch).map_err(to_err)?;
        writer.into_inner().map_err(to_err)?;
        Ok(())
    })
}

/// Copies the Parquet file `src` to `dest` (atomically) with `metadata` added to its key-value
/// metadata; the columns and rows are the same. A published report says there which
/// `--set`/`--matrix` variant it came from (#21), without a column that would change its shape.
pub fn copy_with_metadata(
    src: &Path,
    dest: &Path,
    metadata: &[(String, String)],
) -> Result<(), ResultsError> {
    let (_, batch) = read_batch(src, None)?;
    write_atomic(dest, |file| {
        let kv = metadata
            .iter()
            .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(kv))
            .build();
        let to_err = |source| ResultsError::WriteParquet {
            path: dest.to_owned(),
            source,
        };
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(to_err)?;
        writer.write(&batch).map_err(to_err)?;
        writer.into_inner().map_err(to_err)?;
        Ok(())
    })
}

/// The value of `key` in a Parquet file's key-value metadata, if it has one.
pub fn metadata_value(path: &Path, key: &str) -> Result<Option<String>, ResultsError> {
    let builder = open_reader(path)?;
    Ok(builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == key))
        .and_then(|e| e.value.clone()))
}

/// Reads a whole Parquet file, or only the named top-level columns that it has, into one
/// batch. Returns the file's full Arrow schema too, so callers can check columns they skipped.
pub(crate) fn read_batch(
    path: &Path,
    projection: Option<&[&str]>,
) -> Result<(SchemaRef, RecordBatch), ResultsError> {
    let to_err = |source| ResultsError::ReadParquet {
        path: path.to_owned(),
        source,
    };
    let mut builder = open_reader(path)?.with_batch_size(READ_BATCH_ROWS);
    let full_schema = builder.schema().clone();
    if let Some(names) = projection {
        let roots = names.iter().filter_map(|n| full_schema.index_of(n).ok());
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().map_err(to_err)?;
    let read_schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, ArrowError>>()
        .and_then(|batches| concat_batches(&read_schema, &batches));
    let batch = batches.map_err(|source| ResultsError::Decode {
        path: path.to_owned(),
        source,
    })?;
    Ok((full_schema, batch))
}

/// A reader of `path`, its footer read.
fn open_reader(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, ResultsError> {
    let file = File::open(path).map_err(|source| ResultsError::Io {
        action: "open",
        path: path.to_owned(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| ResultsError::ReadParquet {
        path: path.to_owned(),
        source,
    })
}

/// A Parquet file's Arrow schema and row count, from its footer alone.
pub(crate) fn read_schema(path: &Path) -> Result<(SchemaRef, usize), ResultsError> {
    let builder = open_reader(path)?;
    let rows = builder.metadata().file_metadata().num_rows();
    Ok((builder.schema().clone(), usize::try_from(rows).unwrap_or(0)))
}

/// Converts a column of any supported type to Boolean, Int64, Float64 or Utf8.
pub(crate) fn normalize(
    path: &Path,
    column: &str,
    array: &ArrayRef,
) -> Result<ArrayRef, ResultsError> {
    let Some(target) = normalized_type(array.data_type()) else {
        return Err(ResultsError::UnsupportedType {
            path: path.to_owned(),
            column: column.to_owned(),
            data_type: array.data_type().to_string(),
        });
    };
    let converted = match array.data_type() {
        dt if *dt == target => return Ok(array.clone()),
        // Decode the dictionary, then convert its value type like any plain column.
        DataType::Dictionary(_, values) => {
            cast_with_options(array, values, &STRICT).map(|plain| normalize(path, column, &plain))
        }
        DataType::Null => Ok(Ok(new_null_array(&target, array.len()))),
        DataType::Timestamp(_, tz) => {
            let micros = DataType::Timestamp(TimeUnit::Microsecond, tz.clone());
            cast_with_options(array, &micros, &STRICT).map(|micros| {
                let ints = micros
                    .as_primitive::<TimestampMicrosecondType>()
                    .reinterpret_cast::<Int64Type>();
                Ok(Arc::new(ints) as ArrayRef)
            })
        }
        _ => cast_with_options(array, &target, &STRICT).map(Ok),
    };
    converted.map_err(|source| ResultsError::ConvertColumn {
        path: path.to_owned(),
        column: column.to_owned(),
        source,
    })?
}

/// Casts that fail loudly (a `UInt64` above `i64::MAX`) instead of silently producing nulls.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// The table kind a stored type becomes, or `None` if it has no faithful table kind.
fn normalized_type(data_type: &DataType) -> Option<DataType> {
    use DataType::*;
    match data_type {
        Boolean => Some(Boolean),
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Timestamp(..) => {
            Some(Int64)
        }
        Float16 | Float32 | Float64 => Some(Float64),
        Utf8 | LargeUtf8 | Utf8View | Null => Some(Utf8),
        Dictionary(_, values) => normalized_type(values),
        _ => None,
    }
}

/// Runs `write` against a fresh temp file next to `path`, fsyncs it, and renames it over
/// `path`. On any failure the temp file is removed and `path` is left as it was.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), ResultsError>,
) -> Result<(), ResultsError> {
    let io_err = |action, path: &Path| {
        let path = path.to_owned();
        move |source| ResultsError::Io {
            action,
            path,
            source,
        }
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err("write", path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tmp_path, mut file) =
        create_temp(&dir, file_name).map_err(io_err("create a temporary file in", &dir))?;

    let result = write(&mut file)
        .and_then(|()| file.flush().map_err(io_err("write", &tmp_path)))
        .and_then(|()| file.sync_all().map_err(io_err("sync", &tmp_path)))
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp_path, path).map_err(io_err("replace", path))
        });
    if let Err(err) = result {
        // Best effort: the error being returned matters more than a failed cleanup.
        let _ = fs::remove_file(&tmp_path);
        return Err(err);
    }
    sync_dir(&dir).map_err(io_err("sync directory", &dir))
}

/// A fresh temporary path for writing `file_name` in `dir`: `.<name>.<pid>.<n>.tmp`, hidden so
/// globs over result files skip it, and named so [`remove_stale_temps`] knows it.
pub fn temp_path(dir: &Path, file_name: impl AsRef<std::ffi::OsStr>) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(file_name);
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    dir.join(name)
}

/// Removes the temporary files ([`temp_path`]) that writers killed mid-write left in `dir`
/// (#16). The caller makes sure no writer of `dir` is at work (the CLI holds the directory's
/// lock). Best effort.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(middle) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
            continue;
        };
        let numbered = middle
            .rsplitn(3, '.')
            .take(2)
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        if numbered && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Creates a [`temp_path`] for `file_name` in `dir`.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    loop {
        let tmp = temp_path(dir, file_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // A leftover from a crashed process with a recycled pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes the rename itself durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Date32Array, DictionaryArray, Float32Array, Int32Array, LargeStringArray, StringViewArray,
        TimestampNanosecondArray, UInt8Array, UInt64Array,
    };
    use arrow::datatypes::{Field, Int32Type, Schema};

    use super::*;

    fn every_kind() -> Table {
        Table::new()
            .with_column("b", vec![Some(true), None, Some(false)])
            .with_column("i", vec![Some(-3_i64), Some(i64::MAX), None])
            .with_column("f", vec![None, Some(0.25_f64), Some(-1e300)])
            .with_column("s", vec![Some("x"), Some(""), None])
    }

    /// Writes `columns` the way another tool would: a plain `ArrowWriter`, no atomic rename.
    fn write_plain(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn stale_temps_are_the_ones_temp_path_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["runs.parquet", "acc.md"] {
            fs::write(temp_path(dir.path(), name), "torn").unwrap();
        }
        fs::write(dir.path().join(".notes.tmp"), "mine").unwrap();
        fs::write(dir.path().join("runs.parquet"), "kept").unwrap();
        assert_eq!(leftovers(dir.path()).len(), 3);
        remove_stale_temps(dir.path());
        assert_eq!(leftovers(dir.path()), [".notes.tmp"]);
        assert!(dir.path().join("runs.parquet").exists());
    }

    #[test]
    fn a_copy_with_metadata_keeps_the_table_and_carries_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("t.parquet");
        let dest = dir.path().join("u.parquet");
        write_table(&src, &every_kind()).unwrap();
        assert_eq!(metadata_value(&src, "ablate.variant").unwrap(), None);
        let kv = [("ablate.variant".to_owned(), "set: epochs=3".to_owned())];
        copy_with_metadata(&src, &dest, &kv).unwrap();
        assert_eq!(read_table(&dest).unwrap(), every_kind());
        assert_eq!(
            metadata_value(&dest, "ablate.variant").unwrap().as_deref(),
            Some("set: epochs=3")
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn every_column_kind_round_trips_with_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_table(&path, &every_kind()).unwrap();
        assert_eq!(read_table(&path).unwrap(), every_kind());

        let empty = Table::new()
            .with_column("i", Vec::<i64>::new())
            .with_column("s", Vec::<String>::new());
        write_table(&path, &empty).unwrap();
        assert_eq!(read_table(&path).unwrap(), empty);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn foreign_column_types_are_converted_to_the_four_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foreign.parquet");
        let dict: DictionaryArray<Int32Type> =
            vec![Some("a"), None, Some("a")].into_iter().collect();
        write_plain(
            &path,
            vec![
                (
                    "i32",
                    Arc::new(Int32Array::from(vec![Some(1), None, Some(-7)])),
                ),
                ("u8", Arc::new(UInt8Array::from(vec![255, 0, 1]))),
                (
                    "f32",
                    Arc::new(Float32Array::from(vec![Some(0.5), Some(1.25), None])),
                ),
                ("dict", Arc::new(dict)),
                (
                    "large",
                    Arc::new(LargeStringArray::from(vec!["p", "q", "r"])),
                ),
                (
                    "view",
                    Arc::new(StringViewArray::from(vec![Some("v"), None, Some("w")])),
                ),
                (
                    "ts",
                    Arc::new(
                        TimestampNanosecondArray::from(vec![1_500, 2_000_000, 0])
                            .with_timezone("Europe/Paris"),
                    ),
                ),
            ],
        );
        let table = read_table(&path).unwrap();
        let expected = Table::new()
            .with_column("i32", vec![Some(1_i64), None, Some(-7)])
            .with_column("u8", vec![255_i64, 0, 1])
            .with_column("f32", vec![Some(0.5_f64), Some(1.25), None])
            .with_column("dict", vec![Some("a"), None, Some("a")])
            .with_column("large", vec!["p", "q", "r"])
            .with_column("view", vec![Some("v"), None, Some("w")])
            // Microseconds since the epoch, truncated from nanoseconds.
            .with_column("ts", vec![1_i64, 2_000, 0]);
        assert_eq!(table, expected);
    }

    #[test]
    fn unsupported_types_name_the_column_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dates.parquet");
        write_plain(
            &path,
            vec![("day", Arc::new(Date32Array::from(vec![19_000])))],
        );
        let err = read_table(&path).unwrap_err();
        assert!(matches!(&err, ResultsError::UnsupportedType { column, .. } if column == "day"));
        let msg = err.to_string();
        assert!(msg.contains("`day`") && msg.contains("Date32"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn uint64_beyond_i64_is_an_error_not_a_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        write_plain(
            &path,
            vec![("n", Arc::new(UInt64Array::from(vec![u64::MAX])))],
        );
        let err = read_table(&path).unwrap_err();
        assert!(matches!(err, ResultsError::ConvertColumn { column, .. } if column == "n"));
    }

    #[test]
    fn missing_and_corrupt_files_name_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.parquet");
        let err = read_table(&missing).unwrap_err();
        assert!(matches!(&err, ResultsError::Io { path, .. } if *path == missing));

        let garbage = dir.path().join("garbage.parquet");
        fs::write(&garbage, b"not parquet at all").unwrap();
        let err = read_table(&garbage).unwrap_err();
        assert!(matches!(&err, ResultsError::ReadParquet { path, .. } if *path == garbage));
    }

    #[test]
    fn failed_write_leaves_old_file_intact_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_table(&path, &every_kind()).unwrap();
        let before = fs::read(&path).unwrap();

        // Fails halfway through writing the replacement.
        let err = write_atomic(&path, |file| {
            file.write_all(b"PAR1 half a file").unwrap();
            Err(ResultsError::InvalidPivot {
                reason: "injected".into(),
            })
        })
        .unwrap_err();
        assert!(matches!(err, ResultsError::InvalidPivot { .. }));
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(leftovers(dir.path()).is_empty());

        // A ragged table is refused before anything is written.
        let ragged = Table::new()
            .with_column("a", vec![1_i64])
            .with_column("b", Vec::<i64>::new());
        assert!(write_table(&path, &ragged).is_err());
        assert_eq!(read_table(&path).unwrap(), every_kind());
    }

    #[test]
    fn writing_over_a_directory_fails_at_rename_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("occupied");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep.txt"), b"keep").unwrap();

        let err = write_table(&target, &every_kind()).unwrap_err();
        assert!(
            matches!(&err, ResultsError::Io { action: "replace", path, .. } if *path == target),
            "{err:?}"
        );
        assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"keep");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn writing_into_a_missing_directory_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/t.parquet");
        let err = write_table(&path, &every_kind()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no/such/dir"), "{msg}");
    }
}
