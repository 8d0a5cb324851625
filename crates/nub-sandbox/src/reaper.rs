//! The reaper: one process-wide thread (`nub-reaper`) that does the VM
//! work a dropping sandbox must not wait for. Destroying a VM (closing its
//! vCPU and VM fds, which tears down KVM's structures, and unmapping its
//! memory) costs about as much as creating one; resetting a pooled VM costs
//! tens of microseconds. Both happen here, off the caller's path; the work
//! itself (which VM, in what order) is the pool's ([`crate::pool`]).
//!
//! The thread starts with the first VM handed to it. If it cannot be
//! started (the process is out of threads), the work is done on the
//! caller's thread instead — slower, never lost — and the next hand-over
//! tries to start it again.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

/// Whether the thread runs (it never stops once started).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Whether the reaper thread runs.
pub(crate) fn is_running() -> bool {
    RUNNING.load(Ordering::Acquire)
}

/// Starts the reaper thread unless it runs; returns whether it runs.
pub(crate) fn ensure_running() -> bool {
    if is_running() {
        return true;
    }
    static STARTING: Mutex<()> = Mutex::new(());
    let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if is_running() {
        return true;
    }
    let spawned = std::thread::Builder::new()
        .name("nub-reaper".into())
        .spawn(|| {
            loop {
                // A panic in one unit of work (none is expected) must not
                // end the thread the pool relies on.
                let _ = std::panic::catch_unwind(crate::pool::reap);
            }
        });
    if spawned.is_ok() {
        RUNNING.store(true, Ordering::Release);
    }
    spawned.is_ok()
}
