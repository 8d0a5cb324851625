//! The nub guest kernel.
//!
//! A guest program links this library, registers its functions in an init
//! function, and leaves the rest to the kernel:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use nub_arch_x86::{GuestError, Output, Registry};
//!
//! fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
//!     out.write(input)
//! }
//!
//! fn init(registry: &mut Registry) {
//!     registry.register(1, echo).expect("fn id 1 is free");
//! }
//!
//! nub_arch_x86::guest_main!(init);
//! ```
//!
//! The kernel runs at CPL 3 from its first instruction. It sets up the heap
//! and the capability directory, runs the guest's init, signals READY and
//! then serves requests forever: each time the host resumes it, it answers
//! every request frame in the input ring with a response frame in the output
//! ring and exits through the DONE port. CPU exceptions are reported by the
//! host's own handlers (vector, error code, RIP, CR2), not by guest code.
//!
//! Modules:
//! - [`dispatch`]: the registry of guest functions and the request loop body.
//! - [`hostcall`]: calls from the guest into host functions.
//! - [`region`]: the rings as raw regions, and why (Rust's aliasing rules).
//! - [`logger`]: the `log` crate's records into the host-collected log buffer.
//! - [`system`]: the system functions every guest serves.
//! - [`report`]: bounded formatting for panic and abort messages.
//! - [`state_cache`]: the capability directory, `DIRECTORY`.
//! - `arch` (only on `x86_64-unknown-none`): entry, port I/O, heap, panic
//!   handler.
//! - [`testing`] (only off the bare-metal target): runs guest functions on
//!   the host under `cargo test`, with host calls answered by closures.
//!
//! Everything except `arch` is plain Rust and is unit-tested on the host.
//! [`host_call`] and [`abort`] exist on both: in a guest they exit to the
//! host; on the host they go to the [`testing`] harness (see there).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;
// The host-only testing module needs std (thread-locals, boxed closures).
#[cfg(all(not(test), not(nub_bare)))]
extern crate std;

#[cfg(nub_bare)]
pub mod arch;
pub mod caps;
pub mod dispatch;
mod guest_error;
pub mod hostcall;
#[cfg(nub_bare)]
pub mod io;
pub mod logger;
pub mod region;
pub mod report;
pub mod resident;
pub mod state_cache;
pub mod system;
#[cfg(not(nub_bare))]
pub mod testing;
pub mod typed;

pub use dispatch::{GuestError, GuestFn, Output, Registry, RegistryError};
pub use hostcall::{HostCallError, host_call};
pub use javm_cap;
pub use nub_host_common as abi;
pub use nub_interface;
pub use typed::{CallHostError, State, call_host};

#[cfg(nub_bare)]
pub use arch::{abort, heap_stats};
#[cfg(not(nub_bare))]
pub use testing::{abort, heap_stats};

/// Declares the guest's init function: `fn(&mut Registry)`. The kernel calls
/// it once at boot, before signalling READY.
///
/// Built for the host outside `cargo test` (a plain `cargo build` or `cargo
/// run` in a guest crate), the program it makes only says how to build
/// and run a guest (`nub build`, `nub call --guest`) and exits with status
/// 2, instead of failing to link for want of `main`.
#[macro_export]
macro_rules! guest_main {
    ($init:path) => {
        #[unsafe(no_mangle)]
        fn __nub_guest_init(registry: &mut $crate::Registry) {
            let init: fn(&mut $crate::Registry) = $init;
            init(registry)
        }

        $crate::__nub_host_main!();
    };
}

/// What [`guest_main!`] adds to a guest built for the guest target:
/// nothing (the kernel's `_start` is the entry).
#[cfg(nub_bare)]
#[doc(hidden)]
#[macro_export]
macro_rules! __nub_host_main {
    () => {};
}

/// What [`guest_main!`] adds to a guest built for the host: outside `cargo
/// test`, a `main` that says how to build and run a guest.
#[cfg(not(nub_bare))]
#[doc(hidden)]
#[macro_export]
macro_rules! __nub_host_main {
    () => {
        #[cfg(not(test))]
        #[unsafe(no_mangle)]
        extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
            $crate::testing::not_a_host_program()
        }
    };
}
