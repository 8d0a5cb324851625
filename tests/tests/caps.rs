//! The capability directory: guest hashes equal host hashes, the merkle
//! walk, the exit-free reader, and a reader that survives a hostile guest.

use std::sync::Arc;

use javm_cap::{Cap, CapHash, Pages, Slot};
use nub_sandbox::{HyperlightError, MultiUseSandbox, SandboxConfiguration, WireFault};
use nub_tests::{fn_id, sandbox, sandbox_with};
use proptest::prelude::*;

fn data(bytes: &[u8]) -> Cap {
    Cap::inline(bytes.to_vec())
}

fn put_checked(s: &mut MultiUseSandbox, cap: &Cap) -> CapHash {
    let got = s.put_cap(cap).unwrap();
    assert_eq!(got, cap.hash(), "guest hash == host hash for {cap:?}");
    got
}

#[test]
fn guest_hash_matches_host_for_data_of_several_sizes() {
    let mut s = sandbox();
    for len in [0usize, 1, 64 * 1024] {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        put_checked(&mut s, &data(&bytes));
    }
}

#[test]
fn guest_hash_matches_host_for_a_wide_cnode() {
    let mut s = sandbox();
    let mut slots = Vec::new();
    for i in 0..256u32 {
        if i % 3 == 0 {
            slots.push(Slot::Empty);
        } else {
            let child = data(&i.to_le_bytes());
            put_checked(&mut s, &child);
            slots.push(Slot::Hash(child.hash()));
        }
    }
    put_checked(&mut s, &Cap::cnode(slots));
}

#[test]
fn guest_hash_matches_host_for_a_five_level_dag() {
    let mut s = sandbox();
    let leaf = Arc::new(data(b"leaf"));
    let mut level: Vec<Arc<Cap>> = vec![Arc::clone(&leaf), Arc::new(data(b"other leaf"))];
    for depth in 0..4 {
        let mut next = Vec::new();
        for i in 0..3 {
            let mut slots: Vec<Slot> = level.iter().map(|c| Slot::Ref(Arc::clone(c))).collect();
            slots.push(if (i + depth) % 2 == 0 {
                Slot::Empty
            } else {
                Slot::Ref(Arc::clone(&leaf))
            });
            next.push(Arc::new(Cap::cnode(slots)));
        }
        level = next;
    }
    let root = Cap::cnode(
        level
            .iter()
            .map(|c| Slot::Ref(Arc::clone(c)))
            .collect::<Vec<_>>(),
    );
    let got = s.put_cap_graph(&root).unwrap();
    assert_eq!(got, root.hash());
    // Publishing again sends nothing new and costs no exits.
    let exits = s.exit_count();
    assert_eq!(s.put_cap_graph(&root).unwrap(), root.hash());
    if nub_tests::exits_count_runs() {
        assert_eq!(s.exit_count(), exits);
    }
    // Every level is retrievable with the same hash.
    let fetched = s.get_cap(root.hash()).unwrap().unwrap();
    assert_eq!(fetched.hash(), root.hash());
}

#[test]
fn paged_data_and_ref_slots_are_refused_before_sending() {
    let mut s = sandbox();
    let before = s.directory_stats().unwrap();
    let paged = Cap::paged(&[7u8; 10_000]);
    assert!(matches!(
        s.put_cap(&paged),
        Err(HyperlightError::Wire(WireFault::PagedData))
    ));
    let node = Cap::cnode(vec![Slot::Empty, Slot::Ref(Arc::new(data(b"x")))]);
    assert!(matches!(
        s.put_cap(&node),
        Err(HyperlightError::Wire(WireFault::RefSlot { index: 1 }))
    ));
    assert_eq!(
        s.directory_stats().unwrap(),
        before,
        "nothing reached the guest"
    );
    assert!(!s.is_poisoned());
    // put_cap_graph converts both.
    assert_eq!(s.put_cap_graph(&paged).unwrap(), paged.hash());
    assert_eq!(s.put_cap_graph(&node).unwrap(), node.hash());
}

