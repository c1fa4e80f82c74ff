//! Per-key locks (`v1/locks/<key>.lock`): two runs never compute one key. The holder notes in
//! the lock file who it is — its pid and host, since when, and, for an instance's computation,
//! the pipeline and instance and the pid of the program it started — so a run that finds the
//! key taken, and `ablate status`, can say who computes it and what to kill (#21).
//!
//! The note's first line is the one older versions wrote and read (`pid P on HOST since US`);
//! what was added since is on lines of its own (`pipeline NAME`, `instance ID`, `program PID`),
//! so a note of either age reads in either version.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::store::{host, pid_alive};
use crate::{CacheError, InstanceKey, Store, now_us};

/// What a lock's holder noted in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockNote {
    /// The ablate process that took the lock.
    pub pid: u32,
    /// Its host, short form (`node12`, not `node12.cluster`).
    pub host: String,
    /// When it took the lock, in Unix microseconds.
    pub since_us: i64,
    /// The pipeline (its `name:`) whose instance is computed; `None` for a note of an older
    /// version, and for a lock taken for anything else (gc, removing an untrusted entry).
    pub pipeline: Option<String>,
    /// The instance, `stage[label]`.
    pub instance: Option<String>,
    /// The program the instance's `cmd` started (the leader of its process group: killing the
    /// group `-PID` stops it all), once started.
    pub program_pid: Option<u32>,
}

impl LockNote {
    fn mine() -> Self {
        LockNote {
            pid: std::process::id(),
            host: host().to_owned(),
            since_us: now_us(),
            pipeline: None,
            instance: None,
            program_pid: None,
        }
    }

    /// Reads a note as written by [`LockNote::to_text`] or by an older version (its first line
    /// alone). `None` when even that line is not there (a note being written, or none).
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let mut words = lines.next()?.split_whitespace();
        let pid = words.nth(1)?.parse().ok()?;
        let host = words.nth(1)?.to_owned();
        let since_us = words.nth(1)?.parse().ok()?;
        let mut note = LockNote {
            pid,
            host,
            since_us,
            pipeline: None,
            instance: None,
            program_pid: None,
        };
        // Lines a later version may add are skipped.
        for line in lines {
            match line.split_once(' ') {
                Some(("pipeline", v)) => note.pipeline = Some(v.to_owned()),
                Some(("instance", v)) => note.instance = Some(v.to_owned()),
                Some(("program", v)) => note.program_pid = v.trim().parse().ok(),
                _ => {}
            }
        }
        Some(note)
    }

    pub fn to_text(&self) -> String {
        let mut text = format!(
            "pid {} on {} since {}\n",
            self.pid, self.host, self.since_us
        );
        // One value per line: a line break inside one would start a line of its own.
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        if let Some(p) = &self.pipeline {
            text.push_str(&format!("pipeline {}\n", one_line(p)));
        }
        if let Some(i) = &self.instance {
            text.push_str(&format!("instance {}\n", one_line(i)));
        }
        if let Some(p) = self.program_pid {
            text.push_str(&format!("program {p}\n"));
        }
        text
    }

    /// Whether the ablate process that took the lock is known to be gone: it ran on this host
    /// and is no longer there. (The lock may still be held: by the programs it started, which
    /// inherited it.)
    pub fn holder_gone(&self) -> bool {
        self.host == host() && !pid_alive(self.pid)
    }

    /// `ablate pid 123, program pid 130 on vm` (or `ablate pid 123 (gone), …` when
    /// [`LockNote::holder_gone`]).
    pub fn describe(&self) -> String {
        let gone = if self.holder_gone() { " (gone)" } else { "" };
        let program = self
            .program_pid
            .map(|p| format!(", program pid {p}"))
            .unwrap_or_default();
        format!("ablate pid {}{gone}{program} on {}", self.pid, self.host)
    }
}

/// Held while an instance is computed; released on drop (and when every program that
/// inherited its descriptor has ended: see `ablate_run::process`).
#[derive(Debug)]
pub struct KeyLock {
    file: fs::File,
    note: LockNote,
}

impl KeyLock {
    /// Notes the program started under this lock (see [`LockNote::program_pid`]). Best effort:
    /// a note that cannot be written only leaves `ablate status` knowing less.
    pub fn note_program(&self, pid: u32) {
        let note = LockNote {
            program_pid: Some(pid),
            ..self.note.clone()
        };
        write_note(&self.file, &note);
    }
}

impl std::os::fd::AsRawFd for KeyLock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// A key whose lock someone holds now, and what the holder noted (`None`: nothing readable).
#[derive(Clone, Debug)]
pub struct HeldLock {
    pub key: InstanceKey,
    pub note: Option<LockNote>,
}

