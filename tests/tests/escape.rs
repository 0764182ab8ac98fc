//! Tier 2 (root): the escape suite. Each test runs one attack of `hearth-attack`
//! (`tests/src/bin/hearth-attack.rs`) inside a real environment started by the embedded engine,
//! asserts its expected outcome (the errno of each refused call, the signal that killed it, or
//! the Lambda error the engine answered), then collects the environment the way the scheduler
//! does (`retire_idle`) and checks the host:
//!
//! * hearth's binaries are unchanged (sha256 of the very files — inodes — that existed before:
//!   this test executable, `target/<profile>/hearth`, the `hearth-attack` build and the copy the
//!   environments execute);
//! * the host's mount table (mount point, type, source, options) is as before;
//! * no process of the attack's environment is left (no process on the host has its
//!   `AWS_LAMBDA_FUNCTION_NAME` in its environment);
//! * `/etc/passwd`, `/etc/hostname`, `/etc/shadow`, `/etc/hosts`, a canary file the attacks aim
//!   symlinks at, the root skeleton and the code directory are unchanged, and nothing the
//!   attacks name `hearth-escape-*` appeared on the host;
//! * the scheduler, a host process (`sleep`) and another environment (the sibling, which
//!   listens on an abstract unix socket) are alive; the sibling still answers from the same
//!   warm environment and the engine still serves;
//! * nobody connected to the test's TCP listeners (its stand-in for the daemon's port, on every
//!   host address) or to its abstract unix socket.
//!
//! One engine serves the whole suite (one shard: invocations run one at a time); it is shut down,
//! with its environments and cgroups, when the test process exits.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hearth_scheduler::{
    Engine, EngineConfig, FunctionConfig, FunctionError, FunctionOutput, Outcome, SandboxConfig,
    Start,
};
use hearth_tests::attack::{assert_report_blocked, describe, step, walk};
use hearth_tests::{attack_code_dir, require_root, workspace_binary};
use serde_json::Value;

// ----- the suite's shared state ------------------------------------------------------------------

struct Suite {
    /// Taken and shut down when the test process exits (see [`at_exit`]).
    engine: Mutex<Option<Engine>>,
    state_dir: PathBuf,
    canary: PathBuf,
    canary_dir: PathBuf,
    /// `HEARTH_ATTACK_*` for every attack function.
    env: Vec<(String, String)>,
    victim_pid: i32,
    /// A host process no environment may touch (killed when the test process exits).
    _victim: std::process::Child,
    sibling_pid: i32,
    /// Held open so the inodes that existed at the start are the ones hashed.
    binaries: Vec<(PathBuf, std::fs::File)>,
    listeners: Vec<TcpListener>,
    abstract_listener: UnixListener,
    baseline: HostState,
    /// What `int 0x80` dies of inside an environment: SIGSYS from seccomp, or SIGSEGV where the
    /// kernel has no 32-bit entry point at all.
    int80_signal: &'static str,
}

static SUITE: OnceLock<Suite> = OnceLock::new();
static VICTIM: AtomicI32 = AtomicI32::new(0);

/// The suite lives in a static, which is never dropped: when the test process exits, stop the
/// engine (its environments and cgroups go with it), kill the victim and remove the temporary
/// directories.
extern "C" fn at_exit() {
    let pid = VICTIM.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: signalling the `sleep` this process started; it is gone or ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if let Some(suite) = SUITE.get() {
        let engine = suite
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(engine) = engine {
            engine.shutdown();
        }
        let _ = std::fs::remove_dir_all(&suite.state_dir);
        let _ = std::fs::remove_dir_all(&suite.canary_dir);
    }
}

fn suite() -> &'static Suite {
    require_root();
    SUITE.get_or_init(Suite::start)
}

