//! Persisted images: a booted, initialized sandbox saved between calls
//! and loaded again, in this process or another, as many times as wanted
//! (docs/images.md).
//!
//! - [`MultiUseSandbox::capture_image`] takes a [`SandboxImage`] of a
//!   sandbox at rest: the guest-writable pages that differ from the boot
//!   image, the CPL 3 registers, the resident engine's sequence numbers,
//!   the host function ids it was booted with, and what shapes its memory;
//!   [`SandboxImage::save`] writes it ([`format`]).
//! - [`SandboxImage::load`] reads a file, checks it ([`format`] for the
//!   bytes, `check` for what they mean) and builds its memory once: a
//!   sealed prepared image holding the guest's boot image with the
//!   captured pages on top, and the host's own page tables and system
//!   pages, which a file never supplies.
//! - [`MultiUseSandbox::from_image`] starts a sandbox from it: a VM from
//!   the pool reset to the image (or a new one mapping it copy-on-write),
//!   no boot; the guest continues where it rested.
//!
//! [`MultiUseSandbox::capture_image`]: crate::MultiUseSandbox::capture_image
//! [`MultiUseSandbox::from_image`]: crate::MultiUseSandbox::from_image

use std::{io::Write, path::Path, sync::Arc, time::Duration};

use nub_host_common::layout::{MemoryLayout, PAGE_SIZE};

use crate::{
    config::{CallMode, SandboxConfiguration},
    error::{HyperlightError, Result},
    exec::GuestVm,
    image::{self, MemoryImage, Overlay, Resume},
};

mod check;
pub mod format;

pub use crate::error::ImageError;
pub use format::{Header, ImageFile, Meta, Shape};
pub use nub_hypervisor::UserRegisters;

/// Largest image file [`SandboxImage::load`] reads: the header, the
/// metadata, the largest guest ELF and every page of the largest guest.
const MAX_FILE_SIZE: u64 = (128 << 20) + nub_host_common::layout::MAX_MEMORY_SIZE;

/// A saved, initialized sandbox: what [`MultiUseSandbox::capture_image`]
/// took or [`SandboxImage::load`] read, with its memory built, ready for
/// any number of [`MultiUseSandbox::from_image`]. Share it in an `Arc`;
/// every sandbox from it maps the same sealed memory copy-on-write.
///
/// [`MultiUseSandbox::capture_image`]: crate::MultiUseSandbox::capture_image
/// [`MultiUseSandbox::from_image`]: crate::MultiUseSandbox::from_image
#[derive(Debug)]
pub struct SandboxImage {
    memory: Arc<MemoryImage>,
    info: ImageInfo,
}

/// What an image holds, beside its pages (`nub info --image` prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The host/guest ABI version of the guest.
    pub abi_version: u32,
    /// The nub version that captured it.
    pub nub_version: String,
    /// Layout, boot data, resting registers and engine state.
    pub meta: Meta,
    /// Host function ids the guest was booted with: register these on a
    /// sandbox from the image before calling what uses them.
    pub host_functions: Vec<u32>,
    /// Guest pages carried (those that differed from the boot image).
    pub page_count: usize,
    /// Bytes of the embedded guest ELF.
    pub elf_size: usize,
}

impl ImageInfo {
    /// The guest's own log filter, set at its boot (`None` for a value no
    /// nub writes; [`inspect`] and [`SandboxImage::load`] refuse those).
    pub fn guest_log_level(&self) -> Option<log::LevelFilter> {
        level_filter(self.meta.log_level)
    }

    /// The call mode the guest was booted in (and its spin window).
    pub fn call_mode(&self) -> CallMode {
        if self.meta.boot_flags & nub_host_common::resident::BOOT_FLAG_RESIDENT == 0 {
            CallMode::Exit
        } else {
            CallMode::Resident {
                spin: Duration::from_nanos(self.meta.spin_nanos),
            }
        }
    }
}

/// Reads the header and metadata of an image file and checks it against
/// its guest, building nothing (no KVM, no memory): what `nub info --image`
/// and the fuzz target run. The errors are [`SandboxImage::load`]'s.
pub fn inspect(bytes: &[u8]) -> std::result::Result<ImageInfo, ImageError> {
    let file = ImageFile::parse(bytes)?;
    check::check(&file)?;
    Ok(info_of(&file))
}

fn info_of(file: &ImageFile<'_>) -> ImageInfo {
    ImageInfo {
        abi_version: file.header.abi_version,
        nub_version: file.header.nub_version.clone(),
        meta: file.meta,
        host_functions: file.host_functions.clone(),
        page_count: file.page_numbers.len(),
        elf_size: file.elf.len(),
    }
}

