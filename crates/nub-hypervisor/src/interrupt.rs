//! Stopping a running vCPU from another thread: the interrupt state
//! ([`VcpuInterrupt`]), the signal handler and its run window, and the
//! [`CallGuard`] that marks the span of one call.
//!
//! # Protocol
//!
//! Each [`crate::Vm`] owns one [`VcpuInterrupt`], shared (through an `Arc`)
//! with any number of interrupt handles and the deadline watchdog. Its
//! state — whether a call is running, the call's generation number, the
//! thread running it and a pending cancel — sits behind one mutex. The
//! killer never touches the vCPU's `kvm_run` page: only the vCPU thread
//! does, as Firecracker does it.
//!
//! 1. `begin_call` (vCPU thread) bumps the generation, records the thread and
//!    marks the call running.
//! 2. `kill` / `kill_generation` (any thread), under the lock: if a call is
//!    running (of the given generation), record the cancel, raise the atomic
//!    "cancel pending" flag, and send [`interrupt_signal`] to the vCPU
//!    thread.
//! 3. Each `KVM_RUN` is bracketed by a *run window* (`RunWindow`): the
//!    vCPU thread stores its `kvm_run` pointer in a thread-local, then checks
//!    the pending flag, enters `KVM_RUN`, and clears the thread-local as soon
//!    as the ioctl returns. The signal handler runs on the vCPU thread; if
//!    the window is open it sets `kvm_run.immediate_exit = 1`. So a kill
//!    that lands before the check is seen by the check; one between the check
//!    and the ioctl makes KVM return `EINTR` at once (`immediate_exit`); one
//!    inside the ioctl makes it return `EINTR` (the signal). After the window
//!    closes the vCPU thread resets `immediate_exit` to 0 and checks the flag
//!    again before the next `KVM_RUN`. A kill is never lost for its call.
//! 4. `end_call` (vCPU thread), under the lock: clear running and the
//!    cancel. A kill that takes the lock afterwards sees nothing running and
//!    does nothing, so it can never cancel a later call. A signal still in
//!    flight at that point at most makes one later `KVM_RUN` return `EINTR`
//!    with no cancel pending, which the run loop retries.
//! 5. Dropping the `Vm` marks the state dropped under the lock; later kills
//!    do nothing.
//!
//! An *armed* kill ([`VcpuInterrupt::kill_next`]) is the one way a kill
//! reaches a call that has not begun: with no call running, `kill_next`
//! sets `armed` under the lock, and the next `begin_call` takes it (under
//! the same lock) and starts its call already canceled (the cancel
//! recorded, the pending flag raised), so the call's first run check
//! fails. It is consumed by that one call, withdrawn by
//! [`VcpuInterrupt::disarm`], and forgotten when the state is marked
//! dropped. With a call running, `kill_next` is `kill`. So `kill_next`
//! never reaches a call that begins after a call that began after it.
//!
//! A vCPU whose `KVM_RUN` moves between threads (a resident sandbox: its
//! own vCPU thread while the guest spins, the caller's thread for a call
//! the caller runs itself) is *driven*: whoever is about to run it holds a
//! [`Driver`] ([`VcpuInterrupt::drive`]), and kills and
//! [`VcpuInterrupt::shutdown`] signal that thread, or none while nobody
//! drives (the pending flag then stops the next driver's first run check).
//! The thread is recorded and cleared under the lock, and a signal is sent
//! under the same lock, so a signal only ever reaches a thread that is
//! inside its `Driver`'s scope: alive, and never one that was joined.
//!
//! The handler is installed with `SA_RESTART`, so a kill that arrives while
//! a host function runs on the vCPU thread does not fail that function's own
//! syscalls with `EINTR` (a `read`, a `nanosleep`… are restarted or
//! resumed). `KVM_RUN` is not restarted: KVM returns a plain `-EINTR` (not
//! `-ERESTARTSYS`) when it leaves the guest for a pending signal or for
//! `immediate_exit`, and the kernel only restarts `-ERESTART*` returns.

use std::{
    ptr::NonNull,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering},
    },
};

use kvm_bindings::kvm_run;

