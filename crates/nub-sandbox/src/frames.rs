//! Guest-written frames, as the host reads them.
//!
//! Everything read from guest memory here is untrusted. Guest-written
//! frames are copied out of guest memory once and parsed from the private
//! copy, never from the live mapping (so a guest that keeps running while
//! the host reads cannot change bytes between a check and their use): the
//! ring header (32 bytes) first, then each frame's 16-byte header, then —
//! after its kind and length are checked against the ring's bounds — exactly
//! the body it announces, into a 16-byte-aligned buffer for validated rkyv
//! access.
//!
//! The parsing is in small functions over [`RingBytes`] (guest memory in
//! production, a byte slice in the unit tests): [`read_host_call`],
//! [`read_responses`], [`response_result`] and [`batch_results`].

use std::mem::offset_of;

use nub_host_common::{
    layout::Region,
    read_u64,
    ring::{self, FRAME_ALIGN, FRAME_HEADER_SIZE, FrameKind, RING_HEADER_SIZE, RingHeader},
    rpc::{self, Status},
};
use nub_hypervisor::GuestMemory;
use rkyv::util::AlignedVec;

use crate::{
    error::{HyperlightError, Result},
    violation::{Frame, Violation},
};

/// One answer read from the output ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawResponse {
    pub(crate) status: u32,
    pub(crate) payload: Vec<u8>,
}

pub(crate) fn violation(reason: Violation) -> HyperlightError {
    HyperlightError::ProtocolViolation(reason)
}

/// A ring the guest wrote, as the host reads it: by copying bytes out.
pub(crate) trait RingBytes {
    /// Size of the data area (the region minus the ring header).
    fn capacity(&self) -> usize;
    /// Copies the ring header.
    fn read_header(&self, out: &mut [u8; RING_HEADER_SIZE]) -> Result<()>;
    /// Copies `out.len()` bytes starting at data offset `offset`; fails if
    /// they are not all inside the data area.
    fn read_data(&self, offset: usize, out: &mut [u8]) -> Result<()>;
}

/// A ring in guest memory.
pub(crate) struct GuestRing<'a> {
    pub(crate) memory: &'a GuestMemory,
    pub(crate) region: Region,
}

impl RingBytes for GuestRing<'_> {
    fn capacity(&self) -> usize {
        ring::data_capacity(self.region.size as usize)
    }

    fn read_header(&self, out: &mut [u8; RING_HEADER_SIZE]) -> Result<()> {
        self.memory
            .read(self.region.start, out)
            .map_err(HyperlightError::from)
    }

    fn read_data(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(out.len());
        if end.is_none_or(|end| end > self.capacity()) {
            return Err(violation(Violation::OutsideRing {
                offset,
                len: out.len(),
            }));
        }
        let addr = self.region.start + (RING_HEADER_SIZE + offset) as u64;
        self.memory.read(addr, out).map_err(HyperlightError::from)
    }
}

/// A ring region (header included) in host memory: the unit tests' rings.
impl RingBytes for [u8] {
    fn capacity(&self) -> usize {
        ring::data_capacity(self.len())
    }

    fn read_header(&self, out: &mut [u8; RING_HEADER_SIZE]) -> Result<()> {
        let header = self
            .first_chunk::<RING_HEADER_SIZE>()
            .ok_or_else(|| violation(Violation::RingTooSmall))?;
        out.copy_from_slice(header);
        Ok(())
    }

    fn read_data(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let src = RING_HEADER_SIZE
            .checked_add(offset)
            .and_then(|start| self.get(start..start.checked_add(out.len())?))
            .ok_or_else(|| {
                violation(Violation::OutsideRing {
                    offset,
                    len: out.len(),
                })
            })?;
        out.copy_from_slice(src);
        Ok(())
    }
}

/// `(head, tail)` from a copied ring header: `head <= tail <= capacity`.
fn ring_offsets(header: &[u8; RING_HEADER_SIZE], capacity: usize) -> Result<(usize, usize)> {
    ring::header_offsets(header, capacity).map_err(|_| {
        violation(Violation::BadRingOffsets {
            head: read_u64(header, offset_of!(RingHeader, head)).unwrap_or(u64::MAX),
            tail: read_u64(header, offset_of!(RingHeader, tail)).unwrap_or(u64::MAX),
            capacity,
        })
    })
}

/// A guest-written frame, copied out.
#[derive(Debug)]
pub(crate) struct CopiedFrame {
    /// The body, in a private buffer aligned for rkyv.
    pub(crate) body: AlignedVec<16>,
    /// Data offset of the next frame.
    pub(crate) next: usize,
}

