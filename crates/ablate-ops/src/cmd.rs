//! `cmd`: run any program — a user's own training script as a first-class stage. Its command
//! text is a param (hashed), its declared `deps` (files, directories, globs) are hashed into the
//! key, `{in.STAGE}` / `{out}` / `{param.NAME}` are substituted — each value shell-quoted, so a
//! value is always one word and never code. The program gets its params as a JSON file
//! (`ABLATE_PARAMS`) and, with `args:`, on its command line (`flags`, `argparse`, `hydra`); the GPUs the scheduler
//! gave it (`CUDA_VISIBLE_DEVICES`); a checkpoint directory that survives failed and killed
//! attempts (`ABLATE_CHECKPOINT`). Lines it appends to `{out}/metrics.jsonl` show on the
//! progress line and become stepped and final metrics; a `{out}/metrics.json` object adds
//! final ones. Its stdout and stderr are kept in the entry.

mod args;
mod metrics_log;
mod python;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ablate_cache::{EntryStatus, Metric};
use ablate_run::process::{self, Exit, shell_quote as quote};
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType, Params, TAG, Value};
use serde::Deserialize;
use serde_json::json;

use self::args::Args;
use crate::params::typed;
use crate::registry::{InstanceProblem, Op, Planned};

pub(crate) struct Cmd {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CmdParams {
    run: String,
    #[serde(default)]
    deps: Vec<String>,
    #[serde(default)]
    args: Args,
}

/// The program's own params: everything but `cmd`'s settings ([`OpSchema::is_setting`], the
/// definition `runs.parquet`'s columns share) and the key-only `tag`.
fn program_params<'a>(schema: &OpSchema, params: &'a Params) -> BTreeMap<&'a str, &'a Value> {
    params
        .iter()
        .filter(|(k, _)| !schema.is_setting(k) && k.as_str() != TAG.name)
        .map(|(k, v)| (k.as_str(), v))
        .collect()
}

/// The JSON file of the program's params, in `{out}` (so the entry records them too).
const PARAMS_FILE: &str = "ablate-params.json";

/// The longest single argument Linux passes to a program (`MAX_ARG_STRLEN`): `sh -c`'s line.
const MAX_ARG_BYTES: usize = 128 * 1024;

/// The JSON file of the program's inputs, in `{out}`: see [`write_inputs`].
const INPUTS_FILE: &str = "ablate-inputs.json";

