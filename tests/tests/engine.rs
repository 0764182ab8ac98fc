//! Tier 2 (root): the engine end to end, with real environments running the sample function.
//! Each test asserts what a caller sees: the bytes returned, the Lambda error type and message,
//! the throttle reason, and that broken environments are gone and replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_scheduler::{
    Completion, Engine, EngineConfig, EnvCpus, FunctionConfig, FunctionError, FunctionOutput,
    InvokeError, SandboxConfig, Start, ThrottleReason,
};
use hearth_tests::{process_exists, require_root, sample_code_dir, CgroupPath};
use nix::time::{clock_gettime, ClockId};
use serde_json::Value;

struct Fixture {
    engine: Engine,
    code: &'static std::path::Path,
    _state: tempfile::TempDir,
}

fn fixture_with(tune: impl FnOnce(&mut EngineConfig)) -> Fixture {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let mut config = EngineConfig {
        shards: 1,
        function_output: FunctionOutput::Discard,
        prepared_cgroups: 0,
        sandbox: SandboxConfig {
            state_dir: state.path().to_owned(),
            ..SandboxConfig::default()
        },
        ..EngineConfig::default()
    };
    tune(&mut config);
    Fixture {
        engine: Engine::start(config).expect("engine"),
        code: sample_code_dir(),
        _state: state,
    }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

impl Fixture {
    fn function(&self, name: &str, handler: &str, tune: impl FnOnce(&mut FunctionConfig)) {
        let mut config = FunctionConfig::new(name, self.code, handler);
        tune(&mut config);
        self.engine
            .create_function(config)
            .expect("create function");
    }

    fn invoke(
        &self,
        name: &str,
        payload: &[u8],
    ) -> Result<(hearth_scheduler::Outcome, Vec<u8>), InvokeError> {
        self.engine.invoke(name, payload)
    }

    fn error_doc(&self, name: &str, payload: &[u8]) -> (FunctionError, Value) {
        let (outcome, body) = self
            .invoke(name, payload)
            .expect("the invocation reaches the function");
        let error = outcome.error.expect("the function failed");
        (
            error,
            serde_json::from_slice(&body).expect("an error document"),
        )
    }
}

#[test]
fn echo_returns_the_bytes_and_reuses_its_warm_environment() {
    let f = fixture();
    f.function("echo", "echo", |_| {});
    let (first, body) = f.invoke("echo", b"hello, hearth").unwrap();
    assert_eq!(body, b"hello, hearth");
    assert_eq!((first.error, first.start), (None, Start::Cold));
    for i in 0..50 {
        let payload = format!("call {i}");
        let (again, body) = f.invoke("echo", payload.as_bytes()).unwrap();
        assert_eq!(body, payload.as_bytes());
        assert_eq!(again.start, Start::Warm);
        assert_eq!(
            again.env_pid, first.env_pid,
            "the warm environment is reused"
        );
    }
    let binary: Vec<u8> = (0..=255).collect();
    assert_eq!(f.invoke("echo", &binary).unwrap().1, binary);
    assert_eq!(f.invoke("echo", b"").unwrap().1, b"");
}

#[test]
fn an_environment_reads_the_hosts_monotonic_clock() {
    // `hearth-bench noisy.victim` splits each call at the moment the handler read its clock:
    // that needs the environment's CLOCK_MONOTONIC to be the host's (no time namespace).
    let f = fixture();
    f.function("clock", "clock", |_| {});
    for _ in 0..3 {
        let host = || Duration::from(clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap());
        let before = host();
        let (outcome, body) = f.invoke("clock", b"").unwrap();
        let after = host();
        assert_eq!(outcome.error, None);
        let ran = Duration::from_nanos(std::str::from_utf8(&body).unwrap().parse().unwrap());
        assert!(
            (before..=after).contains(&ran),
            "the handler's clock {ran:?} is outside the call ({before:?}..={after:?})"
        );
    }
}

#[test]
fn unknown_functions_and_oversized_requests_are_refused() {
    let f = fixture();
    f.function("echo", "echo", |_| {});
    let err = f.invoke("nope", b"").unwrap_err();
    assert_eq!(err.error_type(), "ResourceNotFoundException");
    let err = f.invoke("echo", &vec![0u8; 6_291_557]).unwrap_err();
    assert_eq!(err, InvokeError::RequestTooLarge(6_291_557));
    assert_eq!(err.error_type(), "RequestTooLargeException");
    // The largest allowed request passes.
    let big = vec![7u8; 6_291_556];
    assert_eq!(f.invoke("echo", &big).unwrap().1.len(), big.len());
}

#[test]
fn a_handled_error_returns_lambdas_error_document() {
    let f = fixture();
    f.function("fails", "error", |_| {});
    let (error, doc) = f.error_doc("fails", b"bad input");
    assert_eq!(error, FunctionError::Handled);
    assert_eq!(doc["errorType"], "SampleError");
    assert_eq!(doc["errorMessage"], "bad input");
    // A handled error does not cost the environment.
    let (outcome, _) = f.invoke("fails", b"again").unwrap();
    assert_eq!(outcome.start, Start::Warm);
}

#[test]
fn a_timeout_kills_the_environment_and_answers_sandbox_timedout() {
    let f = fixture();
    f.function("slow", "sleep", |c| c.timeout = Duration::from_millis(300));
    let (warm, _) = f.invoke("slow", b"1").unwrap();
    let started = Instant::now();
    let (outcome, body) = f.invoke("slow", b"10000").unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.error, Some(FunctionError::Timedout));
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["errorType"], "Sandbox.Timedout");
    assert!(
        doc["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Task timed out after 0.30 seconds"),
        "{doc}"
    );
    assert!(
        took < Duration::from_secs(3),
        "answered {took:?} after the call, not when the sleep ended"
    );
    // The environment and everything in it are gone, and the next call gets a new one.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !process_exists(warm.env_pid),
        "the timed-out environment was killed"
    );
    let (next, body) = f.invoke("slow", b"1").unwrap();
    // A new environment: started for this call (from nothing, or forked from the function's
    // zygote once it is ready), or ahead of it by the adaptive pool, which the first call's
    // cold start set to one.
    assert!(
        matches!(next.start, Start::Cold | Start::Zygote | Start::Pool),
        "{next:?}"
    );
    assert_eq!(body, b"slept 1");
    assert_ne!(next.env_pid, warm.env_pid);
}

