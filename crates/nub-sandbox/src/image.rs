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
    layout::{Access, BOOT_INFO_GPA, LayoutSizes, MemoryLayout},
    resident,
};
use nub_hypervisor::{Mapping, PreparedImage, VmSetup};

use crate::{
    binary::{Digest, GuestBinary, GuestImage},
    config::{CallMode, SandboxConfiguration},
    error::Result,
};

/// What a sandbox is built from: a guest's prepared image for one
/// configuration (see the module docs), shared by every sandbox of that
/// guest and configuration and by the VMs pooled with it.
#[derive(Debug)]
pub(crate) struct SandboxImage {
    /// The guest's initial memory, page tables and entry state.
    pub(crate) prepared: Arc<nub_hypervisor::PreparedImage>,
    /// The memory layout the image was built for.
    pub(crate) layout: MemoryLayout,
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
    map: HashMap<(Digest, ImageConfig), Weak<SandboxImage>>,
    /// Most recently used last.
    recent: std::collections::VecDeque<Arc<SandboxImage>>,
}

impl ImageCache {
    /// Marks `image` the most recently used.
    fn touch(&mut self, image: &Arc<SandboxImage>) {
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
    fn of(config: &SandboxConfiguration) -> Self {
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

/// Builds the prepared image of `image` (its file bytes in `bytes`) laid
/// out as `layout`: the segments, the `BootInfo` and, for resident calls,
/// the spin count, then the host's page tables and system pages.
fn build(
    image: &GuestImage,
    bytes: &[u8],
    layout: MemoryLayout,
    config: ImageConfig,
) -> Result<SandboxImage> {
    let mut mappings = Vec::with_capacity(image.segments.len() + 8);
    for seg in &image.segments {
        mappings.push(Mapping {
            region: seg.pages(),
            access: seg.access,
        });
    }
    // The system pages (boot, report, exception handlers) are mapped by
    // the hypervisor itself.
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
    let prepared = PreparedImage::build(layout.memory_size, &setup, |memory| {
        for seg in &image.segments {
            let file = bytes.get(seg.file_range.clone()).unwrap_or(&[]);
            memory.write(seg.vaddr, file)?;
        }
        if config.flags & resident::BOOT_FLAG_RESIDENT != 0 {
            memory.write_u64(
                layout.control.start + resident::SPIN_ITERATIONS as u64,
                config.spin_polls,
            )?;
        }
        memory.write(BOOT_INFO_GPA, &info.to_bytes())
    })?;
    Ok(SandboxImage {
        prepared: Arc::new(prepared),
        layout,
    })
}

/// The image of `binary` for `config`: from the cache when a sandbox or a
/// pooled VM still holds it or it was used recently, else read, parsed,
/// laid out and built (and cached).
pub(crate) fn sandbox_image(
    binary: &GuestBinary,
    config: &SandboxConfiguration,
) -> Result<Arc<SandboxImage>> {
    let image_config = ImageConfig::of(config);
    // A prepared guest brings its digest and parse; anything else is read
    // (a file) and hashed for the cache key, and parsed only on a miss.
    let (prepared, bytes) = match binary {
        GuestBinary::Prepared(guest) => (Some(guest), None),
        other => (None, Some(other.bytes()?)),
    };
    let digest = match (prepared, &bytes) {
        (Some(guest), _) => guest.digest,
        (None, bytes) => *blake3::hash(bytes.as_deref().unwrap_or_default()).as_bytes(),
    };
    let key = (digest, image_config);
    let lock = || image_cache().lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut cache = lock();
        if let Some(image) = cache.map.get(&key).and_then(Weak::upgrade) {
            cache.touch(&image);
            return Ok(image);
        }
    }
    let parsed;
    let (image, bytes): (&GuestImage, &[u8]) = match (prepared, &bytes) {
        (Some(guest), _) => (&guest.image, &guest.bytes),
        (None, bytes) => {
            let bytes = bytes.as_deref().unwrap_or_default();
            parsed = GuestImage::parse(bytes)?;
            (&parsed, bytes)
        }
    };
    let layout = MemoryLayout::new(image.end, image_config.sizes)?;
    let built = Arc::new(build(image, bytes, layout, image_config)?);
    let mut cache = lock();
    cache.map.retain(|_, weak| weak.strong_count() > 0);
    cache.map.insert(key, Arc::downgrade(&built));
    cache.touch(&built);
    Ok(built)
}
