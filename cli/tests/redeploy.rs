//! Pipelines that change between runs on the same state: a view whose logic changed
//! is never resumed on the state the old logic built.

mod common;

use common::{file_pipeline, generator_records, json_lines, projector};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

const ACCOUNTS_SQL: &str = "SELECT account_id, balance FROM accounts ORDER BY account_id";

/// `run --once` of `pipeline` (text) on `state`, in `dir` (where the events are).
fn run(dir: &Path, pipeline: &str, state: &str) -> Output {
    std::fs::write(dir.join("bank.yaml"), pipeline).expect("write pipeline");
    projector()
        .current_dir(dir)
        .args(["run", "bank.yaml", "--once", "--format", "json"])
        .args(["--state-dir", state, "--sql", ACCOUNTS_SQL])
        .output()
        .expect("run")
}

fn balances(out: &Output) -> Vec<(String, i64)> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    json_lines(&out.stdout)
        .remove(0)
        .iter()
        .map(|r: &Value| {
            (
                r["account_id"].as_str().expect("id").to_string(),
                r["balance"].as_i64().expect("balance"),
            )
        })
        .collect()
}

/// The redeploy: a fold handler changed from `payload.amount` to
/// `payload.amount*100` on the same state directory was resumed, and the balances became
/// neither the old logic's nor the new one's.
#[test]
fn a_changed_handler_is_refused_with_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = Vec::new();
    for (_, raw) in generator_records(5_000, 200, 11) {
        input.extend_from_slice(&raw);
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    let pipeline = file_pipeline("events.ndjson", "dead_letter");
    let before = balances(&run(dir.path(), &pipeline, "state"));

    // Comments, layout and key order are not logic.
    let reformatted = pipeline.replace(
        "        MoneyDeposited: { add: { balance: payload.amount, deposits: 1 } }",
        "        # deposits count too\n        MoneyDeposited:\n          add: { deposits: 1, balance: payload.amount }",
    );
    assert_ne!(reformatted, pipeline);
    assert_eq!(balances(&run(dir.path(), &reformatted, "state")), before);

    // A changed handler: refused, naming the view, the change and the way out.
    let changed = pipeline.replace(
        "add: { balance: payload.amount, deposits: 1 }",
        "add: { balance: \"payload.amount*100\", deposits: 1 }",
    );
    assert_ne!(changed, pipeline);
    let out = run(dir.path(), &changed, "state");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no views printed");
    assert!(
        stderr.contains("written by other logic for view(s) accounts:")
            && stderr.contains(
                "accounts: fold.on.MoneyDeposited.add.balance: \"payload.amount\" → \
                 \"payload.amount*100\""
            )
            && stderr.contains("another --state-dir"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("volume_by_type"),
        "only the changed view: {stderr}"
    );

    // On an empty state, the new logic's answer: every balance built from deposits
    // times 100 (withdrawals unchanged), so not the old balances.
    let rebuilt = balances(&run(dir.path(), &changed, "state-2"));
    assert_eq!(rebuilt.len(), before.len());
    assert_ne!(rebuilt, before);

    // An envelope change concerns every view; a new view is named as new.
    let envelope = pipeline.replace("  version: version", "  version: payload.version");
    let out = run(dir.path(), &envelope, "state");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("view(s) accounts, volume_by_type:")
            && stderr.contains("envelope.version: \"version\" → \"payload.version\""),
        "{stderr}"
    );
    // The old pipeline still resumes.
    assert_eq!(balances(&run(dir.path(), &pipeline, "state")), before);
}
