//! `nub new`, `nub build` and `nub call --guest <crate dir>` on guest crates
//! outside nub's guest workspace. The calls boot real guests and need
//! `/dev/kvm`; without it they fail.
//!
//! Building a fresh crate costs tens of seconds (its dependencies come from
//! crates.io), so every test that needs a built guest shares one crate under
//! `CARGO_TARGET_TMPDIR`: each test process takes a lock, writes the crate
//! with `nub new` (only the files that changed, so cargo's fingerprints
//! hold), and builds it with `nub build`, which is a no-op after the first
//! time. The crate with a compile error shares that crate's target
//! directory and lockfile, so only its own code compiles.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The files `nub new` writes.
const CRATE_FILES: [&str; 4] = ["Cargo.toml", "src/main.rs", "README.md", ".gitignore"];

mod common;

use common::{nub, nub_ok, stderr, stdout};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// The shared, built guest crate.
struct Shared {
    /// Parent of the shared crates.
    root: PathBuf,
    /// The crate `nub new` made.
    dir: PathBuf,
    /// Its ELF, as `nub build` reported it.
    elf: PathBuf,
}

/// Writes `contents` to `path` unless it already holds exactly that.
fn write_if_changed(path: &Path, contents: &[u8]) {
    if std::fs::read(path).ok().as_deref() != Some(contents) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// The shared crate: made with `nub new`, built with `nub build`.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nub-cli-guest-crates");
        std::fs::create_dir_all(&root).unwrap();
        let lock = File::create(root.join("lock")).unwrap();
        lock.lock().unwrap();
        // A fresh crate from `nub new`, copied over the shared one.
        let fresh = root.join(format!("fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&fresh);
        let printed = nub_ok(&["new", path_str(&fresh), "--name", "cli-guest"]);
        assert!(printed.contains("nub build"), "next steps: {printed}");
        let dir = root.join("cli-guest");
        for file in CRATE_FILES {
            let contents = std::fs::read(fresh.join(file)).expect("nub new wrote it");
            write_if_changed(&dir.join(file), &contents);
        }
        std::fs::remove_dir_all(&fresh).unwrap();
        let out = nub_ok(&["build", path_str(&dir)]);
        let last = out.lines().last().expect("nub build prints the ELF path");
        let elf = PathBuf::from(last);
        Shared { root, dir, elf }
    })
}

#[test]
fn new_crate_builds_to_an_elf() {
    let shared = shared();
    let bytes = std::fs::read(&shared.elf).expect("the printed ELF exists");
    assert!(bytes.starts_with(b"\x7fELF"), "{}", shared.elf.display());
    assert!(
        shared
            .elf
            .ends_with("x86_64-unknown-none/release/cli-guest")
    );
    let manifest = std::fs::read_to_string(shared.dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("guest-x86/nub-arch-x86"), "{manifest}");
}

