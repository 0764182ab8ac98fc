//! The engine: the function registry, admission counters and sandbox shared by every shard, and
//! one pinned thread per shard.
//!
//! Embedded use runs work *on* a shard ([`Engine::on_shard`]): the closure gets the shard and
//! invokes from its thread, so the invoke path has no hand-off between threads (on a 2-core
//! machine the caller, a shard thread and the environment cannot all spin on their own core).
//! [`Engine::invoke`] is the convenience form that hands one invocation to a shard.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use hearth_sandbox::{Sandbox, SandboxConfig, SandboxError};

use crate::admission::Account;
use crate::config::{EngineConfig, FunctionConfig};
use crate::error::{InvokeError, RegistryError};
use crate::registry::{Function, Registry};
use crate::shard::{Outcome, Shard, ShardStats};
use crate::sys;

/// State shared by all shards.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) registry: Registry,
    pub(crate) account: Account,
    pub(crate) sandbox: Sandbox,
    /// The runtime directory for [`crate::Launch::RuntimeApi`] environments, or why there is
    /// none.
    pub(crate) runtime_dir: Result<std::path::PathBuf, String>,
    /// Keeps the runtime directory from being removed by another hearth while this engine runs
    /// (`None` for one named in the configuration, which hearth never removes).
    _runtime_dir_in_use: Option<crate::runtime_dir::InUse>,
}

type Job = Box<dyn FnOnce(&mut Shard) + Send>;

/// Work a shard thread does between mailbox jobs instead of idling: the HTTP front door.
pub(crate) trait ShardService: Send {
    /// Handles what is ready and waits (on the shard's ring) until something else is.
    fn turn(&mut self, shard: &mut Shard);
    /// The shard is stopping: finish or fail what is in flight.
    fn stop(&mut self, shard: &mut Shard);
}

/// Wakes a shard thread from another thread (its mailbox eventfd).
#[derive(Debug)]
pub(crate) struct Waker(OwnedFd);

impl Waker {
    pub(crate) fn wake(&self) {
        sys::eventfd_signal(self.0.as_fd());
    }
}