#[test]
fn a_crash_answers_runtime_exit_error_and_the_environment_is_replaced() {
    let f = fixture();
    f.function("crash", "crash", |_| {});
    let (error, doc) = f.error_doc("crash", b"");
    assert!(matches!(error, FunctionError::ExitError(_)), "{error:?}");
    assert_eq!(doc["errorType"], "Runtime.ExitError");
    assert!(
        doc["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: signal: segmentation fault"),
        "{doc}"
    );

    f.function("exit3", "exit", |_| {});
    let (_, doc) = f.error_doc("exit3", b"3");
    assert!(
        doc["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: exit status 3"),
        "{doc}"
    );

    f.function("echo", "echo", |_| {});
    assert_eq!(
        f.invoke("echo", b"still here").unwrap().1,
        b"still here",
        "the engine keeps serving"
    );
}

#[test]
fn memory_beyond_the_function_limit_is_an_exit_error_not_a_host_oom() {
    let f = fixture();
    f.function("hog", "alloc", |c| c.memory_mb = 128);
    assert_eq!(f.invoke("hog", b"16").unwrap().1, b"allocated 16 MiB");
    let (_, doc) = f.error_doc("hog", b"1024");
    assert_eq!(doc["errorType"], "Runtime.ExitError");
    assert!(
        doc["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("signal: killed"),
        "{doc}"
    );
    assert_eq!(
        f.invoke("hog", b"16").unwrap().1,
        b"allocated 16 MiB",
        "a fresh environment serves the next call"
    );
}

#[test]
fn an_oversized_response_answers_function_response_size_too_large() {
    let f = fixture();
    f.function("big", "big", |_| {});
    let (error, doc) = f.error_doc("big", b"6291557");
    assert_eq!(error, FunctionError::ResponseSizeTooLarge(6_291_557));
    assert_eq!(doc["errorType"], "Function.ResponseSizeTooLarge");
    assert_eq!(
        doc["errorMessage"],
        "Response payload size (6291557 bytes) exceeded maximum allowed payload size (6291556 bytes)."
    );
    let (outcome, body) = f.invoke("big", b"6291556").unwrap();
    assert_eq!((outcome.error, body.len()), (None, 6_291_556));
}

#[test]
fn a_missing_bootstrap_answers_runtime_invalid_entrypoint() {
    let f = fixture();
    f.function("nobootstrap", "echo", |c| {
        c.command = "/var/task/missing".into()
    });
    let (error, doc) = f.error_doc("nobootstrap", b"");
    assert_eq!(error, FunctionError::InvalidEntrypoint(libc::ENOENT));
    assert_eq!(doc["errorType"], "Runtime.InvalidEntrypoint");
    // Its cold start set the adaptive pool's target to one; the one environment housekeeping
    // started ahead of demand died unused just the same, and none more were started for it.
    std::thread::sleep(Duration::from_millis(1500));
    let stats = f.engine.stats()[0];
    assert!(matches!(stats.cold, 1 | 2), "{stats:?}");
    assert_eq!(stats.live, 0, "{stats:?}");
}

#[test]
fn garbage_in_the_rings_answers_runtime_invalid_response_and_kills_the_environment() {
    let f = fixture();
    f.function("garbage", "garbage", |_| {});
    f.function("echo", "echo", |_| {});
    for mode in ["resp-tail", "resp-id", "resp-bounds", "resp-status"] {
        let (outcome, body) = f.invoke("garbage", mode.as_bytes()).unwrap();
        assert!(
            matches!(outcome.error, Some(FunctionError::InvalidResponse(_))),
            "{mode}: {outcome:?}"
        );
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["errorType"], "Runtime.InvalidResponse", "{mode}");
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !process_exists(outcome.env_pid),
            "{mode}: the environment was killed"
        );
        assert_eq!(
            f.invoke("echo", mode.as_bytes()).unwrap().1,
            mode.as_bytes(),
            "{mode}: the engine keeps serving"
        );
    }
}

