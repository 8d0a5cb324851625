//! What the caller and the vCPU thread share: the VM's one home while
//! nobody runs it, the flags each side reads, and the wake-ups
//! (docs/resident.md, *The wake-up rule*).

use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use std::time::Duration;

use nub_hypervisor::{HypervisorError, VcpuInterrupt, Vm, VmExit};

use super::watch::{Watch, park_limit};
use crate::error::HyperlightError;

/// What the caller and the vCPU thread share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The vCPU thread waits here for the VM, or while held.
    pub(super) vcpu_cv: Condvar,
    /// The caller waits here while blocked.
    pub(super) caller_cv: Condvar,
    /// Mirror of `state.failure.is_some()` for the caller's spin loop.
    pub(super) stopped: AtomicBool,
    /// Mirror of `state.vm.is_some()`: no thread runs the guest now.
    pub(super) idle: AtomicBool,
    /// The vCPU thread runs the guest ([`drive`]); the park watch looks
    /// only then.
    pub(super) driving: AtomicBool,
    /// The caller asks the vCPU thread to hand the VM back at its next
    /// NOTIFY (the machine is too busy for spinning; see
    /// [`Resident::after_spun`]).
    pub(super) release: AtomicBool,
    /// VM exits so far.
    pub(super) exits: AtomicU64,
    /// The caller's call: `seq << 1 | 1` from [`Resident::next_call`] until
    /// [`Resident::release`] (call `seq` is open), `seq << 1` after it
    /// ended. Written by the caller only.
    pub(super) call: AtomicU64,
    /// The vCPU thread waits in [`hold`] for the caller to end a call (see
    /// [`CancelVerdict::Hold`]); the caller then notifies `vcpu_cv`.
    pub(super) held: AtomicBool,
    /// The park watch's state (see [`Shared::check`]).
    pub(super) watch: Mutex<Watch>,
    /// The VM's interrupt state (to stop a guest that never parks).
    pub(super) interrupt: Arc<VcpuInterrupt>,
    /// See [`park_limit`].
    pub(super) park_limit: Duration,
    /// The vCPU thread's CPU clock (set by the thread when it starts).
    pub(super) cpu_clock: OnceLock<libc::clockid_t>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// The VM while no thread runs it: the guest is stopped in an exit
    /// (PARK, or NOTIFY after a call the caller ran).
    pub(super) vm: Option<Vm>,
    /// The VM in `vm` is offered to the vCPU thread: it takes it and lets
    /// the guest spin.
    pub(super) wake: bool,
    /// The guest asked (NOTIFY) to wake the blocked caller, or something
    /// else the caller must look at happened (a cancel, the VM handed back).
    pub(super) notified: bool,
    /// The sandbox is being dropped or was poisoned: the vCPU thread ends.
    pub(super) stop: bool,
    /// Why the vCPU thread stopped; the sandbox is dead.
    pub(super) failure: Option<HyperlightError>,
}

impl Shared {
    pub(super) fn new(interrupt: Arc<VcpuInterrupt>, spin: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            vcpu_cv: Condvar::new(),
            caller_cv: Condvar::new(),
            stopped: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            driving: AtomicBool::new(false),
            release: AtomicBool::new(false),
            exits: AtomicU64::new(0),
            call: AtomicU64::new(0),
            held: AtomicBool::new(false),
            watch: Mutex::new(Watch::default()),
            interrupt,
            park_limit: park_limit(spin),
            cpu_clock: OnceLock::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks call `seq` ended and notifies a vCPU thread [`hold`]ing for
    /// it (see [`Resident::release`]).
    pub(super) fn end_call(&self, seq: u64) {
        self.call.store(seq << 1, Ordering::SeqCst);
        if self.held.load(Ordering::SeqCst) {
            let _state = self.lock();
            self.vcpu_cv.notify_all();
        }
    }

    /// Wakes the caller (it re-reads the words and the state).
    pub(super) fn notify_caller(&self) {
        self.lock().notified = true;
        self.caller_cv.notify_all();
    }

    /// A cancel was recorded: wake whichever side sleeps, so a parked VM is
    /// run (and stopped by the cancel) and a blocked caller looks again.
    pub(super) fn on_cancel(&self) {
        let mut state = self.lock();
        state.notified = true;
        self.vcpu_cv.notify_all();
        self.caller_cv.notify_all();
    }

    /// Records why the sandbox died (the first reason wins) and wakes the
    /// caller.
    pub(super) fn fail(&self, failure: HyperlightError) {
        let mut state = self.lock();
        state.failure.get_or_insert(failure);
        self.stopped.store(true, Ordering::Release);
        self.caller_cv.notify_all();
    }

    /// Puts the VM back where nobody runs it, and wakes a caller waiting
    /// for it.
    pub(super) fn put_vm(&self, vm: Vm) {
        self.exits.store(vm.exit_count(), Ordering::Relaxed);
        let mut state = self.lock();
        state.vm = Some(vm);
        self.idle.store(true, Ordering::SeqCst);
        state.notified = true;
        self.caller_cv.notify_all();
    }

    /// Takes the VM if nobody runs it (withdrawing an offer to the vCPU
    /// thread).
    pub(super) fn take_vm(&self) -> Option<Vm> {
        self.take_from(&mut self.lock())
    }

    /// Takes the VM out of `state` (see [`Shared::take_vm`]).
    fn take_from(&self, state: &mut State) -> Option<Vm> {
        let vm = state.vm.take();
        if vm.is_some() {
            state.wake = false;
            self.idle.store(false, Ordering::SeqCst);
        }
        vm
    }

    /// Takes the VM to run a call on it, if nobody runs it and the guest has
    /// not failed (a failed guest is never run again; the VM stays home for
    /// [`Resident::stop`](super::Resident) to pool).
    pub(super) fn take_vm_to_run(&self) -> Option<Vm> {
        let mut state = self.lock();
        if state.failure.is_some() {
            return None;
        }
        self.take_from(&mut state)
    }

    /// Runs `vm` once (`KVM_RUN`) and publishes its exit count, so
    /// `exit_count()` is current whichever thread drives the VM.
    pub(super) fn run(&self, vm: &mut Vm) -> Result<VmExit, HypervisorError> {
        let exit = vm.run();
        self.exits.store(vm.exit_count(), Ordering::Relaxed);
        exit
    }

    /// Offers the idle VM to the vCPU thread.
    pub(super) fn offer(&self) {
        let mut state = self.lock();
        if state.vm.is_some() {
            state.wake = true;
            self.vcpu_cv.notify_all();
        }
    }
}
