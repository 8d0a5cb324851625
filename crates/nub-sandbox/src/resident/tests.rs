//! The cancel verdict and the hold/release handshake, without KVM.

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
