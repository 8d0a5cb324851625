//! Ids 8, 9 and 14–17: attacks on the machine rather than the rings: host
//! calls without end, the read-only system pages, port I/O, privileged
//! instructions, heap exhaustion and scribbling over all writable memory.

use alloc::{boxed::Box, vec, vec::Vec};

use nub_arch_x86::{
    GuestError, Output,
    abi::{
        boot::{BOOT_MAGIC, BootInfo},
        layout::{
            BOOT_INFO_GPA, EXCEPTION_CODE_GPA, IDT_GPA, IMAGE_BASE, IST_STACK_SIZE, PAGE_SIZE,
        },
        ring::RING_HEADER_SIZE,
    },
    dispatch,
};

use crate::{boot, selector};

/// Id 8: calls host function `fn_id` (u32 LE payload) forever, ignoring
/// its answers.
pub fn host_calls_forever(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let id: [u8; 4] = input
        .try_into()
        .map_err(|_| GuestError::new("expected a u32 LE host fn id"))?;
    let fn_id = u32::from_le_bytes(id);
    let mut n = 0u64;
    loop {
        let _ignored = nub_arch_x86::host_call(fn_id, &n.to_le_bytes());
        n = n.wrapping_add(1);
    }
}

use crate::FORGED_DIRECTORY_VA;

/// Offset of `memory_size` in BootInfo.
const MEMORY_SIZE_OFFSET: usize = 16;
/// Offset of `directory_va` in BootInfo.
const DIRECTORY_VA_OFFSET: usize = 104;

/// Id 9. Selector 0 writes BootInfo in the boot page, 2 the IDT, 3 the
/// host's exception handler code: all three fault (the pages are read-only,
/// or supervisor-only). Selector 1 instead forges the guest's own BootInfo
/// copies on its stack (the one GET_BOOT_INFO answers from included):
/// `directory_va` becomes [`FORGED_DIRECTORY_VA`] and `memory_size`
/// `u64::MAX`; it answers the number of copies forged (u64 LE).
pub fn rewrite_boot_info(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let target = match selector(input) {
        0 => BOOT_INFO_GPA + DIRECTORY_VA_OFFSET as u64,
        1 => return out.write(&forge_stack_copies().to_le_bytes()),
        2 => IDT_GPA + 14 * 16,
        3 => EXCEPTION_CODE_GPA,
        _ => return Err(GuestError::new("unknown selector")),
    };
    // SAFETY: deliberately faults: the page is mapped read-only (or
    // supervisor-only) for the guest, so the write never happens and the
    // execution ends in a fault report.
    unsafe { (target as *mut u64).write_volatile(0x4141_4141_4141_4141) };
    Err(GuestError::new(
        "the write to a read-only system page did not fault",
    ))
}

/// The current stack pointer.
fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads RSP into a register; no memory access.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    rsp
}

/// Forges every BootInfo copy on the live stack (above this frame).
#[inline(never)]
fn forge_stack_copies() -> u64 {
    let info = boot();
    let mut forged = 0;
    let mut addr = stack_pointer() & !7;
    while addr + BootInfo::SIZE as u64 <= info.stack_top {
        let word = addr as *mut u64;
        // SAFETY: `addr` is 8-aligned and inside the mapped stack,
        // [rsp, stack_top); plain words, read volatile.
        let magic = unsafe { word.read_volatile() };
        // SAFETY: as above; abi_version is the next word's low half.
        let version = unsafe { word.add(1).read_volatile() } as u32;
        if magic == BOOT_MAGIC && version == info.abi_version {
            // SAFETY: a BootInfo copy lies here (magic and version match),
            // so both fields are inside it and inside the stack. The
            // kernel's copies are only read between calls, never while this
            // runs; rewriting them is the attack.
            unsafe {
                word.add(MEMORY_SIZE_OFFSET / 8).write_volatile(u64::MAX);
                word.add(DIRECTORY_VA_OFFSET / 8)
                    .write_volatile(FORGED_DIRECTORY_VA);
            }
            forged += 1;
        }
        addr += 8;
    }
    forged
}

/// Id 14: port I/O. The payload is 8-byte records: direction (0 `out`, 1
/// `in`), size (1, 2 or 4 bytes), port (u16 LE), value (u32 LE, for
/// `out`). Runs them in order; answers the values read (u32 LE each).
pub fn port_io(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    for record in input.chunks(8) {
        let [dir, size, p0, p1, v0, v1, v2, v3] = *record else {
            return Err(GuestError::new("port records are 8 bytes"));
        };
        let port = u16::from_le_bytes([p0, p1]);
        let value = u32::from_le_bytes([v0, v1, v2, v3]);
        if dir == 0 {
            port_out(size, port, value);
        } else {
            out.write(&port_in(size, port).to_le_bytes())?;
        }
    }
    Ok(())
}

