//! Model check of the ring and doorbell protocols with loom: every interleaving (and the weak
//! memory behaviours loom models) of a producer and a consumer, with the consumer sleeping on
//! its doorbell whenever the ring is empty.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p hearth-ipc --test loom --release`
#![cfg(loom)]

use hearth_ipc::doorbell::Bell;
use hearth_ipc::ring::{Consumer, Producer};
use hearth_ipc::RingSide;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;

struct Shared {
    tail: AtomicU32,
    head: AtomicU32,
    bell: Bell,
    slots: [AtomicU64; 2],
}

/// The consumer sees every message exactly once, in order, with the value the producer wrote
/// into the slot (so the slot write happens-before the read), and never sleeps through a
/// message (a lost wakeup would deadlock, which loom reports).
#[test]
fn messages_arrive_in_order_and_no_wakeup_is_lost() {
    // Bounded preemptions keep the run to a minute; every interleaving with up to this many
    // forced context switches is explored.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        const N: u64 = 3;
        let shared = Arc::new(Shared {
            tail: AtomicU32::new(0),
            head: AtomicU32::new(0),
            bell: Bell::new(),
            slots: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let consumer = {
            let shared = Arc::clone(&shared);
            loom::thread::spawn(move || {
                let mut consumer = Consumer::new();
                for expected in 1..=N {
                    loop {
                        if consumer.available(&shared.tail, RingSide::Request).unwrap() > 0 {
                            break;
                        }
                        shared.bell.prepare();
                        if consumer.recheck(&shared.tail, RingSide::Request).unwrap() > 0 {
                            shared.bell.cancel();
                            break;
                        }
                        shared.bell.sleep(None);
                    }
                    let got = shared.slots[consumer.slot()].load(Ordering::Relaxed);
                    assert_eq!(got, expected);
                    consumer.release(&shared.head);
                }
            })
        };
        let mut producer = Producer::new();
        for value in 1..=N {
            while producer.free(&shared.head, RingSide::Request).unwrap() == 0 {
                loom::thread::yield_now();
            }
            shared.slots[producer.slot()].store(value, Ordering::Relaxed);
            producer.publish(&shared.tail);
            shared.bell.notify();
        }
        consumer.join().unwrap();
    });
}
