//! [`ImageError`]: why an image could not be captured, read, checked,
//! loaded or written.

use std::path::PathBuf;

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
        path: PathBuf,
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
    Guest(#[source] crate::error::GuestBinaryError),
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
