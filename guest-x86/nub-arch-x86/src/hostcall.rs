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
//! The two halves are separate functions so the arch glue can rebuild its
//! ring slices after the exit (the host wrote to that memory meanwhile).

use alloc::{string::String, vec::Vec};
use core::fmt;

use nub_host_common::{
    ring::{FrameKind, PushError, RingReader, RingWriter},
    rpc::{self, Status},
};

/// Why a host call failed. The guest function decides what to do with it;
/// the sandbox stays usable.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Writes the host-call request frame at data offset `offset` of the output
/// ring region `output`.
pub fn write_request(
    output: &mut [u8],
    offset: usize,
    fn_id: u32,
    payload: &[u8],
) -> Result<(), HostCallError> {
    let mut ring = RingWriter::new(output).map_err(|_| HostCallError::RequestTooLarge)?;
    ring.write_frame_at(offset, FrameKind::HostCallRequest, |body| {
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
    match Status::try_from(status) {
        Ok(Status::Ok) => Ok(payload.to_vec()),
        Ok(Status::HostError) => Err(HostCallError::Host(
            String::from_utf8_lossy(payload).into_owned(),
        )),
        Ok(Status::UnknownHostFunction) => Err(HostCallError::UnknownFunction(fn_id)),
        _ => Err(HostCallError::BadResponse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut input = vec![0u8; 4096];
        let mut output = vec![0u8; 4096];
        // Pretend one request of 48 bytes is queued and still borrowed.
        RingWriter::new(&mut input).unwrap().set_offsets(0, 48);
        write_request(&mut output, 256, 7, b"ping").unwrap();
        assert_eq!(
            host(&output, 256, &mut input, Status::Ok, b"pong"),
            (7, b"ping".to_vec())
        );
        assert_eq!(read_response(&input, 7).unwrap(), b"pong");

        write_request(&mut output, 256, 8, b"").unwrap();
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
        let mut output = vec![0u8; 256];
        assert_eq!(
            write_request(&mut output, 0, 1, &[0; 512]),
            Err(HostCallError::RequestTooLarge)
        );
        assert_eq!(
            write_request(&mut output, 250, 1, b""),
            Err(HostCallError::RequestTooLarge)
        );
        let input = vec![0u8; 256];
        assert_eq!(read_response(&input, 1), Err(HostCallError::BadResponse));
    }
}
