//! Persisted images (`nub_sandbox::persist`, docs/images.md): a sandbox
//! captured between calls and saved, then loaded into new sandboxes that
//! go on from the captured state, in memory and through a file. Files
//! that are corrupted, truncated, of another version or layout are typed
//! errors and nothing runs; a failure in a loaded sandbox poisons only it.
//! Every test runs in both call modes (`NUB_TEST_CALL_MODE`).

use std::sync::Arc;

use nub_sandbox::{
    CallMode, HyperlightError, ImageError, MultiUseSandbox, Registerable, SandboxConfiguration,
    SandboxImage, javm_cap::Cap, persist::format::HEADER_SIZE,
};
use nub_tests::{fn_id, in_call_mode, sandbox_with};

fn cfg() -> SandboxConfiguration {
    in_call_mode(None)
}

/// Adds `n` to the default guest's counter (fn 2) and returns it.
fn add(s: &mut MultiUseSandbox, n: u64) -> u64 {
    let out = s.call_raw(fn_id::ADD, &n.to_le_bytes()).expect("add");
    u64::from_le_bytes(out.try_into().expect("8 bytes"))
}

/// A sandbox whose counter is at 5, captured.
fn counter_at_five() -> (MultiUseSandbox, Arc<SandboxImage>) {
    let mut s = sandbox_with(cfg());
    assert_eq!(add(&mut s, 5), 5);
    let image = s.capture_image().expect("capture");
    (s, image)
}

/// A temporary file path unique to this test process and `name`.
fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("nub-images-{}-{name}.img", std::process::id()))
}

#[test]
fn state_goes_on_from_the_saved_value_in_every_loaded_sandbox() {
    let (mut original, image) = counter_at_five();
    let path = temp_path("counter");
    image.save(&path).expect("save");
    let loaded = SandboxImage::load(&path).expect("load");
    std::fs::remove_file(&path).ok();
    for round in 0..3 {
        let mut a = MultiUseSandbox::from_image(&loaded, Some(cfg())).expect("from image");
        let mut b = MultiUseSandbox::from_image(&loaded, Some(cfg())).expect("from image");
        assert_eq!(add(&mut a, 1), 6, "round {round}");
        assert_eq!(add(&mut b, 10), 15, "round {round}: b does not see a");
        assert_eq!(add(&mut a, 1), 7, "round {round}");
    }
    // The captured sandbox carries on, unchanged by the capture.
    assert_eq!(add(&mut original, 1), 6);
    assert_eq!(original.call_raw(fn_id::ECHO, b"still").unwrap(), b"still");
}

#[test]
fn save_image_writes_what_load_reads_and_the_file_is_not_needed_after() {
    let mut s = sandbox_with(cfg());
    add(&mut s, 41);
    let path = temp_path("save-image");
    s.save_image(&path).expect("save_image");
    let image = SandboxImage::load(&path).expect("load");
    // Overwritten after the load: the loaded image does not change.
    std::fs::write(&path, b"gone").unwrap();
    let mut loaded = MultiUseSandbox::from_image(&image, None).expect("from image");
    assert_eq!(add(&mut loaded, 1), 42);
    std::fs::remove_file(&path).ok();
    // Bytes round-trip exactly.
    let bytes = image.to_bytes().unwrap();
    assert_eq!(
        SandboxImage::from_bytes(&bytes)
            .unwrap()
            .to_bytes()
            .unwrap(),
        bytes
    );
}

#[test]
fn an_image_of_a_loaded_sandbox_carries_everything_again() {
    let (_, first) = counter_at_five();
    let mut loaded = MultiUseSandbox::from_image(&first, Some(cfg())).unwrap();
    assert_eq!(add(&mut loaded, 2), 7);
    let second = loaded.capture_image().unwrap();
    let reread = SandboxImage::from_bytes(&second.to_bytes().unwrap()).unwrap();
    let mut again = MultiUseSandbox::from_image(&reread, Some(cfg())).unwrap();
    assert_eq!(add(&mut again, 1), 8);
}

