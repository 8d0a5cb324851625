//! Prepared images: a guest's whole initial memory, built once and mapped
//! copy-on-write by every VM that runs it.
//!
//! A [`PreparedImage`] is a sealed memfd of the guest memory's full size
//! holding everything a freshly booted guest finds in memory: what the
//! caller writes (the ELF segments, `BootInfo`, …) and what the host
//! provides for every guest (page tables, GDT, TSS, IDT, exception
//! handlers), plus the vCPU's entry state ([`EntryState`]). Building it
//! is the expensive part of setting a guest up; it happens once.
//!
//! A VM built from it ([`crate::Vm::from_image`]) maps the memfd
//! `MAP_PRIVATE`: the guest reads the image's pages (shared page cache, no
//! copy) until it writes one, which then gets a private copy. So a sandbox's
//! own memory is only what its guest wrote, and reverting the guest to the
//! image is dropping those private pages (`madvise(MADV_DONTNEED)`) or
//! mapping another image at the same host address (see
//! [`crate::Vm::reset`]).
//!
//! The memfd is sealed (`F_SEAL_WRITE`, `F_SEAL_GROW`, `F_SEAL_SHRINK`,
//! `F_SEAL_SEAL`) once filled: nothing, in this process or any other that
//! got the fd, can change an image that VMs are mapping.

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{
    memory::{GuestMemory, MemoryError},
    vm::{EntryState, HypervisorError, VmSetup, write_system_pages},
};

/// A guest memory image, filled once and shared read-only by every VM
/// mapping it. See the module docs.
#[derive(Debug)]
pub struct PreparedImage {
    /// The sealed memfd holding the image.
    fd: OwnedFd,
    /// A read-only shared view of it, what resets copy back from.
    view: GuestMemory,
    /// Its size: the guest memory size, a multiple of the page size.
    size: u64,
    entry: EntryState,
    /// Unique in the process (cheap identity for pools).
    id: u64,
}

/// Why an image could not be prepared.
fn image_error(op: &'static str) -> HypervisorError {
    HypervisorError::Image {
        op,
        source: std::io::Error::last_os_error(),
    }
}

impl PreparedImage {
    /// Builds an image of `size` bytes (rounded up to whole pages): `fill`
    /// writes the guest's own content (segments, boot data), then the host
    /// writes what every guest gets (page tables for `setup.mappings`, GDT,
    /// TSS, IDT, exception handlers), then the memfd is sealed. `setup`
    /// also gives the vCPU's entry state.
    pub fn build(
        size: u64,
        setup: &VmSetup<'_>,
        fill: impl FnOnce(&GuestMemory) -> Result<(), MemoryError>,
    ) -> Result<Self, HypervisorError> {
        let size = size
            .checked_next_multiple_of(4096)
            .filter(|&s| s > 0)
            .ok_or(HypervisorError::Memory(MemoryError::Map {
                size,
                errno: libc::EINVAL,
            }))?;
        let len = libc::off_t::try_from(size).map_err(|_| {
            HypervisorError::Memory(MemoryError::Map {
                size,
                errno: libc::EINVAL,
            })
        })?;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; the
        // result is checked before it is used as an fd.
        let raw = unsafe {
            libc::memfd_create(
                c"nub-guest-image".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(image_error("memfd_create"));
        }
        // SAFETY: `raw` is a new fd this function owns exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(image_error("ftruncate"));
        }
        let entry = {
            let mut memory = GuestMemory::map_file(fd.as_fd(), size, true)?;
            fill(&memory)?;
            write_system_pages(&mut memory, setup)?
            // The shared mapping goes here: F_SEAL_WRITE needs none left.
        };
        let seals =
            libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on our own memfd with an int argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(image_error("F_ADD_SEALS"));
        }
        let view = GuestMemory::map_file_readonly(fd.as_fd(), size)?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            fd,
            view,
            size,
            entry,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The guest memory size the image fills.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The vCPU's state at the guest's first instruction.
    pub fn entry(&self) -> EntryState {
        self.entry
    }

    /// An id unique among the images of this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The sealed memfd (for mapping it).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The image's content, read-only (see [`GuestMemory::revert`]).
    pub(crate) fn view(&self) -> &GuestMemory {
        &self.view
    }
}

#[cfg(test)]
mod tests {
    use nub_host_common::layout::{Access, IMAGE_BASE, PAGE_SIZE, Region};

    use super::*;
    use crate::paging::Mapping;

