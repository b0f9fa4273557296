//! Partition state as bytes: what a checkpoint stores and a restore reads back.
//!
//! ```text
//!  worker 0 ─┐ encode(piece)                          decode(piece) ─┐
//!  worker 1 ─┼──────────────▶ pieces of partition p ──────────────────┼─▶ merge ─▶ split by key
//!  worker n ─┘                (one state file)                        │            to the workers
//! ```
//!
//! A partition's state is spread over the workers (each holds the keys routed to it),
//! so a checkpoint stores one piece per worker and a restore merges the pieces and
//! splits them again by key, for however many workers the new run has.
//!
//! The format is ours and small: a magic, the shape of every view (so a checkpoint of
//! a pipeline whose views changed is refused, not misread), then versions, fold rows,
//! aggregate partials and table rows (each with its offset and event time; a table's
//! retention is not part of the shape: a changed one applies from the next event).
//! Sections only some pieces need follow, flagged after their own magic (so pieces
//! without them read as before): the versions of streams after the first (a partition
//! fed by several topics), the keys' recent event ids (`dedup:`) and the parked keys
//! with their held records (`on_error: park`), and the dead letters replayed per key.
//! Integers are little-endian, strings are
//! length-prefixed UTF-8. Maps are written in their iteration order; equal states may encode to
//! different bytes, which nothing depends on.

use crate::aggregate::{Acc, AggregateSpec};
use crate::dedup::RecentIds;
use crate::park::{HeldRecord, Parked};
use crate::projection::{AggState, PartitionState, Projection, ViewState};
use crate::table::{TableRow, TableState};
use crate::value::Value;
use crate::view::ViewKind;
use std::num::TryFromIntError;
use std::str::Utf8Error;
use std::sync::Arc;

/// First bytes of every encoded piece (format version 1).
const MAGIC: &[u8; 4] = b"PJS1";
/// First bytes of a piece with sections beyond format version 1: a `u64` of flags
/// ([`STREAMS`], [`DEDUP`], [`PARKED`], [`REDRIVEN`]) follows, and the flagged sections
/// follow the views, in flag order.
const MAGIC_EXT: &[u8; 4] = b"PJSX";
/// Section: the versions of the streams after the first.
const STREAMS: u64 = 1;
/// Section: the keys' recent event ids (`dedup:`).
const DEDUP: u64 = 2;
/// Section: the parked keys (`on_error: park`).
const PARKED: u64 = 4;
/// Section: the dead letters replayed, per key.
const REDRIVEN: u64 = 8;

