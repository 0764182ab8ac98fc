//! [`Sandbox`]: the once-per-daemon preparation, and [`Sandbox::spawn`], which starts one
//! environment and returns its [`Environment`] handle at once.

use std::ffi::c_void;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{CgroupError, CgroupInstance, EnvCgroup, Hierarchy, Limits};
use crate::child::{self, ChildPlan, ZygoteFds};
use crate::landlock::{self, LandlockMode, LandlockRules};
use crate::plan;
use crate::root::RootSkeleton;
use crate::seccomp::{SeccompError, SeccompProgram};
use crate::step::Step;
use crate::sys::{self, CloneArgs, ExitStatus, SignalsBlocked, Stack};

/// Stack for the child's setup code (it runs until `execve`). Only touched pages cost memory.
const CHILD_STACK: usize = 256 * 1024;

/// Once-per-daemon settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where the root skeleton is kept (created if missing).
    pub state_dir: PathBuf,
    /// User id functions run as (inside their user namespace in rootless mode).
    pub uid: u32,
    /// Group id functions run as.
    pub gid: u32,
    /// Hostname inside environments.
    pub hostname: String,
    /// What to do on a kernel without landlock.
    pub landlock: LandlockMode,
    /// What to do when no cgroup can be created (only possible in rootless mode: as root a
    /// missing cgroup hierarchy is always an error).
    pub cgroups: CgroupPolicy,
    /// Use the cpuset controller, where the hierarchy has it, to confine an environment to the
    /// CPU its limits name ([`Limits::cpu`]; v1: one more cgroup directory per environment).
    /// Off: [`Limits::cpu`] is ignored.
    pub cpusets: bool,
}

/// Whether environments must get a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupPolicy {
    /// Refuse to start without one (the default).
    #[default]
    Required,
    /// Rootless mode only: start environments without memory, pids and CPU limits when this
    /// user may not create cgroups (no delegated subtree). The environments are otherwise as
    /// isolated as usual, but a function can then exhaust the host's memory or pids.
    BestEffortWhenRootless,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let state_dir = if sys::has_cap_sys_admin() {
            PathBuf::from("/run/hearth")
        } else {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| PathBuf::from(d).join("hearth"))
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("hearth-{}", std::process::id()))
                })
        };
        Self {
            state_dir,
            uid: 65534,
            gid: 65534,
            hostname: "hearth".into(),
            landlock: LandlockMode::Required,
            cgroups: CgroupPolicy::Required,
            cpusets: false,
        }
    }
}

