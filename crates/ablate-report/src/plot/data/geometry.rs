//! Geometry of the panel plots: the deformed grid as polylines, its spacing, and the
//! ellipses a metric tensor draws at each point (scaled to the grid so they stay readable).

use super::*;

pub type Polyline = Vec<(f64, f64)>;

/// The deformed grid as polylines joining neighbours along `gi` (fixed `gj`) and along `gj`
/// (fixed `gi`); a missing grid point breaks its lines.
pub fn grid_lines(points: &[(i64, i64, [f64; 2])]) -> Vec<Polyline> {
    let mut by_gi: BTreeMap<i64, BTreeMap<i64, [f64; 2]>> = BTreeMap::new();
    let mut by_gj: BTreeMap<i64, BTreeMap<i64, [f64; 2]>> = BTreeMap::new();
    for &(gi, gj, x) in points {
        by_gi.entry(gi).or_default().insert(gj, x);
        by_gj.entry(gj).or_default().insert(gi, x);
    }
    let mut lines = Vec::new();
    for line in by_gi.values().chain(by_gj.values()) {
        let mut run: Polyline = Vec::new();
        let mut prev: Option<i64> = None;
        for (&k, x) in line {
            if prev.is_some_and(|p| k != p + 1) {
                if run.len() >= 2 {
                    lines.push(std::mem::take(&mut run));
                }
                run.clear();
            }
            run.push((x[0], x[1]));
            prev = Some(k);
        }
        if run.len() >= 2 {
            lines.push(run);
        }
    }
    lines
}

/// The median distance between grid neighbours (the spacing metric ellipses are scaled to).
pub fn grid_spacing(points: &[(i64, i64, [f64; 2])]) -> Option<f64> {
    let at: HashMap<(i64, i64), [f64; 2]> = points.iter().map(|&(i, j, x)| ((i, j), x)).collect();
    let mut d: Vec<f64> = Vec::new();
    for &(i, j, x) in points {
        for n in [(i + 1, j), (i, j + 1)] {
            if let Some(y) = at.get(&n) {
                let dist = ((x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2)).sqrt();
                if dist.is_finite() && dist > 0.0 {
                    d.push(dist);
                }
            }
        }
    }
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(d[d.len() / 2])
}

/// The ellipse {u : uᵀ g u = 1} of a symmetric positive-definite 2×2 `g`: semi-axis `r1`
/// along direction `angle` (the eigenvector of the larger eigenvalue), `r2` across it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ellipse {
    pub angle: f64,
    pub r1: f64,
    pub r2: f64,
}

impl Ellipse {
    /// `None` when `g` is not finite or not positive definite (drawn as a point).
    pub fn of_metric([a, b, c]: [f64; 3]) -> Option<Ellipse> {
        if !(a.is_finite() && b.is_finite() && c.is_finite()) {
            return None;
        }
        // Closed-form eigenvalues of [[a, b], [b, c]].
        let mid = 0.5 * (a + c);
        let rad = (0.25 * (a - c).powi(2) + b * b).sqrt();
        let (l1, l2) = (mid + rad, mid - rad);
        if !(l2 > l1.abs() * 1e-12 && l2 > 0.0) {
            return None;
        }
        Some(Ellipse {
            angle: 0.5 * (2.0 * b).atan2(a - c),
            r1: 1.0 / l1.sqrt(),
            r2: 1.0 / l2.sqrt(),
        })
    }

    /// The largest semi-axis.
    pub fn max_semi(&self) -> f64 {
        self.r1.max(self.r2)
    }

    /// The outline around `center`, scaled by `scale`, as a closed polyline of `n` segments.
    pub fn outline(&self, center: [f64; 2], scale: f64, n: usize) -> Polyline {
        let (s, c) = self.angle.sin_cos();
        (0..=n)
            .map(|k| {
                let t = std::f64::consts::TAU * (k % n) as f64 / n as f64;
                let (a, b) = (self.r1 * t.cos() * scale, self.r2 * t.sin() * scale);
                (center[0] + a * c - b * s, center[1] + a * s + b * c)
            })
            .collect()
    }
}

/// What a metric panel draws: ellipse outlines, and the points where `g` is degenerate.
///
/// A trained network's metric spans orders of magnitude across the plane, so scaling by the
/// largest ellipse would shrink most of them to dots. Instead the median ellipse's largest
/// semi-axis becomes 0.4 × the grid spacing, and any ellipse that would then reach beyond half
/// the spacing is shrunk to it (its shape kept): sizes compare up to that cap.
pub fn metric_ellipses(points: &[&MetricPoint]) -> (Vec<Polyline>, Vec<[f64; 2]>) {
    let grid: Vec<(i64, i64, [f64; 2])> = points.iter().map(|p| (p.gi, p.gj, p.x)).collect();
    let ellipses: Vec<(Option<Ellipse>, [f64; 2])> = points
        .iter()
        .map(|p| (Ellipse::of_metric(p.g), p.x))
        .collect();
    let mut semis: Vec<f64> = ellipses
        .iter()
        .filter_map(|(e, _)| e.map(|e| e.max_semi()))
        .collect();
    semis.sort_by(f64::total_cmp);
    let median = semis.get(semis.len() / 2).copied().unwrap_or(0.0);
    let spacing = grid_spacing(&grid).unwrap_or_else(|| extent(&grid).max(1e-9) / 10.0);
    let scale = if median > 0.0 {
        0.4 * spacing / median
    } else {
        1.0
    };
    let cap = 0.5 * spacing;
    let mut outlines = Vec::new();
    let mut degenerate = Vec::new();
    for (e, x) in ellipses {
        match e {
            Some(e) => {
                let s = scale.min(cap / e.max_semi());
                outlines.push(e.outline(x, s, 32))
            }
            None => degenerate.push(x),
        }
    }
    (outlines, degenerate)
}

fn extent(points: &[(i64, i64, [f64; 2])]) -> f64 {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for (_, _, x) in points {
        for k in 0..2 {
            lo[k] = lo[k].min(x[k]);
            hi[k] = hi[k].max(x[k]);
        }
    }
    (hi[0] - lo[0]).max(hi[1] - lo[1]).max(0.0)
}
