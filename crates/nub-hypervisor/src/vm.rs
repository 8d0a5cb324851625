//! VM and vCPU creation, and the run loop that turns KVM exits into
//! [`VmExit`] values.

use std::sync::{Arc, OnceLock};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use nub_host_common::layout::{BOOT_PAGE_GPA, PAGE_SIZE, Region};

use crate::{
    cpu,
    interrupt::{self, CancelReason, VcpuInterrupt},
    memory::{GuestMemory, MemoryError},
    paging::{self, Mapping, PagingError},
};

/// Why the hypervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// `/dev/kvm` could not be opened or lacks a required capability.
    #[error("KVM is not available: {0}")]
    KvmUnavailable(String),
    /// A KVM ioctl failed.
    #[error("KVM ioctl {op} failed: {source}")]
    Ioctl {
        /// Which operation.
        op: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory access failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Page tables could not be built.
    #[error(transparent)]
    Paging(#[from] PagingError),
    /// The running call was canceled.
    #[error("vCPU run canceled: {0:?}")]
    Canceled(CancelReason),
}

fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |source| HypervisorError::Ioctl { op, source }
}

/// Why the vCPU stopped. Owned, so the caller can keep it while using the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// KVM could not emulate or run something (e.g. an SSE instruction
    /// under kvm_pvm, or `int3`).
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

/// Process-wide KVM handle and its supported CPUID, opened once.
fn kvm() -> Result<&'static (Kvm, kvm_bindings::CpuId), HypervisorError> {
    static KVM: OnceLock<Result<(Kvm, kvm_bindings::CpuId), String>> = OnceLock::new();
    KVM.get_or_init(|| {
        let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
        if !kvm.check_extension(Cap::ImmediateExit) {
            return Err("KVM_CAP_IMMEDIATE_EXIT is missing".into());
        }
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
        Ok((kvm, cpuid))
    })
    .as_ref()
    .map_err(|e| HypervisorError::KvmUnavailable(e.clone()))
}

/// A KVM virtual machine with one vCPU and one memory slot.
#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before the memory they
    // map.
    vcpu: VcpuFd,
    _vm: VmFd,
    memory: GuestMemory,
    interrupt: Arc<VcpuInterrupt>,
    exits: u64,
}

impl Vm {
    /// Creates the VM around `memory` (already holding the guest image and
    /// boot data): writes page tables, GDT and TSS, registers the memory
    /// slot and sets the vCPU up to enter the guest as `setup` says.
    pub fn new(memory: GuestMemory, setup: &VmSetup<'_>) -> Result<Self, HypervisorError> {
        Self::with_interrupt(memory, setup, Arc::new(VcpuInterrupt::new()))
    }

    /// As [`Vm::new`], with interrupt state created earlier (so handles
    /// given out before the VM existed stop its calls). The state must be
    /// fresh: not attached to another vCPU.
    pub fn with_interrupt(
        mut memory: GuestMemory,
        setup: &VmSetup<'_>,
        interrupt: Arc<VcpuInterrupt>,
    ) -> Result<Self, HypervisorError> {
        interrupt::install_signal_handler()
            .map_err(|e| HypervisorError::KvmUnavailable(format!("signal handler: {e}")))?;
        let (kvm, cpuid) = kvm()?;

        let mut mappings = setup.mappings.to_vec();
        mappings.push(Mapping {
            region: Region {
                start: BOOT_PAGE_GPA,
                size: PAGE_SIZE,
            },
            access: nub_host_common::layout::Access::Read,
        });
        // The exception handlers write the report page.
        mappings.push(Mapping {
            region: Region {
                start: nub_host_common::layout::REPORT_PAGE_GPA,
                size: PAGE_SIZE,
            },
            access: nub_host_common::layout::Access::ReadWrite,
        });
        mappings.push(Mapping {
            region: Region {
                start: nub_host_common::layout::EXCEPTION_CODE_GPA,
                size: PAGE_SIZE,
            },
            access: nub_host_common::layout::Access::KernelExecute,
        });
        let cr3 = paging::write_page_tables(&mut memory, &mappings)?;
        cpu::write_descriptor_tables(&mut memory, setup.ist_stack_top)?;
        crate::exceptions::write_exception_handlers(&mut memory)?;

        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: memory.size(),
            userspace_addr: memory.host_address(),
        };
        // SAFETY: the region describes `memory`'s whole mapping, which lives
        // as long as the VM (the `Vm` drops the VM fd before the memory).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;

