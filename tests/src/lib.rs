//! Shared helpers for the integration tests in `tests/tests/`.
//!
//! Every test needs `/dev/kvm`; without it the helpers panic with a clear
//! message rather than letting a test pass without running.

use nub_sandbox::{GuestBinary, MultiUseSandbox, SandboxConfiguration, UninitializedSandbox};

/// Path of the default guest ELF, built by this crate's build script.
pub const DEFAULT_GUEST: &str = env!("NUB_GUEST_NUB_DEFAULT_GUEST");

/// The default guest's fn ids (the contract shared with the CLI and benches).
pub mod fn_id {
    /// Returns the payload.
    pub const ECHO: u32 = 1;
    /// Adds a u64 LE to a guest counter; returns the total.
    pub const ADD: u32 = 2;
    /// Returns a guest-function error with the payload as message.
    pub const FAIL: u32 = 3;
    /// blake3 of the payload.
    pub const BLAKE3: u32 = 4;
    /// Calls host function (u32 LE) with the rest of the payload.
    pub const HOST_ECHO: u32 = 5;
    /// Calls a host function N times, sums the u32 answers.
    pub const HOST_LOOP: u32 = 7;
    /// Faults as the selector byte says.
    pub const FAULT: u32 = 8;
    /// Spins forever.
    pub const SPIN: u32 = 9;
    /// Sums the bytes of a Data cap in the directory.
    pub const CAP_SUM: u32 = 6;
    /// Corrupts the directory header (tests only).
    pub const SCRIBBLE_DIRECTORY: u32 = 10;
}

/// Fails loudly when KVM is missing.
pub fn require_kvm() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "these tests boot real guests and need /dev/kvm"
    );
}

/// The default guest, uninitialized, with `cfg`.
pub fn uninit(cfg: Option<SandboxConfiguration>) -> UninitializedSandbox {
    require_kvm();
    UninitializedSandbox::new(GuestBinary::FilePath(DEFAULT_GUEST.into()), cfg)
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