#[test]
fn a_corrupted_request_ring_is_caught_at_the_next_call_which_runs_elsewhere() {
    let f = fixture();
    f.function("garbage", "garbage", |_| {});
    let (first, body) = f.invoke("garbage", b"req-head").unwrap();
    assert_eq!(body, b"answered");
    // The environment set its request head past the tail: the next call must not use it.
    let (second, body) = f.invoke("garbage", b"unknown-mode").unwrap();
    assert_eq!(body, b"no such garbage");
    assert_ne!(second.env_pid, first.env_pid);
    // A new environment: started for it, or ahead of it by the adaptive pool.
    assert!(
        matches!(second.start, Start::Cold | Start::Pool),
        "{second:?}"
    );
}

#[test]
fn lengths_changed_after_publication_do_not_reach_the_caller() {
    let f = fixture();
    f.function("garbage", "garbage", |_| {});
    for _ in 0..5 {
        // The host reads the slot once: it returns the answer as published, or, if it read
        // after the environment started scribbling, refuses it as an invalid response.
        let (outcome, body) = f.invoke("garbage", b"len-flip").unwrap();
        match outcome.error {
            None => assert_eq!(body, b"flip"),
            Some(error) => assert!(
                matches!(error, FunctionError::InvalidResponse(_)),
                "{error:?}"
            ),
        }
    }
}

#[test]
fn an_environment_that_answers_twice_is_not_used_again() {
    let f = fixture();
    f.function("twice", "twice", |_| {});
    let (first, body) = f.invoke("twice", b"one").unwrap();
    assert_eq!(body, b"one", "the first answer is the answer");
    let (second, body) = f.invoke("twice", b"two").unwrap();
    assert_eq!(body, b"two");
    assert_ne!(
        second.env_pid, first.env_pid,
        "the environment that answered twice was replaced"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(!process_exists(first.env_pid));
}

fn submit_all(
    f: &Fixture,
    name: &'static str,
    payloads: Vec<&'static [u8]>,
) -> Vec<Result<(), InvokeError>> {
    f.engine
        .on_shard(0, move |shard| {
            let function = shard.function(name).unwrap();
            payloads
                .iter()
                .enumerate()
                .map(|(i, p)| shard.submit(&function, p, i as u64))
                .collect()
        })
        .unwrap()
}

fn poll_all(f: &Fixture, n: usize) -> Vec<Completion> {
    f.engine
        .on_shard(0, move |shard| {
            let mut done = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while done.len() < n && Instant::now() < deadline {
                shard.poll(&mut done, Some(Duration::from_millis(100)));
            }
            done.sort_by_key(|c| c.tag);
            done
        })
        .unwrap()
}

#[test]
fn reserved_concurrency_throttles_at_once_and_names_the_limit() {
    let f = fixture();
    f.function("slow", "sleep", |_| {});
    f.engine.put_function_concurrency("slow", 1).unwrap();
    let results = submit_all(&f, "slow", vec![b"300", b"300"]);
    assert!(results[0].is_ok());
    let Err(InvokeError::Throttled(throttle)) = &results[1] else {
        panic!("second call should be throttled: {results:?}")
    };
    assert_eq!(
        throttle.reason,
        ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded
    );
    assert_eq!(throttle.limit, 1);
    assert_eq!(
        results[1].as_ref().unwrap_err().error_type(),
        "TooManyRequestsException"
    );
    let done = poll_all(&f, 1);
    assert_eq!(done[0].payload, b"slept 300");
    // Once it finished, the slot is free again.
    assert_eq!(f.invoke("slow", b"1").unwrap().1, b"slept 1");
    // Reserved concurrency 0 disables the function.
    f.engine.put_function_concurrency("slow", 0).unwrap();
    assert!(matches!(f.invoke("slow", b"1"), Err(InvokeError::Throttled(t)) if t.limit == 0));
}

#[test]
fn the_account_limit_throttles_unreserved_functions() {
    let f = fixture_with(|c| c.account_concurrency = 2);
    f.function("slow", "sleep", |_| {});
    let results = submit_all(&f, "slow", vec![b"200", b"200", b"200"]);
    assert!(results[0].is_ok() && results[1].is_ok());
    let Err(InvokeError::Throttled(throttle)) = &results[2] else {
        panic!("{results:?}")
    };
    assert_eq!(
        throttle.reason,
        ThrottleReason::ConcurrentInvocationLimitExceeded
    );
    assert_eq!(throttle.limit, 2);
    let done = poll_all(&f, 2);
    assert!(done.iter().all(|c| c.payload == b"slept 200"));
    let pids: std::collections::HashSet<i32> = done
        .iter()
        .map(|c| c.result.as_ref().unwrap().env_pid)
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "two concurrent invocations run in two environments"
    );
}

