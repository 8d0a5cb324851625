//! A nub guest: a `no_std` program that runs inside a KVM micro-VM and
//! serves calls from its host.
//!
//! `init` registers the guest's functions by id: fn 1 is raw (bytes in,
//! bytes out; `nub call --guest . 1 --data hi` or
//! `MultiUseSandbox::call_raw`), fn 2 is typed, declared with
//! `interface!` (a host that shares the declaration calls it with
//! `MultiUseSandbox::call::<api::Greet>`; `nub new --host` puts the
//! declaration in a crate of its own). Build with `nub build .` (release,
//! `x86_64-unknown-none`, nub's link script); test the functions on the
//! host with plain `cargo test`.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

extern crate alloc;

use alloc::{format, string::String};

use nub_arch_x86::{GuestError, Output, Registry};
use serde::{Deserialize, Serialize};

/// Fn id of [`echo`].
pub const ECHO: u32 = 1;

/// Why [`api::Greet`] failed: the function's own error, which the host
/// receives typed (`CallError::Guest(GreetError::EmptyName)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GreetError {
    /// The name was empty.
    EmptyName,
}

nub_arch_x86::nub_interface::interface! {
    /// The guest's typed functions: ids, argument, result and error types.
    pub mod api {
        /// `Hello, {name}!`, or [`GreetError::EmptyName`].
        guest Greet = 2 (String) -> String | GreetError;
    }
}

/// Answers with its input, and logs how long it was (shown by
/// `nub call -v`).
fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    log::info!("echo: {} bytes", input.len());
    out.write(input)
}

/// [`api::Greet`]: an ordinary Rust function; the kernel decodes its
/// argument and encodes its answer.
fn greet(name: String) -> Result<String, GreetError> {
    if name.is_empty() {
        return Err(GreetError::EmptyName);
    }
    Ok(format!("Hello, {name}!"))
}

/// Registers the guest's functions; the kernel runs it once at boot.
fn init(registry: &mut Registry) {
    registry.register(ECHO, echo).expect("fn id 1 is free");
    registry
        .typed::<api::Greet>(greet)
        .expect("fn id 2 is free");
}

nub_arch_x86::guest_main!(init);

#[cfg(test)]
mod tests {
    use super::*;
    use nub_arch_x86::testing::{self, Harness};

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

    #[test]
    fn greet_answers_typed_and_refuses_an_empty_name() {
        assert_eq!(greet("world".into()), Ok("Hello, world!".into()));
        // Through the registry and the wire form, as a host calls it.
        let mut h = Harness::new();
        let hello = h.call_typed::<api::Greet>(init, &"you".into());
        assert_eq!(hello, Ok(Ok("Hello, you!".into())));
        let refused = h.call_typed::<api::Greet>(init, &String::new());
        assert_eq!(refused, Ok(Err(GreetError::EmptyName)));
    }
}
