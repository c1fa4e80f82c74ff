//! Drawing a Pareto plot: one panel per facet on shared axes, a dot per group with ± one sd
//! bars on both axes, a ring around each point on the frontier, the frontier's step line, and
//! each point's name placed where it overlaps nothing else ([`place_labels`]).

use plotters::coord::CoordTranslate;

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

/// The height of the line under the title that says what the point labels are.
const LEGEND_LINE: u32 = 20;
/// Label text, and the white box behind it (so a line it must cross stays readable under it).
const LABEL_FONT: u32 = 12;
const LABEL_PAD: (i32, i32) = (3, 1);
/// A point's marker: the frontier ring's radius plus its stroke, what a label must not cover.
const MARKER_R: i32 = 8;

/// What one panel's labels were placed among, and where they went (see
/// [`ParetoFigure::label_layout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FacetLabels {
    pub scene: LabelScene,
    pub placed: Vec<Placed>,
}

impl ParetoFigure {
    /// Ranges covering every point and error bar of every facet, so panels compare; padded by
    /// 10% of the span so points at the edges keep room for a label beside them.
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
        let pad = |lo: f64, hi: f64| {
            let r = padded(lo, hi, false);
            let extra = 0.05 * (r.end - r.start) / 1.1;
            r.start - extra..r.end + extra
        };
        (pad(x0, x1), pad(y0, y1))
    }

    /// The label boxes each panel gets, in pixels of the figure, computed exactly as
    /// [`Figure::draw`] places them (on a throwaway SVG): for tests and for a person checking a
    /// layout.
    pub fn label_layout(&self) -> Result<Vec<FacetLabels>, String> {
        register_font();
        let mut svg = String::new();
        let mut layouts = Vec::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            self.draw_with(&root, &mut layouts)?;
        }
        Ok(layouts)
    }

    fn draw_with<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        layouts: &mut Vec<FacetLabels>,
    ) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let mut body = root.titled(&self.title, (FONT, 18)).map_err(err)?;
        if !self.pareto.legend.is_empty() {
            body = body
                .titled(
                    &self.pareto.legend,
                    (FONT, 12).into_font().color(&FAINT_TEXT),
                )
                .map_err(err)?;
        }
        let (xr, yr) = self.ranges();
        let facets = &self.pareto.facets;
        let label_font = (FONT, LABEL_FONT).into_font();
        for (facet, area) in facets
            .iter()
            .zip(body.split_evenly((1, facets.len().max(1))))
        {
            let area = area
                .titled(facet.name.as_deref().unwrap_or(""), (FONT, 14))
                .map_err(err)?;
            let mut chart = ChartBuilder::on(&area)
                .margin(10)
                .margin_right(16)
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
            let step = staircase(&on);
            if on.len() >= 2 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        step.clone(),
                        FRONTIER.stroke_width(2),
                    )))
                    .map_err(err)?;
            }
            let coord = chart.as_coord_spec().clone();
            let px = |x: f64, y: f64| coord.translate(&(x, y));
            let (xs, ys) = chart.plotting_area().get_pixel_range();
            let mut scene = LabelScene {
                area: Rect {
                    x0: xs.start,
                    y0: ys.start,
                    x1: xs.end,
                    y1: ys.end,
                },
                points: facet.points.iter().map(|p| px(p.x, p.y)).collect(),
                sizes: Vec::new(),
                lines: step
                    .windows(2)
                    .map(|w| [px(w[0].0, w[0].1), px(w[1].0, w[1].1)])
                    .collect(),
                whiskers: Vec::new(),
            };
            for p in &facet.points {
                let color = PALETTE[p.group % PALETTE.len()];
                if let Some(sd) = p.y_sd {
                    scene.whiskers.push([px(p.x, p.y - sd), px(p.x, p.y + sd)]);
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
                    scene.whiskers.push([px(p.x - sd, p.y), px(p.x + sd, p.y)]);
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
                chart
                    .draw_series(std::iter::once(Circle::new((p.x, p.y), 4, color.filled())))
                    .map_err(err)?;
                let (w, h) = root
                    .estimate_text_size(
                        &self.pareto.labels[p.group],
                        &TextStyle::from(label_font.clone()),
                    )
                    .map_err(err)?;
                scene
                    .sizes
                    .push((w as i32 + 2 * LABEL_PAD.0, h as i32 + 2 * LABEL_PAD.1));
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
            let placed = place_labels(&scene);
            for (p, at) in facet.points.iter().zip(&placed) {
                let color = PALETTE[p.group % PALETTE.len()];
                if let Some(line) = at.leader {
                    root.draw(&PathElement::new(line.to_vec(), color.stroke_width(1)))
                        .map_err(err)?;
                }
                let r = at.rect;
                root.draw(&Rectangle::new(
                    [(r.x0, r.y0), (r.x1, r.y1)],
                    WHITE.mix(0.85).filled(),
                ))
                .map_err(err)?;
                root.draw(&Text::new(
                    self.pareto.labels[p.group].clone(),
                    (r.x0 + LABEL_PAD.0, r.y0 + LABEL_PAD.1),
                    label_font.clone().color(&darker(color)),
                ))
                .map_err(err)?;
            }
            layouts.push(FacetLabels { scene, placed });
        }
        Ok(())
    }
}