struct ShardHandle {
    mailbox: Sender<Job>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

/// Starting the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Preparing the sandbox.
    #[error("preparing the sandbox")]
    Sandbox(#[from] SandboxError),
    /// Starting a shard (thread, eventfd, io_uring).
    #[error("starting shard {shard}")]
    Shard {
        /// Which.
        shard: usize,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A shard thread is gone (it panicked).
    #[error("shard {0} is no longer running")]
    ShardGone(usize),
}

/// The engine.
pub struct Engine {
    shared: Arc<Shared>,
    shards: Vec<ShardHandle>,
    stop: Arc<AtomicBool>,
    log_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Prepares the sandbox and starts one thread per shard.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        Self::start_with(config, Vec::new())
    }

    /// Starts the engine with `services[i]` running on shard `i`'s thread between jobs.
    pub(crate) fn start_with(
        config: EngineConfig,
        services: Vec<Box<dyn ShardService>>,
    ) -> Result<Self, EngineError> {
        let mut services = services.into_iter();
        sys::raise_nofile_limit();
        let sandbox = Sandbox::new(SandboxConfig {
            // Confining environments to their shard's CPU takes cpuset cgroups.
            cpusets: config.env_cpus == crate::EnvCpus::SameAsShard && config.pin_shards,
            ..config.sandbox.clone()
        })?;
        let (runtime_dir, runtime_dir_in_use) = match &config.runtime_dir {
            Some(dir) => (Ok(dir.clone()), None),
            None => match crate::runtime_dir::find_init().and_then(|init| {
                crate::runtime_dir::prepare(&config.sandbox.state_dir, &init)
                    .map_err(|e| format!("preparing the runtime directory: {e}"))
            }) {
                Ok((dir, in_use)) => (Ok(dir), Some(in_use)),
                Err(e) => (Err(e), None),
            },
        };
        if let Err(e) = &runtime_dir {
            tracing::warn!(error = %e, "functions on Lambda runtimes (provided, python, node) cannot start");
        }
        let (log_sender, log_thread) = match &config.logs {
            Some(logs) => {
                let (sender, thread) = crate::logs::spawn_writer(logs.clone())
                    .map_err(|source| EngineError::Shard { shard: 0, source })?;
                (Some(sender), Some(thread))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            runtime_dir,
            _runtime_dir_in_use: runtime_dir_in_use,
            registry: Registry::new(config.region.clone(), config.account_id.clone()),
            account: Account::new(config.account_concurrency),
            sandbox,
            config: config.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = sys::allowed_cpus();
        let mut engine = Self {
            shared: shared.clone(),
            shards: Vec::new(),
            stop: stop.clone(),
            log_thread,
        };
        for index in 0..config.shards.max(1) {
            let cpu = config.pin_shards.then(|| cpus[index % cpus.len()]);
            let err = |source| EngineError::Shard {
                shard: index,
                source,
            };
            let eventfd = sys::eventfd().map_err(err)?;
            let wake = eventfd.try_clone().map_err(err)?;
            let (mailbox, jobs) = crossbeam_channel::unbounded::<Job>();
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let (shared, stop, cpus) = (shared.clone(), stop.clone(), cpus.clone());
            let logs = log_sender.clone();
            let mut service = services.next();
            let thread = std::thread::Builder::new()
                .name(format!("hearth-shard-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = sys::pin_current_thread(cpu) {
                            tracing::warn!(shard = index, cpu, error = %e, "could not pin shard thread");
                        }
                    }
                    let mut shard = match Shard::new(index, cpu, &cpus, shared, Some(eventfd), logs) {
                        Ok(shard) => {
                            let _ = ready_tx.send(Ok(()));
                            shard
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        while let Ok(job) = jobs.try_recv() {
                            job(&mut shard);
                        }
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        shard.take_mailbox();
                        match service.as_mut() {
                            Some(service) => service.turn(&mut shard),
                            None => shard.idle(),
                        }
                    }
                    if let Some(service) = service.as_mut() {
                        service.stop(&mut shard);
                    }
                })
                .map_err(err)?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(err(e)),
                Err(_) => return Err(EngineError::ShardGone(index)),
            }
            engine.shards.push(ShardHandle {
                mailbox,
                wake,
                thread: Some(thread),
            });
        }
        Ok(engine)
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A handle that wakes shard `index`'s thread.
    pub(crate) fn waker(&self, index: usize) -> std::io::Result<Waker> {
        let handle = &self.shards[index % self.shards.len()];
        Ok(Waker(handle.wake.try_clone()?))
    }

    /// The sandbox all environments are built by.
    pub fn sandbox(&self) -> &Sandbox {
        &self.shared.sandbox
    }

    /// Runs `job` on shard `index`'s thread and returns its result. Invocations made by `job`
    /// through the shard dispatch from that thread with no further hand-off.
    pub fn on_shard<R, F>(&self, index: usize, job: F) -> Result<R, EngineError>
    where
        F: FnOnce(&mut Shard) -> R + Send + 'static,
        R: Send + 'static,
    {
        let index = index % self.shards.len();
        let handle = &self.shards[index];
        let (tx, rx) = crossbeam_channel::bounded(1);
        handle
            .mailbox
            .send(Box::new(move |shard| {
                let _ = tx.send(job(shard));
            }))
            .map_err(|_| EngineError::ShardGone(index))?;
        sys::eventfd_signal(handle.wake.as_fd());
        rx.recv().map_err(|_| EngineError::ShardGone(index))
    }

    /// Invokes function `name` on the shard its name hashes to (so its warm environments are
    /// found again), handing the invocation to that shard's thread.
    pub fn invoke(&self, name: &str, payload: &[u8]) -> Result<(Outcome, Vec<u8>), InvokeError> {
        let shard = self.shard_for(name);
        let (name, payload) = (name.to_owned(), payload.to_vec());
        self.on_shard(shard, move |s| s.invoke(&name, &payload))
            .map_err(|e| InvokeError::Service(e.to_string()))?
    }

    /// The shard [`Engine::invoke`] uses for `name`.
    pub fn shard_for(&self, name: &str) -> usize {
        // FNV-1a: stable, cheap, good enough to spread names over a few shards.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        usize::try_from(hash % self.shards.len() as u64).unwrap_or(0)
    }

    /// Registers a function.
    pub fn create_function(&self, config: FunctionConfig) -> Result<Arc<Function>, RegistryError> {
        self.shared.registry.create(config)
    }

    /// Replaces a function's code and configuration. Warm environments of the old revision are
    /// never used again and are reaped shortly.
    pub fn update_function(&self, config: FunctionConfig) -> Result<Arc<Function>, RegistryError> {
        self.shared.registry.update(config)
    }

    /// Removes a function (and its reservation).
    pub fn delete_function(&self, name: &str) -> Result<(), RegistryError> {
        self.shared.registry.delete(&self.shared.account, name)
    }

    /// The current revision of a function.
    pub fn function(&self, name: &str) -> Option<Arc<Function>> {
        self.shared.registry.get(name)
    }

    /// Version or alias `qualifier` of function `name` (`None`: `$LATEST`); an alias with a
    /// traffic split picks one of its versions by `draw` (uniform below one million).
    pub fn resolve(&self, name: &str, qualifier: Option<&str>, draw: u32) -> Option<Arc<Function>> {
        self.shared.registry.resolve(name, qualifier, draw)
    }

    /// Installs numbered version `version` of `config.name` (immutable from then on).
    pub fn put_version(
        &self,
        config: FunctionConfig,
        version: &str,
    ) -> Result<Arc<Function>, RegistryError> {
        self.shared.registry.put_version(config, version)
    }

    /// Removes a numbered version and the aliases routing to it.
    pub fn delete_version(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        self.shared.registry.delete_version(name, version)
    }

    /// Points an alias at a version, optionally sending `weight` millionths of its invocations
    /// to a second version.
    pub fn put_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
        secondary: Option<(&str, u32)>,
    ) -> Result<(), RegistryError> {
        self.shared
            .registry
            .put_alias(name, alias, version, secondary)
    }

    /// Removes an alias.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<(), RegistryError> {
        self.shared.registry.delete_alias(name, alias)
    }

