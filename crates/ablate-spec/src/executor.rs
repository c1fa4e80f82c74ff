//! Where a pipeline runs: `executor:` and the `slurm:` submission options, in a pipeline file or
//! in a profile (a YAML file with only those two keys, for the settings of one cluster).
//! Execution detail: never part of a key, so a sweep moves between a laptop and a cluster
//! without recomputing anything.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::node::{self, Kind, Node};
use crate::validate::{type_error, unknown_key};
use crate::{Diagnostic, Diagnostics, SourceFile};

/// The executor a run uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// In this process, on this machine.
    #[default]
    Local,
    /// One Slurm job array per ready group of instances of a stage.
    Slurm,
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        })
    }
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(ExecutorKind::Local),
            "slurm" => Ok(ExecutorKind::Slurm),
            _ => Err(format!(
                "expected `local` or `slurm`, found `{}`",
                crate::node::shorten(s)
            )),
        }
    }
}

/// `sbatch` options. Every field is optional: unset ones are left to the cluster's defaults,
/// except `cpus_per_task`, `mem` and `gpus`, which default to the stage's `resources`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// `--time`, as Slurm reads it (`30`, `1:00:00`, `2-00:00:00`).
    pub time: Option<String>,
    /// `--mem` (`4G`, `500M`); default: the stage's `resources.mem_gb`, when set.
    pub mem: Option<String>,
    /// `--cpus-per-task`; default: the stage's `resources.cpus`, rounded up.
    pub cpus_per_task: Option<u32>,
    /// `--gres` (`gpu:a100:1`); wins over `gpus`.
    pub gres: Option<String>,
    /// `--gpus-per-task`; default: the stage's `resources.gpus`, rounded up.
    pub gpus: Option<u32>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// At most this many tasks of one array run at once (`--array=0-N%M`).
    pub array_throttle: Option<u32>,
    /// Passed to `sbatch` as they are, after the options above.
    pub sbatch_args: Vec<String>,
    /// Shell lines run before the worker in every task (`module load …`, `source venv/bin/activate`).
    pub setup: Option<String>,
    /// Seconds between polls of the controller at first; doubles while nothing changes.
    pub poll_min_s: Option<f64>,
    /// The longest wait between polls.
    pub poll_max_s: Option<f64>,
}

impl SlurmOptions {
    /// `self`'s settings where it has them, `base`'s elsewhere (`sbatch_args` appended).
    pub fn over(self, base: &SlurmOptions) -> SlurmOptions {
        let base = base.clone();
        SlurmOptions {
            partition: self.partition.or(base.partition),
            time: self.time.or(base.time),
            mem: self.mem.or(base.mem),
            cpus_per_task: self.cpus_per_task.or(base.cpus_per_task),
            gres: self.gres.or(base.gres),
            gpus: self.gpus.or(base.gpus),
            account: self.account.or(base.account),
            qos: self.qos.or(base.qos),
            array_throttle: self.array_throttle.or(base.array_throttle),
            sbatch_args: base
                .sbatch_args
                .into_iter()
                .chain(self.sbatch_args)
                .collect(),
            setup: self.setup.or(base.setup),
            poll_min_s: self.poll_min_s.or(base.poll_min_s),
            poll_max_s: self.poll_max_s.or(base.poll_max_s),
        }
    }
}

/// `executor:` and `slurm:` as written in a pipeline or a profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutorConfig {
    pub kind: Option<ExecutorKind>,
    pub slurm: SlurmOptions,
}

impl ExecutorConfig {
    /// `self` (a profile, the command line) over `base` (the pipeline file).
    pub fn over(self, base: &ExecutorConfig) -> ExecutorConfig {
        ExecutorConfig {
            kind: self.kind.or(base.kind),
            slurm: self.slurm.over(&base.slurm),
        }
    }
}

