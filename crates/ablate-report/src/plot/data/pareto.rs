//! Pareto plots: each group's mean point in two metrics (with its sample standard
//! deviations), faceted by a label, and the frontier of the points no other point beats in both,
//! as a staircase.

use super::*;

/// One group's point: the means of both metrics over its observations, with their sample
/// standard deviations (`None` for a single observation).
#[derive(Debug, Clone, PartialEq)]
pub struct ParetoPoint {
    /// Index into [`Pareto::groups`].
    pub group: usize,
    pub x: f64,
    pub y: f64,
    pub x_sd: Option<f64>,
    pub y_sd: Option<f64>,
}

/// The points of one facet and its frontier: the indices of its non-dominated points, in the
/// order the step line joins them.
#[derive(Debug, Clone, PartialEq)]
pub struct ParetoFacet {
    /// `arch=decoder`; `None` without `facet`.
    pub name: Option<String>,
    pub points: Vec<ParetoPoint>,
    pub frontier: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pareto {
    /// Group names (`ul2`, or `objective=ul2 mode_tokens=true` for several keys), shared by
    /// the facets so a group keeps its colour.
    pub groups: Vec<String>,
    /// The names the points are labelled with, per group: short enough to sit beside a point
    /// among its neighbours (`ul2 +mode_tokens`, see [`short_labels`]).
    pub labels: Vec<String>,
    /// What the point labels are (`labels: objective; +mode_tokens: mode_tokens=true`).
    pub legend: String,
    pub facets: Vec<ParetoFacet>,
}

/// One point per value of the `group` labels (per value of `facet`), each the mean ± sd of
/// metrics `x` and `y` over the observations with those labels (typically the seeds).
/// Inputs without both metrics are skipped. `lower` says, per axis, that lower is better.
pub fn pareto(
    obs: &[FinalMetrics],
    x: &str,
    y: &str,
    group: &[String],
    facet: Option<&str>,
    lower: [bool; 2],
) -> Result<Pareto, String> {
    let mut kept: Vec<(Option<&Value>, Value, f64, f64)> = Vec::new();
    for o in obs {
        let (Some(&xv), Some(&yv)) = (o.metrics.get(x), o.metrics.get(y)) else {
            continue;
        };
        let key = group
            .iter()
            .map(|g| o.label(g).cloned())
            .collect::<Result<Vec<Value>, String>>()?;
        let fv = facet.map(|f| o.label(f)).transpose()?;
        kept.push((fv, Value::Array(key), xv, yv));
    }
    if kept.is_empty() {
        return Err(format!(
            "no input has both metrics `{x}` and `{y}`; the metrics present: {}",
            metrics_present(obs)
        ));
    }
    let group_values: Vec<&Value> = kept.iter().map(|(_, g, _, _)| g).collect();
    let (group_keys, _) = ordered_keys(&group_values);
    let facet_values: Vec<&Value> = kept.iter().filter_map(|(f, _, _, _)| *f).collect();
    let (facet_keys, _) = ordered_keys(&facet_values);

    let n_facets = facet_keys.len().max(1);
    let mut cells: Vec<Vec<Vec<(f64, f64)>>> = vec![vec![Vec::new(); group_keys.len()]; n_facets];
    for (f, g, xv, yv) in &kept {
        let fi = f.map_or(0, |f| position(&facet_keys, f));
        cells[fi][position(&group_keys, g)].push((*xv, *yv));
    }
    let (labels, legend) = short_labels(group, &group_keys);
    let groups = group_keys
        .iter()
        .map(|key| {
            let values = key.as_array().expect("group keys are arrays");
            if let [one] = values.as_slice() {
                label_text(one)
            } else {
                let pairs: Vec<(String, Value)> =
                    group.iter().cloned().zip(values.iter().cloned()).collect();
                labels_text(&pairs)
            }
        })
        .collect();
    let facets = cells
        .into_iter()
        .enumerate()
        .map(|(fi, row)| {
            let points: Vec<ParetoPoint> = row
                .into_iter()
                .enumerate()
                .filter(|(_, vals)| !vals.is_empty())
                .map(|(gi, vals)| {
                    let xs: Vec<f64> = vals.iter().map(|v| v.0).collect();
                    let ys: Vec<f64> = vals.iter().map(|v| v.1).collect();
                    let ((x, x_sd), (y, y_sd)) = (mean_std(&xs), mean_std(&ys));
                    ParetoPoint {
                        group: gi,
                        x,
                        y,
                        x_sd,
                        y_sd,
                    }
                })
                .collect();
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.y)).collect();
            ParetoFacet {
                name: facet
                    .zip(facet_keys.get(fi))
                    .map(|(f, v)| format!("{f}={}", label_text(v))),
                frontier: frontier(&xy, lower),
                points,
            }
        })
        .collect();
    Ok(Pareto {
        groups,
        labels,
        legend,
        facets,
    })
}

