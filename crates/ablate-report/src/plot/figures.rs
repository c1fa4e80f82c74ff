//! The figures of `report.plot` built from plain inputs: a [`Spec`] (the op's params, `select`
//! already applied) and each input's id, labels and metrics ([`Input`]) give a [`LineFigure`],
//! a [`ParetoFigure`] or (in `panels`, from the `eval.metric` tables the op reads) a
//! [`PanelFigure`], or the message the op fails with. What is checked here (which settings a
//! kind takes, missing metrics, log axes, how many panels fit) is every figure's, whoever asks.

mod panels;

use ablate_spec::Value;
use serde::Deserialize;

use super::data::{self, FinalMetrics, Stepped};
use super::draw::{LineFigure, ParetoFigure, Spread};

pub use panels::{metric_panels, panel_figure};

/// More rows than this make unreadable panels: the user narrows with `select`.
pub const MAX_ROWS: usize = 6;
pub const LINE_SIZE: (u32, u32) = (720, 480);
pub const PANEL_SIZE: (u32, u32) = (240, 220);
pub const PARETO_PANEL: (u32, u32) = (480, 440);

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Line,
    Curve,
    Pareto,
    Flow,
    Grid,
    Metric,
}

impl Kind {
    pub fn name(self) -> &'static str {
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

/// The settings of one figure, as `report.plot`'s params give them. `None` (or empty, or
/// false) is "not set": [`Spec::check_applicable`] refuses a setting its kind does not use.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    /// The figure's title; `None` derives one.
    pub title: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    /// The `group` labels; `Some` even when the list is empty (it was set).
    pub group: Option<Vec<String>>,
    pub facet: Option<String>,
    pub lower_is_better: Vec<String>,
    pub log_x: bool,
    pub log_y: bool,
    pub layers: Option<Vec<i64>>,
}

impl Spec {
    /// `group` as a list of label keys (empty without one).
    fn group_keys(&self) -> Vec<String> {
        self.group.clone().unwrap_or_default()
    }

    /// Refuses the settings `kind` does not use, naming the kinds that do.
    pub fn check_applicable(&self) -> Result<(), String> {
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
            Some((param, _, kinds)) => {
                Err(format!("`{param}` applies to {kinds}, not `kind: {name}`"))
            }
            None => Ok(()),
        }
    }
}

/// One input of a figure: its id, its labels in the plan's order, every metric it logged as
/// (name, step, value) in the order logged (`None` for a final value), and whether early
/// stopping pruned it (only curves draw those).
#[derive(Debug, Clone)]
pub struct Input {
    pub id: String,
    pub labels: Vec<(String, Value)>,
    pub metrics: Vec<(String, Option<u64>, f64)>,
    pub pruned: bool,
}

impl Input {
    /// Its final (unstepped) metrics by name; a name logged twice keeps its last value.
    fn final_metrics(&self) -> FinalMetrics {
        FinalMetrics {
            id: self.id.clone(),
            labels: self.labels.clone(),
            metrics: self
                .metrics
                .iter()
                .filter(|(_, step, _)| step.is_none())
                .map(|(name, _, value)| (name.clone(), *value))
                .collect(),
        }
    }

    /// The metrics as [`data::stepped_values`] reads them.
    fn points(&self) -> Vec<(&str, Option<u64>, f64)> {
        self.metrics
            .iter()
            .map(|(name, step, value)| (name.as_str(), *step, *value))
            .collect()
    }
}

