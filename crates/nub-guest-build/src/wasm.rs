//! Building Rust programs for WebAssembly: a crate compiled for
//! [`WASM_TARGET`] (`wasm32-wasip1`), whose `.wasm` file a host runs in a
//! `nub_wasm::WasmSandbox`.
//!
//! A wasm crate is a package with a `cdylib` library (a WASI *reactor*:
//! no `main`, its `extern "C"` functions exported, `_initialize` run at
//! instantiation) or, failing that, a binary target (a WASI *command*:
//! `main` behind `_start`). It builds like a guest ([`crate::build_guest`]):
//! `cargo build --release` in a clean environment ([`crate::env`]), with
//! the `rustc` of the toolchain whose target was checked ([`crate::target`],
//! which adds `wasm32-wasip1` with rustup when it is missing), in a target
//! directory of its own when called from the build script of a workspace it
//! belongs to. Unlike a guest it gets no nub flags: its own manifest's
//! `[profile.release]` and config files apply.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use cargo_metadata::TargetKind;

use crate::{BuildError, cargo, env::clean_env, target};

/// The target triple of wasm programs.
pub const WASM_TARGET: &str = "wasm32-wasip1";

/// What a wasm crate builds into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmKind {
    /// A `cdylib` library: a WASI reactor (exports, `_initialize`).
    Reactor,
    /// A binary: a WASI command (`_start`).
    Command,
}

/// A wasm crate checked by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmCrate {
    /// The package's `Cargo.toml`.
    pub manifest: PathBuf,
    /// The target that becomes the `.wasm` file (its `.wasm` is named
    /// after it, `-` as `_` for a library).
    pub name: String,
    /// Reactor or command.
    pub kind: WasmKind,
    /// The target directory of the package's workspace.
    pub target_dir: PathBuf,
}

/// Checks that `dir` is a wasm crate: a package with a `cdylib` library
/// (preferred) or a binary target (the one named after the package when
/// it has several). Runs `cargo metadata --no-deps`.
pub fn inspect(dir: &Path) -> Result<WasmCrate, BuildError> {
    let cargo::Package {
        manifest,
        package,
        target_dir,
    } = cargo::package(dir)?;
    let cdylib = package
        .targets
        .iter()
        .find(|t| t.is_kind(TargetKind::CDyLib))
        .map(|t| t.name.clone());
    let (name, kind) = match cdylib {
        Some(lib) => (lib, WasmKind::Reactor),
        None => match cargo::main_binary(&package)? {
            Some(bin) => (bin, WasmKind::Command),
            None => {
                return Err(BuildError::NoWasmTarget {
                    package: package.name.to_string(),
                    manifest,
                });
            }
        },
    };
    Ok(WasmCrate {
        manifest,
        name,
        kind,
        target_dir,
    })
}

/// The `cargo build` command for `krate`, run in `dir` with `rustc`:
///
/// ```text
/// cargo build --release --target wasm32-wasip1
///       --message-format=json-render-diagnostics
///       --manifest-path DIR/Cargo.toml (--lib | --bin NAME) [--target-dir T]
///   with RUSTC = <sysroot>/bin/rustc, in a clean environment
/// ```
pub fn build_command(
    dir: &Path,
    krate: &WasmCrate,
    target_dir: Option<&Path>,
    rustc: &Path,
) -> Command {
    let mut cmd = Command::new(cargo::cargo_program());
    clean_env(&mut cmd);
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&krate.manifest);
    match krate.kind {
        WasmKind::Reactor => cmd.arg("--lib"),
        WasmKind::Command => cmd.args(["--bin", &krate.name]),
    };
    if let Some(target_dir) = target_dir {
        cmd.arg("--target-dir").arg(target_dir);
    }
    cmd.env("RUSTC", rustc);
    cmd
}

