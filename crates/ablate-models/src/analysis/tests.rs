//! The analyses against finite differences, hand-worked matrices and exact solutions.

use super::linalg::{dist, gram, identity, mat_mul};
use super::net::Dense64;
use super::*;
use crate::params::Layout;
use crate::rng::SplitMix64;
use crate::{Activation, Flow, FlowConfig, Form, Integrator, NnError, Weights};

const FORMS: [(Form, Integrator); 5] = [
    (Form::C0, Integrator::Euler),
    (Form::C1, Integrator::Euler),
    (Form::C1, Integrator::Midpoint),
    (Form::C1, Integrator::Rk4),
    (Form::C2, Integrator::Euler),
];

fn config(form: Form, integrator: Integrator, weights: Weights, in_dim: usize) -> FlowConfig {
    FlowConfig {
        in_dim,
        classes: 3,
        dim: 3,
        hidden: 6,
        steps: 4,
        h: 0.25,
        weights,
        form,
        integrator,
        activation: Activation::Tanh,
    }
}

/// A flow of any form (past `FlowConfig::validate`'s guard) with its initial parameters
/// times `scale`.
fn flow(cfg: FlowConfig, seed: u64, scale: f32) -> Flow {
    let layout = Layout::new(&cfg);
    let params = layout.init(seed).into_iter().map(|v| v * scale).collect();
    Flow::from_parts(cfg, layout, params).unwrap()
}

fn points(rows: usize, dim: usize, seed: u64, bound: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed, 99);
    (0..rows * dim).map(|_| rng.uniform(bound)).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Central differences of `f: R^d → R^d` at `x`: `d × d`, row-major.
fn fd_jacobian(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], eps: f64) -> Vec<f64> {
    let d = x.len();
    let mut jac = vec![0.0; d * d];
    for j in 0..d {
        let (mut up, mut down) = (x.to_vec(), x.to_vec());
        up[j] += eps;
        down[j] -= eps;
        let (fu, fd) = (f(&up), f(&down));
        for i in 0..d {
            jac[i * d + j] = (fu[i] - fd[i]) / (2.0 * eps);
        }
    }
    jac
}

#[test]
fn analysis_trace_through_the_head_matches_predict_logits() {
    for weights in [Weights::Shared, Weights::Unshared] {
        for in_dim in [2, 3] {
            let cfg = config(Form::C1, Integrator::Euler, weights, in_dim);
            let f = Flow::init(&cfg, 7).unwrap();
            let x = points(5, in_dim, 1, 2.0);
            let trace = f.trace(&x).unwrap();
            assert_eq!((trace.rows, trace.layers, trace.dim), (5, 5, 3));
            let head = Dense64::new(&f.layout().head, f.params());
            let logits = f.predict_logits(&x).unwrap();
            for row in 0..5 {
                let ours = head.apply(trace.state(cfg.steps, row));
                for (o, l) in ours.iter().zip(&logits[row * 3..row * 3 + 3]) {
                    assert!((o - f64::from(*l)).abs() < 1e-4, "{weights:?} {in_dim}");
                }
            }
            // Layer 0 is the lift `W·x + b`, and `lift_matrix` is its `W`.
            let lift = f.lift_matrix();
            let row0: Vec<f64> = x[..in_dim].iter().map(|&v| f64::from(v)).collect();
            let mut x0 = mat_mul(&lift, &row0, 3, in_dim, 1);
            match f.layout().lift {
                Some(l) => {
                    assert_eq!(in_dim, 2);
                    let w: Vec<f64> = l.w(f.params()).iter().map(|&v| f64::from(v)).collect();
                    assert_eq!(lift, w);
                    x0.iter_mut()
                        .zip(l.b(f.params()))
                        .for_each(|(x, b)| *x += f64::from(*b));
                }
                None => assert_eq!(lift, identity(3)),
            }
            assert!(max_abs_diff(&x0, trace.state(0, 0)) < 1e-15);
        }
    }
}

