//! The shard's io_uring: one place where a shard sleeps until *anything* it waits for happens —
//! a response doorbell (`IORING_OP_FUTEX_WAIT` on the futex word in an environment's channel,
//! kernel 6.7+), an environment's exit (poll on its pidfd), work in its mailbox (poll on an
//! eventfd), a socket of the HTTP front door (accept, receive, send) — or a timeout.
//!
//! Each request carries `kind | slot | generation` as its user data; a completion for an
//! environment slot that has since been reused has a stale generation and is ignored.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{opcode, types, IoUring};

/// Identifies an environment slot across reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub slot: u32,
    pub generation: u32,
}

/// What completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The futex wait on an environment's response doorbell ended (woken, or the word had
    /// already changed).
    Doorbell(Key),
    /// An environment's first process exited.
    Exit(Key),
    /// The mailbox eventfd became readable.
    Mailbox,
    /// A socket operation of the front door finished. `key` names the connection (or, for
    /// accepts, the listener in `slot`); `result` is the syscall's result (negative errno);
    /// `more` says whether a multishot request stays armed.
    Net {
        /// Which operation.
        op: NetOp,
        /// Connection or listener.
        key: Key,
        /// Result.
        result: i32,
        /// Multishot request still armed.
        more: bool,
    },
}

/// A front-door socket operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetOp {
    /// A connection accepted (`result` is its fd).
    Accept,
    /// Bytes received (`result` is the count; 0 at end of stream).
    Recv,
    /// Bytes sent.
    Send,
}

const KIND_DOORBELL: u64 = 1;
const KIND_EXIT: u64 = 2;
const KIND_MAILBOX: u64 = 3;
const KIND_CANCEL: u64 = 4;
const KIND_ACCEPT: u64 = 5;
const KIND_RECV: u64 = 6;
const KIND_SEND: u64 = 7;

fn user_data(kind: u64, key: Key) -> u64 {
    kind << 56 | u64::from(key.slot & 0x00ff_ffff) << 32 | u64::from(key.generation)
}

fn decode(data: u64) -> (u64, Key) {
    let kind = data >> 56;
    let slot = u32::try_from((data >> 32) & 0x00ff_ffff).unwrap_or(0);
    let generation = u32::try_from(data & 0xffff_ffff).unwrap_or(0);
    (kind, Key { slot, generation })
}

/// `FUTEX2_SIZE_U32`; no `FUTEX2_PRIVATE`: the waker is another process.
const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX_BITSET_MATCH_ANY: u64 = 0xffff_ffff;

/// A shard's ring.
pub(crate) struct Uring {
    ring: IoUring,
    /// Whether the kernel supports `IORING_OP_FUTEX_WAIT`.
    futex: bool,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring").field("futex", &self.futex).finish()
    }
}

