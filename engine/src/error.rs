//! The runtime's errors. Every kind has a stable code ([`Error::code`],
//! [`Fatal::code`]); messages are for people and nothing parses them.

use crate::state::checkpoint::CheckpointError;
use std::sync::Arc;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What failed.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The source could not be opened or read.
    #[error("source: {0}")]
    Source(#[from] projector_connectors::Error),
    /// A checkpoint could not be written or restored.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The pipeline stopped itself (bad record under `on_error: fail`, ...).
    #[error("{0}")]
    Fatal(Fatal),
    /// The pipeline is stopping.
    #[error("pipeline stopped")]
    Stopped,
}

impl Error {
    /// The stable code of this kind of error, e.g. `checkpoint.epoch_exists`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Source(e) => e.code(),
            Error::Checkpoint(e) => e.code(),
            Error::Fatal(f) => f.code(),
            Error::Stopped => "pipeline.stopped",
        }
    }
}

/// Why a running pipeline stopped itself. Every thread of the pipeline, its status
/// page and its caller read it, so it is cheap to clone and keeps its causes shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fatal {
    /// A bad record under `on_error: fail`.
    #[error("bad record at {partition} offset {offset}: {code}: {message}")]
    BadRecord {
        /// The record's partition.
        partition: String,
        /// The record's offset.
        offset: u64,
        /// The dead-letter code of what is wrong with it, e.g. `decode.invalid_json`.
        code: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A dead letter could not be written: losing a record silently is worse than
    /// stopping.
    #[error("cannot write dead letter to {destination}: {source}")]
    DeadLetter {
        /// The file's path or `topic NAME on BROKERS`.
        destination: String,
        /// The cause.
        source: Arc<projector_connectors::Error>,
    },
    /// The source failed and cannot go on.
    #[error("source error: {0}")]
    Source(Arc<projector_connectors::Error>),
    /// A checkpoint could not be written: running on without checkpoints would make
    /// every restart replay more and more.
    #[error("cannot write checkpoint {epoch}: {source}")]
    Checkpoint {
        /// The epoch of the checkpoint.
        epoch: u64,
        /// The cause.
        source: Arc<Error>,
    },
    /// A pipeline thread panicked.
    #[error("internal error: thread {thread} panicked: {message}")]
    Panicked {
        /// The thread's name.
        thread: String,
        /// The panic's message.
        message: String,
    },
    /// The schema registry cannot be reached (or refuses the pipeline's credentials):
    /// the records waiting for their schema are not the records' fault, so the run
    /// stops and a restart resumes from the checkpoint.
    #[error("schema registry: {0}")]
    Registry(String),
    /// A parked key holds as many events as `park.max_held` allows, and another came.
    #[error(
        "key '{key}' of {unit} was parked by {code} at {partition} offset {offset} and \
         holds {max_held} events since (park.max_held): fix the pipeline and retry the \
         key, or skip its failing event (projector parked retry|skip), after raising \
         park.max_held enough to start"
    )]
    ParkFull {
        /// The key.
        key: String,
        /// Its unit.
        unit: String,
        /// Why it was parked.
        code: String,
        /// The failing event's partition.
        partition: String,
        /// The failing event's offset.
        offset: u64,
        /// `park.max_held`.
        max_held: usize,
    },
    /// A pipeline thread went away while others still had work for it.
    #[error("internal error: a pipeline thread stopped unexpectedly")]
    LostThread,
}

impl Fatal {
    /// The stable code of this kind of stop, e.g. `pipeline.bad_record`.
    pub fn code(&self) -> &'static str {
        match self {
            Fatal::BadRecord { .. } => "pipeline.bad_record",
            Fatal::DeadLetter { .. } => "pipeline.dead_letter_failed",
            Fatal::Source(_) => "pipeline.source_failed",
            Fatal::Checkpoint { .. } => "pipeline.checkpoint_failed",
            Fatal::Panicked { .. } => "pipeline.panicked",
            Fatal::Registry(_) => "pipeline.registry_unavailable",
            Fatal::ParkFull { .. } => "park.full",
            Fatal::LostThread => "pipeline.lost_thread",
        }
    }
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
