//! The event envelope: which fields of an event are its id, type, key, version and time.

use crate::fields::FieldId;
use crate::value::{Value, parse_timestamp_millis};

/// The event type the engine gives a tombstone (a Kafka record with a null value)
/// when the pipeline deletes on tombstones (`on_tombstone: delete`): it deletes the
/// key's row in every fold view and is not seen by aggregate and table views. A
/// decoded event never has it (a record whose type field says `$tombstone` is a bad
/// record), so it cannot be forged.
pub const TOMBSTONE_TYPE: &str = "$tombstone";

/// Where the envelope fields live in a decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The event id's field (pipelines always map one; dead letters carry it).
    pub id: Option<FieldId>,
    /// The event type, which selects fold handlers.
    pub event_type: FieldId,
    /// The aggregate / entity key: one fold row per key; routing hashes it.
    pub key: FieldId,
    /// The per-key version; when set, only newer versions are applied.
    pub version: Option<FieldId>,
    /// The event time: epoch milliseconds or RFC 3339.
    pub timestamp: Option<FieldId>,
    /// The id of the request or conversation the event belongs to, if mapped: views
    /// may read it, dead letters carry it.
    pub correlation_id: Option<FieldId>,
    /// The id of the message that caused the event, if mapped: views may read it,
    /// dead letters carry it.
    pub causation_id: Option<FieldId>,
}

/// An envelope field that is missing or of the wrong kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    /// The key is missing or null.
    #[error("missing key (envelope field '{0}')")]
    MissingKey(String),
    /// The key is not a string or an integer.
    #[error("key must be a string or an integer, found {0}")]
    BadKey(&'static str),
    /// The event type is missing or not a string.
    #[error("missing or non-string event type (envelope field '{0}')")]
    BadType(String),
    /// The version is missing or not an integer.
    #[error("version must be an integer (envelope field '{0}'), found {1}")]
    BadVersion(String, &'static str),
    /// The timestamp is neither epoch milliseconds nor RFC 3339.
    #[error("timestamp must be epoch milliseconds or RFC 3339 (envelope field '{0}'), found {1}")]
    BadTimestamp(String, String),
}

impl EnvelopeError {
    /// Stable error code for dead letters, e.g. `apply.missing_key`.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::MissingKey(_) => "apply.missing_key",
            EnvelopeError::BadKey(_) => "apply.bad_key",
            EnvelopeError::BadType(_) => "apply.bad_event_type",
            EnvelopeError::BadVersion(..) => "apply.bad_version",
            EnvelopeError::BadTimestamp(..) => "apply.bad_timestamp",
        }
    }
}

/// Reads the key of a decoded event as the text the router hashes and folds key by.
pub fn key_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Int(i) => Some(std::borrow::Cow::Owned(i.to_string())),
        _ => None,
    }
}

/// Parses an event time field.
pub(crate) fn timestamp_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
        Value::Str(s) => parse_timestamp_millis(s),
        _ => None,
    }
}
