//! The resident call protocol's control block: the words through which a
//! host thread and a vCPU that never leaves the guest hand calls to each
//! other (`CallMode::Resident` in nub-sandbox; docs/resident.md has the
//! whole protocol, its orderings and its races).
//!
//! The block is one page of guest memory ([`crate::layout::MemoryLayout::control`]),
//! RW for the guest. Each word sits on its own 64-byte cache line so the two
//! sides never contend for a line they do not both need. All words are
//! little-endian `u64`s accessed atomically by both sides:
//!
//! | offset | word | written by | meaning |
//! | --- | --- | --- | --- |
//! | 128 | [`GUEST_STATE`] | guest | [`STATE_RUNNING`] or [`STATE_PARKED`] (about to exit through PARK) |
//! | 192 | [`HOST_WAITING`] | host | 1 while the caller is blocked (the guest must exit through NOTIFY to wake it), else 0 |
//! | 256 | [`HOSTCALL_REQUEST`] | guest | sequence number of the latest host call |
//! | 264 | [`HOSTCALL_OFFSET`] | guest | its request frame's data offset in the output ring |
//! | 320 | [`HOSTCALL_RESPONSE`] | host | sequence number of the latest host call answered |
//! | 384 | [`SPIN_ITERATIONS`] | host | how many polls the guest spins before it parks |
//!
//! The two words every call crosses sit in the ring headers instead, on the
//! cache line the other side reads next anyway (ABI version 3; offsets 0
//! and 64 of the block are unused since):
//!
//! | where | word | written by | meaning |
//! | --- | --- | --- | --- |
//! | input ring + [`DOORBELL`] | doorbell | host | sequence number of the latest request batch |
//! | output ring + [`COMPLETION`] | completion | guest | sequence number of the latest batch answered |
//!
//! The guest may write any word; the host never trusts one beyond "has it
//! changed", and validates every frame a word points it to.

/// Host: the latest request batch's sequence number. An offset from the
/// start of the **input ring** region (its header's
/// [`crate::ring::SEQ_OFFSET`] word), not of the control block.
pub const DOORBELL: usize = crate::ring::SEQ_OFFSET;
/// Guest: the sequence number of the latest batch answered. An offset from
/// the start of the **output ring** region (its header's
/// [`crate::ring::SEQ_OFFSET`] word), not of the control block.
pub const COMPLETION: usize = crate::ring::SEQ_OFFSET;
/// Guest: [`STATE_RUNNING`] or [`STATE_PARKED`].
pub const GUEST_STATE: usize = 128;
/// Host: 1 while the calling thread is blocked, else 0.
pub const HOST_WAITING: usize = 192;
/// Guest: the latest host call's sequence number.
pub const HOSTCALL_REQUEST: usize = 256;
/// Guest: the latest host call's request frame offset (output ring data).
pub const HOSTCALL_OFFSET: usize = 264;
/// Host: the sequence number of the latest host call answered.
pub const HOSTCALL_RESPONSE: usize = 320;
/// Host: polls the guest spins on a word before it parks.
pub const SPIN_ITERATIONS: usize = 384;
/// Bytes of the block in use (the rest of the page is reserved).
pub const CONTROL_BLOCK_SIZE: usize = 448;

/// [`GUEST_STATE`]: the guest runs or spins.
pub const STATE_RUNNING: u64 = 0;
/// [`GUEST_STATE`]: the guest has stopped spinning and is about to exit
/// (or has exited) through PARK; wake the vCPU thread after changing a word
/// it waits on.
pub const STATE_PARKED: u64 = 1;

/// [`crate::boot::BootInfo::flags`] bit: the sandbox runs in resident mode
/// (the guest serves calls from the control block instead of exiting
/// through DONE).
pub const BOOT_FLAG_RESIDENT: u32 = 1;

const _: () = {
    let words = [
        GUEST_STATE,
        HOST_WAITING,
        HOSTCALL_REQUEST,
        HOSTCALL_RESPONSE,
        SPIN_ITERATIONS,
    ];
    let mut i = 0;
    while i < words.len() {
        assert!(words[i].is_multiple_of(64), "each word starts a cache line");
        assert!(words[i] + 8 <= CONTROL_BLOCK_SIZE);
        i += 1;
    }
    assert!(HOSTCALL_OFFSET == HOSTCALL_REQUEST + 8);
    assert!(CONTROL_BLOCK_SIZE <= crate::layout::PAGE_SIZE as usize);
};
