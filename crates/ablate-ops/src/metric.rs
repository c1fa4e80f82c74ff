//! `eval.metric`: the Riemannian geometry of a trained flow (Hauser & Ray 2017) — the output
//! space's Euclidean metric pulled back through every layer — and the coordinates of the data
//! and of a grid at every layer, for the pictures of `report.plot`.

use ablate_cache::Metric;
use ablate_models::{Dataset, Flow, metric_stats};
use ablate_results::{Column, ColumnData, Table};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::support::{artifact, model_error, probe_points, read_dataset};

pub(crate) struct EvalMetric {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricParams {
    grid: usize,
    points: usize,
}

impl EvalMetric {
    pub(crate) fn new() -> Self {
        EvalMetric {
            schema: OpSchema {
                name: "eval.metric",
                // 2: `metric_conv` relative to the larger of the two norms.
                version: 2,
                summary: "The pull-back of the output space's Euclidean metric through every layer of the flow \
                          trained by its input (Hauser & Ray 2017), g_N = I, g_l = J_lᵀ g_{l+1} J_l, probed on a \
                          `grid`² grid over 2-D test data (at the test points otherwise). Logs per layer (as steps) \
                          the mean/max of det g, of its eigenvalues and of its condition number (over the points where \
                          g is not singular; `singular_frac` counts the others); final metrics `metric_conv` (‖g_0 − g_0'‖ / max(‖g_0‖, ‖g_0'‖), g_0' of the network refined to 2N layers), \
                          `step_norm` (mean ‖x_{l+1} − x_l‖), and the input-space metric's `det_g_in_mean`, \
                          `cond_g_in_mean`, `cond_g_in_max`, `singular_g_in_frac`. Writes `layers.parquet` (every layer's coordinates of \
                          `points` test points and of the grid) and `metric.parquet` (the 2×2 metric at each grid \
                          point) for `report.plot`.",
                params: vec![
                    ParamSpec::with_default(
                        "grid",
                        ParamType::Int { min: 2, max: 200 },
                        json!(21),
                        "grid points per side (2-D data)",
                    ),
                    ParamSpec::with_default(
                        "points",
                        ParamType::positive_int(),
                        json!(400),
                        "test points traced through the layers (evenly strided over the test set)",
                    ),
                ],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                on_device: false,
                needs: (1, Some(1)),
            },
        }
    }
}

/// Every `ceil(n / k)`-th row of `data`, at most `k` rows: a subset that keeps the classes'
/// proportions whatever order the generator wrote them in.
fn strided(data: &Dataset, k: usize) -> (Vec<f32>, Vec<u32>) {
    let n = data.len();
    let stride = n.div_ceil(k.max(1)).max(1);
    let rows: Vec<usize> = (0..n).step_by(stride).collect();
    let x = rows
        .iter()
        .flat_map(|&r| data.x[r * data.dim..(r + 1) * data.dim].iter().copied())
        .collect();
    let y = rows.iter().map(|&r| data.y[r]).collect();
    (x, y)
}

impl Op for EvalMetric {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: MetricParams = typed("eval.metric", ctx.job.params())?;
        let flow = Flow::load(&artifact(ctx, "model.safetensors")?).map_err(model_error)?;
        let test = read_dataset(&artifact(ctx, "test.parquet")?, Some(flow.config().classes))?;
        let cfg = flow.config();
        let (dim, in_dim, layers) = (cfg.dim, cfg.in_dim, cfg.steps + 1);
        let is_plane = in_dim == 2;
        let probe = probe_points(&test, p.grid);
        let np = probe.len() / in_dim;

        let mut metrics = Vec::new();
        let g = flow.pullback_metrics(&probe).map_err(model_error)?;
        let dd = dim * dim;
        for l in 0..layers {
            let s = metric_stats(&g[l * np * dd..(l + 1) * np * dd], dim);
            let step = l as u64;
            for (name, v) in [
                ("det_g_mean", s.det_mean),
                ("det_g_max", s.det_max),
                ("eig_mean", s.eig_mean),
                ("eig_max", s.eig_max),
                ("eig_min_mean", s.eig_min_mean),
            ] {
                metrics.push(Metric::at_step(name, step, v));
            }
            metrics.push(Metric::at_step("singular_frac", step, s.singular_frac));
            if let Some((mean, max)) = s.cond {
                metrics.push(Metric::at_step("cond_mean", step, mean));
                metrics.push(Metric::at_step("cond_max", step, max));
            }
        }
        let g_in = flow.input_metrics(&probe).map_err(model_error)?;
        let s_in = metric_stats(&g_in, in_dim);
        metrics.push(Metric::new("det_g_in_mean", s_in.det_mean));
        metrics.push(Metric::new("singular_g_in_frac", s_in.singular_frac));
        if let Some((mean, max)) = s_in.cond {
            metrics.push(Metric::new("cond_g_in_mean", mean));
            metrics.push(Metric::new("cond_g_in_max", max));
        }
        metrics.push(Metric::new(
            "metric_conv",
            flow.metric_convergence(&probe).map_err(model_error)?,
        ));
        metrics.push(Metric::new(
            "step_norm",
            flow.step_norm(&test.x).map_err(model_error)?,
        ));

