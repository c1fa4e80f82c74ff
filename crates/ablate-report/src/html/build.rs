//! From plain records to what the page draws: curves grouped and aggregated, the
//! parallel-coordinates rows of a sweep, report tables as formatted cells, claims.

use std::collections::{BTreeMap, BTreeSet};

use ablate_results::{ColumnData, Table, format_metric};
use serde_json::Value;

use super::{
    Axis, Cell, ClaimView, ColumnView, CurveSeries, CurveSet, Grouping, InstanceView, Parallel,
    ParallelRow, TableView, finite,
};
use crate::stats::mean_std;

/// The label key that tells repeated runs of one configuration apart.
const SEED: &str = "seed";

/// Statuses whose metrics a report shows (a pruned run's curve stops at its rung).
fn has_result(i: &InstanceView) -> bool {
    matches!(i.status.as_str(), "ran" | "cached" | "pruned")
}

/// A param value as labels show it (strings without their quotes).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The params that vary among `members` (in name order), the seed included.
fn varying(members: &[&InstanceView]) -> Vec<String> {
    let mut values: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for i in members {
        for (k, v) in &i.params {
            values.entry(k).or_default().insert(v.to_string());
        }
    }
    // A param some members lack varies too (`null` against a value).
    values
        .into_iter()
        .filter(|(k, vs)| vs.len() > 1 || members.iter().any(|i| !i.params.contains_key(*k)))
        .map(|(k, _)| k.to_owned())
        .collect()
}

/// The instances of each stage with a result, stages in the order they first appear.
fn by_stage(instances: &[InstanceView]) -> Vec<(&str, Vec<&InstanceView>)> {
    let mut out: Vec<(&str, Vec<&InstanceView>)> = Vec::new();
    for i in instances.iter().filter(|i| has_result(i)) {
        match out.iter_mut().find(|(s, _)| *s == i.stage) {
            Some((_, v)) => v.push(i),
            None => out.push((&i.stage, vec![i])),
        }
    }
    out
}

/// Per stage and stepped metric, the lines the page offers: one per configuration (every
/// varying param but the seed), and one per value of each varying param (over everything
/// else). Each point is the mean at that step over the group's runs that logged it, the band
/// mean ± sd where two or more did. `x_of(op)` names the x axis.
pub fn curves(instances: &[InstanceView], x_of: &dyn Fn(&str) -> String) -> Vec<CurveSet> {
    let mut out = Vec::new();
    curves_in_order(instances, x_of, &mut out);
    // The page opens on the first set: one whose lines have several runs each (seeds) draws
    // what the page is for, a mean with its band; the pipeline's order otherwise.
    let replicated = |s: &CurveSet| {
        s.groupings
            .first()
            .is_some_and(|g| g.series.iter().any(|s| s.n > 1))
    };
    let (mut first, rest): (Vec<_>, Vec<_>) = out.into_iter().partition(replicated);
    first.extend(rest);
    first
}

fn curves_in_order(
    instances: &[InstanceView],
    x_of: &dyn Fn(&str) -> String,
    out: &mut Vec<CurveSet>,
) {
    for (stage, members) in by_stage(instances) {
        let metrics: BTreeSet<&str> = members
            .iter()
            .flat_map(|i| i.curves.keys().map(String::as_str))
            .collect();
        if metrics.is_empty() {
            continue;
        }
        let metrics = by_interest(metrics);
        let axes = varying(&members);
        let config: Vec<&str> = axes
            .iter()
            .map(String::as_str)
            .filter(|k| *k != SEED)
            .collect();
        let mut ways: Vec<(String, Vec<&str>)> = vec![("config".to_owned(), config.clone())];
        if config.len() > 1 {
            ways.extend(config.iter().map(|k| ((*k).to_owned(), vec![*k])));
        }
        for metric in metrics {
            let logged: Vec<&InstanceView> = members
                .iter()
                .copied()
                .filter(|i| i.curves.contains_key(metric))
                .collect();
            let groupings = ways
                .iter()
                .map(|(by, keys)| Grouping {
                    by: by.clone(),
                    series: group_series(&logged, keys, metric),
                })
                .collect();
            out.push(CurveSet {
                stage: stage.to_owned(),
                metric: metric.to_owned(),
                x: x_of(&members[0].op),
                groupings,
            });
        }
    }
}

