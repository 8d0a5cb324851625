//! The cancel verdict, the hold/release handshake, the park watch and
//! the cancel waker, without KVM.

use std::{
    hint::spin_loop,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use nub_hypervisor::{VcpuInterrupt, interrupt::CancelReason};

use super::{
    shared::Shared,
    vcpu::{CancelVerdict, hold, verdict},
    watch::{own_cpu_clock, park_limit, thread_cpu},
};
use crate::{error::HyperlightError, watchdog::Watched};

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
    let shared = Arc::new(Shared::new(
        Arc::new(VcpuInterrupt::new()),
        Duration::from_micros(100),
    ));
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

/// Shared state whose "vCPU thread" is this test's thread, driving, with
/// the park watch started.
fn watched(spin: Duration) -> Shared {
    let shared = Shared::new(Arc::new(VcpuInterrupt::new()), spin);
    shared
        .cpu_clock
        .set(own_cpu_clock().expect("this thread's CPU clock"))
        .unwrap();
    shared.driving.store(true, Ordering::SeqCst);
    let mut watch = shared.watch.lock().unwrap();
    shared.watch_reset(&mut watch);
    drop(watch);
    shared
}

/// Burns `cpu` of this thread's CPU time.
fn burn(cpu: Duration) {
    let clock = own_cpu_clock().unwrap();
    let start = thread_cpu(clock).unwrap();
    while thread_cpu(clock).unwrap().saturating_sub(start) < cpu {
        spin_loop();
    }
}

#[test]
fn a_guest_running_past_its_park_limit_with_no_call_open_is_stopped() {
    let spin = Duration::from_micros(100);
    let shared = watched(spin);
    // Within the limit: watched on.
    assert!(shared.check(Instant::now()).is_some());
    burn(park_limit(spin) + Duration::from_millis(5));
    assert_eq!(shared.check(Instant::now()), None, "the watch ends");
    assert!(shared.stopped.load(Ordering::SeqCst));
    assert!(matches!(
        shared.lock().failure,
        Some(HyperlightError::ProtocolViolation(_))
    ));
    assert_eq!(
        shared.interrupt.pending(),
        Some(CancelReason::Shutdown),
        "the guest is kicked out of KVM_RUN for good"
    );
}

#[test]
fn a_guest_with_a_call_open_or_a_call_since_the_last_look_is_not_stopped() {
    let spin = Duration::from_micros(100);
    let shared = watched(spin);
    shared.call.store(OPEN_7, Ordering::SeqCst);
    burn(park_limit(spin) + Duration::from_millis(5));
    assert!(shared.check(Instant::now()).is_some(), "a call is open");
    // The call ended since the last look: the guest's spin starts now.
    shared.call.store(ENDED_7, Ordering::SeqCst);
    assert!(shared.check(Instant::now()).is_some());
    assert!(!shared.stopped.load(Ordering::SeqCst));
    burn(park_limit(spin) + Duration::from_millis(5));
    assert_eq!(shared.check(Instant::now()), None);
    assert!(shared.stopped.load(Ordering::SeqCst));
}

#[test]
fn a_watch_ends_when_the_guest_is_no_longer_driven() {
    let shared = watched(Duration::from_micros(100));
    shared.driving.store(false, Ordering::SeqCst);
    assert_eq!(shared.check(Instant::now()), None);
    assert!(!shared.stopped.load(Ordering::SeqCst));
    assert!(!shared.watch.lock().unwrap().armed);
}

#[test]
fn a_cancel_wakes_a_sleeping_caller() {
    let shared = Arc::new(Shared::new(
        Arc::new(VcpuInterrupt::new()),
        Duration::from_micros(100),
    ));
    let sleeper = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let mut state = shared.lock();
            while !state.notified {
                state = shared.caller_cv.wait(state).unwrap();
            }
        })
    };
    shared.on_cancel();
    sleeper.join().unwrap();
}
