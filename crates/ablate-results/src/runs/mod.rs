//! The long-format run table, `results/<pipeline>/runs.parquet`: one row per instance per
//! metric (per step for stepped metrics), appended to by every run.

mod append;
mod read;
mod schema;

pub use append::{AppendStats, append_runs};
pub use read::{Recorded, for_each_recorded, read_runs, recorded_instances};
pub use schema::{COLLISION_PREFIX, RUN_COLUMNS, RunRecord};

#[cfg(test)]
mod tests;
