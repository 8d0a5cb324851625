//! The wire form of a cap: [`WireCap`], serialized with rkyv 0.8.
//!
//! Only what a guest can hold crosses the wire: inline data, and CNodes whose
//! slots are empty or name a child by hash. The receiver [`access`]es the
//! bytes in place (validated, zero-copy) and can hash the archived form
//! directly with [`ArchivedWireCap::hash`], which gives the same [`CapHash`]
//! as [`Cap::hash`] of the cap that was sent.
//!
//! # Buffer alignment
//! rkyv's validation rejects (with [`WireError::Malformed`]) a buffer whose
//! start is not aligned to [`WIRE_ALIGN`]. [`encode`] returns an
//! [`AlignedVec`], which always is; a receiver copying bytes out of shared
//! memory must place them at a [`WIRE_ALIGN`]-aligned address.
//!
//! # Format
//! The archive is rkyv 0.8's default format (little-endian, aligned, 32-bit
//! relative pointers) of [`WireCap`], root at the end of the buffer, as
//! written by `rkyv::to_bytes`. Both ends must build rkyv with the same
//! format features.

use alloc::vec::Vec;
use core::fmt;

use rkyv::rancor::Failure;
use rkyv::{Archive, Serialize};

pub use rkyv::util::AlignedVec;

use crate::cap::{Cap, DataContent, Slot};
use crate::hash::{CNodeHasher, CapHash, hash_data};
use crate::{MAX_DATA_LEN, MAX_SLOTS};

/// A cap in wire form: inline data or a CNode of hash/empty slots.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum WireCap {
    /// A data cap with its bytes inline (at most [`MAX_DATA_LEN`] bytes).
    Data(Vec<u8>),
    /// A CNode (at most [`MAX_SLOTS`] slots).
    CNode(Vec<WireSlot>),
}

/// One slot of a [`WireCap::CNode`].
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
pub enum WireSlot {
    /// No cap.
    Empty,
    /// The cap with this [`CapHash`] (raw bytes).
    Hash([u8; 32]),
}

/// Alignment in bytes that a buffer given to [`access`] must start at.
pub const WIRE_ALIGN: usize = core::mem::align_of::<ArchivedWireCap>();

// `encode` output (an `AlignedVec`) always satisfies `access`.
const _: () = assert!(WIRE_ALIGN <= AlignedVec::<16>::ALIGNMENT);

/// Why a cap cannot be put on, or taken off, the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The cap is data in [`DataContent::Paged`] form, which never crosses
    /// the wire.
    PagedData,
    /// Slot `index` of the CNode is a [`Slot::Ref`], which never crosses the
    /// wire.
    RefSlot {
        /// Index of the first `Ref` slot.
        index: usize,
    },
    /// Data longer than [`MAX_DATA_LEN`].
    DataTooLarge {
        /// The data length in bytes.
        len: usize,
        /// The limit ([`MAX_DATA_LEN`]).
        max: usize,
    },
    /// A CNode with more than [`MAX_SLOTS`] slots.
    TooManySlots {
        /// The number of slots.
        count: usize,
        /// The limit ([`MAX_SLOTS`]).
        max: usize,
    },
    /// The bytes are not a valid archived [`WireCap`] (bad tag, out-of-bounds
    /// or overlapping pointer, misaligned buffer, trailing garbage in the
    /// root position, ...).
    Malformed,
    /// rkyv failed to serialize (e.g. the archive would exceed its 32-bit
    /// offsets); not expected for caps within the limits.
    Encode,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::PagedData => f.write_str("paged data cannot cross the wire"),
            WireError::RefSlot { index } => {
                write!(f, "slot {index} holds a Ref, which cannot cross the wire")
            }
            WireError::DataTooLarge { len, max } => {
                write!(f, "data of {len} bytes exceeds the limit of {max} bytes")
            }
            WireError::TooManySlots { count, max } => {
                write!(f, "CNode of {count} slots exceeds the limit of {max} slots")
            }
            WireError::Malformed => f.write_str("bytes are not a valid archived cap"),
            WireError::Encode => f.write_str("failed to serialize cap"),
        }
    }
}

impl core::error::Error for WireError {}

fn check_data_len(len: usize) -> Result<(), WireError> {
    if len > MAX_DATA_LEN {
        return Err(WireError::DataTooLarge {
            len,
            max: MAX_DATA_LEN,
        });
    }
    Ok(())
}

fn check_slot_count(count: usize) -> Result<(), WireError> {
    if count > MAX_SLOTS {
        return Err(WireError::TooManySlots {
            count,
            max: MAX_SLOTS,
        });
    }
    Ok(())
}

