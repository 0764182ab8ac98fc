//! hearth's own scenarios, all on one engine with one shard pinned to the first CPU (its
//! environments run on the others): warm invocations one at a time, 64 in flight, with the
//! environment asleep between calls, cold starts, and the memory an idle environment costs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_scheduler::{
    Engine, EngineConfig, EnvCpus, Function, FunctionConfig, FunctionOutput, Shard, Start,
};
use serde_json::{json, Value};

use crate::report::{round2, Latencies};

/// The engine under test and the code of its functions.
pub struct Bench {
    pub engine: Engine,
    _code: tempfile::TempDir,
    /// How the sample function was linked ("static" or "dynamic").
    pub linking: &'static str,
}

const EVENT: &[u8] = br#"{"hello":"hearth"}"#;

impl Bench {
    /// Starts an engine of one shard whose environments are placed by `env_cpus` and registers
    /// the benchmark's functions, all running the sample function ([`sample_function`]).
    pub fn start(env_cpus: EnvCpus) -> Result<Self> {
        let (sample, linking) = sample_function()
            .context("the sample function is missing: run `make bench` (or cargo build --release --workspace)")?;
        eprintln!(
            "hearth-bench: functions run {} ({linking}ally linked)",
            sample.display()
        );
        let code = tempfile::tempdir()?;
        std::fs::copy(&sample, code.path().join("bootstrap"))
            .context("copying the sample function")?;
        let engine = Engine::start(EngineConfig {
            shards: 1,
            env_cpus,
            function_output: FunctionOutput::Discard,
            prepared_cgroups: 8,
            ..EngineConfig::default()
        })
        .context("starting the engine (hearth-bench needs root for namespaces and cgroups)")?;
        let function = |name: &str, handler: &str, depth: u32| {
            let mut config = FunctionConfig::new(name, code.path(), handler);
            config.pipeline_depth = depth;
            config
        };
        engine.create_function(function("echo", "echo", 1))?;
        engine.create_function(function("echo64", "echo", 64))?;
        let mut cold = function("cold", "echo", 1);
        cold.zygote = false;
        engine.create_function(cold)?;
        let mut zygote = function("cold-zygote", "echo", 1);
        zygote.zygote = true;
        engine.create_function(zygote)?;
        engine.create_function(function("idle", "sleep", 1))?;
        Ok(Self {
            engine,
            _code: code,
            linking,
        })
    }

    fn on_shard<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Shard) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.engine.on_shard(0, job)?
    }
}

fn function(shard: &Shard, name: &str) -> Result<Arc<Function>> {
    Ok(shard.function(name)?)
}

/// One invocation at a time, the environment warm and spinning.
pub fn warm(bench: &Bench, n: u64) -> Result<(Latencies, Duration, Value)> {
    bench.on_shard(move |shard| {
        let f = function(shard, "echo")?;
        let (lat, elapsed, out) = warm_loop(shard, &f, EVENT, n, n / 10 + 1000)?;
        if out != EVENT {
            bail!("echo answered {:?}", String::from_utf8_lossy(&out));
        }
        Ok((lat, elapsed, json!({ "payload_bytes": EVENT.len() })))
    })
}

/// `warmup` then `n` timed invocations of `f` with `event`, one at a time; each must be warm
/// and succeed. Returns the latencies, the time the `n` took, and the last answer.
pub fn warm_loop(
    shard: &mut Shard,
    f: &Arc<Function>,
    event: &[u8],
    n: u64,
    warmup: u64,
) -> Result<(Latencies, Duration, Vec<u8>)> {
    let mut out = Vec::with_capacity(64);
    for _ in 0..warmup {
        shard.invoke_into(f, event, &mut out)?;
    }
    let mut lat = Latencies::new();
    let start = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let outcome = shard.invoke_into(f, event, &mut out)?;
        lat.record(t0.elapsed());
        if outcome.error.is_some() || outcome.start != Start::Warm {
            bail!(
                "{}: {outcome:?}: {}",
                f.name(),
                String::from_utf8_lossy(&out)
            );
        }
    }
    Ok((lat, start.elapsed(), out))
}

