//! Aggregation for `report.table`: observations (labels + metrics) → a wide table and its
//! Markdown rendering.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::relative::{self, Relative};
use crate::stats::{
    Bootstrap, Interval, bootstrap_iqm, bootstrap_mean, iqm, mean, mean_of, mean_std, median,
};
use ablate_results::ResultsError;
use ablate_results::value::{Kind, cmp_tuples, column_data, display};
use ablate_results::{Align, escape_markdown, markdown_table};
use ablate_results::{Column, ColumnData, Table};

/// One instance as the report sees it: its labels (params, matrix values, seed) and its final
/// metrics — or, for an instance without a result to show, why (`missing`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub labels: BTreeMap<String, Value>,
    pub metrics: BTreeMap<String, f64>,
    /// Why the instance has no result to show: `failed`, `skipped`, `diverged` (its metrics,
    /// if any, are not used). Its cell says so, beside the aggregate of those that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// How the observations in one cell are combined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Mean, sample standard deviation (n − 1) and count, and (with `ci`) the bootstrap
    /// confidence interval of the mean.
    #[default]
    MeanStd,
    Mean,
    Median,
    /// The interquartile mean ([`crate::stats::iqm`]): robust to an outlying seed.
    Iqm,
    Min,
    Max,
    Count,
}

impl Aggregate {
    /// The serde name, also the column suffix of single aggregates (`test_acc.median`).
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::MeanStd => "mean_std",
            Aggregate::Mean => "mean",
            Aggregate::Median => "median",
            Aggregate::Iqm => "iqm",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Count => "count",
        }
    }

    /// The column a cell's centre goes in: `mean` for `mean_std`, else the aggregate's name.
    fn centre(self) -> &'static str {
        match self {
            Aggregate::MeanStd => "mean",
            agg => agg.name(),
        }
    }
}

/// What to group by and aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PivotSpec {
    /// Label keys whose distinct value combinations make the output rows.
    #[serde(default)]
    pub rows: Vec<String>,
    /// Label keys whose distinct value combinations make the column groups.
    #[serde(default)]
    pub cols: Vec<String>,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Decimals shown in the Markdown cells (the Parquet table keeps full precision).
    #[serde(default = "default_precision")]
    pub precision: usize,
    /// Gains over baseline cells, beside the absolute values (see [`crate::relative`]).
    #[serde(default)]
    pub relative: Option<Relative>,
    /// Rows best first by one metric's mean (rows without one last), instead of by label:
    /// a search's best configurations first. Only without `cols`.
    #[serde(default)]
    pub best: Option<Best>,
    /// `mean_std`'s confidence interval of each cell's mean, and the interval of each paired
    /// difference with `relative`; `None`: no intervals.
    #[serde(default = "default_ci")]
    pub ci: Option<Bootstrap>,
    /// The label that pairs a cell's observations with its baseline's for the paired
    /// differences of `relative` (the seed: both sides saw the same data order and init).
    #[serde(default = "default_pair_by")]
    pub pair_by: String,
}

fn default_ci() -> Option<Bootstrap> {
    Some(Bootstrap::default())
}

/// `seed`.
pub fn default_pair_by() -> String {
    "seed".to_owned()
}

/// Rows ordered by a metric, best first, and at most `top` of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Best {
    pub metric: String,
    /// `true`: a smaller value is better (a loss).
    pub lower: bool,
    /// Keep only the best `top` rows (`None`: all).
    #[serde(default)]
    pub top: Option<usize>,
}

fn default_precision() -> usize {
    3
}

/// The wide table (for Parquet) and its Markdown rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Pivot {
    pub table: Table,
    pub markdown: String,
}

/// Groups `obs` by the values of `spec.rows` (output rows) and `spec.cols` (column groups),
/// both sorted by value, and aggregates each metric over the observations in each cell; the
/// label keys in neither (seeds, typically) are what gets aggregated over.
///
/// Table columns: the row keys, then per metric (in `spec.metrics` order) and per column
/// group, `metric[k=v,…].mean`/`.std`/`.n` for `mean_std`, or `metric[k=v,…].<aggregate>`
/// (`metric.<aggregate>` when there are no `cols`). Missing combinations are null, and so is
/// the `std` of one observation. When some observations are `missing` (inputs that did not
/// finish), each group also gets `metric[k=v,…].missing`: what is missing from the cell (`1
/// failed`), null where nothing is; a cell with nothing else has a null aggregate and `n` 0.
///
/// With `spec.relative`, each absolute column gets a gain column beside it, named
/// `<prefix> (Δ% vs base)`, all after the absolute columns; the Markdown shows the gains first,
/// then the absolute values.
pub fn pivot(obs: &[Observation], spec: &PivotSpec) -> Result<Pivot, ResultsError> {
    validate(spec)?;
    let mut grid = Grid::build(obs, spec)?;
    if let Some(best) = &spec.best {
        grid.order_by(spec, best);
    }
    let mut table = grid.table(spec)?;
    let mut markdown = grid.markdown(spec);
    if let Some(rel) = &spec.relative {
        let gains = relative::gains(&grid, spec, rel)?;
        table.columns.extend(gains.columns(&grid, spec));
        table.validate()?;
        markdown = format!(
            "{}\n{}\n**Absolute values**\n\n{markdown}",
            gains.markdown(&grid, spec, rel),
            gains.paired_markdown(&grid, spec)
        );
    }
    Ok(Pivot { table, markdown })
}

