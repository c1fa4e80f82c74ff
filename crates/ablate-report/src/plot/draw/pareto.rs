//! Drawing a Pareto plot: one panel per facet on shared axes, a dot per group with ± one sd
//! bars on both axes, a ring around each point on the frontier, and the frontier's step line.

use super::*;

/// One panel per facet, side by side on shared axes: a dot per group (its colour, its name
/// beside it) with ± one sd bars on both axes, a ring around each point on the frontier, and
/// the frontier's step line.
pub struct ParetoFigure {
    pub title: String,
    pub x_name: String,
    pub y_name: String,
    pub pareto: Pareto,
    pub panel_size: (u32, u32),
}

impl ParetoFigure {
    /// Ranges covering every point and error bar of every facet (padded), so panels compare.
    fn ranges(&self) -> (Range<f64>, Range<f64>) {
        let points = || self.pareto.facets.iter().flat_map(|f| &f.points);
        let (x0, x1) = min_max(points().flat_map(|p| {
            let sd = p.x_sd.unwrap_or(0.0);
            [p.x - sd, p.x + sd]
        }));
        let (y0, y1) = min_max(points().flat_map(|p| {
            let sd = p.y_sd.unwrap_or(0.0);
            [p.y - sd, p.y + sd]
        }));
        (padded(x0, x1, false), padded(y0, y1, false))
    }
}

impl Figure for ParetoFigure {
    fn size(&self) -> (u32, u32) {
        let (w, h) = self.panel_size;
        let n = self.pareto.facets.len().max(1) as u32;
        let title = 9 * self.title.chars().count() as u32 + 24;
        (
            (w * n).max(MIN_WIDTH).max(title),
            FIGURE_TITLE + ROW_TITLE + h,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let body = root.titled(&self.title, (FONT, 18)).map_err(err)?;
        let (xr, yr) = self.ranges();
        let facets = &self.pareto.facets;
        for (facet, area) in facets
            .iter()
            .zip(body.split_evenly((1, facets.len().max(1))))
        {
            let area = area
                .titled(facet.name.as_deref().unwrap_or(""), (FONT, 13))
                .map_err(err)?;
            let mut chart = ChartBuilder::on(&area)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(xr.clone(), yr.clone())
                .map_err(err)?;
            chart
                .configure_mesh()
                .bold_line_style(MESH)
                .light_line_style(TRANSPARENT)
                .x_desc(&self.x_name)
                .y_desc(&self.y_name)
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .x_label_formatter(&|v| ablate_results::format_float(*v))
                .y_label_formatter(&|v| ablate_results::format_float(*v))
                .draw()
                .map_err(err)?;
            let on: Vec<(f64, f64)> = facet
                .frontier
                .iter()
                .map(|&i| (facet.points[i].x, facet.points[i].y))
                .collect();
            if on.len() >= 2 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        staircase(&on),
                        FRONTIER.stroke_width(2),
                    )))
                    .map_err(err)?;
            }
            let (xs, ys) = chart.plotting_area().get_pixel_range();
            let mut labels = Labels {
                area: (xs.start, ys.start, xs.end, ys.end),
                boxes: Vec::new(),
            };
            for p in &facet.points {
                let color = PALETTE[p.group % PALETTE.len()];
                if let Some(sd) = p.y_sd {
                    chart
                        .draw_series(std::iter::once(ErrorBar::new_vertical(
                            p.x,
                            p.y - sd,
                            p.y,
                            p.y + sd,
                            color.stroke_width(1),
                            8,
                        )))
                        .map_err(err)?;
                }
                if let Some(sd) = p.x_sd {
                    chart
                        .draw_series(std::iter::once(ErrorBar::new_horizontal(
                            p.y,
                            p.x - sd,
                            p.x,
                            p.x + sd,
                            color.stroke_width(1),
                            8,
                        )))
                        .map_err(err)?;
                }
                let name = self.pareto.groups[p.group].clone();
                let at = labels.place(chart.backend_coord(&(p.x, p.y)), &name);
                // A label moved away from its point gets a thin line to it.
                if let Some(line) = leader(at, &name) {
                    chart
                        .draw_series(std::iter::once(
                            EmptyElement::at((p.x, p.y))
                                + PathElement::new(line, color.mix(0.6).stroke_width(1)),
                        ))
                        .map_err(err)?;
                }
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((p.x, p.y))
                            + Circle::new((0, 0), 4, color.filled())
                            + Text::new(name, at, (FONT, 12).into_font().color(&color)),
                    ))
                    .map_err(err)?;
            }
            chart
                .draw_series(facet.frontier.iter().map(|&i| {
                    Circle::new(
                        (facet.points[i].x, facet.points[i].y),
                        7,
                        FRONTIER.stroke_width(1),
                    )
                }))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// A point's label starts this many pixels right of it.
