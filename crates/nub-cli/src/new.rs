//! `nub new`: creates a standalone guest crate from the files in
//! `crates/nub-cli/template/`, or with `--host` a host crate (from
//! `template/host/`: a build.rs calling `nub_guest_build::embed`, a library
//! booting the embedded guest with a typed wrapper, a main and an
//! integration test calling it) with the interface it shares with its
//! guest in `interface/` and the guest crate in `guest/`.
//!
//! The crate depends on `nub-arch-x86` from a nub checkout (the one this
//! binary was built from unless `--nub-path` names another), builds with
//! `nub build` and passes plain `cargo test` on the host. It is written
//! into a hidden staging directory next to the destination and renamed into
//! place at the end, so a failure leaves nothing half-made.
//!
//! The dependency is written so that it survives a move ([`choose_source`]):
//! a path relative to the new crate when the crate sits inside the
//! checkout's parent directory (the checkout and the crate move together),
//! else a git dependency on the checkout's `origin` when it has a remote
//! one, else the checkout's absolute path, with a warning. `--nub-path`
//! asks for a path: relative under the same condition, else absolute
//! without a warning.

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
/// The host template's `Cargo.toml`; `{{name}}`, `{{nub_sandbox}}` and
/// `{{nub_guest_build}}` (TOML inline tables) are filled in.
const HOST_CARGO_TOML: &str = include_str!("../template/host/Cargo.toml.tmpl");
/// The host template's `build.rs`, used as it is.
const HOST_BUILD_RS: &str = include_str!("../template/host/build.rs");
/// The host template's `src/lib.rs`; `{{interface_crate}}` is filled in.
const HOST_LIB_RS: &str = include_str!("../template/host/src/lib.rs.tmpl");
/// The host template's `src/main.rs`; `{{crate}}` is filled in.
const HOST_MAIN_RS: &str = include_str!("../template/host/src/main.rs.tmpl");
/// The host template's integration test; `{{crate}}` is filled in.
const HOST_TEST_RS: &str = include_str!("../template/host/tests/guest.rs.tmpl");
/// The host template's `README.md`; `{{name}}` and `{{nub_source}}` are
/// filled in.
const HOST_README_MD: &str = include_str!("../template/host/README.md.tmpl");
/// The host template's interface crate: `Cargo.toml` (`{{interface}}` and
/// `{{nub_interface}}` filled in) and `src/lib.rs` (used as it is).
const INTERFACE_CARGO_TOML: &str = include_str!("../template/host/interface/Cargo.toml.tmpl");
/// See [`INTERFACE_CARGO_TOML`].
const INTERFACE_LIB_RS: &str = include_str!("../template/host/interface/src/lib.rs");
/// The host template's guest crate: `Cargo.toml` (`{{name}}`,
/// `{{interface}}` and `{{nub_arch_x86}}` filled in), `src/main.rs`
/// (`{{interface_crate}}`) and `README.md` (`{{name}}`, `{{nub_source}}`).
const HOST_GUEST_CARGO_TOML: &str = include_str!("../template/host/guest/Cargo.toml.tmpl");
/// See [`HOST_GUEST_CARGO_TOML`].
const HOST_GUEST_MAIN_RS: &str = include_str!("../template/host/guest/src/main.rs.tmpl");
/// See [`HOST_GUEST_CARGO_TOML`].
const HOST_GUEST_README_MD: &str = include_str!("../template/host/guest/README.md.tmpl");
/// Where `nub new --host` puts the guest crate, inside the host crate.
const HOST_GUEST_DIR: &str = "guest";
/// Where `nub new --host` puts the interface crate, inside the host crate.
const HOST_INTERFACE_DIR: &str = "interface";

/// The guest kernel crate's directory inside a nub checkout.
const KERNEL_MEMBER: &str = "guest-x86/nub-arch-x86";

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

/// Where a new crate gets nub's crates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NubSource {
    /// The checkout at `root` (absolute), by a path relative to each new
    /// crate's directory.
    Relative {
        /// The checkout.
        root: PathBuf,
    },
    /// The git repository at `url` (the checkout's `origin`).
    Git {
        /// A URL cargo accepts.
        url: String,
    },
    /// The checkout at `root`, by its absolute path.
    Absolute {
        /// The checkout.
        root: PathBuf,
        /// Whether `--nub-path` asked for it (no warning then).
        asked: bool,
    },
}

