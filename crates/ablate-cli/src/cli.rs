use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

/// Declarative deep-learning ablation pipelines: planned, content-hashed, cached, parallel.
#[derive(Debug, Parser)]
#[command(name = "ablate", version, about, propagate_version = true)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, ClapArgs)]
pub struct Global {
    /// The content-addressed cache.
    #[arg(
        long,
        global = true,
        env = "ABLATE_CACHE",
        default_value = "cache",
        value_name = "DIR"
    )]
    pub cache: PathBuf,
    /// Where Parquet and Markdown results go (`<DIR>/<pipeline>/`).
    #[arg(
        long,
        global = true,
        env = "ABLATE_RESULTS",
        default_value = "results",
        value_name = "DIR"
    )]
    pub results: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: every instance the cache does not hold is computed.
    Run(RunArgs),
    /// Show every instance, its key, and whether it is cached or why it will run.
    Plan(PlanArgs),
    /// List the built-in ops with their parameters, types and defaults.
    Ops(OpsArgs),
    /// Inspect and maintain the cache.
    Cache(CacheArgs),
    /// Print a Parquet result table (dates as dates; `--where`, `--columns`, `--head`).
    Table(TableArgs),
    /// One cache entry in full: params, inputs, deps, device, times, metrics, its files.
    Show(ShowArgs),
    /// Write the pipeline's HTML report, `<results>/<pipeline>/report.html` (also written at
    /// the end of every run): tables with intervals, curves, parameters, claims, instances.
    Report(ReportArgs),
    /// What a pipeline's instances are doing, in a local run or on Slurm: done, running,
    /// queued, failed, not started.
    #[command(
        long_about = "What a pipeline's instances are doing, per stage: done (in the cache), \
diverged (in the cache with `diverged: record`), running, queued, failed, or not started.\n\n\
It works for local runs and Slurm runs alike, from another terminal while a run goes on or \
after it ended: an instance is running while a process (`ablate run` here, or a Slurm task on \
a shared cache) holds its key's lock or writes its entry — listed with ablate's pid and its \
program's (stop that one's process group: `kill -- -PID`) — and failed when its last attempt \
left its files in `<cache>/v1/failed/<key>/` (listed with the path of its log) or its Slurm \
task failed. Queued counts Slurm tasks waiting for a node. Running instances of the same \
pipeline that this plan does not have (a `--set`/`--matrix` variant) are listed apart."
    )]
    Status(StatusArgs),
    /// Worker entry of a Slurm task: computes one instance of a batch file into the cache.
    #[command(hide = true)]
    Exec(ExecArgs),
}

/// Where instances run: `--executor`, `--profile`.
#[derive(Debug, ClapArgs)]
pub struct ExecutorArgs {
    /// `local` (this machine) or `slurm` (job arrays); default: the file's `executor:`, else local.
    #[arg(long, value_name = "KIND")]
    pub executor: Option<ablate_spec::ExecutorKind>,
    /// A YAML file with `executor:` and `slurm:` (a cluster's settings); wins over the pipeline's.
    #[arg(long, env = "ABLATE_PROFILE", value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

/// Overrides shared by `run` and `plan`.
#[derive(Debug, ClapArgs)]
pub struct SpecArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// Override a value: `STAGE.params.KEY=VALUE`, `STAGE.KEY=VALUE`, `vars.NAME=VALUE`. The
    /// parameter or variable must exist; a leading `+` adds a new one on purpose
    /// (`+STAGE.params.KEY=VALUE`, `+vars.NAME=VALUE`).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Sweep a stage's axis or parameter over these values: `STAGE.KEY=a,b,c` replaces the axis
    /// `KEY`, or turns the parameter `KEY` into one. A new axis needs a leading `+`:
    /// `+STAGE.KEY=a,b,c` (so a misspelt key is an error, not a bigger sweep).
    #[arg(long = "matrix", value_name = "STAGE.KEY=V1,V2")]
    pub matrix: Vec<String>,
    /// Recompute a stage's instances (and everything downstream) even if cached.
    #[arg(long = "force", value_name = "STAGE")]
    pub force: Vec<String>,
    /// Run on this device (`cpu`, `cuda`, `cuda:N`) whatever the stages' `device:` says: every
    /// stage for `cpu`, the ops that compute on a device (trainers, evaluations) otherwise.
    /// Recorded in manifests and results, never in keys.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<ablate_spec::Device>,
}

