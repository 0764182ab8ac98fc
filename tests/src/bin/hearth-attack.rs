//! The escape suite's hostile function (`tests/tests/escape.rs`). One binary, one attack per
//! handler (`_HANDLER`, as in Lambda): each tries to escape its environment or harm the host and
//! answers a JSON report of exactly what happened:
//!
//! ```json
//! {"attack": "mount", "outcome": "blocked", "detail": "mount(tmpfs on /tmp): EPERM; ...",
//!  "steps": [{"call": "mount(tmpfs on /tmp)", "result": "EPERM", "judged": true}, ...]}
//! ```
//!
//! A *judged* step is one that must fail: if it succeeds the outcome is `ESCAPED` and the detail
//! says what succeeded. Other steps are recorded for the reader (setting up an attack, or calls
//! whose success is harmless and is checked from the host instead). Attacks that the sandbox is
//! expected to kill (`x32-abi`, `int80`) simply get killed; the host sees the signal. The ring
//! attacks (`ring-*`) write garbage into the channel's shared memory; the host is expected to
//! kill the environment (`Runtime.InvalidResponse`) or, where the garbage lies in fields the host
//! never reads back, to carry on.
//!
//! Inputs, from the function's configuration (`Environment`): `HEARTH_ATTACK_HOST_PID` (the
//! scheduler's pid on the host), `HEARTH_ATTACK_HOST_PGID` (its process group),
//! `HEARTH_ATTACK_VICTIM_PID` (a host process the test watches), `HEARTH_ATTACK_SIBLING_PID` and
//! `HEARTH_ATTACK_SIBLING_SOCKET` (another environment, and the abstract unix socket it listens
//! on), `HEARTH_ATTACK_TARGETS` (comma-separated host `ip:port`s with a listener behind them),
//! `HEARTH_ATTACK_ABSTRACT` (an abstract unix socket the test listens on, on the host) and
//! `HEARTH_ATTACK_CANARY` (a host file that must never change).
//!
//! Besides the attacks: `sibling` listens on `HEARTH_ATTACK_SIBLING_SOCKET` and stays warm;
//! `echo` answers with the event.
#![allow(clippy::exit)] // attacks fork children that must `_exit`

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hearth_ipc::layout::{
    Control, ARENA_LEN, REQ_ARENA_OFFSET, RESP_ARENA_OFFSET, SLOTS, TOTAL_LEN,
};
use hearth_ipc::{GuestChannel, ResponseStatus, CHANNEL_FD_ENV};
use serde_json::{json, Value};

/// ioctl requests (x86_64), as the 64-bit register values the attacks pass.
const TIOCSTI: u64 = 0x5412;
const SIOCSIFFLAGS: u64 = 0x8914;
const SIOCSIFADDR: u64 = 0x8916;

// ----- raw syscalls -------------------------------------------------------------------------

/// Result of a syscall: its return value or its errno.
type Ret = Result<i64, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One raw syscall. Every attack passes constants, or pointers to buffers that outlive the call;
/// the kernel checks each argument (a bad pointer is EFAULT).
fn sys(nr: libc::c_long, a: [u64; 6]) -> Ret {
    // SAFETY: the attacks below never pass a syscall that unmaps, remaps or writes this
    // process's memory other than the buffers they hand over for the kernel to fill, and every
    // pointer they pass points into a live local or a CString.
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// A signed value as a syscall argument register.
fn int(v: impl Into<i64>) -> u64 {
    u64::from_ne_bytes(v.into().to_ne_bytes())
}

/// A pointer as a syscall argument register.
fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

fn mptr<T>(p: *mut T) -> u64 {
    p as usize as u64
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn close(fd: i64) {
    let _ = sys(libc::SYS_close, [int(fd), 0, 0, 0, 0, 0]);
}

fn open(path: &str, flags: i32) -> Ret {
    let c = cstr(path);
    sys(
        libc::SYS_openat,
        [
            int(libc::AT_FDCWD),
            ptr(c.as_ptr()),
            int(flags | libc::O_CLOEXEC),
            0o644,
            0,
            0,
        ],
    )
}

fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// `fork`; the child runs `child` and `_exit`s with its value. Only raw syscalls may be made
/// in `child` (this process is single-threaded, but keep the child minimal anyway).
fn fork(child: impl FnOnce() -> i32) -> Ret {
    // SAFETY: the attack process is single-threaded (the runtime starts no thread), so the
    // child is a complete copy; it only makes raw syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(i64::from(pid))
}

/// Waits for child `pid`; returns its wait status.
fn wait(pid: i64) -> Result<i32, i32> {
    let mut status = 0i32;
    sys(
        libc::SYS_wait4,
        [int(pid), mptr(&raw mut status), 0, 0, 0, 0],
    )?;
    Ok(status)
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// A child that waits forever (until killed).
fn pausing_child() -> Ret {
    fork(|| loop {
        let _ = sys(libc::SYS_pause, [0; 6]);
    })
}

fn kill(pid: i64, sig: i32) -> Ret {
    sys(libc::SYS_kill, [int(pid), int(sig), 0, 0, 0, 0])
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOKEY => "ENOKEY",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ESTALE => "ESTALE",
        _ => return format!("errno {e}"),
    };
    name.to_owned()
}

fn result_name(r: Ret) -> String {
    match r {
        Ok(v) => format!("ok {v}"),
        Err(e) => errno_name(e),
    }
}

// ----- the report -----------------------------------------------------------------------------

struct Step {
    call: String,
    result: String,
    judged: bool,
}

/// What one attack did, step by step.
struct Report {
    attack: String,
    steps: Vec<Step>,
    escapes: Vec<String>,
}

impl Report {
    fn new(attack: &str) -> Self {
        Self {
            attack: attack.to_owned(),
            steps: Vec::new(),
            escapes: Vec::new(),
        }
    }

    /// A call that must fail. Success is an escape.
    fn deny(&mut self, call: impl Into<String>, r: Ret) {
        let call = call.into();
        if let Ok(v) = r {
            self.escapes
                .push(format!("{call} succeeded (returned {v})"));
        }
        self.steps.push(Step {
            call,
            result: result_name(r),
            judged: true,
        });
    }

    /// A call that must fail and that returns an fd if it does not (closed at once).
    fn deny_fd(&mut self, call: impl Into<String>, r: Ret) {
        if let Ok(fd) = r {
            close(fd);
        }
        self.deny(call, r);
    }

    /// Opens `path` with `flags`, which must fail; closes the fd if it did not.
    fn deny_open(&mut self, path: &str, flags: i32, how: &str) {
        let r = open(path, flags);
        if let Ok(fd) = r {
            close(fd);
        }
        self.deny(format!("open({path}, {how})"), r);
    }

    /// Many calls that must all fail, recorded as one step: the result names each distinct
    /// outcome and how often it happened (`EPERM` when all failed with EPERM).
    fn deny_many(
        &mut self,
        call: impl Into<String>,
        results: impl IntoIterator<Item = (String, Ret)>,
    ) {
        let call = call.into();
        let mut counts: Vec<(String, usize)> = Vec::new();
        for (what, r) in results {
            if let Ok(v) = r {
                self.escapes
                    .push(format!("{call}: {what} succeeded (returned {v})"));
            }
            let name = match r {
                Ok(_) => "ok".to_owned(),
                Err(e) => errno_name(e),
            };
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => counts.push((name, 1)),
            }
        }
        let result = if counts.len() == 1 {
            counts[0].0.clone()
        } else {
            counts
                .iter()
                .map(|(n, c)| format!("{n} x{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.steps.push(Step {
            call: format!("{call} [{}]", counts.iter().map(|(_, c)| c).sum::<usize>()),
            result,
            judged: true,
        });
    }

    /// A step that is not judged here (setup, or harmless inside the environment).
    fn note(&mut self, call: impl Into<String>, result: impl Into<String>) {
        self.steps.push(Step {
            call: call.into(),
            result: result.into(),
            judged: false,
        });
    }

    /// Something that got out.
    fn escaped(&mut self, what: impl Into<String>) {
        self.escapes.push(what.into());
    }

    fn to_json(&self) -> Vec<u8> {
        let outcome = if self.escapes.is_empty() {
            "blocked"
        } else {
            "ESCAPED"
        };
        let mut detail: Vec<String> = self
            .escapes
            .iter()
            .map(|e| format!("ESCAPED: {e}"))
            .collect();
        detail.extend(
            self.steps
                .iter()
                .map(|s| format!("{}: {}", s.call, s.result)),
        );
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| json!({"call": s.call, "result": s.result, "judged": s.judged}))
            .collect();
        json!({
            "attack": self.attack,
            "outcome": outcome,
            "detail": detail.join("; "),
            "steps": steps,
        })
        .to_string()
        .into_bytes()
    }
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn env_pid(name: &str) -> i64 {
    env_var(name).parse().unwrap_or(0)
}

/// Pids to guess: 2..=4096 (pid 1 is this function, the init of its pid namespace).
fn guessed_pids() -> impl Iterator<Item = i64> {
    2..=4096
}

fn status_field(pid: &str, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim_start_matches(':').trim().to_owned())
        })
        .unwrap_or_default()
}

// ----- main -----------------------------------------------------------------------------------

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--int80-getpid") {
        // Run on the host by the test, outside any sandbox: does this kernel have the 32-bit
        // entry point at all? (Without it `int 0x80` is a general protection fault, SIGSEGV.)
        println!("{}", int80_getpid());
        return;
    }
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    // What the process inherited is looked at before the runtime adopts (and closes) the
    // channel fd: that is what a leaked fd would be found in.
    let early = match handler.as_str() {
        "fd-leak-walk" => Some(fd_leak_walk()),
        "fd-openat-dotdot" => Some(fd_openat_dotdot()),
        "fd-probe-range" => Some(fd_probe_range()),
        _ => None,
    };
    if let Some(mode) = handler.strip_prefix("ring-") {
        ring::attack(mode);
    }
    hearth_runtime::serve(move |event| {
        if let Some(report) = &early {
            return Ok(report.clone());
        }
        Ok(match handler.as_str() {
            "echo" => event.to_vec(),
            "sibling" => sibling(),
            name => attack(name).map_or_else(
                || {
                    let mut r = Report::new(name);
                    r.escaped(format!("no attack named {name}"));
                    r.to_json()
                },
                |r| r.to_json(),
            ),
        })
    })
}

