//! `ablate-plan` turns a validated pipeline into a sealed DAG of stage *instances*: matrix
//! expansion, map/zip/gather over `needs`, cycle detection (petgraph), and every instance's
//! cache key computed in topological order. It explains, per instance, whether the cache holds
//! it or why it must run, and exports the plan as text, JSON, DOT or Mermaid.
//!
//! It must not run anything: a [`Plan`] is immutable once built, and only a built plan runs.
//! It imports `ablate-spec` and `ablate-cache`, nothing else of ablate.

mod build;
mod deps;
mod fuse;
mod instance;
mod render;
mod status;

pub use build::{build, render_label};
pub use fuse::{FuseGroup, PlannedGroup, planned_groups};
pub use instance::{EarlyStopOf, Instance, Plan, PlanIndex, SearchSummary};
pub use render::{Format, render};
pub use status::{Change, Outlook, Reason, Status, outlook, statuses};
