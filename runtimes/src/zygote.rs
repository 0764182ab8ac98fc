//! Zygote mode: the function has run its Init (everything `main` did before calling
//! [`crate::serve`], or the Python bootstrap's import of the handler); instead of serving one
//! channel, the process forks a new environment each time the scheduler asks, and each child
//! serves its own channel.
//!
//! hearth starts a zygote like an environment, except that (see `hearth_sandbox::EnvSpec`'s
//! `zygote`): fd 3 is a control socket (protocol: [`hearth_ipc::zygote`]), it runs in a user
//! namespace of its own where it keeps `CAP_SYS_ADMIN`, `CAP_SYS_CHROOT` and `CAP_SETPCAP`,
//! under a seccomp policy that also allows what a child's setup needs, without landlock; fd 5
//! holds its children's seccomp program, fd 6, where landlock is in force, their landlock
//! rules ([`hearth_ipc::landlock`]), and fd 7, where io_uring is available, the ring it pins
//! the pages its children write with, so that their forks copy those pages instead of each
//! child faulting on them ([`crate::hotpages`]).
//!
//! A zygote forks one helper process when it starts. After the first fork request (which
//! tells it the size of `/tmp`), the helper makes sets of namespaces ahead for the next
//! children, two at a time, when nothing else wants the CPU (`SCHED_IDLE`, and only once a
//! child exited or no fork came for a millisecond, so that it never competes with a child
//! setting itself up): a copy of the zygote's mount namespace with a fresh tmpfs at `/tmp`, new
//! ipc and uts namespaces, and the landlock ruleset whose `/tmp` rule names that tmpfs. Each
//! set is sent to the zygote and given to exactly one child, which enters it with `setns`
//! instead of creating its namespaces, mounting `/tmp` and building its ruleset after the fork
//! (about a fifth of a cold start on the development machine). Without a ready set (the first
//! fork, a burst, a helper that failed) the child makes its own, as described below.
//!
//! Each child is made by libc's `fork` (so every `pthread_atfork` handler runs, as for any
//! fork: OpenSSL's and other generators reseed; in the child they run right after the fork,
//! confined as the zygote is), after `unshare(CLONE_NEWPID)` so that it is the first process of
//! a new pid namespace; the zygote then returns to its own pid namespace for its next children.
//! A runtime's own fork hooks ([`ForkHooks`]) run around it, the child's only after the setup
//! below. After a fork the zygote answers hearth, returns to its own pid namespace and sleeps,
//! so that the child, which shares its CPU, runs first; the rest of its after-fork work (the
//! runtime's parent hook included) waits until it next wakes (after a failed fork: at once).
//! Before any other function code runs in it, the child:
//! 1. creates its own mount, ipc and uts namespaces (the zygote's hostname) and mounts its own
//!    tmpfs at `/tmp` (the function's ephemeral size), or enters the set the helper made and
//!    goes back to the zygote's working directory; then mounts its own `/proc`;
//! 2. waits for the scheduler's go-ahead byte: the scheduler, which never lets the zygote hold
//!    a handle on any cgroup, has checked the child's pidfd and moved it into its cgroup; then
//!    the child unshares its cgroup namespace (rooted at that cgroup);
//! 3. empties its capability bounding set, drops every capability, builds a landlock ruleset
//!    from the rules (now that its own `/tmp` is mounted: a rule names the inode it was given,
//!    and landlock does not look at a directory covered by a mount), or takes the one the
//!    helper built for its set, and restricts itself with it (a domain of its own: it cannot
//!    signal or reach the abstract sockets of its siblings), moves stdout, stderr, the channel
//!    and the error pipe to fds 1-4 and closes every other descriptor (the zygote's, and the
//!    sets meant for other children, included);
//! 4. loads the native seccomp program on top of the zygote's (filters stack: it ends up as
//!    restricted as an environment started from nothing), then closes the error pipe, which
//!    tells the scheduler its setup is done.
//!
//! A failing step is written to the error pipe as (step, errno), as an environment's first
//! process reports it, and the child exits with status 127: function code other than libc's
//! atfork handlers never runs outside the child's namespaces and cgroup. The zygote reaps its children and reports each exit.
//!
//! The zygote must be single-threaded when it forks (threads would not exist in the children);
//! a process with more than one thread refuses to be one. What Init put in memory is shared by
//! every child, as with Lambda's SnapStart: a value meant to be unique per environment (a
//! random seed not reset at fork, a connection) must be made after the fork.
#![allow(unsafe_code)]
// A sequence of raw syscalls (the child's setup has to be, see above): each block's SAFETY
// comment covers the calls in it.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use hearth_ipc::landlock::Rules;
use hearth_ipc::zygote::{self, ChildStep, Kind, Message};
use hearth_ipc::GuestChannel;
use nix::libc;

/// Where the native seccomp program for children is (see the module docs).
const FILTER_FD: RawFd = 5;
/// Where the children's landlock rules are, when landlock is in force.
const RULES_FD: RawFd = 6;

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

