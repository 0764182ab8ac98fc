//! The control protocol between the scheduler and a zygote: an initialised function that forks
//! new environments on request (see `hearth-snapshot` for the scheduler's side and
//! `hearth-runtime` for the zygote's).
//!
//! One `SOCK_SEQPACKET` socket pair per zygote; each datagram is one 32-byte [`Message`],
//! possibly with descriptors attached (`SCM_RIGHTS`):
//!
//! | kind | from | fields | descriptors |
//! |---|---|---|---|
//! | `Ready` | zygote | | |
//! | `Fork` | scheduler | `a` = sequence number, `b` = `/tmp` size in bytes, `c` = flags (bit 0: the child restricts itself with landlock) | channel, stdout, stderr, error pipe, go-ahead pipe (read end) |
//! | `Forked` | zygote | `a` = sequence number, `b` = child's pid in the zygote's namespace, `c` = errno in its low 32 bits (0: forked), [`FORKED_PREPARED`] set when the child entered namespaces made ahead | the child's pidfd (when forked) |
//! | `Exited` | zygote | `b` = child's pid in the zygote's namespace, `c` = [`encode_status`] | |
//!
//! Between a zygote and its helper process (which makes the mount, ipc and uts namespaces of
//! its next children ahead, on a socket pair of their own; never on the scheduler's socket):
//!
//! | kind | from | fields | descriptors |
//! |---|---|---|---|
//! | `Prepare` | zygote | `b` = `/tmp` size in bytes | |
//! | `Prepared` | helper | `b` = `/tmp` size in bytes, `c` = errno (0: made) | mount, ipc and uts namespaces, then the landlock ruleset where the zygote has rules |
//!
//! The scheduler treats everything a zygote sends as hostile (it runs function code): a
//! datagram of the wrong size, an unknown kind or unexpected descriptors are errors for that
//! zygote only.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use crate::sys;

/// Size of every message.
pub const MESSAGE_LEN: usize = 32;

/// What a message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// The zygote finished its Init and takes fork requests.
    Ready = 1,
    /// Fork a new environment.
    Fork = 2,
    /// The answer to a `Fork`.
    Forked = 3,
    /// A child the zygote forked has exited.
    Exited = 4,
    /// (Zygote to its helper) make a set of namespaces for a future child.
    Prepare = 5,
    /// (Helper to its zygote) a set of namespaces, or why none could be made.
    Prepared = 6,
}

/// One message (see the module docs for what `a`, `b` and `c` hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// What it says.
    pub kind: Kind,
    /// First field.
    pub a: u64,
    /// Second field.
    pub b: u64,
    /// Third field.
    pub c: u64,
}

impl Message {
    /// A message of `kind` with fields `a`, `b`, `c`.
    pub fn new(kind: Kind, a: u64, b: u64, c: u64) -> Self {
        Self { kind, a, b, c }
    }

    fn encode(&self) -> [u8; MESSAGE_LEN] {
        let mut out = [0u8; MESSAGE_LEN];
        out[..4].copy_from_slice(&(self.kind as u32).to_le_bytes());
        out[8..16].copy_from_slice(&self.a.to_le_bytes());
        out[16..24].copy_from_slice(&self.b.to_le_bytes());
        out[24..32].copy_from_slice(&self.c.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8; MESSAGE_LEN]) -> Option<Self> {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let kind = match u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) {
            1 => Kind::Ready,
            2 => Kind::Fork,
            3 => Kind::Forked,
            4 => Kind::Exited,
            5 => Kind::Prepare,
            6 => Kind::Prepared,
            _ => return None,
        };
        Some(Self::new(kind, word(8), word(16), word(24)))
    }
}

/// A connected pair of control sockets: (scheduler's end, zygote's end), both close-on-exec.
/// The scheduler's end is non-blocking: a zygote that stops reading cannot make a send block
/// (it fails with `WouldBlock` instead).
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = sys::seqpacket_pair()?;
    sys::set_nonblocking(ours.as_fd())?;
    Ok((ours, theirs))
}

/// Most bytes of pinned-page copies a zygote lets its live children hold: the kernel charges
/// the copies a fork makes of pinned pages to the zygote's memory cgroup, not to the child's
/// (which the child joins after the fork), so hearth gives a zygote's cgroup this much more
/// than the function's memory, and the zygote unpins its pages while its live children would
/// hold more (see `hearth_runtime`'s zygote mode).
pub const PINNED_COPIES_BUDGET: u64 = 16 << 20;

/// Flag of a `Fork` request: the child restricts itself with landlock.
pub const FORK_LANDLOCK: u64 = 1;

/// Flag in a `Forked` answer's `c`, above the errno: the child entered a mount, ipc and uts
/// namespace (with its `/tmp` mounted, and its landlock ruleset) that the zygote's helper made
/// ahead, instead of creating them itself.
pub const FORKED_PREPARED: u64 = 1 << 32;

/// Most descriptors a message may carry.
pub const MAX_FDS: usize = sys::MAX_FDS;

/// How many descriptors a `Fork` request carries (in the table's order: channel, stdout,
/// stderr, error pipe, go-ahead pipe).
pub const FORK_FDS: usize = 5;
/// Where the error pipe is among a `Fork` request's descriptors.
pub const FORK_ERROR_PIPE: usize = 3;
/// Where the go-ahead pipe (read end) is among a `Fork` request's descriptors.
pub const FORK_GO_AHEAD: usize = 4;

/// Sends `message` with `fds` attached.
pub fn send(socket: BorrowedFd<'_>, message: &Message, fds: &[RawFd]) -> io::Result<()> {
    sys::send_with_fds(socket, &message.encode(), fds)
}

