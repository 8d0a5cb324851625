//! Identity-mapped 4-level page tables with per-page permissions.
//!
//! The tables live at [`PAGE_TABLES_GPA`], a range the guest itself does not
//! map, and never change after boot. Every guest page gets a 4 KiB entry:
//! pages no [`Mapping`] covers are not present (the null page, guard pages,
//! the page tables themselves). Leaf entries carry their permissions (NX
//! unless executable, writable only if read-write) and are created with the
//! accessed and dirty bits already set, so the CPU (or KVM's shadow MMU) never
//! has to write them back.

use nub_host_common::layout::{Access, MAX_MEMORY_SIZE, PAGE_SIZE, PAGE_TABLES_GPA, Region};
use x86_64::structures::paging::PageTableFlags as F;

use crate::memory::{GuestMemory, MemoryError};

/// A range of guest memory and the access the guest gets to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The range (page aligned).
    pub region: Region,
    /// Its permissions.
    pub access: Access,
}

/// Why the page tables could not be built.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PagingError {
    /// Guest memory is larger than one page directory can map.
    #[error("guest memory of {0:#x} bytes is larger than the page tables can map")]
    TooLarge(u64),
    /// A mapping is not page aligned or lies outside guest memory.
    #[error("mapping {0:#x?} is unaligned or outside guest memory")]
    BadMapping(Region),
    /// Writing the tables into guest memory failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

fn leaf_flags(access: Access) -> Option<F> {
    let base = F::PRESENT | F::USER_ACCESSIBLE | F::ACCESSED | F::DIRTY;
    match access {
        Access::Unmapped => None,
        Access::Read => Some(base | F::NO_EXECUTE),
        Access::ReadWrite => Some(base | F::WRITABLE | F::NO_EXECUTE),
        Access::ReadExecute => Some(base),
        Access::KernelExecute => Some(F::PRESENT | F::ACCESSED | F::DIRTY),
    }
}

/// Writes the page tables for `memory`, applying `mappings` in order (a
/// later mapping overrides an earlier one on the pages they share). Returns
/// the guest physical address of the PML4 (the CR3 value).
pub(crate) fn write_page_tables(
    memory: &mut GuestMemory,
    mappings: &[Mapping],
) -> Result<u64, PagingError> {
    let size = memory.size();
    if size > MAX_MEMORY_SIZE {
        return Err(PagingError::TooLarge(size));
    }
    let pages = size / PAGE_SIZE;
    let mut leaves = vec![0u64; pages as usize];
    for m in mappings {
        let r = m.region;
        if r.start % PAGE_SIZE != 0 || r.size % PAGE_SIZE != 0 || r.end() > size {
            return Err(PagingError::BadMapping(r));
        }
        let first = (r.start / PAGE_SIZE) as usize;
        let count = (r.size / PAGE_SIZE) as usize;
        let flags = leaf_flags(m.access);
        for (i, entry) in leaves.iter_mut().enumerate().skip(first).take(count) {
            *entry = match flags {
                Some(f) => (i as u64 * PAGE_SIZE) | f.bits(),
                None => 0,
            };
        }
    }

    let table = |n: u64| PAGE_TABLES_GPA + n * PAGE_SIZE;
    let pml4 = table(0);
    let pdpt = table(1);
    let pd = table(2);
    let upper = (F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE | F::ACCESSED).bits();
    memory.write_u64(pml4, pdpt | upper)?;
    memory.write_u64(pdpt, pd | upper)?;
    let pts = size.div_ceil(512 * PAGE_SIZE);
    for i in 0..pts {
        let pt = table(3 + i);
        memory.write_u64(pd + i * 8, pt | upper)?;
    }
    let mut bytes = Vec::with_capacity(leaves.len() * 8);
    for e in &leaves {
        bytes.extend_from_slice(&e.to_le_bytes());
    }
    memory.write(table(3), &bytes)?;
    Ok(pml4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_mappings() {
        let mut mem = GuestMemory::new(4 << 20).unwrap();
        let maps = [
            Mapping {
                region: Region {
                    start: 0x10_0000,
                    size: 0x2000,
                },
                access: Access::ReadExecute,
            },
            Mapping {
                region: Region {
                    start: 0x10_2000,
                    size: 0x1000,
                },
                access: Access::ReadWrite,
            },
            Mapping {
                region: Region {
                    start: 0x30_0000,
                    size: 0x1000,
                },
                access: Access::Read,
            },
        ];
        let cr3 = write_page_tables(&mut mem, &maps).unwrap();
        assert_eq!(cr3, PAGE_TABLES_GPA);
        let pte = |addr: u64| {
            let pt = PAGE_TABLES_GPA + 3 * PAGE_SIZE;
            mem.read_u64(pt + (addr / PAGE_SIZE) * 8).unwrap()
        };
        let nx = F::NO_EXECUTE.bits();
        let w = F::WRITABLE.bits();
        assert_eq!(pte(0), 0, "null page unmapped");
        assert_eq!(pte(PAGE_TABLES_GPA), 0, "page tables unmapped");
        assert_eq!(pte(0x10_0000) & (nx | w), 0);
        assert_eq!(pte(0x10_0000) & !0xfff & !nx, 0x10_0000);
        assert_eq!(pte(0x10_2000) & (nx | w), nx | w);
        assert_eq!(pte(0x30_0000) & (nx | w), nx);
        // The second 2 MiB is reached through the second page table.
        let pd = PAGE_TABLES_GPA + 2 * PAGE_SIZE;
        assert_eq!(
            mem.read_u64(pd + 8).unwrap() & !0xfff,
            PAGE_TABLES_GPA + 4 * PAGE_SIZE
        );
    }

    #[test]
    fn bad_mappings_are_errors() {
        let mut mem = GuestMemory::new(1 << 20).unwrap();
        let bad = Mapping {
            region: Region {
                start: 0xF_F000,
                size: 0x2000,
            },
            access: Access::Read,
        };
        assert!(matches!(
            write_page_tables(&mut mem, &[bad]),
            Err(PagingError::BadMapping(_))
        ));
    }
}
