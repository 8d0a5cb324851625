//! The guest half of resident calls (docs/resident.md): between calls the
//! kernel spins on the doorbell word (in the input ring header) instead of
//! exiting, answers each new batch, publishes its completion, and exits
//! only to park (after a spin window with nothing to do) or to wake a
//! caller that went to sleep. Host calls go through the same words.
//!
//! The waiting logic is plain Rust over [`ControlWords`] and a [`Exits`]
//! implementation, so it is unit-tested on the host with threads standing
//! in for the host side.

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;

use nub_host_common::resident::{
    GUEST_STATE, HOST_WAITING, HOSTCALL_ANSWER, HOSTCALL_ANSWER_DATA, HOSTCALL_INLINE,
    HOSTCALL_INLINE_CALL, HOSTCALL_INLINE_DATA, HOSTCALL_OFFSET, HOSTCALL_REQUEST,
    HOSTCALL_RESPONSE, INLINE_ANSWER_MAX, INLINE_REQUEST_MAX, SPIN_ITERATIONS, STATE_PARKED,
    STATE_RUNNING, inline_call, split_answer,
};

/// Words of an inline request's payload.
const REQUEST_WORDS: usize = INLINE_REQUEST_MAX / 8;
/// Words of an inline answer's payload.
const ANSWER_WORDS: usize = INLINE_ANSWER_MAX / 8;

