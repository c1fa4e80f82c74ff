//! The raw tree: YAML parsed by serde-saphyr into untyped nodes that remember where they came
//! from (a span in the file, or a command-line override), so that validation can report every
//! problem at its place instead of stopping at the first, as derived `Deserialize` would.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter as _, Spanned};

use crate::{Diagnostic, Span, Value};

/// Where a node came from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Origin {
    File(Span),
    /// A `--set`/`--matrix` argument, as typed.
    Override(Arc<str>),
}

impl Origin {
    /// An error about the node: at its span, or prefixed with the override that made it.
    pub(crate) fn error(&self, message: impl fmt::Display) -> Diagnostic {
        match self {
            Origin::File(span) => Diagnostic::error(message.to_string()).at(*span),
            Origin::Override(arg) => {
                Diagnostic::error(format!("in `{}`: {message}", shorten_name(arg)))
            }
        }
    }

    pub(crate) fn span(&self) -> Option<Span> {
        match self {
            Origin::File(span) => Some(*span),
            Origin::Override(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub origin: Origin,
}

/// A map key with its origin.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Key {
    pub name: String,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    /// May be non-finite: validation reports NaN/inf where it can point at them.
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// In file order; keys are unique (serde-saphyr rejects duplicates).
    Map(Vec<(Key, Node)>),
}

impl Node {
    pub(crate) fn new(kind: Kind, origin: Origin) -> Self {
        Self { kind, origin }
    }

    pub(crate) fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn as_map_mut(&mut self) -> Option<&mut Vec<(Key, Node)>> {
        match &mut self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.as_map_mut()?
            .iter_mut()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// What the node is, for "found …" in messages: "a string `four`", "a list", "null".
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".into(),
            Kind::Bool(b) => format!("a boolean `{b}`"),
            Kind::Int(i) => format!("an integer `{i}`"),
            Kind::Float(f) if f.is_finite() => format!("a number `{}`", format_float(*f)),
            Kind::Float(f) => format!("a non-finite number `{}`", format_float(*f)),
            Kind::Str(s) => format!("a string `{}`", shorten(s)),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a map".into(),
        }
    }

    /// The node as a value, or the first non-finite float in it (which JSON cannot hold).
    pub(crate) fn to_value(&self) -> Result<Value, &Node> {
        Ok(match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or(self)?,
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => {
                Value::Array(items.iter().map(Node::to_value).collect::<Result<_, _>>()?)
            }
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.name.clone(), v.to_value()?)))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// A node holding `value`, placed at `origin` (used when a variable's value replaces the
    /// string that referenced it).
    pub(crate) fn from_value(value: &Value, origin: &Origin) -> Node {
        let kind = match value {
            Value::Null => Kind::Null,
            Value::Bool(b) => Kind::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Kind::Int(i),
                None => Kind::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Kind::Str(s.clone()),
            Value::Array(items) => {
                Kind::Seq(items.iter().map(|v| Node::from_value(v, origin)).collect())
            }
            Value::Object(entries) => Kind::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: k.clone(),
                                origin: origin.clone(),
                            },
                            Node::from_value(v, origin),
                        )
                    })
                    .collect(),
            ),
        };
        Node::new(kind, origin.clone())
    }
}

