//! [`GuestBinary`] and the ELF loader.
//!
//! Guests are static `x86_64` ELF executables linked at
//! [`IMAGE_BASE`] by `nub-guest.ld`.
//! The loader reads at most [`MAX_GUEST_BINARY_SIZE`] bytes (a file's size
//! is checked with its metadata before it is read) and parses only the ELF
//! header and the program headers (goblin); section headers, symbols and
//! everything else in the file are never looked at. It checks every header
//! field it uses: machine, class, type, the program-header entry size, that
//! each `PT_LOAD` lies inside the file and inside the image area, that
//! segments do not share pages, and that none is both writable and
//! executable. Each segment's pages are then mapped with the segment's
//! permissions.
//!
//! A guest is read, parsed and laid out once per binary and configuration
//! (`crate::image` builds and caches the result); [`PreparedGuest`] (kept
//! by the caller, passed as [`GuestBinary::Prepared`]) also skips reading
//! and hashing the file. [`GuestBinary::Static`] takes an ELF embedded
//! with `include_bytes!` and is never copied: the cached image borrows it.

use std::{borrow::Cow, io::Read, path::PathBuf, sync::Arc};

use goblin::elf::{Elf, ProgramHeader, header, program_header};
use nub_host_common::layout::{Access, IMAGE_BASE, MAX_MEMORY_SIZE, PAGE_SIZE, Region};

use crate::error::GuestBinaryError;

/// Where the guest program comes from.
#[derive(Debug, Clone)]
pub enum GuestBinary {
    /// An ELF file on disk (read and hashed for each sandbox; parsed only
    /// the first time, see the module docs).
    FilePath(PathBuf),
    /// An ELF image in memory (hashed for each sandbox; parsed only the
    /// first time).
    Buffer(Vec<u8>),
    /// An ELF image that lives for the whole program, typically embedded
    /// with `include_bytes!(env!("MY_GUEST"))` (see `nub_guest_build::embed`).
    /// Hashed once per process (a `'static` slice never changes, so its
    /// address names it) and parsed only the first time, and never copied:
    /// the prepared guest and the cached image borrow the slice. As cheap
    /// to rebuild from as [`GuestBinary::Prepared`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use nub_sandbox::{GuestBinary, UninitializedSandbox};
    /// // In a host crate whose build.rs calls `nub_guest_build::embed`:
    /// // static GUEST: &[u8] = include_bytes!(env!("MY_GUEST"));
    /// # static GUEST: &[u8] = b"";
    /// let mut sandbox = UninitializedSandbox::new(GuestBinary::Static(GUEST), None)?.evolve()?;
    /// let answer = sandbox.call_raw(1, b"hi")?;
    /// # let _ = answer;
    /// # Ok(())
    /// # }
    /// ```
    Static(&'static [u8]),
    /// A guest read, parsed and checked once ([`PreparedGuest::new`]):
    /// sandboxes built from it neither read nor hash nor parse anything.
    Prepared(Arc<PreparedGuest>),
}

/// Largest guest ELF nub loads: 64 MiB. Guest memory itself is at most
/// [`MAX_MEMORY_SIZE`] (498 MiB: 249 page tables of 2 MiB), but a guest image is code and data
/// for a `no_std` program; nub's own guests are a few hundred KiB, so this
/// leaves ample room while bounding what a wrong or hostile path makes the
/// host read into memory.
pub const MAX_GUEST_BINARY_SIZE: u64 = 64 << 20;

/// Refuses a guest of `size` bytes over [`MAX_GUEST_BINARY_SIZE`]: the one
/// size check, wherever bytes come in (a file's metadata, what was read,
/// a buffer being parsed).
fn check_size(size: u64) -> Result<(), GuestBinaryError> {
    if size > MAX_GUEST_BINARY_SIZE {
        return Err(GuestBinaryError::TooLarge {
            size,
            max: MAX_GUEST_BINARY_SIZE,
        });
    }
    Ok(())
}

/// Reads the file at `path`, refusing one larger than
/// [`MAX_GUEST_BINARY_SIZE`] before reading it (and, should it grow while
/// being read, after at most one byte more).
fn read_bounded(path: &std::path::Path) -> Result<Vec<u8>, GuestBinaryError> {
    let io = |source| GuestBinaryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    check_size(size)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_GUEST_BINARY_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    check_size(bytes.len() as u64)?;
    Ok(bytes)
}

impl GuestBinary {
    /// The ELF bytes.
    pub(crate) fn bytes(&self) -> Result<Cow<'_, [u8]>, GuestBinaryError> {
        match self {
            Self::FilePath(path) => read_bounded(path).map(Cow::Owned),
            Self::Buffer(bytes) => Ok(Cow::Borrowed(bytes)),
            Self::Static(bytes) => Ok(Cow::Borrowed(bytes)),
            Self::Prepared(guest) => Ok(Cow::Borrowed(&guest.bytes)),
        }
    }

