//! The hearth scheduler: an [`Engine`] of per-core [`Shard`]s that keep warm execution
//! environments per function, admit invocations against account-wide and per-function
//! concurrency limits with lock-free counters, and invoke functions over shared-memory rings.
//!
//! ```text
//! Engine ── registry (lock-free snapshot) ── admission (atomic counters) ── sandbox
//!   ├─ shard 0 (thread on CPU 0): io_uring, warm pools, environments
//!   └─ shard 1 (thread on CPU 1): ...
//! ```
//!
//! The daemon (`hearth serve`, [`daemon`]) puts Lambda's REST API in front of the engine: an
//! HTTP/1.1 front door on every shard's io_uring, SigV4 verification, and a control thread
//! that keeps functions, versions and aliases in SQLite.
//!
//! Embedded API:
//!
//! ```no_run
//! use hearth_scheduler::{Engine, EngineConfig, FunctionConfig};
//! let engine = Engine::start(EngineConfig::default())?;
//! engine.create_function(FunctionConfig::new("echo", "/srv/functions/echo", "echo"))?;
//! let (outcome, payload) = engine.invoke("echo", b"hello")?;
//! assert!(outcome.error.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

// Under `cfg(loom)` only admission (and what it uses) is built: it is what the model checks,
// and the rest needs the real shared-memory channel, which the ipc crate builds without loom.
pub mod admission;
#[cfg(not(loom))]
mod api;
#[cfg(not(loom))]
pub mod auth;
#[cfg(not(loom))]
mod code;
mod config;
#[cfg(not(loom))]
mod cpu_latency;
#[cfg(not(loom))]
pub mod daemon;
#[cfg(not(loom))]
mod engine;
mod error;
#[cfg(not(loom))]
mod http;
#[cfg(not(loom))]
pub mod logs;
#[cfg(not(loom))]
mod registry;
#[cfg(not(loom))]
pub mod runtime_dir;
#[cfg(not(loom))]
mod shard;
#[cfg(not(loom))]
mod store;
mod sync;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
mod uring;
#[cfg(not(loom))]
mod zygotes;

#[cfg(not(loom))]
pub use api::Identity;
#[cfg(not(loom))]
pub use auth::AccessKey;
pub use config::{
    EngineConfig, EnvCpus, FunctionConfig, FunctionOutput, Launch, LogConfig,
    DEFAULT_ACCOUNT_CONCURRENCY, MIN_UNRESERVED_CONCURRENCY, RESERVED_ENV,
};
#[cfg(not(loom))]
pub use cpu_latency::{cpuidle_driver, CpuLatencyRequest};
#[cfg(not(loom))]
pub use engine::{Engine, EngineError};
pub use error::{FunctionError, InvokeError, RegistryError, Throttle, ThrottleReason};
#[cfg(not(loom))]
pub use hearth_ipc::format_request_id;
/// Whether a cgroup hierarchy is mounted with `favordynmods` (see `hearth_sandbox::cgroup`).
pub use hearth_sandbox::cgroup::machine_favordynmods;
pub use hearth_sandbox::{ExitStatus, LandlockMode, SandboxConfig};
#[cfg(not(loom))]
pub use registry::{Alias, Function, LATEST};
#[cfg(not(loom))]
pub use shard::{Completion, Invocation, Outcome, Shard, ShardStats, Start};
