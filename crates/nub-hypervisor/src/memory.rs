//! Guest memory: one host mapping backing the VM's KVM slots: anonymous
//! zeroed memory ([`GuestMemory::new`]), or a private copy-on-write mapping
//! of a prepared image ([`crate::image::PreparedImage`]), whose pages read
//! the image until the guest writes them and revert to it when discarded.
//!
//! All host access goes through bounds-checked methods that take guest
//! physical addresses; an address or length outside the slot is an error,
//! never a panic. The host never holds a Rust reference into guest memory:
//! `read` and `write` copy with relaxed atomic loads and stores, and the
//! control words of resident calls are handed out as `&AtomicU64`. So the
//! memory can be shared (`Sync`) with a vCPU that runs the guest while host
//! threads read and write it, and a guest that rewrites bytes while the
//! host copies them can only change what the host copies, never cause a
//! data race in the host.

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU8, AtomicU64, Ordering},
};

/// A failed guest memory access.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryError {
    /// The range `[addr, addr + len)` is not inside guest memory.
    #[error("guest range {addr:#x}+{len:#x} is outside guest memory of {size:#x} bytes")]
    OutOfBounds {
        /// First guest address of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
        /// Size of guest memory.
        size: u64,
    },
    /// An atomic word access at an address that is not aligned for it.
    #[error("guest address {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// The address.
        addr: u64,
        /// The alignment required.
        align: u64,
    },
    /// The host could not map the memory.
    #[error(
        "cannot map {size:#x} bytes of guest memory: {}",
        std::io::Error::from_raw_os_error(*errno)
    )]
    Map {
        /// Requested size.
        size: u64,
        /// `errno` from mmap.
        errno: i32,
    },
    /// Discarding the guest's pages (`madvise(MADV_DONTNEED)`) failed.
    #[error("discarding {size:#x} bytes of guest memory failed: errno {errno}")]
    Discard {
        /// Size of the mapping.
        size: u64,
        /// `errno` from madvise.
        errno: i32,
    },
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Bytes per page (mappings are in whole pages of this size).
const PAGE: usize = nub_host_common::layout::PAGE_SIZE as usize;
/// Private pages [`GuestMemory::revert`] copies back at most; beyond that
/// it discards them all (an idle pooled VM would otherwise keep them).
/// The default guest's working set after a call is about 8 pages.
const MAX_COPY_BACK_PAGES: usize = 64;
/// `/proc/self/pagemap`: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// `/proc/self/pagemap`: the page is swapped out.
const PM_SWAPPED: u64 = 1 << 62;
/// `/proc/self/pagemap`: the page is a file page (or shared anonymous).
const PM_FILE: u64 = 1 << 61;

/// The `/proc/self/pagemap` entries of `pages` pages from host address
/// `start` (the kernel's docs/admin-guide/mm/pagemap.rst), or `None` if
/// the file cannot be read.
fn page_map(start: usize, pages: usize) -> Option<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    static PAGEMAP: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let file = PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok())
        .as_ref()?;
    let mut raw = vec![0u8; pages.checked_mul(8)?];
    let offset = u64::try_from(start / PAGE).ok()?.checked_mul(8)?;
    file.read_exact_at(&mut raw, offset).ok()?;
    Some(
        raw.chunks_exact(8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
            .collect(),
    )
}

/// Guest memory owned by the host: a private, page-aligned mapping, lazily
/// backed (untouched pages cost nothing). Anonymous memory starts zeroed;
/// a mapping of a prepared image starts as the image and diverges only in
/// the pages written through it (copy-on-write).
#[derive(Debug)]
pub struct GuestMemory {
    base: NonNull<u8>,
    size: usize,
    /// Whether the range is known to be mapped: false after a failed
    /// remap, which may leave it unmapped, so that drop never unmaps a
    /// range another mapping may since have taken.
    mapped: bool,
}

