//! Envelope presets: records in a well-known shape (Debezium change events,
//! CloudEvents) presented as one JSON document whose fields the pipeline's paths read.
//!
//! - **Debezium** presents the *outbox row*: `id`, `aggregatetype`, `aggregateid`,
//!   `type`, `payload` and any other column, whichever way the row travelled:
//!   - as a change event (`{"before", "after", "op", "source", "ts_ms"}`, bare or in the
//!     JSON converter's `{"schema", "payload"}` wrapper): the row is `after` (`before`
//!     for a delete), with `__op`, `__ts_ms`, `__source_ts_ms`, `__db` and `__table`
//!     beside it (the names of Debezium's own ExtractNewRecordState);
//!   - through the outbox event router (the value is the payload; the key is the
//!     aggregate id; the event id and type in headers): `payload` is the value,
//!     `aggregateid` the message key, and every header a field of its name (the
//!     router's usual `eventType` header also fills `type`).
//!
//!   A `payload` column that arrives as a JSON string (Postgres `jsonb` does) is read
//!   as the JSON it holds when a path goes into it. A delete (`op: d`) is a
//!   [`Shaped::Delete`] of the row's key; Debezium's tombstone after it is ignored.
//! - **CloudEvents** presents the event in structured mode: its attributes (`id`,
//!   `type`, `source`, `subject`, `time`, extensions) and `data`:
//!   - structured mode (`{"specversion": ..., "data": ...}` as the value): as it is;
//!   - binary mode (`ce_*` headers, the value is the data): each `ce_` header is the
//!     attribute of its name, `content-type` is `datacontenttype`, and the value is
//!     `data` (parsed when it is JSON).
//!
//!   `partitionkey` (the Kafka binding's key attribute) is the message key when the
//!   event does not carry it.

use super::DecodeError;
use super::trie::Trie;
use super::walk;
use crate::value::Value;
use serde_json::{Map, Value as Json};

/// A well-known record shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Debezium change events and outbox-router records.
    Debezium,
    /// CloudEvents in structured or binary mode.
    CloudEvents,
}

impl Preset {
    /// The envelope paths a preset reads when the pipeline does not name its own:
    /// (id, type, key, timestamp).
    pub fn defaults(self) -> [(&'static str, Option<&'static str>); 4] {
        match self {
            Preset::Debezium => [
                ("id", Some("id")),
                ("type", Some("type")),
                ("key", Some("aggregateid")),
                ("timestamp", None),
            ],
            Preset::CloudEvents => [
                ("id", Some("id")),
                ("type", Some("type")),
                ("key", Some("partitionkey")),
                ("timestamp", Some("time")),
            ],
        }
    }

    /// The name in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Debezium => "debezium",
            Preset::CloudEvents => "cloudevents",
        }
    }
}

/// One record as a preset sees it: its value (none for a tombstone), message key and
/// headers.
#[derive(Debug, Clone, Copy)]
pub struct RecordParts<'a> {
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The message key.
    pub key: Option<&'a [u8]>,
    /// The headers, in order (name, value).
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// What a preset made of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Shaped {
    /// An event: the document the pipeline's paths read.
    Event(Json),
    /// A change event that deletes its row: the document of the row as it was.
    Delete(Json),
    /// A record the preset skips by design (Debezium's tombstone after a delete).
    Ignore,
}

impl Preset {
    /// Presents `record` as a document.
    pub fn shape(self, record: &RecordParts<'_>) -> Result<Shaped, DecodeError> {
        match self {
            Preset::Debezium => debezium(record),
            Preset::CloudEvents => cloudevents(record),
        }
    }
}

