//! Writes small valid seed inputs for every fuzz target into
//! `fuzz/corpus/<target>/seed-*`, so the fuzzers start from well-formed
//! frames, archives and tables instead of having to discover magic values.
//!
//! ```sh
//! cd fuzz && cargo run --example gen_corpus [-- path/to/guest.elf]
//! ```
//!
//! An optional argument is a guest ELF copied into `corpus/elf_parse/`
//! (e.g. the default guest built by `cargo xtask build-guest`).

use std::fs;
use std::path::{Path, PathBuf};

use javm_cap::wire::{self, WireCap, WireSlot};
use nub_host_common::boot::{BOOT_MAGIC, BootInfo};
use nub_host_common::directory::{
    DIRECTORY_MAGIC, DIRECTORY_VERSION, HEADER_SIZE, MAX_PROBE, SLOT_SIZE, home_slot, offsets,
};
use nub_host_common::log_buffer::{self, LogLevel};
use nub_host_common::report::{Report, ReportKind};
use nub_host_common::ring::{FrameKind, RingWriter};
use nub_host_common::rpc::{encode_request, encode_response};
use nub_host_common::{ABI_VERSION, write_u32, write_u64};

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(format!("seed-{name}")), bytes).unwrap();
}

fn ring_seeds(dir: &Path) {
    for (n, size) in [(0usize, 256usize), (1, 4096)] {
        let mut mem = vec![0u8; size];
        {
            let mut w = RingWriter::new(&mut mem).unwrap();
            let mut body = [0u8; 64];
            let len = encode_request(&mut body, 7, b"hello").unwrap();
            w.push(FrameKind::Request, &body[..len]).unwrap();
            let len = encode_response(&mut body, 0, b"ok").unwrap();
            w.push(FrameKind::Response, &body[..len]).unwrap();
            w.push(FrameKind::HostCallRequest, b"").unwrap();
        }
        // Reserved header bytes = target parameters.
        write_u64(&mut mem, 16, 32);
        write_u64(&mut mem, 24, 64);
        write_u64(&mut mem, 32, 5);
        write_u64(&mut mem, 40, 1);
        write_u64(&mut mem, 48, 96);
        write_u64(&mut mem, 56, 3);
        put(dir, "ring_frames", &n.to_string(), &mem);
    }
}

fn rpc_seeds(dir: &Path) {
    let mut buf = [0u8; 256];
    for (i, payload) in [&b""[..], b"x", b"hello", &[0xAB; 100]].iter().enumerate() {
        let n = encode_request(&mut buf, 0x8000_0001, payload).unwrap();
        put(dir, "rpc_decode", &format!("req{i}"), &buf[..n]);
        let n = encode_response(&mut buf, i as u32, payload).unwrap();
        put(dir, "rpc_decode", &format!("resp{i}"), &buf[..n]);
    }
}

fn report_seeds(dir: &Path) {
    let mut page = vec![0u8; 4096];
    Report {
        kind: Some(ReportKind::Panic),
        vector: 0,
        error_code: 0,
        rip: 0x10_1234,
        cr2: 0,
        rsp: 0x80_0000,
        code: 0,
        message: b"panicked at src/main.rs:1:1: boom",
    }
    .encode(&mut page);
    put(dir, "report_decode", "panic", &page);
    put(dir, "report_decode", "short", &page[..128]);
}