fn validate(spec: &PivotSpec) -> Result<(), ResultsError> {
    let invalid = |reason: String| Err(ResultsError::InvalidPivot { reason });
    if spec.metrics.is_empty() {
        return invalid("no metrics to aggregate".to_owned());
    }
    for (what, keys) in [
        ("rows", &spec.rows),
        ("cols", &spec.cols),
        ("metrics", &spec.metrics),
    ] {
        let mut seen = HashSet::new();
        if let Some(dup) = keys.iter().find(|k| !seen.insert(*k)) {
            return invalid(format!("`{dup}` is listed twice in `{what}`"));
        }
    }
    if let Some(both) = spec.rows.iter().find(|k| spec.cols.contains(k)) {
        return invalid(format!("`{both}` is in both `rows` and `cols`"));
    }
    if let Some(rel) = &spec.relative {
        relative::validate(spec, rel)?;
    }
    if let Some(b) = spec.ci
        && (!(b.level > 0.0 && b.level < 1.0) || b.resamples == 0)
    {
        return invalid(format!(
            "a confidence level is between 0 and 1 (exclusive) and takes at least one \
             resample, not {} with {}",
            b.level, b.resamples
        ));
    }
    if let Some(best) = &spec.best {
        if !spec.metrics.contains(&best.metric) {
            return invalid(format!(
                "the best rows are ranked by `{}`, which is not among the metrics",
                best.metric
            ));
        }
        if !spec.cols.is_empty() {
            return invalid("best rows first needs a table without `cols`".to_owned());
        }
        if best.top == Some(0) {
            return invalid("`top` keeps at least one row".to_owned());
        }
    }
    Ok(())
}

/// Observations sorted into cells: `values[metric][row][col]`.
pub(crate) struct Grid<'a> {
    pub(crate) row_keys: Vec<Vec<&'a Value>>,
    pub(crate) col_keys: Vec<Vec<&'a Value>>,
    pub(crate) values: Vec<Vec<Vec<Vec<f64>>>>,
    /// `gaps[row][col]`: why each missing observation of the cell is missing.
    pub(crate) gaps: Vec<Vec<Vec<&'a str>>>,
    /// `pairs[row][col][i]`: the `pair_by` label of the cell's i-th finished observation (the
    /// one behind `values[m][row][col][i]` for every metric m), if it has one.
    pub(crate) pairs: Vec<Vec<Vec<Option<&'a Value>>>>,
}

impl<'a> Grid<'a> {
    fn build(obs: &'a [Observation], spec: &PivotSpec) -> Result<Self, ResultsError> {
        let mut placed = Vec::with_capacity(obs.len());
        for (index, o) in obs.iter().enumerate() {
            let tuple = |keys: &[String]| -> Result<Vec<&'a Value>, ResultsError> {
                keys.iter()
                    .map(|key| {
                        o.labels.get(key).ok_or_else(|| ResultsError::MissingLabel {
                            index,
                            key: key.clone(),
                            available: o.labels.keys().cloned().collect(),
                        })
                    })
                    .collect()
            };
            let metrics = match &o.missing {
                Some(why) => Err(why.as_str()),
                None => Ok(spec
                    .metrics
                    .iter()
                    .map(|metric| {
                        o.metrics
                            .get(metric)
                            .copied()
                            .ok_or_else(|| ResultsError::MissingMetric {
                                index,
                                metric: metric.clone(),
                                available: o.metrics.keys().cloned().collect(),
                            })
                    })
                    .collect::<Result<Vec<f64>, _>>()?),
            };
            placed.push((
                tuple(&spec.rows)?,
                tuple(&spec.cols)?,
                metrics,
                o.labels.get(&spec.pair_by),
            ));
        }

