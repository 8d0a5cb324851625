//! The guest log buffer: where the guest's `log` records wait for the host.
//!
//! A guest's `log::info!` (and the other macros) must not cost a VM exit
//! each, so the guest appends records to a buffer in its memory and the host
//! collects them when the vCPU stops: after every call, after a failed
//! execution (so the records leading up to a panic or fault are kept) and
//! whenever the guest exits through [`crate::ports::ExitPort::Log`] because
//! the buffer is full. The buffer is one region of the memory layout
//! ([`crate::layout::MemoryLayout::log_buffer`]); its address, size and the
//! most verbose level the host wants are in
//! [`crate::boot::BootInfo`] (`log_va`, `log_size`, `log_level`).
//!
//! Layout of the region:
//!
//! | offset | field | written by |
//! | --- | --- | --- |
//! | 0 | `write: u64`: bytes of records in the data area | guest (appends), host (resets to 0) |
//! | 8 | `dropped: u64`: records the guest could not store | guest (counts), host (resets to 0) |
//! | 16..64 | reserved, zero | |
//! | 64.. | data area: records, back to back | guest |
//!
//! A record is a 4-byte header — `level: u8` ([`LogLevel`], 1 error … 5
//! trace), `target_len: u8`, `message_len: u16` (little endian) — followed by
//! `target_len` bytes of target (the guest module path, truncated to 255
//! bytes) and `message_len` bytes of UTF-8 message. Records are not padded.
//!
//! The host treats the whole region as hostile: it copies the header once,
//! checks `write` against the data area, copies `write` bytes out once and
//! parses only that private copy ([`parse_records`]), with every length
//! checked. Anything inconsistent is a [`LogError`], which the host reports
//! as a protocol violation.

use core::fmt;

use crate::{read_u64, write_u64};

/// Size of the region header; records start after it.
pub const LOG_HEADER_SIZE: usize = 64;
/// Offset of `write` in the header.
pub const WRITE_OFFSET: usize = 0;
/// Offset of `dropped` in the header.
pub const DROPPED_OFFSET: usize = 8;
/// Size of a record header.
pub const RECORD_HEADER_SIZE: usize = 4;
/// Longest target kept in a record (longer ones are cut).
pub const MAX_TARGET_LEN: usize = u8::MAX as usize;
/// Longest message kept in a record (longer ones are cut).
pub const MAX_MESSAGE_LEN: usize = 2048;

abi_enum! {
    /// A record's level, as the guest writes it. The numbers match the order of
    /// the `log` crate's `Level` (1 = error … 5 = trace); as a *maximum* level
    /// in [`crate::boot::BootInfo::log_level`], 0 means off.
    #[derive(PartialOrd, Ord)]
    pub enum LogLevel: u8 {
        /// Errors.
        Error = 1,
        /// Warnings.
        Warn = 2,
        /// Information.
        Info = 3,
        /// Debugging detail.
        Debug = 4,
        /// Very fine detail.
        Trace = 5,
    }
}

/// Why a log buffer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// The region is smaller than its header.
    RegionTooSmall(usize),
    /// `write` claims more bytes than the data area holds.
    WriteOutOfRange {
        /// The value found.
        write: u64,
        /// Data area capacity.
        capacity: usize,
    },
    /// A record's header or bytes run past `write`.
    Truncated {
        /// Offset of the record in the data area.
        offset: usize,
    },
    /// A record has a level byte that is not 1..=5.
    BadLevel {
        /// Offset of the record in the data area.
        offset: usize,
        /// The byte found.
        level: u8,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RegionTooSmall(size) => {
                write!(f, "log buffer of {size} bytes is smaller than its header")
            }
            Self::WriteOutOfRange { write, capacity } => write!(
                f,
                "log buffer write offset {write} is past its {capacity}-byte data area"
            ),
            Self::Truncated { offset } => {
                write!(
                    f,
                    "log record at offset {offset} runs past the written bytes"
                )
            }
            Self::BadLevel { offset, level } => {
                write!(f, "log record at offset {offset} has invalid level {level}")
            }
        }
    }
}

