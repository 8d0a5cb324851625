//! Bad guest binaries are typed errors, never panics.

use nub_sandbox::{
    GuestBinary, GuestBinaryError, HyperlightError, SandboxConfiguration, UninitializedSandbox,
};
use nub_tests::DEFAULT_GUEST;

fn load(bytes: Vec<u8>) -> Result<UninitializedSandbox, HyperlightError> {
    nub_tests::require_kvm();
    UninitializedSandbox::new(GuestBinary::Buffer(bytes), None)
}

fn guest_bytes() -> Vec<u8> {
    std::fs::read(DEFAULT_GUEST).unwrap()
}

fn binary_error(r: Result<UninitializedSandbox, HyperlightError>) -> GuestBinaryError {
    match r {
        Err(HyperlightError::BadGuestBinary(e)) => e,
        Err(other) => panic!("expected BadGuestBinary, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn empty_file() {
    assert!(matches!(
        binary_error(load(vec![])),
        GuestBinaryError::Empty
    ));
}

#[test]
fn missing_file() {
    let r = UninitializedSandbox::new(GuestBinary::FilePath("/nonexistent/guest".into()), None);
    assert!(matches!(binary_error(r), GuestBinaryError::Io { .. }));
}

#[test]
fn not_an_elf() {
    let e = binary_error(load(b"#!/bin/sh\necho not a guest\n".to_vec()));
    assert!(matches!(e, GuestBinaryError::NotElf(_)), "{e:?}");
}

#[test]
fn elf_for_another_architecture() {
    let mut bytes = guest_bytes();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    let e = binary_error(load(bytes));
    assert!(
        matches!(e, GuestBinaryError::WrongArchitecture { machine: 183, .. }),
        "{e:?}"
    );
}

#[test]
fn thirty_two_bit_elf() {
    // A minimal ELF32 header for i386.
    let mut h = vec![0u8; 52];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1; // ELFCLASS32
    h[5] = 1; // little endian
    h[6] = 1;
    h[16..18].copy_from_slice(&2u16.to_le_bytes());
    h[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[40..42].copy_from_slice(&52u16.to_le_bytes());
    let e = binary_error(load(h));
    assert!(
        matches!(
            e,
            GuestBinaryError::WrongArchitecture { .. } | GuestBinaryError::NotElf(_)
        ),
        "{e:?}"
    );
}

#[test]
fn truncated_elf_at_every_cut() {
    let bytes = guest_bytes();
    let mut cuts: Vec<usize> = (0..256).collect();
    cuts.extend((256..bytes.len()).step_by(997));
    for cut in cuts {
        let cfg = SandboxConfiguration::default()
            .with_max_execution_time(Some(std::time::Duration::from_secs(2)));
        match UninitializedSandbox::new(GuestBinary::Buffer(bytes[..cut].to_vec()), Some(cfg)) {
            Err(HyperlightError::BadGuestBinary(_)) => {}
            Err(other) => panic!("cut {cut}: unexpected error {other:?}"),
            // Cutting only trailing sections (symbols, strings) can leave a
            // loadable image; that must then boot and work.
            Ok(s) => {
                let mut s = s.evolve().unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                assert_eq!(s.call_raw(1, b"ok").unwrap(), b"ok");
            }
        }
    }
}

/// Offset of program header `i`'s field at `field` in an ELF64 file.
fn phdr_field(bytes: &[u8], i: usize, field: usize) -> usize {
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(bytes[54..56].try_into().unwrap()) as usize;
    phoff + i * phentsize + field
}

#[test]
fn segment_outside_guest_memory() {
    let mut bytes = guest_bytes();
    // Move the last PT_LOAD (data) far above what the layout can map.
    let phnum = u16::from_le_bytes(bytes[56..58].try_into().unwrap()) as usize;
    let last_load = (0..phnum)
        .rev()
        .find(|&i| {
            let o = phdr_field(&bytes, i, 0);
            u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 1
        })
        .unwrap();
    let vaddr = phdr_field(&bytes, last_load, 16);
    bytes[vaddr..vaddr + 8].copy_from_slice(&0x7000_0000u64.to_le_bytes());
    let e = binary_error(load(bytes));
    assert!(matches!(e, GuestBinaryError::BadSegment { .. }), "{e:?}");
}

/// Index of the first `PT_LOAD` program header.
fn first_load(bytes: &[u8]) -> usize {
    let phnum = u16::from_le_bytes(bytes[56..58].try_into().unwrap()) as usize;
    (0..phnum)
        .find(|&i| {
            let o = phdr_field(bytes, i, 0);
            u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 1
        })
        .unwrap()
}

fn read_u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn segment_bytes_beyond_the_file() {
    let base = guest_bytes();
    let index = first_load(&base);
    let (p_offset, p_filesz, p_memsz) = (
        phdr_field(&base, index, 8),
        phdr_field(&base, index, 32),
        phdr_field(&base, index, 40),
    );
    let file_len = base.len();
    let filesz = read_u64_at(&base, p_filesz);
    assert!(filesz > 0, "the first PT_LOAD has file bytes");

    // The segment's file bytes start past the end of the file.
    let mut bytes = base.clone();
    let offset = file_len as u64 + 0x1000;
    bytes[p_offset..p_offset + 8].copy_from_slice(&offset.to_le_bytes());
    let e = binary_error(load(bytes));
    assert!(
        matches!(e, GuestBinaryError::Truncated { index: i, offset: o, size, file_len: l }
            if i == index && o == offset && size == filesz && l == file_len),
        "{e:?}"
    );

    // They start inside the file and run one byte past its end (memory
    // size grown to match, so only the file range is wrong).
    let mut bytes = base.clone();
    let offset = read_u64_at(&base, p_offset);
    let filesz = file_len as u64 - offset + 1;
    let memsz = read_u64_at(&base, p_memsz).max(filesz);
    bytes[p_filesz..p_filesz + 8].copy_from_slice(&filesz.to_le_bytes());
    bytes[p_memsz..p_memsz + 8].copy_from_slice(&memsz.to_le_bytes());
    let e = binary_error(load(bytes));
    assert!(
        matches!(e, GuestBinaryError::Truncated { index: i, size, .. }
            if i == index && size == filesz),
        "{e:?}"
    );
}

#[test]
fn writable_and_executable_segment_is_refused() {
    let mut bytes = guest_bytes();
    let flags = phdr_field(&bytes, 0, 4);
    bytes[flags..flags + 4].copy_from_slice(&7u32.to_le_bytes());
    let e = binary_error(load(bytes));
    assert!(
        matches!(e, GuestBinaryError::BadSegment { reason, .. } if reason.contains("W^X")),
        "{e:?}"
    );
}

#[test]
fn configuration_that_cannot_be_laid_out() {
    nub_tests::require_kvm();
    let cfg = SandboxConfiguration::default().with_heap_size(4 << 30);
    let r = UninitializedSandbox::new(GuestBinary::FilePath(DEFAULT_GUEST.into()), Some(cfg));
    assert!(
        matches!(r, Err(HyperlightError::InvalidConfiguration(_))),
        "{r:?}"
    );
    let cfg = SandboxConfiguration::default().with_stack_size(1000);
    let r = UninitializedSandbox::new(GuestBinary::FilePath(DEFAULT_GUEST.into()), Some(cfg));
    assert!(
        matches!(r, Err(HyperlightError::InvalidConfiguration(_))),
        "{r:?}"
    );
}

/// Whether `e` is a guest's own failure (a fault, a bad exit, a deadline),
/// not a host-side error or a bug in nub.
fn guest_caused(e: &HyperlightError) -> bool {
    matches!(
        e,
        HyperlightError::GuestFault { .. }
            | HyperlightError::StackOverflow { .. }
            | HyperlightError::GuestPanicked { .. }
            | HyperlightError::GuestAborted { .. }
            | HyperlightError::GuestOutOfMemory { .. }
            | HyperlightError::TripleFault
            | HyperlightError::UnexpectedPort { .. }
            | HyperlightError::MemoryAccessViolation { .. }
            | HyperlightError::UnexpectedExit(_)
            | HyperlightError::ProtocolViolation(_)
            | HyperlightError::ExecutionTimeout(_)
    )
}

/// Each corrupted guest is refused by the loader with a typed error, or
/// loads and then fails to boot or call with the guest's own error, or
/// boots and answers correctly.
#[test]
fn random_bytes_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let base = guest_bytes();
    let (mut refused, mut echoed) = (0, 0);
    for round in 0..300 {
        let mut bytes = base.clone();
        for _ in 0..(1 + round % 8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Corrupt the headers, where the loader looks.
            let i = (seed as usize) % 512;
            bytes[i] = (seed >> 40) as u8;
        }
        // Corrupt code may loop forever: a deadline bounds every run.
        let cfg = SandboxConfiguration::default()
            .with_max_execution_time(Some(std::time::Duration::from_secs(2)));
        let s = match UninitializedSandbox::new(GuestBinary::Buffer(bytes), Some(cfg)) {
            Err(HyperlightError::BadGuestBinary(_) | HyperlightError::InvalidConfiguration(_)) => {
                refused += 1;
                continue;
            }
            Err(other) => panic!("round {round}: loading failed with {other:?}"),
            Ok(s) => s,
        };
        // Whatever loads must fail or work cleanly when booted.
        match s.evolve() {
            Err(e) => assert!(guest_caused(&e), "round {round}: boot failed with {e:?}"),
            Ok(mut s) => match s.call_raw(1, b"x") {
                Ok(answer) => {
                    assert_eq!(answer, b"x", "round {round}");
                    echoed += 1;
                }
                Err(e) => assert!(guest_caused(&e), "round {round}: call failed with {e:?}"),
            },
        }
    }
    // The corruption reaches both the loader's checks and bootable images.
    assert!(
        refused > 0 && echoed > 0,
        "{refused} refused, {echoed} echoed"
    );
}

/// A path in the temp dir unique to this process and test.
fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("nub-binaries-{}-{name}", std::process::id()))
}