fn group_label(i: &InstanceView, keys: &[&str]) -> String {
    if keys.is_empty() {
        return "all".to_owned();
    }
    keys.iter()
        .map(|k| format!("{k}={}", i.params.get(*k).map_or("–".into(), text)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn group_series(members: &[&InstanceView], keys: &[&str], metric: &str) -> Vec<CurveSeries> {
    let mut groups: Vec<(String, Vec<&InstanceView>)> = Vec::new();
    for i in members {
        let label = group_label(i, keys);
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(i),
            None => groups.push((label, vec![i])),
        }
    }
    groups
        .into_iter()
        .map(|(label, runs)| {
            let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for r in &runs {
                for &(step, v) in &r.curves[metric] {
                    let e = at.entry(step).or_default();
                    if let Some(v) = v {
                        e.push(v);
                    }
                }
            }
            let mut s = CurveSeries {
                label,
                n: runs.len(),
                step: Vec::with_capacity(at.len()),
                mean: Vec::with_capacity(at.len()),
                lo: Vec::with_capacity(at.len()),
                hi: Vec::with_capacity(at.len()),
                n_pruned: runs.iter().filter(|r| r.status == "pruned").count(),
                pruned: false,
            };
            s.pruned = s.n_pruned == s.n;
            for (step, values) in at {
                let (mean, sd) = if values.is_empty() {
                    (None, None)
                } else {
                    let (m, sd) = mean_std(&values);
                    (finite(m), sd.and_then(finite))
                };
                s.step.push(step);
                s.mean.push(mean);
                let band = mean.zip(sd);
                s.lo.push(band.map(|(m, sd)| m - sd));
                s.hi.push(band.map(|(m, sd)| m + sd));
            }
            s
        })
        .collect()
}

/// Which way a metric is better, guessed from its name where no table says: `Some(true)` for
/// losses, errors, perplexities, times; `Some(false)` for accuracies, exact matches, scores;
/// `None` for the rest (a parameter count, a norm), which no table marks as best.
pub fn lower_is_better(metric: &str) -> Option<bool> {
    let m = metric.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["loss", "nll", "err", "ppl", "perplex", "time", "fold_frac"]) {
        Some(true)
    } else if has(&["acc", "_em", "em_", "f1", "score", "auc", "bleu", "passed"]) || m == "em" {
        Some(false)
    } else {
        None
    }
}

/// Metrics in the order a reader wants to pick from: quality first (accuracies, losses), then
/// the rest, each group by name.
fn by_interest<'a>(metrics: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = metrics.into_iter().collect();
    v.sort_by_key(|m| (lower_is_better(m).is_none(), *m));
    v
}

/// The sweeps with more than two axes (params that vary, the seed included): one row per
/// instance with a result, its params against its final metrics.
pub fn parallel(instances: &[InstanceView]) -> Vec<Parallel> {
    let mut out = Vec::new();
    for (stage, members) in by_stage(instances) {
        let names = varying(&members);
        if names.len() <= 2 {
            continue;
        }
        let metrics: BTreeSet<&str> = members
            .iter()
            .flat_map(|i| i.metrics.keys().map(String::as_str))
            .collect();
        if metrics.is_empty() {
            continue;
        }
        let axes = names
            .iter()
            .map(|name| {
                let values: Vec<&Value> = members
                    .iter()
                    .map(|i| i.params.get(name).unwrap_or(&Value::Null))
                    .collect();
                axis(name, &values)
            })
            .collect();
        let rows = members
            .iter()
            .map(|i| ParallelRow {
                instance: i.id,
                values: names
                    .iter()
                    .map(|n| i.params.get(n).cloned().unwrap_or(Value::Null))
                    .collect(),
                metrics: metrics
                    .iter()
                    .map(|m| ((*m).to_owned(), i.metrics.get(*m).copied().flatten()))
                    .collect(),
            })
            .collect();
        out.push(Parallel {
            stage: stage.to_owned(),
            axes,
            rows,
            metrics: by_interest(metrics.iter().copied())
                .into_iter()
                .map(str::to_owned)
                .collect(),
            lower_is_better: metrics
                .iter()
                .filter(|m| lower_is_better(m) == Some(true))
                .map(|m| (*m).to_owned())
                .collect(),
        });
    }
    out
}

