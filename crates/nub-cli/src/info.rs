//! `nub info`: the guest's ELF segments and the memory layout a sandbox
//! would give it.

use std::fmt::Write;

use nub_host_common::layout::{Access, MemoryLayout};
use nub_sandbox::{GuestBinary, UninitializedSandbox, binary::GuestImage};

use crate::{
    cli::InfoArgs,
    error::CliError,
    guest,
    size::format_size,
    table::{Align, Table},
};

/// Runs `nub info`.
pub fn run(args: &InfoArgs) -> Result<(), CliError> {
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
}
