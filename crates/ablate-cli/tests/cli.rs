//! The `ablate` binary end to end: real pipeline files written into a temp dir, real runs
//! against a cache and a results directory inside it, exit codes, stderr, `--json` events and
//! the Parquet tables read back.
//!
//! Every command runs with the temp dir as its working directory and explicit `--cache` and
//! `--results`, so no test touches the repository's `cache/` or `results/`.

// These tests signal the processes they start (`libc::kill`: Ctrl-C, kill -9).
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ablate_results::{ColumnData, Table};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ablate");

const EXIT_OK: i32 = 0;
const EXIT_FAILURE: i32 = 1;
const EXIT_INVALID_INPUT: i32 = 2;
const EXIT_INTERRUPTED: i32 = 130;

/// Data → a 2×2 `train.flow` matrix → `eval.flow` per model → one report: 10 instances, a
/// second or two in a debug build.
const TINY_FLOW: &str = r#"
name: tiny
defaults: { seed: 0 }
stages:
  points:
    op: data.toy2d
    params: { kind: moons, n_train: 200, n_test: 200, noise: 0.1 }
  flow:
    op: train.flow
    needs: [points]
    matrix:
      weights: [shared, unshared]
      steps: [1, 2]
    params: { hidden: 8, epochs: 5, batch: 50, lr: 0.01 }
  eval:
    op: eval.flow
    needs: [flow]
  acc:
    op: report.table
    needs: [eval]
    params: { rows: [weights], cols: [steps], metric: test_acc, aggregate: mean }
"#;
const TINY_FLOW_INSTANCES: usize = 1 + 4 + 4 + 1;

/// A temp dir holding pipeline files, `cache/` and `results/`.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("ablate-cli-test")
                .tempdir()
                .expect("create a temp dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    fn results(&self) -> PathBuf {
        self.path().join("results")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write a pipeline file");
        path
    }

    /// `ablate ARGS --cache <tmp>/cache --results <tmp>/results`, run in the temp dir.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--cache")
            .arg(self.cache())
            .arg("--results")
            .arg(self.results())
            .current_dir(self.path())
            .env_remove("ABLATE_CACHE")
            .env_remove("ABLATE_RESULTS")
            .env_remove("ABLATE_LOG")
            // The GPUs a run shares out are the ones this names: none unless a test says so.
            .env_remove("CUDA_VISIBLE_DEVICES")
            .stdin(Stdio::null());
        cmd
    }

    fn ablate(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run the ablate binary"))
    }

    /// `ablate plan FILE ARGS --format json`: instance id → its plan entry.
    fn plan(&self, file: &str, args: &[&str]) -> BTreeMap<String, Value> {
        let mut all = vec!["plan", file, "--format", "json"];
        all.extend_from_slice(args);
        let run = self.ablate(&all).code(EXIT_OK);
        plan_entries(&run.stdout)
    }

    /// Instance id → key, from `ablate plan --format json`.
    fn keys(&self, file: &str, args: &[&str]) -> BTreeMap<String, String> {
        self.plan(file, args)
            .into_iter()
            .map(|(id, v)| (id, v["key"].as_str().expect("key").to_owned()))
            .collect()
    }

    /// The directory of a cache entry: `<cache>/v1/<key[..2]>/<key>`.
    fn entry(&self, key: &str) -> PathBuf {
        self.cache().join("v1").join(&key[..2]).join(key)
    }
}

fn plan_entries(stdout: &str) -> BTreeMap<String, Value> {
    let doc: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("plan --format json is not JSON ({e}):\n{stdout}"));
    doc["instances"]
        .as_array()
        .expect("`instances` is an array")
        .iter()
        .map(|i| (i["id"].as_str().expect("id").to_owned(), i.clone()))
        .collect()
}

/// What a finished `ablate` process left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8(o.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(o.stderr).expect("stderr is UTF-8"),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code,
            Some(expected),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The `--json` event stream, one object per stdout line.
    fn events(&self) -> Vec<Value> {
        events_of(&self.stdout)
    }

    /// Ids of the instances with event `kind`, sorted.
    fn ids(&self, kind: &str) -> Vec<String> {
        ids_of(&self.events(), kind)
    }

    fn summary(&self) -> Value {
        let events = self.events();
        let last = events.last().expect("at least one event");
        assert_eq!(last["event"], "summary", "the last event is the summary");
        last.clone()
    }
}

fn events_of(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}")))
        .collect()
}

fn ids_of(events: &[Value], kind: &str) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == kind)
        .map(|e| e["id"].as_str().expect("event id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The stage of an instance id (`flow[weights=shared,steps=1]` → `flow`).
fn stage_of(id: &str) -> &str {
    id.split('[').next().unwrap_or(id)
}

/// How many ids fall in each stage.
fn per_stage(ids: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for id in ids {
        *out.entry(stage_of(id).to_owned()).or_default() += 1;
    }
    out
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
}

/// Asserts the summary's counts, which are the last line of a `--json` run.
#[track_caller]
fn assert_summary(run: &Run, ran: u64, cached: u64, failed: u64, skipped: u64) {
    let s = run.summary();
    assert_eq!(
        (
            s["ran"].as_u64(),
            s["cached"].as_u64(),
            s["failed"].as_u64(),
            s["skipped"].as_u64()
        ),
        (Some(ran), Some(cached), Some(failed), Some(skipped)),
        "summary {s}\n--- stderr\n{}",
        run.stderr
    );
}

fn read_parquet(path: &Path) -> Table {
    ablate_results::read_table(path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()))
}

fn column<'a>(table: &'a Table, name: &str) -> &'a ColumnData {
    &table
        .column(name)
        .unwrap_or_else(|| panic!("no column `{name}`"))
        .data
}

fn strs(data: &ColumnData) -> &[Option<String>] {
    match data {
        ColumnData::Str(v) => v,
        other => panic!("expected a string column, found {}", other.kind_name()),
    }
}

fn floats(data: &ColumnData) -> &[Option<f64>] {
    match data {
        ColumnData::Float(v) => v,
        other => panic!("expected a float column, found {}", other.kind_name()),
    }
}

fn ints(data: &ColumnData) -> &[Option<i64>] {
    match data {
        ColumnData::Int(v) => v,
        other => panic!("expected an int column, found {}", other.kind_name()),
    }
}

/// `(stage, label, metric, step) → value` of every row of a run table.
fn metric_values(table: &Table) -> BTreeMap<(String, String, String, Option<i64>), f64> {
    let stage = strs(column(table, "stage"));
    let label = strs(column(table, "label"));
    let metric = strs(column(table, "metric"));
    let step = ints(column(table, "step"));
    let value = floats(column(table, "value"));
    let mut out = BTreeMap::new();
    for row in 0..table.num_rows() {
        let k = (
            stage[row].clone().unwrap(),
            label[row].clone().unwrap_or_default(),
            metric[row].clone().unwrap(),
            step[row],
        );
        assert!(
            out.insert(k.clone(), value[row].unwrap()).is_none(),
            "duplicate row {k:?}"
        );
    }
    out
}

// --- 1. Invalid pipeline files: exit code 2 and the rendered errors, as snapshots -------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

/// `ablate plan NAME.yaml` run from the fixture directory (so the paths in the errors are the
/// bare file names): asserts exit code 2 and nothing on stdout, returns stderr.
fn plan_invalid(name: &str) -> String {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["plan", name, "--cache"])
        .arg(cache.path())
        .current_dir(fixtures_dir())
        .env_remove("ABLATE_CACHE")
        .env_remove("ABLATE_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run the ablate binary");
    let run = Run::from(out).code(EXIT_INVALID_INPUT);
    assert_eq!(run.stdout, "", "{name}: nothing on stdout");
    run.stderr
}

/// Each fixture's stderr is compared with `NAME.stderr` next to it. Run with
/// `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change, then review the diff.
#[test]
fn invalid_pipelines_match_their_error_snapshots() {
    let mut fixtures: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 8, "fixtures: {fixtures:?}");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut mismatched = Vec::new();
    for name in &fixtures {
        let stderr = plan_invalid(name);
        let snapshot = fixtures_dir().join(name.replace(".yaml", ".stderr"));
        if update {
            std::fs::write(&snapshot, &stderr).unwrap();
        } else if std::fs::read_to_string(&snapshot).ok().as_deref() != Some(stderr.as_str()) {
            mismatched.push(format!("{}:\n{stderr}", snapshot.display()));
        }
    }
    assert!(
        mismatched.is_empty(),
        "snapshots differ (UPDATE_SNAPSHOTS=1 to accept, then review):\n{}",
        mismatched.join("\n")
    );
}

/// Asserts that every fragment occurs in `text`.
#[track_caller]
fn assert_contains_all(text: &str, fragments: &[&str]) {
    for f in fragments {
        assert!(text.contains(f), "missing {f:?} in:\n{text}");
    }
}

#[test]
fn typo_in_a_key_points_at_it_and_suggests_the_key() {
    let err = plan_invalid("typo_key.yaml");
    assert_contains_all(
        &err,
        &[
            "error: unknown key `parms` in stage `points`",
            "--> typo_key.yaml:6:5",
            " 6 |     parms: { kind: moons, n_train: 200 }",
            "   |     ^^^^^ unknown key",
            "hint: did you mean `params`?",
        ],
    );
}

#[test]
fn unknown_op_suggests_the_nearest_op() {
    let err = plan_invalid("unknown_op.yaml");
    assert_contains_all(
        &err,
        &[
            "error: unknown op `train.flwo` in stage `flow`",
            "--> unknown_op.yaml:7:9",
            "^^^^^^^^^^ unknown op",
            "hint: did you mean `train.flow`?",
        ],
    );
}

#[test]
fn wrong_type_names_the_expected_type() {
    let err = plan_invalid("wrong_type.yaml");
    assert_contains_all(
        &err,
        &[
            "parameter `steps` of op `train.flow` expects an integer ≥ 1, found a string `four`",
            "--> wrong_type.yaml:9:39",
            "^^^^ expected an integer ≥ 1",
        ],
    );
}

#[test]
fn missing_need_suggests_the_stage() {
    let err = plan_invalid("missing_need.yaml");
    assert_contains_all(
        &err,
        &[
            "error: unknown stage `spiral` in `needs` of stage `flow`",
            "--> missing_need.yaml:9:13",
            "^^^^^^ no such stage",
            "hint: did you mean `spirals`?",
        ],
    );
}

#[test]
fn cycle_names_every_stage_in_it() {
    let err = plan_invalid("cycle.yaml");
    assert_contains_all(
        &err,
        &[
            "error: the stages `a`, `b`, `c` form a cycle",
            "--> cycle.yaml:6:12",
            "`a` → `b` → `c` → `a`",
        ],
    );
}

#[test]
fn bad_interpolation_reports_both_references() {
    let err = plan_invalid("bad_interpolation.yaml");
    assert_contains_all(
        &err,
        &[
            "unknown variable `x` in `${vars.x}`",
            "bad_interpolation.yaml:11:23",
            "unclosed `${` in `${vars.hidden`",
            "bad_interpolation.yaml:11:41",
            "error: the pipeline has 2 problems",
        ],
    );
}

/// What `many.yaml` gets wrong; see the comments in `every_problem_of_a_file_is_reported…`.
const PROBLEMS_IN_MANY: usize = 7;

#[test]
fn a_pipeline_name_that_escapes_results_is_refused() {
    let err = plan_invalid("bad_name.yaml");
    assert_contains_all(
        &err,
        &[
            "error: invalid pipeline name `..`",
            "--> bad_name.yaml:2:7",
            "hint: the name becomes `results/<name>/`",
        ],
    );
}

#[test]
fn every_problem_of_a_file_is_reported_in_file_order() {
    let err = plan_invalid("many.yaml");
    let expected = [
        "many.yaml:3:1",   // descripton
        "many.yaml:9:35",  // noise: lots
        "many.yaml:11:9",  // train.flwo
        "many.yaml:12:13", // point
        "many.yaml:16:14", // retries: two
        "many.yaml:20:5",  // parms
        "many.yaml:23:20", // "echo ${vars.widht}"
    ];
    let mut last = 0;
    for at in expected {
        let pos = err
            .find(&format!("--> {at}\n"))
            .unwrap_or_else(|| panic!("no error at {at} in:\n{err}"));
        assert!(pos > last, "{at} is reported out of order in:\n{err}");
        last = pos;
    }
    assert_contains_all(
        &err,
        &[
            "did you mean `description`?",
            "did you mean `train.flow`?",
            "did you mean `points`?",
            "did you mean `params`?",
            "did you mean `width`?",
        ],
    );
    let reported = err.lines().filter(|l| l.starts_with("error: ")).count() - 1;
    assert_eq!(reported, PROBLEMS_IN_MANY, "{err}");
    assert!(
        err.ends_with(&format!(
            "error: the pipeline has {PROBLEMS_IN_MANY} problems\n"
        )),
        "{err}"
    );
}

// --- 2. Keys: independent of where ablate runs, sensitive to exactly what changed --------------

/// Two data sets with a model each; the first model is evaluated and tabulated. A change to
/// one branch must leave the other's keys alone.
const TWO_BRANCHES: &str = r#"
name: branches
defaults: { seed: 0 }
stages:
  spirals:
    op: data.toy2d
    params: { kind: spirals, n_train: 200, n_test: 200 }
  moons:
    op: data.toy2d
    params: { kind: moons, n_train: 200, n_test: 200 }
  flow_a:
    op: train.flow
    needs: [spirals]
    matrix: { steps: [1, 2] }
    params: { hidden: 8, epochs: 5, lr: 0.01 }
  flow_b:
    op: train.flow
    needs: [moons]
    matrix: { steps: [1, 2] }
    params: { hidden: 8, epochs: 5, lr: 0.01 }
  eval_a:
    op: eval.flow
    needs: [flow_a]
  table:
    op: report.table
    needs: [eval_a]
    params: { rows: [steps], metric: test_acc }
"#;

#[test]
fn keys_do_not_depend_on_the_working_dir_or_the_cache_dir() {
    let (one, two) = (Sandbox::new(), Sandbox::new());
    one.write("p.yaml", TWO_BRANCHES);
    two.write("p.yaml", TWO_BRANCHES);
    let a = one.keys("p.yaml", &[]);
    let b = two.keys("p.yaml", &[]);
    // A different cache dir name, too, and an absolute path to the file.
    let file = two.path().join("p.yaml");
    let c = Run::from(
        Command::new(BIN)
            .args([
                "plan",
                file.to_str().unwrap(),
                "--format",
                "json",
                "--cache",
            ])
            .arg(two.path().join("elsewhere"))
            .current_dir(one.path())
            .env_remove("ABLATE_CACHE")
            .output()
            .unwrap(),
    )
    .code(EXIT_OK);
    let c: BTreeMap<String, String> = plan_entries(&c.stdout)
        .into_iter()
        .map(|(id, v)| (id, v["key"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(a.len(), 2 + 2 + 2 + 2 + 1);
    assert_eq!(a, b);
    assert_eq!(a, c);
    let distinct: BTreeSet<&String> = a.values().collect();
    assert_eq!(distinct.len(), a.len(), "every instance has its own key");
    assert!(
        a.values()
            .all(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
    );
}

/// A pipeline in its own project directory, run from anywhere (#21): `run`, `deps` and its
/// script are found beside the file, whatever the current directory, and its keys do not
/// depend on where it is run from.
#[test]
fn a_pipeline_run_from_another_directory_read_its_paths_from_there() {
    let sb = Sandbox::new();
    let project = sb.path().join("work/project");
    std::fs::create_dir_all(project.join("lib")).unwrap();
    std::fs::write(
        project.join("probe.sh"),
        ". lib/common.sh\necho \"{\\\"x\\\": $X}\" > \"$1/metrics.json\"\n",
    )
    .unwrap();
    std::fs::write(project.join("lib/common.sh"), "X=2.5\n").unwrap();
    std::fs::write(
        project.join("p.yaml"),
        r#"
name: project
stages:
  probe:
    op: cmd
    params: { run: "sh probe.sh {out}", deps: [probe.sh, "lib/*.sh"] }
"#,
    )
    .unwrap();
    // From the sandbox, two levels above the project: the script, its library and the deps
    // are found beside the pipeline file.
    let run = sb
        .ablate(&["run", "work/project/p.yaml", "--json"])
        .code(EXIT_OK);
    let finished = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "finished")
        .expect("a finished event");
    assert_eq!(finished["metrics"]["x"], 2.5, "{}", run.stderr);
    let keys = sb.keys("work/project/p.yaml", &[]);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(sb.entry(&keys["probe"]).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let deps: Vec<&str> = manifest["input"]["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        deps,
        ["lib/common.sh", "probe.sh"],
        "paths as written, not absolute"
    );
    assert_eq!(
        sb.plan("work/project/p.yaml", &[])["probe"]["status"],
        "cached"
    );

    // From a third directory, by an absolute path: the same key, cached.
    let third = sb.path().join("elsewhere/deeper");
    std::fs::create_dir_all(&third).unwrap();
    let file = project.join("p.yaml");
    let plan = sb
        .command(&["plan", file.to_str().unwrap(), "--format", "json"])
        .current_dir(&third)
        .output()
        .map(Run::from)
        .unwrap()
        .code(EXIT_OK);
    let there = plan_entries(&plan.stdout);
    assert_eq!(there["probe"]["key"], keys["probe"].as_str());
    assert_eq!(there["probe"]["status"], "cached");
    // And from the project itself, as before #21.
    let here = sb
        .command(&["plan", "p.yaml", "--format", "json"])
        .current_dir(&project)
        .output()
        .map(Run::from)
        .unwrap()
        .code(EXIT_OK);
    assert_eq!(
        plan_entries(&here.stdout)["probe"]["key"],
        keys["probe"].as_str()
    );
}

/// `workdir:` names the directory a file's paths resolve against, relative to the file: a
/// pipeline moved into `pipelines/` keeps its keys with `workdir: ..`; one that names a
/// missing directory is an input error pointing at it.
#[test]
fn workdir_moves_where_paths_resolve_and_keeps_the_keys() {
    let sb = Sandbox::new();
    let yaml = |workdir: &str| {
        format!(
            "name: moved\n{workdir}stages:\n  probe:\n    op: cmd\n    params: {{ run: \"sh src/probe.sh {{out}}\", deps: [src/probe.sh] }}\n"
        )
    };
    std::fs::create_dir_all(sb.path().join("src")).unwrap();
    std::fs::create_dir_all(sb.path().join("pipelines")).unwrap();
    sb.write("src/probe.sh", "echo '{\"x\": 1}' > \"$1/metrics.json\"\n");
    sb.write("p.yaml", &yaml(""));
    sb.write("pipelines/p.yaml", &yaml("workdir: ..\n"));
    let at_root = sb.keys("p.yaml", &[]);
    let moved = sb.keys("pipelines/p.yaml", &[]);
    assert_eq!(at_root, moved);
    sb.ablate(&["run", "pipelines/p.yaml"]).code(EXIT_OK);
    assert_eq!(sb.plan("p.yaml", &[])["probe"]["status"], "cached");

    // Without `workdir`, the path is looked for beside the file, and the error says where.
    sb.write("pipelines/q.yaml", &yaml(""));
    let missing = sb
        .ablate(&["plan", "pipelines/q.yaml"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &missing.stderr,
        &[
            "stage `probe` depends on `src/probe.sh`, which cannot be read",
            "paths in `deps` are relative to",
            "pipelines",
            "or its `workdir:`",
        ],
    );

    sb.write("pipelines/e.yaml", &yaml("workdir: \"\"\n"));
    let empty = sb
        .ablate(&["plan", "pipelines/e.yaml"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &empty.stderr,
        &["`workdir` is empty", "pipelines/e.yaml:2:10"],
    );

    sb.write("pipelines/r.yaml", &yaml("workdir: ../nowhere\n"));
    let bad = sb
        .ablate(&["plan", "pipelines/r.yaml"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &bad.stderr,
        &[
            "`workdir: ../nowhere`",
            "not a usable directory",
            "pipelines/r.yaml:2:10",
        ],
    );
}

#[test]
fn a_set_changes_exactly_the_keys_of_its_stage_and_downstream() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TWO_BRANCHES);
    let before = sb.keys("p.yaml", &[]);
    let after = sb.keys("p.yaml", &["--set", "flow_a.params.lr=0.02"]);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let changed: Vec<&str> = before
        .iter()
        .filter(|(id, k)| after[*id] != **k)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        changed,
        [
            "eval_a[steps=1]",
            "eval_a[steps=2]",
            "flow_a[steps=1]",
            "flow_a[steps=2]",
            "table"
        ]
    );
    // Setting a param to the value it already has changes nothing.
    assert_eq!(
        sb.keys("p.yaml", &["--set", "flow_a.params.lr=0.01"]),
        before
    );
    // A default written out explicitly is the same param set, hence the same key.
    assert_eq!(
        sb.keys("p.yaml", &["--set", "flow_b.params.batch=128"]),
        before
    );
}

#[test]
fn runs_with_one_or_two_jobs_give_identical_keys_and_metrics() {
    let (one, two) = (Sandbox::new(), Sandbox::new());
    one.write("p.yaml", TINY_FLOW);
    two.write("p.yaml", TINY_FLOW);
    let r1 = one
        .ablate(&["run", "p.yaml", "--json", "--jobs", "1"])
        .code(EXIT_OK);
    // Two threads per training, too: threads stay out of the key, so they must not change
    // the results either.
    let r2 = two
        .ablate(&[
            "run",
            "p.yaml",
            "--json",
            "--jobs",
            "2",
            "--set",
            "flow.resources.cpus=2",
        ])
        .code(EXIT_OK);
    let keys = |r: &Run| -> BTreeMap<String, String> {
        r.events()
            .iter()
            .filter(|e| e["event"] == "finished")
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_owned(),
                    e["key"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(keys(&r1).len(), TINY_FLOW_INSTANCES);
    assert_eq!(keys(&r1), keys(&r2));
    let m1 = metric_values(&read_parquet(&one.results().join("tiny/runs.parquet")));
    let m2 = metric_values(&read_parquet(&two.results().join("tiny/runs.parquet")));
    assert!(m1.len() > 20, "{m1:?}");
    assert_eq!(m1, m2, "train.flow and eval.flow are deterministic");
}

// --- 3. End to end: computed once, then cached -----------------------------------------------

#[test]
fn a_second_run_is_entirely_cached() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    let n = TINY_FLOW_INSTANCES as u64;
    let first = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&first, n, 0, 0, 0);
    assert_eq!(first.ids("started").len(), TINY_FLOW_INSTANCES);
    assert_eq!(first.ids("finished"), first.ids("started"));
    assert_eq!(first.events()[0]["event"], "plan");
    assert_eq!(first.events()[0]["to_run"], TINY_FLOW_INSTANCES);

    let second = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&second, 0, n, 0, 0);
    assert_eq!(second.ids("started"), Vec::<String>::new());
    assert_eq!(second.ids("cached"), first.ids("finished"));

    // The summary is the last line, its keys in this order.
    for (run, ran, cached) in [(&first, n, 0), (&second, 0, n)] {
        let last = run.stdout.lines().last().unwrap();
        let prefix = format!(
            r#"{{"event":"summary","ran":{ran},"cached":{cached},"failed":0,"skipped":0,"seconds":"#
        );
        let seconds = last
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| panic!("unexpected summary line: {last}"));
        let seconds: f64 = seconds.parse().expect("seconds is a number");
        assert!((0.0..600.0).contains(&seconds));
    }

    let dir = sb.results().join("tiny");
    for file in ["runs.parquet", "acc.parquet", "acc.md"] {
        assert!(dir.join(file).is_file(), "missing results/tiny/{file}");
    }
    let md = std::fs::read_to_string(dir.join("acc.md")).unwrap();
    assert_contains_all(&md, &["shared", "unshared", "| weights"]);
    let acc = read_parquet(&dir.join("acc.parquet"));
    assert_eq!(acc.num_rows(), 2, "one row per weights value");
    // Without --json, progress goes to stderr and nothing to stdout.
    let plain = sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    assert_eq!(plain.stdout, "");
    assert_contains_all(&plain.stderr, &["0 ran, 10 cached, 0 failed, 0 skipped"]);
}

// --- 4. --set: only the affected instances run again, and plan says why -----------------------

#[test]
fn a_set_reruns_only_the_affected_instances_and_plan_says_why() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);

    let set = ["--set", "flow.params.lr=0.02"];
    let plan = sb.plan("p.yaml", &set);
    for (id, entry) in &plan {
        let (status, reason) = (&entry["status"], &entry["reason"]);
        match stage_of(id) {
            "points" => assert_eq!(status, "cached", "{id}"),
            "flow" => {
                assert_eq!(
                    (status.as_str(), reason.as_str()),
                    (Some("run"), Some("params changed")),
                    "{id}"
                );
                assert_eq!(entry["detail"], "params changed (lr: 0.01 → 0.02)", "{id}");
            }
            "eval" | "acc" => {
                assert_eq!(
                    (status.as_str(), reason.as_str()),
                    (Some("run"), Some("input changed")),
                    "{id}"
                );
            }
            other => panic!("unexpected stage {other}"),
        }
    }
    let text = sb
        .ablate(&["plan", "p.yaml", "--set", "flow.params.lr=0.02"])
        .code(EXIT_OK);
    assert_contains_all(
        &text.stdout,
        &[
            "pipeline `tiny`: 10 instances, 1 cached, 9 to run",
            "run: params changed (lr: 0.01 → 0.02)",
        ],
    );

    let rerun = sb
        .ablate(&["run", "p.yaml", "--json", "--set", "flow.params.lr=0.02"])
        .code(EXIT_OK);
    assert_eq!(
        per_stage(&rerun.ids("started")),
        counts(&[("flow", 4), ("eval", 4), ("acc", 1)])
    );
    assert_eq!(rerun.ids("cached"), ["points"]);
    assert_summary(&rerun, 9, 1, 0, 0);
    // And back: everything is in the cache already.
    let back = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&back, 0, 10, 0, 0);
}

// --- 5. A failed instance fails only its dependants ---------------------------------------------

const FAILING: &str = r#"
name: failing
stages:
  probe:
    op: cmd
    matrix: { i: [1, 2, 3] }
    params: { run: "echo boom-{param.i} >&2; test {param.i} -ne 2" }
  after:
    op: cmd
    needs: [probe]
    params: { run: "echo ok > {out}/ok.txt" }
"#;

#[test]
fn a_failed_instance_skips_its_dependants_and_keeps_its_siblings() {
    let sb = Sandbox::new();
    sb.write("p.yaml", FAILING);
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--jobs", "2"])
        .code(EXIT_FAILURE);
    assert_summary(&run, 4, 0, 1, 1);
    assert_eq!(run.ids("failed"), ["probe[i=2]"]);
    assert_eq!(run.ids("skipped"), ["after[i=2]"]);
    assert_eq!(
        run.ids("finished"),
        ["after[i=1]", "after[i=3]", "probe[i=1]", "probe[i=3]"]
    );
    let events = run.events();
    let failed = events.iter().find(|e| e["event"] == "failed").unwrap();
    assert_eq!(failed["will_retry"], false);
    let error = failed["error"].as_str().unwrap();
    assert_contains_all(error, &["exit status 1", "boom-2"]);
    let log = PathBuf::from(
        failed["log"]
            .as_str()
            .expect("the failed event names its log"),
    );
    let stderr = std::fs::read_to_string(log.join("stderr.log"))
        .unwrap_or_else(|e| panic!("no stderr.log in {}: {e}", log.display()));
    assert_eq!(stderr, "boom-2\n");
    let skipped = events.iter().find(|e| e["event"] == "skipped").unwrap();
    assert_eq!(skipped["because"], "probe[i=2]");

    // The siblings' entries are complete: verify passes and the next run takes them.
    let verify = sb.ablate(&["cache", "verify"]).code(EXIT_OK);
    assert_contains_all(&verify.stdout, &["4 entries verified, 0 invalid"]);
    let again = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_FAILURE);
    assert_eq!(
        again.ids("cached"),
        ["after[i=1]", "after[i=3]", "probe[i=1]", "probe[i=3]"]
    );
    assert_eq!(again.ids("started"), ["probe[i=2]"]);
    assert_summary(&again, 0, 4, 1, 1);
    // The plain rendering names the failure and its logs on stderr.
    let plain = sb.ablate(&["run", "p.yaml"]).code(EXIT_FAILURE);
    assert_contains_all(
        &plain.stderr,
        &[
            "FAILED",
            "probe[i=2]",
            "logs: ",
            "0 ran, 4 cached, 1 failed, 1 skipped",
        ],
    );
}

// --- 6. A corrupted entry is found, recomputed, and removable -----------------------------------

/// Flips one byte of `path` in place (same size) and moves its mtime, as a disk or a careless
/// edit would.
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(mtime + Duration::from_secs(2)).unwrap();
}

#[test]
fn a_corrupted_entry_is_reported_and_recomputed() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let keys = sb.keys("p.yaml", &[]);
    let data = sb.entry(&keys["points"]).join("train.parquet");
    assert!(data.is_file(), "{}", data.display());
    corrupt(&data);

    let verify = sb.ablate(&["cache", "verify"]).code(EXIT_FAILURE);
    let short = &keys["points"][..8];
    assert_contains_all(
        &verify.stdout,
        &[
            &format!("invalid {short}"),
            "train.parquet",
            "10 entries verified, 1 invalid",
        ],
    );
    let plan = sb.plan("p.yaml", &[]);
    for (id, entry) in &plan {
        if id == "points" {
            assert_eq!(entry["status"], "run");
            assert_eq!(entry["reason"], "invalid");
        } else {
            assert_eq!(entry["status"], "cached", "{id}");
        }
    }

    let rerun = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_eq!(rerun.ids("started"), ["points"]);
    assert_summary(&rerun, 1, 9, 0, 0);
    sb.ablate(&["cache", "verify"]).code(EXIT_OK);
    assert!(
        sb.plan("p.yaml", &[])
            .values()
            .all(|e| e["status"] == "cached"),
        "everything is cached after the rerun"
    );
}

