//! Long-mode CPU state: GDT, TSS and the special registers.
//!
//! The GDT (null, kernel code and data, user code and data, and the TSS's
//! two-slot descriptor: 7 entries) and the TSS live in the boot page
//! (read-only for the guest). They are built from the `x86_64` crate's
//! types ([`GlobalDescriptorTable`], [`DescriptorFlags`],
//! [`TaskStateSegment`]) and written as bytes. Descriptors are written with
//! their accessed bits set and the TSS as busy, so the CPU never writes to
//! them. The TSS holds RSP0, the stack the CPU switches to when an
//! exception interrupts the guest at CPL 3, and IST1, the stack of the
//! host's double-fault handler (see [`crate::exceptions`]), so a stack
//! overflow can still be reported; both are the IST stack's top. Its I/O
//! permission bitmap opens only the exit ports.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use nub_host_common::{
    layout::{GDT_GPA, TSS_GPA, USER_RFLAGS, USER_RFLAGS_STATUS},
    ports::ExitPort,
};
use x86_64::{
    VirtAddr,
    registers::{
        control::{Cr0Flags, Cr4Flags},
        model_specific::EferFlags,
    },
    structures::{
        gdt::{Descriptor, DescriptorFlags, GlobalDescriptorTable, SegmentSelector},
        tss::TaskStateSegment,
    },
};

use crate::{
    HypervisorError,
    memory::GuestMemory,
    regs::{self, UserRegisters},
};

/// Size of a 64-bit TSS (the x86_64 crate's layout of it, checked against
/// the architecture's offsets below).
const TSS_SIZE: u64 = size_of::<TaskStateSegment>() as u64;
const _: () = {
    // Intel SDM vol. 3 figure 8-11: RSP0 at 4, IST1 at 0x24, the I/O map
    // base at 0x66, 104 bytes in all.
    assert!(TSS_SIZE == 104);
    assert!(core::mem::offset_of!(TaskStateSegment, privilege_stack_table) == 0x4);
    assert!(core::mem::offset_of!(TaskStateSegment, interrupt_stack_table) == 0x24);
    assert!(core::mem::offset_of!(TaskStateSegment, iomap_base) == 0x66);
};
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

/// Descriptor-type bits (40..44) of a busy 64-bit TSS (Intel SDM vol. 3
/// table 3-2). `DescriptorFlags` names the bits of code and data
/// descriptors; a system descriptor's type is this field.
const TSS_BUSY_TYPE: u64 = 0xB << 40;

/// The TSS's system descriptor: present, DPL 0, busy, `base` and `limit`.
/// (`Descriptor::tss_segment` takes a TSS in this process's memory; this
/// one lives at a guest address.)
const fn tss_descriptor(base: u64, limit: u64) -> Descriptor {
    let low = DescriptorFlags::PRESENT.bits()
        | TSS_BUSY_TYPE
        | (limit & DescriptorFlags::LIMIT_0_15.bits())
        | ((limit << 32) & DescriptorFlags::LIMIT_16_19.bits())
        | ((base << 16) & DescriptorFlags::BASE_0_23.bits())
        | ((base << 32) & DescriptorFlags::BASE_24_31.bits());
    Descriptor::SystemSegment(low, base >> 32)
}

/// The GDT and the selectors of its segments, in the order the layout's
/// selector constants assume.
struct Gdt {
    table: GlobalDescriptorTable<8>,
    selectors: [SegmentSelector; 5],
}

/// Builds the GDT: null, kernel code, kernel data, user code, user data,
/// TSS (two slots). Code and data are the x86_64 crate's flat segments
/// (present, accessed, 4 GiB limit, 64-bit code).
fn gdt() -> Gdt {
    let mut table = GlobalDescriptorTable::<8>::empty();
    let selectors = [
        table.append(Descriptor::UserSegment(
            DescriptorFlags::KERNEL_CODE64.bits(),
        )),
        table.append(Descriptor::UserSegment(DescriptorFlags::KERNEL_DATA.bits())),
        table.append(Descriptor::UserSegment(DescriptorFlags::USER_CODE64.bits())),
        table.append(Descriptor::UserSegment(DescriptorFlags::USER_DATA.bits())),
        table.append(tss_descriptor(TSS_GPA, TSS_LIMIT)),
    ];
    Gdt { table, selectors }
}

/// The TSS: RSP0 and IST1 at `stack_top`, the I/O bitmap right after it.
fn tss(stack_top: VirtAddr) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    tss.privilege_stack_table[0] = stack_top;
    tss.interrupt_stack_table[0] = stack_top;
    // `new` already points the I/O map base just past the TSS, where
    // `write_descriptor_tables` puts the bitmap.
    tss.iomap_base = TSS_SIZE as u16;
    tss
}

