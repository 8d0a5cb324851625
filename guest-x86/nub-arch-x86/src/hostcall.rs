//! Calls from the guest into host functions.
//!
//! A host call is one exit: the guest writes a host-call request frame into
//! the output ring *after* whatever response is being built (it is not queued
//! at `tail`, so the partial response stays intact), exits through the
//! HOST_CALL port with the frame's data offset as the port value, and, when
//! resumed, reads the host's response frame from the input ring at the
//! input ring's `tail` (just past the requests the host queued, which may
//! still be borrowed by the running guest function).
//!
//! The rings come from the dispatcher ([`crate::dispatch`] publishes the
//! ones in use), as [`RingRegion`]s: the running guest function still
//! borrows its payload from the input ring and builds its response in the
//! output ring, so a host call makes references only to the bytes it owns
//! (the frame from the host-call slot on; then a shared view of the input
//! ring to read the answer). In a guest the exit is the HOST_CALL port; on
//! the host the [`crate::testing`] harness plays the host.

use alloc::{string::String, vec::Vec};
use core::fmt;

use nub_host_common::{
    ring::{self, FrameKind, PushError, RING_HEADER_SIZE, RingReader},
    rpc::{self, Status},
};

use crate::{dispatch, region::RingRegion};

/// Why a host call failed. The guest function decides what to do with it;
/// the sandbox stays usable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostCallError {
    /// No host function is registered under this id.
    UnknownFunction(u32),
    /// The host function returned an error with this message.
    Host(String),
    /// The request does not fit in the output ring.
    RequestTooLarge,
    /// The host's response was missing or undecodable.
    BadResponse,
    /// There is no host to call: on the host (off the bare-metal target),
    /// outside a guest function run by [`crate::testing`].
    NoHost,
}

impl fmt::Display for HostCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFunction(id) => write!(f, "no host function with id {id}"),
            Self::Host(msg) => write!(f, "host function failed: {msg}"),
            Self::RequestTooLarge => write!(f, "host-call request does not fit in the output ring"),
            Self::BadResponse => write!(f, "host-call response missing or undecodable"),
            Self::NoHost => write!(
                f,
                "no host to call (outside a guest function run by nub_arch_x86::testing)"
            ),
        }
    }
}

impl core::error::Error for HostCallError {}

/// Calls host function `fn_id` with `payload` and returns its result. Can be
/// called any number of times from inside a guest function, and from init.
///
/// In a guest this is one exit; in a resident sandbox none, and a payload
/// of at most `nub_host_common::resident::INLINE_REQUEST_MAX` bytes (and an
/// answer of at most `INLINE_ANSWER_MAX`) travels inline in the control
/// block instead of the rings (docs/resident.md). On the host (under `cargo test`) the
/// [`crate::testing`] harness running the current guest function answers;
/// outside one it fails with [`HostCallError::NoHost`].
pub fn host_call(fn_id: u32, payload: &[u8]) -> Result<Vec<u8>, HostCallError> {
    let (input, output) = dispatch::current_rings().ok_or(HostCallError::NoHost)?;
    #[cfg(nub_bare)]
    if payload.len() <= nub_host_common::resident::INLINE_REQUEST_MAX
        && let Some(answer) = crate::arch::resident_host_call_inline(fn_id, payload)
    {
        return match answer {
            crate::resident::InlineAnswer::Inline(status, bytes) => answer_of(status, bytes, fn_id),
            // SAFETY: as below: the host wrote the frame before the
            // response word the guest waited for, and writes nothing more.
            crate::resident::InlineAnswer::InRing => read_response(unsafe { input.all() }, fn_id),
            crate::resident::InlineAnswer::Bad => Err(HostCallError::BadResponse),
        };
    }
    // Outside a guest function (in init) the output ring is free.
    let slot = dispatch::host_call_slot().unwrap_or(0);
    let start = RING_HEADER_SIZE
        .checked_add(slot)
        .ok_or(HostCallError::RequestTooLarge)?;
    // SAFETY: the bytes from the host-call slot on lie past the response
    // under construction and the space kept for its root, so the running
    // function's `Output` holds no reference to them (it makes references
    // only below the published end), and nothing else in the kernel
    // references the output ring while a function runs. The slice ends
    // before the exit.
    let space =
        unsafe { output.slice_mut(start..output.len()) }.ok_or(HostCallError::RequestTooLarge)?;
    write_request(space, fn_id, payload)?;
    exit(input, output, slot)?;
    // SAFETY: a shared view; nothing writes the input ring while it lives
    // (the host wrote its response during the exit, and the running
    // function's payload is a shared borrow of bytes before the tail).
    let view = unsafe { input.all() };
    read_response(view, fn_id)
}

/// The HOST_CALL exit: the host serves the frame at data offset `slot` of
/// the output ring and resumes the guest.
#[cfg(nub_bare)]
fn exit(_input: RingRegion, _output: RingRegion, slot: usize) -> Result<(), HostCallError> {
    let value = u32::try_from(slot).map_err(|_| HostCallError::RequestTooLarge)?;
    // Resident mode: through the control block, usually without an exit.
    if crate::arch::resident_host_call(u64::from(value)) {
        return Ok(());
    }
    crate::io::exit(nub_host_common::ports::ExitPort::HostCall, value);
    Ok(())
}

