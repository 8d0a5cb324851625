//! The image file's bytes: [`ImageFile::parse`] reads a file into a
//! structurally checked view, [`ImageFile::encode`] writes one. Pure: no
//! KVM, no file system, no guest ELF parsing (that is
//! [`super::check`]), so the fuzz target drives it directly.
//!
//! Every integer is little-endian; docs/images.md has the table. A file is
//! a 128-byte header and a content that the header's blake3 digest covers
//! but for the ELF's bytes, which the metadata's ELF digest covers (so each
//! byte is hashed once; [`content_digest`]):
//!
//! | bytes | what |
//! | --- | --- |
//! | header | magic `NUBIMAGE`, format version, ABI version, nub version, content digest, content size |
//! | [`Meta`] | the ELF's digest and size, layout sizes and regions, boot data, the engine's resting state, the CPL 3 registers, counts |
//! | host fn ids | `u32` each, padded to 8 bytes |
//! | page numbers | `u64` each (guest physical address / 4096), strictly ascending |
//! | ELF | the guest binary, padded to 8 bytes |
//! | pages | 4096 bytes each, in page-number order |
//!
//! Nothing here is trusted: the parser checks the magic, the versions it
//! can read, the digest, that every count fits the content exactly and
//! that page numbers ascend; what the values mean for a guest (layout,
//! registers, pages inside writable memory) is checked by `check`.

use nub_host_common::layout::{MAX_MEMORY_SIZE, PAGE_SIZE, Region};
use nub_hypervisor::UserRegisters;

use super::ImageError;

/// The first 8 bytes of every image file.
pub const MAGIC: [u8; 8] = *b"NUBIMAGE";
/// The format version this nub writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header: magic, versions, digest, content size, zero padding.
pub const HEADER_SIZE: usize = 128;
/// Bytes of the nub version string field (UTF-8, zero padded).
const NUB_VERSION_SIZE: usize = 16;
/// Size of one guest page in the file.
const PAGE: usize = PAGE_SIZE as usize;
/// Most guest pages a file may hold: every page of the largest guest.
const MAX_PAGES: u64 = MAX_MEMORY_SIZE / PAGE_SIZE;
/// Largest guest ELF a file may hold (the loader's own limit).
const MAX_ELF: u64 = crate::binary::MAX_GUEST_BINARY_SIZE;
/// Most host function ids a file may list.
const MAX_HOST_FUNCTIONS: u32 = 1 << 16;

/// The header: what `nub info --image` prints, readable without checking
/// anything but the magic and the header's own size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The file format version.
    pub format_version: u32,
    /// The host/guest ABI version the guest was booted with.
    pub abi_version: u32,
    /// The nub version that wrote the file.
    pub nub_version: String,
    /// blake3 of everything after the header but the ELF's bytes
    /// ([`content_digest`]).
    pub content_digest: [u8; 32],
    /// Bytes after the header.
    pub content_size: u64,
}

/// The layout a file was captured with: the sizes the configuration gave
/// and the regions the host laid out from them (compared on load with the
/// regions this host lays out, so a different layout algorithm is caught).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Heap, stack, input ring, output ring, log buffer sizes.
    pub sizes: nub_host_common::layout::LayoutSizes,
    /// Total guest memory.
    pub memory_size: u64,
    /// ELF image, input ring, output ring, log buffer, control block,
    /// heap, IST stack, stack: in [`Shape::REGION_NAMES`] order.
    pub regions: [Region; 8],
}

impl Shape {
    /// What each of [`Shape::regions`] is, for errors naming a difference.
    pub const REGION_NAMES: [&'static str; 8] = [
        "image",
        "input ring",
        "output ring",
        "log buffer",
        "control block",
        "heap",
        "IST stack",
        "stack",
    ];

    /// The shape of `layout`, whose sizes were `sizes`.
    pub fn of(
        layout: &nub_host_common::layout::MemoryLayout,
        sizes: nub_host_common::layout::LayoutSizes,
    ) -> Self {
        Self {
            sizes,
            memory_size: layout.memory_size,
            regions: [
                layout.image,
                layout.input_ring,
                layout.output_ring,
                layout.log_buffer,
                layout.control,
                layout.heap,
                layout.ist_stack,
                layout.stack,
            ],
        }
    }
}

