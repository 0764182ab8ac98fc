//! The front door on one shard: HTTP/1.1 connections on the shard's own io_uring, accepted from
//! the shard's own `SO_REUSEPORT` listener.
//!
//! ```text
//! accept (multishot) ─▶ recv into the connection's buffer ─▶ parse (in place)
//!   ─▶ verify SigV4 ─▶ Invoke: resolve (lock-free) → submit to this shard's environment
//!                      ─▶ completion → response written from the payload → send
//!                   └▶ anything else: handed to the control thread → reply via the mailbox
//! ```
//!
//! One request per connection is in progress at a time; a pipelined request waits in the buffer
//! until the previous response is out. Buffers are only touched while no receive or send is
//! armed on them (the kernel writes into a receive buffer until its completion is reaped).
//! Responses are first written with a non-blocking `send`; only what does not fit goes through
//! the ring. Timeouts ([`Timeouts`]): a request head must arrive within `head` of its first
//! byte, a body must keep moving (`body` without a byte ends it with 408), an idle keep-alive
//! connection is closed after `idle`.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::api::control::{ControlReply, ControlRequest};
use crate::api::invoke::{invoke_error, write_result, InvocationType};
use crate::api::{self, ApiError, FunctionRef, Identity};
use crate::auth::{SignedRequest, Verifier};
use crate::engine::ShardService;
use crate::http::{
    self, decode_chunked, parse_head, Chunked, Framing, Head, Parsed, Persist, Refusal,
};
use crate::registry::Function;
use crate::shard::{Completion, Invocation, NetEvent, Shard};
use crate::uring::{Key, NetOp};

/// How long the front door waits for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed for a request head, from its first byte.
    pub head: Duration,
    /// Longest pause allowed while a body is arriving.
    pub body: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            head: Duration::from_secs(10),
            body: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}
/// First size of a connection's receive buffer.
const INITIAL_BUFFER: usize = 16 * 1024;
/// Tags of asynchronous (`Event`) invocations, whose completions answer nobody.
const ASYNC_TAG: u64 = 1 << 63;

/// Settings shared by every shard's front door.
#[derive(Debug, Clone)]
pub(crate) struct FrontDoorConfig {
    pub identity: Identity,
    /// `None`: signatures are not checked (`--insecure-no-auth`).
    pub verifier: Option<Verifier>,
    pub timeouts: Timeouts,
}

/// Start and drain coordination between the daemon and the shards.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// Set by the daemon once the stored functions are installed: until then no connection is
    /// accepted (an invoke would not find them).
    pub open: AtomicBool,
    /// Set by the daemon: stop accepting, finish what is in flight, close.
    pub requested: AtomicBool,
    /// Shards whose front door has finished draining.
    pub finished: AtomicUsize,
}

#[derive(Debug)]
enum Phase {
    /// Reading (or waiting for) a request.
    Reading,
    /// A synchronous invocation is running.
    Invoking { function: Arc<Function>, tail: bool },
    /// The control thread has the request.
    Control,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    buf: Vec<u8>,
    body: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    recv_armed: bool,
    send_armed: bool,
    phase: Phase,
    /// Close once `out` is sent.
    close_after: bool,
    /// Shut down; freed when no operation is armed.
    closing: bool,
    last_active: Instant,
    request_started: Option<Instant>,
    continue_sent: bool,
    /// The current request is HTTP/1.0.
    http10: bool,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

fn tag_of(key: Key) -> u64 {
    u64::from(key.slot) << 32 | u64::from(key.generation)
}

fn key_of(tag: u64) -> Key {
    Key {
        slot: u32::try_from((tag >> 32) & 0x7fff_ffff).unwrap_or(u32::MAX),
        generation: u32::try_from(tag & 0xffff_ffff).unwrap_or(0),
    }
}

type Write = Box<dyn FnOnce(&mut Vec<u8>, Persist)>;

/// What became of a complete request.
enum Dispatched {
    /// Answer now.
    Respond(Write),
    /// In progress: the connection's new phase.
    Pending(Phase),
}

/// One shard's front door.
pub(crate) struct FrontDoor {
    index: usize,
    listeners: Vec<OwnedFd>,
    armed: bool,
    slots: Vec<Slot>,
    free: Vec<u32>,
    config: FrontDoorConfig,
    control: Sender<ControlRequest>,
    replies: Receiver<ControlReply>,
    drain: Arc<Drain>,
    drained: bool,
    net: Vec<NetEvent>,
    completions: Vec<Completion>,
    /// Connections with received bytes or a finished response: parse what they hold next.
    ready: Vec<Key>,
    /// Listeners whose accept failed (out of fds), and when to arm them again.
    accept_retry: Vec<(u32, Instant)>,
    rng: u64,
    next_sweep: Instant,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor")
            .field("index", &self.index)
            .field(
                "connections",
                &self.slots.iter().filter(|s| s.conn.is_some()).count(),
            )
            .finish_non_exhaustive()
    }
}

