//! `cargo xtask ci`: the full pre-submit check. Runs every step even after
//! one fails, then lists the failures.
//!
//! The guest programs form their own cargo workspace (they only build for
//! `x86_64-unknown-none`), so rustfmt and clippy run there too, in the
//! wasm guest's workspace (built hard-float, docs/wasm.md), and in each
//! example's guest (a workspace of its own; clippy for the guest target and,
//! with its unit tests, for the host), and in each Rust program built for
//! `wasm32-wasip1` (`test::WASM_PROGRAMS`; clippy for that target, which is
//! added to the toolchain first if it is missing).

use nub_guest_build::{WASM_TARGET, target};

use crate::{
    cmd::{Cargo, Error, project_root},
    cycles, test,
};

/// Where the guest workspace is, relative to the repository root.
const GUESTS: &str = "guest-x86/guests";

/// Runs the task.
pub fn run() -> Result<(), Error> {
    let mut checks = vec![
        ("rustfmt", Cargo::new(&["fmt", "--all", "--", "--check"])),
        (
            "rustfmt (guests)",
            Cargo::new(&["fmt", "--", "--check"]).in_dir(GUESTS),
        ),
        (
            "clippy",
            Cargo::new(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        (
            "clippy (guests)",
            Cargo::new(&["clippy", "--workspace", "--", "-D", "warnings"]).in_dir(GUESTS),
        ),
        (
            "rustfmt (wasm guest)",
            Cargo::new(&["fmt", "--", "--check"]).in_dir(test::WASM_GUEST),
        ),
        (
            "clippy (wasm guest)",
            Cargo::new(&["clippy", "--all-targets", "--", "-D", "warnings"])
                .in_dir(test::WASM_GUEST),
        ),
    ];
    for dir in test::EXAMPLE_GUESTS {
        checks.push((
            "rustfmt (example guest)",
            Cargo::new(&["fmt", "--", "--check"]).in_dir(dir),
        ));
        checks.push((
            "clippy (example guest)",
            Cargo::new(&[
                "clippy",
                "--target",
                "x86_64-unknown-none",
                "--",
                "-D",
                "warnings",
            ])
            .in_dir(dir),
        ));
        checks.push((
            "clippy (example guest, host tests)",
            Cargo::new(&[
                "clippy",
                "--all-targets",
                "--target",
                test::HOST_TRIPLE,
                "--",
                "-D",
                "warnings",
            ])
            .in_dir(dir),
        ));
    }
    for dir in test::WASM_PROGRAMS {
        checks.push((
            "rustfmt (wasm program)",
            Cargo::new(&["fmt", "--", "--check"]).in_dir(dir),
        ));
        checks.push((
            "clippy (wasm program)",
            Cargo::new(&["clippy", "--target", WASM_TARGET, "--", "-D", "warnings"]).in_dir(dir),
        ));
    }
    let mut failed = Vec::new();
    if let Err(e) = ensure_wasm_target() {
        eprintln!("xtask: wasm target: {e}");
        failed.push("wasm target".to_string());
    }
    for (name, check) in checks {
        if let Err(e) = check.run() {
            eprintln!("xtask: {name}: {e}");
            failed.push(name.to_string());
        }
    }
    if let Err(e) = cycles::run() {
        eprintln!("xtask: module cycles: {e}");
        failed.push("module cycles".to_string());
    }
    if let Err(e) = test::run(&[]) {
        eprintln!("xtask: tests: {e}");
        failed.push("tests".to_string());
    }
    if failed.is_empty() {
        println!("ci: all checks passed");
        Ok(())
    } else {
        Err(Error::Steps(failed))
    }
}

/// Adds `wasm32-wasip1` to the toolchain if it lacks it (as a wasm build
/// would), so clippy can check the wasm programs for it.
fn ensure_wasm_target() -> Result<(), Error> {
    let sysroot = target::sysroot(&project_root()).map_err(Error::GuestBuild)?;
    target::ensure(&sysroot, WASM_TARGET).map_err(Error::GuestBuild)
}
