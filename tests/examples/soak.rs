//! The soak test (`cargo xtask soak`, or `cargo run --release -p nub-tests
//! --example soak -- [--scale N]`): long runs that would show leaks a unit
//! test cannot.
//!
//! 1. **mixed**: one default-guest sandbox, 1,000,000 calls in turn: echo
//!    (0..1023 bytes), add, `put_cap` (64 distinct caps, round robin) and a
//!    host call through the guest (`HOST_ECHO` to an upper-casing host
//!    function). Every answer is checked.
//! 2. **cycles**: 10,000 times: build a default-guest sandbox, call echo,
//!    drop it.
//! 3. **hostile**: 1,000 times: build a hostile-guest sandbox, run one
//!    attack (ids chosen round robin from those that need no setup, their
//!    selectors in turn), check that a poisoned sandbox refuses calls and
//!    an unpoisoned one still answers, drop it.
//!
//! At the start and end of each phase, once the VM pool's reaper is idle
//! (`nub_sandbox::pool::wait_idle`), it records host RSS (`VmRSS` in
//! `/proc/self/status`), open file descriptors (`/proc/self/fd`), the
//! pool's counters and, for the mixed phase, the guest's heap use
//! (`MultiUseSandbox::heap_stats`),
//! and fails (exit status 1) when one grows beyond its bound: RSS +32 MiB,
//! fds +8 per phase, guest heap +64 KiB over the mixed phase and +4 KiB
//! once its caps are all published (after the first 256 calls, nothing
//! new is stored). `--scale N` divides every phase's count by N for a
//! quick run.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    time::{Duration, Instant},
};

use javm_cap::Cap;
use nub_sandbox::{HyperlightError, MultiUseSandbox, Registerable, pool};
use nub_tests::{fn_id, hostile, hostile_fn_id as h, rss_kib, sandbox, uninit};

/// Calls in the mixed phase.
const MIXED_CALLS: u64 = 1_000_000;
/// Create/call/drop cycles.
const CYCLES: u64 = 10_000;
/// Hostile-guest cycles.
const HOSTILE_CYCLES: u64 = 1_000;

/// Allowed host RSS growth per phase.
const RSS_BOUND_KIB: u64 = 32 * 1024;
/// Allowed growth of open file descriptors per phase.
const FD_BOUND: u64 = 8;
/// Allowed guest heap growth over the mixed phase (64 small caps and the
/// directory table that indexes them fit well inside it).
const HEAP_BOUND: u64 = 64 * 1024;

/// Allowed guest heap growth over the mixed phase once every cap has been
/// published (the first `4 * CAPS` calls): nothing is stored after that,
/// so any growth is a leak.
const STEADY_HEAP_BOUND: u64 = 4 * 1024;

/// The host function the mixed phase's host calls reach.
const UPPER_FN: u32 = 100;

/// Distinct caps the mixed phase publishes, round robin.
const CAPS: usize = 64;

type AnyError = Box<dyn std::error::Error>;

/// What is measured at a phase boundary.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    rss_kib: u64,
    fds: u64,
    heap_used: Option<u64>,
}

/// Open file descriptors of this process.
fn open_fds() -> Result<u64, AnyError> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// Measures at a quiet point: the VM pool's reaper has reset or destroyed
/// every VM handed to it, so the fds and memory of dropped sandboxes are
/// either gone or held by the bounded pool (reported with each phase).
fn snapshot(guest: Option<&mut MultiUseSandbox>) -> Result<Snapshot, AnyError> {
    pool::wait_idle();
    let heap_used = match guest {
        Some(s) => Some(s.heap_stats()?.used),
        None => None,
    };
    Ok(Snapshot {
        rss_kib: rss_kib(),
        fds: open_fds()?,
        heap_used,
    })
}

/// One phase's figures.
struct Phase {
    name: &'static str,
    count: u64,
    elapsed: Duration,
    start: Snapshot,
    end: Snapshot,
    notes: Vec<String>,
    /// The VM pool's counters at the start and end.
    pool: (pool::PoolStats, pool::PoolStats),
    /// Guest heap use once the mixed phase's caps are all published.
    warm_heap: Option<u64>,
}

