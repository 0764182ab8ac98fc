//! Host and guest ends of real channels, in two threads of one process.
#![cfg(not(loom))]

use std::thread;

use hearth_ipc::{
    GuestChannel, HostChannel, RequestMeta, ResponseStatus, SubmitError, MAX_PAYLOAD, SLOTS,
};

fn pair() -> (HostChannel, GuestChannel) {
    let host = HostChannel::create().expect("create channel");
    let fd = host
        .guest_fd()
        .try_clone_to_owned()
        .expect("dup channel fd");
    let guest = GuestChannel::from_fd(fd).expect("attach guest");
    (host, guest)
}

/// Serves `n` requests, answering each with `f(payload)`.
fn serve(
    mut guest: GuestChannel,
    n: usize,
    f: impl Fn(&[u8]) -> (ResponseStatus, Vec<u8>) + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for _ in 0..n {
            let request = guest.wait_next().expect("next request");
            let (status, body) = f(guest.payload(&request));
            guest.respond(request.id, status, &body).expect("respond");
        }
    })
}

fn wait(host: &mut HostChannel, out: &mut Vec<u8>) -> hearth_ipc::Completion {
    loop {
        if let Some(done) = host.poll(out).expect("poll") {
            return done;
        }
        std::hint::spin_loop();
    }
}

#[test]
fn echo_round_trips_bytes_in_order() {
    let (mut host, guest) = pair();
    let server = serve(guest, 1000, |p| {
        (ResponseStatus::Ok, p.iter().rev().copied().collect())
    });
    let mut out = Vec::new();
    for i in 0..1000u32 {
        let body = format!("request {i}");
        let id = host
            .submit(body.as_bytes(), &RequestMeta::default())
            .unwrap();
        let done = wait(&mut host, &mut out);
        assert_eq!(done.id, id);
        assert_eq!(done.status, ResponseStatus::Ok);
        assert_eq!(out, body.bytes().rev().collect::<Vec<_>>());
    }
    server.join().unwrap();
}

#[test]
fn guest_sees_request_metadata() {
    let (mut host, mut guest) = pair();
    let meta = RequestMeta {
        timeout_ms: 3000,
        request_id: *b"0123456789abcdef",
        context: b"Lambda-Runtime-Invoked-Function-Arn: arn\n",
    };
    host.submit(b"x", &meta).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let request = guest.try_next().unwrap().expect("a request");
    let now_ms = u64::try_from(now.as_millis()).unwrap();
    // The deadline counts from when the guest takes the request.
    assert!(
        (now_ms + 3000..=now_ms + 3100).contains(&request.deadline_ms),
        "{}",
        request.deadline_ms
    );
    assert_eq!(request.request_id, meta.request_id);
    assert_eq!(
        guest.payload(&request),
        b"x",
        "the context is not part of the payload"
    );
    assert_eq!(
        guest.context(&request),
        b"Lambda-Runtime-Invoked-Function-Arn: arn\n"
    );
    guest
        .respond_timed(request.id, hearth_ipc::ResponseStatus::Unhandled, b"{}", 42)
        .unwrap();
    let mut out = Vec::new();
    let done = host.poll(&mut out).unwrap().expect("the response");
    assert_eq!(
        (done.status, done.run_us),
        (hearth_ipc::ResponseStatus::Unhandled, 42)
    );
    assert_eq!(out, b"{}");
}

#[test]
fn pipelined_requests_fill_the_ring_then_report_full() {
    let (mut host, guest) = pair();
    for i in 0..SLOTS {
        host.submit(&i.to_le_bytes(), &RequestMeta::default())
            .unwrap();
    }
    assert_eq!(
        host.submit(b"one too many", &RequestMeta::default()),
        Err(SubmitError::Full)
    );
    let server = serve(guest, SLOTS as usize, |p| (ResponseStatus::Ok, p.to_vec()));
    let mut out = Vec::new();
    for i in 0..SLOTS {
        let done = wait(&mut host, &mut out);
        assert_eq!(done.id, u64::from(i) + 1);
        assert_eq!(out, i.to_le_bytes());
    }
    server.join().unwrap();
    assert_eq!(host.in_flight(), 0);
}

#[test]
fn maximal_payloads_pass_both_ways_and_larger_ones_do_not() {
    let (mut host, guest) = pair();
    let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        host.submit(&vec![0; MAX_PAYLOAD as usize + 1], &RequestMeta::default()),
        Err(SubmitError::TooLarge(MAX_PAYLOAD as usize + 1))
    );
    let server = serve(guest, 2, |p| {
        if p.is_empty() {
            (ResponseStatus::Ok, vec![7; MAX_PAYLOAD as usize + 10])
        } else {
            (ResponseStatus::Ok, p.to_vec())
        }
    });
    let mut out = Vec::new();
    host.submit(&big, &RequestMeta::default()).unwrap();
    let done = wait(&mut host, &mut out);
    assert_eq!(done.len, MAX_PAYLOAD);
    assert!(out == big, "6 MB payload came back changed");

    host.submit(b"", &RequestMeta::default()).unwrap();
    let done = wait(&mut host, &mut out);
    assert_eq!(done.status, ResponseStatus::TooLarge);
    assert_eq!(done.len, MAX_PAYLOAD + 10);
    assert!(out.is_empty());
    server.join().unwrap();
}

