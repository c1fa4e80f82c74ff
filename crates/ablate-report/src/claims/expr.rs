//! The claim language: a hand-written recursive-descent parser over characters (values after a
//! filter's `=` are lexed differently from arithmetic, so there is no separate token stream).
//!
//! ```text
//! claim  := sum CMP sum ['@' NUMBER '%']         CMP: >= <= > < == !=
//! sum    := prod (('+' | '-') prod)*
//! prod   := unary (('*' | '/') unary)*
//! unary  := '-' unary | atom
//! atom   := NUMBER | '(' sum ')' | FUNC '(' sum ')'            FUNC: abs log exp sqrt
//!         | AGG '(' side ['by' KEY (',' KEY)*] ')'
//!                                                  AGG: mean median min max std sum count
//!         | 'diff' '(' side 'vs' side ['by' KEY (',' KEY)*] ')'
//! side   := METRIC ['|' filter (',' filter)*]
//! filter := KEY ('=' | '==' | '!=') VALUE | KEY 'in' '[' VALUE (',' VALUE)* ']'
//! VALUE  := 'single' or "double" quoted string (no escapes) | true | false | null
//!         | a bare word of [A-Za-z0-9_.+-]: a number if it reads as one, else a string
//! METRIC, KEY := [A-Za-z_][A-Za-z0-9_.]*
//! ```
//!
//! With `by`, the aggregate runs over the means of the groups of selected instances that share
//! the `by` labels, not over the instances: `max(infill_em | arch=decoder by objective)` is the
//! best objective's mean.
//!
//! `diff(a vs b)` is the paired difference of two selections: each side's values are grouped by
//! the `by` labels (`seed` when none is given) and averaged per group, groups with the same
//! labels pair up, and the value is the mean over the pairs of (a − b). `@ 95%` asks that a
//! claim hold with that confidence; it takes one side that is a `diff(…)` alone and another
//! without aggregates, and an order comparison: `diff(acc | w=shared vs acc | w=unshared) > 0
//! @ 95%` (see [`super::eval`] for the verdict).

use std::fmt;

use serde_json::Value;

/// A parsed claim: `lhs cmp rhs`, and `@ level` (0.95 for `@ 95%`).
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub lhs: Expr,
    pub cmp: Cmp,
    pub rhs: Expr,
    pub confidence: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
    Ne,
}

impl Cmp {
    /// `>=`, as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Ge => ">=",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Lt => "<",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Ge => a >= b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Lt => a < b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num(f64),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    Agg(Agg, Selection),
    Diff(Box<Diff>),
}

impl Expr {
    /// Whether the expression reads any metric.
    fn reads_metrics(&self) -> bool {
        match self {
            Expr::Num(_) => false,
            Expr::Neg(a) | Expr::Func(_, a) => a.reads_metrics(),
            Expr::Bin(_, a, b) => a.reads_metrics() || b.reads_metrics(),
            Expr::Agg(..) | Expr::Diff(_) => true,
        }
    }
}

/// `diff(left vs right by keys)`: the mean over pairs (groups with the same `by` labels) of
/// left − right.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    pub left: Selection,
    pub right: Selection,
    /// The labels that pair the sides (`seed` when none is written).
    pub by: Vec<String>,
    /// The whole `diff(…)` as written.
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Abs,
    Log,
    Exp,
    Sqrt,
}

const FUNCS: [(&str, Func); 4] = [
    ("abs", Func::Abs),
    ("exp", Func::Exp),
    ("log", Func::Log),
    ("sqrt", Func::Sqrt),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Mean,
    Median,
    Min,
    Max,
    Std,
    Sum,
    Count,
}

const AGGS: [(&str, Agg); 7] = [
    ("count", Agg::Count),
    ("max", Agg::Max),
    ("mean", Agg::Mean),
    ("median", Agg::Median),
    ("min", Agg::Min),
    ("std", Agg::Std),
    ("sum", Agg::Sum),
];

