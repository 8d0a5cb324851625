//! rkyv request and response frames, status codes and system fn ids.
//!
//! A frame body is the rkyv archive of a [`Request`] or a [`Response`]. The
//! owned types exist for convenience; the hot path uses the borrowed
//! encoders ([`encode_request`], [`encode_response`],
//! [`finish_response_in_place`]) which archive straight into a ring slice
//! without allocating, and the validated decoders ([`decode_request`],
//! [`decode_response`]) which read a body in place. Bodies are always
//! validated (rkyv + bytecheck); nothing here trusts its input.

use rkyv::{
    Archive, Archived, Deserialize, Place, Portable, Serialize,
    rancor::{Failure, Fallible, Source},
    ser::{Positional, Writer, allocator::SubAllocator},
    vec::{ArchivedVec, VecResolver},
};

/// First fn id of the reserved system range. Ids at or above it are served
/// by the guest kernel (guest functions) or by nub itself (host functions)
/// and can't be registered by users.
pub const SYSTEM_FN_ID_BASE: u32 = 0x8000_0000;
/// System: store a capability in the guest directory (see docs/abi.md,
/// *Capability directory*).
pub const FN_ID_NUB_PUT_CAP: u32 = SYSTEM_FN_ID_BASE + 1;
/// System: return the guest's [`crate::boot::BootInfo`] (with
/// `directory_va`).
pub const FN_ID_NUB_GET_BOOT_INFO: u32 = SYSTEM_FN_ID_BASE + 2;
/// System: fetch a capability by hash.
pub const FN_ID_NUB_GET_CAP: u32 = SYSTEM_FN_ID_BASE + 3;
/// System: directory statistics.
pub const FN_ID_NUB_DIRECTORY_STATS: u32 = SYSTEM_FN_ID_BASE + 4;
/// System: heap statistics, three u64 LE: heap size, bytes used, bytes free.
pub const FN_ID_NUB_HEAP_STATS: u32 = SYSTEM_FN_ID_BASE + 5;

/// Whether `fn_id` is in the reserved system range.
pub const fn is_system_fn_id(fn_id: u32) -> bool {
    fn_id >= SYSTEM_FN_ID_BASE
}

abi_enum! {
    /// Outcome carried by a [`Response`].
    pub enum Status: u32 {
        /// Success; the payload is the function's result.
        Ok = 0,
        /// The guest function returned an error; payload = its code (u32
        /// LE, ABI version 5) then its UTF-8 message ([`encode_guest_error`],
        /// [`Outcome::GuestError`]).
        GuestError = 1,
        /// No guest function has this id; payload = the id as u32 LE.
        UnknownFunction = 2,
        /// The request frame could not be decoded.
        BadRequest = 3,
        /// The result did not fit in the output ring; payload = needed bytes
        /// as u64 LE.
        ResponseTooLarge = 4,
        /// Host-call response: the host function returned an error; payload =
        /// UTF-8 message.
        HostError = 16,
        /// Host-call response: no host function has this id.
        UnknownHostFunction = 17,
    }
}

/// A call to function `fn_id` with `payload`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Request {
    /// The function to call.
    pub fn_id: u32,
    /// Argument bytes.
    pub payload: alloc::vec::Vec<u8>,
}

/// The answer to a [`Request`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Response {
    /// A [`Status`] as u32 (unknown values are possible from a hostile peer).
    pub status: u32,
    /// Result bytes or error message.
    pub payload: alloc::vec::Vec<u8>,
}

/// Why a frame body could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The archive does not fit in the space given.
    NoSpace,
    /// The bytes are not a valid archive of the expected type.
    Invalid,
}

impl core::fmt::Display for CodecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSpace => write!(f, "frame does not fit"),
            Self::Invalid => write!(f, "frame body is not a valid archive"),
        }
    }
}

impl core::error::Error for CodecError {}

/// An rkyv writer over a byte slice that may start past bytes already
/// written (a payload placed before the archive root).
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

#[derive(Debug)]
struct NoSpace;

impl core::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no space")
    }
}

impl core::error::Error for NoSpace {}

impl Positional for SliceWriter<'_> {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: Source> Writer<E> for SliceWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or_else(|| E::new(NoSpace))?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or_else(|| E::new(NoSpace))?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// Where the payload bytes of a borrowed message come from.
enum PayloadSource<'a> {
    /// Copy these bytes into the archive.
    Slice(&'a [u8]),
    /// The bytes are already in the buffer at `[pos, pos + len)`.
    InPlace { pos: usize, len: usize },
}

