//! The fixture of the Runtime API suites (`runtimes.rs`, `runtimes_thirdparty.rs`, which include
//! this file as a module; it is not in the `hearth-tests` library so that the library, and the
//! sample function built from it, need not depend on the scheduler): an engine with one shard
//! and logs kept, functions on `Launch::RuntimeApi`, and invocations that return the payload,
//! the outcome and the tail of the invocation's log.
// Each suite uses part of it.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hearth_scheduler::{
    format_request_id, Engine, EngineConfig, FunctionConfig, InvokeError, Launch, LogConfig,
    Outcome, SandboxConfig,
};
use serde_json::Value;

/// An engine for Runtime API functions, with its logs kept in a temporary directory.
#[derive(Debug)]
pub struct RuntimeFixture {
    /// The engine (one shard).
    pub engine: Engine,
    /// Where function logs are stored.
    pub logs: tempfile::TempDir,
    _state: tempfile::TempDir,
}

/// What one invocation returned, with the tail of its log (`START` … `REPORT`).
#[derive(Debug)]
pub struct Answer {
    /// How it went.
    pub outcome: Outcome,
    /// The response or error document.
    pub payload: Vec<u8>,
    /// The last 4 KB of the invocation's log.
    pub log: String,
}

impl Answer {
    /// The payload as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload as JSON (panics with the payload if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The invocation's request id.
    pub fn request_id(&self) -> String {
        format_request_id(&self.outcome.request_id)
    }
}

/// A code directory holding `files` (path, contents, executable), readable by the function.
pub fn code(files: &[(&str, &str, bool)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, content, exec) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

impl RuntimeFixture {
    /// Starts the engine (root needed: it fails the test otherwise).
    pub fn start() -> Self {
        hearth_tests::require_root();
        let state = tempfile::tempdir().expect("tempdir");
        let logs = tempfile::tempdir().expect("tempdir");
        let config = EngineConfig {
            shards: 1,
            prepared_cgroups: 0,
            sandbox: SandboxConfig {
                state_dir: state.path().to_owned(),
                ..SandboxConfig::default()
            },
            logs: Some(LogConfig::new(logs.path())),
            ..EngineConfig::default()
        };
        Self {
            engine: Engine::start(config).expect("engine"),
            logs,
            _state: state,
        }
    }

    /// Creates a Runtime API function running `/var/task/bootstrap` from `dir` (`tune` may
    /// change that).
    pub fn create(&self, name: &str, dir: &Path, tune: impl FnOnce(&mut FunctionConfig)) {
        let mut config = FunctionConfig::new(name, dir, "");
        config.launch = Launch::RuntimeApi;
        tune(&mut config);
        self.engine
            .create_function(config)
            .expect("create function");
    }

    /// Invokes `name` with `payload` on shard 0, asking for the log's tail.
    pub fn invoke(&self, name: &str, payload: &[u8]) -> Result<Answer, InvokeError> {
        let name = name.to_owned();
        let payload = payload.to_vec();
        self.engine
            .on_shard(0, move |shard| {
                let function = shard.function(&name)?;
                shard.submit_with_tail(&function, &payload, 7)?;
                let mut done = Vec::new();
                while done.is_empty() {
                    shard.poll(&mut done, Some(Duration::from_secs(30)));
                }
                let completion = done.pop().expect("a completion");
                let outcome = completion.result?;
                Ok(Answer {
                    outcome,
                    payload: completion.payload,
                    log: String::from_utf8_lossy(&completion.log_tail.unwrap_or_default())
                        .into_owned(),
                })
            })
            .expect("shard")
    }

    /// The function's stored log once it contains `contains` (the shard flushes every 100 ms).
    pub fn stored_log(&self, name: &str, contains: &str) -> String {
        let path = hearth_scheduler::logs::current_file(self.logs.path(), name);
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if text.contains(contains) {
                    return text;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} never contained {contains:?}: {:?}",
            path.display(),
            std::fs::read_to_string(&path)
        );
    }
}