#[test]
fn cache_verify_fix_removes_the_invalid_entry() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let keys = sb.keys("p.yaml", &[]);
    let victim = &keys["flow[weights=unshared,steps=2]"];
    corrupt(&sb.entry(victim).join("model.safetensors"));

    let fix = sb.ablate(&["cache", "verify", "--fix"]).code(EXIT_OK);
    assert_contains_all(
        &fix.stdout,
        &[
            &format!("removed {}", &victim[..8]),
            "10 entries verified, 1 invalid (removed)",
        ],
    );
    assert!(!sb.entry(victim).exists(), "the invalid entry is gone");
    for (id, key) in &keys {
        if key != victim {
            assert!(
                sb.entry(key).join("manifest.json").is_file(),
                "{id} was kept"
            );
        }
    }
    let verify = sb.ablate(&["cache", "verify"]).code(EXIT_OK);
    assert_contains_all(&verify.stdout, &["9 entries verified, 0 invalid"]);
    // The removed instance is new again to the plan; its dependants are still cached.
    let plan = sb.plan("p.yaml", &[]);
    let to_run: Vec<&String> = plan
        .iter()
        .filter(|(_, e)| e["status"] == "run")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(to_run, ["flow[weights=unshared,steps=2]"]);
}

// --- 7. runs.parquet reads back with its documented schema -------------------------------------

#[test]
fn runs_parquet_has_the_fixed_columns_then_the_labels() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let runs = sb.results().join("tiny/runs.parquet");
    let t = read_parquet(&runs);

    let names: Vec<&str> = t.column_names().collect();
    assert_eq!(names[..17], ablate_results::RUN_COLUMNS);
    assert_eq!(
        names[..17],
        [
            "pipeline",
            "stage",
            "instance",
            "label",
            "op",
            "status",
            "current",
            "metric",
            "value",
            "step",
            "final",
            "seed",
            "device",
            "wall_time_s",
            "started_at",
            "git_rev",
            "ablate_version"
        ]
    );
    let labels = &names[17..];
    let mut sorted = labels.to_vec();
    sorted.sort();
    assert_eq!(labels, sorted, "label columns follow, sorted by name");
    assert!(
        labels.contains(&"weights") && labels.contains(&"steps"),
        "{labels:?}"
    );

    let weights = strs(column(&t, "weights"));
    let steps = ints(column(&t, "steps"));
    let stage = strs(column(&t, "stage"));
    let metric = strs(column(&t, "metric"));
    let step = ints(column(&t, "step"));
    let value = floats(column(&t, "value"));
    let seed = ints(column(&t, "seed"));
    let lr = floats(column(&t, "lr"));
    let instance = strs(column(&t, "instance"));
    let pipeline = strs(column(&t, "pipeline"));
    let op = strs(column(&t, "op"));
    let _ = floats(column(&t, "wall_time_s"));
    let _ = ints(column(&t, "started_at"));

    let mut loss_steps: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut test_acc = 0;
    for row in 0..t.num_rows() {
        assert_eq!(pipeline[row].as_deref(), Some("tiny"));
        assert_eq!(instance[row].as_ref().unwrap().len(), 64);
        let stage = stage[row].as_deref().unwrap();
        if stage == "flow" || stage == "eval" {
            // Matrix values: the model's own, and inherited by its evaluation.
            let w = weights[row].as_deref().unwrap();
            assert!(w == "shared" || w == "unshared", "{w}");
            assert!(matches!(steps[row], Some(1 | 2)), "{:?}", steps[row]);
        }
        if stage == "flow" || stage == "eval" {
            // From `defaults:`; an evaluation's rows carry the params of the model it scored
            // (regression: they had a null seed and no training params).
            assert_eq!(seed[row], Some(0), "{stage}");
            assert_eq!(lr[row], Some(0.01), "{stage}");
        }
        match metric[row].as_deref().unwrap() {
            "loss" => {
                assert_eq!(stage, "flow");
                assert_eq!(op[row].as_deref(), Some("train.flow"));
                loss_steps
                    .entry((
                        weights[row].clone().unwrap(),
                        steps[row].unwrap().to_string(),
                    ))
                    .or_default()
                    .push(step[row].expect("a per-epoch loss has its step"));
                assert!(value[row].unwrap().is_finite());
            }
            "test_acc" => {
                assert_eq!(stage, "eval");
                assert_eq!(step[row], None);
                let acc = value[row].unwrap();
                assert!((0.0..=1.0).contains(&acc), "test_acc {acc}");
                test_acc += 1;
            }
            _ => {}
        }
    }
    assert_eq!(test_acc, 4, "one test_acc per trained model");
    assert_eq!(loss_steps.len(), 4);
    for (model, mut s) in loss_steps {
        s.sort();
        assert_eq!(s.len(), 5, "one loss per epoch for {model:?}: {s:?}");
        s.dedup();
        assert_eq!(s.len(), 5, "distinct steps for {model:?}");
    }

    // A second, cached run does not duplicate rows.
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_eq!(read_parquet(&runs).num_rows(), t.num_rows());
}

#[test]
fn table_prints_a_parquet_file() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let out = sb
        .ablate(&["table", "results/tiny/runs.parquet"])
        .code(EXIT_OK);
    let header = out.stdout.lines().next().unwrap();
    for col in ablate_results::RUN_COLUMNS
        .iter()
        .chain(&["weights", "steps"])
    {
        assert!(
            header.split_whitespace().any(|h| h == *col),
            "no column `{col}` in the header: {header}"
        );
    }
    assert!(out.stdout.contains("test_acc"));
    let md = sb
        .ablate(&["table", "results/tiny/acc.parquet", "--markdown"])
        .code(EXIT_OK);
    assert!(md.stdout.starts_with("| weights"), "{}", md.stdout);
    let missing = sb
        .ablate(&["table", "results/tiny/nope.parquet"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &missing.stderr,
        &["`results/tiny/nope.parquet` does not exist"],
    );
}

/// `ablate table` printed `started_at` as microseconds and every row and column (#21): now
/// dates, `--where` (ANDed), `--columns` and `--head`.
#[test]
fn table_prints_dates_and_takes_where_columns_and_head() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let runs = "results/tiny/runs.parquet";
    let all = sb.ablate(&["table", runs]).code(EXIT_OK);
    let header: Vec<&str> = all
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let started = header.iter().position(|h| *h == "started_at").unwrap();
    let first_row = all.stdout.lines().nth(2).unwrap();
    assert!(
        first_row.contains(" UTC"),
        "started_at is a date: {first_row}"
    );
    assert!(started > 0);
    // For programs: one object per row, values as stored (a timestamp in microseconds).
    let json = sb
        .ablate(&[
            "table",
            runs,
            "--json",
            "--where",
            "metric=test_acc",
            "--head",
            "1",
        ])
        .code(EXIT_OK);
    let row: Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert!(
        row["started_at"].as_i64().unwrap() > 1_700_000_000_000_000,
        "{row}"
    );
    assert_eq!(row["metric"], "test_acc");
    assert!(row["value"].is_f64());

    let picked = sb
        .ablate(&[
            "table",
            runs,
            "--where",
            "metric=test_acc",
            "--where",
            "weights=shared",
            "--columns",
            "label,metric,value",
        ])
        .code(EXIT_OK);
    let lines: Vec<&str> = picked.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["label", "metric", "value"]
    );
    assert_eq!(lines.len(), 2 + 2, "two shared evals:\n{}", picked.stdout);
    assert!(
        lines[2..]
            .iter()
            .all(|l| l.contains("weights=shared") && l.contains("test_acc"))
    );

    // Numbers compare as numbers; `!=` keeps the others; `--head` the first rows.
    let steps = sb
        .ablate(&[
            "table",
            runs,
            "--where",
            "metric=test_acc",
            "--where",
            "steps=2.0",
        ])
        .code(EXIT_OK);
    assert_eq!(steps.stdout.lines().count(), 2 + 2, "{}", steps.stdout);
    let not = sb
        .ablate(&[
            "table",
            runs,
            "--where",
            "metric=test_acc",
            "--where",
            "steps!=2",
        ])
        .code(EXIT_OK);
    assert_eq!(not.stdout.lines().count(), 2 + 2, "{}", not.stdout);
    let head = sb
        .ablate(&["table", runs, "--head", "3", "--markdown"])
        .code(EXIT_OK);
    assert_eq!(head.stdout.lines().count(), 2 + 3, "{}", head.stdout);
    assert_contains_all(&head.stderr, &["(showing 3 of "]);

    let typo = sb
        .ablate(&["table", runs, "--where", "metrc=test_acc"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &typo.stderr,
        &["the table has no column `metrc`", "did you mean `metric`?"],
    );
    let bad = sb
        .ablate(&["table", runs, "--columns", "label,valeu"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&bad.stderr, &["no column `valeu`", "did you mean `value`?"]);
}

/// `ablate status` was documented for Slurm only, and showed a local run's instances as "not
/// submitted" (#21): a local run's running instance, failed one (with its log) and the ones
/// that did not start are told apart.
#[test]
fn status_shows_what_a_local_run_is_doing() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: local
stages:
  slow:
    op: cmd
    params: { run: "touch started; while [ ! -e go ]; do sleep 0.05; done; echo '{\"x\": 1}' > {out}/metrics.json" }
  broken:
    op: cmd
    params: { run: "echo 'boom-local' >&2; exit 3" }
  after:
    op: cmd
    needs: [broken]
    params: { run: "true" }
"#,
    );
    let help = sb.ablate(&["status", "--help"]).code(EXIT_OK);
    assert_contains_all(&help.stdout, &["local runs and Slurm runs alike"]);

    let mut run = Running::spawn(sb.command(&["run", "p.yaml", "--json", "--jobs", "2"]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sb.path().join("started").exists() {
        assert!(Instant::now() < deadline, "the slow stage never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    run.wait_for("failed", 1, Duration::from_secs(60));
    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_contains_all(
        &status.stdout,
        &[
            "not started",
            "running (writing its entry):",
            "  slow  ablate pid ",
        ],
    );
    assert_eq!(
        status_row(&status.stdout, "slow"),
        [0, 0, 1, 0, 0, 0],
        "{}",
        status.stdout
    );
    assert_eq!(
        status_row(&status.stdout, "broken"),
        [0, 0, 0, 0, 1, 0],
        "{}",
        status.stdout
    );
    assert_eq!(
        status_row(&status.stdout, "after"),
        [0, 0, 0, 0, 0, 1],
        "{}",
        status.stdout
    );
    let log = std::fs::read_dir(sb.cache().join("v1/failed"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("stderr.log");
    assert_contains_all(
        &status.stdout,
        &[
            "failed:\n  broken  its last attempt failed",
            &format!("log: {}", log.display()),
        ],
    );
    assert_contains_all(&std::fs::read_to_string(&log).unwrap(), &["boom-local"]);

    sb.write("go", "");
    let (code, _, _) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(EXIT_FAILURE));
    let after = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_eq!(
        status_row(&after.stdout, "slow"),
        [1, 0, 0, 0, 0, 0],
        "{}",
        after.stdout
    );
    assert!(!after.stdout.contains("running ("), "{}", after.stdout);
}

/// A script for `status`: it notes its process group (the pid ablate notes as the program's),
/// waits for a `go` file when `epochs` > 1 (the variant below), and logs a NaN loss for
/// `lr` > 1 (kept as a diverged result).
const WATCHED_SCRIPT: &str = r#"
import json, os, time
p = json.load(open(os.environ["ABLATE_PARAMS"]))
tag = "pgid-%s-%s" % (p["lr"], p["epochs"])
open(tag + ".tmp", "w").write(str(os.getpgid(0)))
os.rename(tag + ".tmp", tag)
while p["epochs"] > 1 and not os.path.exists("go"):
    time.sleep(0.05)
with open(os.environ["ABLATE_METRICS"], "a") as log:
    log.write(json.dumps({"step": 0, "loss": float("nan") if p["lr"] > 1 else 0.5}) + "\n")
"#;

/// QA of #21 (§9, §12, §11): `status` counted diverged results as done, showed nothing running
/// while a `--set` variant of the pipeline ran from another shell, and named ablate's pid for a
/// running instance, never the program's (what a user would kill); an ambiguous `show` did not
/// say that `--pipeline` picks the instance.
#[test]
fn status_counts_diverged_names_the_program_pid_and_shows_a_running_variant() {
    let sb = Sandbox::new();
    sb.write("train.py", WATCHED_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: watched
stages:
  train:
    op: cmd
    diverged: record
    matrix: { lr: [1, 2] }
    params: { run: python3 train.py, epochs: 1 }
"#,
    );
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_contains_all(&status.stdout, &["diverged"]);
    assert_eq!(
        status_row(&status.stdout, "train"),
        [1, 1, 0, 0, 0, 0],
        "{}",
        status.stdout
    );

    // The variant, from another shell; both its instances wait for `go`.
    let variant = ["--set", "train.params.epochs=2"];
    let mut args = vec!["run", "p.yaml", "--json"];
    args.extend(variant);
    let running = Running::spawn(sb.command(&args));
    let ablate_pid = running.child.id();
    let programs: Vec<libc::pid_t> = ["1", "2"]
        .iter()
        .map(|lr| read_pid(&sb.path().join(format!("pgid-{lr}-2"))))
        .collect();
    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_eq!(
        status_row(&status.stdout, "train"),
        [1, 1, 0, 0, 0, 0],
        "{}",
        status.stdout
    );
    assert_contains_all(
        &status.stdout,
        &[
            "2 instances of pipeline `watched` not in this plan are running (a `--set`/`--matrix` \
             variant",
            &format!(
                "  train[lr=1]  ablate pid {ablate_pid}, program pid {} on ",
                programs[0]
            ),
            &format!(
                "  train[lr=2]  ablate pid {ablate_pid}, program pid {} on ",
                programs[1]
            ),
        ],
    );
    // Asked with the variant's flags, the same instances are this plan's running ones.
    let mut args = vec!["status", "p.yaml"];
    args.extend(variant);
    let theirs = sb.ablate(&args).code(EXIT_OK);
    assert_eq!(
        status_row(&theirs.stdout, "train"),
        [0, 0, 2, 0, 0, 0],
        "{}",
        theirs.stdout
    );
    assert_contains_all(
        &theirs.stdout,
        &[
            "running (writing its entry):",
            &format!(
                "  train[lr=1]  ablate pid {ablate_pid}, program pid {} on ",
                programs[0]
            ),
        ],
    );
    assert!(
        !theirs.stdout.contains("not in this plan"),
        "{}",
        theirs.stdout
    );

    sb.write("go", "");
    let (code, _, stderr) = running.finish(Duration::from_secs(60));
    assert_eq!(code, Some(EXIT_OK), "{stderr}");
    let after = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert!(
        !after.stdout.contains("not in this plan"),
        "{}",
        after.stdout
    );

    // Two entries are `train[lr=1]` now: the list marks the one the last run (the variant)
    // used, and the hint names `--pipeline`, which picks the plan's.
    let keys = sb.keys("p.yaml", &[]);
    let both = sb.ablate(&["show", "train[lr=1]"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(&both.stderr, &["matches 2 entries", "`--pipeline FILE`"]);
    let marked: Vec<&str> = both
        .stderr
        .lines()
        .filter(|l| l.ends_with("(its pipeline's last run)"))
        .collect();
    assert_eq!(marked.len(), 1, "{}", both.stderr);
    assert!(
        !marked[0].contains(&keys["train[lr=1]"][..8]),
        "{}",
        both.stderr
    );
    let picked = sb
        .ablate(&["show", "train[lr=1]", "--pipeline", "p.yaml"])
        .code(EXIT_OK);
    assert_contains_all(
        &picked.stdout,
        &[&format!("key        {}", keys["train[lr=1]"])],
    );
}

// --- 8. Ctrl-C ----------------------------------------------------------------------------------

/// A running `ablate` whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ablate");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` events of `kind` have been printed.
    fn wait_for(&mut self, kind: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let pattern = format!(r#""event":"{kind}""#);
        while self.seen.iter().filter(|l| l.contains(&pattern)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no {n} `{kind}` events within {timeout:?}; saw {:?}",
                        self.seen
                    );
                }
            }
        }
    }

    fn interrupt(&self) {
        // SAFETY: sending a signal to our own child has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(rc, 0, "kill(SIGINT) failed");
    }

    /// Waits for the exit (killing it after `timeout`), then returns the exit code, all the
    /// stdout lines, and stderr.
    fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("ablate did not exit within {timeout:?} of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.seen.extend(self.lines.iter());
        let mut stderr = String::new();
        use std::io::Read as _;
        let _ = self
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        (status.code(), self.seen, stderr)
    }
}

/// No directory left in `<cache>/v1/tmp/`.
#[track_caller]
fn assert_no_temp_entries(sb: &Sandbox) {
    let tmp: Vec<_> = std::fs::read_dir(sb.cache().join("v1/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(tmp.is_empty(), "left in v1/tmp: {tmp:?}");
}

#[test]
fn ctrl_c_stops_the_run_and_keeps_nothing_half_written() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: sleepy
stages:
  nap:
    op: echo
    matrix: { value: [1, 2, 3, 4] }
    params: { sleep_ms: 30000 }
"#,
    );
    let keys = sb.keys("p.yaml", &[]);
    let mut running = Running::spawn(sb.command(&["run", "p.yaml", "--jobs", "2", "--json"]));
    running.wait_for("started", 2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    running.interrupt();
    // Uncancelled, the two running instances would take another ~30 s.
    let (code, lines, stderr) = running.finish(Duration::from_secs(10));
    let stopped_in = t0.elapsed();
    assert_eq!(code, Some(EXIT_INTERRUPTED), "stderr:\n{stderr}");
    assert!(stopped_in < Duration::from_secs(10), "{stopped_in:?}");
    let events = events_of(&lines.join("\n"));
    assert_eq!(ids_of(&events, "started").len(), 2, "{lines:?}");
    assert!(ids_of(&events, "finished").is_empty(), "{lines:?}");
    let n = events.len();
    assert!(n >= 2, "{lines:?}");
    assert_eq!(events[n - 2]["event"], "interrupted");
    assert_eq!(events[n - 2]["not_run"], 4);
    assert_eq!(events[n - 1]["event"], "summary");
    assert_eq!(events[n - 1]["ran"], 0);
    assert_eq!(events[n - 1]["skipped"], 4);

    assert_no_temp_entries(&sb);
    for (id, key) in &keys {
        assert!(!sb.entry(key).exists(), "{id} has a cache entry");
    }
    assert!(
        sb.plan("p.yaml", &[])
            .values()
            .all(|e| e["status"] == "run")
    );
}

/// The pid a `cmd` wrote, polled for.
fn read_pid(path: &Path) -> libc::pid_t {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alive and not a zombie waiting for a reaper.
fn process_alive(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

#[test]
fn one_ctrl_c_stops_a_cmd_and_its_children() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: sleeper
stages:
  wait:
    op: cmd
    params: { run: "sleep 30 & echo $! > sleeper.pid; wait" }
"#,
    );
    let key = sb.keys("p.yaml", &[])["wait"].clone();
    let mut running = Running::spawn(sb.command(&["run", "p.yaml", "--json"]));
    running.wait_for("started", 1, Duration::from_secs(20));
    let sleeper = read_pid(&sb.path().join("sleeper.pid"));
    assert!(process_alive(sleeper));
    running.interrupt();
    let (code, lines, stderr) = running.finish(Duration::from_secs(10));
    assert_eq!(code, Some(EXIT_INTERRUPTED), "stderr:\n{stderr}");
    assert!(
        lines.iter().any(|l| l.contains(r#""event":"interrupted""#)),
        "{lines:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(sleeper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive = process_alive(sleeper);
    if alive {
        // SAFETY: as above; do not leave it behind.
        unsafe { libc::kill(sleeper, libc::SIGKILL) };
    }
    assert!(!alive, "`sleep 30` outlived the run");
    assert_no_temp_entries(&sb);
    assert!(!sb.entry(&key).exists());
}

#[test]
fn a_second_ctrl_c_kills_a_command_that_ignores_the_first() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: stubborn
stages:
  wait:
    op: cmd
    params: { run: "trap '' TERM; sleep 30 & echo $! > sleeper.pid; wait" }
"#,
    );
    let key = sb.keys("p.yaml", &[])["wait"].clone();
    let mut running = Running::spawn(sb.command(&["run", "p.yaml", "--json"]));
    running.wait_for("started", 1, Duration::from_secs(20));
    let sleeper = read_pid(&sb.path().join("sleeper.pid"));
    running.interrupt();
    // The first Ctrl-C asks politely (SIGTERM to the group), which this command ignores.
    std::thread::sleep(Duration::from_millis(700));
    let still_running = running.child.try_wait().unwrap().is_none();
    let sleeper_alive = process_alive(sleeper);
    running.interrupt();
    let (code, lines, stderr) = running.finish(Duration::from_secs(10));
    let sleeper_alive_after = process_alive(sleeper);
    if sleeper_alive_after {
        // SAFETY: as above; do not leave it behind.
        unsafe { libc::kill(sleeper, libc::SIGKILL) };
    }
    assert!(still_running, "one Ctrl-C must not kill: stderr:\n{stderr}");
    assert!(sleeper_alive, "the command ignores SIGTERM");
    assert_eq!(code, Some(EXIT_INTERRUPTED), "stderr:\n{stderr}");
    assert!(
        !sleeper_alive_after,
        "the second Ctrl-C kills the command's group"
    );
    assert!(
        !lines.iter().any(|l| l.contains(r#""event":"finished""#)),
        "{lines:?}"
    );
    assert!(
        !sb.entry(&key).exists(),
        "a killed instance leaves no entry"
    );
    // Anything a killed writer left in tmp/ is a leftover for gc, never an entry.
    sb.ablate(&["cache", "gc"]).code(EXIT_OK);
    assert_no_temp_entries(&sb);
}

// --- 9. ops, missing files, --force ---------------------------------------------------------------

#[test]
fn ops_lists_every_op_with_its_params_and_defaults() {
    let sb = Sandbox::new();
    let out = sb.ablate(&["ops"]).code(EXIT_OK);
    for op in [
        "data.toy2d",
        "data.digits",
        "train.flow",
        "eval.flow",
        "eval.metric",
        "report.table",
        "report.claims",
        "report.plot",
        "cmd",
        "echo",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{op} (version "))),
            "`{op}` is not listed:\n{}",
            out.stdout
        );
    }
    // Each param on a line of its own with its type and default (or `required`).
    let line_of = |param: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{param} ")))
            .unwrap_or_else(|| panic!("no line for `{param}`:\n{}", out.stdout))
            .to_owned()
    };
    assert_eq!(
        line_of("n_train").trim(),
        "n_train  an integer ≥ 1 (default 1000)"
    );
    assert_eq!(
        line_of("kind").trim(),
        "kind     one of `spirals`, `moons`, `circles`, `checkerboard` (default \"spirals\")"
    );
    assert!(line_of("sleep_ms").contains("(default 0)"));
    assert!(line_of("run").contains("(required)"));
    assert!(
        line_of("weights").contains("default \"shared\""),
        "{}",
        line_of("weights")
    );

    let one = sb.ablate(&["ops", "echo"]).code(EXIT_OK);
    assert!(one.stdout.starts_with("echo (version "), "{}", one.stdout);
    assert!(!one.stdout.contains("train.flow"));
}

#[test]
fn ops_with_an_unknown_name_is_an_input_error() {
    let sb = Sandbox::new();
    let nope = sb.ablate(&["ops", "nope"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(&nope.stderr, &["error: there is no op `nope`"]);
    let typo = sb.ablate(&["ops", "train.flwo"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &typo.stderr,
        &[
            "error: there is no op `train.flwo`",
            "hint: did you mean `train.flow`?",
        ],
    );
}

#[test]
fn running_a_missing_file_names_it() {
    let sb = Sandbox::new();
    let run = sb.ablate(&["run", "missing.yaml"]).code(EXIT_INVALID_INPUT);
    assert!(run.stderr.contains("missing.yaml"), "{}", run.stderr);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    let plan = sb
        .ablate(&["plan", "missing.yaml"])
        .code(EXIT_INVALID_INPUT);
    assert!(plan.stderr.contains("missing.yaml"), "{}", plan.stderr);
    assert!(
        !sb.results().exists(),
        "nothing written for a missing pipeline"
    );
}

#[test]
fn force_reruns_the_stage_and_its_downstream() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let plan = sb.plan("p.yaml", &["--force", "eval"]);
    for (id, e) in &plan {
        let expected = match stage_of(id) {
            "eval" | "acc" => "run",
            _ => "cached",
        };
        assert_eq!(e["status"], expected, "{id}");
    }
    let started_at = |key: &str| -> u64 {
        let m = std::fs::read_to_string(sb.entry(key).join("manifest.json")).unwrap();
        serde_json::from_str::<Value>(&m).unwrap()["started_at_us"]
            .as_u64()
            .unwrap()
    };
    let keys = sb.keys("p.yaml", &[]);
    let before: BTreeMap<&String, u64> = keys.iter().map(|(id, k)| (id, started_at(k))).collect();
    let forced = sb
        .ablate(&["run", "p.yaml", "--json", "--force", "eval"])
        .code(EXIT_OK);
    assert_eq!(
        per_stage(&forced.ids("started")),
        counts(&[("eval", 4), ("acc", 1)])
    );
    assert_summary(&forced, 5, 5, 0, 0);
    // The recomputed entries replace the cached ones; the others are untouched.
    for (id, k) in &keys {
        let rerun = matches!(stage_of(id), "eval" | "acc");
        assert_eq!(started_at(k) != before[id], rerun, "{id}");
    }
}

#[test]
fn force_of_an_unknown_stage_is_an_input_error() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    let run = sb
        .ablate(&["run", "p.yaml", "--force", "evl"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &[
            "the pipeline has no stage `evl`",
            "hint: did you mean `eval`?",
        ],
    );
    let nosuch = sb
        .ablate(&["run", "p.yaml", "--force", "nosuch"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&nosuch.stderr, &["no stage `nosuch`"]);
    assert!(!sb.results().exists(), "nothing ran");
}

#[test]
fn a_cuda_stage_ran_on_the_cpu_of_a_cpu_only_build() {
    // Regression: `device: cuda` validated, then the op silently trained on the CPU.
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        "name: gpu\nstages:\n  e: { op: echo, device: cuda }\n",
    );
    let run = sb.ablate(&["run", "p.yaml"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &["stage `e` asks for device `cuda`", "CPU only", "hint:"],
    );
    assert!(!sb.results().exists(), "nothing ran");
    // `--device cpu` runs it here, under the same key (the device is never in a key), and the
    // manifest records where it ran.
    assert_eq!(
        sb.keys("p.yaml", &[]),
        sb.keys("p.yaml", &["--device", "cpu"])
    );
    sb.ablate(&["run", "p.yaml", "--device", "cpu"])
        .code(EXIT_OK);
    let key = &sb.keys("p.yaml", &[])["e"];
    let m = std::fs::read_to_string(sb.entry(key).join("manifest.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&m).unwrap()["device"], "cpu");
    // `tag` keeps a run apart (e.g. a GPU rerun beside the CPU entry): a new key, and the op
    // runs as before.
    let tagged = sb.keys("p.yaml", &["--set", "e.params.tag=gpu"]);
    assert_ne!(tagged["e"], *key);
    sb.ablate(&[
        "run",
        "p.yaml",
        "--device",
        "cpu",
        "--set",
        "e.params.tag=gpu",
    ])
    .code(EXIT_OK);
    assert!(sb.entry(&tagged["e"]).join("manifest.json").exists());
    // `--device cuda:1` moves only the stages whose op can use a GPU (the trainer and the
    // evaluation, not the data or the report).
    sb.write("f.yaml", TINY_FLOW);
    let plan = sb.plan("f.yaml", &["--device", "cuda:1"]);
    for (id, e) in &plan {
        let want = if ["flow", "eval"].contains(&stage_of(id)) {
            "cuda:1"
        } else {
            "cpu"
        };
        assert_eq!(e["device"], want, "{id}");
    }
    let run = sb
        .ablate(&["run", "f.yaml", "--device", "cuda:1"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &["stage `flow` asks for device `cuda:1`", "just build-cuda"],
    );
    let bad = sb
        .ablate(&["run", "p.yaml", "--device", "gpu"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&bad.stderr, &["cuda:N"]);
}

#[test]
fn a_gpu_share_is_taken_only_on_a_gpu() {
    // One pipeline for both: the trainer's and the evaluation's `gpus: 0.25` pack four runs on a
    // GPU under `--device cuda`, and ask for nothing on the CPU.
    let sb = Sandbox::new();
    let shared = TINY_FLOW
        .replace(
            "    params: { hidden: 8",
            "    resources: { gpus: 0.25 }\n    params: { hidden: 8",
        )
        .replace(
            "    op: eval.flow\n",
            "    op: eval.flow\n    resources: { gpus: 0.25 }\n",
        );
    assert_eq!(shared.matches("gpus: 0.25").count(), 2);
    sb.write("f.yaml", &shared);
    sb.ablate(&["run", "f.yaml"]).code(EXIT_OK);
    // An op that does not compute on a device keeps its share: a program it starts may use a
    // GPU, and this machine offers none.
    sb.write(
        "c.yaml",
        "name: c\nstages:\n  c: { op: cmd, params: { run: 'true' }, resources: { gpus: 0.5 } }\n",
    );
    let run = sb.ablate(&["run", "c.yaml"]).code(1);
    assert_contains_all(&run.stderr, &["needs 0.5 GPU(s)", "offers none"]);
    // On Slurm a share is whole GPUs, and a CUDA stage that declares none asks for one
    // (`plan` shows the sbatch lines of what is not cached, without a cluster).
    let fresh = Sandbox::new();
    let gpus_of = |yaml: &str, device: &str| -> Vec<String> {
        fresh.write("s.yaml", yaml);
        let plan = fresh
            .ablate(&["plan", "s.yaml", "--executor", "slurm", "--device", device])
            .code(EXIT_OK);
        plan.stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("sbatch"))
            .map(|l| {
                let stage = l.split("--job-name=ablate.tiny.").nth(1).unwrap();
                let stage = stage.split_whitespace().next().unwrap();
                let gpus = l
                    .split("--gpus-per-task=")
                    .nth(1)
                    .map_or("0", |g| g.split_whitespace().next().unwrap());
                format!("{stage}:{gpus}")
            })
            .collect()
    };
    let want = ["points:0", "flow:1", "eval:1", "acc:0"];
    assert_eq!(gpus_of(TINY_FLOW, "cuda"), want);
    assert_eq!(gpus_of(&shared, "cuda"), want);
    assert_eq!(
        gpus_of(&shared, "cpu"),
        ["points:0", "flow:0", "eval:0", "acc:0"]
    );
}

// --- More of the cache and the runner: deps, gc, retries, concurrent runs, the run table -------

#[test]
fn cmd_deps_are_hashed_by_content_and_plan_names_them() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: deps
stages:
  probe:
    op: cmd
    params: { run: "sh probe.sh {out}", deps: [probe.sh] }
"#,
    );
    let probe = |x: f64| {
        sb.write(
            "probe.sh",
            &format!("echo '{{\"x\": {x}}}' > \"$1/metrics.json\"\n"),
        )
    };
    probe(1.5);
    let first = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let finished = first
        .events()
        .into_iter()
        .find(|e| e["event"] == "finished")
        .unwrap();
    assert_eq!(
        finished["metrics"]["x"], 1.5,
        "metrics.json becomes the metrics"
    );
    let key = sb.keys("p.yaml", &[]);

    // Rewriting the same bytes (a new mtime) changes nothing.
    probe(1.5);
    assert_eq!(sb.keys("p.yaml", &[]), key);
    assert_eq!(sb.plan("p.yaml", &[])["probe"]["status"], "cached");

    probe(2.5);
    let plan = sb.plan("p.yaml", &[]);
    assert_ne!(plan["probe"]["key"], key["probe"].as_str());
    assert_eq!(plan["probe"]["reason"], "deps changed");
    assert_eq!(plan["probe"]["detail"], "deps changed (probe.sh)");
    let second = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let finished = second
        .events()
        .into_iter()
        .find(|e| e["event"] == "finished")
        .unwrap();
    assert_eq!(finished["metrics"]["x"], 2.5);

    std::fs::remove_file(sb.path().join("probe.sh")).unwrap();
    let missing = sb.ablate(&["run", "p.yaml"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &missing.stderr,
        &[
            "stage `probe` depends on `probe.sh`, which cannot be read",
            "--> p.yaml:6:48",
        ],
    );
}

#[test]
fn cache_gc_keeps_only_what_the_named_pipelines_use() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    sb.ablate(&["run", "p.yaml", "--json", "--set", "flow.params.lr=0.02"])
        .code(EXIT_OK);
    let ls = sb.ablate(&["cache", "ls"]).code(EXIT_OK);
    assert!(ls.stdout.contains("\n19 entries, "), "{}", ls.stdout);

    let dry = sb
        .ablate(&["cache", "gc", "p.yaml", "--dry-run"])
        .code(EXIT_OK);
    assert!(
        dry.stdout
            .starts_with("would remove 9 entries and 0 leftovers"),
        "{}",
        dry.stdout
    );
    assert!(
        sb.ablate(&["cache", "ls"])
            .stdout
            .contains("\n19 entries, ")
    );

    let gc = sb.ablate(&["cache", "gc", "p.yaml"]).code(EXIT_OK);
    assert!(
        gc.stdout.starts_with("removed 9 entries and 0 leftovers"),
        "{}",
        gc.stdout
    );
    assert!(
        sb.plan("p.yaml", &[])
            .values()
            .all(|e| e["status"] == "cached")
    );
    let changed = sb.plan("p.yaml", &["--set", "flow.params.lr=0.02"]);
    assert_eq!(
        changed.values().filter(|e| e["status"] == "cached").count(),
        1
    );
}

/// From a result row to its files (#21): `ablate show` by a key prefix, by a label (in any
/// order), or by a pipeline's instance not yet computed; ambiguous and unknown targets are input
/// errors, the first listing the candidates.
#[test]
fn show_prints_an_entry_with_its_params_inputs_metrics_and_files() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let keys = sb.keys("p.yaml", &[]);
    let key = &keys["flow[weights=shared,steps=2]"];
    let entry = sb.entry(key).canonicalize().unwrap();

    let by_prefix = sb.ablate(&["show", &key[..10]]).code(EXIT_OK);
    let text = &by_prefix.stdout;
    assert_contains_all(
        text,
        &[
            &format!("key        {key}"),
            "instance   flow[weights=shared,steps=2]  (pipeline `tiny`)",
            "op         train.flow (version",
            "status     done: in the cache",
            " UTC\n",
            "device     cpu",
            "params\n",
            "  lr ",
            "  weights ",
            "inputs\n",
            &format!("  {}  points\n", &keys["points"][..8]),
            "metrics\n",
            "  train_acc ",
            "5 steps, last",
            "files\n",
            &format!("{}", entry.join("manifest.json").display()),
            &format!("{}", entry.join("model.safetensors").display()),
            " KiB  ",
        ],
    );

    // The label as `plan` prints it, or in another order: the same entry.
    for target in [
        "flow[weights=shared,steps=2]",
        "flow[steps=2,weights=shared]",
    ] {
        let again = sb.ablate(&["show", target]).code(EXIT_OK);
        assert_eq!(again.stdout, by_prefix.stdout, "{target}");
    }

    let json: Value =
        serde_json::from_str(&sb.ablate(&["show", key, "--json"]).code(EXIT_OK).stdout).unwrap();
    assert_eq!(json["key"], key.as_str());
    assert_eq!(json["params"]["lr"], 0.01);
    assert_eq!(json["inputs"][0]["instance"], "points");
    assert_eq!(json["in_cache"], true);
    // A word for programs, the sentence beside it; the directory named as `cache ls --json`
    // names it (QA of #21).
    assert_eq!(json["status"], "done");
    assert!(
        json["status_detail"]
            .as_str()
            .unwrap()
            .starts_with("done: in the cache")
    );
    assert_eq!(Path::new(json["path"].as_str().unwrap()), entry);
    assert!(json.get("dir").is_none());
    assert!(json["metrics"]["train_acc"].is_number());
    assert_eq!(json["stepped_metrics"]["loss"]["steps"], 5);
    let files: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.iter().all(|f| Path::new(f).is_file()), "{files:?}");

    // A stage with several instances, or a partial label: the candidates, exit 2.
    let many = sb.ablate(&["show", "flow"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &many.stderr,
        &[
            "`flow` matches 4 entries",
            "flow[weights=unshared,steps=1]",
            &keys["flow[weights=unshared,steps=1]"][..8],
            "`--pipeline FILE`",
        ],
    );
    let seeds = sb
        .ablate(&["show", "flow[steps=2]"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&seeds.stderr, &["matches 2 entries"]);
    let unknown = sb
        .ablate(&["show", "flwo[steps=2]"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &unknown.stderr,
        &["nothing in the cache", "matches `flwo[steps=2]`"],
    );

    // With the pipeline: an instance its plan has and the cache does not.
    let planned = sb
        .ablate(&[
            "show",
            "flow[weights=shared,steps=2]",
            "--pipeline",
            "p.yaml",
            "--set",
            "flow.params.lr=0.02",
        ])
        .code(EXIT_OK);
    assert_contains_all(&planned.stdout, &["status     not in the cache"]);
    assert!(
        planned
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("lr ") && l.ends_with(" 0.02")),
        "{}",
        planned.stdout
    );
    assert!(!planned.stdout.contains(key.as_str()), "{}", planned.stdout);
}

/// `cache ls` printed raw lines: now a header, dates, the params that tell entries apart,
/// filters and `--json` (#21).
#[test]
fn cache_ls_has_a_header_dates_params_filters_and_json() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let ls = sb.ablate(&["cache", "ls"]).code(EXIT_OK);
    let mut lines = ls.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "KEY", "OP", "INSTANCE", "PIPELINE", "STATUS", "SIZE", "STARTED", "WALL", "PARAMS"
        ]
    );
    let flow_line = ls
        .stdout
        .lines()
        .find(|l| l.contains("flow[weights=unshared,steps=2]"))
        .unwrap();
    assert_contains_all(
        flow_line,
        &[
            "train.flow",
            "tiny",
            "  done  ",
            " UTC",
            "steps=2",
            "weights=unshared",
        ],
    );
    assert!(ls.stdout.contains("\n10 entries, "), "{}", ls.stdout);

    let stage = sb.ablate(&["cache", "ls", "--stage", "flow"]).code(EXIT_OK);
    assert!(stage.stdout.contains("\n4 entries, "), "{}", stage.stdout);
    let op = sb
        .ablate(&["cache", "ls", "--op", "eval.flow"])
        .code(EXIT_OK);
    assert!(op.stdout.contains("\n4 entries, "), "{}", op.stdout);
    let other = sb
        .ablate(&["cache", "ls", "--pipeline", "other"])
        .code(EXIT_OK);
    assert!(other.stdout.contains("\n0 entries, "), "{}", other.stdout);
    let picked = sb
        .ablate(&[
            "cache",
            "ls",
            "--where",
            "steps=2",
            "--where",
            "weights=shared",
        ])
        .code(EXIT_OK);
    assert!(picked.stdout.contains("\n1 entries, "), "{}", picked.stdout);
    assert!(picked.stdout.contains("flow[weights=shared,steps=2]"));

    let keys = sb.keys("p.yaml", &[]);
    let json: Value = serde_json::from_str(
        &sb.ablate(&["cache", "ls", "--json", "--stage", "flow"])
            .code(EXIT_OK)
            .stdout,
    )
    .unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 4);
    for item in items {
        assert_eq!(item["op"], "train.flow");
        assert_eq!(item["params"]["lr"], 0.01);
        assert!(item["started_at"].as_str().unwrap().ends_with(" UTC"));
        assert!(Path::new(item["path"].as_str().unwrap()).is_dir());
        assert_eq!(item["status"], "done");
        assert_eq!(
            keys[item["instance"].as_str().unwrap()],
            item["key"].as_str().unwrap()
        );
    }

    let typo = sb
        .ablate(&["cache", "ls", "--where", "stpes=2"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &typo.stderr,
        &["no entry has a param `stpes`", "did you mean `steps`?"],
    );
}

/// `gc --dry-run` said only how many: now each path it would remove, and why (#21).
#[test]
fn cache_gc_dry_run_lists_each_path_and_why() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    sb.ablate(&["run", "p.yaml", "--json", "--set", "flow.params.lr=0.02"])
        .code(EXIT_OK);
    let old = sb.keys("p.yaml", &[]);
    // A failed attempt's files and the temp directory of a writer that is gone.
    let failed = sb.cache().join("v1/failed").join(&old["acc"]);
    std::fs::create_dir_all(&failed).unwrap();
    std::fs::write(failed.join("stderr.log"), "boom\n").unwrap();
    let tmp = sb
        .cache()
        .join("v1/tmp")
        .join(format!("{}.999999999.0", old["acc"]));
    std::fs::create_dir_all(&tmp).unwrap();

    let dry = sb
        .ablate(&["cache", "gc", "--dry-run", "p.yaml"])
        .code(EXIT_OK);
    // The run with `--set` made 9 entries the file's plan does not use.
    let unused = sb.keys("p.yaml", &["--set", "flow.params.lr=0.02"]);
    assert!(
        dry.stdout
            .starts_with("would remove 9 entries and 2 leftovers"),
        "{}",
        dry.stdout
    );
    assert_contains_all(
        &dry.stdout,
        &[
            &format!("{}  (", sb.entry(&unused["acc"]).display()),
            "): an entry the named pipelines do not use",
            &format!("{}  (", failed.display()),
            "): the files of a failed attempt",
            &format!("{}  (", tmp.display()),
            "): left by a writer that is gone",
        ],
    );
    let unused_pipeline = r#"
name: other
stages:
  points:
    op: data.toy2d
    params: { kind: moons, n_train: 200, n_test: 200, noise: 0.1, seed: 0 }
"#;
    sb.write("q.yaml", unused_pipeline);
    let keep_q = sb
        .ablate(&["cache", "gc", "--dry-run", "q.yaml"])
        .code(EXIT_OK);
    assert!(
        keep_q
            .stdout
            .starts_with("would remove 18 entries and 2 leftovers"),
        "{}",
        keep_q.stdout
    );
    assert_contains_all(
        &keep_q.stdout,
        &[
            &format!("{}  (", sb.entry(&old["acc"]).display()),
            "): an entry the named pipelines do not use",
        ],
    );
    assert!(failed.is_dir() && tmp.is_dir() && sb.entry(&old["acc"]).is_dir());
}

#[test]
fn a_failed_attempt_is_retried() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: flaky
stages:
  flaky:
    op: cmd
    retries: 2
    # Fails the first time only.
    params: { run: "n=$(cat tries 2>/dev/null || echo 0); echo $((n+1)) > tries; test $n -ge 1" }
"#,
    );
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let kinds: Vec<(String, Value)> = run
        .events()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["attempt"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("plan".to_owned(), Value::Null),
            ("started".to_owned(), 1.into()),
            ("failed".to_owned(), 1.into()),
            ("started".to_owned(), 2.into()),
            ("finished".to_owned(), Value::Null),
            ("summary".to_owned(), Value::Null),
        ]
    );
    assert_eq!(run.events()[2]["will_retry"], true);
    assert_summary(&run, 1, 0, 0, 0);
    assert_eq!(
        std::fs::read_to_string(sb.path().join("tries")).unwrap(),
        "2\n"
    );
    // Regression: the failed attempt's logs stayed under v1/failed/ after the retry succeeded.
    let failed = sb.cache().join("v1/failed");
    assert_eq!(
        std::fs::read_dir(&failed).map(|d| d.count()).unwrap_or(0),
        0
    );
}

#[test]
fn two_runs_at_once_compute_an_instance_once() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slow
stages:
  slow:
    op: echo
    params: { value: 7, sleep_ms: 3000 }
"#,
    );
    let mut first = Running::spawn(sb.command(&["run", "p.yaml", "--json"]));
    first.wait_for("started", 1, Duration::from_secs(20));
    // `started` comes just before the first run takes the key's lock; give it that moment.
    std::thread::sleep(Duration::from_millis(300));
    // The second run finds no entry, waits for the first one's lock, then takes its result.
    let second = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let (code, lines, stderr) = first.finish(Duration::from_secs(20));
    assert_eq!(code, Some(EXIT_OK), "{stderr}");
    let first = events_of(&lines.join("\n"));
    assert_eq!(first.last().unwrap()["ran"], 1);
    assert_summary(&second, 0, 1, 0, 0);
    let finished = second
        .events()
        .into_iter()
        .find(|e| e["event"] == "finished")
        .unwrap();
    assert_eq!(finished["by_other"], true);
    assert_eq!(finished["metrics"]["value"], 7.0);
}

#[test]
fn runs_parquet_appends_new_instances_and_replaces_recomputed_ones() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    let runs = sb.results().join("tiny/runs.parquet");
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let first = metric_values(&read_parquet(&runs));
    sb.ablate(&["run", "p.yaml", "--json", "--force", "flow"])
        .code(EXIT_OK);
    assert_eq!(
        metric_values(&read_parquet(&runs)),
        first,
        "recomputed rows replace theirs (same values: the op is deterministic)"
    );
    sb.ablate(&["run", "p.yaml", "--json", "--set", "flow.params.lr=0.02"])
        .code(EXIT_OK);
    let t = read_parquet(&runs);
    let instances: BTreeSet<&str> = strs(column(&t, "instance"))
        .iter()
        .map(|i| i.as_deref().unwrap())
        .collect();
    // Rows of both learning rates: 4 models + 4 evaluations each (data and report have none).
    assert_eq!(instances.len(), 16);
    let lr: BTreeSet<String> = floats(column(&t, "lr"))
        .iter()
        .flatten()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(lr, BTreeSet::from(["0.01".to_owned(), "0.02".to_owned()]));
}

