//! Ids 11 and 12: lying system functions.
//!
//! The kernel serves PUT_CAP and GET_CAP itself and gives guests no hook
//! into them. So the first of these functions to run takes the request loop
//! over: it answers its own request, then serves every later request with
//! the kernel's public dispatcher and a [`SystemFunctions`] table that
//! wraps the kernel's and lies as the flags say. It never returns to the
//! kernel's loop.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use nub_arch_x86::{
    GuestError, Output, Registry,
    abi::{
        boot::BootInfo,
        ports::ExitPort,
        resident::{BOOT_FLAG_RESIDENT, COMPLETION, DOORBELL},
        ring::{FrameKind, RingWriter},
        rpc::{self, Status},
    },
    arch::io,
    dispatch::{self, SystemFunctions},
    javm_cap::wire::{self, WireCap},
    resident::{self, ControlWords},
    state_cache::DIRECTORY,
    system::{GET_CAP_FOUND, KernelSystem},
};

use crate::{boot, register_all, selector};

/// Whether the takeover loop is running.
static TAKEN_OVER: AtomicBool = AtomicBool::new(false);
/// How PUT_CAP lies: [`PUT_HONEST`], [`PUT_WRONG_HASH`], [`PUT_REFUSE`],
/// [`PUT_DISCARD_DATA`].
static LIE_PUT: AtomicU8 = AtomicU8::new(PUT_HONEST);

const PUT_HONEST: u8 = 0;
const PUT_WRONG_HASH: u8 = 1;
const PUT_REFUSE: u8 = 2;
const PUT_DISCARD_DATA: u8 = 3;
/// How GET_CAP lies: [`GET_HONEST`], [`GET_OTHER_CAP`], [`GET_MALFORMED`].
static LIE_GET: AtomicU8 = AtomicU8::new(GET_HONEST);

const GET_HONEST: u8 = 0;
const GET_OTHER_CAP: u8 = 1;
const GET_MALFORMED: u8 = 2;

/// The cap a lying GET_CAP answers with.
const OTHER_CAP: &[u8] = b"not the cap you asked for";

/// Id 11: from now on PUT_CAP stores the cap but answers with its hash
/// with one bit flipped (or a constant, where the honest answer is the
/// sentinel): never the sentinel, never the right hash. Selector 1
/// instead refuses every cap (answers the sentinel), which is the guest's
/// right; selector 2 answers a data cap's right hash without storing it
/// (CNodes are honest, so their merkle check then misses the child).
pub fn lie_on_put_cap(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let mode = match selector(input) {
        0 => PUT_WRONG_HASH,
        1 => PUT_REFUSE,
        _ => PUT_DISCARD_DATA,
    };
    LIE_PUT.store(mode, Ordering::Relaxed);
    take_over()
}

/// Id 12: from now on GET_CAP answers "found" with another cap (selector
/// 0) or with bytes that are no cap (selector 1), whatever was asked.
pub fn lie_on_get_cap(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let mode = if selector(input) == 0 {
        GET_OTHER_CAP
    } else {
        GET_MALFORMED
    };
    LIE_GET.store(mode, Ordering::Relaxed);
    take_over()
}

/// The kernel's system functions, with lies.
struct Liar(KernelSystem);

impl Liar {
    fn lie_put(mode: u8, out: &mut Output<'_>) -> Result<(), GuestError> {
        let mut hash = [0x5A; 32];
        if mode == PUT_REFUSE {
            hash = [0xFF; 32];
        } else if let Ok(honest) = <[u8; 32]>::try_from(out.as_slice())
            && honest != [0xFF; 32]
        {
            hash = honest;
            hash[0] ^= 1;
        }
        out.clear();
        out.write(&hash)
    }

    fn lie_get(mode: u8, out: &mut Output<'_>) -> Result<(), GuestError> {
        out.clear();
        out.write(&[GET_CAP_FOUND])?;
        if mode == GET_MALFORMED {
            return out.write(&[0xAB, 0xCD, 0xEF, 0x01, 0x23]);
        }
        let bytes = wire::encode(&WireCap::Data(Vec::from(OTHER_CAP)))
            .map_err(|_| GuestError::new("cannot encode the other cap"))?;
        out.write(&bytes)
    }
}

impl SystemFunctions for Liar {
    fn call(
        &mut self,
        fn_id: u32,
        input: &[u8],
        out: &mut Output<'_>,
    ) -> Option<Result<(), GuestError>> {
        if fn_id == rpc::FN_ID_NUB_PUT_CAP
            && LIE_PUT.load(Ordering::Relaxed) == PUT_DISCARD_DATA
            && let Ok(cap) = wire::access(input)
            && cap.data().is_some()
        {
            return Some(out.write(cap.hash().as_bytes()));
        }
        let honest = self.0.call(fn_id, input, out)?;
        Some(match fn_id {
            rpc::FN_ID_NUB_PUT_CAP => match LIE_PUT.load(Ordering::Relaxed) {
                mode @ (PUT_WRONG_HASH | PUT_REFUSE) => Self::lie_put(mode, out),
                _ => honest,
            },
            rpc::FN_ID_NUB_GET_CAP => match LIE_GET.load(Ordering::Relaxed) {
                GET_HONEST => honest,
                mode => Self::lie_get(mode, out),
            },
            _ => honest,
        })
    }
}

