//! Calls into the default guest: payload sizes, state, guest errors, limits.

use nub_sandbox::{HyperlightError, SandboxConfiguration};
use nub_tests::{fn_id, sandbox, sandbox_with};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn echo_round_trips_small_and_page_sized_payloads() {
    let mut s = sandbox();
    for len in [0usize, 1, 4096] {
        let payload = pattern(len);
        assert_eq!(
            s.call_raw(fn_id::ECHO, &payload).unwrap(),
            payload,
            "len {len}"
        );
    }
}

#[test]
fn echo_round_trips_one_mebibyte_with_large_rings() {
    let cfg = SandboxConfiguration::default().with_ring_sizes(2 << 20, 2 << 20);
    let mut s = sandbox_with(cfg);
    let payload = pattern(1 << 20);
    assert_eq!(s.call_raw(fn_id::ECHO, &payload).unwrap(), payload);
    // And the ring is reused cleanly for the next call.
    assert_eq!(s.call_raw(fn_id::ECHO, b"x").unwrap(), b"x");
}

#[test]
fn add_keeps_state_between_calls() {
    let mut s = sandbox();
    let mut total = 0u64;
    for i in 1..=1000u64 {
        total += i;
        let got = s.call_raw(fn_id::ADD, &i.to_le_bytes()).unwrap();
        assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), total);
    }
}

