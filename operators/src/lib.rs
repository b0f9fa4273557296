//! Pure projection logic: no I/O, no threads.
//!
//! ```text
//!  raw bytes ──▶ decode (JsonDecoder: only the field paths the pipeline reads)
//!            ──▶ envelope (key, type, version, time)
//!            ──▶ projection: version check, then every view's operator
//!                 ├─ fold:      one row per key (set / add / delete handlers)
//!                 ├─ aggregate: partial aggregates per group
//!                 └─ table:     one row per matching event (append-only, retained)
//!            ──▶ state, which the engine publishes as Arrow views
//!                 and `codec` encodes for checkpoints
//! ```
//!
//! Everything here is deterministic, so a replay from a checkpoint produces the same
//! state as a failure-free run.

pub mod aggregate;
pub mod codec;
pub mod decode;
pub mod dedup;
pub mod envelope;
pub mod expr;
pub mod fields;
pub mod fold;
pub mod park;
pub mod projection;
pub mod rows;
pub mod table;
pub mod upcast;
pub mod value;
pub mod view;
