//! The output ring as the host's call path reads it after a guest exit:
//! `nub_host_common::ring` and `rpc` together, the way `nub-sandbox`'s
//! `exec.rs` uses them (its own copying functions are crate-private, so
//! they are covered by exec.rs's unit tests, not reachable from here).
//!
//! The input is the output ring region (header + data area), 16-aligned as
//! in guest memory. Reserved header bytes 16..24 are the offset a guest
//! names for its host call (a u32 port value in exit mode, the control
//! block's u64 `HOSTCALL_OFFSET` word in resident mode); byte 24 is how
//! many responses the batch expects.
//!
//! - Responses: walk from `head` to `tail` as `read_responses` does, taking
//!   only `Response` frames, copying each body to a private aligned buffer
//!   and decoding it there. The walk is bounded by the batch size and by
//!   the data, frames advance strictly, the copy decodes exactly as the
//!   in-place body does, and every accepted response re-encodes and reads
//!   back the same through a fresh ring.
//! - Host call: the frame at the guest-chosen offset, bounded by the
//!   capacity (not the tail, as `read_host_call`), must be a
//!   `HostCallRequest` and decode as a request; its payload lies inside the
//!   private copy.
#![no_main]

use javm_cap::wire::AlignedVec;
use libfuzzer_sys::fuzz_target;
use nub_host_common::read_u64;
use nub_host_common::ring::{
    FRAME_HEADER_SIZE, FrameKind, RING_HEADER_SIZE, RingReader, RingWriter,
};
use nub_host_common::rpc::{
    Status, decode_request, decode_response, encode_response, response_size,
};

/// Whether `inner` lies within `outer`.
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// A body copied out of the ring into a buffer aligned for rkyv.
fn private_copy(body: &[u8]) -> AlignedVec<16> {
    let mut copy = AlignedVec::<16>::with_capacity(body.len());
    copy.extend_from_slice(body);
    copy
}

/// A response the host accepted, and whether its status may come from a
/// guest (host-only statuses and unknown ones are protocol violations).
fn guest_may_send(status: u32) -> bool {
    matches!(
        Status::try_from(status),
        Ok(Status::Ok | Status::GuestError | Status::UnknownFunction | Status::ResponseTooLarge)
    )
}

/// The response walk; returns the accepted `(status, payload)` pairs.
fn read_responses(reader: &RingReader<'_>, n: usize) -> Vec<(u32, Vec<u8>)> {
    let Ok((mut head, tail)) = reader.offsets() else {
        return Vec::new();
    };
    let mut responses = Vec::new();
    let mut steps = 0usize;
    while head < tail && responses.len() < n {
        steps += 1;
        assert!(
            steps <= reader.capacity() / FRAME_HEADER_SIZE + 1,
            "walk not bounded"
        );
        let Ok(frame) = reader.frame_at(head, tail) else {
            break;
        };
        if frame.kind != FrameKind::Response {
            break;
        }
        assert!(frame.next > head && frame.next <= tail);
        let copy = private_copy(frame.body);
        let copied = decode_response(&copy);
        // Bodies are 16-aligned in the region: decoding in place agrees.
        assert_eq!(copied, decode_response(frame.body));
        let Ok((status, payload)) = copied else {
            break;
        };
        assert!(within(&copy, payload), "payload points outside the copy");
        if !guest_may_send(status) {
            break;
        }
        responses.push((status, payload.to_vec()));
        head = frame.next;
    }
    assert!(responses.len() <= n);
    responses
}

/// Re-encodes accepted responses into a fresh ring and reads them back.
fn round_trip(responses: &[(u32, Vec<u8>)]) {
    let size: usize = responses
        .iter()
        .map(|(_, p)| response_size(p.len()) + 2 * FRAME_HEADER_SIZE)
        .sum();
    let mut region = AlignedVec::<16>::with_capacity(RING_HEADER_SIZE + size + FRAME_HEADER_SIZE);
    region.resize(RING_HEADER_SIZE + size + FRAME_HEADER_SIZE, 0);
    let mut w = RingWriter::new(&mut region).expect("big enough");
    w.reset();
    for (status, payload) in responses {
        w.push_with(FrameKind::Response, |body| {
            encode_response(body, *status, payload)
        })
        .expect("sized for every response");
    }
    let reader = w.reader();
    assert_eq!(read_responses(&reader, responses.len()), responses);
}

/// The host call at `offset`, bounded by the capacity.
fn read_host_call(reader: &RingReader<'_>, offset: usize) {
    let Ok(frame) = reader.frame_at(offset, reader.capacity()) else {
        return;
    };
    if frame.kind != FrameKind::HostCallRequest {
        return;
    }
    assert!(frame.next > offset && frame.next <= reader.capacity());
    let copy = private_copy(frame.body);
    let copied = decode_request(&copy);
    assert_eq!(copied, decode_request(frame.body));
    if let Ok((_, payload)) = copied {
        assert!(within(&copy, payload), "payload points outside the copy");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut region = AlignedVec::<16>::with_capacity(data.len());
    region.extend_from_slice(data);
    let Ok(reader) = RingReader::new(&region) else {
        return;
    };
    let host_call_offset = read_u64(&region, 16).unwrap_or(0) as usize;
    let batch = 1 + usize::from(region[24] % 64);
    let responses = read_responses(&reader, batch);
    round_trip(&responses);
    read_host_call(&reader, host_call_offset);
});