impl NubSource {
    /// The dependency on the package at `member` (relative to the checkout,
    /// e.g. `guest-x86/nub-arch-x86`) as a TOML inline table, for a crate in
    /// `crate_dir` (absolute, with symlinks resolved as far as it exists).
    pub fn dependency(&self, crate_dir: &Path, member: &str) -> Result<String, CliError> {
        let path = match self {
            Self::Git { url } => {
                return Ok(format!("{{ git = {} }}", toml_string(url)));
            }
            Self::Relative { root } => relative_path(crate_dir, &root.join(member))
                .ok_or_else(|| CliError::NubCheckout { dir: root.clone() })?,
            Self::Absolute { root, .. } => root.join(member),
        };
        let path = path
            .to_str()
            .ok_or_else(|| CliError::NubCheckout { dir: path.clone() })?;
        Ok(format!("{{ path = {} }}", toml_string(path)))
    }

    /// How the crate's README names the source.
    pub fn describe(&self, crate_dir: &Path) -> String {
        match self {
            Self::Relative { root } => format!(
                "the nub checkout at `{}` (a path relative to this crate: move the two together)",
                relative_path(crate_dir, root)
                    .unwrap_or_else(|| root.clone())
                    .display()
            ),
            Self::Git { url } => format!("nub's git repository `{url}` (cargo fetches it)"),
            Self::Absolute { root, .. } => format!("the nub checkout at `{}`", root.display()),
        }
    }
}

/// A TOML basic string, quoted and escaped.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The path from directory `from` to `to`, both absolute and normalized
/// (no `.` or `..`): as many `..` as `from` has components beyond the two
/// paths' common prefix, then the rest of `to`. `None` when they share no
/// prefix (different Windows prefixes) or a path is relative.
pub fn relative_path(from: &Path, to: &Path) -> Option<PathBuf> {
    if !from.is_absolute() || !to.is_absolute() {
        return None;
    }
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c.as_os_str());
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    Some(rel)
}

/// `path` made absolute with symlinks resolved as far as it exists: the
/// deepest existing ancestor canonicalized, the missing rest appended with
/// `.` dropped and `..` applied lexically.
pub fn resolve(path: &Path) -> Result<PathBuf, CliError> {
    let create_err = |source| CliError::Create {
        path: path.to_path_buf(),
        source,
    };
    let abs = std::path::absolute(path).map_err(create_err)?;
    let mut existing = abs.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                missing.push(last);
                existing = parent;
            }
            _ => break,
        }
    }
    let mut resolved = existing.canonicalize().map_err(create_err)?;
    for c in missing.into_iter().rev() {
        match c {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir => {}
            other => resolved.push(other.as_os_str()),
        }
    }
    Ok(resolved)
}

/// A remote git URL in a form cargo accepts, from what `git remote get-url`
/// printed: `scheme://...` as it is (not `file://`), scp-like
/// `user@host:path` as `ssh://user@host/path`; a local path is no remote
/// (a dependency on it would not survive a move either).
pub fn remote_url(origin: &str) -> Option<String> {
    let origin = origin.trim();
    if origin.is_empty() || origin.starts_with("file://") {
        return None;
    }
    if origin.contains("://") {
        return Some(origin.to_string());
    }
    // scp-like syntax: a colon before any slash, and a host before it.
    let (host, path) = origin.split_once(':')?;
    if host.is_empty() || host.contains('/') || path.is_empty() {
        return None;
    }
    Some(format!("ssh://{host}/{}", path.trim_start_matches('/')))
}

