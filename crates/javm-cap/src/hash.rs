//! Content hashes of caps: [`CapHash`] and the streaming hashers that
//! implement the canonical v1 encoding (see the [crate docs](crate) for the
//! byte-level specification).

use core::fmt;
use core::str::FromStr;

/// Domain tag that starts the canonical encoding of a data cap (16 bytes).
pub const DATA_TAG: &[u8; 16] = b"javm-cap/v1/data";

/// Domain tag that starts the canonical encoding of a CNode cap (17 bytes).
pub const CNODE_TAG: &[u8; 17] = b"javm-cap/v1/cnode";

/// Slot tag byte of an empty CNode slot in the canonical encoding.
pub const SLOT_TAG_EMPTY: u8 = 0x00;

/// Slot tag byte of an occupied CNode slot in the canonical encoding; it is
/// followed by the 32 bytes of the child's [`CapHash`].
pub const SLOT_TAG_HASH: u8 = 0x01;

/// The content hash of a cap: BLAKE3 (32 bytes) of its canonical encoding.
///
/// `Display` (and `Debug`) print 64 lowercase hex digits; [`FromStr`] parses
/// the same form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapHash([u8; 32]);

impl CapHash {
    /// Length of a hash in bytes.
    pub const LEN: usize = 32;

    /// The all-`0xFF` "error" hash: what the guest returns from a failed put.
    ///
    /// [`Cap::hash`](crate::Cap::hash) and the hashers in this module never
    /// return it in practice: that would need BLAKE3 to output one fixed
    /// 256-bit value, a chance of 2^-256 per hash (a preimage of BLAKE3). No
    /// check is made for it.
    pub const SENTINEL: CapHash = CapHash([0xFF; 32]);

    /// Wraps raw hash bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        CapHash(bytes)
    }

    /// The raw hash bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The raw hash bytes, by value.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Whether this is [`CapHash::SENTINEL`].
    #[must_use]
    pub fn is_sentinel(&self) -> bool {
        *self == Self::SENTINEL
    }

    /// Parses 64 hex digits (either case) into a hash.
    ///
    /// # Errors
    /// [`ParseCapHashError`] if `s` is not exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, ParseCapHashError> {
        let s = s.as_bytes();
        if s.len() != 2 * Self::LEN {
            return Err(ParseCapHashError);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let (Some(hi), Some(lo)) = (hex_val(pair[0]), hex_val(pair[1])) else {
                return Err(ParseCapHashError);
            };
            *byte = (hi << 4) | lo;
        }
        Ok(CapHash(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl From<[u8; 32]> for CapHash {
    fn from(bytes: [u8; 32]) -> Self {
        CapHash(bytes)
    }
}

impl From<CapHash> for [u8; 32] {
    fn from(hash: CapHash) -> Self {
        hash.0
    }
}

impl AsRef<[u8]> for CapHash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for CapHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        for (pair, byte) in buf.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0F)];
        }
        // Every byte of `buf` is an ASCII hex digit, so this cannot fail.
        f.write_str(core::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for CapHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapHash({self})")
    }
}

impl FromStr for CapHash {
    type Err = ParseCapHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

/// The error of [`CapHash::from_hex`]: the input was not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseCapHashError;

impl fmt::Display for ParseCapHashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cap hash is exactly 64 hex digits")
    }
}

impl core::error::Error for ParseCapHashError {}

fn finish(hasher: &blake3::Hasher) -> CapHash {
    CapHash(*hasher.finalize().as_bytes())
}

/// Streaming hasher for a data cap: feed the bytes in any number of pieces,
/// then [`finalize`](DataHasher::finalize).
///
/// The result equals [`hash_data`] of the concatenated pieces and
/// [`Cap::hash`](crate::Cap::hash) of a data cap holding them.
#[derive(Clone, Debug)]
pub struct DataHasher {
    inner: blake3::Hasher,
    len: u64,
}

impl DataHasher {
    /// Starts hashing a data cap.
    #[must_use]
    pub fn new() -> Self {
        let mut inner = blake3::Hasher::new();
        inner.update(DATA_TAG);
        DataHasher { inner, len: 0 }
    }

