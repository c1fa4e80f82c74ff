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
    /// one value; where `KEY` is sampled by the stage's `search`, the search stops sampling it
    /// and it becomes an axis of that one value. `STAGE.search.n=N` (or `.seed`) changes the
    /// search. The value is kept as typed; it is read as a YAML scalar when applied.
    ///
    /// `KEY` must be a parameter the stage already has (in `params`, `matrix` or `include`, or
    /// declared by its op) and `NAME` a variable of the file: for an op that takes any
    /// parameter (`cmd`), a misspelt key would otherwise become a new parameter, passed on as
    /// a bogus flag (#21). `new` (a leading `+`: `+STAGE.params.KEY=VALUE`,
    /// `+vars.NAME=VALUE`) adds one deliberately.
    Set {
        path: Vec<String>,
        value: String,
        new: bool,
    },
    /// `--matrix STAGE.KEY=a,b,c`: replaces that axis of the stage's matrix, or turns the
    /// parameter `KEY` into one (removing it from the stage's `params`, or from the params its
    /// `search` samples). Items are split on
    /// commas outside brackets and quotes, and each is read as a YAML scalar.
    ///
    /// `KEY` must be an axis or parameter the stage already has, as for [`Override::Set`]; a
    /// misspelt key would otherwise add an axis and multiply the sweep (#21). `new` (a
    /// leading `+`: `+STAGE.KEY=a,b`) adds a new axis deliberately.
    Matrix {
        stage: String,
        key: String,
        values: Vec<String>,
        new: bool,
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
    /// `vars.NAME=VALUE` or `defaults.KEY=VALUE`; `+STAGE.params.KEY=VALUE` or
    /// `+vars.NAME=VALUE` to add a parameter or variable the file does not have.
    pub fn parse_set(arg: &str) -> Result<Override, String> {
        const FORM: &str =
            "expected `STAGE.params.KEY=VALUE`, `STAGE.KEY=VALUE` or `vars.NAME=VALUE`";
        let shown = shorten_name(arg);
        let (new, rest) = match arg.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, arg),
        };
        let (path, value) = rest
            .split_once('=')
            .ok_or_else(|| format!("{FORM}, found `{shown}` (no `=`)"))?;
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.len() < 2 || path.iter().any(|p| p.trim().is_empty() || p.trim() != p) {
            return Err(format!("{FORM}, found `{shown}`"));
        }
        let adds_a_name = matches!(path.as_slice(), [vars, _] if vars == "vars")
            || matches!(path.as_slice(), [stage, params, _] if stage != "vars" && stage != "defaults" && params == "params");
        if new && !adds_a_name {
            return Err(format!(
                "a leading `+` adds a parameter or a variable that the file does not have \
                 (`+STAGE.params.KEY=VALUE`, `+vars.NAME=VALUE`), found `{shown}`"
            ));
        }
        parse_value(value, &Origin::Override(arg.into()))
            .map_err(|e| format!("invalid value in `{shown}`: {e}"))?;
        Ok(Override::Set {
            path,
            value: value.to_owned(),
            new,
        })
    }

    /// Parses the argument of `--matrix`: `STAGE.KEY=a,b,c` (or `STAGE.matrix.KEY=a,b,c`);
    /// `+STAGE.KEY=a,b,c` to add an axis the stage does not have.
    pub fn parse_matrix(arg: &str) -> Result<Override, String> {
        const FORM: &str = "expected `STAGE.KEY=VALUE,VALUE,…` (or `+STAGE.KEY=…` for a new axis)";
        let shown = shorten_name(arg);
        let (new, rest) = match arg.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, arg),
        };
        let (path, values) = rest
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
            new,
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
            apply_overrides(&mut root, overrides, catalog, &mut errors);
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

fn apply_overrides(
    root: &mut Node,
    overrides: &Overrides,
    catalog: &dyn OpCatalog,
    errors: &mut Vec<Diagnostic>,
) {
    // A file that is not even a map gets its own error from validation.
    if root.as_map().is_none() {
        return;
    }
    for (arg, item) in &overrides.items {
        let origin = Origin::Override(arg.as_str().into());
        if let Err(message) = apply(root, item, catalog, &origin) {
            errors.push(message);
        }
    }
}

fn apply(
    root: &mut Node,
    item: &Override,
    catalog: &dyn OpCatalog,
    origin: &Origin,
) -> Result<(), Diagnostic> {
    let value_error = |e: String| origin.error(format!("invalid value: {e}"));
    match item {
        Override::Set { path, value, new } => {
            let value = parse_value(value, origin).map_err(value_error)?;
            if path[0] == "vars" && !new {
                check_variable(root, &path[1], origin)?;
            }
            if matches!(path[0].as_str(), "vars" | "defaults") {
                return set_path(root, path, value, origin);
            }
            let stage = stage_mut(root, &path[0], origin)?;
            if let [name, params, key, ..] = path.as_slice()
                && params == "params"
                && !new
            {
                check_known_param(stage, catalog, name, key, Added::Param, origin)?;
            }
            if let [_, params, key] = path.as_slice()
                && params == "params"
            {
                if let Some(axis) = stage.get_mut("matrix").and_then(|m| m.get_mut(key)) {
                    *axis = Node::new(Kind::Seq(vec![value]), origin.clone());
                    return Ok(());
                }
                // A sampled param set to one value: the search stops sampling it (the other
                // params' samples do not change) and it becomes an axis of that one value, so
                // it stays a label as a matrix axis set this way does.
                if unsample(stage, key) {
                    let axis = Node::new(Kind::Seq(vec![value]), origin.clone());
                    return set_path(stage, &["matrix".to_owned(), key.clone()], axis, origin);
                }
            }
            set_path(stage, &path[1..], value, origin)
        }
        Override::Matrix {
            stage: name,
            key,
            values,
            new,
        } => {
            let values = values
                .iter()
                .map(|v| parse_value(v, origin))
                .collect::<Result<Vec<_>, _>>()
                .map_err(value_error)?;
            let stage = stage_mut(root, name, origin)?;
            if !new {
                check_known_param(stage, catalog, name, key, Added::Axis, origin)?;
            }
            if let Some(params) = stage.get_mut("params").and_then(Node::as_map_mut) {
                params.retain(|(k, _)| k.name != *key);
            }
            unsample(stage, key);
            let axis = Node::new(Kind::Seq(values), origin.clone());
            set_path(stage, &["matrix".to_owned(), key.clone()], axis, origin)
        }
    }
}

