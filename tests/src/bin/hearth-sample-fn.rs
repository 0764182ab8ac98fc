//! The sample native function used by hearth's tests and benchmarks. One binary, many
//! behaviours: the function's handler (`_HANDLER`, as in Lambda) picks one.
//!
//! | handler   | event               | does                                                      |
//! |-----------|---------------------|-----------------------------------------------------------|
//! | `echo`    | any bytes           | answers with the event                                    |
//! | `clock`   | ignored             | answers the CLOCK_MONOTONIC time it ran at (decimal ns)   |
//! | `widen`   | ignored             | asks for every CPU, answers those it may run on (`0,1`)   |
//! | `sleep`   | milliseconds        | sleeps, answers `slept N`                                 |
//! | `spin`    | milliseconds        | burns CPU, answers `spun N`                               |
//! | `widespin`| milliseconds        | asks for every CPU, spins on one thread per online CPU    |
//! | `hang`    | ignored             | never answers                                             |
//! | `crash`   | ignored             | dereferences a null pointer (SIGSEGV)                     |
//! | `exit`    | exit code           | exits with that code                                      |
//! | `alloc`   | MiB                 | allocates and touches that much memory, answers `allocated N` |
//! | `error`   | message             | fails with errorType `SampleError`                        |
//! | `big`     | bytes               | answers with that many bytes                              |
//! | `garbage` | what to corrupt     | writes garbage into its rings (see `garbage`)             |
//! | `twice`   | any bytes           | answers the same request twice                            |
//! | `leave`   | ignored             | answers `bye`, then exits                                 |
//! | `remaining` | milliseconds or "" | sleeps that long, answers the milliseconds left before its deadline |
//! | `probe`   | ignored             | answers a JSON report of what the sandbox allows          |
//! | `env`     | ignored             | answers its environment variables as a JSON object        |
//! | `forkbomb` | ignored            | forks sleeping children until fork fails, answers `forked N, then errno E` |
//! | `filltmp` | ignored             | writes /tmp/fill until it fails, answers `wrote N MiB, then errno E` |
//! | `flood`   | milliseconds        | writes to stdout as fast as it can for that long, answers `wrote N MiB` |
//! | `orphans` | ignored             | starts double-forked, setsid'd sleepers, then never answers |
#![allow(clippy::exit)] // `exit` and `crash` end the process on purpose

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hearth_ipc::layout::{Control, ARENA_LEN, SLOTS, TOTAL_LEN};
use hearth_ipc::{GuestChannel, ResponseStatus, CHANNEL_FD_ENV};
use hearth_runtime::{serve, FnError};

/// Burns CPU for `how_long`.
fn spin(how_long: Duration) {
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Asks for every CPU, then says which ones it may run on ("0,1").
fn widen() -> Result<String, FnError> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    let me = nix::unistd::Pid::from_raw(0);
    let err = |e: nix::Error| FnError::new("AffinityError", e.to_string());
    let mut all = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        all.set(cpu).map_err(err)?;
    }
    sched_setaffinity(me, &all).map_err(err)?;
    let got = sched_getaffinity(me).map_err(err)?;
    let cpus: Vec<String> = (0..CpuSet::count())
        .filter(|&c| got.is_set(c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    Ok(cpus.join(","))
}

fn number(event: &[u8]) -> Result<u64, FnError> {
    std::str::from_utf8(event)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| FnError::new("InvalidEvent", "the event must be a decimal number"))
}

