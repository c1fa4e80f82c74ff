//! What happens to a flow's parameters after each update (after the optimizer's decoupled
//! weight decay): the spectral normalisation of the velocity fields.
//!
//! The norms are computed here on the host, in f64, from the f32 weights; both backends then
//! scale by the same f32 factors, so equal weights stay equal.

use crate::FlowConfig;
use crate::config::Form;
use crate::params::Layout;

/// Relative margin added to every spectral-norm estimate, so that the projection errs on the
/// safe side: power iteration converges to ‖W‖₂ from below, and scaling f32 weights rounds
/// each element by up to 2⁻²⁴ relative.
const NORM_MARGIN: f64 = 1e-6;

/// Power iteration stops once the estimate changes by less than this, relatively …
///
/// Its estimate ‖G·v‖ (unit v) never exceeds λ_max, and its relative error shrinks like
/// `r^{2k}·(1 − r²)` after k iterations, r = λ₂/λ₁: tiny when the top two singular values are
/// far apart or nearly equal. In between, the iteration cap leaves at worst ~1e-4 relative
/// (r² ≈ 0.999), beyond [`NORM_MARGIN`]; trained fields have not come near that case here.
const POWER_TOL: f64 = 1e-12;
/// … or after this many iterations (each costs n² for an n×n Gram matrix, n ≤ min(rows, cols)).
const POWER_MAX_ITERS: usize = 1000;

/// The step size the Lipschitz bound is taken at: a C1 layer moves by `h·v`, a C0 layer is
/// `v` itself (`h` = 1) and a C2 layer adds `h²·v`. Its magnitude: a negative `h` steps
/// backwards, with the same Lipschitz constant.
pub(crate) fn lipschitz_step(cfg: &FlowConfig) -> f64 {
    let h = cfg.h.abs() as f64;
    match cfg.form {
        Form::C0 => 1.0,
        Form::C1 => h,
        Form::C2 => h * h,
    }
}

/// An upper estimate of the spectral norm ‖W‖₂ of the row-major `rows × cols` matrix `w`:
/// deterministic power iteration in f64 on the smaller Gram matrix (`W·Wᵀ` or `Wᵀ·W`), seeded
/// with a fixed vector, until the estimate settles, then raised by [`NORM_MARGIN`].
pub(crate) fn spectral_norm(w: &[f32], rows: usize, cols: usize) -> f64 {
    assert_eq!(w.len(), rows * cols);
    let n = rows.min(cols);
    if n == 0 {
        return 0.0;
    }
    // g[i][j] = Σ_l w_i·w_j over the longer side
    let at = |i: usize, l: usize| -> f64 {
        if rows <= cols {
            w[i * cols + l] as f64
        } else {
            w[l * cols + i] as f64
        }
    };
    let long = rows.max(cols);
    let mut g = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..long).map(|l| at(i, l) * at(j, l)).sum();
            g[i * n + j] = s;
            g[j * n + i] = s;
        }
    }
    // A fixed seed with no symmetry (all-ones would be orthogonal to, e.g., (1, −1)).
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + 0.5 * ((i + 1) as f64).sin()).collect();
    let mut gv = vec![0.0f64; n];
    let mut lambda = 0.0f64;
    for _ in 0..POWER_MAX_ITERS {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            break;
        }
        for x in &mut v {
            *x /= norm;
        }
        for (i, out) in gv.iter_mut().enumerate() {
            *out = (0..n).map(|j| g[i * n + j] * v[j]).sum();
        }
        // ‖G·v‖ for a unit v: at least the Rayleigh quotient, at most λ_max.
        let next = gv.iter().map(|x| x * x).sum::<f64>().sqrt();
        std::mem::swap(&mut v, &mut gv);
        let settled = (next - lambda).abs() <= POWER_TOL * next;
        lambda = next;
        if settled {
            break;
        }
    }
    lambda.sqrt() * (1.0 + NORM_MARGIN)
}

/// The factor both weight matrices of a field are multiplied by so that
/// `step·‖W1‖₂·‖W2‖₂ ≤ c` (see [`lipschitz_step`]), or `None` when the bound already holds.
pub(crate) fn lipschitz_factor(cfg: &FlowConfig, w1: &[f32], w2: &[f32], c: f32) -> Option<f32> {
    let s1 = spectral_norm(w1, cfg.hidden, cfg.dim);
    let s2 = spectral_norm(w2, cfg.dim, cfg.hidden);
    let lip = lipschitz_step(cfg) * s1 * s2;
    (lip > c as f64).then(|| (c as f64 / lip).sqrt() as f32)
}

/// The Lipschitz projection with bound `c`, on the flat parameters (both backends' trainers
/// keep them on the host).
pub(crate) fn project(cfg: &FlowConfig, layout: &Layout, c: f32, p: &mut [f32]) {
    for f in &layout.fields {
        if let Some(alpha) = lipschitz_factor(cfg, f.l1.w(p), f.l2.w(p), c) {
            for l in [&f.l1, &f.l2] {
                for v in &mut p[l.w..l.w + l.out * l.inp] {
                    *v *= alpha;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrainConfig;

    #[test]
    fn spectral_norm_of_known_matrices() {
        // Rank one: ‖a·bᵀ‖₂ = ‖a‖·‖b‖ = 5 · 13
        let (a, b) = ([3.0f32, 4.0], [5.0f32, 12.0, 0.0]);
        let w: Vec<f32> = a
            .iter()
            .flat_map(|x| b.iter().map(move |y| x * y))
            .collect();
        let s = spectral_norm(&w, 2, 3);
        assert!((65.0..=65.0 * (1.0 + 2e-6)).contains(&s), "{s}");
        // Its transpose has the same norm.
        let wt: Vec<f32> = (0..3)
            .flat_map(|j| (0..2).map(|i| w[i * 3 + j]).collect::<Vec<_>>())
            .collect();
        assert!((spectral_norm(&wt, 3, 2) - s).abs() < 1e-9 * s);
        // diag(1, −3, 2): the largest |entry|, reached from a seed that does not favour it.
        let d = [1.0f32, 0.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0, 2.0];
        let s = spectral_norm(&d, 3, 3);
        assert!((3.0..=3.0 * (1.0 + 2e-6)).contains(&s), "{s}");
        assert_eq!(spectral_norm(&[0.0; 6], 2, 3), 0.0);
    }

    #[test]
    fn decay_shrinks_weights_not_biases() {
        let cfg = FlowConfig {
            in_dim: 2,
            classes: 2,
            dim: 3,
            hidden: 4,
            steps: 2,
            h: 0.5,
            weights: crate::Weights::Unshared,
            form: Form::C1,
            integrator: crate::Integrator::Euler,
            activation: crate::Activation::Tanh,
        };
        let layout = Layout::new(&cfg);
        let train = TrainConfig {
            epochs: 1,
            batch: 1,
            lr: 0.1,
            seed: 0,
            weight_decay: 2.0,
            lipschitz: None,
        };
        // A zero gradient: Adam leaves every value, the decay after it scales the weights.
        let mut p = vec![1.0f32; layout.total()];
        let mut g = vec![0.0f32; layout.total()];
        let mut opt = crate::train::optimizer(&layout, &train);
        let norms = opt.grad_norms(&g);
        opt.update(0, &mut p, &mut g, &norms);
        for slot in layout.store.slots() {
            let want = if slot.name.ends_with(".weight") {
                0.8
            } else {
                1.0
            };
            let vals = &p[slot.range()];
            assert!(vals.iter().all(|v| *v == want), "{}: {vals:?}", slot.name);
        }
    }
}