#[test]
fn cnode_with_an_absent_child_is_refused_and_changes_nothing() {
    let mut s = sandbox();
    let child = data(b"never published");
    let node = Cap::cnode(vec![Slot::Hash(child.hash())]);
    let before = s.directory_stats().unwrap();
    match s.put_cap(&node) {
        Err(HyperlightError::CapMissingChild { child: missing }) => {
            assert_eq!(missing, child.hash())
        }
        other => panic!("expected CapMissingChild, got {other:?}"),
    }
    assert_eq!(s.directory_stats().unwrap(), before);
    assert!(!s.is_poisoned());
    put_checked(&mut s, &child);
    put_checked(&mut s, &node);
}

#[test]
fn put_is_idempotent() {
    let mut s = sandbox();
    let cap = data(b"twice");
    put_checked(&mut s, &cap);
    let stats = s.directory_stats().unwrap();
    put_checked(&mut s, &cap);
    assert_eq!(s.directory_stats().unwrap(), stats);
    assert_eq!(stats.count, 1);
}

#[test]
fn the_directory_address_comes_with_boot() {
    let mut s = sandbox();
    let exits = s.exit_count();
    // No call asks the guest where its directory is: the kernel published
    // the address at boot.
    let cap = data(b"first");
    assert!(!s.cache_reader().unwrap().contains(&cap.hash()));
    if nub_tests::exits_count_runs() {
        assert_eq!(s.exit_count(), exits, "no exit to build the reader");
    }
    // The first put_cap_with_hash costs the put alone.
    s.put_cap_with_hash(cap.hash(), &cap).unwrap();
    if nub_tests::exits_count_runs() {
        assert_eq!(s.exit_count(), exits + 1, "one exit: the put");
    }
    assert!(s.cache_reader().unwrap().contains(&cap.hash()));
    // And it is the address the guest answers when asked.
    let reader_sees = s.cache_reader().unwrap().contains(&cap.hash());
    assert_eq!(reader_sees, s.get_cap(cap.hash()).unwrap().is_some());
    assert_ne!(s.boot_info().unwrap().directory_va, 0);
}

#[test]
fn put_with_a_present_hash_costs_no_exit() {
    let mut s = sandbox();
    let cap = data(b"present");
    put_checked(&mut s, &cap);
    let exits = s.exit_count();
    for _ in 0..100 {
        s.put_cap_with_hash(cap.hash(), &cap).unwrap();
    }
    // (In resident mode a call costs no exit either, and an idle guest may
    // park on its own, so only exit mode counts exits here.)
    if nub_tests::exits_count_runs() {
        assert_eq!(s.exit_count(), exits, "no VM exit for a present hash");
    }
    // An absent hash goes to the guest.
    let other = data(b"absent so far");
    s.put_cap_with_hash(other.hash(), &other).unwrap();
    if nub_tests::exits_count_runs() {
        assert!(s.exit_count() > exits);
    }
    assert!(s.cache_reader().unwrap().contains(&other.hash()));
}