impl WireSlot {
    /// The slot as the hashers take it: `None` if empty.
    #[must_use]
    pub fn hash(&self) -> Option<CapHash> {
        match self {
            WireSlot::Empty => None,
            WireSlot::Hash(bytes) => Some(CapHash::from_bytes(*bytes)),
        }
    }
}

impl From<Option<CapHash>> for WireSlot {
    fn from(slot: Option<CapHash>) -> Self {
        match slot {
            None => WireSlot::Empty,
            Some(hash) => WireSlot::Hash(hash.to_bytes()),
        }
    }
}

impl From<WireSlot> for Slot {
    fn from(slot: WireSlot) -> Self {
        match slot {
            WireSlot::Empty => Slot::Empty,
            WireSlot::Hash(bytes) => Slot::Hash(CapHash::from_bytes(bytes)),
        }
    }
}

impl WireCap {
    /// The content hash; equals [`Cap::hash`] of the source cap.
    #[must_use]
    pub fn hash(&self) -> CapHash {
        match self {
            WireCap::Data(bytes) => hash_data(bytes),
            WireCap::CNode(slots) => crate::hash_cnode(slots.iter().map(WireSlot::hash)),
        }
    }

    /// Checks [`MAX_DATA_LEN`] and [`MAX_SLOTS`].
    ///
    /// # Errors
    /// [`WireError::DataTooLarge`] or [`WireError::TooManySlots`].
    pub fn check_limits(&self) -> Result<(), WireError> {
        match self {
            WireCap::Data(bytes) => check_data_len(bytes.len()),
            WireCap::CNode(slots) => check_slot_count(slots.len()),
        }
    }

    /// Copies an archived cap out of its buffer.
    #[must_use]
    pub fn from_archived(archived: &ArchivedWireCap) -> Self {
        match archived {
            ArchivedWireCap::Data(bytes) => WireCap::Data(bytes.as_slice().to_vec()),
            ArchivedWireCap::CNode(slots) => {
                WireCap::CNode(slots.iter().map(ArchivedWireSlot::to_wire).collect())
            }
        }
    }

    /// Converts into a [`Cap`] (inline data; `Empty`/`Hash` slots).
    #[must_use]
    pub fn into_cap(self) -> Cap {
        Cap::from(self)
    }
}

impl TryFrom<&Cap> for WireCap {
    type Error = WireError;

