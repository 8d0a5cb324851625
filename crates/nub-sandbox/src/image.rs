//! What a sandbox is built from, in one place: configuration → image →
//! cache. [`ImageConfig::of`] picks what of a configuration shapes a
//! guest's initial memory; [`build`] lays the parsed guest out
//! ([`crate::binary`]) and writes its segments, the `BootInfo` and the
//! resident spin count into a prepared image (`nub_hypervisor::image`: the
//! guest's whole initial memory in a sealed memfd) that every sandbox of
//! that binary and configuration maps copy-on-write; [`sandbox_image`]
//! keeps the images in a process-wide cache keyed by the ELF's blake3
//! digest and the configuration (alive while used, and the last few used).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use nub_host_common::{
    boot::BootInfo,
    layout::{Access, BOOT_INFO_GPA, LayoutSizes, MemoryLayout, PAGE_SIZE},
    resident,
};
use nub_hypervisor::{Mapping, PreparedImage, UserRegisters, VmSetup};

use crate::{
    binary::{Digest, GuestBinary, GuestImage, PreparedGuest},
    config::{CallMode, SandboxConfiguration},
    engine::RestPoint,
    error::Result,
};

/// What a sandbox is built from: a guest's prepared image for one
/// configuration (see the module docs), shared by every sandbox of that
/// guest and configuration and by the VMs pooled with it. A persisted
/// image ([`crate::persist`]) is one too, whose memory also holds the
/// captured pages and whose vCPU resumes the guest where it rested.
#[derive(Debug)]
pub(crate) struct MemoryImage {
    /// The guest's initial memory, page tables and entry state.
    pub(crate) prepared: Arc<nub_hypervisor::PreparedImage>,
    /// The memory layout the image was built for.
    pub(crate) layout: MemoryLayout,
    /// The guest it was built from (kept for capturing images of it).
    pub(crate) guest: Arc<PreparedGuest>,
    /// What of the configuration shaped it.
    pub(crate) config: ImageConfig,
    /// Where a persisted image's guest rests; `None` for a boot image.
    pub(crate) resume: Option<Resume>,
    /// The page numbers a persisted image carries on top of the boot image
    /// (ascending; empty for a boot image).
    pub(crate) carried: Vec<u64>,
}

/// A persisted image's resting state beyond its memory: the vCPU's CPL 3
/// registers and what the host side of the call mode resumes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Registers at the resting point (checked, see `persist::check`).
    pub(crate) registers: UserRegisters,
    /// The resident engine's sequence numbers (zero in exit mode).
    pub(crate) rest: RestPoint,
    /// The guest directory's address as the guest reported it (untrusted).
    pub(crate) directory_va: Option<u64>,
}

/// The pages a persisted image adds on top of its guest's boot image:
/// `pages` holds 4096 bytes for each of `page_numbers`, in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Overlay<'a> {
    pub(crate) resume: Resume,
    pub(crate) page_numbers: &'a [u64],
    pub(crate) pages: &'a [u8],
}

/// What in a configuration shapes the initial memory: the layout sizes and
/// the boot data (`BootInfo` flags and log level, the resident spin
/// count). Deadlines and the pool setting do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ImageConfig {
    /// The layout sizes.
    pub(crate) sizes: LayoutSizes,
    /// `BootInfo::flags`.
    pub(crate) flags: u32,
    /// `BootInfo::log_level`.
    pub(crate) log_level: u64,
    /// Polls the resident guest spins before parking (0 in exit mode).
    pub(crate) spin_polls: u64,
}

/// Images the cache keeps alive after their last sandbox and pooled VM
/// are gone, most recently used first out of the way: without them a
/// sandbox built after the previous one was dropped (pool off, or pool
/// full) would build the image again (~250 µs). Each costs the image's
/// written pages (the ELF's segments and the system pages, ~250 KiB for
/// the default guest) in the page cache.
const KEEP_RECENT: usize = 8;

/// Built images by (ELF digest, configuration): an entry lives as long as
/// a sandbox or a pooled VM holds its image, or while it is among the
/// [`KEEP_RECENT`] most recently used.
#[derive(Default)]
struct ImageCache {
    map: HashMap<(Digest, ImageConfig), Weak<MemoryImage>>,
    /// Most recently used last.
    recent: std::collections::VecDeque<Arc<MemoryImage>>,
}

impl ImageCache {
    /// Marks `image` the most recently used.
    fn touch(&mut self, image: &Arc<MemoryImage>) {
        if let Some(i) = self.recent.iter().position(|r| Arc::ptr_eq(r, image)) {
            self.recent.remove(i);
        }
        self.recent.push_back(Arc::clone(image));
        while self.recent.len() > KEEP_RECENT {
            self.recent.pop_front();
        }
    }
}

