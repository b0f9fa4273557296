//! What happens to a record that cannot be decoded or applied (`on_error`).
//!
//! Dead letters are staged by epoch and appended to the file only when their epoch
//! commits ([`BadRecords::commit`], called by the coordinator before it checkpoints).
//! The ingest thread reads ahead of the epoch being checkpointed; a letter is written
//! only once the epoch of its record is committed.
//!
//! With a checkpoint store shared by several instances (`checkpoint.store`), letters
//! stay staged until their partition's checkpoint: the checkpoint writer takes them
//! ([`BadRecords::letters_until`]) and writes them to the store in the same commit as
//! the checkpoint, so they move with the partition and a replay never writes one twice.
//!
//! A restart replays each partition from its checkpoint, and letters of records after
//! the checkpoint may be in the file already (their epoch committed, its checkpoint
//! did not happen). The file is shared by every partition, and by every instance
//! sharing the state directory, so it is never cut back: when a partition is restored,
//! the offsets after its checkpoint that already have a letter are remembered
//! ([`BadRecords::already_written`]) and the replay does not write them again.

use crate::Fatal;
use crate::config::IdPaths;
use crate::config::{DeadLetterTopic, OnError};
use crate::serve::status::Counters;
use projector_connectors::dead_letter::{DeadLetter, DeadLetterFile, EventIds};
#[cfg(feature = "kafka")]
use projector_connectors::kafka::EventProducer;
use projector_operators::decode::JsonDecoder;
use projector_operators::envelope::{Envelope, key_text};
use projector_operators::fields::FieldRegistry;
use projector_operators::value::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Shared by the ingest thread and the workers; bad records are rare, so a mutex is fine.
#[derive(Debug)]
pub struct BadRecords {
    policy: OnError,
    path: PathBuf,
    sink: Mutex<Option<DeadLetterFile>>,
    /// Letters go to this topic instead of the file.
    topic: Option<DeadLetterTopic>,
    /// Letters go to the checkpoint store with their partition's checkpoints.
    in_store: bool,
    #[cfg(feature = "kafka")]
    producer: Mutex<Option<EventProducer>>,
    /// Letters by the epoch their record belongs to, until it commits.
    staged: Mutex<BTreeMap<u64, Vec<Letter>>>,
    /// Per partition name: offsets after its checkpoint whose letter is in the file.
    written: Mutex<BTreeMap<String, BTreeSet<u64>>>,
    /// `written` holds an offset (checked first, without the lock).
    any_written: AtomicBool,
    fatal: Mutex<Option<Fatal>>,
    failed: AtomicBool,
    /// Reads the ids of a bad record.
    ids: IdReader,
}

/// A staged dead letter.
#[derive(Debug)]
struct Letter {
    raw: Vec<u8>,
    /// The record's Kafka key, which a dead-letter topic keeps.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    key: Option<Vec<u8>>,
    code: String,
    message: String,
    partition: String,
    offset: u64,
    ids: EventIds,
}

impl Letter {
    fn as_dead_letter(&self) -> DeadLetter<'_> {
        DeadLetter {
            raw: &self.raw,
            code: &self.code,
            message: &self.message,
            partition: &self.partition,
            offset: self.offset,
            ids: &self.ids,
        }
    }
}

/// A bad record: where it came from and what is wrong.
#[derive(Debug, Clone, Copy)]
pub struct BadRecord<'a> {
    /// Exactly the bytes read.
    pub raw: &'a [u8],
    /// Stable error code.
    pub code: &'static str,
    /// What is wrong.
    pub message: &'a str,
    /// Partition name.
    pub partition: &'a str,
    /// Offset within the partition.
    pub offset: u64,
    /// The record's key (Kafka), for a dead-letter topic.
    pub key: Option<&'a [u8]>,
    /// The decoded event, when it decoded (`None`: it did not): the ids come from it,
    /// or from the raw bytes where the event has no slot for them.
    pub event: Option<&'a [Value]>,
}

