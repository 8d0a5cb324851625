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
        COMPLETION, DOORBELL, HOST_WAITING, HOSTCALL_ANSWER, HOSTCALL_ANSWER_DATA, HOSTCALL_INLINE,
        HOSTCALL_INLINE_CALL, HOSTCALL_INLINE_DATA, HOSTCALL_OFFSET, HOSTCALL_REQUEST,
        HOSTCALL_RESPONSE, INLINE_ANSWER_MAX, INLINE_REQUEST_MAX, inline_answer, split_inline_call,
    },
};
use nub_hypervisor::{HypervisorError, VcpuInterrupt, Vm, interrupt::CancelReason};

use crate::{
    call_guard::guarded,
    engine::Engine,
    error::{HyperlightError, Result},
    exits::{Stop, classify, misplaced_port},
    guest_side::{MemorySide, call_host},
    host_functions::HostFunctions,
    watchdog::{self, Watched},
};

/// How long the caller spins for a vCPU thread it handed the VM to, at
/// least: about what a thread wake-up and a VM entry take on these
/// machines. Past it the caller takes the VM back and runs the call itself.
const WAKE_SPIN: Duration = Duration::from_millis(1);

/// A caller asleep in [`Resident::block`] re-reads the words this often
/// even when nothing woke it: a guest that answers without the NOTIFY the
/// protocol asks for costs at most this much, never a hang.
const RECHECK: Duration = Duration::from_millis(5);

/// How often the park watch looks at a guest the vCPU thread runs.
const WATCH_PERIOD: Duration = Duration::from_millis(10);

/// The vCPU-thread CPU time a guest may run with no call open before it is
/// stopped and the sandbox poisoned: its spin window four times over (its
/// polls may run slower than the host's calibration) plus 20 ms (a few
/// exits and scheduler noise). An honest guest parks after one window.
pub(crate) fn park_limit(spin: Duration) -> Duration {
    spin.saturating_mul(4)
        .saturating_add(Duration::from_millis(20))
}

/// What the caller and the vCPU thread share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The vCPU thread waits here for the VM, or while held.
    vcpu_cv: Condvar,
    /// The caller waits here while blocked.
    caller_cv: Condvar,
    /// Mirror of `state.failure.is_some()` for the caller's spin loop.
    stopped: AtomicBool,
    /// Mirror of `state.vm.is_some()`: no thread runs the guest now.
    idle: AtomicBool,
    /// The vCPU thread runs the guest ([`drive`]); the park watch looks
    /// only then.
    driving: AtomicBool,
    /// The caller asks the vCPU thread to hand the VM back at its next
    /// NOTIFY (the machine is too busy for spinning; see
    /// [`Resident::after_spun`]).
    release: AtomicBool,
    /// VM exits so far.
    exits: AtomicU64,
    /// The caller's call: `seq << 1 | 1` from [`Resident::next_call`] until
    /// [`Resident::release`] (call `seq` is open), `seq << 1` after it
    /// ended. Written by the caller only.
    call: AtomicU64,
    /// The vCPU thread waits in [`hold`] for the caller to end a call (see
    /// [`CancelVerdict::Hold`]); the caller then notifies `vcpu_cv`.
    held: AtomicBool,
    /// The park watch's state (see [`Shared::check`]).
    watch: Mutex<Watch>,
    /// The VM's interrupt state (to stop a guest that never parks).
    interrupt: Arc<VcpuInterrupt>,
    /// See [`park_limit`].
    park_limit: Duration,
    /// The vCPU thread's CPU clock (set by the thread when it starts).
    cpu_clock: OnceLock<libc::clockid_t>,
}

#[derive(Debug, Default)]
struct State {
    /// The VM while no thread runs it: the guest is stopped in an exit
    /// (PARK, or NOTIFY after a call the caller ran).
    vm: Option<Vm>,
    /// The VM in `vm` is offered to the vCPU thread: it takes it and lets
    /// the guest spin.
    wake: bool,
    /// The guest asked (NOTIFY) to wake the blocked caller, or something
    /// else the caller must look at happened (a cancel, the VM handed back).
    notified: bool,
    /// The sandbox is being dropped or was poisoned: the vCPU thread ends.
    stop: bool,
    /// Why the vCPU thread stopped; the sandbox is dead.
    failure: Option<HyperlightError>,
}

