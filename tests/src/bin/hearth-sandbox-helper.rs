//! A stand-alone process that uses `hearth-sandbox` directly, for tests that need hearth in a
//! process of its own (to run it as another user, or to kill it).
//!
//! ```text
//! hearth-sandbox-helper probe STATE_DIR CODE_DIR   start one environment running the sample
//!                                                  function's `probe`; print its JSON report
//! hearth-sandbox-helper hold STATE_DIR CODE_DIR    start one echo environment, print its pid
//!                                                  once it has answered, then wait forever
//! ```

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
        },
        tmp_bytes: 16 << 20,
        cpus: None,
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
