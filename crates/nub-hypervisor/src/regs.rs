//! [`UserRegisters`]: the CPL 3 register state a persisted image carries
//! (read from a stopped vCPU, written into a resumed one by `cpu`), and
//! its one list of registers in order ([`UserRegisters::NAMES`]), from
//! which the array and `kvm_regs` conversions are made.

use kvm_bindings::kvm_regs;

/// The CPL 3 state of a guest stopped between calls that a persisted image
/// carries: every general register, RIP and RFLAGS. Nothing privileged:
/// segments, control registers and descriptor tables are the host's, as
/// for a new vCPU. The FPU/SSE state is not part of it: a resumed vCPU
/// has the fresh x87/SSE state, which is right because the guest kernel's
/// exit declares every vector and x87 register clobbered, so none holds a
/// live value at a resting point (docs/images.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserRegisters {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RSP.
    pub rsp: u64,
    /// RBP.
    pub rbp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
}

/// The conversions, from the one list of register names.
macro_rules! conversions {
    ($($reg:ident),* $(,)?) => {
        impl UserRegisters {
            /// The registers' names, in the order of [`Self::to_array`]
            /// (and of a persisted image file).
            pub const NAMES: [&'static str; 18] = [$(stringify!($reg)),*];

            /// The registers in [`Self::NAMES`] order.
            pub fn to_array(&self) -> [u64; 18] {
                [$(self.$reg),*]
            }

            /// Registers from [`Self::NAMES`] order.
            pub fn from_array(values: [u64; 18]) -> Self {
                let [$($reg),*] = values;
                Self { $($reg),* }
            }
        }

        /// The KVM form (`kvm_regs` has exactly these registers).
        pub(crate) fn to_kvm(r: &UserRegisters) -> kvm_regs {
            kvm_regs { $($reg: r.$reg),* }
        }

        /// From the KVM form.
        pub(crate) fn from_kvm(r: &kvm_regs) -> UserRegisters {
            UserRegisters { $($reg: r.$reg),* }
        }
    };
}

conversions!(
    rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags,
);
