//! `projector bench`, driven as a user would: a short run must produce a complete
//! report (table and JSON), and the views it measured must be right: its kept
//! checkpoint is restored by `projector run --once` and compared with the oracle.
//! The figures themselves are not checked against targets here (speed lives in
//! BENCHMARKS.md), only for consistency.

mod common;

use common::oracle;
use common::{
    assert_rows, generator_pipeline, generator_records, json_lines, projector, run, yaml_int,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writing a test file");
    path
}

/// `projector bench PIPELINE ARGS --quiet --json FILE` in `dir`, which must succeed:
/// its table (stdout) and its JSON report.
fn bench(dir: &Path, pipeline: &Path, args: &[&str]) -> (String, Value) {
    let report_path = dir.join("report.json");
    let mut cmd = projector();
    cmd.current_dir(dir)
        .arg("bench")
        .arg(pipeline)
        .args(args)
        .args(["--quiet", "--json"])
        .arg(&report_path);
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(0);
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("the JSON report exists"))
            .expect("the report is JSON");
    (out.stdout_text().to_string(), report)
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is missing or not a number in {v:#}"))
}

#[test]
fn a_short_bench_reports_everything_and_measures_correct_views() {
    let events = 30_000;
    let text = generator_pipeline(events);
    let (keys, seed) = (yaml_int(&text, "keys"), yaml_int(&text, "seed"));
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = write(dir.path(), "bank.yaml", &text);
    let report_path = dir.path().join("report.json");
    let state = dir.path().join("state");

    let mut cmd = projector();
    cmd.current_dir(dir.path())
        .arg("bench")
        .arg(&pipeline)
        .args(["--runs", "2", "--query-clients", "2", "--quiet", "--json"])
        .arg(&report_path)
        .arg("--state-dir")
        .arg(&state);
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(0);
    let table = out.stdout_text();
    for section in ["throughput", "views", "freshness", "queries", "key_lookup"] {
        assert!(table.contains(section), "no {section} in\n{table}");
    }

    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("the JSON report exists"))
            .expect("the report is JSON");
    assert_eq!(report["events"], events);
    assert_eq!(report["source"], "generator");
    let runs = report["throughput"]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert_eq!(r["events"], events, "every run reads every event");
        assert!(f(r, "/seconds") > 0.0 && f(r, "/events_per_s") > 0.0);
        assert!(f(r, "/cpu_user_s") + f(r, "/cpu_sys_s") > 0.0);
        assert!(f(r, "/peak_rss_bytes") >= f(r, "/rss_before_bytes"));
        let rate = events as f64 / f(r, "/seconds");
        assert!((rate - f(r, "/events_per_s")).abs() / rate < 1e-6);
    }
    let (lo, mid, hi) = (
        f(&report, "/throughput/min_events_per_s"),
        f(&report, "/throughput/median_events_per_s"),
        f(&report, "/throughput/max_events_per_s"),
    );
    assert!(lo <= mid && mid <= hi, "{lo} {mid} {hi}");

    // Freshness: every event measured, at half the median throughput by default.
    let fr = &report["freshness"];
    assert_eq!(fr["samples"], events);
    assert!((f(fr, "/rate") - mid / 2.0).abs() < 1.0);
    let (p50, p99, p999, max) = (
        f(fr, "/p50_ms"),
        f(fr, "/p99_ms"),
        f(fr, "/p999_ms"),
        f(fr, "/max_ms"),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999 && p999 <= max);
    assert_eq!(report["freshness_under_queries"]["samples"], events);

    // Queries: a key lookup and an aggregate per view, all answered.
    let exp = oracle::expected(&generator_records(events, keys, seed));
    let queries = report["queries"].as_array().expect("queries");
    for view in ["accounts", "volume_by_type"] {
        for kind in ["key_lookup", "aggregate"] {
            let q = queries
                .iter()
                .find(|q| q["view"] == view && q["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind} on {view} in {queries:#?}"));
            assert!(q["count"].as_u64().unwrap() > 0, "{q:#}");
            assert_eq!(q["errors"], 0, "{q:#}");
            assert!(f(q, "/p50_ms") <= f(q, "/max_ms"));
        }
    }
    let rows = |name: &str| {
        report["views"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["view"] == name)
            .unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("accounts"), exp.accounts.len() as u64);
    assert_eq!(rows("volume_by_type"), exp.volume.len() as u64);

    // The views the last run built, restored from its checkpoint.
    let mut cmd = projector();
    cmd.current_dir(dir.path())
        .arg("run")
        .arg(&pipeline)
        .args(["--once", "--quiet", "--format", "json", "--state-dir"])
        .arg(&state)
        .args(["--sql", "SELECT * FROM accounts ORDER BY account_id"])
        .args(["--sql", "SELECT * FROM volume_by_type ORDER BY event_type"]);
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(0);
    let results = json_lines(&out.stdout);
    assert_eq!(results.len(), 2);
    assert_rows("accounts", &results[0], &exp.accounts_json());
    assert_rows("volume_by_type", &results[1], &exp.volume_json());
}

