//! Guest function registry and the dispatcher that answers request frames.
//!
//! The dispatcher reads each request in place from the input ring (validated
//! rkyv access, no copy), looks the fn id up, and lets the function write its
//! result straight into the body of the response frame in the output ring;
//! the rkyv root is appended after the payload, so the hot path allocates
//! nothing and copies nothing it does not have to.

use core::{
    fmt,
    sync::atomic::{AtomicUsize, Ordering},
};

use nub_host_common::{
    ring::{FRAME_ALIGN, FRAME_HEADER_SIZE, FrameKind, PushError, RingWriter},
    rpc::{self, Status},
};

/// A guest function: reads its argument bytes, writes its result to `out`.
pub type GuestFn = fn(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError>;

/// Most guest functions one guest can register.
pub const MAX_GUEST_FUNCTIONS: usize = 64;

/// An error a guest function returns; the host gets it as a guest-function
/// error with this message, and the sandbox stays usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    message: alloc::borrow::Cow<'static, str>,
}

impl GuestError {
    /// An error with a fixed message (no allocation).
    pub const fn new(message: &'static str) -> Self {
        Self {
            message: alloc::borrow::Cow::Borrowed(message),
        }
    }

    /// An error with a formatted message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: alloc::borrow::Cow::Owned(alloc::format!("{message}")),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a registration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryError {
    /// The id is in the reserved system range.
    Reserved(u32),
    /// The id is already registered.
    Duplicate(u32),
    /// [`MAX_GUEST_FUNCTIONS`] are registered already.
    Full,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserved(id) => write!(f, "fn id {id:#x} is in the reserved system range"),
            Self::Duplicate(id) => write!(f, "fn id {id} is already registered"),
            Self::Full => write!(f, "at most {MAX_GUEST_FUNCTIONS} guest functions"),
        }
    }
}

/// The guest's functions by id: a fixed table, no heap.
#[derive(Clone)]
pub struct Registry {
    entries: [(u32, Option<GuestFn>); MAX_GUEST_FUNCTIONS],
    len: usize,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = self.entries.iter().take(self.len).map(|(id, _)| id);
        f.debug_list().entries(ids).finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Self {
        Self {
            entries: [(0, None); MAX_GUEST_FUNCTIONS],
            len: 0,
        }
    }

    /// Registers `f` under `fn_id`.
    pub fn register(&mut self, fn_id: u32, f: GuestFn) -> Result<(), RegistryError> {
        if rpc::is_system_fn_id(fn_id) {
            return Err(RegistryError::Reserved(fn_id));
        }
        if self.get(fn_id).is_some() {
            return Err(RegistryError::Duplicate(fn_id));
        }
        let slot = self.entries.get_mut(self.len).ok_or(RegistryError::Full)?;
        *slot = (fn_id, Some(f));
        self.len += 1;
        Ok(())
    }

    /// The function registered under `fn_id`.
    pub fn get(&self, fn_id: u32) -> Option<GuestFn> {
        self.entries
            .iter()
            .take(self.len)
            .find(|(id, _)| *id == fn_id)
            .and_then(|(_, f)| *f)
    }