fn attack(name: &str) -> Option<Report> {
    let mut r = Report::new(name);
    match name {
        "exe-self-write" => exe_self_write(&mut r),
        "exe-pid1-write" => exe_pid1_write(&mut r),
        "exe-opath-reopen" => exe_opath_reopen(&mut r),
        "exe-host-write" => exe_host_write(&mut r),
        "fd-cwd-root" => fd_cwd_root(&mut r),
        "tmp-symlinks" => tmp_symlinks(&mut r),
        "tmp-replace-mountpoint" => tmp_replace_mountpoint(&mut r),
        "ptrace-pid1" => ptrace_pid1(&mut r),
        "ptrace-guessed-pids" => ptrace_guessed(&mut r),
        "ptrace-host" => ptrace_host(&mut r),
        "process-vm-pid1" => process_vm_pid1(&mut r),
        "process-vm-guessed-pids" => process_vm_guessed(&mut r),
        "proc-pid-files" => proc_pid_files(&mut r),
        "mount" => mount(&mut r),
        "umount2" => umount2(&mut r),
        "pivot-root" => pivot_root(&mut r),
        "chroot" => chroot(&mut r),
        "fsopen" => fsopen(&mut r),
        "open-tree" => open_tree(&mut r),
        "move-mount" => move_mount(&mut r),
        "unshare" => unshare(&mut r),
        "setns" => setns(&mut r),
        "clone-ns-flags" => clone_ns(&mut r),
        "clone3-ns-flags" => clone3_ns(&mut r),
        "keyctl" => keyctl(&mut r),
        "add-key" => add_key(&mut r),
        "request-key" => request_key(&mut r),
        "bpf" => bpf(&mut r),
        "perf-event-open" => perf_event_open(&mut r),
        "userfaultfd" => userfaultfd(&mut r),
        "io-uring" => io_uring(&mut r),
        "tiocsti" => tiocsti(&mut r),
        "tiocsti-high-bits" => tiocsti_high_bits(&mut r),
        "x32-abi" => x32_abi(&mut r),
        "int80" => int80(&mut r),
        "open-by-handle-at" => open_by_handle_at(&mut r),
        "privileged-syscalls" => privileged_syscalls(&mut r),
        "write-proc-sys" => write_proc_sys(&mut r),
        "write-sysrq-trigger" => write_sysrq(&mut r),
        "write-proc-self" => write_proc_self(&mut r),
        "write-sys-fs-cgroup" => write_cgroup(&mut r),
        "write-etc" => write_etc(&mut r),
        "write-var-task" => write_var_task(&mut r),
        "create-in-root" => create_in_root(&mut r),
        "create-in-var-task" => create_in_var_task(&mut r),
        "setuid-binary" => setuid_binary(&mut r),
        "capset" => capset(&mut r),
        "connect-host-tcp" => connect_host_tcp(&mut r),
        "connect-metadata-service" => connect_metadata(&mut r),
        "abstract-unix-host" => abstract_unix_host(&mut r),
        "abstract-unix-sibling" => abstract_unix_sibling(&mut r),
        "netlink-socket" => netlink(&mut r),
        "packet-socket" => packet(&mut r),
        "exotic-socket-families" => exotic_sockets(&mut r),
        "loopback-up" => loopback_up(&mut r),
        "kill-all" => kill_all(&mut r),
        "kill-host-pid" => kill_host(&mut r),
        "kill-guessed-pids" => kill_guessed(&mut r),
        "kill-process-group" => kill_process_group(&mut r),
        _ => return None,
    }
    Some(r)
}

// ----- CVE-2019-5736: overwriting the running binary ------------------------------------------

fn exe_self_write(r: &mut Report) {
    r.note(
        "readlink(/proc/self/exe)",
        std::fs::read_link("/proc/self/exe")
            .map_or_else(|e| e.to_string(), |p| p.display().to_string()),
    );
    r.deny_open("/proc/self/exe", libc::O_WRONLY, "O_WRONLY");
    r.deny_open("/proc/self/exe", libc::O_RDWR, "O_RDWR");
    r.deny_open(
        "/proc/self/exe",
        libc::O_WRONLY | libc::O_TRUNC,
        "O_WRONLY|O_TRUNC",
    );
    r.deny_open(
        "/proc/self/exe",
        libc::O_WRONLY | libc::O_APPEND,
        "O_WRONLY|O_APPEND",
    );
    let c = cstr("/proc/self/exe");
    r.deny(
        "truncate(/proc/self/exe, 0)",
        sys(libc::SYS_truncate, [ptr(c.as_ptr()), 0, 0, 0, 0, 0]),
    );
}

fn exe_pid1_write(r: &mut Report) {
    r.note("getpid()", getpid().to_string());
    r.deny_open("/proc/1/exe", libc::O_WRONLY, "O_WRONLY");
    r.deny_open(
        "/proc/1/exe",
        libc::O_WRONLY | libc::O_TRUNC,
        "O_WRONLY|O_TRUNC",
    );
    // A process of the environment that is not the function: a forked child.
    if let Ok(child) = pausing_child() {
        let path = format!("/proc/{child}/exe");
        r.deny_open(&path, libc::O_WRONLY, "O_WRONLY (forked child)");
        let _ = kill(child, libc::SIGKILL);
        let _ = wait(child);
    }
}

fn exe_opath_reopen(r: &mut Report) {
    // runc's fix for CVE-2019-5736 is about exactly this: an O_PATH fd to the binary, reopened
    // for writing through /proc/self/fd.
    let fd = open("/proc/self/exe", libc::O_PATH);
    r.note("open(/proc/self/exe, O_PATH)", result_name(fd));
    if let Ok(fd) = fd {
        r.deny_open(
            &format!("/proc/self/fd/{fd}"),
            libc::O_WRONLY,
            "O_WRONLY via the O_PATH fd",
        );
        r.deny_open(
            &format!("/proc/self/fd/{fd}"),
            libc::O_RDWR,
            "O_RDWR via the O_PATH fd",
        );
        close(fd);
    }
    // The same through the mapping of the binary.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if let Some(range) = maps
        .lines()
        .find(|l| l.ends_with("/var/task/bootstrap"))
        .and_then(|l| l.split(' ').next())
    {
        r.deny_open(
            &format!("/proc/self/map_files/{range}"),
            libc::O_WRONLY,
            "O_WRONLY",
        );
    }
}

fn exe_host_write(r: &mut Report) {
    for (who, pid) in [
        ("scheduler", env_pid("HEARTH_ATTACK_HOST_PID")),
        ("sibling environment", env_pid("HEARTH_ATTACK_SIBLING_PID")),
    ] {
        r.deny_open(
            &format!("/proc/{pid}/exe"),
            libc::O_WRONLY,
            &format!("O_WRONLY, the {who}"),
        );
        r.deny_open(
            &format!("/proc/{pid}/exe"),
            libc::O_RDONLY,
            &format!("O_RDONLY, the {who}"),
        );
    }
    // The parent of the environment's first process is outside its pid namespace.
    r.note("PPid in /proc/self/status", status_field("self", "PPid"));
    if status_field("self", "PPid") != "0" {
        r.escaped("the function can see its parent process");
    }
}

// ----- CVE-2024-21626: leaked fds ---------------------------------------------------------------

/// The fds this process has open, with their targets (the directory listing's own fd excluded).
fn open_fds() -> Vec<(i64, String)> {
    let names: Vec<i64> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The listing's fd was closed when `read_dir` was dropped: only those still open count.
    names
        .into_iter()
        .filter(|&fd| sys(libc::SYS_fcntl, [int(fd), int(libc::F_GETFD), 0, 0, 0, 0]).is_ok())
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map_or_else(|e| e.to_string(), |p| p.display().to_string());
            (fd, target)
        })
        .collect()
}

fn fd_leak_walk() -> Vec<u8> {
    let mut r = Report::new("fd-leak-walk");
    let fds = open_fds();
    for (fd, target) in &fds {
        r.note(format!("fd {fd}"), target.clone());
        let expected = match fd {
            0..=2 => true,
            3 => target.starts_with("/memfd:hearth-channel"),
            _ => false,
        };
        if !expected {
            r.escaped(format!("fd {fd} ({target}) was inherited from the host"));
        }
    }
    if !fds.iter().any(|(fd, _)| *fd == 3) {
        r.note("fd 3", "missing (no channel?)");
    }
    r.to_json()
}

fn fd_openat_dotdot() -> Vec<u8> {
    let mut r = Report::new("fd-openat-dotdot");
    for (fd, target) in open_fds() {
        for rel in ["..", "../..", "../../..", "."] {
            let c = cstr(rel);
            let got = sys(
                libc::SYS_openat,
                [
                    int(fd),
                    ptr(c.as_ptr()),
                    int(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC),
                    0,
                    0,
                    0,
                ],
            );
            if let Ok(dir) = got {
                let seen = std::fs::read_link(format!("/proc/self/fd/{dir}"))
                    .map_or_else(|e| e.to_string(), |p| p.display().to_string());
                r.note(format!("contents of openat({fd}, {rel})"), seen);
                close(dir);
            }
            r.deny(
                format!("openat(fd {fd} = {target}, \"{rel}\", O_DIRECTORY)"),
                got,
            );
        }
    }
    r.to_json()
}

fn fd_probe_range() -> Vec<u8> {
    let mut r = Report::new("fd-probe-range");
    let results: Vec<(String, Ret)> = (4..1024)
        .map(|fd| {
            (
                format!("fd {fd}"),
                sys(libc::SYS_fcntl, [int(fd), int(libc::F_GETFD), 0, 0, 0, 0]),
            )
        })
        .collect();
    r.deny_many("fcntl(fd, F_GETFD) for fds 4..1023", results);
    r.to_json()
}

fn fd_cwd_root(r: &mut Report) {
    let show =
        |p: &str| std::fs::read_link(p).map_or_else(|e| e.to_string(), |p| p.display().to_string());
    let cwd = std::env::current_dir().map_or_else(|e| e.to_string(), |p| p.display().to_string());
    r.note("getcwd()", cwd.clone());
    r.note("readlink(/proc/self/cwd)", show("/proc/self/cwd"));
    r.note("readlink(/proc/self/root)", show("/proc/self/root"));
    if cwd != "/" || show("/proc/self/cwd") != "/" || show("/proc/self/root") != "/" {
        r.escaped(format!(
            "the working directory or root is not the environment's root: {cwd}"
        ));
    }
    let id = |p: &str| {
        std::fs::metadata(p)
            .map(|m| {
                (
                    std::os::unix::fs::MetadataExt::dev(&m),
                    std::os::unix::fs::MetadataExt::ino(&m),
                )
            })
            .ok()
    };
    let root = id("/");
    for up in [
        "/..",
        "/../../..",
        "../../../..",
        "/proc/self/root/..",
        "/proc/1/root/../..",
        "/tmp/../..",
    ] {
        let same = id(up) == root;
        r.note(format!("stat({up}) is /"), same.to_string());
        if !same {
            r.escaped(format!("{up} is not the environment's root"));
        }
    }
    let mut names: Vec<String> = std::fs::read_dir("/")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    r.note("ls /", names.join(" "));
    let skeleton = [
        "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "sbin", "tmp",
        "usr", "var",
    ];
    for name in &names {
        if !skeleton.contains(&name.as_str()) {
            r.escaped(format!("/{name} is in the root: the host's root?"));
        }
    }
}

// ----- symlinks planted in /tmp ---------------------------------------------------------------

