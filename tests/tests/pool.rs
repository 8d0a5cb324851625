//! The VM pool (`nub_sandbox::pool`): a dropped sandbox's VM is reset and
//! reused by the next sandbox, and the next guest finds nothing of the one
//! before — not in any page of guest memory, not in its SIMD, x87 or
//! segment registers — whether the old sandbox ended cleanly, faulted, was
//! killed or timed out. Old interrupt handles never reach the reused VM;
//! a VM whose state is uncertain is destroyed, never pooled.
//!
//! Sandboxes started from a persisted image (`MultiUseSandbox::from_image`)
//! share the pool with ELF-booted ones: a VM goes from one kind to the
//! other, or back to its own image, with the same guarantee.
//!
//! The default guest's fn 13 (`taint`) leaves a secret everywhere a guest
//! can and reports the registers a call finds. Every test runs in both
//! call modes (`NUB_TEST_CALL_MODE`).

use std::time::Duration;

use nub_sandbox::{
    HyperlightError, InterruptHandle, MultiUseSandbox, Registerable, SandboxConfiguration,
    SandboxImage, pool,
};
use nub_tests::{fn_id, hostile_fn_id, in_call_mode, sandbox_with, uninit};

/// What the tainting guest writes everywhere.
const SECRET: u64 = 0x5EC2_E75E_C2E7_5EC2;

/// The secret as the guest writes it into FS/GS base (made canonical).
const SECRET_BASE: u64 = SECRET & 0x0000_7FFF_FFFF_FFF0;

/// Register groups of `taint` (report selector; taint = selector + 10):
/// SSE/x87, AVX, AVX-512, FS/GS base, segments and RFLAGS.
const GROUPS: [u8; 5] = [0, 1, 2, 3, 4];

/// The memory taint selector.
const TAINT_MEMORY: u8 = 15;

fn cfg() -> SandboxConfiguration {
    in_call_mode(None)
}

/// The register groups a guest can reach on this machine: a report that
/// faults with #UD means the CPU (or the VM) does not run those
/// instructions, so the guest cannot dirty that state either.
fn reachable_groups() -> Vec<u8> {
    GROUPS
        .into_iter()
        .filter(|&group| {
            let mut s = sandbox_with(cfg().with_vm_pool(false));
            match s.call_raw(fn_id::TAINT, &[group]) {
                Ok(_) => true,
                Err(HyperlightError::GuestFault { vector: 6, .. }) => {
                    eprintln!("register group {group}: #UD, out of the guest's reach");
                    false
                }
                Err(e) => panic!("register group {group}: {e:?}"),
            }
        })
        .collect()
}

/// The registers a call finds, group by group.
fn registers(s: &mut MultiUseSandbox, groups: &[u8]) -> Vec<Vec<u8>> {
    groups
        .iter()
        .map(|&g| s.call_raw(fn_id::TAINT, &[g]).expect("report registers"))
        .collect()
}

/// Leaves [`SECRET`] in every reachable register group and every page the
/// guest can spare, and checks it took.
fn taint_everything(s: &mut MultiUseSandbox, groups: &[u8]) {
    let with_secret = |selector: u8| {
        let mut p = vec![selector];
        p.extend_from_slice(&SECRET.to_le_bytes());
        p
    };
    let written = s
        .call_raw(fn_id::TAINT, &with_secret(TAINT_MEMORY))
        .expect("taint memory");
    let written = u64::from_le_bytes(written.try_into().expect("a u64"));
    assert!(written > 512 << 10, "only {written} bytes tainted");
    // Every word written, but for the few the heap allocator reuses as
    // its free list's links when the guest frees its hoard.
    let seen = count(&guest_memory(s), SECRET) as u64;
    assert!(
        seen >= written / 8 - written / 4096 * 4,
        "the host sees {seen} of the {} tainted words",
        written / 8
    );
    // Segments first: loading a null FS or GS may clear its base (AMD).
    for g in groups.iter().rev() {
        s.call_raw(fn_id::TAINT, &with_secret(g + 10))
            .expect("taint registers");
    }
    for (g, report) in groups.iter().zip(registers(s, groups)) {
        let tainted = match g {
            3 => contains(&report, SECRET_BASE),
            // Segments: null FS and GS.
            4 => report.get(..4) == Some(&[0, 0, 0, 0]),
            _ => contains(&report, SECRET),
        };
        assert!(tainted, "group {g}: the taint did not take: {report:02x?}");
    }
    // The calls since overwrote a little of it (stack, rings), not more.
    assert!(
        count(&guest_memory(s), SECRET) as u64 >= written / 16,
        "the tainted pages stay tainted"
    );
}

