//! The scheduler's end of a channel. Everything the guest can write is hostile here.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::arena::ArenaFifo;
use crate::doorbell::Bell;
use crate::error::{ChannelError, ProtocolError, RingSide, SubmitError};
use crate::layout::{
    ResponseStatus, ARENA_LEN, CONTROL_LEN, KIND_INVOKE, MAGIC, MAX_CONTEXT, MAX_PAYLOAD,
    REQ_ARENA_OFFSET, RESP_ARENA_OFFSET, SLOTS, TOTAL_LEN, VERSION,
};
use crate::ring::{Consumer, Producer};
use crate::sync::Ordering;
use crate::sys::{self, Mapping};

/// What the host tells the guest about a request besides its payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestMeta<'a> {
    /// The invocation's timeout in milliseconds. The guest turns it into a deadline when it
    /// takes the request, which for a request queued behind others is when it starts to run.
    pub timeout_ms: u64,
    /// Lambda request id (UUID bytes).
    pub request_id: [u8; 16],
    /// Opaque bytes passed before the payload (hearth-init turns them into Runtime API headers;
    /// native runtimes ignore them). At most [`MAX_CONTEXT`].
    pub context: &'a [u8],
}

/// A checked response, its payload copied into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Id of the request it answers (the oldest outstanding one).
    pub id: u64,
    /// What the handler did.
    pub status: ResponseStatus,
    /// Payload length; for [`ResponseStatus::TooLarge`], the size the handler tried to return.
    pub len: u32,
    /// The guest's own measure of the run time in microseconds (0: none). Unchecked: clamp it.
    pub run_us: u64,
    /// The guest said it ends after this response: do not give it another request.
    pub last: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Outstanding {
    id: u64,
    arena_end: u64,
}

/// The scheduler's end of one channel.
#[derive(Debug)]
pub struct HostChannel {
    map: Mapping,
    fd: OwnedFd,
    req: Producer,
    resp: Consumer,
    arena: ArenaFifo,
    /// Requests sent and not yet answered, oldest first (a ring of SLOTS entries).
    outstanding: [Outstanding; SLOTS as usize],
    out_head: u32,
    out_len: u32,
    next_id: u64,
}

impl HostChannel {
    /// Creates a channel: a sealed memfd of [`TOTAL_LEN`] bytes with an initialised header.
    pub fn create() -> Result<Self, ChannelError> {
        let fd = sys::memfd_create(c"hearth-channel").map_err(ChannelError::MemfdCreate)?;
        sys::ftruncate(fd.as_fd(), TOTAL_LEN).map_err(|source| ChannelError::Truncate {
            len: TOTAL_LEN,
            source,
        })?;
        sys::seal_size(fd.as_fd()).map_err(ChannelError::Seal)?;
        let map = Mapping::map_shared(fd.as_fd(), TOTAL_LEN, true).map_err(ChannelError::Map)?;
        let channel = Self {
            map,
            fd,
            req: Producer::new(),
            resp: Consumer::new(),
            arena: ArenaFifo::new(ARENA_LEN as u64),
            outstanding: [Outstanding::default(); SLOTS as usize],
            out_head: 0,
            out_len: 0,
            next_id: 1,
        };
        let header = &channel.map.control().header;
        header.version.store(VERSION, Ordering::Relaxed);
        header.slots.store(SLOTS, Ordering::Relaxed);
        header
            .control_len
            .store(CONTROL_LEN as u64, Ordering::Relaxed);
        header.arena_len.store(ARENA_LEN as u64, Ordering::Relaxed);
        header.total_len.store(TOTAL_LEN as u64, Ordering::Relaxed);
        header.magic.store(MAGIC, Ordering::Release);
        Ok(channel)
    }

