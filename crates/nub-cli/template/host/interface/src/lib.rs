//! The functions the host and its guest share: declared once, so each side
//! is checked against the other at compile time (ids, argument, result and
//! error types) and a host and a guest built from different declarations
//! get a typed error at the call, never a value decoded from the wrong
//! type. `no_std`: the guest builds it for `x86_64-unknown-none`.
#![no_std]

extern crate alloc;

use alloc::string::String;

use serde::{Deserialize, Serialize};

/// Why [`api::Greet`] failed: the function's own error, which the host
/// receives typed (`CallError::Guest(GreetError::EmptyName)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GreetError {
    /// The name was empty.
    EmptyName,
}

nub_interface::interface! {
    /// What the guest serves (`guest`); host functions it calls would be
    /// declared here too (`host Name = ID (Args) -> Ret | Err;`).
    pub mod api {
        /// `Hello, {name}!`, or [`GreetError::EmptyName`].
        guest Greet = 1 (String) -> String | GreetError;
    }
}
