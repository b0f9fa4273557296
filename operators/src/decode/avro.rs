//! Avro records: the writer's schema by the record's schema id (cached), resolved to
//! the reader's schema (the pipeline's, when it has one) by Avro's rules, so a record
//! written with an older or newer compatible schema reads like the reader's; then the
//! wanted paths are read from the record: `payload.amount` is the field `amount` of
//! the record in the field `payload`.

use super::avro_plan::{self, Step};
use super::schema::{Framing, Registry, SchemaKind, confluent_frame};
use super::trie::Trie;
use super::{DecodeError, SchemaCache};
use crate::value::{ColumnType, Value};
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use std::sync::Arc;

/// Decodes Avro records into slots.
#[derive(Debug, Clone)]
pub(super) struct AvroDecoder {
    /// The reader's schema, if the pipeline has one.
    reader: Option<Arc<Schema>>,
    /// The plan for records written with the reader's schema (no registry).
    own: Option<Arc<Step>>,
    framing: Framing,
    registry: Option<Registry>,
    writers: SchemaCache<Writer>,
    /// The wanted paths (the plans are compiled for them).
    trie: Trie,
}

/// A writer's schema, whether records written with it must be resolved to the
/// reader's (they differ), and the fast path's plan for them.
#[derive(Debug)]
struct Writer {
    schema: Schema,
    resolve: bool,
    plan: Step,
}

impl AvroDecoder {
    /// A decoder reading by `reader` (required without a registry or without framing)
    /// the paths of `trie`.
    pub(super) fn new(
        reader: Option<Arc<Schema>>,
        framing: Framing,
        registry: Option<Registry>,
        trie: &Trie,
    ) -> Self {
        let own = reader
            .as_deref()
            .map(|r| Arc::new(avro_plan::compile(r, None, trie)));
        AvroDecoder {
            reader,
            own,
            framing,
            registry,
            writers: SchemaCache::default(),
            trie: trie.clone(),
        }
    }

    fn writer(&self, id: u32, registry: &Registry) -> Result<Arc<Writer>, DecodeError> {
        self.writers.get(id, || {
            let s = registry.by_id(id).map_err(|e| DecodeError::schema(id, e))?;
            if s.kind != SchemaKind::Avro {
                let why = format!("it is a {:?} schema, not Avro", s.kind);
                return Err(DecodeError::unknown_schema(id, why));
            }
            let schema = Schema::parse_str(&s.text)
                .map_err(|e| DecodeError::unknown_schema(id, e.to_string()))?;
            let resolve = self
                .reader
                .as_ref()
                .is_some_and(|r| r.canonical_form() != schema.canonical_form());
            let reader = self.reader.as_deref().filter(|_| resolve);
            let plan = avro_plan::compile(&schema, reader, &self.trie);
            Ok(Writer {
                schema,
                resolve,
                plan,
            })
        })
    }

    pub(super) fn decode(&self, raw: &[u8], out: &mut [Value]) -> Result<(), DecodeError> {
        let own;
        let (writer, reader, plan, mut body): (&Schema, Option<&Schema>, &Step, &[u8]) =
            match (self.framing, &self.registry) {
                (Framing::Confluent, Some(registry)) => {
                    let (id, body) =
                        confluent_frame(raw).ok_or_else(|| DecodeError::not_framed(raw))?;
                    own = self.writer(id, registry)?;
                    let reader = self.reader.as_deref().filter(|_| own.resolve);
                    (&own.schema, reader, &own.plan, body)
                }
                // No registry: the pipeline's schema is the writer's.
                (Framing::Confluent, None) => {
                    let (_, body) =
                        confluent_frame(raw).ok_or_else(|| DecodeError::not_framed(raw))?;
                    let (Some(r), Some(p)) = (self.reader.as_deref(), self.own.as_deref()) else {
                        return Err(DecodeError::NoSchema);
                    };
                    (r, None, p, body)
                }
                (Framing::None, _) => {
                    let (Some(r), Some(p)) = (self.reader.as_deref(), self.own.as_deref()) else {
                        return Err(DecodeError::NoSchema);
                    };
                    (r, None, p, raw)
                }
            };
        // The fast path; a record it does not take (or finds malformed) is decoded by
        // apache-avro, the reference, which also words the errors.
        out.fill(Value::Null);
        if avro_plan::run(plan, body, out).is_ok() {
            return Ok(());
        }
        let value = apache_avro::from_avro_datum(writer, &mut body, reader)
            .map_err(|e| DecodeError::body("avro", e.to_string()))?;
        if !body.is_empty() {
            let why = format!("{} bytes after the record", body.len());
            return Err(DecodeError::body("avro", why));
        }
        out.fill(Value::Null);
        fill(&self.trie, Trie::ROOT, &value, out);
        Ok(())
    }
}

