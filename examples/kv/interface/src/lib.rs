//! The kv service's interface, shared by its host (`nub-kv`) and its guest
//! (`nub-kv-guest`): the functions, their types and the service's error.
#![no_std]

extern crate alloc;

use alloc::{string::String, vec::Vec};

use nub_interface::{Bytes, Never};
use serde::{Deserialize, Serialize};

/// The largest value the store accepts, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;

/// A stored value, as [`kv::Get`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The value.
    pub value: Bytes,
    /// When it was written: the host's [`kv::Now`] then.
    pub time: u64,
}

/// Why a kv function failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// No value is stored under the key.
    NotFound,
    /// The value is longer than [`MAX_VALUE`] (its length).
    TooLarge(u64),
    /// The guest holds no Data cap with that hash.
    NoSuchCap,
    /// The host's clock could not be read (why).
    Clock(String),
}

nub_interface::interface! {
    /// The kv guest's functions (ids 1–6) and the one it imports (0x100).
    pub mod kv {
        /// Stores a value under a key; returns the value it replaced.
        guest Put = 1 ((String, Bytes)) -> Option<Bytes> | KvError;
        /// The value under a key.
        guest Get = 2 (String) -> Stored | KvError;
        /// Removes a key; returns its value.
        guest Delete = 3 (String) -> Bytes | KvError;
        /// The keys that start with a prefix, sorted.
        guest List = 4 (String) -> Vec<String> | KvError;
        /// Put, the value being the Data cap with this hash (`put_cap`).
        guest Import = 5 ((String, [u8; 32])) -> Option<Bytes> | KvError;
        /// Never returns: a runaway call, to show per-call deadlines.
        guest Spin = 6 (()) -> () | Never;
        /// The host's clock, stamped on every write.
        host Now = 0x100 (()) -> u64 | Never;
    }
}
