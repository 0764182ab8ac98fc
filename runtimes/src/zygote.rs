//! Zygote mode of the native runtime: the function has run its Init (everything `main` did
//! before calling [`crate::serve`]); instead of serving one channel, the process forks a new
//! environment each time the scheduler asks, and each child serves its own channel.
//!
//! hearth starts a zygote like an environment, except that (see `hearth_sandbox::EnvSpec`'s
//! `zygote`): fd 3 is a control socket (protocol: [`hearth_ipc::zygote`]), it runs in a user
//! namespace of its own where it keeps `CAP_SYS_ADMIN` and `CAP_SETPCAP`, under a seccomp policy
//! that also allows what a child's setup needs, without landlock; fd 5 holds the native seccomp
//! program and fd 6 the landlock ruleset for its children.
//!
//! Each child, before any function code runs in it:
//! 1. is created by `clone` in new pid, mount, ipc and uts namespaces (the zygote's hostname);
//! 2. joins its cgroup by writing "0" to the `cgroup.procs` files the scheduler opened and
//!    passed, then unshares its cgroup namespace;
//! 3. mounts its own tmpfs at `/tmp` (the function's ephemeral size) and its own `/proc`;
//! 4. empties its capability bounding set, drops every capability, restricts itself with the
//!    landlock ruleset (a domain of its own: it cannot signal or reach the abstract sockets of
//!    its siblings), moves stdout, stderr, the channel and the error pipe to fds 1-4 and closes
//!    every other descriptor;
//! 5. loads the native seccomp program on top of the zygote's (filters stack: it ends up as
//!    restricted as an environment started from nothing), then closes the error pipe, which
//!    tells the scheduler its setup is done.
//!
//! A failing step is written to the error pipe as (step, errno), as an environment's first
//! process reports it, and the child exits with status 127: function code never runs outside
//! the child's namespaces and cgroup. The zygote reaps its children and reports each exit.
//!
//! The child is made with the raw `clone` syscall (glibc's `fork` takes no namespace flags), so
//! glibc's fork handlers do not run: the zygote must be single-threaded when it forks, and
//! threads the function started during Init do not exist in its children.
#![allow(unsafe_code)]
// A sequence of raw syscalls (the child's setup has to be, see above): each block's SAFETY
// comment covers the calls in it.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use hearth_ipc::zygote::{self, ChildStep, Kind, Message};
use hearth_ipc::GuestChannel;
use nix::libc;

/// Where the native seccomp program for children is (see the module docs).
const FILTER_FD: RawFd = 5;
/// Where the children's landlock ruleset is, when landlock is in force.
const RULESET_FD: RawFd = 6;
/// Namespaces each child gets at `clone`.
const CHILD_NAMESPACES: libc::c_int =
    libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

/// Why the zygote stopped.
#[derive(Debug)]
pub enum ZygoteError {
    /// Reading fd 5 or setting up signal handling.
    Setup(io::Error),
    /// The control socket failed.
    Control(io::Error),
    /// The scheduler closed its end: the zygote is retired.
    Closed,
    /// A child's channel did not attach.
    Channel(hearth_ipc::ChannelError),
}

impl std::fmt::Display for ZygoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Setup(e) => write!(f, "setting up the zygote: {e}"),
            Self::Control(e) => write!(f, "zygote control socket: {e}"),
            Self::Closed => f.write_str("the scheduler retired this zygote"),
            Self::Channel(e) => write!(f, "attaching to the channel: {e}"),
        }
    }
}

/// Whether `fd` is a socket (a zygote's control socket rather than a channel memfd).
pub(crate) fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat writes into a zeroed stat buffer; a bad fd only makes it fail.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    }
}

