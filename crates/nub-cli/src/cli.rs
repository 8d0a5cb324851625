//! The command line: clap definitions of the subcommands and their options.

use std::{path::PathBuf, time::Duration};

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use nub_sandbox::{CallMode, SandboxConfiguration};

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
    /// Boot a sandbox (or start one from an image), call one guest
    /// function and print its result.
    ///
    /// The result is printed as text when it is printable UTF-8 and as
    /// lowercase hex otherwise.
    #[command(after_help = nub_cli::host_fns::HELP)]
    Call(CallArgs),
    /// Show the guest's ELF segments and the memory layout a sandbox would
    /// give it, or with --image what an image file holds.
    Info(InfoArgs),
    /// Persisted images: a booted sandbox, set up by calls, saved to a file
    /// that `nub call --image` starts sandboxes from without booting.
    Image(ImageArgs),
    /// Create a standalone guest crate in PATH that builds with `nub build`
    /// and tests with `cargo test` (with `--host`, a host crate that embeds
    /// its guest in PATH/guest, sharing the interface in PATH/interface).
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
    /// Run WebAssembly in a sandbox: a WASI program's `_start`, or one
    /// export of a module (the wasm guest, wasmi, docs/wasm.md).
    Wasm(WasmArgs),
}

/// Options of `nub wasm`.
#[derive(Debug, Args)]
pub struct WasmArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: WasmCommand,
}

/// The subcommands of `nub wasm`.
#[derive(Debug, Subcommand)]
pub enum WasmCommand {
    /// Run a WASI (preview 1) program: its `_start` with argv = [FILE,
    /// ARGS...], nub's stdin as its stdin, its stdout and stderr on nub's;
    /// nub exits with the program's exit code (modulo 256).
    ///
    /// Files, directories and sockets do not exist for the program (WASI
    /// answers EBADF or ENOSYS). A trap, a timeout or a module that does
    /// not load is an `error: ...` with exit status 1.
    #[command(after_help = WASM_HELP)]
    Run(WasmRunArgs),
    /// Call one export of a module with numbers and print its results,
    /// space-separated, on one line.
    ///
    /// Each ARG is parsed as the export's parameter type (i32, i64, f32 or
    /// f64; integers in decimal or 0x hex). A module that imports WASI
    /// gets it (argv = [FILE], nub's stdio; a reactor's `_initialize` runs
    /// first).
    #[command(after_help = WASM_HELP)]
    Call(WasmCallArgs),
}

/// Examples under `nub wasm run/call --help`.
const WASM_HELP: &str = "\
Examples:
  nub wasm run hello.wasm alice bob          argv = [hello.wasm, alice, bob]
  echo hi | nub wasm run --env LANG=C cat.wasm
  nub wasm call math.wasm add 2 40           prints 42
  nub wasm call --fuel 1000000 math.wasm fib 25";

/// What `nub wasm run` and `nub wasm call` share.
#[derive(Debug, Args)]
pub struct WasmSandboxArgs {
    /// Stop the program when a call runs longer than this, e.g. `500ms`,
    /// `2s` or `1.5` (seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Run resident: the vCPU stays in the guest and calls cross through
    /// shared memory; both sides spin this long before they sleep
    /// [default when given without a value: 100us].
    #[arg(long, value_name = "SPIN", value_parser = parse_duration,
          num_args = 0..=1, default_missing_value = "100us")]
    pub resident: Option<Duration>,

    /// Meter the instance: this many units of fuel (running out is an
    /// `OutOfFuel` trap).
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,

    /// The guest heap, which holds the module's linear memory (a third of
    /// what is free is the memory budget), e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub heap: Option<u64>,

    /// Set an environment variable for the program (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// The seed of the program's `random_get` stream, as up to 64 hex
    /// digits [default: 32 random bytes from the host].
    #[arg(long, value_name = "HEX")]
    pub seed: Option<String>,
}

/// Options of `nub wasm run`.
#[derive(Debug, Args)]
pub struct WasmRunArgs {
    /// The sandbox and the program's environment.
    #[command(flatten)]
    pub sandbox: WasmSandboxArgs,

