//! `cargo xtask miri`: runs the ABI and guest-kernel unit tests under
//! Miri, which checks them for undefined behaviour (aliasing, out-of-bounds
//! and dangling accesses, misalignment, data races).
//!
//! Miri needs a nightly toolchain with the `miri` and `rust-src`
//! components. The task installs the components when they are missing
//! (`rustup component add miri rust-src --toolchain nightly`), then runs
//!
//! ```text
//! MIRIFLAGS=-Zmiri-tree-borrows cargo +nightly miri test -p nub-arch-x86
//! MIRIFLAGS=-Zmiri-tree-borrows cargo +nightly miri test -p nub-host-common --lib -- ring:: directory::
//! cargo +nightly miri test -p nub-host-common --lib -- ring:: directory::
//! ```
//!
//! (any `MIRIFLAGS` already set come first). Tree Borrows, not Miri's
//! default Stacked Borrows, for everything that reads rkyv archives: rkyv's
//! relative pointers reach past the archived struct they start from, which
//! Stacked Borrows cannot express (rkyv/rkyv#436); Tree Borrows is the model
//! rkyv is checked under. The ring and directory tests of `nub-host-common`
//! do not touch rkyv, so they run under both.
//! docs/guest-testing.md records what this covers.

use std::process::{Command, Stdio};

use crate::cmd::{Error, project_root, run_command};

/// The toolchain Miri runs on.
const TOOLCHAIN: &str = "nightly";

/// Components Miri needs.
const COMPONENTS: [&str; 2] = ["miri", "rust-src"];

/// Tests of `nub-host-common` that run under Miri, in both models: the ring
/// and directory code (no rkyv, so Stacked Borrows can check it too).
const HOST_COMMON_FILTERS: [&str; 2] = ["ring::", "directory::"];

/// Tests of `nub-arch-x86` left out: safe code only, and minutes under Miri
/// (2000 caps hashed with blake3). `state_cache`'s other tests still run.
const ARCH_SKIPS: [&str; 1] = ["state_cache::tests::grows_and_keeps_everything_findable"];

/// Runs the task.
pub fn run() -> Result<(), Error> {
    install_missing()?;
    let user_flags = std::env::var("MIRIFLAGS").unwrap_or_default();
    let tree_borrows = miri_flags(&user_flags, "-Zmiri-tree-borrows");

    // The guest kernel: dispatcher, host calls, testing harness, regions
    // (and the doc example of `testing`).
    let mut arch = args(&["miri", "test", "-p", "nub-arch-x86", "--"]);
    for skip in ARCH_SKIPS {
        arch.extend(args(&["--skip", skip]));
    }
    run_miri(&arch, &tree_borrows)?;

    // The ABI's ring and directory code, under both models.
    let mut common = args(&["miri", "test", "-p", "nub-host-common", "--lib", "--"]);
    common.extend(args(&HOST_COMMON_FILTERS));
    run_miri(&common, &tree_borrows)?;
    run_miri(&common, &miri_flags(&user_flags, ""))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// `MIRIFLAGS` for a run: the caller's own (`user`), then `flag`.
fn miri_flags(user: &str, flag: &str) -> String {
    [user.trim(), flag]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `rustup` command, with the variables the outer cargo set for xtask
/// removed: they name the pinned toolchain's cargo and rustc, and
/// cargo-miri would follow them instead of the nightly ones.
fn rustup(args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(args).current_dir(project_root());
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Which of [`COMPONENTS`] the output of `rustup component list
/// --installed` lacks. Lines name a component, alone (`rust-src`) or with
/// a suffix (`miri-x86_64-unknown-linux-gnu`, `miri-preview-…`).
fn missing_components(installed: &str) -> Vec<&'static str> {
    COMPONENTS
        .into_iter()
        .filter(|component| {
            !installed.lines().map(str::trim).any(|line| {
                line.strip_prefix(component)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
            })
        })
        .collect()
}

/// Installs the missing components (and the toolchain, if rustup has none
/// by that name), saying so; fails with the command to run by hand.
fn install_missing() -> Result<(), Error> {
    let list = ["component", "list", "--toolchain", TOOLCHAIN, "--installed"];
    let listed = rustup(&list).stderr(Stdio::null()).output();
    let installed = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        // No rustup, or no such toolchain: install both at once.
        _ => String::new(),
    };
    let missing = missing_components(&installed);
    if missing.is_empty() {
        return Ok(());
    }
    let mut args = vec!["component", "add"];
    args.extend(&missing);
    args.extend(["--toolchain", TOOLCHAIN]);
    if installed.is_empty() {
        args = vec!["toolchain", "install", TOOLCHAIN, "--profile", "minimal"];
        for component in &missing {
            args.extend(["--component", component]);
        }
    }
    let command = format!("rustup {}", args.join(" "));
    eprintln!(
        "xtask: Miri needs {}; running `{command}`",
        missing.join(", ")
    );
    run_command(rustup(&args), command)
}

/// Runs `cargo +nightly <args>` with `MIRIFLAGS=flags`.
fn run_miri(args: &[String], flags: &str) -> Result<(), Error> {
    let mut cmd = rustup(&["run", TOOLCHAIN, "cargo"]);
    cmd.args(args).env("MIRIFLAGS", flags);
    let command = format!("MIRIFLAGS='{flags}' cargo +{TOOLCHAIN} {}", args.join(" "));
    run_command(cmd, command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_missing_components() {
        let both = "cargo-x86_64-unknown-linux-gnu\nmiri-x86_64-unknown-linux-gnu\nrust-src\n";
        assert!(missing_components(both).is_empty());
        let preview = "miri-preview-x86_64-unknown-linux-gnu\nrust-src\n";
        assert!(missing_components(preview).is_empty());
        let no_miri =
            "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        assert_eq!(missing_components(no_miri), ["miri"]);
        // `rust-std-…` is not `rust-src`, and `miri-…` names only miri.
        let no_src = "miri-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-linux-gnu\n";
        assert_eq!(missing_components(no_src), ["rust-src"]);
        assert_eq!(missing_components(""), ["miri", "rust-src"]);
    }

    #[test]
    fn user_flags_come_first() {
        assert_eq!(miri_flags("", "-Zmiri-tree-borrows"), "-Zmiri-tree-borrows");
        assert_eq!(
            miri_flags(" -Zmiri-seed=7 ", "-Zmiri-tree-borrows"),
            "-Zmiri-seed=7 -Zmiri-tree-borrows"
        );
        assert_eq!(miri_flags("", ""), "");
    }
}