/// The resident protocol's words: the control block's and the two in the
/// ring headers.
#[derive(Debug, Clone, Copy)]
pub struct ControlWords<'a> {
    /// Host: latest batch.
    pub doorbell: &'a AtomicU64,
    /// Guest: latest batch answered.
    pub completion: &'a AtomicU64,
    /// Guest: running or parked.
    pub guest_state: &'a AtomicU64,
    /// Host: the caller sleeps.
    pub host_waiting: &'a AtomicU64,
    /// Guest: latest host call.
    pub hostcall_request: &'a AtomicU64,
    /// Guest: its frame's offset.
    pub hostcall_offset: &'a AtomicU64,
    /// Guest: an inline request's fn id and length.
    pub hostcall_inline_call: &'a AtomicU64,
    /// Guest: an inline request's payload, 8 bytes a word, little-endian.
    pub hostcall_inline_data: [&'a AtomicU64; REQUEST_WORDS],
    /// Host: latest host call answered.
    pub hostcall_response: &'a AtomicU64,
    /// Host: how it was answered (inline, or a frame in the input ring).
    pub hostcall_answer: &'a AtomicU64,
    /// Host: an inline answer's payload, 8 bytes a word, little-endian.
    pub hostcall_answer_data: [&'a AtomicU64; ANSWER_WORDS],
    /// Host: polls before parking.
    pub spin_iterations: &'a AtomicU64,
}

impl<'a> ControlWords<'a> {
    /// The words of a control block whose first word is `block`, with the
    /// doorbell and completion words at `doorbell` and `completion` (in the
    /// input and output ring headers: see [`nub_host_common::resident`]).
    ///
    /// # Safety
    ///
    /// `block` must point to a readable and writable, 8-byte aligned
    /// control block of [`nub_host_common::resident::CONTROL_BLOCK_SIZE`]
    /// bytes, and `doorbell` and `completion` to readable and writable,
    /// 8-byte aligned words outside it. All of them must live for `'a`, and
    /// while a [`ControlWords`] is used nothing may access them except
    /// through atomics (this guest's [`ControlWords`] and the host's).
    pub unsafe fn from_parts(block: *mut u64, doorbell: *mut u64, completion: *mut u64) -> Self {
        let word = |offset: usize| {
            // SAFETY: the offset is a word of the block (the ABI's
            // constants are multiples of 8 below CONTROL_BLOCK_SIZE), so the
            // pointer is aligned and inside the block, which the caller
            // promises is live for 'a and only accessed atomically.
            unsafe { AtomicU64::from_ptr(block.add(offset / 8)) }
        };
        Self {
            // SAFETY: aligned, live for 'a and only accessed atomically
            // (the caller's contract).
            doorbell: unsafe { AtomicU64::from_ptr(doorbell) },
            // SAFETY: as for the doorbell.
            completion: unsafe { AtomicU64::from_ptr(completion) },
            guest_state: word(GUEST_STATE),
            host_waiting: word(HOST_WAITING),
            hostcall_request: word(HOSTCALL_REQUEST),
            hostcall_offset: word(HOSTCALL_OFFSET),
            hostcall_inline_call: word(HOSTCALL_INLINE_CALL),
            hostcall_inline_data: core::array::from_fn(|i| word(HOSTCALL_INLINE_DATA + 8 * i)),
            hostcall_response: word(HOSTCALL_RESPONSE),
            hostcall_answer: word(HOSTCALL_ANSWER),
            hostcall_answer_data: core::array::from_fn(|i| word(HOSTCALL_ANSWER_DATA + 8 * i)),
            spin_iterations: word(SPIN_ITERATIONS),
        }
    }
}

/// The two exits resident mode uses.
pub trait Exits {
    /// Stop until the host wakes the vCPU (PARK).
    fn park(&mut self);
    /// Wake the host's blocked caller (NOTIFY).
    fn notify(&mut self);
}

/// Waits until `word` satisfies `done`: polls it up to the host's spin
/// budget, then parks. Announcing the park (`GUEST_STATE = PARKED`) and
/// re-reading the word pairs with the host's "store the word, then read
/// `GUEST_STATE`": either the guest sees the new value and does not park,
/// or the host sees the announcement and wakes the vCPU. Returns the value
/// that satisfied `done`.
pub fn wait_for(
    words: &ControlWords<'_>,
    exits: &mut dyn Exits,
    word: &AtomicU64,
    done: &dyn Fn(u64) -> bool,
) -> u64 {
    loop {
        let budget = words.spin_iterations.load(Ordering::Relaxed).max(1);
        let mut polls = 0u64;
        while polls < budget {
            let value = word.load(Ordering::Acquire);
            if done(value) {
                return value;
            }
            core::hint::spin_loop();
            polls += 1;
        }
        words.guest_state.store(STATE_PARKED, Ordering::SeqCst);
        let value = word.load(Ordering::SeqCst);
        if done(value) {
            words.guest_state.store(STATE_RUNNING, Ordering::SeqCst);
            return value;
        }
        exits.park();
        words.guest_state.store(STATE_RUNNING, Ordering::SeqCst);
    }
}

/// Waits for a doorbell other than `last` (the batch answered last).
pub fn wait_for_request(words: &ControlWords<'_>, exits: &mut dyn Exits, last: u64) -> u64 {
    wait_for(words, exits, words.doorbell, &|v| v != last)
}

/// Publishes that batch `seq` is answered, and wakes the caller if it went
/// to sleep (the store and the load of `HOST_WAITING` pair with the
/// caller's "raise `HOST_WAITING`, then re-read the words").
pub fn complete(words: &ControlWords<'_>, exits: &mut dyn Exits, seq: u64) {
    words.completion.store(seq, Ordering::SeqCst);
    if words.host_waiting.load(Ordering::SeqCst) != 0 {
        exits.notify();
    }
}

/// Makes host call number `seq` whose request frame is at data offset
/// `offset` of the output ring, and waits for the host's answer (then in
/// the input ring at its tail: the host answers a framed request with a
/// frame).
pub fn host_call(words: &ControlWords<'_>, exits: &mut dyn Exits, seq: u64, offset: u64) {
    words.hostcall_offset.store(offset, Ordering::Relaxed);
    announce(words, exits, seq);
}

/// How the host answered an inline host call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InlineAnswer {
    /// In the response's line: the raw status and the payload.
    Inline(u32, Vec<u8>),
    /// As a response frame at the input ring's tail (too large to inline).
    InRing,
    /// The answer word claims more bytes than its line holds.
    Bad,
}

