//! One cgroup per environment, with memory, pids and CPU limits, and (where the `cpuset`
//! controller is there too) the CPU its processes are confined to when the scheduler asks for one.
//!
//! cgroup v2 is used where its `memory` and `pids` controllers are enabled; otherwise the v1
//! hierarchies of those controllers (hybrid hosts, like the machine hearth is developed on). In
//! v1 an environment joins its `cpuset` cgroup only when confined to a CPU: other environments
//! stay in the daemon's and pay no extra join.
//! Layout, in each hierarchy used:
//!
//! ```text
//! <mount>/hearth/pid-<daemon pid>-<n>/env-<k>
//! ```
//!
//! An instance directory whose daemon is gone (a crash) is emptied and removed when the next
//! instance starts, so a crash leaves nothing behind for long.
//!
//! Creating a cgroup costs 0.2–0.5 ms on the development machine (three v1 `mkdir`s; four and
//! a `cpuset.mems` write with cpusets), and
//! removing one starts memory-cgroup offlining work that stalls concurrent cgroup joins for up to
//! 12 ms (measured: cgroup v1, join p99 with `rmdir` churn 12.5 ms, without 0.1 ms). So
//! [`CgroupInstance`] keeps empty cgroups ready ([`CgroupInstance::prepare`]) and takes back the
//! cgroup of every environment that has exited ([`EnvCgroup::release`]): starting an environment
//! only writes the limits that differ, and cgroups are removed only when the daemon stops.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`: every environment a zygote forks,
//! and every environment on cgroup v1, where `CLONE_INTO_CGROUP` does not exist) takes a lock
//! that every fork and exit on the machine shares; unless a hierarchy is mounted with
//! `favordynmods`, the kernel keeps that lock cheap for forks and exits and makes a writer that
//! comes after a quiet spell wait for an RCU grace period first: 5 and 7 ms for two of the
//! 11,037 writes of one full `cold.native.zygote` run on the development machine, none over
//! 0.2 ms in the two runs after it was set (see the README). [`favordynmods`] says which the machine has; hearth logs it
//! once and changes nothing (the option is the machine's: since Linux 6.17 part of it stays on
//! until reboot once set).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Errors from cgroup handling; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable controllers.
    #[error("no cgroup hierarchy with the memory and pids controllers was found (looked in /proc/self/mountinfo)")]
    NoControllers,
    /// Reading or writing a cgroup file or directory.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Which cgroup version serves the environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Unified hierarchy mounted at `mount`.
    V2 {
        /// Mount point.
        mount: PathBuf,
        /// Whether the cpu controller is available too.
        cpu: bool,
        /// Whether the cpuset controller is available too.
        cpuset: bool,
    },
    /// Per-controller v1 hierarchies.
    V1 {
        /// `memory` mount point.
        memory: PathBuf,
        /// `pids` mount point.
        pids: PathBuf,
        /// `cpu` mount point, if any.
        cpu: Option<PathBuf>,
        /// `cpuset` mount point, if any.
        cpuset: Option<PathBuf>,
    },
}

