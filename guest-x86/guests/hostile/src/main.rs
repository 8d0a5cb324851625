//! The hostile nub guest. Every function attacks the host/guest ABI the
//! way a compromised guest could; the hostile-guest tests
//! (`tests/tests/hostile.rs`) check that each attack ends in a typed error,
//! or in a correct answer where the lie is harmless, and never hurts the
//! host or another sandbox. Its fn ids are a contract with those tests.
//!
//! | id | name | payload | behaviour |
//! | --- | --- | --- | --- |
//! | 1 | `echo` | any bytes | the same bytes (a control) |
//! | 2 | `frame_past_end` | selector | a response frame whose length runs past the ring's end |
//! | 3 | `garbage_body` | selector | a response frame of valid length holding garbage, not rkyv |
//! | 4 | `payload_outside_frame` | selector | an archived payload pointing outside its frame |
//! | 5 | `bad_ring_header` | selector | an output ring header with head past tail or tail past capacity |
//! | 6 | `no_response` | - | exits DONE with no response written |
//! | 7 | `garbage_host_call` | selector | a host call with a garbage frame or offset |
//! | 8 | `host_calls_forever` | u32 LE host fn id | calls that host function forever |
//! | 9 | `rewrite_boot_info` | selector | writes the read-only boot page (faults), or forges its own copies |
//! | 10 | `corrupt_directory` | selector | corrupts the directory header and table |
//! | 11 | `lie_on_put_cap` | selector | from now on answers PUT_CAP with a wrong non-sentinel hash (selector 1: refuses every cap; 2: acknowledges data caps without storing them) |
//! | 12 | `lie_on_get_cap` | selector | from now on answers GET_CAP with a different (or malformed) cap |
//! | 13 | `fake_directory_slot` | 32-byte hash | an occupied directory slot for that hash, which it does not hold |
//! | 14 | `port_io` | 8-byte records | port I/O on the ports and values given |
//! | 15 | `privileged` | selector | a privileged instruction |
//! | 16 | `exhaust_heap` | selector | allocates until the heap is exhausted |
//! | 17 | `scribble_everything` | pattern byte | writes the pattern over every page it can spare, then answers |
//! | 18 | `corrupt_log` | selector (+ arguments) | corrupts the log buffer (bad `write`, bad records, garbage, huge `dropped`, a scribble mid-call), then answers |
//! | 19 | `late_completion` | u32 LE spin windows | resident: once the caller sleeps, waits, answers `b"late"` and stores the completion without NOTIFY, then spins |
//! | 20 | `answer_then_spin` | - | resident: answers `b"answered"`, then spins with no call open |
//! | 21 | `answer_then_log_flood` | - | resident: answers `b"answered"`, then logs with no call open |
//! | 22 | `bad_status_then_log_flood` | - | answers with status [`BAD_STATUS`], then logs without end if run again |
//! | 23 | `hostcall_without_notify` | selector | resident: bumps the host-call request word without NOTIFY (0: in the call, once the caller sleeps; 1: after answering), or (2) announces an inline request claiming 255 bytes, then spins |
//!
//! Without resident words (an exit-mode sandbox) 19, 20 and 23 spin and 21
//! logs until the call's deadline.
//!
//! At init it calls host function [`INIT_HOST_FN`]; an unknown host
//! function is ignored, the answer `b"spin"` makes init loop forever
//! (to test stopping `evolve()`), and the answer `b"forge directory"`
//! overwrites the directory address the kernel published in the control
//! block with [`FORGED_DIRECTORY_VA`] before READY (`b"hide directory"`:
//! with 0, so the host has to ask for it).
//!
//! Functions 2–7 never return to the kernel's dispatcher: they write the
//! rings themselves and leave through an exit port, and abort if the host
//! ever resumes them. Functions 11 and 12 replace the kernel's request loop
//! with their own, which answers through a lying system-function table; the
//! kernel itself stays honest.
#![no_std]
#![no_main]

extern crate alloc;