/// Copies the frame at data offset `offset` out of `ring`; it must be of
/// `kind` and end by `bound` (clamped to the capacity). Only the 16-byte
/// frame header is read before its length is checked, so a frame that
/// announces more than the ring holds costs no copy.
pub(crate) fn copy_frame<R: RingBytes + ?Sized>(
    ring: &R,
    offset: usize,
    bound: usize,
    frame: Frame,
) -> Result<CopiedFrame> {
    let bound = bound.min(ring.capacity());
    let outside = || {
        violation(Violation::FramePastEnd {
            frame,
            offset,
            bound,
        })
    };
    if !offset.is_multiple_of(FRAME_ALIGN) {
        return Err(violation(Violation::FrameMisaligned { frame, offset }));
    }
    // Only a header that lies inside the bound is read at all.
    if offset
        .checked_add(FRAME_HEADER_SIZE)
        .is_none_or(|end| end > bound)
    {
        return Err(outside());
    }
    let mut header = [0u8; FRAME_HEADER_SIZE];
    ring.read_data(offset, &mut header)?;
    let span = ring::frame_span(offset, &header, bound).map_err(|e| match e {
        ring::RingError::UnknownKind { kind: found } => violation(Violation::WrongFrameKind {
            frame,
            offset,
            found,
        }),
        _ => outside(),
    })?;
    if span.kind != frame.kind() {
        return Err(violation(Violation::WrongFrameKind {
            frame,
            offset,
            found: span.kind as u32,
        }));
    }
    let mut body = AlignedVec::<16>::with_capacity(span.body.len());
    body.resize(span.body.len(), 0);
    ring.read_data(span.body.start, &mut body)?;
    let next = span.next;
    Ok(CopiedFrame { body, next })
}

/// Copies the host-call request frame at data offset `offset` (the value of
/// the guest's HOST_CALL exit) out of the output ring.
pub(crate) fn read_host_call<R: RingBytes + ?Sized>(
    ring: &R,
    offset: usize,
) -> Result<CopiedFrame> {
    copy_frame(ring, offset, ring.capacity(), Frame::HostCallRequest)
}

/// `(fn_id, payload)` of a copied host-call request body (of the frame at
/// data offset `offset`).
pub(crate) fn parse_host_call(body: &[u8], offset: usize) -> Result<(u32, &[u8])> {
    rpc::decode_request(body).map_err(|_| {
        violation(Violation::BadBody {
            frame: Frame::HostCallRequest,
            offset,
        })
    })
}

/// Reads up to `n` responses from the output ring, in order, copying each
/// frame out. Fewer come back only when the guest's output ring filled up:
/// the dispatcher answers every request, with a minimal `ResponseTooLarge`
/// frame when its result does not fit, so a missing response while the ring
/// still has room for that frame is a protocol violation.
pub(crate) fn read_responses<R: RingBytes + ?Sized>(
    ring: &R,
    n: usize,
) -> Result<Vec<RawResponse>> {
    let mut header = [0u8; RING_HEADER_SIZE];
    ring.read_header(&mut header)?;
    let (mut head, tail) = ring_offsets(&header, ring.capacity())?;
    let smallest = ring::frame_size(rpc::response_size(0)).unwrap_or(usize::MAX);
    let room = ring.capacity().saturating_sub(tail);
    let mut responses = Vec::with_capacity(n.min(1024));
    while head < tail && responses.len() < n {
        let frame = copy_frame(ring, head, tail, Frame::Response)?;
        let (status, payload) = rpc::decode_response(&frame.body).map_err(|_| {
            violation(Violation::BadBody {
                frame: Frame::Response,
                offset: head,
            })
        })?;
        responses.push(RawResponse {
            status,
            payload: payload.to_vec(),
        });
        head = frame.next;
    }
    if responses.len() < n && room >= smallest {
        return Err(violation(Violation::MissingResponses {
            expected: n,
            found: responses.len(),
        }));
    }
    Ok(responses)
}

/// Turns the guest's answer to call `fn_id` into the call's result.
/// Statuses that only the host may send, or unknown ones, are protocol
/// violations. `capacity` is the output ring's data capacity (reported with
/// a result that did not fit).
pub(crate) fn response_result(
    fn_id: u32,
    response: RawResponse,
    capacity: usize,
) -> Result<Vec<u8>> {
    match rpc::response_outcome(response.status, &response.payload) {
        rpc::Outcome::Ok(_) => Ok(response.payload),
        rpc::Outcome::GuestError { code, message } => Err(HyperlightError::GuestFunctionError {
            fn_id,
            code,
            message: String::from_utf8_lossy(message).into_owned(),
        }),
        rpc::Outcome::UnknownFunction => Err(HyperlightError::UnknownFunction { fn_id }),
        rpc::Outcome::ResponseTooLarge { needed } => Err(HyperlightError::ResponseTooLarge {
            needed: needed.unwrap_or(0),
            capacity,
        }),
        rpc::Outcome::Invalid(status) => Err(violation(Violation::BadStatus { fn_id, status })),
    }
}

