//! Regular grids over a bounding box, to draw a flow's fields on.

/// A regular grid of `nx × ny` points (row-major `x, y` pairs, the x index fastest).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub nx: usize,
    pub ny: usize,
    pub points: Vec<f32>,
}

/// A regular `nx × ny` grid over the bounding box of the 2-D points `x` (row-major, 2 per
/// row), padded on each side by `pad` times the box's size along that axis. A side of zero
/// extent (or no points at all, whose box is the origin) is padded as if it had size 1; a
/// side with one grid point puts it in the middle.
pub fn grid_over(x: &[f32], nx: usize, ny: usize, pad: f32) -> Grid {
    assert!(x.len().is_multiple_of(2), "grid_over takes 2-D points");
    let axis = |j: usize, n: usize| -> Vec<f32> {
        let vals = x.iter().skip(j).step_by(2).map(|&v| f64::from(v));
        let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            (lo, hi) = (0.0, 0.0);
        }
        let size = if hi > lo { hi - lo } else { 1.0 };
        let (lo, hi) = (lo - f64::from(pad) * size, hi + f64::from(pad) * size);
        (0..n)
            .map(|i| {
                if n == 1 {
                    (0.5 * (lo + hi)) as f32
                } else {
                    (lo + (hi - lo) * i as f64 / (n - 1) as f64) as f32
                }
            })
            .collect()
    };
    let (xs, ys) = (axis(0, nx), axis(1, ny));
    let points = ys
        .iter()
        .flat_map(|&y| xs.iter().flat_map(move |&x| [x, y]))
        .collect();
    Grid { nx, ny, points }
}
