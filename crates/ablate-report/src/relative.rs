//! Relative gains for `report.table`'s `relative_to`: each cell's mean as a percentage gain over
//! the mean of a baseline cell of the same metric, e.g. UL2's table of objectives, where decoder
//! cells are compared with the decoder CLM row and encoder-decoder cells with the encdec SC row.
//!
//! The rule: a `relative_to` entry `{where: W, base: B}` serves the cells whose labels (their
//! row and column values) equal `W` on every key of `W` (an empty `W` serves every cell). Each
//! non-empty cell must be served by exactly one entry; its baseline is the cell of the same
//! metric whose labels are the cell's own with the keys of `B` set to `B`'s values. That cell
//! must have observations. The gain is `100 · (mean − base) / |base|`, negated for a metric in
//! `lower_is_better`, so a positive gain is always an improvement; a zero base leaves it
//! undefined. Gains compare the cells' means whatever `aggregate` is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use ablate_spec::backticked;

use crate::pivot::{Grid, PivotSpec, assignments, only_gaps_text};
use crate::stats::{Paired, Unpaired, mean_of as mean, paired, percent};
use ablate_results::ResultsError;
use ablate_results::value::{cmp_values, display};
use ablate_results::{Align, escape_markdown, markdown_table};
use ablate_results::{Column, ColumnData};

/// The suffix of a gain column: `infill_em[arch=decoder] (Δ% vs base)`.
pub const GAIN_SUFFIX: &str = " (Δ% vs base)";

/// One `relative_to` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The cells this entry serves: those with these labels (every cell when empty).
    #[serde(default, rename = "where")]
    pub when: BTreeMap<String, Value>,
    /// A served cell's baseline: the cell with these labels in place of its own.
    pub base: BTreeMap<String, Value>,
}

/// `relative_to` and `lower_is_better` together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relative {
    pub baselines: Vec<Baseline>,
    /// Metrics whose gain is negated (a loss: a lower value is the better one).
    #[serde(default)]
    pub lower_is_better: Vec<String>,
}

/// Checks a `relative_to` list on its own (what can be checked before the table's `rows` and
/// `cols` are known): at least one entry, a non-empty `base`, single label values, and no two
/// entries with the same `where` (they would serve the same cells).
pub fn check_baselines(baselines: &[Baseline]) -> Result<(), String> {
    if baselines.is_empty() {
        return Err("give at least one `{where, base}` entry, or leave it null".to_owned());
    }
    for (i, b) in baselines.iter().enumerate() {
        let at = i + 1;
        if b.base.is_empty() {
            return Err(format!(
                "entry {at} has an empty `base`: name the labels of its baseline cell, e.g. \
                 `base: {{objective: clm}}`"
            ));
        }
        for (part, map) in [("where", &b.when), ("base", &b.base)] {
            if let Some((k, v)) = map
                .iter()
                .find(|(_, v)| matches!(v, Value::Array(_) | Value::Object(_)))
            {
                return Err(format!(
                    "entry {at}: `{part}.{k}` must be a single label value, not `{v}`"
                ));
            }
        }
        if let Some(j) = baselines[..i]
            .iter()
            .position(|o| same_map(&o.when, &b.when))
        {
            return Err(format!(
                "entries {} and {at} have the same `where` ({}): a cell has one baseline",
                j + 1,
                where_text(&b.when)
            ));
        }
    }
    Ok(())
}

fn same_map(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && cmp_values(va, vb).is_eq())
}

/// `arch=decoder` (`every cell` for an empty `where`).
fn where_text(when: &BTreeMap<String, Value>) -> String {
    if when.is_empty() {
        "every cell".to_owned()
    } else {
        format!("`{}`", map_text(when))
    }
}

fn map_text(map: &BTreeMap<String, Value>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", display(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks `rel` against the table's keys and metrics.
pub(crate) fn validate(spec: &PivotSpec, rel: &Relative) -> Result<(), ResultsError> {
    let invalid = |reason: String| Err(ResultsError::InvalidPivot { reason });
    if let Err(reason) = check_baselines(&rel.baselines) {
        return invalid(format!("`relative_to`: {reason}"));
    }
    for (i, b) in rel.baselines.iter().enumerate() {
        for (part, map) in [("where", &b.when), ("base", &b.base)] {
            if let Some(k) = map
                .keys()
                .find(|k| !spec.rows.contains(k) && !spec.cols.contains(k))
            {
                return invalid(format!(
                    "`relative_to` entry {}: `{part}` uses `{k}`, which is in neither `rows` nor \
                     `cols` (a baseline is a cell of the table)",
                    i + 1
                ));
            }
        }
    }
    if spec.rows.contains(&spec.pair_by) || spec.cols.contains(&spec.pair_by) {
        return invalid(format!(
            "`pair_by` is `{}`, a row or column key: a cell and its baseline would never share a \
             value of it; pair by a label the cells aggregate over (the seed)",
            spec.pair_by
        ));
    }
    if let Some(m) = rel
        .lower_is_better
        .iter()
        .find(|m| !spec.metrics.contains(m))
    {
        return invalid(format!(
            "`lower_is_better` lists `{m}`, which is not among the table's metrics"
        ));
    }
    Ok(())
}

/// What one cell of the gain table holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Gain {
    /// No observations.
    Empty,
    /// Only observations that did not finish: what they are (`failed`).
    Missing(String),
    /// The baseline cell has only observations that did not finish: what they are.
    NoBase(String),
    /// The cell is its own baseline: its mean.
    Base(f64),
    /// The gain in percent.
    Pct(f64),
    /// The baseline's mean is 0.
    Undefined,
}

