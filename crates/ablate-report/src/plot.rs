//! The figures of `report.plot`: the pure half (`data`: input selection, point aggregation,
//! the tables of `eval.metric`, grid polylines and metric ellipses) and drawing (`draw`:
//! plotters, SVG + PNG with DejaVu Sans embedded), the figures themselves built from plain inputs
//! and settings (`figures`: what each kind draws, its title, axes and checks), plus `caption`,
//! which adds a strip of text above a published PNG. The op in `ablate-ops` reads the inputs,
//! calls `figures` and writes the files.

mod caption;
#[cfg(any(test, feature = "test-support"))]
pub mod check;
pub mod data;
pub mod draw;
pub mod figures;

pub use caption::caption_figure;
