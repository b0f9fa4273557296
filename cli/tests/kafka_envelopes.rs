//! Envelopes as production topics carry them, against a real broker, with records
//! produced by an independent client (confluent-kafka):
//!
//! - The bank events as a transactional outbox captured by Debezium (change events,
//!   with and without the JSON converter's schema wrapper, a `jsonb` payload as a
//!   string, the outbox's own row deletes and Debezium's tombstones), as the outbox
//!   event router emits them (payload value, id and type in headers), and as
//!   CloudEvents in structured and binary mode mixed on one topic: each folds into the
//!   views the plain JSON of the same events gives (the oracle).
//! - Tombstones delete the key's fold row under `on_tombstone: delete`, and are counted
//!   and left alone by default.

mod common;

use common::cluster::*;
use common::{assert_rows, generator_records, oracle, summary};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The shipped example `name` (in `pipelines/`) reading `topic` on `broker`.
fn example(dir: &Path, name: &str, broker: &Broker, topic: &str) -> PathBuf {
    let text =
        example_text(name, broker, topic).replace("\nviews:", "\npublish_interval: 20ms\nviews:");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn bank_events(events: u64, keys: u64, seed: u64) -> (Vec<(u64, Vec<u8>)>, Vec<Value>) {
    let raw = generator_records(events, keys, seed);
    let parsed = raw
        .iter()
        .map(|(_, r)| serde_json::from_slice(r).expect("generator JSON"))
        .collect();
    (raw, parsed)
}

fn lines(records: &[Value]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| serde_json::to_vec(r).expect("json"))
        .collect()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs `pipeline` once and checks both views against the oracle of `raw`.
fn assert_equals_oracle(what: &str, pipeline: &Path, raw: &[(u64, Vec<u8>)]) -> String {
    let state = pipeline
        .parent()
        .expect("dir")
        .join(format!("state-{what}"));
    let (stderr, accounts, volume) = run_once(pipeline, &state);
    let exp = oracle::expected(raw);
    assert_rows(
        &format!("{what}: accounts"),
        &accounts,
        &exp.accounts_json(),
    );
    assert_rows(
        &format!("{what}: volume_by_type"),
        &volume,
        &exp.volume_json(),
    );
    stderr
}

#[test]
fn debezium_outbox_and_cloudevents_fold_like_the_plain_json_of_the_same_events() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, events) = bank_events(12_000, 300, 71);

    // 1. Change events of the outbox table, keyed by the aggregate id column
    //    (message.key.columns), every other one in the JSON converter's wrapper; every
    //    7th row is deleted again (the outbox's cleanup) and followed by a tombstone.
    let mut cdc = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let row = json!({
            "id": e["eventId"],
            "aggregatetype": "account",
            "aggregateid": e["aggregateId"],
            "type": e["eventType"],
            "version": e["version"],
            "timestamp": e["timestamp"],
            "payload": e["payload"].to_string(),   // jsonb arrives as a string
        });
        let key = json!({"aggregateid": e["aggregateId"]}).to_string();
        let change = json!({
            "before": null, "after": row, "op": "c",
            "source": {"ts_ms": e["timestamp"], "db": "bank", "table": "outbox"},
            "ts_ms": e["timestamp"],
        });
        let value = if i % 2 == 0 {
            json!({"schema": {"type": "struct", "name": "outbox.Envelope"}, "payload": change})
        } else {
            change
        };
        cdc.push(json!({"key": key, "value": value}));
        if i % 7 == 3 {
            let delete = json!({"before": row, "after": null, "op": "d", "ts_ms": e["timestamp"]});
            cdc.push(json!({"key": key, "value": delete}));
            cdc.push(json!({"key": key, "value": null}));
        }
    }
    produce_with_confluent(&broker.address, "outbox-cdc", &lines(&cdc), &["--wrapped"]);
    let p = example(
        dir.path(),
        "bank-accounts-debezium.yaml",
        &broker,
        "outbox-cdc",
    );
    let stderr = assert_equals_oracle("debezium change events", &p, &raw);
    let deletes = (0..events.len()).filter(|i| i % 7 == 3).count() as u64;
    assert_eq!(summary(&stderr).ignored, 2 * deletes, "{stderr}");

    // 2. The outbox event router: the value is the payload, the key the aggregate id,
    //    the event id, type and version in headers (text: `fields:` makes the version
    //    an integer).
    let routed: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "key": e["aggregateId"],
                "value": e["payload"],
                "headers": {"id": e["eventId"], "eventType": e["eventType"],
                            "version": e["version"].to_string()},
            })
        })
        .collect();
    produce_with_confluent(
        &broker.address,
        "outbox-routed",
        &lines(&routed),
        &["--wrapped"],
    );
    let dir2 = dir.path().join("routed");
    std::fs::create_dir_all(&dir2).expect("dir");
    let p = example(
        &dir2,
        "bank-accounts-debezium.yaml",
        &broker,
        "outbox-routed",
    );
    assert_equals_oracle("outbox router", &p, &raw);

    // 3. CloudEvents, structured and binary mode alternating on one topic.
    let cloud: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let time = rfc3339(e["timestamp"].as_i64().expect("ms"));
            if i % 2 == 0 {
                json!({"key": e["aggregateId"], "value": {
                    "specversion": "1.0", "id": e["eventId"], "type": e["eventType"],
                    "source": "/bank", "time": time, "version": e["version"],
                    "datacontenttype": "application/json", "data": e["payload"],
                }})
            } else {
                json!({"key": e["aggregateId"], "value": e["payload"], "headers": {
                    "ce_specversion": "1.0", "ce_id": e["eventId"], "ce_type": e["eventType"],
                    "ce_source": "/bank", "ce_time": time,
                    "ce_version": e["version"].to_string(),
                    "content-type": "application/json",
                }})
            }
        })
        .collect();
    produce_with_confluent(
        &broker.address,
        "cloudevents",
        &lines(&cloud),
        &["--wrapped"],
    );
    let dir3 = dir.path().join("cloud");
    std::fs::create_dir_all(&dir3).expect("dir");
    let p = example(
        &dir3,
        "bank-accounts-cloudevents.yaml",
        &broker,
        "cloudevents",
    );
    assert_equals_oracle("cloudevents", &p, &raw);
}