/// The `origin` remote of the git checkout at `root`, if git runs and the
/// checkout has one.
fn git_origin(root: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["remote", "get-url", "origin"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// How a crate at `crate_dir` (resolved, see [`resolve`]) depends on the
/// checkout at `root` (canonical): relative when the crate lies inside the
/// checkout's parent directory; else, unless `asked` (`--nub-path`), a git
/// dependency on `origin` when it is remote; else absolute.
pub fn choose_source(
    root: &Path,
    crate_dir: &Path,
    asked: bool,
    origin: Option<&str>,
) -> NubSource {
    let tree = root.parent().unwrap_or(root);
    if crate_dir.starts_with(tree) && relative_path(crate_dir, root).is_some() {
        return NubSource::Relative {
            root: root.to_path_buf(),
        };
    }
    if !asked && let Some(url) = origin.and_then(remote_url) {
        return NubSource::Git { url };
    }
    NubSource::Absolute {
        root: root.to_path_buf(),
        asked,
    }
}

/// The crate's files (path relative to the crate, contents) for package
/// `name` in `crate_dir` (resolved, see [`resolve`]) getting nub from
/// `source`.
pub fn render(
    name: &str,
    source: &NubSource,
    crate_dir: &Path,
) -> Result<Vec<(PathBuf, String)>, CliError> {
    let kernel_toml = source.dependency(crate_dir, KERNEL_MEMBER)?;
    let described = source.describe(crate_dir);
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{nub_arch_x86}}", &kernel_toml)
            .replace("{{nub_source}}", &described)
    };
    Ok(vec![
        (PathBuf::from("Cargo.toml"), fill(CARGO_TOML)),
        (PathBuf::from("src/main.rs"), MAIN_RS.to_string()),
        (PathBuf::from("README.md"), fill(README_MD)),
        (PathBuf::from(".gitignore"), GITIGNORE.to_string()),
    ])
}

/// The files of a host crate `name` in `crate_dir` (resolved, see
/// [`resolve`]), of the interface crate `<name>-interface` it shares with
/// its guest in `interface/`, and of its guest crate `<name>-guest` in
/// `guest/`, getting nub from `source`.
pub fn render_host(
    name: &str,
    source: &NubSource,
    crate_dir: &Path,
) -> Result<Vec<(PathBuf, String)>, CliError> {
    let sandbox = source.dependency(crate_dir, "crates/nub-sandbox")?;
    let guest_build = source.dependency(crate_dir, "crates/nub-guest-build")?;
    let interface_dep =
        source.dependency(&crate_dir.join(HOST_INTERFACE_DIR), "crates/nub-interface")?;
    let guest_dir = crate_dir.join(HOST_GUEST_DIR);
    let kernel = source.dependency(&guest_dir, KERNEL_MEMBER)?;
    let interface = format!("{name}-interface");
    let fill = |template: &str, dir: &Path| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{interface}}", &interface)
            .replace("{{interface_crate}}", &interface.replace('-', "_"))
            .replace("{{nub_sandbox}}", &sandbox)
            .replace("{{nub_guest_build}}", &guest_build)
            .replace("{{nub_interface}}", &interface_dep)
            .replace("{{nub_arch_x86}}", &kernel)
            .replace("{{nub_source}}", &source.describe(dir))
    };
    let host = |template| fill(template, crate_dir);
    let guest = |template| fill(template, &guest_dir);
    let in_dir = |dir: &str, file: &str| Path::new(dir).join(file);
    Ok(vec![
        (PathBuf::from("Cargo.toml"), host(HOST_CARGO_TOML)),
        (PathBuf::from("build.rs"), HOST_BUILD_RS.to_string()),
        (PathBuf::from("src/lib.rs"), host(HOST_LIB_RS)),
        (PathBuf::from("src/main.rs"), host(HOST_MAIN_RS)),
        (PathBuf::from("tests/guest.rs"), host(HOST_TEST_RS)),
        (PathBuf::from("README.md"), host(HOST_README_MD)),
        (PathBuf::from(".gitignore"), GITIGNORE.to_string()),
        (
            in_dir(HOST_INTERFACE_DIR, "Cargo.toml"),
            host(INTERFACE_CARGO_TOML),
        ),
        (
            in_dir(HOST_INTERFACE_DIR, "src/lib.rs"),
            INTERFACE_LIB_RS.to_string(),
        ),
        (
            in_dir(HOST_GUEST_DIR, "Cargo.toml"),
            guest(HOST_GUEST_CARGO_TOML),
        ),
        (
            in_dir(HOST_GUEST_DIR, "src/main.rs"),
            guest(HOST_GUEST_MAIN_RS),
        ),
        (
            in_dir(HOST_GUEST_DIR, "README.md"),
            guest(HOST_GUEST_README_MD),
        ),
        (in_dir(HOST_GUEST_DIR, ".gitignore"), GITIGNORE.to_string()),
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

/// How the hints name this program: `nub` when the `nub` found on `PATH`
/// is this very binary, else the path it was run from.
fn program_name() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) else {
        return "nub".to_string();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .filter_map(|dir| dir.join("nub").canonicalize().ok())
            .next()
            .is_some_and(|found| found == exe)
    });
    if on_path {
        "nub".to_string()
    } else {
        exe.display().to_string()
    }
}

