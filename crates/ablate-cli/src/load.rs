//! Pipeline file → validated pipeline → sealed plan, with the command line's overrides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ablate_cache::Store;
use ablate_ops::Registry;
use ablate_plan::Plan;
use ablate_spec::{Device, ExecutorConfig, OpCatalog as _, Override, Overrides};
use anyhow::Context as _;

use crate::cli::{ExecutorArgs, SpecArgs};
use crate::error::{SpecErrors, input};

pub struct Loaded {
    pub plan: Plan,
    pub registry: Arc<Registry>,
    pub workdir: PathBuf,
    pub forced: Vec<String>,
    /// The file's `executor:` and `slurm:`.
    pub executor: ExecutorConfig,
    /// The params the `--set`s changed, by stage (empty without them).
    pub overridden: crate::results::Overridden,
    /// The matrix axes the `--matrix`s (or a `--set` of an axis) changed, by stage: one value,
    /// or a list of them (empty without overrides).
    pub matrix_overridden: crate::results::Overridden,
    /// The validated file the plan was built from (its stages' places, for errors).
    pub pipeline: ablate_spec::Pipeline,
}

pub fn load(spec: &SpecArgs) -> anyhow::Result<Loaded> {
    let mut overrides = Overrides { items: Vec::new() };
    for arg in &spec.set {
        let o = Override::parse_set(arg)
            .map_err(|why| input(format!("invalid `--set {arg}`: {why}"), None))?;
        overrides.items.push((format!("--set {arg}"), o));
    }
    for arg in &spec.matrix {
        let o = Override::parse_matrix(arg)
            .map_err(|why| input(format!("invalid `--matrix {arg}`: {why}"), None))?;
        overrides.items.push((format!("--matrix {arg}"), o));
    }
    let registry = Arc::new(Registry::builtin());
    let mut pipeline = ablate_spec::load_file(&spec.file, &overrides, &*registry)
        .map_err(|d| anyhow::Error::new(SpecErrors(d)))?;
    if let Some(device) = spec.device {
        // `--device cuda` moves the ops that compute on a device; `--device cpu` every stage.
        for stage in &mut pipeline.stages {
            if device == Device::Cpu || on_device(&registry, &stage.op) {
                stage.device = device;
            }
        }
    }
    let workdir = workdir_of(&spec.file, &pipeline)?;
    let plan = ablate_plan::build(&pipeline, &*registry, &workdir)
        .map_err(|d| anyhow::Error::new(SpecErrors(d)))?;
    for stage in &spec.force {
        if pipeline.stage(stage).is_none() {
            let names = pipeline.stages.iter().map(|s| s.name.as_str());
            let hint =
                ablate_spec::did_you_mean(stage, names).map(|s| format!("did you mean `{s}`?"));
            return Err(input(
                format!("`--force {stage}`: the pipeline has no stage `{stage}`"),
                hint,
            ));
        }
    }
    let (overridden, matrix_overridden) = if overrides.is_empty() {
        Default::default()
    } else {
        overridden(&spec.file, &pipeline, &registry)
    };
    Ok(Loaded {
        plan,
        registry,
        workdir,
        forced: spec.force.clone(),
        executor: pipeline.executor.clone(),
        overridden,
        matrix_overridden,
        pipeline,
    })
}

/// Where the pipeline's relative paths (`cmd`'s `run` and `deps`, data files) resolve: the
/// file's own directory, or its `workdir:` taken from there — as DVC and Snakemake do, so a
/// pipeline runs the same from any directory (#21). Keys never depend on it: a `deps` path
/// enters the key as written, relative to this directory.
pub fn workdir_of(file: &Path, pipeline: &ablate_spec::Pipeline) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("failed to read the current directory")?;
    let dir = match cwd.join(file).parent() {
        Some(dir) => dir.to_owned(),
        None => cwd,
    };
    let Some((written, span)) = &pipeline.workdir else {
        return std::fs::canonicalize(&dir)
            .with_context(|| format!("failed to resolve the directory `{}`", dir.display()));
    };
    let wanted = dir.join(written);
    match std::fs::canonicalize(&wanted) {
        Ok(path) if path.is_dir() => Ok(path),
        result => {
            let why = match result {
                Ok(_) => "not a directory".to_owned(),
                Err(e) => e.to_string(),
            };
            let d = ablate_spec::Diagnostic::error(format!(
                "`workdir: {written}` names `{}`, which is not a usable directory ({why})",
                wanted.display()
            ))
            .at(*span)
            .help("`workdir` is relative to the pipeline file's directory");
            Err(anyhow::Error::new(SpecErrors(ablate_spec::Diagnostics {
                source: Some(std::sync::Arc::clone(&pipeline.source)),
                items: vec![d],
            })))
        }
    }
}