/// Reads an event's ids for its dead letter: from the decoded event where it has a
/// slot for them (a view reads the path, or it is a header), else from the record's
/// bytes, decoded again for these paths only (so an id nobody reads costs nothing on
/// the events that are not bad).
#[derive(Debug, Clone, Default)]
pub struct IdReader {
    /// Per id (id, correlation, causation): where it is.
    from: [IdFrom; 3],
    /// The paths read from the bytes, and their decoder.
    lazy: Option<(JsonDecoder, usize)>,
}

#[derive(Debug, Clone, Copy, Default)]
enum IdFrom {
    #[default]
    Unmapped,
    Slot(usize),
    Bytes(usize),
}

impl IdReader {
    /// The reader for `envelope`'s ids, whose paths are `paths`.
    pub fn new(envelope: &Envelope, paths: &IdPaths) -> Self {
        let mut lazy = FieldRegistry::new();
        let mut from = [IdFrom::Unmapped; 3];
        let mapped = [
            (envelope.id, Some(&paths.id)),
            (envelope.correlation_id, paths.correlation_id.as_ref()),
            (envelope.causation_id, paths.causation_id.as_ref()),
        ];
        for (i, (slot, path)) in mapped.into_iter().enumerate() {
            from[i] = match (slot, path) {
                (Some(f), _) => IdFrom::Slot(f.index()),
                (None, Some(p)) => IdFrom::Bytes(lazy.intern(p).index()),
                (None, None) => IdFrom::Unmapped,
            };
        }
        let lazy = (!lazy.is_empty()).then(|| (JsonDecoder::new(&lazy), lazy.len()));
        IdReader { from, lazy }
    }

    /// The ids of a bad record: `event` is its decoded slots, `raw` its bytes.
    pub fn read(&self, event: &[Value], raw: &[u8]) -> EventIds {
        let decoded = self.lazy.as_ref().map(|(decoder, n)| {
            let mut out = vec![Value::Null; *n];
            // A record that decoded once decodes again; if not, no ids from it.
            let _ = decoder.decode(raw, &mut out);
            out
        });
        let text = |from: IdFrom| {
            let v = match from {
                IdFrom::Unmapped => return None,
                IdFrom::Slot(s) => event.get(s)?,
                IdFrom::Bytes(s) => decoded.as_ref()?.get(s)?,
            };
            key_text(v).map(|t| t.into_owned())
        };
        EventIds {
            id: text(self.from[0]),
            correlation_id: text(self.from[1]),
            causation_id: text(self.from[2]),
        }
    }
}

impl BadRecords {
    /// Bad records under `policy`; dead letters go to `topic` if set, else to the file
    /// at `path` (opened on first use).
    pub fn new(policy: OnError, path: PathBuf, topic: Option<DeadLetterTopic>) -> Self {
        BadRecords {
            policy,
            path,
            sink: Mutex::new(None),
            topic,
            in_store: false,
            #[cfg(feature = "kafka")]
            producer: Mutex::new(None),
            staged: Mutex::new(BTreeMap::new()),
            written: Mutex::new(BTreeMap::new()),
            any_written: AtomicBool::new(false),
            fatal: Mutex::new(None),
            failed: AtomicBool::new(false),
            ids: IdReader::default(),
        }
    }

    /// Dead letters carry the ids `reader` reads.
    pub fn with_ids(mut self, reader: IdReader) -> Self {
        self.ids = reader;
        self
    }

    /// Keeps dead letters in the checkpoint store, per partition, unless they go to a
    /// topic.
    pub fn in_checkpoint_store(mut self) -> Self {
        self.in_store = self.topic.is_none();
        self
    }

    /// Whether dead letters are kept in the checkpoint store.
    pub fn in_store(&self) -> bool {
        self.in_store
    }

