//! The Runtime API paths, on an engine of their own (one shard, like the native scenarios):
//! warm and cold invocations of a Python handler on the managed runtime, of the smallest custom
//! runtime (`hearth-rapi-echo`), and of AWS's Python Runtime Interface Client (awslambdaric,
//! installed from PyPI at set-up). Each reports its p50 beside `warm.native`'s.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hearth_scheduler::{
    Engine, EngineConfig, Function, FunctionConfig, FunctionOutput, Launch, Shard, Start,
};
use serde_json::{json, Value};

use crate::report::Latencies;
use crate::scenarios;

const EVENT: &[u8] = br#"{"hello":"hearth"}"#;
const PYTHON: &str = "/usr/bin/python3";
/// awslambdaric and what pip resolves it to, pinned.
const RIC: &[&str] = &[
    "awslambdaric==4.2.2",
    "simplejson==4.3.0",
    "snapshot-restore-py==1.0.0",
];

pub struct RuntimeBench {
    engine: Engine,
    _code: Vec<tempfile::TempDir>,
}

fn code_dir(files: &[(&str, &[u8], u32)]) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for (name, content, mode) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn open_up(dir: &Path) -> Result<()> {
    let status = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("chmod -R a+rX {} failed", dir.display());
    }
    Ok(())
}