fn tmp_symlinks(r: &mut Report) {
    let canary = env_var("HEARTH_ATTACK_CANARY");
    let plant = [
        ("shadow", "/etc/shadow".to_owned()),
        ("passwd", "/etc/passwd".to_owned()),
        ("canary", canary.clone()),
        (
            "canary-dir",
            std::path::Path::new(&canary)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        ("root", "/".to_owned()),
        ("up", "..".to_owned()),
        ("way-up", "../../../../../..".to_owned()),
        ("state", "/run/hearth".to_owned()),
        ("proc1-root", "/proc/1/root".to_owned()),
        (
            "host-pid-root",
            format!("/proc/{}/root", env_pid("HEARTH_ATTACK_HOST_PID")),
        ),
        ("loop", "/tmp/hearth-escape-planted-loop".to_owned()),
        ("tmp", "/tmp".to_owned()),
    ];
    for (name, target) in &plant {
        let link = cstr(&format!("/tmp/hearth-escape-planted-{name}"));
        let to = cstr(target);
        let made = sys(
            libc::SYS_symlink,
            [ptr(to.as_ptr()), ptr(link.as_ptr()), 0, 0, 0, 0],
        );
        r.note(
            format!("symlink(/tmp/hearth-escape-planted-{name} -> {target})"),
            result_name(made),
        );
    }
    // A directory of links, like a function's scratch tree, for a recursive cleanup to follow.
    let _ = std::fs::create_dir_all("/tmp/hearth-escape-planted-tree/a/b");
    for (name, target) in [
        ("etc", "/etc"),
        ("canary", canary.as_str()),
        ("up", "../../../.."),
    ] {
        let made = std::os::unix::fs::symlink(
            target,
            format!("/tmp/hearth-escape-planted-tree/a/b/{name}"),
        );
        r.note(
            format!("symlink(tree/a/b/{name} -> {target})"),
            made.map_or_else(|e| e.to_string(), |()| "ok".into()),
        );
    }
    // Hard links to files outside /tmp (other mounts): not possible across mounts.
    for (name, target) in [
        ("bootstrap", "/var/task/bootstrap"),
        ("etc-passwd", "/etc/passwd"),
    ] {
        let from = cstr(target);
        let to = cstr(&format!("/tmp/hearth-escape-planted-hard-{name}"));
        r.deny(
            format!("link({target} -> /tmp/hearth-escape-planted-hard-{name})"),
            sys(
                libc::SYS_link,
                [ptr(from.as_ptr()), ptr(to.as_ptr()), 0, 0, 0, 0],
            ),
        );
    }
    // A FIFO, for a host process that opens it to hang on.
    let fifo = cstr("/tmp/hearth-escape-planted-fifo");
    r.deny(
        "mknod(/tmp/hearth-escape-planted-fifo, S_IFIFO)",
        sys(
            libc::SYS_mknod,
            [
                ptr(fifo.as_ptr()),
                u64::from(libc::S_IFIFO | 0o666),
                0,
                0,
                0,
                0,
            ],
        ),
    );
    // Through the links, from inside: they resolve in the environment's own root.
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW;
    r.deny_open(
        "/tmp/hearth-escape-planted-passwd",
        libc::O_WRONLY | libc::O_APPEND,
        "O_WRONLY|O_APPEND",
    );
    r.deny_open(
        "/tmp/hearth-escape-planted-shadow",
        libc::O_WRONLY | libc::O_CREAT,
        "O_WRONLY|O_CREAT",
    );
    r.deny_open(
        "/tmp/hearth-escape-planted-canary",
        libc::O_WRONLY | libc::O_CREAT,
        "O_WRONLY|O_CREAT",
    );
    r.deny_open(
        "/tmp/hearth-escape-planted-root/etc/passwd",
        libc::O_WRONLY,
        "O_WRONLY",
    );
    r.deny_open(
        "/tmp/hearth-escape-planted-way-up/hearth-escape-file",
        flags,
        "O_WRONLY|O_CREAT",
    );
    r.deny_open(
        "/tmp/hearth-escape-planted-state/hearth-escape-file",
        flags,
        "O_WRONLY|O_CREAT",
    );
    r.deny_open(
        "/tmp/hearth-escape-planted-host-pid-root/etc/passwd",
        libc::O_WRONLY,
        "O_WRONLY",
    );
    r.note(
        "readlink(/tmp/hearth-escape-planted-proc1-root/..)",
        std::fs::canonicalize("/tmp/hearth-escape-planted-proc1-root/..")
            .map_or_else(|e| e.to_string(), |p| p.display().to_string()),
    );
}

fn tmp_replace_mountpoint(r: &mut Report) {
    let tmp = cstr("/tmp");
    let moved = cstr("/tmp-moved");
    let dotdot = cstr("..");
    let link = cstr("/tmp2");
    r.deny(
        "rename(/tmp, /tmp-moved)",
        sys(
            libc::SYS_rename,
            [ptr(tmp.as_ptr()), ptr(moved.as_ptr()), 0, 0, 0, 0],
        ),
    );
    r.deny(
        "rmdir(/tmp)",
        sys(libc::SYS_rmdir, [ptr(tmp.as_ptr()), 0, 0, 0, 0, 0]),
    );
    r.deny(
        "symlink(/tmp2 -> ..)",
        sys(
            libc::SYS_symlink,
            [ptr(dotdot.as_ptr()), ptr(link.as_ptr()), 0, 0, 0, 0],
        ),
    );
    r.deny(
        "umount2(/tmp, MNT_DETACH)",
        sys(
            libc::SYS_umount2,
            [ptr(tmp.as_ptr()), int(libc::MNT_DETACH), 0, 0, 0, 0],
        ),
    );
    let _ = std::fs::write("/tmp/hearth-escape-file", b"x");
    let from = cstr("/tmp/hearth-escape-file");
    for to in [
        "/var/task/hearth-escape-file",
        "/hearth-escape-file",
        "/etc/hearth-escape-file",
    ] {
        let c = cstr(to);
        r.deny(
            format!("rename(/tmp/hearth-escape-file, {to})"),
            sys(
                libc::SYS_rename,
                [ptr(from.as_ptr()), ptr(c.as_ptr()), 0, 0, 0, 0],
            ),
        );
    }
    // /tmp as a symlink to the root, over a directory the function owns: only its own tmpfs.
    let _ = std::fs::create_dir("/tmp/sub");
    let sub = cstr("/tmp/sub");
    let _ = sys(libc::SYS_rmdir, [ptr(sub.as_ptr()), 0, 0, 0, 0, 0]);
    let made = std::os::unix::fs::symlink("..", "/tmp/sub");
    r.note(
        "symlink(/tmp/sub -> ..)",
        made.map_or_else(|e| e.to_string(), |()| "ok".into()),
    );
    let same = std::fs::metadata("/tmp/sub")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok()
        == std::fs::metadata("/")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok();
    r.note(
        "/tmp/sub resolves to the environment's own /",
        same.to_string(),
    );
}

// ----- ptrace and process_vm ------------------------------------------------------------------

fn ptrace(request: u32, pid: i64) -> Ret {
    sys(libc::SYS_ptrace, [u64::from(request), int(pid), 0, 0, 0, 0])
}

fn ptrace_pid1(r: &mut Report) {
    r.deny("ptrace(PTRACE_TRACEME)", ptrace(libc::PTRACE_TRACEME, 0));
    // From a child of the environment's init: attach to its parent, pid 1.
    if let Ok(child) = fork(|| match ptrace(libc::PTRACE_ATTACH, 1) {
        Ok(_) => 0,
        Err(e) => e,
    }) {
        let status = wait(child).unwrap_or(-1);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        let got = if code == 0 { Ok(0) } else { Err(code) };
        r.deny("ptrace(PTRACE_ATTACH, 1) from a child", got);
    }
    if let Ok(child) = pausing_child() {
        r.deny(
            format!("ptrace(PTRACE_ATTACH, own child {child})"),
            ptrace(libc::PTRACE_ATTACH, child),
        );
        r.deny(
            format!("ptrace(PTRACE_SEIZE, own child {child})"),
            ptrace(libc::PTRACE_SEIZE, child),
        );
        let _ = kill(child, libc::SIGKILL);
        let _ = wait(child);
    }
}

fn ptrace_guessed(r: &mut Report) {
    let results: Vec<(String, Ret)> = guessed_pids()
        .map(|pid| (format!("pid {pid}"), ptrace(libc::PTRACE_ATTACH, pid)))
        .collect();
    r.deny_many("ptrace(PTRACE_ATTACH, pid) for pids 2..=4096", results);
    let results: Vec<(String, Ret)> = guessed_pids()
        .map(|pid| (format!("pid {pid}"), ptrace(libc::PTRACE_SEIZE, pid)))
        .collect();
    r.deny_many("ptrace(PTRACE_SEIZE, pid) for pids 2..=4096", results);
}

fn ptrace_host(r: &mut Report) {
    for (who, pid) in [
        ("scheduler", env_pid("HEARTH_ATTACK_HOST_PID")),
        ("victim", env_pid("HEARTH_ATTACK_VICTIM_PID")),
        ("sibling environment", env_pid("HEARTH_ATTACK_SIBLING_PID")),
    ] {
        r.deny(
            format!("ptrace(PTRACE_ATTACH, {who} {pid})"),
            ptrace(libc::PTRACE_ATTACH, pid),
        );
        r.deny(
            format!("ptrace(PTRACE_SEIZE, {who} {pid})"),
            ptrace(libc::PTRACE_SEIZE, pid),
        );
        let mut buf = [0u8; 64];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: 0x40_0000 as *mut libc::c_void,
            iov_len: buf.len(),
        };
        r.deny(
            format!("process_vm_readv({who} {pid})"),
            sys(
                libc::SYS_process_vm_readv,
                [
                    int(pid),
                    ptr(&raw const local),
                    1,
                    ptr(&raw const remote),
                    1,
                    0,
                ],
            ),
        );
        r.deny(
            format!("process_vm_writev({who} {pid})"),
            sys(
                libc::SYS_process_vm_writev,
                [
                    int(pid),
                    ptr(&raw const local),
                    1,
                    ptr(&raw const remote),
                    1,
                    0,
                ],
            ),
        );
    }
}

fn vm_read(pid: i64, write: bool) -> Ret {
    let mut buf = [0u8; 64];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // An address that is mapped in every process of the environment: this one's own stack.
    let remote = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let nr = if write {
        libc::SYS_process_vm_writev
    } else {
        libc::SYS_process_vm_readv
    };
    sys(
        nr,
        [
            int(pid),
            ptr(&raw const local),
            1,
            ptr(&raw const remote),
            1,
            0,
        ],
    )
}

fn process_vm_pid1(r: &mut Report) {
    r.deny("process_vm_readv(1) (itself)", vm_read(1, false));
    if let Ok(child) = fork(|| match vm_read(1, false) {
        Ok(_) => 0,
        Err(e) => e,
    }) {
        let status = wait(child).unwrap_or(-1);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        r.deny(
            "process_vm_readv(1) from a child",
            if code == 0 { Ok(0) } else { Err(code) },
        );
    }
    if let Ok(child) = pausing_child() {
        r.deny(
            format!("process_vm_readv(own child {child})"),
            vm_read(child, false),
        );
        r.deny(
            format!("process_vm_writev(own child {child})"),
            vm_read(child, true),
        );
        let _ = kill(child, libc::SIGKILL);
        let _ = wait(child);
    }
}

fn process_vm_guessed(r: &mut Report) {
    let results: Vec<(String, Ret)> = guessed_pids()
        .map(|pid| (format!("pid {pid}"), vm_read(pid, false)))
        .collect();
    r.deny_many("process_vm_readv(pid) for pids 2..=4096", results);
    let results: Vec<(String, Ret)> = guessed_pids()
        .map(|pid| (format!("pid {pid}"), vm_read(pid, true)))
        .collect();
    r.deny_many("process_vm_writev(pid) for pids 2..=4096", results);
}

fn proc_pid_files(r: &mut Report) {
    let mut named = vec![
        ("scheduler", env_pid("HEARTH_ATTACK_HOST_PID")),
        ("victim", env_pid("HEARTH_ATTACK_VICTIM_PID")),
        ("sibling environment", env_pid("HEARTH_ATTACK_SIBLING_PID")),
    ];
    named.retain(|(_, p)| *p > 1);
    for (who, pid) in &named {
        for file in ["mem", "environ", "maps", "cmdline", "root/etc/passwd"] {
            r.deny_open(
                &format!("/proc/{pid}/{file}"),
                libc::O_RDONLY,
                &format!("O_RDONLY, the {who}"),
            );
        }
    }
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    r.note("pids in /proc", pids.join(" "));
    let mut results = Vec::new();
    for pid in guessed_pids() {
        for file in ["mem", "environ", "maps"] {
            let path = format!("/proc/{pid}/{file}");
            let got = open(&path, libc::O_RDONLY);
            if let Ok(fd) = got {
                close(fd);
            }
            results.push((path, got));
        }
    }
    r.deny_many(
        "open(/proc/<pid>/{mem,environ,maps}) for pids 2..=4096",
        results,
    );
}

// ----- mounts and namespaces -----------------------------------------------------------------

fn mount_call(source: &str, target: &str, fstype: &str, flags: u64) -> Ret {
    let (s, t, f) = (cstr(source), cstr(target), cstr(fstype));
    sys(
        libc::SYS_mount,
        [
            ptr(s.as_ptr()),
            ptr(t.as_ptr()),
            if fstype.is_empty() {
                0
            } else {
                ptr(f.as_ptr())
            },
            flags,
            0,
            0,
        ],
    )
}

