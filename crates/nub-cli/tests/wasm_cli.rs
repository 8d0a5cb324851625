//! `nub wasm run` and `nub wasm call` on WAT programs written to a
//! temporary directory.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{nub, nub_ok, stderr, stdout};

/// Echoes stdin to stdout, writes argv (NUL-separated) and `$GREETING`'s
/// variable list to stderr, then exits with argc + 40.
const CAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $n i32)
    (block $done
      (loop $more
        (i32.store (i32.const 16) (i32.const 4096))
        (i32.store (i32.const 20) (i32.const 100))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $done (i32.eqz (local.get $n)))
        (call $write (i32.const 1) (i32.const 4096) (local.get $n))
        (br $more)))
    (drop (call $args_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $args_get (i32.const 8192) (i32.const 1024)))
    (call $write (i32.const 2) (i32.const 1024) (i32.load (i32.const 36)))
    (drop (call $environ_sizes_get (i32.const 40) (i32.const 44)))
    (drop (call $environ_get (i32.const 8192) (i32.const 2048)))
    (call $write (i32.const 2) (i32.const 2048) (i32.load (i32.const 44)))
    (call $proc_exit (i32.add (i32.load (i32.const 32)) (i32.const 40))))
  (func (export "add") (param i32 i64) (result i64)
    (i64.add (i64.extend_i32_s (local.get 0)) (local.get 1)))
  (func (export "halves") (param f64) (result f64 f32)
    (f64.mul (local.get 0) (f64.const 0.5))
    (f32.demote_f64 (f64.mul (local.get 0) (f64.const 0.25))))
  (func (export "spin") (loop $l (br $l)))
  (func (export "trap") unreachable))"#;

fn program() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cat.wat");
    std::fs::write(&path, CAT).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

#[test]
fn run_pipes_stdio_passes_args_and_env_and_exits_with_the_programs_code() {
    let (_dir, file) = program();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nub"))
        .args(["wasm", "run", "--env", "GREETING=hi", &file, "one", "--two"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(43), "{}", stderr(&out));
    assert_eq!(out.stdout, input);
    assert_eq!(stderr(&out), format!("{file}\0one\0--two\0GREETING=hi\0"));
}

#[test]
fn call_parses_arguments_by_type_and_prints_results() {
    let (_dir, file) = program();
    assert_eq!(
        nub_ok(&["wasm", "call", &file, "add", "-2", "0x28"]),
        "38\n"
    );
    assert_eq!(
        nub_ok(&["wasm", "call", &file, "halves", "3"]),
        "1.5 0.75\n"
    );
    // Wrong names, counts and types are usage errors naming what is wrong.
    for (args, says) in [
        (vec!["nope"], "no function `nope`"),
        (vec!["add", "1"], "takes 2 argument(s)"),
        (vec!["add", "1.5", "2"], "`1.5` is not an i32"),
    ] {
        let mut all = vec!["wasm", "call", &file];
        all.extend(args);
        let out = nub(&all);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(says), "{all:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn traps_timeouts_and_bad_modules_are_errors() {
    let (dir, file) = program();
    let out = nub(&["wasm", "call", &file, "trap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("UnreachableCodeReached"),
        "{}",
        stderr(&out)
    );
    let out = nub(&["wasm", "call", "--timeout", "200ms", &file, "spin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error:"), "{}", stderr(&out));
    let out = nub(&["wasm", "call", "--fuel", "1000", &file, "spin"]);
    assert!(stderr(&out).contains("OutOfFuel"), "{}", stderr(&out));
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0\x07garbage").unwrap();
    let out = nub(&["wasm", "run", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("did not compile"), "{}", stderr(&out));
}
