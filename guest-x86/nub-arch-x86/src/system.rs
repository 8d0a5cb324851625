//! System functions: the reserved fn ids every guest serves. What each
//! takes and answers is the ABI's, in `nub_host_common::system`; this
//! module only serves them.

use javm_cap::CapHash;
use nub_host_common::{boot::BootInfo, rpc};

use crate::{
    dispatch::{GuestError, Output, SystemFunctions},
    state_cache::DIRECTORY,
};

pub use nub_host_common::system::{GET_CAP_ABSENT, GET_CAP_FOUND, HeapStats};

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
            rpc::FN_ID_NUB_HEAP_STATS => out.write(&(self.heap_stats)().to_bytes()),
            rpc::FN_ID_NUB_PUT_CAP => {
                let hash = DIRECTORY.lock().put(input).unwrap_or(CapHash::SENTINEL);
                out.write(hash.as_bytes())
            }
            rpc::FN_ID_NUB_GET_CAP => get_cap(input, out),
            rpc::FN_ID_NUB_DIRECTORY_STATS => {
                let stats = DIRECTORY.lock().stats();
                out.write(&stats.to_bytes())
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
