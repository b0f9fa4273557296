//! Avro and Protobuf records in the Confluent wire format, against a real broker and a
//! schema registry, produced by an independent encoder (confluent-kafka's
//! AvroSerializer and ProtobufSerializer, which register their schemas through the
//! registry's REST API):
//!
//! - Half the events written with the shipped schema, half with an evolved one (a new
//!   field, a new payload field): the views equal the JSON oracle's, whether the reader
//!   is the registry's latest version or the pipeline's schema file (whose field types
//!   then type the views: integer sums stay integers).
//! - An unknown schema id and a corrupt body are dead letters with their raw bytes.
//!
//! The registry is `scripts/schema_registry.py` (no Confluent-compatible registry
//! installs from the package registries reachable here), with basic authentication.

mod common;

use common::cluster::*;
use common::{assert_rows, generator_records, oracle};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The bank events, and their records as the schemas have them (`payload` with every
/// field, absent ones null).
fn events(n: u64, seed: u64) -> (Vec<(u64, Vec<u8>)>, Vec<Value>) {
    let raw = generator_records(n, 300, seed);
    let records = raw
        .iter()
        .map(|(_, r)| {
            let mut v: Value = serde_json::from_slice(r).expect("json");
            let p = v["payload"].clone();
            v["payload"] = json!({"owner": p["owner"], "amount": p["amount"]});
            v
        })
        .collect();
    (raw, records)
}

fn lines(records: &[Value]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| serde_json::to_vec(r).expect("json"))
        .collect()
}

/// The shipped example `name` reading `topic` on `broker` with `registry`, without its
/// schema file when `with_file` is false.
fn example(
    dir: &Path,
    name: &str,
    broker: &Broker,
    topic: &str,
    registry: &SchemaRegistry,
    with_file: bool,
) -> PathBuf {
    let mut text = example_text(name, broker, topic)
        .replace(
            "${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}",
            &registry.url,
        )
        .replace(
            "  # auth: { username: ${SR_KEY}, password: ${SR_SECRET} }   # or { token: ... }",
            &format!("  auth: {{ username: {REGISTRY_USER}, password: {REGISTRY_SECRET} }}"),
        );
    if !text.contains("auth: {") {
        text = text.replace(
            &format!("  url: {}", registry.url),
            &format!(
                "  url: {}\n  auth: {{ username: {REGISTRY_USER}, password: {REGISTRY_SECRET} }}",
                registry.url
            ),
        );
    }
    let (head, views) = text.split_once("\nviews:").expect("views");
    let mut head = head.to_string();
    // The schema file is relative to the example's directory.
    let schemas = repo().join("pipelines/schemas");
    head = head.replace(
        "schema: schemas/",
        &format!("schema: {}/", schemas.display()),
    );
    if !with_file {
        head = head
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with("schema:") && !l.trim_start().starts_with("message:")
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    // A view of the field only the evolved schema has: it shows whose rules read it.
    let channels = "\n  - name: channels\n    aggregate:\n      group_by: { channel: channel }\n      \
                    columns: { events: \"count(*)\" }\n";
    let text = format!("{head}\npublish_interval: 20ms\nviews:{views}{channels}");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// The oracle's views, with the aggregate's `total` and `largest` as integers (the
/// schema file types `payload.amount` as a long).
fn integer_volume(exp: &oracle::Expected) -> Vec<Value> {
    exp.volume_json()
        .into_iter()
        .map(|mut v| {
            for c in ["total", "largest"] {
                if let Some(f) = v[c].as_f64() {
                    v[c] = json!(f as i64);
                }
            }
            v
        })
        .collect()
}

/// The records of `path`'s dead letters: (code, raw bytes).
fn dead_letters(state: &Path) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(state.join("dead-letters.ndjson")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("letter");
            let raw = match v["raw_base64"].as_str() {
                Some(b) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .expect("base64"),
                None => v["raw"].as_str().expect("raw").as_bytes().to_vec(),
            };
            (v["error"]["code"].as_str().expect("code").to_string(), raw)
        })
        .collect()
}

/// A record naming a schema id the registry does not have, and a record whose body
/// is cut short (schema id 1, the first registered).
fn bad_records() -> Vec<Vec<u8>> {
    let unknown = vec![0, 0, 0, 0x27, 0x0f, 2, b'x'];
    let corrupt = vec![0, 0, 0, 0, 1, 0x40];
    [unknown, corrupt]
        .iter()
        .map(|raw| {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(raw);
            serde_json::to_vec(&json!({"key": "bad", "value_base64": b})).expect("json")
        })
        .collect()
}