/// Runs `nub new`.
pub fn run(args: &NewArgs) -> Result<(), CliError> {
    let nub_root = nub_checkout(
        &args
            .nub_path
            .clone()
            .unwrap_or_else(nub_guest_build::repo_root),
    )?;
    let crate_dir = resolve(&args.path)?;
    let asked = args.nub_path.is_some();
    let origin = if asked { None } else { git_origin(&nub_root) };
    let source = choose_source(&nub_root, &crate_dir, asked, origin.as_deref());
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
    if args.host {
        for derived in [format!("{name}-guest"), format!("{name}-interface")] {
            if let Some(reason) = name_problem(&derived) {
                return Err(CliError::BadName { name, reason });
            }
        }
        let files = render_host(&name, &source, &crate_dir)?;
        create(&args.path, &files)?;
        warn_if_absolute(&source)?;
        let path = args.path.display();
        let mut stdout = std::io::stdout().lock();
        return writeln!(
            stdout,
            "created host crate `{name}` in {path}, the interface it shares with its guest \
             `{name}-interface` in {path}/{HOST_INTERFACE_DIR} and the guest `{name}-guest` in \
             {path}/{HOST_GUEST_DIR} (nub from {})\n\
             next:\n  \
             (cd {path} && cargo test)          # builds the guest, boots it, calls it\n  \
             (cd {path} && cargo run -- world)  # prints Hello, world!\n  \
             (cd {path}/{HOST_GUEST_DIR} && cargo test)    # the guest's functions on the host",
            source.describe(&crate_dir)
        )
        .and_then(|()| stdout.flush())
        .map_err(CliError::Write);
    }
    let files = render(&name, &source, &crate_dir)?;
    create(&args.path, &files)?;
    warn_if_absolute(&source)?;
    let path = args.path.display();
    let nub = program_name();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "created guest crate `{name}` in {path} (nub-arch-x86 from {})\n\
         next:\n  \
         {nub} build {path}\n  \
         {nub} call --guest {path} 1 --data hi -v\n  \
         (cd {path} && cargo test)",
        source.describe(&crate_dir)
    )
    .and_then(|()| stdout.flush())
    .map_err(CliError::Write)
}

