//! Evaluation data: held-out windows for next-token NLL and span infilling, and the one-shot
//! tasks, with their scoring. No model here: the eval op feeds these examples to a model's
//! greedy decoder and scores what comes back.

use super::config::Arch;
use super::denoise::{Denoiser, Example, corrupt, raw_len};
use super::layout::STREAM_LM_EVAL;
use super::vocab::{self, EOS, Mode};
use crate::NnError;
use crate::rng::SplitMix64;

/// `n` held-out windows for next-token NLL: causal examples (`inputs = [lead]`, `targets` the
/// window) of the longest window a `seq_len` model takes. The windows do not overlap when the
/// stream holds `n` of them, else they are drawn uniformly (with overlaps). Deterministic in
/// `seed`.
pub fn clm_examples(
    stream: &[u32],
    n: usize,
    arch: Arch,
    seq_len: usize,
    lead: u32,
    seed: u64,
) -> Result<Vec<Example>, NnError> {
    let d = Denoiser::Causal;
    let len = raw_len(&d, arch, seq_len)?;
    let mut rng = SplitMix64::new(seed, STREAM_LM_EVAL);
    Ok(windows(stream, n, len, &mut rng)?
        .into_iter()
        .map(|w| corrupt(&d, w, lead, &mut rng))
        .collect())
}

/// The denoiser of [`infill_examples`]: T5's span corruption (μ = 3, r = 0.15).
pub const INFILL: Denoiser = Denoiser::Span {
    mu: 3.0,
    r: 0.15,
    mode: Mode::R,
};

/// `n` held-out span-infilling examples: windows as in [`clm_examples`] (of the [`INFILL`]
/// denoiser's raw length) corrupted by [`INFILL`]. Score generations with [`score_infill`].
pub fn infill_examples(
    stream: &[u32],
    n: usize,
    arch: Arch,
    seq_len: usize,
    lead: u32,
    seed: u64,
) -> Result<Vec<Example>, NnError> {
    let len = raw_len(&INFILL, arch, seq_len)?;
    // Another stream than clm_examples', so the same seed does not pick the same windows.
    let mut rng = SplitMix64::new(seed ^ 0x1f11, STREAM_LM_EVAL);
    Ok(windows(stream, n, len, &mut rng)?
        .into_iter()
        .map(|w| corrupt(&INFILL, w, lead, &mut rng))
        .collect())
}

fn windows<'a>(
    stream: &'a [u32],
    n: usize,
    len: usize,
    rng: &mut SplitMix64,
) -> Result<Vec<&'a [u32]>, NnError> {
    if stream.len() < len {
        return Err(NnError::InvalidData(format!(
            "the evaluation stream has {} tokens, fewer than one window of {len}",
            stream.len()
        )));
    }
    let slots = stream.len() / len;
    if slots >= n {
        let mut idx: Vec<usize> = (0..slots).collect();
        rng.shuffle(&mut idx);
        idx.truncate(n);
        idx.sort_unstable();
        return Ok(idx
            .iter()
            .map(|&i| &stream[i * len..(i + 1) * len])
            .collect());
    }
    Ok((0..n)
        .map(|_| {
            let s = rng.below(stream.len() - len + 1);
            &stream[s..s + len]
        })
        .collect())
}

/// The spans of a span-corruption target (or a generation): each sentinel with the tokens after
/// it up to the next sentinel, EOS or the end. Tokens before the first sentinel, and everything
/// after an EOS, are no span.
fn spans(tokens: &[u32]) -> Vec<(u32, &[u32])> {
    let end = tokens
        .iter()
        .position(|&t| t == EOS)
        .unwrap_or(tokens.len());
    let tokens = &tokens[..end];
    let starts: Vec<usize> = (0..tokens.len())
        .filter(|&i| vocab::is_sentinel(tokens[i]))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(j, &s)| {
            let stop = starts.get(j + 1).copied().unwrap_or(tokens.len());
            (tokens[s], &tokens[s + 1..stop])
        })
        .collect()
}

/// `(spans reproduced exactly, spans)`: a target's span counts as reproduced iff the generation,
/// after the first occurrence of the same sentinel, holds exactly the span's tokens up to the next
/// sentinel, EOS or its end.
pub fn score_infill(target: &[u32], generated: &[u32]) -> (usize, usize) {
    let want = spans(target);
    let got = spans(generated);
    let correct = want
        .iter()
        .filter(|(s, span)| {
            got.iter()
                .find(|(g, _)| g == s)
                .is_some_and(|(_, g)| g == span)
        })
        .count();
    (correct, want.len())
}

