//! Persisted image files (`nub_sandbox::persist`): the header and body
//! parser (`ImageFile::parse`) and the check against the embedded guest
//! (`persist::inspect`: ELF, layout, pages, registers), which build
//! nothing. Byte 0 of the input picks whether the header's content size
//! and digest are rewritten to match the rest (bit 0 set, `ImageFile::seal`),
//! so mutations reach the body instead of stopping at the digest. Beyond
//! "no panic": what parses is self-consistent (page numbers ascend, one
//! 4096-byte page each, the ELF is the announced size) and re-encodes to
//! a file that parses to the same view; what passes the check has pages
//! only in writable regions (never the system pages or page tables, below
//! the image base) and registers a CPL 3 guest can have.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_host_common::layout::{IMAGE_BASE, PAGE_SIZE, USER_RFLAGS, USER_RFLAGS_STATUS};
use nub_sandbox::persist::{self, ImageFile};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = rest.to_vec();
    if mode & 1 == 1 {
        // Fails (and leaves the digest) when the content does not parse.
        let _ = ImageFile::seal(&mut file);
    }
    let Ok(parsed) = ImageFile::parse(&file) else {
        assert!(persist::inspect(&file).is_err());
        return;
    };
    assert!(parsed.page_numbers.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(parsed.pages.len(), parsed.page_numbers.len() * PAGE_SIZE as usize);
    for i in 0..parsed.page_numbers.len() {
        assert_eq!(parsed.page(i).map(<[u8]>::len), Some(PAGE_SIZE as usize));
    }
    let pages = (0..parsed.page_numbers.len())
        .map(|i| (parsed.page_numbers[i], parsed.page(i).unwrap_or_default()));
    let encoded = ImageFile::encode(&parsed.meta, &parsed.host_functions, parsed.elf, pages)
        .expect("a parsed file re-encodes");
    let again = ImageFile::parse(&encoded).expect("a re-encoded file parses");
    assert_eq!(again.meta, parsed.meta);
    assert_eq!(again.host_functions, parsed.host_functions);
    assert_eq!(again.page_numbers, parsed.page_numbers);
    assert_eq!(again.elf, parsed.elf);
    assert_eq!(again.pages, parsed.pages);

    let Ok(info) = persist::inspect(&file) else {
        return;
    };
    assert_eq!(info.page_count, parsed.page_numbers.len());
    let regions = info.meta.shape.regions;
    let stack = regions[7];
    for &page in &parsed.page_numbers {
        let gpa = page * PAGE_SIZE;
        assert!(gpa >= IMAGE_BASE, "a page below the image base: {gpa:#x}");
        assert!(gpa < info.meta.shape.memory_size);
        let ist = regions[6];
        assert!(!(gpa >= ist.start && gpa < ist.start + ist.size), "an IST stack page");
    }
    let regs = info.meta.registers;
    assert!(regs.rsp >= stack.start && regs.rsp <= stack.start + stack.size);
    assert!(regs.rip >= IMAGE_BASE);
    assert_eq!(regs.rflags & !USER_RFLAGS_STATUS, USER_RFLAGS);
});
