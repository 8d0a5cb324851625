//! WASI preview 1 end to end: a Rust program (`tests/wasi-hello`, built for
//! `wasm32-wasip1` when the tests run, by `nub_guest_build::build_wasm`)
//! run in the wasm guest with args, environment, stdin, a seed and
//! captured output (docs/wasm.md, *WASI*).
//!
//! The program is built here rather than by nub-wasm's build script, so
//! building nub-wasm never needs the wasm32-wasip1 target; the tests add
//! it to the toolchain (with rustup) when it is missing.

mod common;

use std::{path::Path, sync::OnceLock, time::SystemTime};

use nub_wasm::{InstanceOptions, RunOutcome, TrapCode, Wasi, WasmError, WasmSandbox};

/// The test program's `.wasm` bytes, built once per test process.
fn program() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wasi-hello");
        let path = nub_guest_build::build_wasm(&dir)
            .unwrap_or_else(|e| panic!("building {}: {e}", dir.display()));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    })
}

/// Runs the program once in `sbox`, in a new instance configured by `wasi`.
fn run(sbox: &mut WasmSandbox, wasi: Wasi) -> nub_wasm::Result<RunOutcome> {
    let module = sbox.load(program())?;
    let instance = sbox.instantiate_with(&module, InstanceOptions::default().with_wasi(wasi))?;
    sbox.run(&instance)
}

/// The program's stdout as text.
fn stdout(outcome: &RunOutcome) -> String {
    String::from_utf8(outcome.output.stdout.clone()).expect("the program writes UTF-8")
}

/// The value of the stdout line `key: value`.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key:?} line in {out:?}"))
}

/// The 16 random bytes the program printed, in hex.
fn random_line(outcome: &RunOutcome) -> String {
    let out = stdout(outcome);
    let random = line(&out, "random");
    assert!(random.ends_with(" errno 0"), "{random}");
    random.to_string()
}

#[test]
fn args_env_stdin_and_stderr_reach_the_program_in_both_call_modes() {
    for mode in common::modes() {
        let mut sbox = common::sandbox(mode);
        let wasi = Wasi::new()
            .arg("wasi-hello")
            .arg("one")
            .arg("two words")
            .env("NUB_GREETING", "hello there")
            .stdin_bytes(b"some input\nover two lines".to_vec());
        let outcome = run(&mut sbox, wasi).expect("runs");
        let out = stdout(&outcome);
        assert_eq!(line(&out, "args"), "wasi-hello one two words", "{mode:?}");
        assert!(
            out.contains("env NUB_GREETING=hello there\n"),
            "{mode:?}: {out}"
        );
        assert!(
            out.contains("stdin: SOME INPUT\nOVER TWO LINES\n"),
            "{mode:?}: {out}"
        );
        assert_eq!(outcome.output.stderr, b"this goes to stderr\n", "{mode:?}");
        assert!(!outcome.output.truncated);
        assert_eq!(outcome.exit_code, 0, "{mode:?}");
    }
}

#[test]
fn the_defaults_are_no_args_no_env_and_empty_stdin() {
    let mut sbox = common::sandbox(common::modes()[0]);
    let outcome = run(&mut sbox, Wasi::new()).expect("runs");
    let out = stdout(&outcome);
    assert!(out.contains("env NUB_GREETING=<unset>\n"), "{out}");
    assert!(out.contains("stdin: \n"), "{out}");
    assert_eq!(outcome.exit_code, 0);
}

#[test]
fn the_exit_code_is_the_one_the_program_asks_for() {
    let mut sbox = common::sandbox(common::modes()[0]);
    for (arg, code) in [("exit=0", 0), ("exit=3", 3), ("exit=255", 255), ("-", 0)] {
        let outcome = run(&mut sbox, Wasi::new().arg("wasi-hello").arg(arg))
            .unwrap_or_else(|e| panic!("{arg}: {e}"));
        assert_eq!(outcome.exit_code, code, "{arg}");
        // What it wrote before exiting is there.
        assert_eq!(line(&stdout(&outcome), "args"), format!("wasi-hello {arg}"));
    }
}

#[test]
fn random_bytes_follow_the_seed() {
    let mut sbox = common::sandbox(common::modes()[0]);
    let seven = random_line(&run(&mut sbox, Wasi::new().seed([7; 32])).expect("runs"));
    let again = random_line(&run(&mut sbox, Wasi::new().seed([7; 32])).expect("runs"));
    let eight = random_line(&run(&mut sbox, Wasi::new().seed([8; 32])).expect("runs"));
    let zeros = random_line(&run(&mut sbox, Wasi::new()).expect("runs"));
    assert_eq!(seven, again, "the same seed in a new instance");
    assert_ne!(seven, eight);
    assert_ne!(seven, zeros);
    // Another sandbox, the same seed: the same bytes.
    let mut other = common::sandbox(common::modes()[1]);
    let elsewhere = random_line(&run(&mut other, Wasi::new().seed([7; 32])).expect("runs"));
    assert_eq!(seven, elsewhere);
}

#[test]
fn the_clocks_come_from_the_host() {
    let mut sbox = common::sandbox(common::modes()[0]);
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch")
            .as_nanos()
    };
    let before = nanos(SystemTime::now());
    let outcome = run(&mut sbox, Wasi::new()).expect("runs");
    let after = nanos(SystemTime::now());
    let out = stdout(&outcome);
    let realtime: u128 = line(&out, "realtime").parse().expect("nanoseconds");
    assert!(
        (before..=after).contains(&realtime),
        "{before} <= {realtime} <= {after}"
    );
    let monotonic: Vec<u64> = line(&out, "monotonic")
        .split(' ')
        .map(|n| n.parse().expect("nanoseconds"))
        .collect();
    assert!(
        monotonic.len() == 2 && monotonic[0] <= monotonic[1],
        "{monotonic:?}"
    );
}

#[test]
fn a_program_that_traps_leaves_the_sandbox_usable_in_both_call_modes() {
    for mode in common::modes() {
        let mut sbox = common::sandbox(mode);
        let module = sbox.load(program()).expect("loads");
        let wasi = Wasi::new().arg("wasi-hello").arg("trap");
        let instance = sbox
            .instantiate_with(&module, InstanceOptions::default().with_wasi(wasi))
            .expect("instantiates");
        let err = sbox.run(&instance).expect_err("abort is a trap");
        assert!(
            matches!(
                err,
                WasmError::Trap {
                    code: TrapCode::UnreachableCodeReached,
                    ..
                }
            ),
            "{mode:?}: {err}"
        );
        assert!(!sbox.sandbox().is_poisoned(), "{mode:?}");
        // What it wrote before the trap is kept.
        let captured = sbox.take_output(&instance).expect("output");
        let out = String::from_utf8_lossy(&captured.stdout);
        assert!(out.contains("args: wasi-hello trap\n"), "{mode:?}: {out}");
        // The sandbox runs the next program.
        let outcome = run(&mut sbox, Wasi::new().arg("wasi-hello").arg("exit=9"))
            .expect("the sandbox lives on");
        assert_eq!(outcome.exit_code, 9, "{mode:?}");
    }
}
