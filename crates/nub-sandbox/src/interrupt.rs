//! [`InterruptHandle`]: stop a running call from any thread.
//!
//! The protocol that makes `kill()` race-free lives in
//! `nub_hypervisor::interrupt`: a kill only ever cancels the call running
//! when it is issued, never a later one, and is never lost for that call.

use std::sync::Arc;

use nub_hypervisor::VcpuInterrupt;

/// A handle that can stop the sandbox's running call. `Send + Sync`; clone
/// the `Arc` freely.
pub trait InterruptHandle: Send + Sync + std::fmt::Debug {
    /// Cancels the call running now; it returns
    /// [`HyperlightError::Canceled`](crate::HyperlightError::Canceled) and
    /// poisons the sandbox. Returns whether a call was running. A kill while
    /// idle has no effect on later calls.
    fn kill(&self) -> bool;

    /// Whether the sandbox has been dropped.
    fn dropped(&self) -> bool;
}

/// The KVM-backed handle.
#[derive(Debug)]
pub(crate) struct VcpuInterruptHandle(pub(crate) Arc<VcpuInterrupt>);

impl InterruptHandle for VcpuInterruptHandle {
    fn kill(&self) -> bool {
        self.0.kill()
    }

    fn dropped(&self) -> bool {
        self.0.dropped()
    }
}
