//! [`KafkaSource`]: the [`Source`] reading the configured topics' partitions, one
//! queue per partition, as a consumer-group member or on its own.
//!
//! ```text
//!  open: metadata of every topic ──▶ source partitions (topic/n, in topic order)
//!        several topics: co-partitioned? ──▶ unit n = topic/n of each (range assignor)
//!  first poll: subscribe (engine listens: group) or assign all at `resume`
//!  poll: main queue (rebalances, errors) ──▶ apply the group's changes
//!        ──▶ round robin over the partition queues ──▶ RawBatch
//! ```

use super::config::{KafkaConfig, METADATA_TIMEOUT, StartFrom, client_config};
use super::group::{Change, SourceContext, commit_offsets};
use crate::source::{AssignmentListener, PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source};
use crate::{Error, Result};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Wakes the ingest thread when records arrive instead of letting it sleep a fixed
/// time: librdkafka calls a queue's callback when the queue goes from empty to not
/// empty. Backpressure needs no pause: while the engine is behind it does not poll, and
/// librdkafka stops fetching once its prefetch queue holds `queued.max.messages.kbytes`
/// (pausing would be worse: librdkafka drops a paused partition's prefetched messages
/// and fetches them again on resume, which cost the Kafka read benchmark dearly; see
/// BENCHMARKS.md).
#[derive(Default)]
struct Arrivals {
    /// Something arrived since the last [`Arrivals::wait`] (set from librdkafka's
    /// threads; only the change to true takes the lock and signals).
    arrived: std::sync::atomic::AtomicBool,
    lock: Mutex<()>,
    signal: std::sync::Condvar,
}

impl Arrivals {
    /// Has `queue` report its arrivals here.
    fn watch(self: &Arc<Self>, queue: &mut PartitionQueue<SourceContext>) {
        let me = Arc::clone(self);
        queue.set_nonempty_callback(move || me.arrive());
    }

    fn arrive(&self) {
        use std::sync::atomic::Ordering;
        if !self.arrived.swap(true, Ordering::AcqRel) {
            let _held = self.lock.lock().expect("arrivals lock");
            self.signal.notify_one();
        }
    }

    /// Returns when something arrived since the last call, or after `timeout`.
    fn wait(&self, timeout: Duration) {
        use std::sync::atomic::Ordering;
        let mut held = self.lock.lock().expect("arrivals lock");
        let deadline = std::time::Instant::now() + timeout;
        while !self.arrived.swap(false, Ordering::AcqRel) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            held = self
                .signal
                .wait_timeout(held, left)
                .expect("arrivals lock")
                .0;
        }
    }
}

/// Reads the partitions of the configured topics: as a member of the consumer group
/// once the engine listens for assignments, otherwise all of them.
pub(crate) struct KafkaSource {
    consumer: Arc<BaseConsumer<SourceContext>>,
    partitions: Vec<PartitionInfo>,
    /// (topic, partition number) per source partition id.
    topic_partitions: TopicPartitions,
    topics: Vec<String>,
    /// Where partitions start without an engine listener (`open`'s `resume`).
    resume: Resume,
    start_from: StartFrom,
    /// Assigned yet (without a group: all partitions at the first poll).
    started: bool,
    /// A member of the consumer group (the engine listens for assignments).
    group: bool,
    /// One queue per assigned source partition, so that a slow or busy partition does
    /// not hold the others back and an end-of-partition names its partition.
    queues: BTreeMap<u32, PartitionQueue<SourceContext>>,
    /// Assigned partitions whose end was seen (only with `stop_at_end`).
    at_end: BTreeSet<u32>,
    stop_at_end: bool,
    with_metadata: bool,
    /// Told by librdkafka when a partition queue gets records (or an end event).
    arrivals: Arc<Arrivals>,
    /// Where the next poll starts, so every partition gets its turn.
    next_queue: usize,
    /// When a degraded source last asked the broker whether it is back.
    last_check: std::time::Instant,
}

/// Why the metadata of a topic could not be read.
enum Fetch {
    /// The brokers refused the client (authentication, certificate): no retry helps.
    Refused(Error),
    /// The last attempt's error.
    Failed(KafkaError),
}

/// Reads `topic`'s metadata, trying for up to [`METADATA_TIMEOUT`] in one-second
/// attempts, and serving the client's events in between: a broker that refuses the
/// client is reported at once, with librdkafka's reason, not after the timeout as a
/// transport failure.
fn fetch_metadata(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
) -> std::result::Result<rdkafka::metadata::Metadata, Fetch> {
    let attempt = Duration::from_secs(1);
    let started = std::time::Instant::now();
    loop {
        let e = match consumer.fetch_metadata(Some(topic), attempt) {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        // Log and error events (a failed authentication) arrive through the main
        // queue; a poll with a timeout serves every one that arrives within it (one
        // without a timeout stops after the first).
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            tracing::warn!(topic = m.topic(), "kafka: a message before any assignment");
        }
        let refused = consumer
            .context()
            .group
            .error
            .lock()
            .expect("group lock")
            .take();
        if let Some(refused) = refused {
            return Err(Fetch::Refused(refused));
        }
        if started.elapsed() + attempt > METADATA_TIMEOUT {
            return Err(Fetch::Failed(e));
        }
    }
}