        let mut vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        vcpu.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        cpu::long_mode_sregs(&mut sregs, cr3, setup.user_mode);
        vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        let regs = cpu::entry_regs(
            setup.entry,
            setup.stack_pointer,
            setup.boot_info,
            setup.user_mode,
        );
        vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;

        let run_page: *mut kvm_bindings::kvm_run = vcpu.get_kvm_run();
        interrupt.attach(run_page);
        Ok(Self {
            vcpu,
            _vm: vm,
            memory,
            interrupt,
            exits: 0,
        })
    }

    /// Guest memory (readable while the vCPU is stopped).
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// Guest memory, mutable.
    pub fn memory_mut(&mut self) -> &mut GuestMemory {
        &mut self.memory
    }

    /// Number of VM exits (returns from `KVM_RUN`) since creation.
    pub fn exit_count(&self) -> u64 {
        self.exits
    }

    /// The shared interrupt state (for interrupt handles and deadlines).
    pub fn interrupt(&self) -> &Arc<VcpuInterrupt> {
        &self.interrupt
    }

    /// Starts a call: from now until the guard drops, `kill` can cancel
    /// [`Vm::run`]. Returns the guard and the call's generation.
    pub fn begin_call(&self) -> (CallGuard, u64) {
        let generation = self.interrupt.begin_call();
        (
            CallGuard {
                interrupt: Some(Arc::clone(&self.interrupt)),
            },
            generation,
        )
    }

    /// Runs the vCPU until it exits for a reason the caller must handle.
    /// Spurious `EINTR`s (a stale interrupt signal) are retried; a pending
    /// cancel ends the run with [`HypervisorError::Canceled`].
    pub fn run(&mut self) -> Result<VmExit, HypervisorError> {
        loop {
            if let Some(reason) = self.interrupt.pending() {
                return Err(HypervisorError::Canceled(reason));
            }
            let exit = self.vcpu.run();
            self.exits += 1;
            let exit = match exit {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(ioctl("KVM_RUN")(e)),
            };
            return Ok(match exit {
                VcpuExit::IoOut(port, data) => {
                    let mut raw = [0u8; 4];
                    let n = data.len().min(4);
                    if let (Some(dst), Some(src)) = (raw.get_mut(..n), data.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    VmExit::IoOut {
                        port,
                        value: u32::from_le_bytes(raw),
                    }
                }
                VcpuExit::IoIn(port, _) => VmExit::IoIn { port },
                VcpuExit::Hlt => VmExit::Halt,
                VcpuExit::Shutdown => VmExit::Shutdown,
                VcpuExit::MmioRead(addr, _) => VmExit::Mmio { addr, write: false },
                VcpuExit::MmioWrite(addr, _) => VmExit::Mmio { addr, write: true },
                VcpuExit::InternalError => {
                    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the
                    // `internal` member of the union is the one KVM filled.
                    let suberror =
                        unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    VmExit::InternalError { suberror }
                }
                VcpuExit::FailEntry(reason, _) => VmExit::FailEntry { reason },
                VcpuExit::Intr => continue,
                other => VmExit::Other(exit_name(&other)),
            });
        }
    }
}

fn exit_name(exit: &VcpuExit<'_>) -> &'static str {
    match exit {
        VcpuExit::Unknown => "KVM_EXIT_UNKNOWN",
        VcpuExit::Exception => "KVM_EXIT_EXCEPTION",
        VcpuExit::Hypercall(_) => "KVM_EXIT_HYPERCALL",
        VcpuExit::Debug(_) => "KVM_EXIT_DEBUG",
        VcpuExit::IrqWindowOpen => "KVM_EXIT_IRQ_WINDOW_OPEN",
        VcpuExit::SystemEvent(..) => "KVM_EXIT_SYSTEM_EVENT",
        _ => "KVM_EXIT_OTHER",
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.interrupt.mark_dropped();
    }
}

/// Marks the span of one call; ends it (clearing any cancel) on drop, even
/// when unwinding.
#[derive(Debug)]
pub struct CallGuard {
    interrupt: Option<Arc<VcpuInterrupt>>,
}

impl CallGuard {
    /// Ends the call now; returns the cancel that hit it, if any.
    pub fn finish(mut self) -> Option<CancelReason> {
        self.interrupt.take().and_then(|i| i.end_call())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(i) = self.interrupt.take() {
            i.end_call();
        }
    }
}
