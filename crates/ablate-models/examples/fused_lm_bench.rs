//! A fused sweep of the `train.lm` transformers (issue 23) against the same members trained
//! one by one, at `pipelines/ablation.yaml`'s `ul2_lm` size: d_model 64, 4 heads, d_ff 256,
//! 2 layers, seq_len 64, batch 16, the `ul2` objective (span_scale 0.125) on a synthetic corpus.
//!
//! ```text
//! cargo run --release -p ablate-models --example fused_lm_bench -- \
//!     [--threads T] [--steps N] [--members K] [--arch decoder|encdec|both] \
//!     [--backend cpu|dfdx|cuda:N] [--repeat R]
//! ```
//!
//! The members are a seed × lr grid (4 lrs, K/4 seeds), each with its own sampler. Every
//! member's batches are drawn before the clock starts, so both sides time training alone.
//! Three ways of training the same K members for N steps each, timed end to end:
//! `fused` (`train_lm_group`, T threads), `one_by_one` (`train_lm_with` per member, T threads
//! each, one after another: the same total threads) and `side_by_side` (T members at a time,
//! one thread each: what `--jobs T` does with `fuse: off`), in R interleaved rounds of which
//! the fastest of each way counts. Prints one JSON line per
//! architecture with model-steps/s and tokens/s (encoder plus decoder tokens) of each, the
//! speed-ups of `fused`, the CPU seconds each used (how much of the machine it got: on a shared
//! machine a wall time means little without it), whether every member's parameters came out
//! bit-identical to its run alone, and the largest difference (the dfdx path's batched group
//! is equal within rounding only).

use std::time::Instant;

use ablate_models::lm::{
    self, Arch, Batch, LmConfig, LmTrainConfig, MixtureOptions, Objective, Sampler, train_lm_group,
    train_lm_with,
};
use ablate_models::{Backend, ExecOptions, NoObserver, Observer};

mod support;
use support::{backend_name, cpu_seconds, parse_backend};

