//! The Projector runtime (stub).
pub mod config;
