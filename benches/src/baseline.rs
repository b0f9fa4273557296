//! The baseline Projector's Kafka throughput is measured against: a bare rdkafka
//! consumer that reads a topic from the beginning to the end the fetches find, touches
//! each message's bytes and does nothing else.
//!
//! It joins a fresh consumer group and polls the consumer's main queue, the way a
//! hand-written consumer would. The clock starts at the first message, so the group
//! join (seconds on some brokers, the same for Projector) is reported apart.

use anyhow::{Result, anyhow};
use projector_connectors::kafka::client_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Logs librdkafka's errors except the end-of-partition events, which the poll loop
/// handles (they arrive as errors too).
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(error = %error, reason, "kafka: bare consumer");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// What the bare consumer read, and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct BareRead {
    /// Messages read.
    pub messages: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Seconds from the subscription to the first message (the group join).
    pub first_message_s: f64,
    /// Seconds from the first message to the last partition's end.
    pub reading_s: f64,
    /// A sum of every payload byte, so the reads cannot be optimised away.
    pub checksum: u64,
}

impl BareRead {
    /// Messages per second from the first message on.
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.reading_s.max(1e-9)
    }
}

/// What a bare reader has counted so far: every consumer mode of the baseline counts
/// through this, so they all do the same work per message.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Messages read.
    pub messages: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// A sum of every payload byte.
    pub checksum: u64,
    /// When the first message arrived.
    pub first: Option<Instant>,
}

impl Tally {
    /// Counts one message and touches every byte of its payload, as a real consumer
    /// would read it.
    pub fn count(&mut self, payload: &[u8]) {
        self.first.get_or_insert_with(Instant::now);
        self.messages += 1;
        self.bytes += payload.len() as u64;
        self.checksum = self
            .checksum
            .wrapping_add(payload.iter().map(|b| u64::from(*b)).sum());
    }
}

/// Reads `topic` from its beginning to its end as a member of the fresh consumer group
/// `group_id`; `properties` are passed to librdkafka (as the pipeline's). Gives up
/// with an error after `timeout`.
pub fn bare_read(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    group_id: &str,
    timeout: Duration,
) -> Result<BareRead> {
    let mut config = client_config(brokers, properties);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    if config.get("fetch.wait.max.ms").is_none() {
        config.set("fetch.wait.max.ms", "100");
    }
    let consumer: BaseConsumer<Quiet> = config
        .create_with_context(Quiet)
        .map_err(|e| anyhow!("kafka: creating the consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| anyhow!("kafka: reading the metadata of '{topic}': {e}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(anyhow!("topic '{topic}' has no partitions on {brokers}"));
    }
    consumer
        .subscribe(&[topic])
        .map_err(|e| anyhow!("kafka: subscribing to '{topic}': {e}"))?;
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut ended = BTreeSet::new();
    while ended.len() < partitions {
        if started.elapsed() > timeout {
            return Err(anyhow!(
                "kafka: the bare consumer read {} messages of '{topic}' and did not \
                 reach the end within {timeout:?}",
                tally.messages
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => tally.count(m.payload().unwrap_or_default()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka: bare consumer"),
        }
    }
    let done = Instant::now();
    let first = tally.first.unwrap_or(done);
    Ok(BareRead {
        messages: tally.messages,
        bytes: tally.bytes,
        first_message_s: first.duration_since(started).as_secs_f64(),
        reading_s: done.duration_since(first).as_secs_f64(),
        checksum: tally.checksum,
    })
}
