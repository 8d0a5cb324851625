//! The capability directory: [`DIRECTORY`], a content-addressed map from
//! [`CapHash`] to the capability stored under it.
//!
//! Caps are stored as their validated rkyv [`WireCap`] bytes, each in its own
//! aligned heap allocation. The index is an open-addressing table laid out
//! exactly as `nub_host_common::directory` describes, with a header the host
//! reads directly (`BootInfo.directory_va`), so the host can ask "is this hash
//! here?" without a VM exit. The header is rewritten after every change;
//! the guest itself never reads it back (a scribbled header only misleads
//! the host's reader, which then falls back to a call).
//!
//! [`Directory::put`] is the merkle walk: a CNode is accepted only when every
//! child hash is already present, so everything reachable from a stored
//! hash is stored too. Puts are idempotent.
//!
//! [`WireCap`]: javm_cap::wire::WireCap

use alloc::{boxed::Box, vec, vec::Vec};
use core::fmt;

use javm_cap::{
    CapHash,
    wire::{self, ArchivedWireCap, WireError},
};
use nub_host_common::directory::{DIRECTORY_MAGIC, DIRECTORY_VERSION, MAX_PROBE, home_slot};
use rkyv::util::AlignedVec;

/// The guest's directory. Locked for every access; never hold the guard
/// across a host call (the guest is single-threaded, so a second lock would
/// spin forever).
pub static DIRECTORY: spin::LazyLock<spin::Mutex<Directory>> =
    spin::LazyLock::new(|| spin::Mutex::new(Directory::new()));

/// Slots in a new table.
const INITIAL_CAPACITY: usize = 64;

/// Why a put failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutError {
    /// The bytes are not a valid, in-limits `WireCap`.
    Wire(WireError),
    /// A CNode names a child that is not in the directory.
    MissingChild(CapHash),
}

impl fmt::Display for PutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => write!(f, "invalid capability: {e}"),
            Self::MissingChild(h) => write!(f, "child {h} is not in the directory"),
        }
    }
}

/// One table slot, exactly as the host reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: [u8; 32],
    /// Address of the stored bytes; 0 = empty.
    cap_va: u64,
    cap_len: u64,
}

const EMPTY: Slot = Slot {
    hash: [0; 32],
    cap_va: 0,
    cap_len: 0,
};

const _: () = assert!(core::mem::size_of::<Slot>() == nub_host_common::directory::SLOT_SIZE);

/// The header, as eight little-endian words (x86_64 is little endian).
#[repr(C, align(64))]
#[derive(Debug)]
struct HeaderWords([u64; 8]);

const _: () =
    assert!(core::mem::size_of::<HeaderWords>() == nub_host_common::directory::HEADER_SIZE);

/// Directory figures (the ABI's `FN_ID_NUB_DIRECTORY_STATS` answer).
pub use nub_host_common::system::DirectoryStats as Stats;

