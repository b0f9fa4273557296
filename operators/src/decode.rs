//! JSON decoding into field slots.
//!
//! [`JsonDecoder`] turns the dotted paths of a [`FieldRegistry`] into a trie and walks a
//! JSON record along it: keys nobody reads are skipped without being materialized, and
//! only the wanted leaves are converted into [`Value`]s. A strict byte scanner (`Scan`)
//! takes the records events are made of; whatever it leaves (escapes, deep nesting,
//! invalid JSON) is walked again by `serde_json`'s streaming deserializer, the reference
//! for values and error messages. Decoding a typical event allocates nothing except the
//! `Arc<str>` of each wanted string.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::fields::FieldRegistry;
use crate::value::Value;

/// Nodes with more children of one key length than this look keys up in a hash map
/// instead of scanning the children of that length.
const LINEAR_CHILDREN: usize = 8;

/// A record that is not a JSON object, or not valid JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// What is wrong, for the user (serde_json's message with line/column is fine).
    pub message: String,
}

impl DecodeError {
    #[cold]
    fn new(message: String) -> Self {
        DecodeError { message }
    }
}

/// Decodes JSON events, keeping only the fields a pipeline reads.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    /// The path trie; node 0 is the root (the record itself).
    nodes: Vec<TrieNode>,
    slots: usize,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// The slot of the path ending here, if it is a registered path.
    slot: Option<usize>,
    /// Child key → node index.
    children: Vec<(Box<str>, usize)>,
    /// The same as `children`, grouped by key length (`by_len[n]`: the keys of `n`
    /// bytes): most keys of a record are looked up and not wanted, and the length
    /// alone rules them out without comparing bytes or hashing.
    by_len: Vec<Vec<(Box<str>, usize)>>,
    /// The same as `children`, for nodes with many children of one length.
    index: Option<hashbrown::HashMap<Box<str>, usize, ahash::RandomState>>,
    /// Slots of every strict descendant, reset when this node's key is seen again (a
    /// duplicate key replaces the whole earlier value).
    descendant_slots: Vec<usize>,
}

impl JsonDecoder {
    /// A decoder for every path in `fields`.
    ///
    /// Paths are split on `.`: `payload.amount` is the key `amount` of the object under
    /// the top-level key `payload`.
    pub fn new(fields: &FieldRegistry) -> Self {
        let mut nodes = vec![TrieNode::default()];
        for (slot, path) in fields.paths().iter().enumerate() {
            if crate::fields::KafkaField::parse(path).is_some() {
                continue; // record metadata, not JSON
            }
            let mut cur = 0;
            for segment in path.split('.') {
                let found = nodes[cur].children.iter().find(|(k, _)| **k == *segment);
                cur = match found {
                    Some(&(_, child)) => child,
                    None => {
                        let child = nodes.len();
                        nodes.push(TrieNode::default());
                        nodes[cur].children.push((segment.into(), child));
                        child
                    }
                };
            }
            nodes[cur].slot = Some(slot);
        }
        // Children always have higher indices than their parent, so a reverse pass sees
        // every child's descendants before the parent's.
        for n in (0..nodes.len()).rev() {
            let mut below = Vec::new();
            for &(_, c) in &nodes[n].children {
                below.extend(nodes[c].slot);
                below.extend_from_slice(&nodes[c].descendant_slots);
            }
            let node = &mut nodes[n];
            node.descendant_slots = below;
            for (key, child) in &node.children {
                if node.by_len.len() <= key.len() {
                    node.by_len.resize_with(key.len() + 1, Vec::new);
                }
                node.by_len[key.len()].push((key.clone(), *child));
            }
            if node.by_len.iter().any(|keys| keys.len() > LINEAR_CHILDREN) {
                node.index = Some(node.children.iter().cloned().collect());
            }
        }
        JsonDecoder {
            nodes,
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
            None => return Err(DecodeError::new("empty record".to_string())),
            Some(b'{') => {}
            Some(b) => return Err(not_an_object(raw, b)),
        }
        // JSON text is UTF-8 (RFC 8259), also in values nobody reads, which serde_json
        // skips without checking. Checked here once, the parser then reads a `&str`.
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text,
            Err(e) => {
                return Err(DecodeError::new(format!(
                    "invalid UTF-8 at byte {}",
                    e.valid_up_to()
                )));
            }
        };
        if Scan::new(text).record(self, out).is_some() {
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
        let mut de = serde_json::Deserializer::from_str(text);
        let result = de
            .deserialize_map(ObjectVisitor {
                dec: self,
                node: 0,
                out: &mut *out,
            })
            .and_then(|()| de.end());
        result.map_err(|e| {
            out.fill(Value::Null);
            DecodeError::new(e.to_string())
        })
    }