/// What [`VcpuInterrupt::kill_next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KillOutcome {
    /// A call was running: it is canceled, as by [`VcpuInterrupt::kill`].
    Running,
    /// No call was running: the next call to begin is canceled before it
    /// runs (one call; arming again while armed changes nothing).
    Armed,
    /// The vCPU is gone (its VM dropped, or the sandbox dropped before it
    /// had one): nothing is, or will be, canceled.
    Gone,
}

/// Why a call was canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// `kill()` from an interrupt handle.
    Killed,
    /// The per-call deadline passed.
    DeadlineExceeded,
    /// The vCPU's owner is shutting it down ([`VcpuInterrupt::shutdown`]):
    /// a resident vCPU thread leaves its run loop.
    Shutdown,
}

#[derive(Debug)]
struct State {
    running: bool,
    generation: u64,
    cancel: Option<CancelReason>,
    /// The thread running the call (exit mode: the one that began it).
    thread: libc::pthread_t,
    /// A vCPU runs with this state (set by [`crate::Vm::with_interrupt`]).
    attached: bool,
    dropped: bool,
    /// The vCPU is driven ([`VcpuInterrupt::drive`]): signals go to
    /// `driver`, never to the thread that began the call.
    driven: bool,
    /// The thread inside a [`Driver`] scope, if any.
    driver: Option<libc::pthread_t>,
    /// [`VcpuInterrupt::shutdown`] was called: every later run check fails.
    shutdown: bool,
    /// A kill waits for the next call ([`VcpuInterrupt::kill_next`]).
    armed: bool,
}

/// Called (with the interrupt lock held) after a cancel was recorded, so an
/// owner whose vCPU thread may be blocked outside `KVM_RUN` can wake it.
pub type Waker = Box<dyn Fn() + Send + Sync>;

/// The interrupt state of one vCPU. See the module docs for the protocol.
pub struct VcpuInterrupt {
    state: Mutex<State>,
    /// See [`VcpuInterrupt::set_waker`].
    waker: OnceLock<Waker>,
    /// Mirror of `state.cancel.is_some()` for the lock-free check before
    /// each `KVM_RUN`.
    cancel_pending: AtomicBool,
}

/// The real-time signal used to kick a vCPU thread out of `KVM_RUN`.
pub fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

thread_local! {
    /// The `kvm_run` page of the vCPU this thread is running, while a
    /// [`RunWindow`] is open; null otherwise. Const-initialised and without
    /// a destructor, so reading it from a signal handler never allocates,
    /// locks or panics.
    static RUN_WINDOW: AtomicPtr<kvm_run> = const { AtomicPtr::new(std::ptr::null_mut()) };
}

/// The `immediate_exit` byte of the `kvm_run` page at `run`, as an atomic.
///
/// # Safety
///
/// `run` must point to a live, mapped `kvm_run` page, and for as long as the
/// returned reference is used no Rust reference (`&`/`&mut kvm_run` or into
/// its `immediate_exit` field) may be live: every access to the byte then
/// goes through this atomic (or the kernel, which reads it with
/// `READ_ONCE`).
pub(crate) unsafe fn immediate_exit<'a>(run: NonNull<kvm_run>) -> &'a AtomicU8 {
    // SAFETY: the field is inside the live mapping (caller's contract), a u8
    // has the alignment of AtomicU8, and no non-atomic access overlaps ours
    // (caller's contract), which is what `AtomicU8::from_ptr` requires.
    unsafe { AtomicU8::from_ptr(std::ptr::addr_of_mut!((*run.as_ptr()).immediate_exit)) }
}

/// Runs on the vCPU thread (a signal is directed at it with
/// `pthread_kill`). Only touches a const thread-local and an atomic byte,
/// both async-signal-safe.
extern "C" fn interrupt_handler(_: libc::c_int) {
    // try_with cannot fail for a const thread-local without a destructor;
    // if it ever did, doing nothing is safe (the pending flag still stops
    // the next KVM_RUN, and a KVM_RUN in progress gets EINTR).
    let run = RUN_WINDOW
        .try_with(|w| w.load(Ordering::SeqCst))
        .unwrap_or(std::ptr::null_mut());
    if let Some(run) = NonNull::new(run) {
        // SAFETY: the pointer is non-null only while a RunWindow is open on
        // this thread (the handler runs on the thread it interrupts). The
        // window's contract keeps the page mapped and rules out any Rust
        // reference into it while open: the interrupted code is checking the
        // pending flag, inside KVM_RUN, or in RunWindow's atomic stores. So
        // this atomic store overlaps no non-atomic access.
        unsafe { immediate_exit(run) }.store(1, Ordering::SeqCst);
    }
}

