//! WASI preview 1 in the wasm guest, function by function, on WAT modules
//! that call `wasi_snapshot_preview1` directly (docs/wasm.md, *WASI*).

mod common;

use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{modes, sandbox};
use nub_sandbox::CallMode;
use nub_wasm::{InstanceOptions, Stdio, Wasi, WasiOutput, WasmError, WasmSandbox, abi::TrapCode};

/// A command (`_start`) and a few exports over WASI: memory 0..64 is
/// scratch, 64.. holds strings, 1024.. buffers.
const PROGRAM: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello\n")
  (data (i32.const 80) "oops\n")
  ;; write(fd, ptr, len): one iovec at 0, nwritten at 8.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
  (func (export "_start")
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 6)))
    (drop (call $write (i32.const 2) (i32.const 80) (i32.const 5))))
  ;; Copies stdin to stdout in reads of 7 bytes; the bytes copied.
  (func (export "echo") (result i32) (local $n i32) (local $total i32)
    (block $done
      (loop $more
        (i32.store (i32.const 16) (i32.const 1024))
        (i32.store (i32.const 20) (i32.const 7))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $done (i32.eqz (local.get $n)))
        (drop (call $write (i32.const 1) (i32.const 1024) (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $more)))
    (local.get $total))
  ;; Writes argv's strings (NUL-terminated) to stdout; argc.
  (func (export "args") (result i32)
    (drop (call $args_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $args_get (i32.const 2048) (i32.const 1024)))
    (drop (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 36))))
    (i32.load (i32.const 32)))
  ;; Writes environ's strings to stdout; the variable count.
  (func (export "env") (result i32)
    (drop (call $environ_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $environ_get (i32.const 2048) (i32.const 1024)))
    (drop (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 36))))
    (i32.load (i32.const 32)))
  ;; Checks that args_get's pointers point at the strings: argv[1]'s
  ;; first byte.
  (func (export "argv1_first") (result i32)
    (drop (call $args_get (i32.const 2048) (i32.const 1024)))
    (i32.load8_u (i32.load (i32.const 2052))))
  (func (export "clock") (param $id i32) (result i64)
    (if (call $clock_time_get (local.get $id) (i64.const 1) (i32.const 40))
      (then (return (i64.const -1))))
    (i64.load (i32.const 40)))
  (func (export "clock_errno") (param $id i32) (result i32)
    (call $clock_time_get (local.get $id) (i64.const 1) (i32.const 40)))
  (func (export "random") (result i64)
    (drop (call $random_get (i32.const 40) (i32.const 8)))
    (i64.load (i32.const 40)))
  (func (export "exit") (param i32) (call $proc_exit (local.get 0)))
  (func (export "trap") unreachable)
  ;; Hostile pointers: an iovec past the end of memory, a huge count.
  (func (export "write_out_of_bounds") (result i32)
    (call $write (i32.const 1) (i32.const 65530) (i32.const 100)))
  (func (export "write_iovecs_out_of_bounds") (result i32)
    (call $fd_write (i32.const 1) (i32.const 65532) (i32.const 1) (i32.const 8)))
  (func (export "random_out_of_bounds") (result i32)
    (call $random_get (i32.const -8) (i32.const 64)))
  (func (export "write_bad_fd") (result i32)
    (call $write (i32.const 7) (i32.const 64) (i32.const 6)))
  (func (export "open") (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 5)
      (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 48)))
  (func (export "prestat") (result i32)
    (call $fd_prestat_get (i32.const 3) (i32.const 48)))
)"#;

fn program(mode: CallMode, wasi: Wasi) -> (WasmSandbox, nub_wasm::Instance) {
    let mut sbox = sandbox(mode);
    let module = sbox.load(&wat::parse_str(PROGRAM).unwrap()).unwrap();
    let instance = sbox
        .instantiate_with(&module, InstanceOptions::default().with_wasi(wasi))
        .unwrap();
    (sbox, instance)
}

#[test]
fn a_command_runs_and_its_output_is_captured() {
    for mode in modes() {
        let (mut sbox, instance) = program(mode, Wasi::new());
        let outcome = sbox.run(&instance).unwrap();
        assert_eq!(outcome.exit_code, 0, "{mode:?}");
        assert_eq!(outcome.output.stdout, b"hello\n");
        assert_eq!(outcome.output.stderr, b"oops\n");
        assert!(!outcome.output.truncated);
        // The run took the output: nothing is left.
        assert_eq!(sbox.take_output(&instance).unwrap().stdout, b"");
    }
}

#[test]
fn proc_exit_ends_a_run_with_its_code_and_a_call_with_a_typed_error() {
    for mode in modes() {
        let (mut sbox, instance) = program(mode, Wasi::new());
        let err = sbox.call::<i32, ()>("exit", 7).unwrap_err();
        assert!(matches!(err, WasmError::Exit(7)), "{mode:?}: {err}");
        // The instance lives on.
        assert_eq!(sbox.call::<(), i32>("args", ()).unwrap(), 0);
        let outcome = sbox.run(&instance).unwrap();
        assert_eq!(outcome.exit_code, 0);
    }
}

