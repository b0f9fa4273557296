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
//! - `error`: [`DecodeError`], what a record that does not decode is.

mod error;
mod scanner;
mod trie;
mod walk;

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
