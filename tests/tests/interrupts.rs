//! kill(), deadlines, poisoning and resource cleanup.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nub_sandbox::{
    HyperlightError, InterruptHandle, MultiUseSandbox, Registerable, SandboxConfiguration,
    config::CallOptions, sandbox::KillOutcome,
};
use nub_tests::{fn_id, sandbox, sandbox_with, uninit};

/// Kills as soon as a call is running (the call may start late on a loaded
/// machine); returns when the kill was issued.
fn kill_when_running(handle: &InterruptHandle) -> Instant {
    loop {
        let issued = Instant::now();
        if handle.kill() {
            return issued;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn kill_stops_a_spinning_guest() {
    let mut s = sandbox();
    let handle = s.interrupt_handle();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        kill_when_running(&handle)
    });
    let err = s.call_raw(fn_id::SPIN, b"").unwrap_err();
    let returned = Instant::now();
    let issued = killer.join().unwrap();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    assert!(s.is_poisoned());
    eprintln!(
        "kill latency: {:?}",
        returned.saturating_duration_since(issued)
    );
}

#[test]
fn kill_while_idle_never_cancels_a_later_call() {
    let mut s = sandbox();
    let handle = s.interrupt_handle();
    for i in 0..1000u64 {
        assert!(!handle.kill(), "nothing is running");
        let got = s.call_raw(fn_id::ADD, &1u64.to_le_bytes()).unwrap();
        assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), i + 1);
    }
}

#[test]
fn kill_during_a_host_call_cancels_when_it_returns() {
    let mut u = uninit(None);
    u.register_host_function(1, |_: &[u8]| {
        std::thread::sleep(Duration::from_millis(30));
        Ok(vec![0, 0, 0, 0])
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    let handle = s.interrupt_handle();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        kill_when_running(&handle);
        true
    });
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend(1000u32.to_le_bytes());
    let err = s.call_raw(fn_id::HOST_LOOP, &payload).unwrap_err();
    assert!(killer.join().unwrap());
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
}

#[test]
fn handle_reports_dropped() {
    let s = sandbox();
    let handle = s.interrupt_handle();
    assert!(!handle.dropped());
    drop(s);
    assert!(handle.dropped());
    assert!(!handle.kill());
}

/// The interrupt handle of a worker's current sandbox.
type CurrentHandle = Mutex<Option<InterruptHandle>>;

/// A tiny xorshift so the stress test needs no dependency.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn kill_stress_ten_thousand_calls() {
    const THREADS: usize = 4;
    const CALLS: usize = 2500;
    let handles: Arc<Vec<CurrentHandle>> =
        Arc::new((0..THREADS).map(|_| Mutex::new(None)).collect());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let killer = {
        let handles = Arc::clone(&handles);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut kills = 0u64;
            while done.load(std::sync::atomic::Ordering::SeqCst) < THREADS {
                std::thread::sleep(Duration::from_micros(next(&mut seed) % 1500));
                let i = (next(&mut seed) as usize) % THREADS;
                let h = handles[i].lock().unwrap().clone();
                if let Some(h) = h
                    && h.kill()
                {
                    kills += 1;
                }
            }
            kills
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let handles = Arc::clone(&handles);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9 + t as u64;
                let mut host_calls = 0u32;
                let build = |host_calls: &mut u32| {
                    let mut u = uninit(None);
                    u.register_host_function(1, |b: &[u8]| Ok(b.to_vec()))
                        .unwrap();
                    let s = u.evolve().unwrap();
                    *host_calls = 0;
                    s
                };
                let mut s = build(&mut host_calls);
                *handles[t].lock().unwrap() = Some(s.interrupt_handle());
                let (mut ok, mut canceled) = (0, 0);
                for _ in 0..CALLS {
                    let count = (next(&mut seed) % 16) as u32;
                    let mut payload = 1u32.to_le_bytes().to_vec();
                    payload.extend(count.to_le_bytes());
                    match s.call_raw(fn_id::HOST_LOOP, &payload) {
                        Ok(v) => {
                            let expected: u64 = (0..u64::from(count)).sum();
                            assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), expected);
                            ok += 1;
                        }
                        Err(HyperlightError::Canceled) => {
                            canceled += 1;
                            s = build(&mut host_calls);
                            *handles[t].lock().unwrap() = Some(s.interrupt_handle());
                        }
                        Err(other) => panic!("call ended with {other:?}"),
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (ok, canceled)
            })
        })
        .collect();
    let mut total = (0, 0);
    for w in workers {
        let (ok, canceled) = w.join().unwrap();
        total.0 += ok;
        total.1 += canceled;
    }
    let kills = killer.join().unwrap();
    assert_eq!(total.0 + total.1, THREADS * CALLS);
    assert!(
        total.1 as u64 <= kills,
        "every cancel was caused by a kill that found a call running"
    );
    eprintln!(
        "kill stress: {} completed, {} canceled, {kills} kills landed",
        total.0, total.1
    );
}

