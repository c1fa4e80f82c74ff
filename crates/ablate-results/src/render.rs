//! Tables as text: GitHub Markdown for report files, aligned columns for the terminal.

use crate::table::{ColumnData, Table};

/// Significant digits kept when a float is rendered without an explicit precision.
const SIGNIFICANT_DIGITS: i32 = 4;

/// Renders `table` as a GitHub pipe table, padded so the source lines up too. Numbers are
/// right-aligned, floats keep 4 significant digits, nulls are empty cells.
pub fn render_markdown(table: &Table) -> String {
    if table.columns.is_empty() {
        return String::new();
    }
    let header: Vec<String> = table.column_names().map(escape_markdown).collect();
    let align: Vec<Align> = table.columns.iter().map(|c| Align::of(&c.data)).collect();
    let rows = cells(table, escape_markdown);
    markdown_table(&header, &align, &rows)
}

/// Renders `table` as aligned plain text for a terminal: a header, a dashed rule, one line per
/// row, columns two spaces apart. Numbers are right-aligned, nulls are blank.
pub fn render_text(table: &Table) -> String {
    if table.columns.is_empty() {
        return String::new();
    }
    let header: Vec<String> = table.column_names().map(escape_text).collect();
    let align: Vec<Align> = table.columns.iter().map(|c| Align::of(&c.data)).collect();
    let rows = cells(table, escape_text);
    let widths = column_widths(&header, &rows);

    let mut out = String::new();
    let mut line = |cells: &[String], align: &dyn Fn(usize) -> Align| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| pad(cell, widths[i], align(i)))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header, &|i| align[i]);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    line(&rule, &|_| Align::Left);
    for row in &rows {
        line(row, &|i| align[i]);
    }
    out
}

/// A float in at most 4 significant digits, trailing zeros dropped (`0.9123`, `1235`, `0.5`),
/// switching to exponent notation for very large or small magnitudes (`1.235e7`, `1.2e-5`).
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        let formatted = format!("{:.*e}", (SIGNIFICANT_DIGITS - 1) as usize, x);
        let (mantissa, exponent) = formatted
            .split_once('e')
            .expect("`{:e}` writes an exponent");
        return format!("{}e{exponent}", trim_fraction(mantissa));
    }
    let decimals = (SIGNIFICANT_DIGITS - 1 - magnitude).max(0) as usize;
    trim_fraction(&format!("{x:.decimals$}")).to_owned()
}

/// A metric value as people read it, wherever ablate shows one (a run's `done` lines, `ablate
/// show`, table cells): an exact integer as one (`4498500`, not `4.498e6`: counts and sums are
/// metrics too) while it has at most 12 digits; anything else as [`format_float`] (`0.9123`,
/// `1.07e23`, not `106974173085717231566848.0000`) (#21).
pub fn format_metric(x: f64) -> String {
    if x == 0.0 {
        // `-0` too.
        return "0".to_owned();
    }
    if x.fract() == 0.0 && x.abs() < 1e12 {
        return format!("{x:.0}");
    }
    format_float(x)
}

/// A time in microseconds since the Unix epoch as a date, `2026-12-06 06:30:05 UTC`: what tables
/// and listings print instead of the raw number (#21). UTC, so the text is the same everywhere.
pub fn format_timestamp_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `1.2300` → `1.23`, `2.000` → `2`, `-0.000` → `0`.
fn trim_fraction(s: &str) -> &str {
    let trimmed = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    };
    if trimmed == "-0" { "0" } else { trimmed }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

impl Align {
    fn of(data: &ColumnData) -> Self {
        if data.is_numeric() {
            Align::Right
        } else {
            Align::Left
        }
    }
}

/// Every cell of `table` as text, row-major, with `escape` applied to strings.
fn cells(table: &Table, escape: fn(&str) -> String) -> Vec<Vec<String>> {
    (0..table.num_rows())
        .map(|row| {
            table
                .columns
                .iter()
                .map(|c| match &c.data {
                    ColumnData::Bool(v) => v[row].map(|b| b.to_string()).unwrap_or_default(),
                    ColumnData::Int(v) => v[row].map(|i| i.to_string()).unwrap_or_default(),
                    ColumnData::Float(v) => v[row].map(format_metric).unwrap_or_default(),
                    ColumnData::Str(v) => v[row].as_deref().map(escape).unwrap_or_default(),
                })
                .collect()
        })
        .collect()
}

/// A padded GitHub pipe table; cells must already be escaped.
pub fn markdown_table(header: &[String], align: &[Align], rows: &[Vec<String>]) -> String {
    // GitHub needs at least three dashes in the delimiter row.
    let widths: Vec<usize> = column_widths(header, rows)
        .into_iter()
        .map(|w| w.max(3))
        .collect();
    let line = |cells: &mut dyn Iterator<Item = String>| {
        format!("| {} |\n", cells.collect::<Vec<_>>().join(" | "))
    };

    let mut out = line(
        &mut header
            .iter()
            .enumerate()
            .map(|(i, h)| pad(h, widths[i], align[i])),
    );
    out += &line(&mut widths.iter().zip(align).map(|(&w, a)| match a {
        Align::Left => "-".repeat(w),
        Align::Right => format!("{}:", "-".repeat(w - 1)),
    }));
    for row in rows {
        out += &line(
            &mut row
                .iter()
                .enumerate()
                .map(|(i, c)| pad(c, widths[i], align[i])),
        );
    }
    out
}

