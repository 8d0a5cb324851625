//! Host functions: registration on both sandbox phases, guest-to-host
//! calls, errors both ways.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use nub_sandbox::{HyperlightError, Registerable, SandboxConfiguration};
use nub_tests::{assert_exits, fn_id, sandbox, uninit};

fn host_echo_payload(host_fn: u32, bytes: &[u8]) -> Vec<u8> {
    let mut p = host_fn.to_le_bytes().to_vec();
    p.extend_from_slice(bytes);
    p
}

fn host_loop_payload(host_fn: u32, count: u32) -> Vec<u8> {
    let mut p = host_fn.to_le_bytes().to_vec();
    p.extend_from_slice(&count.to_le_bytes());
    p
}

#[test]
fn registered_before_evolve_is_callable() {
    let mut u = uninit(None);
    u.register_host_function(100, |b: &[u8]| Ok(b.to_ascii_uppercase()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    let got = s
        .call_raw(fn_id::HOST_ECHO, &host_echo_payload(100, b"shout"))
        .unwrap();
    assert_eq!(got, b"SHOUT");
}

#[test]
fn registered_after_evolve_is_callable_and_replaces() {
    let mut s = sandbox();
    s.register_host_function(7, |b: &[u8]| Ok(b.iter().rev().copied().collect()))
        .unwrap();
    let got = s
        .call_raw(fn_id::HOST_ECHO, &host_echo_payload(7, b"abc"))
        .unwrap();
    assert_eq!(got, b"cba");
    // Registering the same id again replaces the function.
    s.register_host_function(7, |_: &[u8]| Ok(b"second".to_vec()))
        .unwrap();
    let got = s
        .call_raw(fn_id::HOST_ECHO, &host_echo_payload(7, b"abc"))
        .unwrap();
    assert_eq!(got, b"second");
}

#[test]
fn stateful_closure_sees_ten_thousand_calls_in_one_guest_call() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let mut u = uninit(None);
    u.register_host_function(5, move |b: &[u8]| {
        seen.fetch_add(1, Ordering::SeqCst);
        let i = u32::from_le_bytes(b.try_into().map_err(|_| "need u32")?);
        Ok((i * 2).to_le_bytes().to_vec())
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    let exits = s.exit_count();
    let got = s
        .call_raw(fn_id::HOST_LOOP, &host_loop_payload(5, 10_000))
        .unwrap();
    let expected: u64 = (0..10_000u64).map(|i| i * 2).sum();
    assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), expected);
    assert_eq!(calls.load(Ordering::SeqCst), 10_000);
    assert_exits(
        s.exit_count() - exits,
        10_001,
        "one exit per host call, one for DONE",
    );
}

#[test]
fn payload_sizes_both_ways() {
    let cfg = SandboxConfiguration::default().with_ring_sizes(1 << 20, 1 << 20);
    let mut u = uninit(Some(cfg));
    u.register_host_function(1, |b: &[u8]| Ok(b.to_vec()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    for len in [0usize, 1, 4096, 300_000] {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let got = s
            .call_raw(fn_id::HOST_ECHO, &host_echo_payload(1, &bytes))
            .unwrap();
        assert_eq!(got, bytes, "len {len}");
    }
}

#[test]
fn largest_host_payloads_fit_and_one_more_byte_is_a_typed_error() {
    let cfg = SandboxConfiguration::default().with_ring_sizes(64 << 10, 64 << 10);
    let mut u = uninit(Some(cfg));
    // The host answers with `n` bytes, n taken from the request.
    u.register_host_function(2, |b: &[u8]| {
        let n = u32::from_le_bytes(b.try_into().map_err(|_| "need u32")?);
        Ok(vec![0xAB; n as usize])
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    // Find the largest answer the input ring takes after the request.
    let mut lo = 0u32;
    let mut hi = 64 << 10;
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        match s.call_raw(fn_id::HOST_ECHO, &host_echo_payload(2, &mid.to_le_bytes())) {
            Ok(v) => {
                assert_eq!(v.len(), mid as usize);
                lo = mid;
            }
            Err(HyperlightError::GuestFunctionError { message, .. }) => {
                assert!(
                    message.contains("more than the input ring holds"),
                    "{message}"
                );
                hi = mid;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        lo > 60 << 10,
        "the largest answer ({lo} bytes) uses nearly all of the ring"
    );
    assert!(!s.is_poisoned());
}

#[test]
fn unknown_host_function_reaches_the_guest_as_an_error() {
    let mut s = sandbox();
    let err = s
        .call_raw(fn_id::HOST_ECHO, &host_echo_payload(404, b"x"))
        .unwrap_err();
    match err {
        HyperlightError::GuestFunctionError { fn_id, message, .. } => {
            assert_eq!(fn_id, 5);
            assert!(message.contains("404"), "{message}");
        }
        other => panic!("expected a guest function error, got {other:?}"),
    }
    assert!(!s.is_poisoned());
    assert_eq!(s.call_raw(fn_id::ECHO, b"ok").unwrap(), b"ok");
}

#[test]
fn host_function_error_message_reaches_the_guest() {
    let mut u = uninit(None);
    // A host function fails with an error type of its own.
    #[derive(Debug)]
    struct DiskOnFire;
    impl std::fmt::Display for DiskOnFire {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("disk on fire")
        }
    }
    impl std::error::Error for DiskOnFire {}
    u.register_host_function(9, |_: &[u8]| Err(DiskOnFire.into()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    let err = s
        .call_raw(fn_id::HOST_ECHO, &host_echo_payload(9, b""))
        .unwrap_err();
    assert!(
        matches!(&err, HyperlightError::GuestFunctionError { message, .. } if message.contains("disk on fire")),
        "{err:?}"
    );
    assert!(!s.is_poisoned());
}

#[test]
fn host_function_panic_is_typed_and_poisons() {
    let mut u = uninit(None);
    u.register_host_function(66, |_: &[u8]| -> nub_sandbox::HostResult {
        panic!("host went boom")
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    let err = s
        .call_raw(fn_id::HOST_ECHO, &host_echo_payload(66, b""))
        .unwrap_err();
    match &err {
        HyperlightError::HostFunctionPanicked { fn_id, message } => {
            assert_eq!(*fn_id, 66);
            assert!(message.contains("host went boom"));
        }
        other => panic!("expected HostFunctionPanicked, got {other:?}"),
    }
    assert!(s.is_poisoned());
    assert!(matches!(
        s.call_raw(fn_id::ECHO, b"").unwrap_err(),
        HyperlightError::PoisonedSandbox
    ));
    assert_eq!(sandbox().call_raw(fn_id::ECHO, b"new").unwrap(), b"new");
}

#[test]
fn reserved_ids_are_refused_on_both_phases() {
    let mut u = uninit(None);
    let err = u
        .register_host_function(0x8000_0000, |_: &[u8]| Ok(vec![]))
        .unwrap_err();
    assert!(matches!(
        err,
        HyperlightError::ReservedFunctionId { fn_id: 0x8000_0000 }
    ));
    let mut s = u.evolve().unwrap();
    let err = s
        .register_host_function(u32::MAX, |_: &[u8]| Ok(vec![]))
        .unwrap_err();
    assert!(matches!(
        err,
        HyperlightError::ReservedFunctionId { fn_id: u32::MAX }
    ));
}

#[test]
fn sandboxes_do_not_share_host_functions() {
    let mut a = uninit(None);
    a.register_host_function(3, |_: &[u8]| Ok(b"from a".to_vec()))
        .unwrap();
    let mut b = uninit(None);
    b.register_host_function(3, |_: &[u8]| Ok(b"from b".to_vec()))
        .unwrap();
    let (mut a, mut b) = (a.evolve().unwrap(), b.evolve().unwrap());
    let mut c = sandbox();
    for _ in 0..3 {
        assert_eq!(
            a.call_raw(fn_id::HOST_ECHO, &host_echo_payload(3, b""))
                .unwrap(),
            b"from a"
        );
        assert_eq!(
            b.call_raw(fn_id::HOST_ECHO, &host_echo_payload(3, b""))
                .unwrap(),
            b"from b"
        );
        assert!(
            c.call_raw(fn_id::HOST_ECHO, &host_echo_payload(3, b""))
                .is_err()
        );
    }
}

#[test]
fn host_functions_run_on_the_calling_thread() {
    let mut u = uninit(None);
    let caller = std::thread::current().id();
    u.register_host_function(11, move |_: &[u8]| {
        assert_eq!(std::thread::current().id(), caller);
        Ok(vec![1])
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    assert_eq!(
        s.call_raw(fn_id::HOST_ECHO, &host_echo_payload(11, b""))
            .unwrap(),
        vec![1]
    );
}
