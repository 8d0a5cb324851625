//! Fn 13 `taint` (tests only): leaves a secret everywhere a guest can, and
//! reports the register state a call finds, so the host can check that a
//! VM reused from the pool shows nothing of the guest that ran before.
//!
//! Payload: a selector byte, then (for the taint selectors) the secret, a
//! u64 LE. The register selectors answer the registers' bytes as the
//! function finds them at entry: nub guests are built soft-float, so no
//! compiled code touches the SIMD, x87 or MXCSR state, and nothing touches
//! the FS/GS bases; what a call finds there is what the vCPU was given.
//!
//! | selector | reports / taints |
//! | --- | --- |
//! | 0 / 10 | SSE: xmm0..=xmm15 (16 bytes each), MXCSR (4), x87 control and status words (2 + 2) |
//! | 1 / 11 | AVX: the upper halves of ymm0..=ymm15 (16 bytes each) |
//! | 2 / 12 | AVX-512: zmm0..=zmm15's upper 256 bits (32 each), zmm16..=zmm31 (64 each), k0..=k7 (8 each) |
//! | 3 / 13 | FS and GS base (8 + 8; `rdfsbase`/`wrfsbase`, the secret made canonical) |
//! | 4 / 14 | segment selectors FS, GS, DS, ES, SS (2 each) and RFLAGS (8); taint loads null FS and GS |
//! | 15 | memory: every page the guest can spare (see [`taint_memory`]); answers the bytes written, u64 LE |
//! | 16 | sets RFLAGS.AC: under kvm_pvm the guest runs with the host's CR0.AM, so this turns alignment checks on and the kernel's next misaligned access faults (#AC) |
//!
//! An instruction the CPU or the VM does not run (`#UD`) ends the call in a
//! fault: that state is then out of the guest's reach, which is what the
//! host concludes.

use alloc::{boxed::Box, vec, vec::Vec};
use core::sync::atomic::Ordering;

use nub_arch_x86::{
    GuestError, Output,
    abi::{
        boot::BootInfo,
        layout::{BOOT_INFO_GPA, IST_STACK_SIZE, PAGE_SIZE},
        resident,
        ring::RING_HEADER_SIZE,
    },
    dispatch,
};

/// Heap left untouched by the memory taint, so the allocator never runs
/// out (which would end the call).
const HEAP_RESERVE: u64 = 64 * 1024;

/// The secret as FS/GS base: a base must be canonical.
pub const fn canonical(secret: u64) -> u64 {
    secret & 0x0000_7FFF_FFFF_FFF0
}

/// Fn 13: see the module docs.
pub fn taint(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let (&selector, rest) = input
        .split_first()
        .ok_or(GuestError::new("expected a selector"))?;
    if selector < 10 {
        return report(selector, out);
    }
    let secret = rest
        .first_chunk::<8>()
        .map(|b| u64::from_le_bytes(*b))
        .ok_or(GuestError::new("expected a u64 LE secret"))?;
    let payload_end = rest.as_ptr() as u64 + rest.len() as u64;
    match selector {
        10 => taint_sse(secret),
        11 => taint_avx(secret),
        12 => taint_avx512(secret),
        13 => taint_bases(secret),
        14 => taint_segments(),
        16 => set_alignment_check(),
        15 => {
            let written = taint_memory(secret, payload_end);
            return out.write(&written.to_le_bytes());
        }
        _ => return Err(GuestError::new("unknown taint selector")),
    }
    Ok(())
}

