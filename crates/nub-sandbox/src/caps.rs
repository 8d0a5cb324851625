//! Publishing capabilities into the guest's directory, and reading the
//! directory without a VM exit.
//!
//! - [`MultiUseSandbox::put_cap`] sends one cap (its wire form) to the guest,
//!   which validates it, hashes it, checks that every child of a CNode is
//!   already present (the merkle walk) and stores it; it answers with the
//!   hash it computed, which must be the hash the host computed.
//! - [`MultiUseSandbox::put_cap_with_hash`] first asks the
//!   [`GuestCacheReader`], which reads the directory straight from guest
//!   memory: when the guest already holds the hash there is no VM exit at
//!   all (the reader is a hint; see its docs).
//! - [`MultiUseSandbox::put_cap_graph`] publishes a whole graph (with `Ref`
//!   slots and paged data) children first, skipping what the guest holds.
//!
//! # What is verified
//! The guest is untrusted. The host computes every hash itself: a `PUT_CAP`
//! answer that is not the hash of the cap sent, and a `GET_CAP` answer that
//! is malformed or does not hash to the hash asked for, are
//! [`HyperlightError::ProtocolViolation`]s that poison the sandbox. The
//! [`GuestCacheReader`] is only a hint (see its docs): the paths that must
//! be sure ([`MultiUseSandbox::get_cap`], the children of
//! [`MultiUseSandbox::put_cap_graph`]) never rely on it alone.

use std::collections::{HashMap, HashSet};

use javm_cap::{
    Cap, CapHash, DataContent, Slot,
    wire::{self, WireCap, WireSlot},
};
use nub_host_common::{
    directory, rpc,
    system::{GET_CAP_ABSENT, GET_CAP_FOUND},
};
use nub_hypervisor::GuestMemory;

use crate::{
    error::{CapLie as Lie, HyperlightError, Result, Violation},
    sandbox::MultiUseSandbox,
};

/// A capability hash as the ABI carries it (32 bytes, blake3).
pub type AbiCapHash = CapHash;

/// Directory figures reported by the guest (the ABI's type).
pub use nub_host_common::system::DirectoryStats;

/// Answers "does the guest hold this hash?" by reading the guest's
/// directory index directly, with no VM exit.
///
/// It borrows the sandbox, so it can only read while no call runs. Guest
/// memory is untrusted: every address is bounds-checked, at most
/// [`directory::MAX_PROBE`] slots are read, and any inconsistency (bad magic,
/// version, capacity, table address) means "not present", which callers
/// treat as "ask the guest".
///
/// # A hint, not a proof
/// The index lives in guest memory and the guest can write it. A guest can
/// make the reader answer "absent" for a hash it holds (harmless: the
/// caller then asks the guest) or "present" for a hash it does not hold.
/// The second is a lie only the guest suffers from: an exit-free
/// [`MultiUseSandbox::put_cap_with_hash`] returns `Ok` without publishing,
/// so the guest lacks a cap it was offered. Nothing the host gets back
/// depends on the reader: [`MultiUseSandbox::get_cap`] always asks the
/// guest and checks the answer's hash, and
/// [`MultiUseSandbox::put_cap_graph`] publishes a child for real when the
/// guest refuses a parent for lacking a child the reader claimed. A
/// poisoned sandbox has no reader ([`MultiUseSandbox::cache_reader`] fails).
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

/// Decodes a `PUT_CAP` answer: `Some(hash)`, or `None` for the sentinel
/// (the guest refused the cap).
fn put_answer(bytes: &[u8]) -> std::result::Result<Option<CapHash>, Lie> {
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Lie::PutAnswerLength(bytes.len()))?;
    let hash = CapHash::from_bytes(raw);
    Ok((!hash.is_sentinel()).then_some(hash))
}

/// Checks a `PUT_CAP` answer against the hash the host computed:
/// `Some(hash)` if the guest stored the cap, `None` if it refused it.
fn check_put_answer(bytes: &[u8], expected: CapHash) -> std::result::Result<Option<CapHash>, Lie> {
    match put_answer(bytes)? {
        Some(answered) if answered != expected => Err(Lie::PutHash { expected, answered }),
        answer => Ok(answer),
    }
}