impl FrontDoor {
    pub(crate) fn new(
        index: usize,
        listeners: Vec<OwnedFd>,
        config: FrontDoorConfig,
        control: Sender<ControlRequest>,
        replies: Receiver<ControlReply>,
        drain: Arc<Drain>,
    ) -> Self {
        Self {
            index,
            listeners,
            armed: false,
            slots: Vec::new(),
            free: Vec::new(),
            config,
            control,
            replies,
            drain,
            drained: false,
            net: Vec::new(),
            completions: Vec::new(),
            ready: Vec::new(),
            accept_retry: Vec::new(),
            rng: crate::sys::random_u64() | 1,
            next_sweep: Instant::now() + Duration::from_secs(1),
        }
    }

    fn conn(&mut self, key: Key) -> Option<&mut Conn> {
        self.slots
            .get_mut(key.slot as usize)
            .filter(|s| s.generation == key.generation)
            .and_then(|s| s.conn.as_mut())
    }

    // ----- connections ----------------------------------------------------------------------

    fn accept(&mut self, shard: &mut Shard, fd: OwnedFd) {
        // Fails harmlessly on a unix socket.
        let _ = crate::sys::set_socket_option(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = self.slots[slot as usize].generation;
        self.slots[slot as usize].conn = Some(Conn {
            fd,
            buf: Vec::with_capacity(INITIAL_BUFFER),
            body: Vec::new(),
            out: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            phase: Phase::Reading,
            close_after: false,
            closing: false,
            last_active: Instant::now(),
            request_started: None,
            continue_sent: false,
            http10: false,
        });
        self.arm_recv(shard, Key { slot, generation }, INITIAL_BUFFER);
    }

    /// Arms a receive of up to `want` more bytes (the buffer grows to hold them).
    fn arm_recv(&mut self, shard: &mut Shard, key: Key, want: usize) {
        let Some(conn) = self.conn(key) else { return };
        if conn.recv_armed || conn.closing {
            return;
        }
        let spare = conn.buf.capacity() - conn.buf.len();
        if spare < want.min(1 << 20) {
            conn.buf.reserve(want.clamp(INITIAL_BUFFER, 1 << 20));
        }
        let spare = conn.buf.capacity() - conn.buf.len();
        let ptr = conn.buf.as_mut_ptr().wrapping_add(conn.buf.len());
        conn.recv_armed = true;
        let len = u32::try_from(spare).unwrap_or(u32::MAX);
        // SAFETY: the spare capacity is not touched until the completion is reaped (buffers
        // are only changed while no receive is armed), and the fd is closed only after that.
        unsafe { shard.uring().arm_recv(key, conn.fd.as_fd(), ptr, len) };
    }

    fn close(&mut self, key: Key) {
        let Some(conn) = self.conn(key) else { return };
        conn.closing = true;
        if conn.recv_armed || conn.send_armed {
            // Ends the armed operations; the connection is freed when they complete.
            // SAFETY: shutdown on an fd we own.
            unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            return;
        }
        self.free_slot(key);
    }

    fn free_slot(&mut self, key: Key) {
        if let Some(slot) = self
            .slots
            .get_mut(key.slot as usize)
            .filter(|s| s.generation == key.generation)
        {
            slot.conn = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(key.slot);
        }
    }

    fn on_net(&mut self, shard: &mut Shard, event: NetEvent) {
        match event.op {
            NetOp::Accept => {
                if event.result >= 0 {
                    // SAFETY: a successful accept returns a new fd that we now own.
                    let fd = unsafe { OwnedFd::from_raw_fd(event.result) };
                    if self.drain.requested.load(Ordering::Acquire) {
                        drop(fd);
                    } else {
                        self.accept(shard, fd);
                    }
                } else if event.result != -libc::ECANCELED && event.result != -libc::EINVAL {
                    tracing::warn!(shard = self.index, errno = -event.result, "accept failed");
                }
                if !event.more && !self.drain.requested.load(Ordering::Acquire) {
                    if event.result < 0 {
                        // Out of fds or memory: accepting again at once would fail at once.
                        self.accept_retry
                            .push((event.key.slot, Instant::now() + Duration::from_millis(100)));
                    } else if let Some(listener) = self.listeners.get(event.key.slot as usize) {
                        shard.uring().arm_accept(event.key.slot, listener.as_fd());
                    }
                }
            }
            NetOp::Recv => {
                let Some(conn) = self.conn(event.key) else {
                    return;
                };
                conn.recv_armed = false;
                if conn.closing {
                    if !conn.send_armed {
                        self.free_slot(event.key);
                    }
                    return;
                }
                if conn.close_after && !conn.out.is_empty() {
                    // A timeout wrote its answer while the receive was armed: send it, then
                    // close.
                    self.flush(shard, event.key);
                    return;
                }
                if event.result <= 0 {
                    // End of stream or an error: the client is gone.
                    self.close(event.key);
                    return;
                }
                let n = usize::try_from(event.result).unwrap_or(0);
                let len = conn.buf.len();
                // SAFETY: the kernel wrote `n` bytes (at most the spare capacity it was given)
                // right after the initialised part.
                unsafe { conn.buf.set_len((len + n).min(conn.buf.capacity())) };
                conn.last_active = Instant::now();
                conn.request_started.get_or_insert(conn.last_active);
                self.ready.push(event.key);
            }
            NetOp::Send => {
                let Some(conn) = self.conn(event.key) else {
                    return;
                };
                conn.send_armed = false;
                if conn.closing {
                    if !conn.recv_armed {
                        self.free_slot(event.key);
                    }
                    return;
                }
                if event.result < 0 {
                    self.close(event.key);
                    return;
                }
                conn.sent += usize::try_from(event.result).unwrap_or(0);
                conn.last_active = Instant::now();
                self.flush(shard, event.key);
            }
        }
    }

    /// Sends what is in the output buffer: directly if the socket takes it, through the ring
    /// otherwise. When all is out, reads the next request.
    fn flush(&mut self, shard: &mut Shard, key: Key) {
        let Some(conn) = self.conn(key) else { return };
        if conn.send_armed {
            // The send in flight continues from `sent` when it completes.
            return;
        }
        while conn.sent < conn.out.len() {
            let rest = &conn.out[conn.sent..];
            // SAFETY: sends from a live buffer on our fd; MSG_DONTWAIT never blocks the shard.
            let n = unsafe {
                libc::send(
                    conn.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n > 0 {
                conn.sent += usize::try_from(n).unwrap_or(0);
                continue;
            }
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if n < 0 && (errno == libc::EAGAIN || errno == libc::EINTR) {
                let rest = &conn.out[conn.sent..];
                conn.send_armed = true;
                let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
                // SAFETY: `out` is not modified until the send completes (a connection gets
                // no new response while one is being sent), and the fd outlives it.
                unsafe {
                    shard
                        .uring()
                        .arm_send(key, conn.fd.as_fd(), rest.as_ptr(), len)
                };
                return;
            }
            self.close(key);
            return;
        }
        conn.out.clear();
        conn.sent = 0;
        if conn.close_after {
            self.close(key);
            return;
        }
        if matches!(conn.phase, Phase::Reading) {
            // Pipelined requests are parsed by the turn's loop, not by recursion: a client
            // sending thousands of requests at once must not grow the stack.
            self.ready.push(key);
        }
    }

    /// Queues `response` (and maybe closes afterwards), then sends.
    fn respond(
        &mut self,
        shard: &mut Shard,
        key: Key,
        write: impl FnOnce(&mut Vec<u8>, Persist),
        close: bool,
    ) {
        let draining = self.drain.requested.load(Ordering::Acquire);
        let Some(conn) = self.conn(key) else { return };
        debug_assert!(
            !conn.send_armed && conn.out.is_empty(),
            "one response at a time"
        );
        let close = close || conn.close_after || draining;
        conn.close_after = close;
        conn.phase = Phase::Reading;
        conn.request_started = None;
        conn.continue_sent = false;
        write(&mut conn.out, Persist::new(close, conn.http10));
        self.flush(shard, key);
    }

    fn respond_error(&mut self, shard: &mut Shard, key: Key, error: &ApiError, close: bool) {
        let request_id = api::new_request_id(&mut self.rng);
        let response = error.response();
        self.respond(
            shard,
            key,
            |out, persist| response.write(out, &request_id, persist),
            close,
        );
    }

    fn refuse(&mut self, shard: &mut Shard, key: Key, refusal: Refusal) {
        let error_type = match refusal.status {
            413 => "RequestEntityTooLargeException",
            408 => "RequestTimeoutException",
            _ => "InvalidRequestContentException",
        };
        let error = ApiError::new(refusal.status, error_type, refusal.message);
        self.respond_error(shard, key, &error, true);
    }

    // ----- requests -------------------------------------------------------------------------

    /// Parses what the connection has received and starts the request once it is complete.
    fn advance(&mut self, shard: &mut Shard, key: Key) {
        let Some(conn) = self.conn(key) else { return };
        if conn.closing || conn.recv_armed || conn.send_armed || !conn.out.is_empty() {
            return;
        }
        if !matches!(conn.phase, Phase::Reading) {
            return;
        }
        if conn.buf.is_empty() {
            conn.request_started = None;
            if self.drain.requested.load(Ordering::Acquire) {
                self.close(key);
            } else {
                self.arm_recv(shard, key, INITIAL_BUFFER);
            }
            return;
        }
        let head = match parse_head(&conn.buf) {
            Ok(Parsed::Partial) => return self.arm_recv(shard, key, INITIAL_BUFFER),
            Ok(Parsed::Head(head)) => head,
            Err(refusal) => return self.refuse(shard, key, refusal),
        };
        let buf = &conn.buf;
        let method = head.method(buf);
        let path = head.path(buf);
        let invoke = api::invoke_target(method, path).is_some();
        let limit = if invoke {
            match head.header(buf, "x-amz-invocation-type") {
                Some(b"Event") => api::MAX_ASYNC_PAYLOAD,
                _ => api::MAX_SYNC_PAYLOAD,
            }
        } else {
            api::MAX_CONTROL_BODY
        };
        let too_large = || {
            if invoke {
                ApiError::new(
                    413,
                    "RequestTooLargeException",
                    format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
                )
            } else {
                ApiError::new(
                    413,
                    "RequestEntityTooLargeException",
                    format!("Request must be smaller than {limit} bytes for this operation"),
                )
            }
        };
        let body_end = match head.framing {
            Framing::Length(n) if n > limit => {
                let error = too_large();
                return self.respond_error(shard, key, &error, true);
            }
            Framing::Length(n) => {
                let end = head.len + n;
                if conn.buf.len() < end {
                    let want = end - conn.buf.len();
                    return self.await_body(shard, key, &head, want);
                }
                end
            }
            Framing::Chunked => {
                match decode_chunked(&conn.buf[head.len..], &mut conn.body, limit) {
                    Ok(Chunked::Done(used)) => head.len + used,
                    Ok(Chunked::Partial) if conn.buf.len() - head.len > limit + (64 << 10) => {
                        // Framing overhead beyond any honest client's.
                        let error = too_large();
                        return self.respond_error(shard, key, &error, true);
                    }
                    Ok(Chunked::Partial) => {
                        let want = conn.buf.len().max(INITIAL_BUFFER);
                        return self.await_body(shard, key, &head, want);
                    }
                    Err(refusal) if refusal.status == 413 => {
                        let error = too_large();
                        return self.respond_error(shard, key, &error, true);
                    }
                    Err(refusal) => return self.refuse(shard, key, refusal),
                }
            }
        };
        conn.http10 = head.http10;
        if head.close {
            conn.close_after = true;
        }
        self.start_request(shard, key, &head, body_end);
    }

    fn await_body(&mut self, shard: &mut Shard, key: Key, head: &Head, want: usize) {
        let Some(conn) = self.conn(key) else { return };
        if head.expect_continue && !conn.continue_sent {
            // An interim response, sent like any other; once it is out the connection is
            // parsed again and waits for the body.
            conn.continue_sent = true;
            conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush(shard, key);
            return;
        }
        self.arm_recv(shard, key, want);
    }

    /// The request at the start of the buffer is complete (`body_end` bytes).
    fn start_request(&mut self, shard: &mut Shard, key: Key, head: &Head, body_end: usize) {
        let Some(mut conn) = self
            .slots
            .get_mut(key.slot as usize)
            .and_then(|s| s.conn.take())
        else {
            return;
        };
        let result = match self.dispatch(shard, key, &conn, head, body_end) {
            Ok(Dispatched::Pending(phase)) => {
                conn.phase = phase;
                Ok(None)
            }
            Ok(Dispatched::Respond(write)) => Ok(Some(write)),
            Err(e) => Err(e),
        };
        conn.buf.drain(..body_end.min(conn.buf.len()));
        conn.body.clear();
        if let Some(slot) = self.slots.get_mut(key.slot as usize) {
            slot.conn = Some(conn);
        }
        match result {
            Ok(Some(write)) => self.respond(shard, key, write, false),
            Ok(None) => {}
            Err(error) => self.respond_error(shard, key, &error, false),
        }
    }

    /// Verifies and routes a request. `Ok(None)`: it is in progress (an invocation or the
    /// control thread); `Ok(Some(write))`: answer now.
    fn dispatch(
        &mut self,
        shard: &mut Shard,
        key: Key,
        conn: &Conn,
        head: &Head,
        body_end: usize,
    ) -> Result<Dispatched, ApiError> {
        let buf = &conn.buf;
        let body: &[u8] = match head.framing {
            Framing::Chunked => &conn.body,
            Framing::Length(_) => &buf[head.len..body_end],
        };
        let (method, path, query) = (head.method(buf), head.path(buf), head.query(buf));
        // Code download URLs carry their own signature (like a presigned URL).
        let presigned = method == "GET" && path.starts_with("/hearth/code/");
        if let Some(verifier) = self.config.verifier.as_mut().filter(|_| !presigned) {
            let mut headers: [(&str, &[u8]); http::MAX_HEADERS] = [("", &[]); http::MAX_HEADERS];
            for (slot, header) in headers.iter_mut().zip(head.headers(buf)) {
                *slot = header;
            }
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            verifier
                .verify(
                    &SignedRequest {
                        method,
                        path,
                        query,
                        headers: &headers[..head.header_count],
                        body,
                    },
                    now,
                )
                .map_err(|e| ApiError::new(403, e.error_type(), e.to_string()))?;
        }
        if let Some(target) = api::invoke_target(method, path) {
            return self.invoke(shard, key, buf, head, target, body);
        }
        let request = ControlRequest {
            shard: self.index,
            tag: tag_of(key),
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            body: body.to_vec(),
            request_id: api::new_request_id(&mut self.rng),
            host: head
                .header(buf, "host")
                .and_then(|h| std::str::from_utf8(h).ok())
                .unwrap_or("127.0.0.1")
                .to_owned(),
        };
        self.control
            .send(request)
            .map_err(|_| ApiError::service("the control plane is not running"))?;
        Ok(Dispatched::Pending(Phase::Control))
    }

    fn invoke(
        &mut self,
        shard: &mut Shard,
        key: Key,
        buf: &[u8],
        head: &Head,
        target: &str,
        body: &[u8],
    ) -> Result<Dispatched, ApiError> {
        let identity = &self.config.identity;
        let query = head.query(buf);
        let query_qualifier = if query.is_empty() {
            None
        } else {
            http::query_pairs(query)
                .find(|(k, _)| k == "Qualifier")
                .map(|(_, v)| v)
        };
        // The common case, a plain name, is resolved without allocating.
        let parsed;
        let (name, qualifier) = if target.contains(['%', ':']) || query_qualifier.is_some() {
            parsed = FunctionRef::parse(target, identity)?.with_query_qualifier(query_qualifier)?;
            (parsed.name.as_str(), parsed.qualifier.as_deref())
        } else {
            if target.is_empty() || target.len() > 64 {
                FunctionRef::parse(target, identity)?;
            }
            (target, None)
        };
        let kind = InvocationType::from_header(head.header(buf, "x-amz-invocation-type"))?;
        // Lambda accepts JSON events only (an empty body is an empty event). Checked without
        // building anything.
        if !body.is_empty() {
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::new(
                    400,
                    "InvalidRequestContentException",
                    "Could not parse request body into json: the payload is not valid UTF-8",
                )
            })?;
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Err(ApiError::new(
                    400,
                    "InvalidRequestContentException",
                    format!("Could not parse request body into json: Could not parse payload into json: {e}"),
                ));
            }
        }
        let draw = u32::try_from(crate::sys::next_random(&mut self.rng) % 1_000_000).unwrap_or(0);
        let Some(function) = shard.resolve(name, qualifier, draw) else {
            return Err(ApiError::not_found(format!(
                "Function not found: {}",
                identity.function_arn(name, qualifier)
            )));
        };
        let arn = || identity.function_arn(name, qualifier);
        let client_context = match head.header(buf, "x-amz-client-context") {
            Some(encoded) => Some(decode_client_context(encoded)?),
            None => None,
        };
        let invocation = |tail| Invocation {
            qualifier,
            client_context: client_context.as_deref(),
            tail,
        };
        match kind {
            InvocationType::DryRun => {
                let request_id = api::new_request_id(&mut self.rng);
                Ok(Dispatched::Respond(Box::new(
                    move |out: &mut Vec<u8>, close| {
                        http::write_head(out, 204, 0, &request_id, close);
                        out.extend_from_slice(b"\r\n");
                    },
                )))
            }
            InvocationType::Event => {
                let tag = ASYNC_TAG | tag_of(key);
                shard
                    .submit_invocation(&function, body, tag, &invocation(false))
                    .map_err(|e| invoke_error(&e, &arn()))?;
                let request_id = api::new_request_id(&mut self.rng);
                Ok(Dispatched::Respond(Box::new(
                    move |out: &mut Vec<u8>, close| {
                        http::write_head(out, 202, 0, &request_id, close);
                        out.extend_from_slice(b"\r\n");
                    },
                )))
            }
            InvocationType::RequestResponse => {
                let tail = head
                    .header(buf, "x-amz-log-type")
                    .is_some_and(|v| v == b"Tail");
                shard
                    .submit_invocation(&function, body, tag_of(key), &invocation(tail))
                    .map_err(|e| invoke_error(&e, &arn()))?;
                Ok(Dispatched::Pending(Phase::Invoking { function, tail }))
            }
        }
    }