/// What the title says was left out, and how many curves end early: ` (left out: 1 failed, 2
/// diverged)`, ` (16 pruned early)`; empty when neither.
pub fn title_note(pruned: usize, left_out: &[&str]) -> String {
    let mut parts = Vec::new();
    if pruned > 0 {
        parts.push(format!("{pruned} pruned early"));
    }
    if !left_out.is_empty() {
        parts.push(format!("left out: {}", crate::gap_text(left_out)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// An error when no input has metric `name` (logged by step, for `stepped`), with the nearest
/// name they have and what they have (#21).
fn none_has(inputs: &[Input], name: &str, stepped: bool) -> Result<(), String> {
    let names: Vec<(&str, Vec<&str>)> = inputs
        .iter()
        .map(|input| {
            let mut names: Vec<&str> = input
                .metrics
                .iter()
                .filter(|(_, step, _)| !stepped || step.is_some())
                .map(|(name, _, _)| name.as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            (input.id.as_str(), names)
        })
        .collect();
    // Logged as a final value only: each input's own error says so.
    if stepped
        && inputs
            .iter()
            .any(|input| input.metrics.iter().any(|(n, _, _)| n == name))
    {
        return Ok(());
    }
    let what = if stepped {
        "the stepped metric"
    } else {
        "the metric"
    };
    match crate::name_problem(name, &names, false, what) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// `kind: line`: final metric `y` against label `x`, a line per value of `group`, each point
/// the mean ± one std over the other labels; `note` ends the title.
pub fn line_figure(inputs: &[Input], spec: &Spec, note: &str) -> Result<LineFigure, String> {
    let (Some(x), Some(y)) = (&spec.x, &spec.y) else {
        return Err("`kind: line` needs `x` (a label) and `y` (a metric)".into());
    };
    let group = spec.group_keys();
    none_has(inputs, y, false)?;
    let obs: Vec<FinalMetrics> = inputs.iter().map(Input::final_metrics).collect();
    let (x_axis, series) = data::aggregate(&obs, x, y, &group)?;
    let all = || series.iter().flat_map(|s| &s.points);
    if spec.log_x {
        if let data::XAxis::Categorical(_) = x_axis {
            return Err(format!("`log_x` needs numeric values of label `{x}`"));
        }
        if all().any(|pt| pt.x <= 0.0) {
            return Err(format!("`log_x` needs positive values of label `{x}`"));
        }
    }
    line_of(spec, &group, (x, x_axis), y, series, Spread::Bars, note)
}

/// `kind: curve`: metric `y` against the step (#18). Every input must log it with a step, so
/// a selection that mixes in another stage's inputs fails instead of quietly plotting fewer
/// lines. A line whose inputs early stopping all pruned is named so in the legend.
pub fn curve_figure(inputs: &[Input], spec: &Spec, note: &str) -> Result<LineFigure, String> {
    let Some(y) = &spec.y else {
        return Err("`kind: curve` needs `y` (a metric logged by step)".into());
    };
    let group = spec.group_keys();
    none_has(inputs, y, true)?;
    let stepped = inputs
        .iter()
        .map(|input| {
            Ok(Stepped {
                id: input.id.clone(),
                labels: input.labels.clone(),
                values: data::stepped_values(&input.id, &input.points(), y)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut series = data::curves(&stepped, &group)?;
    if inputs.iter().any(|i| i.pruned) && !group.is_empty() {
        let names = |pruned: bool| -> Result<Vec<Option<String>>, String> {
            let some: Vec<Stepped> = inputs
                .iter()
                .zip(&stepped)
                .filter(|(i, _)| i.pruned == pruned)
                .map(|(_, s)| s.clone())
                .collect();
            if some.is_empty() {
                return Ok(Vec::new());
            }
            Ok(data::curves(&some, &group)?
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
    if spec.log_x && all().any(|pt| pt.x <= 0.0) {
        return Err(format!(
            "`log_x` needs positive steps, but `{y}` is logged at step 0"
        ));
    }
    let step = "step".to_owned();
    line_of(
        spec,
        &group,
        (&step, data::XAxis::Numeric),
        y,
        series,
        Spread::Band,
        note,
    )
}

/// A line figure of `series` (metric `y` against `x`), checked for `log_y`, titled `y vs x
/// [by group]` unless the spec names a title: what `line` and `curve` share.
fn line_of(
    spec: &Spec,
    group: &[String],
    (x, x_axis): (&String, data::XAxis),
    y: &String,
    series: Vec<data::Series>,
    spread: Spread,
    note: &str,
) -> Result<LineFigure, String> {
    if spec.log_y
        && series
            .iter()
            .flat_map(|s| &s.points)
            .any(|pt| pt.mean <= 0.0)
    {
        return Err(format!("`log_y` needs positive values of metric `{y}`"));
    }
    let title = spec
        .title
        .clone()
        .unwrap_or_else(|| match group.is_empty() {
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
        log_x: spec.log_x,
        log_y: spec.log_y,
        spread,
        size: LINE_SIZE,
    })
}

/// `kind: pareto`: final metric `y` against final metric `x`, a point per value of the
/// `group` labels, a panel per value of `facet` (at most [`MAX_ROWS`]), and each panel's
/// frontier taken the way `lower_is_better` says.
pub fn pareto_figure(inputs: &[Input], spec: &Spec, note: &str) -> Result<ParetoFigure, String> {
    let group = spec.group_keys();
    let (Some(x), Some(y), false) = (&spec.x, &spec.y, group.is_empty()) else {
        return Err(
            "`kind: pareto` needs `x` and `y` (metrics) and `group` (a label or a list of labels)"
                .into(),
        );
    };
    if x == y {
        return Err(format!(
            "`x` and `y` are both `{x}`: a Pareto plot trades one metric against another"
        ));
    }
    if let Some(m) = spec.lower_is_better.iter().find(|m| *m != x && *m != y) {
        return Err(format!(
            "`lower_is_better` lists `{m}`, which is neither `x` (`{x}`) nor `y` (`{y}`)"
        ));
    }
    if let Some(f) = spec.facet.as_ref().filter(|f| group.contains(f)) {
        return Err(format!("`{f}` is both the `facet` and in `group`"));
    }
    let lower = [x, y].map(|m| spec.lower_is_better.contains(m));
    none_has(inputs, x, false)?;
    none_has(inputs, y, false)?;
    let obs: Vec<FinalMetrics> = inputs.iter().map(Input::final_metrics).collect();
    let pareto = data::pareto(&obs, x, y, &group, spec.facet.as_deref(), lower)?;
    if pareto.facets.len() > MAX_ROWS {
        return Err(format!(
            "`facet` has {} values, but at most {MAX_ROWS} panels fit; narrow the inputs with \
             `select`",
            pareto.facets.len()
        ));
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
    let title = spec
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
