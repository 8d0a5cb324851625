//! Shared-memory rings and the frame format.
//!
//! A ring is one page-aligned region: a 32-byte header followed by the data
//! area. Offsets in the header are relative to the data area. The header
//! is half a cache line, so a small first frame (an empty call's request or
//! response is 32 bytes) shares the header's line: in resident mode, the
//! side that sees the `seq` word change has the first frame too.
//!
//! ```text
//! header  0  head: u64   first unread byte (consumer advances it)
//!         8  tail: u64   one past the last written frame (producer advances it)
//!        16  seq: u64    resident mode only: the doorbell (input ring) or
//!                        the completion (output ring), atomic, see
//!                        [`crate::resident`]; never touched by this module
//!        24  reserved: u64
//! data   32  frame, frame, ...
//! frame   0  len: u32    body length in bytes
//!         4  kind: u32   FrameKind
//!         8  reserved: u64
//!        16  body (rkyv bytes), padded to a multiple of 16
//! ```
//!
//! Frames never wrap: a frame that does not fit between `tail` and the end of
//! the data area is refused, so bodies are read in place. In exit mode only
//! one side runs at a time (the vCPU is stopped while the host works). In
//! resident mode (docs/resident.md) host and guest run at once: the `seq`
//! words hand the rings from one side to the other, and the host, which
//! cannot trust a guest to keep to that, never holds a reference into guest
//! memory; it copies headers and frames in and out with atomic loads and
//! stores. The host resets the input ring before it writes a batch of
//! requests and drains and resets the output ring after every exit, so
//! frames start at offset 0 and a small call touches one page per ring.
//!
//! Everything here works on plain byte slices, so the same code runs in the
//! guest over its rings, on the host over its private copies, and in unit
//! tests.

use crate::{read_u32, read_u64, write_u32, write_u64};

/// The ring header, as laid out at the start of a ring region (all
/// little-endian). The code reads and writes it through the offsets below,
/// which are taken from this declaration.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingHeader {
    /// First unread data offset (the consumer advances it).
    pub head: u64,
    /// One past the last written frame (the producer advances it).
    pub tail: u64,
    /// Resident mode's sequence word (see [`SEQ_OFFSET`]).
    pub seq: u64,
    /// Reserved, zero.
    pub reserved: u64,
}

/// A frame's header, as laid out before its body.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameHeader {
    /// Body length in bytes.
    pub len: u32,
    /// A [`FrameKind`].
    pub kind: u32,
    /// Reserved, zero.
    pub reserved: u64,
}

/// Size of the ring header.
pub const RING_HEADER_SIZE: usize = core::mem::size_of::<RingHeader>();
/// Size of a frame header.
pub const FRAME_HEADER_SIZE: usize = core::mem::size_of::<FrameHeader>();
/// Alignment of every frame (and so of every body).
pub const FRAME_ALIGN: usize = 16;

const HEAD_OFFSET: usize = core::mem::offset_of!(RingHeader, head);
const TAIL_OFFSET: usize = core::mem::offset_of!(RingHeader, tail);
/// Offset in the ring header of the resident protocol's sequence word:
/// the doorbell in the input ring, the completion in the output ring
/// ([`crate::resident`]). Accessed atomically by both sides, never by the
/// ring code: `reset`, `set_offsets` and `set_head` write `head` and `tail`
/// only, and the host writes only those 16 bytes of a header.
pub const SEQ_OFFSET: usize = core::mem::offset_of!(RingHeader, seq);
const FRAME_LEN_OFFSET: usize = core::mem::offset_of!(FrameHeader, len);
const FRAME_KIND_OFFSET: usize = core::mem::offset_of!(FrameHeader, kind);

// The layout the module doc draws, and the ABI depends on.
const _: () = {
    assert!(RING_HEADER_SIZE == 32 && FRAME_HEADER_SIZE == 16);
    assert!(HEAD_OFFSET == 0 && TAIL_OFFSET == 8 && SEQ_OFFSET == 16);
    assert!(FRAME_LEN_OFFSET == 0 && FRAME_KIND_OFFSET == 4);
    assert!(FRAME_HEADER_SIZE.is_multiple_of(FRAME_ALIGN));
    assert!(RING_HEADER_SIZE.is_multiple_of(FRAME_ALIGN));
};

