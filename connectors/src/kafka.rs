//! Kafka topics as a source (rdkafka, bundled librdkafka), and the producers behind
//! `projector produce` and the dead-letter topic.
//!
//! ```text
//!  topics ──metadata──▶ partitions (topic/0, topic/1, ...) = source partitions
//!         ──subscribe (group_id)──▶ rebalance: the engine restores assigned partitions
//!                                   and says where each resumes; revoked ones are
//!                                   checkpointed before the group goes on
//!         ──poll──▶ one queue per assigned partition ──▶ RawBatch (value, partition,
//!                   offset; key, timestamp and headers when asked)
//! ```
//!
//! Offsets of record live in Projector's checkpoints: the group assigns partitions and
//! the engine's [`AssignmentListener`] says where each starts; group offsets are only
//! committed for lag tools. Without a listener the source assigns every partition
//! itself at the offsets it was opened with. With `stop_at_end` (`--once`) a partition
//! is finished at its first end-of-partition event: Tansu, our test broker, reports a
//! wrong high watermark through ListOffsets, while the end seen by a fetch is right.

use crate::source::{AssignmentListener, PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source};
use crate::{Error, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
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
    /// Fill [`RawBatch::meta`] (key, timestamp, headers); set by the engine when the
    /// pipeline reads `$kafka.*` fields or dead-letters to a topic.
    pub with_metadata: bool,
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
/// It also remembers whether every broker is down, for [`Source::degraded`], and runs
/// consumer-group rebalances (see `Group`).
#[derive(Default)]
pub struct SourceContext {
    all_brokers_down: Arc<Mutex<Option<String>>>,
    group: Group,
    /// Source partition id → high watermark, from librdkafka's statistics (the fetch
    /// responses' high watermarks: Tansu answers ListOffsets wrongly).
    watermarks: Mutex<Resume>,
}

impl std::fmt::Debug for SourceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceContext").finish_non_exhaustive()
    }
}

/// What a rebalance hands from the context (inside `poll`) to the source.
enum Change {
    /// Partitions now ours, with their queues (split before the assignment).
    Assigned(Vec<(u32, PartitionQueue<SourceContext>)>),
    /// Partitions no longer ours.
    Revoked(Vec<u32>),
}

/// Consumer-group membership: the engine's listener, the partition ids, and the changes
/// the source applies after each poll of the main queue.
///
/// Each partition's queue is split off *before* the partition is assigned: a queue
/// split afterwards may already have forwarded messages to the main queue, and reading
/// those after later ones from the split queue would reorder the partition.
#[derive(Default)]
struct Group {
    listener: Mutex<Option<Box<dyn AssignmentListener>>>,
    /// (topic, partition number) → source partition id; set once metadata is read.
    ids: OnceLock<HashMap<(String, i32), u32>>,
    consumer: OnceLock<Weak<BaseConsumer<SourceContext>>>,
    start_from: OnceLock<StartFrom>,
    changes: Mutex<Vec<Change>>,
    /// Source partitions assigned now.
    assigned: Mutex<BTreeSet<u32>>,
    /// Why the group cannot go on (the listener failed), for the next poll to report.
    error: Mutex<Option<String>>,
}

impl Group {
    fn fail(&self, why: String) {
        let mut e = self.error.lock().expect("group lock");
        if e.is_none() {
            *e = Some(why);
        }
    }

