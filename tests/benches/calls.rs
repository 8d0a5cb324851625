//! Criterion benches of the call path: echo of 0 B, 4 KiB and 64 KiB, a
//! host call, a batch of 100, next to the exit floor (the CPL 3 `out`
//! loop). `cargo bench -p nub-tests --bench calls`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nub_hypervisor::floor::ExitFloor;
use nub_sandbox::Registerable;
use nub_tests::{fn_id, sandbox, uninit};

mod common;

fn calls(c: &mut Criterion) {
    let mut floor = ExitFloor::new(true).expect("the floor VM");
    c.bench_function("floor: out loop CPL 3", |b| {
        b.iter(|| floor.round_trip().expect("an out exit"))
    });

    let mut s = sandbox();
    let mut group = c.benchmark_group("echo");
    for size in [0usize, 4 << 10, 64 << 10] {
        let payload = vec![0x5a; size];
        if size > 0 {
            group.throughput(Throughput::Bytes(size as u64));
        }
        group.bench_function(format!("{size} B"), |b| {
            b.iter(|| s.call_raw(fn_id::ECHO, &payload).expect("echo"))
        });
    }
    group.finish();

    let mut u = uninit(None);
    u.register_host_function(1, |bytes: &[u8]| Ok(bytes.to_vec()))
        .expect("register host fn 1");
    let mut h = u.evolve().expect("boot");
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend_from_slice(b"ping");
    c.bench_function("host call", |b| {
        b.iter(|| h.call_raw(fn_id::HOST_ECHO, &payload).expect("host_echo"))
    });

    let batch: Vec<(u32, &[u8])> = (0..100).map(|_| (fn_id::ECHO, &b""[..])).collect();
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100 echos", |b| {
        b.iter(|| s.call_batch(&batch).expect("batch"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = calls
}
criterion_main!(benches);