fn mount(r: &mut Report) {
    r.deny(
        "mount(tmpfs on /tmp)",
        mount_call("tmpfs", "/tmp", "tmpfs", 0),
    );
    r.deny("mount(proc on /tmp)", mount_call("proc", "/tmp", "proc", 0));
    r.deny(
        "mount(/ on /tmp, MS_BIND|MS_REC)",
        mount_call("/", "/tmp", "", libc::MS_BIND | libc::MS_REC),
    );
    r.deny(
        "mount(/, MS_REMOUNT) read-write",
        mount_call("none", "/", "", libc::MS_REMOUNT | libc::MS_BIND),
    );
    r.deny(
        "mount(/var/task, MS_REMOUNT) read-write",
        mount_call("none", "/var/task", "", libc::MS_REMOUNT | libc::MS_BIND),
    );
    r.deny(
        "mount(cgroup2 on /tmp)",
        mount_call("cgroup2", "/tmp", "cgroup2", 0),
    );
    r.deny(
        "mount(/, MS_SHARED)",
        mount_call("none", "/", "", libc::MS_SHARED | libc::MS_REC),
    );
    r.deny(
        "mount(sysfs on /tmp)",
        mount_call("sysfs", "/tmp", "sysfs", 0),
    );
}

fn umount2(r: &mut Report) {
    for (target, flags) in [
        ("/proc", 0),
        ("/var/task", libc::MNT_DETACH),
        ("/", libc::MNT_DETACH),
        ("/usr", libc::MNT_FORCE),
        ("/tmp", 0),
    ] {
        let t = cstr(target);
        r.deny(
            format!("umount2({target}, {flags:#x})"),
            sys(libc::SYS_umount2, [ptr(t.as_ptr()), int(flags), 0, 0, 0, 0]),
        );
    }
}

fn pivot_root(r: &mut Report) {
    let _ = std::fs::create_dir("/tmp/old");
    for (new, old) in [("/tmp", "/tmp/old"), (".", "."), ("/", "/")] {
        let (n, o) = (cstr(new), cstr(old));
        r.deny(
            format!("pivot_root({new}, {old})"),
            sys(
                libc::SYS_pivot_root,
                [ptr(n.as_ptr()), ptr(o.as_ptr()), 0, 0, 0, 0],
            ),
        );
    }
}

fn chroot(r: &mut Report) {
    // The classic escape: chroot into a subdirectory while keeping the cwd outside, then walk up.
    let _ = std::fs::create_dir("/tmp/jail");
    for dir in ["/tmp/jail", "/tmp", "/"] {
        let c = cstr(dir);
        r.deny(
            format!("chroot({dir})"),
            sys(libc::SYS_chroot, [ptr(c.as_ptr()), 0, 0, 0, 0, 0]),
        );
    }
}

fn fsopen(r: &mut Report) {
    for fs in ["tmpfs", "proc", "cgroup2", "sysfs", "ext4"] {
        let c = cstr(fs);
        r.deny_fd(
            format!("fsopen({fs})"),
            sys(libc::SYS_fsopen, [ptr(c.as_ptr()), 0, 0, 0, 0, 0]),
        );
    }
    r.deny(
        "fsconfig(-1, FSCONFIG_CMD_CREATE)",
        sys(libc::SYS_fsconfig, [int(-1), 6, 0, 0, 0, 0]),
    );
    r.deny(
        "fsmount(-1)",
        sys(libc::SYS_fsmount, [int(-1), 0, 0, 0, 0, 0]),
    );
    let root = cstr("/");
    r.deny(
        "fspick(/)",
        sys(
            libc::SYS_fspick,
            [int(libc::AT_FDCWD), ptr(root.as_ptr()), 0, 0, 0, 0],
        ),
    );
}

fn open_tree(r: &mut Report) {
    const OPEN_TREE_CLONE: u64 = 1;
    for path in ["/", "/proc", "/var/task", "/usr"] {
        let c = cstr(path);
        r.deny_fd(
            format!("open_tree({path}, OPEN_TREE_CLONE|AT_RECURSIVE)"),
            sys(
                libc::SYS_open_tree,
                [
                    int(libc::AT_FDCWD),
                    ptr(c.as_ptr()),
                    OPEN_TREE_CLONE | int(libc::AT_RECURSIVE),
                    0,
                    0,
                    0,
                ],
            ),
        );
    }
}

fn move_mount(r: &mut Report) {
    const MOVE_MOUNT_F_EMPTY_PATH: u64 = 4;
    let (from, to, empty) = (cstr("/tmp"), cstr("/var/task"), cstr(""));
    r.deny(
        "move_mount(/tmp -> /var/task)",
        sys(
            libc::SYS_move_mount,
            [
                int(libc::AT_FDCWD),
                ptr(from.as_ptr()),
                int(libc::AT_FDCWD),
                ptr(to.as_ptr()),
                0,
                0,
            ],
        ),
    );
    if let Ok(fd) = open("/", libc::O_PATH) {
        r.deny(
            "move_mount(fd of /, \"\", -> /tmp, MOVE_MOUNT_F_EMPTY_PATH)",
            sys(
                libc::SYS_move_mount,
                [
                    int(fd),
                    ptr(empty.as_ptr()),
                    int(libc::AT_FDCWD),
                    ptr(from.as_ptr()),
                    MOVE_MOUNT_F_EMPTY_PATH,
                    0,
                ],
            ),
        );
        close(fd);
    }
    // mount_setattr: clear MOUNT_ATTR_RDONLY on /.
    let attr: [u64; 4] = [0, 1, 0, 0];
    let root = cstr("/");
    r.deny(
        "mount_setattr(/, clear MOUNT_ATTR_RDONLY)",
        sys(
            libc::SYS_mount_setattr,
            [
                int(libc::AT_FDCWD),
                ptr(root.as_ptr()),
                0,
                ptr(attr.as_ptr()),
                32,
                0,
            ],
        ),
    );
}

const NAMESPACE_FLAGS: [(&str, i32); 7] = [
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
];

fn unshare(r: &mut Report) {
    const CLONE_NEWTIME: i32 = 0x80;
    for (name, flag) in NAMESPACE_FLAGS.iter().copied().chain([
        ("CLONE_NEWTIME", CLONE_NEWTIME),
        ("CLONE_FS|CLONE_FILES", libc::CLONE_FS | libc::CLONE_FILES),
    ]) {
        r.deny(
            format!("unshare({name})"),
            sys(libc::SYS_unshare, [int(flag), 0, 0, 0, 0, 0]),
        );
    }
}

fn setns(r: &mut Report) {
    for ns in ["mnt", "net", "pid", "user", "uts", "ipc", "cgroup", "time"] {
        let path = format!("/proc/self/ns/{ns}");
        match open(&path, libc::O_RDONLY) {
            Ok(fd) => {
                r.deny(
                    format!("setns({path})"),
                    sys(libc::SYS_setns, [int(fd), 0, 0, 0, 0, 0]),
                );
                close(fd);
            }
            Err(e) => r.note(format!("open({path})"), errno_name(e)),
        }
    }
    for (who, pid) in [
        ("scheduler", env_pid("HEARTH_ATTACK_HOST_PID")),
        ("sibling environment", env_pid("HEARTH_ATTACK_SIBLING_PID")),
    ] {
        for ns in ["mnt", "net", "pid"] {
            r.deny_open(
                &format!("/proc/{pid}/ns/{ns}"),
                libc::O_RDONLY,
                &format!("O_RDONLY, the {who}"),
            );
        }
    }
    // A pidfd of the scheduler would do too; pidfd_open is not for functions.
    r.deny(
        "pidfd_open(scheduler)",
        sys(
            libc::SYS_pidfd_open,
            [int(env_pid("HEARTH_ATTACK_HOST_PID")), 0, 0, 0, 0, 0],
        ),
    );
}

fn clone_ns(r: &mut Report) {
    for (name, flag) in NAMESPACE_FLAGS {
        let got = sys(libc::SYS_clone, [int(flag | libc::SIGCHLD), 0, 0, 0, 0, 0]);
        if got == Ok(0) {
            // The child of a clone that should not have happened.
            // SAFETY: leaving the forked child at once.
            unsafe { libc::_exit(0) };
        }
        if let Ok(pid) = got {
            let _ = wait(pid);
        }
        r.deny(format!("clone({name}|SIGCHLD)"), got);
    }
}

fn clone3_ns(r: &mut Report) {
    for (name, flag) in NAMESPACE_FLAGS {
        // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
        // stack_size, tls, set_tid, set_tid_size, cgroup.
        let mut args = [0u64; 11];
        args[0] = int(flag);
        args[4] = int(libc::SIGCHLD);
        let got = sys(libc::SYS_clone3, [ptr(args.as_ptr()), 88, 0, 0, 0, 0]);
        if got == Ok(0) {
            // SAFETY: leaving the cloned child at once.
            unsafe { libc::_exit(0) };
        }
        if let Ok(pid) = got {
            let _ = wait(pid);
        }
        r.deny(format!("clone3({name})"), got);
    }
}

// ----- kernel attack surface -------------------------------------------------------------------

fn keyctl(r: &mut Report) {
    const KEYCTL_GET_KEYRING_ID: u64 = 0;
    const KEYCTL_JOIN_SESSION_KEYRING: u64 = 1;
    const KEYCTL_READ: u64 = 11;
    const KEY_SPEC_SESSION_KEYRING: i64 = -3;
    const KEY_SPEC_USER_KEYRING: i64 = -4;
    r.deny(
        "keyctl(KEYCTL_GET_KEYRING_ID, session)",
        sys(
            libc::SYS_keyctl,
            [
                KEYCTL_GET_KEYRING_ID,
                int(KEY_SPEC_SESSION_KEYRING),
                1,
                0,
                0,
                0,
            ],
        ),
    );
    r.deny(
        "keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)",
        sys(
            libc::SYS_keyctl,
            [KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0, 0],
        ),
    );
    let mut buf = [0u8; 256];
    r.deny(
        "keyctl(KEYCTL_READ, user keyring)",
        sys(
            libc::SYS_keyctl,
            [
                KEYCTL_READ,
                int(KEY_SPEC_USER_KEYRING),
                mptr(buf.as_mut_ptr()),
                256,
                0,
                0,
            ],
        ),
    );
}

fn add_key(r: &mut Report) {
    const KEY_SPEC_PROCESS_KEYRING: i64 = -2;
    const KEY_SPEC_USER_KEYRING: i64 = -4;
    let (kind, desc, payload) = (cstr("user"), cstr("hearth-escape"), b"secret");
    for (ring, id) in [
        ("process", KEY_SPEC_PROCESS_KEYRING),
        ("user", KEY_SPEC_USER_KEYRING),
    ] {
        r.deny(
            format!("add_key(user, hearth-escape, {ring} keyring)"),
            sys(
                libc::SYS_add_key,
                [
                    ptr(kind.as_ptr()),
                    ptr(desc.as_ptr()),
                    ptr(payload.as_ptr()),
                    6,
                    int(id),
                    0,
                ],
            ),
        );
    }
}

fn request_key(r: &mut Report) {
    for kind in ["user", "keyring", "logon"] {
        let (k, desc) = (cstr(kind), cstr("hearth-escape"));
        r.deny(
            format!("request_key({kind}, hearth-escape)"),
            sys(
                libc::SYS_request_key,
                [ptr(k.as_ptr()), ptr(desc.as_ptr()), 0, 0, 0, 0],
            ),
        );
    }
}

