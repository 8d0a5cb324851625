//! What only resident mode has: exit-free calls while both sides spin,
//! parking when idle, a vCPU thread per sandbox that drop joins, and a
//! guest that races the host over its response frame. (Every other test
//! runs in resident mode too, through `NUB_TEST_CALL_MODE=resident`.)

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use nub_sandbox::{
    CallMode, GuestBinary, HyperlightError, MultiUseSandbox, Registerable, SandboxConfiguration,
    UninitializedSandbox,
};
use nub_tests::{DEFAULT_GUEST, fn_id, require_kvm};

/// A resident default-guest sandbox whose sides spin for `spin`, with host
/// function 1 echoing and counting.
fn resident(spin: Duration, host_calls: &Arc<AtomicU64>) -> MultiUseSandbox {
    require_kvm();
    let cfg = SandboxConfiguration::default().with_call_mode(CallMode::Resident { spin });
    let mut u = UninitializedSandbox::new(GuestBinary::FilePath(DEFAULT_GUEST.into()), Some(cfg))
        .expect("load the default guest");
    let seen = Arc::clone(host_calls);
    u.register_host_function(1, move |p: &[u8]| {
        seen.fetch_add(1, Ordering::SeqCst);
        Ok(p.to_vec())
    })
    .unwrap();
    u.evolve().expect("boot the default guest")
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn resident_calls_batches_and_host_calls_make_no_exits_while_both_sides_spin() {
    // A spin window no scheduling delay reaches: neither side ever parks
    // or sleeps during the test, so any exit would be a protocol bug.
    let calls = Arc::new(AtomicU64::new(0));
    let mut s = resident(Duration::from_secs(20), &calls);
    // The first calls may run on the caller's thread, as exit calls, while
    // the new vCPU thread starts (and for a while longer on a busy machine,
    // where the caller backs off from offering it the VM); back-to-back
    // calls then hand it the VM. Once a call made no exit the guest spins,
    // and with this spin window nothing makes either side give that up.
    let start = std::time::Instant::now();
    loop {
        let before = s.exit_count();
        assert_eq!(s.call_raw(fn_id::ECHO, b"warm").unwrap(), b"warm");
        if s.exit_count() == before {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the vCPU thread never took the VM"
        );
    }
    let exits = s.exit_count();
    for i in 0..1000u32 {
        let payload = i.to_le_bytes();
        assert_eq!(s.call_raw(fn_id::ECHO, &payload).unwrap(), payload);
    }
    let batch: Vec<(u32, &[u8])> = (0..100).map(|_| (fn_id::ECHO, &b"b"[..])).collect();
    for r in s.call_batch(&batch).unwrap() {
        assert_eq!(r.unwrap(), b"b");
    }
    let mut host = 1u32.to_le_bytes().to_vec();
    host.extend(b"to the host and back");
    for _ in 0..100 {
        assert_eq!(
            s.call_raw(fn_id::HOST_ECHO, &host).unwrap(),
            b"to the host and back"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 100);
    assert_eq!(s.exit_count(), exits, "no VM exit at all");
}

#[test]
fn an_idle_resident_sandbox_parks_its_thread_and_the_next_call_wakes_it() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut s = resident(Duration::from_micros(200), &calls);
    assert_eq!(s.call_raw(fn_id::ECHO, b"before").unwrap(), b"before");
    let name = format!("nub-vcpu-{}", s.id());
    // Past the spin window the guest parks and its thread sleeps.
    let mut waited = Duration::ZERO;
    let ticks = loop {
        // Otherwise running, or not yet named (a new thread names itself).
        if let Some(('S', ticks)) = nub_tests::thread_stat(&name) {
            break ticks;
        }
        assert!(
            waited < Duration::from_secs(30),
            "the idle guest never parked"
        );
        std::thread::sleep(Duration::from_millis(5));
        waited += Duration::from_millis(5);
    };
    // A parked sandbox burns no CPU: its thread stays asleep and gains no
    // CPU time.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        nub_tests::thread_stat(&name),
        Some(('S', ticks)),
        "still asleep, no CPU used"
    );
    assert_eq!(s.call_raw(fn_id::ECHO, b"after").unwrap(), b"after");
    let mut host = 1u32.to_le_bytes().to_vec();
    host.extend(b"x");
    assert_eq!(s.call_raw(fn_id::HOST_ECHO, &host).unwrap(), b"x");
    drop(s);
    assert_eq!(
        nub_tests::thread_stat(&name),
        None,
        "drop joined the vCPU thread"
    );
}

