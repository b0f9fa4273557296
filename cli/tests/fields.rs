//! Types that follow the data: a pipeline declares the types of the event fields it
//! reads (`fields:`), values are converted when decoded (text that spells a value of
//! the type included), a value that does not convert is a dead letter naming the field
//! and carrying the event's ids, and integer sums stay integers.

mod common;

use common::{json_lines, projector, run};
use serde_json::{Value, json};
use std::time::Duration;

const PIPELINE: &str = r#"name: typed
source: { type: file, path: events.ndjson }
fields:
  payload.amount: int64
  version: int64
envelope:
  id: eventId
  type: eventType
  key: accountId
  version: version
  correlation_id: meta.correlationId
  causation_id: meta.causationId
views:
  - name: balances
    fold:
      key_column: account
      columns: { balance: { type: int64, default: 0 } }
      on:
        Deposited: { add: { balance: payload.amount } }
  - name: totals
    aggregate:
      group_by: { type: eventType }
      columns:
        total: "sum(payload.amount)"
        largest: "max(payload.amount)"
"#;

fn event(id: &str, account: &str, version: Value, amount: Value) -> String {
    json!({
        "eventId": id, "eventType": "Deposited", "accountId": account, "version": version,
        "payload": {"amount": amount},
        "meta": {"correlationId": format!("corr-{id}"), "causationId": format!("cause-{id}")},
    })
    .to_string()
}

#[test]
fn declared_types_convert_values_and_keep_integer_sums_integers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = [
        event("e1", "a", json!(1), json!(100)),
        // Text that spells an integer (as a header would carry it).
        event("e2", "a", json!("2"), json!("250")),
        // An integral float converts; 7.0 is 7.
        event("e3", "b", json!(1), json!(7.0)),
        // Not an integer: a dead letter that names the field and carries the ids.
        event("e4", "b", json!(2), json!("a lot")),
        event("e5", "b", json!(3), json!(2.5)),
    ];
    std::fs::write(dir.path().join("events.ndjson"), events.join("\n") + "\n").expect("input");
    let pipeline = dir.path().join("typed.yaml");
    std::fs::write(&pipeline, PIPELINE).expect("pipeline");
    let mut cmd = projector();
    cmd.current_dir(dir.path())
        .arg("run")
        .arg(&pipeline)
        .args(["--once", "--format", "json", "--state-dir", "state"])
        .args(["--sql", "SELECT * FROM balances ORDER BY account"])
        .args(["--sql", "SELECT * FROM totals"]);
    let out = run(cmd, None, Duration::from_secs(60));
    out.assert_code(0);
    let results = json_lines(&out.stdout);
    assert_eq!(
        results[0],
        vec![
            json!({"account": "a", "balance": 350}),
            json!({"account": "b", "balance": 7}),
        ]
    );
    // Integers, not 357.0: the JSON output keeps the column's type.
    assert_eq!(
        results[1],
        vec![json!({"type": "Deposited", "total": 357, "largest": 250})]
    );
    let letters: Vec<Value> = std::fs::read_to_string(dir.path().join("state/dead-letters.ndjson"))
        .expect("dead letters")
        .lines()
        .map(|l| serde_json::from_str(l).expect("letter"))
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, id) in letters.iter().zip(["e4", "e5"]) {
        assert_eq!(letter["error"]["code"], "apply.type_mismatch");
        let message = letter["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("'payload.amount' is declared int64"),
            "{message}"
        );
        // The id is read from the bytes (no view reads it); the others are too.
        assert_eq!(
            letter["event"],
            json!({"id": id, "correlation_id": format!("corr-{id}"),
                   "causation_id": format!("cause-{id}")})
        );
    }
}