fn directory_seeds(dir: &Path) {
    const BASE: u64 = 0x20_0000; // as in the target
    let capacity = 16u64;
    let entries: Vec<[u8; 32]> = (0u8..6)
        .map(|n| {
            let mut h = [n; 32];
            h[0] = n.wrapping_mul(5);
            h
        })
        .collect();
    let mut mem = vec![0u8; HEADER_SIZE + capacity as usize * SLOT_SIZE];
    write_u64(&mut mem, offsets::MAGIC, DIRECTORY_MAGIC);
    write_u32(&mut mem, offsets::VERSION, DIRECTORY_VERSION);
    write_u32(&mut mem, offsets::MAX_PROBE, MAX_PROBE);
    write_u64(&mut mem, offsets::CAPACITY, capacity);
    write_u64(&mut mem, offsets::LENGTH, entries.len() as u64);
    write_u64(&mut mem, offsets::TABLE_VA, BASE + HEADER_SIZE as u64);
    for h in &entries {
        let mut i = home_slot(h, capacity);
        loop {
            let at = HEADER_SIZE + i as usize * SLOT_SIZE;
            if mem[at + offsets::SLOT_CAP_VA..at + offsets::SLOT_CAP_VA + 8] == [0; 8] {
                mem[at..at + 32].copy_from_slice(h);
                write_u64(&mut mem, at + offsets::SLOT_CAP_VA, 0x30_0000);
                write_u64(&mut mem, at + offsets::SLOT_CAP_LEN, 64);
                break;
            }
            i = (i + 1) % capacity;
        }
    }
    for (name, hash, flags) in [
        ("present", entries[1], 0u8),
        ("collide", entries[0], 0),
        ("absent", [0xEE; 32], 3),
    ] {
        let mut input = hash.to_vec();
        input.push(flags);
        input.extend_from_slice(&mem);
        put(dir, "directory_probe", name, &input);
    }
}

fn boot_seeds(dir: &Path) {
    let info = BootInfo {
        magic: BOOT_MAGIC,
        abi_version: ABI_VERSION,
        memory_size: 64 << 20,
        input_ring_va: 0x4000,
        input_ring_size: 0x1_0000,
        output_ring_va: 0x1_4000,
        output_ring_size: 0x1_0000,
        report_va: 0x3000,
        heap_va: 0x40_0000,
        heap_size: 0x100_0000,
        stack_top: 0x3f_0000,
        stack_size: 0x1_0000,
        ist_stack_top: 0x2f_0000,
        ..Default::default()
    };
    put(dir, "boot_info", "valid", &info.to_bytes());
}