impl Suite {
    fn start() -> Suite {
        let state_dir = tempfile::tempdir().unwrap().keep();
        let code = attack_code_dir();
        let engine = Engine::start(EngineConfig {
            shards: 1,
            function_output: FunctionOutput::Discard,
            prepared_cgroups: 0,
            sandbox: SandboxConfig {
                state_dir: state_dir.clone(),
                ..SandboxConfig::default()
            },
            ..EngineConfig::default()
        })
        .expect("engine");

        let victim = std::process::Command::new("sleep")
            .arg("3600")
            .spawn()
            .expect("start the victim process");
        let victim_pid = i32::try_from(victim.id()).unwrap();
        VICTIM.store(victim_pid, Ordering::Relaxed);
        // SAFETY: registering a plain function with no captured state, once (this runs inside
        // the OnceLock's initialisation).
        unsafe { libc::atexit(at_exit) };

        let canary_dir = tempfile::Builder::new()
            .prefix("hearth-escape-canary")
            .tempdir()
            .unwrap()
            .keep();
        let canary = canary_dir.join("canary");
        std::fs::write(&canary, b"the canary: no environment may write here\n").unwrap();

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
        let abstract_name = format!("hearth-escape-test-{pid}");
        let abstract_listener = UnixListener::bind_addr(
            &SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
        )
        .expect("abstract unix listener");
        abstract_listener.set_nonblocking(true).unwrap();

        // SAFETY: getpgrp cannot fail.
        let pgid = unsafe { libc::getpgrp() };
        let sibling_socket = format!("hearth-escape-sibling-{pid}");
        let mut env = vec![
            ("HEARTH_ATTACK_HOST_PID".to_owned(), pid.to_string()),
            ("HEARTH_ATTACK_HOST_PGID".to_owned(), pgid.to_string()),
            (
                "HEARTH_ATTACK_VICTIM_PID".to_owned(),
                victim_pid.to_string(),
            ),
            ("HEARTH_ATTACK_SIBLING_SOCKET".to_owned(), sibling_socket),
            ("HEARTH_ATTACK_TARGETS".to_owned(), targets.join(",")),
            ("HEARTH_ATTACK_ABSTRACT".to_owned(), abstract_name),
            (
                "HEARTH_ATTACK_CANARY".to_owned(),
                canary.display().to_string(),
            ),
        ];

        // The sibling: another environment, alive for the whole suite, listening on an abstract
        // unix socket in the network namespace environments share.
        let mut sibling = FunctionConfig::new("escape-sibling", code, "sibling");
        sibling.environment = env.clone();
        engine.create_function(sibling).unwrap();
        let (outcome, body) = engine.invoke("escape-sibling", b"{}").unwrap();
        let report: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            report["outcome"], "blocked",
            "the sibling listens: {report}"
        );
        assert_eq!(outcome.error, None);
        env.push((
            "HEARTH_ATTACK_SIBLING_PID".to_owned(),
            outcome.env_pid.to_string(),
        ));
        engine
            .create_function(FunctionConfig::new("escape-echo", code, "echo"))
            .unwrap();

        let mut binaries = vec![
            std::env::current_exe().unwrap(),
            workspace_binary("hearth"),
            workspace_binary("hearth-attack"),
            code.join("bootstrap"),
        ];
        binaries.dedup();
        let binaries = binaries
            .into_iter()
            .map(|p| {
                let f = std::fs::File::open(&p).unwrap();
                (p, f)
            })
            .collect();

        let int80_signal = {
            let probe = std::process::Command::new(workspace_binary("hearth-attack"))
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

        let mut suite = Suite {
            engine: Mutex::new(Some(engine)),
            state_dir,
            canary,
            canary_dir,
            env,
            victim_pid,
            _victim: victim,
            sibling_pid: outcome.env_pid,
            binaries,
            listeners,
            abstract_listener,
            baseline: HostState::default(),
            int80_signal,
        };
        suite.baseline = suite.host_state();
        suite
    }

    fn with_engine<R>(&self, job: impl FnOnce(&Engine) -> R) -> R {
        let engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        job(engine
            .as_ref()
            .expect("the engine runs until the test process exits"))
    }