        let distinct = |tuples: Vec<Vec<&'a Value>>| {
            let mut tuples = tuples;
            tuples.sort_by(|a, b| cmp_tuples(a, b));
            tuples.dedup_by(|a, b| cmp_tuples(a, b).is_eq());
            tuples
        };
        let row_keys = distinct(placed.iter().map(|(r, _, _, _)| r.clone()).collect());
        let col_keys = distinct(placed.iter().map(|(_, c, _, _)| c.clone()).collect());
        let position = |keys: &[Vec<&Value>], key: &[&Value]| {
            keys.binary_search_by(|k| cmp_tuples(k, key))
                .expect("every tuple is among the distinct tuples")
        };

        let mut values =
            vec![vec![vec![Vec::new(); col_keys.len()]; row_keys.len()]; spec.metrics.len()];
        let mut gaps = vec![vec![Vec::new(); col_keys.len()]; row_keys.len()];
        let mut pairs = vec![vec![Vec::new(); col_keys.len()]; row_keys.len()];
        for (row, col, metrics, pair) in &placed {
            let (r, c) = (position(&row_keys, row), position(&col_keys, col));
            match metrics {
                Ok(metrics) => {
                    for (m, &x) in metrics.iter().enumerate() {
                        values[m][r][c].push(x);
                    }
                    pairs[r][c].push(*pair);
                }
                Err(why) => gaps[r][c].push(*why),
            }
        }
        Ok(Self {
            row_keys,
            col_keys,
            values,
            gaps,
            pairs,
        })
    }

    /// Orders the rows by `best.metric`'s mean, best first (ties and rows without a value keep
    /// their label order, the latter last), and keeps the first `best.top`.
    fn order_by(&mut self, spec: &PivotSpec, best: &Best) {
        let m = spec
            .metrics
            .iter()
            .position(|x| *x == best.metric)
            .expect("validated");
        let mean = |r: usize| mean_of(&self.values[m][r][0]);
        let mut order: Vec<usize> = (0..self.row_keys.len()).collect();
        order.sort_by(|&a, &b| match (mean(a), mean(b)) {
            (Some(x), Some(y)) if best.lower => x.total_cmp(&y),
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        order.truncate(best.top.unwrap_or(usize::MAX));
        fn pick<T: Clone>(order: &[usize], v: &[T]) -> Vec<T> {
            order.iter().map(|&r| v[r].clone()).collect()
        }
        self.row_keys = pick(&order, &self.row_keys);
        self.gaps = pick(&order, &self.gaps);
        self.pairs = pick(&order, &self.pairs);
        self.values = self.values.iter().map(|v| pick(&order, v)).collect();
    }

    /// `metric[k=v,…]` (`metric` without `cols`): what a metric's columns are named after.
    pub(crate) fn column_prefix(
        &self,
        spec: &PivotSpec,
        metric: &str,
        col_key: &[&Value],
    ) -> String {
        if spec.cols.is_empty() {
            metric.to_owned()
        } else {
            format!("{metric}[{}]", assignments(&spec.cols, col_key))
        }
    }

    /// Whether any observation is missing.
    pub(crate) fn has_gaps(&self) -> bool {
        self.gaps.iter().flatten().any(|g| !g.is_empty())
    }

    fn table(&self, spec: &PivotSpec) -> Result<Table, ResultsError> {
        let mut columns = Vec::new();
        let has_gaps = self.has_gaps();
        for (j, key) in spec.rows.iter().enumerate() {
            let values: Vec<Option<&Value>> = self.row_keys.iter().map(|t| Some(t[j])).collect();
            let kind = Kind::infer(values.iter().copied());
            columns.push(Column::new(key, column_data(&values, kind)));
        }
        for (m, metric) in spec.metrics.iter().enumerate() {
            for (c, col_key) in self.col_keys.iter().enumerate() {
                let prefix = self.column_prefix(spec, metric, col_key);
                let cells: Vec<Option<Summary>> = self.values[m]
                    .iter()
                    .map(|row| summarize(&row[c], spec.aggregate, spec.ci))
                    .collect();
                let floats = |f: fn(&Summary) -> Option<f64>| -> ColumnData {
                    ColumnData::Float(cells.iter().map(|s| s.as_ref().and_then(f)).collect())
                };
                // A cell whose observations all went missing counts 0.
                let counts = ColumnData::Int(
                    cells
                        .iter()
                        .zip(&self.gaps)
                        .map(|(s, gaps)| match s {
                            Some(s) => Some(s.n as i64),
                            None => (!gaps[c].is_empty()).then_some(0),
                        })
                        .collect(),
                );
                match spec.aggregate {
                    // The centre, its spread where it has one, the count, then the interval.
                    Aggregate::MeanStd | Aggregate::Iqm => {
                        columns.push(Column::new(
                            format!("{prefix}.{}", spec.aggregate.centre()),
                            floats(|s| Some(s.value)),
                        ));
                        if spec.aggregate == Aggregate::MeanStd {
                            columns.push(Column::new(format!("{prefix}.std"), floats(|s| s.std)));
                        }
                        columns.push(Column::new(format!("{prefix}.n"), counts));
                        if spec.ci.is_some() {
                            columns.push(Column::new(
                                format!("{prefix}.ci_low"),
                                floats(|s| s.ci.map(|i| i.low)),
                            ));
                            columns.push(Column::new(
                                format!("{prefix}.ci_high"),
                                floats(|s| s.ci.map(|i| i.high)),
                            ));
                        }
                    }
                    Aggregate::Count => {
                        columns.push(Column::new(format!("{prefix}.count"), counts))
                    }
                    agg => columns.push(Column::new(
                        format!("{prefix}.{}", agg.name()),
                        floats(|s| Some(s.value)),
                    )),
                }
                if has_gaps {
                    let missing = self
                        .gaps
                        .iter()
                        .map(|gaps| (!gaps[c].is_empty()).then(|| gap_text(&gaps[c])))
                        .collect::<Vec<_>>();
                    columns.push(Column::new(
                        format!("{prefix}.missing"),
                        ColumnData::Str(missing),
                    ));
                }
            }
        }
        Table::from_columns(columns)
    }

    fn markdown(&self, spec: &PivotSpec) -> String {
        let sections: Vec<String> = spec
            .metrics
            .iter()
            .enumerate()
            .map(|(m, metric)| {
                let table = self.metric_markdown(spec, m, metric);
                if spec.metrics.len() > 1 {
                    format!("**{}**\n\n{table}", escape_markdown(metric))
                } else {
                    table
                }
            })
            .collect();
        let mut out = sections.join("\n");
        // The fewest values behind an interval: what the caption warns about.
        let fewest = self
            .values
            .iter()
            .flatten()
            .flatten()
            .map(Vec::len)
            .filter(|&n| n >= 2)
            .min();
        if let Some(caption) = caption(spec, fewest) {
            out.push_str(&format!("\n{caption}\n"));
        }
        out
    }

    /// One metric's table. The count of observations per cell goes in the column headers when
    /// it is the same everywhere; otherwise cells off the most common count are marked and a
    /// footnote names that count. A cell with missing observations says what is missing, and
    /// how many the rest are: `0.930 ± 0.010 (n=2, 1 failed)`, or `failed` alone.
    fn metric_markdown(&self, spec: &PivotSpec, m: usize, metric: &str) -> String {
        let cells: Vec<Vec<Option<Summary>>> = self.values[m]
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| summarize(v, spec.aggregate, spec.ci))
                    .collect()
            })
            .collect();
        // Cells with gaps show their own count.
        let counts: Vec<usize> = cells
            .iter()
            .zip(&self.gaps)
            .flat_map(|(row, gaps)| row.iter().zip(gaps))
            .filter(|(_, gaps)| gaps.is_empty())
            .filter_map(|(s, _)| s.as_ref().map(|s| s.n))
            .collect();
        let shows_n = spec.aggregate != Aggregate::Count && !counts.is_empty();
        let uniform_n = shows_n && counts.iter().all(|&n| n == counts[0]);
        let usual_n = most_common(&counts);

        let mut header: Vec<String> = spec.rows.iter().map(|k| escape_markdown(k)).collect();
        for col_key in &self.col_keys {
            // The column's labels with their keys (`hidden=32`): a bare `32` says nothing.
            let title = if spec.cols.is_empty() {
                metric.to_owned()
            } else {
                assignments(&spec.cols, col_key)
            };
            let n = if uniform_n {
                format!(" (n={})", counts[0])
            } else {
                String::new()
            };
            header.push(format!("{}{n}", escape_markdown(&title)));
        }
        if header.is_empty() {
            return String::new();
        }
        let mut align = vec![Align::Left; spec.rows.len()];
        align.resize(header.len(), Align::Right);

        let p = spec.precision;
        let rows: Vec<Vec<String>> = self
            .row_keys
            .iter()
            .zip(&cells)
            .zip(&self.gaps)
            .map(|((row_key, row_cells), row_gaps)| {
                let keys = row_key.iter().map(|v| escape_markdown(&display(v)));
                let values = row_cells.iter().zip(row_gaps).map(|(cell, gaps)| {
                    let Some(s) = cell else {
                        return only_gaps_text(gaps);
                    };
                    let text = match spec.aggregate {
                        // One value has no spread: `± 0.000` would claim one.
                        Aggregate::MeanStd if s.n > 1 => {
                            format!("{:.p$} ± {:.p$}", s.value, s.std.unwrap_or(0.0))
                        }
                        Aggregate::Count => s.n.to_string(),
                        _ => format!("{:.p$}", s.value),
                    };
                    // `(n=2, 1 failed)`, `(n=1, no interval)`: what the reader needs to weigh
                    // the number, then the interval.
                    let mut notes = Vec::new();
                    if (!gaps.is_empty() || (shows_n && !uniform_n && s.n != usual_n))
                        && spec.aggregate != Aggregate::Count
                    {
                        notes.push(format!("n={}", s.n));
                    }
                    if !gaps.is_empty() {
                        notes.push(gap_text(gaps));
                    }
                    let ci_shown = matches!(spec.aggregate, Aggregate::MeanStd | Aggregate::Iqm)
                        && spec.ci.is_some();
                    if ci_shown && s.ci.is_none() {
                        if notes.is_empty() {
                            notes.push(format!("n={}", s.n));
                        }
                        notes.push("no interval".to_owned());
                    }
                    let mut text = text;
                    if !notes.is_empty() {
                        text = format!("{text} ({})", notes.join(", "));
                    }
                    if let Some(ci) = s.ci {
                        text = format!("{text} [{:.p$}, {:.p$}]", ci.low, ci.high);
                    }
                    text
                });
                keys.chain(values).collect()
            })
            .collect();

        let mut out = markdown_table(&header, &align, &rows);
        if shows_n && !uniform_n {
            out.push_str(&format!("\nn={usual_n} per cell unless marked.\n"));
        }
        out
    }
}

