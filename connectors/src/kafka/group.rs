//! The consumer's context: consumer-group rebalances, broker state and high
//! watermarks, as librdkafka reports them from inside a poll.
//!
//! ```text
//!  librdkafka (inside poll) ──rebalance──▶ Group::assign / Group::revoke
//!                                          (engine's AssignmentListener, then
//!                                           Change queued for the source)
//!                           ──error──────▶ all brokers down? (Source::degraded)
//!                           ──stats──────▶ high watermarks (lag)
//! ```

use crate::source::{AssignmentListener, Resume};
use crate::{Error, Result};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::StartFrom;

/// The consumer's context: librdkafka reports the end of a partition, which `--once`
/// relies on and is normal while following a topic, as a global error; the default
/// context would log every one of them as an ERROR.
/// It also remembers whether every broker is down, for
/// [`Source::degraded`](crate::Source::degraded), and runs consumer-group rebalances
/// (see [`Group`]).
#[derive(Default)]
pub(crate) struct SourceContext {
    /// Why every broker is down (librdkafka's reason), while they are.
    pub(super) all_brokers_down: Arc<Mutex<Option<String>>>,
    pub(super) group: Group,
    /// Source partition id → high watermark, from librdkafka's statistics (the fetch
    /// responses' high watermarks: Tansu answers ListOffsets wrongly).
    pub(super) watermarks: Mutex<Resume>,
    /// The bootstrap servers, for errors.
    pub(super) brokers: OnceLock<String>,
}

impl std::fmt::Debug for SourceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceContext").finish_non_exhaustive()
    }
}

/// What a rebalance hands from the context (inside `poll`) to the source.
pub(super) enum Change {
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
pub(super) struct Group {
    pub(super) listener: Mutex<Option<Box<dyn AssignmentListener>>>,
    /// (topic, partition number) → source partition id; set once metadata is read.
    pub(super) ids: OnceLock<HashMap<(String, i32), u32>>,
    pub(super) consumer: OnceLock<Weak<BaseConsumer<SourceContext>>>,
    pub(super) start_from: OnceLock<StartFrom>,
    pub(super) changes: Mutex<Vec<Change>>,
    /// Source partitions assigned now.
    assigned: Mutex<BTreeSet<u32>>,
    /// Why the group cannot go on (the listener failed), for the next poll to report.
    pub(super) error: Mutex<Option<Error>>,
}

impl Group {
    fn fail(&self, why: Error) {
        let mut e = self.error.lock().expect("group lock");
        if e.is_none() {
            *e = Some(why);
        }
    }

    fn ids_of(&self, tpl: &TopicPartitionList) -> Result<Vec<u32>> {
        let ids = self.ids.get().ok_or_else(|| {
            Error::Internal("kafka: rebalance before the metadata was read".into())
        })?;
        tpl.elements()
            .iter()
            .map(|e| {
                ids.get(&(e.topic().to_string(), e.partition()))
                    .copied()
                    .ok_or_else(|| Error::NewPartition {
                        topic: e.topic().to_string(),
                        partition: e.partition(),
                    })
            })
            .collect()
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        tpl: &mut TopicPartitionList,
    ) -> Result<()> {
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
            .ok_or_else(|| Error::Internal("kafka: the consumer is closing".into()))?;
        let mut queues = Vec::with_capacity(ids.len());
        for ((topic, n), id) in elements.iter().zip(&ids) {
            let offset = match (resume.get(id), start) {
                (Some(next), _) => Offset::Offset(*next as i64),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
            };
            tpl.set_partition_offset(topic, *n, offset)
                .map_err(|e| Error::kafka(format!("setting the offset of {topic}/{n}"), e))?;
            let queue = me.split_partition_queue(topic, *n).ok_or_else(|| {
                Error::Internal(format!("kafka: cannot read {topic}/{n} on its own queue"))
            })?;
            queues.push((*id, queue));
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        assigned.map_err(|e| Error::kafka("assigning partitions", e))?;
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
                self.fail(e.into());
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

/// Whether librdkafka's reason says the brokers refused this client: a failed SASL
/// authentication or an untrusted certificate, which are configuration errors, not
/// outages (retrying would only hide them).
fn refusal(reason: &str) -> bool {
    reason.contains("SASL authentication error") || reason.contains("certificate verify failed")
}

impl SourceContext {
    /// Records a refusal for the next poll (or the metadata read) to report.
    fn refused(&self, reason: &str) {
        let brokers = self.brokers.get().cloned().unwrap_or_default();
        self.group.fail(Error::Refused {
            brokers,
            reason: reason.to_string(),
        });
    }
}

impl rdkafka::ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.all_brokers_down.lock().expect("broker state lock") = Some(reason.to_string());
        }
        if code == Some(RDKafkaErrorCode::Authentication)
            || (code == Some(RDKafkaErrorCode::SSL) && refusal(reason))
        {
            self.refused(reason);
        }
        tracing::warn!(%error, reason, "kafka");
    }

    /// librdkafka logs a broker connection's failure (`FAIL`) at once, while the error
    /// event for it may wait for the next retry (seconds later): a refusal is caught
    /// here first.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if fac == "FAIL" && refusal(log_message) {
            self.refused(log_message);
        }
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {log_message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
        }
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
                    group.fail(Error::kafka("unassigning partitions", e));
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

/// Commits `offsets` (source partition id → next offset) to the consumer group, for lag
/// tools only. Best effort: a failed commit only makes lag tools lag. Synchronous (one
/// round trip per checkpoint), so the commit of the final checkpoint is not lost when
/// the process exits right after it.
pub(super) fn commit_offsets(
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
