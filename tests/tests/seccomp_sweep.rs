//! Tier 2 (root): the seccomp sweep. Every x86_64 syscall number (0..=1023) the native
//! allowlist (`sandbox/seccomp/native.allow`) does not allow is called from inside a real
//! environment and must fail with the errno the policy gives it (ENOSYS by default, EPERM for
//! the ones listed as refused); every allowlisted one is exercised there and must do its job;
//! a conditional rule's syscall is also called with arguments that break the condition and must
//! fail like a denied one; x32 (`nr | 0x40000000`) and i386 (`int 0x80`) syscalls must kill the
//! process with SIGSYS. The calls are made by `tests/src/bin/hearth-sweep.rs`; set
//! `HEARTH_SWEEP_REPORT=path` to keep its JSON report (one entry per call, with notes).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_sandbox::seccomp::{
    parse, resolve, x86_64_syscall_names, Action, ResolvedRule, NATIVE_ALLOWLIST,
};
use hearth_scheduler::{
    Engine, EngineConfig, FunctionConfig, FunctionOutput, SandboxConfig, Start,
};
use hearth_tests::{require_root, sweep_code_dir, NOBODY};
use serde_json::{json, Value};

/// Allowlisted syscalls the sweep does not exercise, each with the reason. Keep it short and
/// honest: an entry here is a syscall the policy lets through that nothing checks.
const SKIP: &[(&str, &str)] = &[];

/// How a call the kernel exempts from seccomp ends when called outside its trampoline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bypass {
    /// The kernel kills the caller with this signal.
    Signal(i32),
    /// The kernel fails the call with this errno.
    Errno(i32),
}

/// x86_64 syscalls the kernel runs without consulting any seccomp filter
/// (`seccomp_uprobe_exception` in kernel/seccomp.c, since Linux 6.14 for uretprobe and 6.17 for
/// uprobe): uprobe trampolines call them from inside any process, sandboxed or not. Called from
/// anywhere else they do nothing: uretprobe kills the caller with SIGILL, uprobe fails with
/// ENXIO. No allowlist can change this; the sweep asserts that outcome exactly, or the filter's
/// ENOSYS on a kernel that predates the exemption.
const SECCOMP_EXEMPT: &[(i32, &str, Bypass)] = &[
    (335, "uretprobe", Bypass::Signal(libc::SIGILL)),
    (336, "uprobe", Bypass::Errno(libc::ENXIO)),
];

