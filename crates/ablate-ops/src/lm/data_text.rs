//! `data.text`: a text corpus for the language models, from a file or generated, split into
//! `train.txt` and `val.txt`.

use std::path::Path;

use ablate_cache::Metric;
use ablate_models::lm::{self};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Params};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;

pub(crate) struct DataText {
    schema: OpSchema,
}

/// Where `data.text`'s documents come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    File,
    Synthetic,
}

impl Source {
    /// How a pipeline spells each source (the schema's list; a test holds it equal to serde's).
    const NAMES: &'static [&'static str] = &["file", "synthetic"];
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataTextParams {
    source: Source,
    path: Option<String>,
    docs: usize,
    val_frac: f64,
    seed: u64,
}

impl DataText {
    pub(crate) fn new() -> Self {
        DataText {
            schema: OpSchema {
                name: "data.text",
                version: 1,
                summary: "A text corpus for `train.lm`: a UTF-8 file (`source: file`, `path`; documents separated by \
                          blank lines) or a seeded synthetic corpus (`source: synthetic`, `docs` documents of templated \
                          facts, lists, key-value records and worked copy/reverse/lookup examples). Documents are \
                          shuffled with `seed` and split; writes `train.txt` and `val.txt` (documents joined by blank \
                          lines). Tokens are bytes, plus sentinels and the mode tokens [NLU] [NLG] [S2S]. A file's \
                          content is part of the key.",
                params: vec![
                    ParamSpec::with_default(
                        "source",
                        ParamType::Enum(Source::NAMES),
                        json!("file"),
                        "read `path`, or generate the synthetic corpus",
                    ),
                    ParamSpec::with_default(
                        "path",
                        ParamType::optional(ParamType::Str),
                        json!(null),
                        "the UTF-8 corpus, relative to the working directory (source: file)",
                    ),
                    ParamSpec::with_default(
                        "docs",
                        ParamType::positive_int(),
                        json!(4000),
                        "documents of the synthetic corpus",
                    ),
                    ParamSpec::with_default(
                        "val_frac",
                        ParamType::Float { min: 0.0, max: 0.9 },
                        json!(0.1),
                        "fraction of the documents held out as `val.txt`",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "seed of the synthetic corpus and of the split",
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

impl Op for DataText {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn file_deps(&self, params: &Params) -> Vec<String> {
        match typed::<DataTextParams>("data.text", params) {
            Ok(p) if p.source == Source::File => p.path.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: DataTextParams = typed("data.text", ctx.job.params())?;
        let docs = match (p.source, &p.path) {
            (Source::Synthetic, _) => lm::synthetic_corpus(p.docs, p.seed),
            (_, None) => {
                return Err(OpError::msg(
                    "`source: file` needs `path`, the corpus file (or set `source: synthetic`)",
                ));
            }
            (_, Some(path)) => read_corpus(&ctx.workdir().join(path), path)?,
        };
        if docs.len() < 2 {
            return Err(OpError::msg(format!(
                "the corpus holds {} document{}; it needs at least 2 (documents are separated by blank lines) \
                 to hold one out for validation",
                docs.len(),
                if docs.len() == 1 { "" } else { "s" }
            )));
        }
        let (train, val) = lm::train_val_split(docs, p.val_frac, p.seed);
        let out = ctx.out_dir();
        let write = |name: &str, docs: &[String]| {
            let text = docs.join("\n\n") + "\n";
            std::fs::write(out.join(name), &text)
                .map_err(|e| OpError::with(format!("failed to write `{name}`"), e))?;
            Ok::<usize, OpError>(text.len())
        };
        let train_bytes = write("train.txt", &train)?;
        let val_bytes = write("val.txt", &val)?;
        Ok(OpOutput {
            metrics: vec![
                Metric::new("train_docs", train.len() as f64),
                Metric::new("val_docs", val.len() as f64),
                Metric::new("train_bytes", train_bytes as f64),
                Metric::new("val_bytes", val_bytes as f64),
            ],
            publish: Vec::new(),
            ..OpOutput::default()
        })
    }
}

/// Reads a UTF-8 corpus (`shown`: the path as the user wrote it) into its documents.
fn read_corpus(path: &Path, shown: &str) -> Result<Vec<String>, OpError> {
    let bytes = std::fs::read(path).map_err(|e| {
        OpError::msg(format!(
            "failed to read the corpus `{shown}` ({}): {e}",
            path.display()
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        OpError::msg(format!(
            "`{shown}`:{line}: not valid UTF-8 (byte offset {at}); the corpus must be UTF-8 text"
        ))
    })?;
    Ok(lm::split_documents(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corpus_that_is_not_utf8_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        std::fs::write(&path, b"one doc\n\nline two\n\xff bad\n").unwrap();
        let e = read_corpus(&path, "c.txt").unwrap_err().to_string();
        assert!(e.contains("`c.txt`:4: not valid UTF-8"), "{e}");
        let e = read_corpus(&dir.path().join("none.txt"), "none.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed to read the corpus `none.txt`"), "{e}");
        std::fs::write(&path, "a\n\n\nb\nc\n\n").unwrap();
        assert_eq!(read_corpus(&path, "c.txt").unwrap(), ["a", "b\nc"]);
    }
}
