//! The shared-memory channel between the scheduler and one execution environment.
//!
//! One channel is one sealed memfd mapped by both sides:
//!
//! ```text
//! +---------------------------+  offset 0
//! | Control                   |  header, ring indices and doorbells, each on its own
//! |                           |  cache line; SLOTS request slots; SLOTS response slots
//! +---------------------------+  page aligned
//! | request arena  (6 MiB+)   |  request payloads, written by the host only
//! +---------------------------+
//! | response arena (6 MiB+)   |  response payloads, written by the guest only
//! +---------------------------+
//! ```
//!
//! * The **host** ([`HostChannel`]) is the scheduler. It creates the memfd, writes requests and
//!   reads responses. It treats every byte the guest can write as hostile: each index, length,
//!   offset and id is loaded once into a local, checked, and only then used. A bad value is a
//!   [`ProtocolError`] for that channel; the host never panics on it and never reads outside the
//!   mapping. The memfd is sealed against shrinking, so the guest cannot make host accesses
//!   fault.
//! * The **guest** ([`GuestChannel`]) is the environment's runtime. It trusts the host.
//!
//! Both directions are single-producer single-consumer rings ([`ring`]) whose waiting side
//! spins for a bounded, adaptive time and then sleeps on a futex ([`doorbell`]); the other side
//! makes a wake syscall only when the waiter has said it is asleep. Under load neither side
//! makes a syscall.
#![warn(missing_docs)]

pub mod arena;
pub mod doorbell;
mod error;
#[cfg(not(loom))]
mod guest;
#[cfg(not(loom))]
mod host;
pub mod lambda;
pub mod landlock;
pub mod layout;
pub mod ring;
mod sync;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
pub mod zygote;

pub use doorbell::AdaptiveSpin;
pub use error::{ChannelError, ProtocolError, RingSide, SubmitError};
#[cfg(not(loom))]
pub use guest::{GuestChannel, GuestRequest, CHANNEL_FD_ENV};
#[cfg(not(loom))]
pub use host::{Completion, HostChannel, RequestMeta};
pub use lambda::{error_document, format_request_id, request_id_text, utc_timestamp};
pub use layout::{ResponseStatus, MAX_CONTEXT, MAX_PAYLOAD, SLOTS};