    /// The child of trie node `node` under `key`.
    #[inline]
    fn child(&self, node: usize, key: &str) -> Option<usize> {
        let n = &self.nodes[node];
        match &n.index {
            Some(index) => index.get(key).copied(),
            None => n
                .by_len
                .get(key.len())?
                .iter()
                .find(|(k, _)| **k == *key)
                .map(|&(_, c)| c),
        }
    }

    /// Fills the slots below `node` from an already materialized JSON object.
    fn fill_from_json(
        &self,
        node: usize,
        object: &serde_json::Map<String, serde_json::Value>,
        out: &mut [Value],
    ) {
        for (key, child) in &self.nodes[node].children {
            let Some(v) = object.get(&**key) else {
                continue;
            };
            let c = &self.nodes[*child];
            if let Some(slot) = c.slot {
                out[slot] = from_json(v);
            }
            if let serde_json::Value::Object(inner) = v
                && !c.children.is_empty()
            {
                self.fill_from_json(*child, inner, out);
            }
        }
    }
}

/// Deepest nesting the scanner follows; deeper records go to serde_json (whose own
/// limit is 128).
const SCAN_MAX_DEPTH: usize = 100;

/// Integers of at most this many digits are read by the scanner; longer ones may not fit
/// an `i64` and go to serde_json.
const SCAN_MAX_DIGITS: usize = 18;