#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Instances run at once (CPU slots); default: the number of cores.
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Print one JSON object per event on stdout instead of progress.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Slurm: submit every instance (with dependencies between arrays) and return at once.
    #[arg(long)]
    pub detach: bool,
    /// Slurm: on Ctrl-C, cancel the tasks in flight without asking (default: ask on a
    /// terminal, else leave them running for the next run to adopt).
    #[arg(long)]
    pub cancel_on_exit: bool,
}

#[derive(Debug, ClapArgs)]
pub struct StatusArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, ClapArgs)]
pub struct ExecArgs {
    /// The batch file the array was submitted with.
    pub batch: PathBuf,
    /// Which task of the batch; default: `SLURM_ARRAY_TASK_ID`.
    #[arg(long)]
    pub index: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Debug, ClapArgs)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Debug, ClapArgs)]
pub struct OpsArgs {
    /// Show only this op.
    pub op: Option<String>,
}

#[derive(Debug, ClapArgs)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the entries: key, op, instance, pipeline, size, start, wall time, params.
    Ls(LsArgs),
    /// Re-hash every entry's files and report the ones that do not match their manifest.
    Verify {
        /// Remove the entries that fail (they are recomputed when next needed).
        #[arg(long)]
        fix: bool,
    },
    /// Remove leftovers and invalid entries; with pipeline files, also every entry they do not use.
    Gc {
        /// Keep only the entries these pipelines' current plans use.
        pipelines: Vec<PathBuf>,
        /// List what would be removed (each path and why) without removing it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, ClapArgs)]
pub struct TableArgs {
    /// A Parquet file (e.g. `results/quickstart/runs.parquet`).
    pub file: PathBuf,
    /// Print it as a Markdown table.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Print one JSON object per row, values as stored (timestamps in microseconds since 1970,
    /// UTC), for programs.
    #[arg(long)]
    pub json: bool,
    /// Keep the rows where COLUMN is VALUE (`metric=test_acc`, `lr=0.3`; `COLUMN!=VALUE` for
    /// the others; `null` for an empty cell). Given several times, all must hold.
    #[arg(long = "where", value_name = "COLUMN=VALUE")]
    pub filters: Vec<String>,
    /// Only these columns, in this order (`--columns label,metric,value`).
    #[arg(long, value_delimiter = ',', value_name = "A,B,…")]
    pub columns: Vec<String>,
    /// Only the first N rows (after `--where`).
    #[arg(long, value_name = "N")]
    pub head: Option<usize>,
}

#[derive(Debug, ClapArgs)]
pub struct LsArgs {
    /// Only entries of this stage (the stage that first computed them).
    #[arg(long, value_name = "STAGE")]
    pub stage: Option<String>,
    /// Only entries of this op (`train.flow`, `cmd`, …).
    #[arg(long, value_name = "OP")]
    pub op: Option<String>,
    /// Only entries first computed by this pipeline (its `name:`).
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Only entries whose param (or matrix value) KEY is VALUE; several are ANDed.
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// One JSON array of the entries, every param included, on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct ReportArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, ClapArgs)]
pub struct ShowArgs {
    /// A key, a unique prefix of one (`3a4b89d2`), or an instance: `STAGE[LABEL]` as `plan`
    /// and `run` print it (`train[lr=0.3,seed=0]`; labels in any order), or `STAGE` for a
    /// stage with one instance. Instances are looked up in `--pipeline`'s plan if given, else
    /// among the cache's entries.
    pub target: String,
    /// The pipeline file whose plan names the instance (its current key, cached or not).
    #[arg(long, short = 'p', value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// With `--pipeline`: an override, as for `run`.
    #[arg(long = "set", value_name = "PATH=VALUE", requires = "pipeline")]
    pub set: Vec<String>,
    /// With `--pipeline`: a matrix override, as for `run`.
    #[arg(long = "matrix", value_name = "STAGE.KEY=V1,V2", requires = "pipeline")]
    pub matrix: Vec<String>,
    /// Print it as one JSON object.
    #[arg(long)]
    pub json: bool,
}
