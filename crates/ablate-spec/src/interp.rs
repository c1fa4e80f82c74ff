//! `${vars.NAME}` interpolation in parameter values.
//!
//! A string that is exactly `${vars.NAME}` becomes the variable's value with its type (so
//! `width: "${vars.width}"` is the integer 16, then type-checked like any value). A reference
//! inside longer text is replaced by the value as text: strings as they are, anything else as
//! JSON. `$${` is a literal `${`. Only the `vars` namespace exists.

use std::collections::BTreeMap;

use crate::Value;
use crate::node::{Kind, Node};
use crate::{Diagnostic, suggest};

/// The pipeline's variables; `None` for one whose value was invalid (already reported), so a
/// reference to it fails quietly instead of piling a second error on the first.
pub(crate) type Vars = BTreeMap<String, Option<Value>>;

/// `node` with every string in it interpolated, or `None` if any reference in it is wrong
/// (each problem pushed to `errors`).
pub(crate) fn interpolate(node: &Node, vars: &Vars, errors: &mut Vec<Diagnostic>) -> Option<Node> {
    match &node.kind {
        Kind::Str(s) => interpolate_str(s, node, vars, errors),
        Kind::Seq(items) => {
            let items: Vec<Option<Node>> = items
                .iter()
                .map(|item| interpolate(item, vars, errors))
                .collect();
            let items = items.into_iter().collect::<Option<Vec<Node>>>()?;
            Some(Node::new(Kind::Seq(items), node.origin.clone()))
        }
        Kind::Map(entries) => {
            let entries: Vec<_> = entries
                .iter()
                .map(|(k, v)| interpolate(v, vars, errors).map(|v| (k.clone(), v)))
                .collect();
            let entries = entries.into_iter().collect::<Option<Vec<_>>>()?;
            Some(Node::new(Kind::Map(entries), node.origin.clone()))
        }
        _ => Some(node.clone()),
    }
}

#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a template into literal text and `${vars.NAME}` references. Errors are messages
/// (with their hint) about the template as a whole.
fn pieces(s: &str) -> Result<Vec<Piece<'_>>, Vec<(String, Option<String>)>> {
    const FORM: &str = "references are written `${vars.NAME}`; write `$${` for a literal `${`";
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            pieces.push(Piece::Text(&rest[..at]));
            pieces.push(Piece::Text("${"));
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            pieces.push(Piece::Text(&rest[..at]));
            let Some(end) = tail.find('}') else {
                errors.push((
                    format!("unclosed `${{` in `{}`", crate::node::shorten(s)),
                    Some(FORM.into()),
                ));
                break;
            };
            let reference = &tail[..end];
            match reference.strip_prefix("vars.") {
                Some(name) if !name.is_empty() => pieces.push(Piece::Var(name)),
                _ => errors.push((
                    format!(
                        "`${{{}}}` is not a variable reference",
                        crate::node::shorten(reference)
                    ),
                    Some(FORM.into()),
                )),
            }
            rest = &tail[end + 1..];
        } else {
            pieces.push(Piece::Text(&rest[..=at]));
            rest = &rest[at + 1..];
        }
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|p| *p != Piece::Text(""));
    if errors.is_empty() {
        Ok(pieces)
    } else {
        Err(errors)
    }
}

