//! The machine's physical limits, measured in the same run as hearth so that hearth's numbers
//! can be read as ratios: a shared-memory round trip between two spinning processes on two
//! cores, the same round trip when each side sleeps on a futex, and fork + exit + wait.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::report::Latencies;
use crate::sys::{self, SharedPage};

/// Two CPUs to run the two sides on (the same one twice on a single-CPU machine).
pub fn cpu_pair() -> (usize, usize) {
    let cpus = sys::allowed_cpus();
    (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]))
}

const STOP: u32 = u32::MAX;

/// How a side of a ping-pong waits for the other.
#[derive(Clone, Copy)]
enum Wait {
    /// Spin on the shared word.
    Spin,
    /// Sleep on it with `FUTEX_WAIT`; the other side wakes it with `FUTEX_WAKE`.
    Futex,
}

impl Wait {
    /// Waits until `word` no longer holds `seen`; returns its new value.
    fn change(self, word: &AtomicU32, seen: u32) -> u32 {
        loop {
            let now = word.load(Ordering::Acquire);
            if now != seen {
                return now;
            }
            match self {
                Wait::Spin => std::hint::spin_loop(),
                Wait::Futex => sys::futex_wait(word, seen),
            }
        }
    }

    /// Publishes `value` in `word` and wakes a sleeping waiter.
    fn publish(self, word: &AtomicU32, value: u32) {
        word.store(value, Ordering::Release);
        if let Wait::Futex = self {
            sys::futex_wake(word);
        }
    }
}

/// Round trip through two cache lines, both sides spinning.
pub fn spin_pingpong(n: u64) -> (Latencies, Duration) {
    pingpong(n, Wait::Spin)
}

/// Round trip when each side sleeps on a futex until the other wakes it.
pub fn futex_pingpong(n: u64) -> (Latencies, Duration) {
    pingpong(n, Wait::Futex)
}

/// Two processes on two CPUs pass a counter back and forth through shared memory; each round
/// trip is timed on the first.
fn pingpong(n: u64, wait: Wait) -> (Latencies, Duration) {
    on_pinned_thread(move |a, b| {
        let page = SharedPage::new(4096).expect("shared page");
        let (ping, pong) = (page.word(0), page.word(128));
        let child = sys::fork_child(|| {
            sys::pin(b);
            let mut seen = 0;
            loop {
                seen = wait.change(ping, seen);
                if seen == STOP {
                    return;
                }
                wait.publish(pong, seen);
            }
        })
        .expect("fork");
        sys::pin(a);
        let mut lat = Latencies::new();
        let warmup = n / 10;
        let mut start = Instant::now();
        for i in 1..=u32::try_from(n + warmup).unwrap_or(u32::MAX - 1) {
            if u64::from(i) == warmup + 1 {
                start = Instant::now();
            }
            let t0 = Instant::now();
            wait.publish(ping, i);
            let mut seen = i - 1;
            while seen != i {
                seen = wait.change(pong, seen);
            }
            if u64::from(i) > warmup {
                lat.record(t0.elapsed());
            }
        }
        let elapsed = start.elapsed();
        wait.publish(ping, STOP);
        sys::wait_child(child);
        (lat, elapsed)
    })
}

/// fork + `_exit(0)` + waitpid.
pub fn fork(n: u64) -> (Latencies, Duration) {
    on_pinned_thread(move |_, _| {
        let mut lat = Latencies::new();
        for _ in 0..n / 10 {
            sys::fork_exit_wait().expect("fork");
        }
        let start = Instant::now();
        for _ in 0..n {
            let t0 = Instant::now();
            sys::fork_exit_wait().expect("fork");
            lat.record(t0.elapsed());
        }
        (lat, start.elapsed())
    })
}

/// Runs `f(cpu_a, cpu_b)` on a fresh thread pinned to `cpu_a`, leaving the caller's affinity
/// alone.
fn on_pinned_thread<R: Send + 'static>(f: impl FnOnce(usize, usize) -> R + Send + 'static) -> R {
    let (a, b) = cpu_pair();
    std::thread::spawn(move || {
        sys::pin(a);
        f(a, b)
    })
    .join()
    .expect("limit thread")
}