/// Installs [`interrupt_signal`]'s handler once per process, with
/// `SA_RESTART` (see the module docs).
pub fn install_signal_handler() -> Result<(), std::io::Error> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: zeroed `sigaction` is a valid starting value; the handler
        // is async-signal-safe (a thread-local load and an atomic store);
        // the mask is emptied before use.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = interrupt_handler as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
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

/// One `KVM_RUN` on the current thread: while it lives, the interrupt
/// handler may set `immediate_exit` on `run`.
///
/// Between [`RunWindow::open`] and drop the vCPU thread creates no Rust
/// reference to the `kvm_run` page: it only checks the pending flag and
/// issues the ioctl. Drop closes the window (so the handler no longer
/// writes) and then resets `immediate_exit` to 0, in that order; only
/// afterwards may the caller read the exit out of the page.
pub(crate) struct RunWindow {
    run: NonNull<kvm_run>,
}

impl RunWindow {
    /// Opens the window for the `kvm_run` page at `run`.
    ///
    /// # Safety
    ///
    /// `run` must be the mapped `kvm_run` page of the vCPU about to run on
    /// this thread, it must stay mapped until the window drops, and the
    /// caller must hold no Rust reference into the page until then.
    pub(crate) unsafe fn open(run: NonNull<kvm_run>) -> Self {
        RUN_WINDOW.with(|w| w.store(run.as_ptr(), Ordering::SeqCst));
        Self { run }
    }
}

