//! Publishes the guest link script: guest binaries that depend on this crate
//! find `nub-guest.ld` on their linker search path.
//!
//! Also sets `cfg(nub_bare)`, under which the kernel proper (entry, port
//! I/O, heap, panic handler) is built instead of the host-side `testing`
//! harness: for the guest target `x86_64-unknown-none`, and for a
//! hard-float guest built for `x86_64-unknown-linux-gnu` with `--cfg
//! nub_guest` (docs/wasm.md, *Why this dispatch*).
fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let script = std::path::Path::new(&out).join("nub-guest.ld");
    std::fs::copy("nub-guest.ld", &script).expect("copy nub-guest.ld to OUT_DIR");
    println!("cargo:rustc-link-search={out}");
    println!("cargo:rerun-if-changed=nub-guest.ld");
    println!("cargo::rustc-check-cfg=cfg(nub_bare)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let hard_float_guest = std::env::var_os("CARGO_CFG_NUB_GUEST").is_some();
    if os == "none" || hard_float_guest {
        println!("cargo::rustc-cfg=nub_bare");
    }
}
