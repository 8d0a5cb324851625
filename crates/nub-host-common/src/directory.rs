//! The capability directory's host-readable layout.
//!
//! The guest keeps its directory on its heap and publishes it through a
//! header at `BootInfo.directory_va`. The host reads the header and the table
//! directly from guest memory (while the vCPU is stopped) to answer "does the
//! guest hold this hash?" without a VM exit. All fields little endian:
//!
//! ```text
//! header (64 bytes)
//!   0  magic: u64        DIRECTORY_MAGIC
//!   8  version: u32      DIRECTORY_VERSION
//!  12  max_probe: u32    longest probe sequence the guest allows
//!  16  capacity: u64     number of slots, a power of two
//!  24  length: u64       occupied slots
//!  32  table_va: u64     guest address of slot 0
//!  40  bytes_held: u64   total bytes of stored caps
//!  48  reserved (16 bytes)
//! slot (48 bytes)
//!   0  hash: [u8; 32]
//!  32  cap_va: u64       0 = empty slot; else address of the stored WireCap bytes
//!  40  cap_len: u64
//! ```
//!
//! Open addressing with linear probing: a hash's home slot is its first
//! eight bytes (LE u64) modulo `capacity`; the guest places every entry at
//! most `max_probe - 1` slots past its home (it grows the table rather than
//! exceed that), so a lookup stops after `max_probe` slots or at the first
//! empty one. [`probe`] is the lookup, written against a memory-read
//! callback so it serves the host reader and the unit tests alike; it treats
//! every field as hostile.

use crate::{read_u32, read_u64};

/// `b"NUBDIR\0\0"` as a little-endian u64.
pub const DIRECTORY_MAGIC: u64 = u64::from_le_bytes(*b"NUBDIR\0\0");
/// Layout version.
pub const DIRECTORY_VERSION: u32 = 1;
/// Size of the header.
pub const HEADER_SIZE: usize = 64;
/// Size of one slot.
pub const SLOT_SIZE: usize = 48;
/// The guest never lets a probe sequence grow past this.
pub const MAX_PROBE: u32 = 32;
/// Largest capacity a reader accepts (2^24 slots, 768 MiB of table: more
/// than any guest memory can hold, so a larger value is corrupt).
pub const MAX_CAPACITY: u64 = 1 << 24;

/// Offsets of the header fields.
pub mod offsets {
    /// `magic`.
    pub const MAGIC: usize = 0;
    /// `version`.
    pub const VERSION: usize = 8;
    /// `max_probe`.
    pub const MAX_PROBE: usize = 12;
    /// `capacity`.
    pub const CAPACITY: usize = 16;
    /// `length`.
    pub const LENGTH: usize = 24;
    /// `table_va`.
    pub const TABLE_VA: usize = 32;
    /// `bytes_held`.
    pub const BYTES_HELD: usize = 40;
    /// Slot `cap_va`.
    pub const SLOT_CAP_VA: usize = 32;
    /// Slot `cap_len`.
    pub const SLOT_CAP_LEN: usize = 40;
}

/// The home slot of `hash` in a table of `capacity` (a power of two).
pub fn home_slot(hash: &[u8; 32], capacity: u64) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first) & capacity.wrapping_sub(1)
}

/// A decoded, sanity-checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Slots in the table (a power of two, at most [`MAX_CAPACITY`]).
    pub capacity: u64,
    /// Occupied slots.
    pub length: u64,
    /// Guest address of the table.
    pub table_va: u64,
    /// Bytes of stored caps.
    pub bytes_held: u64,
    /// Longest probe sequence (at most [`MAX_PROBE`]).
    pub max_probe: u32,
}

impl Header {
    /// Decodes and checks header bytes; `None` if anything is off.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if read_u64(bytes, offsets::MAGIC)? != DIRECTORY_MAGIC
            || read_u32(bytes, offsets::VERSION)? != DIRECTORY_VERSION
        {
            return None;
        }
        let h = Self {
            capacity: read_u64(bytes, offsets::CAPACITY)?,
            length: read_u64(bytes, offsets::LENGTH)?,
            table_va: read_u64(bytes, offsets::TABLE_VA)?,
            bytes_held: read_u64(bytes, offsets::BYTES_HELD)?,
            max_probe: read_u32(bytes, offsets::MAX_PROBE)?,
        };
        let sane = h.capacity.is_power_of_two()
            && h.capacity <= MAX_CAPACITY
            && h.length <= h.capacity
            && h.max_probe >= 1
            && h.max_probe <= MAX_PROBE;
        sane.then_some(h)
    }
}

