//! The ingest thread: polls the source, decodes each record, checks its envelope and
//! routes it by key to its worker; and the epoch-cutting state it shares with the timer.

use super::owner::Owner;
use super::pipeline::{BATCH, Shared};
use crate::config::OnTombstone;
use crate::runtime::bad_records::BadRecord;
use crate::runtime::epoch::CoordMsg;
use crate::runtime::router::Router;
use crate::runtime::worker::WorkerMsg;
use crate::serve::status::Counters;
use crate::state::units::Units;
use crate::{Error, Fatal, Result};
use crossbeam_channel::Sender;
use projector_connectors::{Poll, RawBatch, Source};
use projector_operators::decode::{DecodeError, Decoded, RecordDecoder, RecordParts};
use projector_operators::envelope::{TOMBSTONE_TYPE, key_text};
use projector_operators::fields::{FieldRegistry, KafkaField};
use projector_operators::projection::Projection;
use projector_operators::upcast::{Upcast, Upcasters};
use projector_operators::value::{ColumnType, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest an idle ingest thread waits for the source before it looks at the stop
/// flag, the source's own events (rebalances) and the high watermarks again.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The epoch-cutting side shared by the ingest thread and the timer.
pub(super) struct Ingress {
    pub(super) router: Router,
    pub(super) coord: Sender<CoordMsg>,
    pub(super) epoch: u64,
    pub(super) offsets: Vec<u64>,
    pub(super) cut_offsets: Vec<u64>,
    pub(super) finished: bool,
    /// Cut an epoch even if no offset moved (to publish restored state).
    pub(super) force: bool,
    /// `None`: checkpoints are off (stdin cannot be replayed).
    pub(super) checkpoint_every: Option<Duration>,
    pub(super) last_checkpoint: Instant,
    /// An epoch was cut since the last checkpoint.
    pub(super) uncheckpointed: bool,
    /// Per partition: this instance owns it (always, for sources that are not shared;
    /// while assigned, for a consumer group).
    pub(super) owned: Vec<bool>,
    /// Per partition: its next offset is known (restored, or a record was read), so a
    /// checkpoint may record it. A partition starting at `latest` has no known offset
    /// until its first record; recording 0 would replay the whole topic.
    pub(super) known: Vec<bool>,
    /// The units of the partitions.
    pub(super) units: Arc<Units>,
}

impl Ingress {
    /// Cuts an epoch at the current offsets. It is checkpointed when `checkpoint` is
    /// set, at the end of the input, or when the checkpoint interval has passed.
    pub(super) fn barrier(&mut self, last: bool, checkpoint: bool) -> Result<()> {
        self.epoch += 1;
        let epoch = self.epoch;
        let checkpoint = self
            .checkpoint_every
            .is_some_and(|every| checkpoint || last || self.last_checkpoint.elapsed() >= every);
        if checkpoint {
            self.last_checkpoint = Instant::now();
        }
        self.uncheckpointed = !checkpoint;
        let owned = (0..self.offsets.len())
            .filter(|&p| self.owned[p] && self.known[p])
            .map(|p| (p as u32, self.offsets[p]))
            .collect();
        let present = (0..self.offsets.len())
            .filter(|&p| self.owned[p])
            .map(|p| self.units.of(p as u32))
            .collect();
        self.coord
            .send(CoordMsg::Epoch {
                epoch,
                offsets: self.offsets.clone(),
                owned,
                present,
                last,
                checkpoint,
            })
            .map_err(|_| Error::Stopped)?;
        self.router
            .broadcast(|| WorkerMsg::Barrier { epoch, checkpoint })
            .map_err(|_| Error::Stopped)?;
        self.cut_offsets.clone_from(&self.offsets);
        self.finished |= last;
        self.force = false;
        Ok(())
    }
}

/// How the ingest thread turns records into events.
pub(super) struct Decoding {
    /// Per stream (topic) when topics have their own format or envelope, else one.
    pub(super) decoders: Vec<RecordDecoder>,
    /// Per stream: envelope slots to fill from the topic's own fields, (from, to);
    /// empty when topics have no settings of their own.
    pub(super) normalize: Vec<Vec<(Option<usize>, usize)>>,
    pub(super) on_tombstone: OnTombstone,
    pub(super) kafka: KafkaFields,
    /// The slots whose fields have a declared type (`fields:`), with it and the path.
    pub(super) declared: Vec<(usize, ColumnType, String)>,
    /// `upcast:`: old versions of events brought to the newest shape.
    pub(super) upcasters: Upcasters,
}

/// Polls `source` until it is exhausted or the pipeline stops; `owner` has the
/// ingress, the shared state, the projection and the partition names.
pub(super) fn ingest_loop(mut source: Box<dyn Source>, decoding: Decoding, owner: &Owner) {
    let Decoding {
        decoders,
        normalize,
        on_tombstone,
        kafka,
        declared,
        upcasters,
    } = decoding;
    let envelope = owner.projection.envelope().clone();
    let (projection, ingress, shared, names): (&Projection, &Mutex<Ingress>, &Shared, &[String]) = (
        &owner.projection,
        &owner.ingress,
        &owner.shared,
        owner.units.partition_names(),
    );
    let mut raw = RawBatch::default();
    let mut slots = vec![Value::Null; decoders[0].slots()];
    let reads_headers = decoders.iter().any(RecordDecoder::reads_headers);
    let mut copied: Vec<Value> = Vec::new();
    let mut last_marks = Instant::now();
    let mut paused = false;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if shared.bad.failed() {
            // Hand the workers what is pending: records before the bad one may hold an
            // earlier bad record, which `on_error: fail` must name instead.
            let _ = ingress.lock().expect("ingress lock").router.flush();
            return;
        }
        report_checkpointed(shared, source.as_mut());
        if let Err(e) = owner.drop_fenced() {
            if let Error::Fatal(f) = e {
                shared.set_fatal(f);
            }
            return;
        }
        if last_marks.elapsed() >= Duration::from_millis(500) {
            last_marks = Instant::now();
            shared
                .positions
                .set_high_watermarks(&source.high_watermarks());
        }
        // Backpressure: while a worker is behind, a full channel blocks the ingest
        // thread, so the source is not polled and its fetching stops at its own bound
        // (Kafka: librdkafka's prefetch limit). Counted here for /status.
        let congested = ingress.lock().expect("ingress lock").router.congested();
        if congested != paused {
            paused = congested;
            shared
                .counters
                .paused
                .store(u64::from(paused), Ordering::Relaxed);
            if paused {
                Counters::add(&shared.counters.pauses, 1);
            }
        }
        raw.clear();
        let poll = source.poll(&mut raw, BATCH);
        *shared.degraded.lock().expect("lock") = source.degraded();
        let poll = match poll {
            Ok(p) => p,
            Err(e) => {
                shared.set_fatal(Fatal::Source(std::sync::Arc::new(e)));
                return;
            }
        };
        if !raw.is_empty() {
            if shared.first_read_us.load(Ordering::Relaxed) == 0 {
                let us = shared.started.elapsed().as_micros().max(1) as u64;
                shared.first_read_us.store(us, Ordering::Relaxed);
            }
            let mut ing = ingress.lock().expect("ingress lock");
            Counters::add(&shared.counters.read, raw.len() as u64);
            // The epoch these records belong to: its barrier is not cut yet.
            let epoch = ing.epoch + 1;
            let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
            for (i, rec) in raw.records.iter().enumerate() {
                if !ing.owned[rec.partition as usize] {
                    // Taken over by another instance (see Owner::drop_fenced).
                    continue;
                }
                let bytes = raw.bytes(rec);
                let key = raw.key(i);
                ing.offsets[rec.partition as usize] = rec.offset + 1;
                ing.known[rec.partition as usize] = true;
                let partition = names[rec.partition as usize].as_str();
                let report = |code: &'static str, message: &str, event: Option<&[Value]>| {
                    let r = BadRecord {
                        raw: bytes,
                        code,
                        message,
                        partition,
                        offset: rec.offset,
                        key,
                        event,
                    };
                    shared.bad.report(&shared.counters, r, epoch);
                };
                let stream = usize::from(owner.units.stream(rec.partition));
                let decoder = &decoders[stream.min(decoders.len() - 1)];
                if reads_headers {
                    headers.clear();
                    headers.extend(raw.headers_of(i));
                }
                let parts = RecordParts {
                    value: (!rec.tombstone).then_some(bytes),
                    key,
                    headers: &headers,
                };
                let decoded = match decoder.decode(&parts, &mut slots) {
                    Ok(d) => d,
                    Err(DecodeError::RegistryUnavailable(why)) => {
                        // Not the record's fault: stop before it (it is not read), and
                        // resume from the checkpoint once the registry is back.
                        ing.offsets[rec.partition as usize] = rec.offset;
                        shared.set_fatal(Fatal::Registry(why));
                        return;
                    }
                    Err(e) => {
                        report(e.code(), &e.to_string(), None);
                        continue;
                    }
                };
                if !kafka.fields.is_empty() {
                    kafka.fill(&mut slots, &raw, i);
                }
                // This topic's envelope, where the pipeline's reads it (every value read
                // before any is written: one role's source may be another's target).
                let copies = normalize.get(stream).map_or(&[][..], Vec::as_slice);
                copied.clear();
                copied.extend(
                    copies
                        .iter()
                        .map(|&(from, _)| from.map_or(Value::Null, |f| slots[f].clone())),
                );
                for (&(_, to), v) in copies.iter().zip(copied.drain(..)) {
                    slots[to] = v;
                }
                if !upcasters.is_empty() {
                    match upcasters.apply(&mut slots) {
                        Ok(Upcast::Kept) => {}
                        Ok(Upcast::Dropped) => {
                            Counters::add(&shared.counters.ignored, 1);
                            continue;
                        }
                        Err(e) => {
                            report(e.code(), &e.to_string(), Some(&slots));
                            continue;
                        }
                    }
                }
                if let Some(message) = coerce_declared(&declared, &mut slots) {
                    report("apply.type_mismatch", &message, Some(&slots));
                    continue;
                }
                let type_slot = envelope.event_type.index();
                match decoded {
                    Decoded::Event => {
                        if matches!(&slots[type_slot], Value::Str(t) if &**t == TOMBSTONE_TYPE) {
                            let message = format!(
                                "the event type '{TOMBSTONE_TYPE}' is reserved for tombstones"
                            );
                            report("apply.bad_event_type", &message, Some(&slots));
                            continue;
                        }
                    }
                    Decoded::Ignore => {
                        Counters::add(&shared.counters.ignored, 1);
                        continue;
                    }
                    Decoded::Tombstone | Decoded::Delete if on_tombstone == OnTombstone::Ignore => {
                        Counters::add(&shared.counters.ignored, 1);
                        continue;
                    }
                    Decoded::Tombstone => {
                        // No value: the key is the message key.
                        let text = key.and_then(|k| std::str::from_utf8(k).ok());
                        let Some(text) = text else {
                            let message = "a tombstone (null value) needs a UTF-8 message key \
                                           to know which row to delete";
                            report("apply.missing_key", message, None);
                            continue;
                        };
                        slots[envelope.key.index()] = Value::Str(text.into());
                        slots[type_slot] = Value::Str(TOMBSTONE_TYPE.into());
                    }
                    Decoded::Delete => {
                        slots[type_slot] = Value::Str(TOMBSTONE_TYPE.into());
                    }
                }
                let w = match projection.key(&slots) {
                    Ok(k) => ing
                        .router
                        .worker_of(&key_text(k).expect("key() checked it")),
                    Err(e) => {
                        report(e.code(), &e.to_string(), Some(&slots));
                        continue;
                    }
                };
                if ing
                    .router
                    .push(w, rec.partition, rec.offset, bytes, key, &mut slots)
                    .is_err()
                {
                    shared.lost_thread();
                    return;
                }
            }
            if raw.len() < BATCH && ing.router.flush().is_err() {
                shared.lost_thread();
                return;
            }
            let offsets = ing.offsets.clone();
            drop(ing);
            shared.positions.set_read(&offsets);
        }
        match poll {
            Poll::Ready => {}
            Poll::Idle => source.wait(IDLE_WAIT),
            Poll::Exhausted => {
                {
                    let mut ing = ingress.lock().expect("ingress lock");
                    if ing.barrier(true, true).is_err() {
                        shared.lost_thread();
                        return;
                    }
                }
                // Hand the final checkpoint's offsets to the source before leaving.
                while !shared.progress.get().finished
                    && shared.fatal().is_none()
                    && !shared.stop.load(Ordering::Relaxed)
                {
                    shared.progress.wait(Duration::from_millis(20));
                }
                report_checkpointed(shared, source.as_mut());
                return;
            }
        }
    }
}

