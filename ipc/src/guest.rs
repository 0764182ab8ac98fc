//! The environment's end of a channel. The guest trusts the host, but still checks what it reads
//! so that a corrupted channel ends the runtime with an error rather than undefined behaviour.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::arena::ArenaFifo;
use crate::doorbell::AdaptiveSpin;
use crate::error::{ChannelError, ProtocolError, RingSide};
use crate::layout::{
    ResponseStatus, ARENA_LEN, CONTROL_LEN, KIND_INVOKE, MAGIC, MAX_CONTEXT, MAX_PAYLOAD,
    REQ_ARENA_OFFSET, RESP_ARENA_OFFSET, SLOTS, TOTAL_LEN, VERSION,
};
use crate::ring::{Consumer, Producer};
use crate::sync::Ordering;
use crate::sys::{self, Mapping};

/// Environment variable holding the channel's fd number in the environment.
pub const CHANNEL_FD_ENV: &str = "HEARTH_CHANNEL_FD";

/// How long the guest spins for the next request before sleeping, at most.
const GUEST_SPIN_MAX: Duration = Duration::from_micros(50);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One request, as read (and checked) from its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRequest {
    /// Id to answer with.
    pub id: u64,
    /// Deadline as Unix time in milliseconds: when the request was taken plus its timeout.
    pub deadline_ms: u64,
    /// Lambda request id (UUID bytes).
    pub request_id: [u8; 16],
    offset: u32,
    len: u32,
    context_len: u32,
}

/// The environment's end of one channel.
#[derive(Debug)]
pub struct GuestChannel {
    map: Mapping,
    req: Consumer,
    resp: Producer,
    arena: ArenaFifo,
    /// Arena position to free up to once the host consumes each response slot.
    resp_ends: [u64; SLOTS as usize],
    reclaimed: u32,
    spin: AdaptiveSpin,
    /// Flags of the next response.
    last: u32,
}

impl GuestChannel {
    /// Adopts the channel whose fd number is in [`CHANNEL_FD_ENV`].
    pub fn from_env() -> Result<Self, ChannelError> {
        let missing = ChannelError::Env {
            var: CHANNEL_FD_ENV,
        };
        let fd = std::env::var(CHANNEL_FD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .and_then(sys::adopt_fd)
            .ok_or(missing)?;
        Self::from_fd(fd)
    }

    /// Maps the channel behind `fd` and checks its header against this build's layout.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, ChannelError> {
        let size = sys::file_size(fd.as_fd()).map_err(ChannelError::Stat)?;
        if size < TOTAL_LEN as u64 {
            return Err(ChannelError::Size {
                expected: TOTAL_LEN,
                actual: size,
            });
        }
        let map = Mapping::map_shared(fd.as_fd(), TOTAL_LEN, false).map_err(ChannelError::Map)?;
        drop(fd);
        let channel = Self {
            map,
            req: Consumer::new(),
            resp: Producer::new(),
            arena: ArenaFifo::new(ARENA_LEN as u64),
            resp_ends: [0; SLOTS as usize],
            reclaimed: 0,
            spin: AdaptiveSpin::new(Duration::ZERO, GUEST_SPIN_MAX),
            last: 0,
        };
        let header = &channel.map.control().header;
        let checks: [(&'static str, u64, u64); 6] = [
            ("magic", header.magic.load(Ordering::Acquire), MAGIC),
            (
                "version",
                u64::from(header.version.load(Ordering::Relaxed)),
                u64::from(VERSION),
            ),
            (
                "slots",
                u64::from(header.slots.load(Ordering::Relaxed)),
                u64::from(SLOTS),
            ),
            (
                "control_len",
                header.control_len.load(Ordering::Relaxed),
                CONTROL_LEN as u64,
            ),
            (
                "arena_len",
                header.arena_len.load(Ordering::Relaxed),
                ARENA_LEN as u64,
            ),
            (
                "total_len",
                header.total_len.load(Ordering::Relaxed),
                TOTAL_LEN as u64,
            ),
        ];
        for (field, found, want) in checks {
            if found != want {
                return Err(ChannelError::Layout { field, found });
            }
        }
        Ok(channel)
    }

    /// Waits for the next request: spins for an adaptive time, then sleeps on the doorbell.
    pub fn wait_next(&mut self) -> Result<GuestRequest, ProtocolError> {
        let start = Instant::now();
        loop {
            let tail = &self.map.control().req_tail;
            self.spin.spin(|| self.req.maybe_available(tail));
            // `available` is the Acquire load that makes the slot's contents visible.
            if self.req.available(tail, RingSide::Request)? > 0 {
                break;
            }
            let bell = &self.map.control().guest_bell;
            bell.prepare();
            if self.req.recheck(tail, RingSide::Request)? > 0 {
                bell.cancel();
                break;
            }
            bell.sleep(None);
        }
        self.spin.record(start.elapsed());
        self.take()
    }

    /// Like [`GuestChannel::wait_next`] but returns `None` instead of sleeping.
    pub fn try_next(&mut self) -> Result<Option<GuestRequest>, ProtocolError> {
        if self
            .req
            .available(&self.map.control().req_tail, RingSide::Request)?
            == 0
        {
            return Ok(None);
        }
        self.take().map(Some)
    }

    fn take(&mut self) -> Result<GuestRequest, ProtocolError> {
        // `available` (Acquire on the tail) was checked by the caller.
        let control = self.map.control();
        let slot = &control.req_slots[self.req.slot()];
        let kind = slot.kind.load(Ordering::Relaxed);
        let request = GuestRequest {
            id: slot.id.load(Ordering::Relaxed),
            deadline_ms: now_ms().saturating_add(slot.timeout_ms.load(Ordering::Relaxed)),
            request_id: {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&slot.request_id[0].load(Ordering::Relaxed).to_le_bytes());
                id[8..].copy_from_slice(&slot.request_id[1].load(Ordering::Relaxed).to_le_bytes());
                id
            },
            offset: slot.offset.load(Ordering::Relaxed),
            len: slot.len.load(Ordering::Relaxed),
            context_len: slot.context_len.load(Ordering::Relaxed),
        };
        if kind != KIND_INVOKE {
            return Err(ProtocolError::Kind(kind));
        }
        if request.context_len > MAX_CONTEXT
            || request.context_len > request.len
            || request.len - request.context_len > MAX_PAYLOAD
            || u64::from(request.offset) + u64::from(request.len) > ARENA_LEN as u64
        {
            return Err(ProtocolError::Bounds {
                offset: request.offset,
                len: request.len,
            });
        }
        self.req.release(&control.req_head);
        Ok(request)
    }

