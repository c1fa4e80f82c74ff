//! Loading a pipeline file: read, parse, apply command-line overrides to the raw tree, validate.

use std::path::Path;
use std::sync::Arc;

use crate::node::{self, Key, Kind, Node, Origin, shorten_name};
use crate::{Diagnostic, Diagnostics, OpCatalog, Pipeline, SourceFile, suggest, validate};

/// One command-line override. Overrides are applied to the raw tree before validation, so
/// their values are interpolated and type-checked exactly like the file's, and an error in one
/// says which argument it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Override {
    /// `--set STAGE.params.KEY=VALUE`, `--set STAGE.KEY=VALUE` (stage attributes: retries,
    /// timeout, device, gather, resources.cpus …), `--set vars.NAME=VALUE`,
    /// `--set defaults.KEY=VALUE`.
    ///
    /// `STAGE.params.KEY` where `KEY` is a matrix axis of the stage replaces that axis with the
    /// one value. The value is kept as typed; it is read as a YAML scalar when applied.
    Set { path: Vec<String>, value: String },
    /// `--matrix STAGE.KEY=a,b,c`: replaces (or adds) that axis of the stage's matrix, and
    /// removes `KEY` from the stage's `params` if it was there. Items are split on commas
    /// outside brackets and quotes, and each is read as a YAML scalar.
    Matrix {
        stage: String,
        key: String,
        values: Vec<String>,
    },
}

/// The overrides of one run, each with the argument as typed (for messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub items: Vec<(String, Override)>,
}

