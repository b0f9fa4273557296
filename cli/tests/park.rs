//! `on_error: park`: a poison event parks its key only; the key's later events are
//! held, survive `kill -9`, and are applied in order once the pipeline is fixed and the
//! key retried (or its failing event skipped).

mod common;

use common::cluster::{Running, free_port, get_json, wait_for};
use common::oracle::expected;
use common::{file_pipeline, generator_records, projector};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const SQL: &str = "SELECT * FROM accounts ORDER BY account_id";

/// The bank pipeline's `accounts` view alone, reading `events.ndjson`, parking keys.
fn pipeline() -> String {
    let text = file_pipeline("events.ndjson", "park");
    let cut = text
        .find("  - name: volume_by_type")
        .expect("the bank pipeline has volume_by_type");
    text[..cut].to_string()
}

/// The fix: amounts sent as text are cast (the first poison's); text that is not a
/// number still fails (the second's).
fn fixed(pipeline: &str) -> String {
    let fixed = pipeline.replace(
        "add: { balance: payload.amount, deposits: 1 }",
        "add: { balance: \"CAST(payload.amount AS BIGINT)\", deposits: 1 }",
    );
    assert_ne!(fixed, pipeline);
    fixed
}

/// `POST /sql` in JSON: the rows.
fn rows(port: u16) -> Vec<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(format!("http://127.0.0.1:{port}/sql?format=json"))
        .header("content-type", "text/plain")
        .send(SQL)
        .expect("POST /sql");
    let text = r.body_mut().read_to_string().expect("body");
    assert_eq!(r.status().as_u16(), 200, "{text}");
    serde_json::from_str(&text).expect("JSON rows")
}

/// The oracle's rows of `records`, with `_parked` for the keys in `parked`, by key.
fn oracle_rows(records: &[(u64, Vec<u8>)], parked: &[&str]) -> BTreeMap<String, Value> {
    expected(records)
        .accounts_json()
        .into_iter()
        .map(|mut row| {
            let key = row["account_id"].as_str().expect("key").to_string();
            row["_parked"] = json!(parked.contains(&key.as_str()));
            (key, row)
        })
        .collect()
}

fn by_key(rows: Vec<Value>) -> BTreeMap<String, Value> {
    rows.into_iter()
        .map(|r| (r["account_id"].as_str().expect("key").to_string(), r))
        .collect()
}

/// The parked keys an instance lists.
fn parked(port: u16) -> Vec<Value> {
    get_json(port, "/parked")
        .and_then(|v| v["parked"].as_array().cloned())
        .unwrap_or_default()
}

/// `projector parked ARGS` against the instance on `port`: (exit code, stdout).
fn parked_cli(port: u16, args: &[&str]) -> (i32, Value, String) {
    let out = projector()
        .arg("parked")
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(args)
        .output()
        .expect("projector parked");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let first = stdout.lines().next().unwrap_or("null");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(first).unwrap_or(Value::Null),
        stderr,
    )
}

fn start(dir: &Path, port: u16, extra: &[&str]) -> Running {
    let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
    Running::start_with(
        &dir.join("bank.yaml"),
        &dir.join("state"),
        port,
        2,
        Some(&dir.join(format!("run-{port}.log"))),
        &extra,
    )
}

