//! Builds the guest in `../guest` and sets `KV_GUEST` to its ELF's path.

fn main() {
    if let Err(e) = nub_guest_build::embed("../guest", "KV_GUEST") {
        panic!("{e}");
    }
}