    fn host_state(&self) -> HostState {
        let fd_paths: Vec<String> = self
            .binaries
            .iter()
            .map(|(_, f)| format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()))
            .collect();
        let out = std::process::Command::new("sha256sum")
            .args(&fd_paths)
            .output()
            .expect("sha256sum");
        assert!(out.status.success(), "sha256sum: {out:?}");
        let sums = String::from_utf8(out.stdout).unwrap();
        let binaries = self
            .binaries
            .iter()
            .zip(sums.lines())
            .map(|((p, _), line)| {
                (
                    p.display().to_string(),
                    line.split(' ').next().unwrap().to_owned(),
                )
            })
            .collect();
        let mut files = Vec::new();
        for path in [
            Path::new("/etc/passwd"),
            Path::new("/etc/hostname"),
            Path::new("/etc/shadow"),
            Path::new("/etc/hosts"),
            &self.canary,
        ] {
            files.push(describe(path));
        }
        let mut tree = Vec::new();
        walk(&self.state_dir, &mut tree);
        walk(attack_code_dir(), &mut tree);
        walk(self.canary.parent().unwrap(), &mut tree);
        let mut strays = Vec::new();
        for dir in ["/", "/tmp", "/etc", "/run", "/var/tmp", "/dev/shm"] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("hearth-escape") && !name.starts_with("hearth-escape-canary") {
                    strays.push(format!("{dir}/{name}"));
                }
            }
        }
        HostState {
            binaries,
            mounts: hearth_tests::host_mounts(),
            files,
            tree,
            strays,
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct HostState {
    binaries: Vec<(String, String)>,
    mounts: BTreeSet<String>,
    files: Vec<String>,
    tree: Vec<String>,
    strays: Vec<String>,
}

// ----- one attack -------------------------------------------------------------------------------

/// What an invocation of an attack came back with.
#[derive(Debug)]
struct Answer {
    outcome: Outcome,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }
}

/// One attack function, created for one test and collected at its end.
struct Run {
    attack: &'static str,
    function: String,
}

impl Run {
    fn start(attack: &'static str, tune: impl FnOnce(&mut FunctionConfig)) -> Run {
        let s = suite();
        let function = format!("escape-{attack}");
        let mut config = FunctionConfig::new(&function, attack_code_dir(), attack);
        config.environment = s.env.clone();
        config.timeout = Duration::from_secs(10);
        tune(&mut config);
        s.with_engine(|e| e.create_function(config)).unwrap();
        Run { attack, function }
    }

    fn invoke(&self) -> Answer {
        let (outcome, body) = suite()
            .with_engine(|e| e.invoke(&self.function, b"{}"))
            .unwrap_or_else(|e| panic!("{}: the invocation did not run: {e:?}", self.attack));
        let answer = Answer { outcome, body };
        let shown = answer.json().to_string();
        let cut = shown
            .char_indices()
            .nth(4000)
            .map_or(shown.len(), |(i, _)| i);
        eprintln!(
            "{}: {:?} {}",
            self.attack,
            answer.outcome.error,
            &shown[..cut]
        );
        answer
    }

    /// Collects the attack's environments as the scheduler does, removes the function, and
    /// checks the host.
    fn finish(self) {
        let s = suite();
        let name = self.function.clone();
        s.with_engine(|e| {
            e.on_shard(e.shard_for(&name), move |shard| {
                if let Ok(function) = shard.function(&name) {
                    shard.retire_idle(&function);
                }
            })
            .unwrap();
            e.delete_function(&self.function).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = hearth_tests::function_pids(&self.function);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            left = hearth_tests::function_pids(&self.function);
        }
        assert!(
            left.is_empty(),
            "{}: processes of its environment outlived it: {left:?}",
            self.attack
        );
        check_host(self.attack);
    }
}

fn check_host(attack: &str) {
    let s = suite();
    let now = s.host_state();
    assert_eq!(
        now.binaries, s.baseline.binaries,
        "{attack}: hearth's binaries changed"
    );
    assert_eq!(
        now.mounts, s.baseline.mounts,
        "{attack}: the host's mounts changed"
    );
    assert_eq!(now.files, s.baseline.files, "{attack}: host files changed");
    assert_eq!(
        now.tree, s.baseline.tree,
        "{attack}: the root skeleton, code or canary directory changed"
    );
    assert_eq!(
        now.strays, s.baseline.strays,
        "{attack}: files appeared on the host"
    );
    assert!(
        hearth_tests::process_alive(s.victim_pid),
        "{attack}: the host's victim process died"
    );
    assert!(
        hearth_tests::process_alive(s.sibling_pid),
        "{attack}: the sibling environment died"
    );
    let (outcome, body) = s
        .with_engine(|e| e.invoke("escape-sibling", b"{}"))
        .unwrap();
    assert_eq!(
        (outcome.error, outcome.start, outcome.env_pid),
        (None, Start::Warm, s.sibling_pid),
        "{attack}: the sibling answers from its warm environment: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        s.with_engine(|e| e.invoke("escape-echo", attack.as_bytes()))
            .unwrap()
            .1,
        attack.as_bytes(),
        "{attack}: the engine keeps serving"
    );
    for listener in &s.listeners {
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!(
                "{attack}: something connected to the host's TCP listener {:?}: {other:?}",
                listener.local_addr()
            ),
        }
    }
    match s.abstract_listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("{attack}: something connected to the host's abstract socket: {other:?}"),
    }
}

