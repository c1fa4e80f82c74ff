//! The panel figures (`kind: flow`, `grid` and `metric`): each input's `eval.metric` tables
//! read back and checked, the layers chosen, and a row of panels per input (at most
//! `MAX_ROWS`), with the errors that name the input and the file.

use super::*;

pub(super) fn panel_figure(
    ctx: &OpContext<'_>,
    entries: &[(&JobInput, Manifest)],
    p: &PlotParams,
    kind: Kind,
    note: &str,
) -> Result<PanelFigure, OpError> {
    let inputs: Vec<&JobInput> = entries.iter().map(|(input, _)| *input).collect();
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
    for input in &inputs {
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
    title.push_str(note);
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
pub(super) fn metric_panels(
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