/// Everything in the content before the variable-length parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// blake3 of the guest ELF.
    pub elf_digest: [u8; 32],
    /// The memory layout.
    pub shape: Shape,
    /// `BootInfo::flags` the guest booted with (resident or not).
    pub boot_flags: u32,
    /// `BootInfo::log_level` the guest booted with.
    pub log_level: u64,
    /// The resident guest's poll budget (0 in exit mode).
    pub spin_polls: u64,
    /// The resident spin window in nanoseconds (0 in exit mode).
    pub spin_nanos: u64,
    /// The resident engine's last call sequence number (0 in exit mode).
    pub resident_seq: u64,
    /// The resident engine's last host-call sequence number.
    pub resident_last_hostcall: u64,
    /// The guest directory's header address (the guest's own answer,
    /// untrusted like any guest memory; 0 when unknown).
    pub directory_va: u64,
    /// The CPL 3 registers at the guest's resting point.
    pub registers: UserRegisters,
}

/// Bytes of [`Meta`] in the file.
const META_SIZE: usize = 32 + 8 + 8 * 5 + 8 + 8 * 16 + 4 + 4 + 8 * 6 + 4 + 4 + 8 * 18;

/// A parsed image file: the header, the metadata and the variable-length
/// parts, borrowed from the file's bytes. Structurally sound (see the
/// module docs); not yet checked against a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile<'a> {
    /// The header.
    pub header: Header,
    /// The metadata.
    pub meta: Meta,
    /// Host function ids the guest was booted with (a requirement list).
    pub host_functions: Vec<u32>,
    /// Guest page numbers of the captured pages, strictly ascending.
    pub page_numbers: Vec<u64>,
    /// The guest ELF.
    pub elf: &'a [u8],
    /// The captured pages, 4096 bytes each, in `page_numbers` order.
    pub pages: &'a [u8],
}

/// Reads little-endian fields off a byte slice; running out is
/// [`ImageError::Truncated`].
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        let end = self.pos.checked_add(n);
        let slice = end.and_then(|end| self.bytes.get(self.pos..end));
        match (slice, end) {
            (Some(slice), Some(end)) => {
                self.pos = end;
                Ok(slice)
            }
            _ => Err(ImageError::Truncated {
                need: (self.pos as u64).saturating_add(n as u64),
                have: self.bytes.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn region(&mut self) -> Result<Region, ImageError> {
        Ok(Region {
            start: self.u64()?,
            size: self.u64()?,
        })
    }

    /// Skips the zero padding up to a multiple of 8 bytes.
    fn align8(&mut self) -> Result<(), ImageError> {
        let pad = self.pos.next_multiple_of(8) - self.pos;
        self.take(pad).map(|_| ())
    }
}

/// Where the header's content digest and content size sit.
const DIGEST_AT: usize = 32;
const CONTENT_SIZE_AT: usize = 64;

/// The header's digest of `content`: blake3 of every content byte but the
/// ELF's (`elf`, a range of `content`), which the metadata's own ELF digest
/// covers (checked on load), so that each byte of a file is hashed once.
pub fn content_digest(content: &[u8], elf: std::ops::Range<usize>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(content.get(..elf.start).unwrap_or_default());
    hasher.update(content.get(elf.end..).unwrap_or_default());
    *hasher.finalize().as_bytes()
}

/// Appends little-endian fields.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn region(&mut self, r: Region) {
        self.u64(r.start);
        self.u64(r.size);
    }
    fn align8(&mut self) {
        let len = self.0.len().next_multiple_of(8);
        self.0.resize(len, 0);
    }
}

