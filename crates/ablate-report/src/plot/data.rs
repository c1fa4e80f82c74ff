//! The pure half of `report.plot`: input selection, point aggregation, reading the tables of
//! `eval.metric`, grid polylines and metric ellipses. Nothing here draws or touches files.

mod geometry;
mod pareto;
mod tables;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ablate_results::{ColumnData, Table};

use crate::stats::mean_std;
use ablate_spec::{Value, backticked};

pub use geometry::{Polyline, grid_lines, metric_ellipses};
pub use pareto::{Pareto, pareto, staircase};
pub use pareto::{ParetoFacet, ParetoPoint};
pub use tables::{Layers, MetricPoint, default_layers, layers_from_table, metric_from_table};

/// A label value as titles and legends show it (strings without their quotes).
pub fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Label equality as a user means it: `8` matches `8.0`, and `"8"` matches `8`.
fn label_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => label_text(a) == label_text(b),
    }
}

/// `weights=shared steps=8 seed=0`.
pub fn labels_text(labels: &[(String, Value)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}", label_text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `select` param checked: a map from label key to a scalar value.
pub fn parse_select(select: Option<&Value>) -> Result<BTreeMap<String, Value>, String> {
    match select {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Array(_) | Value::Object(_) | Value::Null => Err(format!(
                    "`select.{k}` must be a single label value, not `{v}`"
                )),
                _ => Ok((k.clone(), v.clone())),
            })
            .collect(),
        Some(other) => Err(format!(
            "`select` must be a map from label to value (e.g. `{{ seed: 0 }}`), not `{other}`"
        )),
    }
}

/// Whether `labels` carry every entry of `select`.
pub fn selected(labels: &[(String, Value)], select: &BTreeMap<String, Value>) -> bool {
    select
        .iter()
        .all(|(key, want)| labels.iter().any(|(k, v)| k == key && label_eq(v, want)))
}

/// Why `select` chose none of the inputs whose labels are `inputs`: the values it wants and
/// those the inputs have (`--matrix` may have swept other values than the file's, #21).
pub fn select_matches_none(
    select: &BTreeMap<String, Value>,
    inputs: &[&[(String, Value)]],
) -> String {
    /// Values listed per label; more are counted.
    const SHOWN: usize = 8;
    let wants: Vec<String> = select
        .iter()
        .map(|(k, v)| format!("`{k}={}`", label_text(v)))
        .collect();
    let mut have = Vec::new();
    let mut absent = Vec::new();
    for key in select.keys() {
        let mut values: Vec<String> = Vec::new();
        for (_, v) in inputs
            .iter()
            .flat_map(|l| l.iter())
            .filter(|(k, _)| k == key)
        {
            let v = label_text(v);
            if !values.contains(&v) {
                values.push(v);
            }
        }
        match values.len() {
            0 => absent.push(key),
            n if n > SHOWN => have.push(format!(
                "`{key}={}` and {} more",
                values[..SHOWN].join(","),
                n - SHOWN
            )),
            _ => have.push(format!("`{key}={}`", values.join(","))),
        }
    }
    let mut why = format!(
        "`select` matches none of the {} input{}: it wants {}",
        inputs.len(),
        if inputs.len() == 1 { "" } else { "s" },
        wants.join(", ")
    );
    if !have.is_empty() {
        why.push_str(&format!("; the inputs have {}", have.join(", ")));
    }
    if !absent.is_empty() {
        let mut keys: Vec<&str> = inputs
            .iter()
            .flat_map(|l| l.iter().map(|(k, _)| k.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        why.push_str(&format!(
            "; no input has the label {} (their labels: {})",
            backticked(&absent),
            backticked(&keys)
        ));
    }
    why
}

/// The final metrics of one input, with its id and its labels in the plan's order (an error
/// lists them so), the stepped counterpart of [`Stepped`]. Not `ablate_results::Observation`,
/// which is a report's view of an instance: labels keyed for lookup, no id, and why it is
/// `missing` if it did not finish — a plot draws only the inputs that finished (and counts the others).
#[derive(Debug, Clone)]
pub struct FinalMetrics {
    pub id: String,
    pub labels: Vec<(String, Value)>,
    pub metrics: BTreeMap<String, f64>,
}

impl FinalMetrics {
    fn label(&self, key: &str) -> Result<&Value, String> {
        label_of(&self.id, &self.labels, key)
    }
}

/// The value of label `key` of input `id`, or an error listing the labels it has.
fn label_of<'a>(id: &str, labels: &'a [(String, Value)], key: &str) -> Result<&'a Value, String> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .ok_or_else(|| {
            let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            format!(
                "input `{id}` has no label `{key}` (its labels: {})",
                backticked(&keys)
            )
        })
}

