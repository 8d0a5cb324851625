//! Running guest functions on the host, under plain `cargo test`.
//!
//! Built only off the bare-metal target (`cfg(not(nub_bare))`).
//! This module owns the host side of a guest function's world when there is
//! no VM: two ring buffers in host memory, the real dispatcher
//! ([`crate::dispatch::process_regions`]) answering one request frame from
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
    boot::BootInfo,
    ring::{self, FrameKind, RING_HEADER_SIZE, RingReader, RingWriter},
    rpc::{self, Status},
};
use rkyv::util::AlignedVec;

use crate::{
    GuestError, GuestFn, HostCallError, Registry,
    dispatch::{self, process_regions},
    region::RingRegion,
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
#[non_exhaustive]
pub enum CallError {
    /// The guest function returned this error (its code and message as
    /// the host would see them).
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

    /// Answers calls to declared host function `F` with the typed closure
    /// `f`, as `nub_sandbox::TypedRegistrable::register_typed` does in a
    /// sandbox.
    pub fn host_typed<F: nub_interface::Function>(
        self,
        mut f: impl FnMut(F::Args) -> Result<F::Ret, F::Err> + 'static,
    ) -> Self {
        self.host_fn(F::ID, move |payload| {
            Ok(nub_interface::serve::<F>(payload, &mut f))
        })
    }

    /// Runs `init` on a fresh registry (so a fresh [`crate::State`]), then
    /// calls declared guest function `F` with `args`, as
    /// `MultiUseSandbox::call` does: the function's result or its own
    /// error; a reply that does not decode is [`CallError::Protocol`].
    pub fn call_typed<F: nub_interface::Function>(
        &mut self,
        init: fn(&mut Registry),
        args: &F::Args,
    ) -> Result<Result<F::Ret, F::Err>, CallError> {
        self.run_typed::<F>(Registries::Fresh(&init), args)
    }

    /// Calls declared guest function `F` with `args` in `registry`, which
    /// the test built (and keeps): its [`crate::State`]s live on between
    /// calls, so a sequence of calls is tested as one guest sees it.
    ///
    /// ```
    /// use nub_arch_x86::{Registry, State, testing::Harness};
    /// nub_interface::interface! {
    ///     mod counter { guest Add = 1 (u64) -> u64 | nub_interface::Never; }
    /// }
    /// fn add(total: &mut u64, n: u64) -> Result<u64, nub_interface::Never> {
    ///     *total += n;
    ///     Ok(*total)
    /// }
    /// let mut registry = Registry::new();
    /// registry.typed_with::<counter::Add, _>(&State::new(0u64), add).unwrap();
    /// let mut h = Harness::new();
    /// assert_eq!(h.call_typed_in::<counter::Add>(&registry, &2), Ok(Ok(2)));
    /// assert_eq!(h.call_typed_in::<counter::Add>(&registry, &3), Ok(Ok(5)));
    /// ```
    pub fn call_typed_in<F: nub_interface::Function>(
        &mut self,
        registry: &Registry,
        args: &F::Args,
    ) -> Result<Result<F::Ret, F::Err>, CallError> {
        self.run_typed::<F>(Registries::Built(registry), args)
    }

    /// One typed call of `F` through `registries`, encoded and decoded as
    /// `MultiUseSandbox::call` does.
    fn run_typed<F: nub_interface::Function>(
        &mut self,
        registries: Registries<'_>,
        args: &F::Args,
    ) -> Result<Result<F::Ret, F::Err>, CallError> {
        let request = nub_interface::encode_args::<F>(args)
            .map_err(|e| CallError::Protocol(format!("typed request: {e}")))?;
        let reply = self.run(registries, F::ID, &request)?;
        nub_interface::decode_reply::<F>(&reply)
            .map_err(|e| CallError::Protocol(format!("typed reply: {e}")))
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
            Registries::Fresh(&|registry: &mut Registry| {
                // A fresh registry always has room for one function.
                let _ = registry.register(CALL_FN_ID, f);
            }),
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
        self.run(Registries::Fresh(&init), fn_id, input)
    }

    fn run(
        &mut self,
        registries: Registries<'_>,
        fn_id: u32,
        input: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let mut in_ring = zeroed(self.input_ring_size);
        let mut out_ring = zeroed(self.output_ring_size);
        let input_tail = queue_request(&mut in_ring, fn_id, input)?;
        RingWriter::new(&mut out_ring)
            .map_err(|e| CallError::Protocol(format!("output ring: {e}")))?
            .reset();
        let in_region = RingRegion::from_mut_slice(&mut in_ring);
        let out_region = RingRegion::from_mut_slice(&mut out_ring);
        let mut fresh = Registry::new();
        let mut system = host_system(self.input_ring_size, self.output_ring_size);
        let served = {
            // SAFETY: the buffers are two separate allocations, reached only
            // through these regions until this block ends (the regions are
            // taken down with `_published`); host calls made meanwhile touch
            // them as `host_call` documents.
            let _published = unsafe { dispatch::publish_rings(in_region, out_region) };
            let installed = Installed::new(HostSide {
                fns: core::mem::take(&mut self.host_fns),
                calls: core::mem::take(&mut self.host_calls),
                input_tail,
            });
            let registry = match registries {
                Registries::Fresh(init) => {
                    init(&mut fresh);
                    &fresh
                }
                Registries::Built(registry) => registry,
            };
            // SAFETY: as above; no reference into either buffer is live.
            unsafe { process_regions(in_region, out_region, registry, &mut system) };
            installed.finish()
        };
        if let Some(side) = served {
            self.host_fns = side.fns;
            self.host_calls = side.calls;
        }
        read_answer(&out_ring, fn_id)
    }
}

/// Where a harness call finds its functions.
enum Registries<'a> {
    /// A fresh registry, filled by this init (run under the harness, so its
    /// host calls are answered).
    Fresh(&'a dyn Fn(&mut Registry)),
    /// A registry the test keeps between calls.
    Built(&'a Registry),
}

/// The guest heap's figures, as `nub_arch_x86::heap_stats` gives them in
/// a guest: on the host there is no guest heap, so they are zeros (and a
/// guest function that reports them still builds and runs under `cargo
/// test`).
pub fn heap_stats() -> HeapStats {
    HeapStats::default()
}

/// What a guest program built for the host does outside `cargo test` (the
/// `main` that [`crate::guest_main!`] defines there): says how to build and
/// run it, and returns exit status 2.
#[doc(hidden)]
pub fn not_a_host_program() -> i32 {
    std::eprintln!(
        "this is a nub guest: it runs inside a nub sandbox, not on the host.\n\
         build it with `nub build .` (x86_64-unknown-none, nub's link script),\n\
         run it with `nub call --guest . <fn id> --data ...`,\n\
         test its functions on the host with `cargo test`."
    );
    2
}

/// A zeroed ring buffer, 16-byte aligned like the rings in guest memory
/// (frame bodies are rkyv archives, which are read aligned).
pub(crate) fn zeroed(len: usize) -> AlignedVec<16> {
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
        input_ring_size: input_ring_size as u64,
        output_ring_size: output_ring_size as u64,
        directory_va: crate::state_cache::DIRECTORY.lock().header_addr(),
        ..BootInfo::new()
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
    match rpc::response_outcome(status, payload) {
        rpc::Outcome::Ok(bytes) => Ok(bytes.to_vec()),
        rpc::Outcome::GuestError { code, message } => Err(CallError::Guest(
            GuestError::msg(String::from_utf8_lossy(message)).with_code(code),
        )),
        rpc::Outcome::UnknownFunction => Err(CallError::UnknownFunction(fn_id)),
        rpc::Outcome::ResponseTooLarge { needed } => Err(CallError::ResponseTooLarge { needed }),
        rpc::Outcome::Invalid(status) => Err(CallError::Protocol(format!(
            "unexpected response status {status}"
        ))),
    }
}

/// The host half of a running call: what the harness lends to
/// [`crate::host_call`] through the thread-local.
struct HostSide {
    fns: BTreeMap<u32, HostFn>,
    calls: Vec<(u32, Vec<u8>)>,
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

/// The HOST_CALL exit on the host: the harness running this thread's guest
/// function serves the request frame at data offset `slot` of `output`.
/// The harness is taken out of the thread-local while its closure runs, so
/// a host call from inside a closure fails with [`HostCallError::NoHost`].
pub(crate) fn serve_host_call(
    input: RingRegion,
    output: RingRegion,
    slot: usize,
) -> Result<(), HostCallError> {
    let mut side = HOST
        .with(|h| h.borrow_mut().take())
        .ok_or(HostCallError::NoHost)?;
    let result = side.serve(input, output, slot);
    HOST.with(|h| *h.borrow_mut() = Some(side));
    result
}

impl HostSide {
    /// The host's side of the HOST_CALL exit, as `nub-sandbox` does it:
    /// reads the request frame at `slot` of the output ring, runs the
    /// closure, writes the response frame at the input tail.
    fn serve(
        &mut self,
        input: RingRegion,
        output: RingRegion,
        slot: usize,
    ) -> Result<(), HostCallError> {
        let (fn_id, payload) = {
            // SAFETY: a shared view; the guest side is "stopped in the exit"
            // and holds no `&mut` into the output ring (its `Output` makes
            // none while a host call runs). The view ends with this block,
            // before the closure (which might call `host_call`) runs.
            let view = unsafe { output.all() };
            let reader = RingReader::new(view).map_err(|_| HostCallError::BadResponse)?;
            let frame = reader
                .frame_at(slot, reader.capacity())
                .map_err(|_| HostCallError::BadResponse)?;
            if frame.kind != FrameKind::HostCallRequest {
                return Err(HostCallError::BadResponse);
            }
            let (fn_id, payload) =
                rpc::decode_request(frame.body).map_err(|_| HostCallError::BadResponse)?;
            (fn_id, payload.to_vec())
        };
        let (status, answer) = match self.fns.get_mut(&fn_id) {
            None => (Status::UnknownHostFunction, Vec::new()),
            Some(f) => match f(&payload) {
                Ok(bytes) => (Status::Ok, bytes),
                Err(msg) => (Status::HostError, msg.into_bytes()),
            },
        };
        self.calls.push((fn_id, payload));
        let start = RING_HEADER_SIZE
            .checked_add(self.input_tail)
            .ok_or(HostCallError::BadResponse)?;
        // SAFETY: the bytes from the input tail on lie past every queued
        // request frame, so past the payload the running function borrows,
        // and nothing else references them (`host_call` reads the answer
        // only after this returns). The slice ends with this function.
        let space =
            unsafe { input.slice_mut(start..input.len()) }.ok_or(HostCallError::BadResponse)?;
        let written = ring::write_frame(space, FrameKind::HostCallResponse, |body| {
            rpc::encode_response(body, status as u32, &answer)
        });
        if written.is_err() {
            let msg = rpc::answer_too_large(fn_id, answer.len());
            ring::write_frame(space, FrameKind::HostCallResponse, |body| {
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

    /// 300 bytes of pattern, a host call, the pattern again (read back from
    /// the output), then the answer: a host-call frame placed over the
    /// partial response would show up as a changed pattern.
    fn pattern_around_host_call(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        let pattern: Vec<u8> = (0..300u32).map(|i| (i * 7 + 1) as u8).collect();
        out.write(&pattern)?;
        let written = out.as_slice();
        let answer = crate::host_call(100, input).map_err(GuestError::msg)?;
        if written != pattern.as_slice() {
            return Err(GuestError::new("partial response changed by a host call"));
        }
        let again = out.as_slice().to_vec();
        out.write(&again)?;
        out.write(&answer)
    }

    fn host_error_text(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
        let id = u32::from(input.first().copied().unwrap_or(0));
        match crate::host_call(id, b"x") {
            Ok(bytes) => out.write(&bytes),
            Err(e) => out.write(e.to_string().as_bytes()),
        }
    }

    fn init(registry: &mut Registry) {
        registry.register(2, pattern_around_host_call).unwrap();
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
    fn host_calls_leave_the_partial_response_intact() {
        let mut h = Harness::new().host_fn(100, |p| Ok(p.repeat(100)));
        let out = h.call_id(init, 2, b"ab").unwrap();
        let pattern: Vec<u8> = (0..300u32).map(|i| (i * 7 + 1) as u8).collect();
        assert_eq!(&out[..300], pattern.as_slice());
        assert_eq!(&out[300..600], pattern.as_slice());
        assert_eq!(&out[600..], b"ab".repeat(100).as_slice());
    }

    #[test]
    fn init_can_make_host_calls() {
        fn init_calling_host(registry: &mut Registry) {
            let answer = crate::host_call(9, b"from init").unwrap_or_default();
            if answer == b"register" {
                registry.register(1, echo).unwrap();
            }
        }
        let mut h = Harness::new().host_fn(9, |_| Ok(b"register".to_vec()));
        assert_eq!(h.call_id(init_calling_host, 1, b"x").unwrap(), b"x");
        assert_eq!(h.host_calls(), &[(9, b"from init".to_vec())]);
        assert_eq!(
            call_id(init_calling_host, 1, b"x"),
            Err(CallError::UnknownFunction(1))
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