impl Cmd {
    pub(crate) fn new() -> Self {
        Cmd {
            schema: OpSchema {
                name: "cmd",
                // 2: `{param.NAME}` values are shell-quoted (#16); an entry made by version 1
                // pasted them raw, so it may hold another computation.
                version: 2,
                summary: "Run a shell command (`sh -c`) in the pipeline file's directory (or its `workdir:`): your own training script as a stage. \
                          Placeholders: `{in.STAGE}` (the cache directories of that input), `{out}` (where to write \
                          outputs), `{param.NAME}` (a param or matrix value); every substituted value is shell-quoted, \
                          so it reaches the program as one word and is never run as code. Environment: \
                          `ABLATE_PARAMS` (a JSON file of its params), `ABLATE_INPUTS` (a JSON list of its inputs: \
                          stage, label, labels, params, path; for any number of them), `ABLATE_CHECKPOINT` (a \
                          directory that survives failed and killed attempts of the same key: resume from it), \
                          `ABLATE_METRICS` (= `{out}/metrics.jsonl`), `ABLATE_OUT`, `ABLATE_THREADS` (its CPU share, \
                          also in OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS and the like unless set), \
                          `ABLATE_INSTANCE` (its key), `ABLATE_LABEL`, and `CUDA_VISIBLE_DEVICES` (the GPUs the \
                          scheduler gave it). Lines appended to `{out}/metrics.jsonl` (`{\"step\": 10, \"loss\": \
                          0.4}`) show on the progress line and become metrics at their step, the last value of each \
                          the final one; a NaN or infinite value marks the run diverged (see the stage key \
                          `diverged`). stdout/stderr are kept in the entry; a `{out}/metrics.json` object of numbers \
                          becomes its metrics; a non-zero exit fails it. The program dies with ablate, and holds its \
                          key's lock while it lives.",
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
                        "files, directories (every file below them) and globs (`src/**/*.py`), relative to \
                         the pipeline file's directory (or its `workdir:`), whose content is part of the key; hidden files and \
                         `__pycache__` are left out of directories and `**`",
                    ),
                    ParamSpec::with_default(
                        "args",
                        ParamType::Enum(&["none", "flags", "argparse", "hydra"]),
                        json!("none"),
                        "append every param to the command line, sorted by name, each word shell-quoted. \
                         `flags`: `--name=value` (a list as JSON: `--layers=[2,3]`). `argparse`: `--name value`; \
                         `true` is the bare switch `--name` (`store_true`), `false` and `null` are left out, a list \
                         is `--name 2 3` (`nargs=\"+\"`), an empty one left out. `hydra`: Hydra overrides \
                         `name=value` (`amp=true`, `layers=[2,3]`, `opt=adam`, `path=\"/a b\"`). The params always \
                         reach the program as the JSON file `$ABLATE_PARAMS` too",
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

    /// The `step` of its metrics log: early stopping passes the budget as `ABLATE_STOP_AT`.
    fn budget_unit(&self) -> Option<&'static str> {
        Some("steps")
    }

    fn file_deps(&self, params: &Params) -> Vec<String> {
        // Validation has type-checked the params; unreadable ones have no deps to hash.
        typed::<CmdParams>("cmd", params)
            .map(|p| p.deps)
            .unwrap_or_default()
    }

    /// `{in.STAGE}` puts one path per input on the command line, which is one `sh -c`
    /// argument: past 128 KiB the kernel refuses it (#21: a join over 10,000 inputs failed
    /// with "Argument list too long" after all of them had run). Caught here, before anything
    /// runs.
    fn check_instance(
        &self,
        params: &Params,
        planned: &Planned<'_>,
    ) -> Result<(), InstanceProblem> {
        let Ok(p) = typed::<CmdParams>("cmd", params) else {
            return Ok(());
        };
        // A value the program cannot be given on its command line is refused before anything
        // runs, not when its instance's turn comes.
        if matches!(p.args, Args::Argparse | Args::Hydra) {
            args::words(p.args, &program_params(&self.schema, params)).map_err(|message| {
                InstanceProblem {
                    param: "args",
                    message,
                    hint: None,
                }
            })?;
        }
        let mut bytes = p.run.len();
        let mut widest = ("", 0);
        for stage in placeholders(&p.run, "in.") {
            let n = planned.input_stages.iter().filter(|s| **s == stage).count();
            // Each path is quoted at most with two quotes, and separated by a space.
            bytes += n * (planned.entry_dir_len + 3);
            if n > widest.1 {
                widest = (stage, n);
            }
        }
        if bytes < MAX_ARG_BYTES {
            return Ok(());
        }
        Err(InstanceProblem {
            param: "run",
            message: format!(
                "its command line would not fit: `{{in.{}}}` expands to {} paths, and the whole \
                 line to about {} KiB, over the {} KiB a command line can hold",
                widest.0,
                widest.1,
                bytes / 1024,
                MAX_ARG_BYTES / 1024
            ),
            hint: Some(
                "read the inputs from the JSON file `$ABLATE_INPUTS` instead (each input's \
                 stage, label, params and path)"
                    .to_owned(),
            ),
        })
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: CmdParams = typed("cmd", ctx.job.params())?;
        let out = ctx.out_dir();
        let params = program_params(&self.schema, ctx.job.params());
        let params_path = absolute(&out.join(PARAMS_FILE));
        let json = serde_json::to_vec_pretty(&params).expect("params serialise");
        fs::write(&params_path, json).map_err(io("write", &params_path))?;
        let inputs = verified_inputs(ctx)?;
        let inputs_path = absolute(&out.join(INPUTS_FILE));
        write_inputs(&inputs_path, &inputs)?;
        let mut line = expand(&p.run, ctx, &inputs)?;
        for word in args::words(p.args, &params).map_err(OpError::msg)? {
            line.push(' ');
            line.push_str(&quote(&word));
        }
        // The checkpoint directory holds the metrics log too (linked from `{out}`), so the
        // lines of an attempt that dies are there for the one that resumes.
        let checkpoint = absolute(&ctx.checkpoint_dir());
        fs::create_dir_all(&checkpoint).map_err(io("create", &checkpoint))?;
        let log = checkpoint.join(metrics_log::METRICS_LOG);
        let starts = metrics_log::prepare(&log).map_err(io("prepare", &log))?;
        let linked = out.join(metrics_log::METRICS_LOG);
        std::os::unix::fs::symlink(&log, &linked).map_err(io("create", &linked))?;

        let stderr_path = out.join("stderr.log");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&line)
            .current_dir(ctx.workdir())
            .env("ABLATE_PARAMS", &params_path)
            .env("ABLATE_INPUTS", &inputs_path)
            .env("ABLATE_CHECKPOINT", &checkpoint)
            .env("ABLATE_METRICS", absolute(&linked))
            .stdin(Stdio::null())
            .stdout(create(&out.join("stdout.log"))?)
            .stderr(create(&stderr_path)?);
        environment(&mut command, ctx);
        // Early stopping: the program stops once it has logged this step, leaving its
        // checkpoint (else it is stopped a grace period after logging it).
        let budget = ctx.budget();
        if let Some(b) = budget {
            command.env("ABLATE_STOP_AT", b.to_string());
        }
        let program =
            process::spawn(command, ctx.key_lock()).map_err(|e| match e.raw_os_error() {
                Some(libc::E2BIG) => OpError::msg(format!(
                    "failed to start `sh`: its command line is {} KiB, more than a command line \
                     can hold; read the inputs from the JSON file `$ABLATE_INPUTS` instead of \
                     `{{in.STAGE}}`",
                    line.len() / 1024
                )),
                _ => OpError::with("failed to start `sh`", e),
            })?;
        // A divergence seen as it is logged stops the program: nothing after it is a result.
        let mut live = metrics_log::Live::new(*starts.last().expect("this attempt's start"));
        let mut reached: Option<Instant> = None;
        let mut at_budget = false;
        let exit = program
            .wait(ctx.cancel_token(), || {
                live.poll(&log, |p| ctx.progress(p));
                if let (Some(b), Some(step)) = (budget, live.step())
                    && step >= b
                    && reached.get_or_insert_with(Instant::now).elapsed() >= BUDGET_GRACE
                {
                    at_budget = true;
                }
                at_budget || live.diverged()
            })
            .map_err(|e| OpError::with("failed to wait for the command", e))?;
        // The log comes home to `{out}` as a copy: the checkpoint keeps its own until the entry
        // is committed (the executor then removes the checkpoint), so a checkpoint is never
        // without the metrics it logged (#21: a retry resumed from it, trained nothing, and was
        // committed with an empty log). A program that replaced the link with a file of its own
        // keeps that file.
        if fs::symlink_metadata(&linked).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&linked).map_err(io("remove", &linked))?;
            fs::copy(&log, &linked).map_err(io("write", &linked))?;
        }
        let status = match exit {
            Exit::Stopped(status) if at_budget && !ctx.is_cancelled() => status,
            Exit::Stopped(_) if ctx.is_cancelled() || !live.diverged() => {
                return Err(OpError::Cancelled);
            }
            Exit::Stopped(status) | Exit::Finished(status) => status,
        };
        let logged = metrics_log::read(&linked, &starts)?;
        if let Some(diverged) = logged.diverged {
            // Stopped at its divergence, or stopped by it (an assert, an exception): the
            // outcome is the divergence, whatever the exit status; `metrics.json`, written by a
            // model that diverged, is not a result.
            return Ok(OpOutput {
                metrics: logged.metrics,
                publish: Vec::new(),
                status: diverged,
                stopped_at: None,
            });
        }
        // Where the log (of every attempt) reached the budget, it stopped there: whether it
        // stopped itself or was stopped, and also if it happened to end just there (the next
        // attempt then ends at once, from its checkpoint).
        let last = logged.metrics.iter().filter_map(|m| m.step).max();
        let stopped_at = budget.filter(|b| last.is_some_and(|s| s >= *b));
        let stopped_by_budget = at_budget && stopped_at.is_some();
        if !status.success() && !stopped_by_budget {
            return Err(failure(status, &line, &stderr_path));
        }
        // `metrics.json`'s values are final ones, over those of the log.
        let mut metrics = logged.metrics;
        for m in read_metrics(&out.join("metrics.json"))? {
            metrics.retain(|old| old.step.is_some() || old.name != m.name);
            metrics.push(m);
        }
        Ok(OpOutput {
            metrics,
            publish: Vec::new(),
            status: EntryStatus::Done,
            stopped_at,
        })
    }
}

