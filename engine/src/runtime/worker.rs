//! Workers: each owns the state of the keys routed to it, per unit of source
//! partitions (one partition, or partition N of each of several topics).
//!
//! A worker receives [`WorkerMsg::Batch`]es of decoded events, applies each to every
//! view through the [`Projection`], and on a [`WorkerMsg::Barrier`] hands the
//! coordinator an immutable snapshot of its views for that epoch. No locks on the
//! hot path: the state is the worker's alone.

use crate::Fatal;
use crate::runtime::bad_records::{BadRecord, BadRecords};
use crate::runtime::decoding::{Decoding, RecordIn, Step};
use crate::runtime::epoch::CoordMsg;
use crate::runtime::parking::{ParkBoard, ParkRequest, ParkedInfo, Resolved};
use crate::serve::status::Counters;
use crate::state::units::Units;
use crate::state::view::{
    FoldChunk, WorkerViewData, build_fold_chunk, build_worker_view_from, view_schema,
};
use crossbeam_channel::{Receiver, Sender};
use projector_operators::codec;
use projector_operators::envelope::key_text;
use projector_operators::park::{Header, HeldRecord, Parked};
use projector_operators::projection::{Outcome, PartitionState, Projection, Scratch, ViewState};
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
    /// With `on_error: park`, one per event: what a parked key holds beyond the bytes.
    extras: Vec<Extras>,
}

/// An event's record, as the router hands it to a worker.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    /// Its source partition (index).
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// Its bytes.
    pub raw: &'a [u8],
    /// Its message key (Kafka).
    pub key: Option<&'a [u8]>,
    /// A dead letter being replayed (see `runtime/redrive.rs`).
    pub letter: bool,
    /// A record with a letter already (see `BadRecords::has_letter`).
    pub lettered: bool,
}

