//! The report page: how the guest describes a failed execution.
//!
//! Before it exits through [`crate::ports::ExitPort::Panic`],
//! [`crate::ports::ExitPort::Abort`] or [`crate::ports::ExitPort::Fault`] the
//! guest fills the page at [`crate::layout::REPORT_PAGE_GPA`] without using
//! its heap:
//!
//! | offset | field | |
//! | --- | --- | --- |
//! | 0 | `kind: u32` | [`ReportKind`] |
//! | 4 | `vector: u32` | exception vector (faults) |
//! | 8 | `error_code: u64` | exception error code, 0 if none |
//! | 16 | `rip: u64` | faulting instruction |
//! | 24 | `cr2: u64` | CR2 (page faults) |
//! | 32 | `rsp: u64` | stack pointer at the fault |
//! | 40 | `code: u64` | abort code, or the failed allocation size |
//! | 48 | `message_len: u32` | bytes of UTF-8 message at offset 64 |
//! | 64 | `message` | up to [`MAX_MESSAGE_LEN`] bytes |
//!
//! The host treats every field as untrusted: the length is clamped and the
//! message decoded lossily.

use crate::{read_u32, read_u64, write_u32, write_u64};

/// Offset of `kind`.
pub const KIND_OFFSET: usize = 0;
/// Offset of `vector`.
pub const VECTOR_OFFSET: usize = 4;
/// Offset of `error_code`.
pub const ERROR_CODE_OFFSET: usize = 8;
/// Offset of `rip`.
pub const RIP_OFFSET: usize = 16;
/// Offset of `cr2`.
pub const CR2_OFFSET: usize = 24;
/// Offset of `rsp`.
pub const RSP_OFFSET: usize = 32;
/// Offset of `code`.
pub const CODE_OFFSET: usize = 40;
/// Offset of `message_len`.
pub const MESSAGE_LEN_OFFSET: usize = 48;
/// Offset of the message bytes.
pub const MESSAGE_OFFSET: usize = 64;
/// Largest message the page holds.
pub const MAX_MESSAGE_LEN: usize = crate::layout::PAGE_SIZE as usize - MESSAGE_OFFSET;

/// What the report describes.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// Nothing reported.
    None = 0,
    /// A Rust panic; `message` holds the formatted panic.
    Panic = 1,
    /// A deliberate abort; `code` and `message`.
    Abort = 2,
    /// A CPU exception; `vector`, `error_code`, `rip`, `cr2`, `rsp`.
    Fault = 3,
    /// The heap could not satisfy an allocation of `code` bytes.
    OutOfMemory = 4,
}

/// A decoded report. `message` borrows from the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report<'a> {
    /// What happened; `None` if the kind field holds an unknown value.
    pub kind: Option<ReportKind>,
    /// Exception vector.
    pub vector: u32,
    /// Exception error code.
    pub error_code: u64,
    /// Instruction pointer.
    pub rip: u64,
    /// CR2.
    pub cr2: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Abort code.
    pub code: u64,
    /// Message bytes (length clamped to the page).
    pub message: &'a [u8],
}

impl<'a> Report<'a> {
    /// Decodes a report from the page bytes. Never fails: missing or
    /// out-of-range fields read as zero and the message is clamped.
    pub fn decode(page: &'a [u8]) -> Self {
        let kind = match read_u32(page, KIND_OFFSET).unwrap_or(0) {
            0 => Some(ReportKind::None),
            1 => Some(ReportKind::Panic),
            2 => Some(ReportKind::Abort),
            3 => Some(ReportKind::Fault),
            4 => Some(ReportKind::OutOfMemory),
            _ => None,
        };
        let len = read_u32(page, MESSAGE_LEN_OFFSET).unwrap_or(0) as usize;
        let len = len.min(MAX_MESSAGE_LEN);
        let message = page
            .get(MESSAGE_OFFSET..MESSAGE_OFFSET.saturating_add(len))
            .unwrap_or(&[]);
        Self {
            kind,
            vector: read_u32(page, VECTOR_OFFSET).unwrap_or(0),
            error_code: read_u64(page, ERROR_CODE_OFFSET).unwrap_or(0),
            rip: read_u64(page, RIP_OFFSET).unwrap_or(0),
            cr2: read_u64(page, CR2_OFFSET).unwrap_or(0),
            rsp: read_u64(page, RSP_OFFSET).unwrap_or(0),
            code: read_u64(page, CODE_OFFSET).unwrap_or(0),
            message,
        }
    }

    /// Encodes into `page` (at least one page long); the message is
    /// truncated to [`MAX_MESSAGE_LEN`]. Used by the guest and by tests.
    pub fn encode(&self, page: &mut [u8]) {
        let kind = self.kind.unwrap_or(ReportKind::None) as u32;
        write_u32(page, KIND_OFFSET, kind);
        write_u32(page, VECTOR_OFFSET, self.vector);
        write_u64(page, ERROR_CODE_OFFSET, self.error_code);
        write_u64(page, RIP_OFFSET, self.rip);
        write_u64(page, CR2_OFFSET, self.cr2);
        write_u64(page, RSP_OFFSET, self.rsp);
        write_u64(page, CODE_OFFSET, self.code);
        let len = self.message.len().min(MAX_MESSAGE_LEN);
        if let Some(dst) = page.get_mut(MESSAGE_OFFSET..MESSAGE_OFFSET + len) {
            dst.copy_from_slice(self.message.get(..len).unwrap_or(&[]));
            write_u32(page, MESSAGE_LEN_OFFSET, len as u32);
        } else {
            write_u32(page, MESSAGE_LEN_OFFSET, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_lengths() {
        let mut page = vec![0u8; 4096];
        let r = Report {
            kind: Some(ReportKind::Fault),
            vector: 14,
            error_code: 2,
            rip: 0x10_1234,
            cr2: 0xdead_0000,
            rsp: 0x80_0000,
            code: 0,
            message: b"boom",
        };
        r.encode(&mut page);
        assert_eq!(Report::decode(&page), r);
        write_u32(&mut page, MESSAGE_LEN_OFFSET, u32::MAX);
        assert_eq!(Report::decode(&page).message.len(), MAX_MESSAGE_LEN);
        write_u32(&mut page, KIND_OFFSET, 77);
        assert_eq!(Report::decode(&page).kind, None);
        assert_eq!(Report::decode(&page[..10]).message, b"");
    }
}
