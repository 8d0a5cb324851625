//! The guest's physical memory map.
//!
//! Guest memory is one contiguous range starting at guest physical address
//! 0, identity mapped (GVA = GPA). The hypervisor gives it to KVM as
//! several memory slots: read-only ones for the pages the guest never
//! writes, writable ones for the rest (one writable slot where KVM has no
//! read-only memory). The low megabyte holds fixed system pages; the ELF
//! image is linked at [`IMAGE_BASE`]; everything after the image is sized
//! by the sandbox configuration:
//!
//! ```text
//! 0x0000_0000  null guard            unmapped
//! 0x0000_1000  boot page             R, NX   BootInfo @0, IDT @0x200, GDT @0x800, TSS @0xC00
//! 0x0000_2000  report page           RW, NX  fault / panic report
//! 0x0000_3000  exception handlers    R+X, supervisor only (host-written code)
//! 0x0000_4000  page tables           unmapped (the CPU walks them physically)
//! 0x0010_0000  ELF image             per segment: R+X code, R NX rodata, RW NX data
//!              guard                 unmapped
//!              input ring            RW, NX
//!              guard                 unmapped
//!              output ring           RW, NX
//!              guard                 unmapped
//!              log buffer            RW, NX
//!              guard                 unmapped
//!              control block         RW, NX    (resident calls, one page)
//!              guard                 unmapped
//!              heap                  RW, NX
//!              guard                 unmapped
//!              IST stack (#DF)       RW, NX
//!              guard                 unmapped  (catches stack overflow)
//!              stack                 RW, NX    RSP starts at the top
//! memory end
//! ```

/// Size of a guest page.
pub const PAGE_SIZE: u64 = 4096;
/// The boot page: [`crate::boot::BootInfo`] at its start.
pub const BOOT_PAGE_GPA: u64 = 0x1000;
/// Guest address of the [`crate::boot::BootInfo`] block (passed in RDI).
pub const BOOT_INFO_GPA: u64 = BOOT_PAGE_GPA;
/// Guest address of the IDT (inside the boot page): 32 gates written by the
/// host, pointing into the exception-handler page.
pub const IDT_GPA: u64 = BOOT_PAGE_GPA + 0x200;
/// Guest address of the GDT (inside the boot page).
pub const GDT_GPA: u64 = BOOT_PAGE_GPA + 0x800;
/// Guest address of the 64-bit TSS (inside the boot page).
pub const TSS_GPA: u64 = BOOT_PAGE_GPA + 0xC00;
/// The report page (see [`crate::report`]).
pub const REPORT_PAGE_GPA: u64 = 0x2000;
/// The exception-handler page: code the host writes, mapped executable for
/// CPL 0 only. Every CPU exception lands here, records itself in the report
/// page and exits through the FAULT port.
pub const EXCEPTION_CODE_GPA: u64 = 0x3000;
/// First page-table page (the PML4); the tables follow contiguously.
pub const PAGE_TABLES_GPA: u64 = 0x4000;
/// Where guest images are linked; the page tables must end below it.
pub const IMAGE_BASE: u64 = 0x10_0000;
/// Size of the interrupt stack used by the double-fault handler.
pub const IST_STACK_SIZE: u64 = 16 * 1024;
/// GDT selector of the 64-bit kernel (CPL 0) code segment (the exception
/// handlers run here).
pub const CODE_SELECTOR: u16 = 0x08;
/// GDT selector of the kernel data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// GDT selector (with RPL 3) of the 64-bit user (CPL 3) code segment.
pub const USER_CODE_SELECTOR: u16 = 0x18 | 3;
/// GDT selector (with RPL 3) of the user data segment.
pub const USER_DATA_SELECTOR: u16 = 0x20 | 3;
/// GDT selector of the TSS.
pub const TSS_SELECTOR: u16 = 0x28;
/// RFLAGS for guest user mode: IOPL 0, interrupts off, reserved bit 1 set.
/// With IOPL 0 a CPL 3 guest may not run `cli`/`sti`/`popf` on IF, and
/// reaches only the ports the TSS I/O permission bitmap opens (the exit
/// ports; see `crates/nub-hypervisor/src/cpu.rs`).
pub const USER_RFLAGS: u64 = 0x0002;
/// The RFLAGS bits CPL 3 code changes on its own (CF, PF, AF, ZF, SF, DF,
/// OF): a guest's RFLAGS between calls is [`USER_RFLAGS`] with any of these
/// set, never anything else (no TF, IF, IOPL, AC…). What a persisted
/// image's saved RFLAGS is checked against.
pub const USER_RFLAGS_STATUS: u64 = 0x0CD5;

