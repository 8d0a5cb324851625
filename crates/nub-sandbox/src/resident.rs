//! Resident calls: the vCPU stays inside the guest on a thread the sandbox
//! owns, and calls cross through words in shared memory instead of VM
//! exits (`CallMode::Resident`). docs/resident.md is the protocol: the
//! words (`nub_host_common::resident`), who writes each, the orderings, and
//! the park, wake and cancel races.
//!
//! This module owns both host halves:
//! - the **vCPU thread** ([`vcpu_main`]): runs `KVM_RUN` in a loop and
//!   handles the few exits resident mode still has: PARK (sleep until
//!   woken), NOTIFY (wake the blocked caller), LOG (drain), a failure
//!   (record it, wake the caller, stop);
//! - the **caller** ([`Resident::call`]): rings the doorbell, spins on the
//!   completion word, serves host calls as their words change, and blocks
//!   when its spin window runs out.

use std::{
    hint::spin_loop,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nub_host_common::{
    ports::ExitPort,
    resident::{
        COMPLETION, DOORBELL, GUEST_STATE, HOST_WAITING, HOSTCALL_OFFSET, HOSTCALL_REQUEST,
        HOSTCALL_RESPONSE, STATE_PARKED,
    },
};
use nub_hypervisor::{HypervisorError, Vm, VmExit, interrupt::CancelReason};

use crate::{
    error::{HyperlightError, Result},
    exec::{MemorySide, exit_error},
    host_functions::HostFunctions,
};

/// How long the caller spins after waking a parked vCPU, at least: about
/// what the wake-up and the VM entry take on these machines.
const WAKE_SPIN: Duration = Duration::from_millis(1);

/// What the caller and the vCPU thread share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// The vCPU thread waits here while parked or held.
    vcpu_cv: Condvar,
    /// The caller waits here while blocked.
    caller_cv: Condvar,
    /// Mirror of `state.failure.is_some()` for the caller's spin loop.
    stopped: AtomicBool,
    /// VM exits so far (the VM lives on the vCPU thread).
    exits: AtomicU64,
    /// The caller's call: `seq << 1 | 1` from [`Resident::next_call`] until
    /// [`Resident::release`] (call `seq` is open), `seq << 1` after it
    /// ended. Written by the caller only.
    call: AtomicU64,
    /// The vCPU thread waits in [`hold`] for the caller to end a call (see
    /// [`CancelVerdict::Hold`]); the caller then notifies `vcpu_cv`.
    held: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Wake the parked vCPU thread.
    wake: bool,
    /// The guest asked (NOTIFY) to wake the blocked caller.
    notified: bool,
    /// The sandbox is being dropped: the vCPU thread ends.
    stop: bool,
    /// Why the vCPU thread stopped; the sandbox is dead.
    failure: Option<HyperlightError>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks call `seq` ended and notifies a vCPU thread [`hold`]ing for
    /// it (see [`Resident::release`]).
    fn end_call(&self, seq: u64) {
        self.call.store(seq << 1, Ordering::SeqCst);
        if self.held.load(Ordering::SeqCst) {
            let _state = self.lock();
            self.vcpu_cv.notify_all();
        }
    }

    /// Wakes the vCPU thread if it is parked (or about to park).
    fn wake_vcpu(&self) {
        self.lock().wake = true;
        self.vcpu_cv.notify_all();
    }
}

/// The resident protocol's words (the control block's, and the doorbell and
/// completion in the ring headers), borrowed from guest memory.
struct Words<'a> {
    doorbell: &'a AtomicU64,
    completion: &'a AtomicU64,
    guest_state: &'a AtomicU64,
    host_waiting: &'a AtomicU64,
    hostcall_request: &'a AtomicU64,
    hostcall_offset: &'a AtomicU64,
    hostcall_response: &'a AtomicU64,
}

impl<'a> Words<'a> {
    fn of(side: &'a MemorySide) -> Result<Self> {
        let at = |base: u64, offset: usize| {
            side.memory
                .atomic_u64(base + offset as u64)
                .map_err(HyperlightError::from)
        };
        let base = side.layout.control.start;
        let word = |offset: usize| at(base, offset);
        Ok(Self {
            // The two per-call words live in the ring headers.
            doorbell: at(side.layout.input_ring.start, DOORBELL)?,
            completion: completion_word(side)?,
            guest_state: word(GUEST_STATE)?,
            host_waiting: word(HOST_WAITING)?,
            hostcall_request: word(HOSTCALL_REQUEST)?,
            hostcall_offset: word(HOSTCALL_OFFSET)?,
            hostcall_response: word(HOSTCALL_RESPONSE)?,
        })
    }
}

