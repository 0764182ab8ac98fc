//! hearth's cross-crate suites live in `tests/`; the sample functions they run live in
//! `src/bin/`. This library holds what both share.
#![warn(missing_docs)]

pub mod attack;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_ipc::{HostChannel, RequestMeta, ResponseStatus};
use hearth_sandbox::{Environment, SetupState};

/// Path of a binary built from this workspace (e.g. the sample function), next to the test
/// executable's own directory (`target/<profile>/`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Fails the test unless it runs as root: the suites that start real environments need it, and
/// must say so rather than pass vacuously.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test starts real environments and needs root (CI runs as root); run the suite with sudo");
}

/// A directory holding the sample function as `bootstrap`, as a function's code. It is written
/// once per test process, before any test can start an environment: an environment cloned while
/// another thread still has the file open for writing could not execute it (ETXTBSY).
pub fn sample_code_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            workspace_binary("hearth-sample-fn"),
            dir.path().join("bootstrap"),
        )
        .expect("copy the sample function");
        // Readable by the unprivileged user of the rootless test too.
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod the code directory");
        dir
    })
    .path()
}

/// Whether process `pid` exists.
pub fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `event` to an environment started directly with `hearth-sandbox` (no scheduler) and
/// waits up to 10 s for its answer. `Err` says why there is none: the failed setup step, or
/// "environment exited: STATUS".
pub fn invoke_environment(
    channel: &mut HostChannel,
    env: &mut Environment,
    event: &[u8],
) -> Result<(ResponseStatus, Vec<u8>), String> {
    channel
        .submit(event, &RequestMeta::default())
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        if let Some(done) = channel.poll(&mut out).map_err(|e| e.to_string())? {
            return Ok((done.status, out));
        }
        if let SetupState::Failed(failure) = env.poll_setup() {
            return Err(failure.to_string());
        }
        if let Some(status) = env.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("environment exited: {status}"));
        }
        if Instant::now() > deadline {
            return Err("no answer within 10 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A directory holding the seccomp sweep function (`hearth-sweep`) as `bootstrap`, written
/// once per test process like [`sample_code_dir`].
pub fn sweep_code_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            workspace_binary("hearth-sweep"),
            dir.path().join("bootstrap"),
        )
        .expect("copy the sweep function");
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod the code directory");
        dir
    })
    .path()
}

/// A directory holding the escape suite's hostile function (`hearth-attack`) as `bootstrap`,
/// mode 0755, written once per test process before any environment starts (as
/// [`sample_code_dir`] does for the sample function).
pub fn attack_code_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let bootstrap = dir.path().join("bootstrap");
        std::fs::copy(workspace_binary("hearth-attack"), &bootstrap)
            .expect("copy the attack function");
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&bootstrap, open).expect("chmod the attack function");
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open).expect("chmod the code directory");
        dir
    })
    .path()
}

/// Fails the test unless this machine has two CPUs or more: where environments run (`what`)
/// cannot be told apart on one.
pub fn require_two_cpus(what: &str) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "{what} is only observable with two CPUs (this machine has {cpus})"
    );
}

/// The CPUs process or thread `id` may run on (`Cpus_allowed_list` in its `/proc` status);
/// `None` once it is gone.
pub fn allowed_cpus(id: i32) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(first.parse::<usize>().ok()?..=last.parse::<usize>().ok()?);
    }
    Some(cpus)
}

/// The id of the thread named `comm` of process `pid` (`"self"`: this process).
pub fn thread_named(pid: &str, comm: &str) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == comm))?
        .file_name()
        .to_str()?
        .parse()
        .ok()
}

/// Where a process is in the cgroup tree of one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPath {
    /// In the v1 hierarchy of that controller, at this path (`/hearth/pid-P-I/env-K`).
    V1(String),
    /// In the unified (v2) hierarchy, which no v1 hierarchy of that controller overrides.
    V2(String),
}

/// Where process `pid` is for `controller` (`memory`, `cpuset`, …), from `/proc/<pid>/cgroup`;
/// `None` once it is gone.
pub fn cgroup_path(pid: i32, controller: &str) -> Option<CgroupPath> {
    let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = lines.lines().find_map(|l| {
        let (_, rest) = l.split_once(':')?;
        let (names, path) = rest.split_once(':')?;
        names
            .split(',')
            .any(|n| n == controller)
            .then(|| CgroupPath::V1(path.to_owned()))
    });
    v1.or_else(|| {
        lines
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| CgroupPath::V2(p.to_owned()))
    })
}

/// Host pids of the processes whose environment names Lambda function `name`
/// (`AWS_LAMBDA_FUNCTION_NAME`, which hearth sets in every environment): all processes of that
/// function's environments, zombies included.
pub fn function_pids(name: &str) -> Vec<i32> {
    let marker = format!("AWS_LAMBDA_FUNCTION_NAME={name}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .collect()
}

/// The children of process `pid` (its main thread's), as this process's pid namespace numbers
/// them; none if it is gone.
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A zygote's helper processes (see `hearth_runtime`'s zygote): its children in its own pid
/// namespace. (The environments it forked are each in a pid namespace of their own.)
pub fn zygote_helpers(zygote: i32) -> Vec<i32> {
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let own = ns(zygote);
    children_of(zygote)
        .into_iter()
        .filter(|&p| own.is_some() && ns(p) == own)
        .collect()
}