fn parse_object(raw: &[u8]) -> Result<Map<String, Json>, DecodeError> {
    let text = std::str::from_utf8(raw).map_err(DecodeError::InvalidUtf8)?;
    if text.trim().is_empty() {
        return Err(DecodeError::Empty);
    }
    match serde_json::from_str::<Json>(text).map_err(DecodeError::invalid_json)? {
        Json::Object(m) => Ok(m),
        other => Err(DecodeError::NotAnObject {
            found: json_kind(&other),
        }),
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn text(raw: Option<&[u8]>) -> Option<String> {
    raw.and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_string)
}

fn debezium(record: &RecordParts<'_>) -> Result<Shaped, DecodeError> {
    let Some(raw) = record.value else {
        return Ok(Shaped::Ignore);
    };
    let mut value = parse_object(raw)?;
    // The JSON converter with schemas: {"schema": {...}, "payload": {...}}.
    if value.contains_key("schema")
        && let Some(Json::Object(inner)) = value.get("payload")
        && inner.contains_key("op")
    {
        value = inner.clone();
    }
    if let Some(op) = value.get("op").and_then(Json::as_str).map(str::to_string) {
        let side = if op == "d" { "before" } else { "after" };
        let mut row = match value.remove(side) {
            Some(Json::Object(row)) => row,
            _ => Map::new(),
        };
        row.insert("__op".into(), Json::String(op.clone()));
        if let Some(ts) = value.get("ts_ms") {
            row.insert("__ts_ms".into(), ts.clone());
        }
        if let Some(Json::Object(source)) = value.get("source") {
            for (from, to) in [
                ("ts_ms", "__source_ts_ms"),
                ("db", "__db"),
                ("table", "__table"),
            ] {
                if let Some(v) = source.get(from) {
                    row.insert(to.into(), v.clone());
                }
            }
        }
        return Ok(if op == "d" {
            Shaped::Delete(Json::Object(row))
        } else {
            Shaped::Event(Json::Object(row))
        });
    }
    // The outbox event router: the value is the payload.
    let mut row = Map::new();
    for (name, v) in record.headers {
        if let Some(t) = text(*v) {
            row.insert((*name).to_string(), Json::String(t));
        }
    }
    if !row.contains_key("type")
        && let Some(t) = row.get("eventType").cloned()
    {
        row.insert("type".into(), t);
    }
    if let Some(k) = text(record.key) {
        row.insert("aggregateid".into(), Json::String(k));
    }
    row.insert("payload".into(), Json::Object(value));
    Ok(Shaped::Event(Json::Object(row)))
}

fn cloudevents(record: &RecordParts<'_>) -> Result<Shaped, DecodeError> {
    let binary = record
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("ce_specversion"));
    let mut event = if binary {
        let mut event = Map::new();
        for (name, v) in record.headers {
            let lower = name.to_ascii_lowercase();
            let attribute = match lower.strip_prefix("ce_") {
                Some(a) => a.to_string(),
                None if lower == "content-type" => "datacontenttype".to_string(),
                None => continue,
            };
            if let Some(t) = text(*v) {
                event.insert(attribute, Json::String(t));
            }
        }
        if let Some(raw) = record.value {
            let data = match serde_json::from_slice::<Json>(raw) {
                Ok(v) => v,
                Err(_) => match std::str::from_utf8(raw) {
                    Ok(t) => Json::String(t.to_string()),
                    Err(e) => return Err(DecodeError::InvalidUtf8(e)),
                },
            };
            event.insert("data".into(), data);
        }
        event
    } else {
        let Some(raw) = record.value else {
            return Ok(Shaped::Ignore);
        };
        parse_object(raw)?
    };
    if !event.contains_key("partitionkey")
        && let Some(k) = text(record.key)
    {
        event.insert("partitionkey".into(), Json::String(k));
    }
    Ok(Shaped::Event(Json::Object(event)))
}

/// Fills the slots of `trie` from a shaped document. A path that goes into a string
/// holding a JSON object reads that object (Debezium's string-encoded `payload`).
pub(super) fn fill(trie: &Trie, doc: &Json, out: &mut [Value]) {
    if let Json::Object(map) = doc {
        fill_object(trie, Trie::ROOT, map, out);
    }
}

