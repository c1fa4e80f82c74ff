use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Shared cancellation state: the first Ctrl-C cancels (no new work starts; running work is
/// asked to stop and keeps nothing half-written), the second kills (child processes get
/// SIGKILL at once).
///
/// A token made by [`CancelToken::with_deadline`] also stops one attempt of one instance at its
/// stage's `timeout`: cancelled at the deadline, killed a grace period later.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: AtomicU8,
    notify: Notify,
    /// The run's token, for an attempt's token.
    parent: Option<CancelToken>,
    deadline: Option<Deadline>,
}

#[derive(Debug)]
struct Deadline {
    at: Instant,
    kill_at: Instant,
}

const RUNNING: u8 = 0;
const CANCELLED: u8 = 1;
const KILLED: u8 = 2;

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for one attempt: cancelled with `self`, or once `timeout` has passed (and
    /// killed `grace` after that, for programs that ignore the polite request).
    pub fn with_deadline(&self, timeout: Duration, grace: Duration) -> CancelToken {
        let at = Instant::now() + timeout;
        CancelToken {
            inner: Arc::new(Inner {
                parent: Some(self.clone()),
                deadline: Some(Deadline {
                    at,
                    kill_at: at + grace,
                }),
                ..Inner::default()
            }),
        }
    }

    /// Asks everything to stop gracefully. Returns false if it already was.
    pub fn cancel(&self) -> bool {
        let first = self
            .inner
            .state
            .compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        self.inner.notify.notify_waiters();
        first
    }

    pub fn kill(&self) {
        self.inner.state.store(KILLED, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.state.load(Ordering::SeqCst) >= CANCELLED
            || self.timed_out()
            || self.inner.parent.as_ref().is_some_and(Self::is_cancelled)
    }

    pub fn is_killed(&self) -> bool {
        self.inner.state.load(Ordering::SeqCst) == KILLED
            || self
                .inner
                .deadline
                .as_ref()
                .is_some_and(|d| Instant::now() >= d.kill_at)
            || self.inner.parent.as_ref().is_some_and(Self::is_killed)
    }

    /// Whether this attempt's deadline has passed.
    pub fn timed_out(&self) -> bool {
        self.inner
            .deadline
            .as_ref()
            .is_some_and(|d| Instant::now() >= d.at)
    }

    /// Resolves once cancelled (or killed). Not for tokens with a deadline: it is the run's
    /// token the scheduler waits on.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_token_follows_its_run_and_its_deadline() {
        let run = CancelToken::new();
        let attempt = run.with_deadline(Duration::from_secs(3600), Duration::from_secs(1));
        assert!(!attempt.is_cancelled() && !attempt.timed_out());
        run.cancel();
        assert!(attempt.is_cancelled() && !attempt.is_killed() && !attempt.timed_out());
        run.kill();
        assert!(attempt.is_killed());

        let run = CancelToken::new();
        let attempt = run.with_deadline(Duration::ZERO, Duration::from_millis(50));
        assert!(attempt.timed_out() && attempt.is_cancelled() && !attempt.is_killed());
        assert!(
            !run.is_cancelled(),
            "a timeout stops the attempt, not the run"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(attempt.is_killed());
    }
}
