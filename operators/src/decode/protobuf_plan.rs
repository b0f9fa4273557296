//! The fast path of Protobuf decoding: a plan compiled once per message descriptor,
//! which walks the wire format field by field, converts only the fields the pipeline
//! reads and skips the others by their wire type, without building a
//! `DynamicMessage`. Well-known types read as a value (`Timestamp`, the wrappers) and
//! groups compile to [`Plan::Fallback`]; a record that meets one, or that is malformed,
//! is decoded again by prost-reflect, the reference.

use super::protobuf::leaf;
use super::trie::Trie;
use crate::value::Value;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, Value as Pb};
use std::sync::Arc;

const MAX_DEPTH: usize = 24;

/// How one wanted field is read.
#[derive(Debug)]
pub(super) enum Read {
    /// A scalar into a slot.
    Scalar { kind: Scalar, slot: usize },
    /// An embedded message: its own plan (and the slot it fills with a nested value).
    Message {
        slot: Option<usize>,
        plan: Arc<Plan>,
    },
    /// Present only to count as a repeated or map value (the slot keeps its nested
    /// value; the wire bytes are skipped).
    Skip,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Scalar {
    Int32,
    Int64,
    Uint64,
    Sint,
    Bool,
    Fixed32 { signed: bool },
    Fixed64 { signed: bool },
    Float,
    Double,
    Text,
    Enum,
}

/// The plan of one message type for one trie node.
#[derive(Debug)]
pub(super) enum Plan {
    Message {
        /// The fields read, by number, and how (the others are skipped). A handful:
        /// a scan beats hashing.
        fields: Vec<(u32, Read, FieldDescriptor)>,
        /// Slots filled before the fields are read: the defaults of fields without
        /// presence (proto3 scalars, repeated and map fields), as the reference reads
        /// an absent field.
        defaults: Vec<(usize, Value)>,
    },
    Fallback,
}

/// Compiles the plan of `message` for the paths of `trie`.
pub(super) fn compile(message: &MessageDescriptor, trie: &Trie) -> Plan {
    plan(message, trie, Trie::ROOT, 0)
}

fn plan(message: &MessageDescriptor, trie: &Trie, node: usize, depth: usize) -> Plan {
    if depth > MAX_DEPTH {
        return Plan::Fallback;
    }
    let mut fields = Vec::new();
    let mut defaults = Vec::new();
    for (key, child) in &trie.node(node).children {
        let Some(fd) = message.get_field_by_name(key) else {
            continue;
        };
        let n = trie.node(*child);
        if !fd.supports_presence()
            && let Some(slot) = n.slot
        {
            defaults.push((slot, leaf(&fd, &Pb::default_value_for_field(&fd))));
        }
        let read = if fd.is_list() || fd.is_map() {
            if !n.children.is_empty() {
                return Plan::Fallback; // read by map key: the reference
            }
            Read::Skip
        } else {
            match fd.kind() {
                Kind::Message(inner) => {
                    if inner.full_name().starts_with("google.protobuf.") {
                        return Plan::Fallback;
                    }
                    let plan = plan(&inner, trie, *child, depth + 1);
                    if matches!(plan, Plan::Fallback) {
                        return Plan::Fallback;
                    }
                    Read::Message {
                        slot: n.slot,
                        plan: Arc::new(plan),
                    }
                }
                kind => {
                    let Some(slot) = n.slot else {
                        continue; // a path through a scalar reads nothing
                    };
                    let kind = match kind {
                        Kind::Int32 => Scalar::Int32,
                        Kind::Int64 => Scalar::Int64,
                        Kind::Uint32 | Kind::Uint64 => Scalar::Uint64,
                        Kind::Sint32 | Kind::Sint64 => Scalar::Sint,
                        Kind::Bool => Scalar::Bool,
                        Kind::Fixed32 => Scalar::Fixed32 { signed: false },
                        Kind::Sfixed32 => Scalar::Fixed32 { signed: true },
                        Kind::Fixed64 => Scalar::Fixed64 { signed: false },
                        Kind::Sfixed64 => Scalar::Fixed64 { signed: true },
                        Kind::Float => Scalar::Float,
                        Kind::Double => Scalar::Double,
                        Kind::String | Kind::Bytes => Scalar::Text,
                        Kind::Enum(_) => Scalar::Enum,
                        Kind::Message(_) => unreachable!("matched above"),
                    };
                    Read::Scalar { kind, slot }
                }
            }
        };
        fields.push((fd.number(), read, fd));
    }
    Plan::Message { fields, defaults }
}

/// Why the fast path gave up on a record.
#[derive(Debug)]
pub(super) struct Stop;

struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, Stop> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(Stop)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Stop)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if self.buf.len() < n {
            return Err(Stop);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn skip(&mut self, wire_type: u64) -> Result<(), Stop> {
        match wire_type {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Stop)?;
                self.take(n).map(|_| ())
            }
            5 => self.take(4).map(|_| ()),
            _ => Err(Stop), // groups: the reference
        }
    }
}

