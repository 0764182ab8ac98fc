//! Containment under load: how a well-behaved function fares while others abuse their
//! environments (`noisy.victim`), and how soon after its deadline a timed-out environment is
//! entirely gone (`timeout.kill`).
//!
//! Both run on an engine of their own with two shards: the victim on shard 0, the abusers on
//! shard 1, every environment on its shard's CPU (`EnvCpus::SameAsShard`, the placement for
//! functions that must not slow each other); `noisy.victim.adaptive` repeats `noisy.victim`
//! with the default placement by load, which runs a lone environment on another shard's CPU.
//! The victim is invoked once a millisecond (its environment sleeps between calls, as
//! a service's would); its latency is measured quiet, then while each abuse runs in turn. The
//! victim's handler answers the time it ran at (`clock`), which splits each call in two:
//! delivery (from the shard's submit until the handler runs: waking the environment on its
//! CPU) and return (from the handler until the shard has the answer: mostly the shard getting
//! its own CPU back). Each part's p99, and how many calls one of them delayed by more than 1 ms, are
//! reported, quiet and per abuse: they say on whose CPU the tail was made.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_scheduler::{
    Engine, EngineConfig, EnvCpus, FunctionConfig, FunctionError, FunctionOutput,
};
use serde_json::{json, Value};

use crate::report::{round2, Latencies};

const VICTIM_EVENT: &[u8] = br#"{"hello":"hearth"}"#;

/// A part of a victim call that took longer than this counts as a slow call.
const SLOW: Duration = Duration::from_millis(1);

/// The victim's calls: whole, and split at the moment its handler ran.
struct VictimCalls {
    total: Latencies,
    delivery: Latencies,
    returned: Latencies,
    slow_delivery: u64,
    slow_returned: u64,
}

impl VictimCalls {
    fn new() -> Self {
        Self {
            total: Latencies::new(),
            delivery: Latencies::new(),
            returned: Latencies::new(),
            slow_delivery: 0,
            slow_returned: 0,
        }
    }

    fn json(&self, prefix: &str) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Value| m.insert(format!("{prefix}{k}"), v);
        put("p50_us", self.total.quantile_us(0.5).into());
        put("p99_us", self.total.quantile_us(0.99).into());
        put("delivery_p99_us", self.delivery.quantile_us(0.99).into());
        put("return_p99_us", self.returned.quantile_us(0.99).into());
        put("slow_delivery", self.slow_delivery.into());
        put("slow_return", self.slow_returned.into());
        m
    }
}

/// CLOCK_MONOTONIC, the clock the victim's `clock` handler answers with.
fn monotonic() -> Result<Duration> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .context("reading CLOCK_MONOTONIC")?;
    Ok(Duration::from(now))
}

/// The abuses, each with its handler, event and memory.
const ABUSES: &[(&str, &str, &[u8], u32)] = &[
    ("cpu", "spin", b"200", 128),
    // The same spin after asking for every CPU: placement alone would not hold it.
    ("cpu_widened", "widespin", b"200", 128),
    ("fork_bomb", "forkbomb", b"", 512),
    ("memory", "alloc", b"4096", 128),
    ("tmp_fill", "filltmp", b"", 1024),
    ("stdout_flood", "flood", b"200", 128),
];

pub struct Containment {
    /// Where the engine places environments.
    pub env_cpus: EnvCpus,
    engine: Arc<Engine>,
    _code: tempfile::TempDir,
}

impl Containment {
    /// The victim, the abusers and the timed-out function on an engine of two shards whose
    /// environments are placed by `env_cpus`.
    pub fn start(sample: &Path, env_cpus: EnvCpus) -> Result<Self> {
        let code = tempfile::tempdir()?;
        std::fs::copy(sample, code.path().join("bootstrap")).context("copying the sample")?;
        let engine = Engine::start(EngineConfig {
            shards: 2,
            env_cpus,
            function_output: FunctionOutput::Discard,
            ..EngineConfig::default()
        })?;
        // The victim gets a full vCPU's share (1769 MB, as Lambda allots CPU); abusers less.
        let mut victim = FunctionConfig::new("victim", code.path(), "clock");
        victim.memory_mb = 1769;
        engine.create_function(victim)?;
        for (name, handler, _, memory) in ABUSES {
            let mut abuser = FunctionConfig::new(*name, code.path(), *handler);
            abuser.memory_mb = *memory;
            abuser.ephemeral_storage_mb = 512;
            abuser.timeout = Duration::from_secs(10);
            engine.create_function(abuser)?;
        }
        let mut orphans = FunctionConfig::new("orphans", code.path(), "orphans");
        orphans.timeout = Duration::from_secs(1);
        // Environments started from nothing: the scenario counts every process of the
        // function, and a zygote would be one that rightly outlives each environment.
        orphans.zygote = false;
        engine.create_function(orphans)?;
        Ok(Self {
            env_cpus,
            engine: Arc::new(engine),
            _code: code,
        })
    }