#[test]
fn tombstones_delete_fold_rows_when_the_pipeline_says_so() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, events) = bank_events(8_000, 200, 73);
    produce_with_confluent(&broker.address, "bank-tomb", &lines(&events), &[]);
    // A tombstone for every 10th account, after its events.
    let exp = oracle::expected(&raw);
    let gone: Vec<String> = exp
        .accounts
        .iter()
        .step_by(10)
        .map(|a| a.account_id.clone())
        .collect();
    let tombstones: Vec<Value> = gone
        .iter()
        .map(|k| json!({"key": k, "value": null}))
        .collect();
    produce_with_confluent(
        &broker.address,
        "bank-tomb",
        &lines(&tombstones),
        &["--wrapped"],
    );

    // Default: ignored (and counted).
    let p = pipeline_on(dir.path(), &broker, "bank-tomb", &Store::Local);
    let stderr = assert_equals_oracle("ignore", &p, &raw);
    assert_eq!(summary(&stderr).ignored, gone.len() as u64, "{stderr}");

    // on_tombstone: delete: the rows are gone, the aggregate keeps its counts.
    let dir2 = dir.path().join("delete");
    std::fs::create_dir_all(&dir2).expect("dir");
    let p = pipeline_on(&dir2, &broker, "bank-tomb", &Store::Local);
    let text = std::fs::read_to_string(&p).expect("pipeline");
    std::fs::write(
        &p,
        text.replace("\nviews:", "\non_tombstone: delete\nviews:"),
    )
    .expect("write");
    let (stderr, accounts, volume) = run_once(&p, &dir2.join("state"));
    let kept: Vec<Value> = exp
        .accounts
        .iter()
        .filter(|a| !gone.contains(&a.account_id))
        .map(oracle::Account::to_json)
        .collect();
    assert_rows("accounts", &accounts, &kept);
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_eq!(summary(&stderr).ignored, 0, "{stderr}");
}

/// Debezium change events of a plain table (not an outbox): creates, updates and
/// deletes of rows, with `on_tombstone: delete`, give the table as it is at the end.
#[test]
fn a_tables_change_events_with_deletes_give_the_table() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = common::Rng(0x51ed_270b_a3c5_81f7);
    let mut table: std::collections::BTreeMap<String, (String, i64)> = Default::default();
    let mut changes = Vec::new();
    for i in 0..6_000u64 {
        let id = format!("acct-{:03}", rng.below(150));
        let before = table
            .get(&id)
            .map(|(o, b)| json!({"id": id, "owner": o, "balance": b}));
        let (op, after) = match (&before, rng.below(10)) {
            (Some(_), 0) => ("d", None),
            (prev, _) => {
                let row = (format!("owner-{}", rng.below(50)), rng.below(10_000) as i64);
                let after = json!({"id": id, "owner": row.0, "balance": row.1});
                table.insert(id.clone(), row);
                (if prev.is_some() { "u" } else { "c" }, Some(after))
            }
        };
        if op == "d" {
            table.remove(&id);
        }
        let key = json!({"id": id}).to_string();
        let value = json!({"before": before, "after": after, "op": op,
                           "source": {"ts_ms": 1_767_225_600_000u64 + i, "table": "accounts"}});
        changes.push(json!({"key": key, "value": value}));
        if op == "d" {
            changes.push(json!({"key": key, "value": null})); // Debezium's tombstone
        }
    }
    produce_with_confluent(
        &broker.address,
        "db.accounts",
        &lines(&changes),
        &["--wrapped"],
    );
    let text = format!(
        "name: accounts-cdc
source:
  type: kafka
  brokers: {}
  topics: [db.accounts]
  properties: {{ session.timeout.ms: \"6000\" }}
on_tombstone: delete
envelope: {{ preset: debezium, key: id, type: __op, timestamp: __source_ts_ms }}
views:
  - name: accounts
    fold:
      key_column: id
      columns: {{ owner: string, balance: int64 }}
      on:
        \"*\": {{ set: {{ owner: owner, balance: balance }} }}
",
        broker.address
    );
    let pipeline = dir.path().join("accounts-cdc.yaml");
    std::fs::write(&pipeline, text).expect("pipeline");
    let sql = "SELECT * FROM accounts ORDER BY id";
    let rows = query_once(&pipeline, &dir.path().join("state"), sql);
    let want: Vec<Value> = table
        .iter()
        .map(|(id, (owner, balance))| json!({"id": id, "owner": owner, "balance": balance}))
        .collect();
    assert!(
        want.len() > 50 && want.len() < 150,
        "some rows deleted, some kept"
    );
    assert_rows("accounts", &rows, &want);
}