/// A union's branch, for reading.
fn unwrap(v: &Avro) -> &Avro {
    match v {
        Avro::Union(_, inner) => unwrap(inner),
        other => other,
    }
}

fn child<'a>(v: &'a Avro, key: &str) -> Option<&'a Avro> {
    match unwrap(v) {
        Avro::Record(fields) => fields.iter().find(|(n, _)| n == key).map(|(_, v)| v),
        Avro::Map(entries) => entries.get(key),
        _ => None,
    }
}

fn fill(trie: &Trie, node: usize, v: &Avro, out: &mut [Value]) {
    for (key, c) in &trie.node(node).children {
        let Some(field) = child(v, key) else {
            continue;
        };
        let n = trie.node(*c);
        if let Some(slot) = n.slot {
            out[slot] = leaf(field);
        }
        if !n.children.is_empty() {
            fill(trie, *c, field, out);
        }
    }
}

/// An Avro value as a slot value. Timestamps become epoch milliseconds; dates, days
/// since the epoch; bytes, text when they are UTF-8. Decimals and durations have no
/// slot type yet: they read as a nested value (a bad record if a view uses one).
fn leaf(v: &Avro) -> Value {
    let text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) => Value::Str(s.into()),
        Err(_) => Value::Nested { array: false },
    };
    match unwrap(v) {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(*b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => Value::Int(i64::from(*i)),
        Avro::Long(i) | Avro::TimestampMillis(i) | Avro::LocalTimestampMillis(i) => Value::Int(*i),
        Avro::TimeMicros(i) => Value::Int(*i),
        Avro::TimestampMicros(i) | Avro::LocalTimestampMicros(i) => Value::Int(i.div_euclid(1_000)),
        Avro::TimestampNanos(i) | Avro::LocalTimestampNanos(i) => {
            Value::Int(i.div_euclid(1_000_000))
        }
        Avro::Float(f) => Value::Float(f64::from(*f)),
        Avro::Double(f) => Value::Float(*f),
        Avro::String(s) | Avro::Enum(_, s) => Value::Str(s.as_str().into()),
        Avro::Uuid(u) => Value::Str(u.to_string().into()),
        Avro::Bytes(b) | Avro::Fixed(_, b) => text(b),
        Avro::Array(_) => Value::Nested { array: true },
        _ => Value::Nested { array: false },
    }
}

/// The scalar fields of an Avro record schema, by dotted path, with their column
/// types: what a pipeline reading records of this schema declares without a `fields:`
/// block. Arrays, maps, decimals and durations are left out.
pub fn schema_fields(schema: &Schema) -> Vec<(String, ColumnType)> {
    let mut out = Vec::new();
    let names = names_of(schema);
    walk_schema(schema, &names, "", 0, &mut out);
    out
}