/// `SELECT channel, events FROM channels`, after a `--once` run of `pipeline`.
fn channels(pipeline: &Path, state: &Path) -> Vec<Value> {
    query_once(
        pipeline,
        state,
        "SELECT channel, events FROM channels ORDER BY channel",
    )
}

/// What differs between the Avro and the Protobuf case.
struct Case {
    /// The shipped example pipeline.
    example: &'static str,
    topic: &'static str,
    /// The dead-letter code of a corrupt body.
    corrupt_code: &'static str,
    /// What an older record reads for the field only the newer schema has.
    old_channel: Value,
}

fn run_both(
    dir: &Path,
    case: Case,
    broker: &Broker,
    registry: &SchemaRegistry,
    raw: &[(u64, Vec<u8>)],
) {
    let exp = oracle::expected(raw);
    // The registry's latest schema is the reader; no file, so no declared types.
    let latest = dir.join("latest");
    std::fs::create_dir_all(&latest).expect("dir");
    let p = example(&latest, case.example, broker, case.topic, registry, false);
    let (_, accounts, volume) = run_once(&p, &latest.join("state"));
    assert_rows("accounts (latest schema)", &accounts, &exp.accounts_json());
    assert_rows(
        "volume_by_type (latest schema)",
        &volume,
        &exp.volume_json(),
    );
    // The older records read by the newer schema's rules: its default for the field
    // they lack (Avro: the declared default; Protobuf: proto3's empty string).
    let half = raw.len() / 2;
    let mut want = vec![
        json!({"channel": case.old_channel, "events": half}),
        json!({"channel": "mobile", "events": raw.len() - half}),
    ];
    want.sort_by_key(|r| r["channel"].as_str().unwrap_or_default().to_string());
    assert_eq!(channels(&p, &latest.join("state")), want);
    let letters = dead_letters(&latest.join("state"));
    let bad = bad_records()
        .iter()
        .map(|l| {
            use base64::Engine as _;
            let v: Value = serde_json::from_slice(l).expect("json");
            base64::engine::general_purpose::STANDARD
                .decode(v["value_base64"].as_str().expect("b64"))
                .expect("bytes")
        })
        .collect::<Vec<_>>();
    assert_eq!(
        letters,
        vec![
            ("decode.unknown_schema".to_string(), bad[0].clone()),
            (case.corrupt_code.to_string(), bad[1].clone()),
        ],
        "each bad record is a dead letter with its exact bytes"
    );
    // The shipped schema file is the reader, and types the views.
    let file = dir.join("file");
    std::fs::create_dir_all(&file).expect("dir");
    let p = example(&file, case.example, broker, case.topic, registry, true);
    let (_, accounts, volume) = run_once(&p, &file.join("state"));
    assert_rows("accounts (schema file)", &accounts, &exp.accounts_json());
    assert_rows(
        "volume_by_type (schema file)",
        &volume,
        &integer_volume(&exp),
    );
    // The older schema has no such field: every record reads it as absent.
    assert_eq!(
        channels(&p, &file.join("state")),
        vec![json!({"channel": null, "events": raw.len()})]
    );
}

/// The later half of the records as the evolved schemas have them.
fn evolved(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["channel"] = json!("mobile");
            r["payload"]["currency"] = json!("EUR");
            r
        })
        .collect()
}

/// Produces `records` to `topic` with confluent-kafka's `format` serializer and
/// `schema` (a Protobuf schema's message is `BankEvent`), through `registry`.
fn produce_serialized(
    broker: &Broker,
    registry: &SchemaRegistry,
    topic: &str,
    format: &str,
    schema: &Path,
    records: &[Value],
) {
    let auth = format!("{REGISTRY_USER}:{REGISTRY_SECRET}");
    let schema = schema.display().to_string();
    let mut args = vec![
        "--format",
        format,
        "--registry",
        &registry.url,
        "--registry-auth",
        &auth,
        "--schema",
        &schema,
    ];
    if format == "protobuf" {
        args.extend(["--message", "BankEvent"]);
    }
    produce_with_confluent(&broker.address, topic, &lines(records), &args);
}

