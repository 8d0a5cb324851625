//! [`embed`]: a host crate's `build.rs` builds its guest, makes cargo rerun
//! the build script when the guest or any crate it is built from changes,
//! and hands the ELF's path to the host's code. [`embed_wasm`] does the
//! same for a wasm program and its `.wasm` file.

use std::{
    collections::{BTreeSet, HashSet, VecDeque},
    path::{Path, PathBuf},
};

use cargo_metadata::{DependencyKind, PackageId};

use crate::{BuildError, build_guest, build_wasm, cargo};

/// For a host crate's `build.rs`: builds the guest crate in `guest_dir`
/// (as [`build_guest`] does; a relative path is taken from the host crate's
/// directory), prints `cargo:rerun-if-changed` for every path
/// [`rerun_paths`] lists, and `cargo:rustc-env=<env_name>=<ELF path>`, so
/// the host embeds the guest with `include_bytes!(env!("<env_name>"))`.
/// Returns the ELF's path.
///
/// ```no_run
/// // build.rs of a host crate whose guest crate is in `guest/`:
/// // fn main() {
/// if let Err(e) = nub_guest_build::embed("guest", "MY_GUEST") {
///     panic!("{e}");
/// }
/// // }
/// // src/main.rs:
/// // static GUEST: &[u8] = include_bytes!(env!("MY_GUEST"));
/// // UninitializedSandbox::new(GuestBinary::Static(GUEST), None)?.evolve()?
/// ```
///
/// The rerun paths are printed even when the build fails, so fixing the
/// guest reruns the script.
pub fn embed(guest_dir: impl AsRef<Path>, env_name: &str) -> Result<PathBuf, BuildError> {
    embed_built(guest_dir.as_ref(), env_name, build_guest)
}

/// [`embed`] for a wasm program: builds the wasm crate in `wasm_dir` for
/// `wasm32-wasip1` (as [`build_wasm`] does, adding the target if the
/// toolchain lacks it), prints the same rerun lines, and
/// `cargo:rustc-env=<env_name>=<.wasm path>`.
///
/// ```no_run
/// // build.rs of a host crate whose plugin crate is in `plugin/`:
/// // fn main() {
/// if let Err(e) = nub_guest_build::embed_wasm("plugin", "PLUGIN_WASM") {
///     panic!("{e}");
/// }
/// // }
/// // src/lib.rs:
/// // static PLUGIN: &[u8] = include_bytes!(env!("PLUGIN_WASM"));
/// // let module = nub_wasm::WasmSandbox::new()?.load(PLUGIN)?;
/// ```
pub fn embed_wasm(wasm_dir: impl AsRef<Path>, env_name: &str) -> Result<PathBuf, BuildError> {
    embed_built(wasm_dir.as_ref(), env_name, build_wasm)
}

/// What [`embed`] and [`embed_wasm`] share: `build` makes the file.
fn embed_built(
    dir: &Path,
    env_name: &str,
    build: fn(&Path) -> Result<PathBuf, BuildError>,
) -> Result<PathBuf, BuildError> {
    if env_name.is_empty() || env_name.contains(['=', '\n', '\r', '\0']) {
        return Err(BuildError::EnvName {
            name: env_name.to_string(),
        });
    }
    let dir = match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(host) => PathBuf::from(host).join(dir),
        None => dir.to_path_buf(),
    };
    let built = build(&dir);
    // Before the build's error (if any): a fixed crate must rerun the script.
    let paths = rerun_paths(&dir);
    for path in paths.as_deref().unwrap_or_default() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let file = built?;
    paths?;
    println!("cargo:rustc-env={env_name}={}", file.display());
    Ok(file)
}

