//! `nub call`: boot a sandbox with the CLI's host functions, call one guest
//! function, print the result; with `-v`, the guest's log records on stderr.

use std::io::Write;

use log::LevelFilter;
use nub_sandbox::{CallMode, GUEST_LOG_TARGET, UninitializedSandbox};

use nub_cli::host_fns;

use crate::{cli::CallArgs, error::CliError, guest, output, payload};

/// Runs `nub call`.
pub fn run(args: &CallArgs) -> Result<(), CliError> {
    // Read the payload first: a bad --file or --hex fails before any build
    // or boot.
    let payload = payload::load(&args.payload)?;
    let level = guest_log_level(args.verbose);
    install_logger(level);
    let config = args
        .sandbox
        .configuration()
        .with_max_execution_time(args.timeout)
        .with_guest_log_level(level)
        .with_call_mode(match args.resident {
            Some(spin) => CallMode::Resident { spin },
            None => CallMode::Exit,
        });
    let elf = guest::elf(args.sandbox.guest.as_deref())?;
    let binary = guest::binary(elf.as_deref());
    let mut sandbox = UninitializedSandbox::new(binary, Some(config))?;
    host_fns::register(&mut sandbox)?;
    let mut sandbox = sandbox.evolve()?;
    let mut result = Vec::new();
    for _ in 0..args.repeat {
        result = sandbox.call_raw(args.fn_id, &payload)?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", output::render(&result, args.raw_hex))
        .and_then(|()| stdout.flush())
        .map_err(CliError::Write)
}

/// The guest log level `-v` asks for: none off (records are not even
/// collected), `-v` info, `-vv` debug, `-vvv` and more trace.
pub fn guest_log_level(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::Off,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Sends the host's `nub::guest` records up to `level` to stderr (nothing
/// for [`LevelFilter::Off`]); every other target stays silent.
fn install_logger(level: LevelFilter) {
    if level == LevelFilter::Off {
        return;
    }
    env_logger::Builder::new()
        .filter_level(LevelFilter::Off)
        .filter_module(GUEST_LOG_TARGET, level)
        .format_timestamp(None)
        .target(env_logger::Target::Stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_guest_levels() {
        assert_eq!(guest_log_level(0), LevelFilter::Off);
        assert_eq!(guest_log_level(1), LevelFilter::Info);
        assert_eq!(guest_log_level(2), LevelFilter::Debug);
        assert_eq!(guest_log_level(3), LevelFilter::Trace);
        assert_eq!(guest_log_level(9), LevelFilter::Trace);
    }
}
