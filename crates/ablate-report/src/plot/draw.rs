//! Drawing for `report.plot`: each figure is one function generic over the plotters backend,
//! rendered once as SVG and once as PNG. Text uses the embedded DejaVu Sans, so PNGs render on
//! machines without system fonts (CI has none).

mod panel;
mod pareto;

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::combinators::{IntoLogRange, LogCoord};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::data::{Pareto, Point, Polyline, Series, XAxis, staircase};

// The colour type of `PALETTE` and friends, for callers that compare drawn colours.
pub use panel::{Panel, PanelContent, PanelFigure, PanelRow};
pub use pareto::ParetoFigure;
pub use plotters::style::RGBColor;

pub const FONT: &str = "sans-serif";

/// A fixed qualitative palette (Tableau 10): series and class colours.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];
/// Points without a class.
pub const UNLABELLED: RGBColor = RGBColor(0x55, 0x55, 0x55);
/// Deformed grid lines.
pub const GRID_LINE: RGBColor = RGBColor(0x1f, 0x4e, 0x79);
/// Metric ellipses, and points where the metric is degenerate.
pub const ELLIPSE: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
pub const DEGENERATE: RGBColor = RGBColor(0x22, 0x22, 0x22);
/// Faint context under grid and metric panels.
const FAINT: RGBColor = RGBColor(0xaa, 0xaa, 0xaa);
const MESH: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
/// The Pareto frontier's step line and the rings around its points.
pub const FRONTIER: RGBColor = RGBColor(0x33, 0x33, 0x33);

// Figure layout, shared by the Pareto and panel figures.
const FIGURE_TITLE: u32 = 32;
/// Room for the figure's title when there is a single column.
pub const MIN_WIDTH: u32 = 400;
const ROW_TITLE: u32 = 22;

/// The colour of class `label`.
pub fn class_color(label: Option<i64>) -> RGBColor {
    label.map_or(UNLABELLED, |l| {
        PALETTE[l.rem_euclid(PALETTE.len() as i64) as usize]
    })
}

pub type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A figure that can draw itself on any backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// Registers the embedded font once per process.
pub fn register_font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