/// Preparing the sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The seccomp policy.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Landlock is required and the kernel has none.
    #[error("the kernel does not support landlock; set the landlock mode to best-effort to run without it")]
    LandlockUnavailable,
    /// Creating the empty network namespace.
    #[error("creating the empty network namespace")]
    NetNs(#[source] io::Error),
    /// Finding or creating the cgroup subtree.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Preparing the root skeleton.
    #[error("preparing the root skeleton in {path}")]
    Root {
        /// State directory.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// Opening `/dev/null` or reading `/proc/sys/kernel/cap_last_cap`.
    #[error("reading {path}")]
    Host {
        /// Path.
        path: &'static str,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The daemon runs in a chroot whose root is not a mount point, on a host with shared mount
    /// propagation: environments' mounts could not be kept from propagating to the host.
    #[error("hearth runs in a chroot whose root is not a mount point, and the host uses shared mount propagation: environments' mounts would propagate to the host. Run hearth outside the chroot, or make its root a mount point (mount --bind DIR DIR; mount --make-private DIR)")]
    ChrootWithSharedPropagation,
    /// Rootless mode needs user namespaces, which the kernel does not create for a process in a
    /// chroot.
    #[error("hearth is not root and runs in a chroot: the kernel refuses to create user namespaces from inside a chroot, so environments cannot be started; run hearth as root or outside the chroot")]
    RootlessInChroot,
    /// Rootless mode needs a delegated cgroup subtree, which this host does not give.
    #[error("hearth is not root and found no cgroup it may write to: {0}")]
    Rootless(CgroupError),
}

/// Starting an environment failed in the parent (failures inside the child are
/// [`SetupFailure`]s).
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The environment's cgroup.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A path, argument or variable contains a NUL byte (or is otherwise unusable).
    #[error("the {what} {value:?} cannot be passed to the environment")]
    Nul {
        /// Which input.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// Creating the error pipe or the child's stack.
    #[error("preparing to start the environment")]
    Prepare(#[source] io::Error),
    /// `clone3`.
    #[error("clone3 of the environment process")]
    Clone(#[source] io::Error),
    /// A zygote needs a user namespace, which the kernel does not create in a chroot.
    #[error("zygotes need a user namespace, which the kernel does not create for a process in a chroot; environments start from nothing")]
    ZygoteInChroot,
    /// Moving the new process to the environment's CPUs.
    #[error("setting the environment's CPU affinity")]
    Affinity(#[source] io::Error),
    /// Writing the user namespace's id maps.
    #[error("writing {path}")]
    IdMap {
        /// Map file.
        path: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

/// A step inside the child failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sandbox setup failed {step}: {}", io::Error::from_raw_os_error(*.errno))]
pub struct SetupFailure {
    /// The step.
    pub step: Step,
    /// Its errno.
    pub errno: i32,
}

/// Where an environment's setup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupState {
    /// Still between `clone3` and `execve`.
    Running,
    /// The function was executed (or the process ended without reporting a failure).
    Execed,
    /// A step failed; the process has exited or is exiting with status 127.
    Failed(SetupFailure),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvSpec<'a> {
    /// Directory shown read-only at `/var/task`.
    pub code_dir: &'a Path,
    /// Absolute path, inside the environment, of the program to execute.
    pub command: &'a str,
    /// Arguments after the program name.
    pub args: &'a [String],
    /// The whole environment of the program (nothing is inherited).
    pub env: &'a [(String, String)],
    /// The channel memfd; the program sees it as fd 3.
    pub channel: BorrowedFd<'a>,
    /// Standard output (default `/dev/null`).
    pub stdout: Option<BorrowedFd<'a>>,
    /// Standard error (default `/dev/null`).
    pub stderr: Option<BorrowedFd<'a>>,
    /// cgroup limits.
    pub limits: Limits,
    /// Size of the `/tmp` tmpfs in bytes.
    pub tmp_bytes: u64,
    /// CPUs the environment may run on (default: those of the thread calling `spawn`).
    pub cpus: Option<&'a [usize]>,
    /// Give the environment its own network namespace with loopback up (otherwise it has no
    /// network at all). Costs a network namespace per environment (about 0.5 ms).
    pub loopback: bool,
    /// Directory shown read-only at `/var/runtime` (hearth's runtime files).
    pub runtime_dir: Option<&'a Path>,
    /// Layer directories, in Lambda's order, shown merged and read-only at `/opt`.
    pub layers: &'a [PathBuf],
    /// Start a zygote instead of an environment: the program runs in a user namespace of its
    /// own, keeping `CAP_SYS_ADMIN` and `CAP_SETPCAP` there, under the zygote seccomp policy,
    /// with its own network namespace, and not landlocked; it finds its children's seccomp
    /// program at fd 5, [`ZygoteSpec`]'s landlock rules at fd 6 and (where io_uring is
    /// available) a ring that can only register and unregister buffers at fd 7, and
    /// `channel` (fd 3) is its control socket. See `hearth-snapshot`.
    pub zygote: Option<ZygoteSpec<'a>>,
}

/// What a zygote gets besides its children's seccomp program (which the sandbox provides).
#[derive(Debug, Clone, Copy, Default)]
pub struct ZygoteSpec<'a> {
    /// Kept at fd 6: the landlock rules its children build their rulesets from (in a form the
    /// zygote reads: [`Sandbox::landlock_rules`] encoded by `hearth-snapshot`). `None` where
    /// landlock is not in force.
    pub landlock_rules: Option<BorrowedFd<'a>>,
}

/// Everything prepared once and shared by all environments.
#[derive(Debug)]
pub struct Sandbox {
    seccomp: SeccompProgram,
    zygote_seccomp: SeccompProgram,
    /// The native program as a sealed memfd, handed to zygotes for their children.
    child_filter: OwnedFd,
    landlock_abi: u32,
    netns: Option<OwnedFd>,
    cgroups: Option<CgroupInstance>,
    root: RootSkeleton,
    devnull: OwnedFd,
    cap_last_cap: u32,
    rootless: bool,
    reset_signals: Vec<i32>,
    switch: plan::RootSwitch,
    config: SandboxConfig,
}

/// Whether this process runs in a chroot whose root is not a mount point (no mount in
/// `/proc/self/mountinfo` sits at `/`). The kernel refuses `CLONE_NEWUSER` there; it also does in
/// a chroot whose root happens to be a mount point, which this does not detect (spawning then
/// fails with EPERM).
pub fn chrooted() -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mountinfo| {
        !mountinfo
            .lines()
            .any(|line| line.split(' ').nth(4) == Some("/"))
    })
}

/// How environments enter their root, from this process's view of its mounts.
fn root_switch() -> Result<plan::RootSwitch, SandboxError> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(|source| SandboxError::Host {
            path: "/proc/self/mountinfo",
            source,
        })?;
    let mut root_is_mount = false;
    let mut shared = false;
    for line in mountinfo.lines() {
        let (left, _) = line.split_once(" - ").unwrap_or((line, ""));
        let fields: Vec<&str> = left.split(' ').collect();
        root_is_mount |= fields.get(4) == Some(&"/");
        shared |= fields.iter().skip(6).any(|f| f.starts_with("shared:"));
    }
    match (root_is_mount, shared) {
        (true, _) => Ok(plan::RootSwitch::Pivot),
        (false, false) => Ok(plan::RootSwitch::Chroot),
        (false, true) => Err(SandboxError::ChrootWithSharedPropagation),
    }
}

impl Sandbox {
    /// Prepares the sandbox: compiles the seccomp policy, checks landlock, creates the empty
    /// network namespace (root mode), the root skeleton and this process's cgroup subtree. It
    /// also reads this process's signal dispositions, which environments get reset to the
    /// default: install signal handlers before creating the sandbox.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let rootless = !sys::has_cap_sys_admin();
        if rootless && chrooted() {
            return Err(SandboxError::RootlessInChroot);
        }
        if !rootless {
            // Each environment's first process shares the daemon's memory until it execs, and
            // its switch to the function's uid marks that shared memory not dumpable. Do it up
            // front so the daemon's state does not change at its first environment (as root
            // it is the safer state anyway: it will hold keys).
            sys::set_not_dumpable();
        }
        let switch = root_switch()?;
        if switch == plan::RootSwitch::Chroot {
            tracing::warn!("hearth's root is not a mount point (a chroot): environments chroot into their root instead of pivot_root");
        }
        let seccomp = SeccompProgram::native()?;
        let zygote_seccomp = SeccompProgram::zygote()?;
        let child_filter = sys::sealed_memfd(
            c"hearth-seccomp",
            &SeccompProgram::zygote_child()?.as_bytes(),
        )
        .map_err(|source| SandboxError::Host {
            path: "memfd_create",
            source,
        })?;
        let landlock_abi = landlock::kernel_abi();
        if landlock_abi == 0 && config.landlock == LandlockMode::Required {
            return Err(SandboxError::LandlockUnavailable);
        }
        // One shared empty network namespace, unless environments could then reach each
        // other: abstract unix sockets live in a network namespace, and only landlock ABI 6+
        // scopes them to the environment. Rootless environments need a namespace their own user
        // namespace owns. Otherwise each environment gets its own (about 0.5 ms per cold start
        // on the development machine).
        let netns = if rootless || landlock_abi.min(landlock::TARGET_ABI) < 6 {
            None
        } else {
            Some(crate::netns::create_empty().map_err(SandboxError::NetNs)?)
        };
        let cgroups = Hierarchy::detect()
            .map(|h| {
                if config.cpusets {
                    h
                } else {
                    h.without_cpuset()
                }
            })
            .and_then(CgroupInstance::create);
        let cgroups = match (cgroups, rootless, config.cgroups) {
            (Ok(c), _, _) => Some(c),
            (Err(e), true, CgroupPolicy::BestEffortWhenRootless) => {
                tracing::warn!(error = %e, "rootless and no writable cgroup: environments run without memory, pids and CPU limits");
                None
            }
            (Err(e), true, CgroupPolicy::Required) => return Err(SandboxError::Rootless(e)),
            (Err(e), false, _) => return Err(e.into()),
        };
        if cgroups.is_some() && !crate::cgroup::machine_favordynmods() {
            tracing::info!("no cgroup hierarchy is mounted with favordynmods: moving an environment into its cgroup can first wait for an RCU grace period (milliseconds); `mount -o remount,favordynmods <cgroup2 mount>` or the kernel parameter cgroup_favordynmods=true makes such moves cheap (see hearth_sandbox::cgroup)");
        }
        let root =
            RootSkeleton::prepare(&config.state_dir, config.uid, config.gid).map_err(|source| {
                SandboxError::Root {
                    path: config.state_dir.clone(),
                    source,
                }
            })?;
        let devnull = fs::File::open("/dev/null").map_err(|source| SandboxError::Host {
            path: "/dev/null",
            source,
        })?;
        let cap_last_cap = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| SandboxError::Host {
                path: "/proc/sys/kernel/cap_last_cap",
                source: io::Error::from(io::ErrorKind::InvalidData),
            })?;
        Ok(Self {
            seccomp,
            zygote_seccomp,
            child_filter,
            landlock_abi,
            netns,
            cgroups,
            root,
            devnull: devnull.into(),
            cap_last_cap,
            rootless,
            reset_signals: sys::signals_not_default(),
            switch,
            config,
        })
    }

    /// Whether environments get a user namespace (hearth lacks `CAP_SYS_ADMIN`).
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// Whether zygotes can be started: not in a chroot whose root is not a mount point, where
    /// the kernel makes no user namespace (a zygote needs one; see [`SpawnError::ZygoteInChroot`]).
    pub fn zygotes_supported(&self) -> bool {
        self.switch != plan::RootSwitch::Chroot
    }

    /// The landlock ABI in force (0: none).
    pub fn landlock_abi(&self) -> u32 {
        self.landlock_abi.min(landlock::TARGET_ABI)
    }

    /// The landlock rules every environment gets (`None`: landlock is not in force).
    pub fn landlock_rules(&self) -> Option<LandlockRules> {
        landlock::plan(self.landlock_abi)
    }

    /// The cgroup hierarchy in use (`None`: rootless without cgroups).
    pub fn hierarchy(&self) -> Option<&Hierarchy> {
        self.cgroups.as_ref().map(CgroupInstance::hierarchy)
    }

    /// A cgroup with `limits` for an environment some other process starts (a zygote's child).
    /// `None` in rootless mode without cgroups.
    pub fn env_cgroup(&self, limits: &Limits) -> Result<Option<EnvCgroup>, CgroupError> {
        self.cgroups.as_ref().map(|c| c.env(limits)).transpose()
    }

    /// Creates empty environment cgroups ahead of need, so a cold start only writes limits.
    pub fn prepare_cgroups(&self, count: usize) -> Result<(), CgroupError> {
        self.cgroups.as_ref().map_or(Ok(()), |c| c.prepare(count))
    }

    /// Starts an environment. Returns as soon as the process exists; it finishes its setup and
    /// executes `spec.command` on its own.
    pub fn spawn(&self, spec: &EnvSpec<'_>) -> Result<Environment, SpawnError> {
        if spec.zygote.is_some() && self.switch == plan::RootSwitch::Chroot {
            return Err(SpawnError::ZygoteInChroot);
        }
        let cgroup = self
            .cgroups
            .as_ref()
            .map(|c| c.env(&spec.limits))
            .transpose()?;
        // The daemon polls for setup failures: non-blocking.
        let (errors, error_write) = sys::pipe_cloexec(true).map_err(SpawnError::Prepare)?;
        let user_namespace = self.rootless || spec.zygote.is_some();
        let userns_pipe = if user_namespace {
            // The child blocks on it until the id maps are written.
            Some(sys::pipe_cloexec(false).map_err(SpawnError::Prepare)?)
        } else {
            None
        };
        // A zygote's ring for pinning the pages its children write (fd 7; see
        // `buffer_pinning_ring`). Where io_uring is unavailable the zygote goes without: its
        // children then copy those pages on their first writes, as any forked process does.
        let ring = spec.zygote.and_then(|_| sys::buffer_pinning_ring().ok());
        let fixed = plan::Fixed {
            root: &self.root,
            seccomp: if spec.zygote.is_some() {
                self.zygote_seccomp.instructions()
            } else {
                self.seccomp.instructions()
            },
            landlock_abi: self.landlock_abi,
            cap_last_cap: self.cap_last_cap,
            uid: self.config.uid,
            gid: self.config.gid,
            hostname: &self.config.hostname,
            netns: self.netns.as_ref().map(AsRawFd::as_raw_fd),
            devnull: self.devnull.as_raw_fd(),
            reset_signals: &self.reset_signals,
            switch: self.switch,
            zygote: spec.zygote.map(|z| ZygoteFds {
                filter: self.child_filter.as_raw_fd(),
                rules: z.landlock_rules.map(|fd| fd.as_raw_fd()),
                ring: ring.as_ref().map(AsRawFd::as_raw_fd),
            }),
            as_root: !self.rootless,
        };
        let plan = Box::new(plan::build(
            &fixed,
            spec,
            cgroup
                .as_ref()
                .map(EnvCgroup::procs_fds)
                .unwrap_or_default(),
            error_write.as_raw_fd(),
            userns_pipe.as_ref().map(|(read, _)| read.as_raw_fd()),
        )?);
        let stack = Stack::new(CHILD_STACK).map_err(SpawnError::Prepare)?;

        let mut flags = libc::CLONE_VM
            | libc::CLONE_PIDFD
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if user_namespace {
            flags |= libc::CLONE_NEWUSER;
        }
        if self.netns.is_none() || spec.loopback || spec.zygote.is_some() {
            flags |= libc::CLONE_NEWNET;
        }
        let mut pidfd: RawFd = -1;
        let mut args = CloneArgs {
            flags: u64::try_from(flags).unwrap_or_default(),
            pidfd: std::ptr::from_mut(&mut pidfd) as u64,
            exit_signal: 0,
            stack: stack.bottom(),
            stack_size: stack.size(),
            ..CloneArgs::default()
        };
        if let Some(fd) = cgroup.as_ref().and_then(EnvCgroup::clone_into_fd) {
            args.flags |= 0x2_0000_0000; // CLONE_INTO_CGROUP
            args.cgroup = u64::try_from(fd).unwrap_or_default();
        }
        let plan_ptr = std::ptr::from_ref::<ChildPlan>(&plan)
            .cast_mut()
            .cast::<c_void>();
        let pid = {
            // No signal handler may run in the child before it resets them.
            let _blocked = SignalsBlocked::new();
            // SAFETY: `stack` is a fresh 16-byte aligned mapping that `Environment` keeps until
            // the child has exec'd or exited; `plan` is boxed, never modified, and kept just as
            // long; `child::entry` never returns and uses only the plan and its own stack.
            unsafe { sys::clone3_on_stack(&mut args, child::entry, plan_ptr) }
        }
        .map_err(|errno| SpawnError::Clone(io::Error::from_raw_os_error(errno)))?;
        drop(error_write);
        // SAFETY: CLONE_PIDFD made the kernel store a fresh pidfd that we now own.
        let pidfd = unsafe { sys::own_fd(pidfd) };
        // The child starts with the caller's affinity (a shard thread is pinned to one CPU, on
        // which the child would wait until the shard sleeps). Move it before it has run, so its
        // setup proceeds on the environment's CPUs while the caller goes on.
        let affinity = spec
            .cpus
            .map(|cpus| sys::set_affinity(pid, &sys::cpu_set(cpus)));
        let mut env = Environment {
            pid,
            pidfd,
            errors,
            cgroup,
            launch: Some(Launch {
                _stack: stack,
                _plan: plan,
            }),
            status: None,
            adopted: None,
        };
        if let Some(Err(e)) = affinity {
            env.kill();
            return Err(SpawnError::Affinity(e));
        }
        if let Some((_, sync)) = userns_pipe {
            if let Err(e) = self.write_id_maps(pid, &sync) {
                env.kill();
                return Err(e);
            }
        }
        Ok(env)
    }

    /// Maps the function's uid and gid inside the new user namespace to ours (rootless) or to
    /// the same ids outside (a zygote started as root), then lets the child go on.
    fn write_id_maps(&self, pid: i32, sync: &OwnedFd) -> Result<(), SpawnError> {
        let (uid, gid) = if self.rootless {
            // SAFETY: getuid cannot fail.
            let uid = unsafe { libc::getuid() };
            // SAFETY: getgid cannot fail.
            (uid, unsafe { libc::getgid() })
        } else {
            (self.config.uid, self.config.gid)
        };
        let write = |file: &str, content: String| {
            let path = format!("/proc/{pid}/{file}");
            fs::write(&path, content).map_err(|source| SpawnError::IdMap { path, source })
        };
        // Unprivileged map writers must deny setgroups; as root, the process keeps the right
        // to drop the supplementary groups it inherited, and does.
        if self.rootless {
            write("setgroups", "deny".into())?;
        }
        write("gid_map", format!("{} {gid} 1\n", self.config.gid))?;
        write("uid_map", format!("{} {uid} 1\n", self.config.uid))?;
        let file = fs::File::from(sync.try_clone().map_err(SpawnError::Prepare)?);
        io::Write::write_all(&mut &file, &[1]).map_err(SpawnError::Prepare)
    }
}

