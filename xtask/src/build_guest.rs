//! `cargo xtask build-guest`: builds every guest program (release, for
//! `x86_64-unknown-none`, and the wasm guest hard-float for the host's
//! ABI) with the same code the build scripts and `nub build` use, and
//! prints where each ELF landed.

use std::path::Path;

use nub_guest_build::cargo::{RUSTFLAGS, Selection, build_command};

use crate::cmd::Error;

/// Runs the task.
pub fn run() -> Result<(), Error> {
    let dir = nub_guest_build::guests_dir();
    // The command the build runs (RUSTC is pinned to the checked toolchain).
    let cmd = build_command(&dir, &Selection::Workspace, None, Path::new("rustc"));
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!(
        "$ (cd {} && CARGO_ENCODED_RUSTFLAGS='{}' cargo {})",
        dir.display(),
        RUSTFLAGS.join(" "),
        args.join(" ")
    );
    let guests = nub_guest_build::build_guests().map_err(Error::GuestBuild)?;
    for guest in guests {
        println!("{}: {}", guest.name, guest.path.display());
    }
    // The wasm guest: a workspace of its own, built hard-float (its
    // manifest says so; docs/wasm.md).
    let wasm = dir.join("wasm");
    let elf = nub_guest_build::build_guest(&wasm).map_err(Error::GuestBuild)?;
    println!("nub-wasm-guest: {}", elf.display());
    Ok(())
}