// SAFETY: GuestMemory owns its mapping exclusively; moving it between threads
// moves that ownership.
unsafe impl Send for GuestMemory {}
// SAFETY: every access through `&self` is an atomic load or store into the
// mapping (`read`, `write`, `atomic_u64`); no method hands out a plain
// reference into it, so threads sharing a `&GuestMemory` (and a vCPU running
// the guest) never race a non-atomic access.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Maps `size` bytes (rounded up to whole pages) of zeroed memory.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        let map_err = |errno| MemoryError::Map { size, errno };
        let len = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(PAGE))
            .filter(|&s| s > 0)
            .ok_or(map_err(libc::EINVAL))?;
        // SAFETY: a fresh anonymous private mapping with no address hint
        // touches no existing memory; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(map_err(last_errno()));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(map_err(libc::ENOMEM))?;
        Ok(Self {
            base,
            size: len,
            mapped: true,
        })
    }

    /// Maps the first `size` bytes (a non-zero multiple of the page size)
    /// of the file `fd`: shared (writes reach the file; used to fill a
    /// prepared image) or private (copy-on-write: writes stay in this
    /// mapping, reads of unwritten pages see the file).
    pub(crate) fn map_file(
        fd: BorrowedFd<'_>,
        size: u64,
        shared: bool,
    ) -> Result<Self, MemoryError> {
        Self::map_file_with(fd, size, shared, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// A read-only shared mapping of the first `size` bytes of `fd`: the
    /// host's view of a sealed image, which [`GuestMemory::revert`] copies
    /// from. Writing through it faults; nothing here does.
    pub(crate) fn map_file_readonly(fd: BorrowedFd<'_>, size: u64) -> Result<Self, MemoryError> {
        Self::map_file_with(fd, size, true, libc::PROT_READ)
    }

    fn map_file_with(
        fd: BorrowedFd<'_>,
        size: u64,
        shared: bool,
        prot: libc::c_int,
    ) -> Result<Self, MemoryError> {
        let map_err = |errno| MemoryError::Map { size, errno };
        let len = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0 && s % PAGE == 0)
            .ok_or(map_err(libc::EINVAL))?;
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE | libc::MAP_NORESERVE
        };
        // SAFETY: a new mapping with no address hint touches no existing
        // memory; `fd` is a live file descriptor for the call; the result
        // is checked below.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(map_err(last_errno()));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(map_err(libc::ENOMEM))?;
        Ok(Self {
            base,
            size: len,
            mapped: true,
        })
    }

    /// Replaces the whole mapping, at the same host address, with a private
    /// mapping of the file `fd` (at least as large as this memory): every
    /// page now reads the file, none of the old content remains. The host
    /// address stays the same, so a KVM slot over it stays valid (KVM's MMU
    /// notifier drops its mappings of the old pages). `&mut self`: no other
    /// host reference can observe the switch.
    ///
    /// On failure the range may be left unmapped: the memory must then be
    /// dropped (it no longer unmaps anything when it is).
    pub(crate) fn remap_file(&mut self, fd: BorrowedFd<'_>) -> Result<(), MemoryError> {
        // SAFETY: MAP_FIXED over exactly this memory's own mapping, which
        // `&mut self` guarantees no host code is accessing; the guest's view
        // is switched by the kernel (the slot's host address is unchanged).
        let ptr = unsafe {
            libc::mmap(
                self.base.as_ptr().cast(),
                self.size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED || ptr.cast::<u8>() != self.base.as_ptr() {
            self.mapped = false;
            return Err(MemoryError::Map {
                size: self.size as u64,
                errno: last_errno(),
            });
        }
        Ok(())
    }

    /// The pages (numbered from guest physical address 0) this mapping of
    /// an image holds a private copy of: those the guest or the host wrote
    /// since it was mapped or last reverted (present and not a file page,
    /// or swapped out, in `/proc/self/pagemap`). Every other page reads the
    /// image. `None` when the page map cannot be read.
    pub fn private_pages(&self) -> Option<Vec<u64>> {
        let entries = page_map(self.base.as_ptr() as usize, self.size / PAGE)?;
        let private = |e: u64| e & PM_SWAPPED != 0 || (e & PM_PRESENT != 0 && e & PM_FILE == 0);
        Some(
            entries
                .iter()
                .enumerate()
                .filter(|&(_, &e)| private(e))
                .map(|(page, _)| page as u64)
                .collect(),
        )
    }

    /// Reverts a private mapping of an image's file to the image, keeping
    /// the pages mapped: every page this mapping holds a private copy of
    /// (found in `/proc/self/pagemap`: present and not a file page) gets
    /// the image's bytes back from `image` (a read-only view of the same
    /// file, as large as this memory); pages swapped out are discarded;
    /// every other page already reads the file. Unlike [`Self::discard`]
    /// this leaves the host's and KVM's mappings of the guest's working set
    /// in place, so the next guest does not fault it in again. Falls back
    /// to [`Self::discard`] when the page map cannot be read or more than
    /// [`MAX_COPY_BACK_PAGES`] pages are private. `&mut self`:
    /// no other host reference can observe the switch.
    pub(crate) fn revert(&mut self, image: &GuestMemory) -> Result<(), MemoryError> {
        if image.size < self.size {
            return self.discard();
        }
        let pages = self.size / PAGE;
        let Some(entries) = page_map(self.base.as_ptr() as usize, pages) else {
            return self.discard();
        };
        let copied = |e: u64| e & PM_PRESENT != 0 && e & PM_FILE == 0;
        let private = entries
            .iter()
            .filter(|&&e| e & PM_SWAPPED != 0 || copied(e))
            .count();
        if private > MAX_COPY_BACK_PAGES {
            // Not a working set worth keeping (a guest that filled its
            // heap, say): give the memory back instead of holding it idle.
            return self.discard();
        }
        for (page, entry) in entries.iter().enumerate() {
            let offset = page * PAGE;
            if entry & PM_SWAPPED != 0 {
                // SAFETY: one page of this memory's own mapping, which
                // `&mut self` guarantees no host code is accessing.
                let rc = unsafe {
                    libc::madvise(
                        self.base.as_ptr().add(offset).cast(),
                        PAGE,
                        libc::MADV_DONTNEED,
                    )
                };
                if rc != 0 {
                    return self.discard();
                }
            } else if copied(*entry) {
                // SAFETY: both ranges are one page inside live mappings
                // (`offset < size <= image.size`); `&mut self` guarantees
                // nothing else accesses this memory, and the image view is
                // a read-only mapping of a sealed file nothing writes, so
                // the copy races with no access; the mappings are distinct.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        image.base.as_ptr().add(offset),
                        self.base.as_ptr().add(offset),
                        PAGE,
                    );
                }
            }
        }
        Ok(())
    }

    /// Discards every page written since the mapping was made
    /// (`madvise(MADV_DONTNEED)` over the whole range): a private mapping
    /// of a file reads the file again, anonymous memory reads zeros. The
    /// host address stays mapped and KVM's MMU notifier drops the guest's
    /// mappings of the discarded pages. `&mut self`: no other host
    /// reference can observe the switch.
    pub(crate) fn discard(&mut self) -> Result<(), MemoryError> {
        // SAFETY: the range is exactly this memory's own live mapping;
        // `&mut self` guarantees no host code is accessing it.
        let rc =
            unsafe { libc::madvise(self.base.as_ptr().cast(), self.size, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(MemoryError::Discard {
                size: self.size as u64,
                errno: last_errno(),
            });
        }
        Ok(())
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Host address of guest physical address 0 (for the KVM slot).
    pub fn host_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Byte range of `[addr, addr + len)`, or `None` on overflow.
    fn range(addr: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(addr).ok()?;
        Some(start..start.checked_add(len)?)
    }

    fn out_of_bounds(&self, addr: u64, len: usize) -> MemoryError {
        MemoryError::OutOfBounds {
            addr,
            len: len as u64,
            size: self.size as u64,
        }
    }

    /// Host pointer to guest address `addr`, after checking that
    /// `[addr, addr + len)` lies inside the mapping.
    fn checked_ptr(&self, addr: u64, len: usize) -> Result<*mut u8, MemoryError> {
        let range = Self::range(addr, len)
            .filter(|r| r.end <= self.size)
            .ok_or(self.out_of_bounds(addr, len))?;
        // SAFETY: `range.start <= range.end <= size`, so the offset stays
        // inside (or one past the end of) the mapping `base` points to.
        Ok(unsafe { self.base.as_ptr().add(range.start) })
    }

    /// Copies `data` into guest memory at `addr`, bounds-checked.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let dst = self.checked_ptr(addr, data.len())?;
        // SAFETY: `[dst, dst + len)` is inside the live mapping (checked).
        unsafe { atomic_copy_in(dst, data) };
        Ok(())
    }

    /// Copies guest memory at `addr` into `out`, bounds-checked.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let src = self.checked_ptr(addr, out.len())?;
        // SAFETY: `[src, src + len)` is inside the live mapping (checked).
        unsafe { atomic_copy_out(src, out) };
        Ok(())
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// The 8-byte-aligned word at `addr` as an atomic: the control words
    /// that host threads and a running vCPU share (resident calls).
    pub fn atomic_u64(&self, addr: u64) -> Result<&AtomicU64, MemoryError> {
        if !addr.is_multiple_of(8) {
            return Err(MemoryError::Misaligned { addr, align: 8 });
        }
        let ptr = self.checked_ptr(addr, 8)?;
        // SAFETY: the 8 bytes are inside the mapping (checked) and 8-byte
        // aligned (the mapping is page aligned and `addr` is a multiple of
        // 8), which is AtomicU64's alignment; the mapping lives as long as
        // `&self`. Every host access to guest memory is atomic (this type
        // never hands out a plain reference), and the guest's accesses are
        // outside Rust's model: aligned 8-byte stores and loads are single
        // accesses on x86_64.
        Ok(unsafe { AtomicU64::from_ptr(ptr.cast::<u64>()) })
    }
}