    fn ids_of(&self, tpl: &TopicPartitionList) -> std::result::Result<Vec<u32>, String> {
        let ids = self
            .ids
            .get()
            .ok_or("kafka: rebalance before the metadata was read")?;
        tpl.elements()
            .iter()
            .map(|e| {
                ids.get(&(e.topic().to_string(), e.partition()))
                    .copied()
                    .ok_or_else(|| {
                        format!(
                            "kafka: partition {}/{} appeared after the start (were partitions \
                             added?); restart Projector to read it",
                            e.topic(),
                            e.partition()
                        )
                    })
            })
            .collect()
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        tpl: &mut TopicPartitionList,
    ) -> std::result::Result<(), String> {
        let ids = self.ids_of(tpl)?;
        let resume = match &mut *self.listener.lock().expect("group lock") {
            Some(l) => l.assigned(&ids)?,
            None => Resume::new(),
        };
        let start = self.start_from.get().copied().unwrap_or_default();
        let elements: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let me = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .ok_or("kafka: the consumer is closing")?;
        let mut queues = Vec::with_capacity(ids.len());
        for ((topic, n), id) in elements.iter().zip(&ids) {
            let offset = match (resume.get(id), start) {
                (Some(next), _) => Offset::Offset(*next as i64),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
            };
            tpl.set_partition_offset(topic, *n, offset)
                .map_err(|e| format!("kafka: setting the offset of {topic}/{n}: {e}"))?;
            let queue = me
                .split_partition_queue(topic, *n)
                .ok_or_else(|| format!("kafka: cannot read {topic}/{n} on its own queue"))?;
            queues.push((*id, queue));
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        assigned.map_err(|e| format!("kafka: assigning partitions: {e}"))?;
        self.assigned.lock().expect("group lock").extend(&ids);
        self.changes
            .lock()
            .expect("group lock")
            .push(Change::Assigned(queues));
        Ok(())
    }

    fn revoke(&self, consumer: &BaseConsumer<SourceContext>, ids: Vec<u32>, lost: bool) {
        let checkpointed = match &mut *self.listener.lock().expect("group lock") {
            Some(l) => l.revoked(&ids, lost).unwrap_or_else(|e| {
                self.fail(e);
                Resume::new()
            }),
            None => Resume::new(),
        };
        // The checkpoint the next owner starts from, for lag tools, while this member
        // still owns the partitions.
        if !lost && let Some(ids) = self.ids.get() {
            commit_offsets(consumer, ids, &checkpointed);
        }
        let mut assigned = self.assigned.lock().expect("group lock");
        for id in &ids {
            assigned.remove(id);
        }
        self.changes
            .lock()
            .expect("group lock")
            .push(Change::Revoked(ids));
    }
}

impl rdkafka::ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            *self.all_brokers_down.lock().expect("broker state lock") = Some(reason.to_string());
        }
        tracing::warn!(%error, reason, "kafka");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(ids) = self.group.ids.get() else {
            return;
        };
        let mut marks = self.watermarks.lock().expect("watermarks lock");
        for (topic, t) in statistics.topics {
            for (n, p) in t.partitions {
                if let (Some(id), Ok(hi)) =
                    (ids.get(&(topic.clone(), n)), u64::try_from(p.hi_offset))
                {
                    marks.insert(*id, hi);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for SourceContext {
    /// Runs on the thread polling the consumer. The engine restores assigned partitions
    /// before they are assigned (so they start at their checkpoint) and checkpoints
    /// revoked ones before they are let go (so the next owner starts where this one
    /// stopped): both may take a while, and the group waits.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let group = &self.group;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = group.assign(consumer, tpl) {
                    group.fail(e);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                match group.ids_of(tpl) {
                    Ok(ids) => group.revoke(consumer, ids, lost),
                    Err(e) => group.fail(e),
                }
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    group.fail(format!("kafka: unassigning partitions: {e}"));
                }
            }
            other => {
                // librdkafka's advice: give everything up and let the group start over.
                tracing::warn!(error = ?other, "kafka: rebalance failed; giving up the assignment");
                let ids: Vec<u32> = group
                    .assigned
                    .lock()
                    .expect("group lock")
                    .iter()
                    .copied()
                    .collect();
                group.revoke(consumer, ids, true);
                let _ = consumer.unassign();
            }
        }
    }
}

/// Wakes the ingest thread when records arrive instead of letting it sleep a fixed
/// time: librdkafka calls a queue's callback when the queue goes from empty to not
/// empty. Backpressure needs no pause: while the engine is behind it does not poll, and
/// librdkafka stops fetching once its prefetch queue holds `queued.max.messages.kbytes`
/// (pausing would be worse: librdkafka drops a paused partition's prefetched messages
/// and fetches them again on resume, which halved the throughput measured in issue 4).
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
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<SourceContext>>,
    partitions: Vec<PartitionInfo>,
    /// (topic, partition number) per source partition id.
    topic_partitions: Vec<(String, i32)>,
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
        if client.get("fetch.queue.backoff.ms").is_none() {
            // librdkafka waits this long to fetch again once a partition's prefetch
            // queue passed `queued.min.messages`; its 1 s default left the engine idle
            // for up to a second after draining the queue (500K events/s instead of
            // 750K on the issue-4 benchmark).
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
        let consumer: BaseConsumer<SourceContext> = client
            .create_with_context(SourceContext::default())
            .map_err(|e| kafka("creating the consumer", &e))?;
        let consumer = Arc::new(consumer);
        let _ = consumer
            .context()
            .group
            .consumer
            .set(Arc::downgrade(&consumer));
        let _ = consumer.context().group.start_from.set(config.start_from);

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
                .map_err(|e| kafka("building the assignment", &e))?;
            // Split before assigning: see `Group`.
            let mut queue = self
                .consumer
                .split_partition_queue(topic, *n)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "cannot read partition {topic}/{n} on its own queue"
                    ))
                })?;
            self.arrivals.watch(&mut queue);
            self.queues.insert(id as u32, queue);
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| kafka("assigning partitions", &e))
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

