//! `report.table`: gather the metrics of every upstream instance into a wide table
//! (`rows` × `cols`, aggregated over the remaining labels, e.g. seeds), as Parquet + Markdown;
//! with `relative_to`, each cell also as its gain (%) over a baseline cell.

use std::collections::BTreeMap;

use ablate_results::{Aggregate, Baseline, Observation, PivotSpec, Relative};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Value};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;

pub(crate) struct Table {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
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
}

impl Table {
    pub(crate) fn new() -> Self {
        Table {
            schema: OpSchema {
                name: "report.table",
                // 2: `relative_to` and `lower_is_better`. 3: the column axis named (`hidden=32`),
                // no `± 0.000` for one value (a null `.std`), inputs that did not finish marked
                // (#21).
                version: 3,
                summary: "Gather the final metrics of every instance of its needs into a table: one row per value of \
                          `rows`, one column per value of `cols`, each cell aggregating `metric` over the other labels \
                          (e.g. seeds). With `relative_to`, each cell is also shown as the gain (%) of its mean over \
                          the mean of a baseline cell. An input that failed, was skipped or diverged is not \
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
                        ParamType::Enum(&["mean_std", "mean", "median", "min", "max", "count"]),
                        json!("mean_std"),
                        "how the instances in a cell are combined",
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
                        "with `relative_to`: metrics whose gain is negated (e.g. a loss), so a positive \
                         gain always means better",
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
        ablate_results::check_baselines(&baselines)
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: TableParams = typed("report.table", ctx.job.params())?;
        let metrics = match p.metric {
            OneOrMany::One(m) => vec![m],
            OneOrMany::Many(ms) => ms,
        };
        let relative = match (p.relative_to, p.lower_is_better.is_empty()) {
            (Some(baselines), _) => Some(Relative {
                baselines,
                lower_is_better: p.lower_is_better,
            }),
            (None, true) => None,
            (None, false) => {
                return Err(OpError::msg(
                    "`lower_is_better` only flips the sign of gains: it needs `relative_to`",
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
        };
        let pivot = ablate_results::pivot(&observations, &spec)
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

/// One input of a report: its id, and its labels and final metrics or why it has none.
#[derive(Debug, Clone)]
pub(crate) struct Gathered {
    pub id: String,
    pub obs: Observation,
}

impl Gathered {
    pub(crate) fn finished(&self) -> bool {
        self.obs.missing.is_none()
    }
}

/// Every input of a gathering report, in the job's order, then those that did not finish:
/// an input whose entry diverged keeps its labels but shows as `diverged` (its metrics stop
/// where it diverged: no aggregate may take them for a result), and the inputs the run could
/// not compute (failed, or skipped because something upstream failed or diverged) are the
/// job's `missing` ones (#21).
pub(crate) fn gather(ctx: &OpContext<'_>) -> Result<Vec<Gathered>, OpError> {
    let mut out = Vec::with_capacity(ctx.job.inputs.len() + ctx.job.missing.len());
    for input in &ctx.job.inputs {
        let manifest = ctx.manifest(&input.key)?;
        out.push(Gathered {
            id: input.id.clone(),
            obs: Observation {
                labels: input.labels.iter().cloned().collect(),
                metrics: manifest
                    .final_metrics()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                missing: (!manifest.status.is_done()).then(|| manifest.status.name().to_owned()),
            },
        });
    }
    for m in &ctx.job.missing {
        out.push(Gathered {
            id: m.id.clone(),
            obs: Observation {
                labels: m.labels.iter().cloned().collect(),
                metrics: BTreeMap::new(),
                missing: Some(m.why.name().to_owned()),
            },
        });
    }
    Ok(out)
}

/// Why `metric` cannot be reported from the inputs that finished, if it cannot: none of them
/// has it (with the nearest name they do have, and what they have), or `every` is asked and
/// some lack it (which). `None` when no input finished: the report marks them all.
pub(crate) fn metric_problem(metric: &str, inputs: &[Gathered], every: bool) -> Option<String> {
    let finished: Vec<(&str, Vec<&str>)> = inputs
        .iter()
        .filter(|g| g.finished())
        .map(|g| {
            (
                g.id.as_str(),
                g.obs.metrics.keys().map(String::as_str).collect(),
            )
        })
        .collect();
    name_problem(metric, &finished, every, "the metric")
}

/// [`metric_problem`] over each finished input's `(id, names)`: `what` is how the name is
/// spoken of (`the metric`, `the stepped metric`).
pub(crate) fn name_problem(
    metric: &str,
    finished: &[(&str, Vec<&str>)],
    every: bool,
    what: &str,
) -> Option<String> {
    let total = finished.len();
    let lacking: Vec<&str> = finished
        .iter()
        .filter(|(_, names)| !names.contains(&metric))
        .map(|(id, _)| *id)
        .collect();
    if total == 0 || lacking.is_empty() || (!every && lacking.len() < total) {
        return None;
    }
    let mut have: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, names) in finished {
        for name in names {
            *have.entry(name).or_default() += 1;
        }
    }
    let listed: Vec<String> = have
        .iter()
        .map(|(name, &n)| {
            if n == total {
                format!("`{name}`")
            } else {
                format!("`{name}` ({n} of {total})")
            }
        })
        .collect();
    let listed = if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    };
    if lacking.len() == total {
        let guess = ablate_spec::did_you_mean(metric, have.keys().copied())
            .map(|m| match have[m] {
                n if n == total => format!("; did you mean `{m}`? (all {total} inputs have it)"),
                n => format!("; did you mean `{m}`? ({n} of {total} inputs have it)"),
            })
            .unwrap_or_default();
        return Some(format!(
            "no input has {what} `{metric}`{guess}; the inputs have: {listed}"
        ));
    }
    const SHOWN: usize = 3;
    let mut which: Vec<String> = lacking
        .iter()
        .take(SHOWN)
        .map(|id| format!("`{id}`"))
        .collect();
    if lacking.len() > SHOWN {
        which.push(format!("and {} more", lacking.len() - SHOWN));
    }
    Some(format!(
        "{} of {total} inputs have no {} `{metric}` ({}); the inputs have: {listed}",
        lacking.len(),
        what.trim_start_matches("the "),
        which.join(", ")
    ))
}

/// The note under a report built without some inputs: how many, and which (a few).
pub(crate) fn missing_note(inputs: &[Gathered]) -> Option<String> {
    let missing: Vec<&Gathered> = inputs.iter().filter(|g| !g.finished()).collect();
    if missing.is_empty() {
        return None;
    }
    const SHOWN: usize = 5;
    let mut which: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(|g| {
            format!(
                "`{}` ({})",
                g.id,
                g.obs.missing.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if missing.len() > SHOWN {
        which.push(format!("and {} more", missing.len() - SHOWN));
    }
    // "1 of 1 input is", "2 of 6 inputs are": the noun agrees with the total, the verb with
    // the count.
    Some(format!(
        "{} of {} input{} {} not in the table: {}.",
        missing.len(),
        inputs.len(),
        if inputs.len() == 1 { "" } else { "s" },
        if missing.len() == 1 { "is" } else { "are" },
        which.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(id: &str, metrics: &[&str], missing: Option<&str>) -> Gathered {
        Gathered {
            id: id.into(),
            obs: Observation {
                labels: BTreeMap::new(),
                metrics: metrics.iter().map(|m| ((*m).to_owned(), 1.0)).collect(),
                missing: missing.map(str::to_owned),
            },
        }
    }

    /// #21: a metric no input has failed as "observation 0 has no metric …" after the sweep.
    #[test]
    fn a_metric_no_input_has_names_the_nearest_and_what_inputs_have() {
        let inputs: Vec<Gathered> = (0..12)
            .map(|i| {
                let metrics: &[&str] = if i < 6 {
                    &["test_acc", "test_loss", "val_acc"]
                } else {
                    &["test_acc", "test_loss"]
                };
                gathered(&format!("train[seed={i}]"), metrics, None)
            })
            .chain([gathered("train[seed=12]", &[], Some("failed"))])
            .collect();
        assert_eq!(
            metric_problem("test_accc", &inputs, true).unwrap(),
            "no input has the metric `test_accc`; did you mean `test_acc`? (all 12 inputs have \
             it); the inputs have: `test_acc`, `test_loss`, `val_acc` (6 of 12)"
        );
        assert_eq!(
            metric_problem("val_acc", &inputs, true).unwrap(),
            "6 of 12 inputs have no metric `val_acc` (`train[seed=6]`, `train[seed=7]`, \
             `train[seed=8]`, and 3 more); the inputs have: `test_acc`, `test_loss`, `val_acc` (6 \
             of 12)"
        );
        assert_eq!(metric_problem("val_acc", &inputs, false), None);
        assert_eq!(metric_problem("test_acc", &inputs, true), None);
    }

    /// #21 (QA §13): "1 of 1 inputs are not in the table".
    #[test]
    fn the_missing_note_agrees_in_number() {
        let one = [gathered("train[seed=0]", &[], Some("failed"))];
        assert_eq!(
            missing_note(&one).unwrap(),
            "1 of 1 input is not in the table: `train[seed=0]` (failed)."
        );
        let three = [
            gathered("train[seed=0]", &[], Some("failed")),
            gathered("train[seed=1]", &[], Some("skipped")),
            gathered("train[seed=2]", &["acc"], None),
        ];
        assert_eq!(
            missing_note(&three).unwrap(),
            "2 of 3 inputs are not in the table: `train[seed=0]` (failed), `train[seed=1]` \
             (skipped)."
        );
    }

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
}