    /// The program: a `.wasm` module (or `.wat` text) with a `_start`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Its arguments (argv[1..]); everything after FILE is passed on.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// Options of `nub wasm call`.
#[derive(Debug, Args)]
pub struct WasmCallArgs {
    /// The sandbox and the module's WASI environment.
    #[command(flatten)]
    pub sandbox: WasmSandboxArgs,

    /// The module: a `.wasm` file (or `.wat` text).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The exported function to call.
    #[arg(value_name = "EXPORT")]
    pub export: String,

    /// Its arguments, one per parameter.
    #[arg(value_name = "ARGS", allow_hyphen_values = true)]
    pub args: Vec<String>,
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
    /// Create a host crate in PATH instead (it embeds and calls its guest,
    /// built by its build.rs; `cargo test` boots it), with its guest crate
    /// in PATH/guest and the typed interface both share in PATH/interface.
    #[arg(long)]
    pub host: bool,
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

    /// Deadlines, guest logs and the call mode.
    #[command(flatten)]
    pub run: RunArgs,

    /// Start the sandbox from this image file (`nub image save`) instead
    /// of booting a guest: the guest goes on from where it was saved. Its
    /// sizes and guest log level are the image's; without --resident the
    /// call mode is the image's too, and --resident must match it.
    #[arg(long, value_name = "FILE",
          conflicts_with_all = ["guest", "heap", "stack", "ring"])]
    pub image: Option<PathBuf>,

    /// The guest and the sandbox sizes.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// How a sandbox runs its calls; shared by `nub call` and `nub image save`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Cancel a call (and the boot) that runs longer than this, e.g. `500ms`,
    /// `2s` or `1.5` (seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Show the guest's log records on stderr: -v info, -vv debug, -vvv
    /// trace. Without it the guest's records are not collected. An image
    /// keeps the level it was saved with.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Run the calls resident: the vCPU stays in the guest on its own
    /// thread and calls cross through shared memory with no VM exit; both
    /// sides spin this long (e.g. `100us`, `1ms`) before they sleep
    /// [default when given without a value: 100us].
    #[arg(long, value_name = "SPIN", value_parser = parse_duration,
          num_args = 0..=1, default_missing_value = "100us")]
    pub resident: Option<Duration>,

    /// Answer host fn ID for the guest: `ID=echo`, `ID=uppercase`,
    /// `ID=counter`, `ID=text:STRING`, or `ID=exec:COMMAND` (`sh -c
    /// COMMAND` per call, the payload on its stdin, its stdout the
    /// answer). Repeatable; replaces a built-in function with the same id.
    #[arg(long = "host-fn", value_name = "ID=SPEC")]
    pub host_fn: Vec<nub_cli::host_fns::HostFnSpec>,
}

impl RunArgs {
    /// The call mode `--resident` asks for; `None` when it is not given.
    pub fn call_mode(&self) -> Option<CallMode> {
        self.resident.map(|spin| CallMode::Resident { spin })
    }
}

/// Options of `nub image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// What to do with images.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// The subcommands of `nub image`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Boot a sandbox, run setup calls in it in the order given, and save
    /// it as an image file.
    ///
    /// Each --call ID is a call of guest function ID; the --data or --hex
    /// right after it (at most one) is its payload, else the payload is
    /// empty. A failing call fails the command and writes no file.
    /// stdout stays empty; a one-line summary (file, size, pages carried)
    /// goes to stderr. `nub call --image FILE` starts from the image,
    /// `nub info --image FILE` shows what it holds.
    #[command(after_help = SAVE_HELP)]
    Save(ImageSaveArgs),
}

/// Examples under `nub image save --help`.
const SAVE_HELP: &str = "\
With the default guest (fn 2 adds its u64 LE argument to a counter):
  nub image save -o c.img --call 2 --hex 0500000000000000 --call 2 --hex 0200000000000000
  nub call --image c.img 2 --hex 0100000000000000     prints 0800000000000000
  nub info --image c.img

