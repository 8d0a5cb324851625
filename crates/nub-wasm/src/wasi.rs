//! WASI preview 1 on the host side: the [`Wasi`] environment an instance
//! is made with, and the host functions behind its clocks and streamed
//! stdio ([`Stdio`]), which every [`crate::WasmSandbox`] registers.
//!
//! The guest implements the WASI functions themselves
//! (`guest-x86/guests/wasm/src/wasi.rs`): arguments, environment, captured
//! output and the seeded random stream never leave the guest; only the
//! clocks and [`WasiOutput::Host`]/[`WasiStdin::Host`] streams are host
//! calls (docs/wasm.md, *WASI*).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nub_interface::Bytes;
use nub_sandbox::{MultiUseSandbox, TypedRegistrable};
pub use nub_wasm_abi::{RunOutcome, WasiCaptured, WasiOutput, WasiStdin};
use nub_wasm_abi::{WasiConfig, wasi_host};

/// What [`Wasi::new`] captures of stdout and of stderr between two takes
/// (the rest is dropped, and [`WasiCaptured::truncated`] says so). Both
/// travel back in one reply, so together they must fit the sandbox's
/// output ring ([`crate::DEFAULT_OUTPUT_RING_SIZE`] by default).
pub const DEFAULT_CAPTURE_LIMIT: u32 = 64 << 10;

/// A WASI instance's environment: `argv`, `environ`, its three streams
/// and the seed of `random_get`. Give it to
/// [`crate::InstanceOptions::with_wasi`].
///
/// By default there are no arguments (not even `argv[0]`: add the
/// program's name with [`Wasi::arg`] first, as a shell would, for programs
/// that expect one) or variables, stdin is empty, stdout
/// and stderr are captured (up to [`DEFAULT_CAPTURE_LIMIT`] each) and the
/// seed is all zeros, so a run is deterministic but for the clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wasi {
    config: WasiConfig,
}

impl Default for Wasi {
    fn default() -> Self {
        Self::new()
    }
}

impl Wasi {
    /// The default environment (see [`Wasi`]).
    pub fn new() -> Self {
        Self {
            config: WasiConfig {
                args: Vec::new(),
                env: Vec::new(),
                stdin: WasiStdin::Empty,
                stdout: WasiOutput::Capture {
                    limit: DEFAULT_CAPTURE_LIMIT,
                },
                stderr: WasiOutput::Capture {
                    limit: DEFAULT_CAPTURE_LIMIT,
                },
                seed: [0; 32],
            },
        }
    }

    /// Appends an argument (the first is the program's name, `argv[0]`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.config.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.config.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds the environment variable `key=value`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.config.env.push(format!("{key}={value}"));
        self
    }

    /// Sets stdin.
    pub fn stdin(mut self, stdin: WasiStdin) -> Self {
        self.config.stdin = stdin;
        self
    }

    /// Stdin is these bytes, then end of file.
    pub fn stdin_bytes(self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin(WasiStdin::Bytes(bytes.into()))
    }

    /// Sets where stdout goes.
    pub fn stdout(mut self, output: WasiOutput) -> Self {
        self.config.stdout = output;
        self
    }

    /// Sets where stderr goes.
    pub fn stderr(mut self, output: WasiOutput) -> Self {
        self.config.stderr = output;
        self
    }

    /// Streams all three through the sandbox's [`Stdio`] (by default the
    /// process's own stdin, stdout and stderr): each `fd_read` and
    /// `fd_write` is a host call.
    pub fn inherit_stdio(self) -> Self {
        self.stdin(WasiStdin::Host)
            .stdout(WasiOutput::Host)
            .stderr(WasiOutput::Host)
    }

    /// The seed of `random_get`'s stream: the same seed, the same bytes.
    pub fn seed(mut self, seed: [u8; 32]) -> Self {
        self.config.seed = seed;
        self
    }

    /// The wire form the guest is given.
    pub(crate) fn into_config(self) -> WasiConfig {
        self.config
    }
}

/// The streams behind [`WasiStdin::Host`] and [`WasiOutput::Host`] for
/// every instance of one sandbox ([`crate::WasmSandbox::set_stdio`]).
pub struct Stdio {
    /// Read by `fd_read` on fd 0.
    pub stdin: Box<dyn Read + Send>,
    /// Written by `fd_write` on fd 1.
    pub stdout: Box<dyn Write + Send>,
    /// Written by `fd_write` on fd 2.
    pub stderr: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdio").finish_non_exhaustive()
    }
}

impl Stdio {
    /// The process's own stdin, stdout and stderr.
    pub fn inherit() -> Self {
        Self {
            stdin: Box::new(std::io::stdin()),
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
        }
    }
}

/// Most bytes one streamed `fd_read` host call returns.
const READ_CHUNK: usize = 64 << 10;

/// The shared slot the registered host functions read [`Stdio`] from.
pub(crate) type SharedStdio = Arc<Mutex<Stdio>>;

/// Nanoseconds on clock `id` (0 realtime, 1 monotonic; the guest asks for
/// no other).
fn clock_ns(id: u32) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let ns = match id {
        0 => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
        _ => ORIGIN.get_or_init(Instant::now).elapsed().as_nanos(),
    };
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Registers the WASI host functions ([`nub_wasm_abi::wasi_host`]) on
/// `sandbox`, over `stdio`.
pub(crate) fn register(sandbox: &mut MultiUseSandbox, stdio: &SharedStdio) -> crate::Result<()> {
    sandbox.register_typed::<wasi_host::WasiClock>(|id| Ok(clock_ns(id)))?;
    let io = Arc::clone(stdio);
    sandbox.register_typed::<wasi_host::WasiRead>(move |max| {
        let mut io = io.lock().map_err(|_| "stdio lock poisoned".to_owned())?;
        // The guest asks for at most its chunk; a larger ask is capped.
        let mut buf = vec![0; (max as usize).min(READ_CHUNK)];
        let n = io.stdin.read(&mut buf).map_err(|e| e.to_string())?;
        buf.truncate(n);
        Ok(Bytes::from(buf))
    })?;
    let io = Arc::clone(stdio);
    sandbox.register_typed::<wasi_host::WasiWrite>(move |(fd, bytes)| {
        let mut io = io.lock().map_err(|_| "stdio lock poisoned".to_owned())?;
        let stream = match fd {
            1 => &mut io.stdout,
            2 => &mut io.stderr,
            _ => return Err(format!("fd {fd} is not an output")),
        };
        stream
            .write_all(&bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| e.to_string())
    })?;
    Ok(())
}
