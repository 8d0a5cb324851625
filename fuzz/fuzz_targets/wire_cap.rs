//! A cap in wire form as the host receives it from a guest (`GET_CAP`
//! answers): `wire::access` (validated, zero-copy) and `wire::decode` on
//! 16-aligned input, as the host copies it; plus the same bytes at a
//! misaligned start, which must be refused or read safely. For any accepted
//! archive, the in-place hash must equal the hash of the decoded cap, the
//! limits must hold, and the cap must re-encode to an archive with the same
//! hash.
#![no_main]

use javm_cap::wire::{self, AlignedVec, WireCap};
use javm_cap::{MAX_DATA_LEN, MAX_SLOTS};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let accessed = wire::access(bytes);
    let decoded = wire::decode(bytes);
    assert_eq!(accessed.is_ok(), decoded.is_ok());
    match (accessed, decoded) {
        (Ok(archived), Ok(cap)) => {
            let hash = archived.hash();
            assert_eq!(hash, cap.hash(), "in-place hash differs from decoded cap");
            assert!(archived.check_limits().is_ok());
            if let Some(d) = archived.data() {
                assert!(d.len() <= MAX_DATA_LEN);
            }
            if let Some(s) = archived.slots() {
                assert!(s.len() <= MAX_SLOTS);
            }
            let owned = WireCap::from_archived(archived);
            assert_eq!(owned.hash(), hash);
            let again = wire::encode(&owned).expect("accepted cap re-encodes");
            let back = wire::access(&again).expect("re-encoded cap is accepted");
            assert_eq!(back.hash(), hash);
            assert_eq!(
                &wire::encode_cap(&cap).expect("decoded cap re-encodes")[..],
                &again[..]
            );
        }
        (Err(a), Err(d)) => assert_eq!(a, d),
        _ => unreachable!(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut aligned = AlignedVec::<16>::with_capacity(data.len());
    aligned.extend_from_slice(data);
    check(&aligned);

    let shift = 1 + data.len() % 15;
    let mut shifted = AlignedVec::<16>::with_capacity(data.len() + 16);
    shifted.resize(shift, 0);
    shifted.extend_from_slice(data);
    check(&shifted[shift..]);
});