/// Every byte of guest memory, as the host sees it.
fn guest_memory(s: &MultiUseSandbox) -> Vec<u8> {
    let mut memory = vec![0u8; s.layout().memory_size as usize];
    s.read_guest_memory(0, &mut memory)
        .expect("read guest memory");
    memory
}

/// Occurrences of `value` (8 bytes LE) at any byte offset.
fn count(bytes: &[u8], value: u64) -> usize {
    let needle = value.to_le_bytes();
    bytes.windows(8).filter(|w| *w == needle).count()
}

fn contains(bytes: &[u8], value: u64) -> bool {
    count(bytes, value) > 0
}

/// Guest memory with the bytes that legitimately differ between two runs
/// of the same calls zeroed: in resident mode, the stack (the guest's spin
/// loops leave counters there) and the control block's words (timing).
fn comparable(s: &MultiUseSandbox) -> Vec<u8> {
    let mut memory = guest_memory(s);
    if !nub_tests::exits_count_runs() {
        let layout = s.layout();
        for region in [layout.stack, layout.control] {
            let range = region.start as usize..region.end() as usize;
            if let Some(bytes) = memory.get_mut(range) {
                bytes.fill(0);
            }
        }
    }
    memory
}

/// Asserts that `recycled` (from the pool) is indistinguishable from
/// `fresh` (a new VM) after the same calls, and holds no secret.
fn assert_clean(recycled: &mut MultiUseSandbox, fresh: &mut MultiUseSandbox, groups: &[u8]) {
    assert!(recycled.is_recycled(), "the VM came from the pool");
    assert!(!fresh.is_recycled());
    let (got, want) = (registers(recycled, groups), registers(fresh, groups));
    for ((g, got), want) in groups.iter().zip(&got).zip(&want) {
        assert!(
            !contains(got, SECRET) && !contains(got, SECRET_BASE),
            "group {g} kept the secret"
        );
        assert_eq!(got, want, "group {g}: what a recycled VM's guest finds");
    }
    let memory = guest_memory(recycled);
    assert_eq!(
        count(&memory, SECRET),
        0,
        "the secret survived in guest memory"
    );
    let (got, want) = (comparable(recycled), comparable(fresh));
    let differing: Vec<usize> = got
        .chunks(4096)
        .zip(want.chunks(4096))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(page, _)| page)
        .collect();
    assert!(
        differing.is_empty(),
        "pages differing from a fresh VM's: {differing:x?}"
    );
}

/// A sandbox that tainted everything and then ended as `end` says.
fn tainted_then(end: impl FnOnce(&mut MultiUseSandbox), cfg: SandboxConfiguration, groups: &[u8]) {
    let mut s = sandbox_with(cfg);
    taint_everything(&mut s, groups);
    end(&mut s);
}

/// The next sandbox of `cfg` after a tainted one ended as `end` and was
/// dropped: from the pool, clean, working.
fn check_recycled_after(end: impl FnOnce(&mut MultiUseSandbox), cfg: SandboxConfiguration) {
    let groups = reachable_groups();
    tainted_then(end, cfg, &groups);
    let mut recycled = sandbox_with(cfg);
    let mut fresh = sandbox_with(cfg.with_vm_pool(false));
    assert_clean(&mut recycled, &mut fresh, &groups);
    assert_eq!(recycled.call_raw(fn_id::ECHO, b"works").unwrap(), b"works");
}

