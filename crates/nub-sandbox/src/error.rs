//! [`HyperlightError`]: every way a nub operation can fail.
//!
//! Variants fall in three groups:
//! - **Call errors that leave the sandbox usable**: the guest function
//!   returned an error ([`HyperlightError::GuestFunctionError`]), the fn id is
//!   unknown, the payload or result does not fit the rings.
//! - **Failed executions, which poison the sandbox**: faults, panics,
//!   aborts, out-of-memory, kills, timeouts, host-function panics, protocol
//!   violations. Later calls return [`HyperlightError::PoisonedSandbox`].
//! - **Setup errors**: bad guest binary, bad configuration, KVM failures
//!   ([`HyperlightError::Kvm`], whose message says what to check when
//!   `/dev/kvm` cannot be used; one that fails a call poisons the sandbox
//!   like the failed executions above), guest memory that cannot be mapped, a
//!   persisted image that cannot be captured, read or checked
//!   ([`HyperlightError::Image`] with an [`ImageError`]).
//!
//! Every message names its cause; a size error names the
//! `SandboxConfiguration` setting to raise. A guest answer that cannot be
//! true is a [`HyperlightError::ProtocolViolation`], a broken invariant of
//! nub's own is [`HyperlightError::Internal`], and
//! [`HyperlightError::Error`] is kept for encode/decode failures. The enums
//! are `#[non_exhaustive]`: match them with a wildcard arm.

use std::time::Duration;

use nub_host_common::layout::LayoutError;
use nub_hypervisor::{HypervisorError, MemoryError};

pub use crate::{
    causes::{LayoutFault, MemoryFault, WireFault},
    violation::{CapLie, Frame, LogFault, Violation},
};

/// Why a guest binary was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
///
/// Each message names its cause and, where the caller can do something,
/// what to do: size errors name the [`SandboxConfiguration`] setting to
/// raise.
///
/// [`SandboxConfiguration`]: crate::SandboxConfiguration
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HyperlightError {
    // --- call errors; the sandbox stays usable ---
    /// The guest function ran and returned an error (a raw function's
    /// `GuestError`; typed calls decode the function's own error type
    /// instead, see `CallError::Guest`).
    #[error("guest function {fn_id} failed: {message}{}", code_suffix(*code))]
    GuestFunctionError {
        /// The function called.
        fn_id: u32,
        /// The guest's error code: 0 unless the function chose one
        /// (`GuestError::coded` / `with_code` in the guest); what each
        /// means is the guest's contract. Match on this, not the message.
        code: u32,
        /// Its error message, for people.
        message: String,
    },
    /// No guest function has this id.
    #[error("the guest has no function with id {fn_id}")]
    UnknownFunction {
        /// The id called.
        fn_id: u32,
    },
    /// The request does not fit in the input ring; nothing ran.
    #[error(
        "payload of {size} bytes exceeds the largest the input ring takes ({max} bytes); \
         raise SandboxConfiguration::input_ring_size (with_ring_sizes)"
    )]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// Largest payload accepted.
        max: usize,
    },
    /// A batch of requests does not fit in the input ring together; nothing
    /// ran.
    #[error(
        "a batch of {calls} requests does not fit in the input ring ({capacity} bytes); \
         split the batch or raise SandboxConfiguration::input_ring_size (with_ring_sizes)"
    )]
    BatchTooLarge {
        /// Requests in the batch.
        calls: usize,
        /// Input ring data capacity.
        capacity: usize,
    },
    /// The guest's result did not fit in the output ring.
    #[error(
        "guest result of {needed} bytes does not fit in the output ring ({capacity} bytes); \
         raise SandboxConfiguration::output_ring_size (with_ring_sizes)"
    )]
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
        "guest stack overflow at rip {rip:#x} (touched {cr2:#x}, the guard page below the \
         stack); raise SandboxConfiguration::stack_size (with_stack_size)"
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
    #[error(
        "guest out of memory (allocation of {size} bytes failed); raise \
         SandboxConfiguration::heap_size (with_heap_size)"
    )]
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
    /// The vCPU stopped in a way a nub guest never should (`hlt`, a KVM
    /// internal error for an instruction KVM cannot emulate, a failed VM
    /// entry, ...).
    #[error("guest stopped unexpectedly: {0}")]
    UnexpectedExit(String),
    /// The guest broke the ring protocol (bad frame, bad response).
    #[error("guest broke the call protocol: {0}")]
    ProtocolViolation(Violation),
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
    InvalidConfiguration(LayoutFault),
    /// A persisted image could not be captured, read, checked or written
    /// (see [`crate::persist`]): nothing ran from it.
    #[error(transparent)]
    Image(ImageError),
    /// A fn id in the reserved system range was given to a registration.
    #[error("fn id {fn_id:#x} is in the reserved system range")]
    ReservedFunctionId {
        /// The id.
        fn_id: u32,
    },
    /// KVM failed (see [`HypervisorError`]; a guest-memory access error
    /// converts to [`Self::GuestMemory`] instead).
    #[error(transparent)]
    Kvm(HypervisorError),
    /// A host access to guest memory was out of bounds, or the memory could
    /// not be mapped.
    #[error(transparent)]
    GuestMemory(MemoryFault),
    /// A capability could not be converted to its wire form.
    #[error("capability cannot be sent to the guest: {0}{hint}", hint = wire_hint(.0))]
    Wire(WireFault),
    /// The guest refused a CNode because this child is not in its
    /// directory (publish children first, or use `put_cap_graph`).
    #[error(
        "the guest's directory does not hold child {child} of the capability; publish the \
         child first (put_cap) or send the whole graph with put_cap_graph"
    )]
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
    /// A bug in nub: an invariant of its own code did not hold. Nothing
    /// the caller or the guest did; please report it.
    #[error("internal error in nub (a bug; please report it): {0}")]
    Internal(&'static str),
    /// A frame or value could not be encoded or decoded (the seed's
    /// catch-all, kept for encode/decode failures).
    #[error("{0}")]
    Error(String),
}

