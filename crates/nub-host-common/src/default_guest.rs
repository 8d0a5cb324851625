//! The default guest's fn ids (`guest-x86/guests/default`): a contract
//! shared by the guest, the integration tests, the CLI and the benches.
//! Keep them stable.
//!
//! | id | name | payload | result |
//! | --- | --- | --- | --- |
//! | 1 | `echo` | any bytes | the same bytes |
//! | 2 | `add` | u64 LE | new running total, u64 LE |
//! | 3 | `fail` | UTF-8 message | guest-function error with that message |
//! | 4 | `blake3` | any bytes | 32-byte blake3 hash |
//! | 5 | `host_echo` | u32 LE host fn id + bytes | the host function's answer |
//! | 6 | `cap_sum` | 32-byte cap hash | sum of the Data cap's bytes, u64 LE |
//! | 7 | `host_loop` | u32 LE host fn id + u32 LE count | sum of the u32 LE answers, u64 LE |
//! | 8 | `fault` | selector byte | never returns normally |
//! | 9 | `spin` | - | never returns |
//! | 10 | `scribble_directory` | selector byte (+ bytes) | corrupts the directory header (tests only) |
//! | 11 | `log` | level u8, flags u8, u32 LE count, message | logs the message count times; the count, u32 LE |
//! | 12 | `race_response` | u32 LE rounds | publishes its completion early, then rewrites the output ring while the host reads it (tests only, resident mode) |
//! | 13 | `taint` | selector u8 (+ u64 LE secret) | reports the SIMD/x87/segment registers a call finds, or leaves the secret in them and in every page it can spare (tests only: the pool's reset) |
//! | 18 | `fail_code` | u32 LE code + UTF-8 message | guest-function error with that code and message (`GuestError::coded`) |
//!
//! The guest's own docs (`guest-x86/guests/default/src/main.rs`) give the
//! payloads in full. Ids 14–17 are typed functions, declared in [`typed`]
//! (`nub_interface`'s wire form in the payloads).

/// Returns the payload.
pub const ECHO: u32 = 1;
/// Adds a u64 LE to a guest counter; returns the total.
pub const ADD: u32 = 2;
/// Returns a guest-function error with the payload as message.
pub const FAIL: u32 = 3;
/// blake3 of the payload.
pub const BLAKE3: u32 = 4;
/// Calls host function (u32 LE) with the rest of the payload.
pub const HOST_ECHO: u32 = 5;
/// Sums the bytes of a Data cap in the directory.
pub const CAP_SUM: u32 = 6;
/// Calls a host function N times, sums the u32 answers.
pub const HOST_LOOP: u32 = 7;
/// Faults as the selector byte says.
pub const FAULT: u32 = 8;
/// Spins forever.
pub const SPIN: u32 = 9;
/// Corrupts the directory header (tests only).
pub const SCRIBBLE_DIRECTORY: u32 = 10;
/// Logs a message N times at a level (then panics if asked).
pub const LOG: u32 = 11;
/// Publishes its completion early and rewrites its response frame while the
/// host copies it (tests only).
pub const RACE_RESPONSE: u32 = 12;
/// Reports the register state a call finds, or leaves a secret in the
/// registers and in every page the guest can spare (tests only). The
/// payload's first byte selects: 0 SSE/x87, 1 AVX upper halves, 2 AVX-512,
/// 3 FS/GS base, 4 segment selectors and RFLAGS (reports); 10..=14 the
/// same registers, 15 memory (taints, with a u64 LE secret after the
/// selector), 16 sets RFLAGS.AC (alignment checks: may fault). See
/// `guest-x86/guests/default/src/taint.rs`.
pub const TAINT: u32 = 13;
/// Returns a guest-function error with the payload's code (u32 LE) and the
/// rest as message (`GuestError::coded`).
pub const FAIL_CODE: u32 = 18;

/// Every id above with its function's name, in id order.
pub const ALL: [(u32, &str); 14] = [
    (ECHO, "echo"),
    (ADD, "add"),
    (FAIL, "fail"),
    (BLAKE3, "blake3"),
    (HOST_ECHO, "host_echo"),
    (CAP_SUM, "cap_sum"),
    (HOST_LOOP, "host_loop"),
    (FAULT, "fault"),
    (SPIN, "spin"),
    (SCRIBBLE_DIRECTORY, "scribble_directory"),
    (LOG, "log"),
    (RACE_RESPONSE, "race_response"),
    (TAINT, "taint"),
    (FAIL_CODE, "fail_code"),
];

/// The default guest's typed interface (ids 14–17 and the host function
/// 0x200 it calls), shared by the guest, the tests and the benches.
pub mod typed {
    use nub_interface::Never;
    use serde::{Deserialize, Serialize};

    /// Two numbers.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Pair {
        /// The first.
        pub a: u64,
        /// The second.
        pub b: u64,
    }

    /// [`AddPair`]'s error.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum MathError {
        /// The sum does not fit a u64.
        Overflow,
    }

    /// [`Double`]'s error, and [`AskHost`]'s when the host's fails.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum DoubleError {
        /// The host refused the number.
        Refused(alloc::string::String),
        /// The call to the host failed (its message).
        Call(alloc::string::String),
    }

    nub_interface::interface! {
        /// The default guest's typed functions.
        pub mod functions {
            /// `a + b`, or [`MathError::Overflow`].
            guest AddPair = 14 (Pair) -> u64 | MathError;
            /// Adds to a counter kept in the guest's state (not fn 2's);
            /// returns the new count.
            guest Count = 15 (u64) -> u64 | Never;
            /// The bytes back (the 4 KiB typed bench row).
            guest EchoBytes = 16 (nub_interface::Bytes) -> nub_interface::Bytes | Never;
            /// Asks the host's [`Double`] and returns its answer.
            guest AskHost = 17 (u64) -> u64 | DoubleError;
            /// What the host registers for [`AskHost`]: twice the number.
            host Double = 0x200 (u64) -> u64 | DoubleError;
        }
    }

    pub use functions::*;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ids_are_one_to_thirteen_then_eighteen_in_order() {
        let ids: Vec<u32> = ALL.iter().map(|(id, _)| *id).collect();
        let expected: Vec<u32> = (1..=13).chain([FAIL_CODE]).collect();
        assert_eq!(ids, expected);
        // 14–17 are the typed functions (0x200 the host function they use).
        assert_eq!(typed::IDS, &[14, 15, 16, 17, 0x200]);
    }
}
