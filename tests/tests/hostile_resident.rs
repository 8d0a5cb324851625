//! The hostile guest against the resident protocol's words (ids 19–23):
//! late completions without a NOTIFY, guests that answer and then keep
//! running, spinning or logging with no call open, a bad status followed
//! by a log flood, and host-call requests announced without a NOTIFY.
//! Each case runs in both call modes and asserts a bounded time, a typed
//! error, poisoning where the guest cannot be trusted, and that the
//! sandbox's vCPU thread goes quiet afterwards (`/proc/self/task/*/stat`).

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use nub_sandbox::{
    CallMode, GuestBinary, HyperlightError, MultiUseSandbox, SandboxConfiguration,
    UninitializedSandbox, Violation,
};
use nub_tests::{HOSTILE_GUEST, hostile_fn_id as h, require_kvm, thread_stat};

/// The generous bound every call here must end within (the protocol's own
/// bounds are a few ms past a deadline; this leaves room for a loaded CI
/// machine).
const BOUND: Duration = Duration::from_secs(2);

/// The deadline the cases that need one run with.
const DEADLINE: Duration = Duration::from_millis(300);

/// A hostile sandbox in `mode` with `deadline` per call.
fn hostile_in(mode: CallMode, deadline: Option<Duration>) -> MultiUseSandbox {
    require_kvm();
    let cfg = SandboxConfiguration::default()
        .with_call_mode(mode)
        .with_max_execution_time(deadline);
    UninitializedSandbox::new(GuestBinary::FilePath(HOSTILE_GUEST.into()), Some(cfg))
        .expect("load the hostile guest")
        .evolve()
        .expect("boot the hostile guest")
}

fn resident(deadline: Option<Duration>) -> MultiUseSandbox {
    hostile_in(CallMode::resident(), deadline)
}

fn exit_mode(deadline: Option<Duration>) -> MultiUseSandbox {
    hostile_in(CallMode::Exit, deadline)
}

/// Runs one call and checks it ended within [`BOUND`].
fn timed_call(
    s: &mut MultiUseSandbox,
    fn_id: u32,
    payload: &[u8],
) -> Result<Vec<u8>, HyperlightError> {
    let start = Instant::now();
    let result = s.call_raw(fn_id, payload);
    let took = start.elapsed();
    assert!(took < BOUND, "fn {fn_id} took {took:?}: {result:?}");
    result
}

/// The name of a sandbox's vCPU thread.
fn vcpu_thread(s: &MultiUseSandbox) -> String {
    format!("nub-vcpu-{}", s.id())
}