/// The legend line under the title.
const FAINT_TEXT: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// A palette colour darkened for text: the light ones (yellow, pink) are hard to read at 12 px
/// on white.
fn darker(c: RGBColor) -> RGBColor {
    let d = |v: u8| (f64::from(v) * 0.75) as u8;
    RGBColor(d(c.0), d(c.1), d(c.2))
}

impl Figure for ParetoFigure {
    fn size(&self) -> (u32, u32) {
        let (w, h) = self.panel_size;
        let n = self.pareto.facets.len().max(1) as u32;
        let title = 9 * self.title.chars().count() as u32 + 24;
        let legend = if self.pareto.legend.is_empty() {
            0
        } else {
            LEGEND_LINE
        };
        (
            (w * n).max(MIN_WIDTH).max(title),
            FIGURE_TITLE + legend + ROW_TITLE + h,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        self.draw_with(root, &mut Vec::new())
    }
}

// ---------------------------------------------------------------------------------------------
// Label placement

/// A box in pixels: `x0..x1` across, `y0..y1` down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Rect {
    /// The area two boxes share, in pixels² (0 when they only touch).
    pub fn overlap(&self, o: &Rect) -> i64 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0);
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0);
        i64::from(w) * i64::from(h)
    }

    pub fn contains(&self, o: &Rect) -> bool {
        self.x0 <= o.x0 && self.y0 <= o.y0 && o.x1 <= self.x1 && o.y1 <= self.y1
    }

    /// The box a marker at `p` occupies.
    pub fn marker(p: (i32, i32)) -> Rect {
        Rect {
            x0: p.0 - MARKER_R,
            y0: p.1 - MARKER_R,
            x1: p.0 + MARKER_R,
            y1: p.1 + MARKER_R,
        }
    }

    /// How long a stretch of the segment `a`–`b` runs inside the box (Liang–Barsky clipping).
    pub fn clipped_length(&self, [a, b]: [(i32, i32); 2]) -> f64 {
        let (x0, y0) = (f64::from(a.0), f64::from(a.1));
        let (dx, dy) = (f64::from(b.0) - x0, f64::from(b.1) - y0);
        let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
        let edges = [
            (-dx, x0 - f64::from(self.x0)),
            (dx, f64::from(self.x1) - x0),
            (-dy, y0 - f64::from(self.y0)),
            (dy, f64::from(self.y1) - y0),
        ];
        for (p, q) in edges {
            if p == 0.0 {
                if q < 0.0 {
                    return 0.0;
                }
            } else {
                let t = q / p;
                if p < 0.0 {
                    t0 = t0.max(t);
                } else {
                    t1 = t1.min(t);
                }
            }
        }
        if t1 <= t0 {
            0.0
        } else {
            (t1 - t0) * (dx * dx + dy * dy).sqrt()
        }
    }

    /// The point of the box nearest to `p`.
    fn nearest(&self, p: (i32, i32)) -> (i32, i32) {
        (p.0.clamp(self.x0, self.x1), p.1.clamp(self.y0, self.y1))
    }
}

/// What one panel's labels are placed among, in pixels: the plotting area they must stay in,
/// each point (its label's size at the same index), the frontier's step line, and the error
/// bars.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScene {
    pub area: Rect,
    pub points: Vec<(i32, i32)>,
    pub sizes: Vec<(i32, i32)>,
    pub lines: Vec<[(i32, i32); 2]>,
    pub whiskers: Vec<[(i32, i32); 2]>,
}

/// Where a point's label went, and the line drawn to it from its point when it sits away from
/// it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub rect: Rect,
    pub leader: Option<[(i32, i32); 2]>,
}