/// The host's mounts as this process sees them: mount point, type, source and options.
pub fn host_mounts() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|line| {
            let (left, right) = line.split_once(" - ").unwrap_or((line, ""));
            let fields: Vec<&str> = left.split(' ').collect();
            format!(
                "{} {} {}",
                fields.get(4).unwrap_or(&""),
                fields.get(5).unwrap_or(&""),
                right
            )
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The host's IPv4 addresses (every interface's).
pub fn host_ipv4_addresses() -> Vec<std::net::Ipv4Addr> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return found;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` points to a socket address that starts with its family.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: an AF_INET address is a `sockaddr_in`.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                found.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The unprivileged user the rootless tests run hearth as.
pub const NOBODY: u32 = 65534;

/// What an unprivileged hearth needs, where uid [`NOBODY`] may read and execute it (the build
/// directory may sit under /root): `hearth-sandbox-helper`, a function binary as
/// `code/bootstrap`, and a state directory it owns.
#[derive(Debug)]
pub struct RootlessDir {
    /// The temporary directory holding it all (mode 0755).
    pub dir: tempfile::TempDir,
    /// The helper binary.
    pub helper: PathBuf,
    /// The function's code directory.
    pub code: PathBuf,
    /// The helper's state directory, owned by [`NOBODY`].
    pub state: PathBuf,
}

impl RootlessDir {
    /// Prepares it with workspace binary `function` as the code.
    pub fn new(prefix: &str, function: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open.clone()).unwrap();
        let helper = dir.path().join("hearth-sandbox-helper");
        std::fs::copy(workspace_binary("hearth-sandbox-helper"), &helper).unwrap();
        std::fs::set_permissions(&helper, open.clone()).unwrap();
        let code = dir.path().join("code");
        std::fs::create_dir(&code).unwrap();
        std::fs::set_permissions(&code, open.clone()).unwrap();
        std::fs::copy(workspace_binary(function), code.join("bootstrap")).unwrap();
        std::fs::set_permissions(code.join("bootstrap"), open).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
        Self {
            dir,
            helper,
            code,
            state,
        }
    }
}

/// Asserts that hearth refused rootless mode in a chroot, saying why: the kernel creates no
/// user namespace for a process in a chroot (clone(2), EPERM).
pub fn assert_rootless_refused_in_chroot(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the kernel refuses to create user namespaces from inside a chroot"),
        "{stderr}"
    );
    eprintln!("in a chroot: rootless mode refused with a clear error, as it must be");
}

/// The checks of the sample function's `probe` report that hold in every environment, however
/// it was started (from nothing, or forked from a zygote): identity, pid namespace, dropped
/// privileges, seccomp, fds, read-only root, own `/tmp` and cgroup namespace.
pub fn assert_isolated(report: &serde_json::Value) {
    assert_eq!(report["uid"], 65534);
    assert_eq!(report["pid"], 1, "first process of its own pid namespace");
    assert_eq!(report["pids"], serde_json::json!(["1"]), "sees only itself");
    assert_eq!(report["hostname"], "hearth");
    for caps in ["cap_eff", "cap_prm", "cap_bnd", "cap_amb"] {
        assert_eq!(report[caps], "0000000000000000", "{caps}");
    }
    assert_eq!(report["no_new_privs"], "1");
    assert_eq!(report["groups"], "", "no supplementary groups");
    assert_eq!(report["seccomp"], "2");
    assert_eq!(report["sig_blk"], "0000000000000000", "no signal blocked");
    assert_eq!(
        report["sig_ign"], "0000000000001000",
        "only SIGPIPE ignored"
    );
    let mut fds: Vec<String> = serde_json::from_value(report["fds"].clone()).unwrap();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2", "3"], "only stdio is inherited");
    let sys = &report["syscalls"];
    for denied in [
        "mount",
        "unshare",
        "io_uring_setup",
        "setns",
        "chroot",
        "ptrace",
        "bpf",
        "keyctl",
        "perf_event_open",
        "userfaultfd",
        "clone_newns",
    ] {
        assert_eq!(sys[denied], libc::EPERM, "{denied} must fail with EPERM");
    }
    assert_eq!(sys["socket_netlink"], libc::ENOSYS);
    let paths = &report["paths"];
    assert_eq!(paths["write_root"], libc::EROFS);
    assert_eq!(paths["write_task"], libc::EROFS);
    assert_eq!(paths["write_usr"], libc::EROFS);
    assert_eq!(paths["write_tmp"], "ok");
    // A fresh /tmp: the directory does not exist yet.
    assert_eq!(paths["mkdir_tmp"], "ok");
    assert_eq!(paths["read_host_os_release"], libc::ENOENT);
    assert_ne!(paths["write_proc_sysrq"], "ok");
    assert_eq!(
        paths["write_proc_self_comm"],
        libc::EACCES,
        "landlock in force: nothing outside /tmp and the four devices is writable"
    );
    assert!(
        report["cgroup"]
            .as_str()
            .unwrap()
            .lines()
            .all(|l| l.ends_with(":/")),
        "cgroup namespace rooted at its own cgroup: {}",
        report["cgroup"]
    );
}