/// Numbers on a linear scale, or a log one when they are positive and span two decades (a
/// learning rate); anything else as categories in first-seen order (numbers sorted).
fn axis(name: &str, values: &[&Value]) -> Axis {
    let nums: Option<Vec<f64>> = values.iter().map(|v| v.as_f64()).collect();
    let mut distinct: Vec<Value> = Vec::new();
    for v in values {
        if !distinct.contains(v) {
            distinct.push((*v).clone());
        }
    }
    match nums {
        Some(mut nums) if distinct.len() > 1 => {
            nums.sort_by(f64::total_cmp);
            let (lo, hi) = (nums[0], nums[nums.len() - 1]);
            distinct.sort_by(|a, b| a.as_f64().unwrap().total_cmp(&b.as_f64().unwrap()));
            // Few distinct numbers (steps 2, 4, 8) read best as evenly spaced categories.
            let kind = if lo > 0.0 && hi / lo >= 100.0 {
                "log"
            } else if distinct.len() <= 6 {
                "cat"
            } else {
                "num"
            };
            Axis {
                name: name.to_owned(),
                kind,
                values: distinct,
            }
        }
        _ => Axis {
            name: name.to_owned(),
            kind: "cat",
            values: distinct,
        },
    }
}

/// The suffixes of the columns one statistic cell is made of (`acc[steps=4].mean`, `.std`, …).
const STAT_PARTS: [&str; 11] = [
    "mean",
    "iqm",
    "std",
    "n",
    "ci_low",
    "ci_high",
    "delta",
    "delta_low",
    "delta_high",
    "delta_n",
    "missing",
];