/// How long a program that logged its early-stopping budget's step has to stop by itself
/// (saving its checkpoint) before it is stopped.
const BUDGET_GRACE: Duration = Duration::from_secs(10);

/// The rest of the program's environment: where it writes, who it is, its threads and GPUs.
fn environment(command: &mut Command, ctx: &OpContext<'_>) {
    let threads = ctx.threads().to_string();
    command
        .env("ABLATE_OUT", ctx.out_dir())
        .env("ABLATE_THREADS", &threads)
        .env("ABLATE_INSTANCE", ctx.job.key.to_hex())
        .env("ABLATE_LABEL", &ctx.job.id);
    // Numeric libraries start a thread per core unless told otherwise: four PyTorch instances
    // on two cores ran 6.4x slower than with one thread each (#21). What the user set for
    // ablate itself is inherited instead.
    for var in THREAD_VARS {
        if std::env::var_os(var).is_none() {
            command.env(var, &threads);
        }
    }
    // `import ablate` finds the module that speaks this binary's protocol, installed or not.
    if let Some(dir) = python::module_dir() {
        command.env(
            "PYTHONPATH",
            python::python_path(dir, std::env::var_os("PYTHONPATH")),
        );
    }
    // Locally, the GPUs the scheduler gave this instance; on Slurm, the allocation's
    // (inherited).
    if let Some(gpus) = &ctx.job.placement.visible {
        command.env("CUDA_VISIBLE_DEVICES", gpus);
    }
}

