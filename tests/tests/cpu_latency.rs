//! Tier 2 (root): idle CPUs poll while the engine is busy. Each shard holds a CPU-latency
//! request of 0 µs from an invocation until `idle_cpu_poll` has passed without one; the kernel
//! reports the strictest request of all in `/dev/cpu_dma_latency`, which is what these tests
//! read. (Alone in this test binary: another engine running in parallel would hold its own.)

use std::time::{Duration, Instant};

use hearth_scheduler::{Engine, EngineConfig, FunctionConfig, FunctionOutput, SandboxConfig};
use hearth_tests::{require_root, sample_code_dir};

/// The kernel's value when nobody asks for anything (`PM_QOS_CPU_LATENCY_DEFAULT_VALUE`).
const NO_REQUEST: i32 = 2_000_000_000;

/// The strictest CPU-latency request on the machine, in µs.
fn cpu_latency() -> i32 {
    let bytes = std::fs::read("/dev/cpu_dma_latency")
        .expect("reading /dev/cpu_dma_latency (the kernel's CPU-latency requests; needs root)");
    i32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"))
}

fn engine(idle_cpu_poll: Duration, state: &std::path::Path) -> Engine {
    let engine = Engine::start(EngineConfig {
        shards: 1,
        function_output: FunctionOutput::Discard,
        prepared_cgroups: 0,
        idle_cpu_poll,
        sandbox: SandboxConfig {
            state_dir: state.to_owned(),
            ..SandboxConfig::default()
        },
        ..EngineConfig::default()
    })
    .expect("engine");
    engine
        .create_function(FunctionConfig::new("echo", sample_code_dir(), "echo"))
        .expect("create function");
    engine
}

fn invoke(engine: &Engine) {
    let (outcome, body) = engine.invoke("echo", b"\"poll\"").expect("invoke");
    assert!(outcome.error.is_none(), "{outcome:?}");
    assert_eq!(body, b"\"poll\"");
}

/// Waits until no request is held; returns how long that took.
fn released(within: Duration) -> Duration {
    let start = Instant::now();
    while cpu_latency() != NO_REQUEST {
        assert!(
            start.elapsed() < within,
            "the request is still held {within:?} after the last invocation"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn idle_cpus_poll_while_the_engine_is_busy_and_halt_once_it_is_quiet() {
    require_root();
    assert_eq!(
        cpu_latency(),
        NO_REQUEST,
        "another process holds a CPU-latency request (tuned's latency profiles do): this test \
         needs a machine without one"
    );
    let state = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(1);
    let busy = engine(window, state.path());
    assert_eq!(cpu_latency(), NO_REQUEST, "held before any invocation");
    // The first invocation (a cold start) holds it; once let go, the warm environment's
    // invocations below take microseconds of the window.
    invoke(&busy);
    assert_eq!(cpu_latency(), 0, "idle CPUs poll after an invocation");
    released(Duration::from_secs(5));

    // Held while invocations keep coming (each refreshes the window)...
    let mut last = Instant::now();
    invoke(&busy);
    let spell = Instant::now();
    while spell.elapsed() < 2 * window {
        assert_eq!(cpu_latency(), 0, "let go while invocations keep coming");
        std::thread::sleep(window / 4);
        last = Instant::now();
        invoke(&busy);
    }
    assert_eq!(cpu_latency(), 0, "held after the last invocation");
    // ...and let go once the window passed after the last one (`last` is taken before it was
    // handed over), not before.
    let waited = released(Duration::from_secs(5));
    let since_last = last.elapsed();
    assert!(
        since_last >= window,
        "let go {since_last:?} after the last invocation, before its {window:?} window \
         (waited {waited:?})"
    );
    // Gone with the engine.
    invoke(&busy);
    assert_eq!(cpu_latency(), 0, "held again by the next invocation");
    busy.shutdown();
    assert_eq!(cpu_latency(), NO_REQUEST, "held after the engine stopped");

    // Turned off: never held.
    let off = engine(Duration::ZERO, state.path());
    invoke(&off);
    invoke(&off);
    assert_eq!(cpu_latency(), NO_REQUEST, "held with idle_cpu_poll zero");
    off.shutdown();
}
