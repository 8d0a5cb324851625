//! Criterion benches of the call path, from the bench catalogue
//! (`nub_cli::suite`): echo of 0 B, 4 KiB and 64 KiB, a host call, a batch
//! of 100 in both call modes, the loaded rows and the first call after a
//! pause, next to their floors (the CPL 3 `out` loop, the ping-pong
//! floor). Names are `nub bench`'s. `cargo bench -p nub-tests --bench
//! calls`.

use criterion::{Criterion, criterion_group, criterion_main};
use nub_cli::suite::Group;

mod common;

fn calls(c: &mut Criterion) {
    common::bench_rows(
        c,
        common::catalogue(&[Group::Call, Group::Loaded, Group::Pause]),
    );
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = calls
}
criterion_main!(benches);