/// `metric | filters by keys`, with the text it was parsed from (for messages).
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub metric: String,
    pub filters: Vec<Filter>,
    /// Label keys whose groups' means are aggregated; empty: the instances' values are.
    pub by: Vec<String>,
    /// The whole aggregate as written, e.g. `mean(acc | weights=shared)`.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub key: String,
    pub test: Test,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.test {
            Test::Eq(v) => write!(f, "{}={v}", self.key),
            Test::Ne(v) => write!(f, "{}!={v}", self.key),
            Test::In(vs) => {
                let vs: Vec<String> = vs.iter().map(Value::to_string).collect();
                write!(f, "{} in [{}]", self.key, vs.join(", "))
            }
        }
    }
}

/// Where and why a claim does not parse; `column` counts characters from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl ParseError {
    /// The message, then the claim with a caret under the column: a window of at most 100
    /// characters around it, `…` marking what is cut, so a huge claim gives a short message.
    pub fn render(&self, source: &str) -> String {
        const WIDTH: usize = 100;
        let chars: Vec<char> = source.chars().collect();
        let at = self.column.saturating_sub(1).min(chars.len());
        let start = at
            .saturating_sub(WIDTH / 2)
            .min(chars.len().saturating_sub(WIDTH));
        let end = (start + WIDTH).min(chars.len());
        let cut_before = if start > 0 { "…" } else { "" };
        let cut_after = if end < chars.len() { "…" } else { "" };
        let window: String = chars[start..end].iter().collect();
        format!(
            "{} at column {}\n    {cut_before}{window}{cut_after}\n    {}^",
            self.message,
            self.column,
            " ".repeat(at - start + cut_before.chars().count())
        )
    }
}