/// Runs the zygote loop on control socket `control` (see [`Zygote::serve`]). Returns only in a
/// forked child, with its channel (or with an error in the zygote, which then exits).
pub(crate) fn serve(control: OwnedFd) -> Result<GuestChannel, ZygoteError> {
    match Zygote::start(control)?.serve(&ForkHooks::default()) {
        Served::Child(channel) => channel,
        Served::Ended(e) => Err(e),
    }
}

/// How [`Zygote::serve`] returned.
// Returned once per process (boxing the channel would buy nothing).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Served {
    /// In a forked child, set up: its channel (an error only if it could not be attached).
    Child(Result<GuestChannel, ZygoteError>),
    /// In the zygote: why it ends ([`ZygoteError::Closed`] once hearth retired it).
    Ended(ZygoteError),
}

/// A function of the runtime's called around a fork (`None`: a null pointer in the C ABI).
pub(crate) type ForkHook = Option<unsafe extern "C" fn()>;

/// What a runtime needs called around each fork, besides libc's own atfork handlers (each may be
/// absent): Python's `PyOS_BeforeFork`, `PyOS_AfterFork_Parent` and `PyOS_AfterFork_Child`,
/// which its `os.fork` calls. They run the handlers the function's Init registered
/// (`os.register_at_fork`), so the child's runs only once the child is set up.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ForkHooks {
    /// Before the fork (and before the zygote unshares the child's pid namespace).
    pub before: ForkHook,
    /// After it, in the zygote, once hearth has its answer: when the zygote next wakes, so that
    /// the child runs first (at once after a failed fork, or where the zygote ends).
    pub parent: ForkHook,
    /// In the child, once it is set up (isolated as any environment): never on a failed setup.
    pub child: ForkHook,
}

fn call(hook: ForkHook) {
    if let Some(hook) = hook {
        // SAFETY: the runtime passed a function that may be called at this point of a fork
        // (`ForkHooks`), on the thread that runs the zygote.
        unsafe { hook() };
    }
}

/// A zygote between requests ([`Zygote::serve`]): [`Zygote::next_request`],
/// [`Zygote::prepare_fork`], libc's fork, then [`Zygote::forked`] in the zygote and
/// [`Zygote::in_child`] in the child.
pub(crate) struct Zygote {
    /// `None` only in a forked child, which closed it.
    control: Option<OwnedFd>,
    filter: Vec<libc::sock_filter>,
    landlock: Option<Rules>,
    bounding: Vec<libc::c_ulong>,
    sigchld: Option<ChildSignals>,
    /// The fork request being served, and its descriptors.
    request: Option<(Message, Vec<OwnedFd>)>,
    /// This process's own pid namespace, to return to after `prepare_fork`.
    own_pid_ns: Option<OwnedFd>,
    /// Children it forked for hearth and has not reaped: only their exits are reported (other
    /// processes, such as orphans reparented to it, are reaped silently).
    forked: std::collections::HashSet<i32>,
    /// Namespace sets for its next children, made ahead by its helper process.
    spares: Spares,
    /// The set the child of the request being served enters, when one was ready.
    spare: Option<Spare>,
    /// The zygote's own work after the last fork it answered, left until it next wakes
    /// ([`Zygote::after_fork`]).
    after: Option<AfterFork>,
    /// Its working directory, where a child that enters a prepared mount namespace goes back
    /// to (`setns` moves it to the namespace's root).
    cwd: std::ffi::CString,
    /// The pages its children write, learned from one of them and pinned
    /// ([`crate::hotpages`]).
    hot_pages: crate::hotpages::HotPages,
}

/// What the zygote still has to do after a fork once it has answered hearth (and gone back to
/// its own pid namespace, and closed its copies of the error pipe and of the namespace set the
/// child entered): its copies of the request's other descriptors to close, the child to
/// record, and the runtime's parent hook. Done when it next
/// wakes ([`Zygote::next_request`]), so that the child, which shares its CPU, runs first: none
/// of it is on the child's path, and every page the zygote writes before the child has its
/// own copy is copied first. (After a failed fork, at once.)
struct AfterFork {
    /// The child forked, if the fork succeeded.
    pid: Option<i32>,
    /// The request's descriptors and the child's pidfd, closed when this is dropped (after a
    /// fork, the error pipe is closed at once: its end of file tells hearth the child's setup
    /// is done).
    fds: Vec<OwnedFd>,
}

/// Namespace sets the zygote's helper keeps ready.
const SPARES: usize = 2;

/// How long the zygote waits, after a fork, before it asks its helper for more sets when no
/// child has exited meanwhile (milliseconds). Not at once: the helper would take the CPU from
/// the child just forked, which is setting itself up. (Its `SCHED_IDLE` does not stop that
/// once hearth has moved the child into a cgroup of its own: the kernel then weighs the two
/// cgroups, not the two processes.) A child's exit asks at once.
const REFILL_QUIET_MS: libc::c_int = 1;

/// The zygote's helper process and the namespace sets it made (see [`helper`]). The default
/// has no helper.
#[derive(Default)]
struct Spares {
    /// The zygote's end of the socket to the helper (non-blocking); `None` once the helper
    /// failed or could not be started: children then create their namespaces themselves.
    helper: Option<OwnedFd>,
    ready: Vec<Spare>,
    /// Sets asked for and not received yet.
    asked: usize,
    /// Forks used sets since the last refill: it asks for sets with a `/tmp` of this size.
    wanted: Option<u64>,
    /// Whether a set comes with a landlock ruleset (the zygote has rules).
    with_ruleset: bool,
}

