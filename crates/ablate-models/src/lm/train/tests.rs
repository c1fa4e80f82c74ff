use super::*;
use crate::Runtime;
use crate::lm::cpu::cpu_loss_and_grad;
use crate::lm::{Arch, vocab};
use ablate_nn::{Observer, StepLog};
use std::ops::ControlFlow;

/// The repeating pattern the tiny models learn.
pub(crate) const PATTERN: [u32; 4] = [b'a' as u32, b'b' as u32, b'c' as u32, b'd' as u32];

pub(crate) fn tiny(arch: Arch) -> LmConfig {
    LmConfig {
        arch,
        vocab: vocab::VOCAB,
        d_model: 16,
        layers: 1,
        heads: 2,
        d_ff: 32,
        seq_len: 12,
    }
}

/// Rows of the repeating pattern, each starting at its own phase; every position predicts the
/// next token.
pub(crate) fn pattern_batch(rows: usize, len: usize, step: usize) -> Batch {
    let mut tokens = Vec::new();
    let mut targets = Vec::new();
    for r in 0..rows {
        let phase = (r * 7 + step * 3) % PATTERN.len();
        for i in 0..len {
            tokens.push(PATTERN[(phase + i) % PATTERN.len()]);
            targets.push(PATTERN[(phase + i + 1) % PATTERN.len()]);
        }
    }
    Batch {
        rows,
        len,
        tokens,
        targets,
        weights: vec![1.0; rows * len],
        prefix: (0..rows).map(|r| r % 3).collect(),
        ..Batch::default()
    }
}

pub(crate) fn quick(steps: usize) -> LmTrainConfig {
    LmTrainConfig {
        steps,
        batch: 8,
        lr: 1e-2,
        warmup: 10,
        weight_decay: 0.01,
        clip: 1.0,
        seed: 3,
    }
}

pub(crate) struct Quiet;

impl Observer<()> for Quiet {
    fn on_step(&mut self, _: &StepLog<()>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// Trains the tiny decoder on the pattern.
pub(crate) fn trained_on_pattern(steps: usize) -> (Lm, Vec<StepLog<()>>) {
    let mut batches = |s| pattern_batch(8, 12, s);
    train_lm(
        &tiny(Arch::Decoder),
        &quick(steps),
        1,
        &mut batches,
        &mut Quiet,
    )
    .unwrap()
}

#[test]
fn loss_falls_on_a_repeated_pattern() {
    let (_, logs) = trained_on_pattern(150);
    assert_eq!(logs.len(), 150);
    assert_eq!(logs[0].step, 1);
    let first = logs[0].loss;
    let last = logs.last().unwrap().loss;
    assert!(
        (first - (vocab::VOCAB as f32).ln()).abs() < 0.1,
        "start {first}"
    );
    assert!(last < 0.05 * first, "loss {first} → {last}");
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l.lr, quick(150).lr_at(i));
        assert!(l.grad_norm.is_finite() && l.grad_norm > 0.0);
    }
}

#[test]
fn encdec_loss_falls_and_it_generates_from_its_encoder() {
    // Every decoder row starts with BOS, so its first target (the token after the encoder's
    // first) is only known through cross-attention; the rest is the pattern.
    let mut batches = encdec_batch;
    let (lm, logs) = train_lm(
        &tiny(Arch::EncDec),
        &quick(250),
        2,
        &mut batches,
        &mut Quiet,
    )
    .unwrap();
    let (first, last) = (logs[0].loss, logs.last().unwrap().loss);
    assert!(last < 0.05 * first, "loss {first} → {last}");
    let inputs: Vec<Vec<u32>> = (0..4)
        .map(|k| vec![PATTERN[k], PATTERN[(k + 1) % 4]])
        .collect();
    let out = lm
        .generate(&inputs, false, 5, &[], &Runtime::cpu(2))
        .unwrap();
    for (k, out) in out.iter().enumerate() {
        let want: Vec<u32> = (1..6).map(|i| PATTERN[(k + i) % 4]).collect();
        assert_eq!(out, &want, "input {:?}", inputs[k]);
    }
}

