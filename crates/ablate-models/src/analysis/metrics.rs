//! Summaries of a field of symmetric matrices (the metric tensors).

use super::linalg::{det, sym_eigen};

/// Summary of symmetric `d × d` matrices, one per point. Eigenvalue means and maxima run over
/// every eigenvalue of every point; `eig_min_mean` is the mean of each point's smallest. The
/// condition number `λmax/λmin` is summarised over the regular points only: a plain (c0) layer
/// can squash the plane onto a line, where g is singular and the condition number infinite, and
/// `singular_frac` counts those points (λmin ≤ 1e-12·λmax, or not finite) apart. All NaN when
/// there is no matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricStats {
    pub det_mean: f64,
    pub det_max: f64,
    pub eig_mean: f64,
    pub eig_max: f64,
    pub eig_min_mean: f64,
    /// Mean and max of the condition number over the regular points; `None` when none is.
    pub cond: Option<(f64, f64)>,
    pub singular_frac: f64,
}

/// [`MetricStats`] of the `g.len() / (d·d)` matrices in `g`.
///
/// # Panics
/// If `d` is 0 or `g` is not a whole number of `d × d` matrices.
pub fn metric_stats(g: &[f64], d: usize) -> MetricStats {
    assert!(
        d > 0 && g.len().is_multiple_of(d * d),
        "{} values are not a whole number of {d}×{d} matrices",
        g.len()
    );
    let n = g.len() / (d * d);
    if n == 0 {
        return MetricStats {
            det_mean: f64::NAN,
            det_max: f64::NAN,
            eig_mean: f64::NAN,
            eig_max: f64::NAN,
            eig_min_mean: f64::NAN,
            cond: None,
            singular_frac: f64::NAN,
        };
    }
    let mut s = MetricStats {
        det_mean: 0.0,
        det_max: f64::NEG_INFINITY,
        eig_mean: 0.0,
        eig_max: f64::NEG_INFINITY,
        eig_min_mean: 0.0,
        cond: None,
        singular_frac: 0.0,
    };
    let (mut cond_sum, mut cond_max, mut regular) = (0.0, 0.0f64, 0usize);
    for m in g.chunks_exact(d * d) {
        let dt = det(m, d);
        s.det_mean += dt;
        s.det_max = s.det_max.max(dt);
        let (eig, _) = sym_eigen(m, d);
        let (lo, hi) = (eig[0], eig[d - 1]);
        s.eig_mean += eig.iter().sum::<f64>();
        s.eig_max = s.eig_max.max(hi);
        s.eig_min_mean += lo;
        if lo.is_finite() && hi.is_finite() && lo > 0.0 && lo > 1e-12 * hi {
            cond_sum += hi / lo;
            cond_max = cond_max.max(hi / lo);
            regular += 1;
        }
    }
    s.det_mean /= n as f64;
    s.eig_mean /= (n * d) as f64;
    s.eig_min_mean /= n as f64;
    s.cond = (regular > 0).then(|| (cond_sum / regular as f64, cond_max));
    s.singular_frac = (n - regular) as f64 / n as f64;
    s
}