impl Gain {
    /// The Parquet value: 0 for a baseline, null where there is no gain.
    fn value(&self) -> Option<f64> {
        match self {
            Gain::Base(_) => Some(0.0),
            Gain::Pct(x) => Some(*x),
            Gain::Empty | Gain::Missing(_) | Gain::NoBase(_) | Gain::Undefined => None,
        }
    }

    fn text(&self, precision: usize) -> String {
        match self {
            Gain::Empty => String::new(),
            Gain::Missing(why) => why.clone(),
            Gain::NoBase(why) => format!("no base ({why})"),
            Gain::Base(mean) => format!("{mean:.precision$} (base)"),
            Gain::Pct(x) => format!("{x:+.1}%"),
            Gain::Undefined => "undefined (base = 0)".to_owned(),
        }
    }
}

/// `gains[metric][row][col]`, and beside each its paired difference.
pub(crate) struct Gains {
    cells: Vec<Vec<Vec<Gain>>>,
    deltas: Vec<Vec<Vec<Delta>>>,
}

/// One cell's paired difference with its baseline: the mean over the `pair_by` values both
/// have of (cell − base), in the metric's units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delta {
    /// No baseline to pair with: the gain says why (no observations, missing, no base).
    Unknown,
    /// The cell is its own baseline.
    Base,
    Paired(Paired),
    Unpaired(Unpaired),
    /// Neither side's observations have the `pair_by` label.
    NoLabel,
}

impl Delta {
    fn text(&self, gain: &Gain, precision: usize, pair_by: &str) -> String {
        let p = precision;
        match self {
            Delta::Unknown => gain.text(precision),
            Delta::Base => "(base)".to_owned(),
            Delta::Paired(d) => {
                let pairs = if d.n == 1 { "pair" } else { "pairs" };
                match d.interval {
                    Some(i) => format!(
                        "{:+.p$} [{:+.p$}, {:+.p$}] ({} {pairs})",
                        d.mean, i.low, i.high, d.n
                    ),
                    None if d.n < 2 => format!("{:+.p$} ({} {pairs}, no interval)", d.mean, d.n),
                    None => format!("{:+.p$} ({} {pairs})", d.mean, d.n),
                }
            }
            Delta::Unpaired(Unpaired::NoSharedKey) => format!("no {pair_by} in common"),
            Delta::Unpaired(Unpaired::RepeatedKey) => format!("repeated {pair_by}: no pairs"),
            Delta::NoLabel => format!("no {pair_by} label: no pairs"),
        }
    }

    fn paired(&self) -> Option<&Paired> {
        match self {
            Delta::Paired(d) => Some(d),
            _ => None,
        }
    }
}

/// The paired difference of cell `(r, c)` with its baseline cell `(br, bc)` for metric `m`.
fn delta(
    grid: &Grid<'_>,
    spec: &PivotSpec,
    m: usize,
    cell: (usize, usize),
    base: (usize, usize),
) -> Delta {
    if cell == base {
        return Delta::Base;
    }
    let side = |(r, c): (usize, usize)| -> Vec<(&Value, f64)> {
        grid.pairs[r][c]
            .iter()
            .zip(&grid.values[m][r][c])
            .filter_map(|(k, x)| Some(((*k)?, *x)))
            .collect()
    };
    let (a, b) = (side(cell), side(base));
    if a.is_empty() && b.is_empty() {
        return Delta::NoLabel;
    }
    match paired(&a, &b, |x, y| cmp_values(x, y), spec.ci) {
        Ok(d) => Delta::Paired(d),
        Err(why) => Delta::Unpaired(why),
    }
}

