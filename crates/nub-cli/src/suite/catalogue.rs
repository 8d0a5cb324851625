//! The rows of the suite: each row's name, the floor its ratio is taken
//! against and its unit, in run order, with the [sampler](super::samplers)
//! that measures it.
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
//! The image rows compare a start from a persisted image
//! (`nub_sandbox::SandboxImage`) with the boot it replaces, measured in the
//! same run: `create from image` against `create+evolve`, `create from
//! image+call+drop (pool)` against `create+evolve+call+drop (pool)`, `load
//! image` against `create+evolve+call+drop` (the suite's cold start without
//! the pool; it has no `create+evolve` without the pool, and the cycle's
//! extra echo and drop are a few percent of it), and `rss per sandbox from
//! image (32 alive)` against `rss per sandbox (32 alive)`.
//!
//! The call rows are built once per [`CallPath`]; a new way of making a call
//! is one more `CallPath`, and every call row gets its variant with the
//! path's suffix and floor.
//!
//! The wasm rows ([`Group::Wasm`]) run WebAssembly in a
//! `nub_wasm::WasmSandbox`: the interpreter's workloads (`wasm fib(25)`,
//! `wasm loop 10M`, `wasm f64 1M`) and `wasm load small module` (and its
//! `(resident)` variant) against the same wasmi natively on the host (`native wasmi …`, floors measured
//! in this run), and calls into exports against the default guest's call
//! rows they correspond to: `wasm call empty export` against `echo empty`,
//! its `(resident)` variant against `echo empty (resident)`, `wasm import
//! call (resident)` (an export making one import call) against `host call
//! (resident)` (a guest fn making one host call). The interpreter rows'
//! samples take milliseconds: they sample for a quarter of the budget's
//! time ([`Row::long_samples`]).

use nub_sandbox::{CallMode, SandboxConfiguration};
use nub_wasm::workloads;

use super::{
    error::RowError,
    samplers::{self, Sampler},
};

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
/// The loaded exit-mode row, the floor of its resident variant.
pub const ECHO_LOADED: &str = "echo empty (loaded)";
/// Create + evolve with the pool: what `create from image` is compared
/// with.
pub const CREATE_EVOLVE: &str = "create+evolve";
/// The recovery cycle without the pool: what `load image` is compared
/// with (the suite's closest to a create + evolve without the pool).
pub const CYCLE: &str = "create+evolve+call+drop";
/// The recovery cycle with the pool: what `create from image+call+drop
/// (pool)` is compared with.
pub const CYCLE_POOL: &str = "create+evolve+call+drop (pool)";
/// The empty echo in exit mode: what `wasm call empty export` is compared
/// with.
pub const ECHO_EMPTY: &str = "echo empty";
/// The empty echo in resident mode: what `wasm call empty export
/// (resident)` is compared with.
pub const ECHO_EMPTY_RESIDENT: &str = "echo empty (resident)";
/// A guest fn making one host call, resident: what `wasm import call
/// (resident)` is compared with.
pub const HOST_CALL_RESIDENT: &str = "host call (resident)";
/// fib(25) in wasmi natively on the host: the floor of `wasm fib(25)`.
pub const NATIVE_FIB: &str = "native wasmi fib(25)";
/// The 10M-iteration loop in wasmi natively on the host.
pub const NATIVE_LOOP: &str = "native wasmi loop 10M";
/// The 1M-iteration f64 loop in wasmi natively on the host.
pub const NATIVE_F64: &str = "native wasmi f64 1M";
/// Compile + instantiate of a small module in wasmi natively on the host.
pub const NATIVE_LOAD: &str = "native wasmi load small module";

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

/// What a row measures; the criterion benches and `measure` pick rows by
/// group ([`select_groups`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Group {
    /// A floor: the cheapest way to do what other rows do, with no sandbox.
    Floor,
    /// A call of the default guest (echo, host call, batch), per
    /// [`CallPath`].
    Call,
    /// A cap call (`put_cap`, `put_cap_with_hash`), per [`CallPath`].
    Cap,
    /// An empty echo while spinner threads keep every core busy.
    Loaded,
    /// The first call after a pause (the guest parked, in resident mode).
    Pause,
    /// Creating, dropping and killing sandboxes.
    Lifecycle,
    /// Memory per sandbox (KiB, not a time).
    Memory,
    /// WebAssembly in a wasm sandbox, and its floors: the same wasmi
    /// natively on the host.
    Wasm,
}

