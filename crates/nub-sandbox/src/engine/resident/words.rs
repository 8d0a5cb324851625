//! The resident protocol's words as the host sees them (borrowed atomics
//! in guest memory), inline host calls, and the spin calibration.

use std::{
    hint::spin_loop,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nub_host_common::resident::{
    COMPLETION, DOORBELL, HOST_WAITING, HOSTCALL_ANSWER, HOSTCALL_ANSWER_DATA,
    HOSTCALL_INLINE_CALL, HOSTCALL_INLINE_DATA, HOSTCALL_OFFSET, HOSTCALL_REQUEST,
    HOSTCALL_RESPONSE, INLINE_ANSWER_MAX, INLINE_REQUEST_MAX, inline_answer, split_inline_call,
};

use crate::{
    error::{HyperlightError, Result, Violation},
    guest_side::{MemorySide, call_host},
    host_functions::HostFunctions,
};

/// The resident protocol's words (the control block's, and the doorbell and
/// completion in the ring headers), borrowed from guest memory.
pub(super) struct Words<'a> {
    pub(super) doorbell: &'a AtomicU64,
    pub(super) completion: &'a AtomicU64,
    pub(super) host_waiting: &'a AtomicU64,
    pub(super) hostcall_request: &'a AtomicU64,
    pub(super) hostcall_offset: &'a AtomicU64,
    pub(super) hostcall_inline_call: &'a AtomicU64,
    pub(super) hostcall_response: &'a AtomicU64,
    pub(super) hostcall_answer: &'a AtomicU64,
}

impl<'a> Words<'a> {
    pub(super) fn of(side: &'a MemorySide) -> Result<Self> {
        let at = |base: u64, offset: usize| {
            side.memory
                .atomic_u64(base + offset as u64)
                .map_err(HyperlightError::from)
        };
        let base = side.layout.control.start;
        let word = |offset: usize| at(base, offset);
        Ok(Self {
            // The two per-call words live in the ring headers.
            doorbell: at(side.layout.input_ring.start, DOORBELL)?,
            completion: completion_word(side)?,
            host_waiting: word(HOST_WAITING)?,
            hostcall_request: word(HOSTCALL_REQUEST)?,
            hostcall_offset: word(HOSTCALL_OFFSET)?,
            hostcall_inline_call: word(HOSTCALL_INLINE_CALL)?,
            hostcall_response: word(HOSTCALL_RESPONSE)?,
            hostcall_answer: word(HOSTCALL_ANSWER)?,
        })
    }
}

/// Serves an inline host call: copies its fn id, length and payload out of
/// the request's line once, checks the length, runs the host function and
/// writes a small answer into the response's line (a larger one as a frame
/// at `input_tail`). Returns the [`HOSTCALL_ANSWER`] word to publish.
pub(super) fn serve_inline(
    side: &MemorySide,
    words: &Words<'_>,
    input_tail: usize,
    host: &mut HostFunctions,
) -> Result<u64> {
    let (fn_id, len) = split_inline_call(words.hostcall_inline_call.load(Ordering::Acquire));
    if len > INLINE_REQUEST_MAX {
        return Err(HyperlightError::ProtocolViolation(
            Violation::InlineRequestTooLong {
                len,
                max: INLINE_REQUEST_MAX,
            },
        ));
    }
    let control = side.layout.control.start;
    let mut buffer = [0u8; INLINE_REQUEST_MAX];
    let payload = buffer.get_mut(..len).unwrap_or_default();
    side.memory
        .read(control + HOSTCALL_INLINE_DATA as u64, payload)
        .map_err(HyperlightError::from)?;
    let (status, answer) = call_host(host, fn_id, payload)?;
    if answer.len() <= INLINE_ANSWER_MAX {
        side.memory
            .write(control + HOSTCALL_ANSWER_DATA as u64, &answer)
            .map_err(HyperlightError::from)?;
        Ok(inline_answer(status as u32, answer.len()))
    } else {
        side.write_host_answer(fn_id, status, &answer, input_tail)?;
        Ok(0)
    }
}

/// The guest's completion word: the output ring header's `seq` word.
pub(super) fn completion_word(side: &MemorySide) -> Result<&AtomicU64> {
    side.memory
        .atomic_u64(side.layout.output_ring.start + COMPLETION as u64)
        .map_err(HyperlightError::from)
}

/// How many polls of a word take about `spin`, measured once per process
/// on this CPU with the loop the guest runs (an atomic load and a `pause`).
pub(crate) fn spin_iterations(spin: Duration) -> u64 {
    static NANOS_PER_POLL: OnceLock<f64> = OnceLock::new();
    let per_poll = *NANOS_PER_POLL.get_or_init(|| {
        const POLLS: u32 = 100_000;
        let word = AtomicU64::new(0);
        let start = Instant::now();
        for _ in 0..POLLS {
            if word.load(Ordering::Acquire) == u64::MAX {
                break;
            }
            spin_loop();
        }
        (start.elapsed().as_nanos() as f64 / f64::from(POLLS)).max(0.1)
    });
    let polls = spin.as_nanos() as f64 / per_poll;
    if polls >= u64::MAX as f64 {
        u64::MAX
    } else {
        (polls.ceil() as u64).max(1)
    }
}
