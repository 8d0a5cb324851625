//! nub's KVM backend.
//!
//! One [`Vm`] is one KVM virtual machine with one vCPU and one guest memory
//! that starts at guest physical address 0 and is identity mapped (in
//! several KVM slots when built from a prepared image: read-only pages
//! come from the image's shared view). The host
//! builds long mode itself — page tables, GDT, TSS and the system registers —
//! and enters the guest at its ELF entry point; there is no firmware.
//!
//! ```no_run
//! use nub_hypervisor::{GuestMemory, Mapping, Vm, VmSetup, VmExit};
//! use nub_host_common::layout::{Access, Region};
//!
//! let mut memory = GuestMemory::new(4 << 20)?;
//! memory.write(0x10_0000, &[0xe6, 0xe1, 0xeb, 0xfc])?; // out 0xe1, al; jmp $-2
//! let mappings = [Mapping {
//!     region: Region { start: 0x10_0000, size: 0x1000 },
//!     access: Access::ReadExecute,
//! }];
//! let setup = VmSetup {
//!     mappings: &mappings,
//!     entry: 0x10_0000,
//!     stack_pointer: 0x20_0000,
//!     ist_stack_top: 0x20_0000,
//!     boot_info: 0x1000,
//!     user_mode: false,
//! };
//! let mut vm = Vm::new(memory, &setup)?;
//! assert_eq!(vm.run()?, VmExit::IoOut { port: 0xe1, value: 0 });
//! # Ok::<(), nub_hypervisor::HypervisorError>(())
//! ```
//!
//! Modules:
//! - [`memory`]: the guest memory mapping and its bounds-checked accessors.
//! - [`image`]: prepared images, a guest's initial memory built once and
//!   mapped copy-on-write by every VM running it.
//! - [`interrupt`]: stopping a running vCPU from another thread, and the
//!   [`CallGuard`] that marks a call's span.
//!
//! Private, their public items re-exported here:
//! - `regs`: [`UserRegisters`], the CPL 3 state a persisted image carries.
//! - `setup`: [`VmSetup`], [`EntryState`] and the system pages the host
//!   writes into every guest (`paging`: the identity-mapped page tables
//!   with per-page permissions, [`Mapping`], [`PagingError`]; `cpu`: GDT,
//!   TSS and the long-mode register state; `exceptions`: the IDT and the
//!   exception handlers the host provides).
//! - `cpuid`: the CPUID guests see ([`guest_cpuid`]).
//! - `vm`: [`Vm`], its creation and [`Vm::reset`]; `vcpu`: its vCPU, the
//!   run loop and the fresh vCPU state a reset restores; `exit`: [`VmExit`]
//!   and its decoding; `slots`: the KVM memory slots; `kvm`: the
//!   process-wide `/dev/kvm` handle ([`guest_cpuid`]); `error`:
//!   [`HypervisorError`].
//!
//! # Features
//!
//! - `floor` (off by default): the `floor` module, the cost floors that
//!   `nub bench`, the criterion benches and the `measure` example report
//!   their figures against (an `out` loop at CPL 3 and CPL 0, a kill of a
//!   spinning bare VM, creating and dropping a bare VM, two threads
//!   bouncing a cache line). A benchmark helper, not part of the API a
//!   sandbox needs.
#![deny(unsafe_op_in_unsafe_fn)]

mod cpu;
mod cpuid;
mod error;
mod exceptions;
mod exit;
#[cfg(feature = "floor")]
pub mod floor;
pub mod image;
pub mod interrupt;
mod kvm;
pub mod memory;
mod paging;
mod regs;
mod setup;
mod slots;
mod vcpu;
mod vm;

pub use error::HypervisorError;
pub use exit::VmExit;
pub use image::{ImageWriter, PreparedImage};
pub use interrupt::{CallGuard, VcpuInterrupt};
pub use kvm::guest_cpuid;
pub use memory::{GuestMemory, MemoryError};
pub use paging::{Mapping, PagingError};
pub use regs::UserRegisters;
pub use setup::{EntryState, VmSetup};
pub use vm::Vm;
