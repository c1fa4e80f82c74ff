//! `report.plot`: gather upstream instances into one figure, written as `plot.svg` and
//! `plot.png`. `line` plots a final metric against a label (mean ± std over the other labels);
//! `curve` plots a metric logged by step against the step, the same way; `pareto` plots two
//! final metrics against each other, a point per group with its Pareto frontier; `flow`, `grid`
//! and `metric` draw the per-layer tables of `eval.metric` instances, one row of panels per
//! instance and one column per layer.

mod panels;

pub use ablate_report::plot::caption_figure;

use std::collections::BTreeMap;

use ablate_cache::Manifest;
use ablate_run::{JobInput, OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Value};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::OneOrMany;
use ablate_report::plot::{data, draw};
use data::{FinalMetrics, Layers, MetricPoint, Stepped};
use draw::{LineFigure, Panel, PanelContent, PanelFigure, PanelRow, ParetoFigure, Spread};
#[cfg(test)]
use panels::metric_panels;
use panels::panel_figure;

/// More rows than this make unreadable panels: the user narrows with `select`.
const MAX_ROWS: usize = 6;
const LINE_SIZE: (u32, u32) = (720, 480);
const PANEL_SIZE: (u32, u32) = (240, 220);
const PARETO_PANEL: (u32, u32) = (480, 440);

pub(crate) struct Plot {
    schema: OpSchema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Line,
    Curve,
    Pareto,
    Flow,
    Grid,
    Metric,
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

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Line => "line",
            Kind::Curve => "curve",
            Kind::Pareto => "pareto",
            Kind::Flow => "flow",
            Kind::Grid => "grid",
            Kind::Metric => "metric",
        }
    }
}

impl PlotParams {
    /// `group` as a list of label keys (empty without one).
    fn group_keys(&self) -> Vec<String> {
        match &self.group {
            None => Vec::new(),
            Some(OneOrMany::One(g)) => vec![g.clone()],
            Some(OneOrMany::Many(gs)) => gs.clone(),
        }
    }