#[test]
fn deadline_stops_a_spinning_guest() {
    let limit = Duration::from_millis(50);
    let mut s = sandbox_with(SandboxConfiguration::default().with_max_execution_time(Some(limit)));
    let start = Instant::now();
    let err = s.call_raw(fn_id::SPIN, b"").unwrap_err();
    let took = start.elapsed();
    match err {
        HyperlightError::ExecutionTimeout(d) => assert_eq!(d, limit),
        other => panic!("expected ExecutionTimeout, got {other:?}"),
    }
    assert!(took >= limit, "stopped after {took:?}");
    assert!(s.is_poisoned());
    eprintln!("deadline of {limit:?} fired after {took:?}");
}

#[test]
fn deadline_never_hits_calls_that_finish_in_time() {
    let cfg =
        SandboxConfiguration::default().with_max_execution_time(Some(Duration::from_millis(300)));
    let mut s = sandbox_with(cfg);
    let start = Instant::now();
    let mut calls = 0u64;
    // Keep calling past several deadlines' worth of time.
    while start.elapsed() < Duration::from_millis(1000) {
        assert_eq!(s.call_raw(fn_id::ECHO, b"on time").unwrap(), b"on time");
        calls += 1;
    }
    assert!(calls > 10);
}

#[test]
fn hundred_deadlines_in_flight_on_four_threads() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    let limit = Duration::from_millis(20 + (i * 7 + t) % 40);
                    let mut s = sandbox_with(
                        SandboxConfiguration::default().with_max_execution_time(Some(limit)),
                    );
                    match s.call_raw(fn_id::SPIN, b"") {
                        Err(HyperlightError::ExecutionTimeout(d)) => assert_eq!(d, limit),
                        other => panic!("expected a timeout, got {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn thousand_faulted_sandboxes_leak_nothing() {
    // Warm up (KVM handle, watchdog, signal handler), then measure.
    for _ in 0..20 {
        let mut s = sandbox();
        let _ = s.call_raw(fn_id::FAULT, &[0]);
    }
    let fds = nub_tests::open_fds();
    let rss = nub_tests::rss_kib();
    for i in 0..1000u32 {
        let mut s = sandbox();
        let selector = [0u8, 2, 5, 6, 8, 10][i as usize % 6];
        assert!(s.call_raw(fn_id::FAULT, &[selector]).is_err());
        if i % 3 == 0 {
            // Some are dropped with a live interrupt handle around.
            let h = s.interrupt_handle();
            drop(s);
            assert!(h.dropped());
        }
    }
    assert_eq!(nub_tests::open_fds(), fds, "file descriptors leaked");
    let grown = nub_tests::rss_kib().saturating_sub(rss);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB over 1000 sandboxes"
    );
}

#[test]
fn durations_too_large_for_a_deadline_mean_no_deadline() {
    let cfg = SandboxConfiguration::default()
        .with_max_execution_time(Some(Duration::MAX))
        .with_max_boot_time(Some(Duration::MAX));
    let mut s = sandbox_with(cfg);
    assert_eq!(s.call_raw(fn_id::ECHO, b"no panic").unwrap(), b"no panic");
    // Without a deadline a spinning guest runs until it is killed.
    let handle = s.interrupt_handle();
    let killer = std::thread::spawn(move || kill_when_running(&handle));
    let err = s.call_raw(fn_id::SPIN, b"").unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
}

