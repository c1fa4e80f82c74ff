//! Crate-level tests: gradients against finite differences, the two backends against each
//! other, determinism, training, model files, errors.

use std::ops::ControlFlow;

use dfdx::tensor::Cpu;

use crate::cpu::{Net, Workspace, shards};
use crate::params::Layout;
use crate::*;

fn cfg(weights: Weights, in_dim: usize, dim: usize) -> FlowConfig {
    FlowConfig {
        in_dim,
        classes: 3,
        dim,
        hidden: 5,
        steps: 3,
        h: 1.0 / 3.0,
        weights,
        form: Form::C1,
        integrator: Integrator::Euler,
        activation: Activation::Tanh,
    }
}

/// `n` points in `R^in_dim` with labels from a fixed nonlinear rule.
fn toy_data(n: usize, in_dim: usize, classes: usize, seed: u64) -> Dataset {
    let mut g = crate::rng::SplitMix64::new(seed, 99);
    let x: Vec<f32> = (0..n * in_dim).map(|_| g.uniform(1.5)).collect();
    let y = x
        .chunks(in_dim)
        .map(|r| {
            let s: f32 = r
                .iter()
                .enumerate()
                .map(|(i, v)| v * (i as f32 + 1.0))
                .sum();
            ((s.sin() + 1.0) * 0.5 * classes as f32).min(classes as f32 - 1.0) as u32
        })
        .collect();
    Dataset {
        x,
        y,
        dim: in_dim,
        classes,
    }
}

/// Two well-separated blobs in the plane.
fn blobs(n: usize, seed: u64) -> Dataset {
    let mut g = crate::rng::SplitMix64::new(seed, 7);
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 2) as u32;
        let centre = if c == 0 { -1.0 } else { 1.0 };
        x.push(centre + g.uniform(0.6));
        x.push(-centre + g.uniform(0.6));
        y.push(c);
    }
    Dataset {
        x,
        y,
        dim: 2,
        classes: 2,
    }
}

/// Every form × integrator the config accepts, with both activations.
fn variants() -> impl Iterator<Item = (Form, Integrator, Activation)> {
    let forms = [
        (Form::C0, Integrator::Euler),
        (Form::C1, Integrator::Euler),
        (Form::C1, Integrator::Midpoint),
        (Form::C1, Integrator::Rk4),
        (Form::C2, Integrator::Euler),
    ];
    forms.into_iter().flat_map(|(f, i)| {
        [Activation::Tanh, Activation::Relu]
            .into_iter()
            .map(move |a| (f, i, a))
    })
}

fn variant(
    base: &FlowConfig,
    (form, integrator, activation): (Form, Integrator, Activation),
) -> FlowConfig {
    FlowConfig {
        form,
        integrator,
        activation,
        ..base.clone()
    }
}

/// The logits of one input row in f64, written from `FlowConfig`'s definition independently of
/// both backends (plain loops, exact `tanh`), and the smallest |pre-activation| met when σ is
/// relu (how far the input is from a kink of the loss).
fn reference_logits(cfg: &FlowConfig, layout: &Layout, p: &[f64], row: &[f64]) -> (Vec<f64>, f64) {
    let lin = |l: &crate::params::Dense, v: &[f64]| -> Vec<f64> {
        (0..l.out)
            .map(|o| {
                p[l.b + o]
                    + (0..l.inp)
                        .map(|i| p[l.w + o * l.inp + i] * v[i])
                        .sum::<f64>()
            })
            .collect()
    };
    let mut min_z = f64::INFINITY;
    let mut v = |k: usize, u: &[f64]| -> Vec<f64> {
        let f = layout.field(cfg, k);
        let z = lin(&f.l1, u);
        let a: Vec<f64> = match cfg.activation {
            Activation::Tanh => z.iter().map(|z| z.tanh()).collect(),
            Activation::Relu => {
                min_z = z.iter().fold(min_z, |m, z| m.min(z.abs()));
                z.iter().map(|z| z.max(0.0)).collect()
            }
        };
        lin(&f.l2, &a)
    };
    // a + s·b
    let axpy = |a: &[f64], s: f64, b: &[f64]| -> Vec<f64> {
        a.iter().zip(b).map(|(a, b)| a + s * b).collect()
    };
    let h = cfg.h as f64;
    let x0 = match &layout.lift {
        Some(l) => lin(l, row),
        None => row.to_vec(),
    };
    let (mut prev, mut x) = (x0.clone(), x0);
    for k in 0..cfg.steps {
        let next = match (cfg.form, cfg.integrator) {
            (Form::C0, _) => v(k, &x),
            (Form::C1, Integrator::Euler) => {
                let v1 = v(k, &x);
                axpy(&x, h, &v1)
            }
            (Form::C1, Integrator::Midpoint) => {
                let v1 = v(k, &x);
                let v2 = v(k, &axpy(&x, h / 2.0, &v1));
                axpy(&x, h, &v2)
            }
            (Form::C1, Integrator::Rk4) => {
                let k1 = v(k, &x);
                let k2 = v(k, &axpy(&x, h / 2.0, &k1));
                let k3 = v(k, &axpy(&x, h / 2.0, &k2));
                let k4 = v(k, &axpy(&x, h, &k3));
                let phi: Vec<f64> = (0..x.len())
                    .map(|i| (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]) / 6.0)
                    .collect();
                axpy(&x, h, &phi)
            }
            (Form::C2, _) => {
                let vk = v(k, &x);
                (0..x.len())
                    .map(|i| 2.0 * x[i] - prev[i] + h * h * vk[i])
                    .collect()
            }
        };
        prev = std::mem::replace(&mut x, next);
    }
    (lin(&layout.head, &x), min_z)
}

