//! The index of verified entries, and looking up many keys at once through it.
//!
//! A lookup reads, parses and checksums an entry's manifest, then compares each output's size
//! and modification time with it. For a plan of 10,000 cached instances that was most of a
//! no-op rerun (#21). So each full check that finds an entry valid leaves a record: the
//! identity of the manifest file it read (size, modification and change times, inode), the
//! manifest's checksum, and the outputs' paths, sizes and modification times. A later lookup
//! whose manifest file and outputs still look exactly so skips the manifest (read when first
//! needed: [`CachedEntry::manifest`]); any difference sends it back to the full check.
//!
//! The change time is what a same-size edit that puts the modification time back cannot hide
//! (the kernel sets it on every write and on `utime` itself), and a replaced entry has a new
//! manifest inode: the record trusts no more than the full check did, which re-hashed the
//! manifest and trusted the outputs' sizes and modification times.
//!
//! `v1/verified/<bucket>`: one file per key bucket, rewritten whole (temp-then-rename) when a
//! lookup adds or drops one of its records. It is a cache of verifications, never a source of
//! truth: a lost, stale or unreadable file costs a full check, never a wrong hit. Two runs may
//! overwrite each other's files (losing records, not adding wrong ones); a read-only cache is
//! never written and still serves hits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::store::{MANIFEST, mtime_ns, write_atomically};
use crate::{CacheError, Digest, EntryStatus, InstanceKey, Lookup, Manifest, Store, VerifyMode};

const MAGIC: &[u8; 16] = b"ablate-verified1";

/// An entry a lookup found valid: its key, how and when it was computed and whether it
/// publishes files at hand, and its manifest, read when first asked for (a fully cached plan
/// need not parse every manifest).
#[derive(Debug)]
pub struct CachedEntry {
    key: InstanceKey,
    started_at_us: i64,
    status: EntryStatus,
    publishes: bool,
    /// The checksum of the manifest that was verified (`None`: a legacy manifest, always
    /// loaded at once).
    checksum: Option<Digest>,
    /// The directory of the entry's bucket, to read the manifest from (`None`: the manifest is
    /// at hand). Shared by the bucket's entries: a fully cached plan joins no path per entry.
    bucket_dir: Option<Arc<Path>>,
    manifest: OnceLock<Arc<Manifest>>,
}

impl CachedEntry {
    /// An entry whose manifest is at hand (just verified, or just computed).
    pub fn loaded(manifest: Arc<Manifest>) -> Self {
        let entry = CachedEntry {
            key: manifest.key,
            started_at_us: manifest.started_at_us,
            status: manifest.status.clone(),
            publishes: !manifest.publish.is_empty(),
            checksum: manifest.checksum,
            bucket_dir: None,
            manifest: OnceLock::new(),
        };
        let _ = entry.manifest.set(manifest);
        entry
    }

    pub fn key(&self) -> InstanceKey {
        self.key
    }

    /// When the entry's computation started (its manifest's `started_at_us`).
    pub fn started_at_us(&self) -> i64 {
        self.started_at_us
    }

    /// How its computation ended (its manifest's `status`).
    pub fn status(&self) -> &EntryStatus {
        &self.status
    }

    /// Whether its manifest asks for files to be published.
    pub fn publishes(&self) -> bool {
        self.publishes
    }

    /// The manifest, read on the first call. It must be the one that was verified (its
    /// checksum is compared): an entry replaced or edited since is an error, not a silent swap.
    pub fn manifest(&self) -> Result<Arc<Manifest>, CacheError> {
        if let Some(m) = self.manifest.get() {
            return Ok(Arc::clone(m));
        }
        let bucket_dir = self.bucket_dir.as_deref().unwrap_or(Path::new(""));
        let path = bucket_dir.join(self.key.to_hex()).join(MANIFEST);
        let bytes = fs::read(&path).map_err(CacheError::io(&path))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| CacheError::Manifest {
                path: path.clone(),
                source,
            })?;
        if manifest.key != self.key
            || manifest.checksum != self.checksum
            || self.checksum != Some(manifest.compute_checksum())
        {
            return Err(CacheError::Changed { path });
        }
        Ok(Arc::clone(self.manifest.get_or_init(|| Arc::new(manifest))))
    }
}