#[test]
fn unknown_fn_id_is_typed_and_leaves_the_sandbox_usable() {
    let mut s = sandbox();
    let err = s.call_raw(4242, b"").unwrap_err();
    assert!(
        matches!(err, HyperlightError::UnknownFunction { fn_id: 4242 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("4242"));
    assert!(!s.is_poisoned());
    assert_eq!(
        s.call_raw(fn_id::ECHO, b"still here").unwrap(),
        b"still here"
    );
}

#[test]
fn guest_function_error_carries_the_message() {
    let mut s = sandbox();
    let err = s
        .call_raw(fn_id::FAIL, "no such thing ✓".as_bytes())
        .unwrap_err();
    match err {
        HyperlightError::GuestFunctionError {
            fn_id,
            code,
            message,
        } => {
            assert_eq!(fn_id, 3);
            assert_eq!(code, 0, "fn 3 sets no code");
            assert_eq!(message, "no such thing ✓");
        }
        other => panic!("expected a guest function error, got {other:?}"),
    }
    assert!(!s.is_poisoned());
    assert_eq!(s.call_raw(fn_id::ECHO, b"ok").unwrap(), b"ok");
}

#[test]
fn a_raw_guest_error_carries_its_code() {
    let mut s = sandbox();
    let mut payload = 404u32.to_le_bytes().to_vec();
    payload.extend_from_slice(b"no such key");
    let err = s.call_raw(fn_id::FAIL_CODE, &payload).unwrap_err();
    assert!(
        matches!(
            &err,
            HyperlightError::GuestFunctionError { fn_id: 18, code: 404, message }
                if message == "no such key"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("code 404"), "{err}");
    assert!(!s.is_poisoned());
}

#[test]
fn oversized_payload_is_refused_before_the_guest_runs() {
    let cfg = SandboxConfiguration::default().with_ring_sizes(16 << 10, 16 << 10);
    let mut s = sandbox_with(cfg);
    let exits = s.exit_count();
    let err = s.call_raw(fn_id::ECHO, &vec![0u8; 16 << 10]).unwrap_err();
    match err {
        HyperlightError::PayloadTooLarge { size, max } => {
            assert_eq!(size, 16 << 10);
            assert!(max < size && max > 15 << 10, "max {max}");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    if nub_tests::exits_count_runs() {
        assert_eq!(s.exit_count(), exits, "no guest code ran");
    }
    assert!(!s.is_poisoned());
    assert_eq!(s.call_raw(fn_id::ECHO, b"fine").unwrap(), b"fine");
}

#[test]
fn largest_payload_fits_exactly() {
    let cfg = SandboxConfiguration::default().with_ring_sizes(16 << 10, 32 << 10);
    let mut s = sandbox_with(cfg);
    // A payload as large as the whole input ring cannot fit beside its
    // request header: the refusal reports the bound.
    let max = match s.call_raw(fn_id::ECHO, &vec![1u8; 16 << 10]) {
        Err(HyperlightError::PayloadTooLarge { size, max }) => {
            assert_eq!(size, 16 << 10);
            max
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    };
    assert!(max < 16 << 10, "{max}");
    // One byte more than the bound is refused, the bound itself fits.
    match s.call_raw(fn_id::ECHO, &pattern(max + 1)) {
        Err(HyperlightError::PayloadTooLarge { size, max: m }) => {
            assert_eq!((size, m), (max + 1, max));
        }
        other => panic!(
            "expected PayloadTooLarge for {} bytes, got {other:?}",
            max + 1
        ),
    }
    let payload = pattern(max);
    assert_eq!(s.call_raw(fn_id::ECHO, &payload).unwrap(), payload);
}

#[test]
fn oversized_result_is_a_typed_error() {
    let cfg = SandboxConfiguration::default().with_ring_sizes(64 << 10, 16 << 10);
    let mut s = sandbox_with(cfg);
    let err = s.call_raw(fn_id::ECHO, &vec![7u8; 32 << 10]).unwrap_err();
    match err {
        HyperlightError::ResponseTooLarge { needed, .. } => assert_eq!(needed, 32 << 10),
        other => panic!("expected ResponseTooLarge, got {other:?}"),
    }
    assert!(!s.is_poisoned());
    assert_eq!(s.call_raw(fn_id::ECHO, b"small").unwrap(), b"small");
}

#[test]
fn blake3_matches_the_host() {
    let mut s = sandbox();
    for len in [0usize, 1, 1024, 100_000] {
        let payload = pattern(len);
        let got = s.call_raw(fn_id::BLAKE3, &payload).unwrap();
        assert_eq!(got, blake3::hash(&payload).as_bytes(), "len {len}");
    }
}

#[test]
fn guest_panic_is_typed_and_poisons() {
    let mut s = sandbox();
    let err = s.call_raw(fn_id::FAULT, &[5]).unwrap_err();
    match &err {
        HyperlightError::GuestPanicked { message } => {
            assert!(message.contains("guest panicked on purpose"), "{message}")
        }
        other => panic!("expected GuestPanicked, got {other:?}"),
    }
    assert!(s.is_poisoned());
    assert!(matches!(
        s.call_raw(fn_id::ECHO, b"x").unwrap_err(),
        HyperlightError::PoisonedSandbox
    ));
    // The process is fine: a new sandbox works.
    assert_eq!(sandbox().call_raw(fn_id::ECHO, b"x").unwrap(), b"x");
}

#[test]
fn eight_sandboxes_on_four_threads_keep_their_own_state() {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut boxes = [sandbox(), sandbox()];
                let steps = [t * 2 + 1, t * 2 + 2];
                for round in 1..=200u64 {
                    for (b, step) in boxes.iter_mut().zip(steps) {
                        let got = b.call_raw(fn_id::ADD, &step.to_le_bytes()).unwrap();
                        assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), step * round);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn hundred_thousand_echoes_do_not_grow_heap_or_rss() {
    let mut s = sandbox();
    let payload = pattern(64);
    // Warm up, then take the baseline.
    for _ in 0..1000 {
        s.call_raw(fn_id::ECHO, &payload).unwrap();
    }
    let heap_before = s.heap_stats().unwrap();
    let rss_before = nub_tests::rss_kib();
    for _ in 0..100_000 {
        let out = s.call_raw(fn_id::ECHO, &payload).unwrap();
        assert_eq!(out.len(), 64);
    }
    let heap_after = s.heap_stats().unwrap();
    let rss_after = nub_tests::rss_kib();
    assert_eq!(heap_after.used, heap_before.used, "guest heap use changed");
    assert!(
        rss_after < rss_before + 4096,
        "host RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
