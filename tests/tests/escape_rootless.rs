//! Tier 2 (root, dropping to uid 65534): the escape suite of `tests/tests/escape.rs`, every
//! attack of `hearth-attack`, run in ROOTLESS mode. The test copies `hearth-sandbox-helper` and
//! the attack function (as `bootstrap`) into a 0755 directory, then for each attack runs
//! `hearth-sandbox-helper attack` as uid/gid 65534: hearth, unprivileged, puts the environment in
//! a user namespace (`CgroupPolicy::BestEffortWhenRootless`), with a sibling environment beside
//! it, and reports each answer. The test asserts the attack's expected outcome and checks the
//! host as `escape.rs` does: hearth's binaries (the copies executed and the build) unchanged, the
//! mount table, `/etc/{passwd,hostname,shadow,hosts}`, a canary file, the code directory as
//! before, nothing named `hearth-escape-*` appeared, no process of the attack left, a host
//! process and the sibling alive (the sibling answering from the same environment), nobody
//! connected to the test's TCP listeners or abstract unix socket.
//!
//! Where rootless mode legitimately differs from root mode, the rootless outcome is asserted
//! with a comment saying why. The checks that need root are listed in [`NEEDS_ROOT`].
//!
//! In a chroot (CI's fresh machine) the kernel creates no user namespace: the test asserts
//! hearth's clear error instead, as `rootless.rs` does.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_tests::attack::{assert_report_blocked, describe, step, walk};
use hearth_tests::{require_root, workspace_binary};
use serde_json::Value;

use hearth_tests::NOBODY;

/// What rootless mode does not check on this kind of host, and why: said plainly.
const NEEDS_ROOT: &[(&str, &str)] = &[
    (
        "cgroup limits: fork bomb stopped at pids.max, memory beyond the function's MB OOM-killed \
         inside its cgroup, CPU weight (containment.rs, engine.rs)",
        "need a cgroup subtree the unprivileged user may write; this host delegates none, so \
         BestEffortWhenRootless runs environments WITHOUT memory, pids and CPU limits. Only root \
         (or a systemd-delegated subtree) gives them.",
    ),
    (
        "the shared, empty network namespace every environment joins",
        "creating it needs CAP_SYS_ADMIN on the host; rootless, each environment gets a network \
         namespace of its own (just as empty), so abstract sockets of other environments are \
         unreachable for that reason rather than landlock's scoping.",
    ),
    (
        "timeout kill of every process within 100 ms, via cgroup.kill (containment.rs)",
        "without a cgroup the environment is killed as its pid namespace's init (SIGKILL to pid \
         1 kills the namespace), which this suite exercises (ring-never-consume), but the \
         cgroup-based sweep and its timing are root-only here.",
    ),
    (
        "running any of this in a chroot (CI)",
        "the kernel refuses user namespaces to a chrooted process; hearth refuses rootless mode \
         there with a clear error, which is what this test asserts in a chroot.",
    ),
];

/// How an attack must end.
#[derive(Clone, Copy)]
enum Expect {
    /// Answers `blocked`, at least `min` judged steps, each failing with one of these errnos.
    Blocked(&'static [&'static str], usize),
    /// Killed by this signal (`Runtime.ExitError`); `None`: what `int 0x80` dies of here.
    Killed(Option<&'static str>),
    /// The host refused its channel writes and killed it (`Runtime.InvalidResponse`).
    Invalid,
    /// A check of its own.
    Custom(fn(&Value)),
}

use Expect::{Blocked, Custom, Invalid, Killed};

