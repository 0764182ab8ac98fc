//! A C ABI over the zygote and the channel, for runtimes not written in Rust: hearth's Python
//! bootstrap loads `libhearth_runtime.so` with `ctypes` to become a zygote and, in each child
//! it forks, to read invocations from the channel and answer them (no HTTP, no hearth-init).
//!
//! A zygote's loop, in the runtime's language:
//!
//! ```text
//! hearth_zygote_start(3)                    # fd 3 is the control socket
//! loop:
//!     r = hearth_zygote_next()              # 0: fork now; 1: retired (exit 0); < 0: -errno
//!     pid = fork()                          # the language's own fork (its fork handlers run)
//!     if pid == 0: ch = hearth_zygote_child(); serve ch with hearth_channel_next/_respond
//!     elif pid > 0: hearth_zygote_forked(pid)
//!     else: hearth_zygote_fork_failed(errno)
//! ```
//!
//! Functions return 0 or a negative errno (`-EPROTO` for a channel protocol error). Every
//! pointer argument must be valid as documented; the zygote functions must be called from the
//! thread that called `hearth_zygote_start`, in the order above.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use hearth_ipc::{GuestChannel, ResponseStatus};
use nix::libc;

use crate::zygote::{Zygote, ZygoteError};

/// The zygote of this process, between `hearth_zygote_start` and the fork of a child.
static ZYGOTE: Mutex<Option<Zygote>> = Mutex::new(None);

fn errno_of(e: &ZygoteError) -> c_int {
    match e {
        ZygoteError::Closed => 1,
        ZygoteError::Setup(e) | ZygoteError::Control(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        ZygoteError::Channel(_) => -libc::EPROTO,
    }
}

fn with_zygote(f: impl FnOnce(&mut Zygote) -> Result<(), ZygoteError>) -> c_int {
    let mut guard = ZYGOTE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match guard.as_mut() {
        None => -libc::EBADF,
        Some(zygote) => match f(zygote) {
            Ok(()) => 0,
            Err(e) => errno_of(&e),
        },
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

/// Waits for the next fork request; then the caller's next child is created in a new pid
/// namespace. 0: fork now; 1: hearth retired the zygote (exit); < 0: `-errno`.
#[no_mangle]
pub extern "C" fn hearth_zygote_next() -> c_int {
    with_zygote(|z| {
        z.next_request()?;
        z.prepare_fork()
    })
}

/// In the zygote, after forking child `pid`.
#[no_mangle]
pub extern "C" fn hearth_zygote_forked(pid: c_int) -> c_int {
    with_zygote(|z| z.forked(pid))
}

/// In the zygote, after the fork failed with `errno`.
#[no_mangle]
pub extern "C" fn hearth_zygote_fork_failed(errno: c_int) -> c_int {
    with_zygote(|z| z.fork_failed(errno))
}

/// In the forked child: sets it up (its namespaces, cgroup, mounts, capabilities, landlock,
/// seccomp) and returns its channel. On a failed step the child reports it to hearth and
/// exits with status 127: this never returns null to code that would go on.
#[no_mangle]
pub extern "C" fn hearth_zygote_child() -> *mut GuestChannel {
    let zygote = ZYGOTE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let channel = zygote.map(|mut z| {
        let channel = z.in_child();
        drop(z);
        channel
    });
    match channel {
        Some(Ok(channel)) => Box::into_raw(Box::new(channel)),
        _ => {
            // SAFETY: _exit without running any of the zygote's handlers.
            unsafe { libc::_exit(127) }
        }
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
/// `channel` comes from `hearth_zygote_child`; `out` points to a writable `HearthInvocation`.
#[no_mangle]
pub unsafe extern "C" fn hearth_channel_next(
    channel: *mut GuestChannel,
    out: *mut HearthInvocation,
) -> c_int {
    // SAFETY: the caller passes the channel hearth_zygote_child returned.
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
/// `channel` comes from `hearth_zygote_child`; `body` points to `len` readable bytes (or is
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
    match channel.respond_timed(id, status, body, run_us) {
        Ok(()) => 0,
        Err(_) => -libc::EPROTO,
    }
}
