//! The scheduler and the local executor against the real store, with a fake op runner.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ablate_cache::{Lookup, Metric, Store};
use ablate_plan::Plan;
use ablate_run::{
    CancelToken, LocalExecutor, OpContext, OpError, OpOutput, OpRunner, RunEvent, RunOptions,
    Summary,
};
use ablate_spec::{OpCatalog, OpSchema, Overrides, ParamSpec, ParamType, SourceFile};
use serde_json::json;

/// `work`: sleeps `ms`, fails when `fail` (or for its first `flaky` attempts), panics when
/// `panic`; records how many run at once.
struct Fake {
    schema: Vec<OpSchema>,
    running: AtomicUsize,
    peak: AtomicUsize,
    attempts: AtomicUsize,
    /// (job.stage, job.device, started, ended) of every run.
    spans: Mutex<Vec<(String, String, Instant, Instant)>>,
    /// Every job the `report` op ran.
    reports: Mutex<Vec<ablate_run::Job>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        let p = |name, ty, d| ParamSpec::with_default(name, ty, d, "");
        let work = OpSchema {
            name: "work",
            version: 1,
            summary: "",
            params: vec![
                p("v", ParamType::non_negative_int(), json!(0)),
                p("ms", ParamType::non_negative_int(), json!(0)),
                p("fail", ParamType::Bool, json!(false)),
                p("flaky", ParamType::non_negative_int(), json!(0)),
                p("panic", ParamType::Bool, json!(false)),
                p("quiet", ParamType::Bool, json!(false)),
                // Fails while this file exists (a bug the user fixes between runs).
                p("fail_while", ParamType::Str, json!("")),
                // Reports a divergence (a NaN loss at step 3).
                p("diverge", ParamType::Bool, json!(false)),
            ],
            gathers: false,
            free_params: false,
            inputs_by_name: false,
            on_device: false,
            needs: (0, None),
        };
        // A report: gathers, and records what it was given.
        let report = OpSchema {
            name: "report",
            version: 1,
            summary: "",
            params: vec![],
            gathers: true,
            free_params: false,
            inputs_by_name: false,
            on_device: false,
            needs: (1, None),
        };
        Arc::new(Fake {
            schema: vec![work, report],
            reports: Mutex::new(Vec::new()),
            running: 0.into(),
            peak: 0.into(),
            attempts: 0.into(),
            spans: Mutex::new(Vec::new()),
        })
    }
}

impl OpCatalog for Fake {
    fn schema(&self, op: &str) -> Option<&OpSchema> {
        self.schema.iter().find(|s| s.name == op)
    }
    fn op_names(&self) -> Vec<&'static str> {
        vec!["work", "report"]
    }
}

impl OpRunner for Fake {
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        if ctx.job.op() == "report" {
            self.reports.lock().unwrap().push(ctx.job.clone());
            return Ok(OpOutput {
                metrics: vec![Metric::new("n", ctx.job.inputs.len() as f64)],
                ..OpOutput::default()
            });
        }
        let started = Instant::now();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let p = ctx.job.params();
        let ms = p["ms"].as_u64().unwrap();
        if p["quiet"] != json!(true) {
            let log = format!("working on {}", ctx.job.id);
            std::fs::write(ctx.out_dir().join("log.txt"), log).unwrap();
        }
        let mut slept = 0;
        while slept < ms && !ctx.is_cancelled() {
            std::thread::sleep(Duration::from_millis(5));
            slept += 5;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let span = (
            ctx.job.stage.clone(),
            ctx.job.device.clone(),
            started,
            Instant::now(),
        );
        self.spans.lock().unwrap().push(span);
        if ctx.is_cancelled() {
            return Err(OpError::Cancelled);
        }
        if p["panic"] == json!(true) {
            panic!("the fake op panicked on purpose");
        }
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) as u64;
        let fail_while = p["fail_while"].as_str().unwrap();
        if p["fail"] == json!(true)
            || attempt < p["flaky"].as_u64().unwrap()
            || (!fail_while.is_empty() && std::path::Path::new(fail_while).exists())
        {
            return Err(OpError::msg("the fake op failed on purpose"));
        }
        if p["diverge"] == json!(true) {
            return Ok(OpOutput {
                metrics: vec![Metric::at_step("loss", 2, 0.5)],
                status: ablate_cache::EntryStatus::diverged("loss", Some(3), f64::NAN),
                ..OpOutput::default()
            });
        }
        Ok(OpOutput {
            metrics: vec![Metric::new("v", p["v"].as_f64().unwrap())],
            publish: vec![],
            ..OpOutput::default()
        })
    }
}

