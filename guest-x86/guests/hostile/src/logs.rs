//! Id 18: corrupts the log buffer (`nub_host_common::log_buffer`), then
//! answers normally, so the host's drain after the call is what meets the
//! corruption.
//!
//! The buffer's address and size come from BootInfo (`log_va`,
//! `log_size`). This module writes it through raw pointers only between
//! `log` calls: the kernel's logger holds its slice over the region only
//! inside a `log::info!`, and the guest is single-threaded.

use nub_arch_x86::{
    GuestError, Output,
    abi::log_buffer::{DROPPED_OFFSET, LOG_HEADER_SIZE, RECORD_HEADER_SIZE, WRITE_OFFSET},
};

use crate::{boot, selector};

/// The log region as BootInfo describes it.
#[derive(Clone, Copy)]
struct Region {
    va: u64,
    size: u64,
}

impl Region {
    /// The region, if BootInfo describes one with room for a few records.
    fn get() -> Result<Self, GuestError> {
        let info = boot();
        if info.log_va == 0 || info.log_size < (LOG_HEADER_SIZE as u64) * 2 {
            return Err(GuestError::new("no log buffer to corrupt"));
        }
        Ok(Self {
            va: info.log_va,
            size: info.log_size,
        })
    }

    /// Bytes in the data area.
    fn capacity(self) -> u64 {
        self.size - LOG_HEADER_SIZE as u64
    }

    /// Reads the header word at byte offset `offset` (0 `write`, 8
    /// `dropped`).
    fn read_word(self, offset: usize) -> u64 {
        // SAFETY: `va` is the 8-aligned start of the RW log region (at least
        // 128 bytes, checked in `get`) and `offset` is 0 or 8; no reference
        // to the region is live (the kernel's logger holds its slice only
        // inside a `log` call, and none is running).
        unsafe { (self.va as *const u64).add(offset / 8).read_volatile() }
    }

    /// Writes the header word at byte offset `offset`.
    fn write_word(self, offset: usize, value: u64) {
        // SAFETY: as for `read_word`; the region is writable guest memory
        // that no Rust object owns.
        unsafe { (self.va as *mut u64).add(offset / 8).write_volatile(value) }
    }

    /// Writes `bytes` at data-area offset `at`, clipped to the data area.
    fn write_data(self, at: u64, bytes: &[u8]) {
        let base = self.va + LOG_HEADER_SIZE as u64;
        for (i, b) in bytes.iter().enumerate() {
            let offset = at + i as u64;
            if offset >= self.capacity() {
                return;
            }
            // SAFETY: `offset` < capacity, so the byte lies in the RW log
            // region; no reference to the region is live (see `read_word`).
            unsafe { ((base + offset) as *mut u8).write_volatile(*b) }
        }
    }

    /// Appends raw record bytes after the records already written and
    /// moves `write` past them.
    fn append_raw(self, bytes: &[u8]) {
        let write = self.read_word(WRITE_OFFSET).min(self.capacity());
        self.write_data(write, bytes);
        let end = (write + bytes.len() as u64).min(self.capacity());
        self.write_word(WRITE_OFFSET, end);
    }
}

/// The garbage generator of selector 4 (xorshift64; a zero seed would
/// stay zero and becomes 1). The hostile-guest tests run the same
/// generator to know what the host must make of the bytes.
fn garbage(seed: u64, len: usize, mut out: impl FnMut(usize, u8)) {
    let mut x = if seed == 0 { 1 } else { seed };
    for i in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out(i, x as u8);
    }
}

/// Id 18. Answers the header's `write` after the corruption (u64 LE).
///
/// | selector | payload after it | corruption |
/// | --- | --- | --- |
/// | 0 | - | one valid record, then `write` one past the data area |
/// | 1 | - | one valid record, then `write` = `u64::MAX` |
/// | 2 | - | one valid record, then a record whose level byte is 9 |
/// | 3 | - | one valid record, then a record whose message length (65535) runs past `write` |
/// | 4 | seed u64 LE, length u16 LE | `length` garbage bytes (clipped to the data area) and `write` = `length` |
/// | 5 | - | three valid records and `dropped` = `u64::MAX` |
/// | 6 | count u32 LE | `count` records through `log::info!`, then `write` = `u64::MAX`, then one more `log::info!` (the logger must restart the buffer) |
pub fn corrupt_log(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let region = Region::get()?;
    let args = input.get(1..).unwrap_or(&[]);
    match selector(input) {
        0 | 1 => {
            log::info!("before the header is scribbled");
            let bad = if selector(input) == 0 {
                region.capacity() + 1
            } else {
                u64::MAX
            };
            region.write_word(WRITE_OFFSET, bad);
        }
        2 => {
            log::info!("before the bad level");
            region.append_raw(&[9, 0, 0, 0]);
        }
        3 => {
            log::info!("before the long record");
            let mut record = [b'm'; RECORD_HEADER_SIZE + 12];
            record[..RECORD_HEADER_SIZE].copy_from_slice(&[3, 0, 0xFF, 0xFF]);
            region.append_raw(&record);
        }
        4 => {
            let seed: [u8; 8] = args
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| GuestError::new("expected a u64 LE seed"))?;
            let len: [u8; 2] = args
                .get(8..10)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| GuestError::new("expected a u16 LE length"))?;
            let len = u64::from(u16::from_le_bytes(len)).min(region.capacity());
            garbage(u64::from_le_bytes(seed), len as usize, |i, b| {
                region.write_data(i as u64, &[b]);
            });
            region.write_word(WRITE_OFFSET, len);
        }
        5 => {
            for i in 0..3 {
                log::info!("valid record {i}");
            }
            region.write_word(DROPPED_OFFSET, u64::MAX);
        }
        6 => {
            let count: [u8; 4] = args
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| GuestError::new("expected a u32 LE count"))?;
            for i in 0..u32::from_le_bytes(count) {
                log::info!("record {i}");
            }
            region.write_word(WRITE_OFFSET, u64::MAX);
            log::info!("after the scribble");
        }
        _ => return Err(GuestError::new("unknown log corruption selector")),
    }
    out.write(&region.read_word(WRITE_OFFSET).to_le_bytes())
}