impl Phase {
    /// Growth beyond a bound, one line each.
    fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let grew = |a: u64, b: u64| b.saturating_sub(a);
        let rss = grew(self.start.rss_kib, self.end.rss_kib);
        if rss > RSS_BOUND_KIB {
            out.push(format!(
                "{}: RSS grew {rss} KiB (bound {RSS_BOUND_KIB} KiB)",
                self.name
            ));
        }
        let fds = grew(self.start.fds, self.end.fds);
        if fds > FD_BOUND {
            out.push(format!(
                "{}: fds grew by {fds} (bound {FD_BOUND})",
                self.name
            ));
        }
        if let (Some(a), Some(b)) = (self.start.heap_used, self.end.heap_used) {
            let heap = grew(a, b);
            if heap > HEAP_BOUND {
                out.push(format!(
                    "{}: guest heap grew {heap} bytes (bound {HEAP_BOUND})",
                    self.name
                ));
            }
        }
        if let (Some(a), Some(b)) = (self.warm_heap, self.end.heap_used) {
            let heap = grew(a, b);
            if heap > STEADY_HEAP_BOUND {
                out.push(format!(
                    "{}: guest heap grew {heap} bytes after every cap was published \
                     (bound {STEADY_HEAP_BOUND})",
                    self.name
                ));
            }
        }
        out
    }

    fn print(&self) {
        let per_sec = self.count as f64 / self.elapsed.as_secs_f64();
        println!(
            "\n## {} ({} iterations, {:.1} s, {per_sec:.0}/s)",
            self.name,
            self.count,
            self.elapsed.as_secs_f64()
        );
        println!("| measure | start | end | growth | bound |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        let row = |what: &str, a: u64, b: u64, bound: String| {
            println!(
                "| {what} | {a} | {b} | {:+} | {bound} |",
                b as i128 - a as i128
            );
        };
        row(
            "host RSS (KiB)",
            self.start.rss_kib,
            self.end.rss_kib,
            format!("+{RSS_BOUND_KIB}"),
        );
        row(
            "open fds",
            self.start.fds,
            self.end.fds,
            format!("+{FD_BOUND}"),
        );
        if let (Some(a), Some(b)) = (self.start.heap_used, self.end.heap_used) {
            row("guest heap used (bytes)", a, b, format!("+{HEAP_BOUND}"));
        }
        if let (Some(a), Some(b)) = (self.warm_heap, self.end.heap_used) {
            row(
                "guest heap used, caps published (bytes)",
                a,
                b,
                format!("+{STEADY_HEAP_BOUND}"),
            );
        }
        for note in &self.notes {
            println!("- {note}");
        }
        let (a, b) = self.pool;
        println!(
            "- VM pool: {} idle at the start, {} at the end; {} VMs created, {} reused, {} \
             destroyed in this phase",
            a.idle,
            b.idle,
            b.created - a.created,
            b.reused - a.reused,
            b.discarded - a.discarded
        );
    }
}

/// A check that failed mid-phase.
fn fail(message: String) -> AnyError {
    message.into()
}