/// A pipe (read end, write end), both close-on-exec; the read end non-blocking if asked.
pub fn pipe(nonblocking_read: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    sys::pipe_cloexec(nonblocking_read)
}

/// How long [`Environment::wait`] waits for an adopted environment's process (killed first
/// by every caller) to be gone.
const ADOPTED_WAIT: Duration = Duration::from_secs(1);

/// A process offered for adoption is not what it should be.
#[derive(Debug, thiserror::Error)]
#[error("cannot adopt the environment: {0}")]
pub struct AdoptError(pub String);

/// The pipe on which an environment's first process reports a failed setup step: (read end,
/// non-blocking; write end), both close-on-exec. For environments another process starts (see
/// [`Environment::adopt`]).
pub fn setup_error_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::pipe_cloexec(true)
}

/// Memory the child uses until it execs.
#[derive(Debug)]
struct Launch {
    _stack: Stack,
    _plan: Box<ChildPlan>,
}

/// A started environment. Dropping it kills it, waits for it, and removes its cgroup.
#[derive(Debug)]
pub struct Environment {
    pid: i32,
    pidfd: OwnedFd,
    errors: OwnedFd,
    cgroup: Option<EnvCgroup>,
    launch: Option<Launch>,
    status: Option<ExitStatus>,
    /// Set for an environment forked by a zygote: not our child, so its exit status is what
    /// the zygote reported (`Some(None)` until it has).
    adopted: Option<Option<ExitStatus>>,
}