pub fn parse(source: &str) -> Result<Claim, ParseError> {
    let mut p = Parser {
        chars: source.chars().collect(),
        pos: 0,
        in_diff: false,
    };
    let lhs = p.sum()?;
    p.skip_ws();
    let at = p.pos;
    let cmp = if p.eat(">=") {
        Cmp::Ge
    } else if p.eat("<=") {
        Cmp::Le
    } else if p.eat("==") {
        Cmp::Eq
    } else if p.eat("!=") {
        Cmp::Ne
    } else if p.eat(">") {
        Cmp::Gt
    } else if p.eat("<") {
        Cmp::Lt
    } else if p.peek() == Some('=') {
        return Err(p.error_at(at, "expected a comparison, found `=` (equality is `==`)"));
    } else {
        return Err(p.expected("a comparison (`>=`, `<=`, `>`, `<`, `==` or `!=`)"));
    };
    let rhs = p.sum()?;
    p.skip_ws();
    let mut confidence = None;
    if p.peek() == Some('@') {
        let at = p.pos;
        p.pos += 1;
        confidence = Some(p.confidence()?);
        let bare_diff = |e: &Expr| matches!(e, Expr::Diff(_));
        if matches!(cmp, Cmp::Eq | Cmp::Ne) {
            return Err(p.error_at(
                at,
                "`@` asks that a difference lie on one side of a bound with that confidence: \
                 compare with `>`, `>=`, `<` or `<=`",
            ));
        }
        let one_diff =
            (bare_diff(&lhs) && !rhs.reads_metrics()) || (bare_diff(&rhs) && !lhs.reads_metrics());
        if !one_diff {
            return Err(p.error_at(
                at,
                "`@` needs one side to be a `diff(…)` alone and the other a number, e.g. \
                 `diff(acc | w=a vs acc | w=b) > 0 @ 95%`",
            ));
        }
        p.skip_ws();
    }
    if p.peek().is_some() {
        return Err(p.expected(if confidence.is_some() {
            "the end of the claim"
        } else {
            "the end of the claim (a claim has one comparison)"
        }));
    }
    Ok(Claim {
        lhs,
        cmp,
        rhs,
        confidence,
    })
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Inside `diff(`: a `,` followed by a metric and `|` is a side started without `vs`.
    in_diff: bool,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `s` if the input continues with it.
    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.pos + n <= self.chars.len()
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars())
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    /// Consumes the word `w` if the input continues with it and it is not the start of a
    /// longer identifier (`in` but not `index`).
    fn keyword(&mut self, w: &str) -> bool {
        let start = self.pos;
        if self.eat(w) && !self.peek().is_some_and(is_ident_char) {
            return true;
        }
        self.pos = start;
        false
    }

    fn error_at(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            column: pos + 1,
            message: message.into(),
        }
    }

    /// "expected X, found Y" at the current position (whitespace skipped).
    fn expected(&mut self, what: &str) -> ParseError {
        self.skip_ws();
        let found = self.describe_here();
        self.error_at(self.pos, format!("expected {what}, found {found}"))
    }

    fn describe_here(&self) -> String {
        match self.peek() {
            None => "the end of the claim".into(),
            Some(c) if is_ident_start(c) || c.is_ascii_digit() => {
                let word: String = self.chars[self.pos..]
                    .iter()
                    .take_while(|c| is_ident_char(**c))
                    .take(41)
                    .collect();
                match word.char_indices().nth(40) {
                    Some((cut, _)) => format!("`{}…`", &word[..cut]),
                    None => format!("`{word}`"),
                }
            }
            Some(c) => format!("`{c}`"),
        }
    }

    fn expect_char(&mut self, c: char) -> Result<(), ParseError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    /// After `@`: `95%` → 0.95.
    fn confidence(&mut self) -> Result<f64, ParseError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        let Ok(pct) = text.parse::<f64>() else {
            return Err(self.expected("a confidence in percent after `@`, e.g. `@ 95%`"));
        };
        self.skip_ws();
        if self.peek() != Some('%') {
            return Err(self.expected("`%` (a confidence is written in percent: `@ 95%`)"));
        }
        self.pos += 1;
        if !(50.0..100.0).contains(&pct) {
            return Err(self.error_at(
                start,
                format!("a confidence is at least 50% and below 100%, not {text}%"),
            ));
        }
        Ok(pct / 100.0)
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.prod()?;
        loop {
            self.skip_ws();
            let op = match self.peek() {
                Some('+') => BinOp::Add,
                Some('-') => BinOp::Sub,
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Bin(op, Box::new(e), Box::new(self.prod()?));
        }
    }

    fn prod(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        loop {
            self.skip_ws();
            let op = match self.peek() {
                Some('*') => BinOp::Mul,
                Some('/') => BinOp::Div,
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.peek() == Some('-') {
            self.pos += 1;
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                let e = self.sum()?;
                self.expect_char(')')?;
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if is_ident_start(c) => {
                let name = self.ident();
                self.skip_ws();
                let func = FUNCS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
                let agg = AGGS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
                let diff = name == "diff";
                if self.peek() != Some('(') {
                    return Err(if func.is_some() || agg.is_some() || diff {
                        self.expected(&format!("`(` after `{name}`"))
                    } else {
                        self.error_at(
                            start,
                            format!(
                                "`{name}` is neither a number nor a function; a metric is read through an \
                                 aggregate, e.g. `mean({name})`"
                            ),
                        )
                    });
                }
                self.pos += 1;
                if let Some(f) = func {
                    let arg = self.sum()?;
                    self.expect_char(')')?;
                    Ok(Expr::Func(f, Box::new(arg)))
                } else if let Some(a) = agg {
                    let sel = self.selection(start)?;
                    Ok(Expr::Agg(a, sel))
                } else if diff {
                    Ok(Expr::Diff(Box::new(self.diff(start)?)))
                } else {
                    Err(self.error_at(
                        start,
                        format!(
                            "unknown function `{name}` (functions: {}; aggregates: {}; paired \
                             difference: diff)",
                            names(&FUNCS),
                            names(&AGGS)
                        ),
                    ))
                }
            }
            _ => Err(self.expected("a number, `(`, `-`, a function or an aggregate")),
        }
    }

    fn number(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.pos += 1;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            } else {
                // `2e` is not an exponent: leave the `e` for the error that follows.
                self.pos = mark;
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        text.parse::<f64>()
            .map(Expr::Num)
            .map_err(|_| self.error_at(start, format!("`{text}` is not a number")))
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// `METRIC ['|' filter (',' filter)*]`, and where it started.
    fn side(&mut self) -> Result<(usize, String, Vec<Filter>), ParseError> {
        self.skip_ws();
        let start = self.pos;
        if !self.peek().is_some_and(is_ident_start) {
            return Err(self.expected("a metric name"));
        }
        let metric = self.ident();
        let mut filters = Vec::new();
        self.skip_ws();
        if self.peek() == Some('|') {
            self.pos += 1;
            loop {
                filters.push(self.filter()?);
                self.skip_ws();
                if !self.eat(",") {
                    break;
                }
            }
        }
        Ok((start, metric, filters))
    }

    /// After `diff(`: `side 'vs' side ['by' KEY (',' KEY)*] ')'`.
    fn diff(&mut self, start: usize) -> Result<Diff, ParseError> {
        self.in_diff = true;
        let (l_start, l_metric, l_filters) = self.side()?;
        self.in_diff = false;
        let l_end = self.pos;
        self.skip_ws();
        if !self.keyword("vs") {
            let what = if l_filters.is_empty() {
                "`|` or `vs` and the other side, e.g. `diff(acc | w=a vs acc | w=b)`"
            } else {
                "`,` or `vs` and the other side, e.g. `diff(acc | w=a vs acc | w=b)`"
            };
            return Err(self.expected(what));
        }
        let (r_start, r_metric, r_filters) = self.side()?;
        let r_end = self.pos;
        let by = self.by_keys()?;
        self.skip_ws();
        if self.peek() != Some(')') {
            let what = if !by.is_empty() {
                "`,` or `)`"
            } else if r_filters.is_empty() {
                "`|`, `by` or `)`"
            } else {
                "`,`, `by` or `)`"
            };
            return Err(self.expected(what));
        }
        self.pos += 1;
        let text = |a: usize, b: usize| self.chars[a..b].iter().collect::<String>();
        let side = |metric, filters, a, b| Selection {
            metric,
            filters,
            by: Vec::new(),
            text: text(a, b).trim_end().to_owned(),
        };
        Ok(Diff {
            left: side(l_metric, l_filters, l_start, l_end),
            right: side(r_metric, r_filters, r_start, r_end),
            by: if by.is_empty() {
                vec!["seed".to_owned()]
            } else {
                by
            },
            text: text(start, self.pos),
        })
    }

    /// `['by' KEY (',' KEY)*]`.
    fn by_keys(&mut self) -> Result<Vec<String>, ParseError> {
        self.skip_ws();
        let mut by = Vec::new();
        if self.keyword("by") {
            loop {
                self.skip_ws();
                if !self.peek().is_some_and(is_ident_start) {
                    return Err(self.expected("a label key to group by"));
                }
                let key = self.ident();
                if by.contains(&key) {
                    return Err(self.error_at(
                        self.pos - key.chars().count(),
                        format!("`{key}` is listed twice after `by`"),
                    ));
                }
                by.push(key);
                self.skip_ws();
                if !self.eat(",") {
                    break;
                }
            }
        }
        Ok(by)
    }

    /// After `AGG(`: `side ['by' KEY (',' KEY)*] ')'`.
    fn selection(&mut self, start: usize) -> Result<Selection, ParseError> {
        let (_, metric, filters) = self.side()?;
        let by = self.by_keys()?;
        self.skip_ws();
        if self.peek() != Some(')') {
            let what = if !by.is_empty() {
                "`,` or `)`"
            } else if filters.is_empty() {
                "`|`, `by` or `)`"
            } else {
                "`,`, `by` or `)`"
            };
            return Err(self.expected(what));
        }
        self.pos += 1;
        Ok(Selection {
            metric,
            filters,
            by,
            text: self.chars[start..self.pos].iter().collect(),
        })
    }

    fn filter(&mut self) -> Result<Filter, ParseError> {
        self.skip_ws();
        if !self.peek().is_some_and(is_ident_start) {
            return Err(self.expected("a label key"));
        }
        let key = self.ident();
        self.skip_ws();
        let test = if self.eat("!=") {
            Test::Ne(self.value()?)
        } else if self.eat("==") || self.eat("=") {
            Test::Eq(self.value()?)
        } else if self.keyword("in") {
            self.expect_char('[')?;
            let mut values = vec![self.value()?];
            loop {
                self.skip_ws();
                match self.peek() {
                    Some(',') => {
                        self.pos += 1;
                        values.push(self.value()?);
                    }
                    Some(']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.expected("`,` or `]`")),
                }
            }
            Test::In(values)
        } else {
            let hint = if self.in_diff && self.peek() == Some('|') {
                " (the two sides of `diff` are separated by `vs`, not `,`)"
            } else {
                ""
            };
            let e = self.expected(&format!("`=`, `!=` or `in` after the label key `{key}`"));
            return Err(ParseError {
                message: format!("{}{hint}", e.message),
                ..e
            });
        };
        Ok(Filter { key, test })
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                let body = self.pos;
                while self.peek().is_some_and(|c| c != q) {
                    self.pos += 1;
                }
                if self.peek().is_none() {
                    return Err(self.error_at(start, "unterminated string"));
                }
                let s: String = self.chars[body..self.pos].iter().collect();
                self.pos += 1;
                Ok(Value::String(s))
            }
            Some(c) if is_word_char(c) => {
                while self.peek().is_some_and(is_word_char) {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                Ok(bare_value(&word))
            }
            _ => Err(self.expected("a value (a number, a word or a quoted string)")),
        }
    }
}

/// A bare word's JSON value: `true`/`false`/`null`, a number when it reads as one (integers
/// stay integers, so they compare exactly), else a string.
fn bare_value(word: &str) -> Value {
    match word {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = word.parse::<i64>() {
        return Value::from(i);
    }
    // Letters never start a number here, so `inf` and `nan` stay words.
    let numeric_start = word.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c));
    match word.parse::<f64>() {
        Ok(x) if numeric_start && x.is_finite() => Value::from(x),
        _ => Value::String(word.to_owned()),
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.+-".contains(c)
}

fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agg(a: Agg, metric: &str, filters: Vec<Filter>, text: &str) -> Expr {
        Expr::Agg(
            a,
            Selection {
                metric: metric.into(),
                filters,
                by: Vec::new(),
                text: text.into(),
            },
        )
    }

    fn num(x: f64) -> Box<Expr> {
        Box::new(Expr::Num(x))
    }

    fn err(source: &str) -> (usize, String) {
        let e = parse(source).expect_err(source);
        (e.column, e.message)
    }

    #[test]
    fn precedence_and_associativity() {
        // 1 + 2 * 3 - 4 / 2 parses as (1 + (2 * 3)) - (4 / 2).
        let c = parse("1 + 2 * 3 - 4 / 2 > 0").unwrap();
        assert_eq!(
            c.lhs,
            Expr::Bin(
                BinOp::Sub,
                Box::new(Expr::Bin(
                    BinOp::Add,
                    num(1.0),
                    Box::new(Expr::Bin(BinOp::Mul, num(2.0), num(3.0)))
                )),
                Box::new(Expr::Bin(BinOp::Div, num(4.0), num(2.0)))
            )
        );
        assert_eq!(c.cmp, Cmp::Gt);
        // Parentheses override; division is left-associative.
        let c = parse("(1 + 2) * 3 == 8 / 4 / 2").unwrap();
        assert_eq!(
            c.lhs,
            Expr::Bin(
                BinOp::Mul,
                Box::new(Expr::Bin(BinOp::Add, num(1.0), num(2.0))),
                num(3.0)
            )
        );
        assert_eq!(
            c.rhs,
            Expr::Bin(
                BinOp::Div,
                Box::new(Expr::Bin(BinOp::Div, num(8.0), num(4.0))),
                num(2.0)
            )
        );
    }

    #[test]
    fn unary_minus_binds_tighter_than_products() {
        let c = parse("-2 * -x_fn_free(1) < 0").map(|_| ()).unwrap_err();
        assert_eq!(c.column, 7);
        let c = parse("- -2 * 3 <= -(1 - 4)").unwrap();
        assert_eq!(
            c.lhs,
            Expr::Bin(
                BinOp::Mul,
                Box::new(Expr::Neg(Box::new(Expr::Neg(num(2.0))))),
                num(3.0)
            )
        );
        assert_eq!(
            c.rhs,
            Expr::Neg(Box::new(Expr::Bin(BinOp::Sub, num(1.0), num(4.0))))
        );
        assert_eq!(parse("1 - -1 != 2e-3").unwrap().rhs, Expr::Num(0.002));
    }

    #[test]
    fn every_comparison() {
        for (s, cmp) in [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
        ] {
            assert_eq!(parse(&format!("1{s}2")).unwrap().cmp, cmp);
        }
    }

    #[test]
    fn functions_and_aggregates() {
        let c = parse("sqrt(abs(log(exp(2)))) >= count(acc_2n)").unwrap();
        assert_eq!(
            c.lhs,
            Expr::Func(
                Func::Sqrt,
                Box::new(Expr::Func(
                    Func::Abs,
                    Box::new(Expr::Func(
                        Func::Log,
                        Box::new(Expr::Func(Func::Exp, num(2.0)))
                    ))
                ))
            )
        );
        assert_eq!(c.rhs, agg(Agg::Count, "acc_2n", vec![], "count(acc_2n)"));
        for (name, a) in AGGS {
            let c = parse(&format!("{name}( m.x ) > 0")).unwrap();
            assert_eq!(c.lhs, agg(a, "m.x", vec![], &format!("{name}( m.x )")));
        }
    }

    #[test]
    fn filters() {
        let c = parse(
            "max(params | weights=shared, steps != 8, lipschitz!=null, form in [c1, 'c 2', \"x\", 1.5, true]) \
             <= 0.25 * min(params|weights==\"unshared\")",
        )
        .unwrap();
        let Expr::Agg(Agg::Max, sel) = &c.lhs else {
            panic!("{c:?}")
        };
        assert_eq!(sel.metric, "params");
        assert_eq!(
            sel.filters,
            vec![
                Filter {
                    key: "weights".into(),
                    test: Test::Eq(json!("shared"))
                },
                Filter {
                    key: "steps".into(),
                    test: Test::Ne(json!(8))
                },
                Filter {
                    key: "lipschitz".into(),
                    test: Test::Ne(json!(null))
                },
                Filter {
                    key: "form".into(),
                    test: Test::In(vec![
                        json!("c1"),
                        json!("c 2"),
                        json!("x"),
                        json!(1.5),
                        json!(true)
                    ])
                },
            ]
        );
        assert!(sel.text.starts_with("max(params | weights=shared"));
        assert!(sel.text.ends_with("true])"));
        let Expr::Bin(BinOp::Mul, _, rhs) = &c.rhs else {
            panic!("{c:?}")
        };
        assert_eq!(
            **rhs,
            agg(
                Agg::Min,
                "params",
                vec![Filter {
                    key: "weights".into(),
                    test: Test::Eq(json!("unshared"))
                }],
                "min(params|weights==\"unshared\")"
            )
        );
    }

    #[test]
    fn bare_values() {
        assert_eq!(bare_value("8"), json!(8));
        assert_eq!(bare_value("-3"), json!(-3));
        assert_eq!(bare_value("0.5"), json!(0.5));
        assert_eq!(bare_value("1e-3"), json!(0.001));
        assert_eq!(bare_value(".5"), json!(0.5));
        assert_eq!(bare_value("false"), json!(false));
        assert_eq!(bare_value("null"), json!(null));
        assert_eq!(bare_value("inf"), json!("inf"));
        assert_eq!(bare_value("nan"), json!("nan"));
        assert_eq!(bare_value("encoder-decoder"), json!("encoder-decoder"));
        assert_eq!(bare_value("1.2.3"), json!("1.2.3"));
        assert_eq!(bare_value("rk4"), json!("rk4"));
    }

    #[test]
    fn errors_point_at_their_column() {
        // 1-based character columns.
        assert_eq!(
            err("mean(acc_2n | weights=shared >= 1"),
            (30, "expected `,`, `by` or `)`, found `>`".into())
        );
        assert_eq!(
            err("mean(acc >= 1"),
            (10, "expected `|`, `by` or `)`, found `>`".into())
        );
        assert_eq!(
            err("mean(acc)"),
            (
                10,
                "expected a comparison (`>=`, `<=`, `>`, `<`, `==` or `!=`), found the end of the claim".into()
            )
        );
        assert_eq!(
            err("mean(acc) = 1"),
            (
                11,
                "expected a comparison, found `=` (equality is `==`)".into()
            )
        );
        assert_eq!(
            err("1 < 2 < 3"),
            (
                7,
                "expected the end of the claim (a claim has one comparison), found `<`".into()
            )
        );
        assert_eq!(
            err("acc > 1"),
            (
                1,
                "`acc` is neither a number nor a function; a metric is read through an aggregate, e.g. `mean(acc)`"
                    .into()
            )
        );
        assert_eq!(
            err("1 > avg(acc)"),
            (
                5,
                "unknown function `avg` (functions: abs, exp, log, sqrt; aggregates: count, max, mean, median, \
                 min, std, sum; paired difference: diff)"
                    .into()
            )
        );
        assert_eq!(
            err("1 > mean acc"),
            (10, "expected `(` after `mean`, found `acc`".into())
        );
        assert_eq!(
            err("1 > (2"),
            (7, "expected `)`, found the end of the claim".into())
        );
        assert_eq!(
            err("1 > abs(2"),
            (10, "expected `)`, found the end of the claim".into())
        );
        assert_eq!(
            err("1 > * 2"),
            (
                5,
                "expected a number, `(`, `-`, a function or an aggregate, found `*`".into()
            )
        );
        assert_eq!(
            err("mean(1acc) > 0"),
            (6, "expected a metric name, found `1acc`".into())
        );
        assert_eq!(
            err("mean(acc | ) > 0"),
            (12, "expected a label key, found `)`".into())
        );
        assert_eq!(
            err("mean(acc | w > 1) > 0"),
            (
                14,
                "expected `=`, `!=` or `in` after the label key `w`, found `>`".into()
            )
        );
        assert_eq!(
            err("mean(acc | w = ) > 0"),
            (
                16,
                "expected a value (a number, a word or a quoted string), found `)`".into()
            )
        );
        assert_eq!(
            err("mean(acc | w = 'abc) > 0"),
            (16, "unterminated string".into())
        );
        assert_eq!(
            err("mean(acc | w in c1) > 0"),
            (17, "expected `[`, found `c1`".into())
        );
        assert_eq!(
            err("mean(acc | w in [c1 c2]) > 0"),
            (21, "expected `,` or `]`, found `c2`".into())
        );
        assert_eq!(err("1.2.3 > 0"), (1, "`1.2.3` is not a number".into()));
        assert_eq!(
            err("2e > 0"),
            (
                2,
                "expected a comparison (`>=`, `<=`, `>`, `<`, `==` or `!=`), found `e`".into()
            )
        );
        assert_eq!(
            err(""),
            (
                1,
                "expected a number, `(`, `-`, a function or an aggregate, found the end of the claim".into()
            )
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // `é` is two bytes; the caret still lands under the `>`.
        let e = parse("mean(acc | w='é' >= 1").unwrap_err();
        assert_eq!(e.column, 18);
        assert_eq!(
            e.render("mean(acc | w='é' >= 1"),
            "expected `,`, `by` or `)`, found `>` at column 18\n    mean(acc | w='é' >= 1\n                     ^"
        );
    }

    #[test]
    fn a_huge_claim_is_shown_as_a_window_around_the_error() {
        let source = format!("mean(acc) >= 1 {}", "x".repeat(1 << 20));
        let e = parse(&source).unwrap_err();
        let text = e.render(&source);
        assert!(text.len() < 400, "{} bytes", text.len());
        let lines: Vec<&str> = text.lines().collect();
        let caret = lines[2].chars().count() - 1;
        assert_eq!(lines[1].chars().nth(caret), Some('x'), "{text}");
        assert!(lines[1].ends_with('…'));
    }

    #[test]
    fn by_groups_after_the_filters() {
        let c =
            parse("max(infill_em | arch=decoder by objective, mode_tokens) > count(em by seed)")
                .unwrap();
        let Expr::Agg(Agg::Max, sel) = &c.lhs else {
            panic!("{c:?}")
        };
        assert_eq!(sel.metric, "infill_em");
        assert_eq!(
            sel.filters,
            vec![Filter {
                key: "arch".into(),
                test: Test::Eq(json!("decoder"))
            }]
        );
        assert_eq!(sel.by, ["objective", "mode_tokens"]);
        assert_eq!(
            sel.text,
            "max(infill_em | arch=decoder by objective, mode_tokens)"
        );
        let Expr::Agg(Agg::Count, sel) = &c.rhs else {
            panic!("{c:?}")
        };
        assert!(sel.filters.is_empty());
        assert_eq!(sel.by, ["seed"]);
        // `by` is a keyword only where a filter list could end: a key or metric named `by`,
        // or starting with it, is still a name.
        let c = parse("mean(by | by=1, byte=2 by bytes) > 0").unwrap();
        let Expr::Agg(Agg::Mean, sel) = &c.lhs else {
            panic!("{c:?}")
        };
        assert_eq!(sel.metric, "by");
        assert_eq!(sel.filters.len(), 2);
        assert_eq!(sel.by, ["bytes"]);
        assert_eq!(
            err("max(em by) > 0"),
            (10, "expected a label key to group by, found `)`".into())
        );
        assert_eq!(
            err("max(em by a b) > 0"),
            (13, "expected `,` or `)`, found `b`".into())
        );
        assert_eq!(
            err("max(em by a, a) > 0"),
            (14, "`a` is listed twice after `by`".into())
        );
        assert_eq!(
            err("max(em | a=1 bye) > 0"),
            (14, "expected `,`, `by` or `)`, found `bye`".into())
        );
    }

    #[test]
    fn diff_pairs_two_sides_by_seed_unless_told() {
        let c = parse("diff(acc | w=shared, steps=8 vs acc | w=unshared) > 0 @ 95%").unwrap();
        assert_eq!(c.confidence, Some(0.95));
        let Expr::Diff(d) = &c.lhs else {
            panic!("{c:?}")
        };
        assert_eq!(d.left.text, "acc | w=shared, steps=8");
        assert_eq!(d.left.filters.len(), 2);
        assert_eq!(d.right.text, "acc | w=unshared");
        assert_eq!(d.by, ["seed"]);
        assert_eq!(d.text, "diff(acc | w=shared, steps=8 vs acc | w=unshared)");
        let c = parse("0.01 <= diff(em vs em_wrong by seed, data) @ 99.5 %").unwrap();
        let Expr::Diff(d) = &c.rhs else {
            panic!("{c:?}")
        };
        assert_eq!(d.by, ["seed", "data"]);
        assert_eq!(c.confidence, Some(0.995));
        // Without `@`, a diff is a number like any other.
        let c = parse("2 * diff(a vs b) > 0.1").unwrap();
        assert_eq!(c.confidence, None);
    }

    #[test]
    fn confidence_errors_point_at_their_column() {
        let cases = [
            (
                "diff(acc | w=a, acc | w=b) > 0",
                21,
                "expected `=`, `!=` or `in` after the label key `acc`, found `|` (the two sides \
                 of `diff` are separated by `vs`, not `,`)",
            ),
            (
                "diff(acc | w=a) > 0",
                15,
                "expected `,` or `vs` and the other side, e.g. `diff(acc | w=a vs acc | w=b)`, \
                 found `)`",
            ),
            (
                "diff(acc | w=a vs acc | w=b) == 0 @ 95%",
                35,
                "`@` asks that a difference lie on one side of a bound with that confidence: \
                 compare with `>`, `>=`, `<` or `<=`",
            ),
            (
                "mean(acc | w=a) > 0.5 @ 95%",
                23,
                "`@` needs one side to be a `diff(…)` alone and the other a number, e.g. \
                 `diff(acc | w=a vs acc | w=b) > 0 @ 95%`",
            ),
            (
                "diff(a vs b) > mean(a) @ 95%",
                24,
                "`@` needs one side to be a `diff(…)` alone and the other a number, e.g. \
                 `diff(acc | w=a vs acc | w=b) > 0 @ 95%`",
            ),
            (
                "diff(a vs b) > 0 @ 0.95",
                24,
                "expected `%` (a confidence is written in percent: `@ 95%`), found the end of \
                 the claim",
            ),
            (
                "diff(a vs b) > 0 @ 100%",
                20,
                "a confidence is at least 50% and below 100%, not 100%",
            ),
            (
                "diff(a vs b) > 0 @ high",
                20,
                "expected a confidence in percent after `@`, e.g. `@ 95%`, found `high`",
            ),
            (
                "diff(a vs b) > 0 @ 95% x",
                24,
                "expected the end of the claim, found `x`",
            ),
            ("diff > 0", 6, "expected `(` after `diff`, found `>`"),
        ];
        for (source, column, message) in cases {
            assert_eq!(err(source), (column, message.to_owned()), "{source}");
        }
    }

    #[test]
    fn a_key_starting_with_in_is_not_the_in_operator() {
        assert_eq!(
            err("mean(acc | w index) > 0"),
            (
                14,
                "expected `=`, `!=` or `in` after the label key `w`, found `index`".into()
            )
        );
    }
}
