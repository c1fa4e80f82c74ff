use std::ops::ControlFlow;

use super::*;
use crate::Backend;
use crate::lm::objective::{MixtureOptions, Objective};
use crate::lm::train::tests::{pattern_batch, quick, tiny};
use crate::lm::{Arch, Sampler, synthetic_corpus, token_stream, train_lm_with};

/// Records every step and every poll, and stops (on a step or, like Ctrl-C, before one) where
/// told: what a member's observer saw must be what it sees alone.
#[derive(Clone, Default)]
struct Rec {
    steps: Vec<StepLog<()>>,
    break_at: Option<usize>,
    cancel_after_polls: Option<usize>,
}

impl Observer<()> for Rec {
    fn on_step(&mut self, log: &StepLog<()>) -> ControlFlow<()> {
        self.steps.push(*log);
        if self.break_at == Some(log.step) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel_after_polls
            .is_some_and(|n| self.steps.len() >= n)
    }
}

/// A member of a test group: its training config, its data, its observer.
struct Member {
    train: LmTrainConfig,
    data: Box<dyn Fn(usize) -> Batch>,
    rec: Rec,
}

fn exec(threads: usize, backend: Backend) -> ExecOptions {
    ExecOptions { threads, backend }
}

/// Trains `members` as one group, and each alone (on `alone` threads), and holds every member
/// to its run alone: parameters bit for bit, the same logs, the same observer calls, or the
/// same error.
fn same_as_alone(
    cfg: &LmConfig,
    members: &[Member],
    group: &ExecOptions,
    alone: &ExecOptions,
) -> Vec<MemberOutcome> {
    close_to_alone(cfg, members, group, alone, 0.0)
}

/// [`same_as_alone`] within `tol`: every logged loss, learning rate and gradient norm within
/// `tol` relative, every parameter within `tol` absolute (0: bit for bit).
fn close_to_alone(
    cfg: &LmConfig,
    members: &[Member],
    group: &ExecOptions,
    alone: &ExecOptions,
    tol: f32,
) -> Vec<MemberOutcome> {
    let trains: Vec<LmTrainConfig> = members.iter().map(|m| m.train.clone()).collect();
    let mut recs: Vec<Rec> = members.iter().map(|m| m.rec.clone()).collect();
    let mut fns: Vec<Box<dyn FnMut(usize) -> Batch + '_>> = members
        .iter()
        .map(|m| Box::new(|s| (m.data)(s)) as Box<dyn FnMut(usize) -> Batch>)
        .collect();
    let mut batches: Vec<&mut dyn FnMut(usize) -> Batch> =
        fns.iter_mut().map(|f| &mut **f as _).collect();
    let mut observers: Vec<&mut dyn Observer<()>> = recs
        .iter_mut()
        .map(|r| r as &mut dyn Observer<()>)
        .collect();
    let out = train_lm_group(cfg, &trains, group, &mut batches, &mut observers).unwrap();
    assert_eq!(out.len(), members.len());
    for (i, (m, got)) in members.iter().zip(&out).enumerate() {
        let mut rec = m.rec.clone();
        let want = train_lm_with(cfg, &m.train, alone, &mut |s| (m.data)(s), &mut rec);
        match (got, &want) {
            (Ok((lm, logs)), Ok((want_lm, want_logs))) if tol == 0.0 => {
                assert_eq!(logs, want_logs, "member {i}");
                let bits = |p: &[f32]| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(lm.params()) == bits(want_lm.params()),
                    "member {i}: parameters differ"
                );
            }
            (Ok((lm, logs)), Ok((want_lm, want_logs))) => {
                assert_eq!(logs.len(), want_logs.len(), "member {i}");
                let near = |a: f32, b: f32| (a - b).abs() <= tol * b.abs().max(1.0);
                for (a, b) in logs.iter().zip(want_logs) {
                    assert!(
                        a.step == b.step
                            && near(a.loss, b.loss)
                            && near(a.lr, b.lr)
                            && near(a.grad_norm, b.grad_norm),
                        "member {i}: {a:?} vs {b:?}"
                    );
                }
                let worst = lm
                    .params()
                    .iter()
                    .zip(want_lm.params())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst <= tol, "member {i}: a parameter differs by {worst}");
            }
            (Err(got), Err(want)) => {
                assert_eq!(got.to_string(), want.to_string(), "member {i}")
            }
            (got, want) => panic!(
                "member {i}: {:?} vs {:?} alone",
                got.as_ref().map(drop),
                want.as_ref().map(drop)
            ),
        }
        if tol == 0.0 {
            assert_eq!(recs[i].steps, rec.steps, "member {i}: observer");
        } else {
            assert_eq!(recs[i].steps.len(), rec.steps.len(), "member {i}: observer");
            for (a, b) in recs[i].steps.iter().zip(&rec.steps) {
                let near = |a: f32, b: f32| (a - b).abs() <= tol * b.abs().max(1.0);
                assert!(
                    a.step == b.step && near(a.loss, b.loss) && near(a.grad_norm, b.grad_norm),
                    "member {i}: observer saw {a:?}, alone {b:?}"
                );
            }
        }
    }
    out
}

