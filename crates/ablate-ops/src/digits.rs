//! `data.digits`: the 8×8 handwritten digits (1,797 images, 10 classes) from the CSV that
//! scikit-learn ships, shuffled and split per class, written as points tables (`x0..x63`,
//! `label`) that `train.flow` and `eval.flow` read like any other data set.

use std::path::Path;

use ablate_cache::Metric;
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Params};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;
use crate::rng::Rng;
use crate::support::write_dataset;

const PIXELS: usize = 64;
const MAX_PIXEL: f64 = 16.0;
const CLASSES: u32 = 10;
/// Malformed rows listed in one error; the rest are counted.
const SHOWN_ERRORS: usize = 5;
const HINT: &str = "hint: the file ships with scikit-learn; find it with \
                    `python3 -c \"import sklearn,os;print(os.path.dirname(sklearn.__file__)+'/datasets/data/digits.csv.gz')\"`, \
                    then `gunzip -c THAT_PATH > digits.csv`";

pub(crate) struct Digits {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DigitsParams {
    path: String,
    test_frac: f64,
    seed: u64,
    scale: bool,
    limit: Option<usize>,
}

impl Digits {
    pub(crate) fn new() -> Self {
        Digits {
            schema: OpSchema {
                name: "data.digits",
                version: 1,
                summary: "The 8×8 handwritten digits (1,797 images, 10 classes) from scikit-learn's `digits.csv` \
                          (decompressed; no header; 64 pixels 0..16 then the label per line). Shuffled with `seed`, \
                          cut to `limit` rows, split per class so both splits keep the class mix; writes \
                          `train.parquet` and `test.parquet` with columns `x0..x63`, `label`. The file's content is \
                          part of the key.",
                params: vec![
                    ParamSpec::required(
                        "path",
                        ParamType::Str,
                        "the CSV file, relative to the working directory",
                    ),
                    ParamSpec::with_default(
                        "test_frac",
                        ParamType::Float { min: 0.0, max: 1.0 },
                        json!(0.25),
                        "fraction of each class held out for `test.parquet`",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "seed of the shuffle",
                    ),
                    ParamSpec::with_default(
                        "scale",
                        ParamType::Bool,
                        json!(true),
                        "divide pixels by 16, into [0, 1]",
                    ),
                    ParamSpec::with_default(
                        "limit",
                        ParamType::optional(ParamType::positive_int()),
                        json!(null),
                        "keep only the first `limit` rows after shuffling (quick runs)",
                    ),
                ],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                on_device: false,
                needs: (0, Some(0)),
            },
        }
    }
}

impl Op for Digits {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn file_deps(&self, params: &Params) -> Vec<String> {
        typed::<DigitsParams>("data.digits", params)
            .map(|p| vec![p.path])
            .unwrap_or_default()
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: DigitsParams = typed("data.digits", ctx.job.params())?;
        let rows = read_csv(&ctx.workdir().join(&p.path), &p.path)?;
        let (train, test) = split(&rows, p.test_frac, p.seed, p.limit);
        if train.is_empty() || test.is_empty() {
            return Err(OpError::msg(format!(
                "`test_frac` = {} of {} rows leaves the {} split empty",
                p.test_frac,
                train.len() + test.len(),
                if train.is_empty() { "train" } else { "test" }
            )));
        }
        let out = ctx.out_dir();
        write_split(&out.join("train.parquet"), &train, p.scale)?;
        write_split(&out.join("test.parquet"), &test, p.scale)?;
        let classes = train
            .iter()
            .chain(&test)
            .map(|r| r.label + 1)
            .max()
            .unwrap_or(0);
        Ok(OpOutput {
            metrics: vec![
                Metric::new("train_rows", train.len() as f64),
                Metric::new("test_rows", test.len() as f64),
                Metric::new("classes", f64::from(classes)),
            ],
            publish: Vec::new(),
            ..OpOutput::default()
        })
    }
}

/// One image: raw pixel values (0..16) and its digit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pixels: [f64; PIXELS],
    label: u32,
}

