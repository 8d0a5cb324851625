//! The suite behind `nub bench`: its rows, how each one is measured, and
//! the [`Budget`] that decides how many samples a row takes.
//!
//! Row names are a contract (scripts compare runs by them): keep them. Each
//! row names the floor its ratio is taken against, measured in the same
//! run: call rows against the CPL 3 `out` loop (a call costs one exit),
//! their `(resident)` variants against the `ping-pong floor` (a resident
//! call hands its request to a spinning vCPU through shared memory),
//! `kill latency` against the `kill floor`, the lifecycle rows against the
//! `vm floor`. Rows run in [`rows`]' order, floors first.
//!
//! The loaded rows keep every core busy with spinner threads the row starts
//! and stops itself: `echo empty (loaded)` against the CPL 3 floor and
//! `echo empty (resident, loaded)` against `echo empty (loaded)` (resident
//! mode must not lose to exit mode on a busy machine); `first call after a
//! park (resident)` times a call that finds the guest parked, against the
//! CPL 3 floor (it should cost one exit, not two wake-ups), next to `first
//! call after a pause`, an exit-mode call after the same pause.
//!
//! The call rows are built once per [`CallPath`]; a new way of making a call
//! is one more `CallPath`, and every call row gets its variant with the
//! path's suffix and floor.
//!
//! [`run`] is independent of the terminal: `nub bench` drives it with a
//! progress bar, the tests with [`Budget::fixed`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nub_host_common::default_guest as fn_id;
use nub_hypervisor::floor::{self, ExitFloor, FloorError, KillFloor, Killer, PingPong};
use nub_sandbox::{
    CallMode, GuestBinary, HyperlightError, MultiUseSandbox, SandboxConfiguration,
    UninitializedSandbox, javm_cap::Cap,
};

use super::stats::{Summary, summarize};
use crate::{guest::DEFAULT_GUEST, host_fns};

/// The exit floor at CPL 3, where nub guests run.
pub const FLOOR_CPL3: &str = "floor: out loop CPL 3";
/// The exit floor at CPL 0 (every guest instruction emulated under
/// kvm_pvm).
pub const FLOOR_CPL0: &str = "floor: out loop CPL 0";
/// A bare VM spinning at CPL 3, killed the way nub kills a call.
pub const KILL_FLOOR: &str = "kill floor";
/// Create + drop of a bare VM with one vCPU and one memory slot.
pub const VM_FLOOR: &str = "vm floor";
/// Two host threads bouncing a cache line (no VM).
pub const PING_PONG_FLOOR: &str = "ping-pong floor";
/// Resident set growth per sandbox with 32 alive, in KiB.
pub const RSS_ROW: &str = "rss per sandbox (32 alive)";

/// How long the killer waits after a call begins before it kills it: far
/// longer than entering the guest takes (tens of µs), so the kill lands
/// while the guest spins.
const KILL_SETTLE: Duration = Duration::from_millis(1);

/// Sandboxes kept alive at once by the RSS row.
const RSS_SANDBOXES: usize = 32;

/// A fresh sandbox of the put_cap row after this many caps, so its guest
/// heap never fills (the replacement is not timed).
const CAPS_PER_SANDBOX: u32 = 4096;

/// Operations timed together for rows cheaper than a clock read; their
/// samples are per operation.
const OPS_PER_SAMPLE: u32 = 100;

/// The unit of a row's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds per operation.
    Micros,
    /// KiB (the RSS row).
    KiB,
}

impl Unit {
    /// The unit as the JSON and the table write it.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Micros => "us",
            Unit::KiB => "KiB",
        }
    }
}

/// Why a row could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// Building, booting or calling a sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] HyperlightError),
    /// A floor measurement failed.
    #[error(transparent)]
    Floor(#[from] FloorError),
    /// Starting a helper thread or reading `/proc/self/status` failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The guest answered something other than what the row expects.
    #[error("unexpected answer: {0}")]
    WrongAnswer(String),
}

/// A row that failed, by name.
#[derive(Debug, thiserror::Error)]
#[error("bench row `{row}`: {source}")]
pub struct BenchError {
    /// The row's name.
    pub row: String,
    /// What went wrong.
    #[source]
    pub source: RowError,
}

/// Takes one sample: the figure of one operation in the row's unit.
type Sampler = Box<dyn FnMut() -> Result<f64, RowError>>;

/// Prepares a row's state (sandboxes, threads) before its samples; not
/// timed.
type Setup = Box<dyn FnOnce() -> Result<Sampler, RowError>>;

