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
    /// The ids of each group `run_group` was called with, in order.
    groups: Mutex<Vec<Vec<String>>>,
    /// The ids `run` was called with (outside a group).
    singles: Mutex<Vec<String>>,
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
        // `work` whose `v`, `fail`, `panic`, `flaky` may differ within a fused group.
        let fused = OpSchema {
            name: "fused",
            ..work.clone()
        };
        Arc::new(Fake {
            schema: vec![work, report, fused],
            groups: Mutex::new(Vec::new()),
            singles: Mutex::new(Vec::new()),
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
        vec!["work", "report", "fused"]
    }
    fn fusible(&self, op: &str) -> &'static [&'static str] {
        match op {
            "fused" => &["v", "fail", "panic", "flaky", "diverge"],
            _ => &[],
        }
    }
}

impl OpRunner for Fake {
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        self.singles.lock().unwrap().push(ctx.job.id.clone());
        self.work(ctx)
    }

    /// Records the group, then works through its members in turn (a fused op would compute
    /// them as one).
    fn run_group(&self, ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
        let ids = ctxs.iter().map(|c| c.job.id.clone()).collect();
        self.groups.lock().unwrap().push(ids);
        ctxs.iter().map(|ctx| self.work(ctx)).collect()
    }
}

impl Fake {
    fn work(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
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
            ctx.job.placement.name(),
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
    let opts = RunOptions {
        jobs,
        gpus: Some((0..gpus).map(|d| d.to_string()).collect()),
        mem_gb: 1e9,
        whole_groups: false,
    };
    go_with(fake, store, plan, &opts, cancel)
}

/// [`go`] with these options.
fn go_with(
    fake: &Arc<Fake>,
    store: &Store,
    plan: &Plan,
    opts: &RunOptions,
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
    let summary = rt.block_on(ablate_run::run(plan, &statuses, exec, opts, cancel, &tx));
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

// --- fused groups (issue 23) ---------------------------------------------------------------------

/// The sizes of the groups `run_group` was called with, sorted.
fn group_sizes(fake: &Fake) -> Vec<usize> {
    let mut sizes: Vec<usize> = fake.groups.lock().unwrap().iter().map(Vec::len).collect();
    sizes.sort_unstable();
    sizes
}

fn sweep(fake: &Fake, extra: &str) -> Plan {
    plan(
        fake,
        &format!(
            "name: g\nstages:\n  a: {{ op: fused, params: {{ ms: 20 }}, matrix: {{ v: [0, 1, 2, 3, 4, 5] }}{extra} }}\n"
        ),
    )
}

#[test]
fn a_fused_group_runs_as_one_call_in_one_slot_and_each_member_is_its_own_entry() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = sweep(&fake, "");
    let (s, events) = go(&fake, &store, &p, 1, &CancelToken::new());
    assert_eq!((s.ran, s.failed), (6, 0));
    assert_eq!(group_sizes(&fake), [6], "one slot: one group of six");
    assert!(fake.singles.lock().unwrap().is_empty());
    // One `group_started` naming the members, then each member's own events.
    let groups: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::GroupStarted { ids, stage, .. } => Some((stage.clone(), ids.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].0, "a");
    assert_eq!(groups[0].1, *fake.groups.lock().unwrap().first().unwrap());
    let json =
        serde_json::to_value(events.iter().find(|e| tag(e) == "group_started").unwrap()).unwrap();
    assert_eq!(json["ids"].as_array().unwrap().len(), 6, "{json}");
    let count = |t: &str| events.iter().filter(|e| tag(e) == t).count();
    assert_eq!((count("started"), count("finished")), (6, 6));
    // Each member has its own entry with its own metric, as if it ran alone.
    for (_, inst) in p.instances() {
        let Lookup::Hit(m) = store.lookup(&inst.key) else {
            panic!("{} is not in the cache", inst.id)
        };
        assert_eq!(
            m.final_metrics().collect::<Vec<_>>(),
            [("v", inst.params()["v"].as_f64().unwrap())]
        );
        assert_eq!(
            std::fs::read_to_string(store.entry_dir(&inst.key).join("log.txt")).unwrap(),
            format!("working on {}", inst.id)
        );
    }
    // Cached members drop out: a second run computes nothing.
    let before = fake.groups.lock().unwrap().len();
    let (s, _) = go(&fake, &store, &p, 1, &CancelToken::new());
    assert_eq!((s.ran, s.cached), (0, 6));
    assert_eq!(fake.groups.lock().unwrap().len(), before);
}

#[test]
fn ready_members_are_split_over_the_free_slots() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (s, _) = go(&fake, &store, &sweep(&fake, ""), 2, &CancelToken::new());
    assert_eq!(s.ran, 6);
    assert_eq!(group_sizes(&fake), [3, 3]);
    // Both groups ran at once, one per slot.
    assert_eq!(fake.peak.load(Ordering::SeqCst), 2);

