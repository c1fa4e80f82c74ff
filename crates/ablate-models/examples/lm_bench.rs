//! Training throughput of the `train.lm` transformers at performance.md's size: bytes
//! (vocab 362), d_model 128, 2 layers, 4 heads, d_ff 512, batch 32, AdamW.
//!
//! ```text
//! cargo run --release -p ablate-models --example lm_bench -- \
//!     [--threads T] [--seconds S] [--arch decoder|encdec|both] [--backend cpu|dfdx|cuda:N]
//! ```
//!
//! Decoder: rows of 128 tokens, every position weighted. Encdec: 64 encoder and 64 decoder
//! tokens per row (the same 128 tokens a row, split into inputs and targets). A step is the
//! forward pass, backward pass and AdamW update of one batch, timed through the public
//! `train_lm` (batch hand-over and validation included) after two warm-up steps. Prints one
//! JSON line per architecture with steps/s and tokens/s (encoder plus decoder tokens).
//! `scripts/bench_torch_lm.py` prints the same for PyTorch.

mod support;
use support::{backend_name, cpu_seconds, parse_backend};

use std::ops::ControlFlow;
use std::time::Instant;

use ablate_models::lm::{Arch, Batch, LmConfig, LmTrainConfig, train_lm_with};
use ablate_models::{Backend, ExecOptions, Observer, StepLog};

const ROWS: usize = 32;
const SEQ: usize = 128;
const WARMUP_STEPS: usize = 2;

struct Args {
    threads: usize,
    backend: Backend,
    seconds: f64,
    archs: Vec<Arch>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: 2,
        backend: Backend::Cpu,
        seconds: 10.0,
        archs: vec![Arch::Decoder, Arch::EncDec],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--threads" => {
                args.threads = value
                    .parse::<usize>()
                    .map_err(|e| format!("`{value}`: {e}"))?
            }
            "--backend" => args.backend = parse_backend(&value)?,
            "--seconds" => {
                args.seconds = value
                    .parse::<f64>()
                    .map_err(|e| format!("`{value}`: {e}"))?
            }
            "--arch" => {
                args.archs = match value.as_str() {
                    "decoder" => vec![Arch::Decoder],
                    "encdec" => vec![Arch::EncDec],
                    "both" => vec![Arch::Decoder, Arch::EncDec],
                    other => return Err(format!("unknown arch `{other}`")),
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// Deterministic byte-like tokens (xorshift).
fn noise(state: &mut u64, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state >> 56) as u32
        })
        .collect()
}

fn batch(arch: Arch, state: &mut u64) -> Batch {
    match arch {
        Arch::Decoder => {
            let tokens = noise(state, ROWS * SEQ);
            let mut targets = tokens[1..].to_vec();
            targets.push(0);
            Batch {
                rows: ROWS,
                len: SEQ,
                tokens,
                targets,
                weights: vec![1.0; ROWS * SEQ],
                prefix: vec![0; ROWS],
                ..Batch::default()
            }
        }
        Arch::EncDec => {
            let (s, t) = (SEQ / 2, SEQ / 2);
            let targets = noise(state, ROWS * t);
            let mut tokens = vec![257; ROWS * t];
            for r in 0..ROWS {
                tokens[r * t + 1..(r + 1) * t].copy_from_slice(&targets[r * t..(r + 1) * t - 1]);
            }
            Batch {
                rows: ROWS,
                len: t,
                tokens,
                targets,
                weights: vec![1.0; ROWS * t],
                prefix: vec![0; ROWS],
                enc_len: s,
                enc_tokens: noise(state, ROWS * s),
                enc_lens: vec![s; ROWS],
            }
        }
    }
}

struct Timer {
    seconds: f64,
    start: Option<Instant>,
    cpu_start: Option<f64>,
    cpu_end: Option<f64>,
    timed: usize,
    elapsed: f64,
    last_loss: f32,
}

impl Observer<()> for Timer {
    fn on_step(&mut self, log: &StepLog<()>) -> ControlFlow<()> {
        self.last_loss = log.loss;
        if log.step == WARMUP_STEPS {
            self.start = Some(Instant::now());
            self.cpu_start = cpu_seconds();
            return ControlFlow::Continue(());
        }
        if let Some(start) = self.start {
            self.timed += 1;
            self.elapsed = start.elapsed().as_secs_f64();
            if self.elapsed >= self.seconds {
                self.cpu_end = cpu_seconds();
                return ControlFlow::Break(());
            }
        }
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
    for &arch in &args.archs {
        let cfg = LmConfig {
            arch,
            vocab: 362,
            d_model: 128,
            layers: 2,
            heads: 4,
            d_ff: 512,
            seq_len: SEQ,
        };
        let train = LmTrainConfig {
            steps: 1_000_000,
            batch: ROWS,
            lr: 1e-3,
            warmup: 100,
            weight_decay: 0.01,
            clip: 1.0,
            seed: 0,
        };
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let pool: Vec<Batch> = (0..4).map(|_| batch(arch, &mut state)).collect();
        let tokens_per_step = ROWS * (pool[0].len + pool[0].enc_len);
        let mut timer = Timer {
            seconds: args.seconds,
            start: None,
            cpu_start: None,
            cpu_end: None,
            timed: 0,
            elapsed: 0.0,
            last_loss: f32::NAN,
        };
        let mut batches = |step: usize| pool[step % pool.len()].clone();
        // The timer stops training by cancelling it.
        let exec = ExecOptions {
            threads: args.threads,
            backend: args.backend,
        };
        if let Err(e) = train_lm_with(&cfg, &train, &exec, &mut batches, &mut timer) {
            // Stopping at the time limit is a cancellation; anything else is a failure.
            if !matches!(e, ablate_models::NnError::Cancelled) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        let steps_per_s = timer.timed as f64 / timer.elapsed.max(1e-9);
        let cpu_ms_per_step = match (timer.cpu_start, timer.cpu_end) {
            (Some(a), Some(b)) => format!("{:.1}", (b - a) * 1e3 / timer.timed.max(1) as f64),
            _ => "null".to_string(),
        };
        println!(
            "{{\"impl\":\"ablate\",\"backend\":\"{}\",\"arch\":\"{}\",\"threads\":{},\"steps\":{},\"seconds\":{:.2},\"steps_per_s\":{:.3},\"tokens_per_s\":{:.0},\"batch\":{ROWS},\"tokens_per_step\":{tokens_per_step},\"d_model\":128,\"layers\":2,\"heads\":4,\"d_ff\":512,\"vocab\":362,\"last_loss\":{:.4},\"cpu_ms_per_step\":{cpu_ms_per_step}}}",
            backend_name(args.backend),
            arch.name(),
            args.threads,
            timer.timed,
            timer.elapsed,
            steps_per_s,
            steps_per_s * tokens_per_step as f64,
            timer.last_loss,
        );
    }
}
