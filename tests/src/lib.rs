//! Shared helpers for the integration tests in `tests/tests/`.
//!
//! Every test needs `/dev/kvm`; without it the helpers panic with a clear
//! message rather than letting a test pass without running.

use nub_sandbox::{
    CallMode, GuestBinary, MultiUseSandbox, SandboxConfiguration, UninitializedSandbox,
};

/// Path of the default guest ELF, built by this crate's build script.
pub const DEFAULT_GUEST: &str = env!("NUB_GUEST_NUB_DEFAULT_GUEST");

/// Path of the hostile guest ELF (`guest-x86/guests/hostile`).
pub const HOSTILE_GUEST: &str = env!("NUB_GUEST_NUB_HOSTILE_GUEST");

/// The default guest's fn ids (the contract shared with the guest, the CLI
/// and the benches), defined once in the ABI crate.
pub mod fn_id {
    pub use nub_host_common::default_guest::*;
}

/// The hostile guest's fn ids (a contract with `guest-x86/guests/hostile`;
/// payloads and selectors are documented there), re-exported from
/// `nub_host_common::hostile_guest`, where the guest reads them too.
pub mod hostile_fn_id {
    pub use nub_host_common::hostile_guest::*;
}

/// The hostile guest, uninitialized, with `cfg`.
pub fn hostile_uninit(cfg: Option<SandboxConfiguration>) -> UninitializedSandbox {
    require_kvm();
    UninitializedSandbox::new(
        GuestBinary::FilePath(HOSTILE_GUEST.into()),
        Some(in_call_mode(cfg)),
    )
    .expect("load the hostile guest")
}

/// Per-call deadline of [`hostile`] sandboxes: a regression that lets an
/// attack hang fails its test instead of stalling the run.
pub const HOSTILE_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The hostile guest, booted, with the default configuration plus a
/// [`HOSTILE_CALL_DEADLINE`] per call.
pub fn hostile() -> MultiUseSandbox {
    let cfg = SandboxConfiguration::default().with_max_execution_time(Some(HOSTILE_CALL_DEADLINE));
    hostile_uninit(Some(cfg))
        .evolve()
        .expect("boot the hostile guest")
}

/// Fails loudly when KVM is missing.
pub fn require_kvm() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "these tests boot real guests and need /dev/kvm"
    );
}

/// The environment variable that picks the call mode of every sandbox the
/// helpers build: `exit` (or unset) or `resident`. `cargo xtask test` runs
/// the integration suite once in each mode, so every test covers both.
pub const CALL_MODE_VAR: &str = "NUB_TEST_CALL_MODE";

/// The call mode this run of the suite uses (see [`CALL_MODE_VAR`]).
pub fn call_mode() -> CallMode {
    match std::env::var(CALL_MODE_VAR).as_deref() {
        Ok("resident") => CallMode::resident(),
        Ok("exit") | Err(_) => CallMode::Exit,
        Ok(other) => panic!("{CALL_MODE_VAR}={other}: expected `exit` or `resident`"),
    }
}

/// `cfg` (or the defaults) in this run's call mode, unless `cfg` already
/// asks for resident calls (a test or benchmark that chose its mode keeps
/// it).
pub fn in_call_mode(cfg: Option<SandboxConfiguration>) -> SandboxConfiguration {
    let cfg = cfg.unwrap_or_default();
    match cfg.call_mode {
        CallMode::Exit => cfg.with_call_mode(call_mode()),
        CallMode::Resident { .. } => cfg,
    }
}

/// Whether VM exits count guest runs in this run of the suite: true in exit
/// mode; in resident mode calls make no exits and an idle guest parks on
/// its own schedule, so exit counts say nothing there.
pub fn exits_count_runs() -> bool {
    call_mode() == CallMode::Exit
}

/// Checks a call's VM exits where they are deterministic: in exit mode
/// `exits` must be exactly `exit_mode` (one per call, one per host call).
/// In resident mode a call with both sides spinning makes none, but a side
/// that runs out of its spin window (a loaded machine) parks or notifies
/// with an exit, so the count depends on scheduling; `tests/resident.rs`
/// checks the exit-free path with a spin window no scheduler delay reaches.
pub fn assert_exits(exits: u64, exit_mode: u64, what: &str) {
    if exits_count_runs() {
        assert_eq!(exits, exit_mode, "{what}");
    }
}

/// The default guest, uninitialized, with `cfg`, in this run's call mode.
pub fn uninit(cfg: Option<SandboxConfiguration>) -> UninitializedSandbox {
    require_kvm();
    UninitializedSandbox::new(
        GuestBinary::FilePath(DEFAULT_GUEST.into()),
        Some(in_call_mode(cfg)),
    )
    .expect("load the default guest")
}

/// The default guest, booted, with the default configuration.
pub fn sandbox() -> MultiUseSandbox {
    uninit(None).evolve().expect("boot the default guest")
}

/// The default guest, booted, with `cfg`.
pub fn sandbox_with(cfg: SandboxConfiguration) -> MultiUseSandbox {
    uninit(Some(cfg)).evolve().expect("boot the default guest")
}

/// This process's resident set size in KiB (from `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// This process's open file descriptors (entries of `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// `(state, utime + stime in clock ticks)` of this process's thread named
/// `name`, from `/proc/self/task/*/stat`; `None` if there is no such
/// thread.
pub fn thread_stat(name: &str) -> Option<(char, u64)> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the parenthesised command: state is the first,
        // utime and stime the 12th and 13th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first()?.chars().next()?;
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        return Some((state, ticks));
    }
    None
}