pub(crate) fn gains(
    grid: &Grid<'_>,
    spec: &PivotSpec,
    rel: &Relative,
) -> Result<Gains, ResultsError> {
    let label = |keys: &[String], tuple: &[&Value], key: &str| -> Option<Value> {
        keys.iter().position(|k| k == key).map(|j| tuple[j].clone())
    };
    let mut cells = Vec::with_capacity(spec.metrics.len());
    let mut deltas = Vec::with_capacity(spec.metrics.len());
    for (m, metric) in spec.metrics.iter().enumerate() {
        let sign = if rel.lower_is_better.contains(metric) {
            -1.0
        } else {
            1.0
        };
        let mut rows = Vec::with_capacity(grid.row_keys.len());
        let mut delta_rows = Vec::with_capacity(grid.row_keys.len());
        for (r, row_key) in grid.row_keys.iter().enumerate() {
            let mut row = Vec::with_capacity(grid.col_keys.len());
            let mut delta_row = Vec::with_capacity(grid.col_keys.len());
            for (c, col_key) in grid.col_keys.iter().enumerate() {
                // Set with the gain wherever there is a baseline to pair with.
                delta_row.push(Delta::Unknown);
                let Some(own) = mean(&grid.values[m][r][c]) else {
                    row.push(if grid.gaps[r][c].is_empty() {
                        Gain::Empty
                    } else {
                        Gain::Missing(only_gaps_text(&grid.gaps[r][c]))
                    });
                    continue;
                };
                let get = |key: &str| {
                    label(&spec.rows, row_key, key).or_else(|| label(&spec.cols, col_key, key))
                };
                let cell = || cell_text(spec, row_key, col_key);
                let fail = |reason: String| ResultsError::Baseline {
                    metric: metric.clone(),
                    cell: cell(),
                    reason,
                };
                let serving: Vec<usize> = rel
                    .baselines
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| {
                        b.when
                            .iter()
                            .all(|(k, v)| get(k).is_some_and(|l| cmp_values(&l, v).is_eq()))
                    })
                    .map(|(i, _)| i)
                    .collect();
                let entry = match serving.as_slice() {
                    [i] => &rel.baselines[*i],
                    [] => {
                        let wheres: Vec<String> =
                            rel.baselines.iter().map(|b| where_text(&b.when)).collect();
                        return Err(fail(format!(
                            "no `relative_to` entry serves it (their `where`: {})",
                            wheres.join("; ")
                        )));
                    }
                    many => {
                        let which: Vec<String> = many.iter().map(|i| (i + 1).to_string()).collect();
                        return Err(fail(format!(
                            "it matches the `where` of `relative_to` entries {}: a cell needs one \
                             baseline",
                            which.join(" and ")
                        )));
                    }
                };
                let target = |keys: &[String], tuple: &[&Value]| -> Vec<Value> {
                    keys.iter()
                        .zip(tuple)
                        .map(|(k, v)| entry.base.get(k).cloned().unwrap_or_else(|| (*v).clone()))
                        .collect()
                };
                let (want_row, want_col) =
                    (target(&spec.rows, row_key), target(&spec.cols, col_key));
                let find = |keys: &[Vec<&Value>], want: &[Value]| {
                    keys.iter()
                        .position(|k| k.iter().zip(want).all(|(a, b)| cmp_values(a, b).is_eq()))
                };
                let base_cell = || {
                    let want_row: Vec<&Value> = want_row.iter().collect();
                    let want_col: Vec<&Value> = want_col.iter().collect();
                    cell_text(spec, &want_row, &want_col)
                };
                let base = match (
                    find(&grid.row_keys, &want_row),
                    find(&grid.col_keys, &want_col),
                ) {
                    (Some(br), Some(bc)) => {
                        // A baseline whose instances all failed leaves the gain unknown, in a
                        // table built from what finished; it is not a mistake in the table.
                        if grid.values[m][br][bc].is_empty() && !grid.gaps[br][bc].is_empty() {
                            row.push(Gain::NoBase(only_gaps_text(&grid.gaps[br][bc])));
                            continue;
                        }
                        mean(&grid.values[m][br][bc]).map(|x| (br, bc, x))
                    }
                    _ => None,
                };
                let Some((br, bc, base)) = base else {
                    return Err(fail(format!(
                        "its baseline `{}` has no observations",
                        base_cell()
                    )));
                };
                *delta_row.last_mut().expect("pushed above") =
                    delta(grid, spec, m, (r, c), (br, bc));
                row.push(if (br, bc) == (r, c) {
                    Gain::Base(own)
                } else if base == 0.0 {
                    Gain::Undefined
                } else {
                    // `+ 0.0` turns the −0 of a negated tie into 0, which prints `+0.0%`.
                    Gain::Pct(sign * 100.0 * (own - base) / base.abs() + 0.0)
                });
            }
            rows.push(row);
            delta_rows.push(delta_row);
        }
        cells.push(rows);
        deltas.push(delta_rows);
    }
    Ok(Gains { cells, deltas })
}