const LABEL_DX: i32 = 7;
/// A label's line height, and the mean width of one of its characters (DejaVu Sans at 12 px,
/// measured on these labels), in pixels: enough to tell whether two labels overlap.
const LABEL_H: i32 = 14;
const LABEL_CHAR_W: i32 = 6;

/// A line from a point to its label at offset `at`, when the label is not in one of the two
/// places right of the point where it reads as the point's (a leader to its nearer end).
fn leader(at: (i32, i32), text: &str) -> Option<Vec<(i32, i32)>> {
    if at.0 > 0 && (at.1 == -16 || at.1 == 4) {
        return None;
    }
    let w = LABEL_CHAR_W * text.chars().count() as i32;
    let x = if at.0 > 0 { at.0 } else { at.0 + w };
    Some(vec![(0, 0), (x, at.1 + LABEL_H / 2)])
}

/// The labels of one facet placed so far, so that points close together (several objectives at
/// one infilling EM of 0) do not print their names over each other or off the plot.
struct Labels {
    /// The plotting area, in pixels: `(x0, y0, x1, y1)`.
    area: (i32, i32, i32, i32),
    boxes: Vec<(i32, i32, i32, i32)>,
}

impl Labels {
    /// Where the label `text` of the point at pixel `at` goes, as an offset from the point: just
    /// above and right of it if that is free, else below, else left of the point (above, then
    /// below), else the nearest free line further above or below; a place that keeps clear of
    /// the axes before one that does not.
    fn place(&mut self, at: (i32, i32), text: &str) -> (i32, i32) {
        let w = LABEL_CHAR_W * text.chars().count() as i32;
        let near = [
            (LABEL_DX, -16),
            (LABEL_DX, 4),
            (-LABEL_DX - w, -16),
            (-LABEL_DX - w, 4),
        ];
        let far = (1..8).flat_map(|k| [(LABEL_DX, -16 - LABEL_H * k), (LABEL_DX, 4 + LABEL_H * k)]);
        let boxed = |(dx, dy): (i32, i32)| {
            let (x0, y0) = (at.0 + dx, at.1 + dy);
            ((dx, dy), (x0, y0, x0 + w, y0 + LABEL_H))
        };
        let area = self.area;
        // The right margin is free (the legend-less figure leaves room there), so a label may
        // run past the plot's right edge, never past its left axis, top or bottom.
        let inside = |b: &(i32, i32, i32, i32)| b.0 >= area.0 && b.1 >= area.1 && b.3 <= area.3;
        let free = |b: &(i32, i32, i32, i32)| {
            !self
                .boxes
                .iter()
                .any(|o| b.0 < o.2 && o.0 < b.2 && b.1 < o.3 && o.1 < b.3)
        };
        let candidates: Vec<_> = near.into_iter().chain(far).map(boxed).collect();
        let (offset, b) = candidates
            .iter()
            .find(|(_, b)| free(b) && inside(b))
            .or_else(|| candidates.iter().find(|(_, b)| free(b)))
            .copied()
            .unwrap_or(candidates[0]);
        self.boxes.push(b);
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_points_close_together_do_not_overlap() {
        let mut labels = Labels {
            area: (0, 0, 600, 400),
            boxes: Vec::new(),
        };
        // Two points a pixel apart: the second label goes below its point.
        assert_eq!(labels.place((300, 200), "objective=sc"), (LABEL_DX, -16));
        assert_eq!(labels.place((301, 201), "objective=ul2"), (LABEL_DX, 4));
        // A third at the same place goes left of the point.
        let w = LABEL_CHAR_W * 14;
        assert_eq!(
            labels.place((300, 200), "objective=sclm"),
            (-LABEL_DX - w, -16)
        );
        // Near the left edge, where the left side would leave the area, the next line above.
        assert_eq!(labels.place((20, 200), "objective=plm"), (LABEL_DX, -16));
        assert_eq!(labels.place((20, 200), "objective=x"), (LABEL_DX, 4));
        assert_eq!(labels.place((20, 200), "objective=y"), (LABEL_DX, -30));
        // A point far away keeps the usual place.
        assert_eq!(labels.place((400, 50), "objective=clm"), (LABEL_DX, -16));
        // At the bottom edge a label goes above its point even when below is free of labels.
        assert_eq!(labels.place((500, 398), "bottom"), (LABEL_DX, -16));
        assert_eq!(labels.place((501, 398), "bottom2"), (-LABEL_DX - 42, -16));
        // Only a label away from the two usual places gets a leader line, to its nearer end.
        assert_eq!(leader((LABEL_DX, -16), "a"), None);
        assert_eq!(leader((LABEL_DX, 4), "a"), None);
        assert_eq!(
            leader((LABEL_DX, -30), "a"),
            Some(vec![(0, 0), (LABEL_DX, -23)])
        );
        assert_eq!(leader((-19, -16), "ab"), Some(vec![(0, 0), (-7, -9)]));
    }
}
