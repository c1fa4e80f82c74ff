//! The signals that stop a run: Ctrl-C (SIGINT), SIGTERM (Slurm at a time limit or on
//! preemption, `kill`, a container stopping) and SIGHUP (a closed terminal or SSH session). All
//! three stop it the same way: the first gracefully (running instances are stopped, nothing
//! half-written is kept, everything finished is recorded), a second one at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use ablate_run::CancelToken;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

/// One stop signal received.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// How a message names it: `Ctrl-C`, `SIGTERM`, `SIGHUP`.
    pub name: &'static str,
    /// 128 + the signal's number, as a shell reports a process it ended (130, 143, 129).
    pub exit_code: u8,
}

impl StopSignals {
    /// Installs the handlers; from then on these signals no longer end the process by
    /// themselves. Must be called within a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next stop signal.
    pub async fn next(&mut self) -> Stop {
        let (name, kind) = tokio::select! {
            _ = self.int.recv() => ("Ctrl-C", SignalKind::interrupt()),
            _ = self.term.recv() => ("SIGTERM", SignalKind::terminate()),
            _ = self.hup.recv() => ("SIGHUP", SignalKind::hangup()),
        };
        Stop {
            name,
            exit_code: 128 + kind.as_raw_value() as u8,
        }
    }
}

/// Stops a run on signals: the first cancels `cancel` (and `on_first` says so), the second
/// kills (`cmd` children get SIGKILL) and ends the process a moment later. The first signal's
/// exit code is stored in `stopped_by` for the caller to exit with.
pub async fn stop_on_signals(
    mut signals: StopSignals,
    cancel: CancelToken,
    stopped_by: Arc<AtomicU8>,
    on_first: impl FnOnce(Stop) + Send,
) {
    let first = signals.next().await;
    stopped_by.store(first.exit_code, Ordering::SeqCst);
    cancel.cancel();
    on_first(first);
    signals.next().await;
    cancel.kill();
    // Give `cmd` children their SIGKILL; whatever was being written stays in the cache's tmp/
    // (never under a key) for `ablate cache gc`.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    std::process::exit(i32::from(first.exit_code));
}
