//! Protobuf records, read by a descriptor compiled at start (protox: `.proto` files, no
//! protoc, no build step for the user) or loaded from a descriptor set, or by the
//! writer's schema from the registry. Field numbers are Protobuf's compatibility
//! contract, so a record written with an older or newer schema decodes by the
//! reader's descriptor: unknown fields are skipped, missing ones read as absent (or
//! their proto3 default). `payload.amount` is the field `amount` of the message in
//! the field `payload`.

use super::protobuf_plan::{self, Plan};
use super::schema::{
    Framing, RegisteredSchema, Registry, SchemaKind, SchemaReference, SchemaSource, confluent_frame,
};
use super::trie::Trie;
use super::{DecodeError, SchemaCache};
use crate::value::Value;
use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use prost_reflect::{MapKey, ReflectMessage, Value as Pb};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Compiles `.proto` source (with the well-known types importable) into a pool;
/// `name` is the file's name for imports and errors.
pub fn compile_proto(name: &str, source: &str) -> Result<DescriptorPool, String> {
    compile_protos(name, source, &[])
}

/// Compiles `.proto` source that may import `imports` (name, source) and the
/// well-known types.
fn compile_protos(
    name: &str,
    source: &str,
    imports: &[(String, String)],
) -> Result<DescriptorPool, String> {
    use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
    #[derive(Debug)]
    struct Files(Vec<(String, String)>);
    impl FileResolver for Files {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            match self.0.iter().find(|(n, _)| n == name) {
                Some((_, text)) => File::from_source(name, text),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }
    let mut files = vec![(name.to_string(), source.to_string())];
    files.extend(imports.iter().cloned());
    let mut resolver = ChainFileResolver::new();
    resolver.add(Files(files));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(name).map_err(|e| e.to_string())?;
    Ok(compiler.descriptor_pool())
}

/// A pool from a serialized `FileDescriptorSet` (`protoc --descriptor_set_out`, with
/// `--include_imports`).
pub fn descriptor_set(bytes: &[u8]) -> Result<DescriptorPool, String> {
    DescriptorPool::decode(bytes).map_err(|e| e.to_string())
}

/// A registered Protobuf schema as a pool, with the schemas it imports (its
/// references, fetched from `source` by subject and version, recursively): `.proto`
/// text, or base64 `FileDescriptorProto`s (what Confluent's Python serializer
/// registers). Returns the pool and the main file's name.
fn registered(
    schema: &RegisteredSchema,
    source: Option<&dyn SchemaSource>,
) -> Result<(DescriptorPool, String), String> {
    // Every file by the name it is imported as; the main one last.
    let mut files: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<SchemaReference> = schema.references.clone();
    while let Some(r) = pending.pop() {
        if files.iter().any(|(n, _)| *n == r.name) {
            continue;
        }
        if files.len() > 64 {
            return Err("more than 64 referenced schemas".into());
        }
        let source = source.ok_or("the schema has references and no registry")?;
        let s = source
            .by_subject(&r.subject, r.version)
            .map_err(|e| format!("reference '{}' ({} v{}): {e}", r.name, r.subject, r.version))?;
        pending.extend(s.references);
        files.push((r.name, s.text));
    }
    let descriptor = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).ok())
    };
    if let Some(main) = descriptor(&schema.text) {
        // Descriptors: add the imports first, each after its own imports.
        let mut protos = Vec::new();
        for (name, text) in &files {
            let f = descriptor(text)
                .ok_or_else(|| format!("reference '{name}' is not a descriptor"))?;
            protos.push(f);
        }
        let mut pool = DescriptorPool::global();
        let mut left = protos;
        while !left.is_empty() {
            let before = left.len();
            left.retain(|f| {
                let ready = f
                    .dependency
                    .iter()
                    .all(|d| pool.get_file_by_name(d).is_some());
                !(ready && pool.add_file_descriptor_proto(f.clone()).is_ok())
            });
            if left.len() == before {
                return Err(
                    "references that cannot be linked (a cycle, or a missing import)".into(),
                );
            }
        }
        let name = main.name().to_string();
        pool.add_file_descriptor_proto(main)
            .map_err(|e| e.to_string())?;
        return Ok((pool, name));
    }
    let pool = compile_protos("registered.proto", &schema.text, &files)?;
    Ok((pool, "registered.proto".to_string()))
}

