//! Garbage collection: what `ablate cache gc` removes (leftovers of dead writers, failed
//! attempts, unheld locks, invalid entries, and entries no pipeline keeps), who is writing now,
//! and the checks that keep gc inside the cache (it never follows a link out of it).

use super::*;

impl Store {
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
                            // A pruned entry's checkpoint is what a longer run resumes from.
                            Some(k)
                                if matches!(self.lookup(&k), Lookup::Hit(m)
                                    if !matches!(m.status, crate::EntryStatus::Pruned { .. })) =>
                            {
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
