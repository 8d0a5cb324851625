//! Why a guest's answer cannot be true: the reason every
//! [`HyperlightError::ProtocolViolation`](crate::HyperlightError::ProtocolViolation)
//! carries, so a caller (or a test) can match on what the guest did
//! instead of parsing a message. It grows the ring, codec and log errors of
//! `nub_host_common` and the cap lies of [`crate::caps`] into nub-sandbox's
//! own types: no variant carries another crate's error.

use std::time::Duration;

use nub_host_common::{log_buffer::LogError, ring::FrameKind};

use javm_cap::CapHash as AbiCapHash;

/// A kind of frame, as a violation names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A guest function's response.
    Response,
    /// A host-call request.
    HostCallRequest,
}

impl Frame {
    /// The ABI's frame kind.
    pub(crate) fn kind(self) -> FrameKind {
        match self {
            Self::Response => FrameKind::Response,
            Self::HostCallRequest => FrameKind::HostCallRequest,
        }
    }
}

/// Why the guest's log buffer cannot be read (the log buffer's own error,
/// as nub-sandbox reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogFault {
    /// The region is smaller than its header.
    #[error("log region of {0} bytes is smaller than its header")]
    RegionTooSmall(usize),
    /// `write` claims more bytes than the data area holds.
    #[error("log write offset {write:#x} past the data area ({capacity:#x} bytes)")]
    WriteOutOfRange {
        /// The value found.
        write: u64,
        /// Data area capacity.
        capacity: usize,
    },
    /// A record's header or bytes run past `write`.
    #[error("log record at {offset:#x} runs past the write offset")]
    Truncated {
        /// Offset of the record in the data area.
        offset: usize,
    },
    /// A record's level byte is not 1..=5.
    #[error("log record at {offset:#x} has level {level}")]
    BadLevel {
        /// Offset of the record in the data area.
        offset: usize,
        /// The byte found.
        level: u8,
    },
}

impl From<LogError> for LogFault {
    fn from(e: LogError) -> Self {
        match e {
            LogError::RegionTooSmall(size) => Self::RegionTooSmall(size),
            LogError::WriteOutOfRange { write, capacity } => {
                Self::WriteOutOfRange { write, capacity }
            }
            LogError::Truncated { offset } => Self::Truncated { offset },
            LogError::BadLevel { offset, level } => Self::BadLevel { offset, level },
            // LogError is non_exhaustive; a new kind is still a malformed
            // buffer, reported at its start.
            _ => Self::Truncated { offset: 0 },
        }
    }
}

/// A guest's answer to a cap system call that cannot be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapLie {
    /// A `PUT_CAP` answer of the wrong length.
    #[error("PUT_CAP answered with {0} bytes, not a 32-byte hash")]
    PutAnswerLength(usize),
    /// A `PUT_CAP` answer naming another hash than the cap sent.
    #[error("PUT_CAP answered hash {answered} for a cap whose hash is {expected}")]
    PutHash {
        /// The cap's hash.
        expected: AbiCapHash,
        /// What the guest answered.
        answered: AbiCapHash,
    },
    /// A `GET_CAP` answer with an unknown tag, or none.
    #[error("GET_CAP answered with an unknown tag")]
    GetTag,
    /// A `GET_CAP` answer whose cap bytes are not a valid wire cap.
    #[error("GET_CAP answered with a malformed cap")]
    GetMalformed,
    /// A `GET_CAP` answer whose cap hashes to another hash.
    #[error("GET_CAP for {asked} answered with a cap whose hash is {answered}")]
    GetHash {
        /// The hash asked for.
        asked: AbiCapHash,
        /// The hash of the cap answered.
        answered: AbiCapHash,
    },
    /// A `DIRECTORY_STATS` answer that is not three u64s.
    #[error("malformed directory stats")]
    Stats,
    /// The guest refused a parent for lacking a child it was just given.
    #[error("the guest accepted child {0} and then refused its parent for lacking it")]
    ChildStillMissing(AbiCapHash),
}

