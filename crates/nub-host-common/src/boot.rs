//! [`BootInfo`]: what the host tells the guest at entry.
//!
//! The host writes one `BootInfo` at [`crate::layout::BOOT_INFO_GPA`] (a
//! read-only page for the guest) and enters the guest with its address in
//! RDI. The guest keeps a copy, fills in [`BootInfo::directory_va`] once its
//! capability directory exists, and returns that copy from the
//! `FN_ID_NUB_GET_BOOT_INFO` system function.

use crate::{read_u32, read_u64};

/// `b"NUBBOOT\0"` as a little-endian u64.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"NUBBOOT\0");

/// The boot block. All addresses are guest addresses (identity mapped).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

const _: () = assert!(core::mem::size_of::<BootInfo>() == 144);

impl BootInfo {
    /// Size of the encoded block.
    pub const SIZE: usize = core::mem::size_of::<BootInfo>();

    /// Encodes into little-endian bytes (the in-memory `repr(C)` layout on
    /// x86_64).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let words = [
            self.magic,
            u64::from(self.abi_version) | (u64::from(self.flags) << 32),
            self.memory_size,
            self.input_ring_va,
            self.input_ring_size,
            self.output_ring_va,
            self.output_ring_size,
            self.report_va,
            self.heap_va,
            self.heap_size,
            self.stack_top,
            self.stack_size,
            self.ist_stack_top,
            self.directory_va,
            self.log_va,
            self.log_size,
            self.log_level,
            self.control_va,
        ];
        for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Decodes from bytes; `None` if too short or the magic or ABI version
    /// does not match. The fields are not otherwise trusted.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let w = |i: usize| read_u64(bytes, i * 8);
        let info = Self {
            magic: w(0)?,
            abi_version: read_u32(bytes, 8)?,
            flags: read_u32(bytes, 12)?,
            memory_size: w(2)?,
            input_ring_va: w(3)?,
            input_ring_size: w(4)?,
            output_ring_va: w(5)?,
            output_ring_size: w(6)?,
            report_va: w(7)?,
            heap_va: w(8)?,
            heap_size: w(9)?,
            stack_top: w(10)?,
            stack_size: w(11)?,
            ist_stack_top: w(12)?,
            directory_va: w(13)?,
            log_va: w(14)?,
            log_size: w(15)?,
            log_level: w(16)?,
            control_va: w(17)?,
        };
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
