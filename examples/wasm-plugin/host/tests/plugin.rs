//! The plugin in a real sandbox (needs /dev/kvm).

use std::io::Write;
use std::process::{Command, Stdio};

use nub_wasm_plugin::{PLUGIN, Stats, TextStats};

/// Adler-32 as the plugin computes it, on the host.
fn adler32(bytes: &[u8]) -> u32 {
    let (a, b) = bytes.iter().fold((1u32, 0u32), |(a, b), &byte| {
        let a = (a + u32::from(byte)) % 65521;
        (a, (b + a) % 65521)
    });
    (b << 16) | a
}

#[test]
fn the_plugin_counts_and_checksums_and_its_prints_are_captured() {
    let mut plugin = TextStats::new().expect("boots and compiles the plugin");
    let text = "the quick brown fox\njumps over\n\nthe lazy dog\n";
    let stats = plugin.stats(text).expect("runs");
    assert_eq!(
        stats,
        Stats {
            words: 9,
            lines: 4,
            checksum: adler32(text.as_bytes()),
            log: "text-stats: 9 words\ntext-stats: 4 lines\n".to_string(),
        }
    );
    // Wikipedia's example value, so the reference is right too.
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
}

#[test]
fn each_text_gets_a_fresh_instance() {
    let mut plugin = TextStats::new().expect("boots");
    let first = plugin.stats("one two three").expect("runs");
    let empty = plugin.stats("").expect("runs");
    let again = plugin.stats("one two three").expect("runs");
    assert_eq!((first.words, first.lines), (3, 1));
    assert_eq!((empty.words, empty.lines, empty.checksum), (0, 0, 1));
    assert_eq!(again, first);
}

#[test]
fn the_plugin_is_a_wasi_reactor_with_three_exports() {
    let mut sandbox = nub_wasm::WasmSandbox::new().expect("boots");
    let module = sandbox.load(PLUGIN).expect("compiles");
    let mut functions: Vec<&str> = module
        .exports
        .iter()
        .filter(|e| matches!(e.kind, nub_wasm::ExternKind::Func(_)))
        .map(|e| e.name.as_str())
        .collect();
    functions.retain(|name| *name != "_initialize");
    assert_eq!(functions, ["checksum", "line_count", "word_count"]);
    assert!(!module.exports.iter().any(|e| e.name == "_start"));
    assert!(
        module
            .imports
            .iter()
            .all(|i| i.module == "wasi_snapshot_preview1"),
        "{:?}",
        module.imports
    );
}

#[test]
fn the_binary_prints_the_stats_of_its_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nub-wasm-plugin"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Wikipedia")
        .expect("writes");
    let output = child.wait_with_output().expect("ends");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "text-stats: 1 words\ntext-stats: 1 lines\nwords 1 lines 1 adler32 11e60398\n"
    );
}