/// The park watch: what the last check saw.
#[derive(Debug, Default)]
struct Watch {
    /// A check is scheduled with the watchdog.
    armed: bool,
    /// [`Shared::call`] at the last check.
    call: u64,
    /// The vCPU thread's CPU time at the last check.
    cpu: Duration,
    /// The CPU time at which the guest was first seen running with no call
    /// open and no call since.
    idle_from: Option<Duration>,
}

impl Shared {
    fn new(interrupt: Arc<VcpuInterrupt>, spin: Duration) -> Self {
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

    /// Wakes the caller (it re-reads the words and the state).
    fn notify_caller(&self) {
        self.lock().notified = true;
        self.caller_cv.notify_all();
    }

    /// A cancel was recorded: wake whichever side sleeps, so a parked VM is
    /// run (and stopped by the cancel) and a blocked caller looks again.
    fn on_cancel(&self) {
        let mut state = self.lock();
        state.notified = true;
        self.vcpu_cv.notify_all();
        self.caller_cv.notify_all();
    }

    /// Records why the sandbox died (the first reason wins) and wakes the
    /// caller.
    fn fail(&self, failure: HyperlightError) {
        let mut state = self.lock();
        state.failure.get_or_insert(failure);
        self.stopped.store(true, Ordering::Release);
        self.caller_cv.notify_all();
    }

    /// Puts the VM back where nobody runs it, and wakes a caller waiting
    /// for it.
    fn put_vm(&self, vm: Vm) {
        self.exits.store(vm.exit_count(), Ordering::Relaxed);
        let mut state = self.lock();
        state.vm = Some(vm);
        self.idle.store(true, Ordering::SeqCst);
        state.notified = true;
        self.caller_cv.notify_all();
    }

    /// Takes the VM if nobody runs it (withdrawing an offer to the vCPU
    /// thread).
    fn take_vm(&self) -> Option<Vm> {
        let mut state = self.lock();
        let vm = state.vm.take();
        if vm.is_some() {
            state.wake = false;
            self.idle.store(false, Ordering::SeqCst);
        }
        vm
    }

    /// Offers the idle VM to the vCPU thread.
    fn offer(&self) {
        let mut state = self.lock();
        if state.vm.is_some() {
            state.wake = true;
            self.vcpu_cv.notify_all();
        }
    }

    /// Schedules the park watch unless it is scheduled already.
    fn watch_start(self: &Arc<Self>) {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if watch.armed {
            return;
        }
        let weak: Weak<dyn Watched> = Arc::downgrade(self) as Weak<dyn Watched>;
        if watchdog::watch(Instant::now() + WATCH_PERIOD, weak).is_ok() {
            watch.armed = true;
            self.watch_reset(&mut watch);
        }
        // Without a watchdog thread (the process is out of threads) the
        // next call's deadline cannot be armed either and fails loudly.
    }
}

impl Shared {
    /// Starts a park watch afresh: nothing seen yet.
    fn watch_reset(&self, watch: &mut Watch) {
        watch.idle_from = None;
        watch.call = self.call.load(Ordering::SeqCst);
        watch.cpu = self
            .cpu_clock
            .get()
            .and_then(|c| thread_cpu(*c))
            .unwrap_or_default();
    }
}

/// The CPU time of the thread whose CPU clock is `clock`.
fn thread_cpu(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; the clock id of a thread that
    // has ended is an error return, not undefined behaviour.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// The current thread's CPU clock.
fn own_cpu_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self is the live current thread and `clock` a valid
    // out pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    (rc == 0).then_some(clock)
}

impl Watched for Shared {
    /// The park watch: a guest the vCPU thread runs while no call is open
    /// (and none was since the last look) must park within
    /// [`park_limit`] of CPU time, or it is stopped for good and the
    /// sandbox fails with a protocol violation.
    fn check(&self, now: Instant) -> Option<Instant> {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if !self.driving.load(Ordering::SeqCst) || self.stopped.load(Ordering::SeqCst) {
            watch.armed = false;
            return None;
        }
        let call = self.call.load(Ordering::SeqCst);
        let cpu = thread_cpu(*self.cpu_clock.get()?)?;
        if call & 1 == 0 && call == watch.call {
            let last = watch.cpu;
            let from = *watch.idle_from.get_or_insert(last);
            let ran = cpu.saturating_sub(from);
            if ran > self.park_limit {
                watch.armed = false;
                drop(watch);
                self.fail(HyperlightError::ProtocolViolation(format!(
                    "the guest kept running for {ran:?} of CPU time with no call open \
                     (it must park within {:?})",
                    self.park_limit
                )));
                self.interrupt.shutdown();
                return None;
            }
        } else {
            watch.idle_from = None;
        }
        watch.call = call;
        watch.cpu = cpu;
        Some(now + WATCH_PERIOD)
    }
}

/// The resident protocol's words (the control block's, and the doorbell and
/// completion in the ring headers), borrowed from guest memory.
struct Words<'a> {
    doorbell: &'a AtomicU64,
    completion: &'a AtomicU64,
    host_waiting: &'a AtomicU64,
    hostcall_request: &'a AtomicU64,
    hostcall_offset: &'a AtomicU64,
    hostcall_inline_call: &'a AtomicU64,
    hostcall_response: &'a AtomicU64,
    hostcall_answer: &'a AtomicU64,
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
            host_waiting: word(HOST_WAITING)?,
            hostcall_request: word(HOSTCALL_REQUEST)?,
            hostcall_offset: word(HOSTCALL_OFFSET)?,
            hostcall_inline_call: word(HOSTCALL_INLINE_CALL)?,
            hostcall_response: word(HOSTCALL_RESPONSE)?,
            hostcall_answer: word(HOSTCALL_ANSWER)?,
        })
    }
}