fn plan(fake: &Fake, yaml: &str) -> Plan {
    let p = ablate_spec::load(SourceFile::new("t.yaml", yaml), &Overrides::new(), fake)
        .unwrap_or_else(|d| panic!("{d}"));
    ablate_plan::build(&p, fake, std::path::Path::new(".")).unwrap_or_else(|d| panic!("{d}"))
}

fn go(
    fake: &Arc<Fake>,
    store: &Store,
    plan: &Plan,
    jobs: usize,
    cancel: &CancelToken,
) -> (Summary, Vec<RunEvent>) {
    go_on(fake, store, plan, jobs, 0, cancel)
}

/// [`go`] on a machine with `gpus` GPUs.
fn go_on(
    fake: &Arc<Fake>,
    store: &Store,
    plan: &Plan,
    jobs: usize,
    gpus: usize,
    cancel: &CancelToken,
) -> (Summary, Vec<RunEvent>) {
    let statuses = ablate_plan::statuses(plan, store, &[]);
    let exec = Arc::new(LocalExecutor::new(
        fake.clone(),
        store.clone(),
        ".".into(),
        "test",
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = RunOptions {
        jobs,
        gpus: Some((0..gpus).map(|d| d.to_string()).collect()),
        mem_gb: 1e9,
    };
    let summary = rt.block_on(ablate_run::run(plan, &statuses, exec, &opts, cancel, &tx));
    drop(tx);
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (summary, events)
}

fn tag(e: &RunEvent) -> String {
    serde_json::to_value(e).unwrap()["event"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_failure_fails_its_dependants_only_and_keeps_its_logs() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        r#"
name: f
stages:
  a: { op: work, matrix: { v: [1, 2, 3] } }
  bad: { op: work, params: { fail: true } }
  after_bad: { op: work, needs: [bad] }
  after_a: { op: work, needs: [a] }
"#,
    );
    let (s, events) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.cached, s.failed, s.skipped), (6, 0, 1, 1));
    let failed = events.iter().find_map(|e| match e {
        RunEvent::Failed { id, error, log, .. } => Some((id.clone(), error.clone(), log.clone())),
        _ => None,
    });
    let (id, error, log) = failed.unwrap();
    assert_eq!(id, "bad");
    assert!(error.contains("failed on purpose"));
    let log = log.expect("failed attempt kept");
    assert_eq!(
        std::fs::read_to_string(log.join("log.txt")).unwrap(),
        "working on bad"
    );
    assert!(events.iter().any(|e| matches!(e, RunEvent::Skipped { id, because, .. } if id == "after_bad" && because == "bad")));
    assert_eq!(tag(events.last().unwrap()), "summary");
    // The siblings' results are in the cache; the failed one is not.
    for (id, inst) in p.instances() {
        let hit = matches!(store.lookup(&inst.key), Lookup::Hit(_));
        assert_eq!(
            hit,
            !["bad", "after_bad"].contains(&inst.id.as_str()),
            "{}",
            p.instance(id).id
        );
    }

    // Second run: the six are cached, the failure runs again.
    let (s, _) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.cached, s.failed, s.skipped), (0, 6, 1, 1));
}

#[test]
fn a_failure_that_wrote_nothing_points_at_no_logs() {
    // Regression: a training failure named an empty `v1/failed/<key>/` as its logs.
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: q\nstages:\n  bad: { op: work, params: { fail: true, quiet: true } }\n",
    );
    let (s, events) = go(&fake, &store, &p, 1, &CancelToken::new());
    assert_eq!(s.failed, 1);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Failed { log: None, .. }))
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("v1/failed"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn retries_until_success() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: r\nstages:\n  flaky: { op: work, retries: 2, params: { flaky: 2 } }\n",
    );
    let (s, events) = go(&fake, &store, &p, 1, &CancelToken::new());
    assert_eq!((s.ran, s.failed), (1, 0));
    let retries: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                RunEvent::Failed {
                    will_retry: true,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Started { attempt: 3, .. }))
    );
}

#[test]
fn never_runs_more_than_jobs_at_once() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: c\nstages:\n  a: { op: work, params: { ms: 30 }, matrix: { v: [1, 2, 3, 4, 5, 6] } }\n",
    );
    let (s, _) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!(s.ran, 6);
    assert_eq!(fake.peak.load(Ordering::SeqCst), 2);
    // An instance asking for 2 CPUs takes both slots.
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: c\nstages:\n  a: { op: work, resources: { cpus: 2 }, params: { ms: 20 }, matrix: { v: [1, 2, 3] } }\n",
    );
    go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!(fake.peak.load(Ordering::SeqCst), 1);
}

