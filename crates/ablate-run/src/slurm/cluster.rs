//! The Slurm command-line tools, as the executor uses them: `sbatch` to submit one array,
//! `squeue` once per poll for every job of the run, then the completion record (`sacct` where
//! the cluster keeps accounting, the job-completion file otherwise), and `scancel`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::SlurmError;

/// The state of one array task, as Slurm names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    Pending,
    Running,
    Suspended,
    Completing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    Preempted,
    NodeFail,
    BootFail,
    OutOfMemory,
    Deadline,
    Requeued,
    /// A state this version does not know; treated as still in flight.
    Other,
}

impl TaskState {
    pub fn parse(s: &str) -> TaskState {
        // sacct says `CANCELLED by 0`; squeue says `CANCELLED`.
        match s.split_whitespace().next().unwrap_or("") {
            "PENDING" | "CONFIGURING" | "RESV_DEL_HOLD" | "REQUEUE_HOLD" | "REQUEUE_FED" => {
                TaskState::Pending
            }
            "RUNNING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => TaskState::Running,
            "SUSPENDED" | "STOPPED" => TaskState::Suspended,
            "COMPLETING" => TaskState::Completing,
            "COMPLETED" => TaskState::Completed,
            "FAILED" | "SPECIAL_EXIT" => TaskState::Failed,
            "CANCELLED" | "REVOKED" => TaskState::Cancelled,
            "TIMEOUT" => TaskState::Timeout,
            "PREEMPTED" => TaskState::Preempted,
            "NODE_FAIL" => TaskState::NodeFail,
            "BOOT_FAIL" => TaskState::BootFail,
            "OUT_OF_MEMORY" => TaskState::OutOfMemory,
            "DEADLINE" => TaskState::Deadline,
            "REQUEUED" => TaskState::Requeued,
            _ => TaskState::Other,
        }
    }

    /// The task will not run again by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Completed
                | TaskState::Failed
                | TaskState::Cancelled
                | TaskState::Timeout
                | TaskState::Preempted
                | TaskState::NodeFail
                | TaskState::BootFail
                | TaskState::OutOfMemory
                | TaskState::Deadline
        )
    }

    /// Ended by the cluster rather than by the task: worth submitting again as it is.
    pub fn is_requeueable(self) -> bool {
        matches!(
            self,
            TaskState::Preempted | TaskState::NodeFail | TaskState::BootFail | TaskState::Timeout
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Suspended => "suspended",
            TaskState::Completing => "completing",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Timeout => "timed out",
            TaskState::Preempted => "preempted",
            TaskState::NodeFail => "node failure",
            TaskState::BootFail => "boot failure",
            TaskState::OutOfMemory => "out of memory",
            TaskState::Deadline => "deadline",
            TaskState::Requeued => "requeued",
            TaskState::Other => "unknown state",
        }
    }
}

/// What Slurm says of one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub state: TaskState,
    /// squeue's reason (`Resources`, `Dependency`, `NonZeroExitCode` …) or the exit code.
    pub detail: String,
    /// How long a running task has left before its time limit (squeue's `%L`): when to look
    /// again at the latest, so a task killed at its limit is noticed then (issue 24).
    pub time_left: Option<std::time::Duration>,
}

impl Observed {
    /// ` (reason)` for messages, or nothing when Slurm gives none.
    pub fn reason(&self) -> String {
        if self.detail.is_empty() || self.detail == "None" {
            String::new()
        } else {
            format!(" ({})", self.detail)
        }
    }
}

