//! Evaluating a parsed claim over observations (labels + final metrics of each input).
//!
//! An aggregate reads `metric` from the instances its filters select that have the metric; the
//! claim is undecided (not false) when that leaves nothing, when a selected value is NaN, when
//! `std` has fewer than two values, or when a side evaluates to NaN (`log(-1)`, `0/0`).
//! Comparisons are exact (`==` on floats): write `abs(a - b) <= 1e-3` for a tolerance.
//!
//! With `by`, the selected instances that have the metric are grouped by their values of the
//! `by` labels (numbers compared as numbers) and the aggregate runs over the groups' means;
//! an instance without one of those labels makes the claim undecided.
//!
//! `diff(a vs b by k)` groups each side's values by `k` (the seed by default) as `by` does,
//! pairs the groups with the same labels, and is the mean over the pairs of (a − b); no pair
//! leaves the claim undecided.
//!
//! With `@ L%` (`diff(…) > c @ 95%`), the difference gets its L% bootstrap interval [low, high]
//! (expanded percentile, 10,000 resamples, seeded by the differences: [`crate::stats::paired`]
//! and [`crate::stats::bootstrap_mean`]) and the
//! verdict is three-way:
//! - **pass**: the whole interval is on the claimed side (`low > c` for `>`, `low >= c` for
//!   `>=`; `high < c`, `high <= c` for `<`, `<=`);
//! - **fail**: the point estimate (the mean difference) is not on the claimed side — the data
//!   point the other way, whatever the interval;
//! - **undecided**: the point estimate is on the claimed side but the interval reaches past `c`
//!   (more seeds may decide it), or there is one pair (no interval), or too few pairs for the
//!   level: a bootstrap interval lies within the range of the differences, which holds their
//!   mean at most 1 − 2^(1 − n) of the time for a symmetric spread
//!   ([`crate::stats::range_coverage`]), so 3 pairs cannot show 95% (only 75%), and a claim
//!   that passed on any 3 positive differences would pass one time in eight with no effect at
//!   all. The detail names the fewest pairs that can, and the level these can.

use std::collections::BTreeSet;

use crate::pivot::Observation;
use crate::stats::{Bootstrap, Interval, Paired, mean, mean_std, median, paired, percent};
use ablate_results::value::cmp_tuples;
use serde_json::Value;

use super::expr::{Agg, BinOp, Claim, Cmp, Diff, Expr, Filter, Func, Selection, Test};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Undecided,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Undecided => "undecided",
        }
    }
}

/// The verdict, each side's value where it could be computed, and a detail: the number of
/// values behind each aggregate, or why the claim is undecided.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub lhs: Option<f64>,
    pub rhs: Option<f64>,
    pub detail: String,
    /// For a claim with `@`: the interval of its `diff(…)` side (`None` for one pair).
    pub interval: Option<Interval>,
    /// For a claim with `@`: its confidence level (0.95).
    pub level: Option<f64>,
}