fn bpf(r: &mut Report) {
    const BPF_MAP_CREATE: u64 = 0;
    const BPF_PROG_LOAD: u64 = 5;
    const BPF_BTF_LOAD: u64 = 18;
    let mut attr = [0u8; 128];
    // map_type = ARRAY (2), key_size 4, value_size 4, max_entries 1.
    for (i, v) in [2u32, 4, 4, 1].iter().enumerate() {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    r.deny(
        "bpf(BPF_MAP_CREATE, array)",
        sys(
            libc::SYS_bpf,
            [BPF_MAP_CREATE, ptr(attr.as_ptr()), 128, 0, 0, 0],
        ),
    );
    // "r0 = 0; exit" as a socket filter.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = cstr("GPL");
    let mut prog = [0u64; 16];
    prog[0] = 1; // BPF_PROG_TYPE_SOCKET_FILTER, insn_cnt = 2 in the high half
    prog[0] |= 2 << 32;
    prog[1] = ptr(insns.as_ptr());
    prog[2] = ptr(license.as_ptr());
    r.deny(
        "bpf(BPF_PROG_LOAD, socket filter)",
        sys(
            libc::SYS_bpf,
            [BPF_PROG_LOAD, ptr(prog.as_ptr()), 128, 0, 0, 0],
        ),
    );
    r.deny(
        "bpf(BPF_BTF_LOAD, empty)",
        sys(
            libc::SYS_bpf,
            [BPF_BTF_LOAD, ptr(attr.as_ptr()), 128, 0, 0, 0],
        ),
    );
}

fn perf_event_open(r: &mut Report) {
    // struct perf_event_attr: type (u32), size (u32), config (u64), ...
    let mut attr = [0u64; 16];
    attr[0] = 1 | (128 << 32); // PERF_TYPE_SOFTWARE, size 128
    attr[1] = 0; // PERF_COUNT_SW_CPU_CLOCK
    r.deny(
        "perf_event_open(software clock, this process)",
        sys(
            libc::SYS_perf_event_open,
            [ptr(attr.as_ptr()), 0, int(-1), int(-1), 0, 0],
        ),
    );
    r.deny(
        "perf_event_open(software clock, cpu 0, every process)",
        sys(
            libc::SYS_perf_event_open,
            [ptr(attr.as_ptr()), int(-1), 0, int(-1), 0, 0],
        ),
    );
    attr[0] = (128 << 32) | 4; // PERF_TYPE_RAW
    r.deny(
        "perf_event_open(raw, this process)",
        sys(
            libc::SYS_perf_event_open,
            [ptr(attr.as_ptr()), 0, int(-1), int(-1), 0, 0],
        ),
    );
}

fn userfaultfd(r: &mut Report) {
    const UFFD_USER_MODE_ONLY: i32 = 1;
    r.deny(
        "userfaultfd(O_CLOEXEC)",
        sys(libc::SYS_userfaultfd, [int(libc::O_CLOEXEC), 0, 0, 0, 0, 0]),
    );
    r.deny(
        "userfaultfd(UFFD_USER_MODE_ONLY)",
        sys(
            libc::SYS_userfaultfd,
            [int(libc::O_CLOEXEC | UFFD_USER_MODE_ONLY), 0, 0, 0, 0, 0],
        ),
    );
    r.deny_open("/dev/userfaultfd", libc::O_RDWR, "O_RDWR");
}

fn io_uring(r: &mut Report) {
    let mut params = [0u8; 120];
    r.deny_fd(
        "io_uring_setup(8)",
        sys(
            libc::SYS_io_uring_setup,
            [8, mptr(params.as_mut_ptr()), 0, 0, 0, 0],
        ),
    );
    r.deny(
        "io_uring_enter(0)",
        sys(libc::SYS_io_uring_enter, [0, 1, 0, 0, 0, 0]),
    );
    r.deny(
        "io_uring_register(0)",
        sys(libc::SYS_io_uring_register, [0, 0, 0, 0, 0, 0]),
    );
}

fn tiocsti(r: &mut Report) {
    let c = b'x';
    for fd in 0..3 {
        r.deny(
            format!("ioctl({fd}, TIOCSTI)"),
            sys(libc::SYS_ioctl, [fd, TIOCSTI, ptr(&raw const c), 0, 0, 0]),
        );
    }
    for tty in [
        "/dev/tty",
        "/dev/console",
        "/dev/ptmx",
        "/dev/pts/0",
        "/dev/tty0",
    ] {
        r.deny_open(tty, libc::O_RDWR | libc::O_NOCTTY, "O_RDWR");
    }
}

fn tiocsti_high_bits(r: &mut Report) {
    // The kernel truncates an ioctl request to 32 bits; a filter that compares all 64 would let
    // these through.
    let c = b'x';
    for fd in 0..3 {
        for (name, request) in [
            ("TIOCSTI | 1<<32", TIOCSTI | 1 << 32),
            (
                "TIOCSTI | 0xffffffff00000000",
                TIOCSTI | 0xffff_ffff_0000_0000,
            ),
            ("TIOCLINUX | 1<<32", 0x541c | 1 << 32),
        ] {
            r.deny(
                format!("ioctl({fd}, {name})"),
                sys(libc::SYS_ioctl, [fd, request, ptr(&raw const c), 0, 0, 0]),
            );
        }
    }
}

fn x32_abi(r: &mut Report) {
    const X32_SYSCALL_BIT: i64 = 0x4000_0000;
    // getpid through the x32 ABI: seccomp must kill the process before it returns.
    let got = sys(X32_SYSCALL_BIT | libc::SYS_getpid, [0; 6]);
    r.escaped(format!(
        "the x32 syscall getpid returned ({}) instead of killing the process",
        result_name(got)
    ));
    let got = sys(X32_SYSCALL_BIT | libc::SYS_mount, [0; 6]);
    r.deny("x32 mount", got);
}

fn int80(r: &mut Report) {
    let ret = int80_getpid();
    r.escaped(format!(
        "int 0x80 getpid returned {ret} instead of killing the process"
    ));
}

/// getpid (20 in the i386 table) through the 32-bit entry point.
fn int80_getpid() -> i64 {
    let mut ret: i64 = 20;
    // SAFETY: `int 0x80` enters the kernel's 32-bit syscall path; getpid takes no arguments
    // and touches no memory. The kernel may clobber r8-r11, declared below.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("rax") ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
    ret
}

fn open_by_handle_at(r: &mut Report) {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut handle = [0u32; 34];
    handle[0] = 128;
    let mut mount_id = 0i32;
    let path = cstr("/var/task/bootstrap");
    r.deny(
        "name_to_handle_at(/var/task/bootstrap)",
        sys(
            libc::SYS_name_to_handle_at,
            [
                int(libc::AT_FDCWD),
                ptr(path.as_ptr()),
                mptr(handle.as_mut_ptr()),
                mptr(&raw mut mount_id),
                0,
                0,
            ],
        ),
    );
    // Shocker: a forged ext4 handle for inode 2 (the root of the filesystem the fd is on).
    let forged: [u32; 4] = [8, 1, 2, 0];
    for dir in ["/", "/var/task", "/usr", "/tmp"] {
        if let Ok(fd) = open(dir, libc::O_RDONLY | libc::O_DIRECTORY) {
            r.deny_fd(
                format!("open_by_handle_at({dir}, forged root inode)"),
                sys(
                    libc::SYS_open_by_handle_at,
                    [int(fd), ptr(forged.as_ptr()), int(libc::O_RDONLY), 0, 0, 0],
                ),
            );
            close(fd);
        }
    }
}

fn privileged_syscalls(r: &mut Report) {
    let tmpfile = cstr("/tmp/hearth-escape-swap");
    let _ = std::fs::write("/tmp/hearth-escape-swap", [0u8; 4096]);
    let name = cstr("hearth-escape");
    let image = [0u8; 64];
    let node = cstr("/tmp/hearth-escape-mem");
    let calls: [(&str, libc::c_long, [u64; 6]); 17] = [
        ("kexec_load", libc::SYS_kexec_load, [0; 6]),
        (
            "kexec_file_load",
            libc::SYS_kexec_file_load,
            [int(-1), int(-1), 0, 0, 0, 0],
        ),
        (
            "init_module",
            libc::SYS_init_module,
            [ptr(image.as_ptr()), 64, ptr(name.as_ptr()), 0, 0, 0],
        ),
        (
            "finit_module",
            libc::SYS_finit_module,
            [int(-1), ptr(name.as_ptr()), 0, 0, 0, 0],
        ),
        (
            "delete_module",
            libc::SYS_delete_module,
            [ptr(name.as_ptr()), 0, 0, 0, 0, 0],
        ),
        // LINUX_REBOOT_CMD_CAD_OFF: harmless if it ever ran.
        (
            "reboot(CAD_OFF)",
            libc::SYS_reboot,
            [0xfee1_dead, 672_274_793, 0, 0, 0, 0],
        ),
        (
            "swapon(/tmp file)",
            libc::SYS_swapon,
            [ptr(tmpfile.as_ptr()), 0, 0, 0, 0, 0],
        ),
        ("acct(NULL)", libc::SYS_acct, [0; 6]),
        (
            "syslog(SYSLOG_ACTION_SIZE_BUFFER)",
            libc::SYS_syslog,
            [10, 0, 0, 0, 0, 0],
        ),
        ("iopl(3)", libc::SYS_iopl, [3, 0, 0, 0, 0, 0]),
        (
            "ioperm(0x80, 1, on)",
            libc::SYS_ioperm,
            [0x80, 1, 1, 0, 0, 0],
        ),
        ("settimeofday(NULL, NULL)", libc::SYS_settimeofday, [0; 6]),
        (
            "clock_settime(CLOCK_REALTIME, NULL)",
            libc::SYS_clock_settime,
            [0; 6],
        ),
        (
            "sethostname(hearth-escape)",
            libc::SYS_sethostname,
            [ptr(name.as_ptr()), 13, 0, 0, 0, 0],
        ),
        (
            "setdomainname(hearth-escape)",
            libc::SYS_setdomainname,
            [ptr(name.as_ptr()), 13, 0, 0, 0, 0],
        ),
        (
            "mknod(/tmp/hearth-escape-mem, char 1:1)",
            libc::SYS_mknod,
            [
                ptr(node.as_ptr()),
                u64::from(libc::S_IFCHR | 0o666),
                0x101,
                0,
                0,
                0,
            ],
        ),
        (
            "personality(READ_IMPLIES_EXEC)",
            libc::SYS_personality,
            [0x040_0000, 0, 0, 0, 0, 0],
        ),
    ];
    for (what, nr, args) in calls {
        r.deny(what, sys(nr, args));
    }
}

// ----- writes to the host's files -------------------------------------------------------------

fn write_proc_sys(r: &mut Report) {
    for path in [
        "/proc/sys/kernel/hostname",
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/kernel/panic",
        "/proc/sys/net/ipv4/ip_forward",
    ] {
        r.deny_open(path, libc::O_WRONLY, "O_WRONLY");
    }
    r.note(
        "hostname",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
}

fn write_sysrq(r: &mut Report) {
    r.deny_open("/proc/sysrq-trigger", libc::O_WRONLY, "O_WRONLY");
    r.deny_open("/proc/sys/kernel/sysrq", libc::O_WRONLY, "O_WRONLY");
    r.deny_open("/proc/kcore", libc::O_RDONLY, "O_RDONLY");
    r.deny_open("/proc/kmsg", libc::O_RDONLY, "O_RDONLY");
}

fn write_proc_self(r: &mut Report) {
    // Lowering its own OOM score would make the host's OOM killer pick someone else.
    for file in [
        "oom_score_adj",
        "oom_adj",
        "uid_map",
        "gid_map",
        "setgroups",
        "attr/current",
        "loginuid",
        "coredump_filter",
        "mem",
    ] {
        r.deny_open(&format!("/proc/self/{file}"), libc::O_WRONLY, "O_WRONLY");
    }
}

fn write_cgroup(r: &mut Report) {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    r.note("/proc/self/cgroup", own.replace('\n', " | "));
    for path in [
        "/sys/fs/cgroup/cgroup.procs",
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/pids/pids.max",
        "/sys/fs/cgroup/memory/cgroup.procs",
        "/sys/fs/cgroup/unified/cgroup.procs",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/fs/cgroup/hearth-escape",
    ] {
        r.deny_open(path, libc::O_WRONLY | libc::O_CREAT, "O_WRONLY|O_CREAT");
    }
    for dir in ["/sys", "/sys/fs/cgroup/hearth-escape"] {
        let c = cstr(dir);
        r.deny(
            format!("mkdir({dir})"),
            sys(libc::SYS_mkdir, [ptr(c.as_ptr()), 0o755, 0, 0, 0, 0]),
        );
    }
    r.deny(
        "mount(cgroup on /tmp, memory)",
        mount_call("cgroup", "/tmp", "cgroup", 0),
    );
}

fn write_etc(r: &mut Report) {
    r.deny_open("/etc/passwd", libc::O_WRONLY, "O_WRONLY");
    r.deny_open(
        "/etc/passwd",
        libc::O_WRONLY | libc::O_APPEND,
        "O_WRONLY|O_APPEND",
    );
    r.deny_open(
        "/etc/passwd",
        libc::O_WRONLY | libc::O_TRUNC,
        "O_WRONLY|O_TRUNC",
    );
    for path in [
        "/etc/hostname",
        "/etc/shadow",
        "/etc/ld.so.preload",
        "/etc/hearth-escape",
    ] {
        r.deny_open(path, libc::O_WRONLY | libc::O_CREAT, "O_WRONLY|O_CREAT");
    }
    let (from, to) = (cstr("/etc/passwd"), cstr("/etc/passwd-"));
    r.deny(
        "rename(/etc/passwd, /etc/passwd-)",
        sys(
            libc::SYS_rename,
            [ptr(from.as_ptr()), ptr(to.as_ptr()), 0, 0, 0, 0],
        ),
    );
    r.deny(
        "unlink(/etc/passwd)",
        sys(libc::SYS_unlink, [ptr(from.as_ptr()), 0, 0, 0, 0, 0]),
    );
}

fn write_var_task(r: &mut Report) {
    let path = "/var/task/bootstrap";
    r.deny_open(path, libc::O_WRONLY, "O_WRONLY");
    r.deny_open(path, libc::O_RDWR, "O_RDWR");
    r.deny_open(path, libc::O_WRONLY | libc::O_TRUNC, "O_WRONLY|O_TRUNC");
    let c = cstr(path);
    let tmp = cstr("/tmp/bootstrap");
    r.deny(
        "truncate(/var/task/bootstrap, 0)",
        sys(libc::SYS_truncate, [ptr(c.as_ptr()), 0, 0, 0, 0, 0]),
    );
    r.deny(
        "unlink(/var/task/bootstrap)",
        sys(libc::SYS_unlink, [ptr(c.as_ptr()), 0, 0, 0, 0, 0]),
    );
    r.deny(
        "rename(/var/task/bootstrap, /tmp/bootstrap)",
        sys(
            libc::SYS_rename,
            [ptr(c.as_ptr()), ptr(tmp.as_ptr()), 0, 0, 0, 0],
        ),
    );
    r.deny(
        "chmod(/var/task/bootstrap, 04777)",
        sys(libc::SYS_chmod, [ptr(c.as_ptr()), 0o4777, 0, 0, 0, 0]),
    );
    r.deny(
        "utimensat(/var/task/bootstrap, now)",
        sys(
            libc::SYS_utimensat,
            [int(libc::AT_FDCWD), ptr(c.as_ptr()), 0, 0, 0, 0],
        ),
    );
    // A file of its own in /tmp renamed over the bootstrap.
    let _ = std::fs::write("/tmp/hearth-escape-bootstrap", b"#!/bin/sh\n");
    let mine = cstr("/tmp/hearth-escape-bootstrap");
    r.deny(
        "rename(/tmp/hearth-escape-bootstrap, /var/task/bootstrap)",
        sys(
            libc::SYS_rename,
            [ptr(mine.as_ptr()), ptr(c.as_ptr()), 0, 0, 0, 0],
        ),
    );
}

fn create_in_root(r: &mut Report) {
    for path in [
        "/hearth-escape",
        "/usr/hearth-escape",
        "/usr/bin/hearth-escape",
        "/dev/hearth-escape",
        "/opt/hearth-escape",
        "/var/hearth-escape",
        "/proc/hearth-escape",
    ] {
        r.deny_open(
            path,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            "O_WRONLY|O_CREAT|O_EXCL",
        );
    }
    for dir in ["/hearth-escape-dir", "/usr/hearth-escape-dir"] {
        let c = cstr(dir);
        r.deny(
            format!("mkdir({dir})"),
            sys(libc::SYS_mkdir, [ptr(c.as_ptr()), 0o755, 0, 0, 0, 0]),
        );
    }
    let (target, link) = (cstr("/tmp"), cstr("/hearth-escape-link"));
    r.deny(
        "symlink(/hearth-escape-link -> /tmp)",
        sys(
            libc::SYS_symlink,
            [ptr(target.as_ptr()), ptr(link.as_ptr()), 0, 0, 0, 0],
        ),
    );
}

fn create_in_var_task(r: &mut Report) {
    r.deny_open(
        "/var/task/hearth-escape",
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        "O_WRONLY|O_CREAT|O_EXCL",
    );
    r.deny_open(
        "/var/task/lib",
        libc::O_WRONLY | libc::O_CREAT,
        "O_WRONLY|O_CREAT",
    );
    let dir = cstr("/var/task/lib");
    r.deny(
        "mkdir(/var/task/lib)",
        sys(libc::SYS_mkdir, [ptr(dir.as_ptr()), 0o755, 0, 0, 0, 0]),
    );
    let _ = std::fs::write("/tmp/hearth-escape-lib", b"x");
    let (from, to) = (
        cstr("/tmp/hearth-escape-lib"),
        cstr("/var/task/hearth-escape-lib"),
    );
    r.deny(
        "link(/tmp/hearth-escape-lib -> /var/task/hearth-escape-lib)",
        sys(
            libc::SYS_link,
            [ptr(from.as_ptr()), ptr(to.as_ptr()), 0, 0, 0, 0],
        ),
    );
    r.deny(
        "rename(/tmp/hearth-escape-lib -> /var/task/hearth-escape-lib)",
        sys(
            libc::SYS_rename,
            [ptr(from.as_ptr()), ptr(to.as_ptr()), 0, 0, 0, 0],
        ),
    );
    let (target, link) = (cstr("/tmp"), cstr("/var/task/hearth-escape-link"));
    r.deny(
        "symlink(/var/task/hearth-escape-link -> /tmp)",
        sys(
            libc::SYS_symlink,
            [ptr(target.as_ptr()), ptr(link.as_ptr()), 0, 0, 0, 0],
        ),
    );
}

// ----- privileges ------------------------------------------------------------------------------

/// Runs setuid-root `path` with `args` and reads its credentials from /proc while it runs (its
/// stdout is a full pipe, so it blocks on its first write) or after it exits (a zombie keeps
/// its status until reaped).
fn run_setuid(r: &mut Report, path: &str, args: &[&str]) {
    let meta = std::fs::metadata(path);
    let mode = meta
        .as_ref()
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap_or(0);
    r.note(
        format!("stat({path})"),
        meta.as_ref()
            .map_or_else(|e| e.to_string(), |_| format!("mode {mode:o}")),
    );
    if mode & 0o4000 == 0 {
        r.escaped(format!(
            "{path} is not a setuid binary here: the attack could not run"
        ));
        return;
    }
    let mut fds = [0i32; 2];
    if let Err(e) = sys(
        libc::SYS_pipe2,
        [mptr(fds.as_mut_ptr()), int(libc::O_CLOEXEC), 0, 0, 0, 0],
    ) {
        r.note("pipe2", errno_name(e));
        return;
    }
    let size = sys(
        libc::SYS_fcntl,
        [int(fds[1]), int(libc::F_GETPIPE_SZ), 0, 0, 0, 0],
    )
    .unwrap_or(65536);
    let fill = vec![b'.'; usize::try_from(size).unwrap_or(65536)];
    let _ = sys(
        libc::SYS_write,
        [int(fds[1]), ptr(fill.as_ptr()), fill.len() as u64, 0, 0, 0],
    );
    let prog = cstr(path);
    let argv_c: Vec<CString> = args.iter().map(|a| cstr(a)).collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 2] = [c"PATH=/usr/bin:/bin".as_ptr(), std::ptr::null()];
    let write_end = fds[1];
    let child = fork(|| {
        let _ = sys(libc::SYS_dup2, [int(write_end), 1, 0, 0, 0, 0]);
        let _ = sys(libc::SYS_dup2, [int(write_end), 2, 0, 0, 0, 0]);
        match sys(
            libc::SYS_execve,
            [
                ptr(prog.as_ptr()),
                ptr(argv.as_ptr()),
                ptr(envp.as_ptr()),
                0,
                0,
                0,
            ],
        ) {
            Ok(_) => 0,
            Err(e) => 100 + e,
        }
    });
    let Ok(child) = child else {
        r.note("fork", "failed");
        return;
    };
    let name = std::path::Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let pid = child.to_string();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut comm = String::new();
    while Instant::now() < deadline {
        comm = status_field(&pid, "Name");
        if comm == name {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (uid, gid, caps, nnp) = (
        status_field(&pid, "Uid"),
        status_field(&pid, "Gid"),
        status_field(&pid, "CapEff"),
        status_field(&pid, "NoNewPrivs"),
    );
    let state = status_field(&pid, "State");
    let _ = kill(child, libc::SIGKILL);
    let status = wait(child).map_or_else(errno_name, describe_status);
    close(i64::from(fds[0]));
    close(i64::from(fds[1]));
    r.note(format!("{} while running", args.join(" ")), format!("Name {comm}, State {state}, Uid {uid}, Gid {gid}, CapEff {caps}, NoNewPrivs {nnp}; then {status}"));
    if comm != name {
        r.note(format!("exec {path}"), format!("did not run ({status})"));
        return;
    }
    let ids: Vec<&str> = uid
        .split_whitespace()
        .chain(gid.split_whitespace())
        .collect();
    if ids.len() != 8 || ids.iter().any(|id| *id != "65534") {
        r.escaped(format!("{path} ran with Uid {uid} Gid {gid}"));
    }
    if caps != "0000000000000000" {
        r.escaped(format!("{path} ran with capabilities {caps}"));
    }
}

fn setuid_binary(r: &mut Report) {
    run_setuid(r, "/usr/bin/mount", &["mount", "--help"]);
    run_setuid(r, "/usr/bin/su", &["su", "-c", "id"]);
}

fn capset(r: &mut Report) {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header: [u32; 2] = [LINUX_CAPABILITY_VERSION_3, 0];
    let mut data = [0u32; 6];
    r.note(
        "capget",
        result_name(sys(
            libc::SYS_capget,
            [ptr(header.as_ptr()), mptr(data.as_mut_ptr()), 0, 0, 0, 0],
        )),
    );
    r.note("capget data", format!("{data:?}"));
    let all = [u32::MAX; 6];
    r.deny(
        "capset(every capability)",
        sys(
            libc::SYS_capset,
            [ptr(header.as_ptr()), ptr(all.as_ptr()), 0, 0, 0, 0],
        ),
    );
    // CAP_SYS_ADMIN (21) only, effective and permitted.
    let one = [1u32 << 21, 1 << 21, 0, 0, 0, 0];
    r.deny(
        "capset(CAP_SYS_ADMIN)",
        sys(
            libc::SYS_capset,
            [ptr(header.as_ptr()), ptr(one.as_ptr()), 0, 0, 0, 0],
        ),
    );
    r.deny(
        "prctl(PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN)",
        sys(
            libc::SYS_prctl,
            [
                int(libc::PR_CAP_AMBIENT),
                int(libc::PR_CAP_AMBIENT_RAISE),
                21,
                0,
                0,
                0,
            ],
        ),
    );
    r.deny("setuid(0)", sys(libc::SYS_setuid, [0; 6]));
    r.deny("setresuid(0, 0, 0)", sys(libc::SYS_setresuid, [0; 6]));
    r.deny("setgid(0)", sys(libc::SYS_setgid, [0; 6]));
    let groups = [0u32];
    r.deny(
        "setgroups([0])",
        sys(libc::SYS_setgroups, [1, ptr(groups.as_ptr()), 0, 0, 0, 0]),
    );
    r.deny("setfsuid(0)", sys(libc::SYS_setfsuid, [0; 6]));
    // prctl(PR_SET_NO_NEW_PRIVS, 0) is refused by the kernel in any case (EINVAL).
    r.deny(
        "prctl(PR_SET_NO_NEW_PRIVS, 0)",
        sys(
            libc::SYS_prctl,
            [int(libc::PR_SET_NO_NEW_PRIVS), 0, 0, 0, 0, 0],
        ),
    );
    for field in [
        "Uid",
        "Gid",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ] {
        let value = status_field("self", field);
        r.note(field, value.clone());
        let fine = match field {
            "Uid" | "Gid" => value.split_whitespace().all(|v| v == "65534"),
            "NoNewPrivs" => value == "1",
            "Seccomp" => value == "2",
            _ => value == "0000000000000000",
        };
        if !fine {
            r.escaped(format!("{field} is {value}"));
        }
    }
}

// ----- network -----------------------------------------------------------------------------------

fn connect_tcp(addr: std::net::SocketAddr) -> Ret {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map(|_| 0)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ETIMEDOUT))
}

fn connect_host_tcp(r: &mut Report) {
    let targets = env_var("HEARTH_ATTACK_TARGETS");
    for target in targets.split(',').filter(|t| !t.is_empty()) {
        match target.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                r.deny(format!("connect(tcp {addr})"), connect_tcp(addr));
                let udp = std::net::UdpSocket::bind(if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                });
                match udp {
                    Ok(sock) => {
                        r.deny(
                            format!("sendto(udp {addr})"),
                            sock.send_to(b"hearth-escape", addr)
                                .map(|n| n as i64)
                                .map_err(|e| e.raw_os_error().unwrap_or(0)),
                        );
                    }
                    Err(e) => r.note(format!("bind(udp) for {addr}"), e.to_string()),
                }
            }
            Err(e) => r.escaped(format!("bad target {target}: {e}")),
        }
    }
}