fn report(selector: u8, out: &mut Output<'_>) -> Result<(), GuestError> {
    match selector {
        0 => {
            let mut buf = [0u8; 16 * 16 + 8];
            // SAFETY: stores into `buf` only (264 bytes, every offset below
            // inside it); the SIMD and x87 registers read are not used by
            // compiled code (soft-float), so nothing is clobbered.
            unsafe {
                core::arch::asm!(
                    "movdqu [{p}], xmm0", "movdqu [{p} + 16], xmm1",
                    "movdqu [{p} + 32], xmm2", "movdqu [{p} + 48], xmm3",
                    "movdqu [{p} + 64], xmm4", "movdqu [{p} + 80], xmm5",
                    "movdqu [{p} + 96], xmm6", "movdqu [{p} + 112], xmm7",
                    "movdqu [{p} + 128], xmm8", "movdqu [{p} + 144], xmm9",
                    "movdqu [{p} + 160], xmm10", "movdqu [{p} + 176], xmm11",
                    "movdqu [{p} + 192], xmm12", "movdqu [{p} + 208], xmm13",
                    "movdqu [{p} + 224], xmm14", "movdqu [{p} + 240], xmm15",
                    "stmxcsr [{p} + 256]",
                    "fnstcw [{p} + 260]",
                    "fnstsw [{p} + 262]",
                    p = in(reg) buf.as_mut_ptr(),
                    options(nostack),
                );
            }
            out.write(&buf)
        }
        1 => {
            let mut buf = [0u8; 16 * 16];
            // SAFETY: stores into `buf` only (256 bytes); reads registers
            // compiled code never uses.
            unsafe {
                core::arch::asm!(
                    "vextractf128 [{p}], ymm0, 1", "vextractf128 [{p} + 16], ymm1, 1",
                    "vextractf128 [{p} + 32], ymm2, 1", "vextractf128 [{p} + 48], ymm3, 1",
                    "vextractf128 [{p} + 64], ymm4, 1", "vextractf128 [{p} + 80], ymm5, 1",
                    "vextractf128 [{p} + 96], ymm6, 1", "vextractf128 [{p} + 112], ymm7, 1",
                    "vextractf128 [{p} + 128], ymm8, 1", "vextractf128 [{p} + 144], ymm9, 1",
                    "vextractf128 [{p} + 160], ymm10, 1", "vextractf128 [{p} + 176], ymm11, 1",
                    "vextractf128 [{p} + 192], ymm12, 1", "vextractf128 [{p} + 208], ymm13, 1",
                    "vextractf128 [{p} + 224], ymm14, 1", "vextractf128 [{p} + 240], ymm15, 1",
                    p = in(reg) buf.as_mut_ptr(),
                    options(nostack),
                );
            }
            out.write(&buf)
        }
        2 => {
            let mut buf = vec![0u8; 16 * 32 + 16 * 64 + 8 * 8];
            // SAFETY: stores into `buf` only (1600 bytes: 512 for the upper
            // halves of zmm0..=15, 1024 for zmm16..=31, 64 for k0..=7);
            // reads registers compiled code never uses.
            unsafe {
                core::arch::asm!(
                    "vextracti64x4 [{p}], zmm0, 1", "vextracti64x4 [{p} + 32], zmm1, 1",
                    "vextracti64x4 [{p} + 64], zmm2, 1", "vextracti64x4 [{p} + 96], zmm3, 1",
                    "vextracti64x4 [{p} + 128], zmm4, 1", "vextracti64x4 [{p} + 160], zmm5, 1",
                    "vextracti64x4 [{p} + 192], zmm6, 1", "vextracti64x4 [{p} + 224], zmm7, 1",
                    "vextracti64x4 [{p} + 256], zmm8, 1", "vextracti64x4 [{p} + 288], zmm9, 1",
                    "vextracti64x4 [{p} + 320], zmm10, 1", "vextracti64x4 [{p} + 352], zmm11, 1",
                    "vextracti64x4 [{p} + 384], zmm12, 1", "vextracti64x4 [{p} + 416], zmm13, 1",
                    "vextracti64x4 [{p} + 448], zmm14, 1", "vextracti64x4 [{p} + 480], zmm15, 1",
                    "vmovdqu64 [{p} + 512], zmm16", "vmovdqu64 [{p} + 576], zmm17",
                    "vmovdqu64 [{p} + 640], zmm18", "vmovdqu64 [{p} + 704], zmm19",
                    "vmovdqu64 [{p} + 768], zmm20", "vmovdqu64 [{p} + 832], zmm21",
                    "vmovdqu64 [{p} + 896], zmm22", "vmovdqu64 [{p} + 960], zmm23",
                    "vmovdqu64 [{p} + 1024], zmm24", "vmovdqu64 [{p} + 1088], zmm25",
                    "vmovdqu64 [{p} + 1152], zmm26", "vmovdqu64 [{p} + 1216], zmm27",
                    "vmovdqu64 [{p} + 1280], zmm28", "vmovdqu64 [{p} + 1344], zmm29",
                    "vmovdqu64 [{p} + 1408], zmm30", "vmovdqu64 [{p} + 1472], zmm31",
                    "kmovq [{p} + 1536], k0", "kmovq [{p} + 1544], k1",
                    "kmovq [{p} + 1552], k2", "kmovq [{p} + 1560], k3",
                    "kmovq [{p} + 1568], k4", "kmovq [{p} + 1576], k5",
                    "kmovq [{p} + 1584], k6", "kmovq [{p} + 1592], k7",
                    p = in(reg) buf.as_mut_ptr(),
                    options(nostack),
                );
            }
            out.write(&buf)
        }
        3 => {
            let (fs, gs): (u64, u64);
            // SAFETY: reads the FS and GS bases into registers; no memory.
            unsafe {
                core::arch::asm!(
                    "rdfsbase {fs}",
                    "rdgsbase {gs}",
                    fs = out(reg) fs,
                    gs = out(reg) gs,
                    options(nomem, nostack),
                );
            }
            let mut buf = [0u8; 16];
            buf[..8].copy_from_slice(&fs.to_le_bytes());
            buf[8..].copy_from_slice(&gs.to_le_bytes());
            out.write(&buf)
        }
        4 => {
            let mut buf = [0u8; 5 * 2 + 8];
            // SAFETY: stores into `buf` only (18 bytes); the push/pop pair
            // leaves RSP as it was (the red zone is not used: nostack is
            // not claimed).
            unsafe {
                core::arch::asm!(
                    "mov word ptr [{p}], fs",
                    "mov word ptr [{p} + 2], gs",
                    "mov word ptr [{p} + 4], ds",
                    "mov word ptr [{p} + 6], es",
                    "mov word ptr [{p} + 8], ss",
                    "pushfq",
                    "pop {t}",
                    "mov qword ptr [{p} + 10], {t}",
                    p = in(reg) buf.as_mut_ptr(),
                    t = out(reg) _,
                );
            }
            out.write(&buf)
        }
        _ => Err(GuestError::new("unknown report selector")),
    }
}

