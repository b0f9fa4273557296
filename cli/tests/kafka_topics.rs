//! Several topics feeding one read model, against a real broker (Tansu, through
//! `scripts/broker.sh`; these tests never skip).
//!
//! - Orders and payments on two co-partitioned topics, in two shapes (the payments
//!   topic has its own envelope and its own version numbers), fold into one row per
//!   order. The engine is killed with `kill -9` again and again while both topics are
//!   produced to, and restarted; the views equal an oracle computed from the events,
//!   every bad record is dead-lettered once, each checkpoint records both topics'
//!   offsets, and redelivered events of either topic are duplicates.
//! - A second instance joins and leaves while both topics flow: units move whole
//!   (partition N of both topics to one instance), through the shared checkpoint
//!   store, and the views equal the oracle.
//! - A topic of Avro records (confluent-kafka's serializer, a schema registry) beside a
//!   topic of JSON, each read by its own format, fold into the same rows.
//! - Topics that are not co-partitioned stop the run with a clear error.

mod common;

use common::cluster::*;
use common::{Rng, assert_rows, projector, summary};
use projector_connectors::kafka::ensure_topic;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One produced record: its key and its bytes.
type Record = (String, Vec<u8>);

/// What the two services wrote, in the order each wrote it.
struct Input {
    orders: Vec<Record>,
    payments: Vec<Record>,
}

/// `n` orders: each placed, some shipped, some cancelled (those have no payments, whose
/// order against the delete no topic defines); up to three payments each, numbered
/// per order by `seq`. A bad record (not JSON) after every 997th payment.
fn input(n: u64, seed: u64) -> Input {
    let mut rng = Rng(seed);
    let (mut orders, mut payments) = (Vec::new(), Vec::new());
    let methods = ["card", "transfer", "voucher"];
    let mut payment_no = 0;
    for i in 0..n {
        let id = format!("order-{i}");
        let event = |v: u64, ty: &str, extra: Value| {
            let mut e = json!({"eventId": format!("{id}-v{v}"), "eventType": ty,
                               "orderId": id, "version": v});
            e.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            (id.clone(), serde_json::to_vec(&e).unwrap())
        };
        let customer = format!("customer-{}", rng.below(50));
        let total = 10 + rng.below(990);
        orders.push(event(
            1,
            "OrderPlaced",
            json!({"customer": customer, "total": total}),
        ));
        match rng.below(10) {
            0 => {
                orders.push(event(2, "OrderCancelled", json!({})));
                continue;
            }
            1..=5 => orders.push(event(2, "OrderShipped", json!({}))),
            _ => {}
        }
        for seq in 1..=rng.below(4) {
            payment_no += 1;
            let p = json!({"paymentId": format!("pay-{payment_no}"), "kind": "PaymentReceived",
                           "order": {"id": id}, "seq": seq, "amount": 1 + rng.below(300),
                           "method": methods[rng.below(3) as usize]});
            payments.push((id.clone(), serde_json::to_vec(&p).unwrap()));
            if payment_no % 997 == 0 {
                let bad = format!("{{\"paymentId\": \"bad-{payment_no}\", truncated");
                payments.push((id.clone(), bad.into_bytes()));
            }
        }
    }
    Input { orders, payments }
}

impl Input {
    /// How many payments are bad records.
    fn bad(&self) -> usize {
        self.payments
            .iter()
            .filter(|(_, raw)| serde_json::from_slice::<Value>(raw).is_err())
            .count()
    }
}

