//! Every way the default guest can fail is a typed error, poisons the
//! sandbox, and leaves the process able to build a new one.

use nub_host_common::layout::Access;
use nub_sandbox::{HyperlightError, binary::GuestImage};
use nub_tests::{DEFAULT_GUEST, fn_id, sandbox};

fn code_range() -> std::ops::Range<u64> {
    let image = GuestImage::parse(&std::fs::read(DEFAULT_GUEST).unwrap()).unwrap();
    let code = image
        .segments
        .iter()
        .find(|s| s.access == Access::ReadExecute)
        .unwrap();
    code.vaddr..code.vaddr + code.mem_size
}

/// Runs fault `selector` on a fresh sandbox, checks poisoning and recovery,
/// and returns the error.
fn fault(selector: u8) -> HyperlightError {
    let mut s = sandbox();
    let err = s.call_raw(fn_id::FAULT, &[selector]).unwrap_err();
    assert!(s.is_poisoned(), "selector {selector}: {err:?} must poison");
    assert!(matches!(
        s.call_raw(fn_id::ECHO, b"x").unwrap_err(),
        HyperlightError::PoisonedSandbox
    ));
    drop(s);
    assert_eq!(sandbox().call_raw(fn_id::ECHO, b"again").unwrap(), b"again");
    err
}

fn guest_fault(selector: u8) -> (u8, u64, u64, u64) {
    match fault(selector) {
        HyperlightError::GuestFault {
            vector,
            error_code,
            rip,
            cr2,
        } => {
            assert!(code_range().contains(&rip), "rip {rip:#x} outside the code");
            (vector, error_code, rip, cr2)
        }
        other => panic!("selector {selector}: expected a guest fault, got {other:?}"),
    }
}

#[test]
fn read_of_unmapped_address_is_a_page_fault_with_cr2() {
    let (vector, error_code, _, cr2) = guest_fault(0);
    assert_eq!(vector, 14);
    assert_eq!(cr2, 0x10);
    assert_eq!(error_code & 0b11, 0, "not present, read");
    let msg = HyperlightError::GuestFault {
        vector,
        error_code,
        rip: 0,
        cr2,
    }
    .to_string();
    assert!(msg.contains("page fault") && msg.contains("0x10"), "{msg}");
}

#[test]
fn general_protection_fault() {
    let (vector, ..) = guest_fault(1);
    assert_eq!(vector, 13);
}

#[test]
fn invalid_opcode() {
    let (vector, ..) = guest_fault(2);
    assert_eq!(vector, 6);
}

#[test]
fn divide_by_zero() {
    let (vector, ..) = guest_fault(3);
    assert_eq!(vector, 0);
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    match fault(4) {
        HyperlightError::StackOverflow { rip, cr2 } => {
            assert!(code_range().contains(&rip), "rip {rip:#x}");
            let layout = sandbox().layout().to_owned();
            assert!(layout.is_stack_guard(cr2), "cr2 {cr2:#x} in the guard page");
        }
        other => panic!("expected StackOverflow, got {other:?}"),
    }
}

#[test]
fn panic_carries_its_message() {
    match fault(5) {
        HyperlightError::GuestPanicked { message } => {
            assert!(
                message.starts_with("guest panicked on purpose"),
                "{message}"
            );
            assert!(message.contains("main.rs"), "location included: {message}");
        }
        other => panic!("expected GuestPanicked, got {other:?}"),
    }
}

#[test]
fn abort_carries_code_and_message() {
    match fault(6) {
        HyperlightError::GuestAborted { code, message } => {
            assert_eq!(code, 42);
            assert_eq!(message, "guest aborted on purpose");
        }
        other => panic!("expected GuestAborted, got {other:?}"),
    }
}

#[test]
fn write_to_own_code_is_a_protection_fault() {
    let (vector, error_code, _, cr2) = guest_fault(7);
    assert_eq!(vector, 14);
    assert_eq!(error_code & 0b11, 0b11, "present page, write access");
    assert!(code_range().contains(&cr2), "cr2 {cr2:#x} is in the code");
}

#[test]
fn out_to_a_port_the_bitmap_closes_is_a_protection_fault() {
    // Guests run with IOPL 0 and the TSS I/O bitmap opens only the exit
    // ports, so `out 0x3f8, al` raises #GP in the guest (docs/security.md).
    let (vector, error_code, rip, _) = guest_fault(8);
    assert_eq!(vector, 13);
    assert_eq!(error_code, 0);
    assert!(code_range().contains(&rip), "rip {rip:#x} is in the code");
}

#[test]
fn access_beyond_guest_memory() {
    match fault(9) {
        HyperlightError::MemoryAccessViolation { addr, write } => {
            assert_eq!(addr, 0x3000_0000);
            assert!(write);
        }
        other => panic!("expected MemoryAccessViolation, got {other:?}"),
    }
}

#[test]
fn heap_exhaustion_is_out_of_memory() {
    match fault(10) {
        HyperlightError::GuestOutOfMemory { size } => assert!(size >= 64 * 1024, "size {size}"),
        other => panic!("expected GuestOutOfMemory, got {other:?}"),
    }
}

#[test]
fn executing_the_heap_is_refused() {
    match fault(11) {
        HyperlightError::GuestFault {
            vector,
            error_code,
            rip,
            cr2,
        } => {
            assert_eq!(vector, 14);
            assert_ne!(error_code & 0x10, 0, "instruction fetch");
            assert_eq!(rip, cr2, "faulted fetching the heap bytes");
            let heap = sandbox().layout().heap;
            assert!(heap.contains_range(cr2, 1), "cr2 {cr2:#x} in the heap");
        }
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

#[test]
fn unknown_selector_is_an_ordinary_error() {
    let mut s = sandbox();
    assert!(matches!(
        s.call_raw(fn_id::FAULT, &[200]).unwrap_err(),
        HyperlightError::GuestFunctionError { .. }
    ));
    assert!(!s.is_poisoned());
}