/// `n` cold starts of `f` with `event` (plus a tenth as warm-up): each a new environment
/// obtained as `expect` says, its answer checked by `check`. Returns the latencies and the
/// time they took in all.
pub fn cold_loop(
    shard: &mut Shard,
    f: &Arc<Function>,
    (event, expect): (&[u8], Start),
    n: u64,
    check: impl Fn(&[u8]) -> bool,
) -> Result<(Latencies, Duration)> {
    let mut out = Vec::new();
    let mut lat = Latencies::new();
    let mut busy = Duration::ZERO;
    for i in 0..n + n / 10 {
        shard.housekeeping();
        let t0 = Instant::now();
        let outcome = shard.invoke_into(f, event, &mut out)?;
        let took = t0.elapsed();
        if outcome.start != expect || outcome.error.is_some() || !check(&out) {
            bail!(
                "{}: {outcome:?}: {}",
                f.name(),
                String::from_utf8_lossy(&out)
            );
        }
        if i >= n / 10 {
            lat.record(took);
            busy += took;
        }
        shard.retire_idle(f);
    }
    Ok((lat, busy))
}

/// 64 invocations in flight, queued in one environment's ring (pipeline depth 64).
pub fn inflight64(bench: &Bench, n: u64) -> Result<(Latencies, Duration, Value)> {
    bench.on_shard(move |shard| {
        let f = function(shard, "echo64")?;
        const WINDOW: usize = 64;
        let run = |shard: &mut Shard, n: u64, lat: &mut Latencies| -> Result<()> {
            let mut sent = [Instant::now(); WINDOW];
            let mut submitted = 0u64;
            let mut completed = 0u64;
            for (tag, at) in sent.iter_mut().enumerate() {
                *at = Instant::now();
                shard.submit(&f, EVENT, tag as u64)?;
                submitted += 1;
            }
            let mut done = Vec::with_capacity(WINDOW);
            while completed < n {
                done.clear();
                shard.poll(&mut done, Some(Duration::from_secs(5)));
                let now = Instant::now();
                for completion in done.drain(..) {
                    let tag = usize::try_from(completion.tag).unwrap_or(0) % WINDOW;
                    completion.result?;
                    lat.record(now - sent[tag]);
                    shard.recycle(completion.payload);
                    completed += 1;
                    if submitted < n {
                        sent[tag] = Instant::now();
                        shard.submit(&f, EVENT, tag as u64)?;
                        submitted += 1;
                    }
                }
            }
            Ok(())
        };
        let before: std::collections::HashSet<i32> = shard.environment_pids().into_iter().collect();
        run(shard, n / 10 + WINDOW as u64, &mut Latencies::new())?;
        let mut lat = Latencies::new();
        let start = Instant::now();
        run(shard, n, &mut lat)?;
        let elapsed = start.elapsed();
        let envs = shard
            .environment_pids()
            .iter()
            .filter(|p| !before.contains(p))
            .count();
        Ok((
            lat,
            elapsed,
            json!({ "in_flight": WINDOW, "environments": envs, "pipeline_depth": 64 }),
        ))
    })
}

/// One invocation at a time with a pause before each, long enough for the environment to stop
/// spinning and sleep on its doorbell: the invocation must wake it.
pub fn parked(bench: &Bench, n: u64, gap: Duration) -> Result<(Latencies, Duration, Value)> {
    bench.on_shard(move |shard| {
        let f = function(shard, "echo")?;
        let mut out = Vec::new();
        shard.invoke_into(&f, EVENT, &mut out)?;
        let mut lat = Latencies::new();
        let mut asleep = 0u64;
        let mut busy = Duration::ZERO;
        for _ in 0..n {
            std::thread::sleep(gap);
            if shard.idle_environment_asleep(&f) == Some(true) {
                asleep += 1;
            }
            let t0 = Instant::now();
            shard.invoke_into(&f, EVENT, &mut out)?;
            let took = t0.elapsed();
            busy += took;
            lat.record(took);
        }
        Ok((lat, busy, json!({ "gap_us": gap.as_micros(), "parked_fraction": round2(asleep as f64 / n as f64) })))
    })
}

