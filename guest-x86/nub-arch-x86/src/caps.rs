//! Reading the capability directory from guest code: the caps the host
//! published (`put_cap`, `put_cap_with_hash`, `put_cap_graph`), looked up
//! by hash. Every function takes the directory's lock for its own span
//! only; the `with_*` forms lend the bytes without copying them.
//!
//! ```
//! use nub_arch_x86::{caps, javm_cap::CapHash};
//! let missing = CapHash::from_bytes([7; 32]);
//! assert!(!caps::contains(&missing));
//! assert_eq!(caps::data(&missing), None);
//! ```
//!
//! The directory lives in guest memory (`state_cache::DIRECTORY`); the host
//! reads it without an exit (`GuestCacheReader`), and it survives in a
//! persisted image.

use alloc::vec::Vec;

use javm_cap::CapHash;

use crate::state_cache::DIRECTORY;

/// What kind of cap a hash names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapKind {
    /// Bytes.
    Data,
    /// Slots, each empty or the hash of another cap.
    CNode,
}

/// Whether the directory holds a cap with `hash`.
pub fn contains(hash: &CapHash) -> bool {
    DIRECTORY.lock().contains(hash)
}

/// The kind of the cap with `hash`, if the directory holds it.
pub fn kind(hash: &CapHash) -> Option<CapKind> {
    let dir = DIRECTORY.lock();
    let cap = dir.get(hash)?;
    Some(if cap.data().is_some() {
        CapKind::Data
    } else {
        CapKind::CNode
    })
}

/// Runs `f` on the bytes of the Data cap with `hash` (no copy; the
/// directory is locked meanwhile, so `f` must not call into this module).
/// `None` if there is no such cap or it is a CNode.
pub fn with_data<R>(hash: &CapHash, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let dir = DIRECTORY.lock();
    dir.get(hash).and_then(|cap| cap.data()).map(f)
}

/// A copy of the bytes of the Data cap with `hash`.
pub fn data(hash: &CapHash) -> Option<Vec<u8>> {
    with_data(hash, <[u8]>::to_vec)
}

/// The slots of the CNode with `hash`: `None` for an empty slot, the
/// child's hash otherwise (look it up with the functions here; a child
/// the host published is in the directory too). `None` if there is no
/// such cap or it is a Data cap.
pub fn slots(hash: &CapHash) -> Option<Vec<Option<CapHash>>> {
    let dir = DIRECTORY.lock();
    let slots = dir.get(hash)?.slots()?;
    Some(
        slots
            .iter()
            .map(|slot| match slot {
                javm_cap::wire::ArchivedWireSlot::Empty => None,
                javm_cap::wire::ArchivedWireSlot::Hash(h) => Some(CapHash::from_bytes(*h)),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use javm_cap::{Cap, Slot, wire};

    use super::*;

    #[test]
    fn published_caps_are_found_by_hash() {
        let leaf = Cap::inline(b"leaf bytes".to_vec());
        let leaf_hash = DIRECTORY
            .lock()
            .put(&wire::encode_cap(&leaf).unwrap())
            .unwrap();
        assert!(contains(&leaf_hash));
        assert_eq!(kind(&leaf_hash), Some(CapKind::Data));
        assert_eq!(data(&leaf_hash).as_deref(), Some(&b"leaf bytes"[..]));
        assert_eq!(with_data(&leaf_hash, <[u8]>::len), Some(10));
        assert_eq!(slots(&leaf_hash), None);
        let node = Cap::cnode(alloc::vec![Slot::Hash(leaf_hash), Slot::Empty]);
        let node_hash = DIRECTORY
            .lock()
            .put(&wire::encode_cap(&node).unwrap())
            .unwrap();
        assert_eq!(kind(&node_hash), Some(CapKind::CNode));
        assert_eq!(slots(&node_hash), Some(alloc::vec![Some(leaf_hash), None]));
        assert_eq!(data(&node_hash), None);
    }
}
