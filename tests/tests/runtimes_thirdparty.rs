//! Tier 2 (root): runtimes that others wrote, run unmodified on Lambda's Runtime API through the
//! engine, as `provided` functions whose `bootstrap` is the runtime:
//!
//! - AWS's Python Runtime Interface Client (`awslambdaric` from PyPI), installed with pip into
//!   the function's code as its README says, started by the custom-runtime `bootstrap` that
//!   AWS documents (`python3 -m awslambdaric "$_HANDLER"`);
//! - the Rust `lambda_runtime` crate's README example (`tests/fixtures/lambda-rust-hello`),
//!   built from crates.io with the versions its `Cargo.lock` pins.
//!
//! Each test asserts what a Lambda user checks: the bytes returned, the context the handler
//! sees, the error document and its type, the invocation's log, and that the environment is
//! reused warm. A missing prerequisite (pip, the network on the first run, a failed build) fails
//! the test with what to install or fix; nothing is skipped.
//!
//! Downloads and builds are kept under the workspace's `target/` (`thirdparty-cache/` for the
//! wheels, `lambda-rust-hello/` for the Rust build), so only the first run needs the network.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use hearth_scheduler::{FunctionError, Start};
#[path = "common/runtime.rs"]
mod runtime;

use runtime::{Answer, RuntimeFixture as Fixture};
use serde_json::json;

fn fixture() -> Fixture {
    Fixture::start()
}

/// Asserts the invocation succeeded, showing the error document and log if it did not.
fn ok(answer: Answer) -> Answer {
    assert_eq!(
        answer.outcome.error,
        None,
        "payload: {}\nlog:\n{}",
        answer.text(),
        answer.log
    );
    answer
}

/// Asserts the log tail is one whole invocation of Lambda's shape: `START`, what the function
/// printed, `END`, `REPORT`.
fn assert_framed_log(answer: &Answer) {
    let id = answer.request_id();
    let log = &answer.log;
    assert!(
        log.starts_with(&format!("START RequestId: {id} Version: $LATEST\n")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "END RequestId: {id}\nREPORT RequestId: {id}\tDuration: "
        )),
        "{log}"
    );
    let cold = answer.outcome.start == Start::Cold;
    assert_eq!(log.contains("\tInit Duration: "), cold, "{log}");
}

/// A `provided` function on the Runtime API: `/var/task/bootstrap` from `dir`.
fn create(f: &Fixture, name: &str, dir: &Path, handler: &str) {
    f.create(name, dir, |c| c.handler = handler.into());
}

fn invoke(f: &Fixture, name: &str, payload: &[u8]) -> Answer {
    f.invoke(name, payload).expect("invoke")
}

/// The workspace's target directory, where downloads and builds are cached between runs.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match option_env!("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// Makes `dir` (a code directory) readable by the environment's unprivileged user.
fn open_up(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `command`, failing the test with its output and `hint` unless it succeeds.
fn run(command: &mut Command, hint: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}\n{hint}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}\n{hint}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// awslambdaric (PyPI)
// ---------------------------------------------------------------------------------------------

/// The Python runtime interface client and its dependencies, pinned. The wheel is the
/// manylinux one for CPython 3.11, Debian 12's `/usr/bin/python3`.
const RIC_REQUIREMENTS: &[&str] = &[
    "awslambdaric==4.2.2",
    "simplejson==4.3.0",
    "snapshot-restore-py==1.0.0",
];

const PYTHON: &str = "/usr/bin/python3";

/// The custom-runtime `bootstrap` AWS documents for the Python RIC: the interpreter runs the
/// client as a module with the handler from the function's configuration; the packages pip
/// installed into the code are found on `PYTHONPATH`.
const RIC_BOOTSTRAP: &str = r#"#!/bin/sh
export PYTHONPATH="$LAMBDA_TASK_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 -m awslambdaric "$_HANDLER"
"#;

const RIC_APP: &str = r#"import os, sys

