//! Kafka topics as a source (rdkafka, bundled librdkafka).
//!
//! ```text
//!  topics ──metadata──▶ partitions (topic/0, topic/1, ...) = source partitions
//!         ──assign at the resume offsets (the checkpoint's), else start_from──▶ BaseConsumer
//!         ──poll──▶ RawBatch (message value, partition id, Kafka offset)
//! ```
//!
//! Offsets of record live in Projector's checkpoints: the consumer is assigned every
//! partition of its topics and seeks to the checkpoint's offsets; the group id is used
//! for the client's identity only (committing offsets for lag monitoring and
//! consumer-group rebalancing are later steps). With `stop_at_end` (`--once`) a
//! partition is finished at its first end-of-partition event: Tansu, our test broker,
//! reports a wrong high watermark through ListOffsets, while the end seen by a fetch is
//! right.

use crate::source::{PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source};
use crate::{Error, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where to start a partition that has no checkpointed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest retained message (default).
    #[default]
    Earliest,
    /// Only messages produced after the start.
    Latest,
}

/// `source: {type: kafka, ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topics to read; every partition of each is a source partition.
    pub topics: Vec<String>,
    /// The consumer group id.
    pub group_id: String,
    /// Where partitions without a checkpoint start.
    pub start_from: StartFrom,
    /// Passthrough librdkafka settings (checked against the known keys by the config).
    pub properties: BTreeMap<String, String>,
    /// Stop when every partition has been read to its end (`--once`); set by the engine.
    pub stop_at_end: bool,
}

/// How long one metadata request may take before the source reports the broker as
/// unreachable.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds every Kafka client of the project, so defaults live in one place.
pub fn client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// The consumer's context: librdkafka reports the end of a partition, which `--once`
/// relies on and is normal while following a topic, as a global error; the default
/// context would log every one of them as an ERROR.
/// It also remembers whether every broker is down, for [`Source::degraded`].
#[derive(Debug, Clone, Default)]
pub struct SourceContext {
    all_brokers_down: Arc<std::sync::Mutex<Option<String>>>,
}

impl rdkafka::ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_)) {
            return;
        }
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            *self.all_brokers_down.lock().expect("broker state lock") = Some(reason.to_string());
        }
        tracing::warn!(%error, reason, "kafka");
    }
}

impl rdkafka::consumer::ConsumerContext for SourceContext {}