/// The fast path of [`JsonDecoder::decode`]: a byte scanner over the record.
///
/// It takes the JSON that events are made of: objects, arrays, strings without escapes,
/// integers, `true`, `false`, `null`. For anything else it returns `None`, and
/// the record is decoded again by serde_json: a string with an escape, a path that is
/// both wanted and a prefix, nesting deeper than [`SCAN_MAX_DEPTH`], or anything that is
/// not valid JSON. Its grammar is strict, so it never takes a record that serde_json
/// would refuse. A wanted number with a fraction or an exponent, or with more than
/// [`SCAN_MAX_DIGITS`] digits, is converted by serde_json on its own text (see
/// [`Scan::number`]). The values it writes are the ones serde_json's path would write
/// (a property test holds the two paths to that).
struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        Scan {
            text,
            bytes: text.as_bytes(),
            i: 0,
        }
    }

    /// The whole record: one object (trie root), then only whitespace.
    fn record(&mut self, dec: &JsonDecoder, out: &mut [Value]) -> Option<()> {
        self.ws();
        self.object(dec, 0, 1, out)?;
        self.ws();
        (self.i == self.bytes.len()).then_some(())
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Option<()> {
        if self.peek() == Some(byte) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// An object at trie node `node`: its wanted keys are decoded, the rest skipped.
    fn object(
        &mut self,
        dec: &JsonDecoder,
        node: usize,
        depth: usize,
        out: &mut [Value],
    ) -> Option<()> {
        self.eat(b'{')?;
        let mut done = self.closes(b'}');
        while !done {
            let key = self.key()?;
            match dec.child(node, key) {
                Some(child) => self.wanted(dec, child, depth, out)?,
                None => self.skip(depth)?,
            }
            done = self.next(b'}')?;
        }
        Some(())
    }

    /// Right after `{` or `[`: true (and past it) when `close` follows at once.
    #[inline]
    fn closes(&mut self, close: u8) -> bool {
        self.ws();
        self.eat(close).is_some()
    }

    /// An object key and its `:`, with the whitespace around them.
    #[inline]
    fn key(&mut self) -> Option<&'a str> {
        self.ws();
        let key = self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(key)
    }

    /// After a member or element: `,` (false, another follows) or `close` (true).
    #[inline]
    fn next(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let b = self.peek()?;
        self.i += 1;
        match b {
            b',' => Some(false),
            b if b == close => Some(true),
            _ => None,
        }
    }

    /// The value under a wanted key (trie node `node`), as [`NodeSeed`] does it.
    fn wanted(
        &mut self,
        dec: &JsonDecoder,
        node: usize,
        depth: usize,
        out: &mut [Value],
    ) -> Option<()> {
        let n = &dec.nodes[node];
        if n.slot.is_some() && !n.children.is_empty() {
            return None; // both wanted and a prefix (rare): serde_json's part
        }
        for &s in &n.descendant_slots {
            out[s] = Value::Null;
        }
        match n.slot {
            Some(slot) => out[slot] = self.leaf(depth)?,
            None if self.peek() == Some(b'{') => {
                if depth >= SCAN_MAX_DEPTH {
                    return None;
                }
                self.object(dec, node, depth + 1, out)?;
            }
            // A prefix holding a number: serde_json's `deserialize_any` converts it (and
            // fails on a float out of range), unlike a number it ignores.
            None if matches!(self.peek(), Some(b'-' | b'0'..=b'9')) => {
                self.number(true)?;
            }
            None => self.skip(depth)?,
        }
        Some(())
    }

    /// A wanted leaf, as [`LeafVisitor`] converts it.
    fn leaf(&mut self, depth: usize) -> Option<Value> {
        Some(match self.peek()? {
            b'"' => Value::Str(Arc::from(self.string()?)),
            b'{' => {
                self.skip(depth)?;
                Value::Nested { array: false }
            }
            b'[' => {
                self.skip(depth)?;
                Value::Nested { array: true }
            }
            _ => self.scalar(true)?,
        })
    }

    /// `true`, `false`, `null` or a number. Without `want` the value is only checked,
    /// and `Null` stands for it.
    fn scalar(&mut self, want: bool) -> Option<Value> {
        let literal = |s: &mut Self, word: &[u8], v: Value| {
            let end = s.i + word.len();
            (s.bytes.get(s.i..end) == Some(word)).then(|| {
                s.i = end;
                v
            })
        };
        match self.peek()? {
            b't' => literal(self, b"true", Value::Bool(true)),
            b'f' => literal(self, b"false", Value::Bool(false)),
            b'n' => literal(self, b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(want),
            _ => None,
        }
    }

    /// A number, checked against JSON's grammar. Integers of up to [`SCAN_MAX_DIGITS`]
    /// digits are converted here. A wanted float, longer integer or `-0` is converted by
    /// serde_json on the number's own text, so it gets serde_json's value, or its error
    /// for a float out of range (which sends the record to serde_json). An unwanted
    /// number is only checked, as serde_json's `IgnoredAny` does, with no range check.
    fn number(&mut self, want: bool) -> Option<Value> {
        let start = self.i;
        let negative = self.eat(b'-').is_some();
        let digits_start = self.i;
        // Exact up to SCAN_MAX_DIGITS digits (< i64::MAX); longer integers wrap here,
        // but they are converted by serde_json below and `n` is not used.
        let mut n: i64 = 0;
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    n = n.wrapping_mul(10).wrapping_add(i64::from(d - b'0'));
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let long = self.i - digits_start > SCAN_MAX_DIGITS;
        let mut float = false;
        if self.eat(b'.').is_some() {
            float = true;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            float = true;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
        }
        if !want {
            return Some(Value::Null);
        }
        // serde_json reads `-0` as the float -0.0.
        if long || float || (negative && n == 0) {
            let mut de = serde_json::Deserializer::from_str(&self.text[start..self.i]);
            let v = de.deserialize_any(LeafVisitor).ok()?;
            de.end().ok()?;
            return Some(v);
        }
        Some(Value::Int(if negative { -n } else { n }))
    }

    /// One or more decimal digits.
    #[inline]
    fn digits(&mut self) -> Option<()> {
        let first = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        (self.i > first).then_some(())
    }

    /// A string without escapes or control characters, as text (without the quotes).
    ///
    /// Looks at 8 bytes at a time for the first `"`, `\\` or control character, as
    /// serde_json does: for each byte `b`, `(b - k) & !b & 0x80` is set where `b == 0`
    /// for `b ^ c`, or `b < 0x20` for `b` itself. A borrow can only set bits after the
    /// first true match, so the lowest set bit is the first byte to stop at.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        self.eat(b'"')?;
        let start = self.i;
        let mut end = start;
        let mut chunks = self.bytes[start..].chunks_exact(8);
        let mut found = false;
        for chunk in &mut chunks {
            let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let quote = x ^ (ONES * u64::from(b'"'));
            let backslash = x ^ (ONES * u64::from(b'\\'));
            let hits = ((x.wrapping_sub(ONES * 0x20) & !x)
                | (quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash))
                & HIGH;
            if hits != 0 {
                end += hits.trailing_zeros() as usize / 8;
                found = true;
                break;
            }
            end += 8;
        }
        if !found {
            end += chunks
                .remainder()
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        }
        if self.bytes[end] != b'"' {
            return None; // an escape or a control character: serde_json's part
        }
        self.i = end + 1;
        self.text.get(start..end)
    }

    /// Any value nobody reads, checked as strictly as serde_json checks it.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            open @ (b'{' | b'[') => {
                if depth >= SCAN_MAX_DEPTH {
                    return None;
                }
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                let mut done = self.closes(close);
                while !done {
                    if open == b'{' {
                        self.key()?;
                    } else {
                        self.ws();
                    }
                    self.skip(depth + 1)?;
                    done = self.next(close)?;
                }
            }
            _ => {
                self.scalar(false)?;
            }
        }
        Some(())
    }
}

/// The error for a record that starts with something other than `{`.
#[cold]
fn not_an_object(raw: &[u8], first: u8) -> DecodeError {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(raw) {
        return DecodeError::new(e.to_string());
    }
    let kind = match first {
        b'[' => "array",
        b'"' => "string",
        b't' | b'f' => "bool",
        b'n' => "null",
        _ => "number",
    };
    DecodeError::new(format!("expected a JSON object, found {kind}"))
}