/// Directions a label may sit in from its point, in order of preference (right of a point
/// reads as its name first).
const DIRECTIONS: [(i32, i32); 8] = [
    (1, 0),
    (1, -1),
    (1, 1),
    (-1, 0),
    (-1, -1),
    (-1, 1),
    (0, -1),
    (0, 1),
];
/// Distances from a point to the near edge of its label: the first beside the marker, the
/// others further out with a leader line.
const RINGS: [i32; 8] = [MARKER_R + 3, 24, 38, 54, 72, 94, 120, 150];
/// A label further than this from its point gets a leader line.
const LEADER_FROM: f64 = (MARKER_R + 6) as f64;
/// Costs, per pixel² of a label over another label or a marker, per pixel of the frontier or an
/// error bar under a label, per crossing of a leader line, and per ring out and preference step.
const COST_LABEL: f64 = 1000.0;
const COST_MARKER: f64 = 300.0;
const COST_FRONTIER: f64 = 8.0;
const COST_WHISKER: f64 = 3.0;
const COST_LEADER_CROSSES: f64 = 2000.0;
const COST_RING: f64 = 40.0;
const COST_DIRECTION: f64 = 2.0;
const COST_AMBIGUOUS: f64 = 60.0;

fn distance(a: (i32, i32), b: (i32, i32)) -> f64 {
    f64::from(a.0 - b.0).hypot(f64::from(a.1 - b.1))
}

/// Places every point's label (greedily, the most crowded points first): each takes the
/// cheapest of 8 positions around its point at each of [`RINGS`]' distances, kept inside the
/// plotting area, where the cost counts overlap with labels already placed and with every
/// point's marker, the frontier and the error bars under it, and how far it sits from its
/// point; a label that sits away from its point gets a leader line. Deterministic: ties go to
/// the earlier ring and direction.
pub fn place_labels(scene: &LabelScene) -> Vec<Placed> {
    let n = scene.points.len();
    let crowd = |i: usize| {
        let (x, y) = scene.points[i];
        scene
            .points
            .iter()
            .filter(|&&(u, v)| (u - x).abs() < 60 && (v - y).abs() < 40)
            .count()
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(crowd(i)), i));
    let markers: Vec<Rect> = scene.points.iter().map(|&p| Rect::marker(p)).collect();
    let mut placed: Vec<Option<Placed>> = vec![None; n];
    for i in order {
        let p = scene.points[i];
        let (w, h) = scene.sizes[i];
        let mut best: Option<(f64, Placed)> = None;
        for (ring, &dist) in RINGS.iter().enumerate() {
            for (d, &(dx, dy)) in DIRECTIONS.iter().enumerate() {
                // A diagonal keeps the same distance from the point as a straight one.
                let step = if dx != 0 && dy != 0 {
                    (f64::from(dist) / std::f64::consts::SQRT_2).round() as i32
                } else {
                    dist
                };
                let (ax, ay) = (p.0 + dx * step, p.1 + dy * step);
                let x0 = match dx {
                    1 => ax,
                    -1 => ax - w,
                    _ => ax - w / 2,
                };
                let y0 = match dy {
                    1 => ay,
                    -1 => ay - h,
                    _ => ay - h / 2,
                };
                let rect = clamp_into(
                    Rect {
                        x0,
                        y0,
                        x1: x0 + w,
                        y1: y0 + h,
                    },
                    &scene.area,
                );
                let near = rect.nearest(p);
                let gap = distance(near, p);
                // A label at least as near another point reads as that point's name: it costs,
                // and gets a line to its own point.
                let ambiguous = scene
                    .points
                    .iter()
                    .enumerate()
                    .any(|(j, &q)| j != i && distance(rect.nearest(q), q) < gap + 3.0);
                let leader = (gap > LEADER_FROM || ambiguous).then(|| {
                    // From the marker's edge to the box.
                    let t = f64::from(MARKER_R) / gap;
                    let from = (
                        p.0 + (f64::from(near.0 - p.0) * t).round() as i32,
                        p.1 + (f64::from(near.1 - p.1) * t).round() as i32,
                    );
                    [from, near]
                });
                let mut cost = COST_RING * ring as f64 + COST_DIRECTION * d as f64 + gap;
                if ambiguous {
                    cost += COST_AMBIGUOUS;
                }
                for o in placed.iter().flatten() {
                    cost += COST_LABEL * o.rect.overlap(&rect) as f64;
                    if let Some(l) = leader
                        && o.rect.clipped_length(l) > 0.0
                    {
                        cost += COST_LEADER_CROSSES;
                    }
                    if let Some(l) = o.leader
                        && rect.clipped_length(l) > 0.0
                    {
                        cost += COST_LEADER_CROSSES;
                    }
                }
                for (j, m) in markers.iter().enumerate() {
                    cost += COST_MARKER * m.overlap(&rect) as f64;
                    if let Some(l) = leader
                        && j != i
                        && m.clipped_length(l) > 0.0
                    {
                        cost += COST_LEADER_CROSSES;
                    }
                }
                for &s in &scene.lines {
                    cost += COST_FRONTIER * rect.clipped_length(s);
                }
                for &s in &scene.whiskers {
                    cost += COST_WHISKER * rect.clipped_length(s);
                }
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, Placed { rect, leader }));
                }
            }
        }
        placed[i] = best.map(|(_, at)| at);
    }
    placed.into_iter().flatten().collect()
}

