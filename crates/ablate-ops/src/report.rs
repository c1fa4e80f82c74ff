//! `report.table`: gather the metrics of every upstream instance into a wide table
//! (`rows` × `cols`, aggregated over the remaining labels, e.g. seeds), as Parquet + Markdown;
//! with `relative_to`, each cell also as its gain (%) over a baseline cell.

use ablate_report::stats::Bootstrap;
use ablate_report::{Aggregate, Baseline, Observation, PivotSpec, Relative};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Value};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::{OneOrMany, gather, metric_problem, missing_note};

pub(crate) struct Table {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableParams {
    rows: Vec<String>,
    cols: Vec<String>,
    metric: OneOrMany,
    aggregate: Aggregate,
    precision: usize,
    relative_to: Option<Vec<Baseline>>,
    lower_is_better: Vec<String>,
    best: Option<String>,
    top: Option<usize>,
    ci: Ci,
    resamples: usize,
    pair_by: String,
}

/// `ci`: a level, or `false`/`null` for none (`true`: the default level).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ci {
    Level(f64),
    On(bool),
    Off(()),
}

impl Ci {
    fn level(&self) -> Option<f64> {
        match self {
            Ci::Level(x) => Some(*x),
            Ci::On(true) => Some(DEFAULT_LEVEL),
            Ci::On(false) | Ci::Off(()) => None,
        }
    }
}

const DEFAULT_LEVEL: f64 = 0.95;

