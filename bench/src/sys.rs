//! The raw syscalls the physical-limit scenarios need (fork, shared memory, futex, affinity).
//! All of the bench's `unsafe` is here.

use std::sync::atomic::AtomicU32;

/// A shared anonymous mapping of `len` bytes that survives `fork` (both processes see it).
pub struct SharedPage {
    ptr: *mut u8,
    len: usize,
}

impl SharedPage {
    pub fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh anonymous shared mapping; it aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The atomic at byte `offset` (a multiple of 4, inside the page).
    pub fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len);
        let ptr = self.ptr.wrapping_add(offset).cast::<AtomicU32>();
        // SAFETY: in bounds and aligned (checked above); the mapping lives as long as `self` and
        // is only accessed through atomics.
        unsafe { &*ptr }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `fork()`; the child runs `child` and exits with status 0 without unwinding or running
/// destructors. Returns the child's pid.
pub fn fork_child(child: impl FnOnce()) -> std::io::Result<i32> {
    // SAFETY: the child only runs `child`, which the callers keep to atomics, futex syscalls and
    // sched_setaffinity (async-signal-safe), then _exit.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            child();
            // SAFETY: _exit never returns and runs no destructors.
            unsafe { libc::_exit(0) }
        }
        pid => Ok(pid),
    }
}

/// Waits for a child; returns its raw status.
pub fn wait_child(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: `status` is valid for writes.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// `fork()` + `_exit(0)` in the child + `waitpid` in the parent: the cost the scenario measures.
pub fn fork_exit_wait() -> std::io::Result<()> {
    // SAFETY: the child calls only _exit.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        // SAFETY: _exit never returns.
        0 => unsafe { libc::_exit(0) },
        pid => {
            wait_child(pid);
            Ok(())
        }
    }
}

/// Pins the calling thread (or forked child) to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu < libc::CPU_SETSIZE as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: a valid set for the calling thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
}

/// `FUTEX_WAIT` while `word == expected` (shared: the waker is another process).
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a live aligned u32; no timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// `FUTEX_WAKE` one waiter.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live aligned u32.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// A CPU-latency request at the default (it changes nothing yet), where the engine's idle
/// polling is on by default (`EngineConfig::idle_cpu_poll`) and the device can be opened (root).
fn cpu_latency_request() -> Option<hearth_scheduler::CpuLatencyRequest> {
    if hearth_scheduler::EngineConfig::default()
        .idle_cpu_poll
        .is_zero()
    {
        return None;
    }
    hearth_scheduler::CpuLatencyRequest::open().ok()
}

/// Idle CPUs that poll instead of halting until the request is dropped, as each of hearth's
/// shards asks while busy: the limits and peers run under it so that their ratios to hearth's
/// scenarios compare like with like.
pub fn idle_cpus_poll() -> Option<hearth_scheduler::CpuLatencyRequest> {
    let mut request = cpu_latency_request()?;
    request.poll(true).ok()?;
    Some(request)
}

/// Whether [`idle_cpus_poll`] can hold a request.
pub fn idle_cpus_poll_available() -> bool {
    cpu_latency_request().is_some()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid for writes of its size.
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    let mut cpus = Vec::new();
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: CPU_ISSET reads `set` below CPU_SETSIZE.
        if ok && unsafe { libc::CPU_ISSET(cpu, &set) } {
            cpus.push(cpu);
        }
    }
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// Moves this (single-threaded) process into a private mount namespace in which the cgroup v2
/// mount of a hybrid host (`/sys/fs/cgroup/unified`) is detached, so tools that refuse hybrid
/// layouts (crun) see pure v1. The host's mounts are not changed.
pub fn private_mounts_without_cgroup_v2() -> anyhow::Result<()> {
    // SAFETY: unshare with a flag only; the process has no other threads yet.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        anyhow::bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
    }
    let flags = libc::MS_REC | libc::MS_PRIVATE;
    // SAFETY: NUL-terminated strings; nothing else is passed.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if private != 0 {
        anyhow::bail!("making mounts private: {}", std::io::Error::last_os_error());
    }
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified"))
    });
    if mounted && unified.exists() {
        // SAFETY: a NUL-terminated path; the mount is detached in this namespace only.
        if unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) } != 0 {
            anyhow::bail!(
                "detaching /sys/fs/cgroup/unified: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