/// How the x axis of a line plot is laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum XAxis {
    Numeric,
    /// Category names in first-seen order; a point's x is the index of its category.
    Categorical(Vec<String>),
}

/// One plotted point: the mean of its observations, with their sample standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub mean: f64,
    /// `None` for a single observation.
    pub std: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The group's value, `None` without `group`.
    pub name: Option<String>,
    pub points: Vec<Point>,
}

/// The value of the `group` labels of an input: the label's value for one key, the list of
/// them for several (a line per combination); `None` without `group`.
fn group_value(
    id: &str,
    labels: &[(String, Value)],
    group: &[String],
) -> Result<Option<Value>, String> {
    match group {
        [] => Ok(None),
        [one] => label_of(id, labels, one).map(|v| Some(v.clone())),
        many => many
            .iter()
            .map(|g| label_of(id, labels, g).cloned())
            .collect::<Result<Vec<_>, _>>()
            .map(|vs| Some(Value::Array(vs))),
    }
}

/// A series' name in the legend (whose title names the keys): `0.1`, or `0.1, 32` for
/// several keys.
fn group_name(v: &Value) -> String {
    match v {
        Value::Array(vs) => vs.iter().map(label_text).collect::<Vec<_>>().join(", "),
        v => label_text(v),
    }
}

/// Points of metric `y` against label `x`, one series per value of the `group` labels (per
/// combination of values, for several), each point the mean over the observations with that
/// (group, x) — typically over seeds. Inputs without the metric are skipped.
pub fn aggregate(
    obs: &[FinalMetrics],
    x: &str,
    y: &str,
    group: &[String],
) -> Result<(XAxis, Vec<Series>), String> {
    let mut kept: Vec<(Option<Value>, &Value, f64)> = Vec::new();
    for o in obs {
        let Some(&value) = o.metrics.get(y) else {
            continue;
        };
        let xv = o.label(x)?;
        let gv = group_value(&o.id, &o.labels, group)?;
        kept.push((gv, xv, value));
    }
    if kept.is_empty() {
        return Err(format!(
            "no input has the metric `{y}`; the metrics present: {}",
            metrics_present(obs)
        ));
    }
    let xs: Vec<&Value> = kept.iter().map(|(_, x, _)| *x).collect();
    let (x_keys, x_numeric) = ordered_keys(&xs);
    let groups: Vec<&Value> = kept.iter().filter_map(|(g, _, _)| g.as_ref()).collect();
    let (group_keys, _) = ordered_keys(&groups);

    let n_groups = group_keys.len().max(1);
    let mut cells: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); x_keys.len()]; n_groups];
    for (g, xv, value) in &kept {
        let gi = g.as_ref().map_or(0, |g| position(&group_keys, g));
        cells[gi][position(&x_keys, xv)].push(*value);
    }
    let series = cells
        .into_iter()
        .enumerate()
        .map(|(gi, row)| Series {
            name: group_keys.get(gi).map(|v| group_name(v)),
            points: row
                .into_iter()
                .enumerate()
                .filter(|(_, vals)| !vals.is_empty())
                .map(|(xi, vals)| {
                    let (mean, std) = mean_std(&vals);
                    Point {
                        x: if x_numeric {
                            x_keys[xi].as_f64().expect("numeric keys")
                        } else {
                            xi as f64
                        },
                        mean,
                        std,
                    }
                })
                .collect(),
        })
        .collect();
    let axis = if x_numeric {
        XAxis::Numeric
    } else {
        XAxis::Categorical(x_keys.iter().map(|v| label_text(v)).collect())
    };
    Ok((axis, series))
}

