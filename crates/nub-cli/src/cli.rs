//! The command line: clap definitions of the subcommands and their options.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use nub_sandbox::SandboxConfiguration;

use crate::size::{parse_duration, parse_size};

/// Run functions of a no_std guest program inside a KVM micro-VM.
#[derive(Debug, Parser)]
#[command(name = "nub", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a sandbox, call one guest function and print its result.
    ///
    /// The result is printed as text when it is printable UTF-8 and as
    /// lowercase hex otherwise.
    #[command(after_help = nub_cli::host_fns::HELP)]
    Call(CallArgs),
    /// Show the guest's ELF segments and the memory layout a sandbox would
    /// give it.
    Info(InfoArgs),
    /// Create a standalone guest crate in PATH that builds with `nub build`
    /// and tests with `cargo test`.
    New(NewArgs),
    /// Build a guest crate (release, x86_64-unknown-none, nub's link script)
    /// and print its ELF's path as the last line of stdout.
    ///
    /// Cargo's progress and errors go to stderr. The toolchain's
    /// x86_64-unknown-none target is added with rustup when it is missing.
    Build(BuildArgs),
    /// Measure calls, caps and the sandbox lifecycle on the built-in default
    /// guest, each next to its floor measured in the same run.
    ///
    /// Prints one row per path: median, p99, the ratio of the median to
    /// the row's floor, and operations per second. The full run takes
    /// under 2 minutes, `--quick` about 20 s.
    Bench(BenchArgs),
}

/// Options of `nub bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run only the rows whose names contain FILTER (and the floors they
    /// are compared with), e.g. `kill` or `resident`.
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
    /// A short run (about 20 s) with fewer samples per row.
    #[arg(long)]
    pub quick: bool,
    /// Also write the rows as JSON to PATH:
    /// {"rows":[{"name", "median_us", "p99_us", "floor", "ratio", ...}]}.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Print the rows as a Markdown table (what README.md and
    /// docs/performance.md paste) instead of the text table.
    #[arg(long)]
    pub markdown: bool,
    /// Take exactly N samples of every row, whatever the time (for tests).
    #[arg(long, value_name = "N", hide = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
}

/// Options of `nub new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Directory to create; it must not exist or be empty.
    pub path: PathBuf,
    /// Package name [default: the directory's name, made a valid name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The nub checkout whose guest-x86/nub-arch-x86 the crate depends on
    /// [default: the checkout this nub was built from].
    #[arg(long, value_name = "DIR")]
    pub nub_path: Option<PathBuf>,
}

/// Options of `nub build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The guest crate's directory (the one holding its Cargo.toml).
    pub path: PathBuf,
}

/// Options of `nub call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Id of the guest function to call (decimal or 0x hex). The default
    /// guest has 1 echo, 2 add, 3 fail, 4 blake3, 5 host_echo, 6 cap_sum,
    /// 7 host_loop, 8 fault, 9 spin.
    #[arg(value_parser = parse_fn_id)]
    pub fn_id: u32,

    /// The payload; without any of these it is empty.
    #[command(flatten)]
    pub payload: PayloadArgs,

    /// Print the result as hex even when it is printable text.
    #[arg(long)]
    pub raw_hex: bool,

    /// Call the function this many times in the same sandbox; print the last
    /// result.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,

    /// Cancel a call (and the boot) that runs longer than this, e.g. `500ms`,
    /// `2s` or `1.5` (seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Show the guest's log records on stderr: -v info, -vv debug, -vvv
    /// trace. Without it the guest's records are not collected.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Run the calls resident: the vCPU stays in the guest on its own
    /// thread and calls cross through shared memory with no VM exit; both
    /// sides spin this long (e.g. `100us`, `1ms`) before they sleep
    /// [default when given without a value: 100us].
    #[arg(long, value_name = "SPIN", value_parser = parse_duration,
          num_args = 0..=1, default_missing_value = "100us")]
    pub resident: Option<Duration>,

    /// The guest and the sandbox sizes.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Where the payload comes from (at most one).
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct PayloadArgs {
    /// Payload as text (its UTF-8 bytes).
    #[arg(long, value_name = "TEXT")]
    pub data: Option<String>,
    /// Payload read from a file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Payload as hex digits, e.g. `0500000000000000` (whitespace and an
    /// `0x` prefix are allowed).
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,
}

