//! The seccomp sweep: a native function that makes syscalls by number from inside its
//! environment and reports what the filter and the kernel answered. `tests/tests/seccomp_sweep.rs`
//! decides what each number should do (from `sandbox/seccomp/native.allow`) and sends it here.
//!
//! Event (JSON):
//!
//! | field   | meaning                                                                          |
//! |---------|----------------------------------------------------------------------------------|
//! | `deny`  | x86_64 numbers to call with invalid arguments (all `-1`); each must fail          |
//! | `allow` | x86_64 numbers to exercise with meaningful arguments; each must do its job        |
//! | `x32`   | numbers to call with the x32 bit (`nr \| 0x40000000`), each in a child of its own |
//! | `i386`  | i386 numbers to call through `int 0x80`, each in a child of its own               |
//! | `names` | optional `{"nr": "name", "x32:nr": "name", "i386:nr": "name"}` for the report      |
//!
//! Answer: `{"entries": [{nr, name, expected, args, result, errno, signal, ok, note}, ...]}`.
//! `expected` is `deny`, `allow` or `kill`; `args` are the six arguments where the filter looks
//! at them (conditional rules), so the test can check them against the policy. An allowed
//! syscall with a condition is also called with arguments that break it (`expected: deny`).
//! `ok` is this function's own verdict: for `allow`, that the call did its job (or failed with
//! an errno only the kernel gives for the deliberately wrong argument it got); for `deny`, that
//! it failed with ENOSYS or EPERM (the test checks which); for `kill`, that SIGSYS killed it.
//!
//! Run as `bootstrap --exit N`, the binary exits with status N at once: `execve` and
//! `execveat` exec it that way to prove they ran.
#![allow(clippy::exit)] // `--exit N` and forked children end the process on purpose

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--exit") {
        let code = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
        std::process::exit(code);
    }
    #[cfg(target_arch = "x86_64")]
    hearth_runtime::serve(|event| sweep::run(event).map(String::into_bytes));
    #[cfg(not(target_arch = "x86_64"))]
    hearth_runtime::serve(|_| {
        Err(hearth_runtime::FnError::new(
            "Unsupported",
            "the seccomp sweep is written for x86_64",
        ))
    });
}

// The sweep is a list of raw syscalls made on purpose. Every call passes either invalid values
// the kernel rejects (the denied numbers, all `-1`), or pointers to locals, buffers and
// mappings that outlive the call together with their true sizes; forked children only make
// raw syscalls on memory prepared before the fork and then `_exit`. One comment here instead of
// one per call, as in the sample function's probe.
#[cfg(target_arch = "x86_64")]
#[allow(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]
mod sweep {
    use std::collections::HashMap;
    use std::ffi::{c_long, CString};
    use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
    use std::time::{Duration, Instant};

    use hearth_runtime::FnError;
    use libc::*;
    use serde_json::{json, Value};

    const X32_BIT: c_long = 0x4000_0000;
    const DATA: &[u8] = b"hearth sweep data\n";
    const DIR: &str = "/tmp/hearth-sweep";
    /// x86_64's rseq signature (`RSEQ_SIG`).
    const RSEQ_SIG: usize = 0x5305_3053;

    /// Last signal a handler saw (SIGUSR1/SIGUSR2), for the signal exercises.
    static SEEN: AtomicI32 = AtomicI32::new(0);

    extern "C" fn on_signal(sig: c_int) {
        SEEN.store(sig, Ordering::SeqCst);
    }

    extern "C" {
        // glibc (2.35+): where this thread's rseq area lies, relative to the thread pointer.
        static __rseq_offset: isize;
        static __rseq_size: c_uint;
    }

    /// A syscall's return value and errno (0 unless it returned -1).
    #[derive(Debug, Clone, Copy)]
    struct Ret {
        ret: i64,
        errno: i32,
    }

    impl Ret {
        fn ok(self) -> bool {
            self.ret != -1
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// A raw syscall with up to six arguments.
    unsafe fn sc(nr: c_long, args: &[usize]) -> Ret {
        let mut a = [0usize; 6];
        a[..args.len()].copy_from_slice(args);
        let ret = unsafe { syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        Ret {
            ret,
            errno: if ret == -1 { errno() } else { 0 },
        }
    }

    /// A signed value as a raw argument (two's complement, as the kernel reads it).
    fn a(v: impl Into<i64>) -> usize {
        usize::from_ne_bytes(v.into().to_ne_bytes())
    }

    fn u(v: u64) -> usize {
        usize::from_ne_bytes(v.to_ne_bytes())
    }

    fn p<T>(r: &T) -> usize {
        std::ptr::from_ref(r) as usize
    }

    fn m<T>(r: &mut T) -> usize {
        std::ptr::from_mut(r) as usize
    }

    fn s(c: &CString) -> usize {
        c.as_ptr() as usize
    }

    fn fd_of(r: Ret) -> i32 {
        i32::try_from(r.ret).unwrap_or(-1)
    }

    fn zeroed<T>() -> T {
        // Only used for the kernel's plain C structs, for which all zeroes is a valid value.
        unsafe { std::mem::zeroed() }
    }

    fn sigbit(sig: c_int) -> u64 {
        1u64 << (sig - 1)
    }

    /// An fd closed on drop.
    struct Fd(i32);

    impl Drop for Fd {
        fn drop(&mut self) {
            if self.0 >= 0 {
                unsafe { close(self.0) };
            }
        }
    }

    impl Fd {
        fn u(&self) -> usize {
            a(self.0)
        }
    }

    fn pipe() -> (Fd, Fd) {
        let mut fds = [-1; 2];
        unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) };
        (Fd(fds[0]), Fd(fds[1]))
    }

    fn put(fd: &Fd, bytes: &[u8]) -> isize {
        unsafe { libc::write(fd.0, bytes.as_ptr().cast(), bytes.len()) }
    }