import awslambdaric


def hello(event, context):
    # The RIC README's example handler.
    return "Hello World!"


def handler(event, context):
    print("awslambdaric handling", event.get("name"), "for", context.function_name)
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 3000,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "ric": awslambdaric.__file__,
        "python": sys.executable,
        "version": list(sys.version_info[:2]),
        "pid": os.getpid(),
    }


def fail(event, context):
    raise ValueError("bad input: %s" % event["x"])
"#;

/// A code directory holding `app.py`, the bootstrap and awslambdaric installed by pip. The
/// wheels are downloaded once into `target/thirdparty-cache/` and installed from there.
fn ric_code() -> tempfile::TempDir {
    let pip_hint = "the awslambdaric tests need pip for /usr/bin/python3: install python3-pip \
                    (apt-get install python3-pip)";
    let pip = Command::new(PYTHON)
        .args(["-m", "pip", "--version"])
        .output();
    assert!(
        matches!(&pip, Ok(o) if o.status.success()),
        "{pip_hint}: `{PYTHON} -m pip --version` gave {pip:?}"
    );

    let name = RIC_REQUIREMENTS.join("+").replace("==", "-");
    let cache = target_dir().join("thirdparty-cache").join(&name);
    // The tests of this file run in parallel: one of them downloads.
    static DOWNLOAD: Mutex<()> = Mutex::new(());
    let downloading = DOWNLOAD.lock().unwrap_or_else(|e| e.into_inner());
    if !cache.join(".complete").exists() {
        let started = Instant::now();
        let partial = cache.with_file_name(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).unwrap();
        run(
            Command::new(PYTHON)
                .args(["-m", "pip", "download", "--disable-pip-version-check", "-q"])
                .args(["--only-binary", ":all:", "-d"])
                .arg(&partial)
                .args(RIC_REQUIREMENTS),
            "pip could not download awslambdaric from PyPI (the first run needs the network)",
        );
        std::fs::write(partial.join(".complete"), "").unwrap();
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::rename(&partial, &cache).unwrap();
        eprintln!(
            "awslambdaric: downloaded {RIC_REQUIREMENTS:?} in {:.1?}",
            started.elapsed()
        );
    }
    drop(downloading);

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    run(
        Command::new(PYTHON)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(["--no-index", "--find-links"])
            .arg(&cache)
            .arg("--target")
            .arg(dir.path())
            .args(RIC_REQUIREMENTS)
            // pip warns about running as root; the target is a scratch directory.
            .env("PIP_ROOT_USER_ACTION", "ignore"),
        pip_hint,
    );
    eprintln!(
        "awslambdaric: pip install --target took {:.1?}",
        started.elapsed()
    );
    for (path, content, mode) in [
        ("bootstrap", RIC_BOOTSTRAP, 0o755),
        ("app.py", RIC_APP, 0o644),
    ] {
        let path = dir.path().join(path);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    open_up(dir.path());
    dir
}

#[test]
fn awslambdaric_returns_the_handlers_value_with_lambdas_context() {
    let f = fixture();
    let code = ric_code();

    // The README's handler: its return value, serialised to JSON, is the response.
    create(&f, "ric-hello", code.path(), "app.hello");
    let hello = ok(invoke(&f, "ric-hello", b"{}"));
    assert_eq!(hello.text(), r#""Hello World!""#);
    assert_eq!(hello.outcome.start, Start::Cold);
    assert_framed_log(&hello);

    create(&f, "ric", code.path(), "app.handler");
    let cold = ok(invoke(&f, "ric", br#"{"name": "hearth", "n": [1, 2]}"#));
    assert_eq!(cold.outcome.start, Start::Cold);
    let body = cold.json();
    assert_eq!(body["event"], json!({"name": "hearth", "n": [1, 2]}));
    assert_eq!(
        body["request_id"].as_str(),
        Some(cold.request_id().as_str())
    );
    assert_eq!(body["function_name"], "ric");
    assert_eq!(body["function_version"], "$LATEST");
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:ric"
    );
    assert_eq!(body["memory"], "128");
    assert_eq!(body["remaining_ok"], true);
    assert_eq!(body["log_group"], "/aws/lambda/ric");
    assert!(
        body["log_stream"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    // The client pip installed into the code, on Debian's interpreter.
    assert_eq!(body["ric"], "/var/task/awslambdaric/__init__.py");
    assert_eq!(body["python"], PYTHON);
    assert_eq!(body["version"], json!([3, 11]));
    assert_framed_log(&cold);
    assert!(
        cold.log
            .contains("\nawslambdaric handling hearth for ric\n"),
        "{}",
        cold.log
    );

    // The same environment, the same process, the next event.
    let warm = ok(invoke(&f, "ric", br#"{"name": "again"}"#));
    assert_eq!(warm.outcome.start, Start::Warm);
    assert_eq!(warm.outcome.env_pid, cold.outcome.env_pid);
    let again = warm.json();
    assert_eq!(again["event"], json!({"name": "again"}));
    assert_eq!(again["pid"], body["pid"]);
    assert_ne!(again["request_id"], body["request_id"]);
    assert_eq!(
        again["request_id"].as_str(),
        Some(warm.request_id().as_str())
    );
    assert_framed_log(&warm);
    assert!(
        warm.log.contains("\nawslambdaric handling again for ric\n"),
        "{}",
        warm.log
    );
}

#[test]
fn awslambdaric_exceptions_come_back_as_lambdas_error_document() {
    let f = fixture();
    let code = ric_code();
    create(&f, "ric-fail", code.path(), "app.fail");
    let answer = invoke(&f, "ric-fail", br#"{"x": 42}"#);
    assert_eq!(
        answer.outcome.error,
        Some(FunctionError::Handled),
        "{}",
        answer.text()
    );
    let doc = answer.json();
    assert_eq!(doc["errorType"], "ValueError", "{doc}");
    assert_eq!(doc["errorMessage"], "bad input: 42", "{doc}");
    assert_eq!(
        doc["requestId"].as_str(),
        Some(answer.request_id().as_str())
    );
    let trace = doc["stackTrace"].as_array().expect("stackTrace");
    assert!(
        trace.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("/var/task/app.py") && l.contains("in fail"))),
        "{doc}"
    );
    // The client logs the error to stdout, its lines joined by `\r` as on Lambda.
    assert_framed_log(&answer);
    assert!(
        answer
            .log
            .contains("[ERROR] ValueError: bad input: 42\rTraceback (most recent call last):"),
        "{:?}",
        answer.log
    );

    // A handled error leaves the environment warm.
    let again = invoke(&f, "ric-fail", br#"{"x": "y"}"#);
    assert_eq!(again.outcome.error, Some(FunctionError::Handled));
    assert_eq!(again.outcome.start, Start::Warm);
    assert_eq!(again.json()["errorMessage"], "bad input: y");
}

#[test]
fn awslambdaric_reports_a_missing_handler_module_as_an_init_error() {
    let f = fixture();
    let code = ric_code();
    create(&f, "ric-missing", code.path(), "missing.handler");
    let expected = json!({
        "errorMessage": "Unable to import module 'missing': No module named 'missing'",
        "errorType": "Runtime.ImportModuleError",
        "requestId": "",
        "stackTrace": [],
    });
    let first = invoke(&f, "ric-missing", b"{}");
    assert!(first.outcome.error.is_some(), "{}", first.text());
    assert_eq!(first.outcome.start, Start::Cold);
    assert_eq!(first.json(), expected);
    assert_framed_log(&first);
    assert!(
        first.log.contains(
            "[ERROR] Runtime.ImportModuleError: Unable to import module 'missing': No module named 'missing'"
        ),
        "{:?}",
        first.log
    );
    // The client exits after `/init/error`: the next invocation, right away, gets a new
    // environment (started for it, or ahead of it by the adaptive pool) and fails the same way,
    // as on Lambda.
    let second = invoke(&f, "ric-missing", b"{}");
    assert!(second.outcome.error.is_some(), "{}", second.text());
    assert!(
        matches!(second.outcome.start, Start::Cold | Start::Pool),
        "{:?}",
        second.outcome
    );
    assert_ne!(second.outcome.env_pid, first.outcome.env_pid);
    assert_eq!(second.json(), expected);
}

// ---------------------------------------------------------------------------------------------
// The Rust lambda_runtime crate
// ---------------------------------------------------------------------------------------------

/// Builds `tests/fixtures/lambda-rust-hello` (release, `--locked`) into
/// `target/lambda-rust-hello` unless its binary is newer than every input, and returns the
/// binary.
fn lambda_rust_hello() -> PathBuf {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lambda-rust-hello");
    let target = target_dir().join("lambda-rust-hello");
    let binary = target.join("release/lambda-rust-hello");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let inputs = ["Cargo.toml", "Cargo.lock", "src/main.rs"].map(|p| project.join(p));
    let fresh = modified(&binary).is_some_and(|built| {
        inputs
            .iter()
            .all(|p| modified(p).is_some_and(|input| input <= built))
    });
    if !fresh {
        let started = Instant::now();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(
            Command::new(cargo)
                .args(["build", "--release", "--locked", "--manifest-path"])
                .arg(project.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target),
            "building the lambda_runtime example failed (the first build needs crates.io)",
        );
        eprintln!(
            "lambda-rust-hello: cargo build --release took {:.1?}",
            started.elapsed()
        );
    }
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

#[test]
fn rust_lambda_runtime_example_answers_and_stays_warm() {
    let f = fixture();
    let code = tempfile::tempdir().unwrap();
    std::fs::copy(lambda_rust_hello(), code.path().join("bootstrap")).unwrap();
    open_up(code.path());
    create(&f, "rust-hello", code.path(), "bootstrap");

    let cold = ok(invoke(&f, "rust-hello", br#"{"firstName": "hearth"}"#));
    assert_eq!(cold.outcome.start, Start::Cold);
    assert_eq!(cold.text(), r#"{"message":"Hello, hearth!"}"#);
    assert_framed_log(&cold);

    let warm = ok(invoke(&f, "rust-hello", b"{}"));
    assert_eq!(warm.outcome.start, Start::Warm);
    assert_eq!(warm.outcome.env_pid, cold.outcome.env_pid);
    assert_eq!(warm.text(), r#"{"message":"Hello, world!"}"#);
    assert_framed_log(&warm);

    // The example's only error path: an event its `Value` cannot hold. Valid JSON nested past
    // serde_json's recursion limit (128) fails deserialisation, and the runtime posts the
    // error to `/invocation/{id}/error` without calling the handler.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let error = invoke(&f, "rust-hello", deep.as_bytes());
    assert_eq!(
        error.outcome.error,
        Some(FunctionError::Handled),
        "{}",
        error.text()
    );
    assert_eq!(error.outcome.start, Start::Warm);
    let doc = error.json();
    // The type is the runtime's own `type_name_of_val` of a reference, `&` included.
    assert_eq!(
        doc["errorType"], "&lambda_runtime::deserializer::DeserializeError",
        "{doc}"
    );
    let message = doc["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "failed to deserialize the incoming data into the function's payload type: "
        ) && message.contains("recursion limit exceeded"),
        "{doc}"
    );
    assert_framed_log(&error);

    // And the runtime goes on serving the same environment.
    let after = ok(invoke(&f, "rust-hello", br#"{"firstName": "again"}"#));
    assert_eq!(after.outcome.start, Start::Warm);
    assert_eq!(after.outcome.env_pid, cold.outcome.env_pid);
    assert_eq!(after.text(), r#"{"message":"Hello, again!"}"#);
}