#[test]
fn analysis_refuses_ragged_and_empty_input() {
    let f = Flow::init(&config(Form::C1, Integrator::Euler, Weights::Shared, 2), 1).unwrap();
    for x in [&[1.0f32, 2.0, 3.0][..], &[]] {
        assert!(matches!(f.trace(x), Err(NnError::InvalidData(_))));
        assert!(matches!(f.flow_jacobians(x), Err(NnError::InvalidData(_))));
        assert!(matches!(f.inverse_errors(x), Err(NnError::InvalidData(_))));
        assert!(matches!(
            f.metric_convergence(x),
            Err(NnError::InvalidData(_))
        ));
    }
}

#[test]
fn analysis_flow_jacobians_match_finite_differences() {
    for (form, integrator) in FORMS {
        for activation in [Activation::Tanh, Activation::Relu] {
            for weights in [Weights::Shared, Weights::Unshared] {
                let mut cfg = config(form, integrator, weights, 2);
                cfg.activation = activation;
                let f = flow(cfg, 3, 2.0);
                let net = f.net64();
                let x = points(4, 2, 5, 1.5);
                let jac = f.flow_jacobians(&x).unwrap();
                let dets = f.jacobian_dets(&x).unwrap();
                // ReLU nets are piecewise affine, so central differences are exact up to
                // rounding unless they straddle a kink: a tiny step makes that unlikely.
                let eps = match activation {
                    Activation::Tanh => 1e-5,
                    Activation::Relu => 1e-7,
                };
                for (row, chunk) in x.chunks_exact(2).enumerate() {
                    let x0 = net.lift(chunk);
                    let fd = fd_jacobian(|x| net.states(x).pop().unwrap(), &x0, eps);
                    let ours = &jac[row * 9..row * 9 + 9];
                    let scale = fd.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    let err = max_abs_diff(ours, &fd);
                    assert!(
                        err < 1e-6 * scale,
                        "{form:?} {integrator:?} {activation:?} {weights:?}: {err}"
                    );
                    assert!((dets[row] - det(&fd, 3)).abs() < 1e-5 * scale.powi(3));
                }
                // The nonlinearity is exercised: rows differ.
                if form != Form::C0 || activation == Activation::Tanh {
                    assert!(max_abs_diff(&jac[..9], &jac[9..18]) > 1e-3);
                }
            }
        }
    }
}

#[test]
fn analysis_pullback_metrics_match_finite_differences() {
    for (form, integrator) in FORMS {
        for weights in [Weights::Shared, Weights::Unshared] {
            let cfg = config(form, integrator, weights, 2);
            let steps = cfg.steps;
            let f = flow(cfg, 11, 2.0);
            let net = f.net64();
            let x = points(3, 2, 2, 1.5);
            let g = f.pullback_metrics(&x).unwrap();
            assert_eq!(g.len(), (steps + 1) * 3 * 9);
            let jac = f.flow_jacobians(&x).unwrap();
            let trace = f.trace(&x).unwrap();
            for row in 0..3 {
                for l in 0..=steps {
                    let at = (l * 3 + row) * 9;
                    let ours = &g[at..at + 9];
                    let xl = trace.state(l, row);
                    // x_{l−1} is held (C2 from layer 1 on), except at layer 0 where it is x_0.
                    let fd = if l == 0 {
                        fd_jacobian(|x| net.states(x).pop().unwrap(), xl, 1e-5)
                    } else {
                        let prev = trace.state(l - 1, row).to_vec();
                        fd_jacobian(|x| net.states_from(l, &prev, x).pop().unwrap(), xl, 1e-5)
                    };
                    let expect = gram(&fd, 3, 3);
                    let scale = expect.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    let err = max_abs_diff(ours, &expect);
                    assert!(
                        err < 1e-6 * scale,
                        "{form:?} {integrator:?} {weights:?} layer {l}: {err}"
                    );
                }
                // g_0 = JᵀJ with the analytic whole-flow Jacobian.
                let j0 = gram(&jac[row * 9..row * 9 + 9], 3, 3);
                let g0 = &g[row * 9..row * 9 + 9];
                assert!(
                    max_abs_diff(g0, &j0) < 1e-10 * j0.iter().fold(1.0f64, |m, v| m.max(v.abs()))
                );
            }
            // The input metric is Lᵀ g_0 L.
            let lift = f.lift_matrix();
            let input = f.input_metrics(&x).unwrap();
            assert_eq!(input.len(), 3 * 4);
            for row in 0..3 {
                let g0 = &g[row * 9..row * 9 + 9];
                let lt: Vec<f64> = (0..6).map(|i| lift[(i % 3) * 2 + i / 3]).collect();
                let expect = mat_mul(&mat_mul(&lt, g0, 2, 3, 3), &lift, 2, 3, 2);
                assert!(max_abs_diff(&input[row * 4..row * 4 + 4], &expect) < 1e-10);
            }
        }
    }
}