/// The thread named `name` is gone (a joined thread may linger in
/// `/proc` for a moment while the kernel finishes its exit).
fn thread_ends(name: &str) {
    let start = Instant::now();
    while let Some(stat) = thread_stat(name) {
        assert!(start.elapsed() < BOUND, "{name} still exists: {stat:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A resident sandbox whose guest misbehaved: within [`BOUND`] it is
/// poisoned (its vCPU thread stopped the guest) or nothing runs the guest
/// (it stopped in an exit), and from then on its vCPU thread, if it still
/// exists, uses under 5 % of a core.
fn goes_quiet(s: &MultiUseSandbox, thread: &str) {
    let start = Instant::now();
    while !s.is_poisoned() && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some((_, before)) = thread_stat(thread) else {
        return;
    };
    std::thread::sleep(Duration::from_secs(1));
    let after = thread_stat(thread).map_or(before, |(_, ticks)| ticks);
    // Clock ticks are 1/100 s: 5 ticks in a second is 5 % of a core.
    assert!(
        after.saturating_sub(before) <= 5,
        "{thread} used {} ticks in a second",
        after.saturating_sub(before)
    );
}

/// The guest ran on with no call open: the next call fails with a typed
/// error (the park watch's violation, or the deadline of a call the guest
/// never took), and the sandbox is poisoned.
fn next_call_fails(s: &mut MultiUseSandbox) {
    match timed_call(s, h::ECHO, b"again") {
        Err(HyperlightError::ProtocolViolation(_)) => {}
        Err(HyperlightError::ExecutionTimeout(d)) => assert_eq!(d, DEADLINE),
        other => panic!("expected a typed failure, got {other:?}"),
    }
    assert!(s.is_poisoned());
    assert!(matches!(
        s.call_raw(h::ECHO, b"x"),
        Err(HyperlightError::PoisonedSandbox)
    ));
}

#[test]
fn hostile_late_completion_without_notify_is_seen_while_the_caller_sleeps() {
    // The guest answers ~100 ms after the caller went to sleep and never
    // NOTIFYs: the call still ends with its answer, well before its
    // deadline, and the guest spinning on afterwards is stopped.
    let mut s = resident(Some(Duration::from_secs(1)));
    let thread = vcpu_thread(&s);
    assert_eq!(
        timed_call(&mut s, h::LATE_COMPLETION, &1000u32.to_le_bytes()).unwrap(),
        b"late"
    );
    goes_quiet(&s, &thread);
    // The deadline of the next call (1 s) is not DEADLINE: only the
    // violation can come back here, or the 1 s deadline.
    match timed_call(&mut s, h::ECHO, b"again") {
        Err(HyperlightError::ProtocolViolation(_) | HyperlightError::ExecutionTimeout(_)) => {}
        other => panic!("expected a typed failure, got {other:?}"),
    }
    assert!(s.is_poisoned());
}

#[test]
fn hostile_late_completion_after_the_deadline_ends_the_call_at_the_deadline() {
    // The answer would come ~10 s after the caller sleeps: the deadline
    // ends the call, and no late completion can hold it.
    for mut s in [resident(Some(DEADLINE)), exit_mode(Some(DEADLINE))] {
        let thread = vcpu_thread(&s);
        let result = timed_call(&mut s, h::LATE_COMPLETION, &100_000u32.to_le_bytes());
        ends_at_the_deadline(&s, result);
        assert_eq!(
            thread_stat(&thread),
            None,
            "poisoning stopped the vCPU thread"
        );
    }
}

#[test]
fn hostile_late_completion_is_ended_by_a_kill() {
    for mut s in [resident(None), exit_mode(None)] {
        let handle = s.interrupt_handle();
        let (tx, rx) = mpsc::channel();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            // A kill lands only while the call runs; retry until it does.
            while !handle.kill() {
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.send(Instant::now()).unwrap();
        });
        let result = s.call_raw(h::LATE_COMPLETION, &100_000u32.to_le_bytes());
        let returned = Instant::now();
        killer.join().unwrap();
        let killed = rx.recv().unwrap();
        assert!(
            returned.duration_since(killed) < BOUND,
            "returned {:?} after the kill",
            returned.duration_since(killed)
        );
        assert!(
            matches!(result, Err(HyperlightError::Canceled)),
            "{result:?}"
        );
        assert!(s.is_poisoned());
    }
}

/// The call ended at its [`DEADLINE`], and the sandbox is poisoned.
fn ends_at_the_deadline(s: &MultiUseSandbox, result: Result<Vec<u8>, HyperlightError>) {
    match result {
        Err(HyperlightError::ExecutionTimeout(d)) => assert_eq!(d, DEADLINE),
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert!(s.is_poisoned());
}

/// A resident guest that answers `fn_id` with `b"answered"` and then keeps
/// running with no call open: it is stopped, goes quiet, and the next call
/// fails. In exit mode the guest cannot answer without exiting, so the
/// call runs until its deadline.
fn answers_then_runs_on(fn_id: u32) {
    let mut s = resident(Some(DEADLINE));
    let thread = vcpu_thread(&s);
    assert_eq!(timed_call(&mut s, fn_id, b"").unwrap(), b"answered");
    goes_quiet(&s, &thread);
    next_call_fails(&mut s);
    let mut s = exit_mode(Some(DEADLINE));
    let result = timed_call(&mut s, fn_id, b"");
    ends_at_the_deadline(&s, result);
}

#[test]
fn hostile_answer_then_spin_is_stopped_and_poisoned() {
    answers_then_runs_on(h::ANSWER_THEN_SPIN);
}

#[test]
fn hostile_answer_then_log_flood_is_stopped_and_poisoned() {
    // In exit mode the flood is drained while the call runs.
    answers_then_runs_on(h::ANSWER_THEN_LOG_FLOOD);
}

#[test]
fn hostile_bad_status_then_log_flood_poisons_and_stops_the_guest_at_once() {
    for (in_resident, mut s) in [
        (true, resident(Some(DEADLINE))),
        (false, exit_mode(Some(DEADLINE))),
    ] {
        let thread = vcpu_thread(&s);
        match timed_call(&mut s, h::BAD_STATUS_THEN_LOG_FLOOD, b"") {
            Err(HyperlightError::ProtocolViolation(Violation::BadStatus { fn_id, status })) => {
                assert_eq!(
                    (fn_id, status),
                    (h::BAD_STATUS_THEN_LOG_FLOOD, h::BAD_STATUS)
                );
            }
            // Resident: the guest floods its log right after answering,
            // while the caller drains the call's records. A drain that
            // meets a record still being written reports the flood (a log
            // outside its call) before the status is read: also a
            // violation, also poisoning.
            Err(HyperlightError::ProtocolViolation(Violation::Log(_))) if in_resident => {}
            other => panic!("expected a protocol violation, got {other:?}"),
        }
        assert!(s.is_poisoned());
        // Poisoning joined the vCPU thread: nothing drains the flood.
        thread_ends(&thread);
    }
}

#[test]
fn hostile_host_call_request_without_notify_in_a_call_is_a_typed_error() {
    // The request names an offset no frame can have: served while the
    // caller sleeps (a violation), or, if the caller runs the call on its
    // own thread, never seen before the deadline.
    let mut s = resident(Some(DEADLINE));
    let thread = vcpu_thread(&s);
    match timed_call(&mut s, h::HOSTCALL_WITHOUT_NOTIFY, &[0]) {
        Err(HyperlightError::ProtocolViolation(_)) => {}
        Err(HyperlightError::ExecutionTimeout(d)) => assert_eq!(d, DEADLINE),
        other => panic!("expected a typed failure, got {other:?}"),
    }
    assert!(s.is_poisoned());
    thread_ends(&thread);
    let mut s = exit_mode(Some(DEADLINE));
    match timed_call(&mut s, h::HOSTCALL_WITHOUT_NOTIFY, &[0]) {
        Err(HyperlightError::ExecutionTimeout(d)) => assert_eq!(d, DEADLINE),
        other => panic!("expected the deadline, got {other:?}"),
    }
}

#[test]
fn hostile_host_call_request_after_the_answer_fails_the_next_call() {
    let mut s = resident(Some(DEADLINE));
    let thread = vcpu_thread(&s);
    assert_eq!(
        timed_call(&mut s, h::HOSTCALL_WITHOUT_NOTIFY, &[1]).unwrap(),
        b"answered"
    );
    goes_quiet(&s, &thread);
    next_call_fails(&mut s);
}

#[test]
fn hostile_inline_host_call_claiming_more_than_its_line_is_a_protocol_violation() {
    let mut s = resident(Some(DEADLINE));
    let thread = vcpu_thread(&s);
    match timed_call(&mut s, h::HOSTCALL_WITHOUT_NOTIFY, &[2]) {
        Err(HyperlightError::ProtocolViolation(Violation::InlineRequestTooLong { len, max })) => {
            assert_eq!((len, max), (255, 40));
        }
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    assert!(s.is_poisoned());
    thread_ends(&thread);
}
