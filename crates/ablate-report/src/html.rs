//! The pipeline's HTML report (`results/<pipeline>/report.html`): one self-contained file — the
//! page's template, stylesheet and script (`assets/`, hand-written, no library) are compiled
//! into the binary, and the data goes in as JSON. Callers (the CLI) gather plain records
//! ([`InstanceView`], report tables, claims tables); this module shapes them into what the page
//! draws, with every statistic computed here by [`crate::stats`], so the page only draws.
//!
//! The JSON is the contract with `assets/report.js`; its fields are documented there and on the
//! structs below.

mod build;
mod thin;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub use build::{claims_view, curves, parallel, table_view};

const TEMPLATE: &str = include_str!("../assets/report.html");
const CSS: &str = include_str!("../assets/report.css");
const JS: &str = include_str!("../assets/report.js");

/// Everything the page shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub pipeline: String,
    /// The pipeline file as given on the command line.
    pub file: String,
    /// When the page was written, `YYYY-MM-DD HH:MM UTC`.
    pub generated: String,
    pub ablate_version: String,
    pub git_rev: Option<String>,
    /// What the page shows, hashed: the plan's instances, their statuses and the version
    /// that drew it. A run that changed nothing leaves a page with the same fingerprint alone.
    pub fingerprint: String,
    /// Instances by status (`ran`, `cached`, `failed`, …) and `instances`, the total.
    pub counts: BTreeMap<String, usize>,
    /// What ± and [lo, hi] mean, shown under the summary.
    pub stats_note: String,
    pub tables: Vec<TableView>,
    pub curves: Vec<CurveSet>,
    pub parallel: Vec<Parallel>,
    pub claims: Vec<ClaimView>,
    pub instances: Vec<InstanceView>,
}