fn image_cache() -> &'static Mutex<ImageCache> {
    static CACHE: std::sync::OnceLock<Mutex<ImageCache>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(ImageCache::default()))
}

impl ImageConfig {
    /// What of `config` shapes a guest's initial memory.
    pub(crate) fn of(config: &SandboxConfiguration) -> Self {
        let (flags, spin_polls) = match config.call_mode {
            CallMode::Exit => (0, 0),
            CallMode::Resident { spin } => (
                resident::BOOT_FLAG_RESIDENT,
                crate::engine::resident::spin_iterations(spin),
            ),
        };
        ImageConfig {
            sizes: config.layout_sizes(),
            flags,
            log_level: config.guest_log_level as u64,
            spin_polls,
        }
    }
}

/// What the guest of `image` laid out as `layout` may access: its
/// segments, then the layout's regions (the system pages, boot, report and
/// exception handlers, are the hypervisor's own).
fn mappings(image: &GuestImage, layout: &MemoryLayout) -> Vec<Mapping> {
    let mut mappings = Vec::with_capacity(image.segments.len() + 8);
    for seg in &image.segments {
        mappings.push(Mapping {
            region: seg.pages(),
            access: seg.access,
        });
    }
    for region in [
        layout.input_ring,
        layout.output_ring,
        layout.log_buffer,
        layout.control,
        layout.heap,
        layout.ist_stack,
        layout.stack,
    ] {
        mappings.push(Mapping {
            region,
            access: Access::ReadWrite,
        });
    }
    mappings
}

/// The guest page numbers a persisted image may carry, ascending: every
/// page the guest can write at CPL 3 (its writable segments, the rings,
/// the log buffer, the control block, the heap and the stack, a later
/// mapping overriding an earlier one as the page tables do) except the
/// IST stack, which only the host's exception handlers use.
pub(crate) fn persistent_pages(image: &GuestImage, layout: &MemoryLayout) -> Vec<u64> {
    let pages = usize::try_from(layout.memory_size / PAGE_SIZE).unwrap_or(0);
    let mut writable = vec![false; pages];
    for m in mappings(image, layout) {
        let first = usize::try_from(m.region.start / PAGE_SIZE).unwrap_or(usize::MAX);
        let count = usize::try_from(m.region.size / PAGE_SIZE).unwrap_or(0);
        for page in writable.iter_mut().skip(first).take(count) {
            *page = m.access == Access::ReadWrite;
        }
    }
    let ist = layout.ist_stack.start / PAGE_SIZE..layout.ist_stack.end() / PAGE_SIZE;
    (0u64..)
        .zip(writable)
        .filter(|&(page, w)| w && !ist.contains(&page))
        .map(|(page, _)| page)
        .collect()
}

/// Builds the prepared image of `guest` laid out as `layout`: the
/// segments, the `BootInfo` and, for resident calls, the spin count; then
/// a persisted image's pages (`overlay`, each checked to be a persistent
/// page by the caller); then the host's page tables and system pages.
pub(crate) fn build(
    guest: &Arc<PreparedGuest>,
    layout: MemoryLayout,
    config: ImageConfig,
    overlay: Option<Overlay<'_>>,
) -> Result<MemoryImage> {
    let image = &guest.image;
    let mappings = mappings(image, &layout);
    let info = BootInfo::for_layout(&layout, config.flags, config.log_level);
    let setup = VmSetup {
        mappings: &mappings,
        entry: image.entry,
        // SysV: at a function's entry RSP + 8 is 16-byte aligned.
        stack_pointer: layout.stack.end() - 8,
        ist_stack_top: layout.ist_stack.end(),
        boot_info: BOOT_INFO_GPA,
        // Guests run at CPL 3 from their first instruction: kvm_pvm
        // emulates CPL 0 code, and the host provides the IDT.
        user_mode: true,
    };
    let resume = overlay.map(|o| o.resume);
    let carried = overlay.map(|o| o.page_numbers.to_vec()).unwrap_or_default();
    let registers = resume.map(|r| r.registers);
    let prepared = PreparedImage::build_resumed(layout.memory_size, &setup, registers, |memory| {
        for seg in &image.segments {
            let file = guest.bytes.get(seg.file_range.clone()).unwrap_or(&[]);
            memory.write(seg.vaddr, file)?;
        }
        memory.write(BOOT_INFO_GPA, &info.to_bytes())?;
        if let Some(overlay) = overlay {
            let pages = overlay.pages.chunks_exact(PAGE_SIZE as usize);
            for (&number, page) in overlay.page_numbers.iter().zip(pages) {
                memory.write(number.saturating_mul(PAGE_SIZE), page)?;
            }
        }
        if config.flags & resident::BOOT_FLAG_RESIDENT != 0 {
            let control = layout.control.start;
            // The host's own words, whatever a persisted page said.
            let rest = resume.map(|r| r.rest).unwrap_or_default();
            for (at, value) in [
                (
                    control + resident::SPIN_ITERATIONS as u64,
                    config.spin_polls,
                ),
                (control + resident::HOST_WAITING as u64, 0),
                (
                    control + resident::HOSTCALL_RESPONSE as u64,
                    rest.last_hostcall,
                ),
                (
                    layout.input_ring.start + resident::DOORBELL as u64,
                    rest.seq,
                ),
            ] {
                memory.write_u64(at, value)?;
            }
        }
        Ok(())
    })?;
    Ok(MemoryImage {
        prepared: Arc::new(prepared),
        layout,
        guest: Arc::clone(guest),
        config,
        resume,
        carried,
    })
}

