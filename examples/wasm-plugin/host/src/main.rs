//! `nub-wasm-plugin`: prints the `text-stats` plugin's findings on the
//! text read from stdin, and what the plugin printed.

use std::io::Read;

use nub_wasm_plugin::TextStats;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let stats = TextStats::new()?.stats(&text)?;
    print!("{}", stats.log);
    println!(
        "words {} lines {} adler32 {:08x}",
        stats.words, stats.lines, stats.checksum
    );
    Ok(())
}