/// The params, then the matrix axes, of each stage of `pipeline` (loaded with overrides) that
/// differ from the file's own (loaded again without them; that load only fails where the
/// overrides repaired the file, and then nothing is said).
fn overridden(
    file: &Path,
    pipeline: &ablate_spec::Pipeline,
    registry: &Registry,
) -> (crate::results::Overridden, crate::results::Overridden) {
    let Ok(base) = ablate_spec::load_file(file, &Overrides::new(), registry) else {
        return Default::default();
    };
    let mut params = crate::results::Overridden::new();
    let mut axes = crate::results::Overridden::new();
    for stage in &pipeline.stages {
        let Some(before) = base.stage(stage.name.as_str()) else {
            continue;
        };
        let changed: Vec<(String, serde_json::Value)> = stage
            .params
            .iter()
            .filter(|(k, v)| before.params.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !changed.is_empty() {
            params.insert(stage.name.to_string(), changed);
        }
        let changed: Vec<(String, serde_json::Value)> = stage
            .matrix
            .axes
            .iter()
            .filter(|(k, values)| {
                before
                    .matrix
                    .axes
                    .iter()
                    .find(|(b, _)| b == k)
                    .map(|(_, v)| v)
                    != Some(values)
            })
            .map(|(k, values)| {
                let value = match values.as_slice() {
                    [one] => one.clone(),
                    many => serde_json::Value::Array(many.to_vec()),
                };
                (k.clone(), value)
            })
            .collect();
        if !changed.is_empty() {
            axes.insert(stage.name.to_string(), changed);
        }
    }
    (params, axes)
}

/// Whether `op` computes on its job's device (its schema's `on_device`).
pub fn on_device(registry: &Registry, op: &str) -> bool {
    registry.schema(op).is_some_and(|s| s.on_device)
}

/// Opens the cache at an absolute path (commands run by `cmd` see it from their own cwd).
pub fn open_store(dir: &Path) -> anyhow::Result<Store> {
    let abs = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()?.join(dir)
    };
    Store::open(&abs).with_context(|| format!("failed to open the cache at `{}`", dir.display()))
}

/// Where a run goes: the command line's `--executor` over the profile over the file.
pub fn executor_config(loaded: &Loaded, args: &ExecutorArgs) -> anyhow::Result<ExecutorConfig> {
    let mut config = loaded.executor.clone();
    if let Some(path) = &args.profile {
        let profile =
            ablate_spec::load_profile(path).map_err(|d| anyhow::Error::new(SpecErrors(d)))?;
        config = profile.over(&config);
    }
    if let Some(kind) = args.executor {
        config.kind = Some(kind);
    }
    check_partition(&config)?;
    Ok(config)
}

/// `slurm.partition` names partitions of the cluster, when `sinfo` answers here (issue 24: an
/// unknown one was found only by `sbatch`, once per attempt). Where no Slurm answers (planning
/// on a laptop), there is nothing to check against.
fn check_partition(config: &ExecutorConfig) -> anyhow::Result<()> {
    let (Some(ablate_spec::ExecutorKind::Slurm), Some(wanted)) =
        (config.kind, &config.slurm.partition)
    else {
        return Ok(());
    };
    let Ok(known) = ablate_run::slurm::Cluster::partitions() else {
        return Ok(());
    };
    // sbatch takes a list: the task runs in the first of them that can take it.
    let unknown: Vec<&str> = wanted
        .split(',')
        .map(str::trim)
        .filter(|p| !known.iter().any(|k| k == p))
        .collect();
    if unknown.is_empty() || known.is_empty() {
        return Ok(());
    }
    Err(input(
        format!(
            "failed to plan for Slurm: partition {} does not exist on this cluster (`sinfo` lists {})",
            ablate_spec::backticked(&unknown),
            ablate_spec::backticked(&known)
        ),
        Some(format!(
            "set `slurm.partition` (in the pipeline file or the profile) to one of {}",
            ablate_spec::backticked(&known)
        )),
    ))
}

