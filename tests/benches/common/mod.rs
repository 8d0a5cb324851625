//! What the criterion benches share: a short measurement (regressions show
//! in seconds, not minutes) and a thread that kills calls.

// Each bench uses only part of this module.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use nub_hypervisor::floor::Killer;
use nub_sandbox::{HyperlightError, MultiUseSandbox};
use nub_tests::fn_id;

/// Criterion with a short warm-up and measurement, as the benches want.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// How long the killer waits after a call begins before killing it: far
/// longer than entering the guest takes, so the kill lands while it spins.
pub const KILL_SETTLE: Duration = Duration::from_millis(1);

/// The time from a kill until the default guest's `spin` in `sandbox`
/// returned, killed from `killer`'s thread.
pub fn kill_latency(killer: &mut Killer, sandbox: &mut MultiUseSandbox) -> Duration {
    let handle = sandbox.interrupt_handle();
    let (result, latency) = killer
        .time_kill(Box::new(move || handle.kill()), || {
            sandbox.call_raw(fn_id::SPIN, b"")
        })
        .expect("the killer is running");
    assert!(
        matches!(result, Err(HyperlightError::Canceled)),
        "spin ends killed: {result:?}"
    );
    latency
}
