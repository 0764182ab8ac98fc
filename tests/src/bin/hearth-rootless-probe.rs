//! Starts one environment with the sample function's `probe` handler and prints its report.
//! The rootless test runs this as an unprivileged user: hearth then puts environments in user
//! namespaces.
//!
//! Usage: `hearth-rootless-probe STATE_DIR CODE_DIR`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hearth_ipc::{HostChannel, RequestMeta};
use hearth_sandbox::{CgroupPolicy, EnvSpec, Limits, Sandbox, SandboxConfig, SetupState};

fn main() {
    if let Err(e) = run() {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("hearth-rootless-probe: {message}");
        #[allow(clippy::exit)] // a failed probe must say so in its status
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(state), Some(code)) = (args.next(), args.next()) else {
        return Err("usage: hearth-rootless-probe STATE_DIR CODE_DIR".into());
    };
    let sandbox = Sandbox::new(SandboxConfig {
        state_dir: PathBuf::from(state),
        cgroups: CgroupPolicy::BestEffortWhenRootless,
        ..SandboxConfig::default()
    })?;
    let mut channel = HostChannel::create()?;
    let env = [
        ("_HANDLER".to_owned(), "probe".to_owned()),
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
        },
        tmp_bytes: 16 << 20,
        cpus: None,
    })?;
    channel.submit(b"{}", &RequestMeta::default())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        if channel.poll(&mut out)?.is_some() {
            break;
        }
        if let SetupState::Failed(failure) = environment.poll_setup() {
            return Err(failure.into());
        }
        if let Some(status) = environment.try_wait()? {
            return Err(format!("the environment exited: {status}").into());
        }
        if Instant::now() > deadline {
            return Err("no answer within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut report: serde_json::Value = serde_json::from_slice(&out)?;
    report["rootless"] = serde_json::json!(sandbox.rootless());
    report["cgroups"] = serde_json::json!(sandbox.hierarchy().is_some());
    println!("{report}");
    Ok(())
}