fn main() {
    let handler = std::env::var("_HANDLER").unwrap_or_else(|_| "echo".to_owned());
    match handler.as_str() {
        "garbage" => garbage(),
        "twice" => twice(),
        "leave" => leave(),
        "remaining" => hearth_runtime::serve_with_context(|event, context| {
            if let Ok(ms) = number(event) {
                std::thread::sleep(Duration::from_millis(ms));
            }
            Ok(context
                .remaining_time()
                .as_millis()
                .to_string()
                .into_bytes())
        }),
        _ => {}
    }
    // Init that moves to another working directory (every environment, forked or not, starts
    // in the directory Init left).
    if let Some(dir) = std::env::var_os("SAMPLE_INIT_CHDIR") {
        let _ = std::env::set_current_dir(dir);
    }
    // A zygote whose children pause right after the fork, before their setup (libc runs fork
    // handlers then): long enough for a test to kill the zygote while a child sets itself up.
    if let Some(ms) = std::env::var("SAMPLE_CHILD_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        if channel_is_socket() {
            CHILD_PAUSE_MS.store(ms, Ordering::Relaxed);
            // SAFETY: registers a handler that only sleeps (async-signal-safe).
            unsafe { libc::pthread_atfork(None, None, Some(pause_child)) };
        }
    }
    if std::env::var_os("SAMPLE_HANG_AS_ZYGOTE").is_some() && channel_is_socket() {
        // A zygote whose Init never ends (the same function started from nothing serves).
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    serve(move |event| match handler.as_str() {
        "echo" => Ok(event.to_vec()),
        // The host's clock too: environments have no time namespace.
        "clock" => {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map_err(|e| FnError::new("ClockError", e.to_string()))?;
            Ok(Duration::from(now).as_nanos().to_string().into_bytes())
        }
        "widen" => Ok(widen()?.into_bytes()),
        "sleep" => {
            let ms = number(event)?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(format!("slept {ms}").into_bytes())
        }
        "spin" => {
            let ms = number(event)?;
            spin(Duration::from_millis(ms));
            Ok(format!("spun {ms}").into_bytes())
        }
        "widespin" => {
            // A hostile neighbour: every CPU asked for, one spinning thread per online CPU.
            let ms = number(event)?;
            widen()?;
            let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
                .ok()
                .flatten()
                .unwrap_or(1);
            std::thread::scope(|s| {
                for _ in 1..online {
                    s.spawn(|| spin(Duration::from_millis(ms)));
                }
                spin(Duration::from_millis(ms));
            });
            Ok(format!("spun {ms} on {online} threads").into_bytes())
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "crash" => {
            // SAFETY: none; this faults on purpose. (Not abort(): the function is the init of
            // its pid namespace, and an init ignores the SIGABRT it raises at itself.)
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            Ok(Vec::new())
        }
        "exit" => std::process::exit(i32::try_from(number(event)?).unwrap_or(1)),
        "alloc" => {
            let mib = usize::try_from(number(event)?).unwrap_or(usize::MAX);
            let mut v = vec![0u8; mib << 20];
            for page in v.chunks_mut(4096) {
                page[0] = 1;
            }
            Ok(format!("allocated {} MiB", v.len() >> 20).into_bytes())
        }
        "error" => Err(FnError::new("SampleError", String::from_utf8_lossy(event))),
        "big" => Ok(vec![b'x'; usize::try_from(number(event)?).unwrap_or(0)]),
        "probe" => Ok(probe::report().into_bytes()),
        "forkbomb" => {
            let mut forked = 0u64;
            loop {
                // SAFETY: fork in a single-threaded process; the child only sleeps.
                match unsafe { libc::fork() } {
                    0 => loop {
                        // SAFETY: pause blocks until a signal; the child never returns.
                        unsafe { libc::pause() };
                    },
                    pid if pid > 0 => forked += 1,
                    _ => {
                        let errno = std::io::Error::last_os_error();
                        return Ok(format!(
                            "forked {forked}, then errno {}",
                            errno.raw_os_error().unwrap_or(0)
                        )
                        .into_bytes());
                    }
                }
            }
        }
        "filltmp" => {
            use std::io::Write;
            let chunk = vec![b'x'; 1 << 20];
            let mut file = std::fs::File::create("/tmp/fill")
                .map_err(|e| FnError::new("FillError", e.to_string()))?;
            let mut written = 0u64;
            loop {
                if let Err(e) = file.write_all(&chunk) {
                    return Ok(format!(
                        "wrote {written} MiB, then errno {}",
                        e.raw_os_error().unwrap_or(0)
                    )
                    .into_bytes());
                }
                written += 1;
            }
        }
        "flood" => {
            use std::io::Write;
            let ms = number(event)?;
            let end = Instant::now() + Duration::from_millis(ms);
            let chunk = vec![b'y'; 64 << 10];
            let mut out = std::io::stdout().lock();
            let mut written = 0usize;
            while Instant::now() < end {
                if out.write_all(&chunk).is_err() {
                    break;
                }
                written += chunk.len();
            }
            Ok(format!("wrote {} MiB", written >> 20).into_bytes())
        }
        "orphans" => {
            for _ in 0..4 {
                // SAFETY: fork in a single-threaded process; the children only fork, setsid
                // and sleep.
                if unsafe { libc::fork() } == 0 {
                    // SAFETY: a new session, away from the function's.
                    unsafe { libc::setsid() };
                    // SAFETY: the grandchild is reparented to the namespace's init.
                    if unsafe { libc::fork() } == 0 {
                        loop {
                            // SAFETY: pause blocks until a signal.
                            unsafe { libc::pause() };
                        }
                    }
                    // SAFETY: the middle process leaves at once.
                    unsafe { libc::_exit(0) };
                }
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "env" => {
            let vars: serde_json::Map<String, serde_json::Value> = std::env::vars()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            Ok(serde_json::Value::Object(vars).to_string().into_bytes())
        }
        other => Err(FnError::new(
            "Runtime.HandlerNotFound",
            format!("no sample handler named {other}"),
        )),
    })
}

/// How long a forked child pauses (see `SAMPLE_CHILD_PAUSE_MS`).
static CHILD_PAUSE_MS: AtomicU32 = AtomicU32::new(0);

extern "C" fn pause_child() {
    let ms = CHILD_PAUSE_MS.load(Ordering::Relaxed);
    // SAFETY: usleep takes an integer.
    unsafe { libc::usleep(ms.saturating_mul(1000)) };
}

/// Whether fd 3 is a socket: this process was started as a zygote.
fn channel_is_socket() -> bool {
    // SAFETY: an all-zero stat is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the local buffer.
    unsafe { libc::fstat(3, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK }
}

/// Maps the channel a second time, behind the runtime's back, to write into it.
fn raw_channel() -> (GuestChannel, &'static Control, *mut u8) {
    let fd: i32 = std::env::var(CHANNEL_FD_ENV).unwrap().parse().unwrap();
    // SAFETY: dup of the inherited channel fd.
    let second = unsafe { libc::dup(fd) };
    assert!(second >= 0);
    // SAFETY: mapping our own channel memfd into fresh address space.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            TOTAL_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            second,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    // SAFETY: `fd` is the inherited channel fd, owned by nobody else in this process.
    let channel = GuestChannel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap();
    // SAFETY: the mapping is TOTAL_LEN bytes, page aligned, never unmapped, all atomics.
    let control = unsafe { &*ptr.cast::<Control>() };
    (channel, control, ptr.cast())
}

/// Takes each request, then corrupts the channel as the event says:
/// `resp-tail` (tail far past head), `resp-id` (a response for another request),
/// `resp-bounds` (payload outside the arena), `resp-status` (unknown status),
/// `req-head` (request head past the tail, then a valid answer),
/// `len-flip` (valid response whose length keeps changing after publication).
fn garbage() -> ! {
    let (mut channel, control, _) = raw_channel();
    loop {
        let request = channel.wait_next().unwrap();
        let mode = String::from_utf8_lossy(channel.payload(&request)).into_owned();
        let tail = control.resp_tail.load(Ordering::Relaxed);
        let slot = &control.resp_slots[(tail % SLOTS) as usize];
        match mode.as_str() {
            "resp-tail" => {
                control
                    .resp_tail
                    .store(tail.wrapping_add(1000), Ordering::Release);
            }
            "resp-id" => {
                slot.id.store(request.id + 7, Ordering::Relaxed);
                slot.len.store(0, Ordering::Relaxed);
                slot.status.store(0, Ordering::Relaxed);
                control.resp_tail.store(tail + 1, Ordering::Release);
            }
            "resp-bounds" => {
                slot.id.store(request.id, Ordering::Relaxed);
                slot.offset
                    .store(u32::try_from(ARENA_LEN).unwrap() - 10, Ordering::Relaxed);
                slot.len.store(4096, Ordering::Relaxed);
                slot.status.store(0, Ordering::Relaxed);
                control.resp_tail.store(tail + 1, Ordering::Release);
            }
            "resp-status" => {
                slot.id.store(request.id, Ordering::Relaxed);
                slot.len.store(0, Ordering::Relaxed);
                slot.status.store(77, Ordering::Relaxed);
                control.resp_tail.store(tail + 1, Ordering::Release);
            }
            "req-head" => {
                let head = u32::try_from(request.id).unwrap_or(0).wrapping_add(5000);
                control.req_head.store(head, Ordering::Release);
                channel
                    .respond(request.id, ResponseStatus::Ok, b"answered")
                    .unwrap();
                continue;
            }
            "len-flip" => {
                channel
                    .respond(request.id, ResponseStatus::Ok, b"flip")
                    .unwrap();
                let end = Instant::now() + Duration::from_millis(200);
                let mut x = 0u32;
                while Instant::now() < end {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    slot.len.store(x, Ordering::Relaxed);
                    slot.offset.store(x.rotate_left(7), Ordering::Relaxed);
                }
                continue;
            }
            _ => {
                channel
                    .respond(request.id, ResponseStatus::Ok, b"no such garbage")
                    .unwrap();
                continue;
            }
        }
        // Wake the scheduler if it sleeps, then never answer properly.
        control.host_bell.notify();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Answers one request, then exits (status 0) while idle.
fn leave() -> ! {
    let (mut channel, _, _) = raw_channel();
    let request = channel.wait_next().unwrap();
    channel
        .respond(request.id, ResponseStatus::Ok, b"bye")
        .unwrap();
    std::process::exit(0)
}

/// Answers each request twice.
fn twice() -> ! {
    let (mut channel, _, _) = raw_channel();
    loop {
        let request = channel.wait_next().unwrap();
        let body = channel.payload(&request).to_vec();
        channel
            .respond(request.id, ResponseStatus::Ok, &body)
            .unwrap();
        channel
            .respond(request.id, ResponseStatus::Ok, b"second answer")
            .unwrap();
    }
}

// The probe is a list of raw syscalls made on purpose to see which the sandbox refuses; each
// takes constant or NULL arguments, or pointers to locals that outlive the call. One comment
// here instead of one per call.
#[allow(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]
mod probe {
    //! What a function can see and do inside its environment, as JSON.
    use std::ffi::CString;

    use serde_json::{json, Value};

    fn errno_of(ret: i64) -> Value {
        if ret < 0 {
            json!(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            json!("ok")
        }
    }

    fn try_path(op: &str, path: &str) -> Value {
        let c = CString::new(path).unwrap();
        // SAFETY: plain syscalls on a NUL-terminated path; fds are closed right away.
        let ret = unsafe {
            match op {
                "write" => libc::open(
                    c.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                    0o644,
                ),
                "read" => libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC),
                "mkdir" => libc::mkdir(c.as_ptr(), 0o755),
                _ => unreachable!(),
            }
        };
        if ret >= 0 && op != "mkdir" {
            // SAFETY: closing the fd we just opened.
            unsafe { libc::close(ret) };
        }
        errno_of(i64::from(ret))
    }

    fn status_field(name: &str) -> Value {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| json!(v.trim_start_matches(':').trim()))
            })
            .unwrap_or(Value::Null)
    }

    /// Runs one syscall and returns "ok" or its errno, read right after the call.
    fn outcome(call: impl FnOnce() -> i64) -> Value {
        let ret = call();
        errno_of(ret)
    }

    pub(super) fn report() -> String {
        // SAFETY (all closures below): each makes one raw syscall with constant or NULL
        // arguments, or pointers to locals that outlive the call.
        let syscalls = json!({
            "mount": outcome(|| i64::from(unsafe { libc::mount(c"none".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) })),
            "unshare": outcome(|| i64::from(unsafe { libc::unshare(libc::CLONE_NEWNS) })),
            "io_uring_setup": outcome(|| unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, [0u8; 120].as_mut_ptr()) }),
            "setns": outcome(|| i64::from(unsafe { libc::setns(0, 0) })),
            "chroot": outcome(|| i64::from(unsafe { libc::chroot(c"/tmp".as_ptr()) })),
            "ptrace": outcome(|| unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) }),
            "bpf": outcome(|| unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) }),
            "keyctl": outcome(|| unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0) }),
            "perf_event_open": outcome(|| unsafe { libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0) }),
            "userfaultfd": outcome(|| unsafe { libc::syscall(libc::SYS_userfaultfd, 0) }),
            "clone_newns": outcome(|| unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_NEWNS | libc::SIGCHLD, 0, 0, 0, 0) }),
            "socket_netlink": outcome(|| i64::from(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) })),
            "socket_packet": outcome(|| i64::from(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) })),
        });
        // SAFETY: identity queries cannot fail.
        let (getpid, getuid, getgid) = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let pids: Vec<String> = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .collect()
            })
            .unwrap_or_default();
        let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let ifaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|s| s.trim().to_owned()))
            .collect();
        let root: Vec<String> = std::fs::read_dir("/")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let namespaces = ["mnt", "ipc", "uts", "pid"].map(|kind| {
            std::fs::read_link(format!("/proc/self/ns/{kind}"))
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        });
        json!({
            "uid": getuid, "gid": getgid, "pid": getpid,
            "hostname": host.trim(),
            "pids": pids, "fds": fds, "interfaces": ifaces, "root": root,
            "cap_eff": status_field("CapEff"), "cap_prm": status_field("CapPrm"),
            "cap_bnd": status_field("CapBnd"), "cap_amb": status_field("CapAmb"),
            "no_new_privs": status_field("NoNewPrivs"), "seccomp": status_field("Seccomp"),
            "groups": status_field("Groups"),
            "sig_ign": status_field("SigIgn"), "sig_blk": status_field("SigBlk"),
            "cgroup": std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            "namespaces": namespaces,
            "passwd": std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            "syscalls": syscalls,
            "paths": {
                "write_root": try_path("write", "/hearth-probe"),
                "write_task": try_path("write", "/var/task/hearth-probe"),
                "write_tmp": try_path("write", "/tmp/hearth-probe"),
                "write_usr": try_path("write", "/usr/hearth-probe"),
                "read_task": try_path("read", "/var/task/bootstrap"),
                "write_proc_sysrq": try_path("write", "/proc/sysrq-trigger"),
                "write_dev_null": try_path("write", "/dev/null"),
                "read_host_os_release": try_path("read", "/etc/os-release"),
                "mkdir_tmp": try_path("mkdir", "/tmp/hearth-probe-dir"),
                // Its own, so no mount flag or permission stops the write: only landlock does.
                "write_proc_self_comm": try_path("write", "/proc/self/comm"),
            },
        })
        .to_string()
    }
}
