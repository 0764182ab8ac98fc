//! Configuration of the engine and of functions, with Lambda's validation rules.

use std::path::PathBuf;
use std::time::Duration;

use hearth_sandbox::SandboxConfig;

use crate::error::RegistryError;

/// Lambda's default account concurrency limit.
pub const DEFAULT_ACCOUNT_CONCURRENCY: u32 = 1000;
/// Reserved concurrency can never leave the account with less unreserved concurrency than this.
pub const MIN_UNRESERVED_CONCURRENCY: u32 = 100;

/// Where environments' stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FunctionOutput {
    /// Captured per environment and framed per invocation (see [`crate::logs`]): stored when
    /// [`EngineConfig::logs`] is set, returned by `LogType=Tail` either way.
    #[default]
    Capture,
    /// The daemon's stderr, unframed.
    Inherit,
    /// Discarded.
    Discard,
}

/// Which CPUs an environment may run on (in the daemon's `--config` file: `"adaptive"`,
/// `"same_as_shard"`, `"other_than_shard"` or `"any"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvCpus {
    /// Every CPU but the one its shard is pinned to (when there is more than one): the shard and
    /// the environment each spin on their own core instead of fighting over one.
    OtherThanShard,
    /// Any CPU.
    Any,
    /// Only the shard's own CPU (its zygotes too), never moved: a function that spins, forks or
    /// fills its memory then slows the shard it was invoked on rather than another. A shard
    /// and its environments take turns on one CPU (the shard sleeps while they run instead of
    /// spinning), which makes sparse invocations faster (no cross-CPU wake-ups) and
    /// back-to-back invocations and cold starts slower (no spinning, no overlap of the shard's
    /// work with the child's); the kernel no longer spreads a busy shard's environments over
    /// idle CPUs. Where the cgroup hierarchy has the cpuset controller, each environment's
    /// cgroup also confines it to that CPU, so a function cannot widen its own affinity
    /// (`sched_setaffinity` is allowed, as on Lambda); without it this is placement only, with a
    /// warning, and what bounds such a function is its cgroup's CPU weight. Needs pinned shards ([`EngineConfig::pin_shards`]; otherwise
    /// environments run on any CPU, with a warning); shards that outnumber the CPUs share them.
    SameAsShard,
    /// By load: an environment that serves while nothing else on its shard is in flight runs
    /// on the other CPUs (shard and environment each spin on their own core: the lowest
    /// latency); environments started or picked while others are in flight stay on the shard's
    /// own CPU, where waking them and being woken by them never crosses CPUs (no
    /// inter-processor interrupt) and the shard sleeps instead of spinning. An environment
    /// moves to the other CPUs when it serves alone (no overlap on its shard for 20 ms), or when
    /// an invocation keeps it busy for more than 50 ms. (Moving sets the affinity of the
    /// function's first thread; threads it already started stay where they are.)
    #[default]
    Adaptive,
}

/// Where and how much of the functions' logs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Directory holding one directory per function.
    pub dir: PathBuf,
    /// A function's `current.log` is rotated once it would grow past this.
    pub max_file_bytes: u64,
    /// Rotated files kept per function (`current.log.1` … `.N`).
    pub files: u32,
}

