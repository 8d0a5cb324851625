//! Publishing capabilities into the guest's directory, and reading the
//! directory without a VM exit.
//!
//! - [`MultiUseSandbox::put_cap`] sends one cap (its wire form) to the guest,
//!   which validates it, hashes it, checks that every child of a CNode is
//!   already present (the merkle walk) and stores it; the guest-computed hash
//!   comes back.
//! - [`MultiUseSandbox::put_cap_with_hash`] first asks the
//!   [`GuestCacheReader`], which reads the directory straight from guest
//!   memory: when the guest already holds the hash there is no VM exit at
//!   all.
//! - [`MultiUseSandbox::put_cap_graph`] publishes a whole graph (with `Ref`
//!   slots and paged data) children first, skipping what the guest holds.

use std::collections::{HashMap, HashSet};

use javm_cap::{
    Cap, CapHash, DataContent, Slot,
    wire::{self, WireCap, WireSlot},
};
use nub_host_common::{directory, rpc};
use nub_hypervisor::GuestMemory;

use crate::{
    error::{HyperlightError, Result},
    sandbox::MultiUseSandbox,
};

/// A capability hash as the ABI carries it (32 bytes, blake3).
pub type AbiCapHash = CapHash;

/// `FN_ID_NUB_GET_CAP` result tag: found (the cap follows).
const GET_CAP_FOUND: u8 = 1;
/// `FN_ID_NUB_GET_CAP` result tag: absent.
const GET_CAP_ABSENT: u8 = 0;

/// Directory figures reported by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Caps stored.
    pub count: u64,
    /// Bytes of stored caps (their wire form).
    pub bytes_held: u64,
    /// Slots in the index.
    pub capacity: u64,
}

/// Answers "does the guest hold this hash?" by reading the guest's
/// directory index directly, with no VM exit.
///
/// It borrows the sandbox, so it can only read while no call runs. Guest
/// memory is untrusted: every address is bounds-checked, at most
/// [`directory::MAX_PROBE`] slots are read, and any inconsistency (bad magic,
/// version, capacity, table address) means "not present", which callers
/// treat as "ask the guest".
#[derive(Debug, Clone, Copy)]
pub struct GuestCacheReader<'a> {
    memory: &'a GuestMemory,
    header_va: u64,
}

impl GuestCacheReader<'_> {
    /// Whether the guest's directory holds `hash`.
    pub fn contains(&self, hash: &AbiCapHash) -> bool {
        let memory = self.memory;
        directory::probe(
            &mut |addr, buf| memory.read(addr, buf).is_ok(),
            self.header_va,
            hash.as_bytes(),
        )
    }
}

fn protocol(msg: &str) -> HyperlightError {
    HyperlightError::ProtocolViolation(msg.into())
}

/// Decodes a `PUT_CAP` answer: `Some(hash)`, or `None` for the sentinel
/// (the guest refused the cap).
fn put_answer(bytes: &[u8]) -> Result<Option<CapHash>> {
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| protocol("PUT_CAP answered with a result that is not 32 bytes"))?;
    let hash = CapHash::from_bytes(raw);
    Ok((!hash.is_sentinel()).then_some(hash))
}