/// A float as YAML would write it, keeping `.0` on whole numbers so `4.0` is not shown as `4`.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        }
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else if f != 0.0 && !(1e-5..1e16).contains(&f.abs()) {
        // Rust writes every digit of `1e300` (301 of them) unless asked for an exponent.
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

/// A value for a message: sanitised, long text cut.
pub(crate) fn shorten(s: &str) -> String {
    clip(s, 40)
}

/// A name for a message (a key, a stage, a variable, a command-line argument): sanitised, and
/// cut only past the longest name a pipeline may use, so every valid name is shown whole.
pub(crate) fn shorten_name(s: &str) -> String {
    clip(s, crate::MAX_NAME_BYTES)
}

/// `s` with its control characters escaped (a newline in a value must not break the rendered
/// block, nor an escape sequence reach the terminal), cut to `max` characters, the last one `…`.
/// It stops reading at the cut: a message about a 100 MB value costs what a short one does.
pub(crate) fn clip(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    for c in s.chars() {
        let escaped = c.is_control().then(|| c.escape_default().to_string());
        count += escaped.as_ref().map_or(1, |e| e.chars().count());
        if count > max {
            // Room for the `…`: drop characters (not bytes) until at most `max - 1` are left.
            let mut kept = out.chars().count();
            while kept >= max {
                out.pop();
                kept -= 1;
            }
            out.push('…');
            return out;
        }
        match escaped {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

/// Parses a whole pipeline file. Syntax errors and duplicate keys are the one kind of problem
/// that stops everything: the parser cannot go on, so only the first can be reported. Integers
/// out of the 64-bit range stop it too, but every one of them is reported.
pub(crate) fn parse(text: &str) -> Result<Node, Vec<Diagnostic>> {
    let spanned = parse_spanned(text).map_err(|err| {
        let (message, label) = syntax_message(&err);
        let diagnostic = Diagnostic::error(message).label(label);
        vec![match err.location() {
            Some(at) => diagnostic.at(span_of(&at)),
            None => diagnostic,
        }]
    })?;
    let mut out_of_range = Vec::new();
    let node = convert(
        spanned,
        text,
        &|at| Origin::File(span_of(at)),
        &mut out_of_range,
    );
    if out_of_range.is_empty() {
        Ok(node)
    } else {
        Err(out_of_range)
    }
}

/// Parses a value given on the command line. Every node gets `origin`.
pub(crate) fn parse_fragment(text: &str, origin: &Origin) -> Result<Node, String> {
    let spanned = parse_spanned(text).map_err(|err| syntax_message(&err).0)?;
    let mut out_of_range = Vec::new();
    let node = convert(spanned, text, &|_| origin.clone(), &mut out_of_range);
    match out_of_range.into_iter().next() {
        None => Ok(node),
        Some(d) => Err(d.message),
    }
}

/// Whether `text` is written as a decimal integer (`12`, `-3`, `1_000`): one that reaches us
/// as a float was too large for 64 bits, and YAML parsers quietly turn those into floats.
pub(crate) fn is_integer_literal(text: &str) -> bool {
    let digits = text.trim().trim_start_matches(['-', '+']);
    digits.chars().any(|c| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
}

/// The error for an integer literal outside the 64-bit range.
fn out_of_range_error(literal: &str) -> Diagnostic {
    let literal = literal.trim();
    let (message, label) = if literal.starts_with('-') {
        (
            format!(
                "integer `{}` is too small (the smallest is {})",
                shorten(literal),
                i64::MIN
            ),
            "too small",
        )
    } else {
        (
            format!(
                "integer `{}` is too large (the largest is {})",
                shorten(literal),
                i64::MAX
            ),
            "too large",
        )
    };
    Diagnostic::error(message).label(label).help(
        "integers are 64-bit; to mean a float, write it with a decimal point or an exponent (`1e20`)",
    )
}

fn parse_spanned(text: &str) -> Result<Spanned<RawNode>, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    // Let NaN/inf through as floats so validation can report them all, at their places.
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options.with_snippet = false;
    // YAML 1.2 booleans only: `no` is the string "no", not false (the "Norway problem").
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options(text, options)
}

/// The parser's messages may quote the text they choke on: cut them like any value.
const MESSAGE_MAX: usize = 200;

fn syntax_message(err: &serde_saphyr::Error) -> (String, &'static str) {
    let err = err.without_snippet();
    match err {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            (format!("duplicate key `{}`", shorten(key)), "duplicate key")
        }
        serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => {
            ("duplicate key".into(), "duplicate key")
        }
        // Our own visitor's errors are already phrased for the user.
        serde_saphyr::Error::Message { msg, .. } => (clip(msg, MESSAGE_MAX), "here"),
        other => {
            let message = serde_saphyr::UserMessageFormatter.format_message(other);
            (
                format!("invalid YAML: {}", clip(&message, MESSAGE_MAX)),
                "here",
            )
        }
    }
}

fn span_of(at: &serde_saphyr::Location) -> Span {
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let len = at.span().len();
    Span::new(
        clamp(at.line()),
        clamp(at.column()),
        clamp(if len == u64::from(u32::MAX) { 1 } else { len }),
    )
}

/// The tree as serde-saphyr hands it over, spans in its own types.
enum RawNode {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer outside the 64-bit range, as written.
    OutOfRange(String),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawNode>>),
    Map(Vec<(Spanned<String>, Spanned<RawNode>)>),
}

/// The tree with our spans. `source` is the text parsed, to tell an integer too large for
/// 64 bits (which the parser hands over as a float) from a float; each of those is pushed to
/// `out_of_range` and left as null.
fn convert(
    raw: Spanned<RawNode>,
    source: &str,
    origin: &dyn Fn(&serde_saphyr::Location) -> Origin,
    out_of_range: &mut Vec<Diagnostic>,
) -> Node {
    let at = origin(&raw.referenced);
    let mut too_big = |literal: &str| {
        let d = out_of_range_error(literal);
        out_of_range.push(match at.span() {
            Some(span) => d.at(span),
            None => d,
        });
        Kind::Null
    };
    let kind = match raw.value {
        RawNode::Null => Kind::Null,
        RawNode::Bool(b) => Kind::Bool(b),
        RawNode::Int(i) => Kind::Int(i),
        RawNode::OutOfRange(literal) => too_big(&literal),
        // An alias's literal is where its anchor is defined.
        RawNode::Float(f) => match literal(source, &raw.defined) {
            Some(text) if is_integer_literal(text) => too_big(text),
            _ => Kind::Float(f),
        },
        RawNode::Str(s) => Kind::Str(s),
        RawNode::Seq(items) => Kind::Seq(
            items
                .into_iter()
                .map(|item| convert(item, source, origin, out_of_range))
                .collect(),
        ),
        RawNode::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key {
                        origin: origin(&k.referenced),
                        name: k.value,
                    };
                    // An empty value (`a:`) has no text of its own: point at its key instead.
                    let empty = matches!(v.value, RawNode::Null) && v.referenced.span().is_empty();
                    let mut value = convert(v, source, origin, out_of_range);
                    if empty {
                        value.origin = key.origin.clone();
                    }
                    (key, value)
                })
                .collect(),
        ),
    };
    Node::new(kind, at)
}