/// Why a guest's answer cannot be true.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Bytes at a ring data offset lie outside the ring.
    #[error("{len} bytes at ring offset {offset:#x} lie outside the ring")]
    OutsideRing {
        /// The data offset.
        offset: usize,
        /// How many bytes.
        len: usize,
    },
    /// A ring region too small for its header.
    #[error("ring region too small")]
    RingTooSmall,
    /// The output ring header's `head` and `tail` do not describe frames
    /// inside its data area.
    #[error("output ring: head {head:#x} and tail {tail:#x} in a data area of {capacity:#x} bytes")]
    BadRingOffsets {
        /// `head` as found.
        head: u64,
        /// `tail` as found.
        tail: u64,
        /// The data area's size.
        capacity: usize,
    },
    /// A frame runs past the end of the data it may use.
    #[error("{frame:?} frame at {offset:#x}: runs past the end of its data ({bound:#x})")]
    FramePastEnd {
        /// The frame expected.
        frame: Frame,
        /// Its data offset.
        offset: usize,
        /// Where its data ends.
        bound: usize,
    },
    /// A frame offset that is not frame-aligned.
    #[error("{frame:?} frame at {offset:#x}: not 16-byte aligned")]
    FrameMisaligned {
        /// The frame expected.
        frame: Frame,
        /// Its data offset.
        offset: usize,
    },
    /// Another kind of frame (or an unknown kind) where `frame` belongs.
    #[error("expected a {frame:?} frame at {offset:#x}, found kind {found}")]
    WrongFrameKind {
        /// The frame expected.
        frame: Frame,
        /// Its data offset.
        offset: usize,
        /// The raw kind found.
        found: u32,
    },
    /// A frame body that is not a valid archive.
    #[error("{frame:?} frame at {offset:#x}: the body is not a valid archive")]
    BadBody {
        /// The frame.
        frame: Frame,
        /// Its data offset.
        offset: usize,
    },
    /// Fewer responses than requests while the output ring had room.
    #[error("{found} of {expected} responses, with room for more in the output ring")]
    MissingResponses {
        /// Requests sent.
        expected: usize,
        /// Responses found.
        found: usize,
    },
    /// The guest exited DONE with no response at all.
    #[error("guest returned no response")]
    NoResponse,
    /// A status a guest function may not answer with: a host-call status,
    /// or none the ABI defines.
    #[error("guest answered fn {fn_id} with status {status}")]
    BadStatus {
        /// The function called.
        fn_id: u32,
        /// The raw status.
        status: u32,
    },
    /// The guest signalled a failure without writing its report.
    #[error("guest signalled a failure without a report")]
    NoReport,
    /// The guest's log buffer is malformed.
    #[error("log buffer: {0}")]
    Log(LogFault),
    /// A cap answer that cannot be true.
    #[error("{0}")]
    Cap(CapLie),
    /// The guest exited through a nub port where nub waited for another.
    #[error("guest exited through port {port:#x} while nub waited for {waiting_for}")]
    MisplacedPort {
        /// The port.
        port: u16,
        /// What nub waited for.
        waiting_for: &'static str,
    },
    /// Resident mode: the guest logged with no call open.
    #[error("the guest logged with no call open")]
    LoggedOutsideCall,
    /// Resident mode: the guest made a host call with no call open.
    #[error("the guest made a host call with no call open")]
    HostCallOutsideCall,
    /// Resident mode: the guest kept running with no call open past its
    /// park deadline (docs/resident.md).
    #[error(
        "the guest kept running for {ran:?} of CPU time with no call open (it must park within {limit:?})"
    )]
    NeverParked {
        /// CPU time it ran with no call open.
        ran: Duration,
        /// The park deadline.
        limit: Duration,
    },
    /// Resident mode: an inline host-call request longer than its line.
    #[error("inline host-call request of {len} bytes (at most {max})")]
    InlineRequestTooLong {
        /// The length claimed.
        len: usize,
        /// The most a line holds.
        max: usize,
    },
    /// A heap-stats answer that is not the expected words.
    #[error("malformed heap stats")]
    BadHeapStats,
    /// A boot-info answer with a bad magic or ABI version.
    #[error("boot info with bad magic or version")]
    BadBootInfo,
}