fn connect_metadata(r: &mut Report) {
    for target in [
        "169.254.169.254:80",
        "1.1.1.1:53",
        "8.8.8.8:443",
        "[fd00:ec2::254]:80",
        "[2606:4700:4700::1111]:53",
    ] {
        if let Ok(addr) = target.parse() {
            r.deny(format!("connect(tcp {target})"), connect_tcp(addr));
        }
    }
}

fn connect_abstract(name: &str) -> Ret {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))?;
    std::os::unix::net::UnixStream::connect_addr(&addr)
        .map(|_| 0)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

fn abstract_unix_host(r: &mut Report) {
    let test = env_var("HEARTH_ATTACK_ABSTRACT");
    r.deny(
        format!("connect(abstract @{test}, the test's socket on the host)"),
        connect_abstract(&test),
    );
    r.deny(
        "connect(abstract @/tmp/.X11-unix/X0)",
        connect_abstract("/tmp/.X11-unix/X0"),
    );
    for path in [
        "/tmp/.X11-unix/X0",
        "/run/systemd/private",
        "/var/run/docker.sock",
        "/run/dbus/system_bus_socket",
    ] {
        r.deny(
            format!("connect(unix {path})"),
            std::os::unix::net::UnixStream::connect(path)
                .map(|_| 0)
                .map_err(|e| e.raw_os_error().unwrap_or(0)),
        );
    }
}

