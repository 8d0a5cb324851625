//! [`InterruptHandle`]: stop a running call from any thread.
//!
//! The protocol that makes `kill()` race-free lives in
//! `nub_hypervisor::interrupt`: a kill only ever cancels the call running
//! when it is issued, never a later one, and is never lost for that call.

use std::sync::Arc;

use nub_hypervisor::VcpuInterrupt;

/// A handle that can stop the sandbox's running call. `Send + Sync`,
/// cheap to clone; it outlives the sandbox harmlessly.
#[derive(Debug, Clone)]
pub struct InterruptHandle(Arc<VcpuInterrupt>);

impl InterruptHandle {
    /// The handle of the vCPU `interrupt` belongs to.
    pub(crate) fn new(interrupt: Arc<VcpuInterrupt>) -> Self {
        Self(interrupt)
    }

    /// Cancels the call running now; it returns
    /// [`HyperlightError::Canceled`](crate::HyperlightError::Canceled) and
    /// poisons the sandbox. Returns whether a call was running. A kill while
    /// idle has no effect on later calls.
    pub fn kill(&self) -> bool {
        self.0.kill()
    }

    /// Whether the sandbox has been dropped.
    pub fn dropped(&self) -> bool {
        self.0.dropped()
    }
}
