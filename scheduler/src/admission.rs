//! Concurrency admission with lock-free counters, as Lambda counts it.
//!
//! The account has a limit (1000 by default). A function may reserve part of it: then the
//! reservation is both its guarantee and its ceiling. Functions without a reservation share what
//! is left ("unreserved"), which reservations may never shrink below 100. An invocation takes a
//! [`Ticket`] before it is dispatched and gives it back when it completes; over a limit it is
//! refused at once with a [`Throttle`] naming the limit.
//!
//! Each limit is enforced by a compare-and-swap loop on one counter, so the count never exceeds
//! the limit even transiently (a `fetch_add` then `fetch_sub` would briefly exceed it and
//! throttle a concurrent invocation that should have passed). The counters guard no other data,
//! so `Relaxed` suffices: each counter's own modification order is what keeps the count exact.
//! `tests/loom.rs` checks that no interleaving admits more than the limit.

use crate::error::{Throttle, ThrottleReason};
use crate::sync::{AtomicU32, Ordering};

/// `reserved` value meaning "no reservation".
const UNRESERVED: u32 = u32::MAX;

/// One function's concurrency state. It outlives configuration updates of the function.
#[derive(Debug)]
pub struct FunctionConcurrency {
    reserved: AtomicU32,
    in_flight: AtomicU32,
}

impl Default for FunctionConcurrency {
    fn default() -> Self {
        Self::new()
    }
}

impl FunctionConcurrency {
    /// No reservation, nothing in flight.
    pub fn new() -> Self {
        Self {
            reserved: AtomicU32::new(UNRESERVED),
            in_flight: AtomicU32::new(0),
        }
    }

    /// The reservation, if any.
    pub fn reserved(&self) -> Option<u32> {
        match self.reserved.load(Ordering::Relaxed) {
            UNRESERVED => None,
            n => Some(n),
        }
    }

    /// Invocations of this function in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Which counter a ticket was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a ticket must be released when its invocation completes"]
pub enum Ticket {
    /// The function's reservation.
    Reserved,
    /// The account's unreserved pool.
    Unreserved,
}

/// The account's counters.
#[derive(Debug)]
pub struct Account {
    limit: u32,
    unreserved_limit: AtomicU32,
    unreserved_in_flight: AtomicU32,
}

/// Increments `counter` unless it has reached `limit`.
fn take(counter: &AtomicU32, limit: u32) -> bool {
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        if current >= limit {
            return false;
        }
        match counter.compare_exchange_weak(
            current,
            current + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

impl Account {
    /// An account with concurrency `limit` and no reservations.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            unreserved_limit: AtomicU32::new(limit),
            unreserved_in_flight: AtomicU32::new(0),
        }
    }

    /// The account limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The concurrency left to functions without a reservation.
    pub fn unreserved_limit(&self) -> u32 {
        self.unreserved_limit.load(Ordering::Relaxed)
    }

    /// Takes a ticket for one invocation of `function`, or says which limit is full.
    pub fn admit(&self, function: &FunctionConcurrency) -> Result<Ticket, Throttle> {
        let reserved = function.reserved.load(Ordering::Relaxed);
        if reserved != UNRESERVED {
            if take(&function.in_flight, reserved) {
                return Ok(Ticket::Reserved);
            }
            return Err(Throttle {
                reason: ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
                limit: reserved,
            });
        }
        let limit = self.unreserved_limit.load(Ordering::Relaxed);
        if take(&self.unreserved_in_flight, limit) {
            function.in_flight.fetch_add(1, Ordering::Relaxed);
            return Ok(Ticket::Unreserved);
        }
        Err(Throttle {
            reason: ThrottleReason::ConcurrentInvocationLimitExceeded,
            limit,
        })
    }

    /// Gives a ticket back.
    pub fn release(&self, function: &FunctionConcurrency, ticket: Ticket) {
        function.in_flight.fetch_sub(1, Ordering::Relaxed);
        if ticket == Ticket::Unreserved {
            self.unreserved_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sets (or, with `None`, removes) `function`'s reservation. `reserved_elsewhere` is the sum
    /// of every other function's reservation; the caller serialises these calls (the registry
    /// does, under its lock) so that sum stays true.
    pub fn set_reservation(
        &self,
        function: &FunctionConcurrency,
        reservation: Option<u32>,
        reserved_elsewhere: u32,
    ) -> Result<(), String> {
        let total = reserved_elsewhere.saturating_add(reservation.unwrap_or(0));
        let floor = crate::config::MIN_UNRESERVED_CONCURRENCY;
        if self.limit.saturating_sub(total) < floor || total > self.limit {
            return Err(format!(
                "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{floor}]."
            ));
        }
        self.unreserved_limit
            .store(self.limit - total, Ordering::Relaxed);
        function
            .reserved
            .store(reservation.unwrap_or(UNRESERVED), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reserved_functions_are_capped_by_their_reservation() {
        let account = Account::new(1000);
        let f = FunctionConcurrency::new();
        account.set_reservation(&f, Some(2), 0).unwrap();
        let a = account.admit(&f).unwrap();
        let b = account.admit(&f).unwrap();
        let err = account.admit(&f).unwrap_err();
        assert_eq!(
            err.reason,
            ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded
        );
        assert_eq!(err.limit, 2);
        account.release(&f, a);
        let c = account.admit(&f).unwrap();
        account.release(&f, b);
        account.release(&f, c);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn reservations_shrink_the_unreserved_pool_but_never_below_100() {
        let account = Account::new(1000);
        let big = FunctionConcurrency::new();
        account.set_reservation(&big, Some(900), 0).unwrap();
        assert_eq!(account.unreserved_limit(), 100);
        let other = FunctionConcurrency::new();
        let err = account.set_reservation(&other, Some(1), 900).unwrap_err();
        assert!(err.contains("minimum value of [100]"), "{err}");
        account.set_reservation(&big, None, 0).unwrap();
        assert_eq!(account.unreserved_limit(), 1000);
    }

    #[test]
    fn unreserved_functions_share_the_account_pool() {
        let account = Account::new(100);
        let (f, g) = (FunctionConcurrency::new(), FunctionConcurrency::new());
        let tickets: Vec<_> = (0..100)
            .map(|i| account.admit(if i % 2 == 0 { &f } else { &g }).unwrap())
            .collect();
        let err = account.admit(&f).unwrap_err();
        assert_eq!(
            err.reason,
            ThrottleReason::ConcurrentInvocationLimitExceeded
        );
        assert_eq!(err.limit, 100);
        for (i, t) in tickets.into_iter().enumerate() {
            account.release(if i % 2 == 0 { &f } else { &g }, t);
        }
        assert_eq!((f.in_flight(), g.in_flight()), (0, 0));
    }

    #[test]
    fn reserved_zero_disables_the_function() {
        let account = Account::new(1000);
        let f = FunctionConcurrency::new();
        account.set_reservation(&f, Some(0), 0).unwrap();
        assert_eq!(account.admit(&f).unwrap_err().limit, 0);
    }
}
