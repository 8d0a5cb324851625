//! Typed interfaces between a nub host and its guest, declared once in a
//! crate both sides depend on (docs/interfaces.md).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! pub struct Pair { pub a: u64, pub b: u64 }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! pub enum MathError { Overflow }
//!
//! nub_interface::interface! {
//!     /// What the math guest offers, and what it needs from its host.
//!     pub mod math {
//!         /// a + b, or `Overflow`.
//!         guest Add = 40 (Pair) -> u64 | MathError;
//!         /// The host's clock.
//!         host Now = 0x100 (()) -> u64 | nub_interface::Never;
//!     }
//! }
//!
//! # fn main() {
//! use nub_interface::Function;
//! assert_eq!(math::Add::ID, 40);
//! assert_eq!(math::IDS, &[40, 0x100]);
//! // What travels: the signature, then the postcard-encoded argument.
//! let request = nub_interface::encode_args::<math::Add>(&Pair { a: 1, b: 2 }).unwrap();
//! let args = nub_interface::decode_args::<math::Add>(&request).unwrap();
//! let reply = nub_interface::encode_reply::<math::Add>(&args.a.checked_add(args.b).ok_or(MathError::Overflow));
//! assert_eq!(nub_interface::decode_reply::<math::Add>(&reply), Ok(Ok(3)));
//! # }
//! ```
//!
//! An interface is a module of functions, each a unit struct implementing
//! [`Function`]: its `u32` id (the id `call_raw` and the guest's dispatcher
//! use, unchanged), its name, its argument, result and error types, and a
//! [`Function::SIGNATURE`] computed from the declaration's text. An id
//! declared twice in one interface is a compile error.
//!
//! **Wire form** (inside a raw call's payload and its successful answer):
//! - request: the signature (`u64` little-endian), then the argument in
//!   postcard;
//! - reply: a tag byte, then: `0` the result in postcard; `1` the
//!   function's error in postcard; `2` the callee's own signature (`u64`
//!   LE): the two sides were built from different declarations; `3` the
//!   argument did not decode; `4` the callee could not encode its reply.
//!
//! Decoding is postcard's: bounds-checked, never panicking on any input; a
//! mismatch of either side's types is [`WireError`], never garbage.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use serde::{Serialize, de::DeserializeOwned};

/// A byte string that serializes as one length-prefixed block (serde's
/// `Vec<u8>` is a sequence of `u8`s, encoded and decoded byte by byte:
/// 30x slower for 4 KiB, docs/interfaces.md). Use it for blobs.
pub use serde_bytes::ByteBuf as Bytes;

/// The serde this crate encodes with (derives included), for an interface
/// crate that would rather not depend on serde itself: derive with
/// `nub_interface::serde::{Deserialize, Serialize}` and mark each type
/// `#[serde(crate = "nub_interface::serde")]`.
///
/// ```
/// use nub_interface::serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(crate = "nub_interface::serde")]
/// pub struct Pair { pub a: u64, pub b: u64 }
///
/// nub_interface::interface! {
///     pub mod math { guest Add = 1 (Pair) -> u64 | nub_interface::Never; }
/// }
/// # fn main() {
/// let request = nub_interface::encode_args::<math::Add>(&Pair { a: 1, b: 2 }).unwrap();
/// assert_eq!(request.len(), 8 + 2); // the signature, then two one-byte varints
/// # }
/// ```
pub use serde;

/// A function of an interface (declared with [`interface!`]).
pub trait Function: 'static {
    /// The fn id on the wire.
    const ID: u32;
    /// The name it was declared with.
    const NAME: &'static str;
    /// Who implements it: the guest (the host calls it) or the host (the
    /// guest calls it).
    const KIND: Kind;
    /// A digest of the declaration (kind, name, id and the types' text):
    /// equal on both sides exactly when both were built from the same
    /// declaration.
    const SIGNATURE: u64;
    /// The argument.
    type Args: Serialize + DeserializeOwned + 'static;
    /// The result.
    type Ret: Serialize + DeserializeOwned + 'static;
    /// The function's own error.
    type Err: Serialize + DeserializeOwned + 'static;
}

