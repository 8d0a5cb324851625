//! The default nub guest. Its fn ids are a contract shared by the tests,
//! the CLI and the benches, defined once in `nub_host_common::default_guest`
//! (re-exported as `nub_arch_x86::abi`); keep them stable.
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
//! | 11 | `log` | level u8 (1 error … 5 trace), flags u8 (bit 0: panic afterwards), u32 LE count, message | logs `"{message} #{i}"` count times; the count, u32 LE |
//! | 12 | `race_response` | u32 LE rounds | publishes its completion early, then rewrites the output ring while the host reads it (tests only, resident mode) |
//! | 13 | `taint` | selector u8 (+ u64 LE secret) | reports the SIMD/x87/segment registers a call finds, or leaves the secret in them and in every page it can spare (tests only; see [`taint`]) |
//! | 14 | `AddPair` (typed) | `Pair { a, b }` | `a + b`, or `MathError::Overflow` |
//! | 15 | `Count` (typed, state) | u64 | the new count kept in the guest's `State` |
//! | 16 | `EchoBytes` (typed) | `Bytes` | the same bytes |
//! | 17 | `AskHost` (typed) | u64 | host function `Double` (0x200)'s answer |
//! | 18 | `fail_code` | u32 LE code + UTF-8 message | guest-function error with that code and message |
//!
//! Ids 14–17 are declared once, with `nub_interface::interface!`, in
//! `nub_host_common::default_guest::typed`: the host calls them with
//! `sandbox.call::<AddPair>(&pair)` and gets `u64` or `MathError` back; the
//! raw ones are the layer beneath (`call_raw(id, bytes)`).
//!
//! The functions' logic is tested on the host with `nub_arch_x86::testing`
//! (`cargo test --target x86_64-unknown-linux-gnu` in `guest-x86/guests`,
//! part of `cargo xtask test`); under `cfg(test)` this is an ordinary std
//! binary.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

extern crate alloc;

mod taint;

use core::sync::atomic::{AtomicU64, Ordering};

use nub_arch_x86::{GuestError, Output, Registry};

// The fn ids are the ABI's (`nub_host_common::default_guest`), shared with
// the tests, the CLI and the benches.
use nub_arch_x86::abi::default_guest::{
    ADD, BLAKE3, CAP_SUM, ECHO, FAIL, FAIL_CODE, FAULT, HOST_ECHO, HOST_LOOP, LOG, RACE_RESPONSE,
    SCRIBBLE_DIRECTORY, SPIN, TAINT,
};

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

/// A raw error with a code: u32 LE code, then the message.
fn fail_code(input: &[u8], _: &mut Output<'_>) -> Result<(), GuestError> {
    let (code, message) = input
        .split_first_chunk::<4>()
        .ok_or(GuestError::new("expected a u32 LE code"))?;
    Err(
        GuestError::msg(alloc::string::String::from_utf8_lossy(message))
            .with_code(u32::from_le_bytes(*code)),
    )
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
    let hash = nub_arch_x86::javm_cap::CapHash::from_bytes(hash);
    let sum = nub_arch_x86::caps::with_data(&hash, |data| {
        data.iter().map(|&b| u64::from(b)).sum::<u64>()
    })
    .ok_or(match nub_arch_x86::caps::kind(&hash) {
        None => GuestError::new("no cap with that hash"),
        Some(_) => GuestError::new("the cap is not a Data cap"),
    })?;
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
    // SAFETY: guests run with IOPL 0 and the TSS I/O bitmap opens only
    // nub's exit ports, so an `out` to any other port raises #GP (a
    // `GuestFault`, vector 13); the execution ends there.
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

/// Logs a message `count` times at a level, through the `log` crate (the
/// host collects the records; see docs/guest-logs.md), then answers with
/// the count, or panics when flag bit 0 asks for it.
fn log_records(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    let Some((&[level, flags], rest)) = input.split_first_chunk::<2>() else {
        return Err(GuestError::new("expected level, flags, count, message"));
    };
    let Some((count, message)) = rest.split_first_chunk::<4>() else {
        return Err(GuestError::new("expected a u32 LE count"));
    };
    let level = match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        5 => log::Level::Trace,
        _ => return Err(GuestError::new("level must be 1..=5")),
    };
    let count = u32::from_le_bytes(*count);
    let message = core::str::from_utf8(message).map_err(GuestError::msg)?;
    for i in 0..count {
        log::log!(level, "{message} #{i}");
    }
    if flags & 1 != 0 {
        panic!("panicked after logging");
    }
    out.write(&count.to_le_bytes())
}

