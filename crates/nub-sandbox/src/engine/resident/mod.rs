//! Resident calls: the vCPU stays inside the guest on a thread the sandbox
//! owns, and calls cross through words in shared memory instead of VM
//! exits (`CallMode::Resident`). docs/resident.md is the protocol: the
//! words (`nub_host_common::resident`), who writes each, the orderings,
//! the park, wake and cancel races, and when the caller runs a call on its
//! own thread instead.
//!
//! This module owns both host halves:
//! - the **vCPU thread** ([`vcpu_main`]): while it holds the VM it runs
//!   `KVM_RUN` in a loop ([`drive`]) and handles the few exits resident
//!   mode still has: PARK (hand the VM back and sleep), NOTIFY (wake the
//!   blocked caller), LOG (drain, only while a call is open), a failure
//!   (record it, wake the caller, stop);
//! - the **caller** ([`Resident::call`]): rings the doorbell, spins on the
//!   completion word, serves host calls as their words change, and blocks
//!   when its spin window runs out; when no thread drives the VM (the
//!   guest parked, or the machine is too busy for two spinning threads) it
//!   runs the call itself, as an exit call ([`Resident::run_here`]).
//!
//! The VM has one place while nobody runs it: [`State::vm`]. Whoever runs
//! it takes it from there and holds a `Driver`
//! (`nub_hypervisor::VcpuInterrupt::drive`), so kills reach that thread.