/// Who implements a [`Function`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The guest implements it; the host calls it.
    Guest,
    /// The host implements it; the guest calls it.
    Host,
}

/// The error type of a function that cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Never {}

impl core::fmt::Display for Never {
    fn fmt(&self, _: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {}
    }
}

/// Why a typed call's bytes did not carry what the declaration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The two sides were built from different declarations of the
    /// function (their signatures differ).
    Signature {
        /// This side's.
        expected: u64,
        /// The other side's.
        found: u64,
    },
    /// The argument did not decode as the declared type.
    BadArgs,
    /// The reply did not decode as the declared result or error.
    BadReply,
    /// A value could not be encoded.
    Encode,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Signature { expected, found } => write!(
                f,
                "host and guest were built from different declarations (signature {expected:#018x} here, {found:#018x} there)"
            ),
            Self::BadArgs => f.write_str("the argument does not decode as the declared type"),
            Self::BadReply => {
                f.write_str("the reply does not decode as the declared result or error")
            }
            Self::Encode => f.write_str("a value could not be encoded"),
        }
    }
}

impl core::error::Error for WireError {}

/// Reply tags (see the crate docs).
mod tag {
    pub const OK: u8 = 0;
    pub const ERR: u8 = 1;
    pub const SIGNATURE: u8 = 2;
    pub const BAD_ARGS: u8 = 3;
    pub const ENCODE: u8 = 4;
}

/// FNV-1a over `parts`, each followed by a 0 byte: the signature of a
/// declaration ([`Function::SIGNATURE`]).
pub const fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p].as_bytes();
        let mut i = 0;
        while i <= bytes.len() {
            let b = if i < bytes.len() { bytes[i] } else { 0 };
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        p += 1;
    }
    hash
}

