//! A program that computes an instance (`cmd`'s), supervised: it runs in a process group of its
//! own, is stopped with it, and never outlives ablate.
//!
//! - **Its own process group**: a terminal's Ctrl-C reaches ablate alone, which stops the whole
//!   group gracefully (SIGTERM), and kills it (SIGKILL) on a second signal or when a timed-out
//!   attempt's grace period ends.
//! - **It dies with ablate** (#21: `kill -9` of ablate left its trainings running, and the next
//!   run trained the same key beside them). One watchdog process per ablate process, started
//!   with the first program, reads a pipe that only ablate writes: the process groups running
//!   now. When ablate dies, however it dies, the pipe closes; the watchdog sends SIGTERM to every
//!   group still listed, then SIGKILL 5 s later. The program also gets SIGTERM should the thread
//!   that started it end (`PR_SET_PDEATHSIG`), which covers the moment before it is listed.
//! - **It holds its instance's key lock**: the lock's descriptor is inherited by the program,
//!   so no other run (here or on another node of a shared cache) takes the key while any process
//!   of the attempt is alive, orphan or not. Its pid goes in the lock's note, which `ablate
//!   status` and a run waiting for the key show: ablate's pid alone did not tell what to kill.
//!
//! [`shell_quote`] is the one way a word reaches `sh`, here and in a Slurm task's script.

use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ablate_cache::KeyLock;

use crate::CancelToken;

/// How a supervised program ended.
#[derive(Debug)]
pub enum Exit {
    /// It ended on its own.
    Finished(ExitStatus),
    /// ablate stopped it (cancellation or a timeout): SIGTERM, and SIGKILL if it came to that.
    Stopped(ExitStatus),
}

/// A running program in a process group of its own.
pub struct Supervised {
    child: Child,
    pgid: i32,
}

/// The watchdog's script: `+ PGID` lists a group, `- PGID` unlists it; at the end of its input
/// (ablate is gone) every listed group gets SIGTERM, and SIGKILL if it is still there 5 s later;
/// the watchdog leaves as soon as they are all gone. Terminal signals are ignored: it must
/// outlive the ablate that a Ctrl-C or a hang-up ends.
const WATCHDOG: &str = r#"trap '' INT TERM HUP
live=
while read -r op pg; do
  case $op in
    +) live="$live $pg" ;;
    -) kept=; for p in $live; do [ "$p" = "$pg" ] || kept="$kept $p"; done; live=$kept ;;
  esac
done
for p in $live; do kill -s TERM -- "-$p" 2>/dev/null; done
n=0
while [ $n -lt 50 ]; do
  alive=
  for p in $live; do kill -s 0 -- "-$p" 2>/dev/null && alive="$alive $p"; done
  [ -n "$alive" ] || exit 0
  live=$alive
  n=$((n + 1))
  sleep 0.1
done
for p in $live; do kill -s KILL -- "-$p" 2>/dev/null; done"#;

/// The write end of the watchdog's pipe; `None` until the first program starts.
static WATCHDOG_PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);