/// The guest's completion word: the output ring header's `seq` word.
fn completion_word(side: &MemorySide) -> Result<&AtomicU64> {
    side.memory
        .atomic_u64(side.layout.output_ring.start + COMPLETION as u64)
        .map_err(HyperlightError::from)
}

/// How many polls of a word take about `spin`, measured once per process
/// on this CPU with the loop the guest runs (an atomic load and a `pause`).
pub(crate) fn spin_iterations(spin: Duration) -> u64 {
    static NANOS_PER_POLL: OnceLock<f64> = OnceLock::new();
    let per_poll = *NANOS_PER_POLL.get_or_init(|| {
        const POLLS: u32 = 100_000;
        let word = AtomicU64::new(0);
        let start = Instant::now();
        for _ in 0..POLLS {
            if word.load(Ordering::Acquire) == u64::MAX {
                break;
            }
            spin_loop();
        }
        (start.elapsed().as_nanos() as f64 / f64::from(POLLS)).max(0.1)
    });
    let polls = spin.as_nanos() as f64 / per_poll;
    if polls >= u64::MAX as f64 {
        u64::MAX
    } else {
        (polls.ceil() as u64).max(1)
    }
}

/// A resident sandbox's engine: its vCPU thread and the caller's state.
#[derive(Debug)]
pub(crate) struct Resident {
    shared: Arc<Shared>,
    /// Returns the VM when the thread ends, so the VM (and its interrupt
    /// state) lives until the sandbox is dropped.
    thread: Option<JoinHandle<Vm>>,
    interrupt: Arc<nub_hypervisor::VcpuInterrupt>,
    /// Sequence number of the last call.
    seq: u64,
    /// Sequence number of the last host call served.
    last_hostcall: u64,
    spin: Duration,
}

impl Resident {
    /// Hands the booted `vm` to a new vCPU thread.
    pub(crate) fn start(vm: Vm, side: MemorySide, spin: Duration) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let interrupt = Arc::clone(vm.interrupt());
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        // A kill or deadline must also reach a vCPU thread that sleeps
        // outside KVM_RUN (parked): wake it, and its next run check sees the
        // cancel.
        interrupt.set_waker(Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.wake_vcpu();
            }
        }));
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("nub-vcpu-{}", side.id))
            .spawn(move || vcpu_main(vm, &thread_shared, &side))
            .map_err(HyperlightError::VcpuThread)?;
        Ok(Self {
            shared,
            thread: Some(thread),
            interrupt,
            seq: 0,
            last_hostcall: 0,
            spin,
        })
    }

    /// VM exits since the VM was created.
    pub(crate) fn exit_count(&self) -> u64 {
        self.shared.exits.load(Ordering::Relaxed)
    }

    /// The failure that stopped the vCPU thread, if it stopped.
    fn failure(&self) -> HyperlightError {
        self.shared
            .lock()
            .failure
            .take()
            .unwrap_or(HyperlightError::PoisonedSandbox)
    }

    /// Numbers the next call and opens it for the vCPU thread
    /// ([`Shared::call`]). Must run before the call's `CallGuard` begins:
    /// a cancel is recorded only for a running call, so a cancel the vCPU
    /// thread sees then always finds its call open, and [`verdict`] judges
    /// it against this call's number.
    pub(crate) fn next_call(&mut self) {
        self.seq += 1;
        self.shared.call.store(self.seq << 1 | 1, Ordering::SeqCst);
    }

    /// Runs the requests already queued in the input ring (numbered by
    /// [`Resident::next_call`]): rings the doorbell and waits for the
    /// completion word, serving host calls as they come. `input_tail` is
    /// where host-call responses go.
    pub(crate) fn call(
        &mut self,
        side: &MemorySide,
        input_tail: usize,
        host: &mut HostFunctions,
    ) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(self.failure());
        }
        let words = Words::of(side)?;
        let seq = self.seq;
        // Release: the request frames written before are visible to a guest
        // that reads the new doorbell. SeqCst: ordered before the load of
        // the guest's state below (see the park race in docs/resident.md).
        words.doorbell.store(seq, Ordering::SeqCst);
        // Waking a parked vCPU costs a thread wake-up and a VM entry (a few
        // hundred µs here): spin through that rather than sleep and pay a
        // NOTIFY exit and a second wake-up on top.
        let mut window = self.wake_and_window(&words);
        // Taken at the first time check, 64 polls in: most calls are
        // answered before, and reading the clock costs as much as a poll.
        let mut polled_since: Option<Instant> = None;
        let mut polls = 0u32;
        loop {
            if words.completion.load(Ordering::Acquire) == seq {
                return Ok(());
            }
            let request = words.hostcall_request.load(Ordering::Acquire);
            if request != self.last_hostcall {
                let offset = words.hostcall_offset.load(Ordering::Acquire);
                let offset = usize::try_from(offset).unwrap_or(usize::MAX);
                side.serve_host_call(offset, input_tail, host)?;
                self.last_hostcall = request;
                words.hostcall_response.store(request, Ordering::SeqCst);
                window = self.wake_and_window(&words);
                polled_since = None;
                continue;
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                return Err(self.failure());
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(64) {
                spin_loop();
                continue;
            }
            let since = *polled_since.get_or_insert_with(Instant::now);
            if since.elapsed() < window {
                spin_loop();
                continue;
            }
            self.block(&words, seq);
            polled_since = None;
        }
    }

    /// Sleeps until the guest notifies (it answered or made a host call)
    /// or the vCPU thread stops. Raising `HOST_WAITING` and then re-checking
    /// the words pairs with the guest's "write the word, then read
    /// `HOST_WAITING`": one side always sees the other.
    fn block(&self, words: &Words<'_>, seq: u64) {
        words.host_waiting.store(1, Ordering::SeqCst);
        let ready = words.completion.load(Ordering::SeqCst) == seq
            || words.hostcall_request.load(Ordering::SeqCst) != self.last_hostcall
            || self.shared.stopped.load(Ordering::SeqCst);
        if !ready {
            let mut state = self.shared.lock();
            while !state.notified && state.failure.is_none() {
                state = self
                    .shared
                    .caller_cv
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            state.notified = false;
        }
        words.host_waiting.store(0, Ordering::SeqCst);
    }

    /// Wakes the vCPU thread if the guest parked (or is about to), and
    /// returns how long the caller should now spin before it sleeps: the
    /// spin window, or [`WAKE_SPIN`] if longer when it had to wake the vCPU.
    /// Called after every store to a word the guest waits on.
    fn wake_and_window(&self, words: &Words<'_>) -> Duration {
        if words.guest_state.load(Ordering::SeqCst) == STATE_PARKED {
            self.shared.wake_vcpu();
            self.spin.max(WAKE_SPIN)
        } else {
            self.spin
        }
    }

    /// Ends the call for the vCPU thread (its cancel, if any, is already
    /// cleared: the caller ended the call's `CallGuard` first), and lets a
    /// vCPU thread held by a late cancel run on. The store and the load of
    /// `held` pair with [`hold`]'s "raise `held`, then re-read the call":
    /// either the vCPU thread sees the call ended, or the caller sees it
    /// holding and notifies it under the lock it waits with.
    pub(crate) fn release(&self) {
        self.shared.end_call(self.seq);
    }
}