#[test]
fn reservations_cannot_leave_less_than_100_unreserved() {
    let f = fixture();
    f.function("a", "echo", |_| {});
    let err = f.engine.put_function_concurrency("a", 901).unwrap_err();
    assert_eq!(err.error_type(), "InvalidParameterValueException");
    f.engine.put_function_concurrency("a", 900).unwrap();
    assert_eq!(f.engine.account_concurrency(), (1000, 100));
}

#[test]
fn pipelined_invocations_queue_in_one_environment_in_order() {
    let f = fixture();
    f.function("echo", "echo", |c| c.pipeline_depth = 8);
    let payloads: Vec<&'static [u8]> = vec![b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7"];
    assert!(submit_all(&f, "echo", payloads.clone())
        .iter()
        .all(Result::is_ok));
    let done = poll_all(&f, 8);
    assert_eq!(done.len(), 8);
    for (c, p) in done.iter().zip(&payloads) {
        assert_eq!(c.payload, *p);
    }
    let pids: std::collections::HashSet<i32> = done
        .iter()
        .map(|c| c.result.as_ref().unwrap().env_pid)
        .collect();
    assert_eq!(pids.len(), 1, "one environment served all eight");
    assert_eq!(
        done.iter()
            .filter(|c| c.result.as_ref().unwrap().start == Start::Queued)
            .count(),
        7
    );
}

#[test]
fn invocations_queued_behind_a_timed_out_one_fail_without_running() {
    let f = fixture();
    f.function("slow", "sleep", |c| {
        c.pipeline_depth = 4;
        c.timeout = Duration::from_millis(200);
    });
    assert!(submit_all(&f, "slow", vec![b"5000", b"1", b"1"])
        .iter()
        .all(Result::is_ok));
    let done = poll_all(&f, 3);
    assert_eq!(
        done[0].result.as_ref().unwrap().error,
        Some(FunctionError::Timedout)
    );
    for queued in &done[1..] {
        let Err(InvokeError::Service(message)) = &queued.result else {
            panic!("{queued:?}")
        };
        assert!(message.contains("did not run"), "{message}");
    }
}

/// Two long invocations at once, then housekeeping, then two more while the first two still
/// run, then housekeeping again once its rate bound allows (100 ms) while all four run: how
/// each of the later two was served, and the shard's counters.
fn rising_load(f: &Fixture) -> (Vec<Start>, hearth_scheduler::ShardStats) {
    f.function("sleepy", "sleep", |c| c.zygote = false);
    assert!(submit_all(f, "sleepy", vec![b"1500", b"1500"])
        .iter()
        .all(Result::is_ok));
    let later = f
        .engine
        .on_shard(0, |shard| {
            let function = shard.function("sleepy").unwrap();
            shard.housekeeping();
            let later = [2, 3].map(|tag| shard.submit(&function, b"300", tag));
            std::thread::sleep(Duration::from_millis(110));
            shard.housekeeping();
            later
        })
        .unwrap();
    assert!(later.iter().all(Result::is_ok), "{later:?}");
    let done = poll_all(f, 4);
    assert_eq!(done.len(), 4);
    for c in &done {
        assert!(c.result.as_ref().unwrap().error.is_none(), "{:?}", c.result);
    }
    let starts = done[2..]
        .iter()
        .map(|c| c.result.as_ref().unwrap().start)
        .collect();
    (starts, f.engine.stats()[0])
}

