//! What `nub bench` prints and writes: each row with its ratio to its floor
//! (taken from the same run), as a text table and as JSON
//! (`{"rows":[{"name", "median_us", "p99_us", "floor", "ratio", …}]}`).

use serde::Serialize;

use crate::table::{Align, Table};
use nub_cli::suite::{RowResult, Unit};

/// The JSON document `--json` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every row, in run order.
    pub rows: Vec<ReportRow>,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    /// The row's name (a contract).
    pub name: String,
    /// The median, in microseconds (in KiB for the RSS row: see `unit`).
    pub median_us: f64,
    /// The 99th percentile, in the same unit as `median_us`.
    pub p99_us: f64,
    /// The floor row this row is compared with, if any.
    pub floor: Option<String>,
    /// `median_us` over the floor's median, when there is a floor.
    pub ratio: Option<f64>,
    /// `us`, or `KiB` for the RSS row.
    pub unit: &'static str,
    /// Operations per second at the median (time rows only).
    pub ops_per_s: Option<f64>,
    /// Samples taken.
    pub samples: usize,
}

/// `x` rounded to `digits` decimals (JSON readability; far below the
/// noise).
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

impl Report {
    /// The report of `results`: each row's ratio to its floor's median,
    /// when that floor was measured.
    pub fn new(results: &[RowResult]) -> Self {
        let median_of = |name: &str| {
            results
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.summary.median)
        };
        let rows = results
            .iter()
            .map(|r| {
                let ratio = r
                    .floor
                    .and_then(median_of)
                    .filter(|&floor| floor > 0.0)
                    .map(|floor| round(r.summary.median / floor, 4));
                let ops_per_s = (r.unit == Unit::Micros && r.summary.median > 0.0)
                    .then(|| round(1e6 / r.summary.median, 1));
                ReportRow {
                    name: r.name.clone(),
                    median_us: round(r.summary.median, 3),
                    p99_us: round(r.summary.p99, 3),
                    floor: r.floor.map(str::to_string),
                    ratio,
                    unit: r.unit.symbol(),
                    ops_per_s,
                    samples: r.summary.samples,
                }
            })
            .collect();
        Self { rows }
    }

    /// The report as an aligned text table.
    pub fn table(&self) -> String {
        let mut t = Table::new(&[
            ("row", Align::Left),
            ("median", Align::Right),
            ("p99", Align::Right),
            ("ratio", Align::Right),
            ("floor", Align::Left),
            ("ops/s", Align::Right),
        ]);
        for r in &self.rows {
            t.row(vec![
                r.name.clone(),
                figure(r.median_us, r.unit),
                figure(r.p99_us, r.unit),
                r.ratio.map_or_else(String::new, |x| format!("{x:.2}x")),
                r.floor.clone().unwrap_or_default(),
                r.ops_per_s.map_or_else(String::new, ops),
            ]);
        }
        t.render("")
    }
}

impl Report {
    /// The report as the Markdown table README.md and docs/performance.md
    /// paste (`nub bench --markdown`), so they are generated, never typed.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| row | median | p99 | ratio | floor |\n| --- | ---: | ---: | ---: | --- |\n",
        );
        for r in &self.rows {
            let ratio = r.ratio.map_or_else(String::new, |x| format!("{x:.2}x"));
            let floor = r
                .floor
                .as_ref()
                .map_or_else(String::new, |f| format!("`{f}`"));
            out.push_str(&format!(
                "| `{}` | {} | {} | {ratio} | {floor} |\n",
                r.name,
                figure(r.median_us, r.unit),
                figure(r.p99_us, r.unit),
            ));
        }
        out
    }
}