/// Prepares a row's state (sandboxes, threads) before its samples; not
/// timed.
pub(super) type Setup = Box<dyn FnOnce() -> Result<Sampler, RowError>>;

/// One row of the suite.
pub struct Row {
    /// The row's name (a contract).
    pub name: String,
    /// The floor its ratio is taken against, if any.
    pub floor: Option<&'static str>,
    /// The unit of its figures.
    pub unit: Unit,
    /// What it measures.
    pub group: Group,
    /// Its samples take milliseconds: it samples for a quarter of the
    /// budget's time ([`Budget::for_long_samples`](super::Budget::for_long_samples)),
    /// so `--quick` stays quick.
    pub long_samples: bool,
    /// Sets the row up and returns its sampler.
    pub(super) setup: Setup,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("name", &self.name)
            .field("floor", &self.floor)
            .field("unit", &self.unit)
            .field("group", &self.group)
            .field("long_samples", &self.long_samples)
            .finish_non_exhaustive()
    }
}

impl Row {
    /// A row of microseconds in `group` named `name`, compared with
    /// `floor`, measured by the sampler `setup` returns.
    pub(super) fn new(
        group: Group,
        name: impl Into<String>,
        floor: Option<&'static str>,
        setup: impl FnOnce() -> Result<Sampler, RowError> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            floor,
            unit: Unit::Micros,
            group,
            long_samples: false,
            setup: Box::new(setup),
        }
    }

    /// This row with [`Row::long_samples`] set.
    pub(super) fn with_long_samples(mut self) -> Self {
        self.long_samples = true;
        self
    }

    /// Sets the row up (untimed) and returns the sampler that takes its
    /// samples, for a harness other than [`run`](super::run) (criterion).
    pub fn set_up(self) -> Result<Sampler, RowError> {
        (self.setup)()
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
    pub fn row_name(self, base: &str) -> String {
        match self {
            CallPath::Exit => base.to_string(),
            CallPath::Resident => format!("{base} (resident)"),
        }
    }

    /// The floor call rows on this path are compared with.
    pub fn floor(self) -> &'static str {
        match self {
            CallPath::Exit => FLOOR_CPL3,
            CallPath::Resident => PING_PONG_FLOOR,
        }
    }

    /// The call mode of this path.
    fn mode(self) -> CallMode {
        match self {
            CallPath::Exit => CallMode::Exit,
            CallPath::Resident => CallMode::resident(),
        }
    }

    /// The default configuration set up for this path.
    fn config(self) -> SandboxConfiguration {
        SandboxConfiguration::default().with_call_mode(self.mode())
    }
}

/// The whole suite, in run order: floors, calls (per [`CallPath`]),
/// loaded and paused calls, lifecycle, images, wasm (after the call rows
/// its call rows are compared with), RSS (booted, then from an image).
pub fn rows() -> Vec<Row> {
    let mut rows = floor_rows();
    for &path in CallPath::ALL {
        rows.extend(call_rows(path));
    }
    rows.extend(loaded_rows());
    rows.extend(lifecycle_rows());
    rows.extend(image_rows());
    rows.extend(wasm_rows());
    rows.extend(rss_rows());
    rows
}

/// The rows whose names contain `filter`, with the floors they are
/// compared with and those floors' own floors (so every ratio is still
/// taken in the same run), in suite order.
pub fn select(rows: Vec<Row>, filter: &str) -> Vec<Row> {
    keep_with_floors(rows, |r| r.name.contains(filter))
}

/// The rows in one of `groups`, with the floors they are compared with
/// (and theirs), in suite order.
pub fn select_groups(rows: Vec<Row>, groups: &[Group]) -> Vec<Row> {
    keep_with_floors(rows, |r| groups.contains(&r.group))
}

