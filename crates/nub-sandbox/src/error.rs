//! [`HyperlightError`]: every way a nub operation can fail.
//!
//! Variants fall in three groups:
//! - **Call errors that leave the sandbox usable**: the guest function
//!   returned an error ([`HyperlightError::GuestFunctionError`]), the fn id is
//!   unknown, the payload or result does not fit the rings.
//! - **Failed executions, which poison the sandbox**: faults, panics,
//!   aborts, out-of-memory, kills, timeouts, host-function panics, protocol
//!   violations. Later calls return [`HyperlightError::PoisonedSandbox`].
//! - **Setup errors**: bad guest binary, bad configuration, KVM failures.

use std::time::Duration;

use nub_host_common::layout::LayoutError;
use nub_hypervisor::HypervisorError;

/// Why a guest binary was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuestBinaryError {
    /// The guest file could not be read.
    #[error("cannot read guest binary {path}: {source}")]
    Io {
        /// The path given.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Zero bytes.
    #[error("guest binary is empty")]
    Empty,
    /// Larger than [`crate::binary::MAX_GUEST_BINARY_SIZE`]; not read.
    #[error("guest binary is {size} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Its size (from the file's metadata, or the bytes read).
        size: u64,
        /// The limit, [`crate::binary::MAX_GUEST_BINARY_SIZE`].
        max: u64,
    },
    /// Not an ELF file, or an ELF goblin cannot parse (e.g. truncated).
    #[error("guest binary is not a valid ELF file: {0}")]
    NotElf(String),
    /// Not a 64-bit little-endian x86_64 ELF.
    #[error(
        "guest binary is for another architecture (machine {machine}, 64-bit: {is_64}); nub runs x86_64 guests"
    )]
    WrongArchitecture {
        /// ELF `e_machine`.
        machine: u16,
        /// Whether it is ELF64.
        is_64: bool,
    },
    /// Not a statically linked executable (`ET_EXEC`).
    #[error("guest binary is not a static executable (ELF type {0}); link it with nub-guest.ld")]
    NotExecutable(u16),
    /// A segment's file bytes lie outside the file.
    #[error(
        "segment {index} claims file bytes {offset:#x}+{size:#x} beyond the {file_len}-byte file"
    )]
    Truncated {
        /// Program header index.
        index: usize,
        /// File offset.
        offset: u64,
        /// File size.
        size: u64,
        /// Length of the file.
        file_len: usize,
    },
    /// A segment lies outside the image area, overlaps another, or is both
    /// writable and executable.
    #[error("segment {index} at {vaddr:#x}+{memsz:#x}: {reason}")]
    BadSegment {
        /// Program header index.
        index: usize,
        /// Virtual address.
        vaddr: u64,
        /// Size in memory.
        memsz: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// No loadable segment.
    #[error("guest binary has no loadable segment")]
    NoSegments,
    /// The entry point is not inside an executable segment.
    #[error("entry point {0:#x} is not in an executable segment")]
    BadEntry(u64),
}