pub fn evaluate(claim: &Claim, obs: &[Observation]) -> Evaluation {
    if let Some(level) = claim.confidence {
        return with_confidence(claim, level, obs);
    }
    // What each aggregate ran over, for the detail: `3` values or `5 groups`.
    let mut counts: Vec<String> = Vec::new();
    let lhs = side(&claim.lhs, obs, &mut counts, "left");
    let rhs = side(&claim.rhs, obs, &mut counts, "right");
    match (lhs, rhs) {
        (Ok(a), Ok(b)) => {
            let verdict = if claim.cmp.holds(a, b) {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            let detail = if counts.is_empty() {
                "no aggregates".to_owned()
            } else {
                format!("n = {}", counts.join(", "))
            };
            Evaluation {
                verdict,
                lhs: Some(a),
                rhs: Some(b),
                detail,
                interval: None,
                level: None,
            }
        }
        (l, r) => {
            let why: Vec<String> = [&l, &r]
                .into_iter()
                .filter_map(|s| s.as_ref().err().cloned())
                .collect();
            Evaluation {
                verdict: Verdict::Undecided,
                lhs: l.ok(),
                rhs: r.ok(),
                detail: why.join("; "),
                interval: None,
                level: None,
            }
        }
    }
}

/// `diff(…) CMP bound @ level` (or `bound CMP diff(…) @ level`): the three-way rule in the
/// module's doc.
fn with_confidence(claim: &Claim, level: f64, obs: &[Observation]) -> Evaluation {
    let boot = Bootstrap {
        level,
        ..Bootstrap::default()
    };
    // Put the difference on the left: `c < diff` is `diff > c`.
    let (diff, bound, cmp, diff_left) = match (&claim.lhs, &claim.rhs) {
        (Expr::Diff(d), other) => (d, other, claim.cmp, true),
        (other, Expr::Diff(d)) => (d, other, flip(claim.cmp), false),
        _ => unreachable!("the parser checks that one side is a diff"),
    };
    let mut counts = Vec::new();
    let d = paired_diff(diff, obs, Some(boot));
    let c = side(
        bound,
        obs,
        &mut counts,
        if diff_left { "right" } else { "left" },
    );
    let (dv, cv) = (d.as_ref().ok().map(|p| p.mean), c.as_ref().ok().copied());
    let (lhs, rhs) = if diff_left { (dv, cv) } else { (cv, dv) };
    let (d, c) = match (d, c) {
        (Ok(d), Ok(c)) => (d, c),
        (d, c) => {
            let why: Vec<String> = [d.err(), c.err()].into_iter().flatten().collect();
            return Evaluation {
                verdict: Verdict::Undecided,
                lhs,
                rhs,
                detail: why.join("; "),
                interval: None,
                level: Some(level),
            };
        }
    };
    let pct = percent(level);
    let f = ablate_results::format_float;
    let pairs = format!("{} pair{}", d.n, if d.n == 1 { "" } else { "s" });
    let (verdict, detail) = if !cmp.holds(d.mean, c) {
        (
            Verdict::Fail,
            format!(
                "{pairs}; the mean difference {} is not {} {}",
                f(d.mean),
                cmp.symbol(),
                f(c)
            ),
        )
    } else {
        match (d.interval, crate::stats::range_coverage(d.n, level)) {
            (None, _) => (
                Verdict::Undecided,
                format!("{pairs}: no interval, and the claim asks {pct} confidence"),
            ),
            (Some(_), Some(most)) => {
                let enough = (d.n..).find(|&n| crate::stats::range_coverage(n, level).is_none());
                (
                    Verdict::Undecided,
                    format!(
                        "{pairs} cannot show {pct} confidence: a bootstrap interval lies within \
                         the range of the differences, which holds their mean at most {} of the \
                         time; {} pairs can, or ask @ {}",
                        percent(most),
                        enough.expect("some n reaches any level below 1"),
                        percent(most)
                    ),
                )
            }
            (Some(i), None) => {
                let inside = match cmp {
                    Cmp::Gt => i.low > c,
                    Cmp::Ge => i.low >= c,
                    Cmp::Lt => i.high < c,
                    Cmp::Le => i.high <= c,
                    Cmp::Eq | Cmp::Ne => unreachable!("the parser refuses == and != with @"),
                };
                let interval = format!("{pct} interval [{}, {}]", f(i.low), f(i.high));
                if inside {
                    (
                        Verdict::Pass,
                        format!("{pairs}; the {interval} is {} {}", cmp.symbol(), f(c)),
                    )
                } else {
                    (
                        Verdict::Undecided,
                        format!(
                            "{pairs}; the mean difference is {} {} but the {interval} reaches \
                             past it: more seeds may decide it",
                            cmp.symbol(),
                            f(c)
                        ),
                    )
                }
            }
        }
    };
    Evaluation {
        verdict,
        lhs,
        rhs,
        detail,
        interval: d.interval,
        level: Some(level),
    }
}

fn flip(cmp: Cmp) -> Cmp {
    match cmp {
        Cmp::Gt => Cmp::Lt,
        Cmp::Lt => Cmp::Gt,
        Cmp::Ge => Cmp::Le,
        Cmp::Le => Cmp::Ge,
        Cmp::Eq | Cmp::Ne => cmp,
    }
}

/// The paired difference of a `diff(…)`: each side grouped by `diff.by` and averaged per
/// group, groups with the same labels paired.
fn paired_diff(
    diff: &Diff,
    obs: &[Observation],
    boot: Option<Bootstrap>,
) -> Result<Paired, String> {
    let side = |sel: &Selection| -> Result<Vec<(Vec<&Value>, f64)>, String> {
        let grouping = Selection {
            by: diff.by.clone(),
            ..sel.clone()
        };
        let chosen = select(sel, obs)?;
        group_means(&grouping, &chosen)
    };
    let (a, b) = (side(&diff.left)?, side(&diff.right)?);
    paired(&a, &b, |x, y| cmp_tuples(x, y), boot).map_err(|_| {
        // Groups are distinct by construction: the only way to fail is no shared labels.
        format!(
            "`{}`: the two sides share no `{}` ({} and {} groups)",
            diff.text,
            diff.by.join(", "),
            a.len(),
            b.len()
        )
    })
}

fn side(
    e: &Expr,
    obs: &[Observation],
    counts: &mut Vec<String>,
    which: &str,
) -> Result<f64, String> {
    let x = eval(e, obs, counts)?;
    if x.is_nan() {
        return Err(format!("the {which} side is NaN"));
    }
    Ok(x)
}

fn eval(e: &Expr, obs: &[Observation], counts: &mut Vec<String>) -> Result<f64, String> {
    Ok(match e {
        Expr::Num(x) => *x,
        Expr::Neg(a) => -eval(a, obs, counts)?,
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval(a, obs, counts)?, eval(b, obs, counts)?);
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
            }
        }
        Expr::Func(f, a) => {
            let a = eval(a, obs, counts)?;
            match f {
                Func::Abs => a.abs(),
                Func::Log => a.ln(),
                Func::Exp => a.exp(),
                Func::Sqrt => a.sqrt(),
            }
        }
        Expr::Agg(agg, sel) => {
            let chosen = select(sel, obs)?;
            let values = if sel.by.is_empty() {
                counts.push(chosen.len().to_string());
                chosen.into_iter().map(|(_, x)| x).collect()
            } else {
                let means: Vec<f64> = group_means(sel, &chosen)?
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect();
                counts.push(format!("{} groups", means.len()));
                means
            };
            aggregate(*agg, &values, sel)?
        }
        Expr::Diff(diff) => {
            let d = paired_diff(diff, obs, None)?;
            counts.push(format!("{} pairs", d.n));
            d.mean
        }
    })
}

