//! Builds `../guest` and sets `KV_GUEST` to its ELF's path (`nub_guest_build::embed`).
fn main() {
    nub_guest_build::embed("../guest", "KV_GUEST").unwrap_or_else(|e| panic!("{e}"));
}
