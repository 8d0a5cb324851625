//! `Vm::reset`: a VM built from a prepared image, dirtied by its guest
//! (memory, general and SIMD registers, FS/GS base, flags), then reset,
//! shows nothing of it to the next run: it starts from the image's entry
//! again with a fresh vCPU.

use std::sync::Arc;

use nub_host_common::layout::{Access, PAGE_SIZE, Region};
use nub_hypervisor::{
    HypervisorError, Mapping, PreparedImage, VcpuInterrupt, Vm, VmExit, VmSetup,
    interrupt::CancelReason,
};

const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const MEMORY: u64 = 4 << 20;
/// The port the test guest reports through.
const PORT: u16 = 0xE1;
/// What the guest writes everywhere it can.
const SECRET: u64 = 0x0000_5EC2_E75E_C2E7; // canonical: FS/GS base take it

// The test guest, at CPL 3. Phase 1 reports (one `out` per 32 bits) what
// it finds: xmm0, xmm15, ymm15's upper half, zmm31 (low 64 bits), FS base,
// GS base, the data page's first word, RFLAGS, RBX, R15, MXCSR, the x87
// control word and the FS selector. Phase 2 writes SECRET into all of
// them (RFLAGS: AC; FS: the null selector), then reports 0xD0AE and spins.
core::arch::global_asm!(
    ".pushsection .rodata.nub_reset_guest, \"a\"",
    ".global nub_reset_guest_start",
    "nub_reset_guest_start:",
    "movq rax, xmm0",
    "call 2f",
    "movq rax, xmm15",
    "call 2f",
    "vextracti128 xmm1, ymm15, 1",
    "movq rax, xmm1",
    "call 2f",
    "vmovq rax, xmm31",
    "call 2f",
    "rdfsbase rax",
    "call 2f",
    "rdgsbase rax",
    "call 2f",
    "mov rax, qword ptr [{data}]",
    "call 2f",
    "pushfq",
    "pop rax",
    "call 2f",
    "mov rax, rbx",
    "call 2f",
    "mov rax, r15",
    "call 2f",
    "stmxcsr dword ptr [{data} + 8]",
    "mov eax, dword ptr [{data} + 8]",
    "call 2f",
    "fnstcw word ptr [{data} + 16]",
    "movzx eax, word ptr [{data} + 16]",
    "call 2f",
    "mov ax, fs",
    "movzx eax, ax",
    "call 2f",
    // Phase 2: taint.
    "mov rax, {secret}",
    "movq xmm0, rax",
    "movq xmm15, rax",
    "vpbroadcastq ymm15, xmm15",
    "vpbroadcastq zmm31, rax",
    "wrfsbase rax",
    "wrgsbase rax",
    "mov rbx, rax",
    "mov r15, rax",
    "mov qword ptr [{data}], rax",
    "mov dword ptr [{data} + 8], 0x1fa0",
    "ldmxcsr dword ptr [{data} + 8]",
    "mov word ptr [{data} + 16], 0x27f",
    "fldcw word ptr [{data} + 16]",
    "mov rcx, rax",
    "xor eax, eax",
    "mov fs, ax",
    "pushfq",
    "or qword ptr [rsp], 0x40000",
    "popfq",
    "mov eax, 0xD0AE",
    "3:",
    "out {port}, eax",
    "jmp 3b",
    // Reports rax: low half, then high half.
    "2:",
    "out {port}, eax",
    "shr rax, 32",
    "out {port}, eax",
    "ret",
    ".global nub_reset_guest_end",
    "nub_reset_guest_end:",
    ".popsection",
    data = const DATA,
    secret = const SECRET,
    port = const PORT,
);

unsafe extern "C" {
    static nub_reset_guest_start: u8;
    static nub_reset_guest_end: u8;
}

fn guest_code() -> &'static [u8] {
    let start = &raw const nub_reset_guest_start;
    let end = &raw const nub_reset_guest_end;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: both symbols delimit one block in the read-only section
    // emitted above, which lives for the whole program.
    unsafe { std::slice::from_raw_parts(start, len) }
}

/// Values the guest reports in phase 1.
const REPORTED: usize = 13;

fn build_image(code: &[u8]) -> Arc<PreparedImage> {
    let mappings = [
        Mapping {
            region: Region {
                start: CODE,
                size: PAGE_SIZE,
            },
            access: Access::ReadExecute,
        },
        Mapping {
            region: Region {
                start: DATA,
                size: 2 * PAGE_SIZE,
            },
            access: Access::ReadWrite,
        },
    ];
    let setup = VmSetup {
        mappings: &mappings,
        entry: CODE,
        stack_pointer: DATA + 2 * PAGE_SIZE,
        ist_stack_top: DATA + 2 * PAGE_SIZE,
        boot_info: 0x1000,
        user_mode: true,
    };
    Arc::new(PreparedImage::build(MEMORY, &setup, |m| m.write(CODE, code)).unwrap())
}

fn next_out(vm: &mut Vm) -> u32 {
    match vm.run().unwrap() {
        VmExit::IoOut { port: PORT, value } => value,
        other => panic!("unexpected exit {other:?} (a fault: the CPU lacks an instruction?)"),
    }
}

/// Runs phase 1: what the guest finds.
fn report(vm: &mut Vm) -> [u64; REPORTED] {
    let mut values = [0u64; REPORTED];
    for v in &mut values {
        let low = u64::from(next_out(vm));
        let high = u64::from(next_out(vm));
        *v = low | high << 32;
    }
    values
}