impl Resident {
    /// Stops the vCPU thread and joins it: sets the stop flag, wakes a
    /// parked or held thread and kicks a running one out of `KVM_RUN`
    /// (`VcpuInterrupt::shutdown`: a signal plus `immediate_exit`).
    /// Returns the VM the thread hands back (`None` if it was stopped
    /// already or the thread panicked).
    pub(crate) fn stop(&mut self) -> Option<Vm> {
        self.shared.lock().stop = true;
        self.shared.vcpu_cv.notify_all();
        // Kicks a vCPU thread out of KVM_RUN (a spinning guest); a parked or
        // held one was woken above.
        self.interrupt.shutdown();
        self.thread.take().and_then(|thread| thread.join().ok())
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        // The VM drops here, after its thread has ended (the sandbox takes
        // it with `stop` first, to pool it).
        drop(self.stop());
    }
}

/// The vCPU thread: runs the guest until the sandbox drops or the guest
/// fails, then returns the VM (dropped by whoever joins the thread).
fn vcpu_main(mut vm: Vm, shared: &Shared, side: &MemorySide) -> Vm {
    vm.interrupt().pin_thread();
    let failure = loop {
        let exit = vm.run();
        shared.exits.store(vm.exit_count(), Ordering::Relaxed);
        match exit {
            Err(HypervisorError::Canceled(CancelReason::Shutdown)) => break None,
            Err(HypervisorError::Canceled(_)) => match judge_cancel(shared, side, &vm) {
                CancelVerdict::RunOn => continue,
                CancelVerdict::Hold(call) => {
                    if hold(shared, call) {
                        continue;
                    }
                    break None;
                }
                CancelVerdict::Fail(reason) => {
                    break Some(HyperlightError::Kvm(HypervisorError::Canceled(reason)));
                }
                CancelVerdict::Stop => break None,
            },
            Err(e) => break Some(e.into()),
            Ok(VmExit::IoOut { port, value }) => match ExitPort::try_from(port) {
                Ok(ExitPort::Park) => {
                    if !park(shared) {
                        break None;
                    }
                }
                Ok(ExitPort::Notify) => {
                    shared.lock().notified = true;
                    shared.caller_cv.notify_all();
                }
                Ok(ExitPort::Log) => {
                    if let Err(e) = side.drain_log() {
                        break Some(e);
                    }
                }
                Ok(ExitPort::Panic | ExitPort::Abort | ExitPort::Fault) => {
                    break Some(side.report_error());
                }
                Ok(other) => {
                    break Some(HyperlightError::ProtocolViolation(format!(
                        "guest exited through {other:?} in resident mode"
                    )));
                }
                Err(port) => break Some(HyperlightError::UnexpectedPort { port, value }),
            },
            Ok(other) => break Some(exit_error(other)),
        }
    };
    if let Some(failure) = failure {
        shared.lock().failure = Some(failure);
        shared.stopped.store(true, Ordering::Release);
        shared.caller_cv.notify_all();
    }
    vm
}

