//! VM and vCPU creation, and the run loop that turns KVM exits into
//! [`VmExit`] values.

use std::{
    os::fd::AsRawFd,
    ptr::NonNull,
    sync::{Arc, OnceLock, atomic::Ordering},
};

use kvm_bindings::{
    KVM_EXIT_DEBUG, KVM_EXIT_EXCEPTION, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_HYPERCALL,
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
    KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN,
    KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_UNKNOWN, KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR,
    KVM_MAX_CPUID_ENTRIES, KVM_SYNC_X86_EVENTS, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS, Xsave,
    kvm_run, kvm_sregs, kvm_sync_regs, kvm_userspace_memory_region, kvm_vcpu_events,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use nub_host_common::layout::{BOOT_PAGE_GPA, PAGE_SIZE, Region};

use crate::{
    cpu, cpuid,
    image::PreparedImage,
    interrupt::{self, CancelReason, RunWindow, VcpuInterrupt},
    memory::{GuestMemory, MemoryError},
    paging::{self, Mapping, PagingError},
};

/// Why the hypervisor failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HypervisorError {
    /// `/dev/kvm` could not be opened or queried. The message says what to
    /// check for the error at hand (the device, its permissions, the `kvm`
    /// group); `source` keeps the kind and the errno.
    #[error("KVM is not available: {op} failed: {source}; {hint}", hint = kvm_hint(source))]
    KvmUnavailable {
        /// What failed (`open /dev/kvm`, or a system ioctl).
        op: &'static str,
        /// The OS error (kind and errno).
        #[source]
        source: std::io::Error,
    },
    /// The host's KVM lacks something nub needs.
    #[error("KVM on this host lacks {0}, which nub needs; a newer host kernel has it")]
    KvmUnsupported(&'static str),
    /// The signal handler that stops a running vCPU could not be installed.
    #[error("cannot install the signal handler that interrupts vCPUs: {0}")]
    SignalHandler(#[source] std::io::Error),
    /// A KVM ioctl on a VM or vCPU failed.
    #[error("KVM ioctl {op} failed: {source}")]
    Ioctl {
        /// Which operation.
        op: &'static str,
        /// The OS error (kind and errno).
        #[source]
        source: std::io::Error,
    },
    /// A guest memory access was out of bounds, or the memory could not be
    /// mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Page tables could not be built.
    #[error(transparent)]
    Paging(#[from] PagingError),
    /// A prepared image could not be created.
    #[error("preparing a guest image: {op} failed: {source}")]
    Image {
        /// Which operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// [`Vm::reset`] cannot bring this VM back to a fresh state.
    #[error("the VM cannot be reset: {0}")]
    NotResettable(&'static str),
    /// The running call was canceled.
    #[error("vCPU run canceled: {0:?}")]
    Canceled(CancelReason),
    /// An address in the [`VmSetup`] is not canonical (bits 48..64 must
    /// copy bit 47), so the CPU could not use it.
    #[error("VmSetup::{what} {addr:#x} is not a canonical address")]
    NonCanonical {
        /// Which field.
        what: &'static str,
        /// Its value.
        addr: u64,
    },
}

/// What to check when `/dev/kvm` fails with `source`.
fn kvm_hint(source: &std::io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => {
            "check that /dev/kvm exists: the CPU's virtualization extensions are on (in the \
             firmware, or nested virtualization for a VM) and the kvm module is loaded \
             (kvm_intel or kvm_amd)"
        }
        Some(libc::EACCES | libc::EPERM) => {
            "check /dev/kvm's permissions (ls -l /dev/kvm: read and write for this user) and \
             that this user is in the group that owns it, usually `kvm` (sudo usermod -aG kvm \
             $USER, then log in again)"
        }
        _ => {
            "check that /dev/kvm exists, that this user can read and write it, and that the \
             user is in the `kvm` group"
        }
    }
}

/// The `std::io::Error` of a failed kvm-ioctls call (its errno, so the
/// kind and code survive without kvm-ioctls' type in the public API).
fn os_error(e: &kvm_ioctls::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |e| HypervisorError::Ioctl {
        op,
        source: os_error(&e),
    }
}

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

/// The process-wide KVM handle, the guest's CPUID (KVM's supported CPUID,
/// restricted by [`cpuid::restrict`]) and the size of a vCPU's `kvm_run`
/// mapping, opened once.
struct KvmSystem {
    kvm: Kvm,
    cpuid: kvm_bindings::CpuId,
    /// CR4.UMIP is turned on (the CPUID reports UMIP).
    umip: bool,
    run_size: usize,
    /// `KVM_CAP_SYNC_REGS`: registers, special registers and events can be
    /// handed to the next `KVM_RUN` through `kvm_run` instead of an ioctl
    /// each (a reset then costs two vCPU ioctls instead of five).
    sync_regs: bool,
    /// `KVM_CAP_READONLY_MEM`: an image's read-only pages can back their
    /// own read-only slots (see [`crate::image`]).
    readonly_mem: bool,
}

/// Why the process-wide KVM handle could not be made; kept (it is made
/// once) and turned into a [`HypervisorError`] for every caller.
#[derive(Debug, Clone, Copy)]
enum KvmInitError {
    /// `op` failed with `errno`.
    Os { op: &'static str, errno: i32 },
    /// KVM lacks this.
    Unsupported(&'static str),
}

impl KvmInitError {
    fn os(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |e| Self::Os {
            op,
            errno: e.errno(),
        }
    }

    fn to_error(self) -> HypervisorError {
        match self {
            Self::Os { op, errno } => HypervisorError::KvmUnavailable {
                op,
                source: std::io::Error::from_raw_os_error(errno),
            },
            Self::Unsupported(what) => HypervisorError::KvmUnsupported(what),
        }
    }
}

fn kvm() -> Result<&'static KvmSystem, HypervisorError> {
    static KVM: OnceLock<Result<KvmSystem, KvmInitError>> = OnceLock::new();
    KVM.get_or_init(|| {
        let kvm = Kvm::new().map_err(KvmInitError::os("open /dev/kvm"))?;
        if !kvm.check_extension(Cap::ImmediateExit) {
            return Err(KvmInitError::Unsupported("KVM_CAP_IMMEDIATE_EXIT"));
        }
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmInitError::os("KVM_GET_SUPPORTED_CPUID"))?;
        cpuid::restrict(&mut cpuid);
        let umip = cpuid::supports_umip(&cpuid);
        let run_size = kvm
            .get_vcpu_mmap_size()
            .map_err(KvmInitError::os("KVM_GET_VCPU_MMAP_SIZE"))?;
        if run_size < std::mem::size_of::<kvm_run>() {
            return Err(KvmInitError::Unsupported(
                "a vCPU mapping large enough for struct kvm_run",
            ));
        }
        let sync = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;
        let sync_regs = u32::try_from(kvm.check_extension_int(Cap::SyncRegs))
            .is_ok_and(|fields| fields & sync == sync);
        let readonly_mem = kvm.check_extension(Cap::ReadonlyMem);
        Ok(KvmSystem {
            kvm,
            cpuid,
            umip,
            run_size,
            sync_regs,
            readonly_mem,
        })
    })
    .as_ref()
    .map_err(|e| e.to_error())
}

/// The CPUID every guest sees (see [`crate::cpuid`]).
pub fn guest_cpuid() -> Result<&'static kvm_bindings::CpuId, HypervisorError> {
    kvm().map(|k| &k.cpuid)
}

/// `KVM_RUN` = `_IO(KVMIO, 0x80)` (linux/kvm.h). kvm-ioctls keeps its own
/// constant private; nub issues the ioctl itself so that no Rust reference
/// to `kvm_run` exists while the interrupt handler may write to it (see
/// [`crate::interrupt`]).
const KVM_RUN: libc::c_ulong = ((kvm_bindings::KVMIO as libc::c_ulong) << 8) | 0x80;

/// Where the vCPU enters the guest: the state of a fresh vCPU's registers
/// (the rest of a fresh vCPU is KVM's reset state, see [`Vm::reset`]).
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
    crate::exceptions::write_exception_handlers(memory)?;
    Ok(EntryState {
        entry: setup.entry,
        stack_pointer: setup.stack_pointer,
        boot_info: setup.boot_info,
        user_mode: setup.user_mode,
        cr3,
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
    mappings
}

/// A stand-in for "no memory" when [`set_slots`] only deletes.
struct EmptySlots;

/// Registers the memory slots of `memory` (backed by `image`, if any) on
/// `vm`, after deleting the `registered` slots it has (slot numbers
/// `0..registered`); returns how many are registered now.
///
/// With an image and `KVM_CAP_READONLY_MEM`, the image's read-only pages
/// (code, read-only data, the system pages and page tables) are backed by
/// the image's own read-only view, one mapping shared by every VM of the
/// image, in slots KVM maps read-only; the rest by `memory`, the VM's
/// private copy-on-write mapping. So the host maps an image's read-only
/// pages once for all its VMs, not once per VM, and a reset leaves KVM's
/// mappings of them alone. Otherwise one slot covers `memory` whole.
fn set_slots(
    vm: &VmFd,
    registered: u32,
    memory: &impl SlotMemory,
    image: Option<&PreparedImage>,
) -> Result<u32, HypervisorError> {
    for slot in 0..registered {
        let region = kvm_userspace_memory_region {
            slot,
            ..Default::default()
        };
        // SAFETY: a zero-sized region deletes the slot; no memory is named.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION (delete)"))?;
    }
    let Some(base) = memory.base() else {
        return Ok(0);
    };
    let whole = [crate::image::Slot {
        start: 0,
        size: memory.len(),
        readonly: false,
    }];
    let (layout, view) = match image {
        Some(image) if kvm()?.readonly_mem => (image.slots(), image.view().host_address()),
        _ => (&whole[..], 0),
    };
    let mut count = 0;
    for s in layout {
        let (host, flags) = if s.readonly {
            (view, kvm_bindings::KVM_MEM_READONLY)
        } else {
            (base, 0)
        };
        let region = kvm_userspace_memory_region {
            slot: count,
            flags,
            guest_phys_addr: s.start,
            memory_size: s.size,
            userspace_addr: host + s.start,
        };
        // SAFETY: the region lies inside a live mapping that outlives the
        // slot: `memory`'s own (the `Vm` drops the VM fd before its
        // memory), or the image's read-only view, which lives as long as
        // the image, and the `Vm` holds the image.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        count += 1;
    }
    Ok(count)
}

/// What [`set_slots`] needs of guest memory.
trait SlotMemory {
    /// Host address of guest address 0, if there is memory.
    fn base(&self) -> Option<u64>;
    /// Its size.
    fn len(&self) -> u64;
}

impl SlotMemory for GuestMemory {
    fn base(&self) -> Option<u64> {
        Some(self.host_address())
    }

    fn len(&self) -> u64 {
        self.size()
    }
}

impl SlotMemory for EmptySlots {
    fn base(&self) -> Option<u64> {
        None
    }

    fn len(&self) -> u64 {
        0
    }
}

/// The state of a vCPU that has never run, as KVM creates it: read once
/// per process from the first vCPU (before it runs) and written back by
/// every [`Vm::reset`]. The same for every vCPU nub creates (same CPUID,
/// same kernel).
struct FreshVcpu {
    /// `KVM_GET_XSAVE2`: x87, SSE, AVX… all in their initial state.
    xsave: Xsave,
    /// Bytes of `xsave` KVM may read (its `KVM_CAP_XSAVE2` size).
    xsave_size: usize,
    events: kvm_vcpu_events,
    /// The special registers before nub sets them up (long mode is then
    /// applied on top, as for a new vCPU).
    sregs: kvm_sregs,
}

impl std::fmt::Debug for FreshVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshVcpu")
            .field("xsave_size", &self.xsave_size)
            .finish_non_exhaustive()
    }
}

/// The registers and special registers that make a vCPU enter the guest
/// as `entry` says, long mode applied on top of `base` (a new vCPU's
/// special registers): what [`Vm`] creation and [`Vm::reset`] both set.
fn entry_registers(
    entry: &EntryState,
    mut base: kvm_sregs,
    umip: bool,
) -> (kvm_bindings::kvm_regs, kvm_sregs) {
    cpu::long_mode_sregs(&mut base, entry.cr3, entry.user_mode, umip);
    let regs = cpu::entry_regs(
        entry.entry,
        entry.stack_pointer,
        entry.boot_info,
        entry.user_mode,
    );
    (regs, base)
}

/// The xsave size KVM uses for this VM's vCPUs (`KVM_CAP_XSAVE2`), or
/// `None` when KVM lacks `KVM_GET_XSAVE2`.
fn xsave_size(vm: &VmFd) -> Option<usize> {
    usize::try_from(vm.check_extension_int(Cap::Xsave2))
        .ok()
        .filter(|&n| n > 0)
        .map(|n| n.max(std::mem::size_of::<kvm_bindings::kvm_xsave>()))
}

impl FreshVcpu {
    /// Reads the state of `vcpu`, which must never have run.
    fn capture(vm: &VmFd, vcpu: &VcpuFd) -> Option<Self> {
        let xsave_size = xsave_size(vm)?;
        let entries = (xsave_size - std::mem::size_of::<kvm_bindings::kvm_xsave>())
            .div_ceil(std::mem::size_of::<u32>());
        let mut xsave = Xsave::new(entries).ok()?;
        // SAFETY: `xsave` holds `xsave_size` bytes, the size KVM reports
        // for this VM's xsave state, so KVM_GET_XSAVE2 writes inside it.
        unsafe { vcpu.get_xsave2(&mut xsave) }.ok()?;
        Some(Self {
            xsave,
            xsave_size,
            events: vcpu.get_vcpu_events().ok()?,
            sregs: vcpu.get_sregs().ok()?,
        })
    }
}

/// The fresh vCPU state, captured from `vcpu` (never run) if no vCPU has
/// been captured yet. `None` when it could not be read: VMs are then not
/// reusable.
fn fresh_vcpu(vm: &VmFd, vcpu: &VcpuFd) -> Option<&'static FreshVcpu> {
    static FRESH: OnceLock<Option<FreshVcpu>> = OnceLock::new();
    FRESH.get_or_init(|| FreshVcpu::capture(vm, vcpu)).as_ref()
}

/// A KVM virtual machine with one vCPU and its guest memory's slots.
#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before the memory they
    // map.
    vcpu: VcpuFd,
    _vm: VmFd,
    /// Shared with host threads that read and write guest memory while the
    /// vCPU may run (every access is atomic; see [`GuestMemory`]). The VM
    /// fd above is dropped first, so the slot never outlives its mapping,
    /// whoever holds the last `Arc`.
    memory: Arc<GuestMemory>,
    /// The image `memory` maps privately, if it was built from one.
    image: Option<Arc<PreparedImage>>,
    interrupt: Arc<VcpuInterrupt>,
    /// Size of the vCPU's `kvm_run` mapping (bounds the I/O data offset).
    run_size: usize,
    exits: u64,
    /// The state to restore on reset; `None` if it could not be read, or
    /// if this VM's xsave state is larger than the captured copy.
    fresh: Option<&'static FreshVcpu>,
    /// Whether the vCPU's state is known well enough to reset it: cleared
    /// by any exit other than an `out` or a cancel, any failed ioctl, and
    /// any failed reset.
    resettable: bool,
    /// The last `KVM_RUN` returned an exit whose operation KVM finishes at
    /// the start of the next one (an `out`). Any `KVM_RUN` finishes it.
    exit_pending: bool,
    /// Memory slots registered (numbered from 0).
    slots: u32,
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
        let entry = write_system_pages(&mut memory, setup)?;
        Self::create(memory, None, entry, interrupt)
    }

    /// Creates a VM whose memory maps `image` copy-on-write (no copy: the
    /// guest's writes get private pages) and whose vCPU enters it as the
    /// image says. `interrupt` as for [`Vm::with_interrupt`].
    pub fn from_image(
        image: &Arc<PreparedImage>,
        interrupt: Arc<VcpuInterrupt>,
    ) -> Result<Self, HypervisorError> {
        let memory = GuestMemory::map_file(image.fd(), image.size(), false)?;
        Self::create(memory, Some(Arc::clone(image)), image.entry(), interrupt)
    }

    fn create(
        memory: GuestMemory,
        image: Option<Arc<PreparedImage>>,
        entry: EntryState,
        interrupt: Arc<VcpuInterrupt>,
    ) -> Result<Self, HypervisorError> {
        interrupt::install_signal_handler().map_err(HypervisorError::SignalHandler)?;
        let KvmSystem {
            kvm,
            cpuid,
            umip,
            run_size,
            ..
        } = kvm()?;

        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let slots = set_slots(&vm, 0, &memory, image.as_deref())?;

        let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        vcpu.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        // Checked once here, not on every reset: KVM_SET_XSAVE reads this
        // VM's xsave size from the fresh copy, which must hold that much.
        let fresh = fresh_vcpu(&vm, &vcpu)
            .filter(|f| xsave_size(&vm).is_some_and(|size| size <= f.xsave_size));
        let base = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        let (regs, sregs) = entry_registers(&entry, base, *umip);
        vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;

        interrupt.attach();
        Ok(Self {
            vcpu,
            _vm: vm,
            memory: Arc::new(memory),
            image,
            interrupt,
            run_size: *run_size,
            exits: 0,
            fresh,
            resettable: true,
            exit_pending: false,
            slots,
        })
    }

    /// Guest memory, shareable with other threads (every access is a
    /// bounds-checked atomic copy, sound while the vCPU runs).
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.memory
    }

    /// The image the guest memory maps, if the VM was built from one.
    pub fn image(&self) -> Option<&Arc<PreparedImage>> {
        self.image.as_ref()
    }

    /// Number of VM exits (returns from `KVM_RUN`) since creation or the
    /// last [`Vm::reset`].
    pub fn exit_count(&self) -> u64 {
        self.exits
    }

    /// The shared interrupt state (for interrupt handles and deadlines).
    pub fn interrupt(&self) -> &Arc<VcpuInterrupt> {
        &self.interrupt
    }

    /// Marks the current interrupt state dropped (every handle on it is
    /// inert from now on) and gives the vCPU `interrupt`, which must be
    /// fresh (not attached to another vCPU). A reused VM gets a new state
    /// for each owner, so a handle of an earlier owner never reaches it.
    pub fn replace_interrupt(&mut self, interrupt: Arc<VcpuInterrupt>) {
        self.interrupt.mark_dropped();
        interrupt.attach();
        self.interrupt = interrupt;
    }

    /// Whether [`Vm::reset`] can bring this VM back to a fresh state: it was
    /// built from an image, its vCPU state is known (no exit or failure
    /// left it uncertain), and the fresh vCPU state could be read.
    pub fn is_resettable(&self) -> bool {
        self.resettable && self.image.is_some() && self.fresh.is_some()
    }

    /// Brings the VM back to the state [`Vm::from_image`] creates for
    /// `image` (which must have the same size), so no state of the guest
    /// that ran before can be observed:
    ///
    /// - an operation the last exit left pending (an `out` being completed;
    ///   string I/O would be re-emulated) is finished first, by a `KVM_RUN`
    ///   with `immediate_exit` set, which completes it without running a
    ///   guest instruction;
    /// - memory: every page reads the image again. Same image: every page
    ///   the memory holds a private copy of gets the image's bytes copied
    ///   back ([`GuestMemory::revert`]), which keeps the host's and KVM's
    ///   mappings, so the next guest does not fault its working set in
    ///   again (a discard with `madvise(MADV_DONTNEED)` made the next boot
    ///   and call cost twice as much). Another image: the new image is
    ///   mapped over the old one at the same host address, so the KVM slot
    ///   stays valid;
    /// - vCPU: the fresh vCPU's FPU/SSE/AVX state (`KVM_SET_XSAVE`); general
    ///   registers at the image's entry, special registers (segments with
    ///   their FS/GS bases, control registers, CR2, descriptor tables) as a
    ///   new VM sets them, and no pending exception, interrupt or NMI. The
    ///   last three go through `kvm_run`'s sync area, applied by the next
    ///   `KVM_RUN` before anything else (`KVM_CAP_SYNC_REGS`; ioctls where
    ///   KVM lacks it). Not touched: MSRs other than the FS/GS bases, the
    ///   debug registers and XCR0, which only CPL 0 code can write (the
    ///   guest has none; the host's exception handlers write none of them);
    /// - the exit count starts again at 0.
    ///
    /// Needs the memory unshared (no other `Arc` on it). On failure the VM
    /// is no longer resettable and must be dropped. The interrupt state is
    /// not touched (see [`Vm::replace_interrupt`]).
    pub fn reset(&mut self, image: &Arc<PreparedImage>) -> Result<(), HypervisorError> {
        let result = self.reset_inner(image);
        if result.is_err() {
            self.resettable = false;
        }
        result
    }

    fn reset_inner(&mut self, image: &Arc<PreparedImage>) -> Result<(), HypervisorError> {
        let fresh =
            self.fresh
                .filter(|_| self.is_resettable())
                .ok_or(HypervisorError::NotResettable(
                    "its vCPU state is uncertain or was never read",
                ))?;
        if image.size() != self.memory.size() {
            return Err(HypervisorError::NotResettable(
                "the image is not the size of its memory",
            ));
        }
        if self.exit_pending {
            self.complete_pending_exit()?;
            self.exit_pending = false;
        }
        let same = self.image.as_ref().is_some_and(|i| Arc::ptr_eq(i, image));
        let memory = Arc::get_mut(&mut self.memory).ok_or(HypervisorError::NotResettable(
            "its guest memory is still shared",
        ))?;
        if same {
            memory.revert(image.view())?;
        } else {
            // The old slots point into the old image's read-only view.
            self.slots = set_slots(&self._vm, self.slots, &EmptySlots, None)?;
            memory.remap_file(image.fd())?;
            self.slots = set_slots(&self._vm, 0, memory, Some(image))?;
            self.image = Some(Arc::clone(image));
        }
        self.reset_vcpu(fresh, image.entry())?;
        self.exits = 0;
        Ok(())
    }

    /// Finishes whatever the last exit left for the next `KVM_RUN` to
    /// complete (an `out`'s instruction skip): KVM does that first, then
    /// sees `immediate_exit` and returns `EINTR` without entering the guest
    /// (the kernel's KVM API documentation, "immediate_exit").
    fn complete_pending_exit(&mut self) -> Result<(), HypervisorError> {
        let run = NonNull::from(self.vcpu.get_kvm_run());
        // SAFETY: `run` is this vCPU's live mapping; the reference above has
        // ended and `&mut self` keeps any other from being made, so these
        // atomic stores overlap no other access; no run window is open on
        // this thread for it (the handler never writes here).
        let immediate_exit = unsafe { interrupt::immediate_exit(run) };
        immediate_exit.store(1, Ordering::SeqCst);
        // SAFETY: KVM_RUN on our own vCPU fd takes no argument; the kernel
        // writes only the kvm_run mapping, which outlives the call.
        let rc = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_RUN, 0) };
        let result = if rc < 0 {
            kvm_ioctls::Error::last()
        } else {
            kvm_ioctls::Error::new(0)
        };
        immediate_exit.store(0, Ordering::SeqCst);
        if result.errno() == libc::EINTR {
            Ok(())
        } else {
            Err(HypervisorError::NotResettable(
                "KVM_RUN with immediate_exit did not return EINTR",
            ))
        }
    }

    fn reset_vcpu(&mut self, fresh: &FreshVcpu, entry: EntryState) -> Result<(), HypervisorError> {
        let system = kvm()?;
        // SAFETY: `fresh.xsave` holds `fresh.xsave_size` bytes, at least
        // what KVM reads for this VM's vCPU (checked when the VM was created,
        // or `fresh` would be `None`).
        unsafe { self.vcpu.set_xsave2(&fresh.xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
        let (regs, sregs) = entry_registers(&entry, fresh.sregs, system.umip);
        if system.sync_regs {
            // Handed to the next KVM_RUN, which sets them (as the three
            // ioctls below would) before it does anything else; no window is
            // open and `&mut self` rules out any other reference to the page.
            let run = self.vcpu.get_kvm_run();
            run.s.regs = kvm_sync_regs {
                regs,
                sregs,
                events: fresh.events,
            };
            run.kvm_dirty_regs =
                u64::from(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS);
        } else {
            self.vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
            self.vcpu
                .set_sregs(&sregs)
                .map_err(ioctl("KVM_SET_SREGS"))?;
            self.vcpu
                .set_vcpu_events(&fresh.events)
                .map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
        }
        Ok(())
    }

    /// Starts a call: from now until the guard drops, `kill` can cancel
    /// [`Vm::run`]. Returns the guard and the call's generation.
    pub fn begin_call(&self) -> (CallGuard, u64) {
        CallGuard::begin(&self.interrupt)
    }

    /// Runs the vCPU until it exits for a reason the caller must handle.
    /// Spurious `EINTR`s (a stale interrupt signal) are retried; a pending
    /// cancel ends the run with [`HypervisorError::Canceled`].
    pub fn run(&mut self) -> Result<VmExit, HypervisorError> {
        loop {
            // The window is closed here, so this short-lived `&mut kvm_run`
            // cannot meet a write from the interrupt handler.
            let run = NonNull::from(self.vcpu.get_kvm_run());
            let result = {
                // SAFETY: `run` is this vCPU's mapping, kept alive by
                // `&mut self` until the window drops at the end of this
                // block, and nothing in the block references the page: it
                // only checks the pending flag and issues the ioctl.
                let _window = unsafe { RunWindow::open(run) };
                if let Some(reason) = self.interrupt.pending() {
                    return Err(HypervisorError::Canceled(reason));
                }
                // SAFETY: KVM_RUN on our own vCPU fd takes no argument; the
                // kernel writes only the kvm_run mapping, which outlives the
                // call.
                let rc = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_RUN, 0) };
                if rc < 0 {
                    Err(kvm_ioctls::Error::last())
                } else {
                    Ok(())
                }
            };
            self.exits += 1;
            // This KVM_RUN finished what the last exit left pending.
            self.exit_pending = false;
            match result {
                Ok(()) => {}
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => {
                    self.resettable = false;
                    return Err(ioctl("KVM_RUN")(e));
                }
            }
            // SAFETY: the window is closed (the handler no longer writes),
            // KVM_RUN has returned (the kernel no longer writes), and we hold
            // `&mut self`, so nothing else references the mapping.
            if let Some(exit) = unsafe { decode_exit(run, self.run_size) } {
                // Only an `out` leaves the vCPU in a state a reset is known
                // to undo (see `Vm::reset`); anything else retires the VM.
                if !matches!(exit, VmExit::IoOut { .. }) {
                    self.resettable = false;
                }
                self.exit_pending = true;
                return Ok(exit);
            }
        }
    }
}