fn pattern_member(seed: u64, lr: f32, phase: usize) -> Member {
    Member {
        train: LmTrainConfig {
            seed,
            lr,
            ..quick(5)
        },
        data: Box::new(move |s| pattern_batch(4, 10, s + phase)),
        rec: Rec::default(),
    }
}

fn encdec_member(seed: u64, lr: f32, phase: usize) -> Member {
    Member {
        train: LmTrainConfig {
            seed,
            lr,
            ..quick(5)
        },
        data: Box::new(move |s| {
            let mut b = pattern_batch(6, 5, s + phase);
            b.prefix = vec![0; 6];
            b.enc_len = 7;
            b.enc_tokens = pattern_batch(6, 7, s + phase + 1).tokens;
            b.enc_lens = (0..6).map(|r| 3 + (r + s) % 5).collect();
            b
        }),
        rec: Rec::default(),
    }
}

#[test]
fn a_decoder_group_trains_each_member_as_alone_whatever_the_threads() {
    let mut members = vec![
        pattern_member(1, 1e-2, 0),
        pattern_member(2, 3e-3, 1),
        pattern_member(1, 3e-2, 2),
    ];
    members[1].train.weight_decay = 0.1;
    // 1100 tokens: two shards, whose gradients are summed in shard order.
    members[1].data = Box::new(|s| pattern_batch(110, 10, s));
    members[2].train.clip = 0.05;
    let cfg = tiny(Arch::Decoder);
    for threads in [1, 3] {
        let out = same_as_alone(
            &cfg,
            &members,
            &exec(threads, Backend::Cpu),
            &exec(2, Backend::Cpu),
        );
        assert!(out.iter().all(Result::is_ok));
    }
}

#[test]
fn an_encdec_group_trains_each_member_as_alone() {
    let members = vec![
        encdec_member(4, 1e-2, 0),
        encdec_member(5, 2e-2, 3),
        encdec_member(6, 5e-3, 1),
    ];
    let out = same_as_alone(
        &tiny(Arch::EncDec),
        &members,
        &exec(2, Backend::Cpu),
        &exec(1, Backend::Cpu),
    );
    assert!(out.iter().all(Result::is_ok));
}