#[test]
fn cancel_stops_running_work_and_keeps_nothing_half_written() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: x\nstages:\n  slow: { op: work, params: { ms: 10000 }, matrix: { v: [1, 2, 3, 4] } }\n",
    );
    let cancel = CancelToken::new();
    let c = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        c.cancel();
    });
    let t0 = std::time::Instant::now();
    let (s, events) = go(&fake, &store, &p, 2, &cancel);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "cancellation took {:?}",
        t0.elapsed()
    );
    assert_eq!((s.ran, s.skipped), (0, 4));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Interrupted { not_run: 4 }))
    );
    assert!(store.keys().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("v1/tmp"))
            .unwrap()
            .count(),
        0,
        "no temp dir left"
    );
}

#[test]
fn a_panicking_op_fails_its_instance_not_the_run() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: p\nstages:\n  boom: { op: work, params: { panic: true } }\n  fine: { op: work }\n",
    );
    let (s, events) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.failed), (1, 1));
    assert!(events.iter().any(
        |e| matches!(e, RunEvent::Failed { error, .. } if error.contains("panicked on purpose"))
    ));
}

#[test]
fn asking_for_a_gpu_without_one_is_a_clear_failure() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: g\nstages:\n  gpu: { op: work, resources: { gpus: 0.5 } }\n  cpu: { op: work }\n",
    );
    let (s, events) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.failed), (1, 1));
    assert!(events.iter().any(
        |e| matches!(e, RunEvent::Failed { id, error, .. } if id == "gpu" && error.contains("GPU"))
    ));
}

/// The most runs that overlapped in time on each device, from the fake op's spans.
fn peak_per_device(fake: &Fake) -> BTreeMap<String, usize> {
    let spans = fake.spans.lock().unwrap();
    let mut peak = BTreeMap::new();
    for (_, dev, start, _) in spans.iter() {
        // At each run's start, count the runs on its device that had started and not ended.
        let at = spans
            .iter()
            .filter(|(_, d, s, e)| d == dev && s <= start && e > start)
            .count();
        let p = peak.entry(dev.clone()).or_insert(0);
        *p = (*p).max(at);
    }
    peak
}

#[test]
fn gpu_shares_pack_onto_devices_without_oversubscribing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Eight quarter-GPU runs on two GPUs: four to a device, all at once.
    let fake = Fake::new();
    let p = plan(
        &fake,
        "name: g\nstages:\n  q:\n    op: work\n    device: cuda\n    resources: { gpus: 0.25 }\n    matrix: { v: [1, 2, 3, 4, 5, 6, 7, 8] }\n    params: { ms: 150 }\n",
    );
    let (s, _) = go_on(&fake, &store, &p, 16, 2, &CancelToken::new());
    assert_eq!(s.ran, 8);
    let peak = peak_per_device(&fake);
    assert_eq!(peak.keys().collect::<Vec<_>>(), ["cuda:0", "cuda:1"]);
    assert!(peak.values().all(|&n| n <= 4), "{peak:?}");
    // All eight are dispatched in one pass, spread over the two devices.
    let spans = fake.spans.lock().unwrap().clone();
    for d in ["cuda:0", "cuda:1"] {
        assert_eq!(spans.iter().filter(|(_, x, _, _)| x == d).count(), 4, "{d}");
    }
    // The device is recorded in the manifest.
    let key = p.instances().next().unwrap().1.key;
    let Lookup::Hit(m) = store.lookup(&key) else {
        panic!("cached")
    };
    assert!(m.device.starts_with("cuda:"), "{}", m.device);

    // Pinned to cuda:1 at half a GPU: two at a time, all on cuda:1. A CUDA stage without
    // `gpus` takes a whole device.
    let fake = Fake::new();
    let p = plan(
        &fake,
        "name: h\nstages:\n  half:\n    op: work\n    device: cuda:1\n    resources: { gpus: 0.5 }\n    matrix: { v: [1, 2, 3] }\n    params: { ms: 100 }\n  whole:\n    op: work\n    device: cuda\n    matrix: { v: [1, 2, 3] }\n    params: { ms: 120 }\n",
    );
    let (s, _) = go_on(&fake, &store, &p, 16, 2, &CancelToken::new());
    assert_eq!(s.ran, 6);
    let spans = fake.spans.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .all(|(stage, d, _, _)| stage != "half" || d == "cuda:1")
    );
    assert!(peak_per_device(&fake).values().all(|&n| n <= 2));
    // A whole-GPU run never shares its device: nothing else overlaps it there.
    for (stage, d, s0, e0) in &spans {
        let others = spans
            .iter()
            .filter(|(_, x, s, e)| x == d && s < e0 && e > s0)
            .count()
            - 1;
        if stage == "whole" {
            assert_eq!(others, 0, "a whole-GPU run on {d} shared it");
        }
    }

    // A pin beyond the machine's GPUs fails that instance, saying why.
    let fake = Fake::new();
    let p = plan(
        &fake,
        "name: k\nstages:\n  far: { op: work, device: 'cuda:5', resources: { gpus: 0.5 } }\n  near: { op: work, device: cuda }\n",
    );
    let (s, events) = go_on(&fake, &store, &p, 2, 2, &CancelToken::new());
    assert_eq!((s.ran, s.failed), (1, 1));
    assert!(events.iter().any(
        |e| matches!(e, RunEvent::Failed { id, error, .. } if id == "far" && error.contains("cuda:5"))
    ));
}