fn taint_sse(secret: u64) {
    let words = [secret, !secret];
    // SAFETY: reads 16 bytes from `words`; writes SIMD, MXCSR and x87
    // control state that compiled code never uses (soft-float). MXCSR
    // 0x1fa0 and control word 0x27f are valid values (all exceptions
    // masked).
    unsafe {
        core::arch::asm!(
            "movdqu xmm0, [{p}]", "movdqu xmm1, [{p}]", "movdqu xmm2, [{p}]",
            "movdqu xmm3, [{p}]", "movdqu xmm4, [{p}]", "movdqu xmm5, [{p}]",
            "movdqu xmm6, [{p}]", "movdqu xmm7, [{p}]", "movdqu xmm8, [{p}]",
            "movdqu xmm9, [{p}]", "movdqu xmm10, [{p}]", "movdqu xmm11, [{p}]",
            "movdqu xmm12, [{p}]", "movdqu xmm13, [{p}]", "movdqu xmm14, [{p}]",
            "movdqu xmm15, [{p}]",
            "mov dword ptr [rsp - 8], 0x1fa0",
            "ldmxcsr [rsp - 8]",
            "mov word ptr [rsp - 8], 0x27f",
            "fldcw [rsp - 8]",
            p = in(reg) words.as_ptr(),
        );
    }
}

fn taint_avx(secret: u64) {
    // SAFETY: reads 8 bytes from `secret`; writes ymm registers compiled
    // code never uses.
    unsafe {
        core::arch::asm!(
            "vbroadcastsd ymm0, [{p}]", "vbroadcastsd ymm1, [{p}]",
            "vbroadcastsd ymm2, [{p}]", "vbroadcastsd ymm3, [{p}]",
            "vbroadcastsd ymm4, [{p}]", "vbroadcastsd ymm5, [{p}]",
            "vbroadcastsd ymm6, [{p}]", "vbroadcastsd ymm7, [{p}]",
            "vbroadcastsd ymm8, [{p}]", "vbroadcastsd ymm9, [{p}]",
            "vbroadcastsd ymm10, [{p}]", "vbroadcastsd ymm11, [{p}]",
            "vbroadcastsd ymm12, [{p}]", "vbroadcastsd ymm13, [{p}]",
            "vbroadcastsd ymm14, [{p}]", "vbroadcastsd ymm15, [{p}]",
            p = in(reg) &secret,
            options(nostack),
        );
    }
}

