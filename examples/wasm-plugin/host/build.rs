//! Builds `../plugin` for wasm32-wasip1 and sets `PLUGIN_WASM` to its
//! `.wasm` file's path (`nub_guest_build::embed_wasm`).
fn main() {
    nub_guest_build::embed_wasm("../plugin", "PLUGIN_WASM").unwrap_or_else(|e| panic!("{e}"));
}
