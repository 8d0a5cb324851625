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
fn host_fn_answers_the_ids_a_guest_of_ones_own_calls() {
    // Host fn 100 (0x64) as a command, 101 as a fixed text, 3 re-mapped.
    let args = [
        "--host-fn",
        "100=exec:tr a-z A-Z",
        "--host-fn",
        "0x65=text:pong",
        "--host-fn",
        "3=echo",
    ];
    let call = |hex: &str| {
        let mut argv = vec!["call", "5", "--hex", hex];
        argv.extend_from_slice(&args);
        nub_ok(&argv)
    };
    assert_eq!(call("64000000 6869"), "HI\n");
    assert_eq!(call("65000000 6869"), "pong\n");
    assert_eq!(call("03000000 6869"), "hi\n");
    // A command that fails is the guest's error, with its stderr.
    let out = nub(&[
        "call",
        "5",
        "--hex",
        "66000000",
        "--host-fn",
        "102=exec:echo no >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no"), "{}", stderr(&out));
    // A spec that does not parse is refused before any boot.
    let out = nub(&["call", "1", "--host-fn", "7=shout"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("shout"), "{}", stderr(&out));
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

/// A fresh directory for image files, removed when dropped.
fn image_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// `dir/name` as a `&str` argument.
fn file_in(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path()
        .join(name)
        .to_str()
        .expect("UTF-8 temp path")
        .to_string()
}

/// Runs `nub image save ARGS...`, expecting success; returns stderr.
fn image_save(args: &[&str]) -> String {
    let out = nub(&[&["image", "save"][..], args].concat());
    assert!(
        out.status.success(),
        "nub image save {args:?}: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "stdout stays empty");
    stderr(&out)
}

#[test]
fn image_save_then_call_goes_on_from_the_saved_counter() {
    let dir = image_dir();
    let img = file_in(&dir, "c.img");
    let summary = image_save(&["-o", &img, "--call", "2", "--hex", "0500000000000000"]);
    assert!(summary.starts_with(&format!("saved {img}: ")), "{summary}");
    assert!(summary.contains("pages carried"), "{summary}");
    assert!(
        summary.contains("exit mode, after 1 setup call"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert_eq!(
        nub_ok(&["call", "--image", &img, "2", "--hex", "0100000000000000"]),
        "0600000000000000\n"
    );
    // Every sandbox from the image starts from 5 again; --repeat goes on.
    assert_eq!(
        nub_ok(&[
            "call",
            "--image",
            &img,
            "2",
            "--hex",
            "0100000000000000",
            "--repeat",
            "3"
        ]),
        "0800000000000000\n"
    );
    // The loaded sandbox has the CLI's host functions.
    assert_eq!(
        nub_ok(&["call", "--image", &img, "5", "--hex", "02000000 6869"]),
        "HI\n"
    );
}

#[test]
fn image_setup_calls_run_in_the_order_given() {
    let dir = image_dir();
    let img = file_in(&dir, "c.img");
    let summary = image_save(&[
        "--call",
        "2",
        "--hex",
        "0500000000000000",
        "-o",
        &img,
        "--call",
        "1",
        "--call",
        "2",
        "--hex",
        "0200000000000000",
    ]);
    assert!(summary.contains("after 3 setup calls"), "{summary}");
    assert_eq!(
        nub_ok(&["call", "--image", &img, "2", "--hex", "0100000000000000"]),
        "0800000000000000\n"
    );
    // A payload before any --call is a usage error, and nothing is written.
    let stray = file_in(&dir, "stray.img");
    let out = nub(&["image", "save", "-o", &stray, "--hex", "00", "--call", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("before any --call"),
        "{}",
        stderr(&out)
    );
    assert!(!std::path::Path::new(&stray).exists());
}

#[test]
fn resident_image_keeps_its_call_mode() {
    let dir = image_dir();
    let img = file_in(&dir, "r.img");
    let summary = image_save(&[
        "--resident",
        "-o",
        &img,
        "--call",
        "2",
        "--hex",
        "0500000000000000",
    ]);
    assert!(summary.contains("resident mode"), "{summary}");
    // Without --resident the image's own mode is used.
    assert_eq!(
        nub_ok(&["call", "--image", &img, "2", "--hex", "0100000000000000"]),
        "0600000000000000\n"
    );
    // With it, its spin window (the host's side).
    assert_eq!(
        nub_ok(&[
            "call",
            "--image",
            &img,
            "--resident=1ms",
            "2",
            "--hex",
            "0100000000000000"
        ]),
        "0600000000000000\n"
    );
    assert!(nub_ok(&["info", "--image", &img]).contains("call mode:        resident"));

    // An exit-mode image cannot run resident: the sandbox's typed error.
    let exit_img = file_in(&dir, "e.img");
    image_save(&["-o", &exit_img]);
    let out = nub(&["call", "--image", &exit_img, "1", "--resident"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("runs in exit mode"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn info_image_shows_versions_and_contents() {
    let dir = image_dir();
    let img = file_in(&dir, "c.img");
    image_save(&["-o", &img, "--call", "2", "--hex", "0500000000000000"]);
    let info = nub_ok(&["info", "--image", &img]);
    for needle in [
        format!("image:            {img}\n"),
        "format version:   1\n".to_string(),
        "ABI version:      ".to_string(),
        format!("nub version:      {}\n", env!("CARGO_PKG_VERSION")),
        "content digest:   ".to_string(),
        "call mode:        exit\n".to_string(),
        "pages carried:    ".to_string(),
        "guest ELF:        ".to_string(),
        "host functions:   1, 2, 3 (required)\n".to_string(),
        "resting at:       rip 0x".to_string(),
        "sizes:            heap 1 MiB, stack 128 KiB".to_string(),
        "total guest memory".to_string(),
    ] {
        assert!(info.contains(&needle), "missing {needle:?}:\n{info}");
    }
    let digest = info
        .lines()
        .find_map(|l| l.strip_prefix("content digest:   "))
        .and_then(|d| d.strip_suffix(" (blake3)"))
        .unwrap_or_else(|| panic!("no digest line:\n{info}"));
    // The header's digest: blake3 of the content but the ELF's bytes.
    let bytes = std::fs::read(&img).unwrap();
    let file = nub_sandbox::persist::ImageFile::parse(&bytes).unwrap();
    let elf_at = file.elf.as_ptr() as usize - bytes.as_ptr() as usize - 128;
    let content = &bytes[128..];
    let expected =
        nub_sandbox::persist::format::content_digest(content, elf_at..elf_at + file.elf.len());
    let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, hex);
}

#[test]
fn corrupted_image_is_refused_naming_the_digest() {
    let dir = image_dir();
    let img = file_in(&dir, "c.img");
    image_save(&["-o", &img, "--call", "2", "--hex", "0500000000000000"]);
    let mut bytes = std::fs::read(&img).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&img, &bytes).unwrap();

    let out = nub(&["call", "--image", &img, "2", "--hex", "0100000000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("digest"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&img), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    // info still prints the header, then fails.
    let out = nub(&["info", "--image", &img]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("digest"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("format version:   1"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("call mode"), "{}", stdout(&out));

    // Not an image at all.
    std::fs::write(&img, b"hello").unwrap();
    let out = nub(&["info", "--image", &img]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn failing_setup_call_writes_no_image() {
    let dir = image_dir();
    let img = file_in(&dir, "f.img");
    let out = nub(&[
        "image", "save", "-o", &img, "--call", "1", "--call", "3", "--data", "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: setup call 2 (--call 3) failed"),
        "{err}"
    );
    assert!(err.contains("no image was written"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
