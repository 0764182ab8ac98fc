//! Containment under load: how a well-behaved function fares while others abuse their
//! environments (`noisy.victim`), and how soon after its deadline a timed-out environment is
//! entirely gone (`timeout.kill`).
//!
//! Both run on an engine of their own with two shards: the victim on shard 0, the abusers on
//! shard 1. The victim is invoked once a millisecond (its environment sleeps between calls, as
//! a service's would); its latency is measured quiet, then while each abuse runs in turn.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_scheduler::{Engine, EngineConfig, FunctionConfig, FunctionError, FunctionOutput};
use serde_json::{json, Value};

use crate::report::{round2, Latencies};

const VICTIM_EVENT: &[u8] = br#"{"hello":"hearth"}"#;

/// The abuses, each with its handler, event and memory.
const ABUSES: &[(&str, &str, &[u8], u32)] = &[
    ("cpu", "spin", b"200", 128),
    ("fork_bomb", "forkbomb", b"", 512),
    ("memory", "alloc", b"4096", 128),
    ("tmp_fill", "filltmp", b"", 1024),
    ("stdout_flood", "flood", b"200", 128),
];

pub struct Containment {
    engine: Arc<Engine>,
    _code: tempfile::TempDir,
}

impl Containment {
    pub fn start(sample: &Path) -> Result<Self> {
        let code = tempfile::tempdir()?;
        std::fs::copy(sample, code.path().join("bootstrap")).context("copying the sample")?;
        let engine = Engine::start(EngineConfig {
            shards: 2,
            function_output: FunctionOutput::Discard,
            ..EngineConfig::default()
        })?;
        // The victim gets a full vCPU's share (1769 MB, as Lambda allots CPU); abusers less.
        let mut victim = FunctionConfig::new("victim", code.path(), "echo");
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
            engine: Arc::new(engine),
            _code: code,
        })
    }

    /// `n` victim invocations, one a millisecond.
    fn victim(&self, n: u64) -> Result<Latencies> {
        self.engine.on_shard(0, move |shard| -> Result<Latencies> {
            let f = shard.function("victim")?;
            let mut out = Vec::new();
            shard.invoke_into(&f, VICTIM_EVENT, &mut out)?;
            let mut lat = Latencies::new();
            for _ in 0..n {
                std::thread::sleep(Duration::from_millis(1));
                let t0 = Instant::now();
                let outcome = shard.invoke_into(&f, VICTIM_EVENT, &mut out)?;
                lat.record(t0.elapsed());
                if outcome.error.is_some() || out != VICTIM_EVENT {
                    bail!(
                        "the victim answered wrongly: {:?}",
                        String::from_utf8_lossy(&out)
                    );
                }
            }
            Ok(lat)
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
        let stop = Arc::new(AtomicBool::new(false));
        let abuser = c.abuse(index, stop.clone());
        // Let the abuse get going.
        std::thread::sleep(Duration::from_millis(100));
        let lat = c.victim(n / ABUSES.len() as u64)?;
        stop.store(true, Ordering::Relaxed);
        let runs = abuser.join().unwrap_or(0);
        per_abuse.insert(
            (*name).into(),
            json!({ "p50_us": lat.quantile_us(0.5), "p99_us": lat.quantile_us(0.99), "abuse_runs": runs }),
        );
        under.merge(&lat);
    }
    let elapsed = started.elapsed();
    let extra = json!({
        "quiet_p50_us": quiet.quantile_us(0.5),
        "quiet_p99_us": quiet.quantile_us(0.99),
        "vs_quiet_p99": round2(under.quantile_us(0.99) / quiet.quantile_us(0.99)),
        "gap_us": 1000,
        "by_abuse": per_abuse,
    });
    Ok((under, elapsed, extra))
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
        json!({ "timeout_ms": 1000, "processes": "function + 4 double-forked setsid sleepers" }),
    ))
}