    /// Refuses the params `kind` does not use, naming the kinds that do.
    fn check_applicable(&self) -> Result<(), OpError> {
        let set = [
            ("x", self.x.is_some(), "`line` and `pareto`"),
            ("y", self.y.is_some(), "`line`, `curve` and `pareto`"),
            (
                "group",
                self.group.is_some(),
                "`line`, `curve` and `pareto`",
            ),
            ("facet", self.facet.is_some(), "`pareto`"),
            (
                "lower_is_better",
                !self.lower_is_better.is_empty(),
                "`pareto`",
            ),
            ("log_x", self.log_x, "`line` and `curve`"),
            ("log_y", self.log_y, "`line` and `curve`"),
            (
                "layers",
                self.layers.is_some(),
                "`flow`, `grid` and `metric`",
            ),
        ];
        let name = self.kind.name();
        match set
            .iter()
            .find(|(_, is_set, kinds)| *is_set && !kinds.contains(&format!("`{name}`")))
        {
            Some((param, _, kinds)) => Err(OpError::msg(format!(
                "`{param}` applies to {kinds}, not `kind: {name}`"
            ))),
            None => Ok(()),
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
        p.check_applicable()?;
        let entries = &chosen.entries;
        let note = chosen.note();
        let result = match p.kind {
            Kind::Line => draw::save(&line_figure(entries, &p, &note)?, out, "plot"),
            Kind::Curve => draw::save(&curve_figure(entries, &p, &note)?, out, "plot"),
            Kind::Pareto => draw::save(&pareto_figure(entries, &p, &note)?, out, "plot"),
            kind => draw::save(&panel_figure(ctx, entries, &p, kind, &note)?, out, "plot"),
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
        let mut parts = Vec::new();
        if self.pruned > 0 {
            parts.push(format!("{} pruned early", self.pruned));
        }
        if !self.left_out.is_empty() {
            parts.push(format!(
                "left out: {}",
                ablate_report::gap_text(&self.left_out)
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
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

/// An error when no input has metric `name` (logged by step, for `stepped`), with the nearest
/// name they have and what they have (#21).
fn none_has(entries: &[(&JobInput, Manifest)], name: &str, stepped: bool) -> Result<(), OpError> {
    let names: Vec<(&str, Vec<&str>)> = entries
        .iter()
        .map(|(input, m)| {
            let mut names: Vec<&str> = m
                .metrics
                .iter()
                .filter(|x| !stepped || x.step.is_some())
                .map(|x| x.name.as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            (input.id.as_str(), names)
        })
        .collect();
    // Logged as a final value only: each input's own error says so.
    if stepped
        && entries
            .iter()
            .any(|(_, m)| m.metrics.iter().any(|x| x.name == name))
    {
        return Ok(());
    }
    let what = if stepped {
        "the stepped metric"
    } else {
        "the metric"
    };
    match crate::support::name_problem(name, &names, false, what) {
        Some(problem) => Err(OpError::msg(problem)),
        None => Ok(()),
    }
}

fn line_figure(
    entries: &[(&JobInput, Manifest)],
    p: &PlotParams,
    note: &str,
) -> Result<LineFigure, OpError> {
    let (Some(x), Some(y)) = (&p.x, &p.y) else {
        return Err(OpError::msg(
            "`kind: line` needs `x` (a label) and `y` (a metric)",
        ));
    };
    let group = p.group_keys();
    none_has(entries, y, false)?;
    let obs = final_metrics(entries);
    let (x_axis, series) = data::aggregate(&obs, x, y, &group).map_err(OpError::msg)?;
    let all = || series.iter().flat_map(|s| &s.points);
    if p.log_x {
        if let data::XAxis::Categorical(_) = x_axis {
            return Err(OpError::msg(format!(
                "`log_x` needs numeric values of label `{x}`"
            )));
        }
        if all().any(|pt| pt.x <= 0.0) {
            return Err(OpError::msg(format!(
                "`log_x` needs positive values of label `{x}`"
            )));
        }
    }
    if p.log_y && all().any(|pt| pt.mean <= 0.0) {
        return Err(OpError::msg(format!(
            "`log_y` needs positive values of metric `{y}`"
        )));
    }
    let title = p.title.clone().unwrap_or_else(|| match group.is_empty() {
        false => format!("{y} vs {x} by {}", group.join(", ")),
        true => format!("{y} vs {x}"),
    });
    Ok(LineFigure {
        title: format!("{title}{note}"),
        legend_title: (!group.is_empty()).then(|| group.join(", ")),
        x_name: x.clone(),
        y_name: y.clone(),
        x_axis,
        series,
        log_x: p.log_x,
        log_y: p.log_y,
        spread: Spread::Bars,
        size: LINE_SIZE,
    })
}

/// Metric `y` against the step (#18): every input must log it with a step, so a selection
/// that mixes in another stage's inputs fails instead of quietly plotting fewer lines.
fn curve_figure(
    entries: &[(&JobInput, Manifest)],
    p: &PlotParams,
    note: &str,
) -> Result<LineFigure, OpError> {
    let Some(y) = &p.y else {
        return Err(OpError::msg(
            "`kind: curve` needs `y` (a metric logged by step)",
        ));
    };
    let group = p.group_keys();
    none_has(entries, y, true)?;
    let stepped = entries
        .iter()
        .map(|(input, manifest)| {
            Ok(Stepped {
                id: input.id.clone(),
                labels: input.labels.clone(),
                values: data::stepped_values(&input.id, &metric_points(manifest), y)
                    .map_err(OpError::msg)?,
            })
        })
        .collect::<Result<Vec<_>, OpError>>()?;
    let mut series = data::curves(&stepped, &group).map_err(OpError::msg)?;
    // A line whose runs early stopping all pruned says so in the legend.
    let is_pruned = |(_, m): &&(&JobInput, Manifest)| {
        matches!(m.status, ablate_cache::EntryStatus::Pruned { .. })
    };
    if entries.iter().any(|e| is_pruned(&e)) && !group.is_empty() {
        let names = |pruned: bool| -> Result<Vec<Option<String>>, OpError> {
            let some: Vec<Stepped> = entries
                .iter()
                .zip(&stepped)
                .filter(|(e, _)| is_pruned(e) == pruned)
                .map(|(_, s)| s.clone())
                .collect();
            if some.is_empty() {
                return Ok(Vec::new());
            }
            Ok(data::curves(&some, &group)
                .map_err(OpError::msg)?
                .into_iter()
                .map(|s| s.name)
                .collect())
        };
        let (cut, whole) = (names(true)?, names(false)?);
        for s in &mut series {
            if cut.contains(&s.name) && !whole.contains(&s.name) {
                s.name = s.name.take().map(|n| format!("{n} (pruned)"));
            }
        }
    }
    let all = || series.iter().flat_map(|s| &s.points);
    if p.log_x && all().any(|pt| pt.x <= 0.0) {
        return Err(OpError::msg(format!(
            "`log_x` needs positive steps, but `{y}` is logged at step 0"
        )));
    }
    if p.log_y && all().any(|pt| pt.mean <= 0.0) {
        return Err(OpError::msg(format!(
            "`log_y` needs positive values of metric `{y}`"
        )));
    }
    let title = p.title.clone().unwrap_or_else(|| match group.is_empty() {
        false => format!("{y} vs step by {}", group.join(", ")),
        true => format!("{y} vs step"),
    });
    Ok(LineFigure {
        title: format!("{title}{note}"),
        legend_title: (!group.is_empty()).then(|| group.join(", ")),
        x_name: "step".into(),
        y_name: y.clone(),
        x_axis: data::XAxis::Numeric,
        series,
        log_x: p.log_x,
        log_y: p.log_y,
        spread: Spread::Band,
        size: LINE_SIZE,
    })
}

/// The labels and final metrics of each input.
fn final_metrics(entries: &[(&JobInput, Manifest)]) -> Vec<FinalMetrics> {
    entries
        .iter()
        .map(|(input, manifest)| FinalMetrics {
            id: input.id.clone(),
            labels: input.labels.clone(),
            metrics: manifest
                .final_metrics()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        })
        .collect()
}

fn pareto_figure(
    entries: &[(&JobInput, Manifest)],
    p: &PlotParams,
    note: &str,
) -> Result<ParetoFigure, OpError> {
    let group = p.group_keys();
    let (Some(x), Some(y), false) = (&p.x, &p.y, group.is_empty()) else {
        return Err(OpError::msg(
            "`kind: pareto` needs `x` and `y` (metrics) and `group` (a label or a list of labels)",
        ));
    };
    if x == y {
        return Err(OpError::msg(format!(
            "`x` and `y` are both `{x}`: a Pareto plot trades one metric against another"
        )));
    }
    if let Some(m) = p.lower_is_better.iter().find(|m| *m != x && *m != y) {
        return Err(OpError::msg(format!(
            "`lower_is_better` lists `{m}`, which is neither `x` (`{x}`) nor `y` (`{y}`)"
        )));
    }
    if let Some(f) = p.facet.as_ref().filter(|f| group.contains(f)) {
        return Err(OpError::msg(format!(
            "`{f}` is both the `facet` and in `group`"
        )));
    }
    let lower = [x, y].map(|m| p.lower_is_better.contains(m));
    none_has(entries, x, false)?;
    none_has(entries, y, false)?;
    let obs = final_metrics(entries);
    let pareto =
        data::pareto(&obs, x, y, &group, p.facet.as_deref(), lower).map_err(OpError::msg)?;
    if pareto.facets.len() > MAX_ROWS {
        return Err(OpError::msg(format!(
            "`facet` has {} values, but at most {MAX_ROWS} panels fit; narrow the inputs with \
             `select`",
            pareto.facets.len()
        )));
    }
    // Which way is better, on both axes: the arrow points along the axis (the y axis's name
    // is turned to read upwards, so → points up there too).
    let axis_name = |m: &str, lower: bool| {
        if lower {
            format!("{m} (← lower is better)")
        } else {
            format!("{m} (higher is better →)")
        }
    };
    let title = p
        .title
        .clone()
        .unwrap_or_else(|| format!("{y} vs {x} by {}, Pareto frontier", group.join(", ")));
    Ok(ParetoFigure {
        title: format!("{title}{note}"),
        x_name: axis_name(x, lower[0]),
        y_name: axis_name(y, lower[1]),
        pareto,
        panel_size: PARETO_PANEL,
    })
}

#[cfg(test)]
mod tests;

/// An entry's metrics as the figures read them: (name, step, value).
fn metric_points(manifest: &Manifest) -> Vec<(&str, Option<u64>, f64)> {
    manifest
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.step, m.value))
        .collect()
}