#[test]
fn file_over_the_size_limit_is_refused_before_reading() {
    use nub_sandbox::binary::MAX_GUEST_BINARY_SIZE;
    nub_tests::require_kvm();
    // A sparse file: its metadata says MAX + 1 bytes, no disk is used, and
    // the loader must refuse it from the metadata alone.
    let path = temp_path("huge.elf");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_GUEST_BINARY_SIZE + 1).unwrap();
    drop(file);
    let r = UninitializedSandbox::new(GuestBinary::FilePath(path.clone()), None);
    std::fs::remove_file(&path).unwrap();
    let e = binary_error(r);
    assert!(
        matches!(
            e,
            GuestBinaryError::TooLarge { size, max }
                if size == MAX_GUEST_BINARY_SIZE + 1 && max == MAX_GUEST_BINARY_SIZE
        ),
        "{e:?}"
    );
}

#[test]
fn buffer_over_the_size_limit_is_refused() {
    use nub_sandbox::binary::MAX_GUEST_BINARY_SIZE;
    let mut bytes = guest_bytes();
    bytes.resize(MAX_GUEST_BINARY_SIZE as usize + 1, 0);
    let e = binary_error(load(bytes));
    assert!(matches!(e, GuestBinaryError::TooLarge { .. }), "{e:?}");
}

