//! Tier 2 (root): environments forked by a zygote (hearth-snapshot), probed from the inside.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use hearth_ipc::{HostChannel, ResponseStatus};
use hearth_sandbox::{
    EnvSpec, Environment, Limits, Sandbox, SandboxConfig, SetupState, ZygoteSpec,
};
use hearth_snapshot::{ChildSpec, Zygote, ZygoteState};
use serde_json::Value;

use hearth_tests::{invoke_environment as invoke, require_root};

struct Fixture {
    _state: tempfile::TempDir,
    sandbox: Sandbox,
}

fn fixture() -> Fixture {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(SandboxConfig {
        state_dir: state.path().to_owned(),
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    Fixture {
        _state: state,
        sandbox,
    }
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 128 << 20,
        pids: 64,
        cpu_weight: 100,
        cpu: None,
    }
}

/// The sample function from the test code directory as a zygote, with `env`, control socket
/// `control` and stderr `stderr`.
fn zygote_spec<'a>(
    env: &'a [(String, String)],
    control: std::os::fd::BorrowedFd<'a>,
    stderr: Option<std::os::fd::BorrowedFd<'a>>,
) -> EnvSpec<'a> {
    EnvSpec {
        code_dir: hearth_tests::sample_code_dir(),
        command: "/var/task/bootstrap",
        args: &[],
        env,
        channel: control,
        stdout: None,
        stderr,
        limits: limits(),
        tmp_bytes: 16 << 20,
        cpus: None,
        loopback: false,
        runtime_dir: None,
        layers: &[],
        zygote: Some(ZygoteSpec::default()),
    }
}

/// In a chroot the kernel creates no user namespace, so there are no zygotes: `spawn` says so
/// (and the engine starts every environment from nothing). Returns true there, after checking
/// that error.
fn no_zygotes_here(f: &Fixture) -> bool {
    if !hearth_sandbox::chrooted() {
        return false;
    }
    let unused = HostChannel::create().unwrap();
    let env = vec![("_HANDLER".to_owned(), "echo".to_owned())];
    let started = Zygote::start(&f.sandbox, &zygote_spec(&env, unused.guest_fd(), None));
    assert!(
        matches!(started, Err(hearth_sandbox::SpawnError::ZygoteInChroot)),
        "{started:?}"
    );
    true
}

/// Starts the sample function with `handler` as a zygote and waits until it is ready.
fn zygote(f: &Fixture, handler: &str) -> Zygote {
    zygote_with(f, handler, &[])
}

/// As [`zygote`], with `extra` in the function's environment.
fn zygote_with(f: &Fixture, handler: &str, extra: &[(&str, &str)]) -> Zygote {
    zygote_limited(f, handler, extra, limits())
}

