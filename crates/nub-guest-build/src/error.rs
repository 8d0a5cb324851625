//! [`BuildError`]: every way building a guest can fail, each saying what to
//! do about it.

use std::{path::PathBuf, process::ExitStatus};

/// Why a guest could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Reading or creating a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The path given as a guest crate is not a directory.
    #[error("{} is not a guest crate: not a directory", dir.display())]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// The directory has no `Cargo.toml`.
    #[error("{} is not a guest crate: no Cargo.toml", dir.display())]
    NoManifest {
        /// The directory.
        dir: PathBuf,
    },
    /// `cargo metadata` rejected the manifest (its message says why).
    #[error("{} is not a valid cargo manifest: {source}", manifest.display())]
    Metadata {
        /// The manifest.
        manifest: PathBuf,
        /// Cargo's complaint.
        #[source]
        source: cargo_metadata::Error,
    },
    /// The manifest declares no package (a virtual workspace manifest).
    #[error(
        "{} is not a guest crate: its Cargo.toml has no [package] \
         (a workspace manifest; name one of its member crates instead)",
        manifest.display()
    )]
    NoPackage {
        /// The manifest.
        manifest: PathBuf,
    },
    /// The package does not depend on the guest kernel.
    #[error(
        "{} is not a guest crate: package `{package}` has no dependency on nub-arch-x86 \
         (add `nub-arch-x86 = {{ path = \"<nub checkout>/guest-x86/nub-arch-x86\" }}` \
         under [dependencies])",
        manifest.display()
    )]
    NoNubDependency {
        /// The package name.
        package: String,
        /// Its manifest.
        manifest: PathBuf,
    },
    /// The package has no binary target to become the guest ELF.
    #[error(
        "{} is not a guest crate: package `{package}` has no binary target \
         (a guest needs src/main.rs or a [[bin]] section)",
        manifest.display()
    )]
    NoBinary {
        /// The package name.
        package: String,
        /// Its manifest.
        manifest: PathBuf,
    },
    /// The package has several binaries and none is named after it.
    #[error(
        "package `{package}` has several binary targets ({}) and none is named `{package}`; \
         which one is the guest is ambiguous",
        names.join(", ")
    )]
    SeveralBinaries {
        /// The package name.
        package: String,
        /// The binary targets.
        names: Vec<String>,
    },
    /// A tool (cargo, rustc, rustup) could not be started.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// `rustc --print sysroot` failed or printed something unusable.
    #[error("cannot find the Rust toolchain that builds guests in {}: {detail}", dir.display())]
    Toolchain {
        /// Where the build runs.
        dir: PathBuf,
        /// What `rustc` said.
        detail: String,
    },
    /// The toolchain lacks the build's target and nub cannot add it.
    #[error(
        "the Rust toolchain at {} has no {target} target; {help}",
        sysroot.display()
    )]
    TargetMissing {
        /// The toolchain's sysroot.
        sysroot: PathBuf,
        /// The missing target (`x86_64-unknown-none`, `wasm32-wasip1`).
        target: String,
        /// What to do, including the exact command to run.
        help: String,
    },
    /// `rustup target add` ran and failed.
    #[error("`{command}` failed ({status}); run it yourself and retry")]
    TargetAddFailed {
        /// The command that was run.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// `cargo build` failed; cargo printed its errors to stderr.
    #[error("building the guest in {} failed ({status}); cargo's errors are above", dir.display())]
    CargoFailed {
        /// The crate or workspace directory.
        dir: PathBuf,
        /// How cargo ended.
        status: ExitStatus,
    },
    /// Cargo's JSON messages could not be read.
    #[error("cannot read cargo's build messages: {0}")]
    Messages(#[source] std::io::Error),
    /// [`crate::embed`] was given a name no environment variable can have.
    #[error("`{name}` cannot name the environment variable that holds the guest's path")]
    EnvName {
        /// The name.
        name: String,
    },
    /// The package has neither a `cdylib` library nor a binary target to
    /// become a `.wasm` file.
    #[error(
        "{} is not a wasm program: package `{package}` has neither a cdylib library \
         (`[lib] crate-type = [\"cdylib\"]`, a WASI reactor) nor a binary target \
         (src/main.rs, a WASI command)",
        manifest.display()
    )]
    NoWasmTarget {
        /// The package name.
        package: String,
        /// Its manifest.
        manifest: PathBuf,
    },
    /// Cargo succeeded but reported no guest executable.
    #[error("cargo built {} but reported no executable for `{wanted}`", dir.display())]
    NoArtifact {
        /// The crate or workspace directory.
        dir: PathBuf,
        /// The binary that was expected.
        wanted: String,
    },
}
