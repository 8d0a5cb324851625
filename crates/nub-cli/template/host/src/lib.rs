//! A host program's side of its nub guest: the guest's ELF, embedded at
//! build time, and typed wrappers over its functions.

use nub_sandbox::{GuestBinary, MultiUseSandbox, Result, UninitializedSandbox};

/// The guest's ELF, built from `guest/` and embedded by build.rs
/// (`nub_guest_build::embed`).
pub static GUEST: &[u8] = include_bytes!(env!("GUEST_ELF"));

/// Fn id of the guest's echo (`guest/src/main.rs`).
pub const ECHO: u32 = 1;

/// A new sandbox running the guest, booted and ready for calls.
pub fn sandbox() -> Result<MultiUseSandbox> {
    UninitializedSandbox::new(GuestBinary::Static(GUEST), None)?.evolve()
}

/// Calls the guest's echo: it answers with `input`.
pub fn echo(sandbox: &mut MultiUseSandbox, input: &[u8]) -> Result<Vec<u8>> {
    sandbox.call_raw(ECHO, input)
}
