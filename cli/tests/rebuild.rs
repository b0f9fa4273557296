//! Versioned views: a view whose handler changed with a new `version:` is rebuilt from
//! the start of the input beside the old version, which answers meanwhile; the name
//! switches to the new version at once, and a rebuild killed with `kill -9` resumes.

mod common;

use common::cluster::{Running, free_port, get_json, wait_for};
use common::oracle::expected;
use common::{file_pipeline, generator_records, projector};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const COUNTS: &str = "SELECT count(*) AS n, sum(deposits) AS d FROM accounts";
const ROWS: &str = "SELECT * FROM accounts ORDER BY account_id";

/// The bank pipeline on `events.ndjson`, checkpointing often.
fn old_pipeline() -> String {
    file_pipeline("events.ndjson", "dead_letter").replace(
        "on_error: dead_letter",
        "on_error: dead_letter\ncheckpoint: { interval: 100ms }",
    )
}

/// Version 2 of `accounts`: deposits count twice (what the oracle can say too).
fn new_pipeline() -> String {
    let old = old_pipeline();
    let new = old
        .replace(
            "  - name: accounts\n",
            "  - name: accounts\n    version: 2\n",
        )
        .replace(
            "add: { balance: payload.amount, deposits: 1 }",
            "add: { balance: payload.amount, deposits: 2 }",
        );
    assert_eq!(new.matches("version: 2").count(), 1);
    assert!(new.contains("deposits: 2"));
    new
}

/// `POST /sql` in JSON: (status, rows or error body).
fn sql(port: u16, query: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let Ok(mut r) = agent
        .post(format!("http://127.0.0.1:{port}/sql?format=json"))
        .header("content-type", "text/plain")
        .send(query)
    else {
        return (0, Value::Null);
    };
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The oracle's `accounts` with deposits counted twice, by key.
fn oracle_v2(records: &[(u64, Vec<u8>)]) -> BTreeMap<String, Value> {
    expected(records)
        .accounts_json()
        .into_iter()
        .map(|mut r| {
            if let Some(d) = r["deposits"].as_i64() {
                r["deposits"] = (2 * d).into();
            }
            (r["account_id"].as_str().expect("key").to_string(), r)
        })
        .collect()
}

fn by_key(rows: &Value) -> BTreeMap<String, Value> {
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["account_id"].as_str().expect("key").to_string(),
                r.clone(),
            )
        })
        .collect()
}

fn start(dir: &Path, state: &Path, port: u16, log: &str) -> Running {
    Running::start_logged(&dir.join("bank.yaml"), state, port, 1, Some(&dir.join(log)))
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(ok.success());
}

#[test]
fn a_new_version_is_rebuilt_beside_the_old_and_switched_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = generator_records(300_000, 2_000, 41);
    let mut input = Vec::new();
    for (_, raw) in &records {
        input.extend_from_slice(raw);
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    let old = expected(&records);
    let deposits: i64 = old.accounts.iter().filter_map(|a| a.deposits).sum();
    let keys = old.accounts.len() as i64;
    let final_rows = oracle_v2(&records);

    // Version 1, to the end of the input.
    std::fs::write(dir.path().join("bank.yaml"), old_pipeline()).expect("pipeline");
    let v1 = dir.path().join("v1");
    let out = projector()
        .arg("run")
        .arg(dir.path().join("bank.yaml"))
        .arg("--once")
        .arg("--state-dir")
        .arg(&v1)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Version 2 on a copy: rebuilt while version 1 answers.
    std::fs::write(dir.path().join("bank.yaml"), new_pipeline()).expect("pipeline");
    let state = dir.path().join("state");
    copy_dir(&v1, &state);
    let port = free_port();
    let mut engine = start(dir.path(), &state, port, "run.log");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let looping = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = sql(port, COUNTS);
                if status != 0 {
                    seen.lock().expect("seen").push((status, body));
                }
            }
        })
    };
    let mut side_seen = false;
    let mut catching_up = false;
    let switched = wait_for(120, || {
        let Some(status) = get_json(port, "/status") else {
            return false;
        };
        if status["rebuild"]["state"] == "catching up" {
            catching_up = true;
            assert_eq!(
                status["rebuild"]["views"][0]["as"], "accounts__v2",
                "{status}"
            );
            let (code, rows) = sql(port, "SELECT count(*) AS n FROM accounts__v2");
            if code == 200 && rows[0]["n"].as_i64().is_some_and(|n| n <= keys) {
                side_seen = true;
            }
        }
        let (code, rows) = sql(port, COUNTS);
        status["rebuild"].is_null() && code == 200 && rows[0]["d"] == 2 * deposits
    });
    stop.store(true, Ordering::Relaxed);
    looping.join().expect("query loop");
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    assert!(switched, "never switched: {log}");
    assert!(
        catching_up && side_seen,
        "the rebuild was never seen under way: {log}"
    );
    // Every answer of the loop: the whole old version or the whole new one.
    let seen = seen.lock().expect("seen");
    assert!(seen.len() > 10, "{} answers", seen.len());
    let (mut olds, mut news) = (0, 0);
    for (status, body) in seen.iter() {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body[0]["n"], keys, "{body}");
        match body[0]["d"].as_i64() {
            Some(d) if d == deposits => olds += 1,
            Some(d) if d == 2 * deposits => news += 1,
            _ => panic!("a half-built answer: {body}"),
        }
    }
    assert!(olds > 0, "the old version answered while rebuilding");
    let (code, rows) = sql(port, ROWS);
    assert_eq!(code, 200);
    assert_eq!(by_key(&rows), final_rows);
    let (code, _) = sql(port, "SELECT count(*) FROM accounts__v2");
    assert_ne!(code, 200, "the rebuild's name is gone after the switch");
    assert_eq!(engine.terminate(30), Some(0));
    let _ = news;

    // kill -9 in the middle of the rebuild: the next start resumes it.
    let state = dir.path().join("killed");
    copy_dir(&v1, &state);
    let port = free_port();
    let mut engine = start(dir.path(), &state, port, "killed.log");
    let midway = wait_for(120, || {
        get_json(port, "/status").is_some_and(|s| {
            s["rebuild"]["read"].as_u64().is_some_and(|r| r > 50_000)
                && state.join("rebuild/checkpoints").exists()
        })
    });
    assert!(midway, "the rebuild did not get under way");
    engine.0.kill().expect("kill -9");
    let _ = engine.0.wait();
    let mut engine = start(dir.path(), &state, port, "resumed.log");
    let done = wait_for(120, || {
        get_json(port, "/status").is_some_and(|s| s["rebuild"].is_null())
            && sql(port, COUNTS).1[0]["d"] == 2 * deposits
    });
    let log = std::fs::read_to_string(dir.path().join("resumed.log")).unwrap_or_default();
    assert!(done, "{log}");
    assert!(
        log.contains("bank-accounts-rebuild:") && log.contains("resuming from checkpoint"),
        "the rebuild resumed from its checkpoint: {log}"
    );
    let (code, rows) = sql(port, ROWS);
    assert_eq!(code, 200);
    assert_eq!(by_key(&rows), final_rows);
    assert_eq!(engine.terminate(30), Some(0));
}