/// The means of `chosen`'s values per distinct combination of the `sel.by` labels, with those
/// labels, in first-seen order.
fn group_means<'a>(
    sel: &Selection,
    chosen: &[(&'a Observation, f64)],
) -> Result<Vec<(Vec<&'a Value>, f64)>, String> {
    let mut groups: Vec<(Vec<&Value>, f64, usize)> = Vec::new();
    for (o, x) in chosen {
        let mut key = Vec::with_capacity(sel.by.len());
        for k in &sel.by {
            let Some(v) = o.labels.get(k) else {
                let lacking = chosen
                    .iter()
                    .filter(|(o, _)| !o.labels.contains_key(k))
                    .count();
                return Err(format!(
                    "`{}`: {lacking} of the {} selected instances have no label `{k}` to group by",
                    sel.text,
                    chosen.len()
                ));
            };
            key.push(v);
        }
        match groups
            .iter_mut()
            .find(|(g, _, _)| g.iter().zip(&key).all(|(a, b)| same(a, b)))
        {
            Some((_, sum, n)) => {
                *sum += x;
                *n += 1;
            }
            None => groups.push((key, *x, 1)),
        }
    }
    Ok(groups
        .into_iter()
        .map(|(key, sum, n)| (key, sum / n as f64))
        .collect())
}

/// The selected observations that have `sel.metric`, with its value, or why there are none.
/// A selection that lost instances (they failed, were skipped, or diverged: #21) decides
/// nothing: the claim is about all of them, and what the rest say may not hold for the whole.
fn select<'a>(
    sel: &Selection,
    obs: &'a [Observation],
) -> Result<Vec<(&'a Observation, f64)>, String> {
    let chosen: Vec<&Observation> = obs
        .iter()
        .filter(|o| sel.filters.iter().all(|f| matches(f, &o.labels)))
        .collect();
    if chosen.is_empty() {
        return Err(format!("`{}`: {}", sel.text, why_empty(&sel.filters, obs)));
    }
    let lost: Vec<&str> = chosen.iter().filter_map(|o| o.missing.as_deref()).collect();
    if !lost.is_empty() {
        return Err(format!(
            "`{}`: {} of the {} selected instances did not finish ({})",
            sel.text,
            lost.len(),
            chosen.len(),
            crate::pivot::gap_text(&lost)
        ));
    }
    let values: Vec<(&Observation, f64)> = chosen
        .iter()
        .filter_map(|o| Some((*o, o.metrics.get(&sel.metric).copied()?)))
        .collect();
    if values.is_empty() {
        let have: BTreeSet<&str> = chosen
            .iter()
            .flat_map(|o| o.metrics.keys().map(String::as_str))
            .collect();
        let whose = if sel.filters.is_empty() {
            "no instance".to_owned()
        } else {
            format!("none of the {} selected instances", chosen.len())
        };
        let guess = ablate_spec::did_you_mean(&sel.metric, have.iter().copied())
            .map(|m| {
                let n = chosen.iter().filter(|o| o.metrics.contains_key(m)).count();
                format!("; did you mean `{m}`? ({n} of {} have it)", chosen.len())
            })
            .unwrap_or_default();
        return Err(format!(
            "`{}`: {whose} has the metric `{}`{guess} (they have: {})",
            sel.text,
            sel.metric,
            list(have.into_iter().map(str::to_owned))
        ));
    }
    let nans = values.iter().filter(|(_, x)| x.is_nan()).count();
    if nans > 0 {
        return Err(format!(
            "`{}`: `{}` is NaN in {nans} of {} instance{}",
            sel.text,
            sel.metric,
            values.len(),
            if values.len() == 1 { "" } else { "s" }
        ));
    }
    Ok(values)
}