/// Converts a materialized JSON value the same way the streaming path does.
fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(Arc::from(s.as_str())),
        serde_json::Value::Array(_) => Value::Nested { array: true },
        serde_json::Value::Object(_) => Value::Nested { array: false },
    }
}

/// Walks the entries of a JSON object whose trie node is `node`.
fn walk_map<'de, A: MapAccess<'de>>(
    dec: &JsonDecoder,
    node: usize,
    out: &mut [Value],
    mut map: A,
) -> Result<(), A::Error> {
    while let Some(child) = map.next_key_seed(KeySeed { dec, node })? {
        match child {
            Some(child) => map.next_value_seed(NodeSeed {
                dec,
                node: child,
                out: &mut *out,
            })?,
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// Looks an object key up among the children of `node` without allocating.
struct KeySeed<'a> {
    dec: &'a JsonDecoder,
    node: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.dec.child(self.node, key))
    }
}

/// Deserializes the value under a wanted key (trie node `node`).
struct NodeSeed<'a> {
    dec: &'a JsonDecoder,
    node: usize,
    out: &'a mut [Value],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let NodeSeed { dec, node, out } = self;
        let n = &dec.nodes[node];
        for &s in &n.descendant_slots {
            out[s] = Value::Null;
        }
        match (n.slot, n.children.is_empty()) {
            (Some(slot), true) => out[slot] = d.deserialize_any(LeafVisitor)?,
            (None, false) => d.deserialize_any(ObjectVisitor { dec, node, out })?,
            (Some(slot), false) => {
                // Both a wanted value and a path prefix (rare): materialize the subtree.
                let v = serde_json::Value::deserialize(d)?;
                out[slot] = from_json(&v);
                if let serde_json::Value::Object(object) = &v {
                    dec.fill_from_json(node, object, out);
                }
            }
            (None, true) => {
                d.deserialize_ignored_any(IgnoredAny)?;
            }
        }
        Ok(())
    }
}

/// A wanted leaf: scalars map to [`Value`]s, objects and arrays to [`Value::Nested`].
struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(Arc::from(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Nested { array: false })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Nested { array: true })
    }
}