/// Runs the zygote loop on control socket `control`. Returns only in a forked child, with its
/// channel (or with an error in the zygote, which then exits).
pub(crate) fn serve(control: OwnedFd) -> Result<GuestChannel, ZygoteError> {
    let filter = read_filter().map_err(ZygoteError::Setup)?;
    // SAFETY: F_GETFD only queries the descriptor table.
    let ruleset = (unsafe { libc::fcntl(RULESET_FD, libc::F_GETFD) } >= 0).then_some(RULESET_FD);
    // The capabilities left in the bounding set (those hearth kept for the children's setup),
    // read once: each child drops them.
    let bounding: Vec<libc::c_ulong> = (0..64)
        // SAFETY: PR_CAPBSET_READ takes integers; it fails past the last capability.
        .filter(|&cap| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) } > 0)
        .collect();
    let thread = ThreadState::read().map_err(ZygoteError::Setup)?;
    let sigchld = ChildSignals::block().map_err(ZygoteError::Setup)?;
    zygote::send(control.as_fd(), &Message::new(Kind::Ready, 0, 0, 0), &[])
        .map_err(ZygoteError::Control)?;
    let mut fds = Vec::with_capacity(zygote::MAX_FDS);
    loop {
        let mut polled = [
            libc::pollfd {
                fd: control.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigchld.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ZygoteError::Control(e));
        }
        if polled[1].revents != 0 {
            sigchld.drain();
            reap(&control)?;
        }
        if polled[0].revents == 0 {
            continue;
        }
        fds.clear();
        let request = match zygote::recv(&control, &mut fds, false) {
            Ok(Some(m)) if m.kind == Kind::Fork && fds.len() >= 4 => m,
            Ok(Some(_)) => continue,
            Ok(None) => return Err(ZygoteError::Closed),
            Err(e) => return Err(ZygoteError::Control(e)),
        };
        let mut pidfd: RawFd = -1;
        // As glibc's fork makes its child: the kernel writes the child's tid into the thread's
        // descriptor and clears it at exit (CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID).
        let flags = CHILD_NAMESPACES
            | libc::CLONE_PIDFD
            | libc::CLONE_CHILD_SETTID
            | libc::CLONE_CHILD_CLEARTID
            | libc::SIGCHLD;
        // SAFETY: clone without CLONE_VM is a fork: the child gets a copy of this address space
        // and continues here with 0; `pidfd` is a valid place for the kernel to store the
        // pidfd (CLONE_PIDFD uses the parent_tid argument); `thread.tid` is the address glibc
        // registered for this thread's tid.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::c_long::from(flags),
                0usize,
                std::ptr::from_mut(&mut pidfd),
                thread.tid,
                0usize,
            )
        };
        if pid == 0 {
            thread.restore_in_child();
            drop(sigchld);
            drop(control);
            let channel = child(&fds, request.b, (&filter, ruleset, &bounding));
            // Their numbers were closed or reused during the child's setup.
            std::mem::forget(std::mem::take(&mut fds));
            return channel;
        }
        let reply = if pid < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            Message::new(Kind::Forked, request.a, 0, u64::from(errno.unsigned_abs()))
        } else {
            Message::new(Kind::Forked, request.a, pid.unsigned_abs(), 0)
        };
        let passed: &[RawFd] = if pid > 0 { &[pidfd] } else { &[] };
        let sent = zygote::send(control.as_fd(), &reply, passed);
        if pid > 0 {
            // SAFETY: CLONE_PIDFD stored a new fd that this process owns.
            drop(unsafe { OwnedFd::from_raw_fd(pidfd) });
        }
        sent.map_err(ZygoteError::Control)?;
    }
}

/// Reaps every exited child and tells the scheduler how each ended.
fn reap(control: &OwnedFd) -> Result<(), ZygoteError> {
    loop {
        // SAFETY: waitid writes into a zeroed siginfo.
        let (r, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG);
            (r, info)
        };
        // SAFETY: si_pid and si_status are set for the CLD_* codes waitid reports.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if r < 0 || pid == 0 {
            return Ok(());
        }
        let encoded = if info.si_code == libc::CLD_EXITED {
            zygote::encode_status(Some(status), None)
        } else {
            zygote::encode_status(None, Some(status))
        };
        let report = Message::new(Kind::Exited, 0, pid.unsigned_abs().into(), encoded);
        zygote::send(control.as_fd(), &report, &[]).map_err(ZygoteError::Control)?;
    }
}