    /// Fails on paged data, on the first `Ref` slot, and on caps over the
    /// limits.
    fn try_from(cap: &Cap) -> Result<Self, WireError> {
        match cap {
            Cap::Data(DataContent::Inline(bytes)) => {
                check_data_len(bytes.len())?;
                Ok(WireCap::Data(bytes.clone()))
            }
            Cap::Data(DataContent::Paged(_)) => Err(WireError::PagedData),
            Cap::CNode { slots } => {
                check_slot_count(slots.len())?;
                slots
                    .iter()
                    .enumerate()
                    .map(|(index, slot)| match slot {
                        Slot::Empty => Ok(WireSlot::Empty),
                        Slot::Hash(hash) => Ok(WireSlot::Hash(hash.to_bytes())),
                        Slot::Ref(_) => Err(WireError::RefSlot { index }),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(WireCap::CNode)
            }
        }
    }
}

impl TryFrom<Cap> for WireCap {
    type Error = WireError;

    /// As for `&Cap`, without copying inline data.
    fn try_from(cap: Cap) -> Result<Self, WireError> {
        match cap {
            Cap::Data(DataContent::Inline(bytes)) => {
                check_data_len(bytes.len())?;
                Ok(WireCap::Data(bytes))
            }
            other => WireCap::try_from(&other),
        }
    }
}

impl From<WireCap> for Cap {
    fn from(wire: WireCap) -> Self {
        match wire {
            WireCap::Data(bytes) => Cap::Data(DataContent::Inline(bytes)),
            WireCap::CNode(slots) => Cap::CNode {
                slots: slots.into_iter().map(Slot::from).collect(),
            },
        }
    }
}

impl From<&ArchivedWireCap> for WireCap {
    fn from(archived: &ArchivedWireCap) -> Self {
        WireCap::from_archived(archived)
    }
}

impl From<&ArchivedWireCap> for Cap {
    fn from(archived: &ArchivedWireCap) -> Self {
        archived.to_cap()
    }
}

impl ArchivedWireSlot {
    /// The slot as the hashers take it: `None` if empty.
    #[must_use]
    pub fn hash(&self) -> Option<CapHash> {
        match self {
            ArchivedWireSlot::Empty => None,
            ArchivedWireSlot::Hash(bytes) => Some(CapHash::from_bytes(*bytes)),
        }
    }

    /// The slot in owned form.
    #[must_use]
    pub fn to_wire(&self) -> WireSlot {
        match self {
            ArchivedWireSlot::Empty => WireSlot::Empty,
            ArchivedWireSlot::Hash(bytes) => WireSlot::Hash(*bytes),
        }
    }
}

impl ArchivedWireCap {
    /// The content hash, computed in place from the archived bytes (no copy,
    /// no allocation); equals [`Cap::hash`] of the cap that was encoded.
    #[must_use]
    pub fn hash(&self) -> CapHash {
        match self {
            ArchivedWireCap::Data(bytes) => hash_data(bytes.as_slice()),
            ArchivedWireCap::CNode(slots) => {
                let mut hasher = CNodeHasher::new();
                for slot in slots.iter() {
                    hasher.push(slot.hash());
                }
                hasher.finalize()
            }
        }
    }

    /// Checks [`MAX_DATA_LEN`] and [`MAX_SLOTS`] ([`access`] already did).
    ///
    /// # Errors
    /// [`WireError::DataTooLarge`] or [`WireError::TooManySlots`].
    pub fn check_limits(&self) -> Result<(), WireError> {
        match self {
            ArchivedWireCap::Data(bytes) => check_data_len(bytes.len()),
            ArchivedWireCap::CNode(slots) => check_slot_count(slots.len()),
        }
    }

    /// The data bytes, if this is a data cap.
    #[must_use]
    pub fn data(&self) -> Option<&[u8]> {
        match self {
            ArchivedWireCap::Data(bytes) => Some(bytes.as_slice()),
            ArchivedWireCap::CNode(_) => None,
        }
    }

    /// The slots, if this is a CNode.
    #[must_use]
    pub fn slots(&self) -> Option<&[ArchivedWireSlot]> {
        match self {
            ArchivedWireCap::Data(_) => None,
            ArchivedWireCap::CNode(slots) => Some(slots.as_slice()),
        }
    }

    /// Copies the archived cap out into a [`Cap`].
    #[must_use]
    pub fn to_cap(&self) -> Cap {
        WireCap::from_archived(self).into_cap()
    }
}

/// Serializes a wire cap, after checking the limits.
///
/// # Errors
/// [`WireError::DataTooLarge`] / [`WireError::TooManySlots`] over the limits;
/// [`WireError::Encode`] if rkyv fails.
pub fn encode(cap: &WireCap) -> Result<AlignedVec, WireError> {
    cap.check_limits()?;
    rkyv::to_bytes::<Failure>(cap).map_err(|_| WireError::Encode)
}

/// Converts a [`Cap`] to wire form and serializes it.
///
/// # Errors
/// As for [`WireCap::try_from`] and [`encode`].
pub fn encode_cap(cap: &Cap) -> Result<AlignedVec, WireError> {
    encode(&WireCap::try_from(cap)?)
}

/// Validates untrusted `bytes` as an archived [`WireCap`] and returns it in
/// place (zero-copy), checking the limits too.
///
/// Uses rkyv's checked low-level API: no allocation, no `unsafe`, and no
/// panic for any input. `bytes` must start at a [`WIRE_ALIGN`]-aligned
/// address (else [`WireError::Malformed`]).
///
/// # Errors
/// [`WireError::Malformed`] if the bytes are not a valid archive;
/// [`WireError::DataTooLarge`] / [`WireError::TooManySlots`] if the archived
/// cap is over the limits.
pub fn access(bytes: &[u8]) -> Result<&ArchivedWireCap, WireError> {
    let archived = rkyv::api::low::access::<ArchivedWireCap, Failure>(bytes)
        .map_err(|_| WireError::Malformed)?;
    archived.check_limits()?;
    Ok(archived)
}

/// [`access`]es `bytes` and copies the cap out into a [`Cap`].
///
/// # Errors
/// As for [`access`].
pub fn decode(bytes: &[u8]) -> Result<Cap, WireError> {
    Ok(access(bytes)?.to_cap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::vec;

    fn round_trip(cap: &Cap) {
        let bytes = encode_cap(cap).unwrap();
        let archived = access(&bytes).unwrap();
        assert_eq!(archived.hash(), cap.hash());
        let wire = WireCap::try_from(cap).unwrap();
        assert_eq!(wire.hash(), cap.hash());
        assert_eq!(WireCap::from_archived(archived), wire);
        assert_eq!(&decode(&bytes).unwrap(), cap);
    }

    #[test]
    fn round_trips() {
        round_trip(&Cap::inline(vec![]));
        round_trip(&Cap::inline(*b"hello"));
        round_trip(&Cap::cnode(vec![]));
        round_trip(&Cap::cnode(vec![
            Slot::Empty,
            Slot::Hash(Cap::inline(*b"x").hash()),
            Slot::Empty,
        ]));
    }

    #[test]
    fn paged_is_rejected() {
        let cap = Cap::paged(b"abc");
        assert_eq!(WireCap::try_from(&cap), Err(WireError::PagedData));
        assert_eq!(encode_cap(&cap).unwrap_err(), WireError::PagedData);
    }

    #[test]
    fn ref_is_rejected_with_index() {
        let child = Arc::new(Cap::inline(*b"c"));
        let cap = Cap::cnode(vec![
            Slot::Empty,
            Slot::Hash(child.hash()),
            Slot::Empty,
            Slot::Ref(child.clone()),
            Slot::Ref(child),
        ]);
        assert_eq!(
            WireCap::try_from(&cap),
            Err(WireError::RefSlot { index: 3 })
        );
        assert_eq!(WireCap::try_from(cap), Err(WireError::RefSlot { index: 3 }));
    }

    #[test]
    fn limits_on_conversion() {
        let at = Cap::inline(vec![0u8; MAX_DATA_LEN]);
        assert!(WireCap::try_from(&at).is_ok());
        let over = Cap::inline(vec![0u8; MAX_DATA_LEN + 1]);
        let err = WireError::DataTooLarge {
            len: MAX_DATA_LEN + 1,
            max: MAX_DATA_LEN,
        };
        assert_eq!(WireCap::try_from(&over), Err(err));
        assert_eq!(WireCap::try_from(over), Err(err));

        assert!(WireCap::try_from(&Cap::cnode(vec![Slot::Empty; MAX_SLOTS])).is_ok());
        let over = Cap::cnode(vec![Slot::Empty; MAX_SLOTS + 1]);
        assert_eq!(
            WireCap::try_from(&over),
            Err(WireError::TooManySlots {
                count: MAX_SLOTS + 1,
                max: MAX_SLOTS
            })
        );
    }

    #[test]
    fn limits_on_encode() {
        let over = WireCap::CNode(vec![WireSlot::Empty; MAX_SLOTS + 1]);
        assert!(matches!(encode(&over), Err(WireError::TooManySlots { .. })));
        let over = WireCap::Data(vec![0; MAX_DATA_LEN + 1]);
        assert!(matches!(encode(&over), Err(WireError::DataTooLarge { .. })));
    }

    #[test]
    fn limits_on_access() {
        // Serialize over-limit caps behind `encode`'s back, as an attacker
        // could, and check that `access` refuses them.
        let over = WireCap::CNode(vec![WireSlot::Empty; MAX_SLOTS + 1]);
        let bytes = rkyv::to_bytes::<Failure>(&over).unwrap();
        assert!(rkyv::api::low::access::<ArchivedWireCap, Failure>(&bytes).is_ok());
        assert_eq!(
            access(&bytes).unwrap_err(),
            WireError::TooManySlots {
                count: MAX_SLOTS + 1,
                max: MAX_SLOTS
            }
        );

        let over = WireCap::Data(vec![1; MAX_DATA_LEN + 1]);
        let bytes = rkyv::to_bytes::<Failure>(&over).unwrap();
        assert_eq!(
            access(&bytes).unwrap_err(),
            WireError::DataTooLarge {
                len: MAX_DATA_LEN + 1,
                max: MAX_DATA_LEN
            }
        );

        let at = WireCap::CNode(vec![WireSlot::Empty; MAX_SLOTS]);
        let bytes = encode(&at).unwrap();
        assert_eq!(
            access(&bytes).unwrap().slots().map(<[_]>::len),
            Some(MAX_SLOTS)
        );
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(access(&[]).unwrap_err(), WireError::Malformed);
        let good = encode(&WireCap::CNode(vec![WireSlot::Empty])).unwrap();
        // Truncation.
        assert_eq!(
            access(&good[..good.len() - 1]).unwrap_err(),
            WireError::Malformed
        );
        // Misalignment: the same bytes one byte off.
        let mut shifted = AlignedVec::<16>::new();
        shifted.push(0);
        shifted.extend_from_slice(&good);
        assert_eq!(access(&shifted[1..]).unwrap_err(), WireError::Malformed);
        // Bad enum tag: the root is at the end; find and corrupt the tag by
        // flipping every byte in turn, none of which may panic.
        for i in 0..good.len() {
            let mut bad = AlignedVec::<16>::new();
            bad.extend_from_slice(&good);
            bad[i] ^= 0xFF;
            let _ = access(&bad);
        }
    }

    #[test]
    fn wire_align_fits_aligned_vec() {
        assert_eq!(WIRE_ALIGN, 4);
    }

    #[test]
    fn error_display() {
        use alloc::string::ToString;
        assert_eq!(
            WireError::RefSlot { index: 7 }.to_string(),
            "slot 7 holds a Ref, which cannot cross the wire"
        );
        assert!(!WireError::Malformed.to_string().is_empty());
    }
}
