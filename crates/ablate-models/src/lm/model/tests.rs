use super::*;
use crate::lm::cpu::cpu_loss_and_grad;
use crate::lm::train::tests::{PATTERN, pattern_batch, tiny, trained_on_pattern};
use crate::lm::vocab::EOS;
use crate::rng::SplitMix64;
use safetensors::tensor::SafeTensors;

/// A model with random (large) parameters, so greedy choices are varied.
fn random_model(arch: Arch, seed: u64) -> Lm {
    let cfg = tiny(arch);
    let n = LmLayout::new(&cfg).total();
    let mut rng = SplitMix64::new(seed, 5);
    Lm::from_parts(cfg, (0..n).map(|_| rng.uniform(0.5)).collect()).unwrap()
}

/// Greedy decoding one row at a time through `Lm::logits` (no batching, no encoder reuse, no
/// shards): what `generate` must agree with. An encoder-decoder's decoder reads `[BOS] ++ dec ++
/// generated`.
fn slow_greedy(
    lm: &Lm,
    input: &[u32],
    dec: &[u32],
    prefix_lm: bool,
    max_new: usize,
    stop: &[u32],
) -> Vec<u32> {
    let cfg = lm.config();
    let v = cfg.vocab;
    let mut out: Vec<u32> = Vec::new();
    loop {
        let (batch, pos) = match cfg.arch {
            Arch::Decoder => {
                // As `generate`: no token whose sequence would not fit to be read.
                if input.len() + out.len() >= cfg.seq_len {
                    break;
                }
                let seq: Vec<u32> = input.iter().chain(&out).copied().collect();
                let n = seq.len();
                let b = Batch {
                    rows: 1,
                    len: n,
                    targets: vec![0; n],
                    weights: vec![0.0; n],
                    prefix: vec![if prefix_lm { input.len() } else { 0 }],
                    tokens: seq,
                    ..Batch::default()
                };
                (b, n - 1)
            }
            Arch::EncDec => {
                if 1 + dec.len() + out.len() >= cfg.seq_len {
                    break;
                }
                let seq: Vec<u32> = std::iter::once(BOS)
                    .chain(dec.iter().chain(&out).copied())
                    .collect();
                let n = seq.len();
                let b = Batch {
                    rows: 1,
                    len: n,
                    targets: vec![0; n],
                    weights: vec![0.0; n],
                    prefix: vec![0],
                    tokens: seq,
                    enc_len: input.len().max(1),
                    enc_tokens: {
                        let mut e = input.to_vec();
                        e.resize(input.len().max(1), 0);
                        e
                    },
                    enc_lens: vec![input.len()],
                };
                (b, n - 1)
            }
        };
        let logits = lm.logits(&batch).unwrap();
        let row = &logits[pos * v..(pos + 1) * v];
        let best = (0..v).fold(0, |b, j| if row[j] > row[b] { j } else { b }) as u32;
        out.push(best);
        let fits = match cfg.arch {
            Arch::Decoder => input.len() + out.len() < cfg.seq_len,
            Arch::EncDec => 1 + dec.len() + out.len() < cfg.seq_len,
        };
        if stop.contains(&best) || out.len() >= max_new || !fits {
            break;
        }
    }
    out
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 2, 3],
        vec![7],
        vec![5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5],
        vec![9, 8, 7, 6, 5],
    ]
}

#[test]
fn generate_matches_one_row_greedy_decoding() {
    for arch in [Arch::Decoder, Arch::EncDec] {
        let lm = random_model(arch, 1);
        for prefix_lm in [false, true] {
            for (max_new, stop) in [(20, vec![]), (3, vec![]), (20, vec![7u32, 11, 200])] {
                let got = lm
                    .generate(&prompts(), prefix_lm, max_new, &stop, &Runtime::cpu(2))
                    .unwrap();
                for (input, got) in prompts().iter().zip(&got) {
                    let want = slow_greedy(&lm, input, &[], prefix_lm, max_new, &stop);
                    assert_eq!(got, &want, "{arch:?} prefix {prefix_lm} input {input:?}");
                    assert!(got.len() <= max_new);
                }
            }
        }
    }
}

#[test]
fn generate_in_decoder_matches_one_row_greedy_decoding() {
    let lm = random_model(Arch::EncDec, 4);
    let leads = vec![vec![3]; prompts().len()];
    for (max_new, stop) in [(20, vec![]), (2, vec![]), (20, vec![7u32, 11, 200])] {
        let got = lm
            .generate_in_decoder(&leads, &prompts(), max_new, &stop, &Runtime::cpu(2))
            .unwrap();
        for (prompt, got) in prompts().iter().zip(&got) {
            let want = slow_greedy(&lm, &[3], prompt, false, max_new, &stop);
            assert_eq!(got, &want, "prompt {prompt:?}");
        }
    }
    // The prompt matters: it is read, not dropped.
    let outs = lm
        .generate_in_decoder(&leads, &prompts(), 8, &[], &Runtime::cpu(1))
        .unwrap();
    assert!(outs.iter().any(|o| o != &outs[0]), "{outs:?}");
    let seq = lm.config().seq_len;
    assert!(
        lm.generate_in_decoder(&[vec![3]], &[vec![1; seq]], 3, &[], &Runtime::cpu(1))
            .is_err()
    );
    assert!(
        lm.generate_in_decoder(&leads, &[vec![1]], 3, &[], &Runtime::cpu(1))
            .is_err()
    );
    assert!(
        random_model(Arch::Decoder, 4)
            .generate_in_decoder(&leads, &prompts(), 3, &[], &Runtime::cpu(1))
            .is_err()
    );
}

