//! `data.toy2d`: two-class 2-D data sets (spirals, moons, circles, checkerboard), deterministic
//! for a seed, written as `train.parquet` and `test.parquet` (columns `x0`, `x1`, `label`); and
//! the points-table writer and reader every data op shares (`x0..x{d-1}`, `label`).

use std::f64::consts::PI;
use std::path::Path;

use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::rng::Rng;
use crate::support::write_dataset;

pub(crate) struct Toy2d {
    schema: OpSchema,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Spirals,
    Moons,
    Circles,
    Checkerboard,
}

/// Spiral turns before `turns` was a param: its default, so default spirals are unchanged.
const DEFAULT_TURNS: f64 = 1.5;
const DEFAULT_CELLS: usize = 4;

/// A kind with the params that shape it (`turns` for spirals, `cells` for checkerboard).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shape {
    pub(crate) kind: Kind,
    pub(crate) turns: f64,
    pub(crate) cells: usize,
}

impl Shape {
    #[cfg(test)]
    fn of(kind: Kind) -> Self {
        Shape {
            kind,
            turns: DEFAULT_TURNS,
            cells: DEFAULT_CELLS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Toy2dParams {
    kind: Kind,
    n_train: usize,
    n_test: usize,
    noise: f64,
    seed: u64,
    turns: f64,
    cells: usize,
}

impl Toy2d {
    pub(crate) fn new() -> Self {
        Toy2d {
            schema: OpSchema {
                name: "data.toy2d",
                version: 1,
                summary: "Two-class 2-D data (spirals, moons, circles, checkerboard) with Gaussian noise; writes \
                          `train.parquet` and `test.parquet` with columns `x0`, `x1`, `label`. Deterministic for a \
                          seed on every machine.",
                params: vec![
                    ParamSpec::with_default(
                        "kind",
                        ParamType::Enum(&["spirals", "moons", "circles", "checkerboard"]),
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
                        ParamType::non_negative_float(),
                        json!(0.05),
                        "standard deviation of the Gaussian noise added to each coordinate",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "random seed",
                    ),
                    ParamSpec::with_default(
                        "turns",
                        ParamType::positive_float(),
                        json!(DEFAULT_TURNS),
                        "spirals: turns of each arm",
                    ),
                    ParamSpec::with_default(
                        "cells",
                        ParamType::Int { min: 2, max: 1000 },
                        json!(DEFAULT_CELLS),
                        "checkerboard: cells per side of the board over [-1, 1]²",
                    ),
                ],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                on_device: false,
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
        let shape = Shape {
            kind: p.kind,
            turns: p.turns,
            cells: p.cells,
        };
        // Train and test come from one stream, so they never share a point.
        let train = generate(shape, p.n_train, p.noise, &mut rng);
        let test = generate(shape, p.n_test, p.noise, &mut rng);
        write_points(&ctx.out_dir().join("train.parquet"), &train)?;
        write_points(&ctx.out_dir().join("test.parquet"), &test)?;
        Ok(OpOutput::default())
    }
}

/// Points as (x0, x1, label); classes alternate so both are equally represented.
pub(crate) fn generate(shape: Shape, n: usize, noise: f64, rng: &mut Rng) -> Vec<(f64, f64, u32)> {
    (0..n)
        .map(|i| {
            let label = (i % 2) as u32;
            let (x, y) = match shape.kind {
                Kind::Spirals => {
                    // Two interleaved arms, `turns` turns each, radius growing from 0.1 to 1.
                    // `(2π · turns) · t` is bit-for-bit the former `3π · t` at 1.5 turns.
                    let t = rng.uniform();
                    let r = 0.1 + 0.9 * t;
                    let angle = 2.0 * PI * shape.turns * t + PI * label as f64;
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
                Kind::Checkerboard => {
                    // Uniform over the cells of the label's colour (rejection: two draws on
                    // average), so classes stay balanced even when `cells` is odd.
                    loop {
                        let x = 2.0 * rng.uniform() - 1.0;
                        let y = 2.0 * rng.uniform() - 1.0;
                        if checker(x, y, shape.cells) == label {
                            break (x, y);
                        }
                    }
                }
            };
            (x + noise * rng.normal(), y + noise * rng.normal(), label)
        })
        .collect()
}

/// The colour (0 or 1) of the cell holding `(x, y)` in a `cells` × `cells` board over [-1, 1)².
fn checker(x: f64, y: f64, cells: usize) -> u32 {
    let cell = |v: f64| (((v + 1.0) / 2.0 * cells as f64).floor() as usize).min(cells - 1);
    ((cell(x) + cell(y)) % 2) as u32
}

fn write_points(path: &Path, points: &[(f64, f64, u32)]) -> Result<(), OpError> {
    let x: Vec<f64> = points.iter().flat_map(|p| [p.0, p.1]).collect();
    let labels: Vec<u32> = points.iter().map(|p| p.2).collect();
    write_dataset(path, 2, &x, &labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::read_dataset;

    #[test]
    fn deterministic_balanced_and_bounded() {
        for kind in [
            Kind::Spirals,
            Kind::Moons,
            Kind::Circles,
            Kind::Checkerboard,
        ] {
            let shape = Shape::of(kind);
            let a = generate(shape, 500, 0.05, &mut Rng::new(3));
            let b = generate(shape, 500, 0.05, &mut Rng::new(3));
            let c = generate(shape, 500, 0.05, &mut Rng::new(4));
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
        // model's test split without class 2 was refused by the model code.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.parquet");
        write_points(&path, &[(0.0, 0.0, 0), (1.0, 1.0, 1)]).unwrap();
        assert_eq!(read_dataset(&path, None).unwrap().classes, 2);
        assert_eq!(read_dataset(&path, Some(3)).unwrap().classes, 3);
        let cfg = ablate_models::FlowConfig {
            in_dim: 2,
            classes: 3,
            dim: 2,
            hidden: 4,
            steps: 1,
            h: 1.0,
            weights: ablate_models::Weights::Shared,
            form: ablate_models::Form::C1,
            integrator: ablate_models::Integrator::Euler,
            activation: ablate_models::Activation::Tanh,
        };
        let flow = ablate_models::Flow::init(&cfg, 0).unwrap();
        assert!(
            flow.evaluate(&read_dataset(&path, Some(3)).unwrap())
                .is_ok()
        );
        assert!(flow.evaluate(&read_dataset(&path, None).unwrap()).is_err());
    }

    #[test]
    fn noiseless_shapes_are_exact() {
        // Circles: every point on its radius. Spirals: the two arms are point reflections.
        for (x, y, l) in generate(Shape::of(Kind::Circles), 100, 0.0, &mut Rng::new(1)) {
            let r = (x * x + y * y).sqrt();
            assert!((r - if l == 0 { 1.0 } else { 0.5 }).abs() < 1e-12);
        }
        for (x, y, _) in generate(Shape::of(Kind::Spirals), 100, 0.0, &mut Rng::new(1)) {
            let r = (x * x + y * y).sqrt();
            assert!((0.1 - 1e-12..=1.0 + 1e-12).contains(&r));
        }
        // Checkerboard: every noiseless point lies in [-1, 1)² on a cell of its label's colour.
        for cells in [2, 3, 4, 7] {
            let shape = Shape {
                cells,
                ..Shape::of(Kind::Checkerboard)
            };
            let points = generate(shape, 400, 0.0, &mut Rng::new(2));
            assert_eq!(points.iter().filter(|p| p.2 == 1).count(), 200);
            for (x, y, l) in points {
                assert!((-1.0..1.0).contains(&x) && (-1.0..1.0).contains(&y));
                assert_eq!(checker(x, y, cells), l, "({x}, {y}) with {cells} cells");
            }
        }
    }

    #[test]
    fn checker_colours_a_hand_worked_board() {
        // 4 × 4 over [-1, 1): cells are 0.5 wide; the bottom-left cell is colour 0.
        assert_eq!(checker(-0.9, -0.9, 4), 0);
        assert_eq!(checker(-0.4, -0.9, 4), 1);
        assert_eq!(checker(-0.4, -0.4, 4), 0);
        assert_eq!(checker(0.9, -0.9, 4), 1);
        assert_eq!(checker(0.0, 0.0, 4), 0);
        assert_eq!(checker(0.99, 0.99, 4), 0);
        // 2 × 2: quadrants.
        assert_eq!(checker(0.5, -0.5, 2), 1);
        assert_eq!(checker(-0.5, 0.5, 2), 1);
    }

    #[test]
    fn default_turns_keep_the_former_spirals() {
        // The generator before `turns` existed, verbatim: default spirals must not change.
        let mut rng = Rng::new(5);
        let former: Vec<(f64, f64, u32)> = (0..300)
            .map(|i| {
                let label = (i % 2) as u32;
                let t = rng.uniform();
                let r = 0.1 + 0.9 * t;
                let angle = 3.0 * PI * t + PI * label as f64;
                let (x, y) = (r * angle.cos(), r * angle.sin());
                (x + 0.05 * rng.normal(), y + 0.05 * rng.normal(), label)
            })
            .collect();
        assert_eq!(
            generate(Shape::of(Kind::Spirals), 300, 0.05, &mut Rng::new(5)),
            former
        );
    }

    #[test]
    fn turns_change_the_spiral() {
        let spiral = |turns| {
            let shape = Shape {
                turns,
                ..Shape::of(Kind::Spirals)
            };
            generate(shape, 200, 0.0, &mut Rng::new(6))
        };
        let (a, b) = (spiral(1.5), spiral(3.0));
        assert_ne!(a, b);
        // Same radii (the same draws of t), different angles: at t the angle is 2π·turns·t.
        for (p, q) in a.iter().zip(&b) {
            let (rp, rq) = (p.0.hypot(p.1), q.0.hypot(q.1));
            assert!((rp - rq).abs() < 1e-12);
            let t = (rq - 0.1) / 0.9;
            let angle = 2.0 * PI * 3.0 * t + PI * f64::from(q.2);
            assert!((q.0 - rq * angle.cos()).abs() < 1e-9 && (q.1 - rq * angle.sin()).abs() < 1e-9);
        }
        // Other kinds ignore `turns`.
        let moons = |turns| {
            let shape = Shape {
                turns,
                ..Shape::of(Kind::Moons)
            };
            generate(shape, 50, 0.05, &mut Rng::new(6))
        };
        assert_eq!(moons(1.5), moons(3.0));
    }
}