    /// Number of registered functions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Space left for the archive root after a payload (root + alignment).
const ROOT_RESERVE: usize = 16;

/// End (data offset in the output ring) of the response under construction,
/// or `usize::MAX` when none is: a host call made from inside a guest
/// function places its frame after it. The guest is single-threaded; the
/// atomic only makes the static safe to share.
#[cfg(not(test))]
static PARTIAL_RESPONSE_END: AtomicUsize = AtomicUsize::new(usize::MAX);

// Host unit tests run dispatchers on several threads at once: one tracker
// per thread keeps them apart.
#[cfg(test)]
std::thread_local! {
    static PARTIAL_RESPONSE_END_TL: AtomicUsize = const { AtomicUsize::new(usize::MAX) };
}

fn partial_response_end() -> usize {
    #[cfg(not(test))]
    return PARTIAL_RESPONSE_END.load(Ordering::Relaxed);
    #[cfg(test)]
    return PARTIAL_RESPONSE_END_TL.with(|v| v.load(Ordering::Relaxed));
}

fn set_partial_response_end(end: usize) {
    #[cfg(not(test))]
    PARTIAL_RESPONSE_END.store(end, Ordering::Relaxed);
    #[cfg(test)]
    PARTIAL_RESPONSE_END_TL.with(|v| v.store(end, Ordering::Relaxed));
}

/// Data offset in the output ring where a host-call frame can go without
/// touching the response being built, if one is being built.
pub fn host_call_slot() -> Option<usize> {
    match partial_response_end() {
        usize::MAX => None,
        end => Some((end + ROOT_RESERVE).next_multiple_of(FRAME_ALIGN)),
    }
}

/// Where a guest function writes its result: the body of the response frame
/// in the output ring.
#[derive(Debug)]
pub struct Output<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: Option<usize>,
    /// Data offset of `buf` in the output ring.
    base: usize,
}

impl<'a> Output<'a> {
    /// An output writing into `buf` (the whole free body space; the last
    /// bytes are kept for the archive root).
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self::at(buf, 0)
    }

    fn at(buf: &'a mut [u8], base: usize) -> Self {
        Self {
            buf,
            len: 0,
            overflow: None,
            base,
        }
    }

    fn publish_end(&self) {
        set_partial_response_end(self.base + self.len);
    }

    fn limit(&self) -> usize {
        self.buf.len().saturating_sub(ROOT_RESERVE)
    }

    /// Appends `bytes`. Fails (and marks the response too large) if they do
    /// not fit in the output ring.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), GuestError> {
        let end = self.len.saturating_add(bytes.len());
        let limit = self.limit();
        match self.buf.get_mut(self.len..end).filter(|_| end <= limit) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
                self.publish_end();
                Ok(())
            }
            None => {
                self.overflow = Some(end);
                Err(GuestError::new("response does not fit in the output ring"))
            }
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that can still be written.
    pub fn remaining(&self) -> usize {
        self.limit().saturating_sub(self.len)
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Discards what was written.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Functions the kernel serves itself, for ids in the system range.
pub trait SystemFunctions {
    /// Serves system function `fn_id`; `None` if there is no such function.
    fn call(
        &mut self,
        fn_id: u32,
        input: &[u8],
        out: &mut Output<'_>,
    ) -> Option<Result<(), GuestError>>;
}

/// What one pass over the input ring did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassSummary {
    /// Requests answered.
    pub answered: usize,
    /// Frames that could not be decoded (answered with `BadRequest`).
    pub bad: usize,
}

/// Answers every request in `input` (a whole ring region) with a response in
/// `output`, in order. Never panics on any ring contents.
pub fn process_requests(
    input: &mut [u8],
    output: &mut [u8],
    registry: &Registry,
    system: &mut dyn SystemFunctions,
) -> PassSummary {
    let mut summary = PassSummary::default();
    let Ok(mut out_ring) = RingWriter::new(output) else {
        return summary;
    };
    let Ok(mut in_ring) = RingWriter::new(input) else {
        return summary;
    };
    loop {
        let reader = in_ring.reader();
        let (head, tail) = match reader.offsets() {
            Ok(o) => o,
            Err(_) => {
                summary.bad += 1;
                let _ = out_ring.push_with(FrameKind::Response, |b| {
                    rpc::encode_response(b, Status::BadRequest as u32, b"input ring header corrupt")
                });
                in_ring.reset();
                return summary;
            }
        };
        if head == tail {
            return summary;
        }
        let (next, request) = match reader.frame_at(head, tail) {
            Ok(f) if f.kind == FrameKind::Request => (f.next, rpc::decode_request(f.body).ok()),
            Ok(f) => (f.next, None),
            Err(_) => (tail, None),
        };
        match request {
            Some((fn_id, payload)) => {
                answer(&mut out_ring, fn_id, payload, registry, system);
                summary.answered += 1;
            }
            None => {
                summary.bad += 1;
                let _ = out_ring.push_with(FrameKind::Response, |b| {
                    rpc::encode_response(b, Status::BadRequest as u32, b"undecodable request frame")
                });
            }
        }
        in_ring.set_head(next);
    }
}

