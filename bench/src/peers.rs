//! Peers starting the same native function (the statically linked sample function) to its first
//! response, for comparison with hearth's cold starts: `peer.fork_exec` (no isolation),
//! `peer.bwrap` (`bwrap --unshare-all`), `peer.crun` and `peer.runc` (an OCI bundle of the same
//! binary). Each start gets the function's channel as fd 3, one request is submitted at once, and
//! the time runs until its answer is read; the process (or container) is then removed, outside
//! the measurement.
//!
//! crun refuses this machine's hybrid cgroup layout (v1 controllers, an empty v2 hierarchy at
//! `/sys/fs/cgroup/unified`): its starts run in a worker process (`hearth-bench --peer-worker`)
//! with a private mount namespace in which that v2 mount is detached, so crun sees pure v1.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_ipc::{HostChannel, RequestMeta};
use serde_json::{json, Value};

use crate::report::Latencies;

const EVENT: &[u8] = br#"{"hello":"hearth"}"#;

/// The peers, by scenario name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    ForkExec,
    Bwrap,
    Crun,
    Runc,
}

impl Peer {
    pub fn from_scenario(name: &str) -> Option<Self> {
        Some(match name {
            "peer.fork_exec" => Self::ForkExec,
            "peer.bwrap" => Self::Bwrap,
            "peer.crun" => Self::Crun,
            "peer.runc" => Self::Runc,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::ForkExec => "fork_exec",
            Self::Bwrap => "bwrap",
            Self::Crun => "crun",
            Self::Runc => "runc",
        }
    }

    fn isolation(self) -> &'static str {
        match self {
            Self::ForkExec => "none: fork + exec of the function",
            Self::Bwrap => "bwrap --unshare-all (user, ipc, pid, net, uts, cgroup namespaces), the binary bound read-only, /proc, /dev",
            Self::Crun | Self::Runc => "OCI bundle from `crun spec` (pid, net, ipc, uts, mount, cgroup namespaces, default capabilities, seccomp off), read-only root holding the binary",
        }
    }
}

/// Measures `n` starts of `peer` (after `n / 10` unmeasured ones).
pub fn measure(peer: Peer, sample: &Path, n: u64) -> Result<(Latencies, Duration, Value)> {
    let tool = match peer {
        Peer::ForkExec => None,
        Peer::Bwrap => Some("bwrap"),
        Peer::Crun => Some("crun"),
        Peer::Runc => Some("runc"),
    };
    if let Some(tool) = tool {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!("{tool} is not installed (make bench installs bubblewrap, crun and runc)");
        }
    }
    let samples = if peer == Peer::Crun {
        in_worker(peer, sample, n)?
    } else {
        starts(peer, sample, n)?
    };
    let mut lat = Latencies::new();
    let mut busy = Duration::ZERO;
    for ns in samples {
        let d = Duration::from_nanos(ns);
        lat.record(d);
        busy += d;
    }
    let extra =
        json!({ "peer": peer.name(), "isolation": peer.isolation(), "function_linking": "static" });
    Ok((lat, busy, extra))
}

/// Runs the starts in `hearth-bench --peer-worker` and collects their durations.
fn in_worker(peer: Peer, sample: &Path, n: u64) -> Result<Vec<u64>> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["--peer-worker", peer.name(), &n.to_string()])
        .arg(sample)
        .stderr(Stdio::inherit())
        .output()
        .context("starting the peer worker")?;
    if !out.status.success() {
        bail!("the {} worker failed ({})", peer.name(), out.status);
    }
    serde_json::from_slice(&out.stdout).context("the peer worker's output")
}

/// `hearth-bench --peer-worker PEER N SAMPLE`: detaches the v2 cgroup mount in a private mount
/// namespace, runs the starts, prints their durations (ns) as a JSON array.
pub fn worker(args: &[String]) -> Result<()> {
    let [peer, n, sample] = args else {
        bail!("usage: hearth-bench --peer-worker PEER N SAMPLE");
    };
    let peer = Peer::from_scenario(&format!("peer.{peer}")).context("unknown peer")?;
    let n: u64 = n.parse().context("N")?;
    crate::sys::private_mounts_without_cgroup_v2()?;
    let samples = starts(peer, Path::new(sample), n)?;
    println!("{}", serde_json::to_string(&samples)?);
    Ok(())
}

/// A prepared OCI bundle (crun, runc): its directory holds `config.json` and `rootfs/bootstrap`.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new(sample: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("rootfs"))?;
        std::fs::copy(sample, dir.path().join("rootfs/bootstrap"))?;
        let status = Command::new("crun")
            .arg("spec")
            .current_dir(dir.path())
            .status()
            .context("crun spec")?;
        if !status.success() {
            bail!("crun spec failed: {status}");
        }
        let path = dir.path().join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        config["process"]["args"] = json!(["/bootstrap"]);
        config["process"]["terminal"] = json!(false);
        if let Some(env) = config["process"]["env"].as_array_mut() {
            env.push(json!("HEARTH_CHANNEL_FD=3"));
            env.push(json!("_HANDLER=echo"));
        }
        config["root"]["readonly"] = json!(true);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// `n / 10 + n` starts; returns the durations of the last `n`, in nanoseconds.
