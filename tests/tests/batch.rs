//! Many calls in one VM run.

use nub_sandbox::{HyperlightError, Registerable, SandboxConfiguration};
use nub_tests::{assert_exits, fn_id, sandbox, sandbox_with, uninit};

#[test]
fn a_batch_answers_in_order_with_one_exit() {
    let mut s = sandbox();
    let payloads: Vec<Vec<u8>> = (0..100u64).map(|i| i.to_le_bytes().to_vec()).collect();
    let calls: Vec<(u32, &[u8])> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (if i % 2 == 0 { fn_id::ECHO } else { fn_id::ADD }, &p[..]))
        .collect();
    let exits = s.exit_count();
    let results = s.call_batch(&calls).unwrap();
    assert_exits(s.exit_count() - exits, 1, "one exit for the whole batch");
    let mut total = 0u64;
    for (i, r) in results.into_iter().enumerate() {
        let got = r.unwrap();
        if i % 2 == 0 {
            assert_eq!(got, payloads[i]);
        } else {
            total += i as u64;
            assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), total);
        }
    }
}

#[test]
fn errors_stay_with_their_call() {
    let mut s = sandbox();
    let calls: [(u32, &[u8]); 4] = [
        (fn_id::ECHO, b"a"),
        (fn_id::FAIL, b"second failed"),
        (777, b""),
        (fn_id::ECHO, b"d"),
    ];
    let r = s.call_batch(&calls).unwrap();
    assert_eq!(r[0].as_deref().unwrap(), b"a");
    assert!(
        matches!(&r[1], Err(HyperlightError::GuestFunctionError { message, .. }) if message == "second failed")
    );
    assert!(matches!(
        r[2],
        Err(HyperlightError::UnknownFunction { fn_id: 777 })
    ));
    assert_eq!(r[3].as_deref().unwrap(), b"d");
    assert!(!s.is_poisoned());
    assert!(s.call_batch(&[]).unwrap().is_empty());
}

#[test]
fn a_batch_too_large_for_the_input_ring_runs_nothing() {
    let mut s = sandbox_with(SandboxConfiguration::default().with_ring_sizes(16 << 10, 64 << 10));
    let chunk = vec![1u8; 6000];
    let calls: Vec<(u32, &[u8])> = (0..3).map(|_| (fn_id::ADD, &chunk[..])).collect();
    let exits = s.exit_count();
    assert!(matches!(
        s.call_batch(&calls),
        Err(HyperlightError::BatchTooLarge { calls: 3, .. })
    ));
    assert_eq!(s.exit_count(), exits);
    assert!(!s.is_poisoned());
    assert_eq!(s.call_raw(fn_id::ECHO, b"ok").unwrap(), b"ok");
}

#[test]
fn results_that_overflow_the_output_ring_are_typed_errors() {
    let mut s = sandbox_with(SandboxConfiguration::default().with_ring_sizes(64 << 10, 16 << 10));
    let chunk = vec![9u8; 6000];
    let calls: Vec<(u32, &[u8])> = (0..4).map(|_| (fn_id::ECHO, &chunk[..])).collect();
    let r = s.call_batch(&calls).unwrap();
    assert_eq!(r[0].as_deref().unwrap(), &chunk[..]);
    assert_eq!(r[1].as_deref().unwrap(), &chunk[..]);
    for later in &r[2..] {
        assert!(
            matches!(later, Err(HyperlightError::ResponseTooLarge { .. })),
            "{later:?}"
        );
    }
    assert!(!s.is_poisoned());
}

#[test]
fn host_calls_inside_a_batch() {
    let mut u = uninit(None);
    u.register_host_function(1, |b: &[u8]| Ok(b.to_ascii_uppercase()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    let mk = |text: &[u8]| {
        let mut p = 1u32.to_le_bytes().to_vec();
        p.extend_from_slice(text);
        p
    };
    let (a, b) = (mk(b"one"), mk(b"two"));
    let calls: [(u32, &[u8]); 3] = [
        (fn_id::HOST_ECHO, &a),
        (fn_id::ECHO, b"mid"),
        (fn_id::HOST_ECHO, &b),
    ];
    let r = s.call_batch(&calls).unwrap();
    assert_eq!(r[0].as_deref().unwrap(), b"ONE");
    assert_eq!(r[1].as_deref().unwrap(), b"mid");
    assert_eq!(r[2].as_deref().unwrap(), b"TWO");
}

#[test]
fn a_fault_in_a_batch_poisons_the_sandbox() {
    let mut s = sandbox();
    let calls: [(u32, &[u8]); 3] = [
        (fn_id::ECHO, b"a"),
        (fn_id::FAULT, &[2]),
        (fn_id::ECHO, b"c"),
    ];
    assert!(matches!(
        s.call_batch(&calls),
        Err(HyperlightError::GuestFault { vector: 6, .. })
    ));
    assert!(s.is_poisoned());
    assert!(matches!(
        s.call_batch(&calls[..1]),
        Err(HyperlightError::PoisonedSandbox)
    ));
}
