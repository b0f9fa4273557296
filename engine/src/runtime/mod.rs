//! The running pipeline, stage by stage:
//!
//! ```text
//!  source ─▶ ingest (decoding, key hash) ─▶ router ─▶ workers ─▶ epoch coordinator
//!              ▲ epoch barriers: timer                 (apply)      (cut, publish,
//!              │ ownership: owner (restore / revoke)                 checkpoint)
//!  bad records ─▶ bad_records (dead letters, skip, or fail)
//!              ─▶ parking (on_error: park: the key's events held in its worker)
//!  dead letters ─▶ redrive (replayed once, before the source's records)
//! ```

pub(crate) mod bad_records;
pub(crate) mod decoding;
pub(crate) mod epoch;
mod ingest;
mod owner;
pub(crate) mod parking;
pub(crate) mod pipeline;
pub(crate) mod rebuild;
pub(crate) mod redrive;
mod registry;
pub(crate) mod router;
mod timer;
pub(crate) mod watchdog;
pub(crate) mod worker;