/// The oracle: the views from the events' documented meaning, with plain maps.
fn expected(input: &Input) -> (Vec<Value>, Vec<Value>) {
    let mut rows: BTreeMap<String, BTreeMap<&str, Value>> = BTreeMap::new();
    let mut methods: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let blank = || {
        BTreeMap::from([
            ("customer", Value::Null),
            ("status", Value::Null),
            ("total", json!(0)),
            ("paid", json!(0)),
            ("payments", json!(0)),
        ])
    };
    for (key, raw) in &input.orders {
        let e: Value = serde_json::from_slice(raw).unwrap();
        match e["eventType"].as_str().unwrap() {
            "OrderPlaced" => {
                let row = rows.entry(key.clone()).or_insert_with(blank);
                row.insert("customer", e["customer"].clone());
                row.insert("status", json!("placed"));
                row.insert("total", e["total"].clone());
            }
            "OrderShipped" => {
                let row = rows.entry(key.clone()).or_insert_with(blank);
                row.insert("status", json!("shipped"));
            }
            _ => {
                rows.remove(key);
            }
        }
    }
    for (key, raw) in &input.payments {
        let Ok(p) = serde_json::from_slice::<Value>(raw) else {
            continue; // a dead letter
        };
        let row = rows.entry(key.clone()).or_insert_with(blank);
        let amount = p["amount"].as_i64().unwrap();
        row.insert("paid", json!(row["paid"].as_i64().unwrap() + amount));
        row.insert("payments", json!(row["payments"].as_i64().unwrap() + 1));
        let m = methods
            .entry(p["method"].as_str().unwrap().to_string())
            .or_default();
        *m = (m.0 + 1, m.1 + amount);
    }
    let orders = rows
        .into_iter()
        .map(|(id, row)| {
            let mut o = serde_json::Map::new();
            o.insert("order_id".into(), json!(id));
            o.extend(row.into_iter().map(|(k, v)| (k.to_string(), v)));
            Value::Object(o)
        })
        .collect();
    let methods = methods
        .into_iter()
        .map(|(m, (n, amount))| json!({"method": m, "payments": n, "amount": amount}))
        .collect();
    (orders, methods)
}

/// The shipped orders-and-payments example on `broker`, reading `orders` and
/// `payments`, tuned for tests ([`tuned_for_tests`]) with checkpoints in `store`.
fn pipeline(
    dir: &Path,
    broker: &Broker,
    orders: &str,
    payments: &str,
    store: &Store,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("pipelines/orders-payments.yaml"))
        .expect("the shipped example")
        .replace("    - orders\n", &format!("    - {orders}\n"))
        .replace(
            "    - name: payments\n",
            &format!("    - name: {payments}\n"),
        );
    let path = dir.join("orders-payments.yaml");
    std::fs::write(&path, tuned_for_tests(&text, broker, store)).expect("write pipeline");
    path
}

/// Streams both topics of `data` (4 partitions each) over about `seconds` seconds.
fn stream_both(
    broker: &Broker,
    data: &Input,
    (orders, payments): (&str, &str),
    seconds: u64,
) -> [std::thread::JoinHandle<()>; 2] {
    let rate = |records: &[Record]| (records.len() as u64 / seconds).max(1);
    [
        stream_keyed(broker, orders, 4, data.orders.clone(), rate(&data.orders)),
        stream_keyed(
            broker,
            payments,
            4,
            data.payments.clone(),
            rate(&data.payments),
        ),
    ]
}

/// The records the newest checkpoints cover: the sum of every unit's offsets.
fn checkpointed(pipeline: &Path, state: &Path) -> u64 {
    heads(pipeline, state)
        .iter()
        .flat_map(|h| h["offsets"].as_object().cloned().unwrap_or_default())
        .filter_map(|(_, o)| o.as_u64())
        .sum()
}

const ORDERS_SQL: &str = "SELECT order_id, customer, status, total, paid, payments \
                          FROM orders ORDER BY order_id";
const METHODS_SQL: &str = "SELECT method, payments, amount FROM payments_by_method \
                           ORDER BY method";

/// `--once` with both queries: (stderr, orders, methods).
fn run_once(pipeline: &Path, state: &Path) -> (String, Vec<Value>, Vec<Value>) {
    let (stderr, mut results) = queries_once(pipeline, state, &[ORDERS_SQL, METHODS_SQL]);
    let methods = results.pop().expect("methods");
    (stderr, results.pop().expect("orders"), methods)
}