/// Phase 1: mixed calls on one sandbox.
fn mixed(calls: u64) -> Result<Phase, AnyError> {
    let mut u = uninit(None);
    u.register_host_function(UPPER_FN, |bytes: &[u8]| Ok(bytes.to_ascii_uppercase()))?;
    let mut s = u.evolve()?;
    let caps: Vec<Cap> = (0..CAPS)
        .map(|i| Cap::inline(format!("soak cap {i}").into_bytes()))
        .collect();
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let mut host_payload = UPPER_FN.to_le_bytes().to_vec();
    host_payload.extend_from_slice(b"soak host call");
    let mut total = 0u64;
    let exits = s.exit_count();
    let pool_start = pool::stats();
    let start = snapshot(Some(&mut s))?;
    let began = Instant::now();
    let mut warm_heap = None;
    for i in 0..calls {
        if i == 4 * CAPS as u64 {
            warm_heap = Some(s.heap_stats()?.used);
        }
        let round = (i / 4) as usize;
        match i % 4 {
            0 => {
                let payload = &pattern[..round % pattern.len()];
                if s.call_raw(fn_id::ECHO, payload)? != payload {
                    return Err(fail(format!("call {i}: echo answered other bytes")));
                }
            }
            1 => {
                let n = i % 1000;
                total += n;
                let got = s.call_raw(fn_id::ADD, &n.to_le_bytes())?;
                if got != total.to_le_bytes() {
                    return Err(fail(format!("call {i}: add answered {got:?}, not {total}")));
                }
            }
            2 => {
                let cap = &caps[round % CAPS];
                if s.put_cap(cap)? != cap.hash() {
                    return Err(fail(format!("call {i}: put_cap answered another hash")));
                }
            }
            _ => {
                if s.call_raw(fn_id::HOST_ECHO, &host_payload)? != b"SOAK HOST CALL" {
                    return Err(fail(format!("call {i}: the host call's answer was lost")));
                }
            }
        }
    }
    let elapsed = began.elapsed();
    let end = snapshot(Some(&mut s))?;
    let pool_end = pool::stats();
    let published = caps.len().min(calls.div_ceil(4) as usize);
    for cap in &caps[..published] {
        if s.get_cap(cap.hash())?.as_ref() != Some(cap) {
            return Err(fail("a published cap is missing".into()));
        }
    }
    Ok(Phase {
        name: "mixed calls on one sandbox",
        count: calls,
        elapsed,
        start,
        end,
        notes: vec![
            format!("VM exits: {}", s.exit_count() - exits),
            format!("guest counter total: {total}"),
        ],
        pool: (pool_start, pool_end),
        warm_heap,
    })
}

/// Phase 2: create, call, drop.
fn cycles(n: u64) -> Result<Phase, AnyError> {
    let start = snapshot(None)?;
    let pool_start = pool::stats();
    let began = Instant::now();
    let mut first_heap = None;
    for i in 0..n {
        let mut s = sandbox();
        if s.call_raw(fn_id::ECHO, b"cycle")? != b"cycle" {
            return Err(fail(format!("cycle {i}: echo answered other bytes")));
        }
        // Every fresh sandbox starts from the same guest heap.
        if i == 0 || i + 1 == n {
            let used = s.heap_stats()?.used;
            match first_heap {
                None => first_heap = Some(used),
                Some(first) if first != used => {
                    return Err(fail(format!(
                        "cycle {i}: a fresh guest uses {used} heap bytes, the first used {first}"
                    )));
                }
                Some(_) => {}
            }
        }
    }
    let elapsed = began.elapsed();
    let end = snapshot(None)?;
    Ok(Phase {
        name: "create/call/drop cycles",
        count: n,
        elapsed,
        start,
        end,
        notes: vec![format!(
            "heap used by a fresh guest after one call: {} bytes (first and last cycle)",
            first_heap.unwrap_or(0)
        )],
        pool: (pool_start, pool::stats()),
        warm_heap: None,
    })
}

/// One port-I/O record for the hostile guest's `PORT_IO`.
fn port(out: bool, size: u8, port: u16, value: u32) -> Vec<u8> {
    let mut r = vec![u8::from(!out), size];
    r.extend(port.to_le_bytes());
    r.extend(value.to_le_bytes());
    r
}

