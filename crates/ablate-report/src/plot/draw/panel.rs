//! Drawing panel grids (the `flow`, `grid` and `metric` plots): rows of panels under a figure
//! title, each showing data points coloured by class, a deformed grid or metric ellipses, on
//! equal axes in the layer's first two coordinates.

use super::*;

/// What one panel shows, in the layer's first two coordinates.
#[derive(Debug, Clone, PartialEq)]
pub enum PanelContent {
    /// Data points coloured by class.
    Flow {
        points: Vec<([f64; 2], Option<i64>)>,
    },
    /// The deformed grid over faint data points.
    Grid {
        lines: Vec<Polyline>,
        data: Vec<[f64; 2]>,
    },
    /// Metric ellipses (already scaled) over the faint grid; degenerate metrics as points.
    Metric {
        ellipses: Vec<Polyline>,
        degenerate: Vec<[f64; 2]>,
        grid: Vec<Polyline>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub content: PanelContent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PanelRow {
    pub title: String,
    pub panels: Vec<Panel>,
}

/// One row of panels per input, one column per layer.
pub struct PanelFigure {
    pub title: String,
    pub rows: Vec<PanelRow>,
    pub panel_size: (u32, u32),
}

impl PanelFigure {
    /// One panel per input (a single layer): the inputs go side by side rather than one per
    /// row, so each panel keeps a useful width.
    fn side_by_side(&self) -> bool {
        self.rows.len() > 1 && self.rows.iter().all(|r| r.panels.len() == 1)
    }

    fn cols(&self) -> usize {
        self.rows
            .iter()
            .map(|r| r.panels.len())
            .max()
            .unwrap_or(1)
            .max(1)
    }
}

impl Figure for PanelFigure {
    fn size(&self) -> (u32, u32) {
        let (w, h) = self.panel_size;
        let rows = self.rows.len().max(1) as u32;
        // Wide enough for the title (about 9 px per character at its size).
        let title = 9 * self.title.chars().count() as u32 + 24;
        let (across, down) = if self.side_by_side() {
            (rows, 1)
        } else {
            (self.cols() as u32, rows)
        };
        (
            (w * across).max(MIN_WIDTH).max(title),
            FIGURE_TITLE + down * (ROW_TITLE + h),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let body = root.titled(&self.title, (FONT, 18)).map_err(err)?;
        let cols = self.cols();
        let layout = if self.side_by_side() {
            (1, self.rows.len())
        } else {
            (self.rows.len().max(1), 1)
        };
        for (row, area) in self.rows.iter().zip(body.split_evenly(layout)) {
            let area = area.titled(&row.title, (FONT, 13)).map_err(err)?;
            for (panel, cell) in row.panels.iter().zip(area.split_evenly((1, cols))) {
                draw_panel(&cell, panel)?;
            }
        }
        Ok(())
    }
}

const PANEL_MARGIN: u32 = 6;

const PANEL_X_LABELS: u32 = 22;

const PANEL_Y_LABELS: u32 = 34;

const PANEL_CAPTION: u32 = 20;

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult {
    let coords: Vec<[f64; 2]> = match &panel.content {
        PanelContent::Flow { points } => points.iter().map(|(x, _)| *x).collect(),
        PanelContent::Grid { lines, data } => lines
            .iter()
            .flatten()
            .map(|&(a, b)| [a, b])
            .chain(data.iter().copied())
            .collect(),
        PanelContent::Metric {
            ellipses,
            degenerate,
            grid,
        } => ellipses
            .iter()
            .chain(grid)
            .flatten()
            .map(|&(a, b)| [a, b])
            .chain(degenerate.iter().copied())
            .collect(),
    };
    let (w, h) = area.dim_in_pixel();
    let plot_px = (
        w.saturating_sub(2 * PANEL_MARGIN + PANEL_Y_LABELS).max(1),
        h.saturating_sub(2 * PANEL_MARGIN + PANEL_X_LABELS + PANEL_CAPTION)
            .max(1),
    );
    let (xr, yr) = equal_aspect(&coords, plot_px);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 13))
        .margin(PANEL_MARGIN)
        .x_label_area_size(PANEL_X_LABELS)
        .y_label_area_size(PANEL_Y_LABELS)
        .build_cartesian_2d(xr, yr)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(4)
        .y_labels(4)
        .label_style((FONT, 10))
        .x_label_formatter(&|v| ablate_results::format_float(*v))
        .y_label_formatter(&|v| ablate_results::format_float(*v))
        .draw()
        .map_err(err)?;
    match &panel.content {
        PanelContent::Flow { points } => {
            chart
                .draw_series(
                    points.iter().map(|(x, label)| {
                        Circle::new((x[0], x[1]), 2, class_color(*label).filled())
                    }),
                )
                .map_err(err)?;
        }
        PanelContent::Grid { lines, data } => {
            chart
                .draw_series(
                    data.iter()
                        .map(|x| Circle::new((x[0], x[1]), 1, FAINT.mix(0.5).filled())),
                )
                .map_err(err)?;
            chart
                .draw_series(
                    lines
                        .iter()
                        .map(|l| PathElement::new(l.clone(), GRID_LINE.stroke_width(1))),
                )
                .map_err(err)?;
        }
        PanelContent::Metric {
            ellipses,
            degenerate,
            grid,
        } => {
            chart
                .draw_series(
                    grid.iter()
                        .map(|l| PathElement::new(l.clone(), FAINT.stroke_width(1))),
                )
                .map_err(err)?;
            chart
                .draw_series(
                    ellipses
                        .iter()
                        .map(|l| PathElement::new(l.clone(), ELLIPSE.stroke_width(1))),
                )
                .map_err(err)?;
            chart
                .draw_series(
                    degenerate
                        .iter()
                        .map(|x| Circle::new((x[0], x[1]), 1, DEGENERATE.filled())),
                )
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Ranges around `coords` (padded by 5%) with equal units per pixel on both axes, so circles
/// stay circles and ellipses keep their shape.
fn equal_aspect(coords: &[[f64; 2]], (w, h): (u32, u32)) -> (Range<f64>, Range<f64>) {
    let (x0, x1) = min_max(coords.iter().map(|c| c[0]));
    let (y0, y1) = min_max(coords.iter().map(|c| c[1]));
    if !(x0.is_finite() && x1.is_finite() && y0.is_finite() && y1.is_finite()) {
        return (-1.0..1.0, -1.0..1.0);
    }
    let span = (x1 - x0).max(y1 - y0).max(1e-9) * 1.1;
    let per_px = (span / w as f64).max(span / h as f64);
    let (cx, cy) = (0.5 * (x0 + x1), 0.5 * (y0 + y1));
    let (hw, hh) = (0.5 * per_px * w as f64, 0.5 * per_px * h as f64);
    (cx - hw..cx + hw, cy - hh..cy + hh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_aspect_gives_equal_units_per_pixel_and_contains_the_points() {
        let (x, y) = equal_aspect(&[[0.0, 0.0], [4.0, 1.0]], (200, 100));
        let (ux, uy) = ((x.end - x.start) / 200.0, (y.end - y.start) / 100.0);
        assert!((ux - uy).abs() < 1e-12);
        assert!(x.start < 0.0 && x.end > 4.0 && y.start < 0.0 && y.end > 1.0);
        assert_eq!(equal_aspect(&[], (10, 10)), (-1.0..1.0, -1.0..1.0));
    }
}