#[test]
fn orders_and_payments_fold_into_one_row_per_order_through_kill_9() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = input(6_000, 0x5eed_0f0d);
    let (orders_topic, payments_topic) = ("orders-t1", "payments-t1");
    // About 20 s of both topics, while the engine is killed and restarted.
    let producers = stream_both(&broker, &data, (orders_topic, payments_topic), 20);
    let pipeline = pipeline(
        dir.path(),
        &broker,
        orders_topic,
        payments_topic,
        &Store::Local,
    );
    let state = dir.path().join("state");

    let mut rng = Rng(0x2545_f491);
    let total = (data.orders.len() + data.payments.len()) as u64;
    let mut mid_stream = 0;
    for _ in 0..7 {
        let workers = 1 + rng.below(3);
        let mut child = Running::start(&pipeline, &state, free_port(), workers);
        std::thread::sleep(Duration::from_millis(2_500 + rng.below(2_500)));
        child.0.kill().expect("kill -9");
        child.0.wait().expect("reap");
        let covered = checkpointed(&pipeline, &state);
        if covered > 0 && covered < total {
            mid_stream += 1;
        }
    }
    assert!(
        mid_stream >= 2,
        "the kills must interrupt the topics, not only idle runs ({mid_stream} did)"
    );
    for p in producers {
        p.join().expect("producer");
    }

    let (orders, methods) = expected(&data);
    let (stderr, got_orders, got_methods) = run_once(&pipeline, &state);
    assert_rows("orders", &got_orders, &orders);
    assert_rows("payments_by_method", &got_methods, &methods);

    // One checkpoint per unit, recording where each topic's partition resumes.
    let heads = heads(&pipeline, &state);
    let names: Vec<&str> = heads
        .iter()
        .filter_map(|h| h["partition"].as_str())
        .collect();
    let units: Vec<String> = (0..4)
        .map(|n| format!("{orders_topic}+{payments_topic}/{n}"))
        .collect();
    assert_eq!(names, units, "{heads:?}");
    let mut per_topic = BTreeMap::new();
    for h in &heads {
        let offsets = h["offsets"].as_object().expect("offsets");
        assert_eq!(offsets.len(), 2, "both topics' offsets: {h}");
        for (partition, next) in offsets {
            let topic = partition.rsplit_once('/').expect("topic/N").0.to_string();
            *per_topic.entry(topic).or_insert(0) += next.as_u64().expect("an offset");
        }
    }
    assert_eq!(
        per_topic,
        BTreeMap::from([
            (orders_topic.to_string(), data.orders.len() as u64),
            (payments_topic.to_string(), data.payments.len() as u64),
        ]),
        "the checkpoints cover every record of both topics"
    );

    // Every bad payment is dead-lettered once, at its own topic's partition.
    let letters = std::fs::read_to_string(state.join("dead-letters.ndjson")).unwrap_or_default();
    let mut places: Vec<(String, u64)> = letters
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            (
                v["source"]["partition"]
                    .as_str()
                    .expect("partition")
                    .to_string(),
                v["source"]["offset"].as_u64().expect("offset"),
            )
        })
        .collect();
    let bad = data.bad();
    assert!(bad >= 2, "the input has bad records ({bad})");
    assert_eq!(places.len(), bad, "{letters}");
    assert!(
        places.iter().all(|(p, _)| p.starts_with(payments_topic)),
        "{places:?}"
    );
    places.sort();
    places.dedup();
    assert_eq!(places.len(), bad, "one letter per bad record");
    let _ = stderr;

    // Redelivery of either topic (an at-least-once producer's retries): the versions
    // of each topic are guarded on their own, so nothing changes but the duplicates.
    let again_orders: Vec<Record> = data.orders[..500].to_vec();
    let again_payments: Vec<Record> = data
        .payments
        .iter()
        .filter(|(_, raw)| serde_json::from_slice::<Value>(raw).is_ok())
        .take(500)
        .cloned()
        .collect();
    for p in [
        stream_keyed(&broker, orders_topic, 4, again_orders, 100_000),
        stream_keyed(&broker, payments_topic, 4, again_payments, 100_000),
    ] {
        p.join().expect("producer");
    }
    let (stderr, orders2, methods2) = run_once(&pipeline, &state);
    assert_eq!(orders2, got_orders, "redelivered events changed the orders");
    assert_eq!(
        methods2, got_methods,
        "redelivered events changed the payments"
    );
    let counts = summary(&stderr);
    assert_eq!(
        (counts.read, counts.applied, counts.duplicates),
        (1_000, 0, 1_000),
        "{stderr}"
    );
}

