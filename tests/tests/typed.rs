//! Typed calls (`nub_sandbox::typed`, docs/interfaces.md) against the
//! default guest's typed functions (ids 14–17,
//! `nub_host_common::default_guest::typed`): results and the function's own
//! errors come back typed; state lives in a value the guest kernel keeps;
//! host functions are typed closures; a declaration that differs between
//! host and guest, or bytes that do not decode, are typed errors and the
//! sandbox carries on. Both call modes (`NUB_TEST_CALL_MODE`).

use nub_host_common::default_guest::typed::{
    AddPair, AskHost, Count, Double, DoubleError, EchoBytes, MathError, Pair,
};
use nub_sandbox::{
    CallError, MultiUseSandbox, TypedRegistrable,
    nub_interface::{self, WireError},
};
use nub_tests::{in_call_mode, sandbox_with, uninit};

fn sandbox() -> MultiUseSandbox {
    sandbox_with(in_call_mode(None))
}

#[test]
fn results_and_the_functions_own_errors_come_back_typed() {
    let mut s = sandbox();
    assert_eq!(s.call::<AddPair>(&Pair { a: 40, b: 2 }).unwrap(), 42);
    let err = s.call::<AddPair>(&Pair { a: u64::MAX, b: 1 }).unwrap_err();
    assert!(
        matches!(err, CallError::Guest(MathError::Overflow)),
        "{err:?}"
    );
    let big = nub_interface::Bytes::from(vec![0x5Au8; 4096]);
    assert_eq!(s.call::<EchoBytes>(&big).unwrap(), big);
    assert!(!s.is_poisoned());
}

#[test]
fn state_is_kept_between_calls_and_fresh_in_each_sandbox() {
    let mut a = sandbox();
    let mut b = sandbox();
    assert_eq!(a.call::<Count>(&5).unwrap(), 5);
    assert_eq!(a.call::<Count>(&2).unwrap(), 7);
    assert_eq!(b.call::<Count>(&1).unwrap(), 1);
}

#[test]
fn typed_host_functions_answer_the_guest_with_their_own_errors() {
    let mut u = uninit(Some(in_call_mode(None)));
    u.register_typed::<Double>(|n| {
        n.checked_mul(2)
            .ok_or(DoubleError::Refused("too big".into()))
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    assert_eq!(s.call::<AskHost>(&21).unwrap(), 42);
    let err = s.call::<AskHost>(&u64::MAX).unwrap_err();
    assert!(
        matches!(&err, CallError::Guest(DoubleError::Refused(m)) if m == "too big"),
        "{err:?}"
    );
    // Without the host function the guest's call fails, and says so.
    let mut bare = sandbox();
    let err = bare.call::<AskHost>(&1).unwrap_err();
    assert!(
        matches!(err, CallError::Guest(DoubleError::Call(_))),
        "{err:?}"
    );
}

mod skewed {
    // The same id as the guest's AddPair, declared differently: what a
    // host built against another version of the interface sends.
    nub_sandbox::nub_interface::interface! {
        pub mod functions {
            guest AddPair = 14 (u32) -> u32 | ();
        }
    }
}

#[test]
fn a_declaration_that_differs_from_the_guests_is_a_typed_error() {
    let mut s = sandbox();
    let err = s.call::<skewed::functions::AddPair>(&7).unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Wire {
                fn_id: 14,
                error: WireError::Signature { .. }
            }
        ),
        "{err:?}"
    );
    // Raw bytes with the right signature and a broken argument.
    let mut payload = nub_interface::encode_args::<AddPair>(&Pair { a: 1, b: 2 }).unwrap();
    payload.truncate(9);
    let reply = s.call_raw(14, &payload).unwrap();
    assert_eq!(
        nub_interface::decode_reply::<AddPair>(&reply),
        Err(WireError::BadArgs)
    );
    assert_eq!(s.call::<AddPair>(&Pair { a: 1, b: 2 }).unwrap(), 3);
    assert!(!s.is_poisoned());
}

#[test]
fn one_host_function_set_serves_every_rebuilt_sandbox() {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let set = nub_sandbox::HostFunctionSet::new().typed::<Double>(move |n| {
        seen.fetch_add(1, Ordering::Relaxed);
        Ok(n * 2)
    });
    assert_eq!(set.ids(), [0x200]);
    let mut first = uninit(Some(in_call_mode(None)));
    set.install(&mut first).unwrap();
    let mut first = first.evolve().unwrap();
    assert_eq!(first.call::<AskHost>(&1).unwrap(), 2);
    // "Drop it and build a new one", from a boot and from an image: the
    // same set, installed again, no closure rebuilt.
    let image = first.capture_image().unwrap();
    drop(first);
    let mut rebuilt = MultiUseSandbox::from_image(&image, Some(in_call_mode(None))).unwrap();
    set.install(&mut rebuilt).unwrap();
    assert_eq!(rebuilt.call::<AskHost>(&2).unwrap(), 4);
    let mut again = uninit(Some(in_call_mode(None)));
    set.install(&mut again).unwrap();
    assert_eq!(again.evolve().unwrap().call::<AskHost>(&3).unwrap(), 6);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "one closure behind all of them"
    );
}

#[test]
fn a_typed_call_takes_a_deadline_of_its_own() {
    // AskHost waits on a host function that sleeps past the deadline.
    let mut u = uninit(Some(in_call_mode(None)));
    u.register_typed::<Double>(|n| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(n * 2)
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    let options =
        nub_sandbox::CallOptions::default().with_deadline(std::time::Duration::from_millis(20));
    let err = s.call_with::<AskHost>(&1, options).unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Sandbox(nub_sandbox::HyperlightError::ExecutionTimeout(_))
        ),
        "{err:?}"
    );
}

#[test]
fn a_typed_reply_too_large_for_the_output_ring_is_a_typed_error() {
    let cfg = nub_sandbox::SandboxConfiguration::default().with_ring_sizes(64 << 10, 16 << 10);
    let mut s = sandbox_with(in_call_mode(Some(cfg)));
    // Fits the input ring, not the output ring: the guest's in-place
    // encoding does not fit, and the heap-encoded reply reports its size.
    let big = nub_interface::Bytes::from(vec![7u8; 20 << 10]);
    let err = s.call::<EchoBytes>(&big).unwrap_err();
    assert!(
        matches!(
            &err,
            CallError::Sandbox(nub_sandbox::HyperlightError::ResponseTooLarge { needed, .. })
                if *needed > 20 << 10
        ),
        "{err:?}"
    );
    assert!(!s.is_poisoned());
    // A reply that fits still goes straight into the ring.
    let small = nub_interface::Bytes::from(vec![7u8; 1 << 10]);
    assert_eq!(s.call::<EchoBytes>(&small).unwrap(), small);
}