/// Builds the wasm crate in `dir` for `wasm32-wasip1` (release) and
/// returns its `.wasm` file's path, read from cargo's artifact messages.
///
/// The target is added with rustup first if the toolchain lacks it.
/// Cargo's progress and errors go to stderr. Called from a build script
/// whose target directory the crate shares (a member of the host's
/// workspace), it builds in `<target>/nub-guest` instead, so the nested
/// cargo does not wait for its parent's lock.
pub fn build_wasm(dir: &Path) -> Result<PathBuf, BuildError> {
    let krate = inspect(dir)?;
    let out_dir = std::env::var_os("OUT_DIR").map(PathBuf::from);
    let target_dir = cargo::separate_target_dir(out_dir.as_deref(), &krate.target_dir);
    let sysroot = target::sysroot(dir)?;
    target::ensure(&sysroot, WASM_TARGET)?;
    let cmd = build_command(
        dir,
        &krate,
        target_dir.as_deref(),
        &target::sysroot_rustc(&sysroot),
    );
    let wanted = match krate.kind {
        WasmKind::Reactor => TargetKind::CDyLib,
        WasmKind::Command => TargetKind::Bin,
    };
    cargo::run(cmd, dir)?
        .into_iter()
        .filter(|a| a.target.name == krate.name && a.target.is_kind(wanted.clone()))
        .flat_map(|a| a.filenames)
        .find(|f| f.extension() == Some("wasm"))
        .map(|f| f.into_std_path_buf())
        .ok_or_else(|| BuildError::NoArtifact {
            dir: dir.to_path_buf(),
            wanted: format!("{}.wasm", krate.name),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// A crate with this manifest, a `src/lib.rs` and optionally a
    /// `src/main.rs`.
    fn crate_dir(manifest: &str, main: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        if main {
            std::fs::write(dir.path().join("src/main.rs"), "fn main() {}").unwrap();
        }
        dir
    }

    const PACKAGE: &str =
        "[package]\nname = \"my-plugin\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[workspace]\n";

    #[test]
    fn a_cdylib_is_a_reactor_and_a_binary_a_command() {
        let lib = format!("{PACKAGE}[lib]\ncrate-type = [\"cdylib\"]\n");
        let dir = crate_dir(&lib, true);
        let krate = inspect(dir.path()).unwrap();
        assert_eq!(krate.kind, WasmKind::Reactor);
        assert_eq!(krate.name, "my_plugin");
        assert_eq!(
            krate.target_dir,
            dir.path().canonicalize().unwrap().join("target")
        );

        let dir = crate_dir(PACKAGE, true);
        let krate = inspect(dir.path()).unwrap();
        assert_eq!(krate.kind, WasmKind::Command);
        assert_eq!(krate.name, "my-plugin");
    }

    #[test]
    fn a_plain_library_is_not_a_wasm_program() {
        let dir = crate_dir(PACKAGE, false);
        let err = inspect(dir.path()).unwrap_err();
        assert!(matches!(err, BuildError::NoWasmTarget { .. }), "{err}");
        assert!(err.to_string().contains("cdylib"), "{err}");
        let err = inspect(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, BuildError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn the_command_targets_wasm32_wasip1_without_nubs_guest_flags() {
        let reactor = WasmCrate {
            manifest: PathBuf::from("/p/Cargo.toml"),
            name: "p".into(),
            kind: WasmKind::Reactor,
            target_dir: PathBuf::from("/p/target"),
        };
        let cmd = build_command(
            Path::new("/p"),
            &reactor,
            Some(Path::new("/h/target/nub-guest")),
            Path::new("/tc/bin/rustc"),
        );
        let reactor_args = args(&cmd);
        for expected in [
            "build",
            "--release",
            "wasm32-wasip1",
            "/p/Cargo.toml",
            "--lib",
            "/h/target/nub-guest",
        ] {
            assert!(
                reactor_args.iter().any(|a| a == expected),
                "{expected} in {reactor_args:?}"
            );
        }
        assert!(
            !reactor_args.iter().any(|a| a == "--config"),
            "{reactor_args:?}"
        );
        let env: Vec<_> = cmd.get_envs().collect();
        assert!(
            env.iter()
                .any(|(k, v)| *k == "RUSTC" && *v == Some("/tc/bin/rustc".as_ref())),
            "{env:?}"
        );
        assert!(
            !env.iter()
                .any(|(k, v)| *k == "CARGO_ENCODED_RUSTFLAGS" && v.is_some()),
            "{env:?}"
        );

        let command = WasmCrate {
            kind: WasmKind::Command,
            ..reactor
        };
        let args = args(&build_command(
            Path::new("/p"),
            &command,
            None,
            Path::new("rustc"),
        ));
        let at = args.iter().position(|a| a == "--bin").unwrap();
        assert_eq!(args[at + 1], "p");
        assert!(!args.iter().any(|a| a == "--target-dir"), "{args:?}");
    }

    #[test]
    fn a_reactor_builds_to_a_wasm_module() {
        // A real build (adding wasm32-wasip1 to the toolchain if it lacks
        // it): the file cargo reports is a wasm module.
        let manifest = format!(
            "{PACKAGE}[lib]\ncrate-type = [\"cdylib\"]\n[profile.release]\nopt-level = \"s\"\n"
        );
        let dir = crate_dir(&manifest, false);
        std::fs::write(
            dir.path().join("src/lib.rs"),
            "#[unsafe(no_mangle)] pub extern \"C\" fn answer() -> i32 { 42 }\n",
        )
        .unwrap();
        let wasm = build_wasm(dir.path()).unwrap();
        assert_eq!(wasm.file_name().unwrap(), "my_plugin.wasm");
        assert!(wasm.starts_with(dir.path().canonicalize().unwrap().join("target")));
        let bytes = std::fs::read(&wasm).unwrap();
        assert_eq!(&bytes[..8], b"\0asm\x01\0\0\0", "{}", wasm.display());
    }
}
