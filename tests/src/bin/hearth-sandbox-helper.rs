//! A stand-alone process that uses `hearth-sandbox` directly, for tests that need hearth in a
//! process of its own (to run it as another user, or to kill it).
//!
//! ```text
//! hearth-sandbox-helper probe STATE_DIR CODE_DIR   start one environment running the sample
//!                                                  function's `probe`; print its JSON report
//! hearth-sandbox-helper hold STATE_DIR CODE_DIR    start one echo environment, print its pid
//!                                                  once it has answered, then wait forever
//! hearth-sandbox-helper attack STATE_DIR CODE_DIR HANDLER [--invokes=N] [--timeout-ms=MS]
//!                       [KEY=VALUE...]             the escape suite, rootless: see below
//! hearth-sandbox-helper invoke STATE_DIR CODE_DIR HANDLER [--timeout-ms=MS] [--memory-mb=N]
//!                                                  invoke HANDLER once with the event read
//!                                                  from stdin: see below
//! ```
//!
//! `attack` plays the scheduler for `tests/tests/escape_rootless.rs`: it starts a sibling
//! environment (handler `sibling`), then invokes `HANDLER` of the code in `CODE_DIR` (the
//! `hearth-attack` function as `bootstrap`) N times (default 1) with `KEY=VALUE...` and
//! `HEARTH_ATTACK_HOST_PID`/`_HOST_PGID` (this process, the scheduler here) and
//! `HEARTH_ATTACK_SIBLING_PID` in its environment. An environment is reused while it is alive
//! and its channel is quiet (as the scheduler's `pick` does), else a new one starts. Each answer
//! is reported as Lambda would classify it: `null` (the function's JSON report), or
//! `Runtime.ExitError` / `Runtime.InvalidResponse` / `Sandbox.Timedout` with a message. Then it
//! checks the sibling is alive and answers from the same environment, and prints one JSON line.
//!
//! `invoke` plays the scheduler for one invocation with a real event (the seccomp sweep's,
//! rootless, in `tests/tests/seccomp_sweep.rs`): it starts one environment running `HANDLER` of
//! the code in `CODE_DIR` with MB of memory (default 512) and the scheduler's pids limit,
//! its stdout and stderr going to this process's stderr, sends it stdin as the event and
//! waits up to MS (default 60 000) for the answer. It prints one JSON line: `rootless`,
//! `cgroups`, `error` (`null`, or the Lambda error type as `attack` reports it), `message` and
//! `body` (the function's answer, as a string).

use std::path::PathBuf;
use std::time::Duration;

use hearth_ipc::HostChannel;
use hearth_sandbox::{CgroupPolicy, EnvSpec, Limits, Sandbox, SandboxConfig};