/// `v(x) = A·x` exactly: ReLU units that stay active (`W1 = I`, `b1 = 8`) and
/// `b2 = −A·b1`, with `A = [[−0.5, −1], [1, −0.5]]` (all exact in f32), so the flow over
/// time 1 is `exp(A) = e^{−1/2}·R(1)`.
fn linear_field_flow(integrator: Integrator, steps: usize) -> Flow {
    let cfg = FlowConfig {
        in_dim: 2,
        classes: 2,
        dim: 2,
        hidden: 2,
        steps,
        h: 1.0 / steps as f32,
        weights: Weights::Shared,
        form: Form::C1,
        integrator,
        activation: Activation::Relu,
    };
    let layout = Layout::new(&cfg);
    let mut p = vec![0.0f32; layout.total()];
    let fld = layout.fields[0];
    let a = [-0.5f32, -1.0, 1.0, -0.5];
    p[fld.l1.w..fld.l1.w + 4].copy_from_slice(&[1.0, 0.0, 0.0, 1.0]);
    p[fld.l1.b..fld.l1.b + 2].copy_from_slice(&[8.0, 8.0]);
    p[fld.l2.w..fld.l2.w + 4].copy_from_slice(&a);
    p[fld.l2.b..fld.l2.b + 2].copy_from_slice(&[-8.0 * (a[0] + a[1]), -8.0 * (a[2] + a[3])]);
    Flow::from_parts(cfg, layout, p).unwrap()
}

/// `min_det_j` of a contracting, Lipschitz-constrained shared flow at 32 steps came out
/// as −3e-19: the determinant of the chained Jacobian, whose columns had become parallel to
/// working precision. Per-step determinants multiply to the exact, positive value.
#[test]
fn analysis_a_contracting_flow_had_a_rounding_noise_determinant_of_either_sign() {
    let mut flow = linear_field_flow(Integrator::Euler, 32);
    let (layout, mut cfg) = (flow.layout().clone(), flow.config().clone());
    cfg.h = 1.0;
    // I + A = R·diag(1, 0.1) with R a rotation by 0.3: one direction contracts 10× per step.
    let (c, s) = (0.3f32.cos(), 0.3f32.sin());
    let m = [c, -0.1 * s, s, 0.1 * c];
    let a = [m[0] - 1.0, m[1], m[2], m[3] - 1.0];
    let mut p = flow.params().to_vec();
    let fld = layout.fields[0];
    p[fld.l2.w..fld.l2.w + 4].copy_from_slice(&a);
    p[fld.l2.b..fld.l2.b + 2].copy_from_slice(&[-8.0 * (a[0] + a[1]), -8.0 * (a[2] + a[3])]);
    flow = Flow::from_parts(cfg, layout, p).unwrap();
    let step_det =
        f64::from(1.0 + a[0]) * f64::from(1.0 + a[3]) - f64::from(a[1]) * f64::from(a[2]);
    let want = step_det.powi(32);
    for d in flow.jacobian_dets(&[0.5, -0.25, 1.0, 1.0]).unwrap() {
        assert!(d > 0.0 && ((d - want) / want).abs() < 1e-9, "{d} vs {want}");
    }
}