/// `r` shifted (not shrunk) to lie inside `area` where it fits, else against its top left.
fn clamp_into(r: Rect, area: &Rect) -> Rect {
    let shift = |lo: i32, hi: i32, a0: i32, a1: i32| {
        if hi > a1 {
            (a1 - hi).max(a0 - lo)
        } else if lo < a0 {
            a0 - lo
        } else {
            0
        }
    };
    let dx = shift(r.x0, r.x1, area.x0, area.x1);
    let dy = shift(r.y0, r.y1, area.y0, area.y1);
    Rect {
        x0: r.x0 + dx,
        y0: r.y0 + dy,
        x1: r.x1 + dx,
        y1: r.y1 + dy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::data::{FinalMetrics, pareto};
    use ablate_spec::Value;

    /// The UL2 pipeline's Pareto figure with the means and sds of a real run (`docs/papers.md`):
    /// per arch, six objectives of which four sit within 0.02 of each other on both axes and
    /// three share one-shot EM 0.
    pub(crate) fn ul2_figure() -> ParetoFigure {
        // (objective, mode tokens, [infill mean, sd], [one-shot mean, sd]) per arch.
        type Row = (&'static str, bool, [f64; 2], [f64; 2]);
        let decoder: [Row; 6] = [
            ("clm", false, [0.0, 0.0], [0.144, 0.045]),
            ("plm", false, [0.0, 0.0], [0.048, 0.018]),
            ("sc", false, [0.049, 0.005], [0.0, 0.0]),
            ("sclm", false, [0.0295, 0.001], [0.072, 0.031]),
            ("ul2", false, [0.028, 0.004], [0.034, 0.003]),
            ("ul2", true, [0.031, 0.004], [0.036, 0.005]),
        ];
        let encdec: [Row; 6] = [
            ("clm", false, [0.0, 0.0], [0.328, 0.082]),
            ("plm", false, [0.0, 0.0], [0.031, 0.01]),
            ("sc", false, [0.020, 0.006], [0.0, 0.0]),
            ("sclm", false, [0.019, 0.001], [0.042, 0.005]),
            ("ul2", false, [0.017, 0.002], [0.0, 0.0]),
            ("ul2", true, [0.0145, 0.004], [0.0, 0.0]),
        ];
        let mut obs = Vec::new();
        for (arch, rows) in [("decoder", decoder), ("encdec", encdec)] {
            for (objective, modes, [x, xs], [y, ys]) in rows {
                // Three seeds at mean − sd, mean, mean + sd: sample sd = sd.
                for (seed, k) in [-1.0, 0.0, 1.0].into_iter().enumerate() {
                    obs.push(FinalMetrics {
                        id: format!("{arch}-{objective}-{modes}-{seed}"),
                        labels: vec![
                            ("objective".into(), Value::from(objective)),
                            ("mode_tokens".into(), Value::from(modes)),
                            ("arch".into(), Value::from(arch)),
                            ("seed".into(), Value::from(seed)),
                        ],
                        metrics: [
                            ("infill_em".to_owned(), (x + k * xs).max(0.0)),
                            ("oneshot_em".to_owned(), (y + k * ys).max(0.0)),
                        ]
                        .into(),
                    });
                }
            }
        }
        let group = ["objective".to_owned(), "mode_tokens".to_owned()];
        ParetoFigure {
            title: "understanding (span infilling EM) vs generation (one-shot EM), mean ± sd \
                    over seeds"
                .into(),
            x_name: "infill_em (higher is better →)".into(),
            y_name: "oneshot_em (higher is better →)".into(),
            pareto: pareto(
                &obs,
                "infill_em",
                "oneshot_em",
                &group,
                Some("arch"),
                [false, false],
            )
            .unwrap(),
            panel_size: (480, 440),
        }
    }

    #[test]
    fn ul2_pareto_labels_do_not_overlap_each_other_points_or_the_frontier() {
        let fig = ul2_figure();
        assert_eq!(
            fig.pareto.labels,
            ["clm", "plm", "sc", "sclm", "ul2", "ul2 +mode_tokens"]
        );
        assert_eq!(
            fig.pareto.legend,
            "labels: objective (+mode_tokens where mode_tokens=true)"
        );
        if let Some(dir) = std::env::var_os("ABLATE_FIGURE_DIR") {
            save(&fig, Path::new(&dir), "ul2_pareto").unwrap();
        }
        let layouts = fig.label_layout().unwrap();
        assert_eq!(layouts.len(), 2);
        for (facet, FacetLabels { scene, placed }) in layouts.iter().enumerate() {
            assert_eq!(placed.len(), 6);
            for (i, a) in placed.iter().enumerate() {
                let r = a.rect;
                assert!(
                    scene.area.contains(&r),
                    "facet {facet}: label {i} {r:?} leaves {:?}",
                    scene.area
                );
                for (j, b) in placed.iter().enumerate().skip(i + 1) {
                    assert_eq!(
                        r.overlap(&b.rect),
                        0,
                        "facet {facet}: labels {i} and {j} overlap"
                    );
                }
                for (j, &p) in scene.points.iter().enumerate() {
                    assert_eq!(
                        r.overlap(&Rect::marker(p)),
                        0,
                        "facet {facet}: label {i} covers point {j}"
                    );
                }
                for &s in &scene.lines {
                    assert_eq!(
                        r.clipped_length(s),
                        0.0,
                        "facet {facet}: label {i} on the frontier"
                    );
                }
                // Beside its point, or joined to it by a line.
                let near = r.nearest(scene.points[i]);
                let gap = distance(near, scene.points[i]);
                assert!(
                    gap <= LEADER_FROM || a.leader.is_some(),
                    "facet {facet}: label {i}"
                );
            }
        }
    }

    #[test]
    fn a_label_takes_the_first_free_place_around_its_point() {
        let scene = |points: Vec<(i32, i32)>| LabelScene {
            area: Rect {
                x0: 0,
                y0: 0,
                x1: 400,
                y1: 300,
            },
            sizes: vec![(30, 16); points.len()],
            points,
            lines: Vec::new(),
            whiskers: Vec::new(),
        };
        // Alone: right of the point, centred on it, no leader.
        let one = place_labels(&scene(vec![(100, 100)]));
        let at = |x0: i32, y0: i32| Rect {
            x0,
            y0,
            x1: x0 + 30,
            y1: y0 + 16,
        };
        assert_eq!(
            one,
            [Placed {
                rect: at(111, 92),
                leader: None
            }]
        );
        // At the right edge the places right of the point are shifted inside, onto the point
        // for the one beside it, clear of it for the one above and right: that one wins.
        let edge = place_labels(&scene(vec![(395, 100)]));
        assert_eq!(edge[0].rect, at(400 - 30, 100 - 8 - 16));
        // Two points on top of each other: the second label does not cover the first.
        let two = place_labels(&scene(vec![(100, 100), (101, 100)]));
        assert_eq!(two[0].rect.overlap(&two[1].rect), 0);
        // A frontier segment through the right-hand place sends the label elsewhere.
        let mut s = scene(vec![(100, 100)]);
        s.lines.push([(100, 100), (200, 100)]);
        let r = place_labels(&s)[0].rect;
        assert_eq!(r.clipped_length(s.lines[0]), 0.0);
        assert_eq!(r, at(108, 100 - 8 - 16));
    }

    #[test]
    fn clipped_length_is_the_part_of_a_segment_inside_the_box() {
        let r = Rect {
            x0: 0,
            y0: 0,
            x1: 10,
            y1: 10,
        };
        assert_eq!(r.clipped_length([(-5, 5), (15, 5)]), 10.0);
        assert_eq!(r.clipped_length([(5, -5), (5, 5)]), 5.0);
        assert_eq!(r.clipped_length([(20, 5), (30, 5)]), 0.0);
        assert!((r.clipped_length([(-1, -1), (11, 11)]) - 200f64.sqrt()).abs() < 1e-9);
    }
}