impl core::error::Error for LogError {}

/// Data-area capacity of a log region of `region_size` bytes.
pub const fn capacity(region_size: usize) -> usize {
    region_size.saturating_sub(LOG_HEADER_SIZE)
}

/// The `(write, dropped)` pair from a copy of the header, with `write`
/// checked against the data area of a region of `region_size` bytes.
pub fn read_header(header: &[u8], region_size: usize) -> Result<(usize, u64), LogError> {
    let too_small = LogError::RegionTooSmall(region_size);
    if region_size < LOG_HEADER_SIZE {
        return Err(too_small);
    }
    let write = read_u64(header, WRITE_OFFSET).ok_or(too_small)?;
    let dropped = read_u64(header, DROPPED_OFFSET).ok_or(too_small)?;
    let capacity = capacity(region_size);
    let out_of_range = LogError::WriteOutOfRange { write, capacity };
    let write = usize::try_from(write).map_err(|_| out_of_range)?;
    if write > capacity {
        return Err(out_of_range);
    }
    Ok((write, dropped))
}

/// Encoded size of a record with these lengths (after the cuts to
/// [`MAX_TARGET_LEN`] and [`MAX_MESSAGE_LEN`]).
pub const fn record_size(target_len: usize, message_len: usize) -> usize {
    let t = if target_len > MAX_TARGET_LEN {
        MAX_TARGET_LEN
    } else {
        target_len
    };
    let m = if message_len > MAX_MESSAGE_LEN {
        MAX_MESSAGE_LEN
    } else {
        message_len
    };
    RECORD_HEADER_SIZE + t + m
}

/// Appends one record to the region `region` (header included): the guest
/// side. The target is cut to [`MAX_TARGET_LEN`] bytes and the message to
/// [`MAX_MESSAGE_LEN`]; a cut message ends at a byte boundary, which the
/// host's lossy decoding tolerates.
///
/// Returns `Full` (writing nothing) when the record does not fit in the
/// space left, so the caller can have the host drain the buffer and try
/// again. Only a record larger than the whole data area is stored cut to
/// fit (`Cut`), and only into an empty buffer; `Full` from an empty buffer
/// means not even the record header and target fit.
pub fn append(region: &mut [u8], level: LogLevel, target: &[u8], message: &[u8]) -> Appended {
    let capacity = capacity(region.len());
    let write = read_u64(region, WRITE_OFFSET)
        .and_then(|w| usize::try_from(w).ok())
        .filter(|&w| w <= capacity);
    // A corrupt offset (the guest scribbled on its own buffer) restarts it.
    let write = write.unwrap_or(0);
    let target = target
        .get(..target.len().min(MAX_TARGET_LEN))
        .unwrap_or(&[]);
    let room = capacity - write;
    let fixed = RECORD_HEADER_SIZE + target.len();
    let wanted = message.len();
    let whole = fixed + wanted.min(MAX_MESSAGE_LEN);
    // A record is only cut when it is larger than the whole (empty) data
    // area; otherwise a full buffer is drained first, so nothing is lost.
    if whole > room && (write > 0 || room < fixed || (room == fixed && wanted > 0)) {
        return Appended::Full;
    }
    let message_len = wanted.min(MAX_MESSAGE_LEN).min(room - fixed);
    let message = message.get(..message_len).unwrap_or(&[]);
    let start = LOG_HEADER_SIZE + write;
    let end = start + fixed + message.len();
    let Some(dst) = region.get_mut(start..end) else {
        return Appended::Full;
    };
    let [lvl, tlen, m0, m1, rest @ ..] = dst else {
        return Appended::Full;
    };
    *lvl = level as u8;
    *tlen = target.len() as u8;
    [*m0, *m1] = (message.len() as u16).to_le_bytes();
    let (t, m) = rest.split_at_mut(target.len());
    t.copy_from_slice(target);
    m.copy_from_slice(message);
    write_u64(region, WRITE_OFFSET, (write + fixed + message.len()) as u64);
    if message_len < wanted {
        Appended::Cut
    } else {
        Appended::Stored
    }
}

