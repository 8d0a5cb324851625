//! Criterion benches of the cap path: the catalogue's cap rows
//! (`nub_cli::suite`: `put_cap` of a new 64-byte cap, `put_cap_with_hash`
//! of one the guest holds, in both call modes, next to their floors), and
//! the cache reader, which only criterion measures. `cargo bench -p
//! nub-tests --bench caps`.

use criterion::{Criterion, criterion_group, criterion_main};
use javm_cap::Cap;
use nub_cli::suite::Group;
use nub_sandbox::SandboxConfiguration;
use nub_tests::sandbox_with;

mod common;

fn caps(c: &mut Criterion) {
    common::bench_rows(c, common::catalogue(&[Group::Cap]));

    // Not a `nub bench` row: a lookup in the guest's cache by the host's
    // reader, no call at all.
    let mut s = sandbox_with(SandboxConfiguration::default().with_heap_size(16 << 20));
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