/// One row of the suite.
pub struct Row {
    /// The row's name (a contract).
    pub name: String,
    /// The floor its ratio is taken against, if any.
    pub floor: Option<&'static str>,
    /// The unit of its figures.
    pub unit: Unit,
    setup: Setup,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("name", &self.name)
            .field("floor", &self.floor)
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

impl Row {
    fn new(
        name: impl Into<String>,
        floor: Option<&'static str>,
        setup: impl FnOnce() -> Result<Sampler, RowError> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            floor,
            unit: Unit::Micros,
            setup: Box::new(setup),
        }
    }
}

/// A way of making a call; every call row runs once per path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPath {
    /// The vCPU thread enters the guest for each call (one VM exit).
    Exit,
    /// The vCPU stays in the guest on the sandbox's thread
    /// ([`CallMode::resident`]); calls are handed over through shared
    /// memory while both sides spin.
    Resident,
}

impl CallPath {
    /// Every path the call rows run on, in table order.
    pub const ALL: &'static [CallPath] = &[CallPath::Exit, CallPath::Resident];

    /// The row name of `base` on this path.
    fn row_name(self, base: &str) -> String {
        match self {
            CallPath::Exit => base.to_string(),
            CallPath::Resident => format!("{base} (resident)"),
        }
    }

    /// The floor call rows on this path are compared with.
    fn floor(self) -> &'static str {
        match self {
            CallPath::Exit => FLOOR_CPL3,
            CallPath::Resident => PING_PONG_FLOOR,
        }
    }

    /// `cfg` set up for this path.
    fn configure(self, cfg: SandboxConfiguration) -> SandboxConfiguration {
        match self {
            CallPath::Exit => cfg.with_call_mode(CallMode::Exit),
            CallPath::Resident => cfg.with_call_mode(CallMode::resident()),
        }
    }
}

/// Boots the default guest with `cfg`, with the CLI's host functions when
/// `host_fns`.
fn boot(cfg: SandboxConfiguration, host_fns: bool) -> Result<MultiUseSandbox, HyperlightError> {
    let mut sandbox =
        UninitializedSandbox::new(GuestBinary::Buffer(DEFAULT_GUEST.to_vec()), Some(cfg))?;
    if host_fns {
        host_fns::register(&mut sandbox)?;
    }
    sandbox.evolve()
}

/// Microseconds in `d`.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `f`; returns microseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, micros(start.elapsed()))
}

/// Fails unless `got` is `want`.
fn expect_answer(what: &str, got: &[u8], want: &[u8]) -> Result<(), RowError> {
    if got == want {
        Ok(())
    } else {
        Err(RowError::WrongAnswer(format!(
            "{what}: {} bytes instead of the expected {}",
            got.len(),
            want.len()
        )))
    }
}

/// The whole suite, in run order: floors, calls (per [`CallPath`]),
/// lifecycle, RSS.
pub fn rows() -> Vec<Row> {
    let mut rows = floor_rows();
    for &path in CallPath::ALL {
        rows.extend(call_rows(path));
    }
    rows.extend(loaded_rows());
    rows.extend(lifecycle_rows());
    rows.push(rss_row());
    rows
}

/// The rows whose names contain `filter`, with the floors they are
/// compared with (so their ratios are still taken in the same run), in
/// suite order.
pub fn select(rows: Vec<Row>, filter: &str) -> Vec<Row> {
    let floors: Vec<&'static str> = rows
        .iter()
        .filter(|r| r.name.contains(filter))
        .filter_map(|r| r.floor)
        .collect();
    rows.into_iter()
        .filter(|r| r.name.contains(filter) || floors.contains(&r.name.as_str()))
        .collect()
}

fn floor_rows() -> Vec<Row> {
    let exit_floor = |user_mode: bool| {
        move || -> Result<Sampler, RowError> {
            let mut floor = ExitFloor::new(user_mode)?;
            Ok(Box::new(move || Ok(micros(floor.round_trip()?))))
        }
    };
    vec![
        Row::new(FLOOR_CPL3, None, exit_floor(true)),
        Row::new(FLOOR_CPL0, Some(FLOOR_CPL3), exit_floor(false)),
        Row::new(KILL_FLOOR, None, || {
            let mut floor = KillFloor::new(KILL_SETTLE)?;
            Ok(Box::new(move || Ok(micros(floor.kill_latency()?))))
        }),
        Row::new(VM_FLOOR, None, || {
            Ok(Box::new(|| Ok(micros(floor::vm_lifecycle()?))))
        }),
        // One round trip per sample, timed like the resident call rows it
        // is the floor of (one call per sample): a batch of round trips
        // pipelines and carries no timer, and read ~2x lower.
        Row::new(PING_PONG_FLOOR, None, || {
            let mut pp = PingPong::new()?;
            Ok(Box::new(move || Ok(micros(pp.round_trips(1)))))
        }),
    ]
}