/// Adds one to the region's `dropped` counter (saturating).
pub fn count_dropped(region: &mut [u8]) {
    let dropped = read_u64(region, DROPPED_OFFSET).unwrap_or(0);
    write_u64(region, DROPPED_OFFSET, dropped.saturating_add(1));
}

/// Empties the region: `write` and `dropped` back to 0 (the host, after it
/// has copied the records out).
pub fn reset(region: &mut [u8]) {
    write_u64(region, WRITE_OFFSET, 0);
    write_u64(region, DROPPED_OFFSET, 0);
}

/// What [`append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The whole record was stored.
    Stored,
    /// The record was stored with its message cut short.
    Cut,
    /// Nothing was stored: the buffer has no room for this record's header
    /// and target.
    Full,
}

/// One record, borrowed from a host-private copy of the data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// Its level.
    pub level: LogLevel,
    /// The guest module path it came from (not trusted to be UTF-8).
    pub target: &'a [u8],
    /// The message (not trusted to be UTF-8).
    pub message: &'a [u8],
}

/// Iterates over the records in `data` (the first `write` bytes of the data
/// area, copied out of guest memory). Stops at the first malformed record
/// with its error.
pub fn parse_records(data: &[u8]) -> Records<'_> {
    Records {
        data,
        offset: 0,
        failed: false,
    }
}

/// The iterator [`parse_records`] returns.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    data: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<LogRecord<'a>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let offset = self.offset;
        let rest = self.data.get(offset..)?;
        if rest.is_empty() {
            return None;
        }
        let parsed = parse_one(rest, offset);
        match &parsed {
            Ok((_, len)) => self.offset = offset + len,
            Err(_) => self.failed = true,
        }
        Some(parsed.map(|(record, _)| record))
    }
}

