//! The reaper: one process-wide thread (`nub-reaper`) that does the VM
//! work a dropping sandbox must not wait for. Destroying a VM (closing its
//! vCPU and VM fds, which tears down KVM's structures, and unmapping its
//! memory) costs about as much as creating one; resetting a pooled VM costs
//! tens of microseconds. Both happen here, off the caller's path; the work
//! itself (which VM, in what order) is the pool's ([`crate::pool`]), which
//! hands this module the function that does one unit of it: the reaper
//! knows nothing of VMs.
//!
//! The thread starts with the first VM handed to it. If it cannot be
//! started (the process is out of threads), the work is done on the
//! caller's thread instead — slower, never lost — and the next hand-over
//! tries to start it again.
//!
//! It runs under `SCHED_BATCH`: the scheduler gives it its fair share but
//! never lets its wake-up preempt the thread that woke it. Without that, a
//! drop on a busy machine handed the CPU to the reaper and returned only
//! after the reset it triggered (measured: a 50 µs drop instead of 1 µs).
//! Work it has not got to is never waited for by a drop; a sandbox that
//! needs a VM still dirty resets it itself.

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

/// Starts the reaper thread unless it runs; returns whether it runs. The
/// thread calls `work` in a loop (it blocks until there is work to do);
/// only the first start's `work` is used.
pub(crate) fn ensure_running(work: fn()) -> bool {
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
        .spawn(move || {
            batch_scheduling();
            loop {
                // A panic in one unit of work (none is expected) must not
                // end the thread the pool relies on.
                let _ = std::panic::catch_unwind(work);
            }
        });
    if spawned.is_ok() {
        RUNNING.store(true, Ordering::Release);
    }
    spawned.is_ok()
}

/// Puts the calling thread under `SCHED_BATCH` (see the module docs). A
/// failure only costs latency, so it is ignored.
fn batch_scheduling() {
    // SAFETY: a zeroed sched_param is valid (priority 0, which SCHED_BATCH
    // requires); pid 0 names the calling thread.
    unsafe {
        let param: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}