/// A sampler that calls `fn_id` with `payload` in a sandbox booted for
/// `path` and checks the first answer is `want`.
fn call_sampler(
    path: CallPath,
    host_fns: bool,
    fn_id: u32,
    payload: Vec<u8>,
    want: Vec<u8>,
) -> Result<Sampler, RowError> {
    let mut s = boot(path.configure(SandboxConfiguration::default()), host_fns)?;
    expect_answer("first call", &s.call_raw(fn_id, &payload)?, &want)?;
    Ok(Box::new(move || {
        let (answer, us) = timed(|| s.call_raw(fn_id, &payload));
        answer?;
        Ok(us)
    }))
}

fn call_rows(path: CallPath) -> Vec<Row> {
    let floor = Some(path.floor());
    let echo = |size: usize| {
        move || {
            let payload = vec![0x5a; size];
            call_sampler(path, false, fn_id::ECHO, payload.clone(), payload)
        }
    };
    vec![
        Row::new(path.row_name("echo empty"), floor, echo(0)),
        Row::new(path.row_name("echo 4KiB"), floor, echo(4 << 10)),
        Row::new(path.row_name("echo 64KiB"), floor, echo(64 << 10)),
        Row::new(path.row_name("host call"), floor, move || {
            // host_echo through the CLI's host fn 1 (echo): two transitions.
            let mut payload = host_fns::ECHO.to_le_bytes().to_vec();
            payload.extend_from_slice(b"ping");
            call_sampler(path, true, fn_id::HOST_ECHO, payload, b"ping".to_vec())
        }),
        Row::new(path.row_name("batch 100 per call"), floor, move || {
            let mut s = boot(path.configure(SandboxConfiguration::default()), false)?;
            let batch: Vec<(u32, &'static [u8])> = (0..OPS_PER_SAMPLE)
                .map(|_| (fn_id::ECHO, &b""[..]))
                .collect();
            let answers = s.call_batch(&batch)?;
            if answers.len() != batch.len()
                || answers.iter().any(|a| !matches!(a, Ok(v) if v.is_empty()))
            {
                return Err(RowError::WrongAnswer("a batch of empty echos".into()));
            }
            Ok(Box::new(move || {
                let (answers, us) = timed(|| s.call_batch(&batch));
                for answer in answers? {
                    answer?;
                }
                Ok(us / f64::from(OPS_PER_SAMPLE))
            }))
        }),
        Row::new(path.row_name("put_cap 64B"), floor, move || {
            let cfg = path.configure(SandboxConfiguration::default().with_heap_size(16 << 20));
            let mut s = boot(cfg, false)?;
            let mut sent = 0u32;
            let mut serial = 0u64;
            Ok(Box::new(move || {
                if sent == CAPS_PER_SANDBOX {
                    s = boot(cfg, false)?;
                    sent = 0;
                }
                sent += 1;
                serial += 1;
                // A new cap each time: 64 bytes, the first 8 a serial.
                let mut data = [0u8; 64];
                data[..8].copy_from_slice(&serial.to_le_bytes());
                let cap = Cap::inline(data.to_vec());
                let (hash, us) = timed(|| s.put_cap(&cap));
                hash?;
                Ok(us)
            }))
        }),
        Row::new(path.row_name("put_cap_with_hash hit"), floor, move || {
            let mut s = boot(path.configure(SandboxConfiguration::default()), false)?;
            let cap = Cap::inline(vec![1u8; 64]);
            let hash = s.put_cap(&cap)?;
            Ok(Box::new(move || {
                let (result, us) =
                    timed(|| (0..OPS_PER_SAMPLE).try_for_each(|_| s.put_cap_with_hash(hash, &cap)));
                result?;
                Ok(us / f64::from(OPS_PER_SAMPLE))
            }))
        }),
    ]
}

/// One timed create + evolve + empty echo + drop of a default-guest
/// sandbox with `cfg`, in microseconds.
/// The loaded exit-mode row, the floor of its resident variant.
pub const ECHO_LOADED: &str = "echo empty (loaded)";

/// Threads that keep every core busy until dropped.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    /// One spinning thread per core.
    fn start() -> Result<Self, RowError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let mut spinners = Self {
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(cores),
        };
        for i in 0..cores {
            let stop = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name(format!("bench-spin-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })?;
            spinners.threads.push(thread);
        }
        Ok(spinners)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            // A spinner cannot panic; a join error would only mean it did.
            let _ = thread.join();
        }
    }
}

