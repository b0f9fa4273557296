//! The engine's state, in memory and on disk: views as Arrow ([`view`]) and the
//! checkpoints that make them durable together with the source offsets
//! ([`checkpoint`]), per unit of source partitions that share one state ([`units`]).

pub(crate) mod checkpoint;
pub(crate) mod units;
pub(crate) mod view;
