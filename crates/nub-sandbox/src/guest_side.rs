//! The host's side of guest memory, shared by every call mode: queueing
//! requests, reading responses, answering host calls, decoding the report
//! page (the log buffer is [`crate::guest_logs`]'s).

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
};

use nub_host_common::{
    exceptions,
    layout::{MemoryLayout, PAGE_SIZE, REPORT_PAGE_GPA},
    report::{Report, ReportKind},
    ring::{self, FrameKind, RING_HEADER_SIZE, RingWriter},
    rpc::{self, Status},
};
use nub_hypervisor::GuestMemory;

use crate::{
    error::{HyperlightError, Result, Violation},
    frames::{
        GuestRing, RawResponse, encode_frame, parse_host_call, read_host_call, read_responses,
    },
    host_functions::HostFunctions,
};

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
    pub(crate) log_lock: Arc<Mutex<()>>,
}

pub(crate) fn memory_error(e: nub_hypervisor::MemoryError) -> HyperlightError {
    HyperlightError::GuestMemory(e.into())
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
        ring::data_capacity(self.layout.output_ring.size as usize)
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
        let capacity = ring::data_capacity(ring_size);
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
        let (fn_id, payload) = parse_host_call(&frame.body, offset)?;
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
        let room =
            ring::data_capacity(self.layout.input_ring.size as usize).saturating_sub(input_tail);
        let frame = match encode_frame(FrameKind::HostCallResponse, status, answer, room) {
            Some(frame) => frame,
            None => {
                let msg = rpc::answer_too_large(fn_id, answer.len());
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
            Some(ReportKind::None) | None => {
                HyperlightError::ProtocolViolation(Violation::NoReport)
            }
        }
    }
}

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
