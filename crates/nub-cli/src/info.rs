//! `nub info`: the guest's ELF segments and the memory layout a sandbox
//! would give it; with `--image`, what an image file holds.

use std::{fmt::Write as _, io::Write as _, path::Path};

use nub_host_common::layout::{Access, MemoryLayout, PAGE_SIZE};
use nub_sandbox::{
    CallMode, GuestBinary, ImageInfo, UninitializedSandbox,
    binary::GuestImage,
    persist::{self, Header, Shape},
};

use crate::{
    cli::InfoArgs,
    error::CliError,
    guest,
    payload::encode_hex,
    size::format_size,
    table::{Align, Table},
};

/// Runs `nub info`.
pub fn run(args: &InfoArgs) -> Result<(), CliError> {
    if let Some(path) = &args.image {
        return image(path);
    }
    let elf = guest::elf(args.sandbox.guest.as_deref())?;
    let path = elf.as_deref();
    let bytes = guest::bytes(path)?;
    let image = GuestImage::parse(&bytes)?;
    // The sandbox computes the layout itself (and validates the sizes), so
    // what is shown is exactly what `call` would use. No VM is created.
    let sandbox = UninitializedSandbox::new(
        GuestBinary::Buffer(bytes.into_owned()),
        Some(args.sandbox.configuration()),
    )?;
    print!(
        "{}",
        render(&guest::describe(path), &image, sandbox.layout())
    );
    Ok(())
}

/// The report `nub info` prints.
pub fn render(guest: &str, image: &GuestImage, layout: &MemoryLayout) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "guest:       {guest}");
    let _ = writeln!(out, "entry point: {:#x}", image.entry);

    let _ = writeln!(out, "\nloadable segments (PT_LOAD):");
    let mut segments = Table::new(&[
        ("vaddr", Align::Right),
        ("end", Align::Right),
        ("memsz", Align::Right),
        ("file bytes", Align::Right),
        ("access", Align::Left),
    ]);
    for seg in &image.segments {
        segments.row(vec![
            format!("{:#x}", seg.vaddr),
            format!("{:#x}", seg.vaddr + seg.mem_size),
            seg.mem_size.to_string(),
            seg.file_range.len().to_string(),
            access_label(seg.access).to_string(),
        ]);
    }
    out.push_str(&segments.render("  "));

    let _ = writeln!(
        out,
        "\nmemory layout (one range from address 0, in read-only and writable KVM slots; \
         unmapped guard pages between regions):"
    );
    let mut regions = Table::new(&[
        ("region", Align::Left),
        ("start", Align::Right),
        ("end", Align::Right),
        ("size", Align::Right),
        ("access", Align::Left),
    ]);
    for (name, region, access) in layout.regions() {
        // The image's pages follow the segment flags listed above.
        let access = if region == layout.image {
            "per segment"
        } else {
            access_label(access)
        };
        regions.row(vec![
            name.to_string(),
            format!("{:#x}", region.start),
            format!("{:#x}", region.end()),
            format_size(region.size),
            access.to_string(),
        ]);
    }
    out.push_str(&regions.render("  "));

    let _ = writeln!(
        out,
        "\ntotal guest memory: {} ({:#x} bytes)",
        format_size(layout.memory_size),
        layout.memory_size
    );
    out
}

/// Runs `nub info --image`: reads the header, prints it, then checks the
/// whole file (no KVM) and prints what it holds. A file whose header reads
/// but whose content does not check still gets its header printed before
/// the error.
fn image(path: &Path) -> Result<(), CliError> {
    let bytes = std::fs::read(path).map_err(|source| CliError::ReadImage {
        path: path.to_path_buf(),
        source,
    })?;
    let image_error = |source| CliError::Image {
        path: path.to_path_buf(),
        source,
    };
    let header = Header::parse(&bytes).map_err(image_error)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(render_header(&path.display().to_string(), &header).as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::Write)?;
    let info = persist::inspect(&bytes).map_err(image_error)?;
    stdout
        .write_all(render_image(&info).as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::Write)
}

/// The header part of `nub info --image`.
pub fn render_header(file: &str, header: &Header) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "image:            {file}");
    let _ = writeln!(out, "format version:   {}", header.format_version);
    let _ = writeln!(out, "ABI version:      {}", header.abi_version);
    let _ = writeln!(out, "nub version:      {}", header.nub_version);
    let _ = writeln!(
        out,
        "content digest:   {} (blake3)",
        encode_hex(&header.content_digest)
    );
    let _ = writeln!(out, "content size:     {} bytes", header.content_size);
    out
}