/// The message of a schema as the registry holds it (its references fetched from
/// `source`): the file's first message, or the one named.
pub fn registered_message(
    schema: &RegisteredSchema,
    source: Option<&dyn SchemaSource>,
    name: Option<&str>,
) -> Result<MessageDescriptor, String> {
    let (pool, file) = registered(schema, source)?;
    match name {
        Some(n) => pool
            .get_message_by_name(n)
            .ok_or_else(|| format!("no message '{n}' in the registered schema")),
        None => pool
            .get_file_by_name(&file)
            .and_then(|f| f.messages().next())
            .ok_or_else(|| "the registered schema defines no message".to_string()),
    }
}

/// Decodes Protobuf records into slots.
#[derive(Debug, Clone)]
pub(super) struct ProtobufDecoder {
    /// The reader's message, if the pipeline has a schema.
    reader: Option<MessageDescriptor>,
    framing: Framing,
    registry: Option<Registry>,
    writers: SchemaCache<(DescriptorPool, String)>,
    /// The fast path's plans, by message (full name).
    plans: Arc<Mutex<HashMap<String, Arc<Plan>>>>,
    /// Per schema id: its first message (as the reader reads it) and plan.
    first_messages: SchemaCache<(MessageDescriptor, Arc<Plan>)>,
    /// The wanted paths (the plans are compiled for them).
    trie: Trie,
}

impl ProtobufDecoder {
    pub(super) fn new(
        reader: Option<MessageDescriptor>,
        framing: Framing,
        registry: Option<Registry>,
        trie: &Trie,
    ) -> Self {
        ProtobufDecoder {
            reader,
            framing,
            registry,
            writers: SchemaCache::default(),
            plans: Arc::default(),
            first_messages: SchemaCache::default(),
            trie: trie.clone(),
        }
    }

    fn plan(&self, message: &MessageDescriptor) -> Arc<Plan> {
        let mut plans = self.plans.lock().expect("plans lock");
        if let Some(p) = plans.get(message.full_name()) {
            return p.clone();
        }
        let p = Arc::new(protobuf_plan::compile(message, &self.trie));
        plans.insert(message.full_name().to_string(), p.clone());
        p
    }

    /// The message a framed record names: the writer's schema's message at the
    /// record's message indexes, read by the reader's descriptor of the same name
    /// when the pipeline has one.
    fn message(&self, id: u32, indexes: &[i64]) -> Result<MessageDescriptor, DecodeError> {
        let registry = self.registry.as_ref().ok_or(DecodeError::NoSchema)?;
        let writer = self.writers.get(id, || {
            let s = registry.by_id(id).map_err(|e| DecodeError::schema(id, e))?;
            if s.kind != SchemaKind::Protobuf {
                let why = format!("it is a {:?} schema, not Protobuf", s.kind);
                return Err(DecodeError::unknown_schema(id, why));
            }
            registered(&s, Some(registry.as_ref())).map_err(|e| DecodeError::unknown_schema(id, e))
        })?;
        let (pool, file) = &*writer;
        let file = pool
            .get_file_by_name(file)
            .ok_or_else(|| DecodeError::unknown_schema(id, "no file".into()))?;
        let not_there = || {
            let why = format!("no message at indexes {indexes:?}");
            DecodeError::unknown_schema(id, why)
        };
        let mut message = {
            let first = usize::try_from(indexes[0]).map_err(|_| not_there())?;
            file.messages().nth(first).ok_or_else(not_there)?
        };
        for i in &indexes[1..] {
            let i = usize::try_from(*i).map_err(|_| not_there())?;
            let child = message.child_messages().nth(i);
            message = child.ok_or_else(not_there)?;
        }
        Ok(match &self.reader {
            Some(reader) if reader.full_name() == message.full_name() => reader.clone(),
            Some(reader) => reader
                .parent_pool()
                .get_message_by_name(message.full_name())
                .unwrap_or(message),
            None => message,
        })
    }