#[test]
fn call_builds_and_runs_a_guest_crate() {
    let dir = path_str(&shared().dir);
    let out = nub(&["call", "--guest", dir, "1", "--data", "hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n", "cargo's output stays on stderr");
    assert!(
        !stderr(&out).contains("echo: 2 bytes"),
        "no guest records without -v: {}",
        stderr(&out)
    );
    // An ELF works the same, and `info` takes a crate directory too.
    let elf = path_str(&shared().elf);
    assert_eq!(nub_ok(&["call", "--guest", elf, "1", "--data", "x"]), "x\n");
    assert!(nub_ok(&["info", "--guest", dir]).contains(elf));
}

#[test]
fn verbose_call_shows_the_guests_log() {
    let dir = path_str(&shared().dir);
    let out = nub(&["call", "--guest", dir, "1", "--data", "hi", "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("echo: 2 bytes"))
        .unwrap_or_else(|| panic!("no guest record on stderr:\n{err}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("nub::guest"), "{line}");
}

#[test]
fn new_crate_passes_cargo_test_on_the_host() {
    let shared = shared();
    // The crate's own tests, as a user runs them: plain `cargo test`,
    // without anything this test process inherited from its cargo.
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    nub_guest_build::env::clean_env(&mut cmd);
    let out = cmd
        .current_dir(&shared.dir)
        .arg("test")
        .output()
        .expect("run cargo test");
    assert!(out.status.success(), "cargo test failed:\n{}", stderr(&out));
    let report = stdout(&out);
    let passed: u32 = report
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u32>().ok())
        .sum();
    assert!(passed >= 3, "the template's tests ran:\n{report}");
    assert!(
        report.contains("test tests::greet_answers_typed_and_refuses_an_empty_name ... ok"),
        "the typed function's test ran:\n{report}"
    );
}

#[test]
fn new_refuses_a_non_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let out = nub(&["new", path_str(tmp.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing was added");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn new_names_the_package_after_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My Guest");
    nub_ok(&["new", path_str(&dir)]);
    for file in CRATE_FILES {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"my-guest\""), "{manifest}");
    // A bad --nub-path or --name fails before anything is written.
    let other = tmp.path().join("other");
    let out = nub(&["new", path_str(&other), "--nub-path", path_str(tmp.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no nub checkout"), "{}", stderr(&out));
    let out = nub(&["new", path_str(&other), "--name", "9lives"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("start with a letter"),
        "{}",
        stderr(&out)
    );
    assert!(!other.exists());
}

#[test]
fn build_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = nub(&["build", path_str(tmp.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no Cargo.toml"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    std::fs::write(
        tmp.path().join("Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("src")).unwrap();
    std::fs::write(tmp.path().join("src/main.rs"), "fn main() {}\n").unwrap();
    let out = nub(&["build", path_str(tmp.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no dependency on nub-arch-x86"),
        "{}",
        stderr(&out)
    );

    // `--guest` checks the directory the same way.
    let out = nub(&["call", "--guest", path_str(tmp.path()), "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nub-arch-x86"), "{}", stderr(&out));
}

#[test]
fn compile_errors_come_from_cargo() {
    let shared = shared();
    let broken = shared.root.join("broken-guest");
    let manifest = std::fs::read_to_string(shared.dir.join("Cargo.toml"))
        .unwrap()
        .replace("cli-guest", "broken-guest");
    write_if_changed(&broken.join("Cargo.toml"), manifest.as_bytes());
    // Same dependency versions and target directory as the shared crate:
    // only the broken code itself has to compile.
    let lock = std::fs::read_to_string(shared.dir.join("Cargo.lock"))
        .unwrap()
        .replace("cli-guest", "broken-guest");
    write_if_changed(&broken.join("Cargo.lock"), lock.as_bytes());
    let config = format!(
        "[build]\ntarget-dir = \"{}\"\n",
        shared.dir.join("target").display()
    );
    write_if_changed(&broken.join(".cargo/config.toml"), config.as_bytes());
    let main = std::fs::read_to_string(shared.dir.join("src/main.rs"))
        .unwrap()
        .replace("out.write(input)", "out.write(not_a_variable)");
    write_if_changed(&broken.join("src/main.rs"), main.as_bytes());

    let out = nub(&["build", path_str(&broken)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("error[E0425]"), "cargo's error:\n{err}");
    assert!(err.contains("not_a_variable"), "{err}");
    assert!(err.contains("cargo's errors are above"), "{err}");
    assert!(out.stdout.is_empty(), "no path on a failed build");
}

#[test]
fn new_host_crate_passes_plain_cargo_test() {
    // Outside the checkout: `--nub-path` asks for a path dependency (a git
    // dependency on an origin would need the network).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-host");
    let checkout = nub_guest_build::repo_root();
    let printed = nub_ok(&[
        "new",
        "--host",
        path_str(&dir),
        "--nub-path",
        path_str(&checkout),
    ]);
    assert!(printed.contains("cargo test"), "{printed}");
    for file in [
        "Cargo.toml",
        "build.rs",
        "src/lib.rs",
        "src/main.rs",
        "tests/guest.rs",
        "README.md",
        "interface/Cargo.toml",
        "interface/src/lib.rs",
        "guest/Cargo.toml",
        "guest/src/main.rs",
        "guest/README.md",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    // Plain `cargo test`, as a user runs it, in the host crate and in its
    // guest; the target directories are shared between runs of this test
    // only so that nub's crates compile once.
    let tmp_target = |name: &str| Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cargo_test = |dir: &Path, target: &Path| {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        nub_guest_build::env::clean_env(&mut cmd);
        let out = cmd
            .current_dir(dir)
            .arg("test")
            .env("CARGO_TARGET_DIR", target)
            .output()
            .expect("run cargo test");
        assert!(
            out.status.success(),
            "cargo test failed in {}:\n{}",
            dir.display(),
            stderr(&out)
        );
        stdout(&out)
    };
    let report = cargo_test(&dir, &tmp_target("nub-cli-host-crate-target"));
    assert!(
        report.contains("test greet_answers_and_its_error_arrives_typed ... ok"),
        "the host crate's integration test ran:\n{report}"
    );
    let report = cargo_test(&dir.join("guest"), &tmp_target("nub-cli-host-guest-target"));
    assert!(
        report.contains("test tests::greet_greets_and_refuses_an_empty_name ... ok"),
        "the guest's unit test ran:\n{report}"
    );
}