/// Converts the fields with a declared type; the error message of the first that does
/// not convert.
fn coerce_declared(
    declared: &[(usize, ColumnType, String)],
    slots: &mut [Value],
) -> Option<String> {
    for (slot, ty, path) in declared {
        match slots[*slot].coerce_declared(*ty) {
            Ok(v) => slots[*slot] = v,
            Err(e) => return Some(format!("field '{path}' is declared {ty}: {e}")),
        }
    }
    None
}

/// Fills the slots of `$kafka.*` fields from a record's metadata.
pub(super) struct KafkaFields {
    fields: Vec<(usize, KafkaField)>,
    /// Per source partition: its topic and partition number (Kafka names them
    /// `topic/number`).
    partitions: Vec<(Value, Value)>,
}

impl KafkaFields {
    pub(super) fn new(fields: &FieldRegistry, names: &[String]) -> Self {
        let partitions = names
            .iter()
            .map(|n| match n.rsplit_once('/') {
                Some((t, p)) => (
                    Value::Str(t.into()),
                    p.parse::<i64>().map_or(Value::Null, Value::Int),
                ),
                None => (Value::Null, Value::Null),
            })
            .collect();
        KafkaFields {
            fields: fields.kafka_fields(),
            partitions,
        }
    }

    fn fill(&self, slots: &mut [Value], raw: &RawBatch, i: usize) {
        let text = |b: Option<&[u8]>| {
            b.and_then(|b| std::str::from_utf8(b).ok())
                .map_or(Value::Null, |s| Value::Str(s.into()))
        };
        let rec = &raw.records[i];
        for (slot, field) in &self.fields {
            slots[*slot] = match field {
                KafkaField::Key => text(raw.key(i)),
                KafkaField::Timestamp => raw.timestamp(i).map_or(Value::Null, Value::Int),
                KafkaField::Topic => self.partitions[rec.partition as usize].0.clone(),
                KafkaField::Partition => self.partitions[rec.partition as usize].1.clone(),
                KafkaField::Offset => i64::try_from(rec.offset).map_or(Value::Null, Value::Int),
                KafkaField::Header(name) => text(raw.header(i, name)),
            };
        }
    }
}

/// Hands the offsets of the newest durable checkpoint, if there is a new one, to the
/// source (Kafka commits them to the consumer group for lag monitoring).
fn report_checkpointed(shared: &Shared, source: &mut dyn Source) {
    let durable = shared.durable.lock().expect("durable offsets lock").take();
    if let Some(offsets) = durable {
        source.checkpointed(&offsets);
    }
}
