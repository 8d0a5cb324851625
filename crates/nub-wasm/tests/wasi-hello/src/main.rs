//! A WASI preview 1 command for nub-wasm's tests (`tests/wasi.rs`): it
//! exercises each part of WASI a Rust program reaches through `std`.
//!
//! Prints to stdout, one line each: its args (`args_get`), the
//! environment variable `NUB_GREETING` (`environ_get`), all of stdin upper
//! cased (`fd_read`), 16 bytes of `random_get` in hex, the realtime clock
//! in nanoseconds since the epoch (`SystemTime`, `clock_time_get`) and two
//! monotonic readings (`clock_time_get` directly); then one line to stderr.
//! Then it acts on its args: `trap` executes `unreachable` (`abort`),
//! `exit=N` calls `std::process::exit(N)` (`proc_exit`); otherwise `main`
//! returns (exit code 0).

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    /// Fills `len` bytes at `buf` with random bytes; an errno.
    fn random_get(buf: *mut u8, len: usize) -> u16;
    /// Writes clock `id`'s time in nanoseconds to `time`; an errno.
    fn clock_time_get(id: u32, precision: u64, time: *mut u64) -> u16;
}

/// WASI's monotonic clock.
const CLOCK_MONOTONIC: u32 = 1;

/// A monotonic reading, or the errno.
fn monotonic() -> Result<u64, u16> {
    let mut time = 0u64;
    // SAFETY: `time` is a valid, writable u64 for the call.
    match unsafe { clock_time_get(CLOCK_MONOTONIC, 1, &mut time) } {
        0 => Ok(time),
        errno => Err(errno),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("args: {}", args.join(" "));
    let greeting = std::env::var("NUB_GREETING").unwrap_or_else(|_| "<unset>".to_string());
    println!("env NUB_GREETING={greeting}");

    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading stdin failed: {e}");
        std::process::exit(70);
    }
    println!("stdin: {}", String::from_utf8_lossy(&input).to_uppercase());

    let mut random = [0u8; 16];
    // SAFETY: `random` is valid and writable for its length.
    let errno = unsafe { random_get(random.as_mut_ptr(), random.len()) };
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    println!("random: {hex} errno {errno}");

    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => println!("realtime: {}", since.as_nanos()),
        Err(e) => println!("realtime: before the epoch by {:?}", e.duration()),
    }
    match (monotonic(), monotonic()) {
        (Ok(first), Ok(second)) => println!("monotonic: {first} {second}"),
        (Err(errno), _) | (_, Err(errno)) => println!("monotonic: errno {errno}"),
    }
    eprintln!("this goes to stderr");

    // With no args at all (WASI lets argv be empty) there is nothing to do.
    for arg in args.iter().skip(1) {
        if arg == "trap" {
            std::process::abort();
        }
        if let Some(code) = arg.strip_prefix("exit=") {
            match code.parse() {
                Ok(code) => std::process::exit(code),
                Err(e) => eprintln!("bad exit code {code:?}: {e}"),
            }
        }
    }
}