/// Runs `plan` over a message's bytes, writing slots.
pub(super) fn run(plan: &Plan, body: &[u8], out: &mut [Value]) -> Result<(), Stop> {
    exec(plan, &mut Wire { buf: body }, out)
}

fn exec(plan: &Plan, w: &mut Wire<'_>, out: &mut [Value]) -> Result<(), Stop> {
    let Plan::Message { fields, defaults } = plan else {
        return Err(Stop);
    };
    for (slot, v) in defaults {
        out[*slot] = v.clone();
    }
    // An embedded message sent twice is merged by Protobuf: the reference does that.
    let mut messages_seen: Vec<u32> = Vec::new();
    while !w.buf.is_empty() {
        let tag = w.varint()?;
        let (number, wire_type) = (u32::try_from(tag >> 3).map_err(|_| Stop)?, tag & 7);
        let Some((_, read, fd)) = fields.iter().find(|(n, _, _)| *n == number) else {
            w.skip(wire_type)?;
            continue;
        };
        match read {
            Read::Skip => w.skip(wire_type)?,
            Read::Message { slot, plan } => {
                if wire_type != 2 || messages_seen.contains(&number) {
                    return Err(Stop);
                }
                messages_seen.push(number);
                let n = usize::try_from(w.varint()?).map_err(|_| Stop)?;
                let inner = w.take(n)?;
                if let Some(s) = slot {
                    out[*s] = Value::Nested { array: false };
                }
                exec(plan, &mut Wire { buf: inner }, out)?;
            }
            Read::Scalar { kind, slot } => {
                out[*slot] = scalar(*kind, wire_type, w, fd)?;
            }
        }
    }
    Ok(())
}

fn scalar(
    kind: Scalar,
    wire_type: u64,
    w: &mut Wire<'_>,
    fd: &FieldDescriptor,
) -> Result<Value, Stop> {
    let expect = |t: u64| if wire_type == t { Ok(()) } else { Err(Stop) };
    Ok(match kind {
        Scalar::Int32 => {
            expect(0)?;
            Value::Int(i64::from(w.varint()? as i64 as i32))
        }
        Scalar::Int64 => {
            expect(0)?;
            Value::Int(w.varint()? as i64)
        }
        Scalar::Uint64 => {
            expect(0)?;
            let v = w.varint()?;
            i64::try_from(v).map_or(Value::Float(v as f64), Value::Int)
        }
        Scalar::Sint => {
            expect(0)?;
            let v = w.varint()?;
            Value::Int(((v >> 1) as i64) ^ -((v & 1) as i64))
        }
        Scalar::Bool => {
            expect(0)?;
            Value::Bool(w.varint()? != 0)
        }
        Scalar::Enum => {
            expect(0)?;
            let n = w.varint()? as i64 as i32;
            leaf(fd, &Pb::EnumNumber(n))
        }
        Scalar::Fixed32 { signed } => {
            expect(5)?;
            let b: [u8; 4] = w.take(4)?.try_into().expect("4 bytes");
            if signed {
                Value::Int(i64::from(i32::from_le_bytes(b)))
            } else {
                Value::Int(i64::from(u32::from_le_bytes(b)))
            }
        }
        Scalar::Fixed64 { signed } => {
            expect(1)?;
            let b: [u8; 8] = w.take(8)?.try_into().expect("8 bytes");
            if signed {
                Value::Int(i64::from_le_bytes(b))
            } else {
                let v = u64::from_le_bytes(b);
                i64::try_from(v).map_or(Value::Float(v as f64), Value::Int)
            }
        }
        Scalar::Float => {
            expect(5)?;
            let b: [u8; 4] = w.take(4)?.try_into().expect("4 bytes");
            Value::Float(f64::from(f32::from_le_bytes(b)))
        }
        Scalar::Double => {
            expect(1)?;
            let b: [u8; 8] = w.take(8)?.try_into().expect("8 bytes");
            Value::Float(f64::from_le_bytes(b))
        }
        Scalar::Text => {
            expect(2)?;
            let n = usize::try_from(w.varint()?).map_err(|_| Stop)?;
            let bytes = w.take(n)?;
            match (std::str::from_utf8(bytes), fd.kind()) {
                (Ok(s), _) => Value::Str(s.into()),
                // A string field that is not UTF-8 is malformed: the reference says so.
                (Err(_), Kind::String) => return Err(Stop),
                (Err(_), _) => Value::Nested { array: false },
            }
        }
    })
}