/// Page-table pages available between [`PAGE_TABLES_GPA`] and [`IMAGE_BASE`].
pub const MAX_PAGE_TABLE_PAGES: u64 = (IMAGE_BASE - PAGE_TABLES_GPA) / PAGE_SIZE;
/// Largest guest memory the layout supports: one PML4, one PDPT, one PD and
/// one page table per 2 MiB for the rest of the page-table area.
pub const MAX_MEMORY_SIZE: u64 = (MAX_PAGE_TABLE_PAGES - 3) * 512 * PAGE_SIZE;

/// Page-table pages needed to map `memory_size` bytes with 4 KiB pages:
/// PML4, PDPT, PD and one page table per 2 MiB.
pub const fn page_table_pages(memory_size: u64) -> u64 {
    3 + memory_size.div_ceil(512 * PAGE_SIZE)
}

/// Sizes that shape the layout, all in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayoutSizes {
    /// Guest heap.
    pub heap: u64,
    /// Guest stack (the page below it is a guard page).
    pub stack: u64,
    /// Input ring (host to guest), header included.
    pub input_ring: u64,
    /// Output ring (guest to host), header included.
    pub output_ring: u64,
    /// Guest log buffer, header included (see [`crate::log_buffer`]).
    pub log_buffer: u64,
}

/// Access a mapped region grants the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not mapped at all.
    Unmapped,
    /// Read only, not executable.
    Read,
    /// Read and write, not executable.
    ReadWrite,
    /// Read and execute.
    ReadExecute,
    /// Read and execute at CPL 0 only (the host's exception handlers).
    KernelExecute,
}

/// A page-aligned range of guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte (guest address).
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Whether `[addr, addr + len)` lies inside the region.
    pub const fn contains_range(&self, addr: u64, len: u64) -> bool {
        match addr.checked_add(len) {
            Some(end) => addr >= self.start && end <= self.end(),
            None => false,
        }
    }
}

