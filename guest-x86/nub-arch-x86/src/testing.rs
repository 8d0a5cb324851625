//! Running guest functions on the host, under plain `cargo test`.
//!
//! Built only off the bare-metal target (`cfg(not(target_os = "none"))`).
//! This module owns the host side of a guest function's world when there is
//! no VM: two ring buffers in host memory, the real dispatcher
//! ([`crate::dispatch::process_requests`]) answering one request frame from
//! them, and host functions answered by closures. A guest function runs
//! exactly as it does in a sandbox: its input is read in place from a
//! request frame, it writes into a real [`crate::Output`] over the response frame,
//! and [`crate::host_call`] writes a host-call frame after the partial
//! response and reads the answer from the input ring. What comes back is
//! the decoded response: the result bytes, or a [`CallError`].
//!
//! ```
//! use nub_arch_x86::{GuestError, Output, Registry, testing};
//!
//! fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
//!     out.write(input)
//! }
//!
//! fn shout(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
//!     let answer = nub_arch_x86::host_call(100, input).map_err(GuestError::msg)?;
//!     out.write(&answer)
//! }
//!
//! fn init(registry: &mut Registry) {
//!     registry.register(1, echo).expect("fn id 1 is free");
//!     registry.register(5, shout).expect("fn id 5 is free");
//! }
//!
//! # fn main() -> Result<(), testing::CallError> {
//! // One function, no host functions.
//! assert_eq!(testing::call(echo, b"hi")?, b"hi");
//! // By fn id, through the registry the guest's own init fills, with host
//! // function 100 answered by a closure.
//! let out = testing::Harness::new()
//!     .host_fn(100, |p| Ok(p.to_ascii_uppercase()))
//!     .call_id(init, 5, b"hi")?;
//! assert_eq!(out, b"HI");
//! # Ok(())
//! # }
//! ```
//!
//! On the host, [`crate::host_call`] is answered by the harness that is
//! running the current guest function on this thread (a thread-local), and
//! fails with [`HostCallError::NoHost`] anywhere else. [`crate::abort`]
//! panics with its code and message (use `#[should_panic]`). A panic in a
//! guest function or a host closure unwinds into the test.
//!
//! What differs from a sandbox: the capability directory
//! ([`crate::state_cache::DIRECTORY`]) and any `static` of the guest are
//! shared by every test in the process; the `FN_ID_NUB_HEAP_STATS` system
//! function reports zeros (there is no guest heap); a host closure returns
//! `Result<Vec<u8>, String>` and the guest sees an `Err` as
//! [`HostCallError::Host`]; each call runs the init function again on a
//! fresh registry.

use std::{
    boxed::Box,
    cell::RefCell,
    collections::BTreeMap,
    fmt, format,
    string::{String, ToString},
    vec::Vec,
};

use nub_host_common::{
    boot::{BOOT_MAGIC, BootInfo},
    ring::{FrameKind, RingReader, RingWriter},
    rpc::{self, Status},
};
use rkyv::util::AlignedVec;

use crate::{
    GuestError, GuestFn, HostCallError, Registry,
    dispatch::{self, process_requests},
    hostcall,
    system::{HeapStats, KernelSystem},
};

/// Size of each ring a [`Harness`] uses unless told otherwise: the
/// sandbox's default ring size (256 KiB).
pub const DEFAULT_RING_SIZE: usize = 256 << 10;

/// The fn id [`call`] and [`Harness::call`] register the function under.
const CALL_FN_ID: u32 = 1;

/// A host function as the harness runs it: the payload in, the answer or
/// an error message out (the guest gets the message as
/// [`HostCallError::Host`]).
pub type HostFn = Box<dyn FnMut(&[u8]) -> Result<Vec<u8>, String>>;

