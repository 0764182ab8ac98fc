//! A hostile guest: it writes arbitrary values into every word it can write while the host
//! submits and polls. The host must never panic, never return bytes from outside the response
//! arena, and report every inconsistency as an error.
#![cfg(not(loom))]
#![allow(clippy::cast_possible_truncation)] // garbage values are cut to field width on purpose

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hearth_ipc::layout::{Control, ARENA_LEN, RESP_ARENA_OFFSET, TOTAL_LEN};
use hearth_ipc::{HostChannel, RequestMeta, SubmitError, SLOTS};
use proptest::prelude::*;

/// The guest's view of the memory: a second mapping of the memfd.
struct GuestView {
    ptr: *mut u8,
}

// SAFETY: the mapping is only accessed through atomics and raw byte writes.
unsafe impl Send for GuestView {}
// SAFETY: as above.
unsafe impl Sync for GuestView {}

impl GuestView {
    fn map(host: &HostChannel) -> Self {
        // SAFETY: mapping a memfd we own into fresh address space.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                TOTAL_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                host.guest_fd().as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let view = Self { ptr: ptr.cast() };
        // Mark the response arena so any byte the host returns can be traced to it.
        let arena = view.ptr.wrapping_add(RESP_ARENA_OFFSET);
        // SAFETY: the response arena lies inside the TOTAL_LEN mapping.
        unsafe { std::ptr::write_bytes(arena, MARK, ARENA_LEN) };
        view
    }

    fn control(&self) -> &Control {
        // SAFETY: TOTAL_LEN bytes, page aligned, all atomics.
        unsafe { &*self.ptr.cast::<Control>() }
    }

    fn write(&self, field: Field, value: u64) {
        let c = self.control();
        let v32 = value as u32;
        let slot = &c.resp_slots[(value >> 32) as usize % SLOTS as usize];
        match field {
            Field::RespTail => c.resp_tail.store(v32, Ordering::Release),
            Field::ReqHead => c.req_head.store(v32, Ordering::Release),
            Field::SlotId => slot.id.store(value & 0xff, Ordering::Relaxed),
            Field::SlotOffset => slot.offset.store(v32, Ordering::Relaxed),
            Field::SlotLen => slot.len.store(v32, Ordering::Relaxed),
            Field::SlotStatus => slot.status.store(v32 % 5, Ordering::Relaxed),
            Field::HostBell => {
                // The host bell is a futex word; any value must be harmless.
                // SAFETY: the bell is the first u32 of its cache line.
                let word = unsafe {
                    &*(std::ptr::from_ref(&*c.host_bell).cast::<std::sync::atomic::AtomicU32>())
                };
                word.store(v32, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for GuestView {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), TOTAL_LEN) };
    }
}

const MARK: u8 = 0x5c;

#[derive(Debug, Clone, Copy)]
enum Field {
    RespTail,
    ReqHead,
    SlotId,
    SlotOffset,
    SlotLen,
    SlotStatus,
    HostBell,
}

#[derive(Debug, Clone)]
enum Op {
    Guest(Field, u64),
    Submit(u16),
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    let field = prop_oneof![
        Just(Field::RespTail),
        Just(Field::ReqHead),
        Just(Field::SlotId),
        Just(Field::SlotOffset),
        Just(Field::SlotLen),
        Just(Field::SlotStatus),
        Just(Field::HostBell),
    ];
    let value = prop_oneof![
        0u64..8,
        (0u64..8).prop_map(|v| v | (1 << 32)),
        any::<u64>(),
        Just(u64::from(u32::MAX)),
        (ARENA_LEN as u64 - 8)..(ARENA_LEN as u64 + 8)
    ];
    prop_oneof![
        3 => (field, value).prop_map(|(f, v)| Op::Guest(f, v)),
        1 => any::<u16>().prop_map(Op::Submit),
        2 => Just(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn garbage_from_the_guest_is_an_error_never_a_panic_or_a_stray_read(ops in proptest::collection::vec(op(), 1..60)) {
        let mut host = HostChannel::create().unwrap();
        let guest = GuestView::map(&host);
        let mut submitted = std::collections::VecDeque::new();
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Guest(field, value) => guest.write(field, value),
                Op::Submit(len) => match host.submit(&vec![0xaa; usize::from(len)], &RequestMeta::default()) {
                    Ok(id) => submitted.push_back(id),
                    Err(SubmitError::Full) => {}
                    Err(SubmitError::Protocol(_)) => return Ok(()),
                    Err(e) => prop_assert!(false, "unexpected submit error {e}"),
                },
                Op::Poll => match host.poll(&mut out) {
                    Ok(None) => {}
                    Ok(Some(done)) => {
                        prop_assert_eq!(Some(done.id), submitted.pop_front(), "completions come in submission order");
                        prop_assert!(out.iter().all(|&b| b == MARK), "returned bytes from outside the response arena");
                    }
                    Err(_) => return Ok(()),
                },
            }
        }
    }
}

#[test]
fn fields_changing_under_the_host_never_crash_it() {
    let mut host = HostChannel::create().unwrap();
    let guest = Arc::new(GuestView::map(&host));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(2));
    let mutator = {
        let (guest, stop, started) = (Arc::clone(&guest), Arc::clone(&stop), Arc::clone(&started));
        std::thread::spawn(move || {
            started.wait();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let fields = [
                Field::RespTail,
                Field::SlotId,
                Field::SlotOffset,
                Field::SlotLen,
                Field::SlotStatus,
                Field::ReqHead,
            ];
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                guest.write(fields[(x % 6) as usize], x >> 3);
            }
        })
    };
    started.wait();
    let mut out = Vec::new();
    let mut errors = 0;
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < give_up {
        let _ = host.submit(b"payload", &RequestMeta::default());
        match host.poll(&mut out) {
            Ok(Some(_)) => assert!(out.iter().all(|&b| b == MARK)),
            Ok(None) => {}
            Err(_) => {
                errors += 1;
                // A real scheduler discards the environment; start over with a fresh channel.
                host = HostChannel::create().unwrap();
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    mutator.join().unwrap();
    assert!(
        errors > 0,
        "random garbage should have been detected at least once"
    );
    drop(host);
}