pub(crate) const EXECUTOR_KEYS: &[&str] = &["executor", "slurm"];
const SLURM_KEYS: &[&str] = &[
    "partition",
    "time",
    "mem",
    "cpus_per_task",
    "gres",
    "gpus",
    "account",
    "qos",
    "array_throttle",
    "sbatch_args",
    "setup",
    "poll_min_s",
    "poll_max_s",
];

/// A time as Slurm reads it (`--time`, and squeue's `%L`): `M`, `M:S`, `H:M:S`, `D-H`,
/// `D-H:M`, `D-H:M:S`; `None` for no limit (`UNLIMITED`, `INFINITE`, `NOT_SET`, `-1`).
pub fn slurm_time(s: &str) -> Result<Option<std::time::Duration>, String> {
    let t = s.trim();
    if ["UNLIMITED", "INFINITE", "NOT_SET", "-1"]
        .iter()
        .any(|u| t.eq_ignore_ascii_case(u))
    {
        return Ok(None);
    }
    let number = |p: &str| -> Result<u64, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{p}` is not a whole number"));
        }
        p.parse().map_err(|_| format!("`{p}` is too large"))
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, t),
    };
    let parts = rest
        .split(':')
        .map(number)
        .collect::<Result<Vec<u64>, String>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return Err("too many `:`-separated fields".into()),
    };
    Ok(Some(std::time::Duration::from_secs(seconds)))
}

/// Reads `executor:` and `slurm:` from a map's entries; problems go to `errors`.
pub(crate) fn section(
    executor: Option<&Node>,
    slurm: Option<&Node>,
    errors: &mut Vec<Diagnostic>,
) -> ExecutorConfig {
    let mut config = ExecutorConfig::default();
    if let Some(node) = executor {
        match &node.kind {
            Kind::Str(s) => match s.parse() {
                Ok(kind) => config.kind = Some(kind),
                Err(message) => errors.push(
                    node.origin
                        .error(format!("invalid `executor`: {message}"))
                        .label("unknown executor"),
                ),
            },
            _ => errors.push(type_error(node, "`executor`", "`local` or `slurm`")),
        }
    }
    let Some(node) = slurm else { return config };
    let Some(entries) = node.as_map() else {
        errors.push(type_error(node, "`slurm`", "a map of sbatch options"));
        return config;
    };
    let o = &mut config.slurm;
    for (key, value) in entries {
        let subject = format!("`slurm.{}`", key.name);
        let text = |errors: &mut Vec<Diagnostic>| match &value.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            _ => {
                errors.push(type_error(value, &subject, "a string"));
                None
            }
        };
        let count = |errors: &mut Vec<Diagnostic>, min: i64| match value.kind {
            Kind::Int(i) if i >= min && i <= i64::from(u32::MAX) => u32::try_from(i).ok(),
            _ => {
                errors.push(type_error(value, &subject, &format!("an integer ≥ {min}")));
                None
            }
        };
        let seconds = |errors: &mut Vec<Diagnostic>| match value.kind {
            #[allow(clippy::cast_precision_loss)]
            Kind::Int(i) if i > 0 => Some(i as f64),
            Kind::Float(f) if f.is_finite() && f > 0.0 => Some(f),
            _ => {
                errors.push(type_error(value, &subject, "a number of seconds > 0"));
                None
            }
        };
        match key.name.as_str() {
            "partition" => o.partition = text(errors),
            "time" => {
                o.time = text(errors);
                if let Some(t) = &o.time
                    && let Err(why) = slurm_time(t)
                {
                    errors.push(
                        value
                            .origin
                            .error(format!("invalid `slurm.time` `{t}`: {why}"))
                            .label("not a Slurm time")
                            .help(
                                "Slurm reads `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M` or `D-H:M:S` \
                                 (`30` is 30 minutes, `2:00:00` two hours, `1-12` a day and a \
                                 half), or `UNLIMITED`",
                            ),
                    );
                }
            }
            "mem" => o.mem = text(errors),
            "gres" => o.gres = text(errors),
            "account" => o.account = text(errors),
            "qos" => o.qos = text(errors),
            "setup" => o.setup = text(errors),
            "cpus_per_task" => o.cpus_per_task = count(errors, 1),
            "gpus" => o.gpus = count(errors, 0),
            "array_throttle" => o.array_throttle = count(errors, 1),
            "poll_min_s" => o.poll_min_s = seconds(errors),
            "poll_max_s" => o.poll_max_s = seconds(errors),
            "sbatch_args" => match &value.kind {
                Kind::Seq(items) => {
                    for item in items {
                        match &item.kind {
                            Kind::Str(s) => o.sbatch_args.push(s.clone()),
                            _ => errors.push(type_error(
                                item,
                                "an item of `slurm.sbatch_args`",
                                "a string",
                            )),
                        }
                    }
                }
                _ => errors.push(type_error(value, &subject, "a list of strings")),
            },
            other => errors.push(unknown_key(
                key,
                "`slurm`",
                SLURM_KEYS,
                crate::suggest::did_you_mean(other, SLURM_KEYS.iter().copied()),
            )),
        }
    }
    if let (Some(lo), Some(hi)) = (o.poll_min_s, o.poll_max_s)
        && lo > hi
    {
        errors.push(
            node.origin
                .error(format!(
                    "`slurm.poll_min_s` ({}) is above `slurm.poll_max_s` ({})",
                    node::format_float(lo),
                    node::format_float(hi)
                ))
                .label("in this map"),
        );
    }
    config
}

/// Reads a profile: a YAML file with `executor:` and `slurm:` (both optional), e.g. one per
/// cluster, kept out of the pipeline files. Every problem is reported at its place.
pub fn load_profile(path: &Path) -> Result<ExecutorConfig, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|err| Diagnostics {
        source: None,
        items: vec![Diagnostic::error(format!(
            "failed to read the profile `{}`: {err}",
            path.display()
        ))],
    })?;
    let source = Arc::new(SourceFile::new(path, text));
    let mut errors = Vec::new();
    let config = match node::parse(&source.text) {
        Err(syntax) => {
            errors.extend(syntax);
            ExecutorConfig::default()
        }
        Ok(root) => match &root.kind {
            Kind::Null => ExecutorConfig::default(),
            Kind::Map(entries) => {
                for (key, _) in entries {
                    if !EXECUTOR_KEYS.contains(&key.name.as_str()) {
                        let suggestion =
                            crate::suggest::did_you_mean(&key.name, EXECUTOR_KEYS.iter().copied());
                        errors.push(unknown_key(key, "the profile", EXECUTOR_KEYS, suggestion));
                    }
                }
                section(root.get("executor"), root.get("slurm"), &mut errors)
            }
            _ => {
                errors.push(type_error(
                    &root,
                    "a profile",
                    "a map with `executor` and `slurm`",
                ));
                ExecutorConfig::default()
            }
        },
    };
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(Diagnostics {
            source: Some(source),
            items: errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (ExecutorConfig, Vec<Diagnostic>) {
        let root = node::parse(text).unwrap();
        let mut errors = Vec::new();
        let c = section(root.get("executor"), root.get("slurm"), &mut errors);
        (c, errors)
    }

    #[test]
    fn reads_every_option() {
        let (c, errors) = parse(
            "executor: slurm\nslurm:\n  partition: gpu\n  time: '1:00:00'\n  mem: 4G\n  cpus_per_task: 2\n  gres: gpu:1\n  gpus: 1\n  account: lab\n  qos: high\n  array_throttle: 8\n  sbatch_args: [--exclusive]\n  setup: module load cuda\n  poll_min_s: 0.5\n  poll_max_s: 30\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.kind, Some(ExecutorKind::Slurm));
        let o = c.slurm;
        assert_eq!(o.partition.as_deref(), Some("gpu"));
        assert_eq!(o.time.as_deref(), Some("1:00:00"));
        assert_eq!(o.cpus_per_task, Some(2));
        assert_eq!(o.array_throttle, Some(8));
        assert_eq!(o.sbatch_args, vec!["--exclusive".to_owned()]);
        assert_eq!(o.setup.as_deref(), Some("module load cuda"));
        assert_eq!(o.poll_max_s, Some(30.0));
    }

    #[test]
    fn reports_every_bad_option_at_its_place() {
        let (_, errors) = parse(
            "executor: cluster\nslurm:\n  partiton: gpu\n  array_throttle: 0\n  sbatch_args: --exclusive\n",
        );
        let messages: Vec<String> = errors.iter().map(|d| d.message.clone()).collect();
        assert_eq!(errors.len(), 4, "{messages:?}");
        assert!(messages[0].contains("invalid `executor`"), "{messages:?}");
        assert!(
            messages[1].contains("unknown key `partiton`"),
            "{messages:?}"
        );
        assert!(errors[1].help.as_deref().unwrap().contains("`partition`"));
        assert!(messages[2].contains("`slurm.array_throttle` expects an integer ≥ 1"));
        assert!(messages[3].contains("a list of strings"), "{messages:?}");
        assert_eq!(errors[2].span.unwrap().line, 4);
    }

    #[test]
    fn slurm_time_reads_every_form_slurm_accepts() {
        let secs = |t: &str| slurm_time(t).unwrap().map(|d| d.as_secs());
        assert_eq!(secs("30"), Some(1800));
        assert_eq!(secs("5:30"), Some(330));
        assert_eq!(secs("2:00:00"), Some(7200));
        assert_eq!(secs("1-12"), Some(129_600));
        assert_eq!(secs("1-0:30"), Some(88_200));
        assert_eq!(secs("364-23:59:59"), Some(364 * 86400 + 86399));
        assert_eq!(secs("UNLIMITED"), None);
        for bad in [
            "1:2:3:4",
            "1h",
            "",
            "1-",
            "-5:00",
            "1-2:3:4:5",
            "1.5",
            "1--2",
        ] {
            assert!(slurm_time(bad).is_err(), "`{bad}` should be refused");
        }
    }

    /// `plan` accepted `time: 1h`, and the `sbatch` error came only at submission (issue 24).
    #[test]
    fn a_malformed_slurm_time_is_an_error_at_its_place() {
        let (_, errors) = parse("slurm:\n  partition: debug\n  time: 1h\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.contains("invalid `slurm.time` `1h`"),
            "{errors:?}"
        );
        let span = errors[0].span.unwrap();
        assert_eq!((span.line, span.col), (3, 9));
        assert!(errors[0].help.as_deref().unwrap().contains("`D-H:M:S`"));
    }

    #[test]
    fn a_profile_wins_over_the_file_and_adds_its_sbatch_args() {
        let file = ExecutorConfig {
            kind: Some(ExecutorKind::Local),
            slurm: SlurmOptions {
                partition: Some("debug".into()),
                time: Some("10".into()),
                sbatch_args: vec!["--a".into()],
                ..SlurmOptions::default()
            },
        };
        let profile = ExecutorConfig {
            kind: Some(ExecutorKind::Slurm),
            slurm: SlurmOptions {
                partition: Some("gpu".into()),
                sbatch_args: vec!["--b".into()],
                ..SlurmOptions::default()
            },
        };
        let c = profile.over(&file);
        assert_eq!(c.kind, Some(ExecutorKind::Slurm));
        assert_eq!(c.slurm.partition.as_deref(), Some("gpu"));
        assert_eq!(c.slurm.time.as_deref(), Some("10"));
        assert_eq!(
            c.slurm.sbatch_args,
            vec!["--a".to_owned(), "--b".to_owned()]
        );
    }
}
