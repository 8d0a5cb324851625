//! Why a row could not be measured ([`RowError`]) and which row that was
//! ([`BenchError`]).

use nub_hypervisor::floor::FloorError;
use nub_sandbox::HyperlightError;

/// Why a row could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// Building, booting or calling a sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] HyperlightError),
    /// A wasm sandbox's load, instantiation or call failed.
    #[error(transparent)]
    Wasm(#[from] nub_wasm::WasmError),
    /// wasmi natively on the host (a wasm row's floor) failed, or a row's
    /// WAT did not assemble.
    #[error("native wasmi: {0}")]
    Native(String),
    /// A floor measurement failed.
    #[error(transparent)]
    Floor(#[from] FloorError),
    /// Starting a helper thread or reading `/proc/self/status` failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The guest answered something other than what the row expects.
    #[error("unexpected answer: {0}")]
    WrongAnswer(String),
}

/// A row that failed, by name.
#[derive(Debug, thiserror::Error)]
#[error("bench row `{row}`: {source}")]
pub struct BenchError {
    /// The row's name.
    pub row: String,
    /// What went wrong.
    #[source]
    pub source: RowError,
}
