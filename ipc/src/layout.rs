//! The `#[repr(C)]` layout of a channel's shared memory.
//!
//! Every field that lives in shared memory is an atomic, so neither side ever holds a plain
//! reference to bytes the other side may change. Payload arenas are reached only through raw
//! pointers and copied out before use. Producer and consumer indices sit on separate cache lines
//! ([`CachePadded`]) so the two sides do not false-share.
//!
//! Ownership of each field (who writes it) is written next to it; the other side only reads.

use crossbeam_utils::CachePadded;

use crate::doorbell::Bell;
use crate::sync::{AtomicU32, AtomicU64};

/// Magic number at offset 0 of every channel ("HEARTHC1").
pub const MAGIC: u64 = u64::from_be_bytes(*b"HEARTHC1");
/// Layout version; bumped on any change to this file.
pub const VERSION: u32 = 3;

/// Slots per ring: the most invocations one environment can have queued.
#[cfg(not(loom))]
pub const SLOTS: u32 = 64;
/// Slots per ring (kept tiny under loom so the model stays tractable).
#[cfg(loom)]
pub const SLOTS: u32 = 2;

/// Largest request or response payload, in bytes: Lambda's synchronous invocation limit
/// (its error messages name 6291556 bytes).
pub const MAX_PAYLOAD: u32 = 6_291_556;

/// Largest invocation context (extra Runtime API headers the host passes before a request's
/// payload: invoked ARN, client context, identity, trace id).
pub const MAX_CONTEXT: u32 = 16 * 1024;

const PAGE: usize = 4096;

const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Bytes in each payload arena: one maximal payload and context, page aligned.
pub const ARENA_LEN: usize = round_up((MAX_PAYLOAD + MAX_CONTEXT) as usize, PAGE);
/// Bytes of the control block, page aligned.
pub const CONTROL_LEN: usize = round_up(std::mem::size_of::<Control>(), PAGE);
/// Offset of the request arena.
pub const REQ_ARENA_OFFSET: usize = CONTROL_LEN;
/// Offset of the response arena.
pub const RESP_ARENA_OFFSET: usize = CONTROL_LEN + ARENA_LEN;
/// Total size of the memfd.
pub const TOTAL_LEN: usize = CONTROL_LEN + 2 * ARENA_LEN;

/// Response flag: the environment ends after this response (its runtime exited or failed to
/// start); the host must not give it another request.
pub const RESPONSE_LAST: u32 = 1;

/// Kind of a request slot.
pub const KIND_INVOKE: u32 = 1;

/// Status of a response slot, as written by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ResponseStatus {
    /// The handler returned a payload.
    Ok = 0,
    /// The handler failed; the payload is Lambda's error JSON
    /// (`{"errorMessage": ..., "errorType": ...}`).
    Error = 1,
    /// The handler's response was larger than [`MAX_PAYLOAD`]; `len` holds its size and no
    /// payload was written.
    TooLarge = 2,
    /// The runtime reported the failure through the Runtime API (`/error`, `/init/error`) or
    /// exited: Lambda answers these with `X-Amz-Function-Error: Unhandled`. The payload is the
    /// error document.
    Unhandled = 3,
}

impl ResponseStatus {
    /// Decodes a status word read from shared memory.
    pub fn from_word(word: u32) -> Option<Self> {
        match word {
            0 => Some(Self::Ok),
            1 => Some(Self::Error),
            2 => Some(Self::TooLarge),
            3 => Some(Self::Unhandled),
            _ => None,
        }
    }
}

/// Written once by the host before the guest exists; read by the guest to find its way.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// [`SLOTS`].
    pub slots: AtomicU32,
    /// [`CONTROL_LEN`].
    pub control_len: AtomicU64,
    /// [`ARENA_LEN`].
    pub arena_len: AtomicU64,
    /// [`TOTAL_LEN`].
    pub total_len: AtomicU64,
}

/// One request. Written by the host, read by the guest.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ReqSlot {
    /// Invocation id: host-assigned, strictly increasing per channel, starting at 1.
    pub id: AtomicU64,
    /// Payload offset in the request arena.
    pub offset: AtomicU32,
    /// Length of the context and the payload after it.
    pub len: AtomicU32,
    /// [`KIND_INVOKE`].
    pub kind: AtomicU32,
    /// Length of the context at the start of the payload bytes (at most [`MAX_CONTEXT`]).
    pub context_len: AtomicU32,
    /// Timeout in milliseconds, counted from when the guest takes the request.
    pub timeout_ms: AtomicU64,
    /// Lambda request id (a UUID), 16 raw bytes.
    pub request_id: [AtomicU64; 2],
    /// Reserved, zero.
    pub pad: [AtomicU64; 2],
}

/// One response. Written by the guest, read (once, then checked) by the host.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RespSlot {
    /// Id of the request this answers.
    pub id: AtomicU64,
    /// Payload offset in the response arena.
    pub offset: AtomicU32,
    /// Payload length.
    pub len: AtomicU32,
    /// A [`ResponseStatus`] word.
    pub status: AtomicU32,
    /// [`RESPONSE_LAST`] or 0.
    pub flags: AtomicU32,
    /// Microseconds the guest measured between taking the request and answering it (0: not
    /// measured). A hint for reports only: the host clamps it to what it measured itself.
    pub run_us: AtomicU64,
    /// Reserved.
    pub pad: [AtomicU64; 4],
}

/// The control block at offset 0 of the memfd.
#[repr(C)]
#[derive(Debug)]
pub struct Control {
    /// Layout description; host-written before the guest starts.
    pub header: CachePadded<Header>,
    /// Request ring producer index. Host writes.
    pub req_tail: CachePadded<AtomicU32>,
    /// Request ring consumer index. Guest writes.
    pub req_head: CachePadded<AtomicU32>,
    /// Guest's doorbell: set when the guest sleeps waiting for a request.
    pub guest_bell: CachePadded<Bell>,
    /// Response ring producer index. Guest writes.
    pub resp_tail: CachePadded<AtomicU32>,
    /// Response ring consumer index. Host writes.
    pub resp_head: CachePadded<AtomicU32>,
    /// Host's doorbell: set when the host sleeps waiting for a response.
    pub host_bell: CachePadded<Bell>,
    /// Request slots, indexed by `index % SLOTS`.
    pub req_slots: [ReqSlot; SLOTS as usize],
    /// Response slots, indexed by `index % SLOTS`.
    pub resp_slots: [RespSlot; SLOTS as usize],
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<ReqSlot>() == 64);
    assert!(size_of::<RespSlot>() == 64);
    assert!(align_of::<Control>() <= PAGE);
    assert!(offset_of!(Control, req_tail) % 64 == 0);
    assert!(offset_of!(Control, req_head) - offset_of!(Control, req_tail) >= 64);
    assert!(offset_of!(Control, resp_head) - offset_of!(Control, resp_tail) >= 64);
    assert!(offset_of!(Control, req_slots) % 64 == 0);
    assert!(SLOTS.is_power_of_two());
    assert!(MAX_PAYLOAD as usize <= ARENA_LEN);
    // Offsets into an arena fit in the u32 slot fields.
    assert!(ARENA_LEN <= u32::MAX as usize);
    assert!(TOTAL_LEN % PAGE == 0);
};