/// (attack, invocations, timeout in ms, expectation), in escape.rs's order.
const ATTACKS: &[(&str, u32, u64, Expect)] = &[
    // CVE-2019-5736: the function's own binary, through /proc, is read-only to it.
    (
        "exe-self-write",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS"], 5),
    ),
    (
        "exe-pid1-write",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS"], 3),
    ),
    (
        "exe-opath-reopen",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS", "EPERM"], 3),
    ),
    ("exe-host-write", 1, 10_000, Blocked(&["ENOENT"], 4)),
    // CVE-2024-21626: nothing but stdio and the channel is inherited.
    ("fd-openat-dotdot", 1, 10_000, Blocked(&["ENOTDIR"], 16)),
    ("fd-probe-range", 1, 10_000, Blocked(&["EBADF"], 1)),
    ("fd-leak-walk", 1, 10_000, Custom(fd_leak_walk)),
    ("fd-cwd-root", 1, 10_000, Custom(fd_cwd_root)),
    ("tmp-symlinks", 1, 10_000, Custom(tmp_symlinks)),
    (
        "tmp-replace-mountpoint",
        1,
        10_000,
        Blocked(&["EBUSY", "EROFS", "EACCES", "EPERM", "EXDEV"], 7),
    ),
    // Other processes: the pid namespace holds only the environment's own.
    ("ptrace-pid1", 1, 10_000, Blocked(&["EPERM"], 4)),
    ("ptrace-guessed-pids", 1, 10_000, Blocked(&["EPERM"], 2)),
    ("ptrace-host", 1, 10_000, Blocked(&["EPERM"], 12)),
    ("process-vm-pid1", 1, 10_000, Blocked(&["EPERM"], 4)),
    ("process-vm-guessed-pids", 1, 10_000, Blocked(&["EPERM"], 2)),
    ("proc-pid-files", 1, 10_000, Blocked(&["ENOENT"], 16)),
    // The filesystem layout and namespaces are fixed.
    ("mount", 1, 10_000, Blocked(&["EPERM"], 8)),
    ("umount2", 1, 10_000, Blocked(&["EPERM"], 5)),
    ("pivot-root", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("chroot", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("fsopen", 1, 10_000, Blocked(&["EPERM"], 8)),
    ("open-tree", 1, 10_000, Blocked(&["EPERM"], 4)),
    ("move-mount", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("unshare", 1, 10_000, Blocked(&["EPERM"], 9)),
    (
        "setns",
        1,
        10_000,
        Blocked(&["EPERM", "ENOENT", "ENOSYS"], 15),
    ),
    ("clone-ns-flags", 1, 10_000, Blocked(&["EPERM"], 7)),
    ("clone3-ns-flags", 1, 10_000, Blocked(&["ENOSYS"], 7)),
    // Kernel attack surface.
    ("keyctl", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("add-key", 1, 10_000, Blocked(&["EPERM"], 2)),
    ("request-key", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("bpf", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("perf-event-open", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("userfaultfd", 1, 10_000, Blocked(&["EPERM", "ENOENT"], 3)),
    ("io-uring", 1, 10_000, Blocked(&["EPERM"], 3)),
    ("tiocsti", 1, 10_000, Blocked(&["ENOSYS", "ENOENT"], 8)),
    ("tiocsti-high-bits", 1, 10_000, Blocked(&["ENOSYS"], 9)),
    (
        "x32-abi",
        1,
        10_000,
        Killed(Some("signal: bad system call")),
    ),
    ("int80", 1, 10_000, Killed(None)),
    ("open-by-handle-at", 1, 10_000, Blocked(&["EPERM"], 5)),
    (
        "privileged-syscalls",
        1,
        10_000,
        Blocked(&["ENOSYS", "EPERM"], 17),
    ),
    // The host's files.
    (
        "write-proc-sys",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS", "ENOENT"], 6),
    ),
    (
        "write-sysrq-trigger",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS", "ENOENT"], 4),
    ),
    (
        "write-proc-self",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS", "EPERM"], 9),
    ),
    (
        "write-sys-fs-cgroup",
        1,
        10_000,
        Blocked(&["ENOENT", "EROFS", "EACCES", "EPERM"], 11),
    ),
    // DIFFERS in errno from root mode for /etc/passwd (EACCES there, EROFS here): rootless,
    // the root skeleton is written by the unprivileged daemon, so its files belong to the
    // daemon's uid, which is also the function's uid (mapped into its user namespace). Permission
    // bits no longer refuse the write; the read-only bind mount does (EROFS), and landlock
    // behind it.
    ("write-etc", 1, 10_000, Blocked(&["EACCES", "EROFS"], 9)),
    (
        "write-var-task",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS", "EXDEV"], 9),
    ),
    (
        "create-in-root",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS", "ENOENT"], 10),
    ),
    (
        "create-in-var-task",
        1,
        10_000,
        Blocked(&["EACCES", "EROFS", "EXDEV"], 6),
    ),
    // Privileges.
    ("setuid-binary", 1, 10_000, Custom(setuid_binary)),
    (
        "capset",
        1,
        10_000,
        Blocked(&["ENOSYS", "EPERM", "EINVAL"], 9),
    ),
    // The network.
    (
        "connect-host-tcp",
        1,
        10_000,
        Blocked(&["ENETUNREACH", "EADDRNOTAVAIL"], 4),
    ),
    (
        "connect-metadata-service",
        1,
        10_000,
        Blocked(&["ENETUNREACH", "EADDRNOTAVAIL"], 5),
    ),
    (
        "abstract-unix-host",
        1,
        10_000,
        Blocked(&["ECONNREFUSED", "ENOENT"], 6),
    ),
    // DIFFERS from root mode (EPERM there): as root, environments share one network namespace
    // and landlock's abstract-socket scoping refuses the connect (EPERM). Rootless, creating
    // that shared namespace needs CAP_SYS_ADMIN on the host, so each environment has a network
    // namespace of its own: the sibling's abstract socket does not exist in the attacker's
    // namespace at all (ECONNREFUSED). Still blocked, by an earlier layer.
    (
        "abstract-unix-sibling",
        1,
        10_000,
        Blocked(&["ECONNREFUSED"], 1),
    ),
    ("netlink-socket", 1, 10_000, Blocked(&["ENOSYS"], 12)),
    ("packet-socket", 1, 10_000, Blocked(&["ENOSYS", "EPERM"], 6)),
    (
        "exotic-socket-families",
        1,
        10_000,
        Blocked(&["ENOSYS"], 30),
    ),
    (
        "loopback-up",
        1,
        10_000,
        Blocked(&["ENOSYS", "ENETUNREACH"], 3),
    ),
    // Signals outside the environment.
    ("kill-all", 1, 10_000, Custom(kill_all)),
    ("kill-host-pid", 1, 10_000, Blocked(&["ESRCH"], 16)),
    ("kill-guessed-pids", 1, 10_000, Blocked(&["ESRCH"], 1)),
    ("kill-process-group", 1, 10_000, Custom(kill_process_group)),
    // The hostile ring peer.
    ("ring-resp-tail-far", 1, 10_000, Invalid),
    ("ring-resp-tail-backwards", 1, 10_000, Invalid),
    ("ring-resp-wrong-id", 1, 10_000, Invalid),
    ("ring-resp-bounds", 1, 10_000, Invalid),
    ("ring-resp-len-huge", 1, 10_000, Invalid),
    ("ring-resp-status", 1, 10_000, Invalid),
    ("ring-len-race", 8, 10_000, Custom(ring_len_race)),
    ("ring-never-consume", 1, 1_000, Custom(ring_never_consume)),
    ("ring-req-head-past", 2, 10_000, Custom(second_is_cold)),
    ("ring-host-fields", 2, 10_000, Custom(all_blocked)),
    ("ring-doorbell-spam", 1, 10_000, Custom(all_blocked)),
    ("ring-unsolicited", 2, 10_000, Custom(second_is_cold)),
    ("ring-memfd-resize", 1, 10_000, Blocked(&["EPERM"], 5)),
];

// ----- the test ---------------------------------------------------------------------------------

#[test]
fn every_escape_attack_is_blocked_in_rootless_mode() {
    require_root();
    eprintln!("checks that need root and are not made rootless here:");
    for (check, why) in NEEDS_ROOT {
        eprintln!("  - {check}: {why}");
    }
    let host = Host::start();
    if hearth_sandbox::chrooted() {
        // The kernel creates no user namespace for a process in a chroot (clone(2), EPERM);
        // hearth must say so plainly instead of failing at the first environment.
        hearth_tests::assert_rootless_refused_in_chroot(&host.helper("mount", 1, 10_000));
        return;
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut cgroups = None;
    for &(attack, invokes, timeout_ms, expect) in ATTACKS {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let report = host.run(attack, invokes, timeout_ms);
            cgroups = Some(report["cgroups"].clone());
            match expect {
                Blocked(errnos, min) => {
                    for answer in answers(&report) {
                        assert_blocked(attack, answer, errnos, min);
                    }
                }
                Killed(signal) => {
                    let signal = signal.unwrap_or(host.int80_signal);
                    let answer = &answers(&report)[0];
                    assert_eq!(answer["error"], "Runtime.ExitError", "{attack}: {answer}");
                    assert_eq!(
                        answer["message"],
                        format!("Runtime exited with error: {signal}"),
                        "{attack}"
                    );
                }
                Invalid => {
                    let answer = &answers(&report)[0];
                    assert_eq!(
                        answer["error"], "Runtime.InvalidResponse",
                        "{attack}: {answer}"
                    );
                }
                Custom(check) => check(&report),
            }
            host.check(attack, &report);
        }));
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{attack}: {message}"));
        }
    }
    eprintln!(
        "{} attacks run rootless in {:.1?} (cgroups used: {})",
        ATTACKS.len(),
        started.elapsed(),
        cgroups.unwrap_or_default()
    );
    assert!(
        failures.is_empty(),
        "{} of {} attacks failed rootless:\n{}",
        failures.len(),
        ATTACKS.len(),
        failures.join("\n")
    );
}

fn answers(report: &Value) -> &Vec<Value> {
    report["answers"].as_array().expect("answers")
}

// ----- the host -----------------------------------------------------------------------------------

/// What the test sets up on the host, and watches.
struct Host {
    /// Removed (with nobody's state directory) when the test ends.
    _dir: tempfile::TempDir,
    helper: PathBuf,
    code: PathBuf,
    state: PathBuf,
    canary: PathBuf,
    env: Vec<String>,
    victim: std::process::Child,
    listeners: Vec<TcpListener>,
    abstract_listener: UnixListener,
    binaries: Vec<PathBuf>,
    baseline: HostState,
    int80_signal: &'static str,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct HostState {
    binaries: Vec<String>,
    mounts: BTreeSet<String>,
    files: Vec<String>,
    strays: Vec<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.victim.kill();
        let _ = self.victim.wait();
    }
}

impl Host {
    fn start() -> Host {
        let hearth_tests::RootlessDir {
            dir,
            helper,
            code,
            state,
        } = hearth_tests::RootlessDir::new("hearth-rootless-escape", "hearth-attack");
        let open = std::fs::Permissions::from_mode(0o755);
        // The canary: a host file the attacks aim symlinks at, writable by nobody but root.
        let canary_dir = dir.path().join("hearth-escape-canary");
        std::fs::create_dir(&canary_dir).unwrap();
        std::fs::set_permissions(&canary_dir, open).unwrap();
        let canary = canary_dir.join("canary");
        std::fs::write(&canary, b"the canary: no environment may write here\n").unwrap();

        let victim = Command::new("sleep")
            .arg("3600")
            .spawn()
            .expect("start the victim process");

        let v4 = TcpListener::bind("0.0.0.0:0").expect("TCP listener");
        v4.set_nonblocking(true).unwrap();
        let port = v4.local_addr().unwrap().port();
        let mut targets = vec![format!("127.0.0.1:{port}")];
        targets.extend(
            hearth_tests::host_ipv4_addresses()
                .into_iter()
                .filter(|a| !a.is_loopback())
                .map(|a| format!("{a}:{port}")),
        );
        let mut listeners = vec![v4];
        if let Ok(v6) = TcpListener::bind("[::1]:0") {
            v6.set_nonblocking(true).unwrap();
            targets.push(format!("[::1]:{}", v6.local_addr().unwrap().port()));
            listeners.push(v6);
        }
        let pid = std::process::id();
        let abstract_name = format!("hearth-rootless-escape-test-{pid}");
        let abstract_listener = UnixListener::bind_addr(
            &SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
        )
        .expect("abstract unix listener");
        abstract_listener.set_nonblocking(true).unwrap();

        // The helper adds HEARTH_ATTACK_HOST_PID/_HOST_PGID (itself: it is the scheduler here)
        // and HEARTH_ATTACK_SIBLING_PID.
        let env = vec![
            format!("HEARTH_ATTACK_VICTIM_PID={}", victim.id()),
            format!("HEARTH_ATTACK_SIBLING_SOCKET=hearth-rootless-escape-sibling-{pid}"),
            format!("HEARTH_ATTACK_TARGETS={}", targets.join(",")),
            format!("HEARTH_ATTACK_ABSTRACT={abstract_name}"),
            format!("HEARTH_ATTACK_CANARY={}", canary.display()),
        ];

        let int80_signal = {
            let probe = Command::new(workspace_binary("hearth-attack"))
                .arg("--int80-getpid")
                .output()
                .unwrap();
            if std::os::unix::process::ExitStatusExt::signal(&probe.status) == Some(libc::SIGSEGV) {
                "signal: segmentation fault"
            } else {
                assert!(probe.status.success(), "int 0x80 probe: {probe:?}");
                "signal: bad system call"
            }
        };

        let binaries = vec![
            helper.clone(),
            code.join("bootstrap"),
            workspace_binary("hearth-attack"),
            workspace_binary("hearth-sandbox-helper"),
            workspace_binary("hearth"),
        ];
        let mut host = Host {
            _dir: dir,
            helper,
            code,
            state,
            canary,
            env,
            victim,
            listeners,
            abstract_listener,
            binaries,
            baseline: HostState::default(),
            int80_signal,
        };
        host.baseline = host.state();
        host
    }

    /// Runs the helper as nobody for one attack.
    fn helper(&self, attack: &str, invokes: u32, timeout_ms: u64) -> std::process::Output {
        Command::new(&self.helper)
            .arg("attack")
            .arg(&self.state)
            .arg(&self.code)
            .arg(attack)
            .arg(format!("--invokes={invokes}"))
            .arg(format!("--timeout-ms={timeout_ms}"))
            .args(&self.env)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("running the helper as nobody")
    }

    /// Runs one attack rootless and returns the helper's report.
    fn run(&self, attack: &str, invokes: u32, timeout_ms: u64) -> Value {
        let out = self.helper(attack, invokes, timeout_ms);
        assert!(
            out.status.success(),
            "{attack}: the helper failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        let shown = report["answers"].to_string();
        let cut = shown
            .char_indices()
            .nth(3000)
            .map_or(shown.len(), |(i, _)| i);
        eprintln!("{attack}: {}", &shown[..cut]);
        assert_eq!(report["rootless"], true, "{attack}: hearth ran rootless");
        assert_eq!(answers(&report).len(), invokes as usize);
        report
    }

    fn state(&self) -> HostState {
        let binaries = self.binaries.iter().map(|p| describe(p)).collect();
        let mut files: Vec<String> = [
            Path::new("/etc/passwd"),
            Path::new("/etc/hostname"),
            Path::new("/etc/shadow"),
            Path::new("/etc/hosts"),
            &self.canary,
        ]
        .iter()
        .map(|p| describe(p))
        .collect();
        walk(&self.code, &mut files);
        walk(self.canary.parent().unwrap(), &mut files);
        let mut strays = Vec::new();
        for dir in ["/", "/tmp", "/etc", "/run", "/var/tmp", "/dev/shm"] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("hearth-escape") {
                    strays.push(format!("{dir}/{name}"));
                }
            }
        }
        HostState {
            binaries,
            mounts: hearth_tests::host_mounts(),
            files,
            strays,
        }
    }

    /// The host after one attack: as before, and the sibling unharmed.
    fn check(&self, attack: &str, report: &Value) {
        assert_eq!(
            report["sibling_alive"], true,
            "{attack}: the sibling environment died"
        );
        let again: Value = serde_json::from_str(report["sibling_answers"].as_str().unwrap())
            .unwrap_or_else(|_| panic!("{attack}: the sibling answers: {report}"));
        assert_eq!(again["outcome"], "blocked", "{attack}: the sibling answers");
        // Every environment is gone once the helper (their scheduler) has exited.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = processes_of(attack);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            left = processes_of(attack);
        }
        assert!(
            left.is_empty(),
            "{attack}: processes of its environments outlived them: {left:?}"
        );
        let now = self.state();
        assert_eq!(
            now.binaries, self.baseline.binaries,
            "{attack}: hearth's binaries changed"
        );
        assert_eq!(
            now.mounts, self.baseline.mounts,
            "{attack}: the host's mounts changed"
        );
        assert_eq!(
            now.files, self.baseline.files,
            "{attack}: host files changed"
        );
        assert_eq!(
            now.strays, self.baseline.strays,
            "{attack}: files appeared on the host"
        );
        assert!(
            hearth_tests::process_alive(i32::try_from(self.victim.id()).unwrap()),
            "{attack}: the host's victim process died"
        );
        for listener in &self.listeners {
            match listener.accept() {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!(
                    "{attack}: something connected to the host's TCP listener {:?}: {other:?}",
                    listener.local_addr()
                ),
            }
        }
        match self.abstract_listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => {
                panic!("{attack}: something connected to the host's abstract socket: {other:?}")
            }
        }
    }
}