#[test]
fn a_recycled_vm_shows_nothing_of_the_guest_before() {
    check_recycled_after(|_| {}, cfg());
}

#[test]
fn a_recycled_vm_shows_nothing_of_a_small_working_set() {
    // A few dirty pages (the reset copies the image back into them, where
    // the full taint above makes it discard them): the counter in the data
    // segment, the rings, the stack, and every reachable register group.
    let groups = reachable_groups();
    let mut s = sandbox_with(cfg());
    s.call_raw(fn_id::ADD, &SECRET.to_le_bytes()).unwrap();
    let echoed = s
        .call_raw(fn_id::ECHO, &[SECRET.to_le_bytes(); 64].concat())
        .unwrap();
    assert!(contains(&echoed, SECRET));
    for g in groups.iter().rev() {
        let mut p = vec![g + 10];
        p.extend_from_slice(&SECRET.to_le_bytes());
        s.call_raw(fn_id::TAINT, &p).unwrap();
    }
    assert!(contains(&guest_memory(&s), SECRET));
    drop(s);
    let mut recycled = sandbox_with(cfg());
    let mut fresh = sandbox_with(cfg().with_vm_pool(false));
    assert_clean(&mut recycled, &mut fresh, &groups);
    // The counter starts from zero again.
    assert_eq!(
        recycled.call_raw(fn_id::ADD, &1u64.to_le_bytes()).unwrap(),
        1u64.to_le_bytes()
    );
}

#[test]
fn a_vm_is_recycled_after_a_fault() {
    check_recycled_after(
        |s| {
            let err = s.call_raw(fn_id::FAULT, &[0]).unwrap_err();
            assert!(
                matches!(err, HyperlightError::GuestFault { vector: 14, .. }),
                "{err:?}"
            );
        },
        cfg(),
    );
}

#[test]
fn a_vm_is_recycled_after_a_kill() {
    check_recycled_after(
        |s| {
            let handle = s.interrupt_handle();
            let killer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                while !handle.kill() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            let err = s.call_raw(fn_id::SPIN, b"").unwrap_err();
            killer.join().unwrap();
            assert!(matches!(err, HyperlightError::Canceled), "{err:?}");
        },
        cfg(),
    );
}

#[test]
fn a_vm_is_recycled_after_the_guest_turned_alignment_checks_on() {
    // Under kvm_pvm the guest runs with the host's CR0.AM: RFLAGS.AC turns
    // alignment checks on, and the kernel's next misaligned access faults.
    check_recycled_after(
        |s| match s.call_raw(fn_id::TAINT, &[16, 0, 0, 0, 0, 0, 0, 0, 0]) {
            Ok(_) | Err(HyperlightError::GuestFault { vector: 17, .. }) => {}
            Err(e) => panic!("{e:?}"),
        },
        cfg(),
    );
}

#[test]
fn a_vm_is_recycled_after_a_timeout() {
    // The deadline is not part of the image: the same image, the same VM.
    let cfg = cfg().with_max_execution_time(Some(Duration::from_millis(50)));
    check_recycled_after(
        |s| {
            let err = s.call_raw(fn_id::SPIN, b"").unwrap_err();
            assert!(
                matches!(err, HyperlightError::ExecutionTimeout(_)),
                "{err:?}"
            );
        },
        cfg,
    );
}

