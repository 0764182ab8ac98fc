//! Code that runs inside an execution environment: the native runtime.
//!
//! A native function is a Rust binary whose `main` calls [`serve`] with its handler. The
//! runtime attaches to the channel the scheduler passed in (fd number in
//! `HEARTH_CHANNEL_FD`), then loops: wait for a request on the ring (spinning briefly, then
//! sleeping on a futex), call the handler with the payload bytes, write its answer to the
//! response ring. A handler error is answered with Lambda's error document
//! `{"errorMessage": ..., "errorType": ...}`.
//!
//! This crate links only `hearth-ipc` and std, because everything it links runs inside the
//! environment's seccomp allowlist.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod ffi;
mod hotpages;
pub mod init;
mod maps;
mod zygote;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_ipc::{GuestChannel, ResponseStatus};

/// A handler's failure, reported to the caller as Lambda reports a function error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnError {
    /// `errorType`, e.g. `"ValueError"`.
    pub error_type: String,
    /// `errorMessage`.
    pub message: String,
}

impl FnError {
    /// An error of type `error_type` with `message`.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// Lambda's error document for this error.
    pub fn to_json(&self) -> Vec<u8> {
        hearth_ipc::error_document(&self.error_type, &self.message)
    }
}

impl fmt::Display for FnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for FnError {}

/// What a handler knows about the invocation it serves.
#[derive(Debug, Clone)]
pub struct Context {
    request_id: [u8; 16],
    deadline_ms: u64,
}

impl Context {
    /// Lambda's request id, formatted as a UUID.
    pub fn request_id(&self) -> String {
        hearth_ipc::format_request_id(&self.request_id)
    }

    /// When the invocation times out.
    pub fn deadline(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.deadline_ms)
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining_time(&self) -> Duration {
        self.deadline()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

/// Why [`serve`] stopped. It only stops when the channel is unusable.
#[derive(Debug)]
pub enum ServeError {
    /// The channel fd was missing or its header did not match.
    Attach(hearth_ipc::ChannelError),
    /// The scheduler's side of the ring held a value the protocol does not allow.
    Protocol(hearth_ipc::ProtocolError),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attach(e) => write!(f, "attaching to the hearth channel: {e}"),
            Self::Protocol(e) => write!(f, "reading the hearth channel: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Attach(e) => Some(e),
            Self::Protocol(e) => Some(e),
        }
    }
}

/// Serves invocations with `handler` until the environment is stopped. Never returns unless the
/// channel is unusable; then it prints why and exits with status 70.
pub fn serve<F>(mut handler: F) -> !
where
    F: FnMut(&[u8]) -> Result<Vec<u8>, FnError>,
{
    serve_with_context(|event, _| handler(event))
}

/// Like [`serve`], with the invocation's [`Context`].
pub fn serve_with_context<F>(handler: F) -> !
where
    F: FnMut(&[u8], &Context) -> Result<Vec<u8>, FnError>,
{
    // A socket at the channel's fd: this process is a zygote (see `zygote`); the loop below
    // returns only in each environment it forks, with that environment's channel.
    let channel_fd = std::env::var(hearth_ipc::CHANNEL_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|fd| zygote::is_socket(*fd));
    let attached = match channel_fd {
        Some(fd) => match zygote::adopt_control(fd).map(zygote::serve) {
            Some(Ok(channel)) => Ok(channel),
            Some(Err(e)) => {
                eprintln!("hearth runtime: {e}");
                #[allow(clippy::exit)] // the runtime owns the process
                std::process::exit(if matches!(e, zygote::ZygoteError::Closed) {
                    0
                } else {
                    70
                })
            }
            None => GuestChannel::from_env(),
        },
        None => GuestChannel::from_env(),
    };
    let err = match attached {
        Ok(channel) => run(channel, handler),
        Err(e) => ServeError::Attach(e),
    };
    eprintln!("hearth runtime: {err}");
    #[allow(clippy::exit)] // the runtime owns the process: this is its only way out
    std::process::exit(70)
}

/// The serve loop over an attached channel; returns only on a channel error.
pub fn run<F>(mut channel: GuestChannel, mut handler: F) -> ServeError
where
    F: FnMut(&[u8], &Context) -> Result<Vec<u8>, FnError>,
{
    let mut first = true;
    loop {
        let request = match channel.wait_next() {
            Ok(request) => request,
            Err(e) => return ServeError::Protocol(e),
        };
        // Only the first invocation is timed here, so the scheduler can tell the environment's
        // start-up (REPORT's Init Duration) from the invocation; later ones it times itself
        // (two clock reads per invocation cost about 0.1 µs on the warm path).
        let taken = first.then(Instant::now);
        first = false;
        let context = Context {
            request_id: request.request_id,
            deadline_ms: request.deadline_ms,
        };
        let event = channel.payload(&request);
        let result = catch_unwind(AssertUnwindSafe(|| handler(event, &context)))
            .unwrap_or_else(|panic| Err(FnError::new("Panic", panic_message(&*panic))));
        let run_us = taken.map_or(0, |t| {
            u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
        });
        if taken.is_some() {
            // A zygote's child may have to list the pages it wrote ([`hotpages`]).
            hotpages::report();
        }
        let answered = match result {
            Ok(body) => channel.respond_timed(request.id, ResponseStatus::Ok, &body, run_us),
            Err(e) => {
                channel.respond_timed(request.id, ResponseStatus::Error, &e.to_json(), run_us)
            }
        };
        if let Err(e) = answered {
            return ServeError::Protocol(e);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_is_lambdas_shape_and_escaped() {
        let e = FnError::new("ValueError", "bad \"input\"\n\u{1}");
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"errorMessage":"bad \"input\"\n\u0001","errorType":"ValueError"}"#
        );
    }

    #[test]
    fn request_id_is_a_uuid() {
        let ctx = Context {
            request_id: [
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
            ],
            deadline_ms: 0,
        };
        assert_eq!(ctx.request_id(), "12345678-9abc-def0-0102-030405060708");
        assert_eq!(ctx.remaining_time(), Duration::ZERO);
    }
}