/// A content-addressed store of capabilities with a host-readable index.
#[derive(Debug)]
pub struct Directory {
    header: Box<HeaderWords>,
    table: Vec<Slot>,
    /// `entry[i]`: index into `storage` of the cap in table slot `i`.
    entry: Vec<u32>,
    /// Stored caps with their table slot (hash, address, length), so a
    /// rebuild re-places entries without re-validating or re-hashing them.
    storage: Vec<(Slot, AlignedVec<16>)>,
    bytes_held: u64,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        let mut d = Self {
            header: Box::new(HeaderWords([0; 8])),
            table: vec![EMPTY; INITIAL_CAPACITY],
            entry: vec![u32::MAX; INITIAL_CAPACITY],
            storage: Vec::new(),
            bytes_held: 0,
        };
        d.publish();
        d
    }

    /// Guest address of the host-readable header.
    pub fn header_addr(&self) -> u64 {
        core::ptr::from_ref::<HeaderWords>(&self.header) as u64
    }

    /// Current figures.
    pub fn stats(&self) -> Stats {
        Stats {
            count: self.storage.len() as u64,
            bytes_held: self.bytes_held,
            capacity: self.table.len() as u64,
        }
    }

    fn publish(&mut self) {
        let words = &mut self.header.0;
        words[0] = DIRECTORY_MAGIC;
        words[1] = u64::from(DIRECTORY_VERSION) | (u64::from(MAX_PROBE) << 32);
        words[2] = self.table.len() as u64;
        words[3] = self.storage.len() as u64;
        words[4] = self.table.as_ptr() as u64;
        words[5] = self.bytes_held;
    }

    fn find(&self, hash: &CapHash) -> Option<usize> {
        let capacity = self.table.len();
        let mut i = home_slot(hash.as_bytes(), capacity as u64) as usize;
        for _ in 0..MAX_PROBE {
            let slot = self.table.get(i)?;
            if slot.cap_va == 0 {
                return None;
            }
            if slot.hash == *hash.as_bytes() {
                return Some(i);
            }
            i = (i + 1) & (capacity - 1);
        }
        None
    }

    /// Whether `hash` is stored.
    pub fn contains(&self, hash: &CapHash) -> bool {
        self.find(hash).is_some()
    }

    /// The stored `WireCap` bytes under `hash`.
    pub fn get_bytes(&self, hash: &CapHash) -> Option<&[u8]> {
        let i = self.find(hash)?;
        let e = *self.entry.get(i)? as usize;
        self.storage.get(e).map(|(_, v)| v.as_slice())
    }

    /// The stored cap under `hash`, archived (zero-copy).
    pub fn get(&self, hash: &CapHash) -> Option<&ArchivedWireCap> {
        wire::access(self.get_bytes(hash)?).ok()
    }

    /// Validates `bytes` as a `WireCap`, hashes it in place, checks that
    /// every child of a CNode is present, and stores it. Idempotent.
    pub fn put(&mut self, bytes: &[u8]) -> Result<CapHash, PutError> {
        let cap = wire::access(bytes).map_err(PutError::Wire)?;
        let hash = cap.hash();
        if self.contains(&hash) {
            return Ok(hash);
        }
        if let Some(slots) = cap.slots() {
            for child in slots.iter().filter_map(|s| s.hash()) {
                if !self.contains(&child) {
                    return Err(PutError::MissingChild(child));
                }
            }
        }
        let mut stored = AlignedVec::<16>::with_capacity(bytes.len());
        stored.extend_from_slice(bytes);
        self.insert(hash, stored);
        Ok(hash)
    }

    fn insert(&mut self, hash: CapHash, stored: AlignedVec<16>) {
        let index = self.storage.len() as u32;
        let slot = Slot {
            hash: *hash.as_bytes(),
            cap_va: stored.as_ptr() as u64,
            cap_len: stored.len() as u64,
        };
        self.bytes_held += stored.len() as u64;
        self.storage.push((slot, stored));
        // Keep the load factor at most one half; a rebuild also places the
        // new entry.
        let crowded = self.storage.len() * 2 > self.table.len();
        if crowded || !self.place(slot, index) {
            self.rebuild(self.table.len() * 2);
        }
        self.publish();
    }

    /// Puts `slot` within `MAX_PROBE` of its home; `false` if it cannot.
    fn place(&mut self, slot: Slot, index: u32) -> bool {
        let capacity = self.table.len();
        let mut i = home_slot(&slot.hash, capacity as u64) as usize;
        for _ in 0..MAX_PROBE {
            match (self.table.get_mut(i), self.entry.get_mut(i)) {
                (Some(t), Some(e)) if t.cap_va == 0 => {
                    *t = slot;
                    *e = index;
                    return true;
                }
                _ => i = (i + 1) & (capacity - 1),
            }
        }
        false
    }

    /// Rebuilds the table with at least `capacity` slots, growing further
    /// until every entry sits within `MAX_PROBE` of its home.
    fn rebuild(&mut self, mut capacity: usize) {
        'grow: loop {
            self.table = vec![EMPTY; capacity];
            self.entry = vec![u32::MAX; capacity];
            for index in 0..self.storage.len() {
                let Some(&(slot, _)) = self.storage.get(index) else {
                    continue;
                };
                if !self.place(slot, index as u32) {
                    capacity *= 2;
                    continue 'grow;
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use javm_cap::{Cap, Slot as CapSlot};

    fn bytes(cap: &Cap) -> AlignedVec {
        wire::encode_cap(cap).unwrap()
    }

    fn read_header(d: &Directory) -> [u64; 8] {
        d.header.0
    }

    #[test]
    fn put_get_and_idempotence() {
        let mut d = Directory::new();
        let data = Cap::inline(b"hello".to_vec());
        let h = d.put(&bytes(&data)).unwrap();
        assert_eq!(h, data.hash());
        assert_eq!(d.put(&bytes(&data)).unwrap(), h);
        assert_eq!(d.stats().count, 1);
        assert_eq!(d.get(&h).unwrap().data(), Some(&b"hello"[..]));
        assert!(!d.contains(&Cap::inline(b"other".to_vec()).hash()));
    }

    #[test]
    fn merkle_walk_requires_children() {
        let mut d = Directory::new();
        let child = Cap::inline(vec![1, 2, 3]);
        let node = Cap::cnode(vec![CapSlot::Empty, CapSlot::Hash(child.hash())]);
        assert_eq!(
            d.put(&bytes(&node)),
            Err(PutError::MissingChild(child.hash()))
        );
        assert_eq!(d.stats().count, 0);
        d.put(&bytes(&child)).unwrap();
        assert_eq!(d.put(&bytes(&node)).unwrap(), node.hash());
    }

    #[test]
    fn garbage_is_refused() {
        let mut d = Directory::new();
        assert!(matches!(d.put(b"not a cap"), Err(PutError::Wire(_))));
        assert!(matches!(d.put(&[]), Err(PutError::Wire(_))));
    }

    #[test]
    fn grows_and_keeps_everything_findable() {
        let mut d = Directory::new();
        let caps: Vec<Cap> = (0..2000u32)
            .map(|i| Cap::inline(i.to_le_bytes().to_vec()))
            .collect();
        for c in &caps {
            d.put(&bytes(c)).unwrap();
        }
        let s = d.stats();
        assert_eq!(s.count, 2000);
        assert!(s.capacity >= 4000 && s.capacity.is_power_of_two());
        for c in &caps {
            assert!(d.contains(&c.hash()));
        }
        let header = read_header(&d);
        assert_eq!(header[0], DIRECTORY_MAGIC);
        assert_eq!(header[2], s.capacity);
        assert_eq!(header[3], 2000);
        assert_eq!(header[4], d.table.as_ptr() as u64);
    }

    #[test]
    fn header_matches_the_host_probe() {
        let mut d = Directory::new();
        let caps: Vec<Cap> = (0..300u32)
            .map(|i| Cap::inline(vec![i as u8; i as usize]))
            .collect();
        for c in &caps {
            d.put(&bytes(c)).unwrap();
        }
        // Read "guest memory" straight from this process: the directory's
        // header and table are ordinary heap objects here.
        let header_ptr = d.header_addr();
        let table = d.table.as_ptr() as u64;
        let table_len = (d.table.len() * core::mem::size_of::<Slot>()) as u64;
        let header_bytes: Vec<u8> = d.header.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        let table_bytes: Vec<u8> = d
            .table
            .iter()
            .flat_map(|s| {
                let mut v = s.hash.to_vec();
                v.extend(s.cap_va.to_le_bytes());
                v.extend(s.cap_len.to_le_bytes());
                v
            })
            .collect();
        let mut read = |addr: u64, buf: &mut [u8]| {
            let src = if addr >= header_ptr && addr + buf.len() as u64 <= header_ptr + 64 {
                &header_bytes[(addr - header_ptr) as usize..]
            } else if addr >= table && addr + buf.len() as u64 <= table + table_len {
                &table_bytes[(addr - table) as usize..]
            } else {
                return false;
            };
            buf.copy_from_slice(&src[..buf.len()]);
            true
        };
        for c in &caps {
            assert!(nub_host_common::directory::probe(
                &mut read,
                header_ptr,
                c.hash().as_bytes()
            ));
        }
        let absent = Cap::inline(b"absent".to_vec()).hash();
        assert!(!nub_host_common::directory::probe(
            &mut read,
            header_ptr,
            absent.as_bytes()
        ));
    }
}
