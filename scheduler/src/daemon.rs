//! `hearth serve`: the engine, a front door on every shard, the control thread, and an orderly
//! shutdown on SIGTERM (stop accepting, finish in-flight requests, stop every environment).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::api::control::{Control, ReplyTo};
use crate::api::Identity;
use crate::auth::{AccessKey, Verifier};
use crate::engine::{Engine, ShardService};
pub use crate::http::server::Timeouts;
use crate::http::server::{tcp_listener, Drain, FrontDoor, FrontDoorConfig};
use crate::EngineConfig;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP; every shard has its own `SO_REUSEPORT` socket.
    Tcp(SocketAddr),
    /// A unix socket (for a proxy on the same machine); accepted by shard 0.
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Self::Unix(path.into())),
            Some(_) => Err("unix: needs a path".into()),
            None => s
                .parse()
                .map(Self::Tcp)
                .map_err(|e| format!("'{s}' is not ADDR:PORT or unix:PATH: {e}")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "http://{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A configured access key (`--config` file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Access key id.
    pub id: String,
    /// Secret access key.
    pub secret: String,
}

/// The `--config` file (JSON). Every field is optional; command-line flags win.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Addresses to listen on.
    pub listen: Option<Vec<String>>,
    /// State directory.
    pub data_dir: Option<PathBuf>,
    /// Accepted access keys; none configured means a generated key is used.
    pub access_keys: Option<Vec<KeyConfig>>,
    /// Region shown in ARNs and to functions.
    pub region: Option<String>,
    /// Account id shown in ARNs.
    pub account_id: Option<String>,
    /// Account-wide concurrency limit.
    pub account_concurrency: Option<u32>,
    /// Number of shards (default: one per CPU).
    pub shards: Option<usize>,
    /// Where environments run (default `adaptive`; `same_as_shard` places every function's
    /// environments on the CPU of the shard that invoked it).
    pub env_cpus: Option<crate::EnvCpus>,
    /// Most idle environments a function keeps ready per shard beyond provisioned concurrency
    /// (default 4; 0 turns the adaptive pool off).
    pub adaptive_pool: Option<usize>,
    /// Milliseconds idle CPUs keep polling after a shard's last invocation instead of halting
    /// (default 100; 0: they halt at once, as without hearth).
    pub idle_cpu_poll_ms: Option<u64>,
    /// Milliseconds a client has to send a request head (default 10000).
    pub head_timeout_ms: Option<u64>,
    /// Milliseconds a request body may pause (default 10000).
    pub body_timeout_ms: Option<u64>,
    /// Milliseconds an idle keep-alive connection stays open (default 60000).
    pub idle_timeout_ms: Option<u64>,
}

/// Settings of `hearth serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listening addresses.
    pub listen: Vec<Listen>,
    /// State directory.
    pub data_dir: PathBuf,
    /// Access keys from the configuration (empty: generated).
    pub access_keys: Vec<AccessKey>,
    /// Verify signatures.
    pub auth: bool,
    /// ARN identity.
    pub identity: Identity,
    /// Client timeouts.
    pub timeouts: Timeouts,
    /// Engine settings.
    pub engine: EngineConfig,
}

/// The default data directory: `$XDG_DATA_HOME/hearth`, else `~/.local/share/hearth`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("hearth");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/hearth")
}

/// The generated key pair of a data directory, as an AWS shared-credentials file.
fn credentials(data_dir: &Path) -> std::io::Result<(AccessKey, bool)> {
    let path = data_dir.join("credentials");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_owned())
        };
        if let (Some(id), Some(secret)) =
            (value("aws_access_key_id"), value("aws_secret_access_key"))
        {
            return Ok((AccessKey { id, secret }, false));
        }
    }
    let key = AccessKey::generate()?;
    let text = format!(
        "# hearth's generated access key for this data directory\n[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        key.id, key.secret
    );
    let tmp = data_dir.join("credentials.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok((key, true))
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: all-zero is a valid (empty) sigset_t.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: adds a valid signal number to a local set.
        unsafe { libc::sigaddset(&mut set, signal) };
    }
    // SAFETY: blocks the set in this thread; every thread started afterwards inherits the mask
    // (environments reset theirs), so the signals wait for `sigtimedwait` here.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}

/// Waits up to `timeout` for SIGTERM or SIGINT.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: sigtimedwait with a valid set and timespec; no siginfo wanted.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (signal > 0).then_some(signal)
}

/// Each shard's listening sockets, and the addresses they are bound to (a TCP port 0 becomes
/// the port the kernel chose).
fn listeners(
    listen: &[Listen],
    shards: usize,
) -> std::io::Result<(Vec<Vec<OwnedFd>>, Vec<Listen>)> {
    let mut per_shard: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
    let mut bound_to = Vec::new();
    for address in listen {
        match address {
            Listen::Tcp(addr) => {
                let first = tcp_listener(*addr)?;
                // Port 0: the other shards bind the port the first one got.
                let bound = std::net::TcpListener::from(first.try_clone()?).local_addr()?;
                per_shard[0].push(first);
                for sockets in per_shard.iter_mut().skip(1) {
                    sockets.push(tcp_listener(bound)?);
                }
                bound_to.push(Listen::Tcp(bound));
            }
            Listen::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let listener = std::os::unix::net::UnixListener::bind(path)?;
                per_shard[0].push(OwnedFd::from(listener));
                bound_to.push(address.clone());
            }
        }
    }
    Ok((per_shard, bound_to))
}