/// (topic, partition number) per source partition id.
type TopicPartitions = Vec<(String, i32)>;

/// The source partitions of `topics` (each with its partition numbers, in the same
/// order), topic by topic, and their units: with one topic every partition is a unit;
/// with several, partition N of every topic is unit N, named `a+b/N`, which needs the
/// topics co-partitioned (the same partition numbers).
fn units(topics: &[String], numbers: &[Vec<i32>]) -> Result<(Vec<PartitionInfo>, TopicPartitions)> {
    if numbers.iter().any(|n| *n != numbers[0]) {
        return Err(Error::NotCoPartitioned {
            topics: topics
                .iter()
                .zip(numbers)
                .map(|(t, n)| (t.clone(), n.len()))
                .collect(),
        });
    }
    let joined = topics.join("+");
    let mut partitions = Vec::new();
    let mut ids = Vec::new();
    for (stream, (topic, numbers)) in topics.iter().zip(numbers).enumerate() {
        for (unit, &n) in numbers.iter().enumerate() {
            let name = format!("{topic}/{n}");
            let id = partitions.len() as u32;
            partitions.push(match topics.len() {
                1 => PartitionInfo::single(id, name),
                _ => PartitionInfo {
                    id,
                    name,
                    unit: unit as u32,
                    unit_name: format!("{joined}/{n}"),
                    stream: stream as u16,
                },
            });
            ids.push((topic.clone(), n));
        }
    }
    Ok((partitions, ids))
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Connects and reads the topics' partitions. Without a consumer group listener
    /// (see [`Source::set_assignment_listener`]) the first poll assigns every
    /// partition at `resume`.
    pub(crate) fn open(config: &KafkaConfig, resume: &Resume) -> Result<Self> {
        let mut client = client_config(&config.brokers, &config.properties);
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        if client.get("fetch.wait.max.ms").is_none() {
            // librdkafka's 500 ms default makes --once wait that long at every end.
            client.set("fetch.wait.max.ms", "100");
        }
        if client.get("fetch.queue.backoff.ms").is_none() {
            // librdkafka waits this long to fetch again once a partition's prefetch
            // queue passed `queued.min.messages`; its 1 s default left the engine idle
            // for up to a second after draining the queue (BENCHMARKS.md has the
            // before and after).
            client.set("fetch.queue.backoff.ms", "50");
        }
        if client.get("statistics.interval.ms").is_none() {
            // High watermarks for /status (lag).
            client.set("statistics.interval.ms", "1000");
        }
        if client.get("auto.offset.reset").is_none() {
            // A checkpointed offset the topic no longer has (retention): the oldest
            // retained message for `earliest`, as for a partition without a checkpoint.
            let reset = match config.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            };
            client.set("auto.offset.reset", reset);
        }
        if config.topics.len() > 1 {
            // Partition N of every topic is one state unit, which only the range
            // assignor gives to one member whole (for co-partitioned topics).
            match client.get("partition.assignment.strategy") {
                None => {
                    client.set("partition.assignment.strategy", "range");
                }
                Some("range") => {}
                Some(other) => {
                    return Err(Error::AssignmentStrategy {
                        strategy: other.to_string(),
                    });
                }
            }
        }
        if client.get("partition.assignment.strategy").is_none() {
            // Incremental rebalancing: when a member joins or leaves, only the
            // partitions that move are revoked (checkpointed) and assigned (restored);
            // the others keep being read. The eager default stops every member and
            // moves every partition through the checkpoint store.
            client.set("partition.assignment.strategy", "cooperative-sticky");
        }
        let consumer: BaseConsumer<SourceContext> = client
            .create_with_context(SourceContext::default())
            .map_err(|e| Error::kafka("creating the consumer", e))?;
        let consumer = Arc::new(consumer);
        let _ = consumer
            .context()
            .group
            .consumer
            .set(Arc::downgrade(&consumer));
        let _ = consumer.context().group.start_from.set(config.start_from);
        let _ = consumer.context().brokers.set(config.brokers.clone());

        // Each topic's partition numbers, in topic order.
        let mut numbers: Vec<Vec<i32>> = Vec::with_capacity(config.topics.len());
        for topic in &config.topics {
            let metadata = fetch_metadata(&consumer, topic).map_err(|e| match e {
                Fetch::Refused(refused) => refused,
                Fetch::Failed(e) => Error::kafka(
                    format!(
                        "reading the metadata of topic '{topic}' from {}",
                        config.brokers
                    ),
                    e,
                ),
            })?;
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(Error::TopicNotFound {
                    topic: topic.clone(),
                    brokers: config.brokers.clone(),
                });
            };
            if let Some(e) = t.error() {
                return Err(Error::Topic {
                    topic: topic.clone(),
                    brokers: config.brokers.clone(),
                    source: rdkafka::error::RDKafkaErrorCode::from(e),
                });
            }
            let mut n: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            n.sort_unstable();
            if n.is_empty() {
                return Err(Error::NoPartitions {
                    topic: topic.clone(),
                });
            }
            numbers.push(n);
        }
        let (partitions, ids) = units(&config.topics, &numbers)?;
        let map = ids
            .iter()
            .enumerate()
            .map(|(id, tp)| (tp.clone(), id as u32))
            .collect();
        let _ = consumer.context().group.ids.set(map);
        Ok(KafkaSource {
            last_check: std::time::Instant::now(),
            consumer,
            partitions,
            topic_partitions: ids,
            topics: config.topics.clone(),
            resume: resume.clone(),
            start_from: config.start_from,
            started: false,
            group: false,
            queues: BTreeMap::new(),
            at_end: BTreeSet::new(),
            stop_at_end: config.stop_at_end,
            with_metadata: config.with_metadata,
            arrivals: Arc::default(),
            next_queue: 0,
        })
    }

    /// Assigns every partition at `self.resume` (no consumer group).
    fn assign_all(&mut self) -> Result<()> {
        let mut assignment = TopicPartitionList::new();
        for (id, (topic, n)) in self.topic_partitions.iter().enumerate() {
            let offset = match (self.resume.get(&(id as u32)), self.start_from) {
                (Some(next), _) => Offset::Offset(*next as i64),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
            };
            assignment
                .add_partition_offset(topic, *n, offset)
                .map_err(|e| Error::kafka("building the assignment", e))?;
            // Split before assigning: see `Group` (group.rs).
            let mut queue = self
                .consumer
                .split_partition_queue(topic, *n)
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "cannot read partition {topic}/{n} on its own queue"
                    ))
                })?;
            self.arrivals.watch(&mut queue);
            self.queues.insert(id as u32, queue);
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| Error::kafka("assigning partitions", e))
    }

    /// Applies what rebalances changed, in order.
    fn apply_changes(&mut self) {
        let changes = std::mem::take(
            &mut *self
                .consumer
                .context()
                .group
                .changes
                .lock()
                .expect("group lock"),
        );
        for change in changes {
            match change {
                Change::Assigned(queues) => {
                    for (id, mut queue) in queues {
                        self.at_end.remove(&id);
                        self.arrivals.watch(&mut queue);
                        self.queues.insert(id, queue);
                    }
                }
                Change::Revoked(ids) => {
                    for id in ids {
                        self.at_end.remove(&id);
                        self.queues.remove(&id);
                    }
                }
            }
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Queues hold the consumer: the ones not yet taken would keep it (and its
        // group membership) alive.
        self.consumer
            .context()
            .group
            .changes
            .lock()
            .expect("group lock")
            .clear();
        self.queues.clear();
    }
}

impl Source for KafkaSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        self.partitions.clone()
    }

    fn set_assignment_listener(&mut self, listener: Box<dyn AssignmentListener>) -> bool {
        if self.stop_at_end {
            // `--once` is a batch run over every partition, whatever else is in the
            // group (a killed member the group still counts would otherwise keep half
            // of them): the engine assigns them all, and the checkpoints, not the
            // group, hold the offsets.
            return false;
        }
        *self
            .consumer
            .context()
            .group
            .listener
            .lock()
            .expect("group lock") = Some(listener);
        self.group = true;
        true
    }

    fn wait(&mut self, timeout: Duration) {
        self.arrivals.wait(timeout);
    }

    fn high_watermarks(&self) -> Resume {
        self.consumer
            .context()
            .watermarks
            .lock()
            .expect("watermarks lock")
            .clone()
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
        // Only partitions this instance still owns: another member commits its own.
        let owned: Resume = offsets
            .iter()
            .filter(|(id, _)| self.queues.contains_key(id))
            .map(|(id, o)| (*id, *o))
            .collect();
        if let Some(ids) = self.consumer.context().group.ids.get() {
            commit_offsets(&self.consumer, ids, &owned);
        }
    }

    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll> {
        if !self.started {
            self.started = true;
            if self.group {
                let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                self.consumer
                    .subscribe(&topics)
                    .map_err(|e| Error::kafka("subscribing", e))?;
            } else {
                self.assign_all()?;
            }
        }
        // The main queue carries rebalances, errors and events; serving it also keeps
        // the client's heartbeats going. Messages are on the partition queues.
        for _ in 0..64 {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Ok(m)) => {
                    return Err(Error::Internal(format!(
                        "kafka: internal error: a message of {}/{} arrived outside its \
                         partition queue",
                        m.topic(),
                        m.partition()
                    )));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer"),
            }
        }
        if let Some(e) = self
            .consumer
            .context()
            .group
            .error
            .lock()
            .expect("group lock")
            .take()
        {
            return Err(e);
        }
        self.apply_changes();
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
        let ids: Vec<u32> = self.queues.keys().copied().collect();
        let n = ids.len();
        let mut appended = 0;
        // Round robin over the partitions, a bounded share each, until the batch is
        // full or every queue came back empty once in a row.
        if let Some(share) = max_records.checked_div(n) {
            let share = share.max(64);
            let mut idle_queues = 0;
            while appended < max_records && idle_queues < n {
                self.next_queue = (self.next_queue + 1) % n;
                let id = ids[self.next_queue];
                let queue = &self.queues[&id];
                let mut taken = 0;
                while taken < share && appended < max_records {
                    match queue.poll(Duration::ZERO) {
                        None => break,
                        Some(Ok(m)) => {
                            let start = out.data.len();
                            out.data.extend_from_slice(m.payload().unwrap_or_default());
                            out.records.push(RawRecord {
                                partition: id,
                                offset: m.offset() as u64,
                                start,
                                end: out.data.len(),
                                tombstone: m.payload().is_none(),
                            });
                            if self.with_metadata {
                                push_meta(out, &m);
                            }
                            taken += 1;
                            appended += 1;
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) => {
                            self.at_end.insert(id);
                            break;
                        }
                        Some(Err(e)) => {
                            // librdkafka retries by itself (broker down, leader moved):
                            // report it and let the engine poll again.
                            let name = &self.partitions[id as usize].name;
                            tracing::warn!(partition = %name, error = %e, "kafka");
                            break;
                        }
                    }
                }
                idle_queues = if taken == 0 { idle_queues + 1 } else { 0 };
            }
        }
        if appended > 0 {
            // A broker answered: not degraded (once per poll, not per message).
            *down.lock().expect("broker state lock") = None;
            Ok(Poll::Ready)
        } else if self.stop_at_end && n > 0 && self.queues.keys().all(|id| self.at_end.contains(id))
        {
            // Every partition this instance owns was read to the end it had when the
            // fetches reached it.
            Ok(Poll::Exhausted)
        } else {
            Ok(Poll::Idle)
        }
    }
}
/// Appends a message's key, timestamp and headers to the batch.
fn push_meta(out: &mut RawBatch, m: &rdkafka::message::BorrowedMessage<'_>) {
    use rdkafka::message::Headers;
    let timestamp = m.timestamp().to_millis();
    match m.headers() {
        Some(h) => out.push_meta(m.key(), timestamp, h.iter().map(|h| (h.key, h.value))),
        None => out.push_meta(m.key(), timestamp, []),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn one_topic_makes_one_unit_per_partition() {
        let (partitions, ids) = units(&topics(&["bank"]), &[vec![0, 1]]).unwrap();
        assert_eq!(
            partitions,
            [
                PartitionInfo::single(0, "bank/0"),
                PartitionInfo::single(1, "bank/1")
            ]
        );
        assert_eq!(ids, [("bank".to_string(), 0), ("bank".to_string(), 1)]);
    }

    #[test]
    fn partition_n_of_every_topic_is_one_unit() {
        let (partitions, _) =
            units(&topics(&["orders", "payments"]), &[vec![0, 1], vec![0, 1]]).unwrap();
        let seen: Vec<(&str, u32, &str, u16)> = partitions
            .iter()
            .map(|p| (p.name.as_str(), p.unit, p.unit_name.as_str(), p.stream))
            .collect();
        assert_eq!(
            seen,
            [
                ("orders/0", 0, "orders+payments/0", 0),
                ("orders/1", 1, "orders+payments/1", 0),
                ("payments/0", 0, "orders+payments/0", 1),
                ("payments/1", 1, "orders+payments/1", 1),
            ]
        );
        assert_eq!(
            partitions.iter().map(|p| p.id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn topics_that_do_not_pair_up_are_refused_with_their_counts() {
        let e = units(
            &topics(&["orders", "payments"]),
            &[vec![0, 1, 2], vec![0, 1]],
        )
        .unwrap_err();
        assert_eq!(e.code(), "source.kafka.not_copartitioned");
        let text = e.to_string();
        assert!(text.contains("'orders', 'payments'"), "{text}");
        assert!(text.contains("orders: 3, payments: 2"), "{text}");
        assert!(text.contains("same number of partitions"), "{text}");
    }
}