/// What a build of the guest (or wasm) crate in `dir` depends on, for
/// `rerun-if-changed`: for the guest and every local (path) package it
/// depends on, recursively through normal and build dependencies
/// (`nub-arch-x86`, `nub-host-common`, ...), each file and directory at the
/// top of the package's directory except hidden ones, target directories
/// and directories holding another package (listed on their own if they
/// are dependencies); plus the guest workspace's `Cargo.toml`,
/// `Cargo.lock` and `.cargo/config.toml` where they exist. Sorted, each
/// once. Runs `cargo metadata` (the resolved graph, from the lockfile).
pub fn rerun_paths(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let manifest = cargo::package(dir)?.manifest;
    let metadata = cargo::metadata(dir, &manifest, false)?;
    let target_dir = metadata.target_directory.as_std_path().to_path_buf();
    let root = metadata
        .packages
        .iter()
        .find(|p| p.manifest_path.as_std_path() == manifest)
        .map(|p| p.id.clone())
        .ok_or_else(|| BuildError::NoPackage {
            manifest: manifest.clone(),
        })?;
    let nodes = metadata
        .resolve
        .as_ref()
        .map(|r| r.nodes.as_slice())
        .unwrap_or_default();
    let mut seen: HashSet<PackageId> = HashSet::from([root.clone()]);
    let mut queue = VecDeque::from([root]);
    let mut paths = BTreeSet::new();
    while let Some(id) = queue.pop_front() {
        let Some(package) = metadata.packages.iter().find(|p| p.id == id) else {
            continue;
        };
        if package.source.is_some() {
            continue; // from a registry or git: cargo tracks it itself
        }
        if let Some(package_dir) = package.manifest_path.as_std_path().parent() {
            package_entries(package_dir, &target_dir, &mut paths)?;
        }
        let Some(node) = nodes.iter().find(|n| n.id == id) else {
            continue;
        };
        for dep in &node.deps {
            let runtime = dep.dep_kinds.is_empty()
                || dep
                    .dep_kinds
                    .iter()
                    .any(|k| matches!(k.kind, DependencyKind::Normal | DependencyKind::Build));
            if runtime && seen.insert(dep.pkg.clone()) {
                queue.push_back(dep.pkg.clone());
            }
        }
    }
    let workspace = metadata.workspace_root.as_std_path();
    for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        let path = workspace.join(file);
        if path.exists() {
            paths.insert(path);
        }
    }
    Ok(paths.into_iter().collect())
}

/// Adds the top-level entries of `package_dir` that make up its sources.
fn package_entries(
    package_dir: &Path,
    target_dir: &Path,
    paths: &mut BTreeSet<PathBuf>,
) -> Result<(), BuildError> {
    let io = |source| BuildError::Io {
        path: package_dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(package_dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path
            .file_name()
            .is_none_or(|n| n.to_string_lossy().starts_with('.'));
        let is_dir = path.is_dir();
        let skip = hidden
            || (is_dir
                && (path.ends_with("target")
                    || path.starts_with(target_dir)
                    || path.join("Cargo.toml").is_file()));
        if !skip {
            paths.insert(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_guest_reruns_on_its_sources_and_the_kernels() {
        let root = crate::repo_root().canonicalize().unwrap();
        let paths = rerun_paths(&crate::guests_dir().join("default")).unwrap();
        for expected in [
            "guest-x86/guests/default/src",
            "guest-x86/guests/default/Cargo.toml",
            "guest-x86/nub-arch-x86/src",
            "guest-x86/nub-arch-x86/nub-guest.ld",
            "guest-x86/nub-arch-x86/build.rs",
            "guest-x86/nub-arch-x86/Cargo.toml",
            "crates/nub-host-common/src",
            "crates/javm-cap/src",
            "guest-x86/guests/Cargo.toml",
            "guest-x86/guests/Cargo.lock",
            "guest-x86/guests/.cargo/config.toml",
        ] {
            assert!(
                paths.contains(&root.join(expected)),
                "{expected} in {paths:?}"
            );
        }
        for path in &paths {
            assert!(path.exists(), "{}", path.display());
            assert!(
                !path.ends_with("target")
                    && !path.starts_with(root.join("guest-x86/guests/target")),
                "{}",
                path.display()
            );
        }
        // Not the other guests of the workspace, nor dev-dependencies.
        assert!(
            !paths
                .iter()
                .any(|p| p.starts_with(root.join("guest-x86/guests/hostile"))),
            "{paths:?}"
        );
    }

    #[test]
    fn env_names_are_checked() {
        for bad in ["", "A=B", "A\nB"] {
            let err = embed("nowhere", bad).unwrap_err();
            assert!(matches!(err, BuildError::EnvName { .. }), "{err}");
            let err = embed_wasm("nowhere", bad).unwrap_err();
            assert!(matches!(err, BuildError::EnvName { .. }), "{err}");
        }
    }
}
