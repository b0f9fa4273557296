//! Dead-letter redrive: after a fix, `projector dead-letters replay` sends the dead
//! letters back through the pipeline, to their own partition's state, each applied
//! once: also when the replay is killed midway and run again, and when it is run twice.

mod common;

use common::cluster::{Running, free_port, get_json, wait_for};
use common::{generator_records, json_lines, projector};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

const SQL: &str = "SELECT * FROM accounts ORDER BY account_id";

/// Balances and deposit counts: sums, so a letter replayed late adds up to the same.
/// No versions: a replayed letter is older than its key's newer events.
const PIPELINE: &str = "name: redrive
source: { type: file, path: events.ndjson }
on_error: dead_letter
publish_interval: 100ms
checkpoint: { interval: 100ms }
envelope: { id: eventId, type: eventType, key: aggregateId }
views:
  - name: accounts
    fold:
      key_column: account_id
      columns:
        balance: { type: int64, default: 0 }
        deposits: { type: int64, default: 0 }
      on:
        MoneyDeposited: { add: { balance: payload.amount, deposits: 1 } }
        MoneyWithdrawn: { add: { balance: -payload.amount } }
";

/// The fix: amounts sent as text are cast.
fn fixed() -> String {
    let fixed = PIPELINE.replace(
        "add: { balance: payload.amount, deposits: 1 }",
        "add: { balance: \"CAST(payload.amount AS BIGINT)\", deposits: 1 }",
    );
    assert_ne!(fixed, PIPELINE);
    fixed
}

/// The rows `events` fold into, those for which `keep` holds.
fn oracle(events: &[Value], keep: impl Fn(usize) -> bool) -> BTreeMap<String, Value> {
    let mut rows: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if !keep(i) {
            continue;
        }
        let key = e["aggregateId"].as_str().expect("key").to_string();
        let amount = e["payload"]["amount"].as_i64();
        match e["eventType"].as_str() {
            Some("MoneyDeposited") => {
                let r = rows.entry(key).or_default();
                r.0 += amount.expect("amount");
                r.1 += 1;
            }
            Some("MoneyWithdrawn") => rows.entry(key).or_default().0 -= amount.expect("amount"),
            _ => {}
        }
    }
    rows.into_iter()
        .map(|(k, (balance, deposits))| {
            let row = json!({"account_id": k, "balance": balance, "deposits": deposits});
            (k, row)
        })
        .collect()
}

fn by_key(rows: Vec<Value>) -> BTreeMap<String, Value> {
    rows.into_iter()
        .map(|r| (r["account_id"].as_str().expect("key").to_string(), r))
        .collect()
}

/// `projector ARGS` on the pipeline in `dir` and its state `state`.
fn cli(dir: &Path, state: &Path, args: &[&str]) -> Output {
    let mut cmd = projector();
    cmd.args(args)
        .arg(dir.join("pipeline.yaml"))
        .arg("--state-dir")
        .arg(state);
    cmd.output().expect("projector")
}

/// `run --once` printing the view, on `state`.
fn rows_once(dir: &Path, state: &Path, extra: &[&str]) -> BTreeMap<String, Value> {
    let mut cmd = projector();
    cmd.arg("run")
        .arg(dir.join("pipeline.yaml"))
        .arg("--state-dir")
        .arg(state)
        .args(["--once", "--format", "json", "--sql", SQL])
        .args(extra);
    let out = cmd.output().expect("run --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    by_key(json_lines(&out.stdout).remove(0))
}

/// The replay summary's figures: (queued, applied, before, failed).
fn replayed(stderr: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("dead letters replayed:"))
        .unwrap_or_else(|| panic!("no replay summary in {stderr}"));
    let n = |after: &str, before: &str| -> u64 {
        let start = line.find(after).map(|i| i + after.len()).expect(after);
        let rest = &line[start..];
        let end = rest.find(before).expect(before);
        rest[..end]
            .trim()
            .replace(',', "")
            .parse()
            .expect("a count")
    };
    (
        n("replayed:", "·"),
        n("·", "applied"),
        n("(duplicates) ·", "replayed before"),
        n("replayed before ·", "failed again"),
    )
}