#[test]
fn a_trained_model_continues_its_pattern() {
    let (lm, _) = trained_on_pattern(150);
    let prompt: Vec<u32> = vec![PATTERN[1], PATTERN[2], PATTERN[3]];
    let out = lm
        .generate(
            &[prompt.clone(), vec![PATTERN[0]]],
            false,
            6,
            &[],
            &Runtime::cpu(1),
        )
        .unwrap();
    let want = |start: usize, n: usize| -> Vec<u32> {
        (0..n)
            .map(|i| PATTERN[(start + i) % PATTERN.len()])
            .collect()
    };
    assert_eq!(out[0], want(0, 6));
    assert_eq!(out[1], want(1, 6));
    // a stop token ends the row and is kept; seq_len bounds the rest
    let out = lm
        .generate(&[prompt], false, 100, &[PATTERN[2]], &Runtime::cpu(1))
        .unwrap();
    assert_eq!(out[0], want(0, 3));
    let out = lm
        .generate(&[vec![PATTERN[0]]], false, 100, &[EOS], &Runtime::cpu(1))
        .unwrap();
    assert_eq!(out[0].len(), lm.config().seq_len - 1);
}

#[test]
fn nll_is_the_training_loss_and_thread_independent() {
    let lm = random_model(Arch::EncDec, 3);
    let mut b = pattern_batch(40, 12, 0);
    b.prefix = vec![0; 40];
    b.enc_len = 5;
    b.enc_lens = (0..40).map(|r| r % 6).collect();
    b.enc_tokens = (0..200).map(|i| (i * 37 % 300) as u32).collect();
    b.weights.iter_mut().step_by(3).for_each(|w| *w = 0.5);
    let (s1, w1) = lm.nll(&b, &Runtime::cpu(1)).unwrap();
    let (s3, w3) = lm.nll(&b, &Runtime::cpu(3)).unwrap();
    assert_eq!((s1.to_bits(), w1), (s3.to_bits(), w3));
    let layout = LmLayout::new(lm.config());
    let (loss, _) = cpu_loss_and_grad(lm.config(), &layout, lm.params(), &b, 2).unwrap();
    assert!(
        (s1 / w1 - loss as f64).abs() < 1e-6,
        "{} vs {loss}",
        s1 / w1
    );
    assert_eq!(w1, b.weights.iter().map(|&w| w as f64).sum::<f64>());
}

#[test]
fn save_load_round_trip_keeps_params_config_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::Decoder, Arch::EncDec] {
        let lm = random_model(arch, 4);
        let path = dir.path().join(format!("{}.safetensors", arch.name()));
        let meta = BTreeMap::from([("objective".to_string(), "ul2".to_string())]);
        lm.save(&path, &meta).unwrap();
        let (back, got_meta) = Lm::load_with_meta(&path).unwrap();
        assert_eq!(back, lm);
        assert_eq!(got_meta, meta);
        assert_eq!(Lm::load(&path).unwrap(), lm);
        // one tensor per slot, named as the slot
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let layout = LmLayout::new(lm.config());
        assert_eq!(st.len(), layout.store.slots().len());
        let slot = &layout.store.slots()[3];
        assert_eq!(
            st.tensor(&slot.name).unwrap().shape(),
            slot.shape.as_slice()
        );
    }
}

#[test]
fn lm_files_with_several_metadata_keys_are_byte_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let lm = random_model(Arch::EncDec, 6);
    let meta: BTreeMap<String, String> =
        (0..8).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let first = dir.path().join("first.safetensors");
    lm.save(&first, &meta).unwrap();
    let bytes = std::fs::read(&first).unwrap();
    for i in 0..8 {
        let path = dir.path().join(format!("again{i}.safetensors"));
        lm.save(&path, &meta).unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes, "save {i} differs");
    }
    let (back, got) = Lm::load_with_meta(&first).unwrap();
    assert_eq!((back, got), (lm, meta));
}

