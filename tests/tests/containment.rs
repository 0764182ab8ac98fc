//! Tier 2 (root): a function that abuses its environment stays inside it. Each abuse runs in a
//! real environment on shard 0 while a neighbour function keeps answering on shard 1; the test
//! checks what the abuser's caller sees, that the neighbour answered correctly throughout, and
//! that nothing of the abuser is left on the host afterwards.
//!
//! (Memory beyond the function's limit and responses over 6 MB are in `engine.rs`; the latency
//! the neighbour keeps under abuse is measured by `hearth-bench noisy.victim`.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_scheduler::{
    Engine, EngineConfig, FunctionConfig, FunctionError, FunctionOutput, LogConfig, SandboxConfig,
};
use hearth_tests::{function_pids, require_root, sample_code_dir};

struct Fixture {
    engine: Arc<Engine>,
    /// Where function logs go (output is captured and stored, as the daemon does).
    logs: tempfile::TempDir,
    _state: tempfile::TempDir,
}

fn fixture() -> Fixture {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let engine = Engine::start(EngineConfig {
        shards: 2,
        function_output: FunctionOutput::Capture,
        logs: Some(LogConfig::new(logs.path())),
        prepared_cgroups: 0,
        sandbox: SandboxConfig {
            state_dir: state.path().to_owned(),
            ..SandboxConfig::default()
        },
        ..EngineConfig::default()
    })
    .expect("engine");
    Fixture {
        engine: Arc::new(engine),
        logs,
        _state: state,
    }
}

impl Fixture {
    fn function(&self, name: &str, handler: &str, tune: impl FnOnce(&mut FunctionConfig)) {
        let mut config = FunctionConfig::new(name, sample_code_dir(), handler);
        tune(&mut config);
        self.engine.create_function(config).expect("create");
    }

    /// Invokes `name` on shard 0 (the abuser's).
    fn invoke(&self, name: &str, payload: &[u8]) -> (Option<FunctionError>, Vec<u8>) {
        let (name, payload) = (name.to_owned(), payload.to_vec());
        let (outcome, body) = self
            .engine
            .on_shard(0, move |shard| shard.invoke(&name, &payload))
            .expect("shard 0")
            .expect("the invocation reaches the function");
        (outcome.error, body)
    }

    /// Invokes an echo function on shard 1 in a loop until stopped; counts correct answers
    /// and fails the test on a wrong one.
    fn neighbour(&self) -> Neighbour {
        self.function("neighbour", "echo", |_| {});
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let thread = {
            let (engine, stop, answered) = (self.engine.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let (outcome, body) = engine
                        .on_shard(1, |shard| shard.invoke("neighbour", b"\"still here\""))
                        .expect("shard 1")
                        .expect("the neighbour answers");
                    slowest = slowest.max(started.elapsed());
                    assert_eq!(outcome.error, None);
                    assert_eq!(body, b"\"still here\"");
                    answered.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
                slowest
            })
        };
        Neighbour {
            stop,
            answered,
            thread: Some(thread),
        }
    }
}

struct Neighbour {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Duration>>,
}

impl Neighbour {
    /// Stops the loop; returns how many answers it got and its slowest.
    fn finish(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let slowest = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("the neighbour never got a wrong answer");
        (self.answered.load(Ordering::Relaxed), slowest)
    }
}

/// Waits until function `name` has no process left on the host.
fn assert_all_gone(name: &str, within: Duration) {
    assert_all_gone_but(name, within, Vec::new);
}

/// Waits until function `name` has no process left on the host but those `spared` names
/// (asked again on each look).
fn assert_all_gone_but(name: &str, within: Duration, spared: impl Fn() -> Vec<i32>) {
    let deadline = Instant::now() + within;
    loop {
        let spare = spared();
        let mut left = function_pids(name);
        left.retain(|pid| !spare.contains(pid));
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} process(es) of {name} outlived it: {left:?}",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_fork_bomb_stops_at_the_environments_pid_limit() {
    let f = fixture();
    let neighbour = f.neighbour();
    f.function("bomb", "forkbomb", |c| {
        c.memory_mb = 1024;
        c.timeout = Duration::from_secs(30);
    });
    let (error, body) = f.invoke("bomb", b"");
    assert_eq!(error, None);
    let text = String::from_utf8(body).unwrap();
    let forked: u64 = text
        .strip_prefix("forked ")
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {text:?}"));
    // pids.max is 1024 tasks per environment, the function itself included.
    assert!(
        text.ends_with(&format!("errno {}", libc::EAGAIN)),
        "fork failed with EAGAIN: {text}"
    );
    assert!(
        (900..1024).contains(&forked),
        "forked {forked} before the limit"
    );
    assert!(function_pids("bomb").len() > 900, "the children were alive");
    let (answered, _) = neighbour.finish();
    assert!(answered > 0, "the neighbour answered during the bomb");
    f.engine.delete_function("bomb").unwrap();
    assert_all_gone("bomb", Duration::from_secs(10));
}