/// What `±` and `[ ]` mean, under a `mean_std` table; `fewest`: the fewest values behind an
/// interval, which, if few, bound what any interval within their range can cover.
fn caption(spec: &PivotSpec, fewest: Option<usize>) -> Option<String> {
    if spec.aggregate == Aggregate::Iqm {
        let iqm = "Each cell is the interquartile mean of its values: the mean of the middle 50%, \
                   a value straddling a quartile counted by the fraction inside (robust to an \
                   outlying seed)";
        return Some(match spec.ci {
            Some(b) => {
                let mut text = format!(
                    "{iqm}; [a, b] is its {} bootstrap confidence interval (percentile method, \
                     as rliable's, {} resamples, seeded by the values).",
                    crate::stats::percent(b.level),
                    b.resamples_text()
                );
                if let Some(caveat) = crate::stats::range_caveat(fewest, b.level, "values") {
                    text = format!("{text} {caveat}");
                }
                text
            }
            None => format!("{iqm}."),
        });
    }
    if spec.aggregate != Aggregate::MeanStd {
        return None;
    }
    let sd = "± is the sample standard deviation (n − 1) over a cell's n values";
    Some(match spec.ci {
        Some(b) => {
            let mut text = format!("{sd}; [a, b] is the {}.", b.describe());
            if let Some(caveat) = crate::stats::range_caveat(fewest, b.level, "values") {
                text = format!("{text} {caveat}");
            }
            text
        }
        None => format!("{sd}."),
    })
}

