//! What the executor leaves in the shared cache: a record per instance submitted
//! (`<cache>/slurm/tasks/<key>.json`, naming its task — the members of a fused group name the
//! same one — read back to adopt tasks still in flight and by `ablate status`, with what Slurm
//! says of them), and the batch file an array's tasks read their jobs from.

use super::*;

/// An instance's submitted task, as remembered in the shared cache until the instance is
/// resolved. A task that computes a fused group has one record per member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    /// `ARRAYJOB_INDEX`, as squeue prints it.
    pub task: String,
    pub job_name: String,
    pub key: InstanceKey,
    /// The task's stderr; its stdout is beside it, with `.out`.
    pub err: PathBuf,
    pub submitted_at_us: i64,
    /// The options of the `ablate run` that submitted it ([`SlurmSettings::resume`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<String>,
    /// Why the orchestrator gave the instance up while Slurm still held the task (it could
    /// never start): what `ablate status` shows, since Slurm forgets a cancelled task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The batch file an array's tasks read: task `i` computes `tasks[i]`, one instance or the
/// members of a fused group (issue 23).
#[derive(Serialize, Deserialize)]
pub struct Batch {
    pub tasks: Vec<Vec<BatchJob>>,
}

#[derive(Serialize, Deserialize)]
pub struct BatchJob {
    pub job: Job,
    pub force: bool,
}

/// The Slurm part of the cache: `<cache>/slurm/`.
pub fn slurm_dir(cache: &Path) -> PathBuf {
    cache.join("slurm")
}

fn record_path(cache: &Path, key: &InstanceKey) -> PathBuf {
    slurm_dir(cache)
        .join("tasks")
        .join(format!("{}.json", key.to_hex()))
}

/// The record of the task submitted for `key`, if one is unresolved.
pub fn read_record(cache: &Path, key: &InstanceKey) -> Option<TaskRecord> {
    let text = std::fs::read_to_string(record_path(cache, key)).ok()?;
    serde_json::from_str(&text).ok()
}

pub(super) fn write_record(cache: &Path, r: &TaskRecord) -> Result<(), SlurmError> {
    let path = record_path(cache, &r.key);
    let dir = path.parent().expect("records live in a directory");
    std::fs::create_dir_all(dir).map_err(|source| SlurmError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(r).expect("records serialise");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| SlurmError::Write { path, source })
}

/// Forgets the record of `key`'s task (its result is in the cache, or it was cancelled).
pub fn remove_record(cache: &Path, key: &InstanceKey) {
    let _ = std::fs::remove_file(record_path(cache, key));
}

/// The state of one instance as `ablate status` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskStatus {
    pub record: TaskRecord,
    /// `None`: Slurm has no record of it.
    pub observed: Option<Observed>,
}

/// What Slurm says of these records, in two queries (squeue, then the completion records).
pub fn observe(cluster: &Cluster, records: Vec<TaskRecord>) -> Result<Vec<TaskStatus>, SlurmError> {
    let names = unique(records.iter().map(|r| r.job_name.clone()));
    let queued = cluster.squeue(&names)?;
    let forgotten: Vec<&str> = records
        .iter()
        .filter(|r| !queued.contains_key(&r.task))
        .map(|r| r.task.as_str())
        .collect();
    let recorded = cluster.completed(&forgotten)?;
    Ok(records
        .into_iter()
        .map(|r| {
            let observed = observed(&queued, &recorded, &r.task);
            TaskStatus {
                record: r,
                observed,
            }
        })
        .collect())
}

/// The jobs of task `SLURM_ARRAY_TASK_ID` of a batch file (one, or a fused group's members):
/// the worker side of `ablate exec`.
pub fn read_batch_task(batch: &Path, index: usize) -> Result<Vec<BatchJob>, SlurmError> {
    let bytes = std::fs::read(batch).map_err(|source| SlurmError::ReadBatch {
        path: batch.to_owned(),
        source,
    })?;
    let mut b: Batch = serde_json::from_slice(&bytes).map_err(|source| SlurmError::BadBatch {
        path: batch.to_owned(),
        source,
    })?;
    let n = b.tasks.len();
    if index >= n || b.tasks[index].is_empty() {
        return Err(SlurmError::NoSuchTask {
            path: batch.to_owned(),
            index,
            tasks: n,
        });
    }
    Ok(b.tasks.swap_remove(index))
}

/// Where the seconds that earlier attempts of `key`'s task spent are noted (a task requeued
/// after its time limit or a preemption, or submitted again after a failure), so that the
/// attempt that commits counts them in its manifest's `seconds` (`wall_time_s`; issue 24: it
/// counted only the last attempt). An attempt killed outright (SIGKILL) cannot note its time.
fn spent_path(cache: &Path, key: &InstanceKey) -> PathBuf {
    slurm_dir(cache).join("spent").join(key.to_hex())
}

/// The time earlier attempts of `key` spent (zero when none is noted).
pub fn spent(cache: &Path, key: &InstanceKey) -> Duration {
    std::fs::read_to_string(spent_path(cache, key))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::ZERO, Duration::from_secs_f64)
}

/// Notes that an attempt of `key` that did not commit spent `more`.
pub fn add_spent(cache: &Path, key: &InstanceKey, more: Duration) -> Result<(), SlurmError> {
    let path = spent_path(cache, key);
    let dir = path.parent().expect("in a directory");
    std::fs::create_dir_all(dir).map_err(|source| SlurmError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let total = spent(cache, key) + more;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", total.as_secs_f64()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| SlurmError::Write { path, source })
}

/// Forgets what earlier attempts of `key` spent: its entry is committed.
pub fn clear_spent(cache: &Path, key: &InstanceKey) {
    let _ = std::fs::remove_file(spent_path(cache, key));
}

/// Elapsed time since a record was submitted, for status lines.
pub fn age(r: &TaskRecord) -> Duration {
    let now = ablate_cache::now_us();
    Duration::from_micros(u64::try_from(now - r.submitted_at_us).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_of_attempts_that_did_not_commit_adds_up_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let key: InstanceKey = "a".repeat(64).parse().unwrap();
        assert_eq!(spent(dir.path(), &key), Duration::ZERO);
        add_spent(dir.path(), &key, Duration::from_secs(3)).unwrap();
        add_spent(dir.path(), &key, Duration::from_millis(1500)).unwrap();
        assert_eq!(spent(dir.path(), &key), Duration::from_millis(4500));
        clear_spent(dir.path(), &key);
        assert_eq!(spent(dir.path(), &key), Duration::ZERO);
    }
}
