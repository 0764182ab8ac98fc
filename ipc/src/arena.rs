//! First-in first-out allocation of payload space in an arena.
//!
//! Payloads are freed in the order they were allocated (an environment answers its requests in
//! order), so the arena is a byte ring: allocate at the tail, free at the head. A payload is
//! always contiguous; one that would cross the end of the arena starts again at offset 0 and
//! the skipped bytes are freed with it. When everything is freed the next allocation rewinds to offset 0,
//! so a channel used one request at a time touches the same first pages every time.
//! Positions are monotonic `u64` byte counts; `position % cap` is the offset.
//!
//! The bookkeeping is private to one side; nothing here is read from shared memory.

/// Byte-ring allocator over an arena of `cap` bytes.
#[derive(Debug, Clone)]
pub struct ArenaFifo {
    cap: u64,
    head: u64,
    tail: u64,
}

impl ArenaFifo {
    /// An empty arena of `cap` bytes.
    pub const fn new(cap: u64) -> Self {
        Self {
            cap,
            head: 0,
            tail: 0,
        }
    }

    /// Reserves `len` contiguous bytes. Returns the offset of the bytes and the position to pass
    /// to [`ArenaFifo::release_to`] when they are done with, or `None` if they do not fit now.
    pub fn alloc(&mut self, len: u32) -> Option<(u32, u64)> {
        let len = u64::from(len);
        if len > self.cap {
            return None;
        }
        if self.head == self.tail {
            // Empty: start again at offset 0 (positions stay monotonic, so tokens handed out
            // earlier, including zero-length ones, remain valid).
            self.tail = self.tail.next_multiple_of(self.cap);
            self.head = self.tail;
        }
        let pos = self.tail % self.cap;
        let (offset, need) = if pos + len <= self.cap {
            (pos, len)
        } else {
            (0, self.cap - pos + len)
        };
        if self.tail + need - self.head > self.cap {
            return None;
        }
        self.tail += need;
        // `offset < cap`, and the caller builds arenas no larger than u32::MAX bytes.
        Some((u32::try_from(offset).ok()?, self.tail))
    }

    /// Frees everything allocated up to `end` (a value returned by [`ArenaFifo::alloc`]).
    pub fn release_to(&mut self, end: u64) {
        debug_assert!(end <= self.tail);
        self.head = end.clamp(self.head, self.tail);
    }

    /// Bytes currently allocated (including any skipped at a wrap).
    pub fn used(&self) -> u64 {
        self.tail - self.head
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rewinds_to_zero_when_empty() {
        let mut arena = ArenaFifo::new(100);
        let (off, end) = arena.alloc(60).unwrap();
        assert_eq!(off, 0);
        arena.release_to(end);
        assert_eq!(arena.alloc(60).unwrap().0, 0);
    }

    #[test]
    fn wraps_to_the_start_when_the_end_is_too_short() {
        let mut arena = ArenaFifo::new(100);
        let (_, a) = arena.alloc(60).unwrap();
        let (off_b, _) = arena.alloc(30).unwrap();
        assert_eq!(off_b, 60);
        arena.release_to(a);
        // 10 bytes left at the end; 40 must go to the start.
        let (off_c, _) = arena.alloc(40).unwrap();
        assert_eq!(off_c, 0);
        // Now [0,40) and [60,90) are used; 50 bytes do not fit anywhere contiguous in order.
        assert!(arena.alloc(50).is_none());
    }

    proptest! {
        /// Live allocations never overlap and always lie inside the arena.
        #[test]
        fn live_allocations_are_disjoint(ops in proptest::collection::vec((0u32..70, any::<bool>()), 1..200)) {
            let cap = 100u64;
            let mut arena = ArenaFifo::new(cap);
            let mut live: std::collections::VecDeque<(u32, u32, u64)> = Default::default();
            for (len, free) in ops {
                if free {
                    if let Some((_, _, end)) = live.pop_front() {
                        arena.release_to(end);
                    }
                    continue;
                }
                if let Some((off, end)) = arena.alloc(len) {
                    prop_assert!(u64::from(off) + u64::from(len) <= cap);
                    for &(o, l, _) in &live {
                        let disjoint = off + len <= o || o + l <= off || len == 0 || l == 0;
                        prop_assert!(disjoint, "[{off},+{len}) overlaps [{o},+{l})");
                    }
                    live.push_back((off, len, end));
                } else {
                    prop_assert!(!live.is_empty() || len as u64 > cap, "empty arena refused {len}");
                }
            }
        }
    }
}
