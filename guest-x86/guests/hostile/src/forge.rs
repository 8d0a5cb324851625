//! Ids 2–7: forged rings and frames. Each writes the output ring itself,
//! leaves through an exit port, and never returns to the kernel's
//! dispatcher (which still holds its own view of the ring): if the host
//! ever resumes it, it aborts.

use nub_arch_x86::{
    GuestError, Output,
    abi::{
        ports::ExitPort,
        ring::{FRAME_HEADER_SIZE, FrameKind, RING_HEADER_SIZE, RingWriter, frame_size},
        rpc::{self, Status},
        write_u32, write_u64,
    },
    arch::io,
    dispatch,
};

use crate::{boot, selector};

/// Gives `f` the whole output ring region (header included). Only for
/// functions that never return to the kernel's dispatcher afterwards.
pub(crate) fn with_output_ring(f: impl FnOnce(&mut [u8])) {
    let info = boot();
    // SAFETY: address and size come from the host's BootInfo and describe
    // the mapped RW output ring. The kernel's dispatcher holds slices of
    // this ring further up the stack, but every caller never returns to it
    // (it aborts, exits for good or loops), so they are never used again
    // while this slice exists; it ends before `f`'s caller goes on.
    let region = unsafe {
        core::slice::from_raw_parts_mut(
            info.output_ring_va as *mut u8,
            info.output_ring_size as usize,
        )
    };
    f(region);
}

/// Gives `f` the whole output ring region (header included), then exits
/// through `port` with `value` and never comes back.
fn forge_output(port: ExitPort, value: u32, f: impl FnOnce(&mut [u8])) -> ! {
    with_output_ring(f);
    io::exit(port, value);
    nub_arch_x86::abort(0xBAD, "hostile guest resumed after forging its output")
}

/// Makes the output ring hold one response frame with `status` (raw, so
/// it may be one the host does not know) and `payload`.
pub(crate) fn answer(status: u32, payload: &[u8]) {
    with_output_ring(|region| {
        let len = response(region, 0, status, payload);
        offsets(region, 0, frame_size(len).unwrap_or(0));
    });
}

/// Writes a frame header at data offset `offset` of a ring region.
fn frame_header(region: &mut [u8], offset: usize, len: u32, kind: u32) {
    let at = RING_HEADER_SIZE + offset;
    write_u32(region, at, len);
    write_u32(region, at + 4, kind);
    write_u64(region, at + 8, 0);
}

/// Sets the ring header's `head` and `tail`.
fn offsets(region: &mut [u8], head: usize, tail: usize) {
    if let Ok(mut w) = RingWriter::new(region) {
        w.set_offsets(head, tail);
    }
}

/// Capacity of a ring region's data area.
fn capacity(region: &[u8]) -> usize {
    region.len().saturating_sub(RING_HEADER_SIZE)
}

/// Encodes a response with `status` and `payload` as the body of a frame
/// at data offset `offset`; returns the body length (0 if it does not
/// fit).
fn response(region: &mut [u8], offset: usize, status: u32, payload: &[u8]) -> usize {
    let start = RING_HEADER_SIZE + offset + FRAME_HEADER_SIZE;
    let len = region
        .get_mut(start..)
        .and_then(|body| rpc::encode_response(body, status, payload).ok())
        .unwrap_or(0);
    frame_header(region, offset, len as u32, FrameKind::Response as u32);
    len
}

/// A valid Ok response (see [`response`]).
fn valid_response(region: &mut [u8], offset: usize, payload: &[u8]) -> usize {
    response(region, offset, Status::Ok as u32, payload)
}

/// Id 2: one response frame whose length runs past the end of the ring
/// (selector 0: exactly the data area, so the body ends 16 bytes past it;
/// 1: `u32::MAX`; 2: one byte past). The header is consistent.
pub fn frame_past_end(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let sel = selector(input);
    forge_output(ExitPort::Done, 0, |region| {
        let cap = capacity(region);
        let len = match sel {
            0 => cap as u32,
            1 => u32::MAX,
            _ => (cap - FRAME_HEADER_SIZE + 1) as u32,
        };
        frame_header(region, 0, len, FrameKind::Response as u32);
        offsets(region, 0, cap);
    })
}

