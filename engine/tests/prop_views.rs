//! Property test: for random event sequences, the views a running pipeline serves over
//! SQL equal a batch recomputation of the same events.
//!
//! The pipeline runs in-process (file source → decode → router → N workers → epochs →
//! Arrow → DataFusion), with a random number of workers and publish interval. The
//! oracle below is written from the documented semantics (docs/pipeline-reference.md)
//! with plain maps and `serde_json::Value`, not with the engine's operators. The
//! sequences include duplicates and stale versions, deletes and re-creation, event
//! types without a handler, and bad records of several kinds, so all-or-nothing
//! application and the version rule are exercised on every case.

use projector_engine::config::load_str;
use projector_engine::{Pipeline, RunOptions};
use projector_engine::{QueryLimits, SqlEngine};
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The pipeline under test: a fold view using set/add/delete/"*" on every column type,
/// two aggregate views (grouped, and filtered into one global group), and a table view
/// retained by row count and by age.
const PIPELINE: &str = r#"
name: prop
source: { type: file, path: EVENTS }
envelope: { id: id, type: type, key: key, version: v, timestamp: ts }
publish_interval: PUBLISH
views:
  - name: items
    fold:
      key_column: item
      columns:
        name: string
        qty: { type: int64, default: 0 }
        price: float64
        active: bool
        updated: timestamp
        touches: { type: int64, default: 0 }
      on:
        Created: { set: { name: payload.name, active: true } }
        Added: { add: { qty: payload.n }, set: { price: payload.price } }
        Removed: { add: { qty: -payload.n } }
        Deactivated: { set: { active: false } }
        Deleted: delete
        "*": { add: { touches: 1 }, set: { updated: ts } }
  - name: by_type
    aggregate:
      group_by: { event_type: type }
      columns:
        events: "count(*)"
        with_n: "count(payload.n)"
        n_total: { expr: "sum(payload.n)", type: int64 }
        first_name: { expr: "min(payload.name)", type: string }
        top_price: "max(payload.price)"
        mean_price: "avg(payload.price)"
  - name: big
    aggregate:
      filter: "payload.n > 2"
      columns:
        events: "count(*)"
  - name: log
    table:
      filter: "type <> 'Other'"
      columns:
        id: id
        n: { expr: payload.n, type: int64 }
        at: { expr: ts, type: timestamp }
      retain: { rows: 40, age: 400000ms }
"#;

/// `log`'s retention, as in PIPELINE.
const LOG_ROWS: usize = 40;
const LOG_AGE_MS: i64 = 400_000;

/// One random input line.
#[derive(Debug, Clone)]
enum Line {
    /// A well-formed event envelope with a payload that may still be bad.
    Event {
        key: Key,
        ty: Option<&'static str>,
        /// Relative version: see [`render`].
        version: Version,
        n: N,
        price: Option<i32>,
        name: Option<u8>,
        ts: Option<i64>,
    },
    /// Not JSON at all.
    Garbage,
}

#[derive(Debug, Clone)]
enum Key {
    Str(u8),
    Int(u8),
    Missing,
    Bool,
}

#[derive(Debug, Clone, Copy)]
enum Version {
    /// One more than the last version written for the key (a fresh event).
    Next,
    /// The last version written for the key again (a duplicate).
    Same,
    /// Some older version (a stale replay).
    Older,
    /// No version field (a bad record: version is mapped).
    Missing,
}

#[derive(Debug, Clone, Copy)]
enum N {
    Int(i64),
    Missing,
    /// A string: a type error for `sum(payload.n)` into int64.
    Text,
}

fn line_strategy() -> impl Strategy<Value = Line> {
    let key = prop_oneof![
        12 => (0u8..5).prop_map(Key::Str),
        2 => (0u8..3).prop_map(Key::Int),
        1 => Just(Key::Missing),
        1 => Just(Key::Bool),
    ];
    let ty = prop_oneof![
        3 => Just(Some("Created")),
        4 => Just(Some("Added")),
        3 => Just(Some("Removed")),
        1 => Just(Some("Deactivated")),
        1 => Just(Some("Deleted")),
        1 => Just(Some("Other")),
        1 => Just(None),
    ];
    let version = prop_oneof![
        12 => Just(Version::Next),
        2 => Just(Version::Same),
        2 => Just(Version::Older),
        1 => Just(Version::Missing),
    ];
    let n = prop_oneof![
        8 => (-5i64..10).prop_map(N::Int),
        2 => Just(N::Missing),
        1 => Just(N::Text),
    ];
    let event = (
        key,
        ty,
        version,
        n,
        proptest::option::of(-8i32..40),
        proptest::option::of(0u8..6),
        proptest::option::of(0i64..1_000_000),
    )
        .prop_map(|(key, ty, version, n, price, name, ts)| Line::Event {
            key,
            ty,
            version,
            n,
            price,
            name,
            ts,
        });
    prop_oneof![20 => event, 1 => Just(Line::Garbage)]
}