/// A path prefix: walks it if it is an object, ignores it otherwise.
struct ObjectVisitor<'a> {
    dec: &'a JsonDecoder,
    node: usize,
    out: &'a mut [Value],
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        walk_map(self.dec, self.node, self.out, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    /// Decodes `raw` for `paths`, returning `path → value` pairs in the given order.
    fn decode(paths: &[&str], raw: &str) -> Result<Vec<Value>, DecodeError> {
        let mut fields = FieldRegistry::new();
        for p in paths {
            fields.intern(p);
        }
        let dec = JsonDecoder::new(&fields);
        assert_eq!(dec.slots(), fields.len());
        let mut out = vec![s("stale"); dec.slots()];
        dec.decode(raw.as_bytes(), &mut out).map(|()| out)
    }

    fn decode_ok(paths: &[&str], raw: &str) -> Vec<Value> {
        decode(paths, raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn decode_err(paths: &[&str], raw: &str) -> String {
        match decode(paths, raw) {
            Ok(v) => panic!("{raw}: expected an error, got {v:?}"),
            Err(e) => e.message,
        }
    }

    const EVENT: &str = r#"{"eventId":"evt-1","eventType":"MoneyDeposited","aggregateId":"acc-00042","version":7,"timestamp":1700000000123,"payload":{"amount":250}}"#;

    #[test]
    fn typical_event() {
        let out = decode_ok(
            &[
                "eventType",
                "aggregateId",
                "version",
                "timestamp",
                "payload.amount",
                "missing",
            ],
            EVENT,
        );
        assert_eq!(
            out,
            [
                s("MoneyDeposited"),
                s("acc-00042"),
                Value::Int(7),
                Value::Int(1700000000123),
                Value::Int(250),
                Value::Null,
            ]
        );
    }

    #[test]
    fn leaves_at_several_depths() {
        let raw = r#"{"a":1,"b":{"c":"x","d":{"e":true,"f":null,"g":-2.5}},"h":[1,2]}"#;
        let out = decode_ok(
            &["a", "b.c", "b.d.e", "b.d.f", "b.d.g", "b.d.zz", "b.x.y"],
            raw,
        );
        assert_eq!(
            out,
            [
                Value::Int(1),
                s("x"),
                Value::Bool(true),
                Value::Null,
                Value::Float(-2.5),
                Value::Null,
                Value::Null
            ]
        );
    }

    #[test]
    fn scalars() {
        let raw = r#"{"i":-42,"u":9223372036854775807,"big":18446744073709551615,
            "huge":123456789012345678901234567890,"neg":-9223372036854775809,
            "f":1.0,"e":1e3,"t":true,"n":null,"s":"","z":0}"#;
        let out = decode_ok(
            &["i", "u", "big", "huge", "neg", "f", "e", "t", "n", "s", "z"],
            raw,
        );
        assert_eq!(
            out,
            [
                Value::Int(-42),
                Value::Int(i64::MAX),
                Value::Float(18446744073709551615.0),
                Value::Float(1.2345678901234568e29),
                Value::Float(-9223372036854775809.0),
                Value::Float(1.0),
                Value::Float(1000.0),
                Value::Bool(true),
                Value::Null,
                s(""),
                Value::Int(0),
            ]
        );
    }

    #[test]
    fn skips_unwanted_nested_values() {
        let raw = r#"{"skip":{"a":[1,{"b":[[],{}]},"}"],"c":{"d":{"e":{}}}},
            "arr":[{"x":1},[2,[3]],"s"],"str":"{\"x\":1}","x":5}"#;
        assert_eq!(decode_ok(&["x"], raw), [Value::Int(5)]);
        // `arr.x`: arrays are not walked into.
        assert_eq!(
            decode_ok(&["arr.x", "str.x", "x"], raw),
            [Value::Null, Value::Null, Value::Int(5)]
        );
    }

    #[test]
    fn object_or_array_leaf_is_nested() {
        let raw =
            r#"{"payload": { "b": [1, 2.5, "x"], "a": {"k": null} }, "tags": ["a", "b"], "e": {}}"#;
        let out = decode_ok(&["payload", "tags", "e"], raw);
        let (object, array) = (
            Value::Nested { array: false },
            Value::Nested { array: true },
        );
        assert_eq!(out, [object.clone(), array, object]);
    }

    #[test]
    fn leaf_that_is_also_a_prefix() {
        let raw = r#"{"payload":{"amount":250,"meta":{"by":"me"}},"x":1}"#;
        let out = decode_ok(
            &[
                "payload",
                "payload.amount",
                "payload.meta.by",
                "payload.none",
                "x",
            ],
            raw,
        );
        assert_eq!(
            out,
            [
                Value::Nested { array: false },
                Value::Int(250),
                s("me"),
                Value::Null,
                Value::Int(1)
            ]
        );
        let out = decode_ok(&["payload", "payload.amount"], r#"{"payload":5}"#);
        assert_eq!(out, [Value::Int(5), Value::Null]);
        let out = decode_ok(
            &["payload.amount", "payload"],
            r#"{"payload":[{"amount":1}]}"#,
        );
        assert_eq!(out, [Value::Null, Value::Nested { array: true }]);
    }

    #[test]
    fn prefix_that_is_not_an_object() {
        for v in ["5", "\"s\"", "null", "true", "[1,{\"amount\":2}]", "1.5"] {
            let raw = format!(r#"{{"payload":{v},"x":1}}"#);
            assert_eq!(
                decode_ok(&["payload.amount", "x"], &raw),
                [Value::Null, Value::Int(1)],
                "{raw}"
            );
        }
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let raw = r#"{"a":1,"a":2,"p":{"x":1,"y":2},"p":{"x":3}}"#;
        assert_eq!(
            decode_ok(&["a", "p.x", "p.y"], raw),
            [Value::Int(2), Value::Int(3), Value::Null]
        );
        let raw = r#"{"p":{"x":1},"p":7}"#;
        assert_eq!(decode_ok(&["p.x", "p"], raw), [Value::Null, Value::Int(7)]);
    }

    #[test]
    fn unicode_escapes() {
        let raw = r#"{"name":"caf\u00e9 \ud83d\ude00 \"q\" \\ \n","k\u00e9y":1,"emoji😀":2,"tab\tkey":3}"#;
        let out = decode_ok(&["name", "kéy", "emoji😀", "tab\tkey"], raw);
        assert_eq!(
            out,
            [
                s("café 😀 \"q\" \\ \n"),
                Value::Int(1),
                Value::Int(2),
                Value::Int(3)
            ]
        );
    }

    #[test]
    fn many_children_use_the_index() {
        let paths: Vec<String> = (0..40).map(|i| format!("p.k{i}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let raw = format!(
            "{{\"p\":{{{}}}}}",
            (0..40)
                .rev()
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let out = decode_ok(&refs, &raw);
        assert_eq!(out, (0..40).map(Value::Int).collect::<Vec<_>>());
    }

    #[test]
    fn many_children_of_different_lengths_are_found_by_length() {
        // 20 wanted keys of lengths 1..=20 (no index), and unwanted keys of the same
        // lengths, of other lengths and longer than any wanted one.
        let paths: Vec<String> = (1..=20).map(|n| "w".repeat(n)).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let mut entries = Vec::new();
        for n in (1..=25).rev() {
            entries.push(format!("\"{}\":-{n}", "u".repeat(n)));
            if n <= 20 {
                entries.push(format!("\"{}\":{n}", "w".repeat(n)));
            }
        }
        let raw = format!("{{{}}}", entries.join(","));
        let out = decode_ok(&refs, &raw);
        assert_eq!(out, (1..=20).map(Value::Int).collect::<Vec<_>>());
        let mut fields = FieldRegistry::new();
        for p in &refs {
            fields.intern(p);
        }
        assert!(JsonDecoder::new(&fields).nodes[0].index.is_none());
    }

    #[test]
    fn top_level_must_be_an_object() {
        for (raw, kind) in [
            ("[1,2]", "array"),
            ("\"s\"", "string"),
            ("42", "number"),
            ("-1.5", "number"),
            ("true", "bool"),
            (" null ", "null"),
        ] {
            assert_eq!(
                decode_err(&["a"], raw),
                format!("expected a JSON object, found {kind}"),
                "{raw}"
            );
        }
        assert_eq!(decode_err(&["a"], ""), "empty record");
        assert_eq!(decode_err(&["a"], " \n\t"), "empty record");
    }

    #[test]
    fn invalid_json() {
        for raw in [
            "{",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"open}"#,
            "[1,",
            "nope",
            r#"{"skip":{"x":[1,2}}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{"a":2}"#,
        ] {
            let m = decode_err(&["a"], raw);
            assert!(m.contains("line 1 column"), "{raw}: {m}");
        }
        assert!(decode_err(&["a"], r#"{"a":1} x"#).contains("trailing characters"));
    }

    #[test]
    fn error_leaves_all_slots_null() {
        let mut fields = FieldRegistry::new();
        fields.intern("a");
        fields.intern("b");
        let dec = JsonDecoder::new(&fields);
        let mut out = vec![Value::Int(9); 2];
        assert!(dec.decode(br#"{"a":1,"b":"#, &mut out).is_err());
        assert_eq!(out, [Value::Null, Value::Null]);
    }

    #[test]
    fn deep_nesting_is_never_a_crash() {
        let depth = 100_000;
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        // Skipped (not wanted): serde_json skips iteratively.
        assert_eq!(decode_ok(&["b"], &deep), [Value::Null]);
        // Wanted as a leaf: only its kind is kept, its contents are skipped iteratively.
        assert_eq!(decode_ok(&["a"], &deep), [Value::Nested { array: true }]);
        // Walked as a path prefix: serde_json's recursion limit stops it.
        let deep_obj = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(decode_err(&["a.a.a", "a"], &deep_obj).contains("recursion limit"));
        assert_eq!(
            decode_ok(&["a.a.a"], &deep_obj),
            [Value::Nested { array: false }]
        );
        assert!(decode(&["a"], &"[".repeat(depth)).is_err());
    }

    #[test]
    fn objects_and_arrays_are_nested_not_text() {
        let got = decode_ok(
            &["p", "q", "r"],
            r#"{"p":{"x":[1,{"y":2}]},"q":[],"r":"s"}"#,
        );
        assert_eq!(
            got,
            [
                Value::Nested { array: false },
                Value::Nested { array: true },
                Value::Str("s".into())
            ]
        );
    }

    #[test]
    fn invalid_utf8_anywhere_is_invalid_json() {
        let mut raw = br#"{"a":1,"note":""#.to_vec();
        raw.extend_from_slice(&[0xff, 0xfe]);
        raw.extend_from_slice(br#""}"#);
        let mut fields = FieldRegistry::new();
        fields.intern("a");
        let dec = JsonDecoder::new(&fields);
        let mut out = vec![Value::Null];
        let err = dec.decode(&raw, &mut out).unwrap_err();
        assert!(err.message.contains("invalid UTF-8 at byte 15"), "{err}");
    }

    #[test]
    fn no_fields_still_validates() {
        assert_eq!(decode_ok(&[], EVENT), Vec::<Value>::new());
        assert!(decode(&[], "{").is_err());
        assert!(decode(&[], "[]").is_err());
    }

    // ----- property test: the decoder agrees with a materialized serde_json::Value -----

    const KEYS: [&str; 7] = ["a", "b", "c", "é", "q\"k", "", "x.y"];
    const SEGMENTS: [&str; 6] = ["a", "b", "c", "é", "q\"k", ""];

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter_map("finite", serde_json::Number::from_f64)
                .prop_map(serde_json::Value::Number),
            ".{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::vec((prop::sample::select(&KEYS[..]), inner), 0..6).prop_map(
                    |entries| serde_json::Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect()
                    )
                ),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = serde_json::Value> {
        prop::collection::vec((prop::sample::select(&KEYS[..]), json_value()), 0..8).prop_map(
            |entries| {
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            },
        )
    }

    fn paths() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 1..4)
                .prop_map(|s| s.join(".")),
            0..10,
        )
    }

    /// The reference: walk the materialized value segment by segment.
    fn lookup(root: &serde_json::Value, path: &str) -> Value {
        let mut cur = root;
        for segment in path.split('.') {
            match cur.as_object().and_then(|o| o.get(segment)) {
                Some(v) => cur = v,
                None => return Value::Null,
            }
        }
        from_json(cur)
    }

    proptest! {
        #[test]
        fn decoder_matches_materialized_lookup(
            value in json_object(),
            paths in paths(),
            pretty in any::<bool>(),
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            // Compare against the re-parsed value, so float parsing is the same on both sides.
            let reparsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut fields = FieldRegistry::new();
            for p in &paths {
                fields.intern(p);
            }
            let dec = JsonDecoder::new(&fields);
            let mut out = vec![Value::Null; dec.slots()];
            dec.decode(text.as_bytes(), &mut out).unwrap();
            for (i, p) in fields.paths().iter().enumerate() {
                prop_assert_eq!(&out[i], &lookup(&reparsed, p), "path {:?} in {}", p, text);
            }
        }
    }

    /// JSON-like text, built token by token so that it can hold what a serde_json
    /// `Value` cannot print: duplicate keys, escapes in keys, odd numbers and spacing.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "0",
                "-0",
                "1.5",
                "-0.0",
                "1e5",
                "1E+2",
                "2e-3",
                "1e400",
                "-1e-400",
                "0.1e1",
                "12345678901234567890123",
                "1.",
                ".5",
                "1e",
                "1.5e+07",
                "-01",
                "123456789012345678",
                "1234567890123456789",
                "-9223372036854775808",
                "9223372036854775808",
                "true",
                "false",
                "null",
                "\"\"",
                "\"a\"",
                "\"é\"",
                "\"\\n\"",
                "\"\\u00e9\"",
                "\"\\ud800\"",
                "\"q\\\"k\"",
                "{}",
                "[]",
                "[1,[2,{}]]",
                "\"abcdefgh\"",
                "\"a somewhat longer text, é and ü\"",
                "\"0123456789abcdef\\n\"",
                "\"fifteen chars..\\\"after a quote\"",
            ])
            .prop_map(str::to_string),
        ];
        let ws = prop::sample::select(vec!["", "", " ", "\n  ", "\t", "\r\n"]);
        let key = prop::sample::select(vec![
            "\"a\"",
            "\"b\"",
            "\"c\"",
            "\"é\"",
            "\"q\\\"k\"",
            "\"\"",
            "\"x.y\"",
            "\"\\u0061\"",
        ]);
        leaf.prop_recursive(4, 48, 6, move |inner| {
            let entry = (ws.clone(), key.clone(), ws.clone(), inner.clone());
            prop_oneof![
                prop::collection::vec(entry, 0..6).prop_map(|entries| {
                    let body: Vec<String> = entries
                        .into_iter()
                        .map(|(w1, k, w2, v)| format!("{w1}{k}{w2}:{w2}{v}{w1}"))
                        .collect();
                    format!("{{{}}}", body.join(","))
                }),
                prop::collection::vec((ws.clone(), inner), 0..4).prop_map(|items| {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|(w, v)| format!("{w}{v}{w}"))
                        .collect();
                    format!("[{}]", items.join(","))
                }),
            ]
        })
    }

    /// A change that usually breaks the text: nothing, a byte deleted, a byte inserted.
    fn mutated(text: String, edit: Option<(usize, Option<char>)>) -> String {
        let Some((at, insert)) = edit else {
            return text;
        };
        let mut chars: Vec<char> = text.chars().collect();
        let at = at % (chars.len() + 1);
        match insert {
            Some(c) => chars.insert(at, c),
            None if at < chars.len() => {
                chars.remove(at);
            }
            None => {}
        }
        chars.into_iter().collect()
    }

    proptest! {
        /// The scanner and serde_json agree on every text: the same values, or the same
        /// error (serde_json's), for valid and broken records alike.
        #[test]
        fn fast_path_agrees_with_serde_json(
            text in json_text(),
            edit in prop::option::of((any::<usize>(), prop::option::of(prop::sample::select(
                vec!['{', '}', '[', ']', ',', ':', '"', '\\', '-', '.', 'e', '0', '7', 't', ' ', '\u{1}']
            )))),
            paths in paths(),
        ) {
            let text = mutated(text, edit);
            let mut fields = FieldRegistry::new();
            for p in &paths {
                fields.intern(p);
            }
            let dec = JsonDecoder::new(&fields);
            let mut fast = vec![Value::Null; dec.slots()];
            let got = dec.decode(text.as_bytes(), &mut fast);
            let mut reference = vec![Value::Null; dec.slots()];
            let want = if text.trim_start().starts_with('{') {
                dec.decode_serde(&text, &mut reference)
            } else {
                got.clone() // decode() refuses it before either path runs
            };
            prop_assert_eq!(&got, &want, "{}", text);
            prop_assert_eq!(&fast, &reference, "{}", text);
        }
    }

    #[test]
    fn strings_stop_at_the_first_quote_escape_or_control_character_anywhere() {
        // Every position in and around an 8-byte word, for each kind of stop.
        for len in 0..20 {
            let body = "x".repeat(len);
            assert_eq!(
                decode_ok(&["a"], &format!("{{\"a\":\"{body}\"}}")),
                [s(&body)]
            );
            let escaped = format!("{{\"a\":\"{body}\\n{body}\"}}");
            assert_eq!(decode_ok(&["a"], &escaped), [s(&format!("{body}\n{body}"))]);
            let control = format!("{{\"a\":\"{body}\u{1f}{body}\"}}");
            assert!(decode_err(&["a"], &control).starts_with("control character"));
            let unterminated = format!("{{\"a\":\"{body}");
            assert!(decode_err(&["a"], &unterminated).starts_with("EOF while parsing"));
        }
    }

    #[test]
    fn nesting_around_the_scanner_limit_decodes_as_serde_json_does() {
        // Wanted values under 98-102 levels of objects, and unwanted arrays as deep
        // beside them: below SCAN_MAX_DEPTH the scanner takes them, above it serde_json.
        for depth in 98..=102 {
            let path = vec!["k"; depth].join(".");
            let open = "{\"k\":".repeat(depth);
            let close = "}".repeat(depth);
            let deep_array = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let raw = format!("{{\"skip\":{deep_array},\"k\":{}7{close}", &open[5..]);
            assert_eq!(decode_ok(&[&path], &raw), [Value::Int(7)], "depth {depth}");
            let raw = format!("{open}{deep_array}{close}");
            let out = decode_ok(&[&path], &raw);
            assert_eq!(out, [Value::Nested { array: true }], "depth {depth}");
        }
        // Far past the scanner's limit: serde_json skips nested values without a limit.
        let raw = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(decode_ok(&["a"], &raw), [Value::Nested { array: true }]);
    }

    #[test]
    fn fast_path_cases() {
        // Taken by the scanner or handed to serde_json, the values are the same.
        let paths = ["a", "b.c", "n", "f", "t", "z"];
        let out = decode_ok(
            &paths,
            r#" {"a":"x","b":{"c":-42,"d":[1,{"e":"\n"}]},"n":null,"f":1.25,"t":true,"z":[]} "#,
        );
        assert_eq!(
            out,
            [
                s("x"),
                Value::Int(-42),
                Value::Null,
                Value::Float(1.25),
                Value::Bool(true),
                Value::Nested { array: true }
            ]
        );
        // The last duplicate wins, also over a whole subtree.
        let out = decode_ok(&paths, r#"{"b":{"c":1},"a":"x","b":{"d":2},"a":"y"}"#);
        assert_eq!(out[0], s("y"));
        assert_eq!(out[1], Value::Null);
        // Integers past 18 digits and past i64 go through serde_json, as before, and
        // so does -0 (a float to serde_json).
        let out = decode_ok(
            &["a", "b", "c", "d"],
            r#"{"a":9223372036854775807,"b":18446744073709551615,"c":-0,"d":0}"#,
        );
        assert_eq!(
            out,
            [
                Value::Int(i64::MAX),
                Value::Float(u64::MAX as f64),
                Value::Float(-0.0),
                Value::Int(0)
            ]
        );
        assert!(matches!(out[2], Value::Float(x) if x.is_sign_negative()));
        // Unwanted numbers are only checked: out of range is fine there, as for
        // serde_json's IgnoredAny; a wanted one out of range is serde_json's error.
        let out = decode_ok(&["a"], r#"{"x":1e400,"y":-1.5E-7,"a":2}"#);
        assert_eq!(out, [Value::Int(2)]);
        assert!(decode_err(&["a"], r#"{"a":1e400}"#).starts_with("number out of range"));
        // So is one under a prefix of a wanted path (serde_json converts it there).
        assert!(decode_err(&["a.b"], r#"{"a":1e400}"#).starts_with("number out of range"));
        assert_eq!(decode_ok(&["a.b"], r#"{"a":1.5}"#), [Value::Null]);
        // What the scanner refuses is an error with serde_json's wording.
        assert_eq!(
            decode_err(&["a"], r#"{"a":01}"#),
            "invalid number at line 1 column 7"
        );
        assert_eq!(
            decode_err(&["a"], "{\"a\":\"x\u{1}\"}"),
            "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 8"
        );
        assert_eq!(
            decode_err(&["a"], r#"{"a":1,}"#),
            "trailing comma at line 1 column 8"
        );
    }

    #[test]
    fn json_macro_round_trip() {
        let v = json!({"a": {"b": [1, {"c": 2}], "d": "x"}, "e": 1.5});
        let out = decode_ok(&["a.b", "a.d", "e", "a"], &v.to_string());
        assert_eq!(
            out,
            [
                Value::Nested { array: true },
                s("x"),
                Value::Float(1.5),
                Value::Nested { array: false }
            ]
        );
    }
}
