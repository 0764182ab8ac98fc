//! Errors. [`ProtocolError`] and [`SubmitError`] are small `Copy` values: they are produced on
//! the hot path and never allocate.

use std::io;

/// Which ring a [`ProtocolError`] concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSide {
    /// Host to guest.
    Request,
    /// Guest to host.
    Response,
}

/// The peer wrote something into shared memory that the protocol does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A consumer index went backwards or passed the producer.
    #[error("{side:?} ring head {head} is not between the last seen head and the tail {tail}")]
    Head {
        /// Ring.
        side: RingSide,
        /// Value read.
        head: u32,
        /// This side's tail.
        tail: u32,
    },
    /// A producer index is more than a ring's length ahead of the consumer.
    #[error("{side:?} ring tail {tail} is more than a ring ahead of head {head}")]
    Tail {
        /// Ring.
        side: RingSide,
        /// This side's head.
        head: u32,
        /// Value read.
        tail: u32,
    },
    /// A response arrived while no request was outstanding (an environment answering twice).
    #[error("response {id} arrived with no request outstanding")]
    Unsolicited {
        /// Id in the response slot.
        id: u64,
    },
    /// A response names a request other than the oldest outstanding one.
    #[error("response for request {got} where {expected} was expected")]
    WrongId {
        /// Oldest outstanding request.
        expected: u64,
        /// Id in the response slot.
        got: u64,
    },
    /// A response slot carries an unknown status word.
    #[error("response status {0} is not a known status")]
    Status(u32),
    /// A payload offset and length do not fit inside its arena.
    #[error("payload [{offset}, +{len}) lies outside the arena")]
    Bounds {
        /// Offset read.
        offset: u32,
        /// Length read.
        len: u32,
    },
    /// A request slot carries an unknown kind.
    #[error("request kind {0} is not a known kind")]
    Kind(u32),
}

/// A request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The payload is larger than [`crate::MAX_PAYLOAD`].
    #[error("payload of {0} bytes is larger than the {max} byte limit", max = crate::MAX_PAYLOAD)]
    TooLarge(usize),
    /// The ring or the request arena has no room until outstanding requests complete.
    #[error("the channel has no room for another request")]
    Full,
    /// The guest corrupted the ring.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Creating or attaching to a channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// `memfd_create`.
    #[error("creating the channel memfd")]
    MemfdCreate(#[source] io::Error),
    /// `ftruncate` of the memfd.
    #[error("sizing the channel memfd to {len} bytes")]
    Truncate {
        /// Requested size.
        len: usize,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// `fcntl(F_ADD_SEALS)`.
    #[error("sealing the channel memfd")]
    Seal(#[source] io::Error),
    /// `fstat` of the memfd.
    #[error("reading the size of the channel memfd")]
    Stat(#[source] io::Error),
    /// `mmap`.
    #[error("mapping the channel")]
    Map(#[source] io::Error),
    /// The memfd is smaller than the layout needs.
    #[error("the channel is {actual} bytes; the layout needs {expected}")]
    Size {
        /// Bytes needed.
        expected: usize,
        /// Bytes found.
        actual: u64,
    },
    /// The header does not describe this build's layout.
    #[error("the channel header does not match this build's layout (field {field}: {found:#x})")]
    Layout {
        /// Header field that differs.
        field: &'static str,
        /// Value found.
        found: u64,
    },
    /// The channel fd environment variable is missing or malformed.
    #[error("environment variable {var} must hold the channel's file descriptor number")]
    Env {
        /// Variable name.
        var: &'static str,
    },
}