#[test]
fn avro_records_of_two_schema_versions_fold_like_the_oracle() {
    let broker = Broker::start();
    let registry = SchemaRegistry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, records) = events(6_000, 83);
    let v1 = repo().join("pipelines/schemas/bank-event.avsc");
    // The evolved schema: a new field with a default, a new payload field.
    let mut v2: Value =
        serde_json::from_str(&std::fs::read_to_string(&v1).expect("avsc")).expect("json");
    v2["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"name": "channel", "type": "string", "default": "web"}));
    v2["fields"][5]["type"]["fields"]
        .as_array_mut()
        .expect("payload")
        .push(json!({"name": "currency", "type": ["null", "string"], "default": null}));
    let v2_path = dir.path().join("bank-event-v2.avsc");
    std::fs::write(&v2_path, v2.to_string()).expect("v2");
    let half = records.len() / 2;
    produce_serialized(
        &broker,
        &registry,
        "bank-avro",
        "avro",
        &v1,
        &records[..half],
    );
    let later = evolved(&records[half..]);
    produce_serialized(&broker, &registry, "bank-avro", "avro", &v2_path, &later);
    produce_with_confluent(&broker.address, "bank-avro", &bad_records(), &["--wrapped"]);
    let case = Case {
        example: "bank-accounts-avro.yaml",
        topic: "bank-avro",
        corrupt_code: "decode.invalid_avro",
        old_channel: json!("web"),
    };
    run_both(dir.path(), case, &broker, &registry, &raw);
}

#[test]
fn protobuf_records_of_two_schema_versions_fold_like_the_oracle() {
    let broker = Broker::start();
    let registry = SchemaRegistry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, records) = events(6_000, 89);
    let v1 = repo().join("pipelines/schemas/bank_event.proto");
    let v1_text = std::fs::read_to_string(&v1).expect("proto");
    // The evolved schema: a new field, a new payload field (new numbers).
    let v2_text = v1_text
        .replace(
            "  Payload payload = 6;",
            "  Payload payload = 6;\n  string channel = 7;",
        )
        .replace(
            "  optional int64 amount = 2;",
            "  optional int64 amount = 2;\n  optional string currency = 3;",
        );
    assert_ne!(v1_text, v2_text);
    let v2_dir = dir.path().join("v2");
    std::fs::create_dir_all(&v2_dir).expect("dir");
    let v2 = v2_dir.join("bank_event.proto");
    std::fs::write(&v2, v2_text).expect("v2");
    let half = records.len() / 2;
    // Protobuf's JSON form leaves absent optional fields out.
    let strip = |rs: &[Value]| -> Vec<Value> {
        rs.iter()
            .map(|r| {
                let mut r = r.clone();
                let p = r["payload"].as_object_mut().expect("payload");
                p.retain(|_, v| !v.is_null());
                r
            })
            .collect()
    };
    produce_serialized(
        &broker,
        &registry,
        "bank-pb",
        "protobuf",
        &v1,
        &strip(&records[..half]),
    );
    let later = strip(&evolved(&records[half..]));
    produce_serialized(&broker, &registry, "bank-pb", "protobuf", &v2, &later);
    produce_with_confluent(&broker.address, "bank-pb", &bad_records(), &["--wrapped"]);
    let case = Case {
        example: "bank-accounts-protobuf.yaml",
        topic: "bank-pb",
        corrupt_code: "decode.invalid_protobuf",
        old_channel: json!(""),
    };
    run_both(dir.path(), case, &broker, &registry, &raw);
}

