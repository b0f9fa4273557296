//! Where checkpoints are kept: a local directory or an object store bucket, behind the
//! few operations a checkpoint needs.
//!
//! ```text
//!  checkpoint.store   file:///var/lib/projector   ─▶ Local (files, fsync, rename, flock)
//!                     s3://bucket/prefix           ─▶ Object (object_store: S3, GCS, Azure)
//!                     gs://… az://…
//! ```
//!
//! Keys are `/`-separated and relative to the store's root. Both backends give the
//! same guarantees: a `put` is durable and whole when it returns (never half an object
//! under its final name); `create` fails if the key exists; `update` replaces an object
//! only if it is still the version the caller read. The last two are what fence an
//! instance that lost a partition (see `store.rs` and ARCHITECTURE.md).

mod local;
pub(crate) mod object;

pub(crate) use local::Local;
pub(crate) use object::Object;

use std::fmt::Debug;

/// One version of an object, as the backend tells versions apart (an S3 ETag; a
/// length and checksum for a file). Opaque: only compared, by the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version(pub(crate) String);

/// An object read from the store.
#[derive(Debug)]
pub(crate) struct Blob {
    /// Its contents.
    pub data: bytes::Bytes,
    /// The version read, for [`Blobs::update`].
    pub version: Version,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BlobError {
    /// A conditional write lost: the key exists (`create`), or it changed since it was
    /// read (`update`).
    #[error("{key}: changed by another writer")]
    Conflict {
        /// The object.
        key: String,
    },
    /// The store refused the credentials or the permission: retrying will not help.
    #[error("{op} {key}: access denied: {message}")]
    Denied {
        /// What was being done.
        op: &'static str,
        /// The object.
        key: String,
        /// The store's words.
        message: String,
    },
    /// The store cannot do what is asked (e.g. no conditional writes): a configuration
    /// problem, not a passing one.
    #[error("{op} {key}: not supported by this store: {message}")]
    Unsupported {
        /// What was being done.
        op: &'static str,
        /// The object.
        key: String,
        /// The store's words.
        message: String,
    },
    /// The store is away or failed for now (connection refused, timeout, 5xx, I/O):
    /// retried with backoff.
    #[error("{op} {key}: {message}")]
    Unavailable {
        /// What was being done.
        op: &'static str,
        /// The object.
        key: String,
        /// The store's words.
        message: String,
    },
}

impl BlobError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, BlobError::Unavailable { .. })
    }
}

/// The operations a checkpoint store needs. Blocking: called from the engine's own
/// threads (the checkpointer, and the ingest thread during a rebalance).
pub(crate) trait Blobs: Send + Sync + Debug {
    /// Where `key` is, for messages: a path or a URL.
    fn describe(&self, key: &str) -> String;

    /// The object at `key`, or `None` if there is none.
    fn get(&self, key: &str) -> Result<Option<Blob>, BlobError>;

    /// Writes `data` at `key`, replacing any object there. Large data is uploaded in
    /// parts; the object appears whole or not at all.
    fn put(&self, key: &str, data: &[u8]) -> Result<(), BlobError>;

    /// Writes `data` at `key` only if there is no object there
    /// ([`BlobError::Conflict`] otherwise). Returns the version written.
    fn create(&self, key: &str, data: &[u8]) -> Result<Version, BlobError>;

    /// Replaces the object at `key` only if it is still `expected`
    /// ([`BlobError::Conflict`] otherwise). Returns the version written.
    fn update(&self, key: &str, data: &[u8], expected: &Version) -> Result<Version, BlobError>;

    /// The keys below `prefix` (a directory: `prefix/…`), in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError>;

    /// Deletes the object at `key`; a missing one is not an error.
    fn delete(&self, key: &str) -> Result<(), BlobError>;
}