/// Looks `hash` up in the directory whose header is at `header_va`.
/// `read(addr, buf)` fills `buf` from guest memory and returns `false` if
/// the range is not readable. Any inconsistency reads as "not present";
/// at most [`MAX_PROBE`] slots are read.
pub fn probe(
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    header_va: u64,
    hash: &[u8; 32],
) -> bool {
    let mut header = [0u8; HEADER_SIZE];
    if !read(header_va, &mut header) {
        return false;
    }
    let Some(h) = Header::decode(&header) else {
        return false;
    };
    let mut index = home_slot(hash, h.capacity);
    let mut slot = [0u8; SLOT_SIZE];
    for _ in 0..h.max_probe.min(MAX_PROBE) {
        let Some(addr) = index
            .checked_mul(SLOT_SIZE as u64)
            .and_then(|off| h.table_va.checked_add(off))
        else {
            return false;
        };
        if !read(addr, &mut slot) {
            return false;
        }
        let cap_va = read_u64(&slot, offsets::SLOT_CAP_VA).unwrap_or(0);
        if cap_va == 0 {
            return false;
        }
        if slot.get(..32) == Some(&hash[..]) {
            return true;
        }
        index = (index + 1) & (h.capacity - 1);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_u32, write_u64};

    const BASE: u64 = 0x10_0000;

    /// A fake guest memory: `base..base + bytes.len()`.
    struct Mem {
        base: u64,
        bytes: Vec<u8>,
        reads: usize,
    }

    impl Mem {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
            self.reads += 1;
            let Some(off) = addr.checked_sub(self.base) else {
                return false;
            };
            let Ok(off) = usize::try_from(off) else {
                return false;
            };
            match self.bytes.get(off..off + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    fn table(capacity: u64, entries: &[[u8; 32]]) -> Mem {
        let base = BASE;
        let mut bytes = vec![0u8; HEADER_SIZE + capacity as usize * SLOT_SIZE];
        write_u64(&mut bytes, offsets::MAGIC, DIRECTORY_MAGIC);
        write_u32(&mut bytes, offsets::VERSION, DIRECTORY_VERSION);
        write_u32(&mut bytes, offsets::MAX_PROBE, MAX_PROBE);
        write_u64(&mut bytes, offsets::CAPACITY, capacity);
        write_u64(&mut bytes, offsets::LENGTH, entries.len() as u64);
        write_u64(&mut bytes, offsets::TABLE_VA, base + HEADER_SIZE as u64);
        for h in entries {
            let mut i = home_slot(h, capacity);
            loop {
                let at = HEADER_SIZE + i as usize * SLOT_SIZE;
                if read_u64(&bytes, at + offsets::SLOT_CAP_VA) == Some(0) {
                    bytes[at..at + 32].copy_from_slice(h);
                    write_u64(&mut bytes, at + offsets::SLOT_CAP_VA, 0xdead_0000);
                    break;
                }
                i = (i + 1) % capacity;
            }
        }
        Mem {
            base,
            bytes,
            reads: 0,
        }
    }

    fn h(n: u8) -> [u8; 32] {
        let mut x = [n; 32];
        x[0] = n.wrapping_mul(37);
        x
    }

    #[test]
    fn finds_present_and_rejects_absent() {
        let entries: Vec<_> = (0..20).map(h).collect();
        let mut mem = table(64, &entries);
        for e in &entries {
            assert!(probe(&mut |a, b| mem.read(a, b), BASE, e));
        }
        assert!(!probe(&mut |a, b| mem.read(a, b), BASE, &h(200)));
    }

    #[test]
    fn hostile_headers_read_as_absent_with_bounded_reads() {
        let entries: Vec<_> = (0..8).map(h).collect();
        for (field, value) in [
            (offsets::MAGIC, 0u64),
            (offsets::CAPACITY, 3),
            (offsets::CAPACITY, 0),
            (offsets::CAPACITY, u64::MAX),
            (offsets::LENGTH, 1000),
            (offsets::TABLE_VA, u64::MAX - 10),
            (offsets::TABLE_VA, 0),
        ] {
            let mut mem = table(16, &entries);
            write_u64(&mut mem.bytes, field, value);
            for e in &entries {
                mem.reads = 0;
                let _ = probe(&mut |a, b| mem.read(a, b), BASE, e);
                assert!(mem.reads <= 1 + MAX_PROBE as usize);
            }
        }
        // A table full of matching-looking garbage still stops after
        // MAX_PROBE slots.
        let mut mem = table(1024, &[]);
        for i in 0..1024 {
            let at = HEADER_SIZE + i * SLOT_SIZE;
            write_u64(&mut mem.bytes, at + offsets::SLOT_CAP_VA, 1);
        }
        mem.reads = 0;
        assert!(!probe(&mut |a, b| mem.read(a, b), BASE, &h(1)));
        assert_eq!(mem.reads, 1 + MAX_PROBE as usize);
    }
}