/// A one-shot task: a worked example, then a query the model must answer the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// `copy: kqz -> kqz`
    Copy,
    /// `reverse: abc -> cba`
    Reverse,
    /// `get: a=3 m=7 t=5; m -> 7` (a record, then the value of one key).
    Lookup,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::Copy, Task::Reverse, Task::Lookup];

    pub fn name(self) -> &'static str {
        match self {
            Task::Copy => "copy",
            Task::Reverse => "reverse",
            Task::Lookup => "lookup",
        }
    }

    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One line of `task`: the prompt (ending right where the answer begins, after `-> `) and the
/// answer. The synthetic corpus writes `prompt ++ answer` lines; the one-shot examples are built
/// from two of them. Lines stay under 26 bytes, so a worked example, a query and its answer fit
/// in 53 bytes.
pub(crate) fn draw_task(task: Task, rng: &mut SplitMix64) -> (String, String) {
    let letters = |rng: &mut SplitMix64| -> String {
        let n = 3 + rng.below(3);
        (0..n)
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect()
    };
    match task {
        Task::Copy => {
            let s = letters(rng);
            (format!("copy: {s} -> "), s)
        }
        Task::Reverse => {
            let s = letters(rng);
            (format!("reverse: {s} -> "), s.chars().rev().collect())
        }
        Task::Lookup => {
            let mut keys: Vec<u8> = (b'a'..=b'z').collect();
            rng.shuffle(&mut keys);
            let record: Vec<(char, char)> = keys[..3]
                .iter()
                .map(|&k| (k as char, (b'0' + rng.below(10) as u8) as char))
                .collect();
            let (key, value) = record[rng.below(3)];
            let pairs: Vec<String> = record.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (
                format!("get: {}; {key} -> ", pairs.join(" ")),
                value.to_string(),
            )
        }
    }
}

/// `n` one-shot examples of `task`: `inputs` = `lead` ++ a worked example line ++ `\n` ++ the
/// query's prompt (up to `-> `); `targets` = the query's answer ++ `\n`. Strings and records
/// are fresh draws of `seed` (the query's string differs from the worked example's).
pub fn oneshot_examples(task: Task, n: usize, lead: u32, seed: u64) -> Vec<Example> {
    let mut rng = SplitMix64::new(seed ^ 0x05e7, STREAM_LM_EVAL);
    (0..n)
        .map(|_| {
            let (p1, a1) = draw_task(task, &mut rng);
            let (p2, a2) = loop {
                let q = draw_task(task, &mut rng);
                if q.0 != p1 {
                    break q;
                }
            };
            let mut inputs = vec![lead];
            inputs.extend(vocab::encode(&format!("{p1}{a1}\n{p2}")));
            let mut targets = vocab::encode(&a2);
            targets.push(u32::from(b'\n'));
            Example { inputs, targets }
        })
        .collect()
}

