//! Checkpoints: the engine's state and the offsets of record, made durable together.

pub mod recovery;
pub mod store;