/// Makes host call number `seq` to `fn_id` with `payload` (at most
/// [`INLINE_REQUEST_MAX`] bytes; longer ones are cut) carried in the
/// request's own line, and waits for the answer.
pub fn host_call_inline(
    words: &ControlWords<'_>,
    exits: &mut dyn Exits,
    seq: u64,
    fn_id: u32,
    payload: &[u8],
) -> InlineAnswer {
    let payload = payload.get(..INLINE_REQUEST_MAX).unwrap_or(payload);
    for (word, chunk) in words.hostcall_inline_data.iter().zip(payload.chunks(8)) {
        let mut bytes = [0u8; 8];
        if let Some(head) = bytes.get_mut(..chunk.len()) {
            head.copy_from_slice(chunk);
        }
        word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
    }
    words
        .hostcall_inline_call
        .store(inline_call(fn_id, payload.len()), Ordering::Relaxed);
    words
        .hostcall_offset
        .store(HOSTCALL_INLINE, Ordering::Relaxed);
    announce(words, exits, seq);
    match split_answer(words.hostcall_answer.load(Ordering::Acquire)) {
        None => InlineAnswer::InRing,
        Some((_, len)) if len > INLINE_ANSWER_MAX => InlineAnswer::Bad,
        Some((status, len)) => {
            let mut answer = Vec::with_capacity(len);
            for word in words.hostcall_answer_data {
                let bytes = word.load(Ordering::Relaxed).to_le_bytes();
                let take = len.saturating_sub(answer.len()).min(8);
                answer.extend_from_slice(bytes.get(..take).unwrap_or_default());
            }
            InlineAnswer::Inline(status, answer)
        }
    }
}

