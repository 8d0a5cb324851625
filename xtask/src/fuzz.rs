//! `cargo xtask fuzz [SECONDS]`: the fuzzing campaign. Runs every
//! cargo-fuzz target in `fuzz/fuzz_targets` for SECONDS each (default 900),
//! one after another, one libFuzzer process at a time (in process, no
//! `-jobs`/`-fork`: the equivalent of `-jobs=1` without its worker logs), and
//! prints a table of executions, coverage and crashes per target.
//!
//! Before that it installs cargo-fuzz when `cargo +nightly fuzz` is
//! missing, builds the guests (the corpus generator seeds `elf_parse` with
//! the real default guest), writes the seed corpus, and builds every target
//! once, then runs the built binaries directly (what `cargo fuzz run`
//! does, minus the rebuild). Each target's libFuzzer output goes to
//! `fuzz/logs/<target>.log`; a crash's input lands in
//! `fuzz/artifacts/<target>/`, the corpus grows in `fuzz/corpus/<target>/`.
//!
//! The fuzz crate needs nightly: it is a standalone crate whose
//! `rust-toolchain.toml` selects nightly, and the commands here run the
//! rustup proxy with `+nightly` (not the stable cargo that runs xtask).

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::cmd::{Error, project_root};

/// Seconds per target when none are given.
pub const DEFAULT_SECONDS: u64 = 900;

/// libFuzzer options of every run (besides the time limit): the memory and
/// per-input limits of `fuzz/README.md`, and the final statistics this task
/// parses.
const LIBFUZZER_ARGS: [&str; 3] = ["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"];

/// Runs the task with its command-line arguments.
pub fn run(args: &[String]) -> Result<(), Error> {
    let seconds = parse_seconds(args)?;
    let root = project_root();
    let fuzz_dir = root.join("fuzz");
    let targets = list_targets(&fuzz_dir.join("fuzz_targets"))?;
    if targets.is_empty() {
        return Err(Error::Usage("no fuzz targets in fuzz/fuzz_targets".into()));
    }
    ensure_cargo_fuzz()?;
    // The real guest is only a seed for `elf_parse`: without it the
    // campaign still runs.
    let default_guest = match nub_guest_build::build_guests() {
        Ok(guests) => guests
            .into_iter()
            .find(|g| g.name == "nub-default-guest")
            .map(|g| g.path),
        Err(e) => {
            eprintln!("xtask: warning: guest build failed ({e}); elf_parse gets no guest seed");
            None
        }
    };
    let mut seed = nightly(&fuzz_dir, &["run", "--example", "gen_corpus", "--"]);
    if let Some(elf) = &default_guest {
        seed.arg(elf);
    }
    run_command(seed)?;
    run_command(nightly(&fuzz_dir, &["fuzz", "build"]))?;
    let logs = fuzz_dir.join("logs");
    fs::create_dir_all(&logs).map_err(|source| Error::Spawn {
        command: format!("mkdir {}", logs.display()),
        source,
    })?;
    let mut results = Vec::new();
    for target in &targets {
        results.push(fuzz_one(&fuzz_dir, &logs, target, seconds)?);
        // The table so far, so an interrupted campaign keeps its figures.
        println!("\n{}", Table(&results));
    }
    let crashed: Vec<String> = results
        .iter()
        .filter(|r| r.stats.crashed())
        .map(|r| r.target.clone())
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(Error::Steps(crashed))
    }
}

/// `[SECONDS]`: a positive number of seconds per target.
fn parse_seconds(args: &[String]) -> Result<u64, Error> {
    match args {
        [] => Ok(DEFAULT_SECONDS),
        [s] => {
            s.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::Usage(format!("SECONDS must be a positive integer, not `{s}`"))
            })
        }
        [_, extra, ..] => Err(Error::Usage(format!(
            "`fuzz` takes at most one argument (got `{extra}` too)"
        ))),
    }
}

/// The target names: the `.rs` files in `dir`, sorted.
fn list_targets(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = fs::read_dir(dir).map_err(|source| Error::Spawn {
        command: format!("ls {}", dir.display()),
        source,
    })?;
    let mut targets: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let stem = path.file_stem()?.to_str()?.to_string();
            (path.extension()? == "rs").then_some(stem)
        })
        .collect();
    targets.sort();
    Ok(targets)
}

