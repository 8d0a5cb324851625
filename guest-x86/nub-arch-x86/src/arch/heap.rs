//! The guest heap: a linked-list allocator over the heap region the host
//! describes in BootInfo. An allocation that cannot be satisfied ends the
//! execution with an out-of-memory report (so `try_reserve`-style recovery is
//! not available inside guests).

use core::alloc::{GlobalAlloc, Layout};

use linked_list_allocator::LockedHeap;
use nub_host_common::{
    ports::ExitPort,
    report::{Report, ReportKind},
};

use crate::system::HeapStats;

struct GuestAllocator(LockedHeap);

// SAFETY: delegates to LockedHeap, a correct GlobalAlloc; the only addition
// is reporting (and never returning) when it yields null.
unsafe impl GlobalAlloc for GuestAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { self.0.alloc(layout) };
        if ptr.is_null() {
            out_of_memory(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: GuestAllocator = GuestAllocator(LockedHeap::empty());

fn out_of_memory(size: usize) -> ! {
    let report = Report {
        kind: Some(ReportKind::OutOfMemory),
        vector: 0,
        error_code: 0,
        rip: 0,
        cr2: 0,
        rsp: 0,
        code: size as u64,
        message: b"guest heap exhausted",
    };
    super::io::report_and_exit(&report, ExitPort::Abort, 0)
}

/// Hands the heap region to the allocator.
///
/// # Safety
///
/// `[start, start + size)` must be mapped read-write, used by nothing else,
/// and this must be called once, before the first allocation.
pub unsafe fn init(start: u64, size: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { HEAP.0.lock().init(start as *mut u8, size as usize) }
}

/// Current heap figures.
pub fn heap_stats() -> HeapStats {
    let heap = HEAP.0.lock();
    HeapStats {
        size: heap.size() as u64,
        used: heap.used() as u64,
        free: heap.free() as u64,
    }
}