/// A report table's Parquet as the page's sortable table: the row-label columns, then one cell
/// per statistic (mean ± sd (n), its interval, its paired difference from a baseline), the
/// best mean of each column marked. `rows` names the label columns (the op's `rows` param),
/// `lower` the metrics where smaller is better, `precision` the decimals shown.
pub fn table_view(
    stage: &str,
    title: &str,
    table: &Table,
    rows: &[String],
    lower: &[String],
    precision: usize,
) -> TableView {
    let n_rows = table.columns.first().map_or(0, |c| c.data.len());
    let col = |name: &str| table.columns.iter().find(|c| c.name == name);
    let num = |name: &str, r: usize| col(name).and_then(|c| float_at(&c.data, r));
    // The statistic a cell is centred on: the mean (`mean_std`) or the IQM (`iqm`).
    let center = |prefix: &str| {
        ["mean", "iqm"]
            .into_iter()
            .find(|s| col(&format!("{prefix}.{s}")).is_some())
    };
    // Column groups in table order: a label column, a statistic (by prefix) or a plain column.
    enum Group {
        Label(String),
        Stat(String),
        Plain(String),
    }
    let mut groups: Vec<Group> = Vec::new();
    for c in &table.columns {
        if rows.contains(&c.name) {
            groups.push(Group::Label(c.name.clone()));
            continue;
        }
        let stat = c
            .name
            .rsplit_once('.')
            .filter(|(prefix, part)| STAT_PARTS.contains(part) && center(prefix).is_some())
            .map(|(prefix, _)| prefix.to_owned());
        match stat {
            Some(prefix) => {
                if !groups
                    .iter()
                    .any(|g| matches!(g, Group::Stat(p) if *p == prefix))
                {
                    groups.push(Group::Stat(prefix));
                }
            }
            None => groups.push(Group::Plain(c.name.clone())),
        }
    }
    let fmt = |x: f64| format!("{x:.precision$}");
    let signed = |x: f64| format!("{x:+.precision$}");
    let mut columns = Vec::new();
    let mut cells: Vec<Vec<Cell>> = vec![Vec::new(); n_rows];
    for g in &groups {
        match g {
            Group::Label(name) | Group::Plain(name) => {
                let is_label = matches!(g, Group::Label(_));
                columns.push(ColumnView {
                    name: name.clone(),
                    kind: if is_label { "label" } else { "stat" },
                });
                let c = col(name).expect("a column of this table");
                for (r, row) in cells.iter_mut().enumerate() {
                    let gain = name.ends_with(crate::GAIN_SUFFIX);
                    let (text, sort) = match float_at(&c.data, r) {
                        Some(x) if gain => (format!("{x:+.1}%"), Value::from(x)),
                        Some(x) if !is_label => (fmt(x), Value::from(x)),
                        _ => {
                            let v = value_at(&c.data, r);
                            let t = if v.is_null() { String::new() } else { text(&v) };
                            let sort = match v.as_f64() {
                                Some(x) if x.is_finite() => Value::from(x),
                                _ if v.is_null() => Value::Null,
                                _ => Value::String(t.clone()),
                            };
                            (t, sort)
                        }
                    };
                    row.push(Cell {
                        text,
                        sort,
                        ..Cell::default()
                    });
                }
            }
            Group::Stat(prefix) => {
                columns.push(ColumnView {
                    name: prefix.clone(),
                    kind: "stat",
                });
                let metric = prefix.split(['[', '.']).next().unwrap_or(prefix);
                // The table's `lower_is_better` decides; else the metric's name, if it tells.
                let lower = if lower.iter().any(|m| m == metric) {
                    Some(true)
                } else {
                    lower_is_better(metric)
                };
                let centre = center(prefix).expect("a statistic group has one");
                let means: Vec<Option<f64>> = (0..n_rows)
                    .map(|r| num(&format!("{prefix}.{centre}"), r))
                    .collect();
                let best = lower.and_then(|lower| {
                    means.iter().flatten().copied().reduce(
                        |a, b| {
                            if (b < a) == lower { b } else { a }
                        },
                    )
                });
                for (r, row) in cells.iter_mut().enumerate() {
                    let part = |p: &str| num(&format!("{prefix}.{p}"), r);
                    let missing = col(&format!("{prefix}.missing"))
                        .map(|c| value_at(&c.data, r))
                        .filter(|v| !v.is_null())
                        .map(|v| text(&v));
                    let mut cell = Cell::default();
                    match means[r] {
                        Some(m) => {
                            let sd = part("std").map(|s| format!(" ± {}", fmt(s)));
                            let n = part("n").map(|n| format!(" ({n})"));
                            cell.text = format!(
                                "{}{}{}",
                                fmt(m),
                                sd.unwrap_or_default(),
                                n.unwrap_or_default()
                            );
                            cell.sort = Value::from(m);
                            cell.best = n_rows > 1 && best == Some(m);
                        }
                        None => {
                            cell.text = "–".into();
                            cell.sort = Value::Null;
                        }
                    }
                    if let (Some(lo), Some(hi)) = (part("ci_low"), part("ci_high")) {
                        cell.ci = Some(format!("[{}, {}]", fmt(lo), fmt(hi)));
                    } else if part("n") == Some(1.0) {
                        cell.ci = Some("one run: no interval".into());
                    }
                    if let Some(d) = part("delta") {
                        let range = part("delta_low")
                            .zip(part("delta_high"))
                            .map(|(lo, hi)| format!(" [{}, {}]", signed(lo), signed(hi)))
                            .unwrap_or_default();
                        cell.delta = Some(match part("delta_n") {
                            // A baseline cell: its difference from itself.
                            None => "baseline".to_owned(),
                            Some(0.0) => "Δ: no seed in common with the baseline".into(),
                            Some(1.0) => format!("Δ {} (1 pair, no interval)", signed(d)),
                            Some(n) => format!("Δ {}{range} ({n} pairs)", signed(d)),
                        });
                    }
                    let mut title = Vec::new();
                    if let Some(m) = missing.filter(|m| !m.is_empty()) {
                        cell.text.push_str(&format!(" ({m})"));
                        title.push(format!("not aggregated: {m}"));
                    }
                    if cell.ci.as_deref().is_some_and(|c| c.starts_with('[')) {
                        title.push(format!(
                            "bootstrap confidence interval of the {}",
                            if centre == "iqm" { "IQM" } else { "mean" }
                        ));
                        // Few runs: the interval cannot say more than their range does.
                        let n = part("n").map_or(0, |n| n as usize);
                        if let Some(most) = crate::stats::range_coverage(n, 0.95) {
                            title.push(format!(
                                "with {n} runs it lies within their range, which holds the mean \
                                 at most {} of the time",
                                crate::stats::percent(most)
                            ));
                        }
                    }
                    if !title.is_empty() {
                        cell.title = Some(title.join("; "));
                    }
                    row.push(cell);
                }
            }
        }
    }
    TableView {
        stage: stage.to_owned(),
        title: title.to_owned(),
        note: String::new(),
        columns,
        rows: cells,
    }
}

