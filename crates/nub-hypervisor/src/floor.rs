//! The exit floor: a minimal long-mode guest, built with the same page
//! tables, GDT and TSS as real guests, that does nothing but `out` in a
//! loop. Benchmarks report their figures as ratios to its round trip.

use std::time::{Duration, Instant};

use nub_host_common::layout::{Access, IMAGE_BASE, PAGE_SIZE, Region};

use crate::{GuestMemory, HypervisorError, Mapping, Vm, VmExit, VmSetup};

/// `out 0xE1, eax; jmp back`.
const OUT_LOOP: [u8; 4] = [0xe7, 0xe1, 0xeb, 0xfc];

/// Times `iterations` exit round trips of the floor guest, at CPL 3 (as nub
/// guests run) or CPL 0 (where kvm_pvm emulates every instruction). Returns
/// each round trip.
pub fn exit_round_trips(
    iterations: usize,
    user_mode: bool,
) -> Result<Vec<Duration>, HypervisorError> {
    let mut memory = GuestMemory::new(4 << 20)?;
    memory.write(IMAGE_BASE, &OUT_LOOP)?;
    let stack = Region {
        start: 2 << 20,
        size: PAGE_SIZE,
    };
    let mappings = [
        Mapping {
            region: Region {
                start: IMAGE_BASE,
                size: PAGE_SIZE,
            },
            access: Access::ReadExecute,
        },
        Mapping {
            region: stack,
            access: Access::ReadWrite,
        },
    ];
    let setup = VmSetup {
        mappings: &mappings,
        entry: IMAGE_BASE,
        stack_pointer: stack.end(),
        ist_stack_top: stack.end(),
        boot_info: 0,
        user_mode,
    };
    let mut vm = Vm::new(memory, &setup)?;
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let exit = vm.run()?;
        times.push(start.elapsed());
        if exit
            != (VmExit::IoOut {
                port: 0xE1,
                value: 0,
            })
        {
            return Err(HypervisorError::KvmUnavailable(format!(
                "floor guest exited with {exit:?}"
            )));
        }
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_guest_exits_through_its_port_in_both_modes() {
        assert_eq!(exit_round_trips(50, true).unwrap().len(), 50);
        assert_eq!(exit_round_trips(50, false).unwrap().len(), 50);
    }
}