/// Request for a new, fully isolated environment to its first response.
pub fn cold(bench: &Bench, n: u64) -> Result<(Latencies, Duration, Value)> {
    let linking = bench.linking;
    bench.on_shard(move |shard| {
        let f = function(shard, "cold")?;
        let (lat, busy) = cold_loop(shard, &f, (EVENT, Start::Cold), n, |out| out == EVENT)?;
        Ok((
            lat,
            busy,
            json!({ "isolation": ISOLATION, "function_linking": linking }),
        ))
    })
}

const ISOLATION: &str =
    "pid+mnt+ipc+uts+cgroup namespaces, own root, seccomp, landlock, no caps, cgroup limits";

/// A new, fully isolated environment forked from the function's zygote, to its first
/// response. Waits (up to 10 s) for the zygote its first cold start asks for to be ready.
pub fn cold_zygote(bench: &Bench, n: u64) -> Result<(Latencies, Duration, Value)> {
    let linking = bench.linking;
    bench.on_shard(move |shard| {
        let f = function(shard, "cold-zygote")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        loop {
            shard.housekeeping();
            let outcome = shard.invoke_into(&f, EVENT, &mut out)?;
            shard.retire_idle(&f);
            if outcome.start == Start::Zygote {
                break;
            }
            if Instant::now() > deadline {
                bail!("the zygote of {} was not ready within 10 s", f.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = shard.stats();
        let (lat, busy) = cold_loop(shard, &f, (EVENT, Start::Zygote), n, |out| out == EVENT)?;
        let after = shard.stats();
        // One shard forks them one after another: starts per second of shard time.
        let rate = n as f64 / busy.as_secs_f64().max(1e-9);
        // Forks (warm-up included) whose child entered namespaces the zygote's helper made.
        let forks = after.zygote.saturating_sub(before.zygote).max(1);
        let prepared = after.zygote_prepared.saturating_sub(before.zygote_prepared);
        Ok((
            lat,
            busy,
            json!({
                "isolation": ISOLATION,
                "function_linking": linking,
                "starts_per_s": rate.round(),
                "namespaces_made_ahead": round2(prepared as f64 / forks as f64),
            }),
        ))
    })
}

/// PSS of idle environments.
pub fn idle_memory(bench: &Bench, envs: usize) -> Result<(Latencies, Duration, Value)> {
    let pids = bench.on_shard(move |shard| {
        let f = function(shard, "idle")?;
        let before: std::collections::HashSet<i32> = shard.environment_pids().into_iter().collect();
        let start = Instant::now();
        for tag in 0..envs {
            shard.submit(&f, b"50", tag as u64)?;
        }
        let mut done = Vec::new();
        while done.len() < envs && start.elapsed() < Duration::from_secs(30) {
            shard.poll(&mut done, Some(Duration::from_millis(100)));
        }
        for completion in &done {
            if let Err(e) = &completion.result {
                bail!("starting idle environments: {e}");
            }
        }
        Ok(shard
            .environment_pids()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect::<Vec<_>>())
    })?;
    // Let them settle into their idle wait.
    std::thread::sleep(Duration::from_millis(200));
    let mut lat = Latencies::new();
    let mut pss = Vec::new();
    let mut rss = Vec::new();
    for pid in &pids {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .with_context(|| format!("reading smaps_rollup of {pid}"))?;
        let field = |name: &str| -> u64 {
            rollup
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(0)
        };
        pss.push(field("Pss:"));
        rss.push(field("Rss:"));
        lat.record(Duration::from_nanos(1));
    }
    let mean = |v: &[u64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64
        }
    };
    Ok((
        lat,
        Duration::ZERO,
        json!({
            "environments": pids.len(),
            "pss_kib": round2(mean(&pss)),
            "pss_kib_max": pss.iter().max().copied().unwrap_or(0),
            "rss_kib": round2(mean(&rss)),
        }),
    ))
}

/// The sample function binary: the statically linked build `make bench` makes
/// (`target/x86_64-unknown-linux-gnu/release/`), else the one next to this binary.
pub fn sample_function() -> Option<(PathBuf, &'static str)> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let static_build = dir
        .parent()?
        .join("x86_64-unknown-linux-gnu/release/hearth-sample-fn");
    if static_build.exists() {
        return Some((static_build, "static"));
    }
    let dynamic = dir.join("hearth-sample-fn");
    dynamic.exists().then_some((dynamic, "dynamic"))
}
