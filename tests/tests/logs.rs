//! Guest logs: records the guest logs with the `log` crate reach the host's
//! logger with their level and sandbox, a full buffer costs one exit per
//! drain and loses nothing, and the level is set per sandbox.

use std::sync::{Mutex, OnceLock};

use nub_host_common::log_buffer::{self, Appended, LogLevel};
use nub_sandbox::{GUEST_LOG_TARGET, HyperlightError, SandboxConfiguration};
use nub_tests::{fn_id, sandbox_with};

/// One record as the host emitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Captured {
    target: String,
    level: log::Level,
    message: String,
}

/// A logger that keeps every record (tests filter by sandbox id, since
/// tests may share the process).
struct Capture(Mutex<Vec<Captured>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(Captured {
            target: record.target().to_string(),
            level: record.level(),
            message: record.args().to_string(),
        });
    }

    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}

/// The guest records of sandbox `id`: `(level, message without the prefix)`.
fn records_of(id: u64) -> Vec<(log::Level, String)> {
    let prefix = format!("[sandbox {id}] ");
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.target == GUEST_LOG_TARGET)
        .filter_map(|r| {
            let rest = r.message.strip_prefix(&prefix)?;
            Some((r.level, rest.to_string()))
        })
        .collect()
}

/// The payload of the default guest's `log` function.
fn log_payload(level: u8, panic_after: bool, count: u32, message: &str) -> Vec<u8> {
    let mut p = vec![level, u8::from(panic_after)];
    p.extend(count.to_le_bytes());
    p.extend(message.as_bytes());
    p
}

const GUEST_MODULE: &str = "nub_default_guest";

#[test]
fn records_reach_the_host_logger_with_level_target_and_sandbox() {
    capture();
    let mut s = sandbox_with(SandboxConfiguration::default());
    for level in 1..=5u8 {
        let got = s
            .call_raw(
                fn_id::LOG,
                &log_payload(level, false, 1, &format!("level {level}")),
            )
            .unwrap();
        assert_eq!(got, 1u32.to_le_bytes());
    }
    // The default level is Info: error, warn and info arrive, in order.
    assert_eq!(
        records_of(s.id()),
        vec![
            (log::Level::Error, format!("{GUEST_MODULE}: level 1 #0")),
            (log::Level::Warn, format!("{GUEST_MODULE}: level 2 #0")),
            (log::Level::Info, format!("{GUEST_MODULE}: level 3 #0")),
        ]
    );
}

#[test]
fn the_level_is_set_per_sandbox() {
    capture();
    let mut debug =
        sandbox_with(SandboxConfiguration::default().with_guest_log_level(log::LevelFilter::Debug));
    let mut off =
        sandbox_with(SandboxConfiguration::default().with_guest_log_level(log::LevelFilter::Off));
    for level in 1..=5u8 {
        let payload = log_payload(level, false, 1, "x");
        debug.call_raw(fn_id::LOG, &payload).unwrap();
        off.call_raw(fn_id::LOG, &payload).unwrap();
    }
    let levels: Vec<log::Level> = records_of(debug.id()).into_iter().map(|r| r.0).collect();
    assert_eq!(
        levels,
        [
            log::Level::Error,
            log::Level::Warn,
            log::Level::Info,
            log::Level::Debug
        ]
    );
    assert!(records_of(off.id()).is_empty());
}

/// How many times a buffer of `size` bytes fills up while the guest logs
/// `messages` (the guest's own algorithm, run on a host buffer).
fn expected_drains(size: usize, messages: &[String]) -> u64 {
    let mut region = vec![0u8; size];
    let mut drains = 0;
    for m in messages {
        let append = |r: &mut [u8]| {
            log_buffer::append(r, LogLevel::Info, GUEST_MODULE.as_bytes(), m.as_bytes())
        };
        if append(&mut region) == Appended::Full {
            drains += 1;
            log_buffer::reset(&mut region);
            assert_eq!(append(&mut region), Appended::Stored);
        }
    }
    drains
}

#[test]
fn a_full_buffer_costs_one_exit_per_drain_and_loses_nothing() {
    capture();
    let size = 4096u64;
    let mut s = sandbox_with(SandboxConfiguration::default().with_log_buffer_size(size));
    let count = 1000u32;
    let before = s.exit_count();
    s.call_raw(
        fn_id::LOG,
        &log_payload(3, false, count, "a record of some length"),
    )
    .unwrap();
    let exits = s.exit_count() - before;
    let messages: Vec<String> = (0..count)
        .map(|i| format!("a record of some length #{i}"))
        .collect();
    let drains = expected_drains(size as usize, &messages);
    assert!(drains > 5, "the test must overflow the buffer ({drains})");
    // Exit mode: exact. Resident mode adds parks and notifies when a side
    // outlives its spin window (scheduling): at least one exit per drain.
    assert!(exits >= drains, "{exits} exits for {drains} drains");
    nub_tests::assert_exits(exits, 1 + drains, "one DONE exit plus one per drain");
    let got: Vec<String> = records_of(s.id()).into_iter().map(|r| r.1).collect();
    assert_eq!(got.len(), messages.len());
    for (got, sent) in got.iter().zip(&messages) {
        assert_eq!(*got, format!("{GUEST_MODULE}: {sent}"), "in order, uncut");
    }
}

#[test]
fn records_logged_before_a_panic_are_kept() {
    capture();
    let mut s = sandbox_with(SandboxConfiguration::default());
    let err = s
        .call_raw(fn_id::LOG, &log_payload(2, true, 2, "before the panic"))
        .unwrap_err();
    match err {
        HyperlightError::GuestPanicked { message } => {
            assert!(message.contains("panicked after logging"), "{message}");
            assert!(message.contains("main.rs"), "location kept: {message}");
        }
        other => panic!("expected GuestPanicked, got {other:?}"),
    }
    assert_eq!(
        records_of(s.id()),
        vec![
            (
                log::Level::Warn,
                format!("{GUEST_MODULE}: before the panic #0")
            ),
            (
                log::Level::Warn,
                format!("{GUEST_MODULE}: before the panic #1")
            ),
        ]
    );
}

#[test]
fn a_message_longer_than_the_limit_is_cut_not_lost() {
    capture();
    let mut s = sandbox_with(SandboxConfiguration::default());
    let long = "y".repeat(5000);
    s.call_raw(fn_id::LOG, &log_payload(1, false, 1, &long))
        .unwrap();
    let got = records_of(s.id());
    assert_eq!(got.len(), 1);
    let message = got[0].1.strip_prefix(&format!("{GUEST_MODULE}: ")).unwrap();
    assert_eq!(message.len(), log_buffer::MAX_MESSAGE_LEN);
    assert!(message.bytes().all(|b| b == b'y'));
}