/// Live processes of an attack's function or its sibling.
fn processes_of(attack: &str) -> Vec<i32> {
    let mut pids = hearth_tests::function_pids(&format!("escape-rootless-{attack}"));
    pids.extend(hearth_tests::function_pids(&format!(
        "escape-sibling-{attack}"
    )));
    pids.retain(|pid| hearth_tests::process_alive(*pid));
    pids
}

// ----- expectations -----------------------------------------------------------------------------

/// One answer is the attack's report: `blocked`, at least `min` judged calls, each failing with
/// one of `errnos`.
fn assert_blocked(attack: &str, answer: &Value, errnos: &[&str], min: usize) {
    assert_eq!(
        answer["error"],
        Value::Null,
        "{attack}: the attack should answer its report: {answer}"
    );
    assert_report_blocked(attack, &answer["body"], errnos, min);
}

/// The attack's only report.
fn body(report: &Value) -> (&str, &Value) {
    let answer = &answers(report)[0];
    let attack = answer["body"]["attack"].as_str().unwrap_or("?");
    assert_blocked(attack, answer, &["-"], 0);
    (attack, &answer["body"])
}

fn fd_leak_walk(report: &Value) {
    let (_, report) = body(report);
    let fds: Vec<(String, String)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let call = s["call"].as_str()?.strip_prefix("fd ")?;
            Some((call.to_owned(), s["result"].as_str()?.to_owned()))
        })
        .collect();
    let numbers: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(numbers, ["0", "1", "2", "3"], "{}", report["detail"]);
    for (fd, target) in &fds[..3] {
        assert_eq!(target, "/dev/null", "fd {fd}");
    }
    assert!(
        fds[3].1.starts_with("/memfd:hearth-channel"),
        "fd 3 is the channel: {}",
        fds[3].1
    );
}