#[test]
fn analysis_integrators_converge_at_their_order_on_a_linear_field() {
    let x = [1.0f32, 0.5, -2.0, 1.0, 0.25, -3.0];
    let exact = |p: &[f32]| {
        let (c, s, e) = (1f64.cos(), 1f64.sin(), (-0.5f64).exp());
        let (a, b) = (f64::from(p[0]), f64::from(p[1]));
        [e * (c * a - s * b), e * (s * a + c * b)]
    };
    for (integrator, ratio) in [
        (Integrator::Euler, 2.0),
        (Integrator::Midpoint, 4.0),
        (Integrator::Rk4, 16.0),
    ] {
        let errors: Vec<f64> = [8, 16, 32]
            .into_iter()
            .map(|n| {
                let trace = linear_field_flow(integrator, n).trace(&x).unwrap();
                (0..3)
                    .map(|row| dist(trace.state(n, row), &exact(&x[row * 2..row * 2 + 2])))
                    .fold(0.0, f64::max)
            })
            .collect();
        for w in errors.windows(2) {
            let r = w[0] / w[1];
            assert!(
                (r / ratio - 1.0).abs() < 0.15,
                "{integrator:?}: errors {errors:?}, ratio {r}"
            );
        }
        // The analytic Jacobian of a linear flow is its matrix.
        let jac = linear_field_flow(integrator, 32)
            .flow_jacobians(&x)
            .unwrap();
        let e = (-0.5f64).exp();
        let expect = [
            e * 1f64.cos(),
            -e * 1f64.sin(),
            e * 1f64.sin(),
            e * 1f64.cos(),
        ];
        assert!(max_abs_diff(&jac[..4], &expect) < 2.0 * errors[2] + 1e-12);
    }
}

#[test]
fn analysis_inverse_errors() {
    let x = points(6, 2, 4, 1.5);
    let shared = |steps: usize| {
        let mut cfg = config(Form::C1, Integrator::Euler, Weights::Shared, 2);
        cfg.steps = steps;
        cfg.h = 1.0 / steps as f32;
        flow(cfg, 21, 0.7)
    };
    let backward: Vec<f64> = [4, 8, 16]
        .into_iter()
        .map(|n| shared(n).inverse_errors(&x).unwrap().inverse.unwrap())
        .collect();
    assert!(backward[0] < 0.1, "{backward:?}");
    for w in backward.windows(2) {
        let r = w[0] / w[1];
        assert!(
            (1.7..2.3).contains(&r),
            "backward flow error is O(h): {backward:?}"
        );
    }
    for n in [4, 8, 16] {
        let fp = shared(n).inverse_errors(&x).unwrap().fixed_point.unwrap();
        assert!(fp < 1e-9, "{fp}");
    }
    // The backward flow of a shared field is only the ODE's inverse: its error is of the
    // integrator's order (h = 1/4 here), while fixed-point inversion is exact.
    let mut backward = Vec::new();
    for integrator in [Integrator::Midpoint, Integrator::Rk4] {
        let f = flow(config(Form::C1, integrator, Weights::Unshared, 2), 5, 1.0);
        let e = f.inverse_errors(&x).unwrap().inverse.unwrap();
        assert!(e < 1e-9, "{integrator:?}: {e}");
        let f = flow(config(Form::C1, integrator, Weights::Shared, 2), 5, 1.0);
        assert!(f.inverse_errors(&x).unwrap().fixed_point.unwrap() < 1e-9);
        backward.push(f.inverse_errors(&x).unwrap().inverse.unwrap());
    }
    assert!(
        backward[1] > 1e-10 && backward[0] > 100.0 * backward[1],
        "{backward:?}"
    );
    for weights in [Weights::Shared, Weights::Unshared] {
        let f = flow(config(Form::C2, Integrator::Euler, weights, 2), 8, 2.0);
        let e = f.inverse_errors(&x).unwrap().inverse.unwrap();
        assert!(e < 1e-12, "C2: {e}");
        let f = flow(config(Form::C0, Integrator::Euler, weights, 2), 8, 2.0);
        assert_eq!(f.inverse_errors(&x).unwrap().inverse, None);
        assert_eq!(f.inverse_errors(&x).unwrap().fixed_point, None);
    }
    // A step that is not a contraction's inverse diverges to a large or infinite error.
    let mut cfg = config(Form::C1, Integrator::Euler, Weights::Unshared, 2);
    cfg.h = 20.0;
    let e = flow(cfg, 3, 3.0)
        .inverse_errors(&x)
        .unwrap()
        .inverse
        .unwrap();
    assert!(e > 1e-3, "{e}");
}

