//! Atomics, swapped for loom's under `cfg(loom)` so the ring and doorbell protocols
//! can be model-checked with the same code that runs in production.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(not(loom))]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}
