use std::io;
use std::path::PathBuf;

use ablate_spec::backticked;
use arrow::error::ArrowError;
use parquet::errors::ParquetError;

/// Everything that can go wrong while writing, reading, merging or pivoting result tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultsError {
    #[error("failed to {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to read Parquet file `{}`", path.display())]
    ReadParquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },

    #[error("failed to decode Parquet file `{}`", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: ArrowError,
    },

    #[error("failed to write Parquet file `{}`", path.display())]
    WriteParquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },

    #[error(
        "column `{column}` of `{}` has unsupported type `{data_type}` (supported: booleans, \
         integers, floats, strings, timestamps and dictionaries of those)",
        path.display()
    )]
    UnsupportedType {
        path: PathBuf,
        column: String,
        data_type: String,
    },

    #[error("failed to convert column `{column}` of `{}`", path.display())]
    ConvertColumn {
        path: PathBuf,
        column: String,
        #[source]
        source: ArrowError,
    },

    #[error("`{}` is not a runs table: missing column(s) {}", path.display(), backticked(missing))]
    NotRunsTable { path: PathBuf, missing: Vec<String> },

    #[error("failed to merge new runs into `{}`", path.display())]
    Merge {
        path: PathBuf,
        #[source]
        source: ArrowError,
    },

    #[error(
        "cannot append instance `{instance}` to `{}`: labels `{label}` and `{column}` would both \
         be stored in column `{column}`",
        path.display()
    )]
    LabelCollision {
        path: PathBuf,
        instance: String,
        label: String,
        column: String,
    },

    #[error("column `{column}` has {len} rows but column `{first}` has {expected}")]
    RaggedTable {
        column: String,
        len: usize,
        first: String,
        expected: usize,
    },

    #[error("table has more than one column named `{name}`")]
    DuplicateColumn { name: String },

    #[error(
        "observation {index} has no label `{key}` (available: {})",
        backticked(available)
    )]
    MissingLabel {
        index: usize,
        key: String,
        available: Vec<String>,
    },

    #[error(
        "observation {index} has no metric `{metric}` (available: {})",
        backticked(available)
    )]
    MissingMetric {
        index: usize,
        metric: String,
        available: Vec<String>,
    },

    #[error("invalid pivot: {reason}")]
    InvalidPivot { reason: String },

    #[error("cannot compute the gain of `{metric}` in the cell `{cell}`: {reason}")]
    Baseline {
        metric: String,
        cell: String,
        reason: String,
    },
}