#[test]
fn topics_that_are_not_co_partitioned_are_refused() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let props = BTreeMap::new();
    ensure_topic(&broker.address, &props, "orders-t2", 4).expect("create topic");
    ensure_topic(&broker.address, &props, "payments-t2", 3).expect("create topic");
    let pipeline = pipeline(
        dir.path(),
        &broker,
        "orders-t2",
        "payments-t2",
        &Store::Local,
    );
    let out = projector()
        .arg("run")
        .arg(&pipeline)
        .arg("--once")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("projector run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not co-partitioned (orders-t2: 4, payments-t2: 3)")
            && stderr.contains("the same number of partitions"),
        "{stderr}"
    );
}

/// The unit numbers whose partitions of both topics `partitions` (names) holds, or
/// `None` when it holds a partition of one topic without the same partition of the
/// other (a split unit).
fn whole_units(partitions: &[String], orders: &str, payments: &str) -> Option<Vec<String>> {
    let numbers = |topic: &str| -> Vec<String> {
        let mut n: Vec<String> = partitions
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{topic}/")).map(String::from))
            .collect();
        n.sort();
        n
    };
    let (a, b) = (numbers(orders), numbers(payments));
    (a == b).then_some(a)
}

#[test]
fn a_second_instance_takes_whole_units_and_gives_them_back() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::file(&dir.path().join("store"));
    let data = input(6_000, 0x0dd_ba11);
    let (orders_topic, payments_topic) = ("orders-t3", "payments-t3");
    // About 30 s of both topics.
    let producers = stream_both(&broker, &data, (orders_topic, payments_topic), 30);
    let pipeline = pipeline(dir.path(), &broker, orders_topic, payments_topic, &store);
    let (state, state_b) = (dir.path().join("state-a"), dir.path().join("state-b"));
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = Running::start(&pipeline, &state, port_a, 1);
    let a_has_all = || assigned(port_a).is_some_and(|p| p.len() == 8);
    assert!(wait_for(30, a_has_all), "A owns the 4 units (8 partitions)");
    // /status names each partition's unit.
    let status = get_json(port_a, "/status").expect("A's status");
    for p in status["partitions"].as_array().expect("partitions") {
        let name = p["partition"].as_str().expect("name");
        let n = name.rsplit_once('/').expect("topic/N").1;
        assert_eq!(
            p["unit"].as_str(),
            Some(format!("{orders_topic}+{payments_topic}/{n}").as_str()),
            "{p}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));

    let mut b = Running::start(&pipeline, &state_b, port_b, 2);
    let mut split = Vec::new();
    let shared = wait_for(40, || {
        let (Some(pa), Some(pb)) = (assigned(port_a), assigned(port_b)) else {
            return false;
        };
        for p in [&pa, &pb] {
            if whole_units(p, orders_topic, payments_topic).is_none() {
                split.push(p.clone());
            }
        }
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 8
    });
    assert!(shared, "A and B share the units after B joined");
    assert!(split.is_empty(), "a unit was split: {split:?}");
    let read = |port| get_json(port, "/status").and_then(|s| s["events"]["read"].as_u64());
    let b_read_before = read(port_b).unwrap_or(0);
    assert!(
        wait_for(20, || read(port_b).is_some_and(|n| n > b_read_before)),
        "B reads its units while events flow"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.terminate(30), Some(0), "B leaves cleanly");
    assert!(wait_for(30, a_has_all), "A owns the 4 units again");
    assert!(
        !producers.iter().all(|p| p.is_finished()),
        "the handovers happened while events flowed (the producers finished first)"
    );
    for p in producers {
        p.join().expect("producer");
    }
    let total = (data.orders.len() + data.payments.len()) as u64;
    let covered = || -> u64 {
        heads(&pipeline, &state)
            .iter()
            .flat_map(|h| h["offsets"].as_object().cloned().unwrap_or_default())
            .filter_map(|(_, o)| o.as_u64())
            .sum()
    };
    assert!(
        wait_for(60, || covered() == total),
        "A checkpoints both topics whole"
    );
    assert_eq!(a.terminate(30), Some(0), "A stops cleanly");

    let (orders, methods) = expected(&data);
    let (stderr, got_orders, got_methods) = run_once(&pipeline, &state);
    assert_rows("orders", &got_orders, &orders);
    assert_rows("payments_by_method", &got_methods, &methods);
    assert_eq!(
        summary(&stderr).read,
        0,
        "nothing was left to read: {stderr}"
    );
    // Every bad payment dead-lettered once, wherever its unit was then.
    let letters =
        std::fs::read_to_string(store.dead_letter_file(&pipeline, &state)).expect("dead letters");
    let mut places: Vec<String> = letters
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            format!("{}@{}", v["source"]["partition"], v["source"]["offset"])
        })
        .collect();
    let bad = data.bad();
    places.sort();
    places.dedup();
    assert_eq!(
        (places.len(), letters.lines().count()),
        (bad, bad),
        "{letters}"
    );
}

