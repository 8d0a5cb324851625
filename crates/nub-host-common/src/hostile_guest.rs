//! The hostile guest's fn ids (`guest-x86/guests/hostile`): a contract
//! shared by that guest and the hostile-guest suite (`tests/tests/hostile.rs`).
//! Each id attacks the ABI the way a compromised guest could; the guest's
//! own docs give the payloads and selectors. Keep them stable.

/// Returns the payload (a control).
pub const ECHO: u32 = 1;
/// A response frame whose length runs past the ring's end.
pub const FRAME_PAST_END: u32 = 2;
/// A response frame of valid length holding garbage, not rkyv.
pub const GARBAGE_BODY: u32 = 3;
/// An archived payload pointing outside its frame.
pub const PAYLOAD_OUTSIDE_FRAME: u32 = 4;
/// An output ring header with head past tail or tail past capacity.
pub const BAD_RING_HEADER: u32 = 5;
/// Exits DONE with no response written.
pub const NO_RESPONSE: u32 = 6;
/// A host call with a garbage frame or offset.
pub const GARBAGE_HOST_CALL: u32 = 7;
/// Calls a host function (u32 LE id) forever.
pub const HOST_CALLS_FOREVER: u32 = 8;
/// Writes the read-only boot page, or forges its own BootInfo copies.
pub const REWRITE_BOOT_INFO: u32 = 9;
/// Corrupts the directory header and table.
pub const CORRUPT_DIRECTORY: u32 = 10;
/// From now on answers PUT_CAP with a wrong non-sentinel hash.
pub const LIE_ON_PUT_CAP: u32 = 11;
/// From now on answers GET_CAP with a different (or malformed) cap.
pub const LIE_ON_GET_CAP: u32 = 12;
/// An occupied directory slot for the 32-byte hash given.
pub const FAKE_DIRECTORY_SLOT: u32 = 13;
/// Port I/O from 8-byte records (direction, size, port, value).
pub const PORT_IO: u32 = 14;
/// One privileged instruction, by selector.
pub const PRIVILEGED: u32 = 15;
/// Allocates until the heap is exhausted.
pub const EXHAUST_HEAP: u32 = 16;
/// Writes a pattern over every page it can spare, then answers.
pub const SCRIBBLE_EVERYTHING: u32 = 17;
/// Corrupts the log buffer as the selector says, then answers.
pub const CORRUPT_LOG: u32 = 18;
/// Resident: once the caller sleeps, waits (u32 LE spin windows, default
/// 1000), then answers `b"late"` and stores the completion without the
/// NOTIFY, and spins.
pub const LATE_COMPLETION: u32 = 19;
/// Resident: answers `b"answered"`, then spins with no call open.
pub const ANSWER_THEN_SPIN: u32 = 20;
/// Resident: answers `b"answered"`, then logs with no call open.
pub const ANSWER_THEN_LOG_FLOOD: u32 = 21;
/// Answers with [`BAD_STATUS`], then logs without end if run again.
pub const BAD_STATUS_THEN_LOG_FLOOD: u32 = 22;
/// Resident: bumps the host-call request word without a NOTIFY (selector
/// 0: in the call, once the caller sleeps; 1: after answering), or (2)
/// announces an inline host call whose length runs past its line.
pub const HOSTCALL_WITHOUT_NOTIFY: u32 = 23;
/// The status [`BAD_STATUS_THEN_LOG_FLOOD`] answers with (none the ABI
/// defines).
pub const BAD_STATUS: u32 = 0xBAD_5747;
/// The host function the hostile guest's init calls; answering
/// `b"spin"` makes init loop forever.
pub const INIT_HOST_FN: u32 = 0xF00D;
/// The `directory_va` that `REWRITE_BOOT_INFO` selector 1 forges.
pub const FORGED_DIRECTORY_VA: u64 = 0xdead_0000;
