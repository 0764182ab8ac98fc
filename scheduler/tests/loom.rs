//! Model check of admission: concurrent admit/release never lets more invocations in than the
//! limit, and every ticket is returned.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p hearth-scheduler --test loom --release`
#![cfg(loom)]

use hearth_scheduler::admission::{Account, FunctionConcurrency};
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;

fn check(reservation: Option<u32>, account_limit: u32, threads: usize, limit: u32) {
    // Bounded preemptions keep the model to seconds; every interleaving with up to this many
    // forced switches is explored.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let account = Arc::new(Account::new(account_limit));
        let function = Arc::new(FunctionConcurrency::new());
        if reservation.is_some() {
            account.set_reservation(&function, reservation, 0).unwrap();
        }
        let inside = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (account, function, inside) =
                    (account.clone(), function.clone(), inside.clone());
                loom::thread::spawn(move || {
                    if let Ok(ticket) = account.admit(&function) {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(
                            now <= limit,
                            "{now} invocations admitted under a limit of {limit}"
                        );
                        inside.fetch_sub(1, Ordering::SeqCst);
                        account.release(&function, ticket);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(function.in_flight(), 0);
    });
}

#[test]
fn a_reservation_is_never_exceeded() {
    check(Some(1), 1000, 3, 1);
}

#[test]
fn the_unreserved_pool_is_never_exceeded() {
    // An account limit of 2 (nothing reserved) keeps the model small.
    check(None, 2, 3, 2);
}
