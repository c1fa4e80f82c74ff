//! A tiny fork-join pool for the CPU backend's batch shards, kept alive for a whole training run
//! (spawning a thread per batch costs tens of microseconds; a batch takes about one millisecond).
//!
//! Work is claimed, not assigned: every thread, the caller included, takes the next unclaimed
//! shard until none is left. On a shared machine a helper that is not scheduled simply claims
//! nothing and the caller does its share, instead of the whole batch waiting for it. Which
//! thread ran a shard never shows in the result: each shard writes only its own buffers.
//!
//! Safe code only: helpers live in a `std::thread::scope` around the run, and the claim ticket
//! carries the batch's generation, so a late helper can never claim a shard of a newer batch
//! with an older batch's view.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long an idle helper spins for the next batch before it sleeps: long enough to cover the
/// optimizer step and batch gathering between two batches.
const SPIN: Duration = Duration::from_micros(200);

/// Ticket layout: generation (32 bits) | shard count (16 bits) | next shard (16 bits).
pub const MAX_SHARDS: usize = u16::MAX as usize;

fn pack(generation: u32, count: usize, next: usize) -> u64 {
    ((generation as u64) << 32) | ((count as u64) << 16) | next as u64
}

fn unpack(t: u64) -> (u32, usize, usize) {
    (
        (t >> 32) as u32,
        ((t >> 16) & 0xFFFF) as usize,
        (t & 0xFFFF) as usize,
    )
}

#[derive(Default)]
pub struct Pool {
    ticket: AtomicU64,
    done: AtomicUsize,
    generation: AtomicU64,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

impl Pool {
    /// Runs `work(i)` for every `i < count` on the calling thread and any serving helpers, and
    /// returns once all are done. One caller at a time.
    pub fn run(&self, count: usize, work: &(dyn Fn(usize) + Sync)) {
        assert!(count <= MAX_SHARDS, "too many shards");
        let generation = self.generation.load(Ordering::Relaxed).wrapping_add(1);
        self.done.store(0, Ordering::Relaxed);
        self.ticket
            .store(pack(generation as u32, count, 0), Ordering::Release);
        self.generation.store(generation, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        self.work(generation as u32, work);
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < count {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // A helper holds a shard but lost its core: let it run.
                std::thread::yield_now();
            }
        }
    }

    /// Claims and runs shards of batch `generation` until none is left.
    fn work(&self, generation: u32, work: &(dyn Fn(usize) + Sync)) {
        let mut t = self.ticket.load(Ordering::Acquire);
        loop {
            let (g, count, next) = unpack(t);
            if g != generation || next >= count {
                return;
            }
            match self
                .ticket
                .compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    work(next);
                    self.done.fetch_add(1, Ordering::Release);
                    t = self.ticket.load(Ordering::Acquire);
                }
                Err(now) => t = now,
            }
        }
    }

    /// A helper's loop: waits for each new batch (spinning briefly, then sleeping), helps with
    /// it, until [`Pool::stop`].
    pub fn serve(&self, work: &(dyn Fn(usize) + Sync)) {
        let mut seen = self.generation.load(Ordering::Acquire);
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let g = self.generation.load(Ordering::Acquire);
                if g != seen {
                    seen = g;
                    break;
                }
                spins += 1;
                if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                    let mut guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
                    self.sleepers.fetch_add(1, Ordering::SeqCst);
                    while self.generation.load(Ordering::SeqCst) == seen
                        && !self.shutdown.load(Ordering::SeqCst)
                    {
                        guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    spins = 0;
                } else {
                    std::hint::spin_loop();
                }
            }
            self.work(seen as u32, work);
        }
    }

    /// Makes every [`Pool::serve`] return.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let _guard = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }
}

/// Runs `body` with `helpers` threads serving `pool` with `work`; stops them when `body`
/// returns or unwinds.
pub fn with_helpers<R>(
    pool: &Pool,
    helpers: usize,
    work: &(dyn Fn(usize) + Sync),
    body: impl FnOnce() -> R,
) -> R {
    if helpers == 0 {
        return body();
    }
    struct StopOnDrop<'a>(&'a Pool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    std::thread::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|| pool.serve(work));
        }
        let _stop = StopOnDrop(pool);
        body()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_runs_once_per_batch() {
        let pool = Pool::default();
        let hits: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
        let work = |i: usize| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        };
        with_helpers(&pool, 3, &work, || {
            for round in 1..=200 {
                pool.run(7, &work);
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round));
                if round % 50 == 0 {
                    // Let the helpers fall asleep, then wake them.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
    }
}
