//! `cargo xtask test [ARGS]`: runs the workspace tests with cargo-nextest,
//! or with `cargo test` when nextest is not installed. Extra arguments are
//! passed on. With nextest, the doc examples (which nextest does not run)
//! are compiled and run afterwards with `cargo test --doc`.
//!
//! The integration suite (`nub-tests`) then runs a second time with
//! `NUB_TEST_CALL_MODE=resident`, so every integration test covers both call
//! modes (see `nub_tests::call_mode`).
//!
//! Then the guests' own unit tests run on the host (`nub_arch_x86::testing`):
//! the guest workspace builds for `x86_64-unknown-none` by default, so they
//! run with `cargo test --target <host triple>` in `guest-x86/guests`, and
//! the same way in `guest-x86/guests/wasm` (the wasm guest's own
//! workspace) and in each example's guest (`examples/kv/guest`, a
//! workspace of its own).

use crate::cmd::{Cargo, Error};

/// Where the guest workspace is, relative to the repository root.
const GUESTS: &str = "guest-x86/guests";

/// The examples' guest crates (each a workspace of its own), relative to
/// the repository root.
pub const EXAMPLE_GUESTS: &[&str] = &["examples/kv/guest"];

/// The Rust programs built for `wasm32-wasip1` (each a workspace of its
/// own, built by `nub_guest_build::build_wasm`): nub-wasm's WASI test
/// program and the wasm-plugin example's plugin. Their behaviour is tested
/// by the workspace crates that run them (`nub-wasm`, `nub-wasm-plugin`);
/// `cargo xtask ci` checks their formatting and lints.
pub const WASM_PROGRAMS: &[&str] = &[
    "crates/nub-wasm/tests/wasi-hello",
    "examples/wasm-plugin/plugin",
];

/// Runs the task; fails with the test runner's status.
pub fn run(extra: &[String]) -> Result<(), Error> {
    if Cargo::new(&["nextest", "--version"]).succeeds_quietly() {
        Cargo::new(&["nextest", "run", "--workspace"])
            .args(extra)
            .run()?;
        resident_suite(&["nextest", "run", "-p", "nub-tests"])
            .args(extra)
            .run()?;
        Cargo::new(&["test", "--doc", "--workspace"]).run()?;
    } else {
        println!("cargo-nextest is not installed; falling back to cargo test");
        Cargo::new(&["test", "--workspace"]).args(extra).run()?;
        resident_suite(&["test", "-p", "nub-tests"])
            .args(extra)
            .run()?;
    }
    guest_tests().run()?;
    wasm_guest_tests().run()?;
    for dir in EXAMPLE_GUESTS {
        example_guest_tests(dir).run()?;
    }
    Ok(())
}

/// Where the wasm guest's workspace is (a hard-float guest, built apart
/// from the others: docs/wasm.md).
pub const WASM_GUEST: &str = "guest-x86/guests/wasm";

/// The wasm guest's unit tests, built for and run on the host.
fn wasm_guest_tests() -> Cargo {
    Cargo::new(&["test", "--target", HOST_TRIPLE]).in_dir(WASM_GUEST)
}

/// The integration suite in resident call mode.
fn resident_suite(args: &[&str]) -> Cargo {
    Cargo::new(args).env("NUB_TEST_CALL_MODE", "resident")
}

/// The guests' unit tests, built for and run on the host.
fn guest_tests() -> Cargo {
    Cargo::new(&["test", "--workspace", "--target", HOST_TRIPLE]).in_dir(GUESTS)
}

/// An example guest's unit tests, built for and run on the host.
fn example_guest_tests(dir: &'static str) -> Cargo {
    Cargo::new(&["test", "--target", HOST_TRIPLE]).in_dir(dir)
}

/// The host's target triple: the one xtask itself was built for (recorded
/// by `build.rs`).
pub const HOST_TRIPLE: &str = env!("XTASK_HOST_TRIPLE");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_triple_is_a_hosted_target() {
        assert!(HOST_TRIPLE.contains('-'), "{HOST_TRIPLE:?}");
        assert!(!HOST_TRIPLE.ends_with("-none"), "{HOST_TRIPLE}");
        assert!(
            HOST_TRIPLE.starts_with(std::env::consts::ARCH),
            "{HOST_TRIPLE}"
        );
    }

    #[test]
    fn the_resident_run_sets_the_call_mode() {
        assert_eq!(
            resident_suite(&["nextest", "run", "-p", "nub-tests"]).display(),
            "NUB_TEST_CALL_MODE=resident cargo nextest run -p nub-tests"
        );
    }

    #[test]
    fn guest_tests_run_in_the_guest_workspace_for_the_host() {
        assert_eq!(
            guest_tests().display(),
            format!("(cd guest-x86/guests && cargo test --workspace --target {HOST_TRIPLE})")
        );
        assert_eq!(
            wasm_guest_tests().display(),
            format!("(cd guest-x86/guests/wasm && cargo test --target {HOST_TRIPLE})")
        );
    }

    #[test]
    fn example_guest_tests_run_in_their_own_workspace_for_the_host() {
        assert_eq!(EXAMPLE_GUESTS, ["examples/kv/guest"]);
        assert_eq!(
            example_guest_tests("examples/kv/guest").display(),
            format!("(cd examples/kv/guest && cargo test --target {HOST_TRIPLE})")
        );
        for dir in EXAMPLE_GUESTS {
            let manifest = crate::cmd::project_root().join(dir).join("Cargo.toml");
            assert!(manifest.is_file(), "{}", manifest.display());
        }
    }

    #[test]
    fn the_wasm_programs_are_wasm_crates() {
        for dir in WASM_PROGRAMS {
            let krate = nub_guest_build::wasm::inspect(&crate::cmd::project_root().join(dir))
                .unwrap_or_else(|e| panic!("{dir}: {e}"));
            assert!(krate.manifest.is_file(), "{}", krate.manifest.display());
        }
    }
}