fn fd_cwd_root(report: &Value) {
    let (_, report) = body(report);
    for call in [
        "getcwd()",
        "readlink(/proc/self/cwd)",
        "readlink(/proc/self/root)",
    ] {
        assert_eq!(step(report, call)["result"], "/", "{call}");
    }
    for up in [
        "/..",
        "/../../..",
        "../../../..",
        "/proc/self/root/..",
        "/proc/1/root/../..",
    ] {
        assert_eq!(
            step(report, &format!("stat({up}) is /"))["result"],
            "true",
            "{up}"
        );
    }
}

fn tmp_symlinks(report: &Value) {
    assert_blocked(
        "tmp-symlinks",
        &answers(report)[0],
        &["EXDEV", "ENOSYS", "EROFS", "EACCES", "ENOENT"],
        10,
    );
    let report = &answers(report)[0]["body"];
    assert_eq!(
        step(report, "symlink(/tmp/hearth-escape-planted-canary")["result"],
        "ok 0",
        "the links were planted: {}",
        report["detail"]
    );
    // That the canary and the host's /tmp are unchanged once the environment is gone is
    // `Host::check`'s work.
}

fn kill_all(report: &Value) {
    let (_, report) = body(report);
    assert_eq!(step(report, "kill(-1, SIGKILL)")["result"], "ok 0");
    let children: Vec<&Value> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["call"].as_str().unwrap().starts_with("child "))
        .collect();
    assert_eq!(children.len(), 2, "{}", report["detail"]);
    for child in children {
        assert_eq!(child["result"], "signal 9", "{}", report["detail"]);
    }
    assert_eq!(
        step(report, "kill(-1, SIGKILL) with no other process")["result"],
        "ESRCH"
    );
}

