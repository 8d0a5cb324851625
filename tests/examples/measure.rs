//! Median latencies of the main call paths next to the exit floor, all in
//! one run: `cargo run --release -p nub-tests --example measure`.

use std::time::{Duration, Instant};

use javm_cap::Cap;
use nub_sandbox::Registerable;
use nub_sandbox::SandboxConfiguration;
use nub_tests::{fn_id, sandbox, sandbox_with, uninit};

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

fn report(name: &str, d: Duration, floor: Duration) {
    println!(
        "{name:<34} {:>10.2} us  {:>6.2}x floor",
        d.as_secs_f64() * 1e6,
        d.as_secs_f64() / floor.as_secs_f64()
    );
}

fn main() {
    const N: usize = 5000;
    let floor3 = median(nub_hypervisor::floor::exit_round_trips(N, true).unwrap());
    let floor0 = median(nub_hypervisor::floor::exit_round_trips(N, false).unwrap());
    report("floor: out loop at CPL 3", floor3, floor3);
    report("floor: out loop at CPL 0 (emulated)", floor0, floor3);

    let mut s = sandbox_with(SandboxConfiguration::default().with_heap_size(16 << 20));
    report(
        "echo, empty payload",
        time(N, || drop(s.call_raw(fn_id::ECHO, b"").unwrap())),
        floor3,
    );
    let kib = vec![7u8; 4096];
    report(
        "echo, 4 KiB payload",
        time(N, || drop(s.call_raw(fn_id::ECHO, &kib).unwrap())),
        floor3,
    );

    let batch: Vec<(u32, &[u8])> = (0..100).map(|_| (fn_id::ECHO, &b""[..])).collect();
    let per_batch = time(N / 10, || drop(s.call_batch(&batch).unwrap()));
    report("echo in a batch of 100, per call", per_batch / 100, floor3);

    let mut u = uninit(None);
    u.register_host_function(1, |b: &[u8]| Ok(b.to_vec()))
        .unwrap();
    let mut h = u.evolve().unwrap();
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend_from_slice(b"ping");
    report(
        "guest call making one host call",
        time(N, || drop(h.call_raw(fn_id::HOST_ECHO, &payload).unwrap())),
        floor3,
    );

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
    );
    let present = Cap::inline(vec![1u8; 64]);
    let ph = s.put_cap(&present).unwrap();
    report(
        "put_cap_with_hash, present hash",
        time(N, || s.put_cap_with_hash(ph, &present).unwrap()),
        floor3,
    );
    let absent = Cap::inline(b"absent".to_vec()).hash();
    report(
        "GuestCacheReader::contains, absent",
        time(N, || assert!(!s.cache_reader().unwrap().contains(&absent))),
        floor3,
    );
    report(
        "create + evolve a sandbox",
        time(200, || drop(sandbox())),
        floor3,
    );
}
