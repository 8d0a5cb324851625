//! nub's build tasks, run through the cargo alias `cargo xtask <task>`
//! (see `.cargo/config.toml`), in the style of rust-analyzer's xtask: plain
//! Rust instead of shell scripts, one module per task, few dependencies.
//!
//! ```text
//! cargo xtask build-guest     # build the guest programs, list their ELFs
//! cargo xtask test [ARGS..]   # cargo nextest run --workspace (or cargo test),
//!                             # then the guests' unit tests on the host
//! cargo xtask ci              # fmt check, clippy -D warnings, cycles, tests
//! cargo xtask cycles          # no module cycle inside any crate
//! cargo xtask miri           # ABI and guest-kernel tests under Miri (nightly)
//! cargo xtask fuzz [SECONDS]  # every fuzz target for SECONDS (default 900)
//! cargo xtask soak [ARGS]     # the release-mode soak (calls, cycles, leaks)
//! ```
//!
//! Every command a task runs is printed before it runs.

#![deny(unsafe_op_in_unsafe_fn)]

mod build_guest;
mod ci;
mod cmd;
mod cycles;
mod fuzz;
mod miri;
mod soak;
mod test;

use std::process::ExitCode;

use crate::cmd::Error;

/// Usage text for `cargo xtask help`.
const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  build-guest    build the guest programs under guest-x86/guests and print
                 `name: path` for each ELF
  test [ARGS]    cargo nextest run --workspace [ARGS] (cargo test --workspace
                 [ARGS] when cargo-nextest is not installed), the doc
                 examples, then the guests' unit tests on the host
                 (cargo test --target <host> in guest-x86/guests)
  ci             the pre-submit check: rustfmt and clippy (-D warnings) on
                 the workspace and the guests, the module-cycle check, then
                 the tests
  cycles         fails if any crate has a cycle between its top-level
                 modules (a file of `a` naming `crate::b` is an edge a -> b)
  fuzz [SECONDS] the fuzzing campaign: every target in fuzz/fuzz_targets
                 for SECONDS each (default 900), one at a time, with a
                 summary of executions, coverage and crashes (nightly;
                 installs cargo-fuzz if missing)
  soak [ARGS]    the soak test, release mode: 1,000,000 mixed calls, 10,000
                 create/call/drop cycles, 1,000 hostile-guest cycles; fails
                 on heap, RSS or fd growth beyond its bounds (--scale N
                 divides the counts)
  miri           the unit tests of nub-arch-x86 and nub-host-common's ring
                 and directory tests under Miri (Tree Borrows; ring and
                 directory also under Stacked Borrows); installs the
                 nightly miri component when it is missing
  help           print this message
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "build-guest" => no_args(task, rest).and_then(|()| build_guest::run()),
        "test" => test::run(rest),
        "ci" => no_args(task, rest).and_then(|()| ci::run()),
        "cycles" => no_args(task, rest).and_then(|()| cycles::run()),
        "miri" => no_args(task, rest).and_then(|()| miri::run()),
        "fuzz" => fuzz::run(rest),
        "soak" => soak::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(Error::Usage(format!("unknown task `{other}`"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            if matches!(e, Error::Usage(_)) {
                eprint!("\n{USAGE}");
            }
            e.exit_code()
        }
    }
}

/// Fails when a task that takes no arguments got some.
fn no_args(task: &str, rest: &[String]) -> Result<(), Error> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(Error::Usage(format!(
            "`{task}` takes no arguments (got `{arg}`)"
        ))),
    }
}