fn kill_process_group(report: &Value) {
    let (_, report) = body(report);
    assert_eq!(step(report, "getpgrp()")["result"], "ok 0", "{report}");
}

fn setuid_binary(report: &Value) {
    let (_, report) = body(report);
    for program in ["mount --help", "su -c id"] {
        let seen = step(report, &format!("{program} while running"))["result"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            seen.contains("Uid 65534\t65534\t65534\t65534")
                && seen.contains("CapEff 0000000000000000"),
            "{program}: {seen}"
        );
    }
}

fn ring_len_race(report: &Value) {
    // The environment answers, then keeps rewriting the answer's length and offset: the host
    // returns the answer as published or as it read it (never more than the arena), or refuses
    // it as out of bounds.
    for answer in answers(report) {
        match answer["error"].as_str() {
            None => {
                // The body's own length (a JSON string here; escaping would inflate it).
                let body = &answer["body"];
                let len = body
                    .as_str()
                    .map_or_else(|| body.to_string().len(), str::len);
                assert!(len <= hearth_ipc::MAX_PAYLOAD as usize + 2, "{answer}");
            }
            Some("Runtime.InvalidResponse") => assert!(
                answer["message"].as_str().unwrap().contains("bounds")
                    || answer["message"].as_str().unwrap().contains("arena"),
                "only the lengths change: {answer}"
            ),
            Some(other) => panic!("ring-len-race: {other}: {answer}"),
        }
    }
}

fn ring_never_consume(report: &Value) {
    let answer = &answers(report)[0];
    assert_eq!(answer["error"], "Sandbox.Timedout", "{answer}");
}

fn all_blocked(report: &Value) {
    for answer in answers(report) {
        let attack = answer["body"]["attack"].as_str().unwrap_or("?");
        assert_blocked(attack, answer, &["-"], 0);
    }
}

/// Both invocations answer; the second from a new environment (the first one broke the
/// channel's protocol and is not reused).
fn second_is_cold(report: &Value) {
    all_blocked(report);
    let answers = answers(report);
    assert_eq!(answers[1]["cold"], true, "{report}");
    assert_ne!(answers[1]["env_pid"], answers[0]["env_pid"]);
}