/// Renders the lines as NDJSON, resolving relative versions per key.
fn render(lines: &[Line]) -> Vec<String> {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| match line {
            Line::Garbage => format!("{{\"key\": \"k{i}\", \"type\": "),
            Line::Event {
                key,
                ty,
                version,
                n,
                price,
                name,
                ts,
            } => {
                let mut o = Map::new();
                o.insert("id".into(), json!(format!("e{i}")));
                let text = match key {
                    Key::Str(k) => {
                        o.insert("key".into(), json!(format!("k{k}")));
                        Some(format!("k{k}"))
                    }
                    Key::Int(k) => {
                        o.insert("key".into(), json!(k));
                        Some(k.to_string())
                    }
                    Key::Missing => None,
                    Key::Bool => {
                        o.insert("key".into(), json!(true));
                        None
                    }
                };
                if let Some(t) = ty {
                    o.insert("type".into(), json!(t));
                }
                let l = text
                    .as_ref()
                    .and_then(|k| last.get(k).copied())
                    .unwrap_or(0);
                let v = match version {
                    Version::Next => Some(l + 1),
                    Version::Same => Some(l.max(1)),
                    Version::Older => Some((l - 2).max(0)),
                    Version::Missing => None,
                };
                if let (Some(v), Some(k)) = (v, &text) {
                    let e = last.entry(k.clone()).or_insert(0);
                    *e = (*e).max(v);
                }
                if let Some(v) = v {
                    o.insert("v".into(), json!(v));
                }
                if let Some(ts) = ts {
                    o.insert("ts".into(), json!(ts));
                }
                let mut p = Map::new();
                match n {
                    N::Int(x) => {
                        p.insert("n".into(), json!(x));
                    }
                    N::Text => {
                        p.insert("n".into(), json!("lots"));
                    }
                    N::Missing => {}
                }
                if let Some(pr) = price {
                    // Quarters are exact in binary, so float sums do not depend on the
                    // order in which workers' partials are merged.
                    p.insert("price".into(), json!(f64::from(*pr) * 0.25));
                }
                if let Some(nm) = name {
                    p.insert("name".into(), json!(format!("name-{nm}")));
                }
                o.insert("payload".into(), Json::Object(p));
                Json::Object(o).to_string()
            }
        })
        .collect()
}

/// The expected views, computed in one pass over the raw lines.
#[derive(Debug, Default)]
struct Oracle {
    items: BTreeMap<String, Item>,
    versions: BTreeMap<String, i64>,
    by_type: BTreeMap<String, TypeAgg>,
    big: i64,
    applied: u64,
    duplicates: u64,
    bad: Vec<usize>,
    /// Every row the table `log` took in, in input order: (line, n, ts).
    log: Vec<(usize, Option<i64>, Option<i64>)>,
    /// The line being applied.
    line: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Item {
    name: Option<String>,
    qty: i64,
    price: Option<f64>,
    active: Option<bool>,
    updated: Option<i64>,
    touches: i64,
}

#[derive(Debug, Clone, Default)]
struct TypeAgg {
    events: i64,
    with_n: i64,
    n_total: Option<i64>,
    first_name: Option<String>,
    top_price: Option<f64>,
    price_sum: f64,
    price_count: i64,
}

impl Oracle {
    fn run(lines: &[String]) -> Oracle {
        let mut o = Oracle::default();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Json>(line) {
                Ok(Json::Object(e)) => {
                    o.line = i;
                    if o.apply(&e).is_err() {
                        o.bad.push(i);
                    }
                }
                _ => o.bad.push(i),
            }
        }
        o
    }