impl Overrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `--set` arguments then `--matrix` arguments, as given on the command line.
    pub fn parse<'s>(
        sets: impl IntoIterator<Item = &'s str>,
        matrices: impl IntoIterator<Item = &'s str>,
    ) -> Result<Self, String> {
        let mut items = Vec::new();
        for arg in sets {
            items.push((format!("--set {arg}"), Override::parse_set(arg)?));
        }
        for arg in matrices {
            items.push((format!("--matrix {arg}"), Override::parse_matrix(arg)?));
        }
        Ok(Self { items })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Override {
    /// Parses the argument of `--set`: `STAGE.params.KEY=VALUE`, `STAGE.KEY=VALUE`,
    /// `vars.NAME=VALUE` or `defaults.KEY=VALUE`.
    pub fn parse_set(arg: &str) -> Result<Override, String> {
        const FORM: &str =
            "expected `STAGE.params.KEY=VALUE`, `STAGE.KEY=VALUE` or `vars.NAME=VALUE`";
        let shown = shorten_name(arg);
        let (path, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("{FORM}, found `{shown}` (no `=`)"))?;
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.len() < 2 || path.iter().any(|p| p.trim().is_empty() || p.trim() != p) {
            return Err(format!("{FORM}, found `{shown}`"));
        }
        parse_value(value, &Origin::Override(arg.into()))
            .map_err(|e| format!("invalid value in `{shown}`: {e}"))?;
        Ok(Override::Set {
            path,
            value: value.to_owned(),
        })
    }

    /// Parses the argument of `--matrix`: `STAGE.KEY=a,b,c` (or `STAGE.matrix.KEY=a,b,c`).
    pub fn parse_matrix(arg: &str) -> Result<Override, String> {
        const FORM: &str = "expected `STAGE.KEY=VALUE,VALUE,…`";
        let shown = shorten_name(arg);
        let (path, values) = arg
            .split_once('=')
            .ok_or_else(|| format!("{FORM}, found `{shown}` (no `=`)"))?;
        let parts: Vec<&str> = path.split('.').collect();
        let (stage, key) = match parts.as_slice() {
            [stage, key] | [stage, "matrix", key] => (*stage, *key),
            _ => return Err(format!("{FORM}, found `{shown}`")),
        };
        if [stage, key]
            .iter()
            .any(|p| p.trim().is_empty() || p.trim() != *p)
        {
            return Err(format!("{FORM}, found `{shown}`"));
        }
        let values = split_items(values);
        if values.iter().any(|v| v.trim().is_empty()) {
            return Err(format!("empty value in `{shown}`: {FORM}"));
        }
        for value in &values {
            parse_value(value, &Origin::Override(arg.into()))
                .map_err(|e| format!("invalid value in `{shown}`: {e}"))?;
        }
        Ok(Override::Matrix {
            stage: stage.to_owned(),
            key: key.to_owned(),
            values,
        })
    }
}

/// Splits `a,[b,c],"d,e"` on the commas that are outside brackets and quotes.
fn split_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let (mut depth, mut quote) = (0usize, None);
    for c in text.chars() {
        match (c, quote) {
            (_, Some(q)) if c == q => quote = None,
            (_, Some(_)) => {}
            ('"' | '\'', None) => quote = Some(c),
            ('[' | '{', None) => depth += 1,
            (']' | '}', None) => depth = depth.saturating_sub(1),
            (',', None) if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items
}

/// A command-line value read as YAML would read a scalar: `0.1` is a float, `4` an integer,
/// `true` a boolean, `~` null, `shared` a string. Quoted text is a string; `[…]`/`{…}` are
/// flow collections. Anything else stays the text as typed (so `echo a: b # c` is a string,
/// not a map with a comment), except an integer too large for 64 bits, which is an error as
/// in a file.
fn parse_value(text: &str, origin: &Origin) -> Result<Node, String> {
    let trimmed = text.trim();
    if trimmed.starts_with(['[', '{', '"', '\'']) {
        return node::parse_fragment(trimmed, origin);
    }
    match node::parse_fragment(trimmed, origin) {
        Ok(node)
            if matches!(
                node.kind,
                Kind::Null | Kind::Bool(_) | Kind::Int(_) | Kind::Float(_)
            ) =>
        {
            Ok(node)
        }
        Err(e) if node::is_integer_literal(trimmed) => Err(e),
        _ => Ok(Node::new(Kind::Str(text.to_owned()), origin.clone())),
    }
}

/// Loads a pipeline from text already read: parses it, applies `overrides`, validates it
/// against `catalog`. On failure, every problem found is in the [`Diagnostics`] (but a YAML
/// syntax error stops parsing, so it is reported alone).
pub fn load(
    source: SourceFile,
    overrides: &Overrides,
    catalog: &dyn OpCatalog,
) -> Result<Pipeline, Diagnostics> {
    let source = Arc::new(source);
    let mut errors = Vec::new();
    let pipeline = match node::parse(&source.text) {
        Err(syntax) => {
            errors.extend(syntax);
            None
        }
        Ok(mut root) => {
            apply_overrides(&mut root, overrides, &mut errors);
            validate::validate(&root, catalog, Arc::clone(&source), &mut errors)
        }
    };
    match pipeline {
        Some(pipeline) if errors.is_empty() => Ok(pipeline),
        _ => Err(Diagnostics {
            source: Some(source),
            items: tidy(errors),
        }),
    }
}

/// Reads and loads the pipeline file at `path`; an unreadable file is one diagnostic.
pub fn load_file(
    path: &Path,
    overrides: &Overrides,
    catalog: &dyn OpCatalog,
) -> Result<Pipeline, Diagnostics> {
    match std::fs::read_to_string(path) {
        Ok(text) => load(SourceFile::new(path, text), overrides, catalog),
        Err(err) => Err(Diagnostics {
            source: None,
            items: vec![Diagnostic::error(format!(
                "failed to read `{}`: {err}",
                path.display()
            ))],
        }),
    }
}

/// Problems without a place (overrides) first, then in file order; exact repeats dropped (a
/// bad `defaults:` value is checked once per stage that uses it).
fn tidy(mut errors: Vec<Diagnostic>) -> Vec<Diagnostic> {
    errors.sort_by_key(|d| d.span.map(|s| (s.line, s.col)));
    let mut unique: Vec<Diagnostic> = Vec::with_capacity(errors.len());
    for d in errors {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    unique
}

fn apply_overrides(root: &mut Node, overrides: &Overrides, errors: &mut Vec<Diagnostic>) {
    // A file that is not even a map gets its own error from validation.
    if root.as_map().is_none() {
        return;
    }
    for (arg, item) in &overrides.items {
        let origin = Origin::Override(arg.as_str().into());
        if let Err(message) = apply(root, item, &origin) {
            errors.push(message);
        }
    }
}

fn apply(root: &mut Node, item: &Override, origin: &Origin) -> Result<(), Diagnostic> {
    let value_error = |e: String| origin.error(format!("invalid value: {e}"));
    match item {
        Override::Set { path, value } => {
            let value = parse_value(value, origin).map_err(value_error)?;
            if matches!(path[0].as_str(), "vars" | "defaults") {
                return set_path(root, path, value, origin);
            }
            let stage = stage_mut(root, &path[0], origin)?;
            if let [_, params, key] = path.as_slice()
                && params == "params"
                && let Some(axis) = stage.get_mut("matrix").and_then(|m| m.get_mut(key))
            {
                *axis = Node::new(Kind::Seq(vec![value]), origin.clone());
                return Ok(());
            }
            set_path(stage, &path[1..], value, origin)
        }
        Override::Matrix { stage, key, values } => {
            let values = values
                .iter()
                .map(|v| parse_value(v, origin))
                .collect::<Result<Vec<_>, _>>()
                .map_err(value_error)?;
            let stage = stage_mut(root, stage, origin)?;
            if let Some(params) = stage.get_mut("params").and_then(Node::as_map_mut) {
                params.retain(|(k, _)| k.name != *key);
            }
            let axis = Node::new(Kind::Seq(values), origin.clone());
            set_path(stage, &["matrix".to_owned(), key.clone()], axis, origin)
        }
    }
}

fn stage_mut<'n>(
    root: &'n mut Node,
    name: &str,
    origin: &Origin,
) -> Result<&'n mut Node, Diagnostic> {
    let names: Vec<String> = match root.get("stages").and_then(Node::as_map) {
        Some(stages) => stages.iter().map(|(k, _)| k.name.clone()).collect(),
        None => Vec::new(),
    };
    if !names.iter().any(|n| n == name) {
        return Err(origin
            .error(format!("there is no stage `{}`", shorten_name(name)))
            .maybe_help(suggest::hint(name, names.iter().map(String::as_str))));
    }
    Ok(root
        .get_mut("stages")
        .and_then(|s| s.get_mut(name))
        .expect("the stage was just found"))
}

/// Sets `path` under `node` to `value`, creating maps on the way.
fn set_path(
    node: &mut Node,
    path: &[String],
    value: Node,
    origin: &Origin,
) -> Result<(), Diagnostic> {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let Some(entries) = node.as_map_mut() else {
        return Err(origin.error(format!(
            "cannot set `{}` inside {}",
            shorten_name(first),
            node.describe()
        )));
    };
    let index = match entries.iter().position(|(k, _)| k.name == *first) {
        Some(index) => index,
        None => {
            let empty = Node::new(Kind::Map(Vec::new()), origin.clone());
            entries.push((
                Key {
                    name: first.clone(),
                    origin: origin.clone(),
                },
                empty,
            ));
            entries.len() - 1
        }
    };
    set_path(&mut entries[index].1, rest, value, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(arg: &str) -> (Vec<String>, String) {
        match Override::parse_set(arg).unwrap() {
            Override::Set { path, value } => (path, value),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_set_splits_the_path_and_keeps_the_value() {
        assert_eq!(
            set("resnet.params.lr=0.1"),
            (
                vec!["resnet".into(), "params".into(), "lr".into()],
                "0.1".into()
            )
        );
        assert_eq!(
            set("vars.width=16"),
            (vec!["vars".into(), "width".into()], "16".into())
        );
        assert_eq!(
            set("mine.params.run=echo a=b"),
            (
                vec!["mine".into(), "params".into(), "run".into()],
                "echo a=b".into()
            )
        );
        assert!(
            Override::parse_set("resnet")
                .unwrap_err()
                .contains("no `=`")
        );
        assert!(Override::parse_set("resnet=1").is_err());
        assert!(Override::parse_set("resnet..lr=1").is_err());
        assert!(
            Override::parse_set("x.params.v=[1, 2")
                .unwrap_err()
                .starts_with("invalid value")
        );
    }

    #[test]
    fn parse_matrix_splits_values_outside_brackets() {
        assert_eq!(
            Override::parse_matrix("resnet.steps=1,2,4").unwrap(),
            Override::Matrix {
                stage: "resnet".into(),
                key: "steps".into(),
                values: vec!["1".into(), "2".into(), "4".into()]
            }
        );
        assert_eq!(
            Override::parse_matrix("t.matrix.rows=[a,b],[c],'x,y'").unwrap(),
            Override::Matrix {
                stage: "t".into(),
                key: "rows".into(),
                values: vec!["[a,b]".into(), "[c]".into(), "'x,y'".into()]
            }
        );
        assert!(Override::parse_matrix("resnet.steps=").is_err());
        assert!(Override::parse_matrix("resnet.steps=1,,2").is_err());
        assert!(Override::parse_matrix("resnet=1,2").is_err());
    }

    #[test]
    fn values_are_read_as_yaml_scalars() {
        let o = Origin::Override("--set x".into());
        let kind = |t: &str| parse_value(t, &o).unwrap().kind;
        assert_eq!(kind("0.1"), Kind::Float(0.1));
        assert_eq!(kind("4"), Kind::Int(4));
        assert_eq!(kind("1e3"), Kind::Float(1000.0));
        assert_eq!(kind("true"), Kind::Bool(true));
        assert_eq!(kind("~"), Kind::Null);
        assert_eq!(kind("shared"), Kind::Str("shared".into()));
        assert_eq!(kind("'4'"), Kind::Str("4".into()));
        assert_eq!(kind("echo a: b # c"), Kind::Str("echo a: b # c".into()));
        assert_eq!(kind("- a"), Kind::Str("- a".into()));
        assert!(matches!(kind("[1, x]"), Kind::Seq(items) if items.len() == 2));
    }

    #[test]
    fn tidy_sorts_by_place_and_drops_repeats() {
        use crate::Span;
        let a = Diagnostic::error("a").at(Span::new(3, 1, 1));
        let b = Diagnostic::error("b").at(Span::new(1, 5, 1));
        let c = Diagnostic::error("in `--set x`: c");
        assert_eq!(
            tidy(vec![a.clone(), b.clone(), a.clone(), c.clone()]),
            vec![c, b, a]
        );
    }
}
