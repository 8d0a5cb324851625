//! `Vm::user_registers` and `PreparedImage::build_resumed`: a guest
//! stopped at an `out` is captured (its registers, after the `out`
//! completes) and a VM of an image built with them continues the guest
//! exactly where it stopped, while RFLAGS from the image keeps only the
//! status bits.

use std::sync::Arc;

use nub_host_common::layout::{Access, PAGE_SIZE, Region, USER_RFLAGS};
use nub_hypervisor::{Mapping, PreparedImage, UserRegisters, VcpuInterrupt, Vm, VmExit, VmSetup};

const CODE: u64 = 0x10_0000;
const STACK: u64 = 0x20_0000;
const MEMORY: u64 = 4 << 20;
const PORT: u16 = 0xE1;

/// A CPL 3 loop: `inc rbx; mov eax, ebx; out 0xE1, eax; jmp` back, so
/// every exit reports one more than the last.
const LOOP: [u8; 9] = [
    0x48, 0xFF, 0xC3, // inc rbx
    0x89, 0xD8, // mov eax, ebx
    0xE7, 0xE1, // out 0xE1, eax
    0xEB, 0xF7, // jmp -9
];

fn image(resume: Option<UserRegisters>) -> Arc<PreparedImage> {
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
                start: STACK - PAGE_SIZE,
                size: PAGE_SIZE,
            },
            access: Access::ReadWrite,
        },
    ];
    let setup = VmSetup {
        mappings: &mappings,
        entry: CODE,
        stack_pointer: STACK,
        ist_stack_top: STACK,
        boot_info: 0x1000,
        user_mode: true,
    };
    let built = PreparedImage::build_resumed(MEMORY, &setup, resume, |m| m.write(CODE, &LOOP));
    Arc::new(built.unwrap())
}

fn next_out(vm: &mut Vm) -> u32 {
    match vm.run().unwrap() {
        VmExit::IoOut { port: PORT, value } => value,
        other => panic!("unexpected exit {other:?}"),
    }
}

#[test]
fn a_resumed_vm_continues_where_the_captured_one_stopped() {
    let boot = image(None);
    let mut vm = Vm::from_image(&boot, Arc::new(VcpuInterrupt::new())).unwrap();
    assert_eq!(next_out(&mut vm), 1);
    assert_eq!(next_out(&mut vm), 2);
    let regs = vm.user_registers().unwrap();
    assert_eq!(regs.rbx, 2);
    assert_eq!(regs.rip, CODE + 7, "past the out, at the jmp");
    assert_eq!(regs.rsp, STACK);
    // The captured VM itself goes on unchanged.
    assert_eq!(next_out(&mut vm), 3);

    let resumed = image(Some(regs));
    for _ in 0..2 {
        let mut vm = Vm::from_image(&resumed, Arc::new(VcpuInterrupt::new())).unwrap();
        assert_eq!(next_out(&mut vm), 3, "the resumed guest counts on from 2");
        assert_eq!(next_out(&mut vm), 4);
    }
    // A VM reset to the resumed image resumes again; reset to the boot
    // image it starts over.
    let mut vm = Vm::from_image(&resumed, Arc::new(VcpuInterrupt::new())).unwrap();
    assert_eq!(next_out(&mut vm), 3);
    vm.reset(&resumed).unwrap();
    assert_eq!(next_out(&mut vm), 3);
    vm.reset(&boot).unwrap();
    assert_eq!(next_out(&mut vm), 1);
}

#[test]
fn resumed_rflags_keep_only_status_bits() {
    let boot = image(None);
    let mut vm = Vm::from_image(&boot, Arc::new(VcpuInterrupt::new())).unwrap();
    next_out(&mut vm);
    let mut regs = vm.user_registers().unwrap();
    // TF, IF, IOPL 3, AC and the carry flag: only CF survives.
    regs.rflags = 0x100 | 0x200 | 0x3000 | 0x4_0000 | 0x1;
    let resumed = image(Some(regs));
    let mut vm = Vm::from_image(&resumed, Arc::new(VcpuInterrupt::new())).unwrap();
    // A trap flag would stop at the first instruction with a #DB; IOPL 3
    // would not matter for `out` here, but is cleared all the same.
    assert_eq!(next_out(&mut vm), 2);
    let after = vm.user_registers().unwrap();
    assert_eq!(after.rflags & !0xCD5, USER_RFLAGS);
}
