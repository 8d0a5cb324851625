//! `nub bench --quick --json PATH`, cut to two samples a row with the
//! hidden `--iterations`: the JSON's shape and the contract rows. Boots
//! real guests and needs `/dev/kvm`. No timing is asserted.

mod common;

use common::{nub, nub_ok};
use serde_json::Value;

/// The row names scripts rely on (issue 11): a rename breaks them.
const CONTRACT_ROWS: &[&str] = &[
    "floor: out loop CPL 3",
    "floor: out loop CPL 0",
    "kill floor",
    "vm floor",
    "ping-pong floor",
    "echo empty",
    "echo 4KiB",
    "echo 64KiB",
    "host call",
    "batch 100 per call",
    "put_cap 64B",
    "put_cap_with_hash hit",
    "create+evolve",
    "drop",
    "create+evolve+call+drop",
    "kill latency",
    "rss per sandbox (32 alive)",
    "echo empty (loaded)",
    "echo empty (resident, loaded)",
    "first call after a park (resident)",
    "create from image",
    "create from image+call+drop (pool)",
    "load image",
    "rss per sandbox from image (32 alive)",
    "native wasmi fib(25)",
    "wasm fib(25)",
    "native wasmi loop 10M",
    "wasm loop 10M",
    "native wasmi f64 1M",
    "wasm f64 1M",
    "native wasmi load small module",
    "wasm load small module",
    "wasm load small module (resident)",
    "wasm call empty export",
    "wasm call empty export (resident)",
    "wasm import call (resident)",
];

/// The call rows, each of which also has a `(resident)` variant.
const CALL_ROWS: &[&str] = &[
    "echo empty",
    "echo 4KiB",
    "echo 64KiB",
    "host call",
    "batch 100 per call",
    "put_cap 64B",
    "put_cap_with_hash hit",
];

/// Each row and the floor it must name.
const FLOORS: &[(&str, Option<&str>)] = &[
    ("floor: out loop CPL 3", None),
    ("echo empty", Some("floor: out loop CPL 3")),
    ("host call", Some("floor: out loop CPL 3")),
    ("put_cap_with_hash hit", Some("floor: out loop CPL 3")),
    ("create+evolve", Some("vm floor")),
    ("drop", Some("vm floor")),
    ("create+evolve+call+drop", Some("vm floor")),
    ("kill latency", Some("kill floor")),
    ("echo empty (loaded)", Some("floor: out loop CPL 3")),
    ("echo empty (resident, loaded)", Some("echo empty (loaded)")),
    (
        "first call after a park (resident)",
        Some("floor: out loop CPL 3"),
    ),
    ("rss per sandbox (32 alive)", None),
    ("create from image", Some("create+evolve")),
    (
        "create from image+call+drop (pool)",
        Some("create+evolve+call+drop (pool)"),
    ),
    ("load image", Some("create+evolve+call+drop")),
    (
        "rss per sandbox from image (32 alive)",
        Some("rss per sandbox (32 alive)"),
    ),
];

/// The wasm rows (issue 19) and the floor each must name.
const WASM_FLOORS: &[(&str, Option<&str>)] = &[
    ("native wasmi fib(25)", None),
    ("wasm fib(25)", Some("native wasmi fib(25)")),
    ("native wasmi loop 10M", None),
    ("wasm loop 10M", Some("native wasmi loop 10M")),
    ("native wasmi f64 1M", None),
    ("wasm f64 1M", Some("native wasmi f64 1M")),
    ("native wasmi load small module", None),
    (
        "wasm load small module",
        Some("native wasmi load small module"),
    ),
    (
        "wasm load small module (resident)",
        Some("native wasmi load small module"),
    ),
    ("wasm call empty export", Some("echo empty")),
    (
        "wasm call empty export (resident)",
        Some("echo empty (resident)"),
    ),
    ("wasm import call (resident)", Some("host call (resident)")),
];

#[test]
fn quick_json_run_has_every_contract_row() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("out.json");
    let json_arg = json_path.to_str().expect("a UTF-8 temporary path");
    let stdout = nub_ok(&["bench", "--quick", "--iterations", "2", "--json", json_arg]);

    let json: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("--json wrote the file"))
            .expect("the file is JSON");
    let rows = json["rows"].as_array().expect("a `rows` array");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row `{name}` in {json:#}"))
    };

    for name in CONTRACT_ROWS {
        let r = row(name);
        assert!(r["median_us"].is_f64(), "{name}: median_us {r}");
        assert!(r["p99_us"].is_f64(), "{name}: p99_us {r}");
        assert!(
            r["floor"].is_null() || r["floor"].is_string(),
            "{name}: floor {r}"
        );
        assert_eq!(r["floor"].is_null(), r["ratio"].is_null(), "{name}: {r}");
        assert!(r["ratio"].is_null() || r["ratio"].is_f64(), "{name}: {r}");
        assert_eq!(r["samples"], 2, "{name}: --iterations 2");
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "{name} missing from the table:\n{stdout}"
        );
    }
    for r in rows {
        if let Some(floor) = r["floor"].as_str() {
            row(floor);
        }
    }
    for (name, floor) in FLOORS.iter().chain(WASM_FLOORS) {
        assert_eq!(row(name)["floor"].as_str(), *floor, "{name}");
    }
    for base in CALL_ROWS {
        let resident = format!("{base} (resident)");
        assert_eq!(
            row(&resident)["floor"].as_str(),
            Some("ping-pong floor"),
            "{resident}"
        );
    }
    assert_eq!(row("rss per sandbox (32 alive)")["unit"], "KiB");
    assert_eq!(row("rss per sandbox from image (32 alive)")["unit"], "KiB");
    assert_eq!(row("echo empty")["unit"], "us");
}

/// `nub bench --quick wasm`: every wasm row and the floors it names, each
/// wasm row with a ratio in the JSON and the table.
#[test]
fn the_wasm_filter_runs_every_wasm_row_with_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("wasm.json");
    let json_arg = json_path.to_str().expect("a UTF-8 temporary path");
    let stdout = nub_ok(&[
        "bench",
        "--quick",
        "--iterations",
        "2",
        "--json",
        json_arg,
        "wasm",
    ]);
    let json: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("--json wrote the file"))
            .expect("the file is JSON");
    let rows = json["rows"].as_array().expect("a `rows` array");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    let mut want = vec![
        "floor: out loop CPL 3",
        "ping-pong floor",
        "echo empty",
        "echo empty (resident)",
        "host call (resident)",
    ];
    want.extend(WASM_FLOORS.iter().map(|&(n, _)| n));
    assert_eq!(names, want);
    for &(name, floor) in WASM_FLOORS {
        let r = rows.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(r["floor"].as_str(), floor, "{name}");
        assert_eq!(r["ratio"].is_f64(), floor.is_some(), "{name}: {r}");
        assert!(r["median_us"].as_f64().is_some_and(|m| m > 0.0), "{r}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} missing from the table:\n{stdout}"));
        // The ratio column: a number followed by `x`.
        let has_ratio = line[name.len()..].split_whitespace().any(|w| {
            w.strip_suffix('x')
                .is_some_and(|n| n.parse::<f64>().is_ok())
        });
        assert_eq!(has_ratio, floor.is_some(), "{name}: {line}");
    }
}

#[test]
fn iterations_must_be_positive() {
    let out = nub(&["bench", "--iterations", "0"]);
    assert_eq!(out.status.code(), Some(2));
}