/// The summed cross-entropy in f64 (see [`reference_logits`]), for finite differences.
fn reference_loss(cfg: &FlowConfig, layout: &Layout, p: &[f64], x: &[f32], y: &[u32]) -> f64 {
    let mut total = 0.0;
    for (row, &label) in x.chunks(cfg.in_dim).zip(y) {
        let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let (logits, _) = reference_logits(cfg, layout, p, &row);
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        total += lse - logits[label as usize];
    }
    total
}

/// The smallest |relu pre-activation| over `data` (∞ for tanh).
fn min_relu_margin(cfg: &FlowConfig, layout: &Layout, p: &[f32], data: &Dataset) -> f64 {
    let q: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    data.x
        .chunks(cfg.in_dim)
        .map(|r| {
            let r: Vec<f64> = r.iter().map(|&v| v as f64).collect();
            reference_logits(cfg, layout, &q, &r).1
        })
        .fold(f64::INFINITY, f64::min)
}

fn fd_gradient(cfg: &FlowConfig, layout: &Layout, p: &[f32], data: &Dataset) -> Vec<f64> {
    let mut q: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    (0..p.len())
        .map(|i| {
            let orig = q[i];
            q[i] = orig + FD_EPS;
            let up = reference_loss(cfg, layout, &q, &data.x, &data.y);
            q[i] = orig - FD_EPS;
            let down = reference_loss(cfg, layout, &q, &data.x, &data.y);
            q[i] = orig;
            (up - down) / (2.0 * FD_EPS)
        })
        .collect()
}

const FD_EPS: f64 = 1e-5;

/// The CPU backend's loss sum and gradient of the summed loss on `data` (one batch).
fn cpu_gradient(cfg: &FlowConfig, layout: &Layout, p: &[f32], data: &Dataset) -> (f64, Vec<f32>) {
    crate::cpu::with_cpu_trainer(cfg, layout, p.to_vec(), data.len(), 2, None, |t| {
        let batch = crate::train::Minibatch {
            x: data.x.clone(),
            y: data.y.clone(),
        };
        let mut grad = Vec::new();
        let loss = ablate_nn::Model::loss_and_grad(t, &batch, &mut grad).unwrap();
        assert_eq!(grad, t.gradient());
        // The trainer scales by 1/batch; undo it to compare with the summed loss.
        let g = grad.iter().map(|v| v * data.len() as f32).collect();
        (loss.sum, g)
    })
    .unwrap()
}

fn assert_close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    let norm: f64 = want.iter().map(|v| v * v).sum::<f64>().sqrt();
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        err <= rel * norm,
        "{what}: relative error {} > {rel}",
        err / norm
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 + 10.0 * rel * w.abs(),
            "{what}: component {i}: {g} vs {w}"
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    for weights in [Weights::Shared, Weights::Unshared] {
        for (in_dim, dim) in [(2, 4), (3, 3)] {
            for v in variants() {
                let cfg = variant(&cfg(weights, in_dim, dim), v);
                let layout = Layout::new(&cfg);
                assert_eq!(layout.lift.is_some(), in_dim != dim);
                let p = layout.init(11);
                let what = format!("{weights:?} {in_dim}->{dim} {v:?}");
                // Central differences are exact only where the loss is smooth: every relu
                // pre-activation must stay on its side of 0 within ±FD_EPS of each parameter
                // (z moves by about FD_EPS times a gain of order 1–10). So the inputs are drawn
                // until none is within 100·FD_EPS of a kink (tanh takes the first draw).
                let data = (3..100)
                    .map(|seed| toy_data(7, in_dim, cfg.classes, seed))
                    .find(|d| min_relu_margin(&cfg, &layout, &p, d) > 100.0 * FD_EPS)
                    .unwrap_or_else(|| panic!("{what}: every draw is near a relu kink"));
                let fd = fd_gradient(&cfg, &layout, &p, &data);

                let (loss, g_cpu) = cpu_gradient(&cfg, &layout, &p, &data);
                assert_close(&g_cpu, &fd, 2e-5, &format!("cpu {what}"));
                let reference = reference_loss(
                    &cfg,
                    &layout,
                    &p.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                    &data.x,
                    &data.y,
                );
                assert!(
                    (loss - reference).abs() < 1e-5 * reference.abs(),
                    "{what}: {loss} vs {reference}"
                );

                let (stats, g_tensor) = crate::tensor::loss_and_gradient(
                    &Cpu::default(),
                    &cfg,
                    &layout,
                    &p,
                    &data.x,
                    &data.y,
                )
                .unwrap();
                assert_close(&g_tensor, &fd, 2e-5, &format!("tensor {what}"));
                assert!((stats.loss_sum - reference).abs() < 1e-5 * reference.abs());
            }
        }
    }
}