#[test]
fn a_short_bench_queries_over_the_postgres_protocol() {
    let text = generator_pipeline(30_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = write(dir.path(), "bank.yaml", &text);
    let (table, report) = bench(
        dir.path(),
        &pipeline,
        &["--runs", "1", "--query-clients", "2", "--query-face", "pg"],
    );
    assert!(table.contains("over the Postgres protocol"), "{table}");
    let queries = report["queries"].as_array().expect("queries");
    assert_eq!(queries.len(), 4, "{queries:#?}");
    for q in queries {
        assert_eq!(q["face"], "pg", "{q:#}");
        assert!(q["count"].as_u64().unwrap() > 0, "{q:#}");
        assert_eq!(q["errors"], 0, "{q:#}");
    }
    let lookup = queries
        .iter()
        .find(|q| q["view"] == "accounts" && q["kind"] == "key_lookup")
        .expect("a key lookup");
    assert_eq!(
        lookup["sql"],
        "SELECT * FROM \"accounts\" WHERE \"account_id\" = $1"
    );
}

#[test]
fn bench_refuses_what_it_cannot_measure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = write(dir.path(), "bank.yaml", generator_pipeline(100));
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    let mut cmd = projector();
    cmd.arg("bench")
        .arg(&pipeline)
        .arg("--state-dir")
        .arg(&full);
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(1);
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);

    let stdin = write(
        dir.path(),
        "stdin.yaml",
        common::file_pipeline("-", "dead_letter"),
    );
    let mut cmd = projector();
    cmd.arg("bench").arg(&stdin);
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(1);
    assert!(out.stderr.contains("cannot replay stdin"), "{}", out.stderr);
}

#[test]
fn a_short_bench_against_the_hand_written_loop() {
    let events = 30_000;
    let text = generator_pipeline(events);
    let (keys, seed) = (yaml_int(&text, "keys"), yaml_int(&text, "seed"));
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = write(dir.path(), "bank.yaml", &text);
    let (table, report) = bench(
        dir.path(),
        &pipeline,
        &["--runs", "2", "--throughput-only", "--against-loop"],
    );
    assert!(table.contains("against the hand-written loop"), "{table}");
    let l = &report["against_loop"];
    assert_eq!(l["runs"].as_array().map(Vec::len), Some(2), "{l:#}");
    // Each run's ratio is Projector's rate over the loop's pass after it; with two
    // runs the median is their mean.
    let runs = report["throughput"]["runs"].as_array().expect("runs");
    let mut ratios: Vec<f64> = runs
        .iter()
        .zip(l["runs"].as_array().expect("loop runs"))
        .map(|(r, l)| f(r, "/events_per_s") / l.as_f64().expect("a rate"))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    assert!(ratios[0] > 0.0, "{ratios:?}");
    assert!(close(f(l, "/ratio_min"), ratios[0]), "{ratios:?} {l:#}");
    assert!(close(f(l, "/ratio_max"), ratios[1]), "{ratios:?} {l:#}");
    assert!(
        close(f(l, "/ratio"), (ratios[0] + ratios[1]) / 2.0),
        "{ratios:?} {l:#}"
    );

    // The digest both computed is the oracle's.
    let expected = oracle::expected(&generator_records(events, keys, seed));
    let d = &l["digest"];
    assert_eq!(d["accounts"], expected.accounts.len());
    let sum = |f: fn(&oracle::Account) -> Option<i64>| -> i64 {
        expected.accounts.iter().filter_map(f).sum()
    };
    assert_eq!(d["balance"], sum(|a| a.balance));
    assert_eq!(d["deposits"], sum(|a| a.deposits));
    assert_eq!(d["last_version"], sum(|a| a.last_version));
    let owners = expected
        .accounts
        .iter()
        .filter(|a| a.owner.is_some())
        .count();
    assert_eq!(d["owners"], owners);
    let volume = d["volume"].as_object().expect("volume");
    assert_eq!(volume.len(), expected.volume.len());
    for v in &expected.volume {
        let got = &volume[&v.event_type];
        assert_eq!(got["events"], v.events, "{}", v.event_type);
        assert_eq!(got["total"].as_f64(), v.total, "{}", v.event_type);
        assert_eq!(got["largest"].as_f64(), v.largest, "{}", v.event_type);
        assert_eq!(got["average"].as_f64(), v.average, "{}", v.event_type);
    }
}

#[test]
fn the_loop_refuses_a_pipeline_it_does_not_compute() {
    // Deposits counted twice: the loop's views would differ, so no ratio is given.
    let text = generator_pipeline(5_000).replace(
        "add: { balance: payload.amount, deposits: 1 }",
        "add: { balance: payload.amount, deposits: 2 }",
    );
    assert!(text.contains("deposits: 2"), "the replacement took");
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = write(dir.path(), "bank.yaml", &text);
    let mut cmd = projector();
    cmd.current_dir(dir.path())
        .arg("bench")
        .arg(&pipeline)
        .args([
            "--runs",
            "1",
            "--throughput-only",
            "--against-loop",
            "--quiet",
        ]);
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("the hand-written loop and the pipeline disagree"),
        "{}",
        out.stderr
    );
}
