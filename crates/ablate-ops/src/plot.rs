//! `report.plot`: gather upstream instances into one figure, written as `plot.svg` and
//! `plot.png`. `line` plots a final metric against a label (mean ± std over the other labels);
//! `curve` plots a metric logged by step against the step, the same way; `pareto` plots two
//! final metrics against each other, a point per group with its Pareto frontier; `flow`, `grid`
//! and `metric` draw the per-layer tables of `eval.metric` instances, one row of panels per
//! instance and one column per layer.

mod data;
mod draw;

use std::collections::BTreeMap;

use ablate_run::{JobInput, OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Value};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::report::OneOrMany;
use data::{Layers, MetricPoint, Observation, Stepped};
use draw::{LineFigure, Panel, PanelContent, PanelFigure, PanelRow, ParetoFigure, Spread};

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

    /// `group` as at most one label: a line per value.
    fn one_group(&self) -> Result<Option<String>, OpError> {
        match self.group_keys().as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(OpError::msg(format!(
                "`kind: {}` takes one `group` label (a line per value)",
                self.kind.name()
            ))),
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
                // show the labels that differ. 5: `pareto`.
                version: 5,
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
                          class, the deformed grid, or the metric's ellipses.",
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
                        "line, curve: a label with one line per value, and a legend; pareto: the label (or \
                         labels) with one point per value (required for `pareto`)",
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
        let inputs = select_inputs(&ctx.job.inputs, p.select.as_ref())?;
        let out = ctx.out_dir();
        p.check_applicable()?;
        let result = match p.kind {
            Kind::Line => draw::save(&line_figure(ctx, &inputs, &p)?, out, "plot"),
            Kind::Curve => draw::save(&curve_figure(ctx, &inputs, &p)?, out, "plot"),
            Kind::Pareto => draw::save(&pareto_figure(ctx, &inputs, &p)?, out, "plot"),
            kind => draw::save(&panel_figure(ctx, &inputs, &p, kind)?, out, "plot"),
        };
        result.map_err(OpError::msg)?;
        Ok(OpOutput {
            metrics: Vec::new(),
            publish: vec!["plot.svg".into(), "plot.png".into()],
            ..OpOutput::default()
        })
    }
}