/// The mode's name in errors.
fn mode_name(mode: CallMode) -> &'static str {
    match mode {
        CallMode::Exit => "exit",
        CallMode::Resident { .. } => "resident",
    }
}

impl SandboxImage {
    /// Reads the image file at `path`, checks it (magic, format and ABI
    /// versions, the blake3 digest of its content, the embedded ELF, the
    /// layout, every page and register: each mismatch a typed
    /// [`ImageError`] naming it) and builds its memory. Nothing of the file
    /// is used after this returns: it may change or go away.
    pub fn load(path: impl AsRef<Path>) -> Result<Arc<Self>> {
        let path = path.as_ref();
        let io = |op, source| ImageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| io("read", e))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE_SIZE), &mut bytes)
            .map_err(|e| io("read", e))?;
        Self::from_bytes(&bytes)
    }

    /// [`SandboxImage::load`] from bytes already in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Arc<Self>> {
        let file = ImageFile::parse(bytes)?;
        let checked = check::check(&file)?;
        let overlay = Overlay {
            resume: checked.resume,
            page_numbers: &file.page_numbers,
            pages: file.pages,
        };
        let memory = image::build(
            &checked.guest,
            checked.layout,
            checked.config,
            Some(overlay),
        )?;
        Ok(Arc::new(Self {
            memory: Arc::new(memory),
            info: info_of(&file),
        }))
    }

    /// Writes the image to `path` (a temporary file beside it, renamed
    /// over `path` once complete, so a reader never sees half a file).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io = |op, source| ImageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp_name);
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write", e).into());
        }
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            HyperlightError::from(io("rename", e))
        })
    }

    /// The image file's bytes ([`format`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let page = PAGE_SIZE as usize;
        // The pages this image carries, read back from its sealed memory.
        let numbers = &self.memory.carried;
        let mut pages = vec![0u8; numbers.len() * page];
        for (&number, out) in numbers.iter().zip(pages.chunks_exact_mut(page)) {
            self.memory
                .prepared
                .read(number * PAGE_SIZE, out)
                .map_err(HyperlightError::from)?;
        }
        let listed = numbers.iter().copied().zip(pages.chunks_exact(page));
        Ok(ImageFile::encode(
            &self.info.meta,
            &self.info.host_functions,
            &self.memory.guest.bytes,
            listed,
        )?)
    }

    /// What the image holds.
    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    /// The memory layout every sandbox from the image has.
    pub fn layout(&self) -> &MemoryLayout {
        &self.memory.layout
    }

    /// Host function ids the guest was booted with (see
    /// [`ImageInfo::host_functions`]).
    pub fn required_host_functions(&self) -> &[u32] {
        &self.info.host_functions
    }

    /// The configuration a sandbox from the image gets when
    /// [`MultiUseSandbox::from_image`](crate::MultiUseSandbox::from_image)
    /// is given none: the image's sizes, call mode and log level, the
    /// defaults for the rest.
    pub fn configuration(&self) -> SandboxConfiguration {
        let sizes = self.info.meta.shape.sizes;
        SandboxConfiguration {
            heap_size: sizes.heap,
            stack_size: sizes.stack,
            input_ring_size: sizes.input_ring,
            output_ring_size: sizes.output_ring,
            log_buffer_size: sizes.log_buffer,
            call_mode: self.info.call_mode(),
            guest_log_level: self.info.guest_log_level().unwrap_or(log::LevelFilter::Off),
            ..SandboxConfiguration::default()
        }
    }

    /// `config` made to fit the image: its runtime settings (deadlines,
    /// the pool, the resident spin window on the host's side) are kept,
    /// what shapes memory (sizes, log level) is the image's, and its call
    /// mode must be the image's.
    pub(crate) fn fit(&self, config: Option<SandboxConfiguration>) -> Result<SandboxConfiguration> {
        let ours = self.configuration();
        let Some(config) = config else {
            return Ok(ours);
        };
        let compatible = matches!(
            (ours.call_mode, config.call_mode),
            (CallMode::Exit, CallMode::Exit)
                | (CallMode::Resident { .. }, CallMode::Resident { .. })
        );
        if !compatible {
            return Err(ImageError::CallMode {
                image: mode_name(ours.call_mode),
                config: mode_name(config.call_mode),
            }
            .into());
        }
        Ok(SandboxConfiguration {
            max_execution_time: config.max_execution_time,
            max_boot_time: config.max_boot_time,
            call_mode: config.call_mode,
            vm_pool: config.vm_pool,
            ..ours
        })
    }

    /// The memory every sandbox from the image maps.
    pub(crate) fn memory(&self) -> &Arc<MemoryImage> {
        &self.memory
    }
}

