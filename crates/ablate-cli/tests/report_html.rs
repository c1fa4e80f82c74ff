//! The HTML report as a person sees it (#25): headless Chromium opens `report.html` of a small
//! pipeline — a sweep over two params and three seeds with a script of the user's that logs
//! curves, one configuration broken on purpose, a table with `relative_to` and claims — and the
//! test reads the DOM after the page's script ran: no errors, every section, a curve and a
//! table drawn. A second pipeline has one seed: no interval is drawn and the page says why.
//! Screenshots are saved under `target/report-screenshots/` for a person to look at.
//!
//! Chromium is required (`.ci/run` installs Debian's `chromium`); `ABLATE_CHROMIUM` names
//! another binary. Without one the test fails and says how to get it: a report nobody looked
//! at is not tested.

use std::path::{Path, PathBuf};
use std::process::Command;

const TRAIN: &str = r#"
import json, os, sys
p = json.load(open(os.environ["ABLATE_PARAMS"]))
if p["width"] == 64 and p["lr"] == 0.3:
    sys.stderr.write("Traceback (most recent call last):\nRuntimeError: width 64 with lr 0.3 is broken on purpose\n")
    sys.exit(3)
noise = [0.00, 0.02, -0.015][p["seed"] % 3]
with open(os.environ["ABLATE_METRICS"], "a") as log:
    for step in range(1, 9):
        loss = 1.0 / (step * p["lr"] * 10) + p["width"] / 1000 + noise
        log.write(json.dumps({"step": step, "loss": loss}) + "\n")
acc = 0.7 + p["lr"] / 2 + p["width"] / 1000 + noise
json.dump({"acc": acc}, open(os.path.join(os.environ["ABLATE_OUT"], "metrics.json"), "w"))
"#;

fn pipeline(name: &str, seeds: &str) -> String {
    format!(
        r#"
name: {name}
stages:
  train:
    op: cmd
    matrix: {{ width: [16, 32, 64], lr: [0.1, 0.3], seed: {seeds} }}
    params: {{ run: python3 train.py, deps: [train.py] }}
  table:
    op: report.table
    needs: [train]
    params:
      rows: [width]
      cols: [lr]
      metric: acc
      relative_to: [{{ base: {{ width: 16 }} }}]
  claims:
    op: report.claims
    needs: [train]
    params:
      claims:
        - name: wider_is_better
          assert: mean(acc | width=32) > mean(acc | width=16)
        - name: slow_is_better
          assert: mean(acc | lr=0.1) > mean(acc | lr=0.3)
"#
    )
}

fn ablate(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ablate"))
        .args(args)
        .current_dir(dir)
        .env("ABLATE_CACHE", dir.join("cache"))
        .env("ABLATE_RESULTS", dir.join("results"))
        .env_remove("ABLATE_PROFILE")
        .output()
        .expect("run ablate")
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("ABLATE_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
    }
    panic!(
        "the HTML report's test needs headless Chromium: `apt-get install chromium` (Debian; \
         `.ci/run` installs it), or set ABLATE_CHROMIUM to a Chromium/Chrome binary"
    );
}

