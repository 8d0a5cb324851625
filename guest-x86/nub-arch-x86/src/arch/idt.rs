//! The IDT: every CPU exception is reported to the host.
//!
//! Each of the 32 exception vectors has a small assembly stub that pushes a
//! uniform frame (vector, error code — 0 for vectors without one — then the
//! CPU's own RIP, CS, RFLAGS, RSP, SS) and calls [`nub_exception`], which
//! writes the report page (vector, error code, RIP, CR2, RSP) without using
//! the heap and exits through the FAULT port. The double fault (#DF, vector
//! 8) runs on IST1, the stack the host put in the TSS, so a stack overflow
//! into the guard page is still reported.

use nub_host_common::report::{Report, ReportKind};

use super::io;

/// The frame the stubs build, lowest address first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExceptionFrame {
    /// Exception vector.
    pub vector: u64,
    /// Error code (0 if the vector has none).
    pub error_code: u64,
    /// Faulting RIP.
    pub rip: u64,
    /// CS at the fault.
    pub cs: u64,
    /// RFLAGS at the fault.
    pub rflags: u64,
    /// RSP at the fault.
    pub rsp: u64,
    /// SS at the fault.
    pub ss: u64,
}

core::arch::global_asm!(
    ".section .text.nub_isr, \"ax\"",
    "nub_isr_0:",
    "    push 0",
    "    push 0",
    "    jmp nub_isr_common",
    "nub_isr_1:",
    "    push 0",
    "    push 1",
    "    jmp nub_isr_common",
    "nub_isr_2:",
    "    push 0",
    "    push 2",
    "    jmp nub_isr_common",
    "nub_isr_3:",
    "    push 0",
    "    push 3",
    "    jmp nub_isr_common",
    "nub_isr_4:",
    "    push 0",
    "    push 4",
    "    jmp nub_isr_common",
    "nub_isr_5:",
    "    push 0",
    "    push 5",
    "    jmp nub_isr_common",
    "nub_isr_6:",
    "    push 0",
    "    push 6",
    "    jmp nub_isr_common",
    "nub_isr_7:",
    "    push 0",
    "    push 7",
    "    jmp nub_isr_common",
    "nub_isr_8:",
    "    push 8",
    "    jmp nub_isr_common",
    "nub_isr_9:",
    "    push 0",
    "    push 9",
    "    jmp nub_isr_common",
    "nub_isr_10:",
    "    push 10",
    "    jmp nub_isr_common",
    "nub_isr_11:",
    "    push 11",
    "    jmp nub_isr_common",
    "nub_isr_12:",
    "    push 12",
    "    jmp nub_isr_common",
    "nub_isr_13:",
    "    push 13",
    "    jmp nub_isr_common",
    "nub_isr_14:",
    "    push 14",
    "    jmp nub_isr_common",
    "nub_isr_15:",
    "    push 0",
    "    push 15",
    "    jmp nub_isr_common",
    "nub_isr_16:",
    "    push 0",
    "    push 16",
    "    jmp nub_isr_common",
    "nub_isr_17:",
    "    push 17",
    "    jmp nub_isr_common",
    "nub_isr_18:",
    "    push 0",
    "    push 18",
    "    jmp nub_isr_common",
    "nub_isr_19:",
    "    push 0",
    "    push 19",
    "    jmp nub_isr_common",
    "nub_isr_20:",
    "    push 0",
    "    push 20",
    "    jmp nub_isr_common",
    "nub_isr_21:",
    "    push 21",
    "    jmp nub_isr_common",
    "nub_isr_22:",
    "    push 0",
    "    push 22",
    "    jmp nub_isr_common",
    "nub_isr_23:",
    "    push 0",
    "    push 23",
    "    jmp nub_isr_common",
    "nub_isr_24:",
    "    push 0",
    "    push 24",
    "    jmp nub_isr_common",
    "nub_isr_25:",
    "    push 0",
    "    push 25",
    "    jmp nub_isr_common",
    "nub_isr_26:",
    "    push 0",
    "    push 26",
    "    jmp nub_isr_common",
    "nub_isr_27:",
    "    push 0",
    "    push 27",
    "    jmp nub_isr_common",
    "nub_isr_28:",
    "    push 0",
    "    push 28",
    "    jmp nub_isr_common",
    "nub_isr_29:",
    "    push 29",
    "    jmp nub_isr_common",
    "nub_isr_30:",
    "    push 30",
    "    jmp nub_isr_common",
    "nub_isr_31:",
    "    push 0",
    "    push 31",
    "    jmp nub_isr_common",
    "nub_isr_common:",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call {handler}",
    "    ud2",
    ".section .rodata.nub_isr_table, \"a\"",
    ".balign 8",
    "nub_isr_table:",
    ".quad nub_isr_0",
    ".quad nub_isr_1",
    ".quad nub_isr_2",
    ".quad nub_isr_3",
    ".quad nub_isr_4",
    ".quad nub_isr_5",
    ".quad nub_isr_6",
    ".quad nub_isr_7",
    ".quad nub_isr_8",
    ".quad nub_isr_9",
    ".quad nub_isr_10",
    ".quad nub_isr_11",
    ".quad nub_isr_12",
    ".quad nub_isr_13",
    ".quad nub_isr_14",
    ".quad nub_isr_15",
    ".quad nub_isr_16",
    ".quad nub_isr_17",
    ".quad nub_isr_18",
    ".quad nub_isr_19",
    ".quad nub_isr_20",
    ".quad nub_isr_21",
    ".quad nub_isr_22",
    ".quad nub_isr_23",
    ".quad nub_isr_24",
    ".quad nub_isr_25",
    ".quad nub_isr_26",
    ".quad nub_isr_27",
    ".quad nub_isr_28",
    ".quad nub_isr_29",
    ".quad nub_isr_30",
    ".quad nub_isr_31",
    handler = sym nub_exception,
);