#[test]
fn backends_agree_on_every_form_integrator_and_activation() {
    for weights in [Weights::Shared, Weights::Unshared] {
        for (in_dim, dim) in [(2, 4), (2, 2)] {
            for v in variants() {
                let cfg = variant(&cfg(weights, in_dim, dim), v);
                let what = format!("{weights:?} {in_dim}->{dim} {v:?}");
                let data = toy_data(120, in_dim, 3, 5);
                // Decay and the projection on, so their two implementations are compared too.
                let train = TrainConfig {
                    epochs: 2,
                    batch: 40,
                    lr: 0.01,
                    seed: 4,
                    weight_decay: 0.5,
                    lipschitz: Some(0.3),
                };
                let flows: Vec<Flow> = [Backend::Cpu, Backend::Dfdx]
                    .into_iter()
                    .map(|backend| {
                        let exec = ExecOptions {
                            threads: 1,
                            backend,
                        };
                        train_flow_with(&cfg, &train, &data, &exec, &mut NoObserver).unwrap()
                    })
                    .collect();
                let (a, b) = (&flows[0], &flows[1]);
                let max_diff = a
                    .params()
                    .iter()
                    .zip(b.params())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(max_diff < 1e-4, "{what}: parameters differ by {max_diff}");
                let la = a.predict_logits(&data.x).unwrap();
                let lb = a.predict_logits_on(&Cpu::default(), &data.x).unwrap();
                let worst = la
                    .iter()
                    .zip(&lb)
                    .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                    .fold(0.0, f32::max);
                assert!(worst < 1e-5, "{what}: logits differ by {worst}");
            }
        }
    }
}

#[test]
fn cpu_backend_equals_tensor_backend() {
    let cfg = cfg(Weights::Unshared, 2, 4);
    let data = toy_data(300, 2, 3, 5);
    let train = TrainConfig {
        epochs: 3,
        batch: 150,
        lr: 0.01,
        seed: 4,
        weight_decay: 0.0,
        lipschitz: None,
    };
    let mut reports = [Vec::new(), Vec::new()];
    let mut flows = Vec::new();
    for (i, backend) in [Backend::Cpu, Backend::Dfdx].into_iter().enumerate() {
        let exec = ExecOptions {
            threads: 2,
            backend,
        };
        let mut obs = Recorder::default();
        flows.push(train_flow_with(&cfg, &train, &data, &exec, &mut obs).unwrap());
        reports[i] = obs.reports;
    }
    let (a, b) = (&flows[0], &flows[1]);
    let max_diff = a
        .params()
        .iter()
        .zip(b.params())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(max_diff < 1e-4, "parameters differ by {max_diff}");
    for (ra, rb) in reports[0].iter().zip(&reports[1]) {
        assert!((ra.loss - rb.loss).abs() < 1e-5, "{ra:?} vs {rb:?}");
        assert_eq!(ra.epoch, rb.epoch);
    }
    let la = a.predict_logits(&data.x[..40]).unwrap();
    let lb = a.predict_logits_on(&Cpu::default(), &data.x[..40]).unwrap();
    let worst = la
        .iter()
        .zip(&lb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "logits differ by {worst}");
}

#[derive(Default)]
struct Recorder {
    reports: Vec<EpochLog<Accuracy>>,
}

impl Observer<Accuracy> for Recorder {
    fn on_epoch(&mut self, r: &EpochLog<Accuracy>) -> ControlFlow<()> {
        self.reports.push(*r);
        ControlFlow::Continue(())
    }
}

#[test]
fn training_is_deterministic_and_thread_count_independent() {
    let cfg = cfg(Weights::Shared, 2, 4);
    let data = toy_data(400, 2, 3, 1);
    let train = |seed| TrainConfig {
        epochs: 2,
        batch: 300, // three shards
        lr: 0.01,
        seed,
        weight_decay: 0.0,
        lipschitz: None,
    };
    let run = |seed, threads| {
        let mut obs = Recorder::default();
        let exec = ExecOptions {
            threads,
            backend: Backend::Cpu,
        };
        let flow = train_flow_with(&cfg, &train(seed), &data, &exec, &mut obs).unwrap();
        (flow, obs.reports)
    };
    let (a, ra) = run(9, 1);
    let (b, rb) = run(9, 1);
    let (c, rc) = run(9, 3);
    assert_eq!(a.params(), b.params());
    assert_eq!(ra, rb);
    assert_eq!(a.params(), c.params());
    assert_eq!(ra, rc);
    let (d, _) = run(10, 1);
    assert_ne!(a.params(), d.params());
    assert_eq!(ra.len(), 2);
    assert_eq!((ra[1].epoch, ra[1].epochs), (2, 2));

    // Every form, integrator and activation, with decay and the projection: bit-identical
    // whatever the thread count.
    for v in variants() {
        let cfg = variant(&cfg, v);
        let train = TrainConfig {
            epochs: 1,
            weight_decay: 0.1,
            lipschitz: Some(0.2),
            ..train(3)
        };
        let run = |threads| {
            let exec = ExecOptions {
                threads,
                backend: Backend::Cpu,
            };
            train_flow_with(&cfg, &train, &data, &exec, &mut NoObserver).unwrap()
        };
        assert_eq!(run(1).params(), run(3).params(), "{v:?}");
    }
}