/// Empty echoes on `path` while [`Spinners`] keep every core busy.
fn loaded_echo(path: CallPath) -> Result<Sampler, RowError> {
    let mut call = call_sampler(path, false, fn_id::ECHO, Vec::new(), Vec::new())?;
    let spinners = Spinners::start()?;
    Ok(Box::new(move || {
        let _busy = &spinners;
        call()
    }))
}

/// A call after three back-to-back calls and a pause of 20 resident spin
/// windows: in resident mode the guest spun, then parked; in exit mode the
/// same pause shows what an idle machine costs any call (cold caches, a
/// core waking up), so the two rows compare like with like.
fn after_a_pause(path: CallPath) -> Result<Sampler, RowError> {
    let mut s = boot(path.configure(SandboxConfiguration::default()), false)?;
    let pause = match CallMode::resident() {
        CallMode::Resident { spin } => spin * 20,
        CallMode::Exit => Duration::from_millis(2),
    };
    Ok(Box::new(move || {
        for _ in 0..3 {
            s.call_raw(fn_id::ECHO, b"")?;
        }
        std::thread::sleep(pause);
        let (answer, us) = timed(|| s.call_raw(fn_id::ECHO, b""));
        answer?;
        Ok(us)
    }))
}

fn loaded_rows() -> Vec<Row> {
    vec![
        Row::new(ECHO_LOADED, Some(FLOOR_CPL3), || {
            loaded_echo(CallPath::Exit)
        }),
        Row::new("echo empty (resident, loaded)", Some(ECHO_LOADED), || {
            loaded_echo(CallPath::Resident)
        }),
        Row::new("first call after a pause", Some(FLOOR_CPL3), || {
            after_a_pause(CallPath::Exit)
        }),
        Row::new(
            "first call after a park (resident)",
            Some(FLOOR_CPL3),
            || after_a_pause(CallPath::Resident),
        ),
    ]
}

fn cycle(cfg: SandboxConfiguration) -> Result<f64, RowError> {
    let bin = GuestBinary::Buffer(DEFAULT_GUEST.to_vec());
    let (answer, us) = timed(|| -> Result<Vec<u8>, HyperlightError> {
        let mut s = UninitializedSandbox::new(bin, Some(cfg))?.evolve()?;
        s.call_raw(fn_id::ECHO, b"")
    });
    answer?;
    Ok(us)
}

/// The time from a kill until the default guest's `spin` in `sandbox`
/// returned, killed from `killer`'s thread.
fn kill_latency(killer: &mut Killer, sandbox: &mut MultiUseSandbox) -> Result<Duration, RowError> {
    let handle = sandbox.interrupt_handle();
    let (result, latency) = killer.time_kill(Box::new(move || handle.kill()), || {
        sandbox.call_raw(fn_id::SPIN, b"")
    })?;
    match result {
        Err(HyperlightError::Canceled) => Ok(latency),
        Err(e) => Err(e.into()),
        Ok(answer) => Err(RowError::WrongAnswer(format!(
            "spin returned {} bytes instead of being killed",
            answer.len()
        ))),
    }
}

fn lifecycle_rows() -> Vec<Row> {
    let floor = Some(VM_FLOOR);
    let cfg = SandboxConfiguration::default;
    let binary = || GuestBinary::Buffer(DEFAULT_GUEST.to_vec());
    vec![
        Row::new("create+evolve", floor, move || {
            Ok(Box::new(move || {
                let bin = binary();
                let (sandbox, us) = timed(|| UninitializedSandbox::new(bin, Some(cfg()))?.evolve());
                drop(sandbox?);
                Ok(us)
            }))
        }),
        Row::new("drop", floor, move || {
            Ok(Box::new(move || {
                let sandbox = boot(cfg(), false)?;
                Ok(timed(|| drop(sandbox)).1)
            }))
        }),
        // Without the pool: a new VM per cycle, the baseline of the pool
        // row below.
        Row::new("create+evolve+call+drop", floor, move || {
            Ok(Box::new(move || cycle(cfg().with_vm_pool(false))))
        }),
        // The same cycle with the VM pool (the default): each cycle's VM is
        // the previous cycle's, reset.
        Row::new("create+evolve+call+drop (pool)", floor, move || {
            // One VM in the pool before the first sample.
            drop(boot(cfg(), false)?);
            Ok(Box::new(move || cycle(cfg())))
        }),
        Row::new("kill latency", Some(KILL_FLOOR), move || {
            let mut killer = Killer::new(KILL_SETTLE)?;
            Ok(Box::new(move || {
                let mut sandbox = boot(cfg(), false)?;
                Ok(micros(kill_latency(&mut killer, &mut sandbox)?))
            }))
        }),
    ]
}

