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
//! | 0 | [`DIRECTORY_ADDRESS`] | guest | the capability directory's header address, written once at boot before READY, in both call modes (ABI version 5) |
//! | 128 | [`GUEST_STATE`] | guest | [`STATE_RUNNING`] or [`STATE_PARKED`] (about to exit through PARK) |
//! | 192 | [`HOST_WAITING`] | host | 1 while the caller is blocked (the guest must exit through NOTIFY to wake it), else 0 |
//! | 256 | [`HOSTCALL_REQUEST`] | guest | sequence number of the latest host call |
//! | 264 | [`HOSTCALL_OFFSET`] | guest | its request frame's data offset in the output ring, or [`HOSTCALL_INLINE`] |
//! | 272 | [`HOSTCALL_INLINE_CALL`] | guest | an inline request's fn id (bits 0–31) and payload length (bits 32–39) |
//! | 280 | [`HOSTCALL_INLINE_DATA`] | guest | an inline request's payload, up to [`INLINE_REQUEST_MAX`] bytes |
//! | 320 | [`HOSTCALL_RESPONSE`] | host | sequence number of the latest host call answered |
//! | 328 | [`HOSTCALL_ANSWER`] | host | [`ANSWER_INLINE`] with the status (bits 0–31) and length (bits 32–39) of an inline answer; 0: the answer is a frame at the input ring's tail |
//! | 336 | [`HOSTCALL_ANSWER_DATA`] | host | an inline answer's payload, up to [`INLINE_ANSWER_MAX`] bytes |
//! | 384 | [`SPIN_ITERATIONS`] | host | how many polls the guest spins before it parks |
//!
//! The two words every call crosses sit in the ring headers instead, on the
//! cache line the other side reads next anyway (ABI version 3; offset 64
//! of the block is unused since):
//!
//! | where | word | written by | meaning |
//! | --- | --- | --- | --- |
//! | input ring + [`DOORBELL`] | doorbell | host | sequence number of the latest request batch |
//! | output ring + [`COMPLETION`] | completion | guest | sequence number of the latest batch answered |
//!
//! The guest may write any word; the host never trusts one beyond "has it
//! changed", and validates every frame a word points it to.
//!
//! **Inline host calls** (ABI version 4): a host call whose payload fits in
//! [`INLINE_REQUEST_MAX`] bytes travels in the request word's own cache
//! line instead of a frame in the output ring, and an answer that fits in
//! [`INLINE_ANSWER_MAX`] bytes comes back in the response word's line, so
//! a small host call moves two cache lines, not six. The payload bytes are
//! written before the sequence word that announces them (Release) and read
//! after it (Acquire), by both sides.

/// Host: the latest request batch's sequence number. An offset from the
/// start of the **input ring** region (its header's
/// [`crate::ring::SEQ_OFFSET`] word), not of the control block.
pub const DOORBELL: usize = crate::ring::SEQ_OFFSET;
/// Guest: the sequence number of the latest batch answered. An offset from
/// the start of the **output ring** region (its header's
/// [`crate::ring::SEQ_OFFSET`] word), not of the control block.
pub const COMPLETION: usize = crate::ring::SEQ_OFFSET;
/// Guest: the capability directory's header address (`BootInfo`'s
/// `directory_va`), published once at boot before READY so that the host
/// knows it without a system call. Untrusted like every guest word: the
/// host's directory reader bounds-checks everything it reads from it.
pub const DIRECTORY_ADDRESS: usize = 0;
/// Guest: [`STATE_RUNNING`] or [`STATE_PARKED`].
pub const GUEST_STATE: usize = 128;
/// Host: 1 while the calling thread is blocked, else 0.
pub const HOST_WAITING: usize = 192;
/// Guest: the latest host call's sequence number.
pub const HOSTCALL_REQUEST: usize = 256;
/// Guest: the latest host call's request frame offset (output ring data).
pub const HOSTCALL_OFFSET: usize = 264;
/// Guest: an inline request's fn id (bits 0–31) and payload length (bits
/// 32–39).
pub const HOSTCALL_INLINE_CALL: usize = 272;
/// Guest: an inline request's payload bytes.
pub const HOSTCALL_INLINE_DATA: usize = 280;
/// [`HOSTCALL_OFFSET`] value for a request that is inline.
pub const HOSTCALL_INLINE: u64 = u64::MAX;
/// The largest payload an inline request carries (the rest of its line).
pub const INLINE_REQUEST_MAX: usize = HOSTCALL_RESPONSE - HOSTCALL_INLINE_DATA;
/// Host: the sequence number of the latest host call answered.
pub const HOSTCALL_RESPONSE: usize = 320;
/// Host: how the latest host call was answered: [`ANSWER_INLINE`] with the
/// status (bits 0–31) and payload length (bits 32–39), or 0 for a response
/// frame at the input ring's tail.
pub const HOSTCALL_ANSWER: usize = 328;
/// Host: an inline answer's payload bytes.
pub const HOSTCALL_ANSWER_DATA: usize = 336;
/// [`HOSTCALL_ANSWER`] bit: the answer is inline.
pub const ANSWER_INLINE: u64 = 1 << 63;
/// The largest payload an inline answer carries (the rest of its line).
pub const INLINE_ANSWER_MAX: usize = SPIN_ITERATIONS - HOSTCALL_ANSWER_DATA;

/// Packs an inline request's fn id and length ([`HOSTCALL_INLINE_CALL`]).
pub const fn inline_call(fn_id: u32, len: usize) -> u64 {
    fn_id as u64 | ((len as u64 & 0xff) << 32)
}