/// Options of `nub info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The guest and the sandbox sizes.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// The guest program and how its sandbox is sized; shared by the
/// subcommands. Sizes are bytes with an optional binary suffix (`64K`,
/// `1M`, `2MiB`) and must be multiples of 4 KiB.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Guest to run instead of the built-in default guest: an ELF file, or
    /// a guest crate directory, which is built first (as `nub build` does).
    #[arg(long, value_name = "PATH")]
    pub guest: Option<PathBuf>,
    /// Guest heap size [default: 1M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub heap: Option<u64>,
    /// Guest stack size [default: 128K].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub stack: Option<u64>,
    /// Size of each of the two rings; bounds request and response payloads
    /// [default: 256K].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub ring: Option<u64>,
}

impl SandboxArgs {
    /// The sandbox configuration these options ask for (defaults for what is
    /// not given).
    pub fn configuration(&self) -> SandboxConfiguration {
        let mut cfg = SandboxConfiguration::default();
        if let Some(heap) = self.heap {
            cfg.heap_size = heap;
        }
        if let Some(stack) = self.stack {
            cfg.stack_size = stack;
        }
        if let Some(ring) = self.ring {
            cfg.input_ring_size = ring;
            cfg.output_ring_size = ring;
        }
        cfg
    }
}

/// Parses a fn id in decimal or `0x` hex.
fn parse_fn_id(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a u32 fn id: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fn_ids() {
        assert_eq!(parse_fn_id("4"), Ok(4));
        assert_eq!(parse_fn_id("0x10"), Ok(16));
        assert!(parse_fn_id("-1").is_err());
        assert!(parse_fn_id("4294967296").is_err());
    }

    #[test]
    fn payload_flags_are_exclusive() {
        let err = Cli::try_parse_from(["nub", "call", "1", "--data", "a", "--hex", "00"])
            .expect_err("--data and --hex together");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn sizes_reach_the_configuration() {
        let cli = Cli::try_parse_from([
            "nub", "call", "1", "--heap", "2M", "--stack", "64K", "--ring", "8K",
        ])
        .unwrap();
        let Command::Call(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        let cfg = args.sandbox.configuration();
        assert_eq!(cfg.heap_size, 2 << 20);
        assert_eq!(cfg.stack_size, 64 << 10);
        assert_eq!(cfg.input_ring_size, 8 << 10);
        assert_eq!(cfg.output_ring_size, 8 << 10);
        assert_eq!(args.repeat, 1);
    }

    #[test]
    fn verbosity_counts() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Call(args) => args.verbose,
            _ => panic!("parsed as another subcommand"),
        };
        assert_eq!(parse(&["nub", "call", "1"]), 0);
        assert_eq!(parse(&["nub", "call", "1", "-v"]), 1);
        assert_eq!(parse(&["nub", "call", "-vvv", "1"]), 3);
        assert_eq!(parse(&["nub", "call", "1", "--verbose", "-v"]), 2);
    }

    #[test]
    fn new_and_build_take_a_path() {
        let cli = Cli::try_parse_from(["nub", "new", "/tmp/g", "--name", "g", "--nub-path", "/n"])
            .unwrap();
        let Command::New(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        assert_eq!(args.path, PathBuf::from("/tmp/g"));
        assert_eq!(args.name.as_deref(), Some("g"));
        assert_eq!(args.nub_path, Some(PathBuf::from("/n")));
        assert!(
            Cli::try_parse_from(["nub", "build"]).is_err(),
            "PATH is required"
        );
    }

    #[test]
    fn repeat_must_be_positive() {
        assert!(Cli::try_parse_from(["nub", "call", "1", "--repeat", "0"]).is_err());
    }
}
