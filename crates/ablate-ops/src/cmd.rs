//! `cmd`: run any program. Its command text is a param (hashed), its declared `deps` files are
//! hashed into the key, `{in.STAGE}` / `{out}` / `{param.NAME}` are substituted, its stdout and
//! stderr are kept in the cache entry, and a `metrics.json` it writes into `{out}` becomes its
//! metrics.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ablate_cache::Metric;
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Params, Value};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;

pub(crate) struct Cmd {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CmdParams {
    run: String,
    #[serde(default)]
    deps: Vec<String>,
    /// Free params (matrix keys): accepted here, read as `{param.NAME}` from the job's params.
    #[serde(flatten)]
    #[allow(dead_code)]
    free: BTreeMap<String, Value>,
}

impl Cmd {
    pub(crate) fn new() -> Self {
        Cmd {
            schema: OpSchema {
                name: "cmd",
                version: 1,
                summary: "Run a shell command (`sh -c`) in the working directory. Placeholders: `{in.STAGE}` (the cache \
                          directory of that input), `{out}` (where to write outputs), `{param.NAME}` (a param or matrix \
                          value). stdout/stderr are kept in the entry; a `{out}/metrics.json` object of numbers becomes \
                          its metrics; a non-zero exit fails it.",
                params: vec![
                    ParamSpec::required(
                        "run",
                        ParamType::Str,
                        "the command line, run with `sh -c`",
                    ),
                    ParamSpec::with_default(
                        "deps",
                        ParamType::list(ParamType::Str),
                        json!([]),
                        "files (relative to the working directory) whose content is part of the key",
                    ),
                ],
                gathers: false,
                free_params: true,
                inputs_by_name: true,
                on_device: false,
                needs: (0, None),
            },
        }
    }
}

impl Op for Cmd {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn file_deps(&self, params: &Params) -> Vec<String> {
        // Validation has type-checked the params; unreadable ones have no deps to hash.
        typed::<CmdParams>("cmd", params)
            .map(|p| p.deps)
            .unwrap_or_default()
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: CmdParams = typed("cmd", ctx.job.params())?;
        let line = expand(&p.run, ctx)?;
        let out = ctx.out_dir();
        let io = |what: &str, path: &Path| {
            let path = path.to_owned();
            let what = what.to_owned();
            move |e| OpError::with(format!("failed to {what} `{}`", path.display()), e)
        };
        let stdout_path = out.join("stdout.log");
        let stderr_path = out.join("stderr.log");
        let stdout = fs::File::create(&stdout_path).map_err(io("create", &stdout_path))?;
        let stderr = fs::File::create(&stderr_path).map_err(io("create", &stderr_path))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(ctx.workdir())
            .env("ABLATE_OUT", out)
            .env("ABLATE_THREADS", ctx.threads().to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: a terminal's Ctrl-C reaches ablate alone, which then stops
            // the whole group gracefully (or kills it on the second Ctrl-C).
            .process_group(0)
            .spawn()
            .map_err(|e| OpError::with("failed to start `sh`", e))?;
        let pgid = child.id() as i32;
        let mut nap = Duration::from_micros(50);
        let mut signalled = 0;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| OpError::with("failed to wait for the command", e))?
            {
                break status;
            }
            let token = ctx.cancel_token();
            if token.is_killed() && signalled < 2 {
                signal_group(pgid, libc::SIGKILL);
                signalled = 2;
            } else if token.is_cancelled() && signalled < 1 {
                signal_group(pgid, libc::SIGTERM);
                signalled = 1;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(10));
        };
        if signalled > 0 {
            return Err(OpError::Cancelled);
        }
        if !status.success() {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "an unknown status".into(),
            };
            let tail = tail_lines(&stderr_path, 10);
            let mut message = format!("command failed with {how}: {line}");
            if !tail.is_empty() {
                message.push_str("\nlast lines of stderr:\n");
                message.push_str(&tail);
            }
            return Err(OpError::msg(message));
        }
        Ok(OpOutput {
            metrics: read_metrics(&out.join("metrics.json"))?,
            publish: Vec::new(),
        })
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: `kill` has no memory-safety preconditions; a stale pgid only makes it fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Substitutes `{out}`, `{in.STAGE}` and `{param.NAME}`; other braces (shell `${X}`, awk
/// `{print}`) are left alone.
fn expand(template: &str, ctx: &OpContext<'_>) -> Result<String, OpError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let replacement = if inner == "out" {
            Some(quote(&ctx.out_dir().to_string_lossy()))
        } else if let Some(stage) = inner.strip_prefix("in.") {
            let dirs: Vec<String> = ctx
                .job
                .inputs
                .iter()
                .filter(|i| i.stage == stage)
                .map(|i| quote(&ctx.entry_dir(&i.key).to_string_lossy()))
                .collect();
            if dirs.is_empty() {
                let needs: Vec<&str> = ctx.job.inputs.iter().map(|i| i.stage.as_str()).collect();
                return Err(OpError::msg(format!(
                    "`{{in.{stage}}}` names no input of this stage (its inputs come from: {})",
                    if needs.is_empty() {
                        "nothing".to_owned()
                    } else {
                        needs.join(", ")
                    }
                )));
            }
            Some(dirs.join(" "))
        } else if let Some(name) = inner.strip_prefix("param.") {
            match ctx.job.params().get(name) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) => Some(v.to_string()),
                None => {
                    let names: Vec<&str> = ctx.job.params().keys().map(String::as_str).collect();
                    return Err(OpError::msg(format!(
                        "`{{param.{name}}}` names no param of this instance (it has: {})",
                        names.join(", ")
                    )));
                }
            }
        } else {
            None
        };
        match replacement {
            Some(r) => {
                out.push_str(&r);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Single-quotes a path for `sh` when it holds anything but safe characters.
fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_metrics(path: &Path) -> Result<Vec<Metric>, OpError> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let bad = |why: String| {
        OpError::msg(format!(
            "`{}` {why}; expected a JSON object of numbers, e.g. {{\"acc\": 0.93}}",
            path.display()
        ))
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("is not JSON ({e})")))?;
    let Value::Object(map) = value else {
        return Err(bad("is not an object".into()));
    };
    map.into_iter()
        .map(|(k, v)| match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Metric::new(k, x)),
            _ => Err(bad(format!("has `{k}` = {v}, not a finite number"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(quote("/a b/c"), "'/a b/c'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
