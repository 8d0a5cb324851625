//! [`CliError`]: everything that makes a `nub` command fail.

use std::path::PathBuf;

use nub_guest_build::BuildError;
use nub_sandbox::{GuestBinaryError, HyperlightError, ImageError};

/// Why a command failed; printed as `error: {self}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A wasm operation failed (`nub wasm`): the module did not compile
    /// or link, the program trapped, the sandbox failed.
    #[error(transparent)]
    Wasm(#[from] nub_wasm::WasmError),
    /// `nub wasm`'s module file could not be read or is not WAT.
    #[error("cannot read module {}: {reason}", path.display())]
    ReadModule {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A `nub wasm` option or argument is malformed.
    #[error("{0}")]
    WasmUsage(String),
    /// `--hex` was not valid hex.
    #[error("--hex: {0}")]
    BadHex(String),
    /// The guest ELF could not be read or parsed.
    #[error(transparent)]
    Guest(#[from] GuestBinaryError),
    /// Building, booting or calling the sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] HyperlightError),
    /// A setup call of `nub image save` failed; no image was written.
    #[error("setup call {index} (--call {fn_id}) failed, no image was written: {source}")]
    SetupCall {
        /// Which call, counting from 1 in command-line order.
        index: usize,
        /// Its guest function.
        fn_id: u32,
        /// Why it failed.
        #[source]
        source: HyperlightError,
    },
    /// A setup call's `--hex` was not valid hex.
    #[error("--hex of setup call {index} (--call {fn_id}): {reason}")]
    SetupHex {
        /// Which call, counting from 1 in command-line order.
        index: usize,
        /// Its guest function.
        fn_id: u32,
        /// What is wrong with the digits.
        reason: String,
    },
    /// An image file could not be read (`nub info --image`).
    #[error("cannot read image file {}: {source}", path.display())]
    ReadImage {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// An image file is not one this nub can use: corrupted, truncated,
    /// made for another ABI, or its call mode is not the one asked for.
    #[error("image {}: {source}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ImageError,
    },
    /// `nub call --image --resident` on an image saved in another call
    /// mode (a guest runs in one call mode for life).
    #[error(
        "image {}: {source}; without --resident nub call uses the image's own mode",
        path.display()
    )]
    CallMode {
        /// The file.
        path: PathBuf,
        /// The sandbox's refusal ([`ImageError::CallMode`]).
        #[source]
        source: ImageError,
    },
    /// Building a guest crate failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// `nub new` was given (or derived) a name cargo would refuse.
    #[error("`{name}` cannot name a guest package: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The nub checkout to depend on is missing or incomplete.
    #[error(
        "no nub checkout at {} (it needs guest-x86/nub-arch-x86/Cargo.toml); \
         pass the path of one with --nub-path",
        dir.display()
    )]
    NubCheckout {
        /// The directory that was tried.
        dir: PathBuf,
    },
    /// `nub new` refuses to write into an existing directory with files.
    #[error("{} {what}; nub new writes only into a new or empty directory", path.display())]
    Occupied {
        /// The destination.
        path: PathBuf,
        /// What is in the way.
        what: &'static str,
    },
    /// A `nub bench` row could not be measured.
    #[error(transparent)]
    Bench(#[from] nub_cli::suite::BenchError),
    /// `nub bench FILTER` matched no row.
    #[error("no bench row name contains `{0}`")]
    NoBenchRows(String),
    /// The bench report could not be encoded as JSON.
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Writing an output file (`nub bench --json`) failed.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Creating the new crate's files failed (nothing was left behind).
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// A sandbox error from loading or starting from the image at `path`:
    /// an image fault names the file ([`CliError::Image`], or
    /// [`CliError::CallMode`] for a call mode only --resident can ask
    /// for); an I/O error names it already; other errors are the
    /// sandbox's.
    pub fn from_image(path: &std::path::Path, error: HyperlightError) -> Self {
        match error {
            HyperlightError::Image(source @ ImageError::CallMode { .. }) => Self::CallMode {
                path: path.to_path_buf(),
                source,
            },
            HyperlightError::Image(source) if !matches!(source, ImageError::Io { .. }) => {
                Self::Image {
                    path: path.to_path_buf(),
                    source,
                }
            }
            other => Self::Sandbox(other),
        }
    }
}
