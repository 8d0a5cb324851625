//! Boots hand-assembled long-mode snippets: the exits the run loop reports.

use nub_host_common::{
    layout::{Access, REPORT_PAGE_GPA, Region},
    report::{Report, ReportKind},
};
use nub_hypervisor::{
    GuestMemory, HypervisorError, Mapping, Vm, VmExit, VmSetup, interrupt::CancelReason,
};

const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;

fn vm_with(code: &[u8]) -> Vm {
    let mut memory = GuestMemory::new(4 << 20).unwrap();
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
fn out_loop_resumes_after_each_exit() {
    // mov eax, 7; out 0xe1, eax; inc eax; jmp back to the out
    let mut vm = vm_with(&[0xb8, 7, 0, 0, 0, 0xe7, 0xe1, 0xff, 0xc0, 0xeb, 0xfa]);
    for i in 0..100 {
        assert_eq!(
            vm.run().unwrap(),
            VmExit::IoOut {
                port: 0xe1,
                value: 7 + i
            }
        );
    }
    assert_eq!(vm.exit_count(), 100);
}

#[test]
fn hlt_is_typed() {
    let mut vm = vm_with(&[0xf4]);
    assert_eq!(vm.run().unwrap(), VmExit::Halt);
}

/// `(vector, rip, cr2)` from the report page, which must hold a fault.
fn report(vm: &Vm) -> (u32, u64, u64) {
    let page = vm.memory().slice(REPORT_PAGE_GPA, 4096).unwrap();
    let r = Report::decode(page);
    assert_eq!(r.kind, Some(ReportKind::Fault));
    (r.vector, r.rip, r.cr2)
}

#[test]
fn exceptions_reach_the_host_handlers_with_a_report() {
    // mov rax, 0x4000_0000 (beyond memory); mov [rax], al
    let mut vm = vm_with(&[0x48, 0xc7, 0xc0, 0, 0, 0, 0x40, 0x88, 0x00, 0xf4]);
    assert_eq!(
        vm.run().unwrap(),
        VmExit::IoOut {
            port: 0xE5,
            value: 14
        }
    );
    assert_eq!(report(&vm), (14, CODE + 7, 0x4000_0000));
    // The handler keeps reporting if resumed.
    assert_eq!(
        vm.run().unwrap(),
        VmExit::IoOut {
            port: 0xE5,
            value: 14
        }
    );
    // ud2: #UD at the entry point.
    let mut vm = vm_with(&[0x0f, 0x0b]);
    assert_eq!(
        vm.run().unwrap(),
        VmExit::IoOut {
            port: 0xE5,
            value: 6
        }
    );
    assert_eq!(report(&vm).1, CODE);
}

#[test]
fn kill_stops_a_spinning_guest() {
    let mut vm = vm_with(&[0xeb, 0xfe]); // jmp $
    let interrupt = vm.interrupt().clone();
    let (guard, _) = vm.begin_call();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(interrupt.kill());
    });
    let err = vm.run().unwrap_err();
    assert!(matches!(
        err,
        HypervisorError::Canceled(CancelReason::Killed)
    ));
    assert_eq!(guard.finish(), Some(CancelReason::Killed));
    killer.join().unwrap();
    assert!(!vm.interrupt().kill(), "nothing running now");
}
