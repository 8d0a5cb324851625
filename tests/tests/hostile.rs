//! The hostile guest (`guest-x86/guests/hostile`) against the host: every
//! attack ends in a typed error (and poisons the sandbox when the guest can
//! no longer be trusted), or in a correct answer where the lie is harmless.
//! A default-guest sandbox built before each attack is unaffected, and a
//! fresh hostile sandbox works afterwards.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use javm_cap::{Cap, Slot};
use nub_host_common::{
    layout::{BOOT_INFO_GPA, EXCEPTION_CODE_GPA, IDT_GPA},
    log_buffer::{self, Appended, LogLevel},
};
use nub_sandbox::{
    GUEST_LOG_TARGET, HyperlightError, MultiUseSandbox, Registerable, SandboxConfiguration,
    Violation,
};
use nub_tests::{exits_count_runs, fn_id, hostile, hostile_fn_id as h, hostile_uninit, sandbox};

/// A default-guest sandbox built before an attack, holding state (a
/// counter and a cap) to check afterwards.
struct Bystander {
    sbox: MultiUseSandbox,
    total: u64,
    cap: Cap,
}

fn add(s: &mut MultiUseSandbox, n: u64) -> u64 {
    let got = s.call_raw(fn_id::ADD, &n.to_le_bytes()).unwrap();
    u64::from_le_bytes(got.try_into().unwrap())
}

impl Bystander {
    fn new() -> Self {
        let mut sbox = sandbox();
        let total = add(&mut sbox, 41);
        let cap = Cap::inline(b"held by the bystander".to_vec());
        assert_eq!(sbox.put_cap(&cap).unwrap(), cap.hash());
        Self { sbox, total, cap }
    }

    /// The attack changed nothing here, and a fresh hostile sandbox works.
    fn check(mut self) {
        assert!(!self.sbox.is_poisoned());
        assert_eq!(add(&mut self.sbox, 1), self.total + 1);
        assert_eq!(
            self.sbox.call_raw(fn_id::ECHO, b"still here").unwrap(),
            b"still here"
        );
        assert_eq!(
            self.sbox.get_cap(self.cap.hash()).unwrap(),
            Some(self.cap.clone())
        );
        let mut fresh = hostile();
        assert_eq!(fresh.call_raw(h::ECHO, b"fresh").unwrap(), b"fresh");
    }
}

/// A poisoned sandbox refuses calls and has no directory reader.
fn assert_poisoned(s: &mut MultiUseSandbox) {
    assert!(s.is_poisoned());
    assert!(matches!(
        s.call_raw(h::ECHO, b"x"),
        Err(HyperlightError::PoisonedSandbox)
    ));
    assert!(matches!(
        s.cache_reader(),
        Err(HyperlightError::PoisonedSandbox)
    ));
}

/// An unpoisoned sandbox still answers.
fn assert_usable(s: &mut MultiUseSandbox) {
    assert!(!s.is_poisoned());
    assert_eq!(s.call_raw(h::ECHO, b"usable").unwrap(), b"usable");
}

/// Runs attack `id` with `payload` on a fresh hostile sandbox (with a
/// bystander built before) and returns the error; the sandbox must be
/// poisoned and the bystander unaffected.
fn poisoning_attack(id: u32, payload: &[u8]) -> HyperlightError {
    let bystander = Bystander::new();
    let mut s = hostile();
    let err = s
        .call_raw(id, payload)
        .expect_err("the attack must fail the call");
    assert_poisoned(&mut s);
    bystander.check();
    err
}

fn data(bytes: &[u8]) -> Cap {
    Cap::inline(bytes.to_vec())
}

#[test]
fn hostile_echo_is_a_control() {
    let bystander = Bystander::new();
    let mut s = hostile();
    for len in [0usize, 1, 4096, 100_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        assert_eq!(s.call_raw(h::ECHO, &payload).unwrap(), payload);
    }
    assert_usable(&mut s);
    bystander.check();
}

#[test]
fn hostile_init_calls_its_host_function_and_carries_on_unless_told_to_spin() {
    let answers: [Result<Vec<u8>, &str>; 3] = [Ok(b"carry on".to_vec()), Ok(Vec::new()), Err("no")];
    for answer in answers {
        let calls = Arc::new(AtomicU64::new(0));
        let mut u = hostile_uninit(None);
        let counter = Arc::clone(&calls);
        u.register_host_function(h::INIT_HOST_FN, move |payload: &[u8]| {
            assert_eq!(payload, b"init");
            counter.fetch_add(1, Ordering::Relaxed);
            answer.clone().map_err(|e| e.into())
        })
        .unwrap();
        let mut s = u.evolve().unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_usable(&mut s);
    }
}

#[test]
fn hostile_init_that_spins_is_stopped_by_the_default_boot_deadline() {
    let mut u = hostile_uninit(None);
    u.register_host_function(h::INIT_HOST_FN, |_: &[u8]| Ok(b"spin".to_vec()))
        .unwrap();
    let limit = SandboxConfiguration::default()
        .max_boot_time
        .expect("a boot deadline by default");
    let err = u.evolve().unwrap_err();
    assert!(
        matches!(err, HyperlightError::ExecutionTimeout(d) if d == limit),
        "{err:?}"
    );
    Bystander::new().check();
}

