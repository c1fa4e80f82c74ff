//! Reading the tables `eval.metric` writes (`layers.parquet`, `metric.parquet`) into typed
//! points, with an error naming the column that is missing or of the wrong kind.

use super::*;

/// One row of `layers.parquet`: a data or grid point at one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPoint {
    pub layer: i64,
    pub grid: bool,
    pub label: Option<i64>,
    pub gi: Option<i64>,
    pub gj: Option<i64>,
    /// The first two coordinates.
    pub x: [f64; 2],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layers {
    /// How many coordinates the table has (only the first two are plotted).
    pub dim: usize,
    pub points: Vec<LayerPoint>,
}

impl Layers {
    /// The layers present, sorted.
    pub fn present(&self) -> Vec<i64> {
        let set: BTreeSet<i64> = self.points.iter().map(|p| p.layer).collect();
        set.into_iter().collect()
    }
}

/// Reads `layers.parquet`. Rows with a null layer or a non-finite coordinate are skipped (a
/// diverged flow leaves such points); a missing or mistyped column is an error.
pub fn layers_from_table(t: &Table) -> Result<Layers, String> {
    let layer = ints(t, "layer")?;
    let set = strs(t, "set")?;
    let label = ints(t, "label")?;
    let gi = ints(t, "gi")?;
    let gj = ints(t, "gj")?;
    let x0 = floats(t, "x0")?;
    let x1 = floats(t, "x1")?;
    let mut dim = 2;
    while t.column(&format!("x{dim}")).is_some() {
        dim += 1;
    }
    let mut points = Vec::with_capacity(t.num_rows());
    for r in 0..t.num_rows() {
        let (Some(layer), Some(a), Some(b)) = (layer[r], x0[r], x1[r]) else {
            continue;
        };
        if !(a.is_finite() && b.is_finite()) {
            continue;
        }
        let grid = match set[r].as_deref() {
            Some("grid") => true,
            Some("data") => false,
            other => {
                return Err(format!(
                    "has `set` = `{}` in row {r}; expected `data` or `grid`",
                    other.unwrap_or("null")
                ));
            }
        };
        points.push(LayerPoint {
            layer,
            grid,
            label: label[r],
            gi: gi[r],
            gj: gj[r],
            x: [a, b],
        });
    }
    Ok(Layers { dim, points })
}

/// One row of `metric.parquet`: the 2×2 pull-back metric at a grid point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub layer: i64,
    pub gi: i64,
    pub gj: i64,
    pub x: [f64; 2],
    /// `g00`, `g01`, `g11` (null cells read as NaN: drawn as a point).
    pub g: [f64; 3],
}

pub fn metric_from_table(t: &Table) -> Result<Vec<MetricPoint>, String> {
    let layer = ints(t, "layer")?;
    let gi = ints(t, "gi")?;
    let gj = ints(t, "gj")?;
    let x0 = floats(t, "x0")?;
    let x1 = floats(t, "x1")?;
    let g00 = floats(t, "g00")?;
    let g01 = floats(t, "g01")?;
    let g11 = floats(t, "g11")?;
    let mut out = Vec::with_capacity(t.num_rows());
    for r in 0..t.num_rows() {
        let (Some(layer), Some(gi), Some(gj), Some(a), Some(b)) =
            (layer[r], gi[r], gj[r], x0[r], x1[r])
        else {
            continue;
        };
        if !(a.is_finite() && b.is_finite()) {
            continue;
        }
        let g = [g00[r], g01[r], g11[r]].map(|v| v.unwrap_or(f64::NAN));
        out.push(MetricPoint {
            layer,
            gi,
            gj,
            x: [a, b],
            g,
        });
    }
    Ok(out)
}

fn column<'a>(t: &'a Table, name: &str) -> Result<&'a ColumnData, String> {
    t.column(name)
        .map(|c| &c.data)
        .ok_or_else(|| format!("has no column `{name}`"))
}

fn ints<'a>(t: &'a Table, name: &str) -> Result<&'a [Option<i64>], String> {
    match column(t, name)? {
        ColumnData::Int(v) => Ok(v),
        other => Err(wrong_kind(name, other, "int")),
    }
}

fn strs<'a>(t: &'a Table, name: &str) -> Result<&'a [Option<String>], String> {
    match column(t, name)? {
        ColumnData::Str(v) => Ok(v),
        other => Err(wrong_kind(name, other, "str")),
    }
}

/// A float column (an int column is accepted and converted).
fn floats(t: &Table, name: &str) -> Result<Vec<Option<f64>>, String> {
    match column(t, name)? {
        ColumnData::Float(v) => Ok(v.clone()),
        ColumnData::Int(v) => Ok(v.iter().map(|x| x.map(|x| x as f64)).collect()),
        other => Err(wrong_kind(name, other, "float")),
    }
}

fn wrong_kind(name: &str, data: &ColumnData, want: &str) -> String {
    format!(
        "has column `{name}` of type {}, expected {want}",
        data.kind_name()
    )
}

/// Four layers evenly spaced from 0 to the last, each snapped to the nearest layer present,
/// deduplicated (a model with one step has two layers).
pub fn default_layers(present: &[i64]) -> Vec<i64> {
    let Some(&last) = present.last() else {
        return Vec::new();
    };
    let mut out: Vec<i64> = Vec::with_capacity(4);
    for i in 0..4 {
        let want = (i as f64 * last.max(0) as f64 / 3.0).round() as i64;
        let near = *present
            .iter()
            .min_by_key(|&&l| (l - want).abs())
            .expect("present is not empty");
        if !out.contains(&near) {
            out.push(near);
        }
    }
    out
}