#[test]
fn training_is_deterministic_and_thread_independent() {
    // 40 rows × 32 tokens: two shards
    let mut cfg = tiny(Arch::Decoder);
    cfg.seq_len = 32;
    let run = |threads: usize, seed: u64| {
        let mut batches = |s| pattern_batch(40, 32, s);
        let train = LmTrainConfig { seed, ..quick(5) };
        train_lm(&cfg, &train, threads, &mut batches, &mut Quiet).unwrap()
    };
    let (a, la) = run(1, 3);
    let (b, lb) = run(2, 3);
    let (c, _) = run(1, 4);
    assert_eq!(a.params(), b.params());
    assert_eq!(la, lb);
    assert_ne!(a.params(), c.params());
}

#[test]
fn one_step_is_adamw_with_clipping_and_selective_decay() {
    let cfg = tiny(Arch::Decoder);
    let layout = LmLayout::new(&cfg);
    let train = LmTrainConfig {
        lr: 0.05,
        weight_decay: 0.5,
        clip: 0.01,
        ..quick(1)
    };
    let batch = pattern_batch(8, 12, 0);
    let init = layout.init(train.seed);
    let (loss, g) = cpu_loss_and_grad(&cfg, &layout, &init, &batch, 1).unwrap();
    let norm = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(norm > 0.01, "the test needs clipping to apply");
    let mut batches = |_| batch.clone();
    let (lm, logs) = train_lm(&cfg, &train, 1, &mut batches, &mut Quiet).unwrap();
    assert_eq!(logs[0].loss, loss);
    assert!((logs[0].grad_norm as f64 - norm).abs() < 1e-4 * norm);
    let lr = train.lr_at(0) as f64;
    let decayed: Vec<bool> = {
        let mut d = vec![false; layout.total()];
        for r in layout.store.decayed() {
            d[r].iter_mut().for_each(|x| *x = true);
        }
        d
    };
    assert!(decayed.iter().any(|&d| d) && decayed.iter().any(|&d| !d));
    for i in 0..layout.total() {
        // first step: m̂ = ĝ, v̂ = ĝ², ĝ = g·clip/‖g‖
        let gc = g[i] as f64 * train.clip as f64 / norm;
        let wd = if decayed[i] {
            lr * train.weight_decay as f64
        } else {
            0.0
        };
        let want = init[i] as f64 * (1.0 - wd) - lr * gc / (gc.abs() + 1e-8);
        let got = lm.params()[i] as f64;
        assert!((got - want).abs() < 1e-5, "param {i}: {got} vs {want}");
    }
}

struct StopAt(usize);