    /// `n` victim invocations, one a millisecond.
    fn victim(&self, n: u64) -> Result<VictimCalls> {
        self.engine
            .on_shard(0, move |shard| -> Result<VictimCalls> {
                let f = shard.function("victim")?;
                let mut out = Vec::new();
                shard.invoke_into(&f, VICTIM_EVENT, &mut out)?;
                let mut calls = VictimCalls::new();
                for _ in 0..n {
                    std::thread::sleep(Duration::from_millis(1));
                    let sent = monotonic()?;
                    let outcome = shard.invoke_into(&f, VICTIM_EVENT, &mut out)?;
                    let done = monotonic()?;
                    // The handler's moment must lie inside the call.
                    let ran = std::str::from_utf8(&out)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(Duration::from_nanos)
                        .filter(|ran| (sent..=done).contains(ran));
                    let Some(ran) = ran.filter(|_| outcome.error.is_none()) else {
                        bail!(
                            "the victim answered wrongly: {:?} ({outcome:?})",
                            String::from_utf8_lossy(&out)
                        );
                    };
                    calls.total.record(done - sent);
                    calls.delivery.record(ran - sent);
                    calls.returned.record(done - ran);
                    calls.slow_delivery += u64::from(ran - sent > SLOW);
                    calls.slow_returned += u64::from(done - ran > SLOW);
                }
                Ok(calls)
            })?
    }

    /// Runs abuse `index` over and over on shard 1 until `stop`.
    fn abuse(&self, index: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
        let engine = self.engine.clone();
        std::thread::spawn(move || {
            let (name, _, event, _) = ABUSES[index];
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let done = engine.on_shard(1, move |shard| {
                    // Back-to-back jobs leave the shard no idle turn: run its housekeeping
                    // (zygote starts, reaping) here, as the daemon's loop does on a timer.
                    shard.housekeeping();
                    let result = shard.invoke(name, event);
                    // The fork bomb's environment holds a thousand sleepers: start afresh.
                    if let Ok(f) = shard.function(name) {
                        shard.retire_idle(&f);
                    }
                    result
                });
                if done.is_err() {
                    break;
                }
                runs += 1;
            }
            runs
        })
    }
}

/// Victim latency quiet, then under each abuse in turn; p99 under abuse against quiet p99.
pub fn noisy_victim(c: &Containment, n: u64) -> Result<(Latencies, Duration, Value)> {
    let quiet = c.victim(n)?;
    let mut under = Latencies::new();
    let mut per_abuse = serde_json::Map::new();
    let started = Instant::now();
    for (index, (name, ..)) in ABUSES.iter().enumerate() {
        let stats = || c.engine.on_shard(1, |shard| shard.stats());
        let before = stats()?;
        let stop = Arc::new(AtomicBool::new(false));
        let abuser = c.abuse(index, stop.clone());
        // Let the abuse get going.
        std::thread::sleep(Duration::from_millis(100));
        let calls = c.victim(n / ABUSES.len() as u64)?;
        stop.store(true, Ordering::Relaxed);
        let runs = abuser.join().unwrap_or(0);
        let after = stats()?;
        let mut entry = calls.json("");
        entry.insert("abuse_runs".into(), runs.into());
        // How the abusers' environments were started.
        entry.insert(
            "abuser_starts".into(),
            json!({
                "zygote": after.zygote.saturating_sub(before.zygote),
                "cold": after.cold.saturating_sub(before.cold),
            }),
        );
        per_abuse.insert((*name).into(), entry.into());
        under.merge(&calls.total);
    }
    let elapsed = started.elapsed();
    let mut extra = quiet.json("quiet_");
    extra.insert(
        "vs_quiet_p99".into(),
        round2(under.quantile_us(0.99) / quiet.total.quantile_us(0.99)).into(),
    );
    extra.insert("gap_us".into(), 1000.into());
    extra.insert("env_cpus".into(), json!(c.env_cpus));
    extra.insert(
        "slow_us".into(),
        u64::try_from(SLOW.as_micros()).unwrap_or(u64::MAX).into(),
    );
    extra.insert("by_abuse".into(), per_abuse.into());
    Ok((under, elapsed, extra.into()))
}

/// Processes on the host whose environment names function `name`.
fn function_pids(name: &str) -> Vec<i32> {
    let marker = format!("AWS_LAMBDA_FUNCTION_NAME={name}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            std::fs::read(e.path().join("environ"))
                .unwrap_or_default()
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
                .then_some(pid)
        })
        .collect()
}

/// From a timed-out invocation's deadline until every process of its environment (including
/// double-forked, setsid'd ones) is gone.
pub fn timeout_kill(c: &Containment, n: u64) -> Result<(Latencies, Duration, Value)> {
    let mut lat = Latencies::new();
    let started = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let (outcome, _) = c
            .engine
            .on_shard(1, |shard| shard.invoke("orphans", b""))??;
        if outcome.error != Some(FunctionError::Timedout) {
            bail!("expected a timeout, got {:?}", outcome.error);
        }
        let deadline = t0 + Duration::from_secs(1);
        // Every process of the function but the live environments' own (the adaptive pool
        // starts one ahead of the next call once the timed-out one is gone: it has run nothing).
        let left = || -> Result<bool> {
            let pids = function_pids("orphans");
            let live = c.engine.on_shard(1, |shard| shard.environment_pids())?;
            Ok(pids.iter().any(|p| !live.contains(p)))
        };
        while left()? {
            if deadline.elapsed() > Duration::from_secs(5) {
                bail!("processes of a timed-out environment outlived it by 5 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        lat.record(deadline.elapsed());
    }
    Ok((
        lat,
        started.elapsed(),
        json!({
            "timeout_ms": 1000,
            "processes": "function + 4 double-forked setsid sleepers",
            "env_cpus": c.env_cpus,
        }),
    ))
}