    // The cap: at most four per group, so six on one slot are two groups (of three).
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    go(
        &fake,
        &store,
        &sweep(&fake, ", fuse: 4"),
        1,
        &CancelToken::new(),
    );
    assert_eq!(group_sizes(&fake), [3, 3]);
    // More slots than members: each runs alone, through the ordinary path.
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    go(&fake, &store, &sweep(&fake, ""), 8, &CancelToken::new());
    assert!(group_sizes(&fake).is_empty());
    assert_eq!(fake.singles.lock().unwrap().len(), 6);
}

/// On Slurm every ready instance goes out at once (unbounded slots), and a fused group is one
/// array task: its members go as whole groups, split only by the stage's cap. Without
/// `whole_groups`, unbounded slots would give every member a slot of its own, and nothing
/// would ever fuse on a cluster.
#[test]
fn whole_groups_dispatch_a_groups_members_together_however_many_slots_are_free() {
    let unbounded = |whole_groups| RunOptions {
        jobs: 1 << 20,
        gpus: None,
        mem_gb: f64::INFINITY,
        whole_groups,
    };
    for (extra, whole, sizes) in [
        ("", true, vec![6]),
        (", fuse: 4", true, vec![3, 3]),
        (", fuse: off", true, vec![]),
        ("", false, vec![]),
    ] {
        let fake = Fake::new();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (s, _) = go_with(
            &fake,
            &store,
            &sweep(&fake, extra),
            &unbounded(whole),
            &CancelToken::new(),
        );
        assert_eq!(s.ran, 6);
        assert_eq!(group_sizes(&fake), sizes, "`{extra}`, whole groups {whole}");
        let alone: usize = 6 - sizes.iter().sum::<usize>();
        assert_eq!(fake.singles.lock().unwrap().len(), alone);
    }
}

#[test]
fn fuse_off_runs_each_member_alone() {
    for fuse in [", fuse: off", ", fuse: 1"] {
        let fake = Fake::new();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (s, events) = go(&fake, &store, &sweep(&fake, fuse), 1, &CancelToken::new());
        assert_eq!(s.ran, 6);
        assert!(group_sizes(&fake).is_empty(), "{fuse}");
        assert_eq!(fake.singles.lock().unwrap().len(), 6);
        assert!(!events.iter().any(|e| tag(e) == "group_started"));
    }
}

#[test]
fn a_member_that_fails_fails_alone_and_the_others_finish() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: g\nstages:\n  a: { op: fused, matrix: { v: [0, 1, 2], fail: [false, true] } }\n  after: { op: work, needs: [a] }\n",
    );
    let (s, events) = go(&fake, &store, &p, 1, &CancelToken::new());
    assert_eq!(group_sizes(&fake), [6]);
    // Three members fail (and skip what maps over them), three finish (and their dependants
    // run).
    assert_eq!((s.ran, s.failed, s.skipped), (6, 3, 3));
    for (_, inst) in p.instances().filter(|(_, i)| i.stage.as_str() == "a") {
        let failed = inst.params()["fail"] == json!(true);
        let failure = events.iter().find_map(|e| match e {
            RunEvent::Failed { id, error, .. } if *id == inst.id => Some(error.clone()),
            _ => None,
        });
        assert_eq!(failure.is_some(), failed, "{}", inst.id);
        if let Some(error) = failure {
            assert!(error.contains("failed on purpose"), "{error}");
        }
        assert_eq!(
            matches!(store.lookup(&inst.key), Lookup::Hit(_)),
            !failed,
            "{}",
            inst.id
        );
    }
}