/// The exit KVM described in the `kvm_run` page at `run` (`run_size` bytes
/// mapped), or `None` for `KVM_EXIT_INTR` (a signal: the caller re-checks
/// for a cancel and runs again).
///
/// # Safety
///
/// `run` must be a mapped vCPU `kvm_run` area of `run_size` bytes that
/// nothing writes to while this runs.
unsafe fn decode_exit(run: NonNull<kvm_run>, run_size: usize) -> Option<VmExit> {
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
                    // only read (the caller's contract).
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
    /// Starts a call on `interrupt` (for a vCPU that runs on another
    /// thread; [`Vm::begin_call`] is the same for a VM at hand). Returns the
    /// guard and the call's generation.
    pub fn begin(interrupt: &Arc<VcpuInterrupt>) -> (Self, u64) {
        let generation = interrupt.begin_call();
        (
            Self {
                interrupt: Some(Arc::clone(interrupt)),
            },
            generation,
        )
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_unavailable_keeps_the_errno_and_says_what_to_check() {
        let error = |errno| HypervisorError::KvmUnavailable {
            op: "open /dev/kvm",
            source: std::io::Error::from_raw_os_error(errno),
        };
        let missing = error(libc::ENOENT);
        let message = missing.to_string();
        assert!(message.contains("open /dev/kvm failed"), "{message}");
        assert!(message.contains("exists") && message.contains("kvm module"));
        let HypervisorError::KvmUnavailable { source, .. } = &missing else {
            unreachable!()
        };
        assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);

        let denied = error(libc::EACCES).to_string();
        assert!(
            denied.contains("permissions") && denied.contains("`kvm`"),
            "{denied}"
        );
        assert!(!denied.contains("kvm module"), "{denied}");
    }

    #[test]
    fn ioctl_errors_carry_an_io_error() {
        let e = ioctl("KVM_CREATE_VM")(kvm_ioctls::Error::new(libc::ENOMEM));
        assert!(matches!(
            &e,
            HypervisorError::Ioctl { op: "KVM_CREATE_VM", source }
                if source.raw_os_error() == Some(libc::ENOMEM)
        ));
        assert!(e.to_string().starts_with("KVM ioctl KVM_CREATE_VM failed"));
    }

    #[test]
    fn kvm_run_ioctl_number_matches_linux() {
        // _IO(0xAE, 0x80) from linux/kvm.h.
        assert_eq!(KVM_RUN, 0xAE80);
    }
}
