//! `ablate table FILE`: any Parquet result table on the terminal or as Markdown, its timestamps
//! as dates, with rows picked by `--where`, columns by `--columns` and a `--head`.

use anyhow::Context as _;

use ablate_results::{Column, ColumnData, Table};

use crate::cli::TableArgs;
use crate::error::input;

pub fn table(args: TableArgs) -> anyhow::Result<u8> {
    if !args.file.exists() {
        return Err(input(
            format!("`{}` does not exist", args.file.display()),
            None,
        ));
    }
    let read = || -> anyhow::Result<(Table, Vec<String>)> {
        let table = ablate_results::read_table(&args.file)?;
        Ok((table, ablate_results::timestamp_columns(&args.file)?))
    };
    let (mut table, timestamps) =
        read().with_context(|| format!("failed to read `{}`", args.file.display()))?;
    // Dates, not microseconds since 1970 (but for programs); filters compare what is printed.
    for column in table.columns.iter_mut().filter(|_| !args.json) {
        if let ColumnData::Int(v) = &column.data
            && timestamps.contains(&column.name)
        {
            column.data = ColumnData::Str(
                v.iter()
                    .map(|t| t.map(ablate_results::format_timestamp_us))
                    .collect(),
            );
        }
    }
    let filters = args
        .filters
        .iter()
        .map(|f| Filter::parse(f, &table))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let picked: Vec<usize> = (0..table.num_rows())
        .filter(|&row| filters.iter().all(|f| f.keeps(&table, row)))
        .collect();
    let total = picked.len();
    let rows = &picked[..args.head.map_or(total, |n| n.min(total))];
    let columns: Vec<&Column> = if args.columns.is_empty() {
        table.columns.iter().collect()
    } else {
        args.columns
            .iter()
            .map(|name| column(&table, name, "--columns"))
            .collect::<anyhow::Result<_>>()?
    };
    let shown = Table {
        columns: columns
            .into_iter()
            .map(|c| Column::new(c.name.clone(), take(&c.data, rows)))
            .collect(),
    };
    let text = if args.json {
        json_lines(&shown)
    } else if args.markdown {
        ablate_results::render_markdown(&shown)
    } else {
        ablate_results::render_text(&shown)
    };
    crate::stdout::print(&text)?;
    if rows.len() < total {
        eprintln!("(showing {} of {total} rows)", rows.len());
    }
    Ok(crate::EXIT_OK)
}

/// The column `name`, or an input error that lists the table's columns.
fn column<'t>(table: &'t Table, name: &str, flag: &str) -> anyhow::Result<&'t Column> {
    table.column(name).ok_or_else(|| {
        let hint = match ablate_spec::did_you_mean(name, table.column_names()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "the columns are: {}",
                table.column_names().collect::<Vec<_>>().join(", ")
            ),
        };
        input(
            format!("`{flag} {name}`: the table has no column `{name}`"),
            Some(hint),
        )
    })
}

/// One `--where COLUMN=VALUE` (or `COLUMN!=VALUE`).
struct Filter {
    column: usize,
    equal: bool,
    value: String,
}

impl Filter {
    fn parse(arg: &str, table: &Table) -> anyhow::Result<Self> {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(input(
                format!("`--where {arg}`: expected `COLUMN=VALUE` or `COLUMN!=VALUE`"),
                Some("e.g. `--where metric=test_acc --where lr=0.3` (both must hold)".into()),
            ));
        };
        let (name, equal) = match name.strip_suffix('!') {
            Some(n) => (n, false),
            None => (name, true),
        };
        let name = column(table, name.trim(), "--where")?.name.as_str();
        let column = table
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("`column` found it");
        Ok(Filter {
            column,
            equal,
            value: value.trim().to_owned(),
        })
    }

    /// Numbers compare as numbers (`lr=0.30` is `lr=0.3`), `null` matches an empty cell.
    fn keeps(&self, table: &Table, row: usize) -> bool {
        let v = self.value.as_str();
        let number = || v.parse::<f64>().ok();
        let is = match &table.columns[self.column].data {
            ColumnData::Str(c) => c[row].as_deref().map_or(v == "null", |s| s == v),
            ColumnData::Int(c) => c[row].map_or(v == "null", |i| number() == Some(i as f64)),
            ColumnData::Float(c) => c[row].map_or(v == "null", |x| number() == Some(x)),
            ColumnData::Bool(c) => c[row].map_or(v == "null", |b| v == b.to_string()),
        };
        is == self.equal
    }
}

/// One JSON object per row, its columns in table order.
fn json_lines(table: &Table) -> String {
    let mut out = String::new();
    for row in 0..table.num_rows() {
        let object: serde_json::Map<String, serde_json::Value> = table
            .columns
            .iter()
            .map(|c| {
                let value = match &c.data {
                    ColumnData::Bool(v) => v[row].into(),
                    ColumnData::Int(v) => v[row].into(),
                    ColumnData::Float(v) => v[row].into(),
                    ColumnData::Str(v) => v[row].clone().into(),
                };
                (c.name.clone(), value)
            })
            .collect();
        out.push_str(&serde_json::Value::Object(object).to_string());
        out.push('\n');
    }
    out
}

fn take(data: &ColumnData, rows: &[usize]) -> ColumnData {
    match data {
        ColumnData::Bool(v) => ColumnData::Bool(rows.iter().map(|&r| v[r]).collect()),
        ColumnData::Int(v) => ColumnData::Int(rows.iter().map(|&r| v[r]).collect()),
        ColumnData::Float(v) => ColumnData::Float(rows.iter().map(|&r| v[r]).collect()),
        ColumnData::Str(v) => ColumnData::Str(rows.iter().map(|&r| v[r].clone()).collect()),
    }
}