#[test]
fn summary_serialises_as_documented() {
    let s = RunEvent::Summary(Summary {
        ran: 1,
        cached: 2,
        failed: 3,
        skipped: 4,
        submitted: 0,
        seconds: 0.5,
        ..Summary::default()
    });
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#"{"event":"summary","ran":1,"cached":2,"failed":3,"skipped":4,"seconds":0.5}"#
    );
    // Only a detached Slurm run leaves instances submitted, and only then is it said.
    let s = RunEvent::Summary(Summary {
        ran: 0,
        cached: 2,
        failed: 0,
        skipped: 0,
        submitted: 5,
        seconds: 0.5,
        ..Summary::default()
    });
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#"{"event":"summary","ran":0,"cached":2,"failed":0,"skipped":0,"submitted":5,"seconds":0.5}"#
    );
}

#[test]
fn dependants_started_in_reverse_file_order() {
    // Regression: petgraph lists a node's neighbours newest first, so the instances a finished
    // input released started last-to-first.
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: o\nstages:\n  src: { op: work }\n  m: { op: work, needs: [src], matrix: { v: [1, 2, 3, 4] } }\n",
    );
    let (_, events) = go(&fake, &store, &p, 1, &CancelToken::new());
    let started: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Started { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["src", "m[v=1]", "m[v=2]", "m[v=3]", "m[v=4]"]);
}

fn skipped(events: &[RunEvent]) -> Vec<(String, String, &'static str)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Skipped {
                id, because, cause, ..
            } => Some((id.clone(), because.clone(), cause.name())),
            _ => None,
        })
        .collect()
}

/// #21: one failed instance skipped every report that needed its stage. A report builds from
/// what finished, given the inputs that did not with why; a `strict` one is skipped; what maps
/// over the failure is skipped as before.
#[test]
fn a_report_builds_from_what_finished_unless_strict() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        r#"
name: partial
stages:
  train: { op: work, matrix: { v: [1, 2, 3] }, params: { fail: false },
           include: [{ v: 9, fail: true }] }
  eval: { op: work, needs: [train] }
  table: { op: report, needs: [eval] }
  strict_table: { op: report, needs: [eval], strict: true }
  both: { op: report, needs: [train, eval] }
"#,
    );
    let (s, events) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.failed, s.skipped), (6 + 2, 1, 2));
    assert_eq!(
        skipped(&events),
        [
            (
                "eval[v=9,fail=true]".to_owned(),
                "train[v=9,fail=true]".to_owned(),
                "failed"
            ),
            (
                "strict_table".to_owned(),
                "train[v=9,fail=true]".to_owned(),
                "failed"
            ),
        ]
    );
    let reports = fake.reports.lock().unwrap();
    let table = reports.iter().find(|j| j.stage == "table").unwrap();
    assert_eq!(table.inputs.len(), 3);
    let missing: Vec<(&str, &str, Option<&str>)> = table
        .missing
        .iter()
        .map(|m| (m.id.as_str(), m.why.name(), m.because.as_deref()))
        .collect();
    assert_eq!(
        missing,
        [(
            "eval[v=9,fail=true]",
            "skipped",
            Some("train[v=9,fail=true]")
        )]
    );
    let both = reports.iter().find(|j| j.stage == "both").unwrap();
    let mut whys: Vec<&str> = both.missing.iter().map(|m| m.why.name()).collect();
    whys.sort_unstable();
    assert_eq!((both.inputs.len(), whys), (6, vec!["failed", "skipped"]));
    // The partial report is not under the report's key, which stays a miss.
    let table_inst = p.instances().find(|(_, i)| i.id == "table").unwrap().1;
    assert_ne!(table.key, table_inst.key);
    assert!(matches!(store.lookup(&table_inst.key), Lookup::Miss));
    assert!(matches!(store.lookup(&table.key), Lookup::Hit(_)));
    assert!(events.iter().any(|e| matches!(
        e,
        RunEvent::Finished { id, missing_inputs: 1, key, .. } if id == "table" && *key == table.key
    )));
}

