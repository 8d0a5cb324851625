//! Runs the `text-stats` plugin (`../plugin`, Rust compiled to a WASI
//! reactor for wasm32-wasip1 and embedded by build.rs) in a nub-wasm
//! sandbox: each text gets a fresh instance whose stdin is the text, the
//! plugin's exports are called with typed results, and what it prints is
//! captured.

pub use nub_wasm::WasmError;
use nub_wasm::{InstanceOptions, Module, Wasi, WasmSandbox};

/// The plugin's `.wasm` file, built and embedded by build.rs.
pub static PLUGIN: &[u8] = include_bytes!(env!("PLUGIN_WASM"));

/// What the plugin found in one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Whitespace-separated words.
    pub words: u32,
    /// Lines.
    pub lines: u32,
    /// The Adler-32 checksum of the text's bytes.
    pub checksum: u32,
    /// What the plugin printed (its captured stdout).
    pub log: String,
}

/// The plugin, compiled once in its own sandbox.
#[derive(Debug)]
pub struct TextStats {
    sandbox: WasmSandbox,
    module: Module,
}

impl TextStats {
    /// Boots a sandbox and compiles the plugin in it.
    pub fn new() -> Result<Self, WasmError> {
        let mut sandbox = WasmSandbox::new()?;
        let module = sandbox.load(PLUGIN)?;
        Ok(Self { sandbox, module })
    }

    /// Runs the plugin over `text` in a new instance (the text is its
    /// stdin), then drops the instance.
    pub fn stats(&mut self, text: &str) -> Result<Stats, WasmError> {
        let wasi = Wasi::new()
            .arg("text-stats")
            .stdin_bytes(text.as_bytes().to_vec());
        let options = InstanceOptions::default().with_wasi(wasi);
        let instance = self.sandbox.instantiate_with(&self.module, options)?;
        // The exports return u32; wasm has only i32, so the bits come back as one.
        let mut call = |name: &str| -> Result<u32, WasmError> {
            let value: i32 = self.sandbox.call_in(&instance, name, ())?;
            Ok(value.cast_unsigned())
        };
        let (words, lines, checksum) =
            (call("word_count")?, call("line_count")?, call("checksum")?);
        let output = self.sandbox.take_output(&instance)?;
        self.sandbox.drop_instance(instance)?;
        Ok(Stats {
            words,
            lines,
            checksum,
            log: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }
}
