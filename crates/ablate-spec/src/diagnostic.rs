//! Problems found in a pipeline file, and how they are rendered: one block per problem with
//! `file:line:col` and a caret excerpt, in the style of casey/just and rustc.

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

/// A pipeline file as read: its path (as given, for messages) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The text of 1-based line `line`, without its line ending.
    pub fn line(&self, line: u32) -> Option<&str> {
        let index = usize::try_from(line).ok()?.checked_sub(1)?;
        self.text.lines().nth(index)
    }
}

/// A place in a source file: 1-based line and column counted in characters, and a length in
/// characters (at least 1). A span that runs past the end of its line is clamped when rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl Span {
    pub fn new(line: u32, col: u32, len: u32) -> Self {
        Self {
            line: line.max(1),
            col: col.max(1),
            len: len.max(1),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem. Built fluently:
/// `Diagnostic::error("unknown key `stagse`").at(span).label("unknown key").help("did you mean `stages`?")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Where in the file; `None` for problems with no place in it (a command-line override,
    /// an unreadable file).
    pub span: Option<Span>,
    /// Short text printed after the carets.
    pub label: Option<String>,
    /// Printed as `= hint: …` under the excerpt.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, message: impl Into<String>) -> Self {
        Self {
            severity,
            message: message.into(),
            span: None,
            label: None,
            help: None,
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Severity::Error, message)
    }
    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, message)
    }
    #[must_use]
    pub fn at(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// Sets the help only when there is one (handy with [`crate::did_you_mean`]).
    #[must_use]
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders this diagnostic alone, with an excerpt from `source` when it has a span.
    pub fn render(&self, source: Option<&SourceFile>) -> String {
        let mut out = String::new();
        self.render_into(&mut out, source)
            .expect("writing to a String cannot fail");
        out
    }

    fn render_into(&self, out: &mut String, source: Option<&SourceFile>) -> fmt::Result {
        write!(out, "{}: {}", self.severity, self.message)?;
        let Some(span) = self.span else {
            if let Some(help) = &self.help {
                write!(out, "\n  = hint: {help}")?;
            }
            return Ok(());
        };
        let width = span.line.to_string().len();
        let blank = " ".repeat(width);
        let Some(source) = source else {
            write!(out, "\n{blank} --> {}:{}", span.line, span.col)?;
            if let Some(help) = &self.help {
                write!(out, "\n {blank} = hint: {help}")?;
            }
            return Ok(());
        };
        write!(
            out,
            "\n{blank} --> {}:{}:{}",
            source.path.display(),
            span.line,
            span.col
        )?;
        if let Some(line) = source.line(span.line) {
            let (text, carets_at, carets) = excerpt(line, span.col, span.len);
            write!(out, "\n {blank} |")?;
            write!(out, "\n {:>width$} | {text}", span.line)?;
            write!(
                out,
                "\n {blank} | {}{}",
                " ".repeat(carets_at),
                "^".repeat(carets)
            )?;
            if let Some(label) = &self.label {
                write!(out, " {label}")?;
            }
        }
        if let Some(help) = &self.help {
            write!(out, "\n {blank} |\n {blank} = hint: {help}")?;
        }
        Ok(())
    }
}

/// Tabs are as wide as this many spaces in excerpts.
const TAB_WIDTH: usize = 4;

/// The line as displayed (tabs expanded, trailing whitespace dropped), the display column
/// where the carets start, and how many carets (at least one; clamped to the end of the line).
fn excerpt(line: &str, col: u32, len: u32) -> (String, usize, usize) {
    let start = col.saturating_sub(1) as usize;
    let end = start.saturating_add(len.max(1) as usize);
    let mut text = String::with_capacity(line.len());
    let (mut carets_at, mut carets) = (None, 0);
    for (i, c) in line.chars().enumerate() {
        let width = if c == '\t' { TAB_WIDTH } else { 1 };
        if i == start {
            carets_at = Some(text.chars().count());
        }
        if (start..end).contains(&i) {
            carets += width;
        }
        if c == '\t' {
            text.push_str(&" ".repeat(TAB_WIDTH));
        } else {
            text.push(c);
        }
    }
    // A span at (or past) the end of the line, e.g. an empty value: one caret after the text.
    let carets_at = carets_at.unwrap_or_else(|| text.chars().count());
    let text = text.trim_end().to_owned();
    (text, carets_at, carets.max(1))
}

