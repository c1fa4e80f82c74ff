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
