//! Topic administration and one-pass topic reads: [`ensure_topic`] (`projector
//! produce`, the dead-letter topic), [`letters_in_topic`], which finds the letters a
//! dead-letter topic already holds so a replay does not write them again, and
//! [`read_letters_in_topic`], which reads them all back (`projector dead-letters`).

use super::config::{METADATA_TIMEOUT, client_config};
use super::dead_letter_headers;
use super::group::SourceContext;
use crate::{Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
        .map_err(|e| Error::kafka("creating the admin client", e))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| Error::kafka(format!("creating topic '{topic}' on {brokers}"), e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::CreateTopic {
                    topic: t,
                    brokers: brokers.to_string(),
                    source: code,
                });
            }
        }
    }
    Ok(())
}

/// The letters of the given source partitions (name as Projector gives it, from offset)
/// already in dead-letter topic `topic`, read from its start to its end in one pass. A
/// restored partition's replay leaves those out.
pub fn letters_in_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    partitions: &[(&str, u64)],
) -> Result<crate::dead_letter::Written> {
    let mut found = crate::dead_letter::Written::new();
    scan_topic(brokers, properties, topic, |m| {
        let source = header(m, dead_letter_headers::SOURCE);
        let offset = header(m, dead_letter_headers::OFFSET).and_then(|o| o.parse::<u64>().ok());
        if let (Some(name), Some(o)) = (source, offset)
            && let Some((_, from)) = partitions.iter().find(|(p, _)| *p == name)
            && o >= *from
        {
            found.entry(name.to_string()).or_default().insert(o);
        }
    })?;
    Ok(found)
}

/// Every letter in dead-letter topic `topic`, from its start to its end, partition by
/// partition in offset order (the letters of one source partition go to one topic
/// partition when they are keyed, so their order is kept). Messages without the
/// letter headers are passed over.
pub fn read_letters_in_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
) -> Result<Vec<crate::dead_letter::StoredDeadLetter>> {
    let mut letters = Vec::new();
    scan_topic(brokers, properties, topic, |m| {
        let source = header(m, dead_letter_headers::SOURCE);
        let offset = header(m, dead_letter_headers::OFFSET).and_then(|o| o.parse::<u64>().ok());
        let (Some(partition), Some(offset)) = (source, offset) else {
            return;
        };
        letters.push(crate::dead_letter::StoredDeadLetter {
            raw: m.payload().unwrap_or_default().to_vec(),
            code: header(m, dead_letter_headers::CODE)
                .unwrap_or_default()
                .to_string(),
            message: header(m, dead_letter_headers::MESSAGE)
                .unwrap_or_default()
                .to_string(),
            partition: partition.to_string(),
            offset,
            key: m.key().map(<[u8]>::to_vec),
        });
    })?;
    Ok(letters)
}

/// A header of `m` as text (the last one when it repeats).
fn header<'m>(m: &'m rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<&'m str> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads `topic` from its start to its end (as of now), handing each message to `f`.
fn scan_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<()> {
    let mut client = client_config(brokers, properties);
    client
        .set("group.id", "projector-dead-letter-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<SourceContext> = client
        .create_with_context(SourceContext::default())
        .map_err(|e| Error::kafka("creating the dead-letter reader", e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| Error::kafka(format!("reading the metadata of topic '{topic}'"), e))?;
    let mut tpl = TopicPartitionList::new();
    if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| Error::kafka("building the assignment", e))?;
        }
    }
    let count = tpl.count();
    let mut ended = BTreeSet::new();
    if count == 0 {
        return Ok(());
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka(format!("reading dead-letter topic '{topic}'"), e))?;
    let deadline = std::time::Instant::now() + METADATA_TIMEOUT * 3;
    while ended.len() < count {
        if std::time::Instant::now() > deadline {
            return Err(Error::TimedOut {
                doing: format!("reading dead-letter topic '{topic}' to its end"),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka: reading dead letters"),
            Some(Ok(m)) => f(&m),
        }
    }
    Ok(())
}

/// The first offset each partition of `topics` still holds (above 0 when retention
/// or a deletion dropped its oldest records), by partition name (`topic/N`).
pub fn low_watermarks(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: &[String],
) -> Result<Vec<(String, i64)>> {
    let consumer: BaseConsumer<SourceContext> = client_config(brokers, properties)
        .set("group.id", "projector-retention-check")
        .create_with_context(SourceContext::default())
        .map_err(|e| Error::kafka("creating the retention check", e))?;
    let mut out = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| Error::kafka(format!("reading the metadata of topic '{topic}'"), e))?;
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let (low, _) = consumer
                    .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                    .map_err(|e| {
                        Error::kafka(format!("reading the offsets of {topic}/{}", p.id()), e)
                    })?;
                out.push((format!("{topic}/{}", p.id()), low));
            }
        }
    }
    Ok(out)
}