/// As [`zygote_with`], the zygote's own cgroup limited by `limits`.
fn zygote_limited(f: &Fixture, handler: &str, extra: &[(&str, &str)], limits: Limits) -> Zygote {
    let mut env = vec![
        ("_HANDLER".to_owned(), handler.to_owned()),
        ("HEARTH_CHANNEL_FD".to_owned(), "3".to_owned()),
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let unused = HostChannel::create().unwrap();
    let stderr = std::io::stderr();
    let mut spec = zygote_spec(&env, unused.guest_fd(), Some(stderr.as_fd()));
    spec.limits = limits;
    let mut zygote = Zygote::start(&f.sandbox, &spec).expect("zygote starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match zygote.poll() {
            ZygoteState::Ready => return zygote,
            ZygoteState::Broken(why) => panic!("zygote broken: {why}"),
            ZygoteState::Starting => {}
        }
        if let SetupState::Failed(failure) = zygote.process().poll_setup() {
            panic!("zygote setup failed: {failure}");
        }
        assert!(Instant::now() < deadline, "zygote not ready within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What the tests' children get: `channel`, this process's stderr for output.
fn child_spec<'a>(channel: &'a HostChannel, stderr: &'a std::io::Stderr) -> ChildSpec<'a> {
    ChildSpec {
        channel: channel.guest_fd(),
        stdout: Some(stderr.as_fd()),
        stderr: Some(stderr.as_fd()),
        limits: limits(),
        tmp_bytes: 16 << 20,
    }
}

fn fork(f: &Fixture, zygote: &mut Zygote, channel: &HostChannel) -> (Environment, u64) {
    let stderr = std::io::stderr();
    zygote
        .fork(&f.sandbox, &child_spec(channel, &stderr))
        .expect("fork")
}

/// Forks an environment running the isolation probe and returns the probe's report, with the
/// environment and its channel (alive until dropped).
fn forked_probe(f: &Fixture, zygote: &mut Zygote) -> (Value, Environment, HostChannel) {
    let mut channel = HostChannel::create().unwrap();
    let (mut env, _) = fork(f, zygote, &channel);
    let (status, body) = invoke(&mut channel, &mut env, b"{}").expect("probe answers");
    assert_eq!(status, ResponseStatus::Ok);
    let report = serde_json::from_slice(&body).expect("the probe's report");
    (report, env, channel)
}

/// The setup failure `env` reports (5 s at most).
fn setup_failure(env: &mut Environment) -> hearth_sandbox::SetupFailure {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let SetupState::Failed(failure) = env.poll_setup() {
            return failure;
        }
        assert!(Instant::now() < deadline, "no setup failure reported");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn forked_environments_are_isolated_like_any_environment() {
    let f = fixture();
    if no_zygotes_here(&f) {
        return;
    }
    let mut zygote = zygote(&f, "probe");
    let mut reports = Vec::new();
    let mut envs = Vec::new();
    for _ in 0..2 {
        let (report, env, channel) = forked_probe(&f, &mut zygote);
        reports.push(report);
        envs.push((env, channel));
    }
    for report in &reports {
        eprintln!("{}", serde_json::to_string_pretty(report).unwrap());
        // As isolated as an environment started from nothing (tests/tests/sandbox.rs checks
        // the same and more); each child's mkdir in /tmp succeeding shows its own /tmp.
        hearth_tests::assert_isolated(report);
    }
    // Each child is in its own cgroup, which holds it and nothing else.
    let mut cgroups = Vec::new();
    for (env, _) in &envs {
        let cgroup = env.cgroup_path().unwrap().to_owned();
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
        assert_eq!(procs.trim(), env.pid().to_string(), "{}", cgroup.display());
        cgroups.push(cgroup);
    }
    assert_ne!(cgroups[0], cgroups[1]);
    let pids: Vec<i32> = envs.iter().map(|(e, _)| e.pid()).collect();
    drop(envs);
    // Killed, and reaped by the zygote (not hearth's children).
    for pid in pids {
        wait_gone(pid);
    }
    let zygote_pid = zygote.process().pid();
    drop(zygote);
    wait_gone(zygote_pid);
}

/// After its first fork, a zygote's helper process makes the mount, ipc and uts namespaces of
/// its next children ahead (a fresh /tmp mounted, the landlock ruleset built), when the CPU is
/// otherwise idle. A child that enters such a set is as isolated as any, shares none of its
/// namespaces with a sibling or the zygote, and starts where Init left the working directory;
/// the helper is gone with the zygote.
#[test]
fn children_enter_namespaces_made_ahead_and_share_none_of_them() {
    let f = fixture();
    if no_zygotes_here(&f) {
        return;
    }
    let mut zygote = zygote_with(&f, "probe", &[("SAMPLE_INIT_CHDIR", "/var/task")]);
    let zygote_pid = zygote.process().pid();
    let namespaces_of = |pid: i32| {
        ["mnt", "ipc", "uts"].map(|kind| {
            std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                .unwrap()
                .display()
                .to_string()
        })
    };
    let mut seen: std::collections::HashSet<String> = namespaces_of(zygote_pid).into();
    let mut envs = Vec::new();
    // The first child makes its own (the helper learns the /tmp size from that request); the
    // helper runs when nothing else wants the CPU, so wait between forks for its sets.
    let deadline = Instant::now() + Duration::from_secs(20);
    while zygote.prepared_forks() < 2 {
        assert!(
            Instant::now() < deadline,
            "{} children forked, {} of them into namespaces made ahead",
            envs.len(),
            zygote.prepared_forks()
        );
        let (report, env, channel) = forked_probe(&f, &mut zygote);
        hearth_tests::assert_isolated(&report);
        assert_eq!(report["cwd"], "/var/task", "where Init left it");
        // Namespace ids are unique while the namespaces live: every environment is kept.
        for ns in report["namespaces"].as_array().unwrap()[..3].iter() {
            let ns = ns.as_str().unwrap().to_owned();
            assert!(seen.insert(ns.clone()), "{ns} shared: {report}");
        }
        envs.push((env, channel));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The zygote's other children: its helper, in its pid namespace.
    let helpers = hearth_tests::zygote_helpers(zygote_pid);
    let others: Vec<i32> = hearth_tests::children_of(zygote_pid)
        .into_iter()
        .filter(|p| !envs.iter().any(|(e, _)| e.pid() == *p))
        .collect();
    assert_eq!(helpers, others, "one helper, and the environments");
    assert_eq!(helpers.len(), 1, "one helper");
    drop(envs);
    drop(zygote);
    for pid in helpers.into_iter().chain([zygote_pid]) {
        wait_gone(pid);
    }
}

/// Waits up to 2 s for process `pid` to be gone (exited and reaped).
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} still there");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A fork the kernel refuses (the zygote's cgroup holds as many processes as its pids limit:
/// the zygote and its helper) is answered at once with the kernel's errno; the zygote keeps
/// none of the request's descriptors, stays ready and answers the next request, and forks again
/// once a process is gone.
#[test]
fn a_fork_the_kernel_refuses_is_answered_and_the_zygote_forks_again_later() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture();
    if no_zygotes_here(&f) {
        return;
    }
    let mut zygote = zygote_limited(
        &f,
        "probe",
        &[],
        Limits {
            pids: 2,
            ..limits()
        },
    );
    let zygote_pid = zygote.process().pid();
    let helpers = hearth_tests::zygote_helpers(zygote_pid);
    assert_eq!(helpers.len(), 1, "the zygote and its helper fill the limit");
    let stderr = std::io::stderr();
    let channel = HostChannel::create().unwrap();
    let channel_inode = std::fs::metadata(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&channel.guest_fd())
    ))
    .unwrap()
    .ino();
    let spec = child_spec(&channel, &stderr);
    // The zygote's descriptors that lead to the channel's memfd.
    let held = || {
        std::fs::read_dir(format!("/proc/{zygote_pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
            .filter(|m| m.ino() == channel_inode)
            .count()
    };
    for attempt in 0..2 {
        match zygote.fork(&f.sandbox, &spec) {
            Err(hearth_snapshot::ForkError::Fork(e)) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN),
                    "attempt {attempt}: {e}"
                )
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
        assert_eq!(*zygote.poll(), ZygoteState::Ready, "attempt {attempt}");
        let deadline = Instant::now() + Duration::from_secs(2);
        while held() > 0 {
            assert!(
                Instant::now() < deadline,
                "the zygote still holds the channel of its failed request"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // One process fewer in the zygote's cgroup: the next fork succeeds (the child makes its own
    // namespaces, the helper being gone) and its function answers, isolated.
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(helpers[0], libc::SIGKILL) };
    wait_gone(helpers[0]);
    let (report, _env, _channel) = forked_probe(&f, &mut zygote);
    hearth_tests::assert_isolated(&report);
}

/// A child that cannot create its namespaces (the zygote's user namespace is allowed no more
/// ipc namespaces: no set is made ahead before the first fork, so the child makes its own)
/// reports the step and the kernel's errno and exits without running function code.
#[test]
fn a_child_that_cannot_make_its_namespaces_never_runs_function_code() {
    let f = fixture();
    if no_zygotes_here(&f) {
        return;
    }
    let mut zygote = zygote(&f, "echo");
    // In the zygote's user namespace, /proc/sys/user holds that namespace's limits: set from a
    // forked process (setns into a user namespace needs a single thread), which keeps the
    // capabilities setns gives it there (an exec would drop them: uid 0 is not mapped there).
    let ns = std::ffi::CString::new(format!("/proc/{}/ns/user", zygote.process().pid())).unwrap();
    // SAFETY: the child makes only raw syscalls on memory prepared before the fork, then _exits.
    #[allow(clippy::multiple_unsafe_ops_per_block)]
    let limited = unsafe {
        match libc::fork() {
            0 => {
                let fd = libc::open(ns.as_ptr(), libc::O_RDONLY);
                let sysctl = c"/proc/sys/user/max_ipc_namespaces";
                let ok = fd >= 0 && libc::setns(fd, libc::CLONE_NEWUSER) == 0 && {
                    let out = libc::open(sysctl.as_ptr(), libc::O_WRONLY);
                    out >= 0 && libc::write(out, c"0".as_ptr().cast(), 1) == 1
                };
                libc::_exit(if ok { 0 } else { 1 })
            }
            child => {
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
                status
            }
        }
    };
    assert_eq!(limited, 0, "could not limit the zygote's ipc namespaces");
    let mut channel = HostChannel::create().unwrap();
    channel
        .submit(b"function code ran", &hearth_ipc::RequestMeta::default())
        .unwrap();
    let (mut env, _) = fork(&f, &mut zygote, &channel);
    let failure = setup_failure(&mut env);
    assert_eq!(
        (failure.step as u32, failure.errno),
        (
            hearth_ipc::zygote::ChildStep::EnterNamespaces as u32,
            libc::ENOSPC
        ),
        "{failure}"
    );
    wait_gone(env.pid());
    let mut out = Vec::new();
    assert!(
        channel.poll(&mut out).unwrap().is_none(),
        "function code ran"
    );
    assert_eq!(*zygote.poll(), ZygoteState::Ready, "the zygote goes on");
}

#[test]
fn a_child_that_is_not_moved_into_its_cgroup_never_runs_function_code() {
    use hearth_ipc::zygote::{self as protocol, ChildStep, Kind, Message};
    use hearth_ipc::RequestMeta;
    use std::os::fd::AsRawFd;
    let f = fixture();
    if no_zygotes_here(&f) {
        return;
    }
    // Drive the zygote's protocol directly, as a scheduler that failed half-way would.
    let (control, theirs) = protocol::socket_pair().unwrap();
    let env = vec![
        ("_HANDLER".to_owned(), "echo".to_owned()),
        ("HEARTH_CHANNEL_FD".to_owned(), "3".to_owned()),
    ];
    let mut process = f
        .sandbox
        .spawn(&zygote_spec(
            &env,
            theirs.as_fd(),
            Some(std::io::stderr().as_fd()),
        ))
        .unwrap();
    drop(theirs);
    // hearth's end of the socket is non-blocking: wait for each message.
    let recv_blocking = |control: &std::os::fd::OwnedFd, fds: &mut Vec<std::os::fd::OwnedFd>| {
        assert!(protocol::wait_readable(control.as_fd(), Duration::from_secs(5)).unwrap());
        protocol::recv(control, fds, true)
    };
    let mut fds = Vec::new();
    assert_eq!(
        recv_blocking(&control, &mut fds).unwrap().map(|m| m.kind),
        Some(Kind::Ready)
    );
    // The wrong number of descriptors: ignored, no child.
    let devnull = std::fs::File::open("/dev/null").unwrap();
    protocol::send(
        control.as_fd(),
        &Message::new(Kind::Fork, 1, 1 << 20, 0),
        &[devnull.as_raw_fd()],
    )
    .unwrap();
    // Two children that must stop before function code: one whose go-ahead never comes (its
    // cgroup could not be joined), and one told to apply landlock by a zygote that has no
    // rules for it (this zygote was started without them).
    let cases = [
        (2, 0, false, ChildStep::JoinCgroup, libc::EPIPE),
        (
            3,
            protocol::FORK_LANDLOCK,
            true,
            ChildStep::LandlockCreate,
            libc::ENOENT,
        ),
    ];
    for (seq, flags, go_ahead, step, errno) in cases {
        let mut channel = HostChannel::create().unwrap();
        channel
            .submit(b"function code ran", &RequestMeta::default())
            .unwrap();
        let (errors, error_write) = hearth_sandbox::setup_error_pipe().unwrap();
        let (go_read, go_write) = hearth_sandbox::pipe(false).unwrap();
        protocol::send(
            control.as_fd(),
            &Message::new(Kind::Fork, seq, 1 << 20, flags),
            &[
                channel.guest_fd().as_raw_fd(),
                devnull.as_raw_fd(),
                devnull.as_raw_fd(),
                error_write.as_raw_fd(),
                go_read.as_raw_fd(),
            ],
        )
        .unwrap();
        drop((error_write, go_read));
        fds.clear();
        let forked = recv_blocking(&control, &mut fds).unwrap().unwrap();
        // Forked (errno 0), into namespaces its helper made ahead or not.
        assert_eq!(
            (forked.kind, forked.a, forked.c & !protocol::FORKED_PREPARED),
            (Kind::Forked, seq, 0)
        );
        let mut child = Environment::adopt(fds.pop().unwrap(), errors, None, process.pid())
            .expect("a pidfd of the zygote's child");
        if go_ahead {
            std::io::Write::write_all(&mut std::fs::File::from(go_write), b"g").unwrap();
        } else {
            drop(go_write);
        }
        let failure = setup_failure(&mut child);
        assert_eq!(failure.step as u32, step as u32, "{failure}");
        assert_eq!(failure.errno, errno, "{failure}");
        // It exited with 127, as the zygote reports, and never answered the request.
        let exited = recv_blocking(&control, &mut fds).unwrap().unwrap();
        assert_eq!(exited.kind, Kind::Exited);
        assert_eq!(exited.b, forked.b);
        assert_eq!(protocol::decode_status(exited.c), Ok(127));
        let mut out = Vec::new();
        assert!(
            channel.poll(&mut out).unwrap().is_none(),
            "function code ran"
        );
    }
    // A pidfd that is not a child of the zygote's is refused.
    let me = std::fs::File::open("/dev/null").unwrap();
    assert!(Environment::adopt(
        me.into(),
        hearth_sandbox::setup_error_pipe().unwrap().0,
        None,
        process.pid()
    )
    .is_err());
    // The zygote goes on serving.
    assert!(process.try_wait().unwrap().is_none());
    process.kill();
}

// ----- through the engine -------------------------------------------------------------------

mod engine {
    use std::time::{Duration, Instant};

    use hearth_scheduler::{
        Engine, EngineConfig, FunctionConfig, FunctionError, FunctionOutput, SandboxConfig, Start,
    };
    use hearth_tests::{process_exists, require_root, sample_code_dir};

    struct Fixture {
        engine: Engine,
        _state: tempfile::TempDir,
    }

    fn fixture(name: &str, tune: impl FnOnce(&mut FunctionConfig)) -> Fixture {
        require_root();
        let state = tempfile::tempdir().unwrap();
        let engine = Engine::start(EngineConfig {
            shards: 1,
            function_output: FunctionOutput::Discard,
            sandbox: SandboxConfig {
                state_dir: state.path().to_owned(),
                ..SandboxConfig::default()
            },
            ..EngineConfig::default()
        })
        .expect("engine");
        let mut config = FunctionConfig::new(name, sample_code_dir(), "echo");
        config.zygote = true;
        tune(&mut config);
        engine.create_function(config).unwrap();
        Fixture {
            engine,
            _state: state,
        }
    }

    impl Fixture {
        /// Invokes `name` in a new environment (its idle ones are retired first).
        fn invoke_new(&self, name: &str, payload: &[u8]) -> (hearth_scheduler::Outcome, Vec<u8>) {
            let owned = name.to_owned();
            self.engine
                .on_shard(0, move |shard| {
                    let function = shard.function(&owned).unwrap();
                    shard.retire_idle(&function);
                    shard.housekeeping();
                })
                .unwrap();
            self.engine.invoke(name, payload).expect("invocation")
        }

        /// New environments until one is forked from the zygote (10 s at most). In a chroot
        /// (no zygotes, see `no_zygotes_here`) checks that new environments start from nothing
        /// and returns false.
        fn until_zygote(&self, name: &str) -> bool {
            if hearth_sandbox::chrooted() {
                for _ in 0..2 {
                    assert_eq!(self.invoke_new(name, b"x").0.start, Start::Cold);
                }
                return false;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.invoke_new(name, b"x").0.start != Start::Zygote {
                assert!(Instant::now() < deadline, "no zygote start within 10 s");
                std::thread::sleep(Duration::from_millis(20));
            }
            true
        }

        fn zygote_pids(&self) -> Vec<i32> {
            self.engine
                .on_shard(0, |shard| shard.zygote_pids())
                .unwrap()
        }
    }

    #[test]
    fn cold_starts_fork_from_the_zygote_and_exits_keep_their_status() {
        let f = fixture("z", |c| c.handler = "exit".into());
        // "exit" with a number exits with it; anything else is an InvalidEvent error.
        if !f.until_zygote("z") {
            return;
        }
        let (outcome, body) = f.invoke_new("z", b"7");
        assert_eq!(outcome.start, Start::Zygote);
        assert!(
            matches!(outcome.error, Some(FunctionError::ExitError(_))),
            "{outcome:?}"
        );
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            doc["errorMessage"]
                .as_str()
                .unwrap()
                .contains("Runtime exited with error: exit status 7"),
            "{doc}"
        );
        let stats = f.engine.stats();
        assert!(stats[0].zygote >= 1 && stats[0].cold >= 1, "{stats:?}");
    }

    #[test]
    fn one_zygote_serves_many_cold_starts_in_a_row() {
        let f = fixture("z", |_| {});
        if !f.until_zygote("z") {
            return;
        }
        let zygote = f.zygote_pids();
        // Each environment is retired before the next: their exits are reported after hearth
        // has let them go, which must not count against the zygote.
        for i in 0..50 {
            let payload = format!("call {i}");
            let (outcome, body) = f.invoke_new("z", payload.as_bytes());
            assert_eq!(outcome.start, Start::Zygote, "call {i}");
            assert_eq!(body, payload.as_bytes());
        }
        assert_eq!(f.zygote_pids(), zygote, "the same zygote throughout");
    }

    #[test]
    fn a_killed_zygote_is_replaced_and_no_invocation_is_lost() {
        let f = fixture("z", |_| {});
        if !f.until_zygote("z") {
            return;
        }
        let old = f.zygote_pids();
        assert_eq!(old.len(), 1);
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(old[0], libc::SIGKILL) };
        for i in 0..5 {
            let payload = format!("after {i}");
            let (outcome, body) = f.invoke_new("z", payload.as_bytes());
            assert!(outcome.error.is_none(), "{outcome:?}");
            assert_eq!(body, payload.as_bytes());
        }
        // A new zygote serves again.
        if !f.until_zygote("z") {
            return;
        }
        let new = f.zygote_pids();
        assert!(new.len() == 1 && new != old, "{old:?} -> {new:?}");
        assert!(!process_exists(old[0]));
    }

    /// The zygote killed while a child it forked for an invocation sets itself up: the child
    /// dies with it before taking the invocation, which is placed again, on an environment
    /// started from nothing, and answered; the zygote is replaced.
    #[test]
    fn an_invocation_whose_zygote_is_killed_mid_fork_is_served_from_nothing() {
        // Each child the zygote forks pauses 2 s before its setup (a timeout with room for
        // that, for the first zygote start below).
        let f = fixture("z", |c| {
            c.environment
                .push(("SAMPLE_CHILD_PAUSE_MS".into(), "2000".into()));
            c.timeout = Duration::from_secs(10);
        });
        if !f.until_zygote("z") {
            return;
        }
        let zygote = f.zygote_pids()[0];
        let before: Vec<i32> = hearth_tests::children_of(zygote);
        // Kills the zygote once it has forked a new child and answered (the answer takes
        // microseconds; the child pauses in its fork handler meanwhile).
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if hearth_tests::children_of(zygote)
                    .iter()
                    .any(|p| !before.contains(p))
                {
                    std::thread::sleep(Duration::from_millis(100));
                    // SAFETY: kill with integer arguments.
                    unsafe { libc::kill(zygote, libc::SIGKILL) };
                    return true;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            false
        });
        let (outcome, body) = f.invoke_new("z", b"served anyway");
        assert!(killer.join().unwrap(), "the zygote forked no child");
        assert!(outcome.error.is_none(), "{outcome:?}");
        assert_eq!(
            (outcome.start, body.as_slice()),
            (Start::Cold, &b"served anyway"[..])
        );
        let stats = f.engine.stats();
        assert_eq!(stats[0].placed_again, 1, "{stats:?}");
        // A new zygote serves (after the back-off); the killed one is gone (reaped).
        if !f.until_zygote("z") {
            return;
        }
        assert_ne!(f.zygote_pids(), [zygote]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while process_exists(zygote) {
            assert!(
                Instant::now() < deadline,
                "the killed zygote was not reaped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_zygote_that_stops_answering_is_killed_and_cold_starts_go_on() {
        let f = fixture("z", |_| {});
        if !f.until_zygote("z") {
            return;
        }
        let pid = f.zygote_pids()[0];
        // Stopped between requests: it cannot answer the next fork.
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let t = Instant::now();
        let (outcome, body) = f.invoke_new("z", b"still served");
        assert_eq!(
            (outcome.start, body.as_slice()),
            (Start::Cold, &b"still served"[..])
        );
        assert!(outcome.error.is_none());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let deadline = Instant::now() + Duration::from_secs(2);
        while process_exists(pid) {
            assert!(
                Instant::now() < deadline,
                "the stopped zygote was not killed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_timeout_kills_everything_a_forked_environment_started() {
        let f = fixture("orphans", |c| {
            c.handler = "orphans".into();
            c.timeout = Duration::from_secs(1);
        });
        // Each call forks four setsid'd, reparented sleepers, then hangs until its timeout.
        if !f.until_zygote("orphans") {
            return;
        }
        let zygote = f.zygote_pids();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // Not the zygote, not an environment the adaptive pool started since (a single
            // process that has run nothing yet), and not the zygote's helper.
            let pids = hearth_tests::function_pids("orphans");
            let live = f.engine.on_shard(0, |s| s.environment_pids()).unwrap();
            let helper = hearth_tests::zygote_helpers(zygote[0]);
            assert!(helper.len() <= 1, "the zygote's helpers: {helper:?}");
            let left: Vec<i32> = pids
                .into_iter()
                .filter(|p| !zygote.contains(p) && !live.contains(p) && !helper.contains(p))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "outlived their environment: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(process_exists(zygote[0]), "the zygote serves on");
    }

    #[test]
    fn a_zygote_that_hangs_in_init_never_delays_a_cold_start_and_is_replaced() {
        let f = fixture("z", |c| {
            c.environment
                .push(("SAMPLE_HANG_AS_ZYGOTE".into(), "1".into()));
        });
        for i in 0..5 {
            let payload = format!("cold {i}");
            let (outcome, body) = f.invoke_new("z", payload.as_bytes());
            assert_eq!(outcome.start, Start::Cold);
            assert_eq!(body, payload.as_bytes());
            std::thread::sleep(Duration::from_millis(50));
        }
        let expected = usize::from(!hearth_sandbox::chrooted());
        let hanging = f.zygote_pids();
        assert_eq!(hanging.len(), expected, "the zygote is still initialising");
        assert_eq!(f.engine.stats()[0].zygote, 0);
        if expected == 0 {
            return;
        }
        // Not ready within its 10 s: killed, and (the function still starting environments)
        // another one tried after the back-off, while cold starts go on.
        let deadline = Instant::now() + Duration::from_secs(15);
        while process_exists(hanging[0]) {
            assert!(
                Instant::now() < deadline,
                "the hanging zygote was not killed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (outcome, body) = f.invoke_new("z", b"after");
            assert_eq!(
                (outcome.start, body.as_slice()),
                (Start::Cold, &b"after"[..])
            );
            let now = f.zygote_pids();
            if now.len() == 1 && now != hanging {
                break;
            }
            assert!(Instant::now() < deadline, "no new zygote: {now:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ----- Python -----------------------------------------------------------------------------

#[path = "common/runtime.rs"]
mod runtime;

mod python {
    use std::time::{Duration, Instant};

    use hearth_scheduler::{FunctionError, Launch, Start};

    use super::runtime::{code, Answer, RuntimeFixture};

    const APP: &str = r#"
import os, random, sys
loaded = random.random()
os.chdir("/var/task")
forks = {"before": 0, "parent": 0, "child": 0}

def count(hook):
    forks[hook] += 1

def in_child():
    count("child")
    with open("/proc/self/status") as status:
        forks["child_caps"] = [l.split()[1] for l in status if l.startswith("CapEff:")][0]

os.register_at_fork(
    before=lambda: count("before"),
    after_in_parent=lambda: count("parent"),
    after_in_child=in_child,
)

def handler(event, context):
    print("handled", event)
    fresh = not os.path.exists("/tmp/used")
    open("/tmp/used", "w").close()
    return {
        "event": event,
        "pid": os.getpid(),
        "random": random.random(),
        "loaded": loaded,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 3000,
        "fresh_tmp": fresh,
        "uid": os.getuid(),
        "hostname": open("/proc/sys/kernel/hostname").read().strip(),
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "cwd": os.getcwd(),
        "forks": forks,
        "http_client": "http.client" in sys.modules,
    }

def fail(event, context):
    raise ValueError("bad input: %s" % event)
"#;

    fn function(f: &RuntimeFixture, name: &str, dir: &std::path::Path, handler: &str) {
        f.create(name, dir, |c| {
            c.handler = handler.into();
            c.runtime = "python3.11".into();
            c.zygote = true;
            c.command = "/usr/bin/python3".into();
            c.args = vec!["/var/runtime/python/bootstrap.py".into()];
            assert_eq!(c.launch, Launch::RuntimeApi);
        });
    }

    /// Invokes `name` in a new environment (its idle ones retired first).
    fn invoke_new(f: &RuntimeFixture, name: &str, payload: &[u8]) -> Answer {
        let owned = name.to_owned();
        f.engine
            .on_shard(0, move |shard| {
                let function = shard.function(&owned).unwrap();
                shard.retire_idle(&function);
                shard.housekeeping();
            })
            .unwrap();
        f.invoke(name, payload).expect("invoke")
    }

    /// New environments until one is forked from the zygote; `None` in a chroot (no zygotes
    /// there: new environments start from nothing, which this checks).
    fn until_zygote(f: &RuntimeFixture, name: &str) -> Option<Answer> {
        if hearth_sandbox::chrooted() {
            assert_eq!(invoke_new(f, name, b"1").outcome.start, Start::Cold);
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = invoke_new(f, name, b"1");
            if answer.outcome.start == Start::Zygote {
                return Some(answer);
            }
            assert!(Instant::now() < deadline, "no zygote start within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn python_environments_fork_from_an_imported_handler() {
        let f = RuntimeFixture::start();
        let dir = code(&[("app.py", APP, false)]);
        function(&f, "py", dir.path(), "app.handler");
        let Some(first) = until_zygote(&f, "py") else {
            return;
        };
        let second = invoke_new(&f, "py", br#"{"k": [1, 2]}"#);
        assert_eq!(second.outcome.start, Start::Zygote);
        for answer in [&first, &second] {
            assert_eq!(answer.outcome.error, None, "{}", answer.text());
            let body = answer.json();
            assert_eq!(body["pid"], 1, "first process of its own pid namespace");
            assert_eq!(body["uid"], 65534);
            assert_eq!(body["hostname"], "hearth");
            assert_eq!(body["fresh_tmp"], true, "a /tmp of its own");
            assert_eq!(body["cwd"], "/var/task", "where Init left it");
            assert_eq!(body["remaining_ok"], true);
            // The runtime did not import what only its HTTP client needs: every page an import
            // fills is a page-table entry each fork copies.
            assert_eq!(body["http_client"], false, "{body}");
            // An X-Ray trace header made for it, as hearth-init makes one.
            let trace = body["trace"].as_str().unwrap_or_default();
            assert!(trace.starts_with("Root=1-"), "{trace:?} {body}");
            assert!(trace.ends_with(";Sampled=0"), "{trace:?}");
            assert_eq!(
                body["request_id"].as_str(),
                Some(answer.request_id().as_str())
            );
            assert_eq!(
                body["arn"],
                "arn:aws:lambda:us-east-1:123456789012:function:py"
            );
            assert!(answer.log.ends_with("Start: zygote\t\n"), "{}", answer.log);
            assert!(answer.log.contains("\nhandled "), "{}", answer.log);
        }
        assert_eq!(second.json()["event"], serde_json::json!({"k": [1, 2]}));
        assert_eq!(
            first.json()["loaded"],
            second.json()["loaded"],
            "imported once"
        );
        // Python's own fork handlers ran: each child reseeded its random generator, and the
        // handlers Init registered ran where `os.fork` runs them: `before` and `after_in_parent`
        // in the zygote before and after each fork (a child sees the counts of the forks
        // before it), `after_in_child` once in each child, and only once the child was set up
        // (no capability left). (Nothing else forks between the two: `invoke_new` retired the
        // first environment and cleared the demand that would start pooled ones.)
        assert_ne!(first.json()["random"], second.json()["random"]);
        let forks = |answer: &Answer, hook: &str| answer.json()["forks"][hook].as_u64();
        for answer in [&first, &second] {
            assert_eq!(forks(answer, "child"), Some(1), "{}", answer.text());
            assert_eq!(
                answer.json()["forks"]["child_caps"],
                "0000000000000000",
                "the child's fork handler ran before its setup: {}",
                answer.text()
            );
            let before = forks(answer, "before").unwrap_or(0);
            assert!(before >= 1, "{}", answer.text());
            assert_eq!(
                forks(answer, "parent"),
                Some(before - 1),
                "{}",
                answer.text()
            );
        }
        assert_eq!(
            forks(&second, "before"),
            forks(&first, "before").map(|n| n + 1),
            "one fork between them"
        );
        // The same environment again: warm, its /tmp kept.
        let warm = f.invoke("py", b"3").expect("invoke");
        assert_eq!(warm.outcome.start, Start::Warm);
        assert_eq!(warm.json()["fresh_tmp"], false);
    }

    #[test]
    fn python_errors_from_a_forked_environment_are_lambdas_documents() {
        let f = RuntimeFixture::start();
        let dir = code(&[("app.py", APP, false)]);
        function(&f, "pyerr", dir.path(), "app.fail");
        let Some(answer) = until_zygote(&f, "pyerr") else {
            return;
        };
        assert_eq!(answer.outcome.error, Some(FunctionError::Handled));
        let doc = answer.json();
        assert_eq!(doc["errorType"], "ValueError");
        assert_eq!(doc["errorMessage"], "bad input: 1");
    }

    /// Init builds about 5 MiB of objects (on huge pages where the kernel makes them); each
    /// handler reads all of them (writing their reference counts), changes a few and counts its
    /// own page faults.
    const HOT: &str = r#"
import resource
TABLE = [[i, str(i)] for i in range(30_000)]
EXPECTED = sum(i for i, _ in TABLE)

def handler(event, context):
    total = 0
    for row in TABLE:
        total += row[0]
        if row[0] % 97 == int(event):
            row[1] = "touched"
    return {
        "intact": total == EXPECTED == 29_999 * 30_000 // 2,
        "strings": all(s in (str(i), "touched") for i, s in TABLE),
        "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
    }
"#;

    /// The first child forked lists the pages it wrote (before it answers); the zygote pins
    /// them when it wakes for the next fork, and every later child gets them copied by its fork
    /// instead of faulting on each: far fewer page faults, and every byte Init made is the same
    /// in each child.
    #[test]
    fn later_python_children_get_the_pages_the_first_wrote_at_fork() {
        let f = RuntimeFixture::start();
        let dir = code(&[("hot.py", HOT, false)]);
        function(&f, "hot", dir.path(), "hot.handler");
        let Some(first) = until_zygote(&f, "hot") else {
            return;
        };
        let mut answers = vec![first];
        for _ in 0..4 {
            answers.push(invoke_new(&f, "hot", b"1"));
        }
        for answer in &answers {
            assert_eq!(answer.outcome.start, Start::Zygote, "{}", answer.text());
            assert_eq!(answer.json()["intact"], true, "{}", answer.text());
            assert_eq!(answer.json()["strings"], true, "{}", answer.text());
        }
        let faults: Vec<u64> = answers
            .iter()
            .map(|a| a.json()["faults"].as_u64().unwrap())
            .collect();
        // The first (which reported) touched thousands of pages: every list and string of the
        // table has its reference count written.
        assert!(faults[0] > 1_000, "{faults:?}");
        for later in &faults[1..] {
            assert!(*later * 4 < faults[0], "{faults:?}");
        }
    }

    #[test]
    fn a_python_import_error_never_makes_a_zygote_and_is_reported_as_lambda_does() {
        let f = RuntimeFixture::start();
        let dir = code(&[("app.py", "import no_such_module\n", false)]);
        function(&f, "broken", dir.path(), "app.handler");
        for _ in 0..3 {
            let answer = invoke_new(&f, "broken", b"1");
            assert_eq!(answer.outcome.start, Start::Cold);
            assert_eq!(answer.json()["errorType"], "Runtime.ImportModuleError");
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}
