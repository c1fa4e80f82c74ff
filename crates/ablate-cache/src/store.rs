//! The on-disk store: `<root>/CACHEDIR.TAG` and `<root>/v1/`:
//!
//! ```text
//! v1/ab/<key>/manifest.json + outputs   complete entries (bucketed by the key's first byte)
//! v1/tmp/<key>.<pid>.<n>/               entries being written; renamed into place when done
//! v1/failed/<key>/                      the last failed attempt's files (logs), for inspection
//! v1/checkpoints/<key>/                 what an unfinished computation resumes from
//! v1/locks/<key>.lock                   per-key advisory locks (two runs never compute one key)
//! v1/pipelines/<name>.json              the keys each pipeline's instances had at its last run
//! v1/verified/<bucket>                  what lookups found valid, to skip re-reading (verified.rs)
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::verified::{FileId, Record};
use crate::{
    CacheError, Digest, InstanceKey, LEGACY_MANIFEST_FORMAT, MANIFEST_FORMAT, Manifest, OutputFile,
};

pub(crate) const MANIFEST: &str = "manifest.json";
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by ablate.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A content-addressed store rooted at a directory (`cache/` by default).
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    v1: PathBuf,
}

/// What a lookup found for a key: a hit carries the manifest ([`Store::lookup`]) or a
/// [`CachedEntry`](crate::CachedEntry) ([`Store::lookup_all`]).
#[derive(Debug)]
pub enum Lookup<H = Box<Manifest>> {
    Hit(H),
    Miss,
    /// An entry exists but cannot be trusted (torn, tampered, unreadable): it will be
    /// recomputed and replaced. The string says why.
    Invalid(String),
}

/// How hard a lookup checks an entry's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Size and mtime of every output; a file whose mtime moved is re-hashed.
    Fast,
    /// Re-hash every output.
    Full,
}

impl Store {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Store, CacheError> {
        let v1 = root.join("v1");
        for dir in ["tmp", "failed", "locks", "pipelines"] {
            let d = v1.join(dir);
            fs::create_dir_all(&d).map_err(CacheError::io(&d))?;
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(&tag, CACHEDIR_TAG).map_err(CacheError::io(&tag))?;
        }
        Ok(Store {
            root: root.to_owned(),
            v1,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn v1(&self) -> &Path {
        &self.v1
    }

    pub fn entry_dir(&self, key: &InstanceKey) -> PathBuf {
        let hex = key.to_hex();
        self.v1.join(&hex[..2]).join(hex)
    }

    pub fn failed_dir(&self, key: &InstanceKey) -> PathBuf {
        self.v1.join("failed").join(key.to_hex())
    }

    /// Where an instance's program keeps what a later attempt of the same key resumes from
    /// (`ABLATE_CHECKPOINT`): it survives failed, killed and preempted attempts, and goes once
    /// the entry is committed. Not created here.
    pub fn checkpoint_dir(&self, key: &InstanceKey) -> PathBuf {
        self.checkpoints_root().join(key.to_hex())
    }

    /// The directory of every key's [`Store::checkpoint_dir`].
    pub fn checkpoints_root(&self) -> PathBuf {
        self.v1.join("checkpoints")
    }

    pub(crate) fn lock_path(&self, key: &InstanceKey) -> PathBuf {
        self.v1.join("locks").join(format!("{}.lock", key.to_hex()))
    }

    /// Looks an entry up, verifying it before trusting it.
    pub fn lookup(&self, key: &InstanceKey) -> Lookup {
        self.verify(key, VerifyMode::Fast)
    }

    pub fn verify(&self, key: &InstanceKey, mode: VerifyMode) -> Lookup {
        self.verify_entry(key, mode).0
    }

    /// [`Store::verify`], and for a valid checksummed entry the record that lets a later
    /// [`Store::lookup_all`] skip its manifest while its files stay as they are now (an output
    /// whose mtime moved was re-hashed here, so its new mtime is what the record keeps).
    pub(crate) fn verify_entry(
        &self,
        key: &InstanceKey,
        mode: VerifyMode,
    ) -> (Lookup, Option<Record>) {
        let dir = self.entry_dir(key);
        let path = dir.join(MANIFEST);
        let (bytes, id) = match read_with_id(&path) {
            Ok(read) => read,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let lookup = if dir.exists() {
                    Lookup::Invalid("the entry has no manifest (torn write)".into())
                } else {
                    Lookup::Miss
                };
                return (lookup, None);
            }
            Err(e) => {
                return (
                    Lookup::Invalid(format!("cannot read its manifest: {e}")),
                    None,
                );
            }
        };
        let invalid = |why: String| (Lookup::Invalid(why), None);
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => return invalid(format!("its manifest does not parse: {e}")),
        };
        match (manifest.format, manifest.checksum) {
            (MANIFEST_FORMAT, Some(sum)) if sum == manifest.compute_checksum() => {}
            (MANIFEST_FORMAT, Some(_)) => {
                return invalid(
                    "its manifest was changed after it was written (its checksum does not match)"
                        .into(),
                );
            }
            (MANIFEST_FORMAT, None) => {
                return invalid("its manifest has no checksum".into());
            }
            (LEGACY_MANIFEST_FORMAT, _) => {}
            (format, _) => {
                return invalid(format!("manifest format {format} is not {MANIFEST_FORMAT}"));
            }
        }
        // Re-deriving the key from the recorded inputs costs a hash per entry: full checks only.
        if manifest.key != *key || (mode == VerifyMode::Full && manifest.input.key() != *key) {
            return invalid("its manifest belongs to another key".into());
        }
        if let Err(why) = check_paths(&manifest) {
            return invalid(why);
        }
        let mut mtimes = Vec::with_capacity(manifest.outputs.len());
        for out in &manifest.outputs {
            match check_output(&dir, out, mode) {
                Ok(mtime) => mtimes.push(mtime),
                Err(why) => return invalid(why),
            }
        }
        let record = Record::of(&manifest, id, &mtimes);
        (Lookup::Hit(Box::new(manifest)), record)
    }