impl MultiUseSandbox {
    /// The directory reader, built on first use by one
    /// `FN_ID_NUB_GET_BOOT_INFO` call (the directory's address never changes
    /// afterwards).
    pub fn cache_reader(&mut self) -> Result<GuestCacheReader<'_>> {
        let header_va = match self.directory_va {
            Some(va) => va,
            None => {
                let va = self.boot_info()?.directory_va;
                self.directory_va = Some(va);
                va
            }
        };
        Ok(GuestCacheReader {
            memory: self.memory(),
            header_va,
        })
    }

    /// Sends `cap` to the guest's directory and returns the hash the guest
    /// computed. Fails with [`HyperlightError::Wire`] (nothing sent) if the
    /// cap has paged data or `Ref` slots or breaks a limit (use
    /// [`Self::put_cap_graph`] for those), and with
    /// [`HyperlightError::CapMissingChild`] / [`HyperlightError::CapRejected`]
    /// if the guest refuses it. Idempotent.
    pub fn put_cap(&mut self, cap: &Cap) -> Result<AbiCapHash> {
        let wire = WireCap::try_from(cap)?;
        self.put_wire(&wire)
    }

    fn put_wire(&mut self, wire: &WireCap) -> Result<AbiCapHash> {
        let bytes = wire::encode(wire)?;
        let answer = self.call_raw(rpc::FN_ID_NUB_PUT_CAP, &bytes)?;
        match put_answer(&answer)? {
            Some(hash) => Ok(hash),
            None => Err(self.diagnose_rejection(wire)),
        }
    }

    /// Why the guest refused `wire`: a missing child if the reader (or a
    /// lookup call) shows one, else a generic rejection.
    fn diagnose_rejection(&mut self, wire: &WireCap) -> HyperlightError {
        if let WireCap::CNode(slots) = wire {
            for slot in slots {
                if let WireSlot::Hash(h) = slot {
                    let child = CapHash::from_bytes(*h);
                    let present = matches!(self.get_cap(child), Ok(Some(_)));
                    if !present {
                        return HyperlightError::CapMissingChild { child };
                    }
                }
            }
        }
        HyperlightError::CapRejected
    }

    /// Makes sure the guest holds `cap`, whose hash the caller already knows.
    /// When the directory reader finds `hash` this costs no VM exit;
    /// otherwise it is [`Self::put_cap`] (and the guest's hash is
    /// debug-asserted to equal `hash`).
    pub fn put_cap_with_hash(&mut self, hash: AbiCapHash, cap: &Cap) -> Result<()> {
        if self.cache_reader()?.contains(&hash) {
            return Ok(());
        }
        let got = self.put_cap(cap)?;
        debug_assert_eq!(
            got, hash,
            "put_cap_with_hash: the hash given does not match the cap"
        );
        Ok(())
    }

    /// Publishes a whole capability graph, children first: `Ref` slots
    /// become `Hash` slots of their published children, paged data is sent
    /// inline, and any cap the guest already holds (by the reader) is
    /// skipped with its subtree. Shared subtrees are published once. Returns
    /// the root's hash. Iterative: the graph's depth is not limited by the
    /// host stack.
    pub fn put_cap_graph(&mut self, root: &Cap) -> Result<AbiCapHash> {
        enum Step<'a> {
            Enter(&'a Cap),
            Exit(&'a Cap),
        }
        let mut done: HashMap<*const Cap, CapHash> = HashMap::new();
        let mut published: HashSet<CapHash> = HashSet::new();
        let mut stack = vec![Step::Enter(root)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(cap) => {
                    if done.contains_key(&std::ptr::from_ref(cap)) {
                        continue;
                    }
                    stack.push(Step::Exit(cap));
                    if let Cap::CNode { slots } = cap {
                        for slot in slots.iter().rev() {
                            if let Slot::Ref(child) = slot {
                                stack.push(Step::Enter(child));
                            }
                        }
                    }
                }
                Step::Exit(cap) => {
                    let wire = match cap {
                        Cap::Data(DataContent::Inline(bytes)) => WireCap::Data(bytes.clone()),
                        Cap::Data(DataContent::Paged(pages)) => WireCap::Data(pages.to_vec()),
                        Cap::CNode { slots } => {
                            let mut out = Vec::with_capacity(slots.len());
                            for slot in slots {
                                out.push(match slot {
                                    Slot::Empty => WireSlot::Empty,
                                    Slot::Hash(h) => WireSlot::Hash(h.to_bytes()),
                                    Slot::Ref(child) => {
                                        let h = done
                                            .get(&std::ptr::from_ref::<Cap>(child))
                                            .ok_or_else(|| {
                                                HyperlightError::Error(
                                                    "graph walk lost a child".into(),
                                                )
                                            })?;
                                        WireSlot::Hash(h.to_bytes())
                                    }
                                });
                            }
                            WireCap::CNode(out)
                        }
                    };
                    wire.check_limits()?;
                    let hash = wire.hash();
                    if !published.contains(&hash) && !self.cache_reader()?.contains(&hash) {
                        let got = self.put_wire(&wire)?;
                        published.insert(got);
                    }
                    done.insert(std::ptr::from_ref(cap), hash);
                }
            }
        }
        done.get(&std::ptr::from_ref(root))
            .copied()
            .ok_or_else(|| HyperlightError::Error("graph walk lost the root".into()))
    }

    /// The cap stored under `hash`, or `None` if the guest does not hold it.
    pub fn get_cap(&mut self, hash: AbiCapHash) -> Result<Option<Cap>> {
        let answer = self.call_raw(rpc::FN_ID_NUB_GET_CAP, hash.as_bytes())?;
        match answer.split_first() {
            Some((&GET_CAP_ABSENT, [])) => Ok(None),
            Some((&GET_CAP_FOUND, bytes)) => {
                // Copy into an aligned buffer: rkyv reads need alignment.
                let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
                aligned.extend_from_slice(bytes);
                let cap = wire::decode(&aligned)?;
                Ok(Some(cap))
            }
            _ => Err(protocol("GET_CAP answered with an unknown tag")),
        }
    }

    /// The guest directory's figures (one call into the guest).
    pub fn directory_stats(&mut self) -> Result<DirectoryStats> {
        let bytes = self.call_raw(rpc::FN_ID_NUB_DIRECTORY_STATS, &[])?;
        let [count, bytes_held, capacity] = nub_host_common::decode_u64s(&bytes)
            .ok_or_else(|| protocol("malformed directory stats"))?;
        Ok(DirectoryStats {
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
    fn sentinel_and_malformed_put_answers() {
        assert_eq!(put_answer(CapHash::SENTINEL.as_bytes()).unwrap(), None);
        let h = javm_cap::hash_data(b"x");
        assert_eq!(put_answer(h.as_bytes()).unwrap(), Some(h));
        assert!(matches!(
            put_answer(&[0xFF; 31]),
            Err(HyperlightError::ProtocolViolation(_))
        ));
        assert!(matches!(
            put_answer(&[]),
            Err(HyperlightError::ProtocolViolation(_))
        ));
    }
}
