//! `report.claims`: named assertions over the final metrics of every upstream instance, e.g.
//! `mean(acc_2n | weights=shared) >= mean(acc_2n | weights=unshared)`, each judged pass, fail
//! or undecided and written as `claims.parquet` + `claims.md`. A false claim is a result, not
//! an error; a claim that does not parse is the user's error, reported with all the others.

use std::collections::BTreeSet;
use std::path::Path;

use ablate_cache::Metric;
use ablate_results::Table;
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Value};
use serde::Deserialize;

use crate::params::typed;
use crate::registry::Op;

use ablate_report::claims::eval::{Evaluation, Verdict, evaluate};
use ablate_report::claims::expr::{Claim, parse};
use ablate_report::stats::percent;
use ablate_results::format_float;

pub(crate) struct Claims {
    schema: OpSchema,
}

/// The raw params: each claim stays a JSON value until [`parse_claims`] checks it, so every
/// malformed claim is reported at once, with its position in the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimsParams {
    claims: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaim {
    name: String,
    #[serde(rename = "assert")]
    assertion: String,
    #[serde(default)]
    note: Option<String>,
}

/// A claim that parsed, with what the user wrote.
#[derive(Debug)]
struct NamedClaim {
    name: String,
    assertion: String,
    note: Option<String>,
    claim: Claim,
}

#[derive(Debug)]
struct Outcome<'a> {
    claim: &'a NamedClaim,
    eval: Evaluation,
}

impl Claims {
    pub(crate) fn new() -> Self {
        Claims {
            schema: OpSchema {
                name: "report.claims",
                // 2: `by` groups (aggregates over group means). 3: a selection that lost instances
                // is undecided; a missing metric gets a did-you-mean (#21). 4: `diff(a vs b)`, the
                // paired difference over shared seeds, and `@ 95%` confidence claims (#25). 5: the
                // expanded percentile interval (wider with few seeds).
                version: 5,
                summary: "Check named claims against the final metrics of every instance of its needs, e.g. \
                          `mean(acc | weights=shared) >= mean(acc | weights=unshared)`. Aggregates (mean, median, \
                          min, max, std, sum, count) select instances by label (`key=value`, `key!=value`, \
                          `key in [a, b]`), or with `by key` run over the means of groups (`max(em by objective)`: \
                          the best objective's mean); arithmetic, abs/log/exp/sqrt and one comparison (>= <= > < == !=) \
                          per claim. `diff(acc | w=a vs acc | w=b)` is the paired difference: each side averaged \
                          per seed (`by key` pairs by other labels), and the mean over the seeds both have of \
                          (a − b). `diff(…) > 0 @ 95%` asks that it hold with 95% confidence, judged on its \
                          bootstrap interval (expanded percentile, 10,000 resamples, seeded by the differences): pass if the \
                          whole interval is on the claimed side, fail if the mean difference is not, undecided \
                          otherwise (the interval reaches past the bound, or one pair). Each claim passes, fails, or \
                          is undecided (nothing selected, a NaN, a missing metric, a selected instance that failed \
                          or diverged, no shared seed); none of these fails the stage. Writes `claims.parquet` and `claims.md`, published as \
                          `results/<pipeline>/<stage>.parquet` and `.md`.",
                params: vec![ParamSpec::required(
                    "claims",
                    ParamType::list(ParamType::Any),
                    "the claims: a list of `{name, assert, note?}` maps; `note` quotes the statement checked",
                )],
                gathers: true,
                free_params: false,
                inputs_by_name: false,
                on_device: false,
                needs: (1, None),
            },
        }
    }
}

impl Op for Claims {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    /// Every claim parses when the pipeline is loaded, not after the sweep it checks.
    fn check_value(&self, param: &str, value: &Value) -> Result<(), String> {
        match (param, value) {
            ("claims", Value::Array(raw)) => parse_claims(raw).map(drop),
            _ => Ok(()),
        }
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: ClaimsParams = typed("report.claims", ctx.job.params())?;
        let claims = parse_claims(&p.claims).map_err(OpError::msg)?;
        let inputs = crate::support::gather(ctx)?;
        let observations: Vec<_> = inputs.iter().map(|g| g.obs.clone()).collect();
        let outcomes: Vec<Outcome<'_>> = claims
            .iter()
            .map(|claim| Outcome {
                claim,
                eval: evaluate(&claim.claim, &observations),
            })
            .collect();
        let title = format!("{} — {}", ctx.job.pipeline, ctx.job.stage);
        let note = crate::support::missing_note(&inputs);
        write_outputs(ctx.out_dir(), &title, &outcomes, note.as_deref())?;
        Ok(OpOutput {
            metrics: metrics(&outcomes),
            publish: vec!["claims.parquet".into(), "claims.md".into()],
            ..OpOutput::default()
        })
    }
}