impl Uring {
    pub(crate) fn new() -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_single_issuer()
            .build(1024)?;
        let mut uring = Self { ring, futex: true };
        uring.futex = uring.probe_futex();
        Ok(uring)
    }

    /// Whether futex waits work here; without them the shard polls its rings with short timed
    /// sleeps instead.
    pub(crate) fn has_futex(&self) -> bool {
        self.futex
    }

    fn probe_futex(&mut self) -> bool {
        let word: u32 = 1;
        // Expecting 0 where the word holds 1: a kernel with futex support answers EAGAIN at
        // once; one without answers EINVAL (unknown opcode).
        let entry = opcode::FutexWait::new(&word, 0, FUTEX_BITSET_MATCH_ANY, FUTEX2_SIZE_U32)
            .build()
            .user_data(u64::MAX);
        // SAFETY: `word` outlives the request: we wait for its completion right here.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return false;
        }
        if self.ring.submit_and_wait(1).is_err() {
            return false;
        }
        let result = self.ring.completion().next().map(|c| c.result());
        result == Some(-libc::EAGAIN)
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) {
        loop {
            // SAFETY: every entry we push references either nothing, an fd that outlives the
            // request (pidfds and the eventfd are closed only after the request completed or was
            // cancelled), or a futex word in a channel mapping. A futex wait reads its word only
            // while being queued and never after (wakes and cancels touch only kernel state), so
            // the word may be unmapped while the request is pending.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand what is there to the kernel and retry.
            let _ = self.ring.submit();
        }
    }

    /// Waits for the futex word of an environment's response doorbell to be woken.
    pub(crate) fn arm_doorbell(&mut self, key: Key, word: *const u32, sleeping: u32) {
        let entry = opcode::FutexWait::new(
            word,
            u64::from(sleeping),
            FUTEX_BITSET_MATCH_ANY,
            FUTEX2_SIZE_U32,
        )
        .build()
        .user_data(user_data(KIND_DOORBELL, key));
        self.push(&entry);
    }

    /// Waits for an environment's pidfd to become readable (its process exited).
    pub(crate) fn arm_exit(&mut self, key: Key, pidfd: BorrowedFd<'_>) {
        let entry = opcode::PollAdd::new(
            types::Fd(pidfd.as_raw_fd()),
            u32::try_from(libc::POLLIN).unwrap_or(1),
        )
        .build()
        .user_data(user_data(KIND_EXIT, key));
        self.push(&entry);
    }

    /// Waits for the mailbox eventfd to become readable.
    pub(crate) fn arm_mailbox(&mut self, eventfd: BorrowedFd<'_>) {
        let entry = opcode::PollAdd::new(
            types::Fd(eventfd.as_raw_fd()),
            u32::try_from(libc::POLLIN).unwrap_or(1),
        )
        .build()
        .user_data(user_data(
            KIND_MAILBOX,
            Key {
                slot: 0,
                generation: 0,
            },
        ));
        self.push(&entry);
    }

    /// Accepts connections on `listener` until cancelled (multishot); completions carry
    /// `index` as the key's slot.
    pub(crate) fn arm_accept(&mut self, index: u32, listener: BorrowedFd<'_>) {
        let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(user_data(
                KIND_ACCEPT,
                Key {
                    slot: index,
                    generation: 0,
                },
            ));
        self.push(&entry);
    }

    /// Receives into `len` bytes at `buf`.
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid and untouched until the completion is reaped, and `fd`
    /// open until then.
    pub(crate) unsafe fn arm_recv(&mut self, key: Key, fd: BorrowedFd<'_>, buf: *mut u8, len: u32) {
        let entry = opcode::Recv::new(types::Fd(fd.as_raw_fd()), buf, len)
            .build()
            .user_data(user_data(KIND_RECV, key));
        self.push(&entry);
    }

    /// Sends `len` bytes at `buf`.
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid and unchanged until the completion is reaped, and `fd`
    /// open until then.
    pub(crate) unsafe fn arm_send(
        &mut self,
        key: Key,
        fd: BorrowedFd<'_>,
        buf: *const u8,
        len: u32,
    ) {
        let entry = opcode::Send::new(types::Fd(fd.as_raw_fd()), buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(KIND_SEND, key));
        self.push(&entry);
    }

    /// Whether completions are waiting to be read (no syscall).
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Cancels a pending doorbell wait (before its environment is discarded).
    pub(crate) fn cancel_doorbell(&mut self, key: Key) {
        let entry = opcode::AsyncCancel::new(user_data(KIND_DOORBELL, key))
            .build()
            .user_data(user_data(KIND_CANCEL, key));
        self.push(&entry);
    }

    /// Submits pending requests and, unless `timeout` is zero, waits until at least one
    /// completes or `timeout` passes; then appends every completion to `events`. With a zero
    /// timeout it makes no syscall unless requests are pending.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> io::Result<()> {
        let result = match timeout {
            Some(t) if t.is_zero() => {
                // The invoke path polls here on every pass: enter the kernel only if there is
                // something to submit or completion work the kernel deferred to us (with
                // COOP_TASKRUN it waits for our next syscall and says so in the SQ flags).
                // Otherwise the completion queue is read from shared memory: no syscall.
                let pending = {
                    let sq = self.ring.submission();
                    !sq.is_empty() || sq.taskrun()
                };
                if pending {
                    self.ring.submit().map(|_| ())
                } else {
                    Ok(())
                }
            }
            Some(t) => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args).map(|_| ())
            }
            None => self.ring.submit_and_wait(1).map(|_| ()),
        };
        match result {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        for cqe in self.ring.completion() {
            let (kind, key) = decode(cqe.user_data());
            match kind {
                KIND_DOORBELL => events.push(Event::Doorbell(key)),
                KIND_EXIT => events.push(Event::Exit(key)),
                KIND_MAILBOX => events.push(Event::Mailbox),
                KIND_ACCEPT | KIND_RECV | KIND_SEND => events.push(Event::Net {
                    op: match kind {
                        KIND_ACCEPT => NetOp::Accept,
                        KIND_RECV => NetOp::Recv,
                        _ => NetOp::Send,
                    },
                    key,
                    result: cqe.result(),
                    more: io_uring::cqueue::more(cqe.flags()),
                }),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let key = Key {
            slot: 123_456,
            generation: 0xdead_beef,
        };
        assert_eq!(decode(user_data(KIND_EXIT, key)), (KIND_EXIT, key));
    }

    #[test]
    fn futex_waits_are_supported_and_woken() {
        let mut uring = Uring::new().unwrap();
        assert!(
            uring.has_futex(),
            "this kernel has IORING_OP_FUTEX_WAIT (6.7+)"
        );
        let word = Box::new(std::sync::atomic::AtomicU32::new(1));
        let key = Key {
            slot: 1,
            generation: 2,
        };
        uring.arm_doorbell(key, word.as_ptr(), 1);
        let mut events = Vec::new();
        uring
            .wait(Some(Duration::from_millis(20)), &mut events)
            .unwrap();
        assert!(events.is_empty(), "nothing woke it yet");
        word.store(0, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: FUTEX_WAKE on a live word (shared, to match the io_uring waiter).
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
        uring
            .wait(Some(Duration::from_secs(5)), &mut events)
            .unwrap();
        assert_eq!(events, [Event::Doorbell(key)]);
    }
}
