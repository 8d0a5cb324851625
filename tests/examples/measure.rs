//! Median latencies of the main call paths next to their floors, both call
//! modes, all in one run:
//! `cargo run --release -p nub-tests --example measure`.
//!
//! Floors: the CPL 3 `out` loop (what one exit costs), the CPL 0 one, and
//! two host threads bouncing a cache line (what a resident call can cost
//! at best). Every call row runs in exit mode (ratio to the CPL 3 floor)
//! and in resident mode (ratio to the ping-pong floor); resident mode adds
//! the first call after a park and an idle sandbox's CPU use. `nub bench`
//! is the fuller suite; this is the quick view docs/performance.md quotes.

use std::time::{Duration, Instant};

use javm_cap::Cap;
use nub_hypervisor::floor::{PingPong, exit_round_trips};
use nub_sandbox::{CallMode, MultiUseSandbox, Registerable, SandboxConfiguration};
use nub_tests::{fn_id, sandbox, uninit};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(iterations: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    median(
        (0..iterations)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn report(name: &str, d: Duration, floor: Duration, floor_name: &str) {
    println!(
        "| {name} | {:.2} µs | {:.2}x {floor_name} |",
        d.as_secs_f64() * 1e6,
        d.as_secs_f64() / floor.as_secs_f64()
    );
}

/// A default-guest sandbox in `mode` with host function 1 echoing.
fn booted(mode: CallMode) -> MultiUseSandbox {
    let cfg = SandboxConfiguration::default()
        .with_heap_size(16 << 20)
        .with_call_mode(mode);
    let mut u = uninit(Some(cfg));
    u.register_host_function(1, |b: &[u8]| Ok(b.to_vec()))
        .unwrap();
    u.evolve().unwrap()
}

fn main() {
    const N: usize = 5000;
    println!("| path | median | vs. floor |\n| --- | --- | --- |");
    let floor3 = median(exit_round_trips(N, true).unwrap());
    let floor0 = median(exit_round_trips(N, false).unwrap());
    let pingpong = {
        let mut p = PingPong::new().unwrap();
        median((0..N).map(|_| p.round_trips(1)).collect())
    };
    report("floor: out loop at CPL 3", floor3, floor3, "CPL 3 floor");
    report("floor: out loop at CPL 0", floor0, floor3, "CPL 3 floor");
    report("floor: ping-pong", pingpong, pingpong, "ping-pong");

    let kib4 = vec![7u8; 4 << 10];
    let kib64 = vec![7u8; 64 << 10];
    let batch: Vec<(u32, &[u8])> = (0..100).map(|_| (fn_id::ECHO, &b""[..])).collect();
    let mut host = 1u32.to_le_bytes().to_vec();
    host.extend_from_slice(b"ping");
    for (mode, tag, floor, floor_name) in [
        (CallMode::Exit, "", floor3, "CPL 3 floor"),
        (CallMode::resident(), " (resident)", pingpong, "ping-pong"),
    ] {
        let mut s = booted(mode);
        let row = |name: &str, d: Duration| report(&format!("{name}{tag}"), d, floor, floor_name);
        row(
            "echo empty",
            time(N, || drop(s.call_raw(fn_id::ECHO, b"").unwrap())),
        );
        row(
            "host call",
            time(N, || drop(s.call_raw(fn_id::HOST_ECHO, &host).unwrap())),
        );
        row(
            "echo 4KiB",
            time(N, || drop(s.call_raw(fn_id::ECHO, &kib4).unwrap())),
        );
        row(
            "echo 64KiB",
            time(N / 5, || drop(s.call_raw(fn_id::ECHO, &kib64).unwrap())),
        );
        row(
            "batch 100 per call",
            time(N / 10, || drop(s.call_batch(&batch).unwrap())) / 100,
        );
    }

    // Resident only: the first call after the guest parked, and what an
    // idle sandbox costs once its spin window has passed.
    let spin = Duration::from_micros(100);
    let mut s = booted(CallMode::Resident { spin });
    let after_park = median(
        (0..200)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(2));
                let start = Instant::now();
                s.call_raw(fn_id::ECHO, b"").unwrap();
                start.elapsed()
            })
            .collect(),
    );
    report(
        "first call after a park (resident)",
        after_park,
        floor3,
        "CPL 3 floor",
    );
    let name = format!("nub-vcpu-{}", s.id());
    std::thread::sleep(Duration::from_millis(50));
    let ticks = nub_tests::thread_stat(&name).map_or(0, |(_, ticks)| ticks);
    let idle = Duration::from_secs(2);
    std::thread::sleep(idle);
    let used = nub_tests::thread_stat(&name)
        .map_or(0, |(_, ticks)| ticks)
        .saturating_sub(ticks);
    // /proc reports thread times in USER_HZ ticks, 100 per second on Linux.
    let hz = 100.0;
    println!(
        "| idle resident sandbox, CPU after its spin window | {:.2} % of one core | |",
        used as f64 / hz / idle.as_secs_f64() * 100.0
    );
    drop(s);

    // Exit-mode cap and lifecycle rows.
    let mut s = booted(CallMode::Exit);
    let mut i = 0u64;
    report(
        "put_cap, 64-byte data (new each time)",
        time(N, || {
            i += 1;
            let mut bytes = [0u8; 64];
            bytes[..8].copy_from_slice(&i.to_le_bytes());
            s.put_cap(&Cap::inline(bytes.to_vec())).unwrap();
        }),
        floor3,
        "CPL 3 floor",
    );
    let present = Cap::inline(vec![1u8; 64]);
    let ph = s.put_cap(&present).unwrap();
    report(
        "put_cap_with_hash, present hash",
        time(N, || s.put_cap_with_hash(ph, &present).unwrap()),
        floor3,
        "CPL 3 floor",
    );
    report(
        "create + evolve a sandbox",
        time(200, || drop(sandbox())),
        floor3,
        "CPL 3 floor",
    );
}