/// The inputs whose labels match `select` (all of them without it).
fn select_inputs<'a>(
    inputs: &'a [JobInput],
    select: Option<&Value>,
) -> Result<Vec<&'a JobInput>, OpError> {
    let select = data::parse_select(select).map_err(OpError::msg)?;
    let chosen: Vec<&JobInput> = inputs
        .iter()
        .filter(|i| data::selected(&i.labels, &select))
        .collect();
    if chosen.is_empty() {
        let mut keys: Vec<&str> = inputs
            .iter()
            .flat_map(|i| i.labels.iter().map(|(k, _)| k.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        return Err(OpError::msg(format!(
            "`select` matches none of the {} inputs (their labels: {})",
            inputs.len(),
            data::list(&keys)
        )));
    }
    Ok(chosen)
}

fn line_figure(
    ctx: &OpContext<'_>,
    inputs: &[&JobInput],
    p: &PlotParams,
) -> Result<LineFigure, OpError> {
    let (Some(x), Some(y)) = (&p.x, &p.y) else {
        return Err(OpError::msg(
            "`kind: line` needs `x` (a label) and `y` (a metric)",
        ));
    };
    let group = p.one_group()?;
    let obs = observations(ctx, inputs)?;
    let (x_axis, series) = data::aggregate(&obs, x, y, group.as_deref()).map_err(OpError::msg)?;
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
    let title = p.title.clone().unwrap_or_else(|| match &group {
        Some(g) => format!("{y} vs {x} by {g}"),
        None => format!("{y} vs {x}"),
    });
    Ok(LineFigure {
        title,
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
    ctx: &OpContext<'_>,
    inputs: &[&JobInput],
    p: &PlotParams,
) -> Result<LineFigure, OpError> {
    let Some(y) = &p.y else {
        return Err(OpError::msg(
            "`kind: curve` needs `y` (a metric logged by step)",
        ));
    };
    let group = p.one_group()?;
    let stepped = inputs
        .iter()
        .map(|input| {
            let manifest = ctx.manifest(&input.key)?;
            Ok(Stepped {
                id: input.id.clone(),
                labels: input.labels.clone(),
                values: data::stepped_values(&input.id, &manifest.metrics, y)
                    .map_err(OpError::msg)?,
            })
        })
        .collect::<Result<Vec<_>, OpError>>()?;
    let series = data::curves(&stepped, group.as_deref()).map_err(OpError::msg)?;
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
    let title = p.title.clone().unwrap_or_else(|| match &group {
        Some(g) => format!("{y} vs step by {g}"),
        None => format!("{y} vs step"),
    });
    Ok(LineFigure {
        title,
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
fn observations(ctx: &OpContext<'_>, inputs: &[&JobInput]) -> Result<Vec<Observation>, OpError> {
    inputs
        .iter()
        .map(|input| {
            Ok(Observation {
                id: input.id.clone(),
                labels: input.labels.clone(),
                metrics: crate::report::final_metrics(ctx, input)?,
            })
        })
        .collect()
}

fn pareto_figure(
    ctx: &OpContext<'_>,
    inputs: &[&JobInput],
    p: &PlotParams,
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
    let obs = observations(ctx, inputs)?;
    let pareto =
        data::pareto(&obs, x, y, &group, p.facet.as_deref(), lower).map_err(OpError::msg)?;
    if pareto.facets.len() > MAX_ROWS {
        return Err(OpError::msg(format!(
            "`facet` has {} values, but at most {MAX_ROWS} panels fit; narrow the inputs with \
             `select`",
            pareto.facets.len()
        )));
    }
    let axis_name = |m: &str, lower: bool| {
        if lower {
            format!("{m} (lower is better)")
        } else {
            m.to_owned()
        }
    };
    let title = p
        .title
        .clone()
        .unwrap_or_else(|| format!("{y} vs {x} by {}, Pareto frontier", group.join(", ")));
    Ok(ParetoFigure {
        title,
        x_name: axis_name(x, lower[0]),
        y_name: axis_name(y, lower[1]),
        pareto,
        panel_size: PARETO_PANEL,
    })
}

fn panel_figure(
    ctx: &OpContext<'_>,
    inputs: &[&JobInput],
    p: &PlotParams,
    kind: Kind,
) -> Result<PanelFigure, OpError> {
    if inputs.len() > MAX_ROWS {
        return Err(OpError::msg(format!(
            "{} inputs would make {} rows of panels, but at most {MAX_ROWS} fit; narrow them \
             with `select`, e.g. `select: {{ seed: 0 }}`",
            inputs.len(),
            inputs.len()
        )));
    }
    let mut rows = Vec::with_capacity(inputs.len());
    let mut max_dim = 2;
    // Each row is titled by the labels that tell it from the other rows (all of them when
    // there is one row): `form=c1`, not the seed and step count every row shares.
    let differing = |key: &str, value: &Value| {
        inputs.len() == 1
            || inputs
                .iter()
                .any(|i| i.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v) != Some(value))
    };
    for input in inputs {
        let shown: Vec<(String, Value)> = input
            .labels
            .iter()
            .filter(|(k, v)| differing(k, v))
            .cloned()
            .collect();
        let row_title = if shown.is_empty() {
            input.id.clone()
        } else {
            data::labels_text(&shown)
        };
        let panels = match kind {
            Kind::Metric => {
                let t = read_input_table(ctx, input, "metric.parquet")?;
                let points = data::metric_from_table(&t)
                    .map_err(|e| file_error(input, "metric.parquet", e))?;
                metric_panels(input, &points, p.layers.as_deref())?
            }
            _ => {
                let t = read_input_table(ctx, input, "layers.parquet")?;
                let layers = data::layers_from_table(&t)
                    .map_err(|e| file_error(input, "layers.parquet", e))?;
                max_dim = max_dim.max(layers.dim);
                layer_panels(input, &layers, p.layers.as_deref(), kind)?
            }
        };
        rows.push(PanelRow {
            title: row_title,
            panels,
        });
    }
    let mut title = p.title.clone().unwrap_or_else(|| {
        match kind {
            Kind::Flow => "data at each layer",
            Kind::Grid => "deformed grid at each layer",
            _ => "metric g",
        }
        .to_owned()
    });
    match kind {
        Kind::Flow if max_dim > 2 => {
            title.push_str(&format!(" (x0, x1 of {max_dim} dims)"));
        }
        Kind::Metric => title.push_str(" (ellipses uᵀgu = 1, scaled)"),
        _ => {}
    }
    Ok(PanelFigure {
        title,
        rows,
        panel_size: PANEL_SIZE,
    })
}

fn file_error(input: &JobInput, file: &str, e: String) -> OpError {
    OpError::msg(format!("`{file}` of input `{}` {e}", input.id))
}

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

/// `flow` and `grid` panels of one input: one per layer.
fn layer_panels(
    input: &JobInput,
    layers: &Layers,
    requested: Option<&[i64]>,
    kind: Kind,
) -> Result<Vec<Panel>, OpError> {
    let present = layers.present();
    let chosen = match requested {
        Some(r) => {
            if let Some(missing) = r.iter().find(|l| !present.contains(l)) {
                return Err(OpError::msg(format!(
                    "`layers.parquet` of input `{}` has no layer {missing} (it has {})",
                    input.id,
                    range_text(&present)
                )));
            }
            r.to_vec()
        }
        None => data::default_layers(&present),
    };
    if chosen.is_empty() {
        return Err(OpError::msg(format!(
            "`layers.parquet` of input `{}` holds no points",
            input.id
        )));
    }
    Ok(chosen
        .into_iter()
        .map(|layer| {
            let at = || layers.points.iter().filter(move |pt| pt.layer == layer);
            let content = match kind {
                Kind::Flow => PanelContent::Flow {
                    points: at()
                        .filter(|pt| !pt.grid)
                        .map(|pt| (pt.x, pt.label))
                        .collect(),
                },
                _ => {
                    let grid: Vec<(i64, i64, [f64; 2])> = at()
                        .filter(|pt| pt.grid)
                        .filter_map(|pt| Some((pt.gi?, pt.gj?, pt.x)))
                        .collect();
                    PanelContent::Grid {
                        lines: data::grid_lines(&grid),
                        data: at().filter(|pt| !pt.grid).map(|pt| pt.x).collect(),
                    }
                }
            };
            Panel {
                title: format!("layer {layer}"),
                content,
            }
        })
        .collect())
}

/// `metric` panels of one input: one per requested layer present in `metric.parquet`.
fn metric_panels(
    input: &JobInput,
    points: &[MetricPoint],
    requested: Option<&[i64]>,
) -> Result<Vec<Panel>, OpError> {
    let mut by_layer: BTreeMap<i64, Vec<&MetricPoint>> = BTreeMap::new();
    for pt in points {
        by_layer.entry(pt.layer).or_default().push(pt);
    }
    let present: Vec<i64> = by_layer.keys().copied().collect();
    let requested = requested.unwrap_or(&[0]);
    let chosen: Vec<i64> = requested
        .iter()
        .copied()
        .filter(|l| by_layer.contains_key(l))
        .collect();
    if chosen.is_empty() {
        return Err(OpError::msg(format!(
            "`metric.parquet` of input `{}` has none of layers {} (it has {})",
            input.id,
            range_text(requested),
            range_text(&present)
        )));
    }
    Ok(chosen
        .into_iter()
        .map(|layer| {
            let pts = &by_layer[&layer];
            let (ellipses, degenerate) = data::metric_ellipses(pts);
            let grid: Vec<(i64, i64, [f64; 2])> = pts.iter().map(|p| (p.gi, p.gj, p.x)).collect();
            Panel {
                title: format!("layer {layer}"),
                content: PanelContent::Metric {
                    ellipses,
                    degenerate,
                    grid: data::grid_lines(&grid),
                },
            }
        })
        .collect())
}

/// `0, 1, 2` or `none`.
fn range_text(layers: &[i64]) -> String {
    if layers.is_empty() {
        return "none".into();
    }
    layers
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
