//! Tests of [`JsonDecoder`] as a whole, and the helpers the tests of every part of
//! `decode` share.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::walk::from_json;
use super::*;

pub(super) fn s(v: &str) -> Value {
    Value::Str(Arc::from(v))
}

/// Decodes `raw` for `paths`, returning `path → value` pairs in the given order.
pub(super) fn decode(paths: &[&str], raw: &str) -> Result<Vec<Value>, DecodeError> {
    let mut fields = FieldRegistry::new();
    for p in paths {
        fields.intern(p);
    }
    let dec = JsonDecoder::new(&fields);
    assert_eq!(dec.slots(), fields.len());
    let mut out = vec![s("stale"); dec.slots()];
    dec.decode(raw.as_bytes(), &mut out).map(|()| out)
}

pub(super) fn decode_ok(paths: &[&str], raw: &str) -> Vec<Value> {
    decode(paths, raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
}

pub(super) fn decode_err(paths: &[&str], raw: &str) -> String {
    match decode(paths, raw) {
        Ok(v) => panic!("{raw}: expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

const EVENT: &str = r#"{"eventId":"evt-1","eventType":"MoneyDeposited","aggregateId":"acc-00042","version":7,"timestamp":1700000000123,"payload":{"amount":250}}"#;

#[test]
fn typical_event() {
    let out = decode_ok(
        &[
            "eventType",
            "aggregateId",
            "version",
            "timestamp",
            "payload.amount",
            "missing",
        ],
        EVENT,
    );
    assert_eq!(
        out,
        [
            s("MoneyDeposited"),
            s("acc-00042"),
            Value::Int(7),
            Value::Int(1700000000123),
            Value::Int(250),
            Value::Null,
        ]
    );
}

#[test]
fn leaves_at_several_depths() {
    let raw = r#"{"a":1,"b":{"c":"x","d":{"e":true,"f":null,"g":-2.5}},"h":[1,2]}"#;
    let out = decode_ok(
        &["a", "b.c", "b.d.e", "b.d.f", "b.d.g", "b.d.zz", "b.x.y"],
        raw,
    );
    assert_eq!(
        out,
        [
            Value::Int(1),
            s("x"),
            Value::Bool(true),
            Value::Null,
            Value::Float(-2.5),
            Value::Null,
            Value::Null
        ]
    );
}

#[test]
fn scalars() {
    let raw = r#"{"i":-42,"u":9223372036854775807,"big":18446744073709551615,
            "huge":123456789012345678901234567890,"neg":-9223372036854775809,
            "f":1.0,"e":1e3,"t":true,"n":null,"s":"","z":0}"#;
    let out = decode_ok(
        &["i", "u", "big", "huge", "neg", "f", "e", "t", "n", "s", "z"],
        raw,
    );
    assert_eq!(
        out,
        [
            Value::Int(-42),
            Value::Int(i64::MAX),
            Value::Float(18446744073709551615.0),
            Value::Float(1.2345678901234568e29),
            Value::Float(-9223372036854775809.0),
            Value::Float(1.0),
            Value::Float(1000.0),
            Value::Bool(true),
            Value::Null,
            s(""),
            Value::Int(0),
        ]
    );
}

#[test]
fn skips_unwanted_nested_values() {
    let raw = r#"{"skip":{"a":[1,{"b":[[],{}]},"}"],"c":{"d":{"e":{}}}},
            "arr":[{"x":1},[2,[3]],"s"],"str":"{\"x\":1}","x":5}"#;
    assert_eq!(decode_ok(&["x"], raw), [Value::Int(5)]);
    // `arr.x`: arrays are not walked into.
    assert_eq!(
        decode_ok(&["arr.x", "str.x", "x"], raw),
        [Value::Null, Value::Null, Value::Int(5)]
    );
}

#[test]
fn object_or_array_leaf_is_nested() {
    let raw =
        r#"{"payload": { "b": [1, 2.5, "x"], "a": {"k": null} }, "tags": ["a", "b"], "e": {}}"#;
    let out = decode_ok(&["payload", "tags", "e"], raw);
    let (object, array) = (
        Value::Nested { array: false },
        Value::Nested { array: true },
    );
    assert_eq!(out, [object.clone(), array, object]);
}

#[test]
fn prefix_that_is_not_an_object() {
    for v in ["5", "\"s\"", "null", "true", "[1,{\"amount\":2}]", "1.5"] {
        let raw = format!(r#"{{"payload":{v},"x":1}}"#);
        assert_eq!(
            decode_ok(&["payload.amount", "x"], &raw),
            [Value::Null, Value::Int(1)],
            "{raw}"
        );
    }
}

#[test]
fn duplicate_keys_last_wins() {
    let raw = r#"{"a":1,"a":2,"p":{"x":1,"y":2},"p":{"x":3}}"#;
    assert_eq!(
        decode_ok(&["a", "p.x", "p.y"], raw),
        [Value::Int(2), Value::Int(3), Value::Null]
    );
    let raw = r#"{"p":{"x":1},"p":7}"#;
    assert_eq!(decode_ok(&["p.x", "p"], raw), [Value::Null, Value::Int(7)]);
}

#[test]
fn top_level_must_be_an_object() {
    for (raw, kind) in [
        ("[1,2]", "array"),
        ("\"s\"", "string"),
        ("42", "number"),
        ("-1.5", "number"),
        ("true", "bool"),
        (" null ", "null"),
    ] {
        assert_eq!(
            decode_err(&["a"], raw),
            format!("expected a JSON object, found {kind}"),
            "{raw}"
        );
    }
    assert_eq!(decode_err(&["a"], ""), "empty record");
    assert_eq!(decode_err(&["a"], " \n\t"), "empty record");
}

#[test]
fn invalid_json() {
    for raw in [
        "{",
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{"a":tru}"#,
        r#"{"a":"open}"#,
        "[1,",
        "nope",
        r#"{"skip":{"x":[1,2}}"#,
        r#"{"a":1} x"#,
        r#"{"a":1}{"a":2}"#,
    ] {
        let m = decode_err(&["a"], raw);
        assert!(m.contains("line 1 column"), "{raw}: {m}");
    }
    assert!(decode_err(&["a"], r#"{"a":1} x"#).contains("trailing characters"));
}

#[test]
fn error_leaves_all_slots_null() {
    let mut fields = FieldRegistry::new();
    fields.intern("a");
    fields.intern("b");
    let dec = JsonDecoder::new(&fields);
    let mut out = vec![Value::Int(9); 2];
    assert!(dec.decode(br#"{"a":1,"b":"#, &mut out).is_err());
    assert_eq!(out, [Value::Null, Value::Null]);
}

#[test]
fn objects_and_arrays_are_nested_not_text() {
    let got = decode_ok(
        &["p", "q", "r"],
        r#"{"p":{"x":[1,{"y":2}]},"q":[],"r":"s"}"#,
    );
    assert_eq!(
        got,
        [
            Value::Nested { array: false },
            Value::Nested { array: true },
            Value::Str("s".into())
        ]
    );
}

#[test]
fn invalid_utf8_anywhere_is_invalid_json() {
    let mut raw = br#"{"a":1,"note":""#.to_vec();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(br#""}"#);
    let mut fields = FieldRegistry::new();
    fields.intern("a");
    let dec = JsonDecoder::new(&fields);
    let mut out = vec![Value::Null];
    let err = dec.decode(&raw, &mut out).unwrap_err();
    assert!(
        err.to_string().contains("invalid UTF-8 at byte 15"),
        "{err}"
    );
}

#[test]
fn no_fields_still_validates() {
    assert_eq!(decode_ok(&[], EVENT), Vec::<Value>::new());
    assert!(decode(&[], "{").is_err());
    assert!(decode(&[], "[]").is_err());
}

#[test]
fn json_macro_round_trip() {
    let v = json!({"a": {"b": [1, {"c": 2}], "d": "x"}, "e": 1.5});
    let out = decode_ok(&["a.b", "a.d", "e", "a"], &v.to_string());
    assert_eq!(
        out,
        [
            Value::Nested { array: true },
            s("x"),
            Value::Float(1.5),
            Value::Nested { array: false }
        ]
    );
}

// ----- property test: the decoder agrees with a materialized serde_json::Value -----

const KEYS: [&str; 7] = ["a", "b", "c", "é", "q\"k", "", "x.y"];

const SEGMENTS: [&str; 6] = ["a", "b", "c", "é", "q\"k", ""];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter_map("finite", serde_json::Number::from_f64)
            .prop_map(serde_json::Value::Number),
        ".{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec((prop::sample::select(&KEYS[..]), inner), 0..6).prop_map(
                |entries| serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                )
            ),
        ]
    })
}

fn json_object() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::vec((prop::sample::select(&KEYS[..]), json_value()), 0..8).prop_map(
        |entries| {
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        },
    )
}

pub(super) fn paths() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 1..4).prop_map(|s| s.join(".")),
        0..10,
    )
}

/// The reference: walk the materialized value segment by segment.
fn lookup(root: &serde_json::Value, path: &str) -> Value {
    let mut cur = root;
    for segment in path.split('.') {
        match cur.as_object().and_then(|o| o.get(segment)) {
            Some(v) => cur = v,
            None => return Value::Null,
        }
    }
    from_json(cur)
}

proptest! {
    #[test]
    fn decoder_matches_materialized_lookup(
        value in json_object(),
        paths in paths(),
        pretty in any::<bool>(),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            serde_json::to_string(&value).unwrap()
        };
        // Compare against the re-parsed value, so float parsing is the same on both sides.
        let reparsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut fields = FieldRegistry::new();
        for p in &paths {
            fields.intern(p);
        }
        let dec = JsonDecoder::new(&fields);
        let mut out = vec![Value::Null; dec.slots()];
        dec.decode(text.as_bytes(), &mut out).unwrap();
        for (i, p) in fields.paths().iter().enumerate() {
            prop_assert_eq!(&out[i], &lookup(&reparsed, p), "path {:?} in {}", p, text);
        }
    }
}
