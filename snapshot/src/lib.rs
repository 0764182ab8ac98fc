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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use hearth_ipc::zygote::{self as protocol, Kind, Message};
use hearth_sandbox::{EnvSpec, Environment, ExitStatus, Limits, Sandbox, SpawnError};

/// How long the scheduler spins for a fork's answer before it sleeps.
pub const FORK_SPIN: Duration = Duration::from_micros(300);

/// How long a fork may take before the zygote is considered hung.
pub const FORK_TIMEOUT: Duration = Duration::from_millis(500);

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
    process: Environment,
    control: OwnedFd,
    state: ZygoteState,
    seq: u64,
    /// Exit statuses reported and not yet claimed, by pid in the zygote's namespace.
    exits: HashMap<u64, ExitStatus>,
    started: Instant,
    devnull: OwnedFd,
}

impl Zygote {
    /// Starts `spec`'s program as a zygote (`spec.channel` is replaced by the control socket).
    pub fn start(sandbox: &Sandbox, spec: &EnvSpec<'_>) -> Result<Self, SpawnError> {
        let (control, theirs) = protocol::socket_pair().map_err(SpawnError::Prepare)?;
        let devnull = std::fs::File::open("/dev/null").map_err(SpawnError::Prepare)?;
        let process = sandbox.spawn(&EnvSpec {
            channel: theirs.as_fd(),
            zygote: true,
            ..spec.clone()
        })?;
        Ok(Self {
            process,
            control,
            state: ZygoteState::Starting,
            seq: 0,
            exits: HashMap::new(),
            started: Instant::now(),
            devnull: devnull.into(),
        })
    }

    /// The zygote process itself.
    pub fn process(&mut self) -> &mut Environment {
        &mut self.process
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
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
        loop {
            match protocol::recv(&self.control, &mut fds, true) {
                Ok(Some(message)) => self.take(message, &fds)?,
                Ok(None) => return Err("it closed its control socket (it exited)".into()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("reading its control socket: {e}")),
            }
            fds.clear();
        }
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
                // Bounded: a zygote that reports exits of children nobody claims is broken.
                if self.exits.len() >= 4096 {
                    return Err("it reported more exits than it has children".into());
                }
                self.exits.insert(message.b, status);
                Ok(())
            }
            kind => Err(format!("it sent {kind:?} out of turn")),
        }
    }

    /// Forks a new environment. Blocks until the zygote answers (a fork takes well under a
    /// millisecond; [`FORK_TIMEOUT`] at most). Returns the environment and its pid in the
    /// zygote's namespace (the key of its exit report).
    pub fn fork(
        &mut self,
        sandbox: &Sandbox,
        child: &ChildSpec<'_>,
    ) -> Result<(Environment, u64), ForkError> {
        if *self.poll() != ZygoteState::Ready {
            return Err(ForkError::NotReady);
        }
        let prepare = |e: &dyn std::fmt::Display| ForkError::Prepare(e.to_string());
        let cgroup = sandbox.env_cgroup(&child.limits).map_err(|e| prepare(&e))?;
        let joins = cgroup
            .as_ref()
            .map(hearth_sandbox::EnvCgroup::join_fds)
            .transpose()
            .map_err(|e| prepare(&e))?
            .unwrap_or_default();
        let (errors, error_write) = hearth_sandbox::setup_error_pipe().map_err(|e| prepare(&e))?;
        let mut fds: Vec<RawFd> = vec![
            child.channel.as_raw_fd(),
            child.stdout.unwrap_or(self.devnull.as_fd()).as_raw_fd(),
            child.stderr.unwrap_or(self.devnull.as_fd()).as_raw_fd(),
            error_write.as_raw_fd(),
        ];
        fds.extend(joins.iter().map(AsRawFd::as_raw_fd));
        self.seq += 1;
        let request = Message::new(Kind::Fork, self.seq, child.tmp_bytes, 0);
        if let Err(e) = protocol::send(self.control.as_fd(), &request, &fds) {
            return Err(self.broken(format!("sending the fork request: {e}")));
        }
        drop(error_write);
        let (pid, pidfd) = self.await_forked()?;
        Ok((Environment::adopt(pidfd, errors, cgroup), pid))
    }

    /// Waits for the `Forked` answer to the latest request: spinning first for
    /// [`FORK_SPIN`] (a fork takes about that long, and being woken from sleep would add an
    /// inter-processor wake-up), then sleeping.
    fn await_forked(&mut self) -> Result<(u64, OwnedFd), ForkError> {
        let began = Instant::now();
        let deadline = began + FORK_TIMEOUT;
        let mut fds = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let spinning = began.elapsed() < FORK_SPIN;
            let ready = if spinning {
                std::hint::spin_loop();
                protocol::wait_readable(self.control.as_fd(), Duration::ZERO)
            } else {
                protocol::wait_readable(self.control.as_fd(), left)
            };
            match ready {
                Ok(false) if spinning => continue,
                Ok(true) => {}
                Ok(false) if left.is_zero() => {
                    return Err(self.broken(format!(
                        "it did not answer a fork request within {FORK_TIMEOUT:?}"
                    )))
                }
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
            if message.c != 0 {
                let errno = i32::try_from(message.c).unwrap_or(libc::EIO);
                return Err(ForkError::Fork(io::Error::from_raw_os_error(errno)));
            }
            return match (fds.pop(), fds.is_empty()) {
                (Some(pidfd), true) => Ok((message.b, pidfd)),
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

    /// Forgets a child's exit report (its environment was killed and nobody needs the status).
    pub fn forget(&mut self, pid: u64) {
        self.exits.remove(&pid);
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Its children die with it: it is the init of their parent pid namespace.
        self.process.kill();
    }
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
            (ChildStep::LandlockRestrict, Step::LandlockRestrict),
            (ChildStep::Seccomp, Step::Seccomp),
        ] {
            assert_eq!(child as u32, step as u32, "{child:?}");
        }
    }
}
