//! The host functions `nub call` gives every guest, so the default guest's
//! host-call functions (5 `host_echo`, 7 `host_loop`) and a guest of one's
//! own can be tried from the command line.
//!
//! | id | name | input | answer |
//! | --- | --- | --- | --- |
//! | 1 | echo | any bytes | the same bytes |
//! | 2 | uppercase | any bytes | ASCII letters upper-cased |
//! | 3 | counter | ignored | how often it was called in this sandbox, u32 LE (1, 2, …) |
//!
//! `--host-fn ID=SPEC` ([`HostFnSpec`]) answers any other id a guest of
//! one's own calls: with one of the three above, a fixed text, or a
//! command run for each call (the payload on its stdin, the answer its
//! stdout).

use std::{
    io::Write,
    process::{Command, Stdio},
    str::FromStr,
};

use nub_sandbox::{HostResult, HyperlightError, Registerable};

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

--host-fn ID=SPEC answers host fn ID (decimal or 0x hex) for a guest of your own:
  ID=echo, ID=uppercase, ID=counter   as above, under another id
  ID=text:STRING                      answers STRING (UTF-8) to every call
  ID=exec:COMMAND                     runs `sh -c COMMAND` per call: the payload on its
                                      stdin, its stdout the answer; a non-zero exit is an
                                      error the guest receives (with its stderr)

With the default guest:
  nub call 5 --hex '02000000 68656c6c6f'   host_echo: host fn 2 on \"hello\" -> HELLO
  nub call 7 --hex '03000000 0a000000'     host_loop: 10 counter calls, sum of answers
                                           (u64 LE) -> 3700000000000000 (55)";

/// Registers the CLI's host functions in `sandbox`.
pub fn register(sandbox: &mut impl Registerable) -> Result<(), HyperlightError> {
    register_with(sandbox, &[])
}

/// Registers the CLI's host functions, then each of `extra` (which
/// replaces a built-in one with the same id).
pub fn register_with(
    sandbox: &mut impl Registerable,
    extra: &[HostFnSpec],
) -> Result<(), HyperlightError> {
    for (id, answer) in [
        (ECHO, Answer::Echo),
        (UPPERCASE, Answer::Uppercase),
        (COUNTER, Answer::Counter),
    ]
    .into_iter()
    .chain(extra.iter().map(|spec| (spec.id, spec.answer.clone())))
    {
        register_one(sandbox, id, answer)?;
    }
    Ok(())
}

fn register_one(
    sandbox: &mut impl Registerable,
    id: u32,
    answer: Answer,
) -> Result<(), HyperlightError> {
    match answer {
        Answer::Echo => sandbox.register_host_function(id, |input: &[u8]| Ok(input.to_vec())),
        Answer::Uppercase => {
            sandbox.register_host_function(id, |input: &[u8]| Ok(input.to_ascii_uppercase()))
        }
        Answer::Counter => {
            let mut calls = 0u32;
            sandbox.register_host_function(id, move |_: &[u8]| {
                calls = calls.wrapping_add(1);
                Ok(calls.to_le_bytes().to_vec())
            })
        }
        Answer::Text(text) => {
            sandbox.register_host_function(id, move |_: &[u8]| Ok(text.clone().into_bytes()))
        }
        Answer::Exec(command) => {
            sandbox.register_host_function(id, move |input: &[u8]| run_command(&command, input))
        }
    }
}

/// Runs `sh -c command` with `input` on its stdin; its stdout is the
/// answer, a failure to start or a non-zero exit the error.
fn run_command(command: &str, input: &[u8]) -> HostResult {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{command}` did not start: {e}"))?;
    let stdin = child.stdin.take();
    let input = input.to_vec();
    // Fed from a thread: a command that writes before it reads all its
    // input must not wait on a pipe nobody drains.
    let feeder = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A command that exits without reading closes the pipe: fine.
            let _ = stdin.write_all(&input);
        }
    });
    let output = child
        .wait_with_output()
        .map_err(|e| format!("`{command}` failed: {e}"))?;
    let _ = feeder.join();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("`{command}` {}: {}", output.status, stderr.trim_end()).into());
    }
    Ok(output.stdout)
}

/// A u32 id in decimal or `0x` hex (`what` names it in the error): the
/// form every id on `nub`'s command line takes.
pub fn parse_id(s: &str, what: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a u32 {what}: {e}"))
}

/// One `--host-fn ID=SPEC`: a host fn id and how it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFnSpec {
    /// The host fn id the guest calls.
    pub id: u32,
    /// How it answers.
    pub answer: Answer,
}

/// How a `--host-fn` answers a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// With its input.
    Echo,
    /// With its input, ASCII letters upper-cased.
    Uppercase,
    /// With how often it was called, u32 LE.
    Counter,
    /// With this text, whatever the input.
    Text(String),
    /// With the stdout of this `sh -c` command, fed the input on stdin.
    Exec(String),
}

impl FromStr for HostFnSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, spec) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not ID=SPEC (e.g. 100=echo, 7=exec:date)"))?;
        let id = parse_id(id, "host fn id")?;
        if nub_host_common::rpc::is_system_fn_id(id) {
            return Err(format!(
                "host fn id {id:#x} is in the reserved system range"
            ));
        }
        let answer = match spec.split_once(':') {
            Some(("text", text)) => Answer::Text(text.to_string()),
            Some(("exec", command)) if !command.trim().is_empty() => {
                Answer::Exec(command.to_string())
            }
            Some(("exec", _)) => return Err("exec: needs a command".to_string()),
            None if spec == "echo" => Answer::Echo,
            None if spec == "uppercase" => Answer::Uppercase,
            None if spec == "counter" => Answer::Counter,
            _ => {
                return Err(format!(
                    "`{spec}` is not echo, uppercase, counter, text:STRING or exec:COMMAND"
                ));
            }
        };
        Ok(Self { id, answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_wrong() {
        assert_eq!(
            "100=echo".parse(),
            Ok(HostFnSpec {
                id: 100,
                answer: Answer::Echo
            })
        );
        assert_eq!(
            "0x10=text:a=b:c".parse(),
            Ok(HostFnSpec {
                id: 16,
                answer: Answer::Text("a=b:c".into())
            })
        );
        assert_eq!(
            "7=exec:tr a-z A-Z".parse(),
            Ok(HostFnSpec {
                id: 7,
                answer: Answer::Exec("tr a-z A-Z".into())
            })
        );
        for bad in ["7", "x=echo", "7=shout", "7=exec:", "0x80000001=echo"] {
            assert!(bad.parse::<HostFnSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_command_answers_with_its_stdout_or_fails_with_its_stderr() {
        assert_eq!(run_command("tr a-z A-Z", b"hi").unwrap(), b"HI");
        let err = run_command("echo broken >&2; exit 3", b"").unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        assert!(err.to_string().contains('3'), "{err}");
    }
}
