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
//! image is copying the image's bytes back over those private pages
//! (dropping them instead when there are many), or mapping another image
//! at the same host address (see [`crate::Vm::reset`]).
//!
//! The memfd is sealed (`F_SEAL_WRITE`, `F_SEAL_GROW`, `F_SEAL_SHRINK`,
//! `F_SEAL_SEAL`) once filled: nothing, in this process or any other that
//! got the fd, can change an image that VMs are mapping.

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use nub_host_common::layout::{Access, PAGE_SIZE, PAGE_TABLES_GPA, page_table_pages};

use crate::{
    HypervisorError,
    memory::{GuestMemory, MemoryError},
    paging::Mapping,
    regs::UserRegisters,
    setup::{EntryState, VmSetup, all_mappings, write_system_pages},
};

/// A range of guest memory that one KVM memory slot covers: read-only
/// pages come from the image's shared view, the others from the VM's
/// private mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// First guest physical address (page aligned).
    pub(crate) start: u64,
    /// Bytes (whole pages).
    pub(crate) size: u64,
    /// The guest never writes these pages: its page tables map them
    /// without write access (code, read-only data, the boot page, the
    /// exception handlers) or not at all while the CPU reads them (the page
    /// tables). KVM maps them read-only.
    pub(crate) readonly: bool,
}

/// The slots of a guest memory of `size` bytes with `mappings` (applied in
/// order, a later one overriding an earlier one, as the page tables do):
/// runs of read-only and of writable pages; unmapped pages (guards, the
/// null page) join the run they are in. The page tables are read-only.
pub(crate) fn slot_layout(size: u64, mappings: &[Mapping]) -> Vec<Slot> {
    let pages = usize::try_from(size / PAGE_SIZE).unwrap_or(0);
    let mut readonly: Vec<Option<bool>> = vec![None; pages];
    for m in mappings {
        let first = usize::try_from(m.region.start / PAGE_SIZE).unwrap_or(usize::MAX);
        let count = usize::try_from(m.region.size / PAGE_SIZE).unwrap_or(0);
        for class in readonly.iter_mut().skip(first).take(count) {
            *class = match m.access {
                Access::Unmapped => None,
                Access::ReadWrite => Some(false),
                Access::Read | Access::ReadExecute | Access::KernelExecute => Some(true),
            };
        }
    }
    let tables = usize::try_from(PAGE_TABLES_GPA / PAGE_SIZE).unwrap_or(usize::MAX);
    let table_pages = usize::try_from(page_table_pages(size)).unwrap_or(0);
    for class in readonly.iter_mut().skip(tables).take(table_pages) {
        *class = Some(true);
    }
    let mut current = readonly.iter().flatten().next().copied().unwrap_or(false);
    let mut slots = Vec::new();
    let mut start = 0usize;
    for (page, class) in readonly.iter().enumerate() {
        if let Some(class) = *class
            && class != current
        {
            slots.push(Slot {
                start: start as u64 * PAGE_SIZE,
                size: (page - start) as u64 * PAGE_SIZE,
                readonly: current,
            });
            start = page;
            current = class;
        }
    }
    if start < pages {
        slots.push(Slot {
            start: start as u64 * PAGE_SIZE,
            size: (pages - start) as u64 * PAGE_SIZE,
            readonly: current,
        });
    }
    slots
}

/// Writes a new image's content before anything maps it: `pwrite` into
/// the memfd, which costs the kernel's copy and nothing else (writing
/// through a mapping would also take a page fault per page). What
/// [`PreparedImage::build`]'s `fill` is given.
#[derive(Debug)]
pub struct ImageWriter<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    size: u64,
}

