//! Kafka topics as a source (rdkafka, bundled librdkafka), and the producers behind
//! `projector produce` and the dead-letter topic.
//!
//! ```text
//!  topics ──metadata──▶ partitions (topic/0, topic/1, ...) = source partitions
//!                       (several topics: partition N of each is one unit of state)
//!         ──subscribe (group_id)──▶ rebalance: the engine restores assigned partitions
//!                                   and says where each resumes; revoked ones are
//!                                   checkpointed before the group goes on
//!         ──poll──▶ one queue per assigned partition ──▶ RawBatch (value, partition,
//!                   offset; key, timestamp and headers when asked)
//! ```
//!
//! Offsets of record live in Projector's checkpoints: the group assigns partitions and
//! the engine's [`AssignmentListener`](crate::AssignmentListener) says where each
//! starts; group offsets are only committed for lag tools. Without a listener the
//! source assigns every partition itself at the offsets it was opened with. With
//! `stop_at_end` (`--once`) a partition is finished at its first end-of-partition
//! event: Tansu, our test broker, reports a wrong high watermark through ListOffsets,
//! while the end seen by a fetch is right.
//!
//! * `config`: [`KafkaConfig`], [`StartFrom`], [`Partitioner`] (plain data, in every build) and
//!   `client_config`, which builds every client.
//! * `group`: the consumer's context: consumer-group rebalances, broker state, high
//!   watermarks.
//! * `source`: `KafkaSource`, the [`Source`](crate::Source) reading the partitions.
//! * `producer`: `EventProducer`, for `projector produce` and the dead-letter topic.
//! * `admin`: `ensure_topic`, and `letters_in_topic`, which reads a dead-letter topic.
//!
//! Everything but the configuration types and [`dead_letter_headers`] needs the
//! `kafka` feature.

mod config;

#[cfg(feature = "kafka")]
mod admin;
#[cfg(feature = "kafka")]
mod group;
#[cfg(feature = "kafka")]
mod producer;
#[cfg(feature = "kafka")]
mod source;

pub use config::{KafkaConfig, Partitioner, StartFrom};

#[cfg(feature = "kafka")]
pub use admin::{ensure_topic, letters_in_topic, low_watermarks, read_letters_in_topic};
#[cfg(feature = "kafka")]
pub use config::{check_properties, client_config};
#[cfg(feature = "kafka")]
pub use producer::EventProducer;
#[cfg(feature = "kafka")]
pub(crate) use source::KafkaSource;

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
    /// The event id, when the record decoded far enough to read it.
    pub const EVENT_ID: &str = "projector.event.id";
    /// The event's correlation id, when the envelope maps one.
    pub const CORRELATION_ID: &str = "projector.event.correlation_id";
    /// The event's causation id, when the envelope maps one.
    pub const CAUSATION_ID: &str = "projector.event.causation_id";
}