impl Table {
    pub(crate) fn new() -> Self {
        Table {
            schema: OpSchema {
                name: "report.table",
                // 2: `relative_to` and `lower_is_better`. 3: the column axis named (`hidden=32`),
                // no `± 0.000` for one value (a null `.std`), inputs that did not finish marked
                // (#21). 4: `best` and `top` (#24). 5: bootstrap confidence intervals of the mean
                // (`ci`, `resamples`), paired differences over shared seeds with `relative_to`
                // (`pair_by`), the `iqm` aggregate (#25). 6: the expanded percentile interval (wider
                // with few seeds), a caption saying what few seeds can cover, `iqm` cells with n
                // and an interval.
                version: 6,
                summary: "Gather the final metrics of every instance of its needs into a table: one row per value of \
                          `rows`, one column per value of `cols`, each cell aggregating `metric` over the other labels \
                          (e.g. seeds). `mean_std` cells read `0.930 ± 0.010 [0.912, 0.948]`: mean ± sample \
                          standard deviation, then the 95% bootstrap confidence interval of the mean (expanded percentile, \
                          10,000 resamples, seeded by the values, so the table is reproducible bit for bit; none \
                          for one value: `(n=1, no interval)`); Parquet columns `<metric>.mean`, `.std`, `.n`, \
                          `.ci_low`, `.ci_high`. With `relative_to`, each cell is also shown as the gain (%) of its \
                          mean over the mean of a baseline cell, and as the paired difference (cell − base) over \
                          the seeds both share, with its interval: `+0.012 [+0.004, +0.020] (3 pairs)`; columns \
                          `.delta`, `.delta_low`, `.delta_high`, `.delta_n`. With `best`, the rows come best first (a search's best \
                          configurations). An input that failed, was skipped, diverged or was pruned is not \
                          aggregated: its cell says so (`0.93 ± 0.01 (n=2, 1 failed)`). Writes `table.parquet` \
                          and `table.md`, published as `results/<pipeline>/<stage>.parquet` and `.md`.",
                params: vec![
                    ParamSpec::required(
                        "rows",
                        ParamType::list(ParamType::Str),
                        "label keys that index the rows",
                    ),
                    ParamSpec::with_default(
                        "cols",
                        ParamType::list(ParamType::Str),
                        json!([]),
                        "label keys that index the columns",
                    ),
                    ParamSpec::required(
                        "metric",
                        ParamType::one_of(ParamType::Str, ParamType::list(ParamType::Str)),
                        "the metric (or metrics) to tabulate",
                    ),
                    ParamSpec::with_default(
                        "aggregate",
                        ParamType::Enum(&[
                            "mean_std", "mean", "median", "iqm", "min", "max", "count",
                        ]),
                        json!("mean_std"),
                        "how the instances in a cell are combined: `mean_std` (mean ± sample sd, n and the \
                         interval of `ci`), `iqm` (the interquartile mean, the mean of the middle 50% with \
                         fractional weights at the quartiles: robust to an outlying seed; n and the percentile \
                         bootstrap interval of `ci`), or one number",
                    ),
                    ParamSpec::with_default(
                        "precision",
                        ParamType::Int { min: 0, max: 12 },
                        json!(3),
                        "decimals shown in the Markdown table",
                    ),
                    ParamSpec::with_default(
                        "relative_to",
                        ParamType::optional(ParamType::list(ParamType::Any)),
                        json!(null),
                        "baselines: a list of `{where, base}` maps of labels (row or column keys). An \
                         entry serves the cells whose labels match its `where` (every cell without one); \
                         each cell must be served by exactly one, and its baseline is the cell with the labels \
                         of `base` in place of its own. Each cell then also shows 100 · (mean − base) / |base| \
                         %, computed on the means; a baseline cell shows 0 % (Parquet) or its own mean \
                         (Markdown)",
                    ),
                    ParamSpec::with_default(
                        "lower_is_better",
                        ParamType::list(ParamType::Str),
                        json!([]),
                        "metrics for which smaller is better (e.g. a loss): with `relative_to`, their gain \
                         is negated, so a positive gain always means better; with `best`, the smallest comes \
                         first",
                    ),
                    ParamSpec::with_default(
                        "best",
                        ParamType::optional(ParamType::Str),
                        json!(null),
                        "one of the metrics: the rows come best first by its mean (the largest, or the \
                         smallest if it is in `lower_is_better`), rows without a value (pruned, failed) last, \
                         instead of in label order; a table without `cols`",
                    ),
                    ParamSpec::with_default(
                        "ci",
                        ParamType::one_of(
                            ParamType::Float {
                                min: 0.5,
                                max: 0.999,
                            },
                            ParamType::optional(ParamType::Bool),
                        ),
                        json!(DEFAULT_LEVEL),
                        "the confidence level of the intervals: the expanded percentile bootstrap interval of each \
                         `mean_std` cell's mean and of each paired difference (`relative_to`), the percentile one \
                         of each `iqm` cell; `false` or \
                         `null`: none",
                    ),
                    ParamSpec::with_default(
                        "resamples",
                        ParamType::Int {
                            min: 100,
                            max: 1_000_000,
                        },
                        json!(10_000),
                        "bootstrap resamples per interval (drawn from a generator seeded by the cell's \
                         values, so the same results give the same table)",
                    ),
                    ParamSpec::with_default(
                        "pair_by",
                        ParamType::Str,
                        json!("seed"),
                        "with `relative_to`: the label that pairs a cell's instances with its baseline's; \
                         the paired difference is the mean of (cell − base) over the values of it both have",
                    ),
                    ParamSpec::with_default(
                        "top",
                        ParamType::optional(ParamType::positive_int()),
                        json!(null),
                        "with `best`: only the best N rows",
                    ),
                ],
                gathers: true,
                free_params: false,
                inputs_by_name: false,
                on_device: false,
                needs: (1, None),
            },
        }
    }
}