/// Checks and parses every claim; on any error, one message listing them all.
fn parse_claims(raw: &[Value]) -> Result<Vec<NamedClaim>, String> {
    let mut errors = Vec::new();
    let mut claims = Vec::new();
    let mut names = BTreeSet::new();
    if raw.is_empty() {
        errors.push("`claims` is empty: give at least one `{name, assert}`".to_owned());
    }
    for (i, value) in raw.iter().enumerate() {
        let at = format!("claim {} of `claims`", i + 1);
        let rc = match RawClaim::deserialize(value) {
            Ok(rc) => rc,
            Err(e) => {
                errors.push(format!(
                    "{at} is not a `{{name, assert, note?}}` map of strings: {e}"
                ));
                continue;
            }
        };
        if rc.name.is_empty()
            || !rc
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            errors.push(format!(
                "{at} has the name `{}`; a name is letters, digits, `_`, `.` or `-` (it names the metric \
                 `claim.<name>`)",
                rc.name
            ));
        } else if !names.insert(rc.name.clone()) {
            errors.push(format!("{at}: the name `{}` is used twice", rc.name));
        }
        match parse(&rc.assertion) {
            Ok(claim) => claims.push(NamedClaim {
                name: rc.name,
                assertion: rc.assertion,
                note: rc.note,
                claim,
            }),
            Err(e) => errors.push(format!(
                "claim `{}` does not parse: {}",
                rc.name,
                e.render(&rc.assertion)
            )),
        }
    }
    if errors.is_empty() {
        Ok(claims)
    } else {
        let n = errors.len();
        Err(format!(
            "{n} bad claim{}:\n{}",
            if n == 1 { "" } else { "s" },
            errors.join("\n")
        ))
    }
}

