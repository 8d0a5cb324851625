//! The default nub guest. Its fn ids are a contract shared by the tests,
//! the CLI and the benches; keep them stable.
//!
//! | id | name | payload | result |
//! | --- | --- | --- | --- |
//! | 1 | `echo` | any bytes | the same bytes |
//! | 2 | `add` | u64 LE | new running total, u64 LE |
//! | 3 | `fail` | UTF-8 message | guest-function error with that message |
//! | 4 | `blake3` | any bytes | 32-byte blake3 hash |
//! | 5 | `host_echo` | u32 LE host fn id + bytes | the host function's answer |
//! | 6 | `cap_sum` | 32-byte cap hash | sum of the Data cap's bytes, u64 LE |
//! | 7 | `host_loop` | u32 LE host fn id + u32 LE count | sum of the u32 LE answers, u64 LE |
//! | 8 | `fault` | selector byte | never returns normally (see [`fault`]) |
//! | 9 | `spin` | - | never returns |
//! | 10 | `scribble_directory` | selector byte (+ bytes) | corrupts the directory header (tests only) |
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering};

use nub_arch_x86::{GuestError, Output, Registry};

/// Fn id of `echo`.
pub const ECHO: u32 = 1;
/// Fn id of `add`.
pub const ADD: u32 = 2;
/// Fn id of `fail`.
pub const FAIL: u32 = 3;
/// Fn id of `blake3`.
pub const BLAKE3: u32 = 4;
/// Fn id of `host_echo`.
pub const HOST_ECHO: u32 = 5;
/// Fn id of `cap_sum`.
pub const CAP_SUM: u32 = 6;
/// Fn id of `scribble_directory`.
pub const SCRIBBLE_DIRECTORY: u32 = 10;
/// Fn id of `host_loop`.
pub const HOST_LOOP: u32 = 7;
/// Fn id of `fault`.
pub const FAULT: u32 = 8;
/// Fn id of `spin`.
pub const SPIN: u32 = 9;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    out.write(input)
}

fn u64_arg(input: &[u8]) -> Result<u64, GuestError> {
    let raw: [u8; 8] = input
        .try_into()
        .map_err(|_| GuestError::new("expected a u64 LE payload (8 bytes)"))?;
    Ok(u64::from_le_bytes(raw))
}

fn add(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let n = u64_arg(input)?;
    let total = COUNTER.load(Ordering::Relaxed).wrapping_add(n);
    COUNTER.store(total, Ordering::Relaxed);
    out.write(&total.to_le_bytes())
}

fn fail(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    Err(GuestError::msg(alloc::string::String::from_utf8_lossy(
        input,
    )))
}

fn hash(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    out.write(blake3::hash(input).as_bytes())
}

fn split_u32(input: &[u8]) -> Result<(u32, &[u8]), GuestError> {
    let (id, rest) = input
        .split_first_chunk::<4>()
        .ok_or(GuestError::new("expected a u32 LE host fn id"))?;
    Ok((u32::from_le_bytes(*id), rest))
}

fn host_echo(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let (fn_id, bytes) = split_u32(input)?;
    let answer = nub_arch_x86::host_call(fn_id, bytes).map_err(GuestError::msg)?;
    out.write(&answer)
}

fn host_loop(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let (fn_id, rest) = split_u32(input)?;
    let (count, _) = split_u32(rest)?;
    let mut sum = 0u64;
    for i in 0..count {
        let answer = nub_arch_x86::host_call(fn_id, &i.to_le_bytes()).map_err(GuestError::msg)?;
        let (value, _) = split_u32(&answer)?;
        sum += u64::from(value);
    }
    out.write(&sum.to_le_bytes())
}

fn cap_sum(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let hash: [u8; 32] = input
        .try_into()
        .map_err(|_| GuestError::new("expected a 32-byte cap hash"))?;
    let sum = {
        let dir = nub_arch_x86::state_cache::DIRECTORY.lock();
        let cap = dir
            .get(&nub_arch_x86::javm_cap::CapHash::from_bytes(hash))
            .ok_or(GuestError::new("no cap with that hash"))?;
        let data = cap
            .data()
            .ok_or(GuestError::new("the cap is not a Data cap"))?;
        data.iter().map(|&b| u64::from(b)).sum::<u64>()
    };
    out.write(&sum.to_le_bytes())
}

