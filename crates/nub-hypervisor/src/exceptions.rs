//! Exception handling the host provides: the IDT and the handler code.
//!
//! Every nub guest gets the same 32 exception gates, written by the host
//! into the read-only boot page, pointing at handler code the host writes
//! into a page that only CPL 0 can execute. A guest therefore cannot break
//! its own fault reporting (it cannot write the IDT, the GDT, the TSS or the
//! handlers), and the guest kernel needs no CPL 0 code at all — which
//! matters because kvm_pvm emulates every CPL 0 instruction.
//!
//! Each vector has a 16-byte stub that pushes a uniform frame (the vector,
//! and 0 in place of an error code where the CPU pushes none) and jumps to
//! common code, which writes the report page (kind = fault, vector, error
//! code, RIP, CR2, RSP; see `nub_host_common::report`) and exits through the
//! FAULT port, forever. Exceptions from CPL 3 switch to the TSS's RSP0 stack;
//! the double fault uses IST1.
//!
//! The code is assembled by rustc into this (host) binary's read-only data
//! and copied into guest memory. It is position independent: absolute
//! addresses are the ABI's fixed report-page fields, jumps are relative
//! within the block.

use nub_host_common::{
    exceptions,
    layout::{CODE_SELECTOR, EXCEPTION_CODE_GPA, IDT_GPA, REPORT_PAGE_GPA},
    ports::ExitPort,
    report::{self, ReportKind},
};

use crate::memory::{GuestMemory, MemoryError};

/// Bytes per vector stub.
const STUB_SIZE: u64 = 16;
/// Exception vectors covered.
pub const VECTORS: u64 = 32;
/// IDT limit (32 gates of 16 bytes).
pub const IDT_LIMIT: u16 = (VECTORS * 16 - 1) as u16;
/// IST slot used by the double fault.
const DOUBLE_FAULT_IST: u64 = 1;

core::arch::global_asm!(
    ".pushsection .rodata.nub_exception_code, \"a\"",
    ".balign 16",
    ".global nub_exception_code_start",
    "nub_exception_code_start:",
    // One 16-byte stub per vector. The vectors whose bit is set in
    // `error_code_vectors` (the ABI's exception table) come with a
    // CPU-pushed error code; the others push a 0 in its place.
    ".irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".balign 16",
    ".if ({error_code_vectors} >> \\vec) & 1",
    ".else",
    "push 0",
    ".endif",
    "push \\vec",
    "jmp 3f",
    ".endr",
    ".balign 16",
    "3:",
    // [rsp] vector, [rsp+8] error code, [rsp+16] RIP, [rsp+24] CS,
    // [rsp+32] RFLAGS, [rsp+40] RSP, [rsp+48] SS.
    "mov dword ptr [{kind}], {fault}",
    "mov rax, qword ptr [rsp]",
    "mov dword ptr [{vector}], eax",
    "mov rax, qword ptr [rsp + 8]",
    "mov qword ptr [{error_code}], rax",
    "mov rax, qword ptr [rsp + 16]",
    "mov qword ptr [{rip}], rax",
    "mov rax, cr2",
    "mov qword ptr [{cr2}], rax",
    "mov rax, qword ptr [rsp + 40]",
    "mov qword ptr [{rsp}], rax",
    "mov dword ptr [{message_len}], 0",
    "mov eax, dword ptr [rsp]",
    "mov dx, {port}",
    "4:",
    "out dx, eax",
    "jmp 4b",
    ".global nub_exception_code_end",
    "nub_exception_code_end:",
    ".popsection",
    kind = const REPORT_PAGE_GPA + report::KIND_OFFSET as u64,
    fault = const ReportKind::Fault as u32,
    vector = const REPORT_PAGE_GPA + report::VECTOR_OFFSET as u64,
    error_code = const REPORT_PAGE_GPA + report::ERROR_CODE_OFFSET as u64,
    rip = const REPORT_PAGE_GPA + report::RIP_OFFSET as u64,
    cr2 = const REPORT_PAGE_GPA + report::CR2_OFFSET as u64,
    rsp = const REPORT_PAGE_GPA + report::RSP_OFFSET as u64,
    message_len = const REPORT_PAGE_GPA + report::MESSAGE_LEN_OFFSET as u64,
    port = const ExitPort::Fault as u16,
    error_code_vectors = const exceptions::ERROR_CODE_VECTORS,
);

unsafe extern "C" {
    static nub_exception_code_start: u8;
    static nub_exception_code_end: u8;
}

/// The handler code as bytes.
pub fn handler_code() -> &'static [u8] {
    let start = &raw const nub_exception_code_start;
    let end = &raw const nub_exception_code_end;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: both symbols delimit one contiguous block in the read-only
    // section emitted above (start before end, same section), which lives
    // for the whole program.
    unsafe { std::slice::from_raw_parts(start, len) }
}

fn gate(handler: u64, ist: u64) -> [u64; 2] {
    let selector = u64::from(CODE_SELECTOR);
    // Present, DPL 0, 64-bit interrupt gate.
    let type_attr: u64 = 0x8E;
    let low = (handler & 0xFFFF)
        | (selector << 16)
        | ((ist & 7) << 32)
        | (type_attr << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

/// Writes the handler code into the exception page and the IDT into the
/// boot page.
pub fn write_exception_handlers(memory: &mut GuestMemory) -> Result<(), MemoryError> {
    memory.write(EXCEPTION_CODE_GPA, handler_code())?;
    for vector in 0..VECTORS {
        let ist = if vector == 8 { DOUBLE_FAULT_IST } else { 0 };
        let [low, high] = gate(EXCEPTION_CODE_GPA + vector * STUB_SIZE, ist);
        memory.write_u64(IDT_GPA + vector * 16, low)?;
        memory.write_u64(IDT_GPA + vector * 16 + 8, high)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_fits_one_page_with_a_stub_per_vector() {
        let code = handler_code();
        assert!(code.len() > (VECTORS * STUB_SIZE) as usize);
        assert!(code.len() <= 4096);
        // Vector 0 pushes a zero error code (6a 00), then its vector (6a 00).
        assert_eq!(&code[..4], &[0x6a, 0x00, 0x6a, 0x00]);
        // Vector 14 (page fault) only pushes its vector: 6a 0e.
        assert_eq!(&code[14 * 16..14 * 16 + 2], &[0x6a, 0x0e]);
    }

    #[test]
    fn gate_encoding() {
        let [low, high] = gate(0x1234_5678_9abc_def0, 1);
        assert_eq!(low & 0xFFFF, 0xdef0);
        assert_eq!((low >> 16) & 0xFFFF, u64::from(CODE_SELECTOR));
        assert_eq!((low >> 32) & 7, 1);
        assert_eq!((low >> 40) & 0xFF, 0x8E);
        assert_eq!(low >> 48, 0x9abc);
        assert_eq!(high, 0x1234_5678);
    }
}