#[test]
fn a_matrix_override_replaces_an_axis() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    let plan = sb.plan("p.yaml", &["--matrix", "flow.steps=1,3,5"]);
    let flows: Vec<&String> = plan.keys().filter(|id| stage_of(id) == "flow").collect();
    assert_eq!(
        flows,
        [
            "flow[weights=shared,steps=1]",
            "flow[weights=shared,steps=3]",
            "flow[weights=shared,steps=5]",
            "flow[weights=unshared,steps=1]",
            "flow[weights=unshared,steps=3]",
            "flow[weights=unshared,steps=5]",
        ]
    );
    assert_eq!(plan.len(), 1 + 6 + 6 + 1);
    let bad = sb
        .ablate(&["plan", "p.yaml", "--matrix", "flow.stesp=1,2"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&bad.stderr, &["unknown parameter `stesp`"]);
    let jobs = sb
        .ablate(&["run", "p.yaml", "--jobs", "0"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&jobs.stderr, &["error: `--jobs` must be at least 1"]);
}

/// `--matrix train.hiden=16,32` on a `cmd` stage silently added an axis: twice the instances,
/// each given a bogus `--hiden` flag (#21). A name the stage does not have is an error naming
/// the argument, with a did-you-mean; a leading `+` adds one on purpose.
#[test]
fn a_misspelt_matrix_or_set_override_is_an_error_not_a_new_axis() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: typo
vars: { width: 8 }
stages:
  train:
    op: cmd
    params: { run: "true", hidden: "${vars.width}" }
    matrix: { lr: [0.1, 0.2], seed: [0, 1, 2] }
"#,
    );
    let bad = sb
        .ablate(&["plan", "p.yaml", "--matrix", "train.hiden=16,32"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &bad.stderr,
        &[
            "in `--matrix train.hiden=16,32`: stage `train` has no parameter or matrix axis `hiden`",
            "hint: did you mean `hidden`? (to add a new axis, write `--matrix +train.hiden=…`)",
        ],
    );
    let bad = sb
        .ablate(&["run", "p.yaml", "--set", "train.params.hiden=16"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &bad.stderr,
        &[
            "in `--set train.params.hiden=16`: stage `train` has no parameter `hiden`",
            "did you mean `hidden`? (to add a new parameter, write `--set +train.params.hiden=…`)",
        ],
    );
    let bad = sb
        .ablate(&["plan", "p.yaml", "--set", "vars.widht=16"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &bad.stderr,
        &[
            "in `--set vars.widht=16`: the pipeline has no variable `widht`",
            "did you mean `width`? (to add a new variable, write `--set +vars.widht=…`)",
        ],
    );
    let far = sb
        .ablate(&["plan", "p.yaml", "--matrix", "train.batch=1,2"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &far.stderr,
        &["the parameters of stage `train` are `lr`, `seed`, `run`, `hidden`"],
    );

    // What the overrides are for still works: replacing an axis, sweeping a parameter, and,
    // with a `+`, a new axis, parameter or variable.
    assert_eq!(sb.plan("p.yaml", &["--matrix", "train.lr=1,2,3"]).len(), 9);
    let swept = sb.plan("p.yaml", &["--matrix", "train.hidden=16,32"]);
    assert_eq!(swept.len(), 12);
    assert!(
        swept.contains_key("train[lr=0.1,seed=0,hidden=16]"),
        "{swept:?}"
    );
    assert_eq!(
        sb.plan("p.yaml", &["--matrix", "+train.width=1,2"]).len(),
        12
    );
    assert_eq!(
        sb.plan("p.yaml", &["--set", "train.params.hidden=4"]).len(),
        6
    );
    assert_eq!(
        sb.plan("p.yaml", &["--set", "train.params.seed=4"]).len(),
        2
    );
    let added = sb.keys("p.yaml", &["--set", "+train.params.width=3"]);
    assert_ne!(
        added,
        sb.keys("p.yaml", &[]),
        "the new parameter is in the keys"
    );
    sb.plan(
        "p.yaml",
        &["--set", "+vars.depth=3", "--set", "vars.width=4"],
    );
    let misplaced = sb
        .ablate(&["plan", "p.yaml", "--set", "+train.retries=1"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &misplaced.stderr,
        &["a leading `+` adds a parameter or a variable"],
    );
}

/// A no-op rerun of 10,000 instances said "in 1ms" after half a second of loading, planning
/// and checking the cache (#21): the summary's time is the command's. Here planning waits a
/// second for a `deps` file that is a pipe, and the run itself has nothing to do.
#[test]
fn the_summary_time_counts_loading_planning_and_the_cache_check() {
    let sb = Sandbox::new();
    let dep = sb.write("dep.txt", "abc");
    sb.write(
        "p.yaml",
        "name: timed\nstages:\n  c: { op: cmd, params: { run: \"true\", deps: [dep.txt] } }\n",
    );
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    std::fs::remove_file(&dep).unwrap();
    let made = Command::new("mkfifo").arg(&dep).status().unwrap();
    assert!(made.success());
    let writer = {
        let dep = dep.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            // The same bytes: the key, hence the cache hit, stays.
            std::fs::write(dep, "abc").unwrap();
        })
    };
    let run = sb.ablate(&["run", "p.yaml", "--json"]);
    if !writer.is_finished() {
        // ablate never read the pipe: open it here, so the writer is not left waiting.
        let _ = std::fs::File::open(&dep);
    }
    writer.join().unwrap();
    let run = run.code(EXIT_OK);
    let summary: Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in:\n{}", run.stdout));
    assert_eq!(
        (summary["ran"].as_u64(), summary["cached"].as_u64()),
        (Some(0), Some(1))
    );
    let seconds = summary["seconds"].as_f64().unwrap();
    assert!(
        seconds >= 0.9,
        "the summary says {seconds} s for a command that waited 1 s"
    );
}

/// Every file and directory under `root`, with what a write would change: size, modification
/// time and inode (a file replaced by rename gets a new one; a directory's mtime moves when a
/// temp file is made or removed in it).
fn tree_state(root: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let rel = path.strip_prefix(root).unwrap().to_owned();
            out.insert(rel, (meta.len(), meta.modified().unwrap(), meta.ino()));
        }
    }
    out
}

/// A no-op rerun rewrote what it had nothing to add to: the published report files were
/// copied again on every run, and the run index was parsed whole (#21, item 15). A rerun with
/// nothing to do writes nothing, in the cache or the results.
#[test]
fn a_no_op_rerun_writes_nothing_in_the_cache_or_the_results() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: noop
stages:
  runs:
    op: echo
    matrix: { value: [1, 2, 3] }
  table:
    op: report.table
    needs: [runs]
    params: { rows: [value], metric: value }
"#,
    );
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    // The first rerun records the entries it verified (v1/verified/).
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let (cache, results) = (tree_state(&sb.cache()), tree_state(&sb.results()));
    assert!(
        results.contains_key(Path::new("noop/table.md")),
        "{results:?}"
    );
    // Unchanged times would not show a rewrite within the file system's clock tick.
    std::thread::sleep(Duration::from_millis(20));
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&run, 0, 4, 0, 0);
    assert_eq!(tree_state(&sb.cache()), cache, "the cache changed");
    assert_eq!(tree_state(&sb.results()), results, "the results changed");
}

#[test]
fn plan_renders_dot_and_mermaid() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    let keys = sb.keys("p.yaml", &[]);
    let dot = sb
        .ablate(&["plan", "p.yaml", "--format", "dot"])
        .code(EXIT_OK);
    assert!(
        dot.stdout.starts_with("digraph \"tiny\" {"),
        "{}",
        dot.stdout
    );
    // One node per instance, one edge per input: 4 + 4 + 4 (the report gathers the evals).
    assert_eq!(dot.stdout.matches(" [label=").count(), keys.len());
    assert_eq!(dot.stdout.matches(" -> ").count(), 12);
    let mermaid = sb
        .ablate(&["plan", "p.yaml", "--format", "mermaid"])
        .code(EXIT_OK);
    assert!(mermaid.stdout.starts_with("flowchart LR\n"));
    assert_eq!(mermaid.stdout.matches(" --> ").count(), 12);
    for key in keys.values() {
        assert!(dot.stdout.contains(&key[..8]) && mermaid.stdout.contains(&key[..8]));
    }
}

// --- 10. The repository's own pipelines plan ------------------------------------------------------