#[test]
fn a_vm_is_recycled_after_a_failed_boot() {
    // The hostile guest's init loops when its host function says so; the
    // boot deadline stops it, and the VM goes back to the pool.
    let cfg = cfg().with_max_boot_time(Some(Duration::from_millis(50)));
    let mut spinning = nub_tests::hostile_uninit(Some(cfg));
    spinning
        .register_host_function(hostile_fn_id::INIT_HOST_FN, |_| Ok(b"spin".to_vec()))
        .unwrap();
    let err = spinning.evolve().unwrap_err();
    assert!(
        matches!(err, HyperlightError::ExecutionTimeout(_)),
        "{err:?}"
    );
    // The next sandbox of the same memory size reuses that VM (reset to its
    // own image) and boots normally.
    let mut next = nub_tests::hostile_uninit(Some(cfg));
    next.register_host_function(hostile_fn_id::INIT_HOST_FN, |_| Ok(Vec::new()))
        .unwrap();
    let mut next = next.evolve().unwrap();
    assert!(next.is_recycled());
    assert_eq!(next.call_raw(hostile_fn_id::ECHO, b"ok").unwrap(), b"ok");
}

#[test]
fn an_image_of_another_configuration_with_the_same_memory_size_reuses_the_vm() {
    let groups = reachable_groups();
    tainted_then(|_| {}, cfg(), &groups);
    // Another log level: another image of the same size (a remap).
    let other = cfg().with_guest_log_level(log::LevelFilter::Warn);
    let mut recycled = sandbox_with(other);
    let mut fresh = sandbox_with(other.with_vm_pool(false));
    assert_clean(&mut recycled, &mut fresh, &groups);
    // Another memory size cannot use it.
    let bigger = cfg().with_heap_size(4 << 20);
    assert!(!sandbox_with(bigger).is_recycled());
}

/// An image of a default-guest sandbox whose counter is at 3, captured on
/// a VM that never enters the pool.
fn counter_image() -> std::sync::Arc<SandboxImage> {
    let mut s = sandbox_with(cfg().with_vm_pool(false));
    s.call_raw(fn_id::ADD, &3u64.to_le_bytes()).unwrap();
    s.capture_image().unwrap()
}

/// The counter after adding 1: 4 for a sandbox from [`counter_image`].
fn next_count(s: &mut MultiUseSandbox) -> u64 {
    let out = s.call_raw(fn_id::ADD, &1u64.to_le_bytes()).unwrap();
    u64::from_le_bytes(out.try_into().unwrap())
}

#[test]
fn an_image_loaded_on_a_vm_an_elf_booted_guest_tainted_shows_nothing_of_it() {
    let groups = reachable_groups();
    let image = counter_image();
    tainted_then(|_| {}, cfg(), &groups);
    let mut recycled = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    let mut fresh = MultiUseSandbox::from_image(&image, Some(cfg().with_vm_pool(false))).unwrap();
    assert_clean(&mut recycled, &mut fresh, &groups);
    assert_eq!(
        next_count(&mut recycled),
        4,
        "the image's state, not the taint"
    );
}

#[test]
fn an_elf_booted_guest_on_a_vm_an_image_loaded_guest_tainted_shows_nothing_of_it() {
    let groups = reachable_groups();
    let image = counter_image();
    {
        let mut loaded = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
        taint_everything(&mut loaded, &groups);
    }
    let mut recycled = sandbox_with(cfg());
    let mut fresh = sandbox_with(cfg().with_vm_pool(false));
    assert_clean(&mut recycled, &mut fresh, &groups);
    assert_eq!(next_count(&mut recycled), 1, "a boot from zero");
}

#[test]
fn an_image_loaded_again_on_its_own_tainted_vm_shows_nothing_of_it() {
    let groups = reachable_groups();
    let image = counter_image();
    {
        let mut loaded = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
        taint_everything(&mut loaded, &groups);
        // Faulted, too: the pool still resets it.
        let err = loaded.call_raw(fn_id::FAULT, &[0]).unwrap_err();
        assert!(matches!(err, HyperlightError::GuestFault { .. }), "{err:?}");
    }
    let mut recycled = MultiUseSandbox::from_image(&image, Some(cfg())).unwrap();
    let mut fresh = MultiUseSandbox::from_image(&image, Some(cfg().with_vm_pool(false))).unwrap();
    assert_clean(&mut recycled, &mut fresh, &groups);
    assert_eq!(next_count(&mut recycled), 4);
}

