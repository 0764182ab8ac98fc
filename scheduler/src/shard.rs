//! A shard: one thread, pinned to one CPU, owning its environments, its warm pools and its
//! io_uring. Everything on the invoke path happens here, on the calling shard's thread, with no
//! lock and no hand-off:
//!
//! ```text
//! invoke ─▶ admit (lock-free counters) ─▶ idle environment from the function's pool
//!        │                                  (or queue behind a busy one, if the function
//!        │                                   allows pipelining, or start a new one: cold)
//!        └▶ write the request into its ring (wake it only if it sleeps)
//!           ─▶ spin briefly on the response ring, then sleep in io_uring on the doorbell,
//!              the environment's exit, the mailbox and the nearest deadline
//!           ─▶ check and copy the response ─▶ release the ticket ─▶ environment back to the pool
//! ```
//!
//! Failure handling: a deadline that passes kills the environment (its whole pid namespace and
//! cgroup) and answers `Sandbox.Timedout`; an environment that exits answers
//! `Runtime.ExitError`; one that writes garbage into its channel answers
//! `Runtime.InvalidResponse`; each is killed and later invocations get a fresh one. Invocations
//! queued behind a failed one (pipelining only) never ran and fail with a retryable
//! `ServiceException`. An invocation given to an environment forked from a zygote that dies
//! before taking it (for instance with its zygote, killed meanwhile) never ran either: it is
//! placed again, on an environment started from nothing.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_ipc::{
    format_request_id, AdaptiveSpin, HostChannel, RequestMeta, ResponseStatus, SubmitError,
};
use hearth_sandbox::{EnvSpec, Environment, ExitStatus, Limits, SetupState, Step};
use hearth_snapshot::{ChildSpec, Zygote};

use crate::admission::Ticket;
use crate::config::{EnvCpus, FunctionOutput, Launch};
use crate::cpu_latency::CpuLatency;
use crate::engine::Shared;
use crate::error::{FunctionError, InvokeError};
use crate::logs::{Capture, LogQueue, Report, ShardLogs, MAX_RECORD_OUTPUT};
use crate::registry::Function;
use crate::uring::{Event, Key, NetOp, Uring};
use crate::zygotes::Zygotes;

/// How often a shard looks for environments to reap.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest a shard spins on its rings before sleeping. Waking an environment that sleeps on its
/// doorbell takes 25-40 µs on the development machine (a VM), so a shard that has to wake it
/// should still catch the answer while spinning. It does not spin while it waits on an
/// environment placed on its own CPU ([`EnvCpus::Adaptive`]), but another shard's environment
/// may be placed there, and waits meanwhile. Longer is worse where a CPU-bound environment
/// shares the CPU: the kernel's scheduler then more often runs that environment ahead of the
/// shard until its next tick (measured with a 1 ms limit: the `noisy.victim` tail several times
/// longer; see the README).
const HOST_SPIN_MAX: Duration = Duration::from_micros(100);
/// Longest a shard spins for a new environment's first answer before sleeping: a cold start
/// from a zygote answers in 200-400 µs on the development machines, and a sleeping shard
/// pays a wake-up (25-40 µs in a VM) on top. It yields the CPU every [`SPIN_YIELD`] meanwhile:
/// another shard's environment woken on this core runs at once instead of waiting for the
/// end of the shard's time slice (4 ms at the next tick on a 250 Hz kernel).
const START_SPIN_MAX: Duration = Duration::from_millis(1);
/// How often that spin yields the CPU (see [`hearth_ipc::doorbell::spin_until`]).
const SPIN_YIELD: Duration = Duration::from_micros(30);

/// How long after invocations last overlapped [`EnvCpus::Adaptive`] keeps treating the shard
/// as loaded (environments stay on its CPU).
const CONCURRENCY_MEMORY: Duration = Duration::from_millis(20);
/// An invocation on the shard's own CPU ([`EnvCpus::Adaptive`]) that runs longer than this is
/// moved to the other CPUs. Long enough that invocations merely queued for the CPU under load
/// (milliseconds here) stay; short against CPU-bound work. (The environment's CPU time would be
/// the better signal, but the kernel updates it only at scheduler ticks, which a CPU running
/// one task may not take.)
const LOCAL_RUN_LIMIT: Duration = Duration::from_millis(50);
/// How long a Runtime API environment asked to stop (SIGTERM) has before it is killed: Lambda
/// gives extensions 2 s after `SHUTDOWN`.
const GRACEFUL_STOP: Duration = Duration::from_millis(2500);
/// Lambda's Init phase limit: a Runtime API environment's first invocation may wait this long
/// for the runtime (and its extensions) to initialise before its own timeout starts.
const INIT_LIMIT: Duration = Duration::from_secs(10);
/// How often a shard looks at environments still initialising (to start their invocation's
/// timeout once the runtime takes it).
const INIT_POLL: Duration = Duration::from_millis(10);
/// How often the captures of long-running invocations are checked for overflow (see
/// [`Shard::check_captures`]): a flood at a few GB/s fills tens of MB in that time.
const CAPTURE_CHECK: Duration = Duration::from_millis(5);
/// Tasks (processes and threads) per environment, as in Lambda.
const PIDS_PER_ENV: u64 = 1024;

/// New channels a shard keeps made for its next cold starts.
const SPARE_CHANNELS: usize = 2;
/// How far back a function's on-demand starts count toward its adaptive pool target (see
/// [`crate::EngineConfig::adaptive_pool`]).
const POOL_WINDOW: Duration = Duration::from_secs(10);
/// Environments a shard starts ahead of demand per housekeeping pass (provisioned and
/// adaptive together); a pass that started any is followed by none for a
/// [`MAINTENANCE_INTERVAL`]: at most 40 per second, which also bounds how fast a crashing
/// bootstrap is restarted.
const POOL_STARTS_PER_PASS: usize = 4;

/// How the environment that served an invocation was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// An idle, warm environment.
    Warm,
    /// Queued behind another invocation in a busy environment (pipelining).
    Queued,
    /// The first invocation of an environment started ahead of demand (provisioned
    /// concurrency or the adaptive pool): its start-up was paid before the invocation arrived.
    Pool,
    /// A new environment started from nothing for this invocation.
    Cold,
    /// A new environment forked for this invocation from the function's zygote (an
    /// initialised copy of it): a cold start without the program's start-up and Init.
    Zygote,
}

/// What happened to an invocation that reached a function. The payload is delivered separately
/// (into the caller's buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `Some` when the function failed; the payload is then Lambda's error document.
    pub error: Option<FunctionError>,
    /// How the environment was obtained.
    pub start: Start,
    /// The environment's process id (host view), for diagnostics.
    pub env_pid: i32,
    /// Lambda's request id of the invocation (format with [`format_request_id`]).
    pub request_id: [u8; 16],
}

/// What a caller says about one invocation ([`Shard::submit_invocation`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Invocation<'a> {
    /// The version or alias the caller named.
    pub qualifier: Option<&'a str>,
    /// Client context JSON (one line), passed to the runtime as `Lambda-Runtime-Client-Context`.
    pub client_context: Option<&'a [u8]>,
    /// Return the last 4 KB of the invocation's log.
    pub tail: bool,
}

/// A finished invocation submitted with [`Shard::submit`].
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag.
    pub tag: u64,
    /// The outcome, or why the function never ran.
    pub result: Result<Outcome, InvokeError>,
    /// The response (or error document). Give it back with [`Shard::recycle`] to reuse it.
    pub payload: Vec<u8>,
    /// The last 4 KB of the invocation's log, when it was submitted with
    /// [`Shard::submit_with_tail`].
    pub log_tail: Option<Vec<u8>>,
}

/// Counters of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Invocations served by a warm environment.
    pub warm: u64,
    /// Invocations that were the first of an environment started ahead of demand
    /// (provisioned concurrency or the adaptive pool).
    pub pool: u64,
    /// Invocations queued behind another one.
    pub queued: u64,
    /// Invocations that started a new environment from nothing (cold starts).
    pub cold_invocations: u64,
    /// Invocations that had a new environment forked from a zygote (zygote starts).
    pub zygote_invocations: u64,
    /// Invocations given to an environment forked from a zygote that died before taking them,
    /// placed again on one started from nothing (counted a second time, in `cold_invocations`).
    pub placed_again: u64,
    /// Environments started from nothing (each served a cold invocation, or was started ahead
    /// of demand).
    pub cold: u64,
    /// Environments forked from a zygote (likewise).
    pub zygote: u64,
    /// Of those, the ones that entered mount, ipc and uts namespaces (with `/tmp` mounted and
    /// the landlock ruleset built) made ahead by the zygote's helper process.
    pub zygote_prepared: u64,
    /// Invocations refused by admission control.
    pub throttled: u64,
    /// Environments killed at a deadline.
    pub timeouts: u64,
    /// Environments that exited while serving.
    pub exits: u64,
    /// Environments killed for breaking the channel protocol.
    pub protocol_errors: u64,
    /// Idle environments reaped after the keep-alive.
    pub reaped: u64,
    /// Environments alive now.
    pub live: u64,
}

/// A finished front-door socket operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetEvent {
    pub op: NetOp,
    pub key: Key,
    pub result: i32,
    pub more: bool,
}

#[derive(Debug)]
struct Inflight {
    tag: u64,
    sync: bool,
    id: u64,
    ticket: Ticket,
    request_id: [u8; 16],
    start: Start,
    /// Set when this invocation reaches the head of its environment's queue (it runs then).
    deadline: Option<Instant>,
    /// When it reached the head of the queue.
    began: Option<Instant>,
    /// Its caller wants the tail of its log.
    tail: bool,
    /// Given to an environment forked from a zygote before it finished setting itself up: what
    /// it takes to place it again (see `Shard::place_elsewhere`).
    again: Option<Box<Again>>,
}