// ----- expectations -----------------------------------------------------------------------------

/// The attack answered `blocked`, made at least `min_steps` judged calls, and each failed with
/// one of `errnos`.
fn assert_blocked(attack: &str, answer: &Answer, errnos: &[&str], min_steps: usize) {
    let report = answer.json();
    assert_eq!(
        answer.outcome.error, None,
        "{attack}: the attack should answer its report: {report}"
    );
    assert_report_blocked(attack, &report, errnos, min_steps);
}

/// The environment was killed by `signal` (a Lambda `Runtime.ExitError`).
fn assert_killed(attack: &str, answer: &Answer, signal: &str) {
    let doc = answer.json();
    assert!(
        matches!(answer.outcome.error, Some(FunctionError::ExitError(_))),
        "{attack}: expected to be killed ({signal}), got {:?}: {doc}",
        answer.outcome.error
    );
    assert_eq!(doc["errorType"], "Runtime.ExitError", "{attack}: {doc}");
    let message = doc["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.ends_with(&format!("Runtime exited with error: {signal}")),
        "{attack}: {message}"
    );
    wait_gone(attack, answer.outcome.env_pid);
}

/// The engine refused what the environment wrote into its channel and killed it.
fn assert_invalid_response(attack: &str, answer: &Answer) {
    let doc = answer.json();
    assert!(
        matches!(
            answer.outcome.error,
            Some(FunctionError::InvalidResponse(_))
        ),
        "{attack}: expected Runtime.InvalidResponse, got {:?}: {doc}",
        answer.outcome.error
    );
    assert_eq!(
        doc["errorType"], "Runtime.InvalidResponse",
        "{attack}: {doc}"
    );
    wait_gone(attack, answer.outcome.env_pid);
}

fn wait_gone(attack: &str, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while hearth_tests::process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !hearth_tests::process_alive(pid),
        "{attack}: environment {pid} was not killed"
    );
}

/// One test per attack that must answer `blocked` with these errnos.
macro_rules! blocked {
    ($($test:ident: $attack:literal => [$($errno:literal),+] x $min:literal;)+) => {$(
        #[test]
        fn $test() {
            let run = Run::start($attack, |_| {});
            let answer = run.invoke();
            assert_blocked($attack, &answer, &[$($errno),+], $min);
            run.finish();
        }
    )+};
}

// ----- the attacks ------------------------------------------------------------------------------