        // Coordinates of the traced test points, and of the grid (2-D data only), per layer.
        let (dx, dy) = strided(&test, p.points);
        let data_trace = flow.trace(&dx).map_err(model_error)?;
        let grid_trace = if is_plane {
            Some(flow.trace(&probe).map_err(model_error)?)
        } else {
            None
        };
        let mut t = LayerRows::new(dim);
        for l in 0..layers {
            for (i, &label) in dy.iter().enumerate() {
                t.push(l, "data", i, Some(label), None, data_trace.state(l, i));
            }
            if let Some(gt) = &grid_trace {
                for i in 0..np {
                    t.push(
                        l,
                        "grid",
                        i,
                        None,
                        Some((i % p.grid, i / p.grid)),
                        gt.state(l, i),
                    );
                }
            }
        }
        ablate_results::write_table(&ctx.out_dir().join("layers.parquet"), &t.into_table())
            .map_err(|e| OpError::with("failed to write `layers.parquet`", e))?;

        // The metric at each grid point: on the input plane (layer 0), and on every layer's
        // plane when the flow itself is planar.
        let mut m = MetricRows::default();
        if is_plane {
            for i in 0..np {
                let gi = &g_in[i * 4..(i + 1) * 4];
                m.push(0, i, p.grid, &probe[i * 2..i * 2 + 2], gi);
            }
            if let Some(gt) = grid_trace.as_ref().filter(|_| dim == 2) {
                for l in 1..layers {
                    for i in 0..np {
                        let at = gt.state(l, i);
                        let gl = &g[(l * np + i) * 4..(l * np + i + 1) * 4];
                        m.push(l, i, p.grid, &[at[0] as f32, at[1] as f32], gl);
                    }
                }
            }
        }
        ablate_results::write_table(&ctx.out_dir().join("metric.parquet"), &m.into_table())
            .map_err(|e| OpError::with("failed to write `metric.parquet`", e))?;

        Ok(OpOutput {
            metrics,
            publish: Vec::new(),
            ..OpOutput::default()
        })
    }
}

/// The columns of `layers.parquet` (the format `report.plot` reads).
struct LayerRows {
    layer: Vec<Option<i64>>,
    set: Vec<Option<String>>,
    point: Vec<Option<i64>>,
    label: Vec<Option<i64>>,
    gi: Vec<Option<i64>>,
    gj: Vec<Option<i64>>,
    coords: Vec<Vec<Option<f64>>>,
}

impl LayerRows {
    fn new(dim: usize) -> Self {
        LayerRows {
            layer: Vec::new(),
            set: Vec::new(),
            point: Vec::new(),
            label: Vec::new(),
            gi: Vec::new(),
            gj: Vec::new(),
            coords: vec![Vec::new(); dim],
        }
    }

    fn push(
        &mut self,
        layer: usize,
        set: &str,
        point: usize,
        label: Option<u32>,
        grid: Option<(usize, usize)>,
        x: &[f64],
    ) {
        self.layer.push(Some(layer as i64));
        self.set.push(Some(set.to_owned()));
        self.point.push(Some(point as i64));
        self.label.push(label.map(i64::from));
        self.gi.push(grid.map(|g| g.0 as i64));
        self.gj.push(grid.map(|g| g.1 as i64));
        for (c, v) in self.coords.iter_mut().zip(x) {
            c.push(Some(*v));
        }
    }

    fn into_table(self) -> Table {
        let mut columns = vec![
            Column::new("layer", ColumnData::Int(self.layer)),
            Column::new("set", ColumnData::Str(self.set)),
            Column::new("point", ColumnData::Int(self.point)),
            Column::new("label", ColumnData::Int(self.label)),
            Column::new("gi", ColumnData::Int(self.gi)),
            Column::new("gj", ColumnData::Int(self.gj)),
        ];
        for (j, c) in self.coords.into_iter().enumerate() {
            columns.push(Column::new(format!("x{j}"), ColumnData::Float(c)));
        }
        Table { columns }
    }
}

/// The columns of `metric.parquet`.
#[derive(Default)]
struct MetricRows {
    layer: Vec<Option<i64>>,
    point: Vec<Option<i64>>,
    gi: Vec<Option<i64>>,
    gj: Vec<Option<i64>>,
    x0: Vec<Option<f64>>,
    x1: Vec<Option<f64>>,
    g00: Vec<Option<f64>>,
    g01: Vec<Option<f64>>,
    g11: Vec<Option<f64>>,
}

impl MetricRows {
    fn push(&mut self, layer: usize, point: usize, side: usize, at: &[f32], g: &[f64]) {
        self.layer.push(Some(layer as i64));
        self.point.push(Some(point as i64));
        self.gi.push(Some((point % side) as i64));
        self.gj.push(Some((point / side) as i64));
        self.x0.push(Some(f64::from(at[0])));
        self.x1.push(Some(f64::from(at[1])));
        self.g00.push(Some(g[0]));
        self.g01.push(Some(g[1]));
        self.g11.push(Some(g[3]));
    }

    fn into_table(self) -> Table {
        let f = |name: &str, v: Vec<Option<f64>>| Column::new(name, ColumnData::Float(v));
        let i = |name: &str, v: Vec<Option<i64>>| Column::new(name, ColumnData::Int(v));
        Table {
            columns: vec![
                i("layer", self.layer),
                i("point", self.point),
                i("gi", self.gi),
                i("gj", self.gj),
                f("x0", self.x0),
                f("x1", self.x1),
                f("g00", self.g00),
                f("g01", self.g01),
                f("g11", self.g11),
            ],
        }
    }
}