impl PayloadSource<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Slice(s) => s.len(),
            Self::InPlace { len, .. } => *len,
        }
    }

    fn serialize<S>(&self, s: &mut S) -> Result<VecResolver, S::Error>
    where
        S: Fallible + Writer<S::Error> + rkyv::ser::Allocator<S::Error> + ?Sized,
        S::Error: Source,
    {
        match self {
            Self::Slice(bytes) => ArchivedVec::<u8>::serialize_from_slice(bytes, s),
            Self::InPlace { pos, .. } => Ok(VecResolver::from_pos(*pos)),
        }
    }
}

/// Borrowed form of [`Request`]; archives to [`ArchivedRequest`].
struct RequestRef<'a> {
    fn_id: u32,
    payload: PayloadSource<'a>,
}

/// Borrowed form of [`Response`]; archives to [`ArchivedResponse`].
struct ResponseRef<'a> {
    status: u32,
    payload: PayloadSource<'a>,
}

impl Archive for RequestRef<'_> {
    type Archived = ArchivedRequest;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedRequest>) {
        rkyv::munge::munge!(let ArchivedRequest { fn_id, payload } = out);
        self.fn_id.resolve((), fn_id);
        ArchivedVec::<u8>::resolve_from_len(self.payload.len(), resolver, payload);
    }
}

impl<S> Serialize<S> for RequestRef<'_>
where
    S: Fallible + Writer<S::Error> + rkyv::ser::Allocator<S::Error> + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, s: &mut S) -> Result<VecResolver, S::Error> {
        self.payload.serialize(s)
    }
}

impl Archive for ResponseRef<'_> {
    type Archived = ArchivedResponse;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedResponse>) {
        rkyv::munge::munge!(let ArchivedResponse { status, payload } = out);
        self.status.resolve((), status);
        ArchivedVec::<u8>::resolve_from_len(self.payload.len(), resolver, payload);
    }
}

impl<S> Serialize<S> for ResponseRef<'_>
where
    S: Fallible + Writer<S::Error> + rkyv::ser::Allocator<S::Error> + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, s: &mut S) -> Result<VecResolver, S::Error> {
        self.payload.serialize(s)
    }
}

fn archive<T>(value: &T, out: &mut [u8], start: usize) -> Result<usize, CodecError>
where
    T: for<'a, 'b> Serialize<
        rkyv::api::low::LowSerializer<SliceWriter<'a>, SubAllocator<'b>, Failure>,
    >,
{
    let mut scratch = [core::mem::MaybeUninit::<u8>::uninit(); 64];
    let writer = SliceWriter {
        buf: out,
        pos: start,
    };
    rkyv::api::low::to_bytes_in_with_alloc::<_, _, Failure>(
        value,
        writer,
        SubAllocator::new(&mut scratch),
    )
    .map(|w| w.pos)
    .map_err(|_| CodecError::NoSpace)
}

/// Archives a request into `out` (the body area of a frame, 16-byte
/// aligned); returns the body length.
pub fn encode_request(out: &mut [u8], fn_id: u32, payload: &[u8]) -> Result<usize, CodecError> {
    let value = RequestRef {
        fn_id,
        payload: PayloadSource::Slice(payload),
    };
    archive(&value, out, 0)
}

/// Archives a response into `out`; returns the body length.
pub fn encode_response(out: &mut [u8], status: u32, payload: &[u8]) -> Result<usize, CodecError> {
    let value = ResponseRef {
        status,
        payload: PayloadSource::Slice(payload),
    };
    archive(&value, out, 0)
}

/// Completes a response whose `payload_len` payload bytes were already
/// written at the start of `out`: appends the archive root after them, so
/// the payload is never copied. Returns the body length.
pub fn finish_response_in_place(
    out: &mut [u8],
    status: u32,
    payload_len: usize,
) -> Result<usize, CodecError> {
    if payload_len > out.len() {
        return Err(CodecError::NoSpace);
    }
    let value = ResponseRef {
        status,
        payload: PayloadSource::InPlace {
            pos: 0,
            len: payload_len,
        },
    };
    archive(&value, out, payload_len)
}

/// Bytes an archived response with a `payload_len`-byte payload needs at
/// most (payload, alignment padding, root).
pub const fn response_size(payload_len: usize) -> usize {
    payload_len + 4 + core::mem::size_of::<ArchivedResponse>()
}

/// Bytes an archived request with a `payload_len`-byte payload needs at most.
pub const fn request_size(payload_len: usize) -> usize {
    payload_len + 4 + core::mem::size_of::<ArchivedRequest>()
}

