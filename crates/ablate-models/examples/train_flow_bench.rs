//! Training throughput of the paper's MLP-ResNet: lift 2→32, 10 residual steps, hidden 64,
//! batch 256, 2 classes, Adam — the model of performance.md's PyTorch figures.
//!
//! ```text
//! cargo run --release -p ablate-models --example train_flow_bench -- \
//!     [--weights shared|unshared] [--steps-per-run N] [--threads T] [--runs R] [--backend cpu|dfdx|cuda:N]
//!     [--form c0|c1|c2] [--integrator euler|midpoint|rk4] [--activation tanh|relu]
//! ```
//!
//! The defaults (C1, Euler, tanh) are the paper's model.
//!
//! Prints one JSON line. A step is the forward pass, backward pass and Adam update of one batch,
//! timed through the public `train_flow_with` (shuffling and batch gathering included): one
//! warm-up run, then `R` timed runs of `N` steps each, reporting the median.

mod support;
use support::{backend_name, cpu_seconds, parse_backend};

use std::ops::ControlFlow;
use std::time::Instant;

use ablate_models::{
    Accuracy, Activation, Backend, Dataset, EpochLog, ExecOptions, FlowConfig, Form, Integrator,
    Observer, TrainConfig, Weights, train_flow_with,
};

const BATCH: usize = 256;
const STEPS: usize = 10;
const HIDDEN: usize = 64;
const DIM: usize = 32;

struct Args {
    weights: Weights,
    steps_per_run: usize,
    threads: usize,
    runs: usize,
    backend: Backend,
    form: Form,
    integrator: Integrator,
    activation: Activation,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        weights: Weights::Shared,
        steps_per_run: 400,
        threads: 1,
        runs: 5,
        backend: Backend::Cpu,
        form: Form::C1,
        integrator: Integrator::Euler,
        activation: Activation::Tanh,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("`{flag}` needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("`{v}`: {e}"));
        match flag.as_str() {
            "--weights" => {
                args.weights = match value()?.as_str() {
                    "shared" => Weights::Shared,
                    "unshared" => Weights::Unshared,
                    other => return Err(format!("unknown weights `{other}`")),
                }
            }
            "--backend" => args.backend = parse_backend(&value()?)?,
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
            "--activation" => {
                args.activation = match value()?.as_str() {
                    "tanh" => Activation::Tanh,
                    "relu" => Activation::Relu,
                    other => return Err(format!("unknown activation `{other}`")),
                }
            }
            "--steps-per-run" => args.steps_per_run = number(value()?)?.max(1),
            "--threads" => args.threads = number(value()?)?.max(1),
            "--runs" => args.runs = number(value()?)?.max(1),
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

struct Quiet;

impl Observer<Accuracy> for Quiet {
    fn on_epoch(&mut self, _: &EpochLog<Accuracy>) -> ControlFlow<()> {
        ControlFlow::Continue(())
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
        dim: DIM,
        hidden: HIDDEN,
        steps: STEPS,
        h: 1.0 / STEPS as f32,
        weights: args.weights,
        form: args.form,
        integrator: args.integrator,
        activation: args.activation,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let data = spirals(BATCH * args.steps_per_run);
    let exec = ExecOptions {
        threads: args.threads,
        backend: args.backend,
    };
    let run = |seed| {
        // One epoch over steps_per_run full batches = steps_per_run training steps.
        let train = TrainConfig {
            epochs: 1,
            batch: BATCH,
            lr: 1e-3,
            seed,
            weight_decay: 0.0,
            lipschitz: None,
        };
        let start = Instant::now();
        train_flow_with(&cfg, &train, &data, &exec, &mut Quiet).expect("training failed");
        args.steps_per_run as f64 / start.elapsed().as_secs_f64()
    };
    run(0); // warm-up: page in buffers, settle the clock
    let cpu_start = cpu_seconds();
    let mut rates: Vec<f64> = (0..args.runs).map(|r| run(r as u64 + 1)).collect();
    let cpu_ms_per_step = match (cpu_start, cpu_seconds()) {
        (Some(a), Some(b)) => format!(
            "{:.2}",
            (b - a) * 1e3 / (args.runs * args.steps_per_run) as f64
        ),
        _ => "null".to_string(),
    };
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let weights = match args.weights {
        Weights::Shared => "shared",
        Weights::Unshared => "unshared",
    };
    let backend = backend_name(args.backend);
    println!(
        "{{\"weights\":\"{weights}\",\"steps_per_s\":{median:.1},\"batch\":{BATCH},\"blocks\":{STEPS},\"hidden\":{HIDDEN},\"dim\":{DIM},\"threads\":{},\"backend\":\"{backend}\",\"form\":\"{}\",\"integrator\":\"{}\",\"activation\":\"{}\",\"runs\":{},\"min\":{:.1},\"max\":{:.1},\"cpu_ms_per_step\":{cpu_ms_per_step}}}",
        args.threads,
        args.form.name(),
        args.integrator.name(),
        args.activation.name(),
        args.runs,
        rates[0],
        rates[rates.len() - 1],
    );
}
