//! [`RingRegion`]: a ring the kernel reaches through a raw pointer, never
//! through a long-lived reference.
//!
//! Two parties write the same ring while a guest function runs. The host
//! writes a host-call response into the input ring while the function still
//! reads its request payload from that ring, and the guest writes a
//! host-call request frame into the output ring while the function's
//! [`crate::Output`] is building the response there. The bytes never
//! overlap, but Rust's aliasing rules are not about bytes touched: a
//! `&mut [u8]` over a whole ring promises that nothing else reads or writes
//! *any* of its bytes while the reference is live (and a reference passed as
//! an argument stays live for the whole call). A second writer anywhere in
//! the ring then breaks that promise, whatever bytes it touches, and the
//! optimizer (guests are built with LTO) is entitled to miscompile it.
//!
//! So the dispatcher and the host-call path keep each ring as a pointer and
//! a length, and make a reference only to the bytes one step needs, for as
//! long as that step runs:
//!
//! - a guest function's request payload is a `&[u8]` to exactly the
//!   payload's bytes, which lie before the input ring's tail;
//! - the host (or the [`crate::testing`] harness) writes a host-call
//!   response only at or past the input ring's tail;
//! - [`crate::Output`] keeps a raw pointer and makes a reference only to the
//!   bytes one `write` copies (or that `as_slice` returns), all before the
//!   end of the partial response;
//! - a host-call request frame is written through a `&mut [u8]` that starts
//!   at the host-call slot, past the partial response and the space kept
//!   for its archive root (`dispatch::host_call_slot`).
//!
//! Every pointer into a ring is derived from the one pointer the region was
//! made from (in a guest: the address in BootInfo, with exposed provenance;
//! in host tests: the buffer), so none of them is "foreign" to another, and
//! the references made from them are disjoint whenever they are live at the
//! same time. `cargo xtask miri` checks this under Miri's Tree Borrows
//! model (docs/guest-testing.md).

use core::{ops::Range, ptr::NonNull};

/// A ring region (header and data) as a pointer and a length. `Copy`: every
/// copy is the same region; the accessors' contracts are about all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingRegion {
    ptr: NonNull<u8>,
    len: usize,
}

impl RingRegion {
    /// A region of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long
    /// as this region or a copy of it is used, and while it is, that memory
    /// must be accessed only through this region (by the accessors below,
    /// under their contracts) or by the host while the guest waits for it
    /// (stopped in an exit, or, in resident mode, waiting on the control
    /// block with Acquire ordering).
    pub const unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        Self { ptr, len }
    }

    /// The region `buf` occupies. Making it is safe; every access through it
    /// is `unsafe`, and is sound only while `buf`'s borrow is still held by
    /// the code that uses the region (as [`crate::dispatch::process_requests`]
    /// does for its whole run).
    pub fn from_mut_slice(buf: &mut [u8]) -> Self {
        let len = buf.len();
        Self {
            // A slice's pointer is never null (dangling but aligned when
            // empty, and an empty region allows no access).
            ptr: NonNull::from(buf).cast(),
            len,
        }
    }

    /// Size in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pointer to byte `offset` (`offset <= len`), derived from the region's
    /// own pointer; `None` past the end.
    pub(crate) fn ptr_at(&self, offset: usize) -> Option<NonNull<u8>> {
        if offset > self.len {
            return None;
        }
        // SAFETY: `offset <= len`, so the result is inside the region's
        // allocation or one past its end (`from_raw_parts` promises `len`
        // valid bytes).
        Some(unsafe { self.ptr.add(offset) })
    }

    fn checked(&self, range: &Range<usize>) -> Option<(NonNull<u8>, usize)> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        Some((self.ptr_at(range.start)?, range.end - range.start))
    }

    /// The bytes in `range` as a shared slice; `None` if `range` is not
    /// inside the region.
    ///
    /// # Safety
    ///
    /// For as long as the slice is live (`'r`), none of these bytes may be
    /// written, and no `&mut` to any of them may be live.
    pub unsafe fn slice<'r>(&self, range: Range<usize>) -> Option<&'r [u8]> {
        let (ptr, len) = self.checked(&range)?;
        // SAFETY: in bounds (checked) and valid (`from_raw_parts`); the
        // caller rules out writes and `&mut`s to these bytes while it lives.
        Some(unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) })
    }

    /// The bytes in `range` as a mutable slice; `None` if `range` is not
    /// inside the region.
    ///
    /// # Safety
    ///
    /// For as long as the slice is live (`'r`), no other reference to any of
    /// these bytes may be live or made, and they may be accessed only through
    /// this slice.
    pub unsafe fn slice_mut<'r>(&self, range: Range<usize>) -> Option<&'r mut [u8]> {
        let (ptr, len) = self.checked(&range)?;
        // SAFETY: in bounds (checked) and valid (`from_raw_parts`); the
        // caller guarantees exclusive access while the slice lives.
        Some(unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) })
    }

    /// The whole region as a shared slice.
    ///
    /// # Safety
    ///
    /// As for [`Self::slice`], over every byte of the region.
    pub unsafe fn all<'r>(&self) -> &'r [u8] {
        // SAFETY: `0..len` is always inside; the caller's contract is
        // `slice`'s.
        unsafe { self.slice(0..self.len) }.unwrap_or(&[])
    }

    /// The whole region as a mutable slice.
    ///
    /// # Safety
    ///
    /// As for [`Self::slice_mut`], over every byte of the region.
    pub unsafe fn all_mut<'r>(&self) -> &'r mut [u8] {
        // SAFETY: `0..len` is always inside; the caller's contract is
        // `slice_mut`'s.
        unsafe { self.slice_mut(0..self.len) }.unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_are_bounds_checked() {
        let mut buf = [0u8; 32];
        let r = RingRegion::from_mut_slice(&mut buf);
        assert_eq!(r.len(), 32);
        // SAFETY: `buf` is only reached through `r` below, one slice at a
        // time.
        unsafe {
            r.slice_mut(4..8).unwrap().copy_from_slice(&[1, 2, 3, 4]);
            assert_eq!(r.slice(3..9).unwrap(), &[0, 1, 2, 3, 4, 0]);
            assert!(r.slice(0..33).is_none());
            assert!(r.slice_mut(33..33).is_none());
            #[allow(clippy::reversed_empty_ranges)]
            let reversed = r.slice(9..3);
            assert!(reversed.is_none());
            assert_eq!(r.slice(32..32).unwrap(), &[] as &[u8]);
            assert_eq!(r.all().len(), 32);
        }
        assert!(r.ptr_at(33).is_none());
        assert_eq!(buf[7], 4);
    }

    #[test]
    fn disjoint_slices_can_be_live_together() {
        let mut buf = [0u8; 16];
        let r = RingRegion::from_mut_slice(&mut buf);
        // SAFETY: the two slices cover disjoint bytes and `buf` is not used
        // while they live.
        unsafe {
            let low = r.slice(0..8).unwrap();
            let high = r.slice_mut(8..16).unwrap();
            high.fill(9);
            assert_eq!(low, &[0; 8]);
        }
        assert_eq!(buf, [0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
    }
}
