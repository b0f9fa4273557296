//! The source contract and the registry of source kinds.

use crate::Result;
use crate::file::FileConfig;
use crate::generator::GeneratorConfig;
use crate::kafka::KafkaConfig;
use crate::nexmark::NexmarkConfig;
use std::collections::BTreeMap;

/// Where one record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord {
    /// Source partition (index into [`Source::partitions`]).
    pub partition: u32,
    /// Offset within the partition (the generator's event index, a file's 0-based line).
    pub offset: u64,
    /// Start of the record's bytes in [`RawBatch::data`].
    pub start: usize,
    /// End (exclusive) of the record's bytes in [`RawBatch::data`].
    pub end: usize,
    /// The record has no value at all (Kafka: a null value, a tombstone), which is
    /// not the same as an empty one.
    pub tombstone: bool,
}

/// A batch of raw records sharing one byte buffer (one allocation per batch, not per record).
#[derive(Debug, Clone, Default)]
pub struct RawBatch {
    /// All records' bytes, back to back (and their metadata's, when there is any).
    pub data: Vec<u8>,
    /// The records, in source order.
    pub records: Vec<RawRecord>,
    /// Per record (same index) when the source provides metadata (Kafka, when asked
    /// for it); empty otherwise.
    pub meta: Vec<RecordMeta>,
    /// The headers of every record, back to back (see [`RecordMeta::headers`]).
    pub headers: Vec<RawHeader>,
    /// The records larger than their source allows, in record order: their bytes in
    /// [`RawBatch::data`] are only a prefix.
    pub oversize: Vec<Oversize>,
}

/// A record larger than its source allows (`max_record_bytes`): only a prefix of it
/// was kept, with its size and hash, for the dead letter that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize {
    /// Index of the record in [`RawBatch::records`].
    pub record: usize,
    /// Its whole size in bytes.
    pub bytes: u64,
    /// The SHA-256 of all its bytes.
    pub sha256: [u8; 32],
    /// The most bytes a record of its source may have.
    pub limit: u64,
}

/// A record's metadata (Kafka): byte ranges are into [`RawBatch::data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordMeta {
    /// The message key, if it has one.
    pub key: Option<(usize, usize)>,
    /// The message timestamp, milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    /// Its headers: `RawBatch::headers[headers.0..headers.1]`.
    pub headers: (usize, usize),
}

/// One header of a record: byte ranges into [`RawBatch::data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// The name (UTF-8: Kafka header names are strings).
    pub name: (usize, usize),
    /// The value, unless it is null.
    pub value: Option<(usize, usize)>,
}

impl RawBatch {
    /// Appends one record.
    pub fn push(&mut self, partition: u32, offset: u64, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.records.push(RawRecord {
            partition,
            offset,
            start,
            end: self.data.len(),
            tombstone: false,
        });
    }

    /// The bytes of `record`.
    pub fn bytes(&self, record: &RawRecord) -> &[u8] {
        &self.data[record.start..record.end]
    }

    /// Appends metadata for the record just pushed: its key, timestamp and headers
    /// (name, value).
    pub fn push_meta<'h>(
        &mut self,
        key: Option<&[u8]>,
        timestamp: Option<i64>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) {
        debug_assert_eq!(self.meta.len() + 1, self.records.len());
        let key = key.map(|k| self.append(k));
        let first = self.headers.len();
        for (name, value) in headers {
            let name = self.append(name.as_bytes());
            let value = value.map(|v| self.append(v));
            self.headers.push(RawHeader { name, value });
        }
        self.meta.push(RecordMeta {
            key,
            timestamp,
            headers: (first, self.headers.len()),
        });
    }

    fn append(&mut self, bytes: &[u8]) -> (usize, usize) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        (start, self.data.len())
    }

    /// Record `i`'s message key, if the source provides keys and it has one.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        let (a, b) = self.meta.get(i)?.key?;
        Some(&self.data[a..b])
    }

    /// Record `i`'s timestamp (Unix milliseconds), if the source provides one.
    pub fn timestamp(&self, i: usize) -> Option<i64> {
        self.meta.get(i)?.timestamp
    }

    /// The value of record `i`'s header `name` (the last one when it repeats), unless
    /// it is absent or null.
    pub fn header(&self, i: usize, name: &str) -> Option<&[u8]> {
        let (first, end) = self.meta.get(i)?.headers;
        self.headers[first..end]
            .iter()
            .rev()
            .find(|h| &self.data[h.name.0..h.name.1] == name.as_bytes())
            .and_then(|h| h.value.map(|(a, b)| &self.data[a..b]))
    }

    /// Record `i`'s headers, in order (name, value); none when the source provides no
    /// metadata.
    pub fn headers_of(&self, i: usize) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        let (first, end) = self.meta.get(i).map_or((0, 0), |m| m.headers);
        self.headers[first..end].iter().map(|h| {
            let name = std::str::from_utf8(&self.data[h.name.0..h.name.1]).unwrap_or("");
            (name, h.value.map(|(a, b)| &self.data[a..b]))
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
        self.meta.clear();
        self.headers.clear();
        self.oversize.clear();
    }

    /// Whether record `index` is larger than its source allows (and its bytes only a
    /// prefix); `cursor` is where the previous call left off in [`RawBatch::oversize`]
    /// (start at 0 and keep it across a batch's records, in order).
    pub fn oversize_of(&self, index: usize, cursor: &mut usize) -> Option<&Oversize> {
        while self.oversize.get(*cursor).is_some_and(|o| o.record < index) {
            *cursor += 1;
        }
        self.oversize.get(*cursor).filter(|o| o.record == index)
    }
}

