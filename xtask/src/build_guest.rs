//! `cargo xtask build-guest`: builds every guest program (release, for
//! `x86_64-unknown-none`) with the same code the build scripts use, and
//! prints where each ELF landed.

use crate::cmd::Error;

/// Runs the task.
pub fn run() -> Result<(), Error> {
    println!(
        "$ (cd {} && cargo build --release --workspace --target {})",
        nub_guest_build::guests_dir().display(),
        nub_guest_build::GUEST_TARGET
    );
    let guests = nub_guest_build::build_guests().map_err(Error::GuestBuild)?;
    for guest in guests {
        println!("{}: {}", guest.name, guest.path.display());
    }
    Ok(())
}