/// What a worker needs of a record, beyond its bytes and key, to hold it for a parked
/// key and decode it again later (`on_error: park` only).
#[derive(Debug, Default)]
pub struct Extras {
    tombstone: bool,
    timestamp: Option<i64>,
    headers: Vec<Header>,
    /// It failed before the views (an upcaster, a declared type): code and message.
    error: Option<(&'static str, String)>,
}

impl Extras {
    /// The extras of `rec`, which failed with `error` if given.
    pub(crate) fn of(rec: &RecordIn<'_>, error: Option<(&'static str, String)>) -> Self {
        Extras {
            tombstone: rec.value.is_none(),
            timestamp: rec.timestamp,
            headers: rec
                .headers
                .iter()
                .map(|(n, v)| (Box::from(*n), v.map(Box::from)))
                .collect(),
            error,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct EventMeta {
    partition: u32,
    offset: u64,
    start: usize,
    end: usize,
    /// The record's key (Kafka, when a dead-letter topic wants it), after the bytes.
    key: Option<(usize, usize)>,
    /// A dead letter being replayed (see `runtime/redrive.rs`).
    letter: bool,
    /// A record read again from the source that has a letter already: applied, it
    /// counts as that letter replayed.
    lettered: bool,
}

impl EventBatch {
    /// An empty batch for events of `slots` fields.
    pub fn with_capacity(slots: usize, events: usize) -> Self {
        EventBatch {
            raw: Vec::with_capacity(events * 160),
            meta: Vec::with_capacity(events),
            values: Vec::with_capacity(events * slots),
            slots,
            extras: Vec::new(),
        }
    }

    /// Appends an event, taking its decoded values (leaving nulls behind); `extras`
    /// with `on_error: park` (then for every event).
    pub fn push(&mut self, event: EventRef<'_>, values: &mut [Value], extras: Option<Extras>) {
        if let Some(x) = extras {
            debug_assert_eq!(self.extras.len(), self.meta.len());
            self.extras.push(x);
        }
        debug_assert_eq!(values.len(), self.slots);
        let start = self.raw.len();
        self.raw.extend_from_slice(event.raw);
        let end = self.raw.len();
        let key = event.key.map(|k| {
            self.raw.extend_from_slice(k);
            (end, self.raw.len())
        });
        self.meta.push(EventMeta {
            partition: event.partition,
            offset: event.offset,
            start,
            end,
            key,
            letter: event.letter,
            lettered: event.lettered,
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
        state: Box<PartitionState>,
    },
    /// These units are no longer this instance's: drop their state.
    Release(Vec<u32>),
    /// Retry or skip a parked key, if this worker holds it.
    Park(ParkRequest),
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
    /// How records become events: a parked key's records are decoded again on retry.
    pub decoding: Arc<Decoding>,
    /// `park.max_held`.
    pub max_held: usize,
    /// Where this worker lists its parked keys.
    pub board: Arc<ParkBoard>,
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

    /// This worker's parked keys, for `/parked`.
    fn parked_keys(&self, partitions: &BTreeMap<u32, PartitionState>) -> Vec<ParkedInfo> {
        partitions
            .iter()
            .flat_map(|(unit, state)| {
                let unit = self.units.name(*unit);
                state
                    .parked
                    .iter()
                    .map(move |(key, p)| ParkedInfo::of(key, unit, p))
            })
            .collect()
    }

    /// Retries (or skips the failing event of) `request.key` in every unit where this
    /// worker holds it parked: its records are decoded again and applied in order, until
    /// one fails (which parks the key again there, holding the rest). `None`: this
    /// worker holds no such key.
    fn resolve(
        &self,
        partitions: &mut BTreeMap<u32, PartitionState>,
        scratch: &mut Scratch,
        request: &ParkRequest,
        epoch: u64,
    ) -> Option<Resolved> {
        let key = request.key.as_str();
        let mut resolved: Option<Resolved> = None;
        let mut slots = vec![Value::Null; self.decoding.slots()];
        let mut copied = Vec::new();
        for (unit, state) in partitions.iter_mut() {
            let Some(parked) = state.parked.remove(key) else {
                continue;
            };
            touch_rows(state, key);
            let done = resolved.get_or_insert_with(|| Resolved {
                key: key.to_string(),
                ..Resolved::default()
            });
            let (code, message) = (parked.code.clone(), parked.message.clone());
            let mut records = parked.into_records();
            if request.skip {
                let failing = records.next().expect("a parked key has its failing event");
                let message = format!("skipped while parked: {code}: {message}");
                self.bad.report(
                    &self.counters,
                    BadRecord {
                        raw: failing.value.as_deref().unwrap_or_default(),
                        code: "park.skipped",
                        message: &message,
                        partition: &failing.partition,
                        offset: failing.offset,
                        key: failing.key.as_deref(),
                        event: None,
                    },
                    epoch,
                );
                done.skipped = Some(failing.offset);
            }
            while let Some(record) = records.next() {
                match self.redo(state, scratch, key, &record, &mut slots, &mut copied) {
                    Ok(true) => done.applied += 1,
                    Ok(false) => done.dropped += 1,
                    Err((code, message)) => {
                        let mut again = Parked::new(code, &message, record);
                        again.held.extend(records);
                        done.parked = Some(ParkedInfo::of(key, self.units.name(*unit), &again));
                        state.parked.insert(Arc::from(key), again);
                        touch_rows(state, key);
                        break;
                    }
                }
            }
        }
        if let Some(done) = &resolved {
            Counters::add(&self.counters.applied, done.applied);
            Counters::add(&self.counters.duplicates, done.dropped);
        }
        resolved
    }

    /// Decodes a held record of `key` again and applies it: `Ok(true)` applied,
    /// `Ok(false)` dropped (a duplicate, or nothing for the views), `Err` why it fails.
    fn redo(
        &self,
        state: &mut PartitionState,
        scratch: &mut Scratch,
        key: &str,
        record: &HeldRecord,
        slots: &mut [Value],
        copied: &mut Vec<Value>,
    ) -> Result<bool, (&'static str, String)> {
        let names = self.units.partition_names();
        let Some(partition) = names.iter().position(|n| **n == *record.partition) else {
            let message = format!(
                "partition {} is not read by the pipeline any more: skip the event",
                record.partition
            );
            return Err(("park.unknown_partition", message));
        };
        let partition = partition as u32;
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(n, v)| (&**n, v.as_deref()))
            .collect();
        let rec = RecordIn {
            partition,
            offset: record.offset,
            value: record.value.as_deref(),
            key: record.key.as_deref(),
            timestamp: record.timestamp,
            headers: &headers,
        };
        let stream = self.units.stream(partition);
        match self
            .decoding
            .decode(&rec, usize::from(stream), slots, copied)
        {
            Step::Event => {}
            Step::Ignored => return Ok(false),
            Step::Bad { code, message, .. } => return Err((code, message)),
            Step::RegistryDown(why) => return Err(("registry.unavailable", why)),
        }
        let now = self
            .projection
            .key(slots)
            .map_err(|e| (e.code(), e.to_string()))?;
        let now = key_text(now).expect("key() checked the kind");
        if now != key {
            let message =
                format!("decoded again, the event's key is '{now}', not '{key}': skip the event");
            return Err(("park.key_changed", message));
        }
        match self
            .projection
            .apply_in(state, scratch, slots, Some(record.offset), stream)
        {
            Ok(Outcome::Applied) => Ok(true),
            Ok(Outcome::Duplicate) => Ok(false),
            Err(e) => Err((e.code(), e.to_string())),
        }
    }

    /// Applies a replayed dead letter unless `state` lists it as replayed already, and
    /// lists it; true when it changed the views.
    fn replay(
        &self,
        state: &mut PartitionState,
        scratch: &mut Scratch,
        event: &[Value],
        m: &EventMeta,
        stream: u16,
    ) -> bool {
        let counts = &self.counters.redrive;
        let partition = self.units.partition_name(m.partition);
        let key = self.projection.key(event).ok().and_then(key_text);
        let key = key.expect("routed by its key");
        let id = (stream, m.offset);
        if state.redriven.get(&*key).is_some_and(|l| l.contains(&id)) {
            Counters::add(&counts.before, 1);
            return false;
        }
        if state.parked.contains_key(&*key) {
            let message = "its key is parked: retry or skip the key, then replay again";
            counts.fail(partition, m.offset, "park.parked", message);
            return false;
        }
        let applied = match self
            .projection
            .apply_in(state, scratch, event, Some(m.offset), stream)
        {
            Ok(Outcome::Applied) => true,
            Ok(Outcome::Duplicate) => false,
            Err(e) => {
                counts.fail(partition, m.offset, e.code(), &e.to_string());
                return false;
            }
        };
        Counters::add(
            if applied {
                &counts.applied
            } else {
                &counts.dropped
            },
            1,
        );
        note_replayed(state, &self.projection, event, stream, m.offset);
        applied
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
        // A key was parked, held an event or was resumed since the last epoch.
        let mut parked_changed = false;
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
                        if m.letter {
                            dirty |= self.replay(state, &mut scratch, event, m, stream);
                            continue;
                        }
                        let extras = batch.extras.get(i);
                        if let Some(x) = extras
                            && (x.error.is_some() || !state.parked.is_empty())
                        {
                            let held = || held_record(partition, m, &batch.raw, x);
                            let key = self.projection.key(event).ok().and_then(key_text);
                            let key = key.expect("routed by its key");
                            if let Some(p) = state.parked.get_mut(&*key) {
                                if p.held.len() >= self.max_held {
                                    self.bad.stop(Fatal::ParkFull {
                                        key: key.into_owned(),
                                        unit: self.units.name(self.units.of(m.partition)).into(),
                                        code: p.code.to_string(),
                                        partition: p.failing.partition.to_string(),
                                        offset: p.failing.offset,
                                        max_held: self.max_held,
                                    });
                                    continue;
                                }
                                p.held.push_back(held());
                                Counters::add(&self.counters.parked, 1);
                                parked_changed = true;
                                continue;
                            }
                            if let Some((code, message)) = &x.error {
                                park(state, &key, code, message, held());
                                Counters::add(&self.counters.parked, 1);
                                (dirty, parked_changed) = (true, true);
                                continue;
                            }
                        }
                        match self.projection.apply_in(
                            state,
                            &mut scratch,
                            event,
                            Some(m.offset),
                            stream,
                        ) {
                            Ok(outcome) => {
                                match outcome {
                                    Outcome::Applied => applied += 1,
                                    Outcome::Duplicate => dups += 1,
                                }
                                if m.lettered {
                                    note_replayed(state, &self.projection, event, stream, m.offset);
                                }
                            }
                            Err(e) if extras.is_some() => {
                                let key = self.projection.key(event).ok().and_then(key_text);
                                let key = key.expect("routed by its key");
                                let held = held_record(partition, m, &batch.raw, &batch.extras[i]);
                                park(state, &key, e.code(), &e.to_string(), held);
                                Counters::add(&self.counters.parked, 1);
                                (dirty, parked_changed) = (true, true);
                            }
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
                    if parked_changed {
                        self.board.set(self.id, self.parked_keys(&partitions));
                        parked_changed = false;
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
                    parked_changed |= !state.parked.is_empty();
                    partitions.insert(partition, *state);
                    chunks.iter_mut().for_each(|c| {
                        c.remove(&partition);
                    });
                    dirty = true;
                }
                WorkerMsg::Release(gone) => {
                    for p in gone {
                        dirty |= partitions.remove(&p).is_some();
                    }
                    parked_changed = true;
                }
                WorkerMsg::Park(request) => {
                    let resolved =
                        self.resolve(&mut partitions, &mut scratch, &request, current_epoch);
                    if resolved.is_some() {
                        (dirty, parked_changed) = (true, true);
                    }
                    let _ = request.reply.send(resolved);
                }
                WorkerMsg::Stop => return,
            }
        }
    }
}

/// Lists the letter of `event` (at `offset` of `stream`) as replayed into its key's
/// state, so no replay applies it again.
fn note_replayed(
    state: &mut PartitionState,
    projection: &Projection,
    event: &[Value],
    stream: u16,
    offset: u64,
) {
    let Some(key) = projection.key(event).ok().and_then(key_text) else {
        return;
    };
    match state.redriven.get_mut(&*key) {
        Some(l) => l.push((stream, offset)),
        None => {
            state
                .redriven
                .insert(Arc::from(&*key), vec![(stream, offset)]);
        }
    }
}

/// Parks `key` in `state` on `failing`, which failed with `code` and `message`.
fn park(state: &mut PartitionState, key: &str, code: &str, message: &str, failing: HeldRecord) {
    state
        .parked
        .insert(Arc::from(key), Parked::new(code, message, failing));
    touch_rows(state, key);
}

/// Marks `key`'s fold rows changed, so their `_parked` column is built again.
fn touch_rows(state: &mut PartitionState, key: &str) {
    for view in &mut state.views {
        if let ViewState::Fold(rows) = view {
            rows.get_mut(key);
        }
    }
}

/// The record behind event `m` of a batch (whose bytes are in `raw`), of `partition`.
fn held_record(partition: &str, m: &EventMeta, raw: &[u8], x: &Extras) -> HeldRecord {
    HeldRecord {
        partition: Arc::from(partition),
        offset: m.offset,
        value: (!x.tombstone).then(|| raw[m.start..m.end].into()),
        key: m.key.map(|(a, b)| raw[a..b].into()),
        timestamp: x.timestamp,
        headers: x.headers.clone(),
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
        let PartitionState { views, parked, .. } = state;
        let ViewState::Fold(rows) = &mut views[v] else {
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
                batches[c] = build_fold_chunk(spec, &schema, *p, rows.chunk(c), parked);
            }
        }
    }
    WorkerViewData::Fold(cache.values().flatten().flatten().cloned().collect())
}
