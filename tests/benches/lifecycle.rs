//! Criterion benches of a sandbox's life, from the bench catalogue
//! (`nub_cli::suite`): create + evolve, drop, the whole cycle with one call
//! with and without the VM pool, and the kill latency, next to their
//! floors (a bare VM's create + drop, a bare VM's kill); then the starts
//! from a persisted image (create from it, its cycle with the pool,
//! loading its file), next to the boot rows they are compared with. Names
//! are `nub bench`'s. `cargo bench -p nub-tests --bench lifecycle`.

use criterion::{Criterion, criterion_group, criterion_main};
use nub_cli::suite::Group;

mod common;

fn lifecycle(c: &mut Criterion) {
    common::bench_rows(c, common::catalogue(&[Group::Lifecycle]));
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = lifecycle
}
criterion_main!(benches);