fn fill_object(trie: &Trie, node: usize, object: &Map<String, Json>, out: &mut [Value]) {
    for (key, child) in &trie.node(node).children {
        let Some(v) = object.get(&**key) else {
            continue;
        };
        let c = trie.node(*child);
        if let Some(slot) = c.slot {
            out[slot] = walk::from_json(v);
        }
        if c.children.is_empty() {
            continue;
        }
        match v {
            Json::Object(inner) => fill_object(trie, *child, inner, out),
            Json::String(s) if s.trim_start().starts_with('{') => {
                if let Ok(Json::Object(inner)) = serde_json::from_str::<Json>(s) {
                    fill_object(trie, *child, &inner, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, RecordDecoder};
    use crate::fields::FieldRegistry;

    fn decoder(preset: Preset, paths: &[&str]) -> RecordDecoder {
        let mut fields = FieldRegistry::new();
        for p in paths {
            fields.intern(p);
        }
        RecordDecoder::new(&fields, Some(preset))
    }

    fn decode(
        d: &RecordDecoder,
        value: Option<&str>,
        key: Option<&str>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> (Decoded, Vec<Value>) {
        let mut out = vec![Value::Null; d.slots()];
        let parts = RecordParts {
            value: value.map(str::as_bytes),
            key: key.map(str::as_bytes),
            headers,
        };
        let decoded = d.decode(&parts, &mut out).expect("decodes");
        (decoded, out)
    }

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    const OUTBOX: &[&str] = &["id", "type", "aggregateid", "payload.amount", "__op"];

    #[test]
    fn debezium_change_events_present_the_outbox_row() {
        let d = decoder(Preset::Debezium, OUTBOX);
        // The JSON converter's wrapper, and a jsonb payload as a string.
        let created = r#"{"schema":{"type":"struct"},"payload":{"before":null,
            "after":{"id":"e1","aggregatetype":"account","aggregateid":"a1",
                     "type":"MoneyDeposited","payload":"{\"amount\": 5}"},
            "op":"c","source":{"ts_ms":1700000000000,"table":"outbox"},"ts_ms":1}}"#;
        let (decoded, slots) = decode(&d, Some(created), None, &[]);
        assert_eq!(decoded, Decoded::Event);
        assert_eq!(
            slots,
            vec![s("e1"), s("MoneyDeposited"), s("a1"), Value::Int(5), s("c")]
        );
        // Bare, with an object payload: the same row.
        let bare = r#"{"before":null,"after":{"id":"e1","aggregateid":"a1",
            "type":"MoneyDeposited","payload":{"amount":5}},"op":"r"}"#;
        let (_, again) = decode(&d, Some(bare), None, &[]);
        assert_eq!(again[..4], slots[..4]);
        // A delete reads the row as it was.
        let deleted =
            r#"{"before":{"id":"e1","aggregateid":"a1","type":"X"},"after":null,"op":"d"}"#;
        let (decoded, slots) = decode(&d, Some(deleted), None, &[]);
        assert_eq!(decoded, Decoded::Delete);
        assert_eq!(slots[2], s("a1"));
        // Debezium's tombstone after a delete.
        assert_eq!(decode(&d, None, Some("{\"id\":1}"), &[]).0, Decoded::Ignore);
    }

    #[test]
    fn the_outbox_routers_records_read_like_the_row() {
        let d = decoder(Preset::Debezium, OUTBOX);
        let headers: &[(&str, Option<&[u8]>)] =
            &[("id", Some(b"e1")), ("eventType", Some(b"MoneyDeposited"))];
        let (decoded, slots) = decode(&d, Some(r#"{"amount":5}"#), Some("a1"), headers);
        assert_eq!(decoded, Decoded::Event);
        assert_eq!(
            slots,
            vec![
                s("e1"),
                s("MoneyDeposited"),
                s("a1"),
                Value::Int(5),
                Value::Null
            ]
        );
    }

    #[test]
    fn cloudevents_read_the_same_in_both_modes() {
        let paths = [
            "id",
            "type",
            "partitionkey",
            "time",
            "data.amount",
            "correlationid",
        ];
        let d = decoder(Preset::CloudEvents, &paths);
        let structured = r#"{"specversion":"1.0","id":"e1","type":"MoneyDeposited",
            "source":"/bank","time":"2024-01-01T00:00:00Z","correlationid":"c9",
            "data":{"amount":5}}"#;
        let (decoded, a) = decode(&d, Some(structured), Some("a1"), &[]);
        assert_eq!(decoded, Decoded::Event);
        let headers: &[(&str, Option<&[u8]>)] = &[
            ("ce_specversion", Some(b"1.0")),
            ("ce_id", Some(b"e1")),
            ("ce_type", Some(b"MoneyDeposited")),
            ("ce_source", Some(b"/bank")),
            ("ce_time", Some(b"2024-01-01T00:00:00Z")),
            ("ce_correlationid", Some(b"c9")),
            ("content-type", Some(b"application/json")),
        ];
        let (decoded, b) = decode(&d, Some(r#"{"amount":5}"#), Some("a1"), headers);
        assert_eq!(decoded, Decoded::Event);
        assert_eq!(a, b);
        assert_eq!(a[2], s("a1"), "partitionkey is the message key");
        assert_eq!(a[4], Value::Int(5));
    }

    #[test]
    fn a_record_a_preset_cannot_read_is_a_decode_error() {
        let d = decoder(Preset::Debezium, OUTBOX);
        let parts = RecordParts {
            value: Some(b"{\"after\":"),
            key: None,
            headers: &[],
        };
        let mut out = vec![Value::Null; d.slots()];
        let err = d.decode(&parts, &mut out).unwrap_err();
        assert_eq!(err.code(), "decode.invalid_json");
        let d = decoder(Preset::CloudEvents, &["id"]);
        let parts = RecordParts {
            value: Some(b"[1]"),
            key: None,
            headers: &[],
        };
        assert_eq!(
            d.decode(&parts, &mut out[..1]).unwrap_err().code(),
            "decode.not_an_object"
        );
    }
}
