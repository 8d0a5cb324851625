//! [`CliError`]: everything that makes a `nub` command fail.

use std::path::PathBuf;

use nub_sandbox::{GuestBinaryError, HyperlightError};

/// Why a command failed; printed as `error: {self}`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Reading the payload file failed.
    #[error("cannot read payload {path}: {source}")]
    Read {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Writing the result to stdout failed.
    #[error("cannot write the result: {0}")]
    Write(#[source] std::io::Error),
    /// `--hex` was not valid hex.
    #[error("--hex: {0}")]
    BadHex(String),
    /// The guest ELF could not be read or parsed.
    #[error(transparent)]
    Guest(#[from] GuestBinaryError),
    /// Building, booting or calling the sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] HyperlightError),
}