/// The image of `binary` for `config`: from the cache when a sandbox or a
/// pooled VM still holds it or it was used recently, else read, parsed,
/// laid out and built (and cached).
pub(crate) fn sandbox_image(
    binary: &GuestBinary,
    config: &SandboxConfiguration,
) -> Result<Arc<MemoryImage>> {
    let image_config = ImageConfig::of(config);
    // A prepared guest brings its digest and parse; anything else is read
    // (a file) and hashed for the cache key, and parsed only on a miss.
    let (prepared, bytes) = match binary {
        GuestBinary::Prepared(guest) => (Some(guest), None),
        other => (None, Some(other.bytes()?)),
    };
    let digest = match (prepared, binary, &bytes) {
        (Some(guest), _, _) => guest.digest,
        (None, GuestBinary::Static(elf), _) => static_digest(elf),
        (None, _, bytes) => *blake3::hash(bytes.as_deref().unwrap_or_default()).as_bytes(),
    };
    if let Some(image) = cached(digest, image_config) {
        return Ok(image);
    }
    let guest = match (prepared, bytes) {
        (Some(guest), _) => Arc::clone(guest),
        (None, bytes) => PreparedGuest::from_bytes(binary.keep(bytes.unwrap_or_default()), digest)?,
    };
    boot_image(&guest, image_config)
}

/// The digest of a [`GuestBinary::Static`] ELF, hashed once per process:
/// a `&'static [u8]` is never written nor freed, so its address and length
/// name its bytes for the program's whole life. At most
/// [`STATIC_DIGESTS`] slices are remembered (a program that leaks more is
/// hashed each time).
fn static_digest(elf: &'static [u8]) -> Digest {
    static MEMO: Mutex<Vec<((usize, usize), Digest)>> = Mutex::new(Vec::new());
    let key = (elf.as_ptr() as usize, elf.len());
    let found = {
        let memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        memo.iter().find(|(k, _)| *k == key).map(|(_, d)| *d)
    };
    if let Some(digest) = found {
        return digest;
    }
    let digest = *blake3::hash(elf).as_bytes();
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if memo.len() < STATIC_DIGESTS && !memo.iter().any(|(k, _)| *k == key) {
        memo.push((key, digest));
    }
    digest
}

/// How many [`GuestBinary::Static`] digests [`static_digest`] remembers.
const STATIC_DIGESTS: usize = 64;

/// The cached boot image of the guest with `digest` for `config`.
fn cached(digest: Digest, config: ImageConfig) -> Option<Arc<MemoryImage>> {
    let mut cache = image_cache().lock().unwrap_or_else(|e| e.into_inner());
    let image = cache.map.get(&(digest, config)).and_then(Weak::upgrade)?;
    cache.touch(&image);
    Some(image)
}

/// The boot image of `guest` for `config`, from the cache or built (and
/// cached).
pub(crate) fn boot_image(
    guest: &Arc<PreparedGuest>,
    config: ImageConfig,
) -> Result<Arc<MemoryImage>> {
    if let Some(image) = cached(guest.digest, config) {
        return Ok(image);
    }
    let layout = MemoryLayout::new(guest.image.end, config.sizes)?;
    let built = Arc::new(build(guest, layout, config, None)?);
    let mut cache = image_cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.map.retain(|_, weak| weak.strong_count() > 0);
    cache
        .map
        .insert((guest.digest, config), Arc::downgrade(&built));
    cache.touch(&built);
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    static ONE: &[u8] = b"an ELF that never changes";
    static TWIN: &[u8] = b"an ELF that never changes!";

    #[test]
    fn a_static_binary_is_hashed_by_its_bytes_and_remembered_by_its_address() {
        for _ in 0..2 {
            assert_eq!(static_digest(ONE), *blake3::hash(ONE).as_bytes());
        }
        // Another slice (here a prefix of another static: same address,
        // other length) is another key.
        let prefix: &'static [u8] = &TWIN[..ONE.len()];
        assert_eq!(static_digest(prefix), *blake3::hash(prefix).as_bytes());
        assert_eq!(static_digest(TWIN), *blake3::hash(TWIN).as_bytes());
    }
}
