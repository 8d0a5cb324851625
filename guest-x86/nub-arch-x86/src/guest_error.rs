//! [`GuestError`]: what a guest function returns when it fails.

use core::fmt;

/// An error a raw guest function returns: a code and a message. The host
/// gets both in `HyperlightError::GuestFunctionError { code, message, .. }`,
/// and the sandbox stays usable.
///
/// The code is for callers that tell errors apart (0 unless the function
/// chose one; which codes mean what is the guest's own contract); the
/// message is for people. Typed functions (`Registry::typed`) return their
/// own error type instead, which reaches the host as that type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    code: u32,
    message: alloc::borrow::Cow<'static, str>,
}

impl GuestError {
    /// An error with a fixed message and code 0 (no allocation).
    pub const fn new(message: &'static str) -> Self {
        Self::coded(0, message)
    }

    /// An error with `code` and a fixed message (no allocation).
    pub const fn coded(code: u32, message: &'static str) -> Self {
        Self {
            code,
            message: alloc::borrow::Cow::Borrowed(message),
        }
    }

    /// An error with a formatted message and code 0.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            code: 0,
            message: alloc::borrow::Cow::Owned(alloc::format!("{message}")),
        }
    }

    /// The same error with `code` instead.
    #[must_use]
    pub fn with_code(mut self, code: u32) -> Self {
        self.code = code;
        self
    }

    /// The code (0 unless the function chose one).
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if self.code != 0 {
            write!(f, " (code {})", self.code)?;
        }
        Ok(())
    }
}
