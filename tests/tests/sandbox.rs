//! Tier 2 (root): real environments started by `hearth-sandbox`, probed from the inside.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use hearth_ipc::{HostChannel, ResponseStatus};
use hearth_sandbox::{EnvSpec, Environment, Limits, Sandbox, SandboxConfig, SetupState};
use serde_json::Value;

use hearth_tests::{invoke_environment as invoke, require_root};

struct Fixture {
    _state: tempfile::TempDir,
    code: &'static std::path::Path,
    sandbox: Sandbox,
}

fn fixture() -> Fixture {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let code = hearth_tests::sample_code_dir();
    let sandbox = Sandbox::new(SandboxConfig {
        state_dir: state.path().to_owned(),
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    Fixture {
        _state: state,
        code,
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

/// Starts `command` from `code_dir` with the sample function's `handler`.
fn spawn(
    f: &Fixture,
    code_dir: &Path,
    command: &str,
    handler: &str,
    channel: &HostChannel,
) -> Environment {
    spawn_limited(f, code_dir, command, handler, channel, limits())
}

fn spawn_limited(
    f: &Fixture,
    code_dir: &Path,
    command: &str,
    handler: &str,
    channel: &HostChannel,
    limits: Limits,
) -> Environment {
    let env = vec![
        ("_HANDLER".to_owned(), handler.to_owned()),
        ("HEARTH_CHANNEL_FD".to_owned(), "3".to_owned()),
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
    ];
    f.sandbox
        .spawn(&EnvSpec {
            code_dir,
            command,
            args: &[],
            env: &env,
            channel: channel.guest_fd(),
            stdout: None,
            stderr: Some(std::io::stderr().as_fd()),
            limits,
            tmp_bytes: 16 << 20,
            cpus: None,
            loopback: false,
            runtime_dir: None,
            layers: &[],
            zygote: None,
        })
        .expect("spawn")
}

/// Starts the sample function with `handler`.
fn start(f: &Fixture, handler: &str, channel: &HostChannel) -> Environment {
    spawn(f, f.code, "/var/task/bootstrap", handler, channel)
}

#[test]
fn the_probe_sees_an_isolated_environment() {
    let f = fixture();
    let mut channel = HostChannel::create().unwrap();
    let mut env = start(&f, "probe", &channel);
    let (status, body) = invoke(&mut channel, &mut env, b"{}").expect("probe answers");
    assert_eq!(status, ResponseStatus::Ok);
    let report: Value = serde_json::from_slice(&body).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    hearth_tests::assert_isolated(&report);
    assert_eq!(
        report["interfaces"],
        serde_json::json!(["lo"]),
        "an empty network namespace"
    );
    let sys = &report["syscalls"];
    let paths = &report["paths"];
    assert_eq!(paths["read_task"], "ok");
    assert_eq!(paths["write_dev_null"], "ok");
    let passwd = report["passwd"].as_str().unwrap();
    assert!(passwd.contains("sbx_user:x:65534:65534"), "{passwd}");
    assert_eq!(
        passwd.lines().count(),
        2,
        "only the skeleton's users: {passwd}"
    );
    assert_eq!(sys["socket_packet"], libc::ENOSYS);
    let root: Vec<String> = serde_json::from_value(report["root"].clone()).unwrap();
    let mut root = root;
    root.sort();
    assert_eq!(
        root,
        ["bin", "dev", "etc", "lib", "lib64", "opt", "proc", "sbin", "tmp", "usr", "var"]
    );

    let pid = env.pid();
    let cgroup = env.cgroup_path().unwrap().to_owned();
    drop(env);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the environment process is gone"
    );
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert_eq!(procs, "", "its cgroup is empty");
}

fn wait_exit(env: &mut Environment) -> hearth_sandbox::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = env.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "environment did not exit within 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_failing_setup_step_is_reported_by_name() {
    let f = fixture();
    let channel = HostChannel::create().unwrap();
    let missing = f.code.join("does-not-exist");
    let mut env = spawn(&f, &missing, "/var/task/bootstrap", "echo", &channel);
    assert_eq!(wait_exit(&mut env), hearth_sandbox::ExitStatus::Exited(127));
    let SetupState::Failed(failure) = env.poll_setup() else {
        panic!("setup should have failed")
    };
    assert_eq!(failure.step, hearth_sandbox::Step::BindCode);
    assert_eq!(failure.errno, libc::ENOENT);
    assert!(
        failure
            .to_string()
            .contains("bind-mounting the function code at /var/task"),
        "{failure}"
    );
}

#[test]
fn a_missing_program_fails_at_exec() {
    let f = fixture();
    let channel = HostChannel::create().unwrap();
    let mut env = spawn(&f, f.code, "/var/task/no-such-bootstrap", "echo", &channel);
    wait_exit(&mut env);
    assert_eq!(
        env.poll_setup(),
        SetupState::Failed(hearth_sandbox::SetupFailure {
            step: hearth_sandbox::Step::Exec,
            errno: libc::ENOENT
        })
    );
}

#[test]
fn a_crash_is_reported_as_its_signal() {
    let f = fixture();
    let mut channel = HostChannel::create().unwrap();
    let mut env = start(&f, "crash", &channel);
    let err = invoke(&mut channel, &mut env, b"").unwrap_err();
    assert_eq!(err, "environment exited: signal: segmentation fault");
}

#[test]
fn memory_beyond_the_limit_is_killed_inside_its_own_cgroup() {
    let f = fixture();
    let mut channel = HostChannel::create().unwrap();
    let mut env = start(&f, "alloc", &channel);
    // Within the 128 MiB limit: fine.
    let (status, body) = invoke(&mut channel, &mut env, b"32").unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (ResponseStatus::Ok, &b"allocated 32 MiB"[..])
    );
    // Beyond it: the kernel's OOM killer acts inside the environment's cgroup.
    let err = invoke(&mut channel, &mut env, b"512").unwrap_err();
    assert_eq!(err, "environment exited: signal: killed");
    assert!(env.oom_killed(), "the cgroup recorded an OOM kill");
}

#[test]
fn dropping_an_environment_kills_it_and_its_empty_cgroup_is_reused_then_removed() {
    let f = fixture();
    let mut channel = HostChannel::create().unwrap();
    let mut env = start(&f, "echo", &channel);
    assert_eq!(invoke(&mut channel, &mut env, b"hi").unwrap().1, b"hi");
    let (pid, cgroup) = (env.pid(), env.cgroup_path().unwrap().to_owned());
    assert!(cgroup.exists());
    assert_eq!(env.process_count(), 1);
    drop(env);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert_eq!(procs, "", "the environment's cgroup is empty");
    // The next environment gets the emptied cgroup instead of a new one.
    let mut channel = HostChannel::create().unwrap();
    let mut env = start(&f, "echo", &channel);
    assert_eq!(env.cgroup_path().unwrap(), cgroup);
    assert_eq!(
        invoke(&mut channel, &mut env, b"again").unwrap().1,
        b"again"
    );
    drop(env);
    // The sandbox removes its cgroups when it goes.
    let Fixture { sandbox, .. } = f;
    drop(sandbox);
    assert!(
        !cgroup.exists(),
        "{} outlived the sandbox",
        cgroup.display()
    );
}

#[test]
fn a_reused_cgroup_takes_a_larger_memory_limit() {
    // cgroup v1 refuses a memory limit above the memory+swap limit a reused cgroup still holds;
    // a function whose memory grew must still start in it.
    let f = fixture();
    let channel = HostChannel::create().unwrap();
    let env = start(&f, "echo", &channel);
    let cgroup = env.cgroup_path().unwrap().to_owned();
    drop(env);
    let mut channel = HostChannel::create().unwrap();
    let bigger = Limits {
        memory_bytes: 1 << 30,
        ..limits()
    };
    let mut env = spawn_limited(&f, f.code, "/var/task/bootstrap", "alloc", &channel, bigger);
    assert_eq!(env.cgroup_path().unwrap(), cgroup, "the cgroup was reused");
    // 256 MiB: more than the first environment's 128 MiB limit allowed.
    let (status, body) = invoke(&mut channel, &mut env, b"256").unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (ResponseStatus::Ok, &b"allocated 256 MiB"[..])
    );
}

#[test]
fn environments_die_with_the_daemon_thread_that_started_them() {
    require_root();
    // A separate process starts an environment (as root: the uid switch inside the child once
    // cleared the parent-death signal), prints its pid, and is then killed.
    let state = tempfile::tempdir().unwrap();
    let mut helper =
        std::process::Command::new(hearth_tests::workspace_binary("hearth-sandbox-helper"))
            .arg("hold")
            .arg(state.path())
            .arg(hearth_tests::sample_code_dir())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(helper.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: i32 = line
        .trim()
        .parse()
        .expect("the helper prints the environment's pid");
    assert!(hearth_tests::process_exists(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while hearth_tests::process_exists(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !hearth_tests::process_exists(pid),
        "environment {pid} outlived the process that started it"
    );
}
