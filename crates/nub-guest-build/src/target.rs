//! Making sure the toolchain that builds a guest or a wasm program has its
//! target: `x86_64-unknown-none` for soft-float guests ([`crate::GUEST_TARGET`]),
//! `wasm32-wasip1` for WebAssembly programs ([`crate::WASM_TARGET`]). The
//! hard-float guests' target is the host's own, always present.
//!
//! A toolchain file's `targets` are installed only when rustup installs the
//! toolchain itself, and the nested cargo a build runs (`$CARGO`) does not go
//! through rustup's proxy, so nothing else guarantees the target is there.
//! Before every build this module asks the `rustc` the build would use
//! for its sysroot (same directory, same environment), and [`plan`] decides
//! from that sysroot: the target is present; or rustup manages the toolchain
//! and `rustup target add` fixes it (run once, under a lock file, since the
//! build scripts of several crates may get here at the same moment); or the
//! build stops with the command the user has to run. The build then pins
//! `RUSTC` to that sysroot's `rustc`, so the toolchain checked is the one
//! used.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{BuildError, env::clean_env};

/// What to do about a missing target for one toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPlan {
    /// The toolchain has the target: build.
    Present,
    /// rustup manages the toolchain: add the target to it.
    Add {
        /// The rustup toolchain name (for `--toolchain`).
        toolchain: String,
    },
    /// The target is missing and nub cannot add it.
    Missing {
        /// What the user has to do, naming the exact command.
        help: String,
    },
}

/// Whether the toolchain at `sysroot` has `target`: its target libdir
/// holds a `libcore-*.rlib`.
pub fn has_target(sysroot: &Path, target: &str) -> bool {
    let libdir = sysroot.join("lib").join("rustlib").join(target).join("lib");
    let Ok(entries) = std::fs::read_dir(libdir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with("libcore-") && name.ends_with(".rlib"))
    })
}

/// The `rustup target add` command for `target` and `toolchain`.
pub fn add_command(target: &str, toolchain: &str) -> String {
    format!("rustup target add {target} --toolchain {toolchain}")
}

/// The rustup name of the toolchain whose sysroot is `sysroot`, when it is
/// one of the toolchains in `rustup_home/toolchains`: the directory there
/// that is (or links to) the sysroot. A real directory wins over a link to
/// it (`1.95.0-x86_64-…` may link to `stable-x86_64-…`).
pub fn rustup_toolchain_name(sysroot: &Path, rustup_home: &Path) -> Option<String> {
    let sysroot = sysroot.canonicalize().ok()?;
    let toolchains = rustup_home.join("toolchains");
    let mut linked = None;
    for entry in std::fs::read_dir(&toolchains).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        if path.canonicalize().ok().as_deref() != Some(sysroot.as_path()) {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            return Some(name);
        }
        linked.get_or_insert(name);
    }
    linked
}

/// Decides what to do for `target` and the toolchain at `sysroot`.
/// `rustup_home` is rustup's home directory when rustup can be run, `None`
/// otherwise.
pub fn plan(sysroot: &Path, target: &str, rustup_home: Option<&Path>) -> TargetPlan {
    if has_target(sysroot, target) {
        return TargetPlan::Present;
    }
    match rustup_home {
        Some(home) => match rustup_toolchain_name(sysroot, home) {
            Some(toolchain) => TargetPlan::Add { toolchain },
            None => TargetPlan::Missing {
                help: format!(
                    "rustup does not manage this toolchain, so nub cannot add the target; \
                     build with a rustup toolchain (then `rustup target add {target}`) \
                     or install the target's standard library into {}",
                    sysroot.join("lib").join("rustlib").display()
                ),
            },
        },
        None => TargetPlan::Missing {
            help: format!(
                "rustup is not available, so nub cannot add it; install rustup \
                 (https://rustup.rs) and run `rustup target add {target}`, \
                 or install the target's standard library into {}",
                sysroot.join("lib").join("rustlib").display()
            ),
        },
    }
}

