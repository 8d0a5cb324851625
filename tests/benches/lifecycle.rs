//! Criterion benches of a sandbox's life: create + evolve, drop, the whole
//! cycle with one call, and the kill latency, next to their floors (a bare
//! VM's create + drop, a bare VM's kill). `cargo bench -p nub-tests --bench
//! lifecycle`.

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use nub_hypervisor::floor::{self, KillFloor, Killer};
use nub_sandbox::{GuestBinary, UninitializedSandbox};
use nub_tests::{DEFAULT_GUEST, fn_id, sandbox};

mod common;

fn binary() -> GuestBinary {
    GuestBinary::Buffer(std::fs::read(DEFAULT_GUEST).expect("read the default guest"))
}

fn lifecycle(c: &mut Criterion) {
    c.bench_function("vm floor", |b| {
        b.iter(|| floor::vm_lifecycle().expect("a bare VM"))
    });
    c.bench_function("create+evolve", |b| {
        b.iter_batched(
            binary,
            |bin| {
                UninitializedSandbox::new(bin, None)
                    .and_then(UninitializedSandbox::evolve)
                    .expect("boot")
            },
            BatchSize::PerIteration,
        )
    });
    c.bench_function("drop", |b| {
        b.iter_batched(sandbox, drop, BatchSize::PerIteration)
    });
    c.bench_function("create+evolve+call+drop", |b| {
        b.iter_batched(
            binary,
            |bin| {
                let mut s = UninitializedSandbox::new(bin, None)
                    .and_then(UninitializedSandbox::evolve)
                    .expect("boot");
                s.call_raw(fn_id::ECHO, b"").expect("echo")
            },
            BatchSize::PerIteration,
        )
    });

    let mut kill_floor = KillFloor::new(common::KILL_SETTLE).expect("the kill floor VM");
    c.bench_function("kill floor", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| kill_floor.kill_latency().expect("killed"))
                .sum::<Duration>()
        })
    });
    let mut killer = Killer::new(common::KILL_SETTLE).expect("the killer thread");
    c.bench_function("kill latency", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| common::kill_latency(&mut killer, &mut sandbox()))
                .sum::<Duration>()
        })
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = lifecycle
}
criterion_main!(benches);