    fn on_completion(&mut self, shard: &mut Shard, completion: Completion) {
        if completion.tag & ASYNC_TAG != 0 {
            if let Err(e) = &completion.result {
                tracing::info!(error = %e, "an asynchronous invocation did not run");
            }
            shard.recycle(completion.payload);
            return;
        }
        let key = key_of(completion.tag);
        let draining = self.drain.requested.load(Ordering::Acquire);
        let Some(conn) = self.conn(key) else {
            shard.recycle(completion.payload);
            return;
        };
        let Phase::Invoking { function, tail } = std::mem::replace(&mut conn.phase, Phase::Reading)
        else {
            shard.recycle(completion.payload);
            return;
        };
        match completion.result {
            Ok(outcome) => {
                let log = tail.then(|| {
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        completion.log_tail.as_deref().unwrap_or_default(),
                    )
                });
                let payload = &completion.payload;
                let version = function.version();
                let close = conn.close_after || draining;
                conn.close_after = close;
                conn.request_started = None;
                write_result(
                    &mut conn.out,
                    Persist::new(close, conn.http10),
                    version,
                    &outcome,
                    payload,
                    log.as_deref(),
                );
                shard.recycle(completion.payload);
                self.flush(shard, key);
            }
            Err(e) => {
                shard.recycle(completion.payload);
                let arn = self.config.identity.function_arn(function.name(), None);
                self.respond_error(shard, key, &invoke_error(&e, &arn), false);
            }
        }
    }

    fn on_reply(&mut self, shard: &mut Shard, reply: ControlReply) {
        let key = key_of(reply.tag);
        if !self
            .conn(key)
            .is_some_and(|c| matches!(c.phase, Phase::Control))
        {
            return;
        }
        let request_id = reply.request_id;
        let response = reply.response;
        self.respond(
            shard,
            key,
            move |out, persist| response.write(out, &request_id, persist),
            false,
        );
    }

    /// Closes connections that stalled.
    fn sweep(&mut self, shard: &mut Shard, now: Instant) {
        let timeouts = self.config.timeouts;
        let mut expired = Vec::new();
        let mut slow = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(conn) = &slot.conn else { continue };
            let key = Key {
                slot: u32::try_from(i).unwrap_or(u32::MAX),
                generation: slot.generation,
            };
            // Busy, answering, or already told to go: not for the sweep (and `out` must not be
            // touched while a send is armed).
            if conn.closing
                || conn.close_after
                || conn.send_armed
                || !conn.out.is_empty()
                || !matches!(conn.phase, Phase::Reading)
            {
                continue;
            }
            let quiet = now.duration_since(conn.last_active);
            match conn.request_started {
                None if quiet >= timeouts.idle => expired.push(key),
                Some(first) if !conn.buf.is_empty() => {
                    let head_done = matches!(parse_head(&conn.buf), Ok(Parsed::Head(_)));
                    if (!head_done && now.duration_since(first) >= timeouts.head)
                        || (head_done && quiet >= timeouts.body)
                    {
                        slow.push(key);
                    }
                }
                _ => {}
            }
        }
        for key in expired {
            self.close(key);
        }
        for key in slow {
            // The receive still armed is ended by the shutdown that follows the response.
            let request_id = api::new_request_id(&mut self.rng);
            if let Some(conn) = self.conn(key) {
                conn.recv_armed = conn.recv_armed && {
                    // SAFETY: shutting down reads on our fd ends the armed receive.
                    unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RD) };
                    true
                };
                conn.close_after = true;
                conn.request_started = None;
                let response = ApiError::new(
                    408,
                    "RequestTimeoutException",
                    "the request did not arrive in time",
                )
                .response();
                response.write(&mut conn.out, &request_id, Persist::Close);
            }
            // Sent once the receive has completed (buffers are not touched while armed).
            if self.conn(key).is_some_and(|c| !c.recv_armed) {
                self.flush(shard, key);
            }
        }
    }

    fn start_draining(&mut self) {
        for listener in self.listeners.drain(..) {
            // SAFETY: ends the multishot accept on this listener; the ring holds its own
            // reference to the socket until then.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    fn open_connections(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.is_some()).count()
    }
}