#[test]
fn hostile_init_that_spins_is_stopped_by_its_interrupt_handle() {
    let cfg = SandboxConfiguration::default().with_max_boot_time(None);
    let mut u = hostile_uninit(Some(cfg));
    let asked = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&asked);
    u.register_host_function(h::INIT_HOST_FN, move |_: &[u8]| {
        flag.store(true, Ordering::Relaxed);
        Ok(b"spin".to_vec())
    })
    .unwrap();
    let handle = u.interrupt_handle();
    let killer = std::thread::spawn(move || {
        // Init is spinning once it has its answer; kill until it lands.
        while !asked.load(Ordering::Relaxed) || !handle.kill() {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let err = u.evolve().unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    Bystander::new().check();
}

#[test]
fn hostile_response_frame_running_past_the_ring_end_is_a_protocol_violation() {
    for sel in 0..=2u8 {
        let err = poisoning_attack(h::FRAME_PAST_END, &[sel]);
        assert!(
            matches!(err, HyperlightError::ProtocolViolation(_)),
            "{sel}: {err:?}"
        );
    }
}

#[test]
fn hostile_garbage_response_body_is_a_protocol_violation() {
    for sel in 0..=1u8 {
        let err = poisoning_attack(h::GARBAGE_BODY, &[sel]);
        assert!(
            matches!(err, HyperlightError::ProtocolViolation(_)),
            "{sel}: {err:?}"
        );
    }
}

#[test]
fn hostile_payload_outside_its_frame_is_a_protocol_violation() {
    for sel in 0..=1u8 {
        let err = poisoning_attack(h::PAYLOAD_OUTSIDE_FRAME, &[sel]);
        assert!(
            matches!(err, HyperlightError::ProtocolViolation(_)),
            "{sel}: {err:?}"
        );
    }
}

#[test]
fn hostile_inconsistent_ring_header_is_a_protocol_violation() {
    for sel in 0..=2u8 {
        let err = poisoning_attack(h::BAD_RING_HEADER, &[sel]);
        assert!(
            matches!(err, HyperlightError::ProtocolViolation(_)),
            "{sel}: {err:?}"
        );
    }
}

#[test]
fn hostile_done_without_a_response_is_a_protocol_violation() {
    let err = poisoning_attack(h::NO_RESPONSE, b"");
    assert!(
        matches!(err, HyperlightError::ProtocolViolation(_)),
        "{err:?}"
    );
}

#[test]
fn hostile_batch_whose_responses_were_wiped_reports_no_success() {
    // The guest answers the first call, then empties its output ring and
    // exits DONE: no call of the batch may come back as a success.
    // Missing responses while the output ring has room are a lie.
    let mut s = hostile();
    let calls: [(u32, &[u8]); 3] = [(h::ECHO, b"a"), (h::NO_RESPONSE, b""), (h::ECHO, b"b")];
    let err = s.call_batch(&calls).unwrap_err();
    assert!(
        matches!(err, HyperlightError::ProtocolViolation(_)),
        "{err:?}"
    );
    assert!(s.is_poisoned());
}

#[test]
fn hostile_host_call_with_a_garbage_frame_is_a_protocol_violation() {
    for sel in 0..=4u8 {
        let err = poisoning_attack(h::GARBAGE_HOST_CALL, &[sel]);
        assert!(
            matches!(err, HyperlightError::ProtocolViolation(_)),
            "{sel}: {err:?}"
        );
    }
}

#[test]
fn hostile_host_calls_forever_end_at_the_deadline() {
    let bystander = Bystander::new();
    let limit = Duration::from_millis(200);
    let cfg = SandboxConfiguration::default().with_max_execution_time(Some(limit));
    // A registered host function, and an id with none (the guest ignores
    // the unknown-function answers and carries on).
    for registered in [true, false] {
        let calls = Arc::new(AtomicU64::new(0));
        let mut u = hostile_uninit(Some(cfg));
        if registered {
            let counter = Arc::clone(&calls);
            u.register_host_function(100, move |_: &[u8]| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(Vec::new())
            })
            .unwrap();
        }
        let mut s = u.evolve().unwrap();
        let err = s
            .call_raw(h::HOST_CALLS_FOREVER, &100u32.to_le_bytes())
            .unwrap_err();
        assert!(
            matches!(err, HyperlightError::ExecutionTimeout(d) if d == limit),
            "{err:?}"
        );
        assert_eq!(calls.load(Ordering::Relaxed) > 0, registered);
        assert_poisoned(&mut s);
    }
    bystander.check();
}

#[test]
fn hostile_host_calls_forever_are_stopped_by_a_kill_from_a_host_function() {
    let mut u = hostile_uninit(None);
    let handle = u.interrupt_handle();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    u.register_host_function(100, move |_: &[u8]| {
        if counter.fetch_add(1, Ordering::Relaxed) == 1000 {
            assert!(handle.kill(), "a call is running");
        }
        Ok(Vec::new())
    })
    .unwrap();
    let mut s = u.evolve().unwrap();
    let err = s
        .call_raw(h::HOST_CALLS_FOREVER, &100u32.to_le_bytes())
        .unwrap_err();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1001,
        "no host call after the kill"
    );
    assert_poisoned(&mut s);
}

