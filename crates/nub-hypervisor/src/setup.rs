//! What a guest starts from: the [`VmSetup`] a caller describes, the
//! [`EntryState`] of the vCPU at the guest's first instruction, and the
//! system pages the host writes into every guest's memory (page tables,
//! GDT, TSS, IDT, exception handlers). Shared by [`crate::Vm`] creation
//! and [`crate::PreparedImage`]s.

use nub_host_common::layout::{
    Access, BOOT_PAGE_GPA, EXCEPTION_CODE_GPA, PAGE_SIZE, REPORT_PAGE_GPA, Region,
};

use crate::{
    HypervisorError, cpu, exceptions,
    memory::GuestMemory,
    paging::{self, Mapping},
    regs::UserRegisters,
};

/// Where the guest starts.
#[derive(Debug, Clone, Copy)]
pub struct VmSetup<'a> {
    /// What the guest may access, and how. Everything else is unmapped.
    pub mappings: &'a [Mapping],
    /// RIP at entry.
    pub entry: u64,
    /// RSP at entry.
    pub stack_pointer: u64,
    /// Top of the exception stack (RSP0 and IST1).
    pub ist_stack_top: u64,
    /// RDI at entry (the BootInfo address).
    pub boot_info: u64,
    /// Start at CPL 3 instead of CPL 0. Under kvm_pvm, guest code at CPL 0
    /// is emulated instruction by instruction while CPL 3 code runs
    /// natively, so nub guests run at CPL 3 from their first instruction;
    /// only the host's exception handlers run at CPL 0.
    pub user_mode: bool,
}

/// Where the vCPU enters the guest: the state of a fresh vCPU's registers
/// (the rest of a fresh vCPU is KVM's reset state, see
/// [`Vm::reset`](crate::Vm::reset)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryState {
    /// RIP.
    pub entry: u64,
    /// RSP.
    pub stack_pointer: u64,
    /// RDI (the BootInfo address).
    pub boot_info: u64,
    /// CPL 3 (user segments) instead of CPL 0.
    pub user_mode: bool,
    /// CR3: the PML4 the host wrote.
    pub cr3: u64,
    /// Resume a guest that already ran instead of entering it at `entry`:
    /// its general registers, RIP and RFLAGS (a persisted image). `entry`,
    /// `stack_pointer` and `boot_info` are then unused.
    pub resume: Option<UserRegisters>,
}

/// Writes what the host provides in every guest's memory: page tables for
/// `setup.mappings` plus the system pages (boot page read-only, report page,
/// exception handlers for CPL 0 only), the GDT and TSS, the IDT and the
/// handler code. Returns the entry state `setup` describes.
pub(crate) fn write_system_pages(
    memory: &mut GuestMemory,
    setup: &VmSetup<'_>,
) -> Result<EntryState, HypervisorError> {
    let mappings = all_mappings(setup);
    let cr3 = paging::write_page_tables(memory, &mappings)?;
    cpu::write_descriptor_tables(memory, setup.ist_stack_top)?;
    exceptions::write_exception_handlers(memory)?;
    Ok(EntryState {
        entry: setup.entry,
        stack_pointer: setup.stack_pointer,
        boot_info: setup.boot_info,
        user_mode: setup.user_mode,
        cr3,
        resume: None,
    })
}

/// `setup.mappings` and the system pages every guest gets: the boot page
/// read-only, the report page read-write (the exception handlers write
/// it), the handler code executable at CPL 0 only.
pub(crate) fn all_mappings(setup: &VmSetup<'_>) -> Vec<Mapping> {
    let mut mappings = setup.mappings.to_vec();
    mappings.push(Mapping {
        region: Region {
            start: BOOT_PAGE_GPA,
            size: PAGE_SIZE,
        },
        access: Access::Read,
    });
    // The exception handlers write the report page.
    mappings.push(Mapping {
        region: Region {
            start: REPORT_PAGE_GPA,
            size: PAGE_SIZE,
        },
        access: Access::ReadWrite,
    });
    mappings.push(Mapping {
        region: Region {
            start: EXCEPTION_CODE_GPA,
            size: PAGE_SIZE,
        },
        access: Access::KernelExecute,
    });
    mappings
}