/// Whether `generated` gives the answer of `target`: both read up to the first `\n`, EOS or
/// their end, then compared exactly.
pub fn oneshot_correct(target: &[u32], generated: &[u32]) -> bool {
    let answer = |t: &[u32]| -> Vec<u32> {
        t.iter()
            .copied()
            .take_while(|&t| t != u32::from(b'\n') && t != EOS)
            .collect()
    };
    answer(target) == answer(generated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::vocab::{BOS, NLU, sentinel};

    fn text(tokens: &[u32]) -> String {
        vocab::decode(tokens)
    }

    #[test]
    fn oneshot_answers_solve_their_prompts() {
        for task in Task::ALL {
            assert_eq!(Task::from_name(task.name()), Some(task));
            let ex = oneshot_examples(task, 200, NLU, 9);
            assert_eq!(ex, oneshot_examples(task, 200, NLU, 9));
            assert_ne!(ex, oneshot_examples(task, 200, NLU, 10));
            for e in &ex {
                assert_eq!(e.inputs[0], NLU);
                assert!(
                    e.inputs.len() + e.targets.len() <= 54,
                    "{}",
                    text(&e.inputs)
                );
                let prompt = text(&e.inputs[1..]);
                let (shot, query) = prompt.split_once('\n').unwrap();
                let answer = text(&e.targets);
                let answer = answer.strip_suffix('\n').unwrap();
                let (shot_q, shot_a) = shot.split_once(" -> ").unwrap();
                let query_q = query.strip_suffix(" -> ").unwrap();
                assert_ne!(shot_q, query_q);
                let head = format!(
                    "{}: ",
                    if task == Task::Lookup {
                        "get"
                    } else {
                        task.name()
                    }
                );
                let solve = |q: &str| -> String {
                    let q = q.strip_prefix(&head).unwrap();
                    match task {
                        Task::Copy => q.to_string(),
                        Task::Reverse => q.chars().rev().collect(),
                        Task::Lookup => {
                            let (record, key) = q.split_once("; ").unwrap();
                            let pairs: Vec<&str> = record.split(' ').collect();
                            assert_eq!(pairs.len(), 3);
                            let hits: Vec<&str> = pairs
                                .iter()
                                .filter_map(|p| p.strip_prefix(&format!("{key}=")))
                                .collect();
                            assert_eq!(hits.len(), 1, "key `{key}` once in `{record}`");
                            hits[0].to_string()
                        }
                    }
                };
                assert_eq!(solve(shot_q), shot_a);
                assert_eq!(solve(query_q), answer);
                assert!(oneshot_correct(&e.targets, &e.targets));
            }
        }
    }

    #[test]
    fn oneshot_correct_reads_up_to_newline_or_eos() {
        let t = vocab::encode("cba\n");
        assert!(oneshot_correct(&t, &vocab::encode("cba\nmore")));
        assert!(oneshot_correct(&t, &[99, 98, 97, EOS, 1]));
        assert!(oneshot_correct(&t, &vocab::encode("cba")));
        assert!(!oneshot_correct(&t, &vocab::encode("cb\n")));
        assert!(!oneshot_correct(&t, &vocab::encode("cbaa\n")));
        assert!(!oneshot_correct(&t, &[]));
    }

    #[test]
    fn score_infill_hand_examples() {
        let (s0, s1, s2) = (sentinel(0), sentinel(1), sentinel(2));
        let target = [s0, 1, 2, s1, 3, s2, 4, 5, EOS];
        assert_eq!(score_infill(&target, &target), (3, 3));
        // Span 1 wrong, span 2 cut short by EOS.
        assert_eq!(
            score_infill(&target, &[s0, 1, 2, s1, 9, s2, 4, EOS, 5]),
            (1, 3)
        );
        // Missing sentinel, spans out of order, junk before the first sentinel.
        assert_eq!(score_infill(&target, &[7, s2, 4, 5, s0, 1, 2]), (2, 3));
        // A longer generation of a span is wrong.
        assert_eq!(score_infill(&target, &[s0, 1, 2, 2, s1, 3]), (1, 3));
        assert_eq!(score_infill(&target, &[]), (0, 3));
        assert_eq!(score_infill(&[EOS], &[s0]), (0, 0));
    }

    #[test]
    fn eval_windows_are_seeded_and_disjoint_when_they_can_be() {
        // 251 is prime: no two window slots hold the same tokens.
        let stream: Vec<u32> = (0..1000).map(|i| i % 251).collect();
        for arch in [Arch::Decoder, Arch::EncDec] {
            let ex = clm_examples(&stream, 10, arch, 64, BOS, 1).unwrap();
            assert_eq!(ex, clm_examples(&stream, 10, arch, 64, BOS, 1).unwrap());
            let len = raw_len(&Denoiser::Causal, arch, 64).unwrap();
            let mut starts: Vec<usize> = ex
                .iter()
                .map(|e| {
                    assert_eq!(e.inputs, vec![BOS]);
                    assert_eq!(e.targets.len(), len);
                    // Each window occurs in the stream at a multiple of its length.
                    (0..stream.len() / len)
                        .map(|i| i * len)
                        .find(|&s| stream[s..s + len] == e.targets[..])
                        .unwrap()
                })
                .collect();
            starts.sort();
            starts.dedup();
            assert_eq!(starts.len(), 10);
            let inf = infill_examples(&stream, 30, arch, 64, NLU, 1).unwrap();
            assert_eq!(inf.len(), 30);
            for e in &inf {
                let (_, n) = score_infill(&e.targets, &[]);
                assert!(n >= 1);
            }
        }
        assert!(clm_examples(&stream[..10], 1, Arch::Decoder, 64, BOS, 1).is_err());
    }
}
