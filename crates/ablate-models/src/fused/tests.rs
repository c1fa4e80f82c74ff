//! A fused group against its members trained alone: bit for bit on the CPU backend.

use std::ops::ControlFlow;

use super::uses_lanes;
use crate::*;

/// `n` points in `R^in_dim` with labels from a fixed nonlinear rule (as the crate's tests).
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

fn base(weights: Weights, in_dim: usize, dim: usize, hidden: usize) -> FlowConfig {
    FlowConfig {
        in_dim,
        classes: 3,
        dim,
        hidden,
        steps: 3,
        h: 1.0 / 3.0,
        weights,
        form: Form::C1,
        integrator: Integrator::Euler,
        activation: Activation::Tanh,
    }
}

/// Every form × integrator the config accepts, with both activations.
fn variants() -> Vec<(Form, Integrator, Activation)> {
    let forms = [
        (Form::C0, Integrator::Euler),
        (Form::C1, Integrator::Euler),
        (Form::C1, Integrator::Midpoint),
        (Form::C1, Integrator::Rk4),
        (Form::C2, Integrator::Euler),
    ];
    forms
        .into_iter()
        .flat_map(|(f, i)| [Activation::Tanh, Activation::Relu].map(|a| (f, i, a)))
        .collect()
}

/// Everything a member reports, to compare bit for bit (`f32`s compared as bits through
/// `Debug`, which prints them exactly).
#[derive(Default)]
struct Log {
    steps: Vec<StepLog<Accuracy>>,
    epochs: Vec<EpochLog<Accuracy>>,
    stop_at: Option<usize>,
}