fn column_widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    widths
}

fn pad(cell: &str, width_: usize, align: Align) -> String {
    let fill = " ".repeat(width_.saturating_sub(width(cell)));
    match align {
        Align::Left => format!("{cell}{fill}"),
        Align::Right => format!("{fill}{cell}"),
    }
}

/// Display width, counted in chars: exact for the ASCII and `±` this crate writes.
fn width(s: &str) -> usize {
    s.chars().count()
}

/// Keeps a cell inside its table row: pipes escaped, line breaks flattened.
pub fn escape_markdown(s: &str) -> String {
    s.replace('|', "\\|")
        .replace("\r\n", " ")
        .replace(['\n', '\r'], " ")
}

/// Keeps a cell on one terminal line without hiding what it contains.
fn escape_text(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\n' => vec!['\\', 'n'],
            '\r' => vec!['\\', 'r'],
            '\t' => vec!['\\', 't'],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// #21 (QA §13): the `done` line printed `final_loss=106974173085717231566848.0000` and
    /// `ablate show` an integer metric 4498500 as `4.498e6`.
    #[test]
    fn metrics_show_exact_integers_whole_and_the_rest_in_four_digits() {
        let cases = [
            (4498500.0, "4498500"),
            (-12.0, "-12"),
            (999_999_999_999.0, "999999999999"),
            (1e12, "1e12"),
            (106974173085717231566848.0, "1.07e23"),
            (9.605e30, "9.605e30"),
            (0.91234, "0.9123"),
            (12.345678, "12.35"),
            (1234567.5, "1.235e6"),
            (0.0000123456, "1.235e-5"),
            (-0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
        ];
        for (x, expected) in cases {
            assert_eq!(format_metric(x), expected, "formatting {x}");
        }
    }

    #[test]
    fn floats_keep_four_significant_digits() {
        let cases = [
            (0.91234, "0.9123"),
            (0.5, "0.5"),
            (1234.56, "1235"),
            (12.0, "12"),
            (-3.45678, "-3.457"),
            (0.000123456, "0.0001235"),
            (0.0000123456, "1.235e-5"),
            (12345678.0, "1.235e7"),
            (1e6, "1e6"),
            (0.99996, "1"),
            (-0.00001, "-1e-5"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (x, expected) in cases {
            assert_eq!(format_float(x), expected, "formatting {x}");
        }
    }

    fn sample() -> Table {
        Table::new()
            .with_column("method", vec![Some("shared"), Some("a|b"), None])
            .with_column("steps", vec![Some(4_i64), None, Some(16)])
            .with_column("acc", vec![Some(0.91234_f64), Some(12.5), None])
            .with_column("ok", vec![Some(true), Some(false), None])
    }

    #[test]
    fn markdown_snapshot() {
        let expected = "\
| method | steps |    acc | ok    |
| ------ | ----: | -----: | ----- |
| shared |     4 | 0.9123 | true  |
| a\\|b   |       |   12.5 | false |
|        |    16 |        |       |
";
        assert_eq!(render_markdown(&sample()), expected);
    }

    #[test]
    fn text_snapshot() {
        let expected = "\
method  steps     acc  ok
------  -----  ------  -----
shared      4  0.9123  true
a|b              12.5  false
           16
";
        assert_eq!(render_text(&sample()), expected);
    }

    #[test]
    fn empty_tables_render() {
        assert_eq!(render_markdown(&Table::new()), "");
        assert_eq!(render_text(&Table::new()), "");
        let no_rows = Table::new().with_column("x", Vec::<i64>::new());
        assert_eq!(render_markdown(&no_rows), "|   x |\n| --: |\n");
        assert_eq!(render_text(&no_rows), "x\n-\n");
    }

    #[test]
    fn timestamps_print_as_utc_dates() {
        let cases = [
            (0, "1970-01-01 00:00:00 UTC"),
            (999_999, "1970-01-01 00:00:00 UTC"),
            (-1, "1969-12-31 23:59:59 UTC"),
            (951_782_400_000_000, "2000-02-29 00:00:00 UTC"),
            (1_700_000_000_123_456, "2023-11-14 22:13:20 UTC"),
            (4_107_542_400_000_000, "2100-03-01 00:00:00 UTC"),
        ];
        for (us, expected) in cases {
            assert_eq!(format_timestamp_us(us), expected, "{us} µs");
        }
    }

    #[test]
    fn text_escapes_control_characters() {
        let t = Table::new().with_column("s", vec!["a\nb\tc"]);
        assert_eq!(render_text(&t), "s\n-------\na\\nb\\tc\n");
    }
}
