//! Stopping a running vCPU from another thread.
//!
//! # Protocol
//!
//! Each [`crate::Vm`] owns one [`VcpuInterrupt`], shared (through an `Arc`)
//! with any number of interrupt handles and the deadline watchdog. Its
//! state — whether a call is running, the call's generation number, the
//! thread running it and a pending cancel — sits behind one mutex:
//!
//! 1. `begin_call` (vCPU thread) bumps the generation, records the thread and
//!    marks the call running. `immediate_exit` is 0 at this point.
//! 2. `kill` / `kill_generation` (any thread), under the lock: if a call is
//!    running (of the given generation), record the cancel, set
//!    `kvm_run.immediate_exit = 1`, and send a real-time signal (no-op
//!    handler) to the vCPU thread.
//! 3. The vCPU thread checks the cancel flag before every `KVM_RUN` and after
//!    every `EINTR`. A kill that lands before the ioctl is caught by the flag
//!    or by `immediate_exit` (KVM returns at once); one that lands inside it
//!    is caught by the signal. So a kill is never lost for its call.
//! 4. `end_call` (vCPU thread), under the lock: clear running, the cancel and
//!    `immediate_exit`. A kill that takes the lock afterwards sees nothing
//!    running and does nothing, so it can never cancel a later call. A
//!    signal still in flight at that point only makes a later `KVM_RUN`
//!    return `EINTR` with no cancel pending, which the run loop retries.
//! 5. Dropping the `Vm` marks the state dropped under the lock, so no handle
//!    ever writes to a `kvm_run` page that no longer exists.

use std::sync::{
    Mutex, MutexGuard, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use kvm_bindings::kvm_run;

/// Why a call was canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `kill()` from an interrupt handle.
    Killed,
    /// The per-call deadline passed.
    DeadlineExceeded,
}

#[derive(Debug)]
struct State {
    running: bool,
    generation: u64,
    cancel: Option<CancelReason>,
    thread: libc::pthread_t,
    kvm_run: *mut kvm_run,
    dropped: bool,
}

/// The interrupt state of one vCPU. See the module docs for the protocol.
#[derive(Debug)]
pub struct VcpuInterrupt {
    state: Mutex<State>,
    /// Mirror of `state.cancel.is_some()` for the lock-free check before
    /// each `KVM_RUN`.
    cancel_pending: AtomicBool,
}

// SAFETY: the raw `kvm_run` pointer is only dereferenced under the mutex and
// only while `dropped` is false, i.e. while the owning `VcpuFd` (and so the
// mapping) is alive; `pthread_t` is a plain integer id on Linux.
unsafe impl Send for VcpuInterrupt {}
// SAFETY: all shared state is behind the mutex or atomic (see above).
unsafe impl Sync for VcpuInterrupt {}

/// The real-time signal used to kick a vCPU thread out of `KVM_RUN`.
pub fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs the no-op handler for [`interrupt_signal`] once per process.
pub fn install_signal_handler() -> Result<(), std::io::Error> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: zeroed `sigaction` is a valid starting value; we set a
        // handler that does nothing (async-signal-safe) and an empty mask.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = noop_handler as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(interrupt_signal(), &act, std::ptr::null_mut())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    (*result).map_err(std::io::Error::from_raw_os_error)
}

impl Default for VcpuInterrupt {
    fn default() -> Self {
        Self::new()
    }
}

impl VcpuInterrupt {
    /// New state for a vCPU that does not exist yet: handles can be given
    /// out before the VM is created (a kill then does nothing, as no call
    /// runs); [`crate::Vm::with_interrupt`] attaches it to its vCPU.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                running: false,
                generation: 0,
                cancel: None,
                thread: 0,
                kvm_run: std::ptr::null_mut(),
                dropped: false,
            }),
            cancel_pending: AtomicBool::new(false),
        }
    }

    /// Attaches the state to the vCPU whose `kvm_run` page is at `kvm_run`.
    pub(crate) fn attach(&self, kvm_run: *mut kvm_run) {
        self.lock().kvm_run = kvm_run;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is plain
        // data and stays consistent, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a call as running on the current thread; returns its
    /// generation.
    pub(crate) fn begin_call(&self) -> u64 {
        let mut s = self.lock();
        s.generation += 1;
        s.running = true;
        s.cancel = None;
        // SAFETY: pthread_self has no preconditions.
        s.thread = unsafe { libc::pthread_self() };
        s.generation
    }

    /// Ends the running call; returns the cancel that hit it, if any.
    pub(crate) fn end_call(&self) -> Option<CancelReason> {
        let mut s = self.lock();
        s.running = false;
        let cancel = s.cancel.take();
        self.cancel_pending.store(false, Ordering::SeqCst);
        if !s.dropped && !s.kvm_run.is_null() {
            // SAFETY: attached and not dropped, so the kvm_run mapping is
            // alive; we hold the lock, so no other writer races this field.
            unsafe { std::ptr::addr_of_mut!((*s.kvm_run).immediate_exit).write_volatile(0) };
        }
        cancel
    }

    /// The cancel pending for the running call, if any (cheap).
    pub(crate) fn pending(&self) -> Option<CancelReason> {
        if !self.cancel_pending.load(Ordering::SeqCst) {
            return None;
        }
        self.lock().cancel
    }

    /// Marks the vCPU gone (its VM dropped, or never created because the
    /// sandbox holding this state was dropped first); later kills do
    /// nothing.
    pub fn mark_dropped(&self) {
        let mut s = self.lock();
        s.dropped = true;
        s.running = false;
    }

    /// Whether the VM this belongs to has been dropped.
    pub fn dropped(&self) -> bool {
        self.lock().dropped
    }

    /// Cancels the call running now. Returns whether one was running.
    pub fn kill(&self) -> bool {
        self.cancel_locked(None, CancelReason::Killed)
    }

    /// Cancels call `generation` if it is still the one running.
    pub fn kill_generation(&self, generation: u64, reason: CancelReason) -> bool {
        self.cancel_locked(Some(generation), reason)
    }

    fn cancel_locked(&self, generation: Option<u64>, reason: CancelReason) -> bool {
        let mut s = self.lock();
        if !s.running
            || s.dropped
            || s.kvm_run.is_null()
            || generation.is_some_and(|g| g != s.generation)
        {
            return false;
        }
        if s.cancel.is_none() {
            s.cancel = Some(reason);
        }
        self.cancel_pending.store(true, Ordering::SeqCst);
        // SAFETY: attached and not dropped (checked under the lock), so the
        // kvm_run page is mapped; immediate_exit is a plain u8 KVM reads on entry.
        unsafe { std::ptr::addr_of_mut!((*s.kvm_run).immediate_exit).write_volatile(1) };
        // SAFETY: `thread` is the live thread inside `begin_call`..`end_call`
        // (end_call needs this lock, so it has not returned); the signal has
        // a no-op handler installed before any VM exists.
        unsafe { libc::pthread_kill(s.thread, interrupt_signal()) };
        true
    }
}
