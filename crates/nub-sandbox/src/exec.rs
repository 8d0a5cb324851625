//! The call path: frames into the input ring, the vCPU run loop, exits
//! turned into results or typed errors, host calls served in between.
//!
//! Everything read from guest memory here is untrusted. Guest-written
//! frames are copied out of guest memory once and parsed from the private
//! copy, never from the live mapping (so a guest that keeps running while
//! the host reads cannot change bytes between a check and their use): the
//! ring header (64 bytes) first, then each frame's 16-byte header, then —
//! after its kind and length are checked against the ring's bounds — exactly
//! the body it announces, into a 16-byte-aligned buffer for validated rkyv
//! access. The report page is decoded field by field with clamped lengths.
//!
//! The parsing is in small functions over [`RingBytes`] (guest memory in
//! production, a byte slice in the unit tests): [`read_host_call`],
//! [`read_responses`], [`response_result`] and [`batch_results`].

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nub_host_common::{
    exceptions,
    layout::{MemoryLayout, PAGE_SIZE, REPORT_PAGE_GPA, Region},
    log_buffer::{self, LogLevel},
    ports::ExitPort,
    report::{Report, ReportKind},
    ring::{self, FRAME_ALIGN, FRAME_HEADER_SIZE, FrameKind, RING_HEADER_SIZE, RingWriter},
    rpc::{self, Status},
};
use nub_hypervisor::{
    CallGuard, GuestMemory, HypervisorError, VcpuInterrupt, Vm, VmExit, interrupt::CancelReason,
};
use rkyv::util::AlignedVec;

use crate::{
    binary::SandboxImage,
    config::{CallMode, SandboxConfiguration},
    error::{HyperlightError, Result},
    host_functions::HostFunctions,
    pool,
    resident::Resident,
    watchdog,
};

/// The `log` target of every record a guest logs.
pub const GUEST_LOG_TARGET: &str = "nub::guest";

/// Emits one guest record through the `log` crate: target
/// [`GUEST_LOG_TARGET`], the guest's level, and a message that names the
/// sandbox and the guest module the record came from.
fn emit_guest_record(sandbox: u64, record: &log_buffer::LogRecord<'_>) {
    let level = match record.level {
        LogLevel::Error => log::Level::Error,
        LogLevel::Warn => log::Level::Warn,
        LogLevel::Info => log::Level::Info,
        LogLevel::Debug => log::Level::Debug,
        LogLevel::Trace => log::Level::Trace,
    };
    if !log::log_enabled!(target: GUEST_LOG_TARGET, level) {
        return;
    }
    let target = String::from_utf8_lossy(record.target);
    let message = String::from_utf8_lossy(record.message);
    log::log!(target: GUEST_LOG_TARGET, level, "[sandbox {sandbox}] {target}: {message}");
}

/// The error a canceled run returns: a timeout when its deadline (`limit`)
/// fired, otherwise a kill.
fn cancel_error(reason: CancelReason, limit: Option<Duration>) -> HyperlightError {
    match (reason, limit) {
        (CancelReason::DeadlineExceeded, Some(limit)) => HyperlightError::ExecutionTimeout(limit),
        _ => HyperlightError::Canceled,
    }
}

/// One answer read from the output ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawResponse {
    pub(crate) status: u32,
    pub(crate) payload: Vec<u8>,
}

fn violation(message: String) -> HyperlightError {
    HyperlightError::ProtocolViolation(message)
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
    memory: &'a GuestMemory,
    region: Region,
}

impl RingBytes for GuestRing<'_> {
    fn capacity(&self) -> usize {
        (self.region.size as usize).saturating_sub(RING_HEADER_SIZE)
    }

    fn read_header(&self, out: &mut [u8; RING_HEADER_SIZE]) -> Result<()> {
        self.memory
            .read(self.region.start, out)
            .map_err(HyperlightError::from)
    }

    fn read_data(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(out.len());
        if end.is_none_or(|end| end > self.capacity()) {
            return Err(violation(format!(
                "{} bytes at ring offset {offset:#x} lie outside the ring",
                out.len()
            )));
        }
        let addr = self.region.start + (RING_HEADER_SIZE + offset) as u64;
        self.memory.read(addr, out).map_err(HyperlightError::from)
    }
}

/// A ring region (header included) in host memory: the unit tests' rings.
impl RingBytes for [u8] {
    fn capacity(&self) -> usize {
        self.len().saturating_sub(RING_HEADER_SIZE)
    }

