//! JSON decoding into field slots.
//!
//! [`JsonDecoder`] turns the dotted paths of a [`FieldRegistry`] into a trie and walks a
//! JSON record along it: keys nobody reads are skipped without being materialized, and
//! only the wanted leaves are converted into [`Value`]s. A strict byte scanner (`Scan`)
//! takes the records events are made of; whatever it leaves (escapes, deep nesting,
//! invalid JSON) is walked again by `serde_json`'s streaming deserializer, the reference
//! for values and error messages. Decoding a typical event allocates nothing except the
//! `Arc<str>` of each wanted string.
//!
//! The parts:
//!
//! - `trie`: the wanted paths as a trie of keys, and the lookup of a key,
//! - `scanner`: the byte scanner, the fast path,
//! - `walk`: the walk by serde_json's deserializer, the reference,
//! - `error`: [`DecodeError`], what a record that does not decode is,
//! - `preset`: envelope presets (Debezium, CloudEvents), whose records are shaped into
//!   one document before the paths are read; [`RecordDecoder`] picks the way.

mod avro;
mod avro_plan;
mod error;
mod preset;
mod protobuf;
mod protobuf_plan;
mod scanner;
mod schema;
#[cfg(test)]
mod test_rng;
mod trie;
mod walk;

pub use self::avro::schema_fields as avro_schema_fields;
pub use self::preset::{Preset, RecordParts, Shaped};
pub use self::protobuf::{
    compile_proto, descriptor_set, message_fields as protobuf_message_fields, registered_message,
};
pub use self::schema::{
    Framing, RegisteredSchema, Registry, SchemaError, SchemaKind, SchemaReference, SchemaSource,
};
pub use apache_avro::Schema as AvroSchema;
pub use prost_reflect::MessageDescriptor;

use self::scanner::Scan;
use self::trie::Trie;
use crate::fields::FieldRegistry;
use crate::value::Value;

pub use self::error::DecodeError;

/// Decodes JSON events, keeping only the fields a pipeline reads.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    /// The path trie; its root is the record itself.
    trie: Trie,
    slots: usize,
}

impl JsonDecoder {
    /// A decoder for every path in `fields`.
    ///
    /// Paths are split on `.`: `payload.amount` is the key `amount` of the object under
    /// the top-level key `payload`.
    pub fn new(fields: &FieldRegistry) -> Self {
        JsonDecoder {
            trie: Trie::new(fields),
            slots: fields.len(),
        }
    }

    /// Number of slots [`JsonDecoder::decode`] fills.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Decodes one record, writing the value of path `i` to `out[i]` (Null when absent).
    /// `out.len()` must equal [`JsonDecoder::slots`].
    ///
    /// Scalars become the matching [`Value`] (integers above `i64::MAX` become floats);
    /// an object or array at a wanted path becomes [`Value::Nested`]. A path through
    /// something that is not an object is Null. When a key repeats, the last one wins.
    /// On error every slot is Null.
    pub fn decode(&self, raw: &[u8], out: &mut [Value]) -> Result<(), DecodeError> {
        assert_eq!(
            out.len(),
            self.slots,
            "JsonDecoder::decode: wrong number of slots"
        );
        out.fill(Value::Null);
        let first = raw
            .iter()
            .copied()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        match first {
            None => return Err(DecodeError::Empty),
            Some(b'{') => {}
            Some(b) => return Err(not_an_object(raw, b)),
        }
        // JSON text is UTF-8 (RFC 8259), also in values nobody reads, which serde_json
        // skips without checking. Checked here once, the parser then reads a `&str`.
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text,
            Err(e) => return Err(DecodeError::InvalidUtf8(e)),
        };
        if Scan::new(text).record(&self.trie, out).is_some() {
            return Ok(());
        }
        // Something the scanner leaves to serde_json: an escape, a float, a path that is
        // both wanted and a prefix, or an error (whose message serde_json words).
        out.fill(Value::Null);
        self.decode_serde(text, out)
    }

    /// [`JsonDecoder::decode`] by serde_json's streaming deserializer: every record the
    /// fast scanner does not take, and the reference it must agree with.
    fn decode_serde(&self, text: &str, out: &mut [Value]) -> Result<(), DecodeError> {
        walk::decode(&self.trie, text, out).map_err(|e| {
            out.fill(Value::Null);
            DecodeError::invalid_json(e)
        })
    }
}

/// What a record decoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// An event: the slots hold its fields.
    Event,
    /// A record without a value (a Kafka tombstone): no slot is filled.
    Tombstone,
    /// A change event that deletes its row (Debezium `op: d`): the slots hold the
    /// row as it was, so the key can be read.
    Delete,
    /// A record the preset skips by design (Debezium's tombstone after a delete).
    Ignore,
}

/// How record values are encoded (`format:`).
#[derive(Debug, Clone, Default)]
pub enum BodyFormat {
    /// One JSON object per record.
    #[default]
    Json,
    /// Avro, read by `reader` (the pipeline's schema) where there is one.
    Avro {
        /// The reader's schema.
        reader: Option<std::sync::Arc<AvroSchema>>,
        /// How bodies are framed.
        framing: Framing,
        /// Where writer schemas come from.
        registry: Option<Registry>,
    },
    /// Protobuf, read by `reader` (the pipeline's message) where there is one.
    Protobuf {
        /// The reader's message.
        reader: Option<MessageDescriptor>,
        /// How bodies are framed.
        framing: Framing,
        /// Where writer schemas come from.
        registry: Option<Registry>,
    },
    /// The value as UTF-8 text, in the field `value`.
    Raw,
}