/// An invocation's payload and custom context (`None`: the function's), kept while it waits
/// for an environment forked by a zygote, which dies with its zygote should that be killed
/// while the environment sets itself up.
#[derive(Debug)]
struct Again {
    payload: Vec<u8>,
    context: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Serving or idle.
    Live,
    /// Killed; waiting for its exit to be reaped.
    Dying,
}

#[derive(Debug)]
struct Env {
    key: Key,
    function: Arc<Function>,
    process: Environment,
    channel: HostChannel,
    inflight: VecDeque<Inflight>,
    state: State,
    last_used: Instant,
    doorbell_armed: bool,
    setup_done: bool,
    /// Runs on the shard's own CPU ([`EnvCpus::Adaptive`], [`EnvCpus::SameAsShard`]).
    local: bool,
    /// Its stdout and stderr ([`FunctionOutput::Capture`]).
    capture: Option<Capture>,
    /// Peak memory in MB, as last read from its cgroup.
    peak_mb: u64,
    /// Served since the last maintenance pass (its peak memory is re-read then).
    used_since_maintenance: bool,
    /// Asked to stop gracefully: killed if still alive at this instant.
    stop_by: Option<Instant>,
    /// A Runtime API environment whose runtime has not yet asked for its first invocation.
    initializing: bool,
    /// Output of the running invocation read before its capture overflowed and was rewound.
    early_output: Vec<u8>,
    /// Started ahead of demand and not used yet.
    pooled: bool,
    /// Forked by a zygote: (function id, zygote id, pid in the zygote's namespace), the key of
    /// its exit report.
    zygote_pid: Option<(u64, u64, u64)>,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    env: Option<Env>,
}

/// Environments of one function on this shard.
#[derive(Debug, Default)]
struct Pool {
    /// Idle environments, most recently used last (taken first: its caches are warmest).
    idle: Vec<Key>,
    /// Environments with invocations in flight (candidates for pipelining).
    busy: Vec<Key>,
    /// When invocations last had to start an environment because none was idle, newest last:
    /// at most [`crate::EngineConfig::adaptive_pool`] of them, none older than [`POOL_WINDOW`].
    /// Their number is how many idle environments housekeeping keeps ready.
    demand: VecDeque<Instant>,
    /// The function revision, for housekeeping to start environments of it.
    function: Option<Arc<Function>>,
}

impl Pool {
    /// Idle environments to keep ready: the on-demand starts of the last [`POOL_WINDOW`].
    fn adaptive_target(&mut self, now: Instant) -> usize {
        while self
            .demand
            .front()
            .is_some_and(|&t| now.duration_since(t) >= POOL_WINDOW)
        {
            self.demand.pop_front();
        }
        self.demand.len()
    }
}

/// One shard. Obtain it through [`crate::Engine::on_shard`]; it is used on its own thread only.
pub struct Shard {
    index: usize,
    shared: Arc<Shared>,
    uring: Uring,
    mailbox: Option<std::os::fd::OwnedFd>,
    mailbox_ready: bool,
    /// Where new environments run (with [`EnvCpus::Adaptive`], one serving alone); `None`
    /// when partitioned.
    env_cpus: Option<Vec<usize>>,
    /// [`EnvCpus::SameAsShard`] on a pinned shard: every environment and zygote on `local_cpus`,
    /// never moved.
    partitioned: bool,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    pools: HashMap<u64, Pool>,
    /// Environments with invocations in flight.
    busy: Vec<Key>,
    completions: VecDeque<Completion>,
    sync_result: Option<(u64, Result<Outcome, InvokeError>)>,
    sync_payload: Vec<u8>,
    scratch: Vec<u8>,
    buffers: Vec<Vec<u8>>,
    events: Vec<Event>,
    net_events: Vec<NetEvent>,
    spin: AdaptiveSpin,
    /// The shard's own CPU: with [`EnvCpus::Adaptive`], for environments serving while others
    /// are in flight (`env_cpus` then holds the other CPUs); with [`EnvCpus::SameAsShard`], for
    /// every environment and zygote.
    local_cpus: Option<Vec<usize>>,
    /// When an invocation last started while another was in flight.
    last_concurrent: Option<Instant>,
    rng: u64,
    next_sync_tag: u64,
    next_maintenance: Instant,
    /// Before this, housekeeping starts no environment ahead of demand (see [`Shard::provision`]).
    next_provision: Instant,
    next_capture_check: Instant,
    stats: ShardStats,
    logs: ShardLogs,
    /// Runtime API headers built for one invocation ([`Shard::submit_invocation`]).
    next_context: Option<Vec<u8>>,
    /// An invocation's captured output, then its framed record (reused buffers).
    output: Vec<u8>,
    record: Vec<u8>,
    /// Zygotes of this shard's native functions.
    zygotes: Zygotes,
    /// New channels made ahead of cold starts ([`SPARE_CHANNELS`]).
    spare_channels: Vec<HostChannel>,
    /// Keeps idle CPUs polling while this shard is busy.
    cpu_latency: CpuLatency,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether `config`'s environments may be forked from a zygote: native functions, and Python
/// ones without extensions or an exec wrapper (those need hearth-init, which a forked Python
/// environment does without). Node cannot fork cooperatively (V8 runs threads of its own).
/// Only outside a chroot (no user namespace there), where landlock scopes abstract unix sockets
/// and signals (ABI 6+) and not rootless:
/// forked environments share their zygote's network namespace, which is safe only where an
/// environment started from nothing would share one too (see `hearth_sandbox::Sandbox`).
fn zygote_capable(config: &crate::FunctionConfig, sandbox: &hearth_sandbox::Sandbox) -> bool {
    config.zygote
        && sandbox.zygotes_supported()
        && !sandbox.rootless()
        && sandbox.landlock_abi() >= 6
        && forks(config)
}

/// Whether `config`'s program can be a zygote (see [`zygote_capable`]).
fn forks(config: &crate::FunctionConfig) -> bool {
    match config.launch {
        Launch::Native => true,
        Launch::RuntimeApi => {
            config.runtime.starts_with("python3")
                && !config
                    .environment
                    .iter()
                    .any(|(k, _)| k == "AWS_LAMBDA_EXEC_WRAPPER")
                && !config
                    .layers
                    .iter()
                    .any(|layer| layer.join("extensions").is_dir())
        }
    }
}

/// A capture for a new process's stdout and stderr, when output is captured.
fn new_capture(mode: FunctionOutput) -> std::io::Result<Option<Capture>> {
    match mode {
        FunctionOutput::Capture => Capture::new().map(Some),
        FunctionOutput::Inherit | FunctionOutput::Discard => Ok(None),
    }
}

/// Where a new process's stdout and stderr go (`None`: nowhere).
fn output_fd<'a>(
    mode: FunctionOutput,
    capture: Option<&'a Capture>,
    stderr: &'a std::io::Stderr,
) -> Option<BorrowedFd<'a>> {
    match mode {
        FunctionOutput::Capture => capture.map(Capture::fd),
        FunctionOutput::Inherit => Some(stderr.as_fd()),
        FunctionOutput::Discard => None,
    }
}

/// An environment's cgroup limits; `cpu`: the one CPU it is confined to.
fn env_limits(config: &crate::FunctionConfig, cpu: Option<usize>) -> Limits {
    Limits {
        memory_bytes: u64::from(config.memory_mb) << 20,
        pids: PIDS_PER_ENV,
        // CPU share proportional to memory, as Lambda allots it (1769 MB = 1 vCPU).
        cpu_weight: (u64::from(config.memory_mb) * 100 / 1769).clamp(1, 10_000),
        cpu,
    }
}

/// The environment in `key`'s slot, if the slot still holds that generation. Free functions
/// over the slot table (not methods) so that callers can borrow other fields of the shard.
fn slot_env(slots: &[Slot], key: Key) -> Option<&Env> {
    slots
        .get(key.slot as usize)
        .filter(|s| s.generation == key.generation)
        .and_then(|s| s.env.as_ref())
}