    pub(super) fn decode(&self, raw: &[u8], out: &mut [Value]) -> Result<(), DecodeError> {
        let (message, body) = match (self.framing, &self.registry) {
            (Framing::Confluent, registry) => {
                let (id, rest) =
                    confluent_frame(raw).ok_or_else(|| DecodeError::not_framed(raw))?;
                // The usual record names the file's first message (indexes `[0]`, one
                // zero byte): its descriptor and plan are kept by schema id.
                if let (Some(_), [0, body @ ..]) = (registry, rest) {
                    let (message, plan) = &*self.first_messages.get(id, || {
                        let m = self.message(id, &[0])?;
                        let plan = self.plan(&m);
                        Ok((m, plan))
                    })?;
                    return self.read(message.clone(), plan, body, out);
                }
                let (indexes, body) = message_indexes(rest)
                    .ok_or_else(|| DecodeError::body("protobuf", "bad message indexes".into()))?;
                let message = match registry {
                    Some(_) => self.message(id, &indexes)?,
                    None => self.reader.clone().ok_or(DecodeError::NoSchema)?,
                };
                (message, body)
            }
            (Framing::None, _) => (self.reader.clone().ok_or(DecodeError::NoSchema)?, raw),
        };
        let plan = self.plan(&message);
        self.read(message, &plan, body, out)
    }

    /// Reads `body` as `message`: the fast path; a record it does not take (or finds
    /// malformed) is decoded by prost-reflect, the reference, which also words the
    /// errors.
    fn read(
        &self,
        message: MessageDescriptor,
        plan: &Plan,
        body: &[u8],
        out: &mut [Value],
    ) -> Result<(), DecodeError> {
        out.fill(Value::Null);
        if protobuf_plan::run(plan, body, out).is_ok() {
            return Ok(());
        }
        let msg = DynamicMessage::decode(message, body)
            .map_err(|e| DecodeError::body("protobuf", e.to_string()))?;
        out.fill(Value::Null);
        fill(&self.trie, Trie::ROOT, &msg, out);
        Ok(())
    }
}

/// The message indexes after the schema id (zigzag varints: a count, then the
/// indexes; a lone 0 is `[0]`), and the rest.
fn message_indexes(mut buf: &[u8]) -> Option<(Vec<i64>, &[u8])> {
    let mut next = || -> Option<i64> {
        let v = prost::encoding::decode_varint(&mut buf).ok()?;
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    };
    let n = next()?;
    let indexes = if n == 0 {
        vec![0]
    } else {
        let n = usize::try_from(n).ok().filter(|n| *n <= 64)?;
        (0..n).map(|_| next()).collect::<Option<Vec<_>>>()?
    };
    Some((indexes, buf))
}

fn field_of(msg: &DynamicMessage, key: &str) -> Option<(FieldDescriptor, Option<Pb>)> {
    let fd = msg.descriptor().get_field_by_name(key)?;
    // A field with presence that is not set is absent (null), like a missing JSON key.
    if fd.supports_presence() && !msg.has_field(&fd) {
        return Some((fd, None));
    }
    let v = msg.get_field(&fd).into_owned();
    Some((fd, Some(v)))
}

fn fill(trie: &Trie, node: usize, msg: &DynamicMessage, out: &mut [Value]) {
    for (key, c) in &trie.node(node).children {
        let Some((fd, value)) = field_of(msg, key) else {
            continue;
        };
        let n = trie.node(*c);
        let Some(value) = value else {
            continue;
        };
        if let Some(slot) = n.slot {
            out[slot] = leaf(&fd, &value);
        }
        if !n.children.is_empty() {
            match &value {
                Pb::Message(inner) => fill(trie, *c, inner, out),
                Pb::Map(entries) => fill_map(trie, *c, entries, &fd, out),
                _ => {}
            }
        }
    }
}