#[test]
fn the_uninitialized_sandbox_handle_stops_later_calls() {
    let u = uninit(None);
    let early = u.interrupt_handle();
    assert!(!early.kill(), "no VM yet, nothing runs");
    assert!(!early.dropped());
    let mut s = u.evolve().unwrap();
    assert!(!early.kill(), "booted and idle");
    assert_eq!(s.call_raw(fn_id::ECHO, b"after").unwrap(), b"after");
    let handle = early.clone();
    let killer = std::thread::spawn(move || kill_when_running(&handle));
    let err = s.call_raw(fn_id::SPIN, b"").unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    drop(s);
    assert!(early.dropped());
}

#[test]
fn dropping_an_uninitialized_sandbox_marks_its_handle_dropped() {
    let u = uninit(None);
    let handle = u.interrupt_handle();
    drop(u);
    assert!(handle.dropped());
    assert!(!handle.kill());
}

/// The kernel's id of the calling thread, from `/proc/thread-self`.
fn current_tid() -> String {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_string_lossy().into_owned()
}

/// Whether thread `tid` of this process is blocked in `read(2)` (syscall 0
/// on x86_64), per `/proc/self/task/<tid>/syscall`.
fn blocked_in_read(tid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some("0"))
}

#[test]
fn kill_during_a_blocking_host_syscall_lets_the_host_function_finish() {
    use std::io::{Read, Write};

    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<String>();
    let outcome: Arc<Mutex<Option<std::io::Result<Vec<u8>>>>> = Arc::new(Mutex::new(None));
    let mut u = uninit(None);
    {
        let outcome = Arc::clone(&outcome);
        u.register_host_function(1, move |_: &[u8]| {
            tid_tx.send(current_tid()).unwrap();
            // One read(2): std does not retry a plain `read` on EINTR, so an
            // interrupted syscall shows up here as ErrorKind::Interrupted.
            let mut buf = [0u8; 4];
            let got = reader.read(&mut buf).map(|n| buf[..n].to_vec());
            *outcome.lock().unwrap() = Some(got);
            Ok(vec![0, 0, 0, 0])
        })
        .unwrap();
    }
    let mut s = u.evolve().unwrap();
    let handle = s.interrupt_handle();
    let killer = std::thread::spawn(move || {
        let tid = tid_rx.recv().unwrap();
        while !blocked_in_read(&tid) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(handle.kill(), "the call is running");
        // Give the signal time to be handled while the read still blocks;
        // it must not end the read.
        std::thread::sleep(Duration::from_millis(50));
        writer.write_all(b"data").unwrap();
    });
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend(1u32.to_le_bytes());
    let err = s.call_raw(fn_id::HOST_LOOP, &payload).unwrap_err();
    killer.join().unwrap();
    let got = outcome
        .lock()
        .unwrap()
        .take()
        .expect("the host function ran");
    assert_eq!(got.unwrap(), b"data", "the read finished despite the kill");
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    assert!(s.is_poisoned());
}

/// A sandbox whose host function 1 sleeps `nap` and answers 0, with `cfg`:
/// `HOST_LOOP` with count 1 then takes at least `nap`, and finishes.
fn napping_sandbox(cfg: SandboxConfiguration, nap: Duration) -> MultiUseSandbox {
    let mut u = uninit(Some(cfg));
    u.register_host_function(1, move |_: &[u8]| {
        std::thread::sleep(nap);
        Ok(vec![0, 0, 0, 0])
    })
    .unwrap();
    u.evolve().unwrap()
}

/// `HOST_LOOP`'s payload: host function 1, called once.
fn one_host_call() -> Vec<u8> {
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend(1u32.to_le_bytes());
    payload
}

#[test]
fn a_per_call_deadline_shorter_than_the_configured_one_fires() {
    // The configured limit would fire much later: the error names the
    // per-call one, so it is the one that stopped the call.
    let configured = Duration::from_secs(60);
    let mut s =
        sandbox_with(SandboxConfiguration::default().with_max_execution_time(Some(configured)));
    let limit = Duration::from_millis(50);
    let opts = CallOptions::default().with_deadline(limit);
    assert_eq!(
        s.call_raw_with(fn_id::ECHO, b"quick", opts).unwrap(),
        b"quick"
    );
    let start = Instant::now();
    let err = s.call_raw_with(fn_id::SPIN, b"", opts).unwrap_err();
    assert!(
        matches!(err, HyperlightError::ExecutionTimeout(d) if d == limit),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(30), "it ended");
    assert!(s.is_poisoned());
}