    /// The payload of `request`. It stays valid until this request is answered: the host does
    /// not reuse its arena bytes before it has read the response.
    pub fn payload(&self, request: &GuestRequest) -> &[u8] {
        let (context, all) = self.request_bytes(request);
        all.get(context..).unwrap_or_default()
    }

    /// The context the host passed with `request` (extra Runtime API header lines for
    /// hearth-init; empty for native functions). Valid as long as the payload.
    pub fn context(&self, request: &GuestRequest) -> &[u8] {
        let (context, all) = self.request_bytes(request);
        all.get(..context).unwrap_or_default()
    }

    fn request_bytes(&self, request: &GuestRequest) -> (usize, &[u8]) {
        let start = self
            .map
            .as_ptr()
            .wrapping_add(REQ_ARENA_OFFSET + request.offset as usize);
        // SAFETY: `take` checked offset + len <= ARENA_LEN, so the range lies inside the
        // request arena of our mapping, which lives as long as `&self`. The host does not write
        // these bytes until the response to this request has been consumed (see `arena.rs`).
        let all = unsafe { std::slice::from_raw_parts(start, request.len as usize) };
        (request.context_len as usize, all)
    }

    /// Answers request `id` with `status` and `payload`, and wakes the host if it sleeps.
    /// A payload over [`MAX_PAYLOAD`] is answered with [`ResponseStatus::TooLarge`] instead.
    pub fn respond(
        &mut self,
        id: u64,
        status: ResponseStatus,
        payload: &[u8],
    ) -> Result<(), ProtocolError> {
        self.respond_timed(id, status, payload, 0)
    }

    /// Like [`GuestChannel::respond`], reporting the run time the guest measured (for the
    /// host's `REPORT` line).
    pub fn respond_timed(
        &mut self,
        id: u64,
        status: ResponseStatus,
        payload: &[u8],
        run_us: u64,
    ) -> Result<(), ProtocolError> {
        let (status, len, body) = match u32::try_from(payload.len()) {
            Ok(len) if len <= MAX_PAYLOAD && status != ResponseStatus::TooLarge => {
                (status, len, payload)
            }
            _ => (
                ResponseStatus::TooLarge,
                u32::try_from(payload.len()).unwrap_or(u32::MAX),
                &[][..],
            ),
        };
        self.publish(id, status, len, body, run_us)
    }

