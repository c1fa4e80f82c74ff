//! `args:` — how a `cmd`'s params reach its command line, in the form the program parses:
//! `flags` (`--name=value`), `argparse` (`--name value`, a bare switch for `true`, a list as
//! several words) or `hydra` (`name=value` overrides). Rendering is pure: the words come back
//! unquoted, and the caller shell-quotes each one.

use std::collections::BTreeMap;

use ablate_spec::Value;
use serde::Deserialize;

/// How the program's params reach its command line (besides `ABLATE_PARAMS`, always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Args {
    /// Only where the command line says `{param.NAME}`.
    #[default]
    None,
    /// `--name=value`, one per param, the value's text (a list as JSON). Kept as it was: an
    /// existing pipeline's command lines, hence its keys, do not change.
    Flags,
    /// What argparse parses: `--name value`; `true` the bare switch (`store_true`), `false`
    /// and `null` left out; a list `--name v1 v2` (`nargs="+"`), an empty one left out.
    Argparse,
    /// Hydra overrides: `name=value` in Hydra's override grammar.
    Hydra,
}

/// The words `style` appends for `params` (sorted by name), unquoted; `Err` says which value
/// the program could not be given, and what to do instead.
pub(super) fn words(style: Args, params: &BTreeMap<&str, &Value>) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    for (&name, &value) in params {
        match style {
            Args::None => {}
            Args::Flags => words.push(format!("--{name}={}", text(value))),
            Args::Argparse => argparse(name, value, &mut words)?,
            Args::Hydra => words.push(format!("{}={}", hydra_key(name)?, hydra(name, value)?)),
        }
    }
    Ok(words)
}

/// A value as the program reads it back from a word: a string as itself, anything else as
/// its JSON text.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn argparse(name: &str, value: &Value, words: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::Null | Value::Bool(false) => {}
        Value::Bool(true) => words.push(format!("--{name}")),
        Value::Array(items) if items.is_empty() => {}
        Value::Array(items) => {
            words.push(format!("--{name}"));
            for item in items {
                words.push(list_item(name, item)?);
            }
        }
        scalar => {
            let text = text(scalar);
            // argparse takes a word that begins with `-` for an option (`--lr -1e-05` is
            // "expected one argument"), unless it is joined to its flag.
            if text.starts_with('-') {
                words.push(format!("--{name}={text}"));
            } else {
                words.push(format!("--{name}"));
                words.push(text);
            }
        }
    }
    Ok(())
}

/// One element of a list for `nargs`: its own word, which argparse must not take for an
/// option. A negative number is a value to argparse only in the form `-1`, `-0.5`, `-.5`, so
/// `-1e-05` is written out in full (`-0.00001`); a string that begins with `-` cannot be given.
fn list_item(name: &str, item: &Value) -> Result<String, String> {
    let mut text = text(item);
    if let Value::Number(n) = item
        && !argparse_negative_number(&text)
        && let Some(x) = n.as_f64()
        && x < 0.0
    {
        // Rust prints a float in full, never with an exponent, and exactly as Python reads it.
        text = x.to_string();
    }
    if text.starts_with('-') && !argparse_negative_number(&text) {
        return Err(format!(
            "`args: argparse` cannot pass the list element `{text}` of param `{name}`: argparse \
             takes a word that begins with `-` for an option, not a value; read the list from \
             the JSON file `$ABLATE_PARAMS` instead"
        ));
    }
    Ok(text)
}