/// Why a call through the harness did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The guest function returned this error (its message as the host
    /// would see it).
    Guest(GuestError),
    /// The registry the init function filled has no function with this id.
    UnknownFunction(u32),
    /// The result does not fit in the output ring; `needed` is the size the
    /// function tried to reach, when the dispatcher could say.
    ResponseTooLarge {
        /// Bytes the result needed.
        needed: Option<u64>,
    },
    /// The input does not fit in the input ring.
    RequestTooLarge {
        /// The input's length.
        len: usize,
    },
    /// The response could not be read back (the guest function wrote over
    /// the rings).
    Protocol(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Guest(e) => write!(f, "guest function failed: {e}"),
            Self::UnknownFunction(id) => write!(f, "no guest function with id {id}"),
            Self::ResponseTooLarge { needed: Some(n) } => {
                write!(f, "response of {n} bytes does not fit in the output ring")
            }
            Self::ResponseTooLarge { needed: None } => {
                write!(f, "response does not fit in the output ring")
            }
            Self::RequestTooLarge { len } => {
                write!(f, "input of {len} bytes does not fit in the input ring")
            }
            Self::Protocol(msg) => write!(f, "unreadable response: {msg}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Calls `f` with `input` in a fresh [`Harness`] (no host functions) and
/// returns its result bytes.
pub fn call(f: GuestFn, input: &[u8]) -> Result<Vec<u8>, CallError> {
    Harness::new().call(f, input)
}

/// Calls fn id `fn_id` of the registry `init` fills, in a fresh [`Harness`]
/// (no host functions), and returns its result bytes.
pub fn call_id(init: fn(&mut Registry), fn_id: u32, input: &[u8]) -> Result<Vec<u8>, CallError> {
    Harness::new().call_id(init, fn_id, input)
}

/// Runs guest functions on the host with host functions answered by
/// closures. Build it with [`Harness::new`] and [`Harness::host_fn`], then
/// call as often as needed; host functions keep their state between calls.
pub struct Harness {
    host_fns: BTreeMap<u32, HostFn>,
    host_calls: Vec<(u32, Vec<u8>)>,
    input_ring_size: usize,
    output_ring_size: usize,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("host_fns", &self.host_fns.keys().collect::<Vec<_>>())
            .field("host_calls", &self.host_calls.len())
            .field("input_ring_size", &self.input_ring_size)
            .field("output_ring_size", &self.output_ring_size)
            .finish()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness with no host functions and [`DEFAULT_RING_SIZE`] rings.
    pub fn new() -> Self {
        Self {
            host_fns: BTreeMap::new(),
            host_calls: Vec::new(),
            input_ring_size: DEFAULT_RING_SIZE,
            output_ring_size: DEFAULT_RING_SIZE,
        }
    }

    /// Answers host calls to `fn_id` with `f` (replacing an earlier one).
    /// Calls to ids without a closure fail in the guest with
    /// [`HostCallError::UnknownFunction`], as in a sandbox.
    pub fn host_fn(
        mut self,
        fn_id: u32,
        f: impl FnMut(&[u8]) -> Result<Vec<u8>, String> + 'static,
    ) -> Self {
        self.host_fns.insert(fn_id, Box::new(f));
        self
    }

    /// Uses rings of these sizes in bytes (header included) instead of
    /// [`DEFAULT_RING_SIZE`], e.g. to test what happens when a result does
    /// not fit.
    pub fn ring_sizes(mut self, input: usize, output: usize) -> Self {
        self.input_ring_size = input;
        self.output_ring_size = output;
        self
    }

    /// Every host call the guest made so far, in order: `(fn id, payload)`.
    pub fn host_calls(&self) -> &[(u32, Vec<u8>)] {
        &self.host_calls
    }

    /// Calls `f` with `input` and returns its result bytes.
    pub fn call(&mut self, f: GuestFn, input: &[u8]) -> Result<Vec<u8>, CallError> {
        self.run(
            |registry| {
                // A fresh registry always has room for one function.
                let _ = registry.register(CALL_FN_ID, f);
            },
            CALL_FN_ID,
            input,
        )
    }

    /// Runs `init` (the guest's init function, the one passed to
    /// [`crate::guest_main!`]) on a fresh registry, then calls fn id `fn_id`
    /// with `input` and returns its result bytes. System fn ids
    /// (`nub_host_common::rpc::FN_ID_NUB_*`) are served as in a guest.
    pub fn call_id(
        &mut self,
        init: fn(&mut Registry),
        fn_id: u32,
        input: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        self.run(init, fn_id, input)
    }

    fn run(
        &mut self,
        init: impl FnOnce(&mut Registry),
        fn_id: u32,
        input: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let mut in_ring = zeroed(self.input_ring_size);
        let mut out_ring = zeroed(self.output_ring_size);
        let input_tail = queue_request(&mut in_ring, fn_id, input)?;
        RingWriter::new(&mut out_ring)
            .map_err(|e| CallError::Protocol(format!("output ring: {e}")))?
            .reset();
        let rings = Rings {
            input: (in_ring.as_mut_ptr(), in_ring.len()),
            output: (out_ring.as_mut_ptr(), out_ring.len()),
        };
        let guard = Installed::new(HostSide {
            fns: core::mem::take(&mut self.host_fns),
            calls: core::mem::take(&mut self.host_calls),
            rings,
            input_tail,
        });
        let mut registry = Registry::new();
        init(&mut registry);
        let mut system = host_system(self.input_ring_size, self.output_ring_size);
        process_requests(&mut in_ring, &mut out_ring, &registry, &mut system);
        if let Some(side) = guard.finish() {
            self.host_fns = side.fns;
            self.host_calls = side.calls;
        }
        read_answer(&out_ring, fn_id)
    }
}

/// A zeroed ring buffer, 16-byte aligned like the rings in guest memory
/// (frame bodies are rkyv archives, which are read aligned).
fn zeroed(len: usize) -> AlignedVec<16> {
    let mut v = AlignedVec::<16>::with_capacity(len);
    v.resize(len, 0);
    v
}

/// Resets the input ring and queues one request; returns the input tail
/// (where host-call responses go).
fn queue_request(ring: &mut [u8], fn_id: u32, input: &[u8]) -> Result<usize, CallError> {
    let too_large = CallError::RequestTooLarge { len: input.len() };
    let mut w = RingWriter::new(ring).map_err(|_| too_large.clone())?;
    w.reset();
    w.push_with(FrameKind::Request, |body| {
        rpc::encode_request(body, fn_id, input)
    })
    .map_err(|_| too_large.clone())?;
    w.reader()
        .offsets()
        .map(|(_, tail)| tail)
        .map_err(|_| too_large)
}

/// The kernel's system functions with a boot info describing the harness's
/// rings; there is no guest heap, so heap figures are zeros.
fn host_system(input_ring_size: usize, output_ring_size: usize) -> KernelSystem {
    let boot_info = BootInfo {
        magic: BOOT_MAGIC,
        abi_version: nub_host_common::ABI_VERSION,
        input_ring_size: input_ring_size as u64,
        output_ring_size: output_ring_size as u64,
        directory_va: crate::state_cache::DIRECTORY.lock().header_addr(),
        ..BootInfo::default()
    };
    KernelSystem {
        boot_info,
        heap_stats: HeapStats::default,
    }
}

/// Decodes the one response in the output ring.
fn read_answer(output: &[u8], fn_id: u32) -> Result<Vec<u8>, CallError> {
    let protocol = |e: &dyn fmt::Display| CallError::Protocol(e.to_string());
    let reader = RingReader::new(output).map_err(|e| protocol(&e))?;
    let frame = reader
        .first()
        .map_err(|e| protocol(&e))?
        .ok_or_else(|| CallError::Protocol("no response frame".into()))?;
    if frame.kind != FrameKind::Response {
        return Err(CallError::Protocol(format!(
            "frame of kind {:?} where a response belongs",
            frame.kind
        )));
    }
    let (status, payload) = rpc::decode_response(frame.body).map_err(|e| protocol(&e))?;
    match Status::try_from(status) {
        Ok(Status::Ok) => Ok(payload.to_vec()),
        Ok(Status::GuestError) => Err(CallError::Guest(GuestError::msg(String::from_utf8_lossy(
            payload,
        )))),
        Ok(Status::UnknownFunction) => Err(CallError::UnknownFunction(fn_id)),
        Ok(Status::ResponseTooLarge) => Err(CallError::ResponseTooLarge {
            needed: nub_host_common::read_u64(payload, 0),
        }),
        _ => Err(CallError::Protocol(format!(
            "unexpected response status {status}"
        ))),
    }
}

/// The two ring buffers of the running call, as raw parts.
#[derive(Debug, Clone, Copy)]
struct Rings {
    input: (*mut u8, usize),
    output: (*mut u8, usize),
}

/// The host half of a running call: what the harness lends to
/// [`host_call`] through the thread-local.
struct HostSide {
    fns: BTreeMap<u32, HostFn>,
    calls: Vec<(u32, Vec<u8>)>,
    rings: Rings,
    /// Where host-call responses go: the end of the queued request, as the
    /// harness wrote it (never re-read from the guest-writable header).
    input_tail: usize,
}

std::thread_local! {
    /// The host half of the call running on this thread, if any. Taken out
    /// while a host closure runs, so a nested `host_call` fails cleanly.
    static HOST: RefCell<Option<HostSide>> = const { RefCell::new(None) };
}

/// Lends a [`HostSide`] to this thread for one call; restores whatever was
/// there before when finished or dropped (a panic unwinding out of a guest
/// function leaves nothing behind).
struct Installed {
    previous: Option<Option<HostSide>>,
}

impl Installed {
    fn new(side: HostSide) -> Self {
        let previous = HOST.with(|h| h.replace(Some(side)));
        Self {
            previous: Some(previous),
        }
    }

    /// Ends the call; returns the host side (with the closures' state and
    /// the call log), if a panic did not consume it.
    fn finish(mut self) -> Option<HostSide> {
        let previous = self.previous.take().flatten();
        HOST.with(|h| h.replace(previous))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            HOST.with(|h| h.replace(previous));
        }
    }
}

/// Calls host function `fn_id` with `payload` and returns its result: the
/// host build of [`crate::host_call`]. Inside a guest function run by a
/// [`Harness`] the harness's closure answers, through the same frames as
/// in a sandbox; anywhere else it fails with [`HostCallError::NoHost`].
pub fn host_call(fn_id: u32, payload: &[u8]) -> Result<Vec<u8>, HostCallError> {
    let mut side = HOST
        .with(|h| h.borrow_mut().take())
        .ok_or(HostCallError::NoHost)?;
    let result = side.round_trip(fn_id, payload);
    HOST.with(|h| *h.borrow_mut() = Some(side));
    result
}

impl HostSide {
    /// What a host call does in a guest, with the exit replaced by
    /// [`Self::serve`].
    fn round_trip(&mut self, fn_id: u32, payload: &[u8]) -> Result<Vec<u8>, HostCallError> {
        let slot = dispatch::host_call_slot().unwrap_or(0);
        let (ptr, len) = self.rings.output;
        // SAFETY: the harness's output ring buffer outlives the call; the
        // host-call frame lies past the partial response.
        let output = unsafe { core::slice::from_raw_parts_mut(ptr, len) };
        hostcall::write_request(output, slot, fn_id, payload)?;
        self.serve(slot)?;
        let (ptr, len) = self.rings.input;
        // SAFETY: the harness's input ring buffer outlives the call; this
        // view only reads.
        let input = unsafe { core::slice::from_raw_parts(ptr, len) };
        hostcall::read_response(input, fn_id)
    }

    /// The host's side of the HOST_CALL exit, as `nub-sandbox` does it:
    /// reads the request frame at `slot` of the output ring, runs the
    /// closure, writes the response frame at the input tail.
    fn serve(&mut self, slot: usize) -> Result<(), HostCallError> {
        let (ptr, len) = self.rings.output;
        // SAFETY: as in `round_trip`; read-only view.
        let output = unsafe { core::slice::from_raw_parts(ptr, len) };
        let reader = RingReader::new(output).map_err(|_| HostCallError::BadResponse)?;
        let frame = reader
            .frame_at(slot, reader.capacity())
            .map_err(|_| HostCallError::BadResponse)?;
        if frame.kind != FrameKind::HostCallRequest {
            return Err(HostCallError::BadResponse);
        }
        let (fn_id, payload) =
            rpc::decode_request(frame.body).map_err(|_| HostCallError::BadResponse)?;
        let payload = payload.to_vec();
        let (status, answer) = match self.fns.get_mut(&fn_id) {
            None => (Status::UnknownHostFunction, Vec::new()),
            Some(f) => match f(&payload) {
                Ok(bytes) => (Status::Ok, bytes),
                Err(msg) => (Status::HostError, msg.into_bytes()),
            },
        };
        self.calls.push((fn_id, payload));
        let (ptr, len) = self.rings.input;
        // SAFETY: as in `round_trip`; the response goes past the queued
        // request.
        let input = unsafe { core::slice::from_raw_parts_mut(ptr, len) };
        let mut w = RingWriter::new(input).map_err(|_| HostCallError::BadResponse)?;
        let tail = self.input_tail;
        let written = w.write_frame_at(tail, FrameKind::HostCallResponse, |body| {
            rpc::encode_response(body, status as u32, &answer)
        });
        if written.is_err() {
            let msg = format!(
                "host function {fn_id} returned {} bytes, more than the input ring holds",
                answer.len()
            );
            w.write_frame_at(tail, FrameKind::HostCallResponse, |body| {
                rpc::encode_response(body, Status::HostError as u32, msg.as_bytes())
            })
            .map_err(|_| HostCallError::BadResponse)?;
        }
        Ok(())
    }
}

/// Ends the execution on purpose: the host build of [`crate::abort`].
/// Panics with `code` and `message`, so a test can expect it with
/// `#[should_panic(expected = "...")]`.
pub fn abort(code: u64, message: &str) -> ! {
    panic!("guest aborted with code {code}: {message}")
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, rc::Rc};

    use super::*;
    use crate::Output;

    fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        out.write(input)
    }

    fn fail(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
        Err(GuestError::msg(String::from_utf8_lossy(input)))
    }

    /// Writes a prefix, makes a host call to fn 100 with its input, then
    /// appends the answer: the prefix must survive the host-call frame.
    fn prefix_then_host(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        out.write(b"<")?;
        let answer = crate::host_call(100, input).map_err(GuestError::msg)?;
        out.write(&answer)?;
        out.write(b">")
    }

    fn host_error_text(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        let id = u32::from(input.first().copied().unwrap_or(0));
        match crate::host_call(id, b"x") {
            Ok(bytes) => out.write(&bytes),
            Err(e) => out.write(e.to_string().as_bytes()),
        }
    }

    fn init(registry: &mut Registry) {
        registry.register(1, echo).unwrap();
        registry.register(3, fail).unwrap();
        registry.register(5, prefix_then_host).unwrap();
        registry.register(6, host_error_text).unwrap();
    }

    #[test]
    fn call_returns_the_result() {
        assert_eq!(call(echo, b"hello").unwrap(), b"hello");
        assert_eq!(call(echo, b"").unwrap(), b"");
    }

    #[test]
    fn guest_errors_come_back_typed() {
        assert_eq!(
            call(fail, b"bad input"),
            Err(CallError::Guest(GuestError::new("bad input")))
        );
        assert_eq!(
            call_id(init, 3, b"x"),
            Err(CallError::Guest(GuestError::new("x")))
        );
    }

    #[test]
    fn call_id_uses_the_registry_init_fills() {
        assert_eq!(call_id(init, 1, b"abc").unwrap(), b"abc");
        assert_eq!(call_id(init, 42, b""), Err(CallError::UnknownFunction(42)));
    }

    #[test]
    fn system_functions_are_served() {
        let info = call_id(init, rpc::FN_ID_NUB_GET_BOOT_INFO, b"").unwrap();
        let info = BootInfo::from_bytes(&info).unwrap();
        assert_eq!(info.output_ring_size, DEFAULT_RING_SIZE as u64);
        let stats = call_id(init, rpc::FN_ID_NUB_HEAP_STATS, b"").unwrap();
        assert_eq!(stats, [0u8; 24]);
    }

    #[test]
    fn host_closures_answer_host_calls() {
        let seen = Rc::new(Cell::new(0));
        let counter = Rc::clone(&seen);
        let mut h = Harness::new().host_fn(100, move |p| {
            counter.set(counter.get() + 1);
            Ok(p.to_ascii_uppercase())
        });
        assert_eq!(h.call_id(init, 5, b"hi").unwrap(), b"<HI>");
        assert_eq!(h.call(prefix_then_host, b"yo").unwrap(), b"<YO>");
        assert_eq!(seen.get(), 2, "closure state lives across calls");
        assert_eq!(
            h.host_calls(),
            &[(100, b"hi".to_vec()), (100, b"yo".to_vec())]
        );
    }

    #[test]
    fn host_errors_and_unknown_host_functions_reach_the_guest() {
        let mut h = Harness::new().host_fn(1, |_| Err("refused".into()));
        assert_eq!(
            h.call(host_error_text, &[1]).unwrap(),
            HostCallError::Host("refused".into()).to_string().as_bytes()
        );
        assert_eq!(
            h.call(host_error_text, &[2]).unwrap(),
            HostCallError::UnknownFunction(2).to_string().as_bytes()
        );
    }

    #[test]
    fn host_answer_too_large_for_the_input_ring_is_a_host_error() {
        let mut h = Harness::new()
            .ring_sizes(4096, 4096)
            .host_fn(100, |_| Ok(vec![7; 8192]));
        let err = h.call(prefix_then_host, b"").unwrap_err();
        let CallError::Guest(e) = err else {
            panic!("expected a guest error, got {err:?}");
        };
        assert!(
            e.message().contains("more than the input ring holds"),
            "{e}"
        );
    }

    #[test]
    fn host_call_outside_a_harness_is_no_host() {
        assert_eq!(crate::host_call(1, b""), Err(HostCallError::NoHost));
        // Nor from a host closure: it runs outside the guest function.
        let mut h = Harness::new().host_fn(100, |_| {
            assert_eq!(crate::host_call(100, b""), Err(HostCallError::NoHost));
            Ok(b"ok".to_vec())
        });
        assert_eq!(h.call(prefix_then_host, b"").unwrap(), b"<ok>");
        assert_eq!(crate::host_call(1, b""), Err(HostCallError::NoHost));
    }

    #[test]
    fn oversized_input_and_output_are_typed() {
        let mut h = Harness::new().ring_sizes(256, 256);
        assert_eq!(
            h.call(echo, &[1; 1024]),
            Err(CallError::RequestTooLarge { len: 1024 })
        );
        let mut h = Harness::new().ring_sizes(4096, 256);
        assert_eq!(
            h.call(echo, &[1; 1024]),
            Err(CallError::ResponseTooLarge { needed: Some(1024) })
        );
    }

    #[test]
    fn a_panicking_guest_function_leaves_no_harness_behind() {
        fn boom(_: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
            panic!("boom")
        }
        let result = std::panic::catch_unwind(|| call(boom, b""));
        assert!(result.is_err());
        assert_eq!(crate::host_call(1, b""), Err(HostCallError::NoHost));
    }

    #[test]
    #[should_panic(expected = "guest aborted with code 7: stop")]
    fn abort_panics_with_code_and_message() {
        fn aborts(_: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
            crate::abort(7, "stop")
        }
        let _ = call(aborts, b"");
    }
}
