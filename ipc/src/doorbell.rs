//! Doorbells: how one side of a ring tells the other that there is work, without a syscall
//! unless the other side is asleep.
//!
//! A [`Bell`] is one 32-bit futex word owned by the *waiting* side. The waiter spins for a
//! bounded, adaptive time ([`AdaptiveSpin`]) checking its ring; if nothing arrives it announces
//! that it is going to sleep ([`Bell::prepare`]), checks the ring once more with
//! [`crate::ring::Consumer::recheck`], and sleeps on the word ([`Bell::sleep`]). The notifier
//! publishes its ring index ([`crate::ring::Producer::publish`]) and then calls
//! [`Bell::notify`], which makes the `FUTEX_WAKE` syscall only if the waiter announced sleep.
//!
//! No wakeup is lost, and the argument needs only acquire/release (which loom models exactly,
//! unlike `SeqCst` fences): the publish and the recheck are both read-modify-writes on the ring's
//! tail with `AcqRel`, so one of them comes first in the tail's modification order.
//!
//! * Recheck first: the publish reads from it, so the waiter's `SLEEPING` store (sequenced
//!   before the recheck) happens-before the notifier's load of the bell, which sees it and wakes.
//! * Publish first: the recheck reads the new tail, and the waiter cancels its sleep.
//!
//! `tests/loom.rs` checks this. The word is in shared memory, so the peer may write anything
//! into it; a garbage value only costs its own channel a spurious wake or a missed one
//! (bounded by the waiter's timeout).

use std::time::{Duration, Instant};

use crate::sync::{spin_hint, AtomicU32, Ordering};

const AWAKE: u32 = 0;
const SLEEPING: u32 = 1;

/// A futex word saying whether its owner is asleep.
#[repr(C)]
pub struct Bell {
    word: AtomicU32,
    #[cfg(loom)]
    emu: loom_futex::Futex,
}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bell")
            .field("word", &self.word.load(Ordering::Relaxed))
            .finish()
    }
}

impl Bell {
    /// A bell in ordinary memory (loom models).
    #[cfg(loom)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            word: AtomicU32::new(AWAKE),
            emu: loom_futex::Futex::new(),
        }
    }

    /// Waiter: announce that we are about to sleep. The caller must then check its ring with
    /// [`crate::ring::Consumer::recheck`] and call [`Bell::sleep`] if it is still empty or
    /// [`Bell::cancel`] if not.
    pub fn prepare(&self) {
        // Ordered before the notifier's load by the recheck's release (see the module docs).
        self.word.store(SLEEPING, Ordering::Relaxed);
    }

    /// Waiter: work arrived between `prepare` and `sleep`; stay awake.
    pub fn cancel(&self) {
        self.word.store(AWAKE, Ordering::Relaxed);
    }

    /// Waiter: sleep until notified, `timeout` passes, or a spurious wake. Returns with the bell
    /// reset to awake; the caller re-checks its ring in every case.
    pub fn sleep(&self, timeout: Option<Duration>) {
        #[cfg(not(loom))]
        crate::sys::futex_wait(&self.word, SLEEPING, timeout);
        #[cfg(loom)]
        {
            let _ = timeout; // a lost wakeup must show up as a deadlock in the model
            self.emu.wait(&self.word, SLEEPING);
        }
        self.word.store(AWAKE, Ordering::Relaxed);
    }

    /// Notifier: call after [`crate::ring::Producer::publish`]. Wakes the waiter if it
    /// announced sleep and returns whether a wake syscall was made.
    pub fn notify(&self) -> bool {
        // Sees the waiter's SLEEPING store whenever its recheck came before our publish.
        if self.word.load(Ordering::Relaxed) == AWAKE {
            return false;
        }
        // Only the notifier that flips SLEEPING to AWAKE wakes; a failed exchange writes nothing.
        if self
            .word
            .compare_exchange(SLEEPING, AWAKE, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        #[cfg(not(loom))]
        crate::sys::futex_wake(&self.word);
        #[cfg(loom)]
        self.emu.wake();
        true
    }

    /// Whether the owner has announced sleep (a hint; the peer may have written anything).
    pub fn is_sleeping(&self) -> bool {
        self.word.load(Ordering::Relaxed) == SLEEPING
    }

    /// Address of the futex word, for an io_uring `FUTEX_WAIT` on it. Valid while the channel
    /// mapping is.
    #[cfg(not(loom))]
    pub fn futex_word(&self) -> *const u32 {
        self.word.as_ptr().cast_const()
    }

    /// The value a waiter sleeps on (for an io_uring `FUTEX_WAIT`).
    pub const SLEEPING: u32 = SLEEPING;
}