/// Corrupts the directory's host-readable header, to test that the host's
/// reader survives it. The selector byte picks the damage: 0 magic, 1 a
/// capacity that is not a power of two, 2 a huge capacity, 3 a table address
/// outside memory, 4 the rest of the payload copied over the header.
fn scribble_directory(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let header = nub_arch_x86::state_cache::DIRECTORY.lock().header_addr() as *mut u64;
    let (selector, rest) = input
        .split_first()
        .ok_or(GuestError::new("expected a selector"))?;
    let (word, value) = match selector {
        0 => (0, 0),
        1 => (2, 3),
        2 => (2, 1 << 40),
        3 => (4, 0xffff_ffff_0000),
        4 => {
            let len = rest.len().min(64);
            // SAFETY: the header is a 64-byte heap block the directory owns;
            // the guest is single-threaded and the lock is released.
            unsafe { core::ptr::copy_nonoverlapping(rest.as_ptr(), header.cast::<u8>(), len) };
            return Ok(());
        }
        _ => return Err(GuestError::new("unknown scribble selector")),
    };
    // SAFETY: as above; `word` < 8 indexes inside the 64-byte header.
    unsafe { header.add(word).write_volatile(value) };
    Ok(())
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let buf = [depth; 64];
    core::hint::black_box(&buf);
    recurse(depth + 1) + core::hint::black_box(buf[3])
}

/// The address read by fault selector 0: in the unmapped null page.
const UNMAPPED: u64 = 0x10;
/// The address written by fault selector 9: beyond all guest memory.
const BEYOND_MEMORY: u64 = 0x3000_0000;

fn read_unmapped() {
    // SAFETY: deliberately faults (#PF); the kernel reports it and the
    // execution ends there.
    unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
}

fn general_protection() {
    // SAFETY: a non-canonical address raises #GP; the execution ends there.
    unsafe { core::ptr::read_volatile(0x8000_0000_0000_0000u64 as *const u64) };
}

fn invalid_opcode() {
    // SAFETY: `ud2` raises #UD; the execution ends there.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}

fn divide_by_zero() {
    // SAFETY: dividing by a zero register raises #DE; the execution ends
    // there. The clobbered registers are declared.
    unsafe {
        core::arch::asm!(
            "xor edx, edx",
            "xor eax, eax",
            "xor ecx, ecx",
            "div ecx",
            out("eax") _,
            out("edx") _,
            out("ecx") _,
            options(nomem, nostack),
        )
    };
}

fn write_own_code() {
    // SAFETY: code pages are read-only, so this raises #PF; the execution
    // ends there.
    unsafe { core::ptr::write_volatile(fault as *const () as *mut u8, 0xcc) };
}

fn out_unknown_port() {
    // SAFETY: an `out` to a port nub does not define exits to the host,
    // which ends the execution with an unknown-port error.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") 0x3f8u16, in("al") 0u8, options(nomem, nostack))
    };
}

fn write_beyond_memory() {
    // SAFETY: the address is outside guest memory and unmapped: #PF; the
    // execution ends there.
    unsafe { core::ptr::write_volatile(BEYOND_MEMORY as *mut u64, 1) };
}

fn execute_heap() {
    let code = alloc::boxed::Box::new([0xc3u8; 16]);
    // SAFETY: the heap is mapped no-execute, so the call raises #PF (an
    // instruction fetch) before any byte runs; the execution ends there.
    let f: extern "C" fn() = unsafe { core::mem::transmute(code.as_ptr()) };
    f();
}

fn exhaust_heap() -> ! {
    let mut hoard = alloc::vec::Vec::new();
    loop {
        hoard.push(alloc::vec![0u8; 64 * 1024]);
    }
}

/// Misbehaves on purpose; the payload's first byte picks how:
/// 0 read of an unmapped address, 1 general protection fault, 2 `ud2`,
/// 3 divide by zero, 4 unbounded recursion, 5 panic, 6 abort with code 42,
/// 7 write to its own code, 8 `out` to an unknown port, 9 access beyond
/// guest memory, 10 exhaust the heap, 11 execute from the heap.
fn fault(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    match input.first().copied().unwrap_or(0xff) {
        0 => read_unmapped(),
        1 => general_protection(),
        2 => invalid_opcode(),
        3 => divide_by_zero(),
        4 => {
            core::hint::black_box(recurse(0));
        }
        5 => panic!("guest panicked on purpose"),
        6 => nub_arch_x86::abort(42, "guest aborted on purpose"),
        7 => write_own_code(),
        8 => out_unknown_port(),
        9 => write_beyond_memory(),
        10 => exhaust_heap(),
        11 => execute_heap(),
        _ => return Err(GuestError::new("unknown fault selector")),
    }
    Err(GuestError::new("the fault did not fault"))
}

fn spin(_: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    loop {
        core::hint::spin_loop();
    }
}

fn init(registry: &mut Registry) {
    let functions: [(u32, nub_arch_x86::GuestFn); 10] = [
        (ECHO, echo),
        (ADD, add),
        (FAIL, fail),
        (BLAKE3, hash),
        (HOST_ECHO, host_echo),
        (HOST_LOOP, host_loop),
        (FAULT, fault),
        (SPIN, spin),
        (CAP_SUM, cap_sum),
        (SCRIBBLE_DIRECTORY, scribble_directory),
    ];
    for (id, f) in functions {
        if registry.register(id, f).is_err() {
            nub_arch_x86::abort(1, "default guest: duplicate fn id");
        }
    }
}

nub_arch_x86::guest_main!(init);