#[test]
fn dead_letters_replayed_after_a_fix_are_applied_once_even_when_killed_midway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = generator_records(120_000, 2_000, 31);
    let mut events: Vec<Value> = records
        .iter()
        .map(|(_, raw)| serde_json::from_slice(raw).expect("generator JSON"))
        .collect();
    // Most deposits of every third key come with their amount as text: dead letters
    // the fix cures. Three more have text that is no number: they fail again.
    let mut cured = Vec::new();
    let mut uncured = Vec::new();
    for (i, e) in events.iter_mut().enumerate() {
        let key_n: u64 = e["aggregateId"]
            .as_str()
            .and_then(|k| k.rsplit('-').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if e["eventType"] == "MoneyDeposited" && key_n.is_multiple_of(3) && i % 5 != 0 {
            if uncured.len() < 3 && i > 1000 {
                e["payload"]["amount"] = json!("lots");
                uncured.push(i);
            } else {
                let amount = e["payload"]["amount"].clone();
                e["payload"]["amount"] = json!(amount.to_string());
                cured.push(i);
            }
        }
    }
    assert!(cured.len() > 10_000, "{} letters", cured.len());
    let mut input = Vec::new();
    for e in &events {
        input.extend_from_slice(&serde_json::to_vec(e).expect("JSON"));
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    std::fs::write(dir.path().join("pipeline.yaml"), PIPELINE).expect("write pipeline");
    // The oracle over the events as sent: text amounts fail, or cast after the fix.
    let original: Vec<Value> = records
        .iter()
        .map(|(_, raw)| serde_json::from_slice(raw).expect("generator JSON"))
        .collect();
    let bad: std::collections::BTreeSet<usize> = cured.iter().chain(&uncured).copied().collect();
    let before_fix = oracle(&original, |i| !bad.contains(&i));
    let after_fix = oracle(&original, |i| !uncured.contains(&i));
    let letters = cured.len() + uncured.len();

    // The first run dead-letters every text amount.
    let base = dir.path().join("base");
    assert_eq!(rows_once(dir.path(), &base, &[]), before_fix);
    let listed = cli(dir.path(), &base, &["dead-letters", "list"]);
    assert!(listed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        letters
    );

    std::fs::write(dir.path().join("pipeline.yaml"), fixed()).expect("write fix");
    // Killed midway: a checkpoint with some letters replayed, and not all of them.
    // Each attempt on a fresh copy of the state; kept when the kill landed midway.
    let port = free_port();
    let mut midway = None;
    for attempt in 0..6 {
        let state = dir.path().join(format!("attempt-{attempt}"));
        let copied = std::process::Command::new("cp")
            .arg("-r")
            .arg(&base)
            .arg(&state)
            .status()
            .expect("cp");
        assert!(copied.success());
        let flags: Vec<&std::ffi::OsStr> = ["--replay-dead-letters", "--accept-logic-change"]
            .iter()
            .chain(&["accounts"])
            .map(std::ffi::OsStr::new)
            .collect();
        let mut engine = Running::start_with(
            &dir.path().join("pipeline.yaml"),
            &state,
            port,
            1,
            None,
            &flags,
        );
        let mut checkpoint_at_start = None;
        let caught = wait_for(60, || {
            let Some(s) = get_json(port, "/status") else {
                return false;
            };
            let epoch = s["checkpoint"]["epoch"].as_u64().unwrap_or(0);
            let start = *checkpoint_at_start.get_or_insert(epoch);
            let applied = s["redrive"]["applied"].as_u64().unwrap_or(0);
            (epoch > start && applied > 0) || applied >= cured.len() as u64
        });
        assert!(caught, "the replay did not start");
        engine.0.kill().expect("kill -9");
        let _ = engine.0.wait();
        let out = cli(
            dir.path(),
            &state,
            &[
                "dead-letters",
                "replay",
                "--accept-logic-change",
                "accounts",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let (queued, applied, before, failed) = replayed(&stderr);
        assert_eq!(queued, letters as u64, "{stderr}");
        assert_eq!(failed, 3, "{stderr}");
        assert_eq!(applied + before, cured.len() as u64, "{stderr}");
        assert!(
            stderr.contains("failed again (left as a dead letter)")
                && stderr.contains("apply.expression"),
            "{stderr}"
        );
        eprintln!("attempt {attempt}: after the kill, {before} replayed before, {applied} applied");
        assert_eq!(
            rows_once(dir.path(), &state, &[]),
            after_fix,
            "attempt {attempt}"
        );
        if before > 0 && applied > 0 {
            midway = Some(state);
            break;
        }
    }
    let state = midway.expect("in 6 attempts, no kill landed midway through the replay");

    // Once more: every letter was replayed before; the views stay.
    let out = cli(
        dir.path(),
        &state,
        &[
            "dead-letters",
            "replay",
            "--accept-logic-change",
            "accounts",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        replayed(&stderr),
        (letters as u64, 0, cured.len() as u64, 3),
        "{stderr}"
    );
    assert_eq!(rows_once(dir.path(), &state, &[]), after_fix);
    // The letters are where they were: none added, none lost.
    let listed = cli(dir.path(), &state, &["dead-letters", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        letters
    );
}

/// A letter whose record is read again after a crash (its letter was written, its
/// checkpoint was not) and applied by the fixed pipeline counts as replayed: a later
/// replay does not apply it a second time.
#[test]
fn a_letter_applied_when_its_record_is_read_again_is_not_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = generator_records(400_000, 3_000, 37);
    let mut events: Vec<Value> = records
        .iter()
        .map(|(_, raw)| serde_json::from_slice(raw).expect("generator JSON"))
        .collect();
    let mut bad = 0;
    for (i, e) in events.iter_mut().enumerate() {
        if e["eventType"] == "MoneyDeposited" && i % 7 == 0 {
            let amount = e["payload"]["amount"].clone();
            e["payload"]["amount"] = json!(amount.to_string());
            bad += 1;
        }
    }
    let mut input = Vec::new();
    for e in &events {
        input.extend_from_slice(&serde_json::to_vec(e).expect("JSON"));
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    // No checkpoint until the end: killed before it, the letters are there, not the
    // state.
    let slow = PIPELINE.replace(
        "checkpoint: { interval: 100ms }",
        "checkpoint: { interval: 1h }",
    );
    assert_ne!(slow, PIPELINE);
    std::fs::write(dir.path().join("pipeline.yaml"), &slow).expect("pipeline");
    let state = dir.path().join("state");
    let port = free_port();
    let mut engine = Running::start_with(
        &dir.path().join("pipeline.yaml"),
        &state,
        port,
        1,
        None,
        &[],
    );
    let file = state.join("dead-letters.ndjson");
    let written = wait_for(60, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() > 100)
    });
    assert!(written, "letters written");
    engine.0.kill().expect("kill -9");
    let _ = engine.0.wait();
    assert!(
        common::checkpoint_dirs(&state).is_empty(),
        "killed before any checkpoint"
    );
    let letters = std::fs::read_to_string(&file)
        .expect("letters")
        .lines()
        .count() as u64;
    assert!(letters < bad, "killed midway: {letters} letters of {bad}");

    // The fixed pipeline reads everything again and applies what was bad.
    std::fs::write(dir.path().join("pipeline.yaml"), fixed()).expect("fix");
    let original: Vec<Value> = records
        .iter()
        .map(|(_, raw)| serde_json::from_slice(raw).expect("generator JSON"))
        .collect();
    let all = oracle(&original, |_| true);
    assert_eq!(rows_once(dir.path(), &state, &[]), all);
    let out = cli(dir.path(), &state, &["dead-letters", "replay"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(replayed(&stderr), (letters, 0, letters, 0), "{stderr}");
    assert_eq!(rows_once(dir.path(), &state, &[]), all);
}
