//! The host's lookup in the guest's capability directory, read straight
//! from guest memory. Input layout:
//!
//! ```text
//! 0..32   the hash to look up
//! 32      flags: bit 0 forces a valid magic/version, bit 1 points table_va
//!         just past the header (so mutations reach the probe loop faster)
//! 33..    guest memory at BASE; the directory header is at BASE
//! ```
//!
//! Whatever the memory holds, `probe` must not panic, must read at most
//! `1 + MAX_PROBE` times (header + slots), must only ask for header- or
//! slot-sized reads, and may answer `true` only if the last slot it read
//! really holds the hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_host_common::directory::{
    DIRECTORY_MAGIC, DIRECTORY_VERSION, HEADER_SIZE, MAX_PROBE, SLOT_SIZE, offsets, probe,
};
use nub_host_common::{write_u32, write_u64};

const BASE: u64 = 0x20_0000;

fuzz_target!(|data: &[u8]| {
    if data.len() < 33 {
        return;
    }
    let hash: [u8; 32] = data[..32].try_into().unwrap();
    let flags = data[32];
    let mut mem = data[33..].to_vec();
    if flags & 1 != 0 {
        write_u64(&mut mem, offsets::MAGIC, DIRECTORY_MAGIC);
        write_u32(&mut mem, offsets::VERSION, DIRECTORY_VERSION);
    }
    if flags & 2 != 0 {
        write_u64(&mut mem, offsets::TABLE_VA, BASE + HEADER_SIZE as u64);
    }

    let mut reads = 0usize;
    let mut last: Option<(u64, usize)> = None;
    let found = probe(
        &mut |addr, buf| {
            reads += 1;
            assert!(
                buf.len() == HEADER_SIZE || buf.len() == SLOT_SIZE,
                "odd read size {}",
                buf.len()
            );
            if reads == 1 {
                assert_eq!((addr, buf.len()), (BASE, HEADER_SIZE), "header read first");
            } else {
                assert_eq!(buf.len(), SLOT_SIZE);
            }
            last = Some((addr, buf.len()));
            let Some(off) = addr.checked_sub(BASE) else {
                return false;
            };
            let Ok(off) = usize::try_from(off) else {
                return false;
            };
            match off.checked_add(buf.len()).and_then(|end| mem.get(off..end)) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        },
        BASE,
        &hash,
    );
    assert!(
        reads <= 1 + MAX_PROBE as usize,
        "{reads} reads, more than 1 + MAX_PROBE"
    );
    if found {
        let (addr, len) = last.expect("found without reading");
        assert_eq!(len, SLOT_SIZE, "found on a header read");
        let off = (addr - BASE) as usize;
        assert_eq!(
            &mem[off..off + 32],
            &hash[..],
            "found a slot without the hash"
        );
        let cap_va = u64::from_le_bytes(
            mem[off + offsets::SLOT_CAP_VA..off + offsets::SLOT_CAP_VA + 8]
                .try_into()
                .unwrap(),
        );
        assert_ne!(cap_va, 0, "found an empty slot");
    }
});
