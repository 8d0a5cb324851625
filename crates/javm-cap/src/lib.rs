//! The javm capability model, shared by the nub host and its `no_std`
//! guests.
//!
//! A guest holds a content-addressed capability directory; the host
//! publishes caps into it. This crate defines:
//!
//! * [`Cap`]: a data cap ([`DataContent::Inline`] bytes, or host-side
//!   [`DataContent::Paged`] [`Pages`]) or a CNode of [`Slot`]s (`Empty`,
//!   `Hash(CapHash)`, or host-side `Ref(Arc<Cap>)`);
//! * [`CapHash`] and [`Cap::hash`]: the content hash (BLAKE3 over the
//!   canonical encoding below), plus hashers that work from borrowed parts
//!   ([`hash_data`], [`hash_data_chunks`], [`hash_cnode`],
//!   [`hash::DataHasher`], [`hash::CNodeHasher`]);
//! * [`wire`]: the rkyv wire form ([`wire::WireCap`]) with validated,
//!   zero-copy access and in-place hashing of the archived form;
//! * the limits [`MAX_DATA_LEN`] and [`MAX_SLOTS`], enforced on the wire.
//!
//! The crate is `no_std` + `alloc`, has no `unsafe` code, and uses no
//! floating point or SIMD of its own.
//!
//! # Hash encoding, version 1
//!
//! This is an ABI shared by host and guest and baked into every stored
//! hash: changing any byte of it changes every hash (the golden vectors in
//! this crate's tests pin it). An incompatible change must use new domain
//! tags (`v2`). The same text is in `docs/cap-hash.md` at the repository
//! root.
//!
//! Notation: `||` concatenates byte strings; `u64le(n)` is `n` as 8 bytes,
//! little-endian; `BLAKE3(x)` is the standard BLAKE3 hash of `x` in its
//! default (unkeyed, not derive-key) mode, 32-byte output.
//!
//! ```text
//! hash(cap)          = BLAKE3(enc(cap))
//!
//! enc(Data(b))       = "javm-cap/v1/data"            16 ASCII bytes
//!                   || b                             the data bytes
//!                   || u64le(len(b))                 8 bytes
//!
//! enc(CNode(s[0..n]))= "javm-cap/v1/cnode"           17 ASCII bytes
//!                   || slot(s[0]) || ... || slot(s[n-1])
//!                   || u64le(n)                      8 bytes
//!
//! slot(Empty)        = 0x00                          1 byte
//! slot(Hash(h))      = 0x01 || h                     33 bytes
//! slot(Ref(c))       = slot(Hash(hash(c)))
//! ```
//!
//! * Only content counts: `Inline` and `Paged` data with the same bytes have
//!   the same `enc` (padding of the last page is not content), and a `Ref`
//!   slot encodes exactly as the `Hash` slot of its child.
//! * The encoding is unambiguous. The two tags differ at byte 12 (`d` =
//!   0x64 vs `c` = 0x63), so neither is a prefix of the other and the first
//!   13 bytes tell the kind. Within a kind, the last 8 bytes are the length
//!   or slot count and what lies between tag and trailer is the body; a
//!   CNode body is a sequence of self-delimiting slot codes (1 or 33 bytes),
//!   so it parses one way only. An `Empty` slot (1 byte) can never be
//!   confused with a hash (tag `0x01` + 32 bytes), including a hash of all
//!   zeros.
//! * Lengths are trailers, not prefixes, so every hasher streams: data is
//!   fed page by page and never concatenated, and a CNode is hashed slot by
//!   slot without knowing the count in advance.
//! * [`CapHash::SENTINEL`] (32 × `0xFF`) is reserved as the guest's "error"
//!   return. No cap hashes to it in practice: that would take BLAKE3 to
//!   output one fixed 256-bit value (probability 2^-256 per hash), so no
//!   check is made.
//!
//! Example: `enc(Data("ab"))` is the 26 bytes
//! `6a61766d2d6361702f76312f64617461` `6162` `0200000000000000`, and
//! `enc(CNode([Empty]))` is the 26 bytes
//! `6a61766d2d6361702f76312f636e6f6465` `00` `0100000000000000`.
//!
//! Golden vectors (hex of `hash`):
//!
//! | cap | hash |
//! |---|---|
//! | `Data("")` | `a157455aa32813af4554c6c66a83ab04f1c35c38a7eb9bd72028aaa4c8f8bfa2` |
//! | `Data("ab")` | `166d9e73cb009a04e4b27c2e7b082406721058263f42c59c045e1e47d26a6689` |
//! | `CNode([])` | `7adb86ced845f57fbe9051a7e45f0f65877e8f60aedbf932cb7da4dd8b9f24f1` |
//! | `CNode([Empty])` | `5356d6aad677aebd1cd9d9af50a7d6f63fcd2bbbf3f5637e8e7712f7010b4287` |
//! | `CNode([Empty, Hash(hash(Data(""))), Hash(hash(CNode([])))])` | `35c3693fa2cf19a4e81b21e68b5d8daf9d27a11d63c324dfd29db079e2cacca8` |
//! | `Data(bytes i % 251 for i in 0..4097)` | `2fd4be99b3782101fb345046a35127b92a0cc1fef93c961250189ed621072129` |
//!
//! # BLAKE3 on bare-metal targets
//!
//! On `target_os = "none"` (e.g. `x86_64-unknown-none`) this crate builds
//! `blake3` with the features `pure`, `no_sse2`, `no_sse41`, `no_avx2` and
//! `no_avx512`: no C/assembly back ends, and every runtime CPUID detection
//! switched off, so only blake3's portable implementation ever runs (the
//! guest does not enable or save SIMD state). On hosted targets blake3 keeps
//! its runtime SIMD detection. The output is identical either way. The
//! `no_*` features are marked unstable by blake3: re-check them when
//! bumping it.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cap;
pub mod hash;
pub mod wire;

pub use cap::{Cap, DataContent, PAGE_SIZE, Page, PageCountMismatch, Pages, Slot};
pub use hash::{CapHash, hash_cnode, hash_data, hash_data_chunks};
pub use wire::{WireCap, WireError, WireSlot};

/// Largest inline data cap that may cross the wire, in bytes (16 MiB).
///
/// Enforced by [`WireCap::try_from`], [`wire::encode`] and [`wire::access`];
/// host-side [`Pages`] are not limited.
pub const MAX_DATA_LEN: usize = 16 * 1024 * 1024;

/// Most slots a CNode may have on the wire.
///
/// Enforced by [`WireCap::try_from`], [`wire::encode`] and [`wire::access`].
pub const MAX_SLOTS: usize = 4096;

#[cfg(test)]
mod tests;