    /// Keeps `count` environments started for version `version` of `name` across the shards
    /// (provisioned concurrency; 0 stops keeping them).
    pub fn set_provisioned(
        &self,
        name: &str,
        version: &str,
        count: u32,
    ) -> Result<(), RegistryError> {
        self.shared.registry.set_provisioned(name, version, count)
    }

    /// Environments of revision `function_id` alive on all shards.
    pub fn live_environments(&self, function_id: u64) -> usize {
        (0..self.shards.len())
            .filter_map(|i| {
                self.on_shard(i, move |s| s.live_environments(function_id))
                    .ok()
            })
            .sum()
    }

    /// Every function, by name.
    pub fn functions(&self) -> Vec<Arc<Function>> {
        self.shared.registry.list()
    }

    /// Reserves `n` of the account's concurrency for function `name` (Lambda's
    /// PutFunctionConcurrency): `n` is then both its guarantee and its ceiling.
    pub fn put_function_concurrency(&self, name: &str, n: u32) -> Result<(), RegistryError> {
        self.shared
            .registry
            .set_reservation(&self.shared.account, name, Some(n))
    }

    /// Removes a reservation.
    pub fn delete_function_concurrency(&self, name: &str) -> Result<(), RegistryError> {
        self.shared
            .registry
            .set_reservation(&self.shared.account, name, None)
    }

    /// The account limit and what is left unreserved.
    pub fn account_concurrency(&self) -> (u32, u32) {
        (
            self.shared.account.limit(),
            self.shared.account.unreserved_limit(),
        )
    }

    /// Each shard's counters.
    pub fn stats(&self) -> Vec<ShardStats> {
        (0..self.shards.len())
            .filter_map(|i| self.on_shard(i, |s| s.stats()).ok())
            .collect()
    }

    /// Stops every environment and shard thread.
    pub fn shutdown(mut self) {
        self.stop_shards();
    }

    fn stop_shards(&mut self) {
        self.stop.store(true, Ordering::Release);
        for handle in &self.shards {
            sys::eventfd_signal(handle.wake.as_fd());
        }
        for handle in &mut self.shards {
            if let Some(thread) = handle.thread.take() {
                let _ = thread.join();
            }
        }
        // The shards flushed their logs when they stopped and dropped their senders: the log
        // thread writes what is queued and ends.
        if let Some(thread) = self.log_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_shards();
    }
}