/// What argparse reads as a negative number rather than an option (its
/// `_negative_number_matcher`: `^-\d+$|^-\d*\.\d+$`).
fn argparse_negative_number(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('-') else {
        return false;
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    match rest.split_once('.') {
        None => !rest.is_empty() && digits(rest),
        Some((whole, frac)) => digits(whole) && !frac.is_empty() && digits(frac),
    }
}

/// A param name as a Hydra key: a config path (`lr`, `optimizer.lr`, `batch-size`) or a config
/// group (`model`, `server/db`).
fn hydra_key(name: &str) -> Result<&str, String> {
    // A segment is an ID or, in a path, an index (`layers.0`).
    let segment = |s: &str| {
        let mut chars = s.chars();
        let id = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        id || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let head = name.chars().next();
    if head.is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.split(['.', '/']).all(segment)
    {
        Ok(name)
    } else {
        Err(format!(
            "`args: hydra` cannot pass param `{name}`: Hydra's override keys are names of \
             letters, digits, `_` and `-`, joined by `.` or `/`; rename the param"
        ))
    }
}

/// A value in Hydra's override grammar, such that Hydra reads back the same value and type:
/// `true`, `null`, `3`, `0.001`, `[2,3]`, `{a:1}`, a plain word bare (`adam`), any other string
/// double-quoted (`"a b"`, `"10"`: a string that looks like a number stays a string).
fn hydra(name: &str, value: &Value) -> Result<String, String> {
    Ok(match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        // JSON numbers are Hydra INTs and FLOATs (`-3`, `0.5`, `1e-7`, `2.5e+20`).
        Value::Number(n) => n.to_string(),
        Value::String(s) => hydra_string(name, s)?,
        Value::Array(items) => {
            let items: Result<Vec<String>, String> = items.iter().map(|i| hydra(name, i)).collect();
            format!("[{}]", items?.join(","))
        }
        Value::Object(map) => {
            let mut pairs = Vec::with_capacity(map.len());
            for (key, v) in map {
                if !hydra_bare(key) {
                    return Err(format!(
                        "`args: hydra` cannot pass param `{name}`: its key `{key}` is not a plain \
                         name, which Hydra's dictionary keys must be; read it from the JSON file \
                         `$ABLATE_PARAMS` instead"
                    ));
                }
                pairs.push(format!("{key}:{}", hydra(name, v)?));
            }
            format!("{{{}}}", pairs.join(","))
        }
    })
}

/// A string as a Hydra value: bare when Hydra reads it back as that string, else a double-quoted
/// value, in which a `"` is escaped and the backslashes before a quote (the closing one
/// included) are doubled (Hydra's `QuotedString.with_quotes`).
fn hydra_string(name: &str, s: &str) -> Result<String, String> {
    // OmegaConf resolves `${…}` in any string value, quoted or not, when the program reads it.
    if s.contains("${") {
        return Err(format!(
            "`args: hydra` cannot pass param `{name}` = `{s}`: Hydra would resolve its `${{…}}` as \
             an interpolation; pass it with `{{param.{name}}}` or read it from the JSON file \
             `$ABLATE_PARAMS` instead"
        ));
    }
    if hydra_bare(s) {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut backslashes = 0;
    for c in s.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', 2 * backslashes + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', 2 * backslashes));
    out.push('"');
    Ok(out)
}

