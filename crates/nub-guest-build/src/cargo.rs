//! The one way nub builds a guest: `cargo build` in release for
//! `x86_64-unknown-none` with nub's flags, the ELFs read back from cargo's
//! JSON messages.
//!
//! The flags go on the command line, not into a config file of the guest's,
//! so any crate builds the same inside or outside a workspace of its own:
//! the profile with `--config` (which takes precedence over the manifest's
//! profile), the codegen flags with `CARGO_ENCODED_RUSTFLAGS` (which replaces
//! any `rustflags` a config file sets, so they are never doubled).

use std::{
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use cargo_metadata::{Message, MetadataCommand, TargetKind};

use crate::{BuildError, GUEST_TARGET, env::clean_env, target};

/// The guest kernel crate every guest depends on.
pub const KERNEL_CRATE: &str = "nub-arch-x86";

/// The release profile every guest builds with, as `--config` values.
pub const PROFILE: [&str; 4] = [
    "profile.release.panic=\"abort\"",
    "profile.release.opt-level=\"s\"",
    "profile.release.lto=true",
    "profile.release.codegen-units=1",
];

/// The codegen flags every guest builds with: linked at the fixed addresses
/// of `nub-guest.ld` (nub-arch-x86's build script puts it on the linker's
/// search path), no PIE. Soft-float is the target's default.
pub const RUSTFLAGS: [&str; 4] = [
    "-C",
    "relocation-model=static",
    "-C",
    "link-arg=-Tnub-guest.ld",
];

/// The target a hard-float guest builds for (docs/wasm.md, *Why this
/// dispatch*): its precompiled `core` and `alloc` use SSE2 and pass floats
/// in registers, which the bare-metal target's soft-float ABI cannot.
pub const HARD_FLOAT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The codegen flags a hard-float guest builds with: [`RUSTFLAGS`], no C
/// start files or libraries (nub-arch-x86 is the whole runtime and brings
/// the few C symbols `core` needs), a static executable, and `--cfg
/// nub_guest`, which makes nub-arch-x86 build its kernel for a target whose
/// `target_os` is not `none`.
pub const HARD_FLOAT_RUSTFLAGS: [&str; 11] = [
    "-C",
    "relocation-model=static",
    "-C",
    "link-arg=-Tnub-guest.ld",
    "-C",
    "link-arg=-nostartfiles",
    "-C",
    "link-arg=-nostdlib",
    "-C",
    "link-arg=-static",
    "--cfg=nub_guest",
];

/// The release profile of a hard-float guest: [`PROFILE`] at opt-level 3
/// (such a guest exists for speed: an interpreter at `s` is 10-50% slower).
pub const HARD_FLOAT_PROFILE: [&str; 4] = [
    "profile.release.panic=\"abort\"",
    "profile.release.opt-level=3",
    "profile.release.lto=true",
    "profile.release.codegen-units=1",
];

/// How a guest's floats are built: chosen by the guest crate's manifest,
/// `[package.metadata.nub] float = "hard"` (default soft).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Float {
    /// `x86_64-unknown-none`: soft-float, no SIMD. Every guest but the
    /// wasm guest.
    #[default]
    Soft,
    /// [`HARD_FLOAT_TARGET`] as a `no_std` static executable: SSE2, floats
    /// in registers (the host enables SSE for every guest, docs/abi.md).
    Hard,
}

impl Float {
    /// The target triple.
    pub fn target(self) -> &'static str {
        match self {
            Self::Soft => GUEST_TARGET,
            Self::Hard => HARD_FLOAT_TARGET,
        }
    }

    /// The codegen flags.
    pub fn rustflags(self) -> &'static [&'static str] {
        match self {
            Self::Soft => &RUSTFLAGS,
            Self::Hard => &HARD_FLOAT_RUSTFLAGS,
        }
    }

    /// The profile, as `--config` values.
    pub fn profile(self) -> &'static [&'static str] {
        match self {
            Self::Soft => &PROFILE,
            Self::Hard => &HARD_FLOAT_PROFILE,
        }
    }

    /// What a package's `metadata` asks for (`{"nub": {"float": "hard"}}`).
    pub fn from_metadata(metadata: &serde_json::Value) -> Self {
        match metadata.pointer("/nub/float").and_then(|v| v.as_str()) {
            Some("hard") => Self::Hard,
            _ => Self::Soft,
        }
    }
}

