//! Schemas of binary records: the Confluent wire format (magic byte, schema id) and
//! the registry the writer's schema is fetched from by id.

use std::sync::Arc;

/// The kind of a registered schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// An Avro schema (JSON text).
    Avro,
    /// A Protobuf schema: `.proto` text, or a base64 `FileDescriptorProto` (as
    /// Confluent's Python serializer registers them).
    Protobuf,
    /// A JSON schema (not decoded by schema).
    Json,
}

/// A schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its kind.
    pub kind: SchemaKind,
    /// Its text.
    pub text: String,
    /// The schemas it refers to (a Protobuf schema's imports), by subject and version.
    pub references: Vec<SchemaReference>,
}

/// A registered schema's reference to another: the name it is known by (a Protobuf
/// import's file name), and the subject and version it is registered under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReference {
    /// The name the referring schema uses (`money.proto`).
    pub name: String,
    /// The subject it is registered under.
    pub subject: String,
    /// The version of that subject.
    pub version: i64,
}

/// Why a schema cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The registry has no schema with that id (the record is bad).
    #[error("{0}")]
    NotFound(String),
    /// The registry cannot be reached or fails (the record may well be good: the
    /// pipeline stops rather than dead-letter it, and resumes from its checkpoint).
    #[error("{0}")]
    Unavailable(String),
}

/// Where writer schemas come from: a schema registry (the engine implements it over
/// HTTP; tests, over a map). Called on a cache miss only.
pub trait SchemaSource: Send + Sync + std::fmt::Debug {
    /// The schema registered under `id`, or why it cannot be had.
    fn by_id(&self, id: u32) -> Result<RegisteredSchema, SchemaError>;

    /// Version `version` of `subject` (what references name). The default knows none.
    fn by_subject(&self, subject: &str, version: i64) -> Result<RegisteredSchema, SchemaError> {
        Err(SchemaError::NotFound(format!(
            "no schema {subject} version {version}"
        )))
    }
}

/// A shared [`SchemaSource`].
pub type Registry = Arc<dyn SchemaSource>;

/// How the bodies of binary records are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// The Confluent wire format: byte 0, the schema id (4 bytes, big-endian), then
    /// the body (for Protobuf, the message indexes first).
    #[default]
    Confluent,
    /// The body alone, written with the pipeline's schema.
    None,
}

/// Splits a Confluent-framed record into (schema id, body); `None` when it is not
/// framed (too short, or the first byte is not 0).
pub(super) fn confluent_frame(raw: &[u8]) -> Option<(u32, &[u8])> {
    match raw {
        [0, a, b, c, d, body @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confluent_frame_is_magic_byte_id_body() {
        assert_eq!(
            confluent_frame(&[0, 0, 0, 1, 2, 9, 8]),
            Some((258, &[9u8, 8][..]))
        );
        assert_eq!(confluent_frame(&[0, 0, 0, 0, 7]), Some((7, &[][..])));
        assert_eq!(confluent_frame(&[1, 0, 0, 0, 7]), None);
        assert_eq!(confluent_frame(&[0, 0, 0]), None);
    }
}