/// The zygote's children's seccomp program, from fd 5 (which is closed).
fn read_filter() -> io::Result<Vec<libc::sock_filter>> {
    // SAFETY: F_GETFD only queries the table; the fd, when open, was passed for this use.
    let file = unsafe {
        if libc::fcntl(FILTER_FD, libc::F_GETFD) < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "fd 5 (the children's seccomp program) is not open",
            ));
        }
        std::fs::File::from_raw_fd(FILTER_FD)
    };
    // By offset: the file description (and its position) is shared with other zygotes.
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if len > 8 * usize::from(u16::MAX) {
        return Err(io::Error::from(io::ErrorKind::InvalidData));
    }
    let mut bytes = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0)?;
    if bytes.is_empty() || bytes.len() % 8 != 0 || bytes.len() / 8 > usize::from(u16::MAX) {
        return Err(io::Error::from(io::ErrorKind::InvalidData));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// What glibc's `fork` restores in its child that a raw `clone` does not: the address of the
/// thread's tid (for `CLONE_CHILD_SETTID`) and its robust futex list, which the kernel does not
/// carry into a child. Read once; the zygote must be single-threaded (glibc's fork would also
/// reset the state of other threads, which a raw clone does not).
struct ThreadState {
    tid: usize,
    robust_head: usize,
    robust_len: usize,
}

impl ThreadState {
    fn read() -> io::Result<Self> {
        let threads = std::fs::read_to_string("/proc/self/stat")?
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(17).map(str::to_owned))
            .and_then(|n| n.parse::<u32>().ok());
        if threads != Some(1) {
            return Err(io::Error::other(format!(
                "a zygote must be single-threaded when it forks; this process has {} threads \
                 (threads started during Init do not exist in forked environments)",
                threads.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
            )));
        }
        let mut tid: usize = 0;
        let (mut robust_head, mut robust_len): (usize, usize) = (0, 0);
        // SAFETY: PR_GET_TID_ADDRESS and get_robust_list write one pointer-sized value each into
        // the locals passed.
        unsafe {
            if libc::prctl(libc::PR_GET_TID_ADDRESS, std::ptr::from_mut(&mut tid)) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(
                libc::SYS_get_robust_list,
                0,
                std::ptr::from_mut(&mut robust_head),
                std::ptr::from_mut(&mut robust_len),
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self {
            tid,
            robust_head,
            robust_len,
        })
    }

    fn restore_in_child(&self) {
        if self.robust_head != 0 {
            // SAFETY: the same list head the parent thread registered, at the same address in
            // this copy of its memory.
            unsafe { libc::syscall(libc::SYS_set_robust_list, self.robust_head, self.robust_len) };
        }
    }
}

/// SIGCHLD blocked and read from a signalfd, so the zygote wakes when a child exits.
struct ChildSignals {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl ChildSignals {
    fn block() -> io::Result<Self> {
        // SAFETY: sigset operations on local sets; signalfd returns a new fd or -1.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Self {
                fd: OwnedFd::from_raw_fd(fd),
                old,
            })
        }
    }

    fn drain(&self) {
        let mut buf = [0u8; 128 * 4];
        // SAFETY: read into a local buffer; the fd is non-blocking.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

impl Drop for ChildSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// A forked child's setup; on failure it reports the step and exits with status 127.
fn child(
    fds: &[OwnedFd],
    tmp_bytes: u64,
    kept: (&[libc::sock_filter], Option<RawFd>, &[libc::c_ulong]),
) -> Result<GuestChannel, ZygoteError> {
    let mut error_pipe = fds[3].as_raw_fd();
    if let Err((step, errno)) = enter(fds, tmp_bytes, kept, &mut error_pipe) {
        let mut record = [0u8; 8];
        record[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        record[4..].copy_from_slice(&errno.to_ne_bytes());
        let fd = error_pipe;
        // SAFETY: write of a local buffer, then _exit: no destructor or atexit handler of the
        // zygote runs in the failed child.
        unsafe {
            libc::write(fd, record.as_ptr().cast(), record.len());
            libc::_exit(127);
        }
    }
    // SAFETY: fd 3 is the channel, just placed there and owned by nobody else.
    let channel = unsafe { OwnedFd::from_raw_fd(3) };
    GuestChannel::from_fd(channel).map_err(ZygoteError::Channel)
}

fn check(step: ChildStep, r: libc::c_long) -> Result<(), (ChildStep, i32)> {
    if r < 0 {
        Err((
            step,
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ))
    } else {
        Ok(())
    }
}

/// Steps 2-5 of the module docs. `fds`: channel, stdout, stderr, error pipe, cgroup.procs...
/// `error_pipe` follows the pipe when it moves to fd 4.
fn enter(
    fds: &[OwnedFd],
    tmp_bytes: u64,
    (filter, ruleset, bounding): (&[libc::sock_filter], Option<RawFd>, &[libc::c_ulong]),
    error_pipe: &mut RawFd,
) -> Result<(), (ChildStep, i32)> {
    let none: libc::c_ulong = 0;
    let tmp_options = format!("size={tmp_bytes},mode=1777\0");
    // SAFETY: plain syscalls with valid pointers to local, NUL-terminated strings and buffers.
    unsafe {
        for procs in &fds[4..] {
            let r = libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1);
            check(ChildStep::JoinCgroup, r as libc::c_long)?;
        }
        check(
            ChildStep::UnshareCgroupNamespace,
            libc::unshare(libc::CLONE_NEWCGROUP).into(),
        )?;
        check(
            ChildStep::MountTmp,
            libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                tmp_options.as_ptr().cast(),
            )
            .into(),
        )?;
        check(
            ChildStep::MountProc,
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            )
            .into(),
        )?;
        for &cap in bounding {
            check(
                ChildStep::DropBoundingSet,
                libc::prctl(libc::PR_CAPBSET_DROP, cap, none, none, none).into(),
            )?;
        }
        let header: [u32; 2] = [0x2008_0522, 0]; // _LINUX_CAPABILITY_VERSION_3, this thread
        let data = [0u32; 6];
        check(
            ChildStep::DropCapabilities,
            libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()),
        )?;
        check(
            ChildStep::DropCapabilities,
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::c_ulong::from(libc::PR_CAP_AMBIENT_CLEAR_ALL.unsigned_abs()),
                none,
                none,
                none,
            )
            .into(),
        )?;
        if let Some(ruleset) = ruleset {
            check(
                ChildStep::LandlockRestrict,
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32),
            )?;
        }
        // Everything above fd 9 first, so no target number clobbers a source.
        let mut high = [0; 4];
        for (i, fd) in fds[..4].iter().enumerate() {
            high[i] = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10);
            check(ChildStep::ArrangeFds, high[i].into())?;
        }
        // channel -> 3, stdout -> 1, stderr -> 2 (inherited), error pipe -> 4 (close-on-exec).
        for (from, to, flags) in [
            (high[0], 3, 0),
            (high[1], 1, 0),
            (high[2], 2, 0),
            (high[3], 4, libc::O_CLOEXEC),
        ] {
            check(ChildStep::ArrangeFds, libc::dup3(from, to, flags).into())?;
            if to == 4 {
                *error_pipe = 4;
            }
        }
        check(
            ChildStep::ArrangeFds,
            libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32),
        )?;
        let program = libc::sock_fprog {
            len: u16::try_from(filter.len()).unwrap_or(u16::MAX),
            filter: filter.as_ptr().cast_mut(),
        };
        check(
            ChildStep::Seccomp,
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::c_ulong::from(libc::SECCOMP_MODE_FILTER),
                std::ptr::from_ref(&program),
                none,
                none,
            )
            .into(),
        )?;
        // Setup done: the scheduler sees the error pipe close.
        libc::close(4);
    }
    Ok(())
}

/// Takes ownership of the control socket at `fd` (inherited for this purpose).
pub(crate) fn adopt_control(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: the caller checked that `fd` is an open socket; hearth passed it to this process
    // to be owned by the runtime.
    is_socket(fd).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
