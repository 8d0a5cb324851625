//! `cargo xtask test [ARGS]`: runs the workspace tests with cargo-nextest,
//! or with `cargo test` when nextest is not installed. Extra arguments are
//! passed on.

use crate::cmd::{Cargo, Error};

/// Runs the task; fails with the test runner's status.
pub fn run(extra: &[String]) -> Result<(), Error> {
    if Cargo::new(&["nextest", "--version"]).succeeds_quietly() {
        Cargo::new(&["nextest", "run", "--workspace"])
            .args(extra)
            .run()
    } else {
        println!("cargo-nextest is not installed; falling back to cargo test");
        Cargo::new(&["test", "--workspace"]).args(extra).run()
    }
}
