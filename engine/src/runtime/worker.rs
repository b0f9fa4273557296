//! Workers: each owns the state of the keys routed to it, per unit of source
//! partitions (one partition, or partition N of each of several topics).
//!
//! A worker receives [`WorkerMsg::Batch`]es of decoded events, applies each to every
//! view through the [`Projection`], and on a [`WorkerMsg::Barrier`] hands the
//! coordinator an immutable snapshot of its views for that epoch. No locks on the
//! hot path: the state is the worker's alone.

use crate::runtime::bad_records::{BadRecord, BadRecords};
use crate::runtime::epoch::CoordMsg;
use crate::serve::status::Counters;
use crate::state::units::Units;
use crate::state::view::{
    FoldChunk, WorkerViewData, build_fold_chunk, build_worker_view_from, view_schema,
};
use crossbeam_channel::{Receiver, Sender};
use projector_operators::codec;
use projector_operators::projection::{Outcome, PartitionState, Projection, ViewState};
use projector_operators::value::Value;
use projector_operators::view::{ViewKind, ViewSpec};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A batch of decoded events bound for one worker.
#[derive(Debug, Default)]
pub struct EventBatch {
    raw: Vec<u8>,
    meta: Vec<EventMeta>,
    values: Vec<Value>,
    slots: usize,
}

#[derive(Debug, Clone, Copy)]
struct EventMeta {
    partition: u32,
    offset: u64,
    start: usize,
    end: usize,
    /// The record's key (Kafka, when a dead-letter topic wants it), after the bytes.
    key: Option<(usize, usize)>,
}

impl EventBatch {
    /// An empty batch for events of `slots` fields.
    pub fn with_capacity(slots: usize, events: usize) -> Self {
        EventBatch {
            raw: Vec::with_capacity(events * 160),
            meta: Vec::with_capacity(events),
            values: Vec::with_capacity(events * slots),
            slots,
        }
    }

    /// Appends an event, taking its decoded values (leaving nulls behind).
    pub fn push(
        &mut self,
        partition: u32,
        offset: u64,
        raw: &[u8],
        key: Option<&[u8]>,
        values: &mut [Value],
    ) {
        debug_assert_eq!(values.len(), self.slots);
        let start = self.raw.len();
        self.raw.extend_from_slice(raw);
        let end = self.raw.len();
        let key = key.map(|k| {
            self.raw.extend_from_slice(k);
            (end, self.raw.len())
        });
        self.meta.push(EventMeta {
            partition,
            offset,
            start,
            end,
            key,
        });
        self.values.extend(values.iter_mut().map(std::mem::take));
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
}

/// What the router sends a worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Events to apply.
    Batch(EventBatch),
    /// End of an epoch: publish a snapshot, tagged with the epoch number, and with
    /// `checkpoint`, also the encoded state of every unit.
    Barrier {
        /// The epoch that ends.
        epoch: u64,
        /// Whether this epoch is checkpointed.
        checkpoint: bool,
    },
    /// From now on this worker holds `state` for its keys of unit `partition`
    /// (restored from a checkpoint when the unit became this instance's).
    Restore {
        /// The unit.
        partition: u32,
        /// This worker's share of its state.
        state: PartitionState,
    },
    /// These units are no longer this instance's: drop their state.
    Release(Vec<u32>),
    /// Stop after the messages before this one.
    Stop,
}

/// A worker's views at the end of an epoch.
#[derive(Debug)]
pub(crate) struct WorkerSnapshot {
    /// Which worker.
    pub worker: usize,
    /// Which epoch.
    pub epoch: u64,
    /// One entry per view, in pipeline order.
    pub views: Vec<WorkerViewData>,
    /// For a checkpoint: this worker's piece of each unit's state, encoded.
    pub pieces: Vec<(u32, Vec<u8>)>,
}

/// Everything a worker thread needs.
pub(crate) struct Worker {
    /// This worker's index.
    pub id: usize,
    /// The compiled views.
    pub projection: Arc<Projection>,
    /// Which unit each source partition's events go to, and the partition names (for
    /// dead letters).
    pub units: Arc<Units>,
    /// Incoming batches and barriers.
    pub inbox: Receiver<WorkerMsg>,
    /// Where snapshots go.
    pub snapshots: Sender<CoordMsg>,
    /// Shared totals.
    pub counters: Arc<Counters>,
    /// Shared bad-record handling.
    pub bad: Arc<BadRecords>,
    /// The epoch the first events belong to (dead letters are staged by epoch).
    pub first_epoch: u64,
}

impl Worker {
    /// Moves the shared dedup gauges from this worker's `last` share to its current one
    /// (counted at checkpoints, which walk the state anyway); returns the new share.
    fn report_dedup(
        &self,
        partitions: &BTreeMap<u32, PartitionState>,
        last: (u64, u64),
    ) -> (u64, u64) {
        let now = partitions
            .values()
            .flat_map(|s| s.dedup.values())
            .fold((0u64, 0u64), |(n, b), r| {
                (n + r.len() as u64, b + r.bytes() as u64)
            });
        use std::sync::atomic::Ordering::Relaxed;
        // Two's complement: adding the wrapped difference moves the gauge down too.
        let c = &self.counters;
        c.dedup_ids.fetch_add(now.0.wrapping_sub(last.0), Relaxed);
        c.dedup_bytes.fetch_add(now.1.wrapping_sub(last.1), Relaxed);
        now
    }

