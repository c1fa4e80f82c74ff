//! `run_group` against `run`: every member's outputs, metrics and status as unfused.

use std::path::{Path, PathBuf};

use ablate_cache::{HASH_SCHEME, InstanceKey, KeyInput, Manifest, Origin, Store};
use ablate_run::{CancelToken, JobInput, Progress};
use ablate_spec::Params;

use super::*;

/// Commits a `data.text`-like entry holding `train.txt` (a synthetic corpus).
fn corpus(store: &Store) -> JobInput {
    let input = KeyInput {
        scheme: HASH_SCHEME,
        op: "data.text".into(),
        op_version: 1,
        params: BTreeMap::from([("docs".to_owned(), json!(60))]),
        inputs: Vec::new(),
        deps: Vec::new(),
    };
    let key: InstanceKey = input.key();
    let tmp = store.begin(&key).unwrap();
    std::fs::write(
        tmp.dir().join("train.txt"),
        lm::synthetic_corpus(60, 0).join("\n\n"),
    )
    .unwrap();
    tmp.commit(Manifest {
        format: 0,
        key,
        input,
        origin: Origin {
            pipeline: "p".into(),
            stage: "corpus".into(),
            label: String::new(),
        },
        outputs: Vec::new(),
        metrics: Vec::new(),
        publish: Vec::new(),
        started_at_us: 0,
        seconds: 0.0,
        device: "cpu".into(),
        host: "test".into(),
        ablate_version: "0".into(),
        status: Default::default(),
        checksum: None,
    })
    .unwrap();
    JobInput {
        stage: "corpus".into(),
        id: "corpus".into(),
        op: "data.text".into(),
        key,
        labels: Vec::new(),
    }
}

/// The op's defaults at a tiny size, with `changes`.
fn params(changes: Value) -> Params {
    let mut p: Params = TrainLm::new()
        .schema
        .params
        .iter()
        .filter_map(|s| Some((s.name.to_owned(), s.default.clone()?)))
        .collect();
    let tiny = json!({"d_model": 16, "layers": 1, "heads": 2, "d_ff": 32, "seq_len": 16,
                      "steps": 4, "batch": 4, "warmup": 2, "span_scale": 0.125});
    for (k, v) in tiny
        .as_object()
        .unwrap()
        .iter()
        .chain(changes.as_object().unwrap())
    {
        p.insert(k.clone(), v.clone());
    }
    p
}

/// What one run left: its result and the files of its output directory.
type Left = (Result<OpOutput, OpError>, Vec<(String, Vec<u8>)>);

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Runs the members `specs` (params, threads, the step at which their run is cancelled)
/// through `run_group` (`fused`) or one by one through `run`, each in its own output
/// directory under `root/name`.
fn run_all(
    store: &Store,
    root: &Path,
    name: &str,
    input: &JobInput,
    specs: &[(Value, usize, Option<u64>)],
    fused: bool,
    events: &std::sync::Mutex<Vec<(usize, u64)>>,
) -> Vec<Left> {
    let jobs: Vec<_> = specs
        .iter()
        .map(|(p, _, _)| {
            crate::testutil::job("train.lm", params(p.clone()), vec![input.clone()], "cpu")
        })
        .collect();
    let dirs: Vec<PathBuf> = (0..specs.len())
        .map(|i| {
            let d = root.join(name).join(i.to_string());
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    let tokens: Vec<CancelToken> = specs.iter().map(|_| CancelToken::new()).collect();
    let progress: Vec<_> = specs
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(i, ((_, _, cancel_at), token))| {
            let cancel_at = *cancel_at;
            move |p: Progress| {
                events.lock().unwrap().push((i, p.step));
                if Some(p.step) == cancel_at {
                    token.cancel();
                }
            }
        })
        .collect();
    let ctxs: Vec<OpContext<'_>> = (0..specs.len())
        .map(|i| {
            OpContext::new(
                &jobs[i],
                &dirs[i],
                store,
                root,
                specs[i].1,
                &progress[i],
                &tokens[i],
            )
        })
        .collect();
    let results = if fused {
        run_group(&ctxs)
    } else {
        ctxs.iter().map(|c| TrainLm::new().run(c)).collect()
    };
    results
        .into_iter()
        .zip(&dirs)
        .map(|(r, d)| (r, files(d)))
        .collect()
}

#[test]
fn fused_members_write_what_each_writes_unfused() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    let input = corpus(&store);
    let specs = [
        // A decoder group of four: objectives, mode tokens, seeds, lrs, decay and clipping.
        (json!({"objective": "clm", "seed": 0, "lr": 0.001}), 2, None),
        (
            json!({"objective": "ul2", "mode_tokens": true, "seed": 1, "lr": 0.003,
                   "weight_decay": 0.1, "clip": 0.5}),
            1,
            None,
        ),
        // Diverges: recorded as a diverged result, as alone.
        (json!({"objective": "sc", "seed": 2, "lr": 1e30}), 2, None),
        // Cancelled after its second step.
        (json!({"objective": "plm", "seed": 3}), 2, Some(2)),
        // Another width: a group of one, the ordinary path.
        (json!({"d_model": 8, "seed": 4}), 2, None),
        // An encoder-decoder group of two.
        (
            json!({"arch": "encdec", "objective": "sc", "seed": 5}),
            2,
            None,
        ),
        (
            json!({"arch": "encdec", "objective": "ul2", "seed": 6, "lr": 0.01}),
            2,
            None,
        ),
        // A bad objective fails alone, before training.
        (
            json!({"objective": [{"denoiser": "R", "mu": 3, "r": 0.15, "weight": 0}]}),
            2,
            None,
        ),
    ];
    let events = std::sync::Mutex::new(Vec::new());
    let fused = run_all(&store, root.path(), "fused", &input, &specs, true, &events);
    // The group trained its members step by step together (not one after another).
    let events = events.into_inner().unwrap();
    let at = |e| events.iter().position(|x| *x == e).unwrap();
    assert!(
        at((1, 1)) < at((0, 2)) && at((6, 1)) < at((5, 2)),
        "{events:?}"
    );
    let unfused = std::sync::Mutex::new(Vec::new());
    let alone = run_all(
        &store,
        root.path(),
        "alone",
        &input,
        &specs,
        false,
        &unfused,
    );
    for (i, ((got, got_files), (want, want_files))) in fused.iter().zip(&alone).enumerate() {
        match (got, want) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got.metrics, want.metrics, "member {i}");
                assert_eq!(got.status, want.status, "member {i}");
                assert_eq!(got.publish, want.publish, "member {i}");
            }
            (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string(), "member {i}"),
            (got, want) => panic!("member {i}: {got:?} vs {want:?}"),
        }
        assert!(got_files == want_files, "member {i}: the files differ");
    }
    assert!(fused[0].1.iter().any(|(n, _)| n == "model.safetensors"));
    assert!(
        matches!(&fused[2].0, Ok(o) if o.status != EntryStatus::default()),
        "{:?}",
        fused[2].0
    );
    assert!(matches!(fused[3].0, Err(OpError::Cancelled)));
    assert!(fused[3].1.is_empty(), "a cancelled member leaves nothing");
    assert!(fused[7].0.is_err());
}