#[test]
fn training_separates_blobs() {
    for weights in [Weights::Shared, Weights::Unshared] {
        let cfg = FlowConfig {
            in_dim: 2,
            classes: 2,
            dim: 4,
            hidden: 8,
            steps: 4,
            h: 0.25,
            weights,
            form: Form::C1,
            integrator: Integrator::Euler,
            activation: Activation::Tanh,
        };
        let data = blobs(200, 1);
        let train = TrainConfig {
            epochs: 30,
            batch: 32,
            lr: 0.01,
            seed: 0,
            weight_decay: 0.0,
            lipschitz: None,
        };
        let mut obs = Recorder::default();
        let flow = train_flow(&cfg, &train, &data, &mut obs).unwrap();
        let first = &obs.reports[0];
        let last = obs.reports.last().unwrap();
        assert!(last.loss < 0.5 * first.loss, "{first:?} -> {last:?}");
        assert!(last.stats.acc() > 0.95, "{last:?}");
        let test = flow.evaluate(&blobs(100, 2)).unwrap();
        assert!(test.acc > 0.95, "{test:?}");
        assert_eq!(test.n, 100);
    }
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for weights in [Weights::Shared, Weights::Unshared] {
        let cfg = cfg(weights, 2, 4);
        let flow = Flow::init(&cfg, 3).unwrap();
        let path = dir.path().join("model.safetensors");
        flow.save(&path).unwrap();
        let back = Flow::load(&path).unwrap();
        assert_eq!(back, flow);
        let x = toy_data(20, 2, 3, 0).x;
        assert_eq!(
            back.predict_logits(&x).unwrap(),
            flow.predict_logits(&x).unwrap()
        );
        // Tensor names a PyTorch user can map.
        let names: Vec<String> = back.param_shapes().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "lift.weight");
        assert_eq!(names.last().unwrap(), "head.bias");
    }
}

/// #16: the metadata went through a `HashMap`, so two saves of one model could differ.
#[test]
fn model_files_are_byte_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::init(&cfg(Weights::Unshared, 3, 4), 7).unwrap();
    let first = dir.path().join("first.safetensors");
    flow.save(&first).unwrap();
    let bytes = std::fs::read(&first).unwrap();
    for i in 0..16 {
        let path = dir.path().join(format!("again{i}.safetensors"));
        flow.save(&path).unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes, "save {i} differs");
    }
    // A valid safetensors file for other readers: the crate's own parser accepts it, with
    // every tensor.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), flow.param_shapes().len());
    assert_eq!(Flow::load(&first).unwrap(), flow);
}

