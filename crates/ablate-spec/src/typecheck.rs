//! Checking a raw value against an op's [`ParamType`] and normalising it (integers written for
//! a float become floats, so `lr: 1` and `lr: 1.0` are the same value and hash alike).

use crate::node::{Kind, Node};
use crate::{Diagnostic, ParamType, Value, suggest};

/// Why a value does not fit: the offending node (the value, or an item inside it), what was
/// expected of that node, and where it sits inside the value (`[1][0]`).
struct Mismatch<'a> {
    node: &'a Node,
    expected: String,
    path: Vec<usize>,
    hint: Option<String>,
    /// The value is a number beyond the 32-bit float range: the message says so.
    beyond_f32: bool,
}

impl<'a> Mismatch<'a> {
    fn new(node: &'a Node, expected: impl ToString) -> Self {
        Self {
            node,
            expected: expected.to_string(),
            path: Vec::new(),
            hint: None,
            beyond_f32: false,
        }
    }
}

/// Checks `node` (already interpolated) against `ty`; the error reads "parameter `steps` of op
/// `train.flow` expects an integer ≥ 1, found a string `four`", at the offending node.
pub(crate) fn check_param(
    op: &str,
    key: &str,
    node: &Node,
    ty: &ParamType,
) -> Result<Value, Diagnostic> {
    // `cmd` takes params of any name.
    let key = crate::node::shorten_name(key);
    check(node, ty).map_err(|m| {
        let at = if m.path.is_empty() {
            String::new()
        } else {
            let index: String = m.path.iter().map(|i| format!("[{i}]")).collect();
            format!(" at `{key}{index}`")
        };
        let expected = if m.beyond_f32 {
            format!("{ty:#} (values are computed in 32-bit floats)")
        } else {
            ty.to_string()
        };
        m.node
            .origin
            .error(format!(
                "parameter `{key}` of op `{op}` expects {expected}, found {}{at}",
                m.node.describe()
            ))
            .label(format!("expected {}", m.expected))
            .maybe_help(m.hint)
    })
}