/// The options of a command that shape its plan or where it runs, shell-quoted, for the
/// commands ablate prints to follow or resume it (issue 24: the printed `ablate run` dropped
/// `--matrix`, `--set` and `--profile`, so run literally it resumed another sweep). With
/// `executor`, the options of `run` (`--executor slurm`, `--profile`); without, those `status`
/// takes. `--force` is left out on purpose: the resumed run adopts the forced tasks in flight
/// instead of forcing them again.
pub fn follow_options(
    global: &crate::cli::Global,
    spec: &SpecArgs,
    executor: Option<&ExecutorArgs>,
) -> Vec<String> {
    let q = |s: &str| ablate_run::process::shell_quote(s);
    let mut words = Vec::new();
    if let Some(executor) = executor {
        words.push("--executor slurm".to_owned());
        if let Some(profile) = &executor.profile {
            words.push(format!("--profile {}", q(&profile.display().to_string())));
        }
    }
    for set in &spec.set {
        words.push(format!("--set {}", q(set)));
    }
    for matrix in &spec.matrix {
        words.push(format!("--matrix {}", q(matrix)));
    }
    if let Some(device) = &spec.device {
        words.push(format!("--device {}", q(&device.to_string())));
    }
    if global.cache != Path::new("cache") {
        words.push(format!(
            "--cache {}",
            q(&global.cache.display().to_string())
        ));
    }
    if global.results != Path::new("results") {
        words.push(format!(
            "--results {}",
            q(&global.results.display().to_string())
        ));
    }
    words
}

/// `ablate COMMAND FILE OPTIONS…` as a shell takes it.
pub fn command_line(command: &str, file: &Path, options: &[String]) -> String {
    let mut line = format!(
        "ablate {command} {}",
        ablate_run::process::shell_quote(&file.display().to_string())
    );
    for o in options {
        line.push(' ');
        line.push_str(o);
    }
    line
}

/// Checks every instance of the plan that an op can check only with its inputs and the cache's
/// place (a `cmd` line too long once `{in.STAGE}` is expanded): an input error before anything
/// runs, at the param it is about (`run:`), every stage's at once.
pub fn check_instances(loaded: &Loaded, store: &Store) -> anyhow::Result<()> {
    // Every key has the same length, hence every entry directory.
    let Some((_, first)) = loaded.plan.instances().next() else {
        return Ok(());
    };
    let entry_dir_len = store.entry_dir(&first.key).as_os_str().len();
    let mut problems: Vec<ablate_spec::Diagnostic> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (id, inst) in loaded.plan.instances() {
        let planned = ablate_ops::Planned {
            input_stages: loaded
                .plan
                .inputs(id)
                .map(|(_, i)| i.stage.as_str())
                .collect(),
            entry_dir_len,
        };
        let Err(problem) = loaded
            .registry
            .check_instance(&inst.op, inst.params(), &planned)
        else {
            continue;
        };
        // One message per stage and problem: its instances share the reason.
        let message = format!("stage `{}`: {}", inst.stage, problem.message);
        if !seen.insert(message.clone()) {
            continue;
        }
        let stage = loaded.pipeline.stage(inst.stage.as_str());
        // At the param as written under `params:`, else at the stage.
        let span = stage.map(|s| {
            s.written
                .get(problem.param)
                .map_or(s.span, |written| written.key)
        });
        let mut d = ablate_spec::Diagnostic::error(message);
        if let Some(span) = span {
            d = d.at(span);
        }
        if let Some(hint) = problem.hint {
            d = d.help(hint);
        }
        problems.push(d);
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(anyhow::Error::new(SpecErrors(ablate_spec::Diagnostics {
        source: Some(std::sync::Arc::clone(&loaded.pipeline.source)),
        items: problems,
    })))
}

/// The scripts a `cmd` stage runs by a relative path (`python3 train.py`) that its `deps` do
/// not cover, as warnings: edits to them would not rerun anything, the easiest trap of a
/// sweep over one's own script (#21). One per stage and file.
pub fn undeclared_scripts(loaded: &Loaded) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, inst) in loaded.plan.instances().filter(|(_, i)| i.op == "cmd") {
        let Some(run) = inst.params().get("run").and_then(|v| v.as_str()) else {
            continue;
        };
        let deps = &inst.key_input.deps;
        for word in run.split_whitespace() {
            let word = word.trim_matches(|c| c == '\'' || c == '"');
            let path = word.strip_prefix("./").unwrap_or(word);
            let relative = !path.is_empty()
                && !path.starts_with(['/', '-', '$', '{', '~'])
                && !path.contains(['{', '$', '=', '*']);
            if !relative
                || !loaded.workdir.join(path).is_file()
                || deps.iter().any(|d| d.path.trim_start_matches("./") == path)
                || !seen.insert((inst.stage.to_string(), path.to_owned()))
            {
                continue;
            }
            warnings.push(format!(
                "warning: stage `{}` runs `{path}`, which is not in its `deps`: edits to it will \
                 not rerun anything\n  = hint: add it to the stage's `deps` (`deps: [{path}]`, or a \
                 glob such as `\"*.py\"`)",
                inst.stage
            ));
        }
    }
    warnings
}