    /// The dead-letter lines of the records of `partitions` (a unit's) up to the cut
    /// of `epoch`, for its checkpoint of that epoch; they stay staged until
    /// [`BadRecords::saved`].
    pub(crate) fn letters_until(&self, partitions: &[&str], epoch: u64) -> Vec<u8> {
        let staged = self.staged.lock().expect("dead-letter lock");
        let mut lines = Vec::new();
        for l in staged
            .range(..=epoch)
            .flat_map(|(_, v)| v)
            .filter(|l| partitions.contains(&l.partition.as_str()))
        {
            match DeadLetterFile::line(&l.as_dead_letter()) {
                Ok(line) => lines.extend(line),
                // Encoding to JSON in memory does not fail; keep the record rather than
                // lose it if it ever does.
                Err(e) => tracing::error!("encoding a dead letter: {e}"),
            }
        }
        lines
    }

    /// Forgets the staged letters of `partitions` (a unit's) up to `epoch`: its
    /// checkpoint of that epoch, which holds them, is written.
    pub(crate) fn saved(&self, partitions: &[&str], epoch: u64) {
        let mut staged = self.staged.lock().expect("dead-letter lock");
        for (_, letters) in staged.range_mut(..=epoch) {
            letters.retain(|l| !partitions.contains(&l.partition.as_str()));
        }
        staged.retain(|_, v| !v.is_empty());
    }

    /// Handles one bad record according to the policy; `epoch` is the epoch the record
    /// belongs to (the one its barrier has not been cut for yet).
    pub fn report(&self, counters: &Counters, r: BadRecord<'_>, epoch: u64) {
        match self.policy {
            OnError::Skip => Counters::add(&counters.skipped, 1),
            OnError::Fail => {
                let mut f = self.fatal.lock().expect("fatal lock");
                // Records are checked out of order (the ingest thread decodes ahead of
                // the workers), so a later record may be reported first: keep the
                // earliest of its partition.
                let earlier = match &*f {
                    None => true,
                    Some(Fatal::BadRecord {
                        partition, offset, ..
                    }) => partition == r.partition && r.offset < *offset,
                    Some(_) => false,
                };
                if earlier {
                    *f = Some(Fatal::BadRecord {
                        partition: r.partition.to_string(),
                        offset: r.offset,
                        code: r.code,
                        message: r.message.to_string(),
                    });
                }
                self.failed.store(true, Ordering::SeqCst);
            }
            OnError::DeadLetter | OnError::Park => {
                Counters::add(&counters.dead_letters, 1);
                let written = self.written.lock().expect("dead-letter lock");
                if written
                    .get(r.partition)
                    .is_some_and(|w| w.contains(&r.offset))
                {
                    // Written before a restart; the replay found it bad again.
                    return;
                }
                drop(written);
                let letter = Letter {
                    raw: r.raw.to_vec(),
                    key: r.key.map(<[u8]>::to_vec),
                    code: r.code.to_string(),
                    message: r.message.to_string(),
                    partition: r.partition.to_string(),
                    offset: r.offset,
                    ids: r
                        .event
                        .map(|event| self.ids.read(event, r.raw))
                        .unwrap_or_default(),
                };
                let mut staged = self.staged.lock().expect("dead-letter lock");
                staged.entry(epoch).or_default().push(letter);
            }
        }
    }

    /// Writes the staged letters of every epoch up to `epoch`: appended to the file
    /// (made durable by [`BadRecords::sync`]), or produced to the topic.
    pub fn commit(&self, epoch: u64) {
        if self.in_store {
            // Written with their partitions' checkpoints instead.
            return;
        }
        let letters: Vec<Letter> = {
            let mut staged = self.staged.lock().expect("dead-letter lock");
            let later = match epoch.checked_add(1) {
                Some(next) => staged.split_off(&next),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut *staged, later)
                .into_values()
                .flatten()
                .collect()
        };
        if letters.is_empty() {
            return;
        }
        let result = match &self.topic {
            Some(topic) => self.produce(topic, &letters),
            None => self.append(&letters),
        };
        if let Err(e) = result {
            self.cannot_write(e);
        }
    }