#[test]
fn file_at_the_size_limit_loads() {
    use nub_sandbox::binary::MAX_GUEST_BINARY_SIZE;
    // Trailing bytes after the guest are never looked at; padding the real
    // guest up to exactly the limit still loads and runs.
    let path = temp_path("padded.elf");
    std::fs::write(&path, guest_bytes()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MAX_GUEST_BINARY_SIZE)
        .unwrap();
    nub_tests::require_kvm();
    let r = UninitializedSandbox::new(GuestBinary::FilePath(path.clone()), None);
    std::fs::remove_file(&path).unwrap();
    let mut s = r.unwrap().evolve().unwrap();
    assert_eq!(s.call_raw(1, b"padded").unwrap(), b"padded");
}

#[test]
fn section_headers_are_never_parsed() {
    // Section headers pointing far outside the file, a huge count and a
    // bogus string-table index: a full ELF parse fails on these, the loader
    // only reads the ELF header and the program headers.
    let mut bytes = guest_bytes();
    bytes[40..48].copy_from_slice(&u64::MAX.to_le_bytes()); // e_shoff
    bytes[60..62].copy_from_slice(&0xFFFFu16.to_le_bytes()); // e_shnum
    bytes[62..64].copy_from_slice(&0xFFFEu16.to_le_bytes()); // e_shstrndx
    let mut s = load(bytes).unwrap().evolve().unwrap();
    assert_eq!(s.call_raw(1, b"no sections").unwrap(), b"no sections");
}

#[test]
fn wrong_program_header_entry_size_is_refused() {
    let mut bytes = guest_bytes();
    bytes[54..56].copy_from_slice(&40u16.to_le_bytes()); // e_phentsize
    let e = binary_error(load(bytes));
    assert!(matches!(e, GuestBinaryError::NotElf(_)), "{e:?}");
}

#[test]
fn program_headers_outside_the_file_are_refused() {
    let mut bytes = guest_bytes();
    let len = bytes.len() as u64;
    bytes[32..40].copy_from_slice(&(len - 8).to_le_bytes()); // e_phoff
    let e = binary_error(load(bytes));
    assert!(matches!(e, GuestBinaryError::NotElf(_)), "{e:?}");
}

#[test]
fn static_slices_boot_like_buffers() {
    // What `include_bytes!` gives a host crate: a slice that lives forever.
    let elf: &'static [u8] = Vec::leak(guest_bytes());
    nub_tests::require_kvm();
    for _ in 0..2 {
        // The second sandbox finds the image the first one cached.
        let mut s = UninitializedSandbox::new(GuestBinary::Static(elf), None)
            .unwrap()
            .evolve()
            .unwrap();
        assert_eq!(s.call_raw(1, b"static").unwrap(), b"static");
    }
    let prepared = nub_sandbox::PreparedGuest::new(GuestBinary::Static(elf)).unwrap();
    let mut s = UninitializedSandbox::new(GuestBinary::Prepared(prepared), None)
        .unwrap()
        .evolve()
        .unwrap();
    assert_eq!(s.call_raw(1, b"prepared").unwrap(), b"prepared");
    let junk: &'static [u8] = b"not an ELF";
    let e = binary_error(UninitializedSandbox::new(GuestBinary::Static(junk), None));
    assert!(matches!(e, GuestBinaryError::NotElf(_)), "{e:?}");
}