fn slot_env_mut(slots: &mut [Slot], key: Key) -> Option<&mut Env> {
    slots
        .get_mut(key.slot as usize)
        .filter(|s| s.generation == key.generation)
        .and_then(|s| s.env.as_mut())
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        cpu: Option<usize>,
        all_cpus: &[usize],
        shared: Arc<Shared>,
        mailbox: Option<std::os::fd::OwnedFd>,
        logs: Option<LogQueue>,
    ) -> std::io::Result<Self> {
        // Always explicit: a new environment otherwise inherits the shard thread's pinning.
        let others = || {
            all_cpus
                .iter()
                .copied()
                .filter(|&c| Some(c) != cpu)
                .collect()
        };
        let (env_cpus, local_cpus) = match (shared.config.env_cpus, cpu) {
            (EnvCpus::OtherThanShard, Some(_)) if all_cpus.len() > 1 => (Some(others()), None),
            (EnvCpus::Adaptive, Some(own)) if all_cpus.len() > 1 => {
                (Some(others()), Some(vec![own]))
            }
            (EnvCpus::SameAsShard, Some(own)) => (None, Some(vec![own])),
            _ => (Some(all_cpus.to_vec()), None),
        };
        let partitioned = env_cpus.is_none();
        if shared.config.env_cpus == EnvCpus::SameAsShard && index == 0 {
            if !partitioned {
                tracing::warn!(
                    "env_cpus same_as_shard needs pinned shards; environments run on any CPU"
                );
            } else if !shared.sandbox.hierarchy().is_some_and(|h| h.cpuset()) {
                tracing::warn!("env_cpus same_as_shard without the cpuset controller: environments are placed by affinity only, which a function can widen");
            }
        }
        let cpu_latency = CpuLatency::new(shared.config.idle_cpu_poll);
        let mut shard = Self {
            local_cpus,
            last_concurrent: None,
            index,
            shared,
            uring: Uring::new()?,
            mailbox,
            mailbox_ready: false,
            env_cpus,
            partitioned,
            slots: Vec::new(),
            free_slots: Vec::new(),
            pools: HashMap::new(),
            busy: Vec::new(),
            completions: VecDeque::new(),
            sync_result: None,
            sync_payload: Vec::new(),
            scratch: Vec::new(),
            buffers: Vec::new(),
            events: Vec::new(),
            net_events: Vec::new(),
            spin: AdaptiveSpin::new(Duration::from_micros(2), HOST_SPIN_MAX),
            rng: crate::sys::random_u64() | 1,
            next_sync_tag: 0,
            next_maintenance: Instant::now() + MAINTENANCE_INTERVAL,
            next_provision: Instant::now(),
            next_capture_check: Instant::now(),
            stats: ShardStats::default(),
            logs: ShardLogs::new(logs),
            next_context: None,
            output: Vec::new(),
            record: Vec::new(),
            zygotes: Zygotes::default(),
            spare_channels: Vec::new(),
            cpu_latency,
        };
        if let Some(fd) = &shard.mailbox {
            // SAFETY of lifetimes: the eventfd is owned by the shard and outlives its ring.
            let fd: BorrowedFd<'_> = fd.as_fd();
            shard.uring.arm_mailbox(fd);
        }
        Ok(shard)
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Counters.
    pub fn stats(&self) -> ShardStats {
        ShardStats {
            live: u64::try_from(self.slots.iter().filter(|s| s.env.is_some()).count())
                .unwrap_or(u64::MAX),
            ..self.stats
        }
    }

    /// The current revision of function `name`.
    pub fn function(&self, name: &str) -> Result<Arc<Function>, InvokeError> {
        self.shared
            .registry
            .get(name)
            .ok_or_else(|| InvokeError::NotFound(name.to_owned()))
    }

    /// Version or alias `qualifier` of `name` (lock-free; see [`crate::Engine::resolve`]).
    pub(crate) fn resolve(
        &self,
        name: &str,
        qualifier: Option<&str>,
        draw: u32,
    ) -> Option<Arc<Function>> {
        self.shared.registry.resolve(name, qualifier, draw)
    }

    /// Invokes `function` with `payload` and waits for the answer, which replaces the contents
    /// of `out` (its capacity is reused: the warm path does not allocate).
    pub fn invoke_into(
        &mut self,
        function: &Arc<Function>,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Outcome, InvokeError> {
        let tag = self.next_sync_tag;
        self.next_sync_tag = self.next_sync_tag.wrapping_add(1);
        self.dispatch(function, payload, tag, true, false)?;
        let started = Instant::now();
        loop {
            if let Some((done, _)) = &self.sync_result {
                if *done == tag {
                    let (_, result) = self
                        .sync_result
                        .take()
                        .unwrap_or((tag, Err(InvokeError::Service("lost result".into()))));
                    std::mem::swap(out, &mut self.sync_payload);
                    self.spin.record(started.elapsed());
                    return result;
                }
            }
            self.progress_in_job(None);
        }
    }

    /// Invokes function `name` and returns its answer.
    pub fn invoke(
        &mut self,
        name: &str,
        payload: &[u8],
    ) -> Result<(Outcome, Vec<u8>), InvokeError> {
        let function = self.function(name)?;
        let mut out = Vec::new();
        let outcome = self.invoke_into(&function, payload, &mut out)?;
        Ok((outcome, out))
    }

    /// Starts an invocation without waiting; its [`Completion`] carries `tag` and is returned by
    /// [`Shard::poll`]. Admission errors are returned at once.
    pub fn submit(
        &mut self,
        function: &Arc<Function>,
        payload: &[u8],
        tag: u64,
    ) -> Result<(), InvokeError> {
        self.dispatch(function, payload, tag, false, false)
    }

    /// Like [`Shard::submit`]; the completion carries the last 4 KB of the invocation's log
    /// (`LogType=Tail`).
    pub fn submit_with_tail(
        &mut self,
        function: &Arc<Function>,
        payload: &[u8],
        tag: u64,
    ) -> Result<(), InvokeError> {
        self.dispatch(function, payload, tag, false, true)
    }

    /// Like [`Shard::submit`], with what the caller said about the invocation: the qualifier it
    /// named (an alias shows in the runtime's `invoked_function_arn`), its client context (the
    /// decoded JSON of `X-Amz-Client-Context`), and whether it wants the log's tail.
    pub fn submit_invocation(
        &mut self,
        function: &Arc<Function>,
        payload: &[u8],
        tag: u64,
        invocation: &Invocation<'_>,
    ) -> Result<(), InvokeError> {
        let runtime_api = function.config().launch == Launch::RuntimeApi;
        if !runtime_api || (invocation.qualifier.is_none() && invocation.client_context.is_none()) {
            return self.dispatch(function, payload, tag, false, invocation.tail);
        }
        let mut context = Vec::with_capacity(256);
        context.extend_from_slice(b"Lambda-Runtime-Invoked-Function-Arn: ");
        context.extend_from_slice(function.arn().as_bytes());
        if let Some(qualifier) = invocation.qualifier {
            context.push(b':');
            context.extend_from_slice(qualifier.as_bytes());
        }
        context.push(b'\n');
        if let Some(client_context) = invocation.client_context {
            context.extend_from_slice(b"Lambda-Runtime-Client-Context: ");
            context.extend_from_slice(client_context);
            context.push(b'\n');
        }
        self.next_context = Some(context);
        let result = self.dispatch(function, payload, tag, false, invocation.tail);
        self.next_context = None;
        result
    }

    /// Moves finished invocations into `out`. With a `timeout`, waits (spinning briefly, then
    /// sleeping) up to that long for at least one; returns how many were added.
    pub fn poll(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> usize {
        let until = timeout.map(|t| Instant::now() + t);
        loop {
            if !self.completions.is_empty() {
                let n = self.completions.len();
                out.extend(self.completions.drain(..));
                return n;
            }
            match until {
                Some(until) if Instant::now() >= until => return 0,
                None => {
                    self.collect();
                    let n = self.completions.len();
                    out.extend(self.completions.drain(..));
                    return n;
                }
                Some(until) => self.progress_in_job(Some(until)),
            }
        }
    }

    /// Returns a payload buffer for reuse by later completions.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.buffers.len() < 1024 {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    /// Invocations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.busy
            .iter()
            .filter_map(|&k| self.env(k))
            .map(|e| e.inflight.len())
            .sum()
    }

    fn env(&self, key: Key) -> Option<&Env> {
        slot_env(&self.slots, key)
    }

    fn env_mut(&mut self, key: Key) -> Option<&mut Env> {
        slot_env_mut(&mut self.slots, key)
    }

    // ----- dispatch -------------------------------------------------------------------------

    fn dispatch(
        &mut self,
        function: &Arc<Function>,
        payload: &[u8],
        tag: u64,
        sync: bool,
        tail: bool,
    ) -> Result<(), InvokeError> {
        if payload.len() > hearth_ipc::MAX_PAYLOAD as usize {
            return Err(InvokeError::RequestTooLarge(payload.len()));
        }
        let ticket = match self.shared.account.admit(function.concurrency()) {
            Ok(ticket) => ticket,
            Err(throttle) => {
                self.stats.throttled += 1;
                return Err(InvokeError::Throttled(throttle));
            }
        };
        // Taken first: handling an exit below may place another invocation again.
        let context = self.next_context.take();
        // Exits that already completed must be seen before an idle environment is picked:
        // reading the completion queue costs no syscall unless work is pending.
        self.poll_events();
        let placed = self.place(
            function,
            payload,
            (tag, sync, tail),
            ticket,
            (context, None),
        );
        if placed.is_err() {
            self.shared.account.release(function.concurrency(), ticket);
        }
        placed
    }

    /// Gives the invocation (with its custom `context`, `None` for the function's) to an idle
    /// environment, queues it behind a busy one or starts a new one for it. `again_id`: the
    /// request id of an invocation placed a second time (see [`Shard::place_elsewhere`]): it
    /// gets a new environment started from nothing.
    fn place(
        &mut self,
        function: &Arc<Function>,
        payload: &[u8],
        (tag, sync, tail): (u64, bool, bool),
        ticket: Ticket,
        (custom_context, again_id): (Option<Vec<u8>>, Option<[u8; 16]>),
    ) -> Result<(), InvokeError> {
        let request_id = again_id.unwrap_or_else(|| crate::sys::uuid_v4(&mut self.rng));
        let timeout = function.config().timeout;
        let meta = RequestMeta {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            request_id,
            context: custom_context
                .as_deref()
                .unwrap_or(function.runtime_context()),
        };
        // A picked environment can turn out broken (it answered twice or corrupted its ring:
        // it is killed) or, when queueing, full (its arena holds earlier large payloads): then
        // the next candidate is tried without queueing, ending with a new environment.
        let now = Instant::now();
        if !self.busy.is_empty() {
            self.last_concurrent = Some(now);
        }
        let mut allow_queue = true;
        for _ in 0..4 {
            // Placed again: never an environment that may have died with the same zygote (an
            // idle or busy sibling whose exit is not handled yet).
            let picked = match again_id {
                None => self.pick(function, allow_queue),
                Some(_) => None,
            };
            let (key, start) = match picked {
                Some(picked) => picked,
                None => {
                    let started = self.start_env(function, again_id.is_none())?;
                    self.note_demand(function, now);
                    started
                }
            };
            let alone = self.busy.is_empty() && !self.concurrent_lately(now);
            let remote = self.env_cpus.as_deref();
            let Some(env) = slot_env_mut(&mut self.slots, key) else {
                continue;
            };
            if alone && env.local {
                // It serves alone now: let it spin on another core. One syscall, and only when
                // the load changes.
                if let Some(cpus) = remote {
                    if crate::sys::set_affinity(env.process.pid(), cpus).is_ok() {
                        env.local = false;
                    }
                }
            }
            match env.channel.submit(payload, &meta) {
                Ok(id) => {
                    let now = Instant::now();
                    let first = env.inflight.is_empty();
                    let allowance = if env.initializing {
                        INIT_LIMIT
                    } else {
                        Duration::ZERO
                    };
                    let deadline = first.then_some(now + allowance + timeout);
                    let began = first.then_some(now);
                    // Given to an environment forked from a zygote that has not finished setting
                    // itself up (new, pooled, or queued behind its first): kept until it
                    // finishes, in case that environment dies before taking it.
                    let kept = (env.zygote_pid.is_some() && !env.setup_done).then(|| {
                        let mut copy = self.buffers.pop().unwrap_or_default();
                        copy.extend_from_slice(payload);
                        Box::new(Again {
                            payload: copy,
                            context: custom_context.clone(),
                        })
                    });
                    env.inflight.push_back(Inflight {
                        tag,
                        sync,
                        id,
                        ticket,
                        request_id,
                        start,
                        deadline,
                        began,
                        tail,
                        again: kept,
                    });
                    env.last_used = now;
                    env.used_since_maintenance = true;
                    let first = env.inflight.len() == 1;
                    match start {
                        Start::Warm => self.stats.warm += 1,
                        Start::Pool => self.stats.pool += 1,
                        Start::Queued => self.stats.queued += 1,
                        Start::Cold => self.stats.cold_invocations += 1,
                        Start::Zygote => self.stats.zygote_invocations += 1,
                    }
                    if first {
                        self.busy.push(key);
                        if let Some(pool) = self.pools.get_mut(&function.id()) {
                            pool.busy.push(key);
                        }
                    }
                    // After the environment has its invocation: the first of a busy spell
                    // makes idle CPUs poll from now on (and wakes them, a syscall and an IPI
                    // each), which this one need not wait for.
                    self.cpu_latency.active(now);
                    return Ok(());
                }
                Err(SubmitError::Full) => {
                    // An idle or new environment has room for any payload; only one with
                    // requests queued can be full. Leave it to drain and do not queue again.
                    self.return_unused(function, key, start);
                    allow_queue = false;
                }
                Err(SubmitError::TooLarge(n)) => {
                    self.return_unused(function, key, start);
                    return Err(InvokeError::RequestTooLarge(n));
                }
                Err(SubmitError::Protocol(e)) => {
                    self.stats.protocol_errors += 1;
                    self.kill(key, Some(FunctionError::InvalidResponse(e)));
                }
            }
        }
        Err(InvokeError::Service(
            "no healthy environment could take the invocation".into(),
        ))
    }

    /// Partitioned: the shard's CPU, to which its environments' cgroups confine them where the
    /// hierarchy has the cpuset controller (a function cannot then widen its own affinity).
    fn confined_cpu(&self) -> Option<usize> {
        if !self.partitioned {
            return None;
        }
        self.local_cpus.as_deref()?.first().copied()
    }

    /// Whether invocations overlapped on this shard in the last [`CONCURRENCY_MEMORY`].
    fn concurrent_lately(&self, now: Instant) -> bool {
        self.last_concurrent
            .is_some_and(|t| now.duration_since(t) < CONCURRENCY_MEMORY)
    }

    /// Puts back an environment that was picked (or started) but not given the invocation.
    fn return_unused(&mut self, function: &Function, key: Key, start: Start) {
        let idle = self
            .env(key)
            .is_some_and(|e| e.state == State::Live && e.inflight.is_empty());
        if start != Start::Queued && idle {
            if let Some(pool) = self.pools.get_mut(&function.id()) {
                pool.idle.push(key);
            }
        }
    }

    /// An idle environment of `function`, or (with pipelining and `allow_queue`) the least
    /// loaded busy one.
    fn pick(&mut self, function: &Function, allow_queue: bool) -> Option<(Key, Start)> {
        let pool = self.pools.get_mut(&function.id())?;
        while let Some(key) = pool.idle.pop() {
            let Some(env) = slot_env_mut(&mut self.slots, key) else {
                continue;
            };
            if env.state != State::Live {
                continue;
            }
            // An environment that wrote a response nobody asked for (answered twice) is broken.
            match env.channel.check_quiet() {
                Ok(()) if std::mem::take(&mut env.pooled) => return Some((key, Start::Pool)),
                Ok(()) => return Some((key, Start::Warm)),
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    self.kill(key, Some(FunctionError::InvalidResponse(e)));
                    return self.pick(function, allow_queue);
                }
            }
        }
        let depth = function.config().pipeline_depth as usize;
        if depth > 1 && allow_queue {
            let slots = &self.slots;
            let load = |k: &Key| {
                slot_env(slots, *k)
                    .filter(|e| e.state == State::Live)
                    .map(|e| e.inflight.len())
            };
            let best = pool
                .busy
                .iter()
                .filter_map(|k| load(k).map(|n| (n, *k)))
                .filter(|&(n, _)| n < depth)
                .min_by_key(|&(n, _)| n);
            if let Some((_, key)) = best {
                return Some((key, Start::Queued));
            }
        }
        None
    }

    /// Starts an environment for `function`: forked from its zygote if `zygote` allows, the
    /// zygote is ready and the function can be forked, else from nothing.
    fn start_env(
        &mut self,
        function: &Arc<Function>,
        zygote: bool,
    ) -> Result<(Key, Start), InvokeError> {
        let config = function.config();
        let service = |what: &str, e: &dyn std::fmt::Display| {
            InvokeError::Service(format!(
                "could not start an environment for {}: {what}: {e}",
                config.name
            ))
        };
        // Channels made ahead in housekeeping (a memfd, its size and mapping: tens of µs).
        let channel = match self.spare_channels.pop() {
            Some(channel) => channel,
            None => HostChannel::create().map_err(|e| service("channel", &e))?,
        };
        let local = self.partitioned
            || (self.local_cpus.is_some()
                && (!self.busy.is_empty() || self.concurrent_lately(Instant::now())));
        let mode = self.shared.config.function_output;
        let capture = new_capture(mode).map_err(|e| service("output capture", &e))?;
        let stderr = std::io::stderr();
        let output = output_fd(mode, capture.as_ref(), &stderr);
        // Runtime API functions start under hearth-init, which serves the API and starts the
        // function's program.
        let runtime_api = config.launch == Launch::RuntimeApi;
        let (command, args, runtime_dir) = if runtime_api {
            let dir = self
                .shared
                .runtime_dir
                .as_ref()
                .map_err(|e| service("runtime directory", e))?;
            let mut args = vec![config.command.clone()];
            args.extend(config.args.iter().cloned());
            (
                format!("/var/runtime/{}", crate::runtime_dir::INIT),
                args,
                Some(dir.as_path()),
            )
        } else {
            (config.command.clone(), config.args.clone(), None)
        };
        // The function's zygote, once ready, forks the environment instead.
        let forked = if zygote && zygote_capable(config, &self.shared.sandbox) {
            let child = ChildSpec {
                channel: channel.guest_fd(),
                stdout: output,
                stderr: output,
                limits: env_limits(config, self.confined_cpu()),
                tmp_bytes: u64::from(config.ephemeral_storage_mb) << 20,
            };
            match self.zygotes.fork(&self.shared.sandbox, function, &child) {
                Some(Ok(forked)) => Some(forked),
                Some(Err(e)) => {
                    tracing::debug!(function = config.name, error = %e, "zygote fork failed; starting from nothing");
                    None
                }
                None => None,
            }
        } else {
            None
        };
        let (process, zygote_pid, start) = match forked {
            Some((process, pid, prepared)) => {
                self.stats.zygote_prepared += u64::from(prepared);
                let zygote = self.zygotes.zygote_id(function.id()).unwrap_or(0);
                let pid = (function.id(), zygote, pid);
                // Partitioned, the zygote already runs on the shard's CPU and its child with it.
                if local && !self.partitioned {
                    if let Some(cpus) = &self.local_cpus {
                        let _ = crate::sys::set_affinity(process.pid(), cpus);
                    }
                }
                self.stats.zygote += 1;
                (process, Some(pid), Start::Zygote)
            }
            None => {
                let process = self
                    .shared
                    .sandbox
                    .spawn(&EnvSpec {
                        code_dir: &config.code_dir,
                        command: &command,
                        args: &args,
                        loopback: runtime_api,
                        runtime_dir,
                        layers: &config.layers,
                        zygote: None,
                        env: function.process_env(),
                        channel: channel.guest_fd(),
                        stdout: output,
                        stderr: output,
                        limits: env_limits(config, self.confined_cpu()),
                        tmp_bytes: u64::from(config.ephemeral_storage_mb) << 20,
                        cpus: if local {
                            self.local_cpus.as_deref()
                        } else {
                            self.env_cpus.as_deref()
                        },
                    })
                    .map_err(|e| service("sandbox", &e))?;
                self.stats.cold += 1;
                (process, None, Start::Cold)
            }
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = self.slots[slot as usize].generation;
        let key = Key { slot, generation };
        self.uring.arm_exit(key, process.pidfd());
        self.slots[slot as usize].env = Some(Env {
            key,
            function: function.clone(),
            process,
            channel,
            inflight: VecDeque::with_capacity(config.pipeline_depth as usize),
            state: State::Live,
            last_used: Instant::now(),
            doorbell_armed: false,
            setup_done: false,
            local,
            capture,
            peak_mb: 0,
            used_since_maintenance: false,
            stop_by: None,
            // A forked environment's runtime has run its Init already (in the zygote).
            initializing: runtime_api && zygote_pid.is_none(),
            early_output: Vec::new(),
            pooled: false,
            zygote_pid,
        });
        self.pools
            .entry(function.id())
            .or_default()
            .function
            .get_or_insert_with(|| function.clone());
        Ok((key, start))
    }

    /// Records that an invocation of `function` had to start an environment at `now`.
    fn note_demand(&mut self, function: &Function, now: Instant) {
        let limit = self.shared.config.adaptive_pool;
        if let Some(pool) = self.pools.get_mut(&function.id()) {
            if limit == 0 {
                return;
            }
            if pool.demand.len() >= limit {
                pool.demand.pop_front();
            }
            pool.demand.push_back(now);
        }
    }

    /// Makes channels for the next cold starts (housekeeping, off the invoke path).
    fn refill_channels(&mut self) {
        while self.spare_channels.len() < SPARE_CHANNELS {
            match HostChannel::create() {
                Ok(channel) => self.spare_channels.push(channel),
                Err(_) => return,
            }
        }
    }

    /// Starts the zygotes cold starts asked for (housekeeping, off the invoke path).
    fn start_zygotes(&mut self) {
        for function in self.zygotes.take_wanted(&self.shared.registry) {
            let config = function.config();
            let mode = self.shared.config.function_output;
            let capture = match new_capture(mode) {
                Ok(capture) => capture,
                Err(e) => {
                    self.zygotes.start_failed(&function, &e.to_string());
                    continue;
                }
            };
            let stderr = std::io::stderr();
            let output = output_fd(mode, capture.as_ref(), &stderr);
            // Replaced by the control socket.
            let placeholder = stderr.as_fd();
            // A Python zygote runs the bootstrap itself (not under hearth-init) and loads the
            // runtime library from the runtime directory.
            let runtime_dir = if config.launch == Launch::RuntimeApi {
                match &self.shared.runtime_dir {
                    Ok(dir) if dir.join(crate::runtime_dir::LIBRARY).is_file() => {
                        Some(dir.as_path())
                    }
                    Ok(dir) => {
                        let why =
                            format!("{} has no {}", dir.display(), crate::runtime_dir::LIBRARY);
                        self.zygotes.start_failed(&function, &why);
                        continue;
                    }
                    Err(e) => {
                        let why = e.clone();
                        self.zygotes.start_failed(&function, &why);
                        continue;
                    }
                }
            } else {
                None
            };
            let started = Zygote::start(
                &self.shared.sandbox,
                &EnvSpec {
                    code_dir: &config.code_dir,
                    command: &config.command,
                    args: &config.args,
                    loopback: false,
                    runtime_dir,
                    layers: &config.layers,
                    zygote: None, // Zygote::start makes it one
                    env: function.process_env(),
                    channel: placeholder,
                    stdout: output,
                    stderr: output,
                    // The function's limits, plus room for the copies of pinned pages its
                    // live children hold, which the kernel charges to the zygote.
                    limits: {
                        let mut limits = env_limits(config, self.confined_cpu());
                        limits.memory_bytes += hearth_ipc::zygote::PINNED_COPIES_BUDGET;
                        limits
                    },
                    tmp_bytes: u64::from(config.ephemeral_storage_mb) << 20,
                    cpus: self.env_cpus.as_deref().or(self.local_cpus.as_deref()),
                },
            );
            match started {
                Ok(mut zygote) => {
                    if self.partitioned {
                        // It shares the shard's CPU: it forks only once the shard sleeps.
                        zygote.set_fork_spin(Duration::ZERO);
                    }
                    self.zygotes.insert(function.clone(), zygote, capture)
                }
                Err(e) => self.zygotes.start_failed(&function, &e.to_string()),
            }
        }
    }

    // ----- completion -----------------------------------------------------------------------

    /// Collects responses, deadlines and events without waiting.
    fn collect(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.busy.len() {
            let key = self.busy[i];
            self.drain_responses(key, now);
            i += 1;
        }
        let slots = &self.slots;
        self.busy.retain(|&k| {
            slot_env(slots, k).is_some_and(|e| e.state == State::Live && !e.inflight.is_empty())
        });
        self.poll_events();
        if now >= self.next_capture_check {
            self.check_captures(now);
        }
        if now >= self.next_maintenance {
            self.maintain();
        }
    }

    /// A function printing faster than it is answered fills its capture's file past the window
    /// the shard reads, and the pages it fills count against its memory limit: every
    /// [`CAPTURE_CHECK`], the captures of invocations running longer than that are rewound if
    /// they overflowed (one `lseek` each; the overflow is dropped and counted).
    fn check_captures(&mut self, now: Instant) {
        self.next_capture_check = now + CAPTURE_CHECK;
        for &key in &self.busy {
            let Some(env) = slot_env_mut(&mut self.slots, key) else {
                continue;
            };
            let long = env
                .inflight
                .front()
                .and_then(|i| i.began)
                .is_some_and(|b| now.saturating_duration_since(b) >= CAPTURE_CHECK);
            if let (true, Some(capture)) = (long, env.capture.as_mut()) {
                if capture.overflowed() {
                    // Keep the start of the invocation's output for its record, drop the rest.
                    let room = MAX_RECORD_OUTPUT.saturating_sub(env.early_output.len());
                    let room = env.early_output.len() + room;
                    capture.drain(&mut env.early_output, room);
                    capture.reset(false);
                }
            }
        }
    }

    /// Reads every response `key` has published; enforces its head deadline.
    fn drain_responses(&mut self, key: Key, now: Instant) {
        loop {
            let Some(env) = slot_env_mut(&mut self.slots, key) else {
                return;
            };
            if env.state != State::Live || env.inflight.is_empty() {
                return;
            }
            match env.channel.poll(&mut self.scratch) {
                Ok(Some(done)) => {
                    let Some(inflight) = env.inflight.pop_front() else {
                        return;
                    };
                    debug_assert_eq!(inflight.id, done.id, "the channel checks ids");
                    self.shared
                        .account
                        .release(env.function.concurrency(), inflight.ticket);
                    if !env.setup_done {
                        // The first answer proves the program runs: the setup stack can go.
                        env.setup_done = true;
                        let _ = env.process.poll_setup();
                    }
                    let timeout = env.function.config().timeout;
                    let began = inflight.began;
                    env.initializing = false;
                    if let Some(next) = env.inflight.front_mut() {
                        next.deadline = Some(now + timeout);
                        next.began = Some(now);
                    }
                    env.last_used = now;
                    let env_pid = env.process.pid();
                    let idle = env.inflight.is_empty();
                    let function_id = env.function.id();
                    let error = match done.status {
                        ResponseStatus::Ok => None,
                        ResponseStatus::Error | ResponseStatus::Unhandled => {
                            Some(FunctionError::Handled)
                        }
                        ResponseStatus::TooLarge => {
                            let error = FunctionError::ResponseSizeTooLarge(done.len);
                            self.scratch =
                                error.document(&format_request_id(&inflight.request_id), timeout);
                            Some(error)
                        }
                    };
                    let (start, request_id) = (inflight.start, inflight.request_id);
                    let tail = self.log_record(
                        key,
                        &inflight,
                        began.map_or(Duration::ZERO, |b| now.saturating_duration_since(b)),
                        done.run_us,
                        b"",
                    );
                    self.finish(
                        inflight,
                        Ok(Outcome {
                            error,
                            start,
                            env_pid,
                            request_id,
                        }),
                        tail,
                    );
                    if done.last {
                        // It ends after this answer (its runtime exited): no more work for it.
                        self.kill(key, None);
                    } else if idle {
                        if let Some(pool) = self.pools.get_mut(&function_id) {
                            pool.busy.retain(|k| *k != key);
                            pool.idle.push(key);
                        }
                    }
                }
                Ok(None) => {
                    let timeout = env.function.config().timeout;
                    if env.initializing {
                        let head = env.inflight.front().map(|i| i.id);
                        if head.is_some_and(|id| env.channel.taken(id)) {
                            // Init is over (the runtime asked for the invocation): its own
                            // timeout starts now.
                            env.initializing = false;
                            if let Some(head) = env.inflight.front_mut() {
                                head.deadline = Some(now + timeout);
                            }
                        }
                    }
                    let deadline = env.inflight.front().and_then(|i| i.deadline);
                    let running =
                        deadline.map(|d| timeout.saturating_sub(d.saturating_duration_since(now)));
                    if env.local && running.is_some_and(|r| r >= LOCAL_RUN_LIMIT) {
                        // A long invocation would hold the shard's CPU: let the kernel run it
                        // on the others.
                        if let Some(cpus) = self.env_cpus.as_deref() {
                            if crate::sys::set_affinity(env.process.pid(), cpus).is_ok() {
                                env.local = false;
                            }
                        }
                    }
                    if deadline.is_some_and(|d| now >= d) {
                        self.stats.timeouts += 1;
                        self.kill(key, Some(FunctionError::Timedout));
                    }
                    return;
                }
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    self.kill(key, Some(FunctionError::InvalidResponse(e)));
                    return;
                }
            }
        }
    }

    /// Delivers a finished invocation (its payload is in `scratch`) to its caller. The ticket
    /// has already been released.
    fn finish(
        &mut self,
        mut inflight: Inflight,
        result: Result<Outcome, InvokeError>,
        log_tail: Option<Vec<u8>>,
    ) {
        if let Some(again) = inflight.again.take() {
            self.recycle(again.payload);
        }
        if inflight.sync {
            std::mem::swap(&mut self.sync_payload, &mut self.scratch);
            self.sync_result = Some((inflight.tag, result));
        } else {
            let mut payload = self.buffers.pop().unwrap_or_default();
            std::mem::swap(&mut payload, &mut self.scratch);
            self.completions.push_back(Completion {
                tag: inflight.tag,
                result,
                payload,
                log_tail,
            });
        }
        self.scratch.clear();
    }

    /// Collects what `key`'s environment printed for `inflight` (which ran for `ran`; the
    /// environment measured `run_us` of it, 0 if it did not say), frames it with Lambda's
    /// `START`/`END`/`REPORT` lines, buffers the record for the function's log and returns its
    /// tail if the caller asked for it. `note` (hearth's own words about a failure) follows the
    /// output.
    fn log_record(
        &mut self,
        key: Key,
        inflight: &Inflight,
        ran: Duration,
        run_us: u64,
        note: &[u8],
    ) -> Option<Vec<u8>> {
        let env = slot_env_mut(&mut self.slots, key)?;
        self.output.clear();
        if !env.early_output.is_empty() {
            self.output.append(&mut env.early_output);
        }
        let mut dropped = 0;
        if let Some(capture) = env.capture.as_mut() {
            capture.drain(&mut self.output, MAX_RECORD_OUTPUT);
            dropped = capture.take_dropped();
            if env.inflight.is_empty() && capture.wants_reset() {
                capture.reset(false);
                dropped += capture.take_dropped();
            }
        }
        if !note.is_empty() {
            if !self.output.is_empty() && !self.output.ends_with(b"\n") {
                self.output.push(b'\n');
            }
            self.output.extend_from_slice(note);
            self.output.push(b'\n');
        }
        if !self.logs.enabled() && !inflight.tail {
            return None;
        }
        // The environment's own measure excludes its start-up; it cannot claim more than the
        // scheduler saw.
        let run = Duration::from_micros(run_us);
        let (duration, init) = match (inflight.start, run_us) {
            (_, 0) => (ran, None),
            (Start::Cold | Start::Zygote, _) if run <= ran => (run, Some(ran - run)),
            _ => (run.min(ran), None),
        };
        if env.peak_mb == 0 || matches!(inflight.start, Start::Cold | Start::Zygote) {
            env.peak_mb = env.process.memory_peak().map_or(0, |b| b.div_ceil(1 << 20));
        }
        let function = &env.function;
        let request_id = hearth_ipc::request_id_text(&inflight.request_id);
        let report = Report {
            request_id: std::str::from_utf8(&request_id).unwrap_or_default(),
            version: function.version(),
            duration,
            init,
            memory_mb: function.config().memory_mb,
            max_memory_mb: env.peak_mb,
            start: match inflight.start {
                Start::Cold => "cold",
                Start::Warm => "warm",
                Start::Queued => "queued",
                Start::Pool => "pool",
                Start::Zygote => "zygote",
            },
            dropped,
        };
        crate::logs::frame(&mut self.record, &self.output, &report);
        self.logs.push(function.name(), &self.record);
        inflight.tail.then(|| crate::logs::tail(&self.record))
    }

    /// Kills an environment; its head invocation fails with `error` (if given), the rest (which
    /// never started) with a retryable service error.
    fn kill(&mut self, key: Key, error: Option<FunctionError>) {
        let Some(env) = self.env_mut(key) else { return };
        if env.state == State::Dying {
            return;
        }
        // (An environment forked by a zygote has no hearth-init to stop extensions.)
        let graceful = error.is_none()
            && env.inflight.is_empty()
            && env.function.config().launch == Launch::RuntimeApi
            && env.zygote_pid.is_none();
        if graceful {
            // Idle and retired: hearth-init gives its extensions their SHUTDOWN event first.
            env.process.terminate();
            env.stop_by = Some(Instant::now() + GRACEFUL_STOP);
        } else {
            env.process.kill();
        }
        env.state = State::Dying;
        let function = env.function.clone();
        let pid = env.process.pid();
        let inflight = std::mem::take(&mut env.inflight);
        let doorbell = std::mem::replace(&mut env.doorbell_armed, false);
        if doorbell {
            self.uring.cancel_doorbell(key);
        }
        if let Some(pool) = self.pools.get_mut(&function.id()) {
            pool.idle.retain(|k| *k != key);
            pool.busy.retain(|k| *k != key);
        }
        for ticket in inflight.iter().map(|i| i.ticket) {
            self.shared.account.release(function.concurrency(), ticket);
        }
        let mut inflight = inflight;
        if let Some(head) = inflight.pop_front() {
            match error {
                Some(error) => {
                    let timeout = function.config().timeout;
                    self.scratch = error.document(&format_request_id(&head.request_id), timeout);
                    let (start, request_id) = (head.start, head.request_id);
                    let ran = head.began.map_or(Duration::ZERO, |b| b.elapsed());
                    let note = self.scratch.clone();
                    let tail = self.log_record(key, &head, ran, 0, &note);
                    self.finish(
                        head,
                        Ok(Outcome {
                            error: Some(error),
                            start,
                            env_pid: pid,
                            request_id,
                        }),
                        tail,
                    );
                }
                None => {
                    self.scratch.clear();
                    self.finish(
                        head,
                        Err(InvokeError::Service("the environment was stopped".into())),
                        None,
                    );
                }
            }
        }
        for queued in inflight {
            self.scratch.clear();
            self.finish(queued, Err(InvokeError::Service("the environment this invocation was queued on failed before it started; it did not run".into())), None);
        }
    }

    /// Handles completions already in the ring, without waiting.
    fn poll_events(&mut self) {
        self.events.clear();
        let _ = self.uring.wait(Some(Duration::ZERO), &mut self.events);
        self.handle_events();
    }

    fn handle_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                Event::Doorbell(key) => {
                    if let Some(env) = self.env_mut(key) {
                        env.doorbell_armed = false;
                    }
                }
                Event::Exit(key) => self.on_exit(key),
                Event::Net {
                    op,
                    key,
                    result,
                    more,
                } => self.net_events.push(NetEvent {
                    op,
                    key,
                    result,
                    more,
                }),
                Event::Mailbox => {
                    self.mailbox_ready = true;
                    if let Some(fd) = &self.mailbox {
                        crate::sys::eventfd_drain(fd.as_fd());
                        self.uring.arm_mailbox(fd.as_fd());
                    }
                }
            }
        }
        self.events = events;
    }

    /// An environment's first process exited (on its own, or because it was killed).
    fn on_exit(&mut self, key: Key) {
        let now = Instant::now();
        // Answers it published before dying still count.
        self.drain_responses(key, now);
        let zygote_exit = self.env(key).and_then(|e| e.zygote_pid);
        if let Some(child) = zygote_exit {
            let reported = self.zygotes.exit_status(child);
            if let (Some(status), Some(env)) = (reported, self.env_mut(key)) {
                env.process.set_exit_status(status);
            }
        }
        let Some(env) = self.env_mut(key) else { return };
        let status = env
            .process
            .try_wait()
            .ok()
            .flatten()
            .unwrap_or(ExitStatus::Signaled(libc::SIGKILL));
        if env.state == State::Live {
            let setup = env.process.poll_setup();
            let function = env.function.name().to_owned();
            let head_taken = env
                .inflight
                .front()
                .map(|i| i.id)
                .map(|id| env.channel.taken(id));
            let idle = env.inflight.is_empty().then(|| env.function.id());
            self.stats.exits += 1;
            if let Some(pool) = idle.and_then(|id| self.pools.get_mut(&id)) {
                // Died with nothing to do (an Init that fails, a setup step that fails): an
                // environment started ahead of demand would die the same way, so the adaptive
                // pool starts none until invocations ask for new environments again.
                pool.demand.clear();
            }
            match setup {
                SetupState::Failed(f) if f.step == Step::Exec => {
                    self.kill(key, Some(FunctionError::InvalidEntrypoint(f.errno)));
                }
                SetupState::Failed(f) => {
                    self.place_elsewhere(key);
                    self.fail_all(
                        key,
                        &format!("could not start an environment for {function}: {f}"),
                    );
                }
                // It exited while idle, or before taking the invocation it was given.
                _ if head_taken == Some(false) => {
                    self.place_elsewhere(key);
                    self.fail_all(
                        key,
                        &format!("the environment exited ({status}) before this invocation started; it did not run"),
                    );
                }
                _ => self.kill(key, Some(FunctionError::ExitError(status))),
            }
        }
        self.release_env(key);
    }

    /// Places again, on a new environment started from nothing, each invocation that was given
    /// to `key`'s environment, forked by a zygote, which died before taking it (for instance
    /// with its zygote, killed while the environment set itself up): the invocation never ran.
    /// The zygote, if it is still the function's, is discarded (its children are not to be
    /// trusted to serve; a new one comes after the back-off). One that cannot be placed fails
    /// as [`Shard::place`] would have failed it. Each invocation is placed again once at most:
    /// an environment started from nothing keeps no copy. The caller then calls
    /// [`Shard::fail_all`] for the rest (it also takes the environment out of its pool).
    fn place_elsewhere(&mut self, key: Key) {
        let Some(env) = self.env_mut(key) else { return };
        let function = env.function.clone();
        let zygote = env
            .zygote_pid
            .map(|(function_id, zygote_id, _)| (function_id, zygote_id));
        let (again, rest): (VecDeque<Inflight>, VecDeque<Inflight>) =
            std::mem::take(&mut env.inflight)
                .into_iter()
                .partition(|i| i.again.is_some());
        env.inflight = rest;
        if again.is_empty() {
            return;
        }
        if let Some(zygote) = zygote {
            self.zygotes.fail(
                zygote,
                "an environment it forked died before taking its invocation",
            );
        }
        for mut inflight in again {
            let Some(copy) = inflight.again.take() else {
                continue;
            };
            let placed = self.place(
                &function,
                &copy.payload,
                (inflight.tag, inflight.sync, inflight.tail),
                inflight.ticket,
                (copy.context, Some(inflight.request_id)),
            );
            self.recycle(copy.payload);
            match placed {
                Ok(()) => self.stats.placed_again += 1,
                Err(e) => self.fail_unrun(&function, inflight, e),
            }
        }
    }

    /// Fails every invocation on an environment that never ran any of them with a retryable
    /// service error, and marks it dying.
    fn fail_all(&mut self, key: Key, message: &str) {
        let Some(env) = self.env_mut(key) else { return };
        env.state = State::Dying;
        let function = env.function.clone();
        let inflight = std::mem::take(&mut env.inflight);
        if let Some(pool) = self.pools.get_mut(&function.id()) {
            pool.idle.retain(|k| *k != key);
            pool.busy.retain(|k| *k != key);
        }
        for queued in inflight {
            self.fail_unrun(&function, queued, InvokeError::Service(message.to_owned()));
        }
    }

    /// Answers an invocation of `function` that never ran with `error`, releasing its ticket.
    fn fail_unrun(&mut self, function: &Function, inflight: Inflight, error: InvokeError) {
        self.shared
            .account
            .release(function.concurrency(), inflight.ticket);
        self.scratch.clear();
        self.finish(inflight, Err(error), None);
    }

    /// Reaps a dead environment and frees its slot.
    fn release_env(&mut self, key: Key) {
        let Some(slot) = self
            .slots
            .get_mut(key.slot as usize)
            .filter(|s| s.generation == key.generation)
        else {
            return;
        };
        if let Some(mut env) = slot.env.take() {
            if env.doorbell_armed {
                self.uring.cancel_doorbell(key);
            }
            if let Some(child) = env.zygote_pid {
                self.zygotes.forget(child);
            }
            let _ = env.process.wait();
            let _ = env.process.release_cgroup();
            // What it printed after its last invocation (extensions at shutdown, background
            // work) goes to the function's log as it is, outside any invocation's record.
            if let Some(capture) = env.capture.as_mut() {
                self.output.clear();
                capture.drain(&mut self.output, MAX_RECORD_OUTPUT);
                if !self.output.is_empty() {
                    if !self.output.ends_with(b"\n") {
                        self.output.push(b'\n');
                    }
                    self.logs.push(env.function.name(), &self.output);
                }
            }
        }
        slot.generation = slot.generation.wrapping_add(1);
        self.free_slots.push(key.slot);
    }

    // ----- waiting --------------------------------------------------------------------------

    /// Makes progress: collects what is ready; if nothing is, spins for the adaptive limit and
    /// then sleeps until a doorbell, an exit, the mailbox, a deadline or `until`. For the
    /// shard's own loop, which takes the mailbox and the front door's events when it returns.
    fn progress(&mut self, until: Option<Instant>) {
        self.progress_with(until, true);
    }

    /// [`Shard::progress`] for a wait inside a job (`invoke_into`, `poll`, `retire_idle`),
    /// which cannot take the mailbox or the front door's events until it returns: they do not
    /// end the wait (they stay for the shard's loop). Otherwise one mailbox signal during a
    /// job, such as the next job arriving, would make every later call return at once: a busy
    /// loop for the rest of the wait, without a syscall, holding the core, where an
    /// environment woken on it then waits for the kernel's next tick.
    fn progress_in_job(&mut self, until: Option<Instant>) {
        self.progress_with(until, false);
    }

    fn progress_with(&mut self, until: Option<Instant>, loop_events: bool) {
        let before = self.completions.len() + usize::from(self.sync_result.is_some());
        self.collect();
        if self.completions.len() + usize::from(self.sync_result.is_some()) > before
            || (loop_events && (!self.net_events.is_empty() || self.mailbox_ready))
        {
            return;
        }
        let slots = &self.slots;
        let uring = &mut self.uring;
        let busy = &self.busy;
        let mut ready = || {
            busy.iter()
                .any(|&k| slot_env(slots, k).is_some_and(|e| e.channel.response_ready()))
                || uring.has_completions()
        };
        // Spinning would only delay environments that share our CPU. A new environment's first
        // answer (a cold start) comes after hundreds of microseconds, longer than the adaptive
        // limit lets the shard spin.
        let (mut spin, mut starting) = (true, false);
        for &k in busy {
            match slot_env(slots, k) {
                Some(e) => {
                    spin &= !e.local;
                    starting |= !e.setup_done;
                }
                None => spin = false,
            }
        }
        if !self.busy.is_empty() && spin {
            let ready = if starting {
                hearth_ipc::doorbell::spin_until(START_SPIN_MAX, Some(SPIN_YIELD), &mut ready)
            } else {
                self.spin.spin(&mut ready)
            };
            if ready {
                self.collect();
                return;
            }
        }
        self.sleep(until);
        self.collect();
    }

    fn sleep(&mut self, until: Option<Instant>) {
        // Announce sleep on every busy environment's doorbell, then look once more.
        let mut ready = false;
        for &key in &self.busy {
            if let Some(env) = self.env(key) {
                env.channel.host_bell().prepare();
                ready |= env.channel.recheck().unwrap_or(true);
            }
        }
        if !ready {
            let futex = self.uring.has_futex();
            for i in 0..self.busy.len() {
                let key = self.busy[i];
                let Some(env) = slot_env_mut(&mut self.slots, key) else {
                    continue;
                };
                if futex && !env.doorbell_armed {
                    env.doorbell_armed = true;
                    let word = env.channel.host_bell().futex_word();
                    self.uring
                        .arm_doorbell(key, word, hearth_ipc::doorbell::Bell::SLEEPING);
                }
            }
            let now = Instant::now();
            let mut wake = until
                .unwrap_or(now + MAINTENANCE_INTERVAL)
                .min(self.next_maintenance);
            for &key in &self.busy {
                let Some(env) = self.env(key) else { continue };
                if let Some(deadline) = env.inflight.front().and_then(|i| i.deadline) {
                    wake = wake.min(deadline);
                }
                if env.initializing {
                    wake = wake.min(now + INIT_POLL);
                }
                if env.capture.is_some() {
                    wake = wake.min(self.next_capture_check.max(now + CAPTURE_CHECK / 5));
                }
            }
            let mut timeout = wake.saturating_duration_since(now);
            if !futex && !self.busy.is_empty() {
                // No futex waits on this kernel: poll the rings every 50 µs instead.
                timeout = timeout.min(Duration::from_micros(50));
            }
            self.events.clear();
            let _ = self.uring.wait(
                Some(timeout.max(Duration::from_micros(1))),
                &mut self.events,
            );
        }
        for &key in &self.busy {
            if let Some(env) = self.env(key) {
                env.channel.host_bell().cancel();
            }
        }
        self.handle_events();
    }

    // ----- housekeeping ---------------------------------------------------------------------

    /// Reaps environments idle past the keep-alive and those of outdated function revisions.
    pub(crate) fn maintain(&mut self) {
        let now = Instant::now();
        self.next_maintenance = now + MAINTENANCE_INTERVAL;
        self.cpu_latency.maintain(now);
        let keep_alive = self.shared.config.keep_alive;
        let mut reap = Vec::new();
        // Provisioned versions keep their share of environments past the keep-alive; the
        // environments a burst started beyond it expire as any others do.
        let mut keep: HashMap<u64, usize> = HashMap::new();
        for slot in &self.slots {
            let Some(env) = &slot.env else { continue };
            let current = self
                .shared
                .registry
                .is_current(env.function.name(), env.function.id());
            let mut expired = now.duration_since(env.last_used) >= keep_alive;
            let share = self.provisioned_share(&env.function);
            if expired && share > 0 {
                let kept = keep.entry(env.function.id()).or_default();
                if *kept < share {
                    *kept += 1;
                    expired = false;
                }
            }
            // Started by the adaptive pool and never used, and the load that asked for it has
            // not risen for a whole window: stopped now rather than after the keep-alive.
            let unwanted = env.pooled
                && share == 0
                && self
                    .pools
                    .get_mut(&env.function.id())
                    .is_some_and(|p| p.adaptive_target(now) == 0);
            if env.state == State::Live && env.inflight.is_empty() && unwanted {
                reap.push(env.key);
                continue;
            }
            if env.state == State::Live && env.inflight.is_empty() && (!current || expired) {
                reap.push(env.key);
                if expired {
                    // Idle for a whole keep-alive: the load that set its adaptive pool target
                    // is gone, and refilling would only start environments to reap.
                    if let Some(pool) = self.pools.get_mut(&env.function.id()) {
                        pool.demand.clear();
                    }
                }
            }
        }
        for key in reap {
            self.stats.reaped += 1;
            self.kill(key, None);
        }
        for slot in &mut self.slots {
            let Some(env) = slot.env.as_mut() else {
                continue;
            };
            if env.stop_by.is_some_and(|t| now >= t) {
                env.stop_by = None;
                env.process.kill();
            }
            if let Some(capture) = env.capture.as_mut() {
                // A function printing faster than it is answered: drop past the window
                // rather than let the file grow.
                capture.reset(true);
            }
            if std::mem::take(&mut env.used_since_maintenance) {
                if let Some(peak) = env.process.memory_peak() {
                    env.peak_mb = env.peak_mb.max(peak.div_ceil(1 << 20));
                }
            }
        }
        let logs = &mut self.logs;
        let output = &mut self.output;
        self.zygotes
            .maintain(&self.shared.registry, keep_alive, |function, capture| {
                output.clear();
                capture.drain(output, MAX_RECORD_OUTPUT);
                capture.reset(false);
                if !output.is_empty() {
                    if !output.ends_with(b"\n") {
                        output.push(b'\n');
                    }
                    logs.push(function, output);
                }
            });
        self.logs.flush();
        let slots = &self.slots;
        let registry = &self.shared.registry;
        self.pools.retain(|_, pool| {
            pool.idle.retain(|&k| slot_env(slots, k).is_some());
            let current = pool
                .function
                .as_ref()
                .is_some_and(|f| registry.is_current(f.name(), f.id()));
            if !current {
                pool.demand.clear();
            }
            !pool.idle.is_empty() || !pool.busy.is_empty() || pool.adaptive_target(now) > 0
        });
    }

    /// This shard's part of `function`'s provisioned concurrency.
    fn provisioned_share(&self, function: &Function) -> usize {
        let target = function.provisioned() as usize;
        let shards = self.shared.config.shards.max(1);
        target / shards + usize::from(self.index < target % shards)
    }

    /// Idle-time work on the shard thread: housekeeping and refilling the cgroups kept ready.
    pub(crate) fn idle(&mut self) {
        self.housekeeping();
        self.progress(Some(Instant::now() + MAINTENANCE_INTERVAL));
    }

    /// Stops `function`'s idle environments on this shard and waits until they are reaped, so
    /// that its next invocation starts a new environment (benchmarks of cold starts use this).
    /// Its adaptive pool target is forgotten too, so housekeeping does not start them again.
    pub fn retire_idle(&mut self, function: &Function) {
        let idle = self
            .pools
            .get_mut(&function.id())
            .map(|p| {
                p.demand.clear();
                std::mem::take(&mut p.idle)
            })
            .unwrap_or_default();
        for &key in &idle {
            self.kill(key, None);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while idle.iter().any(|&k| self.env(k).is_some()) && Instant::now() < deadline {
            self.progress_in_job(Some(Instant::now() + Duration::from_millis(5)));
        }
    }

    /// Off-the-path housekeeping, run by the shard thread when idle: reaping, and refilling the
    /// empty cgroups kept ready for cold starts. Jobs that keep the shard busy for long can call
    /// it between measurements.
    pub fn housekeeping(&mut self) {
        self.maintain();
        self.refill_channels();
        self.start_zygotes();
        self.provision();
        let _ = self
            .shared
            .sandbox
            .prepare_cgroups(self.shared.config.prepared_cgroups);
    }

    /// Waits until an invocation completes, a front-door socket operation finishes, the mailbox
    /// is signalled or `until` passes (spinning briefly first while invocations are in flight).
    pub(crate) fn wait(&mut self, until: Instant) {
        self.progress(Some(until));
    }

    /// The shard's io_uring, for the front door's sockets.
    pub(crate) fn uring(&mut self) -> &mut Uring {
        &mut self.uring
    }

    /// Moves the finished socket operations into `out`.
    pub(crate) fn take_net_events(&mut self, out: &mut Vec<NetEvent>) {
        out.append(&mut self.net_events);
    }

    /// Environments of function revision `function_id` alive on this shard.
    pub fn live_environments(&self, function_id: u64) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.env.as_ref())
            .filter(|e| e.state == State::Live && e.function.id() == function_id)
            .count()
    }

    /// Starts environments ahead of demand, only from housekeeping (never from the invoke
    /// path) and at most [`POOL_STARTS_PER_PASS`] per [`MAINTENANCE_INTERVAL`]: first for versions with provisioned
    /// concurrency until this shard holds its share of live environments, then for functions
    /// whose invocations had to start environments lately until each has as many idle ones
    /// as it had on-demand starts in the last [`POOL_WINDOW`] (at most
    /// [`crate::EngineConfig::adaptive_pool`]).
    fn provision(&mut self) {
        let now = Instant::now();
        if now < self.next_provision {
            return;
        }
        let mut budget = POOL_STARTS_PER_PASS;
        self.start_ahead(now, &mut budget);
        if budget < POOL_STARTS_PER_PASS {
            self.next_provision = now + MAINTENANCE_INTERVAL;
        }
    }

    fn start_ahead(&mut self, now: Instant, budget: &mut usize) {
        for function in self.shared.registry.provisioned() {
            let share = self.provisioned_share(&function);
            let live = self.live_environments(function.id());
            let wanted = share.saturating_sub(live);
            self.start_pooled(&function, wanted, budget, "a provisioned");
        }
        let registry = &self.shared.registry;
        let mut short: Vec<(Arc<Function>, usize)> = Vec::new();
        for pool in self.pools.values_mut() {
            let target = pool.adaptive_target(now);
            let idle = pool.idle.len();
            let Some(function) = pool.function.as_ref().filter(|_| idle < target) else {
                continue;
            };
            // Not a revision an update or delete replaced since the last maintenance pass.
            if registry.is_current(function.name(), function.id()) {
                short.push((function.clone(), target - idle));
            } else {
                pool.demand.clear();
            }
        }
        // Neediest first, so that one function cannot take every pass's budget.
        short.sort_by_key(|(_, wanted)| std::cmp::Reverse(*wanted));
        for (function, wanted) in short {
            self.start_pooled(&function, wanted, budget, "a pooled");
        }
    }

    /// Starts up to `wanted` idle environments of `function` within `budget`, marked as pooled
    /// (their first invocation is [`Start::Pool`]). A failed start (logged as `what`
    /// environment) spends its share of the budget too, so a function that cannot start is
    /// retried no faster than the rate bound, and ends this function's turn.
    fn start_pooled(
        &mut self,
        function: &Arc<Function>,
        wanted: usize,
        budget: &mut usize,
        what: &str,
    ) {
        for _ in 0..wanted {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            match self.start_env(function, true) {
                Ok((key, _)) => {
                    if let Some(env) = self.env_mut(key) {
                        env.pooled = true;
                    }
                    if let Some(pool) = self.pools.get_mut(&function.id()) {
                        pool.idle.push(key);
                    }
                }
                Err(e) => {
                    tracing::warn!(function = function.name(), version = function.version(), error = %e, "could not start {what} environment");
                    return;
                }
            }
        }
    }

    /// Whether the mailbox was signalled since the last call.
    pub(crate) fn take_mailbox(&mut self) -> bool {
        std::mem::take(&mut self.mailbox_ready)
    }

    /// Kills every environment and waits for them (shutdown).
    pub(crate) fn stop_all(&mut self) {
        let keys: Vec<Key> = self
            .slots
            .iter()
            .filter_map(|s| s.env.as_ref().map(|e| e.key))
            .collect();
        for &key in &keys {
            self.kill(key, None);
        }
        // Environments stopping gracefully get their grace period, then are killed.
        let deadline = Instant::now() + GRACEFUL_STOP;
        while keys
            .iter()
            .any(|&k| self.env(k).is_some_and(|e| e.stop_by.is_some()))
            && Instant::now() < deadline
        {
            // Stopping: the front door is gone, so its events and the mailbox can wait (left
            // set, they would make `progress` return at once: a busy loop).
            self.mailbox_ready = false;
            self.net_events.clear();
            self.progress(Some(Instant::now() + Duration::from_millis(10)));
        }
        for &key in &keys {
            if let Some(env) = self.env_mut(key) {
                env.process.kill();
            }
        }
        for key in keys {
            self.release_env(key);
        }
        self.pools.clear();
        self.busy.clear();
        self.zygotes.clear();
        self.logs.flush();
    }

    /// Whether the environment `function`'s next warm invocation will use is asleep on its
    /// doorbell (`None` if it has no idle environment). A hint read from shared memory, for
    /// benchmarks that need the environment parked.
    pub fn idle_environment_asleep(&self, function: &Function) -> Option<bool> {
        let key = *self.pools.get(&function.id())?.idle.last()?;
        self.env(key).map(|e| e.channel.guest_sleeping())
    }

    /// Pids of this shard's live environments (for tests and diagnostics).
    pub fn environment_pids(&self) -> Vec<i32> {
        self.slots
            .iter()
            .filter_map(|s| s.env.as_ref())
            .filter(|e| e.state == State::Live)
            .map(|e| e.process.pid())
            .collect()
    }

    /// Pids (as the host sees them) of this shard's zygote processes.
    pub fn zygote_pids(&mut self) -> Vec<i32> {
        self.zygotes.pids()
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Native and plain Python functions fork from a zygote; Node (V8's own threads), Python
    /// with an exec wrapper or an extension (they need hearth-init) start from nothing.
    #[test]
    fn only_runtimes_that_fork_cooperatively_get_zygotes() {
        let code = tempfile::tempdir().unwrap();
        let runtime = |runtime: &str, handler: &str| {
            let mut config = crate::FunctionConfig::new("f", code.path(), handler);
            config.launch = Launch::RuntimeApi;
            config.runtime = runtime.into();
            config
        };
        assert!(forks(&crate::FunctionConfig::new("f", code.path(), "echo")));
        assert!(forks(&runtime("python3.12", "app.handler")));
        assert!(!forks(&runtime("nodejs20.x", "index.handler")));
        let mut wrapped = runtime("python3.12", "app.handler");
        wrapped
            .environment
            .push(("AWS_LAMBDA_EXEC_WRAPPER".into(), "/opt/wrap".into()));
        assert!(!forks(&wrapped));
        let layer = tempfile::tempdir().unwrap();
        std::fs::create_dir(layer.path().join("extensions")).unwrap();
        let mut extended = runtime("python3.12", "app.handler");
        extended.layers.push(layer.path().to_owned());
        assert!(!forks(&extended));
    }
}