impl PartialEq for CachedEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.started_at_us, self.checksum)
            == (other.key, other.started_at_us, other.checksum)
    }
}

/// What a full check found, for a later lookup to compare the files with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    manifest: FileId,
    checksum: Digest,
    started_at_us: i64,
    status: EntryStatus,
    publishes: bool,
    /// Path, size and modification time of every output when it was checked.
    outputs: Vec<(String, u64, i128)>,
}

impl Record {
    /// The record of a checksummed manifest read from a file with identity `id`, whose outputs
    /// were found valid with modification times `mtimes`. `None` for a manifest without a
    /// checksum (a legacy one), which is never read lazily.
    pub(crate) fn of(manifest: &Manifest, id: FileId, mtimes: &[i128]) -> Option<Record> {
        if manifest.format != crate::MANIFEST_FORMAT {
            return None;
        }
        Some(Record {
            manifest: id,
            checksum: manifest.checksum?,
            started_at_us: manifest.started_at_us,
            status: manifest.status.clone(),
            publishes: !manifest.publish.is_empty(),
            outputs: manifest
                .outputs
                .iter()
                .zip(mtimes)
                .map(|(o, mtime)| (o.path.clone(), o.size, *mtime))
                .collect(),
        })
    }

    /// Whether the entry `hex` of `bucket` still looks exactly as when it was verified.
    /// `path` is a buffer to reuse.
    fn holds(&self, bucket: &BucketDir, hex: &[u8; 64], path: &mut Vec<u8>) -> bool {
        bucket
            .stat(hex, MANIFEST, path)
            .is_some_and(|id| id == self.manifest)
            && self.outputs.iter().all(|(name, size, mtime)| {
                bucket
                    .stat(hex, name, path)
                    .is_some_and(|id| id.len == *size && id.mtime_ns == *mtime)
            })
    }
}

/// A bucket directory (`v1/ab/`), opened once: its entries' files are looked at by short paths
/// relative to it (`<key>/manifest.json`), two components for the kernel to walk rather than
/// the whole absolute path, and no path built per file. For 10,000 cached entries those walks
/// were most of the cost of checking them (#21).
struct BucketDir(fs::File);

impl BucketDir {
    fn open(path: &Path) -> Option<BucketDir> {
        fs::File::open(path).ok().map(BucketDir)
    }

    /// The identity of the file `<hex>/<name>` in this bucket, following links as
    /// `fs::metadata` does; `None` when it cannot be looked at. `path`: a buffer to reuse.
    fn stat(&self, hex: &[u8; 64], name: &str, path: &mut Vec<u8>) -> Option<FileId> {
        use std::os::fd::AsRawFd as _;
        path.clear();
        path.extend_from_slice(hex);
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        path.push(0);
        let path = std::ffi::CStr::from_bytes_with_nul(path).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the descriptor is open for the life of `self`, `path` is NUL-terminated,
        // and `stat` is a buffer of the size `fstatat` writes, read only when it succeeded.
        #[allow(unsafe_code)]
        let stat = unsafe {
            if libc::fstatat(self.0.as_raw_fd(), path.as_ptr(), stat.as_mut_ptr(), 0) != 0 {
                return None;
            }
            stat.assume_init()
        };
        Some(FileId::of_stat(&stat))
    }
}

