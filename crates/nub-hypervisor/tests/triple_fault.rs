//! A triple fault is a typed exit. Sandbox guests cannot cause one: they
//! run at CPL 3 behind the host's IDT (every exception vector present, #DF
//! on an always-mapped IST stack, the IDT/GDT/TSS read-only, `lidt` a #GP),
//! so the hostile-guest suite cannot reach `HyperlightError::TripleFault`.
//! A raw CPL 0 snippet that loads an empty IDT can.

use nub_host_common::layout::{Access, Region};
use nub_hypervisor::{GuestMemory, Mapping, Vm, VmExit, VmSetup};

const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;

fn kernel_vm_with(code: &[u8]) -> Vm {
    let memory = GuestMemory::new(4 << 20).unwrap();
    memory.write(CODE, code).unwrap();
    let mappings = [
        Mapping {
            region: Region {
                start: CODE,
                size: 0x1000,
            },
            access: Access::ReadExecute,
        },
        Mapping {
            region: Region {
                start: DATA,
                size: 0x1000,
            },
            access: Access::ReadWrite,
        },
    ];
    let setup = VmSetup {
        mappings: &mappings,
        entry: CODE,
        stack_pointer: DATA + 0x1000,
        ist_stack_top: DATA + 0x1000,
        boot_info: 0x1000,
        user_mode: false,
    };
    Vm::new(memory, &setup).unwrap()
}

#[test]
fn an_exception_with_no_idt_is_a_shutdown_exit() {
    // push 0; push 0; lidt [rsp] (limit 0: no gate at all); ud2.
    // #UD cannot be delivered (#GP), nor can #GP (#DF), nor #DF: shutdown.
    let mut vm = kernel_vm_with(&[0x6a, 0x00, 0x6a, 0x00, 0x0f, 0x01, 0x1c, 0x24, 0x0f, 0x0b]);
    assert_eq!(vm.run().unwrap(), VmExit::Shutdown);
}