/// This process's resident set in KiB (`VmRSS` in `/proc/self/status`).
fn rss_kib() -> Result<f64, std::io::Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(f64::from)
        .ok_or_else(|| std::io::Error::other("no VmRSS line in /proc/self/status"))
}

fn rss_row() -> Row {
    let mut row = Row::new(RSS_ROW, None, || {
        Ok(Box::new(|| {
            // VMs the reaper has not destroyed yet (the previous sample's)
            // would still count in `before` and leave the sample.
            nub_sandbox::pool::wait_idle();
            let before = rss_kib()?;
            // Each sandbox booted and called once (an idle, used sandbox).
            let alive = (0..RSS_SANDBOXES)
                .map(|_| {
                    let mut s = boot(SandboxConfiguration::default(), false)?;
                    s.call_raw(fn_id::ECHO, b"")?;
                    Ok(s)
                })
                .collect::<Result<Vec<_>, RowError>>()?;
            let after = rss_kib()?;
            drop(alive);
            // 32 is exact in f64.
            Ok((after - before) / RSS_SANDBOXES as f64)
        }))
    });
    row.unit = Unit::KiB;
    row
}

/// How many samples each row takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Sampling stops once this much time has passed (and `min_samples`
    /// are in).
    pub per_row: Duration,
    /// Samples taken whatever the time.
    pub min_samples: usize,
    /// Samples never exceeded (bounds memory for the cheap rows).
    pub max_samples: usize,
    /// Untimed runs before sampling, cut short after a tenth of `per_row`.
    pub warmup: usize,
}

impl Budget {
    /// The default run: under 2 minutes for the whole suite.
    pub fn full() -> Self {
        Self {
            per_row: Duration::from_millis(3500),
            min_samples: 20,
            max_samples: 200_000,
            warmup: 20,
        }
    }

    /// `--quick`: about 20 s for the whole suite.
    pub fn quick() -> Self {
        Self {
            per_row: Duration::from_millis(700),
            min_samples: 5,
            max_samples: 100_000,
            warmup: 5,
        }
    }