fn check<'a>(node: &'a Node, ty: &ParamType) -> Result<Value, Mismatch<'a>> {
    match (ty, &node.kind) {
        (ParamType::Bool, Kind::Bool(b)) => Ok(Value::Bool(*b)),
        (ParamType::Int { min, max }, Kind::Int(i)) if min <= i && i <= max => Ok(Value::from(*i)),
        #[allow(clippy::cast_precision_loss)] // an integer written for a float is that float
        (ParamType::Float { min, max }, Kind::Int(i)) if *min <= *i as f64 && *i as f64 <= *max => {
            Ok(Value::from(*i as f64))
        }
        (ParamType::Float { min, max }, Kind::Float(f))
            if f.is_finite() && min <= f && f <= max =>
        {
            Ok(Value::from(*f))
        }
        // Beyond a bound that is the 32-bit limit: say why the number is refused.
        (ParamType::Float { min, max }, Kind::Float(f))
            if f.is_finite()
                && ((*f > *max && *max == ParamType::FLOAT_MAX)
                    || (*f < *min && *min == -ParamType::FLOAT_MAX)) =>
        {
            Err(Mismatch {
                beyond_f32: true,
                ..Mismatch::new(node, format!("{ty:#}"))
            })
        }
        (ParamType::Str, Kind::Str(s)) => Ok(Value::String(s.clone())),
        (ParamType::Enum(options), Kind::Str(s)) => {
            if options.contains(&s.as_str()) {
                Ok(Value::String(s.clone()))
            } else {
                Err(Mismatch {
                    hint: suggest::hint(s, options.iter().copied()),
                    ..Mismatch::new(node, ty)
                })
            }
        }
        (ParamType::List(of), Kind::Seq(items)) => {
            let mut values = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match check(item, of) {
                    Ok(value) => values.push(value),
                    Err(mut m) => {
                        m.path.insert(0, i);
                        return Err(m);
                    }
                }
            }
            Ok(Value::Array(values))
        }
        (ParamType::OneOf(a, b), _) => check(node, a).or_else(|ma| {
            check(node, b).map_err(|mb| {
                // A mismatch inside a list means the shape fitted that branch: report it.
                if !ma.path.is_empty() {
                    ma
                } else if !mb.path.is_empty() {
                    mb
                } else {
                    let beyond_f32 = ma.beyond_f32 || mb.beyond_f32;
                    let expected = if beyond_f32 {
                        format!("{ty:#}")
                    } else {
                        ty.to_string()
                    };
                    Mismatch {
                        hint: ma.hint.or(mb.hint),
                        beyond_f32,
                        ..Mismatch::new(node, expected)
                    }
                }
            })
        }),
        (ParamType::Null, Kind::Null) => Ok(Value::Null),
        (ParamType::Any, _) => node
            .to_value()
            .map_err(|bad| Mismatch::new(bad, "a finite number")),
        _ => Err(Mismatch::new(node, ty)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Span;
    use crate::node::{Origin, parse};
    use serde_json::json;

    /// The value of `v: …` in a one-line YAML document, at line 1 col 4.
    fn value(yaml: &str) -> Node {
        parse(&format!("v: {yaml}\n"))
            .unwrap()
            .get("v")
            .unwrap()
            .clone()
    }

    fn ok(yaml: &str, ty: ParamType) -> Value {
        check_param("op", "v", &value(yaml), &ty).unwrap_or_else(|d| panic!("{}", d.message))
    }

    fn err(yaml: &str, ty: ParamType) -> Diagnostic {
        check_param("train.flow", "steps", &value(yaml), &ty).unwrap_err()
    }

    #[test]
    fn floats_accept_integers_and_store_floats() {
        assert_eq!(ok("1", ParamType::float()), json!(1.0));
        assert_eq!(ok("1", ParamType::float()), ok("1.0", ParamType::float()));
        assert!(ok("1", ParamType::float()).is_f64());
        assert_eq!(ok("2.5e-3", ParamType::positive_float()), json!(0.0025));
    }

    #[test]
    fn ints_reject_floats_even_whole_ones() {
        assert_eq!(ok("4", ParamType::positive_int()), json!(4));
        let d = err("4.0", ParamType::positive_int());
        assert_eq!(
            d.message,
            "parameter `steps` of op `train.flow` expects an integer ≥ 1, found a number `4.0`"
        );
        assert_eq!(d.label.as_deref(), Some("expected an integer ≥ 1"));
        assert_eq!(d.span, Some(Span::new(1, 4, 3)));
    }

    #[test]
    fn the_reference_message() {
        let d = err("four", ParamType::positive_int());
        assert_eq!(
            d.message,
            "parameter `steps` of op `train.flow` expects an integer ≥ 1, found a string `four`"
        );
    }

    #[test]
    fn ranges_are_checked() {
        assert!(
            err("0", ParamType::positive_int())
                .message
                .ends_with("found an integer `0`")
        );
        assert!(
            err("0", ParamType::positive_float())
                .message
                .contains("expects a positive number")
        );
        assert!(
            err("2", ParamType::Int { min: 0, max: 1 })
                .message
                .contains("an integer in 0..=1")
        );
        assert!(
            err("1.5", ParamType::Float { min: 0.0, max: 1.0 })
                .message
                .contains("a number in [0, 1]")
        );
    }

    #[test]
    fn non_finite_numbers_are_errors_everywhere() {
        for yaml in [".nan", ".inf", "-.inf"] {
            assert!(
                err(yaml, ParamType::float())
                    .message
                    .contains("found a non-finite number")
            );
            assert!(
                err(yaml, ParamType::Any)
                    .message
                    .contains("expects any value, found a non-finite number")
            );
        }
        let d = err("[1, .nan]", ParamType::Any);
        assert_eq!(d.span, Some(Span::new(1, 8, 4)));
        assert_eq!(d.label.as_deref(), Some("expected a finite number"));
    }

    /// `h: 1e300` passed `ablate plan` and failed at run time: the models compute in f32,
    /// where 1e300 is infinite.
    #[test]
    fn floats_beyond_the_32_bit_range_are_refused_and_say_why() {
        let d = err("1e300", ParamType::positive_float());
        assert_eq!(
            d.message,
            "parameter `steps` of op `train.flow` expects a positive number ≤ 3.4e38 (values are computed in 32-bit floats), found a number `1e300`"
        );
        assert_eq!(
            d.label.as_deref(),
            Some("expected a positive number ≤ 3.4e38")
        );
        assert_eq!(d.span, Some(Span::new(1, 4, 5)));
        assert!(
            err("-1e39", ParamType::float())
                .message
                .contains("expects a number in [-3.4e38, 3.4e38] (values are computed in 32-bit floats), found a number `-1e39`")
        );
        // The largest f32 is in range, the next f64 up is not.
        let largest = f64::from(f32::MAX);
        assert_eq!(
            ok(&format!("{largest:e}"), ParamType::float()),
            json!(largest)
        );
        assert_eq!(ok("-3.4e38", ParamType::float()), json!(-3.4e38));
        assert!(
            check_param(
                "o",
                "v",
                &value(&format!("{:e}", largest.next_up())),
                &ParamType::float()
            )
            .is_err()
        );
        // Inside a list, and one branch of a choice.
        let d = err(
            "[1, 1e39]",
            ParamType::list(ParamType::non_negative_float()),
        );
        assert_eq!(d.label.as_deref(), Some("expected a number in [0, 3.4e38]"));
        assert!(
            d.message.ends_with(
                "(values are computed in 32-bit floats), found a number `1e39` at `steps[1]`"
            ),
            "{}",
            d.message
        );
        let d = err("1e39", ParamType::optional(ParamType::positive_float()));
        assert_eq!(
            d.message,
            "parameter `steps` of op `train.flow` expects a positive number ≤ 3.4e38 or null (values are computed in 32-bit floats), found a number `1e39`"
        );
        // Other range errors read as before.
        assert_eq!(
            err("-1", ParamType::positive_float()).message,
            "parameter `steps` of op `train.flow` expects a positive number, found an integer `-1`"
        );
        // A type that declares its own larger bound keeps it.
        let wide = ParamType::Float {
            min: 0.0,
            max: f64::MAX,
        };
        assert_eq!(ok("1e300", wide), json!(1e300));
    }

    #[test]
    fn enums_suggest_the_closest_option() {
        const WEIGHTS: &[&str] = &["shared", "unshared"];
        assert_eq!(ok("shared", ParamType::Enum(WEIGHTS)), json!("shared"));
        let d = err("sharde", ParamType::Enum(WEIGHTS));
        assert!(
            d.message
                .contains("expects one of `shared`, `unshared`, found a string `sharde`")
        );
        assert_eq!(d.help.as_deref(), Some("did you mean `shared`?"));
    }

    #[test]
    fn lists_are_checked_elementwise_and_point_at_the_bad_item() {
        let ty = ParamType::list(ParamType::float());
        assert_eq!(ok("[1, 0.5]", ty.clone()), json!([1.0, 0.5]));
        let d = err("[1, x]", ty);
        assert_eq!(
            d.message,
            "parameter `steps` of op `train.flow` expects a list of numbers, found a string `x` at `steps[1]`"
        );
        assert_eq!(d.label.as_deref(), Some("expected a number"));
        assert_eq!(d.span, Some(Span::new(1, 8, 1)));
    }

    #[test]
    fn one_of_tries_both_and_reports_the_deeper_mismatch() {
        let ty = ParamType::one_of(ParamType::Str, ParamType::list(ParamType::Str));
        assert_eq!(ok("acc", ty.clone()), json!("acc"));
        assert_eq!(ok("[acc, nll]", ty.clone()), json!(["acc", "nll"]));
        assert!(
            err("3", ty.clone())
                .message
                .contains("expects a string or a list of strings, found an integer `3`")
        );
        assert!(
            err("[acc, 3]", ty)
                .message
                .ends_with("found an integer `3` at `steps[1]`")
        );
        let optional = ParamType::optional(ParamType::positive_float());
        assert_eq!(ok("null", optional.clone()), Value::Null);
        assert_eq!(ok("2", optional), json!(2.0));
    }

    #[test]
    fn bools_strings_null_and_any() {
        assert_eq!(ok("true", ParamType::Bool), json!(true));
        assert!(
            err("yes", ParamType::Bool)
                .message
                .contains("expects a boolean, found a string `yes`")
        );
        assert_eq!(ok("'4'", ParamType::Str), json!("4"));
        assert!(
            err("4", ParamType::Str)
                .message
                .contains("found an integer `4`")
        );
        assert_eq!(ok("~", ParamType::Null), Value::Null);
        assert_eq!(ok("{a: [1, 2.5]}", ParamType::Any), json!({"a": [1, 2.5]}));
    }

    #[test]
    fn a_huge_free_param_name_is_quoted_cut() {
        let key = "k".repeat(1_000_000);
        let d = check_param("cmd", &key, &value("[1, .nan]"), &ParamType::Any).unwrap_err();
        assert!(d.message.len() < 400, "{} bytes", d.message.len());
    }

    #[test]
    fn an_override_has_no_span_and_names_the_argument() {
        let node = Node::new(
            Kind::Str("x".into()),
            Origin::Override("--set a.params.steps=x".into()),
        );
        let d = check_param("train.flow", "steps", &node, &ParamType::positive_int()).unwrap_err();
        assert_eq!(d.span, None);
        assert_eq!(
            d.message,
            "in `--set a.params.steps=x`: parameter `steps` of op `train.flow` expects an integer ≥ 1, found a string `x`"
        );
    }
}