    /// The memfd, to hand to the environment (it is `O_CLOEXEC`; the spawner dups it).
    pub fn guest_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn arena_ptr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.map.len());
        self.map.as_ptr().wrapping_add(offset)
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.out_len
    }

    /// Queues one request and rings the guest's doorbell if it sleeps. Returns the request's id.
    pub fn submit(&mut self, payload: &[u8], meta: &RequestMeta) -> Result<u64, SubmitError> {
        let payload_len = u32::try_from(payload.len())
            .ok()
            .filter(|&len| len <= MAX_PAYLOAD)
            .ok_or(SubmitError::TooLarge(payload.len()))?;
        let context_len = u32::try_from(meta.context.len())
            .ok()
            .filter(|&len| len <= MAX_CONTEXT)
            .ok_or(SubmitError::TooLarge(meta.context.len()))?;
        let len = payload_len + context_len;
        if self.out_len == SLOTS {
            return Err(SubmitError::Full);
        }
        let control = self.map.control();
        if self.req.free(&control.req_head, RingSide::Request)? == 0 {
            return Err(SubmitError::Full);
        }
        let (offset, arena_end) = self.arena.alloc(len).ok_or(SubmitError::Full)?;
        let at = REQ_ARENA_OFFSET + offset as usize;
        // SAFETY: `alloc` returned `offset + len <= ARENA_LEN` with len = context + payload, so
        // the context's destination lies inside the request arena of our mapping.
        unsafe { sys::copy_to_shared(meta.context, self.arena_ptr(at)) };
        // SAFETY: as above: the payload follows the context inside the allocation.
        unsafe { sys::copy_to_shared(payload, self.arena_ptr(at + context_len as usize)) };

        let id = self.next_id;
        self.next_id += 1;
        let control = self.map.control();
        let slot = &control.req_slots[self.req.slot()];
        slot.id.store(id, Ordering::Relaxed);
        slot.offset.store(offset, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.kind.store(KIND_INVOKE, Ordering::Relaxed);
        slot.context_len.store(context_len, Ordering::Relaxed);
        slot.timeout_ms.store(meta.timeout_ms, Ordering::Relaxed);
        let (lo, hi) = meta.request_id.split_at(8);
        slot.request_id[0].store(
            u64::from_le_bytes(lo.try_into().unwrap_or_default()),
            Ordering::Relaxed,
        );
        slot.request_id[1].store(
            u64::from_le_bytes(hi.try_into().unwrap_or_default()),
            Ordering::Relaxed,
        );
        self.req.publish(&control.req_tail);

        let at = (self.out_head + self.out_len) % SLOTS;
        self.outstanding[at as usize] = Outstanding { id, arena_end };
        self.out_len += 1;
        self.map.control().guest_bell.notify();
        Ok(id)
    }

    /// Whether the guest has taken request `id` off the request ring (it may have started
    /// running it). Reads the guest's index once; if the guest corrupted it this says `true`:
    /// a hostile guest can only change how its own failure is reported.
    pub fn taken(&mut self, id: u64) -> bool {
        if self
            .req
            .free(&self.map.control().req_head, RingSide::Request)
            .is_err()
        {
            return true;
        }
        // Request `id` went into ring index `id - 1` (ids start at 1, one per index).
        let index = u32::try_from(id.wrapping_sub(1) & u64::from(u32::MAX)).unwrap_or(0);
        let passed = self.req.head_seen().wrapping_sub(index);
        passed != 0 && passed <= SLOTS
    }

    /// Unchecked hint for spin loops: the guest may have published a response.
    pub fn response_ready(&self) -> bool {
        self.resp.maybe_available(&self.map.control().resp_tail)
    }

    /// Takes the next response, if any: reads the slot once, checks it against the oldest
    /// outstanding request and the arena bounds, copies its payload into `out`, and frees the
    /// slot. On error the channel must be discarded.
    pub fn poll(&mut self, out: &mut Vec<u8>) -> Result<Option<Completion>, ProtocolError> {
        let control = self.map.control();
        if self
            .resp
            .available(&control.resp_tail, RingSide::Response)?
            == 0
        {
            return Ok(None);
        }
        let slot = &control.resp_slots[self.resp.slot()];
        let id = slot.id.load(Ordering::Relaxed);
        let offset = slot.offset.load(Ordering::Relaxed);
        let len = slot.len.load(Ordering::Relaxed);
        let status_word = slot.status.load(Ordering::Relaxed);
        let run_us = slot.run_us.load(Ordering::Relaxed);
        let last = slot.flags.load(Ordering::Relaxed) & crate::layout::RESPONSE_LAST != 0;

        if self.out_len == 0 {
            return Err(ProtocolError::Unsolicited { id });
        }
        let expected = self.outstanding[self.out_head as usize];
        if id != expected.id {
            return Err(ProtocolError::WrongId {
                expected: expected.id,
                got: id,
            });
        }
        let status =
            ResponseStatus::from_word(status_word).ok_or(ProtocolError::Status(status_word))?;
        if status == ResponseStatus::TooLarge {
            out.clear();
        } else {
            let end = u64::from(offset) + u64::from(len);
            if len > MAX_PAYLOAD || end > ARENA_LEN as u64 {
                return Err(ProtocolError::Bounds { offset, len });
            }
            // SAFETY: `offset + len <= ARENA_LEN` was checked on the values copied above, so the
            // source lies inside the response arena of our mapping.
            unsafe {
                sys::copy_from_shared(
                    self.arena_ptr(RESP_ARENA_OFFSET + offset as usize),
                    len as usize,
                    out,
                )
            };
        }
        self.resp.release(&self.map.control().resp_head);
        self.out_head = (self.out_head + 1) % SLOTS;
        self.out_len -= 1;
        self.arena.release_to(expected.arena_end);
        Ok(Some(Completion {
            id,
            status,
            len,
            run_us,
            last,
        }))
    }

    /// Checks that an idle channel holds no response (an environment that answered twice, or
    /// wrote into the response ring on its own, fails this).
    pub fn check_quiet(&self) -> Result<(), ProtocolError> {
        let control = self.map.control();
        match self
            .resp
            .available(&control.resp_tail, RingSide::Response)?
        {
            0 => Ok(()),
            _ => Err(ProtocolError::Unsolicited {
                id: control.resp_slots[self.resp.slot()]
                    .id
                    .load(Ordering::Relaxed),
            }),
        }
    }

    /// The host's doorbell. To sleep for a response: [`Bell::prepare`], then
    /// [`HostChannel::recheck`], then sleep only if it found nothing.
    pub fn host_bell(&self) -> &Bell {
        &self.map.control().host_bell
    }

    /// After [`Bell::prepare`] on the host bell: whether a response arrived meanwhile. `Err` if
    /// the guest corrupted the response ring.
    pub fn recheck(&self) -> Result<bool, ProtocolError> {
        Ok(self
            .resp
            .recheck(&self.map.control().resp_tail, RingSide::Response)?
            > 0)
    }

    /// Whether the guest says it is asleep waiting for a request (a hint).
    pub fn guest_sleeping(&self) -> bool {
        self.map.control().guest_bell.is_sleeping()
    }
}
