//! The guest ELF loader (`GuestImage::parse`, goblin underneath) on hostile
//! files. Beyond "no panic", any image it accepts must be safe to map:
//! segments sorted, page-disjoint, inside `[IMAGE_BASE, MAX_MEMORY_SIZE)`,
//! with file bytes inside the input and no larger than the memory size, no
//! W+X, and the entry inside an executable segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_host_common::layout::{Access, IMAGE_BASE, MAX_MEMORY_SIZE, PAGE_SIZE};
use nub_sandbox::binary::GuestImage;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = GuestImage::parse(data) else {
        return;
    };
    assert!(!image.segments.is_empty());
    let mut prev_end: Option<u64> = None;
    for s in &image.segments {
        assert!(s.mem_size > 0);
        let end = s
            .vaddr
            .checked_add(s.mem_size)
            .expect("segment end overflows");
        assert!(s.vaddr >= IMAGE_BASE, "segment below the image base");
        assert!(end <= MAX_MEMORY_SIZE, "segment past guest memory");
        assert!(s.file_range.start <= s.file_range.end);
        assert!(s.file_range.end <= data.len(), "file range past the input");
        assert!(s.file_range.len() as u64 <= s.mem_size);
        assert!(matches!(
            s.access,
            Access::Read | Access::ReadWrite | Access::ReadExecute
        ));
        let pages = s.pages();
        assert_eq!(pages.start % PAGE_SIZE, 0);
        assert_eq!(pages.size % PAGE_SIZE, 0);
        assert!(pages.start <= s.vaddr && end <= pages.end());
        assert!(pages.end() <= MAX_MEMORY_SIZE);
        if let Some(prev) = prev_end {
            assert!(prev <= pages.start, "segments unsorted or share a page");
        }
        prev_end = Some(pages.end());
    }
    assert!(
        image
            .segments
            .iter()
            .any(|s| s.access == Access::ReadExecute
                && image.entry >= s.vaddr
                && image.entry < s.vaddr + s.mem_size),
        "entry {:#x} outside every executable segment",
        image.entry
    );
    let max_end = image.segments.iter().map(|s| s.vaddr + s.mem_size).max();
    assert_eq!(Some(image.end), max_end);
});
