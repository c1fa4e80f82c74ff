//! ablate-report turns finished results into what a person reads: the aggregation behind
//! `report.table` (pivots, gains over a baseline), the summary statistics every aggregation
//! shares (`stats`: one mean/sd/quantile/bootstrap module), figures (`plot`: plotters, SVG +
//! PNG), claims (`claims`: a small expression language judged over final metrics) and the
//! pipeline's HTML report (`html`). It imports `ablate-results` (tables, `runs.parquet`) and
//! `ablate-spec` (the message helpers every crate shares), never ops, the scheduler or the
//! cache: the ops in `ablate-ops` read their inputs and call in here, and the CLI hands the HTML
//! report plain records. It must not print.

pub mod claims;
pub mod html;
mod names;
mod pivot;
pub mod plot;
mod relative;
pub mod stats;

pub use names::name_problem;
pub use pivot::{Aggregate, Best, Observation, Pivot, PivotSpec, gap_text, pivot};
pub use relative::{Baseline, GAIN_SUFFIX, Relative, check_baselines};
pub use stats::{mean, mean_std, median};