impl Op for Table {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    /// `relative_to` is checked when the pipeline is loaded, as far as it can be without the
    /// table's `rows` and `cols` (those are checked when the table is built).
    fn check_value(&self, param: &str, value: &Value) -> Result<(), String> {
        if param != "relative_to" || value.is_null() {
            return Ok(());
        }
        let baselines: Vec<Baseline> = serde_json::from_value(value.clone())
            .map_err(|e| format!("expected a list of `{{where, base}}` maps of labels: {e}"))?;
        ablate_report::check_baselines(&baselines)
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: TableParams = typed("report.table", ctx.job.params())?;
        let metrics = match p.metric {
            OneOrMany::One(m) => vec![m],
            OneOrMany::Many(ms) => ms,
        };
        let best = match (p.best, p.top) {
            (Some(metric), top) => Some(ablate_report::Best {
                lower: p.lower_is_better.contains(&metric),
                metric,
                top,
            }),
            (None, Some(_)) => {
                return Err(OpError::msg(
                    "`top` keeps the best rows: it needs `best` (the metric they are ranked by)",
                ));
            }
            (None, None) => None,
        };
        let relative = match (p.relative_to, p.lower_is_better.is_empty()) {
            (Some(baselines), _) => Some(Relative {
                baselines,
                lower_is_better: p.lower_is_better,
            }),
            (None, true) => None,
            (None, false) if best.is_some() => None,
            (None, false) => {
                return Err(OpError::msg(
                    "`lower_is_better` says which way a metric is better for `relative_to`'s gains \
                     and `best`'s order: it needs one of them",
                ));
            }
        };
        let inputs = gather(ctx)?;
        for metric in &metrics {
            if let Some(problem) = metric_problem(metric, &inputs, true) {
                return Err(OpError::msg(format!("cannot build the table: {problem}")));
            }
        }
        let observations: Vec<Observation> = inputs.iter().map(|g| g.obs.clone()).collect();
        let spec = PivotSpec {
            rows: p.rows,
            cols: p.cols,
            metrics,
            aggregate: p.aggregate,
            precision: p.precision,
            relative,
            best,
            ci: p.ci.level().map(|level| Bootstrap {
                level,
                resamples: p.resamples,
            }),
            pair_by: p.pair_by,
        };
        let pivot = ablate_report::pivot(&observations, &spec)
            .map_err(|e| OpError::with("cannot build the table", e))?;
        let out = ctx.out_dir();
        ablate_results::write_table(&out.join("table.parquet"), &pivot.table)
            .map_err(|e| OpError::with("failed to write the table", e))?;
        let mut md = format!(
            "# {} — {}\n\n{}",
            ctx.job.pipeline, ctx.job.stage, pivot.markdown
        );
        if let Some(note) = missing_note(&inputs) {
            md.push_str(&format!("\n{note}\n"));
        }
        std::fs::write(out.join("table.md"), md)
            .map_err(|e| OpError::with("failed to write `table.md`", e))?;
        Ok(OpOutput {
            metrics: Vec::new(),
            publish: vec!["table.parquet".into(), "table.md".into()],
            ..OpOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a pipeline file's `relative_to` gets when it is loaded.
    #[test]
    fn relative_to_is_checked_at_load_time() {
        let t = Table::new();
        let ok = json!([
            {"where": {"arch": "decoder"}, "base": {"objective": "clm"}},
            {"where": {"arch": "encdec"}, "base": {"objective": "sc"}},
        ]);
        assert_eq!(t.check_value("relative_to", &ok), Ok(()));
        assert_eq!(t.check_value("relative_to", &json!(null)), Ok(()));
        // Other params are the schema's business.
        assert_eq!(t.check_value("rows", &json!([{"x": 1}])), Ok(()));
        let err = |v: Value| t.check_value("relative_to", &v).unwrap_err();
        assert_eq!(
            err(json!([{"where": {"arch": "decoder"}, "baseline": {"objective": "clm"}}])),
            "expected a list of `{where, base}` maps of labels: unknown field `baseline`, expected \
             `where` or `base`"
        );
        assert_eq!(
            err(json!([{"arch": "decoder", "objective": "clm"}])),
            "expected a list of `{where, base}` maps of labels: unknown field `arch`, expected \
             `where` or `base`"
        );
        assert!(err(json!([])).contains("at least one"));
        assert!(
            err(json!([{"base": {"objective": "clm"}}, {"base": {"objective": "sc"}}]))
                .contains("the same `where` (every cell)")
        );
    }

    /// `ci: 0.9`, `true` (the default level), `false` and `null` (none).
    #[test]
    fn ci_takes_a_level_or_a_switch() {
        let level = |v: Value| serde_json::from_value::<Ci>(v).unwrap().level();
        assert_eq!(level(json!(0.9)), Some(0.9));
        assert_eq!(level(json!(true)), Some(0.95));
        assert_eq!(level(json!(false)), None);
        assert_eq!(level(json!(null)), None);
        let schema = Table::new();
        let ci = schema
            .schema
            .params
            .iter()
            .find(|p| p.name == "ci")
            .unwrap();
        assert_eq!(ci.default, Some(json!(0.95)));
    }
}
