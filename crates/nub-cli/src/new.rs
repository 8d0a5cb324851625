//! `nub new`: creates a standalone guest crate from the files in
//! `crates/nub-cli/template/`.
//!
//! The crate depends on `nub-arch-x86` by path to a nub checkout (the one
//! this binary was built from unless `--nub-path` names another), builds
//! with `nub build` and passes plain `cargo test` on the host. It is written
//! into a hidden staging directory next to the destination and renamed into
//! place at the end, so a failure leaves nothing half-made.

use std::{
    io::Write,
    path::{Component, Path, PathBuf},
};

use crate::{cli::NewArgs, error::CliError};

/// The template's `Cargo.toml`; `{{name}}` and `{{nub_arch_x86}}` (a TOML
/// string) are filled in.
const CARGO_TOML: &str = include_str!("../template/Cargo.toml.tmpl");
/// The template's `src/main.rs`, used as it is.
const MAIN_RS: &str = include_str!("../template/src/main.rs");
/// The template's `README.md`; `{{name}}` and `{{nub_path}}` are filled in.
const README_MD: &str = include_str!("../template/README.md.tmpl");
/// The template's `.gitignore`.
const GITIGNORE: &str = include_str!("../template/gitignore");

/// Names a package (and its binary) cannot have: Rust keywords, the
/// built-in crates a binary's name would shadow, and the directory names
/// cargo reserves next to binaries.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "build",
    "const",
    "continue",
    "core",
    "crate",
    "deps",
    "do",
    "dyn",
    "else",
    "enum",
    "examples",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "incremental",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// Why `name` cannot name a guest package, if it cannot.
pub fn name_problem(name: &str) -> Option<&'static str> {
    let Some(first) = name.chars().next() else {
        return Some("it is empty");
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Some("use only ASCII letters, digits, `-` and `_`");
    }
    if !first.is_ascii_alphabetic() {
        return Some("start with a letter");
    }
    if RESERVED.contains(&name) {
        return Some("it is a Rust keyword or a name cargo reserves");
    }
    None
}

/// A package name made from a directory name: lower case, runs of other
/// characters turned into `-`, prefixed with `guest-` when the result is
/// empty, starts with a digit or is reserved.
pub fn sanitize(dir_name: &str) -> String {
    let mut name = String::new();
    for c in dir_name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches('-').to_string();
    if name_problem(&name).is_none() {
        return name;
    }
    let prefixed = if name.is_empty() {
        "guest".to_string()
    } else {
        format!("guest-{name}")
    };
    match name_problem(&prefixed) {
        None => prefixed,
        // Only letters, digits, `-` and `_` are left: a prefix makes it valid.
        Some(_) => "guest".to_string(),
    }
}

/// The last normal component of `path` made absolute (`.` and `..` as the
/// last component resolved through the file system when they exist).
fn dir_name(path: &Path) -> Result<String, CliError> {
    let abs = std::path::absolute(path).map_err(|source| CliError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    let resolved = match abs.components().next_back() {
        Some(Component::Normal(_)) => abs,
        _ => abs.canonicalize().map_err(|source| CliError::Create {
            path: path.to_path_buf(),
            source,
        })?,
    };
    resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::BadName {
            name: path.display().to_string(),
            reason: "the path has no directory name to derive a package name from; use --name",
        })
}

/// The nub checkout at `dir`, checked and made absolute: it must hold
/// `guest-x86/nub-arch-x86/Cargo.toml`.
pub fn nub_checkout(dir: &Path) -> Result<PathBuf, CliError> {
    let missing = || CliError::NubCheckout {
        dir: dir.to_path_buf(),
    };
    let root = dir.canonicalize().map_err(|_| missing())?;
    if nub_guest_build::kernel_dir(&root)
        .join("Cargo.toml")
        .is_file()
    {
        Ok(root)
    } else {
        Err(missing())
    }
}

/// The crate's files (path relative to the crate, contents) for package
/// `name` using the nub checkout at `nub_root`.
pub fn render(name: &str, nub_root: &Path) -> Result<Vec<(PathBuf, String)>, CliError> {
    let kernel = nub_guest_build::kernel_dir(nub_root);
    let kernel_str = kernel.to_str().ok_or_else(|| CliError::NubCheckout {
        dir: nub_root.to_path_buf(),
    })?;
    // A TOML basic string, quoted and escaped.
    let kernel_toml = toml::Value::String(kernel_str.to_string()).to_string();
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{nub_arch_x86}}", &kernel_toml)
            .replace("{{nub_path}}", &nub_root.display().to_string())
    };
    Ok(vec![
        (PathBuf::from("Cargo.toml"), fill(CARGO_TOML)),
        (PathBuf::from("src/main.rs"), MAIN_RS.to_string()),
        (PathBuf::from("README.md"), fill(README_MD)),
        (PathBuf::from(".gitignore"), GITIGNORE.to_string()),
    ])
}

