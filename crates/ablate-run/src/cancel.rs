use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// Shared cancellation state: the first Ctrl-C cancels (no new work starts; running work is
/// asked to stop and keeps nothing half-written), the second kills (child processes get
/// SIGKILL at once).
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: AtomicU8,
    notify: Notify,
}

const RUNNING: u8 = 0;
const CANCELLED: u8 = 1;
const KILLED: u8 = 2;

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
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
    }

    pub fn is_killed(&self) -> bool {
        self.inner.state.load(Ordering::SeqCst) == KILLED
    }

    /// Resolves once cancelled (or killed).
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