fn starts(peer: Peer, sample: &Path, n: u64) -> Result<Vec<u64>> {
    let bundle = match peer {
        Peer::Crun | Peer::Runc => Some(Bundle::new(sample)?),
        _ => None,
    };
    let mut samples = Vec::new();
    for i in 0..n / 10 + n {
        let id = format!("hearth-bench-{}-{i}", std::process::id());
        let mut command = match peer {
            Peer::ForkExec => Command::new(sample),
            Peer::Bwrap => {
                let mut c = Command::new("bwrap");
                c.args([
                    "--unshare-all",
                    "--die-with-parent",
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                ])
                .arg("--ro-bind")
                .arg(sample)
                .args(["/bootstrap", "--", "/bootstrap"])
                // Its own process group, stopped as a whole (see below).
                .process_group(0);
                c
            }
            Peer::Crun | Peer::Runc => {
                let mut c = Command::new(peer.name());
                c.args(["run", "--preserve-fds", "1", "-b"])
                    .arg(bundle.as_ref().map(Bundle::path).unwrap_or_default())
                    .arg(&id);
                c
            }
        };
        command
            .env("_HANDLER", "echo")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // The containers get the channel as fd 3 (--preserve-fds); the others inherit it under
        // its own number, so that std spawns them with posix_spawn (vfork) rather than fork: a
        // fork would copy this process's page tables and charge that to the peer.
        let at_three = matches!(peer, Peer::Crun | Peer::Runc);
        let (took, mut child) = first_answer(&mut command, at_three)?;
        if matches!(peer, Peer::Crun | Peer::Runc) {
            // Kill the container (not its `run` process, which would orphan it), let `run`
            // return, then remove the container's state.
            let tool = |args: &[&str]| {
                Command::new(peer.name())
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            };
            let _ = tool(&["kill", &id, "KILL"]);
            let _ = child.wait();
            let _ = tool(&["delete", "-f", &id]);
        } else {
            // bwrap runs the function under a second bwrap, the first process of the new pid
            // namespace; `--die-with-parent` did not always take it down with the first (a few
            // sandboxes a day stayed behind, asleep, reparented to init). All three are in the
            // group the first one leads.
            let group = matches!(peer, Peer::Bwrap)
                .then(|| i32::try_from(child.id()).ok())
                .flatten();
            match group {
                // SAFETY: kill takes integers; the group is the one this process made.
                Some(group) => unsafe {
                    libc::kill(-group, libc::SIGKILL);
                },
                None => {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
        if i >= n / 10 {
            samples.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(samples)
}

/// Starts `command` with a new channel (as fd 3 with `at_three`, else under its own number),
/// submits one request, and returns the time from the start until the answer was read, and the
/// process (still running: the caller stops it).
fn first_answer(command: &mut Command, at_three: bool) -> Result<(Duration, Child)> {
    let mut channel = HostChannel::create()?;
    let fd: RawFd = channel.guest_fd().as_raw_fd();
    if at_three {
        command.env("HEARTH_CHANNEL_FD", "3");
        let to_three = move || {
            // dup2 onto itself would leave close-on-exec set.
            let done = if fd == 3 {
                // SAFETY: fcntl on an fd the parent keeps open until after the spawn.
                unsafe { libc::fcntl(3, libc::F_SETFD, 0) }
            } else {
                // SAFETY: as above; dup2 is async-signal-safe.
                unsafe { libc::dup2(fd, 3) }
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: `to_three` runs in the child between fork and exec and makes only
        // async-signal-safe calls.
        unsafe { command.pre_exec(to_three) };
    } else {
        command.env("HEARTH_CHANNEL_FD", fd.to_string());
        // SAFETY: clears close-on-exec on our own open fd, so the child inherits it.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            bail!("fcntl: {}", std::io::Error::last_os_error());
        }
    }
    let started = Instant::now();
    let mut child = command.spawn().context("starting the peer")?;
    channel
        .submit(
            EVENT,
            &RequestMeta {
                timeout_ms: 10_000,
                ..RequestMeta::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("submitting: {e}"))?;
    let mut out = Vec::new();
    let deadline = started + Duration::from_secs(10);
    let took = loop {
        match channel.poll(&mut out) {
            Ok(Some(_)) => break started.elapsed(),
            Ok(None) if Instant::now() < deadline => {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("the peer exited ({status}) before answering");
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            Ok(None) => {
                let _ = child.kill();
                bail!("no answer within 10 s");
            }
            Err(e) => {
                let _ = child.kill();
                bail!("the channel: {e}");
            }
        }
    };
    if out != EVENT {
        let _ = child.kill();
        bail!("the peer answered {:?}", String::from_utf8_lossy(&out));
    }
    Ok((took, child))
}