    /// The path of the output file `name` of entry `key`, once its content has been hashed and
    /// matched against the manifest: what an op reads of its inputs is verified in full, while a
    /// lookup checks only sizes and modification times. `Ok(None)`: the entry has no such file.
    pub fn verified_output(
        &self,
        key: &InstanceKey,
        name: &str,
    ) -> Result<Option<PathBuf>, String> {
        let manifest = match self.lookup(key) {
            Lookup::Hit(m) => m,
            Lookup::Miss => return Err("the entry is missing".into()),
            Lookup::Invalid(why) => return Err(why),
        };
        let Some(out) = manifest.outputs.iter().find(|o| o.path == name) else {
            return Ok(None);
        };
        let dir = self.entry_dir(key);
        check_output(&dir, out, VerifyMode::Full)?;
        Ok(Some(dir.join(name)))
    }

    /// Reads a manifest without verifying the entry's files (for explanations and listings).
    pub fn read_manifest(&self, key: &InstanceKey) -> Option<Manifest> {
        let bytes = fs::read(self.entry_dir(key).join(MANIFEST)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Starts writing an entry: a fresh temp directory the producer fills with outputs.
    pub fn begin(&self, key: &InstanceKey) -> Result<TempEntry<'_>, CacheError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.v1.join("tmp").join(format!(
            "{}.{}.{n}.{}",
            key.to_hex(),
            std::process::id(),
            host()
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(CacheError::io(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(CacheError::io(&dir))?;
        Ok(TempEntry {
            store: self,
            key: *key,
            dir: Some(dir),
        })
    }

    /// Removes an entry (used for invalid entries and by gc).
    pub fn remove(&self, key: &InstanceKey) -> Result<(), CacheError> {
        let dir = self.entry_dir(key);
        remove_dir_atomically(self, &dir)
    }

    /// Every entry directory in the store, complete or not.
    pub fn keys(&self) -> Result<Vec<InstanceKey>, CacheError> {
        let mut keys = Vec::new();
        let rd = fs::read_dir(&self.v1).map_err(CacheError::io(&self.v1))?;
        for bucket in rd.flatten() {
            let name = bucket.file_name();
            let name = name.to_string_lossy();
            // `file_type` does not follow links: a bucket linked out of the cache is not
            // walked (nor its entries deleted by gc).
            if name.len() != 2 || !bucket.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(entries) = fs::read_dir(bucket.path()) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(k) = e.file_name().to_string_lossy().parse::<InstanceKey>() {
                    keys.push(k);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Summaries of every entry, for `ablate cache ls`.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, CacheError> {
        Ok(self
            .keys()?
            .into_iter()
            .map(|key| {
                let manifest = self.read_manifest(&key);
                let size = manifest
                    .as_ref()
                    .map_or(0, |m| m.outputs.iter().map(|o| o.size).sum());
                EntryInfo {
                    key,
                    manifest,
                    size,
                }
            })
            .collect())
    }

    /// Removes leftovers (temp dirs of dead writers, failed attempts, unheld locks), invalid
    /// entries, and — when `keep` is given — every entry not in it.
    pub fn gc(
        &self,
        keep: Option<&HashSet<InstanceKey>>,
        dry_run: bool,
    ) -> Result<GcReport, CacheError> {
        let mut report = GcReport::default();
        for key in self.keys()? {
            let why = match keep {
                Some(keep) if !keep.contains(&key) => {
                    Some("an entry the named pipelines do not use".to_owned())
                }
                _ => match self.lookup(&key) {
                    Lookup::Hit(_) => None,
                    Lookup::Invalid(why) => Some(format!("an invalid entry: {why}")),
                    Lookup::Miss => Some("an incomplete entry (no manifest)".to_owned()),
                },
            };
            if let Some(why) = why {
                let dir = self.entry_dir(&key);
                report.note(&dir, dir_size(&dir), why);
                report.entries += 1;
                if !dry_run {
                    // Never delete what another process is writing or reading under lock.
                    if let Some(_lock) = self.try_lock(&key)? {
                        self.remove(&key)?;
                    }
                }
            }
        }
        self.remove_leftovers(&["tmp", "failed", "pipelines"], dry_run, &mut report)?;
        // Caches from before the index of verified entries have no `verified/`.
        if fs::symlink_metadata(self.v1.join("verified")).is_ok() {
            self.remove_leftovers(&["verified"], dry_run, &mut report)?;
        }
        // A checkpoint is worth keeping while its computation is unfinished, and (with `keep`)
        // still wanted.
        let checkpoints = self.v1.join("checkpoints");
        if fs::symlink_metadata(&checkpoints).is_ok() {
            match real_dir(&checkpoints) {
                Err(why) => report.refused.push(why),
                Ok(()) => {
                    for e in fs::read_dir(&checkpoints)
                        .map_err(CacheError::io(&checkpoints))?
                        .flatten()
                    {
                        let key = e.file_name().to_string_lossy().parse::<InstanceKey>().ok();
                        let why = match key {
                            None => "not a checkpoint (its name is no key)",
                            Some(k) if keep.is_some_and(|keep| !keep.contains(&k)) => {
                                "the checkpoint of an instance the named pipelines do not use"
                            }
                            Some(k) if matches!(self.lookup(&k), Lookup::Hit(_)) => {
                                "the checkpoint of an instance now in the cache"
                            }
                            Some(_) => continue,
                        };
                        // Never from under an attempt of that key, which holds its lock.
                        let _lock = match key {
                            Some(k) => match self.try_lock(&k)? {
                                Some(lock) => Some(lock),
                                None => continue,
                            },
                            None => None,
                        };
                        let path = e.path();
                        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                        report.note(&path, dir_size(&path), why.to_owned());
                        report.leftovers += 1;
                        if !dry_run {
                            remove_path(&path, is_dir)?;
                        }
                    }
                }
            }
        }
        let locks = self.v1.join("locks");
        if let Err(why) = real_dir(&locks) {
            report.refused.push(why);
        } else {
            for e in fs::read_dir(&locks)
                .map_err(CacheError::io(&locks))?
                .flatten()
            {
                let Some(key) = e
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".lock")
                    .and_then(|s| s.parse().ok())
                else {
                    continue;
                };
                if let Some(lock) = self.try_lock(&key)? {
                    if !dry_run {
                        let _ = fs::remove_file(e.path());
                    }
                    drop(lock);
                }
            }
        }
        Ok(report)
    }

    /// The processes writing entries now, from their temp directories: what `ablate status`
    /// shows as running, for a local run as for a Slurm task on a shared cache. A writer on
    /// another host cannot be checked from here and counts as alive.
    pub fn writers(&self) -> Vec<Writer> {
        let Ok(rd) = fs::read_dir(self.v1.join("tmp")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.');
            let (Some(key), Some(pid)) = (
                parts.next().and_then(|k| k.parse::<InstanceKey>().ok()),
                parts.next().and_then(|p| p.parse::<u32>().ok()),
            ) else {
                continue;
            };
            if !writer_alive(&name) {
                continue;
            }
            let host = parts.nth(1).unwrap_or_else(|| host()).to_owned();
            let since = e
                .metadata()
                .ok()
                .and_then(|m| m.created().or_else(|_| m.modified()).ok());
            out.push(Writer {
                key,
                pid,
                host,
                since,
            });
        }
        out
    }

    /// Removes what killed writers left in the temp directory (their pid is gone on this
    /// host): what `ablate run` does as it starts, so a campaign of killed runs does not fill
    /// the disk. Best effort: a read-only cache has nothing to remove.
    pub fn remove_dead_temps(&self) -> usize {
        let mut report = GcReport::default();
        let _ = self.remove_leftovers(&["tmp"], false, &mut report);
        report.leftovers
    }

    /// Removes (or, on a dry run, counts) the leftovers in the store's directories `subs`:
    /// temp directories of dead writers, failed attempts, half-written indexes.
    fn remove_leftovers(
        &self,
        subs: &[&str],
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), CacheError> {
        // What gc lists it deletes: it never follows a symbolic link out of the cache (a
        // `tmp` linked elsewhere would have had the link's target emptied), and a stray plain
        // file is a leftover like any other (#16).
        for &sub in subs {
            let d = self.v1.join(sub);
            if let Err(why) = real_dir(&d) {
                report.refused.push(why);
                continue;
            }
            for e in fs::read_dir(&d).map_err(CacheError::io(&d))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let why = match sub {
                    "tmp" if !writer_alive(&name) => "left by a writer that is gone",
                    "failed" => "the files of a failed attempt",
                    // An index being written (`<name>.tmp.<pid>.<n>`) by a process that died.
                    "pipelines" | "verified"
                        if name
                            .rsplit_once(".tmp.")
                            .and_then(|(_, rest)| rest.split('.').next()?.parse::<u32>().ok())
                            .is_some_and(|pid| !pid_alive(pid)) =>
                    {
                        "a half-written index of a process that is gone"
                    }
                    "tmp" | "pipelines" | "verified" => continue,
                    _ => unreachable!("one of the four above"),
                };
                let path = e.path();
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                let bytes = if is_dir {
                    dir_size(&path)
                } else {
                    e.metadata().map_or(0, |m| m.len())
                };
                report.note(&path, bytes, why.to_owned());
                report.leftovers += 1;
                if !dry_run {
                    remove_path(&path, is_dir)?;
                }
            }
        }
        Ok(())
    }

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

#[derive(Debug)]
pub struct EntryInfo {
    pub key: InstanceKey,
    pub manifest: Option<Manifest>,
    pub size: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub entries: usize,
    pub leftovers: usize,
    pub bytes: u64,
    /// Every entry and leftover counted above, with its size and why it goes, so that
    /// `gc --dry-run` can say what it would remove (#21).
    pub removed: Vec<GcItem>,
    /// Places gc left alone, and why (a directory of the store that is a symbolic link).
    pub refused: Vec<String>,
}

/// A process writing an entry (see [`Store::writers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub key: InstanceKey,
    pub pid: u32,
    pub host: String,
    /// When it began writing, as far as the file system tells.
    pub since: Option<std::time::SystemTime>,
}

/// One entry or leftover that gc removes, or on a dry run would.
#[derive(Debug, PartialEq, Eq)]
pub struct GcItem {
    pub path: PathBuf,
    pub bytes: u64,
    pub why: String,
}

impl GcReport {
    fn note(&mut self, path: &Path, bytes: u64, why: String) {
        self.bytes += bytes;
        self.removed.push(GcItem {
            path: path.to_owned(),
            bytes,
            why,
        });
    }
}

/// An entry being written. Dropped without [`TempEntry::commit`] or [`TempEntry::fail`], its
/// directory is deleted: nothing half-written ever appears under the key.
#[derive(Debug)]
pub struct TempEntry<'a> {
    store: &'a Store,
    key: InstanceKey,
    dir: Option<PathBuf>,
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

/// Moves a directory into `tmp/` before deleting it, so no reader ever sees it half-deleted.
fn remove_dir_atomically(store: &Store, dir: &Path) -> Result<(), CacheError> {
    if !dir.exists() {
        return Ok(());
    }
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let trash = store
        .v1
        .join("tmp")
        .join(format!("trash.{}.{n}", std::process::id()));
    fs::rename(dir, &trash).map_err(CacheError::io(dir))?;
    fs::remove_dir_all(&trash).map_err(CacheError::io(&trash))
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(CacheError::io(&tmp))?;
    f.write_all(bytes).map_err(CacheError::io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(CacheError::io(path))
}

/// The bytes of the file at `path`, and the identity of the very file they were read from.
fn read_with_id(path: &Path) -> std::io::Result<(Vec<u8>, FileId)> {
    let mut file = fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok((bytes, FileId::of(&meta)))
}

pub(crate) fn mtime_ns(meta: &fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Every path a manifest names stays inside its entry: outputs are relative, `/`-separated,
/// without `.`/`..` or empty parts, and what it publishes is one of its outputs (an edited
/// `publish: ["../../../etc/passwd"]` would otherwise be copied into `results/`).
fn check_paths(manifest: &Manifest) -> Result<(), String> {
    for out in &manifest.outputs {
        let inside = !out.path.is_empty()
            && out
                .path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !inside {
            return Err(format!(
                "its manifest names an output outside the entry: `{}`",
                out.path.escape_debug()
            ));
        }
    }
    if let Some(p) = unpublishable(manifest) {
        return Err(format!(
            "its manifest publishes `{}`, which is not one of its outputs",
            p.escape_debug()
        ));
    }
    Ok(())
}

/// A file the manifest asks to publish that is not one of its outputs.
fn unpublishable(manifest: &Manifest) -> Option<&String> {
    manifest
        .publish
        .iter()
        .find(|p| !manifest.outputs.iter().any(|o| &o.path == *p))
}

/// Checks one output against the manifest; `Ok` holds the modification time it has now.
fn check_output(dir: &Path, out: &OutputFile, mode: VerifyMode) -> Result<i128, String> {
    let path = dir.join(&out.path);
    let meta =
        fs::metadata(&path).map_err(|e| format!("output `{}` is unreadable: {e}", out.path))?;
    if meta.len() != out.size {
        return Err(format!(
            "output `{}` has {} bytes, the manifest says {}",
            out.path,
            meta.len(),
            out.size
        ));
    }
    let mtime = mtime_ns(&meta);
    if mode == VerifyMode::Fast && mtime == out.mtime_ns {
        return Ok(mtime);
    }
    match Digest::of_file(&path) {
        Ok(d) if d == out.sha256 => Ok(mtime),
        Ok(_) => Err(format!(
            "output `{}` does not match its recorded SHA-256",
            out.path
        )),
        Err(e) => Err(format!("output `{}` is unreadable: {e}", out.path)),
    }
}

/// Every regular file below `root` but the manifest, hashed, sorted by relative path.
fn hash_tree(root: &Path) -> Result<Vec<OutputFile>, CacheError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(CacheError::io(&dir))? {
            let e = e.map_err(CacheError::io(&dir))?;
            let path = e.path();
            let ft = e.file_type().map_err(CacheError::io(&path))?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).expect("below root");
            let rel = rel
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if rel == MANIFEST {
                continue;
            }
            let meta = fs::metadata(&path).map_err(CacheError::io(&path))?;
            out.push(OutputFile {
                path: rel,
                size: meta.len(),
                sha256: Digest::of_file(&path)?,
                mtime_ns: mtime_ns(&meta),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Temp dirs are named `<key>.<pid>.<n>`: one whose writer still runs is not garbage.
/// Whether the process that named a temp directory `<key>.<pid>.<n>.<host>` may still be
/// writing it. A writer on another host (a Slurm task on a shared cache) cannot be checked from
/// here, so its directory is kept.
fn writer_alive(name: &str) -> bool {
    let mut parts = name.split('.').skip(1);
    let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    if let Some(h) = parts.nth(1)
        && h != host()
    {
        return true;
    }
    pid_alive(pid)
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes a directory with its contents (never following a link inside it), or a file or
/// link itself.
fn remove_path(path: &Path, is_dir: bool) -> Result<(), CacheError> {
    let removed = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    removed.map_err(CacheError::io(path))
}

/// `dir` is a directory itself, not a symbolic link to one.
fn real_dir(dir: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "`{}` is a symbolic link (to `{}`): gc never follows a link out of the cache; \
             replace it with a directory",
            dir.display(),
            fs::read_link(dir).unwrap_or_default().display()
        )),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("`{}` is not a directory", dir.display())),
        Err(e) => Err(format!("cannot read `{}`: {e}", dir.display())),
    }
}

/// This machine's short host name (no dots, so it fits in a temp directory's dotted name).
pub(crate) fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let h = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let h = h.trim().split('.').next().unwrap_or("").to_owned();
        if h.is_empty() { "localhost".into() } else { h }
    })
}

/// Microseconds since the Unix epoch, for manifests.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_of_another_host_is_never_taken_for_a_dead_writer() {
        let me = std::process::id();
        assert!(writer_alive(&format!("abc.{me}.0.{}", host())));
        assert!(writer_alive("abc.4000000000.0.some-compute-node"));
        // No such pid here: a leftover of this host.
        assert!(!writer_alive(&format!("abc.4000000000.0.{}", host())));
        // Names from before the host was recorded are judged by their pid.
        assert!(!writer_alive("abc.4000000000.0"));
        assert!(!writer_alive("garbage"));
    }
}