abi_enum! {
    /// What a frame carries. Unknown values are reported, not trusted.
    pub enum FrameKind: u32 {
        /// Host to guest: an `rpc::Request` for a guest function.
        Request = 1,
        /// Guest to host: the `rpc::Response` to a request.
        Response = 2,
        /// Guest to host: an `rpc::Request` for a host function.
        HostCallRequest = 3,
        /// Host to guest: the `rpc::Response` to a host call.
        HostCallResponse = 4,
    }
}

/// Why a ring operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The region is too small to hold a header and one frame.
    RegionTooSmall,
    /// `head` or `tail` lies outside the data area, or `head > tail`.
    BadOffsets {
        /// The head read from the header.
        head: u64,
        /// The tail read from the header.
        tail: u64,
    },
    /// A frame header or body runs past `tail`.
    Truncated {
        /// Offset of the frame.
        offset: usize,
    },
    /// The frame kind is not a known [`FrameKind`].
    UnknownKind {
        /// The raw kind.
        kind: u32,
    },
    /// The frame does not fit in the space left.
    Full {
        /// Bytes needed (header, body and padding).
        needed: usize,
        /// Bytes free.
        free: usize,
    },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::RegionTooSmall => write!(f, "ring region too small"),
            Self::BadOffsets { head, tail } => {
                write!(
                    f,
                    "ring offsets out of range (head {head:#x}, tail {tail:#x})"
                )
            }
            Self::Truncated { offset } => write!(f, "frame at {offset:#x} runs past the tail"),
            Self::UnknownKind { kind } => write!(f, "unknown frame kind {kind}"),
            Self::Full { needed, free } => {
                write!(
                    f,
                    "frame of {needed} bytes does not fit in {free} free bytes"
                )
            }
        }
    }
}

impl core::error::Error for RingError {}

/// Bytes a frame with a `body_len`-byte body occupies, padding included.
pub const fn frame_size(body_len: usize) -> Option<usize> {
    match body_len.checked_add(FRAME_HEADER_SIZE + FRAME_ALIGN - 1) {
        Some(v) => Some(v & !(FRAME_ALIGN - 1)),
        None => None,
    }
}

/// Size of the data area of a ring region of `region_size` bytes (the
/// region minus its header): the one place a ring's capacity is computed.
pub const fn data_capacity(region_size: usize) -> usize {
    region_size.saturating_sub(RING_HEADER_SIZE)
}

/// Largest body that fits in an empty ring of `region_size` bytes.
pub const fn max_body_len(region_size: usize) -> usize {
    let data = data_capacity(region_size);
    (data & !(FRAME_ALIGN - 1)).saturating_sub(FRAME_HEADER_SIZE)
}

/// One frame read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's kind.
    pub kind: FrameKind,
    /// The body bytes (exactly `len` long, 16-byte aligned in the region).
    pub body: &'a [u8],
    /// Offset of the frame in the data area.
    pub offset: usize,
    /// Offset of the next frame.
    pub next: usize,
}

/// Read access to a ring region (header included).
#[derive(Debug, Clone, Copy)]
pub struct RingReader<'a> {
    region: &'a [u8],
}

impl<'a> RingReader<'a> {
    /// Wraps a region; it must hold a header and at least one empty frame.
    pub fn new(region: &'a [u8]) -> Result<Self, RingError> {
        if region.len() < RING_HEADER_SIZE + FRAME_HEADER_SIZE {
            return Err(RingError::RegionTooSmall);
        }
        Ok(Self { region })
    }

    /// Size of the data area.
    pub fn capacity(&self) -> usize {
        data_capacity(self.region.len())
    }

