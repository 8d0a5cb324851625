//! Guest memory: one anonymous host mapping backing the single KVM slot.
//!
//! All host access goes through bounds-checked methods that take guest
//! physical addresses; an address or length outside the slot is an error,
//! never a panic. Borrowing slices is sound only while the vCPU is stopped,
//! which the borrow checker enforces: the vCPU runs through
//! [`crate::Vm::run`], which takes `&mut self`.

use std::ptr::NonNull;

/// A failed guest memory access.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
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
    /// The host could not map the memory.
    #[error("mmap of {size:#x} bytes of guest memory failed: errno {errno}")]
    Map {
        /// Requested size.
        size: u64,
        /// `errno` from mmap.
        errno: i32,
    },
}

/// Guest memory owned by the host: an anonymous, private, page-aligned
/// mapping, zero-filled and lazily backed (untouched pages cost nothing).
#[derive(Debug)]
pub struct GuestMemory {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: GuestMemory owns its mapping exclusively; moving it between threads
// moves that ownership. The vCPU that also accesses it is owned by the same
// `Vm` and only runs inside `Vm::run(&mut self)`.
unsafe impl Send for GuestMemory {}

impl GuestMemory {
    /// Maps `size` bytes (rounded up to whole pages) of zeroed memory.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        let map_err = |errno| MemoryError::Map { size, errno };
        let len = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(4096))
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
            return Err(map_err(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(map_err(libc::ENOMEM))?;
        Ok(Self { base, size: len })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Host address of guest physical address 0 (for the KVM slot).
    pub fn host_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// The whole mapping. Private: callers go through [`Self::slice`] and
    /// friends, which check every guest-supplied address and length.
    fn whole(&self) -> &[u8] {
        // SAFETY: `base` and `size` are the host's own mmap result and its
        // length (nothing the guest controls); the mapping is readable for
        // the life of `self`. The vCPU cannot write to it while `&self` is
        // borrowed, because it only runs inside `Vm::run(&mut self)`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.size) }
    }

    /// The whole mapping, mutable. Private, as [`Self::whole`].
    fn whole_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `whole`; `&mut self` also makes this the only
        // reference into the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.size) }
    }

    /// Byte range of `[addr, addr + len)`, or `None` on overflow. Bounds
    /// against the mapping are checked by the `get` that uses it.
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

    /// `[addr, addr + len)` as a slice, bounds-checked.
    pub fn slice(&self, addr: u64, len: usize) -> Result<&[u8], MemoryError> {
        Self::range(addr, len)
            .and_then(|r| self.whole().get(r))
            .ok_or(self.out_of_bounds(addr, len))
    }

    /// `[addr, addr + len)` as a mutable slice, bounds-checked.
    pub fn slice_mut(&mut self, addr: u64, len: usize) -> Result<&mut [u8], MemoryError> {
        let err = self.out_of_bounds(addr, len);
        Self::range(addr, len)
            .and_then(|r| self.whole_mut().get_mut(r))
            .ok_or(err)
    }

    /// Copies `data` into guest memory at `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.slice_mut(addr, data.len())?.copy_from_slice(data);
        Ok(())
    }

    /// Copies guest memory at `addr` into `out`.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        out.copy_from_slice(self.slice(addr, out.len())?);
        Ok(())
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` describe exactly the mapping created in
        // `new`, which nothing else references once `self` is dropped (the
        // KVM slot is removed with the VM fd, dropped before this field).
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
        let mut m = GuestMemory::new(8192).unwrap();
        assert_eq!(m.size(), 8192);
        m.write_u64(8184, 42).unwrap();
        assert_eq!(m.read_u64(8184).unwrap(), 42);
        assert!(m.read_u64(8185).is_err());
        assert!(m.slice(u64::MAX, 2).is_err());
        assert!(m.slice(4096, usize::MAX).is_err());
        assert!(m.write(8192, &[]).is_ok());
        assert!(m.write(8193, &[]).is_err());
    }

    #[test]
    fn zero_size_is_refused() {
        assert!(GuestMemory::new(0).is_err());
    }
}