/// The payments' Avro schema (`order` a nested record, as in the JSON).
const PAYMENT_AVSC: &str = r#"{"type": "record", "name": "Payment", "fields": [
  {"name": "paymentId", "type": "string"},
  {"name": "kind", "type": "string"},
  {"name": "order", "type": {"type": "record", "name": "OrderRef",
                             "fields": [{"name": "id", "type": "string"}]}},
  {"name": "seq", "type": "long"},
  {"name": "amount", "type": "long"},
  {"name": "method", "type": "string"}
]}"#;

#[test]
fn a_topic_in_avro_beside_a_topic_in_json() {
    let broker = Broker::start();
    let registry = SchemaRegistry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = input(1_500, 0xa5c0_0001);
    data.payments
        .retain(|(_, raw)| serde_json::from_slice::<Value>(raw).is_ok());
    let (orders_topic, payments_topic) = ("orders-t4", "payments-t4");
    // The orders as JSON, the payments with confluent-kafka's Avro serializer (which
    // registers the schema as `payments-t4-value`), keyed by the order id.
    stream_keyed(&broker, orders_topic, 4, data.orders.clone(), 100_000)
        .join()
        .expect("producer");
    let schema = dir.path().join("payment.avsc");
    std::fs::write(&schema, PAYMENT_AVSC).expect("write schema");
    let wrapped: Vec<Vec<u8>> = data
        .payments
        .iter()
        .map(|(key, raw)| {
            let value: Value = serde_json::from_slice(raw).expect("json");
            serde_json::to_vec(&json!({"key": key, "value": value})).expect("json")
        })
        .collect();
    let auth = format!("{REGISTRY_USER}:{REGISTRY_SECRET}");
    let schema_arg = schema.display().to_string();
    let args = [
        "--wrapped",
        "--format",
        "avro",
        "--registry",
        &registry.url,
        "--registry-auth",
        &auth,
        "--schema",
        &schema_arg,
    ];
    produce_with_confluent(&broker.address, payments_topic, &wrapped, &args);

    let pipeline = pipeline(
        dir.path(),
        &broker,
        orders_topic,
        payments_topic,
        &Store::Local,
    );
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    let registry_yaml = format!(
        "registry:\n  url: {}\n  auth: {{ username: {REGISTRY_USER}, password: {REGISTRY_SECRET} }}\nenvelope:",
        registry.url
    );
    // The payments topic reads Avro, its reader's schema the subject's latest.
    let text = text
        .replace("      format: json\n", "      format: avro\n")
        .replacen("\nenvelope:", &format!("\n{registry_yaml}"), 1);
    std::fs::write(&pipeline, text).expect("write pipeline");

    let (orders, methods) = expected(&data);
    let (stderr, got_orders, got_methods) = run_once(&pipeline, &dir.path().join("state"));
    assert_rows("orders", &got_orders, &orders);
    assert_rows("payments_by_method", &got_methods, &methods);
    let counts = summary(&stderr);
    assert_eq!(
        (counts.read, counts.dead_letters),
        ((data.orders.len() + data.payments.len()) as u64, 0),
        "{stderr}"
    );
}