/// A source partition: the unit of ordering and of offsets.
///
/// Partitions whose events share one state form a *unit*, which is checkpointed,
/// owned and moved as one: partition N of every topic of a multi-topic Kafka source
/// (topics that feed one view must be co-partitioned). Every other partition is a
/// unit of its own, of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Index used in [`RawRecord::partition`].
    pub id: u32,
    /// Human name, e.g. `generator`, `file:events.ndjson`, `bank-events/3`.
    pub name: String,
    /// The unit it belongs to (`0..units`, in order of first appearance).
    pub unit: u32,
    /// The unit's name: the partition's own, or `orders+payments/3` for partition 3
    /// of the topics `orders` and `payments`.
    pub unit_name: String,
    /// Which of its unit's streams it is (the topic's index in the source's list): the
    /// version guard keeps the versions of each stream apart.
    pub stream: u16,
}

impl PartitionInfo {
    /// A partition that is a unit of its own.
    pub fn single(id: u32, name: impl Into<String>) -> Self {
        let name = name.into();
        PartitionInfo {
            id,
            unit: id,
            unit_name: name.clone(),
            name,
            stream: 0,
        }
    }
}

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were appended (maybe fewer than asked).
    Ready,
    /// Nothing available now; poll again later.
    Idle,
    /// The source has no more records, ever.
    Exhausted,
}

/// Next offset to read, per partition id.
pub type Resume = BTreeMap<u32, u64>;

/// A source of raw records.
pub trait Source: Send {
    /// The partitions this source reads.
    fn partitions(&self) -> Vec<PartitionInfo>;
    /// Appends up to `max_records` records to `out`.
    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll>;

    /// The next offsets a checkpoint has made durable. Sources may report them
    /// elsewhere (Kafka: a consumer-group commit, so standard tools show the lag); they
    /// are never read back: offsets of record live in the checkpoint.
    fn checkpointed(&mut self, _offsets: &Resume) {}

    /// Why the source cannot make progress right now (a broker is unreachable), if it
    /// cannot; the source keeps retrying and the pipeline keeps running.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// Waits, at most `timeout`, until [`Source::poll`] may have records again; the
    /// engine calls it after a poll came back [`Poll::Idle`]. Sources that are told
    /// when records arrive (Kafka's queue callbacks) return as soon as they do; the
    /// default sleeps 2 ms (or `timeout`, if shorter).
    fn wait(&mut self, timeout: std::time::Duration) {
        std::thread::sleep(timeout.min(std::time::Duration::from_millis(2)));
    }

    /// The newest known end (next offset to be written) of each partition, where the
    /// source knows it (Kafka: from the fetch responses), for lag reporting.
    fn high_watermarks(&self) -> Resume {
        Resume::new()
    }

    /// Hands the source the engine's side of partition ownership. Sources whose
    /// partitions come and go while they run (Kafka consumer groups) keep it, call it
    /// from [`Source::poll`] on every change, and return true; then no partition is this
    /// instance's until [`AssignmentListener::assigned`] says so. Sources that always
    /// read every partition return false (the default) and the engine owns them all.
    fn set_assignment_listener(&mut self, _listener: Box<dyn AssignmentListener>) -> bool {
        false
    }
}

/// The engine's side of partition ownership, for sources that share their partitions
/// with other instances (a consumer group). Both calls run on the thread polling the
/// source, inside [`Source::poll`], and may block: the source waits for them before it
/// lets the group go on.
pub trait AssignmentListener: Send {
    /// `partitions` are this instance's from now on: restore their state and return
    /// where each resumes (a partition missing from the answer starts at the source's
    /// configured start). An error stops the pipeline.
    fn assigned(&mut self, partitions: &[u32]) -> std::result::Result<Resume, AssignmentError>;

