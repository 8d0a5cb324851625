//! The process-wide KVM system handle: `/dev/kvm`, opened and queried once
//! (the guest CPUID, the `kvm_run` mapping size, the capabilities nub
//! relies on or uses when present), shared by every VM.

use std::sync::OnceLock;

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_SYNC_X86_EVENTS, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS, kvm_run,
};
use kvm_ioctls::{Cap, Kvm};

use crate::{HypervisorError, cpuid};

/// The process-wide KVM handle, the guest's CPUID (KVM's supported CPUID,
/// restricted by [`cpuid::restrict`]) and the size of a vCPU's `kvm_run`
/// mapping, opened once.
pub(crate) struct KvmSystem {
    pub(crate) kvm: Kvm,
    pub(crate) cpuid: kvm_bindings::CpuId,
    /// CR4.UMIP is turned on (the CPUID reports UMIP).
    pub(crate) umip: bool,
    pub(crate) run_size: usize,
    /// `KVM_CAP_SYNC_REGS`: registers, special registers and events can be
    /// handed to the next `KVM_RUN` through `kvm_run` instead of an ioctl
    /// each (a reset then costs two vCPU ioctls instead of five).
    pub(crate) sync_regs: bool,
    /// `KVM_CAP_READONLY_MEM`: an image's read-only pages can back their
    /// own read-only slots (see [`crate::image`]).
    pub(crate) readonly_mem: bool,
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

/// The KVM system, opened on first use; the same error for every caller
/// if that failed.
pub(crate) fn kvm() -> Result<&'static KvmSystem, HypervisorError> {
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

/// The CPUID every guest sees: KVM's supported CPUID with the features
/// the guest's vCPU does not provide cleared (SIMD, the APIC, …; the
/// crate's `cpuid` module and docs/security.md, *CPU features*).
pub fn guest_cpuid() -> Result<&'static kvm_bindings::CpuId, HypervisorError> {
    kvm().map(|k| &k.cpuid)
}