impl LogConfig {
    /// 16 MiB files, 4 rotated ones kept, under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_file_bytes: 16 << 20,
            files: 4,
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of shards (threads, each pinned to one CPU). Default: one per CPU.
    pub shards: usize,
    /// Pin shard threads to CPUs.
    pub pin_shards: bool,
    /// Account-wide ("region") concurrency limit.
    pub account_concurrency: u32,
    /// How long an idle environment is kept warm.
    pub keep_alive: Duration,
    /// Environments' CPUs.
    pub env_cpus: EnvCpus,
    /// Environments' stdout and stderr.
    pub function_output: FunctionOutput,
    /// Empty cgroups each shard keeps ready so cold starts skip `mkdir`.
    pub prepared_cgroups: usize,
    /// The adaptive pool: at most this many idle environments each function revision keeps
    /// ready on each shard beyond its provisioned concurrency. Its target is the number of
    /// invocations that had to start an environment (none was idle) in the last 10 s, so a
    /// function whose load keeps rising finds environments started ahead of it; housekeeping
    /// starts them off the invoke path (at most 4 per 100 ms per shard, provisioned ones first),
    /// and stops those nobody used once no invocation has had to start one for 10 s. 0 turns it
    /// off.
    pub adaptive_pool: usize,
    /// Sandbox settings.
    pub sandbox: SandboxConfig,
    /// `AWS_REGION` shown to functions.
    pub region: String,
    /// Account id in the ARNs shown to functions.
    pub account_id: String,
    /// Directory shown at `/var/runtime` in [`Launch::RuntimeApi`] environments: `hearth-init`
    /// and the managed runtimes' bootstraps (see [`crate::runtime_dir`]). Functions of that
    /// launch kind cannot start without it.
    pub runtime_dir: Option<PathBuf>,
    /// Where function logs are kept (`None`: only the `Tail` of each invocation is kept).
    pub logs: Option<LogConfig>,
    /// How long after a shard's last invocation idle CPUs keep polling instead of halting
    /// (the shard holds a 0 µs CPU-latency request, see `cpu_latency.rs`): a halted CPU is slow
    /// to wake, above all on a virtual machine. Zero turns it off; it is off without root.
    pub idle_cpu_poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_shards: true,
            account_concurrency: DEFAULT_ACCOUNT_CONCURRENCY,
            keep_alive: Duration::from_secs(600),
            env_cpus: EnvCpus::default(),
            function_output: FunctionOutput::default(),
            prepared_cgroups: 4,
            adaptive_pool: 4,
            sandbox: SandboxConfig::default(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            runtime_dir: None,
            logs: None,
            idle_cpu_poll: Duration::from_millis(100),
        }
    }
}

/// How a function's program is started and reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Launch {
    /// The program is the environment's first process and reads invocations from the channel
    /// itself (a native function linking `hearth-runtime`): the fast path.
    #[default]
    Native,
    /// The environment's first process is `hearth-init`, which serves Lambda's Runtime and
    /// Extensions APIs on `127.0.0.1:9001` in the environment's own network namespace, starts
    /// the external extensions in `/opt/extensions` and then the program, and relays
    /// invocations between the channel and the program. Any Lambda runtime works this way
    /// (and the program may still read the channel itself).
    RuntimeApi,
}

/// A function's code and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    /// Name: 1–64 of `[A-Za-z0-9_-]`.
    pub name: String,
    /// Directory holding the code, shown read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Program to run inside the environment (Lambda's `provided` runtimes run `bootstrap`).
    pub command: String,
    /// Arguments after the program's name.
    pub args: Vec<String>,
    /// How the program is started and reached.
    pub launch: Launch,
    /// Layer directories in Lambda's order (the first is applied first; a later layer's file
    /// replaces an earlier one's), shown merged and read-only at `/opt`. At most 5.
    pub layers: Vec<PathBuf>,
    /// Lambda's handler string, passed as `_HANDLER`.
    pub handler: String,
    /// Lambda's runtime identifier (`python3.12`, `provided.al2023`, …; empty for embedded
    /// native functions). Managed runtimes get `AWS_EXECUTION_ENV=AWS_Lambda_<runtime>`.
    pub runtime: String,
    /// Memory in MB: 128–10240. The environment's cgroup limit.
    pub memory_mb: u32,
    /// Timeout: up to 900 s.
    pub timeout: Duration,
    /// Environment variables (4 KB in total at most).
    pub environment: Vec<(String, String)>,
    /// Size of `/tmp` in MB: 512–10240.
    pub ephemeral_storage_mb: u32,
    /// Invocations the scheduler may queue in one warm environment's ring instead of starting
    /// another environment: 1 (Lambda's behaviour: one at a time) to 64. The environment still
    /// runs them one at a time, in order; each one's timeout starts when the previous one ends.
    pub pipeline_depth: u32,
    /// Start new environments by forking them from a zygote (an initialised copy of the
    /// function, see `hearth-snapshot`) once one is ready, instead of from nothing. Native
    /// functions (`Launch::Native`) and Python ones (a `python3.*` runtime, without extensions
    /// or `AWS_LAMBDA_EXEC_WRAPPER`); others always start from nothing. On by default; a forked
    /// environment is isolated as one started from nothing (see SECURITY.md).
    pub zygote: bool,
}

