//! `BootInfo::from_bytes` on any bytes (the host reads the guest's copy back
//! through `FN_ID_NUB_GET_BOOT_INFO`). It must accept exactly the inputs of
//! at least `SIZE` bytes with the right magic and ABI version, and what it
//! accepts must re-encode to the same leading `SIZE` bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_host_common::ABI_VERSION;
use nub_host_common::boot::{BOOT_MAGIC, BootInfo};
use nub_host_common::{read_u32, read_u64};

fuzz_target!(|data: &[u8]| {
    let parsed = BootInfo::from_bytes(data);
    let should = data.len() >= BootInfo::SIZE
        && read_u64(data, 0) == Some(BOOT_MAGIC)
        && read_u32(data, 8) == Some(ABI_VERSION);
    assert_eq!(parsed.is_some(), should);
    if let Some(info) = parsed {
        assert_eq!(&info.to_bytes()[..], &data[..BootInfo::SIZE]);
        assert_eq!(BootInfo::from_bytes(&info.to_bytes()), Some(info));
    }
});