/// A piece that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// It does not start with the magic.
    #[error("not a Projector state piece (bad magic)")]
    BadMagic,
    /// It was written for views of other names, kinds or columns.
    #[error(
        "the checkpoint was written for other views (names, kinds or columns differ); \
         start from an empty state directory to rebuild the views from the source"
    )]
    OtherViews,
    /// It ends before the state does.
    #[error("truncated state: {needed} more bytes needed at byte {at}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Where.
        at: usize,
    },
    /// Bytes follow the state.
    #[error("{count} unexpected bytes after the state")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A boolean byte that is neither 0 nor 1.
    #[error("bad boolean {byte} at byte {at}")]
    BadBool {
        /// The byte.
        byte: u8,
        /// Where.
        at: usize,
    },
    /// A string length that does not fit in memory's address space.
    #[error("string too long")]
    StringTooLong(#[source] TryFromIntError),
    /// A string that is not UTF-8.
    #[error("invalid UTF-8 in a string ending at byte {end}")]
    InvalidUtf8 {
        /// Where the string ends.
        end: usize,
        /// The UTF-8 check that failed.
        source: Utf8Error,
    },
    /// An unknown value tag.
    #[error("bad value tag {tag} at byte {at}")]
    BadValueTag {
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// An unknown aggregate tag.
    #[error("bad aggregate tag {tag} at byte {at}")]
    BadAggregateTag {
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
}

/// Appends the encoding of `state` (one worker's piece of one partition) to `out`.
pub fn encode(projection: &Projection, state: &PartitionState, out: &mut Vec<u8>) {
    let flags = if state.stream_versions.is_empty() {
        0
    } else {
        STREAMS
    } | if state.dedup.is_empty() { 0 } else { DEDUP }
        | if state.parked.is_empty() { 0 } else { PARKED }
        | if state.redriven.is_empty() {
            0
        } else {
            REDRIVEN
        };
    if flags == 0 {
        out.extend_from_slice(MAGIC);
    } else {
        out.extend_from_slice(MAGIC_EXT);
        put_u64(out, flags);
    }
    encode_shape(projection, out);
    put_u64(out, state.versions.len() as u64);
    for (key, version) in &state.versions {
        put_str(out, key);
        out.extend_from_slice(&version.to_le_bytes());
    }
    for view in &state.views {
        match view {
            ViewState::Fold(f) => {
                put_u64(out, f.len() as u64);
                for row in f.iter() {
                    put_str(out, &row.key);
                    row.values.iter().for_each(|v| put_value(out, v));
                }
            }
            ViewState::Aggregate(a) => {
                put_u64(out, a.groups.len() as u64);
                for (group, accs) in &a.groups {
                    group.iter().for_each(|v| put_value(out, v));
                    accs.iter().for_each(|acc| put_acc(out, acc));
                }
            }
            ViewState::Table(t) => {
                put_opt_i64(out, t.max_time);
                put_u64(out, t.rows.len() as u64);
                for row in &t.rows {
                    put_u64(out, row.offset);
                    put_opt_i64(out, row.time);
                    row.values.iter().for_each(|v| put_value(out, v));
                }
            }
        }
    }
    if flags & STREAMS != 0 {
        put_u64(out, state.stream_versions.len() as u64);
        for versions in &state.stream_versions {
            put_u64(out, versions.len() as u64);
            for (key, version) in versions {
                put_str(out, key);
                out.extend_from_slice(&version.to_le_bytes());
            }
        }
    }
    if flags & DEDUP != 0 {
        put_u64(out, state.dedup.len() as u64);
        for (key, recent) in &state.dedup {
            put_str(out, key);
            put_u64(out, recent.len() as u64);
            for (id, time) in recent.ids() {
                put_str(out, &id);
                put_opt_i64(out, time);
            }
        }
    }
    if flags & PARKED != 0 {
        put_u64(out, state.parked.len() as u64);
        for (key, parked) in &state.parked {
            put_str(out, key);
            put_str(out, &parked.code);
            put_str(out, &parked.message);
            out.extend_from_slice(&parked.since_ms.to_le_bytes());
            put_held(out, &parked.failing);
            put_u64(out, parked.held.len() as u64);
            parked.held.iter().for_each(|h| put_held(out, h));
        }
    }
    if flags & REDRIVEN != 0 {
        put_u64(out, state.redriven.len() as u64);
        for (key, letters) in &state.redriven {
            put_str(out, key);
            put_u64(out, letters.len() as u64);
            for (stream, offset) in letters {
                out.extend_from_slice(&stream.to_le_bytes());
                put_u64(out, *offset);
            }
        }
    }
}

fn put_held(out: &mut Vec<u8>, h: &HeldRecord) {
    put_str(out, &h.partition);
    put_u64(out, h.offset);
    put_opt_bytes(out, h.value.as_deref());
    put_opt_bytes(out, h.key.as_deref());
    put_opt_i64(out, h.timestamp);
    put_u64(out, h.headers.len() as u64);
    for (name, value) in &h.headers {
        put_str(out, name);
        put_opt_bytes(out, value.as_deref());
    }
}

fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    out.push(u8::from(b.is_some()));
    if let Some(b) = b {
        put_u64(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

/// Reads one piece written by [`encode`] for the same views.
pub fn decode(projection: &Projection, bytes: &[u8]) -> Result<PartitionState, CodecError> {
    let mut r = Reader { bytes, at: 0 };
    let flags = match r.take(4)? {
        m if m == MAGIC => 0,
        m if m == MAGIC_EXT => r.u64()?,
        _ => return Err(CodecError::BadMagic),
    };
    if flags & !(STREAMS | DEDUP | PARKED | REDRIVEN) != 0 {
        return Err(CodecError::BadMagic);
    }
    let mut expected = Vec::new();
    encode_shape(projection, &mut expected);
    if r.take(expected.len())? != expected.as_slice() {
        return Err(CodecError::OtherViews);
    }
    let mut state = projection.new_partition_state();
    let n = r.u64()?;
    // Sized up front (no rehashing while a large state loads), but never beyond what
    // the remaining bytes can hold: a damaged count must not allocate wildly.
    state.versions.reserve(r.at_most(n, 8 + 8));
    for _ in 0..n {
        let key = r.str()?;
        let version = i64::from_le_bytes(r.array()?);
        state.versions.insert(key, version);
    }
    for (spec, view) in projection.views().iter().zip(state.views.iter_mut()) {
        match (&spec.kind, view) {
            (ViewKind::Fold(f), ViewState::Fold(s)) => {
                let n = r.u64()?;
                s.reserve(r.at_most(n, 8 + f.columns.len()));
                for _ in 0..n {
                    // The key's string is shared with its version entry, as it is
                    // while running, instead of a second copy per key.
                    let text = r.str_ref()?;
                    let key = match state.versions.get_key_value(text) {
                        Some((k, _)) => k.clone(),
                        None => Arc::from(text),
                    };
                    let row = (0..f.columns.len())
                        .map(|_| r.value())
                        .collect::<Result<_, _>>()?;
                    s.insert(key, row);
                }
            }
            (ViewKind::Aggregate(a), ViewState::Aggregate(s)) => {
                for _ in 0..r.u64()? {
                    let group = (0..a.group_by.len())
                        .map(|_| r.value())
                        .collect::<Result<_, _>>()?;
                    let accs = (0..a.columns.len())
                        .map(|_| r.acc())
                        .collect::<Result<_, _>>()?;
                    s.groups.insert(group, accs);
                }
            }
            (ViewKind::Table(t), ViewState::Table(s)) => {
                let max_time = r.opt_i64()?;
                let n = r.u64()?;
                // Not `with_capacity(n)`: a damaged count must not allocate wildly.
                let mut rows = std::collections::VecDeque::new();
                for _ in 0..n {
                    let offset = r.u64()?;
                    let time = r.opt_i64()?;
                    let values = (0..t.columns.len())
                        .map(|_| r.value())
                        .collect::<Result<_, _>>()?;
                    rows.push_back(TableRow {
                        offset,
                        time,
                        values,
                    });
                }
                *s = TableState::from_rows(rows, max_time);
            }
            _ => unreachable!("new_partition_state follows the views"),
        }
    }
    if flags & STREAMS != 0 {
        // The versions of the streams after the first.
        for _ in 0..r.u64()? {
            let n = r.u64()?;
            let mut versions = crate::projection::FastMap::default();
            versions.reserve(r.at_most(n, 8 + 8));
            for _ in 0..n {
                let key = r.str()?;
                let version = i64::from_le_bytes(r.array()?);
                versions.insert(key, version);
            }
            state.stream_versions.push(versions);
        }
    }
    if flags & DEDUP != 0 {
        let n = r.u64()?;
        state.dedup.reserve(r.at_most(n, 8 + 8));
        for _ in 0..n {
            let text = r.str_ref()?;
            // Shared with the key's version entry, as while running.
            let key = match state.versions.get_key_value(text) {
                Some((k, _)) => k.clone(),
                None => Arc::from(text),
            };
            let mut ids = Vec::new();
            for _ in 0..r.u64()? {
                let id = r.str()?;
                let time = r.opt_i64()?;
                ids.push((id, time));
            }
            state.dedup.insert(key, RecentIds::from_ids(ids));
        }
    }
    if flags & PARKED != 0 {
        for _ in 0..r.u64()? {
            let key = r.str()?;
            let code = r.str()?;
            let message = r.str()?;
            let since_ms = i64::from_le_bytes(r.array()?);
            let failing = r.held()?;
            let mut held = std::collections::VecDeque::new();
            for _ in 0..r.u64()? {
                held.push_back(r.held()?);
            }
            let parked = Parked {
                code,
                message,
                since_ms,
                failing,
                held,
            };
            state.parked.insert(key, parked);
        }
    }
    if flags & REDRIVEN != 0 {
        let n = r.u64()?;
        state.redriven.reserve(r.at_most(n, 8 + 8));
        for _ in 0..n {
            let key = r.str()?;
            let mut letters = Vec::new();
            for _ in 0..r.u64()? {
                let stream = u16::from_le_bytes(r.array()?);
                letters.push((stream, r.u64()?));
            }
            state.redriven.insert(key, letters);
        }
    }
    if r.at != bytes.len() {
        return Err(CodecError::TrailingBytes {
            count: bytes.len() - r.at,
        });
    }
    Ok(state)
}

/// First bytes of encoded aggregate partials (format version 1).
const PARTIALS_MAGIC: &[u8; 4] = b"PJA1";

/// Appends the encoding of one aggregate view's partials to `out`: what an instance
/// sends another that merges the partials of every partition (see [`decode_partials`]).
pub fn encode_partials(spec: &AggregateSpec, state: &AggState, out: &mut Vec<u8>) {
    out.extend_from_slice(PARTIALS_MAGIC);
    put_u64(out, spec.group_by.len() as u64);
    put_u64(out, spec.columns.len() as u64);
    put_u64(out, state.groups.len() as u64);
    for (group, accs) in &state.groups {
        group.iter().for_each(|v| put_value(out, v));
        accs.iter().for_each(|acc| put_acc(out, acc));
    }
}

/// Reads partials written by [`encode_partials`] for a view of the same shape.
pub fn decode_partials(spec: &AggregateSpec, bytes: &[u8]) -> Result<AggState, CodecError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != PARTIALS_MAGIC {
        return Err(CodecError::BadMagic);
    }
    if r.u64()? != spec.group_by.len() as u64 || r.u64()? != spec.columns.len() as u64 {
        return Err(CodecError::OtherViews);
    }
    let mut state = AggState::default();
    for _ in 0..r.u64()? {
        let group = (0..spec.group_by.len())
            .map(|_| r.value())
            .collect::<Result<_, _>>()?;
        let accs = (0..spec.columns.len())
            .map(|_| r.acc())
            .collect::<Result<_, _>>()?;
        state.groups.insert(group, accs);
    }
    if r.at != bytes.len() {
        return Err(CodecError::TrailingBytes {
            count: bytes.len() - r.at,
        });
    }
    Ok(state)
}

/// Folds `other` (another worker's piece of the same partition) into `state`: keys are
/// disjoint between workers; aggregate partials are merged.
pub fn merge(state: &mut PartitionState, mut other: PartitionState) {
    // Move the smaller state into the larger one (merging is commutative).
    let size = |s: &PartitionState| {
        s.versions.len()
            + s.views
                .iter()
                .map(|v| match v {
                    ViewState::Fold(f) => f.len(),
                    _ => 0,
                })
                .sum::<usize>()
    };
    if size(&other) > size(state) {
        std::mem::swap(state, &mut other);
    }
    state.versions.extend(other.versions);
    if state.stream_versions.len() < other.stream_versions.len() {
        state
            .stream_versions
            .resize_with(other.stream_versions.len(), Default::default);
    }
    for (mine, theirs) in state.stream_versions.iter_mut().zip(other.stream_versions) {
        mine.extend(theirs);
    }
    state.dedup.extend(other.dedup);
    state.parked.extend(other.parked);
    state.redriven.extend(other.redriven);
    for (mine, theirs) in state.views.iter_mut().zip(other.views) {
        match (mine, theirs) {
            (ViewState::Fold(a), ViewState::Fold(b)) => {
                for row in b.into_rows() {
                    a.insert(row.key, row.values);
                }
            }
            (ViewState::Aggregate(a), ViewState::Aggregate(b)) => a.merge(&b),
            (ViewState::Table(a), ViewState::Table(b)) => a.merge(b),
            _ => unreachable!("pieces of one projection have the same view kinds"),
        }
    }
}

/// Splits a partition's state into `n` pieces: every key (its version and fold rows) to
/// the piece `route(key)` names, and the aggregate partials and table rows, which are
/// not keyed by the routing key, to piece 0 (a query merges the partials and unions
/// the rows of all workers anyway; table rows stay in offset order in piece 0, and
/// every later row of the partition has a higher offset wherever it goes).
pub fn split(
    projection: &Projection,
    state: PartitionState,
    n: usize,
    route: impl Fn(&str) -> usize,
) -> Vec<PartitionState> {
    if n == 1 {
        return vec![state];
    }
    let mut pieces: Vec<PartitionState> =
        (0..n).map(|_| projection.new_partition_state()).collect();
    for (key, version) in state.versions {
        let w = route(&key);
        pieces[w].versions.insert(key, version);
    }
    let streams = state.stream_versions.len();
    for piece in &mut pieces {
        piece.stream_versions.resize_with(streams, Default::default);
    }
    for (s, versions) in state.stream_versions.into_iter().enumerate() {
        for (key, version) in versions {
            pieces[route(&key)].stream_versions[s].insert(key, version);
        }
    }
    for (key, recent) in state.dedup {
        pieces[route(&key)].dedup.insert(key, recent);
    }
    for (key, parked) in state.parked {
        pieces[route(&key)].parked.insert(key, parked);
    }
    for (key, letters) in state.redriven {
        pieces[route(&key)].redriven.insert(key, letters);
    }
    for (v, view) in state.views.into_iter().enumerate() {
        match view {
            ViewState::Fold(rows) => {
                for row in rows.into_rows() {
                    let w = route(&row.key);
                    if let ViewState::Fold(f) = &mut pieces[w].views[v] {
                        f.insert(row.key, row.values);
                    }
                }
            }
            ViewState::Aggregate(agg) => pieces[0].views[v] = ViewState::Aggregate(agg),
            ViewState::Table(t) => pieces[0].views[v] = ViewState::Table(t),
        }
    }
    pieces
}

/// The views' shape, so a piece is only read back by the same views.
fn encode_shape(projection: &Projection, out: &mut Vec<u8>) {
    put_u64(out, projection.views().len() as u64);
    for view in projection.views() {
        put_str(out, &view.name);
        match &view.kind {
            ViewKind::Fold(f) => {
                out.push(0);
                put_u64(out, f.columns.len() as u64);
                for c in &f.columns {
                    put_str(out, &c.name);
                    put_str(out, c.ty.name());
                }
            }
            ViewKind::Aggregate(a) => {
                out.push(1);
                put_u64(out, a.group_by.len() as u64);
                for g in &a.group_by {
                    put_str(out, &g.name);
                    put_str(out, g.ty.name());
                }
                put_u64(out, a.columns.len() as u64);
                for c in &a.columns {
                    put_str(out, &c.name);
                    put_str(out, c.func.name());
                    put_str(out, c.ty.name());
                }
            }
            ViewKind::Table(t) => {
                out.push(2);
                put_u64(out, t.columns.len() as u64);
                for c in &t.columns {
                    put_str(out, &c.name);
                    put_str(out, c.ty.name());
                }
            }
        }
    }
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    out.push(u8::from(v.is_some()));
    out.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
        Value::Int(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(3);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => {
            out.push(4);
            put_str(out, s);
        }
        Value::Nested { array } => out.extend_from_slice(&[5, u8::from(*array)]),
    }
}

fn put_acc(out: &mut Vec<u8>, acc: &Acc) {
    match acc {
        Acc::Count(c) => {
            out.push(0);
            out.extend_from_slice(&c.to_le_bytes());
        }
        Acc::SumInt(s) => {
            out.extend_from_slice(&[1, u8::from(s.is_some())]);
            out.extend_from_slice(&s.unwrap_or(0).to_le_bytes());
        }
        Acc::SumFloat(s) => {
            out.extend_from_slice(&[2, u8::from(s.is_some())]);
            out.extend_from_slice(&s.unwrap_or(0.0).to_bits().to_le_bytes());
        }
        Acc::Min(v) => {
            out.push(3);
            put_value(out, v);
        }
        Acc::Max(v) => {
            out.push(4);
            put_value(out, v);
        }
        Acc::Avg { sum, count } => {
            out.push(5);
            out.extend_from_slice(&sum.to_bits().to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        match self.bytes.get(self.at..self.at.saturating_add(n)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => Err(CodecError::Truncated {
                needed: n,
                at: self.at,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn opt_i64(&mut self) -> Result<Option<i64>, CodecError> {
        let present = self.bool()?;
        let v = i64::from_le_bytes(self.array()?);
        Ok(present.then_some(v))
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(CodecError::BadBool {
                byte,
                at: self.at - 1,
            }),
        }
    }

    fn str(&mut self) -> Result<Arc<str>, CodecError> {
        self.str_ref().map(Arc::from)
    }

    /// A string, borrowed from the bytes.
    fn str_ref(&mut self) -> Result<&'a str, CodecError> {
        let len = usize::try_from(self.u64()?).map_err(CodecError::StringTooLong)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|source| CodecError::InvalidUtf8 {
            end: self.at,
            source,
        })
    }

    fn opt_bytes(&mut self) -> Result<Option<Box<[u8]>>, CodecError> {
        if !self.bool()? {
            return Ok(None);
        }
        let len = usize::try_from(self.u64()?).map_err(CodecError::StringTooLong)?;
        Ok(Some(self.take(len)?.into()))
    }

    fn held(&mut self) -> Result<HeldRecord, CodecError> {
        let partition = self.str()?;
        let offset = self.u64()?;
        let value = self.opt_bytes()?;
        let key = self.opt_bytes()?;
        let timestamp = self.opt_i64()?;
        let mut headers = Vec::new();
        for _ in 0..self.u64()? {
            let name = Box::from(self.str_ref()?);
            headers.push((name, self.opt_bytes()?));
        }
        Ok(HeldRecord {
            partition,
            offset,
            value,
            key,
            timestamp,
            headers,
        })
    }

    /// `n` entries, or as many as the remaining bytes can hold at `min_bytes` each.
    fn at_most(&self, n: u64, min_bytes: usize) -> usize {
        let room = (self.bytes.len() - self.at) / min_bytes.max(1);
        usize::try_from(n).unwrap_or(usize::MAX).min(room)
    }

    fn value(&mut self) -> Result<Value, CodecError> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(self.bool()?),
            2 => Value::Int(i64::from_le_bytes(self.array()?)),
            3 => Value::Float(f64::from_bits(u64::from_le_bytes(self.array()?))),
            4 => Value::Str(self.str()?),
            5 => Value::Nested {
                array: self.bool()?,
            },
            tag => {
                return Err(CodecError::BadValueTag {
                    tag,
                    at: self.at - 1,
                });
            }
        })
    }

    fn acc(&mut self) -> Result<Acc, CodecError> {
        Ok(match self.u8()? {
            0 => Acc::Count(i64::from_le_bytes(self.array()?)),
            1 => {
                let some = self.bool()?;
                let s = i128::from_le_bytes(self.array()?);
                Acc::SumInt(some.then_some(s))
            }
            2 => {
                let some = self.bool()?;
                let s = f64::from_bits(u64::from_le_bytes(self.array()?));
                Acc::SumFloat(some.then_some(s))
            }
            3 => Acc::Min(self.value()?),
            4 => Acc::Max(self.value()?),
            5 => Acc::Avg {
                sum: f64::from_bits(u64::from_le_bytes(self.array()?)),
                count: i64::from_le_bytes(self.array()?),
            },
            tag => {
                return Err(CodecError::BadAggregateTag {
                    tag,
                    at: self.at - 1,
                });
            }
        })
    }
}

#[cfg(test)]
mod tests;