/// The bytes of `tss`, as the CPU reads them.
fn tss_bytes(tss: &TaskStateSegment) -> &[u8] {
    // SAFETY: `TaskStateSegment` is `repr(C, packed(4))` of integer fields
    // (u32, u64, u16 and `VirtAddr`, a `repr(transparent)` u64) that add up
    // to its 104 bytes (asserted above), so it has no padding and every one
    // of its bytes is initialized. The slice covers exactly `*tss` and
    // borrows it immutably for the slice's lifetime, so nothing can write
    // the TSS while the slice is alive; `u8` has no alignment requirement.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(tss).cast::<u8>(), TSS_SIZE as usize) }
}

/// Writes the GDT and TSS into the boot page. `ist_stack_top` becomes both
/// RSP0 (the stack exceptions from user mode switch to) and IST1 (the
/// double-fault stack); it must be a canonical address.
pub(crate) fn write_descriptor_tables(
    memory: &mut GuestMemory,
    ist_stack_top: u64,
) -> Result<(), HypervisorError> {
    let stack_top =
        VirtAddr::try_new(ist_stack_top).map_err(|_| HypervisorError::NonCanonical {
            what: "ist_stack_top",
            addr: ist_stack_top,
        })?;
    for (i, entry) in gdt().table.entries().iter().enumerate() {
        memory.write_u64(GDT_GPA + i as u64 * 8, entry.raw())?;
    }
    memory.write(TSS_GPA, tss_bytes(&tss(stack_top)))?;
    // The I/O permission bitmap follows the TSS: it opens the exit ports
    // only; the last byte (all ones) terminates it.
    memory.write(TSS_GPA + TSS_SIZE, &io_bitmap())?;
    Ok(())
}

