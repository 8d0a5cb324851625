//! Builds the guest programs (shared logic with `cargo xtask build-guest`)
//! and exports their paths as `NUB_GUEST_*` for the tests.
fn main() {
    nub_guest_build::build_script_main();
}