/// Reads the CSV at `path` (`shown`: the path as the user wrote it, for messages).
fn read_csv(path: &Path, shown: &str) -> Result<Vec<Row>, OpError> {
    let bytes = std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            format!("\n{HINT}")
        } else {
            String::new()
        };
        OpError::msg(format!(
            "failed to read the digits CSV `{shown}` ({}): {e}{hint}",
            path.display()
        ))
    })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(OpError::msg(format!(
            "`{shown}` is gzip-compressed; this op reads the plain CSV\nhint: decompress it first: \
             `gunzip -c {shown} > digits.csv`, then set `path: digits.csv`"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| OpError::with(format!("`{shown}` is not a text file"), e))?;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_row(line) {
            Ok(row) => rows.push(row),
            Err((col, why)) => errors.push(format!("`{shown}`:{}:{col}: {why}", i + 1)),
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        let mut message = format!(
            "`{shown}` has {n} malformed row{}:\n{}",
            if n == 1 { "" } else { "s" },
            errors[..n.min(SHOWN_ERRORS)].join("\n")
        );
        if n > SHOWN_ERRORS {
            message.push_str(&format!("\n… and {} more", n - SHOWN_ERRORS));
        }
        message.push_str(
            "\nhint: each line holds 65 comma-separated numbers: 64 pixels in 0..16, then the label 0..9",
        );
        return Err(OpError::msg(message));
    }
    if rows.is_empty() {
        return Err(OpError::msg(format!("`{shown}` holds no rows\n{HINT}")));
    }
    Ok(rows)
}

/// One line → a row, or the 1-based column and what is wrong there.
fn parse_row(line: &str) -> Result<Row, (usize, String)> {
    let mut pixels = [0.0; PIXELS];
    let mut label = None;
    let mut col = 1;
    let fields: Vec<&str> = line.split(',').collect();
    if fields.len() != PIXELS + 1 {
        return Err((
            1,
            format!(
                "expected {} comma-separated numbers (64 pixels, then the label), found {}",
                PIXELS + 1,
                fields.len()
            ),
        ));
    }
    for (j, field) in fields.iter().enumerate() {
        let lead = field.len() - field.trim_start().len();
        let at = col + field[..lead].chars().count();
        let tok = field.trim();
        let x = tok
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| (at, format!("`{tok}` is not a number")))?;
        if j < PIXELS {
            if !(0.0..=MAX_PIXEL).contains(&x) {
                return Err((at, format!("pixel {j} is {tok}, outside 0..16")));
            }
            pixels[j] = x;
        } else if x.fract() == 0.0 && (0.0..f64::from(CLASSES)).contains(&x) {
            label = Some(x as u32);
        } else {
            return Err((at, format!("the label is {tok}, not a digit 0..9")));
        }
        col += field.chars().count() + 1;
    }
    Ok(Row {
        pixels,
        label: label.expect("the 65th field is the label"),
    })
}

/// Shuffles the rows with `seed`, keeps the first `limit`, then sends the first
/// `round(test_frac · n_c)` rows of each class c (in shuffled order) to test: a stratified split.
/// Both splits keep the shuffled order.
fn split(rows: &[Row], test_frac: f64, seed: u64, limit: Option<usize>) -> (Vec<Row>, Vec<Row>) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut rng = Rng::new(seed);
    for i in (1..order.len()).rev() {
        // Fisher–Yates; the modulo bias is below 2⁻⁵⁰ for any file this size.
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order.truncate(limit.unwrap_or(usize::MAX));
    let mut per_class = [0usize; CLASSES as usize];
    for &i in &order {
        per_class[rows[i].label as usize] += 1;
    }
    let quota: Vec<usize> = per_class
        .iter()
        .map(|&n| (test_frac * n as f64).round() as usize)
        .collect();
    let mut taken = [0usize; CLASSES as usize];
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for &i in &order {
        let c = rows[i].label as usize;
        if taken[c] < quota[c] {
            taken[c] += 1;
            test.push(rows[i].clone());
        } else {
            train.push(rows[i].clone());
        }
    }
    (train, test)
}