fn abstract_unix_sibling(r: &mut Report) {
    let name = env_var("HEARTH_ATTACK_SIBLING_SOCKET");
    r.deny(
        format!("connect(abstract @{name}, another environment's socket)"),
        connect_abstract(&name),
    );
}

fn socket(domain: i32, kind: i32, protocol: i32) -> Ret {
    let got = sys(
        libc::SYS_socket,
        [
            int(domain),
            int(kind | libc::SOCK_CLOEXEC),
            int(protocol),
            0,
            0,
            0,
        ],
    );
    if let Ok(fd) = got {
        close(fd);
    }
    got
}

fn netlink(r: &mut Report) {
    for (name, protocol) in [
        ("NETLINK_ROUTE", 0),
        ("NETLINK_AUDIT", 9),
        ("NETLINK_KOBJECT_UEVENT", 15),
        ("NETLINK_NETFILTER", 12),
        ("NETLINK_SOCK_DIAG", 4),
        ("NETLINK_GENERIC", 16),
    ] {
        r.deny(
            format!("socket(AF_NETLINK, SOCK_RAW, {name})"),
            socket(libc::AF_NETLINK, libc::SOCK_RAW, protocol),
        );
        r.deny(
            format!("socket(AF_NETLINK, SOCK_DGRAM, {name})"),
            socket(libc::AF_NETLINK, libc::SOCK_DGRAM, protocol),
        );
    }
}

fn packet(r: &mut Report) {
    let all = i32::from(0x0003u16.to_be());
    r.deny(
        "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)",
        socket(libc::AF_PACKET, libc::SOCK_RAW, all),
    );
    r.deny(
        "socket(AF_PACKET, SOCK_DGRAM, ETH_P_ALL)",
        socket(libc::AF_PACKET, libc::SOCK_DGRAM, all),
    );
    r.deny(
        "socket(AF_INET, SOCK_PACKET)",
        socket(libc::AF_INET, 10, all),
    );
    r.deny(
        "socket(AF_INET, SOCK_RAW, IPPROTO_RAW)",
        socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
    );
    r.deny(
        "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
        socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
    );
    r.deny(
        "socket(AF_INET6, SOCK_RAW, IPPROTO_RAW)",
        socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW),
    );
}

fn exotic_sockets(r: &mut Report) {
    for (name, family) in [
        ("AF_VSOCK", libc::AF_VSOCK),
        ("AF_ALG", libc::AF_ALG),
        ("AF_KEY", libc::AF_KEY),
        ("AF_XDP", libc::AF_XDP),
        ("AF_TIPC", libc::AF_TIPC),
        ("AF_RDS", libc::AF_RDS),
        ("AF_CAN", libc::AF_CAN),
        ("AF_BLUETOOTH", libc::AF_BLUETOOTH),
        ("AF_NFC", libc::AF_NFC),
        ("AF_LLC", libc::AF_LLC),
    ] {
        r.deny(
            format!("socket({name}, SOCK_STREAM)"),
            socket(family, libc::SOCK_STREAM, 0),
        );
        r.deny(
            format!("socket({name}, SOCK_DGRAM)"),
            socket(family, libc::SOCK_DGRAM, 0),
        );
        r.deny(
            format!("socket({name}, SOCK_SEQPACKET)"),
            socket(family, libc::SOCK_SEQPACKET, 0),
        );
    }
}

fn loopback_up(r: &mut Report) {
    let Ok(fd) = sys(
        libc::SYS_socket,
        [
            int(libc::AF_INET),
            int(libc::SOCK_DGRAM | libc::SOCK_CLOEXEC),
            0,
            0,
            0,
            0,
        ],
    ) else {
        r.escaped("could not create the UDP socket the attack needs");
        return;
    };
    // struct ifreq: 16 bytes of name, then the flags.
    let mut ifreq = [0u8; 40];
    ifreq[..2].copy_from_slice(b"lo");
    let flags = u16::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(1);
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    r.deny(
        "ioctl(SIOCSIFFLAGS, lo up)",
        sys(
            libc::SYS_ioctl,
            [int(fd), SIOCSIFFLAGS, mptr(ifreq.as_mut_ptr()), 0, 0, 0],
        ),
    );
    // struct ifreq with an address: bring up a host address on lo.
    let mut addr = [0u8; 40];
    addr[..2].copy_from_slice(b"lo");
    addr[16..18].copy_from_slice(&u16::try_from(libc::AF_INET).unwrap_or(2).to_ne_bytes());
    addr[20..24].copy_from_slice(&[127, 0, 0, 1]);
    r.deny(
        "ioctl(SIOCSIFADDR, lo 127.0.0.1)",
        sys(
            libc::SYS_ioctl,
            [int(fd), SIOCSIFADDR, mptr(addr.as_mut_ptr()), 0, 0, 0],
        ),
    );
    close(fd);
    r.deny(
        "connect(tcp 127.0.0.1:9001) afterwards",
        connect_tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 9001))),
    );
}

// ----- signals -----------------------------------------------------------------------------------

fn kill_all(r: &mut Report) {
    let children: Vec<i64> = (0..2).filter_map(|_| pausing_child().ok()).collect();
    r.note("forked children", format!("{children:?}"));
    // In its own pid namespace this reaches only the environment's processes; the host side of
    // the test checks that the scheduler, a host process and another environment survived.
    r.note("kill(-1, SIGKILL)", result_name(kill(-1, libc::SIGKILL)));
    for child in children {
        r.note(
            format!("child {child}"),
            wait(child).map_or_else(errno_name, describe_status),
        );
    }
    r.note(
        "kill(-1, SIGKILL) with no other process",
        result_name(kill(-1, libc::SIGKILL)),
    );
}

fn kill_host(r: &mut Report) {
    for (who, pid) in [
        ("scheduler", env_pid("HEARTH_ATTACK_HOST_PID")),
        ("victim", env_pid("HEARTH_ATTACK_VICTIM_PID")),
        ("sibling environment", env_pid("HEARTH_ATTACK_SIBLING_PID")),
    ] {
        r.deny(format!("kill({who} {pid}, 0)"), kill(pid, 0));
        r.deny(
            format!("kill({who} {pid}, SIGKILL)"),
            kill(pid, libc::SIGKILL),
        );
        r.deny(
            format!("kill(-{pid}, SIGKILL) (its group)"),
            kill(-pid, libc::SIGKILL),
        );
        r.deny(
            format!("tgkill({pid}, {pid}, SIGKILL)"),
            sys(
                libc::SYS_tgkill,
                [int(pid), int(pid), int(libc::SIGKILL), 0, 0, 0],
            ),
        );
        // A siginfo claiming to come from sigqueue (si_code SI_QUEUE = -1): with a code >= 0
        // the kernel refuses it (EPERM) before it even looks the pid up.
        let mut info = [0u8; 128];
        info[..4].copy_from_slice(&libc::SIGKILL.to_ne_bytes());
        info[8..12].copy_from_slice(&(-1i32).to_ne_bytes());
        r.deny(
            format!("rt_sigqueueinfo({pid}, SIGKILL)"),
            sys(
                libc::SYS_rt_sigqueueinfo,
                [int(pid), int(libc::SIGKILL), ptr(info.as_ptr()), 0, 0, 0],
            ),
        );
    }
    let pgid = env_pid("HEARTH_ATTACK_HOST_PGID");
    r.deny(
        format!("kill(-{pgid}, SIGKILL) (the scheduler's process group)"),
        kill(-pgid, libc::SIGKILL),
    );
}

fn kill_guessed(r: &mut Report) {
    let results: Vec<(String, Ret)> = guessed_pids()
        .map(|pid| (format!("pid {pid}"), kill(pid, 0)))
        .collect();
    r.deny_many("kill(pid, 0) for pids 2..=4096", results);
}

fn kill_process_group(r: &mut Report) {
    // The environment's first process was started by the scheduler and may share its process
    // group and session; neither is visible from inside the pid namespace.
    r.note("getpgrp()", result_name(sys(libc::SYS_getpgrp, [0; 6])));
    r.note("getsid(0)", result_name(sys(libc::SYS_getsid, [0; 6])));
    r.note(
        "kill(0, SIGUSR1) (its own process group)",
        result_name(kill(0, libc::SIGUSR1)),
    );
    r.note(
        "kill(0, SIGKILL) (its own process group)",
        result_name(kill(0, libc::SIGKILL)),
    );
    r.note("after kill(0, SIGKILL)", "still running");
    r.note("setsid()", result_name(sys(libc::SYS_setsid, [0; 6])));
}

