//! Long-mode CPU state: GDT, TSS and the special registers.
//!
//! The GDT (null, 64-bit code, data, TSS) and the TSS live in the boot page
//! (read-only for the guest). Descriptors are written with their accessed
//! bits set and the TSS as busy, so the CPU never writes to them. The TSS
//! holds one interrupt stack (IST1) that the guest's double-fault handler
//! uses, so a stack overflow can still be reported.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use nub_host_common::{
    layout::{
        CODE_SELECTOR, DATA_SELECTOR, GDT_GPA, TSS_GPA, TSS_SELECTOR, USER_CODE_SELECTOR,
        USER_DATA_SELECTOR, USER_RFLAGS,
    },
    ports::ExitPort,
};
use x86_64::registers::{
    control::{Cr0Flags, Cr4Flags},
    model_specific::EferFlags,
};

use crate::memory::{GuestMemory, MemoryError};

/// Size of a 64-bit TSS.
const TSS_SIZE: u64 = 104;
/// Offset of RSP0 in the TSS.
const TSS_RSP0_OFFSET: u64 = 0x4;
/// Offset of IST1 in the TSS.
const TSS_IST1_OFFSET: u64 = 0x24;
/// Offset of the I/O map base in the TSS.
const TSS_IOMAP_OFFSET: u64 = 0x66;
/// The ports open to CPL 3 through the TSS I/O permission bitmap: the
/// bytes a 32-bit `out dx, eax` to an exit port ([`ExitPort`], 0xE0..=0xE8)
/// touches, so 0xE0..=0xEB, and nothing else. Guests run with IOPL 0, so
/// any access that touches another port raises #GP in the guest, which the
/// host's handler reports as a fault (`GuestFault`, vector 13); an access
/// to 0xE9..=0xEB alone exits to the host as an unknown port.
const OPEN_PORTS: std::ops::RangeInclusive<u16> =
    ExitPort::Ready.port()..=ExitPort::Notify.port() + 3;
/// Ports covered by the bitmap (one bit each, all set but the open ones);
/// ports at or above this lie beyond the TSS limit, which closes them too.
const IO_BITMAP_PORTS: u64 = 0x100;
/// Bitmap bytes: one bit per port, plus the terminating 0xFF byte (the CPU
/// reads two bytes for an access, which may straddle the last port).
const IO_BITMAP_SIZE: u64 = IO_BITMAP_PORTS / 8 + 1;
/// The TSS segment limit: the 104-byte TSS and the bitmap after it.
const TSS_LIMIT: u64 = TSS_SIZE + IO_BITMAP_SIZE - 1;

/// The I/O permission bitmap: a 1 bit closes a port, a 0 bit opens it.
fn io_bitmap() -> [u8; IO_BITMAP_SIZE as usize] {
    let mut bitmap = [0xFFu8; IO_BITMAP_SIZE as usize];
    for port in OPEN_PORTS {
        if let Some(byte) = bitmap.get_mut(usize::from(port / 8)) {
            *byte &= !(1 << (port % 8));
        }
    }
    bitmap
}

/// GDT entries in bytes: null, kernel code, kernel data, user code, user
/// data, TSS (two slots).
const GDT_SIZE: u64 = 7 * 8;

/// 64-bit code: present, DPL 0, code exec/read accessed, L=1, G=1.
const GDT_CODE64: u64 = 0x00AF_9B00_0000_FFFF;
/// Data: present, DPL 0, read/write accessed, D/B=1, G=1.
const GDT_DATA: u64 = 0x00CF_9300_0000_FFFF;
/// 64-bit user code: as kernel code with DPL 3.
const GDT_USER_CODE64: u64 = 0x00AF_FB00_0000_FFFF;
/// User data: as kernel data with DPL 3.
const GDT_USER_DATA: u64 = 0x00CF_F300_0000_FFFF;
/// System descriptor type of a busy 64-bit TSS.
const TSS_TYPE_BUSY: u8 = 0xB;