#[test]
fn a_failed_member_is_retried_on_its_own() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The op's first attempt (whichever member that is) fails.
    let p = plan(
        &fake,
        "name: g\nstages:\n  a: { op: fused, retries: 1, params: { flaky: 1 }, matrix: { v: [0, 1, 2, 3, 4, 5] } }\n",
    );
    let (s, events) = go(&fake, &store, &p, 1, &CancelToken::new());
    assert_eq!((s.ran, s.failed), (6, 0));
    let retried: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Failed {
                id,
                will_retry: true,
                attempt: 1,
                ..
            } => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Started { id, attempt: 2, .. } if *id == retried[0]))
    );
    // The group of six, then the retry alone (the others were done).
    assert_eq!(group_sizes(&fake), [6]);
    assert_eq!(*fake.singles.lock().unwrap(), retried);
}

#[test]
fn a_panic_in_a_group_fails_each_member_with_its_message() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: g\nstages:\n  a: { op: fused, matrix: { v: [0, 1], panic: [false, true] } }\n",
    );
    let (s, events) = go(&fake, &store, &p, 1, &CancelToken::new());
    assert_eq!(group_sizes(&fake), [4]);
    assert_eq!((s.ran, s.failed), (0, 4));
    let errors: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Failed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 4);
    assert!(
        errors
            .iter()
            .all(|e| e == "op `fused` panicked: the fake op panicked on purpose"),
        "{errors:?}"
    );
    assert!(
        p.instances()
            .all(|(_, i)| matches!(store.lookup(&i.key), Lookup::Miss))
    );
}

#[test]
fn group_members_locked_or_computed_elsewhere_drop_out_of_the_group() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = sweep(&fake, "");
    let statuses = ablate_plan::statuses(&p, &store, &[]);
    let members: Vec<_> = p.instances().map(|(_, i)| i).collect();
    // Another process computed member 1 after this run looked (its status says run) ...
    {
        let other = Fake::new();
        let one = plan(
            &other,
            "name: g\nstages:\n  a: { op: fused, params: { ms: 20, v: 1 } }\n",
        );
        assert_eq!(one.instances().next().unwrap().1.key, members[1].key);
        go(&other, &store, &one, 1, &CancelToken::new());
    }
    // ... and holds member 2's key for a while.
    let lock = store.try_lock(&members[2].key).unwrap().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(lock);
    });
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
        jobs: 1,
        gpus: None,
        mem_gb: 1e9,
        whole_groups: false,
    };
    let s = rt.block_on(ablate_run::run(
        &p,
        &statuses,
        exec,
        &opts,
        &CancelToken::new(),
        &tx,
    ));
    release.join().unwrap();
    drop(tx);
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert_eq!((s.ran, s.cached, s.failed), (5, 1, 0));
    // The group computed four; the locked one ran after, alone, once its key was free.
    assert_eq!(group_sizes(&fake), [4]);
    assert_eq!(*fake.singles.lock().unwrap(), [members[2].id.clone()]);
    assert!(events.iter().any(|e| matches!(
        e,
        RunEvent::Finished { id, by_other: true, .. } if *id == members[1].id
    )));
    assert!(
        members
            .iter()
            .all(|i| matches!(store.lookup(&i.key), Lookup::Hit(_)))
    );
}

#[test]
fn a_cancelled_group_keeps_nothing() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(
        &fake,
        "name: g\nstages:\n  a: { op: fused, params: { ms: 5000 }, matrix: { v: [0, 1, 2] } }\n",
    );
    let cancel = CancelToken::new();
    let c = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        c.cancel();
    });
    let t0 = Instant::now();
    let (s, events) = go(&fake, &store, &p, 1, &cancel);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(group_sizes(&fake), [3]);
    assert_eq!((s.ran, s.failed, s.skipped), (0, 0, 3));
    assert!(events.iter().any(|e| tag(e) == "interrupted"));
    assert!(
        p.instances()
            .all(|(_, i)| matches!(store.lookup(&i.key), Lookup::Miss))
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("v1/failed")).map_or(0, |d| d.count()),
        0
    );
}
