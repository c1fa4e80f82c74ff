//! The figures of `report.plot`: the pure half (`data`: input selection, point aggregation,
//! the tables of `eval.metric`, grid polylines and metric ellipses) and drawing (`draw`:
//! plotters, SVG + PNG with DejaVu Sans embedded), plus `caption`, which adds a strip of text
//! above a published PNG. The op in `ablate-ops` reads the inputs and writes the files.

mod caption;
pub mod data;
pub mod draw;

pub use caption::caption_figure;