fn taint_avx512(secret: u64) {
    // SAFETY: reads 8 bytes from `secret`; writes zmm and mask registers
    // compiled code never uses.
    unsafe {
        core::arch::asm!(
            "vpbroadcastq zmm0, [{p}]", "vpbroadcastq zmm1, [{p}]",
            "vpbroadcastq zmm2, [{p}]", "vpbroadcastq zmm3, [{p}]",
            "vpbroadcastq zmm4, [{p}]", "vpbroadcastq zmm5, [{p}]",
            "vpbroadcastq zmm6, [{p}]", "vpbroadcastq zmm7, [{p}]",
            "vpbroadcastq zmm8, [{p}]", "vpbroadcastq zmm9, [{p}]",
            "vpbroadcastq zmm10, [{p}]", "vpbroadcastq zmm11, [{p}]",
            "vpbroadcastq zmm12, [{p}]", "vpbroadcastq zmm13, [{p}]",
            "vpbroadcastq zmm14, [{p}]", "vpbroadcastq zmm15, [{p}]",
            "vpbroadcastq zmm16, [{p}]", "vpbroadcastq zmm17, [{p}]",
            "vpbroadcastq zmm18, [{p}]", "vpbroadcastq zmm19, [{p}]",
            "vpbroadcastq zmm20, [{p}]", "vpbroadcastq zmm21, [{p}]",
            "vpbroadcastq zmm22, [{p}]", "vpbroadcastq zmm23, [{p}]",
            "vpbroadcastq zmm24, [{p}]", "vpbroadcastq zmm25, [{p}]",
            "vpbroadcastq zmm26, [{p}]", "vpbroadcastq zmm27, [{p}]",
            "vpbroadcastq zmm28, [{p}]", "vpbroadcastq zmm29, [{p}]",
            "vpbroadcastq zmm30, [{p}]", "vpbroadcastq zmm31, [{p}]",
            "kmovq k0, [{p}]", "kmovq k1, [{p}]", "kmovq k2, [{p}]",
            "kmovq k3, [{p}]", "kmovq k4, [{p}]", "kmovq k5, [{p}]",
            "kmovq k6, [{p}]", "kmovq k7, [{p}]",
            p = in(reg) &secret,
            options(nostack),
        );
    }
}

fn taint_bases(secret: u64) {
    // SAFETY: writes the FS and GS bases, which the guest kernel and the
    // compiled code never use (no thread-locals, no segment overrides).
    unsafe {
        core::arch::asm!(
            "wrfsbase {v}",
            "wrgsbase {v}",
            v = in(reg) canonical(secret),
            options(nomem, nostack),
        );
    }
}

fn taint_segments() {
    // SAFETY: loads the null selector into FS and GS (allowed at CPL 3 in
    // 64-bit mode; nothing uses them).
    unsafe {
        core::arch::asm!(
            "xor {t:e}, {t:e}",
            "mov fs, {t:x}",
            "mov gs, {t:x}",
            t = out(reg) _,
            options(nomem, nostack),
        );
    }
}

fn set_alignment_check() {
    // SAFETY: sets RFLAGS.AC; the push/pop pair leaves RSP as it was. With
    // CR0.AM set (the host's, under kvm_pvm) a later misaligned access
    // faults: the call may end there, which is what the selector is for.
    unsafe {
        core::arch::asm!("pushfq", "or qword ptr [rsp], 0x40000", "popfq");
    }
}

fn boot() -> BootInfo {
    // SAFETY: the host maps the boot page readable at BOOT_INFO_GPA with a
    // BootInfo (repr(C), 8-byte aligned at a page start) at its start; the
    // volatile read copies it out and keeps no reference.
    unsafe { (BOOT_INFO_GPA as *const BootInfo).read_volatile() }
}

fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads RSP into a register; no memory access.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    rsp
}

/// Writes `word` over `[start, start + len)` (8-byte aligned inside it);
/// returns the bytes written.
///
/// # Safety
///
/// The range must be mapped writable and covered by no live reference.
unsafe fn fill(start: u64, len: u64, word: u64) -> u64 {
    let first = start.next_multiple_of(8);
    let end = start.saturating_add(len) & !7;
    let mut at = first;
    while at < end {
        // SAFETY: inside the range the caller vouches for, 8-byte aligned.
        unsafe { (at as *mut u64).write_volatile(word) };
        at += 8;
    }
    end.saturating_sub(first)
}