/// The rows `wanted` picks and the floors they name, transitively (a row
/// compared with another row gets that row's floor too), in suite order.
fn keep_with_floors(rows: Vec<Row>, wanted: impl Fn(&Row) -> bool) -> Vec<Row> {
    let mut keep: Vec<bool> = rows.iter().map(&wanted).collect();
    // Each pass adds the floors of the rows kept so far; a chain of floors
    // is at most as long as the suite.
    loop {
        let floors: Vec<&'static str> = rows
            .iter()
            .zip(&keep)
            .filter(|&(_, &k)| k)
            .filter_map(|(r, _)| r.floor)
            .collect();
        let mut added = false;
        for (row, k) in rows.iter().zip(keep.iter_mut()) {
            if !*k && floors.contains(&row.name.as_str()) {
                *k = true;
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    rows.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

fn floor_rows() -> Vec<Row> {
    vec![
        Row::new(Group::Floor, FLOOR_CPL3, None, || {
            samplers::exit_floor(true)
        }),
        Row::new(Group::Floor, FLOOR_CPL0, Some(FLOOR_CPL3), || {
            samplers::exit_floor(false)
        }),
        Row::new(Group::Floor, KILL_FLOOR, None, samplers::kill_floor),
        Row::new(Group::Floor, VM_FLOOR, None, samplers::vm_floor),
        Row::new(Group::Floor, PING_PONG_FLOOR, None, samplers::ping_pong),
    ]
}

/// The call rows on `path`, in table order.
pub(super) fn call_rows(path: CallPath) -> Vec<Row> {
    let floor = Some(path.floor());
    let echo = |size: usize| move || samplers::echo(path.config(), size);
    vec![
        Row::new(Group::Call, path.row_name("echo empty"), floor, echo(0)),
        Row::new(
            Group::Call,
            path.row_name("echo 4KiB"),
            floor,
            echo(4 << 10),
        ),
        Row::new(
            Group::Call,
            path.row_name("echo 64KiB"),
            floor,
            echo(64 << 10),
        ),
        Row::new(Group::Call, path.row_name("host call"), floor, move || {
            samplers::host_call(path.config())
        }),
        Row::new(
            Group::Call,
            path.row_name("typed call small"),
            floor,
            move || samplers::typed_small(path.config()),
        ),
        Row::new(
            Group::Call,
            path.row_name("typed call 4KiB"),
            floor,
            move || samplers::typed_4k(path.config()),
        ),
        Row::new(
            Group::Call,
            path.row_name("batch 100 per call"),
            floor,
            move || samplers::batch(path.config()),
        ),
        Row::new(Group::Cap, path.row_name("put_cap 64B"), floor, move || {
            samplers::put_cap(path.config())
        }),
        Row::new(
            Group::Cap,
            path.row_name("put_cap_with_hash hit"),
            floor,
            move || samplers::put_cap_with_hash(path.config()),
        ),
    ]
}

fn loaded_rows() -> Vec<Row> {
    vec![
        Row::new(Group::Loaded, ECHO_LOADED, Some(FLOOR_CPL3), || {
            samplers::loaded_echo(CallPath::Exit.config())
        }),
        Row::new(
            Group::Loaded,
            "echo empty (resident, loaded)",
            Some(ECHO_LOADED),
            || samplers::loaded_echo(CallPath::Resident.config()),
        ),
        Row::new(
            Group::Pause,
            "first call after a pause",
            Some(FLOOR_CPL3),
            || samplers::after_a_pause(CallPath::Exit.config()),
        ),
        Row::new(
            Group::Pause,
            "first call after a park (resident)",
            Some(FLOOR_CPL3),
            || samplers::after_a_pause(CallPath::Resident.config()),
        ),
    ]
}

fn lifecycle_rows() -> Vec<Row> {
    let floor = Some(VM_FLOOR);
    vec![
        Row::new(
            Group::Lifecycle,
            CREATE_EVOLVE,
            floor,
            samplers::create_evolve,
        ),
        Row::new(Group::Lifecycle, "drop", floor, samplers::drop_sandbox),
        // Without the pool: a new VM per cycle, the baseline of the pool
        // row below.
        Row::new(Group::Lifecycle, CYCLE, floor, samplers::cycle_without_pool),
        Row::new(
            Group::Lifecycle,
            CYCLE_POOL,
            floor,
            samplers::cycle_with_pool,
        ),
        Row::new(
            Group::Lifecycle,
            "kill latency",
            Some(KILL_FLOOR),
            samplers::kill_latency,
        ),
    ]
}

/// Starting sandboxes from a persisted image, each against the boot
/// path it replaces (see the module's docs).
fn image_rows() -> Vec<Row> {
    vec![
        Row::new(
            Group::Lifecycle,
            "create from image",
            Some(CREATE_EVOLVE),
            samplers::create_from_image,
        ),
        Row::new(
            Group::Lifecycle,
            "create from image+call+drop (pool)",
            Some(CYCLE_POOL),
            samplers::image_cycle_with_pool,
        ),
        Row::new(
            Group::Lifecycle,
            "load image",
            Some(CYCLE),
            samplers::load_image,
        ),
    ]
}

/// WebAssembly in a wasm sandbox, each row after its floor (see the
/// module's docs).
fn wasm_rows() -> Vec<Row> {
    use samplers::wasm;
    let workload = |native: &'static str, guest: &'static str, w: (&'static str, i32)| {
        [
            Row::new(Group::Wasm, native, None, move || wasm::native_workload(w))
                .with_long_samples(),
            Row::new(Group::Wasm, guest, Some(native), move || {
                wasm::guest_workload(w)
            })
            .with_long_samples(),
        ]
    };
    let mut rows = Vec::new();
    rows.extend(workload(NATIVE_FIB, "wasm fib(25)", workloads::FIB_25));
    rows.extend(workload(NATIVE_LOOP, "wasm loop 10M", workloads::LOOP_10M));
    rows.extend(workload(NATIVE_F64, "wasm f64 1M", workloads::F64_1M));
    rows.extend([
        Row::new(Group::Wasm, NATIVE_LOAD, None, wasm::native_load_small),
        Row::new(
            Group::Wasm,
            CallPath::Exit.row_name("wasm load small module"),
            Some(NATIVE_LOAD),
            || wasm::guest_load_small(CallPath::Exit.mode()),
        ),
        Row::new(
            Group::Wasm,
            CallPath::Resident.row_name("wasm load small module"),
            Some(NATIVE_LOAD),
            || wasm::guest_load_small(CallPath::Resident.mode()),
        ),
        Row::new(
            Group::Wasm,
            CallPath::Exit.row_name("wasm call empty export"),
            Some(ECHO_EMPTY),
            || wasm::call_empty_export(CallPath::Exit.mode()),
        ),
        Row::new(
            Group::Wasm,
            CallPath::Resident.row_name("wasm call empty export"),
            Some(ECHO_EMPTY_RESIDENT),
            || wasm::call_empty_export(CallPath::Resident.mode()),
        ),
        Row::new(
            Group::Wasm,
            CallPath::Resident.row_name("wasm import call"),
            Some(HOST_CALL_RESIDENT),
            || wasm::import_call(CallPath::Resident.mode()),
        ),
    ]);
    rows
}

fn rss_rows() -> Vec<Row> {
    let kib = |mut row: Row| {
        row.unit = Unit::KiB;
        row
    };
    vec![
        kib(Row::new(
            Group::Memory,
            RSS_ROW,
            None,
            samplers::rss_per_sandbox,
        )),
        kib(Row::new(
            Group::Memory,
            "rss per sandbox from image (32 alive)",
            Some(RSS_ROW),
            samplers::rss_per_sandbox_from_image,
        )),
    ]
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
        "typed call small",
        "typed call 4KiB",
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
        // Floors of floors: the image rows' comparison rows keep theirs.
        assert_eq!(
            names(select(rows(), "image")),
            [
                VM_FLOOR,
                CREATE_EVOLVE,
                CYCLE,
                CYCLE_POOL,
                "create from image",
                "create from image+call+drop (pool)",
                "load image",
                RSS_ROW,
                "rss per sandbox from image (32 alive)",
            ]
        );
    }

    #[test]
    fn groups_select_their_rows_and_floors() {
        let names = |rows: Vec<Row>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(select_groups(rows(), &[Group::Lifecycle])),
            [
                KILL_FLOOR,
                VM_FLOOR,
                "create+evolve",
                "drop",
                "create+evolve+call+drop",
                "create+evolve+call+drop (pool)",
                "kill latency",
                "create from image",
                "create from image+call+drop (pool)",
                "load image",
            ]
        );
        assert_eq!(
            names(select_groups(rows(), &[Group::Cap])),
            [
                FLOOR_CPL3,
                PING_PONG_FLOOR,
                "put_cap 64B",
                "put_cap_with_hash hit",
                "put_cap 64B (resident)",
                "put_cap_with_hash hit (resident)"
            ]
        );
        // Every row is in some group.
        let all = [
            Group::Floor,
            Group::Call,
            Group::Cap,
            Group::Loaded,
            Group::Pause,
            Group::Lifecycle,
            Group::Memory,
            Group::Wasm,
        ];
        assert_eq!(names(select_groups(rows(), &all)), row_names());
        // Only the memory rows are not times.
        for row in rows() {
            assert_eq!(row.unit == Unit::KiB, row.group == Group::Memory, "{row:?}");
        }
    }

    #[test]
    fn image_rows_are_compared_with_the_boots_they_replace() {
        let rows = rows();
        let floor = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.floor);
        assert_eq!(floor("create from image"), Some(Some(CREATE_EVOLVE)));
        assert_eq!(
            floor("create from image+call+drop (pool)"),
            Some(Some(CYCLE_POOL))
        );
        assert_eq!(floor("load image"), Some(Some(CYCLE)));
        assert_eq!(
            floor("rss per sandbox from image (32 alive)"),
            Some(Some(RSS_ROW))
        );
    }

    /// The wasm rows and their floors, written out here.
    const WASM_ROWS: &[(&str, Option<&str>)] = &[
        ("native wasmi fib(25)", None),
        ("wasm fib(25)", Some("native wasmi fib(25)")),
        ("native wasmi loop 10M", None),
        ("wasm loop 10M", Some("native wasmi loop 10M")),
        ("native wasmi f64 1M", None),
        ("wasm f64 1M", Some("native wasmi f64 1M")),
        ("native wasmi load small module", None),
        (
            "wasm load small module",
            Some("native wasmi load small module"),
        ),
        (
            "wasm load small module (resident)",
            Some("native wasmi load small module"),
        ),
        ("wasm call empty export", Some("echo empty")),
        (
            "wasm call empty export (resident)",
            Some("echo empty (resident)"),
        ),
        ("wasm import call (resident)", Some("host call (resident)")),
    ];

    #[test]
    fn wasm_rows_are_compared_with_their_floors() {
        let rows = rows();
        for &(name, floor) in WASM_ROWS {
            let row = rows.iter().find(|r| r.name == name);
            assert_eq!(row.map(|r| r.floor), Some(floor), "{name}");
            assert_eq!(row.map(|r| r.group), Some(Group::Wasm), "{name}");
        }
        // A wasm row added without being listed here is caught too.
        let wasm: Vec<Row> = select_groups(rows, &[Group::Wasm])
            .into_iter()
            .filter(|r| r.group == Group::Wasm)
            .collect();
        let listed: Vec<&str> = WASM_ROWS.iter().map(|&(n, _)| n).collect();
        assert_eq!(
            wasm.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            listed
        );
        // Only the interpreter rows sample for a shorter time.
        for row in &wasm {
            let interpreter = ["fib(25)", "loop 10M", "f64 1M"]
                .iter()
                .any(|w| row.name.ends_with(w));
            assert_eq!(row.long_samples, interpreter, "{}", row.name);
        }
        // The floors named by constant are call rows' names.
        let exit = call_rows(CallPath::Exit);
        let resident = call_rows(CallPath::Resident);
        assert!(exit.iter().any(|r| r.name == ECHO_EMPTY));
        assert!(resident.iter().any(|r| r.name == ECHO_EMPTY_RESIDENT));
        assert!(resident.iter().any(|r| r.name == HOST_CALL_RESIDENT));
    }

    #[test]
    fn the_wasm_filter_keeps_every_wasm_row_and_its_floors() {
        let names: Vec<String> = select(rows(), "wasm").into_iter().map(|r| r.name).collect();
        let mut want = vec![
            FLOOR_CPL3,
            PING_PONG_FLOOR,
            ECHO_EMPTY,
            ECHO_EMPTY_RESIDENT,
            HOST_CALL_RESIDENT,
        ];
        want.extend(WASM_ROWS.iter().map(|&(n, _)| n));
        assert_eq!(names, want);
    }

    #[test]
    fn row_names_are_unique() {
        let mut names = row_names();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