/// `BootInfo::log_level` back to its filter.
fn level_filter(level: u64) -> Option<log::LevelFilter> {
    log::LevelFilter::iter().find(|l| *l as u64 == level)
}

/// How long a capture waits for a resident guest to park: its spin
/// window, four times over, and a second for a busy machine (a guest that
/// never parks is stopped by the park watch sooner than that).
fn rest_wait(mode: CallMode) -> Duration {
    match mode {
        CallMode::Exit => Duration::ZERO,
        CallMode::Resident { spin } => spin.saturating_mul(4) + Duration::from_secs(1),
    }
}

/// Captures `guest` at rest (see [`MultiUseSandbox::capture_image`]):
/// `host_functions` are the ids registered on the sandbox,
/// `directory_va` the guest directory's address it reported.
///
/// [`MultiUseSandbox::capture_image`]: crate::MultiUseSandbox::capture_image
pub(crate) fn capture(
    guest: &mut GuestVm,
    host_functions: Vec<u32>,
    directory_va: Option<u64>,
) -> Result<Arc<SandboxImage>> {
    let current = Arc::clone(guest.image());
    let prepared_guest = Arc::clone(&current.guest);
    let layout = current.layout;
    let config = current.config;
    // Pages are kept when they differ from the boot image, whatever image
    // the sandbox itself came from (a sandbox loaded from an image is
    // captured whole again).
    let boot = image::boot_image(&prepared_guest, config)?;
    let persistent = image::persistent_pages(&prepared_guest.image, &layout);
    let page = PAGE_SIZE as usize;
    let mut page_numbers = Vec::new();
    let mut pages = Vec::new();
    let mut registers = None;
    let mode = guest.config.call_mode;
    let rest = guest.at_rest(rest_wait(mode), &mut |vm| {
        registers = Some(vm.user_registers()?);
        let memory = vm.memory();
        // Only pages this VM wrote, or its image carried, can differ from
        // the boot image: reading the others would fault them in for
        // nothing. Without a page map, every persistent page is compared.
        let candidates = match memory.private_pages() {
            Some(mut written) => {
                written.extend_from_slice(&current.carried);
                written.sort_unstable();
                written.dedup();
                written.retain(|p| persistent.binary_search(p).is_ok());
                written
            }
            None => persistent.clone(),
        };
        let mut live = vec![0u8; page];
        let mut original = vec![0u8; page];
        for &number in &candidates {
            memory.read(number * PAGE_SIZE, &mut live)?;
            boot.prepared.read(number * PAGE_SIZE, &mut original)?;
            if live != original {
                page_numbers.push(number);
                pages.extend_from_slice(&live);
            }
        }
        Ok(())
    })?;
    let registers = registers.ok_or(ImageError::Internal("no registers captured"))?;
    // Our own vCPU's registers, checked as a file's would be: a guest that
    // rested somewhere odd is refused now, not on every load.
    check::check_registers(&registers, &prepared_guest.image, &layout)?;
    let resume = Resume {
        registers,
        rest,
        directory_va,
    };
    let memory = image::build(
        &prepared_guest,
        layout,
        config,
        Some(Overlay {
            resume,
            page_numbers: &page_numbers,
            pages: &pages,
        }),
    )?;
    let spin_nanos = match mode {
        CallMode::Exit => 0,
        CallMode::Resident { spin } => u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX),
    };
    let info = ImageInfo {
        abi_version: nub_host_common::ABI_VERSION,
        nub_version: env!("CARGO_PKG_VERSION").into(),
        meta: Meta {
            elf_digest: prepared_guest.digest,
            shape: Shape::of(&layout, config.sizes),
            boot_flags: config.flags,
            log_level: config.log_level,
            spin_polls: config.spin_polls,
            spin_nanos,
            resident_seq: rest.seq,
            resident_last_hostcall: rest.last_hostcall,
            directory_va: directory_va.unwrap_or(0),
            registers,
        },
        host_functions,
        page_count: page_numbers.len(),
        elf_size: prepared_guest.bytes.len(),
    };
    Ok(Arc::new(SandboxImage {
        memory: Arc::new(memory),
        info,
    }))
}

impl From<ImageError> for HyperlightError {
    fn from(e: ImageError) -> Self {
        Self::Image(e)
    }
}
