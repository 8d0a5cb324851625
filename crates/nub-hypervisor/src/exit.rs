//! [`VmExit`], why the vCPU stopped, and its decoding from the exit KVM
//! describes in the vCPU's `kvm_run` page.

use std::ptr::NonNull;

use kvm_bindings::{
    KVM_EXIT_DEBUG, KVM_EXIT_EXCEPTION, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_HYPERCALL,
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
    KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN,
    KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_UNKNOWN, KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR, kvm_run,
};

/// Why the vCPU stopped. Owned, so the caller can keep it while using the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmExit {
    /// `out` to `port`; `value` is the data zero-extended to 32 bits.
    IoOut {
        /// The port.
        port: u16,
        /// The value written.
        value: u32,
    },
    /// `in` from `port` (nub guests never read ports).
    IoIn {
        /// The port.
        port: u16,
    },
    /// The guest executed `hlt` with interrupts off.
    Halt,
    /// Triple fault (or an exception with no usable IDT).
    Shutdown,
    /// Access to a guest physical address with no memory behind it.
    Mmio {
        /// The address.
        addr: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// KVM could not emulate or run something it had to (an instruction
    /// its emulator lacks: kvm_pvm emulates CPL 0 code and some exits;
    /// `suberror` is a `KVM_INTERNAL_ERROR_*` code). Guest exceptions are
    /// not this: they reach the host's handlers (an SSE instruction at CPL 3
    /// runs natively under kvm_pvm and is #UD elsewhere; `int3` at CPL 3 is
    /// a #BP, or a #GP through the DPL 0 gate).
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
    },
    /// The hardware refused to enter the guest.
    FailEntry {
        /// Hardware reason code.
        reason: u64,
    },
    /// Any other exit, by its `KVM_EXIT_*` name.
    Other(&'static str),
}

/// The exit KVM described in the `kvm_run` page at `run` (`run_size` bytes
/// mapped), or `None` for `KVM_EXIT_INTR` (a signal: the caller re-checks
/// for a cancel and runs again).
///
/// # Safety
///
/// `run` must be a mapped vCPU `kvm_run` area of `run_size` bytes that
/// nothing writes to while this runs.
pub(crate) unsafe fn decode(run: NonNull<kvm_run>, run_size: usize) -> Option<VmExit> {
    // SAFETY: mapped and not written concurrently (the caller's contract).
    let r = unsafe { run.as_ref() };
    Some(match r.exit_reason {
        KVM_EXIT_IO => {
            // SAFETY: exit_reason is KVM_EXIT_IO, so `io` is the member of
            // the union KVM filled; it is plain integers.
            let io = unsafe { r.__bindgen_anon_1.io };
            match u32::from(io.direction) {
                KVM_EXIT_IO_IN => VmExit::IoIn { port: io.port },
                KVM_EXIT_IO_OUT => {
                    // SAFETY: the whole `run_size`-byte area is mapped and
                    // only read (the caller's contract); `r` is a shared
                    // reference too, so the two only ever read.
                    let area =
                        unsafe { std::slice::from_raw_parts(run.as_ptr().cast::<u8>(), run_size) };
                    let len = (usize::from(io.size) * io.count as usize).min(4);
                    let data = usize::try_from(io.data_offset)
                        .ok()
                        .and_then(|start| area.get(start..start.checked_add(len)?));
                    let mut raw = [0u8; 4];
                    if let (Some(dst), Some(src)) = (raw.get_mut(..len), data) {
                        dst.copy_from_slice(src);
                    }
                    VmExit::IoOut {
                        port: io.port,
                        value: u32::from_le_bytes(raw),
                    }
                }
                _ => VmExit::Other("KVM_EXIT_IO with an unknown direction"),
            }
        }
        KVM_EXIT_HLT => VmExit::Halt,
        KVM_EXIT_SHUTDOWN => VmExit::Shutdown,
        KVM_EXIT_MMIO => {
            // SAFETY: exit_reason is KVM_EXIT_MMIO, so `mmio` is the member
            // KVM filled.
            let mmio = unsafe { r.__bindgen_anon_1.mmio };
            VmExit::Mmio {
                addr: mmio.phys_addr,
                write: mmio.is_write != 0,
            }
        }
        KVM_EXIT_INTERNAL_ERROR => {
            // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal`
            // is the member KVM filled.
            let suberror = unsafe { r.__bindgen_anon_1.internal.suberror };
            VmExit::InternalError { suberror }
        }
        KVM_EXIT_FAIL_ENTRY => {
            // SAFETY: exit_reason is KVM_EXIT_FAIL_ENTRY, so `fail_entry` is
            // the member KVM filled.
            let reason = unsafe { r.__bindgen_anon_1.fail_entry.hardware_entry_failure_reason };
            VmExit::FailEntry { reason }
        }
        KVM_EXIT_INTR => return None,
        other => VmExit::Other(exit_name(other)),
    })
}

/// The `KVM_EXIT_*` name of an exit reason nub does not handle.
fn exit_name(reason: u32) -> &'static str {
    match reason {
        KVM_EXIT_UNKNOWN => "KVM_EXIT_UNKNOWN",
        KVM_EXIT_EXCEPTION => "KVM_EXIT_EXCEPTION",
        KVM_EXIT_HYPERCALL => "KVM_EXIT_HYPERCALL",
        KVM_EXIT_DEBUG => "KVM_EXIT_DEBUG",
        KVM_EXIT_IRQ_WINDOW_OPEN => "KVM_EXIT_IRQ_WINDOW_OPEN",
        KVM_EXIT_SYSTEM_EVENT => "KVM_EXIT_SYSTEM_EVENT",
        KVM_EXIT_X86_RDMSR => "KVM_EXIT_X86_RDMSR",
        KVM_EXIT_X86_WRMSR => "KVM_EXIT_X86_WRMSR",
        KVM_EXIT_MEMORY_FAULT => "KVM_EXIT_MEMORY_FAULT",
        _ => "KVM_EXIT_OTHER",
    }
}