/// Point labels short enough to sit beside a point among its neighbours, and the line that
/// says what they are. Full names (`objective=ul2 mode_tokens=true`) are 30 characters, so
/// several points within a few pixels of each other (as UL2's objectives are) cannot all be
/// named legibly. A key whose value is the same for every group is left out; a varying boolean
/// shows as `+key` where true and not at all where false; any other value as its text. Where
/// that leaves a name empty or two names equal, the full names stay.
pub fn short_labels(group: &[String], keys: &[&Value]) -> (Vec<String>, String) {
    let values: Vec<&[Value]> = keys
        .iter()
        .map(|k| k.as_array().map_or(&[][..], Vec::as_slice))
        .collect();
    let varies = |i: usize| values.iter().any(|v| v.get(i) != values[0].get(i));
    let shown: Vec<usize> = (0..group.len()).filter(|&i| varies(i)).collect();
    let short: Vec<String> = values
        .iter()
        .map(|v| {
            shown
                .iter()
                .filter_map(|&i| match v.get(i) {
                    Some(Value::Bool(true)) => Some(format!("+{}", group[i])),
                    Some(Value::Bool(false)) | None => None,
                    Some(other) => Some(label_text(other)),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let unique = short.iter().collect::<BTreeSet<_>>().len() == short.len();
    if short.iter().any(String::is_empty) || !unique {
        let full = values
            .iter()
            .map(|v| {
                let pairs: Vec<(String, Value)> = group.iter().cloned().zip(v.to_vec()).collect();
                labels_text(&pairs)
            })
            .collect();
        return (full, String::new());
    }
    let is_bool = |i: usize| {
        values
            .iter()
            .all(|v| matches!(v.get(i), Some(Value::Bool(_))))
    };
    let named: Vec<&str> = shown
        .iter()
        .filter(|&&i| !is_bool(i))
        .map(|&i| group[i].as_str())
        .collect();
    let flags: Vec<String> = shown
        .iter()
        .filter(|&&i| is_bool(i))
        .map(|&i| format!("+{0} where {0}=true", group[i]))
        .collect();
    let legend = match (named.is_empty(), flags.is_empty()) {
        (false, true) => format!("labels: {}", named.join(", ")),
        (false, false) => format!("labels: {} ({})", named.join(", "), flags.join(", ")),
        (true, _) => format!("labels: {}", flags.join(", ")),
    };
    (short, legend)
}

/// The indices of the points no other point dominates — at least as good on both axes and
/// better on one, "good" being higher unless `lower` says lower for that axis — sorted along
/// the frontier (by x from worst to best, ties kept in input order). Equal points do not
/// dominate each other, so both stay; points with a NaN are never on it.
pub fn frontier(points: &[(f64, f64)], lower: [bool; 2]) -> Vec<usize> {
    let orient =
        |&(x, y): &(f64, f64)| (if lower[0] { -x } else { x }, if lower[1] { -y } else { y });
    let pts: Vec<(f64, f64)> = points.iter().map(orient).collect();
    let valid = |p: &(f64, f64)| !p.0.is_nan() && !p.1.is_nan();
    let dominates =
        |a: (f64, f64), b: (f64, f64)| a.0 >= b.0 && a.1 >= b.1 && (a.0 > b.0 || a.1 > b.1);
    let mut on: Vec<usize> = (0..pts.len())
        .filter(|&i| valid(&pts[i]))
        .filter(|&i| !pts.iter().any(|&q| valid(&q) && dominates(q, pts[i])))
        .collect();
    on.sort_by(|&a, &b| pts[a].0.total_cmp(&pts[b].0));
    on
}

/// The step line through frontier points (in [`frontier`]'s order): from each point straight
/// along the y axis to the next one's y, then along the x axis to it — the edge of the region
/// the frontier dominates, whichever way each axis is better.
pub fn staircase(points: &[(f64, f64)]) -> Polyline {
    let mut line = Vec::with_capacity(2 * points.len());
    for (i, &p) in points.iter().enumerate() {
        if i > 0 {
            line.push((points[i - 1].0, p.1));
        }
        line.push(p);
    }
    line
}