    /// Applies one event to all views, or to none (`Err`).
    fn apply(&mut self, e: &Map<String, Json>) -> Result<(), ()> {
        let key = match e.get("key") {
            Some(Json::String(s)) => s.clone(),
            Some(Json::Number(n)) if n.is_i64() => n.to_string(),
            _ => return Err(()),
        };
        let Some(Json::String(ty)) = e.get("type") else {
            return Err(());
        };
        let Some(v) = e.get("v").and_then(Json::as_i64) else {
            return Err(());
        };
        if self.versions.get(&key).is_some_and(|last| v <= *last) {
            self.duplicates += 1;
            return Ok(());
        }
        let p = e
            .get("payload")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let n = match p.get("n") {
            None => None,
            Some(Json::Number(x)) => Some(x.as_i64().ok_or(())?),
            Some(_) => return Err(()), // text: sum(payload.n) into int64 fails
        };
        let price = p.get("price").and_then(Json::as_f64);
        let name = p.get("name").and_then(Json::as_str).map(str::to_string);
        let ts = e.get("ts").and_then(Json::as_i64);

        // Fold view.
        let mut row = self.items.get(&key).cloned();
        let mut deleted = false;
        let touch = |row: &mut Option<Item>| row.get_or_insert_with(Item::default).clone();
        match ty.as_str() {
            "Created" => {
                let mut r = touch(&mut row);
                r.name = name.clone();
                r.active = Some(true);
                row = Some(r);
            }
            "Added" => {
                let mut r = touch(&mut row);
                r.qty += n.unwrap_or(0);
                r.price = price;
                row = Some(r);
            }
            "Removed" => {
                let mut r = touch(&mut row);
                r.qty -= n.unwrap_or(0);
                row = Some(r);
            }
            "Deactivated" => {
                let mut r = touch(&mut row);
                r.active = Some(false);
                row = Some(r);
            }
            "Deleted" => deleted = true,
            _ => {}
        }
        if !deleted {
            let mut r = touch(&mut row);
            r.touches += 1;
            r.updated = ts;
            row = Some(r);
        }

        // Nothing above can fail any more: commit.
        self.versions.insert(key.clone(), v);
        self.applied += 1;
        match (deleted, row) {
            (true, _) => {
                self.items.remove(&key);
            }
            (false, Some(r)) => {
                self.items.insert(key, r);
            }
            (false, None) => {}
        }
        let a = self.by_type.entry(ty.clone()).or_default();
        a.events += 1;
        if let Some(n) = n {
            a.with_n += 1;
            a.n_total = Some(a.n_total.unwrap_or(0) + n);
        }
        if let Some(nm) = name
            && a.first_name.as_ref().is_none_or(|f| nm < *f)
        {
            a.first_name = Some(nm);
        }
        if let Some(pr) = price {
            a.top_price = Some(a.top_price.map_or(pr, |t| t.max(pr)));
            a.price_sum += pr;
            a.price_count += 1;
        }
        if n.is_some_and(|n| n > 2) {
            self.big += 1;
        }
        if ty != "Other" {
            self.log.push((self.line, n, ts));
        }
        Ok(())
    }

    /// What `log` keeps: of the newest LOG_ROWS rows by input order, those at most
    /// LOG_AGE_MS older than the newest row's time (or without a time).
    fn log_rows(&self) -> Vec<Json> {
        let newest = self.log.iter().filter_map(|r| r.2).max();
        self.log[self.log.len().saturating_sub(LOG_ROWS)..]
            .iter()
            .filter(|(_, _, ts)| match (ts, newest) {
                (Some(t), Some(m)) => *t >= m - LOG_AGE_MS,
                _ => true,
            })
            .map(|(line, n, ts)| json!({"id": format!("e{line}"), "n": n, "at": ts}))
            .collect()
    }

    fn items_rows(&self) -> Vec<Json> {
        self.items
            .iter()
            .map(|(k, r)| {
                json!({
                    "item": k, "name": r.name, "qty": r.qty, "price": r.price,
                    "active": r.active, "updated": r.updated, "touches": r.touches,
                })
            })
            .collect()
    }

    fn by_type_rows(&self) -> Vec<Json> {
        self.by_type
            .iter()
            .map(|(t, a)| {
                let mean = (a.price_count > 0).then(|| a.price_sum / a.price_count as f64);
                json!({
                    "event_type": t, "events": a.events, "with_n": a.with_n,
                    "n_total": a.n_total, "first_name": a.first_name,
                    "top_price": a.top_price, "mean_price": mean,
                })
            })
            .collect()
    }
}

/// Runs one query and returns its rows as JSON objects.
fn query(rt: &tokio::runtime::Runtime, sql: &SqlEngine, text: &str) -> Vec<Json> {
    let result = rt
        .block_on(sql.query(text))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    let bytes = projector_engine::render(
        &result.schema,
        &result.batches,
        projector_engine::OutputFormat::Json,
    )
    .expect("renders");
    match serde_json::from_slice(&bytes).expect("valid JSON") {
        Json::Array(rows) => rows,
        other => panic!("not an array: {other}"),
    }
}