fn answer(
    out_ring: &mut RingWriter<'_>,
    fn_id: u32,
    payload: &[u8],
    registry: &Registry,
    system: &mut dyn SystemFunctions,
) {
    let frame = out_ring.reader().offsets().map(|(_, t)| t).unwrap_or(0);
    let result = out_ring.push_with(FrameKind::Response, |body| {
        let mut out = Output::at(body, frame + FRAME_HEADER_SIZE);
        out.publish_end();
        let outcome = if rpc::is_system_fn_id(fn_id) {
            system.call(fn_id, payload, &mut out)
        } else {
            registry.get(fn_id).map(|f| f(payload, &mut out))
        };
        let (status, len) = match (outcome, out.overflow) {
            (_, Some(needed)) => {
                let needed = (needed as u64).to_le_bytes();
                return rpc::encode_response(body, Status::ResponseTooLarge as u32, &needed);
            }
            (None, _) => {
                return rpc::encode_response(
                    body,
                    Status::UnknownFunction as u32,
                    &fn_id.to_le_bytes(),
                );
            }
            (Some(Ok(())), _) => (Status::Ok, out.len),
            (Some(Err(e)), _) => {
                let msg = e.message().as_bytes();
                let max = body.len().saturating_sub(ROOT_RESERVE);
                let msg = msg.get(..msg.len().min(max)).unwrap_or(&[]);
                return rpc::encode_response(body, Status::GuestError as u32, msg);
            }
        };
        rpc::finish_response_in_place(body, status as u32, len)
    });
    set_partial_response_end(usize::MAX);
    if let Err(PushError::Ring(_) | PushError::Fill(_)) = result {
        // Not even an error response fits; tell the host with the smallest
        // frame there is.
        let _ = out_ring.push_with(FrameKind::Response, |b| {
            rpc::encode_response(b, Status::ResponseTooLarge as u32, &[])
        });
    }
}