#[test]
fn a_dropped_sandboxs_handle_never_reaches_the_recycled_vm() {
    let old = sandbox_with(cfg());
    let handle: InterruptHandle = old.interrupt_handle();
    drop(old);
    assert!(handle.dropped());
    // The new sandbox's host function kills through the old handle while
    // the new sandbox's call runs on the recycled VM.
    let mut next = uninit(None);
    let stale = handle.clone();
    next.register_host_function(100, move |_| Ok(vec![u8::from(stale.kill())]))
        .unwrap();
    let mut next = next.evolve().unwrap();
    assert!(next.is_recycled());
    let mut payload = 100u32.to_le_bytes().to_vec();
    payload.extend_from_slice(b"x");
    assert_eq!(
        next.call_raw(fn_id::HOST_ECHO, &payload).unwrap(),
        [0],
        "the old handle's kill found nothing running"
    );
    assert!(!next.is_poisoned());
    assert!(!handle.kill());
    // The new handle does stop it.
    let new = next.interrupt_handle();
    assert!(!new.dropped());
}

#[test]
fn a_vm_whose_state_is_uncertain_is_destroyed_not_pooled() {
    let cfg = cfg().with_max_execution_time(Some(nub_tests::HOSTILE_CALL_DEADLINE));
    let mut s = nub_tests::hostile_uninit(Some(cfg)).evolve().unwrap();
    // `in` from an exit port: KVM would complete the read on the next run.
    let record = [1u8, 4, 0xE1, 0, 0, 0, 0, 0];
    let err = s.call_raw(hostile_fn_id::PORT_IO, &record).unwrap_err();
    assert!(
        matches!(err, HyperlightError::UnexpectedPort { port: 0xE1, .. }),
        "{err:?}"
    );
    let before = pool::stats();
    drop(s);
    let after = pool::stats();
    assert_eq!(after.discarded, before.discarded + 1);
    assert_eq!(after.idle, before.idle, "not pooled");
    pool::wait_idle();
}

#[test]
fn opting_out_creates_and_destroys_every_vm() {
    let cfg = cfg().with_vm_pool(false);
    for _ in 0..3 {
        let mut s = sandbox_with(cfg);
        assert!(!s.is_recycled());
        assert_eq!(s.call_raw(fn_id::ECHO, b"x").unwrap(), b"x");
    }
    assert_eq!(pool::stats().idle, 0, "nothing was pooled");
}

#[test]
fn the_pool_keeps_at_most_its_capacity() {
    pool::set_capacity(2);
    let alive: Vec<MultiUseSandbox> = (0..4).map(|_| sandbox_with(cfg())).collect();
    let before = pool::stats();
    drop(alive);
    let after = pool::stats();
    assert_eq!(after.idle, 2);
    assert_eq!(after.discarded, before.discarded + 2);
    // Sandboxes built now take the pooled VMs, then new ones.
    let again: Vec<MultiUseSandbox> = (0..3).map(|_| sandbox_with(cfg())).collect();
    let recycled = again.iter().filter(|s| s.is_recycled()).count();
    assert_eq!(recycled, 2);
    drop(again);
    pool::set_capacity(0);
    assert_eq!(pool::stats().idle, 0, "capacity 0 empties the pool");
    assert!(!sandbox_with(cfg()).is_recycled());
    pool::wait_idle();
    pool::set_capacity(pool::DEFAULT_CAPACITY);
}

#[test]
fn sequential_sandboxes_reuse_one_vm() {
    // Warm up: one VM in the pool.
    drop(sandbox_with(cfg()));
    pool::wait_idle();
    let before = pool::stats();
    for i in 0..50u32 {
        let mut s = sandbox_with(cfg());
        assert!(s.is_recycled(), "sandbox {i}");
        assert_eq!(
            s.call_raw(fn_id::ECHO, &i.to_le_bytes()).unwrap(),
            i.to_le_bytes()
        );
    }
    let after = pool::stats();
    assert_eq!(after.created, before.created, "no VM was created");
    assert_eq!(after.reused, before.reused + 50);
}
