//! [`EventProducer`]: keyed records to one topic, for `projector produce` and the
//! dead-letter topic, and the properties a producer takes from a source's.

use super::config::client_config;
use crate::source::{Poll, RawBatch, Source};
use crate::{Error, Result};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Consumer-only librdkafka properties: a producer built from a source's properties
/// leaves them out (librdkafka would warn about each).
const CONSUMER_ONLY: &[&str] = &[
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "max.poll.interval.ms",
    "coordinator.query.interval.ms",
    "fetch.",
    "queued.",
    "isolation.level",
    "check.crcs",
    "consume.callback.max.messages",
    "allow.auto.create.topics",
];

/// The properties of `properties` that apply to a producer.
pub(crate) fn producer_properties(
    properties: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    properties
        .iter()
        .filter(|(k, _)| !CONSUMER_ONLY.iter().any(|c| k.starts_with(c)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Remembers the first message librdkafka could not deliver.
#[derive(Default)]
pub(crate) struct DeliveryContext {
    failed: Mutex<Option<Error>>,
}

impl rdkafka::ClientContext for DeliveryContext {}

impl rdkafka::producer::ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut f = self.failed.lock().expect("delivery lock");
            if f.is_none() {
                *f = Some(Error::kafka(
                    format!("delivering to {}/{}", m.topic(), m.partition()),
                    e.clone(),
                ));
            }
        }
    }
}

/// Produces keyed records to one topic (idempotent producer: a retry never writes a
/// message twice).
pub struct EventProducer {
    producer: rdkafka::producer::BaseProducer<DeliveryContext>,
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
    /// A producer to `topic` on `brokers` (consumer-only `properties` are left out).
    pub fn new(brokers: &str, properties: &BTreeMap<String, String>, topic: &str) -> Result<Self> {
        let mut config = client_config(brokers, &producer_properties(properties));
        // Keys are placed as Kafka's Java clients place them (murmur2), so a pipeline
        // reading these topics may declare `partitioner: murmur2`.
        config
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000");
        let producer = config
            .create_with_context(DeliveryContext::default())
            .map_err(|e| Error::kafka("creating the producer", e))?;
        Ok(EventProducer {
            producer,
            topic: topic.to_string(),
        })
    }

    /// The topic it produces to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues one message, waiting for room when librdkafka's queue is full.
    pub fn send(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.send_with(Some(key), value, &[])
    }

    /// Queues one message with an optional key and headers, waiting for room when
    /// librdkafka's queue is full.
    pub fn send_with(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::BaseRecord;
        let mut record = BaseRecord::to(&self.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                h = h.insert(Header {
                    key: name,
                    value: Some(*value),
                });
            }
            record = record.headers(h);
        }
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
                Err((e, _)) => {
                    return Err(Error::kafka(format!("producing to '{}'", self.topic), e));
                }
            }
        }
    }

    /// Sends every record `source` has until it is exhausted, keyed by the record's
    /// `aggregateId` when it is a JSON object with one (bad records go without a key),
    /// then waits for every acknowledgement. Calls `progress` with the count so far
    /// after each batch. Returns how many were sent.
    pub fn send_all(&self, source: &mut dyn Source, mut progress: impl FnMut(u64)) -> Result<u64> {
        #[derive(serde::Deserialize)]
        struct Key<'a> {
            #[serde(rename = "aggregateId", borrow)]
            aggregate_id: &'a str,
        }
        let mut batch = RawBatch::default();
        let mut sent = 0u64;
        loop {
            batch.clear();
            let poll = source.poll(&mut batch, 4096)?;
            if let Some(o) = batch.oversize.first() {
                // Only a prefix of it was read: sending that would be sending a lie.
                return Err(Error::Io {
                    context: format!(
                        "record {} has {} bytes, more than the {} a record may have",
                        batch.records[o.record].offset, o.bytes, o.limit
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidData),
                });
            }
            for r in &batch.records {
                let value = batch.bytes(r);
                let key = serde_json::from_slice::<Key<'_>>(value).map(|k| k.aggregate_id);
                self.send(key.map(str::as_bytes).unwrap_or_default(), value)?;
            }
            sent += batch.len() as u64;
            progress(sent);
            match poll {
                Poll::Exhausted => break,
                Poll::Idle => source.wait(Duration::from_millis(10)),
                Poll::Ready => {}
            }
        }
        self.flush(Duration::from_secs(60))?;
        Ok(sent)
    }

    /// Waits until every queued message is acknowledged (or `timeout` passes); an error
    /// if one could not be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        use rdkafka::producer::Producer;
        self.producer
            .flush(timeout)
            .map_err(|e| Error::kafka(format!("flushing to '{}'", self.topic), e))?;
        match self
            .producer
            .context()
            .failed
            .lock()
            .expect("delivery lock")
            .take()
        {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_leaves_consumer_only_properties_out() {
        let properties: BTreeMap<String, String> = [
            ("group.instance.id", "a"),
            ("session.timeout.ms", "6000"),
            ("fetch.wait.max.ms", "100"),
            ("queued.max.messages.kbytes", "1024"),
            ("client.id", "p1"),
            ("security.protocol", "ssl"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept: Vec<String> = producer_properties(&properties).into_keys().collect();
        assert_eq!(kept, ["client.id", "security.protocol"]);
    }
}
