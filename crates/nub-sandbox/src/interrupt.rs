//! [`InterruptHandle`]: stop a running call from any thread.
//!
//! The protocol that makes `kill()` race-free lives in
//! `nub_hypervisor::interrupt`: a kill only ever cancels the call running
//! when it is issued, never a later one, and is never lost for that call.
//! [`InterruptHandle::kill_next`] is the explicit exception: it also
//! reaches the next call when none is running (docs/cancellation.md).

use std::sync::Arc;

use nub_hypervisor::{VcpuInterrupt, interrupt::KillOutcome};

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
    /// idle has no effect on later calls (see [`kill_next`](Self::kill_next)
    /// for one that does).
    pub fn kill(&self) -> bool {
        self.0.kill()
    }

    /// Cancels the call running now, or, if none is, the next call to
    /// begin on this sandbox: for a killer that may act just before the
    /// call it means to stop has started (no `while !handle.kill()` loop).
    ///
    /// - A call is running: it is canceled as by [`kill`](Self::kill)
    ///   ([`KillOutcome::Running`]).
    /// - None is: the kill is *armed* ([`KillOutcome::Armed`]). The next
    ///   call, batch or boot that begins consumes it: it fails with
    ///   [`HyperlightError::Canceled`](crate::HyperlightError::Canceled)
    ///   without running the guest, and poisons the sandbox (as every
    ///   kill does). That includes the system calls some methods make
    ///   ([`heap_stats`](crate::MultiUseSandbox::heap_stats),
    ///   [`boot_info`](crate::MultiUseSandbox::boot_info), a capture's
    ///   first one) and, from an
    ///   [`UninitializedSandbox`](crate::UninitializedSandbox)'s handle,
    ///   the boot in `evolve`. One armed kill stops one call: arming again
    ///   before a call begins changes nothing, and the call after the
    ///   consuming one is untouched (the sandbox is poisoned by then
    ///   anyway). [`disarm`](Self::disarm) withdraws it.
    /// - The sandbox was dropped: nothing happens ([`KillOutcome::Gone`]),
    ///   and nothing is kept for later.
    ///
    /// The same in both call modes: in resident mode the caller's thread
    /// takes the armed kill when its call begins, before it hands the call
    /// to the guest. A kill meant only for the call in flight (a timer of
    /// your own, say) should be [`kill`](Self::kill): an armed kill waits
    /// for a call however late it comes.
    ///
    /// ```
    /// use nub_sandbox::{HyperlightError, sandbox::KillOutcome};
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let handle = sbox.interrupt_handle();
    /// assert_eq!(handle.kill_next(), KillOutcome::Armed); // nothing runs yet
    /// let err = sbox.call_raw(9, b"").unwrap_err(); // fn 9 would spin forever
    /// assert!(matches!(err, HyperlightError::Canceled));
    /// assert!(sbox.is_poisoned());
    /// drop(sbox);
    /// assert_eq!(handle.kill_next(), KillOutcome::Gone);
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn kill_next(&self) -> KillOutcome {
        self.0.kill_next()
    }

    /// Withdraws a kill [`kill_next`](Self::kill_next) armed that no call
    /// has consumed yet; returns whether one was armed. A call that
    /// already began with it stays canceled.
    ///
    /// ```
    /// use nub_sandbox::sandbox::KillOutcome;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let handle = sbox.interrupt_handle();
    /// assert_eq!(handle.kill_next(), KillOutcome::Armed);
    /// assert!(handle.disarm());
    /// assert_eq!(sbox.call_raw(1, b"runs")?, b"runs"); // fn 1: echo
    /// assert!(!handle.disarm(), "nothing armed");
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn disarm(&self) -> bool {
        self.0.disarm()
    }

    /// Whether the sandbox has been dropped.
    pub fn dropped(&self) -> bool {
        self.0.dropped()
    }
}