#[test]
fn analysis_refined_flows() {
    let x = points(5, 2, 6, 1.5);
    let mut cfg = config(Form::C1, Integrator::Euler, Weights::Shared, 2);
    cfg.steps = 8;
    cfg.h = 0.125;
    let f = flow(cfg.clone(), 9, 2.0);
    let r = f.refined();
    let rr = r.refined();
    assert_eq!((r.config().steps, r.config().h), (16, 0.0625));
    assert_eq!(r.params(), f.params());
    let (tf, tr, trr) = (
        f.trace(&x).unwrap(),
        r.trace(&x).unwrap(),
        rr.trace(&x).unwrap(),
    );
    let gap = |a: &Trace, b: &Trace, m: usize| {
        (0..=8)
            .flat_map(|k| (0..5).map(move |row| (k, row)))
            .map(|(k, row)| dist(a.state(k * m, row), b.state(2 * k * m, row)))
            .fold(0.0, f64::max)
    };
    let (g1, g2) = (gap(&tf, &tr, 1), gap(&tr, &trr, 2));
    assert!(g1 > 1e-4 && g1 < 0.2, "{g1}");
    assert!((0.4..0.6).contains(&(g2 / g1)), "{g1} {g2}");

    // Unshared: field k is duplicated into fields 2k and 2k + 1.
    cfg.weights = Weights::Unshared;
    let f = flow(cfg.clone(), 9, 2.0);
    let r = f.refined();
    let field_len = {
        let fl = f.layout().fields[0];
        fl.l1.out * fl.l1.inp + fl.l1.out + fl.l2.out * fl.l2.inp + fl.l2.out
    };
    assert_eq!(r.num_params(), f.num_params() + 8 * field_len);
    assert_eq!(r.layout().fields.len(), 16);
    for (i, to) in r.layout().fields.iter().enumerate() {
        let from = f.layout().fields[i / 2];
        assert_eq!(to.l1.w(r.params()), from.l1.w(f.params()));
        assert_eq!(to.l2.b(r.params()), from.l2.b(f.params()));
    }
    assert_eq!(r.layout().head.w(r.params()), f.layout().head.w(f.params()));
    let (tf, tr) = (f.trace(&x).unwrap(), r.trace(&x).unwrap());
    let g = gap(&tf, &tr, 1);
    assert!(g > 1e-4 && g < 0.2, "{g}");

    // C0: each layer applied twice, h unchanged.
    let c0 = flow(
        config(Form::C0, Integrator::Euler, Weights::Unshared, 2),
        4,
        2.0,
    );
    let r = c0.refined();
    assert_eq!((r.config().steps, r.config().h), (8, 0.25));
    let net = c0.net64();
    let tr = r.trace(&x).unwrap();
    let x0 = net.lift(&x[..2]);
    let twice = net.v(net.field(0), &net.v(net.field(0), &x0));
    assert!(max_abs_diff(tr.state(2, 0), &twice) < 1e-12);
}