fn port_out(size: u8, port: u16, value: u32) {
    // SAFETY: port I/O from CPL 3 either exits to the host (which ends the
    // call or resumes here) or raises #GP; it touches no guest memory.
    unsafe {
        match size {
            1 => core::arch::asm!("out dx, al", in("dx") port, in("al") value as u8),
            2 => core::arch::asm!("out dx, ax", in("dx") port, in("ax") value as u16),
            _ => core::arch::asm!("out dx, eax", in("dx") port, in("eax") value),
        }
    }
}

fn port_in(size: u8, port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `port_out`; the value lands in a register.
    unsafe {
        match size {
            1 => {
                let v: u8;
                core::arch::asm!("in al, dx", in("dx") port, out("al") v);
                value = u32::from(v);
            }
            2 => {
                let v: u16;
                core::arch::asm!("in ax, dx", in("dx") port, out("ax") v);
                value = u32::from(v);
            }
            _ => core::arch::asm!("in eax, dx", in("dx") port, out("eax") value),
        }
    }
    value
}

/// Id 15: one privileged (or system) instruction at CPL 3, by selector:
/// 0 `cli`, 1 `hlt`, 2 `int 0x80`, 3 `iretq` to a CPL 0 frame, 4 `mov
/// cr3`, 5 `wrmsr` (EFER), 6 `int 14` (a software "page fault"), 7 `int3`,
/// 8 `sti`, 9 `lidt`, 10 `syscall`, 11 `sysenter`, 12 `vmcall`,
/// 13 `vmmcall`, 14 an SSE instruction, 15 `swapgs`, 16 `int 8`,
/// 17 `rdmsr`, 18 `mov dr7`, 19 `wbinvd`, 20 `icebp`, 21–25 string I/O
/// (`rep outsb` from the null page, `rep insb` into code, `rep outsb` from
/// a buffer, `rep outsb` to the DONE port, `rep insb` into the boot
/// page). If the instruction does not
/// fault the function answers `b"executed"` (and `b"escalated"` if `iretq`
/// reached CPL 0).
pub fn privileged(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    // SAFETY: each instruction either raises an exception at CPL 3 or exits
    // to the host, which ends the execution, or runs without touching
    // memory the compiler knows about (the stack pushes of `iretq` are
    // popped by it; `lidt` and `outsb` only read; `insb` targets read-only
    // pages and exits to the host before writing).
    unsafe {
        match selector(input) {
            0 => core::arch::asm!("cli"),
            1 => core::arch::asm!("hlt"),
            2 => core::arch::asm!("int 0x80"),
            3 => {
                let cpl: u64;
                core::arch::asm!(
                    "mov {tmp}, rsp",
                    "push 0x10",
                    "push {tmp}",
                    "pushfq",
                    "push 0x08",
                    "lea {tmp}, [rip + 2f]",
                    "push {tmp}",
                    "iretq",
                    "2:",
                    "mov {tmp}, cs",
                    "and {tmp}, 3",
                    tmp = out(reg) cpl,
                );
                if cpl == 0 {
                    return out.write(b"escalated");
                }
            }
            4 => core::arch::asm!("mov cr3, {}", in(reg) 0x4000u64),
            5 => {
                core::arch::asm!("wrmsr", in("ecx") 0xC000_0080u32, in("eax") 0u32, in("edx") 0u32)
            }
            6 => core::arch::asm!("int 14"),
            7 => core::arch::asm!("int3"),
            8 => core::arch::asm!("sti"),
            9 => {
                let descriptor = [0u64; 2];
                core::arch::asm!("lidt [{}]", in(reg) descriptor.as_ptr());
            }
            10 => core::arch::asm!("syscall", out("rcx") _, out("r11") _),
            11 => core::arch::asm!("sysenter"),
            // A hypercall KVM may serve (it answers CPL 3 with an error in
            // RAX).
            12 => core::arch::asm!("vmcall", inout("rax") 0u64 => _),
            13 => core::arch::asm!("vmmcall", inout("rax") 0u64 => _),
            // The guest is soft-float: the compiler never keeps anything in
            // xmm0, so clobbering it is harmless.
            14 => core::arch::asm!("movaps xmm0, xmm1"),
            15 => core::arch::asm!("swapgs"),
            16 => core::arch::asm!("int 8"),
            17 => core::arch::asm!("rdmsr", in("ecx") 0xC000_0080u32, out("eax") _, out("edx") _),
            18 => core::arch::asm!("mov dr7, {}", in(reg) 0u64),
            19 => core::arch::asm!("wbinvd"),
            // icebp (int1).
            20 => core::arch::asm!(".byte 0xf1"),
            // String I/O: from the unmapped null page, into read-only code,
            // from a buffer, to the DONE port, into the boot page.
            21 => {
                core::arch::asm!("rep outsb", in("dx") 0xE9u16, inout("rsi") 0u64 => _, inout("rcx") 3u64 => _)
            }
            22 => {
                core::arch::asm!("rep insb", in("dx") 0xE9u16, inout("rdi") IMAGE_BASE => _, inout("rcx") 3u64 => _)
            }
            23 => {
                let bytes = [0x42u8; 4];
                core::arch::asm!("rep outsb", in("dx") 0xE9u16, inout("rsi") bytes.as_ptr() => _, inout("rcx") 4u64 => _);
            }
            24 => {
                core::arch::asm!("rep outsb", in("dx") 0xE1u16, inout("rsi") IMAGE_BASE => _, inout("rcx") 2u64 => _)
            }
            25 => {
                core::arch::asm!("rep insb", in("dx") 0xE9u16, inout("rdi") BOOT_INFO_GPA => _, inout("rcx") 8u64 => _)
            }
            _ => return Err(GuestError::new("unknown selector")),
        }
    }
    out.write(b"executed")
}

