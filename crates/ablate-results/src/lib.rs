//! ablate-results owns the result files of a pipeline: the Arrow schemas, Parquet writers and
//! readers of the long-format run table (`results/<pipeline>/runs.parquet`) and of report
//! tables, and rendering any table as Markdown or aligned terminal text (the aggregation
//! behind `report.table` is `ablate-report`'s). Every write is temp-then-rename, so a crash never leaves a torn
//! file. It must not print (rendering returns strings; the CLI decides where they go) and knows
//! nothing of the scheduler, the cache or how instances run: callers hand it finished records.
//! It imports `ablate-spec` only, for the message helpers every crate shares.

mod error;
mod parquet_io;
mod render;
mod runs;
mod table;
pub mod value;

pub use error::ResultsError;
pub use parquet_io::{
    copy_with_metadata, metadata_value, read_table, remove_stale_temps, temp_path,
    timestamp_columns, write_table,
};
pub use render::{
    Align, escape_markdown, format_float, format_metric, format_timestamp_us, markdown_table,
    render_markdown, render_text,
};
pub use runs::{
    AppendStats, COLLISION_PREFIX, RUN_COLUMNS, Recorded, RunRecord, append_runs,
    for_each_recorded, read_runs, recorded_instances,
};
pub use table::{Column, ColumnData, Table};
