//! The Projector runtime: wires sources, operators and views together and serves SQL.
//!
//! ```text
//!  config/           runtime/                                                   state/
//!  YAML ─▶ PipelineConfig
//!                    source (connectors: generator, nexmark, file/stdin, kafka)
//!                      │ RawBatch: bytes + partition + offset
//!                      ▼
//!                    ingest: decode (slots) ─▶ envelope ─▶ key hash ─▶ router
//!                      ▲ epoch barriers (timer)             │ crossbeam, one channel per worker
//!                      │ ownership (owner)                  ▼
//!                    bad_records ◀── bad record ──── workers: Projection::apply, per key
//!                    (dead letters)                         │ snapshot at each barrier
//!                                                           ▼
//!                                                   epoch coordinator ─▶ checkpoint (offsets
//!                                                           │            + state, together)
//!  serve/                                                   ▼ publish
//!  HTTP (axum) / CLI ◀── output ◀── query (DataFusion) ◀── catalog (ArcSwap of Arrow views)
//! ```
//!
//! An embedder loads a [`config::PipelineConfig`], starts a [`Pipeline`], and queries
//! its views with a [`SqlEngine`] or serves them over HTTP with [`serve()`].

pub mod config;
mod error;
pub mod internals;
mod runtime;
mod serve;
mod state;

pub use error::{Error, Fatal, Result};
pub use runtime::pipeline::{Pipeline, RunOptions, Shared};
pub use runtime::rebuild::{RebuildPlan, merge as switch_rebuild, plan as plan_rebuild};
pub use runtime::redrive::{letter_lines, read_letters};
pub use serve::auth::Auth;
pub use serve::catalog::Catalog;
pub use serve::cluster::ClusterOptions;
pub use serve::http::{AppState, TlsFiles, bind, http_runtime, serve, serve_on, status_json};
pub use serve::output::{Chunks, OutputFormat, read_arrow, render, render_chunks};
pub use serve::pg::serve_pg;
pub use serve::query::{
    Contribution, Prepared, QueryError, QueryErrorKind, QueryLimits, QueryOptions, QueryResult,
    SqlEngine,
};
pub use state::checkpoint::recovery::{
    PieceError, StoredPartition, stored_checkpoints, stored_dead_letters,
};
pub use state::checkpoint::{BlobError, CheckpointError};

/// What a running pipeline reports about itself: the types behind [`Shared`]'s fields,
/// which the CLI's progress line, `/status` and `projector bench` read.
pub mod status {
    pub use crate::runtime::bad_records::BadRecords;
    pub use crate::runtime::epoch::{Progress, ProgressState};
    pub use crate::serve::status::{CounterSnapshot, Counters, PartitionPosition, Positions};
    pub use crate::state::checkpoint::recovery::{CheckpointInfo, CheckpointStatus};
}