/// Why a pending task will never start under the cluster's configuration, and what to change,
/// from its pending reason (Slurm's "Job Reason Codes"); `None` for a reason that resolves by
/// itself or by someone else's action. Left out on purpose: `Resources`, `Priority` and the
/// `*Grp*`/`*PerUser`/`*PerAccount` limits (they free up as other jobs end), `ReqNodeNotAvail`,
/// `PartitionNodeLimit` (for a one-node task: required nodes are down or drained),
/// `PartitionDown`/`PartitionInactive` and `JobHeld*` (an administrator or the user undoes them).
pub fn never_starts(reason: &str) -> Option<(&'static str, &'static str)> {
    const RESOURCES: &str = "lower `slurm.cpus_per_task`, `slurm.mem` or `slurm.gpus` (or the \
                             stage's `resources`) to what a node of the partition has (`sinfo -N \
                             -o '%P %c %m %G'` lists them), or choose another `slurm.partition`";
    let found = match reason {
        "PartitionConfig" => (
            "it asks for more CPUs, memory or GPUs than a node of its partition has",
            RESOURCES,
        ),
        "BadConstraints" => ("its constraints can never be satisfied", RESOURCES),
        "PartitionTimeLimit" => (
            "its time limit is above its partition's",
            "lower `slurm.time` (or the stage's `timeout`) to the partition's limit (`sinfo -o \
             '%P %l'`), or choose another `slurm.partition`",
        ),
        "InvalidAccount" | "AccountNotAllowed" => (
            "its account is invalid or not allowed in its partition",
            "set `slurm.account` to an account of yours (`sacctmgr show assoc user=$USER`)",
        ),
        "InvalidQOS" | "QOSNotAllowed" => (
            "its QOS is invalid or not allowed in its partition",
            "set `slurm.qos` to a QOS of yours (`sacctmgr show assoc user=$USER`)",
        ),
        "DependencyNeverSatisfied" => (
            "a task it depends on failed",
            "see the failure of the stage it needs",
        ),
        r if (r.starts_with("QOSMax") || r.starts_with("AssocMax"))
            && (r.contains("PerJob") || r.contains("PerNode"))
            || r.starts_with("QOSMin") =>
        {
            (
                "it asks for more (or less) than its QOS or association allows one job",
                "fit the stage's `resources` and `slurm.time` to the limits \
                 (`sacctmgr show qos`), or use another `slurm.qos`",
            )
        }
        _ => return None,
    };
    Some(found)
}

/// What Slurm says of task `J_T`, from squeue's answer, then the completion records. A
/// one-task array cancelled before it started is listed under its bare job id `J` by both
/// (squeue shows `J CANCELLED`, the job-completion file a line without `ArrayTaskId`): that
/// record stands for its tasks, else such a task would be reported lost.
pub fn observed(
    queued: &HashMap<String, Observed>,
    recorded: &HashMap<String, Observed>,
    task: &str,
) -> Option<Observed> {
    let bare = task.split_once('_').map(|(job, _)| job);
    queued
        .get(task)
        .or_else(|| recorded.get(task))
        .or_else(|| {
            let job = bare?;
            queued
                .get(job)
                .or_else(|| recorded.get(job))
                .filter(|o| o.state.is_final())
        })
        .cloned()
}

/// What is left of a running task's time limit, from squeue's limit (`%l`) and time used
/// (`%M`): zero once past it, until Slurm ends the task (its limit is enforced on a timer, then
/// `KillWait`). squeue's own time left (`%L`) is no number past the limit, which left the poll
/// unbounded then. `None` without a limit.
fn time_left(limit: &str, used: &str) -> Option<std::time::Duration> {
    let limit = ablate_spec::slurm_time(limit).ok()??;
    let used = ablate_spec::slurm_time(used).ok()?.unwrap_or_default();
    Some(limit.saturating_sub(used))
}

/// How this cluster keeps records of finished jobs (`scontrol show config`, read once).
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// sacct works (accounting storage is configured).
    pub accounting: bool,
    /// `JobCompType=jobcomp/filetxt`: one line per finished job in this file.
    pub jobcomp: Option<PathBuf>,
}

