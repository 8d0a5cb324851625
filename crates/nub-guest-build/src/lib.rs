//! Builds the guest programs under `guest-x86/guests/`.
//!
//! One implementation, used by `cargo xtask build-guest` and by the build
//! scripts of crates that need a guest ELF (the CLI embeds the default
//! guest; the integration tests boot every guest). The guests form their own
//! cargo workspace because they only build for `x86_64-unknown-none`; this
//! crate runs `cargo build --release` there with a clean environment (so an
//! outer cargo's flags and wrappers, e.g. clippy's, do not leak in) and
//! reports where each ELF landed.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

/// The guest target triple.
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

/// A built guest program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestElf {
    /// Package (and binary) name, e.g. `nub-default-guest`.
    pub name: String,
    /// Path of the ELF file.
    pub path: PathBuf,
}

/// Why the guests could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// Reading the guest workspace failed.
    Io(PathBuf, std::io::Error),
    /// `cargo build` could not start or failed.
    Cargo(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(path, e) => write!(f, "{}: {e}", path.display()),
            Self::Cargo(msg) => write!(f, "building guests failed: {msg}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// The repository root (this crate lives at `crates/nub-guest-build`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
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
    let entries = std::fs::read_dir(&dir).map_err(|e| BuildError::Io(dir.clone(), e))?;
    let mut members: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    members.sort();
    Ok(members)
}

/// The `[package] name` of a guest manifest.
fn package_name(manifest: &Path) -> Result<String, BuildError> {
    let text =
        std::fs::read_to_string(manifest).map_err(|e| BuildError::Io(manifest.to_path_buf(), e))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().trim_start_matches('=').trim();
            return Ok(value.trim_matches('"').to_string());
        }
    }
    Err(BuildError::Cargo(format!(
        "{}: no [package] name",
        manifest.display()
    )))
}

/// Builds every guest (release) and returns their ELF paths.
pub fn build_guests() -> Result<Vec<GuestElf>, BuildError> {
    let dir = guests_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&dir).args([
        "build",
        "--release",
        "--workspace",
        "--target",
        GUEST_TARGET,
    ]);
    // A clean slate: nothing from an outer cargo invocation may change how
    // the guests build.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer = key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key == "TARGET"
            || key == "HOST"
            || key == "OUT_DIR"
            || key == "OPT_LEVEL"
            || key == "PROFILE"
            || key == "DEBUG"
            || key == "NUM_JOBS";
        if outer && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE" {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| BuildError::Cargo(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(BuildError::Cargo(format!(
            "cargo build in {} exited with {status}",
            dir.display()
        )));
    }
    let out = dir.join("target").join(GUEST_TARGET).join("release");
    member_dirs()?
        .iter()
        .map(|m| {
            let name = package_name(&m.join("Cargo.toml"))?;
            let path = out.join(&name);
            if !path.is_file() {
                return Err(BuildError::Cargo(format!(
                    "expected {} after the build",
                    path.display()
                )));
            }
            Ok(GuestElf { name, path })
        })
        .collect()
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
        let members = member_dirs().unwrap();
        let names: Vec<String> = members
            .iter()
            .map(|m| package_name(&m.join("Cargo.toml")).unwrap())
            .collect();
        assert!(names.contains(&"nub-default-guest".to_string()));
    }
}