/// Picks a deposit of a key that has a row before it and at least three events after
/// it; not one of `taken`. Returns its index in `events`.
fn pick(events: &[Value], taken: &[String]) -> usize {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        *seen
            .entry(e["aggregateId"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let mut before: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let key = e["aggregateId"].as_str().unwrap_or_default().to_string();
        let n = before.entry(key.clone()).or_default();
        *n += 1;
        if e["eventType"] == "MoneyDeposited"
            && *n >= 3
            && seen[&key] >= *n + 3
            && !taken.contains(&key)
            && i > events.len() / 3
        {
            let earlier = events[..i]
                .iter()
                .filter(|x| x["aggregateId"].as_str() == Some(&key))
                .any(|x| x["eventType"] == "AccountClosed");
            if !earlier {
                return i;
            }
        }
    }
    panic!("no deposit to poison");
}

#[test]
fn a_poison_event_parks_its_key_until_it_is_retried_or_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = generator_records(6_000, 150, 23);
    let events: Vec<Value> = records
        .iter()
        .map(|(_, raw)| serde_json::from_slice(raw).expect("generator JSON"))
        .collect();
    let first = pick(&events, &[]);
    let k1 = events[first]["aggregateId"]
        .as_str()
        .expect("key")
        .to_string();
    let second = pick(&events, std::slice::from_ref(&k1));
    let k2 = events[second]["aggregateId"]
        .as_str()
        .expect("key")
        .to_string();

    // K1's poison: its amount as text ("250"), which the fix casts. K2's: text that is
    // no number, which the fix does not cure: it is skipped.
    let mut poisoned = events.clone();
    let amount = poisoned[first]["payload"]["amount"].clone();
    poisoned[first]["payload"]["amount"] = json!(amount.to_string());
    poisoned[second]["payload"]["amount"] = json!("lots");
    let lines: Vec<Vec<u8>> = poisoned
        .iter()
        .map(|e| serde_json::to_vec(e).expect("JSON"))
        .collect();
    let mut input = Vec::new();
    for l in &lines {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    let text = pipeline();
    std::fs::write(dir.path().join("bank.yaml"), &text).expect("write pipeline");

    // The oracle: the final views are every event, K1's as sent before it was poisoned
    // and K2's poison left out (skipped). Before the retry, the parked keys' rows are
    // their events before their poison.
    let offsets = |keep: &dyn Fn(usize) -> bool| -> Vec<(u64, Vec<u8>)> {
        records
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, (o, raw))| (*o, raw.clone()))
            .collect()
    };
    let key_of = |i: usize| events[i]["aggregateId"].as_str().unwrap_or_default();
    let final_rows = oracle_rows(&offsets(&|i| i != second), &[]);
    let mut parked_rows = oracle_rows(&offsets(&|i| i != second), &[]);
    for (k, at) in [(&k1, first), (&k2, second)] {
        let before = oracle_rows(&offsets(&|i| i < at && key_of(i) == k), &[k.as_str()]);
        parked_rows.insert(k.clone(), before[k.as_str()].clone());
    }
    let held = |k: &str, at: usize| (at + 1..events.len()).filter(|&i| key_of(i) == k).count();

    // Run: both keys parked, every other key's row as the oracle's.
    let port = free_port();
    let mut engine = start(dir.path(), port, &[]);
    assert!(
        wait_for(60, || parked(port).len() == 2
            && parked(port)
                .iter()
                .map(|p| p["held"].as_u64())
                .sum::<Option<u64>>()
                == Some((held(&k1, first) + held(&k2, second)) as u64)),
        "two keys parked: {:?}",
        parked(port)
    );
    let list = parked(port);
    let p1 = list.iter().find(|p| p["key"] == k1.as_str()).expect("K1");
    assert_eq!(p1["code"], "apply.type_mismatch", "{p1}");
    assert_eq!(p1["offset"], records[first].0, "{p1}");
    assert_eq!(p1["held"], held(&k1, first), "{p1}");
    assert!(wait_for(30, || by_key(rows(port)) == parked_rows));
    let status = get_json(port, "/status").expect("status");
    assert_eq!(status["parked"]["keys"], 2, "{status}");

    // kill -9: the parked keys and what they hold survive.
    engine.0.kill().expect("kill -9");
    let _ = engine.0.wait();
    let mut engine = start(dir.path(), port, &[]);
    assert!(wait_for(60, || parked(port) == list), "{:?}", parked(port));
    assert!(wait_for(30, || by_key(rows(port)) == parked_rows));

    // Parked keys need on_error: park to be resumed: another policy is refused.
    assert_eq!(engine.terminate(30), Some(0));
    let other = text.replace("on_error: park", "on_error: dead_letter");
    assert_ne!(other, text);
    std::fs::write(dir.path().join("bank.yaml"), &other).expect("write pipeline");
    let refused = projector()
        .arg("run")
        .arg(dir.path().join("bank.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--once")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds 2 parked key(s)"), "{stderr}");

    // The fix changes the view's logic: refused, unless accepted explicitly.
    std::fs::write(dir.path().join("bank.yaml"), fixed(&text)).expect("write fix");
    let refused = projector()
        .arg("run")
        .arg(dir.path().join("bank.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--once")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--accept-logic-change VIEW"), "{stderr}");
    let mut engine = start(dir.path(), port, &["--accept-logic-change", "accounts"]);
    assert!(wait_for(60, || parked(port).len() == 2));

    // Retry K1: its poison now casts, and its held events follow in order.
    let (code, done, stderr) = parked_cli(port, &["retry", &k1]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(done["applied"], held(&k1, first) + 1, "{done}");
    assert!(done["parked"].is_null(), "{done}");
    // K2's poison is no number: still parked, and the command says so.
    let (code, again, stderr) = parked_cli(port, &["retry", &k2]);
    assert_eq!(code, 1, "{again}");
    assert!(stderr.contains("parked again"), "{stderr}");
    assert_eq!(again["parked"]["code"], "apply.expression", "{again}");
    assert_eq!(again["applied"], 0, "{again}");
    // Skip it: to the dead letters, and the held events are applied.
    let (code, skipped, stderr) = parked_cli(port, &["skip", &k2]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(skipped["skipped"], records[second].0, "{skipped}");
    assert_eq!(skipped["applied"], held(&k2, second), "{skipped}");
    let (code, _, stderr) = parked_cli(port, &["retry", &k2]);
    assert_eq!(code, 1, "nothing left to retry");
    assert!(stderr.contains("park.not_parked"), "{stderr}");

    assert!(wait_for(30, || parked(port).is_empty()));
    assert!(wait_for(30, || by_key(rows(port)) == final_rows));
    assert_eq!(engine.terminate(30), Some(0));

    // The skipped event is a dead letter, byte for byte.
    let letters = std::fs::read_to_string(dir.path().join("state/dead-letters.ndjson"))
        .expect("dead letters");
    let letters: Vec<Value> = letters
        .lines()
        .map(|l| serde_json::from_str(l).expect("letter"))
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["error"]["code"], "park.skipped", "{letters:?}");
    assert_eq!(letters[0]["source"]["offset"], records[second].0);
    let raw = letters[0]["raw"].as_str().expect("raw text");
    assert_eq!(raw.as_bytes(), &lines[second][..]);

    // And all of it was checkpointed.
    let out = projector()
        .arg("run")
        .arg(dir.path().join("bank.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--once", "--format", "json", "--sql", SQL])
        .output()
        .expect("run --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = common::json_lines(&out.stdout).remove(0);
    assert_eq!(by_key(rows), final_rows);
}

/// A parked key holds at most `park.max_held` events: one more stops the run, naming
/// the key and the way out, and nothing is lost (the checkpoint is before it).
#[test]
fn a_full_parked_key_stops_the_run_and_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = generator_records(3_000, 60, 5);
    let mut events: Vec<Value> = records
        .iter()
        .map(|(_, raw)| serde_json::from_slice(raw).expect("generator JSON"))
        .collect();
    let at = pick(&events, &[]);
    let key = events[at]["aggregateId"].as_str().expect("key").to_string();
    events[at]["payload"]["amount"] = json!("lots");
    let mut input = Vec::new();
    for e in &events {
        input.extend_from_slice(&serde_json::to_vec(e).expect("JSON"));
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    let text = pipeline().replace("on_error: park", "on_error: park\npark: { max_held: 2 }");
    std::fs::write(dir.path().join("bank.yaml"), &text).expect("write pipeline");
    let out = projector()
        .arg("run")
        .arg(dir.path().join("bank.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--once")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("key '{key}'"))
            && stderr.contains("holds 2 events")
            && stderr.contains("raising park.max_held"),
        "{stderr}"
    );
}
