//! The park watch (docs/resident.md, *The park deadline*): a guest the
//! vCPU thread runs with no call open must park within [`park_limit`] of
//! the thread's CPU time, or it is stopped and the sandbox fails.

use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::{Duration, Instant},
};

use super::shared::Shared;
use crate::{
    error::{HyperlightError, Violation},
    watchdog::{self, Watched},
};

/// How often the park watch looks at a guest the vCPU thread runs.
pub(super) const WATCH_PERIOD: Duration = Duration::from_millis(10);

/// The vCPU-thread CPU time a guest may run with no call open before it is
/// stopped and the sandbox poisoned: its spin window four times over (its
/// polls may run slower than the host's calibration) plus 20 ms (a few
/// exits and scheduler noise). An honest guest parks after one window.
pub(crate) fn park_limit(spin: Duration) -> Duration {
    spin.saturating_mul(4)
        .saturating_add(Duration::from_millis(20))
}

/// The park watch: what the last check saw.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// A check is scheduled with the watchdog.
    pub(super) armed: bool,
    /// [`Shared::call`] at the last check.
    pub(super) call: u64,
    /// The vCPU thread's CPU time at the last check.
    pub(super) cpu: Duration,
    /// The CPU time at which the guest was first seen running with no call
    /// open and no call since.
    pub(super) idle_from: Option<Duration>,
}

impl Shared {
    /// Schedules the park watch unless it is scheduled already.
    pub(super) fn watch_start(self: &Arc<Self>) {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if watch.armed {
            return;
        }
        let weak: Weak<dyn Watched> = Arc::downgrade(self) as Weak<dyn Watched>;
        if watchdog::watch(Instant::now() + WATCH_PERIOD, weak).is_ok() {
            watch.armed = true;
            self.watch_reset(&mut watch);
        }
        // Without a watchdog thread (the process is out of threads) the
        // next call's deadline cannot be armed either and fails loudly.
    }
}

impl Shared {
    /// Starts a park watch afresh: nothing seen yet.
    pub(super) fn watch_reset(&self, watch: &mut Watch) {
        watch.idle_from = None;
        watch.call = self.call.load(Ordering::SeqCst);
        watch.cpu = self
            .cpu_clock
            .get()
            .and_then(|c| thread_cpu(*c))
            .unwrap_or_default();
    }
}

/// The CPU time of the thread whose CPU clock is `clock`.
pub(super) fn thread_cpu(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; the clock id of a thread that
    // has ended is an error return, not undefined behaviour.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// The current thread's CPU clock.
pub(super) fn own_cpu_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self is the live current thread and `clock` a valid
    // out pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    (rc == 0).then_some(clock)
}

impl Watched for Shared {
    /// The park watch: a guest the vCPU thread runs while no call is open
    /// (and none was since the last look) must park within
    /// [`park_limit`] of CPU time, or it is stopped for good and the
    /// sandbox fails with a protocol violation.
    fn check(&self, now: Instant) -> Option<Instant> {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if !self.driving.load(Ordering::SeqCst) || self.stopped.load(Ordering::SeqCst) {
            watch.armed = false;
            return None;
        }
        let call = self.call.load(Ordering::SeqCst);
        let cpu = thread_cpu(*self.cpu_clock.get()?)?;
        if call & 1 == 0 && call == watch.call {
            let last = watch.cpu;
            let from = *watch.idle_from.get_or_insert(last);
            let ran = cpu.saturating_sub(from);
            if ran > self.park_limit {
                watch.armed = false;
                drop(watch);
                self.fail(HyperlightError::ProtocolViolation(Violation::NeverParked {
                    ran,
                    limit: self.park_limit,
                }));
                self.interrupt.shutdown();
                return None;
            }
        } else {
            watch.idle_from = None;
        }
        watch.call = call;
        watch.cpu = cpu;
        Some(now + WATCH_PERIOD)
    }
}