    fn data(&self) -> &'a [u8] {
        self.region.get(RING_HEADER_SIZE..).unwrap_or(&[])
    }

    /// `(head, tail)`, validated: `head <= tail <= capacity`.
    pub fn offsets(&self) -> Result<(usize, usize), RingError> {
        header_offsets(self.region, self.capacity())
    }

    /// Whether the ring holds no unread frame (a corrupt header reads as
    /// empty; [`Self::offsets`] reports it).
    pub fn is_empty(&self) -> bool {
        matches!(self.offsets(), Ok((h, t)) if h == t)
    }

    /// Reads the frame at `offset`, which must end at or before `tail`.
    pub fn frame_at(&self, offset: usize, tail: usize) -> Result<Frame<'a>, RingError> {
        let data = self.data();
        let header = offset
            .checked_add(FRAME_HEADER_SIZE)
            .and_then(|end| data.get(offset..end))
            .ok_or(RingError::Truncated { offset })?;
        let span = frame_span(offset, header, tail.min(self.capacity()))?;
        let body = data
            .get(span.body.clone())
            .ok_or(RingError::Truncated { offset })?;
        Ok(Frame {
            kind: span.kind,
            body,
            offset,
            next: span.next,
        })
    }

    /// The first unread frame, or `None` if the ring is empty.
    pub fn first(&self) -> Result<Option<Frame<'a>>, RingError> {
        let (head, tail) = self.offsets()?;
        if head == tail {
            return Ok(None);
        }
        self.frame_at(head, tail).map(Some)
    }
}

/// Where a frame lies, from its checked header (see [`frame_span`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpan {
    /// The frame's kind.
    pub kind: FrameKind,
    /// Data offsets of its body.
    pub body: core::ops::Range<usize>,
    /// Data offset of the next frame (at most the bound).
    pub next: usize,
}

/// Checks the header of the frame at data offset `offset`: `header` holds
/// its first [`FRAME_HEADER_SIZE`] bytes (from the ring, or a copy the host
/// took of a running guest's ring). The frame must be
/// [`FRAME_ALIGN`]-aligned, of a known kind, and end by `bound`.
pub fn frame_span(offset: usize, header: &[u8], bound: usize) -> Result<FrameSpan, RingError> {
    let truncated = RingError::Truncated { offset };
    let body_start = offset.checked_add(FRAME_HEADER_SIZE).ok_or(truncated)?;
    if body_start > bound || !offset.is_multiple_of(FRAME_ALIGN) {
        return Err(truncated);
    }
    let len = read_u32(header, FRAME_LEN_OFFSET).ok_or(truncated)? as usize;
    let raw_kind = read_u32(header, FRAME_KIND_OFFSET).ok_or(truncated)?;
    let body_end = body_start.checked_add(len).ok_or(truncated)?;
    if body_end > bound {
        return Err(truncated);
    }
    let kind = FrameKind::try_from(raw_kind).map_err(|kind| RingError::UnknownKind { kind })?;
    let next = frame_size(len)
        .and_then(|size| offset.checked_add(size))
        .ok_or(truncated)?
        .min(bound);
    Ok(FrameSpan {
        kind,
        body: body_start..body_end,
        next,
    })
}

/// `(head, tail)` from a ring header (or a copy of one: the host reads a
/// running guest's header once and validates the copy), checked against a
/// data area of `capacity` bytes: `head <= tail <= capacity`.
pub fn header_offsets(header: &[u8], capacity: usize) -> Result<(usize, usize), RingError> {
    let head = read_u64(header, HEAD_OFFSET).unwrap_or(u64::MAX);
    let tail = read_u64(header, TAIL_OFFSET).unwrap_or(u64::MAX);
    if head > tail || tail > capacity as u64 {
        return Err(RingError::BadOffsets { head, tail });
    }
    Ok((head as usize, tail as usize))
}

/// Write access to a ring region (header included).
#[derive(Debug)]
pub struct RingWriter<'a> {
    region: &'a mut [u8],
}

impl<'a> RingWriter<'a> {
    /// Wraps a region; it must hold a header and at least one empty frame.
    pub fn new(region: &'a mut [u8]) -> Result<Self, RingError> {
        if region.len() < RING_HEADER_SIZE + FRAME_HEADER_SIZE {
            return Err(RingError::RegionTooSmall);
        }
        Ok(Self { region })
    }