/// Writes `files` into a new directory at `dest`, which must not exist or be
/// an empty directory. Missing parent directories are created. On failure
/// nothing is left behind: the staging directory and any parents created
/// are removed.
pub fn create(dest: &Path, files: &[(PathBuf, String)]) -> Result<(), CliError> {
    if dest.exists() {
        if !dest.is_dir() {
            return Err(CliError::Occupied {
                path: dest.to_path_buf(),
                what: "exists and is not a directory",
            });
        }
        let mut entries = std::fs::read_dir(dest).map_err(|source| CliError::Create {
            path: dest.to_path_buf(),
            source,
        })?;
        if entries.next().is_some() {
            return Err(CliError::Occupied {
                path: dest.to_path_buf(),
                what: "is not empty",
            });
        }
    }
    let dest = std::path::absolute(dest).map_err(|source| CliError::Create {
        path: dest.to_path_buf(),
        source,
    })?;
    let parent = dest.parent().unwrap_or(Path::new("/"));
    // The outermost missing ancestor: removing it undoes create_dir_all.
    let first_created = parent
        .ancestors()
        .take_while(|a| !a.exists())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(parent).map_err(|source| CliError::Create {
        path: parent.to_path_buf(),
        source,
    })?;
    let result = stage_and_rename(&dest, parent, files);
    if result.is_err()
        && let Some(created) = first_created
    {
        // Best effort: the error being reported is the one that matters.
        let _ = std::fs::remove_dir_all(created);
    }
    result
}

/// Writes the files into a staging directory in `parent` and renames it to
/// `dest` (which replaces `dest` if it is an empty directory).
fn stage_and_rename(
    dest: &Path,
    parent: &Path,
    files: &[(PathBuf, String)],
) -> Result<(), CliError> {
    let create_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CliError::Create { path, source }
    };
    // mkdir's mode is masked by the umask, so the crate gets the usual
    // permissions rather than a temporary directory's 0700.
    #[cfg(unix)]
    let permissions = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    let mut staging = tempfile::Builder::new()
        .prefix(".nub-new-")
        .permissions(permissions)
        .tempdir_in(parent)
        .map_err(create_err(parent))?;
    for (rel, contents) in files {
        let path = staging.path().join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create_err(dir))?;
        }
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .map_err(create_err(&dest.join(rel)))?;
    }
    // On success the staging directory is the crate; on failure the
    // TempDir's drop removes it.
    std::fs::rename(staging.path(), dest).map_err(create_err(dest))?;
    staging.disable_cleanup(true);
    Ok(())
}

