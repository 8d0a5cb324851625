//! A nub guest: a `no_std` program that runs inside a KVM micro-VM and
//! serves calls from its host.
//!
//! `init` registers the guest's functions by id; a host calls them with
//! `nub call --guest . <id>` or `MultiUseSandbox::call_raw`. Build with
//! `nub build .` (release, `x86_64-unknown-none`, nub's link script); test
//! the functions on the host with plain `cargo test`.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

use nub_arch_x86::{GuestError, Output, Registry};

/// Fn id of [`echo`].
pub const ECHO: u32 = 1;

/// Answers with its input, and logs how long it was (shown by
/// `nub call -v`).
fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    log::info!("echo: {} bytes", input.len());
    out.write(input)
}

/// Registers the guest's functions; the kernel runs it once at boot.
fn init(registry: &mut Registry) {
    registry.register(ECHO, echo).expect("fn id 1 is free");
}

nub_arch_x86::guest_main!(init);

#[cfg(test)]
mod tests {
    use super::*;
    use nub_arch_x86::testing;

    #[test]
    fn echo_answers_with_its_input() {
        assert_eq!(testing::call(echo, b"hi"), Ok(b"hi".to_vec()));
    }

    #[test]
    fn fn_1_is_echo() {
        // Through the registry `init` fills, as the kernel dispatches it.
        let out = testing::call_id(init, ECHO, b"hello").expect("fn 1 answers");
        assert_eq!(out, b"hello");
    }
}