/// Every pipeline of the repository (`pipelines/`, `examples/`) plans, from the repository root
/// as `just run` does and from any other directory with the same keys (#21).
#[test]
fn every_pipeline_in_the_repository_plans() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let yaml = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect()
    };
    let mut files = yaml(repo.join("pipelines"));
    for example in std::fs::read_dir(repo.join("examples")).unwrap() {
        files.extend(yaml(example.unwrap().path()));
    }
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("quickstart.yaml"))
            && files.iter().any(|f| f.ends_with("mnist-style/sweep.yaml")),
        "{files:?}"
    );
    let cache = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let digits = write_synthetic_digits(cache.path(), 40);
    for file in files {
        // The digits pipeline hashes its data file, which a checkout does not have.
        let data_args: Vec<String> = if file.to_string_lossy().contains("digits") {
            vec!["--set".into(), format!("vars.digits={}", digits.display())]
        } else {
            Vec::new()
        };
        let plan_from = |dir: &Path, file: &Path| {
            let out = Command::new(BIN)
                .arg("plan")
                .arg(file)
                .args(&data_args)
                .args(["--format", "json", "--cache"])
                .arg(cache.path())
                .current_dir(dir)
                .env_remove("ABLATE_CACHE")
                .env_remove("ABLATE_LOG")
                .output()
                .unwrap();
            let run = Run::from(out);
            assert_eq!(
                run.code,
                Some(EXIT_OK),
                "{} does not plan from {}:\n{}",
                file.display(),
                dir.display(),
                run.stderr
            );
            plan_entries(&run.stdout)
                .into_iter()
                .map(|(id, v)| (id, v["key"].as_str().unwrap().to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        // From the repository root, as `just run` does, by a relative path.
        let relative = file.strip_prefix(&repo).unwrap();
        let here = plan_from(&repo, relative);
        assert!(!here.is_empty(), "{} has no instances", file.display());
        let there = plan_from(elsewhere.path(), &file.canonicalize().unwrap());
        assert_eq!(
            here,
            there,
            "{} plans other keys from elsewhere",
            file.display()
        );
    }
}

/// `just run` said nothing for minutes while cargo built the release binary (#21). The recipes'
/// build step (`scripts/build-ablate.sh`) says it is building and lets cargo show its progress
/// when a source is newer than the binary, and prints nothing, nor starts cargo, when the
/// binary is up to date. Run on a copy of the script in a tree of its own, with a stand-in
/// `cargo` that records its calls.
#[test]
fn the_first_build_was_silent_for_minutes() {
    use std::os::unix::fs::PermissionsExt as _;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    for dir in ["scripts", "crates/a/src", "crates/a/tests", "bin"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(
        repo.join("scripts/build-ablate.sh"),
        root.join("scripts/build-ablate.sh"),
    )
    .unwrap();
    for (file, text) in [
        ("Cargo.toml", "[workspace]\n"),
        ("Cargo.lock", "version = 4\n"),
        ("crates/a/Cargo.toml", "[package]\n"),
        ("crates/a/src/lib.rs", "\n"),
    ] {
        std::fs::write(root.join(file), text).unwrap();
    }
    let cargo = root.join("bin/cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho \"cargo $*\" >> \"$(dirname \"$0\")/../cargo.log\"\n\
         echo '   Compiling ablate-cli v0.1.0' >&2\n\
         mkdir -p target/release && printf '#!/bin/sh\\n' > target/release/ablate\n\
         chmod +x target/release/ablate\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let build = || {
        Run::from(
            Command::new(root.join("scripts/build-ablate.sh"))
                .current_dir(root.join("crates"))
                .env("PATH", &path)
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .unwrap(),
        )
        .code(EXIT_OK)
    };
    let calls = || {
        std::fs::read_to_string(root.join("cargo.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let later = |file: &str| {
        std::fs::File::options()
            .write(true)
            .open(root.join(file))
            .unwrap()
            .set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
            .unwrap();
    };

    let first = build();
    assert_contains_all(
        &first.stderr,
        &[
            "building ablate (release; a few minutes the first time)",
            "Compiling ablate-cli",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("cargo.log")).unwrap(),
        "cargo build --release -p ablate-cli\n"
    );

    let fresh = build();
    assert_eq!((fresh.stdout.as_str(), fresh.stderr.as_str()), ("", ""));
    assert_eq!(
        calls(),
        1,
        "cargo is not started when the binary is up to date"
    );

    // A test is not part of the binary: nothing to build.
    std::fs::write(root.join("crates/a/tests/t.rs"), "\n").unwrap();
    later("crates/a/tests/t.rs");
    assert_eq!(build().stderr, "");
    assert_eq!(calls(), 1);

    later("crates/a/src/lib.rs");
    assert_contains_all(&build().stderr, &["building ablate"]);
    assert_eq!(calls(), 2);
}

/// A CSV in the layout of scikit-learn's `digits.csv.gz`: 64 pixels in 0..=16, then the label;
/// `rows` rows cycling through the ten classes.
fn write_synthetic_digits(dir: &Path, rows: usize) -> PathBuf {
    let mut text = String::new();
    for r in 0..rows {
        let label = r % 10;
        let pixels: Vec<String> = (0..64)
            .map(|j| ((j * 7 + r * 3 + label * 5) % 17).to_string())
            .collect();
        text.push_str(&format!("{},{label}\n", pixels.join(",")));
    }
    let path = dir.join("digits.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// The paper pipelines run end to end at a tiny size (a few points, a couple of epochs, one
/// seed): every stage succeeds, and every report publishes its table, claims or picture.
#[test]
fn paper_pipelines_run_end_to_end_at_a_tiny_size() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sb = Sandbox::new();
    let digits = write_synthetic_digits(sb.path(), 60);
    let tiny = ["vars.n=60", "vars.epochs=2", "vars.seeds=[0]"];
    let cases: [(&str, Vec<String>, &[&str]); 4] = [
        (
            "ablation",
            vec![
                "vars.steps=[1,8]".into(),
                "vars.lm_steps=3".into(),
                "vars.lm_docs=40".into(),
                "vars.lm_n=3".into(),
            ],
            &[
                "sharing_by_steps.md",
                "params_by_steps.md",
                "refinement.md",
                "accuracy_plot.png",
                "accuracy_plot.svg",
                "invertibility.md",
                "sharing_claims.md",
                "diffeomorphism_claims.md",
                "convergence.md",
                "metric_plot.png",
                "hauser_claims.md",
                "ul2_table.md",
                "ul2_claims.md",
            ],
        ),
        (
            "rousseau2020",
            // Its pictures show seed 1.
            vec!["vars.steps=[8]".into(), "vars.seeds=[1]".into()],
            &[
                "accuracy.md",
                "parameters.md",
                "refinement.md",
                "integrator_table.md",
                "invertibility.md",
                "accuracy_plot.png",
                "refinement_plot.png",
                "flow_plot.png",
                "grid_plot.png",
                "sharing_claims.md",
                "diffeomorphism_claims.md",
            ],
        ),
        (
            "hauser2017",
            vec!["vars.steps=[16]".into()],
            &[
                "accuracy.md",
                "convergence.md",
                "conditioning.md",
                "convergence_plot.png",
                "step_plot.png",
                "metric_plot.png",
                "flow_plot.png",
                "claims.md",
            ],
        ),
        (
            "rousseau2020_digits",
            vec![
                "vars.steps=[1,2]".into(),
                format!("vars.digits={}", digits.display()),
            ],
            &[
                "accuracy.md",
                "parameters.md",
                "accuracy_plot.png",
                "claims.md",
            ],
        ),
    ];
    for (name, extra, published) in cases {
        let file = repo.join("pipelines").join(format!("{name}.yaml"));
        let mut args = vec![
            "run".to_owned(),
            file.display().to_string(),
            "--json".into(),
        ];
        // A case's own `--set`s replace the tiny defaults of the same variable.
        let own: Vec<String> = extra
            .iter()
            .filter_map(|e| e.split('=').next().map(str::to_owned))
            .collect();
        let sets = tiny
            .iter()
            .filter(|s| name != "rousseau2020_digits" || !s.starts_with("vars.n="))
            .filter(|s| !own.iter().any(|v| s.split('=').next() == Some(v.as_str())))
            .map(|s| s.to_string())
            .chain(extra);
        for set in sets {
            args.push("--set".into());
            args.push(set);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = sb.ablate(&args);
        assert_eq!(
            run.code,
            Some(EXIT_OK),
            "{name} failed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        let dir = sb.results().join(name);
        for file in published {
            let path = dir.join(file);
            assert!(
                path.is_file() && std::fs::metadata(&path).unwrap().len() > 0,
                "{name}: `{}` was not published",
                path.display()
            );
        }
    }
}

/// The UL2 pipeline at a tiny size: every objective and architecture trains, evaluates, and the
/// relative table, Pareto plot and claims are published.
#[test]
fn ul2_pipeline_runs_end_to_end_at_a_tiny_size() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sb = Sandbox::new();
    let file = repo.join("pipelines/ul2.yaml");
    let file = file.display().to_string();
    let run = sb.ablate(&[
        "run",
        &file,
        "--json",
        "--set",
        "vars.docs=40",
        "--set",
        "vars.steps=3",
        "--set",
        "vars.seeds=[0]",
        "--set",
        "vars.d_model=16",
        "--set",
        "vars.seq_len=64",
        "--set",
        "vars.n=3",
    ]);
    assert_eq!(
        run.code,
        Some(EXIT_OK),
        "ul2 failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let dir = sb.results().join("ul2");
    for name in [
        "absolute.md",
        "relative.md",
        "oneshot_tasks.md",
        "mode_tokens.md",
        "pareto.png",
        "pareto.svg",
        "claims.md",
    ] {
        let path = dir.join(name);
        assert!(
            path.is_file() && std::fs::metadata(&path).unwrap().len() > 0,
            "`{}` was not published",
            path.display()
        );
    }
    let relative = std::fs::read_to_string(dir.join("relative.md")).unwrap();
    assert!(relative.contains("(base)"), "{relative}");
    let runs = read_parquet(&dir.join("runs.parquet"));
    let metrics = metric_values(&runs);
    for metric in [
        "val_nll",
        "infill_em",
        "oneshot_em",
        "infill_em_wrong_mode",
        "oneshot_em_no_mode",
    ] {
        assert!(
            metrics.keys().any(|(_, _, m, _)| m == metric),
            "no instance reported `{metric}`"
        );
    }
}

// --- Regressions ----------------------------------------------------------------------------------

/// Report outputs were published as `sharing-by-steps.md` for a stage `sharing_by_steps`: every
/// `_` of the instance id became `-`, so `results/<pipeline>/<stage>.md` did not exist.
#[test]
fn report_outputs_of_a_stage_with_underscores_were_published_with_dashes() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: under_score
stages:
  runs:
    op: echo
    matrix: { value: [1, 2] }
  value_by_value:
    op: report.table
    needs: [runs]
    params: { rows: [value], metric: value, aggregate: mean }
"#,
    );
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let dir = sb.results().join("under_score");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "report.html",
            "runs.parquet",
            "value_by_value.md",
            "value_by_value.parquet"
        ]
    );
    let table = read_parquet(&dir.join("value_by_value.parquet"));
    assert_eq!(table.num_rows(), 2);
}

/// `ablate ops | head -1` and friends panicked ("failed printing to stdout: Broken pipe", exit
/// 101) once the reader had gone; a closed pipe must end the output quietly with exit 0.
#[test]
fn printing_to_a_closed_pipe_panicked() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    for args in [
        &["ops"][..],
        &["table", "results/tiny/runs.parquet"],
        &["cache", "ls"],
        &["cache", "verify"],
        &["plan", "p.yaml"],
    ] {
        // The read end is closed before ablate starts: its first write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = sb
            .command(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_OK),
            "ablate {args:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "ablate {args:?}:\n{stderr}");
    }
}

// --- Slurm: the executor against the real single-node cluster of scripts/slurm-up.sh --------
//
// These tests submit real job arrays (`just slurm-up` starts the cluster; `.ci/run` and
// `just test` do it first). Each uses its own pipeline name, so the job names of tests running
// at once never meet.

/// Fails with the way out when no cluster answers: these tests never stand in for Slurm.
fn require_slurm() {
    // An up node is idle or busy: `completing` (finishing another test's tasks) once failed a
    // run here when only the first three were accepted. State flags (`~`, `#`, `-`, ...) may
    // follow a state; `*` (not responding) is the one that says the node is not up.
    let up = Command::new("sinfo")
        .args(["-h", "-N", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            o.status.success()
                && s.lines().any(|l| {
                    let state = l
                        .trim()
                        .trim_end_matches(['~', '#', '!', '%', '$', '@', '^', '-', '+']);
                    matches!(state, "idle" | "mixed" | "allocated" | "completing")
                })
        });
    assert!(
        up,
        "no Slurm cluster answers `sinfo` on this machine: start the single-node one with `just slurm-up` (scripts/slurm-up.sh)"
    );
}

/// A sweep of 42 instances: data → 20 flows (weights × steps × 5 seeds) → 20 evals → a table.
const SLURM_SWEEP: &str = r#"
name: NAME
stages:
  points:
    op: data.toy2d
    params: { kind: moons, n_train: 100, n_test: 100, noise: 0.1, seed: 0 }
  flow:
    op: train.flow
    needs: [points]
    matrix:
      weights: [shared, unshared]
      steps: [1, 2]
      seed: [0, 1, 2, 3, 4]
    params: { hidden: 4, epochs: 3, batch: 50, lr: 0.01 }
  eval:
    op: eval.flow
    needs: [flow]
  acc:
    op: report.table
    needs: [eval]
    params: { rows: [weights], cols: [steps], metric: test_acc, aggregate: mean }
"#;

/// The messages of `progress` events (`submitted as slurm task …`, `adopted …`), by instance.
fn progress_messages(events: &[Value], starting: &str) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter(|e| {
            e["event"] == "progress"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(starting))
        })
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Task logs written under `<cache>/slurm/logs/` (one `.out` per task that started).
fn task_logs(sb: &Sandbox) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "out") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&sb.cache().join("slurm/logs"), &mut out);
    out.sort();
    out
}

#[test]
fn slurm_sweep_gives_the_keys_and_metrics_of_a_local_run() {
    require_slurm();
    let text = SLURM_SWEEP.replace("NAME", "slurm-same");
    let local = Sandbox::new();
    local.write("p.yaml", &text);
    let on_slurm = Sandbox::new();
    on_slurm.write("p.yaml", &text);
    let keys = local.keys("p.yaml", &[]);
    assert_eq!(keys.len(), 42);
    assert_eq!(keys, on_slurm.keys("p.yaml", &["--executor", "slurm"]));

    let plan = on_slurm
        .ablate(&["plan", "p.yaml", "--executor", "slurm"])
        .code(EXIT_OK);
    assert_contains_all(
        &plan.stdout,
        &[
            // The 20 flows are 4 fused groups of 5 seeds: one task each.
            "slurm: 4 job array(s), 26 task(s)",
            "--job-name=ablate.slurm-same.flow --array=0-3",
            "after points",
        ],
    );

    local.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let run = on_slurm
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_OK);
    assert_summary(&run, 42, 0, 0, 0);
    let events = run.events();
    // Each stage went out as job arrays, not one job per instance: the 20 flows share one.
    let submitted = progress_messages(&events, "submitted as slurm task");
    assert_eq!(submitted.len(), 42);
    let arrays: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter_map(|m| m.strip_prefix("submitted as slurm task "))
        .map(|t| t.split('_').next().unwrap().to_owned())
        .collect();
    // The 20 flows became ready together, so they went out as one array; evaluations go out as
    // their flows finish, several per array when they finish in the same poll.
    let flow_arrays: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|i| i.starts_with("flow[")))
        .filter_map(|e| {
            e["message"]
                .as_str()?
                .strip_prefix("submitted as slurm task ")
        })
        .map(|t| t.split('_').next().unwrap())
        .collect();
    assert_eq!(flow_arrays.len(), 1, "{flow_arrays:?}");
    assert!(arrays.len() < 42, "{} arrays for 42 tasks", arrays.len());
    assert_eq!(task_logs(&on_slurm).len(), 26);

    let a = read_parquet(&local.results().join("slurm-same/runs.parquet"));
    let b = read_parquet(&on_slurm.results().join("slurm-same/runs.parquet"));
    let (a, b) = (metric_values(&a), metric_values(&b));
    let differ: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| (k, v, b.get(k)))
        .collect();
    assert!(differ.is_empty(), "local vs slurm: {differ:?}");
    assert_eq!(a.len(), b.len());
    // Fusion is how an instance is computed, not what: unfused, every metric is the same.
    let unfused = Sandbox::new();
    unfused.write("p.yaml", &text);
    unfused
        .ablate(&["run", "p.yaml", "--json", "--set", "flow.fuse=off"])
        .code(EXIT_OK);
    let c = metric_values(&read_parquet(
        &unfused.results().join("slurm-same/runs.parquet"),
    ));
    assert_eq!(a, c, "fused vs `fuse: off`");
    assert_eq!(
        std::fs::read_to_string(local.results().join("slurm-same/acc.md")).unwrap(),
        std::fs::read_to_string(on_slurm.results().join("slurm-same/acc.md")).unwrap()
    );
    // Nothing is left in flight.
    assert!(
        !on_slurm.cache().join("slurm/tasks").exists()
            || std::fs::read_dir(on_slurm.cache().join("slurm/tasks"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// #21 on a cluster: a task starts in the pipeline file's directory (not the orchestrator's),
/// and goes back there after a `setup` that changes directory, so `run` and `deps` written
/// relative to the file work.
#[test]
fn slurm_tasks_resolve_paths_against_the_pipeline_file() {
    require_slurm();
    let sb = Sandbox::new();
    let project = sb.path().join("work/project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("probe.sh"),
        "echo \"{\\\"here\\\": $(pwd | wc -c)}\" > \"$1/metrics.json\"\n",
    )
    .unwrap();
    std::fs::write(
        project.join("p.yaml"),
        r#"
name: slurm-paths
slurm: { poll_min_s: 0.2, poll_max_s: 1, setup: "cd /" }
stages:
  probe:
    op: cmd
    params: { run: "sh probe.sh {out}", deps: [probe.sh] }
"#,
    )
    .unwrap();
    let local = sb.keys("work/project/p.yaml", &[]);
    let run = sb
        .ablate(&[
            "run",
            "work/project/p.yaml",
            "--json",
            "--executor",
            "slurm",
        ])
        .code(EXIT_OK);
    assert_summary(&run, 1, 0, 0, 0);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(sb.entry(&local["probe"]).join("manifest.json")).unwrap(),
    )
    .unwrap();
    // `pwd | wc -c` is the length of the directory the script ran in, newline included.
    let dir = project.canonicalize().unwrap();
    let here = manifest["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "here")
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    assert_eq!(here as usize, dir.to_str().unwrap().len() + 1);
}

#[test]
fn slurm_failed_task_is_retried_then_reported_with_its_log_and_siblings_finish() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        &FAILING
            .replace("name: failing", "name: slurm-failing")
            .replace(
                "    op: cmd\n    matrix",
                "    op: cmd\n    retries: 1\n    matrix",
            ),
    );
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_FAILURE);
    assert_summary(&run, 4, 0, 1, 1);
    assert_eq!(run.ids("skipped"), ["after[i=2]"]);
    assert_eq!(
        run.ids("finished"),
        ["after[i=1]", "after[i=3]", "probe[i=1]", "probe[i=3]"]
    );
    let events = run.events();
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(failed.len(), 2, "one retry, then the failure");
    assert_eq!(failed[0]["will_retry"], true);
    assert_eq!(failed[1]["will_retry"], false);
    let error = failed[1]["error"].as_str().unwrap();
    assert_contains_all(error, &["slurm task", "failed", "boom-2", "last lines of"]);
    let log = PathBuf::from(failed[1]["log"].as_str().expect("the log of the task"));
    assert!(
        log.starts_with(sb.cache().join("slurm/logs/slurm-failing/probe")),
        "{log:?}"
    );
    assert_contains_all(&std::fs::read_to_string(&log).unwrap(), &["boom-2"]);
    // Two submissions of probe[i=2]: the attempt and its retry.
    let submitted = progress_messages(&events, "submitted as slurm task");
    assert_eq!(submitted.iter().filter(|i| *i == "probe[i=2]").count(), 2);

    // The failure stays visible with its log; the skipped dependant was never submitted.
    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_eq!(
        status_row(&status.stdout, "probe"),
        [2, 0, 0, 0, 1, 0],
        "{}",
        status.stdout
    );
    assert_eq!(
        status_row(&status.stdout, "after"),
        [2, 0, 0, 0, 0, 1],
        "{}",
        status.stdout
    );
    assert_contains_all(
        &status.stdout,
        &[
            "failed:",
            "probe[i=2]  slurm ",
            &format!("log: {}", log.display()),
        ],
    );
}

/// A stage's counts in `ablate status`: done, diverged, running, queued, failed, not started.
fn status_row(stdout: &str, stage: &str) -> Vec<u64> {
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no row for `{stage}`:\n{stdout}"));
    row.split_whitespace()
        .skip(1)
        .map(|c| {
            c.parse()
                .unwrap_or_else(|_| panic!("not a count in `{row}`"))
        })
        .collect()
}

#[test]
fn slurm_rerun_after_killing_the_orchestrator_adopts_the_tasks_in_flight() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-killed
slurm: { array_throttle: 2, poll_min_s: 0.2, poll_max_s: 1 }
stages:
  nap:
    op: echo
    matrix: { value: [1, 2, 3, 4, 5, 6] }
    params: { sleep_ms: 1500 }
"#,
    );
    let mut first = Running::spawn(sb.command(&["run", "p.yaml", "--json", "--executor", "slurm"]));
    first.wait_for("finished", 2, Duration::from_secs(60));
    // Killed outright: no chance to cancel or clean anything up.
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let done_before = ids_of(&events_of(&first.seen.join("\n")), "finished");
    assert!(
        done_before.len() >= 2 && done_before.len() < 6,
        "{done_before:?}"
    );

    let again = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_OK);
    let events = again.events();
    let cached = ids_of(&events, "cached");
    for id in &done_before {
        assert!(
            cached.contains(id),
            "{id} finished before the kill but is not cached"
        );
    }
    // Whatever the first run submitted and had not finished was queued or running: adopted,
    // never submitted again.
    assert_eq!(
        progress_messages(&events, "submitted as slurm task"),
        Vec::<String>::new()
    );
    let adopted = progress_messages(&events, "adopted slurm task");
    let finished = ids_of(&events, "finished");
    assert_eq!(
        adopted.len() + cached.len(),
        6,
        "adopted {adopted:?}, cached {cached:?}"
    );
    assert_eq!(
        finished.len() + cached.len(),
        6,
        "finished {finished:?}, cached {cached:?}"
    );
    // Each of the six instances ran in exactly one task.
    assert_eq!(task_logs(&sb).len(), 6);
}

#[test]
fn slurm_run_of_a_half_cached_sweep_submits_only_the_other_half() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-mixed
stages:
  probe:
    op: echo
    matrix: { value: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }
"#,
    );
    sb.ablate(&[
        "run",
        "p.yaml",
        "--json",
        "--matrix",
        "probe.value=1,2,3,4,5",
    ])
    .code(EXIT_OK);
    // The cluster's settings come from a profile.
    sb.write(
        "cluster.yaml",
        "executor: slurm\nslurm: { partition: debug, time: \"10\", array_throttle: 3 }\n",
    );
    let plan = sb
        .ablate(&["plan", "p.yaml", "--profile", "cluster.yaml"])
        .code(EXIT_OK);
    assert_contains_all(
        &plan.stdout,
        &[
            "slurm: 1 job array(s), 5 task(s)",
            "--array=0-4%3",
            "--partition=debug",
            "--time=10",
        ],
    );
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--profile", "cluster.yaml"])
        .code(EXIT_OK);
    assert_summary(&run, 5, 5, 0, 0);
    let events = run.events();
    assert_eq!(
        progress_messages(&events, "submitted as slurm task"),
        [
            "probe[value=10.0]",
            "probe[value=6.0]",
            "probe[value=7.0]",
            "probe[value=8.0]",
            "probe[value=9.0]"
        ]
    );
    assert_eq!(task_logs(&sb).len(), 5);
}

#[test]
fn slurm_detach_submits_everything_then_status_and_a_rerun_collect_it() {
    require_slurm();
    let sb = Sandbox::new();
    let text = TINY_FLOW.replace("name: tiny", "name: slurm-detached");
    sb.write("p.yaml", &text);
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm", "--detach"])
        .code(EXIT_OK);
    let s = run.summary();
    assert_eq!(s["submitted"], TINY_FLOW_INSTANCES as u64, "{s}");
    assert_eq!(s["ran"], 0);
    assert_eq!(run.ids("submitted").len(), TINY_FLOW_INSTANCES);
    // The run's page shows them submitted, with their task and log (the last stage, which
    // waits for all the others, cannot have finished yet; the first may have).
    let page = std::fs::read_to_string(sb.results().join("slurm-detached/report.html")).unwrap();
    let start = page.find("id=\"ablate-data\">").unwrap() + "id=\"ablate-data\">".len();
    let end = start + page[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&page[start..end]).unwrap();
    for i in data["instances"].as_array().unwrap() {
        let status = i["status"].as_str().unwrap();
        assert!(matches!(status, "submitted" | "cached"), "{i}");
        if i["stage"] == "acc" {
            assert_eq!(status, "submitted", "{i}");
            let detail = i["status_detail"].as_str().unwrap();
            assert!(detail.starts_with("slurm task "), "{detail}");
            assert!(i["files"].as_str().unwrap().ends_with(".err"), "{i}");
        }
    }

    // Everything went out at once: no stage has an instance left to submit, none failed.
    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_contains_all(&status.stdout, &["pipeline `slurm-detached`: 10 instances"]);
    for stage in ["points", "flow", "eval", "acc"] {
        let row = status_row(&status.stdout, stage);
        assert_eq!((row[4], row[5]), (0, 0), "{stage}: {}", status.stdout);
    }
    assert_eq!(
        ["points", "flow", "eval", "acc"]
            .iter()
            .map(|s| status_row(&status.stdout, s).iter().sum::<u64>())
            .sum::<u64>(),
        TINY_FLOW_INSTANCES as u64
    );

    // Collecting: everything is adopted or already cached; nothing is submitted again.
    let again = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_OK);
    let events = again.events();
    assert_eq!(
        progress_messages(&events, "submitted as slurm task"),
        Vec::<String>::new()
    );
    let s = again.summary();
    assert_eq!(
        s["ran"].as_u64().unwrap() + s["cached"].as_u64().unwrap(),
        TINY_FLOW_INSTANCES as u64,
        "{s}"
    );
    assert!(sb.results().join("slurm-detached/acc.md").is_file());
    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    for (stage, n) in [("points", 1), ("flow", 4), ("eval", 4), ("acc", 1)] {
        assert_eq!(
            status_row(&status.stdout, stage),
            [n, 0, 0, 0, 0, 0],
            "{}",
            status.stdout
        );
    }
    assert_eq!(task_logs(&sb).len(), TINY_FLOW_INSTANCES);
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no `{start}` in:\n{text}"))
        + start.len();
    let len = text[from..].find(end).expect("closed");
    &text[from..from + len]
}

/// Runs a command line ablate printed, as a shell would, with this build as `ablate`.
fn shell(sb: &Sandbox, line: &str) -> Run {
    let dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Run::from(
        Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(sb.path())
            .env("PATH", path)
            .env_remove("ABLATE_CACHE")
            .env_remove("ABLATE_RESULTS")
            .env_remove("ABLATE_PROFILE")
            .stdin(Stdio::null())
            .output()
            .expect("run sh"),
    )
}

/// The commands `--detach` printed dropped `--matrix`, `--set` and `--profile`: run
/// literally, `status` showed the base sweep and the resumed run planned it, saying nothing of
/// the tasks in flight (issue 24). Here each is run as printed, by a shell (the profile's
/// name has a space).
#[test]
fn slurm_printed_resume_command_dropped_matrix_set_and_profile() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-resume
stages:
  nap:
    op: echo
    matrix: { value: [1, 2] }
    params: { sleep_ms: 100 }
"#,
    );
    sb.write(
        "my profile.yaml",
        "executor: slurm\nslurm: { poll_min_s: 0.2, poll_max_s: 1 }\n",
    );
    let args = [
        "run",
        "p.yaml",
        "--detach",
        "--profile",
        "my profile.yaml",
        "--matrix",
        "nap.value=7,8,9",
        "--set",
        "nap.params.sleep_ms=4000",
    ];
    let detached = sb.ablate(&args).code(EXIT_OK);
    let status = between(&detached.stderr, "follow them with `", "`");
    let resume = between(&detached.stderr, "collect the results with `", "`");
    assert_contains_all(
        resume,
        &["--matrix", "--set", "--profile 'my profile.yaml'"],
    );

    let status = shell(&sb, status).code(EXIT_OK);
    assert_contains_all(&status.stdout, &["pipeline `slurm-resume`: 3 instances"]);
    let row = status_row(&status.stdout, "nap");
    assert_eq!(row[0] + row[2] + row[3], 3, "{}", status.stdout);

    let resumed = shell(&sb, &format!("{resume} --json")).code(EXIT_OK);
    let events = resumed.events();
    assert_eq!(
        progress_messages(&events, "submitted as slurm task"),
        Vec::<String>::new(),
        "{}",
        resumed.stderr
    );
    let s = resumed.summary();
    assert_eq!(
        s["ran"].as_u64().unwrap() + s["cached"].as_u64().unwrap(),
        3,
        "{s}"
    );
    let adopted = progress_messages(&events, "adopted slurm task").len();
    assert_eq!(adopted + s["cached"].as_u64().unwrap() as usize, 3, "{s}");
}

/// `cpus_per_task: 64` on a 4-CPU node: Slurm holds the task pending with reason
/// `PartitionConfig` for ever, and the run polled it for ever without a word; afterwards
/// `status` called it "unknown to Slurm" (issue 24). Now the instance fails at once, for good
/// (no retry), saying what to change, and its task is cancelled.
#[test]
fn slurm_task_that_can_never_start_was_polled_for_ever() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-never
stages:
  big:
    op: echo
    retries: 2
    params: { value: 1 }
"#,
    );
    sb.write(
        "big.yaml",
        "executor: slurm\nslurm: { cpus_per_task: 64, poll_min_s: 0.2, poll_max_s: 1 }\n",
    );
    let running = Running::spawn(sb.command(&["run", "p.yaml", "--json", "--profile", "big.yaml"]));
    let (code, lines, stderr) = running.finish(Duration::from_secs(60));
    assert_eq!(code, Some(EXIT_FAILURE), "{stderr}");
    let events = events_of(&lines.join("\n"));
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(failed.len(), 1, "tried once: {failed:?}");
    assert_eq!(failed[0]["will_retry"], false);
    let error = failed[0]["error"].as_str().unwrap();
    assert_contains_all(
        error,
        &[
            "can never start",
            "`PartitionConfig`",
            "`--cpus-per-task=64`",
            "ablate cancelled it",
            "hint: lower `slurm.cpus_per_task`",
        ],
    );
    let q = Command::new("squeue")
        .args([
            "-h",
            "-r",
            "--name",
            "ablate.slurm-never.big",
            "-o",
            "%i %T",
        ])
        .output()
        .unwrap();
    let q = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(!q.contains("PENDING"), "left pending: {q}");

    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_eq!(status_row(&status.stdout, "big")[4], 1, "{}", status.stdout);
    assert_contains_all(
        &status.stdout,
        &["can never start", "`PartitionConfig`", "--profile big.yaml"],
    );
    assert!(
        !status.stdout.contains("unknown to Slurm"),
        "{}",
        status.stdout
    );
}

/// `plan` accepted a partition that does not exist and a malformed `time:`, found only by
/// `sbatch` at submission (issue 24).
#[test]
fn slurm_plan_accepted_an_unknown_partition_and_a_malformed_time() {
    require_slurm();
    let sb = Sandbox::new();
    let stage = "stages:\n  one:\n    op: echo\n    params: { value: 1 }\n";
    sb.write(
        "time.yaml",
        &format!("name: slurm-time\nslurm:\n  time: 1h\n{stage}"),
    );
    let plan = sb
        .ablate(&["plan", "time.yaml", "--executor", "slurm"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &plan.stderr,
        &["time.yaml:3:9", "invalid `slurm.time` `1h`", "`D-H:M:S`"],
    );
    sb.write(
        "part.yaml",
        &format!("name: slurm-part\nslurm: {{ partition: nope }}\n{stage}"),
    );
    for command in ["plan", "run"] {
        let out = sb
            .ablate(&[command, "part.yaml", "--executor", "slurm"])
            .code(EXIT_INVALID_INPUT);
        assert_contains_all(
            &out.stderr,
            &["partition `nope` does not exist", "`debug`", "hint:"],
        );
    }
    // A local plan of the same file does not ask Slurm.
    sb.ablate(&["plan", "part.yaml"]).code(EXIT_OK);
}

/// A submission `sbatch` refused used up the instances' retries, and its error was printed
/// once per attempt (issue 24): another attempt is refused alike.
#[test]
fn slurm_submission_error_was_retried_and_printed_once_per_attempt() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-refused
slurm: { gres: "nonesuch:1", poll_min_s: 0.2, poll_max_s: 1 }
stages:
  one:
    op: echo
    retries: 2
    matrix: { value: [1, 2] }
"#,
    );
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_FAILURE);
    let events = run.events();
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(
        failed.len(),
        2,
        "one failure per instance, no retry: {failed:?}"
    );
    assert!(
        failed.iter().all(|e| e["will_retry"] == false),
        "{failed:?}"
    );
    let told = failed
        .iter()
        .filter(|e| {
            e["error"]
                .as_str()
                .unwrap()
                .contains("Invalid generic resource")
        })
        .count();
    assert_eq!(told, 1, "{failed:?}");
    assert_contains_all(
        failed[0]["error"].as_str().unwrap(),
        &["failed to submit stage `one` to Slurm"],
    );
}

/// A Slurm run showed only "running" where a local run shows each step of a `cmd`'s metrics
/// log (issue 24): the log is in the shared cache, and now feeds the same progress line.
#[test]
fn slurm_live_metrics_showed_only_running() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "train.sh",
        "#!/bin/sh\nfor i in 1 2 3 4 5 6; do\n  echo \"{\\\"step\\\": $i, \\\"loss\\\": 0.$i}\" >> \"$ABLATE_METRICS\"\n  sleep 1\ndone\n",
    );
    sb.write(
        "p.yaml",
        r#"
name: slurm-live
slurm: { poll_min_s: 0.2, poll_max_s: 0.5 }
stages:
  fit:
    op: cmd
    params: { run: "sh train.sh", deps: [train.sh] }
"#,
    );
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_OK);
    let events = run.events();
    let steps: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "progress")
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("step "))
        .collect();
    assert!(steps.len() >= 2, "{:?}", run.stdout);
    assert!(steps.iter().all(|m| m.contains(": loss 0.")), "{steps:?}");
}

/// A task that ran again (submitted anew after a failure, or requeued by Slurm after a time
/// limit or a preemption) had a `wall_time_s` of its last attempt alone (issue 24): the first
/// attempt here spends 3 s before it fails.
#[test]
fn slurm_wall_time_counted_only_the_last_attempt() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-walltime
slurm: { poll_min_s: 0.2, poll_max_s: 1 }
stages:
  slow:
    op: cmd
    retries: 1
    params: { run: "if [ -e tried ]; then echo '{\"x\": 1}' > {out}/metrics.json; else touch tried; sleep 3; exit 1; fi" }
"#,
    );
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_OK);
    assert_summary(&run, 1, 0, 0, 0);
    let t = read_parquet(&sb.results().join("slurm-walltime/runs.parquet"));
    let wall = floats(column(&t, "wall_time_s"));
    assert!(
        wall.iter().all(|w| w.is_some_and(|w| w >= 3.0)),
        "both attempts count: {wall:?}"
    );
}