/// The body decoder a [`BodyFormat`] makes.
#[derive(Debug, Clone)]
enum Body {
    Json,
    Avro(avro::AvroDecoder),
    Protobuf(protobuf::ProtobufDecoder),
    /// The slot of `value`, if read.
    Raw(Option<usize>),
}

/// Writer schemas by id, fetched once (a failed fetch is not kept: the next record
/// with that id asks again).
#[derive(Debug)]
pub(crate) struct SchemaCache<T>(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, std::sync::Arc<T>>>>,
);

impl<T> Clone for SchemaCache<T> {
    fn clone(&self) -> Self {
        SchemaCache(self.0.clone())
    }
}

impl<T> Default for SchemaCache<T> {
    fn default() -> Self {
        SchemaCache(Default::default())
    }
}

impl<T> SchemaCache<T> {
    fn get(
        &self,
        id: u32,
        make: impl FnOnce() -> Result<T, DecodeError>,
    ) -> Result<std::sync::Arc<T>, DecodeError> {
        if let Some(t) = self.0.lock().expect("schema cache lock").get(&id) {
            return Ok(t.clone());
        }
        let t = std::sync::Arc::new(make()?);
        self.0
            .lock()
            .expect("schema cache lock")
            .insert(id, t.clone());
        Ok(t)
    }
}

/// Decodes a record's value, or the document an envelope preset makes of the whole
/// record (value, key and headers).
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    json: JsonDecoder,
    preset: Option<Preset>,
    body: Body,
}

impl RecordDecoder {
    /// A decoder of JSON records for every path in `fields`, through `preset` if there
    /// is one.
    pub fn new(fields: &FieldRegistry, preset: Option<Preset>) -> Self {
        Self::with_format(fields, preset, BodyFormat::Json)
    }

    /// A decoder for every path in `fields` of records in `format` (a preset reads JSON
    /// records only; the config checks it).
    pub fn with_format(fields: &FieldRegistry, preset: Option<Preset>, format: BodyFormat) -> Self {
        let json = JsonDecoder::new(fields);
        let body = match format {
            BodyFormat::Json => Body::Json,
            BodyFormat::Avro {
                reader,
                framing,
                registry,
            } => Body::Avro(avro::AvroDecoder::new(
                reader, framing, registry, &json.trie,
            )),
            BodyFormat::Protobuf {
                reader,
                framing,
                registry,
            } => Body::Protobuf(protobuf::ProtobufDecoder::new(
                reader, framing, registry, &json.trie,
            )),
            BodyFormat::Raw => Body::Raw(fields.get("value").map(|f| f.index())),
        };
        RecordDecoder { json, preset, body }
    }

    /// Number of slots [`RecordDecoder::decode`] fills.
    pub fn slots(&self) -> usize {
        self.json.slots
    }

    /// True when [`RecordDecoder::decode`] reads the record's headers (a preset does);
    /// otherwise [`RecordParts::headers`] may be left empty.
    pub fn reads_headers(&self) -> bool {
        self.preset.is_some()
    }

    /// Decodes one record into `out` (see [`JsonDecoder::decode`]; on error every slot
    /// is Null).
    pub fn decode(
        &self,
        record: &RecordParts<'_>,
        out: &mut [Value],
    ) -> Result<Decoded, DecodeError> {
        let Some(preset) = self.preset else {
            let Some(raw) = record.value else {
                out.fill(Value::Null);
                return Ok(Decoded::Tombstone);
            };
            match &self.body {
                Body::Json => self.json.decode(raw, out)?,
                Body::Avro(d) => d.decode(raw, out).inspect_err(|_| out.fill(Value::Null))?,
                Body::Protobuf(d) => d.decode(raw, out).inspect_err(|_| out.fill(Value::Null))?,
                Body::Raw(slot) => {
                    out.fill(Value::Null);
                    let text = std::str::from_utf8(raw).map_err(DecodeError::NotText)?;
                    if let Some(slot) = slot {
                        out[*slot] = Value::Str(text.into());
                    }
                }
            }
            return Ok(Decoded::Event);
        };
        out.fill(Value::Null);
        let shaped = preset.shape(record)?;
        let (doc, decoded) = match &shaped {
            Shaped::Event(doc) => (doc, Decoded::Event),
            Shaped::Delete(doc) => (doc, Decoded::Delete),
            Shaped::Ignore => return Ok(Decoded::Ignore),
        };
        preset::fill(&self.json.trie, doc, out);
        Ok(decoded)
    }
}

/// The error for a record that starts with something other than `{`.
#[cold]
fn not_an_object(raw: &[u8], first: u8) -> DecodeError {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
        return DecodeError::invalid_json(e);
    }
    let found = match first {
        b'[' => "array",
        b'"' => "string",
        b't' | b'f' => "bool",
        b'n' => "null",
        _ => "number",
    };
    DecodeError::NotAnObject { found }
}

#[cfg(test)]
mod tests;
