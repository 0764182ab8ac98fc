//! The machine's physical limits, measured in the same run as hearth so that hearth's numbers
//! can be read as ratios: a shared-memory round trip between two spinning processes on two
//! cores, the same round trip when each side sleeps on a futex, and fork + exit + wait.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::report::Latencies;
use crate::sys::{self, SharedPage};

/// Two CPUs to run the two sides on (the same one twice on a single-CPU machine).
pub fn cpu_pair() -> (usize, usize) {
    let cpus = sys::allowed_cpus();
    (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]))
}

const STOP: u32 = u32::MAX;

/// Round trip through two cache lines, both sides spinning.
pub fn spin_pingpong(n: u64) -> (Latencies, Duration) {
    on_pinned_thread(move |a, b| {
        let page = SharedPage::new(4096).expect("shared page");
        let (ping, pong) = (page.word(0), page.word(128));
        let child = sys::fork_child(|| {
            sys::pin(b);
            let mut seen = 0;
            loop {
                let now = ping.load(Ordering::Acquire);
                if now == seen {
                    std::hint::spin_loop();
                    continue;
                }
                if now == STOP {
                    return;
                }
                seen = now;
                pong.store(seen, Ordering::Release);
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
            ping.store(i, Ordering::Release);
            while pong.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            if u64::from(i) > warmup {
                lat.record(t0.elapsed());
            }
        }
        let elapsed = start.elapsed();
        ping.store(STOP, Ordering::Release);
        sys::wait_child(child);
        (lat, elapsed)
    })
}

/// Round trip when each side sleeps on a futex until the other wakes it.
pub fn futex_pingpong(n: u64) -> (Latencies, Duration) {
    on_pinned_thread(move |a, b| {
        let page = SharedPage::new(4096).expect("shared page");
        let (ping, pong) = (page.word(0), page.word(128));
        let child = sys::fork_child(|| {
            sys::pin(b);
            let mut seen = 0;
            loop {
                let now = ping.load(Ordering::Acquire);
                if now == seen {
                    sys::futex_wait(ping, seen);
                    continue;
                }
                if now == STOP {
                    return;
                }
                seen = now;
                pong.store(seen, Ordering::Release);
                sys::futex_wake(pong);
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
            ping.store(i, Ordering::Release);
            sys::futex_wake(ping);
            loop {
                let now = pong.load(Ordering::Acquire);
                if now == i {
                    break;
                }
                sys::futex_wait(pong, now);
            }
            if u64::from(i) > warmup {
                lat.record(t0.elapsed());
            }
        }
        let elapsed = start.elapsed();
        ping.store(STOP, Ordering::Release);
        sys::futex_wake(ping);
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
