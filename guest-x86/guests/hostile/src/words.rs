//! Ids 19–23: misuse of the resident protocol's words (docs/resident.md).
//! Each answers (or not) by writing the output ring and the words itself,
//! the way a compromised kernel could, and then never returns to the
//! kernel's loop: it spins, logs without end, or waits for an answer that
//! cannot come. In an exit-mode sandbox there are no words; every one of
//! them then spins (or logs) until the call's deadline, except 22, which
//! answers through DONE.

use core::sync::atomic::Ordering;

use nub_arch_x86::{
    GuestError, Output,
    abi::{
        ports::ExitPort,
        resident::{BOOT_FLAG_RESIDENT, COMPLETION, DOORBELL, HOSTCALL_INLINE, inline_call},
        rpc::Status,
    },
    arch::{KernelExits, io},
    resident::{self, ControlWords},
};

use crate::{BAD_STATUS, boot, forge, selector};

/// The control block's words, if the sandbox is resident.
fn words() -> Option<ControlWords<'static>> {
    let info = boot();
    if info.flags & BOOT_FLAG_RESIDENT == 0 || info.control_va == 0 {
        return None;
    }
    let at = |va: u64| core::ptr::with_exposed_provenance_mut::<u64>(va as usize);
    // SAFETY: BootInfo gives the mapped RW control page and the two ring
    // headers, whose `seq` words (8-byte aligned at their region's start
    // plus `SEQ_OFFSET`) live for the guest's whole life. The kernel and
    // the host reach all these words only through atomics, as this view
    // does.
    Some(unsafe {
        ControlWords::from_parts(
            at(info.control_va),
            at(info.input_ring_va + DOORBELL as u64),
            at(info.output_ring_va + COMPLETION as u64),
        )
    })
}

/// Never returns: spins with no exit at all.
fn spin_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Never returns: logs an error record after another (the buffer fills
/// and the logger exits through LOG to have it drained, again and again).
fn log_forever() -> ! {
    let mut n = 0u64;
    loop {
        log::error!("hostile log flood #{n}");
        n = n.wrapping_add(1);
    }
}

/// Spins until `HOST_WAITING` is 1: the caller has gone to sleep (or
/// runs the call on its own thread, where it is 1 throughout).
fn until_the_caller_sleeps(words: &ControlWords<'_>) {
    while words.host_waiting.load(Ordering::SeqCst) == 0 {
        core::hint::spin_loop();
    }
}

/// Answers the open call with `status` and `payload` and publishes its
/// completion as the kernel does (with the NOTIFY a sleeping caller needs).
fn answer_and_complete(words: &ControlWords<'_>, status: u32, payload: &[u8]) {
    forge::answer(status, payload);
    let seq = words.doorbell.load(Ordering::Acquire);
    resident::complete(words, &mut KernelExits, seq);
}

/// Id 19: waits until the caller sleeps, then `n` spin windows more
/// (payload u32 LE, each the host's `SPIN_ITERATIONS` polls; default
/// 1000), then writes a valid answer `b"late"` and stores the completion
/// **without** the NOTIFY a sleeping caller needs, and spins for ever.
pub fn late_completion(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let windows = input
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(1000, u32::from_le_bytes);
    let Some(words) = words() else { spin_forever() };
    until_the_caller_sleeps(&words);
    let polls = words.spin_iterations.load(Ordering::Relaxed).max(1);
    for _ in 0..u64::from(windows).saturating_mul(polls) {
        core::hint::spin_loop();
    }
    forge::answer(Status::Ok as u32, b"late");
    let seq = words.doorbell.load(Ordering::Acquire);
    words.completion.store(seq, Ordering::SeqCst);
    spin_forever()
}

/// Id 20: answers `b"answered"` (completion and NOTIFY as the kernel
/// would), then spins for ever with no call open.
pub fn answer_then_spin(_: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let Some(words) = words() else { spin_forever() };
    answer_and_complete(&words, Status::Ok as u32, b"answered");
    spin_forever()
}

/// Id 21: answers `b"answered"`, then logs for ever with no call open.
pub fn answer_then_log_flood(_: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let Some(words) = words() else { log_forever() };
    answer_and_complete(&words, Status::Ok as u32, b"answered");
    log_forever()
}

/// Id 22: answers with [`BAD_STATUS`] (through DONE in exit mode), then
/// logs for ever if it is ever run again.
pub fn bad_status_then_log_flood(_: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    match words() {
        Some(words) => answer_and_complete(&words, BAD_STATUS, b"bad status"),
        None => {
            forge::answer(BAD_STATUS, b"bad status");
            io::exit(ExitPort::Done, 0);
        }
    }
    log_forever()
}

/// Id 23: bumps the host-call request word without the NOTIFY a sleeping
/// caller needs. Selector 0: inside the call, once the caller sleeps, with
/// an offset no frame can have, then waits for an answer for ever;
/// selector 1: after answering `b"answered"`, then spins for ever;
/// selector 2: an inline request whose length word claims 255 bytes (its
/// line holds 40), announced with the NOTIFY, then spins for ever.
pub fn hostcall_without_notify(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let Some(words) = words() else { spin_forever() };
    match selector(input) {
        0 => until_the_caller_sleeps(&words),
        1 => answer_and_complete(&words, Status::Ok as u32, b"answered"),
        _ => {
            let request = words
                .hostcall_request
                .load(Ordering::Relaxed)
                .wrapping_add(1);
            words
                .hostcall_inline_call
                .store(inline_call(0xF00D, 255), Ordering::Relaxed);
            words
                .hostcall_offset
                .store(HOSTCALL_INLINE, Ordering::Relaxed);
            words.hostcall_request.store(request, Ordering::SeqCst);
            if words.host_waiting.load(Ordering::SeqCst) != 0 {
                io::exit(ExitPort::Notify, 0);
            }
            spin_forever()
        }
    }
    let request = words
        .hostcall_request
        .load(Ordering::Relaxed)
        .wrapping_add(1);
    // Not HOSTCALL_INLINE (u64::MAX): an offset past any ring.
    words.hostcall_offset.store(u64::MAX - 1, Ordering::Relaxed);
    words.hostcall_request.store(request, Ordering::SeqCst);
    spin_forever()
}
