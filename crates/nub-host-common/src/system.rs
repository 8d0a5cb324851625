//! What the system functions ([`crate::rpc`]'s `FN_ID_NUB_*`) take and
//! answer, for the parts that are not another module's type.
//!
//! | id | input | output |
//! | --- | --- | --- |
//! | `FN_ID_NUB_PUT_CAP` | `WireCap` bytes | the 32-byte hash, or 32 × 0xFF on any failure |
//! | `FN_ID_NUB_GET_BOOT_INFO` | - | [`crate::boot::BootInfo`] bytes (with `directory_va`) |
//! | `FN_ID_NUB_GET_CAP` | 32-byte hash | [`GET_CAP_FOUND`] + `WireCap` bytes, or [`GET_CAP_ABSENT`] alone |
//! | `FN_ID_NUB_DIRECTORY_STATS` | - | [`DirectoryStats`]: count, bytes held, capacity (u64 LE each) |
//! | `FN_ID_NUB_HEAP_STATS` | - | [`HeapStats`]: heap size, used, free (u64 LE each) |
//!
//! The guest kernel encodes these answers and the host decodes them; an
//! answer that does not decode is the guest's lie, and the host treats it
//! as one (a protocol violation).

use crate::{decode_u64s, encode_u64s};

/// `FN_ID_NUB_GET_CAP` answer tag: the cap's wire bytes follow.
pub const GET_CAP_FOUND: u8 = 1;
/// `FN_ID_NUB_GET_CAP` answer tag: the directory holds no cap under that
/// hash (nothing follows).
pub const GET_CAP_ABSENT: u8 = 0;

/// Heap figures, the answer of `FN_ID_NUB_HEAP_STATS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapStats {
    /// Heap size in bytes.
    pub size: u64,
    /// Bytes allocated.
    pub used: u64,
    /// Bytes free.
    pub free: u64,
}

impl HeapStats {
    /// Size of the encoding: three u64 LE.
    pub const ENCODED_SIZE: usize = 24;

    /// The answer's bytes: size, used, free, u64 LE each.
    pub fn to_bytes(&self) -> alloc::vec::Vec<u8> {
        encode_u64s(&[self.size, self.used, self.free])
    }

    /// Decodes an answer; `None` unless it is exactly three u64s.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let [size, used, free] = decode_u64s(bytes)?;
        Some(Self { size, used, free })
    }
}

/// Capability directory figures, the answer of `FN_ID_NUB_DIRECTORY_STATS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectoryStats {
    /// Caps stored.
    pub count: u64,
    /// Bytes of stored caps (their wire form).
    pub bytes_held: u64,
    /// Slots in the index.
    pub capacity: u64,
}

impl DirectoryStats {
    /// Size of the encoding: three u64 LE.
    pub const ENCODED_SIZE: usize = 24;

    /// The answer's bytes: count, bytes held, capacity, u64 LE each.
    pub fn to_bytes(&self) -> alloc::vec::Vec<u8> {
        encode_u64s(&[self.count, self.bytes_held, self.capacity])
    }

    /// Decodes an answer; `None` unless it is exactly three u64s.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let [count, bytes_held, capacity] = decode_u64s(bytes)?;
        Some(Self {
            count,
            bytes_held,
            capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_and_refuse_other_lengths() {
        let heap = HeapStats {
            size: 1 << 20,
            used: 4096,
            free: (1 << 20) - 4096,
        };
        let bytes = heap.to_bytes();
        assert_eq!(bytes.len(), HeapStats::ENCODED_SIZE);
        assert_eq!(&bytes[..8], &(1u64 << 20).to_le_bytes());
        assert_eq!(HeapStats::from_bytes(&bytes), Some(heap));
        assert_eq!(HeapStats::from_bytes(&bytes[..23]), None);
        assert_eq!(
            HeapStats::from_bytes(&[bytes.clone(), vec![0]].concat()),
            None
        );

        let dir = DirectoryStats {
            count: 3,
            bytes_held: 700,
            capacity: 64,
        };
        let bytes = dir.to_bytes();
        assert_eq!(bytes.len(), DirectoryStats::ENCODED_SIZE);
        assert_eq!(&bytes[16..], &64u64.to_le_bytes());
        assert_eq!(DirectoryStats::from_bytes(&bytes), Some(dir));
        assert_eq!(DirectoryStats::from_bytes(&[]), None);
    }
}