    /// The ELF bytes `bytes` (what [`GuestBinary::bytes`] returned) as a
    /// prepared guest keeps them: a static slice stays borrowed, anything
    /// else is owned (a copy only for a buffer).
    pub(crate) fn keep(&self, bytes: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
        match self {
            Self::Static(bytes) => Cow::Borrowed(bytes),
            Self::FilePath(_) | Self::Buffer(_) | Self::Prepared(_) => {
                Cow::Owned(bytes.into_owned())
            }
        }
    }
}

/// The blake3 digest of an ELF: the cache key of everything built from it.
pub(crate) type Digest = [u8; 32];

/// A guest binary read, parsed and validated once. Keep it (in an `Arc`)
/// and build sandboxes from [`GuestBinary::Prepared`]: each skips reading,
/// hashing and parsing, and finds its prepared image (the guest's initial
/// memory for its configuration) already built after the first sandbox of
/// that configuration.
pub struct PreparedGuest {
    pub(crate) digest: Digest,
    pub(crate) image: GuestImage,
    /// The ELF, for building the image of a configuration not seen yet
    /// (borrowed when it came as [`GuestBinary::Static`]).
    pub(crate) bytes: Cow<'static, [u8]>,
}

impl std::fmt::Debug for PreparedGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedGuest")
            .field("image", &self.image)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl PreparedGuest {
    /// Reads (for a path), parses and validates `binary` once. The errors
    /// are those of [`GuestImage::parse`] and of reading the file.
    pub fn new(binary: GuestBinary) -> Result<Arc<Self>, GuestBinaryError> {
        let bytes = match binary {
            GuestBinary::Prepared(guest) => return Ok(guest),
            GuestBinary::FilePath(path) => Cow::Owned(read_bounded(&path)?),
            GuestBinary::Buffer(bytes) => Cow::Owned(bytes),
            GuestBinary::Static(bytes) => Cow::Borrowed(bytes),
        };
        let digest = *blake3::hash(&bytes).as_bytes();
        Self::from_bytes(bytes, digest)
    }

    /// Parses `bytes` (whose blake3 digest is `digest`) once.
    pub(crate) fn from_bytes(
        bytes: impl Into<Cow<'static, [u8]>>,
        digest: Digest,
    ) -> Result<Arc<Self>, GuestBinaryError> {
        let bytes = bytes.into();
        let image = GuestImage::parse(&bytes)?;
        Ok(Arc::new(Self {
            digest,
            image,
            bytes,
        }))
    }

    /// The parsed image: entry point and segments.
    pub fn image(&self) -> &GuestImage {
        &self.image
    }
}

/// One loadable segment, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Virtual (= physical) address of the first byte.
    pub vaddr: u64,
    /// Bytes in memory (file bytes, then zeros).
    pub mem_size: u64,
    /// Range of the file bytes in the ELF.
    pub file_range: std::ops::Range<usize>,
    /// Access the guest gets to the segment's pages.
    pub access: Access,
}

impl Segment {
    /// The page-aligned region the segment occupies.
    pub fn pages(&self) -> Region {
        let start = self.vaddr & !(PAGE_SIZE - 1);
        let end = (self.vaddr + self.mem_size).next_multiple_of(PAGE_SIZE);
        Region {
            start,
            size: end - start,
        }
    }
}

/// A parsed, validated guest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// Entry point (RIP at boot).
    pub entry: u64,
    /// Loadable segments in address order.
    pub segments: Vec<Segment>,
    /// One past the last byte of the last segment.
    pub end: u64,
}