    fn append(&self, letters: &[Letter]) -> Result<(), projector_connectors::Error> {
        let mut lines = Vec::new();
        for l in letters {
            lines.extend(DeadLetterFile::line(&l.as_dead_letter()).map_err(|source| {
                projector_connectors::Error::Io {
                    context: "encoding a dead letter".into(),
                    source,
                }
            })?);
        }
        let mut sink = self.sink.lock().expect("dead-letter lock");
        if sink.is_none() {
            *sink = Some(DeadLetterFile::open(&self.path)?);
        }
        let file = sink.as_mut().expect("opened above");
        file.append_lines(&lines)
    }

    #[cfg(feature = "kafka")]
    fn produce(
        &self,
        topic: &DeadLetterTopic,
        letters: &[Letter],
    ) -> Result<(), projector_connectors::Error> {
        use projector_connectors::kafka::dead_letter_headers as h;
        let mut producer = self.producer.lock().expect("dead-letter lock");
        if producer.is_none() {
            *producer = Some(EventProducer::new(
                &topic.brokers,
                &topic.properties,
                &topic.topic,
            )?);
        }
        let producer = producer.as_ref().expect("created above");
        for l in letters {
            let offset = l.offset.to_string();
            let mut headers: Vec<(&str, &[u8])> = vec![
                (h::CODE, l.code.as_bytes()),
                (h::MESSAGE, l.message.as_bytes()),
                (h::SOURCE, l.partition.as_bytes()),
                (h::OFFSET, offset.as_bytes()),
            ];
            // Kafka partitions are named `topic/number`.
            if let Some((t, n)) = l.partition.rsplit_once('/')
                && n.parse::<u32>().is_ok()
            {
                headers.push((h::TOPIC, t.as_bytes()));
                headers.push((h::PARTITION, n.as_bytes()));
            }
            for (name, id) in [
                (h::EVENT_ID, &l.ids.id),
                (h::CORRELATION_ID, &l.ids.correlation_id),
                (h::CAUSATION_ID, &l.ids.causation_id),
            ] {
                if let Some(id) = id {
                    headers.push((name, id.as_bytes()));
                }
            }
            producer.send_with(l.key.as_deref(), &l.raw, &headers)?;
        }
        Ok(())
    }

    /// This build has no Kafka client: a dead-letter topic cannot be written.
    #[cfg(not(feature = "kafka"))]
    fn produce(
        &self,
        _topic: &DeadLetterTopic,
        _letters: &[Letter],
    ) -> Result<(), projector_connectors::Error> {
        Err(projector_connectors::Error::NoKafkaSupport)
    }