/// A minimal static x86_64 ELF: one RX segment holding the entry and one
/// RW bss-only segment, no sections.
fn minimal_elf() -> Vec<u8> {
    let mut f = vec![0u8; 64 + 2 * 56 + 16];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    let mut ph = |i: usize, flags: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
        let p = 64 + i * 56;
        f[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
        f[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[p + 24..p + 32].copy_from_slice(&vaddr.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        f[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    };
    ph(0, 5, 176, 0x10_0000, 16, 16);
    ph(1, 6, 0, 0x10_1000, 0, 0x100);
    f[176] = 0xf4; // hlt
    f
}

/// A persisted image of `elf` (parsed as `image`) laid out with the
/// default sizes, two heap pages carried, resting at its entry.
fn image_of(elf: &[u8], image: &nub_sandbox::binary::GuestImage, resident: bool) -> Vec<u8> {
    use nub_host_common::layout::{LayoutSizes, MemoryLayout};
    use nub_sandbox::persist::{ImageFile, Meta, Shape, UserRegisters};
    let sizes = LayoutSizes {
        heap: 1 << 20,
        stack: 128 << 10,
        input_ring: 256 << 10,
        output_ring: 256 << 10,
        log_buffer: 16 << 10,
    };
    let layout = MemoryLayout::new(image.end, sizes).unwrap();
    let meta = Meta {
        elf_digest: *blake3::hash(elf).as_bytes(),
        shape: Shape::of(&layout, sizes),
        boot_flags: u32::from(resident),
        log_level: 3,
        spin_polls: if resident { 1000 } else { 0 },
        spin_nanos: if resident { 100_000 } else { 0 },
        resident_seq: 3,
        resident_last_hostcall: 1,
        directory_va: layout.heap.start,
        registers: UserRegisters {
            rip: image.entry,
            rsp: layout.stack.start + layout.stack.size - 8,
            rflags: 0x46,
            rdi: 0x1000,
            ..UserRegisters::default()
        },
    };
    let first = layout.heap.start / 4096;
    let a = vec![0x5Au8; 4096];
    let b = vec![0u8; 4096];
    let pages = [(first, &a[..]), (first + 3, &b[..])];
    ImageFile::encode(&meta, &[100, 7], elf, pages.into_iter()).unwrap()
}

/// Images: a synthetic one of the minimal ELF in each call mode, and one
/// of the real guest when given. Byte 0 is the target's mode byte (bit 0:
/// reseal the digest).
fn image_seeds(dir: &Path, guest: Option<&Path>) {
    let elf = minimal_elf();
    let image = nub_sandbox::binary::GuestImage::parse(&elf).unwrap();
    let mut seeds = vec![("minimal-exit", image_of(&elf, &image, false))];
    seeds.push(("minimal-resident", image_of(&elf, &image, true)));
    if let Some(path) = guest {
        let bytes = fs::read(path).unwrap();
        let image = nub_sandbox::binary::GuestImage::parse(&bytes).unwrap();
        seeds.push(("guest", image_of(&bytes, &image, false)));
    }
    for (name, file) in seeds {
        nub_sandbox::persist::inspect(&file).expect("the image seed is valid");
        for mode in [0u8, 1] {
            let mut input = vec![mode];
            input.extend_from_slice(&file);
            put(dir, "image_file", &format!("{name}-{mode}"), &input);
        }
    }
}

fn elf_seeds(dir: &Path, guest: Option<PathBuf>) {
    let elf = minimal_elf();
    nub_sandbox::binary::GuestImage::parse(&elf).expect("the minimal ELF seed is valid");
    put(dir, "elf_parse", "minimal", &elf);
    if let Some(path) = guest {
        let bytes = fs::read(&path).unwrap();
        put(dir, "elf_parse", "guest", &bytes);
    }
}

fn wire_seeds(dir: &Path) {
    let caps = [
        WireCap::Data(vec![]),
        WireCap::Data(b"hello".to_vec()),
        WireCap::Data(vec![7; 100]),
        WireCap::CNode(vec![]),
        WireCap::CNode(vec![WireSlot::Empty]),
        WireCap::CNode(vec![
            WireSlot::Empty,
            WireSlot::Hash([1; 32]),
            WireSlot::Hash([2; 32]),
        ]),
    ];
    for (i, cap) in caps.iter().enumerate() {
        put(dir, "wire_cap", &i.to_string(), &wire::encode(cap).unwrap());
    }
}

fn log_seeds(dir: &Path) {
    // Parameters: level, target length / 2, message length (u16 LE).
    let params = [2u8, 8, 40, 0];
    for (name, size, records) in [
        ("empty", 128usize, 0usize),
        ("few", 512, 3),
        ("full", 256, 100),
    ] {
        let mut region = vec![0u8; size];
        for i in 0..records {
            let message = format!("record {i}");
            let level = LogLevel::try_from(1 + (i % 5) as u8).unwrap();
            if log_buffer::append(&mut region, level, b"nub_default_guest", message.as_bytes())
                == log_buffer::Appended::Full
            {
                break;
            }
        }
        log_buffer::count_dropped(&mut region);
        let mut input = params.to_vec();
        input.extend_from_slice(&region);
        put(dir, "log_buffer", name, &input);
    }
}

fn output_ring_seeds(dir: &Path) {
    let mut mem = vec![0u8; 1024];
    let host_call_at;
    {
        let mut w = RingWriter::new(&mut mem).unwrap();
        let mut body = [0u8; 128];
        for (status, payload) in [
            (0u32, &b"hello"[..]),
            (1, b"guest error"),
            (4, &[0x40, 0, 0, 0, 0, 0, 0, 0]),
        ] {
            let len = encode_response(&mut body, status, payload).unwrap();
            w.push(FrameKind::Response, &body[..len]).unwrap();
        }
        host_call_at = w.reader().offsets().unwrap().1;
        let len = encode_request(&mut body, 100, b"host call").unwrap();
        w.push(FrameKind::HostCallRequest, &body[..len]).unwrap();
    }
    // Reserved header bytes: the host call's offset, then the batch size.
    write_u64(&mut mem, 16, host_call_at as u64);
    mem[24] = 3;
    put(dir, "output_ring", "batch", &mem);
}

/// Small valid modules for `wasm_load`, each reaching another part of
/// wasmi's compiler: arithmetic and calls, memory with data and `grow`,
/// a table with `call_indirect`, globals and a start function, multi-value
/// results, an import (which fails to link), a trap at start, and a WASI
/// command calling the WASI functions (with good and hostile pointers).
fn wasm_seeds(dir: &Path) {
    let modules = [
        (
            "fib",
            r#"(module
                (func $fib (export "fib") (param i32) (result i32)
                  (if (result i32) (i32.lt_s (local.get 0) (i32.const 2))
                    (then (local.get 0))
                    (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                                   (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
                (func (export "loop") (result i64) (local i64)
                  (loop $l (local.set 0 (i64.add (local.get 0) (i64.const 1)))
                    (br_if $l (i64.lt_u (local.get 0) (i64.const 1000))))
                  (local.get 0)))"#,
        ),
        (
            "memory",
            r#"(module
                (memory (export "memory") 1 4)
                (data (i32.const 16) "hello, wasm")
                (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
                (func (export "grow") (result i32) (memory.grow (i32.const 1)))
                (func (export "fill") (memory.fill (i32.const 0) (i32.const 7) (i32.const 64)))
                (func (export "f64") (param f64) (result f64) (f64.sqrt (local.get 0))))"#,
        ),
        (
            "table",
            r#"(module
                (type $t (func (result i32)))
                (table (export "table") 4 funcref)
                (elem (i32.const 0) $a $b)
                (func $a (result i32) (i32.const 1))
                (func $b (result i32) (i32.const 2))
                (func (export "pick") (param i32) (result i32)
                  (call_indirect (type $t) (local.get 0))))"#,
        ),
        (
            "globals",
            r#"(module
                (global $g (export "g") (mut i32) (i32.const 5))
                (global (export "c") f32 (f32.const 1.5))
                (func $init (global.set $g (i32.const 6)))
                (start $init)
                (func (export "pair") (result i32 i64) (global.get $g) (i64.const -1)))"#,
        ),
        (
            "import",
            r#"(module
                (import "env" "log" (func $log (param i32)))
                (func (export "run") (call $log (i32.const 1))))"#,
        ),
        ("start-trap", r#"(module (func $s unreachable) (start $s))"#),
        (
            "wasi",
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "args_get" (func $a (param i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "random_get" (func $g (param i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "clock_time_get" (func $c (param i32 i64 i32) (result i32)))
                (import "wasi_snapshot_preview1" "proc_exit" (func $x (param i32)))
                (memory (export "memory") 1)
                (data (i32.const 0) "\10\00\00\00\06\00\00\00")
                (data (i32.const 16) "hello\n")
                (func (export "_start")
                  (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
                  (drop (call $w (i32.const 2) (i32.const 65530) (i32.const 9) (i32.const 32)))
                  (drop (call $r (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 40)))
                  (drop (call $a (i32.const 100) (i32.const 200)))
                  (drop (call $g (i32.const 300) (i32.const 32)))
                  (drop (call $c (i32.const 1) (i64.const 1) (i32.const 400)))
                  (call $x (i32.const 3))))"#,
        ),
    ];
    for (name, text) in modules {
        let bytes = wat::parse_str(text).unwrap();
        put(dir, "wasm_load", name, &bytes);
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    ring_seeds(&dir);
    rpc_seeds(&dir);
    report_seeds(&dir);
    directory_seeds(&dir);
    boot_seeds(&dir);
    let guest = std::env::args_os().nth(1).map(PathBuf::from);
    image_seeds(&dir, guest.as_deref());
    elf_seeds(&dir, guest);
    wire_seeds(&dir);
    log_seeds(&dir);
    output_ring_seeds(&dir);
    wasm_seeds(&dir);
    println!("seeds written under {}", dir.display());
}
