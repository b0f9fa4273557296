//! The fast path of decoding: a strict byte scanner over the record ([`Scan`]).
//!
//! It decodes the records events are made of without serde_json, and gives up (`None`)
//! on anything else, which [`JsonDecoder::decode`](super::JsonDecoder::decode) then
//! hands to the serde_json walk.

use std::sync::Arc;

use serde::Deserializer as _;

use super::trie::Trie;
use super::walk::LeafVisitor;
use crate::value::Value;

/// Deepest nesting the scanner follows; deeper records go to serde_json (whose own
/// limit is 128).
const SCAN_MAX_DEPTH: usize = 100;

/// Integers of at most this many digits are read by the scanner; longer ones may not fit
/// an `i64` and go to serde_json.
const SCAN_MAX_DIGITS: usize = 18;

/// The fast path of [`JsonDecoder::decode`](super::JsonDecoder::decode): a byte scanner
/// over the record.
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
pub(super) struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    /// A scanner at the start of `text`.
    pub(super) fn new(text: &'a str) -> Self {
        Scan {
            text,
            bytes: text.as_bytes(),
            i: 0,
        }
    }

    /// The whole record: one object (trie root), then only whitespace.
    pub(super) fn record(&mut self, trie: &Trie, out: &mut [Value]) -> Option<()> {
        self.ws();
        self.object(trie, Trie::ROOT, 1, out)?;
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
    fn object(&mut self, trie: &Trie, node: usize, depth: usize, out: &mut [Value]) -> Option<()> {
        self.eat(b'{')?;
        let mut done = self.closes(b'}');
        while !done {
            let key = self.key()?;
            match trie.child(node, key) {
                Some(child) => self.wanted(trie, child, depth, out)?,
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

    /// The value under a wanted key (trie node `node`), as
    /// [`NodeSeed`](super::walk::NodeSeed) does it.
    fn wanted(&mut self, trie: &Trie, node: usize, depth: usize, out: &mut [Value]) -> Option<()> {
        let n = trie.node(node);
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
                self.object(trie, node, depth + 1, out)?;
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::JsonDecoder;
    use crate::decode::tests::{decode_err, decode_ok, paths, s};
    use crate::fields::FieldRegistry;
    use proptest::prelude::*;

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
}