/// Where the daemon with data directory `data_dir` keeps function logs (one directory per
/// function; see [`crate::logs`]).
pub fn logs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

/// Runs the daemon until SIGTERM or SIGINT, then drains and stops. A second signal stops at
/// once, failing what is still in flight.
pub fn serve(config: ServeConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let signals = block_signals();
    std::fs::create_dir_all(&config.data_dir)?;
    let verifier = if config.auth {
        let keys = if config.access_keys.is_empty() {
            let (key, generated) = credentials(&config.data_dir)?;
            if generated {
                print_generated(&key, &config);
            }
            vec![key]
        } else {
            config.access_keys.clone()
        };
        Some(Verifier::new(keys, "lambda"))
    } else {
        tracing::warn!("signature verification is OFF (--insecure-no-auth): anyone who can reach the port can create and run code");
        None
    };
    let shards = config.engine.shards.max(1);
    let mut engine_config = config.engine.clone();
    engine_config.shards = shards;
    engine_config.region = config.identity.region.clone();
    engine_config.account_id = config.identity.account.clone();
    if engine_config.logs.is_none() {
        engine_config.logs = Some(crate::config::LogConfig::new(logs_dir(&config.data_dir)));
    }
    let (sockets, bound_to) = listeners(&config.listen, shards)?;
    let drain = Arc::new(Drain::default());
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let mut reply_senders = Vec::new();
    let mut services: Vec<Box<dyn ShardService>> = Vec::new();
    for (index, sockets) in sockets.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::unbounded();
        reply_senders.push(tx);
        services.push(Box::new(FrontDoor::new(
            index,
            sockets,
            FrontDoorConfig {
                identity: config.identity.clone(),
                verifier: verifier.clone(),
                timeouts: config.timeouts,
            },
            control_tx.clone(),
            rx,
            drain.clone(),
        )));
    }
    drop(control_tx);
    let engine = Engine::start_with(engine_config, services)?;
    let reply_to = ReplyTo {
        replies: reply_senders,
        wakers: (0..shards)
            .map(|i| engine.waker(i))
            .collect::<std::io::Result<_>>()?,
    };
    let mut control = Control::open(&config.data_dir, config.identity.clone(), &engine)?;
    // The registry holds every stored function now: start accepting.
    drain.open.store(true, Ordering::Release);
    for waker in &reply_to.wakers {
        waker.wake();
    }
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::scope(|scope| {
        let engine = &engine;
        let control_thread = std::thread::Builder::new()
            .name("hearth-control".into())
            .spawn_scoped(scope, move || {
                control.run(engine, &control_rx, &stop_rx, &reply_to)
            });
        for address in &bound_to {
            eprintln!("hearth: listening on {address}");
        }
        let signal = loop {
            if let Some(signal) = wait_signal(&signals, Duration::from_secs(3600)) {
                break signal;
            }
        };
        tracing::info!(
            signal,
            "draining: no new connections; finishing requests in flight"
        );
        drain.requested.store(true, Ordering::Release);
        for i in 0..shards {
            if let Ok(waker) = engine.waker(i) {
                waker.wake();
            }
        }
        // Lambda's longest timeout bounds how long an invocation in flight can take.
        let deadline = Instant::now() + Duration::from_secs(905);
        while drain.finished.load(Ordering::Acquire) < shards && Instant::now() < deadline {
            if wait_signal(&signals, Duration::from_millis(20)).is_some() {
                tracing::warn!("second signal: stopping without waiting for requests in flight");
                break;
            }
        }
        let _ = stop_tx.send(());
        if let Ok(thread) = control_thread {
            let _ = thread.join();
        }
    });
    engine.shutdown();
    for address in &config.listen {
        if let Listen::Unix(path) = address {
            let _ = std::fs::remove_file(path);
        }
    }
    eprintln!("hearth: stopped");
    Ok(())
}

fn print_generated(key: &AccessKey, config: &ServeConfig) {
    let endpoint = config
        .listen
        .iter()
        .find_map(|l| match l {
            Listen::Tcp(addr) => Some(format!("http://{addr}")),
            Listen::Unix(_) => None,
        })
        .unwrap_or_else(|| "http://127.0.0.1:9001".into());
    let region = &config.identity.region;
    eprintln!(
        "hearth: generated an access key for this data directory; it is stored in {}\n\
         hearth: it is printed this once. Use it with:\n\
         \n    export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={region}\
         \n    aws --endpoint-url {endpoint} lambda list-functions\
         \n    boto3.client(\"lambda\", endpoint_url=\"{endpoint}\", region_name=\"{region}\")\n",
        config.data_dir.join("credentials").display(),
        key.id,
        key.secret,
    );
}