#[test]
fn analysis_with_integrator() {
    let f = flow(
        config(Form::C1, Integrator::Euler, Weights::Shared, 2),
        1,
        1.0,
    );
    let g = f.with_integrator(Integrator::Rk4).unwrap();
    assert_eq!(g.config().integrator, Integrator::Rk4);
    assert_eq!(g.params(), f.params());
    let x = points(2, 2, 1, 1.0);
    assert_ne!(f.trace(&x).unwrap(), g.trace(&x).unwrap());
    for form in [Form::C0, Form::C2] {
        let f = flow(config(form, Integrator::Euler, Weights::Shared, 2), 1, 1.0);
        assert!(matches!(
            f.with_integrator(Integrator::Midpoint),
            Err(NnError::InvalidConfig(_))
        ));
    }
}

#[test]
fn analysis_metric_convergence_separates_c1_from_c0() {
    let x = points(20, 2, 8, 1.5);
    let mut cfg = config(Form::C1, Integrator::Euler, Weights::Unshared, 2);
    cfg.steps = 16;
    cfg.h = 1.0 / 16.0;
    let c1 = flow(cfg.clone(), 2, 1.5).metric_convergence(&x).unwrap();
    cfg.form = Form::C0;
    let c0 = flow(cfg.clone(), 2, 1.5).metric_convergence(&x).unwrap();
    assert!(c1 < 0.1, "{c1}");
    assert!(c0 > 10.0 * c1, "{c0} vs {c1}");
    // Relative to the larger norm: bounded by 2 (triangle inequality) …
    assert!(c0 <= 2.0, "{c0}");
    // … and defined when both metrics vanish (a c0 net with zero weights is constant).
    assert_eq!(flow(cfg, 2, 0.0).metric_convergence(&x).unwrap(), 0.0);
}

#[test]
fn analysis_step_norm() {
    let f = flow(
        config(Form::C1, Integrator::Euler, Weights::Shared, 3),
        1,
        1.0,
    );
    let x = points(4, 3, 3, 1.0);
    let t = f.trace(&x).unwrap();
    let mut sum = 0.0;
    for l in 0..4 {
        for row in 0..4 {
            sum += dist(t.state(l + 1, row), t.state(l, row));
        }
    }
    assert!((f.step_norm(&x).unwrap() - sum / 16.0).abs() < 1e-15);
}

