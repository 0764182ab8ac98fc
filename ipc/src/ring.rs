//! The index protocol of one single-producer single-consumer ring of [`SLOTS`] slots.
//!
//! Indices are free-running `u32` counters; a slot is `index % SLOTS`. Each side keeps its own
//! index in private memory and publishes it to shared memory; it never reads its own index back
//! from shared memory, so a peer overwriting it changes nothing. The peer's index is loaded once
//! per call and checked before use:
//!
//! * a consumer's view of the producer's tail must be at most `SLOTS` ahead of its head;
//! * a producer's view of the consumer's head must lie between the head it saw last and its own
//!   tail (the consumer never goes backwards and never passes the producer).
//!
//! Orderings: the producer fills a slot, then publishes `tail` with a `swap` (`AcqRel`); the
//! consumer loads `tail` with `Acquire` before reading the slot. The consumer finishes reading a
//! slot, then stores `head` with `Release`; the producer loads `head` with `Acquire` before
//! reusing it. Publishing with a read-modify-write (rather than a store) is what lets a
//! consumer that is about to sleep rely on [`Consumer::recheck`] (see [`crate::doorbell`]).

use crate::error::{ProtocolError, RingSide};
use crate::layout::SLOTS;
use crate::sync::{AtomicU32, Ordering};

/// The producing end of a ring.
#[derive(Debug, Default, Clone)]
pub struct Producer {
    tail: u32,
    head_seen: u32,
}

impl Producer {
    /// A producer at index 0.
    pub const fn new() -> Self {
        Self {
            tail: 0,
            head_seen: 0,
        }
    }

    /// A producer that continues at `tail` (taking over from another producer that stopped
    /// there, every earlier slot consumed).
    pub const fn at(tail: u32) -> Self {
        Self {
            tail,
            head_seen: tail,
        }
    }

    /// This side's published index.
    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// Loads the consumer's `head` once, checks it, and returns how many slots are free.
    pub fn free(&mut self, head: &AtomicU32, side: RingSide) -> Result<u32, ProtocolError> {
        let head = head.load(Ordering::Acquire);
        let advanced = head.wrapping_sub(self.head_seen);
        let outstanding = self.tail.wrapping_sub(self.head_seen);
        if advanced > outstanding {
            return Err(ProtocolError::Head {
                side,
                head,
                tail: self.tail,
            });
        }
        self.head_seen = head;
        Ok(SLOTS - self.tail.wrapping_sub(head))
    }

    /// The consumer's head as last checked by [`Producer::free`].
    pub fn head_seen(&self) -> u32 {
        self.head_seen
    }

    /// The slot the next [`Producer::publish`] makes visible.
    pub fn slot(&self) -> usize {
        (self.tail % SLOTS) as usize
    }

    /// Publishes the slot returned by [`Producer::slot`], which the caller has filled.
    pub fn publish(&mut self, tail: &AtomicU32) {
        self.tail = self.tail.wrapping_add(1);
        // A swap, not a store: it writes our own value whatever the peer left there, and as a
        // read-modify-write it orders against the consumer's `recheck` (doorbell protocol).
        tail.swap(self.tail, Ordering::AcqRel);
    }
}

/// The consuming end of a ring.
#[derive(Debug, Default, Clone)]
pub struct Consumer {
    head: u32,
}

impl Consumer {
    /// A consumer at index 0.
    pub const fn new() -> Self {
        Self { head: 0 }
    }

    /// A consumer that continues at `head`.
    pub const fn at(head: u32) -> Self {
        Self { head }
    }

    /// This side's published index.
    pub fn head(&self) -> u32 {
        self.head
    }

    /// Loads the producer's `tail` once, checks it, and returns how many slots hold data.
    pub fn available(&self, tail: &AtomicU32, side: RingSide) -> Result<u32, ProtocolError> {
        let tail = tail.load(Ordering::Acquire);
        let available = tail.wrapping_sub(self.head);
        if available > SLOTS {
            return Err(ProtocolError::Tail {
                side,
                head: self.head,
                tail,
            });
        }
        Ok(available)
    }

    /// [`Consumer::available`] for a waiter that has just called
    /// [`crate::doorbell::Bell::prepare`]: the read-modify-write orders the bell store before
    /// any later publish (see [`crate::doorbell`]).
    pub fn recheck(&self, tail: &AtomicU32, side: RingSide) -> Result<u32, ProtocolError> {
        let tail = tail.fetch_add(0, Ordering::AcqRel);
        let available = tail.wrapping_sub(self.head);
        if available > SLOTS {
            return Err(ProtocolError::Tail {
                side,
                head: self.head,
                tail,
            });
        }
        Ok(available)
    }

    /// A cheap, unchecked "is there anything?" for spin loops; confirm with
    /// [`Consumer::available`] before reading a slot.
    pub fn maybe_available(&self, tail: &AtomicU32) -> bool {
        tail.load(Ordering::Relaxed) != self.head
    }

    /// The slot at the head of the ring.
    pub fn slot(&self) -> usize {
        (self.head % SLOTS) as usize
    }

    /// Gives the head slot back to the producer; the caller has finished reading it.
    pub fn release(&mut self, head: &AtomicU32) {
        self.head = self.head.wrapping_add(1);
        head.store(self.head, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn indices_wrap_around_u32() {
        let tail = AtomicU32::new(0);
        let head = AtomicU32::new(0);
        let mut producer = Producer {
            tail: u32::MAX - 2,
            head_seen: u32::MAX - 2,
        };
        let mut consumer = Consumer { head: u32::MAX - 2 };
        tail.store(producer.tail(), Ordering::Relaxed);
        head.store(consumer.head(), Ordering::Relaxed);
        for _ in 0..10 {
            assert_eq!(producer.free(&head, RingSide::Request).unwrap(), SLOTS);
            producer.publish(&tail);
            assert_eq!(consumer.available(&tail, RingSide::Request).unwrap(), 1);
            consumer.release(&head);
        }
        assert_eq!(producer.tail(), 7);
    }

    #[test]
    fn full_ring_has_no_free_slots() {
        let tail = AtomicU32::new(0);
        let head = AtomicU32::new(0);
        let mut producer = Producer::new();
        for _ in 0..SLOTS {
            assert!(producer.free(&head, RingSide::Request).unwrap() > 0);
            producer.publish(&tail);
        }
        assert_eq!(producer.free(&head, RingSide::Request).unwrap(), 0);
    }

    #[test]
    fn hostile_indices_are_errors() {
        let tail = AtomicU32::new(0);
        let head = AtomicU32::new(0);
        let mut producer = Producer::new();
        producer.publish(&tail);
        producer.publish(&tail);
        // Consumer claims to have read past the producer.
        head.store(3, Ordering::Relaxed);
        assert!(producer.free(&head, RingSide::Request).is_err());
        // Consumer goes backwards after having read one.
        head.store(1, Ordering::Relaxed);
        assert_eq!(producer.free(&head, RingSide::Request).unwrap(), SLOTS - 1);
        head.store(0, Ordering::Relaxed);
        assert!(producer.free(&head, RingSide::Request).is_err());

        let consumer = Consumer::new();
        tail.store(SLOTS + 1, Ordering::Relaxed);
        assert!(consumer.available(&tail, RingSide::Response).is_err());
        tail.store(u32::MAX, Ordering::Relaxed);
        assert!(consumer.available(&tail, RingSide::Response).is_err());
    }
}