fn create(path: &Path) -> Result<fs::File, OpError> {
    fs::File::create(path).map_err(io("create", path))
}

/// What tells numeric libraries how many threads to start (OpenMP — PyTorch, NumPy's BLAS —,
/// MKL, OpenBLAS, BLIS, Accelerate, numexpr, Numba, Rayon, Polars, TensorFlow): each gets the
/// instance's CPU share unless ablate's own environment sets it.
pub(crate) const THREAD_VARS: [&str; 10] = [
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "POLARS_MAX_THREADS",
    "TF_NUM_INTRAOP_THREADS",
];

/// The error of a program that exited non-zero or was killed: how, its command line, and the
/// end of its stderr.
fn failure(status: std::process::ExitStatus, line: &str, stderr: &Path) -> OpError {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "an unknown status".into(),
    };
    let tail = ablate_run::tail(stderr, 10);
    let mut message = format!("command failed with {how}: {}", clip(line, 300));
    if !tail.is_empty() {
        message.push_str("\nlast lines of stderr:\n");
        message.push_str(&tail);
    }
    OpError::msg(message)
}

/// An error for a failed file operation.
fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> OpError {
    let message = format!("failed to {what} `{}`", path.display());
    move |e| OpError::with(message, e)
}

/// `path` made absolute against the current directory, for the environment of a program
/// that runs elsewhere.
fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Every input of the instance, verified in full (the program may read any of their files).
fn verified_inputs<'a>(ctx: &OpContext<'a>) -> Result<Vec<Input<'a>>, OpError> {
    ctx.job
        .inputs
        .iter()
        .map(|input| {
            let (dir, manifest) = ctx.verified_entry(&input.key)?;
            Ok(Input {
                input,
                path: absolute(&dir),
                params: manifest.input.params,
            })
        })
        .collect()
}

/// One input as the program sees it in `$ABLATE_INPUTS`.
struct Input<'a> {
    input: &'a ablate_run::JobInput,
    path: std::path::PathBuf,
    params: ablate_spec::Params,
}

/// `$ABLATE_INPUTS`: a JSON list of the inputs, each with its stage, label, labels (matrix
/// values), params and entry directory. Unlike `{in.STAGE}` on the command line, it has no
/// size limit (#21: 10,000 paths in one `sh -c` argument failed with "Argument list too long").
fn write_inputs(path: &Path, inputs: &[Input<'_>]) -> Result<(), OpError> {
    let list: Vec<serde_json::Value> = inputs
        .iter()
        .map(|i| {
            let labels: serde_json::Map<String, Value> = i.input.labels.iter().cloned().collect();
            json!({
                "stage": i.input.stage,
                "label": i.input.id,
                "key": i.input.key.to_hex(),
                "labels": labels,
                "params": i.params,
                "path": i.path,
            })
        })
        .collect();
    let json = serde_json::to_vec_pretty(&list).expect("inputs serialise");
    fs::write(path, json).map_err(io("write", path))
}

/// Substitutes `{out}`, `{in.STAGE}` and `{param.NAME}`; other braces (shell `${X}`, awk
/// `{print}`) are left alone.
fn expand(template: &str, ctx: &OpContext<'_>, inputs: &[Input<'_>]) -> Result<String, OpError> {
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
            let dirs: Vec<String> = inputs
                .iter()
                .filter(|i| i.input.stage == stage)
                .map(|i| quote(&i.path.to_string_lossy()))
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
                Some(Value::String(s)) => Some(quote(s)),
                Some(v) => Some(quote(&v.to_string())),
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

/// The names in a command line's `{PREFIXname}` placeholders, in order.
fn placeholders<'a>(template: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> {
    template.split('{').skip(1).filter_map(move |part| {
        let (inner, _) = part.split_once('}')?;
        inner.strip_prefix(prefix)
    })
}