/// #21: after the failed instance is fixed, the next run must build the complete report, not
/// serve the partial one from the cache.
#[test]
fn a_partial_report_is_not_served_once_the_failure_is_fixed() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bug = dir.path().join("bug");
    std::fs::write(&bug, "").unwrap();
    let yaml = format!(
        "name: fix\nstages:\n  train: {{ op: work, matrix: {{ v: [1, 2] }}, params: {{ fail_while: '{}' }} }}\n  table: {{ op: report, needs: [train] }}\n",
        bug.display()
    );
    let p = plan(&fake, &yaml);
    let (s, _) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.failed), (1, 2));
    // Rerun, still broken: the partial report is built again (not "cached by another run").
    let (s, events) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.cached, s.failed), (1, 0, 2));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RunEvent::Finished { by_other: true, .. }))
    );
    std::fs::remove_file(&bug).unwrap();
    let (s, _) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!((s.ran, s.cached, s.failed), (3, 0, 0));
    let reports = fake.reports.lock().unwrap();
    let last = reports.last().unwrap();
    assert_eq!((last.inputs.len(), last.missing.len()), (2, 0));
    let table = p.instances().find(|(_, i)| i.id == "table").unwrap().1;
    assert_eq!(last.key, table.key);
}

/// #21: a diverged result (`diverged: record`) is complete; what maps over it is skipped saying
/// it diverged, a report runs (and reads its status), both when it is computed and when it is
/// found in the cache; the summary counts it.
#[test]
fn a_diverged_instance_skips_what_maps_over_it_and_feeds_reports() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        r#"
name: div
stages:
  train: { op: work, matrix: { diverge: [false, true] }, diverged: record }
  eval: { op: work, needs: [train] }
  table: { op: report, needs: [train] }
  strict_table: { op: report, needs: [train], strict: true }
  evals: { op: report, needs: [eval] }
"#,
    );
    let (s, events) = go(&fake, &store, &p, 2, &CancelToken::new());
    // `table` and `strict_table` are one complete report (`strict` is not in the key): one
    // computes it, the other finds it.
    assert_eq!(
        (s.ran, s.diverged, s.cached, s.failed, s.skipped),
        (5, 1, 1, 0, 1)
    );
    assert_eq!(
        skipped(&events),
        [(
            "eval[diverge=true]".to_owned(),
            "train[diverge=true]".to_owned(),
            "diverged"
        )]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        RunEvent::Finished { id, status: "diverged", diverged: Some(d), .. }
            if id == "train[diverge=true]" && d.metric == "loss" && d.step == Some(3)
    )));
    let json = events
        .iter()
        .find(|e| {
            matches!(
                e,
                RunEvent::Finished {
                    status: "diverged",
                    ..
                }
            )
        })
        .map(|e| serde_json::to_value(e).unwrap())
        .unwrap();
    assert_eq!(json["status"], "diverged");
    assert_eq!(json["diverged"]["value"], "NaN");
    {
        let reports = fake.reports.lock().unwrap();
        let by = |stage: &str| reports.iter().find(|j| j.stage == stage).unwrap();
        // Reports read a diverged input (it has an entry), strict or not.
        let table = reports.iter().find(|j| j.stage.ends_with("table")).unwrap();
        assert_eq!((table.inputs.len(), table.missing.len()), (2, 0));
        let evals = by("evals");
        assert_eq!(evals.missing.len(), 1);
        assert_eq!(evals.missing[0].why.name(), "diverged");
    }

    // From the cache: the diverged entry still holds back what maps over it.
    let (s, events) = go(&fake, &store, &p, 2, &CancelToken::new());
    assert_eq!(
        (s.ran, s.cached, s.cached_diverged, s.skipped),
        (1, 5, 1, 1)
    );
    assert_eq!(skipped(&events).len(), 1);
    assert!(events.iter().any(|e| matches!(
        e,
        RunEvent::Cached { id, status: "diverged", .. } if id == "train[diverge=true]"
    )));
}