/// Copies `data` to `dst` with relaxed atomic stores (words where aligned,
/// bytes at the ends), so a guest running concurrently never races a
/// non-atomic host access.
///
/// # Safety
///
/// `[dst, dst + data.len())` must lie inside a live guest mapping.
unsafe fn atomic_copy_in(dst: *mut u8, data: &[u8]) {
    let head = dst.align_offset(8).min(data.len());
    let (bytes, rest) = data.split_at(head);
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: inside the range (caller), u8 needs no alignment.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(*b, Ordering::Relaxed);
    }
    let mut words = rest.chunks_exact(8);
    let mut at = head;
    for word in &mut words {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(word);
        // SAFETY: inside the range (caller) and 8-byte aligned (`head`
        // aligned the cursor; it advances by 8).
        unsafe { AtomicU64::from_ptr(dst.add(at).cast::<u64>()) }
            .store(u64::from_ne_bytes(raw), Ordering::Relaxed);
        at += 8;
    }
    for b in words.remainder() {
        // SAFETY: inside the range (caller).
        unsafe { AtomicU8::from_ptr(dst.add(at)) }.store(*b, Ordering::Relaxed);
        at += 1;
    }
}

/// Copies from `src` into `out` with relaxed atomic loads (words where
/// aligned, bytes at the ends); see [`atomic_copy_in`].
///
/// # Safety
///
/// `[src, src + out.len())` must lie inside a live guest mapping.
unsafe fn atomic_copy_out(src: *mut u8, out: &mut [u8]) {
    let head = src.align_offset(8).min(out.len());
    let (bytes, rest) = out.split_at_mut(head);
    for (i, b) in bytes.iter_mut().enumerate() {
        // SAFETY: inside the range (caller).
        *b = unsafe { AtomicU8::from_ptr(src.add(i)) }.load(Ordering::Relaxed);
    }
    let mut at = head;
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        // SAFETY: inside the range (caller) and 8-byte aligned.
        let w = unsafe { AtomicU64::from_ptr(src.add(at).cast::<u64>()) }.load(Ordering::Relaxed);
        word.copy_from_slice(&w.to_ne_bytes());
        at += 8;
    }
    for b in words.into_remainder() {
        // SAFETY: inside the range (caller).
        *b = unsafe { AtomicU8::from_ptr(src.add(at)) }.load(Ordering::Relaxed);
        at += 1;
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        if !self.mapped {
            // A failed remap may have unmapped the range, and something
            // else may have been mapped there since: leak the address
            // range rather than unmap a stranger.
            return;
        }
        // SAFETY: `base`/`size` describe exactly the mapping created in
        // `new` or `map_file` (and possibly replaced in place by
        // `remap_file`), which nothing else references once `self` is
        // dropped (the KVM slot is removed with the VM fd, dropped before
        // this field).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = GuestMemory::new(8192).unwrap();
        assert_eq!(m.size(), 8192);
        m.write_u64(8184, 42).unwrap();
        assert_eq!(m.read_u64(8184).unwrap(), 42);
        assert!(m.read_u64(8185).is_err());
        assert!(m.read(u64::MAX, &mut [0u8; 2]).is_err());
        assert!(m.atomic_u64(4).is_err(), "misaligned");
        assert!(m.atomic_u64(8192).is_err(), "outside");
        m.atomic_u64(8184).unwrap().store(7, Ordering::SeqCst);
        assert_eq!(m.read_u64(8184).unwrap(), 7);
        assert!(m.write(8192, &[]).is_ok());
        assert!(m.write(8193, &[]).is_err());
    }

    #[test]
    fn copies_of_every_length_and_alignment_round_trip() {
        let m = GuestMemory::new(4096).unwrap();
        let data: Vec<u8> = (0..64u8).collect();
        for start in 0..9u64 {
            for len in 0..40usize {
                m.write(start, &data[..len]).unwrap();
                let mut out = vec![0xAA; len];
                m.read(start, &mut out).unwrap();
                assert_eq!(out, &data[..len], "at {start} len {len}");
            }
        }
    }

    #[test]
    fn zero_size_is_refused() {
        assert!(GuestMemory::new(0).is_err());
    }
}