#[test]
fn args_and_environ_are_the_configured_ones() {
    for mode in modes() {
        let wasi = Wasi::new()
            .arg("prog")
            .args(["one", "two words"])
            .env("HOME", "/nowhere")
            .env("EMPTY", "");
        let (mut sbox, instance) = program(mode, wasi);
        assert_eq!(sbox.call::<(), i32>("args", ()).unwrap(), 3);
        assert_eq!(sbox.call::<(), i32>("argv1_first", ()).unwrap(), 'o' as i32);
        assert_eq!(sbox.call::<(), i32>("env", ()).unwrap(), 2);
        let out = sbox.take_output(&instance).unwrap();
        assert_eq!(out.stdout, b"prog\0one\0two words\0HOME=/nowhere\0EMPTY=\0");
    }
}

#[test]
fn stdin_bytes_are_read_to_the_end() {
    let input: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    for mode in modes() {
        let (mut sbox, instance) = program(mode, Wasi::new().stdin_bytes(input.clone()));
        assert_eq!(sbox.call::<(), i32>("echo", ()).unwrap(), 1000, "{mode:?}");
        assert_eq!(sbox.take_output(&instance).unwrap().stdout, input);
        // At end of file, a read gets nothing.
        assert_eq!(sbox.call::<(), i32>("echo", ()).unwrap(), 0);
    }
}

/// A writer whose bytes the test can see.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn host_streams_carry_stdin_stdout_and_stderr() {
    let input = b"streamed through host calls, seven bytes at a time".to_vec();
    for mode in modes() {
        let (mut sbox, instance) = program(mode, Wasi::new().inherit_stdio());
        let (out, err) = (Shared::default(), Shared::default());
        sbox.set_stdio(Stdio {
            stdin: Box::new(Cursor::new(input.clone())),
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
        });
        assert_eq!(
            sbox.call::<(), i32>("echo", ()).unwrap() as usize,
            input.len()
        );
        let outcome = sbox.run(&instance).unwrap();
        assert_eq!(outcome.output.stdout, b"", "{mode:?}: nothing is captured");
        let mut expected = input.clone();
        expected.extend_from_slice(b"hello\n");
        assert_eq!(*out.0.lock().unwrap(), expected);
        assert_eq!(*err.0.lock().unwrap(), b"oops\n");
    }
}

#[test]
fn capture_limits_truncate_and_discard_drops() {
    let wasi = Wasi::new()
        .stdout(WasiOutput::Capture { limit: 4 })
        .stderr(WasiOutput::Discard);
    let (mut sbox, instance) = program(CallMode::Exit, wasi);
    let outcome = sbox.run(&instance).unwrap();
    assert_eq!(outcome.output.stdout, b"hell");
    assert_eq!(outcome.output.stderr, b"");
    assert!(outcome.output.truncated);
    // The limit applies between takes.
    let outcome = sbox.run(&instance).unwrap();
    assert_eq!(outcome.output.stdout, b"hell");
}

#[test]
fn clocks_are_the_hosts_and_cpu_clocks_are_nosys() {
    for mode in modes() {
        let (mut sbox, _) = program(mode, Wasi::new());
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now = sbox.call::<i32, i64>("clock", 0).unwrap();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(
            (before.as_nanos() as i64..=after.as_nanos() as i64).contains(&now),
            "{mode:?}"
        );
        let a = sbox.call::<i32, i64>("clock", 1).unwrap();
        let b = sbox.call::<i32, i64>("clock", 1).unwrap();
        assert!(a >= 0 && b >= a, "monotonic: {a} then {b}");
        assert_eq!(sbox.call::<i32, i32>("clock_errno", 2).unwrap(), 52);
        assert_eq!(sbox.call::<i32, i32>("clock_errno", 9).unwrap(), 28);
    }
}

#[test]
fn random_bytes_follow_the_seed() {
    let draw = |seed: [u8; 32]| {
        let (mut sbox, _) = program(CallMode::Exit, Wasi::new().seed(seed));
        let first = sbox.call::<(), i64>("random", ()).unwrap();
        let second = sbox.call::<(), i64>("random", ()).unwrap();
        (first, second)
    };
    let (a1, a2) = draw([1; 32]);
    assert_ne!(a1, a2, "the stream moves on");
    assert_eq!(draw([1; 32]), (a1, a2), "the same seed, the same bytes");
    assert_ne!(draw([2; 32]).0, a1);
}

