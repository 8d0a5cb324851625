//! The guest's functions on the host, through `nub_arch_x86::testing`
//! (each harness call runs `init` again: a fresh store every time).

use nub_arch_x86::{
    abi::rpc::FN_ID_NUB_PUT_CAP,
    javm_cap::{Cap, wire},
    testing::Harness,
};

use super::*;

fn bytes(b: &[u8]) -> Bytes {
    Bytes::from(b)
}

#[test]
fn the_store_keeps_lists_and_removes_keys() {
    let mut s = Store::default();
    assert_eq!(s.insert("a/1".into(), bytes(b"x"), 1), Ok(None));
    assert_eq!(s.insert("a/2".into(), bytes(b"y"), 2), Ok(None));
    assert_eq!(s.insert("b".into(), bytes(b"z"), 3), Ok(None));
    assert_eq!(
        s.insert("a/1".into(), bytes(b"w"), 4),
        Ok(Some(bytes(b"x")))
    );
    let stored = Stored {
        value: bytes(b"w"),
        time: 4,
    };
    assert_eq!(s.get("a/1".into()), Ok(stored));
    assert_eq!(s.list("a/".into()), Ok(vec!["a/1".into(), "a/2".into()]));
    assert_eq!(s.delete("b".into()), Ok(bytes(b"z")));
    assert_eq!(s.delete("b".into()), Err(KvError::NotFound));
    let big = Bytes::from(vec![0; MAX_VALUE + 1]);
    let too_large = KvError::TooLarge(MAX_VALUE as u64 + 1);
    assert_eq!(s.insert("big".into(), big, 5), Err(too_large));
}

#[test]
fn put_reads_the_hosts_clock_and_each_call_gets_a_fresh_store() {
    let mut h = Harness::new().host_typed::<kv::Now>(|()| Ok(7));
    let entry = ("k".into(), bytes(b"v"));
    assert_eq!(h.call_typed::<kv::Put>(init, &entry), Ok(Ok(None)));
    assert_eq!(h.host_calls().len(), 1);
    let get = h.call_typed::<kv::Get>(init, &"k".into());
    assert_eq!(get, Ok(Err(KvError::NotFound)));
    let no_clock = Harness::new().call_typed::<kv::Put>(init, &entry);
    assert!(
        matches!(no_clock, Ok(Err(KvError::Clock(_)))),
        "{no_clock:?}"
    );
}

#[test]
fn import_reads_a_published_cap_by_hash() {
    let cap = Cap::inline(b"from a cap".to_vec());
    let mut h = Harness::new().host_typed::<kv::Now>(|()| Ok(1));
    let encoded = wire::encode_cap(&cap).expect("an inline cap has a wire form");
    let put = h.call_id(init, FN_ID_NUB_PUT_CAP, &encoded);
    assert_eq!(put.as_deref(), Ok(&cap.hash().as_bytes()[..]));
    let import = |h: &mut Harness, hash| h.call_typed::<kv::Import>(init, &("c".into(), hash));
    assert_eq!(import(&mut h, cap.hash().to_bytes()), Ok(Ok(None)));
    assert_eq!(import(&mut h, [7; 32]), Ok(Err(KvError::NoSuchCap)));
}