/// Why a persisted image could not be captured, loaded or saved. Every
/// variant names what differs, so a caller can tell a corrupted file from
/// one made for another guest, layout or nub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be read or written.
    #[error("cannot {op} image file {path}: {source}")]
    Io {
        /// `read`, `write` or `rename`.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with `NUBIMAGE`.
    #[error("not a nub image file (bad magic)")]
    BadMagic,
    /// The file's format version is not one this nub reads.
    #[error("image format version {file} is not supported (this nub reads version {supported})")]
    FormatVersion {
        /// The file's.
        file: u32,
        /// The one this nub reads.
        supported: u32,
    },
    /// The guest was booted with another host/guest ABI.
    #[error("image was made for ABI version {file}, this nub speaks ABI version {host}")]
    AbiVersion {
        /// The file's.
        file: u32,
        /// This nub's.
        host: u32,
    },
    /// The file ends inside its 128-byte header.
    #[error("image file is {have} bytes, shorter than its 128-byte header")]
    HeaderTruncated {
        /// The file's size.
        have: u64,
    },
    /// The header's content size is not what follows it.
    #[error("image header says {header} content bytes, the file has {file}")]
    Size {
        /// What the header says.
        header: u64,
        /// What the file holds.
        file: u64,
    },
    /// The content ends before a part the header or metadata announces.
    #[error("image content is truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Bytes the parts announced need.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// Bytes follow the last part.
    #[error("image content has {extra} bytes after its last part")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// The content's blake3 digest is not the header's: the file was
    /// corrupted or edited.
    #[error("image content does not match its digest (corrupted or edited)")]
    Digest,
    /// The embedded guest ELF's blake3 digest is not the one recorded.
    #[error("the image's guest ELF does not match its recorded digest")]
    ElfDigest,
    /// A count is over what any guest can need.
    #[error("image lists {count} {what}, more than the {max} allowed")]
    TooMany {
        /// What is counted.
        what: &'static str,
        /// The file's count.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// Page numbers are not strictly ascending.
    #[error("image page number {index} is not above the one before it")]
    PagesUnordered {
        /// Index into the page list.
        index: usize,
    },
    /// The embedded guest ELF is not a valid guest.
    #[error("the image's guest ELF is invalid: {0}")]
    Guest(#[source] GuestBinaryError),
    /// The layout this host computes for the guest and sizes differs from
    /// the one recorded (another nub version lays memory out differently,
    /// or the file was forged).
    #[error("image layout differs: {what} is {file:#x} in the file, {host:#x} on this host")]
    Layout {
        /// The region or size that differs.
        what: &'static str,
        /// The file's value.
        file: u64,
        /// This host's.
        host: u64,
    },
    /// A boot value or size no nub writes.
    #[error("image {what} {value:#x} is invalid")]
    Invalid {
        /// What it is.
        what: &'static str,
        /// The file's value.
        value: u64,
    },
    /// A captured page lies outside the guest-writable memory (code,
    /// read-only data, page tables, system pages, guards).
    #[error("image page at {gpa:#x} is outside the guest's writable memory")]
    PageOutsideWritable {
        /// Its guest physical address.
        gpa: u64,
    },
    /// A saved register value is one no CPL 3 guest between calls has.
    #[error("image register {register} = {value:#x} is invalid: {reason}")]
    Register {
        /// `rip`, `rsp` or `rflags`.
        register: &'static str,
        /// The file's value.
        value: u64,
        /// What it must be.
        reason: &'static str,
    },
    /// The configuration asks for a call mode the image's guest was not
    /// booted in (the guest's dispatcher is one or the other for life).
    #[error("the image's guest runs in {image} mode for life; {config} mode was asked for")]
    CallMode {
        /// `exit` or `resident`.
        image: &'static str,
        /// `exit` or `resident`.
        config: &'static str,
    },
    /// The guest did not come to rest (park) in time to be captured.
    #[error("the resident guest did not park within {0:?}; nothing was captured")]
    NotAtRest(std::time::Duration),
    /// A bug in nub.
    #[error("internal error in nub's image code (a bug; please report it): {0}")]
    Internal(&'static str),
}

impl HyperlightError {
    /// Whether this error poisons the sandbox it came from: the guest (or
    /// the VM) can no longer be trusted to answer the next call correctly.
    /// An exhaustive match: a new variant must say which it is.
    pub fn poisons(&self) -> bool {
        match self {
            // Refused before the guest ran, or answered by a guest that is
            // fine: the sandbox carries on.
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
            | Self::Image(_)
            | Self::WatchdogUnavailable(_)
            | Self::PoisonedSandbox => false,
            // The guest failed, lied, was stopped mid-call, or the host lost
            // track of the VM: drop the sandbox and build another.
            Self::GuestFault { .. }
            | Self::StackOverflow { .. }
            | Self::GuestPanicked { .. }
            | Self::GuestAborted { .. }
            | Self::GuestOutOfMemory { .. }
            | Self::TripleFault
            | Self::UnexpectedPort { .. }
            | Self::MemoryAccessViolation { .. }
            | Self::UnexpectedExit(_)
            | Self::ProtocolViolation(_)
            | Self::Canceled
            | Self::ExecutionTimeout(_)
            | Self::HostFunctionPanicked { .. }
            | Self::Kvm(_)
            | Self::GuestMemory(_)
            | Self::VcpuThread(_)
            | Self::Internal(_)
            | Self::Error(_) => true,
        }
    }
}

/// What to do about a cap that has no wire form, where there is something.
fn wire_hint(e: &WireFault) -> &'static str {
    match e {
        WireFault::PagedData | WireFault::RefSlot { .. } => {
            "; put_cap_graph sends paged data and Ref slots"
        }
        _ => "",
    }
}

impl From<LayoutError> for HyperlightError {
    fn from(e: LayoutError) -> Self {
        Self::InvalidConfiguration(e.into())
    }
}

impl From<MemoryError> for HyperlightError {
    fn from(e: MemoryError) -> Self {
        Self::GuestMemory(e.into())
    }
}

impl From<javm_cap::WireError> for HyperlightError {
    fn from(e: javm_cap::WireError) -> Self {
        Self::Wire(e.into())
    }
}

impl From<HypervisorError> for HyperlightError {
    /// [`HypervisorError::Memory`] becomes [`HyperlightError::GuestMemory`];
    /// everything else is [`HyperlightError::Kvm`].
    fn from(e: HypervisorError) -> Self {
        match e {
            HypervisorError::Memory(m) => Self::GuestMemory(m.into()),
            other => Self::Kvm(other),
        }
    }
}

/// `Result` with [`HyperlightError`].
pub type Result<T> = std::result::Result<T, HyperlightError>;

/// The name of x86 exception `vector`, e.g. `"page fault (#PF)"` (the
/// ABI's exception table, [`nub_host_common::exceptions`]).
/// `" (code N)"` after a guest error's message, or nothing for code 0.
fn code_suffix(code: u32) -> String {
    if code == 0 {
        String::new()
    } else {
        format!(" (code {code})")
    }
}

pub(crate) fn exception_name(vector: u8) -> &'static str {
    nub_host_common::exceptions::name(vector)
}

#[cfg(test)]
mod tests {
    use std::io;

    use javm_cap::CapHash;

    use super::*;

    /// A distinct number per variant. The match has no wildcard, so adding
    /// a variant fails to compile here until it gets a number, and
    /// [`every_variant`] must then hold an example of it.
    fn variant_number(e: &HyperlightError) -> usize {
        use HyperlightError as E;
        match e {
            E::GuestFunctionError { .. } => 0,
            E::UnknownFunction { .. } => 1,
            E::PayloadTooLarge { .. } => 2,
            E::BatchTooLarge { .. } => 3,
            E::ResponseTooLarge { .. } => 4,
            E::GuestFault { .. } => 5,
            E::StackOverflow { .. } => 6,
            E::GuestPanicked { .. } => 7,
            E::GuestAborted { .. } => 8,
            E::GuestOutOfMemory { .. } => 9,
            E::TripleFault => 10,
            E::UnexpectedPort { .. } => 11,
            E::MemoryAccessViolation { .. } => 12,
            E::UnexpectedExit(_) => 13,
            E::ProtocolViolation(_) => 14,
            E::Canceled => 15,
            E::ExecutionTimeout(_) => 16,
            E::HostFunctionPanicked { .. } => 17,
            E::PoisonedSandbox => 18,
            E::BadGuestBinary(_) => 19,
            E::InvalidConfiguration(_) => 20,
            E::ReservedFunctionId { .. } => 21,
            E::Kvm(_) => 22,
            E::GuestMemory(_) => 23,
            E::Wire(_) => 24,
            E::CapMissingChild { .. } => 25,
            E::CapRejected => 26,
            E::CapHashMismatch { .. } => 27,
            E::WatchdogUnavailable(_) => 28,
            E::VcpuThread(_) => 29,
            E::Internal(_) => 30,
            E::Error(_) => 31,
            E::Image(_) => 32,
        }
    }

    /// How many variants [`variant_number`] numbers.
    const VARIANTS: usize = 33;

    /// One example of every variant, with the words its message must
    /// contain: its cause and, where the caller can act, what to do.
    fn every_variant() -> Vec<(HyperlightError, &'static [&'static str])> {
        use HyperlightError as E;
        let hash = CapHash::from_bytes([0xAB; 32]);
        let other = CapHash::from_bytes([0xCD; 32]);
        vec![
            (
                E::GuestFunctionError {
                    fn_id: 7,
                    code: 404,
                    message: "no such key".into(),
                },
                &["guest function 7", "no such key", "code 404"],
            ),
            (E::UnknownFunction { fn_id: 99 }, &["no function", "99"]),
            (
                E::PayloadTooLarge {
                    size: 70_000,
                    max: 65_000,
                },
                &["payload of 70000 bytes", "input ring", "input_ring_size"],
            ),
            (
                E::BatchTooLarge {
                    calls: 500,
                    capacity: 65_000,
                },
                &["batch of 500", "input ring", "input_ring_size"],
            ),
            (
                E::ResponseTooLarge {
                    needed: 70_000,
                    capacity: 65_000,
                },
                &["70000 bytes", "output ring", "output_ring_size"],
            ),
            (
                E::GuestFault {
                    vector: 14,
                    error_code: 6,
                    rip: 0x40_1000,
                    cr2: 0x10,
                },
                &["page fault (#PF)", "vector 14", "rip 0x401000", "cr2 0x10"],
            ),
            (
                E::StackOverflow {
                    rip: 0x40_1000,
                    cr2: 0x7f_f000,
                },
                &["stack overflow", "guard page", "stack_size"],
            ),
            (
                E::GuestPanicked {
                    message: "index out of bounds at src/main.rs:3".into(),
                },
                &["panicked", "index out of bounds", "main.rs:3"],
            ),
            (
                E::GuestAborted {
                    code: 42,
                    message: "gave up".into(),
                },
                &["aborted", "42", "gave up"],
            ),
            (
                E::GuestOutOfMemory { size: 1 << 20 },
                &["out of memory", "1048576 bytes", "heap_size"],
            ),
            (E::TripleFault, &["triple fault"]),
            (
                E::UnexpectedPort {
                    port: 0x3f8,
                    value: 0x41,
                },
                &["unknown I/O port 0x3f8", "0x41"],
            ),
            (
                E::MemoryAccessViolation {
                    addr: 0x3000_0000,
                    write: true,
                },
                &["wrote", "outside its memory", "0x30000000"],
            ),
            (
                E::UnexpectedExit("the guest halted".into()),
                &["stopped unexpectedly", "halted"],
            ),
            (
                E::ProtocolViolation(Violation::FramePastEnd {
                    frame: Frame::Response,
                    offset: 0x40,
                    bound: 0x30,
                }),
                &["broke the call protocol", "runs past the end", "0x40"],
            ),
            (E::Canceled, &["canceled"]),
            (
                E::ExecutionTimeout(Duration::from_millis(1500)),
                &["deadline", "1.5s"],
            ),
            (
                E::HostFunctionPanicked {
                    fn_id: 3,
                    message: "boom".into(),
                },
                &["host function 3 panicked", "boom"],
            ),
            (E::PoisonedSandbox, &["poisoned", "build a new one"]),
            (
                E::BadGuestBinary(GuestBinaryError::Empty),
                &["guest binary is empty"],
            ),
            (
                E::InvalidConfiguration(LayoutFault::TooLarge {
                    needed: 1 << 40,
                    max: 1 << 30,
                }),
                &[
                    "invalid sandbox configuration",
                    "exceeds the supported maximum",
                ],
            ),
            (
                E::ReservedFunctionId { fn_id: 0x8000_0001 },
                &["0x80000001", "reserved system range"],
            ),
            (
                E::Kvm(HypervisorError::KvmUnavailable {
                    op: "open /dev/kvm",
                    source: io::Error::from_raw_os_error(libc::EACCES),
                }),
                &[
                    "KVM is not available",
                    "open /dev/kvm",
                    "permissions",
                    "`kvm`",
                ],
            ),
            (
                E::GuestMemory(MemoryFault::OutOfBounds {
                    addr: 0x1_0000_0000,
                    len: 8,
                    size: 0x100_0000,
                }),
                &["0x100000000", "outside guest memory"],
            ),
            (
                E::Wire(WireFault::PagedData),
                &["cannot be sent to the guest", "put_cap_graph"],
            ),
            (
                E::CapMissingChild { child: hash },
                &["does not hold child", "put_cap_graph"],
            ),
            (E::CapRejected, &["refused the capability"]),
            (
                E::CapHashMismatch {
                    given: hash,
                    computed: other,
                },
                &["hash given", "not the capability's hash"],
            ),
            (
                E::WatchdogUnavailable(io::Error::from(io::ErrorKind::OutOfMemory)),
                &["deadline watchdog thread"],
            ),
            (
                E::VcpuThread(io::Error::from(io::ErrorKind::OutOfMemory)),
                &["vCPU thread"],
            ),
            (
                E::Image(ImageError::Layout {
                    what: "heap",
                    file: 0x1000,
                    host: 0x2000,
                }),
                &["layout differs", "heap", "0x1000", "0x2000"],
            ),
            (
                E::Internal("graph walk lost the root"),
                &["internal error", "bug", "graph walk lost the root"],
            ),
            (
                E::Error("frame body is not a valid archive".into()),
                &["not a valid archive"],
            ),
        ]
    }

    #[test]
    fn a_guest_error_shows_its_code_unless_it_is_zero() {
        let uncoded = HyperlightError::GuestFunctionError {
            fn_id: 7,
            code: 0,
            message: "bad input".into(),
        };
        assert_eq!(uncoded.to_string(), "guest function 7 failed: bad input");
    }

    #[test]
    fn every_variant_names_its_cause() {
        let examples = every_variant();
        let mut seen = [false; VARIANTS];
        for (error, words) in &examples {
            let message = error.to_string();
            println!("{:>2} {message}", variant_number(error));
            for word in *words {
                assert!(message.contains(word), "{message:?} lacks {word:?}");
            }
            let n = variant_number(error);
            assert!(n < VARIANTS, "raise VARIANTS to cover variant {n}");
            assert!(!seen[n], "two examples of variant {n}");
            seen[n] = true;
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|&n| !seen[n]).collect();
        assert!(missing.is_empty(), "no example of variants {missing:?}");
    }

    #[test]
    fn guest_memory_errors_convert_to_their_own_variant() {
        let oob = MemoryError::OutOfBounds {
            addr: 1,
            len: 2,
            size: 3,
        };
        assert!(matches!(
            HyperlightError::from(HypervisorError::Memory(oob)),
            HyperlightError::GuestMemory(m) if m == MemoryFault::from(oob)
        ));
        assert!(matches!(
            HyperlightError::from(oob),
            HyperlightError::GuestMemory(m) if m == MemoryFault::from(oob)
        ));
        assert!(matches!(
            HyperlightError::from(HypervisorError::KvmUnsupported("x")),
            HyperlightError::Kvm(HypervisorError::KvmUnsupported("x"))
        ));
    }
}