unsafe extern "C" {
    /// 32 stub addresses, by vector.
    static nub_isr_table: [u64; 32];
}

/// IST index used for the double fault.
const DOUBLE_FAULT_IST: u8 = 1;

/// 32 gates of 16 bytes.
#[repr(C, align(16))]
struct Idt([[u64; 2]; 32]);

static mut IDT: Idt = Idt([[0; 2]; 32]);

fn gate(handler: u64, ist: u8) -> [u64; 2] {
    let selector = u64::from(nub_host_common::layout::CODE_SELECTOR);
    // Present, DPL 0, 64-bit interrupt gate (interrupts stay off).
    let type_attr: u64 = 0x8E;
    let low = (handler & 0xFFFF)
        | (selector << 16)
        | (u64::from(ist & 7) << 32)
        | (type_attr << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

/// Fills and loads the IDT. Called once at boot, before anything can fault.
pub fn init() {
    // SAFETY: the table is a 32-element array of stub addresses defined in
    // the global_asm above; reading it has no side effects.
    let table = unsafe { core::ptr::addr_of!(nub_isr_table).read() };
    let idt_ptr = core::ptr::addr_of_mut!(IDT);
    for (vector, handler) in table.iter().enumerate() {
        let ist = if vector == 8 { DOUBLE_FAULT_IST } else { 0 };
        // SAFETY: single-threaded boot code is the only user of IDT; the
        // index is below 32 because `table` has 32 entries.
        unsafe {
            if let Some(slot) = (*idt_ptr).0.get_mut(vector) {
                *slot = gate(*handler, ist);
            }
        }
    }
    let limit = (core::mem::size_of::<Idt>() - 1) as u16;
    let mut pointer = [0u8; 10];
    pointer[..2].copy_from_slice(&limit.to_le_bytes());
    pointer[2..].copy_from_slice(&(idt_ptr as u64).to_le_bytes());
    // SAFETY: `pointer` is a valid 10-byte IDTR image naming a static,
    // fully initialised IDT whose gates point at the stubs above.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(readonly, nostack, preserves_flags));
    }
}

fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Common exception handler: report and exit. Never returns; if the host
/// resumes the vCPU anyway, it reports again.
///
/// # Safety
///
/// Only called by the stubs, with `frame` pointing at the frame they built.
#[unsafe(no_mangle)]
unsafe extern "C" fn nub_exception(frame: *const ExceptionFrame) -> ! {
    // SAFETY: the stub passes its own stack pointer, which points at the
    // frame it pushed plus the CPU-pushed part: seven valid u64s.
    let frame = unsafe { frame.read() };
    let report = Report {
        kind: Some(ReportKind::Fault),
        vector: frame.vector as u32,
        error_code: frame.error_code,
        rip: frame.rip,
        cr2: read_cr2(),
        rsp: frame.rsp,
        code: 0,
        message: &[],
    };
    io::report_and_exit(
        &report,
        nub_host_common::ports::ExitPort::Fault,
        frame.vector as u32,
    )
}