/// A cell as JSON (null for a null cell).
fn value_at(data: &ColumnData, r: usize) -> Value {
    match data {
        ColumnData::Bool(v) => v.get(r).copied().flatten().map_or(Value::Null, Value::from),
        ColumnData::Int(v) => v.get(r).copied().flatten().map_or(Value::Null, Value::from),
        ColumnData::Float(v) => v
            .get(r)
            .copied()
            .flatten()
            .and_then(finite)
            .map_or(Value::Null, Value::from),
        ColumnData::Str(v) => v.get(r).cloned().flatten().map_or(Value::Null, Value::from),
    }
}

fn float_at(data: &ColumnData, r: usize) -> Option<f64> {
    match data {
        ColumnData::Float(v) => v.get(r).copied().flatten().and_then(finite),
        ColumnData::Int(v) => v.get(r).copied().flatten().map(|x| x as f64),
        _ => None,
    }
}

/// A `report.claims` table (`claim`, `assert`, `lhs`, `rhs`, `result`, `detail`, and any
/// further columns) as the page's rows.
pub fn claims_view(stage: &str, table: &Table) -> Vec<ClaimView> {
    let n = table.columns.first().map_or(0, |c| c.data.len());
    let get = |name: &str, r: usize| {
        table
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| value_at(&c.data, r))
            .filter(|v| !v.is_null())
    };
    (0..n)
        .map(|r| {
            let s = |name: &str| get(name, r).map(|v| text(&v)).unwrap_or_default();
            let mut observed = match (get("lhs", r), get("rhs", r)) {
                (Some(l), Some(r)) => format!("{} vs {}", show(&l), show(&r)),
                (Some(l), None) => show(&l),
                _ => "–".into(),
            };
            if let (Some(lo), Some(hi)) = (get("ci_low", r), get("ci_high", r)) {
                let level = get("level", r)
                    .and_then(|l| l.as_f64())
                    .map(|l| format!(" ({}%)", format_metric(l * 100.0)))
                    .unwrap_or_default();
                observed.push_str(&format!(" [{}, {}]{level}", show(&lo), show(&hi)));
            }
            let verdict = match s("result").as_str() {
                "pass" => "holds",
                "fail" => "fails",
                _ => "undecided",
            };
            let (name, claim) = (s("claim"), s("assert"));
            let known = [
                "claim", "assert", "lhs", "rhs", "result", "detail", "level", "ci_low", "ci_high",
            ];
            let mut detail = vec![s("detail")];
            for c in table
                .columns
                .iter()
                .filter(|c| !known.contains(&c.name.as_str()))
            {
                let v = value_at(&c.data, r);
                if !v.is_null() {
                    detail.push(format!("{}: {}", c.name, show(&v)));
                }
            }
            detail.retain(|d| !d.is_empty());
            ClaimView {
                stage: stage.to_owned(),
                name,
                claim,
                observed,
                verdict: verdict.to_owned(),
                detail: detail.join("; "),
            }
        })
        .collect()
}