impl Store {
    /// Takes the key's lock if no one holds it (for gc and the like: the note names no
    /// instance).
    pub fn try_lock(&self, key: &InstanceKey) -> Result<Option<KeyLock>, CacheError> {
        self.lock_with(key, LockNote::mine())
    }

    /// Takes the key's lock to compute instance `instance` of pipeline `pipeline`, if no one
    /// holds it; the note says so.
    pub fn try_lock_for(
        &self,
        key: &InstanceKey,
        pipeline: &str,
        instance: &str,
    ) -> Result<Option<KeyLock>, CacheError> {
        self.lock_with(
            key,
            LockNote {
                pipeline: Some(pipeline.to_owned()),
                instance: Some(instance.to_owned()),
                ..LockNote::mine()
            },
        )
    }

    fn lock_with(&self, key: &InstanceKey, note: LockNote) -> Result<Option<KeyLock>, CacheError> {
        let path = self.lock_path(key);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(CacheError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {
                // Truncated first: the last holder's longer note must not show through.
                let _ = file.set_len(0);
                write_note(&file, &note);
                Ok(Some(KeyLock { file, note }))
            }
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(CacheError::Io { path, source: e }),
        }
    }

    /// Who holds the key's lock, as its holder noted it. `None` when no note can be read. The
    /// note of a lock no one holds any more is returned as well: callers ask after failing to
    /// take it.
    pub fn lock_holder(&self, key: &InstanceKey) -> Option<LockNote> {
        LockNote::parse(&fs::read_to_string(self.lock_path(key)).ok()?)
    }

    /// Every key whose lock someone holds now (here or, on a shared cache, on another host),
    /// with its note: what `ablate status` shows as running. Probing takes a shared lock for an
    /// instant, never the note's place: a run that tries the key at that instant tries again.
    pub fn held_locks(&self) -> Vec<HeldLock> {
        let dir = self.v1().join("locks");
        let Ok(rd) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Some(key) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".lock"))
                .and_then(|k| k.parse::<InstanceKey>().ok())
            else {
                continue;
            };
            if let Some(note) = probe(&e.path()) {
                out.push(HeldLock { key, note });
            }
        }
        out.sort_by_key(|h| h.key);
        out
    }
}

/// `Some(note)` when the lock at `path` is held (a read-only descriptor suffices for a shared
/// lock, so a read-only cache can be looked at too).
fn probe(path: &Path) -> Option<Option<LockNote>> {
    let mut file = fs::File::open(path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Some(LockNote::parse(&text))
        }
        Err(fs::TryLockError::Error(_)) => None,
    }
}

/// Writes the note over the file's start, then cuts what is left of a shorter one (a reader
/// between the two sees a longer note's tail at worst, which the parser skips line by line).
fn write_note(file: &fs::File, note: &LockNote) {
    let text = note.to_text();
    let _ = file
        .write_all_at(text.as_bytes(), 0)
        .and_then(|()| file.set_len(text.len() as u64));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_of_an_older_version_reads_without_the_new_lines() {
        let old = "pid 16048 on vm since 1765000000000000\n";
        let note = LockNote::parse(old).unwrap();
        assert_eq!(
            (note.pid, note.host.as_str(), note.since_us),
            (16048, "vm", 1_765_000_000_000_000)
        );
        assert_eq!(
            (note.pipeline, note.instance, note.program_pid),
            (None, None, None)
        );
    }

    #[test]
    fn a_new_note_keeps_the_first_line_an_older_version_reads() {
        let note = LockNote {
            pid: 7,
            host: "node3".into(),
            since_us: 12,
            pipeline: Some("sweep".into()),
            instance: Some("train[lr=0.2,note=a b]".into()),
            program_pid: Some(9),
        };
        let text = note.to_text();
        assert!(text.starts_with("pid 7 on node3 since 12\n"), "{text}");
        assert_eq!(LockNote::parse(&text), Some(note));
        // A line a later version adds is skipped.
        let later = format!("{text}gpus 0,1\n");
        assert_eq!(LockNote::parse(&later).unwrap().program_pid, Some(9));
    }

    /// QA of #21 §9: after a `kill -9` of ablate the key is held by its orphaned program; the
    /// note says ablate is gone and which program to kill.
    #[test]
    fn a_dead_holder_is_said_to_be_gone_beside_its_program() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let note = LockNote {
            pid: child.id(),
            program_pid: Some(77),
            ..LockNote::mine()
        };
        assert!(note.holder_gone());
        assert_eq!(
            note.describe(),
            format!(
                "ablate pid {} (gone), program pid 77 on {}",
                child.id(),
                host()
            )
        );
        // On another host nothing can be said of the pid.
        let elsewhere = LockNote {
            host: "elsewhere-node".into(),
            ..note
        };
        assert!(!elsewhere.holder_gone());
    }
}
