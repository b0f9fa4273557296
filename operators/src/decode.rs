//! JSON decoding into field slots (HELPER A implements this file).

use crate::fields::FieldRegistry;
use crate::value::Value;

/// A record that is not a JSON object, or not valid JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// What is wrong, for the user (serde_json's message with line/column is fine).
    pub message: String,
}

/// Decodes JSON events, keeping only the fields a pipeline reads.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    slots: usize,
}

impl JsonDecoder {
    /// A decoder for every path in `fields`.
    pub fn new(fields: &FieldRegistry) -> Self {
        JsonDecoder { slots: fields.len() }
    }

    /// Number of slots [`JsonDecoder::decode`] fills.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Decodes one record, writing the value of path `i` to `out[i]` (Null when absent).
    /// `out.len()` must equal [`JsonDecoder::slots`].
    pub fn decode(&self, raw: &[u8], out: &mut [Value]) -> Result<(), DecodeError> {
        let _ = (raw, out);
        todo!()
    }
}
