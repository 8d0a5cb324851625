//! Runs the built `nub` binary against its embedded default guest. These
//! tests boot real guests and need `/dev/kvm`; without it they fail.

use std::process::Command;

mod common;

use common::{nub, nub_ok, stderr, stdout};

#[test]
fn echo_prints_text() {
    assert_eq!(nub_ok(&["call", "1", "--data", "hello"]), "hello\n");
}

#[test]
fn blake3_prints_hex() {
    let expected = blake3::hash(b"abc").to_hex().to_string();
    assert_eq!(
        nub_ok(&["call", "4", "--data", "abc"]),
        format!("{expected}\n")
    );
}

#[test]
fn blake3_of_a_file() {
    let path = std::env::temp_dir().join(format!("nub-cli-test-{}.bin", std::process::id()));
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let got = nub_ok(&["call", "4", "--file", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(got, format!("{}\n", blake3::hash(&bytes).to_hex()));
}

#[test]
fn binary_result_prints_hex() {
    assert_eq!(
        nub_ok(&["call", "2", "--hex", "0500000000000000"]),
        "0500000000000000\n"
    );
}

#[test]
fn repeat_keeps_guest_state_and_prints_the_last_result() {
    // add keeps a running total in the guest: 3 calls of 5 give 15.
    assert_eq!(
        nub_ok(&["call", "2", "--hex", "0500000000000000", "--repeat", "3"]),
        "0f00000000000000\n"
    );
}

#[test]
fn host_echo_reaches_the_cli_host_functions() {
    // Default guest fn 5: u32 LE host fn id, then the bytes for it.
    // Host fn 2 upper-cases, host fn 1 echoes.
    assert_eq!(
        nub_ok(&["call", "5", "--hex", "02000000 68656c6c6f"]),
        "HELLO\n"
    );
    assert_eq!(nub_ok(&["call", "5", "--hex", "01000000 6869"]), "hi\n");
    // An id the CLI does not provide is the guest's error, not a crash.
    let out = nub(&["call", "5", "--hex", "63000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("99"), "{}", stderr(&out));
}

#[test]
fn host_loop_sums_the_counter() {
    // Default guest fn 7: u32 LE host fn id + u32 LE count; sums the u32
    // answers into a u64 LE. Host fn 3 counts its calls: 1 + 2 + ... + 10.
    assert_eq!(
        nub_ok(&["call", "7", "--hex", "03000000 0a000000"]),
        format!("{}\n", hex(&55u64.to_le_bytes()))
    );
    // Host fn 1 echoes the index: 0 + 1 + ... + 9; the counter starts over
    // in a new sandbox.
    assert_eq!(
        nub_ok(&["call", "7", "--hex", "01000000 0a000000"]),
        format!("{}\n", hex(&45u64.to_le_bytes()))
    );
    assert_eq!(
        nub_ok(&["call", "7", "--hex", "03000000 03000000", "--repeat", "2"]),
        format!("{}\n", hex(&(4u64 + 5 + 6).to_le_bytes())),
        "the counter keeps counting across calls in one sandbox"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn call_help_lists_the_host_functions() {
    let help = nub_ok(&["call", "--help"]);
    for needle in ["1  echo", "2  uppercase", "3  counter", "--verbose"] {
        assert!(help.contains(needle), "missing {needle:?}:\n{help}");
    }
}

#[test]
fn raw_hex_forces_hex() {
    assert_eq!(
        nub_ok(&["call", "1", "--data", "hi", "--raw-hex"]),
        "6869\n"
    );
}

#[test]
fn empty_payload_by_default() {
    assert_eq!(nub_ok(&["call", "1"]), "\n");
}

#[test]
fn guest_error_exits_1_with_message() {
    let out = nub(&["call", "3", "--data", "boom"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    assert!(stderr(&out).contains("boom"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_function_fails() {
    let out = nub(&["call", "999"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("999"), "{}", stderr(&out));
}

#[test]
fn guest_fault_is_reported() {
    // Selector 2 executes ud2.
    let out = nub(&["call", "8", "--hex", "02"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("fault"), "{}", stderr(&out));
}

#[test]
fn timeout_cancels_a_spinning_guest() {
    let out = nub(&["call", "9", "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("deadline"), "{}", stderr(&out));
}

#[test]
fn sizes_configure_the_sandbox() {
    // A 4 KiB ring cannot take an 8 KiB payload.
    let big = "x".repeat(8192);
    let out = nub(&["call", "1", "--ring", "4K", "--data", &big]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("8192"), "{}", stderr(&out));
    // An invalid size is rejected by the sandbox with its own message.
    let out = nub(&["call", "1", "--heap", "1000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("heap"), "{}", stderr(&out));
    // And the layout reflects the sizes.
    let info = nub_ok(&["info", "--heap", "2M", "--stack", "64K"]);
    let line = |name: &str| {
        info.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line:\n{info}"))
            .to_string()
    };
    assert!(line("heap").contains("2 MiB"), "{info}");
    assert!(line("stack").contains("64 KiB"), "{info}");
}

#[test]
fn bad_command_lines_are_rejected() {
    let out = nub(&["call", "1", "--data", "a", "--hex", "00"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = nub(&["call", "1", "--hex", "abc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--hex"), "{}", stderr(&out));
    let out = nub(&["call", "1", "--heap", "lots"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn info_shows_entry_and_layout() {
    let info = nub_ok(&["info"]);
    for needle in [
        "entry",
        "input ring",
        "output ring",
        "heap",
        "stack",
        "PT_LOAD",
    ] {
        assert!(info.contains(needle), "missing {needle:?}:\n{info}");
    }
}

#[test]
fn external_guest_file() {
    let out = nub(&["call", "1", "--guest", "/nonexistent/guest.elf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/guest.elf"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn guest_from_a_file() {
    // The build script exports the default guest's path to every target.
    let path = env!("NUB_GUEST_NUB_DEFAULT_GUEST");
    assert_eq!(
        nub_ok(&["call", "1", "--data", "from file", "--guest", path]),
        "from file\n"
    );
    assert!(nub_ok(&["info", "--guest", path]).contains(path));
}

#[test]
fn payload_from_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nub"))
        .args(["call", "1", "--file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the nub binary");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"piped in").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "piped in\n");
}

#[test]
fn resident_calls_from_the_command_line() {
    assert_eq!(
        nub_ok(&["call", "1", "--data", "resident", "--resident"]),
        "resident\n"
    );
    // A host call and a repeated stateful call, with an explicit spin window.
    assert_eq!(
        nub_ok(&["call", "5", "--hex", "02000000 6869", "--resident", "1ms"]),
        "HI\n"
    );
    assert_eq!(
        nub_ok(&[
            "call",
            "2",
            "--hex",
            "0500000000000000",
            "--repeat",
            "3",
            "--resident=50us"
        ]),
        "0f00000000000000\n"
    );
}
