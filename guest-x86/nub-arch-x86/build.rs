//! Publishes the guest link script: guest binaries that depend on this crate
//! find `nub-guest.ld` on their linker search path.
fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let script = std::path::Path::new(&out).join("nub-guest.ld");
    std::fs::copy("nub-guest.ld", &script).expect("copy nub-guest.ld to OUT_DIR");
    println!("cargo:rustc-link-search={out}");
    println!("cargo:rerun-if-changed=nub-guest.ld");
}
