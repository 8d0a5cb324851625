//! System functions: the reserved fn ids every guest serves.

use nub_host_common::{boot::BootInfo, rpc};

use crate::dispatch::{GuestError, Output, SystemFunctions};

/// Heap figures reported by `FN_ID_NUB_HEAP_STATS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapStats {
    /// Heap size in bytes.
    pub size: u64,
    /// Bytes allocated.
    pub used: u64,
    /// Bytes free.
    pub free: u64,
}

impl HeapStats {
    /// Encodes as three u64 LE.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..16].copy_from_slice(&self.used.to_le_bytes());
        b[16..].copy_from_slice(&self.free.to_le_bytes());
        b
    }
}

/// The kernel's system functions.
#[derive(Debug)]
pub struct KernelSystem {
    /// The guest's copy of its boot info.
    pub boot_info: BootInfo,
    /// Reads the heap figures.
    pub heap_stats: fn() -> HeapStats,
}

impl SystemFunctions for KernelSystem {
    fn call(
        &mut self,
        fn_id: u32,
        _input: &[u8],
        out: &mut Output<'_>,
    ) -> Option<Result<(), GuestError>> {
        Some(match fn_id {
            rpc::FN_ID_NUB_GET_BOOT_INFO => out.write(&self.boot_info.to_bytes()),
            rpc::FN_ID_NUB_HEAP_STATS => out.write(&(self.heap_stats)().to_bytes()),
            _ => return None,
        })
    }
}