#[test]
fn hostile_writes_to_the_read_only_system_pages_fault() {
    // BootInfo's directory_va, the IDT's page-fault gate, the host's
    // exception handler code.
    let targets = [
        (0u8, BOOT_INFO_GPA + 104),
        (2, IDT_GPA + 14 * 16),
        (3, EXCEPTION_CODE_GPA),
    ];
    for (sel, addr) in targets {
        let err = poisoning_attack(h::REWRITE_BOOT_INFO, &[sel]);
        // Page-fault error code: present (a protection violation), write,
        // user mode.
        assert!(
            matches!(err, HyperlightError::GuestFault { vector: 14, error_code, cr2, .. }
                if cr2 == addr && error_code & 0b111 == 0b111),
            "{sel}: {err:?}"
        );
    }
}

#[test]
fn hostile_forged_boot_info_copies_are_a_harmless_lie() {
    let bystander = Bystander::new();
    let mut s = hostile();
    let held = data(b"held before the forgery");
    assert_eq!(s.put_cap(&held).unwrap(), held.hash());
    let forged = s.call_raw(h::REWRITE_BOOT_INFO, &[1]).unwrap();
    assert!(u64::from_le_bytes(forged.try_into().unwrap()) >= 1);
    // The host sees the guest's claim...
    let info = s.boot_info().unwrap();
    assert_eq!(info.directory_va, h::FORGED_DIRECTORY_VA);
    assert_eq!(info.memory_size, u64::MAX);
    // ...but its reader sits at the address the kernel published at boot,
    // before any guest function ran: the lie after boot changes nothing.
    assert!(s.cache_reader().unwrap().contains(&held.hash()));
    assert_eq!(s.get_cap(held.hash()).unwrap(), Some(held));
    assert_usable(&mut s);
    bystander.check();
}