/// The sysroot of the `rustc` a build in `dir` would use: `rustc --print
/// sysroot` run in `dir` with the build's environment (rustup's proxy picks
/// the toolchain from `dir`'s toolchain file or `RUSTUP_TOOLCHAIN`).
pub fn sysroot(dir: &Path) -> Result<PathBuf, BuildError> {
    let rustc = rustc_program();
    let mut cmd = Command::new(&rustc);
    clean_env(&mut cmd);
    let output = cmd
        .current_dir(dir)
        .args(["--print", "sysroot"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn {
            program: rustc.display().to_string(),
            source,
        })?;
    let toolchain_err = |detail: String| BuildError::Toolchain {
        dir: dir.to_path_buf(),
        detail,
    };
    if !output.status.success() {
        return Err(toolchain_err(format!(
            "`{} --print sysroot` failed ({}): {}",
            rustc.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| toolchain_err("the sysroot path is not UTF-8".to_string()))?;
    let sysroot = PathBuf::from(text.trim());
    if !sysroot.is_dir() {
        return Err(toolchain_err(format!(
            "rustc printed sysroot {}, which is not a directory",
            sysroot.display()
        )));
    }
    Ok(sysroot)
}

/// The `rustc` of the toolchain at `sysroot`; what `RUSTC` is pinned to.
pub fn sysroot_rustc(sysroot: &Path) -> PathBuf {
    sysroot.join("bin").join("rustc")
}

/// `rustc` from `PATH`, or next to `$CARGO` when `PATH` has none.
fn rustc_program() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("rustc").is_file()));
    if !on_path
        && let Some(cargo) = std::env::var_os("CARGO")
        && let Some(dir) = Path::new(&cargo).parent()
        && dir.join("rustc").is_file()
    {
        return dir.join("rustc");
    }
    PathBuf::from("rustc")
}

/// rustup's home when rustup can be run: `$RUSTUP_HOME`, else
/// `$HOME/.rustup`.
fn rustup_home() -> Option<PathBuf> {
    let runs = Command::new("rustup")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        return None;
    }
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|home| home.join(".rustup")))
}

