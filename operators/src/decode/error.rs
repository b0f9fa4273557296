//! [`DecodeError`]: why a record does not decode, and its dead-letter code.

use std::str::Utf8Error;
use std::sync::Arc;

/// A record that is not a JSON object, or not valid JSON.
///
/// The `Display` text is the message for the user (serde_json's, with line and column,
/// for invalid JSON); [`DecodeError::code`] is the stable dead-letter code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    /// Nothing but whitespace.
    #[error("empty record")]
    Empty,
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, found {found}")]
    NotAnObject {
        /// What it is instead: `array`, `string`, `number`, `bool` or `null`.
        found: &'static str,
    },
    /// Not UTF-8 (so not JSON), anywhere in the record.
    #[error("invalid UTF-8 at byte {}", .0.valid_up_to())]
    InvalidUtf8(#[source] Utf8Error),
    /// Not valid JSON: serde_json's error (shared, so that the error stays cheap to
    /// clone).
    #[error("{0}")]
    InvalidJson(#[source] Arc<serde_json::Error>),
    /// A binary record without the Confluent wire format's magic byte and schema id.
    #[error(
        "expected the Confluent wire format (magic byte 0, then a 4-byte schema id), found {found}"
    )]
    NotFramed {
        /// What the record starts with.
        found: String,
    },
    /// The writer's schema cannot be had: the registry does not know the id, or it is
    /// not a schema of the pipeline's format.
    #[error("schema id {id}: {reason}")]
    UnknownSchema {
        /// The schema id in the record.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The body does not decode by its schema.
    #[error("invalid {format} record: {reason}")]
    Body {
        /// `avro` or `protobuf`.
        format: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// The schema registry cannot be reached: not the record's fault (the engine
    /// stops rather than dead-letter it).
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// No schema to read the record with (no registry and no schema file).
    #[error("no schema to read the record with")]
    NoSchema,
    /// A `raw` record that is not UTF-8 text.
    #[error("not UTF-8 text (invalid byte at {})", .0.valid_up_to())]
    NotText(#[source] Utf8Error),
}

impl DecodeError {
    /// Stable error code for dead letters: `decode.empty`, `decode.not_an_object` or
    /// `decode.invalid_json` (which covers invalid UTF-8).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Empty => "decode.empty",
            DecodeError::NotAnObject { .. } => "decode.not_an_object",
            DecodeError::InvalidUtf8(_) | DecodeError::InvalidJson(_) => "decode.invalid_json",
            DecodeError::NotFramed { .. } => "decode.not_framed",
            DecodeError::UnknownSchema { .. } | DecodeError::NoSchema => "decode.unknown_schema",
            DecodeError::Body { format: "avro", .. } => "decode.invalid_avro",
            DecodeError::Body { .. } => "decode.invalid_protobuf",
            DecodeError::NotText(_) => "decode.not_text",
            DecodeError::RegistryUnavailable(_) => "decode.registry_unavailable",
        }
    }

    #[cold]
    pub(super) fn not_framed(raw: &[u8]) -> Self {
        let found = match raw.first() {
            None => "an empty record".to_string(),
            Some(b) if raw.len() < 5 => format!("{} bytes starting with 0x{b:02x}", raw.len()),
            Some(b) => format!("first byte 0x{b:02x}"),
        };
        DecodeError::NotFramed { found }
    }

    #[cold]
    pub(super) fn unknown_schema(id: u32, reason: String) -> Self {
        DecodeError::UnknownSchema { id, reason }
    }

    #[cold]
    pub(super) fn schema(id: u32, e: super::schema::SchemaError) -> Self {
        match e {
            super::schema::SchemaError::NotFound(why) => {
                DecodeError::UnknownSchema { id, reason: why }
            }
            super::schema::SchemaError::Unavailable(why) => DecodeError::RegistryUnavailable(why),
        }
    }

    #[cold]
    pub(super) fn body(format: &'static str, reason: String) -> Self {
        DecodeError::Body { format, reason }
    }

    #[cold]
    pub(super) fn invalid_json(e: serde_json::Error) -> Self {
        DecodeError::InvalidJson(Arc::new(e))
    }
}

/// Equal kinds with equal details; serde_json's errors, which have no equality of their
/// own, are equal when their messages (with line and column) are.
impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (DecodeError::Empty, DecodeError::Empty) => true,
            (DecodeError::NotAnObject { found: a }, DecodeError::NotAnObject { found: b }) => {
                a == b
            }
            (DecodeError::InvalidUtf8(a), DecodeError::InvalidUtf8(b)) => a == b,
            (DecodeError::InvalidJson(a), DecodeError::InvalidJson(b)) => {
                a.to_string() == b.to_string()
            }
            (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => {
                a.to_string() == b.to_string()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::JsonDecoder;
    use crate::fields::FieldRegistry;
    use crate::value::Value;
    use std::error::Error as _;

    /// How the engine derived the code from the message before the error had kinds:
    /// [`DecodeError::code`] must agree with it on every record.
    fn code_from_message(message: &str) -> &'static str {
        if message.starts_with("expected a JSON object") {
            "decode.not_an_object"
        } else if message.starts_with("empty record") {
            "decode.empty"
        } else {
            "decode.invalid_json"
        }
    }

    fn decode(raw: &[u8]) -> DecodeError {
        let mut fields = FieldRegistry::new();
        fields.intern("a");
        fields.intern("a.b");
        let dec = JsonDecoder::new(&fields);
        let mut out = vec![Value::Null; dec.slots()];
        dec.decode(raw, &mut out).unwrap_err()
    }

    #[test]
    fn codes_follow_the_kind_as_the_message_did() {
        let records: [&[u8]; 16] = [
            b"",
            b" \n\t",
            b"[1,2]",
            b"\"s\"",
            b"-1.5",
            b"true",
            b" null ",
            b"[1,",
            b"nope",
            b"{",
            br#"{"a":}"#,
            br#"{"a":1} x"#,
            br#"{"a":1e400}"#,
            br#"{"a":"\u00"}"#,
            b"{\"a\":\"\xff\"}",
            b"\"\xff\"",
        ];
        for raw in records {
            let e = decode(raw);
            assert_eq!(e.code(), code_from_message(&e.to_string()), "{e:?}");
        }
        assert_eq!(decode(b"").code(), "decode.empty");
        assert_eq!(decode(b"42").code(), "decode.not_an_object");
        assert_eq!(decode(b"{").code(), "decode.invalid_json");
        assert_eq!(decode(b"{\"a\":\"\xff\"}").code(), "decode.invalid_json");
    }

    #[test]
    fn invalid_json_keeps_serde_jsons_error() {
        let e = decode(br#"{"a":1,}"#);
        let DecodeError::InvalidJson(serde) = &e else {
            panic!("{e:?}");
        };
        assert_eq!((serde.line(), serde.column()), (1, 8));
        let source = e.source().expect("a source");
        assert!(source.is::<Arc<serde_json::Error>>(), "{source:?}");
        assert_eq!(e.to_string(), source.to_string());
        let e = decode(b"{\"a\":\"\xff\"}");
        assert!(e.source().unwrap().is::<Utf8Error>(), "{e:?}");
        assert_eq!(e, decode(b"{\"a\":\"\xff\"}"));
        assert_ne!(e, decode(b"{"));
    }
}
