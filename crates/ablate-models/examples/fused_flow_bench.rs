//! Throughput of a fused flow sweep (issue 23): `K` members (learning rates × seeds) of one
//! flow trained as one group by `train_flow_group`, against the same members trained one by
//! one by `train_flow_with` on `T` worker threads at once (as `ablate run --jobs T` runs an
//! unfused sweep). The defaults are the paper pipelines' sweep: 2-D data, 1,000 points, batch
//! 100, hidden 32, 16 Euler steps, 32 members (4 lr × 8 seeds).
//!
//! ```text
//! cargo run --release -p ablate-models --example fused_flow_bench -- \
//!     [--members K] [--threads T] [--dim D] [--hidden H] [--steps N] [--epochs E]
//!     [--weights shared|unshared] [--form c0|c1|c2] [--integrator euler|midpoint|rk4]
//! ```
//!
//! Prints one JSON line: model-steps/s (a model-step: one member's forward, backward and Adam
//! update of one batch) fused and one by one, their ratio, and whether every member's
//! parameters came out bit-identical.

mod support;
use support::cpu_seconds;

use std::time::Instant;

use ablate_models::{
    Accuracy, Activation, Dataset, ExecOptions, Flow, FlowConfig, Form, Integrator, NoObserver,
    Observer, TrainConfig, Weights, train_flow_group, train_flow_with,
};

const POINTS: usize = 1000;
const BATCH: usize = 100;
const LRS: [f32; 4] = [1e-3, 3e-3, 1e-2, 3e-2];

struct Args {
    members: usize,
    threads: usize,
    dim: usize,
    hidden: usize,
    steps: usize,
    epochs: usize,
    fused_only: bool,
    weights: Weights,
    form: Form,
    integrator: Integrator,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        members: 32,
        threads: 2,
        dim: 2,
        hidden: 32,
        steps: 16,
        epochs: 30,
        fused_only: false,
        weights: Weights::Shared,
        form: Form::C1,
        integrator: Integrator::Euler,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("`{flag}` needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("`{v}`: {e}"));
        match flag.as_str() {
            "--members" => args.members = number(value()?)?.max(1),
            "--threads" => args.threads = number(value()?)?.max(1),
            "--dim" => args.dim = number(value()?)?.max(1),
            "--hidden" => args.hidden = number(value()?)?.max(1),
            "--steps" => args.steps = number(value()?)?.max(1),
            "--epochs" => args.epochs = number(value()?)?.max(1),
            // For profiling the fused run alone.
            "--fused-only" => args.fused_only = true,
            "--weights" => {
                args.weights = match value()?.as_str() {
                    "shared" => Weights::Shared,
                    "unshared" => Weights::Unshared,
                    other => return Err(format!("unknown weights `{other}`")),
                }
            }
            "--form" => {
                args.form = match value()?.as_str() {
                    "c0" => Form::C0,
                    "c1" => Form::C1,
                    "c2" => Form::C2,
                    other => return Err(format!("unknown form `{other}`")),
                }
            }
            "--integrator" => {
                args.integrator = match value()?.as_str() {
                    "euler" => Integrator::Euler,
                    "midpoint" => Integrator::Midpoint,
                    "rk4" => Integrator::Rk4,
                    other => return Err(format!("unknown integrator `{other}`")),
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// Two interleaved spirals, deterministic.
fn spirals(n: usize) -> Dataset {
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for i in 0..n {
        let class = (i % 2) as u32;
        let t = (i / 2) as f32 / (n / 2).max(1) as f32 * 3.0 * std::f32::consts::PI;
        let r = 0.2 + t / (3.0 * std::f32::consts::PI);
        let phase = if class == 0 {
            0.0
        } else {
            std::f32::consts::PI
        };
        x.push(r * (t + phase).cos() + 0.05 * noise());
        x.push(r * (t + phase).sin() + 0.05 * noise());
        y.push(class);
    }
    Dataset {
        x,
        y,
        dim: 2,
        classes: 2,
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let cfg = FlowConfig {
        in_dim: 2,
        classes: 2,
        dim: args.dim,
        hidden: args.hidden,
        steps: args.steps,
        h: 1.0 / args.steps as f32,
        weights: args.weights,
        form: args.form,
        integrator: args.integrator,
        activation: Activation::Tanh,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let data = spirals(POINTS);
    let members: Vec<TrainConfig> = (0..args.members)
        .map(|m| TrainConfig {
            epochs: args.epochs,
            batch: BATCH,
            lr: LRS[m % LRS.len()],
            seed: (m / LRS.len()) as u64,
            weight_decay: 0.0,
            lipschitz: None,
        })
        .collect();
    let model_steps = (args.members * args.epochs * POINTS.div_ceil(BATCH)) as f64;

    // One by one: `threads` workers, each training the next member on one thread.
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let alone: Vec<(usize, Flow)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        if args.fused_only {
                            return done;
                        }
                        let m = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if m >= members.len() {
                            return done;
                        }
                        let exec = ExecOptions {
                            threads: 1,
                            ..ExecOptions::default()
                        };
                        let flow =
                            train_flow_with(&cfg, &members[m], &data, &exec, &mut NoObserver)
                                .expect("training failed");
                        done.push((m, flow));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let alone_s = start.elapsed().as_secs_f64();
    let alone_cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);

    let cpu1 = cpu_seconds();
    let start = Instant::now();
    let sets: Vec<&Dataset> = vec![&data; args.members];
    let mut quiet: Vec<NoObserver> = vec![NoObserver; args.members];
    let mut obs: Vec<&mut dyn Observer<Accuracy>> = quiet
        .iter_mut()
        .map(|o| o as &mut dyn Observer<Accuracy>)
        .collect();
    let exec = ExecOptions {
        threads: args.threads,
        ..ExecOptions::default()
    };
    let fused = train_flow_group(&cfg, &members, &sets, &exec, &mut obs).expect("group failed");
    let fused_s = start.elapsed().as_secs_f64();
    let fused_cpu = cpu_seconds().zip(cpu1).map(|(b, a)| b - a);

    let identical = alone.iter().all(|(m, flow)| {
        let got = fused[*m].as_ref().expect("member failed");
        got.params()
            .iter()
            .zip(flow.params())
            .all(|(a, b)| a.to_bits() == b.to_bits())
    });
    let json_f = |x: Option<f64>| x.map_or("null".to_string(), |v| format!("{v:.2}"));
    println!(
        "{{\"members\":{},\"threads\":{},\"dim\":{},\"hidden\":{},\"steps\":{},\"weights\":\"{}\",\"form\":\"{}\",\"integrator\":\"{}\",\"epochs\":{},\"batch\":{BATCH},\"points\":{POINTS},\"fused_model_steps_per_s\":{:.0},\"alone_model_steps_per_s\":{:.0},\"speedup\":{:.2},\"fused_s\":{fused_s:.3},\"alone_s\":{alone_s:.3},\"fused_cpu_s\":{},\"alone_cpu_s\":{},\"bit_identical\":{identical}}}",
        args.members,
        args.threads,
        args.dim,
        args.hidden,
        args.steps,
        match args.weights {
            Weights::Shared => "shared",
            Weights::Unshared => "unshared",
        },
        args.form.name(),
        args.integrator.name(),
        args.epochs,
        model_steps / fused_s,
        model_steps / alone_s,
        alone_s / fused_s,
        json_f(fused_cpu),
        json_f(alone_cpu),
    );
}