impl fmt::Display for Diagnostic {
    /// The message alone (no source to excerpt); see [`Diagnostics`] for the full rendering.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(None))
    }
}

/// Every problem found in one pipeline file, with the file they point into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub source: Option<Arc<SourceFile>>,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(source: Option<Arc<SourceFile>>) -> Self {
        Self {
            source,
            items: Vec::new(),
        }
    }
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        self.items.extend(iter);
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl fmt::Display for Diagnostics {
    /// Every item, one block each, separated by a blank line; no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            f.write_str(&item.render(self.source.as_deref()))?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// An error and its causes on one line, `outer: inner: innermost` — for messages that end up
/// in a single field (an event, a hint) rather than rendered by the CLI.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> SourceFile {
        SourceFile::new("pipelines/bad.yaml", text)
    }

    #[test]
    fn renders_like_the_reference() {
        let src = source("name: x\ndescription: y\nstagse:\n  a: {}\n");
        let d = Diagnostic::error("unknown key `stagse` in the pipeline")
            .at(Span::new(3, 1, 6))
            .label("unknown key")
            .help("did you mean `stages`?");
        assert_eq!(
            d.render(Some(&src)),
            "error: unknown key `stagse` in the pipeline
  --> pipelines/bad.yaml:3:1
   |
 3 | stagse:
   | ^^^^^^ unknown key
   |
   = hint: did you mean `stages`?"
        );
    }

    #[test]
    fn gutter_fits_the_line_number_and_carets_follow_the_column() {
        let text = format!("{}  steps: four\n", "#\n".repeat(11));
        let d = Diagnostic::error("bad")
            .at(Span::new(12, 10, 4))
            .label("expected an integer");
        assert_eq!(
            d.render(Some(&source(&text))),
            "error: bad
   --> pipelines/bad.yaml:12:10
    |
 12 |   steps: four
    |          ^^^^ expected an integer"
        );
    }

    #[test]
    fn tabs_become_spaces_and_carets_still_line_up() {
        let d = Diagnostic::error("bad").at(Span::new(1, 5, 3));
        assert_eq!(
            d.render(Some(&source("a:\t\tbad # x"))),
            "error: bad
  --> pipelines/bad.yaml:1:5
   |
 1 | a:        bad # x
   |           ^^^"
        );
    }

    #[test]
    fn carets_are_clamped_to_the_line_end_and_never_fewer_than_one() {
        let src = source("run: |\n  echo hi\nx: 1\n");
        // A block scalar's span covers several lines: underline to the end of the first only.
        let d = Diagnostic::error("bad").at(Span::new(2, 3, 40));
        assert!(
            d.render(Some(&src))
                .ends_with(" 2 |   echo hi\n   |   ^^^^^^^"),
            "{}",
            d.render(Some(&src))
        );
        // An empty value at the end of a line: one caret just past the text.
        let d = Diagnostic::error("bad").at(Span::new(1, 7, 1));
        assert!(
            d.render(Some(&source("stages:\n")))
                .ends_with(" 1 | stages:\n   |       ^")
        );
    }

    #[test]
    fn without_a_span_there_is_no_excerpt() {
        let d = Diagnostic::error("in `--set x.params.lr=a`: no stage named `x`")
            .help("did you mean `y`?");
        assert_eq!(
            d.render(Some(&source(""))),
            "error: in `--set x.params.lr=a`: no stage named `x`\n  = hint: did you mean `y`?"
        );
    }

    #[test]
    fn diagnostics_render_every_item_separated_by_a_blank_line() {
        let mut all = Diagnostics::new(Some(Arc::new(source("a: 1\nb: 2\n"))));
        assert!(all.is_empty() && !all.has_errors());
        all.push(Diagnostic::error("first").at(Span::new(1, 1, 1)));
        all.push(
            Diagnostic::warning("second")
                .at(Span::new(2, 4, 1))
                .label("here"),
        );
        assert!(all.has_errors());
        assert_eq!(all.error_count(), 1);
        assert_eq!(
            all.to_string(),
            "error: first
  --> pipelines/bad.yaml:1:1
   |
 1 | a: 1
   | ^

warning: second
  --> pipelines/bad.yaml:2:4
   |
 2 | b: 2
   |    ^ here"
        );
    }
}