/// What the vCPU thread does after `KVM_RUN` returned a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelVerdict {
    /// The cancel belonged to a call that has ended (its cancel is
    /// cleared): run the guest again.
    RunOn,
    /// The open call (the [`Shared::call`] value) was canceled after the
    /// guest had answered it: the call succeeds. Wait until the caller ends
    /// it (which clears the cancel), then run on.
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
fn verdict(call: u64, pending: Option<CancelReason>, completion: Option<u64>) -> CancelVerdict {
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
fn judge_cancel(shared: &Shared, side: &MemorySide, vm: &Vm) -> CancelVerdict {
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

/// Sleeps until woken or stopped; `false` when stopped.
fn park(shared: &Shared) -> bool {
    let mut state = shared.lock();
    while !state.wake && !state.stop {
        state = shared
            .vcpu_cv
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
    }
    state.wake = false;
    !state.stop
}

/// Sleeps until the caller has ended `call` (a [`Shared::call`] value) or
/// the sandbox stops; `false` when stopped. Raising `held` and then
/// re-reading the call word pairs with [`Resident::release`].
fn hold(shared: &Shared, call: u64) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_7: u64 = 7 << 1 | 1;
    const ENDED_7: u64 = 7 << 1;

    #[test]
    fn a_cancel_of_an_unanswered_open_call_fails_the_sandbox() {
        for reason in [CancelReason::Killed, CancelReason::DeadlineExceeded] {
            assert_eq!(
                verdict(OPEN_7, Some(reason), Some(6)),
                CancelVerdict::Fail(reason)
            );
            // An unreadable completion word is no answer either.
            assert_eq!(
                verdict(OPEN_7, Some(reason), None),
                CancelVerdict::Fail(reason)
            );
        }
    }

    #[test]
    fn a_cancel_after_the_guest_answered_holds_until_the_call_ends() {
        let killed = Some(CancelReason::Killed);
        assert_eq!(
            verdict(OPEN_7, killed, Some(7)),
            CancelVerdict::Hold(OPEN_7)
        );
    }

    #[test]
    fn a_cancel_that_is_gone_or_whose_call_ended_runs_on() {
        // The caller ended the call (clearing its cancel) before the vCPU
        // thread looked: no later call may fail for it.
        assert_eq!(
            verdict(ENDED_7, Some(CancelReason::Killed), Some(7)),
            CancelVerdict::RunOn
        );
        assert_eq!(verdict(OPEN_7, None, Some(6)), CancelVerdict::RunOn);
        assert_eq!(verdict(ENDED_7, None, Some(7)), CancelVerdict::RunOn);
    }

    #[test]
    fn shutdown_stops_whatever_the_call_state() {
        for call in [OPEN_7, ENDED_7] {
            assert_eq!(
                verdict(call, Some(CancelReason::Shutdown), Some(7)),
                CancelVerdict::Stop
            );
        }
    }

    /// A vCPU thread holding for open call 7, once it is waiting.
    fn holding() -> (Arc<Shared>, std::thread::JoinHandle<bool>) {
        let shared = Arc::new(Shared::default());
        shared.call.store(OPEN_7, Ordering::SeqCst);
        let vcpu = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || hold(&shared, OPEN_7))
        };
        while !shared.held.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        (shared, vcpu)
    }

    #[test]
    fn a_held_vcpu_runs_on_once_the_caller_releases_the_call() {
        let (shared, vcpu) = holding();
        shared.end_call(7);
        assert!(vcpu.join().unwrap(), "released, not stopped");
        // A call already ended is not waited for.
        assert!(hold(&shared, OPEN_7));
    }

    #[test]
    fn a_held_vcpu_leaves_when_the_sandbox_stops() {
        let (shared, vcpu) = holding();
        shared.lock().stop = true;
        shared.vcpu_cv.notify_all();
        assert!(!vcpu.join().unwrap(), "stopped");
    }
}