// ----- the sibling -----------------------------------------------------------------------------

fn sibling() -> Vec<u8> {
    use std::os::linux::net::SocketAddrExt;
    static LISTENER: std::sync::OnceLock<std::io::Result<std::os::unix::net::UnixListener>> =
        std::sync::OnceLock::new();
    let name = env_var("HEARTH_ATTACK_SIBLING_SOCKET");
    let listener = LISTENER.get_or_init(|| {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        std::os::unix::net::UnixListener::bind_addr(&addr)
    });
    let mut r = Report::new("sibling");
    r.note(
        format!("listen(abstract @{name})"),
        listener
            .as_ref()
            .map_or_else(|e| e.to_string(), |_| "ok".into()),
    );
    if listener.is_err() {
        r.escaped("the sibling could not listen");
    }
    r.to_json()
}

// ----- the hostile ring peer -------------------------------------------------------------------

/// The channel mapped a second time, behind the runtime's back, to write into it. The
/// attacks here hold references into shared memory made only of atomics (see
/// `hearth_ipc::layout`), so writing garbage is data, not undefined behaviour.
mod ring {
    use super::*;

    pub(super) struct Raw {
        pub channel: GuestChannel,
        pub control: &'static Control,
        pub base: *mut u8,
        pub fd: i32,
    }

    pub(super) fn raw_channel() -> Raw {
        let fd: i32 = env_var(CHANNEL_FD_ENV).parse().unwrap_or(3);
        let second = sys(libc::SYS_dup, [int(fd), 0, 0, 0, 0, 0]).expect("dup of the channel fd");
        // SAFETY: mapping our own channel memfd into fresh address space; nothing else is there.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                TOTAL_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                i32::try_from(second).unwrap_or(-1),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap of the channel");
        // SAFETY: `fd` is the inherited channel fd, owned by nobody else in this process.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let channel = GuestChannel::from_fd(owned).expect("attach to the channel");
        // SAFETY: the mapping is TOTAL_LEN bytes, page aligned, never unmapped, and `Control`
        // is made of atomics only.
        let control = unsafe { &*base.cast::<Control>() };
        Raw {
            channel,
            control,
            base: base.cast(),
            fd: i32::try_from(second).unwrap_or(-1),
        }
    }

    fn hang() -> ! {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    /// Runs ring attack `mode` for every request; never returns.
    pub(super) fn attack(mode: &str) -> ! {
        let raw = raw_channel();
        let Raw {
            mut channel,
            control,
            base,
            fd,
        } = raw;
        if mode == "never-consume" {
            // Never take a request off the ring, never answer, and say it is awake.
            loop {
                control.guest_bell_word().store(0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        loop {
            let Ok(request) = channel.wait_next() else {
                std::process::exit(70);
            };
            let mut r = Report::new(&format!("ring-{mode}"));
            let tail = control.resp_tail.load(Ordering::Relaxed);
            let slot = &control.resp_slots[(tail % SLOTS) as usize];
            let ring_size = u32::try_from(ARENA_LEN).unwrap_or(u32::MAX);
            match mode {
                "resp-tail-far" => {
                    control
                        .resp_tail
                        .store(tail.wrapping_add(1000), Ordering::Release);
                }
                "resp-tail-backwards" => {
                    control
                        .resp_tail
                        .store(tail.wrapping_sub(1), Ordering::Release);
                }
                "resp-wrong-id" => {
                    slot.id.store(request.id + 7, Ordering::Relaxed);
                    slot.len.store(0, Ordering::Relaxed);
                    slot.status.store(0, Ordering::Relaxed);
                    control.resp_tail.store(tail + 1, Ordering::Release);
                }
                "resp-bounds" => {
                    slot.id.store(request.id, Ordering::Relaxed);
                    slot.offset.store(ring_size - 10, Ordering::Relaxed);
                    slot.len.store(4096, Ordering::Relaxed);
                    slot.status.store(0, Ordering::Relaxed);
                    control.resp_tail.store(tail + 1, Ordering::Release);
                }
                "resp-len-huge" => {
                    slot.id.store(request.id, Ordering::Relaxed);
                    slot.offset.store(0, Ordering::Relaxed);
                    slot.len.store(u32::MAX, Ordering::Relaxed);
                    slot.status.store(0, Ordering::Relaxed);
                    control.resp_tail.store(tail + 1, Ordering::Release);
                }
                "resp-status" => {
                    slot.id.store(request.id, Ordering::Relaxed);
                    slot.len.store(0, Ordering::Relaxed);
                    slot.status.store(77, Ordering::Relaxed);
                    control.resp_tail.store(tail + 1, Ordering::Release);
                }
                "len-race" => {
                    // A valid answer whose length and offset keep changing after publication:
                    // the host must read them once.
                    r.note("respond, then rewrite len and offset for 200 ms", "");
                    let body = r.to_json();
                    let _ = channel.respond(request.id, ResponseStatus::Ok, &body);
                    let end = Instant::now() + Duration::from_millis(200);
                    let mut x = 0x1234_5678u32;
                    while Instant::now() < end {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        // Lengths in and out of bounds, offsets anywhere; the id and status
                        // stay valid so that only the host's reading of the lengths is tested.
                        slot.len.store(x >> (x & 15), Ordering::Relaxed);
                        slot.offset.store(x.rotate_left(7) >> 8, Ordering::Relaxed);
                    }
                    continue;
                }
                "req-head-past" => {
                    let head = u32::try_from(request.id).unwrap_or(0).wrapping_add(5000);
                    control.req_head.store(head, Ordering::Release);
                    r.note("req_head", format!("set to {head}"));
                    let _ = channel.respond(request.id, ResponseStatus::Ok, &r.to_json());
                    continue;
                }
                "host-fields" => {
                    // Every field only the host writes: its ring indices, the header, the
                    // request slots. The host never reads them back.
                    control.req_tail.store(0xdead_beef, Ordering::Relaxed);
                    control.resp_head.store(0x0bad_f00d, Ordering::Relaxed);
                    control.header.magic.store(0, Ordering::Relaxed);
                    control.header.version.store(0xffff, Ordering::Relaxed);
                    control.header.slots.store(0, Ordering::Relaxed);
                    control.header.total_len.store(u64::MAX, Ordering::Relaxed);
                    control.header.arena_len.store(1, Ordering::Relaxed);
                    for s in &control.req_slots {
                        s.id.store(u64::MAX, Ordering::Relaxed);
                        s.offset.store(u32::MAX, Ordering::Relaxed);
                        s.len.store(u32::MAX, Ordering::Relaxed);
                        s.kind.store(99, Ordering::Relaxed);
                    }
                    // The request arena too.
                    // SAFETY: REQ_ARENA_OFFSET + 4096 lies inside the TOTAL_LEN mapping; bytes
                    // of shared memory the host writes and copies from but never trusts.
                    unsafe {
                        std::ptr::write_bytes(base.wrapping_add(REQ_ARENA_OFFSET), 0xff, 4096)
                    };
                    r.note("host-owned fields", "overwritten, then answered by hand");
                    // The runtime's own channel reads two of these (the request tail and the
                    // response head) and would give up: answer by hand instead, at the start
                    // of the response arena, then exit once the host took the answer.
                    let body = r.to_json();
                    let len = u32::try_from(body.len()).unwrap_or(0);
                    // SAFETY: the response arena starts at RESP_ARENA_OFFSET inside the
                    // TOTAL_LEN mapping and holds ARENA_LEN bytes, far more than the report.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            body.as_ptr(),
                            base.wrapping_add(RESP_ARENA_OFFSET),
                            body.len(),
                        )
                    };
                    slot.id.store(request.id, Ordering::Relaxed);
                    slot.offset.store(0, Ordering::Relaxed);
                    slot.len.store(len, Ordering::Relaxed);
                    slot.status.store(0, Ordering::Relaxed);
                    control
                        .resp_tail
                        .swap(tail.wrapping_add(1), Ordering::AcqRel);
                    control.host_bell.notify();
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while control.resp_head.load(Ordering::Acquire) != tail.wrapping_add(1)
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::process::exit(0);
                }
                "doorbell-spam" => {
                    // Garbage in the host's doorbell and a storm of wakes on it.
                    let word = control.host_bell.futex_word();
                    // SAFETY: the futex word is an AtomicU32 in the mapping, which lives for
                    // the whole process.
                    let atomic = unsafe { AtomicU32::from_ptr(word.cast_mut()) };
                    let end = Instant::now() + Duration::from_millis(100);
                    let mut wakes = 0u32;
                    while Instant::now() < end {
                        atomic.store(wakes.wrapping_mul(2_654_435_761), Ordering::Relaxed);
                        let _ = sys(
                            libc::SYS_futex,
                            [ptr(word), int(libc::FUTEX_WAKE), int(i32::MAX), 0, 0, 0],
                        );
                        wakes += 1;
                    }
                    r.note(
                        "FUTEX_WAKE on the host's doorbell",
                        format!("{wakes} times"),
                    );
                    let _ = channel.respond(request.id, ResponseStatus::Ok, &r.to_json());
                    continue;
                }
                "unsolicited" => {
                    r.note("answer, then answer request id + 1 too", "");
                    let _ = channel.respond(request.id, ResponseStatus::Ok, &r.to_json());
                    let _ = channel.respond(request.id + 1, ResponseStatus::Ok, b"unsolicited");
                    control.host_bell.notify();
                    continue;
                }
                "memfd-resize" => {
                    // A shrunk channel would make the host's accesses fault (SIGBUS).
                    let total = u64::try_from(TOTAL_LEN).unwrap_or(u64::MAX);
                    r.deny(
                        "ftruncate(channel, 0)",
                        sys(libc::SYS_ftruncate, [int(fd), 0, 0, 0, 0, 0]),
                    );
                    r.deny(
                        "ftruncate(channel, 4096)",
                        sys(libc::SYS_ftruncate, [int(fd), 4096, 0, 0, 0, 0]),
                    );
                    r.deny(
                        "ftruncate(channel, 2 x size)",
                        sys(libc::SYS_ftruncate, [int(fd), 2 * total, 0, 0, 0, 0]),
                    );
                    r.deny(
                        "fcntl(channel, F_ADD_SEALS, F_SEAL_WRITE)",
                        sys(
                            libc::SYS_fcntl,
                            [
                                int(fd),
                                int(libc::F_ADD_SEALS),
                                int(libc::F_SEAL_WRITE),
                                0,
                                0,
                                0,
                            ],
                        ),
                    );
                    r.deny(
                        "fcntl(channel, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)",
                        sys(
                            libc::SYS_fcntl,
                            [
                                int(fd),
                                int(libc::F_ADD_SEALS),
                                int(libc::F_SEAL_FUTURE_WRITE),
                                0,
                                0,
                                0,
                            ],
                        ),
                    );
                    r.note(
                        "fcntl(channel, F_GET_SEALS)",
                        result_name(sys(
                            libc::SYS_fcntl,
                            [int(fd), int(libc::F_GET_SEALS), 0, 0, 0, 0],
                        )),
                    );
                    let _ = channel.respond(request.id, ResponseStatus::Ok, &r.to_json());
                    continue;
                }
                other => {
                    r.escaped(format!("no ring attack named {other}"));
                    let _ = channel.respond(request.id, ResponseStatus::Ok, &r.to_json());
                    continue;
                }
            }
            // Wake the scheduler if it sleeps, then never answer properly.
            control.host_bell.notify();
            hang();
        }
    }

    /// The guest's doorbell word.
    trait GuestBell {
        fn guest_bell_word(&self) -> &AtomicU32;
    }

    impl GuestBell for Control {
        fn guest_bell_word(&self) -> &AtomicU32 {
            // SAFETY: the futex word is an AtomicU32 inside `self`, which outlives the borrow.
            unsafe { AtomicU32::from_ptr(self.guest_bell.futex_word().cast_mut()) }
        }
    }
}