fn fill_map(
    trie: &Trie,
    node: usize,
    entries: &std::collections::HashMap<MapKey, Pb>,
    fd: &FieldDescriptor,
    out: &mut [Value],
) {
    let value_fd = match fd.kind() {
        Kind::Message(entry) => entry.map_entry_value_field(),
        _ => return,
    };
    for (key, c) in &trie.node(node).children {
        let Some(v) = entries.get(&MapKey::String(key.to_string())) else {
            continue;
        };
        let n = trie.node(*c);
        if let Some(slot) = n.slot {
            out[slot] = leaf(&value_fd, v);
        }
        if let (Pb::Message(inner), false) = (v, n.children.is_empty()) {
            fill(trie, *c, inner, out);
        }
    }
}

/// A Protobuf value as a slot value: enums by name, bytes as text when UTF-8,
/// `google.protobuf.Timestamp` as epoch milliseconds, the wrapper types as their value.
pub(super) fn leaf(fd: &FieldDescriptor, v: &Pb) -> Value {
    match v {
        Pb::Bool(b) => Value::Bool(*b),
        Pb::I32(i) => Value::Int(i64::from(*i)),
        Pb::I64(i) => Value::Int(*i),
        Pb::U32(i) => Value::Int(i64::from(*i)),
        Pb::U64(i) => i64::try_from(*i).map_or(Value::Float(*i as f64), Value::Int),
        Pb::F32(f) => Value::Float(f64::from(*f)),
        Pb::F64(f) => Value::Float(*f),
        Pb::String(s) => Value::Str(s.as_str().into()),
        Pb::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::Str(s.into()),
            Err(_) => Value::Nested { array: false },
        },
        Pb::EnumNumber(n) => match fd.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or(Value::Int(i64::from(*n)), |v| Value::Str(v.name().into())),
            _ => Value::Int(i64::from(*n)),
        },
        Pb::Message(m) => well_known(m),
        Pb::List(_) => Value::Nested { array: true },
        Pb::Map(_) => Value::Nested { array: false },
    }
}