/// What tells one version of a file from another without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl FileId {
    /// What `fstatat` says of a file, in the terms [`FileId::of`] gives them.
    fn of_stat(stat: &libc::stat) -> FileId {
        // `mtime_ns`: before the epoch reads as 0, as there.
        let mtime_ns = if stat.st_mtime >= 0 {
            i128::from(stat.st_mtime) * 1_000_000_000 + i128::from(stat.st_mtime_nsec)
        } else {
            0
        };
        FileId {
            len: stat.st_size as u64,
            mtime_ns,
            ctime_ns: i128::from(stat.st_ctime) * 1_000_000_000 + i128::from(stat.st_ctime_nsec),
            ino: stat.st_ino,
            dev: stat.st_dev,
        }
    }

    pub(crate) fn of(meta: &fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt as _;
        FileId {
            len: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// The records of one bucket's file.
type Shard = HashMap<InstanceKey, Record>;

impl Store {
    fn verified_path(&self, bucket: u8) -> PathBuf {
        self.v1().join("verified").join(format!("{bucket:02x}"))
    }

    /// Looks every key up (in parallel when there are many), trusting the index of verified
    /// entries for those whose files are unchanged since their full check, and bringing the
    /// index up to date (best effort: a read-only cache is only read). Results are in the
    /// order of `keys`.
    pub fn lookup_all(&self, keys: &[InstanceKey]) -> Vec<Lookup<Arc<CachedEntry>>> {
        let mut by_bucket: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_bucket.entry(key.bucket()).or_default().push(i);
        }
        let buckets: Vec<(u8, Vec<usize>)> = by_bucket.into_iter().collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let work = |buckets: &[(u8, Vec<usize>)]| -> Vec<(usize, Lookup<Arc<CachedEntry>>)> {
            buckets
                .iter()
                .flat_map(|(bucket, indices)| self.lookup_bucket(*bucket, indices, keys))
                .collect()
        };
        let found: Vec<(usize, Lookup<Arc<CachedEntry>>)> = if keys.len() < 64 || threads == 1 {
            work(&buckets)
        } else {
            let chunk = buckets.len().div_ceil(threads);
            let work = &work;
            std::thread::scope(|s| {
                let mut chunks = buckets.chunks(chunk);
                // This thread takes the first chunk itself.
                let first = chunks.next().unwrap_or_default();
                let handles: Vec<_> = chunks.map(|bs| s.spawn(move || work(bs))).collect();
                let mut found = work(first);
                for h in handles {
                    found.extend(h.join().expect("lookup thread"));
                }
                found
            })
        };
        let mut out: Vec<Option<Lookup<Arc<CachedEntry>>>> =
            (0..keys.len()).map(|_| None).collect();
        for (i, lookup) in found {
            out[i] = Some(lookup);
        }
        out.into_iter()
            .map(|l| l.expect("every key was looked up"))
            .collect()
    }

    /// The keys at `indices` (all in `bucket`), through that bucket's records.
    fn lookup_bucket(
        &self,
        bucket: u8,
        indices: &[usize],
        keys: &[InstanceKey],
    ) -> Vec<(usize, Lookup<Arc<CachedEntry>>)> {
        let path = self.verified_path(bucket);
        let bucket_dir: Arc<Path> = Arc::from(self.v1().join(format!("{bucket:02x}")));
        let mut shard = read_shard(&path);
        // Many keys without a record (a cold or new cache, a new sweep): one listing of the
        // bucket answers the misses among them without a failing open each.
        let unrecorded = indices
            .iter()
            .filter(|&&i| !shard.contains_key(&keys[i]))
            .count();
        let present: Option<HashSet<OsString>> = (unrecorded > 8).then(|| {
            fs::read_dir(&bucket_dir)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        });
        // Without records there is nothing to stat; a bucket that cannot be opened has only
        // misses, which the full check below finds.
        let opened = (unrecorded < indices.len())
            .then(|| BucketDir::open(&bucket_dir))
            .flatten();
        let mut changed = false;
        let mut out = Vec::with_capacity(indices.len());
        let mut hex = [0u8; 64];
        let mut buf = Vec::with_capacity(128);
        for &i in indices {
            let key = &keys[i];
            key.digest().write_hex(&mut hex);
            let record = shard.get(key);
            if record.is_none()
                && present
                    .as_ref()
                    .is_some_and(|names| !names.contains(OsStr::from_bytes(&hex)))
            {
                out.push((i, Lookup::Miss));
                continue;
            }
            if let (Some(record), Some(dir)) = (record, &opened)
                && record.holds(dir, &hex, &mut buf)
            {
                let entry = CachedEntry {
                    key: *key,
                    started_at_us: record.started_at_us,
                    status: record.status.clone(),
                    publishes: record.publishes,
                    checksum: Some(record.checksum),
                    bucket_dir: Some(Arc::clone(&bucket_dir)),
                    manifest: OnceLock::new(),
                };
                out.push((i, Lookup::Hit(Arc::new(entry))));
                continue;
            }
            let (lookup, record) = self.verify_entry(key, VerifyMode::Fast);
            let lookup = match lookup {
                Lookup::Hit(m) => Lookup::Hit(Arc::new(CachedEntry::loaded(Arc::from(m)))),
                Lookup::Miss => Lookup::Miss,
                Lookup::Invalid(why) => Lookup::Invalid(why),
            };
            match record {
                Some(record) => {
                    changed |= shard.insert(*key, record.clone()) != Some(record);
                }
                None => changed |= shard.remove(key).is_some(),
            }
            out.push((i, lookup));
        }
        if changed {
            // Best effort: a read-only or full cache still served the lookups.
            let _ = fs::create_dir_all(path.parent().expect("in v1/verified"))
                .map_err(CacheError::io(&path))
                .and_then(|()| write_atomically(&path, &encode(&shard)));
        }
        out
    }
}

/// The records in the file at `path`; none when it is missing, torn or of another format.
fn read_shard(path: &Path) -> Shard {
    fs::read(path)
        .ok()
        .and_then(|bytes| decode(&bytes))
        .unwrap_or_default()
}

/// `MAGIC`, the record count, the records, then the SHA-256 of everything before it.
fn encode(shard: &Shard) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + shard.len() * 200);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(shard.len() as u32).to_le_bytes());
    // Sorted, so the same records give the same bytes.
    let mut records: Vec<_> = shard.iter().collect();
    records.sort_by_key(|(k, _)| **k);
    for (key, r) in records {
        out.extend_from_slice(key.digest().as_bytes());
        out.extend_from_slice(r.checksum.as_bytes());
        out.extend_from_slice(&r.started_at_us.to_le_bytes());
        match &r.status {
            EntryStatus::Done => out.push(0),
            EntryStatus::Diverged {
                metric,
                step,
                value,
            } => {
                out.push(1);
                put_str(&mut out, metric);
                match step {
                    Some(step) => {
                        out.push(1);
                        out.extend_from_slice(&step.to_le_bytes());
                    }
                    None => out.push(0),
                }
                put_str(&mut out, value);
            }
            EntryStatus::Pruned { step } => {
                out.push(2);
                out.extend_from_slice(&step.to_le_bytes());
            }
        }
        out.push(u8::from(r.publishes));
        let id = &r.manifest;
        out.extend_from_slice(&id.len.to_le_bytes());
        out.extend_from_slice(&id.mtime_ns.to_le_bytes());
        out.extend_from_slice(&id.ctime_ns.to_le_bytes());
        out.extend_from_slice(&id.ino.to_le_bytes());
        out.extend_from_slice(&id.dev.to_le_bytes());
        out.extend_from_slice(&(r.outputs.len() as u32).to_le_bytes());
        for (path, size, mtime) in &r.outputs {
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&mtime.to_le_bytes());
            put_str(&mut out, path);
        }
    }
    let sum = Digest::of_bytes(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn decode(bytes: &[u8]) -> Option<Shard> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Digest::of_bytes(body).as_bytes() != sum {
        return None;
    }
    let mut r = Reader(body.strip_prefix(MAGIC)?);
    let count = r.u32()?;
    let mut shard = Shard::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let key = InstanceKey::from_digest(Digest::from_bytes(r.array()?));
        let checksum = Digest::from_bytes(r.array()?);
        let started_at_us = i64::from_le_bytes(r.array()?);
        let status = match r.byte()? {
            0 => EntryStatus::Done,
            1 => EntryStatus::Diverged {
                metric: r.string()?,
                step: match r.byte()? {
                    0 => None,
                    1 => Some(u64::from_le_bytes(r.array()?)),
                    _ => return None,
                },
                value: r.string()?,
            },
            2 => EntryStatus::Pruned {
                step: u64::from_le_bytes(r.array()?),
            },
            _ => return None,
        };
        let publishes = r.byte()? != 0;
        let manifest = FileId {
            len: u64::from_le_bytes(r.array()?),
            mtime_ns: i128::from_le_bytes(r.array()?),
            ctime_ns: i128::from_le_bytes(r.array()?),
            ino: u64::from_le_bytes(r.array()?),
            dev: u64::from_le_bytes(r.array()?),
        };
        let n = r.u32()?;
        let mut outputs = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let size = u64::from_le_bytes(r.array()?);
            let mtime = i128::from_le_bytes(r.array()?);
            outputs.push((r.string()?, size, mtime));
        }
        shard.insert(
            key,
            Record {
                manifest,
                checksum,
                started_at_us,
                status,
                publishes,
                outputs,
            },
        );
    }
    r.0.is_empty().then_some(shard)
}