The setup calls and `nub call --image` get the host functions of `nub call --help`;
their state (the counter) starts over in every sandbox.";

/// Options of `nub image save`.
#[derive(Debug, Args)]
pub struct ImageSaveArgs {
    /// The image file to write (replaced if it exists, only once the image
    /// is complete).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// The setup calls, in order.
    #[command(flatten)]
    pub calls: SetupCalls,

    /// Deadlines, guest logs and the call mode (saved with the image).
    #[command(flatten)]
    pub run: RunArgs,

    /// The guest and the sandbox sizes.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// The setup calls of `nub image save`, in command-line order: each
/// `--call ID` with the `--data`/`--hex` that follows it. clap parses the
/// three options as independent lists; [`FromArgMatches`] pairs them by
/// their positions on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupCalls(pub Vec<SetupCall>);

/// One setup call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupCall {
    /// The guest function to call.
    pub fn_id: u32,
    /// Its payload, as given.
    pub payload: SetupPayload,
}

/// The payload of a setup call, as given on the command line (hex is
/// decoded before the guest boots, see [`crate::payload::decode_hex`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupPayload {
    /// No `--data` or `--hex` followed the `--call`.
    Empty,
    /// `--data TEXT`: the text's UTF-8 bytes.
    Text(String),
    /// `--hex HEX`: hex digits.
    Hex(String),
}

impl SetupPayload {
    /// The option that gave it, for messages.
    fn flag(&self) -> &'static str {
        match self {
            Self::Empty => "",
            Self::Text(_) => "--data",
            Self::Hex(_) => "--hex",
        }
    }
}