    /// Losing a record silently is worse than stopping.
    fn cannot_write(&self, e: projector_connectors::Error) {
        let mut f = self.fatal.lock().expect("fatal lock");
        if f.is_none() {
            *f = Some(Fatal::DeadLetter {
                destination: self.destination(),
                source: Arc::new(e),
            });
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Where dead letters go, for messages: the file's path or `topic NAME on BROKERS`.
    pub fn destination(&self) -> String {
        match &self.topic {
            Some(t) => format!("topic {} on {}", t.topic, t.brokers),
            None if self.in_store => "the checkpoint store".to_string(),
            None => self.path.display().to_string(),
        }
    }

    /// Remembers which records of each partition (name, the offset where it resumes)
    /// already have a letter in the file or topic, so the replay does not write them
    /// twice. One pass over the destination for all of them.
    pub fn already_written(&self, partitions: &[(&str, u64)]) -> std::io::Result<()> {
        // Letters in the store are written with their checkpoint: none is after it.
        if !matches!(self.policy, OnError::DeadLetter | OnError::Park)
            || partitions.is_empty()
            || self.in_store
        {
            return Ok(());
        }
        let found = match &self.topic {
            #[cfg(feature = "kafka")]
            Some(t) => projector_connectors::kafka::letters_in_topic(
                &t.brokers,
                &t.properties,
                &t.topic,
                partitions,
            ),
            #[cfg(not(feature = "kafka"))]
            Some(_) => Err(projector_connectors::Error::NoKafkaSupport),
            None => projector_connectors::dead_letter::letters_at_or_after(&self.path, partitions),
        }
        .map_err(std::io::Error::other)?;
        let mut written = self.written.lock().expect("dead-letter lock");
        for (name, _) in partitions {
            written.remove(*name);
        }
        written.extend(found);
        self.any_written
            .store(written.values().any(|w| !w.is_empty()), Ordering::Relaxed);
        Ok(())
    }

    /// Whether the record at `offset` of `partition` has a letter already (written
    /// before a restart; see [`BadRecords::already_written`]): applied now (after a
    /// fix), it must count as that letter replayed.
    pub fn has_letter(&self, partition: &str, offset: u64) -> bool {
        self.any_written.load(Ordering::Relaxed)
            && self
                .written
                .lock()
                .expect("dead-letter lock")
                .get(partition)
                .is_some_and(|w| w.contains(&offset))
    }

    /// Drops the letters staged for `partition` that no epoch committed yet: its
    /// assignment was lost, and whoever owns it now replays those records.
    pub fn drop_staged(&self, partition: &str) {
        let mut staged = self.staged.lock().expect("dead-letter lock");
        for letters in staged.values_mut() {
            letters.retain(|l| l.partition != partition);
        }
    }

    /// Forgets [`BadRecords::already_written`] of a partition this instance gave up.
    pub fn forget(&self, partition: &str) {
        self.written
            .lock()
            .expect("dead-letter lock")
            .remove(partition);
    }

    /// Makes every dead letter so far durable in the file.
    pub fn flush(&self) -> std::io::Result<()> {
        if self.topic.is_some() {
            return self.sync().map(|_| ());
        }
        if let Some(s) = &mut *self.sink.lock().expect("dead-letter lock") {
            s.flush().map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Makes every dead letter so far durable and returns the file's length (0 when
    /// none was written in this run and the file does not exist).
    pub fn sync(&self) -> std::io::Result<u64> {
        if self.topic.is_some() {
            #[cfg(feature = "kafka")]
            if let Some(p) = &*self.producer.lock().expect("dead-letter lock") {
                p.flush(std::time::Duration::from_secs(30))
                    .map_err(std::io::Error::other)?;
            }
            return Ok(0);
        }
        match &mut *self.sink.lock().expect("dead-letter lock") {
            Some(s) => s.sync().map_err(std::io::Error::other),
            None => match std::fs::metadata(&self.path) {
                Ok(m) => Ok(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            },
        }
    }

    /// True once the pipeline must stop (`on_error: fail`, or a dead letter could not be written).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether a bad event parks its key (`on_error: park`) instead of going to the
    /// dead letters.
    pub fn parks(&self) -> bool {
        self.policy == OnError::Park
    }

    /// Stops the pipeline for `why` (unless it stopped already): no epoch is published
    /// or checkpointed after this.
    pub fn stop(&self, why: Fatal) {
        let mut f = self.fatal.lock().expect("fatal lock");
        if f.is_none() {
            *f = Some(why);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Why the pipeline stopped, if it did.
    pub fn fatal(&self) -> Option<Fatal> {
        self.fatal.lock().expect("fatal lock").clone()
    }

    /// Whether the event at `offset` of `partition` must still be applied: always
    /// before a failure; after one, only the events of the failing partition before the
    /// bad record (so that an earlier bad record is still found and named).
    pub fn should_apply(&self, partition: &str, offset: u64) -> bool {
        if !self.failed() {
            return true;
        }
        match &*self.fatal.lock().expect("fatal lock") {
            Some(Fatal::BadRecord {
                partition: p,
                offset: o,
                ..
            }) => p == partition && offset < *o,
            _ => false,
        }
    }

    /// Where dead letters go.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