/// `cargo +nightly <args>` in `dir`, through the rustup proxy on PATH: the
/// variables the outer (stable) cargo set for xtask are removed so they
/// cannot pin the toolchain.
fn nightly(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// A command as it is printed.
fn display(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let dir = cmd
        .get_current_dir()
        .map(|d| {
            d.strip_prefix(project_root())
                .unwrap_or(d)
                .display()
                .to_string()
        })
        .filter(|d| !d.is_empty());
    let line = format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "));
    match dir {
        Some(d) => format!("(cd {d} && {line})"),
        None => line,
    }
}

/// Prints and runs `cmd` with inherited stdio; fails when it does.
fn run_command(cmd: Command) -> Result<(), Error> {
    let command = display(&cmd);
    crate::cmd::run_command(cmd, command)
}

/// Installs cargo-fuzz unless `cargo +nightly fuzz --version` works.
fn ensure_cargo_fuzz() -> Result<(), Error> {
    let root = project_root();
    let present = nightly(&root, &["fuzz", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("cargo-fuzz is not installed; installing it");
    let mut install = Command::new("cargo");
    install
        .args(["install", "cargo-fuzz"])
        .current_dir(&root)
        .env_remove("CARGO")
        .env_remove("RUSTC");
    run_command(install)
}

/// One target's run.
#[derive(Debug)]
struct TargetResult {
    target: String,
    seconds: u64,
    stats: Stats,
    log: PathBuf,
}

/// Where `cargo fuzz build` puts the target binaries.
const TARGET_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Runs `target` for `seconds`, libFuzzer's output into `logs/<target>.log`.
/// The binary `cargo fuzz build` made is run directly (as `cargo fuzz run`
/// would, with the same artifact prefix and corpus directory), so sources
/// edited during a long campaign are not rebuilt halfway through it.
fn fuzz_one(
    fuzz_dir: &Path,
    logs: &Path,
    target: &str,
    seconds: u64,
) -> Result<TargetResult, Error> {
    let log = logs.join(format!("{target}.log"));
    let binary = fuzz_dir
        .join("target")
        .join(TARGET_TRIPLE)
        .join("release")
        .join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let corpus = fuzz_dir.join("corpus").join(target);
    for dir in [&artifacts, &corpus] {
        fs::create_dir_all(dir).map_err(|source| Error::Spawn {
            command: format!("mkdir -p {}", dir.display()),
            source,
        })?;
    }
    let mut cmd = Command::new(&binary);
    cmd.current_dir(fuzz_dir)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_ARGS)
        .arg(&corpus);
    let command = display(&cmd);
    println!("$ {command} 2> {}", log.display());
    let file = fs::File::create(&log).map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let mut stats = Stats::parse(&text);
    stats.exit_ok = status.success();
    if !stats.exit_ok && stats.artifacts.is_empty() && stats.executions.is_none() {
        // Not a fuzzing result at all (the binary did not start, say).
        return Err(Error::Failed { command, status });
    }
    Ok(TargetResult {
        target: target.to_string(),
        seconds,
        stats,
        log,
    })
}

/// What a libFuzzer log says about a run.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    /// `stat::number_of_executed_units` (or `Done N runs`).
    executions: Option<u64>,
    /// `stat::average_exec_per_sec`.
    exec_per_sec: Option<u64>,
    /// The last status line's `cov:` (covered edges / PCs).
    coverage: Option<u64>,
    /// The last status line's `ft:` (features).
    features: Option<u64>,
    /// The last status line's corpus size (`corp: N/...`).
    corpus: Option<u64>,
    /// Inputs libFuzzer wrote: crashes, timeouts, OOMs, leaks.
    artifacts: Vec<String>,
    /// Whether the run ended with status 0.
    exit_ok: bool,
}

impl Stats {
    /// Reads libFuzzer's stderr.
    fn parse(log: &str) -> Self {
        let mut stats = Self::default();
        for line in log.lines() {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.executions = n.trim().parse().ok();
            } else if let Some(n) = line.strip_prefix("stat::average_exec_per_sec:") {
                stats.exec_per_sec = n.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("Done ") {
                if stats.executions.is_none() {
                    stats.executions = rest.split_whitespace().next().and_then(|n| n.parse().ok());
                }
            } else if line.starts_with('#') {
                if let Some(v) = field(line, "cov:") {
                    stats.coverage = Some(v);
                }
                if let Some(v) = field(line, "ft:") {
                    stats.features = Some(v);
                }
                if let Some(v) = field(line, "corp:") {
                    stats.corpus = Some(v);
                }
            } else if let Some((_, path)) = line.split_once("Test unit written to ") {
                stats.artifacts.push(path.trim().to_string());
            }
        }
        stats
    }

    /// Whether the run found something (a crash, timeout, OOM or leak).
    fn crashed(&self) -> bool {
        !self.exit_ok || !self.artifacts.is_empty()
    }
}

/// The number after `key` in a status line (`corp: 12/345b` gives 12).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split_once(key)?.1.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The summary table.
struct Table<'a>(&'a [TargetResult]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        writeln!(
            f,
            "| target | seconds | executions | exec/s | cov | ft | corpus | crashes |"
        )?;
        writeln!(f, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")?;
        for r in self.0 {
            let s = &r.stats;
            let crashes = if s.crashed() {
                let found = if s.artifacts.is_empty() {
                    format!("exit failure, see {}", r.log.display())
                } else {
                    s.artifacts.join(", ")
                };
                format!("**{}**: {found}", s.artifacts.len().max(1))
            } else {
                "0".to_string()
            };
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {crashes} |",
                r.target,
                r.seconds,
                opt(s.executions),
                opt(s.exec_per_sec),
                opt(s.coverage),
                opt(s.features),
                opt(s.corpus),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
INFO: Seed: 1234
#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb
#1024\tpulse  cov: 95 ft: 180 corp: 20/300b lim: 14 exec/s: 512 rss: 40Mb
#1500\tNEW    cov: 97 ft: 190 corp: 21/310b lim: 14 exec/s: 500 rss: 40Mb L: 9/9 MS: 1 ChangeBit-
Done 123456 runs in 61 second(s)
stat::number_of_executed_units: 123456
stat::average_exec_per_sec:     2023
stat::new_units_added:          21
";

    const CRASH: &str = "\
#8\tINITED cov: 50 ft: 60 corp: 3/20b exec/s: 0 rss: 30Mb
thread '<unnamed>' panicked at fuzz_targets/x.rs:1:1
==42== ERROR: libFuzzer: deadly signal
artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-abc
stat::number_of_executed_units: 99
";

    #[test]
    fn clean_run_statistics_are_read_from_the_final_stats_and_last_status_line() {
        let mut s = Stats::parse(CLEAN);
        s.exit_ok = true;
        assert_eq!(
            s,
            Stats {
                executions: Some(123_456),
                exec_per_sec: Some(2023),
                coverage: Some(97),
                features: Some(190),
                corpus: Some(21),
                artifacts: vec![],
                exit_ok: true,
            }
        );
        assert!(!s.crashed());
    }

    #[test]
    fn a_crash_names_its_artifact() {
        let s = Stats::parse(CRASH);
        assert_eq!(s.artifacts, ["/w/fuzz/artifacts/x/crash-abc"]);
        assert_eq!(s.executions, Some(99));
        assert_eq!(s.coverage, Some(50));
        assert!(s.crashed());
        let r = TargetResult {
            target: "x".into(),
            seconds: 5,
            stats: s,
            log: PathBuf::from("x.log"),
        };
        let table = Table(std::slice::from_ref(&r)).to_string();
        assert!(
            table.contains(
                "| x | 5 | 99 | - | 50 | 60 | 3 | **1**: /w/fuzz/artifacts/x/crash-abc |"
            ),
            "{table}"
        );
    }

    #[test]
    fn a_failed_run_without_artifacts_still_counts_as_a_crash() {
        let s = Stats::parse("#1\tINITED cov: 1 ft: 1 corp: 1/1b\n");
        assert!(s.crashed(), "exit status unknown means not ok");
    }

    #[test]
    fn seconds_default_and_validation() {
        assert_eq!(parse_seconds(&[]).unwrap(), DEFAULT_SECONDS);
        assert_eq!(parse_seconds(&["60".into()]).unwrap(), 60);
        for bad in ["0", "-1", "ten"] {
            assert!(matches!(parse_seconds(&[bad.into()]), Err(Error::Usage(_))));
        }
        assert!(matches!(
            parse_seconds(&["1".into(), "2".into()]),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn every_target_file_is_listed() {
        let targets = list_targets(&project_root().join("fuzz/fuzz_targets")).unwrap();
        assert!(targets.contains(&"log_buffer".to_string()), "{targets:?}");
        assert!(targets.contains(&"ring_frames".to_string()), "{targets:?}");
        let mut sorted = targets.clone();
        sorted.sort();
        assert_eq!(targets, sorted);
    }
}