struct Reader<'b>(&'b [u8]);

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        Some(std::str::from_utf8(self.take(len)?).ok()?.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Record {
        Record {
            manifest: FileId {
                len: 10,
                mtime_ns: -5,
                ctime_ns: 1 << 70,
                ino: 7,
                dev: 8,
            },
            checksum: Digest::of_bytes(b"m"),
            started_at_us: 42,
            status: match n % 3 {
                0 => EntryStatus::Done,
                1 => EntryStatus::diverged("loss", Some(n as u64), f64::NAN),
                _ => EntryStatus::diverged("acc", None, f64::NEG_INFINITY),
            },
            publishes: n.is_multiple_of(2),
            outputs: (0..n)
                .map(|i| (format!("dir/é{i}.txt"), i as u64, i as i128 * 1_000))
                .collect(),
        }
    }

    #[test]
    fn records_round_trip_and_damage_reads_as_none() {
        let mut shard = Shard::new();
        for n in 0..5u8 {
            let key = InstanceKey::from_digest(Digest::of_bytes(&[n]));
            shard.insert(key, record(n as usize));
        }
        let bytes = encode(&shard);
        assert_eq!(decode(&bytes), Some(shard.clone()));
        assert_eq!(encode(&decode(&bytes).unwrap()), bytes, "deterministic");
        assert_eq!(decode(&encode(&Shard::new())), Some(Shard::new()));
        // Torn, flipped, or another format: nothing trusted.
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        for at in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            assert_eq!(decode(&flipped), None, "byte {at}");
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[0; 40]), None);
    }

    #[test]
    fn a_bucket_stat_gives_the_file_id_that_fs_metadata_gives() {
        // The index records what `fs::metadata` says; a lookup compares what `fstatat` says:
        // any difference (the device's encoding, nanoseconds) would send every lookup back to
        // the full check.
        let dir = tempfile::tempdir().unwrap();
        let hex = [b'a'; 64];
        let entry = dir.path().join(std::str::from_utf8(&hex).unwrap());
        fs::create_dir_all(entry.join("sub")).unwrap();
        fs::write(entry.join(MANIFEST), b"{}").unwrap();
        fs::write(entry.join("sub/out.bin"), vec![7u8; 1234]).unwrap();
        let old = std::time::UNIX_EPOCH - std::time::Duration::from_secs(10);
        fs::File::options()
            .write(true)
            .open(entry.join("sub/out.bin"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let bucket = BucketDir::open(dir.path()).unwrap();
        let mut buf = Vec::new();
        for name in [MANIFEST, "sub/out.bin"] {
            let meta = fs::metadata(entry.join(name)).unwrap();
            assert_eq!(
                bucket.stat(&hex, name, &mut buf),
                Some(FileId::of(&meta)),
                "{name}"
            );
        }
        assert_eq!(bucket.stat(&hex, "missing", &mut buf), None);
        assert_eq!(bucket.stat(&hex, "nul\0inside", &mut buf), None);
    }
}