/// Distinct values in plotting order: sorted numerically when all are numbers, else in
/// first-seen order. Returns whether they are numeric.
fn ordered_keys<'a>(values: &[&'a Value]) -> (Vec<&'a Value>, bool) {
    let numeric = values.iter().all(|v| v.as_f64().is_some());
    let mut keys: Vec<&Value> = Vec::new();
    for v in values {
        if !keys.iter().any(|k| label_eq(k, v)) {
            keys.push(v);
        }
    }
    if numeric {
        keys.sort_by(|a, b| a.as_f64().unwrap().total_cmp(&b.as_f64().unwrap()));
    }
    (keys, numeric)
}

fn position(keys: &[&Value], v: &Value) -> usize {
    keys.iter()
        .position(|k| label_eq(k, v))
        .expect("every value has a key")
}

/// Every metric name of the observations, sorted, for "no such metric" errors.
fn metrics_present(obs: &[FinalMetrics]) -> String {
    let names: BTreeSet<&str> = obs
        .iter()
        .flat_map(|o| o.metrics.keys().map(String::as_str))
        .collect();
    backticked(names)
}

// ---------------------------------------------------------------------------------------------
// Curves (#18)

/// The stepped values of one metric in one input, with its labels.
#[derive(Debug, Clone)]
pub struct Stepped {
    pub id: String,
    pub labels: Vec<(String, Value)>,
    /// `(step, value)`, one per step.
    pub values: BTreeMap<u64, f64>,
}

/// The values of metric `y` that input `id` logged with a step (`metrics` as (name, step,
/// value)); a step logged twice keeps its
/// last value. Without any, an error naming the input and the stepped metrics it does have.
pub fn stepped_values(
    id: &str,
    metrics: &[(&str, Option<u64>, f64)],
    y: &str,
) -> Result<BTreeMap<u64, f64>, String> {
    let values: BTreeMap<u64, f64> = metrics
        .iter()
        .filter(|(name, _, _)| *name == y)
        .filter_map(|&(_, step, value)| Some((step?, value)))
        .collect();
    if !values.is_empty() {
        return Ok(values);
    }
    let names = |stepped: bool| {
        let names: BTreeSet<&str> = metrics
            .iter()
            .filter(|(_, step, _)| step.is_some() == stepped)
            .map(|(name, _, _)| *name)
            .collect();
        names.into_iter().collect::<Vec<_>>()
    };
    let only_final = if names(false).contains(&y) {
        " (only a final value)"
    } else {
        ""
    };
    let has = match names(true).as_slice() {
        [] => format!(
            "it has no stepped metrics (its final metrics: {})",
            backticked(names(false))
        ),
        stepped => format!("its stepped metrics: {}", backticked(stepped)),
    };
    Err(format!(
        "input `{id}` has no stepped metric `{y}`{only_final}; {has}"
    ))
}

