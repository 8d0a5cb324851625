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

/// A VM that starts `code` at CPL 0 (or CPL 3 with `user_mode`, as nub
/// guests run): one code page, a two-page data page pair for the stacks.
fn snippet_vm(code: &[u8], user_mode: bool) -> Vm {
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
                size: 0x2000,
            },
            access: Access::ReadWrite,
        },
    ];
    let setup = VmSetup {
        mappings: &mappings,
        entry: CODE,
        stack_pointer: DATA + 0x1000,
        ist_stack_top: DATA + 0x2000,
        boot_info: 0x1000,
        user_mode,
    };
    Vm::new(memory, &setup).unwrap()
}

/// A VM that starts `code` at CPL 0.
fn vm_with(code: &[u8]) -> Vm {
    snippet_vm(code, false)
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
    let mut page = vec![0u8; 4096];
    vm.memory().read(REPORT_PAGE_GPA, &mut page).unwrap();
    let r = Report::decode(&page);
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

/// A VM that starts `code` at CPL 3, as nub guests run.
fn user_vm_with(code: &[u8]) -> Vm {
    snippet_vm(code, true)
}

/// `out 0xE1, eax`: the DONE exit, reached when the code before it ran.
const DONE: [u8; 2] = [0xe7, 0xe1];

/// Runs `code` followed by a DONE exit at CPL 3; returns the exit and, for
/// a fault, its vector.
fn user_outcome(code: &[u8]) -> (VmExit, Option<u32>) {
    let mut program = code.to_vec();
    program.extend(DONE);
    program.extend([0xeb, 0xfe]); // jmp $
    let mut vm = user_vm_with(&program);
    let exit = vm.run().unwrap();
    let fault = matches!(exit, VmExit::IoOut { port: 0xE5, .. }).then(|| report(&vm).0);
    (exit, fault)
}

/// The outcome of a #GP in the guest: the host handler's FAULT exit.
const GP: (VmExit, Option<u32>) = (
    VmExit::IoOut {
        port: 0xE5,
        value: 13,
    },
    Some(13),
);

#[test]
fn user_mode_reaches_the_exit_ports_and_no_other() {
    // Every exit port, as the guest uses it (out dx, eax).
    for port in 0xE0u8..=0xE8 {
        let mut vm = user_vm_with(&[0xb8, 5, 0, 0, 0, 0xe7, port, 0xeb, 0xfe]);
        assert_eq!(
            vm.run().unwrap(),
            VmExit::IoOut {
                port: u16::from(port),
                value: 5
            }
        );
    }
    // mov dx, port; out dx, al: closed by the TSS bitmap (IOPL 0).
    for port in [0x0u16, 0x60, 0x80, 0xDF, 0xEC, 0xFF, 0x3F8, 0x400, 0xFFFF] {
        let [lo, hi] = port.to_le_bytes();
        assert_eq!(
            user_outcome(&[0x66, 0xba, lo, hi, 0xee]),
            GP,
            "out to {port:#x}"
        );
    }
    // A 32-bit out at 0xE9 reaches the closed 0xEC: #GP.
    assert_eq!(user_outcome(&[0xe7, 0xe9]), GP);
    // in al, 0x60: closed as well.
    assert_eq!(user_outcome(&[0xe4, 0x60]), GP);
}

#[test]
fn user_mode_cannot_touch_the_interrupt_flag() {
    // IOPL 0: cli and sti are #GP at CPL 3.
    assert_eq!(user_outcome(&[0xfa]), GP, "cli");
    assert_eq!(user_outcome(&[0xfb]), GP, "sti");
    // popf cannot change IF or IOPL: the RFLAGS bits that differ after
    // `or qword [rsp], 0x3200; popf` are reported through DONE.
    // (Under kvm_pvm CPL 3 code runs natively and reads IF as 1 throughout.)
    let code = [
        0x9c, 0x5b, // pushf; pop rbx
        0x9c, 0x48, 0x81, 0x0c, 0x24, 0x00, 0x32, 0x00, 0x00, 0x9d, // pushf; or; popf
        0x9c, 0x58, 0x48, 0x31, 0xd8, // pushf; pop rax; xor rax, rbx
    ];
    let mut program = code.to_vec();
    program.extend(DONE);
    let mut vm = user_vm_with(&program);
    match vm.run().unwrap() {
        VmExit::IoOut { port: 0xE1, value } => {
            assert_eq!(value & 0x3200, 0, "IF or IOPL changed: {value:#x}");
        }
        other => panic!("unexpected exit {other:?}"),
    }
}

/// Leaf 1 EDX bit 26: SSE2.
const SSE2_BIT: u32 = 1 << 26;

/// Whether the guests' CPUID reports UMIP (leaf 7.0 ECX bit 2): the host
/// turns CR4.UMIP on exactly then.
fn guest_has_umip() -> bool {
    nub_hypervisor::guest_cpuid()
        .unwrap()
        .as_slice()
        .iter()
        .any(|e| e.function == 7 && e.index == 0 && e.ecx & (1 << 2) != 0)
}

/// `mov rax, DATA`: where `sgdt`/`sidt` store when UMIP is off.
const RAX_SCRATCH: [u8; 7] = [0x48, 0xc7, 0xc0, 0x00, 0x00, 0x20, 0x00];

#[test]
fn user_mode_descriptor_table_instructions_follow_umip() {
    let umip = guest_has_umip();
    let cases: [(&str, &[u8]); 5] = [
        ("sgdt [rax]", &[0x0f, 0x01, 0x00]),
        ("sidt [rax]", &[0x0f, 0x01, 0x08]),
        ("sldt eax", &[0x0f, 0x00, 0xc0]),
        ("smsw eax", &[0x0f, 0x01, 0xe0]),
        ("str eax", &[0x0f, 0x00, 0xc8]),
    ];
    for (name, insn) in cases {
        let mut code = RAX_SCRATCH.to_vec();
        code.extend(insn);
        let (exit, fault) = user_outcome(&code);
        if umip {
            // CR4.UMIP is on: each is #GP at CPL 3.
            assert_eq!((exit, fault), GP, "{name}");
        } else {
            // Without UMIP (a host whose CPUID lacks it) they run.
            assert!(
                matches!(exit, VmExit::IoOut { port: 0xE1, .. }),
                "{name}: {exit:?}"
            );
        }
    }
}

#[test]
fn user_mode_may_read_the_time_stamp_counter() {
    // CR4.TSD stays clear (kvm_pvm ignores it anyway): rdtsc runs at CPL 3.
    let (exit, fault) = user_outcome(&[0x0f, 0x31]);
    assert!(matches!(exit, VmExit::IoOut { port: 0xE1, .. }), "{exit:?}");
    assert_eq!(fault, None);
}

#[test]
fn cpuid_and_sse_agree_at_user_mode() {
    // mov eax, 1; xor ecx, ecx; cpuid; mov eax, edx; out 0xE1, eax
    let mut vm = user_vm_with(&[
        0xb8, 1, 0, 0, 0, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0xd0, 0xe7, 0xe1,
    ]);
    let edx = match vm.run().unwrap() {
        VmExit::IoOut { port: 0xE1, value } => value,
        other => panic!("cpuid: {other:?}"),
    };
    // xorps xmm0, xmm0
    let (exit, fault) = user_outcome(&[0x0f, 0x57, 0xc0]);
    // The host enables SSE (CR4.OSFXSR) and the CPUID reports SSE2, both
    // nub's restricted table (where KVM intercepts CPUID) and the host's
    // own (kvm_pvm runs CPL 3 natively): SSE runs.
    assert_ne!(edx & SSE2_BIT, 0, "cpuid leaf 1 EDX {edx:#x}");
    assert!(
        matches!(exit, VmExit::IoOut { port: 0xE1, .. }),
        "{exit:?} {fault:?}"
    );
}

/// A triple fault is a typed exit. Sandbox guests cannot cause one: they
/// run at CPL 3 behind the host's IDT (every exception vector present, #DF
/// on an always-mapped IST stack, the IDT/GDT/TSS read-only, `lidt` a #GP),
/// so the hostile-guest suite cannot reach `HyperlightError::TripleFault`.
/// A raw CPL 0 snippet that loads an empty IDT can.
#[test]
fn an_exception_with_no_idt_is_a_shutdown_exit() {
    // push 0; push 0; lidt [rsp] (limit 0: no gate at all); ud2.
    // #UD cannot be delivered (#GP), nor can #GP (#DF), nor #DF: shutdown.
    let mut vm = vm_with(&[0x6a, 0x00, 0x6a, 0x00, 0x0f, 0x01, 0x1c, 0x24, 0x0f, 0x0b]);
    assert_eq!(vm.run().unwrap(), VmExit::Shutdown);
}
