//! The kv service in real sandboxes (needs /dev/kvm).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::Duration;

use nub_kv::{CallError, HostFunctionSet, Kv, KvError, MAX_VALUE, kv};
use nub_sandbox::{CallOptions, HyperlightError, javm_cap::Cap};

/// A store whose clock counts its readings (1, 2, 3, ...), and the count.
fn store() -> (Kv, Arc<AtomicU64>) {
    let readings = Arc::new(AtomicU64::new(0));
    let clock = Arc::clone(&readings);
    let fns = HostFunctionSet::new()
        .typed::<kv::Now>(move |()| Ok(clock.fetch_add(1, Ordering::Relaxed) + 1));
    (Kv::new(fns), readings)
}

#[test]
fn put_get_delete_and_list_round_trip() {
    let (mut kv, _) = store();
    assert_eq!(kv.put("b", b"2").expect("put"), None);
    assert_eq!(kv.put("a/1", b"x").expect("put"), None);
    assert_eq!(kv.put("a/2", b"y").expect("put"), None);
    assert_eq!(kv.put("a/1", b"z").expect("put"), Some(b"x".to_vec()));
    assert_eq!(*kv.get("a/1").expect("get").value, b"z");
    assert_eq!(kv.list("a/").expect("list"), ["a/1", "a/2"]);
    assert_eq!(kv.list("").expect("list"), ["a/1", "a/2", "b"]);
    assert_eq!(kv.delete("b").expect("delete"), b"2");
    assert_eq!(kv.list("").expect("list"), ["a/1", "a/2"]);
}

#[test]
fn the_guests_own_errors_arrive_typed_and_the_sandbox_carries_on() {
    let (mut kv, _) = store();
    let missing = kv.get("nope").expect_err("no such key");
    assert!(
        matches!(missing, CallError::Guest(KvError::NotFound)),
        "{missing:?}"
    );
    let missing = kv.delete("nope").expect_err("no such key");
    assert!(
        matches!(missing, CallError::Guest(KvError::NotFound)),
        "{missing:?}"
    );
    let big = kv
        .put("big", &vec![0; MAX_VALUE + 1])
        .expect_err("too large");
    assert!(matches!(big, CallError::Guest(KvError::TooLarge(n)) if n == MAX_VALUE as u64 + 1));
    assert_eq!(kv.put("k", b"v").expect("the same sandbox serves on"), None);
}

#[test]
fn every_write_is_stamped_by_the_hosts_clock() {
    let (mut kv, readings) = store();
    kv.put("a", b"1").expect("put");
    kv.put("b", b"2").expect("put");
    kv.put("a", b"3").expect("put");
    assert_eq!(kv.get("a").expect("get").time, 3);
    assert_eq!(kv.get("b").expect("get").time, 2);
    assert_eq!(
        readings.load(Ordering::Relaxed),
        3,
        "one reading per write, none per read"
    );
}

#[test]
fn the_guest_reads_a_published_cap_by_its_hash() {
    let (mut kv, _) = store();
    let blob: Vec<u8> = (0..=255).cycle().take(10_000).collect();
    let sandbox = kv.sandbox().expect("booted");
    let hash = sandbox
        .put_cap(&Cap::inline(blob.clone()))
        .expect("published");
    let imported = kv.call::<kv::Import>(&("blob".into(), hash.to_bytes()));
    assert_eq!(imported.expect("imported"), None);
    assert_eq!(kv.get("blob").expect("get").value.into_vec(), blob);
    let absent = kv
        .call::<kv::Import>(&("x".into(), [7; 32]))
        .expect_err("no such cap");
    assert!(
        matches!(absent, CallError::Guest(KvError::NoSuchCap)),
        "{absent:?}"
    );
}

#[test]
fn a_runaway_call_is_stopped_and_the_next_one_gets_a_new_sandbox() {
    let (mut kv, readings) = store();
    kv.put("a", b"1").expect("put");
    let options = CallOptions::default().with_deadline(Duration::from_millis(50));
    let sandbox = kv.sandbox().expect("booted");
    let err = sandbox
        .call_with::<kv::Spin>(&(), options)
        .expect_err("it never returns");
    assert!(
        matches!(
            err,
            CallError::Sandbox(HyperlightError::ExecutionTimeout(_))
        ),
        "{err:?}"
    );
    assert!(sandbox.is_poisoned());
    // Through `Kv::call`, whose own deadline stops it too.
    let err = kv.call::<kv::Spin>(&()).expect_err("it never returns");
    assert!(
        matches!(&err, CallError::Sandbox(e) if e.poisons()),
        "{err:?}"
    );
    // The data went with the poisoned sandbox; the new one starts empty,
    // with the same host functions: the clock goes on from where it was.
    let missing = kv.get("a").expect_err("a new, empty store");
    assert!(
        matches!(missing, CallError::Guest(KvError::NotFound)),
        "{missing:?}"
    );
    kv.put("a", b"2").expect("put");
    assert_eq!(kv.get("a").expect("get").time, 2);
    assert_eq!(readings.load(Ordering::Relaxed), 2);
}