    /// The worker loop; returns when told to stop or when the coordinator is gone.
    pub(crate) fn run(self) {
        let mut partitions: BTreeMap<u32, PartitionState> = BTreeMap::new();
        let mut current_epoch = self.first_epoch;
        let mut scratch = self.projection.scratch();
        let n_views = self.projection.views().len();
        let mut cached: Vec<Option<WorkerViewData>> = (0..n_views).map(|_| None).collect();
        let mut dirty = true;
        // Per view, per partition: the batch of each chunk of a fold view's rows.
        let mut chunks: Vec<ChunkCache> = (0..n_views).map(|_| ChunkCache::new()).collect();
        // Size of the last checkpoint piece per partition.
        let mut encoded: BTreeMap<u32, usize> = BTreeMap::new();
        // The dedup ids and bytes last added to the shared gauges.
        let mut reported = (0u64, 0u64);
        while let Ok(msg) = self.inbox.recv() {
            match msg {
                WorkerMsg::Batch(batch) => {
                    let (mut applied, mut dups) = (0u64, 0u64);
                    let slots = batch.slots;
                    for (i, m) in batch.meta.iter().enumerate() {
                        let partition = self.units.partition_name(m.partition);
                        if !self.bad.should_apply(partition, m.offset) {
                            continue; // after `on_error: fail`: only look for an earlier bad record
                        }
                        let event = &batch.values[i * slots..(i + 1) * slots];
                        let state = partitions
                            .entry(self.units.of(m.partition))
                            .or_insert_with(|| self.projection.new_partition_state());
                        let stream = self.units.stream(m.partition);
                        match self.projection.apply_in(
                            state,
                            &mut scratch,
                            event,
                            Some(m.offset),
                            stream,
                        ) {
                            Ok(Outcome::Applied) => applied += 1,
                            Ok(Outcome::Duplicate) => dups += 1,
                            Err(e) => {
                                let message = e.to_string();
                                let code = e.code();
                                self.bad.report(
                                    &self.counters,
                                    BadRecord {
                                        raw: &batch.raw[m.start..m.end],
                                        code,
                                        message: &message,
                                        partition,
                                        offset: m.offset,
                                        key: m.key.map(|(a, b)| &batch.raw[a..b]),
                                        event: Some(event),
                                    },
                                    current_epoch,
                                );
                            }
                        }
                    }
                    dirty |= applied > 0;
                    Counters::add(&self.counters.applied, applied);
                    Counters::add(&self.counters.duplicates, dups);
                }
                WorkerMsg::Barrier { epoch, checkpoint } => {
                    current_epoch = epoch + 1;
                    if self.bad.failed() {
                        // Never answer once the pipeline failed: an epoch that may
                        // hold events after the bad record is never published.
                        continue;
                    }
                    if dirty {
                        for (v, spec) in self.projection.views().iter().enumerate() {
                            let previous = cached[v].take();
                            cached[v] = Some(match spec.kind {
                                ViewKind::Fold(_) => {
                                    refresh_chunks(spec, v, &mut partitions, &mut chunks[v])
                                }
                                _ => {
                                    build_worker_view_from(spec, v, &partitions, previous.as_ref())
                                }
                            });
                        }
                        dirty = false;
                    }
                    let views = cached
                        .iter()
                        .map(|c| c.clone().expect("built above"))
                        .collect();
                    if checkpoint && self.projection.dedup().is_some() {
                        reported = self.report_dedup(&partitions, reported);
                    }
                    let pieces = if checkpoint {
                        partitions
                            .iter()
                            .map(|(p, state)| {
                                // Sized like the last piece: growing a buffer of
                                // tens of MB by doubling copies it over and over.
                                let hint = encoded.get(p).map_or(0, |n| n + n / 8);
                                let mut bytes = Vec::with_capacity(hint);
                                codec::encode(&self.projection, state, &mut bytes);
                                encoded.insert(*p, bytes.len());
                                (*p, bytes)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let snap = WorkerSnapshot {
                        worker: self.id,
                        epoch,
                        views,
                        pieces,
                    };
                    if self.snapshots.send(CoordMsg::Snapshot(snap)).is_err() {
                        return;
                    }
                }
                WorkerMsg::Restore { partition, state } => {
                    partitions.insert(partition, state);
                    chunks.iter_mut().for_each(|c| {
                        c.remove(&partition);
                    });
                    dirty = true;
                }
                WorkerMsg::Release(gone) => {
                    for p in gone {
                        dirty |= partitions.remove(&p).is_some();
                    }
                }
                WorkerMsg::Stop => return,
            }
        }
    }
}

/// One fold view's batches, per partition and chunk (`None`: the chunk has no rows).
type ChunkCache = BTreeMap<u32, Vec<Option<FoldChunk>>>;

/// Brings fold view `v`'s batches up to date, rebuilding only the chunks written since
/// the last call (all of them for a partition not seen before), and returns the view.
fn refresh_chunks(
    spec: &ViewSpec,
    v: usize,
    partitions: &mut BTreeMap<u32, PartitionState>,
    cache: &mut ChunkCache,
) -> WorkerViewData {
    cache.retain(|p, _| partitions.contains_key(p));
    let schema = view_schema(spec);
    for (p, state) in partitions.iter_mut() {
        let ViewState::Fold(rows) = &mut state.views[v] else {
            continue;
        };
        let fresh = !cache.contains_key(p);
        let batches = cache.entry(*p).or_default();
        batches.resize(rows.chunks(), None);
        let changed = rows.take_dirty();
        let rebuild: Vec<usize> = if fresh {
            (0..rows.chunks()).collect()
        } else {
            changed
        };
        for c in rebuild {
            if c < batches.len() {
                batches[c] = build_fold_chunk(spec, &schema, *p, rows.chunk(c));
            }
        }
    }
    WorkerViewData::Fold(cache.values().flatten().flatten().cloned().collect())
}