impl Hierarchy {
    /// Finds the hierarchy to use from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let mountinfo = fs::read_to_string(path).map_err(io_err("reading", path))?;
        Self::from_mountinfo(&mountinfo, |mount| {
            fs::read_to_string(mount.join("cgroup.controllers")).ok()
        })
    }

    /// Decides from a mountinfo text; `controllers` reads a v2 mount's `cgroup.controllers`.
    pub fn from_mountinfo(
        mountinfo: &str,
        controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Self, CgroupError> {
        let mut v1 = std::collections::HashMap::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(PathBuf::from);
            let mut right = right.split(' ');
            let (Some(fstype), Some(mount_point)) = (right.next(), mount_point) else {
                continue;
            };
            match fstype {
                "cgroup2" => v2 = v2.or(Some(mount_point)),
                "cgroup" => {
                    let options = right.nth(1).unwrap_or_default();
                    for controller in options.split(',') {
                        v1.entry(controller.to_owned())
                            .or_insert_with(|| mount_point.clone());
                    }
                }
                _ => {}
            }
        }
        if let Some(mount) = v2 {
            let available = controllers(&mount).unwrap_or_default();
            let has = |c: &str| available.split_whitespace().any(|a| a == c);
            if has("memory") && has("pids") {
                return Ok(Self::V2 {
                    cpu: has("cpu"),
                    cpuset: has("cpuset"),
                    mount,
                });
            }
        }
        match (v1.remove("memory"), v1.remove("pids")) {
            (Some(memory), Some(pids)) => Ok(Self::V1 {
                memory,
                pids,
                cpu: v1.remove("cpu"),
                cpuset: v1.remove("cpuset"),
            }),
            _ => Err(CgroupError::NoControllers),
        }
    }

    /// Mount points of the hierarchies in use (memory first, cpuset last).
    fn mounts(&self) -> Vec<PathBuf> {
        match self {
            Self::V2 { mount, .. } => vec![mount.clone()],
            Self::V1 {
                memory,
                pids,
                cpu,
                cpuset,
            } => [
                Some(memory.clone()),
                Some(pids.clone()),
                cpu.clone(),
                cpuset.clone(),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }

    /// The same hierarchy without the cpuset controller.
    pub fn without_cpuset(self) -> Self {
        match self {
            Self::V2 { mount, cpu, .. } => Self::V2 {
                mount,
                cpu,
                cpuset: false,
            },
            Self::V1 {
                memory, pids, cpu, ..
            } => Self::V1 {
                memory,
                pids,
                cpu,
                cpuset: None,
            },
        }
    }

    /// Whether environments can be confined to a CPU ([`Limits::cpu`]).
    pub fn cpuset(&self) -> bool {
        match self {
            Self::V2 { cpuset, .. } => *cpuset,
            Self::V1 { cpuset, .. } => cpuset.is_some(),
        }
    }
}

/// Whether a cgroup hierarchy in `mountinfo` (the text of `/proc/self/mountinfo`) is mounted
/// with `favordynmods` (see the module docs), as `mount -o remount,favordynmods` of a cgroup2
/// mount or the kernel parameter `cgroup_favordynmods=true` leave it.
pub fn favordynmods(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        let Some((_, right)) = line.split_once(" - ") else {
            return false;
        };
        let mut right = right.split(' ');
        matches!(right.next(), Some("cgroup" | "cgroup2"))
            && right
                .nth(1)
                .is_some_and(|options| options.split(',').any(|o| o == "favordynmods"))
    })
}

/// [`favordynmods`] of this process's `/proc/self/mountinfo` (`false` if it cannot be read).
pub fn machine_favordynmods() -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| favordynmods(&m))
}

/// Limits of one environment's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (swap is not allowed beyond it).
    pub memory_bytes: u64,
    /// Most tasks (processes and threads).
    pub pids: u64,
    /// CPU weight, 1–10000 (v2 scale; 100 is the default share).
    pub cpu_weight: u64,
    /// The one CPU its processes may run on (a cpuset: a process cannot widen its affinity
    /// past it), where the hierarchy has the controller ([`Hierarchy::cpuset`]); `None`: any.
    pub cpu: Option<usize>,
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// Most empty cgroups kept for reuse; beyond this, released cgroups are removed.
const MAX_READY: usize = 256;

type Ready = Mutex<VecDeque<EnvCgroup>>;

/// This process's subtree: `<mount>/hearth/pid-<pid>-<n>` in each hierarchy.
#[derive(Debug)]
pub struct CgroupInstance {
    hierarchy: Hierarchy,
    dirs: Vec<PathBuf>,
    /// v1 with a cpuset hierarchy: the instance's memory nodes, which each environment's
    /// cpuset cgroup needs before it takes a task.
    cpuset_mems: Option<String>,
    next: AtomicU64,
    ready: Arc<Ready>,
}

