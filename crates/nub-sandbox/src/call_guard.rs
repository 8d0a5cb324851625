//! One call of a vCPU, in either mode: the call guard that lets kills and
//! the deadline cancel it while it runs, the guest's logs drained after
//! it, and a cancel turned into the call's typed error.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use nub_hypervisor::{CallGuard, HypervisorError, VcpuInterrupt, interrupt::CancelReason};

use crate::{
    error::{HyperlightError, Result},
    guest_side::MemorySide,
    watchdog,
};

/// The error a canceled run returns: a timeout when its deadline (`limit`)
/// fired, otherwise a kill.
fn cancel_error(reason: CancelReason, limit: Option<Duration>) -> HyperlightError {
    match (reason, limit) {
        (CancelReason::DeadlineExceeded, Some(limit)) => HyperlightError::ExecutionTimeout(limit),
        _ => HyperlightError::Canceled,
    }
}

/// Records a guest can write before the failure are the most useful ones:
/// drain them whatever happened. A broken log buffer fails a run that
/// otherwise succeeded; it never hides the error of one that failed.
fn with_logs(side: &MemorySide, result: Result<()>) -> Result<()> {
    let logs = side.drain_log();
    match (result, logs) {
        (Ok(()), Err(e)) => Err(e),
        (result, _) => result,
    }
}

/// Runs `run` as one call of the vCPU `interrupt` belongs to, in either
/// mode: kills and `limit`'s deadline cancel it while it runs, the guest's
/// logs are drained after it, and a cancel becomes the call's error.
pub(crate) fn guarded(
    interrupt: &Arc<VcpuInterrupt>,
    side: &MemorySide,
    limit: Option<Duration>,
    run: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let (call, generation) = CallGuard::begin(interrupt);
    // Begun canceled (an armed kill, or a kill that landed just now): the
    // guest never sees the call. `pending` answers `Shutdown` first, so a
    // vCPU thread that stopped the guest still reports its own failure.
    if interrupt.pending() == Some(CancelReason::Killed) {
        let _cancel = call.finish();
        return map_cancel(
            Err(HypervisorError::Canceled(CancelReason::Killed).into()),
            limit,
        );
    }
    // No watchdog, no run: a deadline that nothing enforces would let a
    // spinning guest hang the caller. The guard ends the call on return.
    let _deadline = arm_deadline(interrupt, generation, limit)?;
    let result = run();
    // A cancel that lands after the guest already finished (or failed for
    // its own reason) does not change the outcome.
    let _late_cancel = call.finish();
    map_cancel(with_logs(side, result), limit)
}

/// Arms the deadline of call `generation`, if there is a limit that fits an
/// `Instant`.
fn arm_deadline(
    interrupt: &Arc<VcpuInterrupt>,
    generation: u64,
    limit: Option<Duration>,
) -> Result<Option<watchdog::Deadline>> {
    limit
        .and_then(|limit| Instant::now().checked_add(limit))
        .map(|deadline| watchdog::arm(deadline, interrupt, generation))
        .transpose()
        .map_err(HyperlightError::WatchdogUnavailable)
}

/// A canceled run's error: a timeout when its deadline fired, else a kill.
fn map_cancel(result: Result<()>, limit: Option<Duration>) -> Result<()> {
    match result {
        Err(HyperlightError::Kvm(HypervisorError::Canceled(reason))) => {
            Err(cancel_error(reason, limit))
        }
        result => result,
    }
}
