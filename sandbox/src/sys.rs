//! Raw syscalls. All of this crate's `unsafe` lives here.
//!
//! The environment's first process is started with `clone3(CLONE_VM)`, like `posix_spawn`: it
//! runs on its own small stack inside the scheduler's address space until it calls `execve`,
//! so starting an environment costs the same whatever the scheduler's size (no page tables
//! copied, no copy-on-write faults afterwards). The price is that the child shares the
//! parent's memory and thread-local storage until exec, so the code it runs must not allocate,
//! lock, panic or touch `errno`. The syscalls here are therefore made with inline assembly and
//! return `-errno` directly instead of going through libc.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("hearth's sandbox supports x86_64 only (raw syscalls, seccomp allowlists)");

/// An errno value returned by a raw syscall.
pub(crate) type Errno = i32;

/// Makes a raw syscall with up to six arguments.
///
/// # Safety
///
/// The arguments must be valid for syscall `nr`: pointers point to memory of the size and
/// mutability the kernel expects, and the call must not break invariants Rust relies on
/// (e.g. unmapping memory that is still borrowed).
#[inline(always)]
pub(crate) unsafe fn syscall6(nr: i64, a: [usize; 6]) -> Result<usize, Errno> {
    let ret: i64;
    // SAFETY: the `syscall` instruction with the Linux x86_64 calling convention; rcx and r11
    // are clobbered by the instruction; the caller vouches for the arguments.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (-4095..0).contains(&ret) {
        Err(i32::try_from(-ret).unwrap_or(libc::EINVAL))
    } else {
        Ok(usize::try_from(ret).unwrap_or(0))
    }
}

/// `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// `clone3` with a fresh stack: the child calls `entry(arg)` on that stack and never returns;
/// the parent gets the child's pid.
///
/// # Safety
///
/// `args.stack`/`args.stack_size` describe a mapped, writable, 16-byte aligned stack that
/// stays mapped until the child execs or exits. With `CLONE_VM`, `entry` must only use memory
/// that stays valid and unmodified until then, and must not return.
pub(crate) unsafe fn clone3_on_stack(
    args: &mut CloneArgs,
    entry: extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> Result<i32, Errno> {
    let ret: i64;
    // SAFETY: the parent path is a plain syscall. In the child (rax == 0) the kernel has set
    // rsp to the top of the new stack; we clear the frame pointer and call `entry(arg)`, which
    // never returns (ud2 traps if it does). r12/r13 are preserved across the syscall.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_mut(args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        Err(i32::try_from(-ret).unwrap_or(libc::EINVAL))
    } else {
        Ok(i32::try_from(ret).unwrap_or(i32::MAX))
    }
}

/// A private anonymous stack for a `CLONE_VM` child, with a guard page below it.
#[derive(Debug)]
pub(crate) struct Stack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the stack is plain memory owned by this value.
unsafe impl Send for Stack {}

impl Stack {
    const GUARD: usize = 4096;

    pub(crate) fn new(size: usize) -> io::Result<Self> {
        let len = size + Self::GUARD;
        // SAFETY: a fresh anonymous mapping; it aliases nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // SAFETY: the guard page is the first page of our own mapping.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Lowest usable address (above the guard page).
    pub(crate) fn bottom(&self) -> u64 {
        self.base as u64 + Self::GUARD as u64
    }

    pub(crate) fn size(&self) -> u64 {
        (self.len - Self::GUARD) as u64
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly our mapping; the child that used it has exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Blocks every signal on the calling thread; restores the old mask on drop. Made with the raw
/// syscall: libc's wrappers leave its two internal signals (32 and 33) unblocked.
pub(crate) struct SignalsBlocked {
    old: u64,
}

impl SignalsBlocked {
    pub(crate) fn new() -> Self {
        let all: u64 = u64::MAX;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask with 8-byte kernel sigsets on our stack.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                std::ptr::from_ref(&all),
                std::ptr::from_mut(&mut old),
                8usize,
            )
        };
        Self { old }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved in `new`.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                std::ptr::from_ref(&self.old),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
}

/// Signals 1-64 whose disposition in this process is not the default (a handler, or ignored).
/// Read with the raw syscall: libc hides its two internal signals.
pub(crate) fn signals_not_default() -> Vec<i32> {
    (1..=64)
        .filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
        .filter(|&sig| {
            // The kernel's struct sigaction: handler, flags, restorer, mask.
            let mut old = [0u64; 4];
            // SAFETY: querying only (new action NULL); `old` has room for the kernel struct.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<u64>(),
                    old.as_mut_ptr(),
                    8usize,
                )
            };
            ret == 0 && old[0] != 0
        })
        .collect()
}

