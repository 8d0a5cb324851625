//! What the criterion benches share: a short measurement (regressions show
//! in seconds, not minutes) and [`bench_rows`], which runs rows of the one
//! bench catalogue (`nub_cli::suite`, the rows `nub bench` runs) under
//! their `nub bench` names.

use std::time::Duration;

use criterion::Criterion;
use nub_cli::suite::{Group, Row, Unit, rows, select_groups};

/// Criterion with a short warm-up and measurement, as the benches want.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// The catalogue's rows in `groups`, with their floors, in suite order.
pub fn catalogue(groups: &[Group]) -> Vec<Row> {
    select_groups(rows(), groups)
}

/// Benches each timed row of `rows` under its catalogue name: the row is
/// set up (untimed) as `nub bench` sets it up, and criterion's iterations
/// are the row's samples, each timed by the row's own sampler exactly as
/// `nub bench` times it (per operation for the rows that time 100 at
/// once). Rows that are not times (the RSS rows) are skipped.
pub fn bench_rows(c: &mut Criterion, rows: Vec<Row>) {
    for row in rows.into_iter().filter(|r| r.unit == Unit::Micros) {
        let name = row.name.clone();
        let mut sample = row
            .set_up()
            .unwrap_or_else(|e| panic!("setting up `{name}`: {e}"));
        c.bench_function(&name, |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        let us = sample().unwrap_or_else(|e| panic!("`{name}`: {e}"));
                        Duration::from_secs_f64(us / 1e6)
                    })
                    .sum::<Duration>()
            })
        });
        // The row's sandboxes and threads go before the next row is set up.
        drop(sample);
    }
}