fn show(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format_metric(x),
        None => text(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: usize, params: Value, status: &str, loss: &[(u64, f64)]) -> InstanceView {
        InstanceView {
            id,
            stage: "train".into(),
            op: "train.flow".into(),
            status: status.into(),
            params: serde_json::from_value(params).unwrap(),
            metrics: [("acc".to_owned(), Some(0.5 + id as f64 / 100.0))].into(),
            curves: [(
                "loss".to_owned(),
                loss.iter().map(|&(s, v)| (s, Some(v))).collect(),
            )]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_configuration_line_is_the_mean_over_its_seeds_with_a_band_of_one_sd() {
        let runs = vec![
            run(
                0,
                json!({"w": "a", "seed": 0}),
                "ran",
                &[(1, 1.0), (2, 0.5)],
            ),
            run(
                1,
                json!({"w": "a", "seed": 1}),
                "cached",
                &[(1, 3.0), (2, 0.7)],
            ),
            run(2, json!({"w": "b", "seed": 0}), "ran", &[(1, 2.0)]),
            run(3, json!({"w": "b", "seed": 1}), "failed", &[(1, 9.0)]),
        ];
        let sets = curves(&runs, &|_| "epoch".into());
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].x, "epoch");
        // One varying param besides the seed: `config` is the only grouping.
        assert_eq!(sets[0].groupings.len(), 1);
        let s = &sets[0].groupings[0].series;
        assert_eq!(s[0].label, "w=a");
        assert_eq!((s[0].n, s[0].step.clone()), (2, vec![1, 2]));
        assert_eq!(s[0].mean, [Some(2.0), Some(0.6)]);
        // sd of (1, 3) = √2.
        let sd = 2f64.sqrt();
        assert_eq!(s[0].lo[0], Some(2.0 - sd));
        assert_eq!(s[0].hi[0], Some(2.0 + sd));
        // The failed seed is not drawn: `b` is one run, so no band.
        assert_eq!((s[1].n, s[1].mean.clone()), (1, vec![Some(2.0)]));
        assert_eq!(s[1].lo, [None]);
    }

    #[test]
    fn several_axes_give_a_grouping_per_param_and_a_parallel_view() {
        let mut runs = Vec::new();
        for (i, (w, k, seed)) in [("a", 2, 0), ("a", 4, 0), ("b", 2, 1), ("b", 4, 1)]
            .into_iter()
            .enumerate()
        {
            let status = if i == 3 { "pruned" } else { "ran" };
            runs.push(run(
                i,
                json!({"w": w, "k": k, "seed": seed}),
                status,
                &[(1, 1.0)],
            ));
        }
        let sets = curves(&runs, &|_| "step".into());
        let by: Vec<&str> = sets[0].groupings.iter().map(|g| g.by.as_str()).collect();
        assert_eq!(by, ["config", "k", "w"]);
        let w = &sets[0].groupings[2].series;
        assert_eq!(
            (w[1].label.as_str(), w[1].n_pruned, w[1].pruned),
            ("w=b", 1, false)
        );
        let p = parallel(&runs);
        assert_eq!(p.len(), 1);
        let names: Vec<&str> = p[0].axes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["k", "seed", "w"]);
        assert_eq!(p[0].axes[0].kind, "cat");
        assert_eq!(p[0].rows[3].values, [json!(4), json!(1), json!("b")]);
        assert_eq!(p[0].rows[3].metrics["acc"], Some(0.53));
        // Two axes are not a parallel-coordinates sweep.
        runs.iter_mut().for_each(|r| {
            r.params.remove("k");
        });
        assert!(parallel(&runs).is_empty());
    }

    #[test]
    fn the_first_curves_are_those_with_several_runs_per_line() {
        let mut single = run(0, json!({"w": "a"}), "ran", &[(1, 1.0)]);
        single.stage = "lm".into();
        let runs = vec![
            single,
            run(1, json!({"w": "a", "seed": 0}), "ran", &[(1, 1.0)]),
            run(2, json!({"w": "a", "seed": 1}), "ran", &[(1, 2.0)]),
        ];
        let stages: Vec<String> = curves(&runs, &|_| "step".into())
            .into_iter()
            .map(|c| c.stage)
            .collect();
        assert_eq!(stages, ["train", "lm"]);
    }

    #[test]
    fn a_learning_rate_spanning_decades_is_a_log_axis() {
        let v = [json!(0.001), json!(0.01), json!(0.1)];
        let refs: Vec<&Value> = v.iter().collect();
        assert_eq!(axis("lr", &refs).kind, "log");
        let v = [
            json!(1.0),
            json!(2.0),
            json!(3.0),
            json!(4.0),
            json!(5.0),
            json!(6.0),
            json!(7.0),
        ];
        let refs: Vec<&Value> = v.iter().collect();
        assert_eq!(axis("x", &refs).kind, "num");
    }

    #[test]
    fn a_table_cell_gathers_mean_sd_n_interval_and_paired_difference() {
        let t = Table::new()
            .with_column("w", vec![Some("a".to_owned()), Some("b".to_owned())])
            .with_column("acc[k=2].mean", vec![Some(0.9), Some(0.8)])
            .with_column("acc[k=2].std", vec![Some(0.01), None])
            .with_column("acc[k=2].n", vec![Some(3i64), Some(1)])
            .with_column("acc[k=2].ci_low", vec![Some(0.89), None])
            .with_column("acc[k=2].ci_high", vec![Some(0.91), None])
            .with_column("acc[k=2].delta", vec![Some(0.1), Some(0.0)])
            .with_column("acc[k=2].delta_low", vec![Some(0.05), None])
            .with_column("acc[k=2].delta_high", vec![Some(0.15), None])
            .with_column("acc[k=2].delta_n", vec![Some(3i64), None]);
        let v = table_view("t", "acc", &t, &["w".to_owned()], &[], 2);
        // `acc` is better higher, by its name.
        let names: Vec<&str> = v.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["w", "acc[k=2]"]);
        let a = &v.rows[0][1];
        assert_eq!(a.text, "0.90 ± 0.01 (3)");
        assert_eq!(a.ci.as_deref(), Some("[0.89, 0.91]"));
        assert_eq!(a.delta.as_deref(), Some("Δ +0.10 [+0.05, +0.15] (3 pairs)"));
        // The second row has no pairs count: a baseline cell.
        assert_eq!(v.rows[1][1].delta.as_deref(), Some("baseline"));
        assert!(a.best);
        let b = &v.rows[1][1];
        assert_eq!(b.text, "0.80 (1)");
        assert_eq!(b.ci.as_deref(), Some("one run: no interval"));
        assert!(!b.best);
        // Lower is better: the other cell is best.
        let v = table_view("t", "acc", &t, &["w".to_owned()], &["acc".to_owned()], 2);
        assert!(v.rows[1][1].best && !v.rows[0][1].best);
        // A metric whose direction nobody knows (a parameter count) has no best cell.
        let renamed = Table {
            columns: t
                .columns
                .iter()
                .map(|c| {
                    ablate_results::Column::new(c.name.replace("acc", "params"), c.data.clone())
                })
                .collect(),
        };
        let v = table_view("t", "params", &renamed, &["w".to_owned()], &[], 2);
        assert!(v.rows.iter().all(|r| !r[1].best));
    }

    /// An `iqm` table's cells centre on the IQM, with its interval; three runs are few enough
    /// for the cell's title to say what any interval within their range can cover.
    #[test]
    fn an_iqm_cell_shows_the_iqm_and_its_interval() {
        let t = Table::new()
            .with_column("w", vec![Some("a".to_owned()), Some("b".to_owned())])
            .with_column("loss.iqm", vec![Some(0.25), Some(0.5)])
            .with_column("loss.n", vec![Some(3i64), Some(8)])
            .with_column("loss.ci_low", vec![Some(0.2), Some(0.45)])
            .with_column("loss.ci_high", vec![Some(0.3), Some(0.55)]);
        let v = table_view("t", "loss", &t, &["w".to_owned()], &[], 2);
        let names: Vec<&str> = v.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["w", "loss"]);
        let a = &v.rows[0][1];
        assert_eq!(a.text, "0.25 (3)");
        assert_eq!(a.ci.as_deref(), Some("[0.20, 0.30]"));
        assert!(a.best, "a loss: lower is better");
        assert_eq!(
            a.title.as_deref(),
            Some(
                "bootstrap confidence interval of the IQM; with 3 runs it lies within their \
                 range, which holds the mean at most 75% of the time"
            )
        );
        assert_eq!(
            v.rows[1][1].title.as_deref(),
            Some("bootstrap confidence interval of the IQM")
        );
    }

    #[test]
    fn claims_rows_say_holds_fails_or_undecided() {
        let t = Table::new()
            .with_column("claim", vec![Some("a".to_owned()), Some("b".to_owned())])
            .with_column(
                "assert",
                vec![Some("x > 1".to_owned()), Some("y > 1".to_owned())],
            )
            .with_column("lhs", vec![Some(2.0), None])
            .with_column("rhs", vec![Some(1.0), None])
            .with_column(
                "result",
                vec![Some("pass".to_owned()), Some("undecided".to_owned())],
            )
            .with_column(
                "detail",
                vec![Some(String::new()), Some("no data".to_owned())],
            );
        let c = claims_view("claims", &t);
        assert_eq!((c[0].name.as_str(), c[0].claim.as_str()), ("a", "x > 1"));
        assert_eq!(
            (c[0].verdict.as_str(), c[0].observed.as_str()),
            ("holds", "2 vs 1")
        );
        assert_eq!(
            (c[1].verdict.as_str(), c[1].detail.as_str()),
            ("undecided", "no data")
        );
    }
}
