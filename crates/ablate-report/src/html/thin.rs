//! Long curves, thinned for the page. A sweep of many long runs (a `cmd` logging every step)
//! would otherwise put every point of every run in the page: 1,000 runs of 10,000 steps is tens
//! of millions of numbers, more than a browser opens comfortably, for a chart a thousand pixels
//! wide. A line of more than [`MAX_POINTS`] points keeps its first and last, and in each of
//! [`STRETCHES`] equal stretches between them the points holding its lowest and highest value
//! (and the lower band's lowest, the upper band's highest, and the first gap), in order: what
//! a pixel column would show, spikes and divergences included, which an even stride could
//! step over. The statistics are computed before, on every point.

use super::{CurveSeries, Report};

/// Lines up to this many points are sent whole.
pub const MAX_POINTS: usize = 1_000;
/// How many stretches a longer line is cut into (each keeps up to 5 points).
pub const STRETCHES: usize = 200;

/// Thins every curve of `report` (grouped series and each instance's own) longer than
/// [`MAX_POINTS`]; gives how many lines were thinned.
pub fn thin(report: &mut Report) -> usize {
    let mut thinned = 0;
    for set in &mut report.curves {
        for grouping in &mut set.groupings {
            for s in &mut grouping.series {
                thinned += usize::from(thin_series(s));
            }
        }
    }
    for i in &mut report.instances {
        for points in i.curves.values_mut() {
            let values: Vec<Option<f64>> = points.iter().map(|p| p.1).collect();
            let Some(keep) = keep(values.len(), &[(&values, Extreme::Both)]) else {
                continue;
            };
            *points = keep.iter().map(|&k| points[k]).collect();
            thinned += 1;
        }
    }
    thinned
}

fn thin_series(s: &mut CurveSeries) -> bool {
    let Some(keep) = keep(
        s.step.len(),
        &[
            (&s.mean, Extreme::Both),
            (&s.lo, Extreme::Min),
            (&s.hi, Extreme::Max),
        ],
    ) else {
        return false;
    };
    fn pick<T: Copy>(v: &[T], keep: &[usize]) -> Vec<T> {
        keep.iter().map(|&k| v[k]).collect()
    }
    s.step = pick(&s.step, &keep);
    s.mean = pick(&s.mean, &keep);
    s.lo = pick(&s.lo, &keep);
    s.hi = pick(&s.hi, &keep);
    true
}

#[derive(Clone, Copy)]
enum Extreme {
    Min,
    Max,
    Both,
}