#[test]
fn bad_model_files_are_format_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let lm = random_model(Arch::Decoder, 5);
    let path = dir.path().join("m.safetensors");
    lm.save(&path, &BTreeMap::new()).unwrap();
    let is_format = |r: Result<Lm, NnError>, p: &Path| match r {
        Err(e @ NnError::Format { .. }) => {
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
            true
        }
        _ => false,
    };
    // truncated
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    assert!(is_format(Lm::load(&cut), &cut));
    // not safetensors at all
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(is_format(Lm::load(&junk), &junk));
    // a valid safetensors file of another shape: a model of a different config, relabelled
    let other = Lm::init(
        &LmConfig {
            d_model: 8,
            ..tiny(Arch::Decoder)
        },
        0,
    )
    .unwrap();
    let wrong = dir.path().join("wrong.safetensors");
    other.save(&wrong, &BTreeMap::new()).unwrap();
    let st_bytes = std::fs::read(&wrong).unwrap();
    let st = SafeTensors::deserialize(&st_bytes).unwrap();
    let cfg_json = serde_json::to_string(lm.config()).unwrap();
    let meta = std::collections::HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT.to_string()),
        (CONFIG_KEY.to_string(), cfg_json),
    ]);
    let file = safetensors::serialize(st.tensors(), &Some(meta)).unwrap();
    std::fs::write(&wrong, file).unwrap();
    assert!(is_format(Lm::load(&wrong), &wrong));
    // missing file: an I/O error
    assert!(matches!(
        Lm::load(&dir.path().join("absent")),
        Err(NnError::Io { .. })
    ));
    // reserved metadata keys are refused
    let meta = BTreeMap::from([(FORMAT_KEY.to_string(), "x".to_string())]);
    assert!(matches!(
        lm.save(&path, &meta),
        Err(NnError::InvalidConfig(_))
    ));
}

#[test]
fn generate_rejects_bad_prompts() {
    let lm = random_model(Arch::Decoder, 6);
    assert!(
        lm.generate(&[vec![]], false, 3, &[], &Runtime::cpu(1))
            .is_err()
    );
    assert!(
        lm.generate(&[vec![400]], false, 3, &[], &Runtime::cpu(1))
            .is_err()
    );
    assert!(
        lm.generate(&[vec![1; 13]], false, 3, &[], &Runtime::cpu(1))
            .is_err()
    );
    // a prompt that fills seq_len gets nothing more
    assert_eq!(
        lm.generate(&[vec![1; 12]], false, 3, &[], &Runtime::cpu(1))
            .unwrap(),
        vec![Vec::<u32>::new()]
    );
    let enc = random_model(Arch::EncDec, 6);
    assert_eq!(
        enc.generate(&[vec![]], false, 2, &[], &Runtime::cpu(1))
            .unwrap()[0]
            .len(),
        2
    );
}

/// The dfdx device path (a CUDA build's evaluation) decodes the same tokens and scores the same
/// NLL as the CPU kernels, for both architectures and every way of reading a prompt.
#[test]
fn the_device_path_decodes_and_scores_as_the_cpu() {
    use crate::{Backend, ExecOptions};
    let dfdx = Runtime::open(&ExecOptions {
        threads: 1,
        backend: Backend::Dfdx,
    })
    .unwrap();
    let cpu = Runtime::cpu(2);
    let stop = [7u32, 11, 200];
    for arch in [Arch::Decoder, Arch::EncDec] {
        let lm = random_model(arch, 7);
        for prefix_lm in [false, true] {
            let run = |rt| lm.generate(&prompts(), prefix_lm, 20, &stop, rt).unwrap();
            assert_eq!(run(&dfdx), run(&cpu), "{arch:?} prefix {prefix_lm}");
        }
        let mut b = pattern_batch(40, 12, 0);
        b.weights.iter_mut().step_by(3).for_each(|w| *w = 0.5);
        b.weights[5] = 0.0;
        if arch == Arch::EncDec {
            b.prefix = vec![0; 40];
            b.enc_len = 5;
            b.enc_lens = (0..40).map(|r| 1 + r % 5).collect();
            b.enc_tokens = (0..200).map(|i| (i * 37 % 300) as u32).collect();
        }
        let (s_cpu, w_cpu) = lm.nll(&b, &cpu).unwrap();
        let (s_dev, w_dev) = lm.nll(&b, &dfdx).unwrap();
        assert_eq!(w_cpu, w_dev);
        assert!(
            (s_cpu - s_dev).abs() < 1e-5 * s_cpu.abs(),
            "{arch:?}: {s_cpu} vs {s_dev}"
        );
        // Other arithmetic, so not to the bit: a device runtime that fell back to the CPU
        // kernels would agree exactly.
        assert_ne!(s_cpu.to_bits(), s_dev.to_bits(), "{arch:?}");
    }
    let lm = random_model(Arch::EncDec, 8);
    let leads = vec![vec![3]; prompts().len()];
    let run = |rt| {
        lm.generate_in_decoder(&leads, &prompts(), 20, &stop, rt)
            .unwrap()
    };
    assert_eq!(run(&dfdx), run(&cpu));
    // Malformed prompts are refused before any device work, as on the CPU.
    assert!(lm.generate(&[vec![400]], false, 3, &[], &dfdx).is_err());
}