#[test]
fn environments_are_started_ahead_of_a_rising_load() {
    let f = fixture();
    let (starts, stats) = rising_load(&f);
    // The two on-demand starts made a target of two idle environments, which housekeeping
    // started while the first two ran; the next two invocations found them.
    assert_eq!(starts, [Start::Pool, Start::Pool]);
    assert_eq!(stats.pool, 2);
    // Once those two were taken, the second housekeeping refilled the pool: six started.
    assert_eq!((stats.cold, stats.live), (6, 6), "{stats:?}");
    // No more on-demand starts for the 10 s window: environments the pool started and nobody
    // used are stopped; the four that served stay warm (the keep-alive is 10 minutes).
    std::thread::sleep(Duration::from_millis(11_500));
    let after = f.engine.stats()[0];
    assert_eq!(after.live, 4, "{after:?}");
    assert_eq!(after.reaped, 2, "{after:?}");
}

#[test]
fn without_the_adaptive_pool_a_rising_load_starts_environments_on_demand() {
    let f = fixture_with(|c| c.adaptive_pool = 0);
    let (starts, stats) = rising_load(&f);
    assert_eq!(starts, [Start::Cold, Start::Cold]);
    assert_eq!((stats.pool, stats.cold, stats.live), (0, 4, 4));
}

#[test]
fn idle_environments_are_reaped_after_the_keep_alive() {
    let f = fixture_with(|c| c.keep_alive = Duration::from_millis(300));
    f.function("echo", "echo", |_| {});
    let (outcome, _) = f.invoke("echo", b"x").unwrap();
    assert!(process_exists(outcome.env_pid));
    std::thread::sleep(Duration::from_millis(900));
    assert!(
        !process_exists(outcome.env_pid),
        "reaped after the keep-alive"
    );
    let stats = f.engine.stats();
    assert_eq!(stats[0].reaped, 1);
    assert_eq!(stats[0].live, 0);
    // A new environment (forked from the function's zygote once it is ready).
    let next = f.invoke("echo", b"y").unwrap().0;
    assert!(
        matches!(next.start, Start::Cold | Start::Zygote),
        "{next:?}"
    );
}

#[test]
fn an_updated_function_never_runs_on_an_old_environment() {
    let f = fixture();
    f.function("fn", "echo", |_| {});
    let (old, body) = f.invoke("fn", b"v1").unwrap();
    assert_eq!(body, b"v1");
    f.engine
        .update_function(FunctionConfig::new("fn", f.code, "error"))
        .unwrap();
    let (new, body) = f.invoke("fn", b"v2").unwrap();
    assert_eq!(new.error, Some(FunctionError::Handled));
    assert!(String::from_utf8_lossy(&body).contains("SampleError"));
    assert_ne!(new.env_pid, old.env_pid);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        !process_exists(old.env_pid),
        "the old revision's environment was reaped"
    );
}