/// A registry that cannot be reached is not the records' fault: the run stops (after
/// `registry.retry`) without dead-lettering them, and once a registry answers again a
/// run reads every record.
#[test]
fn a_registry_that_cannot_be_reached_stops_the_run_and_loses_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, records) = events(2_000, 97);
    let half = records.len() / 2;
    let avsc = repo().join("pipelines/schemas/bank-event.avsc");
    let produce = |registry: &SchemaRegistry, part: &[Value]| {
        produce_serialized(&broker, registry, "bank-avro-down", "avro", &avsc, part);
    };
    let first = SchemaRegistry::start();
    produce(&first, &records[..half]);
    let pipeline = example(
        dir.path(),
        "bank-accounts-avro.yaml",
        &broker,
        "bank-avro-down",
        &first,
        true,
    );
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    let url = format!("  url: {}", first.url);
    assert!(text.contains(&url), "{text}");
    let text = text.replace(&url, &format!("{url}\n  retry: 1s"));
    std::fs::write(&pipeline, text).expect("write");
    let old_url = first.url.clone();
    drop(first);

    let state = dir.path().join("state");
    let mut cmd = common::projector();
    cmd.arg("run")
        .arg(&pipeline)
        .arg("--once")
        .arg("--state-dir")
        .arg(&state);
    let out = common::run(cmd, None, std::time::Duration::from_secs(60));
    assert_ne!(out.code, Some(0), "the run stops: {}", out.stderr);
    assert!(out.stderr.contains("schema registry"), "{}", out.stderr);
    assert!(
        dead_letters(&state).is_empty(),
        "no record is blamed for the registry"
    );

    // A registry again (the same schema registers as id 1 again), more records.
    let second = SchemaRegistry::start();
    produce(&second, &records[half..]);
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    std::fs::write(&pipeline, text.replace(&old_url, &second.url)).expect("write");
    let (_, accounts, volume) = run_once(&pipeline, &state);
    let exp = oracle::expected(&raw);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &integer_volume(&exp));
}

/// A Protobuf schema that imports another: Confluent's serializer registers the
/// imported file as a subject of its own and the main schema with a reference to it;
/// the pipeline (no schema file) reads the latest version with its references.
#[test]
fn a_protobuf_schema_with_imports_reads_through_its_references() {
    let broker = Broker::start();
    let registry = SchemaRegistry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let protos = dir.path().join("protos");
    std::fs::create_dir_all(&protos).expect("dir");
    std::fs::write(
        protos.join("money.proto"),
        "syntax = \"proto3\";\npackage bank;\nmessage Money { int64 amount = 1; string currency = 2; }\n",
    )
    .expect("money.proto");
    std::fs::write(
        protos.join("transfer.proto"),
        "syntax = \"proto3\";\npackage bank;\nimport \"money.proto\";\n\
         message Transfer { string eventId = 1; string eventType = 2; string aggregateId = 3; \
         int64 version = 4; bank.Money money = 5; }\n",
    )
    .expect("transfer.proto");
    let mut rng = common::Rng(0x3c6e_f372_fe94_f82b);
    let mut totals: std::collections::BTreeMap<String, i64> = Default::default();
    let records: Vec<Value> = (0..600)
        .map(|i| {
            let account = format!("acc-{:02}", rng.below(20));
            let amount = rng.below(1_000) as i64;
            *totals.entry(account.clone()).or_default() += amount;
            json!({"eventId": format!("t-{i}"), "eventType": "Transferred",
                   "aggregateId": account, "version": i + 1,
                   "money": {"amount": amount, "currency": "EUR"}})
        })
        .collect();
    let auth = format!("{REGISTRY_USER}:{REGISTRY_SECRET}");
    let schema = protos.join("transfer.proto").display().to_string();
    let args = [
        "--format",
        "protobuf",
        "--registry",
        &registry.url,
        "--registry-auth",
        &auth,
        "--schema",
        &schema,
        "--message",
        "Transfer",
        "--key-field",
        "aggregateId",
    ];
    produce_with_confluent(&broker.address, "transfers", &lines(&records), &args);
    let text = format!(
        "name: transfers
source:
  type: kafka
  brokers: {}
  topics: [transfers]
format: protobuf
registry: {{ url: {}, auth: {{ username: {REGISTRY_USER}, password: {REGISTRY_SECRET} }} }}
envelope: {{ id: eventId, type: eventType, key: aggregateId }}
views:
  - name: totals
    aggregate:
      group_by: {{ account: aggregateId }}
      columns:
        total: 'sum(money.amount)'
        currency: {{ expr: 'max(money.currency)', type: string }}
",
        broker.address, registry.url
    );
    let pipeline = dir.path().join("transfers.yaml");
    std::fs::write(&pipeline, text).expect("pipeline");
    let sql = "SELECT * FROM totals ORDER BY account";
    let rows = query_once(&pipeline, &dir.path().join("state"), sql);
    let want: Vec<Value> = totals
        .iter()
        .map(|(a, t)| json!({"account": a, "total": *t as f64, "currency": "EUR"}))
        .collect();
    assert_rows("totals", &rows, &want);
}