/// Reads the partitions of the configured topics.
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<SourceContext>>,
    partitions: Vec<PartitionInfo>,
    /// One queue per source partition (index = id), so that a slow or busy partition
    /// does not hold the others back and an end-of-partition names its partition.
    queues: Vec<PartitionQueue<SourceContext>>,
    /// Source partitions not yet at their end (only with `stop_at_end`).
    open: Vec<bool>,
    stop_at_end: bool,
    /// Where the next poll starts, so every partition gets its turn.
    next_queue: usize,
    /// When a degraded source last asked the broker whether it is back.
    last_check: std::time::Instant,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Connects, reads the topics' partitions and assigns them at `resume`.
    pub fn open(config: &KafkaConfig, resume: &Resume) -> Result<Self> {
        let mut client = client_config(&config.brokers, &config.properties);
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        if client.get("fetch.wait.max.ms").is_none() {
            // librdkafka's 500 ms default makes --once wait that long at every end.
            client.set("fetch.wait.max.ms", "100");
        }
        let consumer: BaseConsumer<SourceContext> = client
            .create_with_context(SourceContext::default())
            .map_err(|e| kafka("creating the consumer", &e))?;
        let consumer = Arc::new(consumer);

        let mut partitions = Vec::new();
        let mut ids: Vec<(String, i32)> = Vec::new();
        for topic in &config.topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| {
                    kafka(
                        &format!(
                            "reading the metadata of topic '{topic}' from {}",
                            config.brokers
                        ),
                        &e,
                    )
                })?;
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(Error::Config(format!(
                    "topic '{topic}' not found on {}",
                    config.brokers
                )));
            };
            if let Some(e) = t.error() {
                let e = rdkafka::error::RDKafkaErrorCode::from(e);
                return Err(Error::Config(format!(
                    "topic '{topic}' on {}: {e}",
                    config.brokers
                )));
            }
            let mut numbers: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            numbers.sort_unstable();
            if numbers.is_empty() {
                return Err(Error::Config(format!("topic '{topic}' has no partitions")));
            }
            for n in numbers {
                let id = partitions.len() as u32;
                partitions.push(PartitionInfo {
                    id,
                    name: format!("{topic}/{n}"),
                });
                ids.push((topic.clone(), n));
            }
        }

        let mut assignment = TopicPartitionList::new();
        for (id, (topic, n)) in ids.iter().enumerate() {
            let offset = match (resume.get(&(id as u32)), config.start_from) {
                (Some(next), _) => Offset::Offset(*next as i64),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
            };
            assignment
                .add_partition_offset(topic, *n, offset)
                .map_err(|e| kafka("building the assignment", &e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka("assigning partitions", &e))?;
        let queues = ids
            .iter()
            .map(|(topic, n)| {
                consumer.split_partition_queue(topic, *n).ok_or_else(|| {
                    Error::Config(format!(
                        "cannot read partition {topic}/{n} on its own queue"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let open = vec![true; partitions.len()];
        let last_check = std::time::Instant::now();
        Ok(KafkaSource {
            last_check,
            consumer,
            partitions,
            queues,
            open,
            stop_at_end: config.stop_at_end,
            next_queue: 0,
        })
    }
}

fn kafka(doing: &str, e: &KafkaError) -> Error {
    Error::Config(format!("kafka: {doing}: {e}"))
}

impl Source for KafkaSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        self.partitions.clone()
    }

    fn degraded(&self) -> Option<String> {
        let reason = self
            .consumer
            .context()
            .all_brokers_down
            .lock()
            .expect("broker state lock")
            .clone();
        reason.map(|r| format!("kafka: no broker reachable ({r}); retrying"))
    }

    fn checkpointed(&mut self, offsets: &Resume) {
        let mut tpl = TopicPartitionList::new();
        for (id, next) in offsets {
            let Some((topic, n)) = self.partitions[*id as usize].name.rsplit_once('/') else {
                continue;
            };
            let Ok(n) = n.parse::<i32>() else { continue };
            if tpl
                .add_partition_offset(topic, n, Offset::Offset(*next as i64))
                .is_err()
            {
                return;
            }
        }
        // Best effort: a failed commit only makes lag tools lag. Synchronous (one round
        // trip per checkpoint), so the commit of the final checkpoint is not lost when
        // the process exits right after it.
        if let Err(e) = self
            .consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(error = %e, "kafka: committing group offsets");
        }
    }

    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll> {
        // The main queue carries errors and events; serving it also keeps the client's
        // heartbeats and statistics going. Messages are on the partition queues.
        match self.consumer.poll(Duration::ZERO) {
            Some(Err(KafkaError::PartitionEOF(_))) | None | Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer"),
        }
        // librdkafka reports when every broker is down, not when one is back: while
        // degraded, ask for metadata now and then (a short, bounded wait).
        let down = self.consumer.context().all_brokers_down.clone();
        if down.lock().expect("broker state lock").is_some()
            && self.last_check.elapsed() >= Duration::from_secs(1)
        {
            self.last_check = std::time::Instant::now();
            if self
                .consumer
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
            {
                *down.lock().expect("broker state lock") = None;
            }
        }
        let n = self.queues.len();
        let mut appended = 0;
        let mut idle_queues = 0;
        // Round robin over the partitions, a bounded share each, until the batch is
        // full or every queue came back empty once in a row.
        let share = (max_records / n).max(64);
        while appended < max_records && idle_queues < n {
            let id = self.next_queue;
            self.next_queue = (self.next_queue + 1) % n;
            let mut taken = 0;
            while taken < share && appended < max_records {
                match self.queues[id].poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => {
                        let start = out.data.len();
                        out.data.extend_from_slice(m.payload().unwrap_or_default());
                        out.records.push(RawRecord {
                            partition: id as u32,
                            offset: m.offset() as u64,
                            start,
                            end: out.data.len(),
                        });
                        taken += 1;
                        appended += 1;
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        self.open[id] = false;
                        break;
                    }
                    Some(Err(e)) => {
                        // librdkafka retries by itself (broker down, leader moved):
                        // report it and let the engine poll again.
                        tracing::warn!(partition = %self.partitions[id].name, error = %e, "kafka");
                        break;
                    }
                }
            }
            idle_queues = if taken == 0 { idle_queues + 1 } else { 0 };
        }
        if appended > 0 {
            // A broker answered: not degraded (once per poll, not per message).
            *down.lock().expect("broker state lock") = None;
            // A message after an end-of-partition means the partition grew again.
            Ok(Poll::Ready)
        } else if self.stop_at_end && self.open.iter().all(|o| !o) {
            Ok(Poll::Exhausted)
        } else {
            Ok(Poll::Idle)
        }
    }
}

/// Creates `topic` with `partitions` partitions unless it exists already (then its
/// partition count is left as it is).
pub fn ensure_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, properties)
        .create()
        .map_err(|e| kafka("creating the admin client", &e))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| kafka(&format!("creating topic '{topic}' on {brokers}"), &e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::Config(format!(
                    "kafka: creating topic '{t}' on {brokers}: {code}"
                )));
            }
        }
    }
    Ok(())
}

/// Produces keyed records to one topic (idempotent producer: a retry never writes a
/// message twice).
pub struct EventProducer {
    producer: rdkafka::producer::BaseProducer,
    topic: String,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl EventProducer {
    /// A producer to `topic` on `brokers`.
    pub fn new(brokers: &str, properties: &BTreeMap<String, String>, topic: &str) -> Result<Self> {
        let mut config = client_config(brokers, properties);
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000");
        let producer = config
            .create()
            .map_err(|e| kafka("creating the producer", &e))?;
        Ok(EventProducer {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues one message, waiting for room when librdkafka's queue is full.
    pub fn send(&self, key: &[u8], value: &[u8]) -> Result<()> {
        use rdkafka::producer::BaseRecord;
        let mut record = BaseRecord::to(&self.topic).key(key).payload(value);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(kafka(&format!("producing to '{}'", self.topic), &e)),
            }
        }
    }

    /// Waits until every queued message is acknowledged (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        use rdkafka::producer::Producer;
        self.producer
            .flush(timeout)
            .map_err(|e| kafka(&format!("flushing to '{}'", self.topic), &e))
    }
}
