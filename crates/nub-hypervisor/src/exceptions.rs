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

use x86_64::{PrivilegeLevel, structures::gdt::SegmentSelector};

use crate::memory::{GuestMemory, MemoryError};

/// Bytes per vector stub.
const STUB_SIZE: u64 = 16;
/// Exception vectors covered (every one the ABI's table names).
pub(crate) const VECTORS: u64 = exceptions::VECTORS as u64;
/// IDT limit (32 gates of 16 bytes).
pub(crate) const IDT_LIMIT: u16 = (VECTORS as usize * size_of::<InterruptGate>() - 1) as u16;
/// IST slot used by the double fault (the TSS's IST1; see [`crate::cpu`]).
const DOUBLE_FAULT_IST: u8 = 1;

/// A 64-bit IDT gate descriptor (Intel SDM vol. 3 figure 6-8).
///
/// The `x86_64` crate's `idt::Entry` has the same layout, but it can only
/// be pointed at a handler through `set_handler_addr`, which takes its code
/// selector from the running program's CS (and needs the crate's
/// `instructions` feature). These gates point into guest memory with the
/// guest's selector, so they are this typed copy of the layout, with the
/// crate's [`SegmentSelector`] and [`PrivilegeLevel`] for their fields.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InterruptGate {
    /// Handler address bits 0..16.
    offset_low: u16,
    /// Code segment the handler runs in.
    selector: SegmentSelector,
    /// Interrupt stack table index, 1..=7, or 0 for none.
    ist: u8,
    /// Present (bit 7), DPL (bits 5..7), gate type (bits 0..4).
    attributes: u8,
    /// Handler address bits 16..32.
    offset_middle: u16,
    /// Handler address bits 32..64.
    offset_high: u32,
    /// Must be zero.
    reserved: u32,
}

const _: () = assert!(size_of::<InterruptGate>() == 16);

/// `attributes`: the gate is present.
const GATE_PRESENT: u8 = 1 << 7;
/// `attributes`: a 64-bit interrupt gate (the CPU clears IF on entry).
const GATE_TYPE_INTERRUPT: u8 = 0xE;

impl InterruptGate {
    /// A present interrupt gate to `handler` in segment `selector`, callable
    /// by `int n` from `dpl` or more privileged code, on IST stack `ist`
    /// (0 = the current or RSP0 stack).
    const fn new(handler: u64, selector: SegmentSelector, dpl: PrivilegeLevel, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist: ist & 7,
            attributes: GATE_PRESENT | ((dpl as u8) << 5) | GATE_TYPE_INTERRUPT,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }

    /// The gate as the CPU reads it (little endian, fields in order).
    fn to_bytes(self) -> [u8; 16] {
        let fields: [&[u8]; 7] = [
            &self.offset_low.to_le_bytes(),
            &self.selector.0.to_le_bytes(),
            &[self.ist],
            &[self.attributes],
            &self.offset_middle.to_le_bytes(),
            &self.offset_high.to_le_bytes(),
            &self.reserved.to_le_bytes(),
        ];
        let mut out = [0u8; 16];
        for (dst, src) in out.iter_mut().zip(fields.into_iter().flatten()) {
            *dst = *src;
        }
        out
    }
}

/// The gate of `vector`: its stub in the exception page, kernel code
/// segment, DPL 0 (an `int n` from the guest at CPL 3 is a #GP, never a
/// forged exception), IST1 for the double fault.
fn gate(vector: u8) -> InterruptGate {
    let ist = if vector == exceptions::DOUBLE_FAULT {
        DOUBLE_FAULT_IST
    } else {
        0
    };
    InterruptGate::new(
        EXCEPTION_CODE_GPA + u64::from(vector) * STUB_SIZE,
        SegmentSelector(CODE_SELECTOR),
        PrivilegeLevel::Ring0,
        ist,
    )
}

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
pub(crate) fn handler_code() -> &'static [u8] {
    let start = &raw const nub_exception_code_start;
    let end = &raw const nub_exception_code_end;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: both symbols delimit one contiguous block in the read-only
    // section emitted above (start before end, same section), which lives
    // for the whole program.
    unsafe { std::slice::from_raw_parts(start, len) }
}

/// Writes the handler code into the exception page and the IDT into the
/// boot page.
pub(crate) fn write_exception_handlers(memory: &mut GuestMemory) -> Result<(), MemoryError> {
    memory.write(EXCEPTION_CODE_GPA, handler_code())?;
    for vector in 0..exceptions::VECTORS {
        let offset = u64::from(vector) * size_of::<InterruptGate>() as u64;
        memory.write(IDT_GPA + offset, &gate(vector).to_bytes())?;
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
    fn stubs_push_a_zero_exactly_where_the_cpu_pushes_no_error_code() {
        let code = handler_code();
        for vector in 0..exceptions::VECTORS {
            let start = usize::from(vector) * STUB_SIZE as usize;
            let stub = &code[start..start + 4];
            if exceptions::pushes_error_code(vector) {
                assert_eq!(&stub[..2], &[0x6a, vector], "vector {vector}: push vector");
            } else {
                assert_eq!(stub, &[0x6a, 0x00, 0x6a, vector], "vector {vector}: push 0");
            }
        }
    }

    #[test]
    fn gate_encoding() {
        let selector = SegmentSelector(CODE_SELECTOR);
        let gate = InterruptGate::new(0x1234_5678_9abc_def0, selector, PrivilegeLevel::Ring0, 1);
        let bytes = gate.to_bytes();
        let low = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let high = u64::from_le_bytes(bytes[8..].try_into().unwrap());
        assert_eq!(low & 0xFFFF, 0xdef0);
        assert_eq!((low >> 16) & 0xFFFF, u64::from(CODE_SELECTOR));
        assert_eq!((low >> 32) & 7, 1);
        assert_eq!((low >> 40) & 0xFF, 0x8E);
        assert_eq!(low >> 48, 0x9abc);
        assert_eq!(high, 0x1234_5678);
        let user = InterruptGate::new(0, selector, PrivilegeLevel::Ring3, 0).to_bytes();
        assert_eq!(user[5], 0xEE, "present, DPL 3, interrupt gate");
    }
}