/// Publishes host call `seq` (whose request the caller wrote), wakes a
/// sleeping caller, and waits for the host's answer.
fn announce(words: &ControlWords<'_>, exits: &mut dyn Exits, seq: u64) {
    // Release (SeqCst): the request (frame or inline payload) and the
    // offset are visible to a host that sees the new request number.
    words.hostcall_request.store(seq, Ordering::SeqCst);
    if words.host_waiting.load(Ordering::SeqCst) != 0 {
        exits.notify();
    }
    // Acquire: the host's answer (inline, or its frame) is visible after.
    wait_for(words, exits, words.hostcall_response, &|v| v == seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{Arc, Mutex},
        vec::Vec,
    };

    /// A control block in host memory.
    fn block() -> Arc<[AtomicU64; 56]> {
        Arc::new(core::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn words(block: &[AtomicU64; 56]) -> ControlWords<'_> {
        let base = block.as_ptr().cast_mut().cast::<u64>();
        // SAFETY: the array is 8-byte aligned, 448 bytes long, lives as long
        // as the borrow, and is only accessed through atomics. Words 0 and 8
        // (offsets 0 and 64, unused by the block) stand in for the ring
        // headers' doorbell and completion.
        unsafe { ControlWords::from_parts(base, base, base.add(8)) }
    }

    /// Records exits; a park "sleeps" until the host side changed state.
    #[derive(Default)]
    struct Recorder {
        parks: usize,
        notifies: usize,
    }

    impl Exits for Recorder {
        fn park(&mut self) {
            self.parks += 1;
            std::thread::yield_now();
        }
        fn notify(&mut self) {
            self.notifies += 1;
        }
    }

    #[test]
    fn a_pending_request_is_taken_without_parking() {
        let b = block();
        let w = words(&b);
        w.spin_iterations.store(10, Ordering::Relaxed);
        w.doorbell.store(3, Ordering::SeqCst);
        let mut exits = Recorder::default();
        assert_eq!(wait_for_request(&w, &mut exits, 2), 3);
        assert_eq!(exits.parks, 0);
        assert_eq!(w.guest_state.load(Ordering::SeqCst), STATE_RUNNING);
    }

    #[test]
    fn an_idle_guest_parks_until_the_doorbell_rings() {
        let b = block();
        let host = Arc::clone(&b);
        words(&b).spin_iterations.store(5, Ordering::Relaxed);
        let ring = std::thread::spawn(move || {
            let w = words(&host);
            // Ring once the guest announced a park: the host's side of the
            // race (store the word, then look at the state).
            while w.guest_state.load(Ordering::SeqCst) != STATE_PARKED {
                std::thread::yield_now();
            }
            w.doorbell.store(1, Ordering::SeqCst);
        });
        let mut exits = Recorder::default();
        assert_eq!(wait_for_request(&words(&b), &mut exits, 0), 1);
        ring.join().unwrap();
        assert!(exits.parks >= 1, "it parked after its spin window");
    }

    #[test]
    fn completion_notifies_only_a_sleeping_caller() {
        let b = block();
        let w = words(&b);
        let mut exits = Recorder::default();
        complete(&w, &mut exits, 1);
        assert_eq!(exits.notifies, 0);
        w.host_waiting.store(1, Ordering::SeqCst);
        complete(&w, &mut exits, 2);
        assert_eq!(exits.notifies, 1);
        assert_eq!(w.completion.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_host_call_round_trip() {
        let b = block();
        let host = Arc::clone(&b);
        words(&b).spin_iterations.store(1000, Ordering::Relaxed);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_host = Arc::clone(&seen);
        let server = std::thread::spawn(move || {
            let w = words(&host);
            let mut served = 0;
            while served < 3 {
                let request = w.hostcall_request.load(Ordering::Acquire);
                if request != served {
                    let offset = w.hostcall_offset.load(Ordering::Acquire);
                    seen_by_host.lock().unwrap().push((request, offset));
                    served = request;
                    w.hostcall_response.store(request, Ordering::SeqCst);
                }
                std::thread::yield_now();
            }
        });
        let mut exits = Recorder::default();
        for seq in 1..=3u64 {
            host_call(&words(&b), &mut exits, seq, seq * 16);
        }
        server.join().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![(1, 16), (2, 32), (3, 48)]);
    }

    /// Serves one inline host call as the host does: echoes the payload
    /// inline with status 0 when `inline`, else says "in the ring".
    fn serve_inline_once(
        host: Arc<[AtomicU64; 56]>,
        answer: Option<u64>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let w = words(&host);
            while w.hostcall_request.load(Ordering::Acquire) != 1 {
                std::thread::yield_now();
            }
            assert_eq!(w.hostcall_offset.load(Ordering::Relaxed), HOSTCALL_INLINE);
            let (fn_id, len) = nub_host_common::resident::split_inline_call(
                w.hostcall_inline_call.load(Ordering::Relaxed),
            );
            assert_eq!(fn_id, 9);
            let mut payload = Vec::new();
            for word in w.hostcall_inline_data {
                payload.extend(word.load(Ordering::Relaxed).to_le_bytes());
            }
            payload.truncate(len);
            for (word, i) in w.hostcall_answer_data.iter().zip(0..) {
                word.store(
                    u64::from_le_bytes(core::array::from_fn(|b| {
                        payload.get(8 * i + b).copied().unwrap_or(0)
                    })),
                    Ordering::Relaxed,
                );
            }
            let word = answer.unwrap_or(nub_host_common::resident::inline_answer(0, len));
            w.hostcall_answer.store(word, Ordering::Relaxed);
            w.hostcall_response.store(1, Ordering::SeqCst);
            payload
        })
    }

    #[test]
    fn an_inline_host_call_round_trip() {
        for len in [
            0usize,
            1,
            7,
            8,
            9,
            INLINE_REQUEST_MAX,
            INLINE_REQUEST_MAX + 5,
        ] {
            let b = block();
            words(&b).spin_iterations.store(1000, Ordering::Relaxed);
            let server = serve_inline_once(Arc::clone(&b), None);
            let payload: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let sent = payload
                .get(..INLINE_REQUEST_MAX)
                .unwrap_or(&payload)
                .to_vec();
            let mut exits = Recorder::default();
            let answer = host_call_inline(&words(&b), &mut exits, 1, 9, &payload);
            assert_eq!(server.join().unwrap(), sent, "{len}");
            assert_eq!(answer, InlineAnswer::Inline(0, sent), "{len}");
        }
    }

    #[test]
    fn an_inline_host_call_answered_in_the_ring_or_lying_about_its_length() {
        for (word, want) in [
            (0, InlineAnswer::InRing),
            (
                nub_host_common::resident::inline_answer(0, INLINE_ANSWER_MAX + 1),
                InlineAnswer::Bad,
            ),
        ] {
            let b = block();
            words(&b).spin_iterations.store(1000, Ordering::Relaxed);
            let server = serve_inline_once(Arc::clone(&b), Some(word));
            let mut exits = Recorder::default();
            assert_eq!(host_call_inline(&words(&b), &mut exits, 1, 9, b"abc"), want);
            server.join().unwrap();
        }
    }
}