/// Every error nub returns.
#[derive(Debug, thiserror::Error)]
pub enum HyperlightError {
    // --- call errors; the sandbox stays usable ---
    /// The guest function ran and returned an error.
    #[error("guest function {fn_id} failed: {message}")]
    GuestFunctionError {
        /// The function called.
        fn_id: u32,
        /// Its error message.
        message: String,
    },
    /// No guest function has this id.
    #[error("the guest has no function with id {fn_id}")]
    UnknownFunction {
        /// The id called.
        fn_id: u32,
    },
    /// The request does not fit in the input ring; nothing ran.
    #[error("payload of {size} bytes exceeds the largest the input ring takes ({max} bytes)")]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// Largest payload accepted.
        max: usize,
    },
    /// A batch of requests does not fit in the input ring together; nothing
    /// ran.
    #[error("a batch of {calls} requests does not fit in the input ring ({capacity} bytes)")]
    BatchTooLarge {
        /// Requests in the batch.
        calls: usize,
        /// Input ring data capacity.
        capacity: usize,
    },
    /// The guest's result did not fit in the output ring.
    #[error("guest result of {needed} bytes does not fit in the output ring ({capacity} bytes)")]
    ResponseTooLarge {
        /// Bytes the result needed (0 if unknown).
        needed: u64,
        /// Output ring data capacity.
        capacity: usize,
    },

    // --- failed executions; the sandbox is poisoned ---
    /// A CPU exception in the guest.
    #[error("guest fault: {name} (vector {vector}, error code {error_code:#x}) at rip {rip:#x}, cr2 {cr2:#x}", name = exception_name(*vector))]
    GuestFault {
        /// Exception vector.
        vector: u8,
        /// Error code pushed by the CPU (0 if none).
        error_code: u64,
        /// Faulting instruction.
        rip: u64,
        /// CR2: the faulting address for page faults.
        cr2: u64,
    },
    /// The guest overflowed its stack into the guard page.
    #[error(
        "guest stack overflow at rip {rip:#x} (touched {cr2:#x}, the guard page below the stack)"
    )]
    StackOverflow {
        /// Instruction that overflowed (the double fault's RIP).
        rip: u64,
        /// Guard-page address touched.
        cr2: u64,
    },
    /// A Rust panic in the guest.
    #[error("guest panicked: {message}")]
    GuestPanicked {
        /// Formatted panic message and location.
        message: String,
    },
    /// The guest called `abort(code, message)`.
    #[error("guest aborted with code {code}: {message}")]
    GuestAborted {
        /// Abort code.
        code: u64,
        /// Message.
        message: String,
    },
    /// The guest heap could not satisfy an allocation.
    #[error("guest out of memory (allocation of {size} bytes failed)")]
    GuestOutOfMemory {
        /// Size of the failed allocation.
        size: u64,
    },
    /// The vCPU triple-faulted (KVM shutdown exit).
    #[error("guest triple fault (the vCPU shut down)")]
    TripleFault,
    /// The guest wrote to an I/O port nub does not define.
    #[error("guest wrote {value:#x} to unknown I/O port {port:#x}")]
    UnexpectedPort {
        /// The port.
        port: u16,
        /// The value.
        value: u32,
    },
    /// The guest accessed a physical address outside its memory.
    #[error("guest {} outside its memory at {addr:#x}", if *write { "wrote" } else { "read" })]
    MemoryAccessViolation {
        /// The guest physical address.
        addr: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// The vCPU stopped in a way a nub guest never should (halt, internal
    /// emulation error such as an SSE instruction under kvm_pvm, ...).
    #[error("guest stopped unexpectedly: {0}")]
    UnexpectedExit(String),
    /// The guest broke the ring protocol (bad frame, bad response).
    #[error("guest broke the call protocol: {0}")]
    ProtocolViolation(String),
    /// `InterruptHandle::kill()` stopped the call.
    #[error("the call was canceled")]
    Canceled,
    /// The call ran past `max_execution_time`.
    #[error("the call exceeded its deadline of {0:?}")]
    ExecutionTimeout(Duration),
    /// A host function panicked during a host call.
    #[error("host function {fn_id} panicked: {message}")]
    HostFunctionPanicked {
        /// The host function's id.
        fn_id: u32,
        /// The panic message.
        message: String,
    },
    /// An earlier execution failed; drop this sandbox and build a new one.
    #[error("the sandbox is poisoned by an earlier failed execution; build a new one")]
    PoisonedSandbox,

    // --- setup errors ---
    /// The guest binary was refused.
    #[error(transparent)]
    BadGuestBinary(#[from] GuestBinaryError),
    /// The configuration cannot produce a memory layout.
    #[error("invalid sandbox configuration: {0}")]
    InvalidConfiguration(#[from] LayoutError),
    /// A fn id in the reserved system range was given to a registration.
    #[error("fn id {fn_id:#x} is in the reserved system range")]
    ReservedFunctionId {
        /// The id.
        fn_id: u32,
    },
    /// KVM failed.
    #[error(transparent)]
    Kvm(#[from] HypervisorError),
    /// A capability could not be converted to its wire form.
    #[error("capability cannot be sent to the guest: {0}")]
    Wire(#[from] javm_cap::WireError),
    /// The guest refused a CNode because this child is not in its
    /// directory (publish children first, or use `put_cap_graph`).
    #[error("the guest's directory does not hold child {child} of the capability")]
    CapMissingChild {
        /// The missing child's hash.
        child: javm_cap::CapHash,
    },
    /// The guest refused a capability (it answered with the sentinel hash).
    #[error("the guest refused the capability")]
    CapRejected,
    /// `put_cap_with_hash` was given a hash that is not the cap's (a caller
    /// bug; nothing was sent and the sandbox stays usable).
    #[error("the hash given ({given}) is not the capability's hash ({computed})")]
    CapHashMismatch {
        /// The hash the caller gave.
        given: javm_cap::CapHash,
        /// The cap's hash, computed by the host.
        computed: javm_cap::CapHash,
    },
    /// A deadline was asked for, but the watchdog thread that enforces
    /// deadlines could not be started; the call (or boot) did not run.
    #[error("cannot start the deadline watchdog thread: {0}")]
    WatchdogUnavailable(#[source] std::io::Error),
    /// The vCPU thread of a resident sandbox could not be started (the
    /// sandbox was not created).
    #[error("cannot start the vCPU thread of a resident sandbox: {0}")]
    VcpuThread(#[source] std::io::Error),
    /// Anything else (last resort).
    #[error("{0}")]
    Error(String),
}

impl HyperlightError {
    /// Whether this error poisons the sandbox it came from.
    pub fn poisons(&self) -> bool {
        !matches!(
            self,
            Self::GuestFunctionError { .. }
                | Self::UnknownFunction { .. }
                | Self::PayloadTooLarge { .. }
                | Self::BatchTooLarge { .. }
                | Self::ResponseTooLarge { .. }
                | Self::ReservedFunctionId { .. }
                | Self::Wire(_)
                | Self::CapMissingChild { .. }
                | Self::CapRejected
                | Self::CapHashMismatch { .. }
                | Self::BadGuestBinary(_)
                | Self::InvalidConfiguration(_)
                | Self::WatchdogUnavailable(_)
                | Self::PoisonedSandbox
        )
    }
}

/// `Result` with [`HyperlightError`].
pub type Result<T> = std::result::Result<T, HyperlightError>;

/// The name of x86 exception `vector`, e.g. `"page fault (#PF)"` (the
/// ABI's exception table, [`nub_host_common::exceptions`]).
pub fn exception_name(vector: u8) -> &'static str {
    nub_host_common::exceptions::name(vector)
}