/// Writes `fig` as `<dir>/<stem>.svg` and `<dir>/<stem>.png`.
pub fn save(fig: &impl Figure, dir: &Path, stem: &str) -> Result<(), String> {
    register_font();
    let size = fig.size();
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        fig.draw(&root)
            .and_then(|()| root.present().map_err(err))
            .map_err(|e| format!("failed to draw `{stem}.svg`: {e}"))?;
    }
    let png = dir.join(format!("{stem}.png"));
    let root = BitMapBackend::new(&png, size).into_drawing_area();
    fig.draw(&root)
        .and_then(|()| root.present().map_err(err))
        .map_err(|e| format!("failed to draw `{stem}.png`: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Line plots

/// Metric against a label (or the step), one line per group, with ± one std shown as
/// `spread` says.
pub struct LineFigure {
    pub title: String,
    /// The `group` label(s) the lines are told apart by, heading the legend.
    pub legend_title: Option<String>,
    pub x_name: String,
    pub y_name: String,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
    pub log_x: bool,
    pub log_y: bool,
    pub spread: Spread,
    pub size: (u32, u32),
}

/// How a line figure shows ± one std around its means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// A dot and an error bar per point: a few settings (`kind: line`).
    Bars,
    /// A shaded band along the line: many steps of a run (`kind: curve`), where a bar per step
    /// would bury the line. Short series still get a dot per point, so a single step shows.
    Band,
}

/// The most points a [`Spread::Band`] series dots.
const MAX_BAND_DOTS: usize = 20;

/// One axis of a line plot: linear, logarithmic, or categories at 0, 1, 2, …
enum Axis {
    Lin(RangedCoordf64),
    Log(LogCoord<f64>),
    Cat(RangedCoordf64, Vec<String>),
    /// Ticks at these values only: a numeric x with few distinct values (steps 1, 2, 4, 8)
    /// reads best with a tick at each.
    Ticks(Box<Axis>, Vec<f64>),
}

impl Axis {
    fn new(range: Range<f64>, log: bool) -> Axis {
        if log {
            Axis::Log(range.log_scale().into())
        } else {
            Axis::Lin(range.into())
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        match self {
            Axis::Lin(r) | Axis::Cat(r, _) => r.map(value, limit),
            Axis::Log(r) => r.map(value, limit),
            Axis::Ticks(a, _) => a.map(value, limit),
        }
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match self {
            Axis::Lin(r) => r.key_points(hint),
            Axis::Log(r) => r.key_points(hint),
            Axis::Cat(_, names) => (0..names.len()).map(|i| i as f64).collect(),
            Axis::Ticks(_, ticks) => ticks.clone(),
        }
    }

    fn range(&self) -> Range<f64> {
        match self {
            Axis::Lin(r) | Axis::Cat(r, _) => r.range(),
            Axis::Log(r) => r.range(),
            Axis::Ticks(a, _) => a.range(),
        }
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(value: &f64) -> String {
        ablate_results::format_float(*value)
    }

    fn format_ext(&self, value: &f64) -> String {
        match self {
            Axis::Cat(_, names) => names
                .get(value.round().max(0.0) as usize)
                .cloned()
                .unwrap_or_default(),
            _ => Self::format(value),
        }
    }
}

const MAX_DATA_TICKS: usize = 10;

/// `lo..hi` padded by 5% (multiplicatively on a log axis); a single value gets a unit span.
fn padded(lo: f64, hi: f64, log: bool) -> Range<f64> {
    if log {
        let (lo, hi) = if lo == hi {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo, hi)
        };
        let f = (hi / lo).powf(0.05);
        lo / f..hi * f
    } else {
        let (lo, hi) = if lo == hi {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        let pad = 0.05 * (hi - lo);
        lo - pad..hi + pad
    }
}

/// The lower end of an error bar, kept inside a log axis.
fn bar_low(p: &Point, floor: f64) -> f64 {
    (p.mean - p.std.unwrap_or(0.0)).max(floor)
}

impl LineFigure {
    fn axes(&self) -> (Axis, Axis) {
        let points = || self.series.iter().flat_map(|s| &s.points);
        let x = match &self.x_axis {
            XAxis::Categorical(names) => {
                Axis::Cat((-0.5..names.len() as f64 - 0.5).into(), names.clone())
            }
            XAxis::Numeric => {
                let (lo, hi) = min_max(points().map(|p| p.x));
                let axis = Axis::new(padded(lo, hi, self.log_x), self.log_x);
                let mut xs: Vec<f64> = points().map(|p| p.x).collect();
                xs.sort_by(f64::total_cmp);
                xs.dedup();
                if xs.len() <= MAX_DATA_TICKS {
                    Axis::Ticks(Box::new(axis), xs)
                } else {
                    axis
                }
            }
        };
        let (mut lo, hi) = min_max(points().map(|p| p.mean + p.std.unwrap_or(0.0)));
        for p in points() {
            let low = p.mean - p.std.unwrap_or(0.0);
            // On a log axis a bar reaching zero or below is cut at the lowest mean.
            if !self.log_y || low > 0.0 {
                lo = lo.min(low);
            }
            lo = lo.min(p.mean);
        }
        (x, Axis::new(padded(lo, hi, self.log_y), self.log_y))
    }
}

impl LineFigure {
    /// Where the legend hides the fewest points (means and the ends of their spreads): the
    /// corner of the plot whose third (across and up) holds the fewest, the upper left on a tie
    /// (curves cut short by early stopping, say, crowd the left).
    fn emptiest_corner(&self, x: &Axis, y: &Axis) -> SeriesLabelPosition {
        // Where a value falls along its axis, from 0 (its start) to 1 (its end).
        let frac = |axis: &Axis, v: f64| f64::from(axis.map(&v, (0, 10_000))) / 10_000.0;
        let corners = [
            (SeriesLabelPosition::UpperLeft, false, true),
            (SeriesLabelPosition::UpperRight, true, true),
            (SeriesLabelPosition::LowerLeft, false, false),
            (SeriesLabelPosition::LowerRight, true, false),
        ];
        let mut counts = [0usize; 4];
        for p in self.series.iter().flat_map(|s| &s.points) {
            let fx = frac(x, p.x);
            let ys = [
                p.mean,
                p.mean + p.std.unwrap_or(0.0),
                p.mean - p.std.unwrap_or(0.0),
            ];
            for (n, (_, right, upper)) in corners.iter().enumerate() {
                let in_x = if *right {
                    fx > 2.0 / 3.0
                } else {
                    fx < 1.0 / 3.0
                };
                let in_y = ys.iter().any(|&v| {
                    let fy = frac(y, v);
                    if *upper {
                        fy > 0.5
                    } else {
                        (0.0..0.5).contains(&fy)
                    }
                });
                counts[n] += usize::from(in_x && in_y);
            }
        }
        let best = (0..4).min_by_key(|&n| counts[n]).unwrap_or(0);
        corners[best].0.clone()
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

impl Figure for LineFigure {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let (x, y) = self.axes();
        let corner = self.emptiest_corner(&x, &y);
        let floor = y.range().start;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .bold_line_style(MESH)
            .light_line_style(TRANSPARENT)
            .x_desc(&self.x_name)
            .y_desc(&self.y_name)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(err)?;
        if let Some(title) = self
            .legend_title
            .as_ref()
            .filter(|_| self.series.iter().any(|s| s.name.is_some()))
        {
            // The legend's first entry, without a mark: what the lines' names are values of.
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(err)?
                .label(format!("{title}:"))
                .legend(|(x, y)| EmptyElement::at((x, y)));
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if self.spread == Spread::Band && s.points.iter().any(|p| p.std.is_some()) {
                // Upper edge left to right, lower edge back.
                let upper = s
                    .points
                    .iter()
                    .map(|p| (p.x, p.mean + p.std.unwrap_or(0.0)));
                let lower = s.points.iter().rev().map(|p| (p.x, bar_low(p, floor)));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        upper.chain(lower).collect::<Vec<_>>(),
                        color.mix(0.2).filled(),
                    )))
                    .map_err(err)?;
            }
            let line = chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|p| (p.x, p.mean)),
                    color.stroke_width(2),
                ))
                .map_err(err)?;
            if let Some(name) = &s.name {
                line.label(name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
            if self.spread == Spread::Bars || s.points.len() <= MAX_BAND_DOTS {
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|p| Circle::new((p.x, p.mean), 3, color.filled())),
                    )
                    .map_err(err)?;
            }
            if self.spread == Spread::Bars {
                chart
                    .draw_series(s.points.iter().filter(|p| p.std.is_some()).map(|p| {
                        ErrorBar::new_vertical(
                            p.x,
                            bar_low(p, floor),
                            p.mean,
                            p.mean + p.std.unwrap_or(0.0),
                            color.stroke_width(1),
                            8,
                        )
                    }))
                    .map_err(err)?;
            }
        }
        if self.series.iter().any(|s| s.name.is_some()) {
            chart
                .configure_series_labels()
                .position(corner)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 12))
                .draw()
                .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categorical_axis_labels_its_categories() {
        let a = Axis::Cat((-0.5..1.5).into(), vec!["tanh".into(), "relu".into()]);
        assert_eq!(a.format_ext(&1.0), "relu");
        assert_eq!(a.key_points(10), [0.0, 1.0]);
    }

    #[test]
    fn few_numeric_x_values_get_a_tick_each() {
        let p = |x: f64| Point {
            x,
            mean: 1.0,
            std: None,
        };
        let mut fig = LineFigure {
            title: String::new(),
            legend_title: None,
            x_name: String::new(),
            y_name: String::new(),
            x_axis: XAxis::Numeric,
            series: vec![Series {
                name: None,
                points: vec![p(4.0), p(1.0), p(2.0)],
            }],
            log_x: true,
            log_y: false,
            spread: Spread::Bars,
            size: (10, 10),
        };
        assert_eq!(fig.axes().0.key_points(5), [1.0, 2.0, 4.0]);
        fig.series[0].points = (0..=MAX_DATA_TICKS).map(|x| p(x as f64 + 1.0)).collect();
        assert!(fig.axes().0.key_points(5).len() <= 5);
    }
}