/// A hostile race for resident mode: stores the current doorbell into the
/// completion word (so a host that trusts the word starts copying the
/// output ring now), then keeps rewriting the output ring's header (all
/// but that word, which shares its cache line) and first frame with
/// varying bytes for `rounds` rounds, then answers
/// normally. The host must come back with a typed error or a clean answer.
fn race_response(input: &[u8], out: &mut Output<'_>) -> Result<(), GuestError> {
    use nub_arch_x86::abi::{boot::BootInfo, layout::BOOT_INFO_GPA, resident};
    let rounds = input
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b))
        .ok_or(GuestError::new("expected a u32 LE round count"))?;
    // SAFETY: the boot page is mapped readable with the host's BootInfo at
    // its start; the volatile read copies it out.
    let info = unsafe { (BOOT_INFO_GPA as *const BootInfo).read_volatile() };
    let input = info.input_ring_va as *mut u64;
    let ring = info.output_ring_va as *mut u64;
    if info.control_va == 0 || input.is_null() || ring.is_null() {
        return Err(GuestError::new("no control block"));
    }
    // SAFETY: the ring headers are mapped, page-aligned guest memory; their
    // doorbell and completion words are accessed only atomically (by the
    // kernel and the host).
    let word = |base: *mut u64, offset: usize| unsafe {
        core::sync::atomic::AtomicU64::from_ptr(base.add(offset / 8))
    };
    let seq = word(input, resident::DOORBELL).load(core::sync::atomic::Ordering::Acquire);
    word(ring, resident::COMPLETION).store(seq, core::sync::atomic::Ordering::SeqCst);
    let mut x = u64::from(rounds) | 1;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for i in (0..24usize).filter(|&i| i != resident::COMPLETION / 8) {
            // SAFETY: the first 192 bytes of the output ring (header and
            // the start of the first frame) are mapped RW; a deliberate
            // race with the host, done with volatile word writes. The
            // running `Output` writes nothing while this loop runs.
            unsafe { ring.add(i).write_volatile(x.rotate_left(i as u32)) };
        }
    }
    out.write(b"survived")
}

fn init(registry: &mut Registry) {
    let functions: [(u32, nub_arch_x86::GuestFn); 14] = [
        (ECHO, echo),
        (ADD, add),
        (FAIL, fail),
        (FAIL_CODE, fail_code),
        (BLAKE3, hash),
        (HOST_ECHO, host_echo),
        (HOST_LOOP, host_loop),
        (FAULT, fault),
        (SPIN, spin),
        (CAP_SUM, cap_sum),
        (SCRIBBLE_DIRECTORY, scribble_directory),
        (LOG, log_records),
        (RACE_RESPONSE, race_response),
        (TAINT, taint::taint),
    ];
    for (id, f) in functions {
        if registry.register(id, f).is_err() {
            nub_arch_x86::abort(1, "default guest: duplicate fn id");
        }
    }
    if typed::register(registry).is_err() {
        nub_arch_x86::abort(1, "default guest: duplicate typed fn id");
    }
}

/// The typed functions (ids 14–17, `nub_host_common::default_guest::typed`):
/// ordinary Rust functions, their state a value the kernel keeps.
mod typed {
    use nub_arch_x86::{
        CallHostError, Registry, RegistryError, State,
        abi::default_guest::typed::*,
        call_host,
        nub_interface::{Bytes, Never},
    };

    /// The state [`Count`] keeps between calls.
    #[derive(Default)]
    pub struct Counter {
        total: u64,
    }

    fn add_pair(p: Pair) -> Result<u64, MathError> {
        p.a.checked_add(p.b).ok_or(MathError::Overflow)
    }

    fn count(counter: &mut Counter, n: u64) -> Result<u64, Never> {
        counter.total = counter.total.wrapping_add(n);
        Ok(counter.total)
    }

    fn echo_bytes(bytes: Bytes) -> Result<Bytes, Never> {
        Ok(bytes)
    }

    fn ask_host(n: u64) -> Result<u64, DoubleError> {
        call_host::<Double>(&n).map_err(|e| match e {
            CallHostError::Host(e) => e,
            other => DoubleError::Call(alloc::format!("{other}")),
        })
    }

    /// Registers them.
    pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
        let counter = State::new(Counter::default());
        registry.typed::<AddPair>(add_pair)?;
        registry.typed_with::<Count, _>(&counter, count)?;
        registry.typed::<EchoBytes>(echo_bytes)?;
        registry.typed::<AskHost>(ask_host)
    }
}

nub_arch_x86::guest_main!(init);

#[cfg(test)]
mod tests {
    use nub_arch_x86::{
        abi::rpc::FN_ID_NUB_PUT_CAP,
        javm_cap::{Cap, CapHash, wire},
        testing::{self, CallError, Harness},
    };

    use super::*;

    /// Host fn id the host-call tests answer.
    const HOST_FN: u32 = 100;

    fn guest_error(message: &'static str) -> CallError {
        CallError::Guest(GuestError::new(message))
    }