/// Makes sure the toolchain at `sysroot` has `target`, adding it with
/// rustup when it is missing (saying so on stderr).
pub fn ensure(sysroot: &Path, target: &str) -> Result<(), BuildError> {
    if has_target(sysroot, target) {
        return Ok(());
    }
    let missing = |help| BuildError::TargetMissing {
        sysroot: sysroot.to_path_buf(),
        target: target.to_string(),
        help,
    };
    let toolchain = match plan(sysroot, target, rustup_home().as_deref()) {
        TargetPlan::Present => return Ok(()),
        TargetPlan::Missing { help } => return Err(missing(help)),
        TargetPlan::Add { toolchain } => toolchain,
    };
    // Build scripts of several crates may get here at once; rustup does not
    // like concurrent installs into one toolchain (whatever the targets).
    // The first one adds the target, the others find it present once they
    // hold the lock.
    let lock_path = std::env::temp_dir().join("nub-guest-target.lock");
    let io_err = |source| BuildError::Io {
        path: lock_path.clone(),
        source,
    };
    let lock = File::create(&lock_path).map_err(io_err)?;
    lock.lock().map_err(io_err)?;
    if has_target(sysroot, target) {
        return Ok(());
    }
    let command = add_command(target, &toolchain);
    eprintln!("nub: the toolchain {toolchain} has no {target} target; running `{command}`");
    let status = Command::new("rustup")
        .args(["target", "add", target, "--toolchain", &toolchain])
        .stdin(Stdio::null())
        // rustup's progress goes to stderr; keep stdout free for the caller.
        .stdout(Stdio::null())
        .status()
        .map_err(|source| BuildError::Spawn {
            program: "rustup".to_string(),
            source,
        })?;
    if !status.success() {
        return Err(BuildError::TargetAddFailed { command, status });
    }
    if !has_target(sysroot, target) {
        return Err(missing(format!(
            "`{command}` succeeded but the target is still missing"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GUEST_TARGET, WASM_TARGET};

    /// A fake toolchain directory, with or without the guest target.
    fn fake_sysroot(parent: &Path, name: &str, with_target: bool) -> PathBuf {
        fake_sysroot_for(parent, name, with_target.then_some(GUEST_TARGET))
    }

    /// A fake toolchain directory with the host's target and `target`.
    fn fake_sysroot_for(parent: &Path, name: &str, target: Option<&str>) -> PathBuf {
        let root = parent.join(name);
        let host_lib = root.join("lib/rustlib/x86_64-unknown-linux-gnu/lib");
        std::fs::create_dir_all(&host_lib).unwrap();
        std::fs::write(host_lib.join("libcore-0123abcd.rlib"), b"").unwrap();
        if let Some(target) = target {
            let lib = root.join("lib/rustlib").join(target).join("lib");
            std::fs::create_dir_all(&lib).unwrap();
            std::fs::write(lib.join("libcore-89abcdef.rlib"), b"").unwrap();
        }
        root
    }

    #[test]
    fn target_detection_needs_libcore() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(has_target(
            &fake_sysroot(tmp.path(), "with", true),
            GUEST_TARGET
        ));
        assert!(!has_target(
            &fake_sysroot(tmp.path(), "without", false),
            GUEST_TARGET
        ));
        // The directory alone (an interrupted install) is not enough.
        let partial = fake_sysroot(tmp.path(), "partial", false);
        let lib = partial.join("lib/rustlib").join(GUEST_TARGET).join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("liballoc-1.rlib"), b"").unwrap();
        assert!(!has_target(&partial, GUEST_TARGET));
        assert!(!has_target(&tmp.path().join("nonexistent"), GUEST_TARGET));
    }

    #[test]
    fn present_target_needs_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rustup");
        let sysroot = fake_sysroot(&home.join("toolchains"), "stable-x86_64", true);
        assert_eq!(
            plan(&sysroot, GUEST_TARGET, Some(&home)),
            TargetPlan::Present
        );
        assert_eq!(plan(&sysroot, GUEST_TARGET, None), TargetPlan::Present);
    }

    #[test]
    fn rustup_toolchain_without_target_is_added() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rustup");
        let sysroot = fake_sysroot(&home.join("toolchains"), "1.95.0-x86_64", false);
        assert_eq!(
            plan(&sysroot, GUEST_TARGET, Some(&home)),
            TargetPlan::Add {
                toolchain: "1.95.0-x86_64".to_string()
            }
        );
        assert_eq!(
            add_command(GUEST_TARGET, "1.95.0-x86_64"),
            "rustup target add x86_64-unknown-none --toolchain 1.95.0-x86_64"
        );
    }

    #[test]
    fn linked_toolchain_names_prefer_the_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rustup");
        let toolchains = home.join("toolchains");
        let sysroot = fake_sysroot(&toolchains, "stable-x86_64", false);
        std::os::unix::fs::symlink(&sysroot, toolchains.join("1.95.0-x86_64")).unwrap();
        std::os::unix::fs::symlink(&sysroot, toolchains.join("a-link")).unwrap();
        assert_eq!(
            rustup_toolchain_name(&toolchains.join("1.95.0-x86_64"), &home).as_deref(),
            Some("stable-x86_64")
        );
        // A toolchain rustup knows only by a link (`rustup toolchain link`).
        let custom = fake_sysroot(tmp.path(), "custom", false);
        std::os::unix::fs::symlink(&custom, toolchains.join("mine")).unwrap();
        assert_eq!(
            plan(&custom, GUEST_TARGET, Some(&home)),
            TargetPlan::Add {
                toolchain: "mine".to_string()
            }
        );
    }

    #[test]
    fn toolchain_outside_rustup_names_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rustup");
        std::fs::create_dir_all(home.join("toolchains")).unwrap();
        let sysroot = fake_sysroot(tmp.path(), "usr", false);
        let TargetPlan::Missing { help } = plan(&sysroot, GUEST_TARGET, Some(&home)) else {
            panic!("a toolchain rustup does not manage cannot be fixed by rustup");
        };
        assert!(
            help.contains("rustup target add x86_64-unknown-none"),
            "{help}"
        );
        assert!(help.contains(&sysroot.display().to_string()), "{help}");
    }

    #[test]
    fn without_rustup_the_error_names_the_command() {
        let tmp = tempfile::tempdir().unwrap();
        let sysroot = fake_sysroot(tmp.path(), "stable", false);
        let TargetPlan::Missing { help } = plan(&sysroot, GUEST_TARGET, None) else {
            panic!("without rustup nothing can be added");
        };
        assert!(help.contains("rustup is not available"), "{help}");
        assert!(
            help.contains("`rustup target add x86_64-unknown-none`"),
            "{help}"
        );
        let err = BuildError::TargetMissing {
            sysroot,
            target: GUEST_TARGET.to_string(),
            help,
        };
        assert!(
            err.to_string()
                .contains("has no x86_64-unknown-none target"),
            "{err}"
        );
    }

    #[test]
    fn each_target_is_planned_on_its_own() {
        // A toolchain with the guest target but not the wasm one: only the
        // wasm target is added, and the command names it.
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("rustup");
        let sysroot = fake_sysroot(&home.join("toolchains"), "1.95.0-x86_64", true);
        assert_eq!(
            plan(&sysroot, GUEST_TARGET, Some(&home)),
            TargetPlan::Present
        );
        assert_eq!(
            plan(&sysroot, WASM_TARGET, Some(&home)),
            TargetPlan::Add {
                toolchain: "1.95.0-x86_64".to_string()
            }
        );
        assert_eq!(
            add_command(WASM_TARGET, "1.95.0-x86_64"),
            "rustup target add wasm32-wasip1 --toolchain 1.95.0-x86_64"
        );
        let wasm = fake_sysroot_for(&home.join("toolchains"), "nightly", Some(WASM_TARGET));
        assert!(has_target(&wasm, WASM_TARGET));
        assert!(!has_target(&wasm, GUEST_TARGET));
        // The host's own target (hard-float guests) is always there.
        assert!(has_target(&wasm, "x86_64-unknown-linux-gnu"));
        assert_eq!(plan(&wasm, WASM_TARGET, None), TargetPlan::Present);
        let TargetPlan::Missing { help } = plan(&sysroot, WASM_TARGET, None) else {
            panic!("without rustup nothing can be added");
        };
        assert!(help.contains("`rustup target add wasm32-wasip1`"), "{help}");
    }

    #[test]
    fn this_toolchain_resolves() {
        // The toolchain running the tests builds the guests too: it has a
        // sysroot, and its rustc exists.
        let root = sysroot(&crate::guests_dir()).unwrap();
        assert!(sysroot_rustc(&root).is_file(), "{}", root.display());
    }
}
