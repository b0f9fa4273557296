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
}

impl DecodeError {
    /// Stable error code for dead letters: `decode.empty`, `decode.not_an_object` or
    /// `decode.invalid_json` (which covers invalid UTF-8).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Empty => "decode.empty",
            DecodeError::NotAnObject { .. } => "decode.not_an_object",
            DecodeError::InvalidUtf8(_) | DecodeError::InvalidJson(_) => "decode.invalid_json",
        }
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