    /// `partitions` stop being this instance's. Unless `lost`, everything read from them
    /// is applied and checkpointed before this returns, so the next owner resumes
    /// exactly there. With `lost` (this instance was expelled from the group; another
    /// may own them already) nothing more of theirs may be checkpointed: their state is
    /// dropped and the next owner replays from their last checkpoint. Returns the next
    /// offsets the checkpoint recorded (empty when there was none), for the source to
    /// report like [`Source::checkpointed`].
    fn revoked(
        &mut self,
        partitions: &[u32],
        lost: bool,
    ) -> std::result::Result<Resume, AssignmentError>;
}

/// Why an [`AssignmentListener`] could not take over or give up partitions: the
/// engine's error, kept as this error's source. It stops the pipeline (the source
/// returns it from [`Source::poll`] as [`Error::Assignment`](crate::Error::Assignment)).
#[derive(Debug)]
pub struct AssignmentError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl AssignmentError {
    /// Wraps the engine's error (any error, or a message: `String` and `&str` convert).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        AssignmentError(error.into())
    }
}

impl std::fmt::Display for AssignmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AssignmentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The `source:` section of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `type: generator`.
    Generator(GeneratorConfig),
    /// `type: file`.
    File(FileConfig),
    /// `type: kafka`.
    Kafka(KafkaConfig),
    /// `type: nexmark`.
    Nexmark(NexmarkConfig),
}

/// Opens a source, starting each partition at `resume` (or at its beginning).
///
/// Without the `kafka` feature a Kafka source is [`Error::NoKafkaSupport`](crate::Error::NoKafkaSupport).
pub fn open(config: &SourceConfig, resume: &Resume) -> Result<Box<dyn Source>> {
    match config {
        SourceConfig::Generator(c) => {
            Ok(Box::new(crate::generator::GeneratorSource::new(c, resume)))
        }
        SourceConfig::File(c) => Ok(Box::new(crate::file::FileSource::open(c, resume)?)),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(c) => Ok(Box::new(crate::kafka::KafkaSource::open(c, resume)?)),
        #[cfg(not(feature = "kafka"))]
        SourceConfig::Kafka(_) => Err(crate::Error::NoKafkaSupport),
        SourceConfig::Nexmark(c) => Ok(Box::new(crate::nexmark::NexmarkSource::new(c, resume))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lives_next_to_the_records() {
        let mut b = RawBatch::default();
        b.push(0, 7, b"{}");
        b.push_meta(
            Some(b"acc-1"),
            Some(1_700_000_000_000),
            [
                ("trace", Some(&b"t-1"[..])),
                ("empty", None),
                ("trace", Some(&b"t-2"[..])),
            ],
        );
        b.push(1, 8, b"[1]");
        b.push_meta(None, None, []);
        assert_eq!(b.bytes(&b.records[0]), b"{}");
        assert_eq!(b.bytes(&b.records[1]), b"[1]");
        assert_eq!(b.key(0), Some(&b"acc-1"[..]));
        assert_eq!(b.key(1), None);
        assert_eq!(b.timestamp(0), Some(1_700_000_000_000));
        assert_eq!(b.header(0, "trace"), Some(&b"t-2"[..]), "the last one wins");
        assert_eq!(b.header(0, "empty"), None);
        assert_eq!(b.header(1, "trace"), None);
        b.clear();
        assert!(b.is_empty() && b.meta.is_empty() && b.headers.is_empty());
    }

    #[test]
    fn an_assignment_error_is_the_engines_error() {
        use std::error::Error as _;
        let e = AssignmentError::new("restoring bank/3: checkpoint unreadable");
        assert_eq!(e.to_string(), "restoring bank/3: checkpoint unreadable");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("restoring bank/3: checkpoint unreadable")
        );
        let e = AssignmentError::new(std::io::Error::other("disk full"));
        let cause = e.source().expect("the engine's error");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(cause.to_string(), "disk full");
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn without_the_kafka_feature_a_kafka_source_is_a_clear_error() {
        let config = SourceConfig::Kafka(KafkaConfig {
            brokers: "localhost:9092".into(),
            topics: vec!["bank".into()],
            group_id: "projector".into(),
            start_from: crate::kafka::StartFrom::Earliest,
            properties: BTreeMap::new(),
            partitioner: Default::default(),
            stop_at_end: false,
            with_metadata: false,
        });
        let Err(e) = open(&config, &Resume::new()) else {
            panic!("a Kafka source opened without the kafka feature");
        };
        assert!(matches!(e, crate::Error::NoKafkaSupport), "{e:?}");
        assert!(e.to_string().contains("`kafka` feature"), "{e}");
    }
}