/// What a checked image holds: the rest of `nub info --image`.
pub fn render_image(info: &ImageInfo) -> String {
    let meta = &info.meta;
    let sizes = meta.shape.sizes;
    let mut out = String::new();
    let mode = match info.call_mode() {
        CallMode::Exit => "exit".to_string(),
        CallMode::Resident { spin } => {
            format!("resident (spin {spin:?}, {} polls)", meta.spin_polls)
        }
    };
    let _ = writeln!(out, "call mode:        {mode}");
    let _ = writeln!(out, "guest log level:  {}", level_name(meta.log_level));
    let pages = info.page_count as u64;
    let _ = writeln!(
        out,
        "pages carried:    {pages} ({})",
        format_size(pages.saturating_mul(PAGE_SIZE))
    );
    let _ = writeln!(
        out,
        "guest ELF:        {} bytes, blake3 {}",
        info.elf_size,
        encode_hex(&meta.elf_digest)
    );
    let host_functions = if info.host_functions.is_empty() {
        "none".to_string()
    } else {
        let ids: Vec<String> = info.host_functions.iter().map(u32::to_string).collect();
        ids.join(", ")
    };
    let _ = writeln!(out, "host functions:   {host_functions} (required)");
    let _ = writeln!(
        out,
        "resting at:       rip {:#x}, rsp {:#x}",
        meta.registers.rip, meta.registers.rsp
    );
    let _ = writeln!(
        out,
        "sizes:            heap {}, stack {}, input ring {}, output ring {}, log buffer {}",
        format_size(sizes.heap),
        format_size(sizes.stack),
        format_size(sizes.input_ring),
        format_size(sizes.output_ring),
        format_size(sizes.log_buffer)
    );

    let _ = writeln!(out, "\nmemory layout:");
    let mut regions = Table::new(&[
        ("region", Align::Left),
        ("start", Align::Right),
        ("end", Align::Right),
        ("size", Align::Right),
    ]);
    for (name, region) in Shape::REGION_NAMES.iter().zip(meta.shape.regions) {
        regions.row(vec![
            name.to_string(),
            format!("{:#x}", region.start),
            format!("{:#x}", region.end()),
            format_size(region.size),
        ]);
    }
    out.push_str(&regions.render("  "));
    let _ = writeln!(
        out,
        "\ntotal guest memory: {} ({:#x} bytes)",
        format_size(meta.shape.memory_size),
        meta.shape.memory_size
    );
    out
}

/// The name of a guest log level as the image stores it
/// (`log::LevelFilter as u64`).
fn level_name(level: u64) -> String {
    log::LevelFilter::iter()
        .find(|l| *l as u64 == level)
        .map_or_else(
            || format!("invalid ({level})"),
            |l| l.as_str().to_ascii_lowercase(),
        )
}

/// Short form of an access mode.
fn access_label(access: Access) -> &'static str {
    match access {
        Access::Unmapped => "none",
        Access::Read => "R",
        Access::ReadWrite => "RW",
        Access::ReadExecute => "RX",
        Access::KernelExecute => "RX (CPL 0)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nub_sandbox::SandboxConfiguration;

    #[test]
    fn report_lists_segments_and_regions() {
        let image = GuestImage::parse(guest::DEFAULT_GUEST).unwrap();
        let cfg = SandboxConfiguration::default();
        let layout = MemoryLayout::new(image.end, cfg.layout_sizes()).unwrap();
        let text = render("test guest", &image, &layout);
        assert!(text.contains(&format!("entry point: {:#x}", image.entry)));
        assert!(text.contains("guest:       test guest"));
        for (name, region, _) in layout.regions() {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
            assert!(line.contains(&format!("{:#x}", region.start)), "{line}");
        }
        assert!(text.contains("  RX\n"), "code segment:\n{text}");
        assert!(text.contains("per segment"), "image access:\n{text}");
        assert!(text.contains(&format!("{:#x} bytes", layout.memory_size)));
        assert!(!text.lines().any(|l| l.ends_with(' ')), "trailing spaces");
    }

    #[test]
    fn image_header_and_log_levels() {
        let header = Header {
            format_version: 1,
            abi_version: 4,
            nub_version: "0.1.0".into(),
            content_digest: [0xab; 32],
            content_size: 4096,
        };
        let text = render_header("c.img", &header);
        assert!(text.starts_with("image:            c.img\n"), "{text}");
        assert!(text.contains("format version:   1\n"), "{text}");
        assert!(text.contains("ABI version:      4\n"), "{text}");
        assert!(text.contains("nub version:      0.1.0\n"), "{text}");
        assert!(text.contains(&format!("content digest:   {} (blake3)", "ab".repeat(32))));
        assert!(text.contains("content size:     4096 bytes\n"), "{text}");
        assert_eq!(level_name(0), "off");
        assert_eq!(level_name(log::LevelFilter::Info as u64), "info");
        assert_eq!(level_name(99), "invalid (99)");
    }
}