#[test]
fn caps_published_before_the_capture_are_in_the_loaded_directory() {
    let mut s = sandbox_with(cfg());
    let cap = Cap::inline(b"kept across the image".to_vec());
    let hash = s.put_cap(&cap).expect("put_cap");
    let image = s.capture_image().unwrap();
    let reread = SandboxImage::from_bytes(&image.to_bytes().unwrap()).unwrap();
    let mut loaded = MultiUseSandbox::from_image(&reread, Some(cfg())).unwrap();
    let exits = loaded.exit_count();
    {
        let reader = loaded.cache_reader().expect("reader");
        assert!(reader.contains(&hash), "the exit-free reader sees the cap");
    }
    assert_eq!(
        loaded.exit_count(),
        exits,
        "the directory address came with the image: no call to find it"
    );
    assert_eq!(loaded.get_cap(hash).unwrap(), Some(cap));
}

#[test]
fn host_functions_are_registered_after_the_load_and_required_ids_are_listed() {
    let mut u = nub_tests::uninit(Some(cfg()));
    u.register_host_function(100, |b: &[u8]| Ok(b.to_vec()))
        .unwrap();
    u.register_host_function(7, |b: &[u8]| Ok(b.to_vec()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    let image = s.capture_image().unwrap();
    assert_eq!(image.required_host_functions(), [7, 100]);
    let mut payload = 100u32.to_le_bytes().to_vec();
    payload.extend_from_slice(b"abc");
    // Not registered on the loaded sandbox: the existing typed error.
    let mut bare = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    let err = bare.call_raw(fn_id::HOST_ECHO, &payload).unwrap_err();
    assert!(
        matches!(err, HyperlightError::GuestFunctionError { .. }),
        "{err:?}"
    );
    let mut loaded = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    loaded
        .register_host_function(100, |b: &[u8]| Ok(b.to_ascii_uppercase()))
        .unwrap();
    assert_eq!(loaded.call_raw(fn_id::HOST_ECHO, &payload).unwrap(), b"ABC");
}

/// The image of `counter_at_five`, as bytes.
fn image_bytes() -> Vec<u8> {
    counter_at_five().1.to_bytes().unwrap()
}

fn load_err(bytes: &[u8]) -> ImageError {
    match SandboxImage::from_bytes(bytes) {
        Err(HyperlightError::Image(e)) => e,
        Err(other) => panic!("not an image error: {other:?}"),
        Ok(_) => panic!("a bad image loaded"),
    }
}

/// Rewrites the content digest after an edit, as a forger would (a
/// content that does not parse fails before its digest matters).
fn reseal(bytes: &mut [u8]) {
    let _ = nub_sandbox::persist::ImageFile::seal(bytes);
}

#[test]
fn corrupted_truncated_and_foreign_files_are_typed_errors() {
    let good = image_bytes();
    // A flipped byte in the pages.
    let mut bytes = good.clone();
    let last = bytes.len() - 100;
    bytes[last] ^= 0x40;
    assert!(matches!(load_err(&bytes), ImageError::Digest));
    // Truncated.
    assert!(matches!(
        load_err(&good[..good.len() / 2]),
        ImageError::Size { .. }
    ));
    assert!(matches!(
        load_err(&good[..20]),
        ImageError::HeaderTruncated { have: 20 }
    ));
    // Not an image at all.
    assert!(matches!(
        load_err(b"\x7fELF, not an image"),
        ImageError::BadMagic
    ));
    // Another format version.
    let mut bytes = good.clone();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(
        load_err(&bytes),
        ImageError::FormatVersion { file: 2, .. }
    ));
    // Another ABI version.
    let mut bytes = good.clone();
    bytes[12..16].copy_from_slice(&999u32.to_le_bytes());
    assert!(matches!(
        load_err(&bytes),
        ImageError::AbiVersion { file: 999, .. }
    ));
    // A byte of the ELF: the ELF digest covers those.
    let mut bytes = good.clone();
    let parsed = nub_sandbox::persist::ImageFile::parse(&good).unwrap();
    let elf_at = parsed.elf.as_ptr() as usize - good.as_ptr() as usize;
    bytes[elf_at + 1000] ^= 1;
    assert!(matches!(load_err(&bytes), ImageError::ElfDigest));
    // A missing file.
    let err = SandboxImage::load(temp_path("does-not-exist")).unwrap_err();
    assert!(matches!(err, HyperlightError::Image(ImageError::Io { .. })));
}

/// Offsets into the content (after the header) of the metadata fields the
/// forgeries below edit (docs/images.md has the table).
const ELF_SIZE: usize = HEADER_SIZE + 32;
const HEAP_SIZE: usize = ELF_SIZE + 8;
const MEMORY_SIZE: usize = HEAP_SIZE + 40;
/// Regions follow the memory size: image, input ring, output ring, log
/// buffer, control block, heap, IST stack, stack (start, size each).
const HEAP_START: usize = MEMORY_SIZE + 8 + 5 * 16;
const REGISTERS: usize = MEMORY_SIZE + 8 + 8 * 16 + 8 + 6 * 8 + 8;
/// RSP, RIP and RFLAGS among the registers (rax, rbx, rcx, rdx, rsi, rdi,
/// rsp, rbp, r8–r15, rip, rflags).
const RSP: usize = REGISTERS + 6 * 8;
const RIP: usize = REGISTERS + 16 * 8;
const RFLAGS: usize = REGISTERS + 17 * 8;

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn forged_layouts_and_registers_are_refused_by_name() {
    let good = image_bytes();
    // The sanity of the offsets above: the heap recorded is the layout's.
    let image = SandboxImage::from_bytes(&good).unwrap();
    assert_eq!(get_u64(&good, HEAP_START), image.layout().heap.start);
    assert_eq!(get_u64(&good, RIP), image.info().meta.registers.rip);

    let forged = |at: usize, value: u64| {
        let mut bytes = good.clone();
        put_u64(&mut bytes, at, value);
        reseal(&mut bytes);
        load_err(&bytes)
    };
    let heap_start = get_u64(&good, HEAP_START);
    assert!(matches!(
        forged(HEAP_START, heap_start + 0x1000),
        ImageError::Layout { what: "heap", .. }
    ));
    let memory = get_u64(&good, MEMORY_SIZE);
    assert!(matches!(
        forged(MEMORY_SIZE, memory * 2),
        ImageError::Layout {
            what: "memory size",
            ..
        }
    ));
    // A heap size the recorded layout does not fit.
    let heap = get_u64(&good, HEAP_SIZE);
    assert!(matches!(
        forged(HEAP_SIZE, heap * 2),
        ImageError::Layout { .. }
    ));
    // RIP into the boot page, RSP into the heap, RFLAGS with IF or IOPL.
    assert!(matches!(
        forged(RIP, 0x1000),
        ImageError::Register {
            register: "rip",
            ..
        }
    ));
    assert!(matches!(
        forged(RSP, heap_start),
        ImageError::Register {
            register: "rsp",
            ..
        }
    ));
    for rflags in [0x202, 0x3002, 0x102] {
        assert!(matches!(
            forged(RFLAGS, rflags),
            ImageError::Register {
                register: "rflags",
                ..
            }
        ));
    }
    // An ELF size that runs past the content.
    let elf = get_u64(&good, ELF_SIZE);
    assert!(matches!(
        forged(ELF_SIZE, elf + (1 << 20)),
        ImageError::Truncated { .. } | ImageError::TrailingBytes { .. }
    ));
}

#[test]
fn a_page_outside_writable_memory_is_refused() {
    let good = image_bytes();
    let parsed = nub_sandbox::persist::ImageFile::parse(&good).unwrap();
    // The first page number's offset: after the metadata and the (empty)
    // host function list.
    let numbers = HEADER_SIZE
        + (good.len()
            - HEADER_SIZE
            - parsed.elf.len().next_multiple_of(8)
            - parsed.pages.len()
            - parsed.page_numbers.len() * 8);
    assert_eq!(get_u64(&good, numbers), parsed.page_numbers[0]);
    // Page 3 holds the exception handlers; the page tables follow.
    for page in [0u64, 3, 4] {
        let mut bytes = good.clone();
        put_u64(&mut bytes, numbers, page);
        reseal(&mut bytes);
        let err = load_err(&bytes);
        assert!(
            matches!(err, ImageError::PageOutsideWritable { gpa } if gpa == page * 4096),
            "page {page}: {err:?}"
        );
    }
}

#[test]
fn a_fault_or_kill_in_a_loaded_sandbox_poisons_only_it() {
    let (_, image) = counter_at_five();
    let mut faulty = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    let err = faulty.call_raw(fn_id::FAULT, &[2]).unwrap_err(); // ud2
    assert!(matches!(err, HyperlightError::GuestFault { vector: 6, .. }));
    assert!(faulty.is_poisoned());
    assert!(matches!(
        faulty.capture_image(),
        Err(HyperlightError::PoisonedSandbox)
    ));

    let mut killed = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    let handle = killed.interrupt_handle();
    let killer = std::thread::spawn(move || {
        while !handle.kill() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let err = killed.call_raw(fn_id::SPIN, b"").unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
    assert!(killed.is_poisoned());

    let mut fresh = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    assert_eq!(add(&mut fresh, 1), 6);
}

#[test]
fn the_call_mode_must_be_the_images_and_runtime_settings_are_the_callers() {
    let (_, image) = counter_at_five();
    let other = match cfg().call_mode {
        CallMode::Exit => CallMode::resident(),
        CallMode::Resident { .. } => CallMode::Exit,
    };
    let err = MultiUseSandbox::from_image(&image, Some(cfg().with_call_mode(other))).unwrap_err();
    assert!(
        matches!(err, HyperlightError::Image(ImageError::CallMode { .. })),
        "{err:?}"
    );
    // Sizes are the image's whatever the configuration says; the deadline
    // is the caller's.
    let wanted = cfg()
        .with_heap_size(8 << 20)
        .with_max_execution_time(Some(std::time::Duration::from_millis(50)));
    let mut s = MultiUseSandbox::from_image(&image, Some(wanted)).unwrap();
    assert_eq!(s.layout(), image.layout());
    let err = s.call_raw(fn_id::SPIN, b"").unwrap_err();
    assert!(
        matches!(err, HyperlightError::ExecutionTimeout(_)),
        "{err:?}"
    );
}

/// Set in the child process of the test below: the image file it loads.
const CHILD_IMAGE: &str = "NUB_TEST_IMAGE_CHILD";

/// `(Rss, Anonymous)` of this process in KiB, from `/proc/self/smaps_rollup`.
fn rss_and_anon() -> (u64, u64) {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").expect("smaps_rollup");
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a smaps_rollup field")
    };
    (field("Rss:"), field("Anonymous:"))
}

/// In the child: loads the image, starts a sandbox from it and calls it,
/// and prints `(Rss, Anonymous)` before, after the load and after the call.
fn child_measures(path: &str) {
    let before = rss_and_anon();
    let image = SandboxImage::load(path).expect("child: load");
    let loaded = rss_and_anon();
    let mut s = MultiUseSandbox::from_image(&image, Some(cfg())).expect("child: from image");
    assert_eq!(add(&mut s, 1), 6);
    let called = rss_and_anon();
    println!(
        "nub-rss {} {} {} {} {} {}",
        before.0, before.1, loaded.0, loaded.1, called.0, called.1
    );
}

#[test]
fn a_second_process_loading_the_file_keeps_its_pages_out_of_its_resident_set() {
    if let Ok(path) = std::env::var(CHILD_IMAGE) {
        return child_measures(&path);
    }
    let mut s = sandbox_with(cfg());
    add(&mut s, 5);
    // Dirty the rings too: a file of a few hundred KiB of pages.
    s.call_raw(fn_id::ECHO, &vec![0xA5; 200 << 10]).unwrap();
    let path = temp_path("second-process");
    s.save_image(&path).unwrap();
    let image = SandboxImage::load(&path).unwrap();
    let page_kib = image.info().page_count as u64 * 4;
    let elf_kib = image.info().elf_size as u64 / 1024;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_second_process_loading_the_file_keeps_its_pages_out_of_its_resident_set",
            "--nocapture",
        ])
        .env(CHILD_IMAGE, &path)
        .output()
        .expect("run the child");
    std::fs::remove_file(&path).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("nub-rss "))
        .expect("the child's figures")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let [rss0, anon0, rss1, anon1, rss2, anon2] = figures[..] else {
        panic!("figures: {figures:?}");
    };
    let load_anon = anon1.saturating_sub(anon0);
    eprintln!(
        "image: {page_kib} KiB of pages, {elf_kib} KiB of ELF; a second process: RSS +{} KiB \
         (anonymous +{load_anon} KiB) for the load, RSS +{} KiB (anonymous +{} KiB) more for \
         a sandbox from it and one call",
        rss1.saturating_sub(rss0),
        rss2.saturating_sub(rss1),
        anon2.saturating_sub(anon1),
    );
    // The loaded pages live in a sealed memfd nothing maps until a guest
    // touches them; what a load keeps in the process's own memory is its
    // copy of the ELF, plus the allocator's own (docs/images.md, *Loading,
    // sharing and the pool*). A copy of the pages would add all of them.
    // (RSS also counts nub's code, faulted in by the first load.)
    assert!(
        load_anon <= elf_kib + page_kib / 2,
        "a load grew anonymous memory by {load_anon} KiB: the image's {page_kib} KiB of pages \
         are resident"
    );
}