/// A string Hydra reads back unquoted as that same string: a word of letters, digits, `_`, `-`,
/// `.` and `/` that begins with a letter or `_` (so it is no number) and is none of Hydra's
/// constants (`true`, `null`, `inf`, …, in any case).
fn hydra_bare(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !["true", "false", "null", "inf", "nan"]
            .iter()
            .any(|k| s.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(style: Args, params: Value) -> Result<Vec<String>, String> {
        let Value::Object(map) = params else {
            panic!("params are a map")
        };
        let params: BTreeMap<&str, &Value> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        words(style, &params)
    }

    #[test]
    fn flags_are_as_they_were() {
        let got = render(
            Args::Flags,
            json!({"amp": true, "layers": [2, 3], "lr": 0.1, "name": "a b", "x": null}),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--amp=true",
                "--layers=[2,3]",
                "--lr=0.1",
                "--name=a b",
                "--x=null"
            ]
        );
        assert!(render(Args::None, json!({"a": 1})).unwrap().is_empty());
    }

    #[test]
    fn argparse_switches_lists_and_values() {
        let got = render(
            Args::Argparse,
            json!({
                "amp": true, "no_amp": false, "batch_size": 16, "layers": [2, 3.5, "x"],
                "empty": [], "none": null, "lr": 0.001, "name": "a b", "cfg": {"k": [1]},
            }),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--amp",
                "--batch_size",
                "16",
                "--cfg",
                r#"{"k":[1]}"#,
                "--layers",
                "2",
                "3.5",
                "x",
                "--lr",
                "0.001",
                "--name",
                "a b",
            ]
        );
    }

    #[test]
    fn argparse_values_that_begin_with_a_dash() {
        // A scalar is joined to its flag; argparse would take `-1e-05` alone for an option.
        let got = render(Args::Argparse, json!({"lr": -1e-7, "s": "-x", "e": ""})).unwrap();
        assert_eq!(got, ["--e", "", "--lr=-1e-7", "--s=-x"]);
        // In a list, a negative number is written as argparse reads one.
        let got = render(Args::Argparse, json!({"v": [-1, -0.5, -1e-7, -2.5e20]})).unwrap();
        assert_eq!(
            got,
            ["--v", "-1", "-0.5", "-0.0000001", "-250000000000000000000"]
        );
        let err = render(Args::Argparse, json!({"v": ["a", "-b"]})).unwrap_err();
        assert!(err.contains("`-b` of param `v`"), "{err}");
        assert!(err.contains("$ABLATE_PARAMS"), "{err}");
    }

    #[test]
    fn argparse_negative_numbers_are_argparses() {
        for yes in ["-1", "-10", "-0.5", "-.5", "-12.25"] {
            assert!(argparse_negative_number(yes), "{yes}");
        }
        for no in [
            "-", "-x", "-1e-5", "-1.", "-.", "--1", "1", "-1.2.3", "-inf",
        ] {
            assert!(!argparse_negative_number(no), "{no}");
        }
    }

    #[test]
    fn hydra_overrides() {
        let got = render(
            Args::Hydra,
            json!({
                "amp": false, "fast": true, "layers": [2, 3], "lr": 1e-7, "big": 2.5e20, "n": -3,
                "model": "resnet-50", "path": "/data/x y", "num": "10", "t": "True",
                "none": null, "names": ["a", "b c"], "opt": {"lr": 0.1, "name": "sgd"},
                "optimizer.lr": 0.5, "empty": "", "nested": [[1], []],
            }),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "amp=false",
                "big=2.5e+20",
                "empty=\"\"",
                "fast=true",
                "layers=[2,3]",
                "lr=1e-7",
                "model=resnet-50",
                "n=-3",
                "names=[a,\"b c\"]",
                "nested=[[1],[]]",
                "none=null",
                "num=\"10\"",
                "opt={lr:0.1,name:sgd}",
                "optimizer.lr=0.5",
                "path=\"/data/x y\"",
                "t=\"True\"",
            ]
        );
    }

    /// Hydra's own reading of a double-quoted value (`OverrideVisitor._unescape_quoted_string`:
    /// every run of backslashes before a quote, the closing one included, halved, and the
    /// quote kept), to check the quoting against; and its lexer's rule that the value ends
    /// only at a quote after an even number of backslashes.
    fn hydra_unquote(quoted: &str) -> String {
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .expect("double-quoted");
        let mut out = String::new();
        let mut run = 0;
        for c in inner.chars() {
            if c == '\\' {
                run += 1;
                continue;
            }
            if c == '"' {
                assert!(run % 2 == 1, "{quoted}: an inner quote ends the value");
                out.extend(std::iter::repeat_n('\\', run / 2));
            } else {
                out.extend(std::iter::repeat_n('\\', run));
            }
            out.push(c);
            run = 0;
        }
        assert!(run % 2 == 0, "{quoted}: the closing quote is escaped");
        out.extend(std::iter::repeat_n('\\', run / 2));
        out
    }

    #[test]
    fn hydra_strings_are_quoted_as_hydra_reads_them() {
        for s in [
            "a b",
            "say \"hi\"",
            r"C:\dir\",
            r#"a\"b"#,
            r"\\",
            "it's",
            "a,b",
            "x=1",
            "[1,2]",
            "{a:1}",
            "1e-5",
            "null",
            "NaN",
            "-x",
            " padded ",
            "tab\there",
            "ünï",
        ] {
            let quoted = hydra_string("v", s).unwrap();
            assert!(quoted.starts_with('"'), "{s:?} → {quoted}");
            assert_eq!(hydra_unquote(&quoted), s, "{s:?} → {quoted}");
        }
        assert_eq!(hydra_string("v", r#"say "hi""#).unwrap(), r#""say \"hi\"""#);
        assert_eq!(hydra_string("v", r"C:\dir\").unwrap(), r#""C:\dir\\""#);
        for bare in ["adam", "resnet-50", "conf/model.yaml", "_x", "trueish"] {
            assert_eq!(hydra_string("v", bare).unwrap(), bare);
        }
    }

    #[test]
    fn hydra_refuses_what_it_cannot_take() {
        let err = render(Args::Hydra, json!({"dir": "/root/${name}"})).unwrap_err();
        assert!(err.contains("interpolation"), "{err}");
        let err = render(Args::Hydra, json!({"a b": 1})).unwrap_err();
        assert!(err.contains("param `a b`"), "{err}");
        let err = render(Args::Hydra, json!({"d": {"x y": 1}})).unwrap_err();
        assert!(err.contains("key `x y`"), "{err}");
        for bad in ["1x", ".a", "a..b", "a=b", "+a", "a.0b"] {
            assert!(hydra_key(bad).is_err(), "{bad}");
        }
        for good in ["lr", "batch-size", "optimizer.lr", "server/db", "layers.0"] {
            assert_eq!(hydra_key(good), Ok(good));
        }
    }
}
