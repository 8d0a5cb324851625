//! Records the triple xtask is built for (the host's), so `cargo xtask test`
//! can run the guests' unit tests on the host with `--target <host>`.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=XTASK_HOST_TRIPLE={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