fn main() {
    if let Err(e) = run() {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("hearth-sandbox-helper: {message}");
        #[allow(clippy::exit)] // a failed helper must say so in its status
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(state), Some(code)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: hearth-sandbox-helper probe|hold STATE_DIR CODE_DIR".into());
    };
    let handler = match mode.as_str() {
        "attack" => return attack(&state, &code, args.collect()),
        "invoke" => return invoke(&state, &code, args.collect()),
        "probe" => "probe",
        "hold" => "echo",
        other => return Err(format!("unknown mode {other}").into()),
    };
    let sandbox = Sandbox::new(SandboxConfig {
        state_dir: PathBuf::from(state),
        cgroups: CgroupPolicy::BestEffortWhenRootless,
        ..SandboxConfig::default()
    })?;
    let mut channel = HostChannel::create()?;
    let env = [
        ("_HANDLER".to_owned(), handler.to_owned()),
        (hearth_ipc::CHANNEL_FD_ENV.to_owned(), "3".to_owned()),
    ];
    let code = PathBuf::from(code);
    let mut environment = sandbox.spawn(&EnvSpec {
        code_dir: &code,
        command: "/var/task/bootstrap",
        args: &[],
        env: &env,
        channel: channel.guest_fd(),
        stdout: None,
        stderr: None,
        limits: Limits {
            memory_bytes: 128 << 20,
            pids: 64,
            cpu_weight: 100,
            cpu: None,
        },
        tmp_bytes: 16 << 20,
        cpus: None,
        loopback: false,
        runtime_dir: None,
        layers: &[],
        zygote: None,
    })?;
    let (_, answer) = hearth_tests::invoke_environment(&mut channel, &mut environment, b"{}")?;
    if mode == "hold" {
        println!("{}", environment.pid());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let mut report: serde_json::Value = serde_json::from_slice(&answer)?;
    report["rootless"] = serde_json::json!(sandbox.rootless());
    report["cgroups"] = serde_json::json!(sandbox.hierarchy().is_some());
    println!("{report}");
    Ok(())
}

/// One environment with its channel, as the scheduler holds it.
struct Live {
    channel: HostChannel,
    env: hearth_sandbox::Environment,
}

fn spawn_live(
    sandbox: &Sandbox,
    code: &std::path::Path,
    env: &[(String, String)],
) -> Result<Live, Box<dyn std::error::Error>> {
    let channel = HostChannel::create()?;
    let env = sandbox.spawn(&EnvSpec {
        code_dir: code,
        command: "/var/task/bootstrap",
        args: &[],
        env,
        channel: channel.guest_fd(),
        stdout: None,
        stderr: None,
        limits: Limits {
            memory_bytes: 128 << 20,
            pids: 1024,
            cpu_weight: 100,
            cpu: None,
        },
        tmp_bytes: 16 << 20,
        cpus: None,
        loopback: false,
        runtime_dir: None,
        layers: &[],
        zygote: None,
    })?;
    Ok(Live { channel, env })
}

/// Invokes `live` once with `{}`: `Ok(body)` for the function's answer, `Err((errorType,
/// message))` for what the scheduler would answer instead (the environment is then dead).
fn invoke_live(live: &mut Live, timeout: Duration) -> Result<Vec<u8>, (&'static str, String)> {
    live.channel
        .submit(b"{}", &hearth_ipc::RequestMeta::default())
        .map_err(|e| ("Runtime.InvalidResponse", e.to_string()))?;
    await_live(live, timeout)
}

/// Waits for the answer to the request submitted to `live`, as [`invoke_live`] says.
fn await_live(live: &mut Live, timeout: Duration) -> Result<Vec<u8>, (&'static str, String)> {
    let invalid = |e: String| ("Runtime.InvalidResponse", e);
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        match live.channel.poll(&mut out) {
            Ok(Some(_)) => return Ok(out),
            Ok(None) => {}
            Err(e) => return Err(invalid(e.to_string())),
        }
        if let hearth_sandbox::SetupState::Failed(failure) = live.env.poll_setup() {
            return Err(("Sandbox.Setup", failure.to_string()));
        }
        match live.env.try_wait() {
            Ok(Some(status)) => {
                return Err((
                    "Runtime.ExitError",
                    format!("Runtime exited with error: {status}"),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(("Sandbox.Wait", e.to_string())),
        }
        if std::time::Instant::now() > deadline {
            return Err(("Sandbox.Timedout", "timed out".into()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn attack(state: &str, code: &str, rest: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut rest = rest.into_iter();
    let handler = rest.next().ok_or("attack: no HANDLER")?;
    let mut invokes = 1;
    let mut timeout = Duration::from_secs(10);
    let mut env = vec![(hearth_ipc::CHANNEL_FD_ENV.to_owned(), "3".to_owned())];
    for arg in rest {
        if let Some(n) = arg.strip_prefix("--invokes=") {
            invokes = n.parse()?;
        } else if let Some(ms) = arg.strip_prefix("--timeout-ms=") {
            timeout = Duration::from_millis(ms.parse()?);
        } else {
            let (k, v) = arg.split_once('=').ok_or("attack: expected KEY=VALUE")?;
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    // SAFETY: getpgrp cannot fail.
    let pgid = unsafe { libc::getpgrp() };
    env.push((
        "HEARTH_ATTACK_HOST_PID".to_owned(),
        std::process::id().to_string(),
    ));
    env.push(("HEARTH_ATTACK_HOST_PGID".to_owned(), pgid.to_string()));
    let sandbox = Sandbox::new(SandboxConfig {
        state_dir: PathBuf::from(state),
        cgroups: CgroupPolicy::BestEffortWhenRootless,
        ..SandboxConfig::default()
    })?;
    let code = PathBuf::from(code);
    let with = |extra: &[(&str, String)]| {
        let mut all = env.clone();
        all.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        all
    };

    let sibling_env = with(&[
        ("_HANDLER", "sibling".to_owned()),
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            format!("escape-sibling-{handler}"),
        ),
    ]);
    let mut sibling = spawn_live(&sandbox, &code, &sibling_env)?;
    let first = invoke_live(&mut sibling, Duration::from_secs(10))
        .map_err(|(t, m)| format!("the sibling did not answer: {t}: {m}"))?;
    let sibling_pid = sibling.env.pid();

    let attack_env = with(&[
        ("_HANDLER", handler.clone()),
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            format!("escape-rootless-{handler}"),
        ),
        ("HEARTH_ATTACK_SIBLING_PID", sibling_pid.to_string()),
    ]);
    let mut live: Option<Live> = None;
    let mut answers = Vec::new();
    for i in 0..invokes {
        if i > 0 {
            // What escape.rs does between invocations: let an environment that exits after
            // answering be gone, so the next pick sees it.
            std::thread::sleep(Duration::from_millis(50));
        }
        // As the scheduler's `invoke_on`: a picked environment that is dead, answered twice or
        // corrupted its request ring (the submit says so) is killed, and a new one starts.
        let mut retired = Vec::new();
        let mut cold = false;
        for _ in 0..4 {
            let reusable = live.as_mut().is_some_and(|l| {
                matches!(l.env.try_wait(), Ok(None)) && l.channel.check_quiet().is_ok()
            });
            if !reusable {
                live = Some(spawn_live(&sandbox, &code, &attack_env)?);
                cold = true;
            }
            let current = live.as_mut().ok_or("no environment")?;
            match current
                .channel
                .submit(b"{}", &hearth_ipc::RequestMeta::default())
            {
                Ok(_) => break,
                Err(e) => {
                    retired.push(format!("{}: {e}", current.env.pid()));
                    current.env.kill();
                    let _ = current.env.wait();
                    live = None;
                }
            }
        }
        let current = live
            .as_mut()
            .ok_or("no healthy environment took the invocation")?;
        let env_pid = current.env.pid();
        let answer = match await_live(current, timeout) {
            Ok(body) => {
                let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
                    serde_json::json!(String::from_utf8_lossy(&body).into_owned())
                });
                serde_json::json!({"error": null, "body": body})
            }
            Err((kind, message)) => {
                if let Some(mut dead) = live.take() {
                    dead.env.kill();
                    let _ = dead.env.wait();
                }
                serde_json::json!({"error": kind, "message": message})
            }
        };
        let mut answer = answer;
        answer["cold"] = serde_json::json!(cold);
        answer["env_pid"] = serde_json::json!(env_pid);
        answer["retired"] = serde_json::json!(retired);
        answers.push(answer);
    }
    drop(live);

    let sibling_alive = matches!(sibling.env.try_wait(), Ok(None));
    let again = invoke_live(&mut sibling, Duration::from_secs(10));
    let report = serde_json::json!({
        "rootless": sandbox.rootless(),
        "cgroups": sandbox.hierarchy().is_some(),
        "sibling_first": serde_json::from_slice::<serde_json::Value>(&first).ok(),
        "sibling_pid": sibling_pid,
        "sibling_alive": sibling_alive,
        "sibling_answers": again.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|(t, m)| format!("{t}: {m}")),
        "answers": answers,
    });
    println!("{report}");
    Ok(())
}

fn invoke(state: &str, code: &str, rest: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Read;
    use std::os::fd::AsFd;

    let mut rest = rest.into_iter();
    let handler = rest.next().ok_or("invoke: no HANDLER")?;
    let mut timeout = Duration::from_secs(60);
    let mut memory_mb: u64 = 512;
    for arg in rest {
        if let Some(ms) = arg.strip_prefix("--timeout-ms=") {
            timeout = Duration::from_millis(ms.parse()?);
        } else if let Some(mb) = arg.strip_prefix("--memory-mb=") {
            memory_mb = mb.parse()?;
        } else {
            return Err(format!("invoke: unknown argument {arg}").into());
        }
    }
    let mut event = Vec::new();
    std::io::stdin().read_to_end(&mut event)?;
    let sandbox = Sandbox::new(SandboxConfig {
        state_dir: PathBuf::from(state),
        cgroups: CgroupPolicy::BestEffortWhenRootless,
        ..SandboxConfig::default()
    })?;
    let env = [
        ("_HANDLER".to_owned(), handler.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME".to_owned(), handler),
        (hearth_ipc::CHANNEL_FD_ENV.to_owned(), "3".to_owned()),
    ];
    let stderr = std::io::stderr();
    let mut channel = HostChannel::create()?;
    let environment = sandbox.spawn(&EnvSpec {
        code_dir: &PathBuf::from(code),
        command: "/var/task/bootstrap",
        args: &[],
        env: &env,
        channel: channel.guest_fd(),
        stdout: Some(stderr.as_fd()),
        stderr: Some(stderr.as_fd()),
        limits: Limits {
            memory_bytes: memory_mb << 20,
            // The scheduler's limit per environment.
            pids: 1024,
            cpu_weight: 100,
            cpu: None,
        },
        // The scheduler's default ephemeral storage.
        tmp_bytes: 512 << 20,
        cpus: None,
        loopback: false,
        runtime_dir: None,
        layers: &[],
        zygote: None,
    })?;
    channel.submit(&event, &hearth_ipc::RequestMeta::default())?;
    let mut live = Live {
        channel,
        env: environment,
    };
    // As `await_live`, keeping the answer's status: a handler's error is `Function.Error`.
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let (error, message) = loop {
        match live.channel.poll(&mut out) {
            Ok(Some(done)) => match done.status {
                hearth_ipc::ResponseStatus::Ok => break (None, String::new()),
                other => break (Some("Function.Error"), format!("{other:?}")),
            },
            Ok(None) => {}
            Err(e) => break (Some("Runtime.InvalidResponse"), e.to_string()),
        }
        if let hearth_sandbox::SetupState::Failed(failure) = live.env.poll_setup() {
            break (Some("Sandbox.Setup"), failure.to_string());
        }
        match live.env.try_wait() {
            Ok(Some(status)) => {
                break (
                    Some("Runtime.ExitError"),
                    format!("Runtime exited with error: {status}"),
                )
            }
            Ok(None) => {}
            Err(e) => break (Some("Sandbox.Wait"), e.to_string()),
        }
        if std::time::Instant::now() > deadline {
            break (Some("Sandbox.Timedout"), "timed out".to_owned());
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let body = String::from_utf8_lossy(&out).into_owned();
    live.env.kill();
    let _ = live.env.wait();
    let report = serde_json::json!({
        "rootless": sandbox.rootless(),
        "cgroups": sandbox.hierarchy().is_some(),
        "error": error,
        "message": message,
        "body": body,
    });
    println!("{report}");
    Ok(())
}