    fn read_header(&self, out: &mut [u8; RING_HEADER_SIZE]) -> Result<()> {
        let header = self
            .first_chunk::<RING_HEADER_SIZE>()
            .ok_or_else(|| violation("ring region too small".into()))?;
        out.copy_from_slice(header);
        Ok(())
    }

    fn read_data(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let src = RING_HEADER_SIZE
            .checked_add(offset)
            .and_then(|start| self.get(start..start.checked_add(out.len())?))
            .ok_or_else(|| {
                violation(format!(
                    "{} bytes at ring offset {offset:#x} lie outside the ring",
                    out.len()
                ))
            })?;
        out.copy_from_slice(src);
        Ok(())
    }
}

/// `(head, tail)` from a copied ring header: `head <= tail <= capacity`.
fn ring_offsets(header: &[u8; RING_HEADER_SIZE], capacity: usize) -> Result<(usize, usize)> {
    ring::header_offsets(header, capacity).map_err(|e| violation(format!("output ring: {e}")))
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
    kind: FrameKind,
) -> Result<CopiedFrame> {
    let bound = bound.min(ring.capacity());
    let outside = || {
        violation(format!(
            "{kind:?} frame at {offset:#x}: runs past the end of its data ({bound:#x})"
        ))
    };
    if !offset.is_multiple_of(FRAME_ALIGN) {
        return Err(violation(format!(
            "{kind:?} frame at {offset:#x}: not {FRAME_ALIGN}-byte aligned"
        )));
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
        ring::RingError::UnknownKind { kind: raw } => violation(format!(
            "expected a {kind:?} frame at {offset:#x}, found unknown kind {raw}"
        )),
        _ => outside(),
    })?;
    if span.kind != kind {
        return Err(violation(format!(
            "expected a {kind:?} frame at {offset:#x}, found {:?}",
            span.kind
        )));
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
    copy_frame(ring, offset, ring.capacity(), FrameKind::HostCallRequest)
}

