//! Cross-module tests: golden vectors, the documented byte layout, content
//! equivalences, and property tests.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use proptest::collection::vec as pvec;
use proptest::prelude::*;

use crate::hash::{CNODE_TAG, CNodeHasher, DATA_TAG, DataHasher};
use crate::wire::{self, AlignedVec, WireCap, WireError, WireSlot};
use crate::{Cap, CapHash, DataContent, PAGE_SIZE, Pages, Slot, hash_cnode, hash_data};

fn h(hex: &str) -> CapHash {
    CapHash::from_hex(hex).expect("valid hex in test")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The golden vectors of the v1 encoding. These values are an ABI between
/// host and guest and are baked into stored hashes: if this test fails, the
/// encoding changed, which is a breaking change (it needs new `v2` domain
/// tags, not new expected values here).
#[test]
fn golden_vectors() {
    let empty = Cap::inline(vec![]);
    let cnode0 = Cap::cnode(vec![]);
    let cases: [(Cap, &str); 6] = [
        (
            empty.clone(),
            "a157455aa32813af4554c6c66a83ab04f1c35c38a7eb9bd72028aaa4c8f8bfa2",
        ),
        (
            Cap::inline(*b"ab"),
            "166d9e73cb009a04e4b27c2e7b082406721058263f42c59c045e1e47d26a6689",
        ),
        (
            cnode0.clone(),
            "7adb86ced845f57fbe9051a7e45f0f65877e8f60aedbf932cb7da4dd8b9f24f1",
        ),
        (
            Cap::cnode(vec![Slot::Empty]),
            "5356d6aad677aebd1cd9d9af50a7d6f63fcd2bbbf3f5637e8e7712f7010b4287",
        ),
        (
            Cap::cnode(vec![
                Slot::Empty,
                Slot::Hash(empty.hash()),
                Slot::Hash(cnode0.hash()),
            ]),
            "35c3693fa2cf19a4e81b21e68b5d8daf9d27a11d63c324dfd29db079e2cacca8",
        ),
        (
            Cap::paged(&pattern(4097)),
            "2fd4be99b3782101fb345046a35127b92a0cc1fef93c961250189ed621072129",
        ),
    ];
    for (cap, expected) in cases {
        assert_eq!(cap.hash(), h(expected), "golden vector for {cap:?}");
    }
    assert_eq!(
        Cap::inline(pattern(4097)).hash(),
        h("2fd4be99b3782101fb345046a35127b92a0cc1fef93c961250189ed621072129")
    );
}

/// The hashers produce exactly BLAKE3 of the byte layout documented in the
/// crate docs, built here by hand.
#[test]
fn documented_byte_layout() {
    // Data("ab").
    let mut enc = Vec::new();
    enc.extend_from_slice(b"javm-cap/v1/data");
    enc.extend_from_slice(b"ab");
    enc.extend_from_slice(&2u64.to_le_bytes());
    assert_eq!(enc.len(), 26);
    assert_eq!(
        enc,
        [
            &[
                0x6a, 0x61, 0x76, 0x6d, 0x2d, 0x63, 0x61, 0x70, 0x2f, 0x76, 0x31, 0x2f, 0x64, 0x61,
                0x74, 0x61, 0x61, 0x62,
            ][..],
            &[2, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat()
    );
    assert_eq!(
        Cap::inline(*b"ab").hash().to_bytes(),
        *blake3::hash(&enc).as_bytes()
    );

    // CNode([Empty, Hash(x), Empty]).
    let x = hash_data(b"x");
    let mut enc = Vec::new();
    enc.extend_from_slice(b"javm-cap/v1/cnode");
    enc.push(0x00);
    enc.push(0x01);
    enc.extend_from_slice(x.as_bytes());
    enc.push(0x00);
    enc.extend_from_slice(&3u64.to_le_bytes());
    assert_eq!(enc.len(), 17 + 1 + 33 + 1 + 8);
    let cap = Cap::cnode(vec![Slot::Empty, Slot::Hash(x), Slot::Empty]);
    assert_eq!(cap.hash().to_bytes(), *blake3::hash(&enc).as_bytes());
    assert_eq!(DATA_TAG, b"javm-cap/v1/data");
    assert_eq!(CNODE_TAG, b"javm-cap/v1/cnode");
}

#[test]
fn inline_paged_equivalence_at_page_boundaries() {
    for len in [
        0,
        1,
        PAGE_SIZE - 1,
        PAGE_SIZE,
        PAGE_SIZE + 1,
        2 * PAGE_SIZE,
        3 * PAGE_SIZE,
        3 * PAGE_SIZE + 1,
        4 * PAGE_SIZE - 1,
    ] {
        let bytes = pattern(len);
        let inline = Cap::inline(bytes.clone());
        let paged = Cap::paged(&bytes);
        assert_eq!(inline.hash(), paged.hash(), "len {len}");
        assert_eq!(inline.hash(), hash_data(&bytes), "len {len}");
        // Structural `==` tells the representations apart.
        assert_ne!(inline, paged);
    }
}

#[test]
fn ref_hash_equivalence() {
    let child = Cap::cnode(vec![Slot::Empty, Slot::from(Cap::inline(*b"leaf"))]);
    let by_ref = Cap::cnode(vec![Slot::Ref(Arc::new(child.clone())), Slot::Empty]);
    let by_hash = Cap::cnode(vec![Slot::Hash(child.hash()), Slot::Empty]);
    assert_eq!(by_ref.hash(), by_hash.hash());
    assert_ne!(by_ref, by_hash);
    assert_eq!(
        by_ref.hash(),
        hash_cnode([Some(child.hash()), None]),
        "hash_cnode from borrowed parts"
    );
}

#[test]
fn distinct_caps_hash_differently() {
    let caps = [
        Cap::inline(vec![]),
        Cap::cnode(vec![]),
        Cap::cnode(vec![Slot::Empty]),
        Cap::cnode(vec![Slot::Empty, Slot::Empty]),
        Cap::cnode(vec![Slot::Hash(CapHash::from_bytes([0; 32]))]),
        Cap::cnode(vec![Slot::Hash(CapHash::from_bytes([0; 32])), Slot::Empty]),
        Cap::cnode(vec![Slot::Empty, Slot::Hash(CapHash::from_bytes([0; 32]))]),
        Cap::cnode(vec![Slot::Hash(CapHash::SENTINEL)]),
        Cap::inline(*b"ab"),
        Cap::inline(*b"ba"),
        Cap::inline(*b"a"),
        Cap::inline(vec![0]),
        Cap::inline(vec![0, 0]),
        // Data whose bytes spell a CNode encoding body.
        Cap::inline([&[0u8][..], &1u64.to_le_bytes()].concat()),
        Cap::inline(*b"javm-cap/v1/cnode"),
        Cap::cnode(vec![Slot::Hash(Cap::inline(*b"ab").hash())]),
        Cap::cnode(vec![Slot::Hash(Cap::inline(vec![]).hash())]),
        Cap::cnode(vec![Slot::Hash(Cap::cnode(vec![]).hash())]),
    ];
    let hashes: Vec<CapHash> = caps.iter().map(Cap::hash).collect();
    for (i, a) in hashes.iter().enumerate() {
        assert!(!a.is_sentinel());
        for (j, b) in hashes.iter().enumerate().skip(i + 1) {
            assert_ne!(
                a, b,
                "caps {i} and {j} collide: {:?} / {:?}",
                caps[i], caps[j]
            );
        }
    }
}

#[test]
fn streaming_hashers_match() {
    let bytes = pattern(3 * PAGE_SIZE + 7);
    let mut d = DataHasher::new();
    for piece in bytes.chunks(1000) {
        d.update(piece);
    }
    assert_eq!(d.len(), bytes.len() as u64);
    assert_eq!(d.finalize(), hash_data(&bytes));
    assert_eq!(DataHasher::default().finalize(), hash_data(b""));

    let mut c = CNodeHasher::new();
    c.push(None).push(Some(hash_data(b"")));
    assert_eq!(c.slot_count(), 2);
    assert_eq!(c.finalize(), hash_cnode([None, Some(hash_data(b""))]));
}

#[test]
fn archived_hash_in_place_matches() {
    let child = Arc::new(Cap::paged(&pattern(5000)));
    let host = Cap::cnode(vec![Slot::Ref(child.clone()), Slot::Empty]);
    // What the host actually sends: refs resolved to hashes.
    let sendable = Cap::cnode(vec![Slot::Hash(child.hash()), Slot::Empty]);
    let bytes = wire::encode_cap(&sendable).expect("encodes");
    let archived = wire::access(&bytes).expect("valid");
    assert_eq!(archived.hash(), host.hash());
    assert_eq!(archived.slots().map(<[_]>::len), Some(2));
    assert_eq!(archived.data(), None);

    let data = Cap::inline(pattern(5000));
    let bytes = wire::encode_cap(&data).expect("encodes");
    let archived = wire::access(&bytes).expect("valid");
    assert_eq!(archived.hash(), child.hash());
    assert_eq!(archived.data(), Some(&pattern(5000)[..]));
}

// ---------------------------------------------------------------------------
// Property tests.

fn arb_hash() -> impl Strategy<Value = CapHash> {
    any::<[u8; 32]>().prop_map(CapHash::from_bytes)
}

/// Lengths biased to page boundaries, up to a bit over 3 pages.
fn arb_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(PAGE_SIZE - 1),
        Just(PAGE_SIZE),
        Just(PAGE_SIZE + 1),
        Just(3 * PAGE_SIZE),
        (3 * PAGE_SIZE..3 * PAGE_SIZE + 300),
        0..4 * PAGE_SIZE,
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    arb_len().prop_flat_map(|len| pvec(any::<u8>(), len))
}

/// Any host-side cap: inline/paged data, CNodes with empty/hash/ref slots.
fn arb_cap() -> impl Strategy<Value = Cap> {
    let leaf = prop_oneof![
        pvec(any::<u8>(), 0..64).prop_map(Cap::inline),
        pvec(any::<u8>(), 0..64).prop_map(|b| Cap::paged(&b)),
        Just(Cap::cnode(vec![])),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        pvec(
            prop_oneof![
                Just(Slot::Empty),
                arb_hash().prop_map(Slot::Hash),
                inner.prop_map(|c| Slot::Ref(Arc::new(c))),
            ],
            0..6,
        )
        .prop_map(Cap::cnode)
    })
}

/// Any cap that may cross the wire.
fn arb_wire_cap() -> impl Strategy<Value = WireCap> {
    prop_oneof![
        pvec(any::<u8>(), 0..200).prop_map(WireCap::Data),
        pvec(
            prop_oneof![
                Just(WireSlot::Empty),
                any::<[u8; 32]>().prop_map(WireSlot::Hash),
            ],
            0..40,
        )
        .prop_map(WireCap::CNode),
    ]
}

/// The same content with every `Ref` replaced by `Hash` (one level) and
/// `Paged` data made `Inline`.
fn shallow(cap: &Cap) -> Cap {
    match cap {
        Cap::Data(d) => Cap::Data(DataContent::Inline(d.to_vec())),
        Cap::CNode { slots } => Cap::cnode(
            slots
                .iter()
                .map(|s| match s.hash() {
                    None => Slot::Empty,
                    Some(h) => Slot::Hash(h),
                })
                .collect::<Vec<_>>(),
        ),
    }
}

fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::new();
    v.extend_from_slice(bytes);
    v
}