#[test]
fn capturing_a_resident_guest_that_never_parks_ends_in_bounded_time() {
    use nub_tests::hostile_fn_id as h;
    // Resident whatever the run's mode: exit mode has no park to wait for.
    let cfg = SandboxConfiguration::default().with_call_mode(CallMode::resident());

    // A guest that published no directory address: the capture's one call
    // (asking for it), bounded even with no deadline configured, times
    // out; or the park watch stops the guest (a protocol violation), or
    // the capture's own wait for the park runs out. Either way nothing
    // was captured.
    let mut u = nub_tests::hostile_uninit(Some(cfg));
    u.register_host_function(h::INIT_HOST_FN, |_: &[u8]| Ok(b"hide directory".to_vec()))
        .unwrap();
    let mut s = u.evolve().unwrap();
    // Answers, then spins on for ever instead of parking.
    assert_eq!(s.call_raw(h::ANSWER_THEN_SPIN, b"").unwrap(), b"answered");
    let start = std::time::Instant::now();
    let err = s.capture_image().unwrap_err();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "the capture gave up in bounded time"
    );
    assert!(
        matches!(
            err,
            HyperlightError::ExecutionTimeout(_)
                | HyperlightError::ProtocolViolation(_)
                | HyperlightError::Image(ImageError::NotAtRest(_))
        ),
        "{err:?}"
    );
    assert!(s.is_poisoned(), "the failed capture poisoned it");

    // With the directory's address published at boot, the capture makes
    // no call. The caller may have run that call itself, leaving the VM
    // home at the guest's NOTIFY (mid-function): then that state is what
    // is captured, and a sandbox from it resumes the spin, which the park
    // watch stops. Otherwise the guest spins on its thread and never parks.
    let mut s = nub_tests::hostile_uninit(Some(cfg)).evolve().unwrap();
    assert_eq!(s.call_raw(h::ANSWER_THEN_SPIN, b"").unwrap(), b"answered");
    let start = std::time::Instant::now();
    match s.capture_image() {
        Err(err) => assert!(
            matches!(
                err,
                HyperlightError::ProtocolViolation(_)
                    | HyperlightError::Image(ImageError::NotAtRest(_))
            ),
            "{err:?}"
        ),
        Ok(image) => {
            let bounded = cfg.with_max_execution_time(Some(std::time::Duration::from_secs(1)));
            let mut loaded = MultiUseSandbox::from_image(&image, Some(bounded)).unwrap();
            let err = loaded.call_raw(h::ECHO, b"x").unwrap_err();
            assert!(err.poisons(), "{err:?}");
        }
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn an_image_of_a_guest_that_scribbled_over_its_memory_carries_it_all() {
    use nub_tests::hostile_fn_id as h;
    let mut s = nub_tests::hostile_uninit(Some(cfg())).evolve().unwrap();
    // The hostile guest writes a pattern over every page it can spare
    // (rings, heap, stack below its frame), then answers, still usable.
    s.call_raw(h::SCRIBBLE_EVERYTHING, &[0xA5]).unwrap();
    let image = SandboxImage::from_bytes(&s.capture_image().unwrap().to_bytes().unwrap()).unwrap();
    assert!(
        image.info().page_count as u64 * 4096 > image.layout().heap.size / 2,
        "the scribbled pages are carried: {} pages",
        image.info().page_count
    );
    let mut loaded = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    assert_eq!(
        loaded.call_raw(h::ECHO, b"still here").unwrap(),
        b"still here"
    );
    let mut scribbled = vec![0u8; 4096];
    let heap = image.layout().heap;
    loaded
        .read_guest_memory(heap.start + heap.size / 2, &mut scribbled)
        .unwrap();
    assert!(scribbled.contains(&0xA5), "the pattern survived the image");
}
