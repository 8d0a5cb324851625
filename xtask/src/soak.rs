//! `cargo xtask soak [ARGS]`: the soak test. Runs the release-mode soak
//! program (`tests/examples/soak.rs`, so it runs optimised): a million mixed
//! calls on one sandbox, ten thousand create/call/drop cycles and a thousand
//! hostile-guest cycles, with guest heap use, host RSS and open file
//! descriptors checked against stated bounds at the start and end of each
//! phase. Extra arguments are passed on to the program (`--scale N` divides
//! every phase's count, for a quick run). Not part of `cargo xtask test`.

use crate::cmd::{Cargo, Error};

/// The command the task runs.
fn command(extra: &[String]) -> Cargo {
    Cargo::new(&[
        "run",
        "--release",
        "-p",
        "nub-tests",
        "--example",
        "soak",
        "--",
    ])
    .args(extra)
}

/// Runs the task; fails when the soak program reports growth beyond a
/// bound (or any call fails).
pub fn run(extra: &[String]) -> Result<(), Error> {
    command(extra).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_release_soak_example() {
        assert_eq!(
            command(&["--scale".into(), "100".into()]).display(),
            "cargo run --release -p nub-tests --example soak -- --scale 100"
        );
    }
}
