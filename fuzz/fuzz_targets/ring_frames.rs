//! The shared-memory ring as the host reads it after a guest exit: the whole
//! input is the ring region (header + data area), as hostile as the guest
//! cares to make it. The 48 reserved header bytes (ignored by the reader)
//! double as fuzzer-chosen parameters for the direct `frame_at` probes and
//! the writer half.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_host_common::ring::{
    FRAME_ALIGN, FRAME_HEADER_SIZE, Frame, FrameKind, PushError, RING_HEADER_SIZE, RingError,
    RingReader, RingWriter, frame_size,
};
use nub_host_common::{read_u32, read_u64};

/// The invariants of any frame `frame_at(offset, tail)` returned.
fn check_frame(region: &[u8], reader: &RingReader<'_>, f: &Frame<'_>, offset: usize, tail: usize) {
    let tail = tail.min(reader.capacity());
    let data = &region[RING_HEADER_SIZE..];
    assert_eq!(f.offset, offset);
    assert!(offset.is_multiple_of(FRAME_ALIGN));
    let len = read_u32(data, offset).expect("frame header in range") as usize;
    let kind = read_u32(data, offset + 4).expect("frame header in range");
    assert_eq!(f.kind as u32, kind);
    assert_eq!(f.body.len(), len);
    let body_start = offset + FRAME_HEADER_SIZE;
    assert!(body_start + len <= tail, "body runs past the tail");
    // The body is the slice of the region right after the frame header.
    assert_eq!(f.body, &data[body_start..body_start + len]);
    let body_ptr = f.body.as_ptr() as usize;
    assert_eq!(body_ptr, data.as_ptr() as usize + body_start);
    // `next` makes progress and never passes the tail.
    assert!(f.next > offset, "next {} does not pass {offset}", f.next);
    assert!(f.next <= tail);
    assert_eq!(f.next, (offset + frame_size(len).unwrap()).min(tail));
}

/// A few fuzzer-chosen values from the reserved header bytes.
fn param(region: &[u8], i: usize) -> u64 {
    read_u64(region, 16 + 8 * i).unwrap_or(0)
}

fn kind_of(v: u64) -> FrameKind {
    match v % 4 {
        0 => FrameKind::Request,
        1 => FrameKind::Response,
        2 => FrameKind::HostCallRequest,
        _ => FrameKind::HostCallResponse,
    }
}

fuzz_target!(|data: &[u8]| {
    let reader = match RingReader::new(data) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(e, RingError::RegionTooSmall);
            assert!(data.len() < RING_HEADER_SIZE + FRAME_HEADER_SIZE);
            return;
        }
    };
    assert_eq!(reader.capacity(), data.len() - RING_HEADER_SIZE);
    let _ = reader.is_empty();

    // The host's drain loop: validated offsets, then frame by frame.
    if let Ok((head, tail)) = reader.offsets() {
        assert!(head <= tail && tail <= reader.capacity());
        assert_eq!(reader.is_empty(), head == tail);
        match reader.first() {
            Ok(None) => assert_eq!(head, tail),
            Ok(Some(f)) => check_frame(data, &reader, &f, head, tail),
            Err(_) => {}
        }
        let mut off = head;
        let mut steps = 0usize;
        while off < tail {
            // Each frame is at least FRAME_HEADER_SIZE bytes, so the walk
            // ends after at most capacity / 16 frames; the bound makes a
            // regression fail instead of hang.
            steps += 1;
            assert!(steps <= data.len(), "frame walk does not terminate");
            match reader.frame_at(off, tail) {
                Ok(f) => {
                    check_frame(data, &reader, &f, off, tail);
                    off = f.next;
                }
                Err(_) => break,
            }
        }
    } else {
        assert!(matches!(reader.first(), Err(RingError::BadOffsets { .. })));
        assert!(!reader.is_empty());
    }

    // Arbitrary (offset, tail) pairs, including absurd ones.
    let cap = reader.capacity();
    for (offset, tail) in [
        (param(data, 0) as usize, cap),
        (param(data, 1) as usize, cap),
        (param(data, 0) as usize, param(data, 1) as usize),
        (usize::MAX & !(FRAME_ALIGN - 1), usize::MAX),
        (usize::MAX - FRAME_HEADER_SIZE + 1, cap),
        (
            cap.saturating_sub(FRAME_HEADER_SIZE) & !(FRAME_ALIGN - 1),
            cap,
        ),
    ] {
        if let Ok(f) = reader.frame_at(offset, tail) {
            check_frame(data, &reader, &f, offset, tail);
        }
    }

    // The writer half over a mutable copy (the host writes the input ring
    // the guest may have scribbled on).
    let mut copy = data.to_vec();
    let body_len = (param(data, 2) % 4096) as usize;
    let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
    let kind = kind_of(param(data, 3));
    let before = RingReader::new(&copy).unwrap().offsets();
    let mut w = RingWriter::new(&mut copy).unwrap();
    match w.push(kind, &body) {
        Ok(at) => {
            let (head, tail) = before.expect("push succeeded on bad offsets");
            assert_eq!(at, tail);
            let r = w.reader();
            let (h2, t2) = r.offsets().expect("push left bad offsets");
            assert_eq!(h2, head);
            assert_eq!(t2, tail + frame_size(body_len).unwrap());
            let f = r.frame_at(at, t2).expect("pushed frame reads back");
            assert_eq!((f.kind, f.body), (kind, &body[..]));
        }
        Err(_) => {
            // A refused push leaves the header alone.
            let r = w.reader();
            assert_eq!(r.offsets(), before);
        }
    }

    // write_frame_at at a fuzzer-chosen offset with a fill that claims a
    // fuzzer-chosen length (possibly more than it was given).
    let offset = param(data, 4) as usize;
    let claimed = param(data, 5) as usize;
    let mut given = None;
    let res = w.write_frame_at::<()>(offset, kind, |space| {
        given = Some(space.len());
        Ok(claimed)
    });
    match res {
        Ok(end) => {
            let space = given.expect("fill was called");
            assert!(claimed <= space);
            assert_eq!(end, offset + frame_size(claimed).unwrap());
            let r = w.reader();
            assert!(end <= r.capacity());
            let f = r.frame_at(offset, end).expect("written frame reads back");
            assert_eq!((f.kind, f.body.len(), f.next), (kind, claimed, end));
        }
        Err(PushError::Ring(_)) => {}
        Err(PushError::Fill(())) => unreachable!("fill never fails"),
    }
    // A failing fill is reported as such.
    let res = w.write_frame_at(param(data, 4) as usize, kind, |_| Err(7u8));
    assert!(matches!(
        res,
        Err(PushError::Fill(7)) | Err(PushError::Ring(_))
    ));
});