fn tss_descriptor(base: u64, limit: u64) -> (u64, u64) {
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (u64::from(0x80 | TSS_TYPE_BUSY) << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    (low, base >> 32)
}

/// Writes the GDT and TSS into the boot page. `ist_stack_top` becomes both
/// RSP0 (the stack exceptions from user mode switch to) and IST1 (the
/// double-fault stack).
pub fn write_descriptor_tables(
    memory: &mut GuestMemory,
    ist_stack_top: u64,
) -> Result<(), MemoryError> {
    let (tss_low, tss_high) = tss_descriptor(TSS_GPA, TSS_LIMIT);
    let entries = [
        0,
        GDT_CODE64,
        GDT_DATA,
        GDT_USER_CODE64,
        GDT_USER_DATA,
        tss_low,
        tss_high,
    ];
    for (i, e) in entries.iter().enumerate() {
        memory.write_u64(GDT_GPA + i as u64 * 8, *e)?;
    }
    memory.write(TSS_GPA, &[0u8; TSS_SIZE as usize])?;
    memory.write_u64(TSS_GPA + TSS_RSP0_OFFSET, ist_stack_top)?;
    memory.write_u64(TSS_GPA + TSS_IST1_OFFSET, ist_stack_top)?;
    // The I/O permission bitmap follows the TSS: it opens the exit ports
    // only; the last byte (all ones) terminates it.
    memory.write(TSS_GPA + TSS_IOMAP_OFFSET, &(TSS_SIZE as u16).to_le_bytes())?;
    memory.write(TSS_GPA + TSS_SIZE, &io_bitmap())?;
    Ok(())
}

fn segment(selector: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl: (selector & 3) as u8,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Fills `sregs` for 64-bit long mode with paging rooted at `cr3`, NX and
/// write protection on, and SSE left disabled (CR4.OSFXSR clear, so an SSE
/// instruction raises #UD, except at CPL 3 under kvm_pvm, which runs such
/// code natively under the host's CR4). With `user_mode` the vCPU
/// starts at CPL 3 (user code and data segments); otherwise at CPL 0. With
/// `umip` (the guest's CPUID reports UMIP), CR4.UMIP makes `sgdt`, `sidt`,
/// `sldt`, `smsw` and `str` #GP at CPL 3. CR4.TSD stays clear: `rdtsc` is
/// allowed (docs/security.md, *CPU features*).
pub fn long_mode_sregs(sregs: &mut kvm_sregs, cr3: u64, user_mode: bool, umip: bool) {
    let (code, data) = if user_mode {
        (USER_CODE_SELECTOR, USER_DATA_SELECTOR)
    } else {
        (CODE_SELECTOR, DATA_SELECTOR)
    };
    let code = segment(code, 0xB, true);
    let data = segment(data, 0x3, false);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: TSS_GPA,
        limit: TSS_LIMIT as u32,
        selector: TSS_SELECTOR,
        type_: TSS_TYPE_BUSY,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.gdt.base = GDT_GPA;
    sregs.gdt.limit = (GDT_SIZE - 1) as u16;
    sregs.idt.base = nub_host_common::layout::IDT_GPA;
    sregs.idt.limit = crate::exceptions::IDT_LIMIT;
    sregs.cr0 = (Cr0Flags::PROTECTED_MODE_ENABLE
        | Cr0Flags::EXTENSION_TYPE
        | Cr0Flags::NUMERIC_ERROR
        | Cr0Flags::WRITE_PROTECT
        | Cr0Flags::PAGING)
        .bits();
    sregs.cr3 = cr3;
    let mut cr4 = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION;
    if umip {
        cr4 |= Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION;
    }
    sregs.cr4 = cr4.bits();
    sregs.efer =
        (EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE | EferFlags::NO_EXECUTE_ENABLE)
            .bits();
}

/// General registers at entry: RIP = entry, RSP = stack pointer, RDI = the
/// BootInfo address, interrupts off, IOPL 0.
pub fn entry_regs(entry: u64, stack_pointer: u64, boot_info: u64, user_mode: bool) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack_pointer,
        rdi: boot_info,
        rflags: if user_mode { USER_RFLAGS } else { 0x2 },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the bitmap opens every port an access of `size` bytes at
    /// `port` touches (the CPU's rule; beyond the bitmap means closed).
    fn bitmap_allows(bitmap: &[u8], port: u16, size: u16) -> bool {
        (u32::from(port)..u32::from(port) + u32::from(size)).all(|p| {
            bitmap
                .get(p as usize / 8)
                .is_some_and(|byte| byte & (1 << (p % 8)) == 0)
        })
    }

    #[test]
    fn io_bitmap_opens_only_the_exit_ports() {
        let bitmap = io_bitmap();
        assert_eq!(bitmap.last(), Some(&0xFF), "terminating byte");
        for port in ExitPort::Ready.port()..=ExitPort::Notify.port() {
            assert!(bitmap_allows(&bitmap, port, 4), "out dx, eax to {port:#x}");
        }
        let open: Vec<u16> = (0..=u16::MAX)
            .filter(|&p| bitmap_allows(&bitmap, p, 1))
            .collect();
        assert_eq!(open, (0xE0..=0xEB).collect::<Vec<u16>>());
        assert!(
            !bitmap_allows(&bitmap, 0xE9, 4),
            "0xE9..0xEC reaches a closed port"
        );
    }

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let (lo, hi) = tss_descriptor(0x1234_5678_9ABC_DEF0, 0x67);
        assert_eq!(lo & 0xFFFF, 0x67);
        assert_eq!((lo >> 16) & 0xFF_FFFF, 0xBC_DEF0);
        assert_eq!((lo >> 56) & 0xFF, 0x9A);
        assert_eq!((lo >> 40) & 0xFF, 0x8B);
        assert_eq!(hi, 0x1234_5678);
    }
}