/// `text`, or its first `max` characters and a count of the rest.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} more bytes)", &text[..at], text.len() - at),
        None => text.to_owned(),
    }
}

/// `{out}/metrics.json`: final metrics, one object of numbers; `null` leaves a metric without a
/// value. A training's divergence is read in its metrics log: a non-finite final value (an AUC
/// of one class) is refused here, not taken for one.
fn read_metrics(path: &Path) -> Result<Vec<Metric>, OpError> {
    let Ok(text) = fs::read(path) else {
        return Ok(Vec::new());
    };
    let bad = |why: String| {
        OpError::msg(format!(
            "`{}` {why}; expected a JSON object of numbers, e.g. {{\"acc\": 0.93}}",
            path.display()
        ))
    };
    let Value::Object(map) = metrics_log::parse_json(&text).map_err(bad)? else {
        return Err(bad("is not an object".into()));
    };
    let mut metrics = Vec::with_capacity(map.len());
    for (k, v) in map {
        match metrics_log::number(&v) {
            Some(x) if x.is_finite() => metrics.push(Metric::new(k, x)),
            Some(x) => {
                return Err(bad(format!(
                    "has `{k}` = {x}, which a result cannot hold: write `null` for a metric \
                     without a value (a training that diverges shows it in its metrics log)"
                )));
            }
            None if v.is_null() => {}
            None => return Err(bad(format!("has `{k}` = {v}, not a number"))),
        }
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ablate_cache::Store;
    use ablate_run::{CancelToken, Progress};

    /// Runs `cmd` with `params` in a fresh temp dir (also its working directory).
    fn run_cmd(params: Value) -> (tempfile::TempDir, Result<OpOutput, OpError>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let Value::Object(params) = params else {
            panic!("params are a map")
        };
        let job = crate::testutil::job("cmd", params.into_iter().collect(), Vec::new(), "cpu");
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let progress = |_: Progress| {};
        let cancel = CancelToken::new();
        let ctx = OpContext::new(&job, &out, &store, dir.path(), 1, &progress, &cancel);
        let result = Cmd::new().run(&ctx);
        (dir, result)
    }

    #[test]
    fn param_values_are_quoted_so_they_are_never_run() {
        for value in [
            "x; touch pwned",
            "$(touch pwned)",
            "`touch pwned`",
            "it's",
            "a b  c",
            "",
            "--flag=1",
        ] {
            let (dir, result) = run_cmd(json!({
                "run": "printf '%s|' {param.v} > {out}/got",
                "v": value,
            }));
            result.unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert!(!dir.path().join("pwned").exists(), "{value:?} ran as code");
            let got = fs::read_to_string(dir.path().join("out/got")).unwrap();
            assert_eq!(got, format!("{value}|"), "{value:?} is not one word");
        }
        // Numbers and lists are quoted too (their JSON text).
        let (dir, result) =
            run_cmd(json!({"run": "printf '%s|' {param.v} > {out}/got", "v": [1, 2]}));
        result.unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("out/got")).unwrap(),
            "[1,2]|"
        );
    }

    #[test]
    fn a_failure_shows_the_stderr_tail_read_lossily_and_bounded() {
        let (_dir, result) = run_cmd(json!({
            "run": "printf 'early \\377 bad byte\\n' >&2; head -c 3000000 /dev/zero | tr '\\0' x >&2; \
                    printf '\\nlast words\\n' >&2; exit 3",
        }));
        let message = result.expect_err("the command fails").to_string();
        assert!(message.contains("exit status 3"), "{message:.300}");
        assert!(
            message.ends_with("last words"),
            "{:?}",
            &message[message.len().saturating_sub(200)..]
        );
        assert!(message.len() < 20_000, "{} bytes", message.len());
    }
}