#[test]
fn shutdown_leaves_no_process_or_cgroup_behind() {
    let f = fixture_with(|c| c.shards = 2);
    f.function("echo", "echo", |_| {});
    f.function("slow", "sleep", |_| {});
    let mut pids = Vec::new();
    for shard in 0..2 {
        let more = f
            .engine
            .on_shard(shard, |s| {
                let echo = s.function("echo").unwrap();
                let mut out = Vec::new();
                s.invoke_into(&echo, b"x", &mut out).unwrap();
                let slow = s.function("slow").unwrap();
                s.submit(&slow, b"10000", 1).unwrap();
                s.environment_pids()
            })
            .unwrap();
        pids.extend(more);
    }
    assert_eq!(pids.len(), 4);
    // Each environment's cgroup, as the host sees it ("N:memory:/hearth/pid-P-I/env-K"). An
    // environment joins it in its first microseconds (cgroup v1), so wait for that.
    let cgroups: Vec<std::path::PathBuf> = pids
        .iter()
        .map(|pid| {
            let deadline = Instant::now() + Duration::from_secs(5);
            let path = loop {
                let path = hearth_tests::cgroup_path(*pid, "memory").unwrap();
                let joined = match &path {
                    CgroupPath::V1(p) | CgroupPath::V2(p) => p.contains("/hearth/"),
                };
                if joined || Instant::now() > deadline {
                    break path;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            match path {
                CgroupPath::V1(p) => std::path::PathBuf::from(format!("/sys/fs/cgroup/memory{p}")),
                CgroupPath::V2(p) => std::path::PathBuf::from(format!("/sys/fs/cgroup{p}")),
            }
        })
        .collect();
    for cgroup in &cgroups {
        assert!(
            cgroup.is_dir(),
            "{} should exist while the engine runs",
            cgroup.display()
        );
    }
    let instance = cgroups[0].parent().unwrap().to_owned();
    let Fixture { engine, .. } = f;
    engine.shutdown();
    for pid in pids {
        assert!(
            !process_exists(pid),
            "environment {pid} outlived the engine"
        );
    }
    for cgroup in &cgroups {
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
    let inside = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| {
                        let procs = std::fs::read_to_string(e.path().join("cgroup.procs"));
                        format!("{} (procs: {procs:?})", e.path().display())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        !instance.exists(),
        "the engine's cgroup subtree {} left behind, holding {:?}",
        instance.display(),
        inside(&instance)
    );
}

#[test]
fn the_engine_serves_from_several_threads_at_once() {
    let f = Arc::new(fixture_with(|c| c.shards = 2));
    f.function("echo", "echo", |_| {});
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let payload = format!("{t}-{i}");
                    assert_eq!(
                        f.invoke("echo", payload.as_bytes()).unwrap().1,
                        payload.as_bytes()
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_full_pipelined_environment_makes_room_for_a_new_one_instead_of_failing() {
    let f = fixture();
    f.function("echo", "echo", |c| c.pipeline_depth = 4);
    // Each request arena holds one maximal payload: the second 4 MB request cannot queue
    // behind the first and must go to another environment.
    let big: &'static [u8] = Box::leak(vec![b'x'; 4 << 20].into_boxed_slice());
    let results = submit_all(&f, "echo", vec![big, big, big]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = poll_all(&f, 3);
    assert_eq!(done.len(), 3);
    for completion in &done {
        let outcome = completion.result.as_ref().expect("answered");
        assert_eq!(outcome.error, None);
        assert_eq!(completion.payload.len(), 4 << 20);
    }
}

#[test]
fn a_queued_invocation_gets_its_whole_timeout_from_when_it_starts() {
    let f = fixture();
    f.function("remaining", "remaining", |c| {
        c.pipeline_depth = 2;
        c.timeout = Duration::from_secs(2);
    });
    f.function("slow", "sleep", |c| c.timeout = Duration::from_secs(2));
    // Warm one environment, then queue a second invocation behind one that sleeps 700 ms: the
    // second one's deadline must not include the time it waited.
    assert!(f.invoke("remaining", b"").is_ok());
    let results = submit_all(&f, "remaining", vec![b"700", b""]);
    assert!(results.iter().all(Result::is_ok));
    let done = poll_all(&f, 2);
    let left: Vec<u64> = done
        .into_iter()
        .map(|c| String::from_utf8(c.payload).unwrap().parse().unwrap())
        .collect();
    assert!(
        (1200..=1310).contains(&left[0]),
        "the first slept 700 ms of its 2 s: {} ms left",
        left[0]
    );
    assert!(
        (1900..=2000).contains(&left[1]),
        "the queued one starts with its 2 s: {} ms left",
        left[1]
    );
}

#[test]
fn an_environment_that_exits_while_idle_is_never_blamed_for_the_next_call() {
    let f = fixture();
    f.function("leave", "leave", |_| {});
    for _ in 0..20 {
        // It answers, then exits. The next call either finds it gone and starts a new one, or
        // reaches it before its exit is noticed: then it did not run, and says so (retryable).
        match f.invoke("leave", b"") {
            Ok((outcome, body)) => {
                assert_eq!(outcome.error, None);
                assert_eq!(body, b"bye");
            }
            Err(InvokeError::Service(message)) => {
                assert!(message.contains("did not run"), "{message}")
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// The CPUs thread `id` may run on (0: the calling thread); empty once it is gone.
fn affinity(id: i32) -> Vec<usize> {
    let id = if id == 0 {
        nix::unistd::gettid().as_raw()
    } else {
        id
    };
    hearth_tests::allowed_cpus(id).unwrap_or_default()
}

#[test]
fn overlapping_invocations_start_on_the_shards_cpu_and_cpu_bound_ones_move_off_it() {
    hearth_tests::require_two_cpus("adaptive placement");
    let f = fixture();
    f.function("spin", "spin", |c| c.timeout = Duration::from_secs(10));
    let report = f
        .engine
        .on_shard(0, |shard| {
            let function = shard.function("spin").unwrap();
            // The first runs alone (another core); the second overlaps it (the shard's core).
            shard.submit(&function, b"800", 1).unwrap();
            shard.submit(&function, b"800", 2).unwrap();
            let mut seen = Vec::new();
            let mut done = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while done.len() < 2 && Instant::now() < deadline {
                shard.poll(&mut done, Some(Duration::from_millis(20)));
                let placement: Vec<Vec<usize>> =
                    shard.environment_pids().into_iter().map(affinity).collect();
                seen.push(placement);
            }
            (seen, done)
        })
        .unwrap();
    let (seen, done) = report;
    assert_eq!(done.len(), 2, "both invocations finished");
    for completion in &done {
        assert_eq!(completion.payload, b"spun 800");
    }
    // The shard runs on the first allowed CPU (pin_shards); environments on it are "local".
    let shard_cpu = hearth_tests_shard_cpu();
    let local_at_start = seen
        .first()
        .is_some_and(|p| p.iter().any(|cpus| cpus == &[shard_cpu]));
    assert!(
        local_at_start,
        "the overlapping invocation started on the shard's CPU: {seen:?}"
    );
    let local_at_end = seen
        .iter()
        .rev()
        .find(|p| p.len() == 2)
        .is_some_and(|p| p.iter().any(|cpus| cpus == &[shard_cpu]));
    assert!(
        !local_at_end,
        "the CPU-bound invocation moved off the shard's CPU: {seen:?}"
    );
}

/// The CPU shard 0 is pinned to: the first CPU this process may use.
fn hearth_tests_shard_cpu() -> usize {
    affinity(0).first().copied().unwrap_or(0)
}

/// A job waiting on a slow invocation sleeps, also once the shard's mailbox is signalled by the
/// next job arriving: the wait must not turn into a busy loop holding the shard's core for the
/// rest of the invocation (an environment woken on that core would wait for the kernel's next
/// tick, 4 ms at 250 Hz).
#[test]
fn a_shard_waiting_on_a_slow_invocation_sleeps_even_when_the_next_job_arrives() {
    let f = fixture();
    f.function("slow-sleeper", "sleep", |_| {});
    let (outcome, _) = f.invoke("slow-sleeper", b"1").expect("first call");
    assert_eq!(outcome.error, None);
    let shard = hearth_tests::thread_named("self", "hearth-shard-0").expect("the shard thread");
    let shard = std::path::PathBuf::from(format!("/proc/self/task/{shard}"));
    // utime + stime, in clock ticks.
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(shard.join("stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    // SAFETY: sysconf takes an integer.
    let tick = Duration::from_secs(1)
        / u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
    let before = cpu();
    std::thread::scope(|s| {
        let slow = s.spawn(|| f.invoke("slow-sleeper", b"400"));
        std::thread::sleep(Duration::from_millis(50));
        // Queued behind the invocation's job; sending it signals the shard's mailbox.
        let next = s.spawn(|| f.engine.on_shard(0, |_| ()));
        let (outcome, body) = slow.join().unwrap().expect("slow call");
        assert_eq!((outcome.error, body), (None, b"slept 400".to_vec()));
        next.join().unwrap().expect("the next job runs");
    });
    let used = tick * u32::try_from(cpu() - before).unwrap();
    assert!(
        used < Duration::from_millis(100),
        "the shard thread used {used:?} of CPU during a 400 ms invocation"
    );
}

/// A process and the CPUs it may run on.
type Placed = (i32, Vec<usize>);

/// Two shards whose environments stay on their shard's CPU, without the adaptive pool (every
/// start is then a cold or a zygote one).
fn same_as_shard_fixture() -> Fixture {
    fixture_with(|c| {
        c.shards = 2;
        c.env_cpus = EnvCpus::SameAsShard;
        c.adaptive_pool = 0;
    })
}

/// Shard 1 is pinned to one CPU, and `starts` went from nothing to a zygote fork (see
/// [`done_starting`]).
fn assert_pinned_and_started(shard_cpu: &[usize], starts: impl Iterator<Item = Start>) {
    assert_eq!(shard_cpu.len(), 1, "shard 1 is pinned to one CPU");
    let starts: Vec<Start> = starts.collect();
    assert!(
        done_starting(starts.iter().copied()),
        "started from nothing, then forked: {starts:?}"
    );
}

/// Whether `starts` began from nothing and reached a zygote fork, or (in a chroot, where the
/// kernel creates no user namespace and so there are no zygotes) made two starts from nothing.
fn done_starting(starts: impl Iterator<Item = Start>) -> bool {
    let starts: Vec<Start> = starts.collect();
    let from_nothing_first = starts.first() == Some(&Start::Cold);
    if hearth_sandbox::chrooted() {
        from_nothing_first && starts.len() >= 2 && starts.iter().all(|s| *s == Start::Cold)
    } else {
        from_nothing_first && starts.last() == Some(&Start::Zygote)
    }
}

/// `EnvCpus::SameAsShard`: every process of a function invoked on a shard (environments started
/// from nothing, the zygote, its helper and the environments it forks) may run only on that
/// shard's CPU, also through an invocation longer than the 50 ms after which adaptive placement
/// moves one off it.
#[test]
fn same_as_shard_keeps_every_process_of_a_function_on_its_shards_cpu() {
    hearth_tests::require_two_cpus("placement");
    let f = same_as_shard_fixture();
    f.function("pinned", "spin", |c| c.timeout = Duration::from_secs(10));
    let (shard_cpu, runs) = f
        .engine
        .on_shard(1, |shard| {
            // This job runs on shard 1's thread.
            let shard_cpu = affinity(0);
            let function = shard.function("pinned").unwrap();
            // Per invocation: how it started, and (pid, CPUs) of the function's processes
            // sampled while it ran.
            let mut runs: Vec<(Start, Vec<Placed>)> = Vec::new();
            // From nothing first, then (once the zygote is up) forked from it; in a chroot,
            // where there are no zygotes (no user namespaces), twice from nothing.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done_starting(runs.iter().map(|(s, _)| *s)) && Instant::now() < deadline {
                shard.housekeeping();
                shard.submit(&function, b"120", 1).unwrap();
                let mut done = Vec::new();
                let mut seen = Vec::new();
                while done.is_empty() {
                    shard.poll(&mut done, Some(Duration::from_millis(20)));
                    // A process that exits between the listing and the read is skipped.
                    seen.extend(
                        hearth_tests::function_pids("pinned")
                            .into_iter()
                            .filter_map(|pid| {
                                hearth_tests::allowed_cpus(pid).map(|cpus| (pid, cpus))
                            }),
                    );
                }
                let completion = done.pop().unwrap();
                assert_eq!(completion.payload, b"spun 120");
                let outcome = completion.result.expect("the invocation ran");
                assert_eq!(outcome.error, None);
                runs.push((outcome.start, seen));
                shard.retire_idle(&function);
            }
            (shard_cpu, runs)
        })
        .unwrap();
    assert_pinned_and_started(&shard_cpu, runs.iter().map(|(s, _)| *s));
    if !hearth_sandbox::chrooted() {
        // The forked invocation's samples hold the zygote, its helper and the child.
        let (_, forked) = runs.last().unwrap();
        let pids: std::collections::BTreeSet<i32> = forked.iter().map(|(pid, _)| *pid).collect();
        assert!(
            pids.len() >= 3,
            "the zygote, its helper and the forked child were sampled: {forked:?}"
        );
    }
    let elsewhere: Vec<_> = runs
        .iter()
        .flat_map(|(_, seen)| seen)
        .filter(|(_, cpus)| cpus != &shard_cpu)
        .collect();
    assert!(
        elsewhere.is_empty(),
        "processes allowed other CPUs than shard 1's {shard_cpu:?}: {elsewhere:?}"
    );
}

/// With the cpuset controller (v1 here, v2 elsewhere), `EnvCpus::SameAsShard` is a limit, not
/// only placement: a function that asks for every CPU (cold, and forked from its zygote outside
/// a chroot) still gets only its shard's, and each environment is in its own cpuset cgroup.
#[test]
fn same_as_shard_confines_a_function_that_widens_its_own_affinity() {
    hearth_tests::require_two_cpus("confinement");
    let f = same_as_shard_fixture();
    f.function("widen", "widen", |_| {});
    let (shard_cpu, answers) = f
        .engine
        .on_shard(1, |shard| {
            let shard_cpu = affinity(0);
            let function = shard.function("widen").unwrap();
            let mut answers = Vec::new();
            let mut out = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done_starting(answers.iter().map(|(s, _)| *s)) && Instant::now() < deadline {
                shard.housekeeping();
                let outcome = shard.invoke_into(&function, b"{}", &mut out).unwrap();
                assert_eq!(outcome.error, None, "{}", String::from_utf8_lossy(&out));
                answers.push((outcome.start, String::from_utf8_lossy(&out).into_owned()));
                // Its own cpuset cgroup, the one its memory cgroup is (a forked child that
                // stayed in its zygote's would be confined too, by the zygote's).
                for pid in shard.environment_pids() {
                    // (v2: one path for every controller.)
                    let cpuset = hearth_tests::cgroup_path(pid, "cpuset");
                    let memory = hearth_tests::cgroup_path(pid, "memory");
                    let own = match &cpuset {
                        Some(CgroupPath::V1(p) | CgroupPath::V2(p)) => p.contains("/env-"),
                        None => false,
                    };
                    assert!(
                        own && cpuset == memory,
                        "{:?} environment {pid} is not in its own cpuset cgroup \
                         (does the host have the cpuset controller?): cpuset {cpuset:?}, \
                         memory {memory:?}",
                        outcome.start
                    );
                }
                shard.retire_idle(&function);
            }
            (shard_cpu, answers)
        })
        .unwrap();
    assert_pinned_and_started(&shard_cpu, answers.iter().map(|(s, _)| *s));
    let own = shard_cpu
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for (start, cpus) in &answers {
        assert_eq!(
            cpus, &own,
            "a {start:?} environment widened its affinity to {cpus} (shard 1: {own})"
        );
    }
}
