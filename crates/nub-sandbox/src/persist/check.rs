//! What a parsed image file means for a guest, checked before anything is
//! built from it: the ABI version, the embedded ELF (its digest, then the
//! loader's own checks), the layout this host computes for it against the
//! recorded one, every captured page inside guest-writable memory, and
//! register values a CPL 3 guest between calls can have. Pure (no KVM, no
//! memfd): the fuzz target runs it on every input that parses.

use std::sync::Arc;

use nub_host_common::{
    ABI_VERSION,
    layout::{Access, MemoryLayout, PAGE_SIZE, USER_RFLAGS, USER_RFLAGS_STATUS},
    resident::BOOT_FLAG_RESIDENT,
};
use nub_hypervisor::UserRegisters;

use super::{
    ImageError,
    format::{ImageFile, Shape},
};
use crate::{
    binary::{GuestImage, PreparedGuest},
    engine::RestPoint,
    image::{ImageConfig, Resume, persistent_pages},
};

/// Highest `BootInfo::log_level` (`log::LevelFilter::Trace`).
const MAX_LOG_LEVEL: u64 = log::LevelFilter::Trace as u64;

/// An image file checked against its guest: everything needed to build
/// its memory.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The embedded guest, parsed.
    pub(crate) guest: Arc<PreparedGuest>,
    /// The layout (equal to the recorded one).
    pub(crate) layout: MemoryLayout,
    /// The boot data the guest was booted with.
    pub(crate) config: ImageConfig,
    /// Registers and engine state to resume with.
    pub(crate) resume: Resume,
}

/// Checks `file` (see the module docs).
pub(crate) fn check(file: &ImageFile<'_>) -> Result<Checked, ImageError> {
    if file.header.abi_version != ABI_VERSION {
        return Err(ImageError::AbiVersion {
            file: file.header.abi_version,
            host: ABI_VERSION,
        });
    }
    let meta = &file.meta;
    if *blake3::hash(file.elf).as_bytes() != meta.elf_digest {
        return Err(ImageError::ElfDigest);
    }
    let guest =
        PreparedGuest::from_bytes(file.elf.to_vec(), meta.elf_digest).map_err(ImageError::Guest)?;
    let config = boot_data(meta.boot_flags, meta.log_level, meta.spin_polls, meta.shape)?;
    let layout =
        MemoryLayout::new(guest.image.end, meta.shape.sizes).map_err(|_| ImageError::Invalid {
            what: "layout sizes",
            value: meta.shape.sizes.heap,
        })?;
    compare_layout(&meta.shape, &layout)?;
    check_pages(&file.page_numbers, &guest.image, &layout)?;
    check_registers(&meta.registers, &guest.image, &layout)?;
    Ok(Checked {
        guest,
        layout,
        config,
        resume: Resume {
            registers: meta.registers,
            rest: RestPoint {
                seq: meta.resident_seq,
                last_hostcall: meta.resident_last_hostcall,
            },
            directory_va: (meta.directory_va != 0).then_some(meta.directory_va),
        },
    })
}

/// The boot data, each value one nub writes.
fn boot_data(
    flags: u32,
    log_level: u64,
    spin_polls: u64,
    shape: Shape,
) -> Result<ImageConfig, ImageError> {
    let invalid = |what, value| Err(ImageError::Invalid { what, value });
    if flags & !BOOT_FLAG_RESIDENT != 0 {
        return invalid("boot flags", flags.into());
    }
    if log_level > MAX_LOG_LEVEL {
        return invalid("log level", log_level);
    }
    let resident = flags & BOOT_FLAG_RESIDENT != 0;
    if resident != (spin_polls != 0) {
        return invalid("resident spin polls", spin_polls);
    }
    Ok(ImageConfig {
        sizes: shape.sizes,
        flags,
        log_level,
        spin_polls,
    })
}

/// The recorded layout must be the one this host lays out.
fn compare_layout(shape: &Shape, layout: &MemoryLayout) -> Result<(), ImageError> {
    let host = Shape::of(layout, shape.sizes);
    if host.memory_size != shape.memory_size {
        return Err(ImageError::Layout {
            what: "memory size",
            file: shape.memory_size,
            host: host.memory_size,
        });
    }
    for ((name, file), host) in Shape::REGION_NAMES
        .iter()
        .zip(shape.regions)
        .zip(host.regions)
    {
        if file.start != host.start {
            return Err(ImageError::Layout {
                what: name,
                file: file.start,
                host: host.start,
            });
        }
        if file.size != host.size {
            return Err(ImageError::Layout {
                what: name,
                file: file.size,
                host: host.size,
            });
        }
    }
    Ok(())
}

/// Every captured page must be one the guest itself can write.
fn check_pages(pages: &[u64], image: &GuestImage, layout: &MemoryLayout) -> Result<(), ImageError> {
    let writable = persistent_pages(image, layout);
    match pages.iter().find(|p| writable.binary_search(p).is_err()) {
        Some(&page) => Err(ImageError::PageOutsideWritable {
            gpa: page.saturating_mul(PAGE_SIZE),
        }),
        None => Ok(()),
    }
}

/// RIP in the guest's code, RSP in its stack, RFLAGS the host's with only
/// status bits changed.
pub(crate) fn check_registers(
    regs: &UserRegisters,
    image: &GuestImage,
    layout: &MemoryLayout,
) -> Result<(), ImageError> {
    let bad = |register, value, reason| {
        Err(ImageError::Register {
            register,
            value,
            reason,
        })
    };
    let in_code = image.segments.iter().any(|s| {
        s.access == Access::ReadExecute && regs.rip >= s.vaddr && regs.rip - s.vaddr < s.mem_size
    });
    if !in_code {
        return bad("rip", regs.rip, "not in the guest's code");
    }
    if regs.rsp < layout.stack.start || regs.rsp > layout.stack.end() {
        return bad("rsp", regs.rsp, "not in the guest's stack");
    }
    if regs.rflags & !USER_RFLAGS_STATUS != USER_RFLAGS {
        return bad(
            "rflags",
            regs.rflags,
            "only status flags may differ from the host's (IOPL 0, IF clear)",
        );
    }
    Ok(())
}