/// Runs `nub new`.
pub fn run(args: &NewArgs) -> Result<(), CliError> {
    let nub_root = nub_checkout(
        &args
            .nub_path
            .clone()
            .unwrap_or_else(nub_guest_build::repo_root),
    )?;
    let name = match &args.name {
        Some(name) => match name_problem(name) {
            None => name.clone(),
            Some(reason) => {
                return Err(CliError::BadName {
                    name: name.clone(),
                    reason,
                });
            }
        },
        None => sanitize(&dir_name(&args.path)?),
    };
    let files = render(&name, &nub_root)?;
    create(&args.path, &files)?;
    let path = args.path.display();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "created guest crate `{name}` in {path} (nub-arch-x86 from {})\n\
         next:\n  \
         nub build {path}\n  \
         nub call --guest {path} 1 --data hi -v\n  \
         (cd {path} && cargo test)",
        nub_root.display()
    )
    .and_then(|()| stdout.flush())
    .map_err(CliError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_directories() {
        assert_eq!(sanitize("my-guest"), "my-guest");
        assert_eq!(sanitize("My Guest!"), "my-guest");
        assert_eq!(sanitize("hello_world"), "hello_world");
        assert_eq!(sanitize("2fast"), "guest-2fast");
        assert_eq!(sanitize("core"), "guest-core");
        assert_eq!(sanitize("..."), "guest");
        assert_eq!(sanitize("grüße"), "gr-e");
        assert_eq!(sanitize(""), "guest");
        for dir in ["x", "test", "a b c", "-x-", "9", "ünï", "fn"] {
            let name = sanitize(dir);
            assert_eq!(name_problem(&name), None, "{dir:?} -> {name:?}");
        }
    }

    #[test]
    fn explicit_names_are_checked() {
        assert_eq!(name_problem("ok-name_2"), None);
        assert!(name_problem("").is_some());
        assert!(name_problem("has space").is_some());
        assert!(name_problem("1abc").is_some());
        assert!(name_problem("-abc").is_some());
        assert!(name_problem("std").is_some());
        assert!(name_problem("build").is_some());
    }

    #[test]
    fn dir_names_resolve_dots() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("some-guest");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(dir_name(&sub).unwrap(), "some-guest");
        assert_eq!(dir_name(&sub.join(".")).unwrap(), "some-guest");
        std::fs::create_dir(sub.join("x")).unwrap();
        assert_eq!(dir_name(&sub.join("x/..")).unwrap(), "some-guest");
        assert_eq!(dir_name(Path::new("/tmp/a/new-one")).unwrap(), "new-one");
    }

    #[test]
    fn rendered_crate_is_complete() {
        let root = nub_checkout(&nub_guest_build::repo_root()).unwrap();
        let files = render("my-guest", &root).unwrap();
        for (path, text) in &files {
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                path.display()
            );
        }
        let manifest = &files
            .iter()
            .find(|(p, _)| p == Path::new("Cargo.toml"))
            .unwrap()
            .1;
        let parsed: toml::Table = manifest.parse().expect("Cargo.toml is TOML");
        assert_eq!(parsed["package"]["name"].as_str(), Some("my-guest"));
        assert_eq!(parsed["bin"][0]["name"].as_str(), Some("my-guest"));
        let kernel = parsed["dependencies"]["nub-arch-x86"]["path"]
            .as_str()
            .unwrap();
        assert!(
            Path::new(kernel).join("Cargo.toml").is_file(),
            "{kernel} is the kernel crate"
        );
        assert!(parsed["dependencies"]["log"].is_table());
        assert!(parsed.contains_key("workspace"), "standalone crate");
        assert_eq!(
            parsed["profile"]["release"]["panic"].as_str(),
            Some("abort")
        );
        assert!(MAIN_RS.contains("log::info!(\"echo: {} bytes\", input.len())"));
        assert!(MAIN_RS.contains("#![cfg_attr(not(test), no_std)]"));
        assert!(MAIN_RS.contains("#[test]"));
    }

    #[test]
    fn paths_with_quotes_stay_valid_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let odd = tmp.path().join("a \"quoted\\\" dir");
        std::fs::create_dir_all(odd.join("guest-x86/nub-arch-x86")).unwrap();
        std::fs::write(odd.join("guest-x86/nub-arch-x86/Cargo.toml"), "").unwrap();
        let root = nub_checkout(&odd).unwrap();
        let files = render("g", &root).unwrap();
        let parsed: toml::Table = files[0].1.parse().expect("valid TOML");
        assert_eq!(
            parsed["dependencies"]["nub-arch-x86"]["path"].as_str(),
            nub_guest_build::kernel_dir(&root).to_str()
        );
    }

    #[test]
    fn checkout_must_hold_the_kernel() {
        let tmp = tempfile::tempdir().unwrap();
        let err = nub_checkout(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("--nub-path"), "{err}");
        assert!(nub_checkout(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn create_writes_everything_or_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let files = vec![
            (PathBuf::from("Cargo.toml"), "x".to_string()),
            (PathBuf::from("src/main.rs"), "y".to_string()),
        ];
        // Into missing parents.
        let dest = tmp.path().join("a/b/guest");
        create(&dest, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("src/main.rs")).unwrap(),
            "y"
        );
        // Into an existing empty directory.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        create(&empty, &files).unwrap();
        assert!(empty.join("Cargo.toml").is_file());
        // Not into a non-empty one, which stays as it was.
        let err = create(&empty, &files).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        // A file that cannot be written: nothing is left, not even the
        // parents created for it.
        let bad = [
            files[0].clone(),
            (PathBuf::from("Cargo.toml/oops"), "z".to_string()),
        ];
        let dest = tmp.path().join("c/d/guest");
        assert!(create(&dest, &bad).is_err());
        assert!(!tmp.path().join("c").exists());
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "empty"], "no staging directory is left");
    }
}
