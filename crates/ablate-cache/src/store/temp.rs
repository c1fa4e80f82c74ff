//! An entry being written ([`TempEntry`]): its temp directory, and the commit that hashes
//! what the producer wrote, writes the manifest and renames the directory into place — or the
//! failure that keeps its files for inspection. Nothing half-written ever appears under a key.

use super::*;

/// An entry being written. Dropped without [`TempEntry::commit`] or [`TempEntry::fail`], its
/// directory is deleted: nothing half-written ever appears under the key.
#[derive(Debug)]
pub struct TempEntry<'a> {
    pub(super) store: &'a Store,
    pub(super) key: InstanceKey,
    pub(super) dir: Option<PathBuf>,
}

impl TempEntry<'_> {
    pub fn dir(&self) -> &Path {
        self.dir.as_deref().expect("temp entry is live")
    }

    /// Hashes every file the producer wrote, completes `manifest` with them, writes it, and
    /// renames the directory into place. An existing invalid entry is replaced; an existing
    /// valid one (another writer won) is kept and this one discarded, and the kept entry's
    /// manifest is returned.
    pub fn commit(self, manifest: Manifest) -> Result<Manifest, CacheError> {
        self.commit_as(manifest, false)
    }

    /// [`TempEntry::commit`], replacing an existing entry even when it is valid: a forced
    /// recomputation (`--force`) stands in for what the cache held.
    pub fn commit_replacing(self, manifest: Manifest) -> Result<Manifest, CacheError> {
        self.commit_as(manifest, true)
    }

    fn commit_as(mut self, mut manifest: Manifest, replace: bool) -> Result<Manifest, CacheError> {
        for m in &manifest.metrics {
            if !m.value.is_finite() {
                return Err(CacheError::NonFiniteMetric {
                    name: m.name.clone(),
                    value: m.value,
                });
            }
        }
        let dir = self.dir.take().expect("temp entry is live");
        let result = (|| {
            manifest.format = MANIFEST_FORMAT;
            manifest.key = self.key;
            manifest.outputs = hash_tree(&dir)?;
            if let Some(p) = unpublishable(&manifest) {
                return Err(CacheError::NotAnOutput { path: p.clone() });
            }
            manifest.checksum = None;
            manifest.checksum = Some(manifest.compute_checksum());
            let path = dir.join(MANIFEST);
            let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
            fs::write(&path, bytes).map_err(CacheError::io(&path))?;
            let dest = self.store.entry_dir(&self.key);
            let bucket = dest.parent().expect("entry has a bucket");
            fs::create_dir_all(bucket).map_err(CacheError::io(bucket))?;
            match fs::rename(&dir, &dest) {
                Ok(()) => Ok(None),
                Err(_) if dest.exists() => match self.store.lookup(&self.key) {
                    Lookup::Hit(kept) if !replace => {
                        fs::remove_dir_all(&dir).map_err(CacheError::io(&dir))?;
                        Ok(Some(kept))
                    }
                    _ => {
                        remove_dir_atomically(self.store, &dest)?;
                        fs::rename(&dir, &dest).map_err(CacheError::io(&dest))?;
                        Ok(None)
                    }
                },
                Err(e) => Err(CacheError::Io {
                    path: dest,
                    source: e,
                }),
            }
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        result.map(|kept| kept.map_or(manifest, |m| *m))
    }

    /// Keeps the attempt's files (logs) under `v1/failed/<key>/` for inspection, replacing an
    /// earlier failed attempt, and returns that path.
    pub fn fail(mut self) -> Result<PathBuf, CacheError> {
        let dir = self.dir.take().expect("temp entry is live");
        let dest = self.store.failed_dir(&self.key);
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(CacheError::io(&dest))?;
        }
        fs::rename(&dir, &dest).map_err(CacheError::io(&dest))?;
        Ok(dest)
    }
}

impl Drop for TempEntry<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}