/// The two ring regions.
///
/// # Safety
/// The caller must hold no other live reference to either ring while it
/// uses these slices.
unsafe fn rings(info: &BootInfo) -> (&'static mut [u8], &'static mut [u8]) {
    // SAFETY: addresses and sizes come from the host's BootInfo and
    // describe the two distinct mapped RW rings; exclusivity is the
    // caller's promise.
    unsafe {
        (
            core::slice::from_raw_parts_mut(
                info.input_ring_va as *mut u8,
                info.input_ring_size as usize,
            ),
            core::slice::from_raw_parts_mut(
                info.output_ring_va as *mut u8,
                info.output_ring_size as usize,
            ),
        )
    }
}

/// Replaces the kernel's request loop with one that lies (once; later
/// calls just answer, the loop already runs).
fn take_over() -> Result<(), GuestError> {
    if TAKEN_OVER.swap(true, Ordering::Relaxed) {
        return Ok(());
    }
    let info = boot();
    let mut kernel_info = info;
    kernel_info.directory_va = DIRECTORY.lock().header_addr();
    let mut registry = Registry::new();
    register_all(&mut registry);
    let mut system = Liar(KernelSystem {
        boot_info: kernel_info,
        heap_stats: nub_arch_x86::heap_stats,
    });
    // SAFETY: the kernel's dispatcher up the stack holds slices of both
    // rings (and the request payload this function was given), but this
    // function never returns to it, so they are never used again; the
    // payload was read before this point.
    let (input, output) = unsafe { rings(&info) };
    // Answer the request that brought us here (Ok, empty), where the
    // kernel was about to put its response, and consume it.
    let (Ok(mut out_ring), Ok(mut in_ring)) = (RingWriter::new(output), RingWriter::new(input))
    else {
        nub_arch_x86::abort(0xBAD, "hostile guest: rings too small")
    };
    let answered = out_ring.push_with(FrameKind::Response, |body| {
        rpc::encode_response(body, Status::Ok as u32, &[])
    });
    let next = in_ring
        .reader()
        .offsets()
        .ok()
        .and_then(|(head, tail)| in_ring.reader().frame_at(head, tail).ok())
        .map(|frame| frame.next);
    let (Ok(_), Some(next)) = (answered, next) else {
        nub_arch_x86::abort(0xBAD, "hostile guest: cannot answer its own request")
    };
    in_ring.set_head(next);
    // The rest of a batch, then every later run.
    dispatch::process_requests(input, output, &registry, &mut system);
    if info.flags & BOOT_FLAG_RESIDENT != 0 {
        // Resident mode: the kernel's protocol, through the public
        // resident module (the batch in flight is the current doorbell).
        // SAFETY: the host maps the page-aligned control block and both
        // rings RW for the guest's life; the control words and the ring
        // headers' doorbell and completion words (8-byte aligned in the
        // page-aligned rings) are accessed only atomically by both sides,
        // and never while the ring slices below are used.
        let words = unsafe {
            ControlWords::from_parts(
                info.control_va as *mut u64,
                (info.input_ring_va as usize + DOORBELL) as *mut u64,
                (info.output_ring_va as usize + COMPLETION) as *mut u64,
            )
        };
        let mut exits = PortExits;
        let mut last = words.doorbell.load(Ordering::Acquire);
        resident::complete(&words, &mut exits, last);
        loop {
            let seq = resident::wait_for_request(&words, &mut exits, last);
            // SAFETY: as below: the only ring slices while it runs.
            let (input, output) = unsafe { rings(&info) };
            dispatch::process_requests(input, output, &registry, &mut system);
            resident::complete(&words, &mut exits, seq);
            last = seq;
        }
    }
    loop {
        io::exit(ExitPort::Done, 0);
        // SAFETY: the previous slices are no longer used; these are the
        // only ones while the dispatcher runs.
        let (input, output) = unsafe { rings(&info) };
        dispatch::process_requests(input, output, &registry, &mut system);
    }
}

/// Resident mode's exits, for the takeover loop.
struct PortExits;

impl resident::Exits for PortExits {
    fn park(&mut self) {
        io::exit(ExitPort::Park, 0);
    }

    fn notify(&mut self) {
        io::exit(ExitPort::Notify, 0);
    }
}
