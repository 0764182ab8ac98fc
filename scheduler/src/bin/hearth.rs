//! `hearth`: the daemon's command line.
//!
//! (Under `cfg(loom)`, which builds only the admission model, this binary is empty.)
#![cfg_attr(loom, allow(unused))]

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
use std::path::PathBuf;
#[cfg(not(loom))]
use std::process::ExitCode;

#[cfg(not(loom))]
use std::time::Duration;

#[cfg(not(loom))]
use hearth_scheduler::daemon::{
    default_data_dir, serve, FileConfig, Listen, ServeConfig, Timeouts,
};
#[cfg(not(loom))]
use hearth_scheduler::{AccessKey, EngineConfig, Identity};

#[cfg(not(loom))]
const USAGE: &str = "\
usage: hearth serve [--listen ADDR]... [--data-dir DIR] [--config FILE] [--insecure-no-auth]
       hearth logs FUNCTION [--follow] [--data-dir DIR]

  --listen ADDR        127.0.0.1:9001 (default), any IP:PORT, or unix:PATH; repeatable
  --data-dir DIR       state directory (default: $XDG_DATA_HOME/hearth or ~/.local/share/hearth)
  --config FILE        JSON: listen, data_dir, access_keys [{id, secret}], region, account_id,
                       account_concurrency, shards, env_cpus, adaptive_pool,
                       idle_cpu_poll_ms, head_timeout_ms, body_timeout_ms, idle_timeout_ms
  --insecure-no-auth   accept unsigned requests (local experiments only)
  --follow, -f         (logs) keep printing what the function logs

`hearth logs` prints a function's stored log (START/END/REPORT per invocation, what the
function printed in between) from DIR/logs/FUNCTION.

Requests are verified with AWS Signature V4. Without access_keys in the config, a key pair is
generated at first start, stored in DIR/credentials and printed once.
Logging: HEARTH_LOG (e.g. info, debug).";

#[cfg(not(loom))]
struct Args {
    /// `hearth logs FUNCTION`: the function.
    logs: Option<String>,
    follow: bool,
    listen: Vec<String>,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    insecure: bool,
}

#[cfg(not(loom))]
fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let logs = match args.next().as_deref() {
        Some("serve") => None,
        Some("logs") => Some(
            args.next()
                .filter(|a| !a.starts_with('-'))
                .ok_or("logs needs a function name")?,
        ),
        Some("-h" | "--help" | "help") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown command '{other}'")),
    };
    let mut parsed = Args {
        logs,
        follow: false,
        listen: Vec::new(),
        data_dir: None,
        config: None,
        insecure: false,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => parsed.listen.push(value("--listen")?),
            "--data-dir" => parsed.data_dir = Some(value("--data-dir")?.into()),
            "--config" => parsed.config = Some(value("--config")?.into()),
            "--insecure-no-auth" => parsed.insecure = true,
            "--follow" | "-f" if parsed.logs.is_some() => parsed.follow = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    Ok(parsed)
}

#[cfg(not(loom))]
fn config(args: Args) -> Result<ServeConfig, String> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let listen = if args.listen.is_empty() {
        file.listen.unwrap_or_else(|| vec!["127.0.0.1:9001".into()])
    } else {
        args.listen
    };
    let listen = listen
        .iter()
        .map(|l| l.parse::<Listen>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut identity = Identity::default();
    if let Some(region) = file.region {
        identity.region = region;
    }
    if let Some(account) = file.account_id {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("account_id '{account}' must be twelve digits"));
        }
        identity.account = account;
    }
    let mut engine = EngineConfig::default();
    if let Some(n) = file.account_concurrency {
        engine.account_concurrency = n;
    }
    if let Some(n) = file.shards {
        engine.shards = n.max(1);
    }
    if let Some(placement) = file.env_cpus {
        engine.env_cpus = placement;
    }
    if let Some(n) = file.adaptive_pool {
        engine.adaptive_pool = n;
    }
    let ms = Duration::from_millis;
    if let Some(t) = file.idle_cpu_poll_ms {
        engine.idle_cpu_poll = ms(t);
    }
    let mut timeouts = Timeouts::default();
    if let Some(t) = file.head_timeout_ms {
        timeouts.head = ms(t.max(1));
    }
    if let Some(t) = file.body_timeout_ms {
        timeouts.body = ms(t.max(1));
    }
    if let Some(t) = file.idle_timeout_ms {
        timeouts.idle = ms(t.max(1));
    }
    Ok(ServeConfig {
        listen,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir),
        access_keys: file
            .access_keys
            .unwrap_or_default()
            .into_iter()
            .map(|k| AccessKey {
                id: k.id,
                secret: k.secret,
            })
            .collect(),
        auth: !args.insecure,
        timeouts,
        identity,
        engine,
    })
}

#[cfg(not(loom))]
fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hearth: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(function) = &args.logs {
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let dir = hearth_scheduler::daemon::logs_dir(&data_dir);
        let mut out = std::io::stdout().lock();
        return match hearth_scheduler::logs::print(&dir, function, args.follow, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hearth: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("hearth: {message}");
            ExitCode::FAILURE
        }
    }
}
