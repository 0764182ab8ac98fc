//! What the environment's first process does between `clone3` and `execve`.
//!
//! [`run`] executes a [`ChildPlan`] that the parent built in advance (every string, path and
//! table already allocated), through the [`Sys`] trait. In production `Sys` is [`RawSys`]:
//! inline-assembly syscalls that neither allocate nor touch `errno` (see [`crate::sys`] for why
//! a `CLONE_VM` child must not). In tests it is a recorder, so the order of the steps is checked
//! without root.
//!
//! The order matters and is the point of this file:
//!
//! 1. reset every signal disposition that is not the default, close every inherited fd the plan
//!    does not use, then wait
//!    for uid/gid maps (user namespace only);
//! 2. join the cgroup (cgroup v1; v2 uses `CLONE_INTO_CGROUP`) and only then create the cgroup
//!    namespace, so its root is the environment's own cgroup;
//! 3. join the empty network namespace;
//! 4. build the root: make mounts private, bind the skeleton, `/usr`, the code (read-only),
//!    a sized tmpfs at `/tmp`, a private `/proc`, device nodes; `pivot_root`; detach the old
//!    root; remount the root read-only;
//! 5. hostname, resource limits; fds 0-2, 3 = channel, 4 = error pipe; close the
//!    rest;
//! 6. drop the capability bounding set and ambient set (needs `CAP_SETPCAP`, so before the uid
//!    switch), clear groups, switch gid and uid (this clears the remaining capabilities), clear
//!    them explicitly anyway, ask for SIGKILL if the scheduler thread dies (after the uid
//!    switch, which would clear it), set `no_new_privs`;
//! 7. landlock (needs `no_new_privs`), unblock signals, seccomp last (it would deny the
//!    syscalls above), `execve`.

use std::ffi::{c_char, CStr, CString};
use std::os::fd::RawFd;

use crate::step::Step;
use crate::sys::{syscall6, Errno};

/// A filesystem operation of step 4.
#[derive(Debug)]
pub(crate) enum FsOp {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: u64,
        data: Option<CString>,
        step: Step,
    },
    /// `chdir(path)`.
    Chdir { path: CString, step: Step },
    /// `pivot_root(".", ".")`: the old root ends up stacked on the new one.
    PivotRoot,
    /// `umount2(".", MNT_DETACH)`: detaches the old root stacked by `PivotRoot`.
    DetachOldRoot,
    /// `chroot(".")`: the fallback when the daemon's own root is not a mount point.
    ChrootDot,
}

/// Landlock rules of step 7.
pub(crate) use crate::landlock::LandlockRules as LandlockPlan;

/// File descriptors as numbered in the parent (the child has a copy of its fd table).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdPlan {
    pub error: RawFd,
    pub channel: RawFd,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// A zygote's inheritance for its children, kept at fds 5 and 6.
    pub zygote: Option<ZygoteFds>,
}

/// What a zygote keeps for its children: their seccomp program (at fd 5), where landlock is
/// in force their landlock rules (at fd 6), and where io_uring is available the ring it pins
/// the pages they write with (at fd 7; see `EnvSpec::zygote`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZygoteFds {
    pub filter: RawFd,
    pub rules: Option<RawFd>,
    pub ring: Option<RawFd>,
}

/// `execve` arguments: NUL-terminated pointer arrays into owned strings.
#[derive(Debug)]
pub(crate) struct ExecPlan {
    pub path: CString,
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl ExecPlan {
    pub(crate) fn new(path: CString, args: Vec<CString>, env: Vec<CString>) -> Self {
        let argv_len = args.len();
        let mut strings = args;
        strings.extend(env);
        let ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        let (args, env) = ptrs.split_at(argv_len);
        let argv = args.iter().copied().chain([std::ptr::null()]).collect();
        let envp = env.iter().copied().chain([std::ptr::null()]).collect();
        Self {
            path,
            _strings: strings,
            argv,
            envp,
        }
    }

    /// Arguments, for tests.
    #[cfg(test)]
    pub(crate) fn argv_len(&self) -> usize {
        self.argv.len() - 1
    }
}

/// Everything the child does, decided by the parent.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    /// Every fd the child uses, sorted; all others are closed first thing, so the child does
    /// not hold the daemon's other files open (a file open for writing in any process cannot be
    /// executed: ETXTBSY).
    pub keep_fds: Vec<RawFd>,
    /// Signals whose disposition in the daemon is not the default (handled or ignored).
    pub reset_signals: Vec<i32>,
    pub userns_sync: Option<RawFd>,
    pub cgroup_procs: Vec<RawFd>,
    pub unshare_cgroupns: bool,
    pub netns: Option<RawFd>,
    /// The environment has its own network namespace with loopback brought up (for the Runtime
    /// API at 127.0.0.1:9001).
    pub loopback: bool,
    pub fs: Vec<FsOp>,
    pub hostname: CString,
    pub rlimits: Vec<(u32, u64)>,
    pub fds: FdPlan,
    pub cap_last_cap: u32,
    pub clear_groups: bool,
    pub uid: u32,
    pub gid: u32,
    pub landlock: Option<LandlockPlan>,
    pub seccomp: Vec<libc::sock_filter>,
    /// Set for a zygote (see [`ZygoteSetup`]).
    pub zygote: Option<ZygoteSetup>,
    pub exec: ExecPlan,
}