#[test]
fn hostile_forged_published_directory_address_is_a_harmless_lie() {
    let bystander = Bystander::new();
    let mut u = hostile_uninit(None);
    u.register_host_function(h::INIT_HOST_FN, |_: &[u8]| Ok(b"forge directory".to_vec()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    let held = data(b"held under a forged address");
    assert_eq!(s.put_cap(&held).unwrap(), held.hash());
    // The reader built on the forged address (outside guest memory) finds
    // nothing, and the verified paths work.
    assert!(!s.cache_reader().unwrap().contains(&held.hash()));
    let exits = s.exit_count();
    s.put_cap_with_hash(held.hash(), &held).unwrap();
    // Resident calls make no exits: there the verified get_cap below is
    // the evidence.
    if exits_count_runs() {
        assert!(s.exit_count() > exits, "the put went to the guest");
    }
    assert_eq!(s.get_cap(held.hash()).unwrap(), Some(held));
    assert_usable(&mut s);
    bystander.check();
}

#[test]
fn hostile_hidden_directory_address_is_asked_for_once() {
    let mut u = hostile_uninit(None);
    u.register_host_function(h::INIT_HOST_FN, |_: &[u8]| Ok(b"hide directory".to_vec()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    let held = data(b"found after asking");
    assert_eq!(s.put_cap(&held).unwrap(), held.hash());
    // No address came with boot: the reader asks the guest (one system
    // call), then reads without exits.
    assert!(s.cache_reader().unwrap().contains(&held.hash()));
    let exits = s.exit_count();
    assert!(s.cache_reader().unwrap().contains(&held.hash()));
    s.put_cap_with_hash(held.hash(), &held).unwrap();
    if exits_count_runs() {
        assert_eq!(s.exit_count(), exits, "asked once, remembered");
    }
    assert_usable(&mut s);
}

#[test]
fn hostile_corrupt_directory_index_reads_as_absent_and_caps_still_work() {
    let bystander = Bystander::new();
    for sel in 0..=6u8 {
        let mut s = hostile();
        let held = data(format!("held {sel}").as_bytes());
        let later = data(format!("put after the corruption {sel}").as_bytes());
        assert_eq!(s.put_cap(&held).unwrap(), held.hash());
        assert!(s.cache_reader().unwrap().contains(&held.hash()));
        s.call_raw(h::CORRUPT_DIRECTORY, &[sel]).unwrap();
        // Selectors 2 and 5 leave a readable table in guest memory at the
        // wrong place; the reader may or may not meet the real slot there
        // (both answers are true). Every other corruption reads as absent.
        if sel != 2 && sel != 5 {
            assert!(
                !s.cache_reader().unwrap().contains(&held.hash()),
                "{sel}: a corrupt index reads as absent"
            );
        }
        assert!(!s.cache_reader().unwrap().contains(&later.hash()), "{sel}");
        // The slow, verified paths still work.
        s.put_cap_with_hash(held.hash(), &held).unwrap();
        assert_eq!(s.get_cap(held.hash()).unwrap(), Some(held.clone()));
        assert_eq!(s.get_cap(later.hash()).unwrap(), None);
        // A put rewrites the header: the reader recovers.
        assert_eq!(s.put_cap(&later).unwrap(), later.hash());
        let reader = s.cache_reader().unwrap();
        assert!(reader.contains(&later.hash()) && reader.contains(&held.hash()));
        assert_usable(&mut s);
    }
    bystander.check();
}

#[test]
fn hostile_wrong_put_cap_hash_is_a_protocol_violation_never_a_panic() {
    let bystander = Bystander::new();
    for op in 0..3 {
        let mut s = hostile();
        s.call_raw(h::LIE_ON_PUT_CAP, &[0]).unwrap();
        // The takeover loop serves other calls normally.
        assert_usable(&mut s);
        let cap = data(b"the guest will lie about this one");
        let result = match op {
            0 => s.put_cap(&cap).map(drop),
            1 => s.put_cap_with_hash(cap.hash(), &cap),
            _ => s.put_cap_graph(&cap).map(drop),
        };
        assert!(
            matches!(result, Err(HyperlightError::ProtocolViolation(_))),
            "{op}: {result:?}"
        );
        assert_poisoned(&mut s);
    }
    bystander.check();
}

#[test]
fn hostile_guest_refusing_every_cap_gets_cap_rejected() {
    let mut s = hostile();
    let child = data(b"stored before the refusals");
    assert_eq!(s.put_cap(&child).unwrap(), child.hash());
    s.call_raw(h::LIE_ON_PUT_CAP, &[1]).unwrap();
    assert!(matches!(
        s.put_cap(&data(b"refused")),
        Err(HyperlightError::CapRejected)
    ));
    // Every child present (by GET_CAP): a plain rejection.
    let node = Cap::cnode(vec![Slot::Hash(child.hash())]);
    assert!(matches!(
        s.put_cap(&node),
        Err(HyperlightError::CapRejected)
    ));
    // A child the guest lacks is named.
    let missing = data(b"never sent");
    let orphan = Cap::cnode(vec![Slot::Hash(missing.hash())]);
    assert!(matches!(
        s.put_cap(&orphan),
        Err(HyperlightError::CapMissingChild { child }) if child == missing.hash()
    ));
    // Refusing is the guest's right: the sandbox stays usable.
    assert_usable(&mut s);
}

#[test]
fn hostile_child_acknowledged_but_not_stored_is_caught_by_put_cap_graph() {
    let bystander = Bystander::new();
    // put_cap alone cannot tell: the answer is the right hash. GET_CAP,
    // which is verified, shows the truth.
    let mut s = hostile();
    s.call_raw(h::LIE_ON_PUT_CAP, &[2]).unwrap();
    let child = Arc::new(data(b"acknowledged, never stored"));
    assert_eq!(s.put_cap(&child).unwrap(), child.hash());
    assert_eq!(s.get_cap(child.hash()).unwrap(), None);
    assert_usable(&mut s);
    // put_cap_graph sends the child, then the guest refuses the parent for
    // lacking it: a lie.
    let mut s = hostile();
    s.call_raw(h::LIE_ON_PUT_CAP, &[2]).unwrap();
    let root = Cap::cnode(vec![Slot::Ref(Arc::clone(&child))]);
    let err = s.put_cap_graph(&root).unwrap_err();
    assert!(
        matches!(err, HyperlightError::ProtocolViolation(_)),
        "{err:?}"
    );
    assert_poisoned(&mut s);
    bystander.check();
}

#[test]
fn hostile_get_cap_answering_another_cap_is_a_protocol_violation() {
    let bystander = Bystander::new();
    let held = data(b"held");
    let absent = data(b"absent");
    // Selector 0: another valid cap; 1: bytes that are no cap.
    for sel in 0..=1u8 {
        for asked in [&held, &absent] {
            let mut s = hostile();
            assert_eq!(s.put_cap(&held).unwrap(), held.hash());
            s.call_raw(h::LIE_ON_GET_CAP, &[sel]).unwrap();
            let err = s.get_cap(asked.hash()).unwrap_err();
            assert!(
                matches!(err, HyperlightError::ProtocolViolation(_)),
                "{sel}: {err:?}"
            );
            assert_poisoned(&mut s);
        }
    }
    // The lie also reaches put_cap, which asks GET_CAP why a CNode was
    // refused.
    let mut s = hostile();
    s.call_raw(h::LIE_ON_GET_CAP, &[0]).unwrap();
    let orphan = Cap::cnode(vec![Slot::Hash(absent.hash())]);
    let err = s.put_cap(&orphan).unwrap_err();
    assert!(
        matches!(err, HyperlightError::ProtocolViolation(_)),
        "{err:?}"
    );
    assert_poisoned(&mut s);
    bystander.check();
}

#[test]
fn hostile_fake_directory_slot_is_only_a_hint() {
    let bystander = Bystander::new();
    let mut s = hostile();
    let leaf = Arc::new(data(b"claimed, not held"));
    let mid = Arc::new(Cap::cnode(vec![Slot::Ref(Arc::clone(&leaf))]));
    let root = Cap::cnode(vec![Slot::Ref(Arc::clone(&mid)), Slot::Empty]);
    for fake in [leaf.hash(), mid.hash()] {
        s.call_raw(h::FAKE_DIRECTORY_SLOT, fake.as_bytes()).unwrap();
        assert!(s.cache_reader().unwrap().contains(&fake));
    }
    // The exit-free path trusts the hint (documented): no exit, and the
    // guest still lacks the cap, as the verified GET_CAP says.
    let exits = s.exit_count();
    s.put_cap_with_hash(leaf.hash(), &leaf).unwrap();
    assert_eq!(s.exit_count(), exits);
    assert_eq!(s.get_cap(leaf.hash()).unwrap(), None);
    // put_cap_graph skips both on the reader's word, the guest refuses the
    // root, and the walk publishes mid and leaf for real.
    assert_eq!(s.put_cap_graph(&root).unwrap(), root.hash());
    for cap in [&*leaf, &*mid, &root] {
        let got = s.get_cap(cap.hash()).unwrap().expect("the guest holds it");
        assert_eq!(got.hash(), cap.hash());
    }
    assert_usable(&mut s);
    bystander.check();
}

#[test]
fn hostile_caller_hash_mismatch_is_a_typed_error_that_sends_nothing() {
    let mut s = hostile();
    let cap = data(b"the cap");
    let wrong = data(b"another cap").hash();
    let err = s.put_cap_with_hash(wrong, &cap).unwrap_err();
    assert!(
        matches!(err, HyperlightError::CapHashMismatch { given, computed }
            if given == wrong && computed == cap.hash()),
        "{err:?}"
    );
    assert_eq!(s.directory_stats().unwrap().count, 0, "nothing was sent");
    assert_usable(&mut s);
    s.put_cap_with_hash(cap.hash(), &cap).unwrap();
    assert_eq!(s.get_cap(cap.hash()).unwrap(), Some(cap));
}

/// One port-I/O record for `PORT_IO`.
fn port(out: bool, size: u8, port: u16, value: u32) -> Vec<u8> {
    let mut r = vec![u8::from(!out), size];
    r.extend(port.to_le_bytes());
    r.extend(value.to_le_bytes());
    r
}

/// Whether an error is the one a case expects.
type Expected = fn(&HyperlightError) -> bool;

#[test]
fn hostile_port_io_is_a_typed_error() {
    let cases: [(Vec<u8>, Expected); 14] = [
        // IOPL 0 and a TSS I/O bitmap that opens only 0xE0..=0xEB: any
        // other port is #GP in the guest (docs/security.md).
        (port(true, 1, 0x3f8, 0x41), |e| {
            matches!(e, HyperlightError::GuestFault { vector: 13, .. })
        }),
        (port(false, 1, 0x60, 0), |e| {
            matches!(e, HyperlightError::GuestFault { vector: 13, .. })
        }),
        (port(false, 4, 0xE1, 0), |e| {
            matches!(e, HyperlightError::UnexpectedPort { port: 0xE1, .. })
        }),
        // Open in the bitmap, but no exit port: an unknown port.
        (port(true, 1, 0xE9, 0x34), |e| {
            matches!(
                e,
                HyperlightError::UnexpectedPort {
                    port: 0xE9,
                    value: 0x34
                }
            )
        }),
        // A 4-byte access from 0xE9 also touches 0xEC, which is closed.
        (port(true, 4, 0xE9, 0), |e| {
            matches!(e, HyperlightError::GuestFault { vector: 13, .. })
        }),
        // Ports past the TSS I/O bitmap: #GP.
        (port(true, 4, 0x400, 7), |e| {
            matches!(e, HyperlightError::GuestFault { vector: 13, .. })
        }),
        (port(false, 4, 0x8000, 0), |e| {
            matches!(e, HyperlightError::GuestFault { vector: 13, .. })
        }),
        // Exit ports at the wrong time, or without what they promise.
        (port(true, 4, 0xE0, 0), |e| {
            matches!(e, HyperlightError::ProtocolViolation(_))
        }),
        (port(true, 4, 0xE1, 0), |e| {
            matches!(e, HyperlightError::ProtocolViolation(_))
        }),
        (port(true, 1, 0xE1, 0), |e| {
            matches!(e, HyperlightError::ProtocolViolation(_))
        }),
        (port(true, 4, 0xE2, 0x10), |e| {
            matches!(e, HyperlightError::ProtocolViolation(_))
        }),
        (port(true, 4, 0xE3, 0), |e| {
            matches!(e, HyperlightError::ProtocolViolation(_))
        }),
        (port(true, 4, 0xE4, 9), |e| {
            matches!(e, HyperlightError::ProtocolViolation(_))
        }),
        (port(true, 4, 0xE5, 14), |e| {
            matches!(e, HyperlightError::ProtocolViolation(_))
        }),
    ];
    for (record, expected) in cases {
        let err = poisoning_attack(h::PORT_IO, &record);
        assert!(expected(&err), "{record:?}: {err:?}");
    }
}

#[test]
fn hostile_resident_ports_out_of_turn() {
    use nub_sandbox::{CallMode, UninitializedSandbox};
    let out = |p: u16| port(true, 4, p, 0);
    // In an exit-mode sandbox PARK and NOTIFY are lies.
    let exit_mode = |p: u16| {
        let cfg = SandboxConfiguration::default().with_call_mode(CallMode::Exit);
        let mut s = UninitializedSandbox::new(
            nub_sandbox::GuestBinary::FilePath(nub_tests::HOSTILE_GUEST.into()),
            Some(cfg.with_max_execution_time(Some(nub_tests::HOSTILE_CALL_DEADLINE))),
        )
        .unwrap()
        .evolve()
        .unwrap();
        let err = s.call_raw(h::PORT_IO, &out(p)).unwrap_err();
        assert!(s.is_poisoned());
        err
    };
    assert!(matches!(
        exit_mode(0xE7),
        HyperlightError::ProtocolViolation(_)
    ));
    assert!(matches!(
        exit_mode(0xE8),
        HyperlightError::ProtocolViolation(_)
    ));
    // In a resident sandbox a spurious NOTIFY or PARK is harmless: a PARK
    // hands the VM back and the caller runs the rest of the call itself.
    let resident = |deadline: Duration| {
        let cfg = SandboxConfiguration::default()
            .with_call_mode(CallMode::resident())
            .with_max_execution_time(Some(deadline));
        UninitializedSandbox::new(
            nub_sandbox::GuestBinary::FilePath(nub_tests::HOSTILE_GUEST.into()),
            Some(cfg),
        )
        .unwrap()
        .evolve()
        .unwrap()
    };
    let mut s = resident(nub_tests::HOSTILE_CALL_DEADLINE);
    s.call_raw(h::PORT_IO, &out(0xE8)).unwrap();
    assert_usable(&mut s);
    let mut s = resident(nub_tests::HOSTILE_CALL_DEADLINE);
    assert_eq!(s.call_raw(h::PORT_IO, &out(0xE7)).unwrap(), b"");
    assert_usable(&mut s);
}

#[test]
fn hostile_port_io_to_the_log_port_is_harmless() {
    // A spurious LOG exit: the host drains an empty buffer and resumes.
    let mut s = hostile();
    assert_eq!(
        s.call_raw(h::PORT_IO, &port(true, 4, 0xE6, 0)).unwrap(),
        b""
    );
    assert_usable(&mut s);
}

/// What selector `sel` of `PRIVILEGED` may end in.
fn privileged_outcome_ok(sel: u8, result: &Result<Vec<u8>, HyperlightError>) -> bool {
    use HyperlightError::GuestFault;
    match (sel, result) {
        // cli, hlt, mov cr3, wrmsr, sti, lidt, swapgs, rdmsr, mov dr7,
        // wbinvd: #GP at CPL 3.
        (0 | 1 | 4 | 5 | 8 | 9 | 15 | 17 | 18 | 19, Err(GuestFault { vector: 13, .. })) => true,
        // iretq to a CPL 0 frame: #GP with the code selector as error code.
        (
            3,
            Err(GuestFault {
                vector: 13,
                error_code: 8,
                ..
            }),
        ) => true,
        // int n to a kernel-only or missing gate: #GP (kvm_pvm reports
        // #UD).
        (2 | 6 | 16, Err(GuestFault { vector: 6 | 13, .. })) => true,
        // int3: #BP, or #GP where its gate is kernel-only.
        (7, Err(GuestFault { vector: 3 | 13, .. })) => true,
        // syscall with EFER.SCE clear: #UD (kvm_pvm jumps to LSTAR = 0,
        // which is the unmapped null page: a user-mode fetch #PF at 0).
        (10, Err(GuestFault { vector: 6, .. })) => true,
        (
            10,
            Err(GuestFault {
                vector: 14, rip: 0, ..
            }),
        ) => true,
        // sysenter: #GP (SYSENTER_CS is 0) or #UD.
        (11, Err(GuestFault { vector: 6 | 13, .. })) => true,
        // vmcall/vmmcall: #UD or #GP, or KVM answers the hypercall with an
        // error (it refuses CPL 3).
        (12 | 13, Err(GuestFault { vector: 6 | 13, .. })) => true,
        (12 | 13, Ok(answer)) => answer == b"executed",
        // SSE: the host enables it (CR4.OSFXSR; docs/abi.md), so it runs.
        (14, Ok(answer)) => answer == b"executed",
        // icebp: #DB.
        (20, Err(GuestFault { vector: 1, .. })) => true,
        // rep outsb from the unmapped null page: a user-mode read #PF.
        (
            21,
            Err(GuestFault {
                vector: 14,
                cr2: 0,
                error_code,
                ..
            }),
        ) => error_code & 0b110 == 0b100,
        // String I/O on an open non-exit port: the first byte exits.
        (
            22 | 25,
            Err(HyperlightError::UnexpectedPort {
                port: 0xE9,
                value: 0,
            }),
        ) => true,
        (
            23,
            Err(HyperlightError::UnexpectedPort {
                port: 0xE9,
                value: 0x42,
            }),
        ) => true,
        // rep outsb to DONE mid-call: DONE without a response.
        (24, Err(HyperlightError::ProtocolViolation(_))) => true,
        _ => false,
    }
}

#[test]
fn hostile_privileged_instructions_fault_and_never_escalate() {
    let bystander = Bystander::new();
    for sel in 0..=25u8 {
        let mut s = hostile();
        let result = s.call_raw(h::PRIVILEGED, &[sel]);
        assert!(privileged_outcome_ok(sel, &result), "{sel}: {result:?}");
        if result.is_ok() {
            assert_usable(&mut s);
        } else {
            assert_poisoned(&mut s);
        }
    }
    bystander.check();
}

#[test]
fn hostile_heap_exhaustion_is_out_of_memory() {
    let err = poisoning_attack(h::EXHAUST_HEAP, &[0]);
    assert!(
        matches!(err, HyperlightError::GuestOutOfMemory { size } if size > 0),
        "{err:?}"
    );
    let err = poisoning_attack(h::EXHAUST_HEAP, &[1]);
    assert!(
        matches!(err, HyperlightError::GuestOutOfMemory { size: 0x4000_0000 }),
        "{err:?}"
    );
}

#[test]
fn hostile_scribbling_every_writable_page_harms_only_the_guest() {
    let bystander = Bystander::new();
    let mut s = hostile();
    let before = s.heap_stats().unwrap();
    let layout = *s.layout();
    for pattern in [0xA5u8, 0x00, 0xFF] {
        let written = s.call_raw(h::SCRIBBLE_EVERYTHING, &[pattern]).unwrap();
        let written = u64::from_le_bytes(written.try_into().unwrap());
        // At least the input ring's data and half the heap.
        assert!(
            written > layout.input_ring.size + layout.heap.size / 2,
            "{written} bytes"
        );
        assert_usable(&mut s);
        assert_eq!(
            s.heap_stats().unwrap().used,
            before.used,
            "the hoard was freed"
        );
    }
    // The report page and the handlers' stack were scribbled over; a fault
    // is still reported exactly.
    let err = s.call_raw(h::REWRITE_BOOT_INFO, &[0]).unwrap_err();
    assert!(
        matches!(err, HyperlightError::GuestFault { vector: 14, cr2, .. } if cr2 == BOOT_INFO_GPA + 104),
        "{err:?}"
    );
    assert_poisoned(&mut s);
    bystander.check();
}

#[test]
fn hostile_lies_never_reach_a_sandbox_of_the_other_guest() {
    // A default-guest sandbox and a hostile one side by side, the hostile
    // one lying on every cap call; caps move between them only verified.
    let mut honest = sandbox();
    let mut liar = hostile();
    let cap = data(b"moved between sandboxes");
    assert_eq!(liar.put_cap(&cap).unwrap(), cap.hash());
    liar.call_raw(h::LIE_ON_GET_CAP, &[0]).unwrap();
    let moved = liar.get_cap(cap.hash());
    assert!(matches!(moved, Err(HyperlightError::ProtocolViolation(_))));
    // The honest sandbox never got a wrong cap under that hash.
    assert_eq!(honest.get_cap(cap.hash()).unwrap(), None);
    assert_eq!(honest.put_cap(&cap).unwrap(), cap.hash());
    assert_eq!(honest.get_cap(cap.hash()).unwrap(), Some(cap));
    assert_poisoned(&mut liar);
}

// Id 18: the log buffer. The guest corrupts it and answers; the host's
// drain after the call meets the corruption.

/// One record as the host's logger received it.
#[derive(Debug, Clone)]
struct LogLine {
    target: String,
    level: log::Level,
    message: String,
}

/// A logger that keeps every record (tests filter by sandbox id).
struct LogCapture(Mutex<Vec<LogLine>>);

impl log::Log for LogCapture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(LogLine {
                target: record.target().to_string(),
                level: record.level(),
                message: record.args().to_string(),
            });
    }

    fn flush(&self) {}
}

/// The process's logger (one `log::set_logger` per test binary).
fn log_capture() -> &'static LogCapture {
    static CAPTURE: OnceLock<&'static LogCapture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static LogCapture = Box::leak(Box::new(LogCapture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}

/// What sandbox `id` emitted with target `nub::guest`: `(level, message
/// without the sandbox prefix)`.
fn guest_lines(id: u64) -> Vec<(log::Level, String)> {
    let prefix = format!("[sandbox {id}] ");
    log_capture()
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.target == GUEST_LOG_TARGET)
        .filter_map(|l| Some((l.level, l.message.strip_prefix(&prefix)?.to_string())))
        .collect()
}

/// The module path the hostile guest's `corrupt_log` logs under.
const LOG_MODULE: &str = "nub_hostile_guest::logs";

/// An info record of `corrupt_log` as the host emits it.
fn info(message: &str) -> (log::Level, String) {
    (log::Level::Info, format!("{LOG_MODULE}: {message}"))
}

/// What a log attack left: the sandbox, its call's result and what it
/// emitted.
type LogOutcome = (
    MultiUseSandbox,
    Result<Vec<u8>, HyperlightError>,
    Vec<(log::Level, String)>,
);

/// Runs `CORRUPT_LOG` with `payload` on a fresh hostile sandbox (a
/// bystander built before, checked after).
fn log_attack(payload: &[u8]) -> LogOutcome {
    log_capture();
    let bystander = Bystander::new();
    let mut s = hostile();
    let result = s.call_raw(h::CORRUPT_LOG, payload);
    let lines = guest_lines(s.id());
    bystander.check();
    (s, result, lines)
}

/// A malformed buffer: a poisoning protocol violation naming the log
/// buffer, with exactly `emitted` records emitted before it.
fn assert_log_violation(payload: &[u8], emitted: &[(log::Level, String)]) {
    let (mut s, result, lines) = log_attack(payload);
    let err = result.expect_err("a malformed log buffer fails the call");
    assert!(
        matches!(&err, HyperlightError::ProtocolViolation(Violation::Log(_))),
        "{payload:?}: {err:?}"
    );
    assert_poisoned(&mut s);
    assert_eq!(lines, emitted, "{payload:?}");
}

#[test]
fn hostile_log_write_offset_past_the_data_area_is_a_protocol_violation() {
    // Selector 0: one past the data area; 1: u64::MAX. Nothing in the
    // buffer can be trusted, so nothing is emitted.
    for sel in [0u8, 1] {
        assert_log_violation(&[sel], &[]);
    }
}

#[test]
fn hostile_log_record_with_a_bad_level_is_a_protocol_violation_after_the_good_ones() {
    assert_log_violation(&[2], &[info("before the bad level")]);
}

#[test]
fn hostile_log_record_running_past_write_is_a_protocol_violation_after_the_good_ones() {
    assert_log_violation(&[3], &[info("before the long record")]);
}

/// The hostile guest's garbage generator (`logs::garbage`), run on the
/// host.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = if seed == 0 { 1 } else { seed };
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn hostile_log_garbage_with_a_plausible_write_is_judged_exactly_like_the_parser_says() {
    let capacity = log_buffer::capacity(hostile().layout().log_buffer.size as usize);
    let cases: [(u64, u16); 6] = [
        (0, 0),
        (0, 64),
        (1, 4),
        (0xDEAD_BEEF, 1000),
        (u64::MAX, u16::MAX),
        (0x0303_0303_0303_0303, 16),
    ];
    for (seed, len) in cases {
        let mut payload = vec![4u8];
        payload.extend(seed.to_le_bytes());
        payload.extend(len.to_le_bytes());
        let bytes = garbage(seed, usize::from(len).min(capacity));
        // What the host's parser makes of these bytes.
        let mut expected = Vec::new();
        let mut malformed = false;
        for record in log_buffer::parse_records(&bytes) {
            match record {
                Ok(r) => expected.push((
                    match r.level {
                        LogLevel::Error => log::Level::Error,
                        LogLevel::Warn => log::Level::Warn,
                        LogLevel::Info => log::Level::Info,
                        LogLevel::Debug => log::Level::Debug,
                        LogLevel::Trace => log::Level::Trace,
                    },
                    format!(
                        "{}: {}",
                        String::from_utf8_lossy(r.target),
                        String::from_utf8_lossy(r.message)
                    ),
                )),
                Err(_) => malformed = true,
            }
        }
        let (mut s, result, lines) = log_attack(&payload);
        assert_eq!(lines, expected, "seed {seed:#x}, {len} bytes");
        if malformed {
            let err = result.expect_err("garbage fails the call");
            assert!(
                matches!(err, HyperlightError::ProtocolViolation(_)),
                "{seed:#x}: {err:?}"
            );
            assert_poisoned(&mut s);
        } else {
            let write = result.expect("well-formed bytes are records");
            assert_eq!(write, (bytes.len() as u64).to_le_bytes());
            assert_usable(&mut s);
        }
    }
}

#[test]
fn hostile_log_huge_dropped_count_emits_the_records_and_one_warning() {
    let (mut s, result, lines) = log_attack(&[5]);
    let write = u64::from_le_bytes(
        result
            .expect("a huge count is harmless")
            .try_into()
            .unwrap(),
    );
    let mut expected: Vec<_> = (0..3).map(|i| info(&format!("valid record {i}"))).collect();
    expected.push((
        log::Level::Warn,
        format!("the guest dropped {} log records", u64::MAX),
    ));
    assert_eq!(lines, expected);
    let sizes: usize = (0..3)
        .map(|i| log_buffer::record_size(LOG_MODULE.len(), format!("valid record {i}").len()))
        .sum();
    assert_eq!(write, sizes as u64);
    // The host reset the count: the next call warns no more.
    assert_usable(&mut s);
    assert_eq!(guest_lines(s.id()), expected);
}

/// The records the host emits when the guest logs `count` records into a
/// buffer of `size` bytes, scribbles `write` and logs once more: every
/// record drained while the buffer filled up, then only the last one (the
/// records since the last drain were in the scribbled buffer, which the
/// guest's logger restarted).
fn expected_after_scribble(size: usize, count: u32) -> Vec<(log::Level, String)> {
    let mut region = vec![0u8; size];
    let mut emitted = Vec::new();
    let mut held = Vec::new();
    for i in 0..count {
        let message = format!("record {i}");
        let append = |r: &mut [u8]| {
            log_buffer::append(r, LogLevel::Info, LOG_MODULE.as_bytes(), message.as_bytes())
        };
        if append(&mut region) == Appended::Full {
            emitted.append(&mut held);
            log_buffer::reset(&mut region);
            assert_eq!(append(&mut region), Appended::Stored);
        }
        held.push(info(&message));
    }
    emitted.push(info("after the scribble"));
    emitted
}

#[test]
fn hostile_log_header_scribbled_mid_call_makes_the_logger_restart_the_buffer() {
    for count in [0u32, 3, 1000] {
        let size = hostile().layout().log_buffer.size as usize;
        let mut payload = vec![6u8];
        payload.extend(count.to_le_bytes());
        let (mut s, result, lines) = log_attack(&payload);
        // The logger restarted at 0: `write` is exactly the last record.
        let write = u64::from_le_bytes(result.expect("the guest's own mess").try_into().unwrap());
        assert_eq!(
            write,
            log_buffer::record_size(LOG_MODULE.len(), "after the scribble".len()) as u64,
            "{count}"
        );
        let expected = expected_after_scribble(size, count);
        assert_eq!(lines, expected, "{count}");
        if count == 1000 {
            assert!(expected.len() > 2, "the buffer filled up and was drained");
        }
        // Nothing outside the buffer was written: the heap and the
        // dispatcher still work, and no stale record comes back.
        assert!(s.heap_stats().is_ok());
        assert_usable(&mut s);
        assert_eq!(guest_lines(s.id()), expected);
    }
}