/// The hostile attacks that need no setup (not 8, which runs until its
/// deadline, nor 11 and 12, which only switch a mode for later cap calls):
/// `(id, payloads)`, a payload per selector.
fn attacks() -> Vec<(u32, Vec<Vec<u8>>)> {
    let sel = |range: std::ops::RangeInclusive<u8>| range.map(|s| vec![s]).collect::<Vec<_>>();
    let mut garbage_log = vec![4u8];
    garbage_log.extend(0xDEAD_BEEFu64.to_le_bytes());
    garbage_log.extend(512u16.to_le_bytes());
    let mut scribble_log = vec![6u8];
    scribble_log.extend(100u32.to_le_bytes());
    vec![
        (h::ECHO, vec![b"control".to_vec()]),
        (h::FRAME_PAST_END, sel(0..=2)),
        (h::GARBAGE_BODY, sel(0..=1)),
        (h::PAYLOAD_OUTSIDE_FRAME, sel(0..=1)),
        (h::BAD_RING_HEADER, sel(0..=2)),
        (h::NO_RESPONSE, vec![Vec::new()]),
        (h::GARBAGE_HOST_CALL, sel(0..=4)),
        (h::REWRITE_BOOT_INFO, sel(0..=3)),
        (h::CORRUPT_DIRECTORY, sel(0..=6)),
        (h::FAKE_DIRECTORY_SLOT, vec![vec![0x5A; 32]]),
        (
            h::PORT_IO,
            vec![
                port(true, 1, 0x3f8, 0x41),
                port(true, 4, 0xE9, 0x34),
                port(true, 4, 0xE1, 0),
                port(true, 4, 0xE6, 0),
            ],
        ),
        (h::PRIVILEGED, sel(0..=25)),
        (h::EXHAUST_HEAP, sel(0..=1)),
        (h::SCRIBBLE_EVERYTHING, vec![vec![0xA5]]),
        (
            h::CORRUPT_LOG,
            [sel(0..=3), vec![garbage_log, vec![5], scribble_log]].concat(),
        ),
    ]
}

/// An error's variant name (`GuestFault`, `ProtocolViolation`, ...).
fn variant(e: &HyperlightError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Phase 3: hostile-guest cycles.
fn hostile_cycles(n: u64) -> Result<Phase, AnyError> {
    let attacks = attacks();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let start = snapshot(None)?;
    let pool_start = pool::stats();
    let began = Instant::now();
    for i in 0..n {
        let (id, payloads) = &attacks[i as usize % attacks.len()];
        let payload = &payloads[(i as usize / attacks.len()) % payloads.len()];
        let mut s = hostile();
        let result = s.call_raw(*id, payload);
        let outcome = match &result {
            Ok(_) => "Ok".to_string(),
            Err(e) => variant(e),
        };
        *outcomes.entry(outcome).or_default() += 1;
        // A poisoned sandbox refuses; any other still answers.
        let after = s.call_raw(h::ECHO, b"after");
        let consistent = if s.is_poisoned() {
            matches!(after, Err(HyperlightError::PoisonedSandbox))
        } else {
            matches!(&after, Ok(b) if b == b"after")
        };
        if !consistent {
            return Err(fail(format!(
                "cycle {i}, id {id} {payload:?}: {result:?}, then {after:?}"
            )));
        }
    }
    let elapsed = began.elapsed();
    let end = snapshot(None)?;
    let histogram: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    Ok(Phase {
        name: "hostile-guest cycles",
        count: n,
        elapsed,
        start,
        end,
        notes: vec![
            format!(
                "{} attacks (ids without setup), selectors in turn",
                attacks.len()
            ),
            format!("outcomes: {}", histogram.join(", ")),
        ],
        pool: (pool_start, pool::stats()),
        warm_heap: None,
    })
}

/// `--scale N` from the command line (1 without it).
fn scale() -> Result<u64, AnyError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(1),
        [flag, n] if flag == "--scale" => n
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| fail(format!("--scale takes a positive integer, not {n}"))),
        _ => Err(fail("usage: soak [--scale N]".into())),
    }
}

fn run() -> Result<Vec<String>, AnyError> {
    let scale = scale()?;
    let count = |n: u64| (n / scale).max(1);
    println!(
        "# soak (scale 1/{scale}): bounds per phase RSS +{RSS_BOUND_KIB} KiB, fds +{FD_BOUND}; \
         guest heap over the mixed phase +{HEAP_BOUND} bytes, +{STEADY_HEAP_BOUND} once its \
         caps are published"
    );
    let mut violations = Vec::new();
    let mut record = |phase: Phase| {
        phase.print();
        violations.extend(phase.violations());
    };
    record(mixed(count(MIXED_CALLS))?);
    record(cycles(count(CYCLES))?);
    record(hostile_cycles(count(HOSTILE_CYCLES))?);
    Ok(violations)
}

fn main() -> ExitCode {
    match run() {
        Ok(violations) if violations.is_empty() => {
            println!("\nsoak passed: no growth beyond the bounds");
            ExitCode::SUCCESS
        }
        Ok(violations) => {
            for v in violations {
                eprintln!("soak: {v}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