/// One report table, its cells already formatted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableView {
    pub stage: String,
    pub title: String,
    pub note: String,
    pub columns: Vec<ColumnView>,
    pub rows: Vec<Vec<Cell>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnView {
    pub name: String,
    /// `label` (a row key) or `stat` (an aggregate).
    pub kind: &'static str,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cell {
    pub text: String,
    /// How the column sorts: a number, a string, or null (last).
    pub sort: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub best: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The curves of one metric of one stage, grouped each way the page offers.
#[derive(Debug, Clone, Serialize)]
pub struct CurveSet {
    pub stage: String,
    pub metric: String,
    /// The x axis' name (`epoch`, `step`).
    pub x: String,
    pub groupings: Vec<Grouping>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Grouping {
    /// `config` (one line per configuration: every param but the seed) or a param's name.
    pub by: String,
    pub series: Vec<CurveSeries>,
}

/// A line: the mean at each step over the runs of its group, and a band (mean ± sd) where
/// at least two runs logged the step.
#[derive(Debug, Clone, Serialize)]
pub struct CurveSeries {
    pub label: String,
    pub n: usize,
    pub step: Vec<u64>,
    pub mean: Vec<Option<f64>>,
    pub lo: Vec<Option<f64>>,
    pub hi: Vec<Option<f64>>,
    /// Every run of the line was stopped early.
    pub pruned: bool,
    pub n_pruned: usize,
}

/// A sweep with more than two axes: params against final metrics, one row per instance.
#[derive(Debug, Clone, Serialize)]
pub struct Parallel {
    pub stage: String,
    pub axes: Vec<Axis>,
    pub rows: Vec<ParallelRow>,
    pub metrics: Vec<String>,
    pub lower_is_better: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Axis {
    pub name: String,
    /// `num`, `log` or `cat`.
    pub kind: &'static str,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParallelRow {
    /// The instance's `id`.
    pub instance: usize,
    pub values: Vec<Value>,
    pub metrics: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimView {
    pub stage: String,
    /// The claim's name (empty where it has none) and its expression, shown apart: a name on
    /// its own line, the expression wrapped at its spaces.
    pub name: String,
    pub claim: String,
    pub observed: String,
    /// `holds`, `fails` or `undecided`.
    pub verdict: String,
    pub detail: String,
}

/// One instance of the plan as the report shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceView {
    /// Its index in [`Report::instances`].
    pub id: usize,
    pub key: String,
    pub label: String,
    pub stage: String,
    pub op: String,
    /// `ran`, `cached`, `failed`, `pruned`, `diverged`, `skipped` or `not run`.
    pub status: String,
    pub status_detail: String,
    pub params: BTreeMap<String, Value>,
    pub deps: Vec<DepView>,
    /// What the key hashes besides params and inputs: the op and its version, files.
    pub code: Vec<(String, String)>,
    pub device: Option<String>,
    pub wall_time_s: Option<f64>,
    pub started_at: Option<String>,
    /// Final metrics (null where not finite).
    pub metrics: BTreeMap<String, Option<f64>>,
    /// Stepped metrics: per metric, (step, value) in step order.
    pub curves: BTreeMap<String, Vec<(u64, Option<f64>)>>,
    pub stderr_tail: Option<String>,
    /// Where its files are.
    pub files: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DepView {
    pub label: String,
    pub key: String,
}

/// The page: the template filled with the stylesheet, the script and `report` as JSON. `<` is
/// written `\u003c` in the JSON, so no value (a stderr tail holding `</script>`) can end the
/// script element early; JSON readers take it back as `<`.
/// Curves longer than the page takes are thinned first ([`thin`]); the data's `thinned` says
/// how many.
pub fn render(mut report: Report) -> String {
    let thinned = thin::thin(&mut report);
    let mut value =
        serde_json::to_value(&report).expect("a report is plain data (strings, numbers, maps)");
    value["thinned"] = thinned.into();
    // Curves are most of a page's bytes: 6 significant digits draw the same picture in a
    // third of the space (params, metrics and tables keep every digit).
    if let Some(sets) = value.get_mut("curves") {
        round_floats(sets);
    }
    if let Some(Value::Array(instances)) = value.get_mut("instances") {
        for i in instances {
            if let Some(c) = i.get_mut("curves") {
                round_floats(c);
            }
        }
    }
    let data = value.to_string().replace('<', "\\u003c");
    let title = escape_html(&format!("ablate — {}", report.pipeline));
    // DATA last: the data is the only part that could hold a `{{…}}` of its own.
    TEMPLATE
        .replacen("{{TITLE}}", &title, 1)
        .replacen("{{CSS}}", CSS, 1)
        .replacen("{{JS}}", JS, 1)
        .replacen("{{DATA}}", &data, 1)
}

/// Every non-integer number under `v` to 6 significant digits.
fn round_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().expect("an f64");
            if let Some(r) = format!("{x:.5e}")
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                *n = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(round_floats),
        Value::Object(o) => o.values_mut().for_each(round_floats),
        _ => {}
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value for the page: finite, else null (JSON has no NaN).
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_hold_each_placeholder_once_and_none_of_their_own() {
        for p in ["{{TITLE}}", "{{CSS}}", "{{JS}}", "{{DATA}}"] {
            assert_eq!(TEMPLATE.matches(p).count(), 1, "{p}");
            assert!(!CSS.contains(p) && !JS.contains(p), "{p}");
        }
    }

    #[test]
    fn curves_are_sent_with_six_significant_digits_and_params_with_all() {
        let report = Report {
            instances: vec![InstanceView {
                params: [("lr".to_owned(), Value::from(0.123456789))].into(),
                curves: [("loss".to_owned(), vec![(1, Some(1.0 / 3.0)), (2, None)])].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = render(report);
        assert!(page.contains("\"lr\":0.123456789"), "{page}");
        assert!(page.contains("[[1,0.333333],[2,null]]"), "{page}");
    }

    /// 20 runs of 20,000 logged steps: the page holds a few hundred points per run, says how
    /// many lines it thinned, and is a small fraction of what every point would take.
    #[test]
    fn a_page_of_long_runs_is_thinned_and_says_so() {
        let run = |k: u64| InstanceView {
            curves: [(
                "loss".to_owned(),
                (0..20_000u64)
                    .map(|s| (s, Some(1.0 / (1.0 + (s + k) as f64))))
                    .collect(),
            )]
            .into(),
            ..Default::default()
        };
        let report = Report {
            instances: (0..20).map(run).collect(),
            ..Default::default()
        };
        let page = render(report.clone());
        assert!(page.contains("\"thinned\":20"), "the page says how many");
        let whole = serde_json::to_string(&report).unwrap().len();
        assert!(
            page.len() * 10 < whole,
            "{} bytes thinned, {whole} whole",
            page.len()
        );
    }

    #[test]
    fn a_stderr_tail_holding_a_closing_script_tag_cannot_end_the_data_early() {
        let report = Report {
            pipeline: "p<1>".into(),
            instances: vec![InstanceView {
                stderr_tail: Some("boom </script><script>alert(1)</script> {{DATA}}".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = render(report);
        let start = page.find("id=\"ablate-data\">").unwrap();
        let data = &page[start + "id=\"ablate-data\">".len()..];
        let end = data.find("</script>").unwrap();
        let json: Value = serde_json::from_str(&data[..end]).unwrap();
        assert_eq!(
            json["instances"][0]["stderr_tail"],
            "boom </script><script>alert(1)</script> {{DATA}}"
        );
        assert!(page.contains("<title>ablate — p&lt;1&gt;</title>"));
    }
}