fn well_known(m: &DynamicMessage) -> Value {
    let d = m.descriptor();
    let get = |name: &str| {
        d.get_field_by_name(name)
            .map(|f| m.get_field(&f).into_owned())
    };
    match d.full_name() {
        "google.protobuf.Timestamp" => {
            let secs = get("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
            let nanos = get("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
            Value::Int(secs.saturating_mul(1_000) + i64::from(nanos) / 1_000_000)
        }
        name if name.starts_with("google.protobuf.")
            && name.ends_with("Value")
            && d.get_field_by_name("value").is_some() =>
        {
            let fd = d.get_field_by_name("value").expect("checked");
            leaf(&fd, &m.get_field(&fd))
        }
        _ => Value::Nested { array: false },
    }
}

/// The scalar fields of a Protobuf message, by dotted path, with their column types:
/// what a pipeline reading this message declares without a `fields:` block. Repeated
/// fields and maps are left out; `google.protobuf.Timestamp` is a timestamp, the
/// wrapper types their value's type.
pub fn message_fields(message: &MessageDescriptor) -> Vec<(String, crate::value::ColumnType)> {
    let mut out = Vec::new();
    walk_message(message, "", 0, &mut out);
    out
}

fn walk_message(
    m: &MessageDescriptor,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, crate::value::ColumnType)>,
) {
    use crate::value::ColumnType as T;
    if depth > 16 {
        return;
    }
    for f in m.fields() {
        if f.is_list() || f.is_map() {
            continue;
        }
        let path = if prefix.is_empty() {
            f.name().to_string()
        } else {
            format!("{prefix}.{}", f.name())
        };
        let ty = match f.kind() {
            Kind::Bool => T::Bool,
            Kind::Int32
            | Kind::Int64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Sfixed32
            | Kind::Sfixed64
            | Kind::Uint32
            | Kind::Fixed32
            | Kind::Uint64
            | Kind::Fixed64 => T::Int64,
            Kind::Float | Kind::Double => T::Float64,
            Kind::String | Kind::Enum(_) => T::String,
            Kind::Bytes => continue,
            Kind::Message(inner) => match inner.full_name() {
                "google.protobuf.Timestamp" => T::Timestamp,
                name if name.starts_with("google.protobuf.") && name.ends_with("Value") => {
                    match inner.get_field_by_name("value").map(|v| v.kind()) {
                        Some(Kind::Bool) => T::Bool,
                        Some(Kind::String) => T::String,
                        Some(Kind::Float | Kind::Double) => T::Float64,
                        Some(Kind::Bytes) | None => continue,
                        Some(_) => T::Int64,
                    }
                }
                _ => {
                    walk_message(&inner, &path, depth + 1, out);
                    continue;
                }
            },
        };
        out.push((path, ty));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_indexes_read_like_confluents_encoder_writes_them() {
        assert_eq!(message_indexes(&[0, 9]), Some((vec![0], &[9u8][..])));
        // [1, 2]: count 2 (zigzag 4), 1 (2), 2 (4).
        assert_eq!(
            message_indexes(&[4, 2, 4, 7]),
            Some((vec![1, 2], &[7u8][..]))
        );
        assert_eq!(message_indexes(&[]), None);
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::fields::FieldRegistry;

    /// The writer has a field the reader lacks (`extra`, unknown to it).
    const PROTO: &str = r#"
syntax = "proto3";
package t;
enum Kind { A = 0; B = 1; C = 2; }
message Inner { int64 x = 1; optional string y = 2; repeated int32 r = 3; }
message E {
  int32 i32 = 1; int64 i64 = 2; uint64 u64 = 3; sint32 s32 = 4; bool b = 5;
  fixed32 f32 = 6; sfixed64 sf64 = 7; float fl = 8; double d = 9; string s = 10;
  bytes raw = 11; Kind kind = 12; optional string maybe = 13; Inner inner = 14;
  repeated int64 many = 15; map<string, int64> attrs = 16; EXTRA
}
"#;

    const PATHS: &[&str] = &[
        "i32", "i64", "u64", "s32", "b", "f32", "sf64", "fl", "d", "s", "raw", "kind", "maybe",
        "inner", "inner.x", "inner.y", "inner.r", "many", "attrs", "extra", "missing",
    ];

    use crate::decode::test_rng::Rng;

    fn message(
        desc: &MessageDescriptor,
        inner: &MessageDescriptor,
        rng: &mut Rng,
    ) -> DynamicMessage {
        let mut m = DynamicMessage::new(desc.clone());
        let text = |rng: &mut Rng| format!("t{}", rng.next() % 1000);
        let set = |m: &mut DynamicMessage, name: &str, v: Pb, rng: &mut Rng| {
            if rng.coin() {
                m.set_field_by_name(name, v);
            }
        };
        let big = rng.next();
        set(&mut m, "i32", Pb::I32(-(big as i32 >> 3)), rng);
        set(&mut m, "i64", Pb::I64(big as i64 >> (big % 60)), rng);
        set(&mut m, "u64", Pb::U64(big), rng);
        set(&mut m, "s32", Pb::I32(-(big as i32 >> 5)), rng);
        set(&mut m, "b", Pb::Bool(rng.coin()), rng);
        set(&mut m, "f32", Pb::U32(big as u32), rng);
        set(&mut m, "sf64", Pb::I64(-(big as i64 >> 2)), rng);
        set(&mut m, "fl", Pb::F32((big % 1000) as f32 / 8.0), rng);
        set(&mut m, "d", Pb::F64(big as f64 / 7.0), rng);
        let t = text(rng);
        set(&mut m, "s", Pb::String(t), rng);
        let raw = if rng.coin() {
            vec![0xff, 0xfe]
        } else {
            b"ok".to_vec()
        };
        set(&mut m, "raw", Pb::Bytes(raw.into()), rng);
        set(&mut m, "kind", Pb::EnumNumber((big % 4) as i32), rng);
        let t = text(rng);
        set(&mut m, "maybe", Pb::String(t), rng);
        if rng.coin() {
            let mut i = DynamicMessage::new(inner.clone());
            i.set_field_by_name("x", Pb::I64(big as i64 >> 9));
            if rng.coin() {
                i.set_field_by_name("y", Pb::String(text(rng)));
            }
            i.set_field_by_name("r", Pb::List(vec![Pb::I32(1), Pb::I32(-2)]));
            m.set_field_by_name("inner", Pb::Message(i));
        }
        set(&mut m, "many", Pb::List(vec![Pb::I64(3), Pb::I64(4)]), rng);
        if desc.get_field_by_name("extra").is_some() {
            set(&mut m, "extra", Pb::String(text(rng)), rng);
        }
        m
    }

    /// The fast path and the reference (a `DynamicMessage`, walked) agree on every
    /// path, also for records of a writer with a field the reader lacks.
    #[test]
    fn the_fast_path_reads_what_prost_reflect_reads() {
        let writer_pool =
            compile_proto("w.proto", &PROTO.replace("EXTRA", "string extra = 17;")).expect("w");
        let reader_pool = compile_proto("r.proto", &PROTO.replace("EXTRA", "")).expect("r");
        let writer = writer_pool.get_message_by_name("t.E").expect("E");
        let inner = writer_pool.get_message_by_name("t.Inner").expect("Inner");
        let mut fields = FieldRegistry::new();
        for p in PATHS {
            fields.intern(p);
        }
        let trie = Trie::new(&fields);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for reader in [
            writer.clone(),
            reader_pool.get_message_by_name("t.E").expect("E"),
        ] {
            let plan = protobuf_plan::compile(&reader, &trie);
            let mut taken_all = 0;
            for _ in 0..500 {
                let bytes = message(&writer, &inner, &mut rng).encode_to_vec();
                let mut fast = vec![Value::Null; fields.len()];
                let taken = protobuf_plan::run(&plan, &bytes, &mut fast);
                let reference_msg = DynamicMessage::decode(reader.clone(), bytes.as_slice());
                let mut reference = vec![Value::Null; fields.len()];
                match (&taken, &reference_msg) {
                    (Ok(()), Ok(msg)) => {
                        taken_all += 1;
                        fill(&trie, Trie::ROOT, msg, &mut reference)
                    }
                    (Err(_), _) => continue, // left to the reference: nothing to compare
                    (Ok(()), Err(e)) => {
                        panic!("the fast path took what the reference refuses: {e}")
                    }
                }
                for (i, p) in PATHS.iter().enumerate() {
                    assert_eq!(fast[i], reference[i], "{p}");
                }
            }
            assert_eq!(
                taken_all, 500,
                "the fast path takes every record of these types"
            );
        }
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;
    use crate::decode::schema::SchemaError;

    #[derive(Debug)]
    struct Imports;

    impl SchemaSource for Imports {
        fn by_id(&self, id: u32) -> Result<RegisteredSchema, SchemaError> {
            Err(SchemaError::NotFound(format!("{id}")))
        }

        fn by_subject(&self, subject: &str, version: i64) -> Result<RegisteredSchema, SchemaError> {
            assert_eq!((subject, version), ("money-value", 3));
            Ok(RegisteredSchema {
                kind: SchemaKind::Protobuf,
                text: "syntax = \"proto3\"; package m; message Money { int64 amount = 1; }".into(),
                references: Vec::new(),
            })
        }
    }

    /// `.proto` text whose imports are references (what Java and Go serializers register).
    #[test]
    fn registered_text_imports_its_references() {
        let main = RegisteredSchema {
            kind: SchemaKind::Protobuf,
            text: "syntax = \"proto3\"; package t; import \"money.proto\"; \
                   message T { m.Money money = 1; }"
                .into(),
            references: vec![SchemaReference {
                name: "money.proto".into(),
                subject: "money-value".into(),
                version: 3,
            }],
        };
        let t = registered_message(&main, Some(&Imports), None).expect("compiles");
        assert_eq!(t.full_name(), "t.T");
        let money = t.get_field_by_name("money").expect("field");
        assert!(matches!(money.kind(), Kind::Message(m) if m.full_name() == "m.Money"));
        // Without a registry to fetch them from, references are an error that says so.
        let err = registered_message(&main, None, None).unwrap_err();
        assert!(err.contains("references"), "{err}");
    }
}
