//! Guest function registry and the dispatcher that answers request frames.
//!
//! The dispatcher reads each request in place from the input ring (validated
//! rkyv access, no copy), looks the fn id up, and lets the function write its
//! result straight into the body of the response frame in the output ring;
//! the rkyv root is appended after the payload, so the hot path allocates
//! nothing and copies nothing it does not have to.
//!
//! The dispatcher holds the rings as [`RingRegion`]s, not as references,
//! because host calls write into both rings while a guest function runs
//! (see [`crate::region`] for the aliasing argument). It also publishes,
//! for [`crate::host_call`], which rings are in use and where the response
//! under construction ends ([`host_call_slot`]).

use core::{
    fmt,
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicPtr, AtomicUsize, Ordering},
};

use nub_host_common::ring::{
    FRAME_ALIGN, FRAME_HEADER_SIZE, FrameKind, RING_HEADER_SIZE, RingReader, RingWriter,
};
use nub_host_common::rpc::{self, Status};

pub use crate::guest_error::GuestError;
use crate::region::RingRegion;

/// A guest function: reads its argument bytes, writes its result to `out`.
pub type GuestFn = fn(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError>;

/// Most raw guest functions ([`Registry::register`]) one guest can
/// register; typed ones (`Registry::typed`) live in a list on the heap
/// and have no fixed limit.
pub const MAX_GUEST_FUNCTIONS: usize = 64;

/// Why a registration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

/// A typed function's entry (`crate::typed`): the request payload in, the
/// reply payload out.
pub(crate) type TypedEntry =
    alloc::rc::Rc<dyn Fn(&[u8], &mut Output<'_>) -> Result<(), GuestError>>;

/// The guest's functions by id: raw functions in a fixed table, typed ones
/// (`crate::typed`) in a list on the heap.
#[derive(Clone)]
pub struct Registry {
    entries: [(u32, Option<GuestFn>); MAX_GUEST_FUNCTIONS],
    len: usize,
    /// Typed functions ([`crate::typed`]), by id.
    typed: alloc::vec::Vec<(u32, TypedEntry)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.entries.iter().take(self.len).map(|(id, _)| id);
        let typed = self.typed.iter().map(|(id, _)| id);
        f.debug_list().entries(raw.chain(typed)).finish()
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
            typed: alloc::vec::Vec::new(),
        }
    }

    /// Refuses `fn_id` if it is a system id or already registered.
    fn check_free(&self, fn_id: u32) -> Result<(), RegistryError> {
        if rpc::is_system_fn_id(fn_id) {
            return Err(RegistryError::Reserved(fn_id));
        }
        if self.get(fn_id).is_some() || self.typed_entry(fn_id).is_some() {
            return Err(RegistryError::Duplicate(fn_id));
        }
        Ok(())
    }

    /// Registers a typed function's entry under `fn_id`.
    pub(crate) fn register_entry(
        &mut self,
        fn_id: u32,
        entry: TypedEntry,
    ) -> Result<(), RegistryError> {
        self.check_free(fn_id)?;
        self.typed.push((fn_id, entry));
        Ok(())
    }

    /// The typed function registered under `fn_id`.
    fn typed_entry(&self, fn_id: u32) -> Option<&TypedEntry> {
        self.typed
            .iter()
            .find(|(id, _)| *id == fn_id)
            .map(|(_, e)| e)
    }

    /// Serves `fn_id` from the registry: a raw function writes its own
    /// output, a typed one's reply is written for it.
    fn call(
        &self,
        fn_id: u32,
        payload: &[u8],
        out: &mut Output<'_>,
    ) -> Option<Result<(), GuestError>> {
        if let Some(f) = self.get(fn_id) {
            return Some(f(payload, out));
        }
        self.typed_entry(fn_id).map(|entry| entry(payload, out))
    }

    /// Registers `f` under `fn_id`.
    pub fn register(&mut self, fn_id: u32, f: GuestFn) -> Result<(), RegistryError> {
        self.check_free(fn_id)?;
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

    /// Number of registered functions, raw and typed.
    pub fn len(&self) -> usize {
        self.len + self.typed.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Space left for the archive root after a payload (root + alignment).
const ROOT_RESERVE: usize = 16;

/// What a host call needs from the dispatcher: the rings in use and the end
/// (data offset in the output ring) of the response under construction,
/// `usize::MAX` when none is. Atomics only make the guest's `static` safe to
/// share; the guest is single-threaded.
struct Current {
    input: AtomicPtr<u8>,
    input_len: AtomicUsize,
    output: AtomicPtr<u8>,
    output_len: AtomicUsize,
    partial_end: AtomicUsize,
}

impl Current {
    const fn new() -> Self {
        Self {
            input: AtomicPtr::new(core::ptr::null_mut()),
            input_len: AtomicUsize::new(0),
            output: AtomicPtr::new(core::ptr::null_mut()),
            output_len: AtomicUsize::new(0),
            partial_end: AtomicUsize::new(usize::MAX),
        }
    }

    fn rings(&self) -> Option<(RingRegion, RingRegion)> {
        let input = NonNull::new(self.input.load(Ordering::Relaxed))?;
        let output = NonNull::new(self.output.load(Ordering::Relaxed))?;
        let input_len = self.input_len.load(Ordering::Relaxed);
        let output_len = self.output_len.load(Ordering::Relaxed);
        // SAFETY: only `publish_rings` stores these fields, from regions its
        // caller vouched for while they are published (and `Published`
        // takes them down again when that ends).
        Some(unsafe {
            (
                RingRegion::from_raw_parts(input, input_len),
                RingRegion::from_raw_parts(output, output_len),
            )
        })
    }

    fn set_rings(&self, rings: Option<(RingRegion, RingRegion)>) {
        let parts = |r: Option<RingRegion>| {
            r.and_then(|r| Some((r.ptr_at(0)?.as_ptr(), r.len())))
                .unwrap_or((core::ptr::null_mut(), 0))
        };
        let (input, input_len) = parts(rings.map(|r| r.0));
        let (output, output_len) = parts(rings.map(|r| r.1));
        self.input.store(input, Ordering::Relaxed);
        self.input_len.store(input_len, Ordering::Relaxed);
        self.output.store(output, Ordering::Relaxed);
        self.output_len.store(output_len, Ordering::Relaxed);
    }
}

/// The guest has one thread, so one `Current`.
#[cfg(nub_bare)]
static CURRENT: Current = Current::new();

// On the host, tests run dispatchers (and harnesses) on many threads at
// once: one `Current` per thread keeps them apart.
#[cfg(not(nub_bare))]
std::thread_local! {
    static CURRENT: Current = const { Current::new() };
}

fn with_current<R>(f: impl FnOnce(&Current) -> R) -> R {
    #[cfg(nub_bare)]
    return f(&CURRENT);
    #[cfg(not(nub_bare))]
    return CURRENT.with(f);
}

fn partial_response_end() -> usize {
    with_current(|c| c.partial_end.load(Ordering::Relaxed))
}

fn set_partial_response_end(end: usize) {
    with_current(|c| c.partial_end.store(end, Ordering::Relaxed));
}

/// The rings published for host calls on this thread, if any.
pub(crate) fn current_rings() -> Option<(RingRegion, RingRegion)> {
    with_current(Current::rings)
}

/// Rings published for host calls; dropping it restores what was published
/// before.
pub(crate) struct Published {
    previous: Option<(RingRegion, RingRegion)>,
    previous_end: usize,
}

impl Drop for Published {
    fn drop(&mut self) {
        with_current(|c| {
            c.set_rings(self.previous);
            c.partial_end.store(self.previous_end, Ordering::Relaxed);
        });
    }
}

/// Publishes `input` and `output` as the rings [`crate::host_call`] uses on
/// this thread (with no response under construction) until the returned
/// guard is dropped.
///
/// # Safety
///
/// Both regions must meet [`RingRegion::from_raw_parts`]'s contract for as
/// long as the guard lives, and a host call made meanwhile must be free to
/// write a frame at the host-call slot of `output` and read the input ring,
/// as [`crate::host_call`] does: nothing else may hold a reference into the
/// rings across a guest function call except what [`process_regions`]
/// hands out.
pub(crate) unsafe fn publish_rings(input: RingRegion, output: RingRegion) -> Published {
    with_current(|c| {
        let previous = c.rings();
        let previous_end = c.partial_end.swap(usize::MAX, Ordering::Relaxed);
        c.set_rings(Some((input, output)));
        Published {
            previous,
            previous_end,
        }
    })
}

/// Data offset in the output ring where a host-call frame can go without
/// touching the response being built, if one is being built: past the bytes
/// written so far and the space kept for the archive root, aligned.
pub fn host_call_slot() -> Option<usize> {
    match partial_response_end() {
        usize::MAX => None,
        end => end
            .checked_add(ROOT_RESERVE)?
            .checked_next_multiple_of(FRAME_ALIGN),
    }
}

/// Where a guest function writes its result: the body of the response frame
/// in the output ring.
///
/// It keeps a raw pointer, not a `&mut [u8]`, because a host call made by the
/// function writes its frame into the same ring, past what the function has
/// written (see [`crate::region`]); the output makes a reference only to the
/// bytes one `write` copies or `as_slice` returns, all before that point.
#[derive(Debug)]
pub struct Output<'a> {
    /// Start of the body space.
    ptr: NonNull<u8>,
    /// Bytes of body space, the root reserve included.
    cap: usize,
    len: usize,
    overflow: Option<usize>,
    /// Data offset of the body in the output ring when the dispatcher made
    /// this output: host calls then place their frame past what is written.
    /// `None` for [`Output::new`].
    base: Option<usize>,
    /// The body space is borrowed exclusively for `'a`.
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> Output<'a> {
    /// An output writing into `buf` (the whole free body space; the last
    /// bytes are kept for the archive root).
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self {
            cap: buf.len(),
            // A slice's pointer is never null.
            ptr: NonNull::from(buf).cast(),
            len: 0,
            overflow: None,
            base: None,
            _buf: PhantomData,
        }
    }

    /// An output over the body space from byte `body_start` of `region` to
    /// its end; `base` is that body's data offset in the ring. `None` if
    /// `body_start` is past the end.
    ///
    /// # Safety
    ///
    /// While the output lives, the bytes from `body_start` on may be
    /// accessed only through it, except that a host call may write its frame
    /// from [`host_call_slot`] on.
    unsafe fn in_ring(region: RingRegion, body_start: usize, base: usize) -> Option<Self> {
        Some(Self {
            ptr: region.ptr_at(body_start)?,
            cap: region.len() - body_start,
            len: 0,
            overflow: None,
            base: Some(base),
            _buf: PhantomData,
        })
    }

    fn publish_end(&self) {
        if let Some(base) = self.base {
            set_partial_response_end(base.saturating_add(self.len));
        }
    }

    fn limit(&self) -> usize {
        self.cap.saturating_sub(ROOT_RESERVE)
    }

    /// Appends `bytes`. Fails (and marks the response too large) if they do
    /// not fit in the output ring.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), GuestError> {
        let end = self.len.saturating_add(bytes.len());
        if end > self.limit() {
            self.overflow = Some(end);
            return Err(GuestError::new("response does not fit in the output ring"));
        }
        // SAFETY: `len..end` lies in the body space (`end <= limit <= cap`),
        // which this output borrows exclusively, and no reference to those
        // bytes is live: `as_slice` covers only `..len` and borrows `self`,
        // and a host-call frame (written only during `host_call`, never
        // during this copy) lives past the published end. `bytes` is a live
        // shared reference, so it cannot point at bytes this output may
        // write.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len = end;
        self.publish_end();
        Ok(())
    }

    /// Lets `encode` write straight into the space left (nothing is
    /// copied) and appends the bytes it says it wrote. `false`, with
    /// nothing appended, when `encode` returns `None` (it did not fit).
    pub(crate) fn write_in_place(
        &mut self,
        encode: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let room = self.remaining();
        // SAFETY: `len..len + room` lies in the body space (`len + room ==
        // limit <= cap` when `len <= limit`, else `room` is 0), which this
        // output borrows exclusively; no other reference to those bytes is
        // live (`as_slice` covers only `..len` and borrows `self`, which
        // this `&mut self` excludes), and no host call runs while `encode`
        // holds the slice: it is the crate's own encoder, which makes none.
        let space =
            unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), room) };
        match encode(space) {
            Some(n) if n <= room => {
                self.len += n;
                self.publish_end();
                true
            }
            _ => false,
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
        // SAFETY: `..len` was written by this output and lies in its body
        // space; while the returned borrow of `self` lives, `write` cannot
        // run and host-call frames go past the published end (`>= len`).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Discards what was written.
    pub fn clear(&mut self) {
        self.len = 0;
        self.publish_end();
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

/// Answers every request in `input` (a whole ring region) with a response in
/// `output`, in order. Never panics on any ring contents. Guest functions
/// may make host calls meanwhile (on the host: inside a
/// [`crate::testing`] harness).
pub fn process_requests(
    input: &mut [u8],
    output: &mut [u8],
    registry: &Registry,
    system: &mut dyn SystemFunctions,
) {
    let input = RingRegion::from_mut_slice(input);
    let output = RingRegion::from_mut_slice(output);
    // SAFETY: both regions come from exclusive borrows held for this whole
    // call, so nothing outside reaches their bytes (two `&mut` cannot
    // overlap); inside, only `process_regions` and the host calls it allows
    // access them.
    unsafe { process_regions(input, output, registry, system) }
}

/// [`process_requests`] over rings the caller holds as regions (the kernel's
/// entry: the rings are guest memory the host also writes).
///
/// # Safety
///
/// `input` and `output` must not overlap, must meet
/// [`RingRegion::from_raw_parts`]'s contract for the whole call, and no
/// reference to any of their bytes may be live when it starts. During the
/// call the host may write only the input ring past its tail, and only
/// while stopped in a host-call exit.
pub unsafe fn process_regions(
    input: RingRegion,
    output: RingRegion,
    registry: &Registry,
    system: &mut dyn SystemFunctions,
) {
    // SAFETY: the caller's contract is the one `publish_rings` needs; the
    // guard takes them down when this returns.
    let _published = unsafe { publish_rings(input, output) };
    loop {
        // SAFETY: between requests no reference into the input ring is live
        // (the last payload's borrow ended with its function), and nothing
        // writes it while this view is used (the view and everything taken
        // from it end before `set_head` below; the host writes only past the
        // tail, where nothing reads through this view).
        let view = unsafe { input.all() };
        let Ok(reader) = RingReader::new(view) else {
            return;
        };
        let (head, tail) = match reader.offsets() {
            Ok(o) => o,
            Err(_) => {
                // SAFETY: no guest function is running; nothing references
                // the output ring, and `view` is not used again.
                unsafe { push_bad_request(output, b"input ring header corrupt") };
                // SAFETY: as above, for the input ring.
                if let Ok(mut w) = RingWriter::new(unsafe { input.all_mut() }) {
                    w.reset();
                }
                return;
            }
        };
        if head == tail {
            return;
        }
        let (next, request) = match reader.frame_at(head, tail) {
            Ok(f) if f.kind == FrameKind::Request => (f.next, rpc::decode_request(f.body).ok()),
            Ok(f) => (f.next, None),
            Err(_) => (tail, None),
        };
        match request {
            Some((fn_id, payload)) => {
                // SAFETY: nothing references the output ring between
                // requests, and `payload` lies in the input ring, which
                // does not overlap it.
                unsafe { answer(output, fn_id, payload, registry, system) };
            }
            None => {
                // SAFETY: as for `answer`; no guest function is running.
                unsafe { push_bad_request(output, b"undecodable request frame") };
            }
        }
        // SAFETY: the request's payload (and `view`) are no longer used;
        // nothing else references the input ring.
        if let Ok(mut w) = RingWriter::new(unsafe { input.all_mut() }) {
            w.set_head(next);
        }
    }
}

/// Appends a `BadRequest` response with `message`.
///
/// # Safety
///
/// No reference into `output` may be live.
unsafe fn push_bad_request(output: RingRegion, message: &[u8]) {
    // SAFETY: guaranteed by the caller.
    if let Ok(mut w) = RingWriter::new(unsafe { output.all_mut() }) {
        let _ = w.push_with(FrameKind::Response, |b| {
            rpc::encode_response(b, Status::BadRequest as u32, message)
        });
    }
}

/// Runs one request and appends its response frame at the output tail.
///
/// # Safety
///
/// No reference into `output` may be live, and `payload` must not point
/// into it.
unsafe fn answer(
    output: RingRegion,
    fn_id: u32,
    payload: &[u8],
    registry: &Registry,
    system: &mut dyn SystemFunctions,
) {
    // SAFETY: guaranteed by the caller; the view ends in this statement.
    let offsets = RingReader::new(unsafe { output.all() }).and_then(|r| r.offsets());
    let Ok((head, frame)) = offsets else {
        return;
    };
    let base = frame + FRAME_HEADER_SIZE;
    // SAFETY: nothing references the output ring (caller), so the body
    // space from `RING_HEADER_SIZE + base` on is the output's alone while it
    // lives, but for host-call frames past the published end.
    let out = unsafe { Output::in_ring(output, RING_HEADER_SIZE + base, base) };
    let (outcome, len, overflow) = match out {
        Some(mut out) => {
            out.publish_end();
            let outcome = if rpc::is_system_fn_id(fn_id) {
                system.call(fn_id, payload, &mut out)
            } else {
                registry.call(fn_id, payload, &mut out)
            };
            (outcome, out.len, out.overflow)
        }
        None => (None, 0, Some(0)),
    };
    set_partial_response_end(usize::MAX);
    // SAFETY: the function has returned and its output is gone, so nothing
    // references the output ring; this `&mut` is the only one until the
    // end of this function.
    let Ok(mut w) = RingWriter::new(unsafe { output.all_mut() }) else {
        return;
    };
    let written = w.write_frame_at(frame, FrameKind::Response, |body| {
        let (status, len) = match (outcome, overflow) {
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
            (Some(Ok(())), _) => (Status::Ok, len),
            (Some(Err(e)), _) => {
                return rpc::encode_guest_error(body, e.code(), e.message().as_bytes());
            }
        };
        rpc::finish_response_in_place(body, status as u32, len)
    });
    match written {
        Ok(end) => w.set_offsets(head, end),
        Err(_) => {
            // Not even an error response fits; tell the host with the
            // smallest frame there is.
            let _ = w.push_with(FrameKind::Response, |b| {
                rpc::encode_response(b, Status::ResponseTooLarge as u32, &[])
            });
        }
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
        let mut input = crate::testing::zeroed(8192);
        let mut output = crate::testing::zeroed(8192);
        push_requests(&mut input, &[(1, b"hi"), (3, b"bad"), (9, b""), (1, b"")]);
        process_requests(&mut input, &mut output, &registry(), &mut NoSystem);
        let got = read_responses(&output);
        assert_eq!(got.len(), 4, "one response per request");
        assert_eq!(got[0], (Status::Ok as u32, b"hi".to_vec()));
        // Code 0 (u32 LE), then the message.
        assert_eq!(got[1], (Status::GuestError as u32, b"\0\0\0\0bad".to_vec()));
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
        let mut input = crate::testing::zeroed(8192);
        let mut output = crate::testing::zeroed(256);
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
        // Miri interprets every rkyv validation: fewer rounds keep it quick.
        let rounds = if cfg!(miri) { 100 } else { 2000 };
        for round in 0..rounds {
            let mut input = crate::testing::zeroed(512);
            let mut output = crate::testing::zeroed(512);
            push_requests(&mut input, &[(1, b"abcdef")]);
            for _ in 0..(round % 16) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % 160;
                input[i] = (seed >> 32) as u8;
            }
            process_requests(&mut input, &mut output, &reg, &mut NoSystem);
        }
    }

    /// Writes 100 bytes, then checks where a host call made now would put its
    /// frame: past the whole response those bytes would make (payload,
    /// padding and archive root), so the bytes survive and the root fits.
    fn writes_then_reports_slot(_: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        out.write(&[0xAA; 100])?;
        let slot = host_call_slot().ok_or(GuestError::new("no slot while a response is built"))?;
        // Response frame at offset 0: its body starts after the header.
        if slot < FRAME_HEADER_SIZE + rpc::response_size(100) {
            return Err(GuestError::new(
                "host-call slot overlaps the response's payload or root",
            ));
        }
        if slot % FRAME_ALIGN != 0 {
            return Err(GuestError::new("host-call slot is not frame-aligned"));
        }
        out.write(&(slot as u64).to_le_bytes())
    }

    #[test]
    fn host_call_slot_lies_past_the_partial_response() {
        let mut r = Registry::new();
        r.register(5, writes_then_reports_slot).unwrap();
        let mut input = crate::testing::zeroed(4096);
        let mut output = crate::testing::zeroed(4096);
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