#[test]
fn reader_agrees_with_get_cap_across_growth() {
    let cfg = SandboxConfiguration::default().with_heap_size(8 << 20);
    let mut s = sandbox_with(cfg);
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut present = Vec::new();
    let mut checked = 0;
    // Grow the directory in stages, checking between them.
    for stage in 0..5u64 {
        for i in 0..600u64 {
            let cap = data(&(stage * 1000 + i).to_le_bytes());
            present.push(put_checked(&mut s, &cap));
        }
        for _ in 0..2000 {
            let hash = if next() % 2 == 0 {
                present[(next() as usize) % present.len()]
            } else {
                let mut raw = [0u8; 32];
                for chunk in raw.chunks_mut(8) {
                    chunk.copy_from_slice(&next().to_le_bytes());
                }
                CapHash::from_bytes(raw)
            };
            let by_reader = s.cache_reader().unwrap().contains(&hash);
            let by_call = s.get_cap(hash).unwrap().is_some();
            assert_eq!(by_reader, by_call, "reader and GET_CAP disagree on {hash}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10_000);
    assert!(
        s.directory_stats().unwrap().capacity >= 4096,
        "the table grew"
    );
}

#[test]
fn scribbled_header_makes_the_reader_say_absent_and_puts_still_work() {
    for selector in 0u8..=4 {
        let mut s = sandbox();
        let cap = data(b"before the scribble");
        put_checked(&mut s, &cap);
        assert!(s.cache_reader().unwrap().contains(&cap.hash()));
        let mut payload = vec![selector];
        payload.extend((0..64u8).map(|i| i.wrapping_mul(97)));
        s.call_raw(fn_id::SCRIBBLE_DIRECTORY, &payload).unwrap();
        assert!(
            !s.cache_reader().unwrap().contains(&cap.hash()),
            "selector {selector}: a corrupt header reads as absent"
        );
        // The slow path still works: the put goes to the guest.
        s.put_cap_with_hash(cap.hash(), &cap).unwrap();
        let fresh = data(b"after the scribble");
        put_checked(&mut s, &fresh);
        // A put rewrites the header, so the reader recovers.
        assert!(s.cache_reader().unwrap().contains(&fresh.hash()));
    }
}

/// The host turning a sentinel answer into an error is covered by the
/// `put_answer` unit test in nub-sandbox and by the missing-child test here.
#[test]
fn guest_answers_garbage_with_the_sentinel_and_oversized_caps_stay_on_the_host() {
    let mut s = sandbox();
    // Garbage instead of a WireCap: the guest answers with the sentinel.
    let answer = s
        .call_raw(nub_host_common::rpc::FN_ID_NUB_PUT_CAP, b"garbage")
        .unwrap();
    assert_eq!(answer, CapHash::SENTINEL.as_bytes());
    // A data cap over the wire limit never reaches the guest.
    let big = data(&vec![0u8; javm_cap::MAX_DATA_LEN + 1]);
    assert!(matches!(
        s.put_cap(&big),
        Err(HyperlightError::Wire(WireFault::DataTooLarge { .. }))
    ));
}

#[test]
fn cap_sum_reads_the_directory_in_the_guest() {
    let mut s = sandbox();
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let cap = data(&bytes);
    let h = put_checked(&mut s, &cap);
    let got = s.call_raw(fn_id::CAP_SUM, h.as_bytes()).unwrap();
    let expected: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), expected);
    // Absent, and not Data: guest-function errors, sandbox usable.
    assert!(matches!(
        s.call_raw(fn_id::CAP_SUM, data(b"nope").hash().as_bytes()),
        Err(HyperlightError::GuestFunctionError { .. })
    ));
    let node = Cap::cnode(vec![Slot::Hash(h)]);
    let nh = put_checked(&mut s, &node);
    assert!(matches!(
        s.call_raw(fn_id::CAP_SUM, nh.as_bytes()),
        Err(HyperlightError::GuestFunctionError { .. })
    ));
    assert!(!s.is_poisoned());
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..9000)
}

/// Random cap trees of Data leaves and CNodes with Empty/Ref slots.
fn arb_cap() -> impl Strategy<Value = Cap> {
    let leaf = arb_bytes().prop_map(Cap::inline);
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop::collection::vec(prop::option::of(inner), 0..6).prop_map(|slots| {
            Cap::cnode(
                slots
                    .into_iter()
                    .map(|s| match s {
                        None => Slot::Empty,
                        Some(c) => Slot::Ref(Arc::new(c)),
                    })
                    .collect::<Vec<_>>(),
            )
        })
    })
}

/// The same content with every Ref replaced by its child's hash.
fn as_hashes(cap: &Cap) -> Cap {
    match cap {
        Cap::Data(_) => cap.clone(),
        Cap::CNode { slots } => Cap::cnode(
            slots
                .iter()
                .map(|s| match s {
                    Slot::Ref(c) => Slot::Hash(c.hash()),
                    other => other.clone(),
                })
                .collect::<Vec<_>>(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_caps_hash_the_same_in_guest_and_host(cap in arb_cap()) {
        nub_tests::require_kvm();
        let mut s = sandbox();
        let got = s.put_cap_graph(&cap).unwrap();
        prop_assert_eq!(got, cap.hash());
        // Ref vs Hash: the same node with hash slots is the same cap.
        prop_assert_eq!(s.put_cap(&as_hashes(&cap)).unwrap(), cap.hash());
    }

    #[test]
    fn paged_and_inline_data_hash_the_same_in_the_guest(bytes in arb_bytes()) {
        nub_tests::require_kvm();
        let mut s = sandbox();
        let inline = Cap::inline(bytes.clone());
        let paged = Cap::Data(javm_cap::DataContent::Paged(Pages::from_bytes(&bytes)));
        prop_assert_eq!(s.put_cap_graph(&paged).unwrap(), inline.hash());
        prop_assert_eq!(s.put_cap(&inline).unwrap(), inline.hash());
    }
}
