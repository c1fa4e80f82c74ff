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

/// The most display columns of a source line an excerpt shows: a longer line is cut around the
/// span, with `…` where text is left out (a 100 MB `description:` line once made a 209 MB error).
const EXCERPT_WIDTH: usize = 120;

/// Columns kept before the span when a long line is cut on the left.
const CONTEXT_BEFORE: usize = 40;

/// The line as displayed (tabs expanded, trailing whitespace dropped, cut to
/// [`EXCERPT_WIDTH`] columns around the span), the display column where the carets start, and
/// how many carets (at least one; clamped to the end of the line or of the cut).
fn excerpt(line: &str, col: u32, len: u32) -> (String, usize, usize) {
    let start = col.saturating_sub(1) as usize;
    let end = start.saturating_add(len.max(1) as usize);
    let width = |c: char| if c == '\t' { TAB_WIDTH } else { 1 };
    // Display columns: where the span starts and ends, the line's end, and its end once
    // trailing whitespace is dropped.
    let (mut from, mut to, mut total, mut trimmed) = (None, None, 0, 0);
    for (i, c) in line.chars().enumerate() {
        if i == start {
            from = Some(total);
        }
        if i == end {
            to = Some(total);
        }
        total += width(c);
        if !c.is_whitespace() {
            trimmed = total;
        }
    }
    // A span at (or past) the end of the line, e.g. an empty value: one caret after the text.
    let from = from.unwrap_or(total);
    let carets = to.unwrap_or(total).saturating_sub(from);

    let (window, cut_left) = if trimmed <= EXCERPT_WIDTH {
        (0..trimmed, false)
    } else {
        let left = if from + carets <= EXCERPT_WIDTH {
            0
        } else {
            from.saturating_sub(CONTEXT_BEFORE)
                .min(trimmed - EXCERPT_WIDTH)
        };
        (left..left + EXCERPT_WIDTH, left > 0)
    };
    let cut_right = window.end < trimmed;

    let mut text = String::with_capacity(window.len() + 2 * '…'.len_utf8());
    if cut_left {
        text.push('…');
    }
    let mut column = 0;
    for c in line.chars() {
        if column >= window.end {
            break;
        }
        let next = column + width(c);
        if next > window.start {
            if c == '\t' {
                // A tab straddling a cut keeps the spaces that fall inside the window.
                let shown = next.min(window.end) - column.max(window.start);
                text.extend(std::iter::repeat_n(' ', shown));
            } else {
                text.push(c);
            }
        }
        column = next;
    }
    if cut_right {
        text.push('…');
    }
    let carets_at = from.saturating_sub(window.start) + usize::from(cut_left);
    let carets = if cut_right {
        carets.min(window.end.saturating_sub(from))
    } else {
        carets
    };
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

/// How many diagnostics are rendered: a file with thousands of bad values gets a report of
/// its first problems and a count of the rest, not megabytes of errors.
pub const MAX_RENDERED: usize = 50;

impl fmt::Display for Diagnostics {
    /// Every item (the first [`MAX_RENDERED`], then a count of the rest), one block each,
    /// separated by a blank line; no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().take(MAX_RENDERED).enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            f.write_str(&item.render(self.source.as_deref()))?;
        }
        if let Some(more) = self
            .items
            .len()
            .checked_sub(MAX_RENDERED)
            .filter(|&n| n > 0)
        {
            write!(f, "\n\n… and {more} more problem(s), not shown")?;
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

    /// The excerpt and caret lines of `d` rendered against `line`.
    fn excerpt_lines(line: &str, span: Span) -> (String, String) {
        let out = Diagnostic::error("bad")
            .at(span)
            .render(Some(&source(line)));
        let lines: Vec<&str> = out.lines().collect();
        let gutter = lines[3].find("| ").unwrap() + 2;
        (lines[3][gutter..].to_owned(), lines[4][gutter..].to_owned())
    }

    /// A 100 MB `description:` line with an error once printed 209 MB of stderr: the excerpt
    /// shows a window of the line around the span, `…` where text was cut.
    #[test]
    fn a_long_line_is_cut_around_the_span_and_the_carets_still_point_at_it() {
        let before = "a".repeat(1_000_000);
        let line = format!(
            "x: {{ d: {before}, steps: four, e: {} }}",
            "b".repeat(1_000_000)
        );
        let col = line.find("four").unwrap() + 1;
        let d = Diagnostic::error("bad")
            .at(Span::new(1, col as u32, 4))
            .label("here");
        let out = d.render(Some(&source(&line)));
        assert!(out.len() < 1_000, "{} bytes", out.len());
        let (text, carets) = excerpt_lines(&line, Span::new(1, col as u32, 4));
        assert!(text.starts_with('…') && text.ends_with('…'), "{text}");
        assert_eq!(text.chars().count(), EXCERPT_WIDTH + 2);
        let at = carets.find('^').unwrap();
        assert_eq!(carets.trim(), "^^^^");
        let shown: String = text.chars().skip(at).take(4).collect();
        assert_eq!(shown, "four");
        assert_eq!(
            at,
            CONTEXT_BEFORE + 1,
            "40 columns of context after the `…`"
        );
        assert!(out.ends_with("^^^^ here"), "{out}");
    }

    #[test]
    fn a_span_near_either_end_of_a_long_line_is_cut_on_one_side_only() {
        let line = format!("retries: two # {}", "c".repeat(500));
        let (text, carets) = excerpt_lines(&line, Span::new(1, 10, 3));
        assert!(text.starts_with("retries: two # ccc") && text.ends_with("c…"));
        assert_eq!(text.chars().count(), EXCERPT_WIDTH + 1);
        assert_eq!(carets, "         ^^^");

        // At the end: the last 120 columns, and a caret after the text for an empty value.
        let line = format!("description: {}, key:", "é".repeat(500));
        let len = line.chars().count() as u32;
        let (text, carets) = excerpt_lines(&line, Span::new(1, len + 1, 1));
        assert!(
            text.starts_with("…éé") && text.ends_with("é, key:"),
            "{text}"
        );
        assert_eq!(text.chars().count(), EXCERPT_WIDTH + 1);
        assert_eq!(carets.find('^'), Some(EXCERPT_WIDTH + 1));

        // A span longer than the window is underlined to the cut.
        let line = format!("run: {}", "z".repeat(1_000));
        let (text, carets) = excerpt_lines(&line, Span::new(1, 6, 1_000));
        assert!(text.ends_with('…'));
        assert_eq!(carets.trim_start().len(), EXCERPT_WIDTH - 5);
    }

    #[test]
    fn cutting_counts_tabs_as_their_width_and_never_splits_a_character() {
        // Multi-byte characters on both sides of the cuts.
        let line = format!("{}\t✓ bad {}", "ß".repeat(300), "日".repeat(300));
        let col = 300 + 3 + 1; // after the ß, the tab, `✓` and a space
        let (text, carets) = excerpt_lines(&line, Span::new(1, col, 3));
        let at = carets.find('^').unwrap();
        assert_eq!(text.chars().skip(at).take(3).collect::<String>(), "bad");
        assert!(text.contains("ß    ✓ bad 日"), "{text}");
        // A tab cut by the window keeps only the spaces inside it.
        let line = format!("{}\tx{}", "a".repeat(159), "b".repeat(300));
        let (text, carets) = excerpt_lines(&line, Span::new(1, 161, 1));
        let at = carets.find('^').unwrap();
        assert_eq!(text.chars().nth(at), Some('x'));
        assert_eq!(text.chars().count(), EXCERPT_WIDTH + 2);
    }

    #[test]
    fn a_line_of_exactly_the_width_is_not_cut() {
        let line = "w".repeat(EXCERPT_WIDTH);
        let (text, _) = excerpt_lines(&format!("{line}   "), Span::new(1, 1, 1));
        assert_eq!(text, line);
        let (text, _) = excerpt_lines(&format!("{line}w"), Span::new(1, 1, 1));
        assert_eq!(text, format!("{line}…"));
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
    fn thousands_of_problems_render_the_first_and_a_count() {
        let mut all = Diagnostics::new(Some(Arc::new(source("a: 1\n"))));
        for i in 0..3000 {
            all.push(Diagnostic::error(format!("problem {i}")).at(Span::new(1, 1, 1)));
        }
        let text = all.to_string();
        assert!(text.len() < 10_000, "{} bytes", text.len());
        assert!(text.contains("problem 49") && !text.contains("problem 50"));
        assert!(
            text.ends_with("… and 2950 more problem(s), not shown"),
            "{text}"
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
