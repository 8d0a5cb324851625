//! The hardware-specific kernel: entry, port I/O, heap, panic handler.
//! Built only for `x86_64-unknown-none`.
//!
//! The kernel runs entirely at CPL 3 (kvm_pvm emulates every CPL 0
//! instruction). CPU exceptions never reach guest code: the host's own
//! handlers, behind the host-written IDT, report them.

pub mod heap;
#[cfg(not(target_os = "none"))]
pub mod libc;
/// Port I/O (the exit ports), kept reachable here for guests that name
/// `nub_arch_x86::arch::io`.
pub use crate::io;

use core::{
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use nub_host_common::{
    boot::{BOOT_MAGIC, BootInfo},
    layout::PAGE_SIZE,
    ports::ExitPort,
    report::{Report, ReportKind},
    resident::{BOOT_FLAG_RESIDENT, DIRECTORY_ADDRESS},
    ring,
};

pub use heap::heap_stats;

use crate::{
    Registry, dispatch,
    region::RingRegion,
    resident::{self, ControlWords, Exits},
};

/// The control block's words once the sandbox serves calls in resident
/// mode (set right after READY; init's host calls still exit).
static RESIDENT: spin::Once<ControlWords<'static>> = spin::Once::new();

/// Sequence number of the last host call made in resident mode.
static HOST_CALLS: AtomicU64 = AtomicU64::new(0);

/// Resident mode's exits, PARK and NOTIFY, taken through their ports (what
/// the kernel's resident loop uses; public for guests that drive the
/// resident words themselves, like the hostile test guest).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelExits;

impl Exits for KernelExits {
    fn park(&mut self) {
        io::exit(ExitPort::Park, 0);
    }

    fn notify(&mut self) {
        io::exit(ExitPort::Notify, 0);
    }
}

/// The control block BootInfo describes, if its address is a page inside
/// guest memory, with the doorbell and completion words of the `input` and
/// `output` ring headers (regions [`rings`] checked).
fn control_words(
    info: &BootInfo,
    input: RingRegion,
    output: RingRegion,
) -> Option<ControlWords<'static>> {
    let block = control_block(info)?;
    let seq_word = |ring: RingRegion| {
        let word = ring.ptr_at(ring::SEQ_OFFSET)?.cast::<u64>();
        let whole = ring.len() >= ring::RING_HEADER_SIZE && word.is_aligned();
        whole.then_some(word.as_ptr())
    };
    let doorbell = seq_word(input)?;
    let completion = seq_word(output)?;
    // SAFETY: the host maps the control page and both rings read-write for
    // the guest's whole life (the ABI's memory map); the page is page
    // aligned and the ring words 8-byte aligned (checked) and inside their
    // ring headers (the regions hold a whole header), outside the control
    // page. The kernel touches these words only through these atomics (the
    // ring code writes only `head` and `tail` of a header), and the host
    // only atomically.
    Some(unsafe { ControlWords::from_parts(block, doorbell, completion) })
}

/// The control block's first word, if BootInfo's address for it is a
/// page inside guest memory (a pointer with exposed provenance: the page
/// is the host's mapping, which Rust never allocated).
fn control_block(info: &BootInfo) -> Option<*mut u64> {
    let va = usize::try_from(info.control_va).ok()?;
    let end = info.control_va.checked_add(PAGE_SIZE)?;
    if va == 0 || !va.is_multiple_of(PAGE_SIZE as usize) || end > info.memory_size {
        return None;
    }
    Some(core::ptr::with_exposed_provenance_mut::<u64>(va))
}

/// Publishes the directory's address in the control block's
/// [`DIRECTORY_ADDRESS`] word, where the host reads it after READY (both
/// call modes), so that its first cap read needs no system call. Nothing
/// happens when BootInfo's control block address is unusable: the host
/// then asks with `FN_ID_NUB_GET_BOOT_INFO`.
fn publish_directory(info: &BootInfo) {
    let Some(block) = control_block(info) else {
        return;
    };
    // SAFETY: `control_block` checked that the page is inside guest memory
    // and page aligned, and the host maps it read-write for the guest's
    // whole life (the ABI's memory map), so the word at offset 0 is valid
    // and 8-byte aligned for as long as the guest runs. Both sides reach it
    // only atomically (the host reads it with a copy after READY, while
    // the vCPU is stopped in that exit), and no Rust reference to the page
    // exists elsewhere in the kernel (`ControlWords` holds atomics at other
    // offsets).
    let word = unsafe { AtomicU64::from_ptr(block.byte_add(DIRECTORY_ADDRESS)) };
    word.store(info.directory_va, Ordering::Release);
}

/// Makes the host call whose frame is at `slot` through the control block
/// when the sandbox is resident; `false` (nothing done) otherwise.
pub(crate) fn resident_host_call(slot: u64) -> bool {
    let Some(words) = RESIDENT.get() else {
        return false;
    };
    let seq = HOST_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    resident::host_call(words, &mut KernelExits, seq, slot);
    true
}

/// Makes host call `fn_id` with a payload of at most
/// `INLINE_REQUEST_MAX` bytes inline in the control block when the sandbox
/// is resident; `None` (nothing done) otherwise.
pub(crate) fn resident_host_call_inline(
    fn_id: u32,
    payload: &[u8],
) -> Option<resident::InlineAnswer> {
    let words = RESIDENT.get()?;
    let seq = HOST_CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    Some(resident::host_call_inline(
        words,
        &mut KernelExits,
        seq,
        fn_id,
        payload,
    ))
}

unsafe extern "Rust" {
    /// The guest program's init, defined by [`crate::guest_main!`].
    fn __nub_guest_init(registry: &mut Registry);
}

