//! Pipeline indexes (`v1/pipelines/<name>.json`): the keys each pipeline's instances had at
//! its last run, which `ablate plan` explains changes against, with the digest of that run.

use super::*;

impl Store {
    /// The keys a pipeline's instances had at its last run, by instance id (`stage[label]`).
    pub fn load_index(&self, pipeline: &str) -> PipelineIndex {
        let path = self.index_path(pipeline);
        fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn has_index(&self, pipeline: &str) -> bool {
        self.index_path(pipeline).exists()
    }

    pub fn save_index(&self, pipeline: &str, index: &PipelineIndex) -> Result<(), CacheError> {
        let path = self.index_path(pipeline);
        let bytes = serde_json::to_vec(index).expect("index serialises");
        write_atomically(&path, &bytes)
    }

    /// Remembers the keys a run of `pipeline` completed (`(instance id, key)`, in plan order)
    /// in its index, and returns whether the index was written. A run whose keys are those
    /// of the run that last wrote the index (its `last_run` digest) neither writes it nor
    /// parses its instances: a no-op rerun of 10,000 instances spent more on the index than on
    /// checking the cache (#21). An index from before that digest gets it once, best effort
    /// (a read-only cache still serves the run); an error is returned only when keys that
    /// changed could not be saved.
    pub fn record_run(
        &self,
        pipeline: &str,
        completed: &[(&str, InstanceKey)],
    ) -> Result<bool, CacheError> {
        let digest = PipelineIndex::digest_of(completed);
        let path = self.index_path(pipeline);
        if last_run_of(&path) == Some(digest) {
            return Ok(false);
        }
        let read = fs::read(&path);
        // An unreadable or damaged index reads as empty, as in `load_index`.
        let mut index: PipelineIndex = read
            .as_deref()
            .ok()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        if index.last_run == Some(digest) {
            return Ok(false);
        }
        let mut changed = read.is_err_and(|e| e.kind() == ErrorKind::NotFound);
        for (id, key) in completed {
            changed |= index.instances.insert((*id).to_owned(), *key) != Some(*key);
        }
        let upgrade = index.last_run.is_none();
        if !changed && !upgrade {
            // Another run's keys are the last ones: this one's were all there already.
            return Ok(false);
        }
        index.last_run = Some(digest);
        match self.save_index(pipeline, &index) {
            Ok(()) => Ok(true),
            Err(_) if !changed => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn index_path(&self, pipeline: &str) -> PathBuf {
        self.v1.join("pipelines").join(format!("{pipeline}.json"))
    }
}

/// The keys of a pipeline's instances at its last run (what `ablate plan` explains against).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PipelineIndex {
    /// [`PipelineIndex::digest_of`] the keys of the run that wrote the file (see
    /// [`Store::record_run`]); absent in an index written before it, or by a binary that did
    /// not know it (which drops it, so it never vouches for keys it did not write). Written
    /// first, so that a run reads it from the file's first bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Digest>,
    pub instances: BTreeMap<String, InstanceKey>,
}

impl PipelineIndex {
    /// A digest of a run's `(instance id, key)` pairs, in their order.
    pub fn digest_of(completed: &[(&str, InstanceKey)]) -> Digest {
        let mut bytes = Vec::with_capacity(completed.len() * 64);
        for (id, key) in completed {
            bytes.extend_from_slice(&(id.len() as u64).to_le_bytes());
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(key.digest().as_bytes());
        }
        Digest::of_bytes(&bytes)
    }
}

/// The `last_run` an index written by [`Store::save_index`] opens with, read from its first
/// bytes alone; `None` when it does not open so (then the whole file is read).
fn last_run_of(path: &Path) -> Option<Digest> {
    const HEAD: &[u8] = b"{\"last_run\":\"";
    let mut buf = [0u8; HEAD.len() + 65];
    let mut file = fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut file, &mut buf).ok()?;
    let hex = buf.strip_prefix(HEAD)?.strip_suffix(b"\"")?;
    std::str::from_utf8(hex).ok()?.parse().ok()
}