/// The text of the scalar at `at`, when the parser says where it is.
fn literal<'s>(source: &'s str, at: &serde_saphyr::Location) -> Option<&'s str> {
    let span = at.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    source.get(start..start.checked_add(len)?)
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawNode, E> {
        Ok(RawNode::Null)
    }
    fn visit_none<E>(self) -> Result<RawNode, E> {
        Ok(RawNode::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawNode, D::Error> {
        RawNode::deserialize(deserializer)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawNode, E> {
        Ok(RawNode::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawNode, E> {
        Ok(RawNode::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawNode, E> {
        Ok(i64::try_from(v).map_or_else(|_| RawNode::OutOfRange(v.to_string()), RawNode::Int))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawNode, E> {
        Ok(i64::try_from(v).map_or_else(|_| RawNode::OutOfRange(v.to_string()), RawNode::Int))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawNode, E> {
        Ok(i64::try_from(v).map_or_else(|_| RawNode::OutOfRange(v.to_string()), RawNode::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawNode, E> {
        Ok(RawNode::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawNode, E> {
        Ok(RawNode::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawNode, E> {
        Ok(RawNode::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawNode, E> {
        String::from_utf8(v.to_vec())
            .map(RawNode::Str)
            .map_err(|_| E::custom("binary data is not valid UTF-8"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawNode>>()? {
            items.push(item);
        }
        Ok(RawNode::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<RawNode>>()?;
            entries.push((key, value));
        }
        Ok(RawNode::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, col: u32, len: u32) -> Origin {
        Origin::File(Span::new(line, col, len))
    }

    #[test]
    fn scalars_keys_and_collections_carry_spans() {
        let root = parse("name: abl\nvars: { w: 16, lr: 0.5 }\nlist:\n  - a\n  - null\n").unwrap();
        let entries = root.as_map().unwrap();
        assert_eq!(
            entries[0].0,
            Key {
                name: "name".into(),
                origin: at(1, 1, 4)
            }
        );
        assert_eq!(
            entries[0].1,
            Node::new(Kind::Str("abl".into()), at(1, 7, 3))
        );
        let vars = root.get("vars").unwrap();
        assert_eq!(
            vars.get("w").unwrap(),
            &Node::new(Kind::Int(16), at(2, 12, 2))
        );
        assert_eq!(
            vars.get("lr").unwrap(),
            &Node::new(Kind::Float(0.5), at(2, 20, 3))
        );
        let Kind::Seq(items) = &root.get("list").unwrap().kind else {
            panic!()
        };
        assert_eq!(items[0], Node::new(Kind::Str("a".into()), at(4, 5, 1)));
        assert_eq!(items[1].kind, Kind::Null);
    }

    #[test]
    fn non_finite_floats_are_kept_for_validation_to_report() {
        let root = parse("a: .nan\nb: -.inf\n").unwrap();
        assert!(matches!(root.get("a").unwrap().kind, Kind::Float(f) if f.is_nan()));
        assert_eq!(root.get("b").unwrap().kind, Kind::Float(f64::NEG_INFINITY));
        assert!(root.to_value().is_err());
    }

    #[test]
    fn syntax_errors_and_duplicate_keys_point_at_their_place() {
        let err = parse("name: a\nstages:\n  x: 1\n  x: 2\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].message, "duplicate key `x`");
        assert_eq!(err[0].span, Some(Span::new(4, 3, 1)));
        let err = parse("name: a\nstages: [\n  x: 1\n").unwrap_err();
        assert!(
            err[0].message.starts_with("invalid YAML: "),
            "{}",
            err[0].message
        );
        assert_eq!(err[0].span.map(|s| s.line), Some(2));
        let err = parse("x: 18446744073709551615\n").unwrap_err();
        assert_eq!(
            err[0].message,
            format!(
                "integer `18446744073709551615` is too large (the largest is {})",
                i64::MAX
            )
        );
        assert_eq!(err[0].span.map(|s| (s.line, s.col)), Some((1, 4)));
    }

    /// YAML parsers turn an integer too large for 64 bits into a float: `steps:
    /// 99999999999999999999` was read as 1e20, and passed for a float param.
    #[test]
    fn integers_beyond_64_bits_are_errors_not_floats() {
        let err = parse(
            "a: 99999999999999999999\nb: [1, -99999999999999999999]\nc: 9223372036854775808\nd: 1e20\ne: 1_000\n",
        )
        .unwrap_err();
        let found: Vec<(u32, u32, &str)> = err
            .iter()
            .map(|d| {
                let span = d.span.unwrap();
                (span.line, span.col, d.message.as_str())
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    1,
                    4,
                    "integer `99999999999999999999` is too large (the largest is 9223372036854775807)"
                ),
                (
                    2,
                    8,
                    "integer `-99999999999999999999` is too small (the smallest is -9223372036854775808)"
                ),
                (
                    3,
                    4,
                    "integer `9223372036854775808` is too large (the largest is 9223372036854775807)"
                ),
            ]
        );
        assert!(err[0].help.as_deref().unwrap().contains("`1e20`"));
        // Floats (with a point or an exponent) and in-range integers are what they were.
        let root = parse("d: 1e20\ne: 1_000\nf: -9223372036854775808\ng: 1.0e400\n").unwrap();
        assert_eq!(root.get("d").unwrap().kind, Kind::Float(1e20));
        assert_eq!(root.get("e").unwrap().kind, Kind::Int(1000));
        assert_eq!(root.get("f").unwrap().kind, Kind::Int(i64::MIN));
        assert_eq!(root.get("g").unwrap().kind, Kind::Float(f64::INFINITY));
        // Through an alias too, and in a command-line value.
        let err = parse("a: &big 99999999999999999999\nb: *big\n").unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        let o = Origin::Override("--set x".into());
        assert!(
            parse_fragment("99999999999999999999", &o)
                .unwrap_err()
                .contains("is too large")
        );
        // A megabyte of digits is quoted cut.
        let err = parse(&format!("a: {}\n", "9".repeat(1_000_000))).unwrap_err();
        assert!(err[0].message.len() < 200, "{}", err[0].message);
    }

    #[test]
    fn describe_names_the_kind_and_value() {
        let o = at(1, 1, 1);
        assert_eq!(
            Node::new(Kind::Str("four".into()), o.clone()).describe(),
            "a string `four`"
        );
        assert_eq!(
            Node::new(Kind::Float(4.0), o.clone()).describe(),
            "a number `4.0`"
        );
        assert_eq!(
            Node::new(Kind::Float(f64::NAN), o.clone()).describe(),
            "a non-finite number `.nan`"
        );
        assert_eq!(Node::new(Kind::Seq(vec![]), o.clone()).describe(), "a list");
        assert_eq!(
            Node::new(Kind::Str("a\n'b'".into()), o.clone()).describe(),
            "a string `a\\n'b'`"
        );
        assert_eq!(shorten(&"x".repeat(50)), format!("{}…", "x".repeat(39)));
        assert_eq!(shorten(&"x".repeat(40)), "x".repeat(40));
        assert_eq!(shorten(&"é".repeat(50)), format!("{}…", "é".repeat(39)));
        assert_eq!(
            shorten(&format!("{}\n\n", "x".repeat(38))),
            format!("{}\\…", "x".repeat(38))
        );
        assert_eq!(shorten_name(&"k".repeat(1_000_000)).chars().count(), 128);
        // Huge numbers are written with an exponent, not 301 digits.
        assert_eq!(
            Node::new(Kind::Float(1e300), o.clone()).describe(),
            "a number `1e300`"
        );
        assert_eq!(format_float(-1.5e-300), "-1.5e-300");
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(0.0), "0.0");
    }
}
