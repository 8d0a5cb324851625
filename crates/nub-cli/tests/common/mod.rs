//! Running the built `nub` binary, shared by the CLI test files.

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `nub` with `args`. Fails loudly without `/dev/kvm`: the commands
/// tested boot real guests.
pub fn nub(args: &[&str]) -> Output {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "the nub CLI tests boot real guests and need /dev/kvm"
    );
    Command::new(env!("CARGO_BIN_EXE_nub"))
        .args(args)
        .output()
        .expect("run the nub binary")
}

/// The command's stdout, which must be UTF-8.
pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// The command's stderr, decoded lossily.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `nub` expecting success; returns stdout.
pub fn nub_ok(args: &[&str]) -> String {
    let out = nub(args);
    assert!(
        out.status.success(),
        "nub {args:?} failed with {}: {}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}