/// A task Slurm requeued (preemption, `scontrol requeue`) truncated its `.out`/`.err`, losing
/// the first attempt's lines, and its `wall_time_s` counted the last attempt only (issue 24).
#[test]
fn slurm_requeued_task_overwrote_the_first_attempts_log() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-requeued
slurm: { poll_min_s: 0.2, poll_max_s: 1 }
stages:
  nap:
    op: echo
    params: { value: 1, sleep_ms: 4000 }
"#,
    );
    // Tasks of this job name in `state` (earlier runs' ended tasks stay listed a while).
    let squeue = |state: &str, format: &str| {
        let out = Command::new("squeue")
            .args([
                "-h",
                "-r",
                "-t",
                state,
                "--name",
                "ablate.slurm-requeued.nap",
                "-o",
                format,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let wait_for = |state: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while squeue(state, "%i").is_empty() {
            assert!(
                Instant::now() < deadline,
                "never {state}: {}",
                squeue("all", "%i %T %r")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let running = Running::spawn(sb.command(&["run", "p.yaml", "--json", "--executor", "slurm"]));
    wait_for("running");
    std::thread::sleep(Duration::from_millis(2000));
    let task = squeue("running", "%i");
    let requeue = Command::new("scontrol")
        .args(["requeue", &task])
        .status()
        .unwrap();
    assert!(requeue.success());
    // A requeued job waits out a `BeginTime` (minutes): let it go now, but not within the
    // second of the requeue. slurmd refuses a credential made in the second its job's old one
    // was revoked ("Job credential revoked"): the task then fails for good at launch, which is
    // what failed this test in CI (slurmctld.log: "Killing non-startable batch JobId").
    wait_for("pending");
    std::thread::sleep(Duration::from_millis(1500));
    let now = Command::new("scontrol")
        .args(["update", &format!("jobid={task}"), "StartTime=now"])
        .status()
        .unwrap();
    assert!(now.success());
    let (code, lines, stderr) = running.finish(Duration::from_secs(90));
    assert_eq!(code, Some(EXIT_OK), "{stderr}{lines:?}");
    let logs = task_logs(&sb);
    assert_eq!(logs.len(), 1, "{logs:?}");
    let out = std::fs::read_to_string(&logs[0]).unwrap();
    assert_eq!(
        out.matches("ablate exec: nap (key").count(),
        2,
        "both attempts' lines:\n{out}"
    );
    assert_contains_all(&out, &["ablate exec: attempt 2 of this task (requeued)"]);
    let t = read_parquet(&sb.results().join("slurm-requeued/runs.parquet"));
    let wall = floats(column(&t, "wall_time_s"));
    assert!(
        wall.iter().all(|w| w.is_some_and(|w| w >= 5.5)),
        "the first attempt's 2 s count: {wall:?}"
    );
}

#[test]
fn slurm_ctrl_c_with_cancel_on_exit_cancels_the_tasks_in_flight() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-cancelled
executor: slurm
slurm: { poll_min_s: 0.2, poll_max_s: 1 }
stages:
  nap:
    op: echo
    matrix: { value: [1, 2, 3] }
    params: { sleep_ms: 60000 }
"#,
    );
    // `executor: slurm` in the file.
    let mut running = Running::spawn(sb.command(&["run", "p.yaml", "--json", "--cancel-on-exit"]));
    running.wait_for("progress", 3, Duration::from_secs(30));
    running.interrupt();
    let (code, _, stderr) = running.finish(Duration::from_secs(30));
    assert_eq!(code, Some(EXIT_INTERRUPTED), "{stderr}");
    // The tasks are gone from the queue (cancelled), and no record is left to adopt.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = Command::new("squeue")
            .args([
                "-h",
                "-r",
                "--name",
                "ablate.slurm-cancelled.nap",
                "-o",
                "%i %T",
            ])
            .output()
            .unwrap();
        let q = String::from_utf8_lossy(&q.stdout).into_owned();
        if !q
            .lines()
            .any(|l| l.contains("RUNNING") || l.contains("PENDING"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "still queued: {q}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let tasks = sb.cache().join("slurm/tasks");
    assert!(
        std::fs::read_dir(&tasks).map_or(true, |mut d| d.next().is_none()),
        "records left in {tasks:?}"
    );
}

/// A pipeline whose stage `nap` is one fused group of `seeds` quick `echo` instances.
fn slurm_fused_group(name: &str, seeds: usize, extra: &str) -> String {
    let seeds: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    format!(
        "name: {name}\nslurm: {{ poll_min_s: 0.2, poll_max_s: 1 }}\nstages:\n  nap:\n    op: echo\n    params: {{ value: 2, sleep_ms: 200 }}\n    matrix: {{ seed: [{}], fail: [false] }}\n{extra}",
        seeds.join(", ")
    )
}

/// The `submitted as slurm task` messages of a run, by instance id.
fn submissions(events: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| {
            let m = e["message"].as_str()?;
            m.starts_with("submitted as slurm task ")
                .then(|| (e["id"].as_str().unwrap().to_owned(), m.to_owned()))
        })
        .collect();
    out.sort();
    out
}

/// #23 on a cluster: a fused group of `echo` (a sweep over its fusible `seed` and `fail`) is
/// ONE array task whose `ablate exec` computes the members together with the local protocol:
/// each member gets its own entry and its own outcome; the member that fails fails alone, the
/// entries the task committed stay, and the failed member is retried on its own.
#[test]
fn slurm_a_fused_group_is_one_array_task_and_a_member_fails_alone() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        &slurm_fused_group(
            "slurm-fused",
            5,
            "    include: [{ seed: 5, fail: true }]\n    retries: 1\n",
        ),
    );
    let keys = sb.keys("p.yaml", &[]);
    assert_eq!(keys.len(), 6);
    let plan = sb
        .ablate(&["plan", "p.yaml", "--executor", "slurm"])
        .code(EXIT_OK);
    assert_contains_all(
        &plan.stdout,
        &[
            "fuse  ×6",
            "slurm: 1 job array(s), 1 task(s)",
            "--job-name=ablate.slurm-fused.nap --array=0-0 ",
            "       0  nap[seed=0,fail=false]\n        + nap[seed=1,fail=false]\n",
            "        + nap[seed=5,fail=true]\n",
        ],
    );
    // One task asks for one instance's slot, not six.
    assert!(
        plan.stdout.contains("--cpus-per-task=1 "),
        "{}",
        plan.stdout
    );

    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_FAILURE);
    assert_summary(&run, 5, 0, 1, 0);
    let events = run.events();
    let ok: Vec<String> = (0..5)
        .map(|s| format!("nap[seed={s},fail=false]"))
        .collect();
    assert_eq!(run.ids("finished"), ok);
    // The group went out as one task of one array; the failed member was retried alone.
    let sent = submissions(&events);
    let first: Vec<&(String, String)> = sent
        .iter()
        .filter(|(_, m)| m.ends_with("(a fused group of 6)"))
        .collect();
    assert_eq!(first.len(), 6, "{sent:?}");
    let task = first[0].1.split_whitespace().nth(4).unwrap().to_owned();
    assert!(task.ends_with("_0"), "{task}");
    assert!(first.iter().all(|(_, m)| m.contains(&format!(" {task} "))));
    let again: Vec<&(String, String)> = sent
        .iter()
        .filter(|(_, m)| !m.ends_with("(a fused group of 6)"))
        .collect();
    assert_eq!(again.len(), 1, "{sent:?}");
    assert_eq!(again[0].0, "nap[seed=5,fail=true]");
    assert_eq!(
        task_logs(&sb).len(),
        2,
        "the group's task, then the retry's"
    );
    // The member's own failure, each time, with the task's log.
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| e["id"] == "nap[seed=5,fail=true]"));
    assert_eq!(
        (&failed[0]["will_retry"], &failed[1]["will_retry"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    assert_contains_all(
        failed[0]["error"].as_str().unwrap(),
        &[
            &format!("slurm task {task} failed"),
            "`nap[seed=5,fail=true]` failed on purpose",
        ],
    );
    // Each member that finished has its own entry, with its own metric; the failed one none.
    for (id, key) in &keys {
        let manifest = sb.entry(key).join("manifest.json");
        assert_eq!(manifest.is_file(), !id.contains("fail=true"), "{id}");
    }
    let batches: Vec<Value> = std::fs::read_dir(sb.cache().join("slurm/runs/slurm-fused/nap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let mut sizes: Vec<Vec<usize>> = batches
        .iter()
        .map(|b| {
            b["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_array().unwrap().len())
                .collect()
        })
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [vec![1], vec![6]],
        "one batch of one task of six, then the retry"
    );
    // The failure stays visible in `ablate status`, with the task's log.
    let status = sb.ablate(&["status", "p.yaml"]).code(EXIT_OK);
    assert_eq!(
        status_row(&status.stdout, "nap"),
        [5, 0, 0, 0, 1, 0],
        "{}",
        status.stdout
    );

    // The terminal says a group's task once, not once per member.
    // (Other values: new keys, not the entries above.)
    sb.write(
        "q.yaml",
        &slurm_fused_group("slurm-fused-plain", 3, "").replace("value: 2", "value: 3"),
    );
    let plain = sb
        .ablate(&["run", "q.yaml", "--executor", "slurm"])
        .code(EXIT_OK);
    assert_eq!(
        plain.stderr.matches("submitted as slurm task").count(),
        1,
        "{}",
        plain.stderr
    );
}

/// A fused group's task killed from outside (scancel; a node failure or OOM reads the same)
/// fails every member it had not committed, with the task's state, and leaves nothing in
/// flight.
#[test]
fn slurm_scancel_of_a_fused_task_fails_its_members() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        &slurm_fused_group("slurm-fused-killed", 3, "").replace("sleep_ms: 200", "sleep_ms: 60000"),
    );
    let mut running =
        Running::spawn(sb.command(&["run", "p.yaml", "--json", "--executor", "slurm"]));
    // Submitted, then seen running.
    let mut n = 1;
    while !running.seen.iter().any(|l| l.contains(" running\"")) {
        running.wait_for("progress", n, Duration::from_secs(60));
        n += 1;
    }
    let records: Vec<Value> = std::fs::read_dir(sb.cache().join("slurm/tasks"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "one record per member");
    let task = records[0]["task"].as_str().unwrap().to_owned();
    assert!(
        records.iter().all(|r| r["task"] == task.as_str()),
        "{records:?}"
    );
    let out = Command::new("scancel").arg(&task).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, lines, stderr) = running.finish(Duration::from_secs(60));
    assert_eq!(code, Some(EXIT_FAILURE), "{stderr}");
    let events = events_of(&lines.join("\n"));
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(ids_of(&events, "failed").len(), 3, "{failed:?}");
    for e in &failed {
        assert_contains_all(
            e["error"].as_str().unwrap(),
            &[&format!("slurm task {task} cancelled")],
        );
    }
    assert!(ids_of(&events, "finished").is_empty());
    // No entry was written, and nothing half-written is left to adopt as running.
    for key in sb.keys("p.yaml", &[]).values() {
        assert!(!sb.entry(key).join("manifest.json").exists());
    }
}

#[test]
fn executor_flags_and_profiles_are_checked_before_anything_runs() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    let run = sb
        .ablate(&["run", "p.yaml", "--detach"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&run.stderr, &["`--detach` is for the Slurm executor"]);
    let run = sb
        .ablate(&["run", "p.yaml", "--executor", "slurm", "--jobs", "2"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &["`--jobs` limits a local run", "array_throttle"],
    );
    sb.write("bad.yaml", "executor: slurm\nslurm:\n  partiton: gpu\n");
    let run = sb
        .ablate(&["plan", "p.yaml", "--profile", "bad.yaml"])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &[
            "unknown key `partiton` in `slurm`",
            "bad.yaml:3:3",
            "did you mean `partition`?",
        ],
    );
    // Nothing ran.
    assert!(!sb.results().exists());
}

#[test]
fn slurm_status_counts_a_task_another_pipeline_submitted_for_the_same_key() {
    require_slurm();
    let sb = Sandbox::new();
    let stage = |pipeline: &str, stage: &str| {
        format!(
            "name: {pipeline}\nstages:\n  {stage}:\n    op: echo\n    params: {{ value: 7, sleep_ms: 20000 }}\n"
        )
    };
    sb.write("a.yaml", &stage("slurm-share-a", "nap"));
    sb.write("b.yaml", &stage("slurm-share-b", "rest"));
    assert_eq!(
        sb.keys("a.yaml", &[]).into_values().collect::<Vec<_>>(),
        sb.keys("b.yaml", &[]).into_values().collect::<Vec<_>>()
    );
    sb.ablate(&["run", "a.yaml", "--executor", "slurm", "--detach"])
        .code(EXIT_OK);
    // b's stage `rest` is a's `nap` under another name: in flight, counted under `rest`.
    let status = sb.ablate(&["status", "b.yaml"]).code(EXIT_OK);
    let row = status_row(&status.stdout, "rest");
    assert!(
        row == [0, 0, 1, 0, 0, 0] || row == [0, 0, 0, 1, 0, 0],
        "{}",
        status.stdout
    );
    assert_contains_all(&status.stdout, &["rest  slurm "]);
    let _ = Command::new("scancel")
        .args(["--name", "ablate.slurm-share-a.nap"])
        .status();
}

// --- Reliability (#16): each test fails on the code before the fix it names ------------------

impl Running {
    fn send(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }
}

/// Waits up to 5 s for `pid` to go, then kills it if it is still there; returns whether it
/// was still alive.
fn outlived(pid: libc::pid_t) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive = process_alive(pid);
    if alive {
        // SAFETY: as above; do not leave it behind.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    alive
}

/// #16.2: SIGTERM (Slurm's time limit, preemption) and SIGHUP ended ablate with the signal,
/// orphaning the `cmd` and recording nothing that had finished.
#[test]
fn sigterm_and_sighup_stop_a_run_like_ctrl_c_and_keep_what_finished() {
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGHUP, 129)] {
        let sb = Sandbox::new();
        sb.write(
            "p.yaml",
            r#"
name: termed
stages:
  quick:
    op: echo
    params: { value: 7 }
  wait:
    op: cmd
    needs: [quick]
    params: { run: "sleep 30 & echo $! > sleeper.pid; wait" }
"#,
        );
        let keys = sb.keys("p.yaml", &[]);
        let mut running = Running::spawn(sb.command(&["run", "p.yaml", "--json"]));
        running.wait_for("started", 2, Duration::from_secs(20));
        let sleeper = read_pid(&sb.path().join("sleeper.pid"));
        running.send(sig);
        let (exit, lines, stderr) = running.finish(Duration::from_secs(10));
        assert_eq!(exit, Some(code), "signal {sig}: stderr:\n{stderr}");
        assert!(
            lines.iter().any(|l| l.contains(r#""event":"interrupted""#)),
            "{lines:?}"
        );
        assert!(
            !outlived(sleeper),
            "signal {sig}: `sleep 30` outlived the run"
        );
        assert_no_temp_entries(&sb);
        assert!(!sb.entry(&keys["wait"]).exists());
        // What finished before the signal is recorded: its rows, and its key for `plan`.
        let runs = read_parquet(&sb.results().join("termed/runs.parquet"));
        let values = metric_values(&runs);
        assert_eq!(
            values.get(&("quick".into(), String::new(), "value".into(), None)),
            Some(&7.0)
        );
        let plan = sb.plan("p.yaml", &[]);
        assert_eq!(plan["quick"]["status"], "cached");
    }
}

/// #16.1: `{param.NAME}` values were pasted raw into `sh -c`, so a `--matrix` value ran code.
#[test]
fn matrix_values_reach_a_cmd_as_one_word_never_as_code() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: injected
stages:
  s:
    op: cmd
    matrix: { v: [a] }
    params: { run: "printf '%s' {param.v} > {out}/v.txt" }
"#,
    );
    for value in ["x; touch pwned", "$(touch pwned)", "it's"] {
        let arg = format!("s.v={value}");
        sb.ablate(&["run", "p.yaml", "--matrix", &arg])
            .code(EXIT_OK);
        assert!(!sb.path().join("pwned").exists(), "{value:?} ran as code");
        let keys = sb.keys("p.yaml", &["--matrix", &arg]);
        let key = keys.values().next().unwrap();
        let got = std::fs::read_to_string(sb.entry(key).join("v.txt")).unwrap();
        assert_eq!(got, value);
    }
}

/// #16.3: a `--force` run killed after it replaced an entry, before it rewrote runs.parquet,
/// left the old computation's rows there for good.
#[test]
fn a_killed_force_run_leaves_no_stale_rows_in_runs_parquet() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: forced
stages:
  count:
    op: cmd
    params: { run: "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo \"{\\\"n\\\": $n}\" > {out}/metrics.json" }
  hang:
    op: cmd
    needs: [count]
    params: { run: "if [ -e hang ]; then sleep 60 & echo $! > sleeper.pid; wait; fi; echo '{\"ok\": 1}' > {out}/metrics.json" }
"#,
    );
    let runs = sb.results().join("forced/runs.parquet");
    let n_of =
        || metric_values(&read_parquet(&runs))[&("count".into(), String::new(), "n".into(), None)];
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    assert_eq!(n_of(), 1.0);

    std::fs::write(sb.path().join("hang"), "").unwrap();
    let mut running = Running::spawn(sb.command(&["run", "p.yaml", "--json", "--force", "count"]));
    running.wait_for("finished", 1, Duration::from_secs(20));
    running.wait_for("started", 2, Duration::from_secs(20));
    let sleeper = read_pid(&sb.path().join("sleeper.pid"));
    running.child.kill().unwrap();
    let _ = running.finish(Duration::from_secs(10));
    // SAFETY: as above; the killed run could not stop its command.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    std::fs::remove_file(sb.path().join("hang")).unwrap();

    // The entry holds the forced computation (n = 2): the next run, all cached, must say so.
    let again = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&again, 0, 2, 0, 0);
    assert_eq!(n_of(), 2.0, "runs.parquet disagrees with the cache entry");
}

/// Runs `ablate ARGS` with the sandbox's cache mounted read-only (a private mount namespace,
/// so nothing leaks): needs root, as `just test` and CI have.
fn ablate_on_read_only_cache(sb: &Sandbox, args: &[&str]) -> Run {
    let cache = sb.cache();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind -o ro "$1" "$1" || exit 99; shift; exec "$@""#)
        .arg("sh")
        .arg(&cache)
        .arg(BIN)
        .args(args)
        .arg("--cache")
        .arg(&cache)
        .arg("--results")
        .arg(sb.results())
        .current_dir(sb.path())
        .env_remove("ABLATE_CACHE")
        .env_remove("ABLATE_RESULTS")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let run = Run::from(out);
    assert_ne!(
        run.code,
        Some(99),
        "a read-only bind mount needs root (`just test` runs as root in CI): {}",
        run.stderr
    );
    run
}

/// #16.4: a shared, read-only cache could not serve even a fully cached run ("failed to save
/// the run index … Read-only file system").
#[test]
fn a_read_only_cache_serves_a_fully_cached_run() {
    let sb = Sandbox::new();
    let stages = r#"
stages:
  a:
    op: echo
    matrix: { value: [1, 2] }
  b:
    op: report.table
    needs: [a]
    params: { rows: [value], metric: value }
"#;
    sb.write("p.yaml", &format!("name: shared{stages}"));
    sb.write("q.yaml", &format!("name: reader{stages}"));
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    // A lookup records the entries it verified (#21): the read-only runs find them recorded,
    // and read the manifests they need for `reader`'s rows and table only then.
    sb.plan("p.yaml", &[]);
    assert!(
        sb.cache()
            .join("v1/verified")
            .read_dir()
            .unwrap()
            .next()
            .is_some()
    );
    // An index from before the digest of the last run's keys (#21) would get it, where it can.
    let index = sb.cache().join("v1/pipelines/shared.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    assert!(doc.as_object_mut().unwrap().remove("last_run").is_some());
    std::fs::write(&index, serde_json::to_vec(&doc).unwrap()).unwrap();
    let run = ablate_on_read_only_cache(&sb, &["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&run, 0, 3, 0, 0);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    // Another pipeline with the same keys: cached too; its run index cannot be written, which
    // is worth a warning, not a failure.
    let run = ablate_on_read_only_cache(&sb, &["run", "q.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&run, 0, 3, 0, 0);
    assert_contains_all(&run.stderr, &["warning: failed to save the run index"]);
    assert_eq!(
        read_parquet(&sb.results().join("reader/runs.parquet")).num_rows(),
        2
    );
    assert!(sb.results().join("reader/b.md").exists());
}

/// #16.8: an edited metric in a manifest passed `verify` and reached runs.parquet.
#[test]
fn an_edited_manifest_is_refused_by_verify_and_recomputed_by_run() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        "name: edited\nstages:\n  a: { op: echo, params: { value: 1 } }\n",
    );
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let key = sb.keys("p.yaml", &[])["a"].clone();
    let path = sb.entry(&key).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(r#""value":1.0"#, r#""value":99.0"#);
    assert_ne!(text, edited, "{text}");
    std::fs::write(&path, edited).unwrap();

    let verify = sb.ablate(&["cache", "verify"]).code(EXIT_FAILURE);
    assert_contains_all(
        &verify.stdout,
        &["changed after it was written", "1 invalid"],
    );
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&run, 1, 0, 0, 0);
    let values = metric_values(&read_parquet(&sb.results().join("edited/runs.parquet")));
    assert_eq!(
        values[&("a".into(), String::new(), "value".into(), None)],
        1.0
    );
    sb.ablate(&["cache", "verify"]).code(EXIT_OK);
}

/// #16.9: a same-size edit with the mtime put back passed every lookup; now the stage that
/// reads the file hashes it, refuses it, and the next run recomputes it.
#[test]
fn same_size_corruption_is_caught_when_a_stage_reads_the_file() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_FLOW);
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let points = sb.keys("p.yaml", &[])["points"].clone();
    let file = sb.entry(&points).join("train.parquet");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // The fast lookup trusts size and mtime: `points` still shows as cached.
    let plan = sb.plan("p.yaml", &["--set", "flow.params.lr=0.02"]);
    assert_eq!(plan["points"]["status"], "cached");

    let run = sb
        .ablate(&["run", "p.yaml", "--set", "flow.params.lr=0.02"])
        .code(EXIT_FAILURE);
    assert_contains_all(
        &run.stderr,
        &["cannot be trusted", "SHA-256", "the next run recomputes it"],
    );
    let again = sb
        .ablate(&["run", "p.yaml", "--set", "flow.params.lr=0.02", "--json"])
        .code(EXIT_OK);
    assert!(again.ids("started").contains(&"points".to_owned()));
}

/// #16.12: a kill during the runs.parquet write left `.runs.parquet.<pid>.<n>.tmp` forever.
#[test]
fn temp_files_of_a_killed_results_writer_are_removed_by_the_next_run() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        "name: tidy\nstages:\n  a: { op: echo, params: { value: 1 } }\n",
    );
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let dir = sb.results().join("tidy");
    for stale in [".runs.parquet.4000000.0.tmp", ".a.md.4000000.3.tmp"] {
        std::fs::write(dir.join(stale), "torn").unwrap();
    }
    std::fs::write(dir.join(".notes.tmp"), "mine").unwrap();
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".notes.tmp", "report.html", "runs.parquet"]);
}

/// #16.13: a stage's `timeout` stops an attempt (the whole process group of a `cmd`, or an
/// in-process op) and fails that instance alone; retries get a fresh deadline.
#[test]
fn a_stage_timeout_kills_its_attempt_and_fails_that_instance_alone() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slow
stages:
  fast:
    op: echo
    params: { value: 1 }
  stuck:
    op: cmd
    timeout: 1s
    retries: 1
    params: { run: "echo try >> tries; sleep 30 & echo $! > sleeper.pid; wait" }
  nap:
    op: echo
    timeout: 1
    params: { value: 2, sleep_ms: 30000 }
"#,
    );
    let t0 = Instant::now();
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_FAILURE);
    assert!(t0.elapsed() < Duration::from_secs(25), "{:?}", t0.elapsed());
    assert_summary(&run, 1, 0, 2, 0);
    let failed: Vec<Value> = run
        .events()
        .into_iter()
        .filter(|e| e["event"] == "failed")
        .collect();
    assert_eq!(
        failed.len(),
        3,
        "stuck twice (one retry), nap once: {failed:?}"
    );
    for e in &failed {
        assert!(
            e["error"].as_str().unwrap().contains("timed out after 1s"),
            "{e}"
        );
    }
    let tries = std::fs::read_to_string(sb.path().join("tries")).unwrap();
    assert_eq!(tries.lines().count(), 2);
    assert!(!outlived(read_pid(&sb.path().join("sleeper.pid"))));
    assert_no_temp_entries(&sb);
    // On Slurm, the array's time limit follows the timeout (a minute above it).
    let plan = sb
        .ablate(&["plan", "p.yaml", "--executor", "slurm"])
        .code(EXIT_OK);
    assert_contains_all(&plan.stdout, &["--time=2 "]);
}

/// #16.2 on a cluster: Slurm signals a task's `ablate exec` with SIGTERM at its time limit or on
/// preemption. It stops the instance as a local run does (its `cmd` group too, nothing
/// half-written kept) and exits 143, where it used to die and leave the `cmd` running.
#[test]
fn slurm_sigterm_to_a_task_stops_its_cmd_and_keeps_nothing_half_written() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: slurm-termed
stages:
  wait:
    op: cmd
    params: { run: "sleep 60 & echo $! > sleeper.pid; wait" }
"#,
    );
    let key = sb.keys("p.yaml", &[])["wait"].clone();
    sb.ablate(&["run", "p.yaml", "--executor", "slurm", "--detach"])
        .code(EXIT_OK);
    let sleeper = read_pid(&sb.path().join("sleeper.pid"));
    let job = Command::new("squeue")
        .args(["-h", "--name", "ablate.slurm-termed.wait", "-o", "%A"])
        .output()
        .unwrap();
    let job = String::from_utf8_lossy(&job.stdout).trim().to_owned();
    assert!(!job.is_empty(), "the task is not in the queue");
    // The batch step is the task's `ablate exec` itself (its script `exec`s it).
    let sent = Command::new("scancel")
        .args(["--batch", "--signal=TERM", &job])
        .status()
        .unwrap();
    assert!(sent.success());
    let alive = outlived(sleeper);
    let _ = Command::new("scancel").arg(&job).status();
    assert!(!alive, "the task's `sleep 60` outlived its SIGTERM");
    let logs = || -> String {
        walk_files(&sb.cache().join("slurm/logs"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "err"))
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    };
    // The task winds down on its own: its message, then its temp entry removed.
    let said = "SIGTERM: stopping the instance";
    let tmp = sb.cache().join("v1/tmp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while (!logs().contains(said) || std::fs::read_dir(&tmp).unwrap().next().is_some())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_contains_all(&logs(), &[said]);
    assert_no_temp_entries(&sb);
    assert!(!sb.entry(&key).exists());
}

/// Every file below `path` (itself when it is a file).
fn walk_files(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_owned()];
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|e| walk_files(&e.path()))
        .collect()
}

// --- Your own script as a stage (#18): params, GPUs, live metrics, checkpoints -----------------

/// A stand-in for a user's training script: records what it was given (argv, `ABLATE_PARAMS`,
/// `CUDA_VISIBLE_DEVICES`, where it started), logs a loss per step to `{out}/metrics.jsonl`,
/// checkpoints every step in `ABLATE_CHECKPOINT` and resumes from it; with `crash_at`, its first
/// attempt dies there.
const FAKE_SCRIPT: &str = r#"
import json, os, sys, time
params = json.load(open(os.environ["ABLATE_PARAMS"]))
ckpt = os.environ["ABLATE_CHECKPOINT"]
out = os.environ["ABLATE_OUT"]
state = os.path.join(ckpt, "state.json")
start = json.load(open(state))["step"] + 1 if os.path.exists(state) else 0
os.makedirs("records", exist_ok=True)
record = {
    "argv": sys.argv[1:], "params": params, "start": start, "pid": os.getpid(),
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "metrics": os.environ["ABLATE_METRICS"],
    "t0": time.time(),
}
name = os.path.join("records", "%s-%d.json" % (os.environ["ABLATE_LABEL"], os.getpid()))
with open(os.environ["ABLATE_METRICS"], "a") as log:
    for step in range(start, params["steps"]):
        log.write(json.dumps({"step": step, "loss": (1 + params["lr"]) / (step + 1)}) + "\n")
        log.flush()
        with open(state, "w") as f:
            json.dump({"step": step}, f)
        if step == params.get("crash_at") and not os.path.exists(os.path.join(ckpt, "crashed")):
            open(os.path.join(ckpt, "crashed"), "w").close()
            sys.exit(3)
        time.sleep(params.get("sleep", 0))
record["t1"] = time.time()
with open(name, "w") as f:
    json.dump(record, f)
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"extra": 1.5}, f)
"#;

/// The records the fake script left, by instance id (several attempts: in start order).
fn script_records(sb: &Sandbox) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in std::fs::read_dir(sb.path().join("records")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let id = name.rsplit_once('-').unwrap().0.to_owned();
        let record: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.entry(id).or_default().push(record);
    }
    for records in out.values_mut() {
        records.sort_by(|a, b| a["t0"].as_f64().partial_cmp(&b["t0"].as_f64()).unwrap());
    }
    out
}

