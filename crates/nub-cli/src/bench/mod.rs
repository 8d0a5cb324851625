//! `nub bench`: runs the benchmark suite ([`nub_cli::suite`], the
//! library's row catalogue) on the built-in default guest with a progress
//! bar on stderr, prints the table ([`report`]) on stdout and, with
//! `--json PATH`, writes the rows as JSON.
//!
//! Every figure is a median (and a p99) of samples taken in this run, and
//! every ratio is to a floor measured in the same run: absolute numbers
//! move between runs on a shared machine, ratios much less.

pub mod report;

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use nub_cli::suite::{self, Budget, Progress};

use crate::{cli::BenchArgs, error::CliError};
use report::Report;

/// Steps of the progress bar per row (its position within a row follows
/// the row's budget).
const STEPS_PER_ROW: u64 = 100;

/// Runs `nub bench`.
pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    let budget = match (args.iterations, args.quick) {
        (Some(n), _) => Budget::fixed(usize::try_from(n).unwrap_or(usize::MAX)),
        (None, true) => Budget::quick(),
        (None, false) => Budget::full(),
    };
    let rows = suite::select(suite::rows(), args.filter.as_deref().unwrap_or(""));
    if rows.is_empty() {
        return Err(CliError::NoBenchRows(
            args.filter.clone().unwrap_or_default(),
        ));
    }
    let bar = ProgressBar::new(rows.len() as u64 * STEPS_PER_ROW);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let start = Instant::now();
    let results = suite::run(rows, budget, &mut |p: Progress<'_>| {
        // Fractions of one row: 0..=100 steps.
        let within = (p.done.clamp(0.0, 1.0) * STEPS_PER_ROW as f64) as u64;
        bar.set_position(p.row as u64 * STEPS_PER_ROW + within);
        bar.set_message(format!("{}/{} {}", p.row + 1, p.rows, p.name));
    });
    bar.finish_and_clear();
    let results = results?;
    let report = Report::new(&results);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(CliError::Json)?;
        std::fs::write(path, json + "\n").map_err(|source| CliError::WriteFile {
            path: path.clone(),
            source,
        })?;
    }
    if args.markdown {
        print!("{}", report.markdown());
    } else {
        print!("{}", report.table());
    }
    println!(
        "{} rows in {:.1} s; ratio = median / the median of the row's floor, both from this run",
        report.rows.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
