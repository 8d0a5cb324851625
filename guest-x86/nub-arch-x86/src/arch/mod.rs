//! The hardware-specific kernel: entry, port I/O, heap, panic handler.
//! Built only for `x86_64-unknown-none`.
//!
//! The kernel runs entirely at CPL 3 (kvm_pvm emulates every CPL 0
//! instruction). CPU exceptions never reach guest code: the host's own
//! handlers, behind the host-written IDT, report them.

pub mod heap;
pub mod io;

use nub_host_common::{
    boot::{BOOT_MAGIC, BootInfo},
    ports::ExitPort,
    report::{Report, ReportKind},
};

pub use heap::heap_stats;

use crate::{HostCallError, Registry, dispatch, hostcall};

unsafe extern "Rust" {
    /// The guest program's init, defined by [`crate::guest_main!`].
    fn __nub_guest_init(registry: &mut Registry);
}

/// The boot info, set once at entry.
static BOOT: spin::Once<BootInfo> = spin::Once::new();

/// A ring region as a byte slice.
///
/// # Safety
///
/// `va`/`size` must come from the BootInfo the host wrote (a mapped RW
/// region), and the caller must not keep two live mutable slices of it.
unsafe fn region(va: u64, size: u64) -> &'static mut [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts_mut(va as *mut u8, size as usize) }
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
    let info = *BOOT.call_once(|| info);

    let mut registry = Registry::new();
    // SAFETY: `guest_main!` defines this symbol with this signature.
    unsafe { __nub_guest_init(&mut registry) };
    let mut system = crate::system::KernelSystem {
        boot_info: info,
        heap_stats,
    };
    io::exit(ExitPort::Ready, 0);
    loop {
        // SAFETY: ring addresses come from BootInfo; these are the only
        // slices of the rings while the dispatcher runs (host calls build
        // their own only for bytes outside the ones the dispatcher touches).
        let (input, output) = unsafe {
            (
                region(info.input_ring_va, info.input_ring_size),
                region(info.output_ring_va, info.output_ring_size),
            )
        };
        dispatch::process_requests(input, output, &registry, &mut system);
        io::exit(ExitPort::Done, 0);
    }
}

/// Calls host function `fn_id` with `payload` and returns its result. Can be
/// called any number of times from inside a guest function.
pub fn host_call(fn_id: u32, payload: &[u8]) -> Result<alloc::vec::Vec<u8>, HostCallError> {
    let info = BOOT.get().ok_or(HostCallError::BadResponse)?;
    // Outside a guest function (e.g. in init) the output ring is free.
    let slot = dispatch::host_call_slot().unwrap_or(0);
    {
        // SAFETY: the host-call frame lies past the partial response, so it
        // overlaps no bytes the running guest function has written.
        let output = unsafe { region(info.output_ring_va, info.output_ring_size) };
        hostcall::write_request(output, slot, fn_id, payload)?;
    }
    io::exit(ExitPort::HostCall, slot as u32);
    // SAFETY: the host wrote the response past the input tail; this shared
    // view only reads.
    let input = unsafe { region(info.input_ring_va, info.input_ring_size) };
    hostcall::read_response(input, fn_id)
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
