//! Median latencies of the main call paths next to their floors, both call
//! modes, all in one run:
//! `cargo run --release -p nub-tests --example measure`.
//!
//! The rows are the bench catalogue's (`nub_cli::suite`, the rows `nub
//! bench` runs, under the same names, timed the same way): the floors
//! (the CPL 3 `out` loop, what one exit costs; the CPL 0 one; two host
//! threads bouncing a cache line, what a resident call can cost at best;
//! the bare VM's create and kill), every call and cap row in exit mode
//! (ratio to the CPL 3 floor) and in resident mode (ratio to the ping-pong
//! floor), the first call after a pause or a park, and the lifecycle rows.
//! Each row takes up to 5000 samples in about a second, after a warm-up.
//! After the rows, one figure that is not a row: an idle resident
//! sandbox's CPU use once its spin window has passed. `nub bench` is the
//! fuller suite (loaded rows, RSS, longer budgets); this is the quick view
//! docs/performance.md quotes.

use std::time::Duration;

use nub_cli::suite::{Budget, Group, rows, run, select_groups};
use nub_sandbox::{CallMode, SandboxConfiguration};
use nub_tests::uninit;

/// Samples per row: up to 5000, at least 200, about a second a row.
const BUDGET: Budget = Budget {
    per_row: Duration::from_secs(1),
    min_samples: 200,
    max_samples: 5000,
    warmup: 500,
};

fn main() {
    let groups = [
        Group::Floor,
        Group::Call,
        Group::Cap,
        Group::Pause,
        Group::Lifecycle,
    ];
    let results =
        run(select_groups(rows(), &groups), BUDGET, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    println!("| row | median | vs. floor |\n| --- | --- | --- |");
    for r in &results {
        let floor = r
            .floor
            .and_then(|f| results.iter().find(|x| x.name == f))
            .map_or_else(String::new, |f| {
                format!("{:.2}x {}", r.summary.median / f.summary.median, f.name)
            });
        println!("| {} | {:.2} µs | {floor} |", r.name, r.summary.median);
    }

    // What an idle resident sandbox costs once its spin window has passed.
    let spin = Duration::from_micros(100);
    let cfg = SandboxConfiguration::default().with_call_mode(CallMode::Resident { spin });
    let mut s = uninit(Some(cfg)).evolve().unwrap();
    s.call_raw(nub_tests::fn_id::ECHO, b"").unwrap();
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
}
