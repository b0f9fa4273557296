//! The ingest thread: polls the source, decodes each record ([`super::decoding`]),
//! and routes it by key to its worker; and the epoch-cutting state it shares with the timer.

use super::decoding::{Decoding, RecordIn, Step};
use super::owner::Owner;
use super::pipeline::{BATCH, Shared};
use crate::runtime::bad_records::BadRecord;
use crate::runtime::epoch::CoordMsg;
use crate::runtime::router::Router;
use crate::runtime::worker::{EventRef, Extras, WorkerMsg};
use crate::serve::status::Counters;
use crate::state::units::Units;
use crate::{Error, Fatal, Result};
use crossbeam_channel::Sender;
use projector_connectors::dead_letter::StoredDeadLetter;
use projector_connectors::{Poll, RawBatch, Source};
use projector_operators::envelope::key_text;
use projector_operators::projection::Projection;
use projector_operators::value::Value;
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
    /// Dead letters to replay (partition, letter), before the source's next records.
    pub(super) letters: std::collections::VecDeque<(u32, StoredDeadLetter)>,
    /// The epoch the last letters replayed belong to: the next ones wait for its cut.
    pub(super) letters_epoch: u64,
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

/// Polls `source` until it is exhausted or the pipeline stops; `owner` has the
/// ingress, the shared state, the projection and the partition names.
pub(super) fn ingest_loop(mut source: Box<dyn Source>, decoding: &Decoding, owner: &Owner) {
    let (projection, ingress, shared, names): (&Projection, &Mutex<Ingress>, &Shared, &[String]) = (
        &owner.projection,
        &owner.ingress,
        &owner.shared,
        owner.units.partition_names(),
    );
    // `on_error: park`: a bad event whose key can be read parks the key, in its worker.
    let park = shared.bad.parks();
    let mut raw = RawBatch::default();
    let mut slots = vec![Value::Null; decoding.slots()];
    let reads_headers = decoding.reads_headers() || park;
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
        if shared.hold.load(Ordering::SeqCst) {
            shared.holding.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        shared.holding.store(false, Ordering::SeqCst);
        let stop_at = shared.stop_at.lock().expect("stop_at lock").clone();
        if let Some(ends) = &stop_at {
            let mut ing = ingress.lock().expect("ingress lock");
            // Every partition owned (this instance reads them all: a rebuild runs alone)
            // and read to its end.
            let reached = (0..ing.offsets.len())
                .all(|p| ing.owned[p] && ing.offsets[p] >= ends.get(p).copied().unwrap_or(0));
            if reached && ing.letters.is_empty() {
                let cut = ing.barrier(true, true);
                drop(ing);
                finish(cut, shared, source.as_mut());
                return;
            }
        }
        {
            // Dead letters to replay go first: they are older than anything the source
            // reads next.
            let mut ing = ingress.lock().expect("ingress lock");
            if !ing.letters.is_empty() && ing.epoch < ing.letters_epoch {
                // One batch of letters per epoch: each is published and checkpointed
                // on its own, so a long replay shows progress and resumes near where
                // it stopped.
                drop(ing);
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            if !ing.letters.is_empty() {
                ing.letters_epoch = ing.epoch + 1;
                let mut replay = Replay {
                    decoding,
                    projection,
                    shared,
                    names,
                    units: &owner.units,
                    park,
                };
                if replay.batch(&mut ing, &mut slots, &mut copied).is_err() {
                    shared.lost_thread();
                    return;
                }
                continue;
            }
        }
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
            let mut oversize = 0;
            for (i, rec) in raw.records.iter().enumerate() {
                if !ing.owned[rec.partition as usize] {
                    // Taken over by another instance (see Owner::drop_fenced).
                    continue;
                }
                if let Some(ends) = &stop_at
                    && rec.offset >= ends.get(rec.partition as usize).copied().unwrap_or(0)
                {
                    // Past where this run's input ends: the next run reads it.
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
                if let Some(o) = raw.oversize_of(i, &mut oversize) {
                    // Only a prefix was kept: the record cannot be decoded.
                    let message = format!(
                        "the record has {} bytes, more than the source's max_record_bytes \
                         ({}); the dead letter keeps its first {} bytes, and all its bytes \
                         have the SHA-256 {}",
                        o.bytes,
                        o.limit,
                        bytes.len(),
                        o.sha256
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    );
                    report("record.too_large", &message, None);
                    continue;
                }
                let stream = usize::from(owner.units.stream(rec.partition));
                if reads_headers {
                    headers.clear();
                    headers.extend(raw.headers_of(i));
                }
                let record = RecordIn {
                    partition: rec.partition,
                    offset: rec.offset,
                    value: (!rec.tombstone).then_some(bytes),
                    key,
                    timestamp: raw.timestamp(i),
                    headers: &headers,
                };
                let mut error = None;
                match decoding.decode(&record, stream, &mut slots, &mut copied) {
                    Step::Event => {}
                    Step::Ignored => {
                        Counters::add(&shared.counters.ignored, 1);
                        continue;
                    }
                    Step::RegistryDown(why) => {
                        // Not the record's fault: stop before it (it is not read), and
                        // resume from the checkpoint once the registry is back.
                        ing.offsets[rec.partition as usize] = rec.offset;
                        shared.set_fatal(Fatal::Registry(why));
                        return;
                    }
                    Step::Bad {
                        code,
                        message,
                        decoded,
                    } => {
                        if !(park && decoded && projection.key(&slots).is_ok()) {
                            report(code, &message, decoded.then_some(&slots[..]));
                            continue;
                        }
                        error = Some((code, message));
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
                let extras = park.then(|| Extras::of(&record, error));
                let event = EventRef {
                    partition: rec.partition,
                    offset: rec.offset,
                    raw: bytes,
                    key,
                    letter: false,
                    lettered: shared.bad.has_letter(partition, rec.offset),
                };
                if ing.router.push(w, event, &mut slots, extras).is_err() {
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
                let cut = ingress.lock().expect("ingress lock").barrier(true, true);
                finish(cut, shared, source.as_mut());
                return;
            }
        }
    }
}

/// Dead letters replayed per epoch at most.
const LETTERS_PER_EPOCH: usize = 4 * BATCH;

/// Replays dead letters: decodes them like records and routes them, marked, to the
/// workers (which apply each once, see [`super::redrive`]).
struct Replay<'a> {
    decoding: &'a Decoding,
    projection: &'a Projection,
    shared: &'a Shared,
    names: &'a [String],
    units: &'a Units,
    park: bool,
}

impl Replay<'_> {
    /// Replays up to a batch of the queued letters.
    fn batch(
        &mut self,
        ing: &mut Ingress,
        slots: &mut [Value],
        copied: &mut Vec<Value>,
    ) -> std::result::Result<(), crate::runtime::router::Disconnected> {
        let counts = &self.shared.counters.redrive;
        for _ in 0..LETTERS_PER_EPOCH {
            let Some((p, letter)) = ing.letters.pop_front() else {
                break;
            };
            if !ing.owned[p as usize] {
                continue; // given up meanwhile: whoever owns it now replays it
            }
            let partition = self.names[p as usize].as_str();
            let key = letter.key.as_deref();
            let record = RecordIn {
                partition: p,
                offset: letter.offset,
                // A letter of a tombstone has no bytes, only its key.
                value: (!(letter.raw.is_empty() && key.is_some())).then_some(&letter.raw[..]),
                key,
                timestamp: None,
                headers: &[],
            };
            let stream = usize::from(self.units.stream(p));
            let failed = |code: &str, message: &str| {
                counts.fail(partition, letter.offset, code, message);
            };
            match self.decoding.decode(&record, stream, slots, copied) {
                Step::Event => {}
                Step::Ignored => {
                    Counters::add(&counts.dropped, 1);
                    continue;
                }
                Step::Bad { code, message, .. } => {
                    failed(code, &message);
                    continue;
                }
                Step::RegistryDown(why) => {
                    failed("registry.unavailable", &why);
                    continue;
                }
            }
            let w = match self.projection.key(slots) {
                Ok(k) => ing
                    .router
                    .worker_of(&key_text(k).expect("key() checked it")),
                Err(e) => {
                    failed(e.code(), &e.to_string());
                    continue;
                }
            };
            let extras = self.park.then(|| Extras::of(&record, None));
            let event = EventRef {
                partition: p,
                offset: letter.offset,
                raw: &letter.raw,
                key,
                letter: true,
                lettered: false,
            };
            ing.router.push(w, event, slots, extras)?;
        }
        ing.force = true;
        ing.router.flush()
    }
}

/// The end of this run's input: after the last epoch was `cut`, waits until it is
/// published and checkpointed, and hands the final checkpoint's offsets to the source.
fn finish(cut: Result<()>, shared: &Shared, source: &mut dyn Source) {
    if cut.is_err() {
        shared.lost_thread();
        return;
    }
    while !shared.progress.get().finished
        && shared.fatal().is_none()
        && !shared.stop.load(Ordering::Relaxed)
    {
        shared.progress.wait(Duration::from_millis(20));
    }
    report_checkpointed(shared, source);
}

/// Hands the offsets of the newest durable checkpoint, if there is a new one, to the
/// source (Kafka commits them to the consumer group for lag monitoring).
fn report_checkpointed(shared: &Shared, source: &mut dyn Source) {
    let durable = shared.durable.lock().expect("durable offsets lock").take();
    if let Some(offsets) = durable {
        source.checkpointed(&offsets);
    }
}
