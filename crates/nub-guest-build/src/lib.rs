//! Builds nub guest programs: the ones under `guest-x86/guests/` and any
//! guest crate of a user's.
//!
//! One implementation, used by `cargo xtask build-guest`, by the build
//! scripts of crates that need a guest ELF (the CLI embeds the default
//! guest; the integration tests boot every guest), by `nub build`, and by a
//! host crate's own `build.rs` through [`embed`] (or [`build_guest`], which
//! only builds):
//!
//! ```no_run
//! // build.rs of a host crate whose guest crate is in `guest/` (`nub new
//! // --host` makes both): builds the guest, reruns when the guest or any
//! // path dependency of it (nub-arch-x86 included) changes, and sets
//! // MY_GUEST to the ELF's path.
//! // fn main() {
//! if let Err(e) = nub_guest_build::embed("guest", "MY_GUEST") {
//!     panic!("{e}");
//! }
//! // }
//! // In the host crate:
//! // static GUEST: &[u8] = include_bytes!(env!("MY_GUEST"));
//! // let sandbox = UninitializedSandbox::new(GuestBinary::Static(GUEST), None)?;
//! ```
//!
//! Every build runs `cargo build --release --target x86_64-unknown-none`
//! with nub's profile and link flags on the command line ([`cargo`]), in a
//! clean environment ([`env`]), after making sure the toolchain has the
//! target ([`target`]); the ELF paths come from cargo's JSON messages.
//!
//! Rust programs for WebAssembly (`wasm32-wasip1`, run by `nub-wasm`) build
//! the same way, without nub's guest flags: [`build_wasm`] returns the
//! `.wasm` file and [`embed_wasm`] is its build-script form ([`wasm`]).

pub mod cargo;
mod embed;
pub mod env;
mod error;
pub mod target;
pub mod wasm;

use std::path::{Path, PathBuf};

pub use embed::{embed, embed_wasm, rerun_paths};
pub use error::BuildError;
pub use wasm::{WASM_TARGET, build_wasm};

use crate::cargo::Selection;

/// The guest target triple.
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

/// A built guest program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestElf {
    /// Binary name, e.g. `nub-default-guest`.
    pub name: String,
    /// Path of the ELF file.
    pub path: PathBuf,
}

/// The repository root (this crate lives at `crates/nub-guest-build`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The guest kernel crate's directory in a nub checkout at `root`.
pub fn kernel_dir(root: &Path) -> PathBuf {
    root.join("guest-x86").join("nub-arch-x86")
}

/// The guest workspace directory.
pub fn guests_dir() -> PathBuf {
    repo_root().join("guest-x86").join("guests")
}

/// Source directories a guest build depends on (for `rerun-if-changed`).
pub fn source_dirs() -> Vec<PathBuf> {
    let root = repo_root();
    let mut dirs = vec![
        root.join("guest-x86/nub-arch-x86/src"),
        root.join("guest-x86/nub-arch-x86/nub-guest.ld"),
        root.join("guest-x86/nub-arch-x86/Cargo.toml"),
        root.join("crates/nub-host-common/src"),
        root.join("crates/javm-cap/src"),
        root.join("guest-x86/guests/Cargo.toml"),
        root.join("guest-x86/guests/.cargo/config.toml"),
    ];
    if let Ok(members) = member_dirs() {
        for m in members {
            dirs.push(m.join("src"));
            dirs.push(m.join("Cargo.toml"));
        }
    }
    dirs
}

/// Directories of the guest packages (each holds a `Cargo.toml`).
fn member_dirs() -> Result<Vec<PathBuf>, BuildError> {
    let dir = guests_dir();
    let entries = std::fs::read_dir(&dir).map_err(|source| BuildError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut members: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    members.sort();
    Ok(members)
}

/// Builds every guest under `guest-x86/guests/` (release) and returns their
/// ELFs, sorted by name. Same flags and code path as [`build_guest`].
pub fn build_guests() -> Result<Vec<GuestElf>, BuildError> {
    let dir = guests_dir();
    let built = cargo::build(&dir, &Selection::Workspace, None)?;
    Ok(built
        .into_iter()
        .map(|b| GuestElf {
            name: b.name,
            path: b.path,
        })
        .collect())
}

/// Builds the guest crate in `dir` (release, `x86_64-unknown-none`, nub's
/// link script) and returns its ELF's path.
///
/// `dir` must hold a package that depends on `nub-arch-x86` and has a
/// binary target (the one named after the package when it has several); it
/// may be a standalone crate or a member of a workspace of its own. Cargo's
/// progress and errors go to stderr. Called from a build script whose
/// target directory the guest shares (a guest that is a member of the host
/// crate's workspace), the guest builds in `<target>/nub-guest` instead, so
/// the nested cargo does not wait for its parent's lock.
pub fn build_guest(dir: &Path) -> Result<PathBuf, BuildError> {
    let guest = cargo::inspect(dir)?;
    let out_dir = std::env::var_os("OUT_DIR").map(PathBuf::from);
    let target_dir = cargo::separate_target_dir(out_dir.as_deref(), &guest.target_dir);
    let selection = Selection::Binary {
        manifest: guest.manifest,
        bin: guest.bin.clone(),
    };
    cargo::build_with(dir, &selection, target_dir.as_deref(), guest.float)?
        .into_iter()
        .find(|b| b.name == guest.bin)
        .map(|b| b.path)
        .ok_or_else(|| BuildError::NoArtifact {
            dir: dir.to_path_buf(),
            wanted: guest.bin,
        })
}

/// For build scripts: builds the guests, exports each ELF path as
/// `NUB_GUEST_<NAME>` (upper case, `-` → `_`, e.g.
/// `NUB_GUEST_NUB_DEFAULT_GUEST`) to the crate being built, and asks cargo
/// to rerun when guest sources change. Panics (failing the build script)
/// with the build error.
pub fn build_script_main() -> Vec<GuestElf> {
    for dir in source_dirs() {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let guests = match build_guests() {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    for g in &guests {
        println!("cargo:rustc-env={}={}", env_name(&g.name), g.path.display());
    }
    guests
}

/// The environment variable name [`build_script_main`] uses for a guest.
pub fn env_name(guest: &str) -> String {
    format!("NUB_GUEST_{}", guest.to_uppercase().replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(env_name("nub-default-guest"), "NUB_GUEST_NUB_DEFAULT_GUEST");
        assert!(guests_dir().join("Cargo.toml").is_file());
        assert!(kernel_dir(&repo_root()).join("Cargo.toml").is_file());
        let members = member_dirs().unwrap();
        assert!(
            members.iter().any(|m| m.ends_with("default")),
            "{members:?}"
        );
    }
}