struct Args {
    threads: usize,
    steps: usize,
    members: usize,
    archs: Vec<Arch>,
    backend: Backend,
    repeat: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: 2,
        steps: 40,
        members: 16,
        archs: vec![Arch::Decoder, Arch::EncDec],
        backend: Backend::Cpu,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        let int = |v: &str| v.parse::<usize>().map_err(|e| format!("`{v}`: {e}"));
        match flag.as_str() {
            "--threads" => args.threads = int(&value)?,
            "--steps" => args.steps = int(&value)?,
            "--members" => args.members = int(&value)?,
            "--backend" => args.backend = parse_backend(&value)?,
            "--repeat" => args.repeat = int(&value)?,
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
    if args.threads == 0 || args.steps == 0 || args.members == 0 || args.repeat == 0 {
        return Err("`--threads`, `--steps`, `--members` and `--repeat` must be at least 1".into());
    }
    Ok(args)
}

const LRS: [f32; 4] = [1e-3, 3e-3, 1e-2, 3e-2];

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let stream = lm::token_stream(&lm::synthetic_corpus(2000, 0));
    let opts = MixtureOptions {
        span_scale: 0.125,
        ..MixtureOptions::default()
    };
    let mixture = Objective::Ul2.mixture(&opts).expect("ul2 mixture");
    for &arch in &args.archs {
        let cfg = LmConfig {
            arch,
            vocab: lm::vocab::VOCAB,
            d_model: 64,
            layers: 2,
            heads: 4,
            d_ff: 256,
            seq_len: 64,
        };
        let trains: Vec<LmTrainConfig> = (0..args.members)
            .map(|m| LmTrainConfig {
                steps: args.steps,
                batch: 16,
                lr: LRS[m % LRS.len()],
                warmup: 100,
                weight_decay: 0.0,
                clip: 1.0,
                seed: (m / LRS.len()) as u64,
            })
            .collect();
        let data: Vec<Vec<Batch>> = trains
            .iter()
            .map(|t| {
                let prefix_lm = arch == Arch::Decoder;
                let mut s = Sampler::new(
                    stream.clone(),
                    mixture.clone(),
                    arch,
                    64,
                    false,
                    prefix_lm,
                    t.seed,
                )
                .expect("sampler");
                (0..t.steps).map(|_| s.next_batch(t.batch)).collect()
            })
            .collect();
        let tokens: usize = data
            .iter()
            .flatten()
            .map(|b| b.rows * (b.len + b.enc_len))
            .sum();
        let exec = |threads| ExecOptions {
            threads,
            backend: args.backend,
        };
        let cpu = || cpu_seconds().unwrap_or(f64::NAN);

        let mut best = [(f64::INFINITY, 0.0); 3];
        let mut kept = None;
        // Best of `--repeat` rounds, the three ways interleaved: on a shared machine the
        // least disturbed round is the one that measures the code.
        for _ in 0..args.repeat {
            let (start, cpu0) = (Instant::now(), cpu());
            let mut fns: Vec<_> = data.iter().map(|d| move |s: usize| d[s].clone()).collect();
            let mut batches: Vec<&mut dyn FnMut(usize) -> Batch> = fns
                .iter_mut()
                .map(|f| f as &mut dyn FnMut(usize) -> Batch)
                .collect();
            let mut quiet: Vec<NoObserver> = vec![NoObserver; args.members];
            let mut observers: Vec<&mut dyn Observer<()>> = quiet
                .iter_mut()
                .map(|o| o as &mut dyn Observer<()>)
                .collect();
            let fused = train_lm_group(
                &cfg,
                &trains,
                &exec(args.threads),
                &mut batches,
                &mut observers,
            )
            .expect("group");
            let (fused_s, fused_cpu) = (start.elapsed().as_secs_f64(), cpu() - cpu0);

            let (start, cpu0) = (Instant::now(), cpu());
            let alone: Vec<_> = trains
                .iter()
                .zip(&data)
                .map(|(t, d)| {
                    train_lm_with(
                        &cfg,
                        t,
                        &exec(args.threads),
                        &mut |s| d[s].clone(),
                        &mut NoObserver,
                    )
                })
                .collect();
            let (one_by_one_s, one_by_one_cpu) = (start.elapsed().as_secs_f64(), cpu() - cpu0);

            let (start, cpu0) = (Instant::now(), cpu());
            let next = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..args.threads {
                    scope.spawn(|| {
                        loop {
                            let m = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if m >= args.members {
                                break;
                            }
                            let d = &data[m];
                            train_lm_with(
                                &cfg,
                                &trains[m],
                                &exec(1),
                                &mut |s| d[s].clone(),
                                &mut NoObserver,
                            )
                            .expect("member");
                        }
                    });
                }
            });
            let (side_by_side_s, side_by_side_cpu) = (start.elapsed().as_secs_f64(), cpu() - cpu0);
            let now = [
                (fused_s, fused_cpu),
                (one_by_one_s, one_by_one_cpu),
                (side_by_side_s, side_by_side_cpu),
            ];
            for (b, now) in best.iter_mut().zip(now) {
                if now.0 < b.0 {
                    *b = now;
                }
            }
            kept = Some((fused, alone));
        }
        let (fused, alone) = kept.expect("at least one round");
        let [
            (fused_s, fused_cpu),
            (one_by_one_s, one_by_one_cpu),
            (side_by_side_s, side_by_side_cpu),
        ] = best;

        let identical = fused.iter().zip(&alone).all(|(f, a)| match (f, a) {
            (Ok((f, fl)), Ok((a, al))) => {
                fl == al
                    && f.params()
                        .iter()
                        .zip(a.params())
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        });
        let max_diff = fused
            .iter()
            .zip(&alone)
            .map(|(f, a)| match (f, a) {
                (Ok((f, _)), Ok((a, _))) => f
                    .params()
                    .iter()
                    .zip(a.params())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max),
                _ => f32::NAN,
            })
            .fold(0.0f32, f32::max);
        let model_steps = (args.members * args.steps) as f64;
        println!(
            "{{\"bench\":\"fused_lm\",\"backend\":\"{}\",\"arch\":\"{}\",\"members\":{},\"steps\":{},\"threads\":{},\"repeat\":{},\"d_model\":64,\"layers\":2,\"heads\":4,\"d_ff\":256,\"seq_len\":64,\"batch\":16,\"objective\":\"ul2\",\"fused_s\":{:.3},\"one_by_one_s\":{:.3},\"side_by_side_s\":{:.3},\"fused_model_steps_per_s\":{:.2},\"one_by_one_model_steps_per_s\":{:.2},\"side_by_side_model_steps_per_s\":{:.2},\"fused_tokens_per_s\":{:.0},\"one_by_one_tokens_per_s\":{:.0},\"side_by_side_tokens_per_s\":{:.0},\"speedup_vs_one_by_one\":{:.2},\"speedup_vs_side_by_side\":{:.2},\"fused_cpu_s\":{fused_cpu:.2},\"one_by_one_cpu_s\":{one_by_one_cpu:.2},\"side_by_side_cpu_s\":{side_by_side_cpu:.2},\"bit_identical\":{identical},\"max_param_diff\":{max_diff:e}}}",
            backend_name(args.backend),
            arch.name(),
            args.members,
            args.steps,
            args.threads,
            args.repeat,
            fused_s,
            one_by_one_s,
            side_by_side_s,
            model_steps / fused_s,
            model_steps / one_by_one_s,
            model_steps / side_by_side_s,
            tokens as f64 / fused_s,
            tokens as f64 / one_by_one_s,
            tokens as f64 / side_by_side_s,
            one_by_one_s / fused_s,
            side_by_side_s / fused_s,
        );
    }
}