#[test]
fn a_script_gets_its_params_as_a_json_file_and_on_request_as_flags() {
    let sb = Sandbox::new();
    sb.write("fake.py", FAKE_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: byos
stages:
  flags:
    op: cmd
    matrix: { lr: [0.1, 0.25], seed: [0, 1] }
    params: { run: python3 fake.py, args: flags, steps: 2, note: "it's", deps: [fake.py] }
  plain:
    op: cmd
    params: { run: python3 fake.py, steps: 1, lr: 0.5, tag: again }
"#,
    );
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let records = script_records(&sb);
    let got = &records["flags[lr=0.25,seed=1]"][0];
    assert_eq!(
        got["argv"],
        serde_json::json!(["--lr=0.25", "--note=it's", "--seed=1", "--steps=2"])
    );
    assert_eq!(
        got["params"],
        serde_json::json!({"lr": 0.25, "note": "it's", "seed": 1, "steps": 2})
    );
    // Without `args: flags` the command line is as written; `tag` only changes the key.
    let plain = &records["plain"][0];
    assert_eq!(plain["argv"], serde_json::json!([]));
    assert_eq!(plain["params"], serde_json::json!({"lr": 0.5, "steps": 1}));
    // The params file is kept in the entry.
    let key = &sb.keys("p.yaml", &[])["plain"];
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(sb.entry(key).join("ablate-params.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept, plain["params"]);
}

/// A script that parses its flags with argparse as PyTorch scripts do, and writes what it
/// parsed to `seen.json`; `echo.py` writes its `argv` as it came.
const ARGPARSE_SCRIPT: &str = r#"
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--amp", action="store_true")
p.add_argument("--layers", nargs="+", type=int)
p.add_argument("--lr", type=float)
p.add_argument("--offsets", nargs="+", type=float)
p.add_argument("--batch_size", type=int)
p.add_argument("--name")
a = p.parse_args()
with open(os.path.join(os.environ["ABLATE_OUT"], "seen.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "args": vars(a)}, f)
"#;
const ECHO_SCRIPT: &str = r#"
import json, os, sys
with open(os.path.join(os.environ["ABLATE_OUT"], "seen.json"), "w") as f:
    json.dump({"argv": sys.argv[1:]}, f)
"#;

/// #21 (QA §6): `args: flags` passed `--amp=true`, which argparse refuses for a `store_true`
/// switch, and `--layers=[2,3]`, which `nargs="+"` cannot read.
#[test]
fn args_argparse_drives_store_true_switches_nargs_lists_and_floats() {
    let sb = Sandbox::new();
    sb.write("t.py", ARGPARSE_SCRIPT);
    sb.write("echo.py", ECHO_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: argp
stages:
  train:
    op: cmd
    matrix: { amp: [true, false] }
    params:
      run: python3 t.py
      args: argparse
      deps: [t.py]
      layers: [2, 3]
      lr: -1.0e-7
      offsets: [-1.0e-7, 0.5]
      batch_size: 16
      name: "a b; it's"
  hydra:
    op: cmd
    params:
      run: python3 echo.py
      args: hydra
      deps: [echo.py]
      amp: false
      layers: [2, 3]
      lr: 0.001
      model: resnet-50
      path: /data/my runs
      quote: say "hi"
      num: "10"
"#,
    );
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let keys = sb.keys("p.yaml", &[]);
    let seen = |id: &str| -> Value {
        let path = sb.entry(&keys[id]).join("seen.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let on = seen("train[amp=true]");
    assert_eq!(
        on["args"],
        serde_json::json!({
            "amp": true, "layers": [2, 3], "lr": -1e-7, "offsets": [-1e-7, 0.5],
            "batch_size": 16, "name": "a b; it's",
        }),
        "{on}"
    );
    assert_eq!(
        on["argv"],
        serde_json::json!([
            "--amp",
            "--batch_size",
            "16",
            "--layers",
            "2",
            "3",
            "--lr=-1e-7",
            "--name",
            "a b; it's",
            "--offsets",
            "-0.0000001",
            "0.5",
        ])
    );
    // `false` leaves the switch out: argparse's default.
    let off = seen("train[amp=false]");
    assert_eq!(off["args"]["amp"], false, "{off}");
    assert!(!off["argv"].to_string().contains("amp"), "{off}");
    // Hydra overrides, each one word whatever the shell would make of it.
    assert_eq!(
        seen("hydra")["argv"],
        serde_json::json!([
            "amp=false",
            "layers=[2,3]",
            "lr=0.001",
            "model=resnet-50",
            "num=\"10\"",
            "path=\"/data/my runs\"",
            r#"quote="say \"hi\"""#,
        ])
    );
}

/// Also QA report §13: these plan-time refusals had no `file:line:col`, and only the first
/// stage's was reported.
#[test]
fn args_a_value_the_program_cannot_be_given_is_refused_before_anything_runs() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: refused
stages:
  a:
    op: cmd
    params: { run: "touch ran", args: argparse, names: [x, -y] }
  b:
    op: cmd
    params: { run: "touch ran", args: argparse, names: [-z] }
"#,
    );
    let run = sb.ablate(&["plan", "p.yaml"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &[
            "stage `a`",
            "`-y` of param `names`",
            "$ABLATE_PARAMS",
            "--> p.yaml:6:33",
            "stage `b`",
            "`-z` of param `names`",
            "--> p.yaml:9:33",
        ],
    );
    sb.write(
        "q.yaml",
        r#"
name: refused
stages:
  a:
    op: cmd
    params: { run: "touch ran", args: hydra, dir: "/root/$${HOME}" }
"#,
    );
    let run = sb.ablate(&["run", "q.yaml"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(&run.stderr, &["stage `a`", "param `dir`", "interpolation"]);
    assert!(!sb.path().join("ran").exists());
}

#[test]
fn logged_metrics_show_as_they_come_and_land_in_runs_parquet_with_their_steps() {
    let sb = Sandbox::new();
    sb.write("fake.py", FAKE_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: live
stages:
  train:
    op: cmd
    params: { run: python3 fake.py, steps: 6, lr: 1.0, sleep: 0.4 }
"#,
    );
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    let live: Vec<String> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "progress")
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        live.iter()
            .any(|m| m.starts_with("step ") && m.contains("loss")),
        "no live metrics in {live:?}"
    );
    let values = metric_values(&read_parquet(&sb.results().join("live/runs.parquet")));
    for step in 0..6 {
        assert_eq!(
            values[&("train".into(), String::new(), "loss".into(), Some(step))],
            2.0 / (step + 1) as f64
        );
    }
    // The last value of each is the final metric; metrics.json adds its own.
    assert_eq!(
        values[&("train".into(), String::new(), "loss".into(), None)],
        2.0 / 6.0
    );
    assert_eq!(
        values[&("train".into(), String::new(), "extra".into(), None)],
        1.5
    );
    // The entry keeps the log itself (not a link to the checkpoint, which is gone).
    let key = &sb.keys("p.yaml", &[])["train"];
    let log = sb.entry(key).join("metrics.jsonl");
    assert!(
        !std::fs::symlink_metadata(&log)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 6);
    assert!(!sb.cache().join("v1/checkpoints").join(key).exists());
}

#[test]
fn a_failed_or_killed_attempt_resumes_from_its_checkpoint() {
    let sb = Sandbox::new();
    sb.write("fake.py", FAKE_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: resume
stages:
  retried:
    op: cmd
    retries: 1
    params: { run: python3 fake.py, steps: 5, lr: 0.0, crash_at: 2 }
  rerun:
    op: cmd
    params: { run: python3 fake.py, steps: 5, lr: 1.0, crash_at: 1 }
  killed:
    op: cmd
    params: { run: python3 fake.py, steps: 6, lr: 2.0, sleep: 0.5 }
"#,
    );
    let keys = sb.keys("p.yaml", &[]);
    let checkpoint = |id: &str| sb.cache().join("v1/checkpoints").join(&keys[id]);
    // `killed` is killed with ablate (kill -9: no cleanup at all) after it logged a few steps.
    let mut running = Running::spawn(sb.command(&["run", "p.yaml", "--json", "--jobs", "3"]));
    // `retried` (crashed, then resumed) is done before ablate is killed: the kill stops every
    // program it runs (#21).
    running.wait_for("finished", 1, Duration::from_secs(30));
    let state = checkpoint("killed").join("state.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"step\": 2")) {
        assert!(Instant::now() < deadline, "the script never reached step 2");
        std::thread::sleep(Duration::from_millis(20));
    }
    running.child.kill().unwrap();
    let _ = running.finish(Duration::from_secs(10));
    // Its script is stopped with ablate (SIGTERM from the watchdog); wait until it is gone.
    std::thread::sleep(Duration::from_millis(1200));
    // `retried` crashed at step 2 and resumed in its retry; `rerun` crashed and failed.
    let records = script_records(&sb);
    assert_eq!(records["retried"].len(), 1, "{records:?}");
    assert_eq!(records["retried"][0]["start"], 3);
    assert!(!records.contains_key("rerun"));
    assert!(checkpoint("rerun").join("state.json").exists());

    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_eq!(run.ids("started"), ["killed", "rerun"]);
    let records = script_records(&sb);
    assert_eq!(records["rerun"][0]["start"], 2);
    assert!(records["killed"].last().unwrap()["start"].as_i64().unwrap() >= 3);
    // Every step of every curve is in runs.parquet once, from the attempts that resumed too.
    let values = metric_values(&read_parquet(&sb.results().join("resume/runs.parquet")));
    for (stage, steps, lr) in [("retried", 5, 0.0), ("rerun", 5, 1.0), ("killed", 6, 2.0)] {
        for step in 0..steps {
            assert_eq!(
                values.get(&(stage.into(), String::new(), "loss".into(), Some(step))),
                Some(&((1.0 + lr) / (step + 1) as f64)),
                "{stage} step {step}"
            );
        }
        assert!(
            !checkpoint(stage).exists(),
            "{stage}'s checkpoint outlived its entry"
        );
    }
}

#[test]
fn a_script_sees_the_gpus_the_scheduler_gave_it_and_no_other() {
    let sb = Sandbox::new();
    sb.write("fake.py", FAKE_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: gpus
stages:
  half:
    op: cmd
    resources: { gpus: 0.5 }
    matrix: { lr: [1, 2, 3, 4, 5, 6] }
    params: { run: python3 fake.py, steps: 1, sleep: 0.6 }
  whole:
    op: cmd
    resources: { gpus: 1 }
    matrix: { lr: [7, 8] }
    params: { run: python3 fake.py, steps: 1, sleep: 0.6 }
  none:
    op: cmd
    params: { run: python3 fake.py, lr: 9, steps: 1 }
"#,
    );
    // This machine's GPUs, as a Slurm allocation or a user would name them.
    sb.command(&["run", "p.yaml", "--jobs", "8"])
        .env("CUDA_VISIBLE_DEVICES", "7,9")
        .output()
        .map(Run::from)
        .unwrap()
        .code(EXIT_OK);
    let records = script_records(&sb);
    assert_eq!(
        records["none"][0]["cuda"], "",
        "a stage without `gpus` sees none"
    );
    // (device, share, start, end) of every GPU instance.
    let mut spans = Vec::new();
    for (id, rs) in &records {
        let share = match stage_of(id) {
            "half" => 0.5,
            "whole" => 1.0,
            _ => continue,
        };
        let r = &rs[0];
        let device = r["cuda"].as_str().unwrap().to_owned();
        assert!(device == "7" || device == "9", "{id} got {device:?}");
        spans.push((
            device,
            share,
            r["t0"].as_f64().unwrap(),
            r["t1"].as_f64().unwrap(),
        ));
    }
    assert_eq!(spans.len(), 8);
    // At every start, the shares running on that device add up to one at most.
    for (device, _, t, _) in &spans {
        let load: f64 = spans
            .iter()
            .filter(|(d, _, t0, t1)| d == device && t0 <= t && t < t1)
            .map(|(_, share, _, _)| share)
            .sum();
        assert!(
            load <= 1.0 + 1e-9,
            "device {device} held {load} at {t}: {spans:?}"
        );
    }
    // Both devices were used, and two halves shared one at some point.
    assert!(spans.iter().any(|s| s.0 == "7") && spans.iter().any(|s| s.0 == "9"));
    let shared = spans.iter().any(|(device, share, t, _)| {
        *share == 0.5
            && spans
                .iter()
                .filter(|(d, s, t0, t1)| d == device && *s == 0.5 && t0 <= t && t < t1)
                .count()
                == 2
    });
    assert!(shared, "no two halves ever shared a device: {spans:?}");
}

// --- deps: globs and directories (#18) ---

/// A one-stage `cmd` pipeline whose `deps` are `deps`, in a sandbox holding `src/a.py` and
/// `src/m/b.py`.
fn deps_sandbox(deps: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        &format!(
            r#"
name: globs
stages:
  probe:
    op: cmd
    params: {{ run: "true", deps: {deps} }}
"#
        ),
    );
    deps_put(&sb, "src/a.py", "print('a')\n");
    deps_put(&sb, "src/m/b.py", "print('b')\n");
    sb
}

/// Writes `name` below the sandbox, making its directories.
fn deps_put(sb: &Sandbox, name: &str, text: &str) {
    let path = sb.path().join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `plan`'s key, status and detail for the one instance `probe`.
fn deps_probe(sb: &Sandbox) -> (String, String, String) {
    let plan = sb.plan("p.yaml", &[]);
    let probe = &plan["probe"];
    let s = |f: &str| probe[f].as_str().unwrap_or_default().to_owned();
    (s("key"), s("status"), s("detail"))
}

#[test]
fn deps_glob_key_follows_a_matched_file_and_plan_names_it() {
    let sb = deps_sandbox(r#"["src/**/*.py"]"#);
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let (key, status, _) = deps_probe(&sb);
    assert_eq!(status, "cached");

    deps_put(&sb, "src/m/b.py", "print('b2')\n");
    let (changed, status, detail) = deps_probe(&sb);
    assert_ne!(changed, key);
    assert_eq!(status, "run");
    assert_eq!(detail, "deps changed (src/m/b.py)");

    // The same bytes again: the first entry is back.
    deps_put(&sb, "src/m/b.py", "print('b')\n");
    assert_eq!(deps_probe(&sb), (key, "cached".into(), String::new()));
}

#[test]
fn deps_glob_names_added_and_removed_files() {
    let sb = deps_sandbox(r#"["src/**/*.py"]"#);
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let (key, _, _) = deps_probe(&sb);

    deps_put(&sb, "src/m/deep/new.py", "print('new')\n");
    let (added, status, detail) = deps_probe(&sb);
    assert_ne!(added, key);
    assert_eq!(status, "run");
    assert_eq!(detail, "deps changed (src/m/deep/new.py)");

    std::fs::remove_file(sb.path().join("src/m/deep/new.py")).unwrap();
    std::fs::remove_file(sb.path().join("src/a.py")).unwrap();
    let (removed, status, detail) = deps_probe(&sb);
    assert_ne!(removed, key);
    assert_ne!(removed, added);
    assert_eq!(status, "run");
    assert_eq!(detail, "deps changed (src/a.py)");
}

#[test]
fn deps_glob_ignores_files_it_does_not_match() {
    let sb = deps_sandbox(r#"["src/**/*.py"]"#);
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let before = deps_probe(&sb);
    assert_eq!(before.1, "cached");
    deps_put(&sb, "src/notes.txt", "not code\n");
    deps_put(&sb, "src/__pycache__/a.cpython-311.pyc", "bytecode");
    deps_put(&sb, "src/m/__pycache__/b.py", "not source either");
    deps_put(&sb, "src/.hidden.py", "print('hidden')\n");
    deps_put(&sb, "src/.venv/lib/site.py", "print('venv')\n");
    assert_eq!(deps_probe(&sb), before);
}

#[test]
fn deps_directory_is_every_file_below_it() {
    let sb = deps_sandbox("[src/]");
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let before = deps_probe(&sb);
    assert_eq!(before.1, "cached");
    // Hidden files and `__pycache__` are not part of it.
    deps_put(&sb, "src/__pycache__/a.cpython-311.pyc", "bytecode");
    deps_put(&sb, "src/.hidden.py", "print('hidden')\n");
    assert_eq!(deps_probe(&sb), before);

    // Any other file is, whatever its name.
    deps_put(&sb, "src/notes.txt", "notes\n");
    let (added, status, detail) = deps_probe(&sb);
    assert_ne!(added, before.0);
    assert_eq!(status, "run");
    assert_eq!(detail, "deps changed (src/notes.txt)");
    std::fs::remove_file(sb.path().join("src/notes.txt")).unwrap();
    assert_eq!(deps_probe(&sb), before);

    deps_put(&sb, "src/m/b.py", "print('b2')\n");
    std::fs::remove_file(sb.path().join("src/a.py")).unwrap();
    let (changed, status, detail) = deps_probe(&sb);
    assert_ne!(changed, before.0);
    assert_eq!(status, "run");
    assert_eq!(detail, "deps changed (src/a.py, src/m/b.py)");
}

#[test]
fn deps_pattern_matching_nothing_is_an_input_error() {
    let sb = deps_sandbox(r#"["src/**/*.rs", "src/m/*.txt", src/a.py]"#);
    let run = sb.ablate(&["run", "p.yaml"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &[
            "`deps` pattern `src/**/*.rs` of stage `probe` matches no file",
            "`deps` pattern `src/m/*.txt` of stage `probe` matches no file",
            // QA report §13: at the entry, not at the stage's name (`p.yaml:4:3`).
            "--> p.yaml:6:35",
            "--> p.yaml:6:50",
            "paths in `deps` are relative to",
        ],
    );
    assert!(!run.stderr.contains("p.yaml:4:3"), "{}", run.stderr);
    // A `deps` not written under the stage's `params:` is reported at the stage.
    let run = sb
        .ablate(&[
            "plan",
            "p.yaml",
            "--set",
            "probe.params.deps=[nothing/*.py]",
        ])
        .code(EXIT_INVALID_INPUT);
    assert_contains_all(&run.stderr, &["`nothing/*.py`", "--> p.yaml:4:3"]);
    sb.ablate(&["plan", "p.yaml"]).code(EXIT_INVALID_INPUT);
}

/// QA report §13: runs.parquet had a `cmd`'s `run`, `deps` and `args` as parameter columns,
/// though they are not the program's params, and `step` read as `float64` in pandas.
#[test]
fn runs_parquet_has_the_programs_params_as_columns_not_cmds_settings() {
    let sb = Sandbox::new();
    sb.write(
        "train.py",
        "import json, os\nwith open(os.environ['ABLATE_METRICS'], 'a') as f:\n    f.write(json.dumps({'step': 3, 'loss': 1.0}) + '\\n')\n",
    );
    sb.write(
        "p.yaml",
        r#"
name: cols
stages:
  train:
    op: cmd
    params: { run: "python3 train.py", deps: [train.py], args: flags, tag: v1, width: 3 }
    matrix: { lr: [0.1] }
"#,
    );
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let path = sb.results().join("cols/runs.parquet");
    let table = read_parquet(&path);
    let names = |table: &Table| table.column_names().map(str::to_owned).collect::<Vec<_>>();
    let has = names(&table);
    for setting in ["run", "deps", "args"] {
        assert!(!has.iter().any(|n| n == setting), "{setting}: {has:?}");
    }
    for param in ["lr", "width", "tag"] {
        assert!(has.iter().any(|n| n == param), "{param}: {has:?}");
    }
    assert_eq!(
        column(&table, "step"),
        &ColumnData::Int(vec![Some(3), None])
    );

    // A table an earlier version wrote has those columns: the next run drops them from its old
    // rows too, so every row has the same columns.
    let rows = table.num_rows();
    let old = read_parquet(&path)
        .with_column("run", vec!["python3 train.py"; rows])
        .with_column("args", vec!["flags"; rows]);
    ablate_results::write_table(&path, &old).unwrap();
    sb.ablate(&["run", "p.yaml", "--matrix", "train.lr=0.2"])
        .code(EXIT_OK);
    let table = read_parquet(&path);
    let has = names(&table);
    assert!(!has.iter().any(|n| n == "run" || n == "args"), "{has:?}");
    assert_eq!(
        floats(column(&table, "lr")),
        &[Some(0.1), Some(0.1), Some(0.2), Some(0.2)]
    );
}

#[test]
fn deps_manifest_lists_every_matched_file() {
    let sb = deps_sandbox(r#"["src/**/*.py", src/a.py, src/m]"#);
    deps_put(&sb, "src/m/data.csv", "x\n1\n");
    deps_put(&sb, "src/notes.txt", "notes\n");
    sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    let key = &sb.keys("p.yaml", &[])["probe"];
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(sb.entry(key).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let deps: Vec<&str> = manifest["input"]["deps"]
        .as_array()
        .expect("`input.deps` is an array")
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    // Sorted, each file once however many entries match it.
    assert_eq!(deps, ["src/a.py", "src/m/b.py", "src/m/data.csv"]);
}

/// The README's "bring your own script" example, as shipped, with a tiny budget: 12 runs of
/// examples/mnist-style/train.py, its table and its curve plot.
#[test]
fn the_bring_your_own_script_example_runs_with_a_tiny_budget() {
    let sb = Sandbox::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = sb
        .command(&[
            "run",
            "examples/mnist-style/sweep.yaml",
            "--json",
            "--set",
            "train.params.epochs=2",
            "--set",
            "train.params.n_train=100",
        ])
        .current_dir(&root)
        .output()
        .map(Run::from)
        .unwrap()
        .code(EXIT_OK);
    assert_summary(&run, 14, 0, 0, 0);
    let dir = sb.results().join("mnist-style");
    let table = std::fs::read_to_string(dir.join("accuracy.md")).unwrap();
    assert_contains_all(
        &table,
        &["test_acc", "| 0.3 ", "| 1.5 ", "16 (n=3)", "64 (n=3)"],
    );
    assert!(std::fs::metadata(dir.join("curves.png")).unwrap().len() > 1000);
    assert!(dir.join("curves.svg").is_file());
    let values = metric_values(&read_parquet(&dir.join("runs.parquet")));
    let curves = values
        .keys()
        .filter(|(stage, _, metric, step)| {
            stage == "train" && metric == "val_acc" && step.is_some()
        })
        .count();
    assert_eq!(
        curves,
        12 * 2,
        "two epochs of val_acc for each of the 12 runs"
    );
    // From another directory (#21): the script and its deps are found beside the pipeline,
    // and every instance is the one just computed.
    let file = root
        .join("examples/mnist-style/sweep.yaml")
        .canonicalize()
        .unwrap();
    let plan = sb.plan(
        file.to_str().unwrap(),
        &[
            "--set",
            "train.params.epochs=2",
            "--set",
            "train.params.n_train=100",
        ],
    );
    assert_eq!(plan.len(), 14);
    assert!(plan.values().all(|e| e["status"] == "cached"), "{plan:?}");
}

/// #18 on a cluster: a task that died is submitted again and resumes from the checkpoint in the
/// shared cache; its program sees the allocation's GPUs (this cluster has none: nothing set),
/// not a local assignment.
#[test]
fn slurm_a_retried_task_resumes_from_its_checkpoint() {
    require_slurm();
    let sb = Sandbox::new();
    sb.write("fake.py", FAKE_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: slurm-resumed
slurm: { poll_min_s: 0.2, poll_max_s: 1 }
stages:
  train:
    op: cmd
    retries: 1
    params: { run: python3 fake.py, steps: 5, lr: 1.0, crash_at: 2 }
"#,
    );
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_OK);
    assert_summary(&run, 1, 0, 0, 0);
    let records = script_records(&sb);
    assert_eq!(records["train"].len(), 1, "{records:?}");
    assert_eq!(
        records["train"][0]["start"], 3,
        "the retry resumed after step 2"
    );
    assert_eq!(records["train"][0]["cuda"], Value::Null);
    let values = metric_values(&read_parquet(
        &sb.results().join("slurm-resumed/runs.parquet"),
    ));
    for step in 0..5 {
        assert_eq!(
            values[&("train".into(), String::new(), "loss".into(), Some(step))],
            2.0 / (step + 1) as f64
        );
    }
}

// --- Your own script, hardened (#21): each test fails on the code before the fix it names -----

/// A training script that checkpoints every epoch, resumes from its checkpoint, and logs its
/// loss with Python's `json.dumps`, which writes `NaN` once the loss has diverged (from epoch
/// `nan_from` on).
const NAN_SCRIPT: &str = r#"
import json, os
params = json.load(open(os.environ["ABLATE_PARAMS"]))
state = os.path.join(os.environ["ABLATE_CHECKPOINT"], "state.json")
start = json.load(open(state))["epoch"] + 1 if os.path.exists(state) else 0
with open(os.environ["ABLATE_METRICS"], "a") as log:
    for epoch in range(start, params["epochs"]):
        loss = float("nan") if epoch >= params["nan_from"] else 1.0 / (epoch + 1)
        log.write(json.dumps({"step": epoch, "loss": loss, "lr": params["lr"]}) + "\n")
        log.flush()
        with open(state, "w") as f:
            json.dump({"epoch": epoch}, f)
"#;

/// #21.1: `NaN` in the metrics log failed the first attempt as a parse error, the log went with
/// it while the checkpoint stayed, and the retry (which resumed, trained nothing) was committed
/// as done with an empty log.
#[test]
fn a_nan_loss_fails_as_diverged_and_no_retry_commits_an_entry_without_its_log() {
    let sb = Sandbox::new();
    sb.write("train.py", NAN_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: nan
stages:
  train:
    op: cmd
    retries: 1
    params: { run: python3 train.py, epochs: 6, nan_from: 3, lr: 1.0 }
"#,
    );
    let key = sb.keys("p.yaml", &[])["train"].clone();
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_FAILURE);
    assert_eq!(run.ids("started").len(), 2, "one attempt and its retry");
    let failed: Vec<String> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "failed")
        .map(|e| e["error"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    for error in &failed {
        assert!(
            error.contains("diverged: `loss` = NaN at step 3")
                && error.contains("diverged: record"),
            "{error}"
        );
    }
    assert!(!sb.entry(&key).exists(), "a diverged run was cached");
    // Its checkpoint holds the diverged state: it went, with its log (a retry starts over,
    // and never commits an entry without the curve), and the failed attempt's log is kept.
    assert!(!sb.cache().join("v1/checkpoints").join(&key).exists());
    let kept = std::fs::read_to_string(
        sb.cache()
            .join("v1/failed")
            .join(&key)
            .join("metrics.jsonl"),
    )
    .unwrap();
    assert!(kept.lines().nth(3).unwrap().contains("NaN"), "{kept}");
    // The short key of the FAILED line finds the attempt's files (QA of #21).
    let shown = sb.ablate(&["show", &key[..8]]).code(EXIT_OK);
    assert_contains_all(&shown.stdout, &["its last attempt failed", "metrics.jsonl"]);
    let shown: Value = serde_json::from_str(
        &sb.ablate(&["show", &key[..8], "--json"])
            .code(EXIT_OK)
            .stdout,
    )
    .unwrap();
    assert_eq!(shown["status"], "failed");

    // Recorded as a result: the same key, its curve up to the divergence, no final values.
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--set", "train.diverged=record"])
        .code(EXIT_OK);
    assert_eq!(run.ids("started"), ["train"]);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(sb.entry(&key).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["status"],
        serde_json::json!({"state": "diverged", "metric": "loss", "step": 3, "value": "NaN"})
    );
    let steps: Vec<(String, Option<u64>)> = manifest["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_owned(), m["step"].as_u64()))
        .collect();
    // The steps before the divergence, and no final values.
    assert_eq!(
        steps,
        [0, 0, 1, 1, 2, 2]
            .iter()
            .zip(["loss", "lr", "loss", "lr", "loss", "lr"])
            .map(|(s, n)| (n.to_owned(), Some(*s as u64)))
            .collect::<Vec<_>>()
    );
    assert!(!sb.cache().join("v1/checkpoints").join(&key).exists());
    let runs = read_parquet(&sb.results().join("nan/runs.parquet"));
    assert!(
        strs(column(&runs, "status"))
            .iter()
            .all(|s| s.as_deref() == Some("diverged")),
        "runs.parquet: {:?}",
        strs(column(&runs, "status"))
    );
    // A diverged entry is a result: the next run is a cache hit.
    let again = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert!(again.ids("started").is_empty());
    // `cache ls` and `show` tell it from a done one (QA of #21).
    let ls = sb.ablate(&["cache", "ls"]).code(EXIT_OK);
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&key[..8]))
        .unwrap();
    assert!(row.contains("  diverged  "), "{}", ls.stdout);
    assert!(ls.stdout.starts_with("KEY "), "{}", ls.stdout);
    let listed: Value =
        serde_json::from_str(&sb.ablate(&["cache", "ls", "--json"]).code(EXIT_OK).stdout).unwrap();
    assert_eq!(listed[0]["status"], "diverged");
    assert_eq!(
        listed[0]["status_detail"],
        "diverged: `loss` = NaN at step 3"
    );
    let shown: Value =
        serde_json::from_str(&sb.ablate(&["show", &key, "--json"]).code(EXIT_OK).stdout).unwrap();
    assert_eq!(shown["status"], "diverged");
    assert_eq!(shown["path"], listed[0]["path"]);
}

/// A training script that ignores SIGTERM (as one busy in native code, or with a handler that
/// saves and carries on, would): it stops only when killed.
const STUBBORN_SCRIPT: &str = r#"
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
state = os.path.join(os.environ["ABLATE_CHECKPOINT"], "state.json")
start = json.load(open(state))["step"] + 1 if os.path.exists(state) else 0
os.makedirs("records", exist_ok=True)
with open(os.path.join("records", "%d.json" % os.getpid()), "w") as f:
    json.dump({"start": start, "t0": time.time()}, f)
with open("trainer.pid", "w") as f:
    f.write(str(os.getpid()))
with open(os.environ["ABLATE_METRICS"], "a") as log:
    for step in range(start, 40):
        log.write(json.dumps({"step": step, "loss": 1.0 / (step + 1)}) + "\n")
        log.flush()
        with open(state, "w") as f:
            json.dump({"step": step}, f)
        time.sleep(0.2 if os.path.exists("slow") else 0.01)
"#;

/// #21.2: `kill -9` of ablate left its trainings running, and an immediate rerun trained the
/// same key beside the orphan: both appended to one checkpoint and one metrics log.
#[test]
fn a_killed_ablate_takes_its_training_with_it_and_a_rerun_never_trains_beside_it() {
    let sb = Sandbox::new();
    sb.write("train.py", STUBBORN_SCRIPT);
    sb.write("slow", "");
    sb.write(
        "p.yaml",
        r#"
name: orphan
stages:
  train:
    op: cmd
    params: { run: python3 train.py }
"#,
    );
    let key = sb.keys("p.yaml", &[])["train"].clone();
    let state = sb
        .cache()
        .join("v1/checkpoints")
        .join(&key)
        .join("state.json");
    let mut first = Running::spawn(sb.command(&["run", "p.yaml", "--json"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"step\": 2")) {
        assert!(Instant::now() < deadline, "the script never reached step 2");
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphan = read_pid(&sb.path().join("trainer.pid"));
    // What ablate notes as the program: the leader of its process group (QA of #21).
    // SAFETY: getpgid has no memory-safety preconditions.
    let program = unsafe { libc::getpgid(orphan) };
    let dead = first.child.id();
    first.child.kill().unwrap();
    let _ = first.finish(Duration::from_secs(10));
    // At once, as a user would: this run must wait for the orphan, not train beside it.
    let second = Running::spawn(sb.command(&["run", "p.yaml", "--json"]));
    let t_kill = Instant::now();
    while process_alive(orphan) {
        // SIGTERM is ignored: the kill comes 5 s later (on the old code, never: the orphan
        // would train on for 8 s).
        assert!(
            t_kill.elapsed() < Duration::from_secs(7),
            "the training outlived the ablate that started it"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        t_kill.elapsed() > Duration::from_secs(4),
        "it ignores SIGTERM"
    );
    std::fs::remove_file(sb.path().join("slow")).unwrap();
    let gone = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (code, lines, stderr) = second.finish(Duration::from_secs(60));
    assert_eq!(code, Some(EXIT_OK), "{stderr}");
    let events = events_of(&lines.join("\n"));
    assert!(
        events.iter().any(|e| e["event"] == "progress"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!(
                    "waiting: the programs of ablate pid {dead}, which died, still hold this key \
                     (program pid {program}, with its process group)"
                )))),
        "the waiting run did not say why: {lines:?}"
    );
    // The rerun's attempt started once the orphan was gone (within the test's polling slack),
    // and resumed from its checkpoint.
    let mut records: Vec<Value> = std::fs::read_dir(sb.path().join("records"))
        .unwrap()
        .map(|e| {
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    records.sort_by(|a, b| a["t0"].as_f64().partial_cmp(&b["t0"].as_f64()).unwrap());
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records[1]["t0"].as_f64().unwrap() > gone - 0.5,
        "the rerun trained beside the orphan: {records:?}, orphan gone at {gone}"
    );
    assert!(records[1]["start"].as_i64().unwrap() >= 3);
    // One line per step, in order (a step killed after its line and before its checkpoint is
    // logged again, and counted once).
    let log = std::fs::read_to_string(sb.entry(&key).join("metrics.jsonl")).unwrap();
    let steps: Vec<i64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        steps.windows(2).all(|w| w[1] == w[0] + 1 || w[1] == w[0]),
        "{steps:?}"
    );
    assert_eq!(*steps.last().unwrap(), 39);
    assert_no_temp_entries(&sb);
}

/// #21.3: four PyTorch instances at `--jobs 2` on 2 cores ran 6.4x slower than with one thread
/// each: a program got `ABLATE_THREADS` but not the variables numeric libraries read.
#[test]
fn a_program_gets_thread_counts_from_its_cpu_share_unless_the_user_set_them() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: threads
stages:
  env:
    op: cmd
    resources: { cpus: 2 }
    params: { run: "env > {out}/env.txt" }
"#,
    );
    let key = sb.keys("p.yaml", &[])["env"].clone();
    let env_of = || -> BTreeMap<String, String> {
        std::fs::read_to_string(sb.entry(&key).join("env.txt"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    sb.ablate(&["run", "p.yaml", "--jobs", "2"]).code(EXIT_OK);
    let env = env_of();
    for var in [
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "ABLATE_THREADS",
    ] {
        assert_eq!(env.get(var).map(String::as_str), Some("2"), "{var}");
    }
    // #21.11: the instance id is the key (runs.parquet's `instance`), the label beside it.
    assert_eq!(env["ABLATE_INSTANCE"], key);
    assert_eq!(env["ABLATE_LABEL"], "env");

    let run = Run::from(
        sb.command(&["run", "p.yaml", "--jobs", "2", "--force", "env"])
            .env("OMP_NUM_THREADS", "7")
            .output()
            .unwrap(),
    )
    .code(EXIT_OK);
    drop(run);
    let env = env_of();
    assert_eq!(env["OMP_NUM_THREADS"], "7", "the user's own setting wins");
    assert_eq!(env["MKL_NUM_THREADS"], "2");
}

/// #21.13: `{in.STAGE}` put every input path into one `sh -c` argument, which failed past about
/// 1,100 inputs with "Argument list too long", after all of them had run.
#[test]
fn a_gathering_program_reads_5000_inputs_from_a_file_and_a_line_that_cannot_fit_is_refused_at_plan_time()
 {
    let sb = Sandbox::new();
    let values: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let pipeline = |run: &str| {
        format!(
            r#"
name: wide
stages:
  items:
    op: echo
    matrix: {{ value: [{}] }}
  join:
    op: cmd
    needs: [items]
    gather: true
    params: {{ run: "{run}" }}
"#,
            values.join(", ")
        )
    };
    sb.write(
        "join.py",
        r#"
import json, os
inputs = json.load(open(os.environ["ABLATE_INPUTS"]))
assert all(os.path.isfile(os.path.join(i["path"], "manifest.json")) for i in inputs)
assert {i["stage"] for i in inputs} == {"items"}
with open(os.path.join(os.environ["ABLATE_OUT"], "metrics.json"), "w") as f:
    json.dump({"n": len(inputs), "sum": sum(i["params"]["value"] for i in inputs),
               "labelled": sum(i["labels"]["value"] == i["params"]["value"] for i in inputs)}, f)
"#,
    );
    sb.write("p.yaml", &pipeline("python3 join.py"));
    let first = sb.keys("p.yaml", &[])["items[value=0.0]"].clone();
    sb.write("too_long.yaml", &pipeline("ls {in.items} > {out}/all.txt"));
    for command in ["plan", "run"] {
        let refused = sb
            .ablate(&[command, "too_long.yaml"])
            .code(EXIT_INVALID_INPUT);
        assert_contains_all(
            &refused.stderr,
            &[
                "stage `join`",
                "`{in.items}` expands to 5000 paths",
                "$ABLATE_INPUTS",
                // QA report §13: at the stage's `run`, with the line, like other plan errors.
                "--> too_long.yaml:11:15",
            ],
        );
    }
    assert!(!sb.entry(&first).exists(), "the refused run ran its inputs");

    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--jobs", "2"])
        .code(EXIT_OK);
    assert_summary(&run, 5001, 0, 0, 0);
    let values = metric_values(&read_parquet(&sb.results().join("wide/runs.parquet")));
    let at = |m: &str| values[&("join".into(), String::new(), m.into(), None)];
    assert_eq!(at("n"), 5000.0);
    assert_eq!(at("sum"), (4999 * 5000 / 2) as f64);
    assert_eq!(at("labelled"), 5000.0);
}

/// #21.1: the built-in trainers diverge as a `cmd` does: a failure naming the step by default,
/// and with `diverged: record` a result holding the curve so far (and no model).
#[test]
fn the_built_in_trainers_record_a_divergence_when_asked() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: blowup
stages:
  points:
    op: data.toy2d
    params: { kind: moons, n_train: 64, n_test: 64 }
  flow:
    op: train.flow
    needs: [points]
    params: { hidden: 4, steps: 2, epochs: 5, batch: 16, lr: 1.0e30 }
  text:
    op: data.text
    params: { source: synthetic, docs: 50 }
  lm:
    op: train.lm
    needs: [text]
    params: { d_model: 8, layers: 1, heads: 2, d_ff: 16, seq_len: 16, steps: 20, batch: 2, lr: 1.0e30, warmup: 0, clip: 1.0e30 }
"#,
    );
    let keys = sb.keys("p.yaml", &[]);
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_FAILURE);
    let errors: BTreeMap<String, String> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "failed")
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        errors["flow"].starts_with("training diverged: `loss` = ")
            && errors["flow"].contains("at step 1"),
        "{errors:?}"
    );
    assert!(
        errors["lm"].starts_with("training diverged: `"),
        "{errors:?}"
    );

    sb.ablate(&[
        "run",
        "p.yaml",
        "--json",
        "--set",
        "defaults.diverged=record",
    ])
    .code(EXIT_OK);
    for stage in ["flow", "lm"] {
        let dir = sb.entry(&keys[stage]);
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(
            manifest["status"]["state"], "diverged",
            "{stage}: {manifest}"
        );
        assert!(dir.join("history.parquet").exists(), "{stage}");
        assert!(!dir.join("model.safetensors").exists(), "{stage}");
    }
}

/// A training that diverges (`loss` = NaN) when `lr` is over 100.
const DIVERGING_SCRIPT: &str = r#"
import json, os
p = json.load(open(os.environ["ABLATE_PARAMS"]))
with open(os.environ["ABLATE_METRICS"], "a") as log:
    log.write(json.dumps({"step": 0, "loss": float("nan") if p["lr"] > 100 else 0.5}) + "\n")
"#;

/// #21: `ablate plan` said "run: new" for the stages downstream of a cached diverged entry,
/// which `ablate run` skips.
#[test]
fn plan_says_the_stages_after_a_cached_diverged_entry_will_be_skipped() {
    let sb = Sandbox::new();
    sb.write("t.py", DIVERGING_SCRIPT);
    sb.write(
        "p.yaml",
        r#"
name: div
stages:
  train:
    op: cmd
    diverged: record
    matrix: { lr: [1, 1000] }
    params: { run: python3 t.py, deps: [t.py] }
  eval:
    op: cmd
    needs: [train]
    params: { run: "true" }
  post:
    op: cmd
    needs: [eval]
    params: { run: "true" }
  table:
    op: report.table
    needs: [train]
    params: { rows: [lr], metric: loss }
"#,
    );
    // The first run computes `train` (one diverges), and skips what needs the diverged one.
    sb.ablate(&["run", "p.yaml"]);
    // Now the diverged entry is cached: the new `eval` param makes `eval` and `post` rerun.
    let set = ["--set", "+eval.params.v=2"];
    let plan = sb.ablate(&["plan", "p.yaml", set[0], set[1]]).code(EXIT_OK);
    assert_contains_all(
        &plan.stdout,
        &[
            "7 instances, 3 cached, 2 to run, 2 skipped (an input diverged)",
            "eval (cmd): 2 instances, 0 cached, 1 skipped",
            "lr=1000  skip: input `train[lr=1000]` diverged",
            "lr=1000  skip: `train[lr=1000]` diverged upstream",
        ],
    );
    // A report takes a diverged input: it is not skipped.
    let table = plan
        .stdout
        .split("\ntable ")
        .nth(1)
        .expect("the table stage");
    assert!(!table.contains("skip"), "{}", plan.stdout);
    let planned: BTreeSet<String> = sb
        .plan("p.yaml", &set)
        .into_iter()
        .filter(|(_, v)| v["status"] == "skip")
        .map(|(id, _)| id)
        .collect();
    let run = sb.ablate(&["run", "p.yaml", set[0], set[1], "--json"]);
    let skipped: BTreeSet<String> = ids_of(&run.events(), "skipped").into_iter().collect();
    assert_eq!(planned, skipped);
    assert_eq!(
        skipped,
        BTreeSet::from(["eval[lr=1000]".to_owned(), "post[lr=1000]".to_owned()])
    );
}

/// #21: `ablate plan` said "run: new" for an instance that resumes from the checkpoint an
/// earlier, failed attempt left.
#[test]
fn plan_says_when_a_run_resumes_from_an_earlier_attempts_checkpoint() {
    let sb = Sandbox::new();
    sb.write(
        "t.py",
        r#"
import json, os, sys
p = json.load(open(os.environ["ABLATE_PARAMS"]))
if p["save"]:
    open(os.path.join(os.environ["ABLATE_CHECKPOINT"], "state.json"), "w").write("{}")
if os.path.exists("bug"):
    sys.exit("broken on purpose")
"#,
    );
    sb.write("bug", "");
    sb.write(
        "p.yaml",
        r#"
name: resume
stages:
  train:
    op: cmd
    matrix: { save: [true, false] }
    params: { run: python3 t.py, deps: [t.py] }
"#,
    );
    sb.ablate(&["run", "p.yaml"]).code(EXIT_FAILURE);
    let plan = sb.ablate(&["plan", "p.yaml"]).code(EXIT_OK);
    let line = |label: &str| -> String {
        plan.stdout
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label} in {}", plan.stdout))
            .to_owned()
    };
    assert!(
        line("save=true")
            .ends_with("run: new (an earlier attempt left a checkpoint to resume from)"),
        "{}",
        plan.stdout
    );
    // An attempt that saved nothing left nothing to resume from (its metrics log is empty).
    assert!(line("save=false").ends_with("run: new"), "{}", plan.stdout);
    let json = sb.plan("p.yaml", &[]);
    assert!(
        json["train[save=true]"]["detail"]
            .as_str()
            .unwrap()
            .contains("checkpoint"),
        "{json:?}"
    );
}

// --- Results a user can read without a trap (#21) ----------------------------------------------

/// A sweep's training script: a `val_acc` per step, a final `test_acc`; it fails while a file
/// `bug-<lr>-<seed>` exists (a bug the user fixes between runs).
const SWEEP_SCRIPT: &str = r#"
import json, os, sys
p = json.load(open(os.environ["ABLATE_PARAMS"]))
if os.path.exists("bug-%s-%s" % (p["lr"], p["seed"])):
    sys.exit("broken on purpose")
with open(os.environ["ABLATE_METRICS"], "a") as log:
    for step in range(3):
        log.write(json.dumps({"step": step, "val_acc": 0.5 + step / 10 + p["seed"] / 100}) + "\n")
with open(os.path.join(os.environ["ABLATE_OUT"], "metrics.json"), "w") as f:
    json.dump({"test_acc": 0.9 - p["lr"] / 10 + p["seed"] / 100 + p["extra"]}, f)
"#;

/// 2 learning rates × 3 seeds of [`SWEEP_SCRIPT`], a table, a strict table and a plot.
const SWEEP: &str = r#"
name: sweep
stages:
  train:
    op: cmd
    matrix: { lr: [0.1, 1], seed: [0, 1, 2] }
    params: { run: python3 sweep.py, deps: [sweep.py], extra: 0 }
  accuracy:
    op: report.table
    needs: [train]
    params: { rows: [lr], metric: test_acc }
  strict_accuracy:
    op: report.table
    needs: [train]
    strict: true
    params: { rows: [lr], metric: test_acc }
  curves:
    op: report.plot
    needs: [train]
    params: { kind: curve, y: val_acc, group: lr }
"#;

fn sweep_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("sweep.py", SWEEP_SCRIPT);
    sb.write("p.yaml", SWEEP);
    sb
}

/// #21: one failed instance skipped every report of its stage. The reports build from the
/// five that finished, marking the gap, unless `strict`; the run still fails; and once the
/// bug is fixed the next run builds the complete reports instead of serving the partial ones.
#[test]
fn a_failed_instance_leaves_marked_reports_that_the_fixed_run_replaces() {
    let sb = sweep_sandbox();
    sb.write("bug-1-1", "");
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--jobs", "2"])
        .code(EXIT_FAILURE);
    assert_summary(&run, 5 + 2, 0, 1, 1);
    assert_eq!(run.ids("skipped"), ["strict_accuracy"]);
    let events = run.events();
    let finished = |id: &str| {
        events
            .iter()
            .find(|e| e["event"] == "finished" && e["id"] == id)
            .unwrap_or_else(|| panic!("`{id}` did not finish"))
            .clone()
    };
    assert_eq!(finished("accuracy")["missing_inputs"], 1);
    let dir = sb.results().join("sweep");
    let md = std::fs::read_to_string(dir.join("accuracy.md")).unwrap();
    assert_contains_all(
        &md,
        &[
            "| lr  |                               test_acc (n=3) |",
            "| 1   | 0.810 ± 0.014 (n=2, 1 failed) [0.800, 0.820] |",
            "1 of 6 inputs is not in the table: `train[lr=1,seed=1]` (failed).",
        ],
    );
    let table = read_parquet(&dir.join("accuracy.parquet"));
    assert_eq!(
        strs(column(&table, "test_acc.missing")),
        [None, Some("1 failed".to_owned())]
    );
    assert_eq!(ints(column(&table, "test_acc.n")), [Some(3), Some(2)]);
    let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
    assert!(
        svg.contains("left out: 1 failed"),
        "the plot says what it left out"
    );
    assert!(dir.join("curves.png").is_file());
    assert!(!dir.join("strict_accuracy.md").exists());
    // The partial reports are not under their plan keys.
    let keys = sb.keys("p.yaml", &[]);
    assert_ne!(finished("accuracy")["key"], keys["accuracy"].as_str());
    // The plain line says so too.
    let plain = sb.ablate(&["run", "p.yaml"]).code(EXIT_FAILURE);
    assert_contains_all(
        &plain.stderr,
        &[
            "accuracy (without 1 input that did not finish)",
            "skipped",
            "strict_accuracy (needs `train[lr=1,seed=1]`, which failed)",
        ],
    );

    // Fixed: the complete reports are built, under their own keys.
    std::fs::remove_file(sb.path().join("bug-1-1")).unwrap();
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_eq!(
        run.ids("started"),
        [
            "accuracy",
            "curves",
            "strict_accuracy",
            "train[lr=1,seed=1]"
        ]
    );
    let md = std::fs::read_to_string(dir.join("accuracy.md")).unwrap();
    assert!(!md.contains("failed"), "{md}");
    assert_contains_all(&md, &["| 1   | 0.810 ± 0.010 [0.800, 0.820] |"]);
    let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
    assert!(!svg.contains("left out"));
    let events = run.events();
    let accuracy = events
        .iter()
        .find(|e| e["event"] == "finished" && e["id"] == "accuracy")
        .unwrap();
    assert_eq!(accuracy["key"], keys["accuracy"].as_str());
}

/// #21: after a few `--set` runs, runs.parquet holds every variant under one label, and the
/// README's recipe averaged 9 rows per cell of a 3-seed sweep. `current` selects the latest
/// plan's rows, `final` the final values, and the label shows what `--set` changed.
#[test]
fn current_selects_the_latest_plans_rows_after_set_runs() {
    let sb = sweep_sandbox();
    for set in [
        &[][..],
        &["--set", "train.params.extra=0.05"],
        &["--set", "train.params.extra=0.1"],
    ] {
        let mut args = vec!["run", "p.yaml", "--json", "--jobs", "2"];
        args.extend_from_slice(set);
        sb.ablate(&args).code(EXIT_OK);
    }
    let runs = sb.results().join("sweep/runs.parquet");
    // (lr, label) of each final `test_acc` row, all of them or the current ones.
    let rows = |only_current: bool| {
        let t = read_parquet(&runs);
        let (metric, lr, label) = (
            strs(column(&t, "metric")),
            floats(column(&t, "lr")),
            strs(column(&t, "label")),
        );
        let (current, fin) = (column(&t, "current"), column(&t, "final"));
        let (ColumnData::Bool(current), ColumnData::Bool(fin)) = (current, fin) else {
            panic!("`current` and `final` are booleans");
        };
        let mut per_lr: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in 0..t.num_rows() {
            if metric[row].as_deref() == Some("test_acc")
                && fin[row] == Some(true)
                && (!only_current || current[row] == Some(true))
            {
                per_lr
                    .entry(lr[row].unwrap().to_string())
                    .or_default()
                    .push(label[row].clone().unwrap());
            }
        }
        per_lr
    };
    let all = rows(false);
    assert_eq!(all["0.1"].len(), 9, "three variants of three seeds");
    let current = rows(true);
    assert_eq!(current["0.1"].len(), 3);
    assert_eq!(current["1"].len(), 3);
    assert!(current["0.1"].contains(&"lr=0.1,seed=2 (set: extra=0.1)".to_owned()));
    // The stepped values are not final: 3 steps + 1 final per instance and metric.
    let t = read_parquet(&runs);
    let steps = ints(column(&t, "step"));
    let ColumnData::Bool(fin) = column(&t, "final") else {
        panic!()
    };
    assert!((0..t.num_rows()).all(|r| fin[r] == Some(steps[r].is_none())));
    // Back to the file's own plan, from the cache: `current` follows.
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&run, 0, 6 + 3, 0, 0);
    let current = rows(true);
    assert_eq!(current["0.1"].len(), 3);
    assert!(current["0.1"].contains(&"lr=0.1,seed=2".to_owned()));
}

/// #21: a diverged result (`diverged: record`) is `diverged` on its rows of runs.parquet and
/// in the table, what maps over it is skipped saying so, and the summary counts it. No op of
/// this test diverges on demand, so the entry of a finished run is marked diverged the way the
/// executor would have written it (status and checksum), as if another run had computed it.
#[test]
fn a_diverged_result_is_marked_in_runs_parquet_the_table_and_the_run() {
    let sb = sweep_sandbox();
    let train_only = "name: sweep\nstages:\n  train:\n    op: cmd\n    diverged: record\n    \
                      matrix: { lr: [0.1, 1], seed: [0, 1, 2] }\n    \
                      params: { run: python3 sweep.py, deps: [sweep.py], extra: 0 }\n";
    sb.write("train.yaml", train_only);
    sb.ablate(&["run", "train.yaml", "--json", "--jobs", "2"])
        .code(EXIT_OK);
    let keys = sb.keys("train.yaml", &[]);
    let entry = sb.entry(&keys["train[lr=1,seed=0]"]);
    let path = entry.join("manifest.json");
    let mut m: ablate_cache::Manifest =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m.status = ablate_cache::EntryStatus::diverged("loss", Some(2), f64::NAN);
    m.started_at_us += 1;
    m.checksum = None;
    m.checksum = Some(m.compute_checksum());
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();

    let full = format!(
        "{train_only}  eval:\n    op: cmd\n    needs: [train]\n    \
         params: {{ run: \"echo '{{\\\"score\\\": 1}}' > {{out}}/metrics.json\" }}\n  \
         accuracy:\n    op: report.table\n    needs: [train]\n    \
         params: {{ rows: [lr], metric: test_acc }}\n  \
         scores:\n    op: report.table\n    needs: [eval]\n    \
         params: {{ rows: [lr], metric: score }}\n"
    );
    sb.write("p.yaml", &full);
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&run, 5 + 2, 6, 0, 1);
    assert_eq!(run.summary()["cached_diverged"], 1);
    let events = run.events();
    let cached = events
        .iter()
        .find(|e| e["event"] == "cached" && e["id"] == "train[lr=1,seed=0]")
        .unwrap();
    assert_eq!(cached["status"], "diverged");
    assert_eq!(cached["diverged"]["metric"], "loss");
    let skipped = events.iter().find(|e| e["event"] == "skipped").unwrap();
    assert_eq!(
        (&skipped["id"], &skipped["because"], &skipped["cause"]),
        (
            &Value::from("eval[lr=1,seed=0]"),
            &Value::from("train[lr=1,seed=0]"),
            &Value::from("diverged")
        )
    );
    let dir = sb.results().join("sweep");
    let t = read_parquet(&dir.join("runs.parquet"));
    let (label, status) = (strs(column(&t, "label")), strs(column(&t, "status")));
    for row in 0..t.num_rows() {
        let want = if label[row].as_deref() == Some("lr=1,seed=0") {
            "diverged"
        } else {
            "done"
        };
        assert_eq!(status[row].as_deref(), Some(want), "{:?}", label[row]);
    }
    let md = std::fs::read_to_string(dir.join("accuracy.md")).unwrap();
    assert_contains_all(
        &md,
        &["(n=2, 1 diverged)", "`train[lr=1,seed=0]` (diverged)"],
    );
    let md = std::fs::read_to_string(dir.join("scores.md")).unwrap();
    assert_contains_all(
        &md,
        &["(n=2, 1 diverged)", "`eval[lr=1,seed=0]` (diverged)"],
    );

    let plain = sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    assert_contains_all(
        &plain.stderr,
        &[
            "train[lr=1,seed=0]  (diverged: `loss` = NaN at step 2)",
            "eval[lr=1,seed=0] (needs `train[lr=1,seed=0]`, which diverged)",
            "cached (1 diverged)",
        ],
    );
}

/// #21 (7): a report metric no input has failed at run time as "observation 0 has no metric".
#[test]
fn a_report_metric_no_input_has_names_the_nearest() {
    let sb = sweep_sandbox();
    sb.write(
        "p.yaml",
        &SWEEP.replace(
            "params: { rows: [lr], metric: test_acc }\n  strict",
            "params: { rows: [lr], metric: test_accc }\n  strict",
        ),
    );
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_FAILURE);
    let failed = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "failed")
        .unwrap();
    assert_eq!(failed["id"], "accuracy");
    assert_contains_all(
        failed["error"].as_str().unwrap(),
        &[
            "no input has the metric `test_accc`; did you mean `test_acc`? (all 6 inputs have it); \
             the inputs have: `test_acc`, `val_acc`",
        ],
    );
}

