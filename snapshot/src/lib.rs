//! Warm images of execution environments: the zygote fork-server.
//!
//! A [`Zygote`] is a function's program started once, in a sandbox of its own (see
//! `hearth_sandbox::EnvSpec::zygote`), that has run its Init and then forks a new environment
//! each time it is asked: the child enters its own pid, mount, ipc and uts namespaces and its
//! own cgroup, mounts its own `/tmp` and `/proc`, drops every capability, restricts itself with
//! landlock and loads the native seccomp policy, and only then runs function code (the
//! zygote's side is `hearth_runtime`'s zygote mode; the protocol is [`hearth_ipc::zygote`]).
//! A cold start then costs a fork of an initialised process instead of building a root,
//! executing a program and running its Init.
//!
//! Checkpoint/restore (CRIU) is not implemented: CRIU 3.17 from Debian fails on the kernel hearth
//! is developed on (it cannot restore the vDSO), so runtimes that cannot fork start from
//! nothing.
//!
//! Everything a zygote sends is checked: it runs function code. A zygote that does not answer
//! a fork within [`FORK_TIMEOUT`], answers out of turn or sends garbage is reported broken; the
//! caller kills it and starts environments from nothing meanwhile.
// Under `cfg(loom)` (the model checks) the crate is empty: it needs the ipc crate's sockets.
#![cfg(not(loom))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use hearth_ipc::zygote::{self as protocol, Kind, Message};
use hearth_sandbox::{EnvSpec, Environment, ExitStatus, Limits, Sandbox, SpawnError, ZygoteSpec};

/// How long the scheduler spins for a fork's answer before it sleeps.
pub const FORK_SPIN: Duration = Duration::from_micros(300);

/// How long a fork may take before the zygote is considered hung.
pub const FORK_TIMEOUT: Duration = Duration::from_millis(100);

/// Messages read from a zygote per call, at most (one that floods its socket cannot hold the
/// caller in a loop).
const READ_BATCH: usize = 64;

/// Children a zygote may have forked and not reported exited.
const MAX_CHILDREN: usize = 4096;

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where a zygote stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZygoteState {
    /// Running its Init.
    Starting,
    /// Takes fork requests.
    Ready,
    /// Exited, closed its socket, or broke the protocol; it should be killed and replaced.
    Broken(String),
}

/// Why a fork failed.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The zygote is not ready (still initialising, or broken).
    #[error("the zygote is not ready")]
    NotReady,
    /// Creating the child's cgroup or error pipe.
    #[error("preparing the child: {0}")]
    Prepare(String),
    /// The zygote could not fork (the errno it reported).
    #[error("the zygote could not fork: {0}")]
    Fork(io::Error),
    /// The zygote stopped answering or broke the protocol; it is now [`ZygoteState::Broken`].
    #[error("the zygote is broken: {0}")]
    Broken(String),
}

/// What a forked environment gets.
#[derive(Debug)]
pub struct ChildSpec<'a> {
    /// The channel memfd (fd 3 in the child).
    pub channel: BorrowedFd<'a>,
    /// Standard output (default `/dev/null`).
    pub stdout: Option<BorrowedFd<'a>>,
    /// Standard error (default `/dev/null`).
    pub stderr: Option<BorrowedFd<'a>>,
    /// The child's cgroup limits.
    pub limits: Limits,
    /// Size of its `/tmp` in bytes.
    pub tmp_bytes: u64,
}

/// One zygote process and its control socket.
#[derive(Debug)]
pub struct Zygote {
    id: u64,
    process: Environment,
    control: OwnedFd,
    state: ZygoteState,
    seq: u64,
    /// Children forked and not yet reported exited, by pid in the zygote's namespace, and
    /// whether their exit status is still wanted (false once their environment is gone).
    children: HashMap<u64, bool>,
    /// Exit statuses reported and not yet claimed, by pid in the zygote's namespace.
    exits: HashMap<u64, ExitStatus>,
    started: Instant,
    devnull: OwnedFd,
    /// Children that entered namespaces made ahead by the zygote's helper.
    prepared_forks: u64,
    /// How long [`Zygote::fork`] spins for the answer before it sleeps.
    fork_spin: Duration,
}