fn access<T>(body: &[u8]) -> Result<&T, CodecError>
where
    T: Portable + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::low::LowValidator<'a, Failure>>,
{
    rkyv::api::low::access::<T, Failure>(body).map_err(|_| CodecError::Invalid)
}

/// Validates a request body in place; returns `(fn_id, payload)`.
pub fn decode_request(body: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    let req: &ArchivedRequest = access(body)?;
    Ok((req.fn_id.to_native(), req.payload.as_slice()))
}

/// Validates a response body in place; returns `(status, payload)`. The
/// status is raw: convert with [`Status::try_from`].
pub fn decode_response(body: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    let resp: &ArchivedResponse = access(body)?;
    Ok((resp.status.to_native(), resp.payload.as_slice()))
}

const _: () = assert!(core::mem::size_of::<Archived<u32>>() == 4);

/// What a guest function's response means, on whichever side reads it
/// (`nub-sandbox`'s call path and `nub_arch_x86::testing`): the one
/// status → outcome mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The function's result.
    Ok(&'a [u8]),
    /// The function's error: its code and its message (UTF-8, not trusted
    /// to be). A payload shorter than the code's 4 bytes reads as code 0
    /// with those bytes as the message: the guest chooses both anyway.
    GuestError {
        /// The guest's error code (0 unless the function chose one).
        code: u32,
        /// The message bytes.
        message: &'a [u8],
    },
    /// No guest function has the id.
    UnknownFunction,
    /// The result did not fit; how many bytes it needed, if the payload
    /// says.
    ResponseTooLarge {
        /// The payload's u64, when it has one.
        needed: Option<u64>,
    },
    /// A status a guest function may not answer with: a host-call one, or
    /// none the ABI defines (the raw value).
    Invalid(u32),
}

/// The outcome of a response with `status` and `payload`.
pub fn response_outcome(status: u32, payload: &[u8]) -> Outcome<'_> {
    match Status::try_from(status) {
        Ok(Status::Ok) => Outcome::Ok(payload),
        Ok(Status::GuestError) => match (payload.first_chunk::<4>(), payload.get(4..)) {
            (Some(code), Some(message)) => Outcome::GuestError {
                code: u32::from_le_bytes(*code),
                message,
            },
            _ => Outcome::GuestError {
                code: 0,
                message: payload,
            },
        },
        Ok(Status::UnknownFunction) => Outcome::UnknownFunction,
        Ok(Status::ResponseTooLarge) => Outcome::ResponseTooLarge {
            needed: crate::read_u64(payload, 0),
        },
        _ => Outcome::Invalid(status),
    }
}

/// Bytes of a [`Status::GuestError`] payload before the message: the code.
pub const GUEST_ERROR_CODE_LEN: usize = 4;

/// Encodes a [`Status::GuestError`] response with `code` and as much of
/// `message` as fits in `out` (cut at a byte boundary: the host reads the
/// message lossily). Returns the body length.
pub fn encode_guest_error(out: &mut [u8], code: u32, message: &[u8]) -> Result<usize, CodecError> {
    let room = out
        .len()
        .saturating_sub(response_size(0).saturating_add(GUEST_ERROR_CODE_LEN));
    let message = message.get(..message.len().min(room)).unwrap_or(&[]);
    let len = GUEST_ERROR_CODE_LEN + message.len();
    let payload = out.get_mut(..len).ok_or(CodecError::NoSpace)?;
    let (code_bytes, text) = payload.split_at_mut(GUEST_ERROR_CODE_LEN);
    code_bytes.copy_from_slice(&code.to_le_bytes());
    text.copy_from_slice(message);
    finish_response_in_place(out, Status::GuestError as u32, len)
}

