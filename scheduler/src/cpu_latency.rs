//! Idle CPUs poll while a shard is busy: each shard holds its own CPU-latency request
//! (`/dev/cpu_dma_latency`, the kernel's PM QoS interface) at 0 µs from the moment it hands an
//! invocation to an environment until [`EngineConfig::idle_cpu_poll`] has passed without
//! another one, then lets it go (in its housekeeping, so up to 100 ms later). While any shard
//! holds it, the kernel's idle governor keeps idle CPUs in their polling state instead of
//! halting them, so a CPU that the next environment start, wake-up or response lands on runs
//! it at once: on a KVM guest a halted CPU takes about 23 µs to wake, several times per cold
//! start (the shard asking the zygote, the child answering, the response). The kernel keeps the
//! strictest of all requests, drops a request when its descriptor is closed (the daemon
//! exiting or crashing included), and wakes every idle CPU when the strictest one changes, so
//! from the first invocation of a busy spell on (not for that one's own start) idle CPUs poll.
//! The window counts from invocations handed over, not from their answers: an invocation that
//! runs longer than it is answered by CPUs that halt again, which costs it microseconds.
//!
//! The cost is CPU time: an idle CPU polls instead of sleeping for the window after each
//! invocation (on a virtual machine, the host sees that vCPU busy). It takes effect only where
//! the kernel has a cpuidle driver (`/sys/devices/system/cpu/cpuidle/current_driver`); opening
//! the device needs root, and without it (rootless mode) CPUs idle as usual.
//!
//! [`EngineConfig::idle_cpu_poll`]: crate::EngineConfig::idle_cpu_poll

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether a shard already warned that the device cannot be opened.
static WARNED: AtomicBool = AtomicBool::new(false);
/// Whether a shard already said that the kernel has no cpuidle driver.
static NO_DRIVER_NOTED: AtomicBool = AtomicBool::new(false);
/// The kernel's CPU-latency request device.
const DEVICE: &str = "/dev/cpu_dma_latency";
/// The request held while busy: no idle state with a nonzero exit latency.
const BUSY_US: i32 = 0;
/// Written when quiet: `PM_QOS_DEFAULT_VALUE`, which the kernel reads as "back to the
/// default" (no constraint).
const QUIET_US: i32 = -1;

/// The kernel's cpuidle driver (`haltpoll` on a KVM guest that offers it, `intel_idle`,
/// `acpi_idle`), or `None` where there is none: then a CPU-latency request changes nothing
/// (idle CPUs halt, or always poll where the kernel was booted with `idle=poll`).
pub fn cpuidle_driver() -> Option<String> {
    driver_name(&std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver").ok()?)
}

/// The driver `current_driver` names (the kernel writes `none` when it has none).
fn driver_name(current_driver: &str) -> Option<String> {
    let driver = current_driver.trim();
    (!driver.is_empty() && driver != "none").then(|| driver.to_owned())
}

/// One CPU-latency request of this process, which the kernel drops when it is dropped. The
/// shards hold one each (see the module docs); `hearth-bench` holds one while its limits and
/// peers run, so that they run under the same condition as hearth's scenarios.
#[derive(Debug)]
pub struct CpuLatencyRequest {
    device: File,
}

impl CpuLatencyRequest {
    /// Opens a request at the kernel's default (no constraint: nothing changes yet). Needs
    /// root.
    pub fn open() -> std::io::Result<Self> {
        let device = std::fs::OpenOptions::new().write(true).open(DEVICE)?;
        Ok(Self { device })
    }

    /// Asks for idle CPUs that poll (`true`: 0 µs) or back for the default.
    pub fn poll(&mut self, poll: bool) -> std::io::Result<()> {
        let us = if poll { BUSY_US } else { QUIET_US };
        // The device takes the value as 4 bytes in native order.
        self.device.write_all(&us.to_ne_bytes())
    }
}

/// One shard's request.
#[derive(Debug)]
pub(crate) struct CpuLatency {
    /// The open request; `None` when turned off or the device cannot be opened.
    request: Option<CpuLatencyRequest>,
    /// How long after the last invocation the request is held.
    window: Duration,
    /// Whether the request is at [`BUSY_US`] now.
    held: bool,
    /// When the last invocation was handed to an environment.
    last_active: Instant,
}

impl CpuLatency {
    /// A request that polls for `window` after each invocation (zero: never).
    pub(crate) fn new(window: Duration) -> Self {
        let request = if window.is_zero() {
            None
        } else {
            match CpuLatencyRequest::open() {
                Ok(request) => {
                    if cpuidle_driver().is_none() && !NO_DRIVER_NOTED.swap(true, Ordering::Relaxed)
                    {
                        tracing::info!(
                            "the kernel has no cpuidle driver: a CPU-latency request changes \
                             nothing (idle CPUs halt, or always poll with idle=poll), so \
                             idle_cpu_poll has no effect on this machine"
                        );
                    }
                    Some(request)
                }
                Err(e) => {
                    // Expected without root; worth a warning (once) with it.
                    // SAFETY: geteuid cannot fail.
                    let root = unsafe { libc::geteuid() } == 0;
                    if root && !WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "{DEVICE} cannot be opened: idle CPUs halt as usual");
                    } else {
                        tracing::debug!(error = %e, "{DEVICE} cannot be opened: idle CPUs halt as usual");
                    }
                    None
                }
            }
        };
        Self {
            request,
            window,
            held: false,
            last_active: Instant::now(),
        }
    }

    /// An invocation at `now`: holds the request if it was let go (one write, at the start of
    /// a busy spell).
    #[inline]
    pub(crate) fn active(&mut self, now: Instant) {
        self.last_active = now;
        if !self.held && self.request.is_some() {
            self.set(true);
        }
    }

    /// Lets the request go once `window` has passed since the last invocation (housekeeping).
    pub(crate) fn maintain(&mut self, now: Instant) {
        if self.held && now.saturating_duration_since(self.last_active) >= self.window {
            self.set(false);
        }
    }

    /// Whether the request is held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> bool {
        self.held
    }

    fn set(&mut self, poll: bool) {
        let Some(request) = &mut self.request else {
            return;
        };
        match request.poll(poll) {
            Ok(()) => self.held = poll,
            Err(e) => {
                tracing::debug!(error = %e, "writing {DEVICE} failed: idle CPUs halt as usual");
                self.request = None;
                self.held = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_a_cpuidle_driver_says_none() {
        assert_eq!(driver_name("none\n"), None);
        assert_eq!(driver_name(""), None);
        assert_eq!(driver_name("haltpoll\n").as_deref(), Some("haltpoll"));
    }

    #[test]
    fn off_without_a_window() {
        let mut off = CpuLatency::new(Duration::ZERO);
        off.active(Instant::now());
        assert!(!off.held());
    }
}