/// Headless Chromium on `html` with `args` after the common ones; its output, checked to
/// have succeeded.
fn headless(html: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg("--virtual-time-budget=10000")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The DOM after the page's script ran (and the console messages Chromium logged).
fn dump_dom(html: &Path, profile: &Path) -> (String, String) {
    let args = ["--enable-logging=stderr", "--v=0", "--dump-dom"].map(String::from);
    let out = headless(html, profile, &args);
    (
        without_scripts(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The DOM without its `<script>` elements (the page's code and data), so what a test finds
/// in it was drawn, not merely shipped.
fn without_scripts(dom: &str) -> String {
    let mut out = String::with_capacity(dom.len());
    let mut rest = dom;
    while let Some(start) = rest.find("<script") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</script>") {
            Some(end) => rest = &rest[start + end + "</script>".len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn screenshot(html: &Path, profile: &Path, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join(format!("{name}.png"));
    let args = [
        "--hide-scrollbars".to_owned(),
        "--window-size=1280,5000".to_owned(),
        format!("--screenshot={}", png.display()),
    ];
    headless(html, profile, &args);
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "an empty screenshot"
    );
    png
}

/// The console lines Chromium logs for the page (`CONSOLE(…)` / `console.error`).
fn console_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect()
}

/// The page's DOM once its script ran, checked as every page must be: finished, no error
/// recorded or logged to the console, every section there.
fn open_page(html: &Path, profile: &Path) -> String {
    let (dom, log) = dump_dom(html, profile);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page did not finish: {dom}"
    );
    assert!(!dom.contains("data-errors"), "the page hit errors: {dom}");
    assert!(console_errors(&log).is_empty(), "console: {log}");
    for section in [
        "summary",
        "tables",
        "curves",
        "parallel",
        "claims",
        "instances",
        "diff",
    ] {
        assert!(
            dom.contains(&format!("id=\"{section}\"")),
            "no section {section}"
        );
    }
    dom
}

fn run_pipeline(name: &str, seeds: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.py"), TRAIN).unwrap();
    std::fs::write(dir.path().join("p.yaml"), pipeline(name, seeds)).unwrap();
    let run = ablate(dir.path(), &["run", "p.yaml", "--jobs", "2"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    // The broken configuration fails the run (exit 1), and its report is still written.
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    let html = dir.path().join("results").join(name).join("report.html");
    assert!(stderr.contains("report: "), "{stderr}");
    assert!(html.is_file(), "{stderr}");
    (dir, html)
}

#[test]
fn the_report_of_a_sweep_with_a_failed_instance_renders_every_section() {
    let (dir, html) = run_pipeline("sweep", "[0, 1, 2]");
    let dom = open_page(&html, &dir.path().join("chrome"));
    // A curve and a table drawn, with the table's intervals and paired differences.
    assert!(dom.contains("class=\"curve-line"), "no curve drawn");
    assert!(
        dom.contains("class=\"curve-band"),
        "no band across three seeds"
    );
    assert!(
        dom.contains("<table class=\"report-table"),
        "no report table"
    );
    assert!(
        dom.contains("class=\"sub ci\">["),
        "no confidence interval drawn"
    );
    assert!(dom.contains("pairs)</span>"), "no paired difference drawn");
    assert!(dom.contains("parallel-chart"), "no parallel coordinates");
    assert!(
        dom.contains("wider_is_better") && dom.contains("v-holds"),
        "claims"
    );
    // The failed instance: its status and the end of its stderr.
    assert!(
        dom.contains("broken on purpose"),
        "no stderr tail of the failure"
    );
    assert!(dom.contains(">failed<"), "no failed status");
    assert!(
        !dom.contains("class=\"no-band-note\">"),
        "three seeds have a band"
    );
    let png = screenshot(&html, &dir.path().join("chrome"), "sweep");
    eprintln!("screenshot: {}", png.display());

    // `ablate report` rewrites the same page from the cache, without running anything.
    let before = page_data(&html);
    std::fs::remove_file(&html).unwrap();
    let out = ablate(dir.path(), &["report", "p.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = page_data(&html);
    // A run says what it computed; `ablate report` finds everything cached.
    let shown = |v: &serde_json::Value| {
        let statuses: Vec<(String, String)> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let status = i["status"].as_str().unwrap().replace("ran", "cached");
                (i["label"].as_str().unwrap().to_owned(), status)
            })
            .collect();
        let keep = ["tables", "curves", "parallel", "claims"].map(|k| v[k].clone());
        (statuses, keep)
    };
    assert_eq!(shown(&before), shown(&after));
}

#[test]
fn a_single_seed_report_draws_no_interval_and_says_why() {
    let (dir, html) = run_pipeline("one_seed", "[0]");
    let dom = open_page(&html, &dir.path().join("chrome"));
    assert!(dom.contains("class=\"curve-line"), "no curve drawn");
    assert!(!dom.contains("class=\"curve-band"), "a band from one seed");
    assert!(
        dom.contains("class=\"no-band-note\">") && dom.contains("no band across seeds is drawn"),
        "the page does not say why there is no band"
    );
    assert!(
        dom.contains("class=\"sub ci\">one run: no interval"),
        "the table does not say why there is no interval"
    );
    assert!(
        !dom.contains("class=\"sub ci\">["),
        "an interval from one seed"
    );
    screenshot(&html, &dir.path().join("chrome"), "one_seed");
}

/// The page's JSON, as `ablate report` wrote it.
fn page_data(html: &Path) -> serde_json::Value {
    let page = std::fs::read_to_string(html).unwrap();
    let start = page.find("id=\"ablate-data\">").unwrap() + "id=\"ablate-data\">".len();
    let end = start + page[start..].find("</script>").unwrap();
    serde_json::from_str(&page[start..end]).unwrap()
}

/// The page names an instance by its place in the page's list, a dependant of a failed input
/// is `skipped` (after a run and from `ablate report` alike) and a parallel-coordinates row
/// points at its own instance — with a stage declared before the one it needs, so none of it
/// can lean on the file's order.
#[test]
fn instances_are_named_by_their_place_on_the_page_when_a_stage_precedes_its_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.py"), TRAIN).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"
name: order
stages:
  after:
    op: cmd
    needs: [train]
    params: { run: "true" }
  train:
    op: cmd
    matrix: { width: [16, 64], lr: [0.1, 0.3], seed: [0, 1] }
    params: { run: python3 train.py, deps: [train.py] }
"#,
    )
    .unwrap();
    let run = ablate(dir.path(), &["run", "p.yaml"]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = dir.path().join("results/order/report.html");
    for page in ["run", "report"] {
        if page == "report" {
            std::fs::remove_file(&html).unwrap();
            let out = ablate(dir.path(), &["report", "p.yaml"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let data = page_data(&html);
        let instances = data["instances"].as_array().unwrap();
        for (i, inst) in instances.iter().enumerate() {
            assert_eq!(inst["id"], i, "{page}: {inst}");
        }
        // `after` maps over `train`: the two over the broken configuration are skipped.
        for after in instances.iter().filter(|i| i["stage"] == "after") {
            let broken = after["label"].as_str().unwrap().contains("width=64,lr=0.3");
            let expected = if broken {
                "skipped"
            } else if page == "run" {
                "ran"
            } else {
                "cached"
            };
            assert_eq!(after["status"], expected, "{page}: {after}");
        }
        let rows = data["parallel"][0]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 6, "{page}");
        for row in rows {
            let inst = &instances[row["instance"].as_u64().unwrap() as usize];
            assert_eq!(inst["stage"], "train", "{page}: {row}");
            assert_eq!(inst["params"]["width"], row["values"][2], "{page}: {row}");
        }
    }
}
