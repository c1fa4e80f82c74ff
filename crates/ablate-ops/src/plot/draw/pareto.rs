//! Drawing a Pareto plot: one panel per facet on shared axes, a dot per group with ± one sd
//! bars on both axes, a ring around each point on the frontier, and the frontier's step line.

use super::*;

/// One panel per facet, side by side on shared axes: a dot per group (its colour, its name
/// beside it) with ± one sd bars on both axes, a ring around each point on the frontier, and
/// the frontier's step line.
pub(crate) struct ParetoFigure {
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
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((p.x, p.y))
                            + Circle::new((0, 0), 4, color.filled())
                            + Text::new(name, (7, -16), (FONT, 12).into_font().color(&color)),
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