impl Observer<()> for StopAt {
    fn on_step(&mut self, log: &StepLog<()>) -> ControlFlow<()> {
        assert_eq!(log.steps, 20);
        if log.step == self.0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

struct Cancelled;

impl Observer<()> for Cancelled {
    fn on_step(&mut self, _: &StepLog<()>) -> ControlFlow<()> {
        panic!("no step should run")
    }
    fn cancelled(&self) -> bool {
        true
    }
}

#[test]
fn observers_stop_training() {
    let cfg = tiny(Arch::Decoder);
    let mut calls = 0;
    let mut batches = |s| {
        calls += 1;
        pattern_batch(2, 4, s)
    };
    let r = train_lm(&cfg, &quick(20), 1, &mut batches, &mut StopAt(3));
    assert!(matches!(r, Err(NnError::Cancelled)));
    assert_eq!(calls, 3);
    let mut batches = |s| pattern_batch(2, 4, s);
    let r = train_lm(&cfg, &quick(20), 1, &mut batches, &mut Cancelled);
    assert!(matches!(r, Err(NnError::Cancelled)));
}

#[test]
fn divergence_is_reported_with_its_step() {
    let train = LmTrainConfig {
        lr: 1e30,
        warmup: 0,
        clip: f32::INFINITY,
        ..quick(20)
    };
    let mut batches = |s| pattern_batch(4, 12, s);
    let r = train_lm(&tiny(Arch::Decoder), &train, 1, &mut batches, &mut Quiet);
    match r {
        Err(NnError::NonFiniteStep { step, .. }) => assert!(step >= 2, "step {step}"),
        other => panic!("expected divergence, got {:?}", other.map(|(_, l)| l)),
    }
}

#[test]
fn bad_configs_and_batches_are_rejected() {
    let cfg = tiny(Arch::Decoder);
    let mut ok = |s| pattern_batch(2, 4, s);
    let bad_cfg = |train: LmTrainConfig, threads: usize, ok: &mut dyn FnMut(usize) -> Batch| {
        matches!(
            train_lm(&cfg, &train, threads, ok, &mut Quiet),
            Err(NnError::InvalidConfig(_))
        )
    };
    assert!(bad_cfg(quick(0), 1, &mut ok));
    assert!(bad_cfg(
        LmTrainConfig {
            clip: 0.0,
            ..quick(2)
        },
        1,
        &mut ok
    ));
    assert!(bad_cfg(
        LmTrainConfig {
            lr: f32::NAN,
            ..quick(2)
        },
        1,
        &mut ok
    ));
    assert!(bad_cfg(quick(2), 0, &mut ok));
    let mut too_long = |s| pattern_batch(2, 13, s);
    let r = train_lm(&cfg, &quick(2), 1, &mut too_long, &mut Quiet);
    assert!(matches!(r, Err(NnError::InvalidData(m)) if m.contains("seq_len")));
    let mut unweighted = |s| {
        let mut b = pattern_batch(2, 4, s);
        b.weights.fill(0.0);
        b
    };
    let r = train_lm(&cfg, &quick(2), 1, &mut unweighted, &mut Quiet);
    assert!(matches!(r, Err(NnError::InvalidData(m)) if m.contains("positive loss weight")));
}

/// The encdec batch of `encdec_loss_falls_and_it_generates_from_its_encoder`.
fn encdec_batch(step: usize) -> Batch {
    let mut b = pattern_batch(8, 6, step);
    b.prefix = vec![0; 8];
    b.enc_len = 4;
    b.enc_lens = (0..8).map(|r| 2 + r % 3).collect();
    b.enc_tokens = b
        .tokens
        .chunks(6)
        .flat_map(|row| row[..4].to_vec())
        .collect();
    for row in b.tokens.chunks_mut(6) {
        row[0] = vocab::BOS;
    }
    b
}

#[test]
fn the_cpu_and_dfdx_paths_compute_the_same_loss_and_gradient() {
    let dev = dfdx::tensor::Cpu::default();
    for (arch, batch) in [
        (Arch::Decoder, pattern_batch(5, 12, 1)),
        (Arch::EncDec, encdec_batch(2)),
    ] {
        let cfg = tiny(arch);
        let layout = LmLayout::new(&cfg);
        // Away from the init scale, so attention is not uniform and every path matters.
        let mut params = layout.init(9);
        for (i, p) in params.iter_mut().enumerate() {
            *p += 0.3 * ((i * 7919 % 1000) as f32 / 1000.0 - 0.5);
        }
        let (cpu_loss, cpu_grad) = cpu_loss_and_grad(&cfg, &layout, &params, &batch, 2).unwrap();
        let (t_loss, t_grad) = tensor_loss_and_grad(&dev, &cfg, &layout, &params, &batch).unwrap();
        assert!(
            (cpu_loss - t_loss).abs() <= 1e-5 * t_loss.abs(),
            "{arch:?}: loss {cpu_loss} vs {t_loss}"
        );
        let scale = t_grad.iter().fold(0f32, |m, g| m.max(g.abs()));
        for (i, (a, b)) in cpu_grad.iter().zip(&t_grad).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{arch:?}: gradient {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn training_on_the_dfdx_path_follows_the_cpu_path() {
    for arch in [Arch::Decoder, Arch::EncDec] {
        let run = |backend| {
            let mut batches = |s: usize| match arch {
                Arch::Decoder => pattern_batch(8, 12, s),
                Arch::EncDec => encdec_batch(s),
            };
            let exec = ExecOptions {
                threads: 1,
                backend,
            };
            train_lm_with(&tiny(arch), &quick(5), &exec, &mut batches, &mut Quiet).unwrap()
        };
        let (cpu, cpu_logs) = run(Backend::Cpu);
        let (dfdx, dfdx_logs) = run(Backend::Dfdx);
        for (a, b) in cpu_logs.iter().zip(&dfdx_logs) {
            assert!(
                (a.loss - b.loss).abs() < 1e-4,
                "{arch:?} step {}: {} vs {}",
                a.step,
                a.loss,
                b.loss
            );
        }
        let drift = cpu
            .params()
            .iter()
            .zip(dfdx.params())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(drift < 1e-4, "{arch:?}: parameters differ by up to {drift}");
        assert_ne!(
            cpu.params(),
            Lm::init(&tiny(arch), 3).unwrap().params(),
            "training moved nothing"
        );
    }
}