/// Serves an inline host call: copies its fn id, length and payload out of
/// the request's line once, checks the length, runs the host function and
/// writes a small answer into the response's line (a larger one as a frame
/// at `input_tail`). Returns the [`HOSTCALL_ANSWER`] word to publish.
fn serve_inline(
    side: &MemorySide,
    words: &Words<'_>,
    input_tail: usize,
    host: &mut HostFunctions,
) -> Result<u64> {
    let (fn_id, len) = split_inline_call(words.hostcall_inline_call.load(Ordering::Acquire));
    if len > INLINE_REQUEST_MAX {
        return Err(HyperlightError::ProtocolViolation(format!(
            "inline host-call request of {len} bytes (at most {INLINE_REQUEST_MAX})"
        )));
    }
    let control = side.layout.control.start;
    let mut buffer = [0u8; INLINE_REQUEST_MAX];
    let payload = buffer.get_mut(..len).unwrap_or_default();
    side.memory
        .read(control + HOSTCALL_INLINE_DATA as u64, payload)
        .map_err(HyperlightError::from)?;
    let (status, answer) = call_host(host, fn_id, payload)?;
    if answer.len() <= INLINE_ANSWER_MAX {
        side.memory
            .write(control + HOSTCALL_ANSWER_DATA as u64, &answer)
            .map_err(HyperlightError::from)?;
        Ok(inline_answer(status as u32, answer.len()))
    } else {
        side.write_host_answer(fn_id, status, &answer, input_tail)?;
        Ok(0)
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

/// How the caller picks between letting the guest spin on the vCPU thread
/// and running calls itself (docs/resident.md, *The loaded-machine path*).
#[derive(Debug, Default)]
struct Policy {
    /// When the last call the caller ran itself ended.
    last_here: Option<Instant>,
    /// What a call the caller runs itself costs (a moving average).
    here_cost: Option<Duration>,
    /// No VM is offered to the vCPU thread before this.
    backoff_until: Option<Instant>,
    /// The current backoff (doubles with every spun call that lost).
    backoff: Duration,
    /// The VM was offered to the vCPU thread and the next call should give
    /// it time to take it ([`WAKE_SPIN`]).
    offered: bool,
}

/// The shortest and longest backoff after a spun call that lost to an
/// exit call.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    /// Hands the booted `vm` to a new vCPU thread.
    pub(crate) fn start(vm: Vm, side: MemorySide, spin: Duration) -> Result<Self> {
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
            seq: 0,
            last_hostcall: 0,
            spin,
            policy: Policy {
                offered: true,
                ..Policy::default()
            },
        })
    }

    /// VM exits since the VM was created.
    fn exit_count(&self) -> u64 {
        self.shared.exits.load(Ordering::Relaxed)
    }

    /// The vCPU thread stopped on a failure (the guest faulted, broke the
    /// protocol or never parked): the next call reports it.
    fn failed(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
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
                "the guest made a host call with no call open".into(),
            ));
        }
        let seq = self.seq;
        if self.shared.idle.load(Ordering::SeqCst) && !self.policy.offered {
            // Nobody runs the guest (it parked, or the caller ran the last
            // call itself): one exit here beats waking a thread.
            if let Some(vm) = self.shared.take_vm() {
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
                && let Some(vm) = self.shared.take_vm()
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
                match self.serve(words, side, input_tail, host, request) {
                    Ok(()) => continue,
                    Err(e) => break Err(e),
                }
            }
            let exit = match vm.run() {
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

    /// After a call this thread ran itself: remembers what it cost, and if
    /// calls come back to back (this one began within a spin window of the
    /// last one's end) and spinning has not lost lately, offers the VM to
    /// the vCPU thread so the guest spins for the next call.
    fn after_here(&mut self, started: Instant) {
        let now = Instant::now();
        let cost = now.duration_since(started);
        self.policy.here_cost = Some(match self.policy.here_cost {
            Some(avg) => (avg * 7 + cost) / 8,
            None => cost,
        });
        let back_to_back = self
            .policy
            .last_here
            .is_some_and(|end| started.duration_since(end) < self.spin);
        let backed_off = self.policy.backoff_until.is_some_and(|until| now < until);
        self.policy.last_here = Some(now);
        if back_to_back && !backed_off {
            self.shared.offer();
            self.policy.offered = true;
        }
    }

    /// After a call the guest answered while spinning (not the first after
    /// an offer, which pays the vCPU thread's wake-up). `waited` is how
    /// long past the first 64 polls it took (`None`: answered before). A
    /// call that took longer than a call run here would have (or than the
    /// spin window, if longer) lost: the machine cannot schedule both
    /// threads at once. Then the vCPU thread is asked to hand the VM back,
    /// and no VM is offered to it for a backoff that doubles with each
    /// loss (1 ms to 1 s) and halves with each win.
    fn after_spun(&mut self, waited: Option<Duration>) {
        let Some(waited) = waited else {
            self.policy.backoff /= 2;
            return;
        };
        let par = self.policy.here_cost.unwrap_or(self.spin).max(self.spin);
        if waited <= par {
            self.policy.backoff /= 2;
            return;
        }
        self.lost();
        self.shared.release.store(true, Ordering::Relaxed);
    }

    /// Spinning lost (a spun call was slow, or the vCPU thread did not
    /// take the VM it was offered in [`WAKE_SPIN`]): no VM is offered for
    /// a backoff that doubles with each loss.
    fn lost(&mut self) {
        self.policy.backoff = (self.policy.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.policy.backoff_until = Some(Instant::now() + self.policy.backoff);
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
        Resident::exit_count(self)
    }

    fn failed(&self) -> bool {
        Resident::failed(self)
    }

    fn stop(mut self: Box<Self>) -> Option<Vm> {
        Resident::stop(&mut self)
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        // The VM drops here, after its thread has ended (the sandbox takes
        // it with `stop` first, to pool it; then this does nothing).
        drop(self.stop());
    }
}

/// The vCPU thread: takes the VM whenever it is offered and runs the guest
/// until it parks, the caller asks for the VM back, the guest fails or the
/// sandbox stops. The VM always goes back to [`State::vm`].
fn vcpu_main(shared: &Arc<Shared>, side: &MemorySide) {
    if let Some(clock) = own_cpu_clock() {
        let _ = shared.cpu_clock.set(clock);
    }
    while let Some(mut vm) = wait_for_vm(shared) {
        let end = drive(&mut vm, shared, side);
        shared.put_vm(vm);
        match end {
            Drive::Released => {}
            Drive::Stopped => break,
            Drive::Failed(e) => {
                shared.fail(e);
                break;
            }
        }
    }
}

/// Waits until the VM is offered (`Some`) or the sandbox stops (`None`).
fn wait_for_vm(shared: &Shared) -> Option<Vm> {
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
enum Drive {
    /// The guest stopped in an exit it can resume from (PARK, or NOTIFY
    /// when the caller asked for the VM): the VM goes back to the caller.
    Released,
    /// The sandbox stops (dropped, poisoned, or the guest was evicted).
    Stopped,
    /// The guest failed.
    Failed(HyperlightError),
}

/// Runs the guest on the vCPU thread (see [`vcpu_main`]).
fn drive(vm: &mut Vm, shared: &Arc<Shared>, side: &MemorySide) -> Drive {
    let interrupt = Arc::clone(vm.interrupt());
    let _driver = interrupt.drive();
    shared.driving.store(true, Ordering::SeqCst);
    shared.watch_start();
    let end = loop {
        let exit = match vm.run() {
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
                        "the guest logged with no call open".into(),
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
enum CancelVerdict {
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
mod tests;