/// The cargo that builds guests: `$CARGO` (the one running the build
/// script or `cargo run`), else `cargo` from `PATH`.
pub fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// What one build covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every member of the workspace rooted at the build directory.
    Workspace,
    /// One binary of the package whose manifest is given.
    Binary {
        /// The package's `Cargo.toml`.
        manifest: PathBuf,
        /// The binary target's name.
        bin: String,
    },
}

/// A guest crate checked by [`inspect`]: the binary to build and where
/// cargo puts its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCrate {
    /// The package's `Cargo.toml`.
    pub manifest: PathBuf,
    /// The binary target that becomes the guest ELF.
    pub bin: String,
    /// The target directory of the package's workspace.
    pub target_dir: PathBuf,
    /// How its floats are built.
    pub float: Float,
}

/// Checks that `dir` is a guest crate: a package (not a virtual manifest)
/// depending on nub-arch-x86 with a binary target. Runs `cargo metadata
/// --no-deps`, which reads manifests only.
pub fn inspect(dir: &Path) -> Result<GuestCrate, BuildError> {
    let Package {
        manifest,
        package,
        target_dir,
    } = package(dir)?;
    let name = package.name.to_string();
    if !package.dependencies.iter().any(|d| d.name == KERNEL_CRATE) {
        return Err(BuildError::NoNubDependency {
            package: name,
            manifest,
        });
    }
    let Some(bin) = main_binary(&package)? else {
        return Err(BuildError::NoBinary {
            package: name,
            manifest,
        });
    };
    Ok(GuestCrate {
        manifest,
        bin,
        float: Float::from_metadata(&package.metadata),
        target_dir,
    })
}

/// The package whose manifest is in `dir`, read by [`package`].
#[derive(Debug, Clone)]
pub struct Package {
    /// Its `Cargo.toml`, canonical.
    pub manifest: PathBuf,
    /// What `cargo metadata --no-deps` says of it.
    pub package: cargo_metadata::Package,
    /// The target directory of its workspace.
    pub target_dir: PathBuf,
}

/// The package of the manifest in `dir` (any package, guest or not): the
/// directory must exist and hold a `Cargo.toml` that declares a
/// `[package]`. Runs `cargo metadata --no-deps`.
pub fn package(dir: &Path) -> Result<Package, BuildError> {
    if !dir.is_dir() {
        return Err(BuildError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoManifest {
            dir: dir.to_path_buf(),
        });
    }
    let manifest = manifest.canonicalize().map_err(|source| BuildError::Io {
        path: manifest.clone(),
        source,
    })?;
    let metadata = metadata(dir, &manifest, true)?;
    let package = metadata
        .packages
        .iter()
        .find(|p| p.manifest_path.as_std_path() == manifest)
        .ok_or_else(|| BuildError::NoPackage {
            manifest: manifest.clone(),
        })?;
    Ok(Package {
        manifest,
        package: package.clone(),
        target_dir: metadata.target_directory.into_std_path_buf(),
    })
}

/// The package's binary target: the only one, or with several the one
/// named after the package; `None` without any.
pub fn main_binary(package: &cargo_metadata::Package) -> Result<Option<String>, BuildError> {
    let name = package.name.to_string();
    let bins: Vec<String> = package
        .targets
        .iter()
        .filter(|t| t.is_kind(TargetKind::Bin))
        .map(|t| t.name.clone())
        .collect();
    match bins.as_slice() {
        [] => Ok(None),
        [only] => Ok(Some(only.clone())),
        several => several
            .iter()
            .find(|b| **b == name)
            .cloned()
            .map(Some)
            .ok_or_else(|| BuildError::SeveralBinaries {
                package: name.clone(),
                names: bins.clone(),
            }),
    }
}