fn aggregate(agg: Agg, v: &[f64], sel: &Selection) -> Result<f64, String> {
    Ok(match agg {
        Agg::Mean => mean(v),
        Agg::Sum => v.iter().sum(),
        Agg::Count => v.len() as f64,
        Agg::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
        Agg::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Agg::Median => median(v),
        // Sample standard deviation (n − 1), as `report.table`'s mean_std.
        Agg::Std => mean_std(v).1.ok_or_else(|| {
            format!(
                "`{}`: the standard deviation of one value is undefined",
                sel.text
            )
        })?,
    })
}

/// Whether an instance's labels pass a filter: JSON equality, numbers compared numerically
/// (`1 == 1.0`); a key the instance lacks fails `=` and `in` and passes `!=`.
pub fn matches(f: &Filter, labels: &std::collections::BTreeMap<String, Value>) -> bool {
    let label = labels.get(&f.key);
    match (&f.test, label) {
        (Test::Eq(v), Some(l)) => same(l, v),
        (Test::Ne(v), Some(l)) => !same(l, v),
        (Test::In(vs), Some(l)) => vs.iter().any(|v| same(l, v)),
        (Test::Ne(_), None) => true,
        (Test::Eq(_) | Test::In(_), None) => false,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// Why no instance passes `filters`: a key no instance has, a value no instance has, or a
/// combination that never occurs.
fn why_empty(filters: &[Filter], obs: &[Observation]) -> String {
    if obs.is_empty() {
        return "there are no instances".into();
    }
    for f in filters {
        if !obs.iter().any(|o| o.labels.contains_key(&f.key)) {
            let keys: BTreeSet<&str> = obs
                .iter()
                .flat_map(|o| o.labels.keys().map(String::as_str))
                .collect();
            return format!(
                "no instance has the label `{}` (labels: {})",
                f.key,
                list(keys.into_iter().map(str::to_owned))
            );
        }
        if !obs.iter().any(|o| matches(f, &o.labels)) {
            let mut seen: Vec<&Value> = Vec::new();
            for v in obs.iter().filter_map(|o| o.labels.get(&f.key)) {
                if !seen.iter().any(|s| same(s, v)) {
                    seen.push(v);
                }
            }
            return format!(
                "no instance has `{f}` (`{}` takes: {})",
                f.key,
                list(seen.into_iter().map(Value::to_string))
            );
        }
    }
    let all: Vec<String> = filters.iter().map(ToString::to_string).collect();
    format!("no instance has `{}` together", all.join(", "))
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::expr::parse;
    use super::*;
    use serde_json::json;

    fn obs(labels: Value, metrics: &[(&str, f64)]) -> Observation {
        Observation {
            labels: serde_json::from_value(labels).unwrap(),
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            missing: None,
        }
    }

    /// Two weight-sharing settings × two seeds, as a `report.claims` stage would see them.
    fn sample() -> Vec<Observation> {
        vec![
            obs(
                json!({"weights": "shared", "steps": 8, "seed": 0, "lipschitz": null}),
                &[("acc", 0.9), ("params", 10.0)],
            ),
            obs(
                json!({"weights": "shared", "steps": 8, "seed": 1, "lipschitz": null}),
                &[("acc", 0.8), ("params", 10.0)],
            ),
            obs(
                json!({"weights": "unshared", "steps": 8.0, "seed": 0, "lipschitz": 0.5}),
                &[("acc", 0.7), ("params", 80.0)],
            ),
            obs(
                json!({"weights": "unshared", "steps": 4, "seed": 1}),
                &[("acc", 0.6), ("params", 40.0), ("nan_metric", f64::NAN)],
            ),
        ]
    }

    fn run(claim: &str) -> Evaluation {
        evaluate(&parse(claim).unwrap(), &sample())
    }

    fn value(expr: &str) -> f64 {
        let e = run(&format!("{expr} == 0"));
        assert_ne!(e.verdict, Verdict::Undecided, "{expr}: {}", e.detail);
        e.lhs.unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn each_aggregate() {
        assert!(close(value("mean(acc)"), 0.75));
        assert!(close(value("sum(acc)"), 3.0));
        assert!(close(value("count(acc)"), 4.0));
        assert!(close(value("min(acc)"), 0.6));
        assert!(close(value("max(acc)"), 0.9));
        assert!(close(value("median(acc)"), 0.75));
        assert!(close(value("median(acc | seed=0, weights=shared)"), 0.9));
        assert!(close(value("median(params | steps != 4)"), 10.0));
        // Sample std of 0.9, 0.8, 0.7, 0.6: sqrt(0.05 / 3).
        assert!(close(value("std(acc)"), (0.05_f64 / 3.0).sqrt()));
        assert!(close(
            value("std(acc | weights=shared)"),
            (0.005_f64).sqrt()
        ));
    }

    #[test]
    fn arithmetic_and_functions() {
        assert!(close(value("2 * mean(acc) - 1 / 4"), 1.25));
        assert!(close(value("-max(acc) + abs(-2)"), 1.1));
        assert!(close(value("sqrt(16) * exp(0) + log(1)"), 4.0));
        assert!(close(
            value("max(params | weights=shared) / min(params | weights=unshared)"),
            0.25
        ));
    }

    #[test]
    fn each_comparison_passes_and_fails() {
        let cases = [
            ("1 >= 1", Verdict::Pass),
            ("1 >= 2", Verdict::Fail),
            ("1 <= 1", Verdict::Pass),
            ("2 <= 1", Verdict::Fail),
            ("2 > 1", Verdict::Pass),
            ("1 > 1", Verdict::Fail),
            ("1 < 2", Verdict::Pass),
            ("1 < 1", Verdict::Fail),
            ("0.1 + 0.2 == 0.3", Verdict::Fail),
            ("0.5 + 0.25 == 0.75", Verdict::Pass),
            ("1 != 2", Verdict::Pass),
            ("1 != 1", Verdict::Fail),
            ("1 / 0 > 1e300", Verdict::Pass),
        ];
        for (claim, verdict) in cases {
            let e = run(claim);
            assert_eq!(e.verdict, verdict, "{claim}");
            assert_eq!(e.detail, "no aggregates");
        }
    }

    #[test]
    fn paper_shaped_claims() {
        let e = run("mean(acc | weights=shared) >= mean(acc | weights=unshared)");
        assert_eq!(e.verdict, Verdict::Pass);
        assert!(close(e.lhs.unwrap(), 0.85) && close(e.rhs.unwrap(), 0.65));
        assert_eq!(e.detail, "n = 2, 2");
        let e = run("max(params | weights=shared) <= 0.1 * min(params | weights=unshared)");
        assert_eq!(e.verdict, Verdict::Fail);
        assert_eq!((e.lhs, e.rhs), (Some(10.0), Some(4.0)));
        let e =
            run("mean(acc | weights in [unshared, other]) < 0.5 * mean(acc | weights='shared')");
        assert_eq!(e.verdict, Verdict::Fail);
    }

    #[test]
    fn numbers_match_numerically_and_types_strictly() {
        // `steps: 8` and `steps: 8.0` are the same label value; the string "8" is not.
        assert_eq!(value("count(acc | steps=8)"), 3.0);
        assert_eq!(value("count(acc | steps=8.0)"), 3.0);
        assert_eq!(value("count(acc | steps in [4, 8.0])"), 4.0);
        assert_eq!(value("count(acc | steps!=8)"), 1.0);
        let e = run("count(acc | steps='8') > 0");
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "`count(acc | steps='8')`: no instance has `steps=\"8\"` (`steps` takes: 8, 4)"
        );
        assert_eq!(value("count(acc | lipschitz=0.5)"), 1.0);
    }

    #[test]
    fn null_and_absent_labels() {
        // `lipschitz` is null in two instances, 0.5 in one, absent in the fourth: `=null`
        // selects the nulls only; `!=null` selects the 0.5 and the instance without the key.
        assert_eq!(value("count(acc | lipschitz=null)"), 2.0);
        assert_eq!(value("count(acc | lipschitz!=null)"), 2.0);
        assert_eq!(value("count(acc | lipschitz in [null, 0.5])"), 3.0);
        assert_eq!(value("count(acc | lipschitz!=0.5)"), 3.0);
    }

    #[test]
    fn empty_selections_are_undecided_with_a_reason() {
        let e = run("mean(acc | weights=shard) > 0");
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "`mean(acc | weights=shard)`: no instance has `weights=\"shard\"` (`weights` takes: \"shared\", \"unshared\")"
        );
        let e = run("mean(acc | weightz=shared) > mean(acc)");
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(e.lhs, None);
        assert!(close(e.rhs.unwrap(), 0.75));
        assert_eq!(
            e.detail,
            "`mean(acc | weightz=shared)`: no instance has the label `weightz` (labels: lipschitz, seed, steps, weights)"
        );
        let e = run("count(acc | weights=unshared, steps=8, seed=1) > 0");
        assert_eq!(
            e.detail,
            "`count(acc | weights=unshared, steps=8, seed=1)`: no instance has `weights=\"unshared\", steps=8, seed=1` together"
        );
        let e = evaluate(&parse("mean(acc) > 0").unwrap(), &[]);
        assert_eq!(e.detail, "`mean(acc)`: there are no instances");
    }

    /// #21: a selection with an instance that failed or diverged is undecided, saying so; one
    /// without is decided as before.
    #[test]
    fn a_selection_that_lost_instances_is_undecided() {
        let mut obs = sample();
        let mut lost = obs[0].clone();
        lost.metrics.clear();
        lost.missing = Some("failed".into());
        obs.push(lost);
        let mut diverged = obs[1].clone();
        diverged.missing = Some("diverged".into());
        obs.push(diverged);
        let claim = |text: &str| evaluate(&parse(text).unwrap(), &obs);
        let e = claim("mean(acc | weights=shared) > 0");
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "`mean(acc | weights=shared)`: 2 of the 4 selected instances did not finish (1 \
             diverged, 1 failed)"
        );
        assert_ne!(
            claim("mean(acc | weights=unshared) > 0").verdict,
            Verdict::Undecided
        );
    }

    #[test]
    fn a_missing_metric_is_undecided_and_lists_the_metrics() {
        let e = run("mean(f1) > 0.5");
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "`mean(f1)`: no instance has the metric `f1` (they have: acc, nan_metric, params)"
        );
        let e = run("mean(nan_metric | weights=shared) > 0 ");
        assert_eq!(
            e.detail,
            "`mean(nan_metric | weights=shared)`: none of the 2 selected instances has the metric `nan_metric` (they have: acc, params)"
        );
        // Both sides undecided: both reasons.
        let e = run("mean(acx) > 0");
        assert_eq!(
            e.detail,
            "`mean(acx)`: no instance has the metric `acx`; did you mean `acc`? (4 of 4 have it) \
             (they have: acc, nan_metric, params)"
        );
        let e = run("mean(x) > mean(y)");
        assert_eq!(e.detail.matches("no instance has the metric").count(), 2);
    }

    /// A UL2-shaped decoder sweep: objectives × two seeds, the mixture with mode tokens.
    fn ul2() -> Vec<Observation> {
        let o = |objective: &str, seed: i64, infill: f64, oneshot: f64| {
            let mut labels = json!({"objective": objective, "arch": "decoder", "seed": seed});
            let mut metrics = vec![("infill_em", infill), ("oneshot_em", oneshot)];
            if objective == "ul2" {
                labels["mode_tokens"] = json!(true);
                metrics.push(("infill_em_wrong_mode", 0.3));
            }
            obs(labels, &metrics)
        };
        vec![
            o("clm", 0, 0.1, 0.5),
            o("clm", 1, 0.2, 0.6),
            o("sc", 0, 0.6, 0.1),
            o("sc", 1, 0.8, 0.1),
            o("ul2", 0, 0.6, 0.5),
            o("ul2", 1, 0.7, 0.54),
        ]
    }

    fn ul2_run(claim: &str) -> Evaluation {
        evaluate(&parse(claim).unwrap(), &ul2())
    }

    fn ul2_value(expr: &str) -> f64 {
        let e = ul2_run(&format!("{expr} == 0"));
        assert_ne!(e.verdict, Verdict::Undecided, "{expr}: {}", e.detail);
        e.lhs.unwrap()
    }

    #[test]
    fn by_aggregates_over_group_means() {
        // Objective means of infill_em: clm 0.15, sc 0.7, ul2 0.65.
        assert!(close(
            ul2_value("max(infill_em | arch=decoder by objective)"),
            0.7
        ));
        assert!(close(ul2_value("min(infill_em by objective)"), 0.15));
        assert!(close(ul2_value("mean(infill_em by objective)"), 0.5));
        assert!(close(ul2_value("median(infill_em by objective)"), 0.65));
        assert!(close(ul2_value("sum(infill_em by objective)"), 1.5));
        assert_eq!(ul2_value("count(infill_em by objective)"), 3.0);
        assert_eq!(ul2_value("count(infill_em by objective, seed)"), 6.0);
        // Sample std of 0.15, 0.7, 0.65 (mean 0.5): sqrt((0.1225 + 0.04 + 0.0225) / 2).
        assert!(close(
            ul2_value("std(infill_em by objective)"),
            (0.0925_f64).sqrt()
        ));
        // Only the instances with the metric are grouped: the wrong-mode score is ul2's alone.
        assert_eq!(ul2_value("count(infill_em_wrong_mode by objective)"), 1.0);
    }

    #[test]
    fn the_ul2_claims() {
        let pass = |claim: &str| {
            let e = ul2_run(claim);
            assert_eq!(e.verdict, Verdict::Pass, "{claim}: {e:?}");
            e
        };
        // SC is strong at infilling and weak at one-shot generation, CLM the reverse.
        pass(
            "mean(infill_em | objective=sc, arch=decoder) > mean(infill_em | objective=clm, arch=decoder)",
        );
        pass(
            "mean(oneshot_em | objective=clm, arch=decoder) > mean(oneshot_em | objective=sc, arch=decoder)",
        );
        // The mixture is within 10% of the best objective on both.
        let e = pass(
            "mean(infill_em | objective=ul2) >= 0.9 * max(infill_em | arch=decoder by objective)",
        );
        assert!(close(e.lhs.unwrap(), 0.65) && close(e.rhs.unwrap(), 0.63));
        assert_eq!(e.detail, "n = 2, 3 groups");
        let e = pass(
            "mean(oneshot_em | objective=ul2) >= 0.9 * max(oneshot_em | arch=decoder by objective)",
        );
        assert!(close(e.rhs.unwrap(), 0.9 * 0.55));
        // Without `by`, `max` is the best single seed (sc's 0.8), a different claim.
        let e = ul2_run("mean(infill_em | objective=ul2) >= 0.9 * max(infill_em | arch=decoder)");
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(close(e.rhs.unwrap(), 0.72));
        // The right mode token beats a wrong one.
        pass(
            "mean(infill_em | objective=ul2, mode_tokens=true) > mean(infill_em_wrong_mode | objective=ul2, mode_tokens=true)",
        );
    }

    #[test]
    fn by_without_the_label_or_with_one_group_is_undecided() {
        let e = ul2_run("max(infill_em by mode_tokens) > 0");
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "`max(infill_em by mode_tokens)`: 4 of the 6 selected instances have no label \
             `mode_tokens` to group by"
        );
        let e = ul2_run("std(infill_em | objective=sc by objective) > 0");
        assert_eq!(
            e.detail,
            "`std(infill_em | objective=sc by objective)`: the standard deviation of one value is undefined"
        );
    }

    /// Shared beats unshared by `gap[seed]` on each seed, and each seed moves both (seed 2 is
    /// hard): the unpaired means differ by the mean gap, with a spread across seeds of ~0.13.
    fn seeded(gaps: &[f64]) -> Vec<Observation> {
        let mut out = Vec::new();
        let bases = [0.9, 0.8, 0.6, 0.85, 0.7, 0.95, 0.75, 0.65];
        for (seed, (base, gap)) in bases.iter().zip(gaps).enumerate() {
            out.push(obs(
                json!({"w": "shared", "seed": seed}),
                &[("acc", base + gap)],
            ));
            out.push(obs(
                json!({"w": "unshared", "seed": seed}),
                &[("acc", *base)],
            ));
        }
        out
    }

    fn judged(claim: &str, obs: &[Observation]) -> Evaluation {
        evaluate(&parse(claim).unwrap(), obs)
    }

    const DIFF: &str = "diff(acc | w=shared vs acc | w=unshared)";

    #[test]
    fn a_difference_holds_with_confidence_only_when_its_interval_does() {
        let steady = seeded(&[0.01; 6]);
        let e = judged(&format!("{DIFF} > 0 @ 95%"), &steady);
        assert_eq!(e.verdict, Verdict::Pass, "{e:?}");
        assert!((e.lhs.unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(e.rhs, Some(0.0));
        assert_eq!(e.level, Some(0.95));
        let i = e.interval.unwrap();
        assert!((i.low - 0.01).abs() < 1e-12 && (i.high - 0.01).abs() < 1e-12);
        assert!(
            e.detail.starts_with("6 pairs; the 95% interval ["),
            "{}",
            e.detail
        );
        // Written the other way round: the same verdict, the sides as written.
        let e = judged(&format!("0 < {DIFF} @ 95%"), &steady);
        assert_eq!(e.verdict, Verdict::Pass);
        assert_eq!(e.lhs, Some(0.0));
        // The point estimate on the wrong side: fail, whatever the interval.
        let e = judged(&format!("{DIFF} > 0.02 @ 95%"), &steady);
        assert_eq!(e.verdict, Verdict::Fail);
        assert!(e.detail.contains("is not > 0.02"), "{}", e.detail);
        assert_eq!(
            judged(&format!("{DIFF} < 0 @ 95%"), &steady).verdict,
            Verdict::Fail
        );

        // Gaps +0.05, −0.01, +0.03, −0.02, +0.04, −0.03: the mean 0.01 is above 0, but with
        // six pairs this noisy the interval reaches below 0: undecided.
        let noisy = seeded(&[0.05, -0.01, 0.03, -0.02, 0.04, -0.03]);
        let e = judged(&format!("{DIFF} > 0 @ 95%"), &noisy);
        assert_eq!(e.verdict, Verdict::Undecided, "{e:?}");
        assert!((e.lhs.unwrap() - 0.01).abs() < 1e-12);
        assert!(e.interval.unwrap().low < 0.0 && e.interval.unwrap().high > 0.0);
        assert!(
            e.detail.contains("more seeds may decide it"),
            "{}",
            e.detail
        );
        // Without `@`, the point estimate decides.
        let e = judged(&format!("{DIFF} > 0"), &noisy);
        assert_eq!(e.verdict, Verdict::Pass);
        assert_eq!(e.detail, "n = 6 pairs");
        assert_eq!((e.interval, e.level), (None, None));
    }

    /// Three pairs that all favour one side: any interval within their range holds the mean at
    /// most 75% of the time (all three differences fall on one side of it with probability
    /// 2/8), so the claim cannot pass at 95%, whatever the data; it says how many pairs can,
    /// and passes at the level three can show.
    #[test]
    fn too_few_pairs_for_the_level_leave_the_claim_undecided_and_say_how_many_would_do() {
        let three = seeded(&[0.01, 0.02, 0.015]);
        let e = judged(&format!("{DIFF} > 0 @ 95%"), &three);
        assert_eq!(e.verdict, Verdict::Undecided, "{e:?}");
        assert_eq!(
            e.detail,
            "3 pairs cannot show 95% confidence: a bootstrap interval lies within the range of \
             the differences, which holds their mean at most 75% of the time; 6 pairs can, or ask \
             @ 75%"
        );
        // The interval is still reported (it is the range).
        let i = e.interval.unwrap();
        assert!(
            (i.low - 0.01).abs() < 1e-12 && (i.high - 0.02).abs() < 1e-12,
            "{i:?}"
        );
        assert_eq!(
            judged(&format!("{DIFF} > 0 @ 75%"), &three).verdict,
            Verdict::Pass
        );
        // 5 pairs reach 93.75%: 90% is within reach, 99% (8 pairs: 99.2%) is not.
        let five = seeded(&[0.01, 0.02, 0.015, 0.01, 0.02]);
        assert_eq!(
            judged(&format!("{DIFF} > 0 @ 90%"), &five).verdict,
            Verdict::Pass
        );
        let e = judged(&format!("{DIFF} > 0 @ 99%"), &five);
        assert!(
            e.detail.ends_with("8 pairs can, or ask @ 93.75%"),
            "{}",
            e.detail
        );
        // Pointing the other way still fails outright.
        assert_eq!(
            judged(&format!("{DIFF} < 0 @ 95%"), &three).verdict,
            Verdict::Fail
        );
    }

    /// One pair has no interval; sides on different seeds have no pairs; `by` names another
    /// pairing label, which every selected instance must have.
    #[test]
    fn pairing_is_by_seed_and_needs_shared_seeds() {
        let mut obs = seeded(&[0.01, 0.01, 0.01, 0.01]);
        let e = judged(&format!("{DIFF} > 0 @ 95%"), &obs[..3]);
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "1 pair: no interval, and the claim asks 95% confidence"
        );
        for o in obs.iter_mut().filter(|o| o.labels["w"] == "unshared") {
            let seed = o.labels["seed"].as_i64().unwrap();
            o.labels.insert("seed".into(), json!(seed + 10));
        }
        let e = judged(&format!("{DIFF} > 0 @ 95%"), &obs);
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "`diff(acc | w=shared vs acc | w=unshared)`: the two sides share no `seed` (4 and 4 \
             groups)"
        );
        let e = judged("diff(acc | w=shared vs acc | w=unshared by run) > 0", &obs);
        assert_eq!(
            e.detail,
            "`acc | w=shared`: 4 of the 4 selected instances have no label `run` to group by"
        );
    }

    #[test]
    fn nan_is_undecided() {
        let e = run("mean(nan_metric) > 0");
        assert_eq!(e.verdict, Verdict::Undecided);
        assert_eq!(
            e.detail,
            "`mean(nan_metric)`: `nan_metric` is NaN in 1 of 1 instance"
        );
        let e = run("std(acc | seed=0, weights=shared) > 0");
        assert_eq!(
            e.detail,
            "`std(acc | seed=0, weights=shared)`: the standard deviation of one value is undefined"
        );
        let e = run("log(-mean(acc)) < 0");
        assert_eq!(
            (e.verdict, e.detail.as_str()),
            (Verdict::Undecided, "the left side is NaN")
        );
        let e = run("1 > 0 / 0");
        assert_eq!(e.detail, "the right side is NaN");
    }
}
