//! [`BootInfo`]: what the host tells the guest at entry.
//!
//! The host writes one `BootInfo` at [`crate::layout::BOOT_INFO_GPA`] (a
//! read-only page for the guest) and enters the guest with its address in
//! RDI. The guest keeps a copy, fills in [`BootInfo::directory_va`] once its
//! capability directory exists, and returns that copy from the
//! `FN_ID_NUB_GET_BOOT_INFO` system function.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::{MemoryLayout, REPORT_PAGE_GPA};

/// `b"NUBBOOT\0"` as a little-endian u64.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"NUBBOOT\0");

/// The boot block. All addresses are guest addresses (identity mapped).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`].
    pub abi_version: u32,
    /// Flags: [`crate::resident::BOOT_FLAG_RESIDENT`]; other bits zero.
    pub flags: u32,
    /// Total guest memory in bytes.
    pub memory_size: u64,
    /// Input ring (host to guest): start address.
    pub input_ring_va: u64,
    /// Input ring size in bytes, header included.
    pub input_ring_size: u64,
    /// Output ring (guest to host): start address.
    pub output_ring_va: u64,
    /// Output ring size in bytes, header included.
    pub output_ring_size: u64,
    /// Report page address (see [`crate::report`]).
    pub report_va: u64,
    /// Heap start.
    pub heap_va: u64,
    /// Heap size in bytes.
    pub heap_size: u64,
    /// One past the top of the main stack.
    pub stack_top: u64,
    /// Main stack size in bytes.
    pub stack_size: u64,
    /// One past the top of the exception stack (RSP0 / IST1).
    pub ist_stack_top: u64,
    /// Address of the capability directory header; 0 until the guest has
    /// built it (the host's copy in the boot page is always 0).
    pub directory_va: u64,
    /// The log buffer (see [`crate::log_buffer`]): start address.
    pub log_va: u64,
    /// The log buffer's size in bytes, header included.
    pub log_size: u64,
    /// The most verbose level the host collects: 0 off, 1 error … 5 trace
    /// ([`crate::log_buffer::LogLevel`]).
    pub log_level: u64,
    /// The resident-call control block (see [`crate::resident`]): its
    /// address (one page).
    pub control_va: u64,
}

// The layout is the ABI: no padding (IntoBytes refuses any), 144 bytes,
// and the fields at the offsets docs/abi.md gives.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<BootInfo>() == 144);
    assert!(offset_of!(BootInfo, abi_version) == 8);
    assert!(offset_of!(BootInfo, flags) == 12);
    assert!(offset_of!(BootInfo, memory_size) == 16);
    assert!(offset_of!(BootInfo, directory_va) == 104);
    assert!(offset_of!(BootInfo, log_level) == 128);
    assert!(offset_of!(BootInfo, control_va) == 136);
};

impl BootInfo {
    /// A BootInfo of this ABI (magic and version set) describing nothing
    /// yet: every address and size is zero. The nub_arch_x86 test harness
    /// fills in the few fields it serves.
    pub const fn new() -> Self {
        Self {
            magic: BOOT_MAGIC,
            abi_version: crate::ABI_VERSION,
            flags: 0,
            memory_size: 0,
            input_ring_va: 0,
            input_ring_size: 0,
            output_ring_va: 0,
            output_ring_size: 0,
            report_va: 0,
            heap_va: 0,
            heap_size: 0,
            stack_top: 0,
            stack_size: 0,
            ist_stack_top: 0,
            directory_va: 0,
            log_va: 0,
            log_size: 0,
            log_level: 0,
            control_va: 0,
        }
    }

    /// What the host tells a guest booted in `layout`: every region's
    /// address and size, the `flags` (`BOOT_FLAG_*`) and the guest's log
    /// level. `directory_va` is 0: the guest fills it in.
    pub const fn for_layout(layout: &MemoryLayout, flags: u32, log_level: u64) -> Self {
        Self {
            flags,
            memory_size: layout.memory_size,
            input_ring_va: layout.input_ring.start,
            input_ring_size: layout.input_ring.size,
            output_ring_va: layout.output_ring.start,
            output_ring_size: layout.output_ring.size,
            report_va: REPORT_PAGE_GPA,
            heap_va: layout.heap.start,
            heap_size: layout.heap.size,
            stack_top: layout.stack.end(),
            stack_size: layout.stack.size,
            ist_stack_top: layout.ist_stack.end(),
            log_va: layout.log_buffer.start,
            log_size: layout.log_buffer.size,
            log_level,
            control_va: layout.control.start,
            ..Self::new()
        }
    }

    /// Size of the encoded block.
    pub const SIZE: usize = core::mem::size_of::<BootInfo>();

    /// Its bytes: the `repr(C)` layout, little-endian (both sides are
    /// x86_64).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// Reads a BootInfo from the start of `bytes`; `None` if they are too
    /// short or the magic or ABI version is not this build's.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (info, _) = Self::read_from_prefix(bytes).ok()?;
        (info.magic == BOOT_MAGIC && info.abi_version == crate::ABI_VERSION).then_some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_matches_repr_c() {
        let info = BootInfo {
            magic: BOOT_MAGIC,
            abi_version: crate::ABI_VERSION,
            flags: 0,
            memory_size: 1,
            input_ring_va: 2,
            input_ring_size: 3,
            output_ring_va: 4,
            output_ring_size: 5,
            report_va: 6,
            heap_va: 7,
            heap_size: 8,
            stack_top: 9,
            stack_size: 10,
            ist_stack_top: 11,
            directory_va: 12,
            log_va: 13,
            log_size: 14,
            log_level: 15,
            control_va: 16,
        };
        let bytes = info.to_bytes();
        assert_eq!(BootInfo::from_bytes(&bytes), Some(info));
        // The byte encoding is exactly the repr(C) layout the guest reads.
        let ptr = core::ptr::from_ref(&info).cast::<u8>();
        // SAFETY: BootInfo is repr(C), plain integers, no padding (asserted
        // size), so all SIZE bytes are initialised and readable.
        let raw = unsafe { core::slice::from_raw_parts(ptr, BootInfo::SIZE) };
        assert_eq!(raw, &bytes[..]);
    }

    #[test]
    fn rejects_bad_magic_version_and_short_input() {
        let mut info = BootInfo {
            magic: BOOT_MAGIC,
            abi_version: crate::ABI_VERSION,
            ..Default::default()
        };
        assert!(BootInfo::from_bytes(&info.to_bytes()).is_some());
        assert!(BootInfo::from_bytes(&info.to_bytes()[..BootInfo::SIZE - 1]).is_none());
        info.abi_version += 1;
        assert!(BootInfo::from_bytes(&info.to_bytes()).is_none());
        info.abi_version -= 1;
        info.magic = 0;
        assert!(BootInfo::from_bytes(&info.to_bytes()).is_none());
    }
}
