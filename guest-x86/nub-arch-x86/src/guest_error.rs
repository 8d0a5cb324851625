//! [`GuestError`]: what a guest function returns when it fails.

use core::fmt;

/// An error a guest function returns; the host gets it as a guest-function
/// error with this message, and the sandbox stays usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    message: alloc::borrow::Cow<'static, str>,
}

impl GuestError {
    /// An error with a fixed message (no allocation).
    pub const fn new(message: &'static str) -> Self {
        Self {
            message: alloc::borrow::Cow::Borrowed(message),
        }
    }

    /// An error with a formatted message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: alloc::borrow::Cow::Owned(alloc::format!("{message}")),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
