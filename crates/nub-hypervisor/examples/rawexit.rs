//! Measures the raw exit round trip of a minimal long-mode guest, and the
//! cost of touching N distinct pages per entry.
use nub_host_common::layout::{Access, Region};
use nub_hypervisor::{GuestMemory, Mapping, Vm, VmSetup};
use std::time::Instant;

fn measure(pages: u32, write: bool, host_write: bool, user_mode: bool) -> f64 {
    let mut memory = GuestMemory::new(8 << 20).unwrap();
    let mut code = vec![0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00]; // mov rbx, 0x200000
    code.extend([0x48, 0xc7, 0xc1]);
    code.extend((pages.max(1)).to_le_bytes()); // mov rcx, N
    // L:
    if write {
        code.extend([0x88, 0x03]);
    } else {
        code.extend([0x8a, 0x03]);
    } // mov [rbx], al / mov al, [rbx]
    code.extend([0x48, 0x81, 0xc3, 0x00, 0x10, 0x00, 0x00]); // add rbx, 0x1000
    code.extend([0xe2, 0xf5]); // loop L (-11)
    code.extend([0xe7, 0xe1]); // out 0xe1, eax
    let back = -(code.len() as i32 + 2);
    code.extend([0xeb, back as i8 as u8]);
    memory.write(0x10_0000, &code).unwrap();
    let mappings = [
        Mapping {
            region: Region {
                start: 0x10_0000,
                size: 0x1000,
            },
            access: Access::ReadExecute,
        },
        Mapping {
            region: Region {
                start: 0x20_0000,
                size: 0x40_0000,
            },
            access: Access::ReadWrite,
        },
    ];
    let setup = VmSetup {
        mappings: &mappings,
        entry: 0x10_0000,
        stack_pointer: 0x20_0000,
        ist_stack_top: 0x20_0000,
        boot_info: 0x1000,
        user_mode,
    };
    let mut vm = Vm::new(memory, &setup).unwrap();
    let mut t = Vec::new();
    for _ in 0..3000 {
        let s = Instant::now();
        if host_write {
            vm.memory_mut().write(0x20_0008, &[1, 2, 3]).unwrap();
        }
        vm.run().unwrap();
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("cpl3") {
        println!("cpl3 1 page {:.2}", measure(1, true, false, true));
        return;
    }
    for n in [1u32, 2, 8, 32, 128] {
        println!(
            "touch {n:4} pages: cpl3 write {:.2} us, read {:.2} us, host-write {:.2} us; cpl0 write {:.2} us",
            measure(n, true, false, true),
            measure(n, false, false, true),
            measure(n, true, true, true),
            measure(n, true, false, false)
        );
    }
}
