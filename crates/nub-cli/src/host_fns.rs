//! The host functions `nub call` gives every guest, so the default guest's
//! host-call functions (5 `host_echo`, 7 `host_loop`) and a guest of one's
//! own can be tried from the command line.
//!
//! | id | name | input | answer |
//! | --- | --- | --- | --- |
//! | 1 | echo | any bytes | the same bytes |
//! | 2 | uppercase | any bytes | ASCII letters upper-cased |
//! | 3 | counter | ignored | how often it was called in this sandbox, u32 LE (1, 2, …) |

use nub_sandbox::{HyperlightError, Registerable};

/// Host fn id of echo.
pub const ECHO: u32 = 1;
/// Host fn id of uppercase.
pub const UPPERCASE: u32 = 2;
/// Host fn id of counter.
pub const COUNTER: u32 = 3;

/// The host functions as `nub call --help` lists them.
pub const HELP: &str = "\
Host functions (a guest calls them with nub_arch_x86::host_call):
  1  echo       answers with its input
  2  uppercase  answers with its input, ASCII letters upper-cased
  3  counter    answers how often it was called in this sandbox (u32 LE: 1, 2, ...)

With the default guest:
  nub call 5 --hex '02000000 68656c6c6f'   host_echo: host fn 2 on \"hello\" -> HELLO
  nub call 7 --hex '03000000 0a000000'     host_loop: 10 counter calls, sum of answers
                                           (u64 LE) -> 3700000000000000 (55)";

/// Registers the CLI's host functions in `sandbox`.
pub fn register(sandbox: &mut impl Registerable) -> Result<(), HyperlightError> {
    sandbox.register_host_function(ECHO, |input: &[u8]| Ok(input.to_vec()))?;
    sandbox.register_host_function(UPPERCASE, |input: &[u8]| Ok(input.to_ascii_uppercase()))?;
    let mut calls = 0u32;
    sandbox.register_host_function(COUNTER, move |_: &[u8]| {
        calls = calls.wrapping_add(1);
        Ok(calls.to_le_bytes().to_vec())
    })
}