pub fn run(cmd: &mut Command) -> Result<String, SlurmError> {
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(SlurmError::Refused {
            program: program(cmd),
            command: short(&command_line(cmd)),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SlurmError::NotInstalled {
            program: program(cmd),
        }),
        Err(source) => Err(SlurmError::Spawn {
            program: program(cmd),
            source,
        }),
    }
}

/// `sbatch --parsable …` as a shell would take it, for messages.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| crate::process::shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn short(s: &str) -> String {
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.to_owned()
    }
}

impl Cluster {
    pub fn detect() -> Result<Cluster, SlurmError> {
        let text = run(Command::new("scontrol").args(["show", "config"]))?;
        let mut cluster = Cluster::default();
        let mut comp_type = String::new();
        let mut comp_loc = String::new();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "AccountingStorageType" => {
                    cluster.accounting = !v.is_empty() && v != "accounting_storage/none";
                }
                "JobCompType" => comp_type = v.to_owned(),
                "JobCompLoc" => comp_loc = v.to_owned(),
                _ => {}
            }
        }
        if comp_type == "jobcomp/filetxt" && !comp_loc.is_empty() {
            cluster.jobcomp = Some(PathBuf::from(comp_loc));
        }
        Ok(cluster)
    }

    /// Every task of the jobs called `names` that the controller still holds: one `squeue`.
    pub fn squeue(&self, names: &[String]) -> Result<HashMap<String, Observed>, SlurmError> {
        let mut map = HashMap::new();
        if names.is_empty() {
            return Ok(map);
        }
        let text = run(Command::new("squeue").args([
            "-h",
            "-r",
            "-t",
            "all",
            "--name",
            &names.join(","),
            "-o",
            "%i|%T|%l|%M|%r",
        ]))?;
        for line in text.lines() {
            let mut parts = line.splitn(5, '|');
            let (Some(id), Some(state)) = (parts.next(), parts.next()) else {
                continue;
            };
            let state = TaskState::parse(state.trim());
            let (limit, used) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let time_left = match state {
                TaskState::Running => time_left(limit, used),
                _ => None,
            };
            map.insert(
                id.trim().to_owned(),
                Observed {
                    state,
                    detail: parts.next().unwrap_or("").trim().to_owned(),
                    time_left,
                },
            );
        }
        Ok(map)
    }

    /// The completion records of tasks the controller has forgotten (`J_T` ids).
    pub fn completed(&self, tasks: &[&str]) -> Result<HashMap<String, Observed>, SlurmError> {
        let mut map = HashMap::new();
        if tasks.is_empty() {
            return Ok(map);
        }
        if self.accounting {
            let text = run(Command::new("sacct").args([
                "-n",
                "-P",
                "-X",
                "-j",
                &tasks.join(","),
                "-o",
                "JobID,State,ExitCode",
            ]))?;
            for line in text.lines() {
                let f: Vec<&str> = line.split('|').collect();
                if f.len() >= 3 {
                    map.insert(
                        f[0].to_owned(),
                        Observed {
                            state: TaskState::parse(f[1]),
                            detail: format!("exit code {}", f[2]),
                            time_left: None,
                        },
                    );
                }
            }
        } else if let Some(path) = &self.jobcomp {
            let wanted: std::collections::HashSet<&str> = tasks.iter().copied().collect();
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // A requeued task has several lines: the last one wins.
            for line in text.lines() {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                };
                let Some(state) = field("JobState") else {
                    continue;
                };
                let id = match (field("ArrayJobId"), field("ArrayTaskId"), field("JobId")) {
                    (Some(job), Some(task), _) => format!("{job}_{task}"),
                    // An array cancelled before it started has no task of its own.
                    (_, _, Some(job))
                        if wanted.iter().any(|t| t.split('_').next() == Some(job)) =>
                    {
                        job.to_owned()
                    }
                    _ => continue,
                };
                if wanted.contains(id.as_str()) || !id.contains('_') {
                    let exit = field("ExitCode").unwrap_or("?");
                    map.insert(
                        id,
                        Observed {
                            state: TaskState::parse(state),
                            detail: format!("exit code {exit}"),
                            time_left: None,
                        },
                    );
                }
            }
        }
        Ok(map)
    }

    /// The cluster's partitions (`sinfo`), for checking `slurm.partition` before submitting.
    pub fn partitions() -> Result<Vec<String>, SlurmError> {
        let text = run(Command::new("sinfo").args(["-h", "-o", "%R"]))?;
        let mut names: Vec<String> = text
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Cancels tasks (`J_T`) or whole jobs (`J`), in one call.
    pub fn scancel(&self, ids: &[String]) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        run(Command::new("scancel").args(ids)).map(drop)
    }
}