#[test]
fn a_per_call_deadline_without_a_configured_one_fires() {
    let mut s = sandbox();
    let limit = Duration::from_millis(30);
    let err = s
        .call_raw_with(
            fn_id::SPIN,
            b"",
            CallOptions::default().with_deadline(limit),
        )
        .unwrap_err();
    assert!(
        matches!(err, HyperlightError::ExecutionTimeout(d) if d == limit),
        "{err:?}"
    );
}

#[test]
fn a_per_call_deadline_longer_than_the_configured_one_lets_the_call_finish() {
    // Each HOST_LOOP call takes at least `nap`, more than the configured
    // limit: only a call with its own, longer deadline finishes.
    let configured = Duration::from_millis(20);
    let nap = Duration::from_millis(100);
    let mut s = napping_sandbox(
        SandboxConfiguration::default().with_max_execution_time(Some(configured)),
        nap,
    );
    let longer = CallOptions::default().with_deadline(Duration::from_secs(60));
    for _ in 0..2 {
        let got = s.call_raw_with(fn_id::HOST_LOOP, &one_host_call(), longer);
        assert_eq!(got.unwrap(), 0u64.to_le_bytes(), "finished in its own time");
    }
    let results = s
        .call_batch_with(
            &[(fn_id::HOST_LOOP, &one_host_call()), (fn_id::ECHO, b"b")],
            longer,
        )
        .unwrap();
    assert_eq!(results[1].as_deref().unwrap(), b"b");
    // The options were for those calls only: the configured limit holds.
    let err = s.call_raw(fn_id::HOST_LOOP, &one_host_call()).unwrap_err();
    assert!(
        matches!(err, HyperlightError::ExecutionTimeout(d) if d == configured),
        "{err:?}"
    );
}

#[test]
fn without_deadline_overrides_the_configured_one() {
    let configured = Duration::from_millis(20);
    let mut s = napping_sandbox(
        SandboxConfiguration::default().with_max_execution_time(Some(configured)),
        Duration::from_millis(100),
    );
    let unbounded = CallOptions::default().without_deadline();
    let got = s.call_raw_with(fn_id::HOST_LOOP, &one_host_call(), unbounded);
    assert_eq!(got.unwrap(), 0u64.to_le_bytes());
    // Unbounded: only a kill stops a spinning guest.
    let handle = s.interrupt_handle();
    let killer = std::thread::spawn(move || kill_when_running(&handle));
    let err = s.call_raw_with(fn_id::SPIN, b"", unbounded).unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
}

#[test]
fn a_per_call_deadline_bounds_a_whole_batch() {
    let mut s = sandbox();
    let limit = Duration::from_millis(40);
    let opts = CallOptions::default().with_deadline(limit);
    let err = s
        .call_batch_with(&[(fn_id::ECHO, b"a"), (fn_id::SPIN, b"")], opts)
        .unwrap_err();
    assert!(
        matches!(err, HyperlightError::ExecutionTimeout(d) if d == limit),
        "{err:?}"
    );
    assert!(s.is_poisoned());
    assert!(matches!(
        s.call_raw_with(fn_id::ECHO, b"", opts),
        Err(HyperlightError::PoisonedSandbox)
    ));
}

/// A per-call deadline far beyond any scheduling delay: a lost kill makes
/// the call time out (a failed assertion) instead of hanging the test.
fn lost_kill_bound() -> CallOptions {
    CallOptions::default().with_deadline(Duration::from_secs(30))
}

#[test]
fn kill_next_before_a_call_begins_stops_that_call() {
    let mut s = sandbox();
    let handle = s.interrupt_handle();
    assert_eq!(handle.kill_next(), KillOutcome::Armed, "nothing runs yet");
    assert_eq!(handle.kill_next(), KillOutcome::Armed, "still one kill");
    assert!(!handle.kill(), "kill still reports no call running");
    let start = Instant::now();
    let err = s
        .call_raw_with(fn_id::SPIN, b"", lost_kill_bound())
        .unwrap_err();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "it ended");
    assert!(s.is_poisoned());
    assert!(!handle.disarm(), "consumed by that call");
}

