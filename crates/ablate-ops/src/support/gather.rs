//! The inputs of a gathering report (`report.table`, `report.claims`, `report.plot`): each
//! input's labels and final metrics or why it has none, what to say when a metric is missing,
//! and the note under a report built without some inputs.

use std::collections::BTreeMap;

use ablate_report::{Observation, name_problem};
use ablate_run::{OpContext, OpError};
use serde::Deserialize;

/// One name or a list of names (`metric: acc` or `metric: [acc, loss]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
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
                missing: match &manifest.status {
                    ablate_cache::EntryStatus::Done => None,
                    // Where early stopping stopped it: `pruned at 9`.
                    ablate_cache::EntryStatus::Pruned { step } => Some(format!("pruned at {step}")),
                    other => Some(other.name().to_owned()),
                },
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
}