/// Submits a script; returns the job id (`--parsable` prints `id` or `id;cluster`).
pub fn sbatch(args: &[String], script: &Path) -> Result<u64, SlurmError> {
    let out = run(Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script))?;
    let id = out.trim().split(';').next().unwrap_or("");
    id.parse().map_err(|_| SlurmError::JobId {
        answer: out.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_as_squeue_and_sacct_print_them() {
        assert_eq!(TaskState::parse("PENDING"), TaskState::Pending);
        assert_eq!(TaskState::parse("CANCELLED by 0"), TaskState::Cancelled);
        assert_eq!(TaskState::parse("OUT_OF_MEMORY"), TaskState::OutOfMemory);
        assert!(TaskState::parse("TIMEOUT").is_requeueable());
        assert!(!TaskState::parse("FAILED").is_requeueable());
        assert!(TaskState::parse("FAILED").is_final());
        assert!(!TaskState::parse("COMPLETING").is_final());
        assert!(!TaskState::parse("SOMETHING_NEW").is_final());
    }

    #[test]
    fn a_running_tasks_time_left_is_zero_past_its_limit() {
        let s = std::time::Duration::from_secs;
        assert_eq!(time_left("1:00", "0:20"), Some(s(40)));
        assert_eq!(time_left("1-00:00:00", "2:00:00"), Some(s(22 * 3600)));
        assert_eq!(time_left("1:00", "1:14"), Some(s(0)));
        assert_eq!(time_left("UNLIMITED", "5:00"), None);
    }

    #[test]
    fn the_jobcomp_file_gives_the_last_record_of_each_task() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobcomp.log");
        std::fs::write(
            &path,
            "JobId=4 Name=x JobState=NODE_FAIL ArrayJobId=1 ArrayTaskId=2 ExitCode=0:0 \n\
             JobId=5 Name=x JobState=FAILED ArrayJobId=1 ArrayTaskId=2 ExitCode=3:0 \n\
             JobId=6 Name=x JobState=COMPLETED ArrayJobId=1 ArrayTaskId=3 ExitCode=0:0 \n\
             JobId=7 Name=x JobState=COMPLETED ExitCode=0:0 \n\
             JobId=8 Name=x JobState=CANCELLED ExitCode=0:0 \n",
        )
        .unwrap();
        let cluster = Cluster {
            accounting: false,
            jobcomp: Some(path),
        };
        let got = cluster.completed(&["1_2", "1_3", "9_9", "8_0"]).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got["1_2"].state, TaskState::Failed);
        assert_eq!(got["1_2"].detail, "exit code 3:0");
        assert_eq!(got["1_3"].state, TaskState::Completed);
        // A one-task array cancelled while pending: recorded under its job id alone.
        let none = HashMap::new();
        assert_eq!(
            observed(&none, &got, "8_0").map(|o| o.state),
            Some(TaskState::Cancelled)
        );
        assert_eq!(
            observed(&got, &none, "8_0").map(|o| o.state),
            Some(TaskState::Cancelled),
            "squeue's `8 CANCELLED`"
        );
        assert_eq!(observed(&none, &got, "9_9"), None);
    }
}