/// A figure with its unit, to about three significant digits.
fn figure(value: f64, unit: &str) -> String {
    let unit = if unit == "us" { "µs" } else { unit };
    let abs = value.abs();
    if abs >= 100.0 {
        format!("{value:.0} {unit}")
    } else if abs >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

/// Operations per second, with thousands separated by spaces.
fn ops(per_s: f64) -> String {
    // Rounded and clamped to a range u64 holds exactly enough.
    let n = per_s.round().clamp(0.0, 1e15) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nub_cli::suite::stats::Summary;

    fn result(name: &str, floor: Option<&'static str>, unit: Unit, median: f64) -> RowResult {
        RowResult {
            name: name.into(),
            floor,
            unit,
            summary: Summary {
                samples: 10,
                median,
                p99: median * 2.0,
            },
        }
    }

    #[test]
    fn ratios_come_from_the_floor_measured_in_the_same_run() {
        let report = Report::new(&[
            result("floor: out loop CPL 3", None, Unit::Micros, 40.0),
            result(
                "echo empty",
                Some("floor: out loop CPL 3"),
                Unit::Micros,
                42.0,
            ),
            result("kill latency", Some("kill floor"), Unit::Micros, 80.0),
            result("rss per sandbox (32 alive)", None, Unit::KiB, 300.0),
        ]);
        let [floor, echo, kill, rss] = report.rows.as_slice() else {
            panic!("four rows: {report:?}");
        };
        assert_eq!((floor.floor.as_deref(), floor.ratio), (None, None));
        assert_eq!(echo.ratio, Some(1.05));
        assert_eq!(echo.ops_per_s, Some(23809.5));
        assert_eq!(echo.p99_us, 84.0);
        assert_eq!(kill.floor.as_deref(), Some("kill floor"));
        assert_eq!(kill.ratio, None, "its floor was not measured");
        assert_eq!(
            (rss.unit, rss.ops_per_s, rss.median_us),
            ("KiB", None, 300.0)
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let report = Report::new(&[
            result("floor: out loop CPL 3", None, Unit::Micros, 40.0),
            result(
                "echo empty",
                Some("floor: out loop CPL 3"),
                Unit::Micros,
                42.0,
            ),
        ]);
        let json = serde_json::to_value(&report).unwrap();
        let echo = &json["rows"][1];
        assert_eq!(echo["name"], "echo empty");
        assert_eq!(echo["median_us"], 42.0);
        assert_eq!(echo["p99_us"], 84.0);
        assert_eq!(echo["floor"], "floor: out loop CPL 3");
        assert_eq!(echo["ratio"], 1.05);
        assert!(json["rows"][0]["floor"].is_null());
        assert!(json["rows"][0]["ratio"].is_null());
    }

    #[test]
    fn markdown_has_a_row_per_result_with_its_floor() {
        let report = Report::new(&[
            result("floor", None, Unit::Micros, 2.0),
            result("call", Some("floor"), Unit::Micros, 3.0),
        ]);
        let md = report.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4, "{md}");
        assert_eq!(lines[2], "| `floor` | 2.00 µs | 4.00 µs |  |  |");
        assert_eq!(lines[3], "| `call` | 3.00 µs | 6.00 µs | 1.50x | `floor` |");
    }

    #[test]
    fn table_lines_up_units_and_ratios() {
        let report = Report::new(&[
            result("floor: out loop CPL 3", None, Unit::Micros, 40.0),
            result(
                "echo empty",
                Some("floor: out loop CPL 3"),
                Unit::Micros,
                0.05,
            ),
            result("rss per sandbox (32 alive)", None, Unit::KiB, 312.4),
        ]);
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("row"), "{table}");
        assert!(lines[1].contains("40.0 µs"), "{table}");
        assert!(
            lines[2].contains("0.05 µs") && lines[2].contains("0.00x"),
            "{table}"
        );
        assert!(lines[2].contains("20 000 000"), "{table}");
        assert!(lines[3].contains("312 KiB"), "{table}");
    }

    #[test]
    fn figures_keep_about_three_digits() {
        assert_eq!(figure(1234.56, "us"), "1235 µs");
        assert_eq!(figure(34.56, "us"), "34.6 µs");
        assert_eq!(figure(0.056, "us"), "0.06 µs");
        assert_eq!(ops(1234567.0), "1 234 567");
        assert_eq!(ops(999.0), "999");
    }
}