use std::{
    hint::spin_loop,
    sync::{Arc, Weak, atomic::Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nub_host_common::{ports::ExitPort, resident::HOSTCALL_INLINE};
use nub_hypervisor::{HypervisorError, Vm, interrupt::CancelReason};

pub(crate) use self::words::spin_iterations;
use self::{
    policy::Policy,
    shared::Shared,
    vcpu::vcpu_main,
    words::{Words, serve_inline},
};
use crate::{
    call_guard::guarded,
    engine::{Engine, RestPoint},
    error::{HyperlightError, Result, Violation},
    exits::{Stop, classify, misplaced_port},
    guest_side::MemorySide,
    host_functions::HostFunctions,
};

/// How long the caller spins for a vCPU thread it handed the VM to, at
/// least: about what a thread wake-up and a VM entry take on these
/// machines. Past it the caller takes the VM back and runs the call itself.
const WAKE_SPIN: Duration = Duration::from_millis(1);

/// A caller asleep in [`Resident::block`] re-reads the words this often
/// even when nothing woke it: a guest that answers without the NOTIFY the
/// protocol asks for costs at most this much, never a hang.
const RECHECK: Duration = Duration::from_millis(5);

/// A resident sandbox's engine: its vCPU thread and the caller's state.
#[derive(Debug)]
pub(crate) struct Resident {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Sequence number of the last call.
    seq: u64,
    /// Sequence number of the last host call served.
    last_hostcall: u64,
    spin: Duration,
    policy: Policy,
}

impl Resident {
    /// Hands the booted `vm` to a new vCPU thread; `rest` numbers the
    /// calls on from where a persisted image's guest rested (zero after a
    /// boot).
    pub(crate) fn start(vm: Vm, side: MemorySide, spin: Duration, rest: RestPoint) -> Result<Self> {
        let interrupt = Arc::clone(vm.interrupt());
        let shared = Arc::new(Shared::new(Arc::clone(&interrupt), spin));
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        // A kill or deadline must also reach a side that sleeps outside
        // KVM_RUN: a parked VM is then run (its first run check sees the
        // cancel) and a blocked caller looks again.
        interrupt.set_waker(Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.on_cancel();
            }
        }));
        // The guest starts spinning: the VM is offered to the thread, and
        // the first call gives it time to take it.
        shared.put_vm(vm);
        shared.offer();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("nub-vcpu-{}", side.id))
            .spawn(move || vcpu_main(&thread_shared, &side))
            .map_err(HyperlightError::VcpuThread)?;
        Ok(Self {
            shared,
            thread: Some(thread),
            seq: rest.seq,
            last_hostcall: rest.last_hostcall,
            spin,
            policy: Policy {
                offered: true,
                ..Policy::default()
            },
        })
    }

    /// The failure that stopped the sandbox.
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
    fn next_call(&mut self) {
        self.seq += 1;
        self.shared.call.store(self.seq << 1 | 1, Ordering::SeqCst);
    }

    /// Runs the requests already queued in the input ring (numbered by
    /// [`Resident::next_call`]): rings the doorbell and waits for the
    /// completion word, serving host calls as they come, or runs the call
    /// on this thread when no thread runs the guest. `input_tail` is where
    /// host-call responses go.
    fn call(
        &mut self,
        side: &MemorySide,
        input_tail: usize,
        host: &mut HostFunctions,
    ) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(self.failure());
        }
        let words = Words::of(side)?;
        // Between calls the guest has no business asking the host anything.
        if words.hostcall_request.load(Ordering::Acquire) != self.last_hostcall {
            return Err(HyperlightError::ProtocolViolation(
                Violation::HostCallOutsideCall,
            ));
        }
        let seq = self.seq;
        if self.shared.idle.load(Ordering::SeqCst) && !self.policy.offered {
            // Nobody runs the guest (it parked, or the caller ran the last
            // call itself): one exit here beats waking a thread.
            if let Some(vm) = self.shared.take_vm_to_run() {
                return self.run_here(vm, &words, side, input_tail, host);
            }
        }
        let asked_release = self.shared.release.load(Ordering::Relaxed);
        if asked_release {
            // The guest NOTIFYs at completion: the vCPU thread then hands
            // the VM back (see `after_spun`).
            words.host_waiting.store(1, Ordering::SeqCst);
        }
        // Release: the request frames written before are visible to a guest
        // that reads the new doorbell. SeqCst: ordered before the loads of
        // the guest's state and of `idle` below (the park race).
        words.doorbell.store(seq, Ordering::SeqCst);
        let offered = std::mem::take(&mut self.policy.offered);
        let window = if offered {
            self.spin.max(WAKE_SPIN)
        } else {
            self.spin
        };
        // Taken at the first time check, 64 polls in: most calls are
        // answered before, and reading the clock costs as much as a poll.
        let mut polled_since: Option<Instant> = None;
        let mut first_look: Option<Instant> = None;
        let mut polls = 0u32;
        let result = loop {
            if words.completion.load(Ordering::Acquire) == seq {
                break Ok(());
            }
            let request = words.hostcall_request.load(Ordering::Acquire);
            if request != self.last_hostcall {
                if answered_first(&words, seq) {
                    break Ok(());
                }
                if let Err(e) = self.serve(&words, side, input_tail, host, request) {
                    break Err(e);
                }
                polled_since = None;
                continue;
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                break Err(self.failure());
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(64) {
                spin_loop();
                continue;
            }
            let now = Instant::now();
            let since = *polled_since.get_or_insert(now);
            let first = *first_look.get_or_insert(now);
            if self.shared.idle.load(Ordering::SeqCst)
                && (!offered || now.duration_since(first) >= WAKE_SPIN)
                && let Some(vm) = self.shared.take_vm_to_run()
            {
                // The guest parked (or the vCPU thread never took the VM
                // it was offered: spinning lost) run the rest of the call
                // here. The doorbell is rung; the guest sees it when it
                // resumes.
                if offered {
                    self.lost();
                }
                let result = self.run_here(vm, &words, side, input_tail, host);
                self.policy.last_here = None;
                return result;
            }
            if now.duration_since(since) < window {
                spin_loop();
                continue;
            }
            self.block(&words, seq);
            polled_since = None;
        };
        if asked_release {
            words.host_waiting.store(0, Ordering::SeqCst);
        }
        // The first call after an offer pays the vCPU thread's wake-up:
        // it says nothing about whether spinning wins.
        if result.is_ok() && !offered {
            self.after_spun(first_look.map(|t| t.elapsed()));
        }
        result
    }

    /// Serves host call `request`, which the guest announced in the
    /// host-call words: inline in the request's line, or as a frame in the
    /// output ring. The answer goes inline in the response's line when it
    /// fits, else as a frame at `input_tail`; [`HOSTCALL_ANSWER`] says
    /// which, and is written before the response word that publishes it.
    fn serve(
        &mut self,
        words: &Words<'_>,
        side: &MemorySide,
        input_tail: usize,
        host: &mut HostFunctions,
        request: u64,
    ) -> Result<()> {
        let offset = words.hostcall_offset.load(Ordering::Acquire);
        let answer = if offset == HOSTCALL_INLINE {
            serve_inline(side, words, input_tail, host)?
        } else {
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            side.serve_host_call(offset, input_tail, host)?;
            0
        };
        words.hostcall_answer.store(answer, Ordering::Relaxed);
        self.last_hostcall = request;
        words.hostcall_response.store(request, Ordering::SeqCst);
        Ok(())
    }

    /// Runs call `self.seq` on this thread, as an exit call: `HOST_WAITING
    /// = 1` makes the guest exit through NOTIFY when it has answered (and
    /// for each host call), so the call costs one `KVM_RUN` (plus one per
    /// host call), the same as in exit mode. The guest stays stopped at
    /// that NOTIFY until the next call (or until the vCPU thread is handed
    /// the VM).
    fn run_here(
        &mut self,
        mut vm: Vm,
        words: &Words<'_>,
        side: &MemorySide,
        input_tail: usize,
        host: &mut HostFunctions,
    ) -> Result<()> {
        let started = Instant::now();
        let seq = self.seq;
        let interrupt = Arc::clone(vm.interrupt());
        let driver = interrupt.drive();
        words.host_waiting.store(1, Ordering::SeqCst);
        words.doorbell.store(seq, Ordering::SeqCst);
        let result = loop {
            if words.completion.load(Ordering::Acquire) == seq {
                break Ok(());
            }
            let request = words.hostcall_request.load(Ordering::Acquire);
            if request != self.last_hostcall {
                if answered_first(words, seq) {
                    break Ok(());
                }
                match self.serve(words, side, input_tail, host, request) {
                    Ok(()) => continue,
                    Err(e) => break Err(e),
                }
            }
            let exit = match self.shared.run(&mut vm) {
                Ok(exit) => exit,
                // Stopped for good (the sandbox is failing).
                Err(HypervisorError::Canceled(CancelReason::Shutdown)) => {
                    break Err(self.failure());
                }
                // A cancel after the guest answered does not change the
                // outcome (as in exit mode, once the answer is in).
                Err(HypervisorError::Canceled(_))
                    if words.completion.load(Ordering::Acquire) == seq =>
                {
                    break Ok(());
                }
                Err(e) => break Err(e.into()),
            };
            match classify(exit, || side.report_error()) {
                // NOTIFY: an answer or a host call; PARK: the guest waits
                // for a word this loop is about to look at.
                Stop::Port(ExitPort::Notify | ExitPort::Park, _) => {}
                Stop::Port(ExitPort::Log, _) => {
                    if let Err(e) = side.drain_log() {
                        break Err(e);
                    }
                }
                Stop::Port(other, _) => break Err(misplaced_port(other, "a resident call")),
                Stop::Failed(e) => break Err(e),
            }
        };
        words.host_waiting.store(0, Ordering::SeqCst);
        drop(driver);
        self.shared.put_vm(vm);
        if result.is_ok() {
            self.after_here(started);
        }
        result
    }

    /// After a call this thread ran itself ([`Policy::after_here`]).
    fn after_here(&mut self, started: Instant) {
        if self.policy.after_here(started, Instant::now(), self.spin) {
            self.shared.offer();
        }
    }

    /// After a call the guest answered while spinning
    /// ([`Policy::after_spun`]).
    fn after_spun(&mut self, waited: Option<Duration>) {
        if self.policy.after_spun(waited, Instant::now, self.spin) {
            self.shared.release.store(true, Ordering::Relaxed);
        }
    }

    /// Spinning lost ([`Policy::lost`]).
    fn lost(&mut self) {
        self.policy.lost(Instant::now());
    }

    /// Sleeps until the guest notifies (it answered or made a host call),
    /// the VM is handed back, a cancel lands or the vCPU thread stops, and
    /// at most [`RECHECK`]. Raising `HOST_WAITING` and then re-checking the
    /// words pairs with the guest's "write the word, then read
    /// `HOST_WAITING`": one side always sees the other.
    fn block(&self, words: &Words<'_>, seq: u64) {
        words.host_waiting.store(1, Ordering::SeqCst);
        let ready = words.completion.load(Ordering::SeqCst) == seq
            || words.hostcall_request.load(Ordering::SeqCst) != self.last_hostcall
            || self.shared.stopped.load(Ordering::SeqCst)
            || self.shared.idle.load(Ordering::SeqCst);
        if !ready {
            let mut state = self.shared.lock();
            if !state.notified && state.failure.is_none() && state.vm.is_none() {
                state = self
                    .shared
                    .caller_cv
                    .wait_timeout(state, RECHECK)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            state.notified = false;
        }
        words.host_waiting.store(0, Ordering::SeqCst);
    }

    /// Ends the call for the vCPU thread (its cancel, if any, is already
    /// cleared: the caller ended the call's `CallGuard` first), and lets a
    /// vCPU thread held by a late cancel run on. The store and the load of
    /// `held` pair with [`hold`]'s "raise `held`, then re-read the call":
    /// either the vCPU thread sees the call ended, or the caller sees it
    /// holding and notifies it under the lock it waits with.
    fn release(&self) {
        self.shared.end_call(self.seq);
    }

    /// Stops the vCPU thread and joins it, once: sets the stop flag, wakes
    /// a parked or held thread and kicks a running one out of `KVM_RUN`
    /// (`VcpuInterrupt::shutdown`: a signal to the thread driving the VM,
    /// plus the pending flag). Returns the VM (`None` if it was stopped
    /// already, or the thread panicked while running the guest).
    fn stop(&mut self) -> Option<Vm> {
        let thread = self.thread.take()?;
        self.shared.lock().stop = true;
        self.shared.vcpu_cv.notify_all();
        self.shared.interrupt.shutdown();
        // A panic on the thread (a bug) loses the VM with it: never pooled.
        thread.join().ok()?;
        self.shared.take_vm()
    }
}