impl Environment {
    /// The environment's first process, as seen by the host.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the first process: readable once it has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Checks, without blocking, whether setup finished or failed.
    pub fn poll_setup(&mut self) -> SetupState {
        let mut record = [0u8; 8];
        match sys::read_nonblocking(self.errors.as_fd(), &mut record) {
            Ok(None) => SetupState::Running,
            Ok(Some(8)) => {
                let step = u32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
                let errno = i32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
                SetupState::Failed(SetupFailure {
                    step: Step::from_u32(step).unwrap_or(Step::Exec),
                    errno,
                })
            }
            // EOF: the pipe's only write end closed at exec (or exit). Either way the child no
            // longer runs on our stack.
            Ok(Some(_)) | Err(_) => {
                self.launch = None;
                SetupState::Execed
            }
        }
    }

    /// Sends SIGKILL to the environment: its first process is the init of its pid namespace,
    /// so the kernel kills every process in it; the cgroup is killed too for good measure.
    pub fn kill(&mut self) {
        let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.kill();
        }
    }

    /// Sends SIGTERM to the environment's first process only (a graceful stop: hearth-init
    /// then gives extensions their `SHUTDOWN` event). Follow with [`Environment::kill`] if it
    /// has not exited in time.
    pub fn terminate(&mut self) {
        let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGTERM);
    }

    /// An environment whose first process a child of ours started (a zygote's child): `pidfd`
    /// must be a pidfd of a child of process `parent` (else the cgroup is released and the
    /// error says why), `errors` is the read end of the pipe it reports setup failures on
    /// (closed by it once set up), `cgroup` the cgroup [`Environment::join_cgroup`] moves it
    /// into. hearth cannot reap it: its exit status is what [`Environment::set_exit_status`]
    /// was told.
    pub fn adopt(
        pidfd: OwnedFd,
        errors: OwnedFd,
        cgroup: Option<EnvCgroup>,
        parent: i32,
    ) -> Result<Self, AdoptError> {
        let refuse = |why: String, cgroup: Option<EnvCgroup>| {
            if let Some(cgroup) = cgroup {
                let _ = cgroup.release();
            }
            Err(AdoptError(why))
        };
        match sys::pidfd_info(pidfd.as_fd()) {
            Some((pid, ppid)) if pid > 0 && ppid == parent => Ok(Self {
                pid,
                pidfd,
                errors,
                cgroup,
                launch: None,
                status: None,
                adopted: Some(None),
            }),
            Some((pid, ppid)) => refuse(
                format!("process {pid} is a child of {ppid}, not of {parent}"),
                cgroup,
            ),
            None => refuse("not a pidfd of a live process".into(), cgroup),
        }
    }

    /// Moves an adopted environment's first process into its cgroup.
    pub fn join_cgroup(&self) -> Result<(), CgroupError> {
        self.cgroup.as_ref().map_or(Ok(()), |c| c.attach(self.pid))
    }

    /// Whether this environment was forked by a zygote.
    pub fn adopted(&self) -> bool {
        self.adopted.is_some()
    }

    /// An adopted environment's exit status, as its zygote reported it.
    pub fn set_exit_status(&mut self, status: ExitStatus) {
        if let Some(reported) = &mut self.adopted {
            *reported = Some(status);
        }
    }

    /// Reaps the first process if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(reported) = self.adopted {
            if self.status.is_none() && sys::pidfd_exited(self.pidfd.as_fd(), Some(Duration::ZERO))
            {
                self.status = Some(reported.unwrap_or(ExitStatus::Unknown));
            }
            return Ok(self.status);
        }
        if self.status.is_none() {
            self.status = sys::waitid_pidfd(self.pidfd.as_fd(), false)?;
            if self.status.is_some() {
                self.launch = None;
            }
        }
        Ok(self.status)
    }

    /// Waits for the first process to exit and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if let Some(reported) = self.adopted {
            // Bounded: hearth cannot reap it, and its pidfd says only whether it has exited.
            sys::pidfd_exited(self.pidfd.as_fd(), Some(ADOPTED_WAIT));
            let status = reported.unwrap_or(ExitStatus::Unknown);
            self.status = Some(status);
            return Ok(status);
        }
        let status =
            sys::waitid_pidfd(self.pidfd.as_fd(), true)?.unwrap_or(ExitStatus::Signaled(0));
        self.status = Some(status);
        self.launch = None;
        Ok(status)
    }

    /// Whether the kernel OOM-killed a process of this environment.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0)
    }

    /// Peak memory use of the environment in bytes, if it has a cgroup that reports it.
    pub fn memory_peak(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(EnvCgroup::memory_peak)
    }

    /// Processes left in the environment's cgroup.
    pub fn process_count(&self) -> usize {
        self.cgroup.as_ref().map_or(0, EnvCgroup::process_count)
    }

    /// The environment's cgroup directory (memory hierarchy).
    pub fn cgroup_path(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(EnvCgroup::path)
    }

    /// Gives the cgroup of an environment that has been reaped back for reuse. If processes
    /// remain (they should not once the pid namespace's init is reaped), they are killed and the
    /// release is retried for up to 100 ms.
    pub fn release_cgroup(&mut self) -> Result<(), CgroupError> {
        let mut attempt = 0;
        while let Some(cgroup) = self.cgroup.take() {
            match cgroup.release() {
                Ok(()) => return Ok(()),
                Err(failed) => {
                    let (cgroup, e) = *failed;
                    attempt += 1;
                    let _ = cgroup.kill();
                    self.cgroup = Some(cgroup);
                    if attempt > 100 {
                        return Err(e);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = self.wait();
        }
        let _ = self.release_cgroup();
    }
}
