//! Builds the guest crate in `guest/` (release, x86_64-unknown-none, nub's
//! link script), reruns when it or any crate it is built from changes
//! (nub-arch-x86 included), and sets `GUEST_ELF` to the ELF's path for
//! `include_bytes!(env!("GUEST_ELF"))` in src/lib.rs.

fn main() {
    if let Err(e) = nub_guest_build::embed("guest", "GUEST_ELF") {
        panic!("{e}");
    }
}