/// The engine writes timestamps as text; the oracle holds epoch milliseconds.
fn millis_of(v: &Json) -> Json {
    match v.as_str() {
        Some(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .or_else(|_| chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|n| n.and_utc().fixed_offset())
                })
                .unwrap_or_else(|e| panic!("timestamp {s}: {e}"));
            json!(t.timestamp_millis())
        }
        None => v.clone(),
    }
}

fn check(lines: &[Line], workers: usize, publish_ms: u64) -> Result<(), TestCaseError> {
    let text = render(lines);
    let oracle = Oracle::run(&text);

    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, text.join("\n") + "\n").expect("write events");
    let yaml = PIPELINE
        .replace("EVENTS", &events.display().to_string())
        .replace("PUBLISH", &format!("{publish_ms}ms"));
    let config = load_str(&yaml, Path::new("prop.yaml")).expect("the test pipeline is valid");
    let options = RunOptions {
        state_dir: dir.path().join("state"),
        workers,
        replay_if_damaged: false,
        cluster: None,
        accept_logic_change: Vec::new(),
        replay_dead_letters: false,
        accept_incomplete_rebuild: false,
    };
    let pipeline = Pipeline::start(&config, &options).expect("starts");
    pipeline.wait_until_finished().expect("finishes");
    let shared = pipeline.shared().clone();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sql = SqlEngine::new(shared.catalog.clone(), QueryLimits::default()).expect("sql");
    let mut items = query(&rt, &sql, "SELECT * FROM items ORDER BY item");
    for row in &mut items {
        row["updated"] = millis_of(&row["updated"]);
    }
    let by_type = query(&rt, &sql, "SELECT * FROM by_type ORDER BY event_type");
    let big = query(&rt, &sql, "SELECT events FROM big");
    let mut log = query(&rt, &sql, "SELECT id, n, at FROM log");
    for row in &mut log {
        row["at"] = millis_of(&row["at"]);
    }
    // Input order: by the line number in the id.
    log.sort_by_key(|r| r["id"].as_str().and_then(|s| s[1..].parse::<usize>().ok()));
    pipeline.stop().expect("stops");

    let counters = shared.counters.snapshot();
    prop_assert_eq!(counters.read, text.len() as u64);
    prop_assert_eq!(counters.applied, oracle.applied);
    prop_assert_eq!(counters.duplicates, oracle.duplicates);
    prop_assert_eq!(counters.dead_letters, oracle.bad.len() as u64);
    prop_assert_eq!(items, oracle.items_rows());
    prop_assert_eq!(by_type, oracle.by_type_rows());
    prop_assert_eq!(big, vec![json!({"events": oracle.big})]);
    prop_assert_eq!(log, oracle.log_rows());

    let letters =
        std::fs::read_to_string(dir.path().join("state/dead-letters.ndjson")).unwrap_or_default();
    let offsets: Vec<usize> = letters
        .lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).expect("dead letter is JSON");
            let offset = v["source"]["offset"].as_u64().expect("offset") as usize;
            assert_eq!(
                v["raw"].as_str(),
                Some(text[offset].as_str()),
                "raw bytes kept"
            );
            offset
        })
        .collect();
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    prop_assert_eq!(sorted, oracle.bad.clone());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn views_equal_a_batch_recomputation(
        lines in proptest::collection::vec(line_strategy(), 0..300),
        workers in 1usize..=3,
        publish_ms in prop_oneof![Just(1u64), Just(5), Just(100)],
    ) {
        check(&lines, workers, publish_ms)?;
    }
}

/// A hand-written case the random ones may miss: delete, replay of an old version
/// after the delete, re-creation from defaults with a newer version.
#[test]
fn a_deleted_row_remembers_its_version() {
    let key = Key::Str(1);
    let ev = |ty, version| Line::Event {
        key: key.clone(),
        ty: Some(ty),
        version,
        n: N::Int(3),
        price: Some(4),
        name: Some(1),
        ts: Some(7),
    };
    let lines = vec![
        ev("Created", Version::Next),
        ev("Added", Version::Next),
        ev("Deleted", Version::Next),
        ev("Added", Version::Older),
        ev("Added", Version::Same),
        ev("Removed", Version::Next),
    ];
    check(&lines, 2, 1).expect("views match");
    let oracle = Oracle::run(&render(&lines));
    assert_eq!(oracle.duplicates, 2);
    let row = &oracle.items["k1"];
    assert_eq!((row.qty, row.name.as_deref(), row.touches), (-3, None, 1));
}