impl ImageWriter<'_> {
    /// Writes `data` at guest physical address `addr`, bounds-checked
    /// against the image's size.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let out_of_bounds = MemoryError::OutOfBounds {
            addr,
            len: data.len() as u64,
            size: self.size,
        };
        let end = addr.checked_add(data.len() as u64).ok_or(out_of_bounds)?;
        if end > self.size {
            return Err(out_of_bounds);
        }
        let mut done = 0usize;
        while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
            let offset = libc::off_t::try_from(addr + done as u64).map_err(|_| out_of_bounds)?;
            // SAFETY: pwrite reads `rest.len()` bytes from a live slice
            // into our own memfd, at an offset inside its size (checked
            // above); it touches no memory of this process but the slice.
            let n = unsafe {
                libc::pwrite(
                    self.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    offset,
                )
            };
            match usize::try_from(n) {
                Ok(n) if n > 0 => done += n,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => {
                    return Err(MemoryError::Map {
                        size: self.size,
                        errno: std::io::Error::last_os_error()
                            .raw_os_error()
                            .unwrap_or(libc::EIO),
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes a little-endian u64 at `addr`.
    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }
}

/// A guest memory image, filled once and shared read-only by every VM
/// mapping it. See the module docs.
#[derive(Debug)]
pub struct PreparedImage {
    /// The sealed memfd holding the image.
    fd: OwnedFd,
    /// A read-only shared view of it: what resets copy back from, and what
    /// every VM of the image maps its read-only pages from.
    view: GuestMemory,
    /// How the guest memory divides into read-only and writable slots.
    slots: Vec<Slot>,
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
        fill: impl FnOnce(&ImageWriter<'_>) -> Result<(), MemoryError>,
    ) -> Result<Self, HypervisorError> {
        Self::build_resumed(size, setup, None, fill)
    }

    /// As [`PreparedImage::build`], for a guest that already ran (a
    /// persisted image): VMs of the image resume it at `resume` (CPL 3
    /// registers only; RFLAGS is masked to the status bits, see
    /// `UserRegisters`) instead of entering it at `setup.entry`. The
    /// host's system pages are written after `fill`, so nothing `fill`
    /// writes survives in them.
    pub fn build_resumed(
        size: u64,
        setup: &VmSetup<'_>,
        resume: Option<UserRegisters>,
        fill: impl FnOnce(&ImageWriter<'_>) -> Result<(), MemoryError>,
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
        fill(&ImageWriter {
            fd: fd.as_fd(),
            size,
        })?;
        let entry = {
            let mut memory = GuestMemory::map_file(fd.as_fd(), size, true)?;
            EntryState {
                resume,
                ..write_system_pages(&mut memory, setup)?
            }
            // The shared mapping goes here: F_SEAL_WRITE needs none left.
        };
        let seals =
            libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on our own memfd with an int argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(image_error("F_ADD_SEALS"));
        }
        let view = GuestMemory::map_file_readonly(fd.as_fd(), size)?;
        let slots = slot_layout(size, &all_mappings(setup));
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            fd,
            view,
            slots,
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

    /// Copies the image's bytes at guest physical address `gpa` into `out`
    /// (the image is sealed: what it holds never changes).
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        self.view.read(gpa, out)
    }

    /// The sealed memfd (for mapping it).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The image's content, read-only (see [`GuestMemory::revert`]).
    pub(crate) fn view(&self) -> &GuestMemory {
        &self.view
    }

    /// The read-only and writable slots of the guest memory.
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

#[cfg(test)]
mod tests {
    use nub_host_common::layout::{IMAGE_BASE, Region};

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
    fn slots_alternate_read_only_and_writable_runs() {
        let page = |n: u64| n * PAGE_SIZE;
        let mappings = [
            Mapping {
                region: Region {
                    start: IMAGE_BASE,
                    size: page(2),
                },
                access: Access::ReadExecute,
            },
            Mapping {
                region: Region {
                    start: IMAGE_BASE + page(2),
                    size: page(1),
                },
                access: Access::ReadWrite,
            },
            // A guard page, then more writable memory.
            Mapping {
                region: Region {
                    start: IMAGE_BASE + page(4),
                    size: page(1),
                },
                access: Access::ReadWrite,
            },
        ];
        let setup = setup(&mappings);
        let slots = slot_layout(4 << 20, &all_mappings(&setup));
        let ro = |start, size| Slot {
            start,
            size,
            readonly: true,
        };
        let rw = |start, size| Slot {
            start,
            size,
            readonly: false,
        };
        assert_eq!(
            slots,
            [
                // The null page joins the boot page; then the report page.
                ro(0, 0x2000),
                rw(0x2000, 0x1000),
                // Handlers, page tables, the code.
                ro(0x3000, IMAGE_BASE + page(2) - 0x3000),
                // Data, the guard, more data, the rest of memory.
                rw(IMAGE_BASE + page(2), (4 << 20) - IMAGE_BASE - page(2)),
            ]
        );
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