/// The pipelines' objectives (causal, prefix LM, span corruption, the UL2 mixture with mode
/// tokens) give every member batches of its own shapes, step by step.
#[test]
fn members_with_their_own_objectives_train_as_alone() {
    let stream = token_stream(&synthetic_corpus(40, 1));
    let opts = MixtureOptions {
        span_scale: 0.125,
        ..MixtureOptions::default()
    };
    for arch in [Arch::Decoder, Arch::EncDec] {
        let cfg = LmConfig {
            seq_len: 32,
            ..tiny(arch)
        };
        let objectives = [
            (Objective::Clm, false),
            (Objective::Plm, false),
            (Objective::Sc, false),
            (Objective::Ul2, true),
        ];
        let members: Vec<Member> = objectives
            .iter()
            .enumerate()
            .map(|(i, &(objective, modes))| {
                let mixture = objective.mixture(&opts).unwrap();
                let prefix_lm = arch == Arch::Decoder && objective != Objective::Clm;
                let stream = stream.clone();
                let seed = 10 + i as u64;
                // A sampler per call of the data function: the batch of step `s` is the
                // (s+1)-th of a sampler seeded `seed`, as a sampler drawn from in order gives.
                let data = move |s: usize| {
                    let mut sampler = Sampler::new(
                        stream.clone(),
                        mixture.clone(),
                        arch,
                        32,
                        modes,
                        prefix_lm,
                        seed,
                    )
                    .unwrap();
                    (0..s).for_each(|_| drop(sampler.next_batch(4)));
                    sampler.next_batch(4)
                };
                Member {
                    train: LmTrainConfig {
                        seed,
                        batch: 4,
                        ..quick(3)
                    },
                    data: Box::new(data),
                    rec: Rec::default(),
                }
            })
            .collect();
        let out = same_as_alone(
            &cfg,
            &members,
            &exec(3, Backend::Cpu),
            &exec(1, Backend::Cpu),
        );
        assert!(out.iter().all(Result::is_ok), "{arch:?}");
        // On the dfdx path, one computation over batches padded to the longest.
        let dfdx = exec(1, Backend::Dfdx);
        let out = close_to_alone(&cfg, &members, &dfdx, &dfdx, DFDX_TOL);
        assert!(out.iter().all(Result::is_ok), "{arch:?}");
    }
}

#[test]
fn a_diverging_member_fails_alone_and_the_others_are_unchanged() {
    for (arch, make) in [
        (
            Arch::Decoder,
            pattern_member as fn(u64, f32, usize) -> Member,
        ),
        (Arch::EncDec, encdec_member),
    ] {
        let members = vec![make(1, 1e-2, 0), make(2, 1e30, 1), make(3, 2e-2, 2)];
        let out = same_as_alone(
            &tiny(arch),
            &members,
            &exec(2, Backend::Cpu),
            &exec(2, Backend::Cpu),
        );
        assert!(out[0].is_ok() && out[2].is_ok());
        assert!(
            matches!(out[1], Err(NnError::NonFiniteStep { .. })),
            "{:?}",
            out[1].as_ref().map(drop)
        );
    }
}

#[test]
fn an_observer_stops_its_member_alone() {
    let mut members = vec![
        pattern_member(1, 1e-2, 0),
        pattern_member(2, 1e-2, 1),
        pattern_member(3, 1e-2, 2),
    ];
    members[0].rec.break_at = Some(2);
    // Cancelled (Ctrl-C) before its fourth step.
    members[2].rec.cancel_after_polls = Some(3);
    let out = same_as_alone(
        &tiny(Arch::Decoder),
        &members,
        &exec(2, Backend::Cpu),
        &exec(1, Backend::Cpu),
    );
    assert!(matches!(out[0], Err(NnError::Cancelled)));
    assert!(out[1].is_ok());
    assert!(matches!(out[2], Err(NnError::Cancelled)));
}

#[test]
fn a_member_with_a_bad_config_or_batch_fails_alone() {
    let mut members = vec![
        pattern_member(1, 1e-2, 0),
        pattern_member(2, 1e-2, 1),
        pattern_member(3, 1e-2, 2),
        pattern_member(4, 1e-2, 3),
    ];
    members[0].train.lr = -1.0;
    members[1].train.clip = 0.0;
    // A token outside the vocabulary at the third step.
    members[3].data = Box::new(|s| {
        let mut b = pattern_batch(4, 10, s);
        if s == 2 {
            b.tokens[5] = 100_000;
        }
        b
    });
    let out = same_as_alone(
        &tiny(Arch::Decoder),
        &members,
        &exec(2, Backend::Cpu),
        &exec(2, Backend::Cpu),
    );
    assert!(matches!(&out[0], Err(NnError::InvalidConfig(m)) if m.contains("`lr`")));
    assert!(matches!(&out[1], Err(NnError::InvalidConfig(m)) if m.contains("`clip`")));
    assert!(out[2].is_ok());
    assert!(matches!(&out[3], Err(NnError::InvalidData(m)) if m.contains("100000")));
}