/// Decodes and verifies a `GET_CAP` answer for `asked`.
fn get_answer(bytes: &[u8], asked: CapHash) -> std::result::Result<Option<Cap>, Lie> {
    match bytes.split_first() {
        Some((&GET_CAP_ABSENT, [])) => Ok(None),
        Some((&GET_CAP_FOUND, cap_bytes)) => {
            // Copy into an aligned buffer: rkyv reads need alignment.
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(cap_bytes.len());
            aligned.extend_from_slice(cap_bytes);
            let archived = wire::access(&aligned).map_err(|_| Lie::GetMalformed)?;
            let answered = archived.hash();
            if answered != asked {
                return Err(Lie::GetHash { asked, answered });
            }
            Ok(Some(archived.to_cap()))
        }
        _ => Err(Lie::GetTag),
    }
}

impl MultiUseSandbox {
    /// The directory reader, at the address the guest published at boot
    /// (or the image recorded), so no call or exit builds it; only a guest
    /// kernel that published none costs one `FN_ID_NUB_GET_BOOT_INFO` call,
    /// once. Fails with [`HyperlightError::PoisonedSandbox`] once the
    /// sandbox is poisoned: a dead guest's index answers nothing.
    ///
    /// ```
    /// use nub_sandbox::javm_cap::Cap;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let cap = Cap::inline(b"config".to_vec());
    /// assert!(!sbox.cache_reader()?.contains(&cap.hash()));
    /// sbox.put_cap(&cap)?;
    /// let exits = sbox.exit_count();
    /// assert!(sbox.cache_reader()?.contains(&cap.hash())); // read from guest memory,
    /// assert_eq!(sbox.exit_count(), exits); // without a VM exit
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn cache_reader(&mut self) -> Result<GuestCacheReader<'_>> {
        if self.is_poisoned() {
            return Err(HyperlightError::PoisonedSandbox);
        }
        let header_va = self.unless_poisoned(|s| {
            let limit = s.configured_limit();
            s.directory_address(limit)
        })?;
        Ok(GuestCacheReader {
            memory: self.memory(),
            header_va,
        })
    }

    /// The error for a guest answer that cannot be true: poisons the
    /// sandbox (its guest can no longer be trusted) and returns a
    /// [`HyperlightError::ProtocolViolation`].
    fn lied(&mut self, lie: &Lie) -> HyperlightError {
        self.poison();
        HyperlightError::ProtocolViolation(Violation::Cap(lie.clone()))
    }

    /// Sends `cap` to the guest's directory and returns its hash. Fails with
    /// [`HyperlightError::Wire`] (nothing sent) if the cap has paged data or
    /// `Ref` slots or breaks a limit (use [`Self::put_cap_graph`] for
    /// those), and with [`HyperlightError::CapMissingChild`] /
    /// [`HyperlightError::CapRejected`] if the guest refuses it. The host
    /// hashes the cap itself; a guest that answers with another hash gets a
    /// [`HyperlightError::ProtocolViolation`] and poisons the sandbox.
    /// Idempotent.
    ///
    /// ```
    /// use nub_sandbox::javm_cap::{Cap, Slot};
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let leaf = Cap::inline(b"leaf".to_vec());
    /// assert_eq!(sbox.put_cap(&leaf)?, leaf.hash());
    /// // A CNode whose children the guest holds, by hash:
    /// let node = Cap::cnode(vec![Slot::Hash(leaf.hash()), Slot::Empty]);
    /// assert_eq!(sbox.put_cap(&node)?, node.hash());
    /// // One whose child it lacks is refused, naming the child:
    /// let orphan = Cap::cnode(vec![Slot::Hash(Cap::inline(b"?".to_vec()).hash())]);
    /// assert!(matches!(
    ///     sbox.put_cap(&orphan),
    ///     Err(nub_sandbox::HyperlightError::CapMissingChild { .. })
    /// ));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn put_cap(&mut self, cap: &Cap) -> Result<AbiCapHash> {
        let wire = WireCap::try_from(cap)?;
        self.put_wire(&wire, wire.hash())
    }

    /// Sends `wire`, whose hash is `expected`, and checks the answer.
    fn put_wire(&mut self, wire: &WireCap, expected: CapHash) -> Result<AbiCapHash> {
        let bytes = wire::encode(wire)?;
        let answer = self.call_raw(rpc::FN_ID_NUB_PUT_CAP, &bytes)?;
        match check_put_answer(&answer, expected) {
            Ok(Some(hash)) => Ok(hash),
            Ok(None) => Err(self.diagnose_rejection(wire)),
            Err(lie) => Err(self.lied(&lie)),
        }
    }

    /// Why the guest refused `wire`: the first child the guest says it does
    /// not hold (asked with [`Self::get_cap`], never the reader), else a
    /// generic rejection. A failed or lying lookup is returned as is.
    fn diagnose_rejection(&mut self, wire: &WireCap) -> HyperlightError {
        if let WireCap::CNode(slots) = wire {
            for slot in slots {
                if let WireSlot::Hash(h) = slot {
                    let child = CapHash::from_bytes(*h);
                    match self.get_cap(child) {
                        Ok(Some(_)) => {}
                        Ok(None) => return HyperlightError::CapMissingChild { child },
                        Err(e) => return e,
                    }
                }
            }
        }
        HyperlightError::CapRejected
    }

    /// Makes sure the guest holds `cap`, whose hash the caller already
    /// knows.
    ///
    /// When the [`GuestCacheReader`] finds `hash` this costs no VM exit and
    /// no hashing: the caller's `hash` is trusted, and so is the reader (a
    /// hint; a hostile guest can fake presence and so only deprive itself of
    /// the cap). Otherwise the host hashes `cap` before sending it: if that
    /// is not `hash` the call fails with
    /// [`HyperlightError::CapHashMismatch`] (a caller bug; nothing is sent
    /// and the sandbox stays usable); then it is [`Self::put_cap`], whose
    /// answer is verified.
    ///
    /// ```
    /// use nub_sandbox::javm_cap::Cap;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let cap = Cap::inline(vec![7u8; 1024]);
    /// let hash = cap.hash(); // known to the caller, e.g. from an index
    /// sbox.put_cap_with_hash(hash, &cap)?; // sent: one call
    /// let exits = sbox.exit_count();
    /// sbox.put_cap_with_hash(hash, &cap)?; // already held: no exit, no hashing
    /// assert_eq!(sbox.exit_count(), exits);
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn put_cap_with_hash(&mut self, hash: AbiCapHash, cap: &Cap) -> Result<()> {
        if self.cache_reader()?.contains(&hash) {
            return Ok(());
        }
        let wire = WireCap::try_from(cap)?;
        let computed = wire.hash();
        if computed != hash {
            return Err(HyperlightError::CapHashMismatch {
                given: hash,
                computed,
            });
        }
        self.put_wire(&wire, computed).map(|_| ())
    }

    /// Publishes a whole capability graph, children first: `Ref` slots
    /// become `Hash` slots of their published children, paged data is sent
    /// inline, and any cap the guest already holds (by the reader) is
    /// skipped with its subtree. Shared subtrees are published once. Returns
    /// the root's hash. Iterative: the graph's depth is not limited by the
    /// host stack.
    ///
    /// Every cap it sends is verified (its hash, and by the guest's merkle
    /// walk, its children). A child skipped because the reader claimed it
    /// is published for real when the guest then refuses its parent for
    /// lacking it, so a lying index cannot make this return `Ok` for a
    /// parent the guest refused. A guest that still refuses the parent
    /// after acknowledging the child gets a
    /// [`HyperlightError::ProtocolViolation`] and poisons the sandbox. Like
    /// [`Self::put_cap_with_hash`], a root the reader claims is not sent.
    /// A `Hash` slot the guest lacks (a child outside this graph) is
    /// [`HyperlightError::CapMissingChild`].
    ///
    /// ```
    /// use nub_sandbox::javm_cap::{Cap, Slot};
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let shared = Slot::from(Cap::paged(&[1u8; 10_000])); // paged data goes inline
    /// let root = Cap::cnode(vec![
    ///     Slot::from(Cap::cnode(vec![shared.clone()])),
    ///     shared,
    ///     Slot::Empty,
    /// ]);
    /// assert_eq!(sbox.put_cap_graph(&root)?, root.hash());
    /// assert_eq!(sbox.directory_stats()?.count, 3); // the shared child once
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn put_cap_graph(&mut self, root: &Cap) -> Result<AbiCapHash> {
        enum Step<'a> {
            Enter(&'a Cap),
            Exit(&'a Cap),
        }
        let mut walk = GraphWalk::default();
        let mut stack = vec![Step::Enter(root)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(cap) => {
                    if walk.done.contains_key(&std::ptr::from_ref(cap)) {
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
                    let wire = walk.wire_of(cap)?;
                    let hash = wire.hash();
                    if walk.sent.contains(&hash) {
                        // Published earlier in this walk.
                    } else if self.cache_reader()?.contains(&hash) {
                        walk.skipped.entry(hash).or_insert(cap);
                    } else {
                        self.publish_verified(wire, hash, &mut walk)?;
                    }
                    walk.done.insert(std::ptr::from_ref(cap), hash);
                }
            }
        }
        walk.done
            .get(&std::ptr::from_ref(root))
            .copied()
            .ok_or(HyperlightError::Internal("graph walk lost the root"))
    }

    /// Publishes `wire` (hash `hash`); when the guest refuses it for lacking
    /// a child that the walk skipped on the reader's word, publishes that
    /// child for real (and, the same way, its own children) and retries.
    fn publish_verified<'a>(
        &mut self,
        wire: WireCap,
        hash: CapHash,
        walk: &mut GraphWalk<'a>,
    ) -> Result<()> {
        let mut pending = vec![(wire, hash)];
        while let Some((wire, hash)) = pending.last() {
            match self.put_wire(wire, *hash) {
                Ok(_) => {
                    walk.sent.insert(*hash);
                    pending.pop();
                }
                Err(HyperlightError::CapMissingChild { child }) => {
                    if walk.sent.contains(&child) {
                        return Err(self.lied(&Lie::ChildStillMissing(child)));
                    }
                    let Some(&cap) = walk.skipped.get(&child) else {
                        // Not a cap of this graph: the caller's `Hash` slot.
                        return Err(HyperlightError::CapMissingChild { child });
                    };
                    let child_wire = walk.wire_of(cap)?;
                    pending.push((child_wire, child));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The cap stored under `hash`, or `None` if the guest does not hold it.
    /// Always asks the guest (one call) and verifies the answer: a cap that
    /// does not hash to `hash`, or malformed cap bytes, are a
    /// [`HyperlightError::ProtocolViolation`] and poison the sandbox.
    ///
    /// ```
    /// use nub_sandbox::javm_cap::Cap;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let cap = Cap::inline(b"stored".to_vec());
    /// assert_eq!(sbox.get_cap(cap.hash())?, None);
    /// sbox.put_cap(&cap)?;
    /// assert_eq!(sbox.get_cap(cap.hash())?, Some(cap));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn get_cap(&mut self, hash: AbiCapHash) -> Result<Option<Cap>> {
        let answer = self.call_raw(rpc::FN_ID_NUB_GET_CAP, hash.as_bytes())?;
        get_answer(&answer, hash).map_err(|lie| self.lied(&lie))
    }

    /// The guest directory's figures (one call into the guest). The
    /// figures are the guest's claim; a malformed answer is a
    /// [`HyperlightError::ProtocolViolation`] and poisons the sandbox.
    ///
    /// ```
    /// use nub_sandbox::javm_cap::Cap;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let before = sbox.directory_stats()?;
    /// sbox.put_cap(&Cap::inline(vec![0u8; 100]))?;
    /// let after = sbox.directory_stats()?;
    /// assert_eq!(after.count, before.count + 1);
    /// assert!(after.bytes_held > before.bytes_held);
    /// assert!(after.capacity >= after.count);
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn directory_stats(&mut self) -> Result<DirectoryStats> {
        let bytes = self.call_raw(rpc::FN_ID_NUB_DIRECTORY_STATS, &[])?;
        DirectoryStats::from_bytes(&bytes).ok_or_else(|| self.lied(&Lie::Stats))
    }
}

/// The state of one [`MultiUseSandbox::put_cap_graph`] walk.
#[derive(Default)]
struct GraphWalk<'a> {
    /// Hash of every cap left (by address: shared subtrees are walked once).
    done: HashMap<*const Cap, CapHash>,
    /// Hashes the guest acknowledged during this walk.
    sent: HashSet<CapHash>,
    /// Caps not sent because the reader claimed them, by hash.
    skipped: HashMap<CapHash, &'a Cap>,
}

impl GraphWalk<'_> {
    /// `cap` in wire form: `Ref` slots become the `Hash` slots of their
    /// (already walked) children, paged data goes inline.
    fn wire_of(&self, cap: &Cap) -> Result<WireCap> {
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
                            let h = self
                                .done
                                .get(&std::ptr::from_ref::<Cap>(child))
                                .ok_or(HyperlightError::Internal("graph walk lost a child"))?;
                            WireSlot::Hash(h.to_bytes())
                        }
                    });
                }
                WireCap::CNode(out)
            }
        };
        wire.check_limits()?;
        Ok(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_and_malformed_put_answers() {
        assert_eq!(put_answer(CapHash::SENTINEL.as_bytes()), Ok(None));
        let h = javm_cap::hash_data(b"x");
        assert_eq!(put_answer(h.as_bytes()), Ok(Some(h)));
        assert_eq!(put_answer(&[0xFF; 31]), Err(Lie::PutAnswerLength(31)));
        assert_eq!(put_answer(&[]), Err(Lie::PutAnswerLength(0)));
    }

    #[test]
    fn a_put_answer_must_be_the_hash_the_host_computed() {
        let h = javm_cap::hash_data(b"x");
        let other = javm_cap::hash_data(b"y");
        assert_eq!(check_put_answer(h.as_bytes(), h), Ok(Some(h)));
        assert_eq!(check_put_answer(CapHash::SENTINEL.as_bytes(), h), Ok(None));
        assert_eq!(
            check_put_answer(other.as_bytes(), h),
            Err(Lie::PutHash {
                expected: h,
                answered: other
            })
        );
    }

    fn found(cap: &Cap) -> Vec<u8> {
        let mut bytes = vec![GET_CAP_FOUND];
        bytes.extend_from_slice(&wire::encode_cap(cap).unwrap());
        bytes
    }

    #[test]
    fn get_answers_are_verified() {
        let cap = Cap::inline(b"asked for".to_vec());
        let other = Cap::inline(b"something else".to_vec());
        assert_eq!(get_answer(&found(&cap), cap.hash()), Ok(Some(cap.clone())));
        assert_eq!(get_answer(&[GET_CAP_ABSENT], cap.hash()), Ok(None));
        assert_eq!(
            get_answer(&found(&other), cap.hash()),
            Err(Lie::GetHash {
                asked: cap.hash(),
                answered: other.hash()
            })
        );
        assert_eq!(get_answer(&[], cap.hash()), Err(Lie::GetTag));
        assert_eq!(get_answer(&[7], cap.hash()), Err(Lie::GetTag));
        assert_eq!(
            get_answer(&[GET_CAP_ABSENT, 0], cap.hash()),
            Err(Lie::GetTag)
        );
        assert_eq!(
            get_answer(&[GET_CAP_FOUND, 0xAB, 0xCD, 0xEF], cap.hash()),
            Err(Lie::GetMalformed)
        );
        // The messages name the hashes involved.
        let lie = Lie::PutHash {
            expected: cap.hash(),
            answered: other.hash(),
        };
        let msg = lie.to_string();
        assert!(msg.contains(&cap.hash().to_string()) && msg.contains(&other.hash().to_string()));
        let msg = Lie::ChildStillMissing(cap.hash()).to_string();
        assert!(msg.contains(&cap.hash().to_string()));
    }
}
