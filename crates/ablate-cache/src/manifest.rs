use serde::{Deserialize, Serialize};

use crate::{Digest, InstanceKey, KeyInput};

/// Version of the manifest format inside a `v1` bucket. Format 2 carries a checksum of its own
/// contents.
pub const MANIFEST_FORMAT: u32 = 2;

/// Manifests written before they carried a checksum: still read, but their metadata (metrics,
/// paths, params) cannot be checked; `ablate cache verify` counts them.
pub const LEGACY_MANIFEST_FORMAT: u32 = 1;

/// `manifest.json` of a cache entry: what went in, what came out, and how it was made.
/// Written last into the temp directory, so an entry without one is torn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub key: InstanceKey,
    /// The exact struct the key was computed from: op, version, params, inputs, deps.
    pub input: KeyInput,
    /// Which pipeline, stage and instance first computed it (informational: two pipelines
    /// share an entry when their instances have the same key).
    pub origin: Origin,
    /// Every file of the entry but the manifest, sorted by path.
    pub outputs: Vec<OutputFile>,
    pub metrics: Vec<Metric>,
    /// Output files a report op asks to be copied to `results/<pipeline>/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    pub started_at_us: i64,
    pub seconds: f64,
    pub device: String,
    pub host: String,
    pub ablate_version: String,
    /// How the computation ended: `done`, or `diverged` (kept as a result by a stage with
    /// `diverged: record`). Absent in the file when done, so entries written before it existed
    /// keep their checksums.
    #[serde(default, skip_serializing_if = "EntryStatus::is_done")]
    pub status: EntryStatus,
    /// SHA-256 of the rest of the manifest (see [`Manifest::compute_checksum`]): a lookup
    /// refuses an entry whose metrics, paths or inputs were edited after it was written (#16).
    /// It guards against accidents and torn edits, not against someone who recomputes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Digest>,
}

/// How an entry's computation ended. A diverged entry is a result ("lr = 1 diverges" is a
/// finding): its metrics are those logged before and besides the non-finite value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum EntryStatus {
    #[default]
    Done,
    /// A metric became non-finite (NaN or ±infinity): which one, at which step (if stepped),
    /// and what it was (`NaN`, `inf`, `-inf`, as text: JSON has no such numbers).
    Diverged {
        metric: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
        value: String,
    },
    /// Stopped early by the stage's `early_stop:` strategy after `step` steps (or epochs: the
    /// op's progress unit), its metric not among the best at that rung. A result, not a
    /// failure: its metrics and curve are those of the first `step` steps, and its
    /// checkpoint stays in the cache, so a run that needs the whole computation resumes it.
    Pruned { step: u64 },
}

impl EntryStatus {
    pub fn is_done(&self) -> bool {
        matches!(self, EntryStatus::Done)
    }

    /// `done`, `diverged` or `pruned`: the word runs.parquet and the reports show.
    pub fn name(&self) -> &'static str {
        match self {
            EntryStatus::Done => "done",
            EntryStatus::Diverged { .. } => "diverged",
            EntryStatus::Pruned { .. } => "pruned",
        }
    }

    /// A divergence of `metric` to `value` (at `step`, if stepped).
    pub fn diverged(metric: impl Into<String>, step: Option<u64>, value: f64) -> Self {
        EntryStatus::Diverged {
            metric: metric.into(),
            step,
            value: format!("{value}"),
        }
    }
}

impl std::fmt::Display for EntryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryStatus::Done => f.write_str("done"),
            EntryStatus::Diverged {
                metric,
                step: Some(step),
                value,
            } => write!(f, "diverged: `{metric}` = {value} at step {step}"),
            EntryStatus::Diverged {
                metric,
                step: None,
                value,
            } => write!(f, "diverged: `{metric}` = {value}"),
            EntryStatus::Pruned { step } => write!(f, "pruned at step {step}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub pipeline: String,
    pub stage: String,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Relative to the entry, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: Digest,
    /// Modification time when the entry was committed: while it and the size still match, a
    /// lookup trusts the file without re-hashing it (a changed file gets a new mtime).
    pub mtime_ns: i128,
}

/// One measured value. `step` is set for per-epoch/per-step logs, absent for final metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

impl Metric {
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            step: None,
        }
    }
    pub fn at_step(name: impl Into<String>, step: u64, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            step: Some(step),
        }
    }
}

impl Manifest {
    /// The checksum of every field but [`Manifest::checksum`]: the SHA-256 of the manifest's
    /// compact JSON without it. Serialisation is deterministic (fields in declaration order,
    /// maps sorted, floats written to round-trip), so a manifest read back, whatever its
    /// formatting, gives the same bytes; no `Value` tree is built (a plan looks up every entry).
    pub fn compute_checksum(&self) -> Digest {
        const FIELD: &str = ",\"checksum\":\"";
        let mut bytes = serde_json::to_vec(self).expect("a manifest serialises");
        if self.checksum.is_some() {
            // The checksum is the last field: `,"checksum":"<64 hex digits>"}`.
            let cut = bytes.len() - (FIELD.len() + 64 + 2);
            debug_assert!(bytes[cut..].starts_with(FIELD.as_bytes()));
            bytes.truncate(cut);
            bytes.push(b'}');
        }
        Digest::of_bytes(&bytes)
    }

    /// Final (unstepped) metrics by name.
    pub fn final_metrics(&self) -> impl Iterator<Item = (&str, f64)> {
        self.metrics
            .iter()
            .filter(|m| m.step.is_none())
            .map(|m| (m.name.as_str(), m.value))
    }
}
