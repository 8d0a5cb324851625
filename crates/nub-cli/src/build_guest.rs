//! `nub build`: builds a guest crate and prints its ELF's path.

use std::io::Write;

use crate::{cli::BuildArgs, error::CliError};

/// Runs `nub build`: cargo's output goes to stderr, the ELF's path is the
/// last (and only) line of stdout.
pub fn run(args: &BuildArgs) -> Result<(), CliError> {
    let elf = nub_guest_build::build_guest(&args.path)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", elf.display())
        .and_then(|()| stdout.flush())
        .map_err(CliError::Write)
}