fn write_split(path: &Path, rows: &[Row], scale: bool) -> Result<(), OpError> {
    let k = if scale { 1.0 / MAX_PIXEL } else { 1.0 };
    let x: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.pixels.iter().map(move |p| p * k))
        .collect();
    let labels: Vec<u32> = rows.iter().map(|r| r.label).collect();
    write_dataset(path, PIXELS, &x, &labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of the sklearn file: pixel j = (j + label) % 17, written as `5.0` or `5`.
    fn line(label: u32, float_style: bool) -> String {
        let mut f: Vec<String> = (0..PIXELS)
            .map(|j| {
                let v = (j as u32 + label) % 17;
                if float_style {
                    format!("{v}.0")
                } else {
                    v.to_string()
                }
            })
            .collect();
        f.push(if float_style {
            format!("{label}.0")
        } else {
            label.to_string()
        });
        f.join(",")
    }

    fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read_err(text: impl AsRef<[u8]>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "d.csv", text);
        match read_csv(&path, "d.csv") {
            Err(OpError::Failed { message, .. }) => message,
            other => panic!("{other:?}"),
        }
    }

    /// 40 rows: four of each digit.
    fn forty() -> String {
        (0..40).map(|i| line(i % 10, i % 2 == 0) + "\n").collect()
    }

    #[test]
    fn reads_the_sklearn_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "d.csv",
            format!("{}\n\n{}\r\n", line(3, true), line(9, false)),
        );
        let rows = read_csv(&path, "d.csv").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].label, rows[1].label), (3, 9));
        assert_eq!(rows[0].pixels[0], 3.0);
        assert_eq!(rows[1].pixels[63], f64::from((63 + 9) % 17));
    }

    #[test]
    fn malformed_rows_name_line_and_column() {
        let good = line(1, false);
        let short = good.rsplit_once(',').unwrap().0.to_owned();
        assert_eq!(
            read_err(format!("{good}\n{short}\n")),
            "`d.csv` has 1 malformed row:\n`d.csv`:2:1: expected 65 comma-separated numbers (64 pixels, then the \
             label), found 64\nhint: each line holds 65 comma-separated numbers: 64 pixels in 0..16, then the label 0..9"
        );
        // `1,2,x,...`: the third field starts at column 5.
        let bad = good.replacen("1,2,3,", "1,2,x,", 1);
        let e = read_err(format!("{good}\n{good}\n{bad}\n"));
        assert!(e.contains("`d.csv`:3:5: `x` is not a number"), "{e}");
        let bad = good.replacen("1,2,", "1, 17,", 1);
        assert!(read_err(&bad).contains("`d.csv`:1:4: pixel 1 is 17, outside 0..16"));
        let bad = format!("{},10", short);
        let col = short.len() + 2;
        assert!(
            read_err(&bad).contains(&format!(
                "`d.csv`:1:{col}: the label is 10, not a digit 0..9"
            )),
            "{}",
            read_err(&bad)
        );
        assert!(read_err(format!("{short},2.5")).contains("the label is 2.5, not a digit 0..9"));
        assert!(read_err(format!("{short},nan")).contains("`nan` is not a number"));
        // Every malformed row is counted; the first few are shown.
        let many: String = (0..8).map(|_| format!("{short}\n")).collect();
        let e = read_err(&many);
        assert!(e.starts_with("`d.csv` has 8 malformed rows:"), "{e}");
        assert!(
            e.contains("`d.csv`:5:1:") && !e.contains("`d.csv`:6:1:"),
            "{e}"
        );
        assert!(e.contains("… and 3 more"), "{e}");
    }

    #[test]
    fn missing_empty_and_gzipped_files_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let Err(OpError::Failed { message, .. }) =
            read_csv(&dir.path().join("nope.csv"), "nope.csv")
        else {
            panic!()
        };
        assert!(
            message.starts_with("failed to read the digits CSV `nope.csv` ("),
            "{message}"
        );
        assert!(
            message.contains("hint: the file ships with scikit-learn"),
            "{message}"
        );
        assert!(message.contains("digits.csv.gz"), "{message}");
        assert!(read_err("").starts_with("`d.csv` holds no rows"));
        assert!(read_err("\n \n").starts_with("`d.csv` holds no rows"));
        let e = read_err([0x1f, 0x8b, 0x08, 0x00]);
        assert!(e.starts_with("`d.csv` is gzip-compressed"), "{e}");
        assert!(e.contains("gunzip -c d.csv > digits.csv"), "{e}");
    }

    #[test]
    fn split_is_stratified_deterministic_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let rows = read_csv(&write(dir.path(), "d.csv", forty()), "d.csv").unwrap();
        let (train, test) = split(&rows, 0.25, 0, None);
        assert_eq!((train.len(), test.len()), (30, 10));
        // Four rows per digit: one of each goes to test.
        for c in 0..10 {
            assert_eq!(test.iter().filter(|r| r.label == c).count(), 1);
        }
        assert_eq!(split(&rows, 0.25, 0, None), (train.clone(), test.clone()));
        let (train2, _) = split(&rows, 0.25, 1, None);
        assert_ne!(train, train2);
        // Every row lands in exactly one split.
        let mut all: Vec<u32> = train.iter().chain(&test).map(|r| r.label).collect();
        all.sort();
        let mut expected: Vec<u32> = rows.iter().map(|r| r.label).collect();
        expected.sort();
        assert_eq!(all, expected);
        // `limit` keeps the first rows of the shuffle.
        let (train, test) = split(&rows, 0.5, 0, Some(12));
        assert_eq!(train.len() + test.len(), 12);
        let (_, none) = split(&rows, 0.0, 0, None);
        assert!(none.is_empty());
    }

    #[test]
    fn splits_are_points_tables() {
        let dir = tempfile::tempdir().unwrap();
        let rows = read_csv(&write(dir.path(), "d.csv", forty()), "d.csv").unwrap();
        let (train, _) = split(&rows, 0.25, 0, None);
        let path = dir.path().join("train.parquet");
        write_split(&path, &train, true).unwrap();
        let d = crate::support::read_dataset(&path, None).unwrap();
        assert_eq!((d.dim, d.classes, d.y.len()), (64, 10, 30));
        assert!(d.x.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(d.x[1], ((1 + train[0].label) % 17) as f32 / 16.0);
        write_split(&path, &train, false).unwrap();
        let d = crate::support::read_dataset(&path, None).unwrap();
        assert_eq!(d.x[1], ((1 + train[0].label) % 17) as f32);
    }

    #[test]
    fn the_file_is_a_dep() {
        let mut params = Params::new();
        params.insert("path".into(), json!("data/digits.csv"));
        for (k, v) in [
            ("test_frac", json!(0.25)),
            ("seed", json!(0)),
            ("scale", json!(true)),
            ("limit", json!(null)),
        ] {
            params.insert(k.into(), v);
        }
        assert_eq!(Digits::new().file_deps(&params), ["data/digits.csv"]);
    }
}