#[test]
fn a_kill_while_the_resident_guest_idles_changes_nothing() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut s = resident(Duration::from_millis(5), &calls);
    let handle = s.interrupt_handle();
    for _ in 0..200 {
        assert!(!handle.kill(), "no call runs");
        assert_eq!(
            s.call_raw(fn_id::ADD, &1u64.to_le_bytes()).unwrap().len(),
            8
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(!handle.kill(), "parked, no call runs");
    assert_eq!(s.call_raw(fn_id::ECHO, b"alive").unwrap(), b"alive");
}

#[test]
fn a_guest_racing_the_host_over_its_response_gets_a_typed_error_or_a_clean_answer() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut clean = 0;
    let mut typed = 0;
    let mut s = resident(Duration::from_secs(5), &calls);
    for round in 0..300u32 {
        let rounds = 1 + (round % 7) * 300;
        match s.call_raw(fn_id::RACE_RESPONSE, &rounds.to_le_bytes()) {
            // The copy caught a consistent frame: whatever it decodes to.
            Ok(_) => clean += 1,
            // A torn frame: the sandbox is dead, the host is not.
            Err(HyperlightError::ProtocolViolation(_)) => {
                assert!(s.is_poisoned(), "round {round}: a violation poisons");
                typed += 1;
            }
            // A consistent frame with an error status: the sandbox lives.
            Err(
                HyperlightError::GuestFunctionError { .. }
                | HyperlightError::UnknownFunction { .. }
                | HyperlightError::ResponseTooLarge { .. },
            ) => {
                assert!(
                    !s.is_poisoned(),
                    "round {round}: a call error poisons nothing"
                );
                typed += 1;
            }
            Err(other) => panic!("round {round}: an unexpected error: {other:?}"),
        }
        if s.is_poisoned() {
            s = resident(Duration::from_secs(5), &calls);
        }
    }
    eprintln!("racing guest: {clean} clean answers, {typed} typed errors");
    // The host is unharmed: a fresh sandbox works.
    let mut fresh = resident(Duration::from_millis(1), &calls);
    assert_eq!(fresh.call_raw(fn_id::ECHO, b"ok").unwrap(), b"ok");
}

#[test]
fn ten_thousand_resident_create_call_drop_cycles_leak_no_thread_fd_or_memory() {
    let calls = Arc::new(AtomicU64::new(0));
    // Warm up the process-wide state (KVM handle, watchdog, allocator).
    for _ in 0..20 {
        let mut s = resident(Duration::from_micros(50), &calls);
        s.call_raw(fn_id::ECHO, b"warm").unwrap();
    }
    let (threads0, fds0, rss0) = (threads(), nub_tests::open_fds(), nub_tests::rss_kib());
    for i in 0..10_000u32 {
        let mut s = resident(Duration::from_micros(50), &calls);
        let payload = i.to_le_bytes();
        assert_eq!(s.call_raw(fn_id::ECHO, &payload).unwrap(), payload);
        // Half of them are dropped while the guest still spins.
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    // A joined thread's /proc entry can outlive the join by a moment (the
    // kernel finishes its exit after waking the joiner).
    let start = std::time::Instant::now();
    while threads() > threads0 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (threads1, fds1, rss1) = (threads(), nub_tests::open_fds(), nub_tests::rss_kib());
    assert_eq!(threads1, threads0, "every vCPU thread was joined");
    assert_eq!(fds1, fds0, "every VM and vCPU fd was closed");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
}
