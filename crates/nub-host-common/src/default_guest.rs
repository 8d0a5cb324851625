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
//!
//! The guest's own docs (`guest-x86/guests/default/src/main.rs`) give the
//! payloads in full.

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

/// Every id above with its function's name, in id order.
pub const ALL: [(u32, &str); 13] = [
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
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_to_thirteen_in_order() {
        let ids: Vec<u32> = ALL.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=13).collect::<Vec<u32>>());
    }
}
