//! `report.plot`: gather upstream instances into one figure, written as `plot.svg` and
//! `plot.png`. `line` plots a final metric against a label (mean ± std over the other labels);
//! `curve` plots a metric logged by step against the step, the same way; `pareto` plots two
//! final metrics against each other, a point per group with its Pareto frontier; `flow`, `grid`
//! and `metric` draw the per-layer tables of `eval.metric` instances, one row of panels per
//! instance and one column per layer.

pub use ablate_report::plot::caption_figure;

use ablate_cache::Manifest;
use ablate_run::{JobInput, OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Value};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::OneOrMany;
use ablate_report::plot::{data, draw, figures};
pub(crate) use figures::Kind;
#[cfg(test)]
use figures::{LINE_SIZE, PANEL_SIZE, PARETO_PANEL};

pub(crate) struct Plot {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlotParams {
    kind: Kind,
    title: Option<String>,
    select: Option<Value>,
    x: Option<String>,
    y: Option<String>,
    group: Option<OneOrMany>,
    facet: Option<String>,
    lower_is_better: Vec<String>,
    log_x: bool,
    log_y: bool,
    layers: Option<Vec<i64>>,
}

impl PlotParams {
    /// The figure's settings, as ablate-report takes them.
    fn spec(&self) -> figures::Spec {
        figures::Spec {
            kind: self.kind,
            title: self.title.clone(),
            x: self.x.clone(),
            y: self.y.clone(),
            group: self.group.as_ref().map(|g| match g {
                OneOrMany::One(g) => vec![g.clone()],
                OneOrMany::Many(gs) => gs.clone(),
            }),
            facet: self.facet.clone(),
            lower_is_better: self.lower_is_better.clone(),
            log_x: self.log_x,
            log_y: self.log_y,
            layers: self.layers.clone(),
        }
    }
}

impl Plot {
    pub(crate) fn new() -> Self {
        Plot {
            schema: OpSchema {
                name: "report.plot",
                // 2–4: ellipses scaled by the median; titles fit; one-panel rows side by side; row titles
                // show the labels that differ. 5: `pareto`. 6: several `group` labels, a
                // titled legend, inputs that did not finish left out and named in the title (#21).
                // 7: a pareto label moves off the labels of points close to it. 8: pareto labels
                // placed clear of labels, points and the frontier, short, with a legend line;
                // axes say which way is better (#25).
                version: 8,
                summary: "Gather every instance of its needs into one figure, written as `plot.svg` and \
                          `plot.png` and published as `results/<pipeline>/<stage>.svg` and `.png`. \
                          `line`: metric `y` against label `x`, one line per value of `group`, each point \
                          the mean ± one std over the other labels (e.g. seeds). `curve`: metric `y` \
                          logged by step (e.g. per epoch) against the step, one line per value of \
                          `group`, each step the mean ± one std (a shaded band) over the other labels; \
                          every input must log `y` by step. `pareto`: metric `y` against metric `x`, \
                          a point per value of the `group` labels (mean ± one std on both axes, \
                          named), one panel per value of `facet`, and each panel's Pareto frontier (the points \
                          no other point beats on both axes) as a step line. `flow`, `grid`, `metric`: \
                          the per-layer tables of `eval.metric` instances, one row of panels per instance \
                          (at most 6; narrow with `select`), one column per layer — the data coloured by \
                          class, the deformed grid, or the metric's ellipses. Inputs that failed, were skipped or \
                          diverged are left out, and the title says how many.",
                params: vec![
                    ParamSpec::required(
                        "kind",
                        ParamType::Enum(&["line", "curve", "pareto", "flow", "grid", "metric"]),
                        "what to draw",
                    ),
                    ParamSpec::with_default(
                        "title",
                        ParamType::optional(ParamType::Str),
                        json!(null),
                        "the figure's title; null derives one (e.g. `test_acc vs steps`)",
                    ),
                    ParamSpec::with_default(
                        "select",
                        ParamType::Any,
                        json!(null),
                        "a map from label to value: only inputs with all these labels are plotted",
                    ),
                    ParamSpec::with_default(
                        "x",
                        ParamType::optional(ParamType::Str),
                        json!(null),
                        "line: the label on the x axis; pareto: the metric on the x axis (required for both)",
                    ),
                    ParamSpec::with_default(
                        "y",
                        ParamType::optional(ParamType::Str),
                        json!(null),
                        "line, pareto: the metric on the y axis; curve: the metric logged by step \
                         (required for all three)",
                    ),
                    ParamSpec::with_default(
                        "group",
                        ParamType::optional(ParamType::one_of(
                            ParamType::Str,
                            ParamType::list(ParamType::Str),
                        )),
                        json!(null),
                        "line, curve: a label (or labels) with one line per value (per combination), and \
                         a legend titled by it; pareto: the label (or labels) with one point per value \
                         (required for `pareto`)",
                    ),
                    ParamSpec::with_default(
                        "facet",
                        ParamType::optional(ParamType::Str),
                        json!(null),
                        "pareto: a label with one panel per value, side by side on shared axes",
                    ),
                    ParamSpec::with_default(
                        "lower_is_better",
                        ParamType::list(ParamType::Str),
                        json!([]),
                        "pareto: the metrics among `x` and `y` for which lower is better (e.g. a loss); \
                         the frontier is taken accordingly",
                    ),
                    ParamSpec::with_default(
                        "log_x",
                        ParamType::Bool,
                        json!(false),
                        "line, curve: logarithmic x axis",
                    ),
                    ParamSpec::with_default(
                        "log_y",
                        ParamType::Bool,
                        json!(false),
                        "line, curve: logarithmic y axis",
                    ),
                    ParamSpec::with_default(
                        "layers",
                        ParamType::optional(ParamType::list(ParamType::non_negative_int())),
                        json!(null),
                        "flow/grid/metric: the layers shown; null means 4 evenly spaced from 0 to \
                         the last (`metric`: layer 0)",
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

impl Op for Plot {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: PlotParams = typed("report.plot", ctx.job.params())?;
        // Curves show what early stopping pruned, cut where it stopped; the other kinds compare
        // final values, which a pruned run does not have.
        let chosen = choose(ctx, p.select.as_ref(), p.kind == Kind::Curve)?;
        let out = ctx.out_dir();
        let spec = p.spec();
        spec.check_applicable().map_err(OpError::msg)?;
        let entries = &chosen.entries;
        let note = chosen.note();
        let result = match p.kind {
            Kind::Line => draw::save(&line_figure(entries, &p, &note)?, out, "plot"),
            Kind::Curve => draw::save(&curve_figure(entries, &p, &note)?, out, "plot"),
            Kind::Pareto => draw::save(&pareto_figure(entries, &p, &note)?, out, "plot"),
            _ => {
                let read = |n: usize, file: &str| read_input_table(ctx, entries[n].0, file);
                let inputs = figure_inputs(entries);
                let fig = figures::panel_figure(&inputs, &spec, &note, read, OpError::msg)?;
                draw::save(&fig, out, "plot")
            }
        };
        result.map_err(OpError::msg)?;
        Ok(OpOutput {
            metrics: Vec::new(),
            publish: vec!["plot.svg".into(), "plot.png".into()],
            ..OpOutput::default()
        })
    }
}

/// The selected inputs: those with a result to draw (with their manifests), and why each of
/// the others is left out: it did not finish (failed, skipped) or diverged.
struct Chosen<'a> {
    entries: Vec<(&'a JobInput, Manifest)>,
    left_out: Vec<&'static str>,
    /// Of `entries`, how many early stopping pruned (drawn only by curves).
    pruned: usize,
}

impl Chosen<'_> {
    /// What the title says was left out, and how many curves end early: ` (left out: 1
    /// failed, 2 diverged)`, ` (16 pruned early)`.
    fn note(&self) -> String {
        figures::title_note(self.pruned, &self.left_out)
    }
}

/// The inputs whose labels match `select` (all of them without it), those that did not finish
/// apart (#21): a figure leaves them out and says so.
fn choose<'a>(
    ctx: &OpContext<'a>,
    select: Option<&Value>,
    take_pruned: bool,
) -> Result<Chosen<'a>, OpError> {
    let job = ctx.job;
    let select = data::parse_select(select).map_err(OpError::msg)?;
    let mut chosen = Chosen {
        entries: Vec::new(),
        left_out: job
            .missing
            .iter()
            .filter(|m| data::selected(&m.labels, &select))
            .map(|m| m.why.name())
            .collect(),
        pruned: 0,
    };
    for input in job
        .inputs
        .iter()
        .filter(|i| data::selected(&i.labels, &select))
    {
        let manifest = ctx.manifest(&input.key)?;
        let pruned = matches!(manifest.status, ablate_cache::EntryStatus::Pruned { .. });
        if manifest.status.is_done() || (pruned && take_pruned) {
            chosen.pruned += usize::from(pruned);
            chosen.entries.push((input, manifest));
        } else {
            chosen.left_out.push(manifest.status.name());
        }
    }
    if chosen.entries.is_empty() && chosen.left_out.is_empty() {
        let labels: Vec<&[(String, Value)]> = job
            .inputs
            .iter()
            .map(|i| i.labels.as_slice())
            .chain(job.missing.iter().map(|m| m.labels.as_slice()))
            .collect();
        return Err(OpError::msg(data::select_matches_none(&select, &labels)));
    }
    if chosen.entries.is_empty() {
        return Err(OpError::msg(format!(
            "nothing to draw: none of the {} selected inputs has a result ({})",
            chosen.left_out.len(),
            ablate_report::gap_text(&chosen.left_out)
        )));
    }
    Ok(chosen)
}

/// The inputs as ablate-report's figures take them: id, labels, every metric logged, and
/// whether early stopping pruned it.
fn figure_inputs(entries: &[(&JobInput, Manifest)]) -> Vec<figures::Input> {
    entries
        .iter()
        .map(|(input, manifest)| figures::Input {
            id: input.id.clone(),
            labels: input.labels.clone(),
            metrics: manifest
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.step, m.value))
                .collect(),
            pruned: matches!(manifest.status, ablate_cache::EntryStatus::Pruned { .. }),
        })
        .collect()
}

fn line_figure(
    entries: &[(&JobInput, Manifest)],
    p: &PlotParams,
    note: &str,
) -> Result<draw::LineFigure, OpError> {
    figures::line_figure(&figure_inputs(entries), &p.spec(), note).map_err(OpError::msg)
}

fn curve_figure(
    entries: &[(&JobInput, Manifest)],
    p: &PlotParams,
    note: &str,
) -> Result<draw::LineFigure, OpError> {
    figures::curve_figure(&figure_inputs(entries), &p.spec(), note).map_err(OpError::msg)
}

fn pareto_figure(
    entries: &[(&JobInput, Manifest)],
    p: &PlotParams,
    note: &str,
) -> Result<draw::ParetoFigure, OpError> {
    figures::pareto_figure(&figure_inputs(entries), &p.spec(), note).map_err(OpError::msg)
}

/// Table `file` of `input`, which `eval.metric` wrote; an error says where it looked.
fn read_input_table(
    ctx: &OpContext<'_>,
    input: &JobInput,
    file: &str,
) -> Result<ablate_results::Table, OpError> {
    let Some(path) = ctx.input_file(&input.key, file)? else {
        return Err(OpError::msg(format!(
            "input `{}` has no `{file}` (looked in `{}`); `report.plot` of this kind reads the \
             outputs of `eval.metric`",
            input.id,
            ctx.entry_dir(&input.key).display()
        )));
    };
    ablate_results::read_table(&path)
        .map_err(|e| OpError::with(format!("cannot read `{file}` of input `{}`", input.id), e))
}

#[cfg(test)]
mod tests;
