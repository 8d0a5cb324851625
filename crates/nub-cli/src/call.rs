//! `nub call`: boot a sandbox with the CLI's host functions (or start one
//! from an image file), call one guest function, print the result; with
//! `-v`, the guest's log records on stderr.

use std::{io::Write, path::Path};

use log::LevelFilter;
use nub_sandbox::{
    CallMode, GUEST_LOG_TARGET, MultiUseSandbox, SandboxImage, UninitializedSandbox,
};

use nub_cli::host_fns;

use crate::{
    cli::{CallArgs, RunArgs, SandboxArgs},
    error::CliError,
    guest, output, payload,
};

/// Runs `nub call`.
pub fn run(args: &CallArgs) -> Result<(), CliError> {
    // Read the payload first: a bad --file or --hex fails before any build
    // or boot.
    let payload = payload::load(&args.payload)?;
    let mut sandbox = match &args.image {
        Some(path) => from_image(path, &args.run)?,
        None => boot(&args.sandbox, &args.run)?,
    };
    let mut result = Vec::new();
    for _ in 0..args.repeat {
        result = sandbox.call_raw(args.fn_id, &payload)?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", output::render(&result, args.raw_hex))
        .and_then(|()| stdout.flush())
        .map_err(CliError::Write)
}

/// Boots a sandbox of the guest `sandbox` names, sized as it says, run as
/// `run` says, with the CLI's host functions; installs the guest logger
/// `-v` asks for. `nub call` and `nub image save` start here.
pub fn boot(sandbox: &SandboxArgs, run: &RunArgs) -> Result<MultiUseSandbox, CliError> {
    let level = guest_log_level(run.verbose);
    install_logger(level);
    let config = sandbox
        .configuration()
        .with_max_execution_time(run.timeout)
        .with_guest_log_level(level)
        .with_call_mode(run.call_mode().unwrap_or(CallMode::Exit));
    let elf = guest::elf(sandbox.guest.as_deref())?;
    let binary = guest::binary(elf.as_deref());
    let mut sandbox = UninitializedSandbox::new(binary, Some(config))?;
    host_fns::register_with(&mut sandbox, &run.host_fn)?;
    Ok(sandbox.evolve()?)
}

/// The host function ids [`host_fns::register`] provides.
const CLI_HOST_FUNCTIONS: [u32; 3] = [host_fns::ECHO, host_fns::UPPERCASE, host_fns::COUNTER];

/// Starts a sandbox from the image file at `path` with the CLI's host
/// functions: `--timeout` applies, the call mode is `--resident`'s when
/// given (it must be the image's kind) and the image's otherwise.
fn from_image(path: &Path, run: &RunArgs) -> Result<MultiUseSandbox, CliError> {
    let level = guest_log_level(run.verbose);
    install_logger(level);
    let image = SandboxImage::load(path).map_err(|e| CliError::from_image(path, e))?;
    let own = image.configuration();
    if level != LevelFilter::Off && own.guest_log_level == LevelFilter::Off {
        eprintln!(
            "note: {} was saved without guest logs (nub image save -v); -v shows none",
            path.display()
        );
    }
    let missing: Vec<String> = image
        .required_host_functions()
        .iter()
        .filter(|id| {
            !CLI_HOST_FUNCTIONS.contains(id) && !run.host_fn.iter().any(|spec| spec.id == **id)
        })
        .map(u32::to_string)
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "warning: {} was booted with host functions {} that nub does not provide \
             (--host-fn ID=SPEC answers one); a call that reaches one fails",
            path.display(),
            missing.join(", ")
        );
    }
    let config = own
        .with_max_execution_time(run.timeout)
        .with_call_mode(run.call_mode().unwrap_or(own.call_mode));
    let mut sandbox = MultiUseSandbox::from_image(&image, Some(config))
        .map_err(|e| CliError::from_image(path, e))?;
    host_fns::register_with(&mut sandbox, &run.host_fn)?;
    Ok(sandbox)
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