/// On the host the harness running this thread's guest function serves the
/// frame.
#[cfg(not(nub_bare))]
fn exit(input: RingRegion, output: RingRegion, slot: usize) -> Result<(), HostCallError> {
    crate::testing::serve_host_call(input, output, slot)
}

/// Writes a host-call request frame at the start of `space`: the output
/// ring's data area from the host-call slot on.
pub fn write_request(space: &mut [u8], fn_id: u32, payload: &[u8]) -> Result<(), HostCallError> {
    ring::write_frame(space, FrameKind::HostCallRequest, |body| {
        rpc::encode_request(body, fn_id, payload)
    })
    .map(|_| ())
    .map_err(|e: PushError<rpc::CodecError>| match e {
        PushError::Ring(_) | PushError::Fill(_) => HostCallError::RequestTooLarge,
    })
}

/// Reads the host's response from the input ring region `input`, at its
/// tail. `fn_id` names the call for error reporting.
pub fn read_response(input: &[u8], fn_id: u32) -> Result<Vec<u8>, HostCallError> {
    let ring = RingReader::new(input).map_err(|_| HostCallError::BadResponse)?;
    let (_, tail) = ring.offsets().map_err(|_| HostCallError::BadResponse)?;
    let frame = ring
        .frame_at(tail, ring.capacity())
        .map_err(|_| HostCallError::BadResponse)?;
    if frame.kind != FrameKind::HostCallResponse {
        return Err(HostCallError::BadResponse);
    }
    let (status, payload) =
        rpc::decode_response(frame.body).map_err(|_| HostCallError::BadResponse)?;
    answer_of(status, payload.to_vec(), fn_id)
}

/// What a host call's raw `status` and `payload` mean.
fn answer_of(status: u32, payload: Vec<u8>, fn_id: u32) -> Result<Vec<u8>, HostCallError> {
    match Status::try_from(status) {
        Ok(Status::Ok) => Ok(payload),
        Ok(Status::HostError) => Err(HostCallError::Host(
            String::from_utf8_lossy(&payload).into_owned(),
        )),
        Ok(Status::UnknownHostFunction) => Err(HostCallError::UnknownFunction(fn_id)),
        _ => Err(HostCallError::BadResponse),
    }
}

#[cfg(test)]
mod tests {
    use nub_host_common::ring::RingWriter;

    use super::*;

    /// The data area of `output` from data offset `offset` on.
    fn space(output: &mut [u8], offset: usize) -> &mut [u8] {
        &mut output[RING_HEADER_SIZE + offset..]
    }

    /// Plays the host: reads the request, answers at the input tail.
    fn host(
        output: &[u8],
        offset: usize,
        input: &mut [u8],
        status: Status,
        reply: &[u8],
    ) -> (u32, Vec<u8>) {
        let r = RingReader::new(output).unwrap();
        let f = r.frame_at(offset, r.capacity()).unwrap();
        assert_eq!(f.kind, FrameKind::HostCallRequest);
        let (id, p) = rpc::decode_request(f.body).unwrap();
        let req = (id, p.to_vec());
        let mut w = RingWriter::new(input).unwrap();
        let (_, tail) = w.reader().offsets().unwrap();
        w.write_frame_at(tail, FrameKind::HostCallResponse, |b| {
            rpc::encode_response(b, status as u32, reply)
        })
        .unwrap();
        req
    }

    #[test]
    fn round_trip_and_errors() {
        let mut input = crate::testing::zeroed(4096);
        let mut output = crate::testing::zeroed(4096);
        // Pretend one request of 48 bytes is queued and still borrowed.
        RingWriter::new(&mut input).unwrap().set_offsets(0, 48);
        write_request(space(&mut output, 256), 7, b"ping").unwrap();
        assert_eq!(
            host(&output, 256, &mut input, Status::Ok, b"pong"),
            (7, b"ping".to_vec())
        );
        assert_eq!(read_response(&input, 7).unwrap(), b"pong");

        write_request(space(&mut output, 256), 8, b"").unwrap();
        host(&output, 256, &mut input, Status::HostError, b"nope");
        assert_eq!(
            read_response(&input, 8),
            Err(HostCallError::Host("nope".into()))
        );
        host(&output, 256, &mut input, Status::UnknownHostFunction, b"");
        assert_eq!(
            read_response(&input, 8),
            Err(HostCallError::UnknownFunction(8))
        );
        host(&output, 256, &mut input, Status::BadRequest, b"");
        assert_eq!(read_response(&input, 8), Err(HostCallError::BadResponse));
    }

    #[test]
    fn too_large_and_missing() {
        let mut output = crate::testing::zeroed(256);
        assert_eq!(
            write_request(space(&mut output, 0), 1, &[0; 512]),
            Err(HostCallError::RequestTooLarge)
        );
        // 8 bytes short of the end: no room for even an empty request.
        let near_end = 256 - RING_HEADER_SIZE - 8;
        assert_eq!(
            write_request(space(&mut output, near_end), 1, b""),
            Err(HostCallError::RequestTooLarge)
        );
        let input = crate::testing::zeroed(256);
        assert_eq!(read_response(&input, 1), Err(HostCallError::BadResponse));
    }
}
