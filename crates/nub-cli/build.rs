//! Builds the guest programs (the same code as `cargo xtask build-guest`)
//! so that `nub` can embed the default guest: exports
//! `NUB_GUEST_NUB_DEFAULT_GUEST` for `include_bytes!`.
fn main() {
    nub_guest_build::build_script_main();
}