/// `(fn_id, payload)` of a copied host-call request body.
pub(crate) fn parse_host_call(body: &[u8]) -> Result<(u32, &[u8])> {
    rpc::decode_request(body).map_err(|e| violation(format!("host-call request: {e}")))
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
        let frame = copy_frame(ring, head, tail, FrameKind::Response)?;
        let (status, payload) = rpc::decode_response(&frame.body)
            .map_err(|e| violation(format!("response at {head:#x}: {e}")))?;
        responses.push(RawResponse {
            status,
            payload: payload.to_vec(),
        });
        head = frame.next;
    }
    if responses.len() < n && room >= smallest {
        return Err(violation(format!(
            "{} of {n} responses, with room for more in the output ring",
            responses.len()
        )));
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
    match Status::try_from(response.status) {
        Ok(Status::Ok) => Ok(response.payload),
        Ok(Status::GuestError) => Err(HyperlightError::GuestFunctionError {
            fn_id,
            message: String::from_utf8_lossy(&response.payload).into_owned(),
        }),
        Ok(Status::UnknownFunction) => Err(HyperlightError::UnknownFunction { fn_id }),
        Ok(Status::ResponseTooLarge) => Err(HyperlightError::ResponseTooLarge {
            needed: response
                .payload
                .first_chunk::<8>()
                .map(|b| u64::from_le_bytes(*b))
                .unwrap_or(0),
            capacity,
        }),
        Ok(other) => Err(violation(format!("guest answered with status {other:?}"))),
        Err(raw) => Err(violation(format!(
            "guest answered with unknown status {raw}"
        ))),
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

/// What the host knows about a guest's memory, and the operations on it
/// that both call modes share: queueing requests, reading responses,
/// answering host calls, draining the log buffer, decoding the report page.
/// Cheap to clone; a resident sandbox's vCPU thread holds a clone.
#[derive(Debug, Clone)]
pub(crate) struct MemorySide {
    pub(crate) memory: Arc<GuestMemory>,
    pub(crate) layout: MemoryLayout,
    /// The sandbox's id, for log records.
    pub(crate) id: u64,
    /// Serialises log drains (a resident vCPU thread drains on a LOG exit
    /// while the caller may drain after a call).
    log_lock: Arc<Mutex<()>>,
}

fn memory_error(e: nub_hypervisor::MemoryError) -> HyperlightError {
    HyperlightError::GuestMemory(e)
}

impl MemorySide {
    pub(crate) fn new(memory: Arc<GuestMemory>, layout: MemoryLayout, id: u64) -> Self {
        Self {
            memory,
            layout,
            id,
            log_lock: Arc::new(Mutex::new(())),
        }
    }

    /// The output ring, for reading (see [`RingBytes`]).
    fn output_ring(&self) -> GuestRing<'_> {
        GuestRing {
            memory: &self.memory,
            region: self.layout.output_ring,
        }
    }

    /// Largest request payload the input ring accepts.
    pub(crate) fn max_payload(&self) -> usize {
        let body = ring::max_body_len(self.layout.input_ring.size as usize);
        body.saturating_sub(rpc::request_size(0))
    }

    /// Output ring data capacity.
    pub(crate) fn output_capacity(&self) -> usize {
        (self.layout.output_ring.size as usize).saturating_sub(ring::RING_HEADER_SIZE)
    }

    /// Writes the request frames for `calls` into the input ring (built in
    /// `scratch`, a private buffer, then copied in: the frames, then `head`
    /// and `tail`) and empties the output ring.
    /// Returns the input ring's tail: where host-call responses go. Fails
    /// without touching the guest if a payload is over the limit or the
    /// batch does not fit.
    pub(crate) fn queue_requests(
        &self,
        calls: &[(u32, &[u8])],
        scratch: &mut Vec<u8>,
    ) -> Result<usize> {
        let max = self.max_payload();
        if let Some((_, payload)) = calls.iter().find(|(_, p)| p.len() > max) {
            return Err(HyperlightError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let ring_size = self.layout.input_ring.size as usize;
        let mut needed = RING_HEADER_SIZE;
        for (_, payload) in calls {
            needed = ring::frame_size(rpc::request_size(payload.len()))
                .and_then(|f| needed.checked_add(f))
                .unwrap_or(usize::MAX);
        }
        let capacity = ring_size.saturating_sub(RING_HEADER_SIZE);
        if needed > ring_size {
            return Err(HyperlightError::BatchTooLarge {
                calls: calls.len(),
                capacity,
            });
        }
        // Reused from call to call: no allocation once it has grown.
        scratch.clear();
        scratch.resize(needed, 0);
        let mut w = RingWriter::new(scratch)
            .map_err(|_| HyperlightError::Internal("request scratch buffer smaller than a ring"))?;
        w.reset();
        for (fn_id, payload) in calls {
            w.push_with(FrameKind::Request, |body| {
                rpc::encode_request(body, *fn_id, payload)
            })
            .map_err(|_| HyperlightError::BatchTooLarge {
                calls: calls.len(),
                capacity,
            })?;
        }
        let tail = w.reader().offsets().map(|(_, t)| t).unwrap_or(0);
        // Only `head` and `tail` of each header: the rest of the header
        // line holds the resident protocol's doorbell (input) and
        // completion (output) words, which only their atomic stores write.
        let (offsets, frames) = scratch
            .get(..ring::SEQ_OFFSET)
            .zip(scratch.get(RING_HEADER_SIZE..))
            .ok_or(HyperlightError::Internal(
                "request scratch buffer smaller than a ring header",
            ))?;
        // The output ring: head = tail = 0.
        self.memory
            .write(self.layout.output_ring.start, &[0u8; ring::SEQ_OFFSET])
            .map_err(memory_error)?;
        self.memory
            .write(
                self.layout.input_ring.start + RING_HEADER_SIZE as u64,
                frames,
            )
            .map_err(memory_error)?;
        self.memory
            .write(self.layout.input_ring.start, offsets)
            .map_err(memory_error)?;
        Ok(tail)
    }

    /// Reads up to `n` responses from the output ring, in order (see
    /// [`read_responses`]).
    pub(crate) fn take_responses(&self, n: usize) -> Result<Vec<RawResponse>> {
        read_responses(&self.output_ring(), n)
    }

    /// Serves the host call whose request frame is at data offset `offset`
    /// of the output ring: runs the host function and writes its response
    /// at `input_tail`, the input ring offset the host chose when it queued
    /// the requests (never read back from the guest).
    pub(crate) fn serve_host_call(
        &self,
        offset: usize,
        input_tail: usize,
        host: &mut HostFunctions,
    ) -> Result<()> {
        let frame = read_host_call(&self.output_ring(), offset)?;
        let (fn_id, payload) = parse_host_call(&frame.body)?;
        let (status, answer) = call_host(host, fn_id, payload)?;
        self.write_host_answer(fn_id, status, &answer, input_tail)
    }

    /// Writes a host call's answer as a response frame at `input_tail` of
    /// the input ring; an answer too large for the room left becomes a
    /// `HostError` saying so.
    pub(crate) fn write_host_answer(
        &self,
        fn_id: u32,
        status: Status,
        answer: &[u8],
        input_tail: usize,
    ) -> Result<()> {
        let room = (self.layout.input_ring.size as usize)
            .saturating_sub(RING_HEADER_SIZE)
            .saturating_sub(input_tail);
        let frame = match encode_frame(FrameKind::HostCallResponse, status, answer, room) {
            Some(frame) => frame,
            None => {
                let msg = format!(
                    "host function {fn_id} returned {} bytes, more than the input ring holds",
                    answer.len()
                );
                encode_frame(
                    FrameKind::HostCallResponse,
                    Status::HostError,
                    msg.as_bytes(),
                    room,
                )
                .ok_or_else(|| {
                    HyperlightError::Error(
                        "the input ring has no room left for a host-call error; raise \
                         SandboxConfiguration::input_ring_size (with_ring_sizes)"
                            .into(),
                    )
                })?
            }
        };
        let addr = self.layout.input_ring.start + (RING_HEADER_SIZE + input_tail) as u64;
        self.memory.write(addr, &frame).map_err(memory_error)
    }

    /// Collects the guest's log records (see `nub_host_common::log_buffer`)
    /// and emits each through the `log` crate with target `nub::guest`,
    /// then empties the buffer. The header is copied once and checked, the
    /// records are copied out once and parsed from that private copy; a
    /// malformed buffer is a protocol violation (after the records before
    /// the bad one were emitted).
    pub(crate) fn drain_log(&self) -> Result<()> {
        let region = self.layout.log_buffer;
        // The common case, checked without the lock: nothing logged (write
        // and dropped both 0). A drain on the other thread that races this
        // is serialised below, where the header is read again.
        let mut used = [0u8; 16];
        self.memory
            .read(region.start, &mut used)
            .map_err(memory_error)?;
        if used == [0u8; 16] {
            return Ok(());
        }
        let _serial = self.log_lock.lock().unwrap_or_else(|e| e.into_inner());
        let size = region.size as usize;
        let mut header = [0u8; log_buffer::LOG_HEADER_SIZE];
        self.memory
            .read(region.start, &mut header)
            .map_err(memory_error)?;
        let checked = log_buffer::read_header(&header, size);
        // Reset the header unless it is already empty (the common case: no
        // write, so the cache line stays shared with the guest).
        if header
            .get(..16)
            .is_none_or(|used| used.iter().any(|&b| b != 0))
        {
            let mut cleared = [0u8; 16];
            log_buffer::reset(&mut cleared);
            self.memory
                .write(region.start, &cleared)
                .map_err(memory_error)?;
        }
        let (write, dropped) =
            checked.map_err(|e| HyperlightError::ProtocolViolation(e.to_string()))?;
        if write > 0 {
            let mut data = vec![0u8; write];
            self.memory
                .read(region.start + log_buffer::LOG_HEADER_SIZE as u64, &mut data)
                .map_err(memory_error)?;
            for record in log_buffer::parse_records(&data) {
                let record =
                    record.map_err(|e| HyperlightError::ProtocolViolation(e.to_string()))?;
                emit_guest_record(self.id, &record);
            }
        }
        if dropped > 0 {
            log::warn!(target: GUEST_LOG_TARGET, "[sandbox {}] the guest dropped {dropped} log records", self.id);
        }
        Ok(())
    }

    /// Turns the report page into the error it describes.
    pub(crate) fn report_error(&self) -> HyperlightError {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        if let Err(e) = self.memory.read(REPORT_PAGE_GPA, &mut page) {
            return memory_error(e);
        }
        let r = Report::decode(&page);
        let message = String::from_utf8_lossy(r.message).into_owned();
        match r.kind {
            Some(ReportKind::Panic) => HyperlightError::GuestPanicked { message },
            Some(ReportKind::Abort) => HyperlightError::GuestAborted {
                code: r.code,
                message,
            },
            Some(ReportKind::OutOfMemory) => HyperlightError::GuestOutOfMemory { size: r.code },
            Some(ReportKind::Fault) => {
                let vector = u8::try_from(r.vector).unwrap_or(u8::MAX);
                let guard = self.layout.is_stack_guard(r.cr2);
                if guard && (vector == exceptions::DOUBLE_FAULT || vector == exceptions::PAGE_FAULT)
                {
                    HyperlightError::StackOverflow {
                        rip: r.rip,
                        cr2: r.cr2,
                    }
                } else if vector == exceptions::PAGE_FAULT && r.cr2 >= self.layout.memory_size {
                    // Page-fault error code bit 1: the access was a write.
                    HyperlightError::MemoryAccessViolation {
                        addr: r.cr2,
                        write: r.error_code & 2 != 0,
                    }
                } else {
                    HyperlightError::GuestFault {
                        vector,
                        error_code: r.error_code,
                        rip: r.rip,
                        cr2: r.cr2,
                    }
                }
            }
            Some(ReportKind::None) | None => HyperlightError::ProtocolViolation(
                "guest signalled a failure without a report".into(),
            ),
        }
    }
}

/// One frame (header + body + padding) of `kind` holding an rkyv response
/// `(status, payload)`, if it fits in `room` bytes.
/// Runs host function `fn_id` on `payload`: its status and answer (an
/// error's message for `HostError`; nothing for an unknown function). A
/// panic in the host function is the only error: it poisons the sandbox.
pub(crate) fn call_host(
    host: &mut HostFunctions,
    fn_id: u32,
    payload: &[u8],
) -> Result<(Status, Vec<u8>)> {
    let Some(f) = host.get_mut(fn_id) else {
        return Ok((Status::UnknownHostFunction, Vec::new()));
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| f(payload))) {
        Ok(Ok(bytes)) => Ok((Status::Ok, bytes)),
        Ok(Err(e)) => Ok((Status::HostError, e.to_string().into_bytes())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Err(HyperlightError::HostFunctionPanicked { fn_id, message })
        }
    }
}

fn encode_frame(kind: FrameKind, status: Status, payload: &[u8], room: usize) -> Option<Vec<u8>> {
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

/// The error a stop of the vCPU other than a nub exit port means.
pub(crate) fn exit_error(exit: VmExit) -> HyperlightError {
    match exit {
        VmExit::Shutdown => HyperlightError::TripleFault,
        VmExit::Mmio { addr, write } => HyperlightError::MemoryAccessViolation { addr, write },
        VmExit::Halt => HyperlightError::UnexpectedExit("the guest halted".into()),
        VmExit::IoIn { port } => HyperlightError::UnexpectedPort { port, value: 0 },
        VmExit::InternalError { suberror } => HyperlightError::UnexpectedExit(format!(
            "KVM internal error (suberror {suberror}): an instruction KVM could not emulate"
        )),
        VmExit::FailEntry { reason } => HyperlightError::UnexpectedExit(format!(
            "VM entry failed (hardware reason {reason:#x})"
        )),
        VmExit::IoOut { port, value } => HyperlightError::UnexpectedPort { port, value },
        VmExit::Other(name) => HyperlightError::UnexpectedExit(name.into()),
        other => HyperlightError::UnexpectedExit(format!("{other:?}")),
    }
}

/// Records a guest can write before the failure are the most useful ones:
/// drain them whatever happened. A broken log buffer fails a run that
/// otherwise succeeded; it never hides the error of one that failed.
fn with_logs(side: &MemorySide, result: Result<()>) -> Result<()> {
    let logs = side.drain_log();
    match (result, logs) {
        (Ok(()), Err(e)) => Err(e),
        (result, _) => result,
    }
}

/// How a booted guest's calls run.
#[derive(Debug)]
enum Engine {
    /// On the calling thread, one exit per call.
    Exit(Vm),
    /// On the sandbox's own vCPU thread, exit-free.
    Resident(Resident),
    /// A poisoned sandbox's VM: its vCPU thread (if any) is joined and
    /// nothing runs it again; it waits here for the pool.
    Halted(Vm),
}

/// The engine, and what handing its VM back needs. The last field of
/// [`GuestVm`], so it drops after the host's other handle on guest memory
/// (`GuestVm::side`): when its `Drop` hands the VM to the pool, the VM
/// holds the memory alone, which a reset requires.
#[derive(Debug)]
struct EngineSlot {
    engine: Option<Engine>,
    image: Arc<SandboxImage>,
    pooled: bool,
}

impl Drop for EngineSlot {
    fn drop(&mut self) {
        let vm = match self.engine.take() {
            Some(Engine::Exit(vm) | Engine::Halted(vm)) => Some(vm),
            // Stops and joins the vCPU thread, which hands back the VM.
            Some(Engine::Resident(mut resident)) => resident.stop(),
            None => None,
        };
        if let Some(vm) = vm {
            pool::retire(vm, &self.image, self.pooled);
        }
    }
}

/// A booted VM, the host's view of its memory, and the engine that runs
/// its calls. Dropping it hands the VM to the pool or the reaper
/// ([`crate::pool`]).
#[derive(Debug)]
pub(crate) struct GuestVm {
    pub(crate) side: MemorySide,
    pub(crate) config: SandboxConfiguration,
    /// Data offset in the input ring just past the queued requests: where
    /// host-call responses go. Host-owned, never read back from the guest.
    input_tail: usize,
    /// Where requests are encoded before they are copied into the input
    /// ring (kept between calls).
    scratch: Vec<u8>,
    interrupt: Arc<VcpuInterrupt>,
    /// Last: see [`EngineSlot`].
    engine: EngineSlot,
}

impl GuestVm {
    /// Boots `vm` (runs the guest until READY, on this thread) and, in
    /// resident mode, hands it to its vCPU thread. A VM whose boot fails
    /// goes back to the pool (a guest that faults or times out in its init
    /// leaves a VM that can be reset).
    pub(crate) fn boot(
        mut vm: Vm,
        image: Arc<SandboxImage>,
        config: SandboxConfiguration,
        id: u64,
        host: &mut HostFunctions,
    ) -> Result<Self> {
        let side = MemorySide::new(Arc::clone(vm.memory()), image.layout, id);
        let interrupt = Arc::clone(vm.interrupt());
        if let Err(e) = run_exit(
            &mut vm,
            &side,
            0,
            ExitPort::Ready,
            host,
            config.max_boot_time,
        ) {
            // The VM must hold its memory alone to be reset.
            drop(side);
            pool::retire(vm, &image, config.vm_pool);
            return Err(e);
        }
        let engine = match config.call_mode {
            CallMode::Exit => Engine::Exit(vm),
            CallMode::Resident { spin } => {
                Engine::Resident(Resident::start(vm, side.clone(), spin)?)
            }
        };
        Ok(Self {
            side,
            config,
            input_tail: 0,
            scratch: Vec::new(),
            interrupt,
            engine: EngineSlot {
                engine: Some(engine),
                image,
                pooled: config.vm_pool,
            },
        })
    }

    /// Stops the guest for good, for a sandbox that was just poisoned: a
    /// resident vCPU thread is stopped and joined at once (a guest that
    /// cannot be trusted must not keep running), and no call runs again.
    pub(crate) fn halt(&mut self) {
        let slot = &mut self.engine.engine;
        self.engine.engine = match slot.take() {
            Some(Engine::Resident(mut resident)) => resident.stop().map(Engine::Halted),
            Some(Engine::Exit(vm) | Engine::Halted(vm)) => Some(Engine::Halted(vm)),
            None => None,
        };
    }

    /// The guest failed outside a call (a resident vCPU thread stopped
    /// it): the sandbox is as good as poisoned.
    pub(crate) fn failed(&self) -> bool {
        matches!(&self.engine.engine, Some(Engine::Resident(r)) if r.failed())
    }

    /// The interrupt state (for handles and deadlines).
    pub(crate) fn interrupt(&self) -> &Arc<VcpuInterrupt> {
        &self.interrupt
    }

    /// VM exits since creation.
    pub(crate) fn exit_count(&self) -> u64 {
        match &self.engine.engine {
            Some(Engine::Exit(vm) | Engine::Halted(vm)) => vm.exit_count(),
            Some(Engine::Resident(r)) => r.exit_count(),
            None => 0,
        }
    }

    /// Output ring data capacity.
    pub(crate) fn output_capacity(&self) -> usize {
        self.side.output_capacity()
    }

    /// Queues requests in order; resets both rings first (see
    /// [`MemorySide::queue_requests`]).
    pub(crate) fn queue_requests(&mut self, calls: &[(u32, &[u8])]) -> Result<()> {
        self.input_tail = self.side.queue_requests(calls, &mut self.scratch)?;
        Ok(())
    }

    /// Reads up to `n` responses from the output ring, in order.
    pub(crate) fn take_responses(&self, n: usize) -> Result<Vec<RawResponse>> {
        self.side.take_responses(n)
    }

    /// Runs the queued requests to completion (serving host calls on the
    /// way) in the sandbox's call mode. `limit` bounds the run.
    pub(crate) fn run_call(
        &mut self,
        host: &mut HostFunctions,
        limit: Option<Duration>,
    ) -> Result<()> {
        match &mut self.engine.engine {
            None | Some(Engine::Halted(_)) => Err(HyperlightError::PoisonedSandbox),
            Some(Engine::Exit(vm)) => {
                run_exit(vm, &self.side, self.input_tail, ExitPort::Done, host, limit)
            }
            Some(Engine::Resident(resident)) => {
                resident.next_call();
                let (side, input_tail) = (&self.side, self.input_tail);
                let result = guarded(&self.interrupt, side, limit, || {
                    resident.call(side, input_tail, host)
                });
                // After the call guard ended (which cleared any cancel).
                resident.release();
                result
            }
        }
    }
}

/// Runs `vm` on this thread until the guest exits through `until` (READY
/// at boot, DONE for exit-mode calls), serving host calls on the way. Any
/// other way of stopping is an error. `limit` bounds the run; a limit too
/// large to add to the current instant means no deadline.
fn run_exit(
    vm: &mut Vm,
    side: &MemorySide,
    input_tail: usize,
    until: ExitPort,
    host: &mut HostFunctions,
    limit: Option<Duration>,
) -> Result<()> {
    let interrupt = Arc::clone(vm.interrupt());
    guarded(&interrupt, side, limit, || {
        run_loop(vm, side, input_tail, until, host)
    })
}

/// Runs `run` as one call of the vCPU `interrupt` belongs to, in either
/// mode: kills and `limit`'s deadline cancel it while it runs, the guest's
/// logs are drained after it, and a cancel becomes the call's error.
fn guarded(
    interrupt: &Arc<VcpuInterrupt>,
    side: &MemorySide,
    limit: Option<Duration>,
    run: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let (call, generation) = CallGuard::begin(interrupt);
    // No watchdog, no run: a deadline that nothing enforces would let a
    // spinning guest hang the caller. The guard ends the call on return.
    let _deadline = arm_deadline(interrupt, generation, limit)?;
    let result = run();
    // A cancel that lands after the guest already finished (or failed for
    // its own reason) does not change the outcome.
    let _late_cancel = call.finish();
    map_cancel(with_logs(side, result), limit)
}

/// Arms the deadline of call `generation`, if there is a limit that fits an
/// `Instant`.
fn arm_deadline(
    interrupt: &Arc<VcpuInterrupt>,
    generation: u64,
    limit: Option<Duration>,
) -> Result<Option<watchdog::Deadline>> {
    limit
        .and_then(|limit| Instant::now().checked_add(limit))
        .map(|deadline| watchdog::arm(deadline, interrupt, generation))
        .transpose()
        .map_err(HyperlightError::WatchdogUnavailable)
}

/// A canceled run's error: a timeout when its deadline fired, else a kill.
fn map_cancel(result: Result<()>, limit: Option<Duration>) -> Result<()> {
    match result {
        Err(HyperlightError::Kvm(HypervisorError::Canceled(reason))) => {
            Err(cancel_error(reason, limit))
        }
        result => result,
    }
}

/// What a VM exit asks of the host: the one classification every run loop
/// (exit mode's, the resident vCPU thread's, a resident call the caller
/// runs itself) starts from.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The guest exited through a nub port that reports no failure, with
    /// the value it wrote.
    Port(ExitPort, u32),
    /// The run failed: a failure the guest reported (decoded from the
    /// report page), an unknown port, or a stop that is not a port write.
    Failed(HyperlightError),
}

/// Classifies `exit` (see [`Stop`]).
pub(crate) fn classify(side: &MemorySide, exit: VmExit) -> Stop {
    match exit {
        VmExit::IoOut { port, value } => match ExitPort::try_from(port) {
            Ok(ExitPort::Panic | ExitPort::Abort | ExitPort::Fault) => {
                Stop::Failed(side.report_error())
            }
            Ok(port) => Stop::Port(port, value),
            Err(port) => Stop::Failed(HyperlightError::UnexpectedPort { port, value }),
        },
        other => Stop::Failed(exit_error(other)),
    }
}

/// The error for a nub port the guest has no business using where it did.
pub(crate) fn misplaced_port(port: ExitPort, waiting_for: &str) -> HyperlightError {
    HyperlightError::ProtocolViolation(format!(
        "guest exited through {port:?} while nub waited for {waiting_for}"
    ))
}

/// The exit-mode run loop: `KVM_RUN` on this thread until `until`.
fn run_loop(
    vm: &mut Vm,
    side: &MemorySide,
    input_tail: usize,
    until: ExitPort,
    host: &mut HostFunctions,
) -> Result<()> {
    loop {
        match classify(side, vm.run()?) {
            Stop::Port(port, _) if port == until => return Ok(()),
            Stop::Port(ExitPort::HostCall, value) => {
                side.serve_host_call(value as usize, input_tail, host)?;
            }
            Stop::Port(ExitPort::Log, _) => side.drain_log()?,
            Stop::Port(other, _) => return Err(misplaced_port(other, &format!("{until:?}"))),
            Stop::Failed(e) => return Err(e),
        }
    }
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

    /// The message of a protocol violation; panics on anything else.
    fn violation_message<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(HyperlightError::ProtocolViolation(m)) => m,
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
            parse_host_call(&frame.body).unwrap(),
            (42, &b"to the host"[..])
        );
        // The copy is private: changing the ring afterwards changes nothing.
        region.fill(0xAA);
        assert_eq!(parse_host_call(&frame.body).unwrap().0, 42);
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
            let m = violation_message(read_host_call(region.as_slice(), offset));
            assert!(m.contains("HostCallRequest"), "{offset:#x}: {m}");
        }
        // An aligned offset past the written frame reads zeros: kind 0.
        let m = violation_message(read_host_call(region.as_slice(), 256));
        assert!(m.contains("unknown kind 0"), "{m}");
        // The last frame slot, announcing a body past the end.
        let last = capacity - FRAME_HEADER_SIZE;
        write_frame_header(&mut region, last, 1, FrameKind::HostCallRequest as u32);
        let m = violation_message(read_host_call(region.as_slice(), last));
        assert!(m.contains("runs past the end"), "{m}");
    }

    #[test]
    fn wrong_frame_kinds_are_protocol_violations() {
        let mut region = ring(4096);
        push_response(&mut region, Status::Ok as u32, b"not a call");
        let m = violation_message(read_host_call(region.as_slice(), 0));
        assert!(m.contains("found Response"), "{m}");

        let mut region = ring(4096);
        push_host_call(&mut region, 1, b"not a response");
        let m = violation_message(read_responses(region.as_slice(), 1));
        assert!(m.contains("found HostCallRequest"), "{m}");

        let mut region = ring(4096);
        push_response(&mut region, Status::Ok as u32, b"");
        write_frame_header(&mut region, 0, 0, 99);
        let m = violation_message(read_responses(region.as_slice(), 1));
        assert!(m.contains("unknown kind 99"), "{m}");
    }

    #[test]
    fn garbage_bodies_are_protocol_violations() {
        let mut region = ring(4096);
        let mut w = RingWriter::new(&mut region).unwrap();
        w.push(FrameKind::HostCallRequest, &[0xFF; 40]).unwrap();
        let frame = read_host_call(region.as_slice(), 0).unwrap();
        let m = violation_message(parse_host_call(&frame.body));
        assert!(m.contains("host-call request"), "{m}");

        let mut region = ring(4096);
        let mut w = RingWriter::new(&mut region).unwrap();
        w.push(FrameKind::Response, &[0xFF; 40]).unwrap();
        let m = violation_message(read_responses(region.as_slice(), 1));
        assert!(m.contains("response at 0x0"), "{m}");
    }

    #[test]
    fn bad_ring_headers_are_protocol_violations() {
        let mut region = ring(4096);
        push_response(&mut region, Status::Ok as u32, b"a");
        let capacity = region.as_slice().capacity() as u64;
        for (head, tail) in [(32, 16), (0, capacity + 16), (u64::MAX, u64::MAX)] {
            set_offsets(&mut region, head, tail);
            let m = violation_message(read_responses(region.as_slice(), 1));
            assert!(
                m.contains("offsets out of range"),
                "{head:#x} {tail:#x}: {m}"
            );
        }
        // A frame that runs past the tail (though inside the ring).
        let mut region = ring(4096);
        let next = push_response(&mut region, Status::Ok as u32, b"abcdefgh");
        set_offsets(&mut region, 0, next as u64 - 16);
        let m = violation_message(read_responses(region.as_slice(), 1));
        assert!(m.contains("runs past the end"), "{m}");
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
        violation_message(read_responses(&counting, 1));
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
            let m = violation_message(response_result(7, response(status), 100));
            assert!(m.contains("status"), "{status}: {m}");
        }
        assert_eq!(
            response_result(7, response(Status::Ok as u32), 100).unwrap(),
            b"payload"
        );
        assert!(matches!(
            response_result(7, response(Status::GuestError as u32), 100),
            Err(HyperlightError::GuestFunctionError { fn_id: 7, message }) if message == "payload"
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
        let sizes = [b"first".len(), b"second failed".len()]
            .map(|n| ring::frame_size(rpc::response_size(n)).unwrap());
        let mut region = ring(RING_HEADER_SIZE + sizes[0] + sizes[1]);
        push_response(&mut region, Status::Ok as u32, b"first");
        push_response(&mut region, Status::GuestError as u32, b"second failed");
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
            Err(HyperlightError::GuestFunctionError { fn_id: 2, message }) if message == "second failed"
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
