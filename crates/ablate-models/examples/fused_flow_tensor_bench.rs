//! Throughput of a fused flow sweep on the dfdx tensor path (issue 23, the GPU lane): `K`
//! members (learning rates × seeds) of one flow trained as one group by `train_flow_group` on
//! `--backend dfdx` (or `cuda` in a `cuda` build: one batched computation per step), against
//! the same members trained one after another by `train_flow_with` on the same backend. The
//! defaults are the paper pipelines' sweep at fewer epochs: 2-D data, 1,000 points, batch 100,
//! hidden 32, 16 Euler steps, 32 members (4 lr × 8 seeds), 3 epochs.
//!
//! ```text
//! cargo run --release -p ablate-models --example fused_flow_tensor_bench -- \
//!     [--backend dfdx|cuda[:N]] [--members K] [--hidden H] [--steps N] [--epochs E]
//! ```
//!
//! Prints one JSON line: model-steps/s fused and one by one, their ratio, the CPU seconds each
//! used, and the largest parameter difference between a member fused and alone.

mod support;
use support::{backend_name, cpu_seconds, parse_backend};

use std::time::Instant;

use ablate_models::{
    Accuracy, Activation, Backend, Dataset, ExecOptions, FlowConfig, Form, Integrator, NoObserver,
    Observer, TrainConfig, Weights, train_flow_group, train_flow_with,
};

const POINTS: usize = 1000;
const BATCH: usize = 100;
const LRS: [f32; 4] = [1e-3, 3e-3, 1e-2, 3e-2];

struct Args {
    backend: Backend,
    members: usize,
    hidden: usize,
    steps: usize,
    epochs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backend: Backend::Dfdx,
        members: 32,
        hidden: 32,
        steps: 16,
        epochs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("`{flag}` needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("`{v}`: {e}"));
        match flag.as_str() {
            "--backend" => args.backend = parse_backend(&value()?)?,
            "--members" => args.members = number(value()?)?.max(1),
            "--hidden" => args.hidden = number(value()?)?.max(1),
            "--steps" => args.steps = number(value()?)?.max(1),
            "--epochs" => args.epochs = number(value()?)?.max(1),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.backend == Backend::Cpu {
        return Err("this bench measures the tensor path: use `--backend dfdx` or `cuda`".into());
    }
    Ok(args)
}

/// Two interleaved spirals, deterministic (as `fused_flow_bench`).
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
        dim: 2,
        hidden: args.hidden,
        steps: args.steps,
        h: 1.0 / args.steps as f32,
        weights: Weights::Shared,
        form: Form::C1,
        integrator: Integrator::Euler,
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
    let exec = ExecOptions {
        threads: 1,
        backend: args.backend,
    };
    let model_steps = (args.members * args.epochs * POINTS.div_ceil(BATCH)) as f64;

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let alone: Vec<_> = members
        .iter()
        .map(|t| train_flow_with(&cfg, t, &data, &exec, &mut NoObserver).expect("training failed"))
        .collect();
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
    let fused = train_flow_group(&cfg, &members, &sets, &exec, &mut obs).expect("group failed");
    let fused_s = start.elapsed().as_secs_f64();
    let fused_cpu = cpu_seconds().zip(cpu1).map(|(b, a)| b - a);

    let max_diff = alone
        .iter()
        .zip(&fused)
        .flat_map(|(a, f)| {
            let f = f.as_ref().expect("member failed");
            a.params()
                .iter()
                .zip(f.params())
                .map(|(x, y)| (x - y).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0f32, f32::max);
    let json_f = |x: Option<f64>| x.map_or("null".to_string(), |v| format!("{v:.2}"));
    println!(
        "{{\"backend\":\"{}\",\"members\":{},\"hidden\":{},\"steps\":{},\"epochs\":{},\"batch\":{BATCH},\"points\":{POINTS},\"fused_model_steps_per_s\":{:.0},\"alone_model_steps_per_s\":{:.0},\"speedup\":{:.2},\"fused_s\":{fused_s:.3},\"alone_s\":{alone_s:.3},\"fused_cpu_s\":{},\"alone_cpu_s\":{},\"max_param_diff\":{max_diff:e}}}",
        backend_name(args.backend),
        args.members,
        args.hidden,
        args.steps,
        args.epochs,
        model_steps / fused_s,
        model_steps / alone_s,
        alone_s / fused_s,
        json_f(fused_cpu),
        json_f(alone_cpu),
    );
}