#[test]
fn kill_next_stops_a_batch_and_a_boot() {
    let mut s = sandbox();
    let handle = s.interrupt_handle();
    assert_eq!(handle.kill_next(), KillOutcome::Armed);
    let err = s
        .call_batch(&[(fn_id::ECHO, b"a"), (fn_id::ECHO, b"b")])
        .unwrap_err();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");

    let u = uninit(None);
    let early = u.interrupt_handle();
    assert_eq!(early.kill_next(), KillOutcome::Armed, "no VM yet");
    let err = u.evolve().unwrap_err();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    assert_eq!(early.kill_next(), KillOutcome::Gone);
}

#[test]
fn a_disarmed_kill_reaches_nothing() {
    let mut s = sandbox();
    let handle = s.interrupt_handle();
    assert_eq!(handle.kill_next(), KillOutcome::Armed);
    assert!(handle.disarm());
    for i in 0..100u64 {
        let got = s.call_raw(fn_id::ADD, &1u64.to_le_bytes()).unwrap();
        assert_eq!(u64::from_le_bytes(got.try_into().unwrap()), i + 1);
    }
    assert!(!handle.disarm());
}

#[test]
fn kill_next_of_a_running_call_arms_nothing_for_later() {
    // The host function runs inside the call, so the call is running when
    // it kills: the kill is for that call only.
    let slot: Arc<Mutex<Option<InterruptHandle>>> = Arc::new(Mutex::new(None));
    let outcome: Arc<Mutex<Option<KillOutcome>>> = Arc::new(Mutex::new(None));
    let mut u = uninit(None);
    {
        let (slot, outcome) = (Arc::clone(&slot), Arc::clone(&outcome));
        u.register_host_function(1, move |_: &[u8]| {
            let handle = slot.lock().unwrap().clone().unwrap();
            *outcome.lock().unwrap() = Some(handle.kill_next());
            Ok(vec![0, 0, 0, 0])
        })
        .unwrap();
    }
    let mut s = u.evolve().unwrap();
    let handle = s.interrupt_handle();
    *slot.lock().unwrap() = Some(handle.clone());
    let err = s
        .call_raw_with(fn_id::HOST_LOOP, &one_host_call(), lost_kill_bound())
        .unwrap_err();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    assert_eq!(*outcome.lock().unwrap(), Some(KillOutcome::Running));
    assert!(!handle.disarm(), "nothing was armed");
}

#[test]
fn kill_next_racing_the_call_start_always_stops_the_call() {
    // The killer acts once, a little before or a little after the call
    // begins: either way the call is canceled, never lost.
    let mut seed = 0x5851_f42d_4c95_7f2du64;
    for _ in 0..60 {
        let mut s = sandbox();
        let handle = s.interrupt_handle();
        let (kill_delay, call_delay) = (next(&mut seed) % 2000, next(&mut seed) % 2000);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(kill_delay));
            handle.kill_next()
        });
        std::thread::sleep(Duration::from_micros(call_delay));
        let err = s
            .call_raw_with(fn_id::SPIN, b"", lost_kill_bound())
            .unwrap_err();
        let outcome = killer.join().unwrap();
        assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
        assert_ne!(outcome, KillOutcome::Gone);
    }
}

#[test]
fn a_stale_kill_of_a_dropped_sandbox_reaches_nothing() {
    let s = sandbox();
    let armed_then_dropped = s.interrupt_handle();
    assert_eq!(armed_then_dropped.kill_next(), KillOutcome::Armed);
    drop(s);
    assert!(!armed_then_dropped.disarm(), "forgotten with the sandbox");
    assert_eq!(armed_then_dropped.kill_next(), KillOutcome::Gone);

    let u = uninit(None);
    let never_booted = u.interrupt_handle();
    drop(u);
    assert_eq!(never_booted.kill_next(), KillOutcome::Gone);

    // The dropped sandbox's VM may well serve the next one (the pool):
    // no stale kill reaches it.
    nub_sandbox::pool::wait_idle();
    let mut next = sandbox();
    for handle in [&armed_then_dropped, &never_booted] {
        assert_eq!(handle.kill_next(), KillOutcome::Gone);
        assert!(!handle.kill());
    }
    for _ in 0..50 {
        assert_eq!(
            next.call_raw(fn_id::ECHO, b"untouched").unwrap(),
            b"untouched"
        );
    }
    assert!(!next.is_poisoned());
}