/// Whether every id in `ids` is distinct (checked at compile time by
/// [`interface!`]).
pub const fn unique(ids: &[u32]) -> bool {
    let mut i = 0;
    while i < ids.len() {
        let mut j = i + 1;
        while j < ids.len() {
            if ids[i] == ids[j] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// The request payload of `F` for `args`: signature, then postcard.
pub fn encode_args<F: Function>(args: &F::Args) -> Result<Vec<u8>, WireError> {
    let out = Vec::from(F::SIGNATURE.to_le_bytes());
    postcard::to_extend(args, out).map_err(|_| WireError::Encode)
}

/// The request payload of `F` for `args`, a borrowed form of `F::Args`
/// that serializes exactly as `F::Args` does (a struct whose fields
/// borrow what the owned form would copy): signature, then postcard.
pub fn encode_args_as<F: Function, A: Serialize + ?Sized>(args: &A) -> Result<Vec<u8>, WireError> {
    let out = Vec::from(F::SIGNATURE.to_le_bytes());
    postcard::to_extend(args, out).map_err(|_| WireError::Encode)
}

/// Encodes the request payload of `F` for `args` straight into `out`,
/// without allocating; its length, or `None` when it does not fit in `out`
/// (or does not encode): then [`encode_args`] makes it.
pub fn encode_args_into<F: Function>(args: &F::Args, out: &mut [u8]) -> Option<usize> {
    let (signature, body) = out.split_first_chunk_mut::<8>()?;
    *signature = F::SIGNATURE.to_le_bytes();
    Some(8 + postcard::to_slice(args, body).ok()?.len())
}

/// The argument of a request payload of `F`, its signature checked.
pub fn decode_args<F: Function>(payload: &[u8]) -> Result<F::Args, WireError> {
    let (signature, rest) = split_u64(payload).ok_or(WireError::BadArgs)?;
    if signature != F::SIGNATURE {
        return Err(WireError::Signature {
            expected: F::SIGNATURE,
            found: signature,
        });
    }
    postcard::from_bytes(rest).map_err(|_| WireError::BadArgs)
}

/// The reply payload of `F` for its `result`.
pub fn encode_reply<F: Function>(result: &Result<F::Ret, F::Err>) -> Vec<u8> {
    let encoded = match result {
        Ok(ret) => postcard::to_extend(ret, alloc::vec![tag::OK]),
        Err(err) => postcard::to_extend(err, alloc::vec![tag::ERR]),
    };
    encoded.unwrap_or_else(|_| alloc::vec![tag::ENCODE])
}

/// Encodes the reply payload of `F` for `result` straight into `out`,
/// without allocating; the reply's length, or `None` when it does not fit
/// in `out` (or does not encode): then [`encode_reply`] makes it.
pub fn encode_reply_into<F: Function>(
    result: &Result<F::Ret, F::Err>,
    out: &mut [u8],
) -> Option<usize> {
    let (tag, body) = out.split_first_mut()?;
    let written = match result {
        Ok(ret) => {
            *tag = tag::OK;
            postcard::to_slice(ret, body).ok()?.len()
        }
        Err(err) => {
            *tag = tag::ERR;
            postcard::to_slice(err, body).ok()?.len()
        }
    };
    Some(1 + written)
}

/// The reply payload saying why a request of `F` was not served.
pub fn encode_refusal<F: Function>(why: WireError) -> Vec<u8> {
    match why {
        WireError::Signature { .. } => {
            let mut out = alloc::vec![tag::SIGNATURE];
            out.extend_from_slice(&F::SIGNATURE.to_le_bytes());
            out
        }
        WireError::BadArgs => alloc::vec![tag::BAD_ARGS],
        WireError::BadReply | WireError::Encode => alloc::vec![tag::ENCODE],
    }
}

/// Serves one request of `F` with `f`: decodes the argument (signature
/// checked), runs `f`, encodes its result; a request that does not decode
/// gets a refusal instead. What both sides' dispatchers run.
pub fn serve<F: Function>(
    payload: &[u8],
    f: impl FnOnce(F::Args) -> Result<F::Ret, F::Err>,
) -> Vec<u8> {
    match decode_args::<F>(payload) {
        Ok(args) => encode_reply::<F>(&f(args)),
        Err(why) => encode_refusal::<F>(why),
    }
}

/// The result or error a reply payload of `F` carries, or why it carries
/// neither.
pub fn decode_reply<F: Function>(payload: &[u8]) -> Result<Result<F::Ret, F::Err>, WireError> {
    let (&tag, rest) = payload.split_first().ok_or(WireError::BadReply)?;
    match tag {
        tag::OK => postcard::from_bytes(rest)
            .map(Ok)
            .map_err(|_| WireError::BadReply),
        tag::ERR => postcard::from_bytes(rest)
            .map(Err)
            .map_err(|_| WireError::BadReply),
        tag::SIGNATURE => match split_u64(rest) {
            Some((found, [])) => Err(WireError::Signature {
                expected: F::SIGNATURE,
                found,
            }),
            _ => Err(WireError::BadReply),
        },
        tag::BAD_ARGS => Err(WireError::BadArgs),
        tag::ENCODE => Err(WireError::Encode),
        _ => Err(WireError::BadReply),
    }
}

/// A little-endian `u64` and the bytes after it.
fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// [`Kind`] from the word an [`interface!`] declaration starts with.
#[doc(hidden)]
#[macro_export]
macro_rules! __kind {
    (guest) => {
        $crate::Kind::Guest
    };
    (host) => {
        $crate::Kind::Host
    };
}

/// Declares an interface: a module holding one unit struct per function,
/// each implementing [`Function`], and `IDS`, every id declared.
///
/// ```text
/// interface! {
///     pub mod NAME {
///         guest Name = ID (Args) -> Ret | Err;   // the guest implements it
///         host Name = ID (Args) -> Ret | Err;    // the host implements it
///     }
/// }
/// ```
///
/// Types are resolved inside the generated module, which imports the
/// enclosing module's names (`use super::*`). An id declared twice is a
/// compile error; so is a kind other than `guest` or `host`.
#[macro_export]
macro_rules! interface {
    (
        $(#[$meta:meta])*
        $vis:vis mod $module:ident {
            $(
                $(#[$fmeta:meta])*
                $kind:ident $name:ident = $id:literal ($args:ty) -> $ret:ty | $err:ty;
            )*
        }
    ) => {
        $(#[$meta])*
        $vis mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$fmeta])*
                #[derive(Debug, Clone, Copy, PartialEq, Eq)]
                pub struct $name;

                impl $crate::Function for $name {
                    const ID: u32 = $id;
                    const NAME: &'static str = stringify!($name);
                    const KIND: $crate::Kind = $crate::__kind!($kind);
                    const SIGNATURE: u64 = $crate::fingerprint(&[
                        stringify!($kind),
                        stringify!($name),
                        stringify!($id),
                        stringify!($args),
                        stringify!($ret),
                        stringify!($err),
                    ]);
                    type Args = $args;
                    type Ret = $ret;
                    type Err = $err;
                }
            )*

            /// Every id this interface declares, in declaration order.
            pub const IDS: &[u32] = &[$($id),*];

            const _: () = assert!(
                $crate::unique(IDS),
                concat!("an id is declared twice in interface `", stringify!($module), "`")
            );
        }
    };
}

#[cfg(test)]
mod tests {
    use alloc::{string::String, vec};

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Pair {
        a: u64,
        b: u64,
    }

    interface! {
        mod one {
            guest Add = 1 (Pair) -> u64 | String;
            host Log = 2 (String) -> () | Never;
        }
    }

    interface! {
        mod other {
            guest Add = 1 (Pair) -> u32 | String;
        }
    }

    #[test]
    fn a_call_round_trips_and_errors_are_the_functions_own() {
        let req = encode_args::<one::Add>(&Pair { a: 2, b: 3 }).unwrap();
        let reply = serve::<one::Add>(&req, |p| Ok(p.a + p.b));
        assert_eq!(decode_reply::<one::Add>(&reply), Ok(Ok(5)));
        let reply = serve::<one::Add>(&req, |_| Err("no".into()));
        assert_eq!(decode_reply::<one::Add>(&reply), Ok(Err("no".into())));
        assert_eq!(one::Log::KIND, Kind::Host);
        assert_eq!(one::IDS, &[1, 2]);
    }

    #[test]
    fn a_reply_encoded_in_place_is_the_same_reply() {
        let mut buf = [0u8; 64];
        for result in [Ok(5), Err(String::from("no"))] {
            let n = encode_reply_into::<one::Add>(&result, &mut buf).unwrap();
            assert_eq!(&buf[..n], &encode_reply::<one::Add>(&result)[..]);
            assert_eq!(decode_reply::<one::Add>(&buf[..n]), Ok(result));
        }
        // Too small for the tag, or for the value: the caller falls back.
        assert_eq!(encode_reply_into::<one::Add>(&Ok(5), &mut []), None);
        let long = Err("x".repeat(100));
        assert_eq!(encode_reply_into::<one::Add>(&long, &mut buf), None);
    }

    #[test]
    fn different_declarations_are_a_typed_error_not_garbage() {
        assert_ne!(one::Add::SIGNATURE, other::Add::SIGNATURE);
        let req = encode_args::<one::Add>(&Pair { a: 2, b: 3 }).unwrap();
        // The guest was built with `other`: it refuses the request...
        let reply = serve::<other::Add>(&req, |p| Ok((p.a + p.b) as u32));
        // ...and the host learns why.
        assert_eq!(
            decode_reply::<one::Add>(&reply),
            Err(WireError::Signature {
                expected: one::Add::SIGNATURE,
                found: other::Add::SIGNATURE,
            })
        );
    }

    #[test]
    fn hostile_bytes_decode_to_errors() {
        for bytes in [
            &[][..],
            &[0],
            &[1, 0xFF],
            &[2, 1, 2],
            &[9],
            &[
                0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            ],
        ] {
            assert!(decode_reply::<one::Add>(bytes).is_err(), "{bytes:?}");
        }
        let mut req = vec![0u8; 8];
        req[..8].copy_from_slice(&one::Add::SIGNATURE.to_le_bytes());
        req.push(0xFF);
        assert_eq!(decode_args::<one::Add>(&req), Err(WireError::BadArgs));
        assert_eq!(decode_args::<one::Add>(&[1, 2, 3]), Err(WireError::BadArgs));
        assert_eq!(
            decode_reply::<one::Add>(&encode_refusal::<one::Add>(WireError::BadArgs)),
            Err(WireError::BadArgs)
        );
    }
}