fn names_of(schema: &Schema) -> std::collections::HashMap<String, Schema> {
    let mut names = std::collections::HashMap::new();
    fn collect(s: &Schema, names: &mut std::collections::HashMap<String, Schema>) {
        match s {
            Schema::Record(r) => {
                names.insert(r.name.fullname(None), s.clone());
                for f in &r.fields {
                    collect(&f.schema, names);
                }
            }
            Schema::Union(u) => u.variants().iter().for_each(|v| collect(v, names)),
            Schema::Array(a) => collect(&a.items, names),
            Schema::Map(m) => collect(&m.types, names),
            _ => {}
        }
    }
    collect(schema, &mut names);
    names
}

fn walk_schema(
    s: &Schema,
    names: &std::collections::HashMap<String, Schema>,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, ColumnType)>,
) {
    if depth > 16 {
        return;
    }
    let s = match s {
        Schema::Ref { name } => match names.get(&name.fullname(None)) {
            Some(s) => s,
            None => return,
        },
        other => other,
    };
    let ty = match s {
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|v| **v != Schema::Null)
                .collect();
            if let [one] = non_null.as_slice() {
                walk_schema(one, names, prefix, depth, out);
            }
            return;
        }
        Schema::Record(r) => {
            for f in &r.fields {
                let path = if prefix.is_empty() {
                    f.name.clone()
                } else {
                    format!("{prefix}.{}", f.name)
                };
                walk_schema(&f.schema, names, &path, depth + 1, out);
            }
            return;
        }
        Schema::Boolean => ColumnType::Bool,
        Schema::Int | Schema::Long | Schema::Date | Schema::TimeMillis | Schema::TimeMicros => {
            ColumnType::Int64
        }
        Schema::Float | Schema::Double => ColumnType::Float64,
        Schema::String | Schema::Enum(_) | Schema::Uuid => ColumnType::String,
        Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => ColumnType::Timestamp,
        _ => return,
    };
    if !prefix.is_empty() {
        out.push((prefix.to_string(), ty));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::FieldRegistry;
    use std::collections::HashMap;

    const WRITER: &str = r#"{"type": "record", "name": "E", "fields": [
        {"name": "s", "type": "string"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B", "C"]}},
        {"name": "maybe", "type": ["null", "string"]},
        {"name": "n", "type": ["null", "long"], "default": null},
        {"name": "inner", "type": {"type": "record", "name": "I", "fields": [
            {"name": "x", "type": "long"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "deep", "type": ["null", "I2"], "default": null}
        ]}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "fx", "type": {"type": "fixed", "name": "F4", "size": 4}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "gone", "type": "string"}
    ]}"#;

    fn with_i2(text: &str) -> String {
        text.replace(
            r#"["null", "I2"]"#,
            r#"["null", {"type": "record", "name": "I2", "fields": [{"name": "y", "type": "string"}]}]"#,
        )
    }

    /// The reader: `gone` removed, `added` (with a default) and `n` promoted to double.
    fn reader_text() -> String {
        with_i2(WRITER)
            .replace(
                r#"{"name": "gone", "type": "string"}"#,
                r#"{"name": "added", "type": "string", "default": "dflt"}"#,
            )
            .replace(
                r#"["null", "long"], "default": null"#,
                r#"["null", "double"], "default": null"#,
            )
    }

    const PATHS: &[&str] = &[
        "s",
        "i",
        "l",
        "f",
        "d",
        "b",
        "raw",
        "kind",
        "maybe",
        "n",
        "inner",
        "inner.x",
        "inner.tags",
        "inner.deep.y",
        "attrs",
        "fx",
        "at",
        "day",
        "gone",
        "added",
        "missing",
    ];

    use crate::decode::test_rng::Rng;

    fn record(rng: &mut Rng) -> Avro {
        let text = |rng: &mut Rng| {
            let n = rng.below(6) as usize;
            (0..n)
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect::<String>()
        };
        let big = |rng: &mut Rng| rng.next() as i64 >> rng.below(60);
        let deep = if rng.below(2) == 0 {
            Avro::Union(0, Box::new(Avro::Null))
        } else {
            Avro::Union(
                1,
                Box::new(Avro::Record(vec![("y".into(), Avro::String(text(rng)))])),
            )
        };
        let tags = (0..rng.below(4)).map(|_| Avro::String(text(rng))).collect();
        let attrs: HashMap<String, Avro> = (0..rng.below(3))
            .map(|_| (text(rng), Avro::Long(big(rng))))
            .collect();
        Avro::Record(vec![
            ("s".into(), Avro::String(text(rng))),
            ("i".into(), Avro::Int(big(rng) as i32)),
            ("l".into(), Avro::Long(big(rng))),
            ("f".into(), Avro::Float(rng.below(1000) as f32 / 8.0)),
            ("d".into(), Avro::Double(big(rng) as f64 / 3.0)),
            ("b".into(), Avro::Boolean(rng.below(2) == 0)),
            (
                "raw".into(),
                Avro::Bytes(if rng.below(4) == 0 {
                    vec![0xff, 0xfe]
                } else {
                    text(rng).into_bytes()
                }),
            ),
            ("kind".into(), {
                let i = rng.below(3) as u32;
                Avro::Enum(i, ["A", "B", "C"][i as usize].into())
            }),
            (
                "maybe".into(),
                if rng.below(2) == 0 {
                    Avro::Union(0, Box::new(Avro::Null))
                } else {
                    Avro::Union(1, Box::new(Avro::String(text(rng))))
                },
            ),
            (
                "n".into(),
                if rng.below(2) == 0 {
                    Avro::Union(0, Box::new(Avro::Null))
                } else {
                    Avro::Union(1, Box::new(Avro::Long(big(rng))))
                },
            ),
            (
                "inner".into(),
                Avro::Record(vec![
                    ("x".into(), Avro::Long(big(rng))),
                    ("tags".into(), Avro::Array(tags)),
                    ("deep".into(), deep),
                ]),
            ),
            ("attrs".into(), Avro::Map(attrs)),
            (
                "fx".into(),
                Avro::Fixed(4, text(rng).bytes().chain(*b"wxyz").take(4).collect()),
            ),
            ("at".into(), Avro::TimestampMicros(big(rng))),
            ("day".into(), Avro::Date(rng.below(30_000) as i32)),
            ("gone".into(), Avro::String(text(rng))),
        ])
    }

    /// The fast path and the reference (apache-avro's value, walked) agree on every
    /// path, with and without a reader schema that differs.
    #[test]
    fn the_fast_path_reads_what_apache_avro_reads() {
        let writer = Schema::parse_str(&with_i2(WRITER)).expect("writer");
        let reader = Schema::parse_str(&reader_text()).expect("reader");
        let mut fields = FieldRegistry::new();
        for p in PATHS {
            fields.intern(p);
        }
        let trie = Trie::new(&fields);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for resolve in [None, Some(&reader)] {
            let plan = avro_plan::compile(&writer, resolve, &trie);
            for _ in 0..500 {
                let value = record(&mut rng);
                let body = apache_avro::to_avro_datum(&writer, value).expect("encodes");
                let mut fast = vec![Value::Null; fields.len()];
                avro_plan::run(&plan, &body, &mut fast).expect("the fast path takes it");
                let reference_value =
                    apache_avro::from_avro_datum(&writer, &mut body.as_slice(), resolve)
                        .expect("reference");
                let mut reference = vec![Value::Null; fields.len()];
                fill(&trie, Trie::ROOT, &reference_value, &mut reference);
                for (i, p) in PATHS.iter().enumerate() {
                    assert_eq!(
                        fast[i],
                        reference[i],
                        "{p} (resolving: {})",
                        resolve.is_some()
                    );
                }
                // A cut body is an error, never a panic.
                let mut cut = vec![Value::Null; fields.len()];
                assert!(
                    avro_plan::run(&plan, &body[..body.len() / 2], &mut cut).is_err()
                        || body.len() < 2
                );
            }
        }
    }
}
