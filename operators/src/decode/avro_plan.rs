//! The fast path of Avro decoding: a plan compiled once per writer schema, which reads
//! the binary body field by field, converts only the fields the pipeline reads and
//! skips the others without materializing them (no `apache_avro::types::Value`, no
//! field-name strings per record).
//!
//! Resolution to the reader's schema is the part the plan does itself when it is the
//! common one: fields added (their reader default fills the slot) or removed (skipped),
//! and numeric promotions. Anything else (an enum or union the reader resolves
//! differently, a map read by key, a type change) compiles to [`Step::Fallback`], and a
//! record that reaches one is decoded again by apache-avro, the reference.

use super::trie::Trie;
use crate::value::Value;
use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema};
use std::collections::HashMap;
use std::sync::Arc;

/// How deep a plan goes into nested (possibly recursive) types before it leaves the
/// rest to apache-avro.
const MAX_DEPTH: usize = 24;

/// One compiled reader.
#[derive(Debug)]
pub(super) enum Step {
    Null,
    Bool(Option<usize>),
    /// int or long (zigzag varint); `div` scales timestamps to milliseconds; `float`
    /// when the reader promotes it to float or double.
    Int {
        slot: Option<usize>,
        div: i64,
        float: bool,
    },
    Float {
        slot: Option<usize>,
        double: bool,
    },
    /// string or bytes: text when UTF-8.
    Text(Option<usize>),
    Fixed(usize, Option<usize>),
    /// bytes or fixed that convert to no slot type (decimal, duration).
    Opaque {
        fixed: Option<usize>,
        slot: Option<usize>,
    },
    Enum(Arc<[Arc<str>]>, Option<usize>),
    Union(Vec<Step>),
    Record {
        slot: Option<usize>,
        fields: Vec<Step>,
        /// Slots the reader's defaults fill (fields the writer does not have).
        defaults: Vec<(usize, Value)>,
    },
    Array {
        slot: Option<usize>,
        items: Box<Step>,
    },
    Map {
        slot: Option<usize>,
        values: Box<Step>,
    },
    /// Not handled here: the record is decoded by apache-avro instead.
    Fallback,
}

/// Named types of a schema, for `Ref`s.
type Names = HashMap<Name, Schema>;

fn names(schema: &Schema) -> Names {
    fn collect(s: &Schema, out: &mut Names) {
        match s {
            Schema::Record(r) if out.insert(r.name.clone(), s.clone()).is_none() => {
                for f in &r.fields {
                    collect(&f.schema, out);
                }
            }
            Schema::Enum(e) => {
                out.insert(e.name.clone(), s.clone());
            }
            Schema::Fixed(f) => {
                out.insert(f.name.clone(), s.clone());
            }
            Schema::Union(u) => u.variants().iter().for_each(|v| collect(v, out)),
            Schema::Array(a) => collect(&a.items, out),
            Schema::Map(m) => collect(&m.types, out),
            _ => {}
        }
    }
    let mut out = Names::new();
    collect(schema, &mut out);
    out
}

/// Compiles the plan for records written with `writer`, read by `reader` (if the
/// pipeline has one), for the paths of `trie`.
pub(super) fn compile(writer: &Schema, reader: Option<&Schema>, trie: &Trie) -> Step {
    let c = Compiler {
        trie,
        wnames: names(writer),
        rnames: reader.map(names).unwrap_or_default(),
    };
    c.step(writer, reader, Some(Trie::ROOT), 0)
}

struct Compiler<'a> {
    trie: &'a Trie,
    wnames: Names,
    rnames: Names,
}

