//! `hearth-bench`: hearth's latency and throughput harness.
//!
//! ```text
//! hearth-bench [--quick] [SCENARIO-PREFIX...]
//! ```
//!
//! Prints one JSON object per scenario on stdout (`{"scenario", "n", "p50_us", "p99_us",
//! "p999_us", "max_us", "per_sec", ...}`), and the machine's physical limits measured in the same
//! run so results read as ratios. Positional arguments select scenarios by name prefix
//! (`hearth-bench warm limit`); `--quick` shrinks every scenario so the whole selection finishes
//! within a minute. Needs root (environments use namespaces and cgroups). The engine's warnings
//! go to stderr (`HEARTH_LOG`, as for the daemon: `warn` unless set).
#![forbid(unsafe_op_in_unsafe_fn)]

mod containment;
mod http;
mod limits;
mod peers;
mod report;
mod runtimes;
mod scenarios;
mod sys;

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use hearth_scheduler::EnvCpus;
use serde_json::{json, Value};

use crate::report::Latencies;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Scenario names, in the order they run.
const SCENARIOS: &[&str] = &[
    "limit.spin_pingpong",
    "limit.futex_pingpong",
    "limit.fork",
    "warm.native",
    "warm.native.inflight64",
    "warm.native.parked",
    "cold.native",
    "cold.native.zygote",
    "peer.fork_exec",
    "peer.bwrap",
    "peer.crun",
    "peer.runc",
    "warm.runtime_api",
    "warm.python",
    "warm.awslambdaric",
    "cold.runtime_api",
    "cold.python.exec",
    "cold.python.zygote",
    "cold.python.zygote.heap64",
    "cold.python.zygote.heap256",
    "mem.idle_env",
    "noisy.victim",
    "timeout.kill",
    "noisy.victim.adaptive",
    // The echo floor is measured right before http.invoke: this VM's cross-CPU wake-up cost
    // changes state now and then (17 or 67 us for the echo), and a ratio across a change would
    // mean nothing.
    "peer.nginx_static",
    "limit.tcp_echo",
    "http.invoke",
    "http.invoke.c64",
];

struct Options {
    quick: bool,
    /// Placement of the environments of `warm.native*`, `cold.native*` and `mem.idle_env`.
    env_cpus: EnvCpus,
    prefixes: Vec<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        env_cpus: EnvCpus::Adaptive,
        prefixes: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--env-cpus" => {
                let value = args.next().unwrap_or_default();
                options.env_cpus = serde_json::from_value(Value::String(value))
                    .map_err(|e| format!("--env-cpus: {e}"))?;
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: hearth-bench [--quick] [--env-cpus PLACEMENT] [SCENARIO-PREFIX...]\n\n\
                     --env-cpus  where the environments of warm.native*, cold.native* and mem.idle_env\n\
                     \x20           run: adaptive (the default), same_as_shard, other_than_shard or any;\n\
                     \x20           noisy.victim and timeout.kill run same_as_shard, noisy.victim.adaptive\n\
                     \x20           adaptive\n\nscenarios:\n  {}",
                    SCENARIOS.join("\n  ")
                ))
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option {flag} (try --help)"))
            }
            prefix => options.prefixes.push(prefix.to_owned()),
        }
    }
    for prefix in &options.prefixes {
        if !SCENARIOS.iter().any(|s| s.starts_with(prefix.as_str())) {
            return Err(format!(
                "no scenario starts with {prefix:?}; scenarios: {}",
                SCENARIOS.join(", ")
            ));
        }
    }
    Ok(options)
}

fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "Linux {} on {} CPUs ({model})",
        kernel.trim(),
        sys::allowed_cpus().len()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--peer-worker") {
        if let Err(e) = peers::worker(&args[2..]) {
            eprintln!("hearth-bench --peer-worker: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // The engine's own warnings (a zygote discarded, cgroups left behind) on stderr, as the
    // daemon prints them; HEARTH_LOG sets the filter.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let selected: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| {
            options.prefixes.is_empty()
                || options.prefixes.iter().any(|p| s.starts_with(p.as_str()))
        })
        .collect();
    eprintln!(
        "hearth-bench: {} scenario(s){}, env_cpus {}, cgroup favordynmods {}, idle CPUs {} on {}",
        selected.len(),
        if options.quick { ", quick" } else { "" },
        json!(options.env_cpus).as_str().unwrap_or("?"),
        if hearth_scheduler::machine_favordynmods() {
            "on"
        } else {
            "off"
        },
        match (
            sys::idle_cpus_poll_available(),
            hearth_scheduler::cpuidle_driver()
        ) {
            (true, Some(_)) => "poll while busy (limits and peers too)",
            (true, None) =>
                "as the kernel's default idle loop has them (no cpuidle driver: hearth's request changes nothing)",
            (false, _) => "halt",
        },
        machine()
    );
    if let Err(e) = run(&selected, options.quick, options.env_cpus) {
        eprintln!("hearth-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(selected: &[&str], quick: bool, env_cpus: EnvCpus) -> Result<()> {
    let n = |full: u64, short: u64| if quick { short } else { full };
    let mut futex_p50 = None;
    let mut echo_p50 = None;
    let mut nginx_rate = None;
    let mut bench = None;
    let mut runtime_bench: Option<runtimes::RuntimeBench> = None;
    let mut warm_native_p50 = None;
    let mut cold_native_p50 = None;
    let mut cold_zygote_p50 = None;
    let mut cold_python_p50 = None;
    let mut daemon: Option<http::Daemon> = None;
    let mut abuse: Option<containment::Containment> = None;
    let load_time = Duration::from_secs(if quick { 2 } else { 6 });
    for &scenario in selected {
        // hearth's scenarios get polling idle CPUs from the engine while busy; the floors and
        // peers hold the same request while they run.
        let _poll = (scenario.starts_with("limit.") || scenario.starts_with("peer."))
            .then(sys::idle_cpus_poll)
            .flatten();
        let (lat, elapsed, extra): (Latencies, Duration, Value) = match scenario {
            "limit.spin_pingpong" => {
                let (lat, elapsed) = limits::spin_pingpong(n(200_000, 50_000));
                (lat, elapsed, json!({ "cpus": limits::cpu_pair() }))
            }
            "limit.futex_pingpong" => {
                let (lat, elapsed) = limits::futex_pingpong(n(20_000, 5_000));
                futex_p50 = Some(lat.quantile_us(0.5));
                (lat, elapsed, json!({ "cpus": limits::cpu_pair() }))
            }
            "limit.fork" => {
                let (lat, elapsed) = limits::fork(n(2_000, 500));
                (lat, elapsed, json!({}))
            }
            "limit.tcp_echo" => {
                let server = http::EchoServer::start()?;
                // The size of a signed invoke request.
                let (lat, elapsed) = http::tcp_echo(&server, 400, n(20_000, 5_000))?;
                echo_p50 = Some(lat.quantile_us(0.5));
                (lat, elapsed, json!({ "bytes": 400 }))
            }
            "peer.nginx_static" => {
                let nginx = http::Nginx::start()?;
                let request = nginx.request();
                let (one, _) = http::one_connection(nginx.addr, &request, n(20_000, 5_000))?;
                let (lat, elapsed, done) =
                    http::many_connections(nginx.addr, &request, 64, load_time)?;
                let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
                nginx_rate = Some(rate);
                let mut extra = http::throughput_extra(64, done);
                extra["c1_p50_us"] = json!(one.quantile_us(0.5));
                extra["c1_p99_us"] = json!(one.quantile_us(0.99));
                (lat, elapsed, extra)
            }
            abuse_scenario @ ("noisy.victim" | "noisy.victim.adaptive" | "timeout.kill") => {
                if !sys::is_root() {
                    anyhow::bail!("{abuse_scenario} starts real environments and needs root");
                }
                // Functions that must not slow each other run on their own shard's CPU;
                // `.adaptive` shows the default placement under the same abuse.
                let placement = if abuse_scenario == "noisy.victim.adaptive" {
                    EnvCpus::Adaptive
                } else {
                    EnvCpus::SameAsShard
                };
                if abuse.as_ref().is_some_and(|c| c.env_cpus != placement) {
                    // One abuse engine at a time: the other's shards would share the CPUs.
                    abuse = None;
                }
                if abuse.is_none() {
                    let (sample, _) = scenarios::sample_function().ok_or_else(|| {
                        anyhow::anyhow!("the sample function is missing: run `make bench`")
                    })?;
                    abuse = Some(containment::Containment::start(&sample, placement)?);
                }
                let c = abuse.as_ref().expect("started above");
                if abuse_scenario == "timeout.kill" {
                    containment::timeout_kill(c, n(20, 5))?
                } else {
                    containment::noisy_victim(c, n(5_000, 1_000))?
                }
            }
            peer_scenario @ ("peer.fork_exec" | "peer.bwrap" | "peer.crun" | "peer.runc") => {
                if !sys::is_root() {
                    anyhow::bail!("{peer_scenario} starts containers and needs root");
                }
                let (sample, linking) = scenarios::sample_function().ok_or_else(|| {
                    anyhow::anyhow!("the sample function is missing: run `make bench`")
                })?;
                if linking != "static" {
                    anyhow::bail!("{peer_scenario} needs the statically linked sample function (make bench builds it)");
                }
                let peer = peers::Peer::from_scenario(peer_scenario).expect("matched above");
                let count = match peer {
                    peers::Peer::ForkExec => n(1000, 200),
                    peers::Peer::Bwrap => n(300, 60),
                    peers::Peer::Crun => n(200, 40),
                    peers::Peer::Runc => n(100, 20),
                };
                let (lat, elapsed, mut extra) = peers::measure(peer, &sample, count)?;
                if let Some(cold) = cold_native_p50 {
                    extra["vs_cold_native_p50"] =
                        json!(report::round2(lat.quantile_us(0.5) / cold));
                }
                if let Some(cold) = cold_zygote_p50 {
                    extra["vs_cold_native_zygote_p50"] =
                        json!(report::round2(lat.quantile_us(0.5) / cold));
                }
                (lat, elapsed, extra)
            }
            runtime_scenario @ ("warm.runtime_api"
            | "warm.python"
            | "warm.awslambdaric"
            | "cold.runtime_api"
            | "cold.python.exec"
            | "cold.python.zygote"
            | "cold.python.zygote.heap64"
            | "cold.python.zygote.heap256") => {
                if !sys::is_root() {
                    anyhow::bail!("{runtime_scenario} starts real environments and needs root");
                }
                if runtime_bench.is_none() {
                    runtime_bench = Some(runtimes::RuntimeBench::start()?);
                }
                let rb = runtime_bench.as_ref().expect("started above");
                let (lat, elapsed, mut extra) = match runtime_scenario {
                    "warm.runtime_api" => runtimes::warm(rb, "rapi", n(20_000, 5_000))?,
                    "warm.python" => runtimes::warm(rb, "py", n(10_000, 2_000))?,
                    "warm.awslambdaric" => runtimes::warm(rb, "ric", n(10_000, 2_000))?,
                    "cold.runtime_api" => runtimes::cold(rb, "rapi-cold", n(200, 50))?,
                    "cold.python.exec" => {
                        let result = runtimes::cold(rb, "py-cold", n(100, 30))?;
                        cold_python_p50 = Some(result.0.quantile_us(0.5));
                        result
                    }
                    zygote => {
                        let [(small, _), (mid, _), (big, _)] = runtimes::ZYGOTE_HEAPS;
                        let (name, heap) = match zygote {
                            "cold.python.zygote" => (small, 0),
                            "cold.python.zygote.heap64" => (mid, 64),
                            _ => (big, 256),
                        };
                        let (lat, elapsed, mut extra) =
                            runtimes::cold_zygote(rb, name, heap, n(500, 100))?;
                        if let Some(exec) = cold_python_p50 {
                            extra["vs_cold_python_exec_p50"] =
                                json!(report::round2(lat.quantile_us(0.5) / exec));
                        }
                        (lat, elapsed, extra)
                    }
                };
                if let Some(native) = warm_native_p50 {
                    extra["vs_warm_native_p50"] =
                        json!(report::round2(lat.quantile_us(0.5) / native));
                    extra["overhead_vs_warm_native_p50_us"] =
                        json!(report::round2(lat.quantile_us(0.5) - native));
                }
                (lat, elapsed, extra)
            }
            http_scenario @ ("http.invoke" | "http.invoke.c64") => {
                if !sys::is_root() {
                    anyhow::bail!("{http_scenario} starts real environments and needs root");
                }
                if daemon.is_none() {
                    let (sample, _) = scenarios::sample_function().ok_or_else(|| {
                        anyhow::anyhow!("the sample function is missing: run `make bench`")
                    })?;
                    daemon = Some(http::Daemon::start(&sample)?);
                }
                let daemon = daemon.as_ref().expect("started above");
                let request = daemon.invoke_request();
                if http_scenario == "http.invoke" {
                    let (lat, elapsed) =
                        http::one_connection(daemon.addr, &request, n(20_000, 5_000))?;
                    let mut extra = json!({ "connections": 1 });
                    if let Some(echo) = echo_p50 {
                        extra["vs_tcp_echo_p50"] =
                            json!(report::round2(lat.quantile_us(0.5) / echo));
                    }
                    (lat, elapsed, extra)
                } else {
                    let (lat, elapsed, done) =
                        http::many_connections(daemon.addr, &request, 64, load_time)?;
                    let mut extra = http::throughput_extra(64, done);
                    if let Some(nginx) = nginx_rate {
                        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
                        extra["vs_nginx_static"] = json!(report::round2(rate / nginx));
                    }
                    (lat, elapsed, extra)
                }
            }
            engine_scenario => {
                if !sys::is_root() {
                    anyhow::bail!("{engine_scenario} starts real environments and needs root");
                }
                if bench.is_none() {
                    bench = Some(scenarios::Bench::start(env_cpus)?);
                }
                let bench = bench.as_ref().expect("bench started above");
                match engine_scenario {
                    "warm.native" => {
                        let result = scenarios::warm(bench, n(500_000, 100_000))?;
                        warm_native_p50 = Some(result.0.quantile_us(0.5));
                        result
                    }
                    "warm.native.inflight64" => {
                        scenarios::inflight64(bench, n(2_000_000, 500_000))?
                    }
                    "warm.native.parked" => {
                        let (lat, elapsed, mut extra) =
                            scenarios::parked(bench, n(2_000, 400), Duration::from_millis(2))?;
                        if let Some(limit) = futex_p50 {
                            extra["vs_futex_pingpong_p50"] =
                                json!(report::round2(lat.quantile_us(0.5) / limit));
                        }
                        (lat, elapsed, extra)
                    }
                    "cold.native" => {
                        let result = scenarios::cold(bench, n(500, 150))?;
                        cold_native_p50 = Some(result.0.quantile_us(0.5));
                        result
                    }
                    "cold.native.zygote" => {
                        let (lat, elapsed, mut extra) =
                            scenarios::cold_zygote(bench, n(2_000, 300))?;
                        cold_zygote_p50 = Some(lat.quantile_us(0.5));
                        if let Some(cold) = cold_native_p50 {
                            extra["vs_cold_native_p50"] =
                                json!(report::round2(lat.quantile_us(0.5) / cold));
                        }
                        (lat, elapsed, extra)
                    }
                    "mem.idle_env" => scenarios::idle_memory(bench, if quick { 16 } else { 32 })?,
                    other => anyhow::bail!("unknown scenario {other}"),
                }
            }
        };
        emit(&lat.line(scenario, elapsed, extra));
    }
    if let Some(bench) = bench {
        bench.engine.shutdown();
    }
    if let Some(bench) = runtime_bench {
        bench.shutdown();
    }
    Ok(())
}
