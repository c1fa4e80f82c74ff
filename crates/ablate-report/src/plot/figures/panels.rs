//! The panel figures (`kind: flow`, `grid` and `metric`): each input's `eval.metric` table
//! checked, the layers chosen, and a row of panels per input (at most [`MAX_ROWS`]), with the
//! errors that name the input and the file. The caller reads the tables, one input at a time,
//! so the first input that fails names itself whatever the reason.

use std::collections::BTreeMap;

use ablate_results::Table;
use ablate_spec::Value;

use super::super::data::{self, Layers, MetricPoint};
use super::super::draw::{Panel, PanelContent, PanelFigure, PanelRow};
use super::{Input, Kind, MAX_ROWS, PANEL_SIZE, Spec};

/// The panels of `spec.kind` (`flow`, `grid` or `metric`), a row per input. `read(i, file)`
/// reads table `file` (`layers.parquet` or `metric.parquet`) of `inputs[i]`, failing as the
/// caller says; `fail` turns this figure's own messages into the caller's error.
pub fn panel_figure<E>(
    inputs: &[Input],
    spec: &Spec,
    note: &str,
    mut read: impl FnMut(usize, &str) -> Result<Table, E>,
    fail: impl Fn(String) -> E,
) -> Result<PanelFigure, E> {
    if inputs.len() > MAX_ROWS {
        return Err(fail(format!(
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
    for (n, input) in inputs.iter().enumerate() {
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
        let file_error =
            |file: &str, e: String| fail(format!("`{file}` of input `{}` {e}", input.id));
        let layers = spec.layers.as_deref();
        let panels = match spec.kind {
            Kind::Metric => {
                let t = read(n, "metric.parquet")?;
                let points =
                    data::metric_from_table(&t).map_err(|e| file_error("metric.parquet", e))?;
                metric_panels(&input.id, &points, layers).map_err(&fail)?
            }
            kind => {
                let t = read(n, "layers.parquet")?;
                let table =
                    data::layers_from_table(&t).map_err(|e| file_error("layers.parquet", e))?;
                max_dim = max_dim.max(table.dim);
                layer_panels(&input.id, &table, layers, kind).map_err(&fail)?
            }
        };
        rows.push(PanelRow {
            title: row_title,
            panels,
        });
    }
    let mut title = spec.title.clone().unwrap_or_else(|| {
        match spec.kind {
            Kind::Flow => "data at each layer",
            Kind::Grid => "deformed grid at each layer",
            _ => "metric g",
        }
        .to_owned()
    });
    match spec.kind {
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

/// `flow` and `grid` panels of input `id`: one per layer.
fn layer_panels(
    id: &str,
    layers: &Layers,
    requested: Option<&[i64]>,
    kind: Kind,
) -> Result<Vec<Panel>, String> {
    let present = layers.present();
    let chosen = match requested {
        Some(r) => {
            if let Some(missing) = r.iter().find(|l| !present.contains(l)) {
                return Err(format!(
                    "`layers.parquet` of input `{id}` has no layer {missing} (it has {})",
                    range_text(&present)
                ));
            }
            r.to_vec()
        }
        None => data::default_layers(&present),
    };
    if chosen.is_empty() {
        return Err(format!("`layers.parquet` of input `{id}` holds no points"));
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

/// `metric` panels of input `id`: one per requested layer present in `metric.parquet`.
pub fn metric_panels(
    id: &str,
    points: &[MetricPoint],
    requested: Option<&[i64]>,
) -> Result<Vec<Panel>, String> {
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
        return Err(format!(
            "`metric.parquet` of input `{id}` has none of layers {} (it has {})",
            range_text(requested),
            range_text(&present)
        ));
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