impl Compiler<'_> {
    fn deref<'s>(names: &'s Names, s: &'s Schema) -> &'s Schema {
        match s {
            Schema::Ref { name } => names.get(name).unwrap_or(s),
            other => other,
        }
    }

    /// The step for a value of schema `w` (reader's `r`) at trie node `node` (`None`:
    /// nothing below is read, skip it).
    fn step(&self, w: &Schema, r: Option<&Schema>, node: Option<usize>, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return Step::Fallback;
        }
        let w = Self::deref(&self.wnames, w);
        let r = r.map(|r| Self::deref(&self.rnames, r));
        let slot = node.and_then(|n| self.trie.node(n).slot);
        let has_children = node.is_some_and(|n| !self.trie.node(n).children.is_empty());
        // A reader union takes the branch that matches the writer's type.
        if let (Some(Schema::Union(ru)), false) = (r, matches!(w, Schema::Union(_))) {
            let branch = ru
                .variants()
                .iter()
                .find(|b| same_kind(w, Self::deref(&self.rnames, b)));
            return match branch {
                Some(b) => self.step(w, Some(b), node, depth),
                None => Step::Fallback,
            };
        }
        let promoted_float = matches!(r, Some(Schema::Float | Schema::Double));
        match w {
            Schema::Null => Step::Null,
            Schema::Boolean => Step::Bool(slot),
            Schema::Int | Schema::Long | Schema::Date | Schema::TimeMillis | Schema::TimeMicros => {
                self.check(
                    w,
                    r,
                    Step::Int {
                        slot,
                        div: 1,
                        float: promoted_float,
                    },
                    &[Schema::Int, Schema::Long, Schema::Float, Schema::Double],
                )
            }
            Schema::TimestampMillis | Schema::LocalTimestampMillis => Step::Int {
                slot,
                div: 1,
                float: false,
            },
            Schema::TimestampMicros | Schema::LocalTimestampMicros => Step::Int {
                slot,
                div: 1_000,
                float: false,
            },
            Schema::TimestampNanos | Schema::LocalTimestampNanos => Step::Int {
                slot,
                div: 1_000_000,
                float: false,
            },
            Schema::Float => self.check(
                w,
                r,
                Step::Float {
                    slot,
                    double: false,
                },
                &[Schema::Float, Schema::Double],
            ),
            Schema::Double => Step::Float { slot, double: true },
            Schema::String | Schema::Bytes | Schema::Uuid => self.check(
                w,
                r,
                Step::Text(slot),
                &[Schema::String, Schema::Bytes, Schema::Uuid],
            ),
            Schema::Fixed(f) => Step::Fixed(f.size, slot),
            Schema::Decimal(d) => match Self::deref(&self.wnames, &d.inner) {
                Schema::Fixed(f) => Step::Opaque {
                    fixed: Some(f.size),
                    slot,
                },
                _ => Step::Opaque { fixed: None, slot },
            },
            Schema::BigDecimal => Step::Opaque { fixed: None, slot },
            Schema::Duration => Step::Opaque {
                fixed: Some(12),
                slot,
            },
            Schema::Enum(e) => {
                // A reader enum missing a writer symbol resolves it by its default:
                // apache-avro's business.
                if let Some(Schema::Enum(re)) = r
                    && e.symbols.iter().any(|s| !re.symbols.contains(s))
                {
                    return Step::Fallback;
                }
                let symbols: Vec<Arc<str>> =
                    e.symbols.iter().map(|s| Arc::from(s.as_str())).collect();
                Step::Enum(symbols.into(), slot)
            }
            Schema::Union(u) => {
                let branches = u
                    .variants()
                    .iter()
                    .map(|b| {
                        let bw = Self::deref(&self.wnames, b);
                        let br = match r {
                            Some(Schema::Union(ru)) => {
                                match ru
                                    .variants()
                                    .iter()
                                    .find(|x| same_kind(bw, Self::deref(&self.rnames, x)))
                                {
                                    Some(x) => Some(x),
                                    None => return Step::Fallback,
                                }
                            }
                            Some(other) if same_kind(bw, other) => Some(other),
                            Some(_) => return Step::Fallback,
                            None => None,
                        };
                        self.step(bw, br, node, depth + 1)
                    })
                    .collect();
                Step::Union(branches)
            }
            Schema::Array(a) => {
                if has_children {
                    return Step::Fallback;
                }
                let ri = match r {
                    Some(Schema::Array(ra)) => Some(&*ra.items),
                    Some(_) => return Step::Fallback,
                    None => None,
                };
                Step::Array {
                    slot,
                    items: Box::new(self.step(&a.items, ri, None, depth + 1)),
                }
            }
            Schema::Map(m) => {
                if has_children {
                    return Step::Fallback; // read by key: apache-avro
                }
                let rv = match r {
                    Some(Schema::Map(rm)) => Some(&*rm.types),
                    Some(_) => return Step::Fallback,
                    None => None,
                };
                Step::Map {
                    slot,
                    values: Box::new(self.step(&m.types, rv, None, depth + 1)),
                }
            }
            Schema::Record(rec) => {
                let rr = match r {
                    Some(Schema::Record(rr)) => Some(rr),
                    Some(_) => return Step::Fallback,
                    None => None,
                };
                self.record(rec, rr, slot, node, depth)
            }
            Schema::Ref { .. } => Step::Fallback,
        }
    }

    /// A scalar step when the reader's type is the writer's or one it promotes to.
    fn check(&self, w: &Schema, r: Option<&Schema>, step: Step, readers: &[Schema]) -> Step {
        match r {
            None => step,
            Some(r) if same_kind(w, r) || readers.iter().any(|k| same_kind(k, r)) => step,
            Some(_) => Step::Fallback,
        }
    }

    fn record(
        &self,
        w: &RecordSchema,
        r: Option<&RecordSchema>,
        slot: Option<usize>,
        node: Option<usize>,
        depth: usize,
    ) -> Step {
        let child = |name: &str| -> Option<usize> {
            let n = node?;
            self.trie
                .node(n)
                .children
                .iter()
                .find(|(k, _)| **k == *name)
                .map(|(_, c)| *c)
        };
        let mut fields = Vec::with_capacity(w.fields.len());
        for f in &w.fields {
            // Read by the reader's rules: a field the reader does not have is skipped.
            let rf = match r {
                Some(r) => match r.lookup.get(&f.name) {
                    Some(i) => Some(&r.fields[*i]),
                    None => {
                        fields.push(self.step(&f.schema, None, None, depth + 1));
                        continue;
                    }
                },
                None => None,
            };
            let c = child(&f.name);
            fields.push(self.step(&f.schema, rf.map(|rf| &rf.schema), c, depth + 1));
        }
        let mut defaults = Vec::new();
        if let Some(r) = r {
            for rf in &r.fields {
                if w.lookup.contains_key(&rf.name) {
                    continue;
                }
                let Some(c) = child(&rf.name) else {
                    continue;
                };
                let Some(default) = &rf.default else {
                    return Step::Fallback; // no default: apache-avro says why
                };
                let n = self.trie.node(c);
                if let Some(s) = n.slot {
                    defaults.push((s, super::walk::from_json(default)));
                }
                if !n.children.is_empty() {
                    // A record default read below: rare, left to apache-avro.
                    return Step::Fallback;
                }
            }
        }
        Step::Record {
            slot,
            fields,
            defaults,
        }
    }
}