/// Id 3: a response frame of valid length (32 bytes) whose body is not an
/// rkyv archive (selector 0: 0xA5 bytes, 1: 0xFF bytes).
pub fn garbage_body(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let byte = if selector(input) == 0 { 0xA5 } else { 0xFF };
    forge_output(ExitPort::Done, 0, |region| {
        const LEN: usize = 32;
        let start = RING_HEADER_SIZE + FRAME_HEADER_SIZE;
        if let Some(body) = region.get_mut(start..start + LEN) {
            body.fill(byte);
        }
        frame_header(region, 0, LEN as u32, FrameKind::Response as u32);
        offsets(region, 0, frame_size(LEN).unwrap_or(0));
    })
}

/// Id 4: a valid response archive, then bent: selector 0 sets the payload
/// length far past the frame, 1 points the payload 4 KiB before the frame.
pub fn payload_outside_frame(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let sel = selector(input);
    forge_output(ExitPort::Done, 0, |region| {
        let len = valid_response(region, 0, b"hostile payload");
        // The archived root ends the body: status u32, payload RelPtr i32,
        // payload length u32.
        let body = RING_HEADER_SIZE + FRAME_HEADER_SIZE;
        let root = body + len.saturating_sub(12);
        if sel == 0 {
            write_u32(region, root + 8, 0x0100_0000);
        } else {
            let rel = -((len as i32 - 8) + 4096);
            write_u32(region, root + 4, rel as u32);
        }
        offsets(region, 0, frame_size(len).unwrap_or(0));
    })
}

/// Id 5: a valid response, with the output ring header made inconsistent:
/// selector 0 head past tail, 1 tail past capacity, 2 both `u64::MAX`.
pub fn bad_ring_header(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let sel = selector(input);
    forge_output(ExitPort::Done, 0, |region| {
        let len = valid_response(region, 0, b"fine frame, bad header");
        let end = frame_size(len).unwrap_or(0);
        let cap = capacity(region);
        match sel {
            0 => offsets(region, end + 16, end),
            1 => offsets(region, 0, cap + 16),
            _ => offsets(region, usize::MAX, usize::MAX),
        }
    })
}

/// Id 6: exits DONE with an empty output ring: no response at all.
pub fn no_response(_: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    forge_output(ExitPort::Done, 0, |region| offsets(region, 0, 0))
}

/// Id 7: a host call the host must refuse. Selector 0: an offset outside
/// the ring; 1: a misaligned offset; 2: a valid request archive in a frame
/// of the wrong kind; 3: a host-call frame whose body is garbage; 4: a
/// host-call frame whose length runs past the ring.
pub fn garbage_host_call(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let sel = selector(input);
    // Past the response being built, where a real host call would go.
    let slot = dispatch::host_call_slot().unwrap_or(0);
    let value = match sel {
        0 => 0xFFFF_FFF0,
        1 => slot as u32 + 8,
        _ => slot as u32,
    };
    forge_output(ExitPort::HostCall, value, |region| {
        let body = RING_HEADER_SIZE + slot + FRAME_HEADER_SIZE;
        match sel {
            2 => {
                let len = region
                    .get_mut(body..)
                    .and_then(|b| rpc::encode_request(b, 0xF00D, b"wrong kind").ok())
                    .unwrap_or(0);
                frame_header(region, slot, len as u32, FrameKind::Response as u32);
            }
            3 => {
                if let Some(b) = region.get_mut(body..body + 32) {
                    b.fill(0xA5);
                }
                frame_header(region, slot, 32, FrameKind::HostCallRequest as u32);
            }
            4 => frame_header(region, slot, u32::MAX, FrameKind::HostCallRequest as u32),
            _ => {}
        }
    })
}