/// Receives one message; its descriptors are appended to `fds`. `Ok(None)`: the peer closed
/// its end. With `nonblocking`, an empty queue is `WouldBlock`. A datagram that is not a
/// message is `InvalidData` (and its descriptors are closed).
pub fn recv(
    socket: impl AsFd,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<Option<Message>> {
    let start = fds.len();
    // One byte more than a message, to tell a longer datagram from an exact one.
    let mut bytes = [0u8; MESSAGE_LEN + 1];
    let n = sys::recv_with_fds(socket.as_fd(), &mut bytes, fds, nonblocking)?;
    if n == 0 {
        fds.truncate(start);
        return Ok(None);
    }
    let mut exact = [0u8; MESSAGE_LEN];
    let decoded = (n == MESSAGE_LEN)
        .then(|| {
            exact.copy_from_slice(&bytes[..MESSAGE_LEN]);
            Message::decode(&exact)
        })
        .flatten();
    match decoded {
        Some(message) => Ok(Some(message)),
        None => {
            fds.truncate(start);
            Err(io::Error::from(io::ErrorKind::InvalidData))
        }
    }
}

/// Waits up to `timeout` for a message (or the peer's hang-up) on `socket`.
pub fn wait_readable(socket: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    sys::wait_readable(socket, timeout)
}

/// A child's exit status as `Exited` carries it: the exit code, or the signal number with bit
/// 32 set.
pub fn encode_status(exited: Option<i32>, signal: Option<i32>) -> u64 {
    match (exited, signal) {
        (_, Some(sig)) => (1 << 32) | u64::from(sig.unsigned_abs()),
        (Some(code), None) => u64::from(code.unsigned_abs()) & 0xff,
        (None, None) => 0,
    }
}

/// The inverse of [`encode_status`]: `Ok(code)` for an exit, `Err(signal)` for a signal.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
pub fn decode_status(c: u64) -> Result<i32, i32> {
    let low = (c & 0xff_ffff) as i32;
    if c & (1 << 32) != 0 {
        Err(low)
    } else {
        Ok(low & 0xff)
    }
}

/// Steps of a zygote child's setup, numbered as `hearth_sandbox::Step` numbers them (the
/// child reports a failure on its error pipe exactly as an environment's first process does;
/// `hearth-snapshot` tests that the numbers agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ChildStep {
    /// Writing "0" to each `cgroup.procs`.
    JoinCgroup = 4,
    /// `unshare(CLONE_NEWCGROUP)`.
    UnshareCgroupNamespace = 5,
    /// The child's tmpfs at `/tmp`.
    MountTmp = 15,
    /// The child's `/proc`.
    MountProc = 16,
    /// Moving the received descriptors to 0-4.
    ArrangeFds = 26,
    /// Emptying the capability bounding set.
    DropBoundingSet = 28,
    /// `capset` to nothing.
    DropCapabilities = 33,
    /// `landlock_create_ruleset` (or the rules hearth said to apply are missing).
    LandlockCreate = 35,
    /// Opening a rule's path, `landlock_add_rule`.
    LandlockRule = 36,
    /// `landlock_restrict_self`.
    LandlockRestrict = 37,
    /// Loading the native seccomp program.
    Seccomp = 39,
    /// Creating the mount, ipc and uts namespaces (a child forked through libc).
    EnterNamespaces = 41,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_fds_cross_the_socket() {
        let (a, b) = socket_pair().unwrap();
        let (r, w) = std::io::pipe().unwrap();
        let sent = Message::new(Kind::Fork, 7, 1 << 40, u64::MAX);
        use std::os::fd::AsRawFd;
        send(a.as_fd(), &sent, &[w.as_raw_fd()]).unwrap();
        drop(w);
        let mut fds = Vec::new();
        assert_eq!(recv(&b, &mut fds, false).unwrap(), Some(sent));
        assert_eq!(fds.len(), 1);
        let mut w = std::fs::File::from(fds.pop().unwrap());
        std::io::Write::write_all(&mut w, b"x").unwrap();
        drop(w);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(OwnedFd::from(r)), &mut got)
            .unwrap();
        assert_eq!(got, "x");
        // Nothing queued; then the peer closes.
        let e = recv(&b, &mut fds, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(recv(&b, &mut fds, false).unwrap(), None);
    }

    #[test]
    fn hostile_datagrams_are_refused_and_their_fds_closed() {
        let (a, b) = socket_pair().unwrap();
        let mut fds = Vec::new();
        let (_r, w) = std::io::pipe().unwrap();
        use std::os::fd::AsRawFd;
        // Too short, too long, unknown kind.
        sys::send_with_fds(a.as_fd(), &[1, 0, 0, 0], &[w.as_raw_fd()]).unwrap();
        sys::send_with_fds(a.as_fd(), &[1; 40], &[]).unwrap();
        let mut bad = Message::new(Kind::Ready, 0, 0, 0).encode();
        bad[0] = 9;
        sys::send_with_fds(a.as_fd(), &bad, &[]).unwrap();
        for _ in 0..3 {
            let e = recv(&b, &mut fds, false).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(fds.is_empty());
        }
        // More descriptors than the receiver has room for: refused, none leak.
        let many = vec![w.as_raw_fd(); MAX_FDS + 4];
        // The sender refuses more than MAX_FDS itself.
        assert!(send(a.as_fd(), &Message::new(Kind::Ready, 0, 0, 0), &many).is_err());
    }

    #[test]
    fn statuses_round_trip() {
        assert_eq!(decode_status(encode_status(Some(7), None)), Ok(7));
        assert_eq!(decode_status(encode_status(None, Some(9))), Err(9));
        assert_eq!(decode_status(encode_status(Some(0), None)), Ok(0));
    }
}