impl GuestImage {
    /// Parses and validates `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, GuestBinaryError> {
        if bytes.is_empty() {
            return Err(GuestBinaryError::Empty);
        }
        check_size(bytes.len() as u64)?;
        let not_elf = |e: goblin::error::Error| GuestBinaryError::NotElf(e.to_string());
        // Only the ELF header and the program headers: `Elf::lazy_parse`
        // validates class and byte order and parses nothing else.
        let header = Elf::parse_header(bytes).map_err(not_elf)?;
        let elf = Elf::lazy_parse(header).map_err(not_elf)?;
        if elf.header.e_machine != header::EM_X86_64 || !elf.is_64 || !elf.little_endian {
            return Err(GuestBinaryError::WrongArchitecture {
                machine: elf.header.e_machine,
                is_64: elf.is_64,
            });
        }
        if elf.header.e_type != header::ET_EXEC {
            return Err(GuestBinaryError::NotExecutable(elf.header.e_type));
        }
        let ctx = goblin::container::Ctx::new(
            elf.header.container().map_err(not_elf)?,
            elf.header.endianness().map_err(not_elf)?,
        );
        let phnum = usize::from(elf.header.e_phnum);
        let entry_size = ProgramHeader::size(ctx);
        if phnum > 0 && usize::from(elf.header.e_phentsize) != entry_size {
            return Err(GuestBinaryError::NotElf(format!(
                "program header entries of {} bytes (expected {entry_size})",
                elf.header.e_phentsize
            )));
        }
        let phoff = usize::try_from(elf.header.e_phoff).map_err(|_| {
            GuestBinaryError::NotElf(format!("program headers at {:#x}", elf.header.e_phoff))
        })?;
        // goblin bounds-checks the table against `bytes` (and the count
        // against the length before allocating).
        let program_headers = ProgramHeader::parse(bytes, phoff, phnum, ctx).map_err(not_elf)?;
        let mut segments = Vec::new();
        for (index, ph) in program_headers.iter().enumerate() {
            if ph.p_type != program_header::PT_LOAD || ph.p_memsz == 0 {
                continue;
            }
            let bad = |reason| GuestBinaryError::BadSegment {
                index,
                vaddr: ph.p_vaddr,
                memsz: ph.p_memsz,
                reason,
            };
            let end = ph
                .p_vaddr
                .checked_add(ph.p_memsz)
                .ok_or(bad("size overflows"))?;
            if ph.p_vaddr < IMAGE_BASE || end > MAX_MEMORY_SIZE {
                return Err(bad("outside the guest image area"));
            }
            if ph.p_filesz > ph.p_memsz {
                return Err(bad("file size exceeds memory size"));
            }
            let truncated = GuestBinaryError::Truncated {
                index,
                offset: ph.p_offset,
                size: ph.p_filesz,
                file_len: bytes.len(),
            };
            let start = usize::try_from(ph.p_offset).map_err(|_| truncated)?;
            let file_end = usize::try_from(ph.p_filesz)
                .ok()
                .and_then(|n| start.checked_add(n))
                .filter(|&e| e <= bytes.len())
                .ok_or(GuestBinaryError::Truncated {
                    index,
                    offset: ph.p_offset,
                    size: ph.p_filesz,
                    file_len: bytes.len(),
                })?;
            let (r, w, x) = (ph.is_read(), ph.is_write(), ph.is_executable());
            let access = match (w, x) {
                (true, true) => return Err(bad("writable and executable (W^X)")),
                (true, false) => Access::ReadWrite,
                (false, true) => Access::ReadExecute,
                (false, false) if r => Access::Read,
                (false, false) => return Err(bad("no access flags")),
            };
            segments.push(Segment {
                vaddr: ph.p_vaddr,
                mem_size: ph.p_memsz,
                file_range: start..file_end,
                access,
            });
        }
        if segments.is_empty() {
            return Err(GuestBinaryError::NoSegments);
        }
        segments.sort_by_key(|s| s.vaddr);
        for (i, pair) in segments.windows(2).enumerate() {
            if let [a, b] = pair
                && a.pages().end() > b.pages().start
            {
                return Err(GuestBinaryError::BadSegment {
                    index: i + 1,
                    vaddr: b.vaddr,
                    memsz: b.mem_size,
                    reason: "shares a page with the previous segment",
                });
            }
        }
        let entry = elf.entry;
        let in_code = segments.iter().any(|s| {
            s.access == Access::ReadExecute && entry >= s.vaddr && entry < s.vaddr + s.mem_size
        });
        if !in_code {
            return Err(GuestBinaryError::BadEntry(entry));
        }
        let end = segments
            .iter()
            .map(|s| s.vaddr + s.mem_size)
            .max()
            .unwrap_or(IMAGE_BASE);
        Ok(Self {
            entry,
            segments,
            end,
        })
    }
}