/// Reads the responses in an output ring region (host side helper, used by
/// tests): `(status, payload)` for each frame.
#[cfg(test)]
pub(crate) fn read_responses(output: &[u8]) -> alloc::vec::Vec<(u32, alloc::vec::Vec<u8>)> {
    let r = nub_host_common::ring::RingReader::new(output).unwrap();
    let (mut head, tail) = r.offsets().unwrap();
    let mut v = alloc::vec::Vec::new();
    while head < tail {
        let f = r.frame_at(head, tail).unwrap();
        let (s, p) = rpc::decode_response(f.body).unwrap();
        v.push((s, p.to_vec()));
        head = f.next;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        out.write(input)
    }
    fn fail(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
        Err(GuestError::msg(core::str::from_utf8(input).unwrap_or("?")))
    }

    struct NoSystem;
    impl SystemFunctions for NoSystem {
        fn call(&mut self, _: u32, _: &[u8], _: &mut Output<'_>) -> Option<Result<(), GuestError>> {
            None
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(1, echo).unwrap();
        r.register(3, fail).unwrap();
        r
    }

    fn push_requests(input: &mut [u8], reqs: &[(u32, &[u8])]) {
        let mut w = RingWriter::new(input).unwrap();
        w.reset();
        for (id, p) in reqs {
            w.push_with(FrameKind::Request, |b| rpc::encode_request(b, *id, p))
                .unwrap();
        }
    }

    #[test]
    fn answers_a_batch_in_order() {
        let mut input = vec![0u8; 8192];
        let mut output = vec![0u8; 8192];
        push_requests(&mut input, &[(1, b"hi"), (3, b"bad"), (9, b""), (1, b"")]);
        let s = process_requests(&mut input, &mut output, &registry(), &mut NoSystem);
        assert_eq!(
            s,
            PassSummary {
                answered: 4,
                bad: 0
            }
        );
        let got = read_responses(&output);
        assert_eq!(got[0], (Status::Ok as u32, b"hi".to_vec()));
        assert_eq!(got[1], (Status::GuestError as u32, b"bad".to_vec()));
        assert_eq!(
            got[2],
            (Status::UnknownFunction as u32, 9u32.to_le_bytes().to_vec())
        );
        assert_eq!(got[3], (Status::Ok as u32, vec![]));
        assert!(
            nub_host_common::ring::RingReader::new(&input)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn oversized_response_is_reported() {
        let mut input = vec![0u8; 8192];
        let mut output = vec![0u8; 256];
        push_requests(&mut input, &[(1, &[5u8; 1000])]);
        process_requests(&mut input, &mut output, &registry(), &mut NoSystem);
        let got = read_responses(&output);
        assert_eq!(got[0].0, Status::ResponseTooLarge as u32);
        assert_eq!(u64::from_le_bytes(got[0].1[..8].try_into().unwrap()), 1000);
    }

    #[test]
    fn garbage_input_never_panics() {
        let reg = registry();
        let mut seed = 99u64;
        for round in 0..2000 {
            let mut input = vec![0u8; 512];
            let mut output = vec![0u8; 512];
            push_requests(&mut input, &[(1, b"abcdef")]);
            for _ in 0..(round % 16) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % 160;
                input[i] = (seed >> 32) as u8;
            }
            let _ = process_requests(&mut input, &mut output, &reg, &mut NoSystem);
        }
    }

    /// Writes 100 bytes, then checks where a host call made now would put its
    /// frame: after the partial response, so the bytes survive.
    fn writes_then_reports_slot(_: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        out.write(&[0xAA; 100])?;
        let slot = host_call_slot().ok_or(GuestError::new("no slot while a response is built"))?;
        // Response frame at offset 0: body starts at 16, 100 bytes written.
        if slot < FRAME_HEADER_SIZE + 100 || slot % FRAME_ALIGN != 0 {
            return Err(GuestError::new(
                "host-call slot overlaps the partial response",
            ));
        }
        out.write(&(slot as u64).to_le_bytes())
    }

    #[test]
    fn host_call_slot_lies_past_the_partial_response() {
        let mut r = Registry::new();
        r.register(5, writes_then_reports_slot).unwrap();
        let mut input = vec![0u8; 4096];
        let mut output = vec![0u8; 4096];
        push_requests(&mut input, &[(5, b"")]);
        process_requests(&mut input, &mut output, &r, &mut NoSystem);
        let got = read_responses(&output);
        assert_eq!(
            got[0].0,
            Status::Ok as u32,
            "{:?}",
            String::from_utf8_lossy(&got[0].1)
        );
        assert_eq!(&got[0].1[..100], &[0xAA; 100][..]);
        assert_eq!(host_call_slot(), None, "no slot once the response is done");
    }

    #[test]
    fn registry_rules() {
        let mut r = registry();
        assert_eq!(r.register(1, echo), Err(RegistryError::Duplicate(1)));
        assert_eq!(
            r.register(0x8000_0000, echo),
            Err(RegistryError::Reserved(0x8000_0000))
        );
        for id in 100..(100 + MAX_GUEST_FUNCTIONS as u32 - 2) {
            r.register(id, echo).unwrap();
        }
        assert_eq!(r.register(7, echo), Err(RegistryError::Full));
        assert!(r.get(3).is_some() && r.get(7).is_none());
    }
}