mod directory;
mod forge;
mod liar;
mod logs;
mod machine;
mod words;

use nub_arch_x86::{
    GuestError, GuestFn, Output, Registry,
    abi::{boot::BootInfo, layout::BOOT_INFO_GPA, resident::DIRECTORY_ADDRESS},
};

pub use nub_arch_x86::abi::hostile_guest::*;

/// The payload's first byte (0 if empty): most functions take a selector.
fn selector(input: &[u8]) -> u8 {
    input.first().copied().unwrap_or(0)
}

/// The host's BootInfo, read from the boot page (readable, not writable).
fn boot() -> BootInfo {
    // SAFETY: the host maps the boot page readable at BOOT_INFO_GPA with a
    // BootInfo (repr(C), 8-byte aligned at a page start) at its start; the
    // volatile read copies it out and keeps no reference.
    unsafe { (BOOT_INFO_GPA as *const BootInfo).read_volatile() }
}

fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    out.write(input)
}

/// Every function, by id (init and the takeover loop of 11/12 both use
/// it).
fn register_all(registry: &mut Registry) {
    let functions: [(u32, GuestFn); 23] = [
        (ECHO, echo),
        (FRAME_PAST_END, forge::frame_past_end),
        (GARBAGE_BODY, forge::garbage_body),
        (PAYLOAD_OUTSIDE_FRAME, forge::payload_outside_frame),
        (BAD_RING_HEADER, forge::bad_ring_header),
        (NO_RESPONSE, forge::no_response),
        (GARBAGE_HOST_CALL, forge::garbage_host_call),
        (HOST_CALLS_FOREVER, machine::host_calls_forever),
        (REWRITE_BOOT_INFO, machine::rewrite_boot_info),
        (CORRUPT_DIRECTORY, directory::corrupt_directory),
        (LIE_ON_PUT_CAP, liar::lie_on_put_cap),
        (LIE_ON_GET_CAP, liar::lie_on_get_cap),
        (FAKE_DIRECTORY_SLOT, directory::fake_directory_slot),
        (PORT_IO, machine::port_io),
        (PRIVILEGED, machine::privileged),
        (EXHAUST_HEAP, machine::exhaust_heap),
        (SCRIBBLE_EVERYTHING, machine::scribble_everything),
        (CORRUPT_LOG, logs::corrupt_log),
        (LATE_COMPLETION, words::late_completion),
        (ANSWER_THEN_SPIN, words::answer_then_spin),
        (ANSWER_THEN_LOG_FLOOD, words::answer_then_log_flood),
        (BAD_STATUS_THEN_LOG_FLOOD, words::bad_status_then_log_flood),
        (HOSTCALL_WITHOUT_NOTIFY, words::hostcall_without_notify),
    ];
    for (id, f) in functions {
        if registry.register(id, f).is_err() {
            nub_arch_x86::abort(1, "hostile guest: fn id refused");
        }
    }
}

fn init(registry: &mut Registry) {
    register_all(registry);
    // No such host function is the normal case: carry on.
    match nub_arch_x86::host_call(INIT_HOST_FN, b"init").as_deref() {
        Ok(b"spin") => loop {
            core::hint::spin_loop();
        },
        Ok(b"forge directory") => publish_directory(FORGED_DIRECTORY_VA),
        Ok(b"hide directory") => publish_directory(0),
        _ => {}
    }
}

/// Overwrites the control block's published directory address with `va`.
fn publish_directory(va: u64) {
    let info = boot();
    if info.control_va == 0 {
        return;
    }
    let word = info.control_va + DIRECTORY_ADDRESS as u64;
    let ptr = core::ptr::with_exposed_provenance_mut::<u64>(word as usize);
    // SAFETY: BootInfo gives the mapped RW control page (8-byte aligned
    // words) for the guest's whole life; the kernel and the host reach the
    // word only atomically, as this store does.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(ptr) }
        .store(va, core::sync::atomic::Ordering::Release);
}

nub_arch_x86::guest_main!(init);