/// What is missing, counted by why: `1 failed`, `2 failed, 1 diverged`; empty for nothing.
pub fn gap_text(gaps: &[&str]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for why in gaps {
        match counts.iter_mut().find(|(w, _)| w == why) {
            Some((_, n)) => *n += 1,
            None => counts.push((why, 1)),
        }
    }
    counts.sort_by_key(|(w, _)| *w);
    counts
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A cell with nothing but missing observations: why (`diverged`) when they share the reason,
/// else [`gap_text`].
pub(crate) fn only_gaps_text(gaps: &[&str]) -> String {
    match gaps.split_first() {
        Some((first, rest)) if rest.iter().all(|g| g == first) => (*first).to_owned(),
        _ => gap_text(gaps),
    }
}

/// `steps=4,weights=shared`.
pub(crate) fn assignments(keys: &[String], values: &[&Value]) -> String {
    keys.iter()
        .zip(values)
        .map(|(k, v)| format!("{k}={}", display(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The most frequent value (the larger one on a tie); 0 for none.
fn most_common(counts: &[usize]) -> usize {
    let mut freq: HashMap<usize, usize> = HashMap::new();
    for &n in counts {
        *freq.entry(n).or_default() += 1;
    }
    freq.into_iter()
        .max_by_key(|&(n, f)| (f, n))
        .map_or(0, |(n, _)| n)
}

/// One cell's aggregate: `value` is the mean, median, IQM, min or max; `std` and `ci` only for
/// mean_std of two or more values (a sample standard deviation of one value is undefined, and
/// one value has nothing to resample).
struct Summary {
    n: usize,
    value: f64,
    std: Option<f64>,
    ci: Option<Interval>,
}

fn summarize(values: &[f64], aggregate: Aggregate, ci: Option<Bootstrap>) -> Option<Summary> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (value, std) = match aggregate {
        Aggregate::MeanStd => mean_std(values),
        Aggregate::Mean => (mean(values), None),
        Aggregate::Median => (median(values), None),
        Aggregate::Iqm => (iqm(values), None),
        Aggregate::Min => (values.iter().copied().fold(f64::INFINITY, f64::min), None),
        Aggregate::Max => (
            values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            None,
        ),
        Aggregate::Count => (n as f64, None),
    };
    let ci = match (aggregate, ci) {
        (Aggregate::MeanStd, Some(b)) => bootstrap_mean(values, b),
        (Aggregate::Iqm, Some(b)) => bootstrap_iqm(values, b),
        _ => None,
    };
    Some(Summary { n, value, std, ci })
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    fn ob(labels: Value, metrics: &[(&str, f64)]) -> Observation {
        Observation {
            labels: serde_json::from_value(labels).unwrap(),
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            missing: None,
        }
    }

    /// Deliberately unsorted: `tied` before `shared`, 16 before 4 (lexically "16" < "4").
    fn runs() -> Vec<Observation> {
        let o = |w: &str, steps: i64, seed: i64, acc: f64, loss: f64| {
            ob(
                json!({"weights": w, "steps": steps, "seed": seed}),
                &[("test_acc", acc), ("loss", loss)],
            )
        };
        vec![
            o("tied", 16, 0, 0.85, 0.2),
            o("shared", 16, 0, 0.95, 0.05),
            o("tied", 4, 0, 0.80, 0.4),
            o("shared", 4, 0, 0.90, 0.3),
            o("shared", 16, 1, 0.97, 0.07),
            o("tied", 4, 1, 0.84, 0.4),
            o("shared", 4, 1, 0.92, 0.2),
            o("tied", 4, 2, 0.88, 0.4),
            o("shared", 4, 2, 0.94, 0.1),
        ]
    }

    fn spec(rows: &[&str], cols: &[&str], metrics: &[&str], aggregate: Aggregate) -> PivotSpec {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        PivotSpec {
            rows: owned(rows),
            cols: owned(cols),
            metrics: owned(metrics),
            aggregate,
            precision: 3,
            relative: None,
            best: None,
            ci: Some(crate::stats::Bootstrap::default()),
            pair_by: "seed".to_owned(),
        }
    }

    /// A float column of `table`, by name (shared with the relative tables' tests).
    pub(crate) fn floats(table: &Table, name: &str) -> Vec<Option<f64>> {
        match &table
            .column(name)
            .unwrap_or_else(|| panic!("no column `{name}`"))
            .data
        {
            ColumnData::Float(v) => v.clone(),
            other => panic!("`{name}` is {}", other.kind_name()),
        }
    }

    fn assert_close(actual: &[Option<f64>], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            let a = a.expect("non-null");
            assert!((a - e).abs() < 1e-12, "{a} != {e}");
        }
    }

    #[test]
    fn best_rows_come_first_by_their_mean_and_top_keeps_the_best() {
        // Per `lr`, the mean loss over seeds: 0.3 → 0.5, 0.1 → 0.2, 0.03 → 0.35; 1.0 was
        // pruned (no value), so it comes last.
        let mut obs: Vec<Observation> = [(0.3, 0.4), (0.3, 0.6), (0.1, 0.2), (0.03, 0.35)]
            .iter()
            .enumerate()
            .map(|(i, (lr, loss))| ob(json!({"lr": lr, "seed": i}), &[("loss", *loss)]))
            .collect();
        obs.push(Observation {
            missing: Some("pruned".into()),
            ..ob(json!({"lr": 1.0, "seed": 9}), &[])
        });
        let order = |lower: bool, top: Option<usize>| {
            let spec = PivotSpec {
                best: Some(Best {
                    metric: "loss".into(),
                    lower,
                    top,
                }),
                ..spec(&["lr"], &[], &["loss"], Aggregate::Mean)
            };
            let p = pivot(&obs, &spec).unwrap();
            floats(&p.table, "lr")
        };
        let lrs = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        assert_eq!(order(true, None), lrs(&[0.1, 0.03, 0.3, 1.0]));
        assert_eq!(order(false, None), lrs(&[0.3, 0.03, 0.1, 1.0]));
        assert_eq!(order(true, Some(2)), lrs(&[0.1, 0.03]));
        // Ranked by a metric the table does not show, or with `cols`: refused.
        let bad = PivotSpec {
            best: Some(Best {
                metric: "acc".into(),
                lower: false,
                top: None,
            }),
            ..spec(&["lr"], &[], &["loss"], Aggregate::Mean)
        };
        assert!(pivot(&obs, &bad).is_err());
    }

    #[test]
    fn mean_std_matches_a_hand_worked_example() {
        let p = pivot(
            &runs(),
            &spec(&["weights"], &["steps"], &["test_acc"], Aggregate::MeanStd),
        )
        .unwrap();
        let names: Vec<&str> = p.table.column_names().collect();
        assert_eq!(
            names,
            [
                "weights",
                "test_acc[steps=4].mean",
                "test_acc[steps=4].std",
                "test_acc[steps=4].n",
                "test_acc[steps=4].ci_low",
                "test_acc[steps=4].ci_high",
                "test_acc[steps=16].mean",
                "test_acc[steps=16].std",
                "test_acc[steps=16].n",
                "test_acc[steps=16].ci_low",
                "test_acc[steps=16].ci_high",
            ]
        );
        assert_eq!(
            p.table.column("weights").unwrap().data,
            ColumnData::from(vec!["shared", "tied"])
        );
        // shared/4: (0.90 + 0.92 + 0.94) / 3 = 0.92; deviations ±0.02 → s = √(0.0008 / 2) = 0.02.
        // tied/4: 0.84, deviations ±0.04 → s = √(0.0032 / 2) = 0.04.
        // shared/16: 0.96, deviations ±0.01 → s = √(0.0002 / 1); tied/16: one run → no s.
        assert_close(&floats(&p.table, "test_acc[steps=4].mean"), &[0.92, 0.84]);
        assert_close(&floats(&p.table, "test_acc[steps=4].std"), &[0.02, 0.04]);
        assert_close(&floats(&p.table, "test_acc[steps=16].mean"), &[0.96, 0.85]);
        let std16 = floats(&p.table, "test_acc[steps=16].std");
        assert!((std16[0].unwrap() - 0.0002_f64.sqrt()).abs() < 1e-12);
        assert_eq!(std16[1], None, "the sample std of one value is undefined");
        assert_eq!(
            p.table.column("test_acc[steps=16].n").unwrap().data,
            ColumnData::Int(vec![Some(2), Some(1)])
        );

        let expected = "\
| weights |                      steps=4 |                           steps=16 |
| ------- | ---------------------------: | ---------------------------------: |
| shared  | 0.920 ± 0.020 [0.900, 0.940] | 0.960 ± 0.014 (n=2) [0.950, 0.970] |
| tied    | 0.840 ± 0.040 [0.800, 0.880] |           0.850 (n=1, no interval) |

n=3 per cell unless marked.

± is the sample standard deviation (n − 1) over a cell's n values; [a, b] is the 95% \
bootstrap confidence interval of the mean (expanded percentile method, 10,000 resamples, \
seeded by the values). With 2 values an interval lies within their range, which holds their mean \
at most 50% of the time (1 − 2^(1 − n), for a symmetric spread): read it as the least \
uncertainty there is.
";
        assert_eq!(p.markdown, expected);
    }

    #[test]
    fn several_metrics_get_a_header_each_and_uniform_n_goes_in_the_column_header() {
        let four: Vec<Observation> = runs()
            .into_iter()
            .filter(|o| o.labels["steps"] == 4)
            .collect();
        let p = pivot(
            &four,
            &spec(&["weights"], &[], &["test_acc", "loss"], Aggregate::MeanStd),
        )
        .unwrap();
        let names: Vec<&str> = p.table.column_names().collect();
        assert_eq!(
            names,
            [
                "weights",
                "test_acc.mean",
                "test_acc.std",
                "test_acc.n",
                "test_acc.ci_low",
                "test_acc.ci_high",
                "loss.mean",
                "loss.std",
                "loss.n",
                "loss.ci_low",
                "loss.ci_high",
            ]
        );
        // loss for shared: 0.3, 0.2, 0.1 → mean 0.2, s = √(0.02 / 2) = 0.1.
        assert_close(&floats(&p.table, "loss.std"), &[0.1, 0.0]);
        let expected = "\
**test_acc**

| weights |               test_acc (n=3) |
| ------- | ---------------------------: |
| shared  | 0.920 ± 0.020 [0.900, 0.940] |
| tied    | 0.840 ± 0.040 [0.800, 0.880] |

**loss**

| weights |                   loss (n=3) |
| ------- | ---------------------------: |
| shared  | 0.200 ± 0.100 [0.100, 0.300] |
| tied    | 0.400 ± 0.000 [0.400, 0.400] |

± is the sample standard deviation (n − 1) over a cell's n values; [a, b] is the 95% \
bootstrap confidence interval of the mean (expanded percentile method, 10,000 resamples, \
seeded by the values). With 3 values an interval lies within their range, which holds their mean \
at most 75% of the time (1 − 2^(1 − n), for a symmetric spread): read it as the least \
uncertainty there is.
";
        assert_eq!(p.markdown, expected);
    }

    #[test]
    fn single_aggregates_name_their_columns() {
        let obs = runs();
        let median = pivot(
            &obs,
            &spec(&["weights"], &["steps"], &["test_acc"], Aggregate::Median),
        )
        .unwrap();
        assert_close(
            &floats(&median.table, "test_acc[steps=4].median"),
            &[0.92, 0.84],
        );
        assert_close(
            &floats(&median.table, "test_acc[steps=16].median"),
            &[0.96, 0.85],
        );

        let min = pivot(
            &obs,
            &spec(&["weights"], &["steps"], &["test_acc"], Aggregate::Min),
        )
        .unwrap();
        assert_close(&floats(&min.table, "test_acc[steps=4].min"), &[0.90, 0.80]);
        let max = pivot(
            &obs,
            &spec(&["weights"], &["steps"], &["test_acc"], Aggregate::Max),
        )
        .unwrap();
        assert_close(&floats(&max.table, "test_acc[steps=16].max"), &[0.97, 0.85]);
        let mean = pivot(&obs, &spec(&["weights"], &[], &["loss"], Aggregate::Mean)).unwrap();
        // shared: (0.05 + 0.3 + 0.07 + 0.2 + 0.1) / 5; tied: (0.2 + 0.4 * 3) / 4.
        assert_close(&floats(&mean.table, "loss.mean"), &[0.72 / 5.0, 0.35]);

        let count = pivot(
            &obs,
            &spec(&["weights"], &["steps"], &["test_acc"], Aggregate::Count),
        )
        .unwrap();
        assert_eq!(
            count.table.column("test_acc[steps=16].count").unwrap().data,
            ColumnData::Int(vec![Some(2), Some(1)])
        );
        let expected = "\
| weights | steps=4 | steps=16 |
| ------- | ------: | -------: |
| shared  |       3 |        2 |
| tied    |       3 |        1 |
";
        assert_eq!(count.markdown, expected);
    }

    /// The IQM of a cell with an outlying seed: 1, 2, 3, 100 → (2 + 3) / 2. Its interval is
    /// the range: 4 values are too few for the IQM's resamples to leave the outlier out often
    /// enough (a resample with two or more copies of it, 26% of them, takes it in).
    #[test]
    fn the_iqm_aggregate_drops_an_outlying_seed() {
        let obs: Vec<Observation> = [1.0, 100.0, 2.0, 3.0]
            .iter()
            .enumerate()
            .map(|(seed, x)| ob(json!({"m": "x", "seed": seed}), &[("loss", *x)]))
            .collect();
        let p = pivot(&obs, &spec(&["m"], &[], &["loss"], Aggregate::Iqm)).unwrap();
        assert_eq!(floats(&p.table, "loss.iqm"), [Some(2.5)]);
        assert_eq!(floats(&p.table, "loss.ci_low"), [Some(1.0)]);
        assert_eq!(floats(&p.table, "loss.ci_high"), [Some(100.0)]);
        assert!(
            p.markdown.contains("| x   | 2.500 [1.000, 100.000] |"),
            "{}",
            p.markdown
        );
        assert!(
            p.markdown.contains(
                "[a, b] is its 95% bootstrap confidence interval (percentile method, as rliable's"
            ),
            "{}",
            p.markdown
        );
        assert_eq!(serde_json::to_value(Aggregate::Iqm).unwrap(), json!("iqm"));
    }

    #[test]
    fn values_sort_numerically_then_lexically() {
        let obs: Vec<Observation> = [
            json!(10),
            json!(0.1),
            json!("b"),
            json!(2),
            json!("B"),
            json!(0.01),
            json!("a"),
        ]
        .into_iter()
        .map(|v| ob(json!({ "x": v }), &[("m", 1.0)]))
        .collect();
        let p = pivot(&obs, &spec(&["x"], &[], &["m"], Aggregate::Count)).unwrap();
        assert_eq!(
            p.table.column("x").unwrap().data,
            ColumnData::from(vec!["0.01", "0.1", "2", "10", "B", "a", "b"])
        );

        let numbers: Vec<Observation> = [json!(10), json!(2), json!(0.5)]
            .into_iter()
            .map(|v| ob(json!({ "lr": v }), &[("m", 1.0)]))
            .collect();
        let p = pivot(&numbers, &spec(&["lr"], &[], &["m"], Aggregate::Count)).unwrap();
        assert_eq!(
            p.table.column("lr").unwrap().data,
            ColumnData::from(vec![0.5, 2.0, 10.0])
        );
    }

    #[test]
    fn several_col_keys_and_missing_cells() {
        let obs = vec![
            ob(json!({"steps": 4, "weights": "tied"}), &[("acc", 0.5)]),
            ob(json!({"steps": 8, "weights": "shared"}), &[("acc", 0.75)]),
            ob(
                json!({"steps": 4, "weights": "shared", "method": "x"}),
                &[("acc", 0.25)],
            ),
        ];
        let p = pivot(
            &obs,
            &spec(&[], &["steps", "weights"], &["acc"], Aggregate::Mean),
        )
        .unwrap();
        let names: Vec<&str> = p.table.column_names().collect();
        assert_eq!(
            names,
            [
                "acc[steps=4,weights=shared].mean",
                "acc[steps=4,weights=tied].mean",
                "acc[steps=8,weights=shared].mean",
            ]
        );
        assert_eq!(p.table.num_rows(), 1);

        let by_row = pivot(
            &obs,
            &spec(&["weights"], &["steps"], &["acc"], Aggregate::Mean),
        )
        .unwrap();
        assert_eq!(
            by_row.table.column("acc[steps=8].mean").unwrap().data,
            ColumnData::Float(vec![Some(0.75), None])
        );
        let expected = "\
| weights | steps=4 (n=1) | steps=8 (n=1) |
| ------- | ------------: | ------------: |
| shared  |         0.250 |         0.750 |
| tied    |         0.500 |               |
";
        assert_eq!(by_row.markdown, expected);
    }

    /// #21: a table built from what finished marks each cell's missing observations, and keeps
    /// its numbers over the rest.
    #[test]
    fn cells_with_inputs_that_did_not_finish_say_so() {
        let o = |lr: f64, hidden: i64, acc: Option<f64>, missing: Option<&str>| Observation {
            labels: serde_json::from_value(json!({"lr": lr, "hidden": hidden})).unwrap(),
            metrics: acc.map(|a| ("acc".to_owned(), a)).into_iter().collect(),
            missing: missing.map(str::to_owned),
        };
        let obs = vec![
            o(0.1, 32, Some(0.92), None),
            o(0.1, 32, Some(0.94), None),
            o(0.1, 32, None, Some("failed")),
            o(0.1, 128, Some(0.95), None),
            o(0.1, 128, Some(0.96), None),
            o(0.1, 128, Some(0.97), None),
            // A diverged run keeps the metrics it logged, which no aggregate may use.
            o(1.0, 32, Some(0.10), Some("diverged")),
            o(1.0, 32, None, Some("diverged")),
            o(1.0, 128, None, Some("failed")),
            o(1.0, 128, None, Some("skipped")),
        ];
        let p = pivot(
            &obs,
            &spec(&["lr"], &["hidden"], &["acc"], Aggregate::MeanStd),
        )
        .unwrap();
        let expected = "\
| lr  |                              hidden=32 (n=3) |             hidden=128 (n=3) |
| --- | -------------------------------------------: | ---------------------------: |
| 0.1 | 0.930 ± 0.014 (n=2, 1 failed) [0.920, 0.940] | 0.960 ± 0.010 [0.950, 0.970] |
| 1.0 |                                     diverged |          1 failed, 1 skipped |

± is the sample standard deviation (n − 1) over a cell's n values; [a, b] is the 95% \
bootstrap confidence interval of the mean (expanded percentile method, 10,000 resamples, \
seeded by the values). With 2 values an interval lies within their range, which holds their mean \
at most 50% of the time (1 − 2^(1 − n), for a symmetric spread): read it as the least \
uncertainty there is.
";
        assert_eq!(p.markdown, expected);
        assert_close(&floats(&p.table, "acc[hidden=32].mean")[..1], &[0.93]);
        assert_eq!(floats(&p.table, "acc[hidden=32].mean")[1], None);
        assert_eq!(
            p.table.column("acc[hidden=32].n").unwrap().data,
            ColumnData::Int(vec![Some(2), Some(0)])
        );
        assert_eq!(
            p.table.column("acc[hidden=128].missing").unwrap().data,
            ColumnData::from(vec![None, Some("1 failed, 1 skipped")])
        );
        assert_eq!(
            p.table.column("acc[hidden=32].missing").unwrap().data,
            ColumnData::from(vec![Some("1 failed"), Some("2 diverged")])
        );
        // Without gaps, no `.missing` columns.
        let done: Vec<Observation> = obs.into_iter().filter(|o| o.missing.is_none()).collect();
        let p = pivot(
            &done,
            &spec(&["lr"], &["hidden"], &["acc"], Aggregate::MeanStd),
        )
        .unwrap();
        assert!(p.table.column_names().all(|c| !c.ends_with(".missing")));
    }

    #[test]
    fn missing_label_or_metric_names_it_and_lists_what_is_there() {
        let obs = vec![
            ob(json!({"weights": "tied", "steps": 4}), &[("acc", 0.5)]),
            ob(json!({"weights": "tied", "seed": 0}), &[("acc", 0.5)]),
        ];
        let err = pivot(
            &obs,
            &spec(&["weights"], &["steps"], &["acc"], Aggregate::Mean),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "observation 1 has no label `steps` (available: `seed`, `weights`)"
        );
        let err = pivot(&obs, &spec(&["weights"], &[], &["loss"], Aggregate::Mean)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "observation 0 has no metric `loss` (available: `acc`)"
        );
    }

    #[test]
    fn contradictory_specs_are_rejected() {
        let obs = runs();
        let err = pivot(&obs, &spec(&["weights"], &[], &[], Aggregate::Mean)).unwrap_err();
        assert!(matches!(err, ResultsError::InvalidPivot { .. }));
        let err = pivot(
            &obs,
            &spec(&["steps"], &["steps"], &["loss"], Aggregate::Mean),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pivot: `steps` is in both `rows` and `cols`"
        );
    }

    #[test]
    fn spec_deserialises_with_snake_case_aggregates_and_defaults() {
        let s: PivotSpec = serde_json::from_value(
            json!({"rows": ["weights"], "metrics": ["acc"], "aggregate": "mean_std"}),
        )
        .unwrap();
        assert_eq!(s, spec(&["weights"], &[], &["acc"], Aggregate::MeanStd));
        for agg in [
            Aggregate::MeanStd,
            Aggregate::Mean,
            Aggregate::Median,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Count,
        ] {
            assert_eq!(serde_json::to_value(agg).unwrap(), json!(agg.name()));
        }
        assert!(
            serde_json::from_value::<PivotSpec>(json!({"metrics": ["a"], "colums": []})).is_err()
        );
    }
}
