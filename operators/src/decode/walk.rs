//! The reference path of decoding: a walk of the record along the trie by serde_json's
//! streaming deserializer.
//!
//! It takes every record the scanner leaves (escapes, floats, deep nesting, a path that
//! is both wanted and a prefix, invalid JSON), and its values and error messages are
//! the ones the scanner must agree with. Unwanted values are skipped as
//! [`IgnoredAny`]; only a wanted path that is also a prefix materializes its subtree.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::trie::Trie;
use crate::value::Value;

/// Decodes `text` along `trie` into `out` with serde_json's streaming deserializer.
/// On error `out` is left partly written.
pub(super) fn decode(trie: &Trie, text: &str, out: &mut [Value]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(ObjectVisitor {
        trie,
        node: Trie::ROOT,
        out,
    })?;
    de.end()
}

/// Converts a materialized JSON value the same way the streaming path does.
pub(super) fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(Arc::from(s.as_str())),
        serde_json::Value::Array(_) => Value::Nested { array: true },
        serde_json::Value::Object(_) => Value::Nested { array: false },
    }
}

/// Fills the slots below trie node `node` from an already materialized JSON object.
fn fill_from_json(
    trie: &Trie,
    node: usize,
    object: &serde_json::Map<String, serde_json::Value>,
    out: &mut [Value],
) {
    for (key, child) in &trie.node(node).children {
        let Some(v) = object.get(&**key) else {
            continue;
        };
        let c = trie.node(*child);
        if let Some(slot) = c.slot {
            out[slot] = from_json(v);
        }
        if let serde_json::Value::Object(inner) = v
            && !c.children.is_empty()
        {
            fill_from_json(trie, *child, inner, out);
        }
    }
}

/// Walks the entries of a JSON object whose trie node is `node`.
fn walk_map<'de, A: MapAccess<'de>>(
    trie: &Trie,
    node: usize,
    out: &mut [Value],
    mut map: A,
) -> Result<(), A::Error> {
    while let Some(child) = map.next_key_seed(KeySeed { trie, node })? {
        match child {
            Some(child) => map.next_value_seed(NodeSeed {
                trie,
                node: child,
                out: &mut *out,
            })?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// Looks an object key up among the children of `node` without allocating.
struct KeySeed<'a> {
    trie: &'a Trie,
    node: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.trie.child(self.node, key))
    }
}

/// Deserializes the value under a wanted key (trie node `node`).
pub(super) struct NodeSeed<'a> {
    trie: &'a Trie,
    node: usize,
    out: &'a mut [Value],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let NodeSeed { trie, node, out } = self;
        let n = trie.node(node);
        for &s in &n.descendant_slots {
            out[s] = Value::Null;
        }
        match (n.slot, n.children.is_empty()) {
            (Some(slot), true) => out[slot] = d.deserialize_any(LeafVisitor)?,
            (None, false) => d.deserialize_any(ObjectVisitor { trie, node, out })?,
            (Some(slot), false) => {
                // Both a wanted value and a path prefix (rare): materialize the subtree.
                let v = serde_json::Value::deserialize(d)?;
                out[slot] = from_json(&v);
                if let serde_json::Value::Object(object) = &v {
                    fill_from_json(trie, node, object, out);
                }
            }
            (None, true) => {
                d.deserialize_ignored_any(IgnoredAny)?;
            }
        }
        Ok(())
    }
}

/// A wanted leaf: scalars map to [`Value`]s, objects and arrays to [`Value::Nested`].
pub(super) struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Arc::from(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Nested { array: false })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Nested { array: true })
    }
}

/// A path prefix: walks it if it is an object, ignores it otherwise.
struct ObjectVisitor<'a> {
    trie: &'a Trie,
    node: usize,
    out: &'a mut [Value],
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        walk_map(self.trie, self.node, self.out, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use crate::decode::tests::{decode, decode_err, decode_ok, s};
    use crate::value::Value;

    #[test]
    fn leaf_that_is_also_a_prefix() {
        let raw = r#"{"payload":{"amount":250,"meta":{"by":"me"}},"x":1}"#;
        let out = decode_ok(
            &[
                "payload",
                "payload.amount",
                "payload.meta.by",
                "payload.none",
                "x",
            ],
            raw,
        );
        assert_eq!(
            out,
            [
                Value::Nested { array: false },
                Value::Int(250),
                s("me"),
                Value::Null,
                Value::Int(1)
            ]
        );
        let out = decode_ok(&["payload", "payload.amount"], r#"{"payload":5}"#);
        assert_eq!(out, [Value::Int(5), Value::Null]);
        let out = decode_ok(
            &["payload.amount", "payload"],
            r#"{"payload":[{"amount":1}]}"#,
        );
        assert_eq!(out, [Value::Null, Value::Nested { array: true }]);
    }

    #[test]
    fn unicode_escapes() {
        let raw = r#"{"name":"caf\u00e9 \ud83d\ude00 \"q\" \\ \n","k\u00e9y":1,"emoji😀":2,"tab\tkey":3}"#;
        let out = decode_ok(&["name", "kéy", "emoji😀", "tab\tkey"], raw);
        assert_eq!(
            out,
            [
                s("café 😀 \"q\" \\ \n"),
                Value::Int(1),
                Value::Int(2),
                Value::Int(3)
            ]
        );
    }

    #[test]
    fn deep_nesting_is_never_a_crash() {
        let depth = 100_000;
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        // Skipped (not wanted): serde_json skips iteratively.
        assert_eq!(decode_ok(&["b"], &deep), [Value::Null]);
        // Wanted as a leaf: only its kind is kept, its contents are skipped iteratively.
        assert_eq!(decode_ok(&["a"], &deep), [Value::Nested { array: true }]);
        // Walked as a path prefix: serde_json's recursion limit stops it.
        let deep_obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(decode_err(&["a.a.a", "a"], &deep_obj).contains("recursion limit"));
        assert_eq!(
            decode_ok(&["a.a.a"], &deep_obj),
            [Value::Nested { array: false }]
        );
        assert!(decode(&["a"], &"[".repeat(depth)).is_err());
    }
}