#[test]
fn fusible_params_are_op_params_and_the_rest_set_shapes_or_the_schedule() {
    let names: Vec<&str> = TrainLm::new()
        .schema
        .params
        .iter()
        .map(|s| s.name)
        .collect();
    for f in FUSIBLE {
        assert!(names.contains(f), "`{f}` is not a param of train.lm");
    }
    let shared: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !FUSIBLE.contains(n))
        .collect();
    assert_eq!(
        shared,
        [
            "arch", "d_model", "layers", "heads", "d_ff", "seq_len", "steps", "batch", "warmup"
        ]
    );
}

/// Early stopping's checkpoints (#24): `train.lm` stopped at budgets and resumed, alone or in
/// a group whose members stand at different steps, ends as the run that never stopped.
mod resume {
    use std::sync::Mutex;

    use ablate_run::Job;

    use super::*;
    use crate::support::checkpoint::CHECKPOINT_FILE;

    /// A run's output and the files it wrote.
    type Ran = (OpOutput, Vec<(String, Vec<u8>)>);

    struct Bench {
        root: tempfile::TempDir,
        store: Store,
        input: JobInput,
        messages: Mutex<Vec<String>>,
        runs: Mutex<usize>,
    }

    impl Bench {
        fn new() -> Bench {
            let root = tempfile::tempdir().unwrap();
            let store = Store::open(&root.path().join("cache")).unwrap();
            let input = corpus(&store);
            Bench {
                root,
                store,
                input,
                messages: Mutex::new(Vec::new()),
                runs: Mutex::new(0),
            }
        }

        fn job(&self, changes: Value, budget: Option<u64>) -> Job {
            let mut j =
                crate::testutil::job("train.lm", params(changes), vec![self.input.clone()], "cpu");
            j.budget = budget;
            j
        }

        /// Runs `jobs` as a group (or the one alone): each one's output and files.
        fn run(&self, jobs: &[Job]) -> Vec<Ran> {
            let cancel = CancelToken::new();
            let progress = |p: Progress| {
                if let Some(m) = p.message {
                    self.messages.lock().unwrap().push(m);
                }
            };
            let dirs: Vec<PathBuf> = jobs
                .iter()
                .map(|_| {
                    let mut n = self.runs.lock().unwrap();
                    *n += 1;
                    let d = self.root.path().join(format!("out{n}"));
                    std::fs::create_dir_all(&d).unwrap();
                    d
                })
                .collect();
            let ctxs: Vec<OpContext<'_>> = jobs
                .iter()
                .zip(&dirs)
                .map(|(j, d)| {
                    OpContext::new(j, d, &self.store, self.root.path(), 1, &progress, &cancel)
                })
                .collect();
            let out = if let [ctx] = &ctxs[..] {
                vec![TrainLm::new().run(ctx)]
            } else {
                run_group(&ctxs)
            };
            out.into_iter()
                .zip(&dirs)
                .map(|(r, d)| (r.unwrap(), files(d)))
                .collect()
        }
    }

