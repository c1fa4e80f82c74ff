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

mod gc;
mod index;
mod temp;

pub use gc::{GcItem, GcReport, Writer};
pub use index::PipelineIndex;
pub use temp::TempEntry;

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

    /// Where an attempt that stopped at its early-stopping budget keeps its outputs (inside
    /// its [`Store::checkpoint_dir`], so they live and go with it) until the strategy decides:
    /// committed as a `pruned` entry, or dropped when the instance goes on.
    pub fn paused_dir(&self, key: &InstanceKey) -> PathBuf {
        self.checkpoint_dir(key).join(".ablate-paused")
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
}

#[derive(Debug)]
pub struct EntryInfo {
    pub key: InstanceKey,
    pub manifest: Option<Manifest>,
    pub size: u64,
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

/// Writes `bytes` to `path` through a temp file renamed over it: a reader sees the old file or
/// the new one, never part of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
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

pub(crate) fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
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
