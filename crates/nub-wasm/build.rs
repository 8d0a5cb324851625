//! Builds the wasm guest (`guest-x86/guests/wasm`) and exports its ELF's
//! path as `NUB_WASM_GUEST` for `include_bytes!`.
fn main() {
    if let Err(e) = nub_guest_build::embed("../../guest-x86/guests/wasm", "NUB_WASM_GUEST") {
        panic!("{e}");
    }
}