/// `objective=plm, arch=decoder`.
fn cell_text(spec: &PivotSpec, row: &[&Value], col: &[&Value]) -> String {
    spec.rows
        .iter()
        .zip(row)
        .chain(spec.cols.iter().zip(col))
        .map(|(k, v)| format!("{k}={}", display(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Gains {
    /// One `… (Δ% vs base)` column per metric and column group, named after the absolute
    /// columns they sit beside.
    pub(crate) fn columns(&self, grid: &Grid<'_>, spec: &PivotSpec) -> Vec<Column> {
        let mut out = Vec::new();
        for (m, metric) in spec.metrics.iter().enumerate() {
            for (c, col_key) in grid.col_keys.iter().enumerate() {
                let name = format!("{}{GAIN_SUFFIX}", grid.column_prefix(spec, metric, col_key));
                let values: Vec<Option<f64>> =
                    self.cells[m].iter().map(|row| row[c].value()).collect();
                out.push(Column::new(name, ColumnData::Float(values)));
            }
        }
        // The paired differences: `.delta` (0 for a baseline cell), its interval, and the
        // number of pairs (0: none shared; null where there is no baseline or for the base).
        for (m, metric) in spec.metrics.iter().enumerate() {
            for (c, col_key) in grid.col_keys.iter().enumerate() {
                let prefix = grid.column_prefix(spec, metric, col_key);
                let cells: Vec<&Delta> = self.deltas[m].iter().map(|row| &row[c]).collect();
                let floats = |f: &dyn Fn(&Delta) -> Option<f64>| {
                    ColumnData::Float(cells.iter().map(|d| f(d)).collect())
                };
                out.push(Column::new(
                    format!("{prefix}.delta"),
                    floats(&|d| match d {
                        Delta::Base => Some(0.0),
                        d => d.paired().map(|p| p.mean),
                    }),
                ));
                if spec.ci.is_some() {
                    out.push(Column::new(
                        format!("{prefix}.delta_low"),
                        floats(&|d| d.paired()?.interval.map(|i| i.low)),
                    ));
                    out.push(Column::new(
                        format!("{prefix}.delta_high"),
                        floats(&|d| d.paired()?.interval.map(|i| i.high)),
                    ));
                }
                let counts = cells
                    .iter()
                    .map(|d| match d {
                        Delta::Paired(p) => Some(p.n as i64),
                        Delta::Unpaired(Unpaired::NoSharedKey) => Some(0),
                        _ => None,
                    })
                    .collect();
                out.push(Column::new(
                    format!("{prefix}.delta_n"),
                    ColumnData::Int(counts),
                ));
            }
        }
        out
    }

    /// The paired differences, laid out as the gains: what a reader checks before believing
    /// a gain is more than the noise across seeds.
    pub(crate) fn paired_markdown(&self, grid: &Grid<'_>, spec: &PivotSpec) -> String {
        let table = laid_out(grid, spec, "Δ", |m, r, c| {
            self.deltas[m][r][c].text(&self.cells[m][r][c], spec.precision, &spec.pair_by)
        });
        let interval = match spec.ci {
            Some(b) => format!(
                ", then [a, b]: its {} bootstrap confidence interval ({})",
                percent(b.level),
                b.method()
            ),
            None => String::new(),
        };
        // The fewest pairs behind an interval, if too few for the level.
        let fewest = self
            .deltas
            .iter()
            .flatten()
            .flatten()
            .filter_map(|d| match d {
                Delta::Paired(p) if p.interval.is_some() => Some(p.n),
                _ => None,
            })
            .min();
        let few = spec
            .ci
            .and_then(|b| crate::stats::range_caveat(fewest, b.level, "paired differences"))
            .map_or(String::new(), |c| format!(" {c}"));
        format!(
            "**Paired differences (cell − base)**\n\n{}\nEach cell: the mean, over the `{key}` \
             values it shares with its baseline, of (cell − base) in the metric's units (not \
             negated){interval}, and the number of pairs. Pairing by `{key}` takes out what both \
             sides of a pair share (the data order and initialisation a seed fixes), so the \
             interval reflects the difference, not the spread across seeds.{few}\n",
            table,
            key = spec.pair_by,
        )
    }

    /// One table: the row keys, then a column per metric and column group (`val_nll · decoder`),
    /// then how the gains were computed and against which baselines.
    pub(crate) fn markdown(&self, grid: &Grid<'_>, spec: &PivotSpec, rel: &Relative) -> String {
        let mut out = laid_out(grid, spec, "Δ%", |m, r, c| {
            self.cells[m][r][c].text(spec.precision)
        });

        let flipped = if rel.lower_is_better.is_empty() {
            String::new()
        } else {
            format!(
                ", negated for {} (lower is better)",
                backticked(&rel.lower_is_better)
            )
        };
        out.push_str(&format!(
            "\nEach cell: the gain of its mean over its baseline's mean, 100 · (mean − base) / \
             |base| %{flipped}, so a positive gain is better; a baseline cell shows its own mean, \
             marked (base).\n\nBaselines:\n"
        ));
        for b in &rel.baselines {
            let serves = if b.when.is_empty() {
                "every cell".to_owned()
            } else {
                format!("cells with `{}`", map_text(&b.when))
            };
            out.push_str(&format!(
                "- {serves}: the cell with `{}`\n",
                map_text(&b.base)
            ));
        }
        out
    }
}

/// The gains' layout: the row keys, then a column per metric and column group
/// (`val_nll Δ% · arch=decoder`), each cell `cell(metric, row, col)`.
fn laid_out(
    grid: &Grid<'_>,
    spec: &PivotSpec,
    what: &str,
    cell: impl Fn(usize, usize, usize) -> String,
) -> String {
    let mut header: Vec<String> = spec.rows.iter().map(|k| escape_markdown(k)).collect();
    for metric in &spec.metrics {
        for col_key in &grid.col_keys {
            let title = match spec.cols.len() {
                0 => format!("{metric} {what}"),
                _ => format!("{metric} {what} · {}", assignments(&spec.cols, col_key)),
            };
            header.push(escape_markdown(&title));
        }
    }
    let mut align = vec![Align::Left; spec.rows.len()];
    align.resize(header.len(), Align::Right);
    let rows: Vec<Vec<String>> = grid
        .row_keys
        .iter()
        .enumerate()
        .map(|(r, row_key)| {
            let keys = row_key.iter().map(|v| escape_markdown(&display(v)));
            let cell = &cell;
            let cells = (0..spec.metrics.len()).flat_map(move |m| {
                (0..grid.col_keys.len()).map(move |c| escape_markdown(&cell(m, r, c)))
            });
            keys.chain(cells).collect()
        })
        .collect();
    markdown_table(&header, &align, &rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pivot::tests::floats;
    use crate::pivot::{Aggregate, Observation, pivot};
    use ablate_results::ColumnData;

    fn ob(objective: &str, arch: &str, seed: i64, nll: f64, em: f64) -> Observation {
        Observation {
            labels: serde_json::from_value(
                json!({"objective": objective, "arch": arch, "seed": seed}),
            )
            .unwrap(),
            metrics: [("val_nll".to_owned(), nll), ("infill_em".to_owned(), em)].into(),
            missing: None,
        }
    }

    /// A UL2-shaped sweep: three objectives × two architectures, one or two seeds each.
    fn sweep() -> Vec<Observation> {
        vec![
            ob("ul2", "decoder", 0, 2.1, 0.2),
            ob("clm", "decoder", 0, 2.0, 0.1),
            ob("clm", "decoder", 1, 2.2, 0.1),
            ob("sc", "decoder", 0, 2.4, 0.3),
            ob("sc", "decoder", 1, 2.4, 0.2),
            ob("clm", "encdec", 0, 1.8, 0.2),
            ob("sc", "encdec", 0, 2.0, 0.4),
            ob("sc", "encdec", 1, 2.0, 0.4),
            ob("ul2", "encdec", 0, 1.9, 0.5),
        ]
    }

    fn ul2_baselines() -> Vec<Baseline> {
        serde_json::from_value(json!([
            {"where": {"arch": "decoder"}, "base": {"objective": "clm"}},
            {"where": {"arch": "encdec"}, "base": {"objective": "sc"}},
        ]))
        .unwrap()
    }

    fn spec(rows: &[&str], cols: &[&str], baselines: Vec<Baseline>) -> PivotSpec {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        PivotSpec {
            rows: owned(rows),
            cols: owned(cols),
            metrics: owned(&["val_nll", "infill_em"]),
            aggregate: Aggregate::MeanStd,
            precision: 2,
            relative: Some(Relative {
                baselines,
                lower_is_better: vec!["val_nll".to_owned()],
            }),
            best: None,
            ci: Some(crate::stats::Bootstrap::default()),
            pair_by: "seed".to_owned(),
        }
    }

    fn assert_close(actual: &[Option<f64>], expected: &[Option<f64>]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?}");
        for (a, e) in actual.iter().zip(expected) {
            match (a, e) {
                (Some(a), Some(e)) => assert!((a - e).abs() < 1e-9, "{actual:?} != {expected:?}"),
                _ => assert_eq!(a, e, "{actual:?} != {expected:?}"),
            }
        }
    }

    /// The paper's table: decoder cells against decoder CLM, encdec cells against encdec SC.
    #[test]
    fn gains_over_the_ul2_baselines_match_hand_computed_percentages() {
        let p = pivot(&sweep(), &spec(&["objective"], &["arch"], ul2_baselines())).unwrap();
        let names: Vec<&str> = p.table.column_names().collect();
        // The row key, 4 groups of mean/std/n/ci_low/ci_high, 4 gains, 4 groups of
        // delta/delta_low/delta_high/delta_n.
        assert_eq!(names.len(), 1 + 2 * 2 * 5 + 4 + 4 * 4);
        assert_eq!(
            &names[21..29],
            [
                "val_nll[arch=decoder] (Δ% vs base)",
                "val_nll[arch=encdec] (Δ% vs base)",
                "infill_em[arch=decoder] (Δ% vs base)",
                "infill_em[arch=encdec] (Δ% vs base)",
                "val_nll[arch=decoder].delta",
                "val_nll[arch=decoder].delta_low",
                "val_nll[arch=decoder].delta_high",
                "val_nll[arch=decoder].delta_n",
            ]
        );
        // Paired by seed. Decoder val_nll: clm 2.0, 2.2 (seeds 0, 1); sc 2.4, 2.4 → differences
        // 0.4, 0.2: mean 0.3, and with two pairs the bootstrap means are 0.2, 0.3, 0.3, 0.4
        // (each ¼, ½, ¼), so the 95% interval is [0.2, 0.4]; ul2 has seed 0 only: 2.1 − 2.0.
        assert_close(
            &floats(&p.table, "val_nll[arch=decoder].delta"),
            &[Some(0.0), Some(0.3), Some(0.1)],
        );
        assert_close(
            &floats(&p.table, "val_nll[arch=decoder].delta_low"),
            &[None, Some(0.2), None],
        );
        assert_close(
            &floats(&p.table, "val_nll[arch=decoder].delta_high"),
            &[None, Some(0.4), None],
        );
        assert_eq!(
            p.table
                .column("val_nll[arch=decoder].delta_n")
                .unwrap()
                .data,
            ColumnData::Int(vec![None, Some(2), Some(1)])
        );
        // Rows clm, sc, ul2. Decoder means: nll 2.1, 2.4, 2.1; em 0.1, 0.25, 0.2; base clm.
        // val_nll is lower-is-better: sc −100·(2.4 − 2.1)/2.1 = −14.285…%, ul2 0%.
        assert_close(
            &floats(&p.table, "val_nll[arch=decoder] (Δ% vs base)"),
            &[Some(0.0), Some(-100.0 * 0.3 / 2.1), Some(0.0)],
        );
        // em: sc 100·(0.25 − 0.1)/0.1 = 150%, ul2 100%.
        assert_close(
            &floats(&p.table, "infill_em[arch=decoder] (Δ% vs base)"),
            &[Some(0.0), Some(150.0), Some(100.0)],
        );
        // Encdec means: nll 1.8, 2.0, 1.9; em 0.2, 0.4, 0.5; base sc (2.0, 0.4).
        // nll: clm −100·(1.8 − 2)/2 = +10%, ul2 +5%; em: clm −50%, ul2 +25%.
        assert_close(
            &floats(&p.table, "val_nll[arch=encdec] (Δ% vs base)"),
            &[Some(10.0), Some(0.0), Some(5.0)],
        );
        assert_close(
            &floats(&p.table, "infill_em[arch=encdec] (Δ% vs base)"),
            &[Some(-50.0), Some(0.0), Some(25.0)],
        );
        // The absolute columns are still there.
        assert_close(
            &floats(&p.table, "infill_em[arch=encdec].mean"),
            &[Some(0.2), Some(0.4), Some(0.5)],
        );

        let expected = "\
| objective | val_nll Δ% · arch=decoder | val_nll Δ% · arch=encdec | infill_em Δ% · arch=decoder | infill_em Δ% · arch=encdec |
| --------- | ------------------------: | -----------------------: | --------------------------: | -------------------------: |
| clm       |               2.10 (base) |                   +10.0% |                 0.10 (base) |                     -50.0% |
| sc        |                    -14.3% |              2.00 (base) |                     +150.0% |                0.40 (base) |
| ul2       |                     +0.0% |                    +5.0% |                     +100.0% |                     +25.0% |

Each cell: the gain of its mean over its baseline's mean, 100 · (mean − base) / |base| %, negated \
for `val_nll` (lower is better), so a positive gain is better; a baseline cell shows its own mean, \
marked (base).

Baselines:
- cells with `arch=decoder`: the cell with `objective=clm`
- cells with `arch=encdec`: the cell with `objective=sc`

**Paired differences (cell − base)**

| objective |       val_nll Δ · arch=decoder |     val_nll Δ · arch=encdec |     infill_em Δ · arch=decoder |   infill_em Δ · arch=encdec |
| --------- | -----------------------------: | --------------------------: | -----------------------------: | --------------------------: |
| clm       |                         (base) | -0.20 (1 pair, no interval) |                         (base) | -0.20 (1 pair, no interval) |
| sc        | +0.30 [+0.20, +0.40] (2 pairs) |                      (base) | +0.15 [+0.10, +0.20] (2 pairs) |                      (base) |
| ul2       |    +0.10 (1 pair, no interval) | -0.10 (1 pair, no interval) |    +0.10 (1 pair, no interval) | +0.10 (1 pair, no interval) |

Each cell: the mean, over the `seed` values it shares with its baseline, of (cell − base) in the \
metric's units (not negated), then [a, b]: its 95% bootstrap confidence interval (expanded \
percentile method, 10,000 resamples, seeded by the values), and the number of pairs. Pairing by `seed` takes \
out what both sides of a pair share (the data order and initialisation a seed fixes), so the \
interval reflects the difference, not the spread across seeds. With 2 paired differences an \
interval lies within their range, which holds their mean at most 50% of the time (1 − 2^(1 − n), \
for a symmetric spread): read it as the least uncertainty there is.

**Absolute values**

**val_nll**
";
        assert!(p.markdown.starts_with(expected), "{}", p.markdown);
        assert!(
            p.markdown
                .contains("| ul2       |  2.10 (n=1, no interval) |"),
            "{}",
            p.markdown
        );
    }

    /// #21: in a table built from what finished, a cell or a baseline whose instances all
    /// failed has no gain, and says why; the table is still built.
    #[test]
    fn a_baseline_that_did_not_finish_leaves_its_gains_unknown() {
        let mut obs: Vec<Observation> = sweep()
            .into_iter()
            .filter(|o| !(o.labels["objective"] == "clm" && o.labels["arch"] == "decoder"))
            .collect();
        let mut failed = ob("clm", "decoder", 0, 0.0, 0.0);
        failed.metrics.clear();
        failed.missing = Some("failed".into());
        obs.push(failed);
        let mut diverged = ob("ul2", "encdec", 1, 9.0, 9.0);
        diverged.missing = Some("diverged".into());
        obs.push(diverged);
        let p = pivot(&obs, &spec(&["objective"], &["arch"], ul2_baselines())).unwrap();
        // Decoder: the baseline (clm) failed; encdec: sc is there.
        assert_eq!(
            floats(&p.table, "val_nll[arch=decoder] (Δ% vs base)"),
            [None, None, None]
        );
        assert_close(
            &floats(&p.table, "val_nll[arch=encdec] (Δ% vs base)"),
            &[Some(10.0), Some(0.0), Some(5.0)],
        );
        assert!(
            p.markdown
                .contains("| clm       |                    failed |                   +10.0% |"),
            "{}",
            p.markdown
        );
        assert!(p.markdown.contains("no base (failed)"), "{}", p.markdown);
    }

    /// The rule does not depend on which keys index rows and which columns.
    #[test]
    fn the_same_baselines_in_another_layout_give_the_same_gains() {
        let p = pivot(
            &sweep(),
            &spec(&["arch", "objective"], &[], ul2_baselines()),
        )
        .unwrap();
        assert_close(
            &floats(&p.table, "infill_em (Δ% vs base)"),
            &[
                Some(0.0),
                Some(150.0),
                Some(100.0),
                Some(-50.0),
                Some(0.0),
                Some(25.0),
            ],
        );
        // One baseline for every cell: the decoder CLM cell.
        let one: Vec<Baseline> =
            serde_json::from_value(json!([{"base": {"arch": "decoder", "objective": "clm"}}]))
                .unwrap();
        let p = pivot(&sweep(), &spec(&["objective"], &["arch"], one)).unwrap();
        // Encdec em 0.2, 0.4, 0.5 over 0.1: +100%, +300%, +400%.
        assert_close(
            &floats(&p.table, "infill_em[arch=encdec] (Δ% vs base)"),
            &[Some(100.0), Some(300.0), Some(400.0)],
        );
        assert!(
            p.markdown
                .contains("- every cell: the cell with `arch=decoder, objective=clm`")
        );
    }

    #[test]
    fn a_missing_baseline_names_the_cell_and_its_baseline() {
        let obs: Vec<Observation> = sweep()
            .into_iter()
            .filter(|o| !(o.labels["objective"] == "sc" && o.labels["arch"] == "encdec"))
            .collect();
        let err = pivot(&obs, &spec(&["objective"], &["arch"], ul2_baselines())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot compute the gain of `val_nll` in the cell `objective=clm, arch=encdec`: its \
             baseline `objective=sc, arch=encdec` has no observations"
        );
        // A baseline value that never occurs.
        let typo: Vec<Baseline> = serde_json::from_value(json!([
            {"base": {"objective": "cml"}},
        ]))
        .unwrap();
        let err = pivot(&sweep(), &spec(&["objective"], &["arch"], typo)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot compute the gain of `val_nll` in the cell `objective=clm, arch=decoder`: its \
             baseline `objective=cml, arch=decoder` has no observations"
        );
    }

    #[test]
    fn a_cell_served_by_no_entry_or_by_two_is_an_error() {
        let decoder_only: Vec<Baseline> = ul2_baselines().into_iter().take(1).collect();
        let err = pivot(&sweep(), &spec(&["objective"], &["arch"], decoder_only)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot compute the gain of `val_nll` in the cell `objective=clm, arch=encdec`: no \
             `relative_to` entry serves it (their `where`: `arch=decoder`)"
        );
        let overlapping: Vec<Baseline> = serde_json::from_value(json!([
            {"where": {"arch": "decoder"}, "base": {"objective": "clm"}},
            {"base": {"objective": "sc"}},
        ]))
        .unwrap();
        let err = pivot(&sweep(), &spec(&["objective"], &["arch"], overlapping)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot compute the gain of `val_nll` in the cell `objective=clm, arch=decoder`: it \
             matches the `where` of `relative_to` entries 1 and 2: a cell needs one baseline"
        );
    }

    /// Each seed moves both methods together (seed 2 is hard); `a` beats `b` by 0.01 on every
    /// seed. The absolute intervals overlap widely; the paired one is [0.01, 0.01]. `c` ran on
    /// other seeds, so it has no pairs.
    fn seeded() -> Vec<Observation> {
        let o = |method: &str, seed: i64, acc: f64| Observation {
            labels: serde_json::from_value(json!({"method": method, "seed": seed})).unwrap(),
            metrics: [("acc".to_owned(), acc)].into(),
            missing: None,
        };
        let mut obs = Vec::new();
        for (seed, base) in [(0, 0.90), (1, 0.80), (2, 0.60), (3, 0.85)] {
            obs.push(o("a", seed, base + 0.01));
            obs.push(o("b", seed, base));
        }
        obs.push(o("c", 10, 0.95));
        obs.push(o("c", 11, 0.97));
        obs
    }

    fn seeded_spec() -> PivotSpec {
        PivotSpec {
            metrics: vec!["acc".to_owned()],
            relative: Some(Relative {
                baselines: serde_json::from_value(json!([{"base": {"method": "b"}}])).unwrap(),
                lower_is_better: Vec::new(),
            }),
            ..spec(&["method"], &[], Vec::new())
        }
    }

    #[test]
    fn paired_differences_are_narrow_where_seeds_move_both_sides() {
        let p = pivot(&seeded(), &seeded_spec()).unwrap();
        // Rows a, b, c.
        let (low, high) = (
            floats(&p.table, "acc.ci_low"),
            floats(&p.table, "acc.ci_high"),
        );
        assert!(
            low[0].unwrap() < high[1].unwrap(),
            "unpaired, a and b overlap"
        );
        assert!(high[0].unwrap() - low[0].unwrap() > 0.1);
        assert_close(
            &floats(&p.table, "acc.delta"),
            &[Some(0.01), Some(0.0), None],
        );
        assert_close(
            &floats(&p.table, "acc.delta_low"),
            &[Some(0.01), None, None],
        );
        assert_close(
            &floats(&p.table, "acc.delta_high"),
            &[Some(0.01), None, None],
        );
        assert_eq!(
            p.table.column("acc.delta_n").unwrap().data,
            ColumnData::Int(vec![Some(4), None, Some(0)])
        );
        assert!(
            p.markdown
                .contains("| a      | +0.01 [+0.01, +0.01] (4 pairs) |"),
            "{}",
            p.markdown
        );
        assert!(
            p.markdown
                .contains("| c      |              no seed in common |"),
            "{}",
            p.markdown
        );
    }

    /// The table is a pure function of the observations: the same bits twice, whatever
    /// their order; other values give other intervals.
    #[test]
    fn the_table_is_reproducible_bit_for_bit() {
        let bits = |obs: &[Observation], col: &str| -> Vec<Option<u64>> {
            let p = pivot(obs, &seeded_spec()).unwrap();
            floats(&p.table, col)
                .into_iter()
                .map(|x| x.map(f64::to_bits))
                .collect()
        };
        let obs = seeded();
        let mut reversed = obs.clone();
        reversed.reverse();
        for col in [
            "acc.ci_low",
            "acc.ci_high",
            "acc.delta_low",
            "acc.delta_high",
        ] {
            assert_eq!(bits(&obs, col), bits(&obs, col), "{col}");
            assert_eq!(bits(&obs, col), bits(&reversed, col), "{col}");
        }
        assert_eq!(
            pivot(&obs, &seeded_spec()).unwrap().markdown,
            pivot(&reversed, &seeded_spec()).unwrap().markdown
        );
        // a's values all move up by 0.001: both ends move. (One value moved may leave an end
        // where it was: the 2.5% end of four values is made of the lowest ones.)
        let mut other = obs.clone();
        for o in other.iter_mut().filter(|o| o.labels["method"] == "a") {
            *o.metrics.get_mut("acc").unwrap() += 0.001;
        }
        for col in ["acc.ci_low", "acc.ci_high"] {
            assert_ne!(bits(&obs, col)[0], bits(&other, col)[0], "{col}");
        }
    }

    #[test]
    fn without_intervals_the_deltas_stay_and_the_interval_columns_go() {
        let spec = PivotSpec {
            ci: None,
            ..seeded_spec()
        };
        let p = pivot(&seeded(), &spec).unwrap();
        let names: Vec<&str> = p.table.column_names().collect();
        assert_eq!(
            names,
            [
                "method",
                "acc.mean",
                "acc.std",
                "acc.n",
                "acc (Δ% vs base)",
                "acc.delta",
                "acc.delta_n"
            ]
        );
        assert!(p.markdown.contains("+0.01 (4 pairs)"), "{}", p.markdown);
        assert!(!p.markdown.contains('['), "{}", p.markdown);
        // Pairing by a key the cells are split by can never pair.
        let spec = PivotSpec {
            pair_by: "method".into(),
            ..seeded_spec()
        };
        assert_eq!(
            pivot(&seeded(), &spec).unwrap_err().to_string(),
            "invalid pivot: `pair_by` is `method`, a row or column key: a cell and its baseline \
             would never share a value of it; pair by a label the cells aggregate over (the seed)"
        );
        // Two instances with one seed in a cell: which pairs is ambiguous, so none.
        let mut obs = seeded();
        obs.push(obs[0].clone());
        let p = pivot(&obs, &seeded_spec()).unwrap();
        assert!(
            p.markdown.contains("repeated seed: no pairs"),
            "{}",
            p.markdown
        );
    }

    #[test]
    fn a_zero_baseline_leaves_the_gain_undefined() {
        let mut obs = sweep();
        for o in &mut obs {
            if o.labels["objective"] == "clm" && o.labels["arch"] == "decoder" {
                o.metrics.insert("infill_em".into(), 0.0);
            }
        }
        let p = pivot(&obs, &spec(&["objective"], &["arch"], ul2_baselines())).unwrap();
        assert_close(
            &floats(&p.table, "infill_em[arch=decoder] (Δ% vs base)"),
            &[Some(0.0), None, None],
        );
        assert!(
            p.markdown.contains("  undefined (base = 0) |"),
            "{}",
            p.markdown
        );
    }

    #[test]
    fn specs_that_cannot_work_are_rejected_up_front() {
        let bad = |rows: &[&str], baselines: Value, lower: &[&str]| {
            let mut s = spec(rows, &[], serde_json::from_value(baselines).unwrap());
            s.relative.as_mut().unwrap().lower_is_better =
                lower.iter().map(|m| (*m).to_owned()).collect();
            pivot(&sweep(), &s).unwrap_err().to_string()
        };
        assert_eq!(
            bad(
                &["objective"],
                json!([{"where": {"arch": "decoder"}, "base": {"objective": "clm"}}]),
                &[]
            ),
            "invalid pivot: `relative_to` entry 1: `where` uses `arch`, which is in neither `rows` \
             nor `cols` (a baseline is a cell of the table)"
        );
        assert_eq!(
            bad(
                &["objective"],
                json!([{"base": {"objective": "clm"}}]),
                &["loss"]
            ),
            "invalid pivot: `lower_is_better` lists `loss`, which is not among the table's metrics"
        );
        assert_eq!(
            bad(&["objective"], json!([]), &[]),
            "invalid pivot: `relative_to`: give at least one `{where, base}` entry, or leave it null"
        );
    }

    #[test]
    fn check_baselines_catches_what_it_can_without_the_table() {
        let check =
            |v: Value| check_baselines(&serde_json::from_value::<Vec<Baseline>>(v).unwrap());
        assert_eq!(check(json!([{"base": {"objective": "clm"}}])), Ok(()));
        assert_eq!(
            check(json!([{"where": {"arch": "encdec"}, "base": {}}])).unwrap_err(),
            "entry 1 has an empty `base`: name the labels of its baseline cell, e.g. `base: \
             {objective: clm}`"
        );
        assert_eq!(
            check(json!([{"base": {"objective": ["clm", "sc"]}}])).unwrap_err(),
            "entry 1: `base.objective` must be a single label value, not `[\"clm\",\"sc\"]`"
        );
        assert_eq!(
            check(json!([
                {"where": {"arch": "decoder", "size": 1}, "base": {"objective": "clm"}},
                {"where": {"size": 1.0, "arch": "decoder"}, "base": {"objective": "sc"}},
            ]))
            .unwrap_err(),
            "entries 1 and 2 have the same `where` (`arch=decoder, size=1.0`): a cell has one \
             baseline"
        );
        // Unknown keys in an entry are refused by serde.
        assert!(serde_json::from_value::<Baseline>(json!({"base": {"a": 1}, "when": {}})).is_err());
    }
}