/// Why a layout cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// A size is zero, not page aligned, or too small for its use.
    BadSize {
        /// Which size.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// The image ends below [`IMAGE_BASE`] or the sum overflows.
    BadImage,
    /// The total exceeds [`MAX_MEMORY_SIZE`].
    TooLarge {
        /// The size that would be needed.
        needed: u64,
        /// The maximum supported.
        max: u64,
    },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadSize { what, value } => write!(
                f,
                "{what} size {value:#x} must be a non-zero multiple of 4 KiB and large enough"
            ),
            Self::BadImage => write!(f, "guest image extent is invalid"),
            Self::TooLarge { needed, max } => write!(
                f,
                "guest memory of {needed:#x} bytes exceeds the supported maximum of {max:#x}"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

/// The full memory map of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    /// The ELF image, from [`IMAGE_BASE`] to its last segment, page aligned.
    pub image: Region,
    /// Host-to-guest ring.
    pub input_ring: Region,
    /// Guest-to-host ring.
    pub output_ring: Region,
    /// Guest log buffer.
    pub log_buffer: Region,
    /// Resident-call control block (one page; see [`crate::resident`]).
    pub control: Region,
    /// Guest heap.
    pub heap: Region,
    /// Exception stack: RSP0 (exceptions from CPL 3) and IST1 (double fault).
    pub ist_stack: Region,
    /// Main stack; the page below it is unmapped.
    pub stack: Region,
    /// Total guest memory (one contiguous range from GPA 0).
    pub memory_size: u64,
}

fn checked_size(what: &'static str, value: u64, min: u64) -> Result<u64, LayoutError> {
    if value < min || !value.is_multiple_of(PAGE_SIZE) {
        return Err(LayoutError::BadSize { what, value });
    }
    Ok(value)
}

impl MemoryLayout {
    /// Builds the layout for an image whose segments end at `image_end`.
    pub fn new(image_end: u64, sizes: LayoutSizes) -> Result<Self, LayoutError> {
        let heap = checked_size("heap", sizes.heap, PAGE_SIZE)?;
        let stack = checked_size("stack", sizes.stack, PAGE_SIZE)?;
        let input = checked_size("input ring", sizes.input_ring, PAGE_SIZE)?;
        let output = checked_size("output ring", sizes.output_ring, PAGE_SIZE)?;
        let log = checked_size("log buffer", sizes.log_buffer, PAGE_SIZE)?;
        if image_end <= IMAGE_BASE {
            return Err(LayoutError::BadImage);
        }
        let image_end = crate::align_up(image_end, PAGE_SIZE).ok_or(LayoutError::BadImage)?;

        let too_large = LayoutError::TooLarge {
            needed: u64::MAX,
            max: MAX_MEMORY_SIZE,
        };
        let mut cursor = image_end;
        // Each region is preceded by one unmapped guard page.
        let mut next = |size: u64| -> Result<Region, LayoutError> {
            let start = cursor.checked_add(PAGE_SIZE).ok_or(too_large)?;
            cursor = start.checked_add(size).ok_or(too_large)?;
            Ok(Region { start, size })
        };
        let input_ring = next(input)?;
        let output_ring = next(output)?;
        let log_buffer = next(log)?;
        let control = next(PAGE_SIZE)?;
        let heap = next(heap)?;
        let ist_stack = next(IST_STACK_SIZE)?;
        let stack = next(stack)?;
        let memory_size = stack.end();
        if memory_size > MAX_MEMORY_SIZE {
            return Err(LayoutError::TooLarge {
                needed: memory_size,
                max: MAX_MEMORY_SIZE,
            });
        }
        Ok(Self {
            image: Region {
                start: IMAGE_BASE,
                size: image_end - IMAGE_BASE,
            },
            input_ring,
            output_ring,
            log_buffer,
            control,
            heap,
            ist_stack,
            stack,
            memory_size,
        })
    }

    /// The fixed system pages and the configured regions, in address order,
    /// with the access the guest gets (the image is listed as one region; its
    /// pages follow the ELF segment flags).
    pub fn regions(&self) -> [(&'static str, Region, Access); 13] {
        let page = |start| Region {
            start,
            size: PAGE_SIZE,
        };
        [
            ("null guard", page(0), Access::Unmapped),
            (
                "boot info, IDT, GDT, TSS",
                page(BOOT_PAGE_GPA),
                Access::Read,
            ),
            ("report page", page(REPORT_PAGE_GPA), Access::ReadWrite),
            (
                "exception handlers",
                page(EXCEPTION_CODE_GPA),
                Access::KernelExecute,
            ),
            (
                "page tables",
                Region {
                    start: PAGE_TABLES_GPA,
                    size: self.page_table_pages() * PAGE_SIZE,
                },
                Access::Unmapped,
            ),
            ("guest image", self.image, Access::ReadExecute),
            ("input ring", self.input_ring, Access::ReadWrite),
            ("output ring", self.output_ring, Access::ReadWrite),
            ("log buffer", self.log_buffer, Access::ReadWrite),
            ("control block", self.control, Access::ReadWrite),
            ("heap", self.heap, Access::ReadWrite),
            ("exception stack", self.ist_stack, Access::ReadWrite),
            ("stack", self.stack, Access::ReadWrite),
        ]
    }

    /// Page-table pages needed to map the whole memory: PML4, PDPT, PD and
    /// one page table per 2 MiB.
    pub fn page_table_pages(&self) -> u64 {
        page_table_pages(self.memory_size)
    }

    /// Whether `addr` falls in the guard page just below the stack.
    pub fn is_stack_guard(&self, addr: u64) -> bool {
        addr < self.stack.start && addr >= self.stack.start - PAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: LayoutSizes = LayoutSizes {
        heap: 0x10_0000,
        stack: 0x2_0000,
        input_ring: 0x1_0000,
        output_ring: 0x1_0000,
        log_buffer: 0x4000,
    };

    #[test]
    fn regions_are_ordered_guarded_and_aligned() {
        let l = MemoryLayout::new(IMAGE_BASE + 0x1234, SIZES).unwrap();
        assert_eq!(l.image.end(), IMAGE_BASE + 0x2000);
        let rs = [
            l.input_ring,
            l.output_ring,
            l.log_buffer,
            l.control,
            l.heap,
            l.ist_stack,
            l.stack,
        ];
        let mut prev_end = l.image.end();
        for r in rs {
            assert_eq!(r.start, prev_end + PAGE_SIZE, "one guard page before {r:?}");
            assert_eq!(r.start % PAGE_SIZE, 0);
            prev_end = r.end();
        }
        assert_eq!(l.memory_size, l.stack.end());
        assert!(l.is_stack_guard(l.stack.start - 1));
        assert!(!l.is_stack_guard(l.stack.start));
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut s = SIZES;
        s.heap = 100;
        assert!(matches!(
            MemoryLayout::new(IMAGE_BASE + 1, s),
            Err(LayoutError::BadSize { what: "heap", .. })
        ));
        assert_eq!(
            MemoryLayout::new(IMAGE_BASE, SIZES),
            Err(LayoutError::BadImage)
        );
        s = SIZES;
        s.heap = MAX_MEMORY_SIZE;
        assert!(matches!(
            MemoryLayout::new(IMAGE_BASE + 1, s),
            Err(LayoutError::TooLarge { .. })
        ));
        s.heap = !(PAGE_SIZE - 1);
        assert!(matches!(
            MemoryLayout::new(IMAGE_BASE + 1, s),
            Err(LayoutError::TooLarge { .. })
        ));
    }

    #[test]
    fn page_tables_fit_below_image() {
        // PML4 + PDPT + PD + one PT per 2 MiB.
        let pts = MAX_MEMORY_SIZE.div_ceil(512 * PAGE_SIZE);
        assert!(PAGE_TABLES_GPA + (3 + pts) * PAGE_SIZE <= IMAGE_BASE);
        const { assert!(MAX_MEMORY_SIZE <= 1 << 30, "one page directory covers it") };
    }
}