blocked! {
    // CVE-2019-5736: the function's own binary, through /proc, is read-only to it.
    exe_self_write: "exe-self-write" => ["EACCES", "EROFS"] x 5;
    exe_pid1_write: "exe-pid1-write" => ["EACCES", "EROFS"] x 3;
    exe_opath_reopen: "exe-opath-reopen" => ["EACCES", "EROFS", "EPERM"] x 3;
    exe_host_write: "exe-host-write" => ["ENOENT"] x 4;
    // CVE-2024-21626: nothing but stdio and the channel is inherited.
    fd_openat_dotdot: "fd-openat-dotdot" => ["ENOTDIR"] x 16;
    fd_probe_range: "fd-probe-range" => ["EBADF"] x 1;
    tmp_replace_mountpoint: "tmp-replace-mountpoint" => ["EBUSY", "EROFS", "EACCES", "EPERM", "EXDEV"] x 7;
    // Other processes: the pid namespace holds only the environment's own.
    ptrace_pid1: "ptrace-pid1" => ["EPERM"] x 4;
    ptrace_guessed_pids: "ptrace-guessed-pids" => ["EPERM"] x 2;
    ptrace_host: "ptrace-host" => ["EPERM"] x 12;
    process_vm_pid1: "process-vm-pid1" => ["EPERM"] x 4;
    process_vm_guessed_pids: "process-vm-guessed-pids" => ["EPERM"] x 2;
    proc_pid_files: "proc-pid-files" => ["ENOENT"] x 16;
    // The filesystem layout and namespaces are fixed.
    mount: "mount" => ["EPERM"] x 8;
    umount2: "umount2" => ["EPERM"] x 5;
    pivot_root: "pivot-root" => ["EPERM"] x 3;
    chroot: "chroot" => ["EPERM"] x 3;
    fsopen: "fsopen" => ["EPERM"] x 8;
    open_tree: "open-tree" => ["EPERM"] x 4;
    move_mount: "move-mount" => ["EPERM"] x 3;
    unshare: "unshare" => ["EPERM"] x 9;
    setns: "setns" => ["EPERM", "ENOENT", "ENOSYS"] x 15;
    clone_ns_flags: "clone-ns-flags" => ["EPERM"] x 7;
    clone3_ns_flags: "clone3-ns-flags" => ["ENOSYS"] x 7;
    // Kernel attack surface.
    keyctl: "keyctl" => ["EPERM"] x 3;
    add_key: "add-key" => ["EPERM"] x 2;
    request_key: "request-key" => ["EPERM"] x 3;
    bpf: "bpf" => ["EPERM"] x 3;
    perf_event_open: "perf-event-open" => ["EPERM"] x 3;
    userfaultfd: "userfaultfd" => ["EPERM", "ENOENT"] x 3;
    io_uring: "io-uring" => ["EPERM"] x 3;
    tiocsti: "tiocsti" => ["ENOSYS", "ENOENT"] x 8;
    tiocsti_high_bits: "tiocsti-high-bits" => ["ENOSYS"] x 9;
    open_by_handle_at: "open-by-handle-at" => ["EPERM"] x 5;
    privileged_syscalls: "privileged-syscalls" => ["ENOSYS", "EPERM"] x 17;
    // The host's files.
    write_proc_sys: "write-proc-sys" => ["EACCES", "EROFS", "ENOENT"] x 6;
    write_sysrq_trigger: "write-sysrq-trigger" => ["EACCES", "EROFS", "ENOENT"] x 4;
    write_proc_self: "write-proc-self" => ["EACCES", "EROFS", "EPERM"] x 9;
    write_sys_fs_cgroup: "write-sys-fs-cgroup" => ["ENOENT", "EROFS", "EACCES", "EPERM"] x 11;
    write_etc: "write-etc" => ["EACCES", "EROFS"] x 9;
    write_var_task: "write-var-task" => ["EACCES", "EROFS", "EXDEV"] x 9;
    create_in_root: "create-in-root" => ["EACCES", "EROFS", "ENOENT"] x 10;
    create_in_var_task: "create-in-var-task" => ["EACCES", "EROFS", "EXDEV"] x 6;
    // Privileges.
    capset: "capset" => ["ENOSYS", "EPERM", "EINVAL"] x 9;
    // The network.
    connect_host_tcp: "connect-host-tcp" => ["ENETUNREACH", "EADDRNOTAVAIL"] x 4;
    connect_metadata_service: "connect-metadata-service" => ["ENETUNREACH", "EADDRNOTAVAIL"] x 5;
    abstract_unix_host: "abstract-unix-host" => ["ECONNREFUSED", "ENOENT"] x 6;
    abstract_unix_sibling: "abstract-unix-sibling" => ["EPERM"] x 1;
    netlink_socket: "netlink-socket" => ["ENOSYS"] x 12;
    packet_socket: "packet-socket" => ["ENOSYS", "EPERM"] x 6;
    exotic_socket_families: "exotic-socket-families" => ["ENOSYS"] x 30;
    loopback_up: "loopback-up" => ["ENOSYS", "ENETUNREACH"] x 3;
    // Signals outside the environment.
    kill_host_pid: "kill-host-pid" => ["ESRCH"] x 16;
    kill_guessed_pids: "kill-guessed-pids" => ["ESRCH"] x 1;
}