proptest! {
    #[test]
    fn prop_inline_paged_equivalence(bytes in arb_bytes()) {
        let inline = Cap::inline(bytes.clone());
        let paged = Cap::paged(&bytes);
        prop_assert_eq!(inline.hash(), paged.hash());
        prop_assert_eq!(inline.hash(), hash_data(&bytes));
        let pages = Pages::from_bytes(&bytes);
        prop_assert_eq!(crate::hash_data_chunks(pages.chunks()), hash_data(&bytes));
        prop_assert_eq!(pages.to_vec(), bytes);
    }

    #[test]
    fn prop_chunking_is_irrelevant(bytes in arb_bytes(), cuts in pvec(any::<prop::sample::Index>(), 0..8)) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&bytes[start..p]);
            start = p;
        }
        chunks.push(&bytes[start..]);
        prop_assert_eq!(crate::hash_data_chunks(chunks), hash_data(&bytes));
    }

    #[test]
    fn prop_ref_hash_equivalence(cap in arb_cap()) {
        prop_assert_eq!(shallow(&cap).hash(), cap.hash());
        if let Cap::CNode { slots } = &cap {
            prop_assert_eq!(hash_cnode(slots.iter().map(Slot::hash)), cap.hash());
        }
    }

    #[test]
    fn prop_wire_round_trip(cap in arb_cap()) {
        let sendable = shallow(&cap);
        let wire = WireCap::try_from(&sendable).expect("shallow caps are sendable");
        prop_assert_eq!(wire.hash(), cap.hash());
        let bytes = wire::encode(&wire).expect("within limits");
        let archived = wire::access(&bytes).expect("own encoding is valid");
        prop_assert_eq!(archived.hash(), cap.hash());
        prop_assert_eq!(WireCap::from_archived(archived), wire.clone());
        prop_assert_eq!(wire::decode(&bytes).expect("valid"), sendable);
        prop_assert_eq!(archived.to_cap().hash(), cap.hash());
    }

    #[test]
    fn prop_wire_rejects_host_only_forms(cap in arb_cap()) {
        let expected = match &cap {
            Cap::Data(DataContent::Paged(_)) => Some(WireError::PagedData),
            Cap::Data(DataContent::Inline(_)) => None,
            Cap::CNode { slots } => slots
                .iter()
                .position(|s| matches!(s, Slot::Ref(_)))
                .map(|index| WireError::RefSlot { index }),
        };
        prop_assert_eq!(WireCap::try_from(&cap).err(), expected);
    }

    #[test]
    fn prop_distinct_wire_caps_hash_differently(a in arb_wire_cap(), b in arb_wire_cap()) {
        prop_assume!(a != b);
        prop_assert_ne!(a.hash(), b.hash());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Untrusted bytes never make `access` panic, aligned or not.
    #[test]
    fn prop_access_random_bytes_never_panics(bytes in pvec(any::<u8>(), 0..256), skip in 0usize..8) {
        let buf = aligned(&bytes);
        if let Ok(archived) = wire::access(&buf) {
            prop_assert!(archived.check_limits().is_ok());
            let _ = archived.hash();
            let _ = archived.to_cap();
        }
        let skip = skip.min(buf.len());
        let _ = wire::access(&buf[skip..]);
        let _ = wire::decode(&bytes);
    }

    /// Mutated valid encodings never make `access` panic, and whatever is
    /// accepted hashes consistently with its owned copy.
    #[test]
    fn prop_access_mutated_encoding_never_panics(
        cap in arb_wire_cap(),
        flips in pvec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<prop::sample::Index>(),
    ) {
        let good = wire::encode(&cap).expect("within limits");
        let mut bad = aligned(&good);
        for (i, x) in &flips {
            let i = i.index(bad.len());
            bad[i] ^= x | 1;
        }
        if let Ok(archived) = wire::access(&bad) {
            prop_assert_eq!(archived.hash(), WireCap::from_archived(archived).hash());
        }
        let cut = truncate.index(good.len());
        let _ = wire::access(&aligned(&good[..cut]));
    }
}
