//! The points tables (`x0..x{d-1}`, `label`) the data ops write and the flow ops read, and the
//! points a flow's geometry is probed at.

use std::path::Path;

use ablate_results::{Column, ColumnData, Table};
use ablate_run::OpError;

/// Writes a points table: `x` holds `labels.len()` rows of `dim` features, row-major.
pub(crate) fn write_dataset(
    path: &Path,
    dim: usize,
    x: &[f64],
    labels: &[u32],
) -> Result<(), OpError> {
    debug_assert_eq!(x.len(), dim * labels.len());
    let mut columns: Vec<Column> = (0..dim)
        .map(|j| Column {
            name: format!("x{j}"),
            data: ColumnData::Float(x.iter().skip(j).step_by(dim).map(|v| Some(*v)).collect()),
        })
        .collect();
    columns.push(Column {
        name: "label".into(),
        data: ColumnData::Int(labels.iter().map(|l| Some(i64::from(*l))).collect()),
    });
    ablate_results::write_table(path, &Table { columns })
        .map_err(|e| OpError::with("failed to write the data set", e))
}

/// Reads a points table (`x0..x{d-1}`, `label`) into a model data set. `classes`: the
/// number of classes when it is known (a model's); otherwise one more than the largest label.
pub(crate) fn read_dataset(
    path: &Path,
    classes: Option<usize>,
) -> Result<ablate_models::Dataset, OpError> {
    let table = ablate_results::read_table(path)
        .map_err(|e| OpError::with("failed to read a data set", e))?;
    let bad =
        |why: String| OpError::msg(format!("`{}` is not a points table: {why}", path.display()));
    let mut features = Vec::new();
    while let Some(col) = table.column(&format!("x{}", features.len())) {
        match &col.data {
            ColumnData::Float(v) => features.push(v),
            _ => return Err(bad(format!("column `{}` is not a float column", col.name))),
        }
    }
    if features.is_empty() {
        return Err(bad("it has no `x0` column".into()));
    }
    let labels = match table.column("label").map(|c| &c.data) {
        Some(ColumnData::Int(v)) => v,
        _ => return Err(bad("it has no integer `label` column".into())),
    };
    let n = labels.len();
    let dim = features.len();
    let mut x = Vec::with_capacity(n * dim);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        for f in &features {
            x.push(f[i].ok_or_else(|| bad(format!("row {i} has a null feature")))? as f32);
        }
        let l = labels[i].ok_or_else(|| bad(format!("row {i} has a null label")))?;
        y.push(u32::try_from(l).map_err(|_| bad(format!("row {i} has label {l}")))?);
    }
    let seen = y.iter().copied().max().map_or(0, |m| m as usize + 1);
    let classes = classes.unwrap_or(seen.max(2));
    Ok(ablate_models::Dataset { x, y, dim, classes })
}

/// The points a flow's geometry is probed at: a `side`² grid over the bounding box of 2-D data
/// (padded by 10%), or the data points themselves in higher dimensions, where a grid would
/// mostly probe empty space.
pub(crate) fn probe_points(data: &ablate_models::Dataset, side: usize) -> Vec<f32> {
    if data.dim == 2 {
        ablate_models::grid_over(&data.x, side, side, 0.1).points
    } else {
        data.x.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_points_table_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let x: Vec<f64> = (0..12).map(f64::from).collect();
        write_dataset(&path, 4, &x, &[0, 2, 1]).unwrap();
        let d = read_dataset(&path, None).unwrap();
        assert_eq!((d.dim, d.classes), (4, 3));
        assert_eq!(d.x, (0..12).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(d.y, [0, 2, 1]);
    }
}