#[test]
fn loading_a_damaged_file_is_a_format_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::init(&cfg(Weights::Shared, 2, 4), 0).unwrap();
    let good = dir.path().join("good.safetensors");
    flow.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a model").unwrap();
    let foreign = dir.path().join("foreign.safetensors");
    let data = [0u8; 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    std::fs::write(
        &foreign,
        safetensors::serialize([("w", view)], &None).unwrap(),
    )
    .unwrap();

    for path in [&truncated, &garbage, &foreign] {
        match Flow::load(path) {
            Err(NnError::Format { path: p, .. }) => assert_eq!(&p, path),
            other => panic!("{}: {other:?}", path.display()),
        }
        let msg = Flow::load(path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    let missing = dir.path().join("missing.safetensors");
    assert!(matches!(Flow::load(&missing), Err(NnError::Io { path, .. }) if path == missing));
}

#[test]
fn divergence_is_reported_with_epoch_and_batch() {
    let cfg = cfg(Weights::Shared, 2, 4);
    let data = toy_data(64, 2, 3, 2);
    let train = TrainConfig {
        epochs: 5,
        batch: 16,
        lr: 1e30,
        seed: 0,
        weight_decay: 0.0,
        lipschitz: None,
    };
    for backend in [Backend::Cpu, Backend::Dfdx] {
        let exec = ExecOptions {
            threads: 1,
            backend,
        };
        match train_flow_with(&cfg, &train, &data, &exec, &mut NoObserver) {
            Err(NnError::NonFinite { epoch, batch, .. }) => {
                // The first update throws every weight to ±1e30; the next loss overflows.
                assert_eq!((epoch, batch), (1, 2), "{backend:?}");
            }
            other => panic!("{backend:?}: {other:?}"),
        }
    }
}

#[test]
fn invalid_configs_and_data_are_rejected() {
    let good = cfg(Weights::Shared, 2, 4);
    let data = toy_data(10, 2, 3, 0);
    let train = TrainConfig {
        epochs: 1,
        batch: 4,
        lr: 0.01,
        seed: 0,
        weight_decay: 0.0,
        lipschitz: None,
    };
    let config_err = |c: &FlowConfig, t: &TrainConfig, d: &Dataset| {
        train_flow(c, t, d, &mut NoObserver).unwrap_err()
    };
    for bad in [
        FlowConfig {
            steps: 0,
            ..good.clone()
        },
        FlowConfig {
            hidden: 0,
            ..good.clone()
        },
        FlowConfig {
            dim: 0,
            ..good.clone()
        },
        FlowConfig {
            h: f32::NAN,
            ..good.clone()
        },
        // C0 and C2 have no integrator.
        FlowConfig {
            form: Form::C2,
            integrator: Integrator::Midpoint,
            ..good.clone()
        },
        FlowConfig {
            form: Form::C0,
            integrator: Integrator::Rk4,
            ..good.clone()
        },
    ] {
        assert!(matches!(
            config_err(&bad, &train, &data),
            NnError::InvalidConfig(_)
        ));
    }
    for bad in [
        TrainConfig {
            batch: 0,
            ..train.clone()
        },
        TrainConfig {
            epochs: 0,
            ..train.clone()
        },
        TrainConfig {
            lr: -1.0,
            ..train.clone()
        },
    ] {
        assert!(matches!(
            config_err(&good, &bad, &data),
            NnError::InvalidConfig(_)
        ));
    }
    let exec = ExecOptions {
        threads: 0,
        backend: Backend::Cpu,
    };
    assert!(matches!(
        train_flow_with(&good, &train, &data, &exec, &mut NoObserver),
        Err(NnError::InvalidConfig(_))
    ));

    let mut label = data.clone();
    label.y[3] = 3;
    let mut short = data.clone();
    short.x.pop();
    let mut nan = data.clone();
    nan.x[5] = f32::NAN;
    let wrong_dim = toy_data(10, 3, 3, 0);
    let empty = Dataset {
        x: vec![],
        y: vec![],
        dim: 2,
        classes: 3,
    };
    for (bad, needle) in [
        (&label, "label 3 of example 3"),
        (&short, "need 20 features, got 19"),
        (&nan, "not finite"),
        (&wrong_dim, "dimension 3"),
        (&empty, "empty"),
    ] {
        match config_err(&good, &train, bad) {
            NnError::InvalidData(msg) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(label.validate().is_err());
    assert!(data.validate().is_ok());
    assert_eq!(data.len(), 10);

    let flow = Flow::init(&good, 0).unwrap();
    assert!(matches!(
        flow.predict_logits(&[1.0, 2.0, 3.0]),
        Err(NnError::InvalidData(_))
    ));
    assert!(matches!(
        flow.evaluate(&label),
        Err(NnError::InvalidData(_))
    ));
}

#[test]
fn cancellation_stops_training() {
    struct StopAfter(usize);
    impl Observer<Accuracy> for StopAfter {
        fn on_epoch(&mut self, r: &EpochLog<Accuracy>) -> ControlFlow<()> {
            if r.epoch >= self.0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    struct Interrupted;
    impl Observer<Accuracy> for Interrupted {
        fn on_epoch(&mut self, _: &EpochLog<Accuracy>) -> ControlFlow<()> {
            ControlFlow::Continue(())
        }
        fn cancelled(&self) -> bool {
            true
        }
    }
    let cfg = cfg(Weights::Shared, 2, 4);
    let data = toy_data(32, 2, 3, 0);
    let train = TrainConfig {
        epochs: 5,
        batch: 8,
        lr: 0.01,
        seed: 0,
        weight_decay: 0.0,
        lipschitz: None,
    };
    assert!(matches!(
        train_flow(&cfg, &train, &data, &mut StopAfter(2)),
        Err(NnError::Cancelled)
    ));
    assert!(matches!(
        train_flow(&cfg, &train, &data, &mut Interrupted),
        Err(NnError::Cancelled)
    ));
}

#[test]
fn num_params_matches_a_hand_count() {
    // lift 2->32: 64 + 32; field: 64*32 + 64 + 32*64 + 32 = 4192; head 32->2: 64 + 2
    let shared = FlowConfig {
        in_dim: 2,
        classes: 2,
        dim: 32,
        hidden: 64,
        steps: 10,
        h: 0.1,
        weights: Weights::Shared,
        form: Form::C1,
        integrator: Integrator::Euler,
        activation: Activation::Tanh,
    };
    let flow = Flow::init(&shared, 0).unwrap();
    assert_eq!(flow.num_params(), 96 + 4192 + 66);
    assert_eq!(flow.params().len(), flow.num_params());
    let unshared = FlowConfig {
        weights: Weights::Unshared,
        ..shared.clone()
    };
    assert_eq!(
        Flow::init(&unshared, 0).unwrap().num_params(),
        96 + 10 * 4192 + 66
    );
    // No lift when dim == in_dim.
    let no_lift = FlowConfig {
        dim: 2,
        hidden: 3,
        ..shared
    };
    assert_eq!(
        Flow::init(&no_lift, 0).unwrap().num_params(),
        (6 + 3 + 6 + 2) + (4 + 2)
    );
}

#[test]
fn init_is_pytorch_linear_uniform() {
    let cfg = cfg(Weights::Unshared, 2, 4);
    let layout = Layout::new(&cfg);
    let p = layout.init(5);
    assert_eq!(p, layout.init(5));
    assert_ne!(p, layout.init(6));
    for slot in layout.store.slots() {
        // PyTorch's default: ±1/√fan_in, fan_in the layer's input width (a weight's last
        // dimension, shared by its bias).
        let fan_in = layout
            .store
            .slots()
            .iter()
            .find(|w| w.name == slot.name.replace(".bias", ".weight"))
            .unwrap()
            .shape[1];
        let bound = 1.0 / (fan_in as f32).sqrt();
        let vals = &p[slot.offset..slot.offset + slot.len()];
        assert!(vals.iter().all(|v| v.abs() <= bound), "{}", slot.name);
    }
}

#[test]
fn shards_cover_the_batch_in_order() {
    for n in [1, 127, 128, 129, 256, 300, 1000] {
        let rs: Vec<_> = shards(n).collect();
        assert_eq!(rs.len(), n.div_ceil(crate::cpu::SHARD_ROWS));
        assert_eq!(rs[0].start, 0);
        assert_eq!(rs.last().unwrap().end, n);
        for w in rs.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(rs.iter().all(|r| r.len() <= crate::cpu::SHARD_ROWS));
    }
}

#[test]
fn evaluation_matches_logits() {
    let cfg = cfg(Weights::Shared, 2, 2);
    let flow = Flow::init(&cfg, 1).unwrap();
    let data = toy_data(600, 2, 3, 4); // several evaluation chunks
    let eval = flow.evaluate(&data).unwrap();
    let logits = flow.predict_logits(&data.x).unwrap();
    let layout = Layout::new(&cfg);
    let reference = reference_loss(
        &cfg,
        &layout,
        &flow.params().iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &data.x,
        &data.y,
    ) / 600.0;
    assert!(
        (eval.loss - reference).abs() < 1e-5,
        "{} vs {reference}",
        eval.loss
    );
    let correct = logits
        .chunks(3)
        .zip(&data.y)
        .filter(|(l, y)| {
            let best = (0..3).fold(0, |b, i| if l[i] > l[b] { i } else { b });
            best == **y as usize
        })
        .count();
    assert_eq!(eval.acc, correct as f64 / 600.0);
    let net = Net {
        cfg: &cfg,
        layout: &layout,
        p: flow.params(),
    };
    let mut ws = Workspace::new(&cfg, &layout, 5, false);
    net.forward(&data.x, 5, &mut ws);
    assert_eq!(ws.logits(5, 3), &logits[..15]);
}

/// The dfdx device path (a CUDA build's evaluation) scores a data set as the CPU kernels do,
/// over more rows than one device pass takes, for every form and integrator.
#[test]
fn evaluation_on_a_device_matches_the_cpu() {
    let dfdx = Runtime::open(&ExecOptions {
        threads: 1,
        backend: Backend::Dfdx,
    })
    .unwrap();
    assert_eq!(dfdx.backend(), Backend::Dfdx);
    let data = toy_data(4500, 2, 3, 8);
    let mut bitwise_equal = 0;
    for v in variants() {
        let cfg = variant(&cfg(Weights::Unshared, 2, 4), v);
        let flow = Flow::init(&cfg, 2).unwrap();
        let cpu = flow.evaluate(&data).unwrap();
        let dev = flow.evaluate_on(&data, &dfdx).unwrap();
        assert!(
            (cpu.loss - dev.loss).abs() < 1e-6 * (1.0 + cpu.loss),
            "{v:?}: loss {} vs {}",
            cpu.loss,
            dev.loss
        );
        assert_eq!((cpu.acc, cpu.n), (dev.acc, dev.n), "{v:?}");
        bitwise_equal += usize::from(cpu.loss.to_bits() == dev.loss.to_bits());
        assert!(flow.evaluate_on(&toy_data(5, 3, 3, 1), &dfdx).is_err());
    }
    // Other arithmetic, so not always to the bit (a simple variant can agree exactly): a device
    // runtime that fell back to the CPU kernels would agree on every one.
    assert!(
        bitwise_equal < variants().count(),
        "{bitwise_equal} of {}",
        variants().count()
    );
}

/// `in_dim = dim = 1`, hidden 1, two steps of `h = 0.5`, relu, no lift: small enough to run by
/// hand. Field 0 is `v(x) = 2·relu(x) + 1` (W1 = 1, b1 = 0, W2 = 2, b2 = 1); the head is
/// `logits = (x_2, 0.5 − x_2)`.
#[test]
fn forms_and_integrators_match_a_hand_worked_example() {
    let base = FlowConfig {
        in_dim: 1,
        classes: 2,
        dim: 1,
        hidden: 1,
        steps: 2,
        h: 0.5,
        weights: Weights::Shared,
        form: Form::C1,
        integrator: Integrator::Euler,
        activation: Activation::Relu,
    };
    let field0 = [1.0, 0.0, 2.0, 1.0];
    let head = [1.0, -1.0, 0.0, 0.5];
    // On x > 0 the field is v(x) = 2x + 1, and one step multiplies x + 1/2 by the integrator's
    // amplification at z = 2h = 1: Euler 1 + z = 2, midpoint 1 + z + z²/2 = 5/2, RK4
    // 1 + z + z²/2 + z³/6 + z⁴/24 = 65/24. On x ≤ 0, v = 1.
    let cases: [(Form, Integrator, Weights, [f32; 2]); 6] = [
        // C0: 1 → v(1) = 3 → v(3) = 7;  −1 → v(−1) = 1 → v(1) = 3
        (Form::C0, Integrator::Euler, Weights::Shared, [7.0, 3.0]),
        // Euler: 1.5 → 3 → 6, x_2 = 5.5;  −1 → −1 + 0.5·1 = −0.5 → 0
        (Form::C1, Integrator::Euler, Weights::Shared, [5.5, 0.0]),
        // Midpoint: 1.5 → 3.75 → 9.375, x_2 = 8.875 (by stages: u = 1 + 0.25·3 = 1.75,
        // x_1 = 1 + 0.5·v(1.75) = 3.25);  −1: every stage input ≤ 0, so x_2 = −1 + 2·0.5 = 0
        (
            Form::C1,
            Integrator::Midpoint,
            Weights::Shared,
            [8.875, 0.0],
        ),
        // RK4: x_2 = 1.5·(65/24)² − 0.5 = 10.5026041…; step 1 by stages: k1 = 3, k2 = v(1.75)
        // = 4.5, k3 = v(2.125) = 5.25, k4 = v(3.625) = 8.25, x_1 = 1 + 0.5·30.75/6 = 3.5625.
        // −1: stage inputs −0.75, −0.75, −0.5, then −0.25, −0.25, 0 (relu(0) = 0): x_2 = 0
        (
            Form::C1,
            Integrator::Rk4,
            Weights::Shared,
            [1.5 * (65.0f32 / 24.0).powi(2) - 0.5, 0.0],
        ),
        // C2: x_1 = x_0 + h²·v(x_0) = 1 + 0.25·3 = 1.75, x_2 = 3.5 − 1 + 0.25·4.5 = 3.625;
        // −1 → −1 + 0.25 = −0.75 → −1.5 + 1 + 0.25 = −0.25
        (Form::C2, Integrator::Euler, Weights::Shared, [3.625, -0.25]),
        // Unshared C0, field 1 = −relu(x − 1) (W1 = 1, b1 = −1, W2 = −1, b2 = 0):
        // 1 → 3 → −2;  −1 → 1 → −relu(0) = 0
        (Form::C0, Integrator::Euler, Weights::Unshared, [-2.0, 0.0]),
    ];
    for (form, integrator, weights, want) in cases {
        let cfg = FlowConfig {
            form,
            integrator,
            weights,
            ..base.clone()
        };
        let mut p = field0.to_vec();
        if weights == Weights::Unshared {
            p.extend([1.0, -1.0, -1.0, 0.0]);
        }
        p.extend(head);
        let flow = Flow::from_parts(cfg.clone(), Layout::new(&cfg), p).unwrap();
        let want: Vec<f32> = want.iter().flat_map(|x2| [*x2, 0.5 - x2]).collect();
        for got in [
            flow.predict_logits(&[1.0, -1.0]).unwrap(),
            flow.predict_logits_on(&Cpu::default(), &[1.0, -1.0])
                .unwrap(),
        ] {
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{form:?} {integrator:?} {weights:?}: {got:?} vs {want:?}"
                );
            }
        }
    }
}

/// The global error of each integrator on a fixed smooth field, integrated to `T = 1` with
/// N and 2N steps, shrinks by 2^order: ≈ 2 (Euler), 4 (midpoint), 16 (RK4).
#[test]
fn integrators_converge_at_their_order() {
    let base = FlowConfig {
        in_dim: 2,
        classes: 2,
        dim: 2,
        hidden: 3,
        steps: 1,
        h: 1.0,
        weights: Weights::Shared,
        form: Form::C1,
        integrator: Integrator::Euler,
        activation: Activation::Tanh,
    };
    #[rustfmt::skip]
    let field = [
        1.5, -1.0, 0.5, 2.0, -1.2, 0.7, // W1
        0.1, -0.2, 0.3,                 // b1
        1.0, -1.5, 0.8, 2.0, 0.5, -1.0, // W2
        0.2, -0.1,                      // b2
    ];
    // The head is the identity: the logits are x_N.
    let head = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let params: Vec<f32> = field.iter().chain(&head).copied().collect();
    let xs = [0.3f32, -0.4, -0.8, 0.1, 0.5, 0.9];
    let with = |integrator, steps: usize| FlowConfig {
        integrator,
        steps,
        h: 1.0 / steps as f32,
        ..base.clone()
    };
    // The exact flow, to ~1e-14: RK4 in f64 with 4000 steps.
    let exact_cfg = with(Integrator::Rk4, 4000);
    let exact_layout = Layout::new(&exact_cfg);
    let q: Vec<f64> = params.iter().map(|&v| v as f64).collect();
    let exact: Vec<f64> = xs
        .chunks(2)
        .flat_map(|r| {
            let r: Vec<f64> = r.iter().map(|&v| v as f64).collect();
            reference_logits(&exact_cfg, &exact_layout, &q, &r).0
        })
        .collect();
    let error = |integrator, steps: usize, tensor: bool| -> f64 {
        let cfg = with(integrator, steps);
        let flow = Flow::from_parts(cfg.clone(), Layout::new(&cfg), params.clone()).unwrap();
        let got = if tensor {
            flow.predict_logits_on(&Cpu::default(), &xs).unwrap()
        } else {
            flow.predict_logits(&xs).unwrap()
        };
        got.iter()
            .zip(&exact)
            .map(|(g, e)| (*g as f64 - e).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    for (integrator, n, lo, hi) in [
        (Integrator::Euler, 16, 1.8, 2.4),
        (Integrator::Midpoint, 8, 3.5, 4.5),
        (Integrator::Rk4, 4, 14.0, 18.0),
    ] {
        for tensor in [false, true] {
            let (e1, e2) = (
                error(integrator, n, tensor),
                error(integrator, 2 * n, tensor),
            );
            let ratio = e1 / e2;
            assert!(
                (lo..=hi).contains(&ratio),
                "{integrator:?} (tensor: {tensor}): error {e1:e} at N = {n}, {e2:e} at 2N: ratio {ratio}"
            );
        }
    }
}

/// ‖W‖₂ of row-major `rows × cols` weights by 20 000 power iterations on WᵀW in f64 from a
/// pseudo-random start: independent of `constrain::spectral_norm` (other side, other seed,
/// no stopping rule, no margin). A lower bound that converges to the norm.
fn spectral_norm_slow(w: &[f32], rows: usize, cols: usize) -> f64 {
    let mut g = crate::rng::SplitMix64::new(42, 5);
    let mut v: Vec<f64> = (0..cols).map(|_| g.uniform(1.0) as f64).collect();
    let mut est = 0.0;
    for _ in 0..20_000 {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        let wv: Vec<f64> = (0..rows)
            .map(|i| (0..cols).map(|j| w[i * cols + j] as f64 * v[j]).sum())
            .collect();
        est = wv.iter().map(|x| x * x).sum::<f64>().sqrt();
        v = (0..cols)
            .map(|j| (0..rows).map(|i| w[i * cols + j] as f64 * wv[i]).sum())
            .collect();
    }
    est
}

/// `step · ‖W1‖₂ · ‖W2‖₂` of every field of `flow`, `step` being h, 1 or h² by form.
fn field_lipschitz(flow: &Flow) -> Vec<f64> {
    let cfg = flow.config();
    let layout = Layout::new(cfg);
    let step = match cfg.form {
        Form::C0 => 1.0,
        Form::C1 => cfg.h.abs() as f64,
        Form::C2 => (cfg.h as f64).powi(2),
    };
    layout
        .fields
        .iter()
        .map(|f| {
            step * spectral_norm_slow(f.l1.w(flow.params()), f.l1.out, f.l1.inp)
                * spectral_norm_slow(f.l2.w(flow.params()), f.l2.out, f.l2.inp)
        })
        .collect()
}

#[test]
fn lipschitz_projection_bounds_every_field() {
    let data = blobs(200, 3);
    for form in [Form::C0, Form::C1, Form::C2] {
        for backend in [Backend::Cpu, Backend::Dfdx] {
            let cfg = FlowConfig {
                in_dim: 2,
                classes: 2,
                dim: 4,
                hidden: 8,
                steps: 3,
                // > 1, so h, 1 and h² differ
                h: 1.5,
                weights: Weights::Unshared,
                form,
                integrator: Integrator::Euler,
                activation: Activation::Tanh,
            };
            let run = |lipschitz| {
                let train = TrainConfig {
                    epochs: 3,
                    batch: 20,
                    lr: 0.05,
                    seed: 1,
                    weight_decay: 0.0,
                    lipschitz,
                };
                let exec = ExecOptions {
                    threads: 1,
                    backend,
                };
                train_flow_with(&cfg, &train, &data, &exec, &mut NoObserver).unwrap()
            };
            let free = field_lipschitz(&run(None));
            let bounded = field_lipschitz(&run(Some(0.5)));
            let what = format!("{form:?} {backend:?}: free {free:?}, bounded {bounded:?}");
            // Without the projection the bound does not hold, so this test can fail …
            assert!(free.iter().any(|l| *l > 0.6), "{what}");
            // … with it, it holds for every field, and is reached (the last step scaled the
            // fields it had to onto the bound, not below it).
            assert!(bounded.iter().all(|l| *l <= 0.5 * (1.0 + 1e-9)), "{what}");
            assert!(bounded.iter().any(|l| *l > 0.5 * 0.999), "{what}");
        }
    }
}

#[test]
fn weight_decay_shrinks_the_weights() {
    let cfg = FlowConfig {
        in_dim: 2,
        classes: 2,
        dim: 4,
        hidden: 8,
        steps: 3,
        h: 1.0 / 3.0,
        weights: Weights::Shared,
        form: Form::C1,
        integrator: Integrator::Euler,
        activation: Activation::Relu,
    };
    let data = blobs(200, 4);
    let weight_norm = |flow: &Flow| -> f64 {
        let layout = Layout::new(flow.config());
        layout
            .store
            .slots()
            .iter()
            .filter(|s| s.name.ends_with(".weight"))
            .flat_map(|s| &flow.params()[s.offset..s.offset + s.len()])
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    for backend in [Backend::Cpu, Backend::Dfdx] {
        let run = |weight_decay| {
            let train = TrainConfig {
                epochs: 5,
                batch: 20,
                lr: 0.01,
                seed: 2,
                weight_decay,
                lipschitz: None,
            };
            let exec = ExecOptions {
                threads: 1,
                backend,
            };
            weight_norm(&train_flow_with(&cfg, &train, &data, &exec, &mut NoObserver).unwrap())
        };
        let (free, decayed) = (run(0.0), run(10.0));
        assert!(
            decayed < 0.5 * free,
            "{backend:?}: weight norm {decayed} with decay, {free} without"
        );
    }
}

/// Model files written before `form`, `integrator` and `activation` existed carry a config
/// without those keys; they are C1 / Euler / tanh models.
#[test]
fn a_model_file_without_form_keys_loads_as_c1_euler_tanh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    let cfg = cfg(Weights::Unshared, 2, 4);
    let flow = Flow::init(&cfg, 7).unwrap();
    let old_json = r#"{"in_dim":2,"classes":3,"dim":4,"hidden":5,"steps":3,"h":0.33333334,"weights":"unshared"}"#;
    let layout = Layout::new(&cfg);
    let bytes: Vec<Vec<u8>> = layout
        .store
        .slots()
        .iter()
        .map(|s| {
            flow.params()[s.offset..s.offset + s.len()]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<_> = layout
        .store
        .slots()
        .iter()
        .zip(&bytes)
        .map(|(s, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.shape.clone(), b)
                    .unwrap();
            (s.name.clone(), view)
        })
        .collect();
    let meta = std::collections::HashMap::from([
        ("format".to_string(), "ablate-flow/1".to_string()),
        ("flow_config".to_string(), old_json.to_string()),
    ]);
    std::fs::write(&path, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
    let back = Flow::load(&path).unwrap();
    assert_eq!(back.config().form, Form::C1);
    assert_eq!(back.config().integrator, Integrator::Euler);
    assert_eq!(back.config().activation, Activation::Tanh);
    assert_eq!(back, flow);
}