    /// Exactly `n` samples of every row, no warm-up (tests).
    pub fn fixed(n: usize) -> Self {
        Self {
            per_row: Duration::ZERO,
            min_samples: n,
            max_samples: n,
            warmup: 0,
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    /// The row's name.
    pub name: String,
    /// The floor its ratio is taken against, if any.
    pub floor: Option<&'static str>,
    /// The unit of `summary`.
    pub unit: Unit,
    /// Its samples, summarized.
    pub summary: Summary,
}

/// Where [`run`] is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Index of the row being measured.
    pub row: usize,
    /// Rows in all.
    pub rows: usize,
    /// Its name.
    pub name: &'a str,
    /// How much of its budget is spent, 0 to 1.
    pub done: f64,
}

/// Measures `rows` one after the other with `budget`, telling `progress`
/// where it is. Stops at the first row that fails.
pub fn run(
    rows: Vec<Row>,
    budget: Budget,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<RowResult>, BenchError> {
    let total = rows.len();
    let mut results = Vec::with_capacity(total);
    for (index, row) in rows.into_iter().enumerate() {
        let Row {
            name,
            floor,
            unit,
            setup,
        } = row;
        let mut report = |done: f64| {
            progress(Progress {
                row: index,
                rows: total,
                name: &name,
                done,
            })
        };
        report(0.0);
        let summary = measure(setup, budget, &mut report).map_err(|source| BenchError {
            row: name.clone(),
            source,
        })?;
        report(1.0);
        results.push(RowResult {
            name,
            floor,
            unit,
            summary,
        });
    }
    Ok(results)
}

/// Sets a row up, warms it up and samples it within `budget`.
fn measure(setup: Setup, budget: Budget, report: &mut dyn FnMut(f64)) -> Result<Summary, RowError> {
    let mut sample = setup()?;
    let warmup_start = Instant::now();
    for _ in 0..budget.warmup {
        if warmup_start.elapsed() > budget.per_row / 10 {
            break;
        }
        sample()?;
    }
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last_report = start;
    loop {
        let elapsed = start.elapsed();
        let enough = samples.len() >= budget.min_samples && elapsed >= budget.per_row;
        if samples.len() >= budget.max_samples || enough {
            break;
        }
        samples.push(sample()?);
        if last_report.elapsed() > Duration::from_millis(50) {
            last_report = Instant::now();
            let by_time = elapsed.as_secs_f64() / budget.per_row.as_secs_f64().max(1e-9);
            // Sample counts are far below 2^52: exact as floats.
            let by_count = samples.len() as f64 / budget.min_samples.max(1) as f64;
            report(by_time.min(by_count).min(1.0));
        }
    }
    summarize(&mut samples).ok_or_else(|| RowError::WrongAnswer("no samples taken".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row name [`rows`] produces, without setting anything up.
    fn row_names() -> Vec<String> {
        rows().into_iter().map(|r| r.name).collect()
    }

    /// The call rows' base names (their exit-path names), written out
    /// here rather than taken from [`call_rows`].
    const CALL_BASES: &[&str] = &[
        "echo empty",
        "echo 4KiB",
        "echo 64KiB",
        "host call",
        "batch 100 per call",
        "put_cap 64B",
        "put_cap_with_hash hit",
    ];

    #[test]
    fn call_rows_exist_for_every_path_with_its_floor() {
        let rows = rows();
        for &path in CallPath::ALL {
            for base in CALL_BASES {
                let name = path.row_name(base);
                let row = rows.iter().find(|r| r.name == name);
                assert_eq!(
                    row.map(|r| r.floor),
                    Some(Some(path.floor())),
                    "{name} missing or with the wrong floor"
                );
            }
        }
        // A call row added without being listed here is caught too.
        let exit: Vec<String> = call_rows(CallPath::Exit)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(exit, CALL_BASES);
    }

    #[test]
    fn every_floor_a_row_names_is_measured_before_it() {
        let rows = rows();
        for (i, row) in rows.iter().enumerate() {
            if let Some(floor) = row.floor {
                let at = rows.iter().position(|r| r.name == floor);
                assert!(at.is_some_and(|at| at < i), "{} -> {floor}", row.name);
            }
        }
    }

    #[test]
    fn a_filter_keeps_its_rows_and_their_floors() {
        let names = |rows: Vec<Row>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(rows(), "kill")),
            ["kill floor", "kill latency"]
        );
        assert_eq!(
            names(select(rows(), "echo 4KiB")),
            [
                FLOOR_CPL3,
                PING_PONG_FLOOR,
                "echo 4KiB",
                "echo 4KiB (resident)"
            ]
        );
        assert_eq!(names(select(rows(), "")), row_names());
        assert!(select(rows(), "no such row").is_empty());
    }

    #[test]
    fn row_names_are_unique() {
        let mut names = row_names();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn the_whole_suite_runs_with_two_samples_a_row() {
        let mut seen = Vec::new();
        let results = run(rows(), Budget::fixed(2), &mut |p| {
            if seen.last() != Some(&p.row) {
                seen.push(p.row);
            }
            assert!((0.0..=1.0).contains(&p.done));
        })
        .unwrap();
        assert_eq!(
            results.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            row_names()
        );
        assert_eq!(seen, (0..results.len()).collect::<Vec<_>>());
        for r in &results {
            assert_eq!(r.summary.samples, 2, "{}", r.name);
            if r.unit == Unit::Micros {
                assert!(r.summary.median > 0.0, "{}: {:?}", r.name, r.summary);
            }
            assert!(r.summary.p99 >= r.summary.median, "{}", r.name);
        }
    }

    #[test]
    fn a_failing_row_names_itself() {
        let row = Row::new("broken", None, || {
            Err(RowError::WrongAnswer("set up to fail".into()))
        });
        let err = run(vec![row], Budget::fixed(1), &mut |_| {}).unwrap_err();
        assert_eq!(err.row, "broken");
        assert!(err.to_string().contains("set up to fail"), "{err}");
    }

    #[test]
    fn rss_is_read_from_proc() {
        assert!(rss_kib().unwrap() > 0.0);
    }
}