/// Tells the watchdog about a group (`+`) or that it has ended (`-`), starting the watchdog
/// first if need be.
fn watchdog(op: char, pgid: i32) -> io::Result<()> {
    let mut pipe = WATCHDOG_PIPE.lock().unwrap_or_else(|e| e.into_inner());
    if pipe.is_none() {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        *pipe = child.stdin.take();
        // Never waited for: it ends after ablate (a zombie until then costs nothing).
        std::mem::forget(child);
    }
    let line = format!("{op} {pgid}\n");
    match pipe.as_mut().map(|p| p.write_all(line.as_bytes())) {
        Some(Err(e)) => {
            // The watchdog is gone (killed by hand): start another for the next program.
            *pipe = None;
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Starts `command` supervised. `lock`: the instance's key lock, which the program inherits
/// and whose note names it.
pub fn spawn(mut command: Command, lock: Option<&KeyLock>) -> io::Result<Supervised> {
    let parent = std::process::id() as libc::pid_t;
    let lock_fd = lock.map(|l| l.as_raw_fd());
    command.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid, fcntl, _exit); it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // ablate died before the line above: the signal will never come.
            if libc::getppid() != parent {
                libc::_exit(143);
            }
            if let Some(fd) = lock_fd
                && libc::fcntl(fd, libc::F_SETFD, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pgid = child.id() as i32;
    if let Some(lock) = lock {
        lock.note_program(child.id());
    }
    let mut supervised = Supervised { child, pgid };
    if let Err(e) = watchdog('+', pgid) {
        supervised.signal(libc::SIGKILL);
        let _ = supervised.child.wait();
        return Err(io::Error::new(
            e.kind(),
            format!("failed to start the watchdog that stops the program if ablate dies: {e}"),
        ));
    }
    Ok(supervised)
}

/// How long a program that ablate stopped on its own account (see [`Supervised::wait`]'s
/// `poll`) has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Supervised {
    /// Waits for the program, calling `poll` between looks (every 50 µs at first, backing off to
    /// 10 ms); `poll` returning true asks that it stop (SIGTERM, SIGKILL [`STOP_GRACE`] later).
    /// Cancellation sends SIGTERM to the group; a kill (a second Ctrl-C, or the end of a
    /// timeout's grace) SIGKILL. A stopped program is waited for until its whole group is gone,
    /// not only the process ablate started (#21: a training that ignored SIGTERM outlived the
    /// `sh` that ran it, and ablate, which had stopped watching it).
    pub fn wait(
        mut self,
        cancel: &CancelToken,
        mut poll: impl FnMut() -> bool,
    ) -> io::Result<Exit> {
        let mut nap = Duration::from_micros(50);
        let mut termed: Option<(Instant, bool)> = None;
        let mut killed: Option<Instant> = None;
        let mut status = None;
        loop {
            if status.is_none() {
                status = self.child.try_wait()?;
            }
            if let Some(status) = status
                && (termed.is_none()
                    || !group_alive(self.pgid)
                    // Nothing that SIGKILL leaves behind outlives a second.
                    || killed.is_some_and(|t| t.elapsed() > Duration::from_secs(1)))
            {
                // Whatever the group left running is no longer the watchdog's business; a
                // write error means the watchdog is gone, which only matters for programs
                // still running.
                let _ = watchdog('-', self.pgid);
                return Ok(match termed {
                    Some(_) => Exit::Stopped(status),
                    None => Exit::Finished(status),
                });
            }
            let asked = status.is_none() && poll();
            let overdue = termed.is_some_and(|(t, own)| own && t.elapsed() >= STOP_GRACE);
            if killed.is_none() && (cancel.is_killed() || overdue) {
                self.signal(libc::SIGKILL);
                killed = Some(Instant::now());
            } else if termed.is_none() && (cancel.is_cancelled() || asked) {
                self.signal(libc::SIGTERM);
                termed = Some((Instant::now(), !cancel.is_cancelled()));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: `kill` has no memory-safety preconditions; a stale pgid only makes it fail.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-self.pgid, sig);
        }
    }
}

/// Whether a process of group `pgid` is alive. A zombie is not: an orphan's zombie may wait
/// for a reaper that some containers lack.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: as above; signal 0 only asks whether the group has a member.
    #[allow(unsafe_code)]
    if unsafe { libc::kill(-pgid, 0) } != 0 {
        return false;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    let pgid = pgid.to_string();
    procs.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp …`; the command name may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let pgrp = fields.nth(1);
        !matches!(state, Some("Z" | "X")) && pgrp == Some(pgid.as_str())
    })
}

/// Single-quotes a word for `sh` when it holds anything but safe characters: the shell sees
/// one word, whatever it holds (`;`, `$(…)`, quotes, spaces). A safe word stays bare, so a
/// logged command line reads as one would type it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn shell_quote_leaves_safe_words_bare_and_quotes_the_rest() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf ~);"), "'$(rm -rf ~);'");
    }

    #[test]
    fn the_program_inherits_the_lock_and_holds_it_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = ablate_cache::Store::open(dir.path()).unwrap();
        let key: ablate_cache::InstanceKey = "ab".repeat(32).parse().unwrap();
        let lock = store
            .try_lock_for(&key, "p", "train[lr=1]")
            .unwrap()
            .unwrap();
        let mut command = Command::new("sh");
        command.arg("-c").arg("sleep 0.3");
        let program = spawn(command, Some(&lock)).unwrap();
        drop(lock);
        // ablate's own descriptor is closed; the program's keeps the key locked.
        assert!(store.try_lock(&key).unwrap().is_none());
        // The note names the program, what a user would kill (#21).
        let held = store.held_locks();
        let note = held[0].note.as_ref().unwrap();
        assert_eq!(note.program_pid, Some(program.pgid as u32));
        assert_eq!(note.instance.as_deref(), Some("train[lr=1]"));
        let exit = program.wait(&CancelToken::new(), || false).unwrap();
        assert!(matches!(exit, Exit::Finished(s) if s.success()));
        store
            .try_lock(&key)
            .unwrap()
            .expect("free once the program ended");
        assert!(store.held_locks().is_empty());
    }

    #[test]
    fn cancellation_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let mut command = Command::new("sh");
        // A grandchild in the background, as a data loader's worker would be.
        command
            .arg("-c")
            .arg(format!("(sleep 1; touch {}) & wait", marker.display()));
        let program = spawn(command, None).unwrap();
        let cancel = CancelToken::new();
        cancel.cancel();
        let exit = program.wait(&cancel, || false).unwrap();
        assert!(matches!(exit, Exit::Stopped(_)));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "the grandchild outlived the stop");
    }

    /// A program whose `sh` dies on SIGTERM but whose worker ignores it (#21, found by a new
    /// user: the worker trained on after ablate had exited).
    fn stubborn(marker: &std::path::Path) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "sh -c 'trap \"\" TERM; sleep 1.5; touch {}' & wait",
            marker.display()
        ));
        command
    }

    #[test]
    fn a_stopped_program_is_waited_for_until_its_whole_group_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("done");
        let program = spawn(stubborn(&marker), None).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let cancel = CancelToken::new();
        cancel.cancel();
        let exit = program.wait(&cancel, || false).unwrap();
        assert!(matches!(exit, Exit::Stopped(_)));
        assert!(marker.exists(), "wait returned while the worker still ran");
    }

    #[test]
    fn a_kill_after_the_stop_ends_a_program_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("done");
        let program = spawn(stubborn(&marker), None).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let cancel = CancelToken::new();
        cancel.cancel();
        let killer = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            killer.kill();
        });
        let t0 = Instant::now();
        program.wait(&cancel, || false).unwrap();
        assert!(
            t0.elapsed() < Duration::from_millis(1200),
            "{:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "the worker survived the kill");
    }

    #[test]
    fn a_program_asked_to_stop_gets_sigterm() {
        let mut command = Command::new("sh");
        command.arg("-c").arg("sleep 30");
        let program = spawn(command, None).unwrap();
        let t0 = Instant::now();
        let exit = program
            .wait(&CancelToken::new(), || {
                t0.elapsed() > Duration::from_millis(100)
            })
            .unwrap();
        assert!(matches!(exit, Exit::Stopped(s) if s.signal() == Some(libc::SIGTERM)));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