    fn get(fd: &Fd, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let got = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), n) };
        buf.truncate(usize::try_from(got).unwrap_or(0));
        buf
    }

    fn open_path(path: &CString, flags: c_int) -> Fd {
        Fd(unsafe { open(path.as_ptr(), flags | O_CLOEXEC, 0o644) })
    }

    /// An anonymous private mapping, unmapped on drop.
    struct Map {
        addr: usize,
        len: usize,
    }

    impl Map {
        fn new(len: usize, flags: c_int, fd: i32) -> Self {
            let ptr = unsafe {
                mmap(
                    std::ptr::null_mut(),
                    len,
                    PROT_READ | PROT_WRITE,
                    flags,
                    fd,
                    0,
                )
            };
            let addr = if ptr == MAP_FAILED { 0 } else { ptr as usize };
            Self { addr, len }
        }

        fn anon(len: usize) -> Self {
            Self::new(len, MAP_PRIVATE | MAP_ANONYMOUS, -1)
        }

        fn byte(&self, off: usize) -> u8 {
            unsafe { std::ptr::read_volatile((self.addr + off) as *const u8) }
        }

        fn set(&self, off: usize, v: u8) {
            unsafe { std::ptr::write_volatile((self.addr + off) as *mut u8, v) }
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            if self.addr != 0 {
                unsafe { munmap(self.addr as *mut c_void, self.len) };
            }
        }
    }

    /// How a forked child ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ended {
        Exited(i32),
        Signaled(i32),
        Hung,
        ForkFailed(i32),
    }

    fn decode(status: c_int) -> Ended {
        if WIFSIGNALED(status) {
            Ended::Signaled(WTERMSIG(status))
        } else {
            Ended::Exited(WEXITSTATUS(status))
        }
    }

    /// Waits up to 10 s for `pid`; with `poke`, sends it SIGUSR1 every few milliseconds (to
    /// wake a child blocked in `pause`).
    fn wait_for(pid: pid_t, poke: bool) -> Ended {
        let start = Instant::now();
        loop {
            let mut status = 0;
            let r = unsafe { waitpid(pid, &mut status, WNOHANG) };
            if r == pid {
                return decode(status);
            }
            if r < 0 || start.elapsed() > Duration::from_secs(10) {
                unsafe { kill(pid, SIGKILL) };
                unsafe { waitpid(pid, &mut status, 0) };
                return Ended::Hung;
            }
            if poke {
                unsafe { kill(pid, SIGUSR1) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs `body` in a forked child and returns how the child ended; the child exits with the
    /// code `body` returns. `body` makes raw syscalls only: no allocation, no locks.
    fn in_child(poke: bool, body: impl FnOnce() -> i32) -> Ended {
        let pid = unsafe { fork() };
        if pid == 0 {
            let code = body();
            unsafe { _exit(code) };
        }
        if pid < 0 {
            return Ended::ForkFailed(errno());
        }
        wait_for(pid, poke)
    }

    /// A forked child that waits in `pause` until it is killed.
    fn sleeper() -> pid_t {
        let pid = unsafe { fork() };
        if pid == 0 {
            loop {
                unsafe { sc(SYS_pause, &[]) };
            }
        }
        pid
    }

    /// What one call did.
    struct Outcome {
        expected: &'static str,
        label: String,
        args: Option<[usize; 6]>,
        ret: i64,
        errno: i32,
        signal: i32,
        ok: bool,
        note: String,
    }

    fn outcome(expected: &'static str, r: Ret, ok: bool, note: impl Into<String>) -> Outcome {
        Outcome {
            expected,
            label: String::new(),
            args: None,
            ret: r.ret,
            errno: r.errno,
            signal: 0,
            ok,
            note: note.into(),
        }
    }

    /// The call succeeded and `check` (what it did) holds.
    fn works(r: Ret, check: bool, note: impl Into<String>) -> Outcome {
        let mut note = note.into();
        if r.ok() && !check {
            note = format!("returned {} but did not do its job: {note}", r.ret);
        }
        outcome("allow", r, r.ok() && check, note)
    }

    /// The call failed with `want`, an errno only the kernel gives for the argument it got
    /// (never the filter's ENOSYS or EPERM).
    fn kernel_errno(r: Ret, want: i32, note: impl Into<String>) -> Outcome {
        let ok = r.ret == -1 && r.errno == want && want != ENOSYS && want != EPERM;
        outcome("allow", r, ok, note)
    }

    /// A child exercise: the child exits 0 when the call worked, or with the errno it got.
    fn child_works(ended: Ended, want: Ended, note: impl Into<String>) -> Outcome {
        let (ret, errno, signal) = match ended {
            Ended::Exited(code) => (i64::from(code), 0, 0),
            Ended::Signaled(sig) => (-1, 0, sig),
            Ended::Hung | Ended::ForkFailed(_) => (-1, 0, 0),
        };
        let mut note = note.into();
        if ended != want {
            note = format!("child ended {ended:?}, wanted {want:?}: {note}");
        }
        Outcome {
            expected: "allow",
            label: String::new(),
            args: None,
            ret,
            errno,
            signal,
            ok: ended == want,
            note,
        }
    }

    /// Exit code for a child: 0 when `cond`, else the errno (or 200 when there is none).
    fn code(r: Ret, cond: bool) -> i32 {
        if r.ok() && cond {
            0
        } else if r.errno != 0 {
            r.errno
        } else {
            200
        }
    }

    /// A call with arguments the filter looks at; `expected` says whether they satisfy the
    /// allowlist's condition.
    fn with_args(mut o: Outcome, label: &str, args: &[usize]) -> Outcome {
        let mut all = [0usize; 6];
        all[..args.len()].copy_from_slice(args);
        o.args = Some(all);
        o.label = label.to_owned();
        o
    }

    /// A call whose arguments break the allowlist's condition: it must fail like a denied one.
    fn refused(nr: c_long, label: &str, args: &[usize]) -> Outcome {
        let r = unsafe { sc(nr, args) };
        let ok = r.ret == -1 && (r.errno == ENOSYS || r.errno == EPERM);
        let note = if r.ret >= 0 {
            "the kernel ran it: the filter let it through".to_owned()
        } else {
            String::new()
        };
        with_args(outcome("deny", r, ok, note), label, args)
    }

    /// Shared state of one sweep: a work directory in /tmp with a data file, and a page shared
    /// with forked children.
    struct Ctx {
        n: u32,
        data: CString,
        shared: Map,
    }

    impl Ctx {
        fn new() -> Result<Self, FnError> {
            let fail = |e: std::io::Error| FnError::new("SweepSetup", format!("{DIR}: {e}"));
            let _ = std::fs::remove_dir_all(DIR);
            std::fs::create_dir_all(DIR).map_err(fail)?;
            std::fs::write(format!("{DIR}/data"), DATA).map_err(fail)?;
            let shared = Map::new(4096, MAP_SHARED | MAP_ANONYMOUS, -1);
            if shared.addr == 0 {
                return Err(FnError::new("SweepSetup", "mmap of the shared page failed"));
            }
            Ok(Self {
                n: 0,
                data: CString::new(format!("{DIR}/data")).unwrap_or_default(),
                shared,
            })
        }

        /// A path in the work directory that does not exist yet.
        fn fresh(&mut self, stem: &str) -> CString {
            self.n += 1;
            CString::new(format!("{DIR}/{stem}{}", self.n)).unwrap_or_default()
        }

        /// A fresh copy of the data file, opened read-write.
        fn copy(&mut self) -> (CString, Fd) {
            let path = self.fresh("copy");
            let _ = std::fs::write(path.to_str().unwrap_or_default(), DATA);
            let fd = open_path(&path, O_RDWR);
            (path, fd)
        }

        fn dir_fd(&self) -> Fd {
            let dir = CString::new(DIR).unwrap_or_default();
            open_path(&dir, O_RDONLY | O_DIRECTORY)
        }

        /// Slot `i` of the page shared with children.
        fn slot(&self, i: usize) -> &AtomicI64 {
            assert!(i < 512);
            unsafe { &*((self.shared.addr + i * 8) as *const AtomicI64) }
        }
    }

    fn text(buf: &[u8]) -> &str {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        std::str::from_utf8(&buf[..end]).unwrap_or("?")
    }

    type Exercise = fn(&mut Ctx) -> Outcome;

    // ---------------------------------------------------------------- memory

    fn x_brk(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_brk, &[0]) };
        works(r, r.ret > 0, format!("program break at {:#x}", r.ret))
    }

    fn x_mmap(_: &mut Ctx) -> Outcome {
        let r = unsafe {
            sc(
                SYS_mmap,
                &[
                    0,
                    4096,
                    a(PROT_READ | PROT_WRITE),
                    a(MAP_PRIVATE | MAP_ANONYMOUS),
                    a(-1),
                    0,
                ],
            )
        };
        let mut ok = false;
        if r.ok() {
            let map = Map {
                addr: u(r.ret.unsigned_abs()),
                len: 4096,
            };
            map.set(100, 0x5a);
            ok = map.byte(100) == 0x5a;
        }
        works(r, ok, "an anonymous page, written and read back")
    }

    fn x_munmap(_: &mut Ctx) -> Outcome {
        let mut map = Map::anon(4096);
        let r = unsafe { sc(SYS_munmap, &[map.addr, 4096]) };
        let mut vec = [0u8; 1];
        let gone = unsafe { mincore(map.addr as *mut c_void, 4096, vec.as_mut_ptr()) } == -1
            && errno() == ENOMEM;
        if r.ok() {
            map.addr = 0;
        }
        works(r, gone, "mincore then says ENOMEM: the page is unmapped")
    }

    fn x_mprotect(_: &mut Ctx) -> Outcome {
        let map = Map::anon(4096);
        let r = unsafe { sc(SYS_mprotect, &[map.addr, 4096, a(PROT_READ)]) };
        works(r, true, "page made read-only")
    }

    fn x_mremap(_: &mut Ctx) -> Outcome {
        let mut map = Map::anon(4096);
        map.set(7, 0x42);
        let r = unsafe { sc(SYS_mremap, &[map.addr, 4096, 8192, a(MREMAP_MAYMOVE), 0]) };
        let mut ok = false;
        if r.ok() {
            map.addr = u(r.ret.unsigned_abs());
            map.len = 8192;
            ok = map.byte(7) == 0x42;
        }
        works(r, ok, "grown to two pages, contents kept")
    }

    fn x_madvise(_: &mut Ctx) -> Outcome {
        let map = Map::anon(4096);
        map.set(0, 9);
        let r = unsafe { sc(SYS_madvise, &[map.addr, 4096, a(MADV_DONTNEED)]) };
        works(
            r,
            map.byte(0) == 0,
            "MADV_DONTNEED: the page reads zero again",
        )
    }

    fn x_msync(_: &mut Ctx) -> Outcome {
        let fd = Fd(unsafe { memfd_create(c"sweep-msync".as_ptr(), MFD_CLOEXEC) });
        unsafe { ftruncate(fd.0, 4096) };
        let map = Map::new(4096, MAP_SHARED, fd.0);
        map.set(0, 1);
        let r = unsafe { sc(SYS_msync, &[map.addr, 4096, a(MS_SYNC)]) };
        works(r, map.addr != 0, "MS_SYNC on a shared memfd mapping")
    }

    fn x_mincore(_: &mut Ctx) -> Outcome {
        let map = Map::anon(4096);
        map.set(0, 1);
        let mut vec = [0u8; 1];
        let r = unsafe { sc(SYS_mincore, &[map.addr, 4096, m(&mut vec)]) };
        works(r, vec[0] & 1 == 1, "a touched page is resident")
    }

    fn x_membarrier(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_membarrier, &[0, 0, 0]) };
        works(r, r.ret >= 0, format!("MEMBARRIER_CMD_QUERY: {:#x}", r.ret))
    }

    // ---------------------------------------------------------------- files

    fn x_read(_: &mut Ctx) -> Outcome {
        let (rd, wr) = pipe();
        put(&wr, b"x");
        let mut buf = [0u8; 4];
        let r = unsafe { sc(SYS_read, &[rd.u(), m(&mut buf), 4]) };
        works(
            r,
            r.ret == 1 && buf[0] == b'x',
            "the byte written to a pipe",
        )
    }

    fn x_write(_: &mut Ctx) -> Outcome {
        let (rd, wr) = pipe();
        let r = unsafe { sc(SYS_write, &[wr.u(), s(&CString::from(c"w")), 1]) };
        works(r, get(&rd, 4) == b"w", "into a pipe, read back")
    }

    fn x_readv(_: &mut Ctx) -> Outcome {
        let (rd, wr) = pipe();
        put(&wr, b"abcd");
        let (mut b1, mut b2) = ([0u8; 2], [0u8; 2]);
        let iov = [
            iovec {
                iov_base: b1.as_mut_ptr().cast(),
                iov_len: 2,
            },
            iovec {
                iov_base: b2.as_mut_ptr().cast(),
                iov_len: 2,
            },
        ];
        let r = unsafe { sc(SYS_readv, &[rd.u(), p(&iov), 2]) };
        works(r, &b1 == b"ab" && &b2 == b"cd", "two buffers from a pipe")
    }

    fn x_writev(_: &mut Ctx) -> Outcome {
        let (rd, wr) = pipe();
        let (b1, b2) = (*b"ab", *b"cd");
        let iov = [
            iovec {
                iov_base: b1.as_ptr() as *mut c_void,
                iov_len: 2,
            },
            iovec {
                iov_base: b2.as_ptr() as *mut c_void,
                iov_len: 2,
            },
        ];
        let r = unsafe { sc(SYS_writev, &[wr.u(), p(&iov), 2]) };
        works(r, get(&rd, 8) == b"abcd", "two buffers into a pipe")
    }

    fn x_pread64(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let mut buf = [0u8; 5];
        let r = unsafe { sc(SYS_pread64, &[fd.u(), m(&mut buf), 5, 7]) };
        works(r, &buf == b"sweep", "5 bytes at offset 7 of a file")
    }

    fn x_pwrite64(ctx: &mut Ctx) -> Outcome {
        let (path, fd) = ctx.copy();
        let r = unsafe { sc(SYS_pwrite64, &[fd.u(), s(&CString::from(c"SWEEP")), 5, 7]) };
        let now = std::fs::read(path.to_str().unwrap_or_default()).unwrap_or_default();
        works(r, now == b"hearth SWEEP data\n", "5 bytes at offset 7")
    }

    fn x_preadv(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let mut buf = [0u8; 4];
        let iov = iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 4,
        };
        let r = unsafe { sc(SYS_preadv, &[fd.u(), p(&iov), 1, 13, 0]) };
        works(r, &buf == b"data", "4 bytes at offset 13")
    }

    fn x_pwritev(ctx: &mut Ctx) -> Outcome {
        let (path, fd) = ctx.copy();
        let buf = *b"DATA";
        let iov = iovec {
            iov_base: buf.as_ptr() as *mut c_void,
            iov_len: 4,
        };
        let r = unsafe { sc(SYS_pwritev, &[fd.u(), p(&iov), 1, 13, 0]) };
        let now = std::fs::read(path.to_str().unwrap_or_default()).unwrap_or_default();
        works(r, now == b"hearth sweep DATA\n", "4 bytes at offset 13")
    }

    fn x_preadv2(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let mut buf = [0u8; 6];
        let iov = iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 6,
        };
        let r = unsafe { sc(SYS_preadv2, &[fd.u(), p(&iov), 1, 0, 0, 0]) };
        works(r, &buf == b"hearth", "6 bytes at offset 0, flags 0")
    }

    fn x_pwritev2(ctx: &mut Ctx) -> Outcome {
        let (path, fd) = ctx.copy();
        let buf = *b"HEARTH";
        let iov = iovec {
            iov_base: buf.as_ptr() as *mut c_void,
            iov_len: 6,
        };
        let r = unsafe { sc(SYS_pwritev2, &[fd.u(), p(&iov), 1, 0, 0, 0]) };
        let now = std::fs::read(path.to_str().unwrap_or_default()).unwrap_or_default();
        works(
            r,
            now == b"HEARTH sweep data\n",
            "6 bytes at offset 0, flags 0",
        )
    }

    fn x_open(ctx: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_open, &[s(&ctx.data), a(O_RDONLY | O_CLOEXEC)]) };
        let fd = Fd(fd_of(r));
        works(r, get(&fd, 64) == DATA, "the data file, read back")
    }

    fn x_openat(ctx: &mut Ctx) -> Outcome {
        let dir = ctx.dir_fd();
        let name = CString::from(c"data");
        let r = unsafe { sc(SYS_openat, &[dir.u(), s(&name), a(O_RDONLY | O_CLOEXEC)]) };
        let fd = Fd(fd_of(r));
        works(
            r,
            get(&fd, 64) == DATA,
            "data relative to the work directory",
        )
    }

    fn x_close(ctx: &mut Ctx) -> Outcome {
        let mut fd = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_close, &[fd.u()]) };
        let gone = unsafe { fcntl(fd.0, F_GETFD) } == -1 && errno() == EBADF;
        if r.ok() {
            fd.0 = -1;
        }
        works(r, gone, "the fd is EBADF afterwards")
    }

    fn x_close_range(ctx: &mut Ctx) -> Outcome {
        let mut fd = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_close_range, &[fd.u(), fd.u(), 0]) };
        let gone = unsafe { fcntl(fd.0, F_GETFD) } == -1 && errno() == EBADF;
        if r.ok() {
            fd.0 = -1;
        }
        works(r, gone, "the fd is EBADF afterwards")
    }

    fn x_lseek(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_lseek, &[fd.u(), 7, a(SEEK_SET)]) };
        works(
            r,
            r.ret == 7 && get(&fd, 5) == b"sweep",
            "then read from there",
        )
    }

    fn x_stat(ctx: &mut Ctx) -> Outcome {
        let mut st: stat = zeroed();
        let r = unsafe { sc(SYS_stat, &[s(&ctx.data), m(&mut st)]) };
        works(r, st.st_size == 18, "size of the data file")
    }

    fn x_fstat(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let mut st: stat = zeroed();
        let r = unsafe { sc(SYS_fstat, &[fd.u(), m(&mut st)]) };
        works(r, st.st_size == 18, "size of the data file")
    }

    fn x_lstat(ctx: &mut Ctx) -> Outcome {
        let link = ctx.fresh("lstat");
        let _ = std::os::unix::fs::symlink(DIR, link.to_str().unwrap_or_default());
        let mut st: stat = zeroed();
        let r = unsafe { sc(SYS_lstat, &[s(&link), m(&mut st)]) };
        works(r, st.st_mode & S_IFMT == S_IFLNK, "a symlink is a symlink")
    }

    fn x_newfstatat(ctx: &mut Ctx) -> Outcome {
        let dir = ctx.dir_fd();
        let mut st: stat = zeroed();
        let name = CString::from(c"data");
        let r = unsafe { sc(SYS_newfstatat, &[dir.u(), s(&name), m(&mut st), 0]) };
        works(r, st.st_size == 18, "size of the data file")
    }

    fn x_statx(ctx: &mut Ctx) -> Outcome {
        let mut stx: statx = zeroed();
        let r = unsafe {
            sc(
                SYS_statx,
                &[a(AT_FDCWD), s(&ctx.data), 0, a(STATX_SIZE), m(&mut stx)],
            )
        };
        works(r, stx.stx_size == 18, "size of the data file")
    }

    fn x_statfs(_: &mut Ctx) -> Outcome {
        let mut st: statfs = zeroed();
        let tmp = CString::from(c"/tmp");
        let r = unsafe { sc(SYS_statfs, &[s(&tmp), m(&mut st)]) };
        works(r, st.f_type == TMPFS_MAGIC, "/tmp is a tmpfs")
    }

    fn x_fstatfs(_: &mut Ctx) -> Outcome {
        let tmp = CString::from(c"/tmp");
        let fd = open_path(&tmp, O_RDONLY | O_DIRECTORY);
        let mut st: statfs = zeroed();
        let r = unsafe { sc(SYS_fstatfs, &[fd.u(), m(&mut st)]) };
        works(r, st.f_type == TMPFS_MAGIC, "/tmp is a tmpfs")
    }

    fn x_access(ctx: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_access, &[s(&ctx.data), a(R_OK | W_OK)]) };
        works(r, true, "the data file is readable and writable")
    }

    fn x_faccessat(ctx: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_faccessat, &[a(AT_FDCWD), s(&ctx.data), a(R_OK)]) };
        works(r, true, "the data file is readable")
    }

    fn x_faccessat2(ctx: &mut Ctx) -> Outcome {
        let r = unsafe {
            sc(
                SYS_faccessat2,
                &[a(AT_FDCWD), s(&ctx.data), a(R_OK), a(AT_EACCESS)],
            )
        };
        works(r, true, "the data file is readable (AT_EACCESS)")
    }

    fn x_readlink(ctx: &mut Ctx) -> Outcome {
        let link = ctx.fresh("link");
        let _ = std::os::unix::fs::symlink("target-of-link", link.to_str().unwrap_or_default());
        let mut buf = [0u8; 64];
        let r = unsafe { sc(SYS_readlink, &[s(&link), m(&mut buf), 64]) };
        works(r, buf.starts_with(b"target-of-link"), "a symlink's target")
    }

    fn x_readlinkat(ctx: &mut Ctx) -> Outcome {
        let link = ctx.fresh("link");
        let _ = std::os::unix::fs::symlink("target-of-link", link.to_str().unwrap_or_default());
        let mut buf = [0u8; 64];
        let r = unsafe { sc(SYS_readlinkat, &[a(AT_FDCWD), s(&link), m(&mut buf), 64]) };
        works(r, buf.starts_with(b"target-of-link"), "a symlink's target")
    }

    fn x_getdents64(ctx: &mut Ctx) -> Outcome {
        let dir = ctx.dir_fd();
        let mut buf = [0u8; 4096];
        let r = unsafe { sc(SYS_getdents64, &[dir.u(), m(&mut buf), 4096]) };
        let listed = buf.windows(5).any(|w| w == b"data\0");
        works(r, listed, "lists the data file")
    }

    fn x_getcwd(_: &mut Ctx) -> Outcome {
        let mut buf = [0u8; 256];
        let r = unsafe { sc(SYS_getcwd, &[m(&mut buf), 256]) };
        works(r, buf[0] == b'/', format!("cwd {}", text(&buf)))
    }

    fn cwd() -> CString {
        let mut buf = [0u8; 256];
        unsafe { getcwd(buf.as_mut_ptr().cast(), 256) };
        CString::new(text(&buf)).unwrap_or_default()
    }

    fn x_chdir(_: &mut Ctx) -> Outcome {
        let old = cwd();
        let dir = CString::new(DIR).unwrap_or_default();
        let r = unsafe { sc(SYS_chdir, &[s(&dir)]) };
        let now = cwd();
        unsafe { chdir(old.as_ptr()) };
        works(r, now == dir, "cwd is the work directory, then restored")
    }

    fn x_fchdir(ctx: &mut Ctx) -> Outcome {
        let old = cwd();
        let dir = ctx.dir_fd();
        let r = unsafe { sc(SYS_fchdir, &[dir.u()]) };
        let now = cwd();
        unsafe { chdir(old.as_ptr()) };
        works(r, now.as_bytes() == DIR.as_bytes(), "then restored")
    }

    fn exists(path: &CString) -> bool {
        std::fs::symlink_metadata(path.to_str().unwrap_or_default()).is_ok()
    }

    fn x_mkdir(ctx: &mut Ctx) -> Outcome {
        let path = ctx.fresh("dir");
        let r = unsafe { sc(SYS_mkdir, &[s(&path), 0o755]) };
        works(r, exists(&path), "a directory in /tmp")
    }

    fn x_mkdirat(ctx: &mut Ctx) -> Outcome {
        let path = ctx.fresh("dir");
        let r = unsafe { sc(SYS_mkdirat, &[a(AT_FDCWD), s(&path), 0o755]) };
        works(r, exists(&path), "a directory in /tmp")
    }

    fn x_rmdir(ctx: &mut Ctx) -> Outcome {
        let path = ctx.fresh("dir");
        unsafe { mkdir(path.as_ptr(), 0o755) };
        let r = unsafe { sc(SYS_rmdir, &[s(&path)]) };
        works(r, !exists(&path), "the directory is gone")
    }

    fn x_unlink(ctx: &mut Ctx) -> Outcome {
        let (path, _fd) = ctx.copy();
        let r = unsafe { sc(SYS_unlink, &[s(&path)]) };
        works(r, !exists(&path), "the file is gone")
    }

    fn x_unlinkat(ctx: &mut Ctx) -> Outcome {
        let path = ctx.fresh("dir");
        unsafe { mkdir(path.as_ptr(), 0o755) };
        let r = unsafe { sc(SYS_unlinkat, &[a(AT_FDCWD), s(&path), a(AT_REMOVEDIR)]) };
        works(r, !exists(&path), "AT_REMOVEDIR: the directory is gone")
    }

    fn x_rename(ctx: &mut Ctx) -> Outcome {
        let (from, _fd) = ctx.copy();
        let to = ctx.fresh("renamed");
        let r = unsafe { sc(SYS_rename, &[s(&from), s(&to)]) };
        works(r, exists(&to) && !exists(&from), "moved within /tmp")
    }

    fn x_renameat(ctx: &mut Ctx) -> Outcome {
        let (from, _fd) = ctx.copy();
        let to = ctx.fresh("renamed");
        let r = unsafe { sc(SYS_renameat, &[a(AT_FDCWD), s(&from), a(AT_FDCWD), s(&to)]) };
        works(r, exists(&to) && !exists(&from), "moved within /tmp")
    }

    fn x_renameat2(ctx: &mut Ctx) -> Outcome {
        let (from, _fd) = ctx.copy();
        let to = ctx.fresh("renamed");
        let r = unsafe {
            sc(
                SYS_renameat2,
                &[
                    a(AT_FDCWD),
                    s(&from),
                    a(AT_FDCWD),
                    s(&to),
                    a(RENAME_NOREPLACE),
                ],
            )
        };
        works(
            r,
            exists(&to) && !exists(&from),
            "moved within /tmp, RENAME_NOREPLACE",
        )
    }

    fn nlink(path: &CString) -> u64 {
        let mut st: stat = zeroed();
        unsafe { stat(path.as_ptr(), &mut st) };
        st.st_nlink
    }

    fn x_link(ctx: &mut Ctx) -> Outcome {
        let (from, _fd) = ctx.copy();
        let to = ctx.fresh("hard");
        let r = unsafe { sc(SYS_link, &[s(&from), s(&to)]) };
        works(r, nlink(&from) == 2, "two links to the file")
    }

    fn x_linkat(ctx: &mut Ctx) -> Outcome {
        let (from, _fd) = ctx.copy();
        let to = ctx.fresh("hard");
        let r = unsafe { sc(SYS_linkat, &[a(AT_FDCWD), s(&from), a(AT_FDCWD), s(&to), 0]) };
        works(r, nlink(&from) == 2, "two links to the file")
    }

    fn x_symlink(ctx: &mut Ctx) -> Outcome {
        let to = ctx.fresh("sym");
        let r = unsafe { sc(SYS_symlink, &[s(&ctx.data), s(&to)]) };
        let target = std::fs::read_link(to.to_str().unwrap_or_default()).unwrap_or_default();
        works(
            r,
            target.as_os_str().as_encoded_bytes() == ctx.data.as_bytes(),
            "a symlink to the data file",
        )
    }

    fn x_symlinkat(ctx: &mut Ctx) -> Outcome {
        let to = ctx.fresh("sym");
        let r = unsafe { sc(SYS_symlinkat, &[s(&ctx.data), a(AT_FDCWD), s(&to)]) };
        let target = std::fs::read_link(to.to_str().unwrap_or_default()).unwrap_or_default();
        works(
            r,
            target.as_os_str().as_encoded_bytes() == ctx.data.as_bytes(),
            "a symlink to the data file",
        )
    }

    fn mode(path: &CString) -> u32 {
        let mut st: stat = zeroed();
        unsafe { stat(path.as_ptr(), &mut st) };
        st.st_mode & 0o7777
    }

    fn x_chmod(ctx: &mut Ctx) -> Outcome {
        let (path, _fd) = ctx.copy();
        let r = unsafe { sc(SYS_chmod, &[s(&path), 0o600]) };
        works(r, mode(&path) == 0o600, "mode 0600")
    }

    fn x_fchmod(ctx: &mut Ctx) -> Outcome {
        let (path, fd) = ctx.copy();
        let r = unsafe { sc(SYS_fchmod, &[fd.u(), 0o640]) };
        works(r, mode(&path) == 0o640, "mode 0640")
    }

    fn x_fchmodat(ctx: &mut Ctx) -> Outcome {
        let (path, _fd) = ctx.copy();
        let r = unsafe { sc(SYS_fchmodat, &[a(AT_FDCWD), s(&path), 0o604]) };
        works(r, mode(&path) == 0o604, "mode 0604")
    }

    fn size(path: &CString) -> i64 {
        let mut st: stat = zeroed();
        unsafe { stat(path.as_ptr(), &mut st) };
        st.st_size
    }

    fn x_truncate(ctx: &mut Ctx) -> Outcome {
        let (path, _fd) = ctx.copy();
        let r = unsafe { sc(SYS_truncate, &[s(&path), 6]) };
        works(r, size(&path) == 6, "cut to 6 bytes")
    }

    fn x_ftruncate(ctx: &mut Ctx) -> Outcome {
        let (path, fd) = ctx.copy();
        let r = unsafe { sc(SYS_ftruncate, &[fd.u(), 100]) };
        works(r, size(&path) == 100, "grown to 100 bytes")
    }

    fn x_fallocate(ctx: &mut Ctx) -> Outcome {
        let (path, fd) = ctx.copy();
        let r = unsafe { sc(SYS_fallocate, &[fd.u(), 0, 0, 8192]) };
        works(r, size(&path) == 8192, "8 KiB allocated")
    }

    fn x_fsync(ctx: &mut Ctx) -> Outcome {
        let (_path, fd) = ctx.copy();
        let r = unsafe { sc(SYS_fsync, &[fd.u()]) };
        works(r, true, "a /tmp file")
    }

    fn x_fdatasync(ctx: &mut Ctx) -> Outcome {
        let (_path, fd) = ctx.copy();
        let r = unsafe { sc(SYS_fdatasync, &[fd.u()]) };
        works(r, true, "a /tmp file")
    }

    fn x_flock(ctx: &mut Ctx) -> Outcome {
        let one = open_path(&ctx.data, O_RDONLY);
        let two = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_flock, &[one.u(), a(LOCK_EX)]) };
        let blocked = unsafe { flock(two.0, LOCK_EX | LOCK_NB) } == -1 && errno() == EWOULDBLOCK;
        works(
            r,
            blocked,
            "a second open file description cannot take the lock",
        )
    }

    fn x_fcntl(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_fcntl, &[fd.u(), a(F_GETFD)]) };
        works(
            r,
            r.ret & i64::from(FD_CLOEXEC) != 0,
            "F_GETFD shows FD_CLOEXEC",
        )
    }

    fn same_file(a: i32, b: i32) -> bool {
        let (mut x, mut y): (stat, stat) = (zeroed(), zeroed());
        unsafe { fstat(a, &mut x) };
        unsafe { fstat(b, &mut y) };
        x.st_ino == y.st_ino && x.st_dev == y.st_dev
    }

    fn x_dup(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_dup, &[fd.u()]) };
        let new = Fd(fd_of(r));
        works(r, same_file(fd.0, new.0), "a second fd for the file")
    }

    fn x_dup2(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_dup2, &[fd.u(), 900]) };
        let new = Fd(fd_of(r));
        works(r, r.ret == 900 && same_file(fd.0, new.0), "onto fd 900")
    }

    fn x_dup3(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let r = unsafe { sc(SYS_dup3, &[fd.u(), 901, a(O_CLOEXEC)]) };
        let new = Fd(fd_of(r));
        works(
            r,
            r.ret == 901 && same_file(fd.0, new.0),
            "onto fd 901, O_CLOEXEC",
        )
    }

    fn x_pipe(_: &mut Ctx) -> Outcome {
        let mut fds = [-1i32; 2];
        let r = unsafe { sc(SYS_pipe, &[m(&mut fds)]) };
        let (rd, wr) = (Fd(fds[0]), Fd(fds[1]));
        put(&wr, b"p");
        works(r, get(&rd, 2) == b"p", "a byte through it")
    }

    fn x_pipe2(_: &mut Ctx) -> Outcome {
        let mut fds = [-1i32; 2];
        let r = unsafe { sc(SYS_pipe2, &[m(&mut fds), a(O_CLOEXEC)]) };
        let (rd, wr) = (Fd(fds[0]), Fd(fds[1]));
        put(&wr, b"p");
        works(r, get(&rd, 2) == b"p", "a byte through it")
    }

    fn x_utimensat(ctx: &mut Ctx) -> Outcome {
        let (path, _fd) = ctx.copy();
        let times = [
            timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 0,
            },
            timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 0,
            },
        ];
        let r = unsafe { sc(SYS_utimensat, &[a(AT_FDCWD), s(&path), p(&times), 0]) };
        let mut st: stat = zeroed();
        unsafe { stat(path.as_ptr(), &mut st) };
        works(r, st.st_mtime == 1_000_000_000, "mtime set to 2001-09-09")
    }

    fn x_umask(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_umask, &[0o027]) };
        let back = unsafe { umask(mode_t::try_from(r.ret).unwrap_or(0o022)) };
        works(r, back == 0o027, format!("previous mask {:o}", r.ret))
    }

    fn x_sendfile(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let (rd, wr) = pipe();
        let mut off: i64 = 0;
        let r = unsafe { sc(SYS_sendfile, &[wr.u(), fd.u(), m(&mut off), 18]) };
        works(r, get(&rd, 64) == DATA, "the file into a pipe")
    }

    fn x_splice(ctx: &mut Ctx) -> Outcome {
        let fd = open_path(&ctx.data, O_RDONLY);
        let (rd, wr) = pipe();
        let mut off: i64 = 0;
        let r = unsafe { sc(SYS_splice, &[fd.u(), m(&mut off), wr.u(), 0, 18, 0]) };
        works(r, get(&rd, 64) == DATA, "the file into a pipe")
    }

    fn x_tee(_: &mut Ctx) -> Outcome {
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        put(&w1, b"tee!");
        let r = unsafe { sc(SYS_tee, &[r1.u(), w2.u(), 4, 0]) };
        works(
            r,
            get(&r2, 8) == b"tee!" && get(&r1, 8) == b"tee!",
            "both pipes hold the bytes",
        )
    }

    fn x_copy_file_range(ctx: &mut Ctx) -> Outcome {
        let from = open_path(&ctx.data, O_RDONLY);
        let to_path = ctx.fresh("copied");
        let to = open_path(&to_path, O_WRONLY | O_CREAT);
        let r = unsafe { sc(SYS_copy_file_range, &[from.u(), 0, to.u(), 0, 18, 0]) };
        let now = std::fs::read(to_path.to_str().unwrap_or_default()).unwrap_or_default();
        works(r, now == DATA, "the data file copied")
    }

    fn x_memfd_create(_: &mut Ctx) -> Outcome {
        let name = CString::from(c"sweep");
        let r = unsafe { sc(SYS_memfd_create, &[s(&name), a(MFD_CLOEXEC)]) };
        let fd = Fd(fd_of(r));
        put(&fd, b"memfd");
        let mut st: stat = zeroed();
        unsafe { fstat(fd.0, &mut st) };
        works(r, st.st_size == 5, "5 bytes written to it")
    }

    // ------------------------------------------------------------------ ioctl

    fn ioctl_on(fd: &Fd, cmd: u64, arg: usize) -> (Ret, [usize; 3]) {
        let args = [fd.u(), u(cmd), arg];
        (unsafe { sc(SYS_ioctl, &args) }, args)
    }

    /// A terminal ioctl on a pipe: the pipe's ioctl handler does not know it and answers
    /// ENOTTY. (An environment has no terminal, and on its device nodes landlock refuses
    /// ioctl with EACCES before any driver sees it.)
    fn not_a_tty(cmd: u64, label: &str) -> Outcome {
        let (rd, _wr) = pipe();
        let mut buf = [0u8; 64];
        let (r, args) = ioctl_on(&rd, cmd, m(&mut buf));
        with_args(
            kernel_errno(r, ENOTTY, "on a pipe: ENOTTY from the pipe's ioctl handler"),
            label,
            &args,
        )
    }

    fn x_ioctl_tcgets(_: &mut Ctx) -> Outcome {
        not_a_tty(0x5401, "ioctl(TCGETS)")
    }

    fn x_ioctl_tiocgwinsz(_: &mut Ctx) -> Outcome {
        not_a_tty(0x5413, "ioctl(TIOCGWINSZ)")
    }

    fn x_ioctl_fionread(_: &mut Ctx) -> Outcome {
        let (rd, wr) = pipe();
        put(&wr, b"abc");
        let mut n: c_int = 0;
        let (r, args) = ioctl_on(&rd, 0x541b, m(&mut n));
        with_args(
            works(r, n == 3, "3 bytes in a pipe"),
            "ioctl(FIONREAD)",
            &args,
        )
    }

    fn x_ioctl_fionbio(_: &mut Ctx) -> Outcome {
        let (rd, _wr) = pipe();
        let on: c_int = 1;
        let (r, args) = ioctl_on(&rd, 0x5421, p(&on));
        let flags = unsafe { fcntl(rd.0, F_GETFL) };
        with_args(
            works(r, flags & O_NONBLOCK != 0, "O_NONBLOCK is set"),
            "ioctl(FIONBIO)",
            &args,
        )
    }

    fn x_ioctl_fioclex(_: &mut Ctx) -> Outcome {
        let mut fds = [-1; 2];
        unsafe { libc::pipe(fds.as_mut_ptr()) };
        let (rd, _wr) = (Fd(fds[0]), Fd(fds[1]));
        let (r, args) = ioctl_on(&rd, 0x5451, 0);
        let flags = unsafe { fcntl(rd.0, F_GETFD) };
        with_args(
            works(r, flags & FD_CLOEXEC != 0, "FD_CLOEXEC is set"),
            "ioctl(FIOCLEX)",
            &args,
        )
    }

    fn x_ioctl_fionclex(_: &mut Ctx) -> Outcome {
        let (rd, _wr) = pipe();
        let (r, args) = ioctl_on(&rd, 0x5450, 0);
        let flags = unsafe { fcntl(rd.0, F_GETFD) };
        with_args(
            works(r, flags & FD_CLOEXEC == 0, "FD_CLOEXEC is cleared"),
            "ioctl(FIONCLEX)",
            &args,
        )
    }

    fn ioctl_refused(label: &str, cmd: u64, sock: bool) -> Outcome {
        let fd = if sock {
            Fd(unsafe { socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) })
        } else {
            open_path(&CString::from(c"/dev/null"), O_RDWR)
        };
        let mut buf = [0u8; 64];
        refused(SYS_ioctl, label, &[fd.u(), u(cmd), m(&mut buf)])
    }

    fn x_ioctl_tiocsti(_: &mut Ctx) -> Outcome {
        ioctl_refused("ioctl(TIOCSTI)", 0x5412, false)
    }

    fn x_ioctl_tiocsti_high(_: &mut Ctx) -> Outcome {
        ioctl_refused("ioctl(TIOCSTI | 1<<32)", 0x5412 | 1 << 32, false)
    }

    fn x_ioctl_tiocsctty(_: &mut Ctx) -> Outcome {
        ioctl_refused("ioctl(TIOCSCTTY)", 0x540e, false)
    }

    fn x_ioctl_getflags(_: &mut Ctx) -> Outcome {
        ioctl_refused("ioctl(FS_IOC_GETFLAGS)", 0x8008_6601, false)
    }

    fn x_ioctl_siocgifconf(_: &mut Ctx) -> Outcome {
        ioctl_refused("ioctl(SIOCGIFCONF)", 0x8912, true)
    }

    // --------------------------------------------------------- processes, threads

    fn x_clone(_: &mut Ctx) -> Outcome {
        let args = [a(SIGCHLD), 0, 0, 0, 0];
        let r = unsafe { sc(SYS_clone, &args) };
        if r.ret == 0 {
            unsafe { _exit(6) };
        }
        let ended = if r.ret > 0 {
            wait_for(pid_t::try_from(r.ret).unwrap_or(-1), false)
        } else {
            Ended::ForkFailed(r.errno)
        };
        let mut o = child_works(
            ended,
            Ended::Exited(6),
            "fork-like clone: the child exits 6",
        );
        o.ret = r.ret;
        o.errno = r.errno;
        with_args(o, "clone(SIGCHLD)", &args)
    }

    fn x_clone_thread(_: &mut Ctx) -> Outcome {
        // glibc's pthread_create tries clone3 (ENOSYS here) and falls back to clone with
        // CLONE_VM | CLONE_THREAD | ...: the allowlist's comment says threads work.
        let joined = std::thread::Builder::new()
            .spawn(|| unsafe { gettid() })
            .map_err(|e| e.raw_os_error().unwrap_or(0))
            .and_then(|h| h.join().map_err(|_| 0));
        let r = match joined {
            Ok(tid) => Ret {
                ret: i64::from(tid),
                errno: 0,
            },
            Err(e) => Ret { ret: -1, errno: e },
        };
        let mut o = works(
            r,
            r.ret > 1,
            "std::thread::spawn and join (clone3 falls back to clone)",
        );
        o.label = "clone(thread)".into();
        o
    }

    fn clone_refused(label: &str, flags: u64) -> Outcome {
        let args = [u(flags | 17), 0, 0, 0, 0];
        let r = unsafe { sc(SYS_clone, &args) };
        if r.ret == 0 {
            unsafe { _exit(0) };
        }
        if r.ret > 0 {
            wait_for(pid_t::try_from(r.ret).unwrap_or(-1), false);
        }
        let ok = r.ret == -1 && (r.errno == ENOSYS || r.errno == EPERM);
        with_args(
            outcome("deny", r, ok, "namespace flags are refused"),
            label,
            &args,
        )
    }

    fn x_clone_newns(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWNS)", 0x0002_0000)
    }
    fn x_clone_newcgroup(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWCGROUP)", 0x0200_0000)
    }
    fn x_clone_newuts(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWUTS)", 0x0400_0000)
    }
    fn x_clone_newipc(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWIPC)", 0x0800_0000)
    }
    fn x_clone_newuser(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWUSER)", 0x1000_0000)
    }
    fn x_clone_newpid(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWPID)", 0x2000_0000)
    }
    fn x_clone_newnet(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWNET)", 0x4000_0000)
    }
    fn x_clone_newuser_high(_: &mut Ctx) -> Outcome {
        clone_refused("clone(CLONE_NEWUSER | 1<<32)", 0x1000_0000 | 1 << 32)
    }

    fn x_fork(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_fork, &[]) };
        if r.ret == 0 {
            unsafe { _exit(3) };
        }
        let ended = if r.ret > 0 {
            wait_for(pid_t::try_from(r.ret).unwrap_or(-1), false)
        } else {
            Ended::ForkFailed(r.errno)
        };
        let mut o = child_works(ended, Ended::Exited(3), "the child exits 3");
        o.ret = r.ret;
        o.errno = r.errno;
        o
    }

    fn x_vfork(_: &mut Ctx) -> Outcome {
        // The child shares this stack until it exits, so it must not return through Rust code:
        // it calls exit_group(4) in the same instruction sequence.
        let mut ret = SYS_vfork;
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "mov edi, 4",
                "mov eax, 231",
                "syscall",
                "2:",
                inout("rax") ret,
                out("rcx") _,
                out("r11") _,
                out("rdi") _,
            );
        }
        let r = Ret {
            ret,
            errno: if ret < 0 {
                i32::try_from(-ret).unwrap_or(0)
            } else {
                0
            },
        };
        let ended = if ret > 0 {
            wait_for(pid_t::try_from(ret).unwrap_or(-1), false)
        } else {
            Ended::ForkFailed(r.errno)
        };
        let mut o = child_works(
            ended,
            Ended::Exited(4),
            "the child exits 4 (raw syscall, no libc)",
        );
        o.ret = r.ret;
        o.errno = r.errno;
        o
    }

    /// argv and envp for `bootstrap --exit N`, built before a fork.
    struct ExecArgs {
        _strings: [CString; 3],
        argv: [*const c_char; 4],
        envp: [*const c_char; 1],
    }

    fn exec_args(code: &str) -> ExecArgs {
        let strings = [
            CString::from(c"/var/task/bootstrap"),
            CString::from(c"--exit"),
            CString::new(code).unwrap_or_default(),
        ];
        let argv = [
            strings[0].as_ptr(),
            strings[1].as_ptr(),
            strings[2].as_ptr(),
            std::ptr::null(),
        ];
        ExecArgs {
            _strings: strings,
            argv,
            envp: [std::ptr::null()],
        }
    }

    fn x_execve(_: &mut Ctx) -> Outcome {
        let args = exec_args("42");
        let path = CString::from(c"/var/task/bootstrap");
        let ended = in_child(false, || {
            let r = unsafe { sc(SYS_execve, &[s(&path), p(&args.argv), p(&args.envp)]) };
            code(r, false)
        });
        child_works(
            ended,
            Ended::Exited(42),
            "execs bootstrap --exit 42 in a child",
        )
    }

    fn x_execveat(_: &mut Ctx) -> Outcome {
        let args = exec_args("43");
        let task = open_path(&CString::from(c"/var/task"), O_PATH | O_DIRECTORY);
        let name = CString::from(c"bootstrap");
        let ended = in_child(false, || {
            let r = unsafe {
                sc(
                    SYS_execveat,
                    &[task.u(), s(&name), p(&args.argv), p(&args.envp), 0],
                )
            };
            code(r, false)
        });
        child_works(
            ended,
            Ended::Exited(43),
            "execs bootstrap (relative to a /var/task fd) --exit 43 in a child",
        )
    }

    fn x_exit(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            unsafe { sc(SYS_exit, &[11]) };
            99
        });
        child_works(ended, Ended::Exited(11), "a single-threaded child exits 11")
    }

    fn x_exit_group(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            unsafe { sc(SYS_exit_group, &[12]) };
            99
        });
        child_works(ended, Ended::Exited(12), "a child exits 12")
    }

    fn x_wait4(_: &mut Ctx) -> Outcome {
        let pid = unsafe { fork() };
        if pid == 0 {
            unsafe { _exit(5) };
        }
        let mut status: c_int = 0;
        let mut ru: rusage = zeroed();
        let r = unsafe { sc(SYS_wait4, &[a(pid), m(&mut status), 0, m(&mut ru)]) };
        works(
            r,
            r.ret == i64::from(pid) && WIFEXITED(status) && WEXITSTATUS(status) == 5,
            "reaps a child that exited 5",
        )
    }

    fn x_waitid(_: &mut Ctx) -> Outcome {
        let pid = unsafe { fork() };
        if pid == 0 {
            unsafe { _exit(6) };
        }
        let mut info = [0i32; 32];
        let r = unsafe { sc(SYS_waitid, &[a(P_PID), a(pid), m(&mut info), a(WEXITED), 0]) };
        works(
            r,
            info[4] == pid && info[6] == 6,
            "reaps a child that exited 6 (si_pid, si_status)",
        )
    }

    fn x_kill(_: &mut Ctx) -> Outcome {
        let pid = sleeper();
        let r = unsafe { sc(SYS_kill, &[a(pid), a(SIGKILL)]) };
        let ended = wait_for(pid, false);
        works(
            r,
            ended == Ended::Signaled(SIGKILL),
            "SIGKILL to an own child",
        )
    }

    fn x_tkill(_: &mut Ctx) -> Outcome {
        let pid = sleeper();
        let r = unsafe { sc(SYS_tkill, &[a(pid), a(SIGKILL)]) };
        let ended = wait_for(pid, false);
        works(
            r,
            ended == Ended::Signaled(SIGKILL),
            "SIGKILL to an own child's thread",
        )
    }

    fn x_tgkill(_: &mut Ctx) -> Outcome {
        let pid = sleeper();
        let r = unsafe { sc(SYS_tgkill, &[a(pid), a(pid), a(SIGKILL)]) };
        let ended = wait_for(pid, false);
        works(
            r,
            ended == Ended::Signaled(SIGKILL),
            "SIGKILL to an own child's thread",
        )
    }

    fn identity(nr: c_long, what: &str) -> Outcome {
        let r = unsafe { sc(nr, &[]) };
        works(r, r.ret >= 0, format!("{what} {}", r.ret))
    }

    fn x_getpid(_: &mut Ctx) -> Outcome {
        identity(SYS_getpid, "pid (the init of its pid namespace)")
    }
    fn x_getppid(_: &mut Ctx) -> Outcome {
        identity(SYS_getppid, "parent pid (0: outside its pid namespace)")
    }
    fn x_gettid(_: &mut Ctx) -> Outcome {
        identity(SYS_gettid, "tid")
    }
    fn x_getuid(_: &mut Ctx) -> Outcome {
        identity(SYS_getuid, "uid")
    }
    fn x_geteuid(_: &mut Ctx) -> Outcome {
        identity(SYS_geteuid, "euid")
    }
    fn x_getgid(_: &mut Ctx) -> Outcome {
        identity(SYS_getgid, "gid")
    }
    fn x_getegid(_: &mut Ctx) -> Outcome {
        identity(SYS_getegid, "egid")
    }
    fn x_getpgrp(_: &mut Ctx) -> Outcome {
        identity(SYS_getpgrp, "process group")
    }

    fn x_getgroups(_: &mut Ctx) -> Outcome {
        let mut groups = [0u32; 64];
        let r = unsafe { sc(SYS_getgroups, &[64, m(&mut groups)]) };
        works(r, r.ret >= 0, format!("{} supplementary groups", r.ret))
    }

    fn x_getresuid(_: &mut Ctx) -> Outcome {
        let mut ids = [u32::MAX; 3];
        let r = unsafe {
            sc(
                SYS_getresuid,
                &[m(&mut ids[0]), m(&mut ids[1]), m(&mut ids[2])],
            )
        };
        works(r, ids[0] != u32::MAX, format!("{ids:?}"))
    }

    fn x_getresgid(_: &mut Ctx) -> Outcome {
        let mut ids = [u32::MAX; 3];
        let r = unsafe {
            sc(
                SYS_getresgid,
                &[m(&mut ids[0]), m(&mut ids[1]), m(&mut ids[2])],
            )
        };
        works(r, ids[0] != u32::MAX, format!("{ids:?}"))
    }

    fn x_getpgid(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_getpgid, &[0]) };
        works(r, r.ret >= 0, format!("process group {}", r.ret))
    }

    fn x_getsid(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_getsid, &[0]) };
        works(r, r.ret >= 0, format!("session {}", r.ret))
    }

    fn x_setsid(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            let r = unsafe { sc(SYS_setsid, &[]) };
            code(r, r.ret == i64::from(unsafe { getpid() }))
        });
        child_works(ended, Ended::Exited(0), "a child becomes a session leader")
    }

    fn x_setpgid(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            let r = unsafe { sc(SYS_setpgid, &[0, 0]) };
            code(r, unsafe { getpgrp() } == unsafe { getpid() })
        });
        child_works(
            ended,
            Ended::Exited(0),
            "a child leads its own process group",
        )
    }

    fn x_prctl(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_prctl, &[a(PR_GET_NO_NEW_PRIVS), 0, 0, 0, 0]) };
        works(r, r.ret == 1, "PR_GET_NO_NEW_PRIVS is 1")
    }

    fn x_arch_prctl(_: &mut Ctx) -> Outcome {
        let mut fs: u64 = 0;
        let r = unsafe { sc(SYS_arch_prctl, &[0x1003, m(&mut fs)]) };
        works(r, fs != 0, "ARCH_GET_FS: the thread pointer")
    }

    fn x_set_tid_address(ctx: &mut Ctx) -> Outcome {
        let slot = ctx.slot(0);
        slot.store(-1, Ordering::SeqCst);
        let ended = in_child(false, || {
            let mut word: c_int = 0;
            let r = unsafe { sc(SYS_set_tid_address, &[m(&mut word)]) };
            slot.store(r.ret, Ordering::SeqCst);
            code(r, r.ret == i64::from(unsafe { getpid() }))
        });
        let mut o = child_works(ended, Ended::Exited(0), "in a child: returns its tid");
        o.ret = slot.load(Ordering::SeqCst);
        o
    }

    fn x_set_robust_list(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            let mut head = [0usize; 3];
            head[0] = m(&mut head);
            let r = unsafe { sc(SYS_set_robust_list, &[p(&head), 24]) };
            let (mut got, mut len) = (0usize, 0usize);
            unsafe { sc(SYS_get_robust_list, &[0, m(&mut got), m(&mut len)]) };
            code(r, got == p(&head) && len == 24)
        });
        child_works(
            ended,
            Ended::Exited(0),
            "in a child: get_robust_list returns the new head",
        )
    }

    fn x_get_robust_list(_: &mut Ctx) -> Outcome {
        let (mut head, mut len) = (0usize, 0usize);
        let r = unsafe { sc(SYS_get_robust_list, &[0, m(&mut head), m(&mut len)]) };
        works(r, head != 0 && len == 24, "glibc's list head")
    }

    /// struct rseq, 32 bytes, 32-aligned.
    #[repr(C, align(32))]
    struct RseqArea {
        cpu_id_start: u32,
        cpu_id: u32,
        rest: [u64; 3],
    }

    fn x_rseq(ctx: &mut Ctx) -> Outcome {
        let slot = ctx.slot(0);
        slot.store(0, Ordering::SeqCst);
        let ended = in_child(false, || {
            // glibc registered an area for this thread: unregister it first (same address,
            // length and signature), then register our own.
            let size = unsafe { __rseq_size };
            if size > 0 {
                let mut tp: usize = 0;
                unsafe { sc(SYS_arch_prctl, &[0x1003, m(&mut tp)]) };
                let glibc_area = tp.wrapping_add_signed(unsafe { __rseq_offset });
                let len = usize::try_from(size.max(32)).unwrap_or(32);
                let r = unsafe { sc(SYS_rseq, &[glibc_area, len, 1, RSEQ_SIG]) };
                if !r.ok() {
                    return 100 + code(r, false);
                }
            }
            let area = RseqArea {
                cpu_id_start: 0,
                cpu_id: u32::MAX,
                rest: [0; 3],
            };
            let r = unsafe { sc(SYS_rseq, &[p(&area), 32, 0, RSEQ_SIG]) };
            // The kernel fills in cpu_id on the way back to user space.
            let cpu = unsafe { std::ptr::read_volatile(&area.cpu_id) };
            slot.store(i64::from(cpu), Ordering::SeqCst);
            code(r, cpu != u32::MAX)
        });
        let mut o = child_works(
            ended,
            Ended::Exited(0),
            "in a child: glibc's area unregistered, a new one registered; the kernel fills in cpu_id",
        );
        o.ret = slot.load(Ordering::SeqCst);
        o
    }

    fn x_futex(_: &mut Ctx) -> Outcome {
        let word = AtomicI32::new(0);
        let r = unsafe {
            sc(
                SYS_futex,
                &[p(&word), a(FUTEX_WAKE | FUTEX_PRIVATE_FLAG), 1, 0, 0, 0],
            )
        };
        works(r, r.ret == 0, "FUTEX_WAKE with no waiters wakes 0")
    }

    fn x_futex_waitv(_: &mut Ctx) -> Outcome {
        let word = AtomicI32::new(5);
        // struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 reserved }
        let waiter: [u64; 3] = [6, p(&word) as u64, 0x02 | 128];
        let r = unsafe { sc(SYS_futex_waitv, &[p(&waiter), 1, 0, 0, a(CLOCK_MONOTONIC)]) };
        kernel_errno(
            r,
            EAGAIN,
            "the futex no longer holds the expected value: EAGAIN from futex_waitv",
        )
    }

    fn x_sched_yield(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_sched_yield, &[]) };
        works(r, r.ret == 0, "")
    }

    fn x_sched_getaffinity(_: &mut Ctx) -> Outcome {
        let mut mask = [0u64; 16];
        let r = unsafe { sc(SYS_sched_getaffinity, &[0, 128, m(&mut mask)]) };
        works(
            r,
            mask.iter().any(|&w| w != 0),
            format!("mask {:#x}", mask[0]),
        )
    }

    fn x_sched_setaffinity(_: &mut Ctx) -> Outcome {
        let mut mask = [0u64; 16];
        unsafe { sc(SYS_sched_getaffinity, &[0, 128, m(&mut mask)]) };
        let r = unsafe { sc(SYS_sched_setaffinity, &[0, 128, p(&mask)]) };
        works(r, true, "set to the CPUs it already has")
    }

    fn x_sched_getparam(_: &mut Ctx) -> Outcome {
        let mut param = sched_param { sched_priority: -1 };
        let r = unsafe { sc(SYS_sched_getparam, &[0, m(&mut param)]) };
        works(r, param.sched_priority == 0, "priority 0 (SCHED_OTHER)")
    }

    fn x_sched_getscheduler(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_sched_getscheduler, &[0]) };
        works(r, r.ret == i64::from(SCHED_OTHER), "SCHED_OTHER")
    }

    fn x_getpriority(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_getpriority, &[a(PRIO_PROCESS), 0]) };
        works(
            r,
            (1..=40).contains(&r.ret),
            format!("20 - nice = {}", r.ret),
        )
    }

    fn x_setpriority(_: &mut Ctx) -> Outcome {
        let cur = unsafe { sc(SYS_getpriority, &[a(PRIO_PROCESS), 0]) };
        let nice = 20 - cur.ret;
        let r = unsafe { sc(SYS_setpriority, &[a(PRIO_PROCESS), 0, a(nice)]) };
        works(r, true, format!("nice {nice} kept"))
    }

    fn x_getrusage(_: &mut Ctx) -> Outcome {
        let mut ru: rusage = zeroed();
        let r = unsafe { sc(SYS_getrusage, &[a(RUSAGE_SELF), m(&mut ru)]) };
        works(r, ru.ru_maxrss > 0, "maxrss > 0")
    }

    fn x_getrlimit(_: &mut Ctx) -> Outcome {
        let mut lim = rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let r = unsafe { sc(SYS_getrlimit, &[a(RLIMIT_NOFILE), m(&mut lim)]) };
        works(
            r,
            lim.rlim_cur > 0,
            format!("RLIMIT_NOFILE {}", lim.rlim_cur),
        )
    }

    fn x_setrlimit(_: &mut Ctx) -> Outcome {
        let mut lim = rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) };
        let r = unsafe { sc(SYS_setrlimit, &[a(RLIMIT_NOFILE), p(&lim)]) };
        works(r, true, "RLIMIT_NOFILE set to its current value")
    }

    fn x_prlimit64(_: &mut Ctx) -> Outcome {
        let mut old = rlimit {
            rlim_cur: 7,
            rlim_max: 7,
        };
        let r = unsafe { sc(SYS_prlimit64, &[0, a(RLIMIT_CORE), 0, m(&mut old)]) };
        works(r, old.rlim_cur == 0, "RLIMIT_CORE is 0")
    }

    fn x_uname(_: &mut Ctx) -> Outcome {
        let mut un: utsname = zeroed();
        let r = unsafe { sc(SYS_uname, &[m(&mut un)]) };
        let sys: Vec<u8> = un.sysname.iter().map(|&c| c.to_ne_bytes()[0]).collect();
        works(r, text(&sys) == "Linux", "sysname Linux")
    }

    fn x_sysinfo(_: &mut Ctx) -> Outcome {
        let mut info: sysinfo = zeroed();
        let r = unsafe { sc(SYS_sysinfo, &[m(&mut info)]) };
        works(r, info.totalram > 0, "totalram > 0")
    }

    fn x_times(_: &mut Ctx) -> Outcome {
        let mut t: tms = zeroed();
        let r = unsafe { sc(SYS_times, &[m(&mut t)]) };
        works(r, r.ret > 0, "clock ticks since boot")
    }

    fn x_getcpu(_: &mut Ctx) -> Outcome {
        let (mut cpu, mut node) = (u32::MAX, u32::MAX);
        let r = unsafe { sc(SYS_getcpu, &[m(&mut cpu), m(&mut node), 0]) };
        works(r, cpu != u32::MAX, format!("cpu {cpu}"))
    }

    fn x_capget(_: &mut Ctx) -> Outcome {
        let header: [u32; 2] = [0x2008_0522, 0];
        let mut data = [u32::MAX; 6];
        let r = unsafe { sc(SYS_capget, &[p(&header), m(&mut data)]) };
        works(
            r,
            data.iter().all(|&w| w == 0),
            "every capability is dropped",
        )
    }

    // ------------------------------------------------------------ time, signals

    fn x_nanosleep(_: &mut Ctx) -> Outcome {
        let ts = timespec {
            tv_sec: 0,
            tv_nsec: 1000,
        };
        let r = unsafe { sc(SYS_nanosleep, &[p(&ts), 0]) };
        works(r, true, "1 us")
    }

    fn x_clock_nanosleep(_: &mut Ctx) -> Outcome {
        let ts = timespec {
            tv_sec: 0,
            tv_nsec: 1000,
        };
        let r = unsafe { sc(SYS_clock_nanosleep, &[a(CLOCK_MONOTONIC), 0, p(&ts), 0]) };
        works(r, true, "1 us")
    }

    fn x_clock_gettime(_: &mut Ctx) -> Outcome {
        let mut ts = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let r = unsafe { sc(SYS_clock_gettime, &[a(CLOCK_REALTIME), m(&mut ts)]) };
        works(r, ts.tv_sec > 1_600_000_000, format!("{} s", ts.tv_sec))
    }

    fn x_clock_getres(_: &mut Ctx) -> Outcome {
        let mut ts = timespec {
            tv_sec: 9,
            tv_nsec: 0,
        };
        let r = unsafe { sc(SYS_clock_getres, &[a(CLOCK_MONOTONIC), m(&mut ts)]) };
        works(
            r,
            ts.tv_sec == 0 && ts.tv_nsec > 0,
            format!("{} ns", ts.tv_nsec),
        )
    }

    fn x_gettimeofday(_: &mut Ctx) -> Outcome {
        let mut tv = timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let r = unsafe { sc(SYS_gettimeofday, &[m(&mut tv), 0]) };
        works(r, tv.tv_sec > 1_600_000_000, format!("{} s", tv.tv_sec))
    }

    fn x_time(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_time, &[0]) };
        works(r, r.ret > 1_600_000_000, format!("{} s", r.ret))
    }

    fn x_rt_sigaction(_: &mut Ctx) -> Outcome {
        let mut old = [0usize; 4];
        let r = unsafe { sc(SYS_rt_sigaction, &[a(SIGUSR1), 0, m(&mut old), 8]) };
        works(
            r,
            old[0] == on_signal as *const () as usize,
            "SIGUSR1's handler is the sweep's",
        )
    }

    fn x_rt_sigprocmask(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            let set = sigbit(SIGUSR2);
            let mut now: u64 = 0;
            let r = unsafe { sc(SYS_rt_sigprocmask, &[a(SIG_BLOCK), p(&set), 0, 8]) };
            unsafe { sc(SYS_rt_sigprocmask, &[a(SIG_BLOCK), 0, m(&mut now), 8]) };
            code(r, now & set != 0)
        });
        child_works(
            ended,
            Ended::Exited(0),
            "in a child: SIGUSR2 blocked, read back",
        )
    }

    fn x_rt_sigreturn(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            SEEN.store(0, Ordering::SeqCst);
            // The handler returns through glibc's restorer, which calls rt_sigreturn: if that
            // failed, the restorer would run off into whatever follows it and crash.
            unsafe { sc(SYS_tgkill, &[a(getpid()), a(getpid()), a(SIGUSR1)]) };
            if SEEN.load(Ordering::SeqCst) == SIGUSR1 {
                0
            } else {
                200
            }
        });
        child_works(
            ended,
            Ended::Exited(0),
            "in a child: returns from a SIGUSR1 handler through glibc's restorer",
        )
    }

    fn x_rt_sigsuspend(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            SEEN.store(0, Ordering::SeqCst);
            let set = sigbit(SIGUSR1);
            unsafe { sc(SYS_rt_sigprocmask, &[a(SIG_BLOCK), p(&set), 0, 8]) };
            unsafe { sc(SYS_tgkill, &[a(getpid()), a(getpid()), a(SIGUSR1)]) };
            let empty: u64 = 0;
            let r = unsafe { sc(SYS_rt_sigsuspend, &[p(&empty), 8]) };
            if r.errno == EINTR && SEEN.load(Ordering::SeqCst) == SIGUSR1 {
                0
            } else {
                code(r, false)
            }
        });
        child_works(
            ended,
            Ended::Exited(0),
            "in a child: a pending SIGUSR1 is delivered, EINTR",
        )
    }

    fn pending_usr2() {
        let set = sigbit(SIGUSR2);
        unsafe { sc(SYS_rt_sigprocmask, &[a(SIG_BLOCK), p(&set), 0, 8]) };
        unsafe { sc(SYS_tgkill, &[a(getpid()), a(getpid()), a(SIGUSR2)]) };
    }

    fn x_rt_sigpending(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            pending_usr2();
            let mut set: u64 = 0;
            let r = unsafe { sc(SYS_rt_sigpending, &[m(&mut set), 8]) };
            code(r, set & sigbit(SIGUSR2) != 0)
        });
        child_works(
            ended,
            Ended::Exited(0),
            "in a child: a blocked SIGUSR2 is pending",
        )
    }

    fn x_rt_sigtimedwait(_: &mut Ctx) -> Outcome {
        let ended = in_child(false, || {
            pending_usr2();
            let set = sigbit(SIGUSR2);
            let mut info = [0i32; 32];
            let zero = timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let r = unsafe { sc(SYS_rt_sigtimedwait, &[p(&set), m(&mut info), p(&zero), 8]) };
            code(r, r.ret == i64::from(SIGUSR2))
        });
        child_works(
            ended,
            Ended::Exited(0),
            "in a child: takes a pending SIGUSR2",
        )
    }

    fn queued(nr: c_long) -> Ended {
        in_child(false, || {
            let set = sigbit(SIGUSR2);
            unsafe { sc(SYS_rt_sigprocmask, &[a(SIG_BLOCK), p(&set), 0, 8]) };
            let pid = unsafe { getpid() };
            // siginfo: si_signo, si_errno, si_code = SI_QUEUE
            let mut info = [0i32; 32];
            info[0] = SIGUSR2;
            info[2] = -1;
            let r = if nr == SYS_rt_sigqueueinfo {
                unsafe { sc(nr, &[a(pid), a(SIGUSR2), p(&info)]) }
            } else {
                unsafe { sc(nr, &[a(pid), a(pid), a(SIGUSR2), p(&info)]) }
            };
            let mut got = [0i32; 32];
            let zero = timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let took = unsafe { sc(SYS_rt_sigtimedwait, &[p(&set), m(&mut got), p(&zero), 8]) };
            code(r, took.ret == i64::from(SIGUSR2) && got[2] == -1)
        })
    }

    fn x_rt_sigqueueinfo(_: &mut Ctx) -> Outcome {
        child_works(
            queued(SYS_rt_sigqueueinfo),
            Ended::Exited(0),
            "in a child: queues SIGUSR2 (SI_QUEUE) to itself, sigtimedwait takes it",
        )
    }

    fn x_rt_tgsigqueueinfo(_: &mut Ctx) -> Outcome {
        child_works(
            queued(SYS_rt_tgsigqueueinfo),
            Ended::Exited(0),
            "in a child: queues SIGUSR2 (SI_QUEUE) to its thread, sigtimedwait takes it",
        )
    }

    fn x_sigaltstack(_: &mut Ctx) -> Outcome {
        let mut old: stack_t = zeroed();
        old.ss_flags = -1;
        let r = unsafe { sc(SYS_sigaltstack, &[0, m(&mut old)]) };
        works(r, old.ss_flags != -1, "reads the alternate stack")
    }

    fn x_pause(_: &mut Ctx) -> Outcome {
        let ended = in_child(true, || {
            let r = unsafe { sc(SYS_pause, &[]) };
            if r.errno == EINTR {
                0
            } else {
                code(r, false)
            }
        });
        child_works(
            ended,
            Ended::Exited(0),
            "in a child, woken by SIGUSR1 from the sweep: EINTR",
        )
    }

    fn x_alarm(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_alarm, &[1000]) };
        let left = unsafe { alarm(0) };
        works(
            r,
            (998..=1000).contains(&left),
            format!("{left} s left when cancelled"),
        )
    }

    fn x_setitimer(_: &mut Ctx) -> Outcome {
        let mut t: itimerval = zeroed();
        t.it_value.tv_sec = 1000;
        let r = unsafe { sc(SYS_setitimer, &[a(ITIMER_REAL), p(&t), 0]) };
        let mut now: itimerval = zeroed();
        unsafe { getitimer(ITIMER_REAL, &mut now) };
        unsafe { alarm(0) };
        works(
            r,
            now.it_value.tv_sec > 990,
            "ITIMER_REAL armed, then cancelled",
        )
    }

    fn x_getitimer(_: &mut Ctx) -> Outcome {
        unsafe { alarm(1000) };
        let mut now: itimerval = zeroed();
        let r = unsafe { sc(SYS_getitimer, &[a(ITIMER_REAL), m(&mut now)]) };
        unsafe { alarm(0) };
        works(
            r,
            now.it_value.tv_sec > 990,
            "reads an alarm armed for 1000 s",
        )
    }

    /// A POSIX timer (SIGEV_NONE), created with the raw syscall; deleted on drop.
    struct Timer(i32, Ret);

    impl Timer {
        fn new() -> Self {
            // struct sigevent: sigev_value (8), sigev_signo, sigev_notify = SIGEV_NONE, ...
            let mut sev = [0i32; 16];
            sev[3] = SIGEV_NONE;
            let mut id: i32 = -1;
            let r = unsafe { sc(SYS_timer_create, &[a(CLOCK_MONOTONIC), p(&sev), m(&mut id)]) };
            Self(id, r)
        }

        fn arm(&self) -> Ret {
            let mut t: itimerspec = zeroed();
            t.it_value.tv_sec = 1000;
            unsafe { sc(SYS_timer_settime, &[a(self.0), 0, p(&t), 0]) }
        }

        fn left(&self) -> i64 {
            let mut t: itimerspec = zeroed();
            unsafe { sc(SYS_timer_gettime, &[a(self.0), m(&mut t)]) };
            t.it_value.tv_sec
        }
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            if self.0 >= 0 {
                unsafe { sc(SYS_timer_delete, &[a(self.0)]) };
            }
        }
    }

    fn x_timer_create(_: &mut Ctx) -> Outcome {
        let t = Timer::new();
        t.arm();
        works(t.1, t.left() > 990, "armed for 1000 s, then read back")
    }

    fn x_timer_settime(_: &mut Ctx) -> Outcome {
        let t = Timer::new();
        let r = t.arm();
        works(r, t.left() > 990, "armed for 1000 s")
    }

    fn x_timer_gettime(_: &mut Ctx) -> Outcome {
        let t = Timer::new();
        t.arm();
        let mut cur: itimerspec = zeroed();
        let r = unsafe { sc(SYS_timer_gettime, &[a(t.0), m(&mut cur)]) };
        works(r, cur.it_value.tv_sec > 990, "time left on a 1000 s timer")
    }

    fn x_timer_getoverrun(_: &mut Ctx) -> Outcome {
        let t = Timer::new();
        let r = unsafe { sc(SYS_timer_getoverrun, &[a(t.0)]) };
        works(r, r.ret == 0, "no overruns")
    }

    fn x_timer_delete(_: &mut Ctx) -> Outcome {
        let mut t = Timer::new();
        let r = unsafe { sc(SYS_timer_delete, &[a(t.0)]) };
        let again = unsafe { sc(SYS_timer_getoverrun, &[a(t.0)]) };
        if r.ok() {
            t.0 = -1;
        }
        works(
            r,
            again.errno == EINVAL,
            "the timer id is EINVAL afterwards",
        )
    }

    fn x_signalfd4(_: &mut Ctx) -> Outcome {
        let set = sigbit(SIGUSR2);
        let r = unsafe { sc(SYS_signalfd4, &[a(-1), p(&set), 8, a(SFD_CLOEXEC)]) };
        let fd = Fd(fd_of(r));
        let mut st: stat = zeroed();
        let ok = unsafe { fstat(fd.0, &mut st) } == 0;
        works(r, ok, "a signalfd for SIGUSR2")
    }

    // ---------------------------------------------------------------- event loops

    /// A pipe with one byte in it.
    fn ready_pipe() -> (Fd, Fd) {
        let (rd, wr) = pipe();
        put(&wr, b"r");
        (rd, wr)
    }

    fn x_poll(_: &mut Ctx) -> Outcome {
        let (rd, _wr) = ready_pipe();
        let mut fds = [pollfd {
            fd: rd.0,
            events: POLLIN,
            revents: 0,
        }];
        let r = unsafe { sc(SYS_poll, &[m(&mut fds), 1, 0]) };
        works(
            r,
            r.ret == 1 && fds[0].revents & POLLIN != 0,
            "a readable pipe, timeout 0",
        )
    }

    fn x_ppoll(_: &mut Ctx) -> Outcome {
        let (rd, _wr) = ready_pipe();
        let mut fds = [pollfd {
            fd: rd.0,
            events: POLLIN,
            revents: 0,
        }];
        let zero = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let r = unsafe { sc(SYS_ppoll, &[m(&mut fds), 1, p(&zero), 0, 8]) };
        works(
            r,
            r.ret == 1 && fds[0].revents & POLLIN != 0,
            "a readable pipe, timeout 0",
        )
    }

    fn read_set(fd: i32) -> fd_set {
        let mut set: fd_set = zeroed();
        unsafe { FD_SET(fd, &mut set) };
        set
    }

    fn x_select(_: &mut Ctx) -> Outcome {
        let (rd, _wr) = ready_pipe();
        let mut set = read_set(rd.0);
        let mut tv = timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let r = unsafe { sc(SYS_select, &[a(rd.0 + 1), m(&mut set), 0, 0, m(&mut tv)]) };
        works(r, r.ret == 1, "a readable pipe, timeout 0")
    }

    fn x_pselect6(_: &mut Ctx) -> Outcome {
        let (rd, _wr) = ready_pipe();
        let mut set = read_set(rd.0);
        let zero = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let r = unsafe { sc(SYS_pselect6, &[a(rd.0 + 1), m(&mut set), 0, 0, p(&zero), 0]) };
        works(r, r.ret == 1, "a readable pipe, timeout 0")
    }

    /// An epoll fd watching a readable pipe (token 7).
    fn epoll_ready() -> (Fd, Fd, Fd) {
        let (rd, wr) = ready_pipe();
        let ep = Fd(unsafe { epoll_create1(EPOLL_CLOEXEC) });
        let mut ev = epoll_event {
            events: 0x1, // EPOLLIN
            u64: 7,
        };
        unsafe { epoll_ctl(ep.0, EPOLL_CTL_ADD, rd.0, &mut ev) };
        (ep, rd, wr)
    }

    fn token(events: &[epoll_event; 4]) -> u64 {
        let first = events[0];
        first.u64
    }

    fn x_epoll_create1(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_epoll_create1, &[a(EPOLL_CLOEXEC)]) };
        let ep = Fd(fd_of(r));
        let (rd, _wr) = ready_pipe();
        let mut ev = epoll_event { events: 1, u64: 1 };
        let added = unsafe { epoll_ctl(ep.0, EPOLL_CTL_ADD, rd.0, &mut ev) } == 0;
        works(r, added, "an epoll fd that takes a pipe")
    }

    fn x_epoll_ctl(_: &mut Ctx) -> Outcome {
        let ep = Fd(unsafe { epoll_create1(EPOLL_CLOEXEC) });
        let (rd, _wr) = ready_pipe();
        let ev = epoll_event { events: 1, u64: 9 };
        let r = unsafe { sc(SYS_epoll_ctl, &[ep.u(), a(EPOLL_CTL_ADD), rd.u(), p(&ev)]) };
        let mut events = [epoll_event { events: 0, u64: 0 }; 4];
        let n = unsafe { epoll_wait(ep.0, events.as_mut_ptr(), 4, 0) };
        works(
            r,
            n == 1 && token(&events) == 9,
            "the pipe is then reported ready",
        )
    }

    fn x_epoll_wait(_: &mut Ctx) -> Outcome {
        let (ep, _rd, _wr) = epoll_ready();
        let mut events = [epoll_event { events: 0, u64: 0 }; 4];
        let r = unsafe { sc(SYS_epoll_wait, &[ep.u(), m(&mut events), 4, 0]) };
        works(
            r,
            r.ret == 1 && token(&events) == 7,
            "the readable pipe, timeout 0",
        )
    }

    fn x_epoll_pwait(_: &mut Ctx) -> Outcome {
        let (ep, _rd, _wr) = epoll_ready();
        let mut events = [epoll_event { events: 0, u64: 0 }; 4];
        let r = unsafe { sc(SYS_epoll_pwait, &[ep.u(), m(&mut events), 4, 0, 0, 8]) };
        works(
            r,
            r.ret == 1 && token(&events) == 7,
            "the readable pipe, timeout 0",
        )
    }

    fn x_epoll_pwait2(_: &mut Ctx) -> Outcome {
        let (ep, _rd, _wr) = epoll_ready();
        let mut events = [epoll_event { events: 0, u64: 0 }; 4];
        let zero = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let r = unsafe {
            sc(
                SYS_epoll_pwait2,
                &[ep.u(), m(&mut events), 4, p(&zero), 0, 8],
            )
        };
        works(
            r,
            r.ret == 1 && token(&events) == 7,
            "the readable pipe, timeout 0",
        )
    }

    fn x_eventfd2(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_eventfd2, &[0, a(EFD_CLOEXEC)]) };
        let fd = Fd(fd_of(r));
        put(&fd, &3u64.to_ne_bytes());
        works(
            r,
            get(&fd, 8) == 3u64.to_ne_bytes(),
            "counter 3 written and read",
        )
    }

    fn x_timerfd_create(_: &mut Ctx) -> Outcome {
        let r = unsafe { sc(SYS_timerfd_create, &[a(CLOCK_MONOTONIC), a(TFD_CLOEXEC)]) };
        let fd = Fd(fd_of(r));
        let mut t: itimerspec = zeroed();
        t.it_value.tv_nsec = 1000;
        unsafe { timerfd_settime(fd.0, 0, &t, std::ptr::null_mut()) };
        std::thread::sleep(Duration::from_millis(2));
        works(
            r,
            get(&fd, 8) == 1u64.to_ne_bytes(),
            "a 1 us timer expires once",
        )
    }

    fn x_timerfd_settime(_: &mut Ctx) -> Outcome {
        let fd = Fd(unsafe { timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC) });
        let mut t: itimerspec = zeroed();
        t.it_value.tv_sec = 1000;
        let r = unsafe { sc(SYS_timerfd_settime, &[fd.u(), 0, p(&t), 0]) };
        let mut now: itimerspec = zeroed();
        unsafe { timerfd_gettime(fd.0, &mut now) };
        works(r, now.it_value.tv_sec > 990, "armed for 1000 s")
    }

    fn x_timerfd_gettime(_: &mut Ctx) -> Outcome {
        let fd = Fd(unsafe { timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC) });
        let mut t: itimerspec = zeroed();
        t.it_value.tv_sec = 1000;
        unsafe { timerfd_settime(fd.0, 0, &t, std::ptr::null_mut()) };
        let mut now: itimerspec = zeroed();
        let r = unsafe { sc(SYS_timerfd_gettime, &[fd.u(), m(&mut now)]) };
        works(r, now.it_value.tv_sec > 990, "time left on a 1000 s timer")
    }

    fn x_getrandom(_: &mut Ctx) -> Outcome {
        let mut buf = [0u8; 32];
        let r = unsafe { sc(SYS_getrandom, &[m(&mut buf), 32, 0]) };
        works(
            r,
            r.ret == 32 && buf.iter().any(|&b| b != 0),
            "32 random bytes",
        )
    }

    // ------------------------------------------------------------------- sockets

    fn unix_addr(path: &CString) -> (sockaddr_un, u32) {
        let mut addr: sockaddr_un = zeroed();
        addr.sun_family = sa_family_t::try_from(AF_UNIX).unwrap_or(1);
        for (dst, &src) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
            *dst = c_char::from_ne_bytes([src]);
        }
        let len = std::mem::size_of::<sa_family_t>() + path.as_bytes().len() + 1;
        (addr, u32::try_from(len).unwrap_or(0))
    }

    fn stream() -> Fd {
        Fd(unsafe { socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) })
    }

    /// A listening unix socket in the work directory.
    fn listener(ctx: &mut Ctx) -> (Fd, sockaddr_un, u32) {
        let path = ctx.fresh("sock");
        let (addr, len) = unix_addr(&path);
        let fd = stream();
        unsafe { bind(fd.0, std::ptr::from_ref(&addr).cast(), len) };
        unsafe { listen(fd.0, 8) };
        (fd, addr, len)
    }

    fn connected(addr: &sockaddr_un, len: u32) -> Fd {
        let fd = stream();
        unsafe { connect(fd.0, std::ptr::from_ref(addr).cast(), len) };
        fd
    }

    fn pair(kind: c_int) -> (Fd, Fd) {
        let mut fds = [-1; 2];
        unsafe { socketpair(AF_UNIX, kind | SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
        (Fd(fds[0]), Fd(fds[1]))
    }

    fn socket_allowed(label: &str, family: c_int, kind: c_int) -> Outcome {
        let args = [a(family), a(kind | SOCK_CLOEXEC), 0];
        let r = unsafe { sc(SYS_socket, &args) };
        let _fd = Fd(fd_of(r));
        let o = if r.errno == EAFNOSUPPORT {
            kernel_errno(r, EAFNOSUPPORT, "the kernel does not support the family")
        } else {
            works(r, true, "a socket")
        };
        with_args(o, label, &args)
    }

    fn x_socket_unix(_: &mut Ctx) -> Outcome {
        socket_allowed("socket(AF_UNIX)", AF_UNIX, SOCK_STREAM)
    }
    fn x_socket_inet(_: &mut Ctx) -> Outcome {
        socket_allowed("socket(AF_INET)", AF_INET, SOCK_DGRAM)
    }
    fn x_socket_inet6(_: &mut Ctx) -> Outcome {
        socket_allowed("socket(AF_INET6)", AF_INET6, SOCK_DGRAM)
    }

    fn socket_refused(label: &str, family: u64, kind: c_int, proto: c_int) -> Outcome {
        let o = refused(
            SYS_socket,
            label,
            &[u(family), a(kind | SOCK_CLOEXEC), a(proto)],
        );
        if o.ret >= 0 {
            unsafe { close(i32::try_from(o.ret).unwrap_or(-1)) };
        }
        o
    }

    fn x_socket_netlink(_: &mut Ctx) -> Outcome {
        socket_refused("socket(AF_NETLINK)", 16, SOCK_RAW, 0)
    }
    fn x_socket_packet(_: &mut Ctx) -> Outcome {
        socket_refused("socket(AF_PACKET)", 17, SOCK_RAW, 0x0300)
    }
    fn x_socket_alg(_: &mut Ctx) -> Outcome {
        socket_refused("socket(AF_ALG)", 38, SOCK_SEQPACKET, 0)
    }
    fn x_socket_vsock(_: &mut Ctx) -> Outcome {
        socket_refused("socket(AF_VSOCK)", 40, SOCK_STREAM, 0)
    }
    fn x_socket_unix_high(_: &mut Ctx) -> Outcome {
        socket_refused("socket(AF_UNIX | 1<<32)", 1 | 1 << 32, SOCK_STREAM, 0)
    }

    fn x_socketpair(_: &mut Ctx) -> Outcome {
        let mut fds = [-1i32; 2];
        let args = [a(AF_UNIX), a(SOCK_STREAM | SOCK_CLOEXEC), 0, m(&mut fds)];
        let r = unsafe { sc(SYS_socketpair, &args) };
        let (x, y) = (Fd(fds[0]), Fd(fds[1]));
        put(&x, b"pair");
        let o = works(r, get(&y, 8) == b"pair", "bytes across the pair");
        let mut shown = args;
        shown[3] = 0;
        with_args(o, "socketpair(AF_UNIX)", &shown)
    }

    fn x_socketpair_inet(_: &mut Ctx) -> Outcome {
        let mut fds = [-1i32; 2];
        let o = refused(
            SYS_socketpair,
            "socketpair(AF_INET)",
            &[a(AF_INET), a(SOCK_STREAM | SOCK_CLOEXEC), 0, m(&mut fds)],
        );
        if o.ret >= 0 {
            drop((Fd(fds[0]), Fd(fds[1])));
        }
        let mut o = o;
        if let Some(args) = o.args.as_mut() {
            args[3] = 0;
        }
        o
    }

    fn x_bind(ctx: &mut Ctx) -> Outcome {
        let path = ctx.fresh("sock");
        let (addr, len) = unix_addr(&path);
        let fd = stream();
        let r = unsafe { sc(SYS_bind, &[fd.u(), p(&addr), a(len)]) };
        let mut st: stat = zeroed();
        unsafe { stat(path.as_ptr(), &mut st) };
        works(
            r,
            st.st_mode & S_IFMT == S_IFSOCK,
            "a unix socket file in /tmp",
        )
    }

    fn x_listen(ctx: &mut Ctx) -> Outcome {
        let path = ctx.fresh("sock");
        let (addr, len) = unix_addr(&path);
        let fd = stream();
        unsafe { bind(fd.0, std::ptr::from_ref(&addr).cast(), len) };
        let r = unsafe { sc(SYS_listen, &[fd.u(), 8]) };
        let client = stream();
        let joined = unsafe { connect(client.0, std::ptr::from_ref(&addr).cast(), len) } == 0;
        works(r, joined, "a client can then connect")
    }

    fn x_accept(ctx: &mut Ctx) -> Outcome {
        let (lfd, addr, len) = listener(ctx);
        let client = connected(&addr, len);
        let r = unsafe { sc(SYS_accept, &[lfd.u(), 0, 0]) };
        let conn = Fd(fd_of(r));
        put(&client, b"hi");
        works(r, get(&conn, 4) == b"hi", "a connection, bytes through it")
    }

    fn x_accept4(ctx: &mut Ctx) -> Outcome {
        let (lfd, addr, len) = listener(ctx);
        let client = connected(&addr, len);
        let r = unsafe { sc(SYS_accept4, &[lfd.u(), 0, 0, a(SOCK_CLOEXEC)]) };
        let conn = Fd(fd_of(r));
        put(&client, b"hi");
        let cloexec = unsafe { fcntl(conn.0, F_GETFD) } & FD_CLOEXEC != 0;
        works(
            r,
            cloexec && get(&conn, 4) == b"hi",
            "a close-on-exec connection",
        )
    }

    fn x_connect(ctx: &mut Ctx) -> Outcome {
        let (lfd, addr, len) = listener(ctx);
        let client = stream();
        let r = unsafe { sc(SYS_connect, &[client.u(), p(&addr), a(len)]) };
        let conn = Fd(unsafe { accept(lfd.0, std::ptr::null_mut(), std::ptr::null_mut()) });
        put(&conn, b"yo");
        works(r, get(&client, 4) == b"yo", "to a unix socket in /tmp")
    }

    fn x_getsockname(ctx: &mut Ctx) -> Outcome {
        let (lfd, addr, _) = listener(ctx);
        let mut got: sockaddr_un = zeroed();
        let mut len: u32 = u32::try_from(std::mem::size_of::<sockaddr_un>()).unwrap_or(0);
        let r = unsafe { sc(SYS_getsockname, &[lfd.u(), m(&mut got), m(&mut len)]) };
        works(r, got.sun_path == addr.sun_path, "the bound path")
    }

    fn x_getpeername(ctx: &mut Ctx) -> Outcome {
        let (_lfd, addr, len) = listener(ctx);
        let client = connected(&addr, len);
        let mut got: sockaddr_un = zeroed();
        let mut glen: u32 = u32::try_from(std::mem::size_of::<sockaddr_un>()).unwrap_or(0);
        let r = unsafe { sc(SYS_getpeername, &[client.u(), m(&mut got), m(&mut glen)]) };
        works(r, got.sun_path == addr.sun_path, "the listener's path")
    }

    fn x_sendto(_: &mut Ctx) -> Outcome {
        let (x, y) = pair(SOCK_DGRAM);
        let msg = *b"ping";
        let r = unsafe { sc(SYS_sendto, &[x.u(), p(&msg), 4, 0, 0, 0]) };
        works(r, get(&y, 8) == b"ping", "a datagram across a pair")
    }

    fn x_recvfrom(_: &mut Ctx) -> Outcome {
        let (x, y) = pair(SOCK_DGRAM);
        put(&x, b"pong");
        let mut buf = [0u8; 8];
        let r = unsafe { sc(SYS_recvfrom, &[y.u(), m(&mut buf), 8, 0, 0, 0]) };
        works(
            r,
            r.ret == 4 && &buf[..4] == b"pong",
            "a datagram across a pair",
        )
    }

    fn msg_of(iov: &mut iovec) -> msghdr {
        let mut msg: msghdr = zeroed();
        msg.msg_iov = std::ptr::from_mut(iov);
        msg.msg_iovlen = 1;
        msg
    }

    fn x_sendmsg(_: &mut Ctx) -> Outcome {
        let (x, y) = pair(SOCK_DGRAM);
        let buf = *b"msg!";
        let mut iov = iovec {
            iov_base: buf.as_ptr() as *mut c_void,
            iov_len: 4,
        };
        let msg = msg_of(&mut iov);
        let r = unsafe { sc(SYS_sendmsg, &[x.u(), p(&msg), 0]) };
        works(r, get(&y, 8) == b"msg!", "a datagram across a pair")
    }

    fn x_recvmsg(_: &mut Ctx) -> Outcome {
        let (x, y) = pair(SOCK_DGRAM);
        put(&x, b"msg?");
        let mut buf = [0u8; 8];
        let mut iov = iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 8,
        };
        let mut msg = msg_of(&mut iov);
        let r = unsafe { sc(SYS_recvmsg, &[y.u(), m(&mut msg), 0]) };
        works(
            r,
            r.ret == 4 && &buf[..4] == b"msg?",
            "a datagram across a pair",
        )
    }

    fn x_sendmmsg(_: &mut Ctx) -> Outcome {
        let (x, y) = pair(SOCK_DGRAM);
        let buf = *b"mmsg";
        let mut iov = iovec {
            iov_base: buf.as_ptr() as *mut c_void,
            iov_len: 4,
        };
        let hdr = [mmsghdr {
            msg_hdr: msg_of(&mut iov),
            msg_len: 0,
        }];
        let r = unsafe { sc(SYS_sendmmsg, &[x.u(), p(&hdr), 1, 0]) };
        works(
            r,
            r.ret == 1 && get(&y, 8) == b"mmsg",
            "one datagram across a pair",
        )
    }

    fn x_recvmmsg(_: &mut Ctx) -> Outcome {
        let (x, y) = pair(SOCK_DGRAM);
        put(&x, b"mmsg");
        let mut buf = [0u8; 8];
        let mut iov = iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 8,
        };
        let mut hdr = [mmsghdr {
            msg_hdr: msg_of(&mut iov),
            msg_len: 0,
        }];
        let r = unsafe { sc(SYS_recvmmsg, &[y.u(), m(&mut hdr), 1, 0, 0]) };
        works(
            r,
            r.ret == 1 && hdr[0].msg_len == 4 && &buf[..4] == b"mmsg",
            "one datagram across a pair",
        )
    }

    fn x_setsockopt(_: &mut Ctx) -> Outcome {
        let (x, _y) = pair(SOCK_STREAM);
        let size: c_int = 65536;
        let r = unsafe {
            sc(
                SYS_setsockopt,
                &[x.u(), a(SOL_SOCKET), a(SO_RCVBUF), p(&size), 4],
            )
        };
        let (mut got, mut len): (c_int, socklen_t) = (0, 4);
        unsafe {
            getsockopt(
                x.0,
                SOL_SOCKET,
                SO_RCVBUF,
                std::ptr::from_mut(&mut got).cast(),
                &mut len,
            )
        };
        works(r, got >= 65536, format!("SO_RCVBUF now {got}"))
    }

    fn x_getsockopt(_: &mut Ctx) -> Outcome {
        let (x, _y) = pair(SOCK_DGRAM);
        let (mut got, mut len): (c_int, socklen_t) = (0, 4);
        let r = unsafe {
            sc(
                SYS_getsockopt,
                &[x.u(), a(SOL_SOCKET), a(SO_TYPE), m(&mut got), m(&mut len)],
            )
        };
        works(r, got == SOCK_DGRAM, "SO_TYPE is SOCK_DGRAM")
    }

    fn x_shutdown(_: &mut Ctx) -> Outcome {
        let (x, y) = pair(SOCK_STREAM);
        let r = unsafe { sc(SYS_shutdown, &[x.u(), a(SHUT_WR)]) };
        let mut buf = [0u8; 4];
        let eof = unsafe { libc::read(y.0, buf.as_mut_ptr().cast(), 4) } == 0;
        works(r, eof, "the peer reads end of file")
    }

    // --------------------------------------------------------------------- table

    /// Every exercise, by syscall number; several may share a number (a conditional rule's
    /// allowed and refused arguments).
    const EXERCISES: &[(c_long, &str, Exercise)] = &[
        (SYS_brk, "brk", x_brk),
        (SYS_mmap, "mmap", x_mmap),
        (SYS_munmap, "munmap", x_munmap),
        (SYS_mprotect, "mprotect", x_mprotect),
        (SYS_mremap, "mremap", x_mremap),
        (SYS_madvise, "madvise", x_madvise),
        (SYS_msync, "msync", x_msync),
        (SYS_mincore, "mincore", x_mincore),
        (SYS_membarrier, "membarrier", x_membarrier),
        (SYS_read, "read", x_read),
        (SYS_write, "write", x_write),
        (SYS_readv, "readv", x_readv),
        (SYS_writev, "writev", x_writev),
        (SYS_pread64, "pread64", x_pread64),
        (SYS_pwrite64, "pwrite64", x_pwrite64),
        (SYS_preadv, "preadv", x_preadv),
        (SYS_pwritev, "pwritev", x_pwritev),
        (SYS_preadv2, "preadv2", x_preadv2),
        (SYS_pwritev2, "pwritev2", x_pwritev2),
        (SYS_open, "open", x_open),
        (SYS_openat, "openat", x_openat),
        (SYS_close, "close", x_close),
        (SYS_close_range, "close_range", x_close_range),
        (SYS_lseek, "lseek", x_lseek),
        (SYS_stat, "stat", x_stat),
        (SYS_fstat, "fstat", x_fstat),
        (SYS_lstat, "lstat", x_lstat),
        (SYS_newfstatat, "newfstatat", x_newfstatat),
        (SYS_statx, "statx", x_statx),
        (SYS_statfs, "statfs", x_statfs),
        (SYS_fstatfs, "fstatfs", x_fstatfs),
        (SYS_access, "access", x_access),
        (SYS_faccessat, "faccessat", x_faccessat),
        (SYS_faccessat2, "faccessat2", x_faccessat2),
        (SYS_readlink, "readlink", x_readlink),
        (SYS_readlinkat, "readlinkat", x_readlinkat),
        (SYS_getdents64, "getdents64", x_getdents64),
        (SYS_getcwd, "getcwd", x_getcwd),
        (SYS_chdir, "chdir", x_chdir),
        (SYS_fchdir, "fchdir", x_fchdir),
        (SYS_mkdir, "mkdir", x_mkdir),
        (SYS_mkdirat, "mkdirat", x_mkdirat),
        (SYS_rmdir, "rmdir", x_rmdir),
        (SYS_unlink, "unlink", x_unlink),
        (SYS_unlinkat, "unlinkat", x_unlinkat),
        (SYS_rename, "rename", x_rename),
        (SYS_renameat, "renameat", x_renameat),
        (SYS_renameat2, "renameat2", x_renameat2),
        (SYS_link, "link", x_link),
        (SYS_linkat, "linkat", x_linkat),
        (SYS_symlink, "symlink", x_symlink),
        (SYS_symlinkat, "symlinkat", x_symlinkat),
        (SYS_chmod, "chmod", x_chmod),
        (SYS_fchmod, "fchmod", x_fchmod),
        (SYS_fchmodat, "fchmodat", x_fchmodat),
        (SYS_truncate, "truncate", x_truncate),
        (SYS_ftruncate, "ftruncate", x_ftruncate),
        (SYS_fallocate, "fallocate", x_fallocate),
        (SYS_fsync, "fsync", x_fsync),
        (SYS_fdatasync, "fdatasync", x_fdatasync),
        (SYS_flock, "flock", x_flock),
        (SYS_fcntl, "fcntl", x_fcntl),
        (SYS_dup, "dup", x_dup),
        (SYS_dup2, "dup2", x_dup2),
        (SYS_dup3, "dup3", x_dup3),
        (SYS_pipe, "pipe", x_pipe),
        (SYS_pipe2, "pipe2", x_pipe2),
        (SYS_utimensat, "utimensat", x_utimensat),
        (SYS_umask, "umask", x_umask),
        (SYS_sendfile, "sendfile", x_sendfile),
        (SYS_splice, "splice", x_splice),
        (SYS_tee, "tee", x_tee),
        (SYS_copy_file_range, "copy_file_range", x_copy_file_range),
        (SYS_memfd_create, "memfd_create", x_memfd_create),
        (SYS_ioctl, "ioctl", x_ioctl_tcgets),
        (SYS_ioctl, "ioctl", x_ioctl_tiocgwinsz),
        (SYS_ioctl, "ioctl", x_ioctl_fionread),
        (SYS_ioctl, "ioctl", x_ioctl_fionbio),
        (SYS_ioctl, "ioctl", x_ioctl_fioclex),
        (SYS_ioctl, "ioctl", x_ioctl_fionclex),
        (SYS_ioctl, "ioctl", x_ioctl_tiocsti),
        (SYS_ioctl, "ioctl", x_ioctl_tiocsti_high),
        (SYS_ioctl, "ioctl", x_ioctl_tiocsctty),
        (SYS_ioctl, "ioctl", x_ioctl_getflags),
        (SYS_ioctl, "ioctl", x_ioctl_siocgifconf),
        (SYS_clone, "clone", x_clone),
        (SYS_clone, "clone", x_clone_thread),
        (SYS_clone, "clone", x_clone_newns),
        (SYS_clone, "clone", x_clone_newcgroup),
        (SYS_clone, "clone", x_clone_newuts),
        (SYS_clone, "clone", x_clone_newipc),
        (SYS_clone, "clone", x_clone_newuser),
        (SYS_clone, "clone", x_clone_newpid),
        (SYS_clone, "clone", x_clone_newnet),
        (SYS_clone, "clone", x_clone_newuser_high),
        (SYS_fork, "fork", x_fork),
        (SYS_vfork, "vfork", x_vfork),
        (SYS_execve, "execve", x_execve),
        (SYS_execveat, "execveat", x_execveat),
        (SYS_exit, "exit", x_exit),
        (SYS_exit_group, "exit_group", x_exit_group),
        (SYS_wait4, "wait4", x_wait4),
        (SYS_waitid, "waitid", x_waitid),
        (SYS_kill, "kill", x_kill),
        (SYS_tkill, "tkill", x_tkill),
        (SYS_tgkill, "tgkill", x_tgkill),
        (SYS_getpid, "getpid", x_getpid),
        (SYS_getppid, "getppid", x_getppid),
        (SYS_gettid, "gettid", x_gettid),
        (SYS_getuid, "getuid", x_getuid),
        (SYS_geteuid, "geteuid", x_geteuid),
        (SYS_getgid, "getgid", x_getgid),
        (SYS_getegid, "getegid", x_getegid),
        (SYS_getgroups, "getgroups", x_getgroups),
        (SYS_getresuid, "getresuid", x_getresuid),
        (SYS_getresgid, "getresgid", x_getresgid),
        (SYS_getpgid, "getpgid", x_getpgid),
        (SYS_getpgrp, "getpgrp", x_getpgrp),
        (SYS_getsid, "getsid", x_getsid),
        (SYS_setsid, "setsid", x_setsid),
        (SYS_setpgid, "setpgid", x_setpgid),
        (SYS_prctl, "prctl", x_prctl),
        (SYS_arch_prctl, "arch_prctl", x_arch_prctl),
        (SYS_set_tid_address, "set_tid_address", x_set_tid_address),
        (SYS_set_robust_list, "set_robust_list", x_set_robust_list),
        (SYS_get_robust_list, "get_robust_list", x_get_robust_list),
        (SYS_rseq, "rseq", x_rseq),
        (SYS_futex, "futex", x_futex),
        (SYS_futex_waitv, "futex_waitv", x_futex_waitv),
        (SYS_sched_yield, "sched_yield", x_sched_yield),
        (
            SYS_sched_getaffinity,
            "sched_getaffinity",
            x_sched_getaffinity,
        ),
        (
            SYS_sched_setaffinity,
            "sched_setaffinity",
            x_sched_setaffinity,
        ),
        (SYS_sched_getparam, "sched_getparam", x_sched_getparam),
        (
            SYS_sched_getscheduler,
            "sched_getscheduler",
            x_sched_getscheduler,
        ),
        (SYS_getpriority, "getpriority", x_getpriority),
        (SYS_setpriority, "setpriority", x_setpriority),
        (SYS_getrusage, "getrusage", x_getrusage),
        (SYS_getrlimit, "getrlimit", x_getrlimit),
        (SYS_setrlimit, "setrlimit", x_setrlimit),
        (SYS_prlimit64, "prlimit64", x_prlimit64),
        (SYS_uname, "uname", x_uname),
        (SYS_sysinfo, "sysinfo", x_sysinfo),
        (SYS_times, "times", x_times),
        (SYS_getcpu, "getcpu", x_getcpu),
        (SYS_capget, "capget", x_capget),
        (SYS_nanosleep, "nanosleep", x_nanosleep),
        (SYS_clock_nanosleep, "clock_nanosleep", x_clock_nanosleep),
        (SYS_clock_gettime, "clock_gettime", x_clock_gettime),
        (SYS_clock_getres, "clock_getres", x_clock_getres),
        (SYS_gettimeofday, "gettimeofday", x_gettimeofday),
        (SYS_time, "time", x_time),
        (SYS_rt_sigaction, "rt_sigaction", x_rt_sigaction),
        (SYS_rt_sigprocmask, "rt_sigprocmask", x_rt_sigprocmask),
        (SYS_rt_sigreturn, "rt_sigreturn", x_rt_sigreturn),
        (SYS_rt_sigsuspend, "rt_sigsuspend", x_rt_sigsuspend),
        (SYS_rt_sigpending, "rt_sigpending", x_rt_sigpending),
        (SYS_rt_sigtimedwait, "rt_sigtimedwait", x_rt_sigtimedwait),
        (SYS_rt_sigqueueinfo, "rt_sigqueueinfo", x_rt_sigqueueinfo),
        (
            SYS_rt_tgsigqueueinfo,
            "rt_tgsigqueueinfo",
            x_rt_tgsigqueueinfo,
        ),
        (SYS_sigaltstack, "sigaltstack", x_sigaltstack),
        (SYS_pause, "pause", x_pause),
        (SYS_alarm, "alarm", x_alarm),
        (SYS_setitimer, "setitimer", x_setitimer),
        (SYS_getitimer, "getitimer", x_getitimer),
        (SYS_timer_create, "timer_create", x_timer_create),
        (SYS_timer_settime, "timer_settime", x_timer_settime),
        (SYS_timer_gettime, "timer_gettime", x_timer_gettime),
        (SYS_timer_getoverrun, "timer_getoverrun", x_timer_getoverrun),
        (SYS_timer_delete, "timer_delete", x_timer_delete),
        (SYS_signalfd4, "signalfd4", x_signalfd4),
        (SYS_poll, "poll", x_poll),
        (SYS_ppoll, "ppoll", x_ppoll),
        (SYS_select, "select", x_select),
        (SYS_pselect6, "pselect6", x_pselect6),
        (SYS_epoll_create1, "epoll_create1", x_epoll_create1),
        (SYS_epoll_ctl, "epoll_ctl", x_epoll_ctl),
        (SYS_epoll_wait, "epoll_wait", x_epoll_wait),
        (SYS_epoll_pwait, "epoll_pwait", x_epoll_pwait),
        (SYS_epoll_pwait2, "epoll_pwait2", x_epoll_pwait2),
        (SYS_eventfd2, "eventfd2", x_eventfd2),
        (SYS_timerfd_create, "timerfd_create", x_timerfd_create),
        (SYS_timerfd_settime, "timerfd_settime", x_timerfd_settime),
        (SYS_timerfd_gettime, "timerfd_gettime", x_timerfd_gettime),
        (SYS_getrandom, "getrandom", x_getrandom),
        (SYS_socket, "socket", x_socket_unix),
        (SYS_socket, "socket", x_socket_inet),
        (SYS_socket, "socket", x_socket_inet6),
        (SYS_socket, "socket", x_socket_netlink),
        (SYS_socket, "socket", x_socket_packet),
        (SYS_socket, "socket", x_socket_alg),
        (SYS_socket, "socket", x_socket_vsock),
        (SYS_socket, "socket", x_socket_unix_high),
        (SYS_socketpair, "socketpair", x_socketpair),
        (SYS_socketpair, "socketpair", x_socketpair_inet),
        (SYS_bind, "bind", x_bind),
        (SYS_listen, "listen", x_listen),
        (SYS_accept, "accept", x_accept),
        (SYS_accept4, "accept4", x_accept4),
        (SYS_connect, "connect", x_connect),
        (SYS_getsockname, "getsockname", x_getsockname),
        (SYS_getpeername, "getpeername", x_getpeername),
        (SYS_sendto, "sendto", x_sendto),
        (SYS_recvfrom, "recvfrom", x_recvfrom),
        (SYS_sendmsg, "sendmsg", x_sendmsg),
        (SYS_recvmsg, "recvmsg", x_recvmsg),
        (SYS_sendmmsg, "sendmmsg", x_sendmmsg),
        (SYS_recvmmsg, "recvmmsg", x_recvmmsg),
        (SYS_setsockopt, "setsockopt", x_setsockopt),
        (SYS_getsockopt, "getsockopt", x_getsockopt),
        (SYS_shutdown, "shutdown", x_shutdown),
    ];

    // ------------------------------------------------------------ the sweep itself

    fn numbers(event: &Value, key: &str) -> Result<Vec<c_long>, FnError> {
        match event.get(key) {
            None => Ok(Vec::new()),
            Some(list) => list
                .as_array()
                .and_then(|l| l.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| FnError::new("InvalidEvent", format!("{key} must list numbers"))),
        }
    }

    fn entry(nr: c_long, name: &str, o: &Outcome) -> Value {
        let name = if o.label.is_empty() {
            name
        } else {
            o.label.as_str()
        };
        json!({
            "nr": nr,
            "name": name,
            "expected": o.expected,
            "args": o.args.map(|a| a.map(|v| v as u64)),
            "result": o.ret,
            "errno": o.errno,
            "signal": o.signal,
            "ok": o.ok,
            "note": o.note,
        })
    }

    /// Calls every denied number with all arguments `-1`, in a forked child that records each
    /// result in shared memory; if a call kills or hangs the child, that call is recorded as
    /// such and a new child goes on with the next one.
    fn sweep_denied(deny: &[c_long]) -> Vec<Outcome> {
        const FIELDS: usize = 3; // done, ret, errno
        let map = Map::new(
            (deny.len() * FIELDS * 8).max(4096),
            MAP_SHARED | MAP_ANONYMOUS,
            -1,
        );
        if map.addr == 0 {
            return Vec::new();
        }
        let cell = |i: usize, f: usize| -> &AtomicI64 {
            unsafe { &*((map.addr + (i * FIELDS + f) * 8) as *const AtomicI64) }
        };
        let mut ended_at: HashMap<usize, Ended> = HashMap::new();
        let mut start = 0;
        while start < deny.len() {
            let ended = in_child(false, || {
                for (i, &nr) in deny.iter().enumerate().skip(start) {
                    let r = unsafe { sc(nr, &[usize::MAX; 6]) };
                    cell(i, 1).store(r.ret, Ordering::SeqCst);
                    cell(i, 2).store(i64::from(r.errno), Ordering::SeqCst);
                    cell(i, 0).store(1, Ordering::SeqCst);
                }
                0
            });
            let next = (start..deny.len())
                .find(|&i| cell(i, 0).load(Ordering::SeqCst) == 0)
                .unwrap_or(deny.len());
            if next < deny.len() {
                ended_at.insert(next, ended);
            }
            start = next + 1;
        }
        (0..deny.len())
            .map(|i| {
                if let Some(ended) = ended_at.get(&i) {
                    let signal = match ended {
                        Ended::Signaled(sig) => *sig,
                        _ => 0,
                    };
                    return Outcome {
                        expected: "deny",
                        label: String::new(),
                        args: None,
                        ret: -1,
                        errno: 0,
                        signal,
                        ok: false,
                        note: format!("the call ended the process: {ended:?}"),
                    };
                }
                let r = Ret {
                    ret: cell(i, 1).load(Ordering::SeqCst),
                    errno: i32::try_from(cell(i, 2).load(Ordering::SeqCst)).unwrap_or(0),
                };
                let ok = r.ret == -1 && (r.errno == ENOSYS || r.errno == EPERM);
                let note = if r.ret >= 0 { "the kernel ran it" } else { "" };
                let mut o = outcome("deny", r, ok, note);
                o.args = Some([usize::MAX; 6]);
                o
            })
            .collect()
    }

    /// An i386 syscall through `int 0x80`, arguments all `-1`.
    fn int80(nr: u32) -> u32 {
        let mut eax = nr;
        unsafe {
            std::arch::asm!(
                "xchg {b}, rbx",
                "int 0x80",
                "xchg {b}, rbx",
                b = inout(reg) u64::from(u32::MAX) => _,
                inout("eax") eax,
                in("ecx") u32::MAX,
                in("edx") u32::MAX,
                in("esi") u32::MAX,
                in("edi") u32::MAX,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
            );
        }
        eax
    }

    fn must_kill(note: &str, body: impl FnOnce() -> i32) -> Outcome {
        let ended = in_child(false, body);
        let signal = match ended {
            Ended::Signaled(sig) => sig,
            _ => 0,
        };
        let mut o = outcome(
            "kill",
            Ret { ret: -1, errno: 0 },
            signal == SIGSYS,
            format!("{note}: child ended {ended:?}"),
        );
        o.signal = signal;
        o
    }

    pub(super) fn run(event: &[u8]) -> Result<String, FnError> {
        let started = Instant::now();
        let event: Value = serde_json::from_slice(event)
            .map_err(|e| FnError::new("InvalidEvent", e.to_string()))?;
        let (deny, allow) = (numbers(&event, "deny")?, numbers(&event, "allow")?);
        let (x32, i386) = (numbers(&event, "x32")?, numbers(&event, "i386")?);
        let names: HashMap<String, String> = event
            .get("names")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let name_of = |nr: c_long| -> String {
            names
                .get(&nr.to_string())
                .cloned()
                .or_else(|| EXERCISES.iter().find(|e| e.0 == nr).map(|e| e.1.to_owned()))
                .unwrap_or_default()
        };

        // Handlers for the signal exercises (no SA_RESTART: pause and sigsuspend see EINTR).
        for sig in [SIGUSR1, SIGUSR2] {
            let mut act: sigaction = zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            unsafe { sigaction(sig, &act, std::ptr::null_mut()) };
        }
        let mut ctx = Ctx::new()?;
        let mut entries = Vec::new();

        for (nr, o) in deny.iter().zip(sweep_denied(&deny)) {
            entries.push(entry(*nr, &name_of(*nr), &o));
        }
        for &nr in &allow {
            let mut any = false;
            for (_, name, exercise) in EXERCISES.iter().filter(|e| e.0 == nr) {
                any = true;
                entries.push(entry(nr, name, &exercise(&mut ctx)));
            }
            if !any {
                let o = outcome(
                    "allow",
                    Ret { ret: -1, errno: 0 },
                    false,
                    "the sweep has no exercise for this syscall",
                );
                entries.push(entry(nr, &name_of(nr), &o));
            }
        }
        for &nr in &x32 {
            let o = must_kill("x32 ABI", || {
                unsafe { sc(nr | X32_BIT, &[usize::MAX; 6]) };
                99
            });
            let name = names
                .get(&format!("x32:{nr}"))
                .cloned()
                .unwrap_or_else(|| name_of(nr));
            entries.push(entry(nr | X32_BIT, &format!("x32:{name}"), &o));
        }
        for &nr in &i386 {
            let o = must_kill("i386 ABI through int 0x80", || {
                int80(u32::try_from(nr).unwrap_or(u32::MAX));
                99
            });
            let name = names
                .get(&format!("i386:{nr}"))
                .cloned()
                .unwrap_or_else(|| nr.to_string());
            entries.push(entry(nr, &format!("i386:{name}"), &o));
        }
        let _ = std::fs::remove_dir_all(DIR);
        Ok(json!({
            "entries": entries,
            "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
        .to_string())
    }
}
