//! A plugin for nub-wasm, in plain Rust with `std`: its text is its WASI
//! stdin (the host configures it per instance), its log is its stdout
//! (`println!`, captured by the host).

use std::io::Read;
use std::sync::OnceLock;

/// The text this instance works on: all of stdin, read on first use.
fn text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("text-stats: cannot read stdin: {e}");
        }
        text
    })
}

/// The number of whitespace-separated words in the text.
#[unsafe(no_mangle)]
pub extern "C" fn word_count() -> u32 {
    let words = text().split_whitespace().count();
    println!("text-stats: {words} words");
    u32::try_from(words).unwrap_or(u32::MAX)
}

/// The number of lines in the text.
#[unsafe(no_mangle)]
pub extern "C" fn line_count() -> u32 {
    let lines = text().lines().count();
    println!("text-stats: {lines} lines");
    u32::try_from(lines).unwrap_or(u32::MAX)
}

/// The Adler-32 checksum of the text's bytes.
#[unsafe(no_mangle)]
pub extern "C" fn checksum() -> u32 {
    const MOD: u32 = 65521;
    let (a, b) = text().bytes().fold((1u32, 0u32), |(a, b), byte| {
        let a = (a + u32::from(byte)) % MOD;
        (a, (b + a) % MOD)
    });
    (b << 16) | a
}