impl CgroupInstance {
    /// Creates this process's instance directories (enabling v2 controllers on the way) and
    /// removes instances left by daemons that are gone.
    pub fn create(mut hierarchy: Hierarchy) -> Result<Self, CgroupError> {
        let name = format!(
            "pid-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        // v1's cpuset hierarchy is set up apart, after the others: it is optional.
        let cpuset_v1 = match &mut hierarchy {
            Hierarchy::V1 { cpuset, .. } => cpuset.take(),
            Hierarchy::V2 { .. } => None,
        };
        let mut dirs = Vec::new();
        for mount in hierarchy.mounts() {
            let dir = instance_dir(&mount, &name)?;
            if let Hierarchy::V2 { cpu, .. } = &hierarchy {
                let enable = if *cpu {
                    "+memory +pids +cpu"
                } else {
                    "+memory +pids"
                };
                enable_in_subtree(&mount, &dir, enable)?;
            }
            dirs.push(dir);
        }
        // The cpuset controller is optional: without it (or without the right to use it)
        // environments are placed by affinity only.
        let mut cpuset_mems = None;
        match &mut hierarchy {
            Hierarchy::V1 { cpuset, .. } => {
                if let Some(mount) = cpuset_v1 {
                    // A new v1 cpuset cgroup has no CPU and no memory node, and takes no task
                    // until it has both.
                    let dir = instance_dir(&mount, &name).and_then(|dir| {
                        let ready = inherit_cpuset(dir.parent().unwrap_or(&dir))
                            .and_then(|()| inherit_cpuset(&dir))
                            .and_then(|()| read_file(&dir.join("cpuset.mems")));
                        match ready {
                            Ok(mems) => Ok((dir, mems)),
                            Err(e) => {
                                let _ = fs::remove_dir(&dir);
                                Err(e)
                            }
                        }
                    });
                    match dir {
                        Ok((dir, mems)) => {
                            dirs.push(dir);
                            cpuset_mems = Some(mems);
                            *cpuset = Some(mount);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cpuset cgroups unavailable: environments are placed by affinity only")
                        }
                    }
                }
            }
            Hierarchy::V2 { mount, cpuset, .. } => {
                if *cpuset {
                    let dir = &dirs[0];
                    if let Err(e) = enable_in_subtree(mount, dir, "+cpuset") {
                        tracing::warn!(error = %e, "the cpuset controller is unavailable: environments are placed by affinity only");
                        *cpuset = false;
                    }
                }
            }
        }
        Ok(Self {
            hierarchy,
            dirs,
            cpuset_mems,
            next: AtomicU64::new(0),
            ready: Arc::new(Mutex::new(VecDeque::new())),
        })
    }

    /// The hierarchy in use.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Creates empty environment cgroups until `count` are ready (off the invocation path).
    pub fn prepare(&self, count: usize) -> Result<(), CgroupError> {
        loop {
            let have = self.ready.lock().map(|r| r.len()).unwrap_or(count);
            if have >= count {
                return Ok(());
            }
            let cgroup = self.create_env()?;
            if let Ok(mut ready) = self.ready.lock() {
                ready.push_back(cgroup);
            }
        }
    }

    /// A cgroup for a new environment, with `limits` applied: a ready one if any (one that
    /// already has these limits first), else a new one.
    pub fn env(&self, limits: &Limits) -> Result<EnvCgroup, CgroupError> {
        let ready = self.ready.lock().ok().and_then(|mut ready| {
            let same = ready
                .iter()
                .rposition(|c| c.applied.as_ref() == Some(limits));
            match same {
                Some(i) => ready.remove(i),
                None => ready.pop_back(),
            }
        });
        let mut cgroup = match ready {
            Some(cgroup) => cgroup,
            None => self.create_env()?,
        };
        cgroup.apply(&self.hierarchy, limits)?;
        cgroup.oom_base = cgroup.oom_kills_total();
        cgroup.reset_peak();
        Ok(cgroup)
    }

    fn create_env(&self) -> Result<EnvCgroup, CgroupError> {
        let name = format!("env-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let dirs: Vec<PathBuf> = self.dirs.iter().map(|d| d.join(&name)).collect();
        for dir in &dirs {
            fs::create_dir(dir).map_err(io_err("creating", dir))?;
        }
        // v1: a cpuset cgroup takes tasks only once its CPUs and memory nodes are set; the
        // nodes are the instance's, the CPU is written when one is asked for.
        let cpuset_v1 = self.cpuset_mems.is_some();
        if let (Some(mems), Some(dir)) = (&self.cpuset_mems, dirs.last()) {
            write_file(&dir.join("cpuset.mems"), mems)?;
        }
        let mut cgroup = EnvCgroup {
            cpuset_v1,
            cpu_written: None,
            dirs,
            v2: matches!(self.hierarchy, Hierarchy::V2 { .. }),
            dir_fd: None,
            procs: Vec::new(),
            applied: None,
            oom_base: 0,
            peak: None,
            home: Arc::downgrade(&self.ready),
        };
        if cgroup.v2 {
            let dir = &cgroup.dirs[0];
            let fd = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(dir)
                .map_err(io_err("opening", dir))?;
            cgroup.dir_fd = Some(fd.into());
        } else {
            for dir in &cgroup.dirs {
                let path = dir.join("cgroup.procs");
                let fd = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(io_err("opening", &path))?;
                cgroup.procs.push(fd.into());
            }
        }
        Ok(cgroup)
    }
}

impl Drop for CgroupInstance {
    fn drop(&mut self) {
        // A cgroup whose last process was just reaped can refuse removal for a moment (EBUSY
        // while the kernel finishes that exit): retry for up to 200 ms.
        let mut left: Vec<EnvCgroup> = self
            .ready
            .lock()
            .map(|mut ready| ready.drain(..).collect())
            .unwrap_or_default();
        for _ in 0..100 {
            left.retain_mut(|cgroup| {
                if cgroup.process_count() > 0 {
                    let _ = cgroup.kill();
                }
                cgroup.remove().is_err()
            });
            let instance_gone = self
                .dirs
                .iter()
                .all(|dir| fs::remove_dir(dir).is_ok() || !dir.exists());
            if left.is_empty() && instance_gone {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let remaining: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path().display().to_string())
            .collect();
        tracing::warn!(?remaining, "cgroups left behind at shutdown");
    }
}

/// One environment's cgroup.
#[derive(Debug)]
pub struct EnvCgroup {
    /// One directory per hierarchy ([`Hierarchy::mounts`]' order: cpuset last).
    dirs: Vec<PathBuf>,
    /// v1 with a cpuset hierarchy: the last of `dirs` and `procs` is the cpuset cgroup, joined
    /// only while a CPU is applied.
    cpuset_v1: bool,
    /// The CPU its `cpuset.cpus` holds (`None`: none written, or v2's parent's again).
    cpu_written: Option<usize>,
    v2: bool,
    /// v2: the directory, for `CLONE_INTO_CGROUP`.
    dir_fd: Option<OwnedFd>,
    /// v1: `cgroup.procs` of each hierarchy, written by the child ("0" = itself).
    procs: Vec<OwnedFd>,
    applied: Option<Limits>,
    /// OOM kills counted before this environment got the cgroup (the counter is cumulative).
    oom_base: u64,
    /// v2: `memory.peak`, opened when the cgroup is handed out; the kernel resets the peak for
    /// reads through an fd that was written to (v1 resets it for everyone).
    peak: Option<fs::File>,
    /// The pool it returns to.
    home: Weak<Ready>,
}

impl EnvCgroup {
    fn apply(&mut self, hierarchy: &Hierarchy, limits: &Limits) -> Result<(), CgroupError> {
        if self.applied.as_ref() == Some(limits) {
            return Ok(());
        }
        // Forget what was applied until every write succeeded.
        self.applied = None;
        // The CPU, where it changed. v1: a cgroup without one is simply not joined.
        if hierarchy.cpuset() && self.cpu_written != limits.cpu && (self.v2 || limits.cpu.is_some())
        {
            let cpus = self.dirs[self.dirs.len() - 1].join("cpuset.cpus");
            match limits.cpu {
                Some(cpu) => write_file(&cpus, &cpu.to_string())?,
                // v2: empty means the parent's CPUs again.
                None => write_file(&cpus, "\n")?,
            }
            self.cpu_written = limits.cpu;
        }
        let weight = limits.cpu_weight.clamp(1, 10_000);
        match hierarchy {
            Hierarchy::V2 { cpu, .. } => {
                let dir = &self.dirs[0];
                write_file(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write_file(&swap, "0")?;
                }
                write_file(&dir.join("pids.max"), &limits.pids.to_string())?;
                if *cpu {
                    write_file(&dir.join("cpu.weight"), &weight.to_string())?;
                }
            }
            Hierarchy::V1 { cpu, .. } => {
                let memory = &self.dirs[0];
                // v1 refuses a memory limit above memory+swap's: lift memory+swap first (a
                // reused cgroup may hold a smaller one), then set both.
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                let swap_accounting = memsw.exists();
                if swap_accounting {
                    write_file(&memsw, "-1")?;
                }
                write_file(
                    &memory.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                if swap_accounting {
                    write_file(&memsw, &limits.memory_bytes.to_string())?;
                }
                write_file(&self.dirs[1].join("pids.max"), &limits.pids.to_string())?;
                if cpu.is_some() {
                    // v1 shares: 1024 is the default, as 100 is for v2 weights.
                    write_file(
                        &self.dirs[2].join("cpu.shares"),
                        &(weight * 1024 / 100).max(2).to_string(),
                    )?;
                }
            }
        }
        self.applied = Some(*limits);
        Ok(())
    }

    /// v2: the directory fd for `clone3(CLONE_INTO_CGROUP)`.
    pub fn clone_into_fd(&self) -> Option<RawFd> {
        self.dir_fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// v1: `cgroup.procs` fds the child writes "0" to, to join.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.joined().iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// v1: the `cgroup.procs` of the hierarchies a process joins (the cpuset one only while a
    /// CPU is applied).
    fn joined(&self) -> &[OwnedFd] {
        let confined = self.applied.is_some_and(|l| l.cpu.is_some());
        match self.procs.split_last() {
            Some((_, rest)) if self.cpuset_v1 && !confined => rest,
            _ => &self.procs,
        }
    }

    /// Moves process `pid` (as this process's pid namespace numbers it) into the cgroup, in
    /// every hierarchy. For a process hearth did not start (a zygote's child): hearth never
    /// hands a cgroup file to anything an environment runs.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            let path = self.dirs[0].join("cgroup.procs");
            return Err(io_err("writing", &path)(io::Error::from_raw_os_error(
                libc::ESRCH,
            )));
        }
        let value = pid.to_string();
        if self.v2 {
            return write_file(&self.dirs[0].join("cgroup.procs"), &value);
        }
        for (fd, dir) in self.joined().iter().zip(&self.dirs) {
            let path = dir.join("cgroup.procs");
            let mut file = fs::File::from(fd.try_clone().map_err(io_err("opening", &path))?);
            file.write_all(value.as_bytes())
                .map_err(io_err("writing", &path))?;
        }
        Ok(())
    }

    /// The cgroup's directory in the memory hierarchy.
    pub fn path(&self) -> &Path {
        &self.dirs[0]
    }

    /// Kills every process in the cgroup.
    pub fn kill(&self) -> Result<(), CgroupError> {
        if self.v2 {
            return write_file(&self.dirs[0].join("cgroup.kill"), "1");
        }
        let path = self.dirs[0].join("cgroup.procs");
        let procs = fs::read_to_string(&path).map_err(io_err("reading", &path))?;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        Ok(())
    }

    /// Processes still in the cgroup.
    pub fn process_count(&self) -> usize {
        fs::read_to_string(self.dirs[0].join("cgroup.procs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// How many times the kernel OOM-killed a process of this environment.
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills_total().saturating_sub(self.oom_base)
    }

    /// Peak memory use in bytes since the cgroup was handed to this environment (`None` when
    /// the kernel does not say).
    pub fn memory_peak(&self) -> Option<u64> {
        let text = if self.v2 {
            match self.peak.as_ref() {
                Some(mut file) => {
                    let mut text = String::new();
                    io::Seek::seek(&mut file, io::SeekFrom::Start(0)).ok()?;
                    io::Read::read_to_string(&mut file, &mut text).ok()?;
                    text
                }
                // A kernel whose memory.peak cannot be reset (before 6.12) would show a
                // previous environment's peak: report current use instead (the caller keeps
                // the highest it saw).
                None => fs::read_to_string(self.dirs[0].join("memory.current")).ok()?,
            }
        } else {
            fs::read_to_string(self.dirs[0].join("memory.max_usage_in_bytes")).ok()?
        };
        text.trim().parse().ok()
    }

    /// Starts peak tracking for a new environment: a previous one's peak must not show.
    fn reset_peak(&mut self) {
        if self.v2 {
            self.peak = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dirs[0].join("memory.peak"))
                .ok()
                .filter(|mut f| io::Write::write_all(&mut f, b"reset\n").is_ok());
        } else {
            let _ = fs::write(self.dirs[0].join("memory.max_usage_in_bytes"), "0");
        }
    }

    /// The cgroup's cumulative OOM-kill counter.
    fn oom_kills_total(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(self.dirs[0].join(file))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|v| v.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Gives the cgroup back for another environment once its processes are gone; removes it if
    /// the pool is full or gone. Fails (returning the cgroup) while processes remain.
    pub fn release(self) -> Result<(), Box<(Self, CgroupError)>> {
        let remaining = self.process_count();
        if remaining > 0 {
            let path = self.dirs[0].clone();
            let busy = io::Error::from_raw_os_error(libc::EBUSY);
            return Err(Box::new((
                self,
                io_err("releasing (processes remain in)", &path)(busy),
            )));
        }
        if let Some(pool) = self.home.upgrade() {
            if let Ok(mut ready) = pool.lock() {
                if ready.len() < MAX_READY {
                    ready.push_back(self);
                    return Ok(());
                }
            }
        }
        let mut this = self;
        match this.remove() {
            Ok(()) => Ok(()),
            Err(e) => Err(Box::new((this, e))),
        }
    }

    /// Removes the cgroup; fails with EBUSY while processes remain (and may be called again).
    fn remove(&mut self) -> Result<(), CgroupError> {
        self.procs.clear();
        self.dir_fd = None;
        for dir in &self.dirs {
            match fs::remove_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("removing", dir)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Drop for EnvCgroup {
    /// A cgroup dropped without [`EnvCgroup::release`] (an environment that failed to start, a
    /// release that gave up) is removed if it can be, so that no empty directory outlives the
    /// daemon. One given back to the pool is not dropped until the pool is.
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    f.write_all(value.as_bytes())
        .map_err(io_err("writing", path))
}

/// v1: gives cpuset cgroup `dir` its parent's CPUs and memory nodes (a new one has none and
/// takes no task until it has; one kept from an earlier daemon may lack a CPU brought online
/// since, as v1 never adds one back). Only ever widens: the parent holds at least its children's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let parent = dir.parent().unwrap_or(dir);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let value = read_file(&parent.join(file))?;
        let own = dir.join(file);
        if read_file(&own)? != value {
            write_file(&own, &value)?;
        }
    }
    Ok(())
}

/// A control file's value, without its trailing newline.
fn read_file(path: &Path) -> Result<String, CgroupError> {
    let value = fs::read_to_string(path).map_err(io_err("reading", path))?;
    Ok(value.trim().to_owned())
}

/// `<mount>/hearth/<name>`, created with its parent where missing; instances of daemons that
/// are gone are removed from the parent on the way.
fn instance_dir(mount: &Path, name: &str) -> Result<PathBuf, CgroupError> {
    let base = mount.join("hearth");
    mkdir_if_missing(&base)?;
    remove_stale_instances(&base);
    let dir = base.join(name);
    mkdir_if_missing(&dir)?;
    Ok(dir)
}

/// v2: enables `controllers` ("+memory +pids", …) from `mount` down to instance `dir`.
fn enable_in_subtree(mount: &Path, dir: &Path, controllers: &str) -> Result<(), CgroupError> {
    let base = dir.parent().unwrap_or(dir);
    [mount, base, dir]
        .iter()
        .try_for_each(|d| write_file(&d.join("cgroup.subtree_control"), controllers))
}

fn mkdir_if_missing(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io_err("creating", dir)(e)),
        _ => Ok(()),
    }
}

/// Empties and removes `pid-<P>-*` instances under `base` whose daemon P is gone.
fn remove_stale_instances(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pid-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            continue;
        }
        let instance = entry.path();
        if let Ok(envs) = fs::read_dir(&instance) {
            for env in envs.flatten().filter(|e| e.path().is_dir()) {
                let env = env.path();
                if let Ok(procs) = fs::read_to_string(env.join("cgroup.procs")) {
                    for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill with integer arguments.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
                for _ in 0..50 {
                    if fs::remove_dir(&env).is_ok() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        }
        let _ = fs::remove_dir(&instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
38 35 0:33 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
39 35 0:34 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
40 35 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
41 35 0:36 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset
";
    const PURE_V2: &str = "36 35 0:31 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_hosts_use_v1_when_v2_has_no_controllers() {
        let h = Hierarchy::from_mountinfo(HYBRID, |_| Some(String::new())).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
                cpuset: Some("/sys/fs/cgroup/cpuset".into()),
            }
        );
        assert!(h.cpuset());
        assert!(!h.without_cpuset().cpuset());
    }

    #[test]
    fn the_cpuset_hierarchy_comes_last_with_or_without_cpu() {
        let v1 = |cpu: Option<&str>, cpuset: Option<&str>| Hierarchy::V1 {
            memory: "/m".into(),
            pids: "/p".into(),
            cpu: cpu.map(PathBuf::from),
            cpuset: cpuset.map(PathBuf::from),
        };
        let paths = |h: Hierarchy| -> Vec<String> {
            h.mounts().iter().map(|p| p.display().to_string()).collect()
        };
        assert_eq!(paths(v1(Some("/c"), Some("/s"))), ["/m", "/p", "/c", "/s"]);
        assert_eq!(paths(v1(None, Some("/s"))), ["/m", "/p", "/s"]);
        assert_eq!(paths(v1(Some("/c"), None)), ["/m", "/p", "/c"]);
    }

    #[test]
    fn v2_is_used_when_its_controllers_are_enabled() {
        let h = Hierarchy::from_mountinfo(PURE_V2, |m| {
            assert_eq!(m, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory pids\n".into())
        })
        .unwrap();
        assert_eq!(
            h,
            Hierarchy::V2 {
                mount: "/sys/fs/cgroup".into(),
                cpu: true,
                cpuset: true,
            }
        );
        let h = Hierarchy::from_mountinfo(HYBRID, |_| Some("memory pids".into())).unwrap();
        assert!(matches!(h, Hierarchy::V2 { cpu: false, .. }));
    }

    #[test]
    fn favordynmods_is_read_from_the_super_options_of_cgroup_mounts() {
        assert!(!favordynmods(HYBRID));
        assert!(!favordynmods(PURE_V2));
        // A v2 hierarchy remounted with it, as Linux 6.18 lists it; a v1 one in the same form
        // (v1 takes the option only when first mounted: not seen on the development machine).
        assert!(favordynmods(
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods\n"
        ));
        assert!(favordynmods(&format!(
            "{HYBRID}42 35 0:37 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids,favordynmods\n"
        )));
        // Only cgroup file systems count, and only the whole option.
        assert!(!favordynmods(
            "50 35 0:40 / /mnt rw - tmpfs favordynmods rw,favordynmods\n"
        ));
        assert!(!favordynmods(
            "41 31 0:38 / /x rw - cgroup2 cgroup2 rw,nofavordynmods\n"
        ));
    }

    #[test]
    fn no_controllers_is_an_error() {
        let err = Hierarchy::from_mountinfo(PURE_V2, |_| Some("cpu io".into())).unwrap_err();
        assert!(matches!(err, CgroupError::NoControllers));
    }
}