#[test]
fn members_that_differ_in_their_schedule_are_refused_naming_what_differs() {
    let cfg = tiny(Arch::Decoder);
    let base = quick(5);
    for (field, other) in [
        (
            "steps",
            LmTrainConfig {
                steps: 6,
                ..base.clone()
            },
        ),
        (
            "batch",
            LmTrainConfig {
                batch: 3,
                ..base.clone()
            },
        ),
        (
            "warmup",
            LmTrainConfig {
                warmup: 0,
                ..base.clone()
            },
        ),
    ] {
        let trains = [base.clone(), other];
        let (mut a, mut b) = (|s| pattern_batch(2, 4, s), |s| pattern_batch(2, 4, s));
        let mut batches: Vec<&mut dyn FnMut(usize) -> Batch> = vec![&mut a, &mut b];
        let (mut x, mut y) = (Rec::default(), Rec::default());
        let mut observers: Vec<&mut dyn Observer<()>> = vec![&mut x, &mut y];
        let e = train_lm_group(
            &cfg,
            &trains,
            &exec(1, Backend::Cpu),
            &mut batches,
            &mut observers,
        )
        .map(drop)
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("must share `{field}`")) && msg.contains("member 1"),
            "{msg}"
        );
        assert!(x.steps.is_empty() && y.steps.is_empty());
    }
}

/// How far a member of a group on the dfdx path may end from its run alone there, in any
/// parameter (absolute) or logged value (relative), over a few steps: the batched products and
/// reductions round differently (about 1e-6 seen).
const DFDX_TOL: f32 = 1e-5;

/// The dfdx path runs the members as one tensor computation (a member axis, batches padded to
/// the longest): each member's numbers are its own alone within rounding.
#[test]
fn a_group_on_the_dfdx_path_trains_each_member_as_alone() {
    for (arch, make) in [
        (
            Arch::Decoder,
            pattern_member as fn(u64, f32, usize) -> Member,
        ),
        (Arch::EncDec, encdec_member),
    ] {
        let mut members = vec![make(1, 1e-2, 0), make(2, 1e30, 1), make(3, 2e-2, 2)];
        // From its third step on, a member's batches have fewer rows than the others': those
        // steps run member by member.
        let other = make(4, 1e-2, 1);
        members.push(Member {
            data: Box::new(move |s| {
                let mut b = (other.data)(s);
                if s >= 2 {
                    b.rows -= 1;
                    let (t, e) = (b.len, b.enc_len);
                    b.tokens.truncate(b.rows * t);
                    b.targets.truncate(b.rows * t);
                    b.weights.truncate(b.rows * t);
                    b.prefix.truncate(b.rows);
                    b.enc_tokens.truncate(b.rows * e);
                    b.enc_lens.truncate(if e > 0 { b.rows } else { 0 });
                }
                b
            }),
            ..other
        });
        for m in &mut members {
            m.train.steps = 4;
        }
        let dfdx = exec(1, Backend::Dfdx);
        let out = close_to_alone(&tiny(arch), &members, &dfdx, &dfdx, DFDX_TOL);
        assert!(
            out[0].is_ok() && out[2].is_ok() && out[3].is_ok(),
            "{arch:?}"
        );
        assert!(
            matches!(out[1], Err(NnError::NonFiniteStep { .. })),
            "{arch:?}"
        );
    }
}

/// A member's parameters (as bits) and log where it ended.
type Finished = (Vec<u32>, Vec<StepLog<()>>);

