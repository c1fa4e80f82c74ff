//! `data.toy2d`: two-class 2-D data sets (spirals, moons, circles), deterministic for a seed,
//! written as `train.parquet` and `test.parquet` (columns `x0`, `x1`, `label`).

use std::f64::consts::PI;
use std::path::Path;

use ablate_results::{Column, ColumnData, Table};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::rng::Rng;

pub(crate) struct Toy2d {
    schema: OpSchema,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Spirals,
    Moons,
    Circles,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Toy2dParams {
    kind: Kind,
    n_train: usize,
    n_test: usize,
    noise: f64,
    seed: u64,
}

impl Toy2d {
    pub(crate) fn new() -> Self {
        Toy2d {
            schema: OpSchema {
                name: "data.toy2d",
                version: 1,
                summary: "Two-class 2-D data (spirals, moons, circles) with Gaussian noise; writes `train.parquet` and \
                          `test.parquet` with columns `x0`, `x1`, `label`. Deterministic for a seed on every machine.",
                params: vec![
                    ParamSpec::with_default(
                        "kind",
                        ParamType::Enum(&["spirals", "moons", "circles"]),
                        json!("spirals"),
                        "which data set",
                    ),
                    ParamSpec::with_default(
                        "n_train",
                        ParamType::positive_int(),
                        json!(1000),
                        "training points (half per class)",
                    ),
                    ParamSpec::with_default(
                        "n_test",
                        ParamType::positive_int(),
                        json!(1000),
                        "test points",
                    ),
                    ParamSpec::with_default(
                        "noise",
                        ParamType::Float {
                            min: 0.0,
                            max: f64::MAX,
                        },
                        json!(0.05),
                        "standard deviation of the Gaussian noise added to each coordinate",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "random seed",
                    ),
                ],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                needs: (0, Some(0)),
            },
        }
    }
}

impl Op for Toy2d {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: Toy2dParams = typed("data.toy2d", ctx.job.params())?;
        let mut rng = Rng::new(p.seed);
        // Train and test come from one stream, so they never share a point.
        let train = generate(p.kind, p.n_train, p.noise, &mut rng);
        let test = generate(p.kind, p.n_test, p.noise, &mut rng);
        write_points(&ctx.out_dir().join("train.parquet"), &train)?;
        write_points(&ctx.out_dir().join("test.parquet"), &test)?;
        Ok(OpOutput::default())
    }
}

/// Points as (x0, x1, label); classes alternate so both are equally represented.
pub(crate) fn generate(kind: Kind, n: usize, noise: f64, rng: &mut Rng) -> Vec<(f64, f64, u32)> {
    (0..n)
        .map(|i| {
            let label = (i % 2) as u32;
            let (x, y) = match kind {
                Kind::Spirals => {
                    // Two interleaved arms, 1.5 turns each, radius growing from 0.1 to 1.
                    let t = rng.uniform();
                    let r = 0.1 + 0.9 * t;
                    let angle = 3.0 * PI * t + PI * label as f64;
                    (r * angle.cos(), r * angle.sin())
                }
                Kind::Moons => {
                    // scikit-learn's two moons, centred and scaled into [-1, 1].
                    let a = PI * rng.uniform();
                    let (x, y) = if label == 0 {
                        (a.cos(), a.sin())
                    } else {
                        (1.0 - a.cos(), 0.5 - a.sin())
                    };
                    ((x - 0.5) / 1.5, (y - 0.25) / 1.5)
                }
                Kind::Circles => {
                    // Outer circle radius 1, inner 0.5.
                    let a = 2.0 * PI * rng.uniform();
                    let r = if label == 0 { 1.0 } else { 0.5 };
                    (r * a.cos(), r * a.sin())
                }
            };
            (x + noise * rng.normal(), y + noise * rng.normal(), label)
        })
        .collect()
}

fn write_points(path: &Path, points: &[(f64, f64, u32)]) -> Result<(), OpError> {
    let table = Table {
        columns: vec![
            Column {
                name: "x0".into(),
                data: ColumnData::Float(points.iter().map(|p| Some(p.0)).collect()),
            },
            Column {
                name: "x1".into(),
                data: ColumnData::Float(points.iter().map(|p| Some(p.1)).collect()),
            },
            Column {
                name: "label".into(),
                data: ColumnData::Int(points.iter().map(|p| Some(i64::from(p.2))).collect()),
            },
        ],
    };
    ablate_results::write_table(path, &table)
        .map_err(|e| OpError::with("failed to write the data set", e))
}

/// Reads a points table (`x0..x{d-1}`, `label`) into an engine data set. `classes`: the
/// number of classes when it is known (a model's); otherwise one more than the largest label.
pub(crate) fn read_dataset(
    path: &Path,
    classes: Option<usize>,
) -> Result<ablate_engine::Dataset, OpError> {
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
    Ok(ablate_engine::Dataset { x, y, dim, classes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_bounded() {
        for kind in [Kind::Spirals, Kind::Moons, Kind::Circles] {
            let a = generate(kind, 500, 0.05, &mut Rng::new(3));
            let b = generate(kind, 500, 0.05, &mut Rng::new(3));
            let c = generate(kind, 500, 0.05, &mut Rng::new(4));
            assert_eq!(a, b);
            assert_ne!(a, c);
            assert_eq!(a.iter().filter(|p| p.2 == 1).count(), 250);
            assert!(
                a.iter().all(|p| p.0.abs() < 1.5 && p.1.abs() < 1.5),
                "{kind:?} out of range"
            );
        }
    }

    #[test]
    fn a_test_split_missing_a_class_disagreed_with_its_model() {
        // Regression: the class count was inferred from the labels present, so a 3-class
        // model's test split without class 2 was refused by the engine.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.parquet");
        write_points(&path, &[(0.0, 0.0, 0), (1.0, 1.0, 1)]).unwrap();
        assert_eq!(read_dataset(&path, None).unwrap().classes, 2);
        assert_eq!(read_dataset(&path, Some(3)).unwrap().classes, 3);
        let cfg = ablate_engine::FlowConfig {
            in_dim: 2,
            classes: 3,
            dim: 2,
            hidden: 4,
            steps: 1,
            h: 1.0,
            weights: ablate_engine::Weights::Shared,
            form: ablate_engine::Form::C1,
            integrator: ablate_engine::Integrator::Euler,
            activation: ablate_engine::Activation::Tanh,
        };
        let flow = ablate_engine::Flow::init(&cfg, 0).unwrap();
        assert!(
            flow.evaluate(&read_dataset(&path, Some(3)).unwrap())
                .is_ok()
        );
        assert!(flow.evaluate(&read_dataset(&path, None).unwrap()).is_err());
    }

    #[test]
    fn noiseless_shapes_are_exact() {
        // Circles: every point on its radius. Spirals: the two arms are point reflections.
        for (x, y, l) in generate(Kind::Circles, 100, 0.0, &mut Rng::new(1)) {
            let r = (x * x + y * y).sqrt();
            assert!((r - if l == 0 { 1.0 } else { 0.5 }).abs() < 1e-12);
        }
        for (x, y, _) in generate(Kind::Spirals, 100, 0.0, &mut Rng::new(1)) {
            let r = (x * x + y * y).sqrt();
            assert!((0.1 - 1e-12..=1.0 + 1e-12).contains(&r));
        }
    }
}
