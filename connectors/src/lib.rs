//! Sources and sinks: where records come from and where bad ones go.
//!
//! ```text
//!  generator ─┐
//!  nexmark   ─┤
//!  file/stdin ┼─▶ Source::poll ──▶ RawBatch (bytes + partition + offset) ──▶ engine (decode, route)
//!  (kafka)   ─┘
//!
//!  engine ──▶ DeadLetterFile (raw bytes, error, position) ──▶ <state_dir>/dead-letters.ndjson
//! ```
//!
//! Sources know nothing of decoding or views: they hand out raw bytes with their
//! position, and can be opened at a resume point.

pub mod baseline;
pub mod dead_letter;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod nexmark;
pub mod replay;
pub mod source;

pub use source::{
    AssignmentListener, PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source, SourceConfig,
    open,
};

/// Errors of sources and sinks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What failed, e.g. "reading events.ndjson".
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration value the connector cannot use.
    #[error("{0}")]
    Config(String),
    /// A running source cannot go on (the reason says why).
    #[error("{0}")]
    Failed(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
