//! System functions: the reserved fn ids every guest serves.
//!
//! | id | input | output |
//! | --- | --- | --- |
//! | `FN_ID_NUB_PUT_CAP` | `WireCap` bytes | the 32-byte hash, or 32 × 0xFF on any failure |
//! | `FN_ID_NUB_GET_BOOT_INFO` | - | `BootInfo` bytes (with `directory_va`) |
//! | `FN_ID_NUB_GET_CAP` | 32-byte hash | `1` + `WireCap` bytes, or `0` if absent |
//! | `FN_ID_NUB_DIRECTORY_STATS` | - | count, bytes held, capacity (u64 LE each) |
//! | `FN_ID_NUB_HEAP_STATS` | - | heap size, used, free (u64 LE each) |

use javm_cap::CapHash;
use nub_host_common::{boot::BootInfo, rpc};

use crate::{
    dispatch::{GuestError, Output, SystemFunctions},
    state_cache::DIRECTORY,
};

/// `FN_ID_NUB_GET_CAP` tag: the cap follows.
pub const GET_CAP_FOUND: u8 = 1;
/// `FN_ID_NUB_GET_CAP` tag: no cap under that hash.
pub const GET_CAP_ABSENT: u8 = 0;

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
        input: &[u8],
        out: &mut Output<'_>,
    ) -> Option<Result<(), GuestError>> {
        Some(match fn_id {
            rpc::FN_ID_NUB_GET_BOOT_INFO => out.write(&self.boot_info.to_bytes()),
            rpc::FN_ID_NUB_HEAP_STATS => {
                let h = (self.heap_stats)();
                out.write(&nub_host_common::encode_u64s(&[h.size, h.used, h.free]))
            }
            rpc::FN_ID_NUB_PUT_CAP => {
                let hash = DIRECTORY.lock().put(input).unwrap_or(CapHash::SENTINEL);
                out.write(hash.as_bytes())
            }
            rpc::FN_ID_NUB_GET_CAP => get_cap(input, out),
            rpc::FN_ID_NUB_DIRECTORY_STATS => {
                let st = DIRECTORY.lock().stats();
                out.write(&nub_host_common::encode_u64s(&[
                    st.count,
                    st.bytes_held,
                    st.capacity,
                ]))
            }
            _ => return None,
        })
    }
}

fn get_cap(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let hash: [u8; 32] = input
        .try_into()
        .map_err(|_| GuestError::new("expected a 32-byte hash"))?;
    let dir = DIRECTORY.lock();
    match dir.get_bytes(&CapHash::from_bytes(hash)) {
        Some(bytes) => {
            out.write(&[GET_CAP_FOUND])?;
            out.write(bytes)
        }
        None => out.write(&[GET_CAP_ABSENT]),
    }
}