/// How a zygote's setup differs: it keeps the capabilities its children need to enter their
/// own namespaces (in its own user namespace), and it is not landlocked (landlock forbids
/// mounting, which each child does for its `/tmp` and `/proc`); each child builds its own
/// ruleset from the rules at fd 6 ([`ZygoteFds`]) once its mounts are in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZygoteSetup {
    /// Capability bits kept (effective and permitted); all others are dropped as usual.
    pub keep_caps: u64,
}

// SAFETY: the raw pointers in `ExecPlan` point into strings owned by the same plan, which are
// never mutated after construction; moving the plan between threads moves their owner too.
unsafe impl Send for ChildPlan {}

/// Why setup failed: the step and the errno.
pub(crate) type Failure = (Step, Errno);

/// The syscalls the child makes. Each returns the raw result or an errno.
pub(crate) trait Sys {
    fn reset_signal(&mut self, sig: i32) -> Result<(), Errno>;
    fn read_byte(&mut self, fd: RawFd) -> Result<usize, Errno>;
    fn write(&mut self, fd: RawFd, bytes: &[u8]) -> Result<usize, Errno>;
    fn unshare(&mut self, flags: i32) -> Result<(), Errno>;
    fn setns(&mut self, fd: RawFd, nstype: i32) -> Result<(), Errno>;
    /// Brings up `lo` in the current network namespace.
    fn loopback_up(&mut self) -> Result<(), Errno>;
    fn prctl(&mut self, option: i32, arg: u64) -> Result<(), Errno>;
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)`.
    fn ambient_raise(&mut self, cap: u32) -> Result<(), Errno>;
    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> Result<(), Errno>;
    fn chdir(&mut self, path: &CStr) -> Result<(), Errno>;
    fn pivot_root_dot(&mut self) -> Result<(), Errno>;
    fn umount_detach_dot(&mut self) -> Result<(), Errno>;
    fn chroot_dot(&mut self) -> Result<(), Errno>;
    fn sethostname(&mut self, name: &CStr) -> Result<(), Errno>;
    fn setrlimit(&mut self, resource: u32, limit: u64) -> Result<(), Errno>;
    fn dup_above(&mut self, fd: RawFd, min: RawFd) -> Result<RawFd, Errno>;
    fn dup3(&mut self, old: RawFd, new: RawFd, cloexec: bool) -> Result<(), Errno>;
    fn close_from(&mut self, first: RawFd) -> Result<(), Errno>;
    fn close_range(&mut self, first: RawFd, last: RawFd) -> Result<(), Errno>;
    fn setgroups_empty(&mut self) -> Result<(), Errno>;
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno>;
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno>;
    /// Sets the effective and permitted capabilities to `keep` (inheritable: none).
    fn capset(&mut self, keep: u64) -> Result<(), Errno>;
    /// `attr` is `struct landlock_ruleset_attr`, of which the kernel reads `size` bytes.
    fn landlock_create(&mut self, attr: &[u64; 3], size: usize) -> Result<RawFd, Errno>;
    fn open_path(&mut self, path: &CStr) -> Result<RawFd, Errno>;
    fn landlock_add_path(
        &mut self,
        ruleset: RawFd,
        parent: RawFd,
        access: u64,
    ) -> Result<(), Errno>;
    fn landlock_restrict(&mut self, ruleset: RawFd) -> Result<(), Errno>;
    fn close(&mut self, fd: RawFd);
    fn unblock_signals(&mut self) -> Result<(), Errno>;
    fn seccomp(&mut self, filter: &[libc::sock_filter]) -> Result<(), Errno>;
    /// Returns only on failure.
    fn execve(&mut self, exec: &ExecPlan) -> Errno;
}

fn at<T>(step: Step, r: Result<T, Errno>) -> Result<T, Failure> {
    r.map_err(|errno| (step, errno))
}

/// Builds the environment and execs the function. Returns only on failure, with the fd the
/// error pipe has at that point. Must not allocate, panic or lock (see the module docs).
pub(crate) fn run<S: Sys>(plan: &ChildPlan, sys: &mut S) -> (Failure, RawFd) {
    let mut error_fd = plan.fds.error;
    match setup(plan, sys, &mut error_fd) {
        Ok(()) => ((Step::Exec, sys.execve(&plan.exec)), error_fd),
        Err(failure) => (failure, error_fd),
    }
}

fn setup<S: Sys>(plan: &ChildPlan, sys: &mut S, error_fd: &mut RawFd) -> Result<(), Failure> {
    // 1. signals, inherited fds, user namespace. Every disposition that is not the default
    // goes back to it: handlers would run the daemon's code on this stack, and an ignored
    // signal (Rust ignores SIGPIPE) would stay ignored across exec.
    for &sig in &plan.reset_signals {
        at(Step::ResetSignals, sys.reset_signal(sig))?;
    }
    let mut next: RawFd = 0;
    for &keep in &plan.keep_fds {
        if keep > next {
            at(Step::CloseInheritedFds, sys.close_range(next, keep - 1))?;
        }
        next = keep.saturating_add(1);
    }
    at(Step::CloseInheritedFds, sys.close_from(next))?;
    if let Some(fd) = plan.userns_sync {
        match sys.read_byte(fd) {
            Ok(1) => {}
            Ok(_) => return Err((Step::WaitUserNamespace, libc::EPIPE)),
            Err(e) => return Err((Step::WaitUserNamespace, e)),
        }
    }
    // 2. cgroup, then cgroup namespace.
    for &fd in &plan.cgroup_procs {
        at(Step::JoinCgroup, sys.write(fd, b"0"))?;
    }
    if plan.unshare_cgroupns {
        at(
            Step::UnshareCgroupNamespace,
            sys.unshare(libc::CLONE_NEWCGROUP),
        )?;
    }
    // 3. network namespace.
    if let Some(fd) = plan.netns {
        at(
            Step::JoinNetworkNamespace,
            sys.setns(fd, libc::CLONE_NEWNET),
        )?;
    }
    if plan.loopback {
        at(Step::LoopbackUp, sys.loopback_up())?;
    }
    // 4. filesystem.
    for op in &plan.fs {
        fs_op(op, sys)?;
    }
    // 5. identity of the process, fds.
    at(Step::SetHostname, sys.sethostname(&plan.hostname))?;
    for &(resource, limit) in &plan.rlimits {
        at(Step::ResourceLimit, sys.setrlimit(resource, limit))?;
    }
    arrange_fds(plan.fds, sys, error_fd)?;
    // 6. privileges.
    let keep = plan.zygote.map_or(0, |z| z.keep_caps);
    for cap in (0..=plan.cap_last_cap).filter(|c| keep & (1 << c) == 0) {
        at(
            Step::DropBoundingSet,
            sys.prctl(libc::PR_CAPBSET_DROP, u64::from(cap)),
        )?;
    }
    at(
        Step::ClearAmbientCaps,
        sys.prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as u64),
    )?;
    if plan.clear_groups {
        at(Step::SetGroups, sys.setgroups_empty())?;
    }
    at(Step::SetGid, sys.setresgid(plan.gid))?;
    if plan.zygote.is_some() {
        at(Step::SetUid, sys.prctl(libc::PR_SET_KEEPCAPS, 1))?;
    }
    at(Step::SetUid, sys.setresuid(plan.uid))?;
    at(Step::DropCapabilities, sys.capset(keep))?;
    // A zygote's kept capabilities must survive the execve of its program, which as a non-root
    // uid it only does as ambient capabilities.
    for cap in (0..64).filter(|c| keep & (1 << c) != 0) {
        at(Step::DropCapabilities, sys.ambient_raise(cap))?;
    }
    // After the uid switch, which clears the parent-death signal (the kernel resets it on any
    // credential change): SIGKILL if the scheduler thread that started us dies.
    at(
        Step::ParentDeathSignal,
        sys.prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64),
    )?;
    at(Step::NoNewPrivs, sys.prctl(libc::PR_SET_NO_NEW_PRIVS, 1))?;
    // 7. landlock, seccomp.
    if let Some(landlock) = &plan.landlock {
        let ruleset = landlock_ruleset(landlock, sys)?;
        let restricted = sys.landlock_restrict(ruleset);
        sys.close(ruleset);
        at(Step::LandlockRestrict, restricted)?;
    }
    at(Step::UnblockSignals, sys.unblock_signals())?;
    at(Step::Seccomp, sys.seccomp(&plan.seccomp))?;
    Ok(())
}

/// One filesystem operation of step 4.
fn fs_op<S: Sys>(op: &FsOp, sys: &mut S) -> Result<(), Failure> {
    match op {
        FsOp::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            step,
        } => at(
            *step,
            sys.mount(
                source.as_deref(),
                target,
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            ),
        )?,
        FsOp::Chdir { path, step } => at(*step, sys.chdir(path))?,
        FsOp::PivotRoot => at(Step::PivotRoot, sys.pivot_root_dot())?,
        FsOp::DetachOldRoot => at(Step::DetachOldRoot, sys.umount_detach_dot())?,
        FsOp::ChrootDot => at(Step::Chroot, sys.chroot_dot())?,
    }
    Ok(())
}

/// fds 0, 1, 2 = stdio, 3 = channel, 4 = error pipe (close-on-exec); all others closed.
/// Everything is first copied above 9 so that no target number clobbers a source; the error
/// pipe moves first so that later failures are still reported.
fn arrange_fds<S: Sys>(fds: FdPlan, sys: &mut S, error_fd: &mut RawFd) -> Result<(), Failure> {
    let high = |sys: &mut S, fd| at(Step::ArrangeFds, sys.dup_above(fd, 10));
    let error = high(sys, fds.error)?;
    let stdin = high(sys, fds.stdin)?;
    let stdout = high(sys, fds.stdout)?;
    let stderr = high(sys, fds.stderr)?;
    let channel = high(sys, fds.channel)?;
    let zygote = fds
        .zygote
        .map(|z| {
            Ok((
                high(sys, z.filter)?,
                z.rules.map(|fd| high(sys, fd)).transpose()?,
                z.ring.map(|fd| high(sys, fd)).transpose()?,
            ))
        })
        .transpose()?;
    at(Step::ArrangeFds, sys.dup3(error, 4, true))?;
    *error_fd = 4;
    for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2), (channel, 3)] {
        at(Step::ArrangeFds, sys.dup3(fd, target, false))?;
    }
    let mut first_closed = 5;
    if let Some((filter, rules, ring)) = zygote {
        at(Step::ArrangeFds, sys.dup3(filter, ZYGOTE_FILTER_FD, false))?;
        first_closed = ZYGOTE_FILTER_FD + 1;
        if let Some(rules) = rules {
            at(Step::ArrangeFds, sys.dup3(rules, ZYGOTE_RULES_FD, false))?;
            first_closed = ZYGOTE_RULES_FD + 1;
        }
        if let Some(ring) = ring {
            at(Step::ArrangeFds, sys.dup3(ring, ZYGOTE_RING_FD, false))?;
            if rules.is_none() {
                // Nothing at fd 6 then (the zygote would take whatever is there for rules).
                at(
                    Step::CloseFds,
                    sys.close_range(ZYGOTE_RULES_FD, ZYGOTE_RULES_FD),
                )?;
            }
            first_closed = ZYGOTE_RING_FD + 1;
        }
    }
    at(Step::CloseFds, sys.close_from(first_closed))
}

/// Where a zygote finds its children's seccomp program (a memfd of `sock_filter`s).
pub(crate) const ZYGOTE_FILTER_FD: RawFd = 5;
/// Where a zygote finds the landlock rules its children build their rulesets from.
pub(crate) const ZYGOTE_RULES_FD: RawFd = 6;
/// Where a zygote finds the ring it pins its children's pages with.
pub(crate) const ZYGOTE_RING_FD: RawFd = 7;

fn landlock_ruleset<S: Sys>(plan: &LandlockPlan, sys: &mut S) -> Result<RawFd, Failure> {
    let ruleset = at(
        Step::LandlockCreate,
        sys.landlock_create(&plan.attr(), plan.attr_size()),
    )?;
    for (path, access) in &plan.rules {
        let fd = at(Step::LandlockRule, sys.open_path(path))?;
        let added = sys.landlock_add_path(ruleset, fd, *access);
        sys.close(fd);
        if let Err(e) = added {
            sys.close(ruleset);
            return Err((Step::LandlockRule, e));
        }
    }
    Ok(ruleset)
}

/// The child's entry point after `clone3`. `arg` is a `*const ChildPlan`.
pub(crate) extern "C" fn entry(arg: *mut std::ffi::c_void) -> ! {
    // SAFETY: the parent passes a pointer to a ChildPlan that it keeps alive and unmodified
    // until this process execs or exits (Environment owns it).
    let plan = unsafe { &*arg.cast_const().cast::<ChildPlan>() };
    let mut sys = RawSys;
    let ((step, errno), error_fd) = run(plan, &mut sys);
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    record[4..].copy_from_slice(&errno.to_ne_bytes());
    let _ = sys.write(error_fd, &record);
    // SAFETY: exit_group takes an integer and does not return.
    let _ = unsafe { syscall6(libc::SYS_exit_group, [127, 0, 0, 0, 0, 0]) };
    // exit_group cannot fail; spin rather than return into nothing.
    loop {
        std::hint::spin_loop();
    }
}

/// The real syscalls, made with inline assembly (no libc, no errno).
#[derive(Debug)]
pub(crate) struct RawSys;

/// An `int` syscall argument, sign-extended into a register (as the C ABI does; the kernel
/// reads the low 32 bits, and negative values such as `AT_FDCWD` keep their meaning).
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
fn int(v: i32) -> usize {
    i64::from(v) as usize
}

/// A 64-bit syscall argument (flags, sizes). x86_64 only, so `usize` is 64 bits wide.
#[allow(clippy::cast_possible_truncation)]
fn word(v: u64) -> usize {
    v as usize
}

fn ok(r: Result<usize, Errno>) -> Result<(), Errno> {
    r.map(|_| ())
}

fn ptr<T>(p: &T) -> usize {
    std::ptr::from_ref(p) as usize
}

fn opt_ptr(s: Option<&CStr>) -> usize {
    s.map_or(0, |s| s.as_ptr() as usize)
}

/// `struct sigaction` as the `rt_sigaction` syscall takes it (not libc's layout).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the kernel ABI).
#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

impl Sys for RawSys {
    fn reset_signal(&mut self, sig: i32) -> Result<(), Errno> {
        let act = KernelSigaction {
            handler: 0, // SIG_DFL
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction with a valid kernel sigaction and the kernel's sigset size (8).
        ok(unsafe { syscall6(libc::SYS_rt_sigaction, [int(sig), ptr(&act), 0, 8, 0, 0]) })
    }

    fn read_byte(&mut self, fd: RawFd) -> Result<usize, Errno> {
        let mut byte = 0u8;
        loop {
            // SAFETY: reading one byte into a local.
            match unsafe {
                syscall6(
                    libc::SYS_read,
                    [int(fd), std::ptr::from_mut(&mut byte) as usize, 1, 0, 0, 0],
                )
            } {
                Err(libc::EINTR) => continue,
                r => return r,
            }
        }
    }

    fn write(&mut self, fd: RawFd, bytes: &[u8]) -> Result<usize, Errno> {
        // SAFETY: writing from a valid slice.
        unsafe {
            syscall6(
                libc::SYS_write,
                [int(fd), bytes.as_ptr() as usize, bytes.len(), 0, 0, 0],
            )
        }
    }

    fn unshare(&mut self, flags: i32) -> Result<(), Errno> {
        // SAFETY: integer argument only.
        ok(unsafe { syscall6(libc::SYS_unshare, [int(flags), 0, 0, 0, 0, 0]) })
    }

    fn setns(&mut self, fd: RawFd, nstype: i32) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        ok(unsafe { syscall6(libc::SYS_setns, [int(fd), int(nstype), 0, 0, 0, 0]) })
    }

    fn loopback_up(&mut self) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        let fd = unsafe {
            syscall6(
                libc::SYS_socket,
                [
                    int(libc::AF_INET),
                    int(libc::SOCK_DGRAM | libc::SOCK_CLOEXEC),
                    0,
                    0,
                    0,
                    0,
                ],
            )
        }?;
        // `struct ifreq`: the name, then `ifr_flags` in the union.
        let mut ifreq = [0u8; 40];
        ifreq[..2].copy_from_slice(b"lo");
        let flags = i16::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(1);
        ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: SIOCSIFFLAGS reads a 40-byte ifreq from a local buffer.
        let set = unsafe {
            syscall6(
                libc::SYS_ioctl,
                [
                    fd,
                    word(libc::SIOCSIFFLAGS),
                    std::ptr::from_mut(&mut ifreq) as usize,
                    0,
                    0,
                    0,
                ],
            )
        };
        self.close(RawFd::try_from(fd).unwrap_or(-1));
        ok(set)
    }

    fn prctl(&mut self, option: i32, arg: u64) -> Result<(), Errno> {
        // SAFETY: the options used here take integer arguments only.
        ok(unsafe { syscall6(libc::SYS_prctl, [int(option), word(arg), 0, 0, 0, 0]) })
    }

    fn ambient_raise(&mut self, cap: u32) -> Result<(), Errno> {
        let (option, raise) = (libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE);
        // SAFETY: integer arguments only.
        ok(unsafe {
            syscall6(
                libc::SYS_prctl,
                [int(option), int(raise), cap as usize, 0, 0, 0],
            )
        })
    }

    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        // SAFETY: NUL-terminated strings (or NULL) owned by the plan.
        ok(unsafe {
            syscall6(
                libc::SYS_mount,
                [
                    opt_ptr(source),
                    target.as_ptr() as usize,
                    opt_ptr(fstype),
                    word(flags),
                    opt_ptr(data),
                    0,
                ],
            )
        })
    }

    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: NUL-terminated path.
        ok(unsafe { syscall6(libc::SYS_chdir, [path.as_ptr() as usize, 0, 0, 0, 0, 0]) })
    }

    fn pivot_root_dot(&mut self) -> Result<(), Errno> {
        let dot = c".".as_ptr() as usize;
        // SAFETY: static NUL-terminated strings.
        ok(unsafe { syscall6(libc::SYS_pivot_root, [dot, dot, 0, 0, 0, 0]) })
    }

    fn umount_detach_dot(&mut self) -> Result<(), Errno> {
        // SAFETY: static NUL-terminated string.
        ok(unsafe {
            syscall6(
                libc::SYS_umount2,
                [c".".as_ptr() as usize, int(libc::MNT_DETACH), 0, 0, 0, 0],
            )
        })
    }

    fn chroot_dot(&mut self) -> Result<(), Errno> {
        // SAFETY: static NUL-terminated string.
        ok(unsafe { syscall6(libc::SYS_chroot, [c".".as_ptr() as usize, 0, 0, 0, 0, 0]) })
    }

    fn sethostname(&mut self, name: &CStr) -> Result<(), Errno> {
        let len = name.to_bytes().len();
        // SAFETY: pointer and length of a valid string.
        ok(unsafe {
            syscall6(
                libc::SYS_sethostname,
                [name.as_ptr() as usize, len, 0, 0, 0, 0],
            )
        })
    }

    fn setrlimit(&mut self, resource: u32, limit: u64) -> Result<(), Errno> {
        let lim = [limit, limit];
        // SAFETY: prlimit64(0 = self, resource, new, NULL) with a valid struct rlimit64.
        ok(unsafe {
            syscall6(
                libc::SYS_prlimit64,
                [0, word(u64::from(resource)), lim.as_ptr() as usize, 0, 0, 0],
            )
        })
    }

    fn dup_above(&mut self, fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
        // SAFETY: integer arguments only.
        unsafe {
            syscall6(
                libc::SYS_fcntl,
                [int(fd), int(libc::F_DUPFD_CLOEXEC), int(min), 0, 0, 0],
            )
        }
        .map(|fd| RawFd::try_from(fd).unwrap_or(-1))
    }

    fn dup3(&mut self, old: RawFd, new: RawFd, cloexec: bool) -> Result<(), Errno> {
        let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
        // SAFETY: integer arguments only.
        ok(unsafe { syscall6(libc::SYS_dup3, [int(old), int(new), int(flags), 0, 0, 0]) })
    }

    fn close_from(&mut self, first: RawFd) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        ok(unsafe {
            syscall6(
                libc::SYS_close_range,
                [int(first), word(u64::from(u32::MAX)), 0, 0, 0, 0],
            )
        })
    }

    fn close_range(&mut self, first: RawFd, last: RawFd) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        ok(unsafe { syscall6(libc::SYS_close_range, [int(first), int(last), 0, 0, 0, 0]) })
    }

    fn setgroups_empty(&mut self) -> Result<(), Errno> {
        // SAFETY: size 0 with a NULL list.
        ok(unsafe { syscall6(libc::SYS_setgroups, [0, 0, 0, 0, 0, 0]) })
    }

    fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
        let g = word(u64::from(gid));
        // SAFETY: integer arguments only.
        ok(unsafe { syscall6(libc::SYS_setresgid, [g, g, g, 0, 0, 0]) })
    }

    fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
        let u = word(u64::from(uid));
        // SAFETY: integer arguments only.
        ok(unsafe { syscall6(libc::SYS_setresuid, [u, u, u, 0, 0, 0]) })
    }

    #[allow(clippy::cast_possible_truncation)]
    fn capset(&mut self, keep: u64) -> Result<(), Errno> {
        let header: [u32; 2] = [0x2008_0522, 0]; // _LINUX_CAPABILITY_VERSION_3, this thread
                                                 // Two {effective, permitted, inheritable}: bits 0-31, then 32-63. What is kept is
                                                 // inheritable too, so that it can be made ambient (and survive execve).
        let (low, high) = (keep as u32, (keep >> 32) as u32);
        let data = [low, low, low, high, high, high];
        // SAFETY: capset with a v3 header and two data structs, as the ABI requires.
        ok(unsafe {
            syscall6(
                libc::SYS_capset,
                [header.as_ptr() as usize, data.as_ptr() as usize, 0, 0, 0, 0],
            )
        })
    }

    fn landlock_create(&mut self, attr: &[u64; 3], size: usize) -> Result<RawFd, Errno> {
        // SAFETY: `attr` is at least `size` bytes.
        unsafe {
            syscall6(
                libc::SYS_landlock_create_ruleset,
                [attr.as_ptr() as usize, size, 0, 0, 0, 0],
            )
        }
        .map(|fd| RawFd::try_from(fd).unwrap_or(-1))
    }

    fn open_path(&mut self, path: &CStr) -> Result<RawFd, Errno> {
        let flags = libc::O_PATH | libc::O_CLOEXEC;
        // SAFETY: NUL-terminated path.
        unsafe {
            syscall6(
                libc::SYS_openat,
                [
                    int(libc::AT_FDCWD),
                    path.as_ptr() as usize,
                    int(flags),
                    0,
                    0,
                    0,
                ],
            )
        }
        .map(|fd| RawFd::try_from(fd).unwrap_or(-1))
    }

    fn landlock_add_path(
        &mut self,
        ruleset: RawFd,
        parent: RawFd,
        access: u64,
    ) -> Result<(), Errno> {
        let attr = PathBeneath {
            allowed_access: access,
            parent_fd: parent,
        };
        const LANDLOCK_RULE_PATH_BENEATH: usize = 1;
        // SAFETY: a valid packed path_beneath attribute.
        ok(unsafe {
            syscall6(
                libc::SYS_landlock_add_rule,
                [
                    int(ruleset),
                    LANDLOCK_RULE_PATH_BENEATH,
                    ptr(&attr),
                    0,
                    0,
                    0,
                ],
            )
        })
    }

    fn landlock_restrict(&mut self, ruleset: RawFd) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        ok(unsafe {
            syscall6(
                libc::SYS_landlock_restrict_self,
                [int(ruleset), 0, 0, 0, 0, 0],
            )
        })
    }

    fn close(&mut self, fd: RawFd) {
        // SAFETY: integer argument only.
        let _ = unsafe { syscall6(libc::SYS_close, [int(fd), 0, 0, 0, 0, 0]) };
    }

    fn unblock_signals(&mut self) -> Result<(), Errno> {
        let empty = 0u64;
        // SAFETY: rt_sigprocmask(SIG_SETMASK, &empty, NULL, 8).
        ok(unsafe {
            syscall6(
                libc::SYS_rt_sigprocmask,
                [int(libc::SIG_SETMASK), ptr(&empty), 0, 8, 0, 0],
            )
        })
    }

    fn seccomp(&mut self, filter: &[libc::sock_filter]) -> Result<(), Errno> {
        let prog = libc::sock_fprog {
            len: u16::try_from(filter.len()).unwrap_or(0),
            filter: filter.as_ptr().cast_mut(),
        };
        const SECCOMP_SET_MODE_FILTER: usize = 1;
        // SAFETY: a sock_fprog pointing at `filter`, which outlives the call.
        ok(unsafe {
            syscall6(
                libc::SYS_seccomp,
                [SECCOMP_SET_MODE_FILTER, 0, ptr(&prog), 0, 0, 0],
            )
        })
    }

    fn execve(&mut self, exec: &ExecPlan) -> Errno {
        // SAFETY: path and NUL-terminated pointer arrays owned by the plan.
        match unsafe {
            syscall6(
                libc::SYS_execve,
                [
                    exec.path.as_ptr() as usize,
                    exec.argv.as_ptr() as usize,
                    exec.envp.as_ptr() as usize,
                    0,
                    0,
                    0,
                ],
            )
        } {
            Ok(_) => 0,
            Err(e) => e,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records every call instead of making it.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub calls: Vec<String>,
        pub fail: Option<&'static str>,
        pub next_fd: RawFd,
    }

    impl Recorder {
        fn call(&mut self, what: String) -> Result<(), Errno> {
            let failing = self.fail.is_some_and(|f| what.starts_with(f));
            self.calls.push(what);
            if failing {
                Err(libc::EPERM)
            } else {
                Ok(())
            }
        }

        pub fn position(&self, prefix: &str) -> usize {
            self.calls
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no call starting with {prefix:?} in {:#?}", self.calls))
        }
    }

    fn s(c: Option<&CStr>) -> String {
        c.map_or("-".into(), |c| c.to_string_lossy().into_owned())
    }

    impl Sys for Recorder {
        fn reset_signal(&mut self, sig: i32) -> Result<(), Errno> {
            self.call(format!("reset_signal {sig}"))
        }
        fn read_byte(&mut self, fd: RawFd) -> Result<usize, Errno> {
            self.call(format!("read_byte {fd}")).map(|()| 1)
        }
        fn write(&mut self, fd: RawFd, bytes: &[u8]) -> Result<usize, Errno> {
            self.call(format!("write {fd} {}", String::from_utf8_lossy(bytes)))
                .map(|()| bytes.len())
        }
        fn unshare(&mut self, flags: i32) -> Result<(), Errno> {
            self.call(format!("unshare {flags:#x}"))
        }
        fn setns(&mut self, fd: RawFd, nstype: i32) -> Result<(), Errno> {
            self.call(format!("setns {fd} {nstype:#x}"))
        }
        fn loopback_up(&mut self) -> Result<(), Errno> {
            self.call("loopback_up".to_owned())
        }
        fn ambient_raise(&mut self, cap: u32) -> Result<(), Errno> {
            self.call(format!("ambient_raise {cap}"))
        }
        fn prctl(&mut self, option: i32, arg: u64) -> Result<(), Errno> {
            self.call(format!("prctl {option} {arg}"))
        }
        fn mount(
            &mut self,
            source: Option<&CStr>,
            target: &CStr,
            fstype: Option<&CStr>,
            flags: u64,
            data: Option<&CStr>,
        ) -> Result<(), Errno> {
            self.call(format!(
                "mount {} {} {} {flags:#x} {}",
                s(source),
                s(Some(target)),
                s(fstype),
                s(data)
            ))
        }
        fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
            self.call(format!("chdir {}", s(Some(path))))
        }
        fn pivot_root_dot(&mut self) -> Result<(), Errno> {
            self.call("pivot_root . .".into())
        }
        fn umount_detach_dot(&mut self) -> Result<(), Errno> {
            self.call("umount2 . MNT_DETACH".into())
        }
        fn chroot_dot(&mut self) -> Result<(), Errno> {
            self.call("chroot .".into())
        }
        fn sethostname(&mut self, name: &CStr) -> Result<(), Errno> {
            self.call(format!("sethostname {}", s(Some(name))))
        }
        fn setrlimit(&mut self, resource: u32, limit: u64) -> Result<(), Errno> {
            self.call(format!("setrlimit {resource} {limit}"))
        }
        fn dup_above(&mut self, fd: RawFd, min: RawFd) -> Result<RawFd, Errno> {
            self.next_fd = self.next_fd.max(min);
            self.next_fd += 1;
            self.call(format!("dup_above {fd} -> {}", self.next_fd))
                .map(|()| self.next_fd)
        }
        fn dup3(&mut self, old: RawFd, new: RawFd, cloexec: bool) -> Result<(), Errno> {
            self.call(format!("dup3 {old} {new} {cloexec}"))
        }
        fn close_from(&mut self, first: RawFd) -> Result<(), Errno> {
            self.call(format!("close_range {first}"))
        }
        fn close_range(&mut self, first: RawFd, last: RawFd) -> Result<(), Errno> {
            self.call(format!("close_range {first}..={last}"))
        }
        fn setgroups_empty(&mut self) -> Result<(), Errno> {
            self.call("setgroups".into())
        }
        fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
            self.call(format!("setresgid {gid}"))
        }
        fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
            self.call(format!("setresuid {uid}"))
        }
        fn capset(&mut self, keep: u64) -> Result<(), Errno> {
            self.call(format!("capset {keep:#x}"))
        }
        fn landlock_create(&mut self, attr: &[u64; 3], size: usize) -> Result<RawFd, Errno> {
            self.call(format!(
                "landlock_create {:#x} {:#x} size{size}",
                attr[0], attr[2]
            ))
            .map(|()| 90)
        }
        fn open_path(&mut self, path: &CStr) -> Result<RawFd, Errno> {
            self.call(format!("open_path {}", s(Some(path))))
                .map(|()| 91)
        }
        fn landlock_add_path(
            &mut self,
            ruleset: RawFd,
            parent: RawFd,
            access: u64,
        ) -> Result<(), Errno> {
            self.call(format!("landlock_add_rule {ruleset} {parent} {access:#x}"))
        }
        fn landlock_restrict(&mut self, ruleset: RawFd) -> Result<(), Errno> {
            self.call(format!("landlock_restrict {ruleset}"))
        }
        fn close(&mut self, fd: RawFd) {
            let _ = self.call(format!("close {fd}"));
        }
        fn unblock_signals(&mut self) -> Result<(), Errno> {
            self.call("unblock_signals".into())
        }
        fn seccomp(&mut self, filter: &[libc::sock_filter]) -> Result<(), Errno> {
            self.call(format!("seccomp {} insns", filter.len()))
        }
        fn execve(&mut self, exec: &ExecPlan) -> Errno {
            match self.call(format!("execve {}", exec.path.to_string_lossy())) {
                Ok(()) => 0,
                Err(e) => e,
            }
        }
    }
}
