//! Running external commands: echo them, run them from the repository
//! root, and turn failures into [`Error`]s.

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus, Stdio},
};

use nub_guest_build::BuildError;

/// Why a task failed.
#[derive(Debug)]
pub enum Error {
    /// The command line was wrong.
    Usage(String),
    /// A command could not be started.
    Spawn {
        /// The command, as printed.
        command: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// A command ran and failed.
    Failed {
        /// The command, as printed.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// Building the guests failed.
    GuestBuild(BuildError),
    /// Some steps of a multi-step task failed.
    Steps(Vec<String>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(msg) => f.write_str(msg),
            Self::Spawn { command, source } => write!(f, "cannot run `{command}`: {source}"),
            Self::Failed { command, status } => write!(f, "`{command}` failed ({status})"),
            Self::GuestBuild(e) => write!(f, "{e}"),
            Self::Steps(failed) => write!(f, "failed: {}", failed.join(", ")),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The exit status `cargo xtask` ends with: a failed command's own code
    /// when it has one, 2 for usage errors, otherwise 1.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            Self::Failed { status, .. } => status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != 0)
                .map_or(ExitCode::FAILURE, ExitCode::from),
            _ => ExitCode::FAILURE,
        }
    }
}

/// The repository root (xtask lives at `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo that runs the tasks: the one that started `cargo xtask`, so the
/// toolchain stays the same.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Prints `command` (how `cmd` reads), runs `cmd` with inherited stdio, and
/// fails when it does: every task's way of running a tool.
pub fn run_command(mut cmd: Command, command: String) -> Result<(), Error> {
    println!("$ {command}");
    let status = cmd.status().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed { command, status })
    }
}

/// A cargo invocation run from `dir` relative to the repository root.
#[derive(Debug)]
pub struct Cargo {
    args: Vec<String>,
    dir: &'static str,
    env: Vec<(&'static str, &'static str)>,
}

impl Cargo {
    /// `cargo <args>` in the repository root.
    pub fn new(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(ToString::to_string).collect(),
            dir: "",
            env: Vec::new(),
        }
    }

    /// Runs in `dir` (relative to the root) instead.
    pub fn in_dir(mut self, dir: &'static str) -> Self {
        self.dir = dir;
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: &'static str, value: &'static str) -> Self {
        self.env.push((key, value));
        self
    }

    /// Appends more arguments.
    pub fn args(mut self, more: &[String]) -> Self {
        self.args.extend(more.iter().cloned());
        self
    }

    /// The command as it is printed.
    pub fn display(&self) -> String {
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let line = format!("{env}cargo {}", self.args.join(" "));
        if self.dir.is_empty() {
            line
        } else {
            format!("(cd {} && {line})", self.dir)
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(cargo());
        cmd.args(&self.args)
            .envs(self.env.iter().copied())
            .current_dir(project_root().join(self.dir));
        cmd
    }

    /// Prints the command, runs it with inherited stdio, and fails when it
    /// does.
    pub fn run(&self) -> Result<(), Error> {
        run_command(self.command(), self.display())
    }

    /// Runs the command silently; whether it started and succeeded.
    pub fn succeeds_quietly(&self) -> bool {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_the_directory() {
        assert_eq!(Cargo::new(&["fmt", "--all"]).display(), "cargo fmt --all");
        assert_eq!(
            Cargo::new(&["fmt"]).in_dir("guest-x86/guests").display(),
            "(cd guest-x86/guests && cargo fmt)"
        );
        assert_eq!(
            Cargo::new(&["test"])
                .args(&["-p".into(), "x".into()])
                .display(),
            "cargo test -p x"
        );
    }

    #[test]
    fn root_holds_the_workspace() {
        assert!(project_root().join("Cargo.toml").is_file());
        assert!(project_root().join("guest-x86/guests").is_dir());
    }
}