/// x32 numbers to try (with the x32 bit added): common ones and x32-only ones.
const X32: &[(i64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (39, "getpid"),
    (60, "exit"),
    (231, "exit_group"),
    (512, "rt_sigaction"),
    (513, "rt_sigreturn"),
    (514, "ioctl"),
    (520, "execve"),
    (545, "execveat"),
];

/// i386 numbers to try through `int 0x80`.
const I386: &[(i64, &str)] = &[
    (1, "exit"),
    (4, "write"),
    (11, "execve"),
    (20, "getpid"),
    (120, "clone"),
];

/// What the policy does with syscall `nr` called with `args`, as the filter decides it: the
/// action of the rules whose condition holds, ENOSYS when none does.
fn policy_action(rules: &[ResolvedRule], nr: i32, args: &[u64; 6]) -> Result<Action, String> {
    let mut actions: Vec<Action> = Vec::new();
    for rule in rules.iter().filter(|r| r.nr == nr) {
        let holds = match rule.condition {
            None => true,
            Some((index, mask, value)) => {
                let index = usize::try_from(index).expect("argument index");
                args[index] & mask == value
            }
        };
        if holds && !actions.contains(&rule.action) {
            actions.push(rule.action);
        }
    }
    match actions.as_slice() {
        [] => Ok(Action::Errno(libc::ENOSYS)),
        [one] => Ok(*one),
        several => Err(format!("rules disagree for these arguments: {several:?}")),
    }
}

fn args_of(entry: &Value) -> Option<[u64; 6]> {
    let list = entry["args"].as_array()?;
    let mut args = [0u64; 6];
    for (slot, v) in args.iter_mut().zip(list) {
        *slot = v.as_u64()?;
    }
    Some(args)
}

/// What the native allowlist decides, resolved once per test.
struct Policy {
    rules: Vec<ResolvedRule>,
    allowed: BTreeSet<i32>,
    known: BTreeMap<i32, String>,
    denied: Vec<i32>,
    policy_names: BTreeMap<i32, String>,
}

impl Policy {
    fn native() -> Policy {
        let rules =
            resolve(&parse(NATIVE_ALLOWLIST).expect("the allowlist parses")).expect("resolve");
        let allowed: BTreeSet<i32> = rules
            .iter()
            .filter(|r| r.action == Action::Allow)
            .map(|r| r.nr)
            .collect();
        let known: BTreeMap<i32, String> = x86_64_syscall_names().into_iter().collect();
        let denied: Vec<i32> = (0..=1023).filter(|nr| !allowed.contains(nr)).collect();
        let policy_names: BTreeMap<i32, String> =
            rules.iter().map(|r| (r.nr, r.syscall.clone())).collect();
        for (name, why) in SKIP {
            assert!(
                rules
                    .iter()
                    .any(|r| r.syscall == *name && r.action == Action::Allow),
                "the skip table lists {name} ({why}), which the allowlist does not allow"
            );
        }
        Policy {
            rules,
            allowed,
            known,
            denied,
            policy_names,
        }
    }

    /// The sweep function's event: every number to deny and to exercise, the x32 and i386
    /// calls, and the names for the report.
    fn event(&self) -> Value {
        let mut names: serde_json::Map<String, Value> = self
            .known
            .iter()
            .map(|(nr, name)| (nr.to_string(), json!(name)))
            .collect();
        for (nr, name) in X32 {
            names.insert(format!("x32:{nr}"), json!(name));
        }
        for (nr, name) in I386 {
            names.insert(format!("i386:{nr}"), json!(name));
        }
        json!({
            "deny": self.denied,
            "allow": self.allowed,
            "x32": X32.iter().map(|x| x.0).collect::<Vec<_>>(),
            "i386": I386.iter().map(|x| x.0).collect::<Vec<_>>(),
            "names": names,
        })
    }

    /// Checks the sweep's report against the policy: the unexpected results, and a summary of
    /// the counts.
    fn check(&self, report: &Value) -> (Vec<String>, String) {
        let Policy {
            rules,
            allowed,
            known,
            denied,
            policy_names,
        } = self;
        let entries = report["entries"].as_array().expect("entries");

        let mut unexpected: Vec<String> = Vec::new();
        let mut seen_denied: BTreeMap<i32, usize> = BTreeMap::new();
        let mut allowed_ok: BTreeSet<i32> = BTreeSet::new();
        let (mut enosys, mut eperm, mut refused_args, mut killed, mut kill_entries) =
            (0, 0, 0, 0, 0);
        let mut exempt = Vec::new();
        for entry in entries {
            let nr = entry["nr"].as_i64().expect("nr");
            let expected = entry["expected"].as_str().unwrap_or("");
            let (result, errno) = (entry["result"].as_i64(), entry["errno"].as_i64());
            let line = |why: &str| {
                format!(
                    "{nr} {}: expected {expected}, got result {result:?} errno {errno:?} signal {}: {why} ({})",
                    entry["name"], entry["signal"], entry["note"]
                )
            };
            if expected == "kill" {
                kill_entries += 1;
                if entry["signal"].as_i64() == Some(i64::from(libc::SIGSYS)) {
                    killed += 1;
                } else {
                    unexpected.push(line("must be killed by SIGSYS"));
                }
                continue;
            }
            let nr = i32::try_from(nr).expect("an x86_64 number");
            match expected {
                "deny" => {
                    let args = args_of(entry).unwrap_or([u64::MAX; 6]);
                    let from_allowed = allowed.contains(&nr);
                    if from_allowed {
                        refused_args += 1;
                    } else {
                        *seen_denied.entry(nr).or_default() += 1;
                    }
                    let bypass = SECCOMP_EXEMPT.iter().find(|e| e.0 == nr && !from_allowed);
                    if let Some((_, name, how)) = bypass {
                        let got = match (entry["signal"].as_i64(), errno) {
                            (Some(sig), _) if sig != 0 => {
                                Some(Bypass::Signal(i32::try_from(sig).unwrap_or(0)))
                            }
                            (_, Some(e)) if result == Some(-1) => {
                                Some(Bypass::Errno(i32::try_from(e).unwrap_or(0)))
                            }
                            _ => None,
                        };
                        if got == Some(*how) {
                            exempt.push(format!("{nr} {name}: {how:?}"));
                        } else if got == Some(Bypass::Errno(libc::ENOSYS)) {
                            enosys += 1;
                        } else {
                            unexpected.push(line(&format!(
                                "{name} is exempt from seccomp; it must end {how:?} (or ENOSYS where the kernel lacks it)"
                            )));
                        }
                        continue;
                    }
                    match policy_action(rules, nr, &args) {
                        Ok(Action::Errno(want)) => {
                            if result != Some(-1) || errno != Some(i64::from(want)) {
                                unexpected.push(line(&format!("the policy says errno {want}")));
                            } else if want == libc::EPERM {
                                eperm += usize::from(!from_allowed);
                            } else {
                                enosys += usize::from(!from_allowed);
                            }
                        }
                        Ok(Action::Allow) => unexpected.push(line(
                            "the sweep's refused arguments satisfy an allow rule: fix the sweep",
                        )),
                        Err(why) => unexpected.push(line(&why)),
                    }
                }
                "allow" => {
                    if let Some(args) = args_of(entry) {
                        if policy_action(rules, nr, &args) != Ok(Action::Allow) {
                            unexpected.push(line(
                                "the exercise's arguments break the allow rule's condition",
                            ));
                            continue;
                        }
                    }
                    let filtered = errno == Some(i64::from(libc::ENOSYS));
                    if entry["ok"] == true && !filtered {
                        allowed_ok.insert(nr);
                    } else {
                        unexpected.push(line("an allowlisted syscall must work"));
                        allowed_ok.remove(&nr);
                    }
                }
                other => unexpected.push(line(&format!("unknown expectation {other:?}"))),
            }
        }
        for nr in denied {
            match seen_denied.get(nr) {
                Some(1) => {}
                n => unexpected.push(format!("{nr}: {n:?} results for a denied number")),
            }
        }
        for nr in allowed {
            let name = policy_names.get(nr).map_or("?", String::as_str);
            let skipped = SKIP.iter().any(|(s, _)| *s == name);
            if !allowed_ok.contains(nr) && !skipped {
                unexpected.push(format!("{nr} {name}: allowlisted but not shown to work"));
            }
        }
        let kills = X32.len() + I386.len();
        if kill_entries != kills {
            unexpected.push(format!(
                "{kills} kill-expected calls sent, {kill_entries} answered"
            ));
        }

        let known_denied = denied.iter().filter(|nr| known.contains_key(nr)).count();
        let summary = format!(
            "{} numbers swept (0..=1023; libseccomp names {} of them): \
             {} denied ({known_denied} known to libseccomp; {enosys} ENOSYS, {eperm} EPERM, \
             exempt from seccomp by the kernel and harmless: {exempt:?}), \
             {} allowed and exercised, {refused_args} refused argument variants of conditional \
             rules, {killed} x32/i386 calls killed by SIGSYS; skipped {}",
            denied.len() + allowed.len(),
            known.len(),
            denied.len(),
            allowed_ok.len(),
            SKIP.len(),
        );
        (unexpected, summary)
    }
}

/// An engine (one shard, output inherited) with the sweep function ("sweep", 512 MB, 60 s),
/// forked from a zygote when `zygote`; and its state directory.
fn sweep_engine(zygote: bool) -> (Engine, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::start(EngineConfig {
        shards: 1,
        function_output: FunctionOutput::Inherit,
        prepared_cgroups: 0,
        sandbox: SandboxConfig {
            state_dir: state.path().to_owned(),
            ..SandboxConfig::default()
        },
        ..EngineConfig::default()
    })
    .expect("engine");
    let mut config = FunctionConfig::new("sweep", sweep_code_dir(), "sweep");
    config.memory_mb = 512;
    config.timeout = Duration::from_secs(60);
    config.zygote = zygote;
    engine.create_function(config).expect("create function");
    (engine, state)
}

fn assert_none_unexpected(mode: &str, unexpected: &[String]) {
    assert!(
        unexpected.is_empty(),
        "{} unexpected results ({mode}):\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

#[test]
fn every_syscall_number_is_refused_or_works_as_the_allowlist_says() {
    require_root();
    let began = Instant::now();
    let policy = Policy::native();

    let (engine, _state) = sweep_engine(false);

    let invoked = Instant::now();
    let (outcome, body) = engine
        .invoke("sweep", policy.event().to_string().as_bytes())
        .expect("the invocation reaches the function");
    let invoke_took = invoked.elapsed();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(outcome.error, None, "the sweep function failed: {body}");
    if let Some(path) = std::env::var_os("HEARTH_SWEEP_REPORT") {
        std::fs::write(&path, &body).expect("write the sweep report");
    }
    let report: Value = serde_json::from_str(&body).expect("a JSON report");
    let (unexpected, summary) = policy.check(&report);
    eprintln!(
        "seccomp sweep: {summary}; invocation {:.2} s (the function's own count: {} ms), \
         test {:.2} s",
        invoke_took.as_secs_f64(),
        report["elapsed_ms"],
        began.elapsed().as_secs_f64(),
    );
    assert_none_unexpected("root mode", &unexpected);
}

/// The same sweep in an environment forked from the function's zygote: the child loads a
/// short filter on top of the zygote's wider one, and the two must rule every syscall exactly
/// as the native policy does.
#[test]
fn every_syscall_number_is_refused_or_works_as_the_allowlist_says_in_a_zygote_child() {
    require_root();
    let policy = Policy::native();
    let (engine, _state) = sweep_engine(true);
    let new_environment = |event: &[u8]| {
        engine
            .on_shard(0, |shard| {
                let f = shard.function("sweep").unwrap();
                shard.retire_idle(&f);
                shard.housekeeping();
            })
            .unwrap();
        engine
            .invoke("sweep", event)
            .expect("the invocation reaches the function")
    };
    if hearth_sandbox::chrooted() {
        // No user namespaces in a chroot, so no zygotes: environments start from nothing.
        assert_eq!(new_environment(b"not an event").0.start, Start::Cold);
        return;
    }
    // Until the zygote serves (a cheap event that the sweep refuses at once).
    let deadline = Instant::now() + Duration::from_secs(10);
    while new_environment(b"not an event").0.start != Start::Zygote {
        assert!(Instant::now() < deadline, "no zygote start within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (outcome, body) = new_environment(policy.event().to_string().as_bytes());
    assert_eq!(outcome.start, Start::Zygote);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(outcome.error, None, "the sweep function failed: {body}");
    let report: Value = serde_json::from_str(&body).expect("a JSON report");
    let (unexpected, summary) = policy.check(&report);
    eprintln!("seccomp sweep (zygote child): {summary}");
    assert_none_unexpected("zygote child", &unexpected);
}

/// The same sweep in ROOTLESS mode: `hearth-sandbox-helper invoke`, run as uid/gid 65534, puts
/// the environment in a user namespace (`CgroupPolicy::BestEffortWhenRootless`) and sends it the
/// same event; the report must meet the same expectations. In a chroot the kernel creates no
/// user namespace: the test asserts hearth's clear error instead, as `escape_rootless.rs` does.
#[test]
fn every_syscall_number_is_refused_or_works_as_the_allowlist_says_rootless() {
    require_root();
    let began = Instant::now();
    let policy = Policy::native();

    let rootless = hearth_tests::RootlessDir::new("hearth-rootless-sweep", "hearth-sweep");
    let (helper, code, state) = (&rootless.helper, &rootless.code, &rootless.state);

    let event = policy.event().to_string();
    let invoked = Instant::now();
    let mut child = Command::new(helper)
        .arg("invoke")
        .arg(state)
        .arg(code)
        .arg("sweep")
        .arg("--timeout-ms=60000")
        .arg("--memory-mb=512")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the helper as nobody");
    let mut stdin = child.stdin.take().expect("the helper's stdin");
    let writer = std::thread::spawn(move || stdin.write_all(event.as_bytes()));
    let out = child.wait_with_output().expect("the helper's output");
    let invoke_took = invoked.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if hearth_sandbox::chrooted() {
        hearth_tests::assert_rootless_refused_in_chroot(&out);
        return;
    }
    writer
        .join()
        .expect("the event writer")
        .expect("the event reaches the helper");
    assert!(
        out.status.success(),
        "the helper failed: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("the helper's JSON line");
    assert_eq!(answer["rootless"], true, "hearth ran rootless: {answer}");
    let body = answer["body"].as_str().expect("the function's answer");
    assert_eq!(
        answer["error"],
        Value::Null,
        "the sweep function failed: {}: {body}\n{stderr}",
        answer["message"]
    );
    if let Some(path) = std::env::var_os("HEARTH_SWEEP_REPORT_ROOTLESS") {
        std::fs::write(&path, body).expect("write the sweep report");
    }
    let report: Value = serde_json::from_str(body).expect("a JSON report");
    let (unexpected, summary) = policy.check(&report);
    eprintln!(
        "seccomp sweep, rootless (cgroups used: {}): {summary}; helper run {:.2} s (the \
         function's own count: {} ms), test {:.2} s",
        answer["cgroups"],
        invoke_took.as_secs_f64(),
        report["elapsed_ms"],
        began.elapsed().as_secs_f64(),
    );
    assert_none_unexpected("rootless mode", &unexpected);
}
