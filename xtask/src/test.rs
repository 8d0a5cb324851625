//! `cargo xtask test [ARGS]`: runs the workspace tests with cargo-nextest,
//! or with `cargo test` when nextest is not installed. Extra arguments are
//! passed on. With nextest, the doc examples (which nextest does not run)
//! are compiled and run afterwards with `cargo test --doc`.

use crate::cmd::{Cargo, Error};

/// Runs the task; fails with the test runner's status.
pub fn run(extra: &[String]) -> Result<(), Error> {
    if Cargo::new(&["nextest", "--version"]).succeeds_quietly() {
        Cargo::new(&["nextest", "run", "--workspace"])
            .args(extra)
            .run()?;
        Cargo::new(&["test", "--doc", "--workspace"]).run()
    } else {
        println!("cargo-nextest is not installed; falling back to cargo test");
        Cargo::new(&["test", "--workspace"]).args(extra).run()
    }
}
