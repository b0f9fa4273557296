//! The Projector runtime: wires sources, operators and views together and serves SQL.
//!
//! ```text
//!  source (connectors)      ingest thread               workers (N threads)       coordinator
//!  ┌──────────────┐ poll   ┌───────────────────┐ batch  ┌──────────────────┐ snap  ┌───────────┐
//!  │ generator    │──────▶ │ decode (slots)    │──────▶ │ Projection::apply│─────▶ │ epoch cut │
//!  │ file / stdin │ bytes  │ key hash → worker │ xbeam  │ per partition,   │       │ → Catalog │
//!  └──────────────┘        │ epoch barriers ◀──┼─timer  │ per key state    │       │ (ArcSwap) │
//!                          └───────────────────┘        └──────────────────┘       └─────┬─────┘
//!                                                                                        │
//!                            HTTP (axum) / CLI ◀── DataFusion ◀── ViewTable (one partition per worker)
//! ```
//!
//! Bad records leave through [`bad_records`] (dead letters, skip, or fail).

pub mod bad_records;
pub mod bench;
pub mod catalog;
pub mod checkpoint;
pub mod config;
pub mod epoch;
pub mod http;
pub mod output;
pub mod pipeline;
pub mod query;
pub mod router;
pub mod status;
pub mod view;
pub mod worker;

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
    Source(String),
    /// A checkpoint could not be written (bad request, epoch already taken, ...).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The pipeline stopped itself (bad record under `on_error: fail`, ...).
    #[error("{0}")]
    Fatal(String),
    /// The pipeline is stopping.
    #[error("pipeline stopped")]
    Stopped,
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