#[test]
fn tmp_symlinks_are_never_followed_by_the_host() {
    let run = Run::start("tmp-symlinks", |_| {});
    let answer = run.invoke();
    assert_blocked(
        "tmp-symlinks",
        &answer,
        &["EXDEV", "ENOSYS", "EROFS", "EACCES", "ENOENT"],
        10,
    );
    let report = answer.json();
    assert_eq!(
        step(&report, "symlink(/tmp/hearth-escape-planted-canary")["result"],
        "ok 0",
        "the links were planted: {}",
        report["detail"]
    );
    // Collecting the environment (and checking the canary, /etc and the host's /tmp) is
    // `finish`'s work.
    run.finish();
    assert_eq!(
        std::fs::read(&suite().canary).unwrap(),
        b"the canary: no environment may write here\n"
    );
}

#[test]
fn fd_leak_walk_finds_only_stdio_and_the_channel() {
    let run = Run::start("fd-leak-walk", |_| {});
    let answer = run.invoke();
    assert_blocked("fd-leak-walk", &answer, &["-"], 0);
    let report = answer.json();
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
        // The daemon's own /dev/null: a daemon running in a chroot shows up in the path (the
        // device is outside the environment's root), which names that directory and nothing
        // more.
        assert!(
            target == "/dev/null" || target.ends_with("/dev/null"),
            "fd {fd} is /dev/null: {target}"
        );
    }
    assert!(
        fds[3].1.starts_with("/memfd:hearth-channel"),
        "fd 3 is the channel: {}",
        fds[3].1
    );
    run.finish();
}

#[test]
fn fd_cwd_and_root_are_the_environments() {
    let run = Run::start("fd-cwd-root", |_| {});
    let answer = run.invoke();
    assert_blocked("fd-cwd-root", &answer, &["-"], 0);
    let report = answer.json();
    for call in [
        "getcwd()",
        "readlink(/proc/self/cwd)",
        "readlink(/proc/self/root)",
    ] {
        assert_eq!(step(&report, call)["result"], "/", "{call}");
    }
    for up in [
        "/..",
        "/../../..",
        "../../../..",
        "/proc/self/root/..",
        "/proc/1/root/../..",
    ] {
        assert_eq!(
            step(&report, &format!("stat({up}) is /"))["result"],
            "true",
            "{up}"
        );
    }
    run.finish();
}

#[test]
fn x32_syscalls_are_killed() {
    let run = Run::start("x32-abi", |_| {});
    assert_killed("x32-abi", &run.invoke(), "signal: bad system call");
    run.finish();
}

#[test]
fn int_0x80_is_killed() {
    let run = Run::start("int80", |_| {});
    assert_killed("int80", &run.invoke(), suite().int80_signal);
    run.finish();
}

#[test]
fn kill_minus_one_reaches_only_the_environment() {
    let run = Run::start("kill-all", |_| {});
    let answer = run.invoke();
    assert_blocked("kill-all", &answer, &["-"], 0);
    let report = answer.json();
    assert_eq!(step(&report, "kill(-1, SIGKILL)")["result"], "ok 0");
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
        step(&report, "kill(-1, SIGKILL) with no other process")["result"],
        "ESRCH"
    );
    run.finish();
}

#[test]
fn signals_to_the_process_group_stay_inside() {
    let run = Run::start("kill-process-group", |_| {});
    let answer = run.invoke();
    assert_blocked("kill-process-group", &answer, &["-"], 0);
    let report = answer.json();
    assert_eq!(step(&report, "getpgrp()")["result"], "ok 0", "{report}");
    run.finish();
}

#[test]
fn a_setuid_binary_runs_without_privilege() {
    let run = Run::start("setuid-binary", |_| {});
    let answer = run.invoke();
    assert_blocked("setuid-binary", &answer, &["-"], 0);
    let report = answer.json();
    for program in ["mount --help", "su -c id"] {
        let seen = step(&report, &format!("{program} while running"))["result"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            seen.contains("Uid 65534\t65534\t65534\t65534")
                && seen.contains("CapEff 0000000000000000"),
            "{program}: {seen}"
        );
    }
    run.finish();
}

// ----- the hostile ring peer --------------------------------------------------------------------

macro_rules! ring_killed {
    ($($test:ident: $attack:literal;)+) => {$(
        #[test]
        fn $test() {
            let run = Run::start($attack, |_| {});
            let answer = run.invoke();
            assert_invalid_response($attack, &answer);
            run.finish();
        }
    )+};
}