    /// Whether someone else consumed requests or published responses on this channel since
    /// this end attached (another guest attached to the same fd, e.g. a native runtime started
    /// by hearth-init). This end's ring positions are then stale and it must not answer.
    pub fn foreign_progress(&self) -> bool {
        let control = self.map.control();
        control.req_head.load(Ordering::Relaxed) != self.req.head()
            || control.resp_tail.load(Ordering::Relaxed) != self.resp.tail()
    }

    /// Takes over from another guest on this channel that stopped (a native runtime started by
    /// hearth-init, which read the ring itself and died): continues at its ring positions and,
    /// if it left exactly one request taken and unanswered while the host had read every earlier
    /// answer, returns that request so it can be answered. `None`: the state is not that clear,
    /// and this end must not answer.
    pub fn take_over(&mut self) -> Result<Option<GuestRequest>, ProtocolError> {
        let control = self.map.control();
        let req_head = control.req_head.load(Ordering::Acquire);
        let resp_tail = control.resp_tail.load(Ordering::Acquire);
        let resp_head = control.resp_head.load(Ordering::Acquire);
        if resp_head != resp_tail || req_head.wrapping_sub(resp_tail) != 1 {
            return Ok(None);
        }
        self.req = Consumer::at(req_head.wrapping_sub(1));
        self.resp = Producer::at(resp_tail);
        self.arena = ArenaFifo::new(ARENA_LEN as u64);
        self.resp_ends = [0; SLOTS as usize];
        self.reclaimed = resp_tail;
        // The slot is intact: the host does not reuse it before this request is answered.
        self.take().map(Some)
    }

    /// Marks the next response as the environment's last (see
    /// [`crate::layout::RESPONSE_LAST`]): the host retires the environment after it.
    pub fn mark_last(&mut self) {
        self.last = crate::layout::RESPONSE_LAST;
    }

    /// Answers request `id` with [`ResponseStatus::TooLarge`]: the function's response of
    /// `size` bytes (over [`MAX_PAYLOAD`]) was refused without being stored.
    pub fn respond_too_large(
        &mut self,
        id: u64,
        size: u64,
        run_us: u64,
    ) -> Result<(), ProtocolError> {
        let len = u32::try_from(size).unwrap_or(u32::MAX);
        self.publish(id, ResponseStatus::TooLarge, len, &[], run_us)
    }

    fn publish(
        &mut self,
        id: u64,
        status: ResponseStatus,
        len: u32,
        body: &[u8],
        run_us: u64,
    ) -> Result<(), ProtocolError> {
        let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let (offset, end) = self.reserve(body_len)?;
        let flags = std::mem::take(&mut self.last);
        let dst = self
            .map
            .as_ptr()
            .wrapping_add(RESP_ARENA_OFFSET + offset as usize);
        // SAFETY: `reserve` returned offset + body_len <= ARENA_LEN, inside the response arena.
        unsafe { sys::copy_to_shared(body, dst) };
        let control = self.map.control();
        let slot = &control.resp_slots[self.resp.slot()];
        slot.id.store(id, Ordering::Relaxed);
        slot.offset.store(offset, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.status.store(status as u32, Ordering::Relaxed);
        slot.run_us.store(run_us, Ordering::Relaxed);
        slot.flags.store(flags, Ordering::Relaxed);
        self.resp_ends[self.resp.slot()] = end;
        self.resp.publish(&control.resp_tail);
        control.host_bell.notify();
        Ok(())
    }

    /// Finds room for a response payload, waiting (briefly sleeping) while the host has not yet
    /// consumed earlier responses.
    fn reserve(&mut self, len: u32) -> Result<(u32, u64), ProtocolError> {
        loop {
            let free = self
                .resp
                .free(&self.map.control().resp_head, RingSide::Response)?;
            while self.reclaimed != self.resp.head_seen() {
                self.arena
                    .release_to(self.resp_ends[(self.reclaimed % SLOTS) as usize]);
                self.reclaimed = self.reclaimed.wrapping_add(1);
            }
            if free > 0 {
                if let Some(space) = self.arena.alloc(len) {
                    return Ok(space);
                }
            }
            // The host consumes responses as soon as it sees them; this only waits when many
            // large responses are queued. Nobody wakes this futex: it is a 50 µs sleep.
            sys::futex_wait(
                &self.map.control().resp_head,
                self.resp.head_seen(),
                Some(Duration::from_micros(50)),
            );
        }
    }
}