/// The `HostError` message a host sends instead of a host function's
/// answer of `len` bytes that does not fit in the input ring.
pub fn answer_too_large(fn_id: u32, len: usize) -> alloc::string::String {
    alloc::format!("host function {fn_id} returned {len} bytes, more than the input ring holds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(16))]
    struct Buf([u8; 512]);

    #[test]
    fn an_empty_call_crosses_in_the_ring_header_line() {
        // docs/resident.md: the ring header and an empty call's frame share
        // one 64-byte cache line, on both rings.
        let line = 64;
        let mut buf = Buf([0; 512]);
        let request = encode_request(&mut buf.0, 1, b"").unwrap();
        let response = encode_response(&mut buf.0, Status::Ok as u32, b"").unwrap();
        for body in [request, response] {
            let frame = crate::ring::frame_size(body).unwrap();
            assert!(
                crate::ring::RING_HEADER_SIZE + frame <= line,
                "{body}-byte body"
            );
        }
    }

    #[test]
    fn borrowed_and_owned_encodings_agree() {
        let mut buf = Buf([0; 512]);
        let n = encode_request(&mut buf.0, 7, b"payload").unwrap();
        let owned = rkyv::to_bytes::<rkyv::rancor::Error>(&Request {
            fn_id: 7,
            payload: b"payload".to_vec(),
        })
        .unwrap();
        assert_eq!(&buf.0[..n], &owned[..]);
        assert_eq!(decode_request(&buf.0[..n]).unwrap(), (7, &b"payload"[..]));
        assert!(n <= request_size(7));
    }

    #[test]
    fn in_place_response_matches_copying_encoder() {
        let mut a = Buf([0; 512]);
        let mut b = Buf([0; 512]);
        for len in [0usize, 1, 3, 4, 5, 100] {
            let payload: Vec<u8> = (0..len as u8).collect();
            let na = encode_response(&mut a.0, 1, &payload).unwrap();
            b.0[..len].copy_from_slice(&payload);
            let nb = finish_response_in_place(&mut b.0, 1, len).unwrap();
            assert_eq!(&a.0[..na], &b.0[..nb]);
            assert!(na <= response_size(len));
            assert_eq!(decode_response(&a.0[..na]).unwrap(), (1, &payload[..]));
        }
    }

    #[test]
    fn no_space_is_an_error() {
        let mut buf = Buf([0; 512]);
        assert_eq!(
            encode_request(&mut buf.0[..8], 1, b"123456789"),
            Err(CodecError::NoSpace)
        );
        assert_eq!(
            finish_response_in_place(&mut buf.0[..8], 0, 9),
            Err(CodecError::NoSpace)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut buf = Buf([0; 512]);
        let mut seed = 0x1234_5678_u64;
        for round in 0..20_000usize {
            let len = round % 64;
            for b in &mut buf.0[..len] {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let _ = decode_request(&buf.0[..len]);
            let _ = decode_response(&buf.0[..len]);
        }
        // A valid frame with its relative pointer bent out of range.
        let n = encode_response(&mut buf.0, 0, b"abc").unwrap();
        buf.0[n - 8] = 0x7f;
        assert!(decode_response(&buf.0[..n]).is_err());
    }

    #[test]
    fn every_status_has_one_outcome() {
        let seven = 7u64.to_le_bytes();
        for &status in Status::ALL {
            let outcome = response_outcome(status as u32, &seven);
            let expected = match status {
                Status::Ok => Outcome::Ok(&[7, 0, 0, 0, 0, 0, 0, 0]),
                Status::GuestError => Outcome::GuestError {
                    code: 7,
                    message: &[0, 0, 0, 0],
                },
                Status::UnknownFunction => Outcome::UnknownFunction,
                Status::ResponseTooLarge => Outcome::ResponseTooLarge { needed: Some(7) },
                Status::BadRequest | Status::HostError | Status::UnknownHostFunction => {
                    Outcome::Invalid(status as u32)
                }
            };
            assert_eq!(outcome, expected, "{status:?}");
        }
        assert_eq!(response_outcome(99, b""), Outcome::Invalid(99));
        assert_eq!(
            response_outcome(Status::ResponseTooLarge as u32, b"short"),
            Outcome::ResponseTooLarge { needed: None }
        );
        assert_eq!(
            response_outcome(Status::GuestError as u32, b"ab"),
            Outcome::GuestError {
                code: 0,
                message: b"ab"
            }
        );
    }

    #[test]
    fn a_guest_error_carries_its_code_and_as_much_message_as_fits() {
        let mut buf = Buf([0; 512]);
        let n = encode_guest_error(&mut buf.0, 42, b"not found").unwrap();
        let (status, payload) = decode_response(&buf.0[..n]).unwrap();
        assert_eq!(
            response_outcome(status, payload),
            Outcome::GuestError {
                code: 42,
                message: b"not found"
            }
        );
        // A body with room for the code and three message bytes only.
        let small = response_size(GUEST_ERROR_CODE_LEN + 3);
        let n = encode_guest_error(&mut buf.0[..small], 9, b"truncated").unwrap();
        let (status, payload) = decode_response(&buf.0[..n]).unwrap();
        assert_eq!(
            response_outcome(status, payload),
            Outcome::GuestError {
                code: 9,
                message: b"tru"
            }
        );
        assert!(encode_guest_error(&mut buf.0[..4], 9, b"x").is_err());
    }
}