/// The hidden part of a segment register for a flat segment whose
/// descriptor has `flags` (what the CPU would load from the GDT entry).
fn segment(selector: SegmentSelector, flags: DescriptorFlags) -> kvm_segment {
    let bit = |flag: DescriptorFlags| u8::from(flags.contains(flag));
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: selector.0,
        type_: ((flags.bits() >> 40) & 0xF) as u8,
        present: bit(DescriptorFlags::PRESENT),
        dpl: ((flags.bits() & DescriptorFlags::DPL_RING_3.bits()) >> 45) as u8,
        db: bit(DescriptorFlags::DEFAULT_SIZE),
        s: bit(DescriptorFlags::USER_SEGMENT),
        l: bit(DescriptorFlags::LONG_MODE),
        g: bit(DescriptorFlags::GRANULARITY),
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Fills `sregs` for 64-bit long mode with paging rooted at `cr3`, NX and
/// write protection on, and SSE enabled (CR4.OSFXSR and CR4.OSXMMEXCPT set,
/// CR0.MP set, CR0.EM and CR0.TS clear): a guest built hard-float (the wasm
/// guest, docs/wasm.md) may use SSE/SSE2, the x86-64 baseline, and an
/// unmasked SIMD floating-point exception is #XM, not #UD. Under kvm_pvm
/// CPL 3 code runs natively under the host's CR4 and SSE ran before this
/// too; on hardware virtualisation it needs these bits. XSAVE stays off
/// (CR4.OSXSAVE clear: no AVX), and the CPUID still hides SSE
/// (docs/abi.md, *Privilege*). With `user_mode` the vCPU
/// starts at CPL 3 (user code and data segments); otherwise at CPL 0. With
/// `umip` (the guest's CPUID reports UMIP), CR4.UMIP makes `sgdt`, `sidt`,
/// `sldt`, `smsw` and `str` #GP at CPL 3. CR4.TSD stays clear: `rdtsc` is
/// allowed (docs/security.md, *CPU features*).
pub(crate) fn long_mode_sregs(sregs: &mut kvm_sregs, cr3: u64, user_mode: bool, umip: bool) {
    let Gdt { table, selectors } = gdt();
    let [kernel_code, kernel_data, user_code, user_data, tss] = selectors;
    let (code, data) = if user_mode {
        (
            segment(user_code, DescriptorFlags::USER_CODE64),
            segment(user_data, DescriptorFlags::USER_DATA),
        )
    } else {
        (
            segment(kernel_code, DescriptorFlags::KERNEL_CODE64),
            segment(kernel_data, DescriptorFlags::KERNEL_DATA),
        )
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: TSS_GPA,
        limit: TSS_LIMIT as u32,
        selector: tss.0,
        type_: (TSS_BUSY_TYPE >> 40) as u8,
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
    sregs.gdt.limit = table.limit();
    sregs.idt.base = nub_host_common::layout::IDT_GPA;
    sregs.idt.limit = crate::exceptions::IDT_LIMIT;
    sregs.cr0 = (Cr0Flags::PROTECTED_MODE_ENABLE
        | Cr0Flags::MONITOR_COPROCESSOR
        | Cr0Flags::EXTENSION_TYPE
        | Cr0Flags::NUMERIC_ERROR
        | Cr0Flags::WRITE_PROTECT
        | Cr0Flags::PAGING)
        .bits();
    sregs.cr3 = cr3;
    let mut cr4 =
        Cr4Flags::PHYSICAL_ADDRESS_EXTENSION | Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE;
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
pub(crate) fn entry_regs(
    entry: u64,
    stack_pointer: u64,
    boot_info: u64,
    user_mode: bool,
) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack_pointer,
        rdi: boot_info,
        rflags: if user_mode { USER_RFLAGS } else { 0x2 },
        ..Default::default()
    }
}

/// General registers that resume a guest stopped at CPL 3 (see
/// [`UserRegisters`]). RFLAGS keeps only the status bits CPL 3 code sets
/// itself on top of [`USER_RFLAGS`]: whatever else a persisted image says,
/// the guest resumes with IOPL 0, interrupts off and no trap flag.
pub(crate) fn resume_regs(r: &UserRegisters) -> kvm_regs {
    kvm_regs {
        rflags: (r.rflags & USER_RFLAGS_STATUS) | USER_RFLAGS,
        ..regs::to_kvm(r)
    }
}

/// The CPL 3 registers of a stopped vCPU (see [`UserRegisters`]).
pub(crate) fn user_registers(r: &kvm_regs) -> UserRegisters {
    regs::from_kvm(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_rflags_keep_only_the_status_bits() {
        let regs = UserRegisters {
            // TF, IF, IOPL 3, AC, plus CF and ZF.
            rflags: 0x100 | 0x200 | 0x3000 | 0x4_0000 | 0x41,
            rip: 7,
            ..UserRegisters::default()
        };
        let k = resume_regs(&regs);
        assert_eq!(k.rflags, 0x41 | USER_RFLAGS);
        assert_eq!(user_registers(&k).rip, 7);
    }

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
        let Descriptor::SystemSegment(lo, hi) = tss_descriptor(0x1234_5678_9ABC_DEF0, 0x6_0067)
        else {
            panic!("a TSS descriptor is a system segment")
        };
        assert_eq!(lo & 0xFFFF, 0x67);
        assert_eq!((lo >> 48) & 0xF, 0x6, "limit bits 16..20");
        assert_eq!((lo >> 16) & 0xFF_FFFF, 0xBC_DEF0);
        assert_eq!((lo >> 56) & 0xFF, 0x9A);
        assert_eq!((lo >> 40) & 0xFF, 0x8B, "present, DPL 0, busy 64-bit TSS");
        assert_eq!(hi, 0x1234_5678);
    }

    #[test]
    fn gdt_selectors_are_the_layouts() {
        use nub_host_common::layout::{
            CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR, USER_CODE_SELECTOR, USER_DATA_SELECTOR,
        };
        let Gdt { table, selectors } = gdt();
        let selectors = selectors.map(|s| s.0);
        assert_eq!(
            selectors,
            [
                CODE_SELECTOR,
                DATA_SELECTOR,
                USER_CODE_SELECTOR,
                USER_DATA_SELECTOR,
                TSS_SELECTOR
            ]
        );
        assert_eq!(table.entries().len(), 7, "null, 4 segments, a 2-slot TSS");
    }

    #[test]
    fn non_canonical_stack_tops_are_refused() {
        let mut memory = GuestMemory::new(0x10000).unwrap();
        assert!(matches!(
            write_descriptor_tables(&mut memory, 0x0000_8000_0000_0000),
            Err(HypervisorError::NonCanonical {
                what: "ist_stack_top",
                ..
            })
        ));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The boot page's tables as the seed's hand-encoded constants wrote
    /// them (captured before the tables were built from `x86_64` types),
    /// with the IST stack top at 0x1234_5000.
    const PINNED_IDT: [&str; 16] = [
        "00300800008e0000000000000000000010300800008e00000000000000000000",
        "20300800008e0000000000000000000030300800008e00000000000000000000",
        "40300800008e0000000000000000000050300800008e00000000000000000000",
        "60300800008e0000000000000000000070300800008e00000000000000000000",
        "80300800018e0000000000000000000090300800008e00000000000000000000",
        "a0300800008e00000000000000000000b0300800008e00000000000000000000",
        "c0300800008e00000000000000000000d0300800008e00000000000000000000",
        "e0300800008e00000000000000000000f0300800008e00000000000000000000",
        "00310800008e0000000000000000000010310800008e00000000000000000000",
        "20310800008e0000000000000000000030310800008e00000000000000000000",
        "40310800008e0000000000000000000050310800008e00000000000000000000",
        "60310800008e0000000000000000000070310800008e00000000000000000000",
        "80310800008e0000000000000000000090310800008e00000000000000000000",
        "a0310800008e00000000000000000000b0310800008e00000000000000000000",
        "c0310800008e00000000000000000000d0310800008e00000000000000000000",
        "e0310800008e00000000000000000000f0310800008e00000000000000000000",
    ];
    const PINNED_GDT: [&str; 2] = [
        "0000000000000000ffff0000009baf00ffff00000093cf00ffff0000",
        "00fbaf00ffff000000f3cf008800001c008b00000000000000000000",
    ];
    const PINNED_TSS: [&str; 5] = [
        "0000000000503412000000000000000000000000000000000000000000000000",
        "0000000000503412000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000006800ffffffffffffffffffffffffffffffffffffffffffffffff",
        "ffffffff00f0ffffff",
    ];

    #[test]
    fn descriptor_table_bytes_are_pinned() {
        use nub_host_common::layout::{BOOT_PAGE_GPA, IDT_GPA, PAGE_SIZE};
        let mut memory = GuestMemory::new(0x10000).unwrap();
        write_descriptor_tables(&mut memory, 0x1234_5000).unwrap();
        crate::exceptions::write_exception_handlers(&mut memory).unwrap();
        let mut page = vec![0u8; PAGE_SIZE as usize];
        memory.read(BOOT_PAGE_GPA, &mut page).unwrap();
        let mut rest = page.clone();
        for (name, gpa, pinned) in [
            ("IDT", IDT_GPA, PINNED_IDT.concat()),
            ("GDT", GDT_GPA, PINNED_GDT.concat()),
            ("TSS + I/O bitmap", TSS_GPA, PINNED_TSS.concat()),
        ] {
            let start = (gpa - BOOT_PAGE_GPA) as usize;
            let range = start..start + pinned.len() / 2;
            assert_eq!(hex(&page[range.clone()]), pinned, "{name}");
            rest[range].fill(0);
        }
        assert!(
            rest.iter().all(|&b| b == 0),
            "nothing else in the boot page"
        );
    }

    /// A flat segment register's hidden state, field by field.
    #[allow(clippy::too_many_arguments)]
    fn seg(
        base: u64,
        limit: u32,
        selector: u16,
        type_: u8,
        dpl: u8,
        db: u8,
        s: u8,
        l: u8,
        g: u8,
    ) -> kvm_segment {
        kvm_segment {
            base,
            limit,
            selector,
            type_,
            present: 1,
            dpl,
            db,
            s,
            l,
            g,
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }

    #[test]
    fn segment_registers_are_pinned() {
        let tr = seg(TSS_GPA, 136, 0x28, 0xB, 0, 0, 0, 0, 0);
        for (user_mode, cs, data) in [
            (
                true,
                seg(0, u32::MAX, 0x1B, 0xB, 3, 0, 1, 1, 1),
                seg(0, u32::MAX, 0x23, 0x3, 3, 1, 1, 0, 1),
            ),
            (
                false,
                seg(0, u32::MAX, 0x08, 0xB, 0, 0, 1, 1, 1),
                seg(0, u32::MAX, 0x10, 0x3, 0, 1, 1, 0, 1),
            ),
        ] {
            let mut sregs = kvm_sregs::default();
            long_mode_sregs(&mut sregs, 0x4000, user_mode, true);
            assert_eq!(sregs.cs, cs, "user mode {user_mode}");
            for reg in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
                assert_eq!(reg, data, "user mode {user_mode}");
            }
            assert_eq!(sregs.tr, tr);
            assert_eq!((sregs.gdt.base, sregs.gdt.limit), (GDT_GPA, 55));
            assert_eq!((sregs.idt.base, sregs.idt.limit), (0x1200, 511));
        }
    }

    /// SSE is usable (the hard-float wasm guest relies on it), the x87 is
    /// not emulated, and XSAVE (hence AVX) stays off.
    #[test]
    fn sse_is_enabled_and_xsave_is_not() {
        let mut sregs = kvm_sregs::default();
        long_mode_sregs(&mut sregs, 0x4000, true, false);
        let cr0 = Cr0Flags::from_bits_truncate(sregs.cr0);
        let cr4 = Cr4Flags::from_bits_truncate(sregs.cr4);
        assert!(cr4.contains(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
        assert!(!cr4.contains(Cr4Flags::OSXSAVE));
        assert!(cr0.contains(Cr0Flags::MONITOR_COPROCESSOR));
        assert!(!cr0.intersects(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED));
    }
}