#[test]
fn filling_tmp_ends_in_enospc_at_the_configured_size() {
    let f = fixture();
    let neighbour = f.neighbour();
    // /tmp is a tmpfs charged to the environment's memory: give it room to reach the size.
    f.function("filler", "filltmp", |c| {
        c.memory_mb = 1024;
        c.ephemeral_storage_mb = 512;
        c.timeout = Duration::from_secs(60);
    });
    let (error, body) = f.invoke("filler", b"");
    assert_eq!(error, None);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.ends_with(&format!("errno {}", libc::ENOSPC)),
        "writing failed with ENOSPC: {text}"
    );
    let mib: u64 = text
        .strip_prefix("wrote ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((500..=512).contains(&mib), "stopped at {mib} MiB of 512");
    let (answered, _) = neighbour.finish();
    assert!(answered > 0);
}

#[test]
fn a_stdout_flood_is_capped_in_the_log_and_does_not_grow_the_daemon() {
    let f = fixture();
    f.function("flood", "flood", |c| c.timeout = Duration::from_secs(30));
    let neighbour = f.neighbour();
    let rss_before = rss_kib();
    let (error, body) = f.invoke("flood", b"1500");
    assert_eq!(error, None);
    let text = String::from_utf8(body).unwrap();
    let mib: u64 = text
        .strip_prefix("wrote ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(mib > 10, "the function flooded its stdout: {text}");
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "the daemon grew by {grown} KiB while the function wrote {mib} MiB"
    );
    let (answered, _) = neighbour.finish();
    assert!(answered > 0, "the neighbour answered during the flood");
    // The invocation's log record keeps at most 256 KiB of output and says how much it dropped.
    let path = hearth_scheduler::logs::current_file(f.logs.path(), "flood");
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read(&path).unwrap_or_default();
        if log.windows(7).any(|w| w == b"REPORT ") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = String::from_utf8_lossy(&log);
    // The output is the run of 'y's between the START line and hearth's dropped-bytes line.
    let output = text
        .split_once('\n')
        .and_then(|(_, rest)| rest.split_once("[hearth] "))
        .map_or("", |(output, _)| output);
    let ys = output.bytes().filter(|&b| b == b'y').count();
    assert!(
        (1..=256 << 10).contains(&ys) && ys == output.trim_end().len(),
        "{ys} bytes of output kept in the record"
    );
    let dropped: u64 = text
        .split("[hearth] ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no dropped-bytes line in the log: {}",
                &text[text.len().saturating_sub(600)..]
            )
        });
    assert!(
        dropped > 8 << 20,
        "the flood of {mib} MiB was counted as dropped: {dropped} bytes"
    );
    assert!(
        text.contains("END RequestId: ") && text.contains("\tStart: cold\t"),
        "framed record"
    );
}

#[test]
fn a_timeout_kills_double_forked_and_setsid_processes_too() {
    let f = fixture();
    // An environment started from nothing (its zygote would be one more process of the
    // function; environments forked from one: tests/tests/zygote.rs).
    f.function("orphans", "orphans", |c| {
        c.timeout = Duration::from_secs(1);
        c.zygote = false;
    });
    let watcher = std::thread::spawn(|| {
        // The most processes seen while the function ran: it and 4 reparented sleepers.
        let deadline = Instant::now() + Duration::from_millis(900);
        let mut most = 0;
        while Instant::now() < deadline {
            most = most.max(function_pids("orphans").len());
            std::thread::sleep(Duration::from_millis(20));
        }
        most
    });
    let (error, _) = f.invoke("orphans", b"");
    assert_eq!(error, Some(FunctionError::Timedout));
    let most = watcher.join().unwrap();
    assert!(
        most >= 5,
        "the sleepers were running ({most} processes seen)"
    );
    // The environment the adaptive pool starts for the next call after this on-demand start
    // is live and has run nothing; it is spared, everything the timed-out call started is not.
    assert_all_gone_but("orphans", Duration::from_secs(2), || {
        f.engine.on_shard(0, |s| s.environment_pids()).unwrap()
    });
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