    fn same(a: &Ran, b: &Ran, what: &str) {
        assert_eq!(
            format!("{:?}", a.0.metrics),
            format!("{:?}", b.0.metrics),
            "{what}"
        );
        assert_eq!(
            format!("{:?}", a.0.status),
            format!("{:?}", b.0.status),
            "{what}"
        );
        assert!(a.1 == b.1, "{what}: the files differ");
    }

    #[test]
    fn train_lm_stopped_at_budgets_and_resumed_equals_one_run() {
        let b = Bench::new();
        // 6 steps: past the warm-up of 2, with the ul2 mixture's sampler
        let p = json!({"steps": 6, "objective": "ul2", "seed": 5});
        let whole = b.run(&[b.job(p.clone(), None)]).remove(0);
        assert_eq!(whole.0.stopped_at, None);
        let job = b.job(p.clone(), None);
        let ck = b.store.checkpoint_dir(&job.key).join(CHECKPOINT_FILE);
        assert!(!ck.exists(), "no budget, no checkpoint");
        let first = b.run(&[b.job(p.clone(), Some(2))]).remove(0);
        assert_eq!(first.0.stopped_at, Some(2));
        assert!(ck.exists());
        assert!(first.1.iter().any(|(n, _)| n == "model.safetensors"));
        let second = b.run(&[b.job(p.clone(), Some(5))]).remove(0);
        assert_eq!(second.0.stopped_at, Some(5));
        let last = b.run(&[b.job(p.clone(), None)]).remove(0);
        assert_eq!(last.0.stopped_at, None);
        same(&whole, &last, "resumed at 2 and 5");
        let m = b.messages.lock().unwrap().clone();
        assert!(
            m.iter().any(|m| m.contains("at step 2")) && m.iter().any(|m| m.contains("at step 5")),
            "{m:?}"
        );
        // a truncated checkpoint is ignored: the run starts over and still ends the same
        let bytes = std::fs::read(&ck).unwrap();
        std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
        let again = b.run(&[b.job(p.clone(), None)]).remove(0);
        same(&whole, &again, "a truncated checkpoint");
        assert!(
            b.messages
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.contains("ignoring the checkpoint"))
        );
    }

    #[test]
    fn a_train_lm_group_with_members_at_different_steps_equals_their_unfused_runs() {
        let b = Bench::new();
        let specs = [
            json!({"steps": 5, "seed": 1, "objective": "clm"}),
            json!({"steps": 5, "seed": 2, "lr": 0.003, "objective": "sc"}),
            json!({"steps": 5, "seed": 3, "weight_decay": 0.1, "objective": "ul2"}),
        ];
        let alone: Vec<_> = specs
            .iter()
            .map(|p| b.run(&[b.job(p.clone(), None)]).remove(0))
            .collect();
        let round = |budgets: [Option<u64>; 3]| {
            let jobs: Vec<Job> = specs
                .iter()
                .zip(budgets)
                .map(|(p, bu)| b.job(p.clone(), bu))
                .collect();
            b.run(&jobs)
        };
        // 0 and 1 fuse (0 → 2), 2 alone (0 → 3)
        let r1 = round([Some(2), Some(2), Some(3)]);
        let stops: Vec<Option<u64>> = r1.iter().map(|r| r.0.stopped_at).collect();
        assert_eq!(stops, [Some(2), Some(2), Some(3)]);
        // 0: 2 → 4; 1: 2 → end; 2: 3 → end
        let r2 = round([Some(4), None, None]);
        assert_eq!(r2[0].0.stopped_at, Some(4));
        same(&r2[1], &alone[1], "member 1");
        same(&r2[2], &alone[2], "member 2");
        let r3 = round([None, None, Some(9)]);
        for m in 0..3 {
            same(&r3[m], &alone[m], &format!("member {m}, last round"));
        }
    }

    #[test]
    fn a_diverged_language_model_leaves_no_checkpoint() {
        let b = Bench::new();
        let job = b.job(json!({"steps": 4, "lr": 1e30, "clip": 1e30}), Some(3));
        let ck = b.store.checkpoint_dir(&job.key).join(CHECKPOINT_FILE);
        std::fs::create_dir_all(ck.parent().unwrap()).unwrap();
        std::fs::write(&ck, b"stale").unwrap();
        let out = b.run(&[job]).remove(0);
        assert!(
            matches!(out.0.status, EntryStatus::Diverged { .. }),
            "{:?}",
            out.0.status
        );
        assert!(!ck.exists());
    }
}