#[test]
fn hostile_pointers_and_descriptors_get_errnos_and_the_sandbox_lives() {
    for mode in modes() {
        let (mut sbox, instance) = program(mode, Wasi::new());
        for (export, errno) in [
            ("write_out_of_bounds", 21),
            ("write_iovecs_out_of_bounds", 21),
            ("random_out_of_bounds", 21),
            ("write_bad_fd", 8),
            ("open", 8),
            ("prestat", 8),
        ] {
            assert_eq!(
                sbox.call::<(), i32>(export, ()).unwrap(),
                errno,
                "{mode:?} {export}"
            );
        }
        assert_eq!(sbox.take_output(&instance).unwrap().stdout, b"");
        // A trap is typed, and the program runs again after it.
        let err = sbox.call::<(), ()>("trap", ()).unwrap_err();
        assert_eq!(err.trap_code(), Some(TrapCode::UnreachableCodeReached));
        assert_eq!(sbox.run(&instance).unwrap().output.stdout, b"hello\n");
    }
}

#[test]
fn wasi_imports_link_only_with_wasi_and_by_their_own_types() {
    let mut sbox = sandbox(CallMode::Exit);
    let module = sbox.load(&wat::parse_str(PROGRAM).unwrap()).unwrap();
    // Without WASI the imports are unbound.
    match sbox.instantiate(&module) {
        Err(WasmError::Link { module, name, .. }) => {
            assert_eq!(
                (module.as_str(), name.as_str()),
                ("wasi_snapshot_preview1", "fd_write")
            )
        }
        other => panic!("{other:?}"),
    }
    let wasi = || InstanceOptions::default().with_wasi(Wasi::new());
    for (import, name) in [
        ("(func (param i32 i32) (result i32))", "fd_write"),
        ("(func (param i32 i32) (result i32))", "no_such_function"),
    ] {
        let wat = format!(r#"(module (import "wasi_snapshot_preview1" "{name}" {import}))"#);
        let module = sbox.load(&wat::parse_str(&wat).unwrap()).unwrap();
        match sbox.instantiate_with(&module, wasi()) {
            Err(WasmError::Link { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    // Not a command, or not WASI at all.
    let reactor = sbox
        .load(&wat::parse_str(r#"(module (func (export "f")))"#).unwrap())
        .unwrap();
    let plain = sbox.instantiate(&reactor).unwrap();
    assert!(matches!(sbox.run(&plain), Err(WasmError::NotWasi(_))));
    assert!(matches!(
        sbox.take_output(&plain),
        Err(WasmError::NotWasi(_))
    ));
    let with_wasi = sbox.instantiate_with(&reactor, wasi()).unwrap();
    assert!(matches!(sbox.run(&with_wasi), Err(WasmError::NotWasi(_))));
    // An argument with a NUL byte cannot be laid out.
    let bad = InstanceOptions::default().with_wasi(Wasi::new().arg("a\0b"));
    assert!(matches!(
        sbox.instantiate_with(&reactor, bad),
        Err(WasmError::Instantiate(_))
    ));
}

#[test]
fn a_reactor_is_initialised_once_before_its_exports() {
    let wat = r#"(module
      (global $n (mut i32) (i32.const 0))
      (func (export "_initialize") (global.set $n (i32.add (global.get $n) (i32.const 1))))
      (func (export "inits") (result i32) (global.get $n)))"#;
    let mut sbox = sandbox(CallMode::Exit);
    let module = sbox.load(&wat::parse_str(wat).unwrap()).unwrap();
    sbox.instantiate_with(&module, InstanceOptions::default().with_wasi(Wasi::new()))
        .unwrap();
    assert_eq!(sbox.call::<(), i32>("inits", ()).unwrap(), 1);
    // Without WASI it is an ordinary export, not called.
    sbox.instantiate(&module).unwrap();
    assert_eq!(sbox.call::<(), i32>("inits", ()).unwrap(), 0);
}

#[test]
fn output_captured_past_the_output_ring_is_a_typed_error_and_the_sandbox_lives() {
    // Writes 64 KiB from address 0 (whatever memory holds) `n` times.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 2)
      (func (export "_start") (local $i i32)
        (i32.store (i32.const 65536) (i32.const 0))
        (i32.store (i32.const 65540) (i32.const 65536))
        (loop $l
          (drop (call $w (i32.const 1) (i32.const 65536) (i32.const 1) (i32.const 65544)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 8))))))"#;
    let mut sbox = sandbox(CallMode::Exit);
    let module = sbox.load(&wat::parse_str(wat).unwrap()).unwrap();
    let wasi = Wasi::new().stdout(WasiOutput::Capture { limit: 1 << 20 });
    let instance = sbox
        .instantiate_with(&module, InstanceOptions::default().with_wasi(wasi))
        .unwrap();
    // 512 KiB captured does not fit the 256 KiB output ring.
    let err = sbox.run(&instance).unwrap_err();
    match &err {
        WasmError::Sandbox(e @ nub_sandbox::HyperlightError::ResponseTooLarge { .. }) => {
            assert!(!e.poisons())
        }
        other => panic!("{other:?}"),
    }
    // Within the default limit it fits, and the sandbox goes on.
    let small = sbox
        .instantiate_with(&module, InstanceOptions::default().with_wasi(Wasi::new()))
        .unwrap();
    let outcome = sbox.run(&small).unwrap();
    assert_eq!(outcome.output.stdout.len(), 64 << 10);
    assert!(outcome.output.truncated);
}