/// #21.1, as a new user found it: a training whose loss went NaN at epoch 2 trained on to its
/// last epoch, and an evaluation's undefined AUC (`NaN` in `metrics.json`) failed as "training
/// diverged … try a smaller learning rate".
#[test]
fn a_divergence_stops_the_training_and_a_nan_final_value_is_not_one() {
    let sb = Sandbox::new();
    sb.write(
        "train.py",
        r#"
import json, os, time
with open(os.environ["ABLATE_METRICS"], "a") as log:
    for epoch in range(20):
        log.write(json.dumps({"step": epoch, "loss": float("nan") if epoch >= 2 else 1.0}) + "\n")
        log.flush()
        time.sleep(0.5)
"#,
    );
    sb.write(
        "p.yaml",
        r#"
name: stop
stages:
  train:
    op: cmd
    params: { run: python3 train.py }
  auc:
    op: cmd
    params:
      run: "echo '{\"acc\": 0.9, \"auc\": NaN}' > {out}/metrics.json"
  blank:
    op: cmd
    params:
      run: "echo '{\"acc\": 0.9, \"auc\": null}' > {out}/metrics.json"
"#,
    );
    let keys = sb.keys("p.yaml", &[]);
    let run = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_FAILURE);
    let errors: BTreeMap<String, String> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "failed")
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        errors["train"].contains("`loss` = NaN at step 2"),
        "{errors:?}"
    );
    let logged = std::fs::read_to_string(
        sb.cache()
            .join("v1/failed")
            .join(&keys["train"])
            .join("metrics.jsonl"),
    )
    .unwrap();
    assert!(
        logged.lines().count() < 20,
        "it trained to the end:\n{logged}"
    );
    assert!(
        errors["auc"].contains("`auc` = NaN")
            && errors["auc"].contains("write `null`")
            && !errors["auc"].contains("diverged"),
        "{errors:?}"
    );
    let values = metric_values(&read_parquet(&sb.results().join("stop/runs.parquet")));
    assert_eq!(
        values.get(&("blank".into(), String::new(), "acc".into(), None)),
        Some(&0.9)
    );
    assert!(!values.contains_key(&("blank".into(), String::new(), "auc".into(), None)));
}

/// A new user's sweep ran `python3 train.py` without `deps`: edits to the script silently reused
/// the cached results (QA of #21). `plan` and `run` now say so.
#[test]
fn a_script_run_but_not_in_deps_is_warned_about() {
    let sb = Sandbox::new();
    sb.write("train.py", "print(1)\n");
    sb.write(
        "p.yaml",
        r#"
name: undeclared
stages:
  bare:
    op: cmd
    params: { run: python3 train.py --epochs 1 }
  declared:
    op: cmd
    params: { run: python3 ./train.py, deps: ["*.py"] }
"#,
    );
    for command in ["plan", "run"] {
        let out = sb.ablate(&[command, "p.yaml"]).code(EXIT_OK);
        assert_contains_all(
            &out.stderr,
            &["warning: stage `bare` runs `train.py`, which is not in its `deps`"],
        );
        assert!(!out.stderr.contains("stage `declared`"), "{}", out.stderr);
    }
}

/// #21 (QA §7): a `--set`/`--matrix` run published its report tables and plots over the plain
/// pipeline's, and nothing said they were a variant's.
#[test]
fn a_variant_s_published_reports_name_its_overrides_and_the_plain_run_restores_them() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: var
stages:
  a:
    op: echo
    matrix: { value: [1, 2] }
    params: { sleep_ms: 0 }
  other:
    op: echo
    params: { value: 9 }
  b:
    op: report.table
    needs: [a]
    params: { rows: [value], metric: value }
  fig:
    op: report.plot
    needs: [a]
    params: { kind: line, x: value, y: value }