impl Observer<Accuracy> for Log {
    fn on_step(&mut self, log: &StepLog<Accuracy>) -> ControlFlow<()> {
        self.steps.push(*log);
        if self.stop_at == Some(log.step) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
    fn on_epoch(&mut self, log: &EpochLog<Accuracy>) -> ControlFlow<()> {
        self.epochs.push(*log);
        ControlFlow::Continue(())
    }
}

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

fn step_bits(log: &Log) -> Vec<(usize, u32, u32, u32, Accuracy)> {
    log.steps
        .iter()
        .map(|s| {
            (
                s.step,
                s.loss.to_bits(),
                s.lr.to_bits(),
                s.grad_norm.to_bits(),
                s.stats,
            )
        })
        .collect()
}

fn epoch_bits(log: &Log) -> Vec<(usize, u32, u64, Accuracy)> {
    log.epochs
        .iter()
        .map(|e| (e.epoch, e.loss.to_bits(), e.weight.to_bits(), e.stats))
        .collect()
}

/// Trains `members` fused and each alone (`threads` each) and asserts equal parameters, step
/// and epoch logs and errors, bit for bit. Returns the fused results.
fn assert_fused_equals_alone(
    cfg: &FlowConfig,
    members: &[TrainConfig],
    data: &[&Dataset],
    stops: &[Option<usize>],
    threads: usize,
) -> Vec<Result<Flow, NnError>> {
    let exec = ExecOptions {
        threads,
        backend: Backend::Cpu,
    };
    let mut logs: Vec<Log> = stops
        .iter()
        .map(|&stop_at| Log {
            stop_at,
            ..Log::default()
        })
        .collect();
    let mut obs: Vec<&mut dyn Observer<Accuracy>> = logs
        .iter_mut()
        .map(|l| l as &mut dyn Observer<Accuracy>)
        .collect();
    let fused = train_flow_group(cfg, members, data, &exec, &mut obs).unwrap();
    for (m, train) in members.iter().enumerate() {
        let mut alone = Log {
            stop_at: stops[m],
            ..Log::default()
        };
        let want = train_flow_with(cfg, train, data[m], &exec, &mut alone);
        let what = format!(
            "{:?} member {m}",
            (cfg.form, cfg.integrator, cfg.activation, cfg.weights)
        );
        match (&fused[m], &want) {
            (Ok(got), Ok(want)) => assert_eq!(bits(got.params()), bits(want.params()), "{what}"),
            (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string(), "{what}"),
            (got, want) => panic!("{what}: fused {got:?}, alone {want:?}"),
        }
        assert_eq!(step_bits(&logs[m]), step_bits(&alone), "{what}");
        assert_eq!(epoch_bits(&logs[m]), epoch_bits(&alone), "{what}");
    }
    fused
}

/// Three members differing in seed, learning rate, weight decay and Lipschitz bound.
fn members(epochs: usize, batch: usize) -> Vec<TrainConfig> {
    let t = |seed, lr, weight_decay, lipschitz| TrainConfig {
        epochs,
        batch,
        lr,
        seed,
        weight_decay,
        lipschitz,
    };
    vec![
        t(1, 0.01, 0.0, None),
        t(2, 0.03, 0.1, None),
        t(3, 0.02, 0.05, Some(0.3)),
    ]
}

#[test]
fn fused_members_equal_their_unfused_runs_for_every_form_and_weights() {
    // 50 examples in batches of 16: a last batch of 2 rows (the smallest the lanes take).
    let sets: Vec<Dataset> = (0..3).map(|s| toy_data(50, 2, 3, 10 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    for weights in [Weights::Shared, Weights::Unshared] {
        // dim 2 = in_dim: no lift, inner sizes 2 (gemm's gevv); dim 3: a lift and inner
        // sizes 3 (its microkernel); hidden 9: a partial 8-row tile.
        for (dim, hidden) in [(2, 9), (3, 5)] {
            for v in variants() {
                let cfg = FlowConfig {
                    form: v.0,
                    integrator: v.1,
                    activation: v.2,
                    ..base(weights, 2, dim, hidden)
                };
                assert!(uses_lanes(&cfg, 16, 50) || !super::lanes_available());
                assert_fused_equals_alone(&cfg, &members(2, 16), &data, &[None; 3], 1);
            }
        }
    }
}

/// The AVX2 build of the lane kernels (what a CPU without AVX-512 runs), on this CPU too: the
/// same bits as unfused. While it runs, other tests' groups may take it as well; both builds
/// must agree bit for bit, so that changes no test's outcome.
#[test]
fn the_avx2_lanes_equal_unfused_runs_too() {
    use std::sync::atomic::Ordering;
    let sets: Vec<Dataset> = (0..3).map(|s| toy_data(50, 2, 3, 10 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    super::lanes::AVX2_ONLY.store(true, Ordering::Relaxed);
    for weights in [Weights::Shared, Weights::Unshared] {
        for (dim, hidden) in [(2, 9), (3, 5), (2, 32)] {
            for v in variants() {
                let cfg = FlowConfig {
                    form: v.0,
                    integrator: v.1,
                    activation: v.2,
                    ..base(weights, 2, dim, hidden)
                };
                assert_fused_equals_alone(&cfg, &members(2, 16), &data, &[None; 3], 1);
            }
        }
    }
    super::lanes::AVX2_ONLY.store(false, Ordering::Relaxed);
}

#[test]
fn fused_shards_and_blocks_equal_unfused_whatever_the_thread_count() {
    // Batches of 130 rows: two shards each; 20 members: two lane blocks.
    let sets: Vec<Dataset> = (0..20).map(|s| toy_data(150, 2, 3, 40 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let trains: Vec<TrainConfig> = (0..20)
        .map(|m| TrainConfig {
            epochs: 1,
            batch: 130,
            lr: 0.005 * (1 + m % 4) as f32,
            seed: m as u64,
            weight_decay: if m % 3 == 0 { 0.1 } else { 0.0 },
            lipschitz: (m % 5 == 0).then_some(0.5),
        })
        .collect();
    let cfg = base(Weights::Unshared, 2, 4, 33);
    assert!(uses_lanes(&cfg, 130, 150) || !super::lanes_available());
    let one = assert_fused_equals_alone(&cfg, &trains, &data, &[None; 20], 1);
    let three = assert_fused_equals_alone(&cfg, &trains, &data, &[None; 20], 3);
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(
            bits(a.as_ref().unwrap().params()),
            bits(b.as_ref().unwrap().params())
        );
    }
}

#[test]
fn shapes_the_lanes_do_not_take_train_one_by_one_with_the_same_numbers() {
    // hidden 1 and a last batch of one row: gemm's gemv paths.
    let sets: Vec<Dataset> = (0..3).map(|s| toy_data(49, 2, 3, 70 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let cfg = base(Weights::Shared, 2, 3, 1);
    assert!(!uses_lanes(&cfg, 16, 49));
    assert_fused_equals_alone(&cfg, &members(2, 16), &data, &[None; 3], 2);
}

#[test]
fn a_diverging_member_fails_alone_with_its_unfused_error() {
    let sets: Vec<Dataset> = (0..3).map(|s| toy_data(48, 2, 3, 20 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let cfg = base(Weights::Unshared, 2, 2, 8);
    let mut trains = members(3, 16);
    trains[1].lr = 1e30;
    let out = assert_fused_equals_alone(&cfg, &trains, &data, &[None; 3], 1);
    let e = out[1].as_ref().unwrap_err();
    assert!(matches!(e, NnError::NonFinite { .. }), "{e:?}");
    assert!(out[0].is_ok() && out[2].is_ok());
}

#[test]
fn an_observer_stops_its_member_alone() {
    let sets: Vec<Dataset> = (0..3).map(|s| toy_data(48, 2, 3, 30 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let cfg = base(Weights::Shared, 2, 2, 8);
    let out = assert_fused_equals_alone(&cfg, &members(2, 16), &data, &[None, Some(4), None], 1);
    assert!(matches!(out[1], Err(NnError::Cancelled)));
    assert!(out[0].is_ok() && out[2].is_ok());
}

#[test]
fn a_member_with_invalid_settings_fails_alone() {
    let sets: Vec<Dataset> = (0..3).map(|s| toy_data(48, 2, 3, 30 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let cfg = base(Weights::Shared, 2, 2, 8);
    let mut trains = members(1, 16);
    trains[2].lr = -1.0;
    let out = assert_fused_equals_alone(&cfg, &trains, &data, &[None; 3], 1);
    assert!(matches!(out[2], Err(NnError::InvalidConfig(_))));
}

#[test]
fn members_with_different_schedules_are_refused() {
    let sets: Vec<Dataset> = (0..2).map(|s| toy_data(48, 2, 3, 30 + s)).collect();
    let short = toy_data(40, 2, 3, 1);
    let cfg = base(Weights::Shared, 2, 2, 8);
    let exec = ExecOptions::default();
    let run = |trains: &[TrainConfig], data: &[&Dataset]| {
        let mut a = NoObserver;
        let mut b = NoObserver;
        let mut obs: Vec<&mut dyn Observer<Accuracy>> = vec![&mut a, &mut b];
        train_flow_group(&cfg, trains, data, &exec, &mut obs).unwrap_err()
    };
    let mut trains = members(1, 16)[..2].to_vec();
    trains[1].batch = 8;
    let e = run(&trains, &[&sets[0], &sets[1]]);
    assert!(matches!(e, NnError::InvalidConfig(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("member 1 has `batch` = 8 but member 0 has 16"),
        "{e}"
    );
    let mut trains = members(1, 16)[..2].to_vec();
    trains[1].epochs = 3;
    let e = run(&trains, &[&sets[0], &sets[1]]);
    assert!(e.to_string().contains("`epochs` = 3"), "{e}");
    let e = run(&members(1, 16)[..2], &[&sets[0], &short]);
    assert!(matches!(e, NnError::InvalidData(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("member 1's data set has 40 examples but member 0's has 48"),
        "{e}"
    );
}

/// A whole run's parameters and logs, and the same trained in spans (each resuming from the
/// state the one before left), on `backend`: alone (`group` false) or fused.
fn whole_and_in_spans(
    cfg: &FlowConfig,
    members: &[TrainConfig],
    data: &[&Dataset],
    stops: &[usize],
    backend: Backend,
    group: bool,
) -> [(Vec<Vec<u32>>, Vec<String>); 2] {
    let exec = ExecOptions {
        threads: 2,
        backend,
    };
    // The whole run: each member alone (the fused CPU path equals it bit for bit), or fused on
    // the tensor path (equal to alone only within rounding).
    let whole = if group && backend != Backend::Cpu {
        let mut logs: Vec<Log> = members.iter().map(|_| Log::default()).collect();
        let mut obs: Vec<&mut dyn Observer<Accuracy>> = logs
            .iter_mut()
            .map(|l| l as &mut dyn Observer<Accuracy>)
            .collect();
        let flows = train_flow_group(cfg, members, data, &exec, &mut obs).unwrap();
        flows
            .iter()
            .zip(&logs)
            .map(|(f, log)| {
                let flow = f.as_ref().unwrap();
                (
                    bits(flow.params()),
                    format!("{:?}{:?}", step_bits(log), epoch_bits(log)),
                )
            })
            .collect::<Vec<_>>()
    } else {
        members
            .iter()
            .zip(data)
            .map(|(t, d)| {
                let mut log = Log::default();
                let flow = train_flow_with(cfg, t, d, &exec, &mut log).unwrap();
                (
                    bits(flow.params()),
                    format!("{:?}{:?}", step_bits(&log), epoch_bits(&log)),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut states: Vec<Option<TrainState>> = vec![None; members.len()];
    let mut logs: Vec<Log> = members.iter().map(|_| Log::default()).collect();
    let mut flows = Vec::new();
    for &stop in stops {
        let from: Vec<Option<&TrainState>> = states.iter().map(|s| s.as_ref()).collect();
        let done: Vec<(Flow, TrainState)> = if group {
            let mut obs: Vec<&mut dyn Observer<Accuracy>> = logs
                .iter_mut()
                .map(|l| l as &mut dyn Observer<Accuracy>)
                .collect();
            train_flow_group_span(cfg, members, data, &exec, &from, stop, &mut obs)
                .unwrap()
                .into_iter()
                .map(|r| r.unwrap())
                .collect()
        } else {
            (0..members.len())
                .map(|m| {
                    let span = Span {
                        from: from[m],
                        stop,
                    };
                    train_flow_span(cfg, &members[m], data[m], &exec, span, &mut logs[m]).unwrap()
                })
                .collect()
        };
        for (m, (flow, state)) in done.into_iter().enumerate() {
            assert_eq!(state.step, stop * data[m].len().div_ceil(members[m].batch));
            assert_eq!(bits(flow.params()), bits(&state.params));
            states[m] = Some(state);
            flows.push(flow);
        }
    }
    let spans = logs
        .iter()
        .zip(&flows[flows.len() - members.len()..])
        .map(|(log, flow)| {
            (
                bits(flow.params()),
                format!("{:?}{:?}", step_bits(log), epoch_bits(log)),
            )
        })
        .collect::<Vec<_>>();
    let split = |v: Vec<(Vec<u32>, String)>| v.into_iter().unzip();
    [split(whole), split(spans)]
}

#[test]
fn training_resumed_from_its_state_equals_one_run_alone_and_fused() {
    let sets: Vec<Dataset> = (0..3).map(|s| toy_data(40, 2, 3, 50 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let members = members(5, 16);
    for weights in [Weights::Shared, Weights::Unshared] {
        let cfg = base(weights, 2, 3, 5);
        // to epoch 1, then 3, then the end; and a span of no epochs (resumed at its stop)
        for group in [false, true] {
            let [whole, spans] =
                whole_and_in_spans(&cfg, &members, &data, &[1, 3, 3, 5], Backend::Cpu, group);
            assert_eq!(whole, spans, "{weights:?}, fused: {group}");
        }
    }
}

/// dfdx's CPU device (the path a CUDA build takes) resumes bit for bit too, alone and fused:
/// the same host updates and the same device computation per step as its whole run.
#[test]
fn the_tensor_path_resumes_as_it_runs() {
    let sets: Vec<Dataset> = (0..2).map(|s| toy_data(24, 2, 3, 60 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let members = &members(3, 12)[..2];
    let cfg = base(Weights::Shared, 2, 3, 4);
    for group in [false, true] {
        let [whole, spans] =
            whole_and_in_spans(&cfg, members, &data, &[1, 3], Backend::Dfdx, group);
        assert_eq!(whole, spans, "fused: {group}");
    }
}

#[test]
fn members_resuming_from_different_steps_are_refused_as_a_group() {
    let sets: Vec<Dataset> = (0..2).map(|s| toy_data(24, 2, 3, 60 + s)).collect();
    let data: Vec<&Dataset> = sets.iter().collect();
    let members = &members(3, 12)[..2];
    let cfg = base(Weights::Shared, 2, 3, 4);
    let exec = ExecOptions::default();
    let mut logs: Vec<Log> = (0..2).map(|_| Log::default()).collect();
    let (_, state) = train_flow_span(
        &cfg,
        &members[0],
        data[0],
        &exec,
        Span {
            from: None,
            stop: 1,
        },
        &mut logs[0],
    )
    .unwrap();
    let mut obs: Vec<&mut dyn Observer<Accuracy>> = logs
        .iter_mut()
        .map(|l| l as &mut dyn Observer<Accuracy>)
        .collect();
    let e = train_flow_group_span(
        &cfg,
        members,
        &data,
        &exec,
        &[Some(&state), None],
        3,
        &mut obs,
    )
    .unwrap_err();
    assert!(e.to_string().contains("different steps"), "{e}");
}