/// Runs phase 2: the guest taints everything and says so.
fn taint(vm: &mut Vm) {
    assert_eq!(next_out(vm), 0xD0AE);
}

fn assert_clean(values: &[u64; REPORTED], fresh: &[u64; REPORTED]) {
    assert_eq!(values, fresh, "a reset VM reports what a fresh one does");
    for (i, v) in values.iter().enumerate() {
        assert_ne!(*v, SECRET, "value {i} kept the secret");
    }
}

#[test]
fn a_reset_vm_shows_nothing_of_the_guest_before() {
    let image = build_image(guest_code());
    let mut fresh_vm = Vm::from_image(&image, Arc::new(VcpuInterrupt::new())).unwrap();
    let fresh = report(&mut fresh_vm);
    assert_eq!(fresh[6], 0, "the data page starts zeroed");
    assert_eq!(fresh[10], 0x1f80, "MXCSR's reset value");
    assert_eq!(fresh[11], 0x37f, "the x87 control word's reset value");

    let mut vm = Vm::from_image(&image, Arc::new(VcpuInterrupt::new())).unwrap();
    for round in 0..3 {
        assert_clean(&report(&mut vm), &fresh);
        taint(&mut vm);
        let mut word = [0u8; 8];
        vm.memory().read(DATA, &mut word).unwrap();
        assert_eq!(u64::from_le_bytes(word), SECRET, "round {round}: tainted");
        assert!(vm.is_resettable());
        vm.reset(&image).unwrap();
        assert_eq!(vm.exit_count(), 0);
        vm.memory().read(DATA, &mut word).unwrap();
        assert_eq!(word, [0; 8], "round {round}: memory is the image again");
    }
    assert_clean(&report(&mut vm), &fresh);
}

#[test]
fn a_vm_reset_to_another_image_runs_that_image() {
    let tainting = build_image(guest_code());
    // Another image of the same size: `out 0xE1, eax` with eax = 0x77.
    let other = build_image(&[0xb8, 0x77, 0, 0, 0, 0xe7, 0xe1, 0xeb, 0xfe]);
    let mut vm = Vm::from_image(&tainting, Arc::new(VcpuInterrupt::new())).unwrap();
    let fresh = report(&mut vm);
    taint(&mut vm);
    vm.reset(&other).unwrap();
    assert!(Arc::ptr_eq(vm.image().unwrap(), &other));
    assert_eq!(next_out(&mut vm), 0x77);
    let mut page = vec![0u8; PAGE_SIZE as usize];
    vm.memory().read(DATA, &mut page).unwrap();
    assert!(
        page.iter().all(|&b| b == 0),
        "the data page is the other image's"
    );
    // And back: the tainting image from its start, clean.
    vm.reset(&tainting).unwrap();
    assert_clean(&report(&mut vm), &fresh);
}

#[test]
fn a_killed_vm_resets_and_only_the_new_interrupt_state_reaches_it() {
    let image = build_image(guest_code());
    let mut vm = Vm::from_image(&image, Arc::new(VcpuInterrupt::new())).unwrap();
    let fresh = report(&mut vm);
    taint(&mut vm);
    // Kill the spinning guest from another thread.
    let old = Arc::clone(vm.interrupt());
    let (guard, _) = vm.begin_call();
    let killer = std::thread::spawn(move || {
        while !old.kill() {
            std::thread::yield_now();
        }
        old
    });
    let result = loop {
        match vm.run() {
            Ok(VmExit::IoOut { port: PORT, .. }) => continue,
            other => break other,
        }
    };
    assert!(matches!(
        result,
        Err(HypervisorError::Canceled(CancelReason::Killed))
    ));
    drop(guard);
    let old = killer.join().unwrap();
    assert!(vm.is_resettable(), "a kill leaves the vCPU resettable");
    vm.reset(&image).unwrap();
    vm.replace_interrupt(Arc::new(VcpuInterrupt::new()));
    assert!(old.dropped(), "the old state is inert");
    let (_guard, _) = vm.begin_call();
    assert!(!old.kill(), "an old handle does not reach the reset VM");
    assert_clean(&report(&mut vm), &fresh);
}

#[test]
fn an_exit_other_than_out_makes_the_vm_unresettable() {
    // `in al, 0xE1` (port I/O in: KVM would complete it on the next run).
    let image = build_image(&[0xe4, 0xe1, 0xeb, 0xfe]);
    let mut vm = Vm::from_image(&image, Arc::new(VcpuInterrupt::new())).unwrap();
    assert_eq!(vm.run().unwrap(), VmExit::IoIn { port: 0xE1 });
    assert!(!vm.is_resettable());
    assert!(matches!(
        vm.reset(&image),
        Err(HypervisorError::NotResettable(_))
    ));
}

#[test]
fn a_shared_memory_is_not_reset() {
    let image = build_image(guest_code());
    let mut vm = Vm::from_image(&image, Arc::new(VcpuInterrupt::new())).unwrap();
    let other_holder = Arc::clone(vm.memory());
    assert!(matches!(
        vm.reset(&image),
        Err(HypervisorError::NotResettable(_))
    ));
    drop(other_holder);
    assert!(!vm.is_resettable(), "a failed reset retires the VM");
}