    fn host_payload(fn_id: u32, bytes: &[u8]) -> Vec<u8> {
        let mut p = fn_id.to_le_bytes().to_vec();
        p.extend_from_slice(bytes);
        p
    }

    #[test]
    fn echo_returns_its_input() {
        assert_eq!(
            testing::call_id(init, ECHO, b"hello, guest").unwrap(),
            b"hello, guest"
        );
        assert_eq!(testing::call_id(init, ECHO, b"").unwrap(), b"");
        let big = vec![0x5a; 100 << 10];
        assert_eq!(testing::call(echo, &big).unwrap(), big);
    }

    #[test]
    fn add_keeps_a_running_total() {
        let call = |n: u64| -> u64 {
            let out = testing::call_id(init, ADD, &n.to_le_bytes()).unwrap();
            u64::from_le_bytes(out.try_into().unwrap())
        };
        // The counter is a static shared by every call in this process; this
        // is the only test that adds to it.
        let start = call(0);
        assert_eq!(call(5), start + 5);
        assert_eq!(call(7), start + 12);
        assert_eq!(
            testing::call_id(init, ADD, b"short"),
            Err(guest_error("expected a u64 LE payload (8 bytes)"))
        );
    }

    #[test]
    fn fail_code_returns_its_code_and_message() {
        let mut input = 404u32.to_le_bytes().to_vec();
        input.extend_from_slice(b"no such key");
        let err = testing::call_id(init, FAIL_CODE, &input).unwrap_err();
        let testing::CallError::Guest(e) = err else {
            panic!("expected a guest error, got {err:?}");
        };
        assert_eq!((e.code(), e.message()), (404, "no such key"));
    }

    #[test]
    fn fail_returns_its_message_as_a_guest_error() {
        assert_eq!(
            testing::call_id(init, FAIL, b"no such thing"),
            Err(guest_error("no such thing"))
        );
    }

