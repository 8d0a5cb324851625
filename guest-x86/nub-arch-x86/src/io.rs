//! Leaving the VM: port writes and the report page.

use nub_host_common::{
    layout::{PAGE_SIZE, REPORT_PAGE_GPA},
    ports::ExitPort,
    report::Report,
};

/// Exits to the host through `port` with `value`; returns when the host
/// resumes the vCPU.
///
/// The `asm!` is deliberately not `nomem`: it is a compiler barrier, so ring
/// writes before it are in memory when the host looks, and ring reads after
/// it see what the host wrote.
///
/// It also clobbers every caller-saved register of the C ABI
/// (`clobber_abi("C")`): the general ones and, in a hard-float guest, all
/// of XMM0–15 and the x87 stack. So no value lives in a vector or x87
/// register across an exit, and an image captured at one (which records the
/// general registers, not the FPU/SSE state, docs/images.md) resumes the
/// guest correctly with a fresh FPU. What is left of that state, MXCSR and
/// the x87 control word, nub guests never change from their reset values.
#[inline(always)]
pub fn exit(port: ExitPort, value: u32) {
    // SAFETY: `out` to a nub exit port only stops the vCPU; the host resumes
    // it at the next instruction (the registers the asm does not clobber
    // intact).
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") port.port(),
            in("eax") value,
            clobber_abi("C"),
            options(nostack, preserves_flags),
        );
    }
}

/// Writes `report` to the report page and exits through `port`, forever:
/// the host never resumes a guest after a report, but if it does the guest
/// reports again rather than running on.
pub fn report_and_exit(report: &Report<'_>, port: ExitPort, value: u32) -> ! {
    // SAFETY: the report page is a fixed RW page of the ABI, mapped for the
    // guest and used by nothing else; the guest is single-threaded and this
    // path never returns, so no other reference to it is live.
    let page =
        unsafe { core::slice::from_raw_parts_mut(REPORT_PAGE_GPA as *mut u8, PAGE_SIZE as usize) };
    report.encode(page);
    loop {
        exit(port, value);
    }
}