impl FunctionConfig {
    /// A function running `/var/task/bootstrap` from `code_dir` with Lambda's defaults
    /// (128 MB, 3 s, 512 MB of `/tmp`).
    pub fn new(
        name: impl Into<String>,
        code_dir: impl Into<PathBuf>,
        handler: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            code_dir: code_dir.into(),
            command: "/var/task/bootstrap".into(),
            args: Vec::new(),
            launch: Launch::Native,
            layers: Vec::new(),
            handler: handler.into(),
            runtime: String::new(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            environment: Vec::new(),
            ephemeral_storage_mb: 512,
            pipeline_depth: 1,
            zygote: true,
        }
    }

    /// Checks the configuration as Lambda does.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: String| Err(RegistryError::InvalidParameter(m));
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(format!(
                "1 validation error detected: Value '{}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-_]{{1,64}}",
                self.name
            ));
        }
        if !(128..=10240).contains(&self.memory_mb) {
            return bad(format!("'MemorySize' value failed to satisfy constraint: Member must have value between 128 and 10240 (got {})", self.memory_mb));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(900) {
            return bad(format!("'Timeout' value failed to satisfy constraint: Member must have value between 1 and 900 seconds (got {:?})", self.timeout));
        }
        if !(512..=10240).contains(&self.ephemeral_storage_mb) {
            return bad(format!(
                "'EphemeralStorage.Size' must be between 512 and 10240 MB (got {})",
                self.ephemeral_storage_mb
            ));
        }
        check_environment(
            self.environment
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        if !(1..=hearth_ipc::SLOTS).contains(&self.pipeline_depth) {
            return bad(format!(
                "pipeline depth must be between 1 and {} (got {})",
                hearth_ipc::SLOTS,
                self.pipeline_depth
            ));
        }
        if self.layers.len() > 5 {
            return bad(format!(
                "a function can use at most 5 layers (got {})",
                self.layers.len()
            ));
        }
        if !self.command.starts_with('/') || self.command.contains('\0') {
            return bad(format!(
                "the command must be an absolute path inside the environment (got {:?})",
                self.command
            ));
        }
        Ok(())
    }
}

/// Lambda's rules for a function's environment variables: 4 KB of keys and values in all, and
/// none of the keys Lambda sets itself (all of them are named in the error).
pub(crate) fn check_environment<'a>(
    env: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<(), RegistryError> {
    let bad = |m: String| Err(RegistryError::InvalidParameter(m));
    let size: usize = env.clone().map(|(k, v)| k.len() + v.len()).sum();
    if size > 4096 {
        return bad(format!("Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {size} bytes"));
    }
    let reserved: Vec<&str> = env
        .map(|(k, _)| k)
        .filter(|k| RESERVED_ENV.contains(k) || k.is_empty() || k.contains(['=', '\0']))
        .collect();
    if !reserved.is_empty() {
        return bad(format!("Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}", reserved.join(", ")));
    }
    Ok(())
}

/// Variables Lambda sets itself and refuses in a function's configuration.
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "HEARTH_CHANNEL_FD",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_limits_are_enforced() {
        let ok = FunctionConfig::new("echo", "/tmp", "echo");
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            FunctionConfig {
                name: "has space".into(),
                ..ok.clone()
            },
            FunctionConfig {
                name: "x".repeat(65),
                ..ok.clone()
            },
            FunctionConfig {
                memory_mb: 127,
                ..ok.clone()
            },
            FunctionConfig {
                memory_mb: 10241,
                ..ok.clone()
            },
            FunctionConfig {
                timeout: Duration::from_secs(901),
                ..ok.clone()
            },
            FunctionConfig {
                timeout: Duration::ZERO,
                ..ok.clone()
            },
            FunctionConfig {
                environment: vec![("A".into(), "x".repeat(4096))],
                ..ok.clone()
            },
            FunctionConfig {
                environment: vec![("AWS_REGION".into(), "x".into())],
                ..ok.clone()
            },
            FunctionConfig {
                pipeline_depth: 0,
                ..ok.clone()
            },
            FunctionConfig {
                command: "bootstrap".into(),
                ..ok.clone()
            },
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(
                err.error_type(),
                "InvalidParameterValueException",
                "{bad:?}"
            );
        }
    }
}
