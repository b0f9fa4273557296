//! Sources and sinks: where records come from and where bad ones go.
//!
//! ```text
//!  generator ─┐
//!  nexmark   ─┤
//!  file/stdin ┼─▶ Source::poll ──▶ RawBatch (bytes + partition + offset) ──▶ engine (decode, route)
//!  kafka     ─┘   (feature `kafka`; consumer-group rebalances go through the engine's
//!                  AssignmentListener)
//!
//!  engine ──▶ DeadLetterFile (raw bytes, error, position) ──▶ <state_dir>/dead-letters.ndjson
//!         ──▶ kafka::EventProducer (feature `kafka`) ──────▶ dead-letter topic
//! ```
//!
//! Sources know nothing of decoding or views: they hand out raw bytes with their
//! position, and can be opened at a resume point.
//!
//! The default `kafka` feature brings the Kafka client (rdkafka). Without it the Kafka
//! configuration types remain (a pipeline's config still parses) and opening a Kafka
//! source fails with [`Error::NoKafkaSupport`].

pub mod dead_letter;
mod error;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod nexmark;
pub mod source;

pub use error::{Error, Result};
pub use source::{
    AssignmentError, AssignmentListener, PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source,
    SourceConfig, open,
};