/// Metric values against the step, one series per value of the `group` labels (one without),
/// each point the mean ± sd at that step over the series' inputs that logged it (typically the
/// seeds). Series are ordered like [`aggregate`]'s groups, points by step.
pub fn curves(obs: &[Stepped], group: &[String]) -> Result<Vec<Series>, String> {
    let group_values = obs
        .iter()
        .map(|o| group_value(&o.id, &o.labels, group))
        .collect::<Result<Vec<_>, String>>()?;
    let present: Vec<&Value> = group_values.iter().flatten().collect();
    let (group_keys, _) = ordered_keys(&present);
    let mut cells: Vec<BTreeMap<u64, Vec<f64>>> = vec![BTreeMap::new(); group_keys.len().max(1)];
    for (o, g) in obs.iter().zip(&group_values) {
        let cell = &mut cells[g.as_ref().map_or(0, |g| position(&group_keys, g))];
        for (&step, &value) in &o.values {
            cell.entry(step).or_default().push(value);
        }
    }
    Ok(cells
        .into_iter()
        .enumerate()
        .map(|(gi, by_step)| Series {
            name: group_keys.get(gi).map(|v| group_name(v)),
            points: by_step
                .into_iter()
                .map(|(step, vals)| {
                    let (mean, std) = mean_std(&vals);
                    Point {
                        x: step as f64,
                        mean,
                        std,
                    }
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::geometry::*;
    use super::pareto::*;
    use super::tables::*;
    use super::*;
    use serde_json::json;

    fn obs(id: &str, labels: &[(&str, Value)], metrics: &[(&str, f64)]) -> FinalMetrics {
        FinalMetrics {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn points_are_mean_and_sample_std_per_group_and_x() {
        let o = vec![
            obs(
                "a",
                &[
                    ("w", json!("shared")),
                    ("steps", json!(8)),
                    ("seed", json!(0)),
                ],
                &[("acc", 0.8)],
            ),
            obs(
                "b",
                &[
                    ("w", json!("shared")),
                    ("steps", json!(8)),
                    ("seed", json!(1)),
                ],
                &[("acc", 0.9)],
            ),
            obs(
                "c",
                &[
                    ("w", json!("shared")),
                    ("steps", json!(2)),
                    ("seed", json!(0)),
                ],
                &[("acc", 0.5)],
            ),
            obs(
                "d",
                &[
                    ("w", json!("unshared")),
                    ("steps", json!(2)),
                    ("seed", json!(0)),
                ],
                &[("acc", 0.6)],
            ),
            // No `acc`: skipped.
            obs(
                "e",
                &[
                    ("w", json!("unshared")),
                    ("steps", json!(4)),
                    ("seed", json!(0)),
                ],
                &[("loss", 1.0)],
            ),
        ];
        let (axis, series) = aggregate(&o, "steps", "acc", &["w".to_owned()]).unwrap();
        assert_eq!(axis, XAxis::Numeric);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].name.as_deref(), Some("shared"));
        // Numeric x sorts numerically: 2 before 8.
        let xs: Vec<f64> = series[0].points.iter().map(|p| p.x).collect();
        assert_eq!(xs, [2.0, 8.0]);
        let p = &series[0].points[1];
        assert!((p.mean - 0.85).abs() < 1e-12);
        // Sample std of {0.8, 0.9}: sqrt(((0.05)² · 2) / 1).
        assert!((p.std.unwrap() - 0.005_f64.sqrt()).abs() < 1e-12);
        assert_eq!(series[0].points[0].std, None);
        assert_eq!(series[1].name.as_deref(), Some("unshared"));
        assert_eq!(series[1].points.len(), 1);
    }

    #[test]
    fn string_x_is_categorical_in_first_seen_order() {
        let o = vec![
            obs("a", &[("act", json!("tanh"))], &[("acc", 1.0)]),
            obs("b", &[("act", json!("relu"))], &[("acc", 2.0)]),
            obs("c", &[("act", json!("tanh"))], &[("acc", 3.0)]),
        ];
        let (axis, series) = aggregate(&o, "act", "acc", &[]).unwrap();
        assert_eq!(axis, XAxis::Categorical(vec!["tanh".into(), "relu".into()]));
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].name, None);
        let pts: Vec<(f64, f64)> = series[0].points.iter().map(|p| (p.x, p.mean)).collect();
        assert_eq!(pts, [(0.0, 2.0), (1.0, 2.0)]);
    }

    #[test]
    fn a_missing_metric_names_the_metrics_present() {
        let o = vec![obs("a", &[("s", json!(1))], &[("loss", 1.0), ("acc", 0.5)])];
        let err = aggregate(&o, "s", "test_acc", &[]).unwrap_err();
        assert_eq!(
            err,
            "no input has the metric `test_acc`; the metrics present: `acc`, `loss`"
        );
        let err = aggregate(&o, "steps", "acc", &[]).unwrap_err();
        assert!(err.contains("input `a` has no label `steps`"), "{err}");
    }

    fn stepped(id: &str, group: Value, values: &[(u64, f64)]) -> Stepped {
        Stepped {
            id: id.into(),
            labels: vec![("g".into(), group)],
            values: values.iter().copied().collect(),
        }
    }

    #[test]
    fn curve_points_are_mean_and_sample_std_per_group_and_step() {
        let o = vec![
            stepped("a", json!("b"), &[(0, 1.0), (10, 0.5)]),
            stepped("b", json!("b"), &[(0, 3.0), (10, 0.7), (20, 0.2)]),
            stepped("c", json!("a"), &[(10, 2.0)]),
        ];
        let series = curves(&o, &["g".to_owned()]).unwrap();
        // Groups in first-seen order (string labels), steps in order.
        let names: Vec<_> = series.iter().map(|s| s.name.as_deref()).collect();
        assert_eq!(names, [Some("b"), Some("a")]);
        let b = &series[0].points;
        assert_eq!(b.iter().map(|p| p.x).collect::<Vec<_>>(), [0.0, 10.0, 20.0]);
        assert_eq!((b[0].mean, b[0].std), (2.0, Some(2.0_f64.sqrt())));
        assert!((b[1].mean - 0.6).abs() < 1e-12);
        // Step 20 only in input `b`: its value, without a std.
        assert_eq!((b[2].mean, b[2].std), (0.2, None));
        assert_eq!(
            series[1].points,
            [Point {
                x: 10.0,
                mean: 2.0,
                std: None
            }]
        );

        let one = curves(&o, &[]).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, None);
        assert!((one[0].points[1].mean - 3.2 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn stepped_values_keep_the_last_value_of_a_step_and_name_what_an_input_has() {
        let m = [
            ("loss", Some(1), 0.9),
            ("loss", Some(1), 0.8),
            ("loss", Some(2), 0.5),
            ("lr", Some(1), 0.1),
            ("loss", None, 0.5),
            ("acc", None, 0.7),
        ];
        let v = stepped_values("t[0]", &m, "loss").unwrap();
        assert_eq!(v.into_iter().collect::<Vec<_>>(), [(1, 0.8), (2, 0.5)]);
        assert_eq!(
            stepped_values("t[0]", &m, "acc").unwrap_err(),
            "input `t[0]` has no stepped metric `acc` (only a final value); its stepped \
             metrics: `loss`, `lr`"
        );
        assert_eq!(
            stepped_values("t[1]", &[], "loss").unwrap_err(),
            "input `t[1]` has no stepped metric `loss`; it has no stepped metrics (its final \
             metrics: none)"
        );
    }

    #[test]
    fn selection_matches_every_entry_loosely_typed() {
        let labels = vec![
            ("weights".to_owned(), json!("shared")),
            ("steps".to_owned(), json!(8)),
        ];
        let sel = |v: Value| parse_select(Some(&v)).unwrap();
        assert!(selected(&labels, &sel(json!({}))));
        assert!(selected(&labels, &sel(json!({"weights": "shared"}))));
        assert!(selected(
            &labels,
            &sel(json!({"weights": "shared", "steps": 8.0}))
        ));
        assert!(selected(&labels, &sel(json!({"steps": "8"}))));
        assert!(!selected(&labels, &sel(json!({"steps": 4}))));
        assert!(!selected(&labels, &sel(json!({"seed": 0}))));
        assert!(parse_select(Some(&json!([1]))).is_err());
        assert!(parse_select(Some(&json!({"a": [1]}))).is_err());
        assert!(parse_select(None).unwrap().is_empty());
        assert_eq!(labels_text(&labels), "weights=shared steps=8");
    }

    #[test]
    fn the_frontier_keeps_non_dominated_points_and_ties() {
        let pts = [
            (0.1, 0.9),      // 0: best y
            (0.5, 0.5),      // 1: on the frontier
            (0.4, 0.5),      // 2: dominated by 1 (same y, lower x)
            (0.9, 0.1),      // 3: best x
            (0.3, 0.3),      // 4: dominated by 1 on both
            (0.5, 0.5),      // 5: equal to 1: neither dominates the other
            (f64::NAN, 1.0), // 6: never on it
        ];
        assert_eq!(frontier(&pts, [false, false]), [0, 1, 5, 3]);
        // Lower-is-better y: the lowest y values are best; (0.9, 0.1) dominates every point
        // with x ≤ 0.9 and y ≥ 0.1.
        assert_eq!(frontier(&pts, [false, true]), [3]);
        // Both lower: the mirror image, ordered from the worst x (the highest) to the best.
        assert_eq!(frontier(&pts, [true, true]), [3, 4, 0]);
        // Lower-is-better x: (0.1, 0.9) has the best x and y.
        assert_eq!(frontier(&pts, [true, false]), [0]);
        assert!(frontier(&[], [false, false]).is_empty());
        assert_eq!(frontier(&[(1.0, 2.0)], [false, false]), [0]);
    }

    #[test]
    fn the_staircase_steps_down_then_across() {
        let line = staircase(&[(0.1, 0.9), (0.5, 0.5), (0.9, 0.1)]);
        assert_eq!(
            line,
            [(0.1, 0.9), (0.1, 0.5), (0.5, 0.5), (0.5, 0.1), (0.9, 0.1)]
        );
        assert_eq!(staircase(&[(1.0, 2.0)]), [(1.0, 2.0)]);
    }

    #[test]
    fn pareto_points_are_group_means_per_facet() {
        let o = |id: &str, objective: &str, arch: &str, seed: i64, infill: f64, oneshot: f64| {
            obs(
                id,
                &[
                    ("objective", json!(objective)),
                    ("arch", json!(arch)),
                    ("seed", json!(seed)),
                ],
                &[("infill_em", infill), ("oneshot_em", oneshot)],
            )
        };
        let mut all = vec![
            o("a", "clm", "decoder", 0, 0.1, 0.6),
            o("b", "clm", "decoder", 1, 0.3, 0.4),
            o("c", "sc", "decoder", 0, 0.8, 0.1),
            o("d", "ul2", "decoder", 0, 0.2, 0.3),
            o("e", "sc", "encdec", 0, 0.9, 0.2),
        ];
        // Without `oneshot_em`: skipped.
        all.push(obs(
            "f",
            &[("objective", json!("clm")), ("arch", json!("encdec"))],
            &[("infill_em", 1.0)],
        ));
        let p = pareto(
            &all,
            "infill_em",
            "oneshot_em",
            &["objective".to_owned()],
            Some("arch"),
            [false, false],
        )
        .unwrap();
        assert_eq!(p.groups, ["clm", "sc", "ul2"]);
        assert_eq!(p.facets.len(), 2);
        let dec = &p.facets[0];
        assert_eq!(dec.name.as_deref(), Some("arch=decoder"));
        // clm: means (0.2, 0.5), sample sds √0.02 each; sc and ul2 one seed each.
        let clm = &dec.points[0];
        assert_eq!(clm.group, 0);
        assert!((clm.x - 0.2).abs() < 1e-12 && (clm.y - 0.5).abs() < 1e-12);
        assert!((clm.x_sd.unwrap() - 0.02_f64.sqrt()).abs() < 1e-12);
        assert!((clm.y_sd.unwrap() - 0.02_f64.sqrt()).abs() < 1e-12);
        assert_eq!(dec.points[1].x_sd, None);
        // ul2 (0.2, 0.3) is dominated by clm (0.2, 0.5).
        assert_eq!(dec.frontier, [0, 1]);
        let enc = &p.facets[1];
        assert_eq!(enc.name.as_deref(), Some("arch=encdec"));
        assert_eq!(enc.points.len(), 1);
        assert_eq!(enc.points[0].group, 1, "sc keeps its index (and colour)");
        assert_eq!(enc.frontier, [0]);

        // Two group keys name points by both; no facet: one panel.
        let p = pareto(
            &all,
            "infill_em",
            "oneshot_em",
            &["objective".to_owned(), "arch".to_owned()],
            None,
            [false, false],
        )
        .unwrap();
        assert_eq!(p.facets.len(), 1);
        assert_eq!(p.facets[0].name, None);
        assert_eq!(p.groups[0], "objective=clm arch=decoder");
        assert_eq!(p.groups.len(), 4);

        let err = pareto(
            &all,
            "infill_em",
            "val_nll",
            &["objective".to_owned()],
            None,
            [false; 2],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "no input has both metrics `infill_em` and `val_nll`; the metrics present: \
             `infill_em`, `oneshot_em`"
        );
        let err = pareto(
            &all,
            "infill_em",
            "oneshot_em",
            &["mode".to_owned()],
            None,
            [false; 2],
        )
        .unwrap_err();
        assert!(err.contains("input `a` has no label `mode`"), "{err}");
    }

    #[test]
    fn default_layers_are_four_evenly_spaced_and_deduplicated() {
        assert_eq!(default_layers(&(0..=9).collect::<Vec<_>>()), [0, 3, 6, 9]);
        assert_eq!(default_layers(&[0, 1]), [0, 1]);
        assert_eq!(default_layers(&[0]), [0]);
        // Snapped to the layers present.
        assert_eq!(default_layers(&[0, 4, 8, 12]), [0, 4, 8, 12]);
        assert_eq!(default_layers(&[0, 5, 10]), [0, 5, 10]);
        assert!(default_layers(&[]).is_empty());
    }

    #[test]
    fn grid_lines_join_neighbours_and_break_at_holes() {
        // A 3×2 grid: 3 lines of fixed gi, 2 of fixed gj.
        let mut pts = Vec::new();
        for gi in 0..3 {
            for gj in 0..2 {
                pts.push((gi, gj, [gi as f64, gj as f64 * 10.0]));
            }
        }
        let lines = grid_lines(&pts);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], vec![(0.0, 0.0), (0.0, 10.0)]);
        assert_eq!(lines[3], vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]);
        // Removing (1, 0) breaks the gj = 0 line into two single points (dropped) and leaves
        // gi = 1 with one point (dropped).
        pts.retain(|&(i, j, _)| (i, j) != (1, 0));
        let lines = grid_lines(&pts);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(grid_spacing(&pts), Some(10.0));
    }

    #[test]
    fn ellipse_semi_axes_from_a_hand_worked_metric() {
        // g = [[2, 1], [1, 2]]: eigenvalues 3 along (1, 1)/√2 and 1 along (1, -1)/√2.
        let e = Ellipse::of_metric([2.0, 1.0, 2.0]).unwrap();
        assert!((e.angle - std::f64::consts::FRAC_PI_4).abs() < 1e-12);
        assert!((e.r1 - 1.0 / 3.0_f64.sqrt()).abs() < 1e-12);
        assert!((e.r2 - 1.0).abs() < 1e-12);
        // Diagonal: semi-axes 1/√4 along x, 1/√1 along y.
        let e = Ellipse::of_metric([4.0, 0.0, 1.0]).unwrap();
        assert!(e.angle.abs() < 1e-12 && (e.r1 - 0.5).abs() < 1e-12 && (e.r2 - 1.0).abs() < 1e-12);
        // Every outline point u satisfies uᵀ g u = 1 (checked against g directly).
        for g in [[2.0, 1.0, 2.0], [1.0, -0.3, 0.5], [0.2, 0.0, 5.0]] {
            let e = Ellipse::of_metric(g).unwrap();
            for (x, y) in e.outline([0.0, 0.0], 1.0, 12) {
                let q = g[0] * x * x + 2.0 * g[1] * x * y + g[2] * y * y;
                assert!((q - 1.0).abs() < 1e-9, "g = {g:?}: uᵀgu = {q}");
            }
        }
        // Singular, indefinite and non-finite metrics are degenerate.
        assert_eq!(Ellipse::of_metric([1.0, 1.0, 1.0]), None);
        assert_eq!(Ellipse::of_metric([1.0, 2.0, 1.0]), None);
        assert_eq!(Ellipse::of_metric([f64::NAN, 0.0, 1.0]), None);
        assert_eq!(Ellipse::of_metric([-1.0, 0.0, -1.0]), None);
    }

    #[test]
    fn metric_ellipses_are_scaled_to_the_grid_spacing_by_the_median() {
        let mk = |gi: i64, gj: i64, g: [f64; 3]| MetricPoint {
            layer: 0,
            gi,
            gj,
            x: [gi as f64 * 2.0, gj as f64 * 2.0],
            g,
        };
        let pts = [
            mk(0, 0, [1.0, 0.0, 1.0]),
            mk(1, 0, [4.0, 0.0, 4.0]),
            mk(0, 1, [f64::NAN, 0.0, 1.0]),
            mk(1, 1, [0.25, 0.0, 1.0]),
        ];
        let refs: Vec<&MetricPoint> = pts.iter().collect();
        let (outlines, degenerate) = metric_ellipses(&refs);
        assert_eq!(outlines.len(), 3);
        assert_eq!(degenerate, vec![[0.0, 2.0]]);
        // Largest semi-axes 1, 0.5 and 2 (g11 = 0.25 → 1/√0.25), median 1, spacing 2 → scale
        // 0.8: the unit circle at the origin has radius 0.8, the circle of g = 4I 0.4, and the
        // ellipse with semi-axis 2 is capped at half the spacing, 1.
        let r = |line: &Polyline, c: [f64; 2]| {
            line.iter()
                .map(|&(x, y)| ((x - c[0]).powi(2) + (y - c[1]).powi(2)).sqrt())
                .fold(0.0, f64::max)
        };
        assert!((r(&outlines[0], [0.0, 0.0]) - 0.8).abs() < 1e-9);
        assert!((r(&outlines[1], [2.0, 0.0]) - 0.4).abs() < 1e-9);
        assert!((r(&outlines[2], [2.0, 2.0]) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn layer_tables_are_read_and_checked() {
        let t = Table::new()
            .with_column("layer", vec![0_i64, 0, 1])
            .with_column("set", vec!["data", "grid", "data"])
            .with_column("point", vec![0_i64, 0, 0])
            .with_column("label", vec![Some(1_i64), None, Some(1)])
            .with_column("gi", vec![None, Some(0_i64), None])
            .with_column("gj", vec![None, Some(0_i64), None])
            .with_column("x0", vec![0.0_f64, 1.0, f64::NAN])
            .with_column("x1", vec![0.0_f64, 1.0, 2.0])
            .with_column("x2", vec![0.0_f64, 1.0, 2.0]);
        let l = layers_from_table(&t).unwrap();
        assert_eq!(l.dim, 3);
        assert_eq!(l.points.len(), 2, "the NaN row is skipped");
        assert!(l.points[1].grid);
        assert_eq!(l.present(), [0]);
        let bad = Table::new().with_column("layer", vec![0_i64]);
        assert_eq!(layers_from_table(&bad).unwrap_err(), "has no column `set`");
        let mut bad = t.clone();
        bad.columns[0].data = ColumnData::Float(vec![Some(0.0); 3]);
        assert_eq!(
            layers_from_table(&bad).unwrap_err(),
            "has column `layer` of type float, expected int"
        );
    }
}