impl Drop for RunWindow {
    fn drop(&mut self) {
        RUN_WINDOW.with(|w| w.store(std::ptr::null_mut(), Ordering::SeqCst));
        // SAFETY: still mapped and unreferenced (the `open` contract); the
        // handler can no longer write (the window is closed, and SeqCst on
        // one thread orders this store after the one above), so this is the
        // last write to the byte until the next window.
        unsafe { immediate_exit(self.run) }.store(0, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for VcpuInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuInterrupt")
            .field("state", &*self.lock())
            .field("waker", &self.waker.get().is_some())
            .finish()
    }
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
                attached: false,
                dropped: false,
                driven: false,
                driver: None,
                shutdown: false,
                armed: false,
            }),
            waker: OnceLock::new(),
            cancel_pending: AtomicBool::new(false),
        }
    }

    /// Attaches the state to a vCPU.
    pub(crate) fn attach(&self) {
        self.lock().attached = true;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is plain
        // data and stays consistent, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a call as running on the current thread; returns its
    /// generation ([`CallGuard::begin`]). An armed kill is consumed here:
    /// the call starts canceled ([`CancelReason::Killed`] pending), so its
    /// first run check fails; nothing is signalled (the call has not run
    /// yet, and a driven vCPU sees the pending flag at its next check).
    fn begin_call(&self) -> u64 {
        let mut s = self.lock();
        s.generation += 1;
        s.running = true;
        if std::mem::take(&mut s.armed) {
            s.cancel = Some(CancelReason::Killed);
            self.cancel_pending.store(true, Ordering::SeqCst);
        } else {
            s.cancel = None;
        }
        // SAFETY: pthread_self has no preconditions.
        s.thread = unsafe { libc::pthread_self() };
        s.generation
    }

    /// Makes the current thread the vCPU's driver until the returned guard
    /// drops: kills and [`VcpuInterrupt::shutdown`] signal this thread, for
    /// calls begun on any thread. From the first call on, the vCPU is
    /// driven for good: while no guard lives, nothing is signalled (the
    /// pending flag stops the next driver before it enters the guest).
    pub fn drive(self: &Arc<Self>) -> Driver {
        let mut s = self.lock();
        s.driven = true;
        // SAFETY: pthread_self has no preconditions.
        s.driver = Some(unsafe { libc::pthread_self() });
        Driver {
            interrupt: Arc::clone(self),
        }
    }

    /// The thread a cancel must signal now, if any (see the module docs).
    fn target(s: &State) -> Option<libc::pthread_t> {
        if s.dropped || !s.attached {
            None
        } else if s.driven {
            s.driver
        } else {
            s.running.then_some(s.thread)
        }
    }

    /// Registers the function a cancel calls after signalling the vCPU
    /// thread (once; later calls are ignored). It runs with the interrupt
    /// lock held, so it must not call back into this `VcpuInterrupt`.
    pub fn set_waker(&self, waker: Waker) {
        let _ = self.waker.set(waker);
    }

    /// Stops a driven vCPU for good, whether or not a call runs:
    /// every later run check reports [`CancelReason::Shutdown`], and a
    /// `KVM_RUN` in progress is interrupted.
    pub fn shutdown(&self) {
        let mut s = self.lock();
        s.shutdown = true;
        self.cancel_pending.store(true, Ordering::SeqCst);
        if let Some(driver) = s.driver.filter(|_| s.attached && !s.dropped) {
            // SAFETY: `driver` is inside its Driver's scope (leaving it
            // needs this lock), so the thread is alive; the handler is
            // installed before any VM exists.
            unsafe { libc::pthread_kill(driver, interrupt_signal()) };
        }
        if let Some(wake) = self.waker.get() {
            wake();
        }
    }

    /// Ends the running call; returns the cancel that hit it, if any
    /// ([`CallGuard`]'s end).
    fn end_call(&self) -> Option<CancelReason> {
        let mut s = self.lock();
        s.running = false;
        let cancel = s.cancel.take();
        self.cancel_pending.store(s.shutdown, Ordering::SeqCst);
        cancel
    }

    /// The cancel pending for the running call, if any (cheap: one atomic
    /// load when there is none). A resident vCPU thread asks again after
    /// [`crate::Vm::run`] returned a cancel, to tell a cancel of the call
    /// in flight from one of a call that has ended since.
    pub fn pending(&self) -> Option<CancelReason> {
        if !self.cancel_pending.load(Ordering::SeqCst) {
            return None;
        }
        let s = self.lock();
        if s.shutdown {
            return Some(CancelReason::Shutdown);
        }
        s.cancel
    }

    /// Marks the vCPU gone (its VM dropped, or never created because the
    /// sandbox holding this state was dropped first); later kills do
    /// nothing.
    pub fn mark_dropped(&self) {
        let mut s = self.lock();
        s.dropped = true;
        s.running = false;
        s.armed = false;
    }

    /// Whether the VM this belongs to has been dropped.
    pub fn dropped(&self) -> bool {
        self.lock().dropped
    }

    /// Cancels the call running now. Returns whether one was running.
    pub fn kill(&self) -> bool {
        self.cancel_locked(None, CancelReason::Killed)
    }

    /// Cancels the call running now, or, if none is, the next call to
    /// begin (see the module docs: an armed kill). The next call then
    /// begins canceled, whichever thread begins it, and nothing later is
    /// affected. Never reaches anything once the state is marked dropped.
    pub fn kill_next(&self) -> KillOutcome {
        let mut s = self.lock();
        if self.cancel_held(&mut s, None, CancelReason::Killed) {
            KillOutcome::Running
        } else if s.dropped {
            KillOutcome::Gone
        } else {
            s.armed = true;
            KillOutcome::Armed
        }
    }

    /// Withdraws a kill armed by [`VcpuInterrupt::kill_next`] that no call
    /// has consumed yet; returns whether one was armed.
    pub fn disarm(&self) -> bool {
        std::mem::take(&mut self.lock().armed)
    }

    /// Cancels call `generation` if it is still the one running.
    pub fn kill_generation(&self, generation: u64, reason: CancelReason) -> bool {
        self.cancel_locked(Some(generation), reason)
    }

    fn cancel_locked(&self, generation: Option<u64>, reason: CancelReason) -> bool {
        let mut s = self.lock();
        self.cancel_held(&mut s, generation, reason)
    }

    /// [`Self::cancel_locked`] with the lock already held (`s`).
    fn cancel_held(
        &self,
        s: &mut MutexGuard<'_, State>,
        generation: Option<u64>,
        reason: CancelReason,
    ) -> bool {
        if !s.running || s.dropped || !s.attached || generation.is_some_and(|g| g != s.generation) {
            return false;
        }
        if s.cancel.is_none() {
            s.cancel = Some(reason);
        }
        // Raised before the signal is sent, so the vCPU thread sees it no
        // later than the handler runs.
        self.cancel_pending.store(true, Ordering::SeqCst);
        if let Some(thread) = Self::target(s) {
            // SAFETY: `thread` is the live thread inside
            // `begin_call`..`end_call` (end_call needs this lock, so it has
            // not returned), or a driver inside its Driver's scope (leaving
            // it needs this lock); the signal's handler is installed before
            // any VM exists.
            unsafe { libc::pthread_kill(thread, interrupt_signal()) };
        }
        if let Some(wake) = self.waker.get() {
            wake();
        }
        true
    }
}