/// The results of a batch, in call order: each call's response through
/// [`response_result`]; calls the guest wrote no response for (its output
/// ring filled up) get [`HyperlightError::ResponseTooLarge`].
pub(crate) fn batch_results(
    fn_ids: impl IntoIterator<Item = u32>,
    responses: Vec<RawResponse>,
    capacity: usize,
) -> Vec<Result<Vec<u8>>> {
    let mut responses = responses.into_iter();
    fn_ids
        .into_iter()
        .map(|fn_id| match responses.next() {
            Some(r) => response_result(fn_id, r, capacity),
            None => Err(HyperlightError::ResponseTooLarge {
                needed: 0,
                capacity,
            }),
        })
        .collect()
}

/// One frame (header + body + padding) of `kind` holding an rkyv response
/// `(status, payload)`, if it fits in `room` bytes.
pub(crate) fn encode_frame(
    kind: FrameKind,
    status: Status,
    payload: &[u8],
    room: usize,
) -> Option<Vec<u8>> {
    let size = ring::frame_size(rpc::response_size(payload.len()))?;
    if size > room {
        return None;
    }
    let mut frame = vec![0u8; size];
    ring::write_frame(&mut frame, kind, |body| {
        rpc::encode_response(body, status as u32, payload)
    })
    .ok()?;
    Some(frame)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use nub_host_common::ring::RingWriter;

    use super::*;

    /// A ring region (header included) of `size` bytes, empty.
    fn ring(size: usize) -> Vec<u8> {
        let mut region = vec![0u8; size];
        RingWriter::new(&mut region).unwrap().reset();
        region
    }

    /// Appends a response frame; returns the tail after it.
    fn push_response(region: &mut [u8], status: u32, payload: &[u8]) -> usize {
        let mut w = RingWriter::new(region).unwrap();
        w.push_with(FrameKind::Response, |body| {
            rpc::encode_response(body, status, payload)
        })
        .unwrap();
        w.reader().offsets().unwrap().1
    }

    fn push_host_call(region: &mut [u8], fn_id: u32, payload: &[u8]) {
        let mut w = RingWriter::new(region).unwrap();
        w.push_with(FrameKind::HostCallRequest, |body| {
            rpc::encode_request(body, fn_id, payload)
        })
        .unwrap();
    }

    /// Overwrites the frame header at data offset `offset`.
    fn write_frame_header(region: &mut [u8], offset: usize, len: u32, kind: u32) {
        let at = RING_HEADER_SIZE + offset;
        region[at..at + 4].copy_from_slice(&len.to_le_bytes());
        region[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
    }

    fn set_offsets(region: &mut [u8], head: u64, tail: u64) {
        region[..8].copy_from_slice(&head.to_le_bytes());
        region[8..16].copy_from_slice(&tail.to_le_bytes());
    }

    /// The reason of a protocol violation; panics on anything else.
    fn reason<T: std::fmt::Debug>(r: Result<T>) -> Violation {
        match r {
            Err(HyperlightError::ProtocolViolation(v)) => v,
            other => panic!("expected a protocol violation, got {other:?}"),
        }
    }

    /// A ring that counts the bytes copied out of it.
    struct Counting<'a> {
        ring: &'a [u8],
        copied: Cell<usize>,
    }

    impl RingBytes for Counting<'_> {
        fn capacity(&self) -> usize {
            self.ring.capacity()
        }

        fn read_header(&self, out: &mut [u8; RING_HEADER_SIZE]) -> Result<()> {
            self.copied.set(self.copied.get() + out.len());
            self.ring.read_header(out)
        }

        fn read_data(&self, offset: usize, out: &mut [u8]) -> Result<()> {
            self.copied.set(self.copied.get() + out.len());
            self.ring.read_data(offset, out)
        }
    }

    #[test]
    fn host_call_is_copied_out_and_parsed() {
        let mut region = ring(4096);
        push_host_call(&mut region, 42, b"to the host");
        let frame = read_host_call(region.as_slice(), 0).unwrap();
        assert_eq!(
            parse_host_call(&frame.body, 0).unwrap(),
            (42, &b"to the host"[..])
        );
        // The copy is private: changing the ring afterwards changes nothing.
        region.fill(0xAA);
        assert_eq!(parse_host_call(&frame.body, 0).unwrap().0, 42);
    }

    #[test]
    fn bad_host_call_offsets_are_protocol_violations() {
        let mut region = ring(4096);
        push_host_call(&mut region, 1, b"x");
        let capacity = region.as_slice().capacity();
        for offset in [
            8,                    // misaligned
            capacity,             // header past the end
            capacity - 8,         // misaligned and straddling the end
            usize::MAX & !15,     // overflows
            capacity + 4096 * 16, // far outside
        ] {
            let v = reason(read_host_call(region.as_slice(), offset));
            assert!(
                matches!(
                    v,
                    Violation::FrameMisaligned {
                        frame: Frame::HostCallRequest,
                        ..
                    } | Violation::FramePastEnd {
                        frame: Frame::HostCallRequest,
                        ..
                    }
                ),
                "{offset:#x}: {v:?}"
            );
        }
        // An aligned offset past the written frame reads zeros: kind 0.
        let v = reason(read_host_call(region.as_slice(), 256));
        assert_eq!(
            v,
            Violation::WrongFrameKind {
                frame: Frame::HostCallRequest,
                offset: 256,
                found: 0
            }
        );
        // The last frame slot, announcing a body past the end.
        let last = capacity - FRAME_HEADER_SIZE;
        write_frame_header(&mut region, last, 1, FrameKind::HostCallRequest as u32);
        let v = reason(read_host_call(region.as_slice(), last));
        assert!(
            matches!(v, Violation::FramePastEnd { offset, .. } if offset == last),
            "{v:?}"
        );
    }

    #[test]
    fn wrong_frame_kinds_are_protocol_violations() {
        let mut region = ring(4096);
        push_response(&mut region, Status::Ok as u32, b"not a call");
        let v = reason(read_host_call(region.as_slice(), 0));
        assert!(
            matches!(v, Violation::WrongFrameKind { found, .. } if found == FrameKind::Response as u32),
            "{v:?}"
        );

        let mut region = ring(4096);
        push_host_call(&mut region, 1, b"not a response");
        let v = reason(read_responses(region.as_slice(), 1));
        assert!(
            matches!(v, Violation::WrongFrameKind { frame: Frame::Response, found, .. } if found == FrameKind::HostCallRequest as u32),
            "{v:?}"
        );

        let mut region = ring(4096);
        push_response(&mut region, Status::Ok as u32, b"");
        write_frame_header(&mut region, 0, 0, 99);
        let v = reason(read_responses(region.as_slice(), 1));
        assert!(
            matches!(v, Violation::WrongFrameKind { found: 99, .. }),
            "{v:?}"
        );
    }

    #[test]
    fn garbage_bodies_are_protocol_violations() {
        let mut region = ring(4096);
        let mut w = RingWriter::new(&mut region).unwrap();
        w.push(FrameKind::HostCallRequest, &[0xFF; 40]).unwrap();
        let frame = read_host_call(region.as_slice(), 0).unwrap();
        let v = reason(parse_host_call(&frame.body, 0));
        assert_eq!(
            v,
            Violation::BadBody {
                frame: Frame::HostCallRequest,
                offset: 0
            }
        );

        let mut region = ring(4096);
        let mut w = RingWriter::new(&mut region).unwrap();
        w.push(FrameKind::Response, &[0xFF; 40]).unwrap();
        let v = reason(read_responses(region.as_slice(), 1));
        assert_eq!(
            v,
            Violation::BadBody {
                frame: Frame::Response,
                offset: 0
            }
        );
    }

    #[test]
    fn bad_ring_headers_are_protocol_violations() {
        let mut region = ring(4096);
        push_response(&mut region, Status::Ok as u32, b"a");
        let capacity = region.as_slice().capacity() as u64;
        for (head, tail) in [(32, 16), (0, capacity + 16), (u64::MAX, u64::MAX)] {
            set_offsets(&mut region, head, tail);
            let v = reason(read_responses(region.as_slice(), 1));
            assert_eq!(
                v,
                Violation::BadRingOffsets {
                    head,
                    tail,
                    capacity: capacity as usize
                }
            );
        }
        // A frame that runs past the tail (though inside the ring).
        let mut region = ring(4096);
        let next = push_response(&mut region, Status::Ok as u32, b"abcdefgh");
        set_offsets(&mut region, 0, next as u64 - 16);
        let v = reason(read_responses(region.as_slice(), 1));
        assert!(matches!(v, Violation::FramePastEnd { .. }), "{v:?}");
    }

    #[test]
    fn copies_are_bounded_by_what_the_frame_announces() {
        let mut region = ring(4096);
        let next = push_response(&mut region, Status::Ok as u32, b"12345678");
        let counting = Counting {
            ring: &region,
            copied: Cell::new(0),
        };
        let responses = read_responses(&counting, 1).unwrap();
        assert_eq!(responses[0].payload, b"12345678");
        let len_at = RING_HEADER_SIZE..RING_HEADER_SIZE + 4;
        let body_len = u32::from_le_bytes(region[len_at].try_into().unwrap()) as usize;
        assert_eq!(
            counting.copied.get(),
            RING_HEADER_SIZE + FRAME_HEADER_SIZE + body_len,
            "ring header, frame header, body: nothing else"
        );
        assert!(body_len + FRAME_HEADER_SIZE <= next);

        // A frame announcing ~4 GiB: refused after its 16-byte header.
        write_frame_header(&mut region, 0, 0xFFFF_FF00, FrameKind::Response as u32);
        let capacity = region.as_slice().capacity() as u64;
        set_offsets(&mut region, 0, capacity);
        let counting = Counting {
            ring: &region,
            copied: Cell::new(0),
        };
        reason(read_responses(&counting, 1));
        assert_eq!(counting.copied.get(), RING_HEADER_SIZE + FRAME_HEADER_SIZE);
    }

    #[test]
    fn host_only_and_unknown_statuses_from_the_guest_are_protocol_violations() {
        let response = |status: u32| RawResponse {
            status,
            payload: b"payload".to_vec(),
        };
        for status in [
            Status::HostError as u32,
            Status::UnknownHostFunction as u32,
            Status::BadRequest as u32,
            99,
            u32::MAX,
        ] {
            let v = reason(response_result(7, response(status), 100));
            assert_eq!(v, Violation::BadStatus { fn_id: 7, status });
        }
        assert_eq!(
            response_result(7, response(Status::Ok as u32), 100).unwrap(),
            b"payload"
        );
        let coded = RawResponse {
            status: Status::GuestError as u32,
            payload: b"\x05\0\0\0payload".to_vec(),
        };
        assert!(matches!(
            response_result(7, coded, 100),
            Err(HyperlightError::GuestFunctionError { fn_id: 7, code: 5, message }) if message == "payload"
        ));
        assert!(matches!(
            response_result(7, response(Status::UnknownFunction as u32), 100),
            Err(HyperlightError::UnknownFunction { fn_id: 7 })
        ));
        let too_large = RawResponse {
            status: Status::ResponseTooLarge as u32,
            payload: 5000u64.to_le_bytes().to_vec(),
        };
        assert!(matches!(
            response_result(7, too_large, 100),
            Err(HyperlightError::ResponseTooLarge {
                needed: 5000,
                capacity: 100
            })
        ));
    }

    #[test]
    fn too_few_responses_in_a_batch() {
        // A ring with room for exactly the two responses the guest wrote.
        let sizes = [b"first".len(), b"\0\0\0\0second failed".len()]
            .map(|n| ring::frame_size(rpc::response_size(n)).unwrap());
        let mut region = ring(RING_HEADER_SIZE + sizes[0] + sizes[1]);
        push_response(&mut region, Status::Ok as u32, b"first");
        push_response(
            &mut region,
            Status::GuestError as u32,
            b"\0\0\0\0second failed",
        );
        let capacity = region.as_slice().capacity();

        // Never more than asked for.
        assert_eq!(read_responses(region.as_slice(), 1).unwrap().len(), 1);
        // Fewer than asked for when the output ring filled up.
        let responses = read_responses(region.as_slice(), 3).unwrap();
        assert_eq!(responses.len(), 2);
        let results = batch_results([1, 2, 3], responses, capacity);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap(), b"first");
        assert!(matches!(
            &results[1],
            Err(HyperlightError::GuestFunctionError { fn_id: 2, message, .. }) if message == "second failed"
        ));
        assert!(matches!(
            &results[2],
            Err(HyperlightError::ResponseTooLarge { needed: 0, capacity: c }) if *c == capacity
        ));
    }

    #[test]
    fn missing_responses_with_room_left_are_a_protocol_violation() {
        let mut region = ring(4096);
        push_response(&mut region, Status::Ok as u32, b"first");
        assert!(matches!(
            read_responses(region.as_slice(), 2),
            Err(HyperlightError::ProtocolViolation(_))
        ));
        // A guest that wiped its output ring answered nothing at all.
        assert!(matches!(
            read_responses(ring(4096).as_slice(), 3),
            Err(HyperlightError::ProtocolViolation(_))
        ));
        assert!(read_responses(ring(4096).as_slice(), 0).unwrap().is_empty());
    }
}
