//! The hardware-specific kernel: entry, port I/O, heap, panic handler.
//! Built only for `x86_64-unknown-none`.
//!
//! The kernel runs entirely at CPL 3 (kvm_pvm emulates every CPL 0
//! instruction). CPU exceptions never reach guest code: the host's own
//! handlers, behind the host-written IDT, report them.

pub mod heap;
pub mod io;

use core::ptr::NonNull;

use nub_host_common::{
    boot::{BOOT_MAGIC, BootInfo},
    ports::ExitPort,
    report::{Report, ReportKind},
};

pub use heap::heap_stats;

use crate::{Registry, dispatch, region::RingRegion};

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
    // host calls, under `RingRegion`'s contracts. The host writes them only
    // while the guest is stopped in an exit, and `io::exit` is a compiler
    // barrier (not `nomem`) over memory whose address was exposed.
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