#[test]
fn analysis_det_of_hand_worked_matrices() {
    assert_eq!(det(&[2.0, 1.0, 1.0, 2.0], 2), 3.0);
    // Needs a row swap.
    assert_eq!(det(&[0.0, 1.0, 1.0, 0.0], 2), -1.0);
    assert_eq!(det(&[1.0, 2.0, 2.0, 4.0], 2), 0.0);
    let m = [2.0, -1.0, 0.0, -1.0, 2.0, -1.0, 0.0, -1.0, 2.0];
    assert!((det(&m, 3) - 4.0).abs() < 1e-14);
    let m = [0.0, 2.0, 1.0, 3.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    // Cofactors along the second row: −3·(2·1 − 1·1) = −3.
    assert!((det(&m, 3) + 3.0).abs() < 1e-14);
}

#[test]
fn analysis_sym_eigen_of_hand_worked_matrices() {
    let (vals, vecs) = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
    assert!(max_abs_diff(&vals, &[1.0, 3.0]) < 1e-14);
    let r = std::f64::consts::FRAC_1_SQRT_2;
    // Columns (1, −1)/√2 and (1, 1)/√2, up to sign.
    assert!((vecs[0] * vecs[2] + r * r).abs() < 1e-14, "{vecs:?}");
    assert!((vecs[1] * vecs[3] - r * r).abs() < 1e-14, "{vecs:?}");
    let m = [2.0, -1.0, 0.0, -1.0, 2.0, -1.0, 0.0, -1.0, 2.0];
    let (vals, _) = sym_eigen(&m, 3);
    let s = 2f64.sqrt();
    assert!(max_abs_diff(&vals, &[2.0 - s, 2.0, 2.0 + s]) < 1e-14);
    let (vals, vecs) = sym_eigen(&[5.0, 0.0, 0.0, -1.0], 2);
    assert_eq!(vals, [-1.0, 5.0]);
    assert_eq!(vecs, [0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn analysis_sym_eigen_recovers_random_spd_matrices() {
    let mut rng = SplitMix64::new(17, 5);
    for d in [2, 3, 5, 8] {
        // An orthogonal V by Gram–Schmidt on random columns (stored as rows of `q`).
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < d {
            let mut c: Vec<f64> = (0..d).map(|_| f64::from(rng.uniform(1.0))).collect();
            for b in &q {
                let dot: f64 = c.iter().zip(b).map(|(a, b)| a * b).sum();
                c.iter_mut().zip(b).for_each(|(a, b)| *a -= dot * b);
            }
            let n = c.iter().map(|a| a * a).sum::<f64>().sqrt();
            if n > 0.1 {
                q.push(c.into_iter().map(|a| a / n).collect());
            }
        }
        let lambda: Vec<f64> = (0..d).map(|i| 0.5 + i as f64 * 0.75).collect();
        let mut m = vec![0.0; d * d];
        for (l, col) in lambda.iter().zip(&q) {
            for i in 0..d {
                for j in 0..d {
                    m[i * d + j] += l * col[i] * col[j];
                }
            }
        }
        let (vals, vecs) = sym_eigen(&m, d);
        assert!(max_abs_diff(&vals, &lambda) < 1e-12, "{vals:?}");
        // Each returned column is ± the planted one, and V·diag(λ)·Vᵀ rebuilds m.
        for (k, col) in q.iter().enumerate() {
            let dot: f64 = (0..d).map(|i| vecs[i * d + k] * col[i]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-12);
        }
        let mut back = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                back[i * d + j] = (0..d)
                    .map(|k| vecs[i * d + k] * vals[k] * vecs[j * d + k])
                    .sum();
            }
        }
        assert!(max_abs_diff(&back, &m) < 1e-12);
        let prod: f64 = lambda.iter().product();
        assert!((det(&m, d) - prod).abs() < 1e-11 * prod);
    }
}

#[test]
fn analysis_metric_stats_of_hand_worked_matrices() {
    let g = [1.0, 0.0, 0.0, 4.0, 2.0, 1.0, 1.0, 2.0];
    let s = metric_stats(&g, 2);
    assert!((s.det_mean - 3.5).abs() < 1e-14);
    assert!((s.det_max - 4.0).abs() < 1e-14);
    assert!((s.eig_mean - 9.0 / 4.0).abs() < 1e-14);
    assert!((s.eig_max - 4.0).abs() < 1e-14);
    assert!((s.eig_min_mean - 1.0).abs() < 1e-14);
    let (cond_mean, cond_max) = s.cond.unwrap();
    assert!((cond_mean - 3.5).abs() < 1e-14 && (cond_max - 4.0).abs() < 1e-14);
    assert_eq!(s.singular_frac, 0.0);
    // diag(0, 1) and the rank-one [[1, 1], [1, 1]] are singular: counted apart, so the
    // condition number summarises the regular diag(1, 4) alone.
    let s = metric_stats(
        &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 4.0],
        2,
    );
    assert!((s.singular_frac - 2.0 / 3.0).abs() < 1e-14);
    assert_eq!(s.cond, Some((4.0, 4.0)));
    let s = metric_stats(&[0.0, 0.0, 0.0, 1.0], 2);
    assert_eq!((s.cond, s.singular_frac), (None, 1.0));
    assert!(metric_stats(&[], 3).det_mean.is_nan());
}

#[test]
fn analysis_grid_over_a_padded_bounding_box() {
    let g = grid_over(&[0.0, 0.0, 2.0, 1.0, 1.0, 0.5], 3, 2, 0.5);
    assert_eq!((g.nx, g.ny), (3, 2));
    assert_eq!(
        g.points,
        [
            -1.0, -0.5, 1.0, -0.5, 3.0, -0.5, -1.0, 1.5, 1.0, 1.5, 3.0, 1.5
        ]
    );
    // One point: a box of size 1 per side around it.
    let g = grid_over(&[1.0, 1.0], 2, 1, 0.5);
    assert_eq!(g.points, [0.5, 1.0, 1.5, 1.0]);
}