/// Id 16: selector 0 allocates 64 KiB blocks until the heap runs out;
/// 1 asks for one 1 GiB block.
pub fn exhaust_heap(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    if selector(input) == 1 {
        let huge: Vec<u8> = Vec::with_capacity(1 << 30);
        core::hint::black_box(&huge);
        return Err(GuestError::new("a 1 GiB allocation succeeded"));
    }
    let mut hoard: Vec<Box<[u8]>> = Vec::new();
    loop {
        hoard.push(vec![0x5Au8; 64 * 1024].into_boxed_slice());
        core::hint::black_box(&hoard);
    }
}

/// Fills `[start, start + len)` with `pattern`, 8 bytes at a time; returns
/// the bytes written.
///
/// # Safety
/// The range must be mapped writable for the guest and hold nothing any
/// live Rust reference points to.
unsafe fn fill(start: u64, len: u64, pattern: u8) -> u64 {
    let word = u64::from_ne_bytes([pattern; 8]);
    let words = len / 8;
    let base = (start & !7) as *mut u64;
    for i in 0..words as usize {
        // SAFETY: inside the range the caller vouches for.
        unsafe { base.add(i).write_volatile(word) };
    }
    words * 8
}

/// Heap left untouched by [`scribble_everything`], so the allocator never
/// runs out (which would end the call).
const HEAP_RESERVE: u64 = 64 * 1024;

/// Id 17: writes the pattern byte (default 0xA5) over every page the guest
/// can spare: the report page, the exception stack the host's handlers use,
/// the input ring's data, the output ring past the response being built,
/// the free stack below this frame and the free heap (all but
/// [`HEAP_RESERVE`]). Left alone: the kernel's own statics and live stack
/// frames, the ring headers, and the log buffer. Answers the bytes written
/// (u64 LE).
pub fn scribble_everything(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let pattern = input.first().copied().unwrap_or(0xA5);
    let info = boot();
    let slot = dispatch::host_call_slot().unwrap_or(0) as u64;
    let ring = RING_HEADER_SIZE as u64;
    let stack_bottom = info.stack_top - info.stack_size;
    // A page of margin below this frame for `fill`'s own frame.
    let stack_end = (stack_pointer() - PAGE_SIZE) & !(PAGE_SIZE - 1);
    let regions = [
        (info.report_va, PAGE_SIZE),
        (info.ist_stack_top - IST_STACK_SIZE, IST_STACK_SIZE),
        (info.input_ring_va + ring, info.input_ring_size - ring),
        (
            info.output_ring_va + ring + slot,
            info.output_ring_size.saturating_sub(ring + slot),
        ),
        (stack_bottom, stack_end.saturating_sub(stack_bottom)),
    ];
    let mut written = 0;
    for (start, len) in regions {
        // SAFETY: every range is a RW region from the host's BootInfo
        // that no live reference covers: the report page and the exception
        // stack are only used while the guest is stopped, the request
        // payload in the input ring was read above and is not used again,
        // the output range starts past the response being built, and the
        // stack range lies below this frame's margin.
        written += unsafe { fill(start, len, pattern) };
    }
    written += fill_heap(pattern);
    out.write(&written.to_le_bytes())
}

/// Allocates the free heap in pages filled with `pattern`, then frees it.
fn fill_heap(pattern: u8) -> u64 {
    const CHUNK: usize = 4096;
    let free = nub_arch_x86::heap_stats().free;
    let mut hoard: Vec<Box<[u8]>> = Vec::with_capacity((free / CHUNK as u64) as usize + 1);
    let mut written = 0;
    while nub_arch_x86::heap_stats().free > HEAP_RESERVE && hoard.len() < hoard.capacity() {
        hoard.push(vec![pattern; CHUNK].into_boxed_slice());
        written += CHUNK as u64;
    }
    written
}