fn interpolate_str(
    s: &str,
    node: &Node,
    vars: &Vars,
    errors: &mut Vec<Diagnostic>,
) -> Option<Node> {
    if !s.contains("${") {
        return Some(node.clone());
    }
    let pieces = match pieces(s) {
        Ok(pieces) => pieces,
        Err(problems) => {
            for (message, hint) in problems {
                errors.push(
                    node.origin
                        .error(message)
                        .label("invalid reference")
                        .maybe_help(hint),
                );
            }
            return None;
        }
    };
    let mut values = Vec::new();
    let mut ok = true;
    for piece in &pieces {
        if let Piece::Var(name) = piece {
            match vars.get(*name) {
                Some(Some(value)) => values.push(value),
                Some(None) => ok = false,
                None => {
                    let hint = suggest::hint(name, vars.keys().map(String::as_str)).or_else(|| {
                        Some(if vars.is_empty() {
                            "no variables are defined; add them under `vars:`".into()
                        } else {
                            let names = vars.keys().map(|k| crate::node::shorten_name(k));
                            format!("the variables are {}", crate::backticked(names))
                        })
                    });
                    errors.push(
                        node.origin
                            .error(format!(
                                "unknown variable `{}` in `{}`",
                                crate::node::shorten_name(name),
                                crate::node::shorten(s)
                            ))
                            .label("unknown variable")
                            .maybe_help(hint),
                    );
                    ok = false;
                }
            }
        }
    }
    if !ok {
        return None;
    }
    if let [Piece::Var(_)] = pieces.as_slice() {
        return Some(Node::from_value(values[0], &node.origin));
    }
    let mut values = values.into_iter();
    let mut text = String::new();
    for piece in &pieces {
        match piece {
            Piece::Text(t) => text.push_str(t),
            Piece::Var(_) => match values.next().expect("one value per reference") {
                Value::String(v) => text.push_str(v),
                other => text.push_str(&other.to_string()),
            },
        }
    }
    Some(Node::new(Kind::Str(text), node.origin.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Span;
    use crate::node::Origin;
    use serde_json::json;

    fn vars() -> Vars {
        [
            ("width".to_string(), Some(json!(16))),
            ("name".to_string(), Some(json!("spirals"))),
            ("lrs".to_string(), Some(json!([0.1, 1.0]))),
            ("broken".to_string(), None),
        ]
        .into_iter()
        .collect()
    }

    fn string(s: &str) -> Node {
        Node::new(
            Kind::Str(s.into()),
            Origin::File(Span::new(3, 5, s.chars().count() as u32)),
        )
    }

    fn run(s: &str) -> (Option<Node>, Vec<Diagnostic>) {
        let mut errors = Vec::new();
        let out = interpolate(&string(s), &vars(), &mut errors);
        (out, errors)
    }

    #[test]
    fn a_whole_reference_keeps_the_type() {
        assert_eq!(run("${vars.width}").0.unwrap().kind, Kind::Int(16));
        let list = run("${vars.lrs}").0.unwrap();
        assert_eq!(list.to_value().unwrap(), json!([0.1, 1.0]));
        assert_eq!(list.origin, string("${vars.lrs}").origin);
    }

    #[test]
    fn embedded_references_become_text() {
        assert_eq!(
            run("data/${vars.name}/w${vars.width}").0.unwrap().kind,
            Kind::Str("data/spirals/w16".into())
        );
        assert_eq!(
            run("lrs=${vars.lrs}").0.unwrap().kind,
            Kind::Str("lrs=[0.1,1.0]".into())
        );
        assert_eq!(
            run("cost: $5 ${vars.width}$").0.unwrap().kind,
            Kind::Str("cost: $5 16$".into())
        );
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(
            run("echo $${HOME} ${vars.width}").0.unwrap().kind,
            Kind::Str("echo ${HOME} 16".into())
        );
        assert_eq!(
            run("$${vars.width}").0.unwrap().kind,
            Kind::Str("${vars.width}".into())
        );
    }

    #[test]
    fn unknown_variables_are_reported_with_a_suggestion() {
        let (out, errors) = run("${vars.widht}");
        assert!(out.is_none());
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].message,
            "unknown variable `widht` in `${vars.widht}`"
        );
        assert_eq!(errors[0].help.as_deref(), Some("did you mean `width`?"));
        assert_eq!(errors[0].span, Some(Span::new(3, 5, 13)));
    }

    #[test]
    fn malformed_references_name_the_expected_form() {
        let (out, errors) = run("${vars.width");
        assert!(out.is_none());
        assert_eq!(errors[0].message, "unclosed `${` in `${vars.width`");
        assert!(
            errors[0]
                .help
                .as_deref()
                .unwrap()
                .contains("`${vars.NAME}`")
        );
        let (_, errors) = run("${env.HOME} and ${vars.}");
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].message,
            "`${env.HOME}` is not a variable reference"
        );
        assert_eq!(errors[1].message, "`${vars.}` is not a variable reference");
    }

    #[test]
    fn a_reference_to_an_invalid_variable_fails_quietly() {
        let (out, errors) = run("${vars.broken}");
        assert!(out.is_none() && errors.is_empty());
    }

    #[test]
    fn nested_values_are_interpolated() {
        let o = Origin::File(Span::new(1, 1, 1));
        let list = Node::new(Kind::Seq(vec![string("${vars.width}"), string("x")]), o);
        let out = interpolate(&list, &vars(), &mut Vec::new()).unwrap();
        assert_eq!(out.to_value().unwrap(), json!([16, "x"]));
    }
}