/// The current thread drives a vCPU ([`VcpuInterrupt::drive`]); dropping
/// it ends that, under the interrupt lock, so no signal reaches the thread
/// afterwards.
#[must_use = "the thread drives the vCPU only while the guard lives"]
pub struct Driver {
    interrupt: Arc<VcpuInterrupt>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.interrupt.lock().driver = None;
    }
}

/// Marks the span of one call; ends it (clearing any cancel) on drop, even
/// when unwinding.
#[derive(Debug)]
pub struct CallGuard {
    interrupt: Option<Arc<VcpuInterrupt>>,
}

impl CallGuard {
    /// Starts a call on `interrupt` (for a vCPU that runs on another
    /// thread; [`crate::Vm::begin_call`] is the same for a VM at hand).
    /// Returns the guard and the call's generation.
    pub fn begin(interrupt: &Arc<VcpuInterrupt>) -> (Self, u64) {
        let generation = interrupt.begin_call();
        (
            Self {
                interrupt: Some(Arc::clone(interrupt)),
            },
            generation,
        )
    }

    /// Ends the call now; returns the cancel that hit it, if any.
    pub fn finish(mut self) -> Option<CancelReason> {
        self.interrupt.take().and_then(|i| i.end_call())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(i) = self.interrupt.take() {
            i.end_call();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raises the interrupt signal on this thread; Linux delivers it before
    /// `pthread_kill` returns to the caller.
    fn signal_self() {
        // SAFETY: the handler is installed (by the caller) and only touches
        // the thread-local and an atomic.
        let rc = unsafe { libc::pthread_kill(libc::pthread_self(), interrupt_signal()) };
        assert_eq!(rc, 0);
    }

    #[test]
    fn handler_sets_immediate_exit_only_inside_a_run_window() {
        install_signal_handler().unwrap();
        // SAFETY: kvm_run is plain integers and unions of them; all-zero is
        // a valid value.
        let mut page: Box<kvm_run> = Box::new(unsafe { std::mem::zeroed() });

        signal_self();
        assert_eq!(page.immediate_exit, 0, "no window: untouched");

        let run = NonNull::from(page.as_mut());
        {
            // SAFETY: `page` outlives the window and is not referenced until
            // it drops.
            let _window = unsafe { RunWindow::open(run) };
            signal_self();
            // SAFETY: still open, read through the same atomic view the
            // handler used.
            assert_eq!(unsafe { immediate_exit(run) }.load(Ordering::SeqCst), 1);
        }
        assert_eq!(page.immediate_exit, 0, "closing resets it");

        signal_self();
        assert_eq!(page.immediate_exit, 0, "closed: untouched");
    }

    #[test]
    fn handler_is_installed_with_sa_restart() {
        install_signal_handler().unwrap();
        // SAFETY: all-zero is a valid sigaction to receive the old one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only queries; `old` is a valid out
        // pointer.
        let rc = unsafe { libc::sigaction(interrupt_signal(), std::ptr::null(), &mut old) };
        assert_eq!(rc, 0);
        assert_ne!(old.sa_flags & libc::SA_RESTART, 0);
        assert_eq!(
            old.sa_sigaction,
            interrupt_handler as *const () as libc::sighandler_t
        );
    }

    #[test]
    fn kill_reaches_only_the_running_generation() {
        let i = VcpuInterrupt::new();
        i.attach();
        assert!(!i.kill(), "nothing running");
        install_signal_handler().unwrap();
        let g = i.begin_call();
        assert!(!i.kill_generation(g + 1, CancelReason::DeadlineExceeded));
        assert_eq!(i.pending(), None);
        assert!(i.kill_generation(g, CancelReason::DeadlineExceeded));
        assert!(i.kill(), "a second kill still reports a running call");
        assert_eq!(
            i.pending(),
            Some(CancelReason::DeadlineExceeded),
            "the first reason wins"
        );
        assert_eq!(i.end_call(), Some(CancelReason::DeadlineExceeded));
        assert!(!i.kill(), "ended");
        assert_eq!(i.pending(), None);
        let g2 = i.begin_call();
        assert!(
            !i.kill_generation(g, CancelReason::DeadlineExceeded),
            "an old deadline"
        );
        assert_eq!(i.end_call(), None);
        assert!(g2 > g);
        i.mark_dropped();
        assert!(i.dropped());
        i.begin_call();
        assert!(!i.kill(), "dropped");
    }

    #[test]
    fn an_armed_kill_cancels_the_next_call_only() {
        install_signal_handler().unwrap();
        let i = VcpuInterrupt::new();
        assert_eq!(i.kill_next(), KillOutcome::Armed, "no VM yet: armed");
        assert!(i.disarm());
        assert!(!i.disarm(), "withdrawn");
        i.attach();
        let g = i.begin_call();
        assert_eq!(i.pending(), None, "a withdrawn kill reaches nothing");
        assert_eq!(i.end_call(), None);

        assert_eq!(i.kill_next(), KillOutcome::Armed);
        assert_eq!(i.kill_next(), KillOutcome::Armed, "still one kill");
        assert!(!i.kill(), "kill still reports no call running");
        let g2 = i.begin_call();
        assert!(g2 > g);
        assert_eq!(i.pending(), Some(CancelReason::Killed), "begins canceled");
        assert_eq!(i.end_call(), Some(CancelReason::Killed));
        i.begin_call();
        assert_eq!(i.pending(), None, "consumed by one call");
        assert_eq!(i.kill_next(), KillOutcome::Running, "a running call");
        assert_eq!(i.end_call(), Some(CancelReason::Killed));
        i.begin_call();
        assert_eq!(i.pending(), None, "a kill of a running call arms nothing");
        i.end_call();

        assert_eq!(i.kill_next(), KillOutcome::Armed);
        i.mark_dropped();
        assert_eq!(i.kill_next(), KillOutcome::Gone);
        assert!(!i.disarm(), "dropping forgets an armed kill");
        i.begin_call();
        assert_eq!(i.pending(), None);
    }

    #[test]
    fn a_driven_vcpu_signals_only_its_current_driver() {
        install_signal_handler().unwrap();
        let i = Arc::new(VcpuInterrupt::new());
        i.attach();
        i.begin_call();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        assert_eq!(VcpuInterrupt::target(&i.lock()), Some(me), "exit mode");
        let driver = i.drive();
        assert_eq!(VcpuInterrupt::target(&i.lock()), Some(me), "driving");
        drop(driver);
        assert_eq!(
            VcpuInterrupt::target(&i.lock()),
            None,
            "nobody drives: nothing is signalled, even with a call running"
        );
        assert!(i.kill(), "the kill is still recorded for the running call");
        assert_eq!(i.pending(), Some(CancelReason::Killed));
        i.shutdown();
        assert_eq!(i.pending(), Some(CancelReason::Shutdown));
        // A driver on another thread, then gone (the thread was joined).
        let other = Arc::clone(&i);
        std::thread::spawn(move || drop(other.drive()))
            .join()
            .unwrap();
        assert_eq!(VcpuInterrupt::target(&i.lock()), None, "a joined driver");
    }
}
