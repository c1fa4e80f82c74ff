//! `report.table`: gather the metrics of every upstream instance into a wide table
//! (`rows` × `cols`, aggregated over the remaining labels, e.g. seeds), as Parquet + Markdown.

use std::collections::BTreeMap;

use ablate_results::{Aggregate, Observation, PivotSpec};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
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
}

impl Table {
    pub(crate) fn new() -> Self {
        Table {
            schema: OpSchema {
                name: "report.table",
                version: 1,
                summary: "Gather the final metrics of every instance of its needs into a table: one row per value of \
                          `rows`, one column per value of `cols`, each cell aggregating `metric` over the other labels \
                          (e.g. seeds). Writes `table.parquet` and `table.md`, published as \
                          `results/<pipeline>/<stage>.parquet` and `.md`.",
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
                ],
                gathers: true,
                free_params: false,
                inputs_by_name: false,
                needs: (1, None),
            },
        }
    }
}

impl Op for Table {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: TableParams = typed("report.table", ctx.job.params())?;
        let metrics = match p.metric {
            OneOrMany::One(m) => vec![m],
            OneOrMany::Many(ms) => ms,
        };
        let observations = observations(ctx)?;
        let spec = PivotSpec {
            rows: p.rows,
            cols: p.cols,
            metrics,
            aggregate: p.aggregate,
            precision: p.precision,
        };
        let pivot = ablate_results::pivot(&observations, &spec)
            .map_err(|e| OpError::with("cannot build the table", e))?;
        let out = ctx.out_dir();
        ablate_results::write_table(&out.join("table.parquet"), &pivot.table)
            .map_err(|e| OpError::with("failed to write the table", e))?;
        let md = format!(
            "# {} — {}\n\n{}",
            ctx.job.pipeline, ctx.job.stage, pivot.markdown
        );
        std::fs::write(out.join("table.md"), md)
            .map_err(|e| OpError::with("failed to write `table.md`", e))?;
        Ok(OpOutput {
            metrics: Vec::new(),
            publish: vec!["table.parquet".into(), "table.md".into()],
        })
    }
}

/// The labels and final metrics of every input of a gathering report.
pub(crate) fn observations(ctx: &OpContext<'_>) -> Result<Vec<Observation>, OpError> {
    ctx.job
        .inputs
        .iter()
        .map(|input| {
            let manifest = ctx.manifest(&input.key).ok_or_else(|| {
                OpError::msg(format!(
                    "the cache entry of input `{}` has no readable manifest",
                    input.id
                ))
            })?;
            let metrics: BTreeMap<String, f64> = manifest
                .final_metrics()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            Ok(Observation {
                labels: input.labels.iter().cloned().collect(),
                metrics,
            })
        })
        .collect()
}