/// Whether a writer's value of schema `w` can be read as the reader's `r` without
/// more than a promotion (named types by name).
fn same_kind(w: &Schema, r: &Schema) -> bool {
    use Schema as S;
    match (w, r) {
        (S::Record(a), S::Record(b)) => a.name.name == b.name.name,
        (S::Enum(a), S::Enum(b)) => a.name.name == b.name.name,
        (S::Fixed(a), S::Fixed(b)) => a.name.name == b.name.name && a.size == b.size,
        (S::Ref { name: a }, S::Ref { name: b }) => a.name == b.name,
        (S::Ref { name }, S::Record(b)) | (S::Record(b), S::Ref { name }) => {
            name.name == b.name.name
        }
        (S::Int | S::Long, S::Int | S::Long | S::Float | S::Double) => true,
        (S::Float, S::Float | S::Double) => true,
        (S::String | S::Bytes | S::Uuid, S::String | S::Bytes | S::Uuid) => true,
        (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// Why the fast path gave up on a record.
#[derive(Debug)]
pub(super) enum Stop {
    /// The record needs apache-avro (a [`Step::Fallback`]).
    Fallback,
    /// The body is cut short or malformed: apache-avro words the error.
    Malformed,
}

/// A reader over a body.
struct Body<'a> {
    buf: &'a [u8],
}

impl<'a> Body<'a> {
    fn varint(&mut self) -> Result<i64, Stop> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(Stop::Malformed)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(Stop::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if self.buf.len() < n {
            return Err(Stop::Malformed);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn len(&mut self) -> Result<usize, Stop> {
        usize::try_from(self.varint()?).map_err(|_| Stop::Malformed)
    }
}

fn text(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::Str(s.into()),
        Err(_) => Value::Nested { array: false },
    }
}

/// Runs `plan` over `body`, writing slots; the body must be used up exactly.
pub(super) fn run(plan: &Step, body: &[u8], out: &mut [Value]) -> Result<(), Stop> {
    let mut b = Body { buf: body };
    exec(plan, &mut b, out)?;
    if b.buf.is_empty() {
        Ok(())
    } else {
        Err(Stop::Malformed)
    }
}

fn put(out: &mut [Value], slot: Option<usize>, v: impl FnOnce() -> Value) {
    if let Some(s) = slot {
        out[s] = v();
    }
}

fn exec(step: &Step, b: &mut Body<'_>, out: &mut [Value]) -> Result<(), Stop> {
    match step {
        Step::Null => {}
        Step::Bool(slot) => {
            let v = b.take(1)?[0];
            put(out, *slot, || Value::Bool(v != 0));
        }
        Step::Int { slot, div, float } => {
            let v = b.varint()?.div_euclid(*div);
            put(out, *slot, || {
                if *float {
                    Value::Float(v as f64)
                } else {
                    Value::Int(v)
                }
            });
        }
        Step::Float { slot, double } => {
            let v = if *double {
                f64::from_le_bytes(b.take(8)?.try_into().expect("8 bytes"))
            } else {
                f64::from(f32::from_le_bytes(b.take(4)?.try_into().expect("4 bytes")))
            };
            put(out, *slot, || Value::Float(v));
        }
        Step::Text(slot) => {
            let n = b.len()?;
            let bytes = b.take(n)?;
            put(out, *slot, || text(bytes));
        }
        Step::Fixed(n, slot) => {
            let bytes = b.take(*n)?;
            put(out, *slot, || text(bytes));
        }
        Step::Opaque { fixed, slot } => {
            let n = match fixed {
                Some(n) => *n,
                None => b.len()?,
            };
            b.take(n)?;
            put(out, *slot, || Value::Nested { array: false });
        }
        Step::Enum(symbols, slot) => {
            let i = usize::try_from(b.varint()?).map_err(|_| Stop::Malformed)?;
            let s = symbols.get(i).ok_or(Stop::Malformed)?;
            put(out, *slot, || Value::Str(s.clone()));
        }
        Step::Union(branches) => {
            let i = usize::try_from(b.varint()?).map_err(|_| Stop::Malformed)?;
            exec(branches.get(i).ok_or(Stop::Malformed)?, b, out)?;
        }
        Step::Record {
            slot,
            fields,
            defaults,
        } => {
            put(out, *slot, || Value::Nested { array: false });
            for f in fields {
                exec(f, b, out)?;
            }
            for (s, v) in defaults {
                out[*s] = v.clone();
            }
        }
        Step::Array { slot, items } => {
            blocks(b, |b| exec(items, b, out))?;
            put(out, *slot, || Value::Nested { array: true });
        }
        Step::Map { slot, values } => {
            blocks(b, |b| {
                let n = b.len()?;
                b.take(n)?;
                exec(values, b, out)
            })?;
            put(out, *slot, || Value::Nested { array: false });
        }
        Step::Fallback => return Err(Stop::Fallback),
    }
    Ok(())
}

/// Array and map blocks: a count (negative: followed by the block's size in bytes),
/// the items, until a zero count.
fn blocks<'a>(
    b: &mut Body<'a>,
    mut item: impl FnMut(&mut Body<'a>) -> Result<(), Stop>,
) -> Result<(), Stop> {
    loop {
        let count = b.varint()?;
        if count == 0 {
            return Ok(());
        }
        let count = if count < 0 {
            b.varint()?; // the block's size in bytes
            count.checked_neg().ok_or(Stop::Malformed)?
        } else {
            count
        };
        for _ in 0..count {
            item(b)?;
        }
    }
}