/// awslambdaric and an echo handler, installed with Debian's pip into a code directory.
fn ric_code() -> Result<tempfile::TempDir> {
    let dir = code_dir(&[
        (
            "bootstrap",
            b"#!/bin/sh\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT\"\nexec /usr/bin/python3 -m awslambdaric \"$_HANDLER\"\n",
            0o755,
        ),
        ("app.py", b"def handler(event, context):\n    return event\n", 0o644),
    ])?;
    let out = Command::new(PYTHON)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
        .args(["--only-binary", ":all:", "--target"])
        .arg(dir.path())
        .args(RIC)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .output()
        .context("running pip (install python3-pip)")?;
    if !out.status.success() {
        bail!(
            "pip install {RIC:?} failed (PyPI must be reachable; python3-pip installed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    open_up(dir.path())?;
    Ok(dir)
}

impl RuntimeBench {
    pub fn start() -> Result<Self> {
        let rapi = std::env::current_exe()?
            .parent()
            .map(|d| d.join("hearth-rapi-echo"))
            .filter(|p| p.exists())
            .context("hearth-rapi-echo is missing: run `make bench`")?;
        let engine = Engine::start(EngineConfig {
            shards: 1,
            function_output: FunctionOutput::Discard,
            prepared_cgroups: 8,
            ..EngineConfig::default()
        })
        .context("starting the engine (needs root)")?;
        let python = code_dir(&[(
            "app.py",
            b"def handler(event, context):\n    return event\n",
            0o644,
        )])?;
        let custom = code_dir(&[("bootstrap", &std::fs::read(&rapi)?, 0o755)])?;
        // Handlers whose import builds an in-memory table of HEAP_MB MiB (every page written):
        // the zygote's memory, which each fork has to map again.
        let heavy = code_dir(&[(
            "heavy.py",
            b"import os
MB = int(os.environ.get('HEAP_MB', '0'))
TABLE = bytearray(MB << 20)
for i in range(0, len(TABLE), 4096):
    TABLE[i] = 1

def handler(event, context):
    return event
",
            0o644,
        )])?;
        let ric = ric_code()?;
        let function = |name: &str, dir: &Path, handler: &str, command: &str, args: &[&str]| {
            let mut config = FunctionConfig::new(name, dir, handler);
            config.launch = Launch::RuntimeApi;
            config.command = command.into();
            config.args = args.iter().map(|a| (*a).to_owned()).collect();
            config
        };
        let py_args = ["/var/runtime/python/bootstrap.py"];
        engine.create_function(function(
            "py",
            python.path(),
            "app.handler",
            PYTHON,
            &py_args,
        ))?;
        engine.create_function(function(
            "py-cold",
            python.path(),
            "app.handler",
            PYTHON,
            &py_args,
        ))?;
        // Forked from a zygote: a managed runtime name makes them zygote-capable.
        for (name, heap_mb) in ZYGOTE_HEAPS {
            let mut config = function(name, heavy.path(), "heavy.handler", PYTHON, &py_args);
            config.runtime = "python3.11".into();
            config.zygote = true;
            config.memory_mb = 1024;
            config
                .environment
                .push(("HEAP_MB".into(), heap_mb.to_string()));
            engine.create_function(config)?;
        }
        engine.create_function(function(
            "rapi",
            custom.path(),
            "",
            "/var/task/bootstrap",
            &[],
        ))?;
        engine.create_function(function(
            "rapi-cold",
            custom.path(),
            "",
            "/var/task/bootstrap",
            &[],
        ))?;
        engine.create_function(function(
            "ric",
            ric.path(),
            "app.handler",
            "/var/task/bootstrap",
            &[],
        ))?;
        Ok(Self {
            engine,
            _code: vec![python, custom, ric, heavy],
        })
    }

    pub fn shutdown(self) {
        self.engine.shutdown();
    }
}

fn function(shard: &Shard, name: &str) -> Result<Arc<Function>> {
    Ok(shard.function(name)?)
}

/// Warm invocations of `name`, one at a time.
pub fn warm(
    bench: &RuntimeBench,
    name: &'static str,
    n: u64,
) -> Result<(Latencies, Duration, Value)> {
    bench.engine.on_shard(0, move |shard| {
        let f = function(shard, name)?;
        let (lat, elapsed, out) = scenarios::warm_loop(shard, &f, EVENT, n, n / 10 + 50)?;
        if !echoed(&out) {
            bail!("{name} answered {}", String::from_utf8_lossy(&out));
        }
        Ok((lat, elapsed, json!({ "function": name })))
    })?
}

/// Cold starts of `name`: a new environment each time (hearth-init, the runtime's start and
/// Init, then the invocation).
pub fn cold(
    bench: &RuntimeBench,
    name: &'static str,
    n: u64,
) -> Result<(Latencies, Duration, Value)> {
    bench.engine.on_shard(0, move |shard| {
        let f = function(shard, name)?;
        let (lat, busy) = scenarios::cold_loop(shard, &f, (EVENT, Start::Cold), n, echoed)?;
        Ok((lat, busy, json!({ "function": name, "includes": "own network namespace + hearth-init + runtime start + Init" })))
    })?
}

/// The Python functions forked from a zygote, with the MiB their import writes.
pub const ZYGOTE_HEAPS: [(&str, u32); 3] = [
    ("py-zygote", 0),
    ("py-zygote-64", 64),
    ("py-zygote-256", 256),
];

/// Cold starts of Python function `name` forked from its zygote (waits up to 20 s for the
/// zygote its first cold start asks for).
pub fn cold_zygote(
    bench: &RuntimeBench,
    name: &'static str,
    heap_mb: u32,
    n: u64,
) -> Result<(Latencies, Duration, Value)> {
    bench.engine.on_shard(0, move |shard| {
        let f = function(shard, name)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        loop {
            shard.housekeeping();
            let outcome = shard.invoke_into(&f, EVENT, &mut out)?;
            shard.retire_idle(&f);
            if outcome.start == Start::Zygote {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("the zygote of {name} was not ready within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (lat, busy) = scenarios::cold_loop(shard, &f, (EVENT, Start::Zygote), n, echoed)?;
        Ok((lat, busy, json!({
            "function": name,
            "zygote_heap_mb": heap_mb,
            "includes": "fork of the initialised interpreter into new namespaces, cgroup, /tmp, /proc, landlock, seccomp; then the invocation over the channel",
        })))
    })?
}

/// The runtimes answer the event as JSON (the Python ones re-serialise it).
fn echoed(out: &[u8]) -> bool {
    serde_json::from_slice::<Value>(out).is_ok_and(|v| v == json!({"hello": "hearth"}))
}