impl Header {
    /// Reads the header of `bytes`: the magic must match; the versions and
    /// the digest are returned, not checked (see [`ImageFile::parse`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(ImageError::BadMagic);
        }
        if bytes.len() < HEADER_SIZE {
            return Err(ImageError::HeaderTruncated {
                have: bytes.len() as u64,
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        r.take(MAGIC.len())?;
        let format_version = r.u32()?;
        let abi_version = r.u32()?;
        let version = r.array::<NUB_VERSION_SIZE>()?;
        let end = version
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(version.len());
        let nub_version = String::from_utf8_lossy(version.get(..end).unwrap_or_default()).into();
        let content_digest = r.array::<32>()?;
        let content_size = r.u64()?;
        r.take(HEADER_SIZE - r.pos)?;
        Ok(Self {
            format_version,
            abi_version,
            nub_version,
            content_digest,
            content_size,
        })
    }
}

impl<'a> ImageFile<'a> {
    /// Parses `bytes`: the header (magic, a format version this nub reads,
    /// the content size matching the file), then the content, every count
    /// checked against what is left, then the content's blake3 digest
    /// ([`content_digest`]). The ABI version is returned in the header and
    /// checked by the loader.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let (file, elf) = Self::parse_unverified(bytes)?;
        let content = bytes.get(HEADER_SIZE..).unwrap_or_default();
        if content_digest(content, elf) != file.header.content_digest {
            return Err(ImageError::Digest);
        }
        Ok(file)
    }

    /// Rewrites the header's content size and digest to match the content
    /// after it, as [`ImageFile::encode`] writes them: for tools and tests
    /// that edit a file. The content must parse.
    pub fn seal(bytes: &mut [u8]) -> Result<(), ImageError> {
        let size = (bytes.len().saturating_sub(HEADER_SIZE) as u64).to_le_bytes();
        if let Some(field) = bytes.get_mut(CONTENT_SIZE_AT..CONTENT_SIZE_AT + 8) {
            field.copy_from_slice(&size);
        }
        let elf = ImageFile::parse_unverified(bytes)?.1;
        let digest = content_digest(bytes.get(HEADER_SIZE..).unwrap_or_default(), elf);
        if let Some(field) = bytes.get_mut(DIGEST_AT..DIGEST_AT + 32) {
            field.copy_from_slice(&digest);
        }
        Ok(())
    }

    /// [`ImageFile::parse`] but for the digest; also returns where the ELF
    /// lies in the content.
    fn parse_unverified(bytes: &'a [u8]) -> Result<(Self, std::ops::Range<usize>), ImageError> {
        let header = Header::parse(bytes)?;
        if header.format_version != FORMAT_VERSION {
            return Err(ImageError::FormatVersion {
                file: header.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let content = bytes.get(HEADER_SIZE..).unwrap_or_default();
        if content.len() as u64 != header.content_size {
            return Err(ImageError::Size {
                header: header.content_size,
                file: content.len() as u64,
            });
        }
        let mut r = Reader {
            bytes: content,
            pos: 0,
        };
        let elf_digest = r.array::<32>()?;
        let elf_size = r.u64()?;
        let sizes = nub_host_common::layout::LayoutSizes {
            heap: r.u64()?,
            stack: r.u64()?,
            input_ring: r.u64()?,
            output_ring: r.u64()?,
            log_buffer: r.u64()?,
        };
        let memory_size = r.u64()?;
        let mut regions = [Region { start: 0, size: 0 }; 8];
        for region in &mut regions {
            *region = r.region()?;
        }
        let boot_flags = r.u32()?;
        let page_count = r.u32()?;
        let log_level = r.u64()?;
        let spin_polls = r.u64()?;
        let spin_nanos = r.u64()?;
        let resident_seq = r.u64()?;
        let resident_last_hostcall = r.u64()?;
        let directory_va = r.u64()?;
        let host_fn_count = r.u32()?;
        let _reserved = r.u32()?;
        let mut regs = [0u64; 18];
        for reg in &mut regs {
            *reg = r.u64()?;
        }
        debug_assert_eq!(r.pos, META_SIZE);
        if u64::from(page_count) > MAX_PAGES {
            return Err(ImageError::TooMany {
                what: "pages",
                count: page_count.into(),
                max: MAX_PAGES,
            });
        }
        if host_fn_count > MAX_HOST_FUNCTIONS {
            return Err(ImageError::TooMany {
                what: "host functions",
                count: host_fn_count.into(),
                max: MAX_HOST_FUNCTIONS.into(),
            });
        }
        if elf_size > MAX_ELF {
            return Err(ImageError::TooMany {
                what: "ELF bytes",
                count: elf_size,
                max: MAX_ELF,
            });
        }
        let host_functions = r
            .take(host_fn_count as usize * 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        r.align8()?;
        let page_numbers: Vec<u64> = r
            .take(page_count as usize * 8)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        if let Some(index) = page_numbers.windows(2).position(|w| w.first() >= w.get(1)) {
            return Err(ImageError::PagesUnordered { index: index + 1 });
        }
        let elf_start = r.pos;
        let elf = r.take(elf_size as usize)?;
        let elf_range = elf_start..r.pos;
        r.align8()?;
        let pages = r.take(page_count as usize * PAGE)?;
        if r.pos != content.len() {
            return Err(ImageError::TrailingBytes {
                extra: (content.len() - r.pos) as u64,
            });
        }
        let file = Self {
            header,
            meta: Meta {
                elf_digest,
                shape: Shape {
                    sizes,
                    memory_size,
                    regions,
                },
                boot_flags,
                log_level,
                spin_polls,
                spin_nanos,
                resident_seq,
                resident_last_hostcall,
                directory_va,
                registers: UserRegisters::from_array(regs),
            },
            host_functions,
            page_numbers,
            elf,
            pages,
        };
        Ok((file, elf_range))
    }

    /// The captured page with guest page number `page_numbers[i]`.
    pub fn page(&self, i: usize) -> Option<&'a [u8]> {
        self.pages
            .get(i.checked_mul(PAGE)?..i.checked_add(1)?.checked_mul(PAGE)?)
    }

    /// Writes a file: `meta`, `host_functions`, the guest `elf`, and each
    /// `(page number, 4096 bytes)` of `pages` (ascending page numbers),
    /// under a header carrying this nub's versions and the content's
    /// digest.
    pub fn encode<'p>(
        meta: &Meta,
        host_functions: &[u32],
        elf: &[u8],
        pages: impl ExactSizeIterator<Item = (u64, &'p [u8])> + Clone,
    ) -> Result<Vec<u8>, ImageError> {
        let count = pages.len();
        let too_many = |what, count: usize, max: u64| ImageError::TooMany {
            what,
            count: count as u64,
            max,
        };
        let page_count = u32::try_from(count).map_err(|_| too_many("pages", count, MAX_PAGES))?;
        let host_fn_count = u32::try_from(host_functions.len()).map_err(|_| {
            too_many(
                "host functions",
                host_functions.len(),
                MAX_HOST_FUNCTIONS.into(),
            )
        })?;
        let mut w = Writer::default();
        w.0.extend_from_slice(&meta.elf_digest);
        w.u64(elf.len() as u64);
        let s = meta.shape.sizes;
        for size in [s.heap, s.stack, s.input_ring, s.output_ring, s.log_buffer] {
            w.u64(size);
        }
        w.u64(meta.shape.memory_size);
        for region in meta.shape.regions {
            w.region(region);
        }
        w.u32(meta.boot_flags);
        w.u32(page_count);
        for v in [
            meta.log_level,
            meta.spin_polls,
            meta.spin_nanos,
            meta.resident_seq,
            meta.resident_last_hostcall,
            meta.directory_va,
        ] {
            w.u64(v);
        }
        w.u32(host_fn_count);
        w.u32(0);
        for reg in meta.registers.to_array() {
            w.u64(reg);
        }
        debug_assert_eq!(w.0.len(), META_SIZE);
        for id in host_functions {
            w.u32(*id);
        }
        w.align8();
        let mut last = None;
        for (number, page) in pages.clone() {
            if last.is_some_and(|l| l >= number) || page.len() != PAGE {
                return Err(ImageError::Internal(
                    "pages to encode are not ascending whole pages",
                ));
            }
            last = Some(number);
            w.u64(number);
        }
        let elf_start = w.0.len();
        w.0.extend_from_slice(elf);
        w.align8();
        for (_, page) in pages {
            w.0.extend_from_slice(page);
        }
        let content = w.0;
        let elf_end = elf_start + elf.len();
        let mut file = Vec::with_capacity(HEADER_SIZE + content.len());
        file.extend_from_slice(&MAGIC);
        file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        file.extend_from_slice(&nub_host_common::ABI_VERSION.to_le_bytes());
        let mut version = [0u8; NUB_VERSION_SIZE];
        let ours = env!("CARGO_PKG_VERSION").as_bytes();
        let n = ours.len().min(NUB_VERSION_SIZE);
        version[..n].copy_from_slice(&ours[..n]);
        file.extend_from_slice(&version);
        file.extend_from_slice(&content_digest(&content, elf_start..elf_end));
        file.extend_from_slice(&(content.len() as u64).to_le_bytes());
        file.resize(HEADER_SIZE, 0);
        file.extend_from_slice(&content);
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            elf_digest: [7; 32],
            shape: Shape {
                sizes: nub_host_common::layout::LayoutSizes {
                    heap: 1 << 20,
                    stack: 128 << 10,
                    input_ring: 256 << 10,
                    output_ring: 256 << 10,
                    log_buffer: 16 << 10,
                },
                memory_size: 4 << 20,
                regions: [Region {
                    start: 0x1000,
                    size: 0x2000,
                }; 8],
            },
            boot_flags: 1,
            log_level: 3,
            spin_polls: 10,
            spin_nanos: 100_000,
            resident_seq: 5,
            resident_last_hostcall: 2,
            directory_va: 0x40_0000,
            registers: UserRegisters {
                rip: 0x20_1000,
                rsp: 0x30_0000,
                rflags: 2,
                r15: 15,
                ..UserRegisters::default()
            },
        }
    }

    fn file() -> Vec<u8> {
        let a = [1u8; PAGE];
        let b = [2u8; PAGE];
        let pages = [(3u64, &a[..]), (9, &b[..])];
        ImageFile::encode(&meta(), &[100, 7], b"elf!x", pages.into_iter()).unwrap()
    }

    #[test]
    fn what_is_encoded_parses_back() {
        let bytes = file();
        let parsed = ImageFile::parse(&bytes).unwrap();
        assert_eq!(parsed.meta, meta());
        assert_eq!(parsed.host_functions, [100, 7]);
        assert_eq!(parsed.page_numbers, [3, 9]);
        assert_eq!(parsed.elf, b"elf!x");
        assert_eq!(parsed.page(1).unwrap(), [2u8; PAGE]);
        assert!(parsed.page(2).is_none());
        assert_eq!(parsed.header.abi_version, nub_host_common::ABI_VERSION);
        assert_eq!(parsed.header.nub_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_the_content_is_a_digest_error() {
        let mut bytes = file();
        for at in [HEADER_SIZE, HEADER_SIZE + 300, bytes.len() - 1] {
            bytes[at] ^= 1;
            assert!(matches!(ImageFile::parse(&bytes), Err(ImageError::Digest)));
            bytes[at] ^= 1;
        }
        ImageFile::parse(&bytes).unwrap();
        // The ELF's bytes are the ELF digest's to cover (checked on load),
        // and a sealed edit parses again.
        let elf_at = HEADER_SIZE + META_SIZE + 8 + 16;
        assert_eq!(&bytes[elf_at..elf_at + 5], b"elf!x");
        bytes[elf_at] = b'E';
        assert_eq!(ImageFile::parse(&bytes).unwrap().elf, b"Elf!x");
        bytes[HEADER_SIZE + 300] ^= 1;
        assert!(matches!(ImageFile::parse(&bytes), Err(ImageError::Digest)));
        ImageFile::seal(&mut bytes).unwrap();
        ImageFile::parse(&bytes).unwrap();
    }

    #[test]
    fn header_faults_are_named() {
        let good = file();
        let mut bytes = good.clone();
        bytes[0] = b'X';
        assert!(matches!(
            ImageFile::parse(&bytes),
            Err(ImageError::BadMagic)
        ));
        let mut bytes = good.clone();
        bytes[8] = 9;
        assert!(matches!(
            ImageFile::parse(&bytes),
            Err(ImageError::FormatVersion { file: 9, .. })
        ));
        let truncated = &good[..good.len() - 10];
        assert!(matches!(
            ImageFile::parse(truncated),
            Err(ImageError::Size { .. })
        ));
        assert!(matches!(
            ImageFile::parse(&good[..40]),
            Err(ImageError::HeaderTruncated { have: 40 })
        ));
        assert!(matches!(
            ImageFile::parse(b"NUB"),
            Err(ImageError::BadMagic)
        ));
    }

    /// Rewrites `bytes`' content digest after an edit, as a forger would.
    fn reseal(bytes: &mut [u8]) {
        // A content that does not parse fails before its digest matters.
        let _ = ImageFile::seal(bytes);
    }

    #[test]
    fn forged_counts_are_refused_not_trusted() {
        let good = file();
        // page_count lives after the digest, size, sizes, memory size,
        // regions and boot flags.
        let page_count_at = HEADER_SIZE + 32 + 8 + 40 + 8 + 128 + 4;
        for (count, expect_too_many) in [(u32::MAX, true), (3, false)] {
            let mut bytes = good.clone();
            bytes[page_count_at..page_count_at + 4].copy_from_slice(&count.to_le_bytes());
            reseal(&mut bytes);
            let err = ImageFile::parse(&bytes).unwrap_err();
            if expect_too_many {
                assert!(
                    matches!(err, ImageError::TooMany { what: "pages", .. }),
                    "{err}"
                );
            } else {
                assert!(
                    matches!(
                        err,
                        ImageError::Truncated { .. } | ImageError::PagesUnordered { .. }
                    ),
                    "{err}"
                );
            }
        }
    }
}