/// Trains `members` whole and in spans ending at `stops` (each resuming from the state the one
/// before left), alone or as a group, on `backend`: the parameters and logs of both, which must
/// be equal bit for bit.
fn whole_and_in_spans(
    cfg: &LmConfig,
    members: &[Member],
    stops: &[usize],
    backend: Backend,
    group: bool,
) -> [Vec<Finished>; 2] {
    let ex = exec(2, backend);
    let bits = |p: &[f32]| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let run = |from: &[Option<&TrainState>], stop: usize| -> Vec<SpanOutcome> {
        if group {
            let trains: Vec<LmTrainConfig> = members.iter().map(|m| m.train.clone()).collect();
            let mut recs: Vec<Rec> = members.iter().map(|_| Rec::default()).collect();
            let mut fns: Vec<Box<dyn FnMut(usize) -> Batch + '_>> = members
                .iter()
                .map(|m| Box::new(|s| (m.data)(s)) as Box<dyn FnMut(usize) -> Batch>)
                .collect();
            let mut batches: Vec<&mut dyn FnMut(usize) -> Batch> =
                fns.iter_mut().map(|f| &mut **f as _).collect();
            let mut observers: Vec<&mut dyn Observer<()>> = recs
                .iter_mut()
                .map(|r| r as &mut dyn Observer<()>)
                .collect();
            train_lm_group_span(cfg, &trains, &ex, from, stop, &mut batches, &mut observers)
                .unwrap()
        } else {
            members
                .iter()
                .zip(from)
                .map(|(m, f)| {
                    let span = crate::lm::LmSpan { from: *f, stop };
                    crate::lm::train_lm_span(
                        cfg,
                        &m.train,
                        &ex,
                        span,
                        &mut |s| (m.data)(s),
                        &mut Rec::default(),
                    )
                })
                .collect()
        }
    };
    let none = vec![None; members.len()];
    let whole: Vec<_> = run(&none, members[0].train.steps)
        .into_iter()
        .map(|r| {
            let (lm, logs, _) = r.unwrap();
            (bits(lm.params()), logs)
        })
        .collect();
    let mut states: Vec<Option<TrainState>> = vec![None; members.len()];
    let mut logs: Vec<Vec<StepLog<()>>> = vec![Vec::new(); members.len()];
    let mut last = Vec::new();
    for &stop in stops {
        let from: Vec<Option<&TrainState>> = states.iter().map(|s| s.as_ref()).collect();
        let done = run(&from, stop);
        last.clear();
        for (m, r) in done.into_iter().enumerate() {
            let (lm, span_logs, state) = r.unwrap();
            assert_eq!(state.step, stop);
            logs[m].extend(span_logs);
            last.push(bits(lm.params()));
            states[m] = Some(state);
        }
    }
    [whole, last.into_iter().zip(logs).collect()]
}

#[test]
fn language_models_resumed_from_their_state_equal_one_run() {
    let cfg = tiny(Arch::Decoder);
    // 5 steps inside a warm-up of 10, and 12 past it into the cosine decay
    for steps in [5, 12] {
        let members: Vec<Member> = [(1, 1e-2, 0), (2, 3e-2, 3)]
            .into_iter()
            .map(|(seed, lr, phase)| Member {
                train: LmTrainConfig {
                    seed,
                    lr,
                    ..quick(steps)
                },
                data: Box::new(move |s| pattern_batch(4, 10, s + phase)),
                rec: Rec::default(),
            })
            .collect();
        let stops = [2, 3, 3, steps];
        for (backend, group) in [
            (Backend::Cpu, false),
            (Backend::Cpu, true),
            (Backend::Dfdx, false),
            (Backend::Dfdx, true),
        ] {
            let [whole, spans] = whole_and_in_spans(&cfg, &members, &stops, backend, group);
            assert!(whole == spans, "{steps} steps, {backend:?}, group {group}");
        }
    }
}

#[test]
fn a_group_resuming_from_different_steps_is_refused() {
    let cfg = tiny(Arch::Decoder);
    let members = [pattern_member(1, 1e-2, 0), pattern_member(2, 1e-2, 1)];
    let span = crate::lm::LmSpan {
        from: None,
        stop: 2,
    };
    let (_, _, state) = crate::lm::train_lm_span(
        &cfg,
        &members[0].train,
        &exec(1, Backend::Cpu),
        span,
        &mut |s| (members[0].data)(s),
        &mut Rec::default(),
    )
    .unwrap();
    let trains: Vec<LmTrainConfig> = members.iter().map(|m| m.train.clone()).collect();
    let (mut a, mut b) = (|s| (members[0].data)(s), |s| (members[1].data)(s));
    let mut batches: Vec<&mut dyn FnMut(usize) -> Batch> = vec![&mut a, &mut b];
    let (mut r0, mut r1) = (Rec::default(), Rec::default());
    let mut observers: Vec<&mut dyn Observer<()>> = vec![&mut r0, &mut r1];
    let e = train_lm_group_span(
        &cfg,
        &trains,
        &exec(1, Backend::Cpu),
        &[Some(&state), None],
        4,
        &mut batches,
        &mut observers,
    )
    .unwrap_err();
    assert!(e.to_string().contains("resume from one step"), "{e}");
}