/// `--rebuild VIEW` rebuilds a view whose logic and version did not change (after a
/// bug fix in the engine, say), under `VIEW__rebuild`, and a changed view without a
/// new version is still refused while others are rebuilt.
#[test]
fn rebuild_forces_a_rebuild_of_an_unchanged_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = generator_records(20_000, 300, 43);
    let mut input = Vec::new();
    for (_, raw) in &records {
        input.extend_from_slice(raw);
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    std::fs::write(dir.path().join("bank.yaml"), old_pipeline()).expect("pipeline");
    let run = |extra: &[&str]| {
        projector()
            .arg("run")
            .arg(dir.path().join("bank.yaml"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--once", "--format", "json", "--sql", ROWS])
            .args(extra)
            .output()
            .expect("run")
    };
    let first = run(&[]);
    assert!(first.status.success());
    let out = run(&["--rebuild", "accounts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rebuilding accounts (as accounts__rebuild)")
            && stderr.contains("switched accounts"),
        "{stderr}"
    );
    let rows: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().expect("a line"))
            .expect("rows");
    let want: BTreeMap<String, Value> = expected(&records)
        .accounts_json()
        .into_iter()
        .map(|r| (r["account_id"].as_str().expect("key").to_string(), r))
        .collect();
    assert_eq!(by_key(&rows), want);
    assert!(
        !dir.path().join("state/rebuild").exists(),
        "its state is gone"
    );
    // The rows are the rebuilt ones: the switch wrote a checkpoint from them.
    let switched = common::checkpoint_dirs(&dir.path().join("state"))
        .iter()
        .filter_map(|d| common::manifest(d))
        .any(|m| m["extra"]["switched"].is_string());
    assert!(switched, "the switch wrote the rebuilt state");

    // A new version of one view and a changed one without: refused, naming it.
    let text = new_pipeline().replace(
        "filter: \"eventType <> 'AccountOpened'\"",
        "filter: \"eventType <> 'AccountClosed'\"",
    );
    assert_ne!(text, new_pipeline());
    std::fs::write(dir.path().join("bank.yaml"), text).expect("pipeline");
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("volume_by_type changed without a new version"),
        "{stderr}"
    );
}

/// The same against a Kafka topic, `--once`: the rebuild reads the topic from its start
/// in a consumer group of its own.
#[test]
fn a_kafka_rebuild_reads_the_topic_again_in_a_group_of_its_own() {
    use common::cluster::{Broker, pipeline, produce};
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = "rebuild-events";
    produce(&broker, topic, 20_000, 500, 47);
    let path = pipeline(dir.path(), &broker, topic);
    let state = dir.path().join("state");
    let run = |extra: &[&str]| {
        projector()
            .arg("run")
            .arg(&path)
            .arg("--state-dir")
            .arg(&state)
            .args(["--once", "--format", "json", "--sql", COUNTS])
            .args(extra)
            .output()
            .expect("run")
    };
    let counts = |out: &std::process::Output| -> (i64, i64) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let rows: Value =
            serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().expect("a line"))
                .expect("rows");
        (
            rows[0]["n"].as_i64().expect("n"),
            rows[0]["d"].as_i64().expect("d"),
        )
    };
    let (n, d) = counts(&run(&[]));
    let text = std::fs::read_to_string(&path).expect("pipeline");
    let v2 = text
        .replace(
            "  - name: accounts\n",
            "  - name: accounts\n    version: 2\n",
        )
        .replace(
            "add: { balance: payload.amount, deposits: 1 }",
            "add: { balance: payload.amount, deposits: 2 }",
        );
    assert_ne!(v2, text);
    std::fs::write(&path, &v2).expect("v2");
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(counts(&out), (n, 2 * d), "{stderr}");
    assert!(stderr.contains("switched accounts"), "{stderr}");

    // A topic that lost its oldest records refuses a rebuild (unit-tested in the
    // engine: Tansu 0.6 answers DeleteRecords with a broken connection and keeps every
    // record, so no topic here can lose any); this one has them all.
    let lows = projector_connectors::kafka::low_watermarks(
        &broker.address,
        &Default::default(),
        &[topic.to_string()],
    )
    .expect("low watermarks");
    assert_eq!(lows.len(), 4);
    assert!(lows.iter().all(|(_, low)| *low == 0), "{lows:?}");
}
