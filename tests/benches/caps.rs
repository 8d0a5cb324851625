//! Criterion benches of the cap path: `put_cap` of a new 64-byte cap,
//! `put_cap_with_hash` of one the guest holds (no exit), and the cache
//! reader. `cargo bench -p nub-tests --bench caps`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use javm_cap::Cap;
use nub_sandbox::SandboxConfiguration;
use nub_tests::sandbox_with;

mod common;

/// A fresh sandbox after this many new caps, so its heap never fills.
const CAPS_PER_SANDBOX: u64 = 4096;

fn caps(c: &mut Criterion) {
    let cfg = SandboxConfiguration::default().with_heap_size(16 << 20);
    let mut s = sandbox_with(cfg);
    let mut serial = 0u64;
    c.bench_function("put_cap 64B", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                serial += 1;
                if serial.is_multiple_of(CAPS_PER_SANDBOX) {
                    s = sandbox_with(cfg);
                }
                // A new cap each time: 64 bytes, the first 8 a serial.
                let mut data = [0u8; 64];
                data[..8].copy_from_slice(&serial.to_le_bytes());
                let cap = Cap::inline(data.to_vec());
                let start = Instant::now();
                s.put_cap(&cap).expect("put_cap");
                total += start.elapsed();
            }
            total
        })
    });

    let mut s = sandbox_with(cfg);
    let cap = Cap::inline(vec![1u8; 64]);
    let hash = s.put_cap(&cap).expect("put_cap");
    c.bench_function("put_cap_with_hash hit", |b| {
        b.iter(|| s.put_cap_with_hash(hash, &cap).expect("present"))
    });
    let absent = Cap::inline(b"absent".to_vec()).hash();
    c.bench_function("cache_reader contains, absent", |b| {
        b.iter(|| s.cache_reader().expect("reader").contains(&absent))
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = caps
}
criterion_main!(benches);