fn kafka(doing: &str, e: &KafkaError) -> Error {
    Error::Config(format!("kafka: {doing}: {e}"))
}

impl Source for KafkaSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        self.partitions.clone()
    }

    fn set_assignment_listener(&mut self, listener: Box<dyn AssignmentListener>) -> bool {
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
                    .map_err(|e| kafka("subscribing", &e))?;
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
                    return Err(Error::Failed(format!(
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
            return Err(Error::Failed(e));
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

/// Commits `offsets` (source partition id → next offset) to the consumer group, for lag
/// tools only. Best effort: a failed commit only makes lag tools lag. Synchronous (one
/// round trip per checkpoint), so the commit of the final checkpoint is not lost when
/// the process exits right after it.
fn commit_offsets(
    consumer: &BaseConsumer<SourceContext>,
    ids: &HashMap<(String, i32), u32>,
    offsets: &Resume,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, n), id) in ids {
        if let Some(next) = offsets.get(id)
            && tpl
                .add_partition_offset(topic, *n, Offset::Offset(*next as i64))
                .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
        tracing::debug!(error = %e, "kafka: committing group offsets");
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
pub fn producer_properties(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .filter(|(k, _)| !CONSUMER_ONLY.iter().any(|c| k.starts_with(c)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Remembers the first message librdkafka could not deliver.
#[derive(Default)]
pub struct DeliveryContext {
    failed: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryContext {}

impl rdkafka::producer::ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut f = self.failed.lock().expect("delivery lock");
            if f.is_none() {
                *f = Some(format!(
                    "delivering to {}/{}: {e}",
                    m.topic(),
                    m.partition()
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
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000");
        let producer = config
            .create_with_context(DeliveryContext::default())
            .map_err(|e| kafka("creating the producer", &e))?;
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
                Err((e, _)) => return Err(kafka(&format!("producing to '{}'", self.topic), &e)),
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
            .map_err(|e| kafka(&format!("flushing to '{}'", self.topic), &e))?;
        match self
            .producer
            .context()
            .failed
            .lock()
            .expect("delivery lock")
            .take()
        {
            Some(why) => Err(Error::Failed(format!("kafka: {why}"))),
            None => Ok(()),
        }
    }
}

/// The headers the dead-letter topic gives a letter (its value is the record's bytes,
/// its key the record's key).
pub mod dead_letter_headers {
    /// The error code, e.g. `decode.invalid_json`.
    pub const CODE: &str = "projector.error.code";
    /// The error message.
    pub const MESSAGE: &str = "projector.error.message";
    /// The source partition as Projector names it (`bank-events/3`, `file:x.ndjson`).
    pub const SOURCE: &str = "projector.source";
    /// The source topic (Kafka sources).
    pub const TOPIC: &str = "projector.source.topic";
    /// The source partition number (Kafka sources).
    pub const PARTITION: &str = "projector.source.partition";
    /// The record's offset in its partition.
    pub const OFFSET: &str = "projector.source.offset";
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
    use rdkafka::message::Headers;
    let mut client = client_config(brokers, properties);
    client
        .set("group.id", "projector-dead-letter-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<SourceContext> = client
        .create_with_context(SourceContext::default())
        .map_err(|e| kafka("creating the dead-letter reader", &e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| kafka(&format!("reading the metadata of topic '{topic}'"), &e))?;
    let mut tpl = TopicPartitionList::new();
    if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| kafka("building the assignment", &e))?;
        }
    }
    let count = tpl.count();
    let mut ended = BTreeSet::new();
    let mut found = crate::dead_letter::Written::new();
    if count == 0 {
        return Ok(found);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka(&format!("reading dead-letter topic '{topic}'"), &e))?;
    let deadline = std::time::Instant::now() + METADATA_TIMEOUT * 3;
    while ended.len() < count {
        if std::time::Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "kafka: reading dead-letter topic '{topic}' to its end took too long"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka: reading dead letters"),
            Some(Ok(m)) => {
                let Some(headers) = m.headers() else { continue };
                let (mut source, mut offset) = (None, None);
                for h in headers.iter() {
                    match h.key {
                        dead_letter_headers::SOURCE => source = h.value,
                        dead_letter_headers::OFFSET => offset = h.value,
                        _ => {}
                    }
                }
                let offset = offset
                    .and_then(|o| std::str::from_utf8(o).ok())
                    .and_then(|o| o.parse::<u64>().ok());
                let source = source.and_then(|s| std::str::from_utf8(s).ok());
                if let (Some(name), Some(o)) = (source, offset)
                    && let Some((_, from)) = partitions.iter().find(|(p, _)| *p == name)
                    && o >= *from
                {
                    found.entry(name.to_string()).or_default().insert(o);
                }
            }
        }
    }
    Ok(found)
}
