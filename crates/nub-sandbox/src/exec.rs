//! The call path: frames into the input ring, the vCPU run loop, exits
//! turned into results or typed errors, host calls served in between.
//!
//! Everything read from guest memory here is untrusted: ring offsets are
//! validated, frames are bounds-checked, bodies go through validated rkyv
//! access, and the report page is decoded field by field with clamped
//! lengths.

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use nub_host_common::{
    layout::{MemoryLayout, PAGE_SIZE, REPORT_PAGE_GPA, Region},
    log_buffer::{self, LogLevel},
    ports::ExitPort,
    report::{Report, ReportKind},
    ring::{self, Frame, FrameKind, RingReader, RingWriter},
    rpc::{self, Status},
};
use nub_hypervisor::{HypervisorError, Vm, VmExit, interrupt::CancelReason};

use crate::{
    config::SandboxConfiguration,
    error::{HyperlightError, Result},
    host_functions::HostFunctions,
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

/// A booted VM and what the host knows about its memory.
#[derive(Debug)]
pub(crate) struct GuestVm {
    pub(crate) vm: Vm,
    pub(crate) layout: MemoryLayout,
    pub(crate) config: SandboxConfiguration,
    /// Data offset in the input ring just past the queued requests: where
    /// host-call responses go. Host-owned, never read back from the guest.
    input_tail: usize,
    /// The sandbox's id, for log records.
    pub(crate) id: u64,
}

/// One answer read from the output ring.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u32,
    pub(crate) payload: Vec<u8>,
}

/// The guest-written frame at data offset `offset` (ending by `bound`),
/// which must be of `kind`; anything else is a protocol violation.
fn guest_frame<'a>(
    reader: &RingReader<'a>,
    offset: usize,
    bound: usize,
    kind: FrameKind,
) -> Result<Frame<'a>> {
    let frame = reader.frame_at(offset, bound).map_err(|e| {
        HyperlightError::ProtocolViolation(format!("{kind:?} frame at {offset:#x}: {e}"))
    })?;
    if frame.kind != kind {
        return Err(HyperlightError::ProtocolViolation(format!(
            "expected a {kind:?} frame at {offset:#x}, found {:?}",
            frame.kind
        )));
    }
    Ok(frame)
}

fn ring_slice(vm: &Vm, ring: Region) -> Result<&[u8]> {
    vm.memory()
        .slice(ring.start, ring.size as usize)
        .map_err(|e| HyperlightError::Kvm(e.into()))
}

fn ring_slice_mut(vm: &mut Vm, ring: Region) -> Result<&mut [u8]> {
    vm.memory_mut()
        .slice_mut(ring.start, ring.size as usize)
        .map_err(|e| HyperlightError::Kvm(e.into()))
}

impl GuestVm {
    pub(crate) fn new(vm: Vm, layout: MemoryLayout, config: SandboxConfiguration, id: u64) -> Self {
        Self {
            vm,
            layout,
            config,
            input_tail: 0,
            id,
        }
    }

    /// Largest request payload the input ring accepts.
    pub(crate) fn max_payload(&self) -> usize {
        let body = ring::max_body_len(self.layout.input_ring.size as usize);
        body.saturating_sub(rpc::request_size(0))
    }