/// Spins until `ready()` returns true or `limit` passes; returns whether it became ready.
/// With `yield_every`, hands the CPU to any other task that wants it that often (one
/// `sched_yield`, which returns at once when none does): a long spin then delays nobody
/// sharing the core by more than that.
pub fn spin_until(
    limit: Duration,
    yield_every: Option<Duration>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    if ready() {
        return true;
    }
    if cfg!(loom) || limit.is_zero() {
        return false;
    }
    let start = Instant::now();
    let mut yielded = start;
    loop {
        for _ in 0..16 {
            spin_hint();
            if ready() {
                return true;
            }
        }
        let now = Instant::now();
        if now.duration_since(start) >= limit {
            return false;
        }
        if let Some(every) = yield_every {
            if now.duration_since(yielded) >= every {
                std::thread::yield_now();
                yielded = now;
            }
        }
    }
}

/// A spin limit that follows how long waits actually take.
///
/// After each wait the caller reports its total duration (spin plus sleep). Waits shorter than
/// `max` pull the limit towards twice their length, so a side whose peer answers in 3 µs spins
/// about 6 µs and never sleeps; waits longer than `max` halve the limit, so a side whose peer
/// takes milliseconds stops burning its core and sleeps at once.
#[derive(Debug, Clone)]
pub struct AdaptiveSpin {
    limit_ns: u32,
    min_ns: u32,
    max_ns: u32,
}

impl AdaptiveSpin {
    /// A spin limit that adapts between `min` and `max`, starting at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let clamp = |d: Duration| u32::try_from(d.as_nanos()).unwrap_or(u32::MAX);
        let max_ns = clamp(max);
        Self {
            limit_ns: max_ns,
            min_ns: clamp(min).min(max_ns),
            max_ns,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> Duration {
        Duration::from_nanos(u64::from(self.limit_ns))
    }

    /// Spins until `ready()` returns true or the limit passes; returns whether it became ready.
    pub fn spin(&self, ready: impl FnMut() -> bool) -> bool {
        spin_until(self.limit(), None, ready)
    }

    /// Records the total length of a finished wait and adapts the limit.
    pub fn record(&mut self, waited: Duration) {
        let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        if waited <= u64::from(self.max_ns) {
            let target = (2 * waited).clamp(u64::from(self.min_ns), u64::from(self.max_ns));
            // Move halfway: one odd wait does not swing the limit.
            let next = (u64::from(self.limit_ns) + target) / 2;
            self.limit_ns = u32::try_from(next).unwrap_or(self.max_ns);
        } else {
            self.limit_ns = (self.limit_ns / 2).max(self.min_ns);
        }
    }
}

#[cfg(loom)]
mod loom_futex {
    //! A futex for loom: wait blocks only if the word still holds the expected value, checked
    //! under the same lock that `wake` takes, exactly like the kernel's hash-bucket lock.
    use loom::sync::{Condvar, Mutex};

    use super::{AtomicU32, Ordering};

    #[derive(Debug)]
    pub(super) struct Futex {
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl Futex {
        pub(super) fn new() -> Self {
            Self {
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }
        }

        pub(super) fn wait(&self, word: &AtomicU32, expected: u32) {
            let guard = self.lock.lock().unwrap();
            if word.load(Ordering::SeqCst) == expected {
                drop(self.cv.wait(guard).unwrap());
            }
        }

        pub(super) fn wake(&self) {
            let _guard = self.lock.lock().unwrap();
            self.cv.notify_all();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fast_waits_raise_the_limit_slow_ones_lower_it() {
        let mut spin = AdaptiveSpin::new(Duration::from_micros(1), Duration::from_micros(50));
        for _ in 0..20 {
            spin.record(Duration::from_millis(5));
        }
        assert_eq!(spin.limit(), Duration::from_micros(1));
        for _ in 0..20 {
            spin.record(Duration::from_micros(10));
        }
        let limit = spin.limit();
        assert!(
            limit >= Duration::from_micros(19) && limit <= Duration::from_micros(20),
            "{limit:?}"
        );
    }

    #[test]
    fn spin_returns_when_ready_and_gives_up_at_the_limit() {
        let spin = AdaptiveSpin::new(Duration::ZERO, Duration::from_micros(200));
        let mut calls = 0;
        assert!(spin.spin(|| {
            calls += 1;
            calls == 3
        }));
        let start = Instant::now();
        assert!(!spin.spin(|| false));
        assert!(start.elapsed() >= Duration::from_micros(200));
    }
}