impl Zygote {
    /// Starts `spec`'s program as a zygote (`spec.channel` is replaced by the control socket).
    pub fn start(sandbox: &Sandbox, spec: &EnvSpec<'_>) -> Result<Self, SpawnError> {
        let (control, theirs) = protocol::socket_pair().map_err(SpawnError::Prepare)?;
        let devnull = std::fs::File::open("/dev/null").map_err(SpawnError::Prepare)?;
        let rules = landlock_rules(sandbox).map_err(SpawnError::Prepare)?;
        let process = sandbox.spawn(&EnvSpec {
            channel: theirs.as_fd(),
            zygote: Some(ZygoteSpec {
                landlock_rules: rules.as_ref().map(AsFd::as_fd),
            }),
            ..spec.clone()
        })?;
        Ok(Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            process,
            control,
            state: ZygoteState::Starting,
            seq: 0,
            children: HashMap::new(),
            exits: HashMap::new(),
            started: Instant::now(),
            devnull: devnull.into(),
            prepared_forks: 0,
            fork_spin: FORK_SPIN,
        })
    }

    /// This zygote's number, unique in the process (exit reports belong to one zygote).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The zygote process itself.
    pub fn process(&mut self) -> &mut Environment {
        &mut self.process
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// How long [`Zygote::fork`] spins for the answer before it sleeps ([`FORK_SPIN`] unless
    /// set). Zero suits a zygote that runs on the caller's CPU: spinning would only delay it.
    pub fn set_fork_spin(&mut self, spin: Duration) {
        self.fork_spin = spin;
    }

    /// How many of its children entered a mount, ipc and uts namespace (with `/tmp` mounted and
    /// the landlock ruleset built) that the zygote's helper process made ahead, off the fork's
    /// path; the others created theirs after the fork.
    pub fn prepared_forks(&self) -> u64 {
        self.prepared_forks
    }

    /// Reads what the zygote sent, without waiting, and says where it stands.
    pub fn poll(&mut self) -> &ZygoteState {
        if !matches!(self.state, ZygoteState::Broken(_)) {
            if let Err(why) = self.read_pending() {
                self.state = ZygoteState::Broken(why);
            }
        }
        &self.state
    }

    /// Marks the zygote broken (the caller kills and replaces it).
    pub fn set_broken(&mut self, why: &str) {
        self.state = ZygoteState::Broken(why.to_owned());
    }

    /// Reads every queued message; `Err` says why the zygote is broken.
    fn read_pending(&mut self) -> Result<(), String> {
        let mut fds = Vec::new();
        for _ in 0..READ_BATCH {
            match protocol::recv(&self.control, &mut fds, true) {
                Ok(Some(message)) => self.take(message, &fds)?,
                Ok(None) => return Err("it closed its control socket (it exited)".into()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("reading its control socket: {e}")),
            }
            fds.clear();
        }
        Ok(())
    }

    /// Handles an unsolicited message.
    fn take(&mut self, message: Message, fds: &[OwnedFd]) -> Result<(), String> {
        if !fds.is_empty() {
            return Err(format!("it sent descriptors with {:?}", message.kind));
        }
        match message.kind {
            Kind::Ready if self.state == ZygoteState::Starting => {
                self.state = ZygoteState::Ready;
                Ok(())
            }
            Kind::Exited => {
                let status = match protocol::decode_status(message.c) {
                    Ok(code) => ExitStatus::Exited(code),
                    Err(signal) => ExitStatus::Signaled(signal),
                };
                // Only once per child it forked (which bounds what is kept); kept only for a
                // child whose environment still wants it.
                match self.children.remove(&message.b) {
                    Some(true) => {
                        self.exits.insert(message.b, status);
                        Ok(())
                    }
                    Some(false) => Ok(()),
                    None => Err(format!(
                        "it reported the exit of {}, not a child it forked",
                        message.b
                    )),
                }
            }
            kind => Err(format!("it sent {kind:?} out of turn")),
        }
    }

    /// Forks a new environment. Blocks until the zygote answers (a fork takes well under a
    /// millisecond; [`FORK_TIMEOUT`] at most), then checks the pidfd it sent (a child of the
    /// zygote), moves the child into its cgroup and lets it go on: the zygote never holds a
    /// handle on any cgroup. Returns the environment and its pid in the zygote's namespace
    /// (the key of its exit report).
    pub fn fork(
        &mut self,
        sandbox: &Sandbox,
        child: &ChildSpec<'_>,
    ) -> Result<(Environment, u64), ForkError> {
        if *self.poll() != ZygoteState::Ready {
            return Err(ForkError::NotReady);
        }
        if self.children.len() >= MAX_CHILDREN {
            return Err(self.broken(format!(
                "it has reported no exit for {MAX_CHILDREN} of its children"
            )));
        }
        let prepare = |e: &dyn std::fmt::Display| ForkError::Prepare(e.to_string());
        // The child blocks reading the go-ahead: that pipe's read end is blocking.
        let ((errors, error_write), (go_read, go_write)) = hearth_sandbox::setup_error_pipe()
            .and_then(|errors| Ok((errors, hearth_sandbox::pipe(false)?)))
            .map_err(|e| prepare(&e))?;
        // In the protocol's order (`FORK_ERROR_PIPE`, `FORK_GO_AHEAD`).
        let fds: [_; protocol::FORK_FDS] = [
            child.channel.as_raw_fd(),
            child.stdout.unwrap_or(self.devnull.as_fd()).as_raw_fd(),
            child.stderr.unwrap_or(self.devnull.as_fd()).as_raw_fd(),
            error_write.as_raw_fd(),
            go_read.as_raw_fd(),
        ];
        self.seq += 1;
        // Where landlock is in force the child must apply it (it fails if it cannot).
        let flags = if sandbox.landlock_abi() > 0 {
            protocol::FORK_LANDLOCK
        } else {
            0
        };
        let request = Message::new(Kind::Fork, self.seq, child.tmp_bytes, flags);
        if let Err(e) = protocol::send(self.control.as_fd(), &request, &fds) {
            return Err(self.broken(format!("sending the fork request: {e}")));
        }
        drop((error_write, go_read));
        // The child's cgroup is made ready while the zygote wakes up and forks (tens of
        // microseconds each): it is needed only once the answer is in.
        let cgroup = sandbox.env_cgroup(&child.limits);
        let (pid, pidfd) = match self.await_forked() {
            Ok(forked) => forked,
            Err(e) => {
                if let Ok(Some(cgroup)) = cgroup {
                    let _ = cgroup.release();
                }
                return Err(e);
            }
        };
        // Without a cgroup the child is adopted only to be killed: it never gets the go-ahead.
        let (cgroup, failed) = match cgroup {
            Ok(cgroup) => (cgroup, None),
            Err(e) => (None, Some(prepare(&e))),
        };
        let env = match Environment::adopt(pidfd, errors, cgroup, self.process.pid()) {
            Ok(env) => env,
            Err(e) => return Err(self.broken(e.to_string())),
        };
        let joined = match failed {
            Some(e) => Err(e),
            None => env.join_cgroup().map_err(|e| prepare(&e)),
        };
        if let Err(e) = joined {
            self.children.insert(pid, false);
            // Dropping it kills it (it is waiting for the go-ahead) and frees the cgroup.
            drop(env);
            return Err(e);
        }
        self.children.insert(pid, true);
        // The go-ahead; a child that is gone already shows up as its exit.
        let _ = std::io::Write::write_all(&mut std::fs::File::from(go_write), &[1]);
        Ok((env, pid))
    }

    /// Waits for the `Forked` answer to the latest request: spinning first (for [`FORK_SPIN`]
    /// unless set otherwise: a fork takes about that long, and being woken from sleep would add
    /// an inter-processor wake-up), then sleeping.
    fn await_forked(&mut self) -> Result<(u64, OwnedFd), ForkError> {
        let began = Instant::now();
        let deadline = began + FORK_TIMEOUT;
        let mut fds = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.broken(format!(
                    "it did not answer a fork request within {FORK_TIMEOUT:?}"
                )));
            }
            let spinning = began.elapsed() < self.fork_spin;
            let ready = if spinning {
                std::hint::spin_loop();
                protocol::wait_readable(self.control.as_fd(), Duration::ZERO)
            } else {
                protocol::wait_readable(self.control.as_fd(), left)
            };
            match ready {
                Ok(false) if spinning => continue,
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Err(self.broken(format!("waiting for it: {e}"))),
            }
            fds.clear();
            let message = match protocol::recv(&self.control, &mut fds, true) {
                Ok(Some(message)) => message,
                Ok(None) => return Err(self.broken("it exited".into())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(self.broken(format!("reading its answer: {e}"))),
            };
            if message.kind != Kind::Forked {
                if let Err(why) = self.take(message, &fds) {
                    return Err(self.broken(why));
                }
                continue;
            }
            if message.a != self.seq {
                return Err(self.broken(format!(
                    "it answered request {} while {} was pending",
                    message.a, self.seq
                )));
            }
            let errno = message.c & u64::from(u32::MAX);
            let prepared = message.c & protocol::FORKED_PREPARED != 0;
            if message.c & !(u64::from(u32::MAX) | protocol::FORKED_PREPARED) != 0 {
                return Err(self.broken(format!("its answer has unknown flags {:#x}", message.c)));
            }
            if errno != 0 {
                if !fds.is_empty() {
                    return Err(self.broken("its failed fork carried descriptors".into()));
                }
                let errno = i32::try_from(errno).unwrap_or(libc::EIO);
                return Err(ForkError::Fork(io::Error::from_raw_os_error(errno)));
            }
            return match (fds.pop(), fds.is_empty()) {
                (Some(pidfd), true) => {
                    self.prepared_forks += u64::from(prepared);
                    Ok((message.b, pidfd))
                }
                _ => Err(self.broken("its answer did not carry exactly one pidfd".into())),
            };
        }
    }

    fn broken(&mut self, why: String) -> ForkError {
        self.state = ZygoteState::Broken(why.clone());
        ForkError::Broken(why)
    }

    /// The exit status the zygote reported for its child `pid`, waiting up to `wait` for the
    /// report (the child's exit and the zygote's report race).
    pub fn exit_status(&mut self, pid: u64, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.exits.remove(&pid) {
                return Some(status);
            }
            if matches!(self.poll(), ZygoteState::Broken(_)) {
                return None;
            }
            if let Some(status) = self.exits.remove(&pid) {
                return Some(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = protocol::wait_readable(self.control.as_fd(), left);
        }
    }

    /// Whether an environment it forked is still in use (its status still wanted).
    pub fn has_live_children(&self) -> bool {
        self.children.values().any(|wanted| *wanted)
    }

    /// Forgets a child's status (its environment is gone and nobody needs it); its exit
    /// report, if it has not come yet, is then accepted and dropped.
    pub fn forget(&mut self, pid: u64) {
        self.exits.remove(&pid);
        if let Some(wanted) = self.children.get_mut(&pid) {
            *wanted = false;
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Its children die with it: it is the init of their parent pid namespace.
        self.process.kill();
    }
}

/// The sandbox's landlock rules, encoded for a zygote's children ([`hearth_ipc::landlock`]) in a
/// sealed memfd; `None` where landlock is not in force.
fn landlock_rules(sandbox: &Sandbox) -> io::Result<Option<OwnedFd>> {
    let Some(rules) = sandbox.landlock_rules() else {
        return Ok(None);
    };
    let rules = hearth_ipc::landlock::Rules {
        abi: rules.abi,
        handled_fs: rules.handled_fs,
        scoped: rules.scoped,
        rules: rules.rules,
    };
    hearth_sandbox::sealed_memfd(c"hearth-landlock", &rules.encode()).map(Some)
}

#[cfg(test)]
mod tests {
    use hearth_ipc::zygote::ChildStep;
    use hearth_sandbox::Step;

    #[test]
    fn child_steps_are_numbered_as_the_sandbox_numbers_them() {
        for (child, step) in [
            (ChildStep::JoinCgroup, Step::JoinCgroup),
            (
                ChildStep::UnshareCgroupNamespace,
                Step::UnshareCgroupNamespace,
            ),
            (ChildStep::MountTmp, Step::MountTmp),
            (ChildStep::MountProc, Step::MountProc),
            (ChildStep::ArrangeFds, Step::ArrangeFds),
            (ChildStep::DropBoundingSet, Step::DropBoundingSet),
            (ChildStep::DropCapabilities, Step::DropCapabilities),
            (ChildStep::LandlockCreate, Step::LandlockCreate),
            (ChildStep::LandlockRule, Step::LandlockRule),
            (ChildStep::LandlockRestrict, Step::LandlockRestrict),
            (ChildStep::Seccomp, Step::Seccomp),
            (ChildStep::EnterNamespaces, Step::EnterNamespaces),
        ] {
            assert_eq!(child as u32, step as u32, "{child:?}");
        }
    }
}
