//! Table views as Arrow: built incrementally per worker, retained exactly at publish.
//!
//! A table only grows at its end and loses rows at its start, so a worker keeps the
//! `RecordBatch` chunks it built at earlier epochs and builds only the rows appended
//! since: chunks whose rows were all dropped go, the first kept one is sliced
//! (zero-copy), and the new tail becomes a chunk. Consecutive chunks are merged while
//! the older is not more than twice the newer, so a worker holds O(log rows) chunks and
//! each row is copied O(log rows) times over its life, instead of every epoch.
//!
//! Chunks are only reused for the same state object (`TableState::generation`): after
//! a restore, or a partition handed away and back, the rows are built again once.
//!
//! Retention is per source partition, but a partition's rows are spread over the
//! workers (by key), each trimming only its own share (by `rows` when it is set, else
//! by `age`). Publishing applies the partition-wide rule: the newest `rows` offsets
//! over all workers, and the newest event time over all workers for `age`. Each chunk carries its rows' offsets and
//! event times for that; with one worker the filter keeps every row and costs a scan.

use super::columns::ColumnBuilder;
use arrow::array::{
    Array, BooleanArray, Int64Array, Int64Builder, RecordBatch, UInt64Array, UInt64Builder,
};
use arrow::compute::{concat, concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;
use projector_operators::projection::{PartitionState, ViewState};
use projector_operators::table::{TableSpec, TableState};
use std::collections::BTreeMap;

/// Rows of one partition's table state, numbered `first..first + batch.num_rows()`.
#[derive(Debug, Clone)]
pub struct TableChunk {
    /// The source partition.
    pub partition: u32,
    /// The `TableState::generation` the rows were built from.
    pub generation: u64,
    /// The number of the first row in that state.
    pub first: u64,
    /// The rows, in the view's schema.
    pub batch: RecordBatch,
    /// Each row's source offset.
    pub offsets: UInt64Array,
    /// Each row's event time (epoch ms; null when the event had none).
    pub times: Int64Array,
}

impl TableChunk {
    fn len(&self) -> u64 {
        self.batch.num_rows() as u64
    }

    fn end(&self) -> u64 {
        self.first + self.len()
    }

    /// The rows from number `from` on (`from` inside the chunk).
    fn from(&self, from: u64) -> TableChunk {
        let skip = (from - self.first) as usize;
        let len = self.batch.num_rows() - skip;
        TableChunk {
            partition: self.partition,
            generation: self.generation,
            first: from,
            batch: self.batch.slice(skip, len),
            offsets: self.offsets.slice(skip, len),
            times: self.times.slice(skip, len),
        }
    }
}

/// One worker's part of a table view at one epoch.
#[derive(Debug, Clone, Default)]
pub struct TablePart {
    /// Per partition, its rows in order, in chunks.
    pub chunks: Vec<TableChunk>,
    /// Per partition, the newest event time this worker saw (dropped rows included).
    pub max_time: BTreeMap<u32, i64>,
}

/// Builds a worker's part of table view `v`, reusing `previous` (this worker's part at
/// an earlier epoch) where the rows are the same.
pub(crate) fn build(
    spec: &TableSpec,
    schema: &SchemaRef,
    v: usize,
    partitions: &BTreeMap<u32, PartitionState>,
    previous: Option<&TablePart>,
) -> TablePart {
    let mut part = TablePart::default();
    for (&p, state) in partitions {
        let ViewState::Table(s) = &state.views[v] else {
            continue;
        };
        if let Some(t) = s.max_time {
            part.max_time.insert(p, t);
        }
        let (first, next) = (s.first_number(), s.next_number());
        let mut chunks: Vec<TableChunk> = Vec::new();
        let mut built_to = first;
        let reusable = previous
            .into_iter()
            .flat_map(|prev| prev.chunks.iter())
            .filter(|c| c.partition == p && c.generation == s.generation());
        for c in reusable {
            if c.end() <= first {
                continue; // every row of it was dropped
            }
            let c = if c.first < first {
                c.from(first)
            } else {
                c.clone()
            };
            if c.first != built_to || c.end() > next {
                break; // not a prefix of the rows: build the rest again
            }
            built_to = c.end();
            chunks.push(c);
        }
        if built_to < next {
            let skip = (built_to - first) as usize;
            chunks.push(build_chunk(spec, schema, p, s, skip));
        }
        compact(&mut chunks);
        part.chunks.extend(chunks);
    }
    part
}

/// Builds the rows of `s` from index `skip` on into one chunk.
fn build_chunk(
    spec: &TableSpec,
    schema: &SchemaRef,
    partition: u32,
    s: &TableState,
    skip: usize,
) -> TableChunk {
    let n = s.rows.len() - skip;
    let mut cols: Vec<ColumnBuilder> = spec
        .columns
        .iter()
        .map(|c| ColumnBuilder::new(c.ty, n))
        .collect();
    let mut offsets = UInt64Builder::with_capacity(n);
    let mut times = Int64Builder::with_capacity(n);
    for row in s.rows.range(skip..) {
        for (b, val) in cols.iter_mut().zip(row.values.iter()) {
            b.append(val);
        }
        offsets.append_value(row.offset);
        times.append_option(row.time);
    }
    let arrays = cols.into_iter().map(ColumnBuilder::finish).collect();
    TableChunk {
        partition,
        generation: s.generation(),
        first: s.first_number() + skip as u64,
        batch: RecordBatch::try_new(schema.clone(), arrays).expect("columns match the schema"),
        offsets: offsets.finish(),
        times: times.finish(),
    }
}

/// Merges the newest chunks while the older one is at most twice the newer one.
fn compact(chunks: &mut Vec<TableChunk>) {
    while let [.., older, newer] = &chunks[..] {
        if older.len() > 2 * newer.len() {
            break;
        }
        let batch = concat_batches(&older.batch.schema(), [&older.batch, &newer.batch])
            .expect("chunks of one view share a schema");
        let offsets = concat(&[&older.offsets as &dyn Array, &newer.offsets]).expect("same type");
        let times = concat(&[&older.times as &dyn Array, &newer.times]).expect("same type");
        let merged = TableChunk {
            partition: older.partition,
            generation: older.generation,
            first: older.first,
            batch,
            offsets: offsets
                .as_any()
                .downcast_ref::<UInt64Array>()
                .expect("u64")
                .clone(),
            times: times
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("i64")
                .clone(),
        };
        chunks.truncate(chunks.len() - 2);
        chunks.push(merged);
    }
}

/// The rows of the view as scan partitions (one per worker), each batch with its source
/// partition, retention applied across workers per source partition.
pub(crate) fn publish(spec: &TableSpec, parts: &[&TablePart]) -> Vec<Vec<(u32, RecordBatch)>> {
    let retain = spec.retain;
    if !retain.is_bounded() {
        return parts
            .iter()
            .map(|p| {
                p.chunks
                    .iter()
                    .map(|c| (c.partition, c.batch.clone()))
                    .collect()
            })
            .collect();
    }
    // Per source partition: the oldest event time kept.
    let mut time_cutoff: BTreeMap<u32, i64> = BTreeMap::new();
    if let Some(age) = retain.age_ms {
        for part in parts {
            for (&p, &t) in &part.max_time {
                let c = time_cutoff.entry(p).or_insert(i64::MIN);
                *c = (*c).max(t.saturating_sub(age));
            }
        }
    }
    let time_ok = |c: &TableChunk, i: usize| {
        c.times.is_null(i)
            || time_cutoff
                .get(&c.partition)
                .is_none_or(|cut| c.times.value(i) >= *cut)
    };
    // Per source partition: the oldest offset kept. Workers trim by `rows` only when
    // `rows` is set, so every worker still holds its newest `rows` rows ever.
    let mut offset_cutoff: BTreeMap<u32, u64> = BTreeMap::new();
    if let Some(max) = retain.rows {
        let mut offsets: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for c in parts.iter().flat_map(|p| p.chunks.iter()) {
            offsets
                .entry(c.partition)
                .or_default()
                .extend(c.offsets.values().iter().copied());
        }
        for (p, mut all) in offsets {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if all.len() > max {
                let nth = all.len() - max;
                let (_, cut, _) = all.select_nth_unstable(nth);
                offset_cutoff.insert(p, *cut);
            }
        }
    }
    parts
        .iter()
        .map(|part| {
            part.chunks
                .iter()
                .filter_map(|c| {
                    let min_offset = offset_cutoff.get(&c.partition).copied().unwrap_or(0);
                    let keep: BooleanArray = (0..c.batch.num_rows())
                        .map(|i| Some(c.offsets.value(i) >= min_offset && time_ok(c, i)))
                        .collect();
                    if keep.true_count() == keep.len() {
                        return Some((c.partition, c.batch.clone()));
                    }
                    let batch = filter_record_batch(&c.batch, &keep).expect("mask fits the batch");
                    (batch.num_rows() > 0).then_some((c.partition, batch))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::view::view_schema;
    use arrow::array::Int64Array;
    use projector_operators::expr::Expr;
    use projector_operators::projection::FastMap;
    use projector_operators::table::{Retain, TableColumn, TableRow};
    use projector_operators::value::{ColumnType, Value};
    use projector_operators::view::{ViewKind, ViewSpec};

    fn spec(retain: Retain) -> (TableSpec, SchemaRef) {
        let spec = TableSpec {
            filter: None,
            columns: vec![TableColumn {
                name: "x".into(),
                expr: Expr::literal(Value::Null),
                ty: ColumnType::Int64,
            }],
            retain,
        };
        let schema = view_schema(&ViewSpec {
            name: "t".into(),
            kind: ViewKind::Table(spec.clone()),
        });
        (spec, schema)
    }

    fn partitions(states: Vec<(u32, TableState)>) -> BTreeMap<u32, PartitionState> {
        states
            .into_iter()
            .map(|(p, s)| {
                let state = PartitionState {
                    versions: FastMap::default(),
                    stream_versions: Vec::new(),
                    dedup: FastMap::default(),
                    parked: FastMap::default(),
                    redriven: FastMap::default(),
                    views: vec![ViewState::Table(s)],
                };
                (p, state)
            })
            .collect()
    }

    fn table(parts: &BTreeMap<u32, PartitionState>, p: u32) -> &TableState {
        match &parts[&p].views[0] {
            ViewState::Table(t) => t,
            _ => unreachable!(),
        }
    }

    fn table_mut(parts: &mut BTreeMap<u32, PartitionState>, p: u32) -> &mut TableState {
        match &mut parts.get_mut(&p).expect("partition").views[0] {
            ViewState::Table(t) => t,
            _ => unreachable!(),
        }
    }

    fn push(t: &mut TableState, offset: u64, retain: &Retain) {
        t.push(
            TableRow {
                offset,
                time: Some(offset as i64),
                values: Box::new([Value::Int(offset as i64 * 10)]),
            },
            retain,
        );
    }

    /// The `x` values of a list of batches, in order.
    /// Published rows without their partitions.
    fn batches(published: Vec<Vec<(u32, RecordBatch)>>) -> Vec<Vec<RecordBatch>> {
        published
            .into_iter()
            .map(|w| w.into_iter().map(|(_, b)| b).collect())
            .collect()
    }

    fn xs<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> Vec<i64> {
        batches
            .into_iter()
            .flat_map(|b| {
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                col.values().to_vec()
            })
            .collect()
    }

    #[test]
    fn incremental_builds_equal_fresh_ones_with_few_chunks() {
        for retain in [
            Retain::default(),
            Retain {
                rows: Some(300),
                age_ms: None,
            },
            Retain {
                rows: None,
                age_ms: Some(150),
            },
        ] {
            let (spec, schema) = spec(retain);
            let mut parts =
                partitions(vec![(0, TableState::default()), (3, TableState::default())]);
            let mut previous: Option<TablePart> = None;
            let mut offset = 0;
            let mut rng = 7u64;
            for _ in 0..120 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                for _ in 0..(rng >> 58) {
                    let p = if offset % 3 == 0 { 3 } else { 0 };
                    push(table_mut(&mut parts, p), offset, &retain);
                    offset += 1;
                }
                let part = build(&spec, &schema, 0, &parts, previous.as_ref());
                let fresh = build(&spec, &schema, 0, &parts, None);
                for p in [0, 3] {
                    let of = |part: &TablePart| {
                        xs(part
                            .chunks
                            .iter()
                            .filter(|c| c.partition == p)
                            .map(|c| &c.batch))
                    };
                    let want: Vec<i64> = table(&parts, p)
                        .rows
                        .iter()
                        .map(|r| r.offset as i64 * 10)
                        .collect();
                    assert_eq!(of(&part), want, "partition {p}, {retain:?}");
                    assert_eq!(of(&fresh), want);
                    let n = part.chunks.iter().filter(|c| c.partition == p).count();
                    let bound = 2 * (usize::BITS - want.len().leading_zeros()) as usize + 1;
                    assert!(n <= bound, "{n} chunks for {} rows", want.len());
                }
                previous = Some(part);
            }
            assert!(offset > 1_000, "the test appended enough rows ({offset})");
        }
    }

    #[test]
    fn a_new_state_object_is_built_again() {
        let (spec, schema) = spec(Retain::default());
        let mut parts = partitions(vec![(0, TableState::default())]);
        for o in 0..10 {
            push(table_mut(&mut parts, 0), o, &Retain::default());
        }
        let before = build(&spec, &schema, 0, &parts, None);
        // A restore replaces the state: same row numbers, other rows.
        let mut other = TableState::default();
        for o in 100..110 {
            push(&mut other, o, &Retain::default());
        }
        *table_mut(&mut parts, 0) = other;
        let after = build(&spec, &schema, 0, &parts, Some(&before));
        assert_eq!(
            xs(after.chunks.iter().map(|c| &c.batch)),
            (100..110).map(|o| o * 10).collect::<Vec<i64>>()
        );
    }

    #[test]
    fn publish_retains_across_workers() {
        let retain = Retain {
            rows: Some(5),
            age_ms: Some(6),
        };
        let (spec, schema) = spec(retain);
        // Worker A holds the even offsets of partition 0, worker B the odd ones; each
        // trimmed its own share only (by rows: the newest 5 of its own).
        let mut a = TableState::default();
        let mut b = TableState::default();
        for o in 0..20 {
            push(if o % 2 == 0 { &mut a } else { &mut b }, o, &retain);
        }
        let part_a = build(&spec, &schema, 0, &partitions(vec![(0, a)]), None);
        let part_b = build(&spec, &schema, 0, &partitions(vec![(0, b)]), None);
        assert_eq!(
            xs(part_a.chunks.iter().map(|c| &c.batch)),
            [100, 120, 140, 160, 180]
        );
        let published = batches(publish(&spec, &[&part_a, &part_b]));
        let mut all: Vec<i64> = published.iter().flat_map(xs).collect();
        all.sort_unstable();
        // The newest 5 by offset (15..=19), all within 6 ms of the newest time (19).
        assert_eq!(all, [150, 160, 170, 180, 190]);
        // With 3 ms instead, 15 (older than 19 - 3) goes too, and is not replaced.
        let tighter = Retain {
            rows: Some(5),
            age_ms: Some(3),
        };
        let (spec, _) = super::tests::spec(tighter);
        let published = batches(publish(&spec, &[&part_a, &part_b]));
        let mut all: Vec<i64> = published.iter().flat_map(xs).collect();
        all.sort_unstable();
        assert_eq!(all, [160, 170, 180, 190]);

        let by_age = Retain {
            rows: None,
            age_ms: Some(2),
        };
        let (spec, schema) = super::tests::spec(by_age);
        let mut a = TableState::default();
        let mut b = TableState::default();
        for o in 0..10 {
            // Worker A's newest time is 8, B's 9: A trims below 6, B below 7, and the
            // partition's cutoff is 9 - 2 = 7 for both.
            push(if o % 2 == 0 { &mut a } else { &mut b }, o, &by_age);
        }
        let part_a = build(&spec, &schema, 0, &partitions(vec![(0, a)]), None);
        let part_b = build(&spec, &schema, 0, &partitions(vec![(0, b)]), None);
        let published = batches(publish(&spec, &[&part_a, &part_b]));
        assert_eq!(xs(part_a.chunks.iter().map(|c| &c.batch)), [60, 80]);
        assert_eq!(xs(&published[0]), [80], "A kept 6, the publish drops it");
        assert_eq!(xs(&published[1]), [70, 90]);
    }
}