    /// A reader over the same region.
    pub fn reader(&self) -> RingReader<'_> {
        RingReader {
            region: self.region,
        }
    }

    /// Empties the ring: `head = tail = 0`.
    pub fn reset(&mut self) {
        self.set_offsets(0, 0);
    }

    /// Sets `head` and `tail` (not validated; readers validate).
    pub fn set_offsets(&mut self, head: usize, tail: usize) {
        write_u64(self.region, HEAD_OFFSET, head as u64);
        write_u64(self.region, TAIL_OFFSET, tail as u64);
    }

    /// Sets `head` only (a consumer marking frames read).
    pub fn set_head(&mut self, head: usize) {
        write_u64(self.region, HEAD_OFFSET, head as u64);
    }

    /// Appends a frame at `tail`. `fill` writes the body into the slice it is
    /// given (all the free space after the frame header) and returns the body
    /// length, or its own error. Returns the frame's offset.
    pub fn push_with<E>(
        &mut self,
        kind: FrameKind,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, PushError<E>> {
        let (head, tail) = self.reader().offsets().map_err(PushError::Ring)?;
        let end = self.write_frame_at(tail, kind, fill)?;
        self.set_offsets(head, end);
        Ok(tail)
    }

    /// Writes a frame at data offset `offset` without touching `head` or
    /// `tail` (a frame placed outside the queue, e.g. a host call made while
    /// a response is still being built before it). Returns the offset just
    /// past the frame.
    pub fn write_frame_at<E>(
        &mut self,
        offset: usize,
        kind: FrameKind,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, PushError<E>> {
        let capacity = self.reader().capacity();
        let full = RingError::Full {
            needed: FRAME_HEADER_SIZE,
            free: capacity.saturating_sub(offset),
        };
        if !offset.is_multiple_of(FRAME_ALIGN) {
            return Err(PushError::Ring(full));
        }
        let space = self
            .region
            .get_mut(RING_HEADER_SIZE..)
            .and_then(|data| data.get_mut(offset..))
            .ok_or(PushError::Ring(full))?;
        let size = write_frame(space, kind, fill)?;
        Ok(offset + size)
    }

    /// Appends a frame whose body is `body`.
    pub fn push(&mut self, kind: FrameKind, body: &[u8]) -> Result<usize, RingError> {
        self.push_with(kind, |space| match space.get_mut(..body.len()) {
            Some(dst) => {
                dst.copy_from_slice(body);
                Ok(body.len())
            }
            None => Err(RingError::Full {
                needed: frame_size(body.len()).unwrap_or(usize::MAX),
                free: space.len() + FRAME_HEADER_SIZE,
            }),
        })
        .map_err(|e| match e {
            PushError::Ring(e) | PushError::Fill(e) => e,
        })
    }
}

/// Writes one frame at the start of `space` (the data area from the
/// frame's offset on, which must be a multiple of [`FRAME_ALIGN`] from the
/// data area's start): `fill` gets the body space (everything after the
/// frame header) and returns the body length. Returns the frame's size,
/// padding included.
///
/// Only `space` is borrowed, so a frame can be written while other parts of
/// the same ring are borrowed elsewhere (the guest's host-call frame past a
/// partial response; the host's host-call response past a payload the guest
/// still reads).
pub fn write_frame<E>(
    space: &mut [u8],
    kind: FrameKind,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
) -> Result<usize, PushError<E>> {
    let free = space.len();
    let (header, body_space) =
        space
            .split_at_mut_checked(FRAME_HEADER_SIZE)
            .ok_or(PushError::Ring(RingError::Full {
                needed: FRAME_HEADER_SIZE,
                free,
            }))?;
    let body_space_len = body_space.len();
    let len = fill(body_space).map_err(PushError::Fill)?;
    let needed = frame_size(len).unwrap_or(usize::MAX);
    let len32 = u32::try_from(len).ok();
    let Some(len32) = len32.filter(|_| len <= body_space_len && needed <= free) else {
        return Err(PushError::Ring(RingError::Full { needed, free }));
    };
    write_u32(header, FRAME_LEN_OFFSET, len32);
    write_u32(header, FRAME_KIND_OFFSET, kind as u32);
    write_u64(header, 8, 0);
    Ok(needed)
}

/// Error of [`RingWriter::push_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError<E> {
    /// The ring refused the frame.
    Ring(RingError),
    /// The body writer failed.
    Fill(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(size: usize) -> Vec<u8> {
        vec![0u8; size]
    }

    #[test]
    fn push_then_read_in_order() {
        let mut mem = region(4096);
        let mut w = RingWriter::new(&mut mem).unwrap();
        assert_eq!(w.push(FrameKind::Request, b"hello").unwrap(), 0);
        assert_eq!(w.push(FrameKind::Response, b"").unwrap(), 32);
        let r = RingReader::new(&mem).unwrap();
        let (head, tail) = r.offsets().unwrap();
        assert_eq!((head, tail), (0, 48));
        let f = r.frame_at(head, tail).unwrap();
        assert_eq!(
            (f.kind, f.body, f.next),
            (FrameKind::Request, &b"hello"[..], 32)
        );
        let g = r.frame_at(f.next, tail).unwrap();
        assert_eq!(
            (g.kind, g.body, g.next),
            (FrameKind::Response, &b""[..], 48)
        );
    }

    #[test]
    fn bodies_are_aligned() {
        let mut mem = region(4096);
        let mut w = RingWriter::new(&mut mem).unwrap();
        for n in 0..40 {
            let off = w.push(FrameKind::Request, &[7u8; 3][..n % 3]).unwrap();
            assert_eq!(off % FRAME_ALIGN, 0);
        }
    }

    #[test]
    fn full_ring_refuses_without_corrupting() {
        let mut mem = region(RING_HEADER_SIZE + 64);
        let mut w = RingWriter::new(&mut mem).unwrap();
        assert_eq!(max_body_len(RING_HEADER_SIZE + 64), 48);
        assert!(w.push(FrameKind::Request, &[1u8; 49]).is_err());
        assert_eq!(w.reader().offsets().unwrap(), (0, 0));
        w.push(FrameKind::Request, &[1u8; 48]).unwrap();
        assert!(matches!(
            w.push(FrameKind::Request, b""),
            Err(RingError::Full { .. })
        ));
    }

    #[test]
    fn write_frame_borrows_only_its_space() {
        let mut mem = region(RING_HEADER_SIZE + 128);
        // Borrow the data area from offset 32 on only, as a host call does
        // while the bytes before it are borrowed elsewhere.
        let (before, space) = mem.split_at_mut(RING_HEADER_SIZE + 32);
        before.fill(0xEE);
        let size = write_frame(space, FrameKind::HostCallRequest, |body| {
            body[..3].copy_from_slice(b"abc");
            Ok::<_, ()>(3)
        })
        .unwrap();
        assert_eq!(size, 32);
        assert!(mem[..RING_HEADER_SIZE + 32].iter().all(|&b| b == 0xEE));
        let mut w = RingWriter::new(&mut mem).unwrap();
        w.set_offsets(0, 64);
        let f = w.reader().frame_at(32, 64).unwrap();
        assert_eq!(
            (f.kind, f.body, f.next),
            (FrameKind::HostCallRequest, &b"abc"[..], 64)
        );
        // Too small for a header, a body longer than the space, and a fill
        // error are refused without writing a header.
        let mut small = [0u8; 15];
        assert!(matches!(
            write_frame(&mut small, FrameKind::Request, |_| Ok::<_, ()>(0)),
            Err(PushError::Ring(RingError::Full {
                needed: 16,
                free: 15
            }))
        ));
        let mut space = [0u8; 32];
        assert!(matches!(
            write_frame(&mut space, FrameKind::Request, |_| Ok::<_, ()>(17)),
            Err(PushError::Ring(RingError::Full {
                needed: 48,
                free: 32
            }))
        ));
        assert_eq!(
            write_frame(&mut space, FrameKind::Request, |_| Err::<usize, _>("no")),
            Err(PushError::Fill("no"))
        );
        assert_eq!(space, [0u8; 32]);
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut mem = region(256);
        write_u64(&mut mem, TAIL_OFFSET, 10_000);
        let r = RingReader::new(&mem).unwrap();
        assert!(matches!(r.offsets(), Err(RingError::BadOffsets { .. })));
        // A frame claiming a body past the tail.
        let mut mem = region(256);
        write_u64(&mut mem, TAIL_OFFSET, 32);
        write_u32(&mut mem, RING_HEADER_SIZE, u32::MAX);
        write_u32(&mut mem, RING_HEADER_SIZE + 4, 1);
        let r = RingReader::new(&mem).unwrap();
        assert!(matches!(r.first(), Err(RingError::Truncated { offset: 0 })));
        // Unknown kind.
        write_u32(&mut mem, RING_HEADER_SIZE, 0);
        write_u32(&mut mem, RING_HEADER_SIZE + 4, 99);
        let r = RingReader::new(&mem).unwrap();
        assert!(matches!(
            r.first(),
            Err(RingError::UnknownKind { kind: 99 })
        ));
        // Misaligned offset.
        assert!(r.frame_at(3, 32).is_err());
    }

    #[test]
    fn every_header_byte_pattern_is_read_and_written_exactly() {
        // A sweep over hostile head/tail/len combinations: each read and
        // each push does exactly what the header allows, and nothing else.
        let capacity = 256 - RING_HEADER_SIZE as u64;
        for head in [0u64, 16, 17, 48, 4096, u64::MAX] {
            for tail in [0u64, 16, 32, 48, 192, 4096, u64::MAX] {
                for len in [0u32, 1, 16, 176, u32::MAX] {
                    let mut mem = region(256);
                    write_u64(&mut mem, HEAD_OFFSET, head);
                    write_u64(&mut mem, TAIL_OFFSET, tail);
                    // Only the frame at offset 0 has a known kind.
                    write_u32(&mut mem, RING_HEADER_SIZE, len);
                    write_u32(&mut mem, RING_HEADER_SIZE + 4, 2);
                    let valid = head <= tail && tail <= capacity;
                    let case = format!("head {head} tail {tail} len {len}");

                    let r = RingReader::new(&mem).unwrap();
                    match r.first() {
                        Err(RingError::BadOffsets { head: h, tail: t }) => {
                            assert!(!valid && (h, t) == (head, tail), "{case}")
                        }
                        Ok(None) => assert!(valid && head == tail, "{case}"),
                        Ok(Some(f)) => {
                            let fits = FRAME_HEADER_SIZE as u64 + u64::from(len) <= tail;
                            assert!(valid && head == 0 && head < tail && fits, "{case}");
                            assert_eq!(f.kind, FrameKind::Response, "{case}");
                            assert_eq!(f.body.len() as u64, u64::from(len), "{case}");
                            assert!(f.next as u64 <= tail, "{case}");
                        }
                        Err(e) => {
                            // A frame that is misplaced, runs past the
                            // tail, or (away from offset 0) has kind 0.
                            let fits = FRAME_HEADER_SIZE as u64 + u64::from(len) <= tail;
                            assert!(valid && head < tail && !(head == 0 && fits), "{case}");
                            assert!(
                                matches!(
                                    e,
                                    RingError::Truncated { .. }
                                        | RingError::UnknownKind { kind: 0 }
                                ),
                                "{case}: {e:?}"
                            );
                        }
                    }

                    let mut w = RingWriter::new(&mut mem).unwrap();
                    let pushed = w.push(FrameKind::Response, b"x");
                    let room = valid && tail + 32 <= capacity;
                    match pushed {
                        Ok(offset) => {
                            assert!(room && offset as u64 == tail, "{case}");
                            let r = w.reader();
                            assert_eq!(r.offsets().unwrap(), (head as usize, offset + 32));
                            let f = r.frame_at(offset, offset + 32).unwrap();
                            assert_eq!((f.kind, f.body), (FrameKind::Response, &b"x"[..]));
                        }
                        Err(RingError::BadOffsets { .. }) => assert!(!valid, "{case}"),
                        Err(RingError::Full { .. }) => assert!(valid && !room, "{case}"),
                        Err(e) => panic!("{case}: unexpected {e:?}"),
                    }
                    if pushed.is_err() {
                        // A refused push leaves the header alone.
                        assert_eq!(read_u64(&mem, HEAD_OFFSET), Some(head), "{case}");
                        assert_eq!(read_u64(&mem, TAIL_OFFSET), Some(tail), "{case}");
                    }
                }
            }
        }
    }
}