impl Args for SetupCalls {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            Arg::new("call")
                .long("call")
                .value_name("ID")
                .action(ArgAction::Append)
                .value_parser(parse_fn_id)
                .help("A setup call of guest function ID (decimal or 0x hex); repeatable"),
        )
        .arg(
            Arg::new("data")
                .long("data")
                .value_name("TEXT")
                .action(ArgAction::Append)
                .help("Payload of the --call before it, as text (its UTF-8 bytes)"),
        )
        .arg(
            Arg::new("hex")
                .long("hex")
                .value_name("HEX")
                .action(ArgAction::Append)
                .help("Payload of the --call before it, as hex digits (whitespace and 0x allowed)"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SetupCalls {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        /// One occurrence of `--call`, `--data` or `--hex`.
        enum Item {
            Call(u32),
            Payload(SetupPayload),
        }
        let mut items: Vec<(usize, Item)> = Vec::new();
        let positions = |id: &str| matches.indices_of(id).into_iter().flatten();
        let calls = matches.get_many::<u32>("call").into_iter().flatten();
        items.extend(positions("call").zip(calls.map(|&id| Item::Call(id))));
        for (id, payload) in [
            ("data", SetupPayload::Text as fn(String) -> SetupPayload),
            ("hex", SetupPayload::Hex),
        ] {
            let values = matches.get_many::<String>(id).into_iter().flatten();
            items.extend(positions(id).zip(values.map(|v| Item::Payload(payload(v.clone())))));
        }
        items.sort_by_key(|&(position, _)| position);

        let mut calls: Vec<SetupCall> = Vec::new();
        for (_, item) in items {
            match item {
                Item::Call(fn_id) => calls.push(SetupCall {
                    fn_id,
                    payload: SetupPayload::Empty,
                }),
                Item::Payload(payload) => {
                    let Some(call) = calls.last_mut() else {
                        return Err(setup_error(format!(
                            "{} comes before any --call; a payload belongs to the --call before it",
                            payload.flag()
                        )));
                    };
                    if call.payload != SetupPayload::Empty {
                        return Err(setup_error(format!(
                            "--call {} has two payloads ({} and {}); give each --call at most one",
                            call.fn_id,
                            call.payload.flag(),
                            payload.flag()
                        )));
                    }
                    call.payload = payload;
                }
            }
        }
        Ok(Self(calls))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// A usage error in the setup calls (exit status 2, like clap's own),
/// with `nub image save`'s usage under it.
fn setup_error(message: String) -> clap::Error {
    use clap::CommandFactory;
    let error = clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message);
    let mut cli = Cli::command();
    // Building the whole command names its subcommands `nub image save`.
    cli.build();
    match cli
        .find_subcommand_mut("image")
        .and_then(|image| image.find_subcommand_mut("save"))
    {
        Some(save) => error.format(save),
        None => error,
    }
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
    /// Show what this image file holds (`nub image save`) instead: its
    /// header, sizes, call mode, pages, guest ELF, required host functions
    /// and resting registers. Needs no KVM.
    #[arg(long, value_name = "FILE",
          conflicts_with_all = ["guest", "heap", "stack", "ring"])]
    pub image: Option<PathBuf>,
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
    nub_cli::host_fns::parse_id(s, "fn id")
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
            Command::Call(args) => args.run.verbose,
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

    /// The setup calls `nub image save ARGS... -o x` parses to.
    fn setup_calls(args: &[&str]) -> Result<Vec<SetupCall>, clap::Error> {
        let argv = ["nub", "image", "save", "-o", "x.img"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Image(ImageArgs {
                command: ImageCommand::Save(save),
            }) => Ok(save.calls.0),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn call(fn_id: u32, payload: SetupPayload) -> SetupCall {
        SetupCall { fn_id, payload }
    }

    #[test]
    fn setup_calls_pair_each_payload_with_the_call_before_it() {
        use SetupPayload::{Empty, Hex, Text};
        assert_eq!(setup_calls(&[]).unwrap(), []);
        assert_eq!(
            setup_calls(&[
                "--call",
                "2",
                "--hex",
                "05",
                "--call",
                "1",
                "--call",
                "0x3",
                "--data=a b",
                "--call",
                "2",
            ])
            .unwrap(),
            [
                call(2, Hex("05".into())),
                call(1, Empty),
                call(3, Text("a b".into())),
                call(2, Empty),
            ]
        );
        // Other options between a call and its payload do not separate them.
        assert_eq!(
            setup_calls(&["--call", "4", "--resident", "1ms", "--data", "x"]).unwrap(),
            [call(4, Text("x".into()))]
        );
    }

    #[test]
    fn stray_or_doubled_setup_payloads_are_usage_errors() {
        for (args, needle) in [
            (
                &["--data", "a", "--call", "1"][..],
                "--data comes before any --call",
            ),
            (&["--hex", "00"][..], "--hex comes before any --call"),
            (
                &["--call", "1", "--data", "a", "--hex", "00"][..],
                "--call 1 has two payloads (--data and --hex)",
            ),
            (
                &["--call", "1", "--hex", "00", "--hex", "01"][..],
                "--call 1 has two payloads",
            ),
        ] {
            let err = setup_calls(args).expect_err(needle);
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            let text = err.to_string();
            assert!(text.contains(needle), "{args:?}: {text}");
            assert!(
                text.contains("nub image save"),
                "usage of the subcommand: {text}"
            );
        }
        assert!(setup_calls(&["--call", "x"]).is_err(), "a fn id is a u32");
        assert!(
            Cli::try_parse_from(["nub", "image", "save", "--call", "1"]).is_err(),
            "-o is required"
        );
    }

    #[test]
    fn image_conflicts_with_the_guest_and_its_sizes() {
        for flag in ["--guest=g", "--heap=2M", "--stack=64K", "--ring=8K"] {
            for cmd in [&["call", "1"][..], &["info"][..]] {
                let image = ["--image", "i.img", flag];
                let argv = ["nub"].iter().chain(cmd).chain(&image);
                let err = Cli::try_parse_from(argv).expect_err(flag);
                assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            }
        }
        let cli =
            Cli::try_parse_from(["nub", "call", "--image", "i.img", "2", "--resident"]).unwrap();
        let Command::Call(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        assert_eq!(args.image, Some(PathBuf::from("i.img")));
        assert_eq!(args.run.call_mode(), Some(CallMode::resident()));
    }
}
