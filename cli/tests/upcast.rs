//! Upcasters: a stream of bank events in three schema versions folds into the same
//! views as the same events all written in the newest version.

mod common;

use common::cluster::run_once;
use common::{Rng, assert_rows, file_pipeline, generator_records, oracle, summary};
use serde_json::{Value, json};

/// How the bank events changed, newest last:
/// - v1 (no `schemaVersion`): deposits were `FundsDeposited` with the amount as text in
///   `amt`; an account's owner was `customer.name`; heartbeats went to the same stream.
/// - v2: amounts in cents (`payload.amount_cents`); the owner in `person.name`.
/// - v3: the generator's events as they are.
const UPCAST: &str = r#"upcast:
  version: schemaVersion
  steps:
    FundsDeposited:
      1: { type: MoneyDeposited, set: { payload.amount_cents: "CAST(amt AS BIGINT) * 100" } }
    MoneyWithdrawn:
      1:
        rename: { payload.amount: payload.amount_cents }
        set: { payload.amount_cents: "payload.amount_cents * 100" }
      2: { set: { payload.amount: "payload.amount_cents / 100" } }
    MoneyDeposited:
      2: { set: { payload.amount: "payload.amount_cents / 100" } }
    AccountOpened:
      1: { rename: { customer: person } }
      2: { set: { payload.owner: "coalesce(person.name, payload.owner)" } }
    Heartbeat:
      1: drop
"#;

/// `event` (v3) as version `v` wrote it.
fn written_as(event: &Value, v: u64) -> Value {
    let mut e = event.clone();
    let ty = e["eventType"].as_str().unwrap_or_default().to_string();
    let amount = e["payload"]["amount"].clone();
    let owner = e["payload"]["owner"].clone();
    let payload = e["payload"].as_object_mut();
    match (v, ty.as_str(), payload) {
        (3, ..) => {
            e["schemaVersion"] = json!(3);
        }
        (2, "MoneyDeposited" | "MoneyWithdrawn", Some(p)) => {
            p.remove("amount");
            p.insert("amount_cents".into(), json!(amount.as_i64().unwrap() * 100));
            e["schemaVersion"] = json!(2);
        }
        (2, "AccountOpened", Some(p)) => {
            p.remove("owner");
            e["person"] = json!({"name": owner});
            e["schemaVersion"] = json!(2);
        }
        (1, "MoneyDeposited", Some(p)) => {
            p.remove("amount");
            e["eventType"] = json!("FundsDeposited");
            e["amt"] = json!(amount.as_i64().unwrap().to_string());
        }
        (1, "AccountOpened", Some(p)) => {
            p.remove("owner");
            e["customer"] = json!({"name": owner, "since": 2019});
        }
        // v1 withdrawals and every closing look like the newest, without a version.
        _ => {}
    }
    e
}

#[test]
fn three_schema_versions_fold_like_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let newest = generator_records(20_000, 400, 21);
    let mut rng = Rng(0x00c0_ffee);
    let mut text = Vec::new();
    let mut heartbeats = 0;
    for (_, raw) in &newest {
        let event: Value = serde_json::from_slice(raw).expect("json");
        let v = 1 + rng.below(3);
        text.extend(serde_json::to_vec(&written_as(&event, v)).expect("json"));
        text.push(b'\n');
        if rng.below(50) == 0 {
            heartbeats += 1;
            let beat = json!({"eventId": format!("hb-{heartbeats}"), "eventType": "Heartbeat",
                              "aggregateId": event["aggregateId"], "version": 0});
            text.extend(serde_json::to_vec(&beat).expect("json"));
            text.push(b'\n');
        }
    }
    std::fs::write(dir.path().join("events.ndjson"), &text).expect("write events");
    let pipeline = file_pipeline(
        dir.path().join("events.ndjson").to_str().unwrap(),
        "dead_letter",
    )
    .replacen("views:", &format!("{UPCAST}views:"), 1);
    let path = dir.path().join("bank.yaml");
    std::fs::write(&path, &pipeline).expect("write pipeline");

    let (stderr, accounts, volume) = run_once(&path, &dir.path().join("state"));
    let exp = oracle::expected(&newest);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    let counts = summary(&stderr);
    assert_eq!(
        (counts.dead_letters, counts.ignored),
        (0, heartbeats),
        "heartbeats are dropped, nothing is a bad record: {stderr}"
    );
    assert!(heartbeats > 100, "the input has heartbeats ({heartbeats})");

    // Without the upcasters the same stream is not the newest one's.
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, pipeline.replace(UPCAST, "")).expect("write pipeline");
    let (_, accounts, _) = run_once(&plain, &dir.path().join("state-plain"));
    assert_ne!(accounts, exp.accounts_json());
}