/// Unpacks [`HOSTCALL_INLINE_CALL`]: `(fn_id, len)`. The length is at most
/// 255; the reader checks it against [`INLINE_REQUEST_MAX`].
pub const fn split_inline_call(word: u64) -> (u32, usize) {
    (word as u32, ((word >> 32) & 0xff) as usize)
}

/// Packs an inline answer's status and length ([`HOSTCALL_ANSWER`]).
pub const fn inline_answer(status: u32, len: usize) -> u64 {
    ANSWER_INLINE | status as u64 | ((len as u64 & 0xff) << 32)
}

/// Unpacks [`HOSTCALL_ANSWER`]: `Some((status, len))` for an inline answer,
/// `None` for one in the input ring. The reader checks the length against
/// [`INLINE_ANSWER_MAX`].
pub const fn split_answer(word: u64) -> Option<(u32, usize)> {
    if word & ANSWER_INLINE == 0 {
        None
    } else {
        Some((word as u32, ((word >> 32) & 0xff) as usize))
    }
}
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

/// The control block as laid out in its page: each word the protocol uses
/// opens its own cache line (the rest of a line is padding, or an inline
/// payload). Both sides access it only through the word offsets above,
/// atomically; this declaration is what those offsets are checked against.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub struct ControlBlock {
    /// Offsets 0–127: unused since ABI 3 (the doorbell and the completion
    /// moved into the ring headers).
    pub unused: [u64; 16],
    /// [`GUEST_STATE`], then the rest of its line.
    pub guest_state: u64,
    /// Padding.
    pub guest_state_pad: [u64; 7],
    /// [`HOST_WAITING`], then the rest of its line.
    pub host_waiting: u64,
    /// Padding.
    pub host_waiting_pad: [u64; 7],
    /// [`HOSTCALL_REQUEST`].
    pub hostcall_request: u64,
    /// [`HOSTCALL_OFFSET`].
    pub hostcall_offset: u64,
    /// [`HOSTCALL_INLINE_CALL`].
    pub hostcall_inline_call: u64,
    /// [`HOSTCALL_INLINE_DATA`].
    pub hostcall_inline_data: [u8; INLINE_REQUEST_MAX],
    /// [`HOSTCALL_RESPONSE`].
    pub hostcall_response: u64,
    /// [`HOSTCALL_ANSWER`].
    pub hostcall_answer: u64,
    /// [`HOSTCALL_ANSWER_DATA`].
    pub hostcall_answer_data: [u8; INLINE_ANSWER_MAX],
    /// [`SPIN_ITERATIONS`], then the rest of its line.
    pub spin_iterations: u64,
    /// Padding.
    pub spin_iterations_pad: [u64; 7],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(ControlBlock, guest_state) == GUEST_STATE);
    assert!(offset_of!(ControlBlock, host_waiting) == HOST_WAITING);
    assert!(offset_of!(ControlBlock, hostcall_request) == HOSTCALL_REQUEST);
    assert!(offset_of!(ControlBlock, hostcall_offset) == HOSTCALL_OFFSET);
    assert!(offset_of!(ControlBlock, hostcall_inline_call) == HOSTCALL_INLINE_CALL);
    assert!(offset_of!(ControlBlock, hostcall_inline_data) == HOSTCALL_INLINE_DATA);
    assert!(offset_of!(ControlBlock, hostcall_response) == HOSTCALL_RESPONSE);
    assert!(offset_of!(ControlBlock, hostcall_answer) == HOSTCALL_ANSWER);
    assert!(offset_of!(ControlBlock, hostcall_answer_data) == HOSTCALL_ANSWER_DATA);
    assert!(offset_of!(ControlBlock, spin_iterations) == SPIN_ITERATIONS);
    assert!(size_of::<ControlBlock>() == CONTROL_BLOCK_SIZE);
};

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
    assert!(HOSTCALL_INLINE_CALL == HOSTCALL_OFFSET + 8);
    assert!(HOSTCALL_INLINE_DATA == HOSTCALL_INLINE_CALL + 8);
    assert!(HOSTCALL_ANSWER == HOSTCALL_RESPONSE + 8);
    assert!(HOSTCALL_ANSWER_DATA == HOSTCALL_ANSWER + 8);
    // Each inline payload ends its line.
    assert!(HOSTCALL_INLINE_DATA + INLINE_REQUEST_MAX == HOSTCALL_REQUEST + 64);
    assert!(HOSTCALL_ANSWER_DATA + INLINE_ANSWER_MAX == HOSTCALL_RESPONSE + 64);
    assert!(INLINE_REQUEST_MAX.is_multiple_of(8) && INLINE_ANSWER_MAX.is_multiple_of(8));
    assert!(CONTROL_BLOCK_SIZE <= crate::layout::PAGE_SIZE as usize);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_words_round_trip_and_mark_inline_answers() {
        for (fn_id, len) in [(0, 0), (7, INLINE_REQUEST_MAX), (u32::MAX, 255)] {
            assert_eq!(split_inline_call(inline_call(fn_id, len)), (fn_id, len));
        }
        for (status, len) in [(0, 0), (5, INLINE_ANSWER_MAX), (u32::MAX, 255)] {
            assert_eq!(
                split_answer(inline_answer(status, len)),
                Some((status, len))
            );
        }
        assert_eq!(split_answer(0), None, "0: the answer is in the ring");
    }

    #[test]
    fn a_length_the_guest_forged_is_at_most_255() {
        let (_, len) = split_inline_call(u64::MAX);
        assert_eq!(len, 255);
        assert!(matches!(split_answer(u64::MAX), Some((_, 255))));
    }
}
