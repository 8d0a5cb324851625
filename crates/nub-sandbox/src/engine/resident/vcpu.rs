//! The vCPU thread: takes the VM whenever it is offered, runs the guest
//! until it parks, hands it back or fails, and judges the cancels that
//! kick it out of `KVM_RUN`.

use std::sync::{Arc, atomic::Ordering};

use nub_host_common::ports::ExitPort;
use nub_hypervisor::{HypervisorError, Vm, interrupt::CancelReason};

use super::{shared::Shared, watch::own_cpu_clock, words::completion_word};
use crate::{
    error::{HyperlightError, Violation},
    exits::{Stop, classify, misplaced_port},
    guest_side::MemorySide,
};

/// The vCPU thread: takes the VM whenever it is offered and runs the guest
/// until it parks, the caller asks for the VM back, the guest fails or the
/// sandbox stops. The VM always goes back to [`State::vm`].
pub(super) fn vcpu_main(shared: &Arc<Shared>, side: &MemorySide) {
    if let Some(clock) = own_cpu_clock() {
        let _ = shared.cpu_clock.set(clock);
    }
    while let Some(mut vm) = wait_for_vm(shared) {
        let end = drive(&mut vm, shared, side);
        // A failure is recorded before the VM goes home: a caller that
        // finds the VM idle must already see that nothing may run it.
        let stop = match end {
            Drive::Released => false,
            Drive::Stopped => true,
            Drive::Failed(e) => {
                shared.fail(e);
                true
            }
        };
        shared.put_vm(vm);
        if stop {
            break;
        }
    }
}

/// Waits until the VM is offered (`Some`) or the sandbox stops (`None`).
pub(super) fn wait_for_vm(shared: &Shared) -> Option<Vm> {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return None;
        }
        if state.wake
            && let Some(vm) = state.vm.take()
        {
            state.wake = false;
            shared.idle.store(false, Ordering::SeqCst);
            return Some(vm);
        }
        state = shared
            .vcpu_cv
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// How a [`drive`] ended.
#[derive(Debug)]
pub(super) enum Drive {
    /// The guest stopped in an exit it can resume from (PARK, or NOTIFY
    /// when the caller asked for the VM): the VM goes back to the caller.
    Released,
    /// The sandbox stops (dropped, poisoned, or the guest was evicted).
    Stopped,
    /// The guest failed.
    Failed(HyperlightError),
}

/// Runs the guest on the vCPU thread (see [`vcpu_main`]).
pub(super) fn drive(vm: &mut Vm, shared: &Arc<Shared>, side: &MemorySide) -> Drive {
    let interrupt = Arc::clone(vm.interrupt());
    let _driver = interrupt.drive();
    shared.driving.store(true, Ordering::SeqCst);
    shared.watch_start();
    let end = loop {
        let exit = match shared.run(vm) {
            Ok(exit) => exit,
            Err(HypervisorError::Canceled(CancelReason::Shutdown)) => break Drive::Stopped,
            Err(HypervisorError::Canceled(_)) => match judge_cancel(shared, side, vm) {
                CancelVerdict::RunOn => continue,
                CancelVerdict::Hold(call) => {
                    // The call is decided (answered): its caller may be
                    // asleep, waiting for a NOTIFY the guest never sent.
                    shared.notify_caller();
                    if hold(shared, call) {
                        continue;
                    }
                    break Drive::Stopped;
                }
                CancelVerdict::Fail(reason) => {
                    break Drive::Failed(HyperlightError::Kvm(HypervisorError::Canceled(reason)));
                }
                CancelVerdict::Stop => break Drive::Stopped,
            },
            Err(e) => break Drive::Failed(e.into()),
        };
        match classify(exit, || side.report_error()) {
            Stop::Port(ExitPort::Park, _) => break Drive::Released,
            Stop::Port(ExitPort::Notify, _) => {
                shared.notify_caller();
                if shared.release.swap(false, Ordering::Relaxed) {
                    break Drive::Released;
                }
            }
            Stop::Port(ExitPort::Log, _) => {
                // Records are served for an open call only: a guest that
                // logs on after its answer would be drained for ever.
                if shared.call.load(Ordering::SeqCst) & 1 == 0 {
                    break Drive::Failed(HyperlightError::ProtocolViolation(
                        Violation::LoggedOutsideCall,
                    ));
                }
                if let Err(e) = side.drain_log() {
                    break Drive::Failed(e);
                }
            }
            Stop::Port(other, _) => {
                break Drive::Failed(misplaced_port(other, "resident calls"));
            }
            Stop::Failed(e) => break Drive::Failed(e),
        }
    };
    shared.driving.store(false, Ordering::SeqCst);
    shared.release.store(false, Ordering::Relaxed);
    end
}

/// What the vCPU thread does after `KVM_RUN` returned a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelVerdict {
    /// The cancel belonged to a call that has ended (its cancel is
    /// cleared): run the guest again.
    RunOn,
    /// The open call (the [`Shared::call`] value) was canceled after the
    /// guest had answered it: the call succeeds. Wake the caller, wait
    /// until it ends the call (which clears the cancel), then run on.
    Hold(u64),
    /// The open call was canceled before the guest answered it, which it
    /// now never will: the sandbox fails with this cancel.
    Fail(CancelReason),
    /// The sandbox is being dropped.
    Stop,
}

/// The verdict for a cancel, from one consistent view: `call` (the
/// [`Shared::call`] word, unchanged while `pending` was read), the cancel
/// `pending` for the running call, and the guest's completion word (the
/// vCPU is out of `KVM_RUN`, so the guest cannot change it).
pub(super) fn verdict(
    call: u64,
    pending: Option<CancelReason>,
    completion: Option<u64>,
) -> CancelVerdict {
    let open = call & 1 == 1;
    match pending {
        Some(CancelReason::Shutdown) => CancelVerdict::Stop,
        None => CancelVerdict::RunOn,
        // A cancel is only ever recorded for a running call, and a call
        // runs (in the interrupt's sense) only while it is open here: the
        // caller opens it before `begin_call` and ends it after `end_call`.
        Some(_) if !open => CancelVerdict::RunOn,
        Some(_) if completion == Some(call >> 1) => CancelVerdict::Hold(call),
        Some(reason) => CancelVerdict::Fail(reason),
    }
}

/// Decides what a cancel that stopped `vm` means. The caller may end the
/// call and begin the next one at any moment, so the view is taken as a
/// seqlock: the call word before and after asking for the pending cancel
/// must agree (the caller changes it at most twice per call, and a call
/// cannot complete while the vCPU is out of `KVM_RUN`, so this settles).
pub(super) fn judge_cancel(shared: &Shared, side: &MemorySide, vm: &Vm) -> CancelVerdict {
    let completion = completion_word(side)
        .ok()
        .map(|word| word.load(Ordering::SeqCst));
    loop {
        let before = shared.call.load(Ordering::SeqCst);
        let pending = vm.interrupt().pending();
        if shared.call.load(Ordering::SeqCst) == before {
            return verdict(before, pending, completion);
        }
    }
}

/// Sleeps until the caller has ended `call` (a [`Shared::call`] value) or
/// the sandbox stops; `false` when stopped. Raising `held` and then
/// re-reading the call word pairs with [`Resident::release`].
pub(super) fn hold(shared: &Shared, call: u64) -> bool {
    let mut state = shared.lock();
    shared.held.store(true, Ordering::SeqCst);
    while shared.call.load(Ordering::SeqCst) == call && !state.stop {
        state = shared
            .vcpu_cv
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
    }
    shared.held.store(false, Ordering::SeqCst);
    !state.stop
}