/// `cargo metadata` for `manifest`, run in `dir` in a clean environment;
/// `--no-deps` (manifests only) when `no_deps`, else with the resolved
/// dependency graph (which reads or writes the lockfile).
pub fn metadata(
    dir: &Path,
    manifest: &Path,
    no_deps: bool,
) -> Result<cargo_metadata::Metadata, BuildError> {
    let mut metadata = MetadataCommand::new();
    metadata
        .cargo_path(cargo_program())
        .manifest_path(manifest)
        .current_dir(dir);
    if no_deps {
        metadata.no_deps();
    }
    let mut cmd = metadata.cargo_command();
    clean_env(&mut cmd);
    let metadata_err = |source| BuildError::Metadata {
        manifest: manifest.to_path_buf(),
        source,
    };
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn {
            program: "cargo metadata".to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(metadata_err(cargo_metadata::Error::CargoMetadata {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .ok_or_else(|| metadata_err(cargo_metadata::Error::NoJson))?;
    MetadataCommand::parse(json).map_err(metadata_err)
}

/// The target directory a build from inside a build script must use
/// instead of the workspace's own, if any: when the build script's `OUT_DIR`
/// lies in the guest's target directory, the guest is part of the workspace
/// being built, and a nested cargo on the same directory would wait forever
/// for the lock its parent holds.
pub fn separate_target_dir(out_dir: Option<&Path>, target_dir: &Path) -> Option<PathBuf> {
    out_dir
        .filter(|out| out.starts_with(target_dir))
        .map(|_| target_dir.join("nub-guest"))
}

/// A built binary: its target name and ELF path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The binary target's name.
    pub name: String,
    /// The ELF.
    pub path: PathBuf,
}

/// Builds `selection` in `dir` and returns the binaries cargo reported.
/// Cargo's progress and errors go to stderr as they happen.
pub fn build(
    dir: &Path,
    selection: &Selection,
    target_dir: Option<&Path>,
) -> Result<Vec<Built>, BuildError> {
    build_with(dir, selection, target_dir, Float::Soft)
}

/// [`build`] for guests built `float`, after making sure the toolchain has
/// the float's target ([`target::ensure`]; [`HARD_FLOAT_TARGET`], the
/// host's own, is always there).
pub fn build_with(
    dir: &Path,
    selection: &Selection,
    target_dir: Option<&Path>,
    float: Float,
) -> Result<Vec<Built>, BuildError> {
    let sysroot = target::sysroot(dir)?;
    target::ensure(&sysroot, float.target())?;
    let cmd = build_command_with(
        dir,
        selection,
        target_dir,
        &target::sysroot_rustc(&sysroot),
        float,
    );
    let mut built: Vec<Built> = run(cmd, dir)?
        .into_iter()
        .filter_map(|artifact| {
            let path = artifact.executable?;
            artifact.target.is_kind(TargetKind::Bin).then(|| Built {
                name: artifact.target.name,
                path: path.into_std_path_buf(),
            })
        })
        .collect();
    built.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(built)
}

/// Runs the `cargo build` command `cmd` in `dir` (with
/// `--message-format=json-render-diagnostics`) and returns the artifacts
/// cargo reported. Cargo's progress and errors go to stderr as they happen.
pub fn run(mut cmd: Command, dir: &Path) -> Result<Vec<cargo_metadata::Artifact>, BuildError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| BuildError::Spawn {
            program: cargo_program().display().to_string(),
            source,
        })?;
    let mut artifacts = Vec::new();
    let mut read_error = None;
    if let Some(stdout) = child.stdout.take() {
        for message in Message::parse_stream(BufReader::new(stdout)) {
            match message {
                Ok(Message::CompilerArtifact(artifact)) => artifacts.push(artifact),
                Ok(_) => {}
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
    }
    let status = child.wait().map_err(BuildError::Messages)?;
    if !status.success() {
        return Err(BuildError::CargoFailed {
            dir: dir.to_path_buf(),
            status,
        });
    }
    if let Some(e) = read_error {
        return Err(BuildError::Messages(e));
    }
    Ok(artifacts)
}

/// The `cargo build` command for `selection`, run in `dir` with `rustc`.
pub fn build_command(
    dir: &Path,
    selection: &Selection,
    target_dir: Option<&Path>,
    rustc: &Path,
) -> Command {
    build_command_with(dir, selection, target_dir, rustc, Float::Soft)
}

/// [`build_command`] for guests built `float`.
pub fn build_command_with(
    dir: &Path,
    selection: &Selection,
    target_dir: Option<&Path>,
    rustc: &Path,
    float: Float,
) -> Command {
    let mut cmd = Command::new(cargo_program());
    clean_env(&mut cmd);
    cmd.current_dir(dir).args([
        "build",
        "--release",
        "--target",
        float.target(),
        "--message-format=json-render-diagnostics",
    ]);
    match selection {
        Selection::Workspace => {
            cmd.arg("--workspace");
        }
        Selection::Binary { manifest, bin } => {
            cmd.arg("--manifest-path")
                .arg(manifest)
                .args(["--bin", bin]);
        }
    }
    if let Some(target_dir) = target_dir {
        cmd.arg("--target-dir").arg(target_dir);
    }
    for setting in float.profile() {
        cmd.args(["--config", setting]);
    }
    cmd.env("RUSTC", rustc)
        .env("CARGO_ENCODED_RUSTFLAGS", float.rustflags().join("\x1f"));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn env(cmd: &Command, key: &str) -> Option<String> {
        cmd.get_envs()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
    }

    #[test]
    fn command_carries_nubs_flags() {
        let selection = Selection::Binary {
            manifest: PathBuf::from("/g/Cargo.toml"),
            bin: "g".to_string(),
        };
        let cmd = build_command(
            Path::new("/g"),
            &selection,
            None,
            Path::new("/tc/bin/rustc"),
        );
        let args = args(&cmd);
        for expected in [
            "build",
            "--release",
            "x86_64-unknown-none",
            "--message-format=json-render-diagnostics",
            "/g/Cargo.toml",
            "profile.release.panic=\"abort\"",
            "profile.release.lto=true",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        assert!(!args.iter().any(|a| a == "--target-dir"), "{args:?}");
        assert_eq!(env(&cmd, "RUSTC").as_deref(), Some("/tc/bin/rustc"));
        assert_eq!(
            env(&cmd, "CARGO_ENCODED_RUSTFLAGS").as_deref(),
            Some("-C\x1frelocation-model=static\x1f-C\x1flink-arg=-Tnub-guest.ld")
        );
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/g")));
    }

    #[test]
    fn hard_float_command_targets_the_host_abi_without_c_runtime() {
        let cmd = build_command_with(
            Path::new("/g"),
            &Selection::Workspace,
            None,
            Path::new("rustc"),
            Float::Hard,
        );
        let args = args(&cmd);
        assert!(
            args.iter().any(|a| a == "x86_64-unknown-linux-gnu"),
            "{args:?}"
        );
        assert!(
            args.iter().any(|a| a == "profile.release.opt-level=3"),
            "{args:?}"
        );
        let flags = env(&cmd, "CARGO_ENCODED_RUSTFLAGS").unwrap();
        let flags: Vec<&str> = flags.split('\x1f').collect();
        for expected in [
            "relocation-model=static",
            "link-arg=-Tnub-guest.ld",
            "link-arg=-nostartfiles",
            "link-arg=-nostdlib",
            "--cfg=nub_guest",
        ] {
            assert!(flags.contains(&expected), "{expected} in {flags:?}");
        }
    }

    #[test]
    fn float_comes_from_the_package_metadata() {
        let hard = serde_json::json!({"nub": {"float": "hard"}});
        assert_eq!(Float::from_metadata(&hard), Float::Hard);
        for soft in [
            serde_json::Value::Null,
            serde_json::json!({"nub": {"float": "soft"}}),
            serde_json::json!({"nub": {"float": 1}}),
            serde_json::json!({"other": {}}),
        ] {
            assert_eq!(Float::from_metadata(&soft), Float::Soft, "{soft}");
        }
        let wasm = crate::guests_dir().join("wasm");
        assert_eq!(inspect(&wasm).unwrap().float, Float::Hard);
        let default = crate::guests_dir().join("default");
        assert_eq!(inspect(&default).unwrap().float, Float::Soft);
    }

    #[test]
    fn workspace_build_and_target_dir() {
        let cmd = build_command(
            Path::new("/w"),
            &Selection::Workspace,
            Some(Path::new("/w/target/nub-guest")),
            Path::new("rustc"),
        );
        let args = args(&cmd);
        assert!(args.iter().any(|a| a == "--workspace"), "{args:?}");
        let at = args.iter().position(|a| a == "--target-dir").unwrap();
        assert_eq!(args[at + 1], "/w/target/nub-guest");
    }

    #[test]
    fn nested_build_in_the_same_target_dir_moves_aside() {
        let target = Path::new("/host/target");
        assert_eq!(separate_target_dir(None, target), None);
        assert_eq!(
            separate_target_dir(
                Some(Path::new("/elsewhere/target/debug/build/x/out")),
                target
            ),
            None
        );
        assert_eq!(
            separate_target_dir(Some(Path::new("/host/target/debug/build/x/out")), target),
            Some(PathBuf::from("/host/target/nub-guest"))
        );
    }

    /// A crate directory with this manifest and (optionally) a main.rs.
    fn crate_dir(manifest: &str, main: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let file = if main { "main.rs" } else { "lib.rs" };
        std::fs::write(dir.path().join("src").join(file), "").unwrap();
        dir
    }

    fn kernel_path() -> String {
        crate::repo_root()
            .join("guest-x86/nub-arch-x86")
            .display()
            .to_string()
    }

    #[test]
    fn inspect_names_what_is_missing() {
        let empty = tempfile::tempdir().unwrap();
        let err = inspect(empty.path()).unwrap_err();
        assert!(matches!(err, BuildError::NoManifest { .. }), "{err}");
        assert!(err.to_string().contains("no Cargo.toml"), "{err}");

        let err = inspect(&empty.path().join("nope")).unwrap_err();
        assert!(matches!(err, BuildError::NotADirectory { .. }), "{err}");

        let plain = "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
                     [workspace]\n";
        let dir = crate_dir(plain, true);
        let err = inspect(dir.path()).unwrap_err();
        assert!(matches!(err, BuildError::NoNubDependency { .. }), "{err}");
        assert!(err.to_string().contains("nub-arch-x86"), "{err}");

        let lib = format!(
            "{plain}[dependencies]\nnub-arch-x86 = {{ path = \"{}\" }}\n",
            kernel_path()
        );
        let dir = crate_dir(&lib, false);
        let err = inspect(dir.path()).unwrap_err();
        assert!(matches!(err, BuildError::NoBinary { .. }), "{err}");
        assert!(err.to_string().contains("no binary target"), "{err}");

        let dir = crate_dir("[workspace]\nmembers = []\n", false);
        let err = inspect(dir.path()).unwrap_err();
        assert!(matches!(err, BuildError::NoPackage { .. }), "{err}");

        let dir = crate_dir("[package\nname = ", true);
        let err = inspect(dir.path()).unwrap_err();
        assert!(matches!(err, BuildError::Metadata { .. }), "{err}");
    }

    #[test]
    fn inspect_accepts_a_guest_crate() {
        let manifest = format!(
            "[package]\nname = \"my-guest\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             [workspace]\n[dependencies]\nnub-arch-x86 = {{ path = \"{}\" }}\n",
            kernel_path()
        );
        let dir = crate_dir(&manifest, true);
        let guest = inspect(dir.path()).unwrap();
        assert_eq!(guest.bin, "my-guest");
        assert_eq!(
            guest.manifest,
            dir.path().canonicalize().unwrap().join("Cargo.toml")
        );
        assert_eq!(
            guest.target_dir,
            dir.path().canonicalize().unwrap().join("target")
        );
    }
}