/// The input and output rings BootInfo describes, as regions (pointers
/// with exposed provenance: the memory is the host's mapping, which Rust
/// never allocated). `None` if an address is null, a range wraps, or the
/// rings overlap.
fn rings(info: &BootInfo) -> Option<(RingRegion, RingRegion)> {
    let range = |va: u64, size: u64| {
        let start = usize::try_from(va).ok()?;
        let len = usize::try_from(size).ok()?;
        Some((start, start.checked_add(len)?, len))
    };
    let (in_start, in_end, in_len) = range(info.input_ring_va, info.input_ring_size)?;
    let (out_start, out_end, out_len) = range(info.output_ring_va, info.output_ring_size)?;
    if in_start < out_end && out_start < in_end {
        return None;
    }
    let input = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(in_start))?;
    let output = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(out_start))?;
    // SAFETY: the host maps both rings read-write for the guest's whole
    // life (the ABI's memory map), they do not overlap (checked), and the
    // kernel reaches them only through these regions: the dispatcher and
    // host calls, under `RingRegion`'s contracts, except for the headers'
    // `seq` words, which resident mode reaches only atomically and only
    // while no region slice is live (before and after a dispatcher pass),
    // and which the ring code never writes. The host writes the rings only
    // while the guest is stopped in an exit (`io::exit` is a compiler
    // barrier, not `nomem`, over memory whose address was exposed) or, in
    // resident mode, while the guest waits on the doorbell or a host-call
    // word, whose Acquire load orders the host's writes before the guest's
    // reads.
    Some(unsafe {
        (
            RingRegion::from_raw_parts(input, in_len),
            RingRegion::from_raw_parts(output, out_len),
        )
    })
}

/// Kernel entry point: the host starts the vCPU here, at CPL 3, with RDI =
/// the BootInfo address and RSP at the top of the stack. Sets up the heap
/// and the capability directory, runs the guest's init, signals READY and
/// then serves requests forever.
///
/// # Safety
///
/// Only the host calls this, once, with a valid BootInfo in the read-only
/// boot page and the memory map it describes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _start(boot_info: *const BootInfo) -> ! {
    // SAFETY: the host passes the address of a BootInfo in the boot page.
    let info = unsafe { boot_info.read_volatile() };
    if info.magic != BOOT_MAGIC || info.abi_version != nub_host_common::ABI_VERSION {
        abort(1, "bad BootInfo magic or ABI version");
    }
    // SAFETY: the heap region comes from BootInfo; first and only init.
    unsafe { heap::init(info.heap_va, info.heap_size) };
    crate::logger::init(&info);
    let mut info = info;
    info.directory_va = crate::state_cache::DIRECTORY.lock().header_addr();
    publish_directory(&info);
    let Some((input, output)) = rings(&info) else {
        abort(1, "bad ring addresses in BootInfo");
    };
    // SAFETY: `rings` argues the regions' contract, which holds for the
    // guest's whole life, so for as long as this never-dropped guard lives;
    // host calls from init and from guest functions use them.
    let _published = unsafe { dispatch::publish_rings(input, output) };

    let mut registry = Registry::new();
    // SAFETY: `guest_main!` defines this symbol with this signature.
    unsafe { __nub_guest_init(&mut registry) };
    let mut system = crate::system::KernelSystem {
        boot_info: info,
        heap_stats,
    };
    io::exit(ExitPort::Ready, 0);
    if info.flags & BOOT_FLAG_RESIDENT != 0 {
        let Some(words) = control_words(&info, input, output) else {
            abort(1, "bad control block address in BootInfo");
        };
        let words = *RESIDENT.call_once(|| words);
        let mut last = 0;
        loop {
            let seq = resident::wait_for_request(&words, &mut KernelExits, last);
            // SAFETY: as above (`rings`). The host wrote the requests
            // before the doorbell this Acquire-loaded, and during the pass
            // it writes only the input ring past its tail, while the guest
            // waits (on the control block) for a host call's answer.
            unsafe { dispatch::process_regions(input, output, &registry, &mut system) };
            resident::complete(&words, &mut KernelExits, seq);
            last = seq;
        }
    }
    loop {
        // SAFETY: as above (`rings`); between passes no reference into
        // either ring is live, and during a pass the host writes only the
        // input ring past its tail, in a host-call exit.
        unsafe { dispatch::process_regions(input, output, &registry, &mut system) };
        io::exit(ExitPort::Done, 0);
    }
}

/// Ends the execution on purpose: the host gets a guest-aborted error with
/// `code` and `message` and poisons the sandbox.
pub fn abort(code: u64, message: &str) -> ! {
    let report = Report {
        kind: Some(ReportKind::Abort),
        vector: 0,
        error_code: 0,
        rip: 0,
        cr2: 0,
        rsp: 0,
        code,
        message: message.as_bytes(),
    };
    io::report_and_exit(&report, ExitPort::Abort, code as u32)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    let mut buf = [0u8; nub_host_common::report::MAX_MESSAGE_LEN];
    let mut w = crate::report::BoundedWriter::new(&mut buf);
    let _ = write!(w, "{}", info.message());
    if let Some(loc) = info.location() {
        let _ = write!(w, " (at {}:{}:{})", loc.file(), loc.line(), loc.column());
    }
    let len = w.len();
    let report = Report {
        kind: Some(ReportKind::Panic),
        vector: 0,
        error_code: 0,
        rip: 0,
        cr2: 0,
        rsp: 0,
        code: 0,
        message: buf.get(..len).unwrap_or(&[]),
    };
    io::report_and_exit(&report, ExitPort::Panic, 0)
}