fn metrics(outcomes: &[Outcome<'_>]) -> Vec<Metric> {
    let count = |v: Verdict| outcomes.iter().filter(|o| o.eval.verdict == v).count() as f64;
    let mut m = vec![
        Metric::new("claims_total", outcomes.len() as f64),
        Metric::new("claims_passed", count(Verdict::Pass)),
        Metric::new("claims_failed", count(Verdict::Fail)),
        Metric::new("claims_undecided", count(Verdict::Undecided)),
    ];
    for o in outcomes {
        match o.eval.verdict {
            Verdict::Pass => m.push(Metric::new(format!("claim.{}", o.claim.name), 1.0)),
            Verdict::Fail => m.push(Metric::new(format!("claim.{}", o.claim.name), 0.0)),
            Verdict::Undecided => {}
        }
    }
    m
}

/// `note`: which inputs did not finish, under the table.
fn write_outputs(
    dir: &Path,
    title: &str,
    outcomes: &[Outcome<'_>],
    note: Option<&str>,
) -> Result<(), OpError> {
    let strs = |f: &dyn Fn(&Outcome<'_>) -> String| -> Vec<Option<String>> {
        outcomes.iter().map(|o| Some(f(o))).collect()
    };
    let lhs: Vec<Option<f64>> = outcomes.iter().map(|o| o.eval.lhs).collect();
    let rhs: Vec<Option<f64>> = outcomes.iter().map(|o| o.eval.rhs).collect();
    let table = Table::new()
        .with_column("claim", strs(&|o| o.claim.name.clone()))
        .with_column("assert", strs(&|o| o.claim.assertion.clone()))
        .with_column("lhs", lhs.clone())
        .with_column("rhs", rhs.clone())
        .with_column("result", strs(&|o| o.eval.verdict.name().to_owned()))
        .with_column("detail", strs(&|o| o.eval.detail.clone()))
        .with_column(
            "level",
            outcomes.iter().map(|o| o.eval.level).collect::<Vec<_>>(),
        )
        .with_column(
            "ci_low",
            outcomes
                .iter()
                .map(|o| o.eval.interval.map(|i| i.low))
                .collect::<Vec<_>>(),
        )
        .with_column(
            "ci_high",
            outcomes
                .iter()
                .map(|o| o.eval.interval.map(|i| i.high))
                .collect::<Vec<_>>(),
        );
    ablate_results::write_table(&dir.join("claims.parquet"), &table)
        .map_err(|e| OpError::with("failed to write `claims.parquet`", e))?;

    let mark = |v: Verdict| match v {
        Verdict::Pass => "✓",
        Verdict::Fail => "✗",
        Verdict::Undecided => "?",
    };
    let mut shown = Table::new()
        .with_column("", strs(&|o| mark(o.eval.verdict).to_owned()))
        .with_column("claim", strs(&|o| o.claim.name.clone()))
        .with_column("assert", strs(&|o| format!("`{}`", o.claim.assertion)))
        .with_column("lhs", lhs)
        .with_column("rhs", rhs);
    if outcomes.iter().any(|o| o.eval.level.is_some()) {
        // `[0.004, 0.020] (95%)`: the interval of the `diff(…)` side of a claim with `@`.
        shown.push_column(
            "interval",
            outcomes
                .iter()
                .map(|o| match (o.eval.interval, o.eval.level) {
                    (Some(i), Some(level)) => Some(format!(
                        "[{}, {}] ({})",
                        format_float(i.low),
                        format_float(i.high),
                        percent(level)
                    )),
                    (None, Some(_)) => Some("none".to_owned()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        );
    }
    shown.push_column("detail", strs(&|o| o.eval.detail.clone()));
    if outcomes.iter().any(|o| o.claim.note.is_some()) {
        shown.push_column(
            "note",
            outcomes
                .iter()
                .map(|o| o.claim.note.clone())
                .collect::<Vec<_>>(),
        );
    }
    let count = |v: Verdict| outcomes.iter().filter(|o| o.eval.verdict == v).count();
    let mut md = format!(
        "# {title}\n\n{} claims: {} pass, {} fail, {} undecided.\n\n{}",
        outcomes.len(),
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Undecided),
        ablate_results::render_markdown(&shown)
    );
    if let Some(note) = note {
        md.push_str(&format!(
            "\n{note} A claim over a selection that lost any is undecided.\n"
        ));
    }
    std::fs::write(dir.join("claims.md"), md)
        .map_err(|e| OpError::with("failed to write `claims.md`", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ablate_report::Observation;
    use ablate_results::ColumnData;
    use serde_json::json;

    fn claims(v: Value) -> Vec<NamedClaim> {
        parse_claims(v.as_array().unwrap()).unwrap()
    }

    #[test]
    fn all_bad_claims_are_reported_together() {
        let raw = json!([
            {"name": "ok", "assert": "mean(acc) > 0"},
            {"name": "bad paren", "assert": "mean(acc > 0"},
            {"name": "ok", "assert": "1 > 0"},
            {"name": "typo", "asert": "1 > 0"},
            "mean(acc) > 0",
            {"name": "cmp", "assert": "mean(acc) = 1", "note": "n"},
        ]);
        let e = parse_claims(raw.as_array().unwrap()).unwrap_err();
        assert_eq!(
            e,
            "6 bad claims:\n\
             claim 2 of `claims` has the name `bad paren`; a name is letters, digits, `_`, `.` or `-` (it names \
             the metric `claim.<name>`)\n\
             claim `bad paren` does not parse: expected `|`, `by` or `)`, found `>` at column 10\n    mean(acc > 0\n             ^\n\
             claim 3 of `claims`: the name `ok` is used twice\n\
             claim 4 of `claims` is not a `{name, assert, note?}` map of strings: unknown field `asert`, expected \
             one of `name`, `assert`, `note`\n\
             claim 5 of `claims` is not a `{name, assert, note?}` map of strings: invalid type: string \"mean(acc) \
             > 0\", expected struct RawClaim\n\
             claim `cmp` does not parse: expected a comparison, found `=` (equality is `==`) at column 11\n    \
             mean(acc) = 1\n              ^"
        );
        assert!(parse_claims(&[]).unwrap_err().contains("`claims` is empty"));
    }

    /// Each claim judged over `obs`, and the outputs written into a temp dir.
    fn written<'a>(
        cs: &'a [NamedClaim],
        obs: &[Observation],
    ) -> (Vec<Outcome<'a>>, tempfile::TempDir) {
        let outcomes: Vec<Outcome<'_>> = cs
            .iter()
            .map(|claim| Outcome {
                claim,
                eval: evaluate(&claim.claim, obs),
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        write_outputs(dir.path(), "p — s", &outcomes, None).unwrap();
        (outcomes, dir)
    }

    #[test]
    fn the_tables_and_metrics_written() {
        let cs = claims(json!([
            {"name": "shared_wins", "assert": "mean(acc | weights=shared) >= mean(acc | weights=unshared)",
             "note": "sharing weights costs no accuracy"},
            {"name": "tiny", "assert": "max(params | weights=shared) <= 0.1 * min(params | weights=unshared)"},
            {"name": "typo", "assert": "mean(acc | weights=shard) > 0"},
        ]));
        let obs = vec![
            Observation {
                labels: [("weights".to_owned(), json!("shared"))].into(),
                metrics: [("acc".to_owned(), 0.91234), ("params".to_owned(), 10.0)].into(),
                missing: None,
            },
            Observation {
                labels: [("weights".to_owned(), json!("unshared"))].into(),
                metrics: [("acc".to_owned(), 0.5), ("params".to_owned(), 40.0)].into(),
                missing: None,
            },
        ];
        let (outcomes, dir) = written(&cs, &obs);

        let t = ablate_results::read_table(&dir.path().join("claims.parquet")).unwrap();
        let names: Vec<&str> = t.column_names().collect();
        assert_eq!(
            names,
            [
                "claim", "assert", "lhs", "rhs", "result", "detail", "level", "ci_low", "ci_high"
            ]
        );
        let col = |n: &str| t.column(n).unwrap().data.clone();
        assert_eq!(
            col("result"),
            ColumnData::Str(vec![
                Some("pass".into()),
                Some("fail".into()),
                Some("undecided".into())
            ])
        );
        assert_eq!(
            col("lhs"),
            ColumnData::Float(vec![Some(0.91234), Some(10.0), None])
        );
        assert_eq!(
            col("rhs"),
            ColumnData::Float(vec![Some(0.5), Some(4.0), Some(0.0)])
        );
        let ColumnData::Str(detail) = col("detail") else {
            panic!()
        };
        assert_eq!(detail[0].as_deref(), Some("n = 1, 1"));
        assert!(
            detail[2]
                .as_deref()
                .unwrap()
                .contains("`weights` takes: \"shared\", \"unshared\"")
        );

        let md = std::fs::read_to_string(dir.path().join("claims.md")).unwrap();
        let expected = "# p — s\n\n3 claims: 1 pass, 1 fail, 1 undecided.\n\n";
        assert!(md.starts_with(expected), "{md}");
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[4].starts_with("|     | claim "), "{md}");
        assert!(
            lines[4].ends_with("| note                              |"),
            "{md}"
        );
        assert!(
            lines[6].starts_with("| ✓   | shared_wins | `mean(acc \\| weights=shared) >= "),
            "{md}"
        );
        assert!(lines[6].contains("| 0.9123 |"), "{md}");
        assert!(
            lines[6].contains("| sharing weights costs no accuracy |"),
            "{md}"
        );
        assert!(lines[7].starts_with("| ✗   | tiny "), "{md}");
        assert!(lines[8].starts_with("| ?   | typo "), "{md}");

        let m = metrics(&outcomes);
        let got: Vec<(&str, f64)> = m.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(
            got,
            [
                ("claims_total", 3.0),
                ("claims_passed", 1.0),
                ("claims_failed", 1.0),
                ("claims_undecided", 1.0),
                ("claim.shared_wins", 1.0),
                ("claim.tiny", 0.0),
            ]
        );
    }

    /// A claim with `@`: the parquet has its level and interval, the Markdown an `interval`
    /// column; claims without `@` leave them empty.
    #[test]
    fn a_confidence_claim_shows_its_interval() {
        let cs = claims(json!([
            {"name": "shared_wins", "assert": "diff(acc | w=shared vs acc | w=unshared) > 0 @ 95%"},
            {"name": "plain", "assert": "mean(acc) > 0"},
        ]));
        let mut obs = Vec::new();
        // Six seeds: fewer cannot show 95% (`claims::eval`'s too-few-pairs rule).
        for (seed, base) in [0.9, 0.8, 0.6, 0.85, 0.7, 0.95].into_iter().enumerate() {
            for (w, x) in [("shared", base + 0.01), ("unshared", base)] {
                obs.push(Observation {
                    labels: [("w".to_owned(), json!(w)), ("seed".to_owned(), json!(seed))].into(),
                    metrics: [("acc".to_owned(), x)].into(),
                    missing: None,
                });
            }
        }
        let (_, dir) = written(&cs, &obs);
        let t = ablate_results::read_table(&dir.path().join("claims.parquet")).unwrap();
        let col = |n: &str| t.column(n).unwrap().data.clone();
        assert_eq!(col("level"), ColumnData::Float(vec![Some(0.95), None]));
        let ColumnData::Float(low) = col("ci_low") else {
            panic!()
        };
        assert!((low[0].unwrap() - 0.01).abs() < 1e-12 && low[1].is_none());
        assert_eq!(
            col("result"),
            ColumnData::Str(vec![Some("pass".into()), Some("pass".into())])
        );
        let md = std::fs::read_to_string(dir.path().join("claims.md")).unwrap();
        assert!(md.contains("| [0.01, 0.01] (95%) |"), "{md}");
        assert!(md.contains("| 6 pairs; the 95% interval ["), "{md}");
    }
}