/// Removes `key` from the stage's `search.params`, and the whole `search` with its last param;
/// whether `key` was sampled there.
fn unsample(stage: &mut Node, key: &str) -> bool {
    let Some(params) = stage
        .get_mut("search")
        .and_then(|s| s.get_mut("params"))
        .and_then(Node::as_map_mut)
    else {
        return false;
    };
    let before = params.len();
    params.retain(|(k, _)| k.name != key);
    let (removed, empty) = (params.len() < before, params.is_empty());
    if removed
        && empty
        && let Some(entries) = stage.as_map_mut()
    {
        entries.retain(|(k, _)| k.name != "search");
    }
    removed
}

/// What a `+` in front of an override adds.
#[derive(Clone, Copy)]
enum Added {
    Param,
    Axis,
}

/// An override without a leading `+` names a parameter the stage already has: written in
/// its `params`, `matrix` or `include`, or declared by its op. Only ops that take any
/// parameter (`cmd`) need this: for the others validation reports an undeclared one, with a
/// hint of its own; an unknown op is reported there too.
fn check_known_param(
    stage: &Node,
    catalog: &dyn OpCatalog,
    name: &str,
    key: &str,
    added: Added,
    origin: &Origin,
) -> Result<(), Diagnostic> {
    let schema = match stage.get("op").map(|op| &op.kind) {
        Some(Kind::Str(op)) => catalog.schema(op),
        _ => None,
    };
    let Some(schema) = schema.filter(|s| s.free_params) else {
        return Ok(());
    };
    let map_keys = |node: Option<&Node>| -> Vec<String> {
        node.and_then(Node::as_map)
            .map(|m| m.iter().map(|(k, _)| k.name.clone()).collect())
            .unwrap_or_default()
    };
    let mut known = map_keys(stage.get("matrix"));
    known.extend(map_keys(stage.get("params")));
    known.extend(map_keys(stage.get("search").and_then(|s| s.get("params"))));
    if let Some(Kind::Seq(entries)) = stage.get("include").map(|n| &n.kind) {
        for entry in entries {
            known.extend(map_keys(Some(entry)));
        }
    }
    known.extend(schema.params.iter().map(|p| p.name.to_owned()));
    known.push(crate::schema::TAG.name.to_owned());
    if known.iter().any(|k| k == key) {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    known.retain(|k| seen.insert(k.clone()));
    let (stage_name, key_name) = (shorten_name(name), shorten_name(key));
    let (what, add) = match added {
        Added::Param => (
            "parameter",
            format!("to add a new parameter, write `--set +{stage_name}.params.{key_name}=…`"),
        ),
        Added::Axis => (
            "parameter or matrix axis",
            format!("to add a new axis, write `--matrix +{stage_name}.{key_name}=…`"),
        ),
    };
    let help = match suggest::hint(key, known.iter().map(String::as_str)) {
        Some(hint) => format!("{hint} ({add})"),
        None => format!(
            "the parameters of stage `{stage_name}` are {}; {add}",
            validate::list(known)
        ),
    };
    Err(origin
        .error(format!("stage `{stage_name}` has no {what} `{key_name}`"))
        .help(help))
}

/// `--set vars.NAME` names a variable of the file (without a leading `+`).
fn check_variable(root: &Node, name: &str, origin: &Origin) -> Result<(), Diagnostic> {
    let names: Vec<&str> = root
        .get("vars")
        .and_then(Node::as_map)
        .map(|m| m.iter().map(|(k, _)| k.name.as_str()).collect())
        .unwrap_or_default();
    if names.contains(&name) {
        return Ok(());
    }
    let shown = shorten_name(name);
    let add = format!("to add a new variable, write `--set +vars.{shown}=…`");
    let help = match suggest::hint(name, names.iter().copied()) {
        Some(hint) => format!("{hint} ({add})"),
        None if names.is_empty() => format!("the file has no `vars:`; {add}"),
        None => format!("the variables are {}; {add}", validate::list(&names)),
    };
    Err(origin
        .error(format!("the pipeline has no variable `{shown}`"))
        .help(help))
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
            Override::Set { path, value, .. } => (path, value),
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
                values: vec!["1".into(), "2".into(), "4".into()],
                new: false,
            }
        );
        assert_eq!(
            Override::parse_matrix("t.matrix.rows=[a,b],[c],'x,y'").unwrap(),
            Override::Matrix {
                stage: "t".into(),
                key: "rows".into(),
                values: vec!["[a,b]".into(), "[c]".into(), "'x,y'".into()],
                new: false,
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