ring_killed! {
    ring_resp_tail_far: "ring-resp-tail-far";
    ring_resp_tail_backwards: "ring-resp-tail-backwards";
    ring_resp_wrong_id: "ring-resp-wrong-id";
    ring_resp_bounds: "ring-resp-bounds";
    ring_resp_len_huge: "ring-resp-len-huge";
    ring_resp_status: "ring-resp-status";
}

#[test]
fn ring_lengths_changed_after_publication() {
    // The environment answers, then keeps rewriting the answer's length and offset. The host
    // reads them once: it returns the answer as published, or as it read it (some bytes of the
    // environment's own response arena), or refuses it as out of bounds; never more than the
    // arena, and nothing else breaks.
    let run = Run::start("ring-len-race", |_| {});
    let mut seen = Vec::new();
    for _ in 0..8 {
        let answer = run.invoke();
        match answer.outcome.error {
            None => {
                assert!(answer.body.len() <= hearth_ipc::MAX_PAYLOAD as usize);
                seen.push(format!("{} bytes", answer.body.len()));
            }
            Some(FunctionError::InvalidResponse(e)) => {
                assert!(
                    matches!(e, hearth_ipc::ProtocolError::Bounds { .. }),
                    "only the lengths change: {e:?}"
                );
                wait_gone("ring-len-race", answer.outcome.env_pid);
                seen.push(format!("{e}"));
            }
            Some(other) => panic!("ring-len-race: {other:?}: {}", answer.json()),
        }
    }
    eprintln!("ring-len-race: {seen:?}");
    run.finish();
}

#[test]
fn ring_never_consumed_times_out() {
    let run = Run::start("ring-never-consume", |c| c.timeout = Duration::from_secs(1));
    let answer = run.invoke();
    assert_eq!(
        answer.outcome.error,
        Some(FunctionError::Timedout),
        "{}",
        answer.json()
    );
    assert_eq!(answer.json()["errorType"], "Sandbox.Timedout");
    wait_gone("ring-never-consume", answer.outcome.env_pid);
    run.finish();
}

#[test]
fn ring_request_head_past_the_tail_is_not_used_again() {
    let run = Run::start("ring-req-head-past", |_| {});
    let first = run.invoke();
    assert_blocked("ring-req-head-past", &first, &["-"], 0);
    let second = run.invoke();
    assert_blocked("ring-req-head-past", &second, &["-"], 0);
    // A new environment: started for it, or ahead of it by the adaptive pool.
    assert!(
        matches!(second.outcome.start, Start::Cold | Start::Pool),
        "{:?}",
        second.outcome
    );
    assert_ne!(second.outcome.env_pid, first.outcome.env_pid);
    wait_gone("ring-req-head-past", first.outcome.env_pid);
    run.finish();
}

#[test]
fn ring_host_owned_fields_are_never_read_back() {
    let run = Run::start("ring-host-fields", |_| {});
    let first = run.invoke();
    assert_blocked("ring-host-fields", &first, &["-"], 0);
    // It exits once the host took its answer; the next call starts a new environment.
    wait_gone("ring-host-fields", first.outcome.env_pid);
    let second = run.invoke();
    assert_blocked("ring-host-fields", &second, &["-"], 0);
    run.finish();
}

#[test]
fn ring_doorbell_spam_is_harmless() {
    let run = Run::start("ring-doorbell-spam", |_| {});
    let answer = run.invoke();
    assert_blocked("ring-doorbell-spam", &answer, &["-"], 0);
    run.finish();
}

#[test]
fn ring_unsolicited_answer_retires_the_environment() {
    let run = Run::start("ring-unsolicited", |_| {});
    let first = run.invoke();
    assert_blocked("ring-unsolicited", &first, &["-"], 0);
    let second = run.invoke();
    assert_blocked("ring-unsolicited", &second, &["-"], 0);
    // A new environment: started for it, or ahead of it by the adaptive pool.
    assert!(
        matches!(second.outcome.start, Start::Cold | Start::Pool),
        "{:?}",
        second.outcome
    );
    assert_ne!(second.outcome.env_pid, first.outcome.env_pid);
    wait_gone("ring-unsolicited", first.outcome.env_pid);
    run.finish();
}

#[test]
fn ring_channel_cannot_be_resized_or_sealed() {
    let run = Run::start("ring-memfd-resize", |_| {});
    let answer = run.invoke();
    assert_blocked("ring-memfd-resize", &answer, &["EPERM"], 5);
    run.finish();
}
