//! Avro records: the writer's schema by the record's schema id (cached), resolved to
//! the reader's schema (the pipeline's, when it has one) by Avro's rules, so a record
//! written with an older or newer compatible schema reads like the reader's; then the
//! wanted paths are read from the record: `payload.amount` is the field `amount` of
//! the record in the field `payload`.

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
    framing: Framing,
    registry: Option<Registry>,
    writers: SchemaCache<Writer>,
}

/// A writer's schema, and whether records written with it must be resolved to the
/// reader's (they differ).
#[derive(Debug)]
struct Writer {
    schema: Schema,
    resolve: bool,
}

impl AvroDecoder {
    /// A decoder reading by `reader` (required without a registry or without framing).
    pub(super) fn new(
        reader: Option<Arc<Schema>>,
        framing: Framing,
        registry: Option<Registry>,
    ) -> Self {
        AvroDecoder {
            reader,
            framing,
            registry,
            writers: SchemaCache::default(),
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
            Ok(Writer { schema, resolve })
        })
    }

    pub(super) fn decode(
        &self,
        trie: &Trie,
        raw: &[u8],
        out: &mut [Value],
    ) -> Result<(), DecodeError> {
        let own;
        let (writer, reader, mut body): (&Schema, Option<&Schema>, &[u8]) =
            match (self.framing, &self.registry) {
                (Framing::Confluent, Some(registry)) => {
                    let (id, body) =
                        confluent_frame(raw).ok_or_else(|| DecodeError::not_framed(raw))?;
                    own = self.writer(id, registry)?;
                    let reader = self.reader.as_deref().filter(|_| own.resolve);
                    (&own.schema, reader, body)
                }
                // No registry: the pipeline's schema is the writer's.
                (Framing::Confluent, None) => {
                    let (_, body) =
                        confluent_frame(raw).ok_or_else(|| DecodeError::not_framed(raw))?;
                    (
                        self.reader.as_deref().ok_or(DecodeError::NoSchema)?,
                        None,
                        body,
                    )
                }
                (Framing::None, _) => (
                    self.reader.as_deref().ok_or(DecodeError::NoSchema)?,
                    None,
                    raw,
                ),
            };
        let value = apache_avro::from_avro_datum(writer, &mut body, reader)
            .map_err(|e| DecodeError::body("avro", e.to_string()))?;
        if !body.is_empty() {
            let why = format!("{} bytes after the record", body.len());
            return Err(DecodeError::body("avro", why));
        }
        out.fill(Value::Null);
        fill(trie, Trie::ROOT, &value, out);
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