    #[test]
    fn blake3_matches_the_blake3_crate() {
        // The published BLAKE3 hash of the empty input.
        let empty = testing::call_id(init, BLAKE3, b"").unwrap();
        assert_eq!(
            blake3::Hash::from_slice(&empty).unwrap().to_hex().as_str(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        for len in [1usize, 64, 1024, 1025, 65536] {
            let input: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let out = testing::call_id(init, BLAKE3, &input).unwrap();
            assert_eq!(out, blake3::hash(&input).as_bytes(), "{len} bytes");
        }
    }

    #[test]
    fn host_echo_returns_the_host_functions_answer() {
        let mut h = Harness::new().host_fn(HOST_FN, |p| Ok(p.iter().rev().copied().collect()));
        let out = h
            .call_id(init, HOST_ECHO, &host_payload(HOST_FN, b"abc"))
            .unwrap();
        assert_eq!(out, b"cba");
        assert_eq!(h.host_calls(), &[(HOST_FN, b"abc".to_vec())]);
        // Errors of the host call become the guest function's error.
        assert_eq!(
            h.call_id(init, HOST_ECHO, &host_payload(HOST_FN + 1, b"x")),
            Err(CallError::Guest(GuestError::msg(
                nub_arch_x86::HostCallError::UnknownFunction(HOST_FN + 1)
            )))
        );
        assert_eq!(
            h.call_id(init, HOST_ECHO, b"id"),
            Err(guest_error("expected a u32 LE host fn id"))
        );
        let mut refusing = Harness::new().host_fn(HOST_FN, |_| Err("refused".into()));
        let err = refusing
            .call_id(init, HOST_ECHO, &host_payload(HOST_FN, b""))
            .unwrap_err();
        assert_eq!(
            err,
            CallError::Guest(GuestError::msg("host function failed: refused"))
        );
    }

    #[test]
    fn host_loop_sums_the_host_answers() {
        // The host answers call i with i * 3.
        let mut h = Harness::new().host_fn(HOST_FN, |p| {
            let i = u32::from_le_bytes(p.try_into().map_err(|_| "bad payload")?);
            Ok((i * 3).to_le_bytes().to_vec())
        });
        let mut payload = HOST_FN.to_le_bytes().to_vec();
        payload.extend_from_slice(&50u32.to_le_bytes());
        let out = h.call_id(init, HOST_LOOP, &payload).unwrap();
        let expected: u64 = (0..50u64).map(|i| i * 3).sum();
        assert_eq!(out, expected.to_le_bytes());
        assert_eq!(h.host_calls().len(), 50);
        assert_eq!(h.host_calls()[49], (HOST_FN, 49u32.to_le_bytes().to_vec()));
        // An answer too short to hold a u32 ends the loop with an error.
        let mut short = Harness::new().host_fn(HOST_FN, |_| Ok(vec![1]));
        assert_eq!(
            short.call_id(init, HOST_LOOP, &payload),
            Err(guest_error("expected a u32 LE host fn id"))
        );
        assert_eq!(short.host_calls().len(), 1);
    }

    #[test]
    fn cap_sum_adds_the_bytes_of_a_stored_data_cap() {
        let data: Vec<u8> = (0..=255u8).collect();
        let cap = Cap::inline(data.clone());
        let bytes = wire::encode_cap(&cap).unwrap();
        // Store it the way the host's put_cap does: the PUT_CAP system fn.
        let hash = testing::call_id(init, FN_ID_NUB_PUT_CAP, &bytes).unwrap();
        assert_eq!(hash, cap.hash().as_bytes());
        let out = testing::call_id(init, CAP_SUM, &hash).unwrap();
        let expected: u64 = data.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(out, expected.to_le_bytes());

        let absent = CapHash::from_bytes([7; 32]);
        assert_eq!(
            testing::call_id(init, CAP_SUM, absent.as_bytes()),
            Err(guest_error("no cap with that hash"))
        );
        let node = Cap::cnode(vec![cap.hash().into()]);
        let node_hash =
            testing::call_id(init, FN_ID_NUB_PUT_CAP, &wire::encode_cap(&node).unwrap()).unwrap();
        assert_eq!(
            testing::call_id(init, CAP_SUM, &node_hash),
            Err(guest_error("the cap is not a Data cap"))
        );
        assert_eq!(
            testing::call_id(init, CAP_SUM, b"short"),
            Err(guest_error("expected a 32-byte cap hash"))
        );
    }

    #[test]
    fn every_contract_id_is_registered() {
        let mut registry = Registry::new();
        init(&mut registry);
        for id in [
            ECHO,
            ADD,
            FAIL,
            BLAKE3,
            HOST_ECHO,
            CAP_SUM,
            HOST_LOOP,
            FAULT,
            SPIN,
            SCRIBBLE_DIRECTORY,
            LOG,
            RACE_RESPONSE,
            TAINT,
            FAIL_CODE,
        ] {
            assert!(registry.get(id).is_some(), "fn id {id}");
        }
        // And the four typed functions (ids 14-17; the interface's fifth
        // id is the host function the guest calls).
        assert_eq!(registry.len(), 18);
    }

    #[test]
    fn taint_checks_its_arguments() {
        // Only the argument checks run on the host: the selectors touch
        // the vCPU's registers and guest memory.
        assert_eq!(
            testing::call_id(init, TAINT, b""),
            Err(guest_error("expected a selector"))
        );
        assert_eq!(
            testing::call_id(init, TAINT, &[10, 1, 2]),
            Err(guest_error("expected a u64 LE secret"))
        );
        assert_eq!(
            testing::call_id(init, TAINT, &[99, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(guest_error("unknown taint selector"))
        );
        assert_eq!(
            testing::call_id(init, TAINT, &[9]),
            Err(guest_error("unknown report selector"))
        );
        assert_eq!(taint::canonical(u64::MAX), 0x0000_7FFF_FFFF_FFF0);
    }

    #[test]
    fn log_answers_with_the_count_and_checks_its_arguments() {
        // On the host no logger is installed, so the records go nowhere;
        // the function's own logic is what is tested here.
        let mut payload = vec![3, 0];
        payload.extend_from_slice(&3u32.to_le_bytes());
        payload.extend_from_slice(b"hello");
        assert_eq!(
            testing::call_id(init, LOG, &payload).unwrap(),
            3u32.to_le_bytes()
        );
        payload[0] = 6;
        assert_eq!(
            testing::call_id(init, LOG, &payload),
            Err(guest_error("level must be 1..=5"))
        );
        assert_eq!(
            testing::call_id(init, LOG, &[3]),
            Err(guest_error("expected level, flags, count, message"))
        );
        assert_eq!(
            testing::call_id(init, LOG, &[3, 0, 1]),
            Err(guest_error("expected a u32 LE count"))
        );
    }

    #[test]
    fn typed_functions_run_on_the_host_with_a_fresh_state_each() {
        use nub_arch_x86::abi::default_guest::typed::*;
        let mut h = Harness::new();
        assert_eq!(
            h.call_typed::<AddPair>(init, &Pair { a: 1, b: 2 }),
            Ok(Ok(3))
        );
        assert_eq!(
            h.call_typed::<AddPair>(init, &Pair { a: u64::MAX, b: 1 }),
            Ok(Err(MathError::Overflow))
        );
        // Each call runs `init` again: a fresh counter, no statics.
        assert_eq!(h.call_typed::<Count>(init, &5), Ok(Ok(5)));
        assert_eq!(h.call_typed::<Count>(init, &5), Ok(Ok(5)));
        let mut h = Harness::new().host_typed::<Double>(|n| Ok(n * 2));
        assert_eq!(h.call_typed::<AskHost>(init, &21), Ok(Ok(42)));
        assert_eq!(h.host_calls().len(), 1);
    }
}
