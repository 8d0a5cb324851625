//! What the criterion benches share: a short measurement (regressions show
//! in seconds, not minutes) and a thread that kills calls.

// Each bench uses only part of this module.
#![allow(dead_code)]

use std::{
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use criterion::Criterion;
use nub_sandbox::{HyperlightError, MultiUseSandbox, interrupt::InterruptHandle};
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

/// Kills the call running in a sandbox from its own thread,
/// [`KILL_SETTLE`] after being told it begins; reports when it killed.
pub struct Killer {
    begun: Option<SyncSender<Arc<dyn InterruptHandle>>>,
    kills: Receiver<Instant>,
    thread: Option<JoinHandle<()>>,
}

impl Killer {
    /// Starts the killer thread.
    pub fn new() -> Self {
        let (begun, begun_rx) = sync_channel::<Arc<dyn InterruptHandle>>(0);
        let (kill_tx, kills) = sync_channel(1);
        let thread = std::thread::spawn(move || {
            while let Ok(handle) = begun_rx.recv() {
                std::thread::sleep(KILL_SETTLE);
                // A kill before the call began does nothing: retry until
                // one lands on the running call.
                let at = loop {
                    let at = Instant::now();
                    if handle.kill() {
                        break at;
                    }
                    std::thread::sleep(KILL_SETTLE);
                };
                if kill_tx.send(at).is_err() {
                    return;
                }
            }
        });
        Self {
            begun: Some(begun),
            kills,
            thread: Some(thread),
        }
    }

    /// Runs the default guest's `spin` in `sandbox`, killed from the
    /// killer thread; the time from the kill until `call_raw` returned.
    pub fn kill_latency(&mut self, sandbox: &mut MultiUseSandbox) -> Duration {
        self.begun
            .as_ref()
            .expect("the killer is running")
            .send(sandbox.interrupt_handle())
            .expect("the killer is running");
        let result = sandbox.call_raw(fn_id::SPIN, b"");
        let returned = Instant::now();
        let killed_at = self.kills.recv().expect("the killer reports each kill");
        assert!(
            matches!(result, Err(HyperlightError::Canceled)),
            "spin ends killed: {result:?}"
        );
        returned.saturating_duration_since(killed_at)
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.begun = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