"#,
    );
    let out = sb.results().join("var");
    let read = |name: &str| std::fs::read(out.join(name)).unwrap();
    let heading = || {
        String::from_utf8(read("b.md"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    };
    let variant_meta =
        || ablate_results::metadata_value(&out.join("b.parquet"), "ablate.variant").unwrap();
    let plain = sb.ablate(&["run", "p.yaml"]).code(EXIT_OK);
    assert!(!plain.stderr.contains("variant"), "{}", plain.stderr);
    assert_eq!(heading(), "# var — b");
    assert_eq!(variant_meta(), None);
    let published: Vec<Vec<u8>> = ["b.md", "b.parquet", "fig.svg", "fig.png"]
        .iter()
        .map(|f| read(f))
        .collect();

    let run = sb
        .ablate(&[
            "run",
            "p.yaml",
            "--set",
            "a.params.sleep_ms=1",
            "--matrix",
            "a.value=1,3",
        ])
        .code(EXIT_OK);
    let caption = "(set: sleep_ms=1; matrix: value=[1.0,3.0])";
    assert_eq!(heading(), format!("# var — b {caption}"));
    assert_eq!(
        variant_meta().as_deref(),
        Some("set: sleep_ms=1; matrix: value=[1.0,3.0]")
    );
    let svg = String::from_utf8(read("fig.svg")).unwrap();
    assert!(svg.contains(&format!(">{caption}</text>")), "{svg}");
    assert_ne!(read("fig.png"), published[3]);
    // Said once, with the way back.
    assert_eq!(
        run.stderr
            .matches("are now this run's variant (their titles name the overrides)")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert_contains_all(
        &run.stderr,
        &["`ablate run p.yaml` without `--set`/`--matrix` restores the plain ones from the cache"],
    );

    // An override that does not reach the reports leaves them (and their keys) the plain ones.
    let elsewhere = sb
        .ablate(&["run", "p.yaml", "--json", "--set", "other.params.value=5"])
        .code(EXIT_OK);
    assert_eq!(elsewhere.ids("started"), ["other"]);
    assert_eq!(heading(), "# var — b");
    assert_eq!(variant_meta(), None);

    // The plain file: every report back as it was, from the cache.
    let back = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&back, 0, 5, 0, 0);
    let again: Vec<Vec<u8>> = ["b.md", "b.parquet", "fig.svg", "fig.png"]
        .iter()
        .map(|f| read(f))
        .collect();
    assert!(
        again == published,
        "the plain reports are restored byte for byte"
    );
}

/// #23: `fuse:` is a stage key, not a param: every form leaves the keys alone, and a bad value
/// is an input error at its place. `ablate plan` shows a seed × lr sweep of `train.flow` as one
/// fused group when the op says those params fuse (`OpCatalog::fusible`), with the stage's cap,
/// and none under `fuse: off`; while the op declares no fusible params, it shows none.
#[test]
fn plan_shows_the_fused_groups_of_a_seed_and_lr_sweep() {
    let sb = Sandbox::new();
    let sweep = |fuse: &str| {
        format!(
            "name: sweep\nstages:\n  points:\n    op: data.toy2d\n    params: {{ kind: moons, n_train: 200, n_test: 200, noise: 0.1 }}\n  flow:\n    op: train.flow\n    needs: [points]\n{fuse}    matrix: {{ seed: [0, 1, 2], lr: [0.01, 0.1] }}\n    params: {{ hidden: 8, epochs: 5, batch: 50 }}\n"
        )
    };
    sb.write("auto.yaml", &sweep(""));
    sb.write("off.yaml", &sweep("    fuse: off\n"));
    sb.write("capped.yaml", &sweep("    fuse: 4\n"));
    let keys = sb.keys("auto.yaml", &[]);
    assert_eq!(keys.len(), 7);
    assert_eq!(sb.keys("off.yaml", &[]), keys, "`fuse` is not in the key");
    assert_eq!(sb.keys("capped.yaml", &[]), keys);

    let text = |file: &str| sb.ablate(&["plan", file]).code(EXIT_OK).stdout;
    let auto = text("auto.yaml");
    assert!(auto.contains("\n  fuse  ×6  (lr, seed vary)\n"), "{auto}");
    let capped = text("capped.yaml");
    assert!(
        capped.contains("\n  fuse  ×6  (lr, seed vary)  max 4\n"),
        "{capped}"
    );
    let json = sb
        .ablate(&["plan", "auto.yaml", "--format", "json"])
        .code(EXIT_OK)
        .stdout;
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        doc["fuse_groups"][0]["members"].as_array().unwrap().len(),
        6,
        "{json}"
    );
    // The language models fuse on the CPU only when asked (`on`): `auto` fuses where it is
    // faster, and there it is not.
    let lm = |fuse: &str| {
        format!(
            "name: lms\nstages:\n  corpus:\n    op: data.text\n    params: {{ source: synthetic, docs: 50 }}\n  lm:\n    op: train.lm\n    needs: [corpus]\n{fuse}    matrix: {{ seed: [0, 1], lr: [0.001, 0.003] }}\n    params: {{ d_model: 16, heads: 2, d_ff: 32, layers: 1, seq_len: 16, steps: 2, batch: 2 }}\n"
        )
    };
    sb.write("lm_auto.yaml", &lm(""));
    sb.write("lm_on.yaml", &lm("    fuse: on\n"));
    assert!(!text("lm_auto.yaml").contains("fuse  "));
    let on = text("lm_on.yaml");
    assert!(on.contains("\n  fuse  ×4  (lr, seed vary)\n"), "{on}");
    assert!(!text("off.yaml").contains("fuse  "));

    sb.write("bad.yaml", &sweep("    fuse: 0\n"));
    let run = sb.ablate(&["plan", "bad.yaml"]).code(EXIT_INVALID_INPUT);
    assert!(run.stderr.contains("bad.yaml:9:11"), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "`fuse` of stage `flow` expects `auto`, `on`, `off` or a number of members ≥ 1"
        ),
        "{}",
        run.stderr
    );
}

// --- Early stopping (issue 24): successive halving, rung by rung, from the cache -----------

/// 9 configurations × 2 seeds of a 27-step curve (`loss` = value + 1/step): the rung at 1
/// keeps 3 configurations, the one at 3 keeps 1, which then runs to its end (the rung at 9
/// could not stop it).
const HALVING: &str = "name: halving
stages:
  train:
    op: echo
    matrix: { value: [5, 2, 8, 1, 9, 3, 7, 4, 6], seed: [0, 1] }
    params: { steps: 27 }
    early_stop: { metric: loss, mode: min, min: 1, max: 27, eta: 3 }
";

/// Instance id → its `finished` event's metrics.
fn finished_metrics(run: &Run) -> BTreeMap<String, Value> {
    run.events()
        .into_iter()
        .filter(|e| e["event"] == "finished")
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["metrics"].clone()))
        .collect()
}

#[test]
fn early_stopping_prunes_rung_by_rung_and_the_survivors_resume_their_checkpoints() {
    let sb = Sandbox::new();
    sb.write("halving.yaml", HALVING);
    let run = sb
        .ablate(&["run", "halving.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    let rungs: Vec<(u64, u64, String)> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "rung")
        .map(|e| {
            let best = e["ranking"][0][0].as_str().unwrap().to_owned();
            (
                e["step"].as_u64().unwrap(),
                e["kept"].as_u64().unwrap(),
                best,
            )
        })
        .collect();
    let best = "value=1.0".to_owned();
    assert_eq!(rungs, [(1, 3, best.clone()), (3, 1, best)]);
    let s = run.summary();
    assert_eq!(
        (s["ran"].as_u64(), s["pruned"].as_u64()),
        (Some(18), Some(16)),
        "{s}"
    );
    let metrics = finished_metrics(&run);
    let mut computed = 0.0;
    for (id, m) in &metrics {
        computed += m["computed_steps"].as_f64().unwrap();
        if id.starts_with("train[value=1.0,") {
            // Resumed at each rung, never started over: 27 steps in all, the last from 3.
            assert_eq!(
                (m["computed_steps"].as_f64(), m["resumed_from"].as_f64()),
                (Some(27.0), Some(3.0)),
                "{id}"
            );
        }
    }
    assert!(
        computed <= 18.0 * 27.0 / 2.0,
        "early stopping spent {computed} steps, more than half the grid's"
    );
    assert_eq!(computed, 12.0 + 4.0 * 3.0 + 2.0 * 27.0);
    // Each pruned instance is a result: `pruned` in runs.parquet, its curve up to its rung.
    let table = read_parquet(&sb.results().join("halving").join("runs.parquet"));
    let label = strs(column(&table, "label"));
    let status = strs(column(&table, "status"));
    let metric = strs(column(&table, "metric"));
    let step = ints(column(&table, "step"));
    let mut last_step: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for row in 0..table.num_rows() {
        if metric[row].as_deref() == Some("loss") {
            let e = last_step
                .entry(label[row].clone().unwrap())
                .or_insert((status[row].clone().unwrap(), 0));
            e.1 = e.1.max(step[row].unwrap());
        }
    }
    let pruned_at: BTreeMap<i64, usize> =
        last_step
            .values()
            .filter(|(s, _)| s == "pruned")
            .fold(BTreeMap::new(), |mut m, (_, k)| {
                *m.entry(*k).or_default() += 1;
                m
            });
    assert_eq!(pruned_at, BTreeMap::from([(1, 12), (3, 4)]));
    assert_eq!(last_step["value=1.0,seed=0"], ("done".to_owned(), 27));

    // The same file again decides the same from the cache, and trains nothing.
    let again = sb
        .ablate(&["run", "halving.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    assert_summary(&again, 0, 18, 0, 0);
    assert_eq!(again.summary()["cached_pruned"].as_u64(), Some(16));
    assert_eq!(
        again
            .events()
            .iter()
            .filter(|e| e["event"] == "rung")
            .count(),
        2
    );
    let text = sb
        .ablate(&["run", "halving.yaml", "--jobs", "2"])
        .code(EXIT_OK);
    assert!(
        text.stderr.contains("(pruned at step 3)") || text.stdout.contains("(pruned at step 3)"),
        "a cached pruned instance says so\n{}{}",
        text.stdout,
        text.stderr
    );
}

#[test]
fn a_pruned_entry_runs_to_its_end_from_its_checkpoint_where_nothing_stops_early() {
    let sb = Sandbox::new();
    sb.write("halving.yaml", HALVING);
    sb.ablate(&["run", "halving.yaml", "--jobs", "2"])
        .code(EXIT_OK);
    // Early stopping is not part of any key: without it, the pruned entries are misses.
    let grid = HALVING.replace(
        "    early_stop: { metric: loss, mode: min, min: 1, max: 27, eta: 3 }\n",
        "",
    );
    sb.write("grid.yaml", &grid);
    let plan = sb.plan("grid.yaml", &[]);
    let entry = &plan["train[value=5.0,seed=0]"];
    assert!(
        entry.to_string().contains("pruned at step 1"),
        "plan says why a pruned entry runs: {entry}"
    );
    let run = sb
        .ablate(&["run", "grid.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    assert_summary(&run, 16, 2, 0, 0);
    let metrics = finished_metrics(&run);
    let m = &metrics["train[value=5.0,seed=0]"];
    assert_eq!(
        (m["resumed_from"].as_f64(), m["computed_steps"].as_f64()),
        (Some(1.0), Some(27.0)),
        "{m}"
    );
    assert_eq!(
        metrics["train[value=2.0,seed=0]"]["resumed_from"].as_f64(),
        Some(3.0)
    );
    // Its entry is now whole: the early-stopping file finds every configuration done or
    // pruned as before, and runs nothing.
    let again = sb
        .ablate(&["run", "grid.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    assert_summary(&again, 0, 18, 0, 0);
}

#[test]
fn early_stop_mistakes_point_at_their_place() {
    let sb = Sandbox::new();
    let cases = [
        (
            "name: p\nstages:\n  d:\n    op: data.toy2d\n    early_stop: { metric: loss, min: 1, max: 9 }\n",
            &[
                "p.yaml:5:17",
                "op `data.toy2d` cannot stop at a budget",
                "early stopping works with",
            ][..],
        ),
        (
            "name: p\nstages:\n  t:\n    op: echo\n    params: { steps: 9 }\n    early_stop: { metric: loss, min: 9, max: 3 }\n",
            &["p.yaml:6:38", "`min` (9) must be below `max` (3)"][..],
        ),
        (
            "name: p\nstages:\n  t:\n    op: echo\n    early_stop: { metric: loss, mode: lowest, min: 1, max: 3 }\n",
            &["p.yaml:5:39", "`min` or `max`"][..],
        ),
        (
            "name: p\nstages:\n  t:\n    op: echo\n    early_stop: { metric: loss, resource: epochs, min: 1, max: 3 }\n",
            &[
                "p.yaml:5:43",
                "counts its progress in `steps`, not `epochs`",
            ][..],
        ),
        (
            "name: p\nstages:\n  t:\n    op: echo\n    early_stop: { metric: loss, min: 1, max: 3, eta: 1 }\n",
            &["p.yaml:5:54", "a whole number ≥ 2"][..],
        ),
        (
            "name: p\nstages:\n  t:\n    op: echo\n    early_stop: { min: 1, max: 3 }\n",
            &["p.yaml:5:17", "has no `metric`"][..],
        ),
    ];
    for (yaml, fragments) in cases {
        sb.write("p.yaml", yaml);
        let run = sb.ablate(&["plan", "p.yaml"]).code(EXIT_INVALID_INPUT);
        assert_contains_all(&run.stderr, fragments);
    }
}

// --- random search (issue 24) --------------------------------------------------------------------

/// Data → a 3-sample search of `train.flow` over lr, weight decay and weight sharing →
/// `eval.flow` per model: 7 instances, a second or two in a debug build.
const TINY_SEARCH: &str = r#"
name: tiny_search
stages:
  points:
    op: data.toy2d
    params: { kind: moons, n_train: 200, n_test: 200, noise: 0.1 }
  flow:
    op: train.flow
    needs: [points]
    search:
      n: 3
      seed: 7
      params:
        lr: { loguniform: [1.0e-3, 1.0e-1] }
        weight_decay: { uniform: [0.0, 0.01] }
        weights: { choice: [shared, unshared] }
    params: { hidden: 8, epochs: 5, batch: 50, steps: 2 }
  eval:
    op: eval.flow
    needs: [flow]
"#;

/// A search runs its samples; raising `n` runs only the new ones: the first samples keep their
/// keys and come from the cache, in the plan and in the run.
#[test]
fn raising_a_search_n_reruns_only_the_new_samples() {
    let sb = Sandbox::new();
    sb.write("p.yaml", TINY_SEARCH);
    let plan = sb.ablate(&["plan", "p.yaml"]).code(EXIT_OK);
    assert_contains_all(
        &plan.stdout,
        &[
            "flow (train.flow): 3 instances, 0 cached",
            "  search  3 samples, seed 7: lr ~ loguniform [0.001, 0.1], weight_decay ~ uniform [0.0, 0.01], weights ~ choice [shared, unshared]",
        ],
    );
    let first = sb.ablate(&["run", "p.yaml", "--json"]).code(EXIT_OK);
    assert_summary(&first, 1 + 3 + 3, 0, 0, 0);
    let trained = first.ids("finished");
    let flows: Vec<&String> = trained
        .iter()
        .filter(|id| id.starts_with("flow["))
        .collect();
    assert_eq!(flows.len(), 3);
    for id in &flows {
        assert!(
            id.starts_with("flow[lr=0.0") && id.contains(",weight_decay=0.00"),
            "{id}"
        );
    }
    let keys = sb.keys("p.yaml", &[]);

    let bigger = ["--set", "flow.search.n=5"];
    let more = sb.keys("p.yaml", &bigger);
    assert_eq!(more.len(), 1 + 5 + 5);
    for (id, key) in &keys {
        assert_eq!(more.get(id), Some(key), "{id} keeps its key");
    }
    let plan = sb
        .ablate(&["plan", "p.yaml", "--set", "flow.search.n=5"])
        .code(EXIT_OK);
    assert_contains_all(&plan.stdout, &["flow (train.flow): 5 instances, 3 cached"]);
    let second = sb
        .ablate(&["run", "p.yaml", "--json", "--set", "flow.search.n=5"])
        .code(EXIT_OK);
    assert_summary(&second, 2 + 2, 1 + 3 + 3, 0, 0);
    assert_eq!(second.ids("cached"), trained);

    // The sampled values are columns of runs.parquet, as matrix values are.
    let runs = read_parquet(&sb.results().join("tiny_search").join("runs.parquet"));
    let lr = floats(column(&runs, "lr"));
    assert!(lr.iter().flatten().all(|v| (1e-3..=1e-1).contains(v)));
    assert_eq!(
        lr.iter()
            .flatten()
            .map(|v| v.to_bits())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        5,
        "five samples, five learning rates"
    );
}

/// A typo in a distribution's name and a range the wrong way round are input errors at their
/// place, exit code 2, before anything runs.
#[test]
fn a_bad_search_space_is_an_input_error_at_its_place() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        &TINY_SEARCH
            .replace(
                "loguniform: [1.0e-3, 1.0e-1]",
                "logunifrom: [1.0e-3, 1.0e-1]",
            )
            .replace("uniform: [0.0, 0.01]", "uniform: [0.01, 0.0]"),
    );
    let run = sb.ablate(&["run", "p.yaml"]).code(EXIT_INVALID_INPUT);
    assert_contains_all(
        &run.stderr,
        &[
            "error: unknown distribution `logunifrom` for search param `lr` of stage `flow`",
            "p.yaml:14:15",
            "did you mean `loguniform`? (the distributions are `uniform`, `loguniform`, `int`, `choice`)",
            "error: `uniform` of search param `weight_decay` of stage `flow` has low ≥ high (`0.01` ≥ `0.0`)",
            "p.yaml:15:34",
        ],
    );
    assert!(!sb.results().join("tiny_search").exists(), "nothing ran");
}

// --- random search with early stopping over your own script (issue 24) -------------------

/// A training script whose loss curve depends on `lr` in a known way, `(log10 lr + 2)² + 1/step`
/// (best at lr = 0.01, and the same ranking at every step): it resumes from its checkpoint,
/// stops at `$ABLATE_STOP_AT`, and counts every step it computes in `computed.txt`.
const KNOWN_CURVE: &str = r#"import json, math, os
p = json.load(open(os.environ["ABLATE_PARAMS"]))
lr, steps = p["lr"], p["steps"]
state = os.path.join(os.environ["ABLATE_CHECKPOINT"], "step")
start = int(open(state).read()) if os.path.exists(state) else 0
stop = min(steps, int(os.environ.get("ABLATE_STOP_AT", steps)))
with open(os.environ["ABLATE_METRICS"], "a") as log, open(p["counter"], "a") as counter:
    for s in range(start + 1, stop + 1):
        log.write(json.dumps({"step": s, "loss": (math.log10(lr) + 2) ** 2 + 1 / s}) + "\n")
        log.flush()
        counter.write(".")
        with open(state + ".tmp", "w") as f:
            f.write(str(s))
        os.replace(state + ".tmp", state)
"#;

#[test]
fn random_search_with_early_stopping_keeps_the_best_configuration_for_half_the_steps() {
    let sb = Sandbox::new();
    sb.write("curve.py", KNOWN_CURVE);
    let counter = sb.path().join("computed.txt");
    let pipeline = format!(
        "name: held_out
stages:
  train:
    op: cmd
    search:
      n: 27
      seed: 3
      params:
        lr: {{ loguniform: [1.0e-4, 1.0] }}
    params: {{ run: python3 curve.py, deps: [curve.py], steps: 27, counter: \"{}\" }}
    early_stop: {{ metric: loss, mode: min, min: 1, max: 27, eta: 3 }}
",
        counter.display()
    );
    sb.write("held_out.yaml", &pipeline);
    let run = sb
        .ablate(&["run", "held_out.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    assert_summary(&run, 27, 0, 0, 0);
    // The best of the 27 samples by the known curve: the lr nearest 0.01 on a log scale.
    let plan = sb.plan("held_out.yaml", &[]);
    let distance = |id: &str| (plan[id]["labels"]["lr"].as_f64().unwrap().log10() + 2.0).abs();
    let best = plan
        .keys()
        .min_by(|a, b| distance(a).total_cmp(&distance(b)))
        .unwrap()
        .clone();
    let done: Vec<String> = run
        .events()
        .into_iter()
        .filter(|e| e["event"] == "finished" && e["status"] == "done")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(done.contains(&best), "{best} ran to its end: {done:?}");
    // Every step was computed once: the survivors resumed, never started over.
    let computed = std::fs::read_to_string(&counter).unwrap().len();
    assert!(
        computed * 2 <= 27 * 27,
        "early stopping computed {computed} steps, more than half of the grid's {}",
        27 * 27
    );
    let pruned = run.summary()["pruned"].as_u64().unwrap() as usize;
    assert_eq!(pruned + done.len(), 27);
    // The same file again trains nothing.
    let again = sb
        .ablate(&["run", "held_out.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    assert_summary(&again, 0, 27, 0, 0);
    assert_eq!(std::fs::read_to_string(&counter).unwrap().len(), computed);
}

#[test]
fn slurm_early_stopping_decides_from_the_shared_cache_as_a_local_run_does() {
    require_slurm();
    let text = HALVING.replace("name: halving", "name: halving-slurm");
    let local = Sandbox::new();
    local.write("h.yaml", &text);
    let on_slurm = Sandbox::new();
    on_slurm.write("h.yaml", &text);
    let here = local
        .ablate(&["run", "h.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    let there = on_slurm
        .ablate(&["run", "h.yaml", "--json", "--executor", "slurm"])
        .code(EXIT_OK);
    // The tasks stopped at their budgets and left their outputs in the shared cache; this
    // process ranked them and recorded the pruned ones: the same rungs, results and entries.
    let rungs = |run: &Run| -> Vec<Value> {
        run.events()
            .into_iter()
            .filter(|e| e["event"] == "rung")
            .collect()
    };
    assert_eq!(rungs(&here), rungs(&there));
    assert_eq!(there.summary()["pruned"].as_u64(), Some(16));
    assert_eq!(finished_metrics(&here), finished_metrics(&there));
    // A local rerun over the cluster's cache trains nothing.
    let again = on_slurm
        .ablate(&["run", "h.yaml", "--jobs", "2", "--json"])
        .code(EXIT_OK);
    assert_summary(&again, 0, 18, 0, 0);
}

// --- 25. statistics across seeds: intervals, paired differences, confidence claims -----------

/// Two methods × three seeds whose metric each seed moves by as much as 0.3 while `tuned`
/// beats `base` by 0.01 on every seed; and a single-seed stage beside it. `acc.sh` echoes each
/// instance's metric.
const SEEDS_SCRIPT: &str = r#"case "$1" in
  train-base-0) acc=0.90 ;; train-base-1) acc=0.80 ;; train-base-2) acc=0.60 ;;
  train-tuned-0) acc=0.91 ;; train-tuned-1) acc=0.81 ;; train-tuned-2) acc=0.61 ;;
  once-base-0) acc=0.90 ;; once-tuned-0) acc=0.95 ;;
esac
echo "{\"acc\": $acc}" > "$2/metrics.json"
"#;

const SEEDS: &str = r#"
name: seeds
stages:
  train:
    op: cmd
    matrix: { method: [base, tuned], seed: [0, 1, 2] }
    params: { run: "sh acc.sh train-{param.method}-{param.seed} {out}", deps: [acc.sh] }
  once:
    op: cmd
    matrix: { method: [base, tuned], seed: [0] }
    params: { run: "sh acc.sh once-{param.method}-{param.seed} {out}", deps: [acc.sh] }
  table:
    op: report.table
    needs: [train]
    params: { rows: [method], metric: acc, relative_to: [{ base: { method: base } }] }
  table_again:
    op: report.table
    needs: [train]
    params: { rows: [method], metric: acc, relative_to: [{ base: { method: base } }], ci: true }
  robust:
    op: report.table
    needs: [train]
    params: { rows: [method], metric: acc, aggregate: iqm }
  single:
    op: report.table
    needs: [once]
    params: { rows: [method], metric: acc, relative_to: [{ base: { method: base } }] }
  claims:
    op: report.claims
    needs: [train]
    params:
      claims:
        - { name: tuned_wins, assert: "diff(acc | method=tuned vs acc | method=base) > 0 @ 95%" }
        - { name: tuned_wins_75, assert: "diff(acc | method=tuned vs acc | method=base) > 0 @ 75%" }
        - { name: by_a_lot, assert: "diff(acc | method=tuned vs acc | method=base) > 0.05 @ 95%" }
"#;

/// #25: the table's intervals and paired differences as a user reads them (Markdown) and as
/// the HTML report reads them (Parquet columns); a single seed gets no interval and says so;
/// a confidence claim is judged on the paired interval.
#[test]
fn report_tables_show_bootstrap_intervals_and_paired_differences_over_seeds() {
    let sb = Sandbox::new();
    sb.write("acc.sh", SEEDS_SCRIPT);
    sb.write("p.yaml", SEEDS);
    let run = sb
        .ablate(&["run", "p.yaml", "--json", "--jobs", "2"])
        .code(EXIT_OK);
    assert_summary(&run, 13, 0, 0, 0);
    let dir = sb.results().join("seeds");

    let md = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert_contains_all(
        &md,
        &[
            "| method |                             acc Δ |",
            "| tuned  | +0.010 [+0.010, +0.010] (3 pairs) |",
            "| base   |                            (base) |",
            "| method |                    acc (n=3) |",
            "| base   | 0.767 ± 0.153 [0.600, 0.900] |",
            "| tuned  | 0.777 ± 0.153 [0.610, 0.910] |",
            "[a, b] is the 95% bootstrap confidence interval of the mean (expanded percentile \
             method, 10,000 resamples, seeded by the values)",
            "With 3 values an interval lies within their range, which holds their mean at most \
             75% of the time",
        ],
    );
    let table = read_parquet(&dir.join("table.parquet"));
    let names: Vec<&str> = table.column_names().collect();
    assert_eq!(
        names,
        [
            "method",
            "acc.mean",
            "acc.std",
            "acc.n",
            "acc.ci_low",
            "acc.ci_high",
            "acc (Δ% vs base)",
            "acc.delta",
            "acc.delta_low",
            "acc.delta_high",
            "acc.delta_n",
        ]
    );
    let close = |col: &str, want: [Option<f64>; 2]| {
        let got = floats(column(&table, col));
        for (g, w) in got.iter().zip(want) {
            match (g, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{col}: {got:?}"),
                _ => assert_eq!(*g, w, "{col}: {got:?}"),
            }
        }
    };
    // Three values: the lowest and highest means of a resample are each 1/27 > 2.5% likely,
    // so the 95% interval is the range.
    close("acc.ci_low", [Some(0.6), Some(0.61)]);
    close("acc.ci_high", [Some(0.9), Some(0.91)]);
    close("acc.delta", [Some(0.0), Some(0.01)]);
    close("acc.delta_low", [None, Some(0.01)]);
    close("acc.delta_high", [None, Some(0.01)]);
    assert_eq!(ints(column(&table, "acc.delta_n")), [None, Some(3)]);

    // The IQM of 0.9, 0.8, 0.6 weighs them 1/6, 2/3, 1/6 (sorted): 0.7833; its interval, of
    // 3 values, is their range.
    let md = std::fs::read_to_string(dir.join("robust.md")).unwrap();
    assert_contains_all(
        &md,
        &[
            "| base   | 0.783 [0.600, 0.900] |",
            "| tuned  | 0.793 [0.610, 0.910] |",
            "[a, b] is its 95% bootstrap confidence interval (percentile method, as rliable's",
        ],
    );
    let robust = read_parquet(&dir.join("robust.parquet"));
    let names: Vec<&str> = robust.column_names().collect();
    assert_eq!(
        names,
        ["method", "acc.iqm", "acc.n", "acc.ci_low", "acc.ci_high"]
    );

    // One seed: no spread, no interval, and the table says why.
    let md = std::fs::read_to_string(dir.join("single.md")).unwrap();
    assert_contains_all(
        &md,
        &[
            "| base   | 0.900 (n=1, no interval) |",
            "| tuned  | +0.050 (1 pair, no interval) |",
        ],
    );
    let single = read_parquet(&dir.join("single.parquet"));
    assert_eq!(floats(column(&single, "acc.ci_low")), [None, None]);
    assert_eq!(floats(column(&single, "acc.delta_low")), [None, None]);
    assert_eq!(ints(column(&single, "acc.delta_n")), [None, Some(1)]);

    let claims = read_parquet(&dir.join("claims.parquet"));
    // Three seeds that all favour `tuned` cannot show 95% (their range holds the mean at most
    // 75% of the time), but can show 75%; pointing the other way fails whatever the seeds.
    assert_eq!(
        strs(column(&claims, "result")),
        [
            Some("undecided".to_owned()),
            Some("pass".to_owned()),
            Some("fail".to_owned())
        ]
    );
    assert_eq!(
        floats(column(&claims, "level")),
        [Some(0.95), Some(0.75), Some(0.95)]
    );
    let md = std::fs::read_to_string(dir.join("claims.md")).unwrap();
    assert_contains_all(
        &md,
        &[
            "[0.01, 0.01] (95%)",
            "3 pairs cannot show 95% confidence",
            "6 pairs can, or ask @ 75%",
            "3 pairs; the 75% interval",
        ],
    );

    // The same results give the same bits: `table_again` (`ci: true`, the same level) is
    // another instance, computed on its own.
    let twice = read_parquet(&dir.join("table_again.parquet"));
    assert_eq!(twice, table);
}

/// #26: a `cmd` program imports the `ablate` module the binary carries, with nothing
/// installed and no `PYTHONPATH` of its own — and a user's `PYTHONPATH` still works after it.
#[test]
fn a_cmd_script_imports_the_ablate_module_the_binary_carries() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("mine/helpers")).unwrap();
    std::fs::write(sb.path().join("mine/helpers/__init__.py"), "VALUE = 7\n").unwrap();
    sb.write(
        "probe.py",
        r#"
import json, os
import ablate, helpers
out = os.environ["ABLATE_OUT"]
json.dump({"imported": 1, "helpers": helpers.VALUE}, open(os.path.join(out, "metrics.json"), "w"))
open(os.path.join(out, "where.txt"), "w").write(ablate.__file__ + "\n" + os.environ["PYTHONPATH"])
"#,
    );
    sb.write(
        "p.yaml",
        "name: py\nstages:\n  probe: { op: cmd, params: { run: python3 probe.py, deps: [probe.py] } }\n",
    );
    let run = Run::from(
        sb.command(&["run", "p.yaml", "--json"])
            .env("PYTHONPATH", sb.path().join("mine"))
            .output()
            .unwrap(),
    )
    .code(EXIT_OK);
    let key = ids_of(&events_of(&run.stdout), "finished");
    assert_eq!(key, ["probe"]);
    let finished = events_of(&run.stdout)
        .into_iter()
        .find(|e| e["event"] == "finished")
        .unwrap();
    assert_eq!(finished["metrics"]["imported"], 1.0);
    assert_eq!(finished["metrics"]["helpers"], 7.0);
    let entry = sb.entry(finished["key"].as_str().unwrap());
    let whereabouts = std::fs::read_to_string(entry.join("where.txt")).unwrap();
    let (module, path) = whereabouts.split_once('\n').unwrap();
    // The embedded copy, written under the temporary directory, comes first.
    assert!(module.contains("ablate-python-"), "{module}");
    assert!(
        path.ends_with(&format!(":{}", sb.path().join("mine").display())),
        "{path}"
    );
}
