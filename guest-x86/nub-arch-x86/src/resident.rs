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

use nub_host_common::resident::{
    GUEST_STATE, HOST_WAITING, HOSTCALL_OFFSET, HOSTCALL_REQUEST, HOSTCALL_RESPONSE,
    SPIN_ITERATIONS, STATE_PARKED, STATE_RUNNING,
};

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
    /// Host: latest host call answered.
    pub hostcall_response: &'a AtomicU64,
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
            hostcall_response: word(HOSTCALL_RESPONSE),
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
/// the input ring at its tail).
pub fn host_call(words: &ControlWords<'_>, exits: &mut dyn Exits, seq: u64, offset: u64) {
    words.hostcall_offset.store(offset, Ordering::Relaxed);
    // Release (SeqCst): the frame and the offset are visible to a host that
    // sees the new request number.
    words.hostcall_request.store(seq, Ordering::SeqCst);
    if words.host_waiting.load(Ordering::SeqCst) != 0 {
        exits.notify();
    }
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
}