/// A mount namespace with its own `/tmp` mounted, an ipc and a uts namespace, and the landlock
/// ruleset for that `/tmp` (where the zygote has rules), for one child.
struct Spare {
    tmp_bytes: u64,
    /// Mount, ipc and uts namespace, then the ruleset.
    fds: Vec<OwnedFd>,
}

impl Spares {
    /// Starts the helper (see [`helper`]); without one, every child makes its own namespaces.
    fn start(landlock: Option<&Rules>) -> Self {
        Self {
            helper: start_helper(landlock).ok(),
            with_ruleset: landlock.is_some(),
            ..Self::default()
        }
    }

    /// Takes in the sets the helper sent; a helper that failed or broke the protocol is
    /// dropped (it exits when its socket closes).
    fn receive(&mut self) {
        let Some(helper) = &self.helper else {
            return;
        };
        let nfds = if self.with_ruleset { 4 } else { 3 };
        let mut fds = Vec::with_capacity(zygote::MAX_FDS);
        loop {
            fds.clear();
            match zygote::recv(helper, &mut fds, true) {
                Ok(Some(m)) if m.kind == Kind::Prepared && m.c == 0 && fds.len() == nfds => {
                    self.asked = self.asked.saturating_sub(1);
                    self.ready.push(Spare {
                        tmp_bytes: m.b,
                        fds: std::mem::take(&mut fds),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A failure, garbage or a hang-up: no more sets.
                _ => {
                    self.helper = None;
                    self.ready.clear();
                    return;
                }
            }
        }
    }

    /// A ready set with a `/tmp` of `tmp_bytes`, if any (the socket is read only when none is
    /// ready: this is on the fork's path).
    fn take(&mut self, tmp_bytes: u64) -> Option<Spare> {
        let find = |ready: &[Spare]| ready.iter().position(|s| s.tmp_bytes == tmp_bytes);
        let at = match find(&self.ready) {
            Some(at) => at,
            None => {
                self.receive();
                find(&self.ready)?
            }
        };
        Some(self.ready.swap_remove(at))
    }

    /// Asks for sets until [`SPARES`] are ready or coming, for children with a `/tmp` of the
    /// size last forked with (sets of another size are dropped).
    fn refill(&mut self) {
        let (Some(helper), Some(tmp_bytes)) = (&self.helper, self.wanted.take()) else {
            return;
        };
        self.ready.retain(|s| s.tmp_bytes == tmp_bytes);
        while self.ready.len() + self.asked < SPARES {
            let ask = Message::new(Kind::Prepare, 0, tmp_bytes, 0);
            if zygote::send(helper.as_fd(), &ask, &[]).is_err() {
                self.helper = None;
                self.ready.clear();
                return;
            }
            self.asked += 1;
        }
    }
}

impl Zygote {
    /// Reads what hearth left for the children (fds 5 and 6, the bounding set), checks the
    /// process is single-threaded, and tells the scheduler it is ready.
    pub(crate) fn start(control: OwnedFd) -> Result<Self, ZygoteError> {
        let filter = read_inherited(FILTER_FD, 8 * usize::from(u16::MAX))
            .and_then(|bytes| {
                bytes.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "fd 5 is not open"))
            })
            .and_then(|bytes| decode_filter(&bytes))
            .map_err(ZygoteError::Setup)?;
        let landlock = read_inherited(RULES_FD, 1 << 20)
            .and_then(|bytes| bytes.as_deref().map(Rules::decode).transpose())
            .map_err(ZygoteError::Setup)?;
        let none: libc::c_ulong = 0;
        // The capabilities left in the bounding set (those hearth kept for the children's
        // setup), read once: each child drops them.
        let bounding: Vec<libc::c_ulong> = (0..64)
            // SAFETY: PR_CAPBSET_READ takes integers; it fails past the last capability.
            .filter(|&cap| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, none, none, none) } > 0)
            .collect();
        single_threaded().map_err(ZygoteError::Setup)?;
        collapse_into_huge_pages();
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| std::ffi::CString::new(d.into_os_string().into_encoded_bytes()).ok())
            .unwrap_or_else(|| c"/".to_owned());
        // Before SIGCHLD is blocked: the helper starts with the signal mask Init left.
        let spares = Spares::start(landlock.as_ref());
        let sigchld = ChildSignals::block().map_err(ZygoteError::Setup)?;
        zygote::send(control.as_fd(), &Message::new(Kind::Ready, 0, 0, 0), &[])
            .map_err(ZygoteError::Control)?;
        Ok(Self {
            control: Some(control),
            filter,
            landlock,
            bounding,
            sigchld: Some(sigchld),
            request: None,
            own_pid_ns: None,
            forked: std::collections::HashSet::new(),
            spares,
            spare: None,
            after: None,
            cwd,
            hot_pages: crate::hotpages::HotPages::new(),
        })
    }

    /// The zygote loop: waits for a fork request, forks through libc (with the runtime's
    /// `hooks` around it) and answers hearth, until hearth retires it. Returns in a forked child,
    /// or with the error that ends the zygote. After a fork the zygote answers and goes back to
    /// waiting at once: hearth prepares the child's cgroup meanwhile, and the child, which runs
    /// on this CPU once the zygote sleeps, waits for no more than that. The zygote's own
    /// after-fork work (`hooks.parent` included) waits until it next wakes ([`AfterFork`]).
    pub(crate) fn serve(mut self, hooks: &ForkHooks) -> Served {
        match self.fork_until_child(hooks) {
            Ok(()) => {
                let channel = self.in_child();
                if channel.is_ok() {
                    call(hooks.child);
                }
                Served::Child(channel)
            }
            Err(e) => Served::Ended(e),
        }
    }

    /// [`Zygote::serve`]'s loop: returns `Ok` in a forked child (not yet set up), `Err` in the
    /// zygote.
    fn fork_until_child(&mut self, hooks: &ForkHooks) -> Result<(), ZygoteError> {
        loop {
            self.next_request(hooks)?;
            // Before the pid namespace: a process a hook starts stays in the zygote's.
            call(hooks.before);
            if let Err(e) = self.prepare_fork() {
                call(hooks.parent);
                return Err(e);
            }
            // SAFETY: the process is single-threaded (checked by Zygote::start), so the child
            // is a consistent copy; glibc's fork runs the registered atfork handlers.
            let answered = match unsafe { libc::fork() } {
                0 => return Ok(()),
                pid if pid > 0 => self.forked(pid),
                _ => {
                    let errno = io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO);
                    self.fork_failed(errno)
                }
            };
            // A child answered for: the rest once the zygote next wakes ([`AfterFork`]). No
            // child (a failed fork), or the zygote ends: at once.
            let forked = self.after.as_ref().is_some_and(|after| after.pid.is_some());
            if answered.is_err() || !forked {
                if self.close_after_fork() {
                    call(hooks.parent);
                }
                answered?;
            }
        }
    }

    /// Waits for the next fork request, reporting exited children meanwhile. Once it wakes, it
    /// first finishes what was left after the last fork: the descriptors closed and the child
    /// recorded at once (so that an exit among the events is reported), `hooks.parent` once the
    /// events are handled.
    fn next_request(&mut self, hooks: &ForkHooks) -> Result<(), ZygoteError> {
        loop {
            let woke = self.wait();
            let hook_due = self.close_after_fork();
            let handled = woke.and_then(|polled| self.handle(polled));
            if hook_due {
                call(hooks.parent);
            }
            self.hot_pages.poll(self.forked.len());
            if handled? {
                return Ok(());
            }
        }
    }

    /// Sleeps until a request, a child's exit, a set from the helper or (when the helper should
    /// make sets) [`REFILL_QUIET_MS`] pass; returns the polled descriptors (control socket,
    /// signalfd, helper socket), `None` when the time passed or a signal interrupted the wait.
    fn wait(&mut self) -> Result<Option<[libc::pollfd; 3]>, ZygoteError> {
        let sigchld = self.sigchld.as_ref().map_or(-1, |s| s.fd.as_raw_fd());
        let control = self.control()?.as_raw_fd();
        // (poll skips a negative fd: no helper.)
        let helper = self.spares.helper.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let mut polled = [control, sigchld, helper].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let timeout = if self.spares.wanted.is_some() {
            REFILL_QUIET_MS
        } else {
            -1
        };
        // SAFETY: three valid pollfds.
        match unsafe { libc::poll(polled.as_mut_ptr(), 3, timeout) } {
            0 => Ok(None),
            ready if ready > 0 => Ok(Some(polled)),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(None)
                } else {
                    Err(ZygoteError::Control(e))
                }
            }
        }
    }

    /// Handles what [`Zygote::wait`] returned: reaps and reports exited children, takes in the
    /// helper's sets, asks it for more, and takes a fork request; returns whether one came.
    fn handle(&mut self, polled: Option<[libc::pollfd; 3]>) -> Result<bool, ZygoteError> {
        let Some(polled) = polled else {
            // The quiet time passed (or a signal came): sets for the next children.
            self.spares.refill();
            return Ok(false);
        };
        if polled[1].revents != 0 {
            if let Some(s) = &self.sigchld {
                s.drain();
            }
            let control = self.control.as_ref().ok_or(ZygoteError::Closed)?;
            reap(control, &mut self.forked)?;
            self.spares.refill();
        }
        if polled[2].revents != 0 {
            self.spares.receive();
        }
        if polled[0].revents == 0 {
            return Ok(false);
        }
        let mut fds = Vec::with_capacity(zygote::MAX_FDS);
        match zygote::recv(self.control()?, &mut fds, false) {
            Ok(Some(m)) if m.kind == Kind::Fork && fds.len() == zygote::FORK_FDS => {
                self.spare = self.spares.take(m.b);
                self.request = Some((m, fds));
                Ok(true)
            }
            Ok(Some(_)) => Ok(false),
            Ok(None) => Err(ZygoteError::Closed),
            Err(e) => Err(ZygoteError::Control(e)),
        }
    }

    /// Before forking through libc: the next child is created in a new pid namespace (the
    /// others it needs, it creates itself in [`Zygote::in_child`]).
    fn prepare_fork(&mut self) -> Result<(), ZygoteError> {
        if self.own_pid_ns.is_none() {
            let ns = std::fs::File::open("/proc/self/ns/pid").map_err(ZygoteError::Setup)?;
            self.own_pid_ns = Some(ns.into());
        }
        self.hot_pages.before_fork(&self.forked);
        // SAFETY: unshare with a constant flag.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } < 0 {
            return Err(ZygoteError::Setup(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// In the zygote after a libc fork made child `pid`: the answer to the scheduler, and the
    /// zygote's copy of the error pipe closed; the rest is left in [`AfterFork`] (the child runs
    /// on this CPU once the zygote sleeps, and the scheduler moves it into its cgroup
    /// meanwhile).
    fn forked(&mut self, pid: i32) -> Result<(), ZygoteError> {
        // (fork returned the pid as this process's own pid namespace numbers it.)
        // SAFETY: pidfd_open of our own child; the fd returned is new.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            // SAFETY: kill of our own child, which waits for hearth's go-ahead.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return self.fork_failed(errno);
        }
        // SAFETY: pidfd_open returned a new fd that this process owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(i32::try_from(pidfd).unwrap_or(-1)) };
        let (request, fds) = self.request.take().unzip();
        let (seq, tmp_bytes) = request.map_or((0, 0), |m| (m.a, m.b));
        // The set it entered (now the child's alone once this process closes its copies).
        let spare = self.spare.take();
        let prepared = spare.as_ref().map_or(0, |_| zygote::FORKED_PREPARED);
        let reply = Message::new(Kind::Forked, seq, pid.unsigned_abs().into(), prepared);
        let answer = pidfd.as_raw_fd();
        let mut fds = fds.unwrap_or_default();
        fds.push(pidfd);
        self.after = Some(AfterFork {
            pid: Some(pid),
            fds,
        });
        let sent = self.control().and_then(|control| {
            zygote::send(control.as_fd(), &reply, &[answer]).map_err(ZygoteError::Control)
        });
        if let Some(after) = &mut self.after {
            // The error pipe (see `AfterFork`).
            if after.fds.len() > zygote::FORK_ERROR_PIPE {
                drop(after.fds.remove(zygote::FORK_ERROR_PIPE));
            }
        }
        // The set the child entered: at once too, while the child holds its namespaces. Closed
        // after the child's exit, the zygote's copy of the mount namespace would be the last,
        // and tearing it down waits for an RCU grace period (expedited: up to milliseconds on
        // a VM), delaying the next fork.
        drop(spare);
        // At once, not when it next wakes: a process started meanwhile (by a signal handler
        // Init installed) must not land in the child's pid namespace.
        let restored = self.restore_pid_ns();
        self.hot_pages.forked(pid);
        sent?;
        restored?;
        self.spares.wanted = Some(tmp_bytes);
        Ok(())
    }

    /// The fork failed with `errno`: tells the scheduler (the request's descriptors are closed
    /// and the parent hook called right after, see [`Zygote::fork_until_child`]).
    fn fork_failed(&mut self, errno: i32) -> Result<(), ZygoteError> {
        let (request, fds) = self.request.take().unzip();
        self.after = Some(AfterFork {
            pid: None,
            fds: fds.unwrap_or_default(),
        });
        let seq = request.map_or(0, |m| m.a);
        let reply = Message::new(Kind::Forked, seq, 0, u64::from(errno.unsigned_abs()));
        let sent = self.control().and_then(|control| {
            zygote::send(control.as_fd(), &reply, &[]).map_err(ZygoteError::Control)
        });
        // After the answer: the zygote's copy of the set may be the last, and tearing its mount
        // namespace down waits (see `forked`).
        self.spare = None;
        let restored = self.restore_pid_ns();
        sent?;
        restored
    }

    /// What was left after the last fork ([`AfterFork`]), but the parent hook: the child
    /// recorded for reaping, the descriptors closed. Returns whether the parent hook is due
    /// (the caller calls it); false when nothing was left.
    fn close_after_fork(&mut self) -> bool {
        let Some(after) = self.after.take() else {
            return false;
        };
        if let Some(pid) = after.pid {
            self.forked.insert(pid);
        }
        true
    }

    fn control(&self) -> Result<&OwnedFd, ZygoteError> {
        self.control.as_ref().ok_or(ZygoteError::Closed)
    }

    fn restore_pid_ns(&mut self) -> Result<(), ZygoteError> {
        if let Some(ns) = &self.own_pid_ns {
            // SAFETY: setns to this process's own pid namespace, for its future children.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
                return Err(ZygoteError::Setup(io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    /// In the forked child: sets it up (see the module docs) and attaches its channel. Never
    /// returns on a failed step: the child reports it and exits 127.
    fn in_child(&mut self) -> Result<GuestChannel, ZygoteError> {
        // The signal mask back to normal, the zygote's own descriptors closed (fd 3, the
        // control socket, before the channel takes its number).
        self.sigchld = None;
        self.control = None;
        // The helper's socket and the sets meant for other children.
        self.spares = Spares::default();
        let (request, fds) = self.request.take().unwrap_or_else(|| {
            // SAFETY: _exit without running any of the zygote's handlers.
            unsafe { libc::_exit(127) }
        });
        // hearth says whether its children are landlocked: then the rules must be there, and a
        // child without them fails at that step rather than run unrestricted.
        let landlock = match (request.c & zygote::FORK_LANDLOCK != 0, &self.landlock) {
            (false, _) => Landlock::Off,
            (true, Some(rules)) => Landlock::Rules(rules),
            (true, None) => Landlock::Missing,
        };
        let spare = self.spare.take();
        let namespaces = match &spare {
            Some(set) => Namespaces::Prepared(set, &self.cwd),
            None => Namespaces::Own(request.b),
        };
        let kept = (&self.filter[..], landlock, &self.bounding[..]);
        let channel = child(&fds, namespaces, kept);
        // Closed with the others during the setup.
        std::mem::forget(spare);
        // Their numbers were closed or reused during the child's setup.
        std::mem::forget(fds);
        if let Some(ns) = self.own_pid_ns.take() {
            std::mem::forget(ns);
        }
        channel
    }
}

/// Backs the zygote's initialised memory with transparent huge pages where the kernel can: a
/// fork copies one page-table entry per 2 MiB huge page instead of 512, so its cost stops
/// growing with the heap Init built (a write in a child still copies only the 4 KiB it
/// touches: the kernel splits a shared huge page on write). Every private, writable,
/// anonymous mapping of at least 2 MiB is marked `MADV_HUGEPAGE` and collapsed now
/// (`MADV_COLLAPSE`, Linux 6.1+); where either is refused the memory stays as it was.
fn collapse_into_huge_pages() {
    const HUGE: usize = 2 << 20;
    const MADV_COLLAPSE: libc::c_int = 25;
    for m in crate::maps::parse(&crate::maps::read()) {
        if !m.anonymous() || !m.private_writable() {
            continue;
        }
        let (start, end) = (m.start.next_multiple_of(HUGE), m.end / HUGE * HUGE);
        if end <= start {
            continue;
        }
        // SAFETY: advice on this process's own mapping, aligned to 2 MiB inside it; neither
        // call changes the memory's contents.
        unsafe {
            let addr = start as *mut libc::c_void;
            if libc::madvise(addr, end - start, libc::MADV_HUGEPAGE) == 0 {
                libc::madvise(addr, end - start, MADV_COLLAPSE);
            }
        }
    }
}

/// Reaps every exited child and tells the scheduler how each one it forked for it ended.
fn reap(control: &OwnedFd, forked: &mut std::collections::HashSet<i32>) -> Result<(), ZygoteError> {
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
        if !forked.remove(&pid) {
            continue;
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

/// The contents of the memfd hearth left at `fd` (which is closed), at most `max` bytes; `None`
/// if nothing is open there.
fn read_inherited(fd: RawFd, max: usize) -> io::Result<Option<Vec<u8>>> {
    // SAFETY: F_GETFD only queries the table; the fd, when open, was passed for this use.
    let file = unsafe {
        if libc::fcntl(fd, libc::F_GETFD) < 0 {
            return Ok(None);
        }
        std::fs::File::from_raw_fd(fd)
    };
    // By offset: the file description (and its position) is shared with other zygotes.
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if len > max {
        return Err(io::Error::from(io::ErrorKind::InvalidData));
    }
    let mut bytes = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0)?;
    Ok(Some(bytes))
}

/// The children's seccomp program, from fd 5's bytes.
fn decode_filter(bytes: &[u8]) -> io::Result<Vec<libc::sock_filter>> {
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

/// Fails unless this process has exactly one thread.
fn single_threaded() -> io::Result<()> {
    let threads = std::fs::read_to_string("/proc/self/stat")?
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(17).map(str::to_owned))
        .and_then(|n| n.parse::<u32>().ok());
    if threads == Some(1) {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "a zygote must be single-threaded when it forks; this process has {} threads \
         (threads started during Init would not exist in forked environments)",
        threads.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
    )))
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
            // Init may have ignored SIGCHLD: children would then be reaped unseen.
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
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

/// What a child keeps from the zygote: its seccomp program, its landlock rules and the
/// capabilities left in its bounding set.
type Kept<'a> = (&'a [libc::sock_filter], Landlock<'a>, &'a [libc::c_ulong]);

/// Whether a child landlocks itself.
#[derive(Clone, Copy)]
enum Landlock<'a> {
    /// hearth did not ask for landlock (a kernel without it).
    Off,
    /// With these rules.
    Rules(&'a Rules),
    /// hearth asked for it but the zygote has no rules: the child fails at that step.
    Missing,
}

/// How a child gets its mount, ipc and uts namespaces and its `/tmp`.
enum Namespaces<'a> {
    /// Creates them, with a `/tmp` of this many bytes.
    Own(u64),
    /// Enters the set the helper made, then goes back to this working directory.
    Prepared(&'a Spare, &'a std::ffi::CStr),
}

/// A forked child's setup; on failure it reports the step and exits with status 127.
fn child(
    fds: &[OwnedFd],
    namespaces: Namespaces<'_>,
    kept: Kept<'_>,
) -> Result<GuestChannel, ZygoteError> {
    let mut error_pipe = fds[zygote::FORK_ERROR_PIPE].as_raw_fd();
    if let Err(failure) = enter(fds, namespaces, kept, &mut error_pipe) {
        fail(error_pipe, failure);
    }
    // SAFETY: fd 3 is the channel, just placed there and owned by nobody else.
    let channel = unsafe { OwnedFd::from_raw_fd(3) };
    GuestChannel::from_fd(channel).map_err(ZygoteError::Channel)
}

/// Reports a failed step on the error pipe and exits with status 127, running none of the
/// zygote's destructors or atexit handlers.
fn fail(error_pipe: RawFd, (step, errno): (ChildStep, i32)) -> ! {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    record[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write of a local buffer, then _exit.
    unsafe {
        libc::write(error_pipe, record.as_ptr().cast(), record.len());
        libc::_exit(127)
    }
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

/// Steps 1-4 of the module docs. `fds`: channel, stdout, stderr, error pipe, go-ahead pipe.
/// `error_pipe` follows the pipe when it moves to fd 4.
fn enter(
    fds: &[OwnedFd],
    namespaces: Namespaces<'_>,
    (filter, landlock, bounding): Kept<'_>,
    error_pipe: &mut RawFd,
) -> Result<(), (ChildStep, i32)> {
    let none: libc::c_ulong = 0;
    // SAFETY: plain syscalls with valid pointers to local, NUL-terminated strings and buffers.
    unsafe {
        let ruleset = match namespaces {
            Namespaces::Own(tmp_bytes) => {
                make_namespaces(tmp_bytes)?;
                None
            }
            Namespaces::Prepared(set, cwd) => {
                for (fd, kind) in
                    set.fds
                        .iter()
                        .zip([libc::CLONE_NEWNS, libc::CLONE_NEWIPC, libc::CLONE_NEWUTS])
                {
                    check(
                        ChildStep::EnterNamespaces,
                        libc::setns(fd.as_raw_fd(), kind).into(),
                    )?;
                }
                // Entering a mount namespace moves the working directory to its root.
                check(ChildStep::EnterNamespaces, libc::chdir(cwd.as_ptr()).into())?;
                set.fds.get(3).map(AsRawFd::as_raw_fd)
            }
        };
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
        // The go-ahead: hearth moved this process into its cgroup (EOF: it could not).
        let mut go = [0u8; 1];
        let r = loop {
            let r = libc::read(
                fds[zygote::FORK_GO_AHEAD].as_raw_fd(),
                go.as_mut_ptr().cast(),
                1,
            );
            if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break r;
            }
        };
        if r == 0 {
            return Err((ChildStep::JoinCgroup, libc::EPIPE));
        }
        check(ChildStep::JoinCgroup, r as libc::c_long)?;
        check(
            ChildStep::UnshareCgroupNamespace,
            libc::unshare(libc::CLONE_NEWCGROUP).into(),
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
        match (landlock, ruleset) {
            (Landlock::Off, _) => {}
            (Landlock::Rules(rules), prepared) => {
                // The helper's ruleset, or one built now; either is closed with every other
                // descriptor below.
                let ruleset = match prepared {
                    Some(ruleset) => ruleset,
                    None => build_ruleset(rules)?,
                };
                check(
                    ChildStep::LandlockRestrict,
                    libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32),
                )?;
            }
            (Landlock::Missing, _) => return Err((ChildStep::LandlockCreate, libc::ENOENT)),
        }
        // Everything above fd 9 first, so no target number clobbers a source.
        let mut high = [0; 4];
        for (i, fd) in fds[..=zygote::FORK_ERROR_PIPE].iter().enumerate() {
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

/// Creates this process's own mount, ipc and uts namespaces and mounts a `/tmp` of `tmp_bytes`
/// in the new mount namespace.
fn make_namespaces(tmp_bytes: u64) -> Result<(), (ChildStep, i32)> {
    let tmp_options = format!("size={tmp_bytes},mode=1777\0");
    // SAFETY: unshare with constant flags; mount with NUL-terminated strings.
    unsafe {
        check(
            ChildStep::EnterNamespaces,
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS).into(),
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
        )
    }
}

/// Builds a landlock ruleset from `rules`, in this process's mount namespace (a rule names the
/// inode its path leads to there). The caller restricts itself with it (needs `no_new_privs`,
/// which the zygote has) and closes it.
fn build_ruleset(rules: &Rules) -> Result<RawFd, (ChildStep, i32)> {
    /// `struct landlock_path_beneath_attr`, packed as in the kernel's ABI.
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    const LANDLOCK_RULE_PATH_BENEATH: libc::c_long = 1;
    let attr = rules.attr();
    // SAFETY: `attr` is at least `attr_size` bytes; the paths are NUL-terminated; every fd
    // opened here but the ruleset is closed here.
    unsafe {
        let ruleset = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr.as_ptr(),
            rules.attr_size(),
            0u32,
        );
        check(ChildStep::LandlockCreate, ruleset)?;
        let ruleset =
            libc::c_int::try_from(ruleset).map_err(|_| (ChildStep::LandlockCreate, libc::EBADF))?;
        for (path, access) in &rules.rules {
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if let Err(e) = check(ChildStep::LandlockRule, fd.into()) {
                libc::close(ruleset);
                return Err(e);
            }
            let rule = PathBeneath {
                allowed_access: *access,
                parent_fd: fd,
            };
            let added = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                std::ptr::from_ref(&rule),
                0u32,
            );
            let errno = io::Error::last_os_error().raw_os_error();
            libc::close(fd);
            if added < 0 {
                libc::close(ruleset);
                return Err((ChildStep::LandlockRule, errno.unwrap_or(libc::EIO)));
            }
        }
        Ok(ruleset)
    }
}

/// Starts the zygote's helper: a process forked from it (so in its pid namespace, killed with
/// it as with every process there; and with `PR_SET_PDEATHSIG`) that makes, on each
/// `Prepare`, a set of namespaces for a future child, off the path of the fork that will use
/// it (see [`Spare`]): a mount namespace copied from the zygote's with a fresh tmpfs at
/// `/tmp`, an ipc and a uts namespace, and the landlock ruleset whose `/tmp` rule names that
/// tmpfs. It runs under `SCHED_IDLE`, so it makes sets with CPU time nothing else wants.
/// Returns the zygote's end of their socket.
fn start_helper(landlock: Option<&Rules>) -> io::Result<OwnedFd> {
    let (ours, theirs) = zygote::socket_pair()?;
    // SAFETY: getpid has no preconditions.
    let zygote_pid = unsafe { libc::getpid() };
    // SAFETY: the zygote is single-threaded (checked before this is called), so the child is a
    // consistent copy; it runs only `helper`, which never returns.
    match unsafe { libc::fork() } {
        0 => helper(theirs.as_raw_fd(), landlock, zygote_pid),
        pid if pid > 0 => Ok(ours),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The helper's loop (see [`start_helper`]). Exits when the zygote closes the socket, and after
/// reporting a set it could not make.
fn helper(socket: RawFd, landlock: Option<&Rules>, zygote_pid: i32) -> ! {
    // SAFETY: the helper owns no resource but `socket` (every other descriptor is the
    // zygote's: its control socket above all, whose closing tells hearth the zygote is gone);
    // prctl, sched_setscheduler and setpriority take integers and a local struct, open a
    // NUL-terminated path.
    let base = unsafe {
        let at = socket.unsigned_abs();
        libc::syscall(libc::SYS_close_range, 3u32, at.saturating_sub(1), 0u32);
        libc::syscall(libc::SYS_close_range, at.saturating_add(1), u32::MAX, 0u32);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != zygote_pid {
            libc::_exit(0);
        }
        // SCHED_IDLE: behind every other task of its cgroup. (Not behind a child once hearth
        // has moved it into a cgroup of its own: the kernel then weighs the two cgroups; hence
        // the zygote's refill timing, see REFILL_QUIET_MS.)
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
        libc::open(
            c"/proc/self/ns/mnt".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: the descriptor was inherited for the helper's use alone.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    let mut fds = Vec::new();
    loop {
        fds.clear();
        let tmp_bytes = match zygote::recv(&socket, &mut fds, false) {
            Ok(Some(m)) if m.kind == Kind::Prepare => m.b,
            Ok(Some(_)) => continue,
            // SAFETY: _exit ends the helper without running the zygote's handlers.
            _ => unsafe { libc::_exit(0) },
        };
        let (fds, errno) = match prepare(base, tmp_bytes, landlock) {
            Ok(fds) => (fds, 0),
            Err((_, errno)) => (Vec::new(), errno),
        };
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let answer = Message::new(
            Kind::Prepared,
            0,
            tmp_bytes,
            u64::from(errno.unsigned_abs()),
        );
        let sent = zygote::send(socket.as_fd(), &answer, &raw);
        drop(fds);
        if sent.is_err() || errno != 0 {
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    }
}

/// One set of namespaces for a child (see [`start_helper`]): mount, ipc and uts namespace, then
/// the ruleset where there are rules. `base` is the zygote's mount namespace, which each set's
/// copies (rather than the previous set's, with its `/tmp`).
fn prepare(
    base: RawFd,
    tmp_bytes: u64,
    landlock: Option<&Rules>,
) -> Result<Vec<OwnedFd>, (ChildStep, i32)> {
    // SAFETY: setns with a namespace fd (or -1, which fails); open with NUL-terminated paths;
    // each fd opened here is owned by the vector returned.
    unsafe {
        check(
            ChildStep::EnterNamespaces,
            libc::setns(base, libc::CLONE_NEWNS).into(),
        )?;
        make_namespaces(tmp_bytes)?;
        let mut fds = Vec::with_capacity(4);
        for path in [
            c"/proc/self/ns/mnt",
            c"/proc/self/ns/ipc",
            c"/proc/self/ns/uts",
        ] {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            check(ChildStep::EnterNamespaces, fd.into())?;
            fds.push(OwnedFd::from_raw_fd(fd));
        }
        if let Some(rules) = landlock {
            fds.push(OwnedFd::from_raw_fd(build_ruleset(rules)?));
        }
        Ok(fds)
    }
}

/// Takes ownership of the control socket at `fd` (inherited for this purpose).
pub(crate) fn adopt_control(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: the caller checked that `fd` is an open socket; hearth passed it to this process
    // to be owned by the runtime.
    is_socket(fd).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