    fn setup(mappings: &[Mapping]) -> VmSetup<'_> {
        VmSetup {
            mappings,
            entry: IMAGE_BASE,
            stack_pointer: 2 << 20,
            ist_stack_top: 2 << 20,
            boot_info: 0x1000,
            user_mode: true,
        }
    }

    fn code() -> [Mapping; 1] {
        [Mapping {
            region: Region {
                start: IMAGE_BASE,
                size: PAGE_SIZE,
            },
            access: Access::ReadExecute,
        }]
    }

    #[test]
    fn private_mappings_see_the_image_and_keep_their_writes_to_themselves() {
        let mappings = code();
        let image =
            PreparedImage::build(4 << 20, &setup(&mappings), |m| m.write(IMAGE_BASE, b"code"))
                .unwrap();
        assert_eq!(image.size(), 4 << 20);
        assert_eq!(image.entry().entry, IMAGE_BASE);
        let mut a = GuestMemory::map_file(image.fd(), image.size(), false).unwrap();
        let b = GuestMemory::map_file(image.fd(), image.size(), false).unwrap();
        let mut buf = [0u8; 4];
        a.read(IMAGE_BASE, &mut buf).unwrap();
        assert_eq!(&buf, b"code");
        a.write(IMAGE_BASE, b"mine").unwrap();
        b.read(IMAGE_BASE, &mut buf).unwrap();
        assert_eq!(&buf, b"code", "b does not see a's write");
        // The host's system pages are part of the image.
        assert_ne!(
            b.read_u64(nub_host_common::layout::PAGE_TABLES_GPA)
                .unwrap(),
            0
        );
        // Discarding reverts a's writes to the image.
        a.discard().unwrap();
        a.read(IMAGE_BASE, &mut buf).unwrap();
        assert_eq!(&buf, b"code");
    }

    #[test]
    fn reverting_copies_the_image_back_into_written_pages_only() {
        let mappings = code();
        let image = PreparedImage::build(4 << 20, &setup(&mappings), |m| {
            m.write(IMAGE_BASE, b"code")?;
            m.write(2 << 20, b"data")
        })
        .unwrap();
        let mut m = GuestMemory::map_file(image.fd(), image.size(), false).unwrap();
        let mut buf = [0u8; 4];
        m.read(IMAGE_BASE, &mut buf).unwrap(); // read only: stays the file's
        m.write(2 << 20, b"mine").unwrap(); // a private copy
        m.write(3 << 20, b"new!").unwrap(); // a private copy of a zero page
        m.revert(image.view()).unwrap();
        m.read(2 << 20, &mut buf).unwrap();
        assert_eq!(&buf, b"data");
        m.read(3 << 20, &mut buf).unwrap();
        assert_eq!(buf, [0; 4]);
        m.read(IMAGE_BASE, &mut buf).unwrap();
        assert_eq!(&buf, b"code");
        // The private pages stay mapped (no fault next time), with the
        // image's content: a whole-page comparison.
        let mut ours = vec![0u8; 4096];
        let mut theirs = vec![0u8; 4096];
        m.read(2 << 20, &mut ours).unwrap();
        image.view().read(2 << 20, &mut theirs).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn remapping_switches_to_another_image_at_the_same_address() {
        let mappings = code();
        let first =
            PreparedImage::build(4 << 20, &setup(&mappings), |m| m.write(IMAGE_BASE, b"one!"))
                .unwrap();
        let second =
            PreparedImage::build(4 << 20, &setup(&mappings), |m| m.write(IMAGE_BASE, b"two!"))
                .unwrap();
        assert_ne!(first.id(), second.id());
        let mut m = GuestMemory::map_file(first.fd(), first.size(), false).unwrap();
        let base = m.host_address();
        m.write(IMAGE_BASE + 8, b"dirty").unwrap();
        m.remap_file(second.fd()).unwrap();
        assert_eq!(m.host_address(), base);
        let mut buf = [0u8; 13];
        m.read(IMAGE_BASE, &mut buf).unwrap();
        assert_eq!(&buf, b"two!\0\0\0\0\0\0\0\0\0");
    }

    #[test]
    fn the_image_is_sealed_against_writes() {
        let mappings = code();
        let image = PreparedImage::build(4 << 20, &setup(&mappings), |_| Ok(())).unwrap();
        assert!(
            GuestMemory::map_file(image.fd(), image.size(), true).is_err(),
            "a writable shared mapping of a sealed image"
        );
        // SAFETY: pwrite from a valid 1-byte buffer into our own fd.
        let rc = unsafe { libc::pwrite(image.fd().as_raw_fd(), b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, -1, "write(2) into a sealed image");
    }
}
