//! `nub call`: boot a sandbox, call one guest function, print the result.

use std::io::Write;

use nub_sandbox::UninitializedSandbox;

use crate::{cli::CallArgs, error::CliError, guest, output, payload};

/// Runs `nub call`.
pub fn run(args: &CallArgs) -> Result<(), CliError> {
    // Read the payload first: a bad --file or --hex fails before any boot.
    let payload = payload::load(&args.payload)?;
    let config = args
        .sandbox
        .configuration()
        .with_max_execution_time(args.timeout);
    let binary = guest::binary(args.sandbox.guest.as_deref());
    let mut sandbox = UninitializedSandbox::new(binary, Some(config))?.evolve()?;
    let mut result = Vec::new();
    for _ in 0..args.repeat {
        result = sandbox.call_raw(args.fn_id, &payload)?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", output::render(&result, args.raw_hex))
        .and_then(|()| stdout.flush())
        .map_err(CliError::Write)
}