    /// Appends bytes of the data.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.inner.update(bytes);
        // usize -> u64 is lossless on every supported target; wrapping is
        // unreachable (2^64 bytes) and merely keeps this panic-free.
        self.len = self.len.wrapping_add(bytes.len() as u64);
        self
    }

    /// Number of data bytes fed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no data bytes were fed so far.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the length trailer and returns the hash.
    #[must_use]
    pub fn finalize(mut self) -> CapHash {
        self.inner.update(&self.len.to_le_bytes());
        finish(&self.inner)
    }
}

impl Default for DataHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Streaming hasher for a CNode cap: push the slots in order, then
/// [`finalize`](CNodeHasher::finalize).
///
/// The result equals [`hash_cnode`] of the same slots and
/// [`Cap::hash`](crate::Cap::hash) of a CNode with those slots.
#[derive(Clone, Debug)]
pub struct CNodeHasher {
    inner: blake3::Hasher,
    count: u64,
}

impl CNodeHasher {
    /// Starts hashing a CNode.
    #[must_use]
    pub fn new() -> Self {
        let mut inner = blake3::Hasher::new();
        inner.update(CNODE_TAG);
        CNodeHasher { inner, count: 0 }
    }

    /// Appends one slot: `None` for an empty slot, `Some(child_hash)` for an
    /// occupied one.
    pub fn push(&mut self, slot: Option<CapHash>) -> &mut Self {
        match slot {
            None => {
                self.inner.update(&[SLOT_TAG_EMPTY]);
            }
            Some(hash) => {
                self.inner.update(&[SLOT_TAG_HASH]);
                self.inner.update(hash.as_bytes());
            }
        }
        // Unreachable overflow; wrapping keeps this panic-free.
        self.count = self.count.wrapping_add(1);
        self
    }

    /// Number of slots pushed so far.
    #[must_use]
    pub fn slot_count(&self) -> u64 {
        self.count
    }

    /// Appends the slot-count trailer and returns the hash.
    #[must_use]
    pub fn finalize(mut self) -> CapHash {
        self.inner.update(&self.count.to_le_bytes());
        finish(&self.inner)
    }
}

impl Default for CNodeHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Hash of a data cap holding `bytes` (inline or paged, it is the same).
#[must_use]
pub fn hash_data(bytes: &[u8]) -> CapHash {
    let mut hasher = DataHasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

/// Hash of a data cap whose bytes are the concatenation of `chunks`, hashed
/// as a stream (the chunks are never copied into one buffer).
#[must_use]
pub fn hash_data_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> CapHash {
    let mut hasher = DataHasher::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    hasher.finalize()
}

/// Hash of a CNode whose slots, in order, are `slots`: `None` is an empty
/// slot and `Some(h)` a slot holding the cap whose hash is `h`.
#[must_use]
pub fn hash_cnode(slots: impl IntoIterator<Item = Option<CapHash>>) -> CapHash {
    let mut hasher = CNodeHasher::new();
    for slot in slots {
        hasher.push(slot);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn hex_round_trip() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        let h = CapHash::from_bytes(bytes);
        let s = h.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<CapHash>(), Ok(h));
        assert_eq!(CapHash::from_hex(&s.to_uppercase()), Ok(h));
        assert_eq!(alloc::format!("{h:?}"), alloc::format!("CapHash({s})"));
    }

    #[test]
    fn hex_rejects_bad_input() {
        assert_eq!(CapHash::from_hex(""), Err(ParseCapHashError));
        assert_eq!(CapHash::from_hex(&"0".repeat(63)), Err(ParseCapHashError));
        assert_eq!(CapHash::from_hex(&"0".repeat(65)), Err(ParseCapHashError));
        assert_eq!(CapHash::from_hex(&"g".repeat(64)), Err(ParseCapHashError));
        // Multi-byte UTF-8 of the right byte length must not panic.
        assert_eq!(CapHash::from_hex(&"é".repeat(32)), Err(ParseCapHashError));
    }

    #[test]
    fn sentinel() {
        assert!(CapHash::SENTINEL.is_sentinel());
        assert_eq!(CapHash::SENTINEL.to_string(), "f".repeat(64));
        assert!(!hash_data(b"").is_sentinel());
        assert!(!hash_cnode([]).is_sentinel());
    }

    #[test]
    fn tags_are_prefix_free() {
        assert!(!CNODE_TAG.starts_with(DATA_TAG));
        assert!(!DATA_TAG.starts_with(&CNODE_TAG[..DATA_TAG.len()]));
    }
}