impl ShardService for FrontDoor {
    fn turn(&mut self, shard: &mut Shard) {
        if !self.armed && self.drain.open.load(Ordering::Acquire) {
            self.armed = true;
            for (i, listener) in self.listeners.iter().enumerate() {
                shard
                    .uring()
                    .arm_accept(u32::try_from(i).unwrap_or(0), listener.as_fd());
            }
        }
        let mut worked = false;
        while let Ok(reply) = self.replies.try_recv() {
            worked = true;
            self.on_reply(shard, reply);
        }
        let mut net = std::mem::take(&mut self.net);
        shard.take_net_events(&mut net);
        worked |= !net.is_empty();
        for event in net.drain(..) {
            self.on_net(shard, event);
        }
        self.net = net;
        let mut completions = std::mem::take(&mut self.completions);
        shard.poll(&mut completions, None);
        worked |= !completions.is_empty();
        for completion in completions.drain(..) {
            self.on_completion(shard, completion);
        }
        self.completions = completions;
        // Parsing a request can finish another response, which readies the connection again:
        // loop until nothing is left (one request per connection per pass).
        while !self.ready.is_empty() {
            worked = true;
            let mut ready = std::mem::take(&mut self.ready);
            ready.dedup();
            for key in ready.drain(..) {
                self.advance(shard, key);
            }
            if self.ready.is_empty() {
                self.ready = ready;
            }
        }
        let now = Instant::now();
        if !self.accept_retry.is_empty() && !self.drain.requested.load(Ordering::Acquire) {
            let due: Vec<u32> = self
                .accept_retry
                .iter()
                .filter(|(_, at)| now >= *at)
                .map(|(i, _)| *i)
                .collect();
            self.accept_retry.retain(|(_, at)| now < *at);
            for i in due {
                if let Some(listener) = self.listeners.get(i as usize) {
                    shard.uring().arm_accept(i, listener.as_fd());
                }
            }
        }
        if now >= self.next_sweep {
            let timeouts = self.config.timeouts;
            let finest = timeouts.head.min(timeouts.body).min(timeouts.idle);
            self.next_sweep =
                now + (finest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            self.sweep(shard, now);
            shard.housekeeping();
        }
        if self.drain.requested.load(Ordering::Acquire) && !self.drained {
            self.start_draining();
            let idle: Vec<Key> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let c = s.conn.as_ref()?;
                    let idle = matches!(c.phase, Phase::Reading)
                        && c.out.is_empty()
                        && c.request_started.is_none();
                    idle.then_some(Key {
                        slot: u32::try_from(i).unwrap_or(u32::MAX),
                        generation: s.generation,
                    })
                })
                .collect();
            for key in idle {
                self.close(key);
            }
            if self.open_connections() == 0 && shard.in_flight() == 0 {
                self.drained = true;
                self.drain.finished.fetch_add(1, Ordering::AcqRel);
            }
        }
        if !worked {
            shard.wait(now + Duration::from_millis(if self.drained { 100 } else { 1000 }));
        }
    }

    fn stop(&mut self, _shard: &mut Shard) {
        self.start_draining();
        for slot in &mut self.slots {
            if let Some(conn) = &slot.conn {
                // SAFETY: shutdown on an fd we own; the ring's operations on it end.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
    }
}

/// A TCP listener with `SO_REUSEPORT`, so that every shard accepts on its own socket.
pub(crate) fn tcp_listener(addr: std::net::SocketAddr) -> std::io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; the fd is owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        crate::sys::set_socket_option(fd.as_fd(), libc::SOL_SOCKET, option, 1)?;
    }
    let (storage, len) = crate::sys::sockaddr(addr);
    // SAFETY: bind/listen with a sockaddr of the stated length.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&storage).cast(), len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 1024) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// `X-Amz-Client-Context`: base64 of a JSON object (at most 3583 bytes encoded, as Lambda
