//! nub: call into small `no_std` x86_64 guests running in KVM micro-VMs.
//!
//! ```
//! use nub_sandbox::{GuestBinary, MultiUseSandbox, SandboxConfiguration, UninitializedSandbox};
//!
//! let path = "nub-default-guest"; // a guest ELF, here the default guest
//! # let path = nub_tests::DEFAULT_GUEST;
//! let cfg = SandboxConfiguration::default();
//! let mut sbox: MultiUseSandbox =
//!     UninitializedSandbox::new(GuestBinary::FilePath(path.into()), Some(cfg))?.evolve()?;
//! let echoed = sbox.call_raw(1, b"hello")?;
//! assert_eq!(echoed, b"hello");
//! # Ok::<(), nub_sandbox::HyperlightError>(())
//! ```
//!
//! A sandbox is one VM with one vCPU. [`UninitializedSandbox::new`] loads
//! and checks the guest ELF; [`UninitializedSandbox::evolve`] creates the VM
//! and boots the guest until it is ready; [`MultiUseSandbox::call_raw`]
//! writes a request frame into shared memory and runs the vCPU until the
//! guest answers: one VM exit per call ([`CallMode::Exit`]), or none while
//! the vCPU stays in the guest ([`CallMode::Resident`], docs/resident.md).
//! A failed execution (fault, panic, abort, kill, timeout, a
//! [`Violation`] of the protocol) poisons the sandbox; build a new one.
//!
//! Modules:
//! - [`binary`]: guest binaries and the ELF loader.
//! - [`caps`]: capabilities, the guest directory and its reader.
//! - [`config`]: the sandbox configuration.
//! - [`error`]: [`HyperlightError`], variant by variant.
//! - [`Registerable`], [`HostResult`]: host functions the guest calls.
//! - [`InterruptHandle`]: stop a running call from any thread.
//! - [`persist`]: persisted images: an initialized sandbox saved to a
//!   file and loaded again ([`SandboxImage`], docs/images.md).
//! - [`pool`]: the VM pool (dropped sandboxes' VMs, reset and reused).
//! - [`sandbox`]: the two sandbox phases.
//! - [`typed`]: typed calls and host functions over a `nub_interface`
//!   declaration.
//!
//! The examples in these docs run under `cargo test --doc` (part of `cargo
//! xtask test`) against the default guest (`guest-x86/guests/default`,
//! whose fn ids are `nub_host_common::default_guest`), built by the
//! `nub-tests` dev-dependency's build script.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod binary;
mod call_guard;
pub mod caps;
mod causes;
pub mod config;
mod engine;
pub mod error;
mod exec;
mod exits;
mod frames;
mod guest_logs;
mod guest_side;
mod host_functions;
mod image;
mod interrupt;
pub mod persist;
pub mod pool;
mod reaper;
pub mod sandbox;
pub mod typed;
mod violation;
mod watchdog;

pub use binary::{GuestBinary, PreparedGuest};
pub use caps::{AbiCapHash, DirectoryStats, GuestCacheReader};
pub use config::{CallMode, CallOptions, SandboxConfiguration};
pub use error::{
    CapLie, Frame, GuestBinaryError, HyperlightError, LayoutFault, LogFault, MemoryFault, Result,
    Violation, WireFault,
};
pub use guest_logs::GUEST_LOG_TARGET;
pub use host_functions::{HostFunction, HostFunctionError, HostResult, Registerable};
pub use interrupt::InterruptHandle;
pub use javm_cap;
pub use nub_interface;
pub use persist::{ImageError, ImageInfo, SandboxImage};
pub use sandbox::{HeapStats, KillOutcome, MultiUseSandbox, UninitializedSandbox};
pub use typed::{CallError, HostFunctionSet, TypedRegistrable};

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<MultiUseSandbox>();
    assert_send::<UninitializedSandbox>();
};