#[test]
fn error_status_is_passed_through() {
    let (mut host, guest) = pair();
    let server = serve(guest, 1, |_| {
        (
            ResponseStatus::Error,
            br#"{"errorMessage":"no","errorType":"E"}"#.to_vec(),
        )
    });
    host.submit(b"{}", &RequestMeta::default()).unwrap();
    let mut out = Vec::new();
    let done = wait(&mut host, &mut out);
    assert_eq!(done.status, ResponseStatus::Error);
    assert_eq!(out, br#"{"errorMessage":"no","errorType":"E"}"#);
    server.join().unwrap();
}

#[test]
fn sleeping_guest_is_woken_and_sleeping_host_is_woken() {
    let (mut host, guest) = pair();
    let server = serve(guest, 20, |p| (ResponseStatus::Ok, p.to_vec()));
    let mut out = Vec::new();
    for i in 0..20u8 {
        // Long enough for the guest to give up spinning and sleep on its doorbell.
        thread::sleep(std::time::Duration::from_millis(2));
        host.submit(&[i], &RequestMeta::default()).unwrap();
        // Sleep on the host bell like the scheduler does.
        loop {
            if host.response_ready() {
                break;
            }
            host.host_bell().prepare();
            if host.recheck().unwrap() {
                host.host_bell().cancel();
                break;
            }
            host.host_bell()
                .sleep(Some(std::time::Duration::from_secs(5)));
        }
        let done = host.poll(&mut out).unwrap().expect("response after wake");
        assert_eq!(out, [i]);
        assert_eq!(done.status, ResponseStatus::Ok);
    }
    server.join().unwrap();
}

#[test]
fn the_memfd_cannot_be_shrunk_by_the_guest() {
    let host = HostChannel::create().unwrap();
    let fd = host.guest_fd().try_clone_to_owned().unwrap();
    let file = std::fs::File::from(fd);
    let err = file
        .set_len(4096)
        .expect_err("a sealed memfd must refuse to shrink");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
}

#[test]
fn the_host_sees_which_requests_the_guest_has_taken() {
    let (mut host, mut guest) = pair();
    let first = host.submit(b"1", &RequestMeta::default()).unwrap();
    let second = host.submit(b"2", &RequestMeta::default()).unwrap();
    assert!(!host.taken(first) && !host.taken(second));
    guest.try_next().unwrap().expect("first request");
    assert!(host.taken(first));
    assert!(!host.taken(second), "still queued");
}

#[test]
fn a_second_guest_takes_over_a_request_the_first_left_unanswered() {
    let (mut host, mut first) = pair();
    let fd = host.guest_fd().try_clone_to_owned().unwrap();
    let mut second = GuestChannel::from_fd(fd).unwrap();
    let mut out = Vec::new();
    // The first guest answers one request, then takes another and dies without answering.
    host.submit(b"one", &RequestMeta::default()).unwrap();
    let r = first.try_next().unwrap().unwrap();
    first
        .respond(r.id, hearth_ipc::ResponseStatus::Ok, b"1")
        .unwrap();
    assert!(host.poll(&mut out).unwrap().is_some());
    let id = host.submit(b"two", &RequestMeta::default()).unwrap();
    let taken = first.try_next().unwrap().unwrap();
    drop(first);
    assert!(second.foreign_progress());
    let request = second.take_over().unwrap().expect("the unanswered request");
    assert_eq!(
        (request.id, second.payload(&request)),
        (taken.id, &b"two"[..])
    );
    second
        .respond(request.id, hearth_ipc::ResponseStatus::Unhandled, b"{}")
        .unwrap();
    let done = host.poll(&mut out).unwrap().expect("answered");
    assert_eq!(
        (done.id, done.status),
        (id, hearth_ipc::ResponseStatus::Unhandled)
    );
    // And it serves on from there.
    host.submit(b"three", &RequestMeta::default()).unwrap();
    let r = second.try_next().unwrap().unwrap();
    assert_eq!(second.payload(&r), b"three");
}

#[test]
fn take_over_refuses_an_unclear_ring() {
    let (mut host, mut first) = pair();
    let fd = host.guest_fd().try_clone_to_owned().unwrap();
    let mut second = GuestChannel::from_fd(fd).unwrap();
    // Answered but not yet read by the host: the second guest must not answer anything.
    host.submit(b"one", &RequestMeta::default()).unwrap();
    let r = first.try_next().unwrap().unwrap();
    first
        .respond(r.id, hearth_ipc::ResponseStatus::Ok, b"1")
        .unwrap();
    assert!(second.take_over().unwrap().is_none());
}