/// allows). Returned as one line of compact JSON, as the runtime receives it.
fn decode_client_context(encoded: &[u8]) -> Result<Vec<u8>, ApiError> {
    let bad = || {
        ApiError::new(
            400,
            "InvalidRequestContentException",
            "Client context must be a valid Base64-encoded JSON object.",
        )
    };
    if encoded.len() > 3583 {
        return Err(ApiError::new(
            400,
            "InvalidRequestContentException",
            "Client context must be at most 3583 bytes, Base64-encoded.",
        ));
    }
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
        .map_err(|_| bad())?;
    let value: serde_json::Value = serde_json::from_slice(&decoded).map_err(|_| bad())?;
    if !value.is_object() {
        return Err(bad());
    }
    // One line of ASCII (a header value): non-ASCII characters, which JSON allows only inside
    // strings, are written as \u escapes.
    let text = serde_json::to_string(&value).map_err(|_| bad())?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::decode_client_context;

    #[test]
    fn client_context_becomes_one_ascii_line() {
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "{\"custom\": {\"name\": \"caf\u{e9} \u{1f600}\"},\n \"env\": {}}",
        );
        let decoded = decode_client_context(encoded.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            r#"{"custom":{"name":"caf\u00e9 \ud83d\ude00"},"env":{}}"#
        );
        assert!(decode_client_context(b"not base64!").is_err());
        let array = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "[1]");
        assert!(decode_client_context(array.as_bytes()).is_err());
    }
}