/// Says on stderr that the crate holds an absolute path nobody asked for.
fn warn_if_absolute(source: &NubSource) -> Result<(), CliError> {
    if let NubSource::Absolute { root, asked: false } = source {
        let mut stderr = std::io::stderr().lock();
        writeln!(
            stderr,
            "warning: the crate depends on nub by the absolute path {} (it lies outside {} \
             and the checkout has no remote origin), so it will not build once moved or \
             shared; pass --nub-path to choose the checkout, or edit Cargo.toml",
            root.display(),
            root.parent().unwrap_or(root).display()
        )
        .map_err(CliError::Write)?;
    }
    Ok(())
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

    /// The checkout's source for a crate at `dir`, as `nub new` picks it
    /// without a remote.
    fn source_for(dir: &Path) -> (NubSource, PathBuf) {
        let root = nub_checkout(&nub_guest_build::repo_root()).unwrap();
        let dir = resolve(dir).unwrap();
        (choose_source(&root, &dir, false, None), dir)
    }

    #[test]
    fn rendered_crate_is_complete() {
        // Inside the checkout's parent tree: a relative path.
        let inside = nub_guest_build::repo_root().join("target/tmp/some/new-guest");
        let (source, dir) = source_for(&inside);
        assert!(matches!(source, NubSource::Relative { .. }), "{source:?}");
        let files = render("my-guest", &source, &dir).unwrap();
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
        assert_eq!(kernel, "../../../../guest-x86/nub-arch-x86");
        assert!(
            resolve(&dir.join(kernel))
                .unwrap()
                .join("Cargo.toml")
                .is_file(),
            "{kernel} is the kernel crate"
        );
        assert!(parsed["dependencies"]["log"].is_table());
        assert!(parsed.contains_key("workspace"), "standalone crate");
        assert_eq!(
            parsed["profile"]["release"]["panic"].as_str(),
            Some("abort")
        );
        assert!(MAIN_RS.contains("log::info!(\"echo: {} bytes\", input.len())"));
        assert!(MAIN_RS.contains("registry.register(ECHO, echo)"));
        assert!(MAIN_RS.contains("guest Greet = 2 (String) -> String | GreetError;"));
        assert!(MAIN_RS.contains("call_typed::<api::Greet>"));
        assert!(parsed["dependencies"]["serde"].is_table());
        assert!(MAIN_RS.contains("#![cfg_attr(not(test), no_std)]"));
        assert!(MAIN_RS.contains("#[test]"));
    }

    #[test]
    fn host_crate_has_a_guest_and_relative_paths() {
        let inside = nub_guest_build::repo_root().join("target/tmp/my-host");
        let (source, dir) = source_for(&inside);
        let files = render_host("my-host", &source, &dir).unwrap();
        let file = |name: &str| {
            &files
                .iter()
                .find(|(p, _)| p == Path::new(name))
                .unwrap_or_else(|| panic!("{name} is written"))
                .1
        };
        for (path, text) in &files {
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                path.display()
            );
        }
        let host: toml::Table = file("Cargo.toml").parse().unwrap();
        assert_eq!(
            host["dependencies"]["nub-sandbox"]["path"].as_str(),
            Some("../../../crates/nub-sandbox")
        );
        assert_eq!(
            host["build-dependencies"]["nub-guest-build"]["path"].as_str(),
            Some("../../../crates/nub-guest-build")
        );
        assert_eq!(
            host["dependencies"]["my-host-interface"]["path"].as_str(),
            Some("interface")
        );
        let interface: toml::Table = file("interface/Cargo.toml").parse().unwrap();
        assert_eq!(
            interface["package"]["name"].as_str(),
            Some("my-host-interface")
        );
        // The same dependency forms as the other crates, from its own
        // directory.
        assert_eq!(
            interface["dependencies"]["nub-interface"]["path"].as_str(),
            Some("../../../../crates/nub-interface")
        );
        assert!(file("interface/src/lib.rs").contains("guest Greet = 1 (String) -> String"));
        let guest: toml::Table = file("guest/Cargo.toml").parse().unwrap();
        assert_eq!(guest["package"]["name"].as_str(), Some("my-host-guest"));
        assert_eq!(
            guest["dependencies"]["nub-arch-x86"]["path"].as_str(),
            Some("../../../../guest-x86/nub-arch-x86")
        );
        assert_eq!(
            guest["dependencies"]["my-host-interface"]["path"].as_str(),
            Some("../interface")
        );
        assert!(file("guest/src/main.rs").contains("use my_host_interface::{GreetError, api};"));
        assert!(file("guest/src/main.rs").contains(".typed::<api::Greet>(greet)"));
        assert!(file("build.rs").contains("nub_guest_build::embed(\"guest\", \"GUEST_ELF\")"));
        assert!(file("src/main.rs").contains("my_host::sandbox()"));
        assert!(file("tests/guest.rs").contains("call::<api::Greet>"));
        assert!(file("tests/guest.rs").contains("CallError::Guest(GreetError::EmptyName)"));
        assert!(file("src/lib.rs").contains("GuestBinary::Static(GUEST)"));
        assert!(file("src/lib.rs").contains("pub use my_host_interface::{GreetError, api};"));
        for dir in ["", "guest/"] {
            assert!(file(&format!("{dir}.gitignore")).contains("/target"));
        }
    }

    #[test]
    fn a_host_crate_gets_every_nub_crate_from_one_source() {
        let url = "https://example.com/o/nub.git";
        let source = NubSource::Git {
            url: url.to_string(),
        };
        let files = render_host("svc", &source, Path::new("/home/me/svc")).unwrap();
        let manifest = |name: &str| -> toml::Table {
            let (_, text) = files.iter().find(|(p, _)| p == Path::new(name)).unwrap();
            text.parse().unwrap()
        };
        let host = manifest("Cargo.toml");
        let interface = manifest("interface/Cargo.toml");
        let guest = manifest("guest/Cargo.toml");
        for dep in [
            &host["dependencies"]["nub-sandbox"],
            &host["build-dependencies"]["nub-guest-build"],
            &interface["dependencies"]["nub-interface"],
            &guest["dependencies"]["nub-arch-x86"],
        ] {
            assert_eq!(dep["git"].as_str(), Some(url), "{dep}");
        }
        // The interface is the crates' own: a path, whatever nub's source.
        assert_eq!(
            guest["dependencies"]["svc-interface"]["path"].as_str(),
            Some("../interface")
        );
    }

    #[test]
    fn relative_paths() {
        let rel = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(rel("/a/b/c", "/a/nub"), Some(PathBuf::from("../../nub")));
        assert_eq!(rel("/a/nub/x", "/a/nub"), Some(PathBuf::from("..")));
        assert_eq!(rel("/a/nub", "/a/nub"), Some(PathBuf::from(".")));
        assert_eq!(
            rel("/a", "/a/nub/guest-x86"),
            Some(PathBuf::from("nub/guest-x86"))
        );
        assert_eq!(rel("/x/y", "/a/b"), Some(PathBuf::from("../../a/b")));
        assert_eq!(rel("x/y", "/a/b"), None);
        // A crate beside the checkout, with a missing parent and a `..`.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap().join("nub");
        std::fs::create_dir_all(root.join("guest-x86/nub-arch-x86")).unwrap();
        std::fs::write(root.join("guest-x86/nub-arch-x86/Cargo.toml"), "").unwrap();
        let dir = resolve(&tmp.path().join("work/x/../mine")).unwrap();
        assert_eq!(dir, tmp.path().canonicalize().unwrap().join("work/mine"));
        let source = choose_source(&root, &dir, false, Some("git@example.com:o/nub.git"));
        assert_eq!(
            source.dependency(&dir, KERNEL_MEMBER).unwrap(),
            "{ path = \"../../nub/guest-x86/nub-arch-x86\" }"
        );
    }

    #[test]
    fn outside_the_tree_git_or_absolute() {
        let root = Path::new("/srv/src/nub");
        let dir = Path::new("/home/me/guest");
        let git = choose_source(root, dir, false, Some("https://example.com/o/nub.git"));
        assert_eq!(
            git,
            NubSource::Git {
                url: "https://example.com/o/nub.git".to_string()
            }
        );
        assert_eq!(
            git.dependency(dir, KERNEL_MEMBER).unwrap(),
            "{ git = \"https://example.com/o/nub.git\" }"
        );
        // --nub-path asks for a path: no git, no warning.
        assert_eq!(
            choose_source(root, dir, true, Some("https://example.com/o/nub.git")),
            NubSource::Absolute {
                root: root.to_path_buf(),
                asked: true
            }
        );
        // A local origin is no remote.
        assert_eq!(
            choose_source(root, dir, false, Some("/srv/mirror/nub.git")),
            NubSource::Absolute {
                root: root.to_path_buf(),
                asked: false
            }
        );
        assert_eq!(
            remote_url("git@github.com:o/nub.git").as_deref(),
            Some("ssh://git@github.com/o/nub.git")
        );
        assert_eq!(remote_url("file:///srv/nub"), None);
        assert_eq!(remote_url("../nub"), None);
        assert_eq!(remote_url(""), None);
    }

    #[test]
    fn paths_with_quotes_stay_valid_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let odd = tmp.path().join("a \"quoted\\\" dir");
        std::fs::create_dir_all(odd.join("guest-x86/nub-arch-x86")).unwrap();
        std::fs::write(odd.join("guest-x86/nub-arch-x86/Cargo.toml"), "").unwrap();
        let root = nub_checkout(&odd).unwrap();
        let source = NubSource::Absolute {
            root: root.clone(),
            asked: true,
        };
        let files = render("g", &source, Path::new("/elsewhere/g")).unwrap();
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