/// Whether call `seq` was answered before the host-call request just seen:
/// the guest publishes a call's completion and only then any later word,
/// so a request found after the completion (re-read after the request's
/// Acquire load) was made outside the call. The call has its answer; the
/// next call refuses the stray request (`HostCallOutsideCall`).
fn answered_first(words: &Words<'_>, seq: u64) -> bool {
    words.completion.load(Ordering::Acquire) == seq
}

impl Engine for Resident {
    fn run_call(
        &mut self,
        side: &MemorySide,
        input_tail: usize,
        host: &mut HostFunctions,
        limit: Option<Duration>,
    ) -> Result<()> {
        self.next_call();
        let interrupt = Arc::clone(&self.shared.interrupt);
        let result = guarded(&interrupt, side, limit, || {
            self.call(side, input_tail, host)
        });
        // After the call guard ended (which cleared any cancel).
        self.release();
        result
    }

    fn exit_count(&self) -> u64 {
        self.shared.exits.load(Ordering::Relaxed)
    }

    /// The vCPU thread stopped on a failure (the guest faulted, broke the
    /// protocol or never parked): the next call reports it.
    fn failed(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    fn stop(mut self: Box<Self>) -> Option<Vm> {
        Resident::stop(&mut self)
    }

    /// Waits (at most `wait`) until the VM is home with nobody running
    /// it: the guest parked, or stopped at the NOTIFY of a call the caller
    /// ran. The VM is kept home meanwhile (no offer to the vCPU thread),
    /// and stays there after `f`: the next call runs it on the caller's
    /// thread, as after any call the caller ran.
    fn at_rest(
        &mut self,
        wait: Duration,
        f: &mut dyn FnMut(&mut Vm) -> Result<()>,
    ) -> Result<RestPoint> {
        let deadline = Instant::now() + wait;
        let mut vm = loop {
            if self.shared.stopped.load(Ordering::Acquire) {
                return Err(self.failure());
            }
            if let Some(vm) = self.shared.take_vm_to_run() {
                break vm;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(crate::error::ImageError::NotAtRest(wait).into());
            }
            let state = self.shared.lock();
            if state.vm.is_none() && state.failure.is_none() {
                let _ = self
                    .shared
                    .caller_cv
                    .wait_timeout(state, (deadline - now).min(RECHECK));
            }
        };
        let result = f(&mut vm);
        self.shared.put_vm(vm);
        result.map(|()| RestPoint {
            seq: self.seq,
            last_hostcall: self.last_hostcall,
        })
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        // The VM drops here, after its thread has ended (the sandbox takes
        // it with `stop` first, to pool it; then this does nothing).
        drop(self.stop());
    }
}

mod policy;
mod shared;
mod vcpu;
mod watch;
mod words;

#[cfg(test)]
mod tests;