/// `pipe2(O_CLOEXEC)`; with `nonblocking_read`, the read end is also non-blocking.
pub(crate) fn pipe_cloexec(nonblocking_read: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned a fresh fd that we now own.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    if nonblocking_read {
        // SAFETY: plain fcntl on our own fd.
        if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((read, write))
}

/// Adopts an fd returned by the kernel.
///
/// # Safety
///
/// `fd` must be open and owned by nobody else.
pub(crate) unsafe fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `pidfd_send_signal(pidfd, sig)`.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed fd; no pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
    /// It exited, and the process that could reap it (a zygote) did not say how.
    Unknown,
}

impl std::fmt::Display for ExitStatus {
    /// Worded like Lambda's `Runtime.ExitError` messages ("exit status 1", "signal: killed").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Exited(code) => write!(f, "exit status {code}"),
            Self::Unknown => f.write_str("exit status unknown"),
            Self::Signaled(sig) => {
                let name = match sig {
                    libc::SIGKILL => "killed",
                    libc::SIGABRT => "aborted",
                    libc::SIGSEGV => "segmentation fault",
                    libc::SIGBUS => "bus error",
                    libc::SIGTERM => "terminated",
                    libc::SIGSYS => "bad system call",
                    libc::SIGFPE => "floating point exception",
                    libc::SIGILL => "illegal instruction",
                    _ => return write!(f, "signal: {sig}"),
                };
                write!(f, "signal: {name}")
            }
        }
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED | __WALL [| WNOHANG])`.
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain data.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::__WALL | if block { 0 } else { libc::WNOHANG };
    loop {
        let id = libc::id_t::try_from(pidfd.as_raw_fd()).unwrap_or_default();
        // SAFETY: `info` is valid for writes; the id is a borrowed pidfd.
        let ret = unsafe { libc::waitid(libc::P_PIDFD, id, &mut info, flags) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        break;
    }
    // SAFETY: waitid filled `info` (si_pid is zero if nothing has exited yet under WNOHANG).
    let pid = unsafe { info.si_pid() };
    // SAFETY: as above; for CLD_* codes si_status is the exit code or signal.
    let status = unsafe { info.si_status() };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ExitStatus::Exited(status),
        _ => ExitStatus::Signaled(status),
    }))
}

/// Reads up to `buf.len()` bytes without blocking; `Ok(None)` if nothing is there yet.
pub(crate) fn read_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(usize::try_from(n).unwrap_or(0)))
}

/// `unshare(flags)` for the calling thread.
pub(crate) fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer flags.
    if unsafe { libc::unshare(flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the calling process has `CAP_SYS_ADMIN` in its user namespace (hearth runs in
/// "root" mode then; otherwise it starts environments in user namespaces).
pub(crate) fn has_cap_sys_admin() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for two data structs, as the ABI requires.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    const CAP_SYS_ADMIN: u32 = 21;
    ret == 0 && data[0].effective & (1 << CAP_SYS_ADMIN) != 0
}

/// A CPU set holding `cpus` (numbers past `CPU_SETSIZE` are ignored).
pub(crate) fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_SET stays inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Sets the CPU affinity of process `pid`.
pub(crate) fn set_affinity(pid: i32, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks this process not dumpable (no core dumps, /proc files owned by root, no ptrace by
/// non-root users).
pub(crate) fn set_not_dumpable() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// A sealed (read-only from now on) memfd holding `bytes`, close-on-exec.
pub fn sealed_memfd(name: &std::ffi::CStr, bytes: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the flags are constants.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { own_fd(fd) };
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on an open fd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

/// Whether the process behind `pidfd` has exited (it need not be our child).
pub(crate) fn pidfd_exited(pidfd: BorrowedFd<'_>, wait: Option<std::time::Duration>) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = wait.map_or(-1, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return n > 0;
        }
    }
}

/// The pid and parent pid (in our pid namespace) of the process behind `pidfd`; `None` if
/// `pidfd` is not a pidfd (or its process is gone).
pub(crate) fn pidfd_info(pidfd: BorrowedFd<'_>) -> Option<(i32, i32)> {
    // PIDFD_GET_INFO (Linux 6.13+). Its struct pidfd_info, first version (64 bytes): mask
    // (in: which fields), cgroupid, pid, tgid, ppid (u32 each), ... as seen by the caller
    // (read here as little-endian u64 words: x86_64).
    const PIDFD_GET_INFO: u64 = 0xC040_FF0B; // _IOWR(0xFF, 11, 64 bytes)
    const PIDFD_INFO_PID: u64 = 1;
    let mut info = [0u64; 8];
    info[0] = PIDFD_INFO_PID;
    // SAFETY: the ioctl writes at most the 64 bytes its number encodes into `info`.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO, info.as_mut_ptr()) };
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    if r == 0 && info[0] & PIDFD_INFO_PID != 0 {
        let pid = (info[2] & 0xffff_ffff) as u32 as i32;
        let tgid = (info[2] >> 32) as u32 as i32;
        let ppid = (info[3] & 0xffff_ffff) as u32 as i32;
        // A pidfd of a thread (PIDFD_THREAD) names a thread, not a process.
        return (pid == tgid).then_some((pid, ppid));
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return None;
    }
    // Older kernels: a pidfd's fdinfo names its pid; its parent is in /proc.
    let fdinfo =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    let pid: i32 = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid = stat
        .rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((pid, ppid))
}

/// An io_uring that can do two things: register buffers (`IORING_REGISTER_BUFFERS`), which
/// pins the pages they cover, and unregister them (`IORING_UNREGISTER_BUFFERS`); one set at a
/// time. A zygote gets one at fd 7 to pin the pages its children write (`hearth_runtime`'s
/// zygote mode): the kernel copies a pinned page into a child at fork instead of sharing it
/// until the child's first write. (It cannot be sent later: the kernel refuses to pass an
/// io_uring over a socket.) The ring is created disabled, restricted to those two registration
/// opcodes and to no submission opcode at all, then enabled: even a process allowed
/// `io_uring_enter` could run no operation on it (the zygote's seccomp policy allows it
/// `io_uring_register` with those two opcodes only). Made by hearth, which may lock memory, it
/// counts no pinned page against a limit: what bounds them is the zygote's memory cgroup.
pub(crate) fn buffer_pinning_ring() -> io::Result<OwnedFd> {
    const IORING_SETUP_R_DISABLED: u32 = 1 << 6;
    const IORING_REGISTER_BUFFERS: u8 = 0;
    const IORING_UNREGISTER_BUFFERS: u8 = 1;
    const IORING_REGISTER_RESTRICTIONS: usize = 11;
    const IORING_REGISTER_ENABLE_RINGS: usize = 12;
    const IORING_RESTRICTION_REGISTER_OP: u16 = 0;
    /// `struct io_uring_params` (120 bytes); `flags` is its third u32.
    #[repr(C)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        rest: [u32; 27],
    }
    /// `struct io_uring_restriction`.
    #[repr(C)]
    struct Restriction {
        opcode: u16,
        op: u8,
        resv: u8,
        resv2: [u32; 3],
    }
    let mut params = Params {
        sq_entries: 0,
        cq_entries: 0,
        flags: IORING_SETUP_R_DISABLED,
        rest: [0; 27],
    };
    // SAFETY: io_uring_setup reads and writes the params struct it is given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1u32,
            std::ptr::addr_of_mut!(params),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: io_uring_setup returned a new fd that nothing else owns.
    let ring = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) };
    let only = [IORING_REGISTER_BUFFERS, IORING_UNREGISTER_BUFFERS].map(|op| Restriction {
        opcode: IORING_RESTRICTION_REGISTER_OP,
        op,
        resv: 0,
        resv2: [0; 3],
    });
    for (op, arg, n) in [
        (
            IORING_REGISTER_RESTRICTIONS,
            only.as_ptr().cast::<c_void>(),
            only.len(),
        ),
        (IORING_REGISTER_ENABLE_RINGS, std::ptr::null(), 0),
    ] {
        // SAFETY: io_uring_register on our ring with a valid (or null, with 0) argument.
        if unsafe { libc::syscall(libc::SYS_io_uring_register, ring.as_raw_fd(), op, arg, n) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(ring: &OwnedFd, op: usize, arg: *const c_void, n: usize) -> io::Result<()> {
        // SAFETY: io_uring_register on our ring with an argument valid for `op` (or null).
        let r = unsafe { libc::syscall(libc::SYS_io_uring_register, ring.as_raw_fd(), op, arg, n) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    #[test]
    fn the_pinning_ring_registers_buffers_and_nothing_else() {
        let ring = buffer_pinning_ring().expect("io_uring (hearth's scheduler needs it too)");
        let page = vec![0u8; 4096];
        let iov = libc::iovec {
            iov_base: page.as_ptr().cast_mut().cast(),
            iov_len: page.len(),
        };
        // IORING_REGISTER_BUFFERS, once at a time; IORING_UNREGISTER_BUFFERS; again.
        let buffers = std::ptr::addr_of!(iov).cast();
        register(&ring, 0, buffers, 1).expect("buffers register");
        let again = register(&ring, 0, buffers, 1).expect_err("one set at a time");
        assert_eq!(again.raw_os_error(), Some(libc::EBUSY), "{again}");
        register(&ring, 1, std::ptr::null(), 0).expect("buffers unregister");
        register(&ring, 0, buffers, 1).expect("buffers register again");
        // IORING_REGISTER_FILES (2), IORING_REGISTER_EVENTFD (4), IORING_REGISTER_PROBE (8) and
        // the restrictions themselves (11) are refused by the ring's restrictions.
        let fds = [ring.as_raw_fd()];
        for (op, arg, n) in [
            (2, fds.as_ptr().cast::<c_void>(), 1),
            (4, fds.as_ptr().cast(), 1),
            (8, page.as_ptr().cast(), 1),
            (11, page.as_ptr().cast(), 1),
        ] {
            let e = register(&ring, op, arg, n).expect_err("refused");
            assert_eq!(e.raw_os_error(), Some(libc::EACCES), "opcode {op}: {e}");
        }
    }
}