/// Writes `secret` over every page the guest can spare: the report page,
/// the exception stack, the input ring past this call's payload (which
/// ends at `payload_end`), the output ring past the response being built,
/// the log buffer's data, the control block's unused words, the free stack
/// below this frame and the free heap (all but [`HEAP_RESERVE`]), and the
/// default guest's own counter (fn 2). Left alone: the kernel's statics and
/// live stack frames, the ring and log headers, the control words.
fn taint_memory(secret: u64, payload_end: u64) -> u64 {
    let info = boot();
    let slot = dispatch::host_call_slot().unwrap_or(0) as u64;
    let ring = RING_HEADER_SIZE as u64;
    let input_end = info.input_ring_va + info.input_ring_size;
    let input_from = payload_end
        .clamp(info.input_ring_va + ring, input_end)
        .next_multiple_of(16);
    let stack_bottom = info.stack_top - info.stack_size;
    // A page of margin below this frame for `fill`'s own frame.
    let stack_end = (stack_pointer() - PAGE_SIZE) & !(PAGE_SIZE - 1);
    // The log header is 64 bytes (nub_host_common::log_buffer).
    let log_header = 64;
    let regions = [
        (info.report_va, PAGE_SIZE),
        (info.ist_stack_top - IST_STACK_SIZE, IST_STACK_SIZE),
        (input_from, input_end.saturating_sub(input_from)),
        (
            info.output_ring_va + ring + slot,
            info.output_ring_size.saturating_sub(ring + slot),
        ),
        (
            info.log_va + log_header,
            info.log_size.saturating_sub(log_header),
        ),
        (stack_bottom, stack_end.saturating_sub(stack_bottom)),
    ];
    let mut written = 0;
    for (start, len) in regions {
        // SAFETY: every range is a RW region from the host's BootInfo that
        // no live reference covers: the report page and the exception stack
        // are only used while the guest is stopped, the input ring past
        // this call's payload holds no request of this call, the output
        // range starts past the response being built, the log data past
        // the header is only read after the header says so (and this call
        // logs nothing), and the stack range lies below this frame.
        written += unsafe { fill(start, len, secret) };
    }
    written += taint_control_block(&info, secret);
    crate::COUNTER.store(secret, Ordering::Relaxed);
    written + fill_heap(secret)
}

/// Fills the control block's page but for the words the resident protocol
/// uses (one u64 on each of its first cache lines).
fn taint_control_block(info: &BootInfo, secret: u64) -> u64 {
    let used = [
        resident::GUEST_STATE,
        resident::HOST_WAITING,
        resident::HOSTCALL_REQUEST,
        resident::HOSTCALL_OFFSET,
        resident::HOSTCALL_RESPONSE,
        resident::SPIN_ITERATIONS,
    ];
    let mut written = 0;
    for offset in (0..PAGE_SIZE as usize).step_by(8) {
        if used.contains(&offset) {
            continue;
        }
        // SAFETY: a word of the control page (mapped RW, page aligned) that
        // the resident protocol does not use, so no one else accesses it.
        written += unsafe { fill(info.control_va + offset as u64, 8, secret) };
    }
    written
}

/// Free bytes in the guest heap.
#[cfg(target_os = "none")]
fn free_heap() -> u64 {
    nub_arch_x86::heap_stats().free
}

/// Free bytes in the guest heap: none to fill in the host unit tests
/// (which never run the memory taint).
#[cfg(not(target_os = "none"))]
fn free_heap() -> u64 {
    0
}

/// Allocates the free heap in pages filled with `secret`, then frees it.
fn fill_heap(secret: u64) -> u64 {
    const CHUNK: usize = 4096;
    let bytes = secret.to_le_bytes();
    let free = free_heap();
    let mut hoard: Vec<Box<[u8]>> = Vec::with_capacity((free / CHUNK as u64) as usize + 1);
    let mut written = 0;
    while free_heap() > HEAP_RESERVE && hoard.len() < hoard.capacity() {
        let mut page = vec![0u8; CHUNK];
        for chunk in page.chunks_exact_mut(8) {
            chunk.copy_from_slice(&bytes);
        }
        hoard.push(page.into_boxed_slice());
        written += CHUNK as u64;
    }
    written
}
