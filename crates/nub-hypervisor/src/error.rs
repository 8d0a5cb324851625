//! [`HypervisorError`], the one error type of the crate, and the helpers
//! that turn a failed KVM call into it (errno kept, no kvm-ioctls type in
//! the public API).

use crate::{interrupt::CancelReason, memory::MemoryError, paging::PagingError};

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
    /// [`Vm::reset`](crate::Vm::reset) cannot bring this VM back to a fresh
    /// state.
    #[error("the VM cannot be reset: {0}")]
    NotResettable(&'static str),
    /// The running call was canceled.
    #[error("vCPU run canceled: {0:?}")]
    Canceled(CancelReason),
    /// An address in the [`VmSetup`](crate::VmSetup) is not canonical (bits
    /// 48..64 must copy bit 47), so the CPU could not use it.
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

/// The [`HypervisorError::Ioctl`] for a failed `op` (for `map_err`).
pub(crate) fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |e| HypervisorError::Ioctl {
        op,
        source: os_error(&e),
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
}