    /// Queues requests in order; resets both rings first. Fails without
    /// touching the guest if any payload is over the limit or the batch does
    /// not fit.
    pub(crate) fn queue_requests(&mut self, calls: &[(u32, &[u8])]) -> Result<()> {
        let max = self.max_payload();
        if let Some((_, payload)) = calls.iter().find(|(_, p)| p.len() > max) {
            return Err(HyperlightError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let out = ring_slice_mut(&mut self.vm, self.layout.output_ring)?;
        if let Ok(mut w) = RingWriter::new(out) {
            w.reset();
        }
        let input = ring_slice_mut(&mut self.vm, self.layout.input_ring)?;
        let mut w = RingWriter::new(input).map_err(|e| HyperlightError::Error(e.to_string()))?;
        w.reset();
        for (fn_id, payload) in calls {
            let pushed = w.push_with(FrameKind::Request, |body| {
                rpc::encode_request(body, *fn_id, payload)
            });
            if pushed.is_err() {
                let capacity = w.reader().capacity();
                w.reset();
                return Err(HyperlightError::BatchTooLarge {
                    calls: calls.len(),
                    capacity,
                });
            }
        }
        self.input_tail = w.reader().offsets().map(|(_, t)| t).unwrap_or(0);
        Ok(())
    }

    /// Runs the vCPU until the guest exits through `until` (READY at boot,
    /// DONE for calls), serving host calls on the way. Any other way of
    /// stopping is an error.
    /// `limit` bounds the run (the boot or the call); a limit too large to
    /// add to the current instant means no deadline.
    pub(crate) fn run_until(
        &mut self,
        until: ExitPort,
        host: &mut HostFunctions,
        limit: Option<Duration>,
    ) -> Result<()> {
        let (call, generation) = self.vm.begin_call();
        // No watchdog, no run: a deadline that nothing enforces would let a
        // spinning guest hang the caller. The guard ends the call on return.
        let _deadline = limit
            .and_then(|limit| Instant::now().checked_add(limit))
            .map(|deadline| watchdog::arm(deadline, self.vm.interrupt(), generation))
            .transpose()
            .map_err(HyperlightError::WatchdogUnavailable)?;
        let result = self.run_loop(until, host);
        // A cancel that lands after the guest already finished (or failed
        // for its own reason) does not change the outcome.
        let _late_cancel = call.finish();
        // Records written before a failure are the most useful ones: collect
        // them whatever happened. A broken log buffer fails a call that
        // otherwise succeeded; it never hides the error of one that failed.
        let logs = self.drain_log();
        let result = match (result, logs) {
            (Ok(()), Err(e)) => Err(e),
            (result, _) => result,
        };
        match result {
            Err(HyperlightError::Kvm(HypervisorError::Canceled(reason))) => {
                Err(cancel_error(reason, limit))
            }
            result => result,
        }
    }

    fn run_loop(&mut self, until: ExitPort, host: &mut HostFunctions) -> Result<()> {
        loop {
            let exit = self.vm.run()?;
            let (port, value) = match exit {
                VmExit::IoOut { port, value } => (port, value),
                other => return Err(self.exit_error(other)),
            };
            match ExitPort::try_from(port) {
                Ok(p) if p == until => return Ok(()),
                Ok(ExitPort::HostCall) => self.serve_host_call(value as usize, host)?,
                Ok(ExitPort::Log) => self.drain_log()?,
                Ok(ExitPort::Panic | ExitPort::Abort | ExitPort::Fault) => {
                    return Err(self.report_error());
                }
                Ok(other) => {
                    return Err(HyperlightError::ProtocolViolation(format!(
                        "guest exited through {other:?} while nub waited for {until:?}"
                    )));
                }
                Err(port) => return Err(HyperlightError::UnexpectedPort { port, value }),
            }
        }
    }

    fn exit_error(&self, exit: VmExit) -> HyperlightError {
        match exit {
            VmExit::Shutdown => HyperlightError::TripleFault,
            VmExit::Mmio { addr, write } => HyperlightError::MemoryAccessViolation { addr, write },
            VmExit::Halt => HyperlightError::UnexpectedExit("the guest halted".into()),
            VmExit::IoIn { port } => HyperlightError::UnexpectedPort { port, value: 0 },
            VmExit::InternalError { suberror } => HyperlightError::UnexpectedExit(format!(
                "KVM internal error (suberror {suberror}): an instruction KVM cannot run, e.g. SSE or int3"
            )),
            VmExit::FailEntry { reason } => HyperlightError::UnexpectedExit(format!(
                "VM entry failed (hardware reason {reason:#x})"
            )),
            VmExit::IoOut { port, value } => HyperlightError::UnexpectedPort { port, value },
            VmExit::Other(name) => HyperlightError::UnexpectedExit(name.into()),
        }
    }

    /// Turns the report page into the error it describes.
    fn report_error(&self) -> HyperlightError {
        let page = match self.vm.memory().slice(REPORT_PAGE_GPA, PAGE_SIZE as usize) {
            Ok(p) => p,
            Err(e) => return HyperlightError::Kvm(e.into()),
        };
        let r = Report::decode(page);
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
                if guard && (vector == 8 || vector == 14) {
                    HyperlightError::StackOverflow {
                        rip: r.rip,
                        cr2: r.cr2,
                    }
                } else if vector == 14 && r.cr2 >= self.layout.memory_size {
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

    /// Serves one host call whose request frame is at data offset `offset`
    /// of the output ring; writes the response at the input tail.
    fn serve_host_call(&mut self, offset: usize, host: &mut HostFunctions) -> Result<()> {
        let output = ring_slice(&self.vm, self.layout.output_ring)?;
        let reader = RingReader::new(output)
            .map_err(|e| HyperlightError::ProtocolViolation(e.to_string()))?;
        let frame = guest_frame(
            &reader,
            offset,
            reader.capacity(),
            FrameKind::HostCallRequest,
        )?;
        let (fn_id, payload) = rpc::decode_request(frame.body)
            .map_err(|e| HyperlightError::ProtocolViolation(format!("host-call request: {e}")))?;
        let (status, answer) = match host.get_mut(fn_id) {
            None => (Status::UnknownHostFunction, Vec::new()),
            Some(f) => match std::panic::catch_unwind(AssertUnwindSafe(|| f(payload))) {
                Ok(Ok(bytes)) => (Status::Ok, bytes),
                Ok(Err(e)) => (Status::HostError, e.to_string().into_bytes()),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".into());
                    return Err(HyperlightError::HostFunctionPanicked { fn_id, message });
                }
            },
        };
        let tail = self.input_tail;
        let input = ring_slice_mut(&mut self.vm, self.layout.input_ring)?;
        let mut w = RingWriter::new(input).map_err(|e| HyperlightError::Error(e.to_string()))?;
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
            .map_err(|_| {
                HyperlightError::Error("input ring cannot hold a host-call error".into())
            })?;
        }
        Ok(())
    }

    /// Reads up to `n` responses from the output ring, in order. Fewer come
    /// back when the guest wrote fewer (its output ring filled up).
    pub(crate) fn take_responses(&self, n: usize) -> Result<Vec<RawResponse>> {
        let output = ring_slice(&self.vm, self.layout.output_ring)?;
        let reader = RingReader::new(output)
            .map_err(|e| HyperlightError::ProtocolViolation(e.to_string()))?;
        let (mut head, tail) = reader
            .offsets()
            .map_err(|e| HyperlightError::ProtocolViolation(format!("output ring: {e}")))?;
        let mut responses = Vec::with_capacity(n.min(1024));
        while head < tail && responses.len() < n {
            let frame = guest_frame(&reader, head, tail, FrameKind::Response)?;
            let (status, payload) = rpc::decode_response(frame.body)
                .map_err(|e| HyperlightError::ProtocolViolation(format!("response: {e}")))?;
            responses.push(RawResponse {
                status,
                payload: payload.to_vec(),
            });
            head = frame.next;
        }
        Ok(responses)
    }

    /// Collects the guest's log records (see `nub_host_common::log_buffer`)
    /// and emits each through the `log` crate with target `nub::guest`,
    /// then empties the buffer. The header is copied once and checked, the
    /// records are copied out once and parsed from that private copy; a
    /// malformed buffer is a protocol violation (after the records before
    /// the bad one were emitted).
    fn drain_log(&mut self) -> Result<()> {
        let region = self.layout.log_buffer;
        let size = region.size as usize;
        let mut header = [0u8; log_buffer::LOG_HEADER_SIZE];
        self.vm
            .memory()
            .read(region.start, &mut header)
            .map_err(|e| HyperlightError::Kvm(e.into()))?;
        let checked = log_buffer::read_header(&header, size);
        let reset = self
            .vm
            .memory_mut()
            .slice_mut(region.start, log_buffer::LOG_HEADER_SIZE)
            .map(log_buffer::reset);
        reset.map_err(|e| HyperlightError::Kvm(e.into()))?;
        let (write, dropped) =
            checked.map_err(|e| HyperlightError::ProtocolViolation(e.to_string()))?;
        if write > 0 {
            let mut data = vec![0u8; write];
            self.vm
                .memory()
                .read(region.start + log_buffer::LOG_HEADER_SIZE as u64, &mut data)
                .map_err(|e| HyperlightError::Kvm(e.into()))?;
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

    /// Output ring data capacity.
    pub(crate) fn output_capacity(&self) -> usize {
        (self.layout.output_ring.size as usize).saturating_sub(ring::RING_HEADER_SIZE)
    }
}