/// The indices of a line of `len` points to keep (see the module's doc), in order; `None`
/// when the line is short enough to send whole. `series` are the line's values (and bands),
/// with the extremes each must keep.
fn keep(len: usize, series: &[(&[Option<f64>], Extreme)]) -> Option<Vec<usize>> {
    if len <= MAX_POINTS {
        return None;
    }
    let inner = len - 2;
    let mut keep = vec![0];
    let mut picked = Vec::new();
    for b in 0..STRETCHES {
        let (start, end) = (1 + b * inner / STRETCHES, 1 + (b + 1) * inner / STRETCHES);
        picked.clear();
        for &(values, extreme) in series {
            let mut low: Option<(usize, f64)> = None;
            let mut high: Option<(usize, f64)> = None;
            let mut gap = None;
            for (i, v) in values.iter().enumerate().take(end).skip(start) {
                match *v {
                    Some(v) => {
                        if low.is_none_or(|(_, l)| v < l) {
                            low = Some((i, v));
                        }
                        if high.is_none_or(|(_, h)| v > h) {
                            high = Some((i, v));
                        }
                    }
                    None => {
                        gap.get_or_insert(i);
                    }
                }
            }
            if matches!(extreme, Extreme::Min | Extreme::Both) {
                picked.extend(low.map(|p| p.0));
            }
            if matches!(extreme, Extreme::Max | Extreme::Both) {
                picked.extend(high.map(|p| p.0));
            }
            picked.extend(gap);
        }
        picked.sort_unstable();
        picked.dedup();
        keep.extend_from_slice(&picked);
    }
    keep.push(len - 1);
    Some(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::{CurveSet, Grouping, InstanceView};

    /// 10,000 steps of a slowly falling loss with noise, one spike (a divergence at step 6,543)
    /// and a gap (a step that logged nothing).
    fn long_line() -> Vec<(u64, Option<f64>)> {
        (0..10_000u64)
            .map(|s| {
                let v = match s {
                    6_543 => Some(50.0),
                    7_000 => None,
                    _ => Some(1.0 / (1.0 + s as f64 / 1_000.0) + 0.01 * ((s * 7_919) % 13) as f64),
                };
                (s, v)
            })
            .collect()
    }

    #[test]
    fn a_long_line_keeps_its_ends_extremes_spike_and_gap_in_order() {
        let line = long_line();
        let mut report = Report {
            instances: vec![InstanceView {
                curves: [("loss".to_owned(), line.clone())].into(),
                ..InstanceView::default()
            }],
            ..Report::default()
        };
        assert_eq!(thin(&mut report), 1);
        let kept = &report.instances[0].curves["loss"];
        assert!(
            kept.len() <= 2 + 3 * STRETCHES && kept.len() < MAX_POINTS,
            "{}",
            kept.len()
        );
        assert_eq!(kept.first(), line.first());
        assert_eq!(kept.last(), line.last());
        assert!(
            kept.windows(2).all(|w| w[0].0 < w[1].0),
            "in order, no repeats"
        );
        assert!(kept.contains(&(6_543, Some(50.0))), "the spike");
        assert!(kept.contains(&(7_000, None)), "the gap");
        // Every kept point is a point of the line, and every stretch's lowest value is kept.
        assert!(kept.iter().all(|p| line[p.0 as usize] == *p));
        let lowest = line
            .iter()
            .filter_map(|p| p.1)
            .fold(f64::INFINITY, f64::min);
        assert!(kept.iter().any(|p| p.1 == Some(lowest)));
    }

    #[test]
    fn short_lines_and_a_series_band_are_kept_as_they_should_be() {
        let short: Vec<(u64, Option<f64>)> =
            (0..MAX_POINTS as u64).map(|s| (s, Some(1.0))).collect();
        let mut report = Report {
            instances: vec![InstanceView {
                curves: [("acc".to_owned(), short.clone())].into(),
                ..InstanceView::default()
            }],
            ..Report::default()
        };
        assert_eq!(thin(&mut report), 0);
        assert_eq!(report.instances[0].curves["acc"], short);

        // A band whose widest point is away from the mean's extremes keeps it.
        let line = long_line();
        let n = line.len();
        let mean: Vec<Option<f64>> = line.iter().map(|p| p.1).collect();
        let mut lo: Vec<Option<f64>> = mean.iter().map(|m| m.map(|m| m - 0.1)).collect();
        let mut hi = lo.iter().map(|l| l.map(|l| l + 0.2)).collect::<Vec<_>>();
        lo[1_234] = Some(-5.0);
        hi[1_235] = Some(9.0);
        let mut report = Report {
            curves: vec![CurveSet {
                stage: "train".into(),
                metric: "loss".into(),
                x: "step".into(),
                groupings: vec![Grouping {
                    by: "config".into(),
                    series: vec![CurveSeries {
                        label: "a".into(),
                        n: 3,
                        step: (0..n as u64).collect(),
                        mean,
                        lo,
                        hi,
                        pruned: false,
                        n_pruned: 0,
                    }],
                }],
            }],
            ..Report::default()
        };
        assert_eq!(thin(&mut report), 1);
        let s = &report.curves[0].groupings[0].series[0];
        assert!(s.step.len() < MAX_POINTS);
        assert_eq!([s.mean.len(), s.lo.len(), s.hi.len()], [s.step.len(); 3]);
        let at = |step: u64| s.step.iter().position(|&x| x == step);
        assert_eq!(at(1_234).map(|i| s.lo[i]), Some(Some(-5.0)));
        assert_eq!(at(1_235).map(|i| s.hi[i]), Some(Some(9.0)));
        assert!(at(6_543).is_some() && at(7_000).is_some());
    }
}