/// One record at the start of `bytes` and its encoded length.
fn parse_one(bytes: &[u8], offset: usize) -> Result<(LogRecord<'_>, usize), LogError> {
    let truncated = LogError::Truncated { offset };
    let [level, target_len, m0, m1, rest @ ..] = bytes else {
        return Err(truncated);
    };
    let level = LogLevel::try_from(*level).map_err(|level| LogError::BadLevel { offset, level })?;
    let target_len = usize::from(*target_len);
    let message_len = usize::from(u16::from_le_bytes([*m0, *m1]));
    let target = rest.get(..target_len).ok_or(truncated)?;
    let message = rest
        .get(target_len..target_len + message_len)
        .ok_or(truncated)?;
    Ok((
        LogRecord {
            level,
            target,
            message,
        },
        RECORD_HEADER_SIZE + target_len + message_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{vec, vec::Vec};

    fn records(region: &[u8]) -> Vec<(LogLevel, Vec<u8>, Vec<u8>)> {
        let (write, _) = read_header(region, region.len()).unwrap();
        let data = &region[LOG_HEADER_SIZE..LOG_HEADER_SIZE + write];
        parse_records(data)
            .map(|r| {
                let r = r.unwrap();
                (r.level, r.target.to_vec(), r.message.to_vec())
            })
            .collect()
    }

    #[test]
    fn round_trip() {
        let mut region = vec![0u8; 256];
        assert_eq!(
            append(&mut region, LogLevel::Info, b"guest", b"echo: 2 bytes"),
            Appended::Stored
        );
        assert_eq!(
            append(&mut region, LogLevel::Trace, b"", b""),
            Appended::Stored
        );
        assert_eq!(
            records(&region),
            vec![
                (LogLevel::Info, b"guest".to_vec(), b"echo: 2 bytes".to_vec()),
                (LogLevel::Trace, vec![], vec![]),
            ]
        );
        reset(&mut region);
        assert!(records(&region).is_empty());
    }

    #[test]
    fn full_buffer_refuses_until_drained_and_only_cuts_oversized_records() {
        // 64 header + 32 data bytes.
        let mut region = vec![0u8; 96];
        assert_eq!(
            append(&mut region, LogLevel::Warn, b"t", &[b'x'; 20]),
            Appended::Stored
        );
        // 25 used, 7 left: a 25-byte record waits for a drain, uncut.
        assert_eq!(
            append(&mut region, LogLevel::Warn, b"t", &[b'y'; 20]),
            Appended::Full
        );
        // A 40-byte record is larger than the whole area: Full until the
        // buffer is empty, then stored cut to fit.
        assert_eq!(
            append(&mut region, LogLevel::Warn, b"t", &[b'z'; 35]),
            Appended::Full
        );
        assert_eq!(records(&region).len(), 1);
        reset(&mut region);
        assert_eq!(
            append(&mut region, LogLevel::Warn, b"t", &[b'z'; 35]),
            Appended::Cut
        );
        assert_eq!(records(&region)[0].2, vec![b'z'; 27]);
        count_dropped(&mut region);
        assert_eq!(read_header(&region, region.len()).unwrap(), (32, 1));
        // A target that alone overflows the empty area cannot be stored.
        reset(&mut region);
        assert_eq!(
            append(&mut region, LogLevel::Warn, &[b't'; 40], b""),
            Appended::Full
        );
    }

    #[test]
    fn long_fields_are_cut_to_their_maxima() {
        let mut region = vec![0u8; 8192];
        let target = [b't'; 300];
        let message = [b'm'; 3000];
        assert_eq!(
            append(&mut region, LogLevel::Error, &target, &message),
            Appended::Cut
        );
        let got = records(&region);
        assert_eq!(got[0].1.len(), MAX_TARGET_LEN);
        assert_eq!(got[0].2.len(), MAX_MESSAGE_LEN);
    }

    #[test]
    fn hostile_headers_and_records_are_errors() {
        let mut region = vec![0u8; 128];
        write_u64(&mut region, WRITE_OFFSET, 65);
        assert_eq!(
            read_header(&region, region.len()),
            Err(LogError::WriteOutOfRange {
                write: 65,
                capacity: 64
            })
        );
        write_u64(&mut region, WRITE_OFFSET, u64::MAX);
        assert!(read_header(&region, region.len()).is_err());
        assert_eq!(
            read_header(&region[..10], 10),
            Err(LogError::RegionTooSmall(10))
        );
        // A record whose message length runs past the written bytes.
        let data = [3u8, 0, 200, 0, b'a'];
        assert_eq!(
            parse_records(&data).collect::<Vec<_>>(),
            vec![Err(LogError::Truncated { offset: 0 })]
        );
        let data = [9u8, 0, 0, 0];
        assert_eq!(
            parse_records(&data).next(),
            Some(Err(LogError::BadLevel {
                offset: 0,
                level: 9
            }))
        );
        // A partial record header after a good record.
        let data = [3u8, 0, 1, 0, b'a', 3, 0];
        let parsed: Vec<_> = parse_records(&data).collect();
        assert_eq!(parsed.len(), 2);
        assert!(parsed[0].is_ok());
        assert_eq!(parsed[1], Err(LogError::Truncated { offset: 5 }));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut data = [0u8; 64];
            for b in &mut data {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8 % 8;
            }
            let n = parse_records(&data).count();
            assert!(n <= data.len());
            // A guest appending to a scribbled buffer never writes out of it.
            let mut region = [0u8; 96];
            region[..64].copy_from_slice(&data);
            let _stored = append(&mut region, LogLevel::Debug, b"x", b"y");
            assert!(read_header(&region, region.len()).is_ok());
        }
    }
}
