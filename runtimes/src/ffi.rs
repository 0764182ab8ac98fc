//! A C ABI over the zygote and the channel, for runtimes not written in Rust: hearth's Python
//! bootstrap loads `libhearth_runtime.so` with `ctypes` to become a zygote and, in each child
//! it forks, to read invocations from the channel and answer them (no HTTP, no hearth-init).
//!
//! A zygote, in the runtime's language:
//!
//! ```text
//! hearth_zygote_start(3)                    # fd 3 is the control socket
//! r = hearth_zygote_serve(before, parent, child, &ch)
//!     # returns 0 only in a forked child: serve ch with hearth_channel_next/_respond;
//!     # in the zygote, 1 once hearth retired it (exit 0), or -errno
//! ```
//!
//! The zygote's loop runs in `hearth_zygote_serve`, which forks through libc and calls the
//! runtime's own fork hooks around it (Python: `PyOS_BeforeFork`, `PyOS_AfterFork_Parent`,
//! `PyOS_AfterFork_Child`, what `os.fork` calls; the child's only once the child is set up, so
//! the handlers the function registered for children run as confined as the function; a runtime
//! whose hooks need its interpreter lock calls it holding that lock, as ctypes' `PyDLL` does).
//! The zygote so runs none of the
//! runtime's code between a fork and hearth's answer, and its parent hook only once it next
//! wakes: after a fork, every page the zygote writes is copied first (the child shares them),
//! and the child, which runs on the zygote's CPU, waits for it.
//!
//! Functions return 0 or a negative errno (`-EPROTO` for a channel protocol error;
//! `hearth_zygote_serve` also 1, as above). Every
//! pointer argument must be valid as documented; `hearth_zygote_serve` must be called from the
//! thread that called `hearth_zygote_start`.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use hearth_ipc::{GuestChannel, ResponseStatus};
use nix::libc;

use crate::zygote::{ForkHook, ForkHooks, Served, Zygote, ZygoteError};

/// The zygote of this process, between `hearth_zygote_start` and `hearth_zygote_serve`.
static ZYGOTE: Mutex<Option<Zygote>> = Mutex::new(None);

fn errno_of(e: &ZygoteError) -> c_int {
    match e {
        ZygoteError::Closed => 1,
        ZygoteError::Setup(e) | ZygoteError::Control(e) => {
            -e.raw_os_error().filter(|&n| n > 0).unwrap_or(libc::EIO)
        }
        ZygoteError::Channel(_) => -libc::EPROTO,
    }
}

/// Becomes a zygote on control socket `fd` (taken over), telling hearth it is ready.
#[no_mangle]
pub extern "C" fn hearth_zygote_start(fd: c_int) -> c_int {
    if !crate::zygote::is_socket(fd) {
        return -libc::ENOTSOCK;
    }
    // SAFETY: `fd` is an open socket hearth passed to this process for the runtime to own.
    let control = unsafe { OwnedFd::from_raw_fd(fd) };
    match Zygote::start(control) {
        Ok(zygote) => {
            *ZYGOTE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(zygote);
            0
        }
        Err(e) => errno_of(&e),
    }
}

/// Runs the zygote's loop (see the module docs). In a forked child: sets it up (its
/// namespaces, cgroup, mounts, capabilities, landlock, seccomp), calls `child`, stores its
/// channel at `channel` and returns 0; on a failed step the child reports it to hearth and exits with
/// status 127, so this never returns to a child that would go on unconfined. In the zygote:
/// returns 1 once hearth retired it, or a negative errno.
///
/// # Safety
///
/// Each hook is null or a function that may be called at that point of a fork on this thread;
/// `channel` points to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn hearth_zygote_serve(
    before: ForkHook,
    parent: ForkHook,
    child: ForkHook,
    channel: *mut *mut GuestChannel,
) -> c_int {
    let zygote = ZYGOTE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(zygote) = zygote else {
        return -libc::EBADF;
    };
    let hooks = ForkHooks {
        before,
        parent,
        child,
    };
    match zygote.serve(&hooks) {
        Served::Child(Ok(served)) => {
            // SAFETY: the caller passes a writable pointer.
            unsafe { *channel = Box::into_raw(Box::new(served)) };
            0
        }
        // SAFETY: _exit ends a child whose channel could not be attached without running any
        // of the zygote's handlers.
        Served::Child(Err(_)) => unsafe { libc::_exit(127) },
        Served::Ended(e) => errno_of(&e),
    }
}

/// One invocation, as `hearth_channel_next` fills it. The payload and context stay valid until
/// the invocation is answered.
#[repr(C)]
#[derive(Debug)]
pub struct HearthInvocation {
    /// Pass to `hearth_channel_respond`.
    pub id: u64,
    /// Deadline, Unix time in milliseconds.
    pub deadline_ms: u64,
    /// Lambda's request id, as text (a UUID, not NUL-terminated).
    pub request_id: [u8; 36],
    /// The event.
    pub payload: *const u8,
    /// Its length.
    pub payload_len: usize,
    /// Runtime API header lines (`Name: value\n`) for this invocation.
    pub context: *const u8,
    /// Their length.
    pub context_len: usize,
}

/// Waits for the next invocation on `channel` and describes it in `out`.
///
/// # Safety
///
/// `channel` comes from `hearth_zygote_serve`; `out` points to a writable `HearthInvocation`.
#[no_mangle]
pub unsafe extern "C" fn hearth_channel_next(
    channel: *mut GuestChannel,
    out: *mut HearthInvocation,
) -> c_int {
    // SAFETY: the caller passes the channel hearth_zygote_serve stored.
    let channel = unsafe { &mut *channel };
    // SAFETY: the caller passes a valid, writable `out`.
    let out = unsafe { &mut *out };
    let Ok(request) = channel.wait_next() else {
        return -libc::EPROTO;
    };
    let payload = channel.payload(&request);
    let context = channel.context(&request);
    *out = HearthInvocation {
        id: request.id,
        deadline_ms: request.deadline_ms,
        request_id: hearth_ipc::request_id_text(&request.request_id),
        payload: payload.as_ptr(),
        payload_len: payload.len(),
        context: context.as_ptr(),
        context_len: context.len(),
    };
    0
}

/// Answers invocation `id`: `status` 0 with the function's result, 1 with Lambda's error
/// document of an unhandled error; `run_us` is how long the handler ran (0: not measured).
///
/// # Safety
///
/// `channel` comes from `hearth_zygote_serve`; `body` points to `len` readable bytes (or is
/// null with `len` 0).
#[no_mangle]
pub unsafe extern "C" fn hearth_channel_respond(
    channel: *mut GuestChannel,
    id: u64,
    status: c_int,
    body: *const u8,
    len: usize,
    run_us: u64,
) -> c_int {
    // SAFETY: as documented above.
    let channel = unsafe { &mut *channel };
    let body = if body.is_null() || len == 0 {
        &[][..]
    } else {
        // SAFETY: the caller guarantees `len` readable bytes at `body`.
        unsafe { std::slice::from_raw_parts(body, len) }
    };
    let status = if status == 0 {
        ResponseStatus::Ok
    } else {
        ResponseStatus::Unhandled
    };
    // A zygote's child may have to list the pages it wrote first (see `hotpages`).
    crate::hotpages::report();
    match channel.respond_timed(id, status, body, run_us) {
        Ok(()) => 0,
        Err(_) => -libc::EPROTO,
    }
}
