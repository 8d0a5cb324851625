//! How rows are measured: the [`Budget`] that decides how many samples a
//! row takes, and [`run`], which sets each row up, warms it up, samples it
//! and summarizes its samples.
//!
//! [`run`] is independent of the terminal: `nub bench` drives it with a
//! progress bar, the tests with [`Budget::fixed`].

use std::time::{Duration, Instant};

use super::{
    catalogue::{Row, Setup, Unit},
    error::{BenchError, RowError},
    stats::{Summary, summarize},
};

/// How many samples each row takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Sampling stops once this much time has passed (and `min_samples`
    /// are in).
    pub per_row: Duration,
    /// Samples taken whatever the time.
    pub min_samples: usize,
    /// Samples never exceeded (bounds memory for the cheap rows).
    pub max_samples: usize,
    /// Untimed runs before sampling, cut short after a tenth of `per_row`.
    pub warmup: usize,
}

impl Budget {
    /// The default run: under 2 minutes for the whole suite.
    pub fn full() -> Self {
        Self {
            per_row: Duration::from_millis(3500),
            min_samples: 20,
            max_samples: 200_000,
            warmup: 20,
        }
    }

    /// `--quick`: about 20 s for the whole suite.
    pub fn quick() -> Self {
        Self {
            per_row: Duration::from_millis(700),
            min_samples: 5,
            max_samples: 100_000,
            warmup: 5,
        }
    }

    /// The budget of a row whose samples take milliseconds
    /// ([`Row::long_samples`]): a quarter of the time, at most two warm-up
    /// runs; the sample counts stay (so [`Budget::fixed`] is unchanged).
    pub fn for_long_samples(self) -> Self {
        Self {
            per_row: self.per_row / 4,
            warmup: self.warmup.min(2),
            ..self
        }
    }

    /// Exactly `n` samples of every row, no warm-up (tests).
    pub fn fixed(n: usize) -> Self {
        Self {
            per_row: Duration::ZERO,
            min_samples: n,
            max_samples: n,
            warmup: 0,
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    /// The row's name.
    pub name: String,
    /// The floor its ratio is taken against, if any.
    pub floor: Option<&'static str>,
    /// The unit of `summary`.
    pub unit: Unit,
    /// Its samples, summarized.
    pub summary: Summary,
}

/// Where [`run`] is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Index of the row being measured.
    pub row: usize,
    /// Rows in all.
    pub rows: usize,
    /// Its name.
    pub name: &'a str,
    /// How much of its budget is spent, 0 to 1.
    pub done: f64,
}

/// Measures `rows` one after the other with `budget`, telling `progress`
/// where it is. Stops at the first row that fails.
pub fn run(
    rows: Vec<Row>,
    budget: Budget,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<RowResult>, BenchError> {
    let total = rows.len();
    let mut results = Vec::with_capacity(total);
    for (index, row) in rows.into_iter().enumerate() {
        let Row {
            name,
            floor,
            unit,
            group: _,
            long_samples,
            setup,
        } = row;
        let budget = if long_samples {
            budget.for_long_samples()
        } else {
            budget
        };
        let mut report = |done: f64| {
            progress(Progress {
                row: index,
                rows: total,
                name: &name,
                done,
            })
        };
        report(0.0);
        let summary = measure(setup, budget, &mut report).map_err(|source| BenchError {
            row: name.clone(),
            source,
        })?;
        report(1.0);
        results.push(RowResult {
            name,
            floor,
            unit,
            summary,
        });
    }
    Ok(results)
}

/// Sets a row up, warms it up and samples it within `budget`.
fn measure(setup: Setup, budget: Budget, report: &mut dyn FnMut(f64)) -> Result<Summary, RowError> {
    let mut sample = setup()?;
    let warmup_start = Instant::now();
    for _ in 0..budget.warmup {
        if warmup_start.elapsed() > budget.per_row / 10 {
            break;
        }
        sample()?;
    }
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last_report = start;
    loop {
        let elapsed = start.elapsed();
        let enough = samples.len() >= budget.min_samples && elapsed >= budget.per_row;
        if samples.len() >= budget.max_samples || enough {
            break;
        }
        samples.push(sample()?);
        if last_report.elapsed() > Duration::from_millis(50) {
            last_report = Instant::now();
            let by_time = elapsed.as_secs_f64() / budget.per_row.as_secs_f64().max(1e-9);
            // Sample counts are far below 2^52: exact as floats.
            let by_count = samples.len() as f64 / budget.min_samples.max(1) as f64;
            report(by_time.min(by_count).min(1.0));
        }
    }
    summarize(&mut samples).ok_or_else(|| RowError::WrongAnswer("no samples taken".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{Group, rows};

    #[test]
    fn the_whole_suite_runs_with_two_samples_a_row() {
        let mut seen = Vec::new();
        let results = run(rows(), Budget::fixed(2), &mut |p| {
            if seen.last() != Some(&p.row) {
                seen.push(p.row);
            }
            assert!((0.0..=1.0).contains(&p.done));
        })
        .unwrap();
        assert_eq!(
            results.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            rows().into_iter().map(|r| r.name).collect::<Vec<_>>()
        );
        assert_eq!(seen, (0..results.len()).collect::<Vec<_>>());
        for r in &results {
            assert_eq!(r.summary.samples, 2, "{}", r.name);
            if r.unit == Unit::Micros {
                assert!(r.summary.median > 0.0, "{}: {:?}", r.name, r.summary);
            }
            assert!(r.summary.p99 >= r.summary.median, "{}", r.name);
        }
    }

    #[test]
    fn long_samples_take_less_time_but_as_many_samples() {
        let quick = Budget::quick().for_long_samples();
        assert_eq!(quick.per_row, Budget::quick().per_row / 4);
        assert_eq!(quick.min_samples, Budget::quick().min_samples);
        assert!(quick.warmup <= 2);
        assert_eq!(Budget::fixed(3).for_long_samples(), Budget::fixed(3));
    }

    #[test]
    fn a_failing_row_names_itself() {
        let row = Row::new(Group::Floor, "broken", None, || {
            Err(RowError::WrongAnswer("set up to fail".into()))
        });
        let err = run(vec![row], Budget::fixed(1), &mut |_| {}).unwrap_err();
        assert_eq!(err.row, "broken");
        assert!(err.to_string().contains("set up to fail"), "{err}");
    }
}
